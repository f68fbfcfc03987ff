//! Shared application state handed to every handler.

use std::ops::Deref;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::identity::google::GoogleSignIn;
use crate::identity::password::PasswordHasher;
use crate::platform::clock::SharedClock;
use crate::platform::config::Config;
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
    /// Key for the anonymous CSRF tokens (derived from the master key, so every server
    /// process of an installation agrees).
    pub csrf_key: [u8; 32],
    /// Wakes the outbox worker when a transaction has queued mail.
    pub mail_wake: Arc<tokio::sync::Notify>,
    pub google: Option<GoogleSignIn>,
    pub audit_signer: Arc<crate::audit::chain::Signer>,
    pub storage: crate::work::files::Storage,
    /// Key of signed file download links.
    pub file_link_key: [u8; 32],
}

impl AppState {
    pub fn new(config: Config, db: Db, clock: SharedClock) -> anyhow::Result<Self> {
        let security_headers = SecurityHeaders::new(config.server.hsts_preload);
        let sealer = Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
        let csrf_key = derive_key(&sealer, "clientflow csrf v1");
        let file_link_key = derive_key(&sealer, "clientflow file links v1");
        let storage = crate::work::files::Storage::local(
            &config.files.dir.clone().unwrap_or_else(|| config.data_dir.join("files")),
        );
        let hasher = PasswordHasher::new(config.identity.hashing_concurrency, config.identity.hashing_queue);
        let google = GoogleSignIn::from_config(&config)?;
        let audit_signer = Arc::new(
            crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
                .map_err(anyhow::Error::msg)?
                .with_retention(config.audit.retention_days),
        );
        Ok(Self {
            inner: Arc::new(AppStateInner {
                config,
                db,
                metrics: Metrics::new(),
                clock,
                security_headers,
                hasher,
                sealer,
                csrf_key,
                mail_wake: Arc::new(tokio::sync::Notify::new()),
                google,
                audit_signer,
                storage,
                file_link_key,
            }),
        })
    }
}

/// A purpose-specific key: HMAC of a label under the sealer's derivation key.
fn derive_key(sealer: &Sealer, label: &str) -> [u8; 32] {
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
