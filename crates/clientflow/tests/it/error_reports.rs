//! Error reports to Sentry, received by a local ingest endpoint (axum on port 0) that takes
//! envelopes in Sentry's wire format at `/api/{project}/envelope/` with the `X-Sentry-Auth`
//! header: a forced 500 and a panic arrive tagged with their request id, and no cookie, token,
//! password, e-mail address, IP address, query string or request body is anywhere in the raw
//! bytes that left the process. With no DSN nothing is sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use clientflow::access::route::{Access, Surface};
use clientflow::platform::http::error::AppError;
use clientflow_test_support::TestApp;
use serde_json::Value;

const PUBLIC_KEY: &str = "0123abcd0123abcd";
const EMAIL: &str = "ann.lee@example.com";
const PASSWORD: &str = "hunter2-correct-horse";
const API_KEY: &str = "cf_live_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5";
const SESSION: &str = "sess-7f3a9c1e55d04b2f8e6a1b2c3d4e5f60";
const LINK_SIGNATURE: &str = "9d1f00aa77bb";
const CLIENT_IP: &str = "198.51.100.23";

/// One envelope as it arrived: the project in its path, its `X-Sentry-Auth`, its raw bytes.
type Received = (String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Ingest {
    received: Arc<Mutex<Vec<Received>>>,
}

async fn envelope(
    State(ingest): State<Ingest>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) {
    let auth = headers.get("x-sentry-auth").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    ingest.received.lock().unwrap().push((project, auth, body.to_vec()));
}

async fn start_ingest() -> (Ingest, String) {
    let ingest = Ingest::default();
    let app =
        axum::Router::new().route("/api/{project}/envelope/", axum::routing::post(envelope)).with_state(ingest.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (ingest, format!("http://{PUBLIC_KEY}@127.0.0.1:{port}/42"))
}

/// The events of the received envelopes (a header line, then item header and payload lines).
fn events(raw: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(1) {
        let Ok(header) = serde_json::from_str::<Value>(line) else { continue };
        if header["type"] == "event"
            && let Some(payload) = lines.get(i + 1)
        {
            out.push(serde_json::from_str(payload).expect("an event payload"));
        }
    }
    out
}

async fn event_for(ingest: &Ingest, request_id: &str) -> (Value, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = ingest.received.lock().unwrap().iter().find_map(|(_, _, raw)| {
            events(raw).into_iter().find(|e| e["tags"]["request_id"] == request_id).map(|e| (e, raw.clone()))
        });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no report for request {request_id} arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn routes() -> Vec<clientflow::access::route::RouteDef> {
    let mut routes = clientflow::routes::all();
    routes.push(clientflow::route!(
        POST "/test/fails",
        Surface::Api,
        Access::Public,
        |body: String| async move {
            // A cause that quotes its input, as database and provider errors do.
            let _ = body;
            Err::<(), _>(AppError::internal(format!(
                "insert failed: Key (email)=({EMAIL}) already exists; password={PASSWORD}; \
                 Authorization: Bearer {API_KEY}; from {CLIENT_IP}; GET /files/x?signature={LINK_SIGNATURE}"
            )))
        }
    ));
    routes.push(clientflow::route!(GET "/test/panics", Surface::Api, Access::Public, || async move {
        if std::hint::black_box(true) {
            panic!("could not finish for {EMAIL} at {CLIENT_IP}");
        }
    }));
    routes
}

fn assert_clean(raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    for secret in [EMAIL, PASSWORD, API_KEY, SESSION, LINK_SIGNATURE, CLIENT_IP, "cf_session=", "hunter2"] {
        assert!(!text.contains(secret), "{secret:?} left the process in an error report:\n{text}");
    }
}

#[tokio::test]
async fn a_500_and_a_panic_are_reported_with_their_request_id_and_nothing_private() {
    let (ingest, dsn) = start_ingest().await;
    let app = TestApp::builder()
        .config(move |c| c.sentry.dsn = Some(clientflow::platform::secret::Secret::new(dsn)))
        .routes(routes)
        .spawn()
        .await;
    assert!(app.config.sentry_enabled() && app.state.error_reporter.enabled());

    let res = app
        .client
        .post(app.url(&format!("/test/fails?token={API_KEY}&email={EMAIL}")))
        .header("cookie", format!("cf_session={SESSION}"))
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("x-forwarded-for", CLIENT_IP)
        .header("content-type", "application/json")
        .body(format!(r#"{{"email": "{EMAIL}", "password": "{PASSWORD}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    assert!(body.contains(&request_id) && !body.contains(EMAIL), "the client sees the request id, not the cause");

    let (event, raw) = event_for(&ingest, &request_id).await;
    assert_eq!(event["tags"]["http.route"], "/test/fails");
    assert_eq!(event["tags"]["http.status_code"], "500");
    assert!(event["level"].is_null() || event["level"] == "error", "{event}");
    let cause = event["exception"]["values"][0]["value"].as_str().unwrap();
    assert!(cause.starts_with("insert failed"), "the cause is kept, scrubbed: {cause}");
    assert!(event.get("request").is_none() && event.get("user").is_none(), "{event}");
    assert_clean(&raw);

    let res = app
        .client
        .get(app.url(&format!("/test/panics?email={EMAIL}")))
        .header("cookie", format!("cf_session={SESSION}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500, "a panic is a 500, not a dropped connection");
    let panic_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let (event, raw) = event_for(&ingest, &panic_id).await;
    assert_eq!(event["exception"]["values"][0]["type"], "panic");
    assert_eq!(event["level"], "fatal");
    assert_clean(&raw);

    // Each report once, each in Sentry's envelope protocol, authenticated with the DSN's key.
    let received = ingest.received.lock().unwrap().clone();
    let mine = |id: &str| {
        received.iter().filter(|(_, _, raw)| events(raw).iter().any(|e| e["tags"]["request_id"] == id)).count()
    };
    assert_eq!((mine(&request_id), mine(&panic_id)), (1, 1));
    for (project, auth, raw) in &received {
        assert_eq!(project, "42");
        assert!(auth.starts_with("Sentry ") && auth.contains(&format!("sentry_key={PUBLIC_KEY}")), "{auth}");
        assert_clean(raw);
    }
}

#[tokio::test]
async fn without_a_dsn_nothing_is_reported() {
    let app = TestApp::builder().routes(routes).spawn().await;
    assert!(!app.config.sentry_enabled() && !app.state.error_reporter.enabled());
    let res = app.client.post(app.url("/test/fails")).body("x").send().await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().contains_key("x-request-id"));
}
