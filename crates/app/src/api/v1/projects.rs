//! Projects and their board columns.

use super::*;
use crate::work::project_copy::{self, ProjectCopy};
use crate::work::projects;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    /// Matches the name (case-insensitive).
    pub q: Option<String>,
    /// Default: every status but `archived`.
    #[param(inline)]
    pub status: Option<ProjectStatusFilter>,
    /// Only this client's projects.
    #[param(value_type = Option<Uuid>)]
    pub client_id: Option<QueryId>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(ProjectQuery),
    responses((status = 200, description = "A page of projects", body = List<Project>)),
    security(("api_key" = ["projects.read"])))]
pub async fn list_projects(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter =
        ProjectFilter { q: q.q, status: q.status.map(|s| s.as_str().to_string()), client_id: query_id(q.client_id) };
    let (items, total) = projects::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = ProjectInput,
    description = "`client_id` must name a client of the organization, and `due_date` must not be before `start_date`; otherwise 422 naming the field.",
    responses((status = 201, description = "Created, with the default board columns", body = Data<Project>)),
    security(("api_key" = ["projects.create"])))]
pub async fn create_project(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ProjectInput>,
) -> AppResult<Response> {
    let p = projects::create(&s.db, &ctx, &api.principal, &input).await?;
    Ok(created(format!("/api/v1/projects/{}", p.id), p))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects",
    params(("project" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "The project", body = Data<Project>)),
    security(("api_key" = ["projects.read"])))]
pub async fn get_project(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(projects::get(&s.db, &api.principal, ids.get::<ProjectId>("project")?).await?))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/budget", tag = "projects",
    description = "What the project has used of its budget: every billable time entry at the rate it was recorded with, each rounded to the minor unit (as the time report and invoices round it), and, when the project has `budget_counts_expenses`, its billable expenses in the organization's currency (`expenses_minor`). Billable entries without a rate count as nothing and are counted in `unrated_entries`; billable expenses in another currency likewise, in `uncounted_expenses`. A project without a budget answers with `budget_minor` and `remaining_minor` null.",
    params(("project" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "The budget and what is used of it", body = Data<projects::ProjectBudget>)),
    security(("api_key" = ["projects.read"])))]
pub async fn get_project_budget(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(projects::budget(&s.db, &api.principal, ids.get::<ProjectId>("project")?).await?))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/copy", tag = "projects", request_body = ProjectCopy,
    description = "A new project made from this one: its description, budget, rate and billable default, its board's columns, and every task and subtask (title, description, priority, estimate, place, whether the client sees it), each task in the board's first `todo` column. Time, comments, files, invoices, assignees and followers are not copied, and the copy is not visible to the client until changed. Due dates keep their distance from the start when both projects have a `start_date` (a date that would leave the years 1 to 9999 is left empty), and are empty otherwise. Needs `tasks.create` too, and `projects.update` with `with_people`. A project of more than 5,000 tasks is refused with 409, and `client_id` must name a client of the organization (422 naming the field).",
    params(("project" = Uuid, Path, description = "The project to copy")),
    responses((status = 201, description = "The copy", body = Data<Project>)),
    security(("api_key" = ["projects.create"])))]
pub async fn copy_project(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<ProjectCopy>,
) -> AppResult<Response> {
    let copied = project_copy::copy(&s.db, &ctx, &api.principal, ids.get("project")?, &input).await?;
    Ok(created(format!("/api/v1/projects/{}", copied.project.id), copied.project))
}

#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", request_body = ProjectUpdate,
    description = "`client_id` must name a client of the organization, and the due date must not be before the start date (a date sent alone is compared with the project's other one); otherwise 422 naming the field.",
    params(("project" = Uuid, Path, description = "Project id")),
    responses((status = 200, description = "Updated (absent fields are unchanged)", body = Data<Project>)),
    security(("api_key" = ["projects.update"])))]
pub async fn update_project(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<ProjectUpdate>,
) -> AppResult<Response> {
    Ok(ok(projects::update(&s.db, &ctx, &api.principal, ids.get("project")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects",
    params(("project" = Uuid, Path, description = "Project id")),
    responses((status = 204, description = "Deleted with its tasks and time (refused with 409 while it has files)")),
    security(("api_key" = ["projects.delete"])))]
pub async fn delete_project(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    projects::delete(&s.db, &ctx, &api.principal, ids.get("project")?).await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/columns", tag = "projects",
    params(("project" = Uuid, Path, description = "Project id"), PageQuery),
    responses((status = 200, description = "The project's board columns in order (for a task's `column_id`)", body = List<Column>)),
    security(("api_key" = ["projects.read"])))]
pub async fn list_columns(
    State(s): State<AppState>,
    api: ApiAccess,
    ids: PathIds,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let cols = projects::list_columns(&s.db, &api.principal, ids.get("project")?).await?;
    Ok(listed_whole(cols, page))
}
