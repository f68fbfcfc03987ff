//! `Idempotency-Key` for the API's POST requests (draft-ietf-httpapi-idempotency-key-header),
//! implemented once, in the API route guard, for every POST route rather than per handler.
//!
//! - The key is scoped to the API key that sends it: two keys never see each other's records.
//! - The request's fingerprint is SHA-256 of method, path and the body (as canonical JSON when it
//!   parses, so re-serializing the same object with other key order or spacing is the same
//!   request; a multipart upload without its boundary, which clients pick at random per
//!   attempt).
//! - One request per key at a time: the key's lock (a transaction-scoped advisory lock) is taken
//!   first; a concurrent duplicate that can't take it gets 409 "still being processed".
//! - First use: the key's record is written in the request transaction, which the request then
//!   runs in (the route guard runs every API request in the transaction its key was verified in,
//!   `crate::routes`; the handler's own `OrgTx` joins it, and its commit is deferred).
//!   A successful (2xx) response is added to the record and committed *with* the work, so the
//!   work and its stored answer exist together or not at all. A crash, a kill or a lost
//!   connection at any moment rolls both back: a retry with the same key either replays the
//!   saved answer or runs the request for the first time, never neither.
//! - A replay (same key and fingerprint) returns the stored status, `Location` and body with
//!   `Idempotent-Replayed: true`; nothing runs again. The same key with a different fingerprint
//!   is 409.
//! - An error response rolls the request transaction back (the record with it): nothing was
//!   created, so trying again (with the same key, after fixing the request) can't create a
//!   duplicate.
//! - The request runs in a task of its own (the route guard's), so a client that disconnects
//!   (or the request timeout) doesn't cancel work that is about to commit.
//! - Records expire after 24 hours; an expired key may be used again.
//! - The kept answer is sealed with the organization's data key, bound to the API key and the
//!   Idempotency-Key (`privacy::keys::seal_api_answer`): it repeats what the request created
//!   (a file's name, say), which is sealed where it is stored, and must be no easier to read
//!   here.
//!
//! The draft recommends 422 for a key reused with another payload; we answer 409 because 422
//! means "a field of this body is invalid" everywhere else in this API, and the conflict is with
//! stored state, not with the body.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::extract::{Rejection, problem};
use super::guard::ApiAccess;
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::platform::crypto::sha256;
use crate::platform::http::error::{AppError, AppResult};
use crate::state::AppState;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key's record is kept (and a key can't be reused).
pub const RETENTION: Duration = Duration::hours(24);

/// Wraps an API request that passed the route guard.
pub async fn wrap(state: &AppState, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(&IDEMPOTENCY_KEY) {
        return next.run(req).await;
    }
    match run(state, req, next).await {
        Ok(res) => res,
        Err(res) => res,
    }
}

/// A key is 1–255 visible ASCII characters (the document's pattern,
/// `openapi::IDEMPOTENCY_KEY_PATTERN`). The draft writes the header as a structured-field
/// string, so a value in double quotes with something between them (`"abc"`) names the key
/// inside (`abc`); `""` has nothing inside and is taken literally, as a two-character key.
fn parse_key(value: &HeaderValue) -> Result<String, Rejection> {
    let bad = || problem(StatusCode::BAD_REQUEST, "Idempotency-Key", "must be 1 to 255 visible ASCII characters");
    let raw = value.to_str().map_err(|_| bad())?.trim();
    if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    let key = match raw.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
        Some(inner) if !inner.is_empty() => inner,
        _ => raw,
    };
    Ok(key.to_string())
}

/// Method, path and query, and the body (canonical JSON when it is JSON).
fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> [u8; 32] {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let mut out = String::new();
            crate::audit::canonical_json(&v, &mut out);
            out.into_bytes()
        }
        Err(_) => body.to_vec(),
    };
    let mut input = format!("{method}\n{path_and_query}\n").into_bytes();
    input.extend_from_slice(&canonical);
    sha256(&input)
}

/// The boundary of a `multipart/form-data` body.
fn multipart_boundary(headers: &axum::http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mut parts = ct.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
}

/// The body with every delimiter (`--boundary`) reduced to `--`. A boundary never occurs inside
/// the parts (RFC 2046 §5.1.1), so what remains is the parts themselves: two attempts of one
/// upload with different boundaries are the same request.
fn without_boundary(body: &[u8], boundary: &str) -> Vec<u8> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(&delimiter) {
            out.extend_from_slice(b"--");
            i += delimiter.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

/// What is stored for a completed request.
#[derive(Serialize, Deserialize)]
struct Stored {
    location: Option<String>,
    content_type: Option<String>,
    body: String,
}

enum Claim {
    /// First use: the request runs inside this transaction, which holds the key's lock and
    /// its (uncommitted) record.
    New(OrgTx),
    Replay {
        status: u16,
        stored: Stored,
    },
}

async fn run(state: &AppState, req: Request, next: Next) -> Result<Response, Response> {
    let key = parse_key(&req.headers()[&IDEMPOTENCY_KEY]).map_err(IntoResponse::into_response)?;
    let principal = req
        .extensions()
        .get::<ApiAccess>()
        .map(|a| a.principal.clone())
        .ok_or_else(|| AppError::internal("idempotency outside an API route").into_response())?;
    let (parts, body) = req.into_parts();
    let boundary = multipart_boundary(&parts.headers);
    // A file upload may be larger than other bodies (the global body limit still caps it, and
    // the upload handler counts the file itself); any other route refuses a multipart body.
    let limit = match boundary {
        Some(_) => crate::work::files::upload_body_limit(&state.config.files).max(state.config.server.body_limit_bytes),
        None => state.config.server.body_limit_bytes,
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| AppError::PayloadTooLarge.into_response())?;
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let hash = match &boundary {
        Some(b) => fingerprint(&parts.method, &target, &without_boundary(&bytes, b)),
        None => fingerprint(&parts.method, &target, &bytes),
    };
    let now = state.clock.now();
    match claim(state, &principal, &key, &parts.method, &target, &hash, now).await {
        Err(e) => Err(e.into_response()),
        Ok(Claim::Replay { status, stored }) => Ok(replay(status, stored)),
        Ok(Claim::New(tx)) => {
            // The record goes back into the request transaction, and the work runs in it too.
            tx.commit().await.map_err(|e| AppError::from(e).into_response())?;
            let req = Request::from_parts(parts, Body::from(bytes));
            let res = next.run(req).await;
            Ok(settle(state, &principal, &key, res).await)
        }
    }
}

/// Looks the key up under its lock. Returns the stored answer, a refusal, or (first use) the
/// open transaction holding the lock and the new record, for the request to run in.
async fn claim(
    state: &AppState,
    principal: &OrgPrincipal,
    key: &str,
    method: &Method,
    target: &str,
    hash: &[u8; 32],
    now: OffsetDateTime,
) -> AppResult<Claim> {
    let api_key = principal.api_key_id().ok_or_else(|| AppError::internal("idempotency without an API key"))?;
    let mut tx = OrgTx::begin(&state.db, principal).await?;
    // One request per key at a time: the lock is the transaction's, so it is released when the
    // request's work commits or rolls back, and by PostgreSQL itself when the process dies.
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('clientflow:idempotency:' || $1 || ':' || $2, 0))",
    )
    .bind(api_key.to_string())
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Err(AppError::conflict(
            "A request with this Idempotency-Key is still being processed; retry later.".into(),
        ));
    }
    // Expired records of this key go first, so an expired key can be used again.
    sqlx::query("DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND created_at < $3")
        .bind(api_key)
        .bind(key)
        .bind(now - RETENTION)
        .execute(&mut *tx)
        .await?;
    // The fingerprint, and the stored status and answer.
    type Record = (Vec<u8>, Option<i32>, Option<Vec<u8>>);
    let existing: Option<Record> = sqlx::query_as(
        "SELECT request_hash, status, response_body FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
    )
    .bind(api_key)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((stored_hash, status, body)) = existing {
        tx.commit().await?;
        if stored_hash != hash[..] {
            return Err(AppError::conflict(
                "This Idempotency-Key was already used for a different request; use a new key for a new request."
                    .into(),
            ));
        }
        return match (status, body) {
            (Some(status), Some(body)) => {
                let body = crate::privacy::keys::open_api_answer(&state.keys, principal.org_id(), api_key, key, &body)
                    .map_err(AppError::internal)?;
                let stored: Stored = serde_json::from_slice(&body).map_err(AppError::internal)?;
                Ok(Claim::Replay { status: status as u16, stored })
            }
            // Only an older version of this server committed a record before its request's
            // work; whether that work happened can't be known.
            _ => Err(AppError::conflict(
                "The first request with this Idempotency-Key was interrupted and may or may not have taken effect; \
                 check, then retry with a new key."
                    .into(),
            )),
        };
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, api_key_id, key, method, path, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tx.org_id())
    .bind(api_key)
    .bind(key)
    .bind(method.as_str())
    .bind(target)
    .bind(&hash[..])
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(Claim::New(tx))
}

/// Finishes a request that ran in the request transaction with the key's record: a success
/// stores its answer there, to commit with the work; anything else rolls the transaction back
/// (the key's record with it, so the key may be used again: nothing happened).
async fn settle(state: &AppState, principal: &OrgPrincipal, key: &str, res: Response) -> Response {
    let Some(api_key) = principal.api_key_id() else { return res };
    if !res.status().is_success() {
        // Nothing of the request stays, the key's record included.
        crate::platform::db::tenant::abandon_request_tx().await;
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return AppError::internal(format!("reading the response: {e}")).into_response(),
    };
    let header_text = |name: &HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let stored = Stored {
        location: header_text(&header::LOCATION),
        content_type: header_text(&header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    let sealed = crate::privacy::keys::seal_api_answer(
        &state.keys,
        principal.org_id(),
        api_key,
        key,
        &serde_json::to_vec(&stored).unwrap_or_default(),
        None,
    );
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => return AppError::internal(e).into_response(),
    };
    let saved = async {
        let mut tx = OrgTx::begin(&state.db, principal).await?;
        sqlx::query("UPDATE idempotency_keys SET status = $3, response_body = $4 WHERE api_key_id = $1 AND key = $2")
            .bind(api_key)
            .bind(key)
            .bind(parts.status.as_u16() as i32)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    };
    match saved.await {
        Ok(()) => Response::from_parts(parts, Body::from(bytes)),
        Err(e) => AppError::from(e).into_response(),
    }
}

fn replay(status: u16, stored: Stored) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = (status, stored.body).into_response();
    let headers = res.headers_mut();
    if let Some(v) = stored.content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = stored.location.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_or_structured_strings() {
        assert_eq!(parse_key(&HeaderValue::from_static("abc-123")).unwrap(), "abc-123");
        assert_eq!(parse_key(&HeaderValue::from_static("\"8e03978e-40d5\"")).unwrap(), "8e03978e-40d5");
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        // `""` quotes nothing: it is the two-character key `""`, as the document's pattern admits.
        assert_eq!(parse_key(&HeaderValue::from_static("\"\"")).unwrap(), "\"\"");
        assert_eq!(parse_key(&HeaderValue::from_static("\"a")).unwrap(), "\"a");
        assert!(parse_key(&HeaderValue::from_static("has space")).is_err());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(256)).unwrap()).is_err());
        // The length counts the quotes: the document's maxLength can't see inside them.
        assert!(parse_key(&HeaderValue::from_str(&format!("\"{}\"", "k".repeat(254))).unwrap()).is_err());
        assert_eq!(parse_key(&HeaderValue::from_str(&format!("\"{}\"", "k".repeat(253))).unwrap()).unwrap().len(), 253);
    }

    #[test]
    fn fingerprints_ignore_json_formatting_but_not_content() {
        let a = fingerprint(&Method::POST, "/api/v1/clients", br#"{"name":"A","email":"a@x.io"}"#);
        let b = fingerprint(&Method::POST, "/api/v1/clients", b"{ \"email\": \"a@x.io\",\n \"name\": \"A\" }");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint(&Method::POST, "/api/v1/clients", br#"{"name":"B","email":"a@x.io"}"#));
        assert_ne!(a, fingerprint(&Method::POST, "/api/v1/projects", br#"{"name":"A","email":"a@x.io"}"#));
    }

    #[test]
    fn multipart_fingerprints_ignore_the_boundary_but_not_the_parts() {
        let body = |b: &str, content: &str| {
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n{content}\r\n--{b}--\r\n"
            )
            .into_bytes()
        };
        let print = |b: &str, content: &str| {
            fingerprint(&Method::POST, "/api/v1/files", &without_boundary(&body(b, content), b))
        };
        assert_eq!(print("XyZ123", "hello"), print("other-boundary-9", "hello"));
        assert_ne!(print("XyZ123", "hello"), print("XyZ123", "hellO"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/form-data; boundary=\"abc\""));
        assert_eq!(multipart_boundary(&headers).as_deref(), Some("abc"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(multipart_boundary(&headers), None);
    }
}
