//! The schedule: what falls due in a month across the projects one may see, day by day — open
//! tasks by their due date (with who is on them), and projects starting or due. The team's
//! view of deadlines, where My work is one person's.

use time::{Date, Month, OffsetDateTime};

use super::{member_filter, project_visible};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::fields;
use crate::platform::ids::{ProjectId, TaskId, UserId};

/// The most entries a month shows.
pub const SCHEDULE_CAP: i64 = 500;

/// One thing on a day: a task due, or a project starting or due.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub day: Date,
    /// `task`, `project_start` or `project_due`.
    pub kind: String,
    pub task_id: Option<TaskId>,
    pub title: String,
    pub priority: String,
    pub project_id: ProjectId,
    pub project: String,
    /// The people on a task (pages name them as they name the organization's people).
    pub people: Vec<UserId>,
}

pub struct Schedule {
    /// The month's first day.
    pub month: Date,
    pub today: Date,
    pub entries: Vec<Entry>,
    /// More than [`SCHEDULE_CAP`] entries fell in the month; the first ones are shown.
    pub capped: bool,
}

/// The month `raw` names (`YYYY-MM`, years 1 to 9999), as its first day.
pub fn parse_month(raw: &str) -> DomainResult<Date> {
    let bad = || DomainError::field("month", "must be a month like 2026-12");
    // `YYYY-MM` is a date without its day; the date's own check does the rest.
    if raw.len() != 7 {
        return Err(bad());
    }
    fields::date("month", &format!("{raw}-01")).ok().filter(|d| d.year() >= 1).ok_or_else(bad)
}

/// The first day of the month after `first` (`None` after December 9999).
pub fn next_month(first: Date) -> Option<Date> {
    let (year, month) = if first.month() == Month::December {
        (first.year() + 1, Month::January)
    } else {
        (first.year(), first.month().next())
    };
    Date::from_calendar_date(year, month, 1).ok().filter(|d| d.year() <= 9999)
}

/// The first day of the month before `first` (`None` before January of the year 1).
pub fn previous_month(first: Date) -> Option<Date> {
    let (year, month) = if first.month() == Month::January {
        (first.year() - 1, Month::December)
    } else {
        (first.year(), first.month().previous())
    };
    Date::from_calendar_date(year, month, 1).ok().filter(|d| d.year() >= 1)
}

/// The month `raw` names, or the organization's current month when it names none; with
/// `mine`, only the tasks assigned to the one asking and the projects they are on.
pub async fn schedule(
    db: &Db,
    p: &OrgPrincipal,
    raw: Option<&str>,
    mine: bool,
    now: OffsetDateTime,
) -> DomainResult<Schedule> {
    if !p.can(Permission::ProjectsRead) {
        return Err(DomainError::Forbidden("Your role doesn't allow this (projects.read).".into()));
    }
    let me = match (mine, p.on_behalf_of()) {
        (false, _) => None,
        (true, Some(me)) => Some(me),
        (true, None) => return Err(DomainError::field("mine", "is a person's own schedule")),
    };
    let asked = raw.filter(|r| !r.is_empty()).map(parse_month).transpose()?;
    let member = member_filter(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let month = match asked {
        Some(m) => m,
        None => today.replace_day(1).map_err(|_| DomainError::Conflict("No such month.".into()))?,
    };
    // The end as a count of days from the start: December 9999 has one too (the date after it
    // is only compared with, in the query, never read back).
    let days = next_month(month).map_or(31, |next| (next - month).whole_days()) as i32;
    let sql = format!(
        "SELECT * FROM ( \
           SELECT t.due_date AS day, 'task' AS kind, t.id AS task_id, t.title, t.priority, p.id AS project_id, \
             p.name AS project, coalesce((SELECT array_agg(a.user_id ORDER BY a.user_id) FROM task_assignees a \
               WHERE a.organization_id = t.organization_id AND a.task_id = t.id), '{{}}') AS people \
           FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
           WHERE $5 AND t.due_date >= $2 AND t.due_date < $2 + $3 AND t.status <> 'done' AND p.status <> 'archived' AND {visible} \
             AND ($6::uuid IS NULL OR EXISTS (SELECT 1 FROM task_assignees m WHERE m.organization_id = t.organization_id \
               AND m.task_id = t.id AND m.user_id = $6)) \
           UNION ALL \
           SELECT p.start_date, 'project_start', NULL, p.name, 'normal', p.id, p.name, '{{}}'::uuid[] FROM projects p \
           WHERE p.start_date >= $2 AND p.start_date < $2 + $3 AND p.status IN ('planned', 'active', 'on_hold') AND {visible} \
             AND {on_it} \
           UNION ALL \
           SELECT p.due_date, 'project_due', NULL, p.name, 'normal', p.id, p.name, '{{}}'::uuid[] FROM projects p \
           WHERE p.due_date >= $2 AND p.due_date < $2 + $3 AND p.status IN ('planned', 'active', 'on_hold') AND {visible} \
             AND {on_it} \
         ) e ORDER BY day, kind <> 'project_due', kind <> 'project_start', project, title, task_id LIMIT $4",
        visible = project_visible("p", 1),
        on_it = project_visible("p", 6)
    );
    let mut entries: Vec<Entry> = sqlx::query_as(&sql)
        .bind(member)
        .bind(month)
        .bind(days)
        .bind(SCHEDULE_CAP + 1)
        .bind(p.can(Permission::TasksRead))
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let capped = entries.len() as i64 > SCHEDULE_CAP;
    entries.truncate(SCHEDULE_CAP as usize);
    Ok(Schedule { month, today, entries, capped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_four_digits_a_dash_and_two() {
        assert_eq!(parse_month("2026-12").unwrap(), Date::from_calendar_date(2026, Month::December, 1).unwrap());
        assert_eq!(parse_month("0001-01").unwrap().year(), 1);
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-12",
            "2026/12",
            "2026-12-01",
            "+2026-12",
            "0000-01",
            "２０２６-12",
            "",
            "-",
            "2026-1-",
            "2026-1x",
            "2026-02-",
        ] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn months_step_over_years_and_stop_at_the_calendars_ends() {
        let d = |y, m| Date::from_calendar_date(y, m, 1).unwrap();
        assert_eq!(next_month(d(2026, Month::December)), Some(d(2027, Month::January)));
        assert_eq!(previous_month(d(2026, Month::January)), Some(d(2025, Month::December)));
        assert_eq!(next_month(d(9999, Month::December)), None);
        assert_eq!(previous_month(d(1, Month::January)), None);
    }
}
