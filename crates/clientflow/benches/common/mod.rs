//! What the benchmarks on the seeded data set share: generating it with the real
//! `clientflow seed`, HTTP load with latency percentiles, and counting the transactions the
//! database committed.

#![allow(dead_code, clippy::print_stdout)]

use std::time::{Duration, Instant};

use clientflow_test_support::TestApp;
use sqlx::postgres::PgConnectOptions;

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn url_of(o: &PgConnectOptions, password: &str) -> String {
    let user = o.get_username();
    let db = o.get_database().unwrap_or("postgres");
    match o.get_socket() {
        Some(dir) => format!("postgres://{user}:{password}@localhost:{}/{db}?host={}", o.get_port(), dir.display()),
        None => format!("postgres://{user}:{password}@{}:{}/{db}", o.get_host(), o.get_port()),
    }
}

/// The `clientflow` binary with the app's database and data directory, as an operator runs it.
pub async fn clientflow(app: &TestApp) -> std::process::Command {
    let passwords = clientflow_test_support::role_passwords().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clientflow"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", url_of(&app.db.app, &passwords.app))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", url_of(&app.db.owner, &passwords.owner))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", url_of(&app.db.auditor, &passwords.auditor));
    cmd
}

/// Samples the peak resident set (`VmHWM` of `/proc/<pid>/status`, a high-water mark kept by
/// the kernel) of process `pid` every 10 ms until it exits; returns the last value read, in
/// KiB. Being a high-water mark, a sample misses nothing but what happens in the last 10 ms.
pub fn watch_peak(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            // A process that has exited but not been reaped has no memory lines any more.
            let Some(kb) = status_kb(&status, "VmHWM:") else { break };
            peak_kb = peak_kb.max(kb);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak_kb
    })
}

/// A `Vm…:` line of a `/proc/<pid>/status` text, in KiB.
pub fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// Seeds `orgs` organizations with `tasks` tasks in all into the app's database, with the real
/// `clientflow seed` in a process of its own; prints how long it took and the seeding
/// process's own peak resident memory (most of the work happens in PostgreSQL).
pub async fn seed(app: &TestApp, orgs: u64, tasks: u64) {
    let started = Instant::now();
    let child = clientflow(app)
        .await
        .args(["seed", "--orgs", &orgs.to_string(), "--clients", "25", "--projects", "40"])
        .args(["--tasks", &tasks.to_string(), "--users", "15", "--seed", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("seed");
    let peak = watch_peak(child.id());
    let out = child.wait_with_output().expect("seed");
    let peak_mb = peak.join().unwrap_or(0) as f64 / 1024.0;
    assert!(out.status.success(), "seed failed:\n{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "seeded {orgs} organizations with {tasks} tasks in {:.1} s (the seeding process's peak resident memory: {peak_mb:.1} MB)",
        started.elapsed().as_secs_f64()
    );
}

pub struct Run {
    pub requests: u64,
    pub seconds: f64,
    pub latencies: Vec<Duration>,
}

/// `concurrency` clients GETting `url` for `seconds`, each request with `headers`.
pub async fn load(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    concurrency: usize,
    seconds: f64,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut req = client.get(&url);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let res = req.send().await.expect("request");
                assert_eq!(res.status(), 200, "{url}");
                let body = res.bytes().await.expect("body");
                assert!(body.len() > 100);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    latencies.sort();
    Run { requests: latencies.len() as u64, seconds: started.elapsed().as_secs_f64(), latencies }
}

pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn print(&self, name: &str) {
        println!(
            "{name:<46} {:>8.0} req/s   p50 {:>6.2} ms   p95 {:>6.2} ms   p99 {:>6.2} ms   ({} requests)",
            self.rps(),
            pct(&self.latencies, 0.5),
            pct(&self.latencies, 0.95),
            pct(&self.latencies, 0.99),
            self.requests
        );
    }
}

/// Transactions ended in the app's database so far, committed or rolled back (a read-only
/// request ends its transaction by rolling it back: `OrgTx::finish`), as `pg_stat_database`
/// reports them. A PostgreSQL backend reports its statistics once it has been idle for ten
/// seconds (or at exit), so this waits that long first. The reading costs a transaction or two of its own:
/// [`transactions_per_request`] measures that overhead and takes it off.
pub async fn committed(app: &TestApp) -> i64 {
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut admin = app.db.admin_conn().await;
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut admin).await.expect("flush");
    sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_database")
}

/// Transactions the database ended per request over `requests` requests made by `run`,
/// less what reading the count costs (measured over an idle period first).
pub async fn transactions_per_request<F, Fut>(app: &TestApp, requests: u64, run: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let a = committed(app).await;
    let b = committed(app).await;
    let overhead = b - a;
    run().await;
    let c = committed(app).await;
    (c - b - overhead) as f64 / requests as f64
}
