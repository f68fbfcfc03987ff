//! Outbox throughput to Resend's API (the local fake in `crates/test-support`) against posting
//! the same messages directly with the same HTTP client, measured in the same run and printed
//! as a ratio (the goal: at least 0.8), and what the suppression check adds per message.
//!
//! - direct: each message is composed and posted by the Resend transport itself, `c` at a time
//!   (no database at all);
//! - outbox: the same messages queued in the outbox (not timed), then `c` workers drain it:
//!   per message a transaction, the row lock (`FOR UPDATE SKIP LOCKED`), the suppression
//!   check, the same post, the update, the commit.
//!
//! The fake answers after a configurable latency: 0 ms shows the worker's own overhead at its
//! starkest; 20 ms is still faster than a real provider's API, where that overhead matters
//! less. The suppression check is timed alone against a list of 10,000 addresses (one indexed
//! lookup per message). Needs PostgreSQL like the tests. Run: `cargo bench --bench mail_outbox`.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::time::{Duration, Instant};

use clientflow::mail::category::Category;
use clientflow::mail::outbox::{self, Delivery, OutgoingMail, QueuedMail};
use clientflow::mail::suppression::{self, Reason};
use clientflow::platform::secret::Secret;
use clientflow_test_support::TestApp;
use clientflow_test_support::resend::FakeResend;

const KEY: &str = "re_bench";

fn message(i: usize, round: usize) -> OutgoingMail {
    OutgoingMail {
        to: format!("person{i}@example.com"),
        subject: format!("Message {i}"),
        body: format!("Hello {i}.\n\nYour report is ready: https://clientflow.example/r/{round}/{i}\n"),
        category: Category::Transactional,
        org_name: Some("Acme".into()),
    }
}

async fn queue(app: &TestApp, n: usize, round: usize) {
    let mut tx = app.app_db.global().await.expect("tx");
    for i in 0..n {
        outbox::enqueue(&mut tx, &message(i, round), &format!("bench:{round}:{i}"), app.clock.now_utc())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
}

/// Seconds to post `n` messages directly through the transport, `c` at a time.
async fn direct(delivery: &Delivery, app: &TestApp, n: usize, c: usize, round: usize) -> f64 {
    let now = app.clock.now_utc();
    let envelopes: Vec<_> = (0..n)
        .map(|i| {
            let m = message(i, round);
            let queued = QueuedMail {
                id: uuid::Uuid::now_v7(),
                idempotency_key: format!("direct:{round}:{i}"),
                category: m.category,
                recipient: m.to,
                subject: m.subject,
                body_text: m.body,
                org_name: m.org_name,
                created_at: now,
                attempts: 0,
            };
            outbox::compose(&queued, &delivery.links, now)
        })
        .collect();
    let chunks: Vec<Vec<_>> = (0..c).map(|k| envelopes.iter().skip(k).step_by(c).cloned().collect()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let transport = delivery.transport.clone();
            tokio::spawn(async move {
                for e in chunk {
                    transport.send(&e).await.expect("direct send");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed().as_secs_f64()
}

/// Seconds for `c` workers to drain `n` queued messages.
async fn through_outbox(delivery: &Delivery, app: &TestApp, n: usize, c: usize, round: usize) -> f64 {
    queue(app, n, round).await;
    let now = app.clock.now_utc();
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (db, d) = (app.app_db.clone(), delivery.clone());
            tokio::spawn(async move { outbox::deliver_due(&db, &d, now, usize::MAX).await.expect("deliver") })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("task");
    }
    assert_eq!(sent, n);
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let fake = FakeResend::start(KEY).await;
    let base = fake.base_url();
    let app = TestApp::builder()
        .pool_size(10)
        .config(move |c| {
            c.mail.transport = clientflow::mail::config::MailTransport::Resend;
            c.mail.resend_api_key = Some(Secret::new(KEY));
            c.mail.resend_base_url = base;
            c.mail.from = "ClientFlow <no-reply@clientflow.example>".into();
        })
        .spawn()
        .await;
    let delivery = app.mail_delivery();
    // A realistic list: the check is an index lookup among 10,000 suppressed addresses.
    let mut tx = app.app_db.global().await.expect("tx");
    for i in 0..10_000 {
        suppression::add(
            &mut tx,
            &format!("bounced{i}@example.net"),
            Reason::HardBounce,
            None,
            "bench",
            "bench",
            app.clock.now_utc(),
        )
        .await
        .expect("suppress");
    }
    tx.commit().await.expect("commit");

    println!("Outbox throughput to the Resend fake vs posting directly with the same HTTP client");
    println!(
        "{:>10} {:>8} {:>8} {:>14} {:>14} {:>7}",
        "latency", "workers", "messages", "direct msg/s", "outbox msg/s", "ratio"
    );
    let mut round = 0;
    for latency_ms in [0u64, 20] {
        fake.set_latency(Duration::from_millis(latency_ms));
        let n = if latency_ms == 0 { 1000 } else { 200 };
        for c in [1usize, 4] {
            // Warm up connections and caches, then take the best of three rounds each.
            round += 1;
            direct(&delivery, &app, 20, c, round).await;
            through_outbox(&delivery, &app, 20, c, round).await;
            let (mut best_direct, mut best_outbox) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..3 {
                round += 1;
                best_direct = best_direct.min(direct(&delivery, &app, n, c, round).await);
                round += 1;
                best_outbox = best_outbox.min(through_outbox(&delivery, &app, n, c, round).await);
            }
            let (d, o) = (n as f64 / best_direct, n as f64 / best_outbox);
            println!("{:>8}ms {c:>8} {n:>8} {d:>14.0} {o:>14.0} {:>7.2}", latency_ms, o / d);
        }
    }

    // The suppression check alone, in a transaction like the worker's, hits and misses mixed.
    let mut tx = app.app_db.global().await.expect("tx");
    let checks = 5000;
    let start = Instant::now();
    let mut suppressed = 0;
    for i in 0..checks {
        let address = if i % 10 == 0 { format!("bounced{i}@example.net") } else { format!("person{i}@example.com") };
        if suppression::blocking(&mut tx, &address, Category::Transactional).await.expect("check").is_some() {
            suppressed += 1;
        }
    }
    let per_check = start.elapsed().as_secs_f64() / checks as f64;
    tx.commit().await.expect("commit");
    assert_eq!(suppressed, checks / 10);
    // Against the per-message cost of the outbox at 0 ms latency with one worker.
    fake.set_latency(Duration::ZERO);
    round += 1;
    let n = 500;
    let per_message = through_outbox(&delivery, &app, n, 1, round).await / n as f64;
    println!(
        "Suppression check: {:.0} µs per message (10,000 suppressed addresses), {:.1}% of a message's {:.0} µs \
         through the outbox at 0 ms provider latency",
        per_check * 1e6,
        100.0 * per_check / per_message,
        per_message * 1e6
    );
}
