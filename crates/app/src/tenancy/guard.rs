//! The organization guard: for routes declared `Access::Org(permission)`, resolves the
//! organization from the `{org}` path segment among the signed-in user's own memberships,
//! enforces the organization's security settings (IP allowlist, idle timeout, required second
//! factor), checks the permission, and hands the handler a verified principal. A foreign or
//! unknown organization is 404, an address outside the allowlist or an insufficient role 403.

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect};

use crate::access::member::MemberRequest;
use crate::access::role::Permission;
use crate::access::{self, OrgPrincipal};
use crate::identity::guard::{Resolved, RotatedSession, admit_session, session_at_stage};
use crate::identity::session::{self, Stage};
use crate::platform::http::error::AppError;
use crate::platform::http::middleware::{ClientIp, RequestId};
use crate::state::AppState;

/// What an organization route's handler gets: the verified principal and the organization's
/// display facts.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    pub principal: OrgPrincipal,
    pub slug: String,
    pub name: String,
    pub brand_color: String,
    /// The organization's IANA time zone: its pages show times in it.
    pub timezone: String,
    /// The user's organizations, for the navigation's switcher.
    pub memberships: Vec<crate::access::member::OrgChoice>,
    /// How many of the user's notifications here are unread (the navigation shows it).
    pub unread: i64,
    /// The user's running timer, for the navigation's indicator.
    pub running_timer: Option<crate::access::member::RunningTimer>,
}

impl OrgAccess {
    /// A time as this organization's pages show it, in its time zone.
    pub fn when(&self, t: time::OffsetDateTime) -> String {
        crate::platform::tz::format(t, &self.timezone)
    }
}

pub async fn require_org(
    state: &AppState,
    req: Request,
    permission: Permission,
    rotated: &mut Option<RotatedSession>,
) -> Result<Resolved, AppError> {
    let is_api = crate::identity::guard::is_api(&req);
    let (mut parts, body) = req.into_parts();
    let slug = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .ok()
        .and_then(|p| p.iter().find(|(k, _)| *k == "org").map(|(_, v)| v.to_string()))
        .ok_or_else(|| AppError::internal("an organization route without an {org} segment"))?;
    let req = Request::from_parts(parts, body);
    // Session, membership, permissions and the organization's settings: one transaction.
    let idle = time::Duration::minutes(state.config.identity.session_idle_minutes.into());
    let resolved = match crate::access::asking::read_cookie(req.headers(), session::SESSION_COOKIE) {
        Some(token) => {
            access::member::resolve_member_request(&state.db, &token, &slug, state.clock.now(), idle).await?
        }
        None => MemberRequest::NoSession,
    };
    let (session, member) = match resolved {
        MemberRequest::NoSession => (None, None),
        MemberRequest::Session(s) => (Some(s), None),
        MemberRequest::Member(s, tx, facts) => (Some(s), Some((*tx, facts))),
    };
    let session = match session_at_stage(session, Stage::Complete, &req) {
        Ok(s) => s,
        Err(res) => return Ok(Resolved::Respond(*res)),
    };
    let Some((mut tx, facts)) = member else {
        let (_, _) = admit_session(state, req, session, rotated, None).await?;
        return Err(AppError::not_found());
    };
    // The session lives in the directory's database: its bookkeeping joins the request's
    // transaction only when the organization lives there too.
    let in_directory = tx.region() == state.db.home_region();
    let (mut req, session) = if in_directory {
        admit_session(state, req, session, rotated, Some(&mut *tx)).await?
    } else {
        admit_session(state, req, session, rotated, None).await?
    };
    let principal = tx.principal().clone();
    let access::member::OrgFacts {
        slug,
        name,
        brand_color,
        timezone,
        session_timeout_minutes: timeout,
        require_two_factor: require_2fa,
        ip_allowlist: allowlist,
        memberships,
        moving,
        running_timer,
    } = *facts;

    // A refusal below still keeps what the resolution wrote (the session's idle clock).
    // The allowlist before anything else the organization's settings decide: from outside, a
    // member gets this refusal on every page and nothing more. (Client-role members use the
    // portal from their own networks: see `super::allowlist`.)
    // No address at all (never the case behind the client-IP middleware) counts as outside.
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if principal.role() != crate::access::role::Role::Client && !super::allowlist::permits(&allowlist, ip) {
        tx.commit().await?;
        return Err(super::allowlist::refusal(&name, ip).into());
    }

    // Scheduled for deletion: only Owners get in during the grace period.
    if principal.role() != crate::access::role::Role::Owner
        && let Some(purge_after) = access::suspension::deletion_scheduled(&mut tx).await?
    {
        tx.commit().await?;
        return Err(access::suspension::refusal(&name, purge_after).into());
    }

    // The organization's shorter idle timeout ends the session, for every organization.
    if let Some(minutes) = timeout
        && session.idle_for >= time::Duration::minutes(minutes.into())
    {
        if in_directory {
            session::delete(&mut tx, session.id).await?;
        } else {
            let mut global = state.db.global().await?;
            session::delete(&mut global, session.id).await?;
            global.commit().await?;
        }
        tx.commit().await?;
        return Ok(Resolved::Respond(if is_api {
            AppError::Unauthorized("Your session ended after inactivity. Sign in again.".into()).into_response()
        } else {
            Redirect::to("/login").into_response()
        }));
    }
    if require_2fa && !session.two_factor {
        tx.commit().await?;
        return Ok(Resolved::Respond(if is_api {
            AppError::forbidden(format!("{name} requires two-factor authentication. Turn it on first.")).into_response()
        } else {
            Redirect::to("/account/two-factor/setup?required=1").into_response()
        }));
    }
    // While the organization moves to another region, its data is read-only. The routing read
    // the directory before this transaction began: a write asks again, holding the move's copy
    // back until it commits (`access::directory::hold_for_writing`), so that a move marked in
    // between neither misses the write nor leaves it in the copy it purges.
    if crate::identity::guard::is_unsafe(req.method())
        && (moving
            || !access::directory::hold_for_writing(&state.db, &mut tx, principal.region(), principal.org_id()).await?)
    {
        tx.commit().await?;
        return Err(super::residency_refusal(&name).into());
    }
    if !principal.can(permission) {
        tx.commit().await?;
        return Err(AppError::forbidden(format!("Your role in {name} doesn't allow this ({}).", permission.as_str())));
    }
    let unread = crate::notify::unread_count(&mut tx, session.user.id()).await?;
    req.extensions_mut().insert(crate::access::Asking::member(session.user.id(), principal.clone()));
    req.extensions_mut().insert(OrgAccess {
        principal,
        slug,
        name,
        brand_color,
        timezone,
        memberships,
        unread,
        running_timer,
    });
    // The page's work runs in the transaction the member was verified in (`crate::routes`).
    req.extensions_mut().insert(crate::access::request_tx::VerifiedTx::new(tx));
    Ok(Resolved::Ok(req))
}

impl FromRequestParts<AppState> for OrgAccess {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<OrgAccess>()
            .cloned()
            .ok_or_else(|| AppError::internal("handler expects an organization but its route is not declared Org"))
    }
}

impl FromRequestParts<AppState> for crate::audit::Context {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user_agent: String = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        Ok(crate::audit::Context {
            ip: parts.extensions.get::<ClientIp>().map(|c| c.0),
            user_agent,
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
            now: state.clock.now(),
            signer: Some(state.audit_signer.clone()),
            plans: state.plans.clone(),
        })
    }
}
