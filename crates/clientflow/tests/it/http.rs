//! The HTTP edge: security headers on every kind of response, request ids, error bodies,
//! limits, timeouts, operations endpoints, client IPs behind proxies, graceful shutdown.

use std::time::Duration;

use axum::Extension;
use clientflow::access::route::{Access, RouteDef, Surface};
use clientflow::platform::config::TlsMode;
use clientflow::platform::http::middleware::ClientIp;
use clientflow::route;
use clientflow_test_support::TestApp;
use reqwest::StatusCode;

const SECURITY_HEADERS: &[&str] = &[
    "content-security-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
    "x-request-id",
];

fn assert_security_headers(res: &reqwest::Response, what: &str) {
    let h = res.headers();
    for name in SECURITY_HEADERS {
        assert!(h.contains_key(*name), "{what}: missing {name}");
    }
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["strict-transport-security"].to_str().unwrap().starts_with("max-age=63072000"));
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    // HTML
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_security_headers(&res, "html");
    assert_eq!(res.headers()["cache-control"], "no-store");
    // JSON
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_security_headers(&res, "json");
    // Static
    let res = app.get("/static/app.css").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    assert_security_headers(&res, "static");
    assert!(res.headers()["cache-control"].to_str().unwrap().starts_with("public"));
    // Errors, web and API
    let res = app.get("/no/such/page").await;
    assert_eq!(res.status(), 404);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_security_headers(&res, "html error");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = app.get("/api/v1/no-such-thing").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_security_headers(&res, "api error");
    // Unknown static file
    let res = app.get("/static/../../etc/passwd").await;
    assert_eq!(res.status(), 404);
    assert_security_headers(&res, "static error");
}

#[tokio::test]
async fn errors_are_problem_json_on_the_api_and_a_page_on_the_web_with_the_request_id() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/api/v1/nothing")).header("x-request-id", "trace-123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-123");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");
    assert_eq!(body["request_id"], "trace-123");
    assert!(body["detail"].as_str().unwrap().len() > 5);

    let res = app.client.get(app.url("/nothing")).header("x-request-id", "trace-456").send().await.unwrap();
    let html = res.text().await.unwrap();
    assert!(html.contains("trace-456"), "{html}");
    assert!(html.contains("Not Found"));

    // Wrong method on a known route: 405 with the Allow header, same error format.
    let res = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key("allow"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn request_ids_are_echoed_only_when_sane() {
    let app = TestApp::spawn().await;
    let res =
        app.client.get(app.url("/healthz")).header("x-request-id", "<script>alert(1)</script>").send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "<script>alert(1)</script>");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let long = "a".repeat(200);
    let res = app.client.get(app.url("/healthz")).header("x-request-id", &long).send().await.unwrap();
    assert_ne!(res.headers()["x-request-id"], long.as_str());
    let a = app.get("/healthz").await.headers()["x-request-id"].clone();
    let b = app.get("/healthz").await.headers()["x-request-id"].clone();
    assert_ne!(a, b);
}

fn test_routes() -> Vec<RouteDef> {
    vec![
        route!(POST "/api/v1/echo", Surface::Api, Access::Public, |body: axum::body::Bytes| async move {
            format!("{} bytes", body.len())
        }),
        route!(GET "/api/v1/slow", Surface::Api, Access::Public, || async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "done"
        }),
        route!(GET "/api/v1/whoami", Surface::Api, Access::Public, |Extension(ip): Extension<ClientIp>| async move {
            ip.0.to_string()
        }),
        route!(GET "/api/v1/boom", Surface::Api, Access::Public, || async {
            Err::<String, _>(clientflow::platform::http::error::AppError::Domain(clientflow::platform::error::DomainError::Internal(anyhow::anyhow!(
                "secret connection string postgres://u:hunter2@db"
            ))))
        }),
        route!(GET "/healthz", Surface::Ops, Access::Public, || async { "ok" }),
    ]
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = TestApp::builder().config(|c| c.server.body_limit_bytes = 4096).routes(test_routes).spawn().await;
    let res = app.client.post(app.url("/api/v1/echo")).body(vec![b'x'; 1000]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "1000 bytes");
    // Declared too large.
    let res = app.client.post(app.url("/api/v1/echo")).body(vec![b'x'; 10_000]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // Streamed (no Content-Length) and too large.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b'y'; 1000])).collect();
    let stream = futures::stream::iter(chunks);
    let res = app.client.post(app.url("/api/v1/echo")).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem_body() {
    let app = TestApp::builder().config(|c| c.server.request_timeout_secs = 1).routes(test_routes).spawn().await;
    let res = app.get("/api/v1/slow").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 503);
}

#[tokio::test]
async fn internal_errors_never_reach_the_client() {
    let app = TestApp::builder().routes(test_routes).spawn().await;
    let res = app.get("/api/v1/boom").await;
    assert_eq!(res.status(), 500);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let text = res.text().await.unwrap();
    assert!(!text.contains("hunter2") && !text.contains("postgres://"), "{text}");
    assert!(text.contains(&id));
}

#[tokio::test]
async fn forwarded_headers_are_ignored_from_untrusted_peers() {
    // Direct TLS, no trusted proxies: the socket peer is the client, whatever it claims.
    let app = TestApp::builder().routes(test_routes).spawn().await;
    let res = app
        .client
        .get(app.url("/api/v1/whoami"))
        .header("x-forwarded-for", "203.0.113.66")
        .header("forwarded", "for=198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "127.0.0.1");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_used() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.tls = TlsMode::Proxy;
            c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .routes(test_routes)
        .spawn()
        .await;
    assert!(app.base_url.starts_with("http://"));
    let res = app
        .client
        .get(app.url("/api/v1/whoami"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "203.0.113.7");
    // HSTS is still sent (the browser talks HTTPS to the proxy).
    let res = app.get("/healthz").await;
    assert!(res.headers().contains_key("strict-transport-security"));
    // A request that reached the proxy over plain HTTP is redirected.
    let res = app.client.get(app.url("/api/v1/whoami?x=1")).header("x-forwarded-proto", "http").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert!(res.headers()["location"].to_str().unwrap().ends_with("/api/v1/whoami?x=1"));
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://"));
}

#[tokio::test]
async fn in_proxy_mode_only_the_proxy_may_connect() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.tls = TlsMode::Proxy;
            c.server.trusted_proxies = vec!["10.9.9.9/32".parse().unwrap()];
        })
        .routes(test_routes)
        .spawn()
        .await;
    let res = app.client.get(app.url("/api/v1/whoami")).header("x-forwarded-for", "10.9.9.9").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // Health checks from load balancers still work.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn readiness_reports_database_and_migrations() {
    let app = TestApp::spawn().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["migrations"], "current");

    // Pretend a migration is missing: readiness must drop.
    let mut admin = app.db.admin_conn().await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .execute(&mut admin)
        .await
        .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["checks"]["migrations"].as_str().unwrap().starts_with("pending"), "{body}");

    // And when the database goes away: the app role may no longer connect, and its open
    // connections are cut.
    let name = &app.db.name;
    sqlx::query(&format!("REVOKE CONNECT ON DATABASE {name} FROM PUBLIC, clientflow_app"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND usename = 'clientflow_app'"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_ne!(body["checks"]["database"], "ok");
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness doesn't depend on the database");
    sqlx::query(&format!("GRANT CONNECT ON DATABASE {name} TO clientflow_app")).execute(&mut admin).await.unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503, "migrations are still pending");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok", "the pool reconnects");
}

/// A transaction takes its connection without the pool's check (its `BEGIN` is the check):
/// when the database has cut every pooled connection, the next requests still get fresh ones
/// instead of failing on the dead ones.
#[tokio::test]
async fn requests_after_the_database_cut_every_pooled_connection_get_fresh_ones() {
    let app = TestApp::spawn().await;
    let org = crate::support::seed_org(&app.app_db, "cut").await;
    let key = crate::support::api_key(&app, org.id.as_uuid(), "cut").await;
    let get = || app.client.get(app.url("/api/v1/clients")).bearer_auth(&key).send();
    // Several requests at once, so that the pool holds several idle connections.
    for res in futures::future::join_all((0..4).map(|_| get())).await {
        assert_eq!(res.unwrap().status(), 200);
    }
    let mut admin = app.db.admin_conn().await;
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND usename = 'clientflow_app'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(cut.len() >= 2, "the pool held {} connections", cut.len());
    // Give the server processes time to go, so that every idle connection is dead.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let res = get().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    for res in futures::future::join_all((0..4).map(|_| get())).await {
        assert_eq!(res.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_are_restricted() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    app.get("/healthz").await;
    app.get("/no/such").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains(r#"clientflow_http_requests_total{route="/healthz",method="GET",status="200"} 2"#), "{text}");
    assert!(text.contains(r#"route="unmatched",method="GET",status="404""#), "{text}");
    assert!(text.contains("clientflow_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("clientflow_db_pool_max_connections 5"), "{text}");
    // Raw paths never appear (they could carry tokens).
    assert!(!text.contains("/no/such"));

    let app = TestApp::builder()
        .config(|c| {
            c.metrics.allow = vec![];
            c.metrics.token = Some(clientflow::platform::secret::Secret::new("m3trics-t0ken-long-enough"));
        })
        .spawn()
        .await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::FORBIDDEN);
    let res = app.client.get(app.url("/metrics")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app.client.get(app.url("/metrics")).bearer_auth("m3trics-t0ken-long-enough").send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = TestApp::builder().routes(test_routes).spawn().await;
    let client = app.client.clone();
    let url = app.url("/api/v1/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    app.shutdown().await;
    let res = in_flight.await.unwrap().expect("in-flight request completed");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "done");
    assert!(started.elapsed() >= Duration::from_millis(800), "shutdown did not wait");
    // New connections are refused once shut down.
    let fresh = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().unwrap();
    assert!(fresh.get(app.url("/healthz")).send().await.is_err());
}

/// The organization logo is an authenticated response: never stored, with every security
/// header, like a page; a foreign organization's logo is a 404 and equally uncached.
#[tokio::test]
async fn the_organization_logo_is_never_stored() {
    let app = TestApp::spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@logo.test").await;
    let slug = crate::support::orgs::create_org(&mut owner, "Logo").await;
    let org_id = crate::support::org_id(&app, &slug).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO organization_logos VALUES ($1, 'image/png', '\\x89504e470d0a1a0a', now())")
        .bind(org_id)
        .execute(&mut db)
        .await
        .unwrap();
    let res = owner.get(&format!("/o/{slug}/logo")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_security_headers(&res, "logo");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"\x89PNG\r\n\x1a\n");

    let mut stranger = crate::support::accounts::sign_up(&app, "stranger@logo.test").await;
    let res = stranger.get(&format!("/o/{slug}/logo")).await;
    assert_eq!(res.status(), 404);
    assert_security_headers(&res, "foreign logo");
    assert_eq!(res.headers()["cache-control"], "no-store");
}

/// The rule is general: a handler behind authentication that asks for caching still gets
/// `no-store`; a public one keeps its choice.
#[tokio::test]
async fn authenticated_routes_are_never_stored_whatever_the_handler_says() {
    fn cached() -> axum::response::Response {
        use axum::response::IntoResponse;
        ([(axum::http::header::CACHE_CONTROL, "public, max-age=600")], "cacheable?").into_response()
    }
    let app = TestApp::builder()
        .routes(|| {
            let mut routes = crate::support::routes_with_an_api_route();
            routes.push(route!(
                GET "/api/v1/test/cached",
                Surface::Api,
                Access::Api(clientflow::access::role::Permission::ClientsRead),
                || async { cached() }
            ));
            routes.push(route!(GET "/test/public-cached", Surface::Web, Access::Public, || async { cached() }));
            routes.push(route!(GET "/test/signed-in-cached", Surface::Web, Access::SignedIn, || async { cached() }));
            routes
        })
        .spawn()
        .await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@cache.test").await;
    let slug = crate::support::orgs::create_org(&mut owner, "Cache").await;
    let key = crate::support::api_key(&app, crate::support::org_id(&app, &slug).await, "k").await;

    let res = app.client.get(app.url("/api/v1/test/cached")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = owner.get("/test/signed-in-cached").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Refused requests too.
    let res = app.client.get(app.url("/api/v1/test/cached")).bearer_auth("cf_live_nope").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // A public route keeps the caching it chose.
    let res = app.get("/test/public-cached").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=600");
}

/// `/metrics` reports the backups as `backup_log` records them, and only when they are
/// ClientFlow's to take (the private cluster; a managed database's are its provider's).
#[tokio::test]
async fn metrics_report_the_backups() {
    let app = TestApp::spawn().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("clientflow_backup_enabled{region=\"us\"} 1"), "{text}");
    assert!(text.contains("clientflow_backup_newest_age_seconds{region=\"us\"} NaN"), "no backup yet: {text}");
    assert!(text.contains("clientflow_backup_drill_last_ok{region=\"us\"} NaN"), "{text}");
    let mut admin = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO backup_log (kind, backup_type, started_at, finished_at, ok) \
         VALUES ('backup', 'full', now() - interval '2 hours', now() - interval '1 hour', true)",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO backup_log (kind, started_at, finished_at, ok, detail) \
         VALUES ('drill', now(), now(), false, '{\"rpo_seconds\": 1.5, \"rto_seconds\": 7.25}')",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| backup_gauge(&text, name, "us");
    assert!((3590.0..3700.0).contains(&value("clientflow_backup_newest_age_seconds")), "{text}");
    assert_eq!(value("clientflow_backup_drill_last_ok"), 0.0, "{text}");
    assert_eq!(value("clientflow_backup_drill_rto_seconds"), 7.25, "{text}");
    assert_eq!(value("clientflow_backup_wal_archive_failing"), 0.0, "{text}");

    let app = TestApp::builder()
        .config(|c| {
            c.database.url = Some(clientflow::platform::secret::Secret::new("postgres://managed.example.com/db"))
        })
        .spawn()
        .await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("clientflow_backup_enabled{region=\"us\"} 0"), "{text}");
}

/// The value of a backup gauge of `region` in a `/metrics` text.
fn backup_gauge(text: &str, name: &str, region: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{region=\"{region}\"}} ")))
        .unwrap_or_else(|| panic!("{name} of {region} missing: {text}"))
        .parse()
        .unwrap()
}

/// With two regions, `/metrics` reports each region's backups from that region's own
/// database (its private cluster's `backup_log`), labelled with the region: a backup and a
/// failed drill recorded in the EU database show under `region="eu"` only, and the default
/// region's gauges stay as its own log says. A region whose database is a server of its own
/// (`database_url`) has no backups of ClientFlow's: `enabled` 0 for it.
#[tokio::test]
async fn metrics_report_the_backups_of_every_region() {
    let app = TestApp::builder().region("eu").spawn().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for region in ["us", "eu"] {
        assert_eq!(backup_gauge(&text, "clientflow_backup_enabled", region), 1.0, "{text}");
        assert!(backup_gauge(&text, "clientflow_backup_newest_age_seconds", region).is_nan(), "{text}");
    }
    let mut eu = app.region_db("eu").admin_conn().await;
    sqlx::query(
        "INSERT INTO backup_log (kind, backup_type, started_at, finished_at, ok) \
         VALUES ('backup', 'full', now() - interval '3 hours', now() - interval '2 hours', true)",
    )
    .execute(&mut eu)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO backup_log (kind, started_at, finished_at, ok, detail) \
         VALUES ('drill', now(), now(), false, '{\"rpo_seconds\": 2.5, \"rto_seconds\": 9.5}')",
    )
    .execute(&mut eu)
    .await
    .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    let eu_age = backup_gauge(&text, "clientflow_backup_newest_age_seconds", "eu");
    assert!((7190.0..7300.0).contains(&eu_age), "{text}");
    assert_eq!(backup_gauge(&text, "clientflow_backup_drill_last_ok", "eu"), 0.0, "{text}");
    assert_eq!(backup_gauge(&text, "clientflow_backup_drill_rto_seconds", "eu"), 9.5, "{text}");
    assert!(backup_gauge(&text, "clientflow_backup_newest_age_seconds", "us").is_nan(), "{text}");
    assert!(backup_gauge(&text, "clientflow_backup_drill_last_ok", "us").is_nan(), "{text}");
    // The security page reports the same, region by region.
    let page = app.get("/security").await.text().await.unwrap();
    assert_eq!(page.matches("Newest backup — ").count(), 2, "{page}");
    let fact_of = |label: &str| {
        let at = page.find(label).unwrap_or_else(|| panic!("{label}: {page}"));
        page[at..].split("</dd>").next().unwrap().to_string()
    };
    let label = |r: &str| app.config.residency.label(clientflow::platform::db::RegionId::parse(r).unwrap());
    let (us, eu) = (label("us"), label("eu"));
    assert!(fact_of(&format!("Newest backup — {eu}")).contains("2.0 hours old"), "{page}");
    assert!(fact_of(&format!("Last restore drill — {eu}")).contains("FAILED"), "{page}");
    assert!(fact_of(&format!("Newest backup — {us}")).contains("none yet"), "{page}");

    // A further region on a server of its own: its backups are that server's.
    let app = TestApp::builder()
        .region("eu")
        .config(|c| {
            for r in c.residency.regions.values_mut() {
                r.database_url = Some(clientflow::platform::secret::Secret::new("postgres://eu-db.example.com/db"));
            }
        })
        .spawn()
        .await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(backup_gauge(&text, "clientflow_backup_enabled", "us"), 1.0, "{text}");
    assert_eq!(backup_gauge(&text, "clientflow_backup_enabled", "eu"), 0.0, "{text}");
    let page = app.get("/security").await.text().await.unwrap();
    let eu = app.config.residency.label(clientflow::platform::db::RegionId::parse("eu").unwrap());
    assert!(page.contains(&format!("Backups — {eu}")), "{page}");
    assert!(page.contains("managed by the region&#39;s database provider"), "{page}");
}

/// Every form action of the web app tells the person what happened: its route has a message in
/// `web::FLASH_MESSAGES` (shown on the page its redirect leads to), unless it answers with a page
/// of its own (sign-in steps, a new key or link shown once, a hand-off to Stripe…), listed here.
#[test]
fn every_web_action_has_its_own_message_or_its_own_page() {
    use clientflow::platform::http::route::Surface;
    const OWN_PAGE: &[&str] = &[
        "POST /login",
        "POST /login/two-factor",
        "POST /signup",
        "POST /verify-email",
        "POST /forgot-password",
        "POST /reset-password",
        "POST /account/email",
        "POST /account/email/deliverability",
        "POST /account/email/confirm",
        "POST /account/two-factor/recovery-codes",
        "POST /account/delete",
        "POST /o/{org}/files/{file}/link",
        "POST /o/{org}/settings/api-keys",
        "POST /contact/{slug}",
        "POST /security/report",
        "POST /o/{org}/settings/billing/checkout",
        "POST /o/{org}/settings/billing/portal",
    ];
    let mut missing = vec![];
    for r in clientflow::routes::all() {
        let key = format!("{} {}", r.method, r.path);
        if r.method == axum::http::Method::POST
            && r.surface == Surface::Web
            && !OWN_PAGE.contains(&key.as_str())
            && !clientflow::web::FLASH_MESSAGES.iter().any(|(k, _)| *k == key)
        {
            missing.push(key);
        }
    }
    assert!(missing.is_empty(), "web actions that would only say \"Done.\": {missing:#?}");
    for route in clientflow::web::FLASH_MESSAGES.iter().skip(1).map(|(r, _)| r).chain(OWN_PAGE) {
        assert!(
            clientflow::routes::all().iter().any(|r| format!("{} {}", r.method, r.path) == *route),
            "{route} is listed but is no route"
        );
    }
}
