//! Repeating invoices: an invoice copied on a schedule, every 1–12 months or 1–52 weeks from a
//! first day, until a last day or until stopped. On each of its days the worker ([`run_due`])
//! copies the invoice as it is then (client, currency, tax rate, notes and lines, as
//! "Duplicate" does) into a new invoice issued on that day, and, when the repeat says so, sends
//! the copy and mails it to the client's billing contact, in one transaction per copy.
//!
//! - The days are counted from the first one ([`day`]), never from the last copy: a repeat
//!   that starts on 31 January is issued on 28 (or 29) February and on 31 March.
//! - A copy that can't be made or sent (the repeated draft lost its lines, say) pauses the
//!   repeat and says why on the invoice's page, rather than failing again every minute.
//! - A day the worker missed (the server was down) is still made, issued on its own day.
//!   Resuming a paused repeat does not make the days that passed while it was paused: it goes
//!   on from the next day still to come.
//! - Two workers never make the same copy: each copy is made under the repeat's row lock,
//!   taken with `SKIP LOCKED`, and moves the repeat on in the same transaction.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, Duration, Month, OffsetDateTime};
use utoipa::ToSchema;

use super::invoices::{self, InvoiceStatus};
use super::projects::require;
use super::{Page, fields};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, InvoiceId, OrgId, RepeatId};

/// How the interval between copies is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Unit {
    Week,
    Month,
}

impl Unit {
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        match s {
            "week" => Ok(Unit::Week),
            "month" => Ok(Unit::Month),
            _ => Err(DomainError::field(field, "must be week or month")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Week => "week",
            Unit::Month => "month",
        }
    }

    /// The most units between two copies: a year.
    pub fn most(self) -> i16 {
        match self {
            Unit::Week => 52,
            Unit::Month => 12,
        }
    }
}

/// The `n`-th day of a schedule (the first is `n = 0`), counted from the first day so that
/// month ends don't drift; `None` past the calendar's end.
pub fn day(starts: Date, every: i16, unit: Unit, n: i32) -> Option<Date> {
    let steps = i64::from(every) * i64::from(n);
    match unit {
        Unit::Week => starts.checked_add(Duration::weeks(steps)),
        Unit::Month => {
            let months = i64::from(starts.year()) * 12 + i64::from(starts.month() as u8 - 1) + steps;
            let year = i32::try_from(months.div_euclid(12)).ok()?;
            let month = Month::try_from(u8::try_from(months.rem_euclid(12) + 1).ok()?).ok()?;
            let last = time::util::days_in_month(month, year);
            Date::from_calendar_date(year, month, starts.day().min(last)).ok()
        }
    }
}

/// A repeat, with what pages and the API show of the invoice it copies.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Repeat {
    #[schema(value_type = String, format = Uuid)]
    pub id: RepeatId,
    /// The invoice copied.
    #[schema(value_type = String, format = Uuid)]
    pub invoice_id: InvoiceId,
    /// Units between copies.
    pub every: i16,
    pub unit: Unit,
    /// The day the schedule counts from: the first copy's day when one was given, else the
    /// repeated invoice's issue date (whose copy is the invoice itself).
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub starts_on: Date,
    /// The last day a copy may be issued on (`null`: until stopped).
    #[schema(value_type = Option<String>, format = Date)]
    #[serde(with = "super::iso_date::option")]
    pub ends_on: Option<Date>,
    /// Each copy is sent and mailed to the client's billing contact; otherwise it is left a
    /// draft.
    pub send: bool,
    pub paused: bool,
    /// Past its last day: no copy is made any more.
    pub ended: bool,
    /// How many copies were made.
    pub made: i32,
    /// The next copy's day (while neither paused nor ended).
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub next_on: Date,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub last_invoice_id: Option<InvoiceId>,
    /// Why the repeat paused itself, or what the last copy could not do.
    pub problem: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The copied invoice's client, currency and total.
    #[schema(value_type = String, format = Uuid)]
    pub client_id: ClientId,
    pub client: String,
    pub currency: String,
    pub total_minor: i64,
    /// The copied invoice's reference (`INV-2026-0007`), when it was sent.
    pub reference: Option<String>,
    #[serde(skip)]
    pub number: Option<i64>,
}

impl Repeat {
    /// "every month", "every 2 weeks".
    pub fn interval(&self) -> String {
        match self.every {
            1 => format!("every {}", self.unit.as_str()),
            n => format!("every {n} {}s", self.unit.as_str()),
        }
    }

    /// The repeated invoice's name on pages.
    pub fn invoice_name(&self) -> String {
        invoices::name(self.reference.as_deref(), self.number, "Draft invoice")
    }
}

const COLUMNS: &str = "r.id, r.invoice_id, r.every, r.unit, r.starts_on, r.ends_on, r.send, r.paused, \
    (r.ends_on IS NOT NULL AND r.next_on > r.ends_on) AS ended, r.made, r.next_on, r.last_invoice_id, r.problem, \
    r.created_at, i.client_id, c.name AS client, i.currency, i.total_minor, i.reference, i.number";
const FROM: &str = "invoice_repeats r \
    JOIN invoices i ON i.organization_id = r.organization_id AND i.id = r.invoice_id \
    JOIN clients c ON c.organization_id = i.organization_id AND c.id = i.client_id";

/// A new repeat of an invoice.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatInput {
    /// Units between copies: 1 to 12 months or 1 to 52 weeks (default 1).
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, maximum = 52, nullable = false)]
    pub every: Option<i16>,
    /// Default: `month`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Unit>, nullable = false)]
    pub unit: Option<String>,
    /// The first copy's day, YYYY-MM-DD, not before today in the organization's time zone
    /// (default: the schedule counts from the invoice's issue date, and the first copy is on
    /// the first of its days after the issue date that is today or later).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub starts_on: Option<String>,
    /// The last day a copy may be issued on, YYYY-MM-DD, not before the first copy's (default:
    /// none, until stopped).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub ends_on: Option<String>,
    /// Send each copy and mail it to the client (needs `invoices.update`); default: leave
    /// each copy a draft.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub send: Option<bool>,
}

/// Changes to a repeat: fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatUpdate {
    /// Pause, or resume: a resumed repeat goes on from the next of its days that is today or
    /// later (the days that passed while it was paused are not made).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub paused: Option<bool>,
    /// Turning sending on needs `invoices.update`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub send: Option<bool>,
    /// YYYY-MM-DD, not before the first day (the next copy's, when the schedule changes);
    /// `null`: until stopped.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(format = Date, nullable = true)]
    pub ends_on: Option<Option<String>>,
    /// A new interval (with `unit`, or the repeat's own): 1 to 12 months or 1 to 52 weeks. Any of
    /// `every`, `unit` and `next_on` changes the schedule: it counts from the next copy's day on.
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, maximum = 52, nullable = false)]
    pub every: Option<i16>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Unit>, nullable = false)]
    pub unit: Option<String>,
    /// The next copy's day, YYYY-MM-DD: today or later, and after the last copy's day (default,
    /// when the interval changes: the next copy's day as it was, or today if that has passed).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub next_on: Option<String>,
}

async fn fetch(tx: &mut OrgTx, invoice: InvoiceId) -> DomainResult<Option<Repeat>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM {FROM} WHERE r.invoice_id = $1"))
        .bind(invoice)
        .fetch_optional(&mut **tx)
        .await?)
}

fn snapshot(r: &Repeat) -> serde_json::Value {
    json!({ "invoice_id": r.invoice_id, "every": r.every, "unit": r.unit, "starts_on": r.starts_on.to_string(),
            "ends_on": r.ends_on.map(|d| d.to_string()), "send": r.send, "paused": r.paused,
            "next_on": r.next_on.to_string(), "made": r.made })
}

/// The invoice's repeat, if it has one.
pub async fn of_invoice(db: &Db, p: &OrgPrincipal, invoice: InvoiceId) -> DomainResult<Option<Repeat>> {
    require(p, Permission::InvoicesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let r = fetch(&mut tx, invoice).await?;
    tx.commit().await?;
    Ok(r)
}

/// The invoice's repeat, or 404 (for the invoice or for its repeat).
pub async fn get(db: &Db, p: &OrgPrincipal, invoice: InvoiceId) -> DomainResult<Repeat> {
    of_invoice(db, p, invoice).await?.ok_or(DomainError::NotFound)
}

/// Every repeat of the organization, the next due first (paused and ended ones last).
pub async fn list(db: &Db, p: &OrgPrincipal, page: Page) -> DomainResult<(Vec<Repeat>, i64)> {
    require(p, Permission::InvoicesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_repeats").fetch_one(&mut *tx).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {FROM} \
         ORDER BY (r.paused OR (r.ends_on IS NOT NULL AND r.next_on > r.ends_on)), r.next_on, r.created_at, r.id \
         LIMIT $1 OFFSET $2"
    ))
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows, total))
}

/// The first of a schedule's days that is today or later: (its index, the day). A repeat whose
/// days all passed gets the day after its last, where it counts as ended.
fn first_from(starts: Date, every: i16, unit: Unit, today: Date) -> (i32, Date) {
    // A first guess from the average interval, then step: a few steps at most.
    let unit_days = match unit {
        Unit::Week => 7.0,
        Unit::Month => 30.436_875,
    };
    let guess = ((today - starts).whole_days() as f64 / (unit_days * f64::from(every))).floor();
    let mut n = (guess as i32).max(0).saturating_sub(1);
    loop {
        match day(starts, every, unit, n) {
            Some(d) if d >= today => return (n, d),
            Some(_) => n += 1,
            None => return (n, Date::MAX),
        }
    }
}

/// The first copy's day a repeat of an invoice issued on `issued` gets by default, every month:
/// a month after the issue date, or the next such day still to come.
pub fn suggested_start(issued: Date, today: Date) -> Date {
    let after = today.max(issued.next_day().unwrap_or(Date::MAX));
    first_from(issued, 1, Unit::Month, after).1
}

/// Repeats an invoice. Refused when it already repeats (409), when it is void (409), and when
/// the first day is before today, the last before the first, or the interval out of bounds
/// (422 naming the field). Sending each copy needs `invoices.update` as well.
pub async fn create(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    invoice: InvoiceId,
    input: &RepeatInput,
) -> DomainResult<Repeat> {
    require(p, Permission::InvoicesCreate)?;
    let unit = input.unit.as_deref().map(|u| Unit::parse("unit", u)).transpose()?.unwrap_or(Unit::Month);
    let every = fields::within("every", input.every.unwrap_or(1), 1, unit.most())?;
    let starts = input.starts_on.as_deref().map(|d| fields::date("starts_on", d)).transpose()?;
    let ends = input.ends_on.as_deref().map(|d| fields::date("ends_on", d)).transpose()?;
    let send = input.send.unwrap_or(false);
    if send {
        require(p, Permission::InvoicesUpdate)?;
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let source = invoices::lock(&mut tx, invoice).await?;
    if source.status == InvoiceStatus::Void {
        return Err(DomainError::Conflict("A void invoice isn't repeated: duplicate it, then repeat the copy.".into()));
    }
    if fetch(&mut tx, invoice).await?.is_some() {
        return Err(DomainError::Conflict("This invoice repeats already: change or stop its repeat.".into()));
    }
    let today = super::org_today(&mut tx, ctx.now).await?;
    // The day the schedule counts from, and its first copy: the day given, or the invoice's
    // issue date (its copy is the invoice itself) and the first day after it still to come, so
    // that an invoice of the 31st is repeated on the last day of shorter months and on the 31st
    // after them.
    let (starts, nth, first) = match starts {
        Some(d) if d < today => return Err(DomainError::field("starts_on", "must not be before today")),
        Some(d) => (d, 0, d),
        None => {
            let after = today.max(source.issue_date.next_day().unwrap_or(Date::MAX));
            let (nth, first) = first_from(source.issue_date, every, unit, after);
            (source.issue_date, nth, first)
        }
    };
    if ends.is_some_and(|e| e < first) {
        return Err(DomainError::field("ends_on", "must not be before the first copy's day"));
    }
    let id = RepeatId::new();
    sqlx::query(
        "INSERT INTO invoice_repeats (organization_id, id, invoice_id, every, unit, starts_on, ends_on, send, nth, next_on, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(invoice)
    .bind(every)
    .bind(unit)
    .bind(starts)
    .bind(ends)
    .bind(send)
    .bind(nth)
    .bind(first)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    let r = fetch(&mut tx, invoice).await?.ok_or(DomainError::NotFound)?;
    audit::record(&mut tx, ctx, Entry::new("invoice.repeat_created", "invoice", invoice).after(snapshot(&r))).await?;
    tx.commit().await?;
    Ok(r)
}

/// Pauses, resumes, turns sending on or off, moves the last day, or changes the schedule (its
/// interval, and the next copy's day, which it counts from then on: a copy is never made twice
/// on one day). Resuming (and turning sending on) needs what creating with sending needs.
pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    invoice: InvoiceId,
    input: &RepeatUpdate,
) -> DomainResult<Repeat> {
    require(p, Permission::InvoicesCreate)?;
    let ends = match &input.ends_on {
        Some(Some(d)) => Some(Some(fields::date("ends_on", d)?)),
        Some(None) => Some(None),
        None => None,
    };
    let unit = input.unit.as_deref().map(|u| Unit::parse("unit", u)).transpose()?;
    let next_on = input.next_on.as_deref().map(|d| fields::date("next_on", d)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    // The repeat's row, held: the worker making a copy of it waits, or is waited for.
    sqlx::query("SELECT 1 FROM invoice_repeats WHERE invoice_id = $1 FOR UPDATE")
        .bind(invoice)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::NotFound)?;
    let before = fetch(&mut tx, invoice).await?.ok_or(DomainError::NotFound)?;
    let send = input.send.unwrap_or(before.send);
    let paused = input.paused.unwrap_or(before.paused);
    let resuming = before.paused && !paused;
    if send && (resuming || !before.send) {
        require(p, Permission::InvoicesUpdate)?;
    }
    let today = super::org_today(&mut tx, ctx.now).await?;
    // Only a change counts: a form that sends the schedule as it is leaves it be (a schedule
    // counted from the 31st keeps the 31st after shorter months).
    let rescheduling = input.every.is_some_and(|e| e != before.every)
        || unit.is_some_and(|u| u != before.unit)
        || next_on.is_some_and(|d| d != before.next_on);
    let unit = unit.unwrap_or(before.unit);
    let every = fields::within("every", input.every.unwrap_or(before.every), 1, unit.most())?;
    // A new schedule counts from the next copy's day: today or later, and never the day of a
    // copy already made (the last copy's issue date).
    let starts_on = if rescheduling {
        let next = next_on.unwrap_or(before.next_on.max(today));
        if next < today {
            return Err(DomainError::field("next_on", "must not be before today"));
        }
        let last: Option<Date> = sqlx::query_scalar("SELECT issue_date FROM invoices WHERE id = $1")
            .bind(before.last_invoice_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(last) = last.filter(|l| next <= *l) {
            return Err(DomainError::field(
                "next_on",
                format!("must be after the day of the last copy ({last}): a copy is made once a day at most"),
            ));
        }
        next
    } else {
        before.starts_on
    };
    let ends_on = ends.unwrap_or(before.ends_on);
    if ends_on.is_some_and(|e| e < starts_on) {
        let message = if rescheduling {
            "must not be before the next copy's day"
        } else {
            "must not be before the day the schedule counts from"
        };
        return Err(DomainError::field("ends_on", message));
    }
    // Resuming goes on from the next of its days still to come, and forgets why it paused; a new
    // schedule starts at its first day.
    let next = if rescheduling {
        Some((0, starts_on))
    } else if resuming {
        Some(first_from(before.starts_on, before.every, before.unit, today.max(before.next_on)))
    } else {
        None
    };
    sqlx::query(
        "UPDATE invoice_repeats SET send = $2, paused = $3, ends_on = $4, \
           nth = coalesce($5, nth), next_on = coalesce($6, next_on), problem = CASE WHEN $7 THEN NULL ELSE problem END, \
           every = $8, unit = $9, starts_on = $10 \
         WHERE invoice_id = $1",
    )
    .bind(invoice)
    .bind(send)
    .bind(paused)
    .bind(ends_on)
    .bind(next.map(|(n, _)| n))
    .bind(next.map(|(_, d)| d))
    .bind(resuming)
    .bind(every)
    .bind(unit)
    .bind(starts_on)
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, invoice).await?.ok_or(DomainError::NotFound)?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("invoice.repeat_updated", "invoice", invoice).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Stops repeating the invoice. The copies made stay.
pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, invoice: InvoiceId) -> DomainResult<()> {
    require(p, Permission::InvoicesCreate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch(&mut tx, invoice).await?.ok_or(DomainError::NotFound)?;
    sqlx::query("DELETE FROM invoice_repeats WHERE invoice_id = $1").bind(invoice).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("invoice.repeat_deleted", "invoice", invoice).before(snapshot(&before)))
        .await?;
    tx.commit().await?;
    Ok(())
}

// ---- The worker ----

/// At most this many copies per organization in one round; the next round goes on.
pub const COPIES_PER_ROUND: usize = 50;

#[derive(sqlx::FromRow)]
struct DueOrg {
    id: OrgId,
    timezone: String,
    next_on: Date,
}

/// One round: every organization with a repeat whose day has come (in its time zone) gets its
/// copies made. Returns how many were made.
pub async fn run_due(
    db: &Db,
    public_url: &str,
    signer: Option<std::sync::Arc<crate::audit::chain::Signer>>,
    now: OffsetDateTime,
) -> DomainResult<usize> {
    let mut made = 0;
    for db in db.every_region() {
        let mut g = db.global().await?;
        let orgs: Vec<DueOrg> = sqlx::query_as("SELECT id, timezone, next_on FROM invoice_repeat_organizations()")
            .fetch_all(&mut *g)
            .await?;
        g.commit().await?;
        for org in orgs {
            let today = crate::platform::tz::today(now, &org.timezone);
            if org.next_on > today {
                continue;
            }
            let ctx = Context::system(now, signer.clone());
            match copies_of(&db, &ctx, org.id, today, public_url).await {
                Ok(n) => made += n,
                // An outage stops the round (and is logged once, where it was noticed).
                Err(DomainError::DatabaseUnavailable) => return Err(DomainError::DatabaseUnavailable),
                // Anything else stays with its organization: the others' copies are made.
                Err(e) => tracing::warn!(org = %org.id, error = %e, "repeating invoices: copies not made"),
            }
        }
    }
    Ok(made)
}

/// The organization's due copies, at most [`COPIES_PER_ROUND`]; how many were made.
async fn copies_of(db: &Db, ctx: &Context, org: OrgId, today: Date, public_url: &str) -> DomainResult<usize> {
    let Some(principal) = crate::access::scheduled_invoicing(db, org).await? else { return Ok(0) };
    let mut made = 0;
    for _ in 0..COPIES_PER_ROUND {
        match make_next(db, ctx, &principal, today, public_url).await? {
            Some(true) => made += 1,
            Some(false) => {}
            None => break,
        }
    }
    Ok(made)
}

/// Makes the organization's next due copy, in a transaction of its own: `Some(true)` made,
/// `Some(false)` refused (its repeat paused, saying why), `None` when none is due (or every
/// due one is being made by another worker).
async fn make_next(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    today: Date,
    public_url: &str,
) -> DomainResult<Option<bool>> {
    #[derive(sqlx::FromRow)]
    struct Due {
        id: RepeatId,
        invoice_id: InvoiceId,
        every: i16,
        unit: Unit,
        starts_on: Date,
        nth: i32,
        next_on: Date,
        send: bool,
    }
    let mut tx = OrgTx::begin(db, p).await?;
    // Not the copy a region move makes or leaves behind, and not while it moves.
    if !crate::access::directory::hold_for_writing(db, &mut tx, db.region(), p.org_id()).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let due: Option<Due> = sqlx::query_as(
        "SELECT id, invoice_id, every, unit, starts_on, nth, next_on, send FROM invoice_repeats \
         WHERE NOT paused AND next_on <= $1 AND (ends_on IS NULL OR next_on <= ends_on) \
         ORDER BY next_on, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(today)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(due) = due else {
        tx.rollback().await?;
        return Ok(None);
    };
    let copied = async {
        // Voided since the repeat was set up: whatever was wrong with it would be copied too.
        let status: InvoiceStatus = sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1")
            .bind(due.invoice_id)
            .fetch_one(&mut *tx)
            .await?;
        if status == InvoiceStatus::Void {
            return Err(DomainError::Conflict("The repeated invoice was voided; repeat a new one instead.".into()));
        }
        let copy = invoices::copy_in(&mut tx, ctx, due.invoice_id, due.next_on, Some(due.id)).await?;
        let note = if due.send {
            let to = super::invoice_mail::send_and_mail_in(&mut tx, ctx, p, copy.id, public_url).await?;
            to.is_none().then(|| "The last copy was sent but not mailed: the client has no billing email.".to_string())
        } else {
            // A draft nobody knows of would never go out: the Owners and Admins are told.
            let made = super::daily::InvoiceEvent::RepeatMade;
            super::daily::notify_invoice_event(&mut tx, copy.id, made, None, ctx.now).await?;
            None
        };
        DomainResult::Ok((copy.id, note))
    }
    .await;
    match copied {
        Ok((copy, note)) => {
            let nth = due.nth.saturating_add(1);
            let next = day(due.starts_on, due.every, due.unit, nth).unwrap_or(Date::MAX);
            sqlx::query(
                "UPDATE invoice_repeats SET made = made + 1, nth = $2, next_on = $3, last_invoice_id = $4, problem = $5 \
                 WHERE id = $1",
            )
            .bind(due.id)
            .bind(nth)
            .bind(next)
            .bind(copy)
            .bind(note)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(true))
        }
        Err(e) => {
            // A failure of the server's (the database, a bug) is tried again next round.
            let Some(reason) = refusal(&e) else { return Err(e) };
            // Nothing of the copy is kept; the repeat pauses, saying why.
            tx.rollback().await?;
            let why = format!("Paused on {}: the copy could not be made. {reason}", due.next_on);
            let mut tx = OrgTx::begin(db, p).await?;
            let paused = sqlx::query(
                "UPDATE invoice_repeats SET paused = true, problem = left($2, 500) \
                 WHERE id = $1 AND NOT paused AND nth = $3",
            )
            .bind(due.id)
            .bind(&why)
            .bind(due.nth)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if paused > 0 {
                audit::record(
                    &mut tx,
                    ctx,
                    Entry::new("invoice.repeat_paused", "invoice", due.invoice_id).after(json!({ "problem": why })),
                )
                .await?;
                // Nobody may be looking at the invoice: its Owners and Admins are told.
                super::daily::notify_invoice_event(
                    &mut tx,
                    due.invoice_id,
                    super::daily::InvoiceEvent::RepeatPaused,
                    None,
                    ctx.now,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(false))
        }
    }
}

/// What a person can act on in a refused copy, in words; `None` for the server's own failures.
fn refusal(e: &DomainError) -> Option<String> {
    match e {
        DomainError::Conflict(m) | DomainError::Forbidden(m) | DomainError::Malformed(m) => Some(m.clone()),
        DomainError::PlanLimit { message, .. } => Some(message.clone()),
        DomainError::Invalid(fields) => {
            Some(fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))
        }
        DomainError::NotFound => Some("The invoice or its client is gone.".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn months_count_from_the_first_day_and_keep_to_the_month_end() {
        let s = date!(2027 - 01 - 31);
        let days: Vec<Date> = (0..5).map(|n| day(s, 1, Unit::Month, n).unwrap()).collect();
        assert_eq!(
            days,
            [
                date!(2027 - 01 - 31),
                date!(2027 - 02 - 28),
                date!(2027 - 03 - 31),
                date!(2027 - 04 - 30),
                date!(2027 - 05 - 31)
            ]
        );
        assert_eq!(day(date!(2027 - 11 - 30), 3, Unit::Month, 1), Some(date!(2028 - 02 - 29)));
        assert_eq!(day(date!(2027 - 12 - 05), 12, Unit::Month, 2), Some(date!(2029 - 12 - 05)));
        assert_eq!(day(date!(2027 - 12 - 05), 2, Unit::Week, 3), Some(date!(2028 - 01 - 16)));
        assert_eq!(day(date!(9999 - 12 - 01), 1, Unit::Month, 1), None);
        assert_eq!(day(date!(9999 - 12 - 01), 52, Unit::Week, i32::MAX), None);
    }

    #[test]
    fn the_first_day_from_today_is_the_next_of_the_schedule() {
        let s = date!(2027 - 01 - 31);
        assert_eq!(first_from(s, 1, Unit::Month, date!(2027 - 01 - 01)), (0, s));
        assert_eq!(first_from(s, 1, Unit::Month, date!(2027 - 03 - 01)), (2, date!(2027 - 03 - 31)));
        assert_eq!(first_from(s, 1, Unit::Month, date!(2027 - 03 - 31)), (2, date!(2027 - 03 - 31)));
        assert_eq!(first_from(s, 2, Unit::Week, date!(2027 - 02 - 15)), (2, date!(2027 - 02 - 28)));
        assert_eq!(first_from(s, 1, Unit::Month, date!(2100 - 06 - 15)).1, date!(2100 - 06 - 30));
        assert_eq!(first_from(date!(9999 - 11 - 01), 1, Unit::Month, date!(9999 - 12 - 31)).1, Date::MAX);
    }
}
