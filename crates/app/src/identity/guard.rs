//! Request-level enforcement for the web surface: who is signed in, and cross-site request
//! forgery protection for every cookie-authenticated state-changing request.
//!
//! CSRF has two independent checks, both required on every unsafe method:
//! 1. the `Origin` header (or, without one, the `Referer`) must be this site's public origin;
//! 2. the form's `csrf_token` (or an `X-CSRF-Token` header) must match the synchronizer token
//!    of the session, or — before sign-in — an HMAC of the `__Host-cf_csrf` cookie.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::session::{self, CSRF_COOKIE, CurrentSession, RequestMeta, SESSION_COOKIE, Stage};
use crate::access::asking::read_cookie;
use crate::platform::http::error::AppError;
use crate::platform::http::middleware::ClientIp;
use crate::platform::secret::ct_eq;
use crate::state::AppState;

/// The session's token was rotated during this request (its user's privileges changed): the
/// route guard sends the new cookie with whatever the response is — the handler's, or a
/// refusal of a later check (the old token is already dead).
#[derive(Debug, Clone)]
pub struct RotatedSession(pub String);

impl RotatedSession {
    /// Adds the new session cookie, unless the handler already set a session cookie of its
    /// own (it signed in again, or rotated the session itself).
    pub fn apply(self, mut res: Response) -> Response {
        let prefix = format!("{SESSION_COOKIE}=");
        let already =
            res.headers().get_all(header::SET_COOKIE).iter().any(|v| v.to_str().is_ok_and(|v| v.starts_with(&prefix)));
        if !already && let Ok(v) = HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, &self.0, None)) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        res
    }
}

/// The anonymous CSRF cookie value for this request (set by [`anon_csrf_cookie`]).
#[derive(Debug, Clone)]
pub struct AnonCsrf(pub String);

pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Gives every browser an anonymous CSRF cookie on its first page view, so forms shown
/// before sign-in (sign-in, sign-up, reset) can carry a token.
pub async fn anon_csrf_cookie(mut req: Request, next: axum::middleware::Next) -> Response {
    let existing = read_cookie(req.headers(), CSRF_COOKIE).filter(|v| v.len() == 43);
    let (value, fresh) = match existing {
        Some(v) => (v, false),
        None => (crate::platform::crypto::random_token(), true),
    };
    req.extensions_mut().insert(AnonCsrf(value.clone()));
    let mut res = next.run(req).await;
    // A page a shared cache may keep sets no cookie: the cache would hand the same one to everyone.
    if fresh
        && !crate::web::shared_cacheable(res.headers())
        && let Ok(v) = HeaderValue::from_str(&session::set_cookie(CSRF_COOKIE, &value, None))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

pub fn anon_token(state: &AppState, cookie_value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&state.csrf_key).expect("any key length");
    mac.update(b"anon-csrf:");
    mac.update(cookie_value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The token a form on this page must carry.
#[derive(Debug, Clone)]
pub struct FormToken(pub String);

impl FromRequestParts<AppState> for FormToken {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<CurrentSession>() {
            return Ok(FormToken(s.csrf_token.clone()));
        }
        let cookie = parts
            .extensions
            .get::<AnonCsrf>()
            .map(|a| a.0.clone())
            .or_else(|| read_cookie(&parts.headers, CSRF_COOKIE));
        Ok(FormToken(cookie.map(|c| anon_token(state, &c)).unwrap_or_default()))
    }
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ClientIp>()
            .map(|c| c.0)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let user_agent: String = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        let request_id = parts
            .extensions
            .get::<crate::platform::http::middleware::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Ok(RequestMeta { ip, user_agent, now: state.clock.now(), request_id })
    }
}

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CurrentSession>()
            .cloned()
            .ok_or_else(|| AppError::internal("route handler expects a session but its route is not declared SignedIn"))
    }
}

/// Origin check: the request must come from a page of this site.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let public = state.config.public_url();
    let origin = url::Url::parse(&public).map(|u| u.origin().ascii_serialization()).unwrap_or(public.clone());
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.to_str().map(|o| o == origin).unwrap_or(false);
    }
    match headers.get(header::REFERER).and_then(|r| r.to_str().ok()) {
        Some(r) => url::Url::parse(r).map(|u| u.origin().ascii_serialization() == origin).unwrap_or(false),
        None => false,
    }
}

/// Verifies both CSRF checks on an unsafe web request and hands the request (body restored)
/// back.
pub async fn check_csrf(state: &AppState, req: Request, session: Option<&CurrentSession>) -> Result<Request, AppError> {
    let refused = || {
        AppError::forbidden(
            "This form could not be accepted (it came from another site or the page was too old). \
             Go back, reload the page and try again."
                .into(),
        )
    };
    if !same_origin(state, req.headers()) {
        return Err(refused());
    }
    let expected = match session {
        Some(s) => s.csrf_token.clone(),
        None => match read_cookie(req.headers(), CSRF_COOKIE) {
            Some(c) => anon_token(state, &c),
            None => return Err(refused()),
        },
    };
    let header_token = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (parts, body) = req.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let limit = state.config.server.body_limit_bytes;
    let (given, body) = if content_type.starts_with("application/x-www-form-urlencoded") {
        let bytes = to_bytes(body, limit).await.map_err(|_| AppError::PayloadTooLarge)?;
        // The token is consumed here: handlers see the form without it, so their form types
        // can refuse unknown fields (mass assignment) without listing it.
        let mut token = None;
        let mut rest = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(&bytes) {
            if k == "csrf_token" {
                token = Some(v.into_owned());
            } else {
                rest.append_pair(&k, &v);
            }
        }
        (token.or(header_token), Body::from(rest.finish()))
    } else if content_type.starts_with("multipart/form-data") {
        // Multipart forms carry file uploads: a signed-in user's may be as large as an upload
        // (the route's handler then enforces the file limit); before sign-in nothing needs
        // more than an ordinary form.
        let limit = match session {
            Some(_) => crate::platform::config::PlatformSettings::largest_request_body(&state.config),
            None => limit,
        };
        let bytes = to_bytes(body, limit).await.map_err(|_| AppError::PayloadTooLarge)?;
        let token = multipart_token(&content_type, bytes.clone()).await;
        (token.or(header_token), Body::from(bytes))
    } else {
        (header_token, body)
    };
    match given {
        Some(t) if !expected.is_empty() && ct_eq(t.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, body))
        }
        _ => Err(refused()),
    }
}

/// The `csrf_token` field of a multipart form (file uploads work without JavaScript too).
async fn multipart_token(content_type: &str, bytes: axum::body::Bytes) -> Option<String> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("csrf_token") {
            return field.text().await.ok();
        }
    }
    None
}

pub enum Resolved {
    Ok(Request),
    Respond(Response),
}

/// Whether the route answers as the API does (problem+json, no redirects to pages): the
/// route's declared surface decides, which its guard records on the request.
pub fn is_api(req: &Request) -> bool {
    req.extensions().get::<crate::platform::http::route::Surface>() == Some(&crate::platform::http::route::Surface::Api)
}

fn to_login(req: &Request) -> Response {
    let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/app");
    let target = if req.method() == Method::GET {
        format!("/login?next={}", percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC))
    } else {
        "/login".to_string()
    };
    let mut res = Redirect::to(&target).into_response();
    if read_cookie(req.headers(), SESSION_COOKIE).is_some()
        && let Ok(v) = HeaderValue::from_str(&session::clear_cookie(SESSION_COOKIE))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The session of this request, if the cookie names a live one.
pub async fn current_session(state: &AppState, headers: &HeaderMap) -> Result<Option<CurrentSession>, AppError> {
    let Some(token) = read_cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let idle = time::Duration::minutes(state.config.identity.session_idle_minutes.into());
    let mut tx = state.db.global().await?;
    let s = session::lookup(&mut tx, &token, state.clock.now(), idle).await?;
    tx.commit().await?;
    Ok(s)
}

/// For routes that need a fully signed-in user (`stage`: Complete) or a half-finished sign-in
/// (`stage`: Pending, the second-factor page only).
///
/// A complete session whose user's privileges changed since its token was issued gets a new
/// token here, put in `rotated` for the route guard to send with whatever the response is.
pub async fn require_session(
    state: &AppState,
    req: Request,
    stage: Stage,
    rotated: &mut Option<RotatedSession>,
) -> Result<Resolved, AppError> {
    let session = current_session(state, req.headers()).await?;
    let session = match session_at_stage(session, stage, &req) {
        Ok(s) => s,
        Err(res) => return Ok(Resolved::Respond(*res)),
    };
    let (req, _) = admit_session(state, req, session, rotated, None).await?;
    Ok(Resolved::Ok(req))
}

/// Where a departing session (an account scheduled for deletion) is sent, whatever it asked for.
pub const DEPARTING_PAGE: &str = "/account/deletion";

/// The session if it is at the `wanted` stage; otherwise where to send the browser (or what to
/// answer an API client): sign in, finish the second factor, or the app.
pub fn session_at_stage(
    session: Option<CurrentSession>,
    wanted: Stage,
    req: &Request,
) -> Result<CurrentSession, Box<Response>> {
    match (session, wanted) {
        (Some(s), wanted) if s.stage == wanted => Ok(s),
        (Some(s), Stage::Complete | Stage::Departing) if s.stage == Stage::Pending => Err(Box::new(if is_api(req) {
            AppError::Unauthorized("Finish signing in first.".into()).into_response()
        } else {
            Redirect::to("/login/two-factor").into_response()
        })),
        (Some(s), _) if s.stage == Stage::Departing => Err(Box::new(if is_api(req) {
            AppError::Unauthorized("This account is scheduled for deletion.".into()).into_response()
        } else {
            Redirect::to(DEPARTING_PAGE).into_response()
        })),
        (Some(_), Stage::Pending | Stage::Departing) => Err(Box::new(Redirect::to("/app").into_response())),
        (_, _) => Err(Box::new(if is_api(req) {
            AppError::Unauthorized("Sign in first.".into()).into_response()
        } else {
            to_login(req)
        })),
    }
}

/// Lets a verified session's request through: the CSRF checks on an unsafe method, a new token
/// after a privilege change, and the session and its asker as request extensions. Returns the
/// request and the session as admitted. `conn`: the transaction the session was looked up in,
/// if it is still open (the token is replaced in it; a second transaction would wait for the
/// first's lock on the session's row).
pub async fn admit_session(
    state: &AppState,
    req: Request,
    session: CurrentSession,
    rotated: &mut Option<RotatedSession>,
    conn: Option<&mut sqlx::PgConnection>,
) -> Result<(Request, CurrentSession), AppError> {
    let mut req = if is_unsafe(req.method()) { check_csrf(state, req, Some(&session)).await? } else { req };
    // After a privilege change the token is replaced (the check above used the old one).
    let session = match read_cookie(req.headers(), SESSION_COOKIE) {
        Some(old) if session.stage == Stage::Complete && session.privileges_changed => {
            let fresh = match conn {
                Some(conn) => session::rotate_token(conn, session.id, &old).await?,
                None => {
                    let mut tx = state.db.global().await?;
                    let fresh = session::rotate_token(&mut tx, session.id, &old).await?;
                    tx.commit().await?;
                    fresh
                }
            };
            match fresh {
                Some((token, csrf_token)) => {
                    *rotated = Some(RotatedSession(token));
                    CurrentSession { csrf_token, privileges_changed: false, ..session }
                }
                // A request racing with this one rotated first: its response carries the
                // new token; this one, authenticated a moment ago, goes on without.
                None => session,
            }
        }
        _ => session,
    };
    req.extensions_mut().insert(crate::access::Asking::user(session.user.id()));
    req.extensions_mut().insert(session.clone());
    Ok((req, session))
}

/// For signing out: any session, finished or not.
pub async fn require_any_session(state: &AppState, req: Request) -> Result<Resolved, AppError> {
    let Some(session) = current_session(state, req.headers()).await? else {
        return Ok(Resolved::Respond(Redirect::to("/login").into_response()));
    };
    let mut req = if is_unsafe(req.method()) { check_csrf(state, req, Some(&session)).await? } else { req };
    req.extensions_mut().insert(crate::access::Asking::user(session.user.id()));
    req.extensions_mut().insert(session);
    Ok(Resolved::Ok(req))
}
