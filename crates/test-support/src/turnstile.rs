//! A local Cloudflare Turnstile siteverify endpoint that speaks the real wire format, for
//! end-to-end tests of the Turnstile bot check without Cloudflare.
//!
//! Plain HTTP on `127.0.0.1`, port 0, `POST /turnstile/v0/siteverify` taking
//! `application/x-www-form-urlencoded` (or JSON) `secret`, `response`, `remoteip` and
//! `idempotency_key`, answering JSON with `success`, `error-codes`, and on success
//! `challenge_ts`, `hostname`, `action`, `cdata` and `metadata`. Like Cloudflare it answers
//! HTTP 200 for refusals and reports why in `error-codes`:
//!
//! | situation | error code |
//! |---|---|
//! | no `secret` | `missing-input-secret` |
//! | a secret other than the one the server was started with | `invalid-input-secret` |
//! | no `response` | `missing-input-response` |
//! | a token it never issued | `invalid-input-response` |
//! | a token already redeemed (other than a retry with the same `idempotency_key`), or older than five minutes | `timeout-or-duplicate` |
//!
//! [`FakeTurnstile::set_delay`] slows every answer (timeout tests) and
//! [`FakeTurnstile::misbehave`] makes it answer what a correct client must refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How long Cloudflare accepts a token after it was generated.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// One request received at siteverify, as sent.
#[derive(Clone, Debug, Default)]
pub struct SiteverifyRequest {
    pub content_type: String,
    pub secret: Option<String>,
    pub response: Option<String>,
    pub remoteip: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Ways the endpoint can misbehave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// Answer correctly.
    None,
    /// Answer this HTTP status with an HTML body (an outage page).
    Status(u16),
    /// Answer 200 with a body that is not siteverify's JSON.
    MalformedJson,
    /// Answer a 302 to `/elsewhere` (which would say `success: true` to anyone following it).
    Redirect,
    /// Answer `success: true` for any token, even an unknown one, but omit `hostname` and
    /// `action` (an answer a client must not take as a pass for its site).
    SuccessWithoutDetails,
}

struct Token {
    hostname: String,
    action: String,
    cdata: Option<String>,
    issued: Instant,
    challenge_ts: String,
    /// The idempotency key of the first successful redemption (`Some("")` without one).
    redeemed_with: Option<String>,
}

struct Inner {
    tokens: HashMap<String, Token>,
    requests: Vec<SiteverifyRequest>,
    delay: Duration,
    misbehavior: Misbehavior,
}

struct Shared {
    secret: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake siteverify; the server stops when this is dropped.
pub struct FakeTurnstile {
    base_url: String,
    state: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeTurnstile {
    /// Starts the endpoint on `127.0.0.1`, port 0, for a widget with this secret key.
    pub async fn start(secret: &str) -> FakeTurnstile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Turnstile");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Shared {
            secret: secret.to_owned(),
            inner: Mutex::new(Inner {
                tokens: HashMap::new(),
                requests: Vec::new(),
                delay: Duration::ZERO,
                misbehavior: Misbehavior::None,
            }),
        });
        let app = Router::new()
            .route("/turnstile/v0/siteverify", post(siteverify))
            .route("/elsewhere", post(elsewhere))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTurnstile { base_url: format!("http://127.0.0.1:{port}"), state, task }
    }

    /// `http://127.0.0.1:PORT`, the value for the verifier's base URL.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// A new valid token, as if a browser had solved the widget on `hostname` with
    /// `data-action="{action}"`. Shaped like Cloudflare's (long, opaque, URL-safe).
    pub fn issue_token(&self, hostname: &str, action: &str) -> String {
        let mut raw = [0u8; 192];
        OsRng.fill_bytes(&mut raw);
        let token = format!("0.{}", URL_SAFE_NO_PAD.encode(raw));
        self.add_token(&token, hostname, action, None);
        token
    }

    /// Registers `token` as valid for `hostname` and `action`, carrying `cdata`.
    pub fn add_token(&self, token: &str, hostname: &str, action: &str, cdata: Option<&str>) {
        let challenge_ts =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        self.state.lock().tokens.insert(
            token.to_owned(),
            Token {
                hostname: hostname.to_owned(),
                action: action.to_owned(),
                cdata: cdata.map(str::to_owned),
                issued: Instant::now(),
                challenge_ts,
                redeemed_with: None,
            },
        );
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().delay = delay;
    }

    /// Applies to every answer until `misbehave(Misbehavior::None)`.
    pub fn misbehave(&self, m: Misbehavior) {
        self.state.lock().misbehavior = m;
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<SiteverifyRequest> {
        self.state.lock().requests.clone()
    }
}

impl Drop for FakeTurnstile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> SiteverifyRequest {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut fields: HashMap<String, String> = HashMap::new();
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                if let Value::String(s) = v {
                    fields.insert(k, s);
                }
            }
        }
    } else {
        fields.extend(url::form_urlencoded::parse(body).into_owned());
    }
    SiteverifyRequest {
        content_type,
        secret: fields.remove("secret"),
        response: fields.remove("response"),
        remoteip: fields.remove("remoteip"),
        idempotency_key: fields.remove("idempotency_key"),
    }
}

fn refusal(code: &str) -> Value {
    json!({ "success": false, "error-codes": [code], "messages": [] })
}

async fn siteverify(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = parse_request(&headers, &body);
    let (delay, misbehavior) = {
        let mut inner = s.lock();
        inner.requests.push(request.clone());
        (inner.delay, inner.misbehavior.clone())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match misbehavior {
        Misbehavior::None => {}
        Misbehavior::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            return (status, [(header::CONTENT_TYPE, "text/html")], "<html><body>Bad gateway</body></html>")
                .into_response();
        }
        Misbehavior::MalformedJson => {
            return ([(header::CONTENT_TYPE, "application/json")], "{\"success\": tru").into_response();
        }
        Misbehavior::Redirect => {
            return (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response();
        }
        Misbehavior::SuccessWithoutDetails => {
            return axum::Json(json!({ "success": true, "error-codes": [] })).into_response();
        }
    }
    axum::Json(answer(&s, &request)).into_response()
}

fn answer(s: &Shared, request: &SiteverifyRequest) -> Value {
    let secret = match request.secret.as_deref() {
        None | Some("") => return refusal("missing-input-secret"),
        Some(secret) => secret,
    };
    if secret != s.secret {
        return refusal("invalid-input-secret");
    }
    let token = match request.response.as_deref() {
        None | Some("") => return refusal("missing-input-response"),
        Some(t) => t,
    };
    let mut inner = s.lock();
    let Some(t) = inner.tokens.get_mut(token) else {
        return refusal("invalid-input-response");
    };
    if t.issued.elapsed() > TOKEN_LIFETIME {
        return refusal("timeout-or-duplicate");
    }
    let key = request.idempotency_key.clone().unwrap_or_default();
    match &t.redeemed_with {
        None => t.redeemed_with = Some(key),
        // A retry with the same idempotency key gets the same answer again.
        Some(first) if !first.is_empty() && *first == key => {}
        Some(_) => return refusal("timeout-or-duplicate"),
    }
    json!({
        "success": true,
        "challenge_ts": t.challenge_ts,
        "hostname": t.hostname,
        "error-codes": [],
        "action": t.action,
        "cdata": t.cdata.clone().unwrap_or_default(),
        "metadata": { "ephemeral_id": "x:fake-ephemeral-id" },
    })
}

async fn elsewhere() -> Response {
    axum::Json(json!({
        "success": true,
        "challenge_ts": "2026-01-01T00:00:00.000Z",
        "hostname": "app.example.com",
        "error-codes": [],
        "action": "signup",
        "cdata": "",
    }))
    .into_response()
}
