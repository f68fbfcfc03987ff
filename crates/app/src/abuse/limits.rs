//! Rate limits as the application applies them: the policies (configured in one place, the
//! `[rate_limits]` section) and what each route declares; the step of the route guard that
//! enforces the declaration is `abuse::guard`.
//!
//! A route declares its limits in the route table ([`RouteDef::limited`]), so the table says
//! which routes are limited and a test lists them. API routes get theirs from their surface
//! ([`default_limits`]): every `/api` route is limited per client address, every API-key route
//! per key too. A limit is a policy and the request property that keys it:
//!
//! | Key | From | Taken |
//! |---|---|---|
//! | [`KeyBy::ClientIp`] | [`ClientIp`] (trusted-proxy aware), IPv6 by its /64 | before authentication |
//! | [`KeyBy::FormEmail`] | a form field, normalized like [`Email`] | before authentication |
//! | [`KeyBy::FormEmailPerDevice`] | the same, plus the known-device cookie when present | before authentication |
//! | [`KeyBy::FormSecret`] | a form field holding a token (only its digest is kept) | before authentication |
//! | [`KeyBy::SessionUser`] | the session's user (a pending one on the second-factor page) | after authentication |
//! | [`KeyBy::ApiKey`] | the verified API key | after authentication |
//! | [`KeyBy::Organization`] | the verified organization of the member or key | after authentication |
//!
//! Keys taken before authentication are checked before the route's access guard runs, so a
//! flood is refused before it costs a session lookup, a CSRF check or a password hash; the
//! others once the principal is known, so a made-up API key can't spend a real one's budget.
//! Decisions run in stages (client address, then form fields, then principal), in the declared
//! order within each, and stop at the first refusal (a refused request is not counted by the
//! later policies).
//!
//! Every response of a limited route carries `RateLimit-Policy` and `RateLimit` for each policy
//! that decided (one field line per policy), and a refusal is a 429 with `Retry-After`: the
//! error renderer makes it problem+json on the API and an HTML page on the web.
//!
//! # Why the per-account key on sign-in includes the device
//!
//! A budget per email address alone would let anyone lock a person out of signing in by
//! sending a few requests with their address: the abuse the sign-in lockout was designed to
//! blunt (docs/ARCHITECTURE.md, "Lockout without victim lockout"). So on `POST /login` a request
//! that presents a known-device cookie of that account (checked against the stored devices, one
//! indexed lookup) is counted in a budget of its own for that address and device. A made-up,
//! expired or other account's cookie counts as none: rotating forged cookies buys no budget.
//! Password-reset and sign-up requests send mail to the address, so their per-account budget
//! counts every request for the address, whatever device sent it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ratelimit::{FailurePolicy, Policy, RateLimitConfig, RateLimiter};
use crate::platform::clock::SharedClock;

pub use crate::access::requirement::{
    API_PER_IP, API_PER_KEY, AUTH_PER_IP, BILLING_PER_ORG, CONTACT_PER_IP, EXPORT_PER_IP, EXPORT_PER_ORG, KeyBy, Limit,
    MAIL_PER_ACCOUNT, PolicyId, SECOND_FACTOR_PER_USER, SECURITY_REPORT_PER_IP, SIGN_IN_PER_ACCOUNT, SIGNUP_PER_IP,
    STATUS_SUBSCRIBE_PER_IP, TOKEN_PER_ACCOUNT, UNSUBSCRIBE_PER_IP, default_limits,
};

/// What happens to a policy's decisions while Redis is failing. Authentication, second-factor
/// and billing limits keep the budgets this process has seen (an outage must not reopen a
/// guessing or card-testing window); the others start afresh per process, which only makes
/// them looser for the length of the outage.
pub fn on_backend_failure(id: PolicyId) -> FailurePolicy {
    match id {
        PolicyId::AuthIp | PolicyId::AuthAccount | PolicyId::SecondFactor | PolicyId::BillingOrg => {
            FailurePolicy::FailClosedToLocal
        }
        PolicyId::SignupIp
        | PolicyId::ContactIp
        | PolicyId::UnsubscribeIp
        | PolicyId::StatusSubscribeIp
        | PolicyId::SecurityReportIp
        | PolicyId::DataExport
        | PolicyId::ApiIp
        | PolicyId::ApiKey => FailurePolicy::DegradeToLocal,
    }
}

/// The refusal shown to the user (`{t}` becomes the wait).
pub fn refusal(id: PolicyId) -> &'static str {
    match id {
        PolicyId::AuthIp => "Too many sign-in attempts from your network. Try again in {t}.",
        PolicyId::AuthAccount => "Too many attempts for this account. Try again in {t}.",
        PolicyId::SecondFactor => "Too many attempts. Try again in {t}.",
        PolicyId::SignupIp
        | PolicyId::ContactIp
        | PolicyId::UnsubscribeIp
        | PolicyId::StatusSubscribeIp
        | PolicyId::SecurityReportIp => "Too many submissions from your network. Try again in {t}.",
        PolicyId::ApiIp => "Too many requests from this address. Retry after {t}.",
        PolicyId::ApiKey => "Too many requests with this API key. Retry after {t}.",
        PolicyId::BillingOrg => "Too many billing changes for this organization. Try again in {t}.",
        PolicyId::DataExport => "Too many data exports. Try again in {t}.",
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// How a policy counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithm {
    /// At most `limit` requests in any `window_secs` (two-bucket weighted sliding window).
    #[default]
    SlidingWindow,
    /// A bucket of `limit` tokens refilled at `limit` per `window_secs`, continuously: the same
    /// long-run rate, with bursts of up to `limit` after a quiet spell and a steady trickle
    /// (rather than a wait for the window to slide) once the bucket is empty.
    TokenBucket,
}

/// One policy's numbers: at most `limit` requests per `window_secs`, counted by `algorithm`
/// (a sliding window unless configured otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub limit: u64,
    pub window_secs: u64,
    #[serde(default)]
    pub algorithm: LimitAlgorithm,
}

impl LimitConfig {
    /// A sliding window.
    pub const fn new(limit: u64, window_secs: u64) -> Self {
        Self { limit, window_secs, algorithm: LimitAlgorithm::SlidingWindow }
    }

    /// A token bucket of `limit` tokens refilled at `limit` per `window_secs`.
    pub const fn token_bucket(limit: u64, window_secs: u64) -> Self {
        Self { limit, window_secs, algorithm: LimitAlgorithm::TokenBucket }
    }

    /// The limiter's policy for these numbers.
    pub fn policy(self, name: &'static str, on_backend_failure: FailurePolicy) -> Policy {
        match self.algorithm {
            LimitAlgorithm::SlidingWindow => {
                Policy::sliding_window(name, self.limit, Duration::from_secs(self.window_secs), on_backend_failure)
            }
            LimitAlgorithm::TokenBucket => {
                Policy::token_bucket(name, self.limit, self.limit as f64 / self.window_secs as f64, on_backend_failure)
            }
        }
    }
}

/// `[rate_limits]`: every policy's numbers, and how long to wait for Redis (`redis.url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Longest a decision waits for Redis before the in-process store decides.
    pub redis_timeout_ms: u64,
    /// While Redis is failing, at most one decision per this interval tries it again.
    pub redis_retry_ms: u64,
    /// Longest the start waits for the first Redis connection.
    pub redis_connect_timeout_ms: u64,
    pub auth_ip: LimitConfig,
    pub auth_account: LimitConfig,
    pub second_factor: LimitConfig,
    pub signup_ip: LimitConfig,
    pub contact_ip: LimitConfig,
    pub unsubscribe_ip: LimitConfig,
    pub status_subscribe_ip: LimitConfig,
    pub api_ip: LimitConfig,
    pub api_key: LimitConfig,
    pub billing_org: LimitConfig,
    pub security_report_ip: LimitConfig,
    pub data_export: LimitConfig,
}

impl Default for RateLimitsConfig {
    /// The defaults, and why:
    /// - `auth_ip` 30 per 5 minutes: an office behind one address signs in a few times a
    ///   minute at most; a script trying passwords gets 8,640 a day, spread over accounts
    ///   that each lock after 5 failures.
    /// - `auth_account` 20 per 15 minutes: above the lockout (5 failures per 15 minutes), so a
    ///   person sees the lockout's explanation first; it caps reset and sign-up mail to one
    ///   address and guessing from many addresses at one account.
    /// - `second_factor` 10 per 15 minutes per user: a six-digit code can't be walked.
    /// - `signup_ip` 10 per hour, `contact_ip` 5 per 10 minutes, `unsubscribe_ip` 30 per
    ///   hour, `status_subscribe_ip` 10 per hour: what a person does, with room for a shared
    ///   address.
    /// - `api_key` 1,000 per minute as a token bucket: integrations work in bursts (a sync
    ///   run, then quiet), and a bucket lets a burst of 1,000 through after a quiet spell and
    ///   then a steady 16.7 per second, where a sliding window would stall the client for up
    ///   to a minute. `api_ip` 2,000 per minute (sliding window), so that several keys used
    ///   from one address (a NAT, an integration server) are not limited by the address first.
    /// - `billing_org` 20 per hour: plan and payment changes are rare; card testing is not.
    /// - `security_report_ip` 5 per hour: a researcher sends a report or two; more from one
    ///   address is a flood aimed at the security contact's inbox.
    /// - `data_export` 10 per hour (starts per organization, downloads per address): an export
    ///   reads the whole organization; an Owner takes one or two, and retries a download.
    fn default() -> Self {
        let redis = RateLimitConfig::default();
        Self {
            redis_timeout_ms: redis.redis_timeout_ms,
            redis_retry_ms: redis.redis_retry_ms,
            redis_connect_timeout_ms: redis.redis_connect_timeout_ms,
            auth_ip: LimitConfig::new(30, 300),
            auth_account: LimitConfig::new(20, 900),
            second_factor: LimitConfig::new(10, 900),
            signup_ip: LimitConfig::new(10, 3600),
            contact_ip: LimitConfig::new(5, 600),
            unsubscribe_ip: LimitConfig::new(30, 3600),
            status_subscribe_ip: LimitConfig::new(10, 3600),
            api_ip: LimitConfig::new(2000, 60),
            api_key: LimitConfig::token_bucket(1000, 60),
            billing_org: LimitConfig::new(20, 3600),
            security_report_ip: LimitConfig::new(5, 3600),
            data_export: LimitConfig::new(10, 3600),
        }
    }
}

/// The longest window accepted (the limiter's own cap).
const MAX_WINDOW_SECS: u64 = 31 * 24 * 3600;

impl RateLimitsConfig {
    pub fn get(&self, id: PolicyId) -> LimitConfig {
        match id {
            PolicyId::AuthIp => self.auth_ip,
            PolicyId::AuthAccount => self.auth_account,
            PolicyId::SecondFactor => self.second_factor,
            PolicyId::SignupIp => self.signup_ip,
            PolicyId::ContactIp => self.contact_ip,
            PolicyId::UnsubscribeIp => self.unsubscribe_ip,
            PolicyId::StatusSubscribeIp => self.status_subscribe_ip,
            PolicyId::ApiIp => self.api_ip,
            PolicyId::ApiKey => self.api_key,
            PolicyId::BillingOrg => self.billing_org,
            PolicyId::SecurityReportIp => self.security_report_ip,
            PolicyId::DataExport => self.data_export,
        }
    }

    pub fn get_mut(&mut self, id: PolicyId) -> &mut LimitConfig {
        match id {
            PolicyId::AuthIp => &mut self.auth_ip,
            PolicyId::AuthAccount => &mut self.auth_account,
            PolicyId::SecondFactor => &mut self.second_factor,
            PolicyId::SignupIp => &mut self.signup_ip,
            PolicyId::ContactIp => &mut self.contact_ip,
            PolicyId::UnsubscribeIp => &mut self.unsubscribe_ip,
            PolicyId::StatusSubscribeIp => &mut self.status_subscribe_ip,
            PolicyId::ApiIp => &mut self.api_ip,
            PolicyId::ApiKey => &mut self.api_key,
            PolicyId::BillingOrg => &mut self.billing_org,
            PolicyId::SecurityReportIp => &mut self.security_report_ip,
            PolicyId::DataExport => &mut self.data_export,
        }
    }

    /// The first setting that can't work: (setting, why).
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        for id in PolicyId::ALL {
            let c = self.get(id);
            if c.limit == 0 {
                return Some((id.setting(), "limit must be at least 1".into()));
            }
            if !(1..=MAX_WINDOW_SECS).contains(&c.window_secs) {
                return Some((id.setting(), format!("window_secs must be between 1 and {MAX_WINDOW_SECS} (31 days)")));
            }
            // The Redis script counts in Lua's doubles: count × window in ms must stay exact.
            if u128::from(c.limit) * u128::from(c.window_secs) * 1000 >= 1 << 53 {
                return Some((
                    id.setting(),
                    "limit × window is too large (keep limit × window_secs below 9e12)".into(),
                ));
            }
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms > 60_000 {
            return Some(("rate_limits.redis_timeout_ms", "must be between 1 and 60000".into()));
        }
        if self.redis_connect_timeout_ms == 0 || self.redis_connect_timeout_ms > 600_000 {
            return Some(("rate_limits.redis_connect_timeout_ms", "must be between 1 and 600000".into()));
        }
        None
    }

    fn redis(&self) -> RateLimitConfig {
        RateLimitConfig {
            redis_timeout_ms: self.redis_timeout_ms,
            redis_retry_ms: self.redis_retry_ms,
            redis_connect_timeout_ms: self.redis_connect_timeout_ms,
        }
    }
}

/// Redis (Upstash or any Redis) as a sub-processor, for the registry
/// (`disclosure::subprocessors`): on when `redis.url` is set. The rate limiter and the bot
/// check's replay guard keep their state there; without it both stay in this process.
pub fn sub_processor(redis: &crate::platform::config::RedisConfig) -> crate::platform::subprocessor::SubProcessor {
    crate::platform::subprocessor::SubProcessor {
        id: "redis",
        name: "Redis (Upstash or self-hosted)",
        enabled: redis.url.is_some(),
        setting: "redis.url (REDIS_URL)",
        purpose: "Shares rate-limit budgets and the bot check's used-proof list between server processes.",
        receives: &[
            "rate-limit counters under SHA-256 digests of the client address, form field or API key id (never the value itself)",
            "digests of used bot-check proofs, until they expire",
        ],
        region: "Where the operator's Redis database runs (for Upstash, the region chosen for the database)".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The resolved policies and the limiter

/// The limiter and the policies in force, built once at start.
pub struct RateLimits {
    limiter: RateLimiter,
    policies: Vec<Policy>,
}

impl RateLimits {
    /// One shared limiter over Redis when `redis_url` is set (several processes then share
    /// every budget), in-process otherwise. A Redis that can't be reached at start is an
    /// error: the operator asked for shared budgets, and silently running per-process ones
    /// would multiply every limit by the number of processes.
    pub async fn new(config: &RateLimitsConfig, redis_url: Option<&str>, clock: SharedClock) -> Result<Self, String> {
        if let Some((setting, why)) = config.invalid() {
            return Err(format!("{setting}: {why}"));
        }
        let limiter = match redis_url {
            Some(url) => RateLimiter::with_redis_config(url, clock, &config.redis())
                .await
                .map_err(|e| format!("redis.url: {e} (the rate limiter shares its budgets through Redis)"))?,
            None => RateLimiter::in_process(clock),
        };
        let policies =
            PolicyId::ALL.iter().map(|id| config.get(*id).policy(id.name(), on_backend_failure(*id))).collect();
        Ok(Self { limiter, policies })
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    pub fn policy(&self, id: PolicyId) -> &Policy {
        &self.policies[id.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::route::{Access, Surface};

    #[test]
    fn defaults_are_valid_and_each_policy_has_a_distinct_name() {
        assert_eq!(RateLimitsConfig::default().invalid(), None);
        assert_eq!(RateLimitsConfig::default().api_key, LimitConfig::token_bucket(1000, 60));
        // A bucket of 1,000 refilled at 1,000 a minute: the same long-run rate as the window.
        let bucket = RateLimitsConfig::default().api_key.policy("api-key", FailurePolicy::DegradeToLocal);
        assert_eq!(bucket.limit, 1000);
        assert_eq!(bucket.window, Duration::from_secs(60));
        assert!(matches!(
            bucket.algorithm,
            super::super::ratelimit::Algorithm::TokenBucket { refill_per_second } if (refill_per_second - 1000.0 / 60.0).abs() < 1e-9
        ));
        let names: std::collections::HashSet<_> = PolicyId::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), PolicyId::ALL.len());
        for (i, id) in PolicyId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
        }
    }

    #[test]
    fn impossible_settings_name_themselves() {
        let mut c = RateLimitsConfig::default();
        c.contact_ip.limit = 0;
        assert_eq!(c.invalid().map(|(s, _)| s), Some("rate_limits.contact_ip"));
        let mut c = RateLimitsConfig::default();
        c.api_key.window_secs = 0;
        assert_eq!(c.invalid().map(|(s, _)| s), Some("rate_limits.api_key"));
        let c = RateLimitsConfig { api_ip: LimitConfig::new(1 << 40, 86_400), ..RateLimitsConfig::default() };
        assert_eq!(c.invalid().map(|(s, _)| s), Some("rate_limits.api_ip"));
    }

    #[test]
    fn surfaces_give_api_routes_their_limits() {
        use crate::access::role::Permission;
        assert_eq!(default_limits(Surface::Web, Access::Public), vec![]);
        assert_eq!(default_limits(Surface::Api, Access::Public), vec![API_PER_IP]);
        assert_eq!(default_limits(Surface::Api, Access::Api(Permission::ClientsRead)), vec![API_PER_IP, API_PER_KEY]);
    }
}
