//! A project's board: creating tasks in its columns and moving them between columns (a form
//! per card; `board.js` posts the same form when a card is dragged and asks for JSON). A
//! failure shows the project's page again with what was typed.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::projects::{ProjectForms, project_failure};
use super::{form_id, path_id};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError};
use crate::platform::ids::{ProjectId, TaskId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::failure;
use crate::tenancy::guard::OrgAccess;
use crate::work::projects;
use crate::work::tasks::{self, TaskInput, TaskUpdate};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(POST "/o/{org}/projects/{project}/tasks", Surface::Web, Access::Org(P::TasksCreate), create),
        route!(POST "/o/{org}/tasks/{task}/move", Surface::Web, Access::Org(P::TasksUpdate), move_task),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTaskForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    column_id: String,
    #[serde(default)]
    visible_to_client: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, project)): Path<(String, String)>,
    Form(form): Form<NewTaskForm>,
) -> AppResult<Response> {
    let project: ProjectId = path_id(&project)?;
    let column = form.column_id.trim();
    let input = TaskInput {
        project_id: project.to_string(),
        column_id: (!column.is_empty()).then(|| column.to_string()),
        title: form.title.clone(),
        visible_to_client: Some(form.visible_to_client.is_some()),
        ..TaskInput::default()
    };
    match tasks::create(&state.db, &ctx, &access.principal, &input).await {
        Ok(_) => Ok(Redirect::to(&format!("/o/{}/projects/{project}", access.slug)).into_response()),
        // The project in the address is not one the caller may see.
        Err(DomainError::Invalid(v)) if v.iter().any(|f| f.field == "project_id") => Err(AppError::not_found()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let forms = ProjectForms { task_title: form.title, task_column: form.column_id, ..ProjectForms::default() };
            project_failure(&state, csrf, &access, project, forms, status, message, errors).await
        }
    }
}

// ---- moving on the board ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveForm {
    #[serde(default)]
    column_id: String,
}

/// `board.js` asks for JSON: it gets the project's new task counts (or a problem+json error)
/// instead of the page, to update the header's "N of M tasks done" with the move.
fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"))
}

async fn move_task(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    headers: HeaderMap,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<MoveForm>,
) -> AppResult<Response> {
    let id: TaskId = path_id(&id)?;
    let result = async {
        let column: crate::platform::ids::ColumnId =
            form_id("column_id", &form.column_id)?.ok_or_else(|| AppError::field("column_id", "choose a column"))?;
        let input = TaskUpdate { column_id: Some(column.to_string()), ..TaskUpdate::default() };
        tasks::update(&state.db, &ctx, &access.principal, id, &input).await.map_err(AppError::from)
    }
    .await;
    match result {
        Ok(task) if wants_json(&headers) => {
            let p = &access.principal;
            let progress = if p.can(P::ProjectsRead) {
                let today = crate::work::today(&state.db, p, state.clock.now()).await?;
                projects::progress(&state.db, p, &[task.project_id], today).await?.remove(&task.project_id)
            } else {
                None
            }
            .unwrap_or_default();
            let body = serde_json::json!({
                "progress": { "done": progress.done, "total": progress.total, "overdue": progress.overdue }
            });
            Ok(axum::Json(body).into_response())
        }
        Ok(task) => Ok(Redirect::to(&format!("/o/{}/projects/{}", access.slug, task.project_id)).into_response()),
        Err(e) if wants_json(&headers) => Err(e),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let task = tasks::get(&state.db, &access.principal, id).await?.task;
            project_failure(&state, csrf, &access, task.project_id, ProjectForms::default(), status, message, errors)
                .await
        }
    }
}
