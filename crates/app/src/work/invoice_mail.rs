//! Invoices by mail: a sent invoice goes to its client's billing contact through the outbox,
//! with a link to the portal and the portal's PDF attached; reminders of open invoices go the
//! same way, at most once a day.

use serde_json::json;

use super::invoices::{InvoiceAction, InvoiceStatus, detail_in, fetch, transition_in};
use super::money::format_minor;
use super::projects::require;
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, InvoiceId};

/// Why an invoice is mailed ([`email_invoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mailing {
    /// Just sent: here is the invoice.
    Sent,
    /// A reminder of an open invoice (at most once a day per invoice).
    Reminder,
}

/// Mails a sent invoice to its client's billing contact (the client's email, else its first
/// contact with one) through the outbox, in the caller's request transaction, with a link to the
/// invoice in the portal and its PDF attached (the portal's document, byte for byte). `Ok(None)` when the client has no billing email. A reminder is refused
/// (409) when the invoice isn't open or one went out less than a day ago, and is audited.
pub async fn email_invoice(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    public_url: &str,
    why: Mailing,
) -> DomainResult<Option<String>> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let to = email_invoice_in(&mut tx, ctx, id, public_url, why).await?;
    tx.commit().await?;
    Ok(to)
}

/// Sends a draft and mails it to the client's billing contact in **one** transaction: the
/// number, the status, the audit event and the queued mail commit together or not at all.
/// `None`: sent, but the client has no address to mail it to.
pub async fn send_and_mail(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    public_url: &str,
) -> DomainResult<Option<String>> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let to = send_and_mail_in(&mut tx, ctx, p, id, public_url).await?;
    tx.commit().await?;
    Ok(to)
}

/// [`send_and_mail`] inside the caller's transaction.
pub(super) async fn send_and_mail_in(
    tx: &mut OrgTx,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    public_url: &str,
) -> DomainResult<Option<String>> {
    transition_in(tx, ctx, p, id, InvoiceAction::Send).await?;
    email_invoice_in(tx, ctx, id, public_url, Mailing::Sent).await
}

/// [`email_invoice`] inside the caller's transaction.
async fn email_invoice_in(
    tx: &mut OrgTx,
    ctx: &Context,
    id: InvoiceId,
    public_url: &str,
    why: Mailing,
) -> DomainResult<Option<String>> {
    let inv = fetch(tx, id).await?;
    if !matches!(inv.status, InvoiceStatus::Sent) {
        return Err(DomainError::Conflict(format!("A {} invoice isn't mailed to the client.", inv.status)));
    }
    let BillingContact { slug, org_name, client_name, to } = billing_contact(tx, inv.client_id).await?;
    let Some(to) = to else { return Ok(None) };
    if why == Mailing::Reminder {
        let reminded = sqlx::query(
            "UPDATE invoices SET reminded_at = $2 WHERE id = $1 AND (reminded_at IS NULL OR reminded_at <= $2 - interval '1 day')",
        )
        .bind(id)
        .bind(ctx.now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if reminded == 0 {
            return Err(DomainError::Conflict("A reminder of this invoice went out less than a day ago.".into()));
        }
        audit::record(tx, ctx, Entry::new("invoice.reminded", "invoice", id).after(json!({ "to": to }))).await?;
    }
    let today = super::org_today(tx, ctx.now).await?;
    let title = inv.title();
    let link = format!("{public_url}/portal/{slug}/invoices/{id}");
    // A reminder of an invoice paid in part says what is left.
    let total = if inv.paid_minor > 0 {
        format!(
            "{} {}\nPaid so far: {}\nBalance due: {} {}",
            format_minor(inv.total_minor),
            inv.currency,
            format_minor(inv.paid_minor),
            format_minor(inv.balance_minor),
            inv.currency
        )
    } else {
        format!("{} {}", format_minor(inv.total_minor), inv.currency)
    };
    let (subject, opening) = match why {
        Mailing::Sent => (format!("Invoice {title} from {org_name}"), format!("{org_name} sent you invoice {title}.")),
        Mailing::Reminder => (
            format!("Reminder: invoice {title} from {org_name}"),
            if inv.due_date < today {
                format!("Invoice {title} from {org_name} was due on {}.", inv.due_date)
            } else {
                format!("A reminder of invoice {title} from {org_name}, due on {}.", inv.due_date)
            },
        ),
    };
    // The same document the portal hands out, attached; one too large to attach (it would
    // take thousands of lines) is left in the portal, and the message says so.
    let detail = detail_in(tx, id, today).await?;
    let pdf = crate::mail::outbox::Attachment::new(
        &super::invoice_pdf::file_name(&detail),
        "application/pdf",
        super::invoice_pdf::render(&org_name, &detail),
    );
    let attached = match &pdf {
        Ok(_) => "The invoice is attached as a PDF. You can also see it and download it in your portal:",
        Err(_) => "See it and download the PDF in your portal:",
    };
    let mail = crate::mail::outbox::OutgoingMail {
        to: to.clone(),
        subject,
        body: format!(
            "Hello {client_name},\n\n{opening}\n\nTotal: {total}\nDue: {}\n\n{attached}\n\n{link}\n\n-- \n{org_name} via ClientFlow\n",
            inv.due_date
        ),
        category: crate::mail::category::Category::Transactional,
        org_name: Some(org_name),
    };
    let key = match why {
        Mailing::Sent => format!("invoice-sent:{id}"),
        Mailing::Reminder => format!("invoice-reminder:{id}:{today}"),
    };
    let attachments: Vec<_> = pdf.into_iter().collect();
    crate::mail::outbox::enqueue_with_attachments(tx, &mail, &attachments, &key, ctx.now).await?;
    Ok(Some(to))
}

/// Whom a client's invoices and statements are mailed to, and what they are signed with.
pub(super) struct BillingContact {
    pub slug: String,
    pub org_name: String,
    pub client_name: String,
    /// The client's email, else its first contact's with one; `None`: nobody to mail.
    pub to: Option<String>,
}

/// The client's [`BillingContact`]; not found when the client isn't the organization's.
pub(super) async fn billing_contact(tx: &mut OrgTx, client: ClientId) -> DomainResult<BillingContact> {
    let (slug, org_name, client_name, to): (String, String, String, Option<String>) = sqlx::query_as(
        "SELECT o.slug, o.name, c.name, coalesce(nullif(c.email, ''), (SELECT k.email FROM client_contacts k \
           WHERE k.organization_id = c.organization_id AND k.client_id = c.id AND coalesce(k.email, '') <> '' \
           ORDER BY k.created_at, k.id LIMIT 1)) \
         FROM clients c JOIN organizations o ON o.id = c.organization_id WHERE c.id = $1",
    )
    .bind(client)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    Ok(BillingContact { slug, org_name, client_name, to })
}
