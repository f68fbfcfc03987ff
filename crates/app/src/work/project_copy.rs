//! A project copied as the start of the next one: an agency runs the same kind of engagement
//! for client after client, so a finished (or template) project is copied with its board and
//! its task tree, and its dates moved to the new start.
//!
//! What is copied: the description, budget, rate and billable default; the board's columns;
//! every task and subtask with its description, priority, estimate, place and whether the
//! client sees it; and, when asked, the people on the project with their rates on it. Every
//! task starts in the board's first "to do" column (a copy is work not yet done). Not copied:
//! time, comments, files, invoices, assignees, followers and activity (they are the original's
//! history). The copy is hidden from the client's portal until someone chooses to show it, since
//! it may be made for another client.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::Date;
use utoipa::ToSchema;
use uuid::Uuid;

use super::fields;
use super::projects::{self, COLUMNS, Project, require};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, ProjectId, TaskId};

/// The most tasks a copy takes: a board larger than this is not a template.
pub const MAX_COPIED_TASKS: i64 = 5_000;

/// What the copy is to be.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCopy {
    #[schema(format = "nonblank-text", max_length = 200)]
    pub name: String,
    /// A client of the organization; empty or null for none. Absent: the original's client.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub client_id: Option<Option<String>>,
    /// YYYY-MM-DD; empty or null for none. When both the original and the copy have a start
    /// date, every due date (the project's and its tasks') keeps its distance from the start
    /// (one that would leave the years 1 to 9999 is left empty); otherwise the copy's due dates
    /// are empty.
    #[schema(format = "date-or-empty")]
    pub start_date: Option<String>,
    /// Put the original's people (active members) on the copy, with their rates on it. Needs
    /// `projects.update`. Default `false`: only the one copying is on it.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub with_people: Option<bool>,
}

/// The copy and what it took.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    pub project: Project,
    pub tasks: u64,
    pub columns: u64,
    pub people: u64,
}

/// A due date moved by `days`, or none where it would leave the calendar the application reads
/// (years 1 to 9999): a start date far in the past or future empties the dates it can't move.
fn shifted(d: Option<Date>, days: i64) -> Option<Date> {
    d?.checked_add(time::Duration::days(days)).filter(|d| (1..=9999).contains(&d.year()))
}

/// The project a copy would be made of, and what the copy would take (the form says so).
pub struct Original {
    pub project: Project,
    /// Its tasks, subtasks included.
    pub tasks: i64,
    /// The people "with people" would put on the copy: its active members other than Clients.
    pub people: i64,
}

pub async fn original(db: &Db, p: &OrgPrincipal, id: ProjectId) -> DomainResult<Original> {
    require(p, Permission::ProjectsRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let project = projects::fetch_visible(&mut tx, p, id).await?;
    let (tasks, people): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE project_id = $1), \
           (SELECT count(*) FROM project_members pm JOIN memberships m \
              ON m.organization_id = pm.organization_id AND m.user_id = pm.user_id \
            WHERE pm.project_id = $1 AND m.status = 'active' AND m.role <> 'client')",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Original { project, tasks, people })
}

pub async fn copy(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    source: ProjectId,
    input: &ProjectCopy,
) -> DomainResult<Copied> {
    require(p, Permission::ProjectsCreate)?;
    require(p, Permission::TasksCreate)?;
    let with_people = input.with_people.unwrap_or(false);
    if with_people {
        require(p, Permission::ProjectsUpdate)?;
    }
    let name = fields::nonblank("name", &input.name, 200)?;
    let client = input
        .client_id
        .as_ref()
        .map(|c| c.as_deref().map(|c| fields::id_or_empty::<ClientId>("client_id", c)).transpose().map(Option::flatten))
        .transpose()?;
    let start = input.start_date.as_deref().map(|d| fields::date_or_empty("start_date", d)).transpose()?.flatten();

    let mut tx = OrgTx::begin(db, p).await?;
    let original = projects::fetch_visible(&mut tx, p, source).await?;
    crate::billing::limits::check(&mut tx, ctx, crate::billing::limits::Resource::Projects, 1).await?;
    let client = client.unwrap_or(original.client_id);
    projects::check_client(&mut tx, client).await?;

    let tasks: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tasks WHERE project_id = $1 ORDER BY id LIMIT $2")
        .bind(source)
        .bind(MAX_COPIED_TASKS + 1)
        .fetch_all(&mut *tx)
        .await?;
    if tasks.len() as i64 > MAX_COPIED_TASKS {
        return Err(DomainError::Conflict(format!(
            "This project has more than {MAX_COPIED_TASKS} tasks, too many to copy. Copy a smaller project as the template."
        )));
    }

    // Dates: moved with the start when both projects have one; otherwise left empty.
    let shift = match (original.start_date, start) {
        (Some(from), Some(to)) => Some((to - from).whole_days()),
        _ => None,
    };
    let due = shift.and_then(|days| shifted(original.due_date, days));

    let id = ProjectId::new();
    let project: Project = sqlx::query_as(&format!(
        "INSERT INTO projects AS p (organization_id, id, client_id, name, description, status, budget_minor, start_date, \
         due_date, visible_to_client, created_at, updated_at, hourly_rate_minor, billable, budget_counts_expenses) \
         SELECT o.organization_id, $2, $3, $4, o.description, 'active', o.budget_minor, $5, $6, false, $7, $7, \
         o.hourly_rate_minor, o.billable, o.budget_counts_expenses FROM projects o WHERE o.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(source)
    .bind(id)
    .bind(client)
    .bind(&name)
    .bind(start)
    .bind(due)
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;

    let columns = sqlx::query(
        "INSERT INTO board_columns (organization_id, id, project_id, name, position, status) \
         SELECT organization_id, gen_random_uuid(), $2, name, position, status FROM board_columns WHERE project_id = $1",
    )
    .bind(source)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Where every task starts: the first column standing for "to do", else the first column.
    let first: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM board_columns WHERE project_id = $1 ORDER BY status <> 'todo', position, name LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;

    // New ids in the order of the old ones, so tasks that share a place keep their order.
    let news: Vec<Uuid> = tasks.iter().map(|_| TaskId::new().as_uuid()).collect();
    let activity: Vec<Uuid> = tasks.iter().map(|_| Uuid::now_v7()).collect();
    let actor = super::tasks::changed_by(&mut tx, p).await?;
    let copied = match &first {
        None => 0,
        // One statement, so the tree is read from one snapshot: each task's parent is the copy
        // of its parent as it stands, and parents are inserted before their subtasks (the
        // hierarchy trigger checks each one against the rows already inserted). A task made
        // since the ids were read is left out, and a subtask whose parent was left out is put
        // at the top. A due date is moved only within the calendar the application reads (compared as a
        // count of days, so that no date outside PostgreSQL's range is ever formed).
        Some((column, status)) => sqlx::query(
            "WITH RECURSIVE m AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS m (old, new, activity)), \
             tree (id, level) AS (SELECT s.id, 0 FROM tasks s WHERE s.project_id = $4 AND s.parent_id IS NULL \
               UNION ALL SELECT s.id, tree.level + 1 FROM tasks s JOIN tree ON s.parent_id = tree.id \
               WHERE s.project_id = $4 AND tree.level < 4), \
             made AS (INSERT INTO tasks (organization_id, id, project_id, column_id, parent_id, title, description, status, \
               priority, due_date, estimate_minutes, visible_to_client, position, created_by, created_at, updated_at) \
               SELECT s.organization_id, m.new, $5, $6, pm.new, s.title, s.description, $7, s.priority, \
               CASE WHEN (s.due_date - DATE '0001-01-01') + $8::integer \
                 BETWEEN 0 AND DATE '9999-12-31' - DATE '0001-01-01' THEN s.due_date + $8 END, \
               s.estimate_minutes, s.visible_to_client, s.position, $9, $10, $10 \
               FROM tree JOIN tasks s ON s.id = tree.id JOIN m ON m.old = s.id LEFT JOIN m pm ON pm.old = s.parent_id \
               ORDER BY tree.level, m.new \
               RETURNING organization_id, id, title) \
             INSERT INTO task_activity (organization_id, id, task_id, actor_id, actor_label, field, old_value, new_value, \
               occurred_at) \
             SELECT made.organization_id, m.activity, made.id, $9, $11, 'created', NULL, made.title, $10 \
             FROM made JOIN m ON m.new = made.id",
        )
        .bind(&tasks)
        .bind(&news)
        .bind(&activity)
        .bind(source)
        .bind(id)
        .bind(column)
        .bind(status)
        .bind(shift.map(|d| d as i32))
        .bind(p.user_id())
        .bind(ctx.now)
        .bind(&actor.label)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
    };

    let people = if with_people {
        sqlx::query(
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at, hourly_rate_minor) \
             SELECT pm.organization_id, $2, pm.user_id, $3, pm.hourly_rate_minor FROM project_members pm \
             JOIN memberships m ON m.organization_id = pm.organization_id AND m.user_id = pm.user_id \
             WHERE pm.project_id = $1 AND m.status = 'active' AND m.role <> 'client'",
        )
        .bind(source)
        .bind(id)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    } else {
        0
    };
    // The one copying works in the copy (after the people copied, whose rates it keeps).
    projects::join_creator(&mut tx, p, id, ctx.now).await?;
    let mut after = projects::snapshot(&project);
    after["copied_from"] = json!(source);
    after["tasks"] = json!(copied);
    after["columns"] = json!(columns);
    after["people"] = json!(people);
    audit::record(&mut tx, ctx, Entry::new("project.copied", "project", id).after(after)).await?;
    tx.commit().await?;
    Ok(Copied { project, tasks: copied, columns, people })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates_move_within_the_calendar_or_are_left_empty() {
        let d = Date::from_calendar_date(2026, time::Month::March, 1).unwrap();
        assert_eq!(shifted(Some(d), 31), Some(Date::from_calendar_date(2026, time::Month::April, 1).unwrap()));
        assert_eq!(shifted(Some(d), -31), Some(Date::from_calendar_date(2026, time::Month::January, 29).unwrap()));
        assert_eq!(shifted(None, 10), None);
        let late = Date::from_calendar_date(9999, time::Month::December, 1).unwrap();
        assert_eq!(shifted(Some(late), 31), None);
        assert_eq!(shifted(Some(d), -(2026 * 366)), None);
    }
}
