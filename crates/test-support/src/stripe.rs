//! A local server that speaks Stripe's wire format, for testing billing.
//!
//! Requests are form-encoded (nested keys as `a[b][c]`), answers JSON, errors Stripe's error
//! object (`{"error": {"type", "message"}}`), the secret key a bearer token (401 otherwise).
//! Covered: `POST /v1/customers`, `POST /v1/checkout/sessions`,
//! `POST /v1/billing_portal/sessions`, `GET /v1/subscriptions/{id}`, `DELETE /v1/subscriptions/{id}`
//! (cancels at once: status `canceled`, `canceled_at`), `GET /v1/invoices`.
//! `Idempotency-Key` is honoured as Stripe does: the same key with the same parameters answers
//! the first answer again; with other parameters, `400 idempotency_error`. Every request is
//! recorded. [`FakeStripe::set_failing`] makes every answer a 500 (Stripe in trouble);
//! [`FakeStripe::stop`] closes the port (Stripe unreachable).
//!
//! Webhooks are built as Stripe sends them ([`FakeStripe::event`]) and signed as Stripe
//! documents ([`signature_header`]): `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` keyed with
//! the endpoint secret, one `v1` per secret. The signing here is written independently of the
//! application's verifier.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
    pub status: u16,
}

/// The parameters first sent with an idempotency key, and the answer given (status, body).
type FirstAnswer = (Vec<(String, String)>, u16, Value);

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Idempotency key → (parameters, answer status, answer body).
    idempotent: HashMap<String, FirstAnswer>,
    customers: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    invoices: Vec<Value>,
    next: u64,
    failing: bool,
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

pub struct FakeStripe {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "type": kind, "message": message } }))).into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", shared.key))
}

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_test{:08}", self.next)
    }
}

async fn post(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let map: HashMap<String, String> = form.iter().cloned().collect();
    let (status, body) = answer_post(&shared, &headers, &path, &form, key.as_deref());
    shared.lock().requests.push(Recorded {
        method: "POST".into(),
        path: format!("/v1/{path}"),
        idempotency_key: key,
        form: map,
        status,
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn answer_post(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    form: &[(String, String)],
    key: Option<&str>,
) -> (u16, Value) {
    let err = |s: u16, kind: &str, m: &str| (s, json!({ "error": { "type": kind, "message": m } }));
    let mut inner = shared.lock();
    if inner.failing {
        return err(500, "api_error", "Something went wrong on Stripe's end.");
    }
    if !authorized(shared, headers) {
        return err(401, "invalid_request_error", "Invalid API Key provided.");
    }
    if let Some(k) = key
        && let Some((params, status, body)) = inner.idempotent.get(k)
    {
        if params.as_slice() != form {
            return err(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            );
        }
        return (*status, body.clone());
    }
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (status, body) = match path {
        "customers" => {
            let id = inner.id("cus");
            let c = json!({ "id": id, "object": "customer", "name": get("name"), "email": get("email"),
                "metadata": { "organization_id": get("metadata[organization_id]") } });
            inner.customers.insert(id, c.clone());
            (200, c)
        }
        "checkout/sessions" => {
            let customer = get("customer").unwrap_or_default();
            if get("mode").as_deref() != Some("subscription") || !inner.customers.contains_key(&customer) {
                return err(400, "invalid_request_error", "No such customer, or not a subscription checkout.");
            }
            let id = inner.id("cs");
            let s = json!({ "id": id, "object": "checkout.session", "mode": "subscription", "customer": customer,
                "client_reference_id": get("client_reference_id"), "status": "open",
                "url": format!("https://checkout.stripe.test/c/pay/{id}"),
                "success_url": get("success_url"), "cancel_url": get("cancel_url"),
                "line_items_price": get("line_items[0][price]"),
                "metadata": {}, "subscription_metadata": { "organization_id": get("subscription_data[metadata][organization_id]") } });
            inner.sessions.insert(id, s.clone());
            (200, s)
        }
        "billing_portal/sessions" => {
            let customer = get("customer").unwrap_or_default();
            if !inner.customers.contains_key(&customer) {
                return err(400, "invalid_request_error", "No such customer.");
            }
            let id = inner.id("bps");
            (
                200,
                json!({ "id": id, "object": "billing_portal.session", "customer": customer,
                "return_url": get("return_url"), "url": format!("https://billing.stripe.test/p/session/{id}") }),
            )
        }
        _ => return err(404, "invalid_request_error", "Unrecognized request URL."),
    };
    if let Some(k) = key {
        inner.idempotent.insert(k.to_string(), (form.to_vec(), status, body.clone()));
    }
    (status, body)
}

async fn get(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let res = {
        let inner = shared.lock();
        if inner.failing {
            error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Something went wrong on Stripe's end.")
        } else if !authorized(&shared, &headers) {
            error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided.")
        } else if let Some(id) = path.strip_prefix("subscriptions/") {
            match inner.subscriptions.get(id) {
                Some(s) => axum::Json(s.clone()).into_response(),
                None => error(StatusCode::NOT_FOUND, "invalid_request_error", &format!("No such subscription: '{id}'")),
            }
        } else if path == "invoices" {
            let customer = q.get("customer").cloned().unwrap_or_default();
            let data: Vec<Value> =
                inner.invoices.iter().filter(|i| i["customer"] == customer.as_str()).cloned().collect();
            axum::Json(json!({ "object": "list", "url": "/v1/invoices", "has_more": false, "data": data }))
                .into_response()
        } else {
            error(StatusCode::NOT_FOUND, "invalid_request_error", "Unrecognized request URL.")
        }
    };
    let status = res.status().as_u16();
    shared.lock().requests.push(Recorded {
        method: "GET".into(),
        path: format!("/v1/{path}"),
        idempotency_key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string),
        form: q,
        status,
    });
    res
}

/// `DELETE /v1/subscriptions/{id}`: Stripe's immediate cancellation. It answers the
/// subscription, now `canceled`; an unknown id (or one already deleted) is a 404
/// `resource_missing`, as Stripe answers.
async fn delete(State(shared): State<Shared>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let res = {
        let mut inner = shared.lock();
        if inner.failing {
            error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Something went wrong on Stripe's end.")
        } else if !authorized(&shared, &headers) {
            error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided.")
        } else if let Some(id) = path.strip_prefix("subscriptions/") {
            match inner.subscriptions.get_mut(id) {
                Some(s) if s["status"] != "canceled" => {
                    s["status"] = json!("canceled");
                    s["canceled_at"] = json!(time::OffsetDateTime::now_utc().unix_timestamp());
                    axum::Json(s.clone()).into_response()
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({ "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": format!("No such subscription: '{id}'"),
                    } })),
                )
                    .into_response(),
            }
        } else {
            error(StatusCode::NOT_FOUND, "invalid_request_error", "Unrecognized request URL.")
        }
    };
    let status = res.status().as_u16();
    shared.lock().requests.push(Recorded {
        method: "DELETE".into(),
        path: format!("/v1/{path}"),
        idempotency_key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string),
        form: HashMap::new(),
        status,
    });
    res
}

impl FakeStripe {
    pub async fn start(secret_key: &str) -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Stripe");
        let addr = listener.local_addr().unwrap();
        let shared = Shared { key: secret_key.to_string(), inner: Arc::default() };
        let app = axum::Router::new()
            .route("/v1/{*path}", axum::routing::post(post).get(get).delete(delete))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { addr, shared, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every later answer is a 500 (`true`), or normal again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.shared.lock().failing = failing;
    }

    /// Closes the port: Stripe unreachable.
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.shared.lock().sessions.get(id).cloned()
    }

    /// The last Checkout Session made.
    pub fn last_session(&self) -> Option<Value> {
        let inner = self.shared.lock();
        inner.sessions.values().max_by_key(|s| s["id"].as_str().unwrap_or("").to_string()).cloned()
    }

    /// Pays a Checkout Session as the customer would: its subscription now exists (with
    /// `status`, created at `created`). Returns the `checkout.session.completed` event.
    pub fn complete_checkout(&self, session_id: &str, status: &str, created: i64) -> Value {
        let mut inner = self.shared.lock();
        let mut session = inner.sessions.get(session_id).cloned().expect("a session of this fake");
        let sub_id = inner.id("sub");
        let customer = session["customer"].as_str().unwrap_or("").to_string();
        let price = session["line_items_price"].as_str().unwrap_or("").to_string();
        let org = session["subscription_metadata"]["organization_id"].clone();
        let sub = subscription_object(&sub_id, &customer, &price, status, created, &org);
        inner.subscriptions.insert(sub_id.clone(), sub);
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        session["subscription"] = json!(sub_id);
        inner.sessions.insert(session_id.to_string(), session.clone());
        let id = inner.id("evt");
        event_json(&id, "checkout.session.completed", created, session)
    }

    /// Changes a subscription (as the portal or dunning would) and returns the
    /// `customer.subscription.<kind>` event, created at `created`.
    pub fn update_subscription(
        &self,
        sub_id: &str,
        kind: &str,
        status: &str,
        price: Option<&str>,
        created: i64,
    ) -> Value {
        let mut inner = self.shared.lock();
        let mut sub = inner.subscriptions.get(sub_id).cloned().expect("a subscription of this fake");
        sub["status"] = json!(status);
        if let Some(p) = price {
            sub["items"]["data"][0]["price"]["id"] = json!(p);
        }
        inner.subscriptions.insert(sub_id.to_string(), sub.clone());
        let id = inner.id("evt");
        event_json(&id, &format!("customer.subscription.{kind}"), created, sub)
    }

    /// An invoice of the subscription (`paid` or failed) and its `invoice.paid` /
    /// `invoice.payment_failed` event.
    pub fn invoice(&self, sub_id: &str, paid: bool, amount: i64, created: i64) -> Value {
        let mut inner = self.shared.lock();
        let sub = inner.subscriptions.get(sub_id).cloned().expect("a subscription of this fake");
        let id = inner.id("in");
        let invoice = json!({ "id": id, "object": "invoice", "customer": sub["customer"], "subscription": sub_id,
            "number": format!("CF-{:04}", inner.next), "status": if paid { "paid" } else { "open" },
            "amount_due": amount, "amount_paid": if paid { amount } else { 0 }, "currency": "eur", "created": created,
            "hosted_invoice_url": format!("https://invoice.stripe.test/i/{id}"), "invoice_pdf": null });
        inner.invoices.push(invoice.clone());
        let eid = inner.id("evt");
        event_json(&eid, if paid { "invoice.paid" } else { "invoice.payment_failed" }, created, invoice)
    }

    /// Any event, for tests that build the object themselves.
    pub fn event(&self, kind: &str, created: i64, object: Value) -> Value {
        let id = self.shared.lock().id("evt");
        event_json(&id, kind, created, object)
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn subscription_object(id: &str, customer: &str, price: &str, status: &str, created: i64, org: &Value) -> Value {
    json!({ "id": id, "object": "subscription", "customer": customer, "status": status, "created": created,
        "current_period_start": created, "current_period_end": created + 30 * 86400, "cancel_at_period_end": false,
        "items": { "object": "list", "data": [ { "id": format!("si_{id}"), "object": "subscription_item",
            "price": { "id": price, "object": "price" }, "quantity": 1 } ] },
        "metadata": { "organization_id": org } })
}

/// An event as Stripe delivers it.
pub fn event_json(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({ "id": id, "object": "event", "api_version": "2024-06-20", "created": created, "livemode": false,
        "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null }, "type": kind,
        "data": { "object": object } })
}

/// `Stripe-Signature` for `body` at `t`, one `v1` per secret (as during a secret roll).
pub fn signature_header(secrets: &[&str], t: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        header.push_str(&format!(",v1={}", hex_lower(&mac.finalize().into_bytes())));
    }
    header
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
