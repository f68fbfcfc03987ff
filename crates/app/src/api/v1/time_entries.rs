//! Time entries.

use super::*;
use crate::work::time_entries;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimeQuery {
    /// Only this project's entries.
    #[param(value_type = Option<Uuid>)]
    pub project_id: Option<QueryId>,
    /// Only this task's entries.
    #[param(value_type = Option<Uuid>)]
    pub task_id: Option<QueryId>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/time-entries", tag = "time", params(TimeQuery),
    responses((status = 200, description = "A page of time entries, most recent first", body = List<TimeEntry>)),
    security(("api_key" = ["projects.read"])))]
pub async fn list_time_entries(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<TimeQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = TimeFilter { project_id: query_id(q.project_id), task_id: query_id(q.task_id) };
    let items = time_entries::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, None))
}

#[utoipa::path(post, path = "/api/v1/time-entries", tag = "time", request_body = TimeInput,
    description = "`project_id` must name a project the key sees and `task_id` a task of it; otherwise 422 naming the field. A key that no member created records no time (403).",
    responses((status = 201, description = "Recorded for the member who created the API key", body = Data<TimeEntry>)),
    security(("api_key" = ["time.track"])))]
pub async fn create_time_entry(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<TimeInput>,
) -> AppResult<Response> {
    let e = time_entries::create(&s.db, &ctx, &api.principal, &input).await?;
    Ok(created(format!("/api/v1/time-entries/{}", e.id), e))
}

#[utoipa::path(get, path = "/api/v1/time-entries/{time_entry}", tag = "time",
    params(("time_entry" = Uuid, Path, description = "Time entry id")),
    responses((status = 200, description = "The time entry", body = Data<TimeEntry>)),
    security(("api_key" = ["projects.read"])))]
pub async fn get_time_entry(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(time_entries::get(&s.db, &api.principal, ids.get("time_entry")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/time-entries/{time_entry}", tag = "time", request_body = TimeUpdate,
    description = "`project_id` must be the entry's own project and `task_id` a task of it; otherwise 422 naming the field.",
    params(("time_entry" = Uuid, Path, description = "Time entry id")),
    responses((status = 200, description = "Updated (absent fields are unchanged; an empty `task_id` detaches it from its task; \
        the key creator's own entries, anyone's with projects.update)", body = Data<TimeEntry>)),
    security(("api_key" = ["time.track"])))]
pub async fn update_time_entry(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<TimeUpdate>,
) -> AppResult<Response> {
    Ok(ok(time_entries::update(&s.db, &ctx, &api.principal, ids.get("time_entry")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/time-entries/{time_entry}", tag = "time",
    params(("time_entry" = Uuid, Path, description = "Time entry id")),
    responses((status = 204, description = "Deleted (the key creator's own entries; anyone's with projects.update)")),
    security(("api_key" = ["time.track"])))]
pub async fn delete_time_entry(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    time_entries::delete(&s.db, &ctx, &api.principal, ids.get("time_entry")?).await?;
    Ok(no_content())
}
