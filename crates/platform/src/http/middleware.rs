//! Middleware every request passes through, outermost first:
//! request id → error reports → access log and metrics → security headers → error rendering →
//! panics caught → client IP →
//! (the application's own) → timeout → body limit → router (→ per-route guard → handler).
//! The application assembles the stack (`crate::routes` in the app) from these pieces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{Problem, RenderedByHandler};
use super::route::Surface;
use crate::net;
use crate::telemetry::Metrics;

/// What the platform's middleware needs from the application, given once when the router is
/// assembled. The layers share it behind one `Arc` (a layer's state is cloned for every request).
pub struct HttpContext {
    pub metrics: Metrics,
    pub security_headers: SecurityHeaders,
    /// Peers whose forwarding headers are believed (`server.trusted_proxies`).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Plain HTTP behind a TLS-terminating proxy: only the trusted proxies may connect.
    pub behind_proxy: bool,
    /// Where users reach the installation (the HTTPS redirect's target).
    pub public_url: Arc<str>,
    /// Renders an error as the web surface's HTML page (the problem and the request id).
    pub error_page: fn(&Problem, &str) -> String,
}

/// The request id of the current request (also in the `x-request-id` response header).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The real client address (trusted-proxy aware). Rate limits, allowlists and audit use this,
/// never a header directly.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The matched route template, passed outwards for the access log and metrics so that raw
/// paths (which may carry tokens) never reach them.
#[derive(Debug, Clone)]
pub struct RouteName(pub String);

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accepts a caller's request id only when it is short and plain; otherwise makes one.
fn sane_request_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(&X_REQUEST_ID, v);
    }
    res
}

/// One log line and one metrics observation per request.
pub async fn access_log(State(state): State<Arc<HttpContext>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let res = next.run(req).await;
    let elapsed = start.elapsed();
    let route = res.extensions().get::<RouteName>().map(|r| r.0.clone()).unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    state.metrics.observe_request(&route, method.as_str(), status, elapsed.as_secs_f64());
    let client_ip = res.extensions().get::<ClientIp>().map(|c| c.0.to_string()).unwrap_or_default();
    tracing::info!(
        target: "clientflow::access",
        method = %method,
        route = %route,
        status,
        latency_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        request_id = %request_id,
        client_ip = %client_ip,
        "request"
    );
    res
}

/// Turns a panic while answering into a 500 with the request id (instead of a dropped
/// connection). The panic itself was reported by the panic hook, under the request's hub.
pub async fn catch_panic(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(res) => res,
        Err(_) => crate::http::error::AppError::internal("the request's handler panicked").into_response(),
    }
}

/// Records the matched route template on the response (installed as a route layer, where
/// `MatchedPath` is known).
pub async fn mark_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let mut res = next.run(req).await;
    if let Some(route) = route {
        res.extensions_mut().insert(RouteName(route));
    }
    res
}

/// Header values computed once from the configuration.
#[derive(Clone)]
pub struct SecurityHeaders {
    hsts: HeaderValue,
}

/// No inline script, no framing, nothing from other origins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

impl SecurityHeaders {
    pub fn new(preload: bool) -> Self {
        let hsts = if preload {
            "max-age=63072000; includeSubDomains; preload"
        } else {
            "max-age=63072000; includeSubDomains"
        };
        Self { hsts: HeaderValue::from_static(hsts) }
    }

    fn apply(&self, headers: &mut HeaderMap) {
        let set = |headers: &mut HeaderMap, name: HeaderName, value: HeaderValue| {
            headers.entry(name).or_insert(value);
        };
        set(headers, header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        set(headers, header::STRICT_TRANSPORT_SECURITY, self.hsts.clone());
        set(headers, header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        set(headers, header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        set(headers, header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        set(
            headers,
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static(
                "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), \
                 microphone=(), payment=(), usb=(), interest-cohort=()",
            ),
        );
        set(headers, HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
        set(headers, HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
        // Anything that didn't choose a caching policy (static assets do) is never stored. Routes
        // behind authentication get `no-store` from their guard (`route::guard`) whatever their
        // handler set.
        set(headers, header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

pub async fn security_headers(State(state): State<Arc<HttpContext>>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    state.security_headers.apply(res.headers_mut());
    res
}

/// Whether the client gets problem+json (API, operations endpoints, JSON-preferring clients)
/// or an HTML page. The matched route's declared surface decides (the route guard records it
/// on the response); a request no route matched is judged by its path.
fn wants_json(surface: Option<Surface>, path: &str, accept: Option<&HeaderValue>) -> bool {
    match surface {
        Some(Surface::Api | Surface::Ops) => return true,
        Some(Surface::Web) => {}
        None => {
            if path.starts_with("/api/") || path == "/api" || matches!(path, "/healthz" | "/readyz" | "/metrics") {
                return true;
            }
        }
    }
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("json") && !accept.contains("text/html")
}

/// Gives every error response a body in the surface's format, with the request id.
pub async fn render_errors(State(state): State<Arc<HttpContext>>, req: Request, next: Next) -> Response {
    // Only what an error's rendering needs is kept (not the whole header map: this runs on
    // every request).
    let path = req.uri().path().to_string();
    let accept = req.headers().get(header::ACCEPT).cloned();
    let is_head = req.method() == Method::HEAD;
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let res = next.run(req).await;
    let status = res.status();
    if status.as_u16() < 400 || res.extensions().get::<RenderedByHandler>().is_some() {
        return res;
    }
    let json = wants_json(res.extensions().get::<Surface>().copied(), &path, accept.as_ref());
    let given = res.extensions().get::<Problem>().cloned();
    let (mut parts, body) = res.into_parts();
    let problem = match given {
        Some(p) => p,
        // A form the extractor refused: say which field, not just "could not be processed".
        None if matches!(status.as_u16(), 400 | 422) => {
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            form_rejection_problem(status, &String::from_utf8_lossy(&text))
                .unwrap_or_else(|| Problem::for_status(status))
        }
        None => Problem::for_status(status),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let (content_type, body) = if json {
        let mut doc = serde_json::json!({
            "type": problem.kind.unwrap_or("about:blank"),
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            "request_id": request_id,
        });
        if !problem.errors.is_empty() {
            doc["errors"] = serde_json::to_value(&problem.errors).unwrap_or_default();
        }
        for (name, value) in &problem.extensions {
            doc[name] = value.clone();
        }
        ("application/problem+json", doc.to_string())
    } else {
        ("text/html; charset=utf-8", (state.error_page)(&problem, &request_id))
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if is_head {
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(body))
}

/// The problem for axum's refusal of a urlencoded form or query string (`Failed to deserialize
/// form…: <serde's message>`), naming the field: an unknown field (every form refuses fields it doesn't
/// declare), a missing one, or a value of the wrong kind. Anything else keeps the generic text.
fn form_rejection_problem(status: StatusCode, text: &str) -> Option<Problem> {
    let message = text
        .strip_prefix("Failed to deserialize form")
        .or_else(|| text.strip_prefix("Failed to deserialize query string"))?
        .split_once(": ")?
        .1
        .trim();
    // serde_path_to_error puts the field's path first: `minutes: invalid digit found in string`.
    let is_path = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
    let (path, message) = match message.split_once(": ") {
        Some((p, rest)) if is_path(p) => (Some(p), rest.trim()),
        _ => (None, message),
    };
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    let (field, short, detail) = if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = quoted(rest)?;
        let detail = format!("This form has no field named \"{field}\"; nothing was changed.");
        (field, "is not a field of this form", detail)
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        let field = quoted(rest)?;
        let detail = format!("The field \"{field}\" is required.");
        (field, "is required", detail)
    } else if let Some(rest) = message.strip_prefix("duplicate field ") {
        let field = quoted(rest)?;
        let detail = format!("The field \"{field}\" was sent more than once; nothing was changed.");
        (field, "was sent more than once", detail)
    } else {
        let field = path.filter(|p| *p != ".").unwrap_or("form").to_string();
        let detail = format!("The field \"{field}\" has the wrong format ({message}).");
        (field, "has the wrong format", detail)
    };
    let mut problem = Problem::for_status(status);
    problem.detail = detail;
    problem.errors = vec![super::error::FieldError::new(field, short)];
    Some(problem)
}

/// Works out the client address. In proxy mode, only the configured proxies may talk to us
/// (the health check excepted, for load balancers), and a request that reached the proxy over
/// plain HTTP is redirected to HTTPS.
pub async fn client_ip(State(state): State<Arc<HttpContext>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let trusted = &state.trusted_proxies;
    let ip = net::client_ip(peer, req.headers(), trusted);
    req.extensions_mut().insert(ClientIp(ip));
    if state.behind_proxy && req.uri().path() != "/healthz" {
        if !net::contains(trusted, peer) {
            let mut res = crate::http::error::AppError::forbidden(
                "This server only accepts requests through its configured proxy.".into(),
            )
            .into_response();
            res.extensions_mut().insert(ClientIp(ip));
            return res;
        }
        let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("https");
        if proto.eq_ignore_ascii_case("http") {
            return https_redirect(&state.public_url, &req);
        }
    }
    let mut res = next.run(req).await;
    res.extensions_mut().insert(ClientIp(ip));
    res
}

/// 308 to the same path on the configured public URL. The target host comes from
/// configuration, never from the request's `Host` header (no open redirect).
pub fn https_redirect<B>(public_url: &str, req: &axum::http::Request<B>) -> Response {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = format!("{public_url}{path}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_refusals_name_their_field() {
        let p = form_rejection_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize form body: unknown field `owner`, expected `name` or `slug`",
        )
        .unwrap();
        assert_eq!(p.errors[0].field, "owner");
        assert!(p.detail.contains("no field named \"owner\""), "{}", p.detail);
        let p = form_rejection_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize form body: missing field `email`",
        )
        .unwrap();
        assert_eq!((p.errors[0].field.as_str(), p.status), ("email", 422));
        assert!(form_rejection_problem(StatusCode::BAD_REQUEST, "something else entirely").is_none());
        // With the path serde_path_to_error puts first.
        let p = form_rejection_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize form body: role: unknown field `role`, expected `name` or `slug`",
        )
        .unwrap();
        assert_eq!(p.errors[0].field, "role");
        assert!(p.detail.contains("no field named \"role\""), "{}", p.detail);
        let p = form_rejection_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize form body: minutes: invalid digit found in string",
        )
        .unwrap();
        assert_eq!(p.errors[0].field, "minutes");
        assert!(p.detail.contains("\"minutes\" has the wrong format"), "{}", p.detail);
        // A query string the extractor refused, the same way.
        let p = form_rejection_problem(
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: offset: invalid digit found in string",
        )
        .unwrap();
        assert_eq!((p.errors[0].field.as_str(), p.status), ("offset", 400));
    }

    #[test]
    fn request_ids_are_sanitized() {
        assert!(sane_request_id("abc-123_X.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id("<script>"));
        assert!(!sane_request_id(&"a".repeat(65)));
    }

    #[test]
    fn surface_detection() {
        assert!(wants_json(None, "/api/v1/clients", None));
        assert!(wants_json(None, "/readyz", None));
        assert!(!wants_json(None, "/app", None));
        // The declared surface decides for a matched route, whatever its path.
        assert!(wants_json(Some(Surface::Api), "/anything", None));
        assert!(!wants_json(Some(Surface::Web), "/api/v1/looks-like-api", None));
        let json = HeaderValue::from_static("application/json");
        assert!(wants_json(None, "/nope", Some(&json)));
        let html = HeaderValue::from_static("application/json, text/html");
        assert!(!wants_json(None, "/nope", Some(&html)));
    }
}
