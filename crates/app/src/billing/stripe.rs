//! A small typed client for the Stripe calls billing makes, over `reqwest`.
//!
//! Stripe's wire format: form-encoded request bodies (nested keys as `a[b][c]`), JSON answers,
//! errors as `{"error": {"type", "message", "code"}}`, the secret key as a bearer token. Every
//! POST carries an `Idempotency-Key`, the same one on each retry, so a retried request never
//! creates twice. Requests are bounded by `billing.timeout_ms`; a 429, a 5xx or no answer is
//! retried up to `billing.max_retries` times with doubling delays (honouring `Retry-After`).
//!
//! A circuit breaker stands in front: after `billing.breaker_failures` consecutive failures,
//! calls fail at once for `billing.breaker_cooldown_secs`, then one is let through to probe.
//! Billing pages say Stripe is unreachable; nothing else in the product ever waits on Stripe.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::config::BillingConfig;
use crate::platform::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeError {
    /// Stripe could not be reached, kept failing, or the breaker is open.
    Unavailable(String),
    /// Stripe answered with an error object (4xx other than 429).
    Api { status: u16, kind: String, message: String },
}

impl std::fmt::Display for StripeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StripeError::Unavailable(m) => write!(f, "Stripe is unavailable: {m}"),
            StripeError::Api { status, kind, message } => write!(f, "Stripe refused ({status} {kind}): {message}"),
        }
    }
}

/// Consecutive failures, and until when calls are refused.
#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out now. After the cooldown one call probes (half-open): its
    /// failure opens the breaker again at once.
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match s.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: let this one through; others wait for its outcome's effect.
                s.open_until = Some(Instant::now() + self.cooldown);
                true
            }
            None => true,
        }
    }

    pub fn success(&self) {
        let mut s = self.lock();
        s.failures = 0;
        s.open_until = None;
    }

    pub fn failure(&self) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }

    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some_and(|u| Instant::now() < u)
    }
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    retries: u32,
    retry_base: Duration,
    breaker: Breaker,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub amount_due: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    #[serde(default)]
    pub invoice_pdf: Option<String>,
}

impl StripeClient {
    pub fn from_config(config: &BillingConfig) -> Option<Self> {
        let key = config.stripe_secret_key.clone()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .build()
            .ok()?;
        Some(Self {
            http,
            base: config.stripe_base_url.trim_end_matches('/').to_string(),
            key,
            retries: config.max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
            breaker: Breaker::new(config.breaker_failures, Duration::from_secs(config.breaker_cooldown_secs)),
        })
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// One call, with its retries. `form` is sent on a POST (with `idempotency_key`), as the
    /// query on a GET.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        if !self.breaker.allow() {
            return Err(StripeError::Unavailable("too many recent failures; calls are paused".into()));
        }
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0u32;
        loop {
            let mut req = self.http.request(method.clone(), &url).bearer_auth(self.key.expose());
            req = if method == reqwest::Method::POST {
                let body = serde_urlencoded::to_string(form).unwrap_or_default();
                let mut r = req.header("content-type", "application/x-www-form-urlencoded").body(body);
                if let Some(k) = idempotency_key {
                    r = r.header("idempotency-key", k);
                }
                r
            } else {
                req.query(form)
            };
            let outcome: Result<std::convert::Infallible, (String, Option<u64>)> = match req.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry_after = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        self.breaker.success();
                        return Ok(body);
                    }
                    let error = body.get("error").cloned().unwrap_or(Value::Null);
                    let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    if status == 429 || status >= 500 {
                        Err((format!("answered {status}"), retry_after))
                    } else {
                        // A refusal is an answer: Stripe is up.
                        self.breaker.success();
                        return Err(StripeError::Api { status, kind: text("type"), message: text("message") });
                    }
                }
                Err(e) => Err((
                    if e.is_timeout() { "timed out".to_string() } else { "could not be reached".to_string() },
                    None,
                )),
            };
            let Err((reason, retry_after)) = outcome;
            if attempt >= self.retries {
                self.breaker.failure();
                return Err(StripeError::Unavailable(reason));
            }
            let backoff = self.retry_base.saturating_mul(1 << attempt.min(10));
            let wait = retry_after.map(Duration::from_secs).unwrap_or(backoff).min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn id_of(v: &Value) -> Result<String, StripeError> {
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| StripeError::Unavailable("an answer without an id".into()))
    }

    fn url_of(v: &Value) -> Result<String, StripeError> {
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        // Only an https address (or the local test server's http one) is followed.
        if url.starts_with("https://") || url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost") {
            Ok(url.to_string())
        } else {
            Err(StripeError::Unavailable("an answer without a usable url".into()))
        }
    }

    /// `POST /v1/customers` for an organization. The idempotency key is the organization's,
    /// so two Owners starting a checkout at once make one customer.
    pub async fn create_customer(&self, org_id: &str, name: &str, email: &str) -> Result<String, StripeError> {
        let form = vec![
            ("name".to_string(), name.to_string()),
            ("email".to_string(), email.to_string()),
            ("metadata[organization_id]".to_string(), org_id.to_string()),
        ];
        let v = self.call(reqwest::Method::POST, "/v1/customers", &form, Some(&format!("customer-{org_id}"))).await?;
        Self::id_of(&v)
    }

    /// `POST /v1/checkout/sessions` in subscription mode; answers the page to send the Owner to.
    pub async fn create_checkout_session(
        &self,
        customer: &str,
        price: &str,
        org_id: &str,
        success_url: &str,
        cancel_url: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let form = vec![
            ("mode".to_string(), "subscription".to_string()),
            ("customer".to_string(), customer.to_string()),
            ("client_reference_id".to_string(), org_id.to_string()),
            ("line_items[0][price]".to_string(), price.to_string()),
            ("line_items[0][quantity]".to_string(), "1".to_string()),
            ("subscription_data[metadata][organization_id]".to_string(), org_id.to_string()),
            ("success_url".to_string(), success_url.to_string()),
            ("cancel_url".to_string(), cancel_url.to_string()),
        ];
        let v = self.call(reqwest::Method::POST, "/v1/checkout/sessions", &form, Some(idempotency_key)).await?;
        Self::url_of(&v)
    }

    /// `POST /v1/billing_portal/sessions`: payment method, invoices, cancelation.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let form =
            vec![("customer".to_string(), customer.to_string()), ("return_url".to_string(), return_url.to_string())];
        let v = self.call(reqwest::Method::POST, "/v1/billing_portal/sessions", &form, Some(idempotency_key)).await?;
        Self::url_of(&v)
    }

    /// `GET /v1/subscriptions/{id}`: the subscription as Stripe holds it now.
    pub async fn subscription(&self, id: &str) -> Result<Value, StripeError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StripeError::Api {
                status: 400,
                kind: "invalid_request_error".into(),
                message: "bad id".into(),
            });
        }
        self.call(reqwest::Method::GET, &format!("/v1/subscriptions/{id}"), &[], None).await
    }

    /// `DELETE /v1/subscriptions/{id}`: cancels the subscription at once (no further
    /// invoices). `Ok(false)`: Stripe has no such subscription (any more), which is as good.
    pub async fn cancel_subscription(&self, id: &str) -> Result<bool, StripeError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StripeError::Api {
                status: 400,
                kind: "invalid_request_error".into(),
                message: "bad id".into(),
            });
        }
        match self.call(reqwest::Method::DELETE, &format!("/v1/subscriptions/{id}"), &[], None).await {
            Ok(_) => Ok(true),
            Err(StripeError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/invoices?customer=…`: the newest invoices and receipts.
    pub async fn invoices(&self, customer: &str) -> Result<Vec<Invoice>, StripeError> {
        let q = vec![("customer".to_string(), customer.to_string()), ("limit".to_string(), "12".to_string())];
        let v = self.call(reqwest::Method::GET, "/v1/invoices", &q, None).await?;
        let data = v.get("data").cloned().unwrap_or(Value::Array(vec![]));
        serde_json::from_value(data).map_err(|e| StripeError::Unavailable(format!("an unreadable invoice list: {e}")))
    }
}
