//! Expenses per project: what a project cost beyond time, recorded by a person on a day in the
//! organization's currency, billable to the project's client or not; and billed onto a draft
//! invoice of the client, one line per expense ([`bill`]), after which they are fixed (deleting
//! or voiding the draft releases them), as billed time is.
//!
//! Who may do what follows time entries: those who may see a project see its expenses; those
//! who record time (`time.track`) record expenses, change and delete their own, and anyone's
//! with `projects.update`; billing them takes `invoices.update`.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::money::Currency;
use super::projects::{fetch_visible, require};
use super::{Page, fields, member_filter, project_visible};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ExpenseId, FileId, InvoiceId, ProjectId, UserId};

/// The most one expense may be, in minor units (a billion in the currency).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000_000;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Expense {
    #[schema(value_type = String, format = Uuid)]
    pub id: ExpenseId,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    /// Who recorded it.
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub spent_on: Date,
    /// What it was for ("Travel", "Stock photos").
    pub category: String,
    pub note: String,
    /// In minor units of `currency`.
    pub amount_minor: i64,
    /// The organization's currency when it was recorded; only an invoice in this currency can
    /// bill it.
    #[schema(value_type = Currency)]
    pub currency: String,
    /// Billable to the project's client.
    pub billable: bool,
    /// The invoice that billed it; a billed expense can't be changed or deleted.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub invoice_id: Option<InvoiceId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its receipt: a file of its project (`/api/v1/files/{file}`), or null.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub receipt_file_id: Option<FileId>,
}

const COLUMNS: &str = "x.id, x.project_id, x.user_id, x.spent_on, x.category, x.note, x.amount_minor, x.currency, \
     x.billable, x.invoice_id, x.created_at, x.receipt_file_id";

/// An expense to record, for the person asking (through an API key: the member who created it).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpenseInput {
    #[schema(format = Uuid)]
    pub project_id: String,
    /// What it was for, like `Travel` (1–100 characters).
    #[schema(format = "nonblank-text", min_length = 1, max_length = 100)]
    pub category: String,
    /// In minor units of the organization's currency (1 to 100,000,000,000).
    #[serde(deserialize_with = "fields::int")]
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount_minor: i64,
    /// YYYY-MM-DD (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub spent_on: Option<String>,
    /// Default: the project's setting (billable unless the project says otherwise).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub billable: Option<bool>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 2000, nullable = false)]
    pub note: Option<String>,
    /// Its receipt: a file of the same project (upload it first); empty for none. Needs
    /// `files.read`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "uuid-or-empty", nullable = false)]
    pub receipt_file_id: Option<String>,
}

/// Changes to an expense: fields left out stay as they are. An expense stays in its project,
/// with its person and in its currency.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpenseUpdate {
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "nonblank-text", min_length = 1, max_length = 100, nullable = false)]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, maximum = 100_000_000_000_i64, nullable = false)]
    pub amount_minor: Option<i64>,
    /// YYYY-MM-DD.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub spent_on: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub billable: Option<bool>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 2000, nullable = false)]
    pub note: Option<String>,
    /// A file of the expense's project as its receipt; `null` or empty removes it. Needs
    /// `files.read`.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub receipt_file_id: Option<Option<String>>,
}

fn category(v: &str) -> DomainResult<String> {
    fields::nonblank("category", v, 100)
}

fn amount(field: &str, v: i64) -> DomainResult<i64> {
    if !(1..=MAX_AMOUNT_MINOR).contains(&v) {
        return Err(DomainError::field(field, "must be more than 0 and at most 1000000000.00"));
    }
    Ok(v)
}

/// A receipt as given (an id, or empty for none), checked: a file of `project`, named by someone
/// who may read files.
async fn receipt(tx: &mut OrgTx, p: &OrgPrincipal, project: ProjectId, raw: &str) -> DomainResult<Option<FileId>> {
    let Some(file) = fields::id_or_empty::<FileId>("receipt_file_id", raw)? else { return Ok(None) };
    if !p.can(Permission::FilesRead) {
        return Err(DomainError::Forbidden("A receipt is a file, and your role doesn't show files.".into()));
    }
    // Held until the expense is written: a deletion of the file waits, then empties the receipt.
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM files WHERE id = $1 AND project_id = $2 FOR KEY SHARE")
        .bind(file)
        .bind(project)
        .fetch_optional(&mut **tx)
        .await?;
    if found.is_none() {
        return Err(DomainError::field("receipt_file_id", "is not a file of this expense's project"));
    }
    Ok(Some(file))
}

/// The expenses of the projects the principal may see (of one project when given), most
/// recent first.
pub async fn list(db: &Db, p: &OrgPrincipal, project: Option<&str>, page: Page) -> DomainResult<Vec<Expense>> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    let project: Option<ProjectId> = project.map(|s| fields::id_or_empty("project_id", s)).transpose()?.flatten();
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
         WHERE {} AND ($2::uuid IS NULL OR x.project_id = $2) \
         ORDER BY x.spent_on DESC, x.created_at DESC, x.id DESC LIMIT $3 OFFSET $4",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(project)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// What the form offers: the organization's currency (new expenses are in it), and the
/// categories used so far in the projects the principal may see, most used first (at most 50):
/// a Member learns nothing of the projects they are not on.
pub async fn choices(db: &Db, p: &OrgPrincipal) -> DomainResult<(String, Vec<String>)> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let currency = super::org_currency(&mut tx).await?;
    let categories = sqlx::query_scalar(&format!(
        "SELECT x.category FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
         WHERE {} GROUP BY x.category ORDER BY count(*) DESC, x.category LIMIT 50",
        project_visible("p", 1)
    ))
    .bind(member)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((currency, categories))
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &ExpenseInput) -> DomainResult<Expense> {
    require(p, Permission::TimeTrack)?;
    let user = p.on_behalf_of().ok_or_else(|| {
        DomainError::Forbidden("Expenses are recorded by a person; this key was not created by a member.".into())
    })?;
    let project: ProjectId = fields::id("project_id", &input.project_id)?;
    let category = category(&input.category)?;
    let amount_minor = amount("amount_minor", input.amount_minor)?;
    let spent_on = input.spent_on.as_deref().map(|d| fields::date("spent_on", d)).transpose()?;
    let note = fields::text("note", input.note.as_deref().unwrap_or(""), 2000)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let spent_on = match spent_on {
        Some(d) => d,
        None => super::org_today(&mut tx, ctx.now).await?,
    };
    let project = fetch_visible(&mut tx, p, project).await.map_err(|e| match e {
        DomainError::NotFound => DomainError::field("project_id", "no such project"),
        other => other,
    })?;
    let receipt = receipt(&mut tx, p, project.id, input.receipt_file_id.as_deref().unwrap_or("")).await?;
    let expense: Expense = sqlx::query_as(&format!(
        "INSERT INTO expenses AS x (organization_id, id, project_id, user_id, spent_on, category, note, amount_minor, \
         currency, billable, created_at, receipt_file_id) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, o.currency, coalesce($9, p.billable), $10, $11 \
         FROM organizations o JOIN projects p ON p.organization_id = o.id AND p.id = $3 WHERE o.id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(ExpenseId::new())
    .bind(project.id)
    .bind(user)
    .bind(spent_on)
    .bind(&category)
    .bind(&note)
    .bind(amount_minor)
    .bind(input.billable)
    .bind(ctx.now)
    .bind(receipt)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, ctx, Entry::new("expense.recorded", "expense", expense.id).after(snapshot(&expense)))
        .await?;
    if expense.billable {
        super::projects::check_budget_alert(&mut tx, expense.project_id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(expense)
}

fn snapshot(x: &Expense) -> serde_json::Value {
    json!({ "project_id": x.project_id, "spent_on": x.spent_on.to_string(), "category": x.category, "note": x.note,
            "amount_minor": x.amount_minor, "currency": x.currency, "billable": x.billable,
            "receipt_file_id": x.receipt_file_id })
}

/// An expense of a project the principal may see (404 otherwise).
async fn fetch_visible_expense(tx: &mut OrgTx, p: &OrgPrincipal, id: ExpenseId) -> DomainResult<Expense> {
    let member = member_filter(p)?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
         WHERE x.id = $2 AND {}",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: ExpenseId) -> DomainResult<Expense> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let x = fetch_visible_expense(&mut tx, p, id).await?;
    tx.commit().await?;
    Ok(x)
}

/// One's own expense, or anyone's with `projects.update`; never a billed one.
/// Whether `p` may `doing` ("change" or "delete") `x` now: their own, or anyone's with
/// `projects.update`, and never once billed.
pub fn may_change(p: &OrgPrincipal, x: &Expense, doing: &str) -> DomainResult<()> {
    if Some(x.user_id) != p.on_behalf_of() && !p.can(Permission::ProjectsUpdate) {
        return Err(DomainError::Forbidden(format!("You can {doing} only your own expenses.")));
    }
    if x.invoice_id.is_some() {
        return Err(DomainError::Conflict(format!(
            "This expense is billed on an invoice and can't be {doing}d; delete or void the draft invoice to release it."
        )));
    }
    Ok(())
}

pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: ExpenseId,
    input: &ExpenseUpdate,
) -> DomainResult<Expense> {
    require(p, Permission::TimeTrack)?;
    let category = input.category.as_deref().map(category).transpose()?;
    let amount_minor = input.amount_minor.map(|a| amount("amount_minor", a)).transpose()?;
    let spent_on = input.spent_on.as_deref().map(|d| fields::date("spent_on", d)).transpose()?;
    let note = input.note.as_deref().map(|n| fields::text("note", n, 2000)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible_expense(&mut tx, p, id).await?;
    may_change(p, &before, "change")?;
    let receipt = match &input.receipt_file_id {
        None => before.receipt_file_id,
        Some(raw) => receipt(&mut tx, p, before.project_id, raw.as_deref().unwrap_or("")).await?,
    };
    let after: Expense = sqlx::query_as(&format!(
        "UPDATE expenses AS x SET category = $2, amount_minor = $3, spent_on = $4, note = $5, billable = $6, \
         receipt_file_id = $7 WHERE x.id = $1 AND x.invoice_id IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(category.as_deref().unwrap_or(&before.category))
    .bind(amount_minor.unwrap_or(before.amount_minor))
    .bind(spent_on.unwrap_or(before.spent_on))
    .bind(note.as_deref().unwrap_or(&before.note))
    .bind(input.billable.unwrap_or(before.billable))
    .bind(receipt)
    .fetch_optional(&mut *tx)
    .await?
    // Billed meanwhile (the invoice's lock came first).
    .ok_or_else(|| {
        DomainError::Conflict("This expense was billed on an invoice meanwhile and can't be changed.".into())
    })?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("expense.updated", "expense", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    if before.billable || after.billable {
        super::projects::check_budget_alert(&mut tx, after.project_id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: ExpenseId) -> DomainResult<Expense> {
    require(p, Permission::TimeTrack)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let x = fetch_visible_expense(&mut tx, p, id).await?;
    may_change(p, &x, "delete")?;
    let deleted = sqlx::query("DELETE FROM expenses WHERE id = $1 AND invoice_id IS NULL")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(DomainError::Conflict(
            "This expense was billed on an invoice meanwhile and can't be deleted.".into(),
        ));
    }
    audit::record(&mut tx, ctx, Entry::new("expense.deleted", "expense", id).before(snapshot(&x))).await?;
    if x.billable {
        super::projects::check_budget_alert(&mut tx, x.project_id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(x)
}

// ---- billing ----

/// Which expenses to bill ([`bill`]).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillExpenses {
    /// Exactly these expenses (each must be unbilled, billable, of the invoice's client and in
    /// its currency); or leave out to take every one that matches the filters below.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false, max_items = 200)]
    pub expense_ids: Option<Vec<String>>,
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
}

struct BillFilter {
    expenses: Option<Vec<Uuid>>,
    project: Option<ProjectId>,
    from: Option<Date>,
    to: Option<Date>,
}

fn parse_bill(input: &BillExpenses) -> DomainResult<BillFilter> {
    let expenses = match &input.expense_ids {
        None => None,
        Some(ids) if ids.is_empty() => return Err(DomainError::field("expense_ids", "pick at least one expense")),
        Some(ids) if ids.len() > 200 => return Err(DomainError::field("expense_ids", "at most 200 expenses at once")),
        Some(ids) => Some(
            ids.iter()
                .enumerate()
                .map(|(i, s)| fields::id::<ExpenseId>(&format!("expense_ids[{i}]"), s).map(|e| e.as_uuid()))
                .collect::<DomainResult<Vec<Uuid>>>()?,
        ),
    };
    let (project, from, to) =
        super::bill_filters(input.project_id.as_deref(), input.from.as_deref(), input.to.as_deref())?;
    Ok(BillFilter { expenses, project, from, to })
}

/// A billable expense not yet billed, as the invoice page offers it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unbilled {
    pub id: ExpenseId,
    pub project_id: ProjectId,
    pub project_name: String,
    pub spent_on: Date,
    pub category: String,
    pub note: String,
    pub amount_minor: i64,
    pub person: String,
}

/// The client's (`$1`) billable, unbilled expenses in the invoice's currency (`$6`).
const UNBILLED: &str = "SELECT x.id, x.project_id, p.name AS project_name, x.spent_on, x.category, x.note, x.amount_minor, \
     coalesce(nullif(u.display_name, ''), u.email) AS person \
     FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
     JOIN users u ON u.id = x.user_id \
     WHERE p.client_id = $1 AND x.billable AND x.invoice_id IS NULL AND x.currency = $6 \
       AND ($2::uuid IS NULL OR x.project_id = $2) AND ($3::date IS NULL OR x.spent_on >= $3) \
       AND ($4::date IS NULL OR x.spent_on <= $4) AND ($5::uuid[] IS NULL OR x.id = ANY($5)) \
     ORDER BY x.spent_on, x.created_at, x.id";

/// The draft's client's billable expenses not yet billed, in the invoice's currency (for
/// picking), at most 500; and how many more are waiting in other currencies.
pub async fn unbilled(db: &Db, p: &OrgPrincipal, id: InvoiceId) -> DomainResult<(Vec<Unbilled>, i64)> {
    require(p, Permission::InvoicesUpdate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let inv = super::invoices::fetch(&mut tx, id).await?;
    let rows = sqlx::query_as(&format!("{UNBILLED} LIMIT 500"))
        .bind(inv.client_id)
        .bind(None::<ProjectId>)
        .bind(None::<Date>)
        .bind(None::<Date>)
        .bind(None::<Vec<Uuid>>)
        .bind(&inv.currency)
        .fetch_all(&mut *tx)
        .await?;
    let elsewhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
         WHERE p.client_id = $1 AND x.billable AND x.invoice_id IS NULL AND x.currency <> $2",
    )
    .bind(inv.client_id)
    .bind(&inv.currency)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows, elsewhere))
}

/// The line an expense becomes: "Travel — Website: train to the workshop (2026-03-02)".
fn line_description(x: &Unbilled) -> String {
    let mut d = format!("{} — {}", x.category, x.project_name);
    if !x.note.is_empty() {
        d.push_str(": ");
        d.push_str(&x.note);
    }
    let day = format!(" ({})", x.spent_on);
    // The day stays whole at the end of a line of at most 500 characters.
    let room = 500 - day.chars().count();
    let mut d: String = d.chars().take(room).collect();
    d.push_str(&day);
    d
}

/// Turns billable, unbilled expenses of the draft invoice's client, in its currency, into one
/// line each (quantity 1, the amount as the price), and marks them billed by those lines, in
/// one transaction. The invoice row is locked and the expenses are locked with `FOR UPDATE`
/// and read again after any wait, so of two requests billing one expense one wins; the other
/// gets a 409 and writes nothing.
pub async fn bill(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: InvoiceId,
    input: &BillExpenses,
) -> DomainResult<super::invoices::Invoice> {
    use super::invoices::{self, InvoiceStatus, Line};
    require(p, Permission::InvoicesUpdate)?;
    let f = parse_bill(input)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = invoices::fetch_for_update(&mut tx, id).await?;
    if before.status != InvoiceStatus::Draft {
        return Err(DomainError::Conflict("Expenses can be added only to a draft invoice.".into()));
    }
    let wanted = f.expenses.as_ref().map(Vec::len);
    let rows: Vec<Unbilled> = sqlx::query_as(&format!("{UNBILLED} FOR UPDATE OF x"))
        .bind(before.client_id)
        .bind(f.project)
        .bind(f.from)
        .bind(f.to)
        .bind(f.expenses.as_deref())
        .bind(&before.currency)
        .fetch_all(&mut *tx)
        .await?;
    if let Some(n) = wanted
        && rows.len() != n
    {
        return Err(DomainError::Conflict(format!(
            "Some of these expenses are already billed (or are not billable expenses of this invoice's client in {}); reload and pick again.",
            before.currency
        )));
    }
    if rows.is_empty() {
        return Err(DomainError::Conflict(format!(
            "There are no unbilled billable expenses in {} of this client to add.",
            before.currency
        )));
    }
    let mut all = invoices::lines(&mut tx, id).await?;
    let first = all.len();
    if first + rows.len() > 200 {
        return Err(DomainError::field("expense_ids", "an invoice holds at most 200 lines; bill fewer at once"));
    }
    for x in &rows {
        all.push(Line {
            description: line_description(x),
            quantity_milli: 1000,
            unit_price_minor: x.amount_minor,
            amount_minor: 0,
        });
    }
    let after = invoices::rewrite_lines(&mut tx, &before, &mut all).await?;
    for (i, x) in rows.iter().enumerate() {
        sqlx::query("UPDATE expenses SET invoice_id = $1, invoice_line = $2 WHERE id = $3")
            .bind(id)
            .bind((first + i) as i32)
            .bind(x.id)
            .execute(&mut *tx)
            .await?;
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.expenses_billed", "invoice", id).before(invoices::snapshot(&before)).after(json!({
            "total_minor": after.total_minor,
            "expenses": rows.iter().map(|x| x.id).collect::<Vec<_>>(),
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

// ---- the report ----

/// At most this many expenses in one report or export.
pub const REPORT_CAP: i64 = 20_000;

/// An expense as the report and its export read it: with its person, project and client named.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpenseRow {
    pub id: ExpenseId,
    pub spent_on: Date,
    pub user_id: UserId,
    pub person: String,
    pub project_id: ProjectId,
    pub project_name: String,
    pub client_name: Option<String>,
    pub category: String,
    pub note: String,
    pub amount_minor: i64,
    pub currency: String,
    pub billable: bool,
    pub invoice_id: Option<InvoiceId>,
}

/// The expenses of the projects the principal may see between `from` and `to` (inclusive),
/// oldest first, at most [`REPORT_CAP`].
pub async fn in_range(db: &Db, p: &OrgPrincipal, from: Date, to: Date) -> DomainResult<Vec<ExpenseRow>> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    super::report_range(from, to)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT x.id, x.spent_on, x.user_id, coalesce(nullif(u.display_name, ''), u.email) AS person, x.project_id, \
         p.name AS project_name, c.name AS client_name, x.category, x.note, x.amount_minor, x.currency, x.billable, \
         x.invoice_id \
         FROM expenses x JOIN projects p ON p.organization_id = x.organization_id AND p.id = x.project_id \
         JOIN users u ON u.id = x.user_id \
         LEFT JOIN clients c ON c.organization_id = p.organization_id AND c.id = p.client_id \
         WHERE {} AND x.spent_on BETWEEN $2 AND $3 \
         ORDER BY x.spent_on, x.created_at, x.id LIMIT $4",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(from)
    .bind(to)
    .bind(REPORT_CAP)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The rows as CSV (a header line, then one line per expense), every text cell neutralised as
/// the time export's are.
pub fn to_csv(rows: &[ExpenseRow]) -> Result<Vec<u8>, csv::Error> {
    use super::time_entries::csv_cell;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "date",
        "person",
        "client",
        "project",
        "category",
        "amount_minor",
        "amount",
        "currency",
        "billable",
        "billed",
        "note",
    ])?;
    for r in rows {
        w.write_record([
            r.spent_on.to_string(),
            csv_cell(&r.person),
            csv_cell(r.client_name.as_deref().unwrap_or("")),
            csv_cell(&r.project_name),
            csv_cell(&r.category),
            r.amount_minor.to_string(),
            super::money::format_minor(r.amount_minor),
            r.currency.clone(),
            if r.billable { "yes" } else { "no" }.to_string(),
            if r.invoice_id.is_some() { "yes" } else { "no" }.to_string(),
            csv_cell(&r.note),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbilled(note: &str) -> Unbilled {
        Unbilled {
            id: ExpenseId::new(),
            project_id: ProjectId::new(),
            project_name: "Website".into(),
            spent_on: time::macros::date!(2026 - 03 - 02),
            category: "Travel".into(),
            note: note.into(),
            amount_minor: 4_250,
            person: "Ada".into(),
        }
    }

    #[test]
    fn a_line_names_the_category_the_project_the_note_and_keeps_the_day_whole() {
        assert_eq!(line_description(&unbilled("")), "Travel — Website (2026-03-02)");
        assert_eq!(line_description(&unbilled("train")), "Travel — Website: train (2026-03-02)");
        let long = line_description(&unbilled(&"é".repeat(2000)));
        assert_eq!(long.chars().count(), 500);
        assert!(long.ends_with(" (2026-03-02)"), "{long}");
    }

    #[test]
    fn amounts_are_bounded() {
        assert!(amount("amount_minor", 0).is_err());
        assert!(amount("amount_minor", -5).is_err());
        assert!(amount("amount_minor", MAX_AMOUNT_MINOR + 1).is_err());
        assert_eq!(amount("amount_minor", 1).unwrap(), 1);
        assert_eq!(amount("amount_minor", MAX_AMOUNT_MINOR).unwrap(), MAX_AMOUNT_MINOR);
    }
}
