//! Workload: what each person's open tasks still need, week by week, against the hours a week
//! they have for planned work (their capacity). A manager sees who is over and who has room
//! before promising a date.
//!
//! What a task still needs is its estimate less the time logged on it (by anyone, never below
//! zero), shared equally among its assignees, and it falls in the week of its due date. Open
//! tasks due before the first week shown are counted as earlier (overdue, for this week), those
//! without a due date on their own; tasks without an estimate are counted, as they need time no
//! figure shows. Done tasks and archived projects are left out, and so are the projects the
//! viewer doesn't see.

use std::collections::HashMap;

use serde_json::json;
use time::{Date, Duration, OffsetDateTime};

use super::{member_filter, project_visible, require};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{TaskId, UserId};

/// A person's capacity until someone sets it: a 40-hour week.
pub const DEFAULT_WEEKLY_MINUTES: i32 = 40 * 60;
/// The most a week holds.
pub const MAX_WEEKLY_MINUTES: i32 = 7 * 24 * 60;
/// Why hours a week given in minutes (the API's) are refused.
pub const MINUTES_BOUNDS: &str = "must be between 0 and 10080 minutes (168 hours)";
/// How many weeks the workload shows, from the first one asked for.
pub const WEEKS: usize = 4;

/// What falls in one span (a week, earlier, no due date) for one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Minutes the estimated tasks still need (the sum of the person's shares below).
    pub planned_minutes: i64,
    /// The open tasks counted, estimated or not.
    pub tasks: i64,
    /// Of those, the tasks without an estimate.
    pub unestimated_tasks: i64,
    /// The tasks themselves, by due date and title.
    pub items: Vec<LoadTask>,
}

/// One task in a person's load.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoadTask {
    pub id: TaskId,
    pub title: String,
    pub project: String,
    pub due_date: Option<Date>,
    /// The person's share of what it still needs, in minutes; `None` without an estimate.
    pub share_minutes: Option<i64>,
}

/// One person's workload.
#[derive(Debug, Clone)]
pub struct PersonLoad {
    pub user_id: UserId,
    pub person: String,
    /// Minutes a week for planned work.
    pub capacity_minutes: i32,
    /// Open tasks due before the first week.
    pub earlier: Load,
    /// One per week, from the first.
    pub weeks: Vec<Load>,
    /// Open tasks without a due date.
    pub undated: Load,
}

impl PersonLoad {
    /// By how many minutes `load` exceeds a week's capacity (0 when it fits).
    pub fn over_by(&self, load: &Load) -> i64 {
        (load.planned_minutes - i64::from(self.capacity_minutes)).max(0)
    }
}

/// The workload of everyone inside the organization (every role but Client), by name.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The organization's today, as the workload was read.
    pub today: Date,
    /// The Monday of each week shown.
    pub weeks: Vec<Date>,
    pub people: Vec<PersonLoad>,
}

/// The Mondays of the [`WEEKS`] weeks from the week holding `day`; refused by `field`'s name
/// when the last would end past the calendar.
pub fn weeks_from(field: &str, day: Date) -> DomainResult<Vec<Date>> {
    let (monday, _) = super::approvals::week_of(field, day)?;
    let last_day = monday.checked_add(Duration::days(WEEKS as i64 * 7 - 1));
    if last_day.is_none() {
        return Err(DomainError::field(field, "must be at least four weeks before 9999-12-31"));
    }
    Ok((0..WEEKS as i64).map(|w| monday + Duration::days(w * 7)).collect())
}

#[derive(sqlx::FromRow)]
struct PersonRow {
    user_id: UserId,
    person: String,
    capacity: i32,
}

#[derive(sqlx::FromRow)]
struct ShareRow {
    user_id: UserId,
    /// -2: no due date; -1: earlier; 0..: the week's index.
    bucket: i32,
    #[sqlx(flatten)]
    task: LoadTask,
}

/// The workload of the [`WEEKS`] weeks from the week holding `day` (by default the
/// organization's today at `now`), read in one transaction.
pub async fn workload(db: &Db, p: &OrgPrincipal, day: Option<Date>, now: OffsetDateTime) -> DomainResult<Workload> {
    require(p, Permission::ProjectsUpdate)?;
    let member = member_filter(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let weeks = weeks_from("week", day.unwrap_or(today))?;
    let (first, last) = (weeks[0], weeks[WEEKS - 1] + Duration::days(6));
    let people: Vec<PersonRow> = sqlx::query_as(
        "SELECT m.user_id, coalesce(nullif(u.display_name, ''), u.email) AS person, \
         coalesce(c.weekly_minutes, $1) AS capacity \
         FROM memberships m JOIN users u ON u.id = m.user_id \
         LEFT JOIN member_capacities c ON c.organization_id = m.organization_id AND c.user_id = m.user_id \
         WHERE m.role <> 'client' AND m.status = 'active' AND u.status = 'active' \
         ORDER BY lower(coalesce(nullif(u.display_name, ''), u.email)), m.user_id",
    )
    .bind(DEFAULT_WEEKLY_MINUTES)
    .fetch_all(&mut *tx)
    .await?;
    let shares = shares(&mut tx, member, (first, last), None).await?;
    tx.commit().await?;
    let mut loads: HashMap<(UserId, i32), Load> = HashMap::new();
    for share in shares {
        let load = loads.entry((share.user_id, share.bucket)).or_default();
        load.tasks += 1;
        match share.task.share_minutes {
            Some(m) => load.planned_minutes += m,
            None => load.unestimated_tasks += 1,
        }
        load.items.push(share.task);
    }
    let people = people
        .into_iter()
        .map(|r| {
            let mut at = |bucket: i32| loads.remove(&(r.user_id, bucket)).unwrap_or_default();
            PersonLoad {
                user_id: r.user_id,
                person: r.person,
                capacity_minutes: r.capacity,
                earlier: at(-1),
                weeks: (0..WEEKS as i32).map(&mut at).collect(),
                undated: at(-2),
            }
        })
        .collect();
    Ok(Workload { today, weeks, people })
}

/// Each open, assigned task visible to `member` (the member filter), once per assignee: the
/// assignee's share of what it still needs and where it falls (before `span`, its week, or
/// undated). For everyone (`only` is `None`), the tasks due by the end of `span` or undated;
/// for one person, only theirs due within `span`.
async fn shares(
    tx: &mut OrgTx,
    member: Option<uuid::Uuid>,
    (first, last): (Date, Date),
    only: Option<UserId>,
) -> Result<Vec<ShareRow>, sqlx::Error> {
    // Each open assigned task once (what it still needs, how many share it), then each
    // assignee's share of it and the span it falls in. One person's is a statement of its own
    // (not `$4 IS NULL OR …`), so that its plan starts from that person's assignments.
    let (whose, due) = match only {
        Some(_) => ("AND x.user_id = $4", "t.due_date BETWEEN $2 AND $3"),
        None => ("", "(t.due_date IS NULL OR t.due_date <= $3)"),
    };
    let sql = format!(
        "WITH open_tasks AS ( \
           SELECT t.organization_id, t.id, t.title, p.name AS project, t.due_date, \
             CASE WHEN t.estimate_minutes IS NOT NULL THEN \
               greatest(t.estimate_minutes - coalesce((SELECT sum(e.minutes) FROM time_entries e \
                 WHERE e.organization_id = t.organization_id AND e.task_id = t.id), 0), 0) END AS remaining, \
             (SELECT count(*) FROM task_assignees x WHERE x.organization_id = t.organization_id AND x.task_id = t.id) AS sharing \
           FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
           WHERE t.status <> 'done' AND p.status <> 'archived' AND {visible} \
             AND {due} \
             AND EXISTS (SELECT 1 FROM task_assignees x WHERE x.organization_id = t.organization_id AND x.task_id = t.id {whose})) \
         SELECT a.user_id, \
           (CASE WHEN o.due_date IS NULL THEN -2 WHEN o.due_date < $2 THEN -1 ELSE (o.due_date - $2) / 7 END)::int AS bucket, \
           o.id, o.title, o.project, o.due_date, round(o.remaining::numeric / o.sharing)::bigint AS share_minutes \
         FROM open_tasks o JOIN task_assignees a ON a.organization_id = o.organization_id AND a.task_id = o.id \
         WHERE true {whose_a} \
         ORDER BY o.due_date NULLS LAST, lower(o.title), o.id",
        visible = project_visible("p", 1),
        whose_a = whose.replace("x.", "a."),
    );
    let query = sqlx::query_as(&sql).bind(member).bind(first).bind(last);
    match only {
        Some(person) => query.bind(person),
        None => query,
    }
    .fetch_all(&mut **tx)
    .await
}

/// A person's own week, for their overview: what their open tasks due this week still need
/// (their share), how many there are, and their hours a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MyWeek {
    pub planned_minutes: i64,
    pub tasks: i64,
    pub capacity_minutes: i32,
}

/// [`MyWeek`] of `me` for the week holding `today`, of the projects `member` (the member filter)
/// sees, in the caller's transaction.
pub async fn my_week(tx: &mut OrgTx, member: Option<uuid::Uuid>, me: UserId, today: Date) -> DomainResult<MyWeek> {
    let (monday, sunday) = super::approvals::week_of("week", today)?;
    let this_week = shares(tx, member, (monday, sunday), Some(me)).await?;
    let capacity: Option<i32> = sqlx::query_scalar("SELECT weekly_minutes FROM member_capacities WHERE user_id = $1")
        .bind(me)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(MyWeek {
        planned_minutes: this_week.iter().filter_map(|s| s.task.share_minutes).sum(),
        tasks: this_week.len() as i64,
        capacity_minutes: capacity.unwrap_or(DEFAULT_WEEKLY_MINUTES),
    })
}

/// Sets `person`'s hours a week for planned work (0 to a whole week), recorded in the audit log
/// with what it was. Returns the capacity before. Refused for someone who is not inside the
/// organization (404) or a Client user (409).
pub async fn set_capacity(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    person: UserId,
    weekly_minutes: i32,
) -> DomainResult<i32> {
    require(p, Permission::ProjectsUpdate)?;
    if !(0..=MAX_WEEKLY_MINUTES).contains(&weekly_minutes) {
        return Err(DomainError::field("weekly_capacity_minutes", MINUTES_BOUNDS));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let standing: Option<(String, Option<i32>)> = sqlx::query_as(
        "SELECT m.role, c.weekly_minutes FROM memberships m \
         LEFT JOIN member_capacities c ON c.organization_id = m.organization_id AND c.user_id = m.user_id \
         WHERE m.user_id = $1 FOR UPDATE OF m",
    )
    .bind(person)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((role, before)) = standing else {
        return Err(DomainError::NotFound);
    };
    if role == "client" {
        return Err(DomainError::Conflict("Client users have no workload: they are not assigned work.".into()));
    }
    let before = before.unwrap_or(DEFAULT_WEEKLY_MINUTES);
    if before != weekly_minutes {
        sqlx::query(
            "INSERT INTO member_capacities (organization_id, user_id, weekly_minutes, updated_at) \
             VALUES (current_setting('app.org_id')::uuid, $1, $2, $3) \
             ON CONFLICT (organization_id, user_id) DO UPDATE SET weekly_minutes = $2, updated_at = $3",
        )
        .bind(person)
        .bind(weekly_minutes)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            ctx,
            Entry::new("member.capacity_changed", "user", person)
                .before(json!({ "weekly_minutes": before }))
                .after(json!({ "weekly_minutes": weekly_minutes })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_weeks_start_on_the_monday_and_stop_before_the_calendar_ends() {
        let weeks = weeks_from("week", date!(2026 - 12 - 10)).unwrap();
        assert_eq!(
            weeks,
            vec![date!(2026 - 12 - 07), date!(2026 - 12 - 14), date!(2026 - 12 - 21), date!(2026 - 12 - 28)]
        );
        // 9999-12-31 is a Friday: the four weeks from 9999-11-29 end on 9999-12-26.
        assert!(weeks_from("week", date!(9999 - 12 - 05)).is_ok());
        let refused = weeks_from("week", date!(9999 - 12 - 06)).unwrap_err();
        assert!(format!("{refused:?}").contains("9999-12-31"), "{refused:?}");
    }

    #[test]
    fn over_by_is_what_exceeds_the_capacity() {
        let p = PersonLoad {
            user_id: UserId::from_uuid(uuid::Uuid::nil()),
            person: "Ann".into(),
            capacity_minutes: 600,
            earlier: Load::default(),
            weeks: vec![],
            undated: Load::default(),
        };
        let load = |planned_minutes| Load { planned_minutes, tasks: 2, unestimated_tasks: 0, items: vec![] };
        assert_eq!(p.over_by(&load(600)), 0);
        assert_eq!(p.over_by(&load(690)), 90);
    }
}
