//! `GET /api/v1/tasks?limit=50` on the seeded data set (100 organizations, 1,000,000 tasks by
//! default): the full stack — API key verification, permission check, the tenant door with
//! row-level security, the JSON envelope — against a bare reference handler in the same binary
//! that runs the same SQL (`work::tasks::list_sql`) on a plain pooled connection and returns the
//! rows as JSON. Both go through the same server, TLS and middleware; the difference is what
//! ClientFlow adds per request. Prints throughput and latency of both, and the ratio.
//!
//! Then the database's own limit: `pgbench` runs the same transaction (tenant set, the same
//! SELECT with the same values, commit) with 16 clients against the same database, and the API
//! is loaded with 64 connections, taking turns (`BENCH_ROUNDS`, default 3) on a database
//! vacuumed and checkpointed after the seeding; the script prints each round, the totals and
//! their ratio, and the transactions per API request (`pg_stat_database.xact_commit +
//! xact_rollback`). The API side of that comparison is loaded by `wrk` when it is installed (a
//! separate process in C, like pgbench), else from this process. With wrk, the reference handler
//! is loaded the same way, and each run prints the CPU time per request of the server, of
//! PostgreSQL (from `/proc`, where the database runs on this machine) and of the load generator:
//! where the CPU is the limit, that says where a request's cost goes, and how much server CPU per
//! request the goal leaves (`cpu_budget`).
//!
//! Run: `cargo bench --bench api_tasks` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_ORGS`, `BENCH_TASKS`, `BENCH_SECONDS`, `BENCH_CONCURRENCY` (reference comparison,
//! default 16), `BENCH_API_CONNECTIONS` (default 64), `BENCH_PGBENCH_CLIENTS` (default 16) and
//! `BENCH_POOL_SIZE` (the server's and the reference's database connections, default 20, the
//! server's default) change the size; `PGBENCH` names the pgbench binary if it is not found.
//! `BENCH_HOLD_SECONDS` skips the measurements: once the data set and the key exist, the server
//! stays up that long and prints its URLs, the key and the pgbench script, for a profiler (`perf
//! record -p`) and load generators pointed at it by hand.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

/// The server runs with the binary's allocator (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use clientflow::access::route::{Access, RouteDef, Surface};
use clientflow::work::tasks::{ListShape, Task, list_sql};
use clientflow_test_support::TestApp;
use common::env_num;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

#[path = "common/mod.rs"]
mod common;

static BARE_POOL: OnceLock<PgPool> = OnceLock::new();
static BARE_ORG: OnceLock<uuid::Uuid> = OnceLock::new();

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<i64>,
}

/// The reference: the same statement, the tenant set on a plain pooled transaction, no key, no
/// permission, no principal, and as few round trips as sqlx allows: `BEGIN` with the tenant
/// (one simple query), the SELECT, `COMMIT` (and the pool's check as the connection comes
/// back, which sqlx always makes; its check before handing a connection out is off).
async fn bare(Query(q): Query<Limit>) -> Response {
    let pool = BARE_POOL.get().expect("pool");
    let org = BARE_ORG.get().expect("org");
    let mut tx =
        pool.begin_with(format!("BEGIN; SELECT set_config('app.org_id', '{org}', true)")).await.expect("begin");
    let rows: Vec<Task> =
        sqlx::query_as(&list_sql(&ListShape::page(q.limit.unwrap_or(50), 0))).fetch_all(&mut *tx).await.expect("query");
    tx.commit().await.expect("commit");
    Json(serde_json::json!({ "data": rows })).into_response()
}

fn routes() -> Vec<RouteDef> {
    let mut all = clientflow::routes::all();
    all.push(clientflow::route!(GET "/bench/bare-tasks", Surface::Api, Access::Public, bare));
    all
}

fn report(name: &str, runs: &[common::Run]) -> f64 {
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    let seconds: f64 = runs.iter().map(|r| r.seconds).sum();
    let mut lat: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    lat.sort();
    let rps = requests as f64 / seconds;
    println!(
        "{name:<44} {rps:>8.0} req/s   p50 {:>6.2} ms   p95 {:>6.2} ms   p99 {:>6.2} ms   ({requests} requests)",
        common::pct(&lat, 0.5),
        common::pct(&lat, 0.95),
        common::pct(&lat, 0.99)
    );
    rps
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let orgs = env_num("BENCH_ORGS", 100);
    let tasks = env_num("BENCH_TASKS", 1_000_000);
    let seconds = env_num("BENCH_SECONDS", 5);
    let concurrency = env_num("BENCH_CONCURRENCY", 16) as usize;

    let pool_size = env_num("BENCH_POOL_SIZE", 20) as u32;
    let app = TestApp::builder().system_clock().pool_size(pool_size).routes(routes).spawn().await;
    let passwords = clientflow_test_support::role_passwords().await;

    // The data set, generated by the real `clientflow seed`.
    common::seed(&app, orgs, tasks).await;

    // One organization, an API key for it, and the reference pool.
    let mut admin = app.db.admin_conn().await;
    let (org_id, org_tasks): (uuid::Uuid, i64) = sqlx::query_as(
        "SELECT organization_id, count(*) FROM tasks GROUP BY organization_id ORDER BY organization_id LIMIT 1",
    )
    .fetch_one(&mut admin)
    .await
    .expect("an organization");
    let org = clientflow::platform::ids::OrgId::from_uuid(org_id);
    let principal = clientflow::access::operator(
        &app.app_db,
        &clientflow::access::OperatorAuthority::unsafe_assume_cli_operator(),
        org,
        "bench",
    )
    .await
    .unwrap()
    .unwrap();
    let owner: uuid::Uuid = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner' ORDER BY created_at LIMIT 1",
    )
    .bind(org_id)
    .fetch_one(&mut admin)
    .await
    .expect("the organization has an Owner");
    let ctx = clientflow::audit::Context::system(time::OffsetDateTime::now_utc(), None);
    let key = clientflow::access::api_key::create_for(
        &app.app_db,
        &ctx,
        &principal,
        owner.to_string().parse().expect("a user id"),
        &clientflow::access::api_key::NewKey {
            name: "bench".into(),
            role: "manager".into(),
            permissions: None,
            expires_in_days: None,
        },
    )
    .await
    .expect("key");
    let _ = BARE_ORG.set(org_id);
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .test_before_acquire(false)
        .connect_with(app.db.app.clone().disable_statement_logging())
        .await
        .expect("reference pool");
    let _ = BARE_POOL.set(pool);

    let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
    let full_url = app.url("/api/v1/tasks?limit=50");
    let auth = [("authorization".to_string(), format!("Bearer {}", key.secret))];
    let bare_url = app.url("/bench/bare-tasks?limit=50");
    // Same rows from both.
    let full: serde_json::Value =
        client.get(&full_url).bearer_auth(&key.secret).send().await.unwrap().json().await.unwrap();
    let bare_rows: serde_json::Value = client.get(&bare_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(full["data"], bare_rows["data"], "the two endpoints must return the same tasks");
    assert_eq!(full["data"].as_array().map(Vec::len), Some(50));

    // For profiling: the server stays up this long with its key and URLs printed, so that a
    // profiler, wrk and pgbench can be pointed at it by hand.
    let hold = env_num("BENCH_HOLD_SECONDS", 0);
    if hold > 0 {
        let script = app.config.data_dir.join("bench-tasks.sql");
        std::fs::write(&script, pgbench_script(org_id)).expect("pgbench script");
        println!("holding for {hold} s: pid {}", std::process::id());
        println!("api url: https://{}/api/v1/tasks?limit=50", app.addr);
        println!("bare url: https://{}/bench/bare-tasks?limit=50", app.addr);
        println!("key: {}", key.secret);
        println!("pgbench script: {}", script.display());
        println!("database: {}", common::url_of(&app.db.app, &passwords.app));
        tokio::time::sleep(Duration::from_secs(hold)).await;
        return;
    }
    println!(
        "organization {org_id}: {org_tasks} tasks; {concurrency} concurrent clients, {seconds} s per round, 3 rounds each; {pool_size} database connections"
    );
    common::load(&client, &bare_url, &[], concurrency, 2.0).await;
    common::load(&client, &full_url, &auth, concurrency, 2.0).await;
    let (mut bare_runs, mut full_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        bare_runs.push(common::load(&client, &bare_url, &[], concurrency, seconds as f64).await);
        full_runs.push(common::load(&client, &full_url, &auth, concurrency, seconds as f64).await);
    }
    let bare_rps = report("reference: same SQL, plain pooled connection", &bare_runs);
    let full_rps = report("GET /api/v1/tasks?limit=50 (full stack)", &full_runs);
    println!("ratio (full stack / reference throughput): {:.2}  (goal: at least 0.70)", full_rps / bare_rps);

    // The database's limit for this transaction, measured by pgbench, against the API at 64
    // connections; and how many transactions each API request commits.
    let api_connections = env_num("BENCH_API_CONNECTIONS", 64) as usize;
    let pgbench_clients = env_num("BENCH_PGBENCH_CLIENTS", 16);
    let Some(pgbench) = pgbench_binary() else {
        println!("pgbench not found (set PGBENCH): the database-limit comparison is skipped");
        return;
    };
    let script = app.config.data_dir.join("bench-tasks.sql");
    std::fs::write(&script, pgbench_script(org_id)).expect("pgbench script");
    // A quiet database for both sides: the seeding's dead tuples vacuumed and its dirty pages
    // written now, not by autovacuum or the checkpointer in the middle of one side's run.
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut admin).await.expect("vacuum");
    sqlx::raw_sql("CHECKPOINT").execute(&mut admin).await.expect("checkpoint");
    let wrk = wrk_binary();
    let url = format!("https://{}/api/v1/tasks?limit=50", app.addr);
    let mut reference_rps = None;
    if let Some(wrk) = &wrk {
        // The reference under the same load generator, for the CPU each costs.
        let reference = format!("https://{}/bench/bare-tasks?limit=50", app.addr);
        wrk_run(wrk, &url, &key.secret, api_connections, 2);
        let cpu_before = cpu_now(&mut admin).await;
        let (ref_rps, ref_requests, _, _) = wrk_run(wrk, &reference, &key.secret, api_connections, seconds);
        let ref_cpu = cpu_now(&mut admin).await.since(&cpu_before, ref_requests as f64);
        println!(
            "{:<44} {ref_rps:>8.0} req/s   CPU per request: {}",
            format!("reference, {api_connections} connections (wrk)"),
            ref_cpu.describe()
        );
        reference_rps = Some(ref_rps);
    } else {
        // The load generator: wrk when installed (a separate C process, as pgbench is, so the
        // comparison isn't skewed by a Rust client sharing this process's runtime and cores),
        // else this process's own reqwest client.
        println!("wrk not found (apt install wrk): the API is loaded from this process");
    }
    let api_client = clientflow_test_support::client_for(&app.cert_path(), app.addr)
        .pool_max_idle_per_host(api_connections)
        .build()
        .expect("client");
    if wrk.is_none() {
        common::load(&api_client, &full_url, &auth, api_connections, 2.0).await;
    }
    // pgbench and the API take turns, `BENCH_ROUNDS` times, so that what the machine does
    // meanwhile falls on both sides alike; the ratio is of the totals.
    let rounds = env_num("BENCH_ROUNDS", 3).max(1);
    let (mut pg, mut api) = (Tally::default(), Tally::default());
    let mut per_request = f64::NAN;
    for round in 1..=rounds {
        let cpu_before = cpu_now(&mut admin).await;
        let tps = run_pgbench(&pgbench, &script, &app.db.app, &passwords.app, pgbench_clients, seconds);
        pg.add(tps * seconds as f64, seconds as f64, &cpu_before, &cpu_now(&mut admin).await);
        // How many transactions each API request commits, in the first round.
        let before = if round == 1 { Some(common::committed(&app).await) } else { None };
        let cpu_before = cpu_now(&mut admin).await;
        let (rps, requests, p50, p99) = match &wrk {
            Some(wrk) => wrk_run(wrk, &url, &key.secret, api_connections, seconds),
            None => {
                let run = common::load(&api_client, &full_url, &auth, api_connections, seconds as f64).await;
                let mut lat = run.latencies.clone();
                lat.sort();
                (run.requests as f64 / run.seconds, run.requests, common::pct(&lat, 0.5), common::pct(&lat, 0.99))
            }
        };
        api.add(requests as f64, requests as f64 / rps, &cpu_before, &cpu_now(&mut admin).await);
        if let Some(before) = before {
            per_request = (common::committed(&app).await - before) as f64 / requests as f64;
        }
        println!(
            "round {round}: pgbench {tps:>6.0} tps   API {rps:>6.0} req/s (p50 {p50:>6.2} ms, p99 {p99:>6.2} ms)   ratio {:.2}",
            rps / tps
        );
    }
    let (pgbench_tps, api_rps) = (pg.rate(), api.rate());
    let pgbench_cpu = pg.cpu_per();
    let api_cpu = api.cpu_per();
    println!(
        "{:<44} {pgbench_tps:>8.0} tps     CPU per transaction: {}",
        format!("pgbench, same transaction, {pgbench_clients} clients"),
        pgbench_cpu.describe()
    );
    println!(
        "{:<44} {api_rps:>8.0} req/s   CPU per request: {}",
        format!("GET /api/v1/tasks?limit=50, {api_connections} connections"),
        api_cpu.describe()
    );
    if let Some(ref_rps) = reference_rps {
        println!("ratio (reference / pgbench, the ceiling of any handler): {:.2}", ref_rps / pgbench_tps);
    }
    println!("transactions per API request (committed or rolled back): {per_request:.2}");
    let (reused, verified) = app.state.api_keys.counts();
    println!(
        "API requests that reused a kept key verification: {reused} (verified from scratch: {verified}; \
         access::api_key::KeyCache)"
    );
    println!("ratio (API / pgbench, {rounds} rounds each): {:.2}  (goal: at least 0.60)", api_rps / pgbench_tps);
    if wrk.is_some()
        && let Some(budget) = cpu_budget(&pgbench_cpu, &api_cpu, 0.6)
    {
        println!("{budget}");
    }
}

/// The work of one side over its rounds: units done (transactions, requests), the seconds
/// they took, and the CPU each process group spent meanwhile.
struct Tally {
    units: f64,
    seconds: f64,
    spent: Cpu,
}

impl Default for Tally {
    fn default() -> Self {
        Self { units: 0.0, seconds: 0.0, spent: Cpu { server: Some(0.0), postgres: Some(0.0), load: Some(0.0) } }
    }
}

impl Tally {
    fn add(&mut self, units: f64, seconds: f64, before: &Cpu, after: &Cpu) {
        self.spent = self.spent.combine(&after.combine(before, |now, then| now - then), |sum, more| sum + more);
        self.units += units;
        self.seconds += seconds;
    }

    fn rate(&self) -> f64 {
        self.units / self.seconds
    }

    fn cpu_per(&self) -> CpuPer {
        self.spent.per(self.units)
    }
}

/// CPU time used so far, in seconds, by this process (the server: the load comes from wrk or
/// pgbench, processes of their own), by PostgreSQL (every live backend and background process,
/// the postmaster, and what exited backends, pgbench's, left to the postmaster) and by the load
/// generators this process ran and waited for (wrk, pgbench). `None` where `/proc` or the data
/// directory can't be read (another machine's database).
struct Cpu {
    server: Option<f64>,
    postgres: Option<f64>,
    load: Option<f64>,
}

/// What two readings of [`Cpu`] say per unit of work (microseconds).
struct CpuPer {
    server: Option<f64>,
    postgres: Option<f64>,
    load: Option<f64>,
}

impl Cpu {
    /// `f` of each process group's two figures (`None` where either is unknown).
    fn combine(&self, other: &Cpu, f: impl Fn(f64, f64) -> f64) -> Cpu {
        let both = |a: Option<f64>, b: Option<f64>| Some(f(a?, b?));
        Cpu {
            server: both(self.server, other.server),
            postgres: both(self.postgres, other.postgres),
            load: both(self.load, other.load),
        }
    }

    /// These seconds per unit of work, in microseconds.
    fn per(&self, units: f64) -> CpuPer {
        let per = |v: Option<f64>| v.map(|v| v * 1e6 / units.max(1.0));
        CpuPer { server: per(self.server), postgres: per(self.postgres), load: per(self.load) }
    }

    fn since(&self, earlier: &Cpu, units: f64) -> CpuPer {
        self.combine(earlier, |now, then| now - then).per(units)
    }
}

impl CpuPer {
    fn describe(&self) -> String {
        let us = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0} µs"));
        format!("server {} + PostgreSQL {} + load generator {}", us(self.server), us(self.postgres), us(self.load))
    }
}

/// Where the CPU is the limit (load generator, server and PostgreSQL share this machine's
/// cores), a request's throughput is in inverse proportion to its CPU, all processes counted.
/// From pgbench's transaction and the API's request as measured: the ratio the CPU predicts
/// (a check that the CPU is the limit: it should be near the measured one), the ratio a server
/// that cost nothing would reach, and the server CPU per request the goal leaves.
fn cpu_budget(pgbench: &CpuPer, api: &CpuPer, goal: f64) -> Option<String> {
    let pgbench_total = pgbench.postgres? + pgbench.load?;
    let around_server = api.postgres? + api.load?;
    let server = api.server?;
    Some(format!(
        "CPU per unit, all processes: pgbench {pgbench_total:.0} µs, API request {:.0} µs \
         (ratio the CPU predicts: {:.2}); a server that cost nothing: {:.2}; \
         for {goal:.2} the server may spend {:.0} µs per request (it spends {server:.0} µs)",
        around_server + server,
        pgbench_total / (around_server + server),
        pgbench_total / around_server,
        pgbench_total / goal - around_server,
    ))
}

/// utime + stime (and, with `children`, cutime + cstime) of a process, in seconds. The kernel
/// reports them in USER_HZ ticks, 100 a second on Linux.
fn proc_cpu(pid: u32, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the state (field 3) on.
    let fields: Vec<u64> =
        stat.rsplit_once(')')?.1.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    let own = fields.get(10)? + fields.get(11)?;
    let waited = if children { fields.get(12)? + fields.get(13)? } else { 0 };
    Some((own + waited) as f64 / 100.0)
}

async fn cpu_now(admin: &mut sqlx::PgConnection) -> Cpu {
    let server = proc_cpu(std::process::id(), false);
    let load = proc_cpu(std::process::id(), true).zip(server).map(|(all, own)| all - own);
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    let data_dir: Option<String> = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        .fetch_optional(&mut *admin)
        .await
        .ok()
        .flatten();
    let postmaster = data_dir
        .and_then(|d| std::fs::read_to_string(std::path::Path::new(&d).join("postmaster.pid")).ok())
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
    let postgres = postmaster.and_then(|pm| {
        let live: f64 = pids.iter().filter_map(|p| proc_cpu(*p as u32, false)).sum();
        Some(proc_cpu(pm, true)? + live)
    });
    Cpu { server, postgres, load }
}

fn wrk_binary() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file())
}

/// One wrk run: requests per second, requests, p50 and p99 in milliseconds. wrk's Lua-free
/// defaults: keep-alive connections, two threads, every answer counted (a non-2xx fails the
/// benchmark rather than inflating it).
fn wrk_run(wrk: &std::path::Path, url: &str, key: &str, connections: usize, seconds: u64) -> (f64, u64, f64, f64) {
    let out = std::process::Command::new(wrk)
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && !text.contains("Non-2xx"), "wrk: {text}");
    let after = |marker: &str| -> &str {
        let at = text.find(marker).unwrap_or_else(|| panic!("no {marker:?} in wrk's output: {text}"));
        text[at + marker.len()..].split_whitespace().next().unwrap_or("")
    };
    let ms = |v: &str| -> f64 {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let rps: f64 = after("Requests/sec:").parse().expect("requests/sec");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("request count");
    (rps, requests, ms(after(" 50%")), ms(after(" 99%")))
}

fn pgbench_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("PGBENCH") {
        return Some(p.into());
    }
    let candidates = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin/pgbench"))
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join("pgbench")),
        );
    candidates.filter(|p| p.is_file()).max()
}

/// The API's transaction as pgbench runs it: the tenant set, then the statement the API runs
/// for a Manager's key and `?limit=50` (`list_sql` with no filter: it has no parameters), commit.
fn pgbench_script(org: uuid::Uuid) -> String {
    let sql = list_sql(&ListShape::page(50, 0));
    assert!(!sql.contains('$'), "the first page without filters has no parameters: {sql}");
    format!("BEGIN;\nSELECT set_config('app.org_id', '{org}', true);\n{sql};\nCOMMIT;\n")
}

fn run_pgbench(
    pgbench: &std::path::Path,
    script: &std::path::Path,
    db: &PgConnectOptions,
    password: &str,
    clients: u64,
    seconds: u64,
) -> f64 {
    let mut cmd = std::process::Command::new(pgbench);
    cmd.args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string()])
        .arg("-f")
        .arg(script)
        .args(["-U", db.get_username(), "-p", &db.get_port().to_string()])
        .env("PGPASSWORD", password);
    match db.get_socket() {
        Some(dir) => cmd.arg("-h").arg(dir),
        None => cmd.args(["-h", db.get_host()]),
    };
    cmd.arg(db.get_database().unwrap_or("postgres"));
    let out = cmd.output().expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pgbench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no tps in pgbench's output:\n{stdout}"))
}
