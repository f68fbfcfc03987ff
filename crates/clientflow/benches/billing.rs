//! Billing's costs, measured against references in the same run:
//!
//! 1. Webhook throughput: signed `customer.subscription.updated` events (each a new id, each
//!    newer than the last) posted to `POST /webhooks/stripe` with 16 connections, signature
//!    verification, exactly-once bookkeeping, the state change and its audit event included;
//!    printed as events per second, beside the signature check alone (in process).
//! 2. The limit checks: `POST /api/v1/projects` with billing on (a plan whose limits are never
//!    reached, so every request pays for the check: the organization's billing lock, its
//!    account and the count) against the same route with billing off, printed as the mean
//!    per-request latency of both and their ratio.
//!
//! Run: `cargo bench --bench billing` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_EVENTS` (default 2000) and `BENCH_REQUESTS` (default 1000) change the size.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::sync::Arc;
use std::time::{Duration, Instant};

use clientflow::access::{self, NewOrgCreator, OperatorAuthority};
use clientflow::platform::secret::Secret;
use clientflow::platform::types::Slug;
use clientflow_test_support::TestApp;
use clientflow_test_support::stripe::{FakeStripe, event_json, signature_header};
use serde_json::json;

const SK: &str = "sk_test_bench";
const WHSEC: &str = "whsec_bench";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn app(billing: Option<&FakeStripe>) -> TestApp {
    let base = billing.map(|f| f.base_url());
    TestApp::builder()
        .config(move |c| {
            c.rate_limits.api_key.limit = 1_000_000;
            c.rate_limits.api_ip.limit = 1_000_000;
            if let Some(base) = base {
                let b = &mut c.billing;
                b.stripe_secret_key = Some(Secret::new(SK));
                b.stripe_base_url = base;
                b.webhook_secrets = vec![Secret::new(WHSEC)];
                for p in &mut b.plans {
                    p.price_id = (p.id != "free").then(|| format!("price_{}", p.id));
                    // Never reached: every request pays for the whole check.
                    (p.projects, p.seats, p.api_keys, p.storage_mb) =
                        (Some(i64::MAX / 2), Some(1000), Some(1000), Some(1 << 30));
                }
            }
        })
        .pool_size(32)
        .spawn()
        .await
}

/// An organization with an Owner and a Manager API key; returns (org id, key).
async fn org_with_key(app: &TestApp, slug: &str) -> (uuid::Uuid, String) {
    use clientflow::access::api_key::{self as keys, NewKey};
    let authority = OperatorAuthority::unsafe_assume_cli_operator();
    let mut tx =
        access::begin_new_organization(&app.app_db, NewOrgCreator::Operator(&authority, "bench")).await.unwrap();
    let org = clientflow::tenancy::repo::insert_organization(&mut tx, &Slug::parse(slug).unwrap(), slug).await.unwrap();
    tx.commit().await.unwrap();
    let org_id: uuid::Uuid = org.id.to_string().parse().unwrap();
    let owner = uuid::Uuid::now_v7();
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
        .bind(owner)
        .bind(format!("owner@{slug}.test"))
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org_id)
        .bind(owner)
        .execute(&mut db)
        .await
        .unwrap();
    let principal = access::operator(&app.app_db, &authority, org.id, "bench").await.unwrap().unwrap();
    let ctx = clientflow::audit::Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()));
    let input = NewKey { name: "bench".into(), role: "manager".into(), permissions: None, expires_in_days: None };
    let key =
        keys::create_for(&app.app_db, &ctx, &principal, owner.to_string().parse().unwrap(), &input).await.unwrap();
    (org_id, key.secret)
}

async fn webhooks(events: u64) {
    let fake = FakeStripe::start(SK).await;
    let app = app(Some(&fake)).await;
    let (org_id, _) = org_with_key(&app, "hooks").await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO billing_accounts (organization_id, plan, stripe_customer_id, updated_at) VALUES ($1, 'free', 'cus_bench', now())")
        .bind(org_id)
        .execute(&mut db)
        .await
        .unwrap();
    let now = app.clock.now_utc().unix_timestamp();
    let bodies: Vec<Vec<u8>> = (0..events)
        .map(|i| {
            let sub = json!({ "id": "sub_bench", "object": "subscription", "customer": "cus_bench",
                "status": if i % 2 == 0 { "active" } else { "past_due" }, "current_period_end": now + 86400,
                "items": { "data": [ { "price": { "id": "price_pro" } } ] } });
            serde_json::to_vec(&event_json(
                &format!("evt_bench{i:08}"),
                "customer.subscription.updated",
                now - 200 + (i as i64 / 20),
                sub,
            ))
            .unwrap()
        })
        .collect();
    // The signature check alone, in process.
    let secrets = [WHSEC];
    let signed: Vec<(String, &Vec<u8>)> = bodies.iter().map(|b| (signature_header(&secrets, now, b), b)).collect();
    let at = app.clock.now_utc();
    let t = Instant::now();
    for (sig, body) in &signed {
        clientflow::billing::webhook::verify(&secrets, Some(sig), body, at).unwrap();
    }
    let verify_rate = signed.len() as f64 / t.elapsed().as_secs_f64();
    let work = Arc::new(std::sync::Mutex::new(signed.into_iter().map(|(s, b)| (s, b.clone())).collect::<Vec<_>>()));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (work, client, url) = (work.clone(), app.client.clone(), app.url("/webhooks/stripe"));
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((sig, body)) = work.lock().unwrap().pop() else { break };
                let res = client.post(&url).header("stripe-signature", sig).body(body).send().await.unwrap();
                assert_eq!(res.status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&mut db).await.unwrap();
    assert_eq!(applied as u64, events);
    println!(
        "webhooks: {events} signed events in {:.2}s = {:.0} events/s over HTTP (verified, applied once, audited); \
         signature check alone: {:.0}/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        verify_rate
    );
}

async fn create_projects(app: &TestApp, key: &str, n: u64) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        let res = app
            .client
            .post(app.url("/api/v1/projects"))
            .bearer_auth(key)
            .json(&json!({ "name": format!("Project {i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    }
    t.elapsed() / n as u32
}

async fn limit_checks(requests: u64) {
    let off = app(None).await;
    let (_, off_key) = org_with_key(&off, "off").await;
    let fake = FakeStripe::start(SK).await;
    let on = app(Some(&fake)).await;
    let (_, on_key) = org_with_key(&on, "on").await;
    // Warm both, then alternate rounds so that neither gets a warmer machine.
    create_projects(&off, &off_key, 50).await;
    create_projects(&on, &on_key, 50).await;
    let (mut t_off, mut t_on) = (Duration::ZERO, Duration::ZERO);
    let rounds = 4;
    for _ in 0..rounds {
        t_off += create_projects(&off, &off_key, requests / rounds).await;
        t_on += create_projects(&on, &on_key, requests / rounds).await;
    }
    let (off_ms, on_ms) = (t_off.as_secs_f64() * 1000.0 / rounds as f64, t_on.as_secs_f64() * 1000.0 / rounds as f64);
    println!(
        "limit checks on POST /api/v1/projects ({requests} requests each): billing off {off_ms:.3} ms/request, \
         billing on {on_ms:.3} ms/request; ratio on/off {:.3} (+{:.3} ms per request)",
        on_ms / off_ms,
        on_ms - off_ms
    );
}

#[tokio::main]
async fn main() {
    Box::pin(webhooks(env_num("BENCH_EVENTS", 2000))).await;
    Box::pin(limit_checks(env_num("BENCH_REQUESTS", 1000))).await;
}
