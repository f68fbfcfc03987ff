//! Tasks, their activity and their comments.

use super::*;
use crate::work::tasks;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Only this project's tasks.
    #[param(value_type = Option<Uuid>)]
    pub project_id: Option<QueryId>,
    #[param(inline)]
    pub status: Option<TaskStatusFilter>,
    /// Only tasks assigned to this user id.
    #[param(value_type = Option<Uuid>)]
    pub assignee: Option<QueryId>,
    /// Matches the title (case-insensitive).
    pub q: Option<String>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, description = "A page of tasks, newest first", body = List<crate::work::tasks::Task>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn list_tasks(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = TaskFilter {
        project_id: query_id(q.project_id),
        status: q.status.map(|s| s.as_str().to_string()),
        assignee: query_id(q.assignee),
        q: q.q,
    };
    let items = tasks::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, None))
}

#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = TaskInput,
    description = "`project_id` must name a project the key sees, `column_id` a board column of that project, `parent_id` a task of it, and `assignees` active members who may work in it (Owners, Admins, Managers and the project's members); otherwise 422 naming the field.",
    responses((status = 201, description = "Created", body = Data<TaskDetail>)),
    security(("api_key" = ["tasks.create"])))]
pub async fn create_task(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<TaskInput>,
) -> AppResult<Response> {
    let t = tasks::create(&s.db, &ctx, &api.principal, &input).await?;
    let detail = tasks::get(&s.db, &api.principal, t.id).await?;
    Ok(created(format!("/api/v1/tasks/{}", t.id), detail))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "The task with its assignees and subtasks", body = Data<TaskDetail>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn get_task(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(tasks::get(&s.db, &api.principal, ids.get::<TaskId>("task")?).await?))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/activity", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "The task's history: one entry per changed field, with its old and new value, oldest first", body = Data<Vec<tasks::Activity>>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn task_activity(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(tasks::activity_log(&s.db, &api.principal, ids.get::<TaskId>("task")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/tasks/{task}", tag = "tasks", request_body = TaskUpdate,
    description = "`project_id` must be the task's own project, `column_id` a board column of it, `parent_id` another task of it that is not one of this task's subtasks (at most five levels of subtasks), and `assignees` active members who may work in it; otherwise 422 naming the field.",
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "Updated (absent fields are unchanged; `assignees` replaces the list)", body = Data<TaskDetail>)),
    security(("api_key" = ["tasks.update"])))]
pub async fn update_task(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<TaskUpdate>,
) -> AppResult<Response> {
    let id: TaskId = ids.get("task")?;
    tasks::update(&s.db, &ctx, &api.principal, id, &input).await?;
    Ok(ok(tasks::get(&s.db, &api.principal, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{task}", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 204, description = "Deleted with its subtasks and comments (refused with 409 while it has files)")),
    security(("api_key" = ["tasks.delete"])))]
pub async fn delete_task(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    tasks::delete(&s.db, &ctx, &api.principal, ids.get("task")?).await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/comments", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id"), PageQuery),
    responses((status = 200, description = "The task's comments, oldest first", body = List<Comment>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn list_comments(
    State(s): State<AppState>,
    api: ApiAccess,
    ids: PathIds,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let all = tasks::comments(&s.db, &api.principal, ids.get("task")?).await?;
    Ok(listed_whole(all, page))
}

#[utoipa::path(post, path = "/api/v1/tasks/{task}/comments", tag = "tasks", request_body = CommentInput,
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 201, description = "Created", body = Data<Comment>)),
    security(("api_key" = ["comments.create"])))]
pub async fn create_comment(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<CommentInput>,
) -> AppResult<Response> {
    let task: TaskId = ids.get("task")?;
    let c = tasks::add_comment(&s.db, &ctx, &api.principal, task, &input).await?;
    Ok(created(format!("/api/v1/tasks/{task}/comments/{}", c.id), c))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/comments/{comment}", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id"), ("comment" = Uuid, Path, description = "Comment id")),
    responses((status = 200, description = "The comment", body = Data<Comment>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn get_comment(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    let id: CommentId = ids.get("comment")?;
    let all = tasks::comments(&s.db, &api.principal, ids.get("task")?).await?;
    all.into_iter().find(|c| c.id == id).map(ok).ok_or(AppError::not_found())
}

#[utoipa::path(patch, path = "/api/v1/tasks/{task}/comments/{comment}", tag = "tasks", request_body = CommentUpdate,
    params(("task" = Uuid, Path, description = "Task id"), ("comment" = Uuid, Path, description = "Comment id")),
    responses((status = 200, description = "Updated (absent fields are unchanged; 403 unless the key creator wrote it)", body = Data<Comment>)),
    security(("api_key" = ["comments.create"])))]
pub async fn update_comment(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<CommentUpdate>,
) -> AppResult<Response> {
    let (task, comment) = (ids.get("task")?, ids.get("comment")?);
    Ok(ok(tasks::update_comment(&s.db, &ctx, &api.principal, task, comment, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{task}/comments/{comment}", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id"), ("comment" = Uuid, Path, description = "Comment id")),
    responses((status = 204, description = "Deleted (the key creator's own comments; anyone's with projects.update)")),
    security(("api_key" = ["comments.create"])))]
pub async fn delete_comment(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    tasks::delete_comment(&s.db, &ctx, &api.principal, ids.get("task")?, ids.get("comment")?).await?;
    Ok(no_content())
}
