//! Payments against a sent invoice. A client may pay in parts: each payment is recorded with
//! the day the money came; what the invoice still owes is its total less its payments, and the
//! invoice becomes paid when they reach its total. Every change holds the invoice's row
//! (`FOR UPDATE`) while it adds the payments up, so two payments recorded at once can't
//! together pay more than the invoice owed. A payment recorded by mistake is deleted, which
//! turns a paid invoice back into a sent one; both are audited with the invoice's state
//! before and after.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::Date;
use utoipa::ToSchema;

use super::fields;
pub use super::invoices::Payment;
use super::invoices::{self, Invoice, InvoiceStatus, PAYMENT_COLUMNS};
use super::money::format_minor;
use super::projects::require;
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{InvoiceId, PaymentId};

/// Payments one invoice takes (its pages list them all).
pub const MAX_PAYMENTS: i64 = 100;

/// A payment to record.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    /// Minor units, at least 1 and at most what the invoice still owes (default: all of it).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, nullable = false)]
    pub amount_minor: Option<i64>,
    /// YYYY-MM-DD, not after today (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub paid_on: Option<String>,
    /// How it was paid, a reference: "Bank transfer 2026-118".
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 500, nullable = false)]
    pub note: Option<String>,
}

/// A payment as parsed: `amount` in minor units (`None`: what is still owed), `paid_on`
/// (`None`: the organization's today).
#[derive(Debug, Clone, Default)]
pub struct NewPayment {
    pub amount: Option<i64>,
    pub paid_on: Option<Date>,
    pub note: String,
}

impl NewPayment {
    /// The API's input: its fields named as the API names them.
    pub fn parse(input: &PaymentInput) -> DomainResult<Self> {
        if input.amount_minor.is_some_and(|a| a < 1) {
            return Err(DomainError::field("amount_minor", "must be more than 0"));
        }
        Ok(Self {
            amount: input.amount_minor,
            paid_on: input.paid_on.as_deref().map(|d| fields::date("paid_on", d)).transpose()?,
            note: fields::text("note", input.note.as_deref().unwrap_or(""), 500)?,
        })
    }
}

/// The invoice's payments, oldest first (404 for an invoice that isn't there).
pub async fn list(db: &Db, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<Vec<Payment>> {
    require(p, Permission::InvoicesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    invoices::fetch(&mut tx, id).await?;
    let payments = list_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(payments)
}

/// [`list`] inside the caller's transaction, which has found the invoice.
pub async fn list_in(tx: &mut OrgTx, id: InvoiceId) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM invoice_payments WHERE invoice_id = $1 ORDER BY paid_on, created_at, id"
    ))
    .bind(id)
    .fetch_all(&mut **tx)
    .await
}

/// Records a payment against a sent invoice; the invoice is paid when its payments reach its
/// total. Returns the payment and the invoice after it.
pub async fn record(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    new: &NewPayment,
    amount_field: &str,
) -> DomainResult<(Payment, Invoice)> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = invoices::lock(&mut tx, id).await?;
    match before.status {
        InvoiceStatus::Sent | InvoiceStatus::Overdue => {}
        InvoiceStatus::Draft => return Err(DomainError::Conflict("A draft can't be paid; send it first.".into())),
        InvoiceStatus::Paid => return Err(DomainError::Conflict("This invoice is paid in full.".into())),
        InvoiceStatus::Void => return Err(DomainError::Conflict("A void invoice can't be paid.".into())),
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_payments WHERE invoice_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_PAYMENTS {
        return Err(DomainError::Conflict(format!("An invoice takes at most {MAX_PAYMENTS} payments.")));
    }
    if before.balance_minor <= 0 {
        return Err(DomainError::Conflict("Nothing is left to pay on this invoice; mark it paid.".into()));
    }
    let amount = new.amount.unwrap_or(before.balance_minor);
    if amount < 1 {
        return Err(DomainError::field(amount_field, "must be more than 0"));
    }
    if amount > before.balance_minor {
        return Err(DomainError::field(
            amount_field,
            format!(
                "must be at most {} {}, what the invoice still owes",
                format_minor(before.balance_minor),
                before.currency
            ),
        ));
    }
    let today = super::org_today(&mut tx, ctx.now).await?;
    let paid_on = new.paid_on.unwrap_or(today);
    if paid_on > today {
        return Err(DomainError::field("paid_on", "can't be after today"));
    }
    let payment = invoices::insert_payment(&mut tx, ctx, id, amount, paid_on, &new.note).await?;
    let after = if amount == before.balance_minor {
        invoices::mark_paid(&mut tx, ctx, p, id).await?
    } else {
        invoices::fetch(&mut tx, id).await?
    };
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.payment_recorded", "invoice", id)
            .before(invoices::snapshot(&before))
            .after(with_payment(&after, &payment)),
    )
    .await?;
    tx.commit().await?;
    Ok((payment, invoices::shown_status(after, today)))
}

/// Deletes a payment recorded by mistake; a paid invoice is sent (owed) again. Returns the
/// invoice after it.
pub async fn delete(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    payment: PaymentId,
) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = invoices::lock(&mut tx, id).await?;
    let removed: Payment = sqlx::query_as(&format!(
        "DELETE FROM invoice_payments WHERE id = $1 AND invoice_id = $2 RETURNING {PAYMENT_COLUMNS}"
    ))
    .bind(payment)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    if before.status == InvoiceStatus::Paid {
        sqlx::query("UPDATE invoices SET status = 'sent', paid_at = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let after = invoices::fetch(&mut tx, id).await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.payment_deleted", "invoice", id)
            .before(with_payment(&before, &removed))
            .after(invoices::snapshot(&after)),
    )
    .await?;
    let today = super::org_today(&mut tx, ctx.now).await?;
    tx.commit().await?;
    Ok(invoices::shown_status(after, today))
}

fn with_payment(invoice: &Invoice, payment: &Payment) -> serde_json::Value {
    let mut v = invoices::snapshot(invoice);
    v["payment"] =
        json!({ "id": payment.id, "amount_minor": payment.amount_minor, "paid_on": payment.paid_on.to_string() });
    v
}

/// A payment as the "Payments received" page, its CSV and `GET /api/v1/payments` show it: with
/// its invoice and client.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ReceivedRow {
    #[schema(value_type = String, format = Uuid)]
    pub id: PaymentId,
    /// The day the money came.
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub paid_on: Date,
    /// Minor units, in `currency`.
    pub amount_minor: i64,
    pub note: String,
    #[schema(value_type = String, format = Uuid)]
    pub invoice_id: InvoiceId,
    /// The invoice's reference (`INV-2026-0007`).
    pub reference: Option<String>,
    pub number: Option<i64>,
    /// The invoice's currency.
    pub currency: String,
    #[schema(value_type = String, format = Uuid)]
    pub client_id: crate::platform::ids::ClientId,
    pub client_name: String,
}

impl ReceivedRow {
    /// The invoice as people call it.
    pub fn invoice(&self) -> String {
        super::invoices::name(self.reference.as_deref(), self.number, "Invoice")
    }
}

/// The money received from `from` to `to` (both included, days of the organization).
pub struct Received {
    /// The page asked for, newest first.
    pub rows: Vec<ReceivedRow>,
    /// How many payments the range holds.
    pub count: i64,
    /// What they add up to, per currency (capped at 64 bits rather than failing).
    pub sums: Vec<(String, i64)>,
}

/// Payments a CSV export holds at most: the newest of a longer range (the page says so).
pub const EXPORT_CAP: i64 = 20_000;

/// The payments received in a range, for those who may read invoices: `limit` and `offset`
/// pick the rows (the counts and sums are the whole range's). A range whose start is after its
/// end is refused, naming `from`.
pub async fn received(
    db: &Db,
    p: &OrgPrincipal,
    from: Date,
    to: Date,
    limit: i64,
    offset: i64,
) -> DomainResult<Received> {
    require(p, Permission::InvoicesRead)?;
    if from > to {
        return Err(DomainError::field("from", "must not be after To"));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let rows: Vec<ReceivedRow> = sqlx::query_as(
        "SELECT pm.id, pm.paid_on, pm.amount_minor, pm.note, i.id AS invoice_id, i.reference, i.number, i.currency, \
                c.id AS client_id, c.name AS client_name \
           FROM invoice_payments pm \
           JOIN invoices i ON i.organization_id = pm.organization_id AND i.id = pm.invoice_id \
           JOIN clients c ON c.organization_id = i.organization_id AND c.id = i.client_id \
          WHERE pm.paid_on BETWEEN $1 AND $2 \
          ORDER BY pm.paid_on DESC, pm.created_at DESC, pm.id DESC LIMIT $3 OFFSET $4",
    )
    .bind(from)
    .bind(to)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT i.currency, count(*), least(sum(pm.amount_minor), 9223372036854775807)::bigint \
           FROM invoice_payments pm JOIN invoices i ON i.organization_id = pm.organization_id AND i.id = pm.invoice_id \
          WHERE pm.paid_on BETWEEN $1 AND $2 GROUP BY i.currency ORDER BY i.currency",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Received {
        rows,
        count: sums.iter().map(|s| s.1).sum(),
        sums: sums.into_iter().map(|(currency, _, sum)| (currency, sum)).collect(),
    })
}

/// The rows as CSV (a header line, then one line per payment), every text cell neutralised.
pub fn to_csv(rows: &[ReceivedRow]) -> Result<Vec<u8>, csv::Error> {
    use super::time_entries::csv_cell;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["paid_on", "invoice", "client", "currency", "amount_minor", "amount", "note"])?;
    for r in rows {
        w.write_record([
            r.paid_on.to_string(),
            csv_cell(&r.invoice()),
            csv_cell(&r.client_name),
            r.currency.clone(),
            r.amount_minor.to_string(),
            format_minor(r.amount_minor),
            csv_cell(&r.note),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
