//! The task page: its editor, subtasks, comments, activity history and time (creating and
//! moving tasks on a project's board is `board`).

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Errors, FormFields, PRIORITIES, People, STATUS_WORDS, day, duration, path_id, people, word};
use crate::access::role::{Permission as P, Role};
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, FieldError};
use crate::platform::ids::{CommentId, TaskId, UserId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::tasks::{self, CommentInput, Task, TaskInput, TaskUpdate};
use crate::work::time_entries::{self, TimeFilter};
use crate::work::{Page, projects};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/tasks/{task}", Surface::Web, Access::Org(P::TasksRead), detail),
        route!(POST "/o/{org}/tasks/{task}/edit", Surface::Web, Access::Org(P::TasksUpdate), update),
        route!(POST "/o/{org}/tasks/{task}/subtasks", Surface::Web, Access::Org(P::TasksCreate), create_subtask),
        route!(POST "/o/{org}/tasks/{task}/comments", Surface::Web, Access::Org(P::CommentsCreate), add_comment),
        route!(POST "/o/{org}/tasks/{task}/comments/{comment}/delete", Surface::Web, Access::Org(P::CommentsCreate), delete_comment),
        route!(POST "/o/{org}/tasks/{task}/delete", Surface::Web, Access::Org(P::TasksDelete), delete),
    ]
}

/// What a recorded change of a task changed, in words (the task page's history).
const CHANGE_WORDS: [(&str, &str); 11] = [
    ("created", "Created"),
    ("title", "Title"),
    ("description", "Description"),
    ("status", "Status"),
    ("priority", "Priority"),
    ("due_date", "Due date"),
    ("estimate_minutes", "Estimate"),
    ("column", "Board column"),
    ("parent", "Parent task"),
    ("visible_to_client", "Visible to the client"),
    ("assignees", "Assignees"),
];

// ---- the task page ----

/// The editor's values: the task's own, or what was typed when saving failed.
#[derive(Clone, Default)]
pub struct TaskEdit {
    title: String,
    description: String,
    priority: String,
    due_date: String,
    estimate_minutes: String,
    column_id: String,
    parent_id: String,
    visible_to_client: bool,
    assignees: Vec<String>,
}

impl TaskEdit {
    fn of(t: &Task, assignees: &[UserId]) -> Self {
        Self {
            title: t.title.clone(),
            description: t.description.clone(),
            priority: t.priority.clone(),
            due_date: day(t.due_date),
            estimate_minutes: t
                .estimate_minutes
                .map(|m| crate::work::duration::format_hm(m.into()))
                .unwrap_or_default(),
            column_id: t.column_id.to_string(),
            parent_id: t.parent_id.map(|p| p.to_string()).unwrap_or_default(),
            visible_to_client: t.visible_to_client,
            assignees: assignees.iter().map(|u| u.to_string()).collect(),
        }
    }
}

/// Values typed into the task page's forms, shown again when one of them fails.
#[derive(Clone, Default)]
pub struct TaskForms {
    pub edit: Option<TaskEdit>,
    pub subtask_title: String,
    pub comment: String,
    pub minutes: String,
    pub spent_on: String,
    pub note: String,
}

struct CommentView {
    id: String,
    author: String,
    body: String,
    client_visible: bool,
    at: String,
    edited: bool,
    deletable: bool,
}

struct ActivityView {
    who: String,
    field: String,
    old: String,
    new: String,
    at: String,
}

struct TimeRow {
    id: String,
    who: String,
    minutes: String,
    spent_on: String,
    note: String,
    /// The viewer may change or delete it: theirs (or anyone's with projects.update), neither
    /// billed nor approved.
    deletable: bool,
    billed: bool,
    approved: bool,
}

#[derive(Template)]
#[template(path = "work/task.html")]
struct TaskPage {
    csrf: String,
    org: OrgNav,
    task: Task,
    column_now: String,
    project_name: String,
    /// The parent task's title, when the task is a subtask.
    parent_title: Option<String>,
    /// The priority in words.
    priority: &'static str,
    /// The estimate as a duration ("1h 30m").
    estimate: Option<String>,
    edit: TaskEdit,
    statuses: [(&'static str, &'static str); 4],
    priorities: [(&'static str, &'static str); 4],
    columns: Vec<(String, String)>,
    parents: Vec<(String, String)>,
    candidates: Vec<(String, String, bool)>,
    assignee_names: Vec<String>,
    subtasks: Vec<Task>,
    comments: Vec<CommentView>,
    activity: Vec<ActivityView>,
    time: Vec<TimeRow>,
    time_total: String,
    forms: TaskForms,
    can_update: bool,
    can_create: bool,
    can_comment: bool,
    can_delete: bool,
    can_track: bool,
    /// Whether the viewer follows the task (its comments, moves and due date changes).
    following: bool,
    /// The viewer's running timer when it runs on this page's work: (shown, seconds).
    timer_here: Option<(String, i64)>,
    /// Whether the viewer has a timer running on something else (starting here stops it).
    timer_elsewhere: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

async fn task_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: TaskId,
    forms: TaskForms,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<TaskPage> {
    let p = &access.principal;
    let detail = tasks::get(&state.db, p, id).await?;
    let task = detail.task;
    // A role may be allowed tasks without projects (customized roles): the page then leaves
    // out what needs the project.
    let can_projects = p.can(P::ProjectsRead);
    let project_name =
        if can_projects { projects::get(&state.db, p, task.project_id).await?.name } else { "Project".to_string() };
    // The parent picker offers the tasks the board shows (the current parent is added below).
    let board = tasks::board(&state.db, p, task.project_id, tasks::BOARD_COLUMN_CAP).await?;
    let columns: Vec<(String, String)> =
        board.iter().map(|c| (c.column.id.to_string(), c.column.name.clone())).collect();
    let mut parents: Vec<(String, String)> = board
        .iter()
        .flat_map(|c| c.tasks.iter())
        .filter(|t| t.id != id)
        .map(|t| (t.id.to_string(), t.title.clone()))
        .collect();
    if let Some(parent) = task.parent_id
        && !parents.iter().any(|(pid, _)| *pid == parent.to_string())
    {
        let title = tasks::get(&state.db, p, parent).await?.task.title;
        parents.push((parent.to_string(), title));
    }
    let members = if can_projects { projects::members(&state.db, p, task.project_id).await? } else { vec![] };
    let everyone = people(state, access).await?;
    let names = People::of(&everyone);
    let candidates: Vec<(String, String)> = everyone
        .iter()
        .filter(|m| m.status == "active" && m.role != Role::Client)
        .filter(|m| {
            matches!(m.role, Role::Owner | Role::Admin | Role::Manager)
                || members.iter().any(|pm| pm.user_id == m.user_id)
                || detail.assignees.contains(&m.user_id)
        })
        .map(|m| (m.user_id.to_string(), names.name(&m.user_id)))
        .collect();
    let assignee_names = detail.assignees.iter().map(|u| names.name(u)).collect();
    let column_name: HashMap<String, String> = columns.iter().cloned().collect();
    let task_title: HashMap<&str, &str> = parents.iter().map(|(id, title)| (id.as_str(), title.as_str())).collect();
    let parent_title = task.parent_id.and_then(|u| task_title.get(u.to_string().as_str()).map(|t| t.to_string()));
    let show = |field: &str, v: Option<String>| -> String {
        let v = v.unwrap_or_default();
        let shown = match field {
            "column" => column_name.get(&v).cloned(),
            "assignees" => Some(
                v.split(',').filter(|s| !s.is_empty()).map(|u| names.name_or_raw(u)).collect::<Vec<_>>().join(", "),
            ),
            "status" => word(&STATUS_WORDS, &v).map(str::to_string),
            "priority" => word(&PRIORITIES, &v).map(str::to_string),
            "visible_to_client" => word(&[("true", "Yes"), ("false", "No")], &v).map(str::to_string),
            "estimate_minutes" => v.parse().ok().map(duration),
            "parent" => task_title.get(v.as_str()).map(|t| shorten(t)),
            _ => None,
        };
        shown.unwrap_or_else(|| shorten(&v))
    };
    let log = tasks::activity_log(&state.db, p, id).await?;
    let activity = super::moves_once(log, |a| (None, a.field.clone(), a.occurred_at, a.actor_label.clone()))
        .into_iter()
        .map(|a| ActivityView {
            old: show(&a.field, a.old_value),
            new: show(&a.field, a.new_value),
            who: names.actor(a.actor_id, &a.actor_label),
            field: word(&CHANGE_WORDS, &a.field).map(str::to_string).unwrap_or_else(|| a.field.replace('_', " ")),
            at: access.when(a.occurred_at),
        })
        .collect();
    let comments = tasks::comments(&state.db, p, id)
        .await?
        .into_iter()
        .map(|c| CommentView {
            id: c.id.to_string(),
            deletable: p.can(P::CommentsCreate)
                && (p.can(P::ProjectsUpdate) || (c.author_id.is_some() && c.author_id == p.user_id())),
            author: c.author,
            body: c.body,
            client_visible: c.client_visible,
            at: access.when(c.created_at),
            edited: c.edited_at.is_some(),
        })
        .collect();
    let entries = time_entries::list(
        &state.db,
        p,
        &TimeFilter { project_id: None, task_id: Some(id.to_string()) },
        Page { limit: Some(crate::work::MAX_PAGE), offset: None },
    )
    .await?;
    let total: i64 = entries.iter().map(|e| e.minutes as i64).sum();
    let time = entries
        .into_iter()
        .map(|e| TimeRow {
            id: e.id.to_string(),
            who: names.name(&e.user_id),
            minutes: duration(e.minutes.into()),
            spent_on: e.spent_on.to_string(),
            deletable: p.can(P::TimeTrack) && time_entries::may_change(p, &e, "changed").is_ok(),
            billed: e.invoice_id.is_some(),
            approved: e.approved_at.is_some(),
            note: e.note,
        })
        .collect();
    let following = crate::work::tasks::following(&state.db, p, id).await?;
    let edit = forms.edit.clone().unwrap_or_else(|| TaskEdit::of(&task, &detail.assignees));
    let candidates = candidates
        .into_iter()
        .map(|(id, label): (String, String)| {
            let checked = edit.assignees.contains(&id);
            (id, label, checked)
        })
        .collect();
    Ok(TaskPage {
        csrf,
        org: OrgNav::of(access),
        project_name,
        parent_title,
        priority: super::priority_word(&task.priority),
        estimate: task.estimate_minutes.map(|m| duration(m.into())),
        edit,
        column_now: task.column_id.to_string(),
        statuses: STATUS_WORDS,
        priorities: PRIORITIES,
        columns,
        parents,
        candidates,
        assignee_names,
        subtasks: detail.subtasks,
        comments,
        activity,
        time,
        time_total: duration(total),
        forms,
        can_update: p.can(P::TasksUpdate),
        can_create: p.can(P::TasksCreate),
        can_comment: p.can(P::CommentsCreate),
        can_delete: p.can(P::TasksDelete),
        can_track: p.can(P::TimeTrack),
        following,
        timer_here: super::timesheet::timer_on(access, task.project_id.as_uuid(), Some(task.id.as_uuid())),
        timer_elsewhere: access.running_timer.is_some(),
        task,
        message,
        errors,
    })
}

async fn detail(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    page(&task_view(&state, csrf, &access, path_id(&id)?, TaskForms::default(), None, vec![]).await?)
}

#[allow(clippy::too_many_arguments)]
pub async fn task_failure(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: TaskId,
    forms: TaskForms,
    status: StatusCode,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<Response> {
    page_with_status(status, &task_view(state, csrf, access, id, forms, message, errors).await?)
}

/// After an action on the task page: back to it (at `anchor`), or it with the failure.
async fn task_result(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: TaskId,
    anchor: &str,
    forms: TaskForms,
    result: Result<(), impl Into<AppError>>,
) -> AppResult<Response> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/tasks/{id}#{anchor}", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            task_failure(state, csrf, access, id, forms, status, message, errors).await
        }
    }
}

const EDIT_FIELDS: [&str; 10] = [
    "title",
    "description",
    "status",
    "priority",
    "due_date",
    "estimate_minutes",
    "column_id",
    "parent_id",
    "visible_to_client",
    "assignee",
];

async fn update(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    // Every field but the assignees takes one value.
    let fields = FormFields::parse(&body, |k| EDIT_FIELDS.contains(&k))?.only_once(&EDIT_FIELDS[..9])?;
    let edit = TaskEdit {
        title: fields.get("title").to_string(),
        description: fields.get("description").to_string(),
        priority: fields.get("priority").to_string(),
        due_date: fields.get("due_date").to_string(),
        estimate_minutes: fields.get("estimate_minutes").to_string(),
        column_id: fields.get("column_id").to_string(),
        parent_id: fields.get("parent_id").to_string(),
        visible_to_client: fields.checked("visible_to_client"),
        assignees: fields.all("assignee"),
    };
    let result = async {
        let mut errors = Errors::default();
        // A duration as people type it ("2h", "1:30", "1h 30m"; a bare number is minutes).
        let estimate = match edit.estimate_minutes.trim() {
            "" => None,
            e => errors.check(crate::work::duration::parse_up_to("estimate_minutes", e, tasks::MAX_ESTIMATE_MINUTES)),
        };
        errors.into_result()?;
        let column = edit.column_id.trim();
        let input = TaskUpdate {
            project_id: None,
            column_id: (!column.is_empty()).then(|| column.to_string()),
            parent_id: Some(Some(edit.parent_id.trim().to_string())),
            title: Some(edit.title.clone()),
            description: Some(edit.description.clone()),
            // The status is the column (chosen above); a stray status field changes nothing.
            status: None,
            priority: Some(edit.priority.clone()),
            due_date: Some(Some(edit.due_date.trim().to_string())),
            // The form always sends the field: empty clears the estimate.
            estimate_minutes: Some(estimate),
            visible_to_client: Some(edit.visible_to_client),
            assignees: Some(
                edit.assignees.iter().map(|a| a.trim()).filter(|a| !a.is_empty()).map(str::to_string).collect(),
            ),
        };
        tasks::update(&state.db, &ctx, &access.principal, id, &input).await.map(|_| ()).map_err(AppError::from)
    }
    .await;
    let forms = TaskForms { edit: Some(edit), ..TaskForms::default() };
    task_result(&state, csrf, &access, id, "details", forms, result).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubtaskForm {
    #[serde(default)]
    title: String,
}

async fn create_subtask(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<SubtaskForm>,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    let parent = tasks::get(&state.db, &access.principal, id).await?.task;
    let input = TaskInput {
        project_id: parent.project_id.to_string(),
        parent_id: Some(id.to_string()),
        column_id: Some(parent.column_id.to_string()),
        title: form.title.clone(),
        ..TaskInput::default()
    };
    let r = tasks::create(&state.db, &ctx, &access.principal, &input).await.map(|_| ());
    let forms = TaskForms { subtask_title: form.title, ..TaskForms::default() };
    task_result(&state, csrf, &access, id, "subtasks", forms, r).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    client_visible: Option<String>,
}

async fn add_comment(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<CommentForm>,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    let input = CommentInput { body: form.body.clone(), client_visible: Some(form.client_visible.is_some()) };
    let r = tasks::add_comment(&state.db, &ctx, &access.principal, id, &input).await.map(|_| ());
    let forms = TaskForms { comment: form.body, ..TaskForms::default() };
    task_result(&state, csrf, &access, id, "comments", forms, r).await
}

async fn delete_comment(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, comment)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    let comment: CommentId = path_id(&comment)?;
    let r = tasks::delete_comment(&state.db, &ctx, &access.principal, id, comment).await;
    task_result(&state, csrf, &access, id, "comments", TaskForms::default(), r).await
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    let task = tasks::get(&state.db, &access.principal, id).await?.task;
    match tasks::delete(&state.db, &ctx, &access.principal, id).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/projects/{}", access.slug, task.project_id)).into_response()),
        Err(e) => task_result(&state, csrf, &access, id, "", TaskForms::default(), Err(e)).await,
    }
}
