//! A PostgreSQL failover under load: a primary and a streaming standby (the machine's PostgreSQL
//! binaries, as the `postgres` user when the tests run as root), `clientflow serve` given both in
//! a libpq-style multi-host `DATABASE_URL`, writers sending with `Idempotency-Key` while the
//! primary is stopped hard and the standby promoted (what pg_auto_failover or Patroni would do).
//! Afterwards every acknowledged write exists exactly once on the new primary, the audit chain
//! verifies, requests during the switch failed fast, and the write-unavailability window is
//! printed. Skipped, saying so, where the PostgreSQL server binaries are not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::process::{bin, free_port};

fn postgres_bin() -> Option<PathBuf> {
    let probe = tempfile::tempdir().ok()?;
    clientflow::platform::db::cluster::PrivateCluster::new(probe.path(), None, false)
        .ok()
        .map(|c| c.bin_dir().to_path_buf())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` from the PostgreSQL binaries, as the `postgres` user when we are root.
fn pg(bin_dir: &Path, program: &str) -> Command {
    let exe = bin_dir.join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c.current_dir("/");
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory the `postgres` user owns.
fn owned_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // PostgreSQL refuses a data directory others may read.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        );
    }
    dir
}

struct Pair {
    bin: PathBuf,
    primary: PathBuf,
    standby: PathBuf,
    primary_port: u16,
    standby_port: u16,
}

impl Pair {
    fn start(bin: PathBuf, root: &Path) -> Self {
        let (primary_port, standby_port) = (free_port(), free_port());
        let primary = owned_dir(root, "primary");
        let mut c = pg(&bin, "initdb");
        c.args(["-D"]).arg(&primary).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(c, "initdb");
        let conf = format!(
            "port = {primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nfsync = off\n",
            primary.display()
        );
        append_as_postgres(&primary.join("postgresql.auto.conf"), &conf);
        let mut c = pg(&bin, "pg_ctl");
        c.arg("-D").arg(&primary).arg("-l").arg(primary.join("log")).args(["-w", "start"]);
        run(c, "start the primary");
        let standby = owned_dir(root, "standby");
        let mut c = pg(&bin, "pg_basebackup");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .arg("-D")
        .arg(&standby);
        run(c, "pg_basebackup");
        append_as_postgres(
            &standby.join("postgresql.auto.conf"),
            &format!("port = {standby_port}\nunix_socket_directories = '{}'\n", standby.display()),
        );
        let mut c = pg(&bin, "pg_ctl");
        c.arg("-D").arg(&standby).arg("-l").arg(standby.join("log")).args(["-w", "start"]);
        run(c, "start the standby");
        Pair { bin, primary, standby, primary_port, standby_port }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.primary_port, self.standby_port
        )
    }

    fn stop_primary_hard(&self) {
        let mut c = pg(&self.bin, "pg_ctl");
        c.arg("-D").arg(&self.primary).args(["-m", "immediate", "-w", "stop"]);
        run(c, "stop the primary");
    }

    fn promote_standby(&self) {
        let mut c = pg(&self.bin, "pg_ctl");
        c.arg("-D").arg(&self.standby).args(["-w", "promote"]);
        run(c, "promote the standby");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for dir in [&self.primary, &self.standby] {
            let mut c = pg(&self.bin, "pg_ctl");
            c.arg("-D").arg(dir).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

fn append_as_postgres(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    if is_root() {
        let _ = Command::new("chown").arg("postgres:postgres").arg(path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_no_acknowledged_write() {
    let Some(pg_bin) = postgres_bin() else {
        eprintln!("SKIPPED: the PostgreSQL server binaries are not installed (apt install postgresql)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pair = Pair::start(pg_bin, root.path());
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = pair.url();
    let env = |c: &mut Command| {
        c.env("CLIENTFLOW_DATA_DIR", &data)
            .env("DATABASE_URL", &url)
            .env("CLIENTFLOW_DATABASE__ACQUIRE_TIMEOUT_SECS", "2")
            .env("CLIENTFLOW_RATE_LIMITS__API_KEY__LIMIT", "100000")
            .env("CLIENTFLOW_LOG__FILTER", "warn");
    };
    let cli = |args: &[&str]| {
        let mut c = bin();
        env(&mut c);
        let out = c.args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["migrate"]);
    cli(&["user", "create", "--email", "owner@failover.test"]);
    cli(&["org", "create", "--name", "Failover", "--slug", "failover", "--owner", "owner@failover.test"]);
    let created: serde_json::Value = serde_json::from_str(&cli(&[
        "--json", "api-key", "create", "--org", "failover", "--name", "w", "--role", "admin",
    ]))
    .unwrap();
    let key = created["secret"].as_str().unwrap().to_string();

    /// The server process, killed however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let mut server = Server({
        let mut c = bin();
        env(&mut c);
        c.arg("serve")
            .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });
    let base = format!("https://localhost:{port}");
    let http = crate::support::process::wait_ready(&mut server.0, &data, port).await;

    // Writers: each write retried with its key until acknowledged. Every failed attempt's
    // duration is kept: during the switch requests must fail fast, not hang.
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, key, base) = (http.clone(), key.clone(), base.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failures) = (Vec::new(), Vec::new());
                for i in 0..40 {
                    let name = format!("fw{w}-{i}");
                    let idem = uuid::Uuid::new_v4().to_string();
                    loop {
                        // Without following the primary, no write would ever succeed again.
                        if started.elapsed() > Duration::from_secs(60) {
                            return (acknowledged, failures);
                        }
                        let t = Instant::now();
                        let res = http
                            .post(format!("{base}/api/v1/clients"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", &idem)
                            .json(&json!({"name": name}))
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        match res {
                            Ok(r) if r.status() == 201 => {
                                acknowledged.push((name.clone(), started.elapsed(), t.elapsed()));
                                break;
                            }
                            other => {
                                failures.push((
                                    started.elapsed(),
                                    t.elapsed(),
                                    other.map(|r| r.status().as_u16()).ok(),
                                ));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (acknowledged, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped_at = started.elapsed();
    // The writers keep writing while the primary goes away and the standby takes over.
    let pair = tokio::task::spawn_blocking(move || {
        pair.stop_primary_hard();
        // What a failover manager takes a moment to decide.
        std::thread::sleep(Duration::from_millis(500));
        pair.promote_standby();
        pair
    })
    .await
    .unwrap();
    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for w in writers {
        let (a, f) = w.await.unwrap();
        acknowledged.extend(a);
        failures.extend(f);
    }
    assert_eq!(acknowledged.len(), 160);
    // The write-unavailability window: the longest time without an acknowledged write (four
    // writers acknowledge one every few milliseconds otherwise).
    let mut times: Vec<Duration> = acknowledged.iter().map(|(_, at, _)| *at).collect();
    times.sort();
    let window = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let slowest_failure = failures.iter().map(|(_, took, _)| *took).max().unwrap_or_default();
    let slowest_success = acknowledged.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    let after = acknowledged.iter().filter(|(_, at, _)| *at > stopped_at).count();
    eprintln!(
        "failover: writes unavailable for {:.2} s; {} writes acknowledged after the stop; {} failed attempts \
         (the slowest answered in {:.2} s); the slowest acknowledged write took {:.2} s",
        window.as_secs_f64(),
        after,
        failures.len(),
        slowest_failure.as_secs_f64(),
        slowest_success.as_secs_f64()
    );
    assert!(after > 20, "most writes should come after the switch: {after}");
    assert!(slowest_failure < Duration::from_secs(10), "a request hung during the switch: {slowest_failure:?}");
    assert!(slowest_success < Duration::from_secs(10), "a request hung during the switch: {slowest_success:?}");
    assert!(window < Duration::from_secs(20), "writes were unavailable for {window:?}");

    // On the new primary: every acknowledged write, exactly once.
    let promoted = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pair.standby_port)
        .username("postgres")
        .database("clientflow");
    let mut conn = sqlx::ConnectOptions::connect(&promoted).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut conn).await.unwrap();
    assert!(!in_recovery);
    for (name, _, _) in &acknowledged {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clients WHERE name = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "{name}");
    }
    drop(server);
    // The audit chain, written before and after the switch, verifies on the new primary.
    let out = cli(&["audit", "verify"]);
    assert!(out.contains("failover"), "{out}");
}
