//! `/api/v1`: the work domain over HTTP for API keys.
//!
//! Handlers are thin: parse (`ApiJson`, `ApiQuery`, `PathIds`), call the domain service with the
//! key's verified principal (the service checks the permission again, opens the tenant door,
//! applies the project scope and writes the audit event), and shape the response. Every
//! successful body is `{"data": …}`; lists add `"pagination"`. Creating POSTs answer 201 with a
//! `Location` header and the same representation a GET of that location returns.
//!
//! Each handler carries its `#[utoipa::path]`; [`ApiDoc`] collects them into the OpenAPI
//! document, and a test checks it against the route table both ways.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiQuery, PathIds};
use super::guard::ApiAccess;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::ids::{ClientId, ProjectId};
use crate::route;
use crate::state::AppState;
use crate::work::clients::{self, Client, ClientFilter, ClientInput, ClientUpdate};
use crate::work::files::{self, FileFilter, FileMeta, FileUpdate};
use crate::work::invoices::{self, InvoiceDetail, InvoiceFilter, InvoiceInput, InvoiceUpdate};
use crate::work::projects::{self, Column, Project, ProjectFilter, ProjectInput, ProjectUpdate};
use crate::work::tasks::{self, Comment, CommentInput, CommentUpdate, TaskDetail, TaskFilter, TaskInput, TaskUpdate};
use crate::work::time_entries::{self, TimeEntry, TimeFilter, TimeInput, TimeUpdate};
use crate::work::{MAX_PAGE, Page, fields};

#[rustfmt::skip]
pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/api/v1/openapi.json", Surface::Api, Access::Public, openapi_json),

        route!(GET "/api/v1/clients", Surface::Api, Access::Api(P::ClientsRead), list_clients),
        route!(POST "/api/v1/clients", Surface::Api, Access::Api(P::ClientsCreate), create_client),
        route!(GET "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsRead), get_client),
        route!(PATCH "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsUpdate), update_client),
        route!(DELETE "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsDelete), delete_client),
        route!(POST "/api/v1/clients/{client}/archive", Surface::Api, Access::Api(P::ClientsUpdate), archive_client),
        route!(POST "/api/v1/clients/{client}/restore", Surface::Api, Access::Api(P::ClientsUpdate), restore_client),

        route!(GET "/api/v1/projects", Surface::Api, Access::Api(P::ProjectsRead), list_projects),
        route!(POST "/api/v1/projects", Surface::Api, Access::Api(P::ProjectsCreate), create_project),
        route!(GET "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsRead), get_project),
        route!(PATCH "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsUpdate), update_project),
        route!(DELETE "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsDelete), delete_project),
        route!(GET "/api/v1/projects/{project}/columns", Surface::Api, Access::Api(P::ProjectsRead), list_columns),

        route!(GET "/api/v1/tasks", Surface::Api, Access::Api(P::TasksRead), list_tasks),
        route!(POST "/api/v1/tasks", Surface::Api, Access::Api(P::TasksCreate), create_task),
        route!(GET "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksRead), get_task),
        route!(GET "/api/v1/tasks/{task}/activity", Surface::Api, Access::Api(P::TasksRead), task_activity),
        route!(PATCH "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksUpdate), update_task),
        route!(DELETE "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksDelete), delete_task),
        route!(GET "/api/v1/tasks/{task}/comments", Surface::Api, Access::Api(P::TasksRead), list_comments),
        route!(POST "/api/v1/tasks/{task}/comments", Surface::Api, Access::Api(P::CommentsCreate), create_comment),
        route!(GET "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::TasksRead), get_comment),
        route!(PATCH "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::CommentsCreate), update_comment),
        route!(DELETE "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::CommentsCreate), delete_comment),

        route!(GET "/api/v1/time-entries", Surface::Api, Access::Api(P::ProjectsRead), list_time_entries),
        route!(POST "/api/v1/time-entries", Surface::Api, Access::Api(P::TimeTrack), create_time_entry),
        route!(GET "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::ProjectsRead), get_time_entry),
        route!(PATCH "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::TimeTrack), update_time_entry),
        route!(DELETE "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::TimeTrack), delete_time_entry),

        route!(GET "/api/v1/invoices", Surface::Api, Access::Api(P::InvoicesRead), list_invoices),
        route!(POST "/api/v1/invoices", Surface::Api, Access::Api(P::InvoicesCreate), create_invoice),
        route!(GET "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesRead), get_invoice),
        route!(PATCH "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesUpdate), update_invoice),
        route!(DELETE "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesDelete), delete_invoice),
        route!(POST "/api/v1/invoices/{invoice}/send", Surface::Api, Access::Api(P::InvoicesUpdate), send_invoice),
        route!(POST "/api/v1/invoices/{invoice}/pay", Surface::Api, Access::Api(P::InvoicesUpdate), pay_invoice),
        route!(POST "/api/v1/invoices/{invoice}/void", Surface::Api, Access::Api(P::InvoicesUpdate), void_invoice),

        route!(GET "/api/v1/files", Surface::Api, Access::Api(P::FilesRead), list_files),
        upload_route(),
        route!(GET "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesRead), get_file),
        route!(PATCH "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesUpload), update_file),
        route!(DELETE "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesDelete), delete_file),
    ]
}

// ---------------------------------------------------------------------------------------------
// Envelopes

/// A single resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pagination {
    /// The page size used (requests above 100 are capped at 100).
    pub limit: i64,
    pub offset: i64,
    /// Items matching the filters in all pages; null where the list is not counted (tasks,
    /// time entries and files, which are read in pages only).
    pub total: Option<i64>,
    /// The offset of the next page, or null on the last page. Uncounted lists give one while a
    /// page is full, so the last page may be empty.
    pub next_offset: Option<i64>,
}

fn ok<T: Serialize>(data: T) -> Response {
    Json(Data { data }).into_response()
}

fn created<T: Serialize>(location: String, data: T) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(Data { data })).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn listed<T: Serialize>(items: Vec<T>, page: Page, total: Option<i64>) -> Response {
    let (limit, offset) = (page.limit(), page.offset());
    let end = offset + items.len() as i64;
    let next_offset = match total {
        Some(total) => (end < total).then_some(end),
        None => (items.len() as i64 == limit).then_some(end),
    };
    Json(List { data: items, pagination: Pagination { limit, offset, total, next_offset } }).into_response()
}

/// A page of a list the service returns whole (short, per-parent lists).
fn listed_whole<T: Serialize>(items: Vec<T>, page: Page) -> Response {
    let total = items.len() as i64;
    let slice: Vec<T> = items.into_iter().skip(page.offset() as usize).take(page.limit() as usize).collect();
    listed(slice, page, Some(total))
}

fn page(limit: Option<i64>, offset: Option<i64>) -> AppResult<Page> {
    if limit.is_some_and(|l| l < 1) {
        return Err(AppError::field("limit", format!("must be at least 1 (at most {MAX_PAGE} are returned)")));
    }
    if offset.is_some_and(|o| o < 0) {
        return Err(AppError::field("offset", "must not be negative"));
    }
    Ok(Page { limit, offset })
}

/// Pagination only (lists of one parent).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// An integer query parameter. Like a JSON Schema `integer`, a whole number may be written with
/// a fraction of zero or an exponent (`5.0`, `1e2`).
fn query_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let raw = String::deserialize(d)?;
    if let Ok(i) = raw.parse::<i64>() {
        return Ok(Some(i));
    }
    // Digits, a sign, a point and an exponent only: `f64` would also read `inf` and `NaN`.
    let numeric = raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    let whole = raw.parse::<f64>().ok().filter(|_| numeric).and_then(fields::whole_number);
    whole.map(Some).ok_or_else(|| D::Error::custom("must be a whole number"))
}

/// An id in a query string: a UUID in its hyphenated form, as the document's `format: uuid`
/// says (an empty or otherwise malformed id is refused, not read as "no filter").
#[derive(Debug, Clone)]
pub struct QueryId(String);

impl<'de> Deserialize<'de> for QueryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if fields::is_hyphenated_uuid(&raw) {
            Ok(QueryId(raw))
        } else {
            Err(serde::de::Error::custom("is not a valid id"))
        }
    }
}

fn query_id(id: Option<QueryId>) -> Option<String> {
    id.map(|QueryId(s)| s)
}

/// A closed set of values of a query parameter (an `enum` in the document).
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every value (a test checks that each reads back from its text).
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }
    };
}

closed_set!(
    /// Which clients a list shows.
    ClientStatusFilter { Active = "active", Archived = "archived", All = "all" }
);
closed_set!(
    /// Which projects a list shows: one status, or all of them.
    ProjectStatusFilter {
        Planned = "planned",
        Active = "active",
        OnHold = "on_hold",
        Completed = "completed",
        Archived = "archived",
        All = "all",
    }
);
closed_set!(
    /// A task status to filter by.
    TaskStatusFilter { Todo = "todo", InProgress = "in_progress", Blocked = "blocked", Done = "done" }
);
closed_set!(
    /// An invoice status to filter by (`overdue`: sent and past its due date).
    InvoiceStatusFilter { Draft = "draft", Sent = "sent", Paid = "paid", Void = "void", Overdue = "overdue" }
);

// ---------------------------------------------------------------------------------------------
// OpenAPI

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::document()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ClientFlow API",
        version = "1",
        description = "Clients, projects, tasks, time, invoices and files of one organization, for an \
            organization API key (`Authorization: Bearer cf_live_…`). Each operation's security \
            requirement names the permission the key needs. Errors are RFC 9457 problem documents \
            (`application/problem+json`) whose `errors` name the offending fields. Lists take \
            `limit` (at least 1; a page holds at most 100) and `offset`. POST requests accept an \
            `Idempotency-Key`. PATCH changes only the fields sent: `null` clears a field that may be \
            empty and is refused for any other. Every request counts against rate limits (429 with \
            `Retry-After`)."
    ),
    paths(
        openapi_json,
        list_clients, create_client, get_client, update_client, delete_client, archive_client, restore_client,
        list_projects, create_project, get_project, update_project, delete_project, list_columns,
        list_tasks, create_task, get_task, task_activity, update_task, delete_task, list_comments, create_comment,
        get_comment,
        update_comment, delete_comment,
        list_time_entries, create_time_entry, get_time_entry, update_time_entry, delete_time_entry,
        list_invoices, create_invoice, get_invoice, update_invoice, delete_invoice, send_invoice, pay_invoice,
        void_invoice,
        list_files, upload_file, get_file, update_file, delete_file,
    ),
    tags(
        (name = "clients", description = "The organization's clients"),
        (name = "projects", description = "Projects (Member-role keys see the projects of the member who created the key)"),
        (name = "tasks", description = "Tasks, their assignees, subtasks and comments"),
        (name = "time", description = "Time entries"),
        (name = "invoices", description = "Invoices: drafts are editable; send assigns the number"),
        (name = "files", description = "Uploads, file metadata and short-lived download links"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

// ---------------------------------------------------------------------------------------------
// Clients

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    /// Matches name, company or email (case-insensitive).
    pub q: Option<String>,
    /// Default `active`.
    #[param(inline)]
    pub status: Option<ClientStatusFilter>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(ClientQuery),
    responses((status = 200, description = "A page of clients", body = List<Client>)),
    security(("api_key" = ["clients.read"])))]
pub async fn list_clients(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<ClientQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = ClientFilter { q: q.q, status: q.status.map(|s| s.as_str().to_string()) };
    let (items, total) = clients::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(post, path = "/api/v1/clients", tag = "clients", request_body = ClientInput,
    responses((status = 201, description = "Created", body = Data<Client>)),
    security(("api_key" = ["clients.create"])))]
pub async fn create_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ClientInput>,
) -> AppResult<Response> {
    let c = clients::create(&s.db, &ctx, &api.principal, &input).await?;
    Ok(created(format!("/api/v1/clients/{}", c.id), c))
}

#[utoipa::path(get, path = "/api/v1/clients/{client}", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "The client", body = Data<Client>)),
    security(("api_key" = ["clients.read"])))]
pub async fn get_client(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(clients::get(&s.db, &api.principal, ids.get::<ClientId>("client")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/clients/{client}", tag = "clients", request_body = ClientUpdate,
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Updated (absent fields are unchanged)", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn update_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<ClientUpdate>,
) -> AppResult<Response> {
    Ok(ok(clients::update(&s.db, &ctx, &api.principal, ids.get("client")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/clients/{client}", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 204, description = "Deleted (refused with 409 while it has projects, invoices or portal users)")),
    security(("api_key" = ["clients.delete"])))]
pub async fn delete_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    clients::delete(&s.db, &ctx, &api.principal, ids.get("client")?).await?;
    Ok(no_content())
}

#[utoipa::path(post, path = "/api/v1/clients/{client}/archive", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Archived", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn archive_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    Ok(ok(clients::set_archived(&s.db, &ctx, &api.principal, ids.get("client")?, true).await?))
}

#[utoipa::path(post, path = "/api/v1/clients/{client}/restore", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Active again", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn restore_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    Ok(ok(clients::set_archived(&s.db, &ctx, &api.principal, ids.get("client")?, false).await?))
}

// ---------------------------------------------------------------------------------------------
// Projects

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

// ---------------------------------------------------------------------------------------------
// Tasks and comments

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
    Ok(ok(tasks::get(&s.db, &api.principal, ids.get::<Uuid>("task")?).await?))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/activity", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id")),
    responses((status = 200, description = "The task's history: one entry per changed field, with its old and new value, oldest first", body = Data<Vec<tasks::Activity>>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn task_activity(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(tasks::activity_log(&s.db, &api.principal, ids.get::<Uuid>("task")?).await?))
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
    let id: Uuid = ids.get("task")?;
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
    let task: Uuid = ids.get("task")?;
    let c = tasks::add_comment(&s.db, &ctx, &api.principal, task, &input).await?;
    Ok(created(format!("/api/v1/tasks/{task}/comments/{}", c.id), c))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/comments/{comment}", tag = "tasks",
    params(("task" = Uuid, Path, description = "Task id"), ("comment" = Uuid, Path, description = "Comment id")),
    responses((status = 200, description = "The comment", body = Data<Comment>)),
    security(("api_key" = ["tasks.read"])))]
pub async fn get_comment(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    let id: Uuid = ids.get("comment")?;
    let all = tasks::comments(&s.db, &api.principal, ids.get("task")?).await?;
    all.into_iter().find(|c| c.id == id).map(ok).ok_or(AppError::NotFound)
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

// ---------------------------------------------------------------------------------------------
// Time entries

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

// ---------------------------------------------------------------------------------------------
// Invoices

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// Only this client's invoices.
    #[param(value_type = Option<Uuid>)]
    pub client_id: Option<QueryId>,
    #[param(inline)]
    pub status: Option<InvoiceStatusFilter>,
    /// An invoice number (`42` or `#42`) or part of the client's name or company
    /// (case-insensitive).
    #[param(max_length = 200)]
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

#[utoipa::path(get, path = "/api/v1/invoices", tag = "invoices", params(InvoiceQuery),
    responses((status = 200, description = "A page of invoices, newest first", body = List<crate::work::invoices::Invoice>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn list_invoices(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter =
        InvoiceFilter { client_id: query_id(q.client_id), status: q.status.map(|s| s.as_str().to_string()), q: q.q };
    let (items, total) = invoices::list(&s.db, s.clock.now(), &api.principal, &filter, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(post, path = "/api/v1/invoices", tag = "invoices", request_body = InvoiceInput,
    description = "`client_id` must name a client of the organization, `due_date` must not be before `issue_date`, and the total (lines plus tax) must fit in 2^63 - 1 minor units; otherwise 422 naming the field.",
    responses((status = 201, description = "Created as a draft", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.create"])))]
pub async fn create_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<InvoiceInput>,
) -> AppResult<Response> {
    let inv = invoices::create(&s.db, &ctx, &api.principal, &input).await?;
    let detail = invoices::get(&s.db, ctx.now, &api.principal, inv.id).await?;
    Ok(created(format!("/api/v1/invoices/{}", inv.id), detail))
}

#[utoipa::path(get, path = "/api/v1/invoices/{invoice}", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice with its lines", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn get_invoice(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(invoices::get(&s.db, s.clock.now(), &api.principal, ids.get("invoice")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/invoices/{invoice}", tag = "invoices", request_body = InvoiceUpdate,
    description = "Only drafts change (409 once sent). `client_id` must name a client of the organization, the due date must not be before the issue date (a date sent alone is compared with the invoice's other one), and the total must fit in 2^63 - 1 minor units; otherwise 422 naming the field.",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Updated draft (409 once sent; `lines` replaces the lines)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn update_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<InvoiceUpdate>,
) -> AppResult<Response> {
    let id: Uuid = ids.get("invoice")?;
    invoices::update(&s.db, &ctx, &api.principal, id, &input).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/invoices/{invoice}", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 204, description = "Deleted draft (409 once sent: void it instead)")),
    security(("api_key" = ["invoices.delete"])))]
pub async fn delete_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    invoices::delete(&s.db, &ctx, &api.principal, ids.get("invoice")?).await?;
    Ok(no_content())
}

async fn transition(s: &AppState, api: &ApiAccess, ctx: &Context, ids: &PathIds, action: &str) -> AppResult<Response> {
    let id: Uuid = ids.get("invoice")?;
    invoices::transition(&s.db, ctx, &api.principal, id, action).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/send", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Sent: numbered and frozen (409 unless a draft with lines)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn send_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    transition(&s, &api, &ctx, &ids, "send").await
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/pay", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Marked paid (409 unless sent)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn pay_invoice(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    transition(&s, &api, &ctx, &ids, "pay").await
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/void", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Voided (409 once paid or void)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn void_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    transition(&s, &api, &ctx, &ids, "void").await
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Only this project's files.
    #[param(value_type = Option<Uuid>)]
    pub project_id: Option<QueryId>,
    /// Only this task's files.
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

/// A file's metadata with a download link. The link is a bearer capability, so it is only
/// handed out one file at a time (never in lists) and expires within minutes.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileWithLink {
    #[serde(flatten)]
    pub file: FileMeta,
    /// Downloads the file without an API key until `download_url_expires_at`.
    pub download_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub download_url_expires_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(FileQuery),
    responses((status = 200, description = "A page of file metadata, newest first", body = List<FileMeta>)),
    security(("api_key" = ["files.read"])))]
pub async fn list_files(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = FileFilter { project_id: query_id(q.project_id), task_id: query_id(q.task_id) };
    let items = files::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, None))
}

fn upload_route() -> RouteDef {
    let mut r = route!(POST "/api/v1/files", Surface::Api, Access::Api(P::FilesUpload), upload_file);
    // Like the web upload: the handler counts the file against `files.max_upload_bytes`; the
    // global body limit still caps the whole request.
    r.handler = r.handler.layer(axum::extract::DefaultBodyLimit::disable());
    r
}

/// The parts of `POST /api/v1/files` (`multipart/form-data`); any other part is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the document's description of the parts `receive_upload` reads
pub struct FileUploadForm {
    /// The file (its name is the part's filename). PDF, images, Office documents, ZIP or text,
    /// decided from the bytes; at most `files.max_upload_bytes`.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The project the file belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub project_id: String,
    /// A task of that project; empty for none.
    #[schema(value_type = Option<String>, format = "uuid-or-empty", nullable = false)]
    pub task_id: Option<String>,
    /// `true` shows the file to the client in the portal (default `false`).
    #[schema(nullable = false)]
    pub shared_with_client: Option<bool>,
}

/// A problem naming a part of the upload, with any status.
fn upload_problem(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    super::extract::problem(status, field, message).into_response()
}

struct ReceivedUpload {
    name: String,
    bytes: Vec<u8>,
    project_id: String,
    task_id: Option<String>,
    shared: bool,
}

async fn receive_upload(mut multipart: axum::extract::Multipart, max: usize) -> Result<ReceivedUpload, Response> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            upload_problem(StatusCode::PAYLOAD_TOO_LARGE, "file", format!("is larger than {max} bytes"))
        } else {
            upload_problem(
                StatusCode::BAD_REQUEST,
                "body",
                format!("is not a readable multipart body: {}", e.body_text()),
            )
        }
    };
    let (mut file, mut project_id, mut task_id, mut shared) = (None, None, None, false);
    while let Some(mut field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "file", "only one file per request"));
                }
                let file_name = field.file_name().unwrap_or("").to_string();
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
                    // Counted as it arrives: a too-large file is refused without holding it.
                    if bytes.len() + chunk.len() > max {
                        return Err(upload_problem(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "file",
                            format!("is larger than {max} bytes"),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((file_name, bytes));
            }
            "project_id" => project_id = Some(field.text().await.map_err(unreadable)?),
            "task_id" => task_id = Some(field.text().await.map_err(unreadable)?),
            "shared_with_client" => {
                shared = match field.text().await.map_err(unreadable)?.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(upload_problem(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "shared_with_client",
                            "must be true or false",
                        ));
                    }
                }
            }
            other => {
                let field = if other.is_empty() { "body" } else { other };
                return Err(upload_problem(StatusCode::UNPROCESSABLE_ENTITY, field, "is not an accepted part"));
            }
        }
    }
    let (name, bytes) = file.ok_or_else(|| upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "file", "is required"))?;
    let project_id =
        project_id.ok_or_else(|| upload_problem(StatusCode::UNPROCESSABLE_ENTITY, "project_id", "is required"))?;
    Ok(ReceivedUpload { name, bytes, project_id, task_id, shared })
}

#[utoipa::path(post, path = "/api/v1/files", tag = "files",
    description = "`project_id` must name a project the key sees and `task_id` a task of it (422 naming the part otherwise); the file's type is decided from its bytes (415) and its size is limited (413).",
    request_body(content = FileUploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored (encrypted); a GET of the Location issues a download link", body = Data<FileMeta>)),
    security(("api_key" = ["files.upload"])))]
pub async fn upload_file(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    req: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequest;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_multipart {
        return upload_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type", "must be multipart/form-data");
    }
    let multipart = match axum::extract::Multipart::from_request(req, &s).await {
        Ok(m) => m,
        Err(_) => return upload_problem(StatusCode::BAD_REQUEST, "Content-Type", "needs a multipart boundary"),
    };
    let max = s.config.files.max_upload_bytes;
    let got = match receive_upload(multipart, max).await {
        Ok(got) => got,
        Err(res) => return res,
    };
    let Ok(project_id) = got.project_id.trim().parse::<ProjectId>() else {
        return AppError::field("project_id", "is not a valid id").into_response();
    };
    let task_id = match got.task_id.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::parse::<Uuid>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return AppError::field("task_id", "is not a valid id").into_response(),
    };
    let up = files::Upload { project_id, task_id, name: &got.name, bytes: got.bytes, shared_with_client: got.shared };
    match files::upload(&s.db, &s.storage, &s.sealer, max, &ctx, &api.principal, up).await {
        Ok(meta) => created(format!("/api/v1/files/{}", meta.id), meta),
        // The project is named in the body: one the key can't see is a field to fix.
        Err(AppError::NotFound) => AppError::field("project_id", "no such project").into_response(),
        Err(AppError::PayloadTooLarge) => {
            upload_problem(StatusCode::PAYLOAD_TOO_LARGE, "file", format!("is larger than {max} bytes"))
        }
        Err(AppError::UnsupportedMediaType(m)) => upload_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "file", m),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/files/{file}", tag = "files",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "The file's metadata and a short-lived signed download link", body = Data<FileWithLink>)),
    security(("api_key" = ["files.read"])))]
pub async fn get_file(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    // Issued like a link from the web page: checked, and recorded in the audit log.
    let (file, download_url, download_url_expires_at) = files::issue_link(
        &s.db,
        &ctx,
        &api.principal,
        &s.config.public_url(),
        &s.file_link_key,
        ids.get("file")?,
        s.config.files.link_minutes,
    )
    .await?;
    Ok(ok(FileWithLink { file, download_url, download_url_expires_at }))
}

#[utoipa::path(patch, path = "/api/v1/files/{file}", tag = "files", request_body = FileUpdate,
    description = "`task_id` must name a task of the file's project; otherwise 422 naming it.",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 200, description = "Updated metadata (absent fields are unchanged)", body = Data<FileMeta>)),
    security(("api_key" = ["files.upload"])))]
pub async fn update_file(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<FileUpdate>,
) -> AppResult<Response> {
    Ok(ok(files::update(&s.db, &ctx, &api.principal, ids.get("file")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/files/{file}", tag = "files",
    params(("file" = Uuid, Path, description = "File id")),
    responses((status = 204, description = "Deleted with its contents")),
    security(("api_key" = ["files.delete"])))]
pub async fn delete_file(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    files::delete(&s.db, &s.storage, &ctx, &api.principal, ids.get("file")?).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the document lists (serde's, from the variants) are the texts the services get.
    #[test]
    fn closed_sets_read_back_their_own_texts() {
        fn check<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Copy>(
            all: &[T],
            text: fn(T) -> &'static str,
        ) {
            for v in all {
                assert_eq!(serde_json::from_value::<T>(serde_json::json!(text(*v))).unwrap(), *v);
            }
        }
        check(ClientStatusFilter::ALL, ClientStatusFilter::as_str);
        check(ProjectStatusFilter::ALL, ProjectStatusFilter::as_str);
        check(TaskStatusFilter::ALL, TaskStatusFilter::as_str);
        check(InvoiceStatusFilter::ALL, InvoiceStatusFilter::as_str);
        assert_eq!(ProjectStatusFilter::ALL.len(), projects::STATUSES.len() + 1);
        assert_eq!(TaskStatusFilter::ALL.len(), tasks::STATUSES.len());
        assert_eq!(InvoiceStatusFilter::ALL.len(), invoices::STATUSES.len());
    }
}
