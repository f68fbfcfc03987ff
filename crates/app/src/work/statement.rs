//! A client's statement: over a range of days, the invoices it was sent (by issue date) and the
//! payments it made, each with the balance it owed after it, between the balance owed before
//! the range and the balance owed at its end. One statement per currency the client was invoiced
//! in: amounts in different currencies are never added up. Drafts and void invoices owe nothing
//! and are left out.

use serde::Serialize;
use time::Date;
use utoipa::ToSchema;

use super::projects::require;
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, InvoiceId};

/// Entries one statement page shows at most; the balances at both ends are the whole range's.
pub const MAX_ENTRIES: usize = 2_000;

/// Every invoice the client owes (sent or paid, by issue date) and every payment against them
/// (by the day it came): `$1` is the client.
const ENTRIES: &str = "\
    SELECT 'invoice'::text AS kind, i.issue_date AS day, i.currency, i.total_minor AS amount, i.id AS invoice_id, \
           i.reference, i.number, ''::text AS note, i.created_at AS at \
      FROM invoices i WHERE i.client_id = $1 AND i.status IN ('sent', 'paid') \
    UNION ALL \
    SELECT 'payment'::text, pm.paid_on, i.currency, pm.amount_minor, i.id, i.reference, i.number, pm.note, pm.created_at \
      FROM invoice_payments pm JOIN invoices i ON i.organization_id = pm.organization_id AND i.id = pm.invoice_id \
     WHERE i.client_id = $1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Invoice,
    Payment,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatementEntry {
    /// An invoice's issue date, or the day a payment came.
    #[schema(value_type = String, format = Date)]
    #[serde(rename = "date", with = "super::iso_date")]
    pub day: Date,
    pub kind: EntryKind,
    /// The invoice, or the invoice the payment was for.
    #[schema(value_type = String, format = Uuid)]
    pub invoice_id: InvoiceId,
    pub reference: Option<String>,
    pub number: Option<i64>,
    /// Minor units: an invoice's total, or a payment's amount.
    #[serde(rename = "amount_minor")]
    pub amount: i64,
    /// A payment's note (empty for an invoice).
    pub note: String,
    /// What the client owed after this entry (minor units).
    #[serde(rename = "balance_minor")]
    #[schema(value_type = i64)]
    pub balance: i128,
}

impl StatementEntry {
    /// The invoice as people call it.
    pub fn invoice(&self) -> String {
        super::invoices::name(self.reference.as_deref(), self.number, "Invoice")
    }
}

/// One currency's statement (minor units throughout; sums may exceed 64 bits only in theory).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencyStatement {
    pub currency: String,
    /// Owed before the range's first day.
    #[serde(rename = "opening_minor")]
    #[schema(value_type = i64)]
    pub opening: i128,
    /// Oldest first; a payment after the invoices of its day.
    pub entries: Vec<StatementEntry>,
    /// Invoiced within the range.
    #[serde(rename = "invoiced_minor")]
    #[schema(value_type = i64)]
    pub invoiced: i128,
    /// Paid within the range.
    #[serde(rename = "paid_minor")]
    #[schema(value_type = i64)]
    pub paid: i128,
    /// Owed at the end of the range's last day.
    #[serde(rename = "closing_minor")]
    #[schema(value_type = i64)]
    pub closing: i128,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Statement {
    #[schema(value_type = String, format = Uuid)]
    pub client_id: ClientId,
    pub client_name: String,
    /// The range, both days included.
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub from: Date,
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub to: Date,
    /// One per currency the client was invoiced in up to the range's end.
    pub currencies: Vec<CurrencyStatement>,
    /// More entries than [`MAX_ENTRIES`]: the first ones are shown.
    pub capped: bool,
}

type EntryRow = (String, Date, String, i64, InvoiceId, Option<String>, Option<i64>, String);

/// The statement of `client` from `from` to `to` (both included), for those who may read
/// invoices. A range whose start is after its end is refused, naming `from`; a client that
/// isn't the organization's is not found.
pub async fn statement(db: &Db, p: &OrgPrincipal, client: ClientId, from: Date, to: Date) -> DomainResult<Statement> {
    require(p, Permission::InvoicesRead)?;
    statement_of(db, p, client, from, to).await
}

/// [`statement`] for a caller that has decided `p` may read `client`'s (the portal, for a
/// client's own).
pub(super) async fn statement_of(
    db: &Db,
    p: &OrgPrincipal,
    client: ClientId,
    from: Date,
    to: Date,
) -> DomainResult<Statement> {
    if from > to {
        return Err(DomainError::field("from", "must not be after To"));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let client_name: String = sqlx::query_scalar("SELECT name FROM clients WHERE id = $1")
        .bind(client)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    // Sums as text: a numeric of any size, read into 128 bits.
    let sums: Vec<(String, String, String, String)> = sqlx::query_as(&format!(
        "SELECT currency, \
                coalesce(sum(CASE WHEN kind = 'invoice' THEN amount ELSE -amount END) FILTER (WHERE day < $2), 0)::text, \
                coalesce(sum(amount) FILTER (WHERE kind = 'invoice' AND day BETWEEN $2 AND $3), 0)::text, \
                coalesce(sum(amount) FILTER (WHERE kind = 'payment' AND day BETWEEN $2 AND $3), 0)::text \
           FROM ({ENTRIES}) e WHERE day <= $3 GROUP BY currency ORDER BY currency"
    ))
    .bind(client)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT kind, day, currency, amount, invoice_id, reference, number, note \
           FROM ({ENTRIES}) e WHERE day BETWEEN $2 AND $3 ORDER BY currency, day, kind, at, invoice_id LIMIT $4"
    ))
    .bind(client)
    .bind(from)
    .bind(to)
    .bind(MAX_ENTRIES as i64 + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let capped = rows.len() > MAX_ENTRIES;
    let sum = |s: &str| {
        s.parse::<i128>().map_err(|e| DomainError::Internal(anyhow::anyhow!("a sum that is no integer: {e}")))
    };
    let mut currencies = Vec::with_capacity(sums.len());
    for (currency, opening, invoiced, paid) in sums {
        let (opening, invoiced, paid) = (sum(&opening)?, sum(&invoiced)?, sum(&paid)?);
        let mut balance = opening;
        let entries = rows
            .iter()
            .take(MAX_ENTRIES)
            .filter(|r| r.2 == currency)
            .map(|(kind, day, _, amount, invoice_id, reference, number, note)| {
                let kind = if kind == "invoice" { EntryKind::Invoice } else { EntryKind::Payment };
                balance += if kind == EntryKind::Invoice { i128::from(*amount) } else { -i128::from(*amount) };
                StatementEntry {
                    day: *day,
                    kind,
                    invoice_id: *invoice_id,
                    reference: reference.clone(),
                    number: *number,
                    amount: *amount,
                    note: note.clone(),
                    balance,
                }
            })
            .collect();
        currencies.push(CurrencyStatement {
            currency,
            opening,
            entries,
            invoiced,
            paid,
            closing: opening + invoiced - paid,
        });
    }
    Ok(Statement { client_id: client, client_name, from, to, currencies, capped })
}
