//! Approving time: someone with `projects.update` approves another person's week (Monday to
//! Sunday) as they saw it, and may reopen it. Approved time is fixed until then: nobody changes
//! or deletes it ([`super::time_entries::may_change`], and a trigger below the services,
//! migration 0066). Approval covers the entries the approver may see; time recorded in the week
//! afterwards waits for its own approval.
//!
//! "As they saw it": the week's page carries a digest of the entries it showed awaiting
//! approval, and approving compares it with the entries under their row locks. Time added,
//! changed or deleted between the two is never approved unseen; the approver is told to look
//! again.

use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Date, Duration, OffsetDateTime};

use super::{member_filter, project_visible, require};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ProjectId, TaskId, TimeEntryId, UserId};

/// The Monday of `day`'s week.
pub fn monday_of(day: Date) -> Date {
    day - Duration::days(day.weekday().number_days_from_monday().into())
}

/// The Monday and the Sunday of `day`'s week; the calendar's last days, whose week would end
/// past it, are refused by `field`'s name.
pub fn week_of(field: &str, day: Date) -> DomainResult<(Date, Date)> {
    let monday = day.checked_sub(Duration::days(day.weekday().number_days_from_monday().into()));
    monday
        .and_then(|m| Some((m, m.checked_add(Duration::days(6))?)))
        .ok_or_else(|| DomainError::field(field, "must be in a week that ends by 9999-12-31"))
}

/// One entry of a person's week, as its page shows it and approving weighs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WeekEntry {
    pub id: TimeEntryId,
    pub minutes: i32,
    pub spent_on: Date,
    pub billable: bool,
    pub billed: bool,
    pub project_id: ProjectId,
    pub project_name: String,
    pub task_id: Option<TaskId>,
    pub task_title: Option<String>,
    pub note: String,
    pub approved_at: Option<OffsetDateTime>,
    /// The day it was approved, where the organization is.
    pub approved_on: Option<Date>,
    pub approver: Option<String>,
}

/// Where a person's week stands: what awaits approval and what was approved, of the entries
/// the viewer may see.
#[derive(Debug, Clone, Default)]
pub struct WeekApproval {
    pub pending_entries: usize,
    pub pending_minutes: i64,
    pub approved_entries: usize,
    pub approved_minutes: i64,
    /// The latest approval: who, when, and on which day where the organization is.
    pub last_approval: Option<(String, OffsetDateTime, Date)>,
    /// What approving must be shown to have seen ([`approve_week`]'s `seen`).
    pub digest: String,
    /// The entries, by day, from the same read as the digest: what a page shows is what its
    /// digest stands for.
    pub entries: Vec<WeekEntry>,
}

/// The digest of the entries awaiting approval: each one's id and every fact approving fixes,
/// in id order, so any entry added, removed or changed gives another digest.
fn digest(pending: &[&WeekEntry]) -> String {
    let mut ids: Vec<&&WeekEntry> = pending.iter().collect();
    ids.sort_by_key(|e| e.id.as_uuid());
    let mut h = Sha256::new();
    for e in ids {
        let line = json!([e.id, e.minutes, e.spent_on.to_string(), e.billable, e.project_id, e.task_id, e.note]);
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

impl WeekApproval {
    fn of(entries: Vec<WeekEntry>) -> Self {
        let pending: Vec<&WeekEntry> = entries.iter().filter(|e| e.approved_at.is_none()).collect();
        let approved = entries.iter().filter(|e| e.approved_at.is_some());
        Self {
            pending_entries: pending.len(),
            pending_minutes: pending.iter().map(|e| i64::from(e.minutes)).sum(),
            approved_entries: approved.clone().count(),
            approved_minutes: approved.clone().map(|e| i64::from(e.minutes)).sum(),
            last_approval: approved
                .filter_map(|e| Some((e.approver.clone()?, e.approved_at?, e.approved_on?)))
                .max_by_key(|(_, at, _)| *at),
            digest: digest(&pending),
            entries,
        }
    }
}

/// The person's entries of the week (`monday`, `sunday`) in projects the principal sees, locked
/// for the rest of the transaction when `lock`.
async fn week_entries(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    person: UserId,
    (monday, sunday): (Date, Date),
    lock: bool,
) -> DomainResult<Vec<WeekEntry>> {
    let member = member_filter(p)?;
    Ok(sqlx::query_as(&format!(
        "SELECT e.id, e.minutes, e.spent_on, e.billable, e.invoice_id IS NOT NULL AS billed, e.project_id, \
         p.name AS project_name, e.task_id, k.title AS task_title, e.note, e.approved_at, \
         (e.approved_at AT TIME ZONE o.timezone)::date AS approved_on, \
         coalesce(nullif(a.display_name, ''), a.email) AS approver \
         FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         JOIN organizations o ON o.id = e.organization_id \
         LEFT JOIN tasks k ON k.organization_id = e.organization_id AND k.id = e.task_id \
         LEFT JOIN users a ON a.id = e.approved_by \
         WHERE {} AND e.user_id = $2 AND e.spent_on BETWEEN $3 AND $4 ORDER BY e.spent_on, e.id{}",
        project_visible("p", 1),
        if lock { " FOR UPDATE OF e" } else { "" }
    ))
    .bind(member)
    .bind(person)
    .bind(monday)
    .bind(sunday)
    .fetch_all(&mut **tx)
    .await?)
}

/// Where the person's week that holds `day` stands. Anyone who may read time may look at
/// their own; another's needs `projects.update`, as their week's page does.
pub async fn week(db: &Db, p: &OrgPrincipal, person: UserId, day: Date) -> DomainResult<WeekApproval> {
    require(p, Permission::ProjectsRead)?;
    if Some(person) != p.on_behalf_of() {
        require(p, Permission::ProjectsUpdate)?;
    }
    let week = week_of("week", day)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let entries = week_entries(&mut tx, p, person, week, false).await?;
    tx.commit().await?;
    Ok(WeekApproval::of(entries))
}

/// Whom the principal may approve (or reopen) for: anyone but themselves.
fn approver_of(p: &OrgPrincipal, person: UserId, doing: &str) -> DomainResult<UserId> {
    require(p, Permission::ProjectsUpdate)?;
    let me = p.on_behalf_of().ok_or_else(|| DomainError::Forbidden("Time is approved by a person.".into()))?;
    if me == person {
        return Err(DomainError::Forbidden(format!(
            "You can't {doing} your own time; someone else who approves time must."
        )));
    }
    Ok(me)
}

/// "1 entry", "3 entries".
pub fn entries_of(n: usize) -> String {
    format!("{n} {}", if n == 1 { "entry" } else { "entries" })
}

/// Tells `person` (unless they turned it off) what happened to their week, linking to it.
async fn tell(
    tx: &mut OrgTx,
    ctx: &Context,
    actor: UserId,
    person: UserId,
    monday: Date,
    title: &str,
    body: &str,
) -> DomainResult<()> {
    let link = format!("/o/{}/time/week?week={monday}", super::org_slug(tx).await?);
    let n =
        crate::notify::New { kind: crate::notify::Kind::TimeApproved, actor: Some(actor), title, body, link: &link };
    crate::notify::record(tx, &[person], &n, ctx.now).await?;
    Ok(())
}

/// Approves the entries of `person`'s week holding `day` that await approval, provided they
/// are still exactly those `seen` describes ([`WeekApproval::digest`]). Returns how many it
/// approved.
pub async fn approve_week(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    person: UserId,
    day: Date,
    seen: &str,
) -> DomainResult<usize> {
    let me = approver_of(p, person, "approve")?;
    let (monday, sunday) = week_of("week", day)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let week = WeekApproval::of(week_entries(&mut tx, p, person, (monday, sunday), true).await?);
    if week.pending_entries == 0 {
        return Err(DomainError::Conflict(format!(
            "Nothing in the week of {monday} awaits approval: {}.",
            if week.approved_entries == 0 { "no time is recorded in it" } else { "its time is approved already" }
        )));
    }
    if seen.trim() != week.digest {
        return Err(DomainError::Conflict(
            "This week's time changed since the page was opened, so nothing was approved; look at the week again \
             and approve what it shows now."
                .into(),
        ));
    }
    let ids: Vec<TimeEntryId> = week.entries.iter().filter(|e| e.approved_at.is_none()).map(|e| e.id).collect();
    sqlx::query(
        "UPDATE time_entries SET approved_at = $2, approved_by = $3 WHERE id = ANY($1) AND approved_at IS NULL",
    )
    .bind(&ids)
    .bind(ctx.now)
    .bind(me)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.approved", "user", person).after(json!({
            "week": monday.to_string(),
            "entries": week.pending_entries,
            "minutes": week.pending_minutes,
        })),
    )
    .await?;
    let body = format!(
        "{} {} approved; it can't be changed until the week is reopened.",
        entries_of(week.pending_entries),
        if week.pending_entries == 1 { "is" } else { "are" }
    );
    tell(&mut tx, ctx, me, person, monday, &format!("Your week of {monday} is approved"), &body).await?;
    tx.commit().await?;
    Ok(week.pending_entries)
}

/// Reopens `person`'s week holding `day`: its approved entries (those the principal sees) may
/// be changed again, and wait for approval again. Returns how many were reopened.
pub async fn reopen_week(db: &Db, ctx: &Context, p: &OrgPrincipal, person: UserId, day: Date) -> DomainResult<usize> {
    let me = approver_of(p, person, "reopen")?;
    let (monday, sunday) = week_of("week", day)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let entries = week_entries(&mut tx, p, person, (monday, sunday), true).await?;
    let ids: Vec<TimeEntryId> = entries.iter().filter(|e| e.approved_at.is_some()).map(|e| e.id).collect();
    if ids.is_empty() {
        return Err(DomainError::Conflict(format!(
            "Nothing in the week of {monday} is approved, so there is nothing to reopen."
        )));
    }
    sqlx::query("UPDATE time_entries SET approved_at = NULL, approved_by = NULL WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.reopened", "user", person).after(json!({ "week": monday.to_string(), "entries": ids.len() })),
    )
    .await?;
    let body = format!(
        "{} can be changed again, and {} approval again.",
        entries_of(ids.len()),
        if ids.len() == 1 { "waits for" } else { "wait for" }
    );
    tell(&mut tx, ctx, me, person, monday, &format!("Your week of {monday} is reopened"), &body).await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// What deleting a project or a task would take with it.
pub enum Holding {
    Project(ProjectId),
    /// The task and its subtasks, at every depth.
    Task(TaskId),
}

/// Refuses (409) to delete what holds approved time: deleting a project or a task deletes its
/// time, and approved time stays until its week is reopened. The time is locked for the rest of
/// the transaction, so an approval racing the deletion finds it gone (and approves nothing)
/// rather than approved time disappearing.
pub async fn refuse_to_delete_approved(tx: &mut OrgTx, holding: Holding) -> DomainResult<()> {
    let (what, id, entries) = match holding {
        Holding::Project(project) => ("project", project.as_uuid(), "e.project_id = $1"),
        Holding::Task(task) => (
            "task",
            task.as_uuid(),
            "e.task_id IN (WITH RECURSIVE subtree AS (SELECT id FROM tasks WHERE id = $1 \
             UNION SELECT t.id FROM tasks t JOIN subtree s ON t.parent_id = s.id) SELECT id FROM subtree)",
        ),
    };
    let approved: i64 = sqlx::query_scalar(&format!(
        "SELECT count(approved_at) FROM (SELECT e.approved_at FROM time_entries e WHERE {entries} FOR UPDATE) locked"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    match usize::try_from(approved).unwrap_or(usize::MAX) {
        0 => Ok(()),
        n => Err(DomainError::Conflict(format!(
            "This {what} holds approved time ({}), which deleting it would delete; reopen those weeks first{}.",
            entries_of(n),
            if what == "project" { ", or archive the project" } else { "" }
        ))),
    }
}

/// One person's week on the approvals page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PersonWeek {
    pub user_id: UserId,
    pub person: String,
    pub entries: i64,
    pub minutes: i64,
    pub approved_entries: i64,
    pub approved_minutes: i64,
}

/// Everyone with time in the week holding `day` (of the projects the principal sees), those
/// with time awaiting approval first, then by name.
pub async fn people_of_week(db: &Db, p: &OrgPrincipal, day: Date) -> DomainResult<Vec<PersonWeek>> {
    require(p, Permission::ProjectsUpdate)?;
    let member = member_filter(p)?;
    let (monday, sunday) = week_of("week", day)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let rows: Vec<PersonWeek> = sqlx::query_as(&format!(
        "SELECT e.user_id, coalesce(nullif(u.display_name, ''), u.email) AS person, count(*) AS entries, \
         sum(e.minutes)::bigint AS minutes, count(e.approved_at) AS approved_entries, \
         coalesce(sum(e.minutes) FILTER (WHERE e.approved_at IS NOT NULL), 0)::bigint AS approved_minutes \
         FROM time_entries e JOIN projects p ON p.organization_id = e.organization_id AND p.id = e.project_id \
         JOIN users u ON u.id = e.user_id \
         WHERE {} AND e.spent_on BETWEEN $2 AND $3 \
         GROUP BY e.user_id, u.display_name, u.email \
         ORDER BY count(*) = count(e.approved_at), lower(coalesce(nullif(u.display_name, ''), u.email)), e.user_id",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(monday)
    .bind(sunday)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(minutes: i32, note: &str) -> WeekEntry {
        WeekEntry {
            id: TimeEntryId::from_uuid(uuid::Uuid::from_u128(u128::from(minutes.unsigned_abs()))),
            minutes,
            spent_on: time::macros::date!(2026 - 12 - 07),
            billable: true,
            billed: false,
            project_id: ProjectId::from_uuid(uuid::Uuid::from_u128(1)),
            project_name: "Relaunch".into(),
            task_id: None,
            task_title: None,
            note: note.into(),
            approved_at: None,
            approved_on: None,
            approver: None,
        }
    }

    #[test]
    fn the_digest_changes_with_any_fact_approving_fixes_and_not_with_order() {
        let a = entry(30, "design");
        let b = entry(45, "review");
        let base = digest(&[&a, &b]);
        assert_eq!(base, digest(&[&b, &a]));
        assert_ne!(base, digest(&[&a]));
        let mut changed = b.clone();
        changed.minutes = 46;
        assert_ne!(base, digest(&[&a, &changed]));
        let mut changed = b.clone();
        changed.note = "review!".into();
        assert_ne!(base, digest(&[&a, &changed]));
        let mut changed = b.clone();
        changed.billable = false;
        assert_ne!(base, digest(&[&a, &changed]));
        let mut changed = b.clone();
        changed.spent_on = time::macros::date!(2026 - 12 - 08);
        assert_ne!(base, digest(&[&a, &changed]));
    }

    #[test]
    fn a_week_runs_from_its_monday_to_its_sunday_within_the_calendar() {
        use time::macros::date;
        assert_eq!(monday_of(date!(2026 - 12 - 13)), date!(2026 - 12 - 07));
        assert_eq!(week_of("week", date!(2026 - 12 - 07)).unwrap(), (date!(2026 - 12 - 07), date!(2026 - 12 - 13)));
        assert_eq!(week_of("week", date!(2027 - 01 - 01)).unwrap(), (date!(2026 - 12 - 28), date!(2027 - 01 - 03)));
        // 9999-12-31 is a Friday: its week would end in the year 10000.
        assert!(matches!(week_of("week", date!(9999 - 12 - 31)), Err(DomainError::Invalid(_))));
        assert!(week_of("week", date!(9999 - 12 - 26)).is_ok());
    }
}
