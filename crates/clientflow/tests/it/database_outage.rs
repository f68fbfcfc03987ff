//! The database goes away under a running server: requests that need it get 503 with
//! `Retry-After` (problem+json on the API, a page on the web), connections stay usable, the log
//! says so once instead of once per request, and all is well again when it comes back.

use std::process::Stdio;
use std::time::{Duration, Instant};

use clientflow_test_support::TestDb;
use clientflow_test_support::proxy::{TcpProxy, Upstream};

use crate::support::net::{answer, connect_to, get_healthz, post_late_body};
use crate::support::process::{bin, free_port, nix_kill_term};

/// A well-formed API key that no organization has: checking it needs the database.
const KEY: &str = "cf_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

struct Server {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    port: u16,
    client: reqwest::Client,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    async fn stop(mut self) -> String {
        nix_kill_term(self.child.id());
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
        self.stdout.join().unwrap()
    }
}

/// `clientflow serve` with its app role reaching the database through `proxy`.
async fn serve_through(db: &TestDb, proxy: &TcpProxy, data: &std::path::Path) -> Server {
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        clientflow::platform::db::APP_ROLE,
        passwords.app,
        proxy.addr().port(),
        db.name
    );
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let port = free_port();
    let mut child: std::process::Child = bin()
        .arg("serve")
        .env("CLIENTFLOW_DATA_DIR", data)
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CLIENTFLOW_DATABASE__ACQUIRE_TIMEOUT_SECS", "3")
        .env("CLIENTFLOW_DATABASE__MAX_CONNECTIONS", "4")
        .env("DATABASE_URL", &app_url)
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", &owner_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
        String::from_utf8_lossy(&buf).to_string()
    });
    let cert = data.join("tls/localhost.crt");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        assert!(Instant::now() < deadline, "serve did not become ready");
        if cert.exists() {
            let client = clientflow_test_support::client_for(&cert, addr).build().unwrap();
            let ready = client.get(format!("https://localhost:{port}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return Server { child, stdout, port, client };
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "ERROR")
        .collect()
}

/// An API request and a page request that both need the database, with their answers checked
/// for the outage: 503, `Retry-After`, the surface's format, no cause.
async fn assert_unavailable(server: &Server) {
    let res = server.client.get(server.url("/api/v1/clients")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert!(body["detail"].as_str().unwrap().contains("database"), "{body}");
    assert!(!body.to_string().contains("refused") && !body.to_string().contains("127.0.0.1"), "{body}");

    let res = server
        .client
        .get(server.url("/app"))
        .header("cookie", format!("__Host-cf_session={}", "s".repeat(43)))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("database"));
}

#[tokio::test]
async fn a_database_outage_is_a_503_with_retry_after_logged_once() {
    let db = TestDb::new().await;
    let mut proxy = TcpProxy::start(Upstream::of(&db.admin)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = serve_through(&db, &proxy, dir.path()).await;
    // Up: an unknown API key is refused as such.
    let res = server.client.get(server.url("/api/v1/clients")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 401);

    // The database server shuts the app's sessions down (as on a restart): FATAL 57P01.
    let mut admin = db.admin_conn().await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = $2")
        .bind(&db.name)
        .bind(clientflow::platform::db::APP_ROLE)
        .execute(&mut admin)
        .await
        .unwrap();
    let res = server.client.get(server.url("/api/v1/clients")).bearer_auth(KEY).send().await.unwrap();
    assert!(matches!(res.status().as_u16(), 401 | 503), "{}", res.status());

    // Gone: open connections cut, new ones refused.
    proxy.cut();
    for _ in 0..10 {
        assert_unavailable(&server).await;
    }
    // The first request waited out the acquire timeout (3 s here); once the outage is known, a
    // request learns it again within half a second.
    let started = Instant::now();
    let res = server.client.get(server.url("/api/v1/clients")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The readiness probe says so too.
    assert_eq!(server.client.get(server.url("/readyz")).send().await.unwrap().status(), 503);
    // A POST whose body arrives after its head gets its 503, and the connection carries on.
    let mut stream = connect_to(server.addr(), &dir.path().join("tls/localhost.crt"), &[b"http/1.1"]).await.unwrap();
    for _ in 0..3 {
        post_late_body(&mut stream, "/api/v1/clients", &format!("Authorization: Bearer {KEY}\r\n"), 5000).await;
        let res = answer(&mut stream).await;
        assert_eq!(res.status, 503);
        assert_eq!(res.header("retry-after"), Some("5"));
        assert_ne!(res.header("connection"), Some("close"));
        assert_eq!(get_healthz(&mut stream).await.status, 200, "liveness and the connection survive");
    }

    // Back: the pool reconnects by itself.
    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.client.get(server.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "not ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let res = server.client.get(server.url("/api/v1/clients")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 401);

    let log = server.stop().await;
    // Some thirty failed requests and probes, and the outage is an ERROR line once (the first
    // shutdown of sessions may count as an outage of its own): never one per request.
    let errors = error_lines(&log);
    assert!(!errors.is_empty() && errors.len() <= 2, "{} ERROR lines:\n{errors:#?}", errors.len());
    assert!(errors.iter().all(|e| e["message"].as_str().unwrap().starts_with("database unavailable")), "{errors:#?}");
    assert!(log.contains("database reachable again"), "{log}");
    assert!(!log.contains(&db_password_hint().await), "a password reached the log");
}

async fn db_password_hint() -> String {
    clientflow_test_support::role_passwords().await.app.to_string()
}
