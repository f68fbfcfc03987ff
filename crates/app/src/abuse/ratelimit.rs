//! Rate limiting: a sliding window for "at most N per period" and a token bucket for bursty
//! traffic, decided either in this process or in Redis with the same arithmetic.
//!
//! # Sliding window (the two-bucket approximation of Upstash's `slidingWindow`)
//!
//! Time is cut into fixed windows of `W` milliseconds aligned on the Unix epoch. With `now` the
//! injected clock in milliseconds:
//!
//! ```text
//! i        = floor(now / W)                 the current fixed window
//! e        = now mod W                      milliseconds elapsed in it
//! c        = requests admitted in window i
//! p        = requests admitted in window i - 1
//! weighted = floor(p * (W - e) / W)         p scaled by the share of window i - 1 that the
//!                                           sliding window [now - W, now) still covers
//! admit   <=> limit > 0 and weighted + c < limit      (then c := c + 1)
//! ```
//!
//! A denied request is not counted (as in Upstash), so hammering a closed limit does not
//! extend it. `weighted` is computed in exact integer arithmetic (Rust `u128`; in Lua the
//! product stays below 2^53, see [`Policy::limit`]). Upstash computes
//! `math.floor((1 - e / W) * p)` in doubles, which at a few exact boundaries lands just below an
//! integer (`(1 - 0.7) * 10 = 2.9999999999999996`) and then admits one more; the exact floor
//! is the intended value, so both of our backends use it and agree bit for bit.
//!
//! Example, 10 per 60 s: 10 requests in window 0; 30 s into window 1 `weighted =
//! floor(10 * 30 / 60) = 5`, so exactly 5 more are admitted; at 120 s nothing of window 0 is
//! left and all 10 are available again.
//!
//! The [`Decision`] reports `remaining = limit - (weighted + c)` after this request (0 when
//! denied), `reset_after = W - e` (the end of the current fixed window, Upstash's `reset`), and
//! for a denied request `retry_after`, the first millisecond at which the same formula would
//! admit one request if nothing else arrives:
//!
//! ```text
//! c < limit:  e* = W - floor(((limit - c) * W - 1) / p);  retry_after = e* - e
//! c >= limit: window i can't admit; in window i + 1, c becomes the previous count:
//!             e* = W - floor((limit * W - 1) / c);      retry_after = (W - e) + e*
//! ```
//!
//! # Token bucket
//!
//! A bucket holds up to `limit` tokens and starts full; it refills continuously at
//! `refill_per_second` (`tokens := min(limit, tokens + elapsed_ms * rate / 1000)`, in `f64`
//! with the same operations in Rust and Lua, stored in Redis with 17 significant digits so the
//! value survives the round trip exactly). A request takes one token when at least one is
//! there. `remaining = floor(tokens)`, `reset_after` is the time until the bucket is full again
//! and `retry_after` the time until one whole token is back, both rounded up to the
//! millisecond.
//!
//! # Backends and failure
//!
//! [`RateLimiter::in_process`] keeps state in a sharded `Mutex<HashMap>`; entries carry the
//! instant from which they are indistinguishable from an absent key (two windows after theirs,
//! or a bucket full again) and each shard drops such entries whenever it has doubled in size
//! since its last sweep, so memory stays proportional to the keys active in the last two
//! windows.
//!
//! [`RateLimiter::with_redis`] runs one Lua script per decision (`EVALSHA`, and on `NOSCRIPT`
//! `SCRIPT LOAD` and again, as [`redis::ScriptInvocation::invoke_async`] does) through a
//! [`ConnectionManager`]. The current time is an argument taken from the injected clock, so
//! tests move it and several processes sharing one Redis enforce one budget. Redis TTLs only
//! reclaim memory: they are measured on Redis's own clock and are set a second past the point
//! where the key would read as absent anyway.
//!
//! A decision never fails. If Redis errors or does not answer within
//! [`RateLimitConfig::redis_timeout_ms`], the in-process store decides, [`RateLimiter::is_degraded`]
//! turns true and one warning is logged (another when Redis answers again). While degraded, at
//! most one decision per [`RateLimitConfig::redis_retry_ms`] tries Redis again (the others go
//! straight to the in-process store, so an outage costs no latency); the first one that succeeds
//! puts every decision back on Redis. A decision that timed out may still have been counted by
//! Redis: that errs on the strict side.
//!
//! What happens to the budget across a failure depends on the policy's [`FailurePolicy`]:
//! `FailClosedToLocal` policies mirror every Redis answer into the in-process store and send the
//! mirrored state to Redis as a floor (Redis keeps the larger count, or the fewer tokens), so for
//! every key this process has seen neither an outage nor an empty Redis after a restart hands
//! out a fresh budget. With several processes each mirror holds what its own requests were
//! told, so an outage can still give a key up to one budget per process, never more.
//! `DegradeToLocal` policies start from an empty in-process store when Redis fails
//! (per-process budgets, acceptable for general API traffic) and cost nothing extra while Redis
//! is healthy.
//!
//! # Keys
//!
//! Callers pass anything (an IP, an email digest); it is hashed with SHA-256 together with the
//! algorithm, policy name and window, and the first 128 bits name the state in both stores:
//! `cf:rl:<policy>:<32 hex digits>` in Redis (sliding windows append `:<window index>`).
//!
//! # Headers
//!
//! [`headers`] renders `RateLimit-Policy` and `RateLimit` in the Structured Field syntax of
//! draft-ietf-httpapi-ratelimit-headers-11 (23 May 2026), plus `Retry-After` on a denial.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::platform::clock::{Clock, SharedClock};
use crate::platform::crypto::sha256;

/// Prefix of every Redis key this module writes.
pub const REDIS_KEY_PREFIX: &str = "cf:rl:";

/// Windows are capped at 31 days so that `count * window_ms` stays an exact integer in Lua's
/// doubles for any realistic limit (below 2^53 / 2.7e9 ms, about 3.3 million).
const MAX_WINDOW_MS: u64 = 31 * 24 * 60 * 60 * 1000;

/// Redis TTLs (and the in-process expiry of token buckets) run this long past the instant a key
/// would read as absent, so a key never vanishes while its state could still matter, even when
/// Redis's clock and the application's disagree a little.
const EXPIRY_SLACK_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// At most `limit` per `window`, two-bucket sliding window (see the module docs).
    SlidingWindow,
    /// A bucket of `limit` tokens refilled continuously; one token per request.
    TokenBucket { refill_per_second: f64 },
}

/// What a decision does when Redis is configured but failing. Both keep limiting with the
/// in-process store; they differ in what that store knows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Sign-in and second factors: the in-process store mirrors Redis all along, so a failure
    /// continues from the last known counts, and those counts are carried back into Redis
    /// when it returns.
    FailClosedToLocal,
    /// General API: the in-process store takes over from empty; nothing is mirrored.
    DegradeToLocal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Names the policy in headers, logs and Redis keys.
    pub name: &'static str,
    /// Requests per window (sliding window) or bucket capacity (token bucket). Keep it below
    /// 2^53 / window in milliseconds (about 3.3 million for the longest window, 31 days) so
    /// Lua's doubles stay exact.
    pub limit: u64,
    /// The sliding window's length. For a token bucket it is what `RateLimit-Policy` advertises
    /// (and how long a bucket that never refills is remembered); [`Policy::token_bucket`] sets
    /// it to the time an empty bucket takes to fill.
    pub window: Duration,
    pub algorithm: Algorithm,
    pub on_backend_failure: FailurePolicy,
}

impl Policy {
    pub const fn sliding_window(
        name: &'static str,
        limit: u64,
        window: Duration,
        on_backend_failure: FailurePolicy,
    ) -> Self {
        Self { name, limit, window, algorithm: Algorithm::SlidingWindow, on_backend_failure }
    }

    pub const fn token_bucket(
        name: &'static str,
        capacity: u64,
        refill_per_second: f64,
        on_backend_failure: FailurePolicy,
    ) -> Self {
        // The advertised window: how long an empty bucket takes to fill, rounded up to the
        // millisecond (a second when it never refills).
        let exact = if refill_per_second > 0.0 { capacity as f64 * 1000.0 / refill_per_second } else { 0.0 };
        let whole = exact as u64;
        let ms = if (whole as f64) < exact { whole + 1 } else { whole };
        Self {
            name,
            limit: capacity,
            window: Duration::from_millis(if ms == 0 { 1000 } else { ms }),
            algorithm: Algorithm::TokenBucket { refill_per_second },
            on_backend_failure,
        }
    }
}

/// The outcome of one [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests still available right after this one.
    pub remaining: u64,
    /// Sliding window: until the current fixed window ends. Token bucket: until it is full.
    pub reset_after: Duration,
    /// On a denial: until one request would be admitted, if nothing else arrives.
    pub retry_after: Option<Duration>,
}

/// Tuning of the Redis backend (the policies themselves are code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Longest a decision waits for Redis, reconnection included, before the in-process store
    /// decides instead.
    pub redis_timeout_ms: u64,
    /// While Redis is failing, at most one decision per this interval tries it again.
    pub redis_retry_ms: u64,
    /// Longest [`RateLimiter::with_redis`] waits for the first connection.
    pub redis_connect_timeout_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { redis_timeout_ms: 250, redis_retry_ms: 1000, redis_connect_timeout_ms: 5000 }
    }
}

/// Decides whether a request may proceed. Cheap to clone; clones share their state.
#[derive(Clone)]
pub struct RateLimiter(Arc<Inner>);

struct Inner {
    clock: SharedClock,
    local: LocalStore,
    redis: Option<RedisBackend>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("backend", &self.backend_name())
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Single node: every decision in this process.
    pub fn in_process(clock: SharedClock) -> Self {
        Self(Arc::new(Inner { clock, local: LocalStore::new(), redis: None }))
    }

    /// Shared budget through Redis, with the in-process store as the fallback.
    pub async fn with_redis(url: &str, clock: SharedClock) -> Result<Self, String> {
        Self::with_redis_config(url, clock, &RateLimitConfig::default()).await
    }

    pub async fn with_redis_config(url: &str, clock: SharedClock, config: &RateLimitConfig) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
        // When a connection fails the manager starts one reconnection attempt in the background
        // and the next command waits for it (at most `timeout` here). No retries inside the
        // manager: its back-off starts at a second and would hold every probe that long, while
        // the probe interval (`redis_retry_ms`) already paces the attempts.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(0);
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, manager_config).await?;
            // Loading both scripts up front proves the server runs Lua and spares the first
            // decisions a NOSCRIPT round trip.
            SLIDING_WINDOW.load_async(&mut conn).await?;
            TOKEN_BUCKET.load_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = tokio::time::timeout(Duration::from_millis(config.redis_connect_timeout_ms.max(1)), connect)
            .await
            .map_err(|_| "timed out connecting to Redis".to_string())?
            .map_err(|e| format!("connecting to Redis: {e}"))?;
        Ok(Self(Arc::new(Inner {
            clock,
            local: LocalStore::new(),
            redis: Some(RedisBackend {
                conn,
                timeout,
                health: Health::new(Duration::from_millis(config.redis_retry_ms)),
            }),
        })))
    }

    /// Counts one request against `policy` for `key` and says whether it may proceed.
    pub async fn check(&self, policy: &Policy, key: &str) -> Decision {
        let inner = &*self.0;
        let now = now_ms(&*inner.clock);
        let id = KeyId::new(policy, key);
        let Some(redis) = &inner.redis else {
            return inner.local.decide(policy, &id, now);
        };
        if !redis.health.may_try() {
            return inner.local.decide(policy, &id, now);
        }
        let mirror = policy.on_backend_failure == FailurePolicy::FailClosedToLocal;
        let floor = if mirror { inner.local.get(&id, now) } else { None };
        match redis.decide(policy, &id, now, floor).await {
            Ok((decision, state)) => {
                if redis.health.succeeded() {
                    tracing::warn!(
                        policy = policy.name,
                        "rate limiter: Redis answers again; decisions are back on Redis"
                    );
                }
                if mirror {
                    inner.local.put(policy, id, state, now);
                }
                decision
            }
            Err(error) => {
                if redis.health.failed() {
                    tracing::warn!(
                        policy = policy.name,
                        %error,
                        "rate limiter: Redis failed; deciding with the in-process store until it answers again"
                    );
                }
                inner.local.decide(policy, &id, now)
            }
        }
    }

    /// Makes one decision on Redis for a key of its own (the same script, so the same write a
    /// request's decision needs, within the decision timeout) and records the outcome the way a
    /// decision would: readiness checks and metric scrapes call this so that a failing Redis is
    /// noticed even when no request has needed a decision since. A `PING` would not do: a Redis
    /// out of memory, read-only or refusing scripts still answers it while every decision falls
    /// back. `None` without Redis.
    pub async fn probe(&self) -> Option<bool> {
        let redis = self.0.redis.as_ref()?;
        let now = now_ms(&*self.0.clock);
        let id = KeyId::new(&PROBE, "probe");
        match redis.decide(&PROBE, &id, now, None).await {
            Ok(_) => {
                if redis.health.succeeded() {
                    tracing::warn!("rate limiter: Redis answers again; decisions are back on Redis");
                }
                Some(true)
            }
            Err(error) => {
                if redis.health.failed() {
                    tracing::warn!(
                        %error,
                        "rate limiter: Redis failed; deciding with the in-process store until it answers again"
                    );
                }
                Some(false)
            }
        }
    }

    /// True while the last attempt to reach Redis failed.
    pub fn is_degraded(&self) -> bool {
        self.0.redis.as_ref().is_some_and(|r| r.health.degraded.load(Ordering::Acquire))
    }

    pub fn backend_name(&self) -> &'static str {
        if self.0.redis.is_some() { "redis" } else { "in-process" }
    }

    #[cfg(test)]
    fn local_entries(&self) -> usize {
        self.0.local.len()
    }
}

/// `RateLimit-Policy`, `RateLimit` and, on a denial, `Retry-After` for a response, as (field
/// name, value) pairs: the route guard writes them as headers (`abuse::guard`).
///
/// Syntax of draft-ietf-httpapi-ratelimit-headers-11 (23 May 2026): both fields are Structured
/// Field Lists whose items are the policy name as an sf-string; `RateLimit-Policy` carries the
/// quota `q` and window `w` (seconds, non-zero), `RateLimit` the available quota `r` and the
/// effective window `t` (seconds), e.g. `RateLimit-Policy: "auth-ip";q=10;w=60` and
/// `RateLimit: "auth-ip";r=3;t=42`. No partition key (`pk`) is sent: ours are digests of
/// addresses, which the draft (§6.1) advises against returning. On a denial `t` equals
/// `Retry-After`, as §6 requires that Retry-After not point before the effective window ends.
pub fn headers(policy: &Policy, d: &Decision) -> Vec<(&'static str, String)> {
    let name = sf_string(policy.name);
    let window = ceil_secs(policy.window).max(1);
    let retry = (!d.allowed).then(|| ceil_secs(d.retry_after.unwrap_or(d.reset_after)).max(1));
    let effective = retry.unwrap_or_else(|| ceil_secs(d.reset_after));
    let mut out = vec![
        ("ratelimit-policy", format!("{name};q={};w={window}", sf_integer(policy.limit))),
        ("ratelimit", format!("{name};r={};t={effective}", sf_integer(d.remaining))),
    ];
    if let Some(secs) = retry {
        out.push(("retry-after", secs.to_string()));
    }
    out
}

/// RFC 9651 §3.3.1: a Structured Field Integer has at most 15 digits.
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

fn sf_integer(n: u64) -> u64 {
    n.min(SF_INTEGER_MAX)
}

fn ceil_secs(d: Duration) -> u64 {
    sf_integer(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// An sf-string (RFC 9651 §3.3.3): printable ASCII, with `"` and `\` escaped. Anything else in
/// a policy name becomes `_` rather than an invalid header.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// The arithmetic, shared by both backends (the Lua scripts below mirror it line by line).

fn now_ms(clock: &dyn Clock) -> i64 {
    let ms = clock.now().unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn window_ms(policy: &Policy) -> u64 {
    u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_WINDOW_MS)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The previous window's count still covered by the sliding window, rounded down.
fn weighted_previous(prev: u64, window: u64, elapsed: u64) -> u64 {
    let left = u128::from(window.saturating_sub(elapsed));
    u64::try_from(u128::from(prev) * left / u128::from(window)).unwrap_or(u64::MAX)
}

fn sliding_admits(limit: u64, window: u64, elapsed: u64, prev: u64, cur: u64) -> bool {
    limit > 0 && weighted_previous(prev, window, elapsed).saturating_add(cur) < limit
}

/// `cur` counts this request when it was admitted.
fn sliding_decision(limit: u64, window: u64, elapsed: u64, prev: u64, cur: u64, allowed: bool) -> Decision {
    let used = weighted_previous(prev, window, elapsed).saturating_add(cur);
    Decision {
        allowed,
        limit,
        remaining: if allowed { limit.saturating_sub(used) } else { 0 },
        reset_after: ms(window - elapsed),
        retry_after: (!allowed).then(|| ms(sliding_retry_ms(limit, window, elapsed, prev, cur))),
    }
}

/// Milliseconds until [`sliding_admits`] would first hold, if nothing else is admitted.
fn sliding_retry_ms(limit: u64, window: u64, elapsed: u64, prev: u64, cur: u64) -> u64 {
    if limit == 0 {
        // Nothing is ever admitted; a window is as good an answer as any.
        return window;
    }
    let w = u128::from(window);
    let first_admitting = |budget: u64, previous: u64| -> u64 {
        // Smallest e with floor(previous * (W - e) / W) < budget, i.e.
        // previous * (W - e) <= budget * W - 1.
        if previous == 0 {
            return 0;
        }
        let span = ((u128::from(budget) * w - 1) / u128::from(previous)).min(w);
        u64::try_from(w - span).unwrap_or(window)
    };
    if cur < limit {
        first_admitting(limit - cur, prev).saturating_sub(elapsed).max(1)
    } else {
        (window - elapsed) + first_admitting(limit, cur)
    }
}

fn refill_rate(policy: &Policy) -> f64 {
    match policy.algorithm {
        Algorithm::TokenBucket { refill_per_second } if refill_per_second.is_finite() => refill_per_second.max(0.0),
        _ => 0.0,
    }
}

/// Tokens and the instant they were counted at, brought up to `now`. A clock that went back
/// (another process's) refills nothing and does not move `last` back.
fn bucket_refill(capacity: f64, rate: f64, state: Option<(f64, i64)>, now: i64) -> (f64, i64) {
    match state {
        None => (capacity, now),
        Some((tokens, last)) if now > last => {
            let gained = (now - last) as f64 * rate / 1000.0;
            ((tokens + gained).min(capacity), now)
        }
        Some(state) => state,
    }
}

/// The first whole millisecond after which a bucket holding `tokens` holds `target`, by the
/// refill formula of [`bucket_refill`] itself: the division gives an estimate that float
/// rounding can put one off (`(1 - 0.999) * 1000` is `1.0000000000000009`), which is then
/// settled on the formula.
fn ms_to_refill(tokens: f64, target: f64, rate: f64, window: u64) -> u64 {
    let holds_after = |m: u64| tokens + m as f64 * rate / 1000.0 >= target;
    if tokens >= target {
        return 0;
    }
    if rate <= 0.0 {
        return window;
    }
    // Float-to-int `as` saturates, which is what a huge wait should become.
    let mut m = ((target - tokens) * 1000.0 / rate).ceil() as u64;
    for _ in 0..2 {
        if m > 0 && holds_after(m - 1) {
            m -= 1;
        }
    }
    for _ in 0..2 {
        if !holds_after(m) {
            m = m.saturating_add(1);
        }
    }
    m
}

fn bucket_ttl_ms(capacity: f64, rate: f64, window: u64, tokens: f64) -> u64 {
    let until_absent = if rate > 0.0 { ms_to_refill(tokens, capacity, rate, window) } else { window };
    until_absent.saturating_add(EXPIRY_SLACK_MS)
}

/// `ahead` is how far the bucket's own clock (`last`) runs ahead of `now`: refilling starts
/// only from there.
fn bucket_decision(policy: &Policy, tokens: f64, ahead: u64, allowed: bool) -> Decision {
    let rate = refill_rate(policy);
    let window = window_ms(policy);
    let capacity = policy.limit as f64;
    Decision {
        allowed,
        limit: policy.limit,
        remaining: (tokens.floor().max(0.0) as u64).min(policy.limit),
        reset_after: ms(ahead.saturating_add(ms_to_refill(tokens, capacity, rate, window))),
        retry_after: (!allowed).then(|| ms(ahead.saturating_add(ms_to_refill(tokens, 1.0, rate, window)).max(1))),
    }
}

fn bucket_ahead(last: i64, now: i64) -> u64 {
    u64::try_from(last.saturating_sub(now)).unwrap_or(0)
}

/// What a store remembers about one key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Window { index: i64, prev: u64, cur: u64 },
    Bucket { tokens: f64, last: i64 },
}

/// A window state seen from window `index`: (previous count, current count).
fn window_counts(state: Option<State>, index: i64) -> (u64, u64) {
    match state {
        Some(State::Window { index: i, prev, cur }) if i == index => (prev, cur),
        Some(State::Window { index: i, cur, .. }) if i == index - 1 => (cur, 0),
        _ => (0, 0),
    }
}

fn bucket_tokens(state: Option<State>) -> Option<(f64, i64)> {
    match state {
        Some(State::Bucket { tokens, last }) => Some((tokens, last)),
        _ => None,
    }
}

/// One decision on a known state (the in-process store's whole job).
fn step(policy: &Policy, state: Option<State>, now: i64) -> (Decision, State) {
    let window = window_ms(policy);
    match policy.algorithm {
        Algorithm::SlidingWindow => {
            let index = now.div_euclid(window as i64);
            let elapsed = now.rem_euclid(window as i64) as u64;
            let (prev, mut cur) = window_counts(state, index);
            let allowed = sliding_admits(policy.limit, window, elapsed, prev, cur);
            if allowed {
                cur += 1;
            }
            (sliding_decision(policy.limit, window, elapsed, prev, cur, allowed), State::Window { index, prev, cur })
        }
        Algorithm::TokenBucket { .. } => {
            let capacity = policy.limit as f64;
            let (mut tokens, last) = bucket_refill(capacity, refill_rate(policy), bucket_tokens(state), now);
            let allowed = tokens >= 1.0;
            if allowed {
                tokens -= 1.0;
            }
            (bucket_decision(policy, tokens, bucket_ahead(last, now), allowed), State::Bucket { tokens, last })
        }
    }
}

/// From when a state reads exactly like an absent key, so the entry may go.
fn expires_at(policy: &Policy, state: State) -> i64 {
    let window = window_ms(policy);
    match state {
        State::Window { index, .. } => index.saturating_add(2).saturating_mul(window as i64),
        State::Bucket { tokens, last } => {
            let ttl = bucket_ttl_ms(policy.limit as f64, refill_rate(policy), window, tokens);
            last.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys.

/// A caller's key as both stores know it: 128 bits of SHA-256 over the algorithm, policy name,
/// window and key, so nothing caller-supplied and unbounded is ever stored, and policies
/// sharing a name but not a shape can't read each other's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyId([u8; 16]);

impl KeyId {
    fn new(policy: &Policy, key: &str) -> Self {
        let tag = match policy.algorithm {
            Algorithm::SlidingWindow => "sw",
            Algorithm::TokenBucket { .. } => "tb",
        };
        let mut input = Vec::with_capacity(key.len() + policy.name.len() + 32);
        input.extend_from_slice(tag.as_bytes());
        input.push(0);
        input.extend_from_slice(policy.name.as_bytes());
        input.push(0);
        input.extend_from_slice(&window_ms(policy).to_be_bytes());
        input.extend_from_slice(key.as_bytes());
        let digest = sha256(&input);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    fn redis_key(&self, policy: &Policy) -> String {
        format!("{REDIS_KEY_PREFIX}{}:{}", policy.name, hex::encode(self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// In-process store.

const SHARDS: usize = 16;
/// A shard is swept when it reaches this many entries or twice its size after the last sweep.
const MIN_SWEEP: usize = 1024;

struct LocalStore {
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    entries: HashMap<KeyId, Entry>,
    sweep_at: usize,
}

struct Entry {
    state: State,
    expires_at: i64,
}

impl LocalStore {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { entries: HashMap::new(), sweep_at: MIN_SWEEP })).collect(),
        }
    }

    fn shard(&self, id: &KeyId) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard can't leave an entry half-written (each is replaced
        // whole), so a poisoned lock is safe to keep using.
        self.shards[usize::from(id.0[0]) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decide(&self, policy: &Policy, id: &KeyId, now: i64) -> Decision {
        let mut shard = self.shard(id);
        let (decision, state) = step(policy, shard.get(id, now), now);
        shard.put(*id, state, expires_at(policy, state), now);
        decision
    }

    fn get(&self, id: &KeyId, now: i64) -> Option<State> {
        self.shard(id).get(id, now)
    }

    fn put(&self, policy: &Policy, id: KeyId, state: State, now: i64) {
        self.shard(&id).put(id, state, expires_at(policy, state), now);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.entries.len()).unwrap_or(0)).sum()
    }
}

impl Shard {
    fn get(&self, id: &KeyId, now: i64) -> Option<State> {
        self.entries.get(id).filter(|e| e.expires_at > now).map(|e| e.state)
    }

    fn put(&mut self, id: KeyId, state: State, expires_at: i64, now: i64) {
        self.entries.insert(id, Entry { state, expires_at });
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, e| e.expires_at > now);
            self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis.

/// The sliding window in one atomic step. Mirrors `step` for `Algorithm::SlidingWindow`; the
/// floors are the in-process mirror's counts (0 when there is none), so that a Redis that lost
/// its data never counts below what this process last saw.
const SLIDING_WINDOW_LUA: &str = r"
-- KEYS[1]: the current window's counter, KEYS[2]: the previous window's.
-- ARGV: limit, window (ms), now (ms, the application's clock), floor of previous, floor of current.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local elapsed = now % window
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor_prev = tonumber(ARGV[4])
local floor_cur = tonumber(ARGV[5])
if floor_prev > prev then
  prev = floor_prev
  redis.call('SET', KEYS[2], prev, 'PX', window - elapsed + 1000)
end
local dirty = false
if floor_cur > cur then
  cur = floor_cur
  dirty = true
end
-- prev * (window - elapsed) < 2^53, so this floor is exact.
local weighted = math.floor(prev * (window - elapsed) / window)
local allowed = 0
if limit > 0 and weighted + cur < limit then
  cur = cur + 1
  allowed = 1
  dirty = true
end
if dirty then
  -- Needed until the next window ends, when it stops being the previous one.
  redis.call('SET', KEYS[1], cur, 'PX', 2 * window - elapsed + 1000)
end
return {allowed, prev, cur}
";

/// The token bucket in one atomic step. Mirrors `step` for `Algorithm::TokenBucket`; tokens are
/// stored with 17 significant digits so the double survives the round trip unchanged.
const TOKEN_BUCKET_LUA: &str = r"
-- KEYS[1]: the bucket, a hash of t (tokens) and l (ms when they were counted).
-- ARGV: capacity, refill per second, now (ms, the application's clock),
--       floor of tokens ('' for none), window (ms; lifetime of a bucket that never refills).
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[5])
local stored = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = capacity
local last = now
if stored[1] and stored[2] then
  tokens = tonumber(stored[1])
  last = tonumber(stored[2])
  if now > last then
    tokens = math.min(capacity, tokens + (now - last) * rate / 1000)
    last = now
  end
end
if ARGV[4] ~= '' then
  local floor = tonumber(ARGV[4])
  if floor < tokens then
    tokens = floor
  end
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local t = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 't', t, 'l', string.format('%d', last))
local ttl = window
if rate > 0 then
  ttl = math.ceil((capacity - tokens) * 1000 / rate)
  if ttl < 0 then
    ttl = 0
  end
end
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return {allowed, t, last}
";

/// The policy of [`RateLimiter::probe`]'s decisions: never limiting, one short-lived key.
const PROBE: Policy =
    Policy::sliding_window("readiness-probe", 1_000_000, Duration::from_secs(1), FailurePolicy::DegradeToLocal);

static SLIDING_WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_WINDOW_LUA));
static TOKEN_BUCKET: LazyLock<Script> = LazyLock::new(|| Script::new(TOKEN_BUCKET_LUA));

struct RedisBackend {
    conn: ConnectionManager,
    timeout: Duration,
    health: Health,
}

impl RedisBackend {
    async fn decide(
        &self,
        policy: &Policy,
        id: &KeyId,
        now: i64,
        floor: Option<State>,
    ) -> Result<(Decision, State), String> {
        match tokio::time::timeout(self.timeout, self.run(policy, id, now, floor)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn run(
        &self,
        policy: &Policy,
        id: &KeyId,
        now: i64,
        floor: Option<State>,
    ) -> redis::RedisResult<(Decision, State)> {
        // The manager is a handle on a shared multiplexed connection; cloning it is how
        // concurrent callers get the `&mut` that commands take.
        let mut conn = self.conn.clone();
        let window = window_ms(policy);
        let base = id.redis_key(policy);
        match policy.algorithm {
            Algorithm::SlidingWindow => {
                let index = now.div_euclid(window as i64);
                let elapsed = now.rem_euclid(window as i64) as u64;
                let (floor_prev, floor_cur) = window_counts(floor, index);
                let (allowed, prev, cur): (i64, u64, u64) = SLIDING_WINDOW
                    .key(format!("{base}:{index}"))
                    .key(format!("{base}:{}", index.saturating_sub(1)))
                    .arg(policy.limit)
                    .arg(window)
                    .arg(now)
                    .arg(floor_prev)
                    .arg(floor_cur)
                    .invoke_async(&mut conn)
                    .await?;
                let allowed = allowed == 1;
                Ok((
                    sliding_decision(policy.limit, window, elapsed, prev, cur, allowed),
                    State::Window { index, prev, cur },
                ))
            }
            Algorithm::TokenBucket { .. } => {
                let rate = refill_rate(policy);
                let floor = bucket_tokens(floor).map(|state| {
                    let (tokens, _) = bucket_refill(policy.limit as f64, rate, Some(state), now);
                    // Rust's shortest round-trip form, which Lua's tonumber reads back exactly.
                    tokens.to_string()
                });
                let (allowed, tokens, last): (i64, String, i64) = TOKEN_BUCKET
                    .key(&base)
                    .arg(policy.limit)
                    .arg(rate.to_string())
                    .arg(now)
                    .arg(floor.unwrap_or_default())
                    .arg(window)
                    .invoke_async(&mut conn)
                    .await?;
                let tokens: f64 = tokens.parse().map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::TypeError, "token bucket script returned a non-number"))
                })?;
                let allowed = allowed == 1;
                Ok((bucket_decision(policy, tokens, bucket_ahead(last, now), allowed), State::Bucket { tokens, last }))
            }
        }
    }
}

/// Whether Redis is trusted right now, and when to try it again if not.
struct Health {
    degraded: AtomicBool,
    /// Nanoseconds after `epoch` before which no decision tries a failing Redis again.
    next_probe: AtomicU64,
    epoch: Instant,
    retry: Duration,
}

impl Health {
    fn new(retry: Duration) -> Self {
        Self { degraded: AtomicBool::new(false), next_probe: AtomicU64::new(0), epoch: Instant::now(), retry }
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn retry_ns(&self) -> u64 {
        u64::try_from(self.retry.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Healthy: always. Degraded: one caller per retry interval (the one that wins the
    /// compare-and-swap), so an outage doesn't make every request wait for a timeout.
    fn may_try(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = self.elapsed_ns();
        let next = self.next_probe.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe
                .compare_exchange(next, now.saturating_add(self.retry_ns()), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Records a failure; true when this one turned a healthy backend degraded.
    fn failed(&self) -> bool {
        self.next_probe.store(self.elapsed_ns().saturating_add(self.retry_ns()), Ordering::Release);
        !self.degraded.swap(true, Ordering::AcqRel)
    }

    /// Records a success; true when this one ended a degraded spell.
    fn succeeded(&self) -> bool {
        // The load keeps the healthy path free of writes to a shared cache line.
        self.degraded.load(Ordering::Acquire) && self.degraded.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::clock::ManualClock;

    const MINUTE: Duration = Duration::from_secs(60);

    fn start() -> time::OffsetDateTime {
        // Midnight: a multiple of every window used here.
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    fn limiter() -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new(start());
        (RateLimiter::in_process(Arc::new(clock.clone())), clock)
    }

    #[test]
    fn weighted_previous_is_the_exact_floor() {
        assert_eq!(weighted_previous(10, 60_000, 30_000), 5);
        assert_eq!(weighted_previous(10, 60_000, 0), 10);
        assert_eq!(weighted_previous(10, 60_000, 59_999), 0);
        // Upstash's doubles give floor((1 - 0.7) * 10) = 2; the exact value is 3.
        assert_eq!(weighted_previous(10, 10, 7), 3);
    }

    /// `sliding_retry_ms` names exactly the first millisecond that admits, found here by
    /// walking time forward one millisecond at a time through this window and the next.
    #[test]
    fn sliding_retry_is_the_first_admitting_millisecond() {
        let window = 40;
        for limit in 1..6u64 {
            for prev in 0..12u64 {
                for cur in 0..=limit {
                    for elapsed in 0..window {
                        if sliding_admits(limit, window, elapsed, prev, cur) {
                            continue;
                        }
                        let mut wait = 1;
                        loop {
                            let t = elapsed + wait;
                            let admits = if t < window {
                                sliding_admits(limit, window, t, prev, cur)
                            } else {
                                sliding_admits(limit, window, t - window, cur, 0)
                            };
                            if admits {
                                break;
                            }
                            wait += 1;
                            assert!(wait < 2 * window, "never admits");
                        }
                        assert_eq!(
                            sliding_retry_ms(limit, window, elapsed, prev, cur),
                            wait,
                            "limit {limit} prev {prev} cur {cur} elapsed {elapsed}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bucket_retry_is_the_time_to_one_token() {
        let policy = Policy::token_bucket("t", 3, 0.5, FailurePolicy::DegradeToLocal);
        assert_eq!(policy.window, Duration::from_secs(6));
        let d = bucket_decision(&policy, 0.25, 0, false);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(d.reset_after, Duration::from_millis(5500));
        assert_eq!(d.remaining, 0);
        // Float rounding puts the naive division one millisecond late here.
        assert_eq!(ms_to_refill(0.999, 1.0, 1.0, 0), 1);
        for tokens in [0.0, 0.1, 0.3, 0.7, 0.999, 0.9999] {
            for rate in [0.1, 0.3, 1.0, 1.5, 7.0, 1000.0] {
                let m = ms_to_refill(tokens, 1.0, rate, 0);
                let (at, _) = bucket_refill(5.0, rate, Some((tokens, 0)), m as i64);
                assert!(at >= 1.0, "{tokens} at {rate}/s: {m} ms");
                let (before, _) = bucket_refill(5.0, rate, Some((tokens, 0)), m as i64 - 1);
                assert!(before < 1.0, "{tokens} at {rate}/s: {m} ms is not the first");
            }
        }
    }

    #[tokio::test]
    async fn in_process_counts_at_window_edges() {
        let (limiter, clock) = limiter();
        let policy = Policy::sliding_window("edge", 10, MINUTE, FailurePolicy::DegradeToLocal);
        for n in 0..10 {
            let d = limiter.check(&policy, "k").await;
            assert!(d.allowed);
            assert_eq!(d.remaining, 9 - n);
        }
        let denied = limiter.check(&policy, "k").await;
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(60_001)));
        // 30 s into the next window half of the previous one still counts.
        clock.advance(time::Duration::seconds(90));
        let mut admitted = 0;
        for _ in 0..10 {
            if limiter.check(&policy, "k").await.allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let policy = Policy::sliding_window("auth-ip", 10, MINUTE, FailurePolicy::DegradeToLocal);
        let allowed = Decision {
            allowed: true,
            limit: 10,
            remaining: 3,
            reset_after: Duration::from_millis(41_001),
            retry_after: None,
        };
        let h = headers(&policy, &allowed);
        let text: Vec<(String, String)> = h.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        assert_eq!(
            text,
            vec![
                ("ratelimit-policy".to_string(), "\"auth-ip\";q=10;w=60".to_string()),
                ("ratelimit".to_string(), "\"auth-ip\";r=3;t=42".to_string()),
            ]
        );

        let denied = Decision { allowed: false, remaining: 0, retry_after: Some(Duration::from_millis(1)), ..allowed };
        let h = headers(&policy, &denied);
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].1, "\"auth-ip\";r=0;t=1");
        assert_eq!(h[2].0, "retry-after");
        assert_eq!(h[2].1, "1");
    }

    #[test]
    fn policy_names_become_valid_sf_strings() {
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sf_string("é\n"), "\"__\"");
    }

    #[test]
    fn keys_are_digests_of_bounded_length() {
        let policy = Policy::sliding_window("auth-ip", 10, MINUTE, FailurePolicy::DegradeToLocal);
        let long = "x".repeat(1 << 20);
        let key = KeyId::new(&policy, &long).redis_key(&policy);
        assert!(key.starts_with("cf:rl:auth-ip:"));
        assert_eq!(key.len(), "cf:rl:auth-ip:".len() + 32);
        assert_ne!(KeyId::new(&policy, "a"), KeyId::new(&policy, "b"));
        let other = Policy { name: "auth-email", ..policy };
        assert_ne!(KeyId::new(&policy, "a"), KeyId::new(&other, "a"));
        let bucket = Policy::token_bucket("auth-ip", 10, 1.0, FailurePolicy::DegradeToLocal);
        assert_ne!(KeyId::new(&policy, "a"), KeyId::new(&bucket, "a"));
    }

    /// A flood of distinct keys over time leaves only the recent ones in memory.
    #[tokio::test]
    async fn old_keys_are_swept() {
        let (limiter, clock) = limiter();
        let policy = Policy::sliding_window("sweep", 5, MINUTE, FailurePolicy::DegradeToLocal);
        for minute in 0..20 {
            for i in 0..2000 {
                limiter.check(&policy, &format!("{minute}-{i}")).await;
            }
            clock.advance(time::Duration::minutes(1));
        }
        // Live: the last two minutes' 4000 keys; swept lazily, so at most about twice that.
        let n = limiter.local_entries();
        assert!(n <= 2 * 4000 + SHARDS * MIN_SWEEP, "{n} entries kept");
        assert!(n >= 2000);
    }

    #[test]
    fn health_reports_each_transition_once() {
        let health = Health::new(Duration::ZERO);
        assert!(health.may_try());
        assert!(!health.succeeded());
        assert!(health.failed());
        assert!(!health.failed());
        assert!(health.may_try());
        assert!(health.succeeded());
        assert!(!health.succeeded());

        let slow = Health::new(Duration::from_secs(3600));
        assert!(slow.failed());
        assert!(!slow.may_try(), "no probe before the retry interval");
    }

    #[test]
    fn config_defaults_and_parses() {
        let c: RateLimitConfig = serde_json::from_str(r#"{"redis_timeout_ms": 100}"#).expect("parses");
        assert_eq!(c.redis_timeout_ms, 100);
        assert_eq!(c.redis_retry_ms, RateLimitConfig::default().redis_retry_ms);
    }
}
