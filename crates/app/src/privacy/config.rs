//! `[privacy]`: where the key store is, and the pace of deletions and re-sealing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::platform::config::ConfigError;
use crate::platform::keys::Keyring;
use crate::platform::seal::Sealer;

/// `[privacy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The local key store (default `<data_dir>/keys`). Every process of an installation must
    /// share it, like `files.dir`; it must NOT be inside the database's backups' reach only:
    /// back it up separately (docs/security/deletion.md says for how long).
    pub keys_dir: Option<PathBuf>,
    /// Days between an Owner's request to delete the organization (or a person's request to
    /// delete their own account) and the purge (1 to 365).
    pub deletion_grace_days: u32,
    /// Values re-sealed per batch by the worker and `clientflow keys reseal` (1 to 10,000).
    pub reseal_batch: u32,
    /// Minutes a superseded data-key version is kept after the last value left it, so a request
    /// that sealed with it just before a rotation still commits readable values (0 to 1,440).
    pub retire_after_minutes: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { keys_dir: None, deletion_grace_days: 30, reseal_batch: 200, retire_after_minutes: 15 }
    }
}

impl PrivacyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=365).contains(&self.deletion_grace_days) {
            return Err(ConfigError::invalid(
                "privacy.deletion_grace_days",
                "must be 1 to 365 days (the time Owners have to cancel a deletion)",
            ));
        }
        if !(1..=10_000).contains(&self.reseal_batch) {
            return Err(ConfigError::invalid("privacy.reseal_batch", "must be 1 to 10000"));
        }
        if self.retire_after_minutes > 1440 {
            return Err(ConfigError::invalid("privacy.retire_after_minutes", "must be 0 to 1440 minutes"));
        }
        Ok(())
    }

    /// The installation's keyring: the local key store, its KEKs wrapped by a key derived from
    /// the master key, version 1 values still opened with the master key itself.
    pub fn keyring(&self, data_dir: &std::path::Path, sealer: &Sealer) -> Keyring {
        Keyring::local(&self.keys_dir(data_dir), sealer)
    }

    pub fn keys_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        self.keys_dir.clone().unwrap_or_else(|| data_dir.join("keys"))
    }

    pub fn grace(&self) -> time::Duration {
        time::Duration::days(i64::from(self.deletion_grace_days))
    }
}
