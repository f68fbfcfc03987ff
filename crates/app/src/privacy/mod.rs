//! Owners in control of their data: the organizations' data keys (re-sealing, rotation),
//! deletion (an organization's, with a grace period, reaching backups by crypto-shredding; its
//! page in `deletion_web`), the organization's export (`export`, its page and worker in `web`
//! and `export_jobs`) and the operator's import of an export (`import`).
//!
//! The keys themselves and the envelope format are the platform's (`platform::keys`); this area
//! decides what is sealed with which key and moves existing values between versions
//! ([`keys`]), and deletes organizations ([`deletion`]). docs/security/encryption.md and
//! docs/security/deletion.md give the reasoning.

pub mod config;
pub mod deletion;
pub mod deletion_web;
pub mod export;
pub mod export_jobs;
pub mod import;
pub mod keys;
pub mod web;

pub use config::PrivacyConfig;

use std::path::PathBuf;

use crate::platform::keys::Keyring;
use crate::platform::seal::Sealer;

/// The key of the deletion records' HMAC: derived from the master key for this purpose only.
pub fn record_key(sealer: &Sealer) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&sealer.derivation_key()).expect("any length");
    mac.update(b"clientflow deletion records v1");
    mac.finalize().into_bytes().into()
}

/// What the scheduled privacy work needs (in `serve` and `worker`).
pub struct Maintenance {
    pub db: crate::platform::db::Db,
    pub keys: Keyring,
    /// Every region's file store.
    pub stores: crate::work::files::RegionStores,
    /// Each region's owner role, which alone may purge there (a region without one: its due
    /// deletions wait and are logged).
    pub owners: Vec<(crate::platform::db::RegionId, sqlx::postgres::PgConnectOptions)>,
    pub record_key: [u8; 32],
    pub clock: crate::platform::clock::SharedClock,
    pub config: PrivacyConfig,
    /// Stripe, when billing is configured: a deleted organization's subscription is cancelled
    /// before its purge.
    pub stripe: Option<std::sync::Arc<crate::billing::stripe::StripeClient>>,
    /// The data directory, where export archives are kept (removed with their organization).
    pub data_dir: PathBuf,
}

/// Every minute until `shutdown` changes: one re-seal pass (`keys::reseal_pass`), then the
/// purge of every organization whose grace period is over (`deletion::purge_due`), then of
/// every account whose grace period is over (`identity::account_deletion::purge_due`).
pub async fn run_maintenance(m: Maintenance, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let retire_after = std::time::Duration::from_secs(u64::from(m.config.retire_after_minutes) * 60);
    loop {
        match keys::reseal_pass(&m.db, &m.keys, &m.stores, i64::from(m.config.reseal_batch), retire_after).await {
            Ok(p) if p != keys::Pass::default() => tracing::info!(
                totp_secrets = p.totp_secrets,
                contacts = p.contacts,
                files = p.files,
                retired_versions = p.retired_versions,
                "re-sealed values under the newest data keys"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "re-seal pass failed"),
        }
        if let Err(e) = deletion::purge_due_everywhere(
            &m.db,
            &m.owners,
            &m.keys,
            &m.stores,
            &m.record_key,
            m.clock.now(),
            deletion::Beyond { stripe: m.stripe.as_deref(), data_dir: Some(&m.data_dir) },
        )
        .await
        {
            tracing::warn!(error = %e, "organization purge failed");
        }
        // Accounts whose deletion's grace period is over (the app role suffices: nothing of the
        // audit log is removed).
        match crate::identity::account_deletion::purge_due(&m.db, m.clock.now()).await {
            Ok(pass) if !pass.postponed.is_empty() => {
                tracing::info!(purged = pass.purged.len(), postponed = pass.postponed.len(), "account deletions")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "account purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
