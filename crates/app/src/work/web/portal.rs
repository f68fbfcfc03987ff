//! The client portal: what a Client user sees of their own client's work — visible projects,
//! client-visible tasks and comments, shared files, and invoices (never drafts) — read-only.
//! Every page goes through `work::portal`, whose queries are bounded by the principal's
//! client; nothing here reads anything else.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::invoices::{InvoiceView, PrintPage, invoice_view};
use super::projects::{FileView, file_view};
use super::{day, path_id};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::platform::http::error::AppResult;
use crate::platform::ids::ProjectId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::page;
use crate::tenancy::guard::OrgAccess;
use crate::work::portal;
use crate::work::projects::Project;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/portal/{org}", Surface::Web, Access::Org(P::PortalRead), home),
        route!(GET "/portal/{org}/projects/{project}", Surface::Web, Access::Org(P::PortalRead), project),
        route!(GET "/portal/{org}/invoices/{invoice}", Surface::Web, Access::Org(P::PortalRead), invoice),
        route!(GET "/portal/{org}/invoices/{invoice}/pdf", Surface::Web, Access::Org(P::PortalRead), invoice_pdf),
        route!(GET "/portal/{org}/files/{file}", Surface::Web, Access::Org(P::PortalRead), download),
        route!(GET "/portal/{org}/statement", Surface::Web, Access::Org(P::PortalRead), statement),
        route!(GET "/portal/{org}/statement.pdf", Surface::Web, Access::Org(P::PortalRead), statement_pdf),
    ]
}

/// The portal's navigation: the organization and nothing of its internal pages.
pub struct PortalNav {
    pub slug: String,
    pub name: String,
}

impl PortalNav {
    pub fn of(access: &OrgAccess) -> Self {
        Self { slug: access.slug.clone(), name: access.name.clone() }
    }
}

struct InvoiceRow {
    id: String,
    title: String,
    issued: String,
    due: String,
    status: crate::work::invoices::InvoiceStatus,
    total: String,
}

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    nav: PortalNav,
    client_name: String,
    projects: Vec<(Project, portal::Shown)>,
    invoices: Vec<InvoiceRow>,
}

async fn home(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    let h = portal::home(&state.db, state.clock.now(), &access.principal).await?;
    page(&HomePage {
        nav: PortalNav::of(&access),
        client_name: h.client_name,
        projects: h.projects,
        invoices: h
            .invoices
            .into_iter()
            .map(|i| InvoiceRow {
                id: i.id.to_string(),
                title: format!("Invoice {}", i.title()),
                issued: i.issue_date.to_string(),
                due: i.due_date.to_string(),
                total: i.total_shown(),
                status: i.status,
            })
            .collect(),
    })
}

struct CommentView {
    author: String,
    body: String,
    at: String,
    edited: bool,
}

struct TaskView {
    title: String,
    description: String,
    status: String,
    due: String,
    comments: Vec<CommentView>,
}

#[derive(Template)]
#[template(path = "portal/project.html")]
struct ProjectPage {
    nav: PortalNav,
    project: Project,
    shown: portal::Shown,
    tasks: Vec<TaskView>,
    files: Vec<FileView>,
}

async fn project(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let p = portal::project(&state.db, &state.keys, &access.principal, id).await?;
    page(&ProjectPage {
        nav: PortalNav::of(&access),
        shown: p.shown(),
        project: p.project,
        tasks: p
            .tasks
            .into_iter()
            .map(|(t, comments)| TaskView {
                title: t.title,
                description: t.description,
                status: t.status.label().to_string(),
                due: day(t.due_date),
                comments: comments
                    .into_iter()
                    .map(|c| CommentView {
                        author: c.author,
                        body: c.body,
                        at: access.when(c.created_at),
                        edited: c.edited_at.is_some(),
                    })
                    .collect(),
            })
            .collect(),
        files: p.files.into_iter().map(|f| file_view(&access, f)).collect(),
    })
}

async fn invoice(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let d = portal::invoice(&state.db, &ctx, &access.principal, id).await?;
    let invoice: InvoiceView = invoice_view(d);
    page(&PrintPage {
        organization: access.name.clone(),
        pdf: format!("/portal/{}/invoices/{}/pdf", access.slug, invoice.id),
        invoice,
        back: format!("/portal/{}", access.slug),
    })
}

/// The invoice as a PDF (opening it counts as the client viewing it, like the page).
async fn invoice_pdf(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let d = portal::invoice(&state.db, &ctx, &access.principal, id).await?;
    super::invoices::pdf_response(&access.name, &d)
}

async fn download(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let (meta, bytes) = portal::download(&state.db, &state.storage, &state.keys, &access.principal, id).await?;
    super::files::attachment(&meta, bytes)
}

#[derive(Template)]
#[template(path = "portal/statement.html")]
struct StatementPage {
    nav: PortalNav,
    s: super::clients::StatementView,
}

/// The client's own statement over a range of days (by default this month).
async fn statement(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<super::clients::StatementQuery>,
) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let s = portal::statement(&state.db, &access.principal, from, to).await?;
    let slug = &access.slug;
    let s = super::clients::StatementView::new(
        s,
        format!("/portal/{slug}/statement"),
        format!("/portal/{slug}/invoices"),
        true,
    );
    page(&StatementPage { nav: PortalNav::of(&access), s })
}

/// The client's own statement as a PDF (the range as on the page).
async fn statement_pdf(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<super::clients::StatementQuery>,
) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let s = portal::statement(&state.db, &access.principal, from, to).await?;
    super::clients::statement_pdf_download(&access.name, &s)
}
