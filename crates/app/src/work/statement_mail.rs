//! A client's statement by mail: to its billing contact, as text and as the PDF the pages hand
//! out, with a link to the same statement in the portal.

use serde_json::json;
use time::Date;

use super::money::format_minor;
use super::projects::require;
use super::statement::{EntryKind, Statement, statement_of};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::ClientId;

/// Entries a mailed statement lists at most; the rest are in the portal.
pub const MAILED_ENTRIES: usize = 200;

/// Statements one client is mailed in 24 hours at most, whatever their ranges: a bound on what
/// a mistake (or anyone who may mail clients) can put in a client's inbox.
pub const MAILED_PER_DAY: i64 = 5;

/// Mails the client's statement from `from` to `to` to its billing contact (the client's email,
/// else its first contact's) through the outbox, as text and as the PDF the pages hand out, with
/// a link to the same statement in the portal. Payment notes, being the organization's, are
/// left out, as the portal leaves them out. The same range goes out at most once a day, and
/// [`MAILED_PER_DAY`] statements a day in all: 409 beyond those, or when the client has no
/// billing email. Needs `invoices.update` (mailing a client, as a reminder does); audited.
/// Returns the address.
pub async fn email(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    client: ClientId,
    from: Date,
    to: Date,
    public_url: &str,
) -> DomainResult<String> {
    require(p, Permission::InvoicesUpdate)?;
    let s = statement_of(db, p, client, from, to).await?;
    let mut tx = OrgTx::begin(db, p).await?;
    let contact = super::invoice_mail::billing_contact(&mut tx, client).await?;
    let Some(address) = contact.to.clone() else {
        return Err(DomainError::Conflict(
            "This client has no billing email: add one on the client's page first.".into(),
        ));
    };
    // The client's row, held: two mailings at once count each other.
    sqlx::query("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE").bind(client).execute(&mut *tx).await?;
    let mailed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE occurred_at > $2 - interval '1 day' \
           AND action = 'client.statement_mailed' AND target_id = $1",
    )
    .bind(client.to_string())
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    if mailed >= MAILED_PER_DAY {
        return Err(DomainError::Conflict(format!(
            "This client was mailed {MAILED_PER_DAY} statements in the last 24 hours; the next can go tomorrow."
        )));
    }
    let today = super::org_today(&mut tx, ctx.now).await?;
    let link = format!("{public_url}/portal/{}/statement?from={from}&to={to}", contact.slug);
    let mail = crate::mail::outbox::OutgoingMail {
        to: address.clone(),
        subject: format!("Statement from {} for {from} to {to}", contact.org_name),
        body: mail_text(&s, &contact.client_name, &contact.org_name, &link),
        category: crate::mail::category::Category::Transactional,
        org_name: Some(contact.org_name.clone()),
    };
    let key = format!("statement:{client}:{from}:{to}:{today}");
    // The same document the pages hand out, attached (unless too large to attach: the portal
    // has it then).
    let pdf = crate::mail::outbox::Attachment::new(
        &super::statement_pdf::file_name(&s),
        "application/pdf",
        super::statement_pdf::render(&contact.org_name, &s),
    );
    let attachments: Vec<_> = pdf.into_iter().collect();
    if !crate::mail::outbox::enqueue_with_attachments(&mut tx, &mail, &attachments, &key, ctx.now).await? {
        return Err(DomainError::Conflict(format!("This statement went to {address} today already.")));
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("client.statement_mailed", "client", client)
            .after(json!({ "to": address, "from": from.to_string(), "until": to.to_string() })),
    )
    .await?;
    tx.commit().await?;
    Ok(address)
}

/// The statement as the mail's text: per currency, what was owed before, each entry with what
/// was owed after it (at most [`MAILED_ENTRIES`] in all), and what was owed at the end.
fn mail_text(s: &Statement, client: &str, org: &str, link: &str) -> String {
    let mut out = format!("Hello {client},\n\nYour statement from {org} for {} to {}.\n", s.from, s.to);
    if s.currencies.is_empty() {
        out.push_str(&format!("\nNothing was invoiced to you up to {}.\n", s.to));
    }
    let mut listed = 0;
    let mut left_out = 0;
    for c in &s.currencies {
        out.push_str(&format!("\n{}\nOwed before {}: {}\n", c.currency, s.from, format_minor(c.opening)));
        for e in &c.entries {
            if listed == MAILED_ENTRIES {
                left_out += 1;
                continue;
            }
            listed += 1;
            let (what, amount) = match e.kind {
                EntryKind::Invoice => (format!("Invoice {}", e.invoice()), format_minor(e.amount)),
                EntryKind::Payment => (format!("Payment for {}", e.invoice()), format!("-{}", format_minor(e.amount))),
            };
            out.push_str(&format!("{}  {what}  {amount}  (owed {})\n", e.day, format_minor(e.balance)));
        }
        out.push_str(&format!("Owed at the end of {}: {} {}\n", s.to, format_minor(c.closing), c.currency));
    }
    if left_out > 0 || s.capped {
        out.push_str("\nThe portal lists the entries this mail leaves out.\n");
    }
    out.push_str(&format!("\nSee it in your portal, with each invoice:\n\n{link}\n\n-- \n{org} via ClientFlow\n"));
    out
}
