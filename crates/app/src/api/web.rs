//! The API keys page (`/o/{org}/settings/api-keys`): list, create (the secret is shown once,
//! on the response to the creating request, and never stored in plain text), revoke.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::keys::{self, ApiKey, NewKey};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppResult, FieldError};
use crate::platform::http::route::{Access, RouteDef, Surface};
use crate::route;
use crate::state::AppState;
use crate::tenancy::guard::OrgAccess;
use crate::tenancy::role::{Permission as P, Role};
use crate::tenancy::web::{OrgNav, failure, page, page_with_status};
use crate::work::web::{number, path_id};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/settings/api-keys", Surface::Web, Access::Org(P::ApiKeysManage), keys_page),
        route!(POST "/o/{org}/settings/api-keys", Surface::Web, Access::Org(P::ApiKeysManage), create),
        route!(POST "/o/{org}/settings/api-keys/{key}/revoke", Surface::Web, Access::Org(P::ApiKeysManage), revoke),
    ]
}

struct KeyView {
    id: String,
    name: String,
    prefix: String,
    role: String,
    created: String,
    last_used: String,
    expires: String,
    revoked: String,
    active: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
}

#[derive(Template)]
#[template(path = "api/keys.html")]
struct KeysPage {
    csrf: String,
    org: OrgNav,
    keys: Vec<KeyView>,
    roles: Vec<String>,
    form: KeyForm,
    /// The new key's secret, on the page that created it and nowhere else.
    created: Option<(String, String)>,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn keys_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    form: KeyForm,
    created: Option<(String, String)>,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<KeysPage> {
    let p = &access.principal;
    let now = state.clock.now();
    let list: Vec<ApiKey> = keys::list(&state.db, p).await?;
    let opt = |t: Option<time::OffsetDateTime>| t.map(|t| access.when(t)).unwrap_or_default();
    Ok(KeysPage {
        csrf,
        org: OrgNav::of(access),
        keys: list
            .into_iter()
            .map(|k| KeyView {
                id: k.id.to_string(),
                active: k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now),
                name: k.name,
                prefix: k.prefix,
                role: k.role,
                created: access.when(k.created_at),
                last_used: k.last_used_at.map(|t| access.when(t)).unwrap_or_else(|| "never".into()),
                expires: opt(k.expires_at),
                revoked: opt(k.revoked_at),
            })
            .collect(),
        roles: [Role::Admin, Role::Manager, Role::Member]
            .into_iter()
            .filter(|r| r.rank() <= p.role().rank())
            .map(|r| r.as_str().to_string())
            .collect(),
        form,
        created,
        message,
        errors,
    })
}

async fn keys_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    let form = KeyForm { role: "member".into(), ..KeyForm::default() };
    page(&keys_view(&state, csrf, &access, form, None, None, vec![]).await?)
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<KeyForm>,
) -> AppResult<Response> {
    let result = async {
        let expires_in_days = number::<i64>("expires_in_days", &form.expires_in_days)?;
        let input = NewKey { name: form.name.clone(), role: form.role.clone(), permissions: None, expires_in_days };
        keys::create(&state.db, &ctx, &access.principal, &input).await
    }
    .await;
    match result {
        // Answered with the page itself rather than a redirect: the secret must not travel
        // through a URL or survive into a later page view.
        Ok(created) => {
            let shown = Some((created.key.name.clone(), created.secret));
            let form = KeyForm { role: "member".into(), ..KeyForm::default() };
            page(&keys_view(&state, csrf, &access, form, shown, None, vec![]).await?)
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &keys_view(&state, csrf, &access, form, None, message, errors).await?)
        }
    }
}

async fn revoke(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id: Uuid = path_id(&id)?;
    keys::revoke(&state.db, &ctx, &access.principal, id).await?;
    Ok(Redirect::to(&format!("/o/{}/settings/api-keys", access.slug)).into_response())
}
