//! Routing cost of data residency: an organization's page (`GET /o/{org}/projects` as its
//! Owner) on an installation with one region, against the same page on an installation with
//! two regions, for an organization in the default region (the directory's entry comes with the
//! session, same statement) and for one in the second region (then the request continues in
//! that region's database). Prints requests per second of each and the ratios against one
//! region, measured in the same run, the installations taking turns.
//!
//! Then the transactions each database counted per request (`pg_stat_database`: committed and
//! rolled back, an autocommit statement counting as one committed transaction), over
//! `BENCH_SEQUENTIAL` sequential requests of each page.
//!
//! Run: `cargo bench --bench regions` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_SECONDS`, `BENCH_CONCURRENCY`, `BENCH_ROUNDS`, `BENCH_SEQUENTIAL` change the size
//! (`BENCH_SEQUENTIAL=0` skips the transaction count, which waits a minute for the statistics).

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

#[path = "common/mod.rs"]
mod common;

use clientflow::access::role::Role;
use clientflow::access::{self, NewOrgCreator, OperatorAuthority};
use clientflow::platform::db::RegionId;
use clientflow::platform::types::Slug;
use clientflow_test_support::{TestApp, TestDb};
use common::{Run, env_num, load};

/// An Owner's signed-in page of a new organization in `region`: (url, cookie header).
async fn owner_page(app: &TestApp, region: &str, slug: &str) -> (String, Vec<(String, String)>) {
    let region = RegionId::parse(region).expect("a region");
    let user = uuid::Uuid::now_v7();
    let mut admin = app.db.admin_conn().await;
    sqlx::query("INSERT INTO users (id, email, display_name) VALUES ($1, $2, 'Bench Owner')")
        .bind(user)
        .bind(format!("owner@{slug}.bench"))
        .execute(&mut admin)
        .await
        .expect("user");
    let db = app.app_db.in_region(region).expect("a configured region");
    let authority = OperatorAuthority::unsafe_assume_cli_operator();
    let user_id: clientflow::platform::ids::UserId = user.to_string().parse().expect("an id");
    access::directory::project_user(&app.app_db, region, user_id).await.expect("projection");
    let mut tx = access::begin_new_organization(&db, NewOrgCreator::Operator(&authority, "bench")).await.expect("tx");
    if !tx.in_directory_region() {
        access::directory::reserve(&app.app_db, tx.org_id(), slug, region).await.expect("directory");
    }
    clientflow::tenancy::repo::insert_organization(&mut tx, &Slug::parse(slug).expect("slug"), slug)
        .await
        .expect("organization");
    clientflow::tenancy::repo::add_member(&mut tx, user_id, Role::Owner).await.expect("owner");
    tx.commit().await.expect("commit");
    // The session after the membership (which moves the user's privilege epoch): a session
    // behind its epoch would be rotated by the first request.
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
    (app.url(&format!("/o/{slug}/projects")), vec![("cookie".to_string(), format!("__Host-cf_session={token}"))])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = env_num("BENCH_SECONDS", 4) as f64;
    let concurrency = env_num("BENCH_CONCURRENCY", 8) as usize;
    let rounds = env_num("BENCH_ROUNDS", 3);

    let one = TestApp::builder().system_clock().pool_size(20).spawn().await;
    let two = TestApp::builder().system_clock().pool_size(20).region("eu").spawn().await;
    let pages = [
        ("one region", &one, owner_page(&one, "us", "solo").await),
        ("two regions, organization in us", &two, owner_page(&two, "us", "home").await),
        ("two regions, organization in eu", &two, owner_page(&two, "eu", "abroad").await),
    ];
    let mut best: Vec<Option<Run>> = vec![None, None, None];
    // Warm-up: every pool and cache filled before anything is timed.
    for (_, app, (url, headers)) in &pages {
        let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
        load(&client, url, headers, concurrency, 1.0).await;
    }
    for round in 0..rounds {
        // Each round starts with another installation, so none is always measured first.
        for k in 0..pages.len() {
            let i = (k + round as usize) % pages.len();
            let (_, app, (url, headers)) = &pages[i];
            let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
            let run = load(&client, url, headers, concurrency, seconds).await;
            if best[i].as_ref().is_none_or(|b| run.rps() > b.rps()) {
                best[i] = Some(run);
            }
        }
    }
    let runs: Vec<Run> = best.into_iter().map(|r| r.expect("a run")).collect();
    for ((name, _, _), run) in pages.iter().zip(&runs) {
        run.print(&format!("GET /o/{{org}}/projects, {name}"));
    }
    let base = runs[0].rps();
    println!(
        "ratio two regions / one region: organization in the default region {:.3}, in the second region {:.3} \
         (best of {rounds} rounds of {seconds} s, {concurrency} clients)",
        runs[1].rps() / base,
        runs[2].rps() / base
    );

    let sequential = env_num("BENCH_SEQUENTIAL", 200);
    if sequential == 0 {
        return;
    }
    // Every database of both installations, counted together after each page's requests.
    let dbs: [(&str, &TestDb); 3] =
        [("one region", &one.db), ("two regions, us", two.region_db("us")), ("two regions, eu", two.region_db("eu"))];
    let first = transactions(&dbs).await;
    let second = transactions(&dbs).await;
    // What reading the counts costs each database, taken off every measurement.
    let overhead: Vec<(i64, i64)> = first.iter().zip(&second).map(|(a, b)| (b.0 - a.0, b.1 - a.1)).collect();
    let mut before = second;
    for (name, app, (url, headers)) in &pages {
        let client = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().expect("client");
        for _ in 0..sequential {
            let mut req = client.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            assert_eq!(req.send().await.expect("request").status(), 200);
        }
        let after = transactions(&dbs).await;
        let mut parts = Vec::new();
        for (i, (db_name, _)) in dbs.iter().enumerate() {
            let committed = after[i].0 - before[i].0 - overhead[i].0;
            let rolled_back = after[i].1 - before[i].1 - overhead[i].1;
            if committed != 0 || rolled_back != 0 {
                parts.push(format!(
                    "{db_name}: {:.2} committed, {:.2} rolled back",
                    committed as f64 / sequential as f64,
                    rolled_back as f64 / sequential as f64
                ));
            }
        }
        println!("GET /o/{{org}}/projects, {name}: transactions per request: {}", parts.join("; "));
        before = after;
    }
}

/// Transactions each database has committed and rolled back so far (`pg_stat_database`). A
/// PostgreSQL backend reports its statistics once it has been idle for ten seconds, so this
/// waits that long first.
async fn transactions(dbs: &[(&str, &TestDb)]) -> Vec<(i64, i64)> {
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let mut out = Vec::new();
    for (_, db) in dbs {
        let mut admin = db.admin_conn().await;
        sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut admin).await.expect("flush");
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_database");
        out.push(counts);
    }
    out
}
