//! Sign-in storm: how much a flood of password attempts slows a cheap authenticated request.
//!
//! Measures the latency of `GET /app` (session lookup + organization list) for a signed-in
//! user, first on an idle server, then while many clients hammer `POST /login` with wrong
//! passwords for distinct accounts (each attempt costs a full argon2id verification). Prints
//! both distributions and their ratio. Run: `cargo bench --bench signin_storm`.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};

const SAMPLES: usize = 300;
const STORM_CLIENTS: usize = 48;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn measure(b: &mut Browser) -> Vec<Duration> {
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let res = b.get("/app").await;
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
        out.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.sort();
    out
}

fn summary(name: &str, d: &[Duration]) {
    println!(
        "{name:<28} p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms",
        percentile(d, 0.5).as_secs_f64() * 1e3,
        percentile(d, 0.95).as_secs_f64() * 1e3,
        percentile(d, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let app = TestApp::builder().system_clock().spawn().await;
    // A signed-in user.
    let mut user = app.browser();
    user.submit("/signup", "/signup", &[("email", "bench@example.com"), ("password", "correct horse battery staple")])
        .await;
    let link = app.link_in_mail("bench@example.com", "/verify-email?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = user.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(location(&res), "/app");

    // Warm up, then the reference run.
    let _ = measure(&mut user).await;
    let idle = measure(&mut user).await;

    // The storm.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let refused_busy = Arc::new(AtomicU64::new(0));
    let mut storm = Vec::new();
    for i in 0..STORM_CLIENTS {
        let mut b = app.browser();
        let stop = stop.clone();
        let attempts = attempts.clone();
        let busy = refused_busy.clone();
        storm.push(tokio::spawn(async move {
            b.page("/login").await;
            let token = b.token();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let email = format!("victim{i}-{n}@example.com");
                let res = b
                    .post_with("/login", &[("email", &email), ("password", "wrong password guess")], Some(&token), true)
                    .await;
                if res.status() == 503 {
                    busy.fetch_add(1, Ordering::Relaxed);
                }
                attempts.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let before = attempts.load(Ordering::Relaxed);
    let loaded = measure(&mut user).await;
    let elapsed = started.elapsed();
    let during = attempts.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        let _ = t.await;
    }

    println!();
    println!("sign-in storm: {STORM_CLIENTS} clients posting wrong passwords for distinct accounts");
    println!(
        "storm throughput: {:.1} attempts/s ({} answered 503 busy)",
        during as f64 / elapsed.as_secs_f64(),
        refused_busy.load(Ordering::Relaxed)
    );
    summary("GET /app, idle server", &idle);
    summary("GET /app, during the storm", &loaded);
    println!(
        "ratio (storm / idle): p50 {:.2}x   p95 {:.2}x",
        percentile(&loaded, 0.5).as_secs_f64() / percentile(&idle, 0.5).as_secs_f64(),
        percentile(&loaded, 0.95).as_secs_f64() / percentile(&idle, 0.95).as_secs_f64()
    );
}
