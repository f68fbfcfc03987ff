//! The route table is data: every route is declared with the access it needs (and its rate
//! limits), and the router is assembled from those declarations. Tests walk the same table.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::error::AppError;
use super::middleware::ClientIp;
use crate::abuse::limits::{self, Applied, Limit};
use crate::identity::guard as identity_guard;
use crate::identity::session::Stage;
use crate::platform::net;
use crate::state::AppState;

/// What a route requires before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Operations endpoints: from `metrics.allow` addresses or with the metrics token.
    Operator,
    /// A fully signed-in user (second factor done when the account has one).
    SignedIn,
    /// A sign-in waiting for its second factor (the second-factor page only).
    SecondFactor,
    /// Any session, finished or not (signing out).
    AnySession,
    /// A member of the organization in the `{org}` path segment holding this permission.
    Org(crate::tenancy::role::Permission),
    /// An organization API key (bearer) holding this permission.
    Api(crate::tenancy::role::Permission),
}

/// Which surface a route belongs to (decides error format and authentication later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Web,
    Api,
    Ops,
}

pub struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub surface: Surface,
    /// Rate limits, checked by the route guard (`abuse::limits`): the surface's defaults plus
    /// what [`RouteDef::limited`] adds.
    pub limits: Vec<Limit>,
    pub handler: MethodRouter<AppState>,
}

impl RouteDef {
    pub fn new(
        method: Method,
        path: &'static str,
        surface: Surface,
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> Self {
        Self { method, path, access, surface, limits: limits::default_limits(surface, access), handler }
    }

    /// Declares rate limits on this route, checked in this order after the surface's own:
    /// `route!(POST "/login", …).limited(&[AUTH_PER_IP, SIGN_IN_PER_ACCOUNT])`.
    pub fn limited(mut self, limits: &[Limit]) -> Self {
        self.limits.extend_from_slice(limits);
        self
    }
}

/// What the per-route guard knows about its route.
#[derive(Clone)]
pub struct RouteGuard {
    pub state: AppState,
    pub access: Access,
    pub surface: Surface,
    pub limits: Arc<[Limit]>,
}

/// Declares a route: `route!(GET "/path", Surface::Web, Access::Public, handler)`.
#[macro_export]
macro_rules! route {
    (GET $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::platform::http::route::RouteDef::new(
            ::axum::http::Method::GET,
            $path,
            $surface,
            $access,
            ::axum::routing::get($handler),
        )
    };
    (POST $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::platform::http::route::RouteDef::new(
            ::axum::http::Method::POST,
            $path,
            $surface,
            $access,
            ::axum::routing::post($handler),
        )
    };
    (PUT $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::platform::http::route::RouteDef::new(
            ::axum::http::Method::PUT,
            $path,
            $surface,
            $access,
            ::axum::routing::put($handler),
        )
    };
    (PATCH $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::platform::http::route::RouteDef::new(
            ::axum::http::Method::PATCH,
            $path,
            $surface,
            $access,
            ::axum::routing::patch($handler),
        )
    };
    (DELETE $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::platform::http::route::RouteDef::new(
            ::axum::http::Method::DELETE,
            $path,
            $surface,
            $access,
            ::axum::routing::delete($handler),
        )
    };
}

/// The per-route guard: runs before the handler, with the route's declared access and rate
/// limits. Every response of a limited route carries its rate-limit headers.
pub async fn guard(State(route): State<RouteGuard>, req: Request, next: Next) -> Response {
    let mut applied = Applied::default();
    let mut rotated = None;
    let res = guarded(&route, req, next, &mut applied, &mut rotated).await;
    let res = match rotated {
        Some(rotated) => rotated.apply(res),
        None => res,
    };
    let mut res = applied.decorate(res);
    // A response behind authentication is never stored, whatever its handler chose: the rule
    // follows the route's declared access, so a new authenticated route can't slip past it.
    // Only `Public` routes (static assets, signed links) pick their own caching.
    if route.access != Access::Public {
        res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    res
}

async fn guarded(
    route: &RouteGuard,
    req: Request,
    next: Next,
    applied: &mut Applied,
    rotated: &mut Option<identity_guard::RotatedSession>,
) -> Response {
    let (state, access, surface) = (&route.state, route.access, route.surface);
    // Text PostgreSQL can't store, in the path or query, before anything looks them up.
    if let Some(res) = super::input::refuse_in_target(req.uri()) {
        return res;
    }
    // Limits keyed on the address or the form come first: a flood is refused before it
    // costs a session lookup or a CSRF check.
    let req = match limits::enforce_before_access(state, &route.limits, req, applied).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    let resolved = match access {
        Access::SignedIn => identity_guard::require_session(state, req, Stage::Complete, rotated).await,
        Access::SecondFactor => identity_guard::require_session(state, req, Stage::Pending, rotated).await,
        Access::AnySession => identity_guard::require_any_session(state, req).await,
        Access::Org(permission) => crate::tenancy::guard::require_org(state, req, permission, rotated).await,
        Access::Api(permission) => crate::api::guard::require_key(state, req, permission).await,
        Access::Public | Access::Operator => Ok(identity_guard::Resolved::Ok(req)),
    };
    let req = match resolved {
        Ok(identity_guard::Resolved::Ok(req)) => req,
        Ok(identity_guard::Resolved::Respond(res)) => return res,
        Err(e) => return e.into_response(),
    };
    // Public web forms are protected too (sign-in and sign-up CSRF).
    let req = if access == Access::Public && surface == Surface::Web && identity_guard::is_unsafe(req.method()) {
        match identity_guard::check_csrf(state, req, None).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    let keys = limits::principal_keys(&route.limits, &req);
    if let Err(res) = limits::enforce_after_access(state, keys, applied).await {
        return res;
    }
    // And in the body, once the request may reach its handler.
    let req = match super::input::refuse_in_body(req, state.config.server.body_limit_bytes).await {
        Ok(req) => req,
        Err(res) => return *res,
    };
    match access {
        Access::Public | Access::SignedIn | Access::SecondFactor | Access::AnySession | Access::Org(_) => {
            next.run(req).await
        }
        Access::Api(_) => crate::api::idempotency::wrap(state, req, next).await,
        Access::Operator => {
            let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
            let from_allowed = ip.is_some_and(|ip| net::contains(&state.config.metrics.allow, ip));
            let token_ok = match (&state.config.metrics.token, bearer(&req)) {
                (Some(expected), Some(given)) => expected.ct_eq(given),
                _ => false,
            };
            if from_allowed || token_ok {
                next.run(req).await
            } else {
                AppError::Forbidden(
                    "Operations endpoints are available from allowed addresses or with the metrics token.".into(),
                )
                .into_response()
            }
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}
