//! The pages of a person's first hour, one by one, on the seeded data set: p50 and p95 latency
//! per page for an Owner (session cookie, organization by slug, the handler's queries, the
//! rendered page), including a project board of `BENCH_BOARD_TASKS` tasks (2,000 by default:
//! the project with the most tasks is topped up to that). Requests are sequential, so each
//! figure is one page's own cost, not queueing. The target is a p95 of 50 ms or less per page.
//!
//! Run: `cargo bench --bench journey_pages` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_ORGS`, `BENCH_TASKS` (the seeded set), `BENCH_BOARD_TASKS`, `BENCH_REQUESTS` (per
//! page) change the size.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clientflow_test_support::TestApp;
use common::{env_num, pct, seed};

const TARGET_P95_MS: f64 = 50.0;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let orgs = env_num("BENCH_ORGS", 100);
    let tasks = env_num("BENCH_TASKS", 1_000_000);
    let board_tasks = env_num("BENCH_BOARD_TASKS", 2_000) as i64;
    let requests = env_num("BENCH_REQUESTS", 100) as usize;

    let app = TestApp::builder().system_clock().pool_size(20).spawn().await;
    seed(&app, orgs, tasks).await;

    // The organization whose project has the most tasks, its Owner, and that project.
    let mut admin = app.db.admin_conn().await;
    let (org, slug, owner, project, on_board): (uuid::Uuid, String, uuid::Uuid, uuid::Uuid, i64) = sqlx::query_as(
        "SELECT o.id, o.slug, m.user_id, t.project_id, count(*) FROM tasks t \
         JOIN organizations o ON o.id = t.organization_id \
         JOIN memberships m ON m.organization_id = o.id AND m.role = 'owner' AND m.status = 'active' \
         GROUP BY o.id, o.slug, m.user_id, t.project_id ORDER BY count(*) DESC, o.slug LIMIT 1",
    )
    .fetch_one(&mut admin)
    .await
    .expect("a project with tasks");
    // Top the board up to the size asked for, spread over its columns.
    if on_board < board_tasks {
        sqlx::query(
            "WITH cols AS (SELECT array_agg(id ORDER BY position) AS ids FROM board_columns \
                           WHERE organization_id = $1 AND project_id = $2) \
             INSERT INTO tasks (organization_id, id, project_id, column_id, title, priority, position, created_by, \
                                created_at, updated_at) \
             SELECT $1, gen_random_uuid(), $2, cols.ids[1 + n % array_length(cols.ids, 1)], 'Board task ' || n, \
                    (ARRAY['low', 'normal', 'high', 'urgent'])[1 + n % 4], 1000 + n, $3, now(), now() \
             FROM cols, generate_series(1, $4) AS n",
        )
        .bind(org)
        .bind(project)
        .bind(owner)
        .bind(board_tasks - on_board)
        .execute(&mut admin)
        .await
        .expect("board tasks");
    }
    let on_board: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE organization_id = $1 AND project_id = $2")
        .bind(org)
        .bind(project)
        .fetch_one(&mut admin)
        .await
        .expect("count");
    let task: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM tasks WHERE organization_id = $1 AND project_id = $2 ORDER BY id LIMIT 1")
            .bind(org)
            .bind(project)
            .fetch_one(&mut admin)
            .await
            .expect("a task");
    let client: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM clients WHERE organization_id = $1 ORDER BY id LIMIT 1")
            .bind(org)
            .fetch_one(&mut admin)
            .await
            .expect("a client");
    let invoice: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM invoices WHERE organization_id = $1 ORDER BY id LIMIT 1")
            .bind(org)
            .fetch_optional(&mut admin)
            .await
            .expect("an invoice");

    // The Owner, signed in: a session row made directly (seeded accounts have no password).
    let token = clientflow::platform::crypto::random_token();
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, stage, method, csrf_token, created_at, last_seen_at, expires_at, \
         user_agent, privilege_epoch) \
         VALUES ($1, $2, $3, 'complete', 'password', 'bench', now(), now(), now() + interval '12 hours', 'bench', \
                 (SELECT privilege_epoch FROM users WHERE id = $3))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&clientflow::platform::crypto::sha256(token.as_bytes())[..])
    .bind(owner)
    .execute(&mut admin)
    .await
    .expect("session");
    let cookie = format!("__Host-cf_session={token}");
    let client_http = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
    println!("organization {slug}: the Owner; the board has {on_board} tasks; {requests} requests per page");

    let o = format!("/o/{slug}");
    let mut pages: Vec<(&str, String, bool)> = vec![
        ("home (signed out)", "/".into(), false),
        ("sign up (signed out)", "/signup".into(), false),
        ("sign in (signed out)", "/login".into(), false),
        ("organizations", "/orgs".into(), true),
        ("overview", o.clone(), true),
        ("projects", format!("{o}/projects"), true),
        ("board (big project)", format!("{o}/projects/{project}"), true),
        ("list tab (big project)", format!("{o}/projects/{project}/list"), true),
        ("time tab", format!("{o}/projects/{project}/time"), true),
        ("files tab", format!("{o}/projects/{project}/files"), true),
        ("people tab", format!("{o}/projects/{project}/people"), true),
        ("activity tab", format!("{o}/projects/{project}/activity"), true),
        ("task", format!("{o}/tasks/{task}"), true),
        ("tasks", format!("{o}/tasks"), true),
        ("clients", format!("{o}/clients"), true),
        ("client", format!("{o}/clients/{client}"), true),
        ("invoices", format!("{o}/invoices"), true),
        ("new invoice", format!("{o}/invoices/new"), true),
        ("time", format!("{o}/time"), true),
        ("files", format!("{o}/files"), true),
        ("people", format!("{o}/members"), true),
        ("settings", format!("{o}/settings"), true),
        ("audit log", format!("{o}/audit"), true),
        ("account", "/account/security".into(), true),
    ];
    if let Some(invoice) = invoice {
        pages.push(("invoice", format!("{o}/invoices/{invoice}"), true));
    }

    println!("{:<26} {:>9} {:>9} {:>9}  within {TARGET_P95_MS} ms p95", "page", "p50 ms", "p95 ms", "KiB");
    let mut over = Vec::new();
    for (name, path, signed_in) in &pages {
        let get = || {
            let mut req = client_http.get(app.url(path));
            if *signed_in {
                req = req.header("cookie", &cookie);
            }
            req.send()
        };
        let mut size = 0;
        for _ in 0..5 {
            let res = get().await.expect("warm-up");
            assert_eq!(res.status(), 200, "{path}");
            size = res.bytes().await.expect("body").len();
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let res = get().await.expect("page");
            assert_eq!(res.status(), 200, "{path}");
            res.bytes().await.expect("body");
            latencies.push(t.elapsed());
        }
        latencies.sort();
        let (p50, p95) = (pct(&latencies, 0.5), pct(&latencies, 0.95));
        let ok = p95 <= TARGET_P95_MS;
        if !ok {
            over.push(*name);
        }
        println!("{name:<26} {p50:>9.2} {p95:>9.2} {:>9.1}  {}", size as f64 / 1024.0, if ok { "yes" } else { "NO" });
    }
    if over.is_empty() {
        println!("every page within {TARGET_P95_MS} ms at the 95th percentile");
    } else {
        println!("over {TARGET_P95_MS} ms at the 95th percentile: {}", over.join(", "));
    }
}
