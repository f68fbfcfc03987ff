//! A local server that speaks Resend's wire format, for testing the Resend transport and its
//! webhooks.
//!
//! `POST /emails` takes Resend's JSON body with `Authorization: Bearer <key>` (401 otherwise)
//! and answers `200 {"id": "…"}`, honouring `Idempotency-Key` as Resend does: the same key
//! again answers the first answer and sends nothing more. Every request is recorded; the
//! accepted messages are counted once per key ([`FakeResend::delivered`]). Planned failures
//! ([`FakeResend::plan`]) answer `429` with `Retry-After`, `500`, or `422` in Resend's error
//! shape, and [`FakeResend::set_latency`] makes every answer take a while after the message is
//! accepted (a provider is never instant; a worker can be killed after the provider accepted a
//! message and before it heard so).
//!
//! Attachments are checked as Resend checks them (an array of `{filename, content}` with strict
//! base64 content, or a `path`; 40 MB in all) and read back with [`attachments`].
//!
//! Webhooks are signed as Svix documents ([`sign`]): `svix-id`, `svix-timestamp`,
//! `svix-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the key after
//! `whsec_`. The signing here is written independently of the application's verifier.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: Value,
    /// What the server answered.
    pub status: u16,
}

/// An answer to plan for the next request.
#[derive(Debug, Clone, Copy)]
pub enum Planned {
    /// `429` with `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// `500`.
    ServerError,
    /// `422 validation_error`.
    Invalid,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Idempotency key → the id answered.
    sent: HashMap<String, String>,
    /// Accepted messages, once per key, in order.
    delivered: Vec<Value>,
    plan: VecDeque<Planned>,
    latency: Duration,
}

#[derive(Clone)]
struct Shared {
    key: String,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakeResend {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl FakeResend {
    /// Starts on `127.0.0.1`, port 0, accepting `api_key`.
    pub async fn start(api_key: &str) -> FakeResend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Resend");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared { key: api_key.to_string(), inner: Arc::default() };
        let app = axum::Router::new().route("/emails", axum::routing::post(emails)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeResend { addr, shared, task }
    }

    /// What `mail.resend_base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Accepted messages, once per idempotency key.
    pub fn delivered(&self) -> Vec<Value> {
        self.shared.lock().delivered.clone()
    }

    /// The next requests get these answers, in order (then normal service resumes).
    pub fn plan(&self, answers: &[Planned]) {
        self.shared.lock().plan.extend(answers.iter().copied());
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Waits until `n` messages were accepted; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("fake Resend: expected {n} message(s) within {timeout:?}, got {}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeResend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    (status, Json(json!({ "statusCode": status.as_u16(), "name": name, "message": message }))).into_response()
}

/// Decides and records first, then waits out the latency: a client that gives up (or is
/// killed) while waiting has had its message accepted, as with a real provider.
async fn emails(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (res, latency) = answer(&shared, &headers, &body);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    res
}

fn answer(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> (Response, Duration) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = header("authorization");
    let idempotency_key = header("idempotency-key");
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let mut inner = shared.lock();
    let (status, res) = if authorization.as_deref() != Some(&format!("Bearer {}", shared.key)) {
        (401, error(StatusCode::UNAUTHORIZED, "missing_api_key", "Missing or invalid API key"))
    } else if let Some(planned) = inner.plan.pop_front() {
        match planned {
            Planned::RateLimited { retry_after_secs } => {
                let mut res = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", "Too many requests");
                res.headers_mut().insert("retry-after", retry_after_secs.to_string().parse().expect("number"));
                (429, res)
            }
            Planned::ServerError => (500, error(StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error", "boom")),
            Planned::Invalid => {
                (422, error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", "Invalid `to` field"))
            }
        }
    } else {
        match parsed.as_ref().ok().filter(|v| valid(v)) {
            None => (422, error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", "Missing required fields")),
            Some(v) => {
                let id = match idempotency_key.as_ref().and_then(|k| inner.sent.get(k).cloned()) {
                    Some(id) => id,
                    None => {
                        let id = uuid::Uuid::new_v4().to_string();
                        if let Some(k) = &idempotency_key {
                            inner.sent.insert(k.clone(), id.clone());
                        }
                        inner.delivered.push(v.clone());
                        id
                    }
                };
                (200, Json(json!({ "id": id })).into_response())
            }
        }
    };
    inner.requests.push(Recorded { authorization, idempotency_key, body: parsed.unwrap_or(Value::Null), status });
    (res, inner.latency)
}

/// A file of an accepted message, from Resend's `attachments: [{filename, content (base64),
/// content_type?}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: Option<String>,
    pub content: Vec<u8>,
}

/// The attachments of an accepted message (`delivered()`'s bodies).
pub fn attachments(message: &Value) -> Vec<Attachment> {
    message
        .get("attachments")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|a| Attachment {
                    filename: a["filename"].as_str().unwrap_or_default().to_string(),
                    content_type: a.get("content_type").and_then(Value::as_str).map(str::to_string),
                    content: STANDARD.decode(a["content"].as_str().unwrap_or_default()).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Resend's rules for attachments: an array of objects, each with a `filename` and either
/// `content` (strict base64) or a `path` URL; 40 MB in all.
fn valid_attachments(v: &Value) -> bool {
    let Some(list) = v.get("attachments") else { return true };
    let Some(list) = list.as_array() else { return false };
    let mut total = 0usize;
    list.iter().all(|a| {
        let named = a.get("filename").and_then(Value::as_str).is_some_and(|f| !f.is_empty());
        let content = match (a.get("content").and_then(Value::as_str), a.get("path").and_then(Value::as_str)) {
            (Some(c), None) => match STANDARD.decode(c) {
                Ok(bytes) => {
                    total += bytes.len();
                    !bytes.is_empty()
                }
                Err(_) => false,
            },
            (None, Some(p)) => p.starts_with("https://") || p.starts_with("http://"),
            _ => false,
        };
        named && content
    }) && total <= 40 * 1000 * 1000
}

fn valid(v: &Value) -> bool {
    if !valid_attachments(v) {
        return false;
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let to = match v.get("to") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty() && a.iter().all(|t| t.as_str().is_some_and(|t| t.contains('@'))),
        _ => false,
    };
    s("from") && s("subject") && to && (s("html") || s("text"))
}

/// A fresh `whsec_…` secret.
pub fn new_secret() -> String {
    let key: [u8; 24] = rand::random();
    format!("whsec_{}", STANDARD.encode(key))
}

/// `v1,<signature>` as Svix computes it (HMAC-SHA256, written out from SHA-256 here so it shares
/// no code with the verifier under test).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64 secret");
    let message = format!("{id}.{timestamp}.{body}");
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, message.as_bytes())))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// A webhook delivery: the body and its three headers.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
}

impl Webhook {
    /// `event` signed with `secret` at `timestamp` under a fresh message id.
    pub fn signed(secret: &str, event: &Value, timestamp: i64) -> Webhook {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let body = event.to_string();
        let signature = sign(secret, &id, timestamp, &body);
        Webhook { id, timestamp, signature, body }
    }

    /// Posts it to `url` with `client`.
    pub async fn post(&self, client: &reqwest::Client, url: &str) -> reqwest::Response {
        client
            .post(url)
            .header("content-type", "application/json")
            .header("svix-id", &self.id)
            .header("svix-timestamp", self.timestamp.to_string())
            .header("svix-signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await
            .expect("webhook request")
    }
}

/// A Resend event of `kind` about message `email_id` to `to`.
pub fn event(kind: &str, email_id: &str, to: &str, extra: Value) -> Value {
    let mut data = json!({
        "email_id": email_id,
        "from": "ClientFlow <no-reply@clientflow.test>",
        "to": [to],
        "subject": "A message",
        "created_at": "2025-01-01T00:00:00.000Z",
    });
    if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    json!({ "type": kind, "created_at": "2025-01-01T00:00:01.000Z", "data": data })
}

/// `email.bounced`, permanent or transient.
pub fn bounced(email_id: &str, to: &str, permanent: bool) -> Value {
    let (kind, sub) = if permanent { ("Permanent", "General") } else { ("Transient", "MailboxFull") };
    event(
        "email.bounced",
        email_id,
        to,
        json!({ "bounce": { "type": kind, "subType": sub, "message": "The recipient's mail server refused the message." } }),
    )
}
