//! Invoices: line items in integer minor units, tax in basis points, a gapless number
//! sequence per organization and year assigned when an invoice is sent (printed with the
//! organization's prefix: `INV-2026-0007`), due dates from payment terms, and lines made from
//! billable time ([`bill_time`]) that can't be billed twice.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::money::Currency;
use super::projects::require;
use super::{Page, fields};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, InvoiceId, PaymentId, ProjectId, RepeatId, TimeEntryId};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Invoice {
    #[schema(value_type = String, format = Uuid)]
    pub id: InvoiceId,
    /// Assigned when sent.
    pub number: Option<i64>,
    #[schema(value_type = String, format = Uuid)]
    pub client_id: ClientId,
    #[schema(value_type = Currency)]
    pub currency: String,
    pub tax_rate_bp: i32,
    pub status: InvoiceStatus,
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub issue_date: Date,
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub due_date: Date,
    pub notes: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The number as printed, like `INV-2026-0007`; assigned when sent.
    pub reference: Option<String>,
    /// Days from issue to due date, when the due date came from payment terms.
    pub payment_terms_days: Option<i32>,
    /// When the client first opened it in the portal.
    #[serde(with = "time::serde::rfc3339::option")]
    pub viewed_at: Option<OffsetDateTime>,
    /// What its payments add up to (minor units).
    pub paid_minor: i64,
    /// What it still owes: the total less the payments (0 once paid or void; a draft's total).
    pub balance_minor: i64,
    /// It is copied on a schedule (`/api/v1/invoices/{id}/repeat`).
    pub repeats: bool,
    /// The invoice whose repeat made it (`null`: made otherwise, or that invoice is deleted).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub repeated_from: Option<InvoiceId>,
}

/// What the invoice `i` has been paid: the sum of its payments (never beyond its total, which
/// is a bigint, so the sum fits one).
macro_rules! paid_sql {
    () => {
        "coalesce((SELECT sum(pm.amount_minor) FROM invoice_payments pm \
         WHERE pm.organization_id = i.organization_id AND pm.invoice_id = i.id), 0)::bigint"
    };
}

/// [`paid_sql`] for other queries over `invoices i`.
pub const PAID_SQL: &str = paid_sql!();

pub const COLUMNS: &str = concat!(
    "i.id, i.number, i.client_id, i.currency, i.tax_rate_bp, i.status, i.issue_date, i.due_date, i.notes, \
     i.subtotal_minor, i.tax_minor, i.total_minor, i.created_at, i.reference, i.payment_terms_days, i.viewed_at, ",
    paid_sql!(),
    " AS paid_minor, CASE WHEN i.status IN ('paid', 'void') THEN 0 ELSE i.total_minor - ",
    paid_sql!(),
    " END AS balance_minor, EXISTS (SELECT 1 FROM invoice_repeats r \
     WHERE r.organization_id = i.organization_id AND r.invoice_id = i.id) AS repeats, i.repeated_from"
);

impl Invoice {
    /// Its total as lists show it: "1358.50 EUR", and what is still due once part is paid
    /// ("1358.50 EUR, 858.50 due").
    pub fn total_shown(&self) -> String {
        let total = format!("{} {}", super::money::format_minor(self.total_minor), self.currency);
        if self.status.is_open() && self.paid_minor > 0 {
            format!("{total}, {} due", super::money::format_minor(self.balance_minor))
        } else {
            total
        }
    }

    /// What people call it: its printed number, or "Draft".
    pub fn title(&self) -> String {
        name(self.reference.as_deref(), self.number, "Draft")
    }
}

/// An invoice as people call it: its reference (`INV-2026-0007`), else its number (`#7`), else
/// `unnumbered` (a draft has neither).
pub fn name(reference: Option<&str>, number: Option<i64>, unnumbered: &str) -> String {
    match (reference, number) {
        (Some(r), _) => r.to_string(),
        (None, Some(n)) => format!("#{n}"),
        (None, None) => unnumbered.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Line {
    pub description: String,
    /// Thousandths: 1.5 hours is 1500.
    pub quantity_milli: i64,
    /// Minor units (cents).
    pub unit_price_minor: i64,
    /// Computed: quantity × unit price, rounded half up to a minor unit.
    #[serde(default)]
    pub amount_minor: i64,
}

/// A new draft invoice.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceInput {
    #[schema(format = Uuid)]
    pub client_id: String,
    /// Default: the organization's currency.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Currency>, nullable = false)]
    pub currency: Option<String>,
    /// Basis points (19% is 1900; default: the organization's default tax rate, 0 unless set).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 10000, nullable = false)]
    pub tax_rate_bp: Option<i32>,
    /// YYYY-MM-DD (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub issue_date: Option<String>,
    /// YYYY-MM-DD, not before the issue date (default: the payment terms after it).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub due_date: Option<String>,
    /// Payment terms in days (net 14 is 14): the due date is this long after the issue date
    /// (default: the organization's terms, 30 unless set). Not together with `due_date`.
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 365, nullable = false)]
    pub payment_terms_days: Option<i32>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 5000, nullable = false)]
    pub notes: Option<String>,
    /// The total (lines and tax) must fit 64 bits of minor units.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false, max_items = 200)]
    pub lines: Option<Vec<LineInput>>,
}

/// Changes to a draft invoice: fields left out stay as they are, and none may be `null`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceUpdate {
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Uuid, nullable = false)]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Currency>, nullable = false)]
    pub currency: Option<String>,
    /// Basis points (19% is 1900).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 10000, nullable = false)]
    pub tax_rate_bp: Option<i32>,
    /// YYYY-MM-DD, not after the due date.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub issue_date: Option<String>,
    /// YYYY-MM-DD, not before the issue date.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub due_date: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 5000, nullable = false)]
    pub notes: Option<String>,
    /// Replaces the lines. The total (lines and tax) must fit 64 bits of minor units.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false, max_items = 200)]
    pub lines: Option<Vec<LineInput>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    #[schema(format = "nonblank-text", max_length = 500)]
    pub description: String,
    /// Thousandths: 1.5 hours is 1500.
    #[serde(deserialize_with = "fields::int")]
    #[schema(minimum = 1, maximum = 1000000000)]
    pub quantity_milli: i64,
    /// Minor units (cents).
    #[serde(deserialize_with = "fields::int")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub unit_price_minor: i64,
}

/// An invoice's status as shown. The database stores `draft`, `sent`, `paid` or `void`;
/// `overdue` is a sent invoice past its due date, decided when it is read ([`shown_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[schema(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Sent,
    Paid,
    Void,
    Overdue,
}

impl InvoiceStatus {
    pub const ALL: [InvoiceStatus; 5] = [Self::Draft, Self::Sent, Self::Paid, Self::Void, Self::Overdue];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Sent => "sent",
            Self::Paid => "paid",
            Self::Void => "void",
            Self::Overdue => "overdue",
        }
    }

    /// The status in words, as pages show it.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Draft => "Draft",
            Self::Sent => "Sent",
            Self::Paid => "Paid",
            Self::Void => "Void",
            Self::Overdue => "Overdue",
        }
    }

    /// A status named in a filter or a form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Still owed: sent, whether or not past its due date.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Sent | Self::Overdue)
    }
}

impl std::fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What moves an invoice along ([`transition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceAction {
    /// Draft → sent; assigns the number.
    Send,
    /// Sent → paid.
    Pay,
    /// Draft or sent → void.
    Void,
}

impl InvoiceAction {
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        match s {
            "send" => Ok(Self::Send),
            "pay" => Ok(Self::Pay),
            "void" => Ok(Self::Void),
            _ => Err(DomainError::field(field, "must be send, pay or void")),
        }
    }

    /// The audit action's verb and the phrase of a refusal.
    fn past(self) -> &'static str {
        match self {
            Self::Send => "sent",
            Self::Pay => "paid",
            Self::Void => "voided",
        }
    }

    fn refused(self) -> &'static str {
        match self {
            Self::Send => "sent",
            Self::Pay => "marked paid",
            Self::Void => "voided",
        }
    }
}

fn check_currency(code: &str) -> DomainResult<String> {
    if crate::platform::currency::is_active(code) {
        Ok(code.to_string())
    } else {
        Err(DomainError::field("currency", "must be an active ISO 4217 currency code like EUR"))
    }
}

fn check_tax(tax: i32) -> DomainResult<i32> {
    if !(0..=10_000).contains(&tax) {
        return Err(DomainError::field("tax_rate_bp", "must be between 0 and 10000 (basis points)"));
    }
    Ok(tax)
}

fn date_field(field: &str, v: Option<&str>) -> DomainResult<Option<Date>> {
    v.map(|d| fields::date(field, d)).transpose()
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct InvoiceFilter {
    pub client_id: Option<String>,
    /// draft, sent, paid, void or overdue.
    pub status: Option<String>,
    /// An invoice number (`42`, `#42`) or part of the client's name or company.
    pub q: Option<String>,
}

/// `a × b / d` rounded half up, in i128, checked to fit i64.
fn mul_div_round(a: i64, b: i64, d: i64) -> Option<i64> {
    let n = (a as i128).checked_mul(b as i128)?;
    let q = (n + (d as i128) / 2).div_euclid(d as i128);
    i64::try_from(q).ok()
}

/// Computes line amounts and totals. Errors name the offending line.
pub fn compute(lines: &mut [Line], tax_rate_bp: i32) -> DomainResult<(i64, i64, i64)> {
    let mut subtotal: i64 = 0;
    for (i, l) in lines.iter_mut().enumerate() {
        if l.quantity_milli <= 0 || l.quantity_milli > 1_000_000_000 {
            return Err(DomainError::field(&format!("lines[{i}].quantity_milli"), "must be between 1 and 1000000000"));
        }
        if l.unit_price_minor < 0 || l.unit_price_minor > 100_000_000_000 {
            return Err(DomainError::field(
                &format!("lines[{i}].unit_price_minor"),
                "must be between 0 and 100000000000",
            ));
        }
        l.amount_minor = mul_div_round(l.quantity_milli, l.unit_price_minor, 1000)
            .ok_or_else(|| DomainError::field(&format!("lines[{i}]"), "amount is too large"))?;
        subtotal =
            subtotal.checked_add(l.amount_minor).ok_or_else(|| DomainError::field("lines", "total is too large"))?;
    }
    let tax = mul_div_round(subtotal, tax_rate_bp as i64, 10_000)
        .ok_or_else(|| DomainError::field("lines", "total is too large"))?;
    let total = subtotal.checked_add(tax).ok_or_else(|| DomainError::field("lines", "total is too large"))?;
    Ok((subtotal, tax, total))
}

pub(crate) fn shown_status(mut inv: Invoice, today: Date) -> Invoice {
    if inv.status == InvoiceStatus::Sent && inv.due_date < today {
        inv.status = InvoiceStatus::Overdue;
    }
    inv
}

pub async fn list(
    db: &Db,
    now: OffsetDateTime,
    p: &OrgPrincipal,
    f: &InvoiceFilter,
    page: Page,
) -> DomainResult<(Vec<Invoice>, i64)> {
    require(p, Permission::InvoicesRead)?;
    let client: Option<ClientId> =
        f.client_id.as_deref().map(|s| fields::id_or_empty("client_id", s)).transpose()?.flatten();
    let status = match f.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            InvoiceStatus::parse(s)
                .ok_or_else(|| DomainError::field("status", "must be draft, sent, paid, void or overdue"))?
                .as_str(),
        ),
        None => None,
    };
    if f.q.as_deref().is_some_and(|q| q.chars().count() > 200) {
        return Err(DomainError::field("q", "is too long (at most 200 characters)"));
    }
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let pattern = q.map(|q| format!("%{}%", super::like_escape(q)));
    let number: Option<i64> = q.and_then(|q| q.trim_start_matches('#').trim().parse().ok());
    let where_ = "($1::uuid IS NULL OR i.client_id = $1) AND (CASE WHEN $2::text IS NULL THEN true \
                  WHEN $2 = 'overdue' THEN i.status = 'sent' AND i.due_date < $3 \
                  WHEN $2 = 'sent' THEN i.status = 'sent' AND i.due_date >= $3 ELSE i.status = $2 END) \
                  AND ($4::text IS NULL OR i.number = $5::bigint OR EXISTS (SELECT 1 FROM clients c \
                       WHERE c.organization_id = i.organization_id AND c.id = i.client_id \
                       AND (c.name ILIKE $4 OR c.company ILIKE $4)) OR i.reference ILIKE $4)";
    let mut tx = OrgTx::begin(db, p).await?;
    // Overdue is decided by the organization's own calendar.
    let ctx_today = super::org_today(&mut tx, now).await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM invoices i WHERE {where_}"))
        .bind(client)
        .bind(status)
        .bind(ctx_today)
        .bind(&pattern)
        .bind(number)
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<Invoice> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices i WHERE {where_} ORDER BY i.issue_date DESC, i.created_at DESC, i.id DESC LIMIT $6 OFFSET $7"
    ))
    .bind(client)
    .bind(status)
    .bind(ctx_today)
    .bind(&pattern)
    .bind(number)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows.into_iter().map(|i| shown_status(i, ctx_today)).collect(), total))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvoiceDetail {
    #[serde(flatten)]
    pub invoice: Invoice,
    pub lines: Vec<Line>,
    pub client_name: String,
    /// The organization's today, as the invoice was read (what "overdue" was judged by).
    #[serde(skip)]
    pub today: Date,
}

pub(super) async fn fetch(tx: &mut OrgTx, id: InvoiceId) -> DomainResult<Invoice> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices i WHERE i.id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

pub async fn lines(tx: &mut OrgTx, id: InvoiceId) -> Result<Vec<Line>, sqlx::Error> {
    sqlx::query_as("SELECT description, quantity_milli, unit_price_minor, amount_minor FROM invoice_lines WHERE invoice_id = $1 ORDER BY position")
        .bind(id)
        .fetch_all(&mut **tx)
        .await
}

pub async fn detail_in(tx: &mut OrgTx, id: InvoiceId, today: Date) -> DomainResult<InvoiceDetail> {
    let invoice = fetch(tx, id).await?;
    let lines = lines(tx, id).await?;
    let client_name: String = sqlx::query_scalar("SELECT name FROM clients WHERE id = $1")
        .bind(invoice.client_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(InvoiceDetail { invoice: shown_status(invoice, today), lines, client_name, today })
}

pub async fn get(db: &Db, now: OffsetDateTime, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<InvoiceDetail> {
    require(p, Permission::InvoicesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let d = detail_in(&mut tx, id, today).await?;
    tx.commit().await?;
    Ok(d)
}

fn parse_lines(input: &[LineInput]) -> DomainResult<Vec<Line>> {
    if input.len() > 200 {
        return Err(DomainError::field("lines", "at most 200 lines"));
    }
    input
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Ok(Line {
                description: fields::nonblank(&format!("lines[{i}].description"), &l.description, 500)?,
                quantity_milli: l.quantity_milli,
                unit_price_minor: l.unit_price_minor,
                amount_minor: 0,
            })
        })
        .collect()
}

/// Writes the lines in place: a line at a position that stays keeps the time billed on it;
/// positions beyond the new lines are deleted, which releases their time.
async fn write_lines(tx: &mut OrgTx, id: InvoiceId, lines: &[Line]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM invoice_lines WHERE invoice_id = $1 AND position >= $2")
        .bind(id)
        .bind(lines.len() as i32)
        .execute(&mut **tx)
        .await?;
    for (pos, l) in lines.iter().enumerate() {
        let org = tx.org_id();
        sqlx::query(
            "INSERT INTO invoice_lines (organization_id, invoice_id, position, description, quantity_milli, unit_price_minor, amount_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (organization_id, invoice_id, position) DO UPDATE SET \
             description = EXCLUDED.description, quantity_milli = EXCLUDED.quantity_milli, \
             unit_price_minor = EXCLUDED.unit_price_minor, amount_minor = EXCLUDED.amount_minor",
        )
        .bind(org)
        .bind(id)
        .bind(pos as i32)
        .bind(&l.description)
        .bind(l.quantity_milli)
        .bind(l.unit_price_minor)
        .bind(l.amount_minor)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Where each of a draft's lines went when its lines were replaced, so that what it billed stays
/// billed by the line that says so: a line kept as it was (at its place, else moved), then an
/// edited line at its own place when no kept line took that place; `None` for a line that is
/// gone, whose time and expenses are released. Billing follows the line, not the place: removing
/// a line before a billed one must not leave the billed text on the invoice with its time or
/// expense free to be billed again.
fn relink(old: &[Line], new: &[Line]) -> Vec<Option<usize>> {
    let same = |a: &Line, b: &Line| {
        a.description == b.description
            && a.quantity_milli == b.quantity_milli
            && a.unit_price_minor == b.unit_price_minor
    };
    let mut taken = vec![false; new.len()];
    let mut to = vec![None; old.len()];
    for (i, o) in old.iter().enumerate() {
        if i < new.len() && same(o, &new[i]) {
            to[i] = Some(i);
            taken[i] = true;
        }
    }
    for (i, o) in old.iter().enumerate() {
        if to[i].is_none()
            && let Some(j) = (0..new.len()).find(|&j| !taken[j] && same(o, &new[j]))
        {
            to[i] = Some(j);
            taken[j] = true;
        }
    }
    for i in 0..old.len().min(new.len()) {
        if to[i].is_none() && !taken[i] {
            to[i] = Some(i);
            taken[i] = true;
        }
    }
    to
}

/// [`write_lines`], with what the old lines billed moved along with them ([`relink`]): the links
/// are lifted first (the old places may be deleted or hold other lines), then set again.
async fn write_lines_relinked(tx: &mut OrgTx, id: InvoiceId, lines: &[Line], to: &[Option<usize>]) -> DomainResult<()> {
    let mut billed: Vec<(&str, Uuid, i32)> = Vec::new();
    for table in ["time_entries", "expenses"] {
        let rows: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
            "UPDATE {table} t SET invoice_id = NULL, invoice_line = NULL FROM {table} o \
             WHERE o.organization_id = t.organization_id AND o.id = t.id AND o.invoice_id = $1 \
             RETURNING t.id, o.invoice_line"
        ))
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        billed.extend(rows.into_iter().map(|(item, line)| (table, item, line)));
    }
    write_lines(tx, id, lines).await?;
    for (table, item, line) in billed {
        let Some(Some(place)) = usize::try_from(line).ok().and_then(|l| to.get(l).copied()) else { continue };
        sqlx::query(&format!("UPDATE {table} SET invoice_id = $1, invoice_line = $2 WHERE id = $3"))
            .bind(id)
            .bind(place as i32)
            .bind(item)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) fn snapshot(i: &Invoice) -> serde_json::Value {
    json!({ "number": i.number, "client_id": i.client_id, "status": i.status, "currency": i.currency,
            "total_minor": i.total_minor, "paid_minor": i.paid_minor })
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &InvoiceInput) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesCreate)?;
    let client: ClientId = fields::id("client_id", &input.client_id)?;
    let currency = input.currency.as_deref().map(check_currency).transpose()?;
    let tax = input.tax_rate_bp.map(check_tax).transpose()?;
    let issue = date_field("issue_date", input.issue_date.as_deref())?;
    let due = date_field("due_date", input.due_date.as_deref())?;
    let terms = input.payment_terms_days.map(|d| fields::within("payment_terms_days", d, 0, 365)).transpose()?;
    if terms.is_some() && due.is_some() {
        return Err(DomainError::field("payment_terms_days", "give either payment terms or a due date, not both"));
    }
    let notes = fields::text("notes", input.notes.as_deref().unwrap_or(""), 5000)?;
    let mut lines = parse_lines(input.lines.as_deref().unwrap_or(&[]))?;
    let (subtotal, tax_minor, total) = compute(&mut lines, tax.unwrap_or(0))?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Without a tax rate, the organization's default (Settings → Invoicing).
    let (tax, subtotal, tax_minor, total) = match tax {
        Some(t) => (t, subtotal, tax_minor, total),
        None => {
            let t: i32 = sqlx::query_scalar("SELECT default_tax_rate_bp FROM organizations WHERE id = $1")
                .bind(tx.org_id())
                .fetch_one(&mut *tx)
                .await?;
            let (s, x, total) = compute(&mut lines, t)?;
            (t, s, x, total)
        }
    };
    // Without a date, the invoice is issued today where the organization is.
    let issue = match issue {
        Some(d) => d,
        None => super::org_today(&mut tx, ctx.now).await?,
    };
    // Without a due date: the terms given, else the organization's.
    let terms = match (terms, due) {
        (Some(t), _) => Some(t),
        (None, None) => Some(
            sqlx::query_scalar("SELECT payment_terms_days FROM organizations WHERE id = $1")
                .bind(tx.org_id())
                .fetch_one(&mut *tx)
                .await?,
        ),
        (None, Some(_)) => None,
    };
    // The terms' days later, or the last day there is.
    let due = due.unwrap_or_else(|| issue.checked_add(Duration::days(terms.unwrap_or(30).into())).unwrap_or(Date::MAX));
    if due < issue {
        return Err(DomainError::field("due_date", "must not be before the issue date"));
    }
    let client_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)")
        .bind(client)
        .fetch_one(&mut *tx)
        .await?;
    if !client_exists {
        return Err(DomainError::field("client_id", "no such client"));
    }
    let currency = match currency {
        Some(c) => c,
        None => super::org_currency(&mut tx).await?,
    };
    let draft = Draft { client, currency, tax, issue, due, terms, notes, subtotal, tax_minor, total };
    let inv = insert_draft(&mut tx, ctx, &draft, &lines).await?;
    audit::record(&mut tx, ctx, Entry::new("invoice.created", "invoice", inv.id).after(snapshot(&inv))).await?;
    tx.commit().await?;
    Ok(inv)
}

/// A draft as it is written: every field decided and checked, the sums computed.
struct Draft {
    client: ClientId,
    currency: String,
    tax: i32,
    issue: Date,
    due: Date,
    terms: Option<i32>,
    notes: String,
    subtotal: i64,
    tax_minor: i64,
    total: i64,
}

async fn insert_draft(tx: &mut OrgTx, ctx: &Context, d: &Draft, lines: &[Line]) -> DomainResult<Invoice> {
    let id = InvoiceId::new();
    let inv: Invoice = sqlx::query_as(&format!(
        "INSERT INTO invoices AS i (organization_id, id, client_id, currency, tax_rate_bp, issue_date, due_date, notes, subtotal_minor, \
         tax_minor, total_minor, created_at, payment_terms_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(id)
    .bind(d.client)
    .bind(&d.currency)
    .bind(d.tax)
    .bind(d.issue)
    .bind(d.due)
    .bind(&d.notes)
    .bind(d.subtotal)
    .bind(d.tax_minor)
    .bind(d.total)
    .bind(ctx.now)
    .bind(d.terms)
    .fetch_one(&mut **tx)
    .await?;
    write_lines(tx, id, lines).await?;
    Ok(inv)
}

/// A new draft with another invoice's client, currency, tax rate, notes and lines, issued today
/// with the same payment terms: next month's invoice of a retainer, or a void one made again.
/// Any invoice can be copied, whatever its status; the copy bills no time (the time stays with
/// the invoice that billed it), and its lines are plain lines that can be edited.
pub async fn duplicate(db: &Db, ctx: &Context, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesCreate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let issue = super::org_today(&mut tx, ctx.now).await?;
    let inv = copy_in(&mut tx, ctx, id, issue, None).await?;
    tx.commit().await?;
    Ok(inv)
}

/// [`duplicate`] inside the caller's transaction, issued on `issue`; `repeat` names the repeat
/// that made the copy (`work::repeats`), in its audit event.
pub(super) async fn copy_in(
    tx: &mut OrgTx,
    ctx: &Context,
    id: InvoiceId,
    issue: Date,
    repeat: Option<RepeatId>,
) -> DomainResult<Invoice> {
    let source = fetch(tx, id).await?;
    let mut copied = lines(tx, id).await?;
    // Its terms, or for an invoice given a due date, as many days as it gave.
    let terms = source
        .payment_terms_days
        .unwrap_or_else(|| (source.due_date - source.issue_date).whole_days().clamp(0, 365) as i32);
    let due = issue.checked_add(Duration::days(terms.into())).unwrap_or(Date::MAX);
    let (subtotal, tax_minor, total) = compute(&mut copied, source.tax_rate_bp)?;
    let draft = Draft {
        client: source.client_id,
        currency: source.currency.clone(),
        tax: source.tax_rate_bp,
        issue,
        due,
        terms: Some(terms),
        notes: source.notes.clone(),
        subtotal,
        tax_minor,
        total,
    };
    let mut inv = insert_draft(tx, ctx, &draft, &copied).await?;
    let mut after = snapshot(&inv);
    after["copied_from"] = json!(source.id);
    if let Some(r) = repeat {
        sqlx::query("UPDATE invoices SET repeated_from = $2 WHERE id = $1")
            .bind(inv.id)
            .bind(source.id)
            .execute(&mut **tx)
            .await?;
        inv.repeated_from = Some(source.id);
        after["repeat"] = json!(r);
    }
    audit::record(tx, ctx, Entry::new("invoice.created", "invoice", inv.id).after(after)).await?;
    Ok(inv)
}

/// The tax rate a new invoice starts with (Settings → Invoicing), for the new-invoice form.
pub async fn default_tax_rate(db: &Db, p: &OrgPrincipal) -> DomainResult<i32> {
    require(p, Permission::InvoicesCreate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let bp: i32 = sqlx::query_scalar("SELECT default_tax_rate_bp FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(bp)
}

/// Changes a draft's fields, currency included, and replaces its lines when they are given (sent
/// invoices are immutable; void them instead).
pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    input: &InvoiceUpdate,
) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Locked, as billing time or expenses onto it locks it: the lines and what they bill are
    // rewritten together below.
    let before = fetch_for_update(&mut tx, id).await?;
    // Whatever the changes, a sent invoice says so first.
    if before.status != InvoiceStatus::Draft {
        return Err(DomainError::Conflict(
            "Only draft invoices can be edited; void this one and create a new one.".into(),
        ));
    }
    let client: Option<ClientId> = input.client_id.as_deref().map(|c| fields::id("client_id", c)).transpose()?;
    let currency = input.currency.as_deref().map(check_currency).transpose()?;
    let tax = input.tax_rate_bp.map(check_tax).transpose()?;
    let issue = date_field("issue_date", input.issue_date.as_deref())?;
    let due = date_field("due_date", input.due_date.as_deref())?;
    let notes = input.notes.as_deref().map(|n| fields::text("notes", n, 5000)).transpose()?;
    let new_lines = input.lines.as_deref().map(parse_lines).transpose()?;
    if let Some(c) = client
        && c != before.client_id
    {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)")
            .bind(c)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(DomainError::field("client_id", "no such client"));
        }
    }
    let client = client.unwrap_or(before.client_id);
    let currency = currency.unwrap_or_else(|| before.currency.clone());
    // What the draft bills belongs to its client, and an expense to its currency.
    let (billed_time, billed_expenses): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM time_entries WHERE invoice_id = $1), (SELECT count(*) FROM expenses WHERE invoice_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if client != before.client_id && billed_time + billed_expenses > 0 {
        return Err(DomainError::Conflict(
            "This draft bills its client's time or expenses; delete those lines before giving it another client."
                .into(),
        ));
    }
    if currency != before.currency && billed_expenses > 0 {
        return Err(DomainError::Conflict(format!(
            "This draft bills expenses in {}; delete those lines before changing its currency.",
            before.currency
        )));
    }
    let tax = tax.unwrap_or(before.tax_rate_bp);
    let issue = issue.unwrap_or(before.issue_date);
    let due = due.unwrap_or(before.due_date);
    if due < issue {
        return Err(DomainError::field("due_date", "must not be before the issue date"));
    }
    let notes = notes.unwrap_or_else(|| before.notes.clone());
    let old_lines = lines(&mut tx, id).await?;
    let relinked = new_lines.as_ref().map(|new| relink(&old_lines, new));
    let mut lines = new_lines.unwrap_or(old_lines);
    let (subtotal, tax_minor, total) = compute(&mut lines, tax)?;
    let after: Invoice = sqlx::query_as(&format!(
        "UPDATE invoices AS i SET client_id = $2, tax_rate_bp = $3, issue_date = $4, due_date = $5, notes = $6, subtotal_minor = $7, \
         tax_minor = $8, total_minor = $9, currency = $10 WHERE i.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(client)
    .bind(tax)
    .bind(issue)
    .bind(due)
    .bind(&notes)
    .bind(subtotal)
    .bind(tax_minor)
    .bind(total)
    .bind(&currency)
    .fetch_one(&mut *tx)
    .await?;
    match relinked {
        Some(to) => write_lines_relinked(&mut tx, id, &lines, &to).await?,
        None => write_lines(&mut tx, id, &lines).await?,
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.updated", "invoice", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Moves an invoice along: `send` (draft → sent, assigns the number), `pay` (sent → paid),
/// `void` (draft or sent → void).
pub async fn transition(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    action: InvoiceAction,
) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let invoice = transition_in(&mut tx, ctx, p, id, action).await?;
    tx.commit().await?;
    Ok(invoice)
}

/// [`transition`] inside the caller's transaction.
pub(super) async fn transition_in(
    tx: &mut OrgTx,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    action: InvoiceAction,
) -> DomainResult<Invoice> {
    let before = lock(tx, id).await?;
    use InvoiceAction as A;
    use InvoiceStatus as S;
    let after: Invoice = match (action, before.status) {
        (A::Send, S::Draft) => {
            let has_lines: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM invoice_lines WHERE invoice_id = $1)")
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
            if !has_lines {
                return Err(DomainError::Conflict("An invoice needs at least one line before it is sent.".into()));
            }
            // The year of the sending, where the organization is.
            let year = super::org_today(tx, ctx.now).await?.year();
            let (number, reference) = next_number(tx, year).await?;
            sqlx::query_as(&format!(
                "UPDATE invoices AS i SET status = 'sent', number = $2, number_year = $3, reference = $4, sent_at = $5 \
                 WHERE i.id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(number)
            .bind(year)
            .bind(&reference)
            .bind(ctx.now)
            .fetch_one(&mut **tx)
            .await?
        }
        (A::Pay, S::Sent) => {
            // Paid in full today: what was still owed is one more payment.
            if before.balance_minor > 0 {
                let today = super::org_today(tx, ctx.now).await?;
                insert_payment(tx, ctx, id, before.balance_minor, today, "").await?;
            }
            mark_paid(tx, ctx, p, id).await?
        }
        (A::Void, S::Sent) if before.paid_minor > 0 => {
            return Err(DomainError::Conflict(
                "This invoice has payments recorded; delete them before voiding it.".into(),
            ));
        }
        (A::Void, S::Draft | S::Sent) => {
            // The time and the expenses it billed can be billed again.
            for table in ["time_entries", "expenses"] {
                sqlx::query(&format!(
                    "UPDATE {table} SET invoice_id = NULL, invoice_line = NULL WHERE invoice_id = $1"
                ))
                .bind(id)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query_as(&format!(
                "UPDATE invoices AS i SET status = 'void', voided_at = $2 WHERE i.id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(ctx.now)
            .fetch_one(&mut **tx)
            .await?
        }
        (_, current) => {
            return Err(DomainError::Conflict(format!("A {current} invoice can't be {}.", action.refused())));
        }
    };
    audit::record(
        tx,
        ctx,
        Entry::new(&format!("invoice.{}", action.past()), "invoice", id)
            .before(snapshot(&before))
            .after(snapshot(&after)),
    )
    .await?;
    let today = super::org_today(tx, ctx.now).await?;
    Ok(shown_status(after, today))
}

/// The invoice, its row held until the transaction ends. The lock comes first, in a statement
/// of its own: a statement that waited for the lock still sees what its snapshot saw, so the
/// payments are added up by the next statement, which sees those of whoever held the row.
pub(super) async fn lock(tx: &mut OrgTx, id: InvoiceId) -> DomainResult<Invoice> {
    sqlx::query("SELECT 1 FROM invoices WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    fetch(tx, id).await
}

/// A payment against an invoice (`work::invoice_payments` records and deletes them; "Mark paid"
/// records the last one). It lives here, with the invoice it pays, so that both write it with
/// one statement.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    #[schema(value_type = String, format = Uuid)]
    pub id: PaymentId,
    #[schema(value_type = String, format = Uuid)]
    pub invoice_id: InvoiceId,
    /// Minor units, in the invoice's currency.
    pub amount_minor: i64,
    /// The day the money came.
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub paid_on: Date,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub(super) const PAYMENT_COLUMNS: &str = "id, invoice_id, amount_minor, paid_on, note, created_at";

/// Adds a payment; the caller holds the invoice's row ([`lock`]) and has checked the amount.
pub(super) async fn insert_payment(
    tx: &mut OrgTx,
    ctx: &Context,
    id: InvoiceId,
    amount: i64,
    paid_on: Date,
    note: &str,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO invoice_payments (organization_id, id, invoice_id, amount_minor, paid_on, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PAYMENT_COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(PaymentId::new())
    .bind(id)
    .bind(amount)
    .bind(paid_on)
    .bind(note)
    .bind(ctx.now)
    .fetch_one(&mut **tx)
    .await
}

/// Sent → paid, and the people who follow invoices are told.
pub(super) async fn mark_paid(tx: &mut OrgTx, ctx: &Context, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<Invoice> {
    let after: Invoice = sqlx::query_as(&format!(
        "UPDATE invoices AS i SET status = 'paid', paid_at = $2 WHERE i.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(ctx.now)
    .fetch_one(&mut **tx)
    .await?;
    super::daily::notify_invoice_event(tx, id, super::daily::InvoiceEvent::Paid, p.on_behalf_of(), ctx.now).await?;
    Ok(after)
}

/// The next number of the organization's sequence for `year` and how it is printed. The
/// counter row is locked until the transaction ends: concurrent sends queue here and get
/// consecutive numbers, and a rolled-back send gives its number back (no gaps).
pub async fn next_number(tx: &mut OrgTx, year: i32) -> Result<(i64, String), sqlx::Error> {
    let org = tx.org_id();
    let number: i64 = sqlx::query_scalar(
        "INSERT INTO invoice_number_counters AS c (organization_id, year, next_number) VALUES ($1, $2, 2) \
         ON CONFLICT (organization_id, year) DO UPDATE SET next_number = c.next_number + 1 RETURNING c.next_number - 1",
    )
    .bind(org)
    .bind(year)
    .fetch_one(&mut **tx)
    .await?;
    let prefix: String = sqlx::query_scalar("SELECT invoice_prefix FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(&mut **tx)
        .await?;
    Ok((number, reference(&prefix, year, number)))
}

/// `INV`, 2026, 7 → `INV-2026-0007`.
pub fn reference(prefix: &str, year: i32, number: i64) -> String {
    format!("{prefix}-{year:04}-{number:04}")
}

/// Which time to bill and how ([`bill_time`]).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillTime {
    /// Exactly these entries (each must be unbilled, billable, of the invoice's client); or
    /// leave out to take every one that matches the filters below.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false, max_items = 1000)]
    pub entry_ids: Option<Vec<String>>,
    /// Only this project (of the invoice's client).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "uuid-or-empty", nullable = false)]
    pub project_id: Option<String>,
    /// YYYY-MM-DD, inclusive.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "date-or-empty", nullable = false)]
    pub from: Option<String>,
    /// YYYY-MM-DD, inclusive.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "date-or-empty", nullable = false)]
    pub to: Option<String>,
    /// `task` (one line per task and rate, the default) or `entry` (one line per entry).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", nullable = false)]
    pub group: Option<String>,
    /// Only time whose week is approved (default `false`: approved or not).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub approved_only: Option<bool>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unbilled {
    pub id: TimeEntryId,
    pub project_id: ProjectId,
    pub project_name: String,
    pub task_title: Option<String>,
    pub minutes: i32,
    pub spent_on: Date,
    pub note: String,
    /// The rate it is billed at: the one recorded on it, else the one that applies now.
    pub rate_minor: Option<i64>,
    /// Whether `rate_minor` was recorded on the entry (else it is today's).
    pub recorded_rate: bool,
    pub person: String,
    /// Its week is approved.
    pub approved: bool,
}

/// An entry keeps the rate it was recorded at; one recorded while no rate applied is billed at the
/// rate that applies when it is billed (the person's on the project, the project's, the client's,
/// the organization's: as `time_entries::resolve_rate`), and `rate_minor` is `None` only when
/// none applies even now (`recorded_rate` tells which). The client's unbilled billable time that
/// `f` picks, then `order` (a limit, or the row locks of billing).
async fn unbilled_rows(
    tx: &mut OrgTx,
    client: ClientId,
    f: &TimeFilterParsed,
    order: &str,
) -> Result<Vec<Unbilled>, sqlx::Error> {
    use super::time_entries::{BILLED_RATE, RATE_JOINS};
    let sql = format!(
        "SELECT e.id, e.project_id, p.name AS project_name, k.title AS task_title, e.minutes, e.spent_on, e.note, \
         {BILLED_RATE} AS rate_minor, e.rate_minor IS NOT NULL AS recorded_rate, \
         coalesce(nullif(u.display_name, ''), u.email) AS person, e.approved_at IS NOT NULL AS approved \
         FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         {RATE_JOINS} \
         LEFT JOIN tasks k ON k.organization_id = e.organization_id AND k.id = e.task_id \
         JOIN users u ON u.id = e.user_id \
         WHERE p.client_id = $1 AND e.billable AND e.invoice_id IS NULL \
           AND ($2::uuid IS NULL OR e.project_id = $2) AND ($3::date IS NULL OR e.spent_on >= $3) \
           AND ($4::date IS NULL OR e.spent_on <= $4) AND ($5::uuid[] IS NULL OR e.id = ANY($5)) \
           AND (NOT $6 OR e.approved_at IS NOT NULL) {order}"
    );
    sqlx::query_as(&sql)
        .bind(client)
        .bind(f.project)
        .bind(f.from)
        .bind(f.to)
        .bind(f.entries.as_deref().map(|v| v.iter().map(|e| e.as_uuid()).collect::<Vec<_>>()))
        .bind(f.approved_only)
        .fetch_all(&mut **tx)
        .await
}

struct TimeFilterParsed {
    entries: Option<Vec<TimeEntryId>>,
    project: Option<ProjectId>,
    from: Option<Date>,
    to: Option<Date>,
    per_entry: bool,
    approved_only: bool,
}

fn parse_bill(input: &BillTime) -> DomainResult<TimeFilterParsed> {
    let entries = match &input.entry_ids {
        None => None,
        Some(ids) if ids.is_empty() => return Err(DomainError::field("entry_ids", "pick at least one entry")),
        Some(ids) if ids.len() > 1000 => return Err(DomainError::field("entry_ids", "at most 1000 entries at once")),
        Some(ids) => Some(
            ids.iter()
                .enumerate()
                .map(|(i, s)| fields::id(&format!("entry_ids[{i}]"), s))
                .collect::<DomainResult<Vec<TimeEntryId>>>()?,
        ),
    };
    let (project, from, to) =
        super::bill_filters(input.project_id.as_deref(), input.from.as_deref(), input.to.as_deref())?;
    let per_entry = match input.group.as_deref().unwrap_or("task") {
        "task" | "" => false,
        "entry" => true,
        _ => return Err(DomainError::field("group", "must be task or entry")),
    };
    Ok(TimeFilterParsed { entries, project, from, to, per_entry, approved_only: input.approved_only.unwrap_or(false) })
}

/// Sent invoices a client hasn't paid, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Owed {
    /// ISO 4217.
    pub currency: String,
    /// How many sent invoices are unpaid.
    pub invoices: i64,
    /// Their totals, in minor units of `currency`.
    pub total_minor: i64,
    /// Of those, the ones past their due date in the organization's time zone.
    pub overdue: i64,
    pub overdue_minor: i64,
}

/// What a client owes, and what is still to bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ClientBalance {
    /// Sent, unpaid invoices per currency, in currency order (empty when nothing is owed).
    pub owed: Vec<Owed>,
    /// Billable time on the client's projects (those the key may see) not yet on an invoice.
    pub unbilled_minutes: i64,
    /// Its worth at the rate each entry would be billed at now (the rate it was recorded at,
    /// else the person's on the project, the project's, the client's, the organization's), each
    /// entry rounded to the minor unit, in `currency`.
    pub unbilled_minor: i64,
    /// Unbilled entries no rate applies to: they count as nothing.
    pub unrated_entries: i64,
    /// The organization's currency (ISO 4217), which rates are kept in.
    pub currency: String,
    /// Billable expenses on the client's projects (those the key may see) not yet on an
    /// invoice, per currency, in currency order (empty when there are none).
    pub unbilled_expenses: Vec<UnbilledExpenses>,
}

pub use super::uninvoiced::UnbilledExpenses;

/// What each of `clients` owes, per currency, in client and currency order.
async fn owed_by(tx: &mut OrgTx, clients: &[Uuid], today: Date) -> DomainResult<Vec<(ClientId, Owed)>> {
    // Sums of bigints are numeric: a total beyond 64 bits is capped rather than failing the page.
    // What is owed is what the invoices still owe, their payments taken off.
    let rows: Vec<(ClientId, String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT client_id, currency, count(*), least(sum(balance), 9223372036854775807)::bigint, \
                count(*) FILTER (WHERE due_date < $2), \
                least(coalesce(sum(balance) FILTER (WHERE due_date < $2), 0), 9223372036854775807)::bigint \
           FROM (SELECT i.client_id, i.currency, i.due_date, i.total_minor - {PAID_SQL} AS balance \
                   FROM invoices i WHERE i.client_id = ANY($1) AND i.status = 'sent') i \
          GROUP BY client_id, currency ORDER BY client_id, currency"
    ))
    .bind(clients)
    .bind(today)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(client, currency, invoices, total_minor, overdue, overdue_minor)| {
            (client, Owed { currency, invoices, total_minor, overdue, overdue_minor })
        })
        .collect())
}

/// What each of `clients` owes (those with sent, unpaid invoices), for those who may read
/// invoices (for others: nothing, as the invoices themselves).
pub async fn owed(
    db: &Db,
    p: &OrgPrincipal,
    clients: &[ClientId],
    now: OffsetDateTime,
) -> DomainResult<std::collections::HashMap<ClientId, Vec<Owed>>> {
    let mut by_client: std::collections::HashMap<ClientId, Vec<Owed>> = Default::default();
    if clients.is_empty() || !p.can(Permission::InvoicesRead) {
        return Ok(by_client);
    }
    let ids: Vec<Uuid> = clients.iter().map(|c| c.as_uuid()).collect();
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    for (client, o) in owed_by(&mut tx, &ids, today).await? {
        by_client.entry(client).or_default().push(o);
    }
    tx.commit().await?;
    Ok(by_client)
}

/// A client's balance, for those who may read invoices (404 for a client one may not see).
pub async fn client_balance(
    db: &Db,
    p: &OrgPrincipal,
    client: ClientId,
    now: OffsetDateTime,
) -> DomainResult<ClientBalance> {
    require(p, Permission::InvoicesRead)?;
    let member = super::member_filter(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    super::clients::fetch_visible(&mut tx, p, client).await?;
    let today = super::org_today(&mut tx, now).await?;
    let owed = owed_by(&mut tx, &[client.as_uuid()], today).await?.into_iter().map(|(_, o)| o).collect();
    let time = super::uninvoiced::time(&mut tx, member, Some(client)).await?.pop();
    let unbilled_expenses =
        super::uninvoiced::expenses(&mut tx, member, Some(client)).await?.into_iter().map(|(_, x)| x).collect();
    let currency = super::org_currency(&mut tx).await?;
    let (unbilled_minutes, unbilled_minor, unrated_entries) =
        time.map_or((0, 0, 0), |t| (t.minutes, t.amount_minor, t.unrated_entries));
    tx.commit().await?;
    Ok(ClientBalance { owed, unbilled_minutes, unbilled_minor, unrated_entries, currency, unbilled_expenses })
}

/// The invoice's client's billable time not yet billed (for picking), at most 500 entries.
pub async fn unbilled(db: &Db, p: &OrgPrincipal, id: InvoiceId, input: &BillTime) -> DomainResult<Vec<Unbilled>> {
    require(p, Permission::InvoicesUpdate)?;
    let f = parse_bill(input)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let inv = fetch(&mut tx, id).await?;
    let rows = unbilled_rows(&mut tx, inv.client_id, &f, "ORDER BY e.spent_on, e.created_at, e.id LIMIT 500").await?;
    tx.commit().await?;
    Ok(rows)
}

/// Turns billable, unbilled time of the draft invoice's client into invoice lines (hours ×
/// the rate stored on each entry), grouped per task and rate or one line per entry, and marks
/// the entries billed by those lines — all in one transaction.
///
/// Concurrency: the invoice row is locked (two requests on one invoice queue), and the entries
/// are locked with `FOR UPDATE` and re-checked after any wait, so of two requests billing the
/// same entry on different invoices one wins; the other gets a 409 naming why and writes
/// nothing.
pub async fn bill_time(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    input: &BillTime,
) -> DomainResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let f = parse_bill(input)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_for_update(&mut tx, id).await?;
    if before.status != InvoiceStatus::Draft {
        return Err(DomainError::Conflict("Time can be added only to a draft invoice.".into()));
    }
    let wanted = f.entries.as_ref().map(Vec::len);
    let rows =
        unbilled_rows(&mut tx, before.client_id, &f, "ORDER BY e.spent_on, e.created_at, e.id FOR UPDATE OF e").await?;
    if let Some(n) = wanted
        && rows.len() != n
    {
        return Err(DomainError::Conflict(format!(
            "Some of this time is already billed (or is not billable time of this invoice's client{}); reload and pick again.",
            if f.approved_only { ", or not approved" } else { "" }
        )));
    }
    if rows.is_empty() {
        return Err(DomainError::Conflict(format!(
            "There is no unbilled billable{} time of this client to add.",
            if f.approved_only { ", approved" } else { "" }
        )));
    }
    // Lines: per entry, or per (project, task, rate) in the order first seen.
    let mut groups: Vec<(String, i64, i64, Vec<TimeEntryId>)> = Vec::new(); // (description, minutes, rate, entries)
    for r in &rows {
        let rate = r.rate_minor.unwrap_or(0);
        let what = match &r.task_title {
            Some(t) => format!("{} — {t}", r.project_name),
            None => r.project_name.clone(),
        };
        if f.per_entry {
            let mut d = format!("{what} ({}, {})", r.spent_on, r.person);
            if !r.note.is_empty() {
                d.push_str(": ");
                d.push_str(&r.note);
            }
            groups.push((d, r.minutes.into(), rate, vec![r.id]));
        } else if let Some(g) = groups.iter_mut().find(|g| g.0 == what && g.2 == rate) {
            g.1 += i64::from(r.minutes);
            g.3.push(r.id);
        } else {
            groups.push((what, r.minutes.into(), rate, vec![r.id]));
        }
    }
    let mut all = lines(&mut tx, id).await?;
    let first = all.len();
    if first + groups.len() > 200 {
        return Err(DomainError::field("entry_ids", "an invoice holds at most 200 lines; bill less at once"));
    }
    for (description, minutes, rate, _) in &groups {
        let description: String = description.chars().take(500).collect();
        all.push(Line {
            description,
            // Hours in thousandths, rounded half up (1 minute is 0.017 h).
            quantity_milli: mul_div_round(*minutes, 1000, 60).unwrap_or(0).max(1),
            unit_price_minor: *rate,
            amount_minor: 0,
        });
    }
    let after = rewrite_lines(&mut tx, &before, &mut all).await?;
    for (i, (_, _, _, entries)) in groups.iter().enumerate() {
        let ids: Vec<Uuid> = entries.iter().map(|e| e.as_uuid()).collect();
        // An entry recorded without a rate keeps the rate it was billed at.
        let billed_rate = rows.iter().find(|r| entries.contains(&r.id)).and_then(|r| r.rate_minor);
        sqlx::query(
            "UPDATE time_entries SET invoice_id = $1, invoice_line = $2, rate_minor = coalesce(rate_minor, $4) \
             WHERE id = ANY($3)",
        )
        .bind(id)
        .bind((first + i) as i32)
        .bind(&ids)
        .bind(billed_rate)
        .execute(&mut *tx)
        .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.time_billed", "invoice", id).before(snapshot(&before)).after(json!({
            "total_minor": after.total_minor,
            "entries": rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            "lines": groups.len(),
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The invoice, its row locked for the rest of the transaction (404 when there is none).
pub(super) async fn fetch_for_update(tx: &mut OrgTx, id: InvoiceId) -> DomainResult<Invoice> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices i WHERE i.id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

/// Writes a draft's lines (each line's amount computed) and its totals; the draft as it is then.
pub(super) async fn rewrite_lines(tx: &mut OrgTx, before: &Invoice, all: &mut [Line]) -> DomainResult<Invoice> {
    let (subtotal, tax_minor, total) = compute(all, before.tax_rate_bp)?;
    write_lines(tx, before.id, all).await?;
    Ok(sqlx::query_as(&format!(
        "UPDATE invoices AS i SET subtotal_minor = $2, tax_minor = $3, total_minor = $4 WHERE i.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(before.id)
    .bind(subtotal)
    .bind(tax_minor)
    .bind(total)
    .fetch_one(&mut **tx)
    .await?)
}

/// Records that the invoice's client opened it (the first time only; an audit event and a
/// notification then).
pub async fn record_viewed(tx: &mut OrgTx, ctx: &Context, id: InvoiceId) -> DomainResult<()> {
    let first =
        sqlx::query("UPDATE invoices SET viewed_at = $2 WHERE id = $1 AND viewed_at IS NULL AND status <> 'draft'")
            .bind(id)
            .bind(ctx.now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if first == 1 {
        audit::record(
            tx,
            ctx,
            Entry::new("invoice.viewed", "invoice", id).after(json!({ "viewed_at": ctx.now.unix_timestamp() })),
        )
        .await?;
        // The Owners and Admins hear of it (the client is no member to leave out).
        super::daily::notify_invoice_event(tx, id, super::daily::InvoiceEvent::Viewed, None, ctx.now).await?;
    }
    Ok(())
}

pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<()> {
    require(p, Permission::InvoicesDelete)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    if before.status != InvoiceStatus::Draft {
        return Err(DomainError::Conflict("Only drafts can be deleted; void a sent invoice instead.".into()));
    }
    sqlx::query("DELETE FROM invoices WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("invoice.deleted", "invoice", id).before(snapshot(&before))).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(d: &str, price: i64) -> Line {
        Line { description: d.into(), quantity_milli: 1000, unit_price_minor: price, amount_minor: 0 }
    }

    #[test]
    fn billing_follows_a_line_when_others_are_removed_moved_or_edited() {
        let (a, e, b) = (line("Design", 100), line("Travel", 4250), line("Hosting", 900));
        // The line before the billed one removed: the billed one moves up with its link.
        assert_eq!(relink(&[a.clone(), e.clone()], std::slice::from_ref(&e)), [None, Some(0)]);
        // The billed line removed: released; the one after it moves up.
        assert_eq!(relink(&[a.clone(), e.clone(), b.clone()], &[a.clone(), b.clone()]), [Some(0), None, Some(1)]);
        // Reordered: each follows its text.
        assert_eq!(relink(&[a.clone(), e.clone()], &[e.clone(), a.clone()]), [Some(1), Some(0)]);
        // Edited in place (a price changed): still billed by its place.
        assert_eq!(relink(&[a.clone(), e.clone()], &[a.clone(), line("Travel", 5000)]), [Some(0), Some(1)]);
        // Two equal lines keep one place each; everything removed releases everything.
        assert_eq!(relink(&[e.clone(), e.clone()], &[e.clone(), e.clone()]), [Some(0), Some(1)]);
        assert_eq!(relink(&[a, e], &[]), [None, None]);
    }

    #[test]
    fn totals_use_integer_minor_units_with_half_up_rounding() {
        let mut lines = vec![
            Line { description: "Design".into(), quantity_milli: 1500, unit_price_minor: 9999, amount_minor: 0 },
            Line { description: "Hosting".into(), quantity_milli: 1000, unit_price_minor: 1, amount_minor: 0 },
            Line { description: "Third".into(), quantity_milli: 333, unit_price_minor: 3, amount_minor: 0 },
        ];
        // 1.5 × 99.99 = 149.985 → 149.99; 0.333 × 0.03 = 0.000999 → 0.00
        let (sub, tax, total) = compute(&mut lines, 1900).unwrap();
        assert_eq!(lines[0].amount_minor, 14999);
        assert_eq!(lines[2].amount_minor, 1);
        assert_eq!(sub, 14999 + 1 + 1);
        assert_eq!(tax, (15001 * 1900 + 5000) / 10000);
        assert_eq!(total, sub + tax);
        let mut huge = vec![Line {
            description: "x".into(),
            quantity_milli: 1_000_000_000,
            unit_price_minor: 100_000_000_000,
            amount_minor: 0,
        }];
        assert!(compute(&mut huge, 0).is_ok());
        let mut many: Vec<Line> = (0..200).map(|_| huge[0].clone()).collect();
        assert!(compute(&mut many, 10_000).is_err(), "overflow is an error, not a wrap");
        let mut bad = vec![Line { description: "x".into(), quantity_milli: 0, unit_price_minor: 1, amount_minor: 0 }];
        assert!(compute(&mut bad, 0).is_err());
    }
}
