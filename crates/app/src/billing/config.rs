//! The billing area's configuration section: `[billing]`.
//!
//! Billing is on when `billing.stripe_secret_key` is set. Off (the self-hosted default), every
//! limit is unlimited and the billing page says so.

use serde::{Deserialize, Serialize};

use crate::platform::config::ConfigError;
use crate::platform::plans::{Plan, PlanBook, PlanLimits};
use crate::platform::secret::Secret;

/// A plan as configured (`[[billing.plans]]`). A limit left out is unlimited.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub id: String,
    pub name: String,
    /// The Stripe price (`price_…`) a subscription to this plan is for; none for the free plan.
    #[serde(default)]
    pub price_id: Option<String>,
    #[serde(default)]
    pub seats: Option<i64>,
    #[serde(default)]
    pub projects: Option<i64>,
    #[serde(default)]
    pub storage_mb: Option<i64>,
    #[serde(default)]
    pub api_keys: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Stripe secret key (`sk_…`), sent as a bearer token. Unset: billing is off.
    pub stripe_secret_key: Option<Secret>,
    /// Stripe's API; another address only for a compatible local server (tests).
    pub stripe_base_url: String,
    /// Signing secrets (`whsec_…`) of the `POST /webhooks/stripe` endpoint. Several while a
    /// secret is being rotated; a delivery signed with any of them is accepted.
    pub webhook_secrets: Vec<Secret>,
    pub plans: Vec<PlanConfig>,
    /// The plan of an organization without a paid subscription (and after one is canceled).
    pub free_plan: String,
    /// Days a past-due organization keeps working; then it becomes read-only (never deleted).
    pub grace_days: i64,
    /// Time allowed for one Stripe request.
    pub timeout_ms: u64,
    /// Retries of a Stripe request answered 429 or 5xx, or not answered.
    pub max_retries: u32,
    /// First retry delay; each further one doubles.
    pub retry_base_ms: u64,
    /// Consecutive failed requests that open the circuit breaker …
    pub breaker_failures: u32,
    /// … for this long: Stripe calls fail at once, the rest of the product carries on.
    pub breaker_cooldown_secs: u64,
}

fn plan(
    id: &str,
    name: &str,
    seats: Option<i64>,
    projects: Option<i64>,
    storage_mb: Option<i64>,
    keys: Option<i64>,
) -> PlanConfig {
    PlanConfig { id: id.into(), name: name.into(), price_id: None, seats, projects, storage_mb, api_keys: keys }
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            stripe_secret_key: None,
            stripe_base_url: "https://api.stripe.com".into(),
            webhook_secrets: Vec::new(),
            plans: vec![
                plan("free", "Free", Some(3), Some(3), Some(1024), Some(1)),
                plan("pro", "Pro", Some(15), Some(100), Some(100 * 1024), Some(10)),
                plan("business", "Business", Some(100), None, Some(1024 * 1024), None),
            ],
            free_plan: "free".into(),
            grace_days: 14,
            timeout_ms: 10_000,
            max_retries: 2,
            retry_base_ms: 250,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
        }
    }
}

impl BillingConfig {
    pub fn enabled(&self) -> bool {
        self.stripe_secret_key.is_some()
    }

    /// The plan table the services consult, when billing is on.
    pub fn plan_book(&self) -> Option<PlanBook> {
        if !self.enabled() {
            return None;
        }
        let plans = self
            .plans
            .iter()
            .map(|p| Plan {
                id: p.id.clone(),
                name: p.name.clone(),
                price_id: p.price_id.clone(),
                limits: PlanLimits {
                    seats: p.seats,
                    projects: p.projects,
                    storage_bytes: p.storage_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
                    api_keys: p.api_keys,
                },
            })
            .collect();
        Some(PlanBook {
            plans,
            free: self.free_plan.clone(),
            grace_days: self.grace_days,
            upgrade_path: "/o/{org}/settings/billing",
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let base = url::Url::parse(&self.stripe_base_url)
            .map_err(|e| ConfigError::invalid("billing.stripe_base_url", format!("is not a URL: {e}")))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(ConfigError::invalid("billing.stripe_base_url", "must be an https:// URL"));
        }
        if !self.plans.iter().any(|p| p.id == self.free_plan) {
            return Err(ConfigError::invalid("billing.free_plan", "must be the id of one of billing.plans"));
        }
        for (i, p) in self.plans.iter().enumerate() {
            if p.id.is_empty()
                || p.id.len() > 50
                || !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::invalid(
                    "billing.plans",
                    format!("plan {i}: id must be 1–50 letters, digits, - or _"),
                ));
            }
            if self.plans.iter().filter(|q| q.id == p.id).count() > 1 {
                return Err(ConfigError::invalid("billing.plans", format!("plan id {} is used twice", p.id)));
            }
            for (name, v) in
                [("seats", p.seats), ("projects", p.projects), ("storage_mb", p.storage_mb), ("api_keys", p.api_keys)]
            {
                if v.is_some_and(|v| v < 0) {
                    return Err(ConfigError::invalid(
                        "billing.plans",
                        format!("plan {}: {name} must not be negative", p.id),
                    ));
                }
            }
            if self.enabled() && p.id != self.free_plan && p.price_id.is_none() {
                return Err(ConfigError::invalid(
                    "billing.plans",
                    format!("plan {} needs its Stripe price_id when billing.stripe_secret_key is set", p.id),
                ));
            }
        }
        if self.enabled() && self.webhook_secrets.is_empty() {
            return Err(ConfigError::invalid(
                "billing.webhook_secrets",
                "is required when billing.stripe_secret_key is set (the whsec_… secret of the webhook endpoint)",
            ));
        }
        if self.webhook_secrets.iter().any(|s| !s.expose().starts_with("whsec_")) {
            return Err(ConfigError::invalid("billing.webhook_secrets", "each must be a whsec_… endpoint secret"));
        }
        if !(0..=365).contains(&self.grace_days) {
            return Err(ConfigError::invalid("billing.grace_days", "must be between 0 and 365"));
        }
        if self.timeout_ms == 0 || self.breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "billing.timeout_ms",
                "billing.timeout_ms and billing.breaker_failures must be at least 1",
            ));
        }
        Ok(())
    }
}
