//! HTTP: router assembly from the route table, middleware, errors, TLS and the server loop.

pub mod error;
pub mod input;
pub mod middleware;
pub mod route;
pub mod server;
pub mod tls;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_response_body::MapResponseBodyLayer;
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;
use route::RouteDef;

/// Builds the application router from the route table.
pub fn router(state: AppState) -> Router {
    router_from(state.clone(), crate::routes::all())
}

/// Builds a router from an explicit table (the production table, or a test's).
pub fn router_from(state: AppState, defs: Vec<RouteDef>) -> Router {
    let mut router: Router<AppState> = Router::new();
    for def in defs {
        let guard = route::RouteGuard {
            state: state.clone(),
            access: def.access,
            surface: def.surface,
            limits: def.limits.into(),
        };
        let handler = def
            .handler
            .route_layer(from_fn_with_state(guard, route::guard))
            .route_layer(from_fn(middleware::mark_route));
        router = router.route(def.path, handler);
    }
    let body_limit = state.config.server.body_limit_bytes;
    // The outer limit admits a file upload; every extractor stays at `body_limit` through
    // `DefaultBodyLimit`, except the upload route, which counts the file itself.
    let outer_limit = body_limit.max(upload_body_limit(&state.config));
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    router
        .fallback(|| async { error::AppError::NotFound })
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(middleware::request_id))
                .layer(from_fn_with_state(state.clone(), middleware::access_log))
                .layer(from_fn_with_state(state.clone(), middleware::security_headers))
                .layer(from_fn(middleware::render_errors))
                .layer(from_fn_with_state(state.clone(), middleware::client_ip))
                .layer(from_fn(middleware::web_page_cookies))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
                .layer(MapResponseBodyLayer::new(Body::new))
                .layer(RequestBodyLimitLayer::new(outer_limit))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// The largest request body of a file upload: the file and its multipart framing.
pub fn upload_body_limit(config: &crate::platform::config::Config) -> usize {
    config.files.max_upload_bytes.saturating_add(crate::work::web::files::MULTIPART_OVERHEAD)
}
