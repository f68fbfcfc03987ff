//! The API keys page (`/o/{org}/settings/api-keys`): list, create (the secret is shown once,
//! on the response to the creating request, and never stored in plain text), revoke.
//!
//! A key gets either a role or an explicit subset of permissions; the page offers as checkboxes
//! only the permissions its viewer holds, and the service refuses anything beyond them, so a
//! forged form can't mint a key stronger than the person making it.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use crate::access::api_key::{self as keys, ApiKey, NewKey};
use crate::access::role::{Permission, Permission as P, Role};
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
use crate::work::web::{FormFields, number, path_id};

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
    /// The explicit subset, when the key has one.
    permissions: String,
    created: String,
    last_used: String,
    expires: String,
    revoked: String,
    active: bool,
}

#[derive(Default, Clone)]
struct KeyForm {
    name: String,
    role: String,
    /// `role` or `permissions`: what bounds the key.
    mode: String,
    permissions: Vec<String>,
    expires_in_days: String,
    /// Re-authentication, never shown again: a refused form comes back without it.
    current_password: String,
    code: String,
}

const KEY_FIELDS: [&str; 8] =
    ["csrf_token", "name", "role", "mode", "permissions", "expires_in_days", "current_password", "code"];

impl KeyForm {
    fn fresh() -> Self {
        KeyForm { role: "member".into(), mode: "role".into(), ..KeyForm::default() }
    }

    fn parse(body: &Bytes) -> AppResult<Self> {
        let f = FormFields::parse(body, |k| KEY_FIELDS.contains(&k))?.only_once(&[
            "name",
            "role",
            "mode",
            "expires_in_days",
            "current_password",
            "code",
        ])?;
        Ok(KeyForm {
            name: f.get("name").to_string(),
            role: f.get("role").to_string(),
            mode: if f.get("mode").is_empty() { "role".into() } else { f.get("mode").to_string() },
            permissions: f.all("permissions"),
            expires_in_days: f.get("expires_in_days").to_string(),
            current_password: f.get("current_password").to_string(),
            code: f.get("code").to_string(),
        })
    }
}

/// A permission checkbox: value, description, checked.
struct PermissionChoice {
    name: &'static str,
    describe: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "api/keys.html")]
struct KeysPage {
    csrf: String,
    org: OrgNav,
    keys: Vec<KeyView>,
    roles: Vec<String>,
    /// The permissions the viewer may put into a key (their own, within the Admin bound).
    choices: Vec<PermissionChoice>,
    /// The role a key with a permission subset carries.
    subset_role: String,
    form: KeyForm,
    /// The new key's secret, on the page that created it and nowhere else.
    created: Option<(String, String)>,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// What creating a key asks for to confirm it's the signed-in person.
    reauth: ReauthPrompt,
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
    let grantable = keys::grantable(&state.db, p).await?;
    let choices = grantable
        .iter()
        // Membership itself is not something an API route asks for.
        .filter(|x| !matches!(x, Permission::OrgAccess | Permission::OrgView))
        .map(|x| PermissionChoice {
            name: x.as_str(),
            describe: x.describe(),
            checked: form.permissions.iter().any(|c| c == x.as_str()),
        })
        .collect();
    let opt = |t: Option<time::OffsetDateTime>| t.map(|t| access.when(t)).unwrap_or_default();
    let reauth = ReauthPrompt::for_user(state, p.user_id()).await?;
    Ok(KeysPage {
        reauth,
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
                permissions: k.permissions.map(|ps| ps.join(", ")).unwrap_or_default(),
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
        choices,
        subset_role: keys::subset_role(p).as_str().to_string(),
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
    page(&keys_view(&state, csrf, &access, KeyForm::fresh(), None, None, vec![]).await?)
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    body: Bytes,
) -> AppResult<Response> {
    let mut form = KeyForm::parse(&body)?;
    let password = Secret::new(std::mem::take(&mut form.current_password));
    let code = std::mem::take(&mut form.code);
    let result = async {
        let expires_in_days = number::<i64>("expires_in_days", &form.expires_in_days)?;
        let (role, permissions) = match form.mode.as_str() {
            "role" => (form.role.clone(), None),
            // The checked boxes, whatever they are: the service decides whether they are the
            // creator's to give.
            "permissions" => {
                (keys::subset_role(&access.principal).as_str().to_string(), Some(form.permissions.clone()))
            }
            _ => return Err(crate::platform::http::error::AppError::field("mode", "choose a role or permissions")),
        };
        let input = NewKey { name: form.name.clone(), role, permissions, expires_in_days };
        confirm_sensitive_change(&state, &meta, &current, &password, &code).await?;
        // The plan's API-key limit, checked before the key is created (the access layer that
        // issues keys sits below billing).
        let mut tx = crate::access::OrgTx::begin(&state.db, &access.principal).await?;
        crate::billing::limits::check(&mut tx, &ctx, crate::billing::limits::Resource::ApiKeys, 1).await?;
        tx.commit().await?;
        keys::create(&state.db, &ctx, &access.principal, &input).await.map_err(AppError::from)
    }
    .await;
    match result {
        // Answered with the page itself rather than a redirect: the secret must not travel
        // through a URL or survive into a later page view.
        Ok(created) => {
            let shown = Some((created.key.name.clone(), created.secret));
            page(&keys_view(&state, csrf, &access, KeyForm::fresh(), shown, None, vec![]).await?)
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
