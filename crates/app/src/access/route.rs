//! What a route declares: the access it requires ([`Access`]) and the rate limits it is under
//! ([`Limit`]), both from `access::requirement`; the declarations make the route table
//! (`RouteDef`, built with [`route!`]), which the router is assembled from (`crate::routes`)
//! and the tests walk.
//!
//! The decisions behind a declaration live elsewhere: who the principal is and what it may do
//! in this area (`access`), how a limit counts and answers (`abuse::limits`).

use axum::http::Method;
use axum::routing::MethodRouter;

pub use super::requirement::*;
use crate::state::AppState;

/// A route of the application's table.
pub type RouteDef = crate::platform::http::route::RouteDef<Access, Limit, AppState>;

/// A route with the limits its surface and access imply (see [`default_limits`]).
pub fn declare(
    method: Method,
    path: &'static str,
    surface: Surface,
    access: Access,
    handler: MethodRouter<AppState>,
) -> RouteDef {
    RouteDef::new(method, path, surface, access, default_limits(surface, access), handler)
}

/// Declares a route: `route!(GET "/path", Surface::Web, Access::Public, handler)`.
#[macro_export]
macro_rules! route {
    (GET $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::access::route::declare(
            ::axum::http::Method::GET,
            $path,
            $surface,
            $access,
            ::axum::routing::get($handler),
        )
    };
    (POST $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::access::route::declare(
            ::axum::http::Method::POST,
            $path,
            $surface,
            $access,
            ::axum::routing::post($handler),
        )
    };
    (PUT $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::access::route::declare(
            ::axum::http::Method::PUT,
            $path,
            $surface,
            $access,
            ::axum::routing::put($handler),
        )
    };
    (PATCH $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::access::route::declare(
            ::axum::http::Method::PATCH,
            $path,
            $surface,
            $access,
            ::axum::routing::patch($handler),
        )
    };
    (DELETE $path:literal, $surface:expr, $access:expr, $handler:expr) => {
        $crate::access::route::declare(
            ::axum::http::Method::DELETE,
            $path,
            $surface,
            $access,
            ::axum::routing::delete($handler),
        )
    };
}
