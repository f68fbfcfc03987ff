//! The rate limiter: one suite run against both backends (in-process, and a real
//! `redis-server` per test), exact counts at window edges with a manual clock; then what only
//! Redis has: decision-for-decision agreement with the in-process store, one budget shared by
//! two processes, and Redis dying and coming back.

use std::sync::Arc;
use std::time::Duration;

use clientflow::abuse::ratelimit::{Decision, FailurePolicy, Policy, REDIS_KEY_PREFIX, RateLimitConfig, RateLimiter};
use clientflow::platform::clock::{ManualClock, SharedClock};
use clientflow_test_support::redis::RedisServer;
use time::macros::datetime;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Backend {
    InProcess,
    Redis,
}

struct Fixture {
    limiter: RateLimiter,
    clock: ManualClock,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn check(&self, policy: &Policy, key: &str) -> Decision {
        self.limiter.check(policy, key).await
    }

    fn advance_ms(&self, ms: i64) {
        self.clock.advance(time::Duration::milliseconds(ms));
    }

    async fn admitted(&self, policy: &Policy, key: &str, attempts: usize) -> usize {
        admitted(&self.limiter, policy, key, attempts).await
    }
}

/// How many of `attempts` requests are admitted.
async fn admitted(limiter: &RateLimiter, policy: &Policy, key: &str, attempts: usize) -> usize {
    let mut n = 0;
    for _ in 0..attempts {
        n += usize::from(limiter.check(policy, key).await.allowed);
    }
    n
}

fn manual_clock() -> ManualClock {
    // Midnight, so the clock starts on a window boundary for every window used here.
    ManualClock::new(datetime!(2026-01-01 00:00 UTC))
}

/// Generous timeouts: a slow, busy test machine must not look like a Redis outage, which
/// would silently move decisions to the in-process store. Probing on every decision makes
/// recovery observable without waiting.
fn test_config() -> RateLimitConfig {
    RateLimitConfig { redis_timeout_ms: 5000, redis_retry_ms: 0, redis_connect_timeout_ms: 10_000 }
}

async fn redis_limiter(server: &RedisServer, clock: &ManualClock) -> RateLimiter {
    let clock: SharedClock = Arc::new(clock.clone());
    RateLimiter::with_redis_config(&server.url(), clock, &test_config()).await.expect("connects to the test Redis")
}

async fn fixture(backend: Backend) -> Fixture {
    let clock = manual_clock();
    match backend {
        Backend::InProcess => {
            Fixture { limiter: RateLimiter::in_process(Arc::new(clock.clone())), clock, _redis: None }
        }
        Backend::Redis => {
            let server = RedisServer::start().await;
            let limiter = redis_limiter(&server, &clock).await;
            assert_eq!(limiter.backend_name(), "redis");
            Fixture { limiter, clock, _redis: Some(server) }
        }
    }
}

fn per_minute(name: &'static str, limit: u64) -> Policy {
    Policy::sliding_window(name, limit, MINUTE, FailurePolicy::FailClosedToLocal)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs each listed test once per backend: `ratelimit::in_process::NAME` and
/// `ratelimit::on_redis::NAME`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::InProcess).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::Redis).await;
                }
            )*
        }
    };
}

on_both_backends!(
    admits_exactly_the_limit_in_a_window,
    carries_over_the_weighted_previous_window,
    resets_fully_after_two_windows,
    denials_are_not_counted,
    keys_and_policies_are_independent,
    token_bucket_bursts_then_refills_at_its_rate,
);

async fn admits_exactly_the_limit_in_a_window(backend: Backend) {
    let f = fixture(backend).await;
    let policy = per_minute("edges", 10);
    for n in 0..10 {
        let d = f.check(&policy, "k").await;
        assert!(d.allowed, "request {n}");
        assert_eq!(d.limit, 10);
        assert_eq!(d.remaining, 9 - n);
        assert_eq!(d.reset_after, MINUTE);
        assert_eq!(d.retry_after, None);
    }
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    // All 10 are still fully weighted at 60.000 s; at 60.001 s floor(10 × 59999/60000) = 9.
    assert_eq!(d.retry_after, Some(ms(60_001)));

    // The last millisecond of window 0, the first of window 1: still closed.
    f.advance_ms(59_999);
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.reset_after, ms(1));
    assert_eq!(d.retry_after, Some(ms(2)));
    f.advance_ms(1);
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(ms(1)));

    // Exactly when it said: one request, then closed again.
    f.advance_ms(1);
    let d = f.check(&policy, "k").await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    assert!(!f.check(&policy, "k").await.allowed);
}

async fn carries_over_the_weighted_previous_window(backend: Backend) {
    let f = fixture(backend).await;
    let policy = per_minute("carry", 10);
    assert_eq!(f.admitted(&policy, "k", 10).await, 10);

    // 30 s into window 1, half of window 0 is still inside the sliding window: 5 of 10 left.
    f.advance_ms(90_000);
    for remaining in (0..5).rev() {
        let d = f.check(&policy, "k").await;
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
        assert_eq!(d.reset_after, ms(30_000));
    }
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    // floor(10 × 29999/60000) = 4, and 4 + 5 < 10.
    assert_eq!(d.retry_after, Some(ms(1)));
    f.advance_ms(1);
    assert!(f.check(&policy, "k").await.allowed);
    assert!(!f.check(&policy, "k").await.allowed);
}

async fn resets_fully_after_two_windows(backend: Backend) {
    let f = fixture(backend).await;
    let policy = per_minute("reset", 10);
    assert_eq!(f.admitted(&policy, "k", 10).await, 10);
    // The start of window 1: the previous window weighs in full.
    f.advance_ms(60_000);
    assert_eq!(f.admitted(&policy, "k", 3).await, 0);
    // Window 2: window 0 no longer counts and window 1 admitted nothing.
    f.advance_ms(60_000);
    for remaining in (0..10).rev() {
        let d = f.check(&policy, "k").await;
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
    }
    assert!(!f.check(&policy, "k").await.allowed);
}

async fn denials_are_not_counted(backend: Backend) {
    let f = fixture(backend).await;
    let policy = per_minute("hammer", 10);
    assert_eq!(f.admitted(&policy, "k", 100).await, 10);
    f.advance_ms(90_000);
    assert_eq!(f.admitted(&policy, "k", 100).await, 5);
}

async fn keys_and_policies_are_independent(backend: Backend) {
    let f = fixture(backend).await;
    let by_ip = per_minute("by-ip", 3);
    let by_email = per_minute("by-email", 3);
    assert_eq!(f.admitted(&by_ip, "203.0.113.7", 5).await, 3);
    assert_eq!(f.admitted(&by_ip, "203.0.113.8", 5).await, 3);
    assert_eq!(f.admitted(&by_email, "203.0.113.7", 5).await, 3);
    let bucket = Policy::token_bucket("by-ip", 3, 1.0, FailurePolicy::DegradeToLocal);
    assert_eq!(f.admitted(&bucket, "203.0.113.7", 5).await, 3);
}

async fn token_bucket_bursts_then_refills_at_its_rate(backend: Backend) {
    let f = fixture(backend).await;
    let policy = Policy::token_bucket("burst", 5, 1.0, FailurePolicy::FailClosedToLocal);
    for remaining in (0..5).rev() {
        let d = f.check(&policy, "k").await;
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
    }
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(ms(1000)));
    assert_eq!(d.reset_after, ms(5000));

    // One token per second, not a millisecond early.
    f.advance_ms(999);
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(ms(1)));
    f.advance_ms(1);
    assert!(f.check(&policy, "k").await.allowed);
    assert!(!f.check(&policy, "k").await.allowed);

    // 2.5 s refill 2.5 tokens: two requests, then half a token is 500 ms short of the next.
    f.advance_ms(2500);
    assert_eq!(f.admitted(&policy, "k", 2).await, 2);
    let d = f.check(&policy, "k").await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(ms(500)));

    // However long the pause, the burst is the capacity.
    f.advance_ms(3_600_000);
    assert_eq!(f.admitted(&policy, "k", 10).await, 5);

    // A slower bucket: 0.5 tokens a second, so two seconds a token.
    let slow = Policy::token_bucket("slow", 2, 0.5, FailurePolicy::DegradeToLocal);
    assert_eq!(f.admitted(&slow, "k", 3).await, 2);
    let d = f.check(&slow, "k").await;
    assert_eq!(d.retry_after, Some(ms(2000)));
    f.advance_ms(2000);
    assert_eq!(f.admitted(&slow, "k", 3).await, 1);
}

/// The same pseudo-random workload on both backends with one clock: every decision equal,
/// field for field.
#[tokio::test]
async fn backends_agree_decision_for_decision() {
    let clock = manual_clock();
    let server = RedisServer::start().await;
    let shared = redis_limiter(&server, &clock).await;
    let local = RateLimiter::in_process(Arc::new(clock.clone()));
    let policies = [
        Policy::sliding_window("a", 7, Duration::from_secs(10), FailurePolicy::DegradeToLocal),
        Policy::sliding_window("b", 3, Duration::from_secs(1), FailurePolicy::FailClosedToLocal),
        Policy::token_bucket("c", 4, 1.5, FailurePolicy::DegradeToLocal),
        Policy::token_bucket("d", 2, 0.3, FailurePolicy::FailClosedToLocal),
    ];
    let keys = ["x", "y"];
    // A fixed linear congruential generator: the same workload on every run.
    let mut seed: u64 = 0x5eed;
    let mut next = move |bound: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    let mut allowed = 0;
    for step in 0..2000 {
        // Mostly bursts, sometimes pauses across window edges and refills.
        let pause = match next(20) {
            0..=15 => next(5),
            16..=18 => next(1500),
            _ => next(25_000),
        };
        clock.advance(time::Duration::milliseconds(pause as i64));
        let policy = &policies[next(policies.len() as u64) as usize];
        let key = keys[next(keys.len() as u64) as usize];
        let on_redis = shared.check(policy, key).await;
        let in_process = local.check(policy, key).await;
        assert_eq!(on_redis, in_process, "step {step}: {} {key}", policy.name);
        allowed += usize::from(on_redis.allowed);
    }
    assert!(!shared.is_degraded());
    // The workload exercised both outcomes (about 1700 admitted, 300 denied).
    assert!(allowed > 200 && allowed < 1800, "{allowed} allowed");
}

#[tokio::test]
async fn two_processes_share_one_budget() {
    let clock = manual_clock();
    let server = RedisServer::start().await;
    let first = redis_limiter(&server, &clock).await;
    let second = redis_limiter(&server, &clock).await;
    let policy = per_minute("shared", 10);
    let bucket = Policy::token_bucket("shared-bucket", 5, 1.0, FailurePolicy::DegradeToLocal);

    let mut admitted = [0, 0];
    for i in 0..30 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        if limiter.check(&policy, "k").await.allowed {
            admitted[i % 2] += 1;
        }
    }
    assert_eq!(admitted, [5, 5], "one budget of 10, taken in turns");

    clock.advance(time::Duration::seconds(90));
    let mut total = 0;
    for i in 0..30 {
        let limiter = if i % 3 == 0 { &first } else { &second };
        total += usize::from(limiter.check(&policy, "k").await.allowed);
    }
    assert_eq!(total, 5, "half of the previous window still counts, for both");

    let mut total = 0;
    for i in 0..20 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        total += usize::from(limiter.check(&bucket, "k").await.allowed);
    }
    assert_eq!(total, 5);
    assert!(!first.is_degraded() && !second.is_degraded());
}

/// Waits until a decision has gone through Redis again.
async fn until_recovered(limiter: &RateLimiter, probe: &Policy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while limiter.is_degraded() {
        assert!(std::time::Instant::now() < deadline, "still degraded after Redis came back");
        limiter.check(probe, "probe").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_dying_keeps_auth_limits_closed() {
    let clock = manual_clock();
    let mut server = RedisServer::start().await;
    let port = server.port();
    let limiter = redis_limiter(&server, &clock).await;
    let policy = per_minute("auth", 10);
    let probe = per_minute("probe", 1_000_000);

    assert_eq!(limiter.check(&policy, "victim").await.remaining, 9);
    assert_eq!(admitted(&limiter, &policy, "victim", 20).await, 9);
    assert!(!limiter.is_degraded());

    server.kill();
    // The in-process store continues from the counts Redis last reported.
    for _ in 0..5 {
        let d = limiter.check(&policy, "victim").await;
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(ms(60_001)));
    }
    assert!(limiter.is_degraded());
    assert_eq!(limiter.backend_name(), "redis");

    // Still limiting, now purely in process: a later window has its own 10, no more.
    clock.advance(time::Duration::seconds(120));
    assert_eq!(admitted(&limiter, &policy, "victim", 20).await, 10);
    assert!(limiter.is_degraded());

    // A fresh, empty Redis on the same port: decisions go back to it...
    let revived = RedisServer::start_on(port).await;
    until_recovered(&limiter, &probe).await;
    // ...and what was counted during the outage came along, so the restart reset nothing.
    assert!(!limiter.check(&policy, "victim").await.allowed);
    assert!(!limiter.is_degraded());
    let other_process = redis_limiter(&revived, &clock).await;
    assert!(!other_process.check(&policy, "victim").await.allowed, "the carried-over count is in Redis itself");
    assert_eq!(admitted(&other_process, &policy, "someone-else", 20).await, 10);
}

#[tokio::test]
async fn redis_dying_degrades_general_limits_to_per_process_budgets() {
    let clock = manual_clock();
    let mut server = RedisServer::start().await;
    let limiter = redis_limiter(&server, &clock).await;
    let policy = Policy::sliding_window("api", 10, MINUTE, FailurePolicy::DegradeToLocal);
    assert_eq!(admitted(&limiter, &policy, "org", 20).await, 10);

    server.kill();
    // Nothing was mirrored: this process starts a budget of its own, and keeps to it.
    assert_eq!(admitted(&limiter, &policy, "org", 20).await, 10);
    assert!(limiter.is_degraded());
}

#[tokio::test]
async fn token_buckets_survive_redis_dying_when_failing_closed() {
    let clock = manual_clock();
    let mut server = RedisServer::start().await;
    let limiter = redis_limiter(&server, &clock).await;
    let policy = Policy::token_bucket("second-factor", 5, 0.1, FailurePolicy::FailClosedToLocal);
    assert_eq!(admitted(&limiter, &policy, "user", 10).await, 5);
    server.kill();
    let d = limiter.check(&policy, "user").await;
    assert!(!d.allowed);
    assert!(limiter.is_degraded());
    assert_eq!(d.retry_after, Some(ms(10_000)));
}

#[tokio::test]
async fn redis_keys_are_hashed_and_prefixed() {
    let clock = manual_clock();
    let server = RedisServer::start().await;
    let limiter = redis_limiter(&server, &clock).await;
    let secret = format!("someone@example.com{}", "x".repeat(10_000));
    limiter.check(&per_minute("login", 5), &secret).await;
    limiter.check(&Policy::token_bucket("login-burst", 5, 1.0, FailurePolicy::DegradeToLocal), &secret).await;

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        assert!(key.starts_with(REDIS_KEY_PREFIX), "{key}");
        assert!(key.len() < 80, "{key}");
        assert!(!key.contains("example"), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{key} has no expiry");
    }
}

#[tokio::test]
async fn no_redis_at_start_is_an_error() {
    let mut server = RedisServer::start().await;
    let url = server.url();
    server.kill();
    let clock: SharedClock = Arc::new(manual_clock());
    let config = RateLimitConfig { redis_connect_timeout_ms: 2000, ..test_config() };
    let err = RateLimiter::with_redis_config(&url, clock, &config).await.expect_err("nothing listens there");
    assert!(err.contains("Redis"), "{err}");
}
