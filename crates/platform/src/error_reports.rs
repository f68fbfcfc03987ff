//! Error reporting to Sentry (or any service speaking its envelope protocol): off unless
//! `sentry.dsn` is set.
//!
//! What is sent: panics and 5xx answers, each tagged with the request id (the one in the
//! response's `x-request-id` and the log lines), the HTTP method, the matched route template
//! (`/o/{org}/files/{file}`, never the raw path) and the status. What is never sent: cookies,
//! headers, query strings, request bodies, the user, the client address. Those are not attached
//! to events in the first place (no request data is collected, `send_default_pii` is off, no
//! breadcrumbs), and every string of an event also passes through [`scrub_text`] before it
//! leaves the process, because an error's text can quote input (a database error naming a
//! value, a URL with a token in its query).
//!
//! Each request gets a hub of its own bound to its future (and to the task `in_request_tx`
//! spawns), so a panic's hook finds the request's scope and one request never reports under
//! another's id. Envelopes go out through our own transport over the workspace's `reqwest`
//! (rustls with ring), on a thread of its own, so a slow or absent Sentry never holds a request.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sentry::protocol::{Event, Exception, Level, Value};
use sentry::{ClientOptions, Envelope, Hub, Scope, SentryFutureExt, Transport, TransportFactory, TransportOptions};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::http::error::InternalCause;
use crate::http::middleware::{RequestId, RouteName};
use crate::secret::Secret;

/// `[sentry]`: where error reports go. Off without a DSN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentryConfig {
    /// The project's DSN (`https://<public key>@<host>/<project id>`). Not set: reporting is off.
    pub dsn: Option<Secret>,
    /// The environment events are filed under (e.g. `production`).
    pub environment: Option<String>,
    /// Seconds an envelope may take to deliver.
    pub timeout_secs: u64,
}

impl Default for SentryConfig {
    fn default() -> Self {
        Self { dsn: None, environment: None, timeout_secs: 10 }
    }
}

impl SentryConfig {
    /// Whether error reports are sent anywhere.
    pub fn enabled(&self) -> bool {
        self.dsn.as_ref().is_some_and(|d| !d.expose().is_empty())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dsn) = self.dsn.as_ref().filter(|d| !d.expose().is_empty()) {
            dsn.expose()
                .parse::<sentry::types::Dsn>()
                .map_err(|e| ConfigError::invalid("sentry.dsn", format!("not a Sentry DSN: {e}")))?;
        }
        Ok(())
    }
}

/// The installation's reporter: a Sentry client when configured, nothing otherwise.
#[derive(Clone, Default)]
pub struct ErrorReporter {
    client: Option<Arc<sentry::Client>>,
}

impl ErrorReporter {
    pub fn from_config(config: &SentryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let Some(dsn) = config.dsn.as_ref().filter(|_| config.enabled()) else {
            return Ok(Self::default());
        };
        let dsn: sentry::types::Dsn =
            dsn.expose().parse().map_err(|_| ConfigError::invalid("sentry.dsn", "invalid"))?;
        let mut options = ClientOptions::default();
        options.dsn = Some(dsn);
        options.environment = config.environment.clone().map(Cow::Owned);
        options.release = Some(Cow::Borrowed(concat!("clientflow@", env!("CARGO_PKG_VERSION"))));
        options.send_default_pii = false;
        options.max_breadcrumbs = 0;
        options.before_send = Some(Arc::new(|event| Some(scrub_event(event))));
        options.transport =
            Some(Arc::new(HttpTransportFactory { timeout: Duration::from_secs(config.timeout_secs.max(1)) }));
        let client = sentry::Client::with_options(sentry::apply_defaults(options));
        Ok(Self { client: Some(Arc::new(client)) })
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Makes this reporter the process's own, for what happens outside a request (the worker,
    /// start-up): `serve` and `worker` call it once.
    pub fn install_for_process(&self) {
        if let Some(c) = &self.client {
            Hub::main().bind_client(Some(c.clone()));
        }
    }

    /// Waits (at most `timeout`) until queued reports are delivered.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.client.as_ref().is_none_or(|c| c.flush(Some(timeout)))
    }

    fn hub_for(&self, request_id: &str, method: &str) -> Option<Arc<Hub>> {
        let client = self.client.clone()?;
        let mut scope = Scope::default();
        scope.set_tag("request_id", request_id);
        scope.set_tag("http.method", method);
        Some(Arc::new(Hub::new(Some(client), Arc::new(scope))))
    }
}

/// Runs `fut` with the current request's hub (for work a request hands to a task of its own).
pub fn in_current_hub<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    fut.bind_hub(Hub::current())
}

/// Middleware, just inside the request id: binds a hub for the request and reports a 5xx
/// answer that no panic report already covers.
pub async fn report_errors(State(reporter): State<ErrorReporter>, req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let method = req.method().to_string();
    let Some(hub) = reporter.hub_for(&request_id, &method) else {
        return next.run(req).await;
    };
    let res = next.run(req).bind_hub(hub.clone()).await;
    if res.status().is_server_error() && hub.last_event_id().is_none() {
        let route = res.extensions().get::<RouteName>().map(|r| r.0.clone()).unwrap_or_else(|| "unmatched".into());
        let cause = res.extensions().get::<InternalCause>().map(|c| c.0.clone());
        let status = res.status().as_u16();
        hub.configure_scope(|s| {
            s.set_tag("http.route", &route);
            s.set_tag("http.status_code", status);
            s.set_transaction(Some(&format!("{method} {route}")));
        });
        hub.capture_event(Event {
            level: Level::Error,
            message: Some(format!("{status} answered to {method} {route}")),
            exception: vec![Exception {
                ty: "InternalError".into(),
                value: Some(cause.unwrap_or_else(|| format!("status {status}"))),
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        });
    }
    res
}

/// Removes from an event what must never leave: request data, the user, breadcrumbs, and in
/// every remaining string, e-mail and IP addresses, credentials and query strings.
pub fn scrub_event(mut event: Event<'static>) -> Event<'static> {
    event.request = None;
    event.user = None;
    event.breadcrumbs = Default::default();
    event.message = event.message.map(|m| scrub_text(&m));
    if let Some(entry) = event.logentry.as_mut() {
        entry.message = scrub_text(&entry.message);
        entry.params.iter_mut().for_each(scrub_value);
    }
    event.culprit = event.culprit.map(|c| scrub_text(&c));
    event.transaction = event.transaction.map(|t| scrub_text(&t));
    for ex in event.exception.values.iter_mut() {
        ex.value = ex.value.as_deref().map(scrub_text);
        if let Some(trace) = ex.stacktrace.as_mut() {
            for frame in trace.frames.iter_mut() {
                frame.vars.clear();
            }
        }
    }
    for thread in event.threads.values.iter_mut() {
        if let Some(trace) = thread.stacktrace.as_mut() {
            for frame in trace.frames.iter_mut() {
                frame.vars.clear();
            }
        }
    }
    for v in event.tags.values_mut() {
        *v = scrub_text(v);
    }
    event.extra.values_mut().for_each(scrub_value);
    event
}

fn scrub_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = scrub_text(s),
        Value::Array(a) => a.iter_mut().for_each(scrub_value),
        Value::Object(o) => o.values_mut().for_each(scrub_value),
        _ => {}
    }
}

struct Scrubbers {
    rules: Vec<(regex::Regex, &'static str)>,
}

fn scrubbers() -> &'static Scrubbers {
    static S: std::sync::OnceLock<Scrubbers> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let r = |p: &str| regex::Regex::new(p).expect("a literal pattern");
        Scrubbers {
            rules: vec![
                // Credentials in a header-like text.
                (r(r"(?i)\b(bearer|basic|token)\s+[^\s,;]+"), "$1 [redacted]"),
                // name=value and name: value pairs whose name says secret.
                (
                    r(
                        r#"(?i)\b([a-z_.-]*(?:token|password|passwd|secret|session|cookie|authorization|api[_-]?key|signature|csrf|code|otp|key)[a-z_.-]*)(["']?\s*[=:]\s*["']?)[^\s&"',;)]+"#,
                    ),
                    "$1$2[redacted]",
                ),
                // Every query string of a URL or path.
                (r(r#"\?[^\s"'<>]+"#), "?[query]"),
                (r(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"), "[email]"),
                (r(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "[ip]"),
                (r(r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})\b|(?i)\b[0-9a-f]{0,4}::(?:[0-9a-f]{1,4}:?){0,6}"), "[ip]"),
                // Long opaque tokens (API keys, session ids): 24+ characters without a separator.
                (r(r"\b[A-Za-z0-9_]{24,}\b"), "[token]"),
            ],
        }
    })
}

/// Replaces e-mail and IP addresses, credentials, secrets in `name=value` pairs, query strings
/// and long opaque tokens in `text`.
pub fn scrub_text(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in &scrubbers().rules {
        if let Cow::Owned(s) = re.replace_all(&out, *with) {
            out = s;
        }
    }
    out
}

struct HttpTransportFactory {
    timeout: Duration,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::start(&options, self.timeout))
    }
}

/// Posts envelopes to the DSN's envelope endpoint from a thread of its own; drops (and logs)
/// what doesn't fit its queue rather than hold the caller.
struct HttpTransport {
    queue: std::sync::mpsc::SyncSender<Envelope>,
    pending: Arc<AtomicUsize>,
}

impl HttpTransport {
    fn start(options: &TransportOptions, timeout: Duration) -> Self {
        let (queue, receive) = std::sync::mpsc::sync_channel::<Envelope>(64);
        let pending = Arc::new(AtomicUsize::new(0));
        let url = options.dsn.envelope_api_url().to_string();
        let auth = options.dsn.to_auth(Some(&options.user_agent)).to_string();
        let left = pending.clone();
        let spawned = std::thread::Builder::new().name("error-reports".into()).spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let _entered = runtime.enter();
            let Ok(http) = reqwest::Client::builder().timeout(timeout).build() else { return };
            while let Ok(envelope) = receive.recv() {
                let mut body = Vec::new();
                if envelope.to_writer(&mut body).is_ok() {
                    let sent = runtime.block_on(
                        http.post(&url)
                            .header("X-Sentry-Auth", &auth)
                            .header("Content-Type", "application/x-sentry-envelope")
                            .body(body)
                            .send(),
                    );
                    match sent {
                        Ok(r) if !r.status().is_success() => {
                            tracing::warn!(status = r.status().as_u16(), "the error report was refused")
                        }
                        Err(e) => tracing::warn!(error = %e.without_url(), "could not deliver an error report"),
                        _ => {}
                    }
                }
                left.fetch_sub(1, Ordering::SeqCst);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the error-report thread");
        }
        Self { queue, pending }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.queue.try_send(envelope).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("an error report was dropped (its queue is full)");
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Sentry's entry in the sub-processor registry.
pub fn sub_processor(config: &SentryConfig) -> crate::subprocessor::SubProcessor {
    crate::subprocessor::SubProcessor {
        id: "sentry",
        name: "Sentry",
        enabled: config.enabled(),
        setting: "sentry.dsn",
        purpose: "Receives reports of server errors (answers 500 and panics) so they can be fixed.",
        receives: &[
            "the error's message and stack trace, scrubbed of email and IP addresses, credentials, tokens and query strings",
            "the request's id, method and route; never its body, cookies or headers",
        ],
        region: "Where the DSN's Sentry project is hosted (sentry.io: United States unless an EU organization)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_what_must_not_leave() {
        let cases = [
            ("duplicate key: Key (email)=(ann.lee@example.com) already exists", "ann.lee@example.com"),
            ("from 203.0.113.7 and 2001:db8::1", "203.0.113.7"),
            ("from 2001:db8:0:0:0:0:0:1 too", "2001:db8"),
            ("GET /files/x/download?expires=1&signature=abcdef", "abcdef"),
            ("Authorization: Bearer cf_live_0123456789abcdef", "cf_live_0123456789abcdef"),
            ("password=hunter2 and more", "hunter2"),
            ("\"api_key\": \"s3cr3t\"", "s3cr3t"),
            ("session token AbCdEfGhIjKlMnOpQrStUvWxYz0123", "AbCdEfGhIjKlMnOpQrStUvWxYz0123"),
        ];
        for (text, secret) in cases {
            let out = scrub_text(text);
            assert!(!out.contains(secret), "{text:?} -> {out:?}");
        }
        // What identifies the problem stays.
        let id = "0195f3c2-7a1b-7c3d-9e8f-0123456789ab";
        assert!(scrub_text(&format!("request {id} failed")).contains(id));
        assert_eq!(scrub_text("connection refused"), "connection refused");
    }
}
