//! The contact form's pages: the public form, its answer, and the submissions a member reads.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Submission, record};
use crate::abuse::botcheck::Purpose;
use crate::abuse::limits::CONTACT_PER_IP;
use crate::abuse::web::{BotCheckView, SubmittedProof, verify_form, with_widget_policy};
use crate::access::role::Permission;
use crate::access::route::{Access, RouteDef, Surface};
use crate::access::{self, OrgTx};
use crate::identity::guard::FormToken;
use crate::identity::session::RequestMeta;
use crate::platform::error::{DomainError, FieldError};
use crate::platform::http::error::{AppError, AppResult};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::OrgNav;
use crate::tenancy::guard::OrgAccess;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/contact/{slug}", Surface::Web, Access::Public, form_page),
        route!(POST "/contact/{slug}", Surface::Web, Access::Public, submit).limited(&[CONTACT_PER_IP]),
        route!(GET "/contact/{slug}/sent", Surface::Web, Access::Public, sent_page),
        route!(
            GET "/o/{org}/contact-submissions",
            Surface::Web,
            Access::Org(Permission::SettingsManage),
            submissions_page
        ),
    ]
}

#[derive(Template)]
#[template(path = "contact/form.html")]
struct FormPage {
    csrf: String,
    slug: String,
    organization: String,
    name: String,
    email: String,
    message_text: String,
    bot: BotCheckView,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn form_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    Path(slug): Path<String>,
) -> AppResult<Response> {
    let (_, organization) = access::contact_form(&state.db, &slug).await?.ok_or(AppError::not_found())?;
    let bot = BotCheckView::new(&state.bot_check, Purpose::Contact);
    let page = FormPage {
        csrf,
        slug,
        organization,
        name: String::new(),
        email: String::new(),
        message_text: String::new(),
        bot,
        message: None,
        errors: vec![],
    };
    Ok(with_widget_policy(&state, crate::web::render(&page)?.into_response()))
}

#[derive(Deserialize)]
struct ContactForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    message: String,
    #[serde(flatten)]
    proof: SubmittedProof,
}

async fn submit(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    Path(slug): Path<String>,
    Form(form): Form<ContactForm>,
) -> AppResult<Response> {
    let (principal, organization) = access::contact_form(&state.db, &slug).await?.ok_or(AppError::not_found())?;
    let result = async {
        let submission = Submission::parse(&form.name, &form.email, &form.message)?;
        verify_form(&state, form.proof, meta.ip, Purpose::Contact).await.map_err(DomainError::from)?;
        record(&state, &principal, &submission, &meta).await.map_err(AppError::from)
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/contact/{slug}/sent")).into_response()),
        Err(e) => {
            let (status, message, errors) = crate::web::public_form_failure(e)?;
            let page = FormPage {
                csrf,
                slug,
                organization,
                name: form.name,
                email: form.email,
                message_text: form.message,
                bot: BotCheckView::new(&state.bot_check, Purpose::Contact),
                message,
                errors,
            };
            Ok(with_widget_policy(&state, crate::web::page_with_status(status, &page)?))
        }
    }
}

#[derive(Template)]
#[template(path = "contact/sent.html")]
struct SentPage {
    organization: String,
}

async fn sent_page(State(state): State<AppState>, Path(slug): Path<String>) -> AppResult<Response> {
    let (_, organization) = access::contact_form(&state.db, &slug).await?.ok_or(AppError::not_found())?;
    Ok(crate::web::render(&SentPage { organization })?.into_response())
}

struct SubmissionView {
    when: String,
    name: String,
    email: String,
    message: String,
}

#[derive(Template)]
#[template(path = "contact/submissions.html")]
struct SubmissionsPage {
    org: OrgNav,
    enabled: bool,
    submissions: Vec<SubmissionView>,
}

/// The latest submissions, newest first.
async fn submissions_page(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let enabled: bool = sqlx::query_scalar("SELECT contact_form_enabled FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<(time::OffsetDateTime, String, String, String)> = sqlx::query_as(
        "SELECT created_at, name, email, message FROM contact_submissions WHERE organization_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 200",
    )
    .bind(tx.org_id())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let submissions = rows
        .into_iter()
        .map(|(at, name, email, message)| SubmissionView { when: access.when(at), name, email, message })
        .collect();
    let res = crate::web::render(&SubmissionsPage { org: OrgNav::of(&access), enabled, submissions })?;
    Ok((StatusCode::OK, res).into_response())
}
