//! The one typed configuration tree of ClientFlow, assembled from each concern's section:
//! the platform's own (`platform::config`: server, database, Redis, logs, metrics, secrets) and
//! each area's (identity, Google sign-in, mail, audit, files, rate limits, bot checks). It is
//! loaded once by the platform's loader and validated at start; every error names the setting.
//!
//! Areas read their own section from `AppState::config`; the platform's functions take the
//! sections they need, never this tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::platform::config::{
    BackupConfig, ConfigError, DatabaseConfig, LogConfig, LogFormat, MetricsConfig, RedisConfig, SecretsConfig,
    ServerConfig, TlsMode,
};
pub use crate::platform::config::{RegionConfig, ResidencyConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where ClientFlow keeps its private PostgreSQL cluster, certificates, keys and mail drop.
    pub data_dir: PathBuf,
    /// The address users reach ClientFlow at, e.g. `https://clientflow.example.com`.
    /// Defaults to `https://localhost:<port>`.
    pub public_url: Option<String>,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub identity: crate::identity::config::IdentityConfig,
    pub google: crate::identity::config::GoogleConfig,
    pub mail: crate::mail::config::MailConfig,
    /// `[billing]`: Stripe, plans and their limits (`billing::config`). Off unless configured.
    pub billing: crate::billing::config::BillingConfig,
    pub secrets: SecretsConfig,
    pub audit: crate::audit::AuditConfig,
    pub files: crate::work::files::FilesConfig,
    /// `[rate_limits]`: every rate-limit policy's numbers (`abuse::limits`).
    pub rate_limits: crate::abuse::limits::RateLimitsConfig,
    /// `[bot_check]`: Turnstile keys, or the proof-of-work difficulty (`abuse::botcheck`).
    pub bot_check: crate::abuse::botcheck::BotCheckConfig,
    /// `[backup]`: WAL archiving, scheduled backups and the restore drill of the private cluster.
    pub backup: BackupConfig,
    /// `[disclosure]`: security.txt, the vulnerability report form, the security page's region
    /// and source links (`disclosure`).
    pub disclosure: crate::disclosure::config::DisclosureConfig,
    /// `[sentry]`: error reports (panics and 5xx answers, scrubbed), off without a DSN.
    pub sentry: crate::platform::error_reports::SentryConfig,
    /// `[residency]`: the regions organizations' data may live in (one, `us`, unless
    /// configured); `docs/security/residency.md`.
    pub residency: ResidencyConfig,
    /// `[privacy]`: where the key store is, the grace periods of deletions (`privacy`).
    pub privacy: crate::privacy::config::PrivacyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            public_url: None,
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            identity: Default::default(),
            google: Default::default(),
            mail: Default::default(),
            billing: Default::default(),
            secrets: SecretsConfig::default(),
            audit: Default::default(),
            files: Default::default(),
            rate_limits: Default::default(),
            bot_check: Default::default(),
            backup: BackupConfig::default(),
            disclosure: Default::default(),
            sentry: Default::default(),
            residency: Default::default(),
            privacy: Default::default(),
        }
    }
}

impl crate::platform::config::PlatformSettings for Config {
    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn server(&self) -> &ServerConfig {
        &self.server
    }

    fn database(&self) -> &DatabaseConfig {
        &self.database
    }

    fn largest_request_body(&self) -> usize {
        self.server.body_limit_bytes.max(crate::work::files::upload_body_limit(&self.files))
    }

    fn residency(&self) -> Option<&crate::platform::config::ResidencyConfig> {
        Some(&self.residency)
    }

    fn backup(&self) -> Option<&BackupConfig> {
        Some(&self.backup)
    }
}

impl Config {
    /// Loads the configuration from the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &vars)
    }

    /// Loads from an explicit set of environment variables (tests use this).
    pub fn load_from(file: Option<&Path>, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let config: Config = crate::platform::config::load_tree(&Config::default(), file, vars)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.backup.validate()?;
        self.residency.validate()?;
        self.residency.validate_backups(&self.backup)?;
        crate::platform::config::validate_public_url(self.public_url.as_deref())?;
        if let Some((setting, message)) = self.rate_limits.invalid() {
            return Err(ConfigError::Invalid { setting, message });
        }
        if let Err(e) = crate::abuse::botcheck::validate_config(&self.bot_check) {
            return Err(ConfigError::Load(e.to_string()));
        }
        self.log.validate()?;
        self.mail.validate()?;
        self.disclosure.validate()?;
        self.billing.validate()?;
        self.files.validate()?;
        self.sentry.validate()?;
        self.privacy.validate()?;
        Ok(())
    }

    /// Where file contents are kept: `Local` (this machine's disk) or `S3` (an S3-compatible
    /// bucket, a sub-processor when it is someone else's service). For the security page.
    pub fn object_storage(&self) -> crate::work::files::StorageKind {
        self.files.storage
    }

    /// Whether errors are reported to Sentry (`sentry.dsn` set). For the security page.
    pub fn sentry_enabled(&self) -> bool {
        self.sentry.enabled()
    }

    pub fn request_timeout(&self) -> Duration {
        self.server.request_timeout()
    }

    pub fn public_url(&self) -> String {
        crate::platform::config::public_url(self.public_url.as_deref(), self.server.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.server.tls, TlsMode::SelfSigned);
        assert_eq!(c.public_url(), "https://localhost:8443");
    }

    #[test]
    fn env_overrides_nested_keys_and_lists() {
        let c = Config::load_from(
            None,
            &vars(&[
                ("CLIENTFLOW_SERVER__LISTEN", "0.0.0.0:9443"),
                ("CLIENTFLOW_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
                ("DATABASE_URL", "postgres://x@localhost/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9443);
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert_eq!(c.server.trusted_proxies[1].to_string(), "192.168.1.1/32");
        assert_eq!(c.database.url.as_ref().unwrap().expose(), "postgres://x@localhost/db");
    }

    #[test]
    fn file_variables_supply_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        std::fs::write(&p, "postgres://secret@localhost/db\n").unwrap();
        let c = Config::load_from(None, &vars(&[("CLIENTFLOW_DATABASE__URL_FILE", p.to_str().unwrap())])).unwrap();
        assert_eq!(c.database.url.as_ref().unwrap().expose(), "postgres://secret@localhost/db");
        // Settings named `…_file` are set directly.
        let c = Config::load_from(
            None,
            &vars(&[
                ("CLIENTFLOW_SERVER__TLS", "files"),
                ("CLIENTFLOW_SERVER__TLS_CERT_FILE", "/etc/cf/cert.pem"),
                ("CLIENTFLOW_SERVER__TLS_KEY_FILE", "/etc/cf/key.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.tls_cert_file.unwrap(), PathBuf::from("/etc/cf/cert.pem"));
        assert_eq!(c.server.tls_key_file.unwrap(), PathBuf::from("/etc/cf/key.pem"));
    }

    #[test]
    fn rate_limits_and_bot_checks_are_configured_in_their_sections() {
        let c = Config::load_from(
            None,
            &vars(&[
                ("CLIENTFLOW_RATE_LIMITS__API_KEY__LIMIT", "50"),
                ("CLIENTFLOW_RATE_LIMITS__AUTH_IP__WINDOW_SECS", "120"),
                ("CLIENTFLOW_BOT_CHECK__POW_DIFFICULTY", "18"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rate_limits.api_key.limit, 50);
        assert_eq!(c.rate_limits.api_key.window_secs, 60);
        assert_eq!(c.rate_limits.auth_ip.window_secs, 120);
        assert_eq!(c.bot_check.pow_difficulty, 18);
        // The API key's budget is a token bucket by default; any policy can be either.
        use crate::abuse::limits::LimitAlgorithm;
        assert_eq!(c.rate_limits.api_key.algorithm, LimitAlgorithm::TokenBucket);
        assert_eq!(c.rate_limits.auth_ip.algorithm, LimitAlgorithm::SlidingWindow);
        let c = Config::load_from(
            None,
            &vars(&[
                ("CLIENTFLOW_RATE_LIMITS__API_KEY__ALGORITHM", "sliding_window"),
                ("CLIENTFLOW_RATE_LIMITS__CONTACT_IP__ALGORITHM", "token_bucket"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rate_limits.api_key.algorithm, LimitAlgorithm::SlidingWindow);
        assert_eq!(c.rate_limits.contact_ip.algorithm, LimitAlgorithm::TokenBucket);
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_RATE_LIMITS__API_KEY__ALGORITHM", "leaky")])).unwrap_err();
        assert!(e.to_string().contains("leaky"), "{e}");
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_RATE_LIMITS__CONTACT_IP__LIMIT", "0")])).unwrap_err();
        assert!(e.to_string().contains("rate_limits.contact_ip"), "{e}");
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_BOT_CHECK__TURNSTILE_SITE_KEY", "0x4AAA")])).unwrap_err();
        assert!(e.to_string().contains("bot_check.turnstile_secret_key"), "{e}");
    }

    #[test]
    fn backups_are_configured_in_their_section() {
        let c = Config::load_from(None, &[]).unwrap();
        assert!(c.backup.enabled && c.backup.schedule);
        assert_eq!((c.backup.retention_days, c.backup.archive_timeout_secs), (7, 60));
        let c = Config::load_from(
            None,
            &vars(&[
                ("CLIENTFLOW_BACKUP__S3__BUCKET", "backups"),
                ("CLIENTFLOW_BACKUP__S3__ENDPOINT", "minio.internal"),
                ("CLIENTFLOW_BACKUP__S3__REGION", "eu-central-1"),
                ("CLIENTFLOW_BACKUP__S3__KEY", "AKIA"),
                ("CLIENTFLOW_BACKUP__S3__KEY_SECRET", "s3cr3t"),
                ("CLIENTFLOW_BACKUP__RETENTION_DAYS", "14"),
            ]),
        )
        .unwrap();
        let s3 = c.backup.s3.as_ref().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.key_secret.as_ref().unwrap().expose()), ("backups", "s3cr3t"));
        assert_eq!(c.backup.retention_days, 14);
        for (var, value, setting) in [
            ("CLIENTFLOW_BACKUP__S3__BUCKET", "only-a-bucket", "backup.s3"),
            ("CLIENTFLOW_BACKUP__RETENTION_DAYS", "0", "backup.retention_days"),
            ("CLIENTFLOW_BACKUP__ARCHIVE_TIMEOUT_SECS", "0", "backup.archive_timeout_secs"),
            ("CLIENTFLOW_BACKUP__PASSPHRASE", "short", "backup.passphrase"),
        ] {
            let e = Config::load_from(None, &vars(&[(var, value)])).unwrap_err();
            assert!(e.to_string().contains(setting), "{var}={value}: {e}");
        }
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_SERVER__TLS", "proxy")])).unwrap_err();
        assert!(e.to_string().contains("server.trusted_proxies"), "{e}");
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_SERVER__LISTEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e = Config::load_from(None, &vars(&[("CLIENTFLOW_SERVER__BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        for (var, value, setting) in [
            ("CLIENTFLOW_SERVER__MAX_CONNECTIONS", "0", "server.max_connections"),
            ("CLIENTFLOW_SERVER__HEADER_TIMEOUT_SECS", "0", "server.header_timeout_secs"),
            ("CLIENTFLOW_SERVER__IDLE_TIMEOUT_SECS", "0", "server.idle_timeout_secs"),
            ("CLIENTFLOW_SERVER__IDLE_TIMEOUT_SECS", "86400", "server.idle_timeout_secs"),
        ] {
            let e = Config::load_from(None, &vars(&[(var, value)])).unwrap_err();
            assert!(e.to_string().contains(setting), "{var}={value}: {e}");
        }
        let c = Config::load_from(None, &vars(&[("CLIENTFLOW_SERVER__MAX_CONNECTIONS", "500")])).unwrap();
        assert_eq!(c.server.max_connections, Some(500));
    }
}
