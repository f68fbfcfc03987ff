//! The organization deletion page (`/o/{org}/settings/deletion`, linked from the billing
//! settings' "Delete this organization" section): Owners only (`org.delete`), re-authenticated
//! (password, or a code when that is the account's factor, as every sensitive change here) and
//! typing the organization's name. While a deletion is pending the page shows when the purge
//! runs and lets any Owner cancel it.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::deletion;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::identity::service::{ReauthPrompt, confirm_sensitive_change};
use crate::identity::session::{CurrentSession, RequestMeta};
use crate::platform::http::error::{AppError, AppResult, FieldError};
use crate::platform::secret::Secret;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;

pub fn routes() -> Vec<RouteDef> {
    let p = Permission::OrgDelete;
    vec![
        route!(GET "/o/{org}/settings/deletion", Surface::Web, Access::Org(p), deletion_page),
        route!(POST "/o/{org}/settings/deletion", Surface::Web, Access::Org(p), request_deletion),
        route!(POST "/o/{org}/settings/deletion/cancel", Surface::Web, Access::Org(p), cancel_deletion),
    ]
}

#[derive(Template)]
#[template(path = "privacy/deletion.html")]
struct DeletionPage {
    csrf: String,
    org: OrgNav,
    /// The date the purge runs (UTC), when a deletion is pending.
    scheduled: Option<String>,
    grace_days: u32,
    reauth: ReauthPrompt,
    message: Option<String>,
    notice: Option<&'static str>,
    errors: Vec<FieldError>,
}

async fn view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    message: Option<String>,
    notice: Option<&'static str>,
    errors: Vec<FieldError>,
) -> AppResult<DeletionPage> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let pending = deletion::pending(&mut tx).await?;
    tx.commit().await?;
    Ok(DeletionPage {
        csrf,
        org: OrgNav::of(access),
        scheduled: pending.map(|p| {
            let at = p.purge_after;
            format!("{} at {:02}:{:02} UTC", at.date(), at.hour(), at.minute())
        }),
        grace_days: state.config.privacy.deletion_grace_days,
        reauth: ReauthPrompt::for_user(state, access.principal.user_id()).await?,
        message,
        notice,
        errors,
    })
}

#[derive(Deserialize)]
struct Done {
    done: Option<String>,
}

async fn deletion_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<Done>,
) -> AppResult<Response> {
    let notice = match q.done.as_deref() {
        Some("requested") => Some("The organization is scheduled for deletion. Every Owner was sent an email."),
        Some("cancelled") => Some("The deletion was cancelled. Everyone has access again."),
        Some("nothing") => Some("The organization is not scheduled for deletion: there was nothing to cancel."),
        _ => None,
    };
    page(&view(&state, csrf, &access, None, notice, vec![]).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestForm {
    #[serde(default)]
    confirm_name: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

#[allow(clippy::too_many_arguments)]
async fn request_deletion(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(form): Form<RequestForm>,
) -> AppResult<Response> {
    let result = async {
        if form.confirm_name.trim().is_empty() {
            return Err(AppError::field("confirm_name", "type the organization's name to confirm"));
        }
        confirm_sensitive_change(&state, &meta, &current, &Secret::new(form.current_password), &form.code).await?;
        deletion::request(&state.db, &ctx, &access.principal, &form.confirm_name, state.config.privacy.grace())
            .await
            .map_err(AppError::from)
    }
    .await;
    match result {
        Ok(_) => {
            state.mail_wake.notify_one();
            Ok(Redirect::to(&format!("/o/{}/settings/deletion?done=requested", access.slug)).into_response())
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &view(&state, csrf, &access, message, None, errors).await?)
        }
    }
}

async fn cancel_deletion(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
) -> AppResult<Response> {
    match deletion::cancel(&state.db, &ctx, &access.principal).await {
        Ok(cancelled) => {
            state.mail_wake.notify_one();
            let done = if cancelled { "cancelled" } else { "nothing" };
            Ok(Redirect::to(&format!("/o/{}/settings/deletion?done={done}", access.slug)).into_response())
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &view(&state, csrf, &access, message, None, errors).await?)
        }
    }
}
