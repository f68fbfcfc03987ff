//! Authenticated pages on the seeded data set as a Member: `GET /o/{org}/projects` and the
//! overview, `GET /o/{org}` (session cookie, organization by slug, membership and permissions,
//! the organization's settings, then the handler's own queries). Prints the transactions the database ended per request (from
//! `pg_stat_database.xact_commit + xact_rollback`, sequential requests) and throughput and
//! p50/p95 latency under concurrent load; the route guard's budget is one transaction, the
//! handler's one more.
//!
//! Run: `cargo bench --bench pages` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_ORGS`, `BENCH_TASKS`, `BENCH_SECONDS`, `BENCH_CONCURRENCY`, `BENCH_SEQUENTIAL`
//! change the size.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

#[path = "common/mod.rs"]
mod common;

use clientflow_test_support::TestApp;
use common::{env_num, load, seed, transactions_per_request};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let orgs = env_num("BENCH_ORGS", 100);
    let tasks = env_num("BENCH_TASKS", 1_000_000);
    let seconds = env_num("BENCH_SECONDS", 5) as f64;
    let concurrency = env_num("BENCH_CONCURRENCY", 8) as usize;
    let sequential = env_num("BENCH_SEQUENTIAL", 200);

    let app = TestApp::builder().system_clock().pool_size(20).spawn().await;
    seed(&app, orgs, tasks).await;

    // A Member of the organization with the most projects the member is on, signed in: a
    // session row made directly (seeded accounts have no password; signing in isn't measured).
    let mut admin = app.db.admin_conn().await;
    let (slug, user, projects): (String, uuid::Uuid, i64) = sqlx::query_as(
        "SELECT o.slug, m.user_id, count(pm.project_id) FROM memberships m \
         JOIN organizations o ON o.id = m.organization_id \
         JOIN project_members pm ON pm.organization_id = m.organization_id AND pm.user_id = m.user_id \
         WHERE m.role = 'member' AND m.status = 'active' \
         GROUP BY o.slug, m.user_id ORDER BY count(pm.project_id) DESC, o.slug LIMIT 1",
    )
    .fetch_one(&mut admin)
    .await
    .expect("a member on projects");
    let token = clientflow::platform::crypto::random_token();
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, stage, method, csrf_token, created_at, last_seen_at, expires_at, \
         user_agent, privilege_epoch) \
         VALUES ($1, $2, $3, 'complete', 'password', 'bench', now(), now(), now() + interval '12 hours', 'bench', \
                 (SELECT privilege_epoch FROM users WHERE id = $3))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&clientflow::platform::crypto::sha256(token.as_bytes())[..])
    .bind(user)
    .execute(&mut admin)
    .await
    .expect("session");
    let cookie = vec![("cookie".to_string(), format!("__Host-cf_session={token}"))];
    let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
    let url = app.url(&format!("/o/{slug}/projects"));
    let page = client.get(&url).header("cookie", &cookie[0].1).send().await.expect("page");
    assert_eq!(page.status(), 200, "the member sees the projects page");
    println!("organization {slug}: a Member on {projects} projects");

    // Each page: transactions per request, sequentially (so nothing else is counted), then load.
    for (name, path) in
        [("/o/{org}/projects", format!("/o/{slug}/projects")), ("/o/{org} (overview)", format!("/o/{slug}"))]
    {
        let url = app.url(&path);
        let per_request = transactions_per_request(&app, sequential, || async {
            for _ in 0..sequential {
                let res = client.get(&url).header("cookie", &cookie[0].1).send().await.expect("page");
                assert_eq!(res.status(), 200, "GET {path}");
                res.bytes().await.expect("body");
            }
        })
        .await;
        println!("GET {name} as a Member: {per_request:.2} transactions per request ({sequential} requests)");
        load(&client, &url, &cookie, concurrency, 2.0).await;
        let run = load(&client, &url, &cookie, concurrency, seconds).await;
        run.print(&format!("GET {name}, {concurrency} clients"));
    }
}
