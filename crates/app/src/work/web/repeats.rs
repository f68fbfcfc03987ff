//! Repeating invoices on pages: the "Repeat" section of an invoice's page (set a repeat up,
//! pause, resume, stop) and the list of every repeat (`/o/{org}/invoices/repeating`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::invoices::detail_view;
use super::repeat_view::{RepeatChangeForm, RepeatForm, RepeatView};
use super::{PAGE_SIZE, Pager, path_id};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::error::DomainResult;
use crate::platform::http::error::AppResult;
use crate::platform::ids::InvoiceId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::Page;
use crate::work::repeats::{self, RepeatInput, RepeatUpdate};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/invoices/repeating", Surface::Web, Access::Org(P::InvoicesRead), list),
        route!(POST "/o/{org}/invoices/{invoice}/repeat", Surface::Web, Access::Org(P::InvoicesCreate), create),
        route!(POST "/o/{org}/invoices/{invoice}/repeat/edit", Surface::Web, Access::Org(P::InvoicesCreate), edit),
        route!(POST "/o/{org}/invoices/{invoice}/repeat/pause", Surface::Web, Access::Org(P::InvoicesCreate), pause),
        route!(POST "/o/{org}/invoices/{invoice}/repeat/resume", Surface::Web, Access::Org(P::InvoicesCreate), resume),
        route!(POST "/o/{org}/invoices/{invoice}/repeat/delete", Surface::Web, Access::Org(P::InvoicesCreate), delete),
    ]
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    axum::Form(form): axum::Form<RepeatForm>,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = async {
        let input = RepeatInput {
            every: every(&form.every)?,
            unit: Some(form.unit.clone()).filter(|u| !u.is_empty()),
            starts_on: Some(form.starts_on.trim().to_string()).filter(|d| !d.is_empty()),
            ends_on: Some(form.ends_on.trim().to_string()).filter(|d| !d.is_empty()),
            send: Some(crate::work::fields::flag("send", &form.send)?),
        };
        repeats::create(&state.db, &ctx, &access.principal, id, &input).await.map(|_| ())
    }
    .await;
    back(&state, csrf, &access, id, result, Some(form)).await
}

/// The interval as typed; empty for the default (or the repeat's own).
fn every(typed: &str) -> DomainResult<Option<i16>> {
    match typed.trim() {
        "" => Ok(None),
        n => n
            .parse::<i16>()
            .map(Some)
            .map_err(|_| crate::platform::error::DomainError::field("every", "must be a whole number from 1 to 52")),
    }
}

/// Changes a repeat's schedule, its last day and whether copies are sent (the latter only for
/// those who may send, who alone are shown the choice).
async fn edit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    axum::Form(form): axum::Form<RepeatChangeForm>,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = async {
        let send = match access.principal.can(P::InvoicesUpdate) {
            true => Some(crate::work::fields::flag("send", &form.send)?),
            false => None,
        };
        let update = RepeatUpdate {
            every: every(&form.every)?,
            unit: Some(form.unit.clone()).filter(|u| !u.is_empty()),
            next_on: Some(form.next_on.trim().to_string()),
            ends_on: Some(Some(form.ends_on.trim().to_string()).filter(|d| !d.is_empty())),
            send,
            paused: None,
        };
        repeats::update(&state.db, &ctx, &access.principal, id, &update).await.map(|_| ())
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/invoices/{id}#repeat", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let mut view = detail_view(&state, csrf, &access, id, message, errors).await?;
            view.repeat_change = form;
            view.repeat_changing = true;
            page_with_status(status, &view)
        }
    }
}

/// Back to the invoice's Repeat section; a refusal shows the invoice's page saying why, with
/// the form as it was typed (when one was).
async fn back(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: InvoiceId,
    result: DomainResult<()>,
    typed: Option<RepeatForm>,
) -> AppResult<Response> {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/invoices/{id}#repeat", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let mut view = detail_view(state, csrf, access, id, message, errors).await?;
            if let Some(form) = typed {
                view.repeat_form = form;
            }
            page_with_status(status, &view)
        }
    }
}

async fn change(
    state: AppState,
    csrf: String,
    ctx: Context,
    access: OrgAccess,
    id: String,
    paused: bool,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let update = RepeatUpdate { paused: Some(paused), ..RepeatUpdate::default() };
    let result = repeats::update(&state.db, &ctx, &access.principal, id, &update).await.map(|_| ());
    back(&state, csrf, &access, id, result, None).await
}

async fn pause(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    change(state, csrf, ctx, access, id, true).await
}

async fn resume(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    change(state, csrf, ctx, access, id, false).await
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = repeats::delete(&state.db, &ctx, &access.principal, id).await;
    back(&state, csrf, &access, id, result, None).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    offset: i64,
}

#[derive(Template)]
#[template(path = "work/repeats.html")]
struct ListPage {
    org: OrgNav,
    rows: Vec<RepeatView>,
    pager: Pager,
}

/// Every repeat of the organization: what is copied, how often, and when next.
async fn list(State(state): State<AppState>, access: OrgAccess, Query(q): Query<ListQuery>) -> AppResult<Response> {
    let page_req = Page { limit: Some(PAGE_SIZE), offset: Some(q.offset) };
    let (items, total) = repeats::list(&state.db, &access.principal, page_req).await?;
    let base = format!("/o/{}/invoices/repeating", access.slug);
    let pager = Pager::new(&base, &[], page_req.offset(), items.len(), total);
    page(&ListPage { org: OrgNav::of(&access), rows: items.iter().map(RepeatView::of).collect(), pager })
}
