//! What this installation tells the world about its security, generated from what it actually
//! runs: the security page (`/security`), the sub-processors it hands data to
//! (`/legal/subprocessors` and the DPA template), and vulnerability disclosure
//! (`/.well-known/security.txt` per RFC 9116, the report form at `/security/report`, and the
//! operator's `clientflow security reports` commands).
//!
//! Nothing here is a list of claims typed once and left to rot: each fact is read from the
//! configuration and state the server runs with (a feature that is off says off), each claim
//! names the tests that prove it (`claims.rs`; a test fails when one names a test that doesn't
//! exist), and each sub-processor is contributed by its adapter (`subprocessors.rs`).

pub mod claims;
pub mod config;
pub mod legal;
pub mod page;
pub mod reports;
pub mod security_txt;
pub mod subprocessors;

use crate::access::route::RouteDef;

pub use config::DisclosureConfig;

pub fn routes() -> Vec<RouteDef> {
    let mut routes = Vec::new();
    routes.extend(page::routes());
    routes.extend(legal::routes());
    routes.extend(security_txt::routes());
    routes.extend(reports::routes());
    routes
}

/// How long a public page generated from the installation may be cached: long enough to take
/// the load off a busy page, short enough that a change of configuration shows within minutes.
pub const PUBLIC_CACHE: &str = "public, max-age=300";

/// A public, cacheable answer.
pub fn cacheable(mut res: axum::response::Response) -> axum::response::Response {
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static(PUBLIC_CACHE));
    res
}
