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

use super::extract::{ApiJson, ApiQuery, PathIds};
use super::guard::ApiAccess;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::platform::http::error::{AppError, AppResult};
use crate::platform::ids::{ClientId, CommentId, InvoiceId, ProjectId, TaskId};
use crate::route;
use crate::state::AppState;
use crate::work::clients::{Client, ClientFilter, ClientInput, ClientUpdate};
use crate::work::files::{FileFilter, FileMeta, FileUpdate};
use crate::work::invoices::{InvoiceDetail, InvoiceFilter, InvoiceInput, InvoiceUpdate};
use crate::work::projects::{Column, Project, ProjectFilter, ProjectInput, ProjectUpdate};
use crate::work::tasks::{Comment, CommentInput, CommentUpdate, TaskDetail, TaskFilter, TaskInput, TaskUpdate};
use crate::work::time_entries::{TimeEntry, TimeFilter, TimeInput, TimeUpdate};
use crate::work::{MAX_PAGE, Page, fields};

mod approvals;
mod billing;
mod clients;
mod expenses;
mod files;
mod invoices;
mod projects;
mod repeats;
mod search;
mod settings;
mod tasks;
mod time_entries;
mod timers;
mod workload;

#[rustfmt::skip]
pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/api/v1/billing", Surface::Api, Access::Api(P::BillingManage), billing::get_billing)
            .limited(&[crate::abuse::limits::BILLING_PER_ORG]),

        route!(GET "/api/v1/clients", Surface::Api, Access::Api(P::ClientsRead), clients::list_clients),
        route!(POST "/api/v1/clients", Surface::Api, Access::Api(P::ClientsCreate), clients::create_client),
        route!(GET "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsRead), clients::get_client),
        route!(GET "/api/v1/clients/{client}/balance", Surface::Api, Access::Api(P::InvoicesRead), clients::get_client_balance),
        route!(GET "/api/v1/clients/{client}/statement", Surface::Api, Access::Api(P::InvoicesRead), clients::get_client_statement),
        route!(POST "/api/v1/clients/{client}/statement/email", Surface::Api, Access::Api(P::InvoicesUpdate), clients::email_client_statement),
        route!(PATCH "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsUpdate), clients::update_client),
        route!(DELETE "/api/v1/clients/{client}", Surface::Api, Access::Api(P::ClientsDelete), clients::delete_client),
        route!(POST "/api/v1/clients/{client}/archive", Surface::Api, Access::Api(P::ClientsUpdate), clients::archive_client),
        route!(POST "/api/v1/clients/{client}/restore", Surface::Api, Access::Api(P::ClientsUpdate), clients::restore_client),

        route!(GET "/api/v1/projects", Surface::Api, Access::Api(P::ProjectsRead), projects::list_projects),
        route!(POST "/api/v1/projects", Surface::Api, Access::Api(P::ProjectsCreate), projects::create_project),
        route!(GET "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsRead), projects::get_project),
        route!(PATCH "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsUpdate), projects::update_project),
        route!(DELETE "/api/v1/projects/{project}", Surface::Api, Access::Api(P::ProjectsDelete), projects::delete_project),
        route!(GET "/api/v1/projects/{project}/columns", Surface::Api, Access::Api(P::ProjectsRead), projects::list_columns),
        route!(GET "/api/v1/projects/{project}/budget", Surface::Api, Access::Api(P::ProjectsRead), projects::get_project_budget),
        route!(POST "/api/v1/projects/{project}/copy", Surface::Api, Access::Api(P::ProjectsCreate), projects::copy_project),

        route!(GET "/api/v1/search", Surface::Api, Access::Api(P::OrgView), search::search),

        route!(GET "/api/v1/settings/invoicing", Surface::Api, Access::Api(P::SettingsManage), settings::get_invoicing),
        route!(PATCH "/api/v1/settings/invoicing", Surface::Api, Access::Api(P::SettingsManage), settings::update_invoicing),

        route!(GET "/api/v1/tasks", Surface::Api, Access::Api(P::TasksRead), tasks::list_tasks),
        route!(POST "/api/v1/tasks", Surface::Api, Access::Api(P::TasksCreate), tasks::create_task),
        route!(GET "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksRead), tasks::get_task),
        route!(GET "/api/v1/tasks/{task}/activity", Surface::Api, Access::Api(P::TasksRead), tasks::task_activity),
        route!(PATCH "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksUpdate), tasks::update_task),
        route!(DELETE "/api/v1/tasks/{task}", Surface::Api, Access::Api(P::TasksDelete), tasks::delete_task),
        route!(GET "/api/v1/tasks/{task}/comments", Surface::Api, Access::Api(P::TasksRead), tasks::list_comments),
        route!(POST "/api/v1/tasks/{task}/comments", Surface::Api, Access::Api(P::CommentsCreate), tasks::create_comment),
        route!(GET "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::TasksRead), tasks::get_comment),
        route!(PATCH "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::CommentsCreate), tasks::update_comment),
        route!(DELETE "/api/v1/tasks/{task}/comments/{comment}", Surface::Api, Access::Api(P::CommentsCreate), tasks::delete_comment),

        route!(GET "/api/v1/time-entries", Surface::Api, Access::Api(P::ProjectsRead), time_entries::list_time_entries),
        route!(POST "/api/v1/time-entries", Surface::Api, Access::Api(P::TimeTrack), time_entries::create_time_entry),
        route!(GET "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::ProjectsRead), time_entries::get_time_entry),
        route!(PATCH "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::TimeTrack), time_entries::update_time_entry),
        route!(DELETE "/api/v1/time-entries/{time_entry}", Surface::Api, Access::Api(P::TimeTrack), time_entries::delete_time_entry),
        route!(GET "/api/v1/expenses", Surface::Api, Access::Api(P::ProjectsRead), expenses::list_expenses),
        route!(POST "/api/v1/expenses", Surface::Api, Access::Api(P::TimeTrack), expenses::create_expense),
        route!(GET "/api/v1/expenses/{expense}", Surface::Api, Access::Api(P::ProjectsRead), expenses::get_expense),
        route!(PATCH "/api/v1/expenses/{expense}", Surface::Api, Access::Api(P::TimeTrack), expenses::update_expense),
        route!(DELETE "/api/v1/expenses/{expense}", Surface::Api, Access::Api(P::TimeTrack), expenses::delete_expense),
        route!(GET "/api/v1/time-approvals", Surface::Api, Access::Api(P::ProjectsRead), approvals::get_week),
        route!(POST "/api/v1/time-approvals/approve", Surface::Api, Access::Api(P::ProjectsUpdate), approvals::approve_week),
        route!(POST "/api/v1/time-approvals/reopen", Surface::Api, Access::Api(P::ProjectsUpdate), approvals::reopen_week),
        route!(GET "/api/v1/workload", Surface::Api, Access::Api(P::ProjectsUpdate), workload::get_workload),
        route!(PUT "/api/v1/workload/{user}/capacity", Surface::Api, Access::Api(P::ProjectsUpdate), workload::set_capacity),
        route!(GET "/api/v1/timer", Surface::Api, Access::Api(P::TimeTrack), timers::get_timer),
        route!(POST "/api/v1/timer/start", Surface::Api, Access::Api(P::TimeTrack), timers::start_timer),
        route!(POST "/api/v1/timer/stop", Surface::Api, Access::Api(P::TimeTrack), timers::stop_timer),

        route!(GET "/api/v1/invoices", Surface::Api, Access::Api(P::InvoicesRead), invoices::list_invoices),
        route!(POST "/api/v1/invoices", Surface::Api, Access::Api(P::InvoicesCreate), invoices::create_invoice),
        route!(GET "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesRead), invoices::get_invoice),
        route!(PATCH "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::update_invoice),
        route!(DELETE "/api/v1/invoices/{invoice}", Surface::Api, Access::Api(P::InvoicesDelete), invoices::delete_invoice),
        route!(POST "/api/v1/invoices/{invoice}/send", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::send_invoice),
        route!(POST "/api/v1/invoices/{invoice}/pay", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::pay_invoice),
        route!(POST "/api/v1/invoices/{invoice}/duplicate", Surface::Api, Access::Api(P::InvoicesCreate), invoices::duplicate_invoice),
        route!(POST "/api/v1/invoices/{invoice}/void", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::void_invoice),
        route!(POST "/api/v1/invoices/{invoice}/time", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::bill_time),
        route!(POST "/api/v1/invoices/{invoice}/expenses", Surface::Api, Access::Api(P::InvoicesUpdate), expenses::bill_expenses),
        route!(GET "/api/v1/invoices/{invoice}/payments", Surface::Api, Access::Api(P::InvoicesRead), invoices::list_payments),
        route!(POST "/api/v1/invoices/{invoice}/payments", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::record_payment),
        route!(DELETE "/api/v1/invoices/{invoice}/payments/{payment}", Surface::Api, Access::Api(P::InvoicesUpdate), invoices::delete_payment),
        route!(GET "/api/v1/payments", Surface::Api, Access::Api(P::InvoicesRead), invoices::list_received),
        route!(GET "/api/v1/invoice-repeats", Surface::Api, Access::Api(P::InvoicesRead), repeats::list_repeats),
        route!(GET "/api/v1/invoices/{invoice}/repeat", Surface::Api, Access::Api(P::InvoicesRead), repeats::get_repeat),
        route!(POST "/api/v1/invoices/{invoice}/repeat", Surface::Api, Access::Api(P::InvoicesCreate), repeats::create_repeat),
        route!(PATCH "/api/v1/invoices/{invoice}/repeat", Surface::Api, Access::Api(P::InvoicesCreate), repeats::update_repeat),
        route!(DELETE "/api/v1/invoices/{invoice}/repeat", Surface::Api, Access::Api(P::InvoicesCreate), repeats::delete_repeat),

        route!(GET "/api/v1/files", Surface::Api, Access::Api(P::FilesRead), files::list_files),
        files::upload_route(),
        // Issuing the download link records it in the audit log.
        route!(GET "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesRead), files::get_file).writes_when_read(),
        route!(PATCH "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesUpload), files::update_file),
        route!(DELETE "/api/v1/files/{file}", Surface::Api, Access::Api(P::FilesDelete), files::delete_file),
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

/// A range of days from `from` and `to` (YYYY-MM-DD, both optional): by default from the first
/// of `to`'s month to today in the organization's time zone. `from` after `to` is refused,
/// naming `from`.
async fn range(
    s: &AppState,
    api: &ApiAccess,
    from: Option<&str>,
    to: Option<&str>,
) -> AppResult<(time::Date, time::Date)> {
    let from = from.map(|d| crate::platform::fields::date("from", d)).transpose()?;
    let to = to.map(|d| crate::platform::fields::date("to", d)).transpose()?;
    let (from, to) = crate::work::range(&s.db, &api.principal, s.clock.now(), from, to).await?;
    if from > to {
        return Err(AppError::field("from", "must not be after `to`"));
    }
    Ok((from, to))
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
        clients::list_clients, clients::create_client, clients::get_client, clients::get_client_balance, clients::get_client_statement, clients::email_client_statement, clients::update_client, clients::delete_client, clients::archive_client, clients::restore_client,
        projects::list_projects, projects::create_project, projects::get_project, projects::update_project, projects::delete_project, projects::list_columns,
        projects::get_project_budget, projects::copy_project,
        tasks::list_tasks, tasks::create_task, tasks::get_task, tasks::task_activity, tasks::update_task, tasks::delete_task, tasks::list_comments, tasks::create_comment,
        tasks::get_comment,
        tasks::update_comment, tasks::delete_comment,
        time_entries::list_time_entries, time_entries::create_time_entry, time_entries::get_time_entry, time_entries::update_time_entry, time_entries::delete_time_entry,
        timers::get_timer, timers::start_timer, timers::stop_timer,
        approvals::get_week, approvals::approve_week, approvals::reopen_week,
        workload::get_workload, workload::set_capacity,
        expenses::list_expenses, expenses::create_expense, expenses::get_expense, expenses::update_expense, expenses::delete_expense,
        expenses::bill_expenses,
        invoices::list_invoices, invoices::create_invoice, invoices::get_invoice, invoices::update_invoice, invoices::delete_invoice, invoices::send_invoice, invoices::pay_invoice,
        invoices::void_invoice, invoices::bill_time, invoices::list_payments, invoices::record_payment, invoices::delete_payment,
        invoices::list_received, invoices::duplicate_invoice,
        repeats::list_repeats, repeats::get_repeat, repeats::create_repeat, repeats::update_repeat, repeats::delete_repeat,
        files::list_files, files::upload_file, files::get_file, files::update_file, files::delete_file,
        billing::get_billing,
        search::search,
        settings::get_invoicing, settings::update_invoicing,
    ),
    tags(
        (name = "clients", description = "The organization's clients"),
        (name = "projects", description = "Projects (Member-role keys see the projects of the member who created the key)"),
        (name = "tasks", description = "Tasks, their assignees, subtasks and comments"),
        (name = "time", description = "Time entries, the timer and expenses"),
        (name = "invoices", description = "Invoices: drafts are editable; send assigns the number"),
        (name = "files", description = "Uploads, file metadata and short-lived download links"),
        (name = "billing", description = "The plan and its limits (Owners only: no API key can hold billing.manage)"),
        (name = "search", description = "Full-text search over what the key may see"),
        (name = "settings", description = "The organization's invoicing defaults (settings.manage: Owner and Admin keys)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

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
        assert_eq!(ProjectStatusFilter::ALL.len(), crate::work::projects::STATUSES.len() + 1);
        assert_eq!(TaskStatusFilter::ALL.len(), crate::work::task_status::TaskStatus::ALL.len());
        assert_eq!(InvoiceStatusFilter::ALL.len(), crate::work::invoices::InvoiceStatus::ALL.len());
    }
}
