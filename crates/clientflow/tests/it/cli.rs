//! The binary itself: help, configuration errors, zero-configuration start with the private
//! cluster, refusal of a privileged runtime role.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clientflow_test_support::TestDb;
use sqlx::Connection;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clientflow"));
    // A clean environment: nothing from the developer's shell leaks into these runs.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn help_lists_every_command() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "doctor", "user", "org", "member", "api-key", "seed"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn bad_configuration_names_the_setting() {
    let out = bin().arg("doctor").env("CLIENTFLOW_SERVER__TLS", "proxy").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.trusted_proxies"), "{err}");

    let out = bin().arg("serve").env("CLIENTFLOW_SERVER__LISTEN", "not-an-address").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn an_unreachable_database_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("serve")
        .env("CLIENTFLOW_DATA_DIR", dir.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `serve` with nothing configured: private cluster, migrations, self-signed TLS, graceful
/// stop on SIGTERM (which also stops the cluster it started).
#[tokio::test]
async fn serve_runs_with_no_configuration_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bin()
        .arg("serve")
        .current_dir(dir.path())
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = dir.path().join("data");
    let cert = data.join("tls/localhost.crt");
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve exited early with {status}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "serve did not become ready");
        if cert.exists() {
            let client = clientflow_test_support::client_for(&cert, format!("127.0.0.1:{port}").parse().unwrap())
                .build()
                .unwrap();
            let ready = client
                .get(format!("https://localhost:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|res| res.status() == 200);
            if ready {
                break client;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The private cluster is there, and listens on its Unix socket only: asked over that socket,
    // the running server's listen_addresses is exactly empty, and its postmaster holds no
    // listening TCP socket.
    assert!(data.join("postgres/data/PG_VERSION").exists());
    let cluster = clientflow::platform::db::cluster::PrivateCluster::new(&data, None, true).unwrap();
    let mut pg = sqlx::PgConnection::connect_with(&cluster.admin_options()).await.unwrap();
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut pg).await.unwrap();
    assert_eq!(listen, "", "listen_addresses must be empty (no TCP)");
    let server_addr: Option<String> =
        sqlx::query_scalar("SELECT inet_server_addr()::text").fetch_one(&mut pg).await.unwrap();
    assert_eq!(server_addr, None, "connected over TCP, not the Unix socket");
    let socket_mode: String = sqlx::query_scalar("SHOW unix_socket_permissions").fetch_one(&mut pg).await.unwrap();
    assert_eq!(socket_mode, "0700");
    pg.close().await.unwrap();
    let pid = std::fs::read_to_string(data.join("postgres/data/postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let listening = tcp_listening_sockets_of(&pid);
    assert!(listening.is_empty(), "the postmaster ({pid}) listens on TCP: {listening:?}");
    let res = client.get(format!("https://localhost:{port}/")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    nix_kill_term(child.id());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("https://localhost:"), "start-up log prints the URL:\n{stdout}");
    assert!(stdout.contains("self-signed"), "start-up log mentions the certificate:\n{stdout}");
    // Logs are JSON lines when standard output isn't a terminal: one access line per request,
    // with the route template, status, latency and request id — and never a raw path.
    let access: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "clientflow::access")
        .collect();
    let home = access.iter().find(|v| v["route"] == "/").expect("an access line for /");
    assert_eq!(home["status"], 200);
    assert!(home["latency_ms"].is_number());
    assert!(home["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(access.iter().any(|v| v["route"] == "/readyz"));
    assert!(
        stdout.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "non-JSON log line:\n{stdout}"
    );
    assert!(!data.join("postgres/data/postmaster.pid").exists(), "the cluster was not stopped");
}

/// The listening TCP sockets (IPv4 and IPv6) held open by process `pid`, as lines of
/// /proc/net/tcp{,6}: its socket inodes matched against the kernel's table of listeners.
fn tcp_listening_sockets_of(pid: &str) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read the file descriptors of {pid}: {e}"))
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().to_string();
            t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).map(str::to_string)
        })
        .collect();
    assert!(!inodes.is_empty(), "the postmaster holds no socket at all (its Unix socket should be there)");
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; column 9 is the inode.
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                found.push(format!("{table}: {line}"));
            }
        }
    }
    found
}

fn nix_kill_term(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// A runtime role that owns the tables (or is a superuser) would not be subject to row-level
/// security: the server refuses to start with it.
#[tokio::test]
async fn serve_refuses_a_role_that_owns_the_tables() {
    let db = TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .arg("serve")
            .env("CLIENTFLOW_DATA_DIR", dir.path())
            .env("CLIENTFLOW_SERVER__LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve") && err.contains("owns"), "{err}");
}

#[tokio::test]
async fn doctor_reports_a_healthy_app_role_setup() {
    let db = TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .arg("doctor")
            .env("CLIENTFLOW_DATA_DIR", dir.path())
            .env("DATABASE_URL", app_url)
            .env("CLIENTFLOW_DATABASE__ADMIN_URL", owner_url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["app role", "migrations", "row-level security", "redis", "tls"] {
        assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line} not ok in:\n{text}");
    }
    // Break an invariant the way a careless migration would: doctor must say so.
    let mut owner = db.owner_conn().await;
    for stmt in [
        "ALTER TABLE clients NO FORCE ROW LEVEL SECURITY",
        // The tenant policy of projects, recreated without WITH CHECK.
        "DROP POLICY tenant_isolation ON projects",
        "CREATE POLICY tenant_isolation ON projects \
         USING (organization_id = (NULLIF(current_setting('app.org_id', true), ''))::uuid)",
        // An extra policy on tasks that admits rows of any tenant.
        "CREATE POLICY open_insert ON tasks FOR INSERT WITH CHECK (true)",
    ] {
        sqlx::query(stmt).execute(&mut owner).await.unwrap();
    }
    let app_url = crate::support::url_of(&db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .arg("doctor")
            .env("CLIENTFLOW_DATA_DIR", dir.path())
            .env("DATABASE_URL", app_url)
            .env("CLIENTFLOW_DATABASE__ADMIN_URL", owner_url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for problem in [
        "table clients: row-level security is not forced",
        "table projects: no tenant policy on app.org_id with WITH CHECK",
        "table projects: policy tenant_isolation allows INSERT/UPDATE without WITH CHECK",
        "table tasks: policy open_insert has a WITH CHECK that ignores app.org_id",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with("FAIL") && l.contains("row-level security") && l.contains(problem)),
            "{problem} not reported in:\n{text}"
        );
    }
    // The tables that are still right are not reported.
    assert!(!text.contains("table tasks: policy tenant_isolation"), "{text}");
    assert!(!text.contains("table memberships"), "{text}");
}

/// The operator disables an account from the command line: its sessions end at once.
#[tokio::test]
async fn the_operator_can_disable_and_enable_a_user() {
    let app = clientflow_test_support::TestApp::spawn().await;
    let mut b = crate::identity::sign_up(&app, "op@example.com").await;
    assert_eq!(b.get("/app").await.status(), 200);
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&app.db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&app.db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let run = move |args: Vec<&'static str>| {
        let mut c = bin();
        c.args(args)
            .env("CLIENTFLOW_DATA_DIR", dir.path())
            .env("DATABASE_URL", &app_url)
            .env("CLIENTFLOW_DATABASE__ADMIN_URL", &owner_url);
        c.output().unwrap()
    };
    let run = std::sync::Arc::new(run);
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(vec!["user", "disable", "OP@example.com"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.get("/app").await.status(), 303, "session survived disabling");
    let res = crate::identity::sign_in(&app, &mut b, "op@example.com", crate::identity::PASSWORD).await;
    assert_eq!(res.status(), 403);
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(vec!["user", "enable", "op@example.com"])).await.unwrap();
    assert!(out.status.success());
    let res = crate::identity::sign_in(&app, &mut b, "op@example.com", crate::identity::PASSWORD).await;
    assert_eq!(res.status(), 303);
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(vec!["user", "disable", "nobody@example.com"])).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
}
