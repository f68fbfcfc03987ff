//! The one typed configuration tree.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`--config`, default
//! `clientflow.toml` when it exists), `CLIENTFLOW_*` environment variables (nested keys joined
//! with `__`, e.g. `CLIENTFLOW_SERVER__LISTEN`), the conventional `DATABASE_URL` / `REDIS_URL`,
//! and finally `CLIENTFLOW_*_FILE` variables whose value is a path the setting is read from
//! (for secrets kept in files). The tree is validated once at start; every error names the
//! setting to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::platform::secret::Secret;

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
    pub identity: IdentityConfig,
    pub google: GoogleConfig,
    pub mail: MailConfig,
    pub secrets: SecretsConfig,
    pub audit: AuditConfig,
    pub files: FilesConfig,
    /// `[rate_limits]`: every rate-limit policy's numbers (`abuse::limits`).
    pub rate_limits: crate::abuse::limits::RateLimitsConfig,
    /// `[bot_check]`: Turnstile keys, or the proof-of-work difficulty (`abuse::botcheck`).
    pub bot_check: crate::abuse::botcheck::BotCheckConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest accepted upload.
    pub max_upload_bytes: usize,
    /// Where encrypted file contents are kept (default `<data_dir>/files`).
    pub dir: Option<PathBuf>,
    /// How long a signed download link works.
    pub link_minutes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit events older than this are removed (a checkpoint keeps the chain verifiable).
    pub retention_days: u32,
    /// Ed25519 seed (32 bytes, base64) that signs chain heads. Unset: generated once into
    /// `<data_dir>/secrets/audit-signing.key`. Keep a copy of the public key elsewhere.
    pub signing_key: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A session unused for this long ends (ASVS 3.3.2 level 2: 30 minutes).
    pub session_idle_minutes: u32,
    /// A session ends this long after sign-in, however active (ASVS 3.3.2 level 2: 12 hours).
    pub session_absolute_hours: u32,
    /// Failed password (or second-factor) attempts allowed per window before the lock.
    pub lockout_threshold: u32,
    pub lockout_window_minutes: u32,
    pub lockout_minutes: u32,
    /// Concurrent password hashes (argon2id is deliberately expensive). 0: one less than the
    /// number of CPUs, at least one.
    pub hashing_concurrency: usize,
    /// Sign-ins waiting for a hashing slot beyond this number are answered 503 at once.
    pub hashing_queue: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// OAuth client id; Google sign-in is off while unset.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// The OpenID issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailTransport {
    /// Messages are written under `<data_dir>/mail`; read them with `clientflow mail`.
    Maildrop,
    /// Messages are sent through `mail.smtp_url`.
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `From:` of every message.
    pub from: String,
    /// `smtps://user:pass@host:465` (implicit TLS) or `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS). Plain `smtp://` is accepted only for a relay on this machine.
    pub smtp_url: Option<Secret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32 bytes, base64: the key that seals stored secrets (TOTP secrets). Unset: a key is
    /// generated once into `<data_dir>/secrets/master.key`.
    pub master_key: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Serve HTTPS with a certificate generated for localhost under the data directory.
    SelfSigned,
    /// Serve HTTPS with `server.tls_cert_file` / `server.tls_key_file`.
    Files,
    /// Serve plain HTTP behind a TLS-terminating proxy listed in `server.trusted_proxies`.
    Proxy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener that only redirects to HTTPS.
    pub http_redirect_listen: Option<SocketAddr>,
    pub tls: TlsMode,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed. Anything else is the
    /// client itself, whatever headers it sends.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<IpNet>,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub hsts_preload: bool,
    /// Connections served at once. Unset: derived from the open-file limit (less a reserve for
    /// the database pool and the rest of the process); a value above that is lowered to it.
    pub max_connections: Option<usize>,
    /// From the end of the TLS handshake to the first request's headers.
    pub header_timeout_secs: u64,
    /// A connection with no request in flight this long is closed (HTTP/1.1 and HTTP/2).
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Runtime connection. Either the unprivileged app role, or a privileged role from which
    /// ClientFlow provisions its own owner and app roles. Unset: a private cluster under
    /// `data_dir` is used.
    pub url: Option<Secret>,
    /// Connection used for migrations (the owner role) when `url` is the app role.
    pub admin_url: Option<Secret>,
    /// The read-only auditor role (operator commands across organizations, e.g. `audit verify`).
    pub auditor_url: Option<Secret>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// Directory holding `initdb`, `pg_ctl` and `postgres` for the private cluster.
    /// Found automatically under `/usr/lib/postgresql/*/bin` or via `pg_config` when unset.
    pub postgres_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Unset: single-node mode with in-process limiter and cache.
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// JSON when standard output is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `clientflow=debug,info`.
    pub filter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Addresses allowed to read `/metrics` without a token.
    #[serde(deserialize_with = "cidr_list")]
    pub allow: Vec<IpNet>,
    /// Bearer token that also grants access to `/metrics`.
    pub token: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            public_url: None,
            server: ServerConfig {
                listen: "127.0.0.1:8443".parse().expect("valid literal"),
                http_redirect_listen: None,
                tls: TlsMode::SelfSigned,
                tls_cert_file: None,
                tls_key_file: None,
                trusted_proxies: Vec::new(),
                request_timeout_secs: 30,
                body_limit_bytes: 2 * 1024 * 1024,
                shutdown_grace_secs: 30,
                hsts_preload: false,
                max_connections: None,
                header_timeout_secs: 15,
                idle_timeout_secs: 60,
            },
            database: DatabaseConfig {
                url: None,
                admin_url: None,
                auditor_url: None,
                max_connections: 20,
                acquire_timeout_secs: 5,
                postgres_bin_dir: None,
            },
            redis: RedisConfig::default(),
            log: LogConfig { format: LogFormat::Auto, filter: "info".into() },
            metrics: MetricsConfig {
                allow: vec!["127.0.0.0/8".parse().expect("valid literal"), "::1/128".parse().expect("valid literal")],
                token: None,
            },
            identity: IdentityConfig {
                session_idle_minutes: 30,
                session_absolute_hours: 12,
                lockout_threshold: 5,
                lockout_window_minutes: 15,
                lockout_minutes: 15,
                hashing_concurrency: 0,
                hashing_queue: 64,
            },
            google: GoogleConfig::default(),
            mail: MailConfig {
                transport: MailTransport::Maildrop,
                from: "ClientFlow <no-reply@localhost>".into(),
                smtp_url: None,
            },
            secrets: SecretsConfig::default(),
            audit: AuditConfig { retention_days: 365, signing_key: None },
            files: FilesConfig { max_upload_bytes: 25 * 1024 * 1024, dir: None, link_minutes: 5 },
            rate_limits: crate::abuse::limits::RateLimitsConfig::default(),
            bot_check: crate::abuse::botcheck::BotCheckConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {setting}: {message}")]
    Invalid { setting: &'static str, message: String },
}

impl Config {
    /// Loads the configuration from the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &vars)
    }

    /// Loads from an explicit set of environment variables (tests use this).
    pub fn load_from(file: Option<&Path>, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!("the configuration file {} does not exist", path.display())));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                let default = Path::new("clientflow.toml");
                if default.exists() {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        // Settings whose own names end in `_file` are set directly, not read from a file.
        let indirect = |k: &str| k.ends_with("_FILE") && !SETTINGS_NAMED_FILE.contains(&env_key_to_path(k).as_str());
        let env: Vec<(String, String)> = vars
            .iter()
            .filter(|(k, _)| k.starts_with("CLIENTFLOW_") && !indirect(k))
            .filter(|(k, _)| k != "CLIENTFLOW_CONFIG")
            .cloned()
            .collect();
        for (key, value) in &env {
            figment = figment.merge((env_key_to_path(key), parse_env_value(value)));
        }
        for (name, path) in [("DATABASE_URL", "database.url"), ("REDIS_URL", "redis.url")] {
            if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
                let specific = format!("CLIENTFLOW_{}", path.to_uppercase().replace('.', "__"));
                if !vars.iter().any(|(k, _)| *k == specific) && !v.is_empty() {
                    figment = figment.merge((path, v.clone()));
                }
            }
        }
        for (key, file_path) in vars.iter().filter(|(k, _)| k.starts_with("CLIENTFLOW_") && indirect(k)) {
            let setting_key = &key[..key.len() - "_FILE".len()];
            let content = std::fs::read_to_string(file_path)
                .map_err(|e| ConfigError::Load(format!("{key}: cannot read {file_path}: {e}")))?;
            let value = content.trim_end_matches(['\n', '\r']).to_string();
            figment = figment.merge((env_key_to_path(setting_key), value));
        }
        let config: Config = figment.extract().map_err(|e| {
            let mut msg = String::new();
            for err in e {
                if !msg.is_empty() {
                    msg.push_str("; ");
                }
                let path = err.path.join(".");
                if path.is_empty() {
                    msg.push_str(&err.kind.to_string());
                } else {
                    msg.push_str(&format!("{path}: {}", err.kind));
                }
            }
            ConfigError::Load(msg)
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.tls == TlsMode::Files
            && (self.server.tls_cert_file.is_none() || self.server.tls_key_file.is_none())
        {
            return Err(ConfigError::Invalid {
                setting: "server.tls",
                message: "tls = \"files\" needs server.tls_cert_file and server.tls_key_file \
                          (CLIENTFLOW_SERVER__TLS_CERT_FILE / CLIENTFLOW_SERVER__TLS_KEY_FILE)"
                    .into(),
            });
        }
        if self.server.tls == TlsMode::Proxy && self.server.trusted_proxies.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "server.trusted_proxies",
                message: "tls = \"proxy\" needs the address of the TLS-terminating proxy in \
                          server.trusted_proxies (for example [\"10.0.0.5/32\"])"
                    .into(),
            });
        }
        if self.server.request_timeout_secs == 0 || self.server.request_timeout_secs > 3600 {
            return Err(ConfigError::Invalid {
                setting: "server.request_timeout_secs",
                message: "must be between 1 and 3600".into(),
            });
        }
        if self.server.max_connections == Some(0) {
            return Err(ConfigError::Invalid {
                setting: "server.max_connections",
                message: "must be at least 1 (or unset, to derive it from the open-file limit)".into(),
            });
        }
        if self.server.header_timeout_secs == 0 || self.server.header_timeout_secs > 300 {
            return Err(ConfigError::Invalid {
                setting: "server.header_timeout_secs",
                message: "must be between 1 and 300".into(),
            });
        }
        if self.server.idle_timeout_secs == 0 || self.server.idle_timeout_secs > 3600 {
            return Err(ConfigError::Invalid {
                setting: "server.idle_timeout_secs",
                message: "must be between 1 and 3600".into(),
            });
        }
        if self.server.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid {
                setting: "server.body_limit_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "database.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::Invalid { setting: "public_url", message: format!("not a URL: {e}") })?;
            if parsed.scheme() != "https" {
                return Err(ConfigError::Invalid { setting: "public_url", message: "must start with https://".into() });
            }
        }
        if let Some((setting, message)) = self.rate_limits.invalid() {
            return Err(ConfigError::Invalid { setting, message });
        }
        if let Err(e) = crate::abuse::botcheck::validate_config(&self.bot_check) {
            return Err(ConfigError::Load(e.to_string()));
        }
        if self.log.filter.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(ConfigError::Invalid {
                setting: "log.filter",
                message: format!("not a valid filter: {:?}", self.log.filter),
            });
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let port = self.server.listen.port();
                if port == 443 { "https://localhost".into() } else { format!("https://localhost:{port}") }
            }
        }
    }
}

/// Settings that are paths to files themselves: `CLIENTFLOW_SERVER__TLS_CERT_FILE` sets
/// `server.tls_cert_file` rather than reading `server.tls_cert` from a file.
const SETTINGS_NAMED_FILE: &[&str] = &["server.tls_cert_file", "server.tls_key_file"];

/// `CLIENTFLOW_SERVER__LISTEN` → `server.listen`.
fn env_key_to_path(key: &str) -> String {
    key.trim_start_matches("CLIENTFLOW_").to_lowercase().split("__").collect::<Vec<_>>().join(".")
}

/// Environment values are strings; numbers, booleans and `[a, b]` lists are recognised the
/// way `figment`'s own environment provider does.
fn parse_env_value(value: &str) -> figment::value::Value {
    value.parse::<figment::value::Value>().unwrap_or_else(|_| figment::value::Value::from(value.to_string()))
}

/// Accepts a list of CIDRs or bare addresses, or one comma-separated string.
fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        Raw::Many(v) => v,
    };
    items.iter().map(|s| crate::platform::net::parse_cidr(s).map_err(serde::de::Error::custom)).collect()
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
