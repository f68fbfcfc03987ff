//! Invoices: line items in integer minor units, tax in basis points, a gapless number
//! sequence per organization assigned when an invoice is sent.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, Duration, OffsetDateTime};
use utoipa::ToSchema;

use super::projects::require;
use super::{Page, fields};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::ids::{ClientId, InvoiceId};

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
}

pub const COLUMNS: &str = "i.id, i.number, i.client_id, i.currency, i.tax_rate_bp, i.status, i.issue_date, i.due_date, i.notes, \
     i.subtotal_minor, i.tax_minor, i.total_minor, i.created_at";

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
    /// Basis points (19% is 1900; default 0).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 0, maximum = 10000, nullable = false)]
    pub tax_rate_bp: Option<i32>,
    /// YYYY-MM-DD (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub issue_date: Option<String>,
    /// YYYY-MM-DD, not before the issue date (default: 30 days after it).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub due_date: Option<String>,
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

/// An active ISO 4217 currency code (`platform::currency`).
pub struct Currency;

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An active ISO 4217 currency code (List One, without XTS and XXX)."))
            .enum_values(Some(crate::platform::currency::ACTIVE_CODES))
            .into()
    }
}

impl ToSchema for Currency {}

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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Sent => "sent",
            Self::Paid => "paid",
            Self::Void => "void",
            Self::Overdue => "overdue",
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
    pub fn parse(field: &str, s: &str) -> AppResult<Self> {
        match s {
            "send" => Ok(Self::Send),
            "pay" => Ok(Self::Pay),
            "void" => Ok(Self::Void),
            _ => Err(AppError::field(field, "must be send, pay or void")),
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

fn check_currency(code: &str) -> AppResult<String> {
    if crate::platform::currency::is_active(code) {
        Ok(code.to_string())
    } else {
        Err(AppError::field("currency", "must be an active ISO 4217 currency code like EUR"))
    }
}

fn check_tax(tax: i32) -> AppResult<i32> {
    if !(0..=10_000).contains(&tax) {
        return Err(AppError::field("tax_rate_bp", "must be between 0 and 10000 (basis points)"));
    }
    Ok(tax)
}

fn date_field(field: &str, v: Option<&str>) -> AppResult<Option<Date>> {
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
pub fn compute(lines: &mut [Line], tax_rate_bp: i32) -> AppResult<(i64, i64, i64)> {
    let mut subtotal: i64 = 0;
    for (i, l) in lines.iter_mut().enumerate() {
        if l.quantity_milli <= 0 || l.quantity_milli > 1_000_000_000 {
            return Err(AppError::field(&format!("lines[{i}].quantity_milli"), "must be between 1 and 1000000000"));
        }
        if l.unit_price_minor < 0 || l.unit_price_minor > 100_000_000_000 {
            return Err(AppError::field(&format!("lines[{i}].unit_price_minor"), "must be between 0 and 100000000000"));
        }
        l.amount_minor = mul_div_round(l.quantity_milli, l.unit_price_minor, 1000)
            .ok_or_else(|| AppError::field(&format!("lines[{i}]"), "amount is too large"))?;
        subtotal =
            subtotal.checked_add(l.amount_minor).ok_or_else(|| AppError::field("lines", "total is too large"))?;
    }
    let tax = mul_div_round(subtotal, tax_rate_bp as i64, 10_000)
        .ok_or_else(|| AppError::field("lines", "total is too large"))?;
    let total = subtotal.checked_add(tax).ok_or_else(|| AppError::field("lines", "total is too large"))?;
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
) -> AppResult<(Vec<Invoice>, i64)> {
    require(p, Permission::InvoicesRead)?;
    let client: Option<ClientId> =
        f.client_id.as_deref().map(|s| fields::id_or_empty("client_id", s)).transpose()?.flatten();
    let status = match f.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            InvoiceStatus::parse(s)
                .ok_or_else(|| AppError::field("status", "must be draft, sent, paid, void or overdue"))?
                .as_str(),
        ),
        None => None,
    };
    if f.q.as_deref().is_some_and(|q| q.chars().count() > 200) {
        return Err(AppError::field("q", "is too long (at most 200 characters)"));
    }
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let pattern = q.map(|q| format!("%{}%", super::clients::like_escape(q)));
    let number: Option<i64> = q.and_then(|q| q.trim_start_matches('#').trim().parse().ok());
    let where_ = "($1::uuid IS NULL OR i.client_id = $1) AND (CASE WHEN $2::text IS NULL THEN true \
                  WHEN $2 = 'overdue' THEN i.status = 'sent' AND i.due_date < $3 \
                  WHEN $2 = 'sent' THEN i.status = 'sent' AND i.due_date >= $3 ELSE i.status = $2 END) \
                  AND ($4::text IS NULL OR i.number = $5::bigint OR EXISTS (SELECT 1 FROM clients c \
                       WHERE c.organization_id = i.organization_id AND c.id = i.client_id \
                       AND (c.name ILIKE $4 OR c.company ILIKE $4)))";
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
}

async fn fetch(tx: &mut OrgTx, id: InvoiceId) -> AppResult<Invoice> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices i WHERE i.id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn lines(tx: &mut OrgTx, id: InvoiceId) -> Result<Vec<Line>, sqlx::Error> {
    sqlx::query_as("SELECT description, quantity_milli, unit_price_minor, amount_minor FROM invoice_lines WHERE invoice_id = $1 ORDER BY position")
        .bind(id)
        .fetch_all(&mut **tx)
        .await
}

pub async fn detail_in(tx: &mut OrgTx, id: InvoiceId, today: Date) -> AppResult<InvoiceDetail> {
    let invoice = fetch(tx, id).await?;
    let lines = lines(tx, id).await?;
    let client_name: String = sqlx::query_scalar("SELECT name FROM clients WHERE id = $1")
        .bind(invoice.client_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(InvoiceDetail { invoice: shown_status(invoice, today), lines, client_name })
}

pub async fn get(db: &Db, now: OffsetDateTime, p: &OrgPrincipal, id: InvoiceId) -> AppResult<InvoiceDetail> {
    require(p, Permission::InvoicesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let d = detail_in(&mut tx, id, today).await?;
    tx.commit().await?;
    Ok(d)
}

fn parse_lines(input: &[LineInput]) -> AppResult<Vec<Line>> {
    if input.len() > 200 {
        return Err(AppError::field("lines", "at most 200 lines"));
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

async fn write_lines(tx: &mut OrgTx, id: InvoiceId, lines: &[Line]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM invoice_lines WHERE invoice_id = $1").bind(id).execute(&mut **tx).await?;
    for (pos, l) in lines.iter().enumerate() {
        let org = tx.org_id();
        sqlx::query(
            "INSERT INTO invoice_lines (organization_id, invoice_id, position, description, quantity_milli, unit_price_minor, amount_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

fn snapshot(i: &Invoice) -> serde_json::Value {
    json!({ "number": i.number, "client_id": i.client_id, "status": i.status, "currency": i.currency, "total_minor": i.total_minor })
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &InvoiceInput) -> AppResult<Invoice> {
    require(p, Permission::InvoicesCreate)?;
    let client: ClientId = fields::id("client_id", &input.client_id)?;
    let currency = input.currency.as_deref().map(check_currency).transpose()?;
    let tax = check_tax(input.tax_rate_bp.unwrap_or(0))?;
    let issue = date_field("issue_date", input.issue_date.as_deref())?;
    let due = date_field("due_date", input.due_date.as_deref())?;
    let notes = fields::text("notes", input.notes.as_deref().unwrap_or(""), 5000)?;
    let mut lines = parse_lines(input.lines.as_deref().unwrap_or(&[]))?;
    let (subtotal, tax_minor, total) = compute(&mut lines, tax)?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Without a date, the invoice is issued today where the organization is.
    let issue = match issue {
        Some(d) => d,
        None => super::org_today(&mut tx, ctx.now).await?,
    };
    // Thirty days later, or the last day there is.
    let due = due.unwrap_or_else(|| issue.checked_add(Duration::days(30)).unwrap_or(Date::MAX));
    if due < issue {
        return Err(AppError::field("due_date", "must not be before the issue date"));
    }
    let client_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)")
        .bind(client)
        .fetch_one(&mut *tx)
        .await?;
    if !client_exists {
        return Err(AppError::field("client_id", "no such client"));
    }
    let currency = match currency {
        Some(c) => c,
        None => {
            sqlx::query_scalar("SELECT currency FROM organizations WHERE id = $1")
                .bind(tx.org_id())
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let id = InvoiceId::new();
    let inv: Invoice = sqlx::query_as(&format!(
        "INSERT INTO invoices AS i (organization_id, id, client_id, currency, tax_rate_bp, issue_date, due_date, notes, subtotal_minor, \
         tax_minor, total_minor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(id)
    .bind(client)
    .bind(&currency)
    .bind(tax)
    .bind(issue)
    .bind(due)
    .bind(&notes)
    .bind(subtotal)
    .bind(tax_minor)
    .bind(total)
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    write_lines(&mut tx, id, &lines).await?;
    audit::record(&mut tx, ctx, Entry::new("invoice.created", "invoice", id).after(snapshot(&inv))).await?;
    tx.commit().await?;
    Ok(inv)
}

/// Changes a draft's fields, currency included, and replaces its lines when they are given (sent
/// invoices are immutable; void them instead).
pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    input: &InvoiceUpdate,
) -> AppResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    // Whatever the changes, a sent invoice says so first.
    if before.status != InvoiceStatus::Draft {
        return Err(AppError::Conflict(
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
            return Err(AppError::field("client_id", "no such client"));
        }
    }
    let client = client.unwrap_or(before.client_id);
    let currency = currency.unwrap_or_else(|| before.currency.clone());
    let tax = tax.unwrap_or(before.tax_rate_bp);
    let issue = issue.unwrap_or(before.issue_date);
    let due = due.unwrap_or(before.due_date);
    if due < issue {
        return Err(AppError::field("due_date", "must not be before the issue date"));
    }
    let notes = notes.unwrap_or_else(|| before.notes.clone());
    let mut lines = match new_lines {
        Some(l) => l,
        None => lines(&mut tx, id).await?,
    };
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
    write_lines(&mut tx, id, &lines).await?;
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
) -> AppResult<Invoice> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before: Invoice = sqlx::query_as(&format!("SELECT {COLUMNS} FROM invoices i WHERE i.id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(AppError::NotFound)?;
    use InvoiceAction as A;
    use InvoiceStatus as S;
    let after: Invoice = match (action, before.status) {
        (A::Send, S::Draft) => {
            let has_lines: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM invoice_lines WHERE invoice_id = $1)")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            if !has_lines {
                return Err(AppError::Conflict("An invoice needs at least one line before it is sent.".into()));
            }
            let org = tx.org_id();
            sqlx::query("INSERT INTO invoice_counters (organization_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(org)
                .execute(&mut *tx)
                .await?;
            let number: i64 =
                sqlx::query_scalar("SELECT next_number FROM invoice_counters WHERE organization_id = $1 FOR UPDATE")
                    .bind(org)
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query("UPDATE invoice_counters SET next_number = next_number + 1 WHERE organization_id = $1")
                .bind(org)
                .execute(&mut *tx)
                .await?;
            sqlx::query_as(&format!("UPDATE invoices AS i SET status = 'sent', number = $2, sent_at = $3 WHERE i.id = $1 RETURNING {COLUMNS}"))
                .bind(id)
                .bind(number)
                .bind(ctx.now)
                .fetch_one(&mut *tx)
                .await?
        }
        (A::Pay, S::Sent) => {
            sqlx::query_as(&format!(
                "UPDATE invoices AS i SET status = 'paid', paid_at = $2 WHERE i.id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(ctx.now)
            .fetch_one(&mut *tx)
            .await?
        }
        (A::Void, S::Draft | S::Sent) => {
            sqlx::query_as(&format!(
                "UPDATE invoices AS i SET status = 'void', voided_at = $2 WHERE i.id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(ctx.now)
            .fetch_one(&mut *tx)
            .await?
        }
        (_, current) => {
            return Err(AppError::Conflict(format!("A {current} invoice can't be {}.", action.refused())));
        }
    };
    audit::record(
        &mut tx,
        ctx,
        Entry::new(&format!("invoice.{}", action.past()), "invoice", id)
            .before(snapshot(&before))
            .after(snapshot(&after)),
    )
    .await?;
    if action == A::Pay {
        super::daily::notify_invoice_event(&mut tx, id, super::daily::InvoiceEvent::Paid, p.on_behalf_of(), ctx.now)
            .await?;
    }
    let today = super::org_today(&mut tx, ctx.now).await?;
    tx.commit().await?;
    Ok(shown_status(after, today))
}

pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: InvoiceId) -> AppResult<()> {
    require(p, Permission::InvoicesDelete)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, id).await?;
    if before.status != InvoiceStatus::Draft {
        return Err(AppError::Conflict("Only drafts can be deleted; void a sent invoice instead.".into()));
    }
    sqlx::query("DELETE FROM invoices WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("invoice.deleted", "invoice", id).before(snapshot(&before))).await?;
    tx.commit().await?;
    Ok(())
}

/// "12.5" → 12500 (thousandths); "12,50" is refused (use a dot).
pub fn parse_decimal(field: &str, v: &str, scale: u32) -> AppResult<i64> {
    let v = v.trim();
    let err = || AppError::field(field, format!("must be a number with at most {scale} decimals, like 12.50"));
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > scale as usize
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
    let frac_val: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<width$}", width = scale as usize).parse().map_err(|_| err())?
    };
    int.checked_mul(10i64.pow(scale)).and_then(|x| x.checked_add(frac_val)).ok_or_else(err)
}

/// 123456 minor units → "1234.56".
pub fn format_minor(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("q", "12.5", 3).unwrap(), 12500);
        assert_eq!(parse_decimal("p", "0.07", 2).unwrap(), 7);
        assert_eq!(parse_decimal("p", "3", 2).unwrap(), 300);
        for bad in ["", ".", "1.234", "-1", "1,5", "1e3", "abc"] {
            assert!(parse_decimal("p", bad, 2).is_err(), "{bad}");
        }
        assert_eq!(format_minor(123456), "1234.56");
        assert_eq!(format_minor(-5), "-0.05");
    }
}
