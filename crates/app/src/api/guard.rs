//! The API guard: `Authorization: Bearer cf_live_…` → the key's principal, the organization's
//! IP allowlist, the same permission check as the web, and nothing else (no cookies: the API is not reachable with a
//! browser session, so it needs no CSRF protection).

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

use crate::access::role::Permission;
use crate::access::{self, OrgPrincipal};
use crate::identity::guard::Resolved;
use crate::platform::db::tenant::Writes;
use crate::platform::http::error::AppError;
use crate::platform::http::middleware::ClientIp;
use crate::state::AppState;

/// The verified API key principal of this request.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub principal: OrgPrincipal,
}

/// Missing, malformed, unknown, revoked and expired keys all get exactly this answer, with the
/// RFC 6750 challenge.
fn invalid() -> Resolved {
    let mut res =
        AppError::Unauthorized("A valid API key is required: Authorization: Bearer cf_live_…".into()).into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ClientFlow API\""));
    Resolved::Respond(res)
}

/// `writes` says whether the request's transaction may write (see `routes::guarded`).
pub async fn require_key(
    state: &AppState,
    mut req: Request,
    permission: Permission,
    writes: Writes,
) -> Result<Resolved, AppError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]))
        .map(str::trim)
        .map(str::to_string);
    let Some(presented) = presented else { return Ok(invalid()) };
    // Verified in the transaction the request's work then runs in (see `crate::routes`).
    let Some(access::api_key::KeyRequest { mut tx, allowlist, deletion_scheduled }) =
        access::open_api_key_request(&state.db, &state.api_keys, &presented, state.clock.now(), writes).await?
    else {
        return Ok(invalid());
    };
    let principal = tx.principal().clone();
    // The organization's IP allowlist holds for its keys as for its members: a leaked key is
    // useless outside the listed networks.
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !crate::tenancy::allowlist::permits(&allowlist, ip) {
        return Err(AppError::forbidden(format!(
            "This organization only accepts API requests from its approved network addresses, and this \
             request came from {}. Call the API from an approved network, or ask an Owner to add this address.",
            crate::platform::net::normalize_ip(ip)
        )));
    }
    // Scheduled for deletion: the organization's keys stop working during the grace period.
    // (Read with the key, in the same statement.)
    if let Some(purge_after) = deletion_scheduled {
        let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
            .bind(principal.org_id())
            .fetch_one(&mut *tx)
            .await?;
        return Err(access::suspension::refusal(&name, purge_after).into());
    }
    if !principal.can(permission) {
        return Err(AppError::forbidden(format!("This API key doesn't allow this ({}).", permission.as_str())));
    }
    // While the organization moves to another region, its data is read-only; once it has
    // moved, a write verified in the old region (as the move switched) is refused too: that
    // copy is about to be purged. A write let through holds the move's copy back until it
    // commits, so the copy holds it (with one region there is nowhere to move, nothing to ask).
    // A request that may write is one: of an unsafe method, or of a route that writes when read
    // (a file's download link records itself in the audit log).
    if writes == Writes::Allowed
        && !access::directory::hold_for_writing(&state.db, &mut tx, principal.region(), principal.org_id()).await?
    {
        return Err(crate::tenancy::residency_refusal("This organization").into());
    }
    req.extensions_mut().insert(crate::access::Asking::api_key(principal.clone()));
    req.extensions_mut().insert(ApiAccess { principal });
    req.extensions_mut().insert(crate::access::request_tx::VerifiedTx::new(tx));
    Ok(Resolved::Ok(req))
}

impl FromRequestParts<AppState> for ApiAccess {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ApiAccess>()
            .cloned()
            .ok_or_else(|| AppError::internal("handler expects an API key but its route is not declared Api"))
    }
}
