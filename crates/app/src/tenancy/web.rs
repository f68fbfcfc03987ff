//! Web pages for organizations: creation, members and invitations, settings, roles.

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::frame::{OrgNav, failure, page, page_with_status};
use super::guard::OrgAccess;
use super::service::{self, GeneralSettings};
use crate::abuse::limits::{AUTH_PER_IP, TOKEN_PER_ACCOUNT};
use crate::access::OrgTx;
use crate::access::role::{Permission, PermissionSet, Role, admin_bound, default_permissions};
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::identity::service::{ReauthPrompt, confirm_sensitive_change};
use crate::identity::session::{CurrentSession, RequestMeta};
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError, RenderedByHandler};
use crate::platform::ids::{ClientId, UserId};
use crate::platform::secret::Secret;
use crate::route;
use crate::state::AppState;

use Permission as P;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/orgs/new", Surface::Web, Access::SignedIn, new_org_page),
        route!(POST "/orgs", Surface::Web, Access::SignedIn, create_org),
        route!(GET "/o/{org}/logo", Surface::Web, Access::Org(P::OrgAccess), logo),
        route!(POST "/o/{org}/leave", Surface::Web, Access::Org(P::OrgAccess), leave),
        route!(GET "/o/{org}/members", Surface::Web, Access::Org(P::MembersRead), members_page),
        route!(POST "/o/{org}/invitations", Surface::Web, Access::Org(P::MembersInvite), invite),
        route!(POST "/o/{org}/invitations/{invitation}/revoke", Surface::Web, Access::Org(P::MembersInvite), revoke_invitation),
        route!(POST "/o/{org}/invitations/{invitation}/resend", Surface::Web, Access::Org(P::MembersInvite), resend_invitation),
        route!(POST "/o/{org}/members/{member}/role", Surface::Web, Access::Org(P::MembersManage), change_role),
        route!(POST "/o/{org}/members/{member}/suspend", Surface::Web, Access::Org(P::MembersManage), suspend),
        route!(POST "/o/{org}/members/{member}/reactivate", Surface::Web, Access::Org(P::MembersManage), reactivate),
        route!(POST "/o/{org}/members/{member}/remove", Surface::Web, Access::Org(P::MembersManage), remove),
        route!(GET "/o/{org}/members/{member}/permissions", Surface::Web, Access::Org(P::RolesManage), member_permissions_page),
        route!(POST "/o/{org}/members/{member}/permissions", Surface::Web, Access::Org(P::RolesManage), member_permissions),
        route!(POST "/o/{org}/transfer", Surface::Web, Access::Org(P::OrgTransfer), transfer),
        route!(GET "/o/{org}/settings", Surface::Web, Access::Org(P::SettingsManage), settings_page),
        route!(POST "/o/{org}/settings", Surface::Web, Access::Org(P::SettingsManage), save_settings),
        route!(POST "/o/{org}/settings/logo", Surface::Web, Access::Org(P::SettingsManage), upload_logo),
        route!(POST "/o/{org}/settings/contact", Surface::Web, Access::Org(P::SettingsManage), save_contact_form),
        route!(GET "/o/{org}/settings/security", Surface::Web, Access::Org(P::SettingsSecurity), security_page),
        route!(POST "/o/{org}/settings/security", Surface::Web, Access::Org(P::SettingsSecurity), save_security),
        route!(POST "/o/{org}/settings/allowlist", Surface::Web, Access::Org(P::IpAllowlistManage), save_allowlist),
        route!(GET "/o/{org}/settings/roles", Surface::Web, Access::Org(P::RolesManage), roles_page),
        route!(POST "/o/{org}/settings/roles", Surface::Web, Access::Org(P::RolesManage), save_roles),
        route!(GET "/app", Surface::Web, Access::SignedIn, app_home),
        route!(GET "/orgs", Surface::Web, Access::SignedIn, orgs_page),
        route!(POST "/invitations/{invitation}/join", Surface::Web, Access::SignedIn, join_invitation),
        route!(GET "/invitations/accept", Surface::Web, Access::Public, invitation_page),
        route!(POST "/invitations/accept", Surface::Web, Access::Public, accept_invitation)
            .limited(&[AUTH_PER_IP, TOKEN_PER_ACCOUNT]),
        route!(POST "/invitations/decline", Surface::Web, Access::Public, decline_invitation),
    ]
}

fn parse_id<T: std::str::FromStr>(raw: &str) -> AppResult<T> {
    raw.parse().map_err(|_| AppError::not_found())
}

// ---- creating and leaving ----

#[derive(Template)]
#[template(path = "tenancy/new_org.html")]
struct NewOrgPage {
    csrf: String,
    name: String,
    slug: String,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// The regions a new organization may live in (the select shows with more than one).
    regions: Vec<RegionChoice>,
}

/// A region on the create-organization form.
pub struct RegionChoice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The installation's regions, `chosen` (or the default for new organizations) selected.
pub fn region_choices(state: &AppState, chosen: Option<&str>) -> Vec<RegionChoice> {
    let residency = &state.config.residency;
    let default = residency.new_organization_region();
    state
        .db
        .region_ids()
        .into_iter()
        .map(|r| RegionChoice {
            value: r.to_string(),
            label: residency.label(r),
            selected: match chosen {
                Some(c) => c == r.as_str(),
                None => r == default,
            },
        })
        .collect()
}

async fn new_org_page(State(state): State<AppState>, FormToken(csrf): FormToken) -> AppResult<Response> {
    page(&NewOrgPage {
        csrf,
        name: String::new(),
        slug: String::new(),
        message: None,
        errors: vec![],
        regions: region_choices(&state, None),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrgForm {
    name: String,
    #[serde(default)]
    slug: String,
    /// The region's name; absent: the installation's default for new organizations.
    #[serde(default)]
    region: Option<String>,
}

async fn create_org(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    current: CurrentSession,
    Form(form): Form<NewOrgForm>,
) -> AppResult<Response> {
    let region = match form.region.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        None => Some(state.config.residency.new_organization_region()),
        Some(name) => match crate::platform::db::RegionId::parse(name) {
            Some(r) => Some(r),
            None => return Err(AppError::field("region", "is not a region this installation offers")),
        },
    };
    match service::create_organization(&state.db, &ctx, &current.user, &form.name, &form.slug, region).await {
        Ok(org) => Ok(Redirect::to(&format!("/o/{}", org.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let regions = region_choices(&state, form.region.as_deref());
            page_with_status(status, &NewOrgPage { csrf, name: form.name, slug: form.slug, message, errors, regions })
        }
    }
}

async fn logo(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT content_type, bytes FROM organization_logos WHERE organization_id = $1")
            .bind(tx.org_id())
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let (content_type, bytes) = row.ok_or(AppError::not_found())?;
    let mut res = bytes.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).map_err(AppError::internal)?);
    Ok(res)
}

async fn leave(State(state): State<AppState>, ctx: Context, access: OrgAccess) -> AppResult<Response> {
    let me = access.principal.user_id().ok_or(AppError::not_found())?;
    service::remove_member(&state.db, &ctx, &access.principal, me).await?;
    Ok(Redirect::to("/app").into_response())
}

// ---- members ----

struct MemberView {
    user_id: String,
    email: String,
    display_name: String,
    role: Role,
    status: String,
    manageable: bool,
    transferable: bool,
}

struct InvitationView {
    id: String,
    email: String,
    role: Role,
    expires: String,
}

#[derive(Template)]
#[template(path = "tenancy/members.html")]
struct MembersPage {
    csrf: String,
    org: OrgNav,
    members: Vec<MemberView>,
    invitations: Vec<InvitationView>,
    grantable: Vec<Role>,
    can_manage: bool,
    can_invite: bool,
    can_transfer: bool,
    can_roles: bool,
    clients: Vec<(String, String)>,
    typed: InviteForm,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// What the ownership transfer asks for to confirm it's the Owner.
    reauth: ReauthPrompt,
}

async fn members_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<MembersPage> {
    let p = &access.principal;
    let mut tx = OrgTx::begin(&state.db, p).await?;
    let rows = service::members(&mut tx).await?;
    let invitations = service::open_invitations(&mut tx, state.clock.now()).await?;
    // The client records a Client-role invitation can be for (a picker, not an id to paste).
    let clients: Vec<(String, String)> = if p.can(P::MembersInvite) {
        sqlx::query_as("SELECT id::text, name FROM clients ORDER BY lower(name), id LIMIT 1000")
            .fetch_all(&mut *tx)
            .await?
    } else {
        vec![]
    };
    tx.commit().await?;
    let me = p.user_id();
    let reauth = ReauthPrompt::for_user(state, me).await?;
    Ok(MembersPage {
        reauth,
        csrf,
        org: OrgNav::of(access),
        members: rows
            .into_iter()
            .map(|m| MemberView {
                manageable: Some(m.user_id) != me && service::may_act_on(p.role(), m.role),
                transferable: Some(m.user_id) != me && m.status == "active" && m.role != Role::Client,
                user_id: m.user_id.to_string(),
                email: m.email,
                display_name: m.display_name,
                role: m.role,
                status: m.status,
            })
            .collect(),
        invitations: invitations
            .into_iter()
            .map(|i| InvitationView {
                id: i.id.to_string(),
                email: i.email,
                role: i.role,
                expires: access.when(i.expires_at),
            })
            .collect(),
        grantable: Role::ALL.into_iter().filter(|r| service::may_grant(p.role(), *r)).collect(),
        can_manage: p.can(P::MembersManage),
        can_invite: p.can(P::MembersInvite),
        can_transfer: p.can(P::OrgTransfer),
        can_roles: p.can(P::RolesManage),
        clients,
        typed: InviteForm { role: "member".into(), ..InviteForm::default() },
        message,
        errors,
    })
}

async fn members_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    page(&members_view(&state, csrf, &access, None, vec![]).await?)
}

/// After a members action: back to the list, or the list with the failure.
async fn members_result(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    result: Result<(), impl Into<AppError>>,
) -> AppResult<Response> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/members", access.slug)).into_response()),
        Err(AppError::Domain(DomainError::NotFound)) => Err(AppError::not_found()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &members_view(state, csrf, access, message, errors).await?)
        }
    }
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct InviteForm {
    email: String,
    role: String,
    #[serde(default)]
    client_id: String,
    /// Re-authentication, asked for on a page of its own when the invitation is for an Admin.
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    confirming: Option<String>,
}

/// The page that asks an inviter or a role change for the password before someone becomes an
/// Admin (lasting access to everything: it is a security change, like a new API key).
#[derive(Template)]
#[template(path = "tenancy/confirm_admin.html")]
struct ConfirmAdminPage {
    csrf: String,
    org: OrgNav,
    action: String,
    who: String,
    hidden: Vec<(&'static str, String)>,
    reauth: ReauthPrompt,
    message: Option<String>,
    errors: Vec<FieldError>,
}

/// Making someone an Admin: `Ok(None)` when confirmed (go ahead), `Ok(Some(page))` when the
/// page asking for the password must be shown first (or again, after a wrong password).
#[allow(clippy::too_many_arguments)]
async fn confirm_admin(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    access: &OrgAccess,
    csrf: &str,
    action: String,
    who: String,
    hidden: Vec<(&'static str, String)>,
    password: &str,
    code: &str,
    confirming: bool,
) -> AppResult<Option<Response>> {
    let failure_page = |message, errors| async {
        let reauth = ReauthPrompt::for_user(state, access.principal.user_id()).await?;
        let view = ConfirmAdminPage {
            csrf: csrf.to_string(),
            org: OrgNav::of(access),
            action: action.clone(),
            who: who.clone(),
            hidden: hidden.clone(),
            reauth,
            message,
            errors,
        };
        AppResult::Ok(view)
    };
    if !confirming {
        return Ok(Some(page(&failure_page(None, vec![]).await?)?));
    }
    match confirm_sensitive_change(state, meta, current, &Secret::new(password.to_string()), code).await {
        Ok(()) => Ok(None),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            Ok(Some(page_with_status(status, &failure_page(message, errors).await?)?))
        }
    }
}

async fn invite(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(mut form): Form<InviteForm>,
) -> AppResult<Response> {
    let password = std::mem::take(&mut form.current_password);
    // Asked only of who may make Admins at all; anyone else gets the service's refusal.
    if form.role == "admin" && service::may_grant(access.principal.role(), Role::Admin) {
        let hidden =
            vec![("email", form.email.clone()), ("role", form.role.clone()), ("client_id", form.client_id.clone())];
        let action = format!("/o/{}/invitations", access.slug);
        let who = form.email.trim().to_string();
        let confirming = form.confirming.is_some();
        if let Some(page) = confirm_admin(
            &state, &meta, &current, &access, &csrf, action, who, hidden, &password, &form.code, confirming,
        )
        .await?
        {
            return Ok(page);
        }
    }
    let result = async {
        let role: Role = form.role.parse().map_err(|m: String| AppError::field("role", m))?;
        let client_id = match form.client_id.trim() {
            "" if role == Role::Client => {
                return Err(AppError::field("client_id", "choose the client this person belongs to"));
            }
            "" => None,
            raw => Some(
                raw.parse::<ClientId>().map_err(|_| AppError::field("client_id", "choose a client from the list"))?,
            ),
        };
        service::invite(&state.db, &ctx, &access.principal, &state.config.public_url(), &form.email, role, client_id)
            .await
            .map_err(AppError::from)
            .map(|_| ())
    }
    .await;
    match result {
        Ok(()) => {
            state.mail_wake.notify_one();
            Ok(Redirect::to(&format!("/o/{}/members", access.slug)).into_response())
        }
        Err(AppError::Domain(DomainError::NotFound)) => Err(AppError::not_found()),
        Err(e) => {
            // The form comes back as it was typed, with the problem next to its field.
            let (status, message, errors) = failure(e)?;
            let mut view = members_view(&state, csrf, &access, message, errors).await?;
            view.typed = form;
            page_with_status(status, &view)
        }
    }
}

async fn revoke_invitation(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = parse_id(&id)?;
    let r = service::revoke_or_resend(&state.db, &ctx, &access.principal, &state.config.public_url(), id, false).await;
    members_result(&state, csrf, &access, r).await
}

async fn resend_invitation(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = parse_id(&id)?;
    let r = service::revoke_or_resend(&state.db, &ctx, &access.principal, &state.config.public_url(), id, true).await;
    state.mail_wake.notify_one();
    members_result(&state, csrf, &access, r).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleForm {
    role: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    confirming: Option<String>,
}

// An axum handler: each argument is an extractor.
#[allow(clippy::too_many_arguments)]
async fn change_role(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
    Form(form): Form<RoleForm>,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    if form.role == "admin" && service::may_grant(access.principal.role(), Role::Admin) {
        let who = {
            let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
            let email: Option<String> = sqlx::query_scalar(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.user_id = $1",
            )
            .bind(member)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            email.ok_or(AppError::not_found())?
        };
        let hidden = vec![("role", form.role.clone()), ("client_id", form.client_id.clone())];
        let action = format!("/o/{}/members/{member}/role", access.slug);
        let confirming = form.confirming.is_some();
        if let Some(page) = confirm_admin(
            &state,
            &meta,
            &current,
            &access,
            &csrf,
            action,
            who,
            hidden,
            &form.current_password,
            &form.code,
            confirming,
        )
        .await?
        {
            return Ok(page);
        }
    }
    let result = async {
        let role: Role = form.role.parse().map_err(|m: String| AppError::field("role", m))?;
        let client_id = match form.client_id.trim() {
            "" => None,
            raw => Some(raw.parse::<ClientId>().map_err(|_| AppError::field("client_id", "is not a client id"))?),
        };
        service::change_role(&state.db, &ctx, &access.principal, member, role, client_id).await.map_err(AppError::from)
    }
    .await;
    members_result(&state, csrf, &access, result).await
}

async fn suspend(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    let r = service::set_suspended(&state.db, &ctx, &access.principal, member, true).await;
    members_result(&state, csrf, &access, r).await
}

async fn reactivate(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    let r = service::set_suspended(&state.db, &ctx, &access.principal, member, false).await;
    members_result(&state, csrf, &access, r).await
}

async fn remove(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    let r = service::remove_member(&state.db, &ctx, &access.principal, member).await;
    members_result(&state, csrf, &access, r).await
}

/// Parses repeated form fields (`permission=a&permission=b`, `grant=…`, `deny=…`).
fn repeated(body: &Bytes, name: &str) -> Result<Vec<Permission>, AppError> {
    form_urlencoded::parse(body)
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.parse::<Permission>().map_err(|m| AppError::field(name, m)))
        .collect()
}

fn only_fields(body: &Bytes, allowed: &[&str]) -> Result<(), AppError> {
    match form_urlencoded::parse(body).find(|(k, _)| !allowed.contains(&k.as_ref())) {
        Some((k, _)) => Err(AppError::field(&k, "is not a field of this form")),
        None => Ok(()),
    }
}

async fn member_permissions(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    let result = async {
        only_fields(&body, &["grant", "deny"])?;
        let mut overrides: Vec<(Permission, bool)> = repeated(&body, "grant")?.into_iter().map(|p| (p, true)).collect();
        overrides.extend(repeated(&body, "deny")?.into_iter().map(|p| (p, false)));
        service::set_member_overrides(&state.db, &ctx, &access.principal, member, &overrides)
            .await
            .map_err(AppError::from)
    }
    .await;
    members_result(&state, csrf, &access, result).await
}

struct PermissionRow {
    name: &'static str,
    describe: &'static str,
    from_role: bool,
    granted: bool,
    denied: bool,
    effective: bool,
}

#[derive(Template)]
#[template(path = "tenancy/member_permissions.html")]
struct MemberPermissionsPage {
    csrf: String,
    org: OrgNav,
    user_id: String,
    email: String,
    role: &'static str,
    permissions: Vec<PermissionRow>,
}

/// Per-member overrides: what the role gives (as customized here), what is granted or denied
/// on top, and the effective result — computed by the same function the server enforces with.
async fn member_permissions_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, member)): Path<(String, String)>,
) -> AppResult<Response> {
    let member: UserId = parse_id(&member)?;
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let row = service::members(&mut tx).await?.into_iter().find(|m| m.user_id == member).ok_or(AppError::not_found())?;
    if !crate::access::role::customizable(row.role) {
        return Err(AppError::conflict(format!(
            "{} permissions are fixed; only Managers and Members have individual permissions.",
            row.role.label()
        )));
    }
    let role_custom = service::role_customization(&mut tx, row.role).await?;
    let overrides: Vec<(String, bool)> = sqlx::query_as(
        "SELECT permission, granted FROM member_permissions WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(tx.org_id())
    .bind(member)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let overrides: Vec<(Permission, bool)> =
        overrides.into_iter().filter_map(|(p, g)| p.parse().ok().map(|p| (p, g))).collect();
    let from_role = crate::access::role::effective_permissions(row.role, &role_custom, &[]);
    let effective = crate::access::role::effective_permissions(row.role, &role_custom, &overrides);
    let permissions = admin_bound()
        .iter()
        .filter(|p| *p != P::OrgAccess)
        .map(|p| PermissionRow {
            name: p.as_str(),
            describe: p.describe(),
            from_role: from_role.contains(p),
            granted: overrides.contains(&(p, true)),
            denied: overrides.contains(&(p, false)),
            effective: effective.contains(p),
        })
        .collect();
    page(&MemberPermissionsPage {
        csrf,
        org: OrgNav::of(&access),
        user_id: member.to_string(),
        email: row.email,
        role: row.role.label(),
        permissions,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferForm {
    member: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

async fn transfer(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(form): Form<TransferForm>,
) -> AppResult<Response> {
    let result = async {
        let member: UserId = form.member.parse().map_err(|_| AppError::field("member", "choose a member"))?;
        confirm_sensitive_change(&state, &meta, &current, &Secret::new(form.current_password), &form.code).await?;
        service::transfer_ownership(&state.db, &ctx, &access.principal, member).await.map_err(AppError::from)
    }
    .await;
    members_result(&state, csrf, &access, result).await
}

// ---- settings ----

#[derive(Template)]
#[template(path = "tenancy/settings.html")]
struct SettingsPage {
    csrf: String,
    org: OrgNav,
    settings: service::Settings,
    has_logo: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// Where the organization's data lives: the region's name and what it is called.
    region: String,
    region_label: String,
}

async fn settings_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<SettingsPage> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let settings = service::settings(&mut tx).await?;
    let has_logo: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organization_logos WHERE organization_id = $1)")
            .bind(tx.org_id())
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let region = access.principal.region();
    Ok(SettingsPage {
        csrf,
        org: OrgNav::of(access),
        settings,
        has_logo,
        message,
        errors,
        region: region.to_string(),
        region_label: state.config.residency.label(region),
    })
}

async fn settings_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    page(&settings_view(&state, csrf, &access, None, vec![]).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsForm {
    name: String,
    slug: String,
    brand_color: String,
    timezone: String,
    currency: String,
}

async fn save_settings(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<SettingsForm>,
) -> AppResult<Response> {
    let input = GeneralSettings {
        name: form.name,
        slug: form.slug,
        brand_color: form.brand_color,
        timezone: form.timezone,
        currency: form.currency,
    };
    match service::update_general(&state.db, &ctx, &access.principal, input).await {
        Ok(()) => {
            let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
            let slug = service::settings(&mut tx).await?.slug;
            tx.commit().await?;
            Ok(Redirect::to(&format!("/o/{slug}/settings")).into_response())
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &settings_view(&state, csrf, &access, message, errors).await?)
        }
    }
}

async fn upload_logo(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    mut multipart: Multipart,
) -> AppResult<Response> {
    let mut bytes = None;
    while let Some(field) =
        multipart.next_field().await.map_err(|e| AppError::BadRequest(format!("Bad upload: {e}")))?
    {
        if field.name() == Some("logo") {
            bytes = Some(field.bytes().await.map_err(|_| AppError::PayloadTooLarge)?);
        }
    }
    let result = match bytes {
        Some(b) => service::set_logo(&state.db, &ctx, &access.principal, &b).await,
        None => Err(DomainError::field("logo", "choose an image")),
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/settings", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &settings_view(&state, csrf, &access, message, errors).await?)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactFormSettingsForm {
    #[serde(default)]
    contact_form_enabled: Option<String>,
    #[serde(default)]
    contact_email: String,
}

async fn save_contact_form(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<ContactFormSettingsForm>,
) -> AppResult<Response> {
    let enabled = form.contact_form_enabled.as_deref() == Some("on");
    match service::update_contact_form(&state.db, &ctx, &access.principal, enabled, &form.contact_email).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/settings", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &settings_view(&state, csrf, &access, message, errors).await?)
        }
    }
}

#[derive(Template)]
#[template(path = "tenancy/security.html")]
struct SecurityPage {
    csrf: String,
    org: OrgNav,
    settings: service::Settings,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// The allowlist as the textarea shows it (what was submitted, after a refused save).
    allowlist: String,
    can_allowlist: bool,
    /// The address this request came from, as the allowlist sees it.
    client_ip: String,
    /// A save was refused because it would lock the saver out: show the confirmation box.
    confirm_lockout: bool,
    /// What both forms ask for to confirm it's the signed-in person.
    reauth: ReauthPrompt,
}

/// What the security page shows besides the settings.
struct AllowlistView {
    /// `None`: the stored list.
    submitted: Option<String>,
    client_ip: std::net::IpAddr,
}

async fn security_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    message: Option<String>,
    errors: Vec<FieldError>,
    allowlist: AllowlistView,
) -> AppResult<SecurityPage> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let settings = service::settings(&mut tx).await?;
    let stored: Vec<ipnet::IpNet> = sqlx::query_scalar("SELECT ip_allowlist FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let confirm_lockout = errors.iter().any(|e| e.field == "confirm_lockout");
    let reauth = ReauthPrompt::for_user(state, access.principal.user_id()).await?;
    Ok(SecurityPage {
        reauth,
        csrf,
        org: OrgNav::of(access),
        settings,
        message,
        errors,
        allowlist: allowlist.submitted.unwrap_or_else(|| super::allowlist::render(&stored)),
        can_allowlist: access.principal.can(P::IpAllowlistManage),
        client_ip: crate::platform::net::normalize_ip(allowlist.client_ip).to_string(),
        confirm_lockout,
    })
}

async fn security_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    meta: RequestMeta,
    access: OrgAccess,
) -> AppResult<Response> {
    let allowlist = AllowlistView { submitted: None, client_ip: meta.ip };
    page(&security_view(&state, csrf, &access, None, vec![], allowlist).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistForm {
    #[serde(default)]
    ip_allowlist: String,
    /// "I understand this locks me out": required to save a list without one's own address.
    #[serde(default)]
    confirm_lockout: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

async fn save_allowlist(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(form): Form<AllowlistForm>,
) -> AppResult<Response> {
    let confirmed = form.confirm_lockout.as_deref() == Some("on");
    let password = Secret::new(form.current_password);
    let result = async {
        let list = super::allowlist::parse(&form.ip_allowlist)?;
        confirm_sensitive_change(&state, &meta, &current, &password, &form.code).await?;
        super::allowlist::save(&state.db, &ctx, &access.principal, list, meta.ip, confirmed).await
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/settings/security", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let allowlist = AllowlistView { submitted: Some(form.ip_allowlist), client_ip: meta.ip };
            page_with_status(status, &security_view(&state, csrf, &access, message, errors, allowlist).await?)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityForm {
    #[serde(default)]
    session_timeout_minutes: String,
    #[serde(default)]
    require_two_factor: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    code: String,
}

async fn save_security(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    current: CurrentSession,
    access: OrgAccess,
    Form(form): Form<SecurityForm>,
) -> AppResult<Response> {
    let result = async {
        let timeout = match form.session_timeout_minutes.trim() {
            "" => None,
            raw => Some(
                raw.parse::<i32>()
                    .map_err(|_| AppError::field("session_timeout_minutes", "must be a number of minutes"))?,
            ),
        };
        let require = form.require_two_factor.as_deref() == Some("on");
        confirm_sensitive_change(&state, &meta, &current, &Secret::new(form.current_password), &form.code).await?;
        service::update_security(&state.db, &ctx, &access.principal, current.two_factor, timeout, require)
            .await
            .map_err(AppError::from)
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/settings/security", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let allowlist = AllowlistView { submitted: None, client_ip: meta.ip };
            page_with_status(status, &security_view(&state, csrf, &access, message, errors, allowlist).await?)
        }
    }
}

struct RoleView {
    name: &'static str,
    label: &'static str,
    permissions: Vec<(&'static str, bool, &'static str)>,
}

#[derive(Template)]
#[template(path = "tenancy/roles.html")]
struct RolesPage {
    csrf: String,
    org: OrgNav,
    roles: Vec<RoleView>,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn roles_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<RolesPage> {
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let mut roles = Vec::new();
    // Only the roles the viewer may reshape (a Member with `roles.manage` sees the Member role).
    for role in [Role::Manager, Role::Member].into_iter().filter(|r| service::may_act_on(access.principal.role(), *r)) {
        let custom = service::role_customization(&mut tx, role).await?;
        let effective = crate::access::role::effective_permissions(role, &custom, &[]);
        roles.push(RoleView {
            name: role.as_str(),
            label: role.label(),
            permissions: admin_bound()
                .iter()
                .filter(|p| *p != P::OrgAccess)
                .map(|p| (p.as_str(), effective.contains(p), p.describe()))
                .collect(),
        });
    }
    tx.commit().await?;
    Ok(RolesPage { csrf, org: OrgNav::of(access), roles, message, errors })
}

async fn roles_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    page(&roles_view(&state, csrf, &access, None, vec![]).await?)
}

async fn save_roles(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    body: Bytes,
) -> AppResult<Response> {
    let result = async {
        only_fields(&body, &["role", "permission"])?;
        // Exactly one role: with two, which one a save changes would depend on field order.
        let roles: Vec<String> =
            form_urlencoded::parse(&body).filter(|(k, _)| k == "role").map(|(_, v)| v.into_owned()).collect();
        let [role] = roles.as_slice() else {
            return Err(AppError::field("role", "choose exactly one role to customize"));
        };
        let role: Role = role.parse().map_err(|m: String| AppError::field("role", m))?;
        let mut wanted = PermissionSet::of(&repeated(&body, "permission")?);
        wanted.insert(P::OrgAccess);
        let _ = default_permissions(role);
        service::set_role_permissions(&state.db, &ctx, &access.principal, role, wanted).await.map_err(AppError::from)
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/settings/roles", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &roles_view(&state, csrf, &access, message, errors).await?)
        }
    }
}

// ---- invitations (for the invitee) ----

#[derive(Template)]
#[template(path = "tenancy/invitation.html")]
struct InvitationPage {
    csrf: String,
    token: String,
    organization: String,
    role: &'static str,
    email: String,
    mode: &'static str,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn invitation_view(
    state: &AppState,
    headers: &HeaderMap,
    csrf: String,
    token: String,
) -> AppResult<Option<InvitationPage>> {
    let Some(invitation) = crate::access::find_invitation(&state.db, &token, state.clock.now()).await? else {
        return Ok(None);
    };
    let session = crate::identity::guard::current_session(state, headers).await?;
    let mode = match session {
        Some(s) if s.stage == crate::identity::session::Stage::Complete => {
            if s.email.eq_ignore_ascii_case(&invitation.email) { "signed-in" } else { "wrong-account" }
        }
        _ => {
            let mut g = state.db.global().await?;
            let email = crate::platform::types::Email::parse(&invitation.email).map_err(AppError::internal)?;
            let exists = crate::identity::repo::find_by_email(&mut g, &email).await?.is_some();
            g.commit().await?;
            if exists { "sign-in" } else { "new-account" }
        }
    };
    Ok(Some(InvitationPage {
        csrf,
        token,
        organization: invitation.organization_name,
        role: invitation.role.label(),
        email: invitation.email,
        mode,
        message: None,
        errors: vec![],
    }))
}

fn invitation_gone() -> AppResult<Response> {
    let mut res = (
        StatusCode::BAD_REQUEST,
        crate::web::render(&crate::identity::web::Notice {
            title: "This invitation is no longer valid",
            paragraphs: vec!["It may have expired, been revoked or already been answered. Ask for a new one."],
            link: Some(("/login", "Sign in")),
        })?,
    )
        .into_response();
    res.extensions_mut().insert(RenderedByHandler);
    Ok(res)
}

async fn invitation_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    match invitation_view(&state, &headers, csrf, q.token).await? {
        Some(p) => page(&p),
        None => invitation_gone(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptForm {
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    display_name: String,
}

/// Accepts for the signed-in invitee, or signs the invitee in (through the second-factor
/// gate) or creates their account first.
async fn accept_invitation(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> AppResult<Response> {
    let session = crate::identity::guard::current_session(&state, &headers).await?;
    let result = match session {
        Some(s) if s.stage == crate::identity::session::Stage::Complete => {
            service::accept_invitation(&state.db, &ctx, &s.user, &s.email, &form.token)
                .await
                .map(|org| Redirect::to(&format!("/o/{}", org.slug)).into_response())
                .map_err(AppError::from)
        }
        _ => {
            async {
                let invitation =
                    crate::access::find_invitation(&state.db, &form.token, meta.now).await?.ok_or_else(|| {
                        AppError::BadRequest("This invitation is invalid, expired or already answered.".into())
                    })?;
                let signed_in = crate::identity::web::invitation_sign_in(
                    &state,
                    &meta,
                    &headers,
                    &invitation.email,
                    &crate::platform::secret::Secret::new(form.password.clone()),
                    &form.display_name,
                )
                .await?;
                match signed_in.user.clone() {
                    Some(user) => {
                        let org =
                            service::accept_invitation(&state.db, &ctx, &user, &invitation.email, &form.token).await?;
                        Ok(signed_in.respond(&state, &format!("/o/{}", org.slug)))
                    }
                    // The second factor first; then back to the invitation.
                    None => {
                        let back = format!(
                            "/invitations/accept?token={}",
                            percent_encoding::utf8_percent_encode(&form.token, percent_encoding::NON_ALPHANUMERIC)
                        );
                        Ok(signed_in.respond(&state, &back))
                    }
                }
            }
            .await
        }
    };
    match result {
        Ok(res) => Ok(res),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            match invitation_view(&state, &headers, csrf, form.token).await? {
                Some(mut p) => {
                    p.message = message;
                    p.errors = errors;
                    page_with_status(status, &p)
                }
                None => invitation_gone(),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclineForm {
    token: String,
}

async fn decline_invitation(
    State(state): State<AppState>,
    ctx: Context,
    Form(form): Form<DeclineForm>,
) -> AppResult<Response> {
    match service::decline_invitation(&state.db, &ctx, &form.token).await {
        Ok(()) => page(&crate::identity::web::Notice {
            title: "Invitation declined",
            paragraphs: vec!["Nothing else will happen; you can close this page."],
            link: None,
        }),
        Err(DomainError::Malformed(_)) => invitation_gone(),
        Err(e) => Err(e.into()),
    }
}

// ---- the signed-in home: one's organizations ----

pub struct OrgLink {
    pub name: String,
    pub role: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "tenancy/app_home.html")]
struct AppHome {
    csrf: String,
    email: String,
    display_name: String,
    organizations: Vec<OrgLink>,
    /// Open invitations to the person's verified address, each accepted with one button.
    invitations: Vec<InvitationChoice>,
    /// Why accepting one of them failed.
    join_error: Option<String>,
    name: String,
    slug: String,
    message: Option<String>,
    errors: Vec<FieldError>,
    regions: Vec<RegionChoice>,
}

struct InvitationChoice {
    id: String,
    organization: String,
    role: &'static str,
    expires: String,
}

async fn invitations_for(state: &AppState, current: &CurrentSession) -> AppResult<Vec<InvitationChoice>> {
    Ok(crate::access::pending_invitations(&state.db, &current.user, state.clock.now())
        .await?
        .into_iter()
        .map(|i| InvitationChoice {
            id: i.id.to_string(),
            organization: i.organization_name,
            role: i.role.label(),
            expires: i.expires_at.date().to_string(),
        })
        .collect())
}

/// The getting-started page (or the organizations page), with `join_error` when accepting an
/// invitation failed.
async fn app_home_page(
    state: &AppState,
    csrf: String,
    current: &CurrentSession,
    organizations: Vec<OrgLink>,
    join_error: Option<String>,
) -> AppResult<AppHome> {
    let user = crate::identity::service::load_user(state, current.user.id()).await?;
    Ok(AppHome {
        csrf,
        email: user.email,
        display_name: user.display_name,
        organizations,
        invitations: invitations_for(state, current).await?,
        join_error,
        name: String::new(),
        slug: String::new(),
        message: None,
        errors: vec![],
        regions: region_choices(state, None),
    })
}

/// Accepts an invitation from the getting-started page: one waiting for the person's own
/// verified address, no token needed (the address is the proof, as it is for the emailed link).
async fn join_invitation(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    current: CurrentSession,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let id: uuid::Uuid = id.parse().map_err(|_| AppError::not_found())?;
    match service::accept_invitation_by_id(&state.db, &ctx, &current.user, id).await {
        Ok(org) => Ok(Redirect::to(&format!("/o/{}", org.slug)).into_response()),
        Err(e) => {
            let (status, message, _) = failure(e)?;
            let organizations = organizations_of(&state, &current).await?.into_iter().map(|(_, l)| l).collect();
            page_with_status(status, &app_home_page(&state, csrf, &current, organizations, message).await?)
        }
    }
}

/// The user's organizations, each with where it opens (a Client's opens in the portal).
/// Every region is asked (memberships are rows of their organization's region).
async fn organizations_of(state: &AppState, current: &CurrentSession) -> AppResult<Vec<(String, OrgLink)>> {
    let mut organizations = Vec::new();
    for db in state.db.every_region() {
        let mut tx = crate::platform::db::UserTx::begin(&db, &current.user).await?;
        let listed = super::repo::list_for_user(&mut tx).await?;
        tx.commit().await?;
        // Listed once: not from the copy a move makes or leaves behind.
        for (org, role) in listed {
            if crate::access::directory::own_copy(&state.db, org.id, db.region()).await?.is_some() {
                organizations.push((org, role));
            }
        }
    }
    if state.db.is_multi_region() {
        organizations.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
    }
    Ok(organizations
        .into_iter()
        .map(|(o, role)| {
            let href = if role == Role::Client { format!("/portal/{}", o.slug) } else { format!("/o/{}", o.slug) };
            (o.slug, OrgLink { name: o.name, role: role.label().to_string(), href })
        })
        .collect())
}

/// Where a signed-in person lands: the organization they last worked in (or their only or
/// first one; a Client in the portal), or, with none yet, getting started.
async fn app_home(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
    headers: HeaderMap,
) -> AppResult<Response> {
    let organizations = organizations_of(&state, &current).await?;
    let last = crate::access::asking::read_cookie(&headers, crate::web::LAST_ORG_COOKIE);
    let pick = organizations.iter().find(|(slug, _)| Some(slug) == last.as_ref()).or(organizations.first());
    if let Some((_, link)) = pick {
        return Ok(Redirect::to(&link.href).into_response());
    }
    page(&app_home_page(&state, csrf, &current, vec![], None).await?)
}

/// The organization switcher: every organization of the user, and creating another.
async fn orgs_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    current: CurrentSession,
) -> AppResult<Response> {
    let organizations = organizations_of(&state, &current).await?.into_iter().map(|(_, l)| l).collect();
    page(&app_home_page(&state, csrf, &current, organizations, None).await?)
}
