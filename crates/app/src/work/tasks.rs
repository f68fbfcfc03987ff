//! Tasks: board placement, subtasks, assignees, comments and field-by-field activity.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::{fetch_visible, require};
use super::task_status::TaskStatus;
use super::{Page, fields, member_filter, project_visible};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ColumnId, CommentId, OrgId, ProjectId, TaskId, UserId};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Task {
    #[schema(value_type = String, format = Uuid)]
    pub organization_id: OrgId,
    #[schema(value_type = String, format = Uuid)]
    pub id: TaskId,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    #[schema(value_type = String, format = Uuid)]
    pub column_id: ColumnId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<TaskId>,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    #[schema(value_type = TaskPriority)]
    pub priority: String,
    #[schema(value_type = Option<String>, format = Date)]
    #[serde(with = "super::iso_date::option")]
    pub due_date: Option<Date>,
    pub estimate_minutes: Option<i32>,
    pub visible_to_client: bool,
    pub position: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub const COLUMNS: &str = "t.organization_id, t.id, t.project_id, t.column_id, t.parent_id, t.title, t.description, t.status, \
     t.priority, t.due_date, t.estimate_minutes, t.visible_to_client, t.position, t.created_at, t.updated_at";

pub const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// The longest estimate a task may carry, in minutes (16,666 hours).
pub const MAX_ESTIMATE_MINUTES: i32 = 1_000_000;

/// A new task.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// The project (a task never changes project).
    #[schema(format = Uuid)]
    pub project_id: String,
    /// A board column of the project (default: its first column).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Uuid, nullable = false)]
    pub column_id: Option<String>,
    /// Makes this a subtask of a task in the same project; empty or null for none.
    #[schema(format = "uuid-or-empty")]
    pub parent_id: Option<String>,
    #[schema(format = "nonblank-text", max_length = 300)]
    pub title: String,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 50000, nullable = false)]
    pub description: Option<String>,
    /// Default `todo`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<TaskStatus>, nullable = false)]
    pub status: Option<String>,
    /// Default `normal`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<TaskPriority>, nullable = false)]
    pub priority: Option<String>,
    /// YYYY-MM-DD; empty or null for none.
    #[schema(format = "date-or-empty")]
    pub due_date: Option<String>,
    /// Minutes; null for none.
    #[serde(default, deserialize_with = "fields::int_or_null")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub estimate_minutes: Option<i32>,
    /// Default `false`.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub visible_to_client: Option<bool>,
    /// Organization members with access to the project (at most 20).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, nullable = false, max_items = 20)]
    pub assignees: Option<Vec<String>>,
}

/// Changes to a task: fields left out stay as they are; `null` clears a field that may be empty
/// (parent, due date, estimate) and is refused for the others.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdate {
    /// The task's own project (a task can't move to another one).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Uuid, nullable = false)]
    pub project_id: Option<String>,
    /// A board column of the task's project.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Uuid, nullable = false)]
    pub column_id: Option<String>,
    /// Another task of the same project, not one of this task's own subtasks; empty or null
    /// makes it a top-level task.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "nonblank-text", max_length = 300, nullable = false)]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 50000, nullable = false)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<TaskStatus>, nullable = false)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<TaskPriority>, nullable = false)]
    pub priority: Option<String>,
    /// YYYY-MM-DD; empty or null for none.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "date-or-empty")]
    pub due_date: Option<Option<String>>,
    /// Minutes; null for none.
    #[serde(default, deserialize_with = "fields::int_present")]
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 1000000)]
    pub estimate_minutes: Option<Option<i32>>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub visible_to_client: Option<bool>,
    /// Replaces the assignees: organization members with access to the project (at most 20).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, nullable = false, max_items = 20)]
    pub assignees: Option<Vec<String>>,
}

/// A task's priority.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // the document's enum; the services keep priorities as text
pub enum TaskPriority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct TaskFilter {
    pub project_id: Option<String>,
    pub status: Option<String>,
    pub assignee: Option<String>,
    pub q: Option<String>,
}

fn optional_id<T: std::str::FromStr>(field: &str, v: Option<&str>) -> DomainResult<Option<T>> {
    v.map(|v| fields::id_or_empty(field, v)).transpose().map(Option::flatten)
}

/// Which of the task list's optional filters a query uses, and its page: what its statement
/// is made of ([`list_sql`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListShape {
    pub member: bool,
    pub project: bool,
    pub status: bool,
    pub assignee: bool,
    pub title: bool,
    pub limit: i64,
    pub offset: i64,
}

impl ListShape {
    /// A page of every task the principal sees, no filter.
    pub fn page(limit: i64, offset: i64) -> Self {
        Self { limit, offset, ..Self::default() }
    }
}

/// The SQL that lists tasks for `shape` (also used by the API benchmark's reference handler and
/// its pgbench script, which run exactly this statement).
///
/// Only the filters in use are in it, their parameters numbered in the order member, project,
/// status, assignee, title; the page size (1–100) is written in, and so is an offset of 0 (any
/// other offset is the last parameter). A catch-all statement (`$n IS NULL OR …`, `LIMIT $n`)
/// has a generic plan that can't know which filters are off or how small the page is, so
/// PostgreSQL plans it afresh on every call, which costs more than running it; each statement
/// here has one right plan, which PostgreSQL keeps.
pub fn list_sql(shape: &ListShape) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let mut sql = format!(
        "SELECT {COLUMNS} FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id"
    );
    let mut filters = Vec::new();
    if shape.member {
        filters.push(super::project_visible_to("p", next()));
    }
    if shape.project {
        filters.push(format!("t.project_id = ${}", next()));
    }
    if shape.status {
        filters.push(format!("t.status = ${}", next()));
    }
    if shape.assignee {
        filters.push(format!(
            "EXISTS (SELECT 1 FROM task_assignees a WHERE a.organization_id = t.organization_id \
             AND a.task_id = t.id AND a.user_id = ${})",
            next()
        ));
    }
    if shape.title {
        filters.push(format!("t.title ILIKE ${}", next()));
    }
    if !filters.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&filters.join(" AND "));
    }
    let limit = shape.limit.clamp(1, super::MAX_PAGE);
    sql.push_str(&format!(" ORDER BY t.created_at DESC, t.id DESC LIMIT {limit}"));
    if shape.offset != 0 {
        sql.push_str(&format!(" OFFSET ${}", next()));
    }
    sql
}

pub async fn list(db: &Db, p: &OrgPrincipal, f: &TaskFilter, page: Page) -> DomainResult<Vec<Task>> {
    require(p, Permission::TasksRead)?;
    let member = member_filter(p)?;
    let project: Option<ProjectId> = optional_id("project_id", f.project_id.as_deref())?;
    let status = f.status.as_deref().filter(|s| !s.is_empty()).map(|s| TaskStatus::parse("status", s)).transpose()?;
    let assignee: Option<UserId> = optional_id("assignee", f.assignee.as_deref())?;
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(|q| format!("%{}%", super::like_escape(q)));
    let shape = ListShape {
        member: member.is_some(),
        project: project.is_some(),
        status: status.is_some(),
        assignee: assignee.is_some(),
        title: q.is_some(),
        limit: page.limit(),
        offset: page.offset(),
    };
    let sql = list_sql(&shape);
    // Bound in the order `list_sql` numbers them.
    let mut query = sqlx::query_as(&sql);
    if let Some(member) = member {
        query = query.bind(member);
    }
    if let Some(project) = project {
        query = query.bind(project);
    }
    if let Some(status) = status {
        query = query.bind(status);
    }
    if let Some(assignee) = assignee {
        query = query.bind(assignee);
    }
    if let Some(q) = q {
        query = query.bind(q);
    }
    if shape.offset != 0 {
        query = query.bind(shape.offset);
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let items = query.fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(items)
}

/// A task the principal may see (404 otherwise).
pub async fn fetch_visible_task(tx: &mut OrgTx, p: &OrgPrincipal, id: TaskId) -> DomainResult<Task> {
    let member = member_filter(p)?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
         WHERE t.id = $2 AND {}",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(DomainError::NotFound)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    #[schema(value_type = Vec<String>)]
    pub assignees: Vec<UserId>,
    pub subtasks: Vec<Task>,
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: TaskId) -> DomainResult<TaskDetail> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let task = fetch_visible_task(&mut tx, p, id).await?;
    let assignees = assignees(&mut tx, id).await?;
    let subtasks = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks t WHERE t.parent_id = $1 ORDER BY t.position, t.created_at"
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(TaskDetail { task, assignees, subtasks })
}

pub async fn assignees(tx: &mut OrgTx, task: TaskId) -> Result<Vec<UserId>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM task_assignees WHERE task_id = $1 ORDER BY user_id")
        .bind(task)
        .fetch_all(&mut **tx)
        .await
}

/// Checks that every user may be assigned in `project`: an active, non-Client member who sees
/// every project (Owner, Admin, Manager) or belongs to this one.
async fn check_assignees(tx: &mut OrgTx, project: ProjectId, users: &[UserId]) -> DomainResult<()> {
    for u in users {
        let ok: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = $1 AND m.status = 'active' AND m.role <> 'client' \
             AND (m.role IN ('owner', 'admin', 'manager') OR EXISTS (SELECT 1 FROM project_members pm \
                  WHERE pm.organization_id = m.organization_id AND pm.project_id = $2 AND pm.user_id = m.user_id)))",
        )
        .bind(u)
        .bind(project)
        .fetch_one(&mut **tx)
        .await?;
        if !ok {
            return Err(DomainError::field("assignees", format!("{u} is not a member with access to this project")));
        }
    }
    Ok(())
}

fn parse_users(v: &[String]) -> DomainResult<Vec<UserId>> {
    if v.len() > 20 {
        return Err(DomainError::field("assignees", "at most 20"));
    }
    let mut out: Vec<UserId> = v
        .iter()
        .map(|s| {
            fields::id::<UserId>("assignees", s).map_err(|_| DomainError::field("assignees", "contains an invalid id"))
        })
        .collect::<DomainResult<_>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The column a task goes to: the one named, or the first column with the status asked for,
/// or the project's first column. A task's status *is* its column's (a trigger keeps it so),
/// so naming both a column and a different status is refused.
async fn column_for(
    tx: &mut OrgTx,
    project: ProjectId,
    column: Option<ColumnId>,
    status: Option<TaskStatus>,
) -> DomainResult<ColumnId> {
    match column {
        Some(c) => {
            let found: Option<TaskStatus> =
                sqlx::query_scalar("SELECT status FROM board_columns WHERE id = $1 AND project_id = $2")
                    .bind(c)
                    .bind(project)
                    .fetch_optional(&mut **tx)
                    .await?;
            let column_status =
                found.ok_or_else(|| DomainError::field("column_id", "is not a column of this project"))?;
            match status {
                Some(s) if s != column_status => Err(DomainError::field(
                    "status",
                    format!("is the task's column: this column means \"{column_status}\""),
                )),
                _ => Ok(c),
            }
        }
        None => {
            let found: Option<ColumnId> = sqlx::query_scalar(
                "SELECT id FROM board_columns WHERE project_id = $1 AND ($2::text IS NULL OR status = $2) \
                 ORDER BY position, id LIMIT 1",
            )
            .bind(project)
            .bind(status)
            .fetch_optional(&mut **tx)
            .await?;
            found.ok_or_else(|| match status {
                Some(_) => {
                    DomainError::field("status", "has no column on this project's board; add a column for it first")
                }
                None => DomainError::field("column_id", "this project has no board column"),
            })
        }
    }
}

/// Who a task change is recorded as made by: their account (a person's), and a label.
pub(super) struct ChangedBy {
    id: Option<UserId>,
    pub(super) label: String,
}

pub(super) async fn changed_by(tx: &mut OrgTx, p: &OrgPrincipal) -> Result<ChangedBy, sqlx::Error> {
    let label = match p.user_id() {
        Some(u) => sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(u)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or_default(),
        None => p.api_key_id().map(|k| format!("API key {k}")).unwrap_or_else(|| "system".into()),
    };
    Ok(ChangedBy { id: p.user_id(), label })
}

async fn activity(
    tx: &mut OrgTx,
    task: TaskId,
    actor: &ChangedBy,
    field: &str,
    old: Option<String>,
    new: Option<String>,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let org = tx.org_id();
    sqlx::query(
        "INSERT INTO task_activity (organization_id, id, task_id, actor_id, actor_label, field, old_value, new_value, \
         occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(task)
    .bind(actor.id)
    .bind(&actor.label)
    .bind(field)
    .bind(old)
    .bind(new)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn snapshot(t: &Task) -> serde_json::Value {
    json!({
        "project_id": t.project_id, "column_id": t.column_id, "parent_id": t.parent_id, "title": t.title,
        "status": t.status, "priority": t.priority, "due_date": t.due_date.map(|d| d.to_string()),
        "estimate_minutes": t.estimate_minutes, "visible_to_client": t.visible_to_client,
    })
}

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &TaskInput) -> DomainResult<Task> {
    require(p, Permission::TasksCreate)?;
    let project: ProjectId = fields::id("project_id", &input.project_id)?;
    let title = fields::nonblank("title", &input.title, 300)?;
    let description = fields::text("description", input.description.as_deref().unwrap_or(""), 50000)?;
    let asked = input.status.as_deref().map(|s| TaskStatus::parse("status", s)).transpose()?;
    let priority = input.priority.clone().unwrap_or_else(|| "normal".into());
    fields::one_of("priority", &priority, &PRIORITIES)?;
    let due = input.due_date.as_deref().map(|d| fields::date_or_empty("due_date", d)).transpose()?.flatten();
    let estimate =
        input.estimate_minutes.map(|m| fields::within("estimate_minutes", m, 0, MAX_ESTIMATE_MINUTES)).transpose()?;
    let column = input.column_id.as_deref().map(|c| fields::id::<ColumnId>("column_id", c)).transpose()?;
    let parent: Option<TaskId> = optional_id("parent_id", input.parent_id.as_deref())?;
    let users = parse_users(input.assignees.as_deref().unwrap_or(&[]))?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await.map_err(|e| match e {
        DomainError::NotFound => DomainError::field("project_id", "no such project"),
        other => other,
    })?;
    let column = column_for(&mut tx, project, column, asked).await?;
    let status: TaskStatus =
        sqlx::query_scalar("SELECT status FROM board_columns WHERE id = $1").bind(column).fetch_one(&mut *tx).await?;
    if let Some(parent) = parent {
        super::require_task_in_project(&mut tx, parent, project, "parent_id", "is not a task of this project").await?;
    }
    check_assignees(&mut tx, project, &users).await?;
    let position: i32 = sqlx::query_scalar("SELECT coalesce(max(position) + 1, 0) FROM tasks WHERE column_id = $1")
        .bind(column)
        .fetch_one(&mut *tx)
        .await?;
    let id = TaskId::new();
    let task: Task = sqlx::query_as(&format!(
        "INSERT INTO tasks AS t (organization_id, id, project_id, column_id, parent_id, title, description, status, priority, due_date, \
         estimate_minutes, visible_to_client, position, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(id)
    .bind(project)
    .bind(column)
    .bind(parent)
    .bind(&title)
    .bind(&description)
    .bind(status)
    .bind(&priority)
    .bind(due)
    .bind(estimate)
    .bind(input.visible_to_client.unwrap_or(false))
    .bind(position)
    .bind(p.user_id())
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    for u in &users {
        sqlx::query("INSERT INTO task_assignees (organization_id, task_id, user_id) VALUES ($1, $2, $3)")
            .bind(tx.org_id())
            .bind(id)
            .bind(u)
            .execute(&mut *tx)
            .await?;
    }
    let actor = changed_by(&mut tx, p).await?;
    activity(&mut tx, id, &actor, "created", None, Some(title.clone()), ctx.now).await?;
    super::daily::task_assigned(&mut tx, p, id, &title, &users, ctx.now).await?;
    audit::record(&mut tx, ctx, Entry::new("task.created", "task", id).after(snapshot(&task))).await?;
    tx.commit().await?;
    Ok(task)
}

/// How deep subtasks nest: a top-level task and four levels below it. The database enforces it
/// (migration 0009, with loops); this is what messages quote.
pub const MAX_LEVELS: usize = 5;

pub async fn update(db: &Db, ctx: &Context, p: &OrgPrincipal, id: TaskId, input: &TaskUpdate) -> DomainResult<Task> {
    require(p, Permission::TasksUpdate)?;
    let project: Option<ProjectId> = input.project_id.as_deref().map(|v| fields::id("project_id", v)).transpose()?;
    let title = input.title.as_deref().map(|t| fields::nonblank("title", t, 300)).transpose()?;
    let description = input.description.as_deref().map(|d| fields::text("description", d, 50000)).transpose()?;
    let asked = input.status.as_deref().map(|s| TaskStatus::parse("status", s)).transpose()?;
    if let Some(priority) = &input.priority {
        fields::one_of("priority", priority, &PRIORITIES)?;
    }
    let due = input
        .due_date
        .as_ref()
        .map(|d| d.as_deref().map(|d| fields::date_or_empty("due_date", d)).transpose().map(Option::flatten))
        .transpose()?;
    let estimate = input
        .estimate_minutes
        .map(|m| m.map(|m| fields::within("estimate_minutes", m, 0, MAX_ESTIMATE_MINUTES)).transpose())
        .transpose()?;
    let column = input.column_id.as_deref().map(|c| fields::id::<ColumnId>("column_id", c)).transpose()?;
    let parent: Option<Option<TaskId>> =
        input.parent_id.as_ref().map(|v| optional_id("parent_id", v.as_deref())).transpose()?;
    let users = input.assignees.as_deref().map(parse_users).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible_task(&mut tx, p, id).await?;
    let assignees_before = assignees(&mut tx, id).await?;
    if project.is_some_and(|project| project != before.project_id) {
        return Err(DomainError::field("project_id", "a task can't move to another project"));
    }
    let title = title.unwrap_or_else(|| before.title.clone());
    let description = description.unwrap_or_else(|| before.description.clone());
    let status = asked.unwrap_or(before.status);
    let priority = input.priority.clone().unwrap_or_else(|| before.priority.clone());
    let due = due.unwrap_or(before.due_date);
    let estimate = estimate.unwrap_or(before.estimate_minutes);
    // A new status moves the card to that status's first column (unless it is in one already).
    let column = match (column, asked) {
        (Some(c), asked) => column_for(&mut tx, before.project_id, Some(c), asked).await?,
        (None, Some(asked)) if asked != before.status => {
            column_for(&mut tx, before.project_id, None, Some(asked)).await?
        }
        (None, _) => before.column_id,
    };
    let parent = match parent {
        None => before.parent_id,
        Some(None) => None,
        Some(Some(parent)) => {
            let same: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND project_id = $2 AND id <> $3)",
            )
            .bind(parent)
            .bind(before.project_id)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if !same {
                return Err(DomainError::field("parent_id", "is not another task of this project"));
            }
            Some(parent)
        }
    };
    let position = if column != before.column_id {
        sqlx::query_scalar("SELECT coalesce(max(position) + 1, 0) FROM tasks WHERE column_id = $1")
            .bind(column)
            .fetch_one(&mut *tx)
            .await?
    } else {
        before.position
    };
    let after: Task = sqlx::query_as(&format!(
        "UPDATE tasks AS t SET column_id = $2, parent_id = $3, title = $4, description = $5, status = $6, priority = $7, due_date = $8, \
         estimate_minutes = $9, visible_to_client = $10, position = $11, updated_at = $12 WHERE t.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(column)
    .bind(parent)
    .bind(&title)
    .bind(&description)
    .bind(status)
    .bind(&priority)
    .bind(due)
    .bind(estimate)
    .bind(input.visible_to_client.unwrap_or(before.visible_to_client))
    .bind(position)
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(users) = users {
        check_assignees(&mut tx, before.project_id, &users).await?;
        let old = assignees_before.clone();
        if old != users {
            sqlx::query("DELETE FROM task_assignees WHERE task_id = $1").bind(id).execute(&mut *tx).await?;
            for u in &users {
                sqlx::query("INSERT INTO task_assignees (organization_id, task_id, user_id) VALUES ($1, $2, $3)")
                    .bind(tx.org_id())
                    .bind(id)
                    .bind(u)
                    .execute(&mut *tx)
                    .await?;
            }
            let join = |v: &[UserId]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(",");
            let actor = changed_by(&mut tx, p).await?;
            activity(&mut tx, id, &actor, "assignees", Some(join(&old)), Some(join(&users)), ctx.now).await?;
        }
    }
    let actor = changed_by(&mut tx, p).await?;
    let changes: [(&str, Option<String>, Option<String>); 9] = [
        ("title", Some(before.title.clone()), Some(after.title.clone())),
        ("description", Some(before.description.clone()), Some(after.description.clone())),
        ("status", Some(before.status.to_string()), Some(after.status.to_string())),
        ("priority", Some(before.priority.clone()), Some(after.priority.clone())),
        ("due_date", before.due_date.map(|d| d.to_string()), after.due_date.map(|d| d.to_string())),
        (
            "estimate_minutes",
            before.estimate_minutes.map(|m| m.to_string()),
            after.estimate_minutes.map(|m| m.to_string()),
        ),
        ("column", Some(before.column_id.to_string()), Some(after.column_id.to_string())),
        ("parent", before.parent_id.map(|u| u.to_string()), after.parent_id.map(|u| u.to_string())),
        ("visible_to_client", Some(before.visible_to_client.to_string()), Some(after.visible_to_client.to_string())),
    ];
    for (field, old, new) in changes {
        if old != new {
            activity(&mut tx, id, &actor, field, old, new, ctx.now).await?;
        }
    }
    let assignees_after = assignees(&mut tx, id).await?;
    let added: Vec<UserId> = assignees_after.iter().filter(|u| !assignees_before.contains(u)).copied().collect();
    super::daily::task_assigned(&mut tx, p, id, &after.title, &added, ctx.now).await?;
    if after.column_id != before.column_id {
        let column: String = sqlx::query_scalar("SELECT name FROM board_columns WHERE id = $1")
            .bind(after.column_id)
            .fetch_one(&mut *tx)
            .await?;
        super::daily::task_changed(&mut tx, p, id, &after.title, &format!("moved to {column}"), ctx.now).await?;
    }
    if after.due_date != before.due_date {
        let what = match after.due_date {
            Some(d) => format!("due date changed to {d}"),
            None => "due date removed".to_string(),
        };
        super::daily::task_changed(&mut tx, p, id, &after.title, &what, ctx.now).await?;
    }
    let with_assignees = |mut v: serde_json::Value, users: &[UserId]| {
        v["assignees"] = json!(users);
        v
    };
    audit::record(
        &mut tx,
        ctx,
        Entry::new("task.updated", "task", id)
            .before(with_assignees(snapshot(&before), &assignees_before))
            .after(with_assignees(snapshot(&after), &assignees_after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: TaskId) -> DomainResult<()> {
    require(p, Permission::TasksDelete)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let before = fetch_visible_task(&mut tx, p, id).await?;
    let files: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM files WHERE task_id = $1)")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if files {
        return Err(DomainError::Conflict("Delete the task's files first.".into()));
    }
    super::approvals::refuse_to_delete_approved(&mut tx, super::approvals::Holding::Task(id)).await?;
    sqlx::query("DELETE FROM tasks WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(&mut tx, ctx, Entry::new("task.deleted", "task", id).before(snapshot(&before))).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Comment {
    #[schema(value_type = String, format = Uuid)]
    pub id: CommentId,
    #[schema(value_type = String, format = Uuid)]
    pub task_id: TaskId,
    pub author: String,
    /// The member who wrote it; null when an API key or the operator did.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub author_id: Option<UserId>,
    pub body: String,
    pub client_visible: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its author last changed it (null if never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub edited_at: Option<OffsetDateTime>,
}

/// A new comment.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentInput {
    #[schema(format = "nonblank-text", max_length = 20000)]
    pub body: String,
    /// Shown to the client in the portal (default `false`).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub client_visible: Option<bool>,
}

/// Changes to a comment (fields left out stay as they are; neither may be `null`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentUpdate {
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "nonblank-text", max_length = 20000, nullable = false)]
    pub body: Option<String>,
    /// Shown to the client in the portal.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub client_visible: Option<bool>,
}

/// A comment's columns, its author named by `$unnamed` when they have no display name (SQL over
/// `c`, the comment, and `u`, its author's user row, absent for a key's comment).
macro_rules! comment_columns {
    ($unnamed:literal) => {
        concat!(
            "c.id, c.task_id, coalesce(nullif(u.display_name, ''), ",
            $unnamed,
            ") AS author, c.author_id, c.body, c.client_visible, c.created_at, c.edited_at"
        )
    };
}

/// For the organization's own people: an author without a display name by their email.
pub const COMMENT_COLUMNS: &str = comment_columns!("u.email, 'API key'");

/// For the client portal, which shows no staff email address: an author without a display
/// name is a team member.
pub const PORTAL_COMMENT_COLUMNS: &str =
    comment_columns!("CASE WHEN c.author_id IS NULL THEN 'API key' ELSE 'Team member' END");

pub async fn comments(db: &Db, p: &OrgPrincipal, task: TaskId) -> DomainResult<Vec<Comment>> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible_task(&mut tx, p, task).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments c LEFT JOIN users u ON u.id = c.author_id WHERE c.task_id = $1 ORDER BY c.created_at, c.id"
    ))
    .bind(task)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

pub async fn add_comment(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    task: TaskId,
    input: &CommentInput,
) -> DomainResult<Comment> {
    require(p, Permission::CommentsCreate)?;
    let body = fields::nonblank("body", &input.body, 20000)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible_task(&mut tx, p, task).await?;
    let id = CommentId::new();
    sqlx::query(
        "INSERT INTO comments (organization_id, id, task_id, author_id, api_key_id, body, client_visible, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(task)
    .bind(p.user_id())
    .bind(p.api_key_id())
    .bind(&body)
    .bind(input.client_visible.unwrap_or(false))
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?;
    let comment: Comment = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments c LEFT JOIN users u ON u.id = c.author_id WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("comment.created", "task", task)
            .after(json!({ "comment": id, "client_visible": comment.client_visible })),
    )
    .await?;
    super::daily::commented(&mut tx, p, task, &body, ctx.now).await?;
    tx.commit().await?;
    Ok(comment)
}

/// A comment of a task the principal may see, with whether it is the principal's own: written
/// by the person they act for, directly or through an API key that person created.
async fn fetch_comment(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    task: TaskId,
    comment: CommentId,
) -> DomainResult<(Comment, bool)> {
    fetch_visible_task(tx, p, task).await?;
    let found: Option<(Option<UserId>, Option<UserId>)> = sqlx::query_as(
        "SELECT c.author_id, k.created_by FROM comments c \
         LEFT JOIN api_keys k ON k.organization_id = c.organization_id AND k.id = c.api_key_id \
         WHERE c.id = $1 AND c.task_id = $2",
    )
    .bind(comment)
    .bind(task)
    .fetch_optional(&mut **tx)
    .await?;
    let (author, key_creator) = found.ok_or(DomainError::NotFound)?;
    let me = p.on_behalf_of();
    let own = me.is_some() && (author == me || (author.is_none() && key_creator == me));
    let row: Comment = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments c LEFT JOIN users u ON u.id = c.author_id WHERE c.id = $1"
    ))
    .bind(comment)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row, own))
}

/// Changes a comment's text or visibility. Only its author may: words are not put in someone
/// else's mouth (a moderator deletes instead).
pub async fn update_comment(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    task: TaskId,
    comment: CommentId,
    input: &CommentUpdate,
) -> DomainResult<Comment> {
    require(p, Permission::CommentsCreate)?;
    let body = input.body.as_deref().map(|b| fields::nonblank("body", b, 20000)).transpose()?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (before, own) = fetch_comment(&mut tx, p, task, comment).await?;
    if !own {
        return Err(DomainError::Forbidden("You can edit only your own comments.".into()));
    }
    let body = body.unwrap_or_else(|| before.body.clone());
    let client_visible = input.client_visible.unwrap_or(before.client_visible);
    if body == before.body && client_visible == before.client_visible {
        tx.commit().await?;
        return Ok(before);
    }
    sqlx::query("UPDATE comments SET body = $2, client_visible = $3, edited_at = $4 WHERE id = $1")
        .bind(comment)
        .bind(&body)
        .bind(client_visible)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    let after: Comment = sqlx::query_as(&format!(
        "SELECT {COMMENT_COLUMNS} FROM comments c LEFT JOIN users u ON u.id = c.author_id WHERE c.id = $1"
    ))
    .bind(comment)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("comment.updated", "task", task)
            .before(json!({ "comment": comment, "body": before.body, "client_visible": before.client_visible }))
            .after(json!({ "comment": comment, "body": after.body, "client_visible": after.client_visible })),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes a comment: one's own, or anyone's with `projects.update` (moderation, like others'
/// time entries).
pub async fn delete_comment(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    task: TaskId,
    comment: CommentId,
) -> DomainResult<()> {
    require(p, Permission::CommentsCreate)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (before, own) = fetch_comment(&mut tx, p, task, comment).await?;
    if !own && !p.can(Permission::ProjectsUpdate) {
        return Err(DomainError::Forbidden("You can delete only your own comments.".into()));
    }
    sqlx::query("DELETE FROM comments WHERE id = $1 AND task_id = $2")
        .bind(comment)
        .bind(task)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("comment.deleted", "task", task).before(json!({
            "comment": comment, "author": before.author, "body": before.body, "client_visible": before.client_visible,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Activity {
    /// The member who made the change; null when an API key or the system did (or for changes
    /// recorded before members were).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub actor_id: Option<UserId>,
    /// Who made it as recorded then: their email, or "API key …".
    pub actor_label: String,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

pub async fn activity_log(db: &Db, p: &OrgPrincipal, task: TaskId) -> DomainResult<Vec<Activity>> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible_task(&mut tx, p, task).await?;
    let rows = sqlx::query_as(
        "SELECT actor_id, actor_label, field, old_value, new_value, occurred_at FROM task_activity WHERE task_id = $1 \
         ORDER BY occurred_at, id",
    )
    .bind(task)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// How many cards a board column shows at most; the rest of a column is a link away (the
/// project's List tab for that column). A column of thousands of cards is no board to work
/// on, and rendering them all made the page slow and heavy.
pub const BOARD_COLUMN_CAP: i64 = 100;

/// One column of a project's board: its first cards in order and how many it holds in all.
#[derive(Debug, Clone)]
pub struct BoardColumn {
    pub column: super::projects::Column,
    /// Every top-level task in the column, shown or not.
    pub total: i64,
    /// The first `cap` of them, by position.
    pub tasks: Vec<Task>,
}

/// The board of a project: its columns with their first `cap` (top-level) tasks in order and
/// each column's full count. Each column is one index range read on `tasks_board_idx`
/// (`organization_id, project_id, column_id, position`) kept to its first `cap` rows by a top-N
/// sort, and the counts are one aggregate over the same index: with 2,000 tasks on a board both
/// run in about 1.5 ms (EXPLAIN ANALYZE), and the page renders `cap` cards per column whatever
/// the project's size.
pub async fn board(db: &Db, p: &OrgPrincipal, project: ProjectId, cap: i64) -> DomainResult<Vec<BoardColumn>> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let cols = super::projects::columns(&mut tx, project).await?;
    let counts: Vec<(ColumnId, i64)> = sqlx::query_as(
        "SELECT column_id, count(*) FROM tasks WHERE project_id = $1 AND parent_id IS NULL GROUP BY column_id",
    )
    .bind(project)
    .fetch_all(&mut *tx)
    .await?;
    let tasks: Vec<Task> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM board_columns c CROSS JOIN LATERAL ( \
           SELECT * FROM tasks t WHERE t.organization_id = c.organization_id AND t.project_id = c.project_id \
             AND t.column_id = c.id AND t.parent_id IS NULL ORDER BY t.position, t.created_at, t.id LIMIT $2) t \
         WHERE c.project_id = $1"
    ))
    .bind(project)
    .bind(cap.max(0))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut by_column: std::collections::HashMap<ColumnId, Vec<Task>> = std::collections::HashMap::new();
    for t in tasks {
        by_column.entry(t.column_id).or_default().push(t);
    }
    Ok(cols
        .into_iter()
        .map(|c| BoardColumn {
            total: counts.iter().find(|(id, _)| *id == c.id).map(|(_, n)| *n).unwrap_or(0),
            tasks: by_column.remove(&c.id).unwrap_or_default(),
            column: c,
        })
        .collect())
}

/// Which of a project's top-level tasks the List tab shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProjectListFilter {
    /// One column only (where a board column's "Show all" leads).
    pub column: Option<ColumnId>,
    /// Only the tasks this person is assigned to.
    pub assignee: Option<UserId>,
    /// Only the tasks no one is assigned to.
    pub unassigned: bool,
    /// Only the tasks not done.
    pub open: bool,
}

/// A page of a project's top-level tasks in board order (column by column, then by position),
/// narrowed by `f`, with the number of such tasks in all (the List tab).
pub async fn project_list(
    db: &Db,
    p: &OrgPrincipal,
    project: ProjectId,
    f: &ProjectListFilter,
    limit: i64,
    offset: i64,
) -> DomainResult<(Vec<Task>, i64)> {
    require(p, Permission::TasksRead)?;
    const NARROWED: &str = "t.project_id = $1 AND t.parent_id IS NULL AND ($2::uuid IS NULL OR t.column_id = $2) \
        AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM task_assignees a \
              WHERE a.organization_id = t.organization_id AND a.task_id = t.id AND a.user_id = $3)) \
        AND (NOT $4 OR NOT EXISTS (SELECT 1 FROM task_assignees a \
              WHERE a.organization_id = t.organization_id AND a.task_id = t.id)) \
        AND (NOT $5 OR t.status <> 'done')";
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM tasks t WHERE {NARROWED}"))
        .bind(project)
        .bind(f.column)
        .bind(f.assignee)
        .bind(f.unassigned)
        .bind(f.open)
        .fetch_one(&mut *tx)
        .await?;
    let tasks: Vec<Task> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks t JOIN board_columns c ON c.organization_id = t.organization_id \
           AND c.id = t.column_id \
         WHERE {NARROWED} ORDER BY c.position, c.id, t.position, t.created_at, t.id LIMIT $6 OFFSET $7"
    ))
    .bind(project)
    .bind(f.column)
    .bind(f.assignee)
    .bind(f.unassigned)
    .bind(f.open)
    .bind(limit.clamp(1, super::MAX_PAGE))
    .bind(offset.max(0))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((tasks, total))
}

/// Who is assigned to each of these tasks of a project (for the board's cards).
pub async fn assignees_of(
    db: &Db,
    p: &OrgPrincipal,
    project: ProjectId,
    tasks: &[TaskId],
) -> DomainResult<std::collections::HashMap<TaskId, Vec<UserId>>> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.as_uuid()).collect();
    let rows: Vec<(TaskId, UserId)> = sqlx::query_as(
        "SELECT a.task_id, a.user_id FROM task_assignees a JOIN tasks t ON t.organization_id = a.organization_id \
         AND t.id = a.task_id WHERE t.project_id = $1 AND a.task_id = ANY($2) ORDER BY a.task_id, a.user_id",
    )
    .bind(project)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut map: std::collections::HashMap<TaskId, Vec<UserId>> = std::collections::HashMap::new();
    for (task, user) in rows {
        map.entry(task).or_default().push(user);
    }
    Ok(map)
}

/// One change to one of a project's tasks, newest first (the project's Activity tab).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectActivity {
    pub task_id: TaskId,
    pub title: String,
    pub actor_id: Option<UserId>,
    pub actor_label: String,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub occurred_at: OffsetDateTime,
}

pub async fn project_activity(
    db: &Db,
    p: &OrgPrincipal,
    project: ProjectId,
    limit: i64,
) -> DomainResult<Vec<ProjectActivity>> {
    require(p, Permission::TasksRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let rows = sqlx::query_as(
        "SELECT a.task_id, t.title, a.actor_id, a.actor_label, a.field, a.old_value, a.new_value, a.occurred_at \
         FROM task_activity a JOIN tasks t ON t.organization_id = a.organization_id AND t.id = a.task_id \
         WHERE t.project_id = $1 ORDER BY a.occurred_at DESC, a.id DESC LIMIT $2",
    )
    .bind(project)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Whether the person the principal acts for follows `task` (a task they may see).
pub async fn following(db: &Db, p: &OrgPrincipal, task: TaskId) -> DomainResult<bool> {
    let Some(me) = p.on_behalf_of() else { return Ok(false) };
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible_task(&mut tx, p, task).await?;
    let yes = super::daily::is_following(&mut tx, task, me).await?;
    tx.commit().await?;
    Ok(yes)
}

/// Follows or unfollows a task the principal may see, for the person they act for.
pub async fn set_following(db: &Db, p: &OrgPrincipal, task: TaskId, following: bool) -> DomainResult<()> {
    require(p, Permission::TasksRead)?;
    let Some(me) = p.on_behalf_of() else {
        return Err(DomainError::Forbidden("Following is for people.".into()));
    };
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible_task(&mut tx, p, task).await?;
    sqlx::query(
        "INSERT INTO task_followers (organization_id, task_id, user_id, following) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id, task_id, user_id) DO UPDATE SET following = EXCLUDED.following",
    )
    .bind(tx.org_id())
    .bind(task)
    .bind(me)
    .bind(following)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ListShape, list_sql};

    /// Every combination of filters and offset numbers its parameters 1, 2, … in the order
    /// `list` binds them, with no gap and no leftover catch-all.
    #[test]
    fn the_list_statement_numbers_exactly_the_filters_in_use() {
        for bits in 0u32..64 {
            let on = |i: u32| bits & (1 << i) != 0;
            let shape = ListShape {
                member: on(0),
                project: on(1),
                status: on(2),
                assignee: on(3),
                title: on(4),
                limit: 50,
                offset: if on(5) { 25 } else { 0 },
            };
            let sql = list_sql(&shape);
            let used = bits.count_ones() as usize;
            for n in 1..=used {
                assert!(sql.contains(&format!("${n}")), "{bits:06b}: ${n} missing in {sql}");
            }
            assert!(!sql.contains(&format!("${}", used + 1)), "{bits:06b}: too many parameters in {sql}");
            assert!(!sql.contains("IS NULL"), "{sql}");
            let tail = if on(5) { format!("LIMIT 50 OFFSET ${used}") } else { "LIMIT 50".to_string() };
            assert!(sql.ends_with(&tail), "{sql}");
        }
        assert!(list_sql(&ListShape::page(1000, 0)).ends_with("LIMIT 100"));
        assert!(list_sql(&ListShape::page(-3, 0)).ends_with("LIMIT 1"));
    }
}
