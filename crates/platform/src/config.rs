//! Configuration loading, and the platform's own sections.
//!
//! The application's one typed tree (`clientflow::config::Config`) is assembled from sections:
//! this module defines the ones the platform itself reads (server, database, Redis, logs,
//! metrics, the master key) and the loader every tree goes through. Sources, later ones winning:
//! built-in defaults, the TOML file (`--config`, default `clientflow.toml` when it exists),
//! `CLIENTFLOW_*` environment variables (nested keys joined with `__`, e.g.
//! `CLIENTFLOW_SERVER__LISTEN`), the conventional `DATABASE_URL` / `REDIS_URL`, and finally
//! `CLIENTFLOW_*_FILE` variables whose value is a path the setting is read from (for secrets kept
//! in files). Every error names the setting to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {setting}: {message}")]
    Invalid { setting: &'static str, message: String },
}

impl ConfigError {
    pub fn invalid(setting: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { setting, message: message.into() }
    }
}

/// Loads a configuration tree: `defaults`, then the TOML file (or `./clientflow.toml` when it
/// exists), then the environment `vars`.
pub fn load_tree<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<&Path>,
    vars: &[(String, String)],
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
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
    figment.extract().map_err(|e| {
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
    })
}

/// What the platform reads of an application's configuration tree. The application's tree
/// implements it; the platform's functions (the private cluster, TLS, the server loop) take any
/// implementation, so the platform never depends on the application's sections.
pub trait PlatformSettings {
    /// Where the private cluster, certificates, secrets and local data live.
    fn data_dir(&self) -> &Path;
    fn server(&self) -> &ServerConfig;
    fn database(&self) -> &DatabaseConfig;
    /// The largest request body any route accepts (a file upload may exceed
    /// `server.body_limit_bytes`): the bound on what the server reads and discards after an
    /// early answer.
    fn largest_request_body(&self) -> usize;
    /// Backups of the private cluster (`[backup]`); `None`: the private cluster runs without
    /// WAL archiving.
    fn backup(&self) -> Option<&BackupConfig> {
        None
    }
    /// The regions (`[residency]`): with the private cluster, each further region without a
    /// `database_url` gets a private cluster of its own (`db::provision`).
    fn residency(&self) -> Option<&ResidencyConfig> {
        None
    }
}

/// The address users reach the installation at: `public_url` without a trailing slash, or
/// `https://localhost[:port]` for the listener's port.
pub fn public_url(configured: Option<&str>, listen: SocketAddr) -> String {
    match configured {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let port = listen.port();
            if port == 443 { "https://localhost".into() } else { format!("https://localhost:{port}") }
        }
    }
}

/// `public_url` must be an `https://` URL.
pub fn validate_public_url(configured: Option<&str>) -> Result<(), ConfigError> {
    if let Some(url) = configured {
        let parsed = url::Url::parse(url).map_err(|e| ConfigError::invalid("public_url", format!("not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(ConfigError::invalid("public_url", "must start with https://"));
        }
    }
    Ok(())
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
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
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls == TlsMode::Files && (self.tls_cert_file.is_none() || self.tls_key_file.is_none()) {
            return Err(ConfigError::invalid(
                "server.tls",
                "tls = \"files\" needs server.tls_cert_file and server.tls_key_file \
                 (CLIENTFLOW_SERVER__TLS_CERT_FILE / CLIENTFLOW_SERVER__TLS_KEY_FILE)",
            ));
        }
        if self.tls == TlsMode::Proxy && self.trusted_proxies.is_empty() {
            return Err(ConfigError::invalid(
                "server.trusted_proxies",
                "tls = \"proxy\" needs the address of the TLS-terminating proxy in \
                 server.trusted_proxies (for example [\"10.0.0.5/32\"])",
            ));
        }
        if self.request_timeout_secs == 0 || self.request_timeout_secs > 3600 {
            return Err(ConfigError::invalid("server.request_timeout_secs", "must be between 1 and 3600"));
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1 (or unset, to derive it from the open-file limit)",
            ));
        }
        if self.header_timeout_secs == 0 || self.header_timeout_secs > 300 {
            return Err(ConfigError::invalid("server.header_timeout_secs", "must be between 1 and 300"));
        }
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > 3600 {
            return Err(ConfigError::invalid("server.idle_timeout_secs", "must be between 1 and 3600"));
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("server.body_limit_bytes", "must be at least 1024"));
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_secs)
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            admin_url: None,
            auditor_url: None,
            max_connections: 20,
            acquire_timeout_secs: 5,
            postgres_bin_dir: None,
        }
    }
}

impl DatabaseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::invalid("database.max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Auto, filter: "info".into() }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.filter.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(ConfigError::invalid("log.filter", format!("not a valid filter: {:?}", self.filter)));
        }
        Ok(())
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            allow: vec!["127.0.0.0/8".parse().expect("valid literal"), "::1/128".parse().expect("valid literal")],
            token: None,
        }
    }
}

/// The stanza (pgBackRest's name for one cluster's backups) of the private cluster: the
/// default region's; another region's is [`ResidencyConfig::backup_stanza`].
pub const STANZA: &str = "clientflow";

/// `[backup]`: pgBackRest for the private cluster (see `db::backup`). Ignored when
/// `database.url` is set: a managed database's provider owns its backups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// WAL archiving and scheduled backups of the private cluster.
    pub enabled: bool,
    /// The repository's directory. Unset: `backups` in the cluster's own directory
    /// (`<data_dir>/postgres/backups`); put it on another disk, or use `backup.s3`.
    pub repo_path: Option<PathBuf>,
    /// An S3-compatible object store for the repository instead of a directory.
    pub s3: Option<S3RepoConfig>,
    /// The repository's encryption passphrase. Unset: generated once into
    /// `<data_dir>/secrets/backup-passphrase`. Without it the repository can't be read: keep a
    /// copy away from the server.
    pub passphrase: Option<Secret>,
    /// A WAL segment is archived at least this often when anything was written, which bounds
    /// the recovery point of a quiet system.
    pub archive_timeout_secs: u32,
    /// Recovery stays possible to any moment of the last this many days.
    pub retention_days: u32,
    /// A full backup when the newest full one is this old.
    pub full_interval_hours: u32,
    /// A differential backup when the newest backup is this old.
    pub diff_interval_hours: u32,
    /// The restore drill runs when the last one is this old.
    pub drill_interval_hours: u32,
    /// The server and the worker take the scheduled backups and run the drill. Off: only the
    /// `clientflow backup` commands do (an external scheduler, a benchmark).
    pub schedule: bool,
    /// The `pgbackrest` executable. Unset: found on the `PATH` (Debian: `apt install pgbackrest`).
    pub pgbackrest: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3RepoConfig {
    pub bucket: String,
    /// e.g. `s3.eu-central-1.amazonaws.com`, or a MinIO host.
    pub endpoint: String,
    pub region: String,
    /// Path of the repository inside the bucket (default `/clientflow`).
    pub path: Option<String>,
    pub key: Option<Secret>,
    pub key_secret: Option<Secret>,
    /// `path` for most S3-compatible stores, `host` (virtual-hosted) for AWS.
    pub uri_style: Option<String>,
    pub port: Option<u16>,
    /// Verify the store's TLS certificate (default true).
    pub verify_tls: Option<bool>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            repo_path: None,
            s3: None,
            passphrase: None,
            archive_timeout_secs: 60,
            retention_days: 7,
            full_interval_hours: 7 * 24,
            diff_interval_hours: 24,
            drill_interval_hours: 24,
            schedule: true,
            pgbackrest: None,
        }
    }
}

impl BackupConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.archive_timeout_secs) {
            return Err(ConfigError::invalid("backup.archive_timeout_secs", "must be between 1 and 86400"));
        }
        if !(1..=3650).contains(&self.retention_days) {
            return Err(ConfigError::invalid("backup.retention_days", "must be between 1 and 3650"));
        }
        for (setting, hours) in [
            ("backup.full_interval_hours", self.full_interval_hours),
            ("backup.diff_interval_hours", self.diff_interval_hours),
            ("backup.drill_interval_hours", self.drill_interval_hours),
        ] {
            if !(1..=24 * 366).contains(&hours) {
                return Err(ConfigError::invalid(setting, "must be between 1 and 8784 hours"));
            }
        }
        if let Some(s3) = &self.s3 {
            if s3.bucket.is_empty() || s3.endpoint.is_empty() || s3.region.is_empty() {
                return Err(ConfigError::invalid(
                    "backup.s3",
                    "an S3 repository needs backup.s3.bucket, backup.s3.endpoint and backup.s3.region",
                ));
            }
            if s3.key.is_none() || s3.key_secret.is_none() {
                return Err(ConfigError::invalid("backup.s3", "needs backup.s3.key and backup.s3.key_secret"));
            }
            if let Some(style) = &s3.uri_style
                && style != "path"
                && style != "host"
            {
                return Err(ConfigError::invalid("backup.s3.uri_style", "must be \"path\" or \"host\""));
            }
            if self.repo_path.is_some() {
                return Err(ConfigError::invalid(
                    "backup.repo_path",
                    "set either backup.repo_path or backup.s3, not both",
                ));
            }
        }
        if let Some(p) = &self.passphrase
            && p.expose().len() < 20
        {
            return Err(ConfigError::invalid("backup.passphrase", "must be at least 20 characters"));
        }
        Ok(())
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
pub fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
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
    items.iter().map(|s| crate::net::parse_cidr(s).map_err(serde::de::Error::custom)).collect()
}

/// `[residency]`: the regions organizations' data may live in. Unset: one region, `us`, which
/// is the `[database]`, `[files]` and `[backup]` configured as usual.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResidencyConfig {
    /// The default region's name: the `[database]` (which also holds the global directory),
    /// `[files]` and `[backup]` sections are this region's.
    pub default_region: crate::db::region::RegionId,
    /// What the default region is called on the pages (e.g. "United States").
    pub default_label: String,
    /// The region a new organization gets unless its Owner chooses another (default: the
    /// default region).
    pub new_organizations: Option<crate::db::region::RegionId>,
    /// Further regions, by name (`[residency.regions.eu]`).
    pub regions: std::collections::BTreeMap<String, RegionConfig>,
}

impl Default for ResidencyConfig {
    fn default() -> Self {
        Self {
            default_region: crate::db::region::RegionId::DEFAULT,
            default_label: "United States".to_string(),
            new_organizations: None,
            regions: Default::default(),
        }
    }
}

/// One further region: its own database, file store, backup repository and optionally Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// What the region is called on the pages (e.g. "European Union").
    pub label: String,
    /// The region's database: the app role, or a privileged role ClientFlow provisions from
    /// (like `database.url`). Unset: `database_name` on the default region's server.
    pub database_url: Option<Secret>,
    /// With a `database_url` of the app role: the region's owner role (migrations, the purge of
    /// deleted organizations, moves), like `database.admin_url`.
    pub admin_url: Option<Secret>,
    /// With a `database_url` of the app role: the region's auditor role (`org list`, `audit
    /// verify` across organizations), like `database.auditor_url`.
    pub auditor_url: Option<Secret>,
    /// With no `database_url`: a database of this name on the default region's server (the
    /// private cluster of a single-machine install, or the server of a privileged
    /// `database.url`). Default `clientflow_<region>`.
    pub database_name: Option<String>,
    /// Where this region's encrypted files are kept (default `<data_dir>/files-<region>`).
    pub files_dir: Option<PathBuf>,
    /// The name of this region's backups in its repository (the pgBackRest stanza), default
    /// `clientflow-<region>`.
    pub backup_repo: Option<String>,
    /// This region's backup repository directory (its private cluster's backups). Unset:
    /// `backups` in the region's own cluster directory (`<data_dir>/regions/<region>/postgres/backups`).
    /// Never shared with another region: each region's backups hold only its own data.
    pub backup_path: Option<PathBuf>,
    /// An S3-compatible bucket for this region's backup repository instead of a directory (the
    /// fields of `backup.s3`; the path defaults to `/clientflow-<region>`). Not inherited from
    /// `backup.s3`: the default region's bucket never receives another region's backups.
    pub backup_s3: Option<S3RepoConfig>,
    /// This region's repository passphrase. Unset: generated once into
    /// `<data_dir>/secrets/backup-passphrase-<region>`.
    pub backup_passphrase: Option<Secret>,
    /// This region's Redis, if it has one of its own (rate limits stay global).
    pub redis_url: Option<Secret>,
}

impl ResidencyConfig {
    /// Every region's name, the default first.
    pub fn region_ids(&self) -> Vec<crate::db::region::RegionId> {
        let mut ids = vec![self.default_region];
        ids.extend(self.regions.keys().filter_map(|k| crate::db::region::RegionId::parse(k)));
        ids
    }

    /// The region new organizations get unless their Owner chooses.
    pub fn new_organization_region(&self) -> crate::db::region::RegionId {
        self.new_organizations.unwrap_or(self.default_region)
    }

    /// What a region is called on the pages.
    pub fn label(&self, region: crate::db::region::RegionId) -> String {
        if region == self.default_region {
            return self.default_label.clone();
        }
        match self.regions.get(region.as_str()) {
            Some(r) if !r.label.trim().is_empty() => r.label.clone(),
            _ => region.as_str().to_uppercase(),
        }
    }

    /// Where a further region's files are kept.
    pub fn files_dir(&self, region: crate::db::region::RegionId, data_dir: &Path) -> PathBuf {
        self.regions
            .get(region.as_str())
            .and_then(|r| r.files_dir.clone())
            .unwrap_or_else(|| data_dir.join(format!("files-{region}")))
    }

    /// The pgBackRest stanza of a region's backups (the default region's is `clientflow`).
    pub fn backup_stanza(&self, region: crate::db::region::RegionId) -> String {
        if region == self.default_region {
            return STANZA.to_string();
        }
        self.regions
            .get(region.as_str())
            .and_then(|r| r.backup_repo.clone())
            .unwrap_or_else(|| format!("clientflow-{region}"))
    }

    /// A region's backup settings: `[backup]`'s schedule and retention with the region's own
    /// repository and passphrase (never the default region's repository or bucket).
    pub fn backup_config(&self, region: crate::db::region::RegionId, base: &BackupConfig) -> BackupConfig {
        let Some(r) = self.regions.get(region.as_str()).filter(|_| region != self.default_region) else {
            return base.clone();
        };
        let mut config = base.clone();
        config.repo_path = r.backup_path.clone();
        config.s3 = r.backup_s3.clone().map(|mut s3| {
            s3.path.get_or_insert_with(|| format!("/clientflow-{region}"));
            s3
        });
        config.passphrase = r.backup_passphrase.clone();
        config
    }

    /// Checks that no two regions' backups share a repository (a directory, or a bucket's path).
    pub fn validate_backups(&self, base: &BackupConfig) -> Result<(), ConfigError> {
        let mut dirs = std::collections::BTreeSet::new();
        let mut buckets = std::collections::BTreeSet::new();
        let mut stanzas = std::collections::BTreeSet::new();
        for region in self.region_ids() {
            let c = self.backup_config(region, base);
            if let Some(dir) = &c.repo_path
                && !dirs.insert(dir.clone())
            {
                return Err(ConfigError::invalid(
                    "residency.regions.*.backup_path",
                    format!("region {region} shares the backup repository {} with another region", dir.display()),
                ));
            }
            if region != self.default_region
                && let Err(e) = c.validate()
            {
                // The same rules as [backup]'s, named as the region's settings.
                return Err(ConfigError::invalid(
                    "residency.regions.*.backup_s3",
                    format!(
                        "region {region}: {}",
                        e.to_string()
                            .replace("backup.s3", "backup_s3")
                            .replace("backup.repo_path", "backup_path")
                            .replace("backup.passphrase", "backup_passphrase")
                    ),
                ));
            }
            if let Some(s3) = &c.s3 {
                let path = s3.path.clone().unwrap_or_else(|| "/clientflow".into());
                if !buckets.insert((s3.endpoint.clone(), s3.bucket.clone(), path.trim_end_matches('/').to_string())) {
                    return Err(ConfigError::invalid(
                        "residency.regions.*.backup_s3",
                        format!("region {region} shares its backup bucket and path with another region"),
                    ));
                }
            }
            if !stanzas.insert(self.backup_stanza(region)) {
                return Err(ConfigError::invalid(
                    "residency.regions.*.backup_repo",
                    format!("region {region}'s backups are named like another region's: give each its own"),
                ));
            }
        }
        Ok(())
    }

    /// A further region's database name on the default region's server.
    pub fn database_name(&self, region: crate::db::region::RegionId) -> String {
        self.regions
            .get(region.as_str())
            .and_then(|r| r.database_name.clone())
            .unwrap_or_else(|| format!("clientflow_{}", region.as_str().replace('-', "_")))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut dirs = std::collections::BTreeSet::new();
        let mut databases = std::collections::BTreeSet::new();
        for (name, region) in &self.regions {
            let Some(id) = crate::db::region::RegionId::parse(name) else {
                return Err(ConfigError::invalid(
                    "residency.regions",
                    format!(
                        "{name:?} is not a region name: use lower-case letters, digits and '-' (at most 16, starting \
                         with a letter), e.g. [residency.regions.eu]"
                    ),
                ));
            };
            if id == self.default_region {
                return Err(ConfigError::invalid(
                    "residency.regions",
                    format!(
                        "{name} is the default region (residency.default_region), which is configured by [database], \
                         [files] and [backup]: remove [residency.regions.{name}]"
                    ),
                ));
            }
            names.insert(id);
            if let Some(db) = &region.database_name {
                let ok = !db.is_empty()
                    && db.len() <= 63
                    && db.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(ConfigError::invalid(
                        "residency.regions.*.database_name",
                        format!("{db:?}: use lower-case letters, digits and '_' (at most 63)"),
                    ));
                }
            }
            if region.database_url.is_none() && !databases.insert(self.database_name(id)) {
                return Err(ConfigError::invalid(
                    "residency.regions.*.database_name",
                    format!("region {name} shares its database with another region: give each its own"),
                ));
            }
            if let Some(dir) = &region.files_dir
                && !dirs.insert(dir.clone())
            {
                return Err(ConfigError::invalid(
                    "residency.regions.*.files_dir",
                    format!("region {name} shares its files directory {} with another region", dir.display()),
                ));
            }
        }
        if let Some(new) = self.new_organizations
            && new != self.default_region
            && !names.contains(&new)
        {
            return Err(ConfigError::invalid(
                "residency.new_organizations",
                format!("{new} is not a configured region: add [residency.regions.{new}] or choose one of them"),
            ));
        }
        Ok(())
    }
}
