//! Logs and metrics.

use std::io::IsTerminal;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber: JSON lines when standard output is not a
/// terminal (or when asked), human-readable otherwise. Safe to call twice (the second call
/// does nothing), which tests rely on.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    policy: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    region: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's metrics, exposed at `/metrics` in the Prometheus text format.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pool_open: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    rate_limit_decisions: Family<RateLimitLabels, Counter>,
    rate_limiter_degraded: Gauge,
    http_connections: Gauge,
    http_connections_refused: Counter,
    outbox: Family<StateLabels, Gauge>,
    api_key_checks: Family<OutcomeLabels, Counter>,
    /// Scrapes bring `api_key_checks` up to the cache's counts one at a time (two at once
    /// would both add the same difference).
    api_key_checks_update: std::sync::Mutex<()>,
    backup: BackupGauges,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Each region's backups (its private cluster's), set at scrape time ([`Metrics::set_backup`]),
/// labelled `region`. NaN where there is nothing to say (no backup yet, no drill yet).
#[derive(Default)]
struct BackupGauges {
    enabled: Family<RegionLabels, Gauge>,
    newest_age: Family<RegionLabels, FloatGauge>,
    archive_lag: Family<RegionLabels, FloatGauge>,
    archive_failing: Family<RegionLabels, Gauge>,
    drill_ok: Family<RegionLabels, FloatGauge>,
    drill_age: Family<RegionLabels, FloatGauge>,
    drill_rpo: Family<RegionLabels, FloatGauge>,
    drill_rto: Family<RegionLabels, FloatGauge>,
}

impl BackupGauges {
    fn register(&self, registry: &mut Registry) {
        let g = self;
        registry.register(
            "backup_enabled",
            "1 when ClientFlow backs up the region's private cluster (0: an external database, or backups off)",
            g.enabled.clone(),
        );
        registry.register(
            "backup_newest_age_seconds",
            "Seconds since the newest successful backup finished (NaN: none yet)",
            g.newest_age.clone(),
        );
        registry.register(
            "backup_wal_archive_lag_seconds",
            "Seconds completed WAL has waited to be archived (0: nothing waiting)",
            g.archive_lag.clone(),
        );
        registry.register(
            "backup_wal_archive_failing",
            "1 while the newest WAL archiving attempt failed",
            g.archive_failing.clone(),
        );
        registry.register(
            "backup_drill_last_ok",
            "1 when the last restore drill passed, 0 when it failed (NaN: none yet)",
            g.drill_ok.clone(),
        );
        registry.register(
            "backup_drill_last_age_seconds",
            "Seconds since the last restore drill finished",
            g.drill_age.clone(),
        );
        registry.register(
            "backup_drill_rpo_seconds",
            "Recovery point measured by the last restore drill",
            g.drill_rpo.clone(),
        );
        registry.register(
            "backup_drill_rto_seconds",
            "Restore time measured by the last restore drill",
            g.drill_rto.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clientflow");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let pool_open = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("db_pool_connections", "Open database connections", pool_open.clone());
        registry.register("db_pool_idle_connections", "Idle database connections", pool_idle.clone());
        registry.register("db_pool_max_connections", "Configured maximum database connections", pool_max.clone());
        let rate_limit_decisions = Family::<RateLimitLabels, Counter>::default();
        let rate_limiter_degraded = Gauge::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by policy and outcome (allowed, limited)",
            rate_limit_decisions.clone(),
        );
        registry.register(
            "rate_limiter_degraded",
            "1 while the configured Redis is failing and the in-process store decides",
            rate_limiter_degraded.clone(),
        );
        let http_connections = Gauge::default();
        let http_connections_refused = Counter::default();
        registry.register("http_connections", "Open client connections", http_connections.clone());
        registry.register(
            "http_connections_refused",
            "Connections closed at once because the connection cap was reached",
            http_connections_refused.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        registry.register(
            "mail_outbox_messages",
            "Outbox messages by state (queued, sent, suppressed, dead), read at scrape time",
            outbox.clone(),
        );
        let api_key_checks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "api_key_checks",
            "API requests by how their key was checked: verified, or reused (verified before, nothing changed since)",
            api_key_checks.clone(),
        );
        let backup = BackupGauges::default();
        backup.register(&mut registry);
        Self {
            inner: Arc::new(MetricsInner {
                registry,
                requests,
                latency,
                pool_open,
                pool_idle,
                pool_max,
                rate_limit_decisions,
                rate_limiter_degraded,
                http_connections,
                http_connections_refused,
                outbox,
                api_key_checks,
                api_key_checks_update: std::sync::Mutex::new(()),
                backup,
            }),
        }
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.inner
            .requests
            .get_or_create(&RequestLabels { route: route.to_string(), method: method.to_string(), status })
            .inc();
        self.inner.latency.get_or_create(&RouteLabels { route: route.to_string() }).observe(seconds);
    }

    pub fn observe_rate_limit(&self, policy: &str, allowed: bool) {
        let outcome = if allowed { "allowed" } else { "limited" };
        self.inner.rate_limit_decisions.get_or_create(&RateLimitLabels { policy: policy.to_string(), outcome }).inc();
    }

    /// The open-connection gauge and the refused-connection counter, for the accept loop.
    pub fn connection_metrics(&self) -> (Gauge, Counter) {
        (self.inner.http_connections.clone(), self.inner.http_connections_refused.clone())
    }

    /// Set at scrape time from the outbox: message counts by state. States absent from
    /// `counts` read 0.
    pub fn set_outbox_counts(&self, states: &[&str], counts: &[(String, i64)]) {
        for state in states {
            let n = counts.iter().find(|(s, _)| s == state).map(|(_, n)| *n).unwrap_or(0);
            self.inner.outbox.get_or_create(&StateLabels { state: state.to_string() }).set(n);
        }
    }

    /// Set at scrape time from the API key cache's own counts (which only grow).
    pub fn set_api_key_checks(&self, reused: u64, verified: u64) {
        let _one_at_a_time = self.inner.api_key_checks_update.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (outcome, n) in [("reused", reused), ("verified", verified)] {
            let counter = self.inner.api_key_checks.get_or_create(&OutcomeLabels { outcome });
            counter.inc_by(n.saturating_sub(counter.get()));
        }
    }

    /// Set at scrape time from the limiter's own state.
    pub fn set_rate_limiter_degraded(&self, degraded: bool) {
        self.inner.rate_limiter_degraded.set(i64::from(degraded));
    }

    /// Set at scrape time for each region: `None` when that region's backups aren't
    /// ClientFlow's to take (a database of its own server, or backups off).
    pub fn set_backup(&self, region: &str, status: Option<&crate::db::backup::BackupStatus>) {
        let g = &self.inner.backup;
        let labels = RegionLabels { region: region.to_string() };
        let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        g.enabled.get_or_create(&labels).set(i64::from(status.is_some()));
        let status = status.cloned().unwrap_or_default();
        g.newest_age.get_or_create(&labels).set(or_nan(status.newest_backup_age));
        g.archive_lag.get_or_create(&labels).set(status.archive.as_ref().map_or(0.0, |a| a.lag_seconds));
        g.archive_failing.get_or_create(&labels).set(i64::from(status.archive.as_ref().is_some_and(|a| a.failing)));
        g.drill_ok.get_or_create(&labels).set(or_nan(status.last_drill_ok.map(|ok| if ok { 1.0 } else { 0.0 })));
        g.drill_age.get_or_create(&labels).set(or_nan(status.last_drill_age));
        g.drill_rpo.get_or_create(&labels).set(or_nan(status.last_drill_rpo));
        g.drill_rto.get_or_create(&labels).set(or_nan(status.last_drill_rto));
    }

    /// Renders all metrics; `pool` is (open, idle, max) read at scrape time.
    pub fn render(&self, pool: (u32, u32, u32)) -> String {
        self.inner.pool_open.set(pool.0 as i64);
        self.inner.pool_idle.set(pool.1 as i64);
        self.inner.pool_max.set(pool.2 as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}
