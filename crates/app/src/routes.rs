//! The route table and how a request gets through it: each area contributes its declared
//! routes; the router is assembled from them, with the platform's middleware around it and
//! each route's guard (rate limits, then who is asking and whether they may, then the handler).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_response_body::MapResponseBodyLayer;
use tower_http::timeout::TimeoutLayer;

use crate::abuse::guard::{self as limit_guard, Applied};
use crate::abuse::limits::Limit;
use crate::access::route::{Access, RouteDef, Surface};
use crate::identity::guard as identity_guard;
use crate::identity::session::Stage;
use crate::platform::config::PlatformSettings;
use crate::platform::db::tenant::Writes;
use crate::platform::http::error::{self, AppError};
use crate::platform::http::middleware::{self, ClientIp, HttpContext};
use crate::platform::net;
use crate::state::AppState;

pub fn all() -> Vec<RouteDef> {
    let mut routes = Vec::new();
    routes.extend(crate::ops::routes());
    routes.extend(crate::web::routes());
    routes.extend(crate::identity::web::routes());
    routes.extend(crate::tenancy::web::routes());
    routes.extend(crate::tenancy::audit_log::routes());
    routes.extend(crate::work::web::routes());
    routes.extend(crate::api::web::routes());
    routes.extend(crate::api::routes());
    routes.extend(crate::contact::routes());
    routes.extend(crate::mail::web::routes());
    routes.extend(crate::disclosure::routes());
    routes.extend(crate::tenancy::billing::routes());
    routes.extend(crate::billing::webhook::routes());
    routes.extend(crate::privacy::web::routes());
    routes.extend(crate::privacy::deletion_web::routes());
    routes
}

/// Builds the application router from the route table.
pub fn router(state: AppState) -> Router {
    router_from(state, all())
}

/// What the platform's middleware needs, from the application's state.
pub fn http_context(state: &AppState) -> HttpContext {
    HttpContext {
        metrics: state.metrics.clone(),
        security_headers: state.security_headers.clone(),
        trusted_proxies: state.config.server.trusted_proxies.clone().into(),
        behind_proxy: state.config.server.tls == crate::config::TlsMode::Proxy,
        public_url: state.config.public_url().into(),
        error_page: crate::web::error_page,
    }
}

/// Builds a router from an explicit table (the production table, or a test's).
pub fn router_from(state: AppState, defs: Vec<RouteDef>) -> Router {
    crate::errors::register();
    let mut router: Router<AppState> = Router::new();
    for def in defs {
        let guard = RouteGuard {
            state: state.clone(),
            access: def.access,
            surface: def.surface,
            limits: def.limits.into(),
            writes_when_read: def.writes_when_read,
        };
        let handler = def
            .handler
            .route_layer(from_fn_with_state(guard, guard_route))
            .route_layer(from_fn(middleware::mark_route));
        router = router.route(def.path, handler);
    }
    let body_limit = state.config.server.body_limit_bytes;
    // The outer limit admits a file upload; every extractor stays at `body_limit` through
    // `DefaultBodyLimit`, except the upload route, which counts the file itself.
    let outer_limit = state.config.largest_request_body();
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let http = Arc::new(http_context(&state));
    router
        .fallback(|| async { error::AppError::not_found() })
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(middleware::request_id))
                .layer(from_fn_with_state(state.error_reporter.clone(), crate::platform::error_reports::report_errors))
                .layer(from_fn_with_state(http.clone(), middleware::access_log))
                .layer(from_fn_with_state(http.clone(), middleware::security_headers))
                .layer(from_fn_with_state(http.clone(), middleware::render_errors))
                .layer(from_fn(middleware::catch_panic))
                .layer(from_fn_with_state(http, middleware::client_ip))
                .layer(from_fn(web_page_cookies))
                .layer(from_fn(crate::web::page_extras))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
                .layer(MapResponseBodyLayer::new(Body::new))
                .layer(RequestBodyLimitLayer::new(outer_limit))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Web pages (not the API, static files or operations endpoints) get the anonymous CSRF
/// cookie that forms shown before sign-in rely on.
async fn web_page_cookies(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_page = req.method() == axum::http::Method::GET
        && !path.starts_with("/api/")
        && !path.starts_with("/static/")
        && !matches!(path, "/healthz" | "/readyz" | "/metrics");
    if is_page { identity_guard::anon_csrf_cookie(req, next).await } else { next.run(req).await }
}

/// What the per-route guard knows about its route.
#[derive(Clone)]
pub struct RouteGuard {
    pub state: AppState,
    pub access: Access,
    pub surface: Surface,
    pub limits: Arc<[Limit]>,
    /// A request of a safe method may write (`RouteDef::writes_when_read`).
    pub writes_when_read: bool,
}

/// The per-route guard: runs before the handler, with the route's declared access and rate
/// limits. Every response of a limited route carries its rate-limit headers.
pub async fn guard_route(State(route): State<RouteGuard>, req: Request, next: Next) -> Response {
    let mut applied = Applied::default();
    let mut rotated = None;
    let res = guarded(&route, req, next, &mut applied, &mut rotated).await;
    let res = match rotated {
        Some(rotated) => rotated.apply(res),
        None => res,
    };
    let mut res = applied.decorate(res);
    // The route's declared surface decides how an error is rendered.
    res.extensions_mut().insert(route.surface);
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
    let mut req = req;
    // The guards below answer in the route's declared surface (`identity::guard::is_api`).
    req.extensions_mut().insert(surface);
    // Text PostgreSQL can't store, in the path or query, before anything looks them up.
    if let Some(res) = crate::platform::http::input::refuse_in_target(req.uri()) {
        return res;
    }
    // Limits keyed on the address or the form come first: a flood is refused before it
    // costs a session lookup or a CSRF check.
    let req = match limit_guard::enforce_before_access(state, &route.limits, req, applied).await {
        Ok(req) => req,
        Err(res) => return res,
    };
    let resolved = match access {
        Access::SignedIn => identity_guard::require_session(state, req, Stage::Complete, rotated).await,
        Access::SecondFactor => identity_guard::require_session(state, req, Stage::Pending, rotated).await,
        Access::DeletionPending => identity_guard::require_session(state, req, Stage::Departing, rotated).await,
        Access::AnySession => identity_guard::require_any_session(state, req).await,
        Access::Org(permission) => crate::tenancy::guard::require_org(state, req, permission, rotated).await,
        Access::Api(permission) => {
            // A request of a safe method reads: its transaction refuses writes (PostgreSQL
            // enforces it), which lets it end without a commit of its own (`OrgTx::finish`),
            // unless its route declares that it writes when read.
            let writes = if identity_guard::is_unsafe(req.method()) || route.writes_when_read {
                Writes::Allowed
            } else {
                Writes::Refused
            };
            crate::api::guard::require_key(state, req, permission, writes).await
        }
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
    let keys = limit_guard::principal_keys(&route.limits, &req);
    if let Err(res) = limit_guard::enforce_after_access(state, keys, applied).await {
        return res;
    }
    // And in the body, once the request may reach its handler.
    let req = match crate::platform::http::input::refuse_in_body(req, state.config.server.body_limit_bytes).await {
        Ok(req) => req,
        Err(res) => return *res,
    };
    match access {
        Access::Public | Access::SignedIn | Access::SecondFactor | Access::AnySession | Access::DeletionPending => {
            next.run(req).await
        }
        Access::Org(_) => in_request_tx(state, req, next, Work::Page).await,
        Access::Api(_) => in_request_tx(state, req, next, Work::Api).await,
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
                AppError::forbidden(
                    "Operations endpoints are available from allowed addresses or with the metrics token.".into(),
                )
                .into_response()
            }
        }
    }
}

/// What runs in a request transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    /// An organization's page.
    Page,
    /// An API request (through `api::idempotency`).
    Api,
}

/// Runs an organization page's or an API request's work in the transaction its asker was
/// verified in (the request transaction: every `OrgTx` of the handler takes part in it, each as
/// a savepoint), in a task of its own so that a client that goes away can't cancel work about to
/// commit, and commits it once the work is done. A page or an API request is one transaction,
/// verification included, and an `Idempotency-Key`'s stored answer commits with the work it
/// describes (`api::idempotency`).
async fn in_request_tx(state: &AppState, req: Request, next: Next, work: Work) -> Response {
    use tracing::Instrument;
    let verified = req.extensions().get::<crate::access::request_tx::VerifiedTx>().and_then(|v| v.take());
    // A read-only organization (billing: a payment overdue past the grace period) changes
    // nothing until it pays; its billing pages stay usable so that it can.
    let writes_of = (state.plans.is_some()
        && identity_guard::is_unsafe(req.method())
        && !req.uri().path().contains("/settings/billing"))
    .then(|| req.extensions().get::<crate::access::Asking>().and_then(|a| a.principal.clone()))
    .flatten();
    let state = state.clone();
    // The task reports errors under the request's hub (its request id), panics included.
    let task = tokio::spawn(crate::platform::error_reports::in_current_hub(
        async move {
            let Some(tx) = verified else {
                return AppError::internal("a request without the transaction it was verified in").into_response();
            };
            let run = async {
                if let Some(principal) = &writes_of
                    && let Err(e) = refuse_if_read_only(&state, principal).await
                {
                    return e.into_response();
                }
                match work {
                    Work::Page => next.run(req).await,
                    Work::Api => crate::api::idempotency::wrap(&state, req, next).await,
                }
            };
            let (res, tx) = crate::platform::db::tenant::with_request_tx(tx, run).await;
            match tx {
                // Committed; a read-only transaction (a request of a safe method, verified with a
                // kept key) ends without a round trip of its own (`OrgTx::finish`).
                Ok(Some(tx)) => match tx.finish().await {
                    Ok(()) => res,
                    // Nothing of the work was saved: the answer would not be true.
                    Err(e) => AppError::from(e).into_response(),
                },
                // The work gave the transaction up (abandoned it).
                Ok(None) => res,
                // A failed part couldn't be undone: nothing was saved, so the answer would not be true.
                Err(e) => AppError::from(e).into_response(),
            }
        }
        .instrument(tracing::Span::current()),
    ));
    task.await.unwrap_or_else(|e| AppError::internal(format!("request task failed: {e}")).into_response())
}

async fn refuse_if_read_only(state: &AppState, principal: &crate::access::OrgPrincipal) -> Result<(), AppError> {
    let Some(book) = state.plans.as_deref() else { return Ok(()) };
    let mut tx = crate::access::OrgTx::begin(&state.db, principal).await?;
    crate::billing::limits::refuse_if_read_only(&mut tx, book, state.clock.now()).await?;
    tx.commit().await?;
    Ok(())
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}
