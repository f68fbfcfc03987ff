//! Copying a project: a form that says what the copy takes, then the copy's own page.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::path_id;
use super::projects::client_options;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, FieldError};
use crate::platform::ids::{ClientId, ProjectId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::project_copy::{self, ProjectCopy};
use crate::work::projects::Project;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/projects/{project}/copy", Surface::Web, Access::Org(P::ProjectsCreate), copy_page),
        route!(POST "/o/{org}/projects/{project}/copy", Surface::Web, Access::Org(P::ProjectsCreate), copy),
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CopyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    start_date: String,
    #[serde(default)]
    with_people: Option<String>,
}

impl CopyForm {
    fn input(&self) -> ProjectCopy {
        ProjectCopy {
            name: self.name.clone(),
            client_id: Some(Some(self.client_id.trim().to_string())),
            start_date: Some(self.start_date.trim().to_string()),
            with_people: Some(self.with_people.is_some()),
        }
    }
}

#[derive(Template)]
#[template(path = "work/project_copy.html")]
struct CopyPage {
    csrf: String,
    org: OrgNav,
    original: Project,
    form: CopyForm,
    clients: Option<Vec<(String, String)>>,
    /// How many people the copy would take along (offered only to those who may put people on it).
    people: Option<i64>,
    tasks: i64,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn copy_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ProjectId,
    form: Option<CopyForm>,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<CopyPage> {
    let p = &access.principal;
    let project_copy::Original { project: original, tasks, people } = project_copy::original(&state.db, p, id).await?;
    // Offered only to those who may put people on it.
    let people = p.can(P::ProjectsUpdate).then_some(people);
    let form = form.unwrap_or_else(|| CopyForm {
        name: format!("{} (copy)", original.name).chars().take(200).collect(),
        client_id: original.client_id.map(|c| c.to_string()).unwrap_or_default(),
        with_people: people.filter(|n| *n > 1).map(|_| "on".into()),
        ..CopyForm::default()
    });
    let current = super::form_id::<ClientId>("client_id", &form.client_id).ok().flatten();
    Ok(CopyPage {
        csrf,
        org: OrgNav::of(access),
        clients: client_options(state, access, current).await?,
        tasks,
        original,
        form,
        people,
        message,
        errors,
    })
}

async fn copy_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    page(&copy_view(&state, csrf, &access, path_id(&id)?, None, None, vec![]).await?)
}

async fn copy(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<CopyForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    match project_copy::copy(&state.db, &ctx, &access.principal, id, &form.input()).await.map_err(AppError::from) {
        Ok(c) => Ok(Redirect::to(&format!("/o/{}/projects/{}", access.slug, c.project.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &copy_view(&state, csrf, &access, id, Some(form), message, errors).await?)
        }
    }
}
