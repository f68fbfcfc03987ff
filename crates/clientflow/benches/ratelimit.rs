//! Rate-limit decision cost: what one `RateLimiter::check` costs on the in-process store and on
//! a real local `redis-server`, against a no-op with the same call shape (an awaited async fn
//! taking a policy and a key and returning a `Decision`) measured in the same run.
//!
//! Decisions are sequential (one caller), so the Redis figure is a loopback round trip plus
//! the script; the keys rotate over 1024 values and the limits are never reached, so every
//! decision takes the admitting path. Each figure is the best of several rounds, since the
//! machine may be busy. Run: `cargo bench --bench ratelimit`.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clientflow::abuse::ratelimit::{Decision, FailurePolicy, Policy, RateLimiter};
use clientflow::platform::clock::{SharedClock, SystemClock};
use clientflow_test_support::redis::{self as test_redis, RedisServer};

const KEYS: usize = 1024;
const ROUNDS: usize = 5;
const LOCAL_DECISIONS: usize = 200_000;
const REDIS_DECISIONS: usize = 10_000;

const SLIDING: Policy =
    Policy::sliding_window("bench-sw", 1_000_000_000, Duration::from_secs(60), FailurePolicy::DegradeToLocal);
const SLIDING_MIRRORED: Policy = Policy::sliding_window(
    "bench-sw-mirrored",
    1_000_000_000,
    Duration::from_secs(60),
    FailurePolicy::FailClosedToLocal,
);
const BUCKET: Policy = Policy::token_bucket("bench-tb", 1_000_000_000, 1e6, FailurePolicy::DegradeToLocal);

/// The reference: everything but the work.
#[inline(never)]
async fn noop(policy: &Policy, key: &str) -> Decision {
    black_box(key);
    Decision {
        allowed: true,
        limit: policy.limit,
        remaining: policy.limit,
        reset_after: Duration::ZERO,
        retry_after: None,
    }
}

/// Nanoseconds per evaluation of `$body` (which may `.await`), best of `ROUNDS`, after a
/// warm-up of a tenth of the iterations.
macro_rules! ns_per_decision {
    ($iterations:expr, |$i:ident| $body:expr) => {{
        let n: usize = $iterations;
        for $i in 0..n / 10 {
            black_box($body);
        }
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for $i in 0..n {
                black_box($body);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    }};
}

fn row(name: &str, ns: f64, baseline: f64) {
    println!("{name:<40} {ns:>12.1} ns {:>12.0}x", ns / baseline);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("198.51.100.{i}")).collect();
    let clock: SharedClock = Arc::new(SystemClock);

    let baseline = ns_per_decision!(LOCAL_DECISIONS, |i| noop(&SLIDING, &keys[i % KEYS]).await);
    // A no-op can measure as a fraction of a nanosecond; ratios against zero say nothing.
    let baseline = baseline.max(0.1);

    let local = RateLimiter::in_process(clock.clone());
    let local_sliding = ns_per_decision!(LOCAL_DECISIONS, |i| local.check(&SLIDING, &keys[i % KEYS]).await);
    let local_bucket = ns_per_decision!(LOCAL_DECISIONS, |i| local.check(&BUCKET, &keys[i % KEYS]).await);

    println!(
        "rate limiter: cost of one decision (best of {ROUNDS} rounds; {LOCAL_DECISIONS} \
         in-process, {REDIS_DECISIONS} Redis decisions per round)"
    );
    println!("{:<40} {:>15} {:>13}", "", "per decision", "vs no-op");
    row("no-op baseline", baseline, baseline);
    row("in-process, sliding window", local_sliding, baseline);
    row("in-process, token bucket", local_bucket, baseline);

    if !test_redis::available() {
        println!("redis-server not found: Redis rows skipped");
        return;
    }
    let server = RedisServer::start().await;
    let shared = match RateLimiter::with_redis(&server.url(), clock).await {
        Ok(limiter) => limiter,
        Err(e) => {
            println!("could not connect to the benchmark's redis-server ({e}): Redis rows skipped");
            return;
        }
    };
    let redis_sliding = ns_per_decision!(REDIS_DECISIONS, |i| shared.check(&SLIDING, &keys[i % KEYS]).await);
    let redis_mirrored = ns_per_decision!(REDIS_DECISIONS, |i| shared.check(&SLIDING_MIRRORED, &keys[i % KEYS]).await);
    let redis_bucket = ns_per_decision!(REDIS_DECISIONS, |i| shared.check(&BUCKET, &keys[i % KEYS]).await);
    row("redis, sliding window", redis_sliding, baseline);
    row("redis, sliding window, fail-closed mirror", redis_mirrored, baseline);
    row("redis, token bucket", redis_bucket, baseline);
    println!("redis / in-process (sliding window): {:.0}x", redis_sliding / local_sliding);
    if shared.is_degraded() {
        println!("warning: Redis failed during the run; its rows include in-process decisions");
    }
}
