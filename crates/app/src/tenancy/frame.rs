//! The frame of an organization's pages: the navigation each page shows (what the principal
//! may open, the organization switcher, the running timer), rendering, and the failures a page
//! shows in place instead of an error page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::guard::OrgAccess;
use crate::access::role::{Permission, Role};
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};

use Permission as P;

/// What the organization navigation needs.
pub struct OrgNav {
    pub slug: String,
    pub name: String,
    pub can_members: bool,
    pub can_settings: bool,
    pub can_security: bool,
    pub can_roles: bool,
    pub can_audit: bool,
    pub can_clients: bool,
    pub can_projects: bool,
    pub can_invoices: bool,
    pub can_api_keys: bool,
    pub can_tasks: bool,
    pub can_files: bool,
    pub can_billing: bool,
    /// Plans the team's work (`projects.update`): the workload page is offered.
    pub can_plan: bool,
    /// Unread notifications.
    pub unread: i64,
    /// The organization's internal pages (every role but Client): the search box.
    pub can_view: bool,
    pub can_export: bool,
    /// The switcher: where each of the user's organizations opens, its name, and whether it
    /// is this one.
    pub switch: Vec<(String, String, bool)>,
    /// The running timer: (where it runs, what, elapsed as shown, elapsed seconds).
    pub timer: Option<(String, String, String, i64)>,
}

impl OrgNav {
    pub fn of(access: &OrgAccess) -> Self {
        let p = &access.principal;
        Self {
            slug: access.slug.clone(),
            name: access.name.clone(),
            can_members: p.can(P::MembersRead),
            can_settings: p.can(P::SettingsManage),
            can_security: p.can(P::SettingsSecurity),
            can_roles: p.can(P::RolesManage),
            can_audit: p.can(P::AuditRead),
            can_clients: p.can(P::ClientsRead),
            can_projects: p.can(P::ProjectsRead),
            can_invoices: p.can(P::InvoicesRead),
            can_api_keys: p.can(P::ApiKeysManage),
            can_tasks: p.can(P::TasksRead),
            can_files: p.can(P::FilesRead),
            can_billing: p.can(P::BillingManage),
            can_plan: p.can(P::ProjectsUpdate),
            unread: access.unread,
            can_view: p.can(P::OrgView),
            can_export: p.can(P::OrgExport),
            switch: access
                .memberships
                .iter()
                .map(|o| {
                    let href =
                        if o.role == Role::Client { format!("/portal/{}", o.slug) } else { format!("/o/{}", o.slug) };
                    (href, o.name.clone(), o.slug == access.slug)
                })
                .collect(),
            timer: access.running_timer.as_ref().map(|t| {
                let href = match t.task_id {
                    Some(task) => format!("/o/{}/tasks/{task}", access.slug),
                    None => format!("/o/{}/projects/{}/time", access.slug, t.project_id),
                };
                let s = t.elapsed_seconds;
                (href, t.label.clone(), format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60), s)
            }),
        }
    }
}

pub fn page<T: Template>(t: &T) -> AppResult<Response> {
    Ok(crate::web::render(t)?.into_response())
}

pub use crate::web::page_with_status;

/// Expected failures shown on the page; anything else propagates.
pub fn failure(e: impl Into<AppError>) -> Result<(StatusCode, Option<String>, Vec<FieldError>), AppError> {
    let e = e.into();
    let status = e.status();
    match e {
        AppError::Domain(DomainError::Invalid(errors)) => Ok((status, None, errors)),
        AppError::BadRequest(m)
        | AppError::Unauthorized(m)
        | AppError::Domain(
            DomainError::Forbidden(m)
            | DomainError::Malformed(m)
            | DomainError::Conflict(m)
            | DomainError::NotAuthenticated(m),
        ) => Ok((status, Some(m), vec![])),
        other => Err(other),
    }
}
