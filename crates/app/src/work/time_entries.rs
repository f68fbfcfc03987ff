//! Time entries per project (and optionally per task), billable or not, with the hourly rate
//! they were worth when recorded; and the invoice line that billed them, after which they are
//! fixed (un-bill them by deleting or voiding the draft invoice).

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::{fetch_visible, require};
use super::{Page, fields, member_filter, project_visible};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{InvoiceId, ProjectId, TaskId, TimeEntryId, UserId};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct TimeEntry {
    #[schema(value_type = String, format = Uuid)]
    pub id: TimeEntryId,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub task_id: Option<TaskId>,
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    pub minutes: i32,
    #[schema(value_type = String, format = Date)]
    #[serde(with = "super::iso_date")]
    pub spent_on: Date,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Billable to the project's client.
    pub billable: bool,
    /// The hourly rate in minor units when the time was recorded (person on the project,
    /// project, client, organization: the first one set); null when none was.
    pub rate_minor: Option<i64>,
    /// The invoice that billed this time; billed time can't be changed or deleted.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub invoice_id: Option<InvoiceId>,
    /// When the week holding this time was approved; approved time can't be changed or
    /// deleted until someone who approves time reopens the week.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub approved_at: Option<OffsetDateTime>,
}

pub const COLUMNS: &str = "e.id, e.project_id, e.task_id, e.user_id, e.minutes, e.spent_on, e.note, e.created_at, \
     e.billable, e.rate_minor, e.invoice_id, e.approved_at";

/// Time spent, recorded for a person.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeInput {
    #[schema(format = Uuid)]
    pub project_id: String,
    /// A task of the project; empty or null for none.
    #[schema(format = "uuid-or-empty")]
    pub task_id: Option<String>,
    /// Whole minutes; or give `duration` instead.
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, maximum = 1440, nullable = false)]
    pub minutes: Option<i32>,
    /// The time as typed: `1:30`, `1h30m`, `1h`, `90m`, `1.5h` or `1,5h` (instead of `minutes`).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 32, nullable = false)]
    pub duration: Option<String>,
    /// Default: the project's setting (billable unless the project says otherwise).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub billable: Option<bool>,
    /// YYYY-MM-DD (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub spent_on: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 2000, nullable = false)]
    pub note: Option<String>,
}

/// Changes to a time entry: fields left out stay as they are; `null` (or an empty string)
/// detaches it from its task; other fields refuse `null`. An entry stays in its project and with
/// its person.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeUpdate {
    /// The entry's own project (an entry can't move to another one).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Uuid, nullable = false)]
    pub project_id: Option<String>,
    /// A task of the entry's project; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub task_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::int_non_null")]
    #[schema(minimum = 1, maximum = 1440, nullable = false)]
    pub minutes: Option<i32>,
    /// The time as typed: `1:30`, `1h30m`, `1.5h`… (instead of `minutes`).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 32, nullable = false)]
    pub duration: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub billable: Option<bool>,
    /// YYYY-MM-DD.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub spent_on: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 2000, nullable = false)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct TimeFilter {
    pub project_id: Option<String>,
    pub task_id: Option<String>,
}

pub async fn list(db: &Db, p: &OrgPrincipal, f: &TimeFilter, page: Page) -> DomainResult<Vec<TimeEntry>> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    let project: Option<Uuid> =
        f.project_id.as_deref().map(|s| fields::id_or_empty("project_id", s)).transpose()?.flatten();
    let task: Option<TaskId> = f.task_id.as_deref().map(|s| fields::id_or_empty("task_id", s)).transpose()?.flatten();
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         WHERE {} AND ($2::uuid IS NULL OR e.project_id = $2) AND ($3::uuid IS NULL OR e.task_id = $3) \
         ORDER BY e.spent_on DESC, e.created_at DESC, e.id DESC LIMIT $4 OFFSET $5",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(project)
    .bind(task)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &TimeInput) -> DomainResult<TimeEntry> {
    require(p, Permission::TimeTrack)?;
    // Time belongs to a person: through an API key, to the member who created the key.
    let user = p.on_behalf_of().ok_or_else(|| {
        DomainError::Forbidden("Time is recorded for a person; this key was not created by a member.".into())
    })?;
    let project: ProjectId = fields::id("project_id", &input.project_id)?;
    let task: Option<TaskId> =
        input.task_id.as_deref().map(|s| fields::id_or_empty("task_id", s)).transpose()?.flatten();
    let minutes = minutes_of(input.minutes, input.duration.as_deref())?
        .ok_or_else(|| DomainError::field("minutes", "is required (or give duration, like 1:30)"))?;
    let spent_on = input.spent_on.as_deref().map(|d| fields::date("spent_on", d)).transpose()?;
    let note = fields::text("note", input.note.as_deref().unwrap_or(""), 2000)?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Without a date, the time is booked on the organization's today.
    let spent_on = match spent_on {
        Some(d) => d,
        None => super::org_today(&mut tx, ctx.now).await?,
    };
    fetch_visible(&mut tx, p, project).await.map_err(|e| match e {
        DomainError::NotFound => DomainError::field("project_id", "no such project"),
        other => other,
    })?;
    if let Some(t) = task {
        super::require_task_in_project(&mut tx, t, project, "task_id", "is not a task of this project").await?;
    }
    let entry = insert(
        &mut tx,
        ctx,
        NewEntry { project, task, user, minutes, spent_on, note: &note, billable: input.billable },
    )
    .await?;
    tx.commit().await?;
    Ok(entry)
}

/// Minutes from either `minutes` or `duration` (not both); `None` when neither was given.
pub fn minutes_of(minutes: Option<i32>, duration: Option<&str>) -> DomainResult<Option<i32>> {
    match (minutes, duration) {
        (Some(_), Some(_)) => Err(DomainError::field("duration", "give either minutes or duration, not both")),
        (Some(m), None) => Ok(Some(fields::within("minutes", m, 1, super::duration::MAX_MINUTES)?)),
        (None, Some(d)) => Ok(Some(super::duration::parse("duration", d)?)),
        (None, None) => Ok(None),
    }
}

/// A checked entry to write ([`insert`]).
pub struct NewEntry<'a> {
    pub project: ProjectId,
    pub task: Option<TaskId>,
    pub user: UserId,
    pub minutes: i32,
    pub spent_on: Date,
    pub note: &'a str,
    /// `None`: the project's default.
    pub billable: Option<bool>,
}

/// The hourly rate that applies to `user`'s time on `project` now: the person's rate on the
/// project, else the project's, else its client's, else the organization's; `None` when none is
/// set.
pub async fn resolve_rate(tx: &mut OrgTx, project: ProjectId, user: UserId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(pm.hourly_rate_minor, p.hourly_rate_minor, c.hourly_rate_minor, o.hourly_rate_minor) \
         FROM projects p JOIN organizations o ON o.id = p.organization_id \
         LEFT JOIN clients c ON c.organization_id = p.organization_id AND c.id = p.client_id \
         LEFT JOIN project_members pm ON pm.organization_id = p.organization_id AND pm.project_id = p.id AND pm.user_id = $2 \
         WHERE p.id = $1",
    )
    .bind(project)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await
    .map(Option::flatten)
}

/// For a query over `time_entries e JOIN projects p`: the joins [`BILLED_RATE`] reads.
pub(crate) const RATE_JOINS: &str = "JOIN organizations o ON o.id = e.organization_id \
     LEFT JOIN clients c ON c.organization_id = p.organization_id AND c.id = p.client_id \
     LEFT JOIN project_members pm ON pm.organization_id = e.organization_id AND pm.project_id = e.project_id \
       AND pm.user_id = e.user_id";

/// The hourly rate entry `e` is billed at: the one recorded on it, else the one that applies now
/// (as [`resolve_rate`]: the person's on the project, the project's, the client's, the
/// organization's); NULL when none does. The To invoice page, a client's balance and a draft's
/// time picker all value time by it, so they can't disagree.
pub(crate) const BILLED_RATE: &str =
    "coalesce(e.rate_minor, pm.hourly_rate_minor, p.hourly_rate_minor, c.hourly_rate_minor, o.hourly_rate_minor)";

/// Writes an entry whose project (visible to the caller) and task were checked, with its
/// billable flag (the project's default unless given) and the rate that applies now, and audits
/// it, in `tx`.
pub async fn insert(tx: &mut OrgTx, ctx: &Context, e: NewEntry<'_>) -> DomainResult<TimeEntry> {
    let billable = match e.billable {
        Some(b) => b,
        None => {
            sqlx::query_scalar("SELECT billable FROM projects WHERE id = $1")
                .bind(e.project)
                .fetch_one(&mut **tx)
                .await?
        }
    };
    let rate = resolve_rate(tx, e.project, e.user).await?;
    let entry: TimeEntry = sqlx::query_as(&format!(
        "INSERT INTO time_entries AS e (organization_id, id, project_id, task_id, user_id, minutes, spent_on, note, created_at, \
         billable, rate_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(TimeEntryId::new())
    .bind(e.project)
    .bind(e.task)
    .bind(e.user)
    .bind(e.minutes)
    .bind(e.spent_on)
    .bind(e.note)
    .bind(ctx.now)
    .bind(billable)
    .bind(rate)
    .fetch_one(&mut **tx)
    .await?;
    audit::record(
        tx,
        ctx,
        Entry::new("time.recorded", "time_entry", entry.id).after(json!({
            "project_id": e.project, "task_id": e.task, "minutes": e.minutes, "spent_on": e.spent_on.to_string(),
            "billable": billable, "rate_minor": rate,
        })),
    )
    .await?;
    if billable {
        super::projects::check_budget_alert(tx, e.project, Some(e.user), ctx.now).await?;
    }
    Ok(entry)
}

/// Billed time is fixed: it says what the client was charged.
/// Whether `p` may change or delete `e` now (`doing`: "changed" or "deleted"): their own, or
/// anyone's with `projects.update`, and never once billed.
pub fn may_change(p: &OrgPrincipal, e: &TimeEntry, doing: &str) -> DomainResult<()> {
    if Some(e.user_id) != p.on_behalf_of() && !p.can(Permission::ProjectsUpdate) {
        let verb = doing.strip_suffix('d').unwrap_or(doing);
        return Err(DomainError::Forbidden(format!("You can {verb} only your own time entries.")));
    }
    if e.invoice_id.is_some() {
        return Err(DomainError::Conflict(format!(
            "This time is billed on an invoice and can't be {doing}; delete or void the draft invoice to release it."
        )));
    }
    if e.approved_at.is_some() {
        return Err(DomainError::Conflict(format!(
            "This time is approved and can't be {doing}; someone who approves time must reopen its week first."
        )));
    }
    Ok(())
}

/// Time in a date range as the reports and the export read it: with its person,
/// project, client and task named.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub id: TimeEntryId,
    pub spent_on: Date,
    pub minutes: i32,
    pub note: String,
    pub billable: bool,
    pub rate_minor: Option<i64>,
    pub invoice_id: Option<InvoiceId>,
    pub approved: bool,
    pub user_id: UserId,
    pub person: String,
    pub project_id: ProjectId,
    pub project_name: String,
    pub client_id: Option<crate::platform::ids::ClientId>,
    pub client_name: Option<String>,
    pub task_title: Option<String>,
}

impl ReportRow {
    /// Hours × rate in minor units, rounded half up (0 without a rate or when not billable).
    pub fn amount_minor(&self) -> i64 {
        match (self.billable, self.rate_minor) {
            (true, Some(rate)) => (i64::from(self.minutes) * rate + 30) / 60,
            _ => 0,
        }
    }
}

/// At most this many entries in one report or export.
pub const REPORT_CAP: i64 = 20_000;

/// The time the principal may see between `from` and `to` (inclusive), of one person when
/// `user` is given, oldest first. Members see the time of their projects.
pub async fn in_range(
    db: &Db,
    p: &OrgPrincipal,
    from: Date,
    to: Date,
    user: Option<UserId>,
) -> DomainResult<Vec<ReportRow>> {
    require(p, Permission::ProjectsRead)?;
    let member = member_filter(p)?;
    super::report_range(from, to)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT e.id, e.spent_on, e.minutes, e.note, e.billable, e.rate_minor, e.invoice_id, \
         e.approved_at IS NOT NULL AS approved, e.user_id, coalesce(nullif(u.display_name, ''), u.email) AS person, e.project_id, p.name AS project_name, p.client_id, \
         c.name AS client_name, k.title AS task_title \
         FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         JOIN users u ON u.id = e.user_id \
         LEFT JOIN clients c ON c.organization_id = p.organization_id AND c.id = p.client_id \
         LEFT JOIN tasks k ON k.organization_id = e.organization_id AND k.id = e.task_id \
         WHERE {} AND e.spent_on BETWEEN $2 AND $3 AND ($4::uuid IS NULL OR e.user_id = $4) \
         ORDER BY e.spent_on, e.created_at, e.id LIMIT $5",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(from)
    .bind(to)
    .bind(user)
    .bind(REPORT_CAP)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// A CSV cell that a spreadsheet won't run: text starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (what spreadsheets take for a formula) gets a leading apostrophe.
pub fn csv_cell(v: &str) -> String {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{v}") } else { v.to_string() }
}

/// The rows as CSV (a header line, then one line per entry), every text cell neutralised.
pub fn to_csv(rows: &[ReportRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "date",
        "person",
        "client",
        "project",
        "task",
        "minutes",
        "hours",
        "billable",
        "rate_minor",
        "amount_minor",
        "billed",
        "note",
        "approved",
    ])?;
    for r in rows {
        w.write_record([
            r.spent_on.to_string(),
            csv_cell(&r.person),
            csv_cell(r.client_name.as_deref().unwrap_or("")),
            csv_cell(&r.project_name),
            csv_cell(r.task_title.as_deref().unwrap_or("")),
            r.minutes.to_string(),
            format!("{}.{:02}", r.minutes / 60, (r.minutes % 60) * 100 / 60),
            if r.billable { "yes" } else { "no" }.to_string(),
            r.rate_minor.map(|v| v.to_string()).unwrap_or_default(),
            r.amount_minor().to_string(),
            if r.invoice_id.is_some() { "yes" } else { "no" }.to_string(),
            csv_cell(&r.note),
            if r.approved { "yes" } else { "no" }.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// An entry in a project the principal may see (404 otherwise).
async fn fetch_visible_entry(tx: &mut OrgTx, p: &OrgPrincipal, id: TimeEntryId) -> DomainResult<TimeEntry> {
    let member = member_filter(p)?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         WHERE e.id = $2 AND {}",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: TimeEntryId) -> DomainResult<TimeEntry> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let entry = fetch_visible_entry(&mut tx, p, id).await?;
    tx.commit().await?;
    Ok(entry)
}

/// Changes an entry: one's own, or anyone's with `projects.update` (as for deleting). Absent
/// fields are unchanged; an empty `task_id` detaches it from its task. An entry stays in its
/// project and with its person.
pub async fn update(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    id: TimeEntryId,
    input: &TimeUpdate,
) -> DomainResult<TimeEntry> {
    require(p, Permission::TimeTrack)?;
    let minutes = minutes_of(input.minutes, input.duration.as_deref())?;
    let spent_on = input.spent_on.as_deref().map(|d| fields::date("spent_on", d)).transpose()?;
    let note = input.note.as_deref().map(|n| fields::text("note", n, 2000)).transpose()?;
    let task: Option<Option<TaskId>> = input
        .task_id
        .as_ref()
        .map(|t| t.as_deref().map(|v| fields::id_or_empty("task_id", v)).transpose().map(Option::flatten))
        .transpose()?;
    let project: Option<ProjectId> = input.project_id.as_deref().map(|v| fields::id("project_id", v)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible_entry(&mut tx, p, id).await?;
    may_change(p, &before, "changed")?;
    if project.is_some_and(|project| project != before.project_id) {
        return Err(DomainError::field("project_id", "a time entry can't move to another project"));
    }
    if let Some(Some(t)) = task {
        super::require_task_in_project(
            &mut tx,
            t,
            before.project_id,
            "task_id",
            "is not a task of this entry's project",
        )
        .await?;
    }
    let after: TimeEntry = sqlx::query_as(&format!(
        "UPDATE time_entries AS e SET task_id = $2, minutes = $3, spent_on = $4, note = $5, billable = $6 \
         WHERE e.id = $1 AND e.invoice_id IS NULL AND e.approved_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(task.unwrap_or(before.task_id))
    .bind(minutes.unwrap_or(before.minutes))
    .bind(spent_on.unwrap_or(before.spent_on))
    .bind(note.as_deref().unwrap_or(&before.note))
    .bind(input.billable.unwrap_or(before.billable))
    .fetch_optional(&mut *tx)
    .await?
    // Billed or approved meanwhile (the invoice's or the approval's lock came first).
    .ok_or_else(|| {
        DomainError::Conflict("This time was billed on an invoice or approved meanwhile and can't be changed.".into())
    })?;
    let snapshot = |e: &TimeEntry| {
        let mut v =
            json!({ "task_id": e.task_id, "minutes": e.minutes, "spent_on": e.spent_on.to_string(), "note": e.note });
        if input.billable.is_some() {
            v["billable"] = json!(e.billable);
        }
        v
    };
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.updated", "time_entry", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    if before.billable || after.billable {
        super::projects::check_budget_alert(&mut tx, after.project_id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Deletes an entry: one's own, or anyone's with `projects.update`.
pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: TimeEntryId) -> DomainResult<()> {
    require(p, Permission::TimeTrack)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let entry = fetch_visible_entry(&mut tx, p, id).await?;
    may_change(p, &entry, "deleted")?;
    let deleted = sqlx::query("DELETE FROM time_entries WHERE id = $1 AND invoice_id IS NULL AND approved_at IS NULL")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(DomainError::Conflict(
            "This time was billed on an invoice or approved meanwhile and can't be deleted.".into(),
        ));
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.deleted", "time_entry", id).before(json!({ "minutes": entry.minutes })),
    )
    .await?;
    if entry.billable {
        super::projects::check_budget_alert(&mut tx, entry.project_id, p.on_behalf_of(), ctx.now).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for (v, shown) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("Design", "Design"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(v), shown);
        }
    }
}
