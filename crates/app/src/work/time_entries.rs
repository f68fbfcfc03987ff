//! Time entries per project (and optionally per task).

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
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::ids::{ProjectId, TaskId, TimeEntryId, UserId};

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
}

const COLUMNS: &str = "e.id, e.project_id, e.task_id, e.user_id, e.minutes, e.spent_on, e.note, e.created_at";

/// Time spent, recorded for a person.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeInput {
    #[schema(format = Uuid)]
    pub project_id: String,
    /// A task of the project; empty or null for none.
    #[schema(format = "uuid-or-empty")]
    pub task_id: Option<String>,
    #[serde(deserialize_with = "fields::int")]
    #[schema(minimum = 1, maximum = 1440)]
    pub minutes: i32,
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

pub async fn list(db: &Db, p: &OrgPrincipal, f: &TimeFilter, page: Page) -> AppResult<Vec<TimeEntry>> {
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

pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &TimeInput) -> AppResult<TimeEntry> {
    require(p, Permission::TimeTrack)?;
    // Time belongs to a person: through an API key, to the member who created the key.
    let user = p.on_behalf_of().ok_or_else(|| {
        AppError::Forbidden("Time is recorded for a person; this key was not created by a member.".into())
    })?;
    let project: ProjectId = fields::id("project_id", &input.project_id)?;
    let task: Option<TaskId> =
        input.task_id.as_deref().map(|s| fields::id_or_empty("task_id", s)).transpose()?.flatten();
    let minutes = fields::within("minutes", input.minutes, 1, 1440)?;
    let spent_on = input.spent_on.as_deref().map(|d| fields::date("spent_on", d)).transpose()?;
    let note = fields::text("note", input.note.as_deref().unwrap_or(""), 2000)?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Without a date, the time is booked on the organization's today.
    let spent_on = match spent_on {
        Some(d) => d,
        None => super::org_today(&mut tx, ctx.now).await?,
    };
    fetch_visible(&mut tx, p, project).await.map_err(|e| match e {
        AppError::NotFound => AppError::field("project_id", "no such project"),
        other => other,
    })?;
    if let Some(t) = task {
        super::require_task_in_project(&mut tx, t, project, "task_id", "is not a task of this project").await?;
    }
    let entry: TimeEntry = sqlx::query_as(&format!(
        "INSERT INTO time_entries AS e (organization_id, id, project_id, task_id, user_id, minutes, spent_on, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(TimeEntryId::new())
    .bind(project)
    .bind(task)
    .bind(user)
    .bind(minutes)
    .bind(spent_on)
    .bind(&note)
    .bind(ctx.now)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.recorded", "time_entry", entry.id).after(
            json!({ "project_id": project, "task_id": task, "minutes": minutes, "spent_on": spent_on.to_string() }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(entry)
}

/// An entry in a project the principal may see (404 otherwise).
async fn fetch_visible_entry(tx: &mut OrgTx, p: &OrgPrincipal, id: TimeEntryId) -> AppResult<TimeEntry> {
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
    .ok_or(AppError::NotFound)
}

pub async fn get(db: &Db, p: &OrgPrincipal, id: TimeEntryId) -> AppResult<TimeEntry> {
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
) -> AppResult<TimeEntry> {
    require(p, Permission::TimeTrack)?;
    let minutes = input.minutes.map(|m| fields::within("minutes", m, 1, 1440)).transpose()?;
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
    if Some(before.user_id) != p.on_behalf_of() && !p.can(Permission::ProjectsUpdate) {
        return Err(AppError::Forbidden("You can change only your own time entries.".into()));
    }
    if project.is_some_and(|project| project != before.project_id) {
        return Err(AppError::field("project_id", "a time entry can't move to another project"));
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
        "UPDATE time_entries AS e SET task_id = $2, minutes = $3, spent_on = $4, note = $5 WHERE e.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(task.unwrap_or(before.task_id))
    .bind(minutes.unwrap_or(before.minutes))
    .bind(spent_on.unwrap_or(before.spent_on))
    .bind(note.as_deref().unwrap_or(&before.note))
    .fetch_one(&mut *tx)
    .await?;
    let snapshot = |e: &TimeEntry| json!({ "task_id": e.task_id, "minutes": e.minutes, "spent_on": e.spent_on.to_string(), "note": e.note });
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.updated", "time_entry", id).before(snapshot(&before)).after(snapshot(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes an entry: one's own, or anyone's with `projects.update`.
pub async fn delete(db: &Db, ctx: &Context, p: &OrgPrincipal, id: TimeEntryId) -> AppResult<()> {
    require(p, Permission::TimeTrack)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let entry = fetch_visible_entry(&mut tx, p, id).await?;
    if Some(entry.user_id) != p.on_behalf_of() && !p.can(Permission::ProjectsUpdate) {
        return Err(AppError::Forbidden("You can delete only your own time entries.".into()));
    }
    sqlx::query("DELETE FROM time_entries WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("time.deleted", "time_entry", id).before(json!({ "minutes": entry.minutes })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
