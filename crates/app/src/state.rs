//! Shared application state handed to every handler.

use std::ops::Deref;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::identity::oidc::GoogleSignIn;
use crate::identity::password::PasswordHasher;
use crate::platform::clock::SharedClock;
use crate::platform::db::Db;
use crate::platform::http::middleware::SecurityHeaders;
use crate::platform::seal::Sealer;
use crate::platform::telemetry::Metrics;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppStateInner>,
}

pub struct AppStateInner {
    pub config: Config,
    pub db: Db,
    pub metrics: Metrics,
    pub clock: SharedClock,
    pub security_headers: SecurityHeaders,
    pub hasher: PasswordHasher,
    pub sealer: Sealer,
    /// Envelope encryption: organizations' and the installation's data keys
    /// (`platform::keys`; the key store under `privacy.keys_dir`).
    pub keys: crate::platform::keys::Keyring,
    /// Key for the anonymous CSRF tokens (derived from the master key, so every server
    /// process of an installation agrees).
    pub csrf_key: [u8; 32],
    /// Wakes the outbox worker when a transaction has queued mail.
    pub mail_wake: Arc<tokio::sync::Notify>,
    pub google: Option<GoogleSignIn>,
    pub audit_signer: Arc<crate::audit::chain::Signer>,
    /// Every region's file store; the file functions pick their principal's region's.
    pub storage: crate::work::files::RegionStores,
    /// Error reports to Sentry when `sentry.dsn` is set (nothing otherwise).
    pub error_reporter: crate::platform::error_reports::ErrorReporter,
    /// Key of signed file download links.
    pub file_link_key: [u8; 32],
    /// The rate limiter (shared through Redis when `redis.url` is set) and its policies.
    pub rate_limits: crate::abuse::limits::RateLimits,
    /// The bot check of the public forms: Turnstile when configured, proof of work otherwise.
    pub bot_check: crate::abuse::botcheck::BotCheck,
    /// Unsubscribe links: made by the mail worker, opened by `/u/{token}`.
    pub unsubscribe: crate::mail::unsubscribe::Links,
    /// The plans and their limits, when billing is on (`None`: billing off, unlimited).
    pub plans: Option<Arc<crate::platform::plans::PlanBook>>,
    /// The Stripe client (with its circuit breaker), when billing is on.
    pub stripe: Option<Arc<crate::billing::stripe::StripeClient>>,
    /// API keys this process verified, reused while nothing they were verified against has
    /// changed (`access::api_key::KeyCache`).
    pub api_keys: crate::access::api_key::KeyCache,
}

impl AppState {
    /// Builds the state. Async because a configured Redis is connected here: the rate limiter
    /// and the bot-check replay guard share it, and a Redis that can't be reached at start is
    /// reported now rather than at the first request.
    pub async fn new(config: Config, db: Db, clock: SharedClock) -> anyhow::Result<Self> {
        let security_headers = SecurityHeaders::new(config.server.hsts_preload);
        let sealer = Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
        let keys = config.privacy.keyring(&config.data_dir, &sealer);
        let csrf_key = derive_key(&sealer, "clientflow csrf v1");
        let file_link_key = derive_key(&sealer, "clientflow file links v1");
        let storage = region_stores(&config, &db)?;
        let error_reporter = crate::platform::error_reports::ErrorReporter::from_config(&config.sentry)?;
        let hasher = PasswordHasher::new(config.identity.hashing_concurrency, config.identity.hashing_queue);
        let google = GoogleSignIn::from_config(&config.google, &config.public_url())?;
        let audit_signer = Arc::new(
            crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
                .map_err(anyhow::Error::msg)?
                .applying_retention(),
        );
        let redis_url = config.redis.url.as_ref().map(|u| u.expose().to_string());
        let rate_limits =
            crate::abuse::limits::RateLimits::new(&config.rate_limits, redis_url.as_deref(), clock.clone())
                .await
                .map_err(anyhow::Error::msg)?;
        let bot_check = bot_check(&config, &sealer, redis_url.as_deref(), clock.clone()).await?;
        let unsubscribe = unsubscribe_links(&config, &sealer);
        let plans = config.billing.plan_book().map(Arc::new);
        let stripe = crate::billing::stripe::StripeClient::from_config(&config.billing).map(Arc::new);
        Ok(Self {
            inner: Arc::new(AppStateInner {
                config,
                db,
                metrics: Metrics::new(),
                clock,
                security_headers,
                hasher,
                sealer,
                keys,
                csrf_key,
                mail_wake: Arc::new(tokio::sync::Notify::new()),
                google,
                audit_signer,
                storage,
                error_reporter,
                file_link_key,
                rate_limits,
                bot_check,
                unsubscribe,
                plans,
                stripe,
                api_keys: Default::default(),
            }),
        })
    }
}

/// The file store of each region `db` has a database for: `[files]` for the default region, a
/// directory of its own for each further one.
pub fn region_stores(config: &Config, db: &Db) -> anyhow::Result<crate::work::files::RegionStores> {
    let mut stores = vec![(db.home_region(), config.files.open_storage(&config.data_dir)?)];
    for region in db.region_ids().into_iter().skip(1) {
        let dir = config.residency.files_dir(region, &config.data_dir);
        stores.push((region, crate::work::files::Storage::local(&dir)));
    }
    Ok(crate::work::files::RegionStores::new(stores))
}

/// The bot check: its proof-of-work key derived from the master key (every process of an
/// installation must accept the others' challenges), Turnstile's expected hostname taken from
/// `public_url`, and a replay guard shared through Redis when there is one.
async fn bot_check(
    config: &Config,
    sealer: &Sealer,
    redis_url: Option<&str>,
    clock: SharedClock,
) -> anyhow::Result<crate::abuse::botcheck::BotCheck> {
    use crate::abuse::botcheck::{BotCheck, MemoryReplayGuard, RedisReplayGuard, ReplayGuard};
    let capacity = config.bot_check.replay_capacity;
    let replay: Arc<dyn ReplayGuard> = match redis_url {
        Some(url) => Arc::new(
            RedisReplayGuard::connect(
                url,
                clock.clone(),
                capacity,
                std::time::Duration::from_millis(config.rate_limits.redis_timeout_ms),
                std::time::Duration::from_millis(config.rate_limits.redis_connect_timeout_ms),
            )
            .await
            .map_err(|e| anyhow::anyhow!("redis.url: {e} (the bot check's replay guard uses Redis)"))?,
        ),
        None => Arc::new(MemoryReplayGuard::new(clock.clone(), capacity)),
    };
    let public_url = config.public_url();
    let hostname = url::Url::parse(&public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("public_url: no host in {public_url}"))?;
    let pow_key = derive_key(sealer, "clientflow proof of work v1");
    Ok(BotCheck::from_config(&config.bot_check, pow_key, &hostname, clock, replay)?)
}

/// Unsubscribe links, sealed under a key derived from the master key (every process of an
/// installation opens the others' links).
pub fn unsubscribe_links(config: &Config, sealer: &Sealer) -> crate::mail::unsubscribe::Links {
    crate::mail::unsubscribe::Links::new(
        &derive_key(sealer, "clientflow unsubscribe v1"),
        &config.public_url(),
        time::Duration::days(config.mail.unsubscribe_days),
        config.mail.unsubscribe_mailto.clone(),
    )
}

/// What the mail worker needs, for a process that has no `AppState` (`clientflow worker`).
pub fn mail_delivery(config: &Config) -> anyhow::Result<crate::mail::outbox::Delivery> {
    let sealer = Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
    let transport =
        crate::mail::transport::Transport::from_config(&config.mail, &config.data_dir).map_err(anyhow::Error::msg)?;
    Ok(crate::mail::outbox::Delivery::new(transport, unsubscribe_links(config, &sealer), &config.mail))
}

/// A purpose-specific key: HMAC of a label under the sealer's derivation key.
pub(crate) fn derive_key(sealer: &Sealer, label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&sealer.derivation_key()).expect("any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.inner
    }
}
