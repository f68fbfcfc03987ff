//! The daily work on a 10,000-task organization: the search page for a one-word query and the
//! My work page (p50/p95 over sequential requests, as a signed-in Member who is on some of the
//! projects), each against its reference — the same SQL on a plain pooled connection with the
//! tenant set, no session, no page — and recording 1,000 notifications (`notify::record`, one
//! event for one person each, in one transaction) against 1,000 bare INSERTs of the same rows.
//!
//! Goals: search p95 ≤ 100 ms, My work p95 ≤ 50 ms, 1,000 notifications ≤ 1 s.
//!
//! Run: `cargo bench --bench daily` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_ORGS` (default 1) and `BENCH_TASKS` (in all, default 10,000) and `BENCH_REQUESTS`
//! (per page, default 200) change the size; the data set is `BENCH_ORGS=100
//! BENCH_TASKS=1000000` (10,000 tasks in each organization, the first one measured).

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clientflow::access::{self, OrgTx};
use clientflow::notify;
use clientflow::platform::ids::{OrgId, UserId};
use clientflow_test_support::TestApp;
use common::{env_num, pct, seed};
use sqlx::postgres::PgPoolOptions;

fn report(name: &str, goal_ms: f64, mut full: Vec<Duration>, mut bare: Vec<Duration>) {
    full.sort();
    bare.sort();
    let (f50, f95, b50, b95) = (pct(&full, 0.50), pct(&full, 0.95), pct(&bare, 0.50), pct(&bare, 0.95));
    println!(
        "{name:<12} page p50 {f50:>7.2} ms  p95 {f95:>7.2} ms | reference SQL p50 {b50:>7.2} ms  p95 {b95:>7.2} ms | \
         p95 ratio {:.1}x | goal p95 ≤ {goal_ms} ms: {}",
        f95 / b95.max(0.001),
        if f95 <= goal_ms { "met" } else { "MISSED" }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let orgs = env_num("BENCH_ORGS", 1);
    let tasks = env_num("BENCH_TASKS", 10_000);
    let requests = env_num("BENCH_REQUESTS", 200) as usize;
    let app = TestApp::builder().system_clock().pool_size(10).spawn().await;
    seed(&app, orgs, tasks).await;
    let mut admin = app.db.admin_conn().await;
    let (org, slug): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, slug FROM organizations ORDER BY slug LIMIT 1").fetch_one(&mut admin).await.unwrap();
    // A Member with assigned tasks (the Member scope is the costlier query); made one if none.
    let member: uuid::Uuid = match sqlx::query_scalar(
        "SELECT m.user_id FROM memberships m JOIN task_assignees a ON a.organization_id = m.organization_id \
         AND a.user_id = m.user_id WHERE m.organization_id = $1 AND m.role = 'member' AND m.status = 'active' \
         GROUP BY m.user_id ORDER BY count(*) DESC LIMIT 1",
    )
    .bind(org)
    .fetch_optional(&mut admin)
    .await
    .unwrap()
    {
        Some(m) => m,
        None => sqlx::query_scalar(
            "UPDATE memberships SET role = 'member' WHERE (organization_id, user_id) = \
             (SELECT organization_id, user_id FROM memberships WHERE organization_id = $1 AND role <> 'owner' LIMIT 1) \
             RETURNING user_id",
        )
        .bind(org)
        .fetch_one(&mut admin)
        .await
        .unwrap(),
    };
    // Make sure My work has a realistic list: 60 open tasks of the Member's projects with due dates.
    sqlx::query(
        "INSERT INTO task_assignees (organization_id, task_id, user_id) \
         SELECT t.organization_id, t.id, $2 FROM tasks t WHERE t.organization_id = $1 AND t.status <> 'done' \
           AND EXISTS (SELECT 1 FROM project_members pm WHERE pm.organization_id = t.organization_id \
                       AND pm.project_id = t.project_id AND pm.user_id = $2) \
         ORDER BY t.id LIMIT 60 ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(member)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE tasks t SET due_date = current_date + ((abs(hashtext(t.id::text)) % 30) - 10) \
         FROM task_assignees a WHERE a.organization_id = t.organization_id AND a.task_id = t.id AND a.user_id = $1",
    )
    .bind(member)
    .execute(&mut admin)
    .await
    .unwrap();
    // The one word: the commonest first word of the organization's task titles.
    let word: String = sqlx::query_scalar(
        "SELECT lower(split_part(title, ' ', 1)) FROM tasks WHERE organization_id = $1 GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    .bind(org)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&mut admin).await.unwrap();

    let token = clientflow::platform::crypto::random_token();
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, stage, method, csrf_token, created_at, last_seen_at, expires_at, \
         user_agent, privilege_epoch) \
         VALUES ($1, $2, $3, 'complete', 'password', 'bench', now(), now(), now() + interval '12 hours', 'bench', \
                 (SELECT privilege_epoch FROM users WHERE id = $3))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&clientflow::platform::crypto::sha256(token.as_bytes())[..])
    .bind(member)
    .execute(&mut admin)
    .await
    .unwrap();
    let cookie = format!("__Host-cf_session={token}");
    let http = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().unwrap();
    let pool = PgPoolOptions::new().max_connections(2).connect_with(app.db.app.clone()).await.unwrap();
    let matches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE organization_id = $1 AND search @@ websearch_to_tsquery('simple', $2)",
    )
    .bind(org)
    .bind(&word)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    println!(
        "{} tasks in {slug} ({tasks} in {orgs} organizations); searching \"{word}\" ({matches} tasks match); as a Member; {requests} requests each",
        tasks / orgs.max(1)
    );

    let page = |path: String| {
        let (http, cookie, url) = (http.clone(), cookie.clone(), app.url(&path));
        async move {
            let mut out = Vec::with_capacity(requests);
            for i in 0..requests + 5 {
                let t = Instant::now();
                let res = http.get(&url).header("cookie", &cookie).send().await.unwrap();
                assert_eq!(res.status(), 200, "{url}");
                res.bytes().await.unwrap();
                if i >= 5 {
                    out.push(t.elapsed());
                }
            }
            out
        }
    };
    let bare = |sql: String, binds: (Option<uuid::Uuid>, String, i64)| {
        let pool = pool.clone();
        async move {
            let mut out = Vec::with_capacity(requests);
            for i in 0..requests + 5 {
                let t = Instant::now();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT set_config('app.org_id', $1, true)")
                    .bind(org.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let rows =
                    sqlx::query(&sql).bind(binds.0).bind(&binds.1).bind(binds.2).fetch_all(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                std::hint::black_box(rows.len());
                if i >= 5 {
                    out.push(t.elapsed());
                }
            }
            out
        }
    };

    let search_page = page(format!("/o/{slug}/search?q={word}")).await;
    let search_sql = bare(clientflow::work::daily::task_search_sql(), (Some(member), word.clone(), 20)).await;
    report("search", 100.0, search_page, search_sql);

    let my_page = page(format!("/o/{slug}/my-work")).await;
    // The reference binds the member filter and the person as text-typed uuids.
    let my_sql = clientflow::work::daily::my_work_sql().replace("$2", "$2::uuid");
    let my_bare = bare(my_sql, (Some(member), member.to_string(), clientflow::work::daily::MY_WORK_CAP)).await;
    report("my work", 50.0, my_page, my_bare);

    // 1,000 notifications, each an event for one person, in one transaction.
    let op = access::operator(&app.app_db, &clientflow_test_support_operator(), OrgId::from_uuid(org), "bench")
        .await
        .unwrap()
        .unwrap();
    let people: Vec<UserId> = sqlx::query_scalar("SELECT user_id FROM memberships WHERE organization_id = $1")
        .bind(org)
        .fetch_all(&mut admin)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    let mut tx = OrgTx::begin(&app.app_db, &op).await.unwrap();
    for i in 0..1000 {
        let title = format!("Bench notification {i}");
        let n = notify::New { kind: notify::Kind::Assigned, actor: None, title: &title, body: "", link: "/o/bench" };
        notify::record(&mut tx, &[people[i % people.len()]], &n, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    let full = started.elapsed();
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await.unwrap();
    for i in 0..1000 {
        sqlx::query(
            "INSERT INTO notifications (organization_id, id, recipient_id, kind, title, link, created_at) \
             VALUES ($1, gen_random_uuid(), $2, 'assigned', $3, '/o/bench', now())",
        )
        .bind(org)
        .bind(people[i % people.len()])
        .bind(format!("Bench notification {i}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let reference = started.elapsed();
    println!(
        "notify 1,000 recorded in {:.0} ms | reference 1,000 bare INSERTs {:.0} ms | ratio {:.1}x | goal ≤ 1000 ms: {}",
        full.as_secs_f64() * 1000.0,
        reference.as_secs_f64() * 1000.0,
        full.as_secs_f64() / reference.as_secs_f64().max(0.000_001),
        if full <= Duration::from_secs(1) { "met" } else { "MISSED" }
    );
}

fn clientflow_test_support_operator() -> clientflow::access::OperatorAuthority {
    clientflow::access::OperatorAuthority::unsafe_assume_cli_operator()
}
