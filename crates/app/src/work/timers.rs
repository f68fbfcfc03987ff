//! Timers: a person starts one on a project or a task; stopping it records the time entry. The
//! timer lives in the database, so it survives reloads, other tabs and other devices.
//!
//! One running timer per person: starting another stops the first (as recording its time), and
//! the partial unique index `timers_one_running` makes that true under races too — of two
//! starts at the same moment one wins and the other is refused with a 409.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::{fetch_visible, require};
use super::time_entries::{self, NewEntry, TimeEntry};
use super::{duration, fields};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ProjectId, TaskId, UserId};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Timer {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub task_id: Option<TaskId>,
    pub note: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The project's name (and the task's title, when on a task), for showing it.
    pub project_name: String,
    pub task_title: Option<String>,
}

const COLUMNS: &str =
    "t.id, t.project_id, t.task_id, t.note, t.started_at, p.name AS project_name, k.title AS task_title";
const FROM: &str = "timers t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
     LEFT JOIN tasks k ON k.organization_id = t.organization_id AND k.id = t.task_id";

/// What to time.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerStart {
    #[schema(format = Uuid)]
    pub project_id: String,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "uuid-or-empty", nullable = false)]
    pub task_id: Option<String>,
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "text", max_length = 2000, nullable = false)]
    pub note: Option<String>,
}

/// What a stop did: the entry it recorded (none for less than a minute).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stopped {
    pub timer: Timer,
    pub entry: Option<TimeEntry>,
}

fn person(p: &OrgPrincipal) -> DomainResult<UserId> {
    p.on_behalf_of()
        .ok_or_else(|| DomainError::Forbidden("Timers are a person's; this key was not created by a member.".into()))
}

/// The caller's running timer, if any.
pub async fn current(db: &Db, p: &OrgPrincipal) -> DomainResult<Option<Timer>> {
    require(p, Permission::TimeTrack)?;
    let user = person(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let t = running(&mut tx, user).await?;
    tx.commit().await?;
    Ok(t)
}

async fn running(tx: &mut OrgTx, user: UserId) -> Result<Option<Timer>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.user_id = $1 AND t.stopped_at IS NULL"))
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
}

/// Starts a timer for the caller; a running one is stopped first (its time recorded).
pub async fn start(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    input: &TimerStart,
) -> DomainResult<(Timer, Option<Stopped>)> {
    require(p, Permission::TimeTrack)?;
    let user = person(p)?;
    let project: ProjectId = fields::id("project_id", &input.project_id)?;
    let task: Option<TaskId> =
        input.task_id.as_deref().map(|s| fields::id_or_empty("task_id", s)).transpose()?.flatten();
    let note = fields::text("note", input.note.as_deref().unwrap_or(""), 2000)?;
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await.map_err(|e| match e {
        DomainError::NotFound => DomainError::field("project_id", "no such project"),
        other => other,
    })?;
    if let Some(t) = task {
        super::require_task_in_project(&mut tx, t, project, "task_id", "is not a task of this project").await?;
    }
    let stopped = stop_in(&mut tx, ctx, user).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO timers (organization_id, id, user_id, project_id, task_id, note, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (organization_id, user_id) WHERE stopped_at IS NULL DO NOTHING",
    )
    .bind(tx.org_id())
    .bind(id)
    .bind(user)
    .bind(project)
    .bind(task)
    .bind(&note)
    .bind(ctx.now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Another request started one between our stop and our insert.
        return Err(DomainError::Conflict(
            "A timer is already running for you (started just now elsewhere); stop it first.".into(),
        ));
    }
    audit::record(
        &mut tx,
        ctx,
        Entry::new("timer.started", "timer", id).after(json!({ "project_id": project, "task_id": task })),
    )
    .await?;
    let timer = running(&mut tx, user).await?.ok_or(DomainError::NotFound)?;
    tx.commit().await?;
    Ok((timer, stopped))
}

/// Stops the caller's running timer and records its time (rounded to the nearest minute, at
/// most a day, on the organization's date of its start). 409 when none runs.
pub async fn stop(db: &Db, ctx: &Context, p: &OrgPrincipal) -> DomainResult<Stopped> {
    require(p, Permission::TimeTrack)?;
    let user = person(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let stopped = stop_in(&mut tx, ctx, user)
        .await?
        .ok_or_else(|| DomainError::Conflict("No timer is running for you.".into()))?;
    tx.commit().await?;
    Ok(stopped)
}

async fn stop_in(tx: &mut OrgTx, ctx: &Context, user: UserId) -> DomainResult<Option<Stopped>> {
    // The row lock makes a concurrent stop wait, then find nothing running.
    let Some(timer): Option<Timer> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE t.user_id = $1 AND t.stopped_at IS NULL FOR UPDATE OF t"
    ))
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let now = ctx.now.max(timer.started_at);
    let seconds = (now - timer.started_at).whole_seconds();
    let minutes = ((seconds + 30) / 60).min(duration::MAX_MINUTES as i64) as i32;
    let entry = if minutes >= 1 {
        let spent_on = crate::platform::tz::today(timer.started_at, &org_zone(tx).await?);
        Some(
            time_entries::insert(
                tx,
                ctx,
                NewEntry {
                    project: timer.project_id,
                    task: timer.task_id,
                    user,
                    minutes,
                    spent_on,
                    note: &timer.note,
                    billable: None,
                },
            )
            .await?,
        )
    } else {
        None
    };
    sqlx::query("UPDATE timers SET stopped_at = $2, time_entry_id = $3 WHERE id = $1")
        .bind(timer.id)
        .bind(now)
        .bind(entry.as_ref().map(|e| e.id))
        .execute(&mut **tx)
        .await?;
    audit::record(
        tx,
        ctx,
        Entry::new("timer.stopped", "timer", timer.id)
            .after(json!({ "minutes": minutes, "time_entry_id": entry.as_ref().map(|e| e.id) })),
    )
    .await?;
    Ok(Some(Stopped { timer, entry }))
}

async fn org_zone(tx: &mut OrgTx) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT timezone FROM organizations WHERE id = $1").bind(tx.org_id()).fetch_one(&mut **tx).await
}

/// Seconds a timer has run at `now` (for showing it).
pub fn elapsed_seconds(t: &Timer, now: OffsetDateTime) -> i64 {
    (now - t.started_at).whole_seconds().max(0)
}

/// 3725 → "1:02:05".
pub fn clock(seconds: i64) -> String {
    format!("{}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}
