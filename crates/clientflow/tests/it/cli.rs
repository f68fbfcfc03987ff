//! The binary itself: help, configuration errors, zero-configuration start with the private
//! cluster, refusal of a privileged runtime role.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::process::{bin, free_port, nix_kill_term};
use clientflow_test_support::TestDb;
use sqlx::Connection;

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

/// `serve` and `migrate` with nothing to run on (no DATABASE_URL, no PostgreSQL server binaries
/// where the configuration points) say what to install or set, and create nothing.
#[test]
fn without_a_database_or_postgresql_binaries_the_message_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let empty_bin = dir.path().join("no-postgres-here");
    std::fs::create_dir(&empty_bin).unwrap();
    for command in ["serve", "migrate"] {
        let out = bin()
            .arg(command)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .env("CLIENTFLOW_SERVER__LISTEN", "127.0.0.1:0")
            .env("CLIENTFLOW_DATABASE__POSTGRES_BIN_DIR", &empty_bin)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        for needle in [
            "no PostgreSQL server binaries found",
            empty_bin.to_str().unwrap(),
            "apt install postgresql",
            "CLIENTFLOW_DATABASE__POSTGRES_BIN_DIR",
            "DATABASE_URL",
        ] {
            assert!(err.contains(needle), "{command}: {needle:?} missing from:\n{err}");
        }
        assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{command}:\n{err}");
        assert!(!dir.path().join("data/postgres").exists(), "{command} started a cluster anyway");
    }
}

/// A database that can't be reached (refused, unknown host, malformed URL) gets a clear hint
/// naming the setting, a non-zero exit and no panic or backtrace; the URL's password is never
/// echoed.
#[test]
fn an_unreachable_database_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-not-for-logs";
    let cases = [
        (
            format!("postgres://nobody:{secret}@127.0.0.1:1/nothing"),
            "cannot connect to PostgreSQL",
            "Check that PostgreSQL is running",
        ),
        (
            format!("postgres://nobody:{secret}@no-such-host.invalid/nothing"),
            "cannot connect to PostgreSQL",
            "Check that PostgreSQL is running",
        ),
        (
            format!("postgres://nobody:{secret}@127.0.0.1:notaport/x"),
            "not a valid PostgreSQL URL",
            "Expected postgres://user:password@host:5432/database",
        ),
    ];
    for command in ["serve", "migrate"] {
        for (url, what, hint) in &cases {
            let out = bin()
                .arg(command)
                .env("RUST_BACKTRACE", "1")
                .env("CLIENTFLOW_DATA_DIR", dir.path())
                .env("CLIENTFLOW_SERVER__LISTEN", "127.0.0.1:0")
                .env("DATABASE_URL", url)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
            assert_eq!(out.status.code(), Some(1), "{command} {url}: {all}");
            assert!(err.starts_with("error: ") && err.contains(what) && err.contains(hint), "{command} {url}:\n{err}");
            assert!(err.contains("DATABASE_URL"), "the message names the setting:\n{err}");
            assert!(!all.contains("panicked") && !all.contains("stack backtrace"), "{command} {url}:\n{all}");
            assert!(!all.contains(secret), "{command} echoed the password:\n{all}");
        }
    }
}

/// `clientflow migrate` on a fresh, empty database (prepared as docs/operations.md says) applies
/// every migration as the owner role, and a second run has nothing left to do.
#[tokio::test]
async fn migrate_applies_every_migration_to_a_fresh_database() {
    let db = TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let fresh = format!("{}_fresh", db.name);
    let mut admin = db.admin_conn().await;
    sqlx::query(&format!("CREATE DATABASE {fresh} OWNER {}", clientflow::platform::db::OWNER_ROLE))
        .execute(&mut admin)
        .await
        .unwrap();
    clientflow::platform::db::provision::prepare_database(&db.admin, &fresh).await.unwrap();
    let owner = db.owner.clone().database(&fresh);
    let app_url = crate::support::url_of(&db.app.clone().database(&fresh), Some(&passwords.app));
    let owner_url = crate::support::url_of(&owner, Some(&passwords.owner));
    let mut conn = sqlx::PgConnection::connect_with(&owner).await.unwrap();
    let before: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(&mut conn).await.unwrap();
    assert_eq!(before, None, "the database is not fresh");

    let dir = tempfile::tempdir().unwrap();
    let run = {
        let dir = dir.path().to_path_buf();
        move |admin_url: Option<String>| {
            let mut c = bin();
            c.arg("migrate").env("CLIENTFLOW_DATA_DIR", &dir).env("DATABASE_URL", &app_url);
            if let Some(u) = admin_url {
                c.env("CLIENTFLOW_DATABASE__ADMIN_URL", u);
            }
            c.output().unwrap()
        }
    };
    let run = std::sync::Arc::new(run);

    // Without the owner role's URL there is no one to run them as: it says which setting.
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(None)).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLIENTFLOW_DATABASE__ADMIN_URL"));
    let still: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(&mut conn).await.unwrap();
    assert_eq!(still, None, "migrations ran without the owner role");

    let known: Vec<i64> = clientflow::platform::db::MIGRATOR.iter().map(|m| m.version).collect();
    for attempt in ["first", "second"] {
        let r = run.clone();
        let url = owner_url.clone();
        let out = tokio::task::spawn_blocking(move || r(Some(url))).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{attempt} run: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("migrations: current ({} known)", known.len())), "{stdout}");
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(applied.iter().map(|a| a.0).collect::<Vec<_>>(), known, "{attempt} run");
        assert!(applied.iter().all(|a| a.1), "{attempt} run: a migration failed: {applied:?}");
    }
    // The schema is there, owned by the owner role, with its row-level security.
    let (owner_name, forced): (String, bool) = sqlx::query_as(
        "SELECT pg_get_userbyid(relowner)::text, relforcerowsecurity FROM pg_class WHERE oid = 'public.clients'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owner_name, clientflow::platform::db::OWNER_ROLE);
    assert!(forced);
    conn.close().await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {fresh} WITH (FORCE)")).execute(&mut admin).await;
}

/// `clientflow serve` with nothing configured, started in `dir` (so its data is `dir/data`).
fn spawn_serve(dir: &std::path::Path, port: u16) -> std::process::Child {
    bin()
        .arg("serve")
        .current_dir(dir)
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the server started by [`spawn_serve`] answers `/readyz` (panicking with its
/// output if it exits first), and returns a client that trusts its certificate.
async fn wait_until_ready(child: &mut std::process::Child, data: &std::path::Path, port: u16) -> reqwest::Client {
    let cert = data.join("tls/localhost.crt");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            use std::io::Read;
            let (mut out, mut err) = (String::new(), String::new());
            let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut out));
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("serve exited early with {status}:\n{out}\n{err}");
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
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `serve` with nothing configured: private cluster, migrations, self-signed TLS, graceful
/// stop on SIGTERM (which also stops the cluster it started).
#[tokio::test]
async fn serve_runs_with_no_configuration_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_serve(dir.path(), port);
    let data = dir.path().join("data");
    let client = wait_until_ready(&mut child, &data, port).await;
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
    let mut b = crate::support::accounts::sign_up(&app, "op@example.com").await;
    assert_eq!(b.get("/app").await.status(), 200);
    // A key acting for them, used (and kept by the server) before they are disabled.
    let slug = crate::support::orgs::create_org(&mut b, "Disabled Later").await;
    let key = crate::support::api_key(&app, crate::support::org_id(&app, &slug).await, "theirs").await;
    let key_status = || {
        let req = app.client.get(app.url("/api/v1/clients")).bearer_auth(&key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(key_status().await, 200);
    }
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
    assert_eq!(key_status().await, 401, "a key acting for a disabled account still works");
    let res =
        crate::support::accounts::sign_in(&app, &mut b, "op@example.com", crate::support::accounts::PASSWORD).await;
    assert_eq!(res.status(), 403);
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(vec!["user", "enable", "op@example.com"])).await.unwrap();
    assert!(out.status.success());
    assert_eq!(key_status().await, 200, "enabled again, the key works again");
    let res =
        crate::support::accounts::sign_in(&app, &mut b, "op@example.com", crate::support::accounts::PASSWORD).await;
    assert_eq!(res.status(), 303);
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(vec!["user", "disable", "nobody@example.com"])).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
}

/// The postmasters running on `pgdata` (the process given `-D pgdata`), from /proc.
fn postmasters_of(pgdata: &std::path::Path) -> Vec<String> {
    let wanted = pgdata.to_string_lossy().to_string();
    // (pid, parent pid, command line) of every process running postgres on `pgdata`. A backend
    // the postmaster has just forked shows the postmaster's command line until it renames
    // itself, so only those whose parent is not one of them are postmasters.
    let mut matched = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        let is_postgres = args.first().is_some_and(|a| a.ends_with("/postgres") || a == "postgres");
        if is_postgres && args.windows(2).any(|w| w[0] == "-D" && w[1] == wanted) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).unwrap_or("");
            matched.push((entry.file_name().to_string_lossy().to_string(), parent.to_string(), args.join(" ")));
        }
    }
    let pids: Vec<String> = matched.iter().map(|(pid, _, _)| pid.clone()).collect();
    matched
        .into_iter()
        .filter(|(_, parent, _)| !pids.contains(parent))
        .map(|(pid, _, command)| format!("{pid}: {command}"))
        .collect()
}

/// Stops a private cluster a test left running (when it failed half-way) and removes the
/// cluster's directory outside the data directory, if the test made one.
struct ClusterCleanup {
    data: std::path::PathBuf,
    outside: Option<std::path::PathBuf>,
}

impl Drop for ClusterCleanup {
    fn drop(&mut self) {
        if let Ok(cluster) = clientflow::platform::db::cluster::PrivateCluster::new(&self.data, None, true)
            && cluster.is_running()
        {
            let _ = cluster.stop();
        }
        if let Some(dir) = &self.outside {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let (dir, args): (std::path::PathBuf, Vec<String>) =
        (dir.to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || bin().args(&args).current_dir(&dir).output().unwrap()).await.unwrap()
}

/// `serve` that can't bind its port (taken) exits with the reason, and stops the private
/// cluster it had started: no PostgreSQL of that data directory is left running.
#[tokio::test]
async fn a_start_that_fails_stops_the_private_cluster_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _cleanup = ClusterCleanup { data: data.clone(), outside: None };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            bin()
                .arg("serve")
                .current_dir(&dir)
                .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    // The cluster was made and started (the migrations ran in it)…
    let pgdata = std::fs::canonicalize(data.join("postgres/data")).unwrap();
    assert!(pgdata.join("PG_VERSION").exists());
    // …and is not running any more.
    assert_eq!(postmasters_of(&pgdata), Vec::<String>::new(), "the cluster was left running");
    assert!(!pgdata.join("postmaster.pid").exists(), "the cluster was left running");
    assert!(stdout.contains("stopped the private PostgreSQL cluster"), "{stdout}");
    drop(taken);
}

/// After a `kill -9`, the next `serve` takes over the private cluster that was left running,
/// and stops it on SIGTERM. Commands run beside the server leave its cluster alone; a command
/// run with no server starts the cluster and stops it again.
#[tokio::test]
async fn a_cluster_left_running_by_a_crash_is_stopped_by_the_next_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _cleanup = ClusterCleanup { data: data.clone(), outside: None };
    let port = free_port();
    let mut crashed = spawn_serve(dir.path(), port);
    wait_until_ready(&mut crashed, &data, port).await;
    let pgdata = std::fs::canonicalize(data.join("postgres/data")).unwrap();
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    let left = postmasters_of(&pgdata);
    assert_eq!(left.len(), 1, "kill -9 of serve does not stop PostgreSQL: {left:?}");

    let port = free_port();
    let mut server = spawn_serve(dir.path(), port);
    let client = wait_until_ready(&mut server, &data, port).await;
    let running = postmasters_of(&pgdata);
    assert_eq!(running.len(), 1, "{running:?}");
    // Commands beside the running server: they work, and the server's cluster keeps running.
    for args in [&["migrate"][..], &["user", "create", "--email", "beside@example.com"][..]] {
        let out = run_in(dir.path(), args).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(postmasters_of(&pgdata), running, "{args:?} stopped the server's cluster");
    }
    let res = client.get(format!("https://localhost:{port}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    nix_kill_term(server.id());
    let out = tokio::task::spawn_blocking(move || server.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(postmasters_of(&pgdata), Vec::<String>::new(), "the adopted cluster was left running");
    assert!(!pgdata.join("postmaster.pid").exists());

    // A command with no server: it starts the cluster for itself and stops it when done.
    let out = run_in(dir.path(), &["user", "list"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("beside@example.com"));
    assert_eq!(postmasters_of(&pgdata), Vec::<String>::new(), "a command left the cluster running");
}

/// As root, from a directory the `postgres` user can't enter (a clone under /root, mode
/// 0700), `serve` keeps the cluster's files where `postgres` can reach them, links them from
/// the data directory, says where, and starts — without loosening any directory's mode.
#[tokio::test]
async fn serve_starts_as_root_from_a_directory_postgres_cannot_enter() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not running as root");
        return;
    }
    let Some(postgres) = nix::unistd::User::from_name("postgres").unwrap() else {
        eprintln!("skipped: no postgres user");
        return;
    };
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let clone = private.path().join("clone");
    std::fs::create_dir(&clone).unwrap();
    let data = clone.join("data");
    let digest = clientflow::platform::crypto::sha256_hex(
        std::fs::canonicalize(&clone).unwrap().join("data").as_os_str().as_encoded_bytes(),
    );
    let outside = std::path::Path::new(clientflow::platform::db::cluster::RELOCATED_BASE).join(&digest[..16]);
    let _cleanup = ClusterCleanup { data: data.clone(), outside: Some(outside.clone()) };
    // What a start that failed here with "Permission denied" left behind.
    std::fs::create_dir_all(data.join("postgres/data")).unwrap();
    std::fs::write(data.join("postgres/.lock"), b"").unwrap();

    let port = free_port();
    let mut server = spawn_serve(&clone, port);
    wait_until_ready(&mut server, &data, port).await;
    let link = data.join("postgres");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{} is not a link", link.display());
    assert_eq!(std::fs::read_link(&link).unwrap(), outside);
    let meta = std::fs::metadata(&outside).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (postgres.uid.as_raw(), 0o700));
    assert!(std::fs::read_to_string(outside.join("CLIENTFLOW_DATA_DIR")).unwrap().contains("clone/data"));
    // The socket directory is still the postgres user's alone.
    let cluster = clientflow::platform::db::cluster::PrivateCluster::new(&data, None, true).unwrap();
    let socket = std::fs::metadata(cluster.socket_dir()).unwrap();
    assert_eq!((socket.uid(), socket.mode() & 0o7777), (postgres.uid.as_raw(), 0o700));
    let mut pg = sqlx::PgConnection::connect_with(&cluster.admin_options()).await.unwrap();
    let socket_mode: String = sqlx::query_scalar("SHOW unix_socket_permissions").fetch_one(&mut pg).await.unwrap();
    assert_eq!(socket_mode, "0700");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut pg).await.unwrap();
    assert_eq!(listen, "");
    pg.close().await.unwrap();
    // Nothing on the way was opened up for it.
    assert_eq!(std::fs::metadata(private.path()).unwrap().mode() & 0o777, 0o700);

    nix_kill_term(server.id());
    let out = tokio::task::spawn_blocking(move || server.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("the private PostgreSQL cluster is kept in {}", outside.display())),
        "the log does not say where the cluster is:\n{stdout}"
    );
    assert_eq!(postmasters_of(&outside.join("data")), Vec::<String>::new());

    // The next start follows the link to the same cluster.
    let port = free_port();
    let mut server = spawn_serve(&clone, port);
    wait_until_ready(&mut server, &data, port).await;
    assert_eq!(postmasters_of(&outside.join("data")).len(), 1);
    nix_kill_term(server.id());
    let out = tokio::task::spawn_blocking(move || server.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(postmasters_of(&outside.join("data")), Vec::<String>::new());

    // Without the link (the data directory was removed and made again), the old cluster —
    // whose keys went with the data directory — is not silently taken over: the message says
    // how to keep it or start afresh.
    std::fs::remove_file(&link).unwrap();
    let out = run_in(&clone, &["serve"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no longer links to it") && err.contains(&format!("ln -s {}", outside.display())), "{err}");
    assert!(!link.exists());
}
