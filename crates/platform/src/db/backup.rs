//! Backups of the private cluster with pgBackRest: WAL archiving, the repository, backups and
//! restores.
//!
//! **What runs where.** The cluster archives every completed WAL segment with
//! `pgbackrest archive-push` (its `archive_command`), and switches segments at least every
//! `backup.archive_timeout_secs` when anything was written, so a quiet system still has a
//! recent recovery point. The settings are passed on the cluster's command line
//! ([`PrivateCluster::with_settings`]), never written into its files: a copy restored from a
//! backup starts without them and can't archive into the original's repository.
//!
//! **The repository** is a directory (`backup.repo_path`, default `backups` in the cluster's own
//! directory) or an S3-compatible bucket (`backup.s3`), encrypted with `aes-256-cbc`. Its
//! passphrase is generated once into `<data_dir>/secrets/backup-passphrase` (or configured) and
//! reaches pgBackRest only through its environment (`PGBACKREST_REPO1_CIPHER_PASS`): the
//! generated configuration file holds no secret, and pgBackRest redacts it from its logs.
//! Without the passphrase the repository is unreadable, so it must be kept somewhere else too.
//!
//! **Retention** is by time (`repo1-retention-full-type=time`): pgBackRest keeps the newest full
//! backup older than `backup.retention_days` and everything after it, and expires older
//! backups and their WAL after each backup, so recovery to any moment of the window stays
//! possible.
//!
//! pgBackRest runs as the cluster's user (it reads the cluster's files and owns the repository).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use time::OffsetDateTime;

use super::cluster::{ClusterError, PrivateCluster};
use crate::config::{BackupConfig, STANZA};
use crate::secret::Secret;

/// The generated passphrase, under the secrets directory.
pub const PASSPHRASE_FILE: &str = "backup-passphrase";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "pgBackRest is not installed (looked for `{0}`): install it (Debian/Ubuntu: `apt install pgbackrest`), \
         point backup.pgbackrest at it, or turn backups off with backup.enabled = false"
    )]
    NotInstalled(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Other(String),
}

/// Kinds of backup pgBackRest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file.
    Full,
    /// What changed since the newest full backup.
    Diff,
    /// What changed since the newest backup of any kind.
    Incr,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(BackupType::Full),
            "diff" => Some(BackupType::Diff),
            "incr" => Some(BackupType::Incr),
            _ => None,
        }
    }
}

/// Where recovery stops.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// The end of the archived WAL: the newest recovery point.
    Latest,
    /// Just before the first transaction committed after this moment.
    Time(OffsetDateTime),
    /// Just after this transaction committed.
    Xid(u64),
}

/// One backup in the repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupEntry {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The backup is consistent as of this moment: the earliest time it can recover to.
    #[serde(with = "time::serde::rfc3339")]
    pub stopped_at: OffsetDateTime,
    /// The cluster's size as backed up, and what the backup added to the repository.
    pub database_bytes: u64,
    pub repository_bytes: u64,
    /// The backup this one builds on (diff and incr).
    pub prior: Option<String>,
}

/// The repository's view of the stanza.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoInfo {
    /// pgBackRest's status: `ok`, or why the stanza can't be read (no stanza, wrong passphrase…).
    pub status: String,
    pub status_ok: bool,
    /// Oldest first.
    pub backups: Vec<BackupEntry>,
    /// The oldest and newest archived WAL segment.
    pub wal_min: Option<String>,
    pub wal_max: Option<String>,
}

impl RepoInfo {
    pub fn newest(&self) -> Option<&BackupEntry> {
        self.backups.last()
    }

    pub fn newest_full(&self) -> Option<&BackupEntry> {
        self.backups.iter().rev().find(|b| b.kind == "full")
    }

    /// The earliest moment recovery can reach: the oldest backup's consistency point.
    pub fn earliest_recovery(&self) -> Option<OffsetDateTime> {
        self.backups.first().map(|b| b.stopped_at)
    }
}

/// Environment variables carrying secrets.
pub type SecretEnv = Vec<(String, Secret)>;

/// The private cluster's pgBackRest set-up.
#[derive(Debug, Clone)]
pub struct Repository {
    cluster: PrivateCluster,
    bin: PathBuf,
    /// `<cluster>/pgbackrest`: the configuration file, logs, locks and spool.
    home: PathBuf,
    repo_path: Option<PathBuf>,
    config: BackupConfig,
    passphrase: Secret,
    /// The stanza: [`STANZA`] for the default region, `clientflow-<region>` for another one.
    stanza: String,
}

impl Repository {
    /// The set-up for `cluster` under `config`, reading (or generating, on first use) the
    /// passphrase in `secrets_dir`. Nothing is written outside the secrets directory yet.
    pub fn new(cluster: &PrivateCluster, config: &BackupConfig, secrets_dir: &Path) -> Result<Self, BackupError> {
        Self::named(cluster, config, secrets_dir, STANZA, PASSPHRASE_FILE)
    }

    /// The set-up of a region's own cluster: its stanza, and its passphrase in the secrets
    /// directory's `passphrase_file` (unless configured), so that no two regions' repositories
    /// share a key.
    pub fn named(
        cluster: &PrivateCluster,
        config: &BackupConfig,
        secrets_dir: &Path,
        stanza: &str,
        passphrase_file: &str,
    ) -> Result<Self, BackupError> {
        let bin = find_pgbackrest(config.pgbackrest.as_deref())?;
        let passphrase = match &config.passphrase {
            Some(p) => p.clone(),
            None => load_or_create_passphrase(&secrets_dir.join(passphrase_file))?,
        };
        let repo_path = match (&config.s3, &config.repo_path) {
            (Some(_), _) => None,
            (None, Some(p)) => Some(p.clone()),
            (None, None) => Some(cluster.root().join("backups")),
        };
        Ok(Self {
            cluster: cluster.clone(),
            bin,
            home: cluster.root().join("pgbackrest"),
            repo_path,
            config: config.clone(),
            passphrase,
            stanza: stanza.to_string(),
        })
    }

    /// The stanza these backups are kept under in the repository.
    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("pgbackrest.conf")
    }

    /// The repository's directory (`None` for an object store).
    pub fn repo_path(&self) -> Option<&Path> {
        self.repo_path.as_deref()
    }

    /// A description of where backups go, for messages.
    pub fn describe(&self) -> String {
        match (&self.repo_path, &self.config.s3) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(s3)) => format!("s3://{}{} at {}", s3.bucket, s3_path(s3), s3.endpoint),
            (None, None) => "nowhere".into(),
        }
    }

    /// The cluster these backups are of.
    pub fn cluster(&self) -> &PrivateCluster {
        &self.cluster
    }

    /// The server settings and environment that make the cluster archive its WAL here.
    pub fn archiving(&self) -> (Vec<(String, String)>, SecretEnv) {
        let settings = vec![
            ("wal_level".to_string(), "replica".to_string()),
            ("archive_mode".to_string(), "on".to_string()),
            ("archive_command".to_string(), format!("{} archive-push %p", self.command_prefix())),
            ("archive_timeout".to_string(), self.config.archive_timeout_secs.to_string()),
        ];
        (settings, self.secret_env())
    }

    /// The secrets pgBackRest needs, as environment variables.
    pub fn secret_env(&self) -> Vec<(String, Secret)> {
        let mut env = vec![("PGBACKREST_REPO1_CIPHER_PASS".to_string(), self.passphrase.clone())];
        if let Some(s3) = &self.config.s3 {
            if let Some(k) = &s3.key {
                env.push(("PGBACKREST_REPO1_S3_KEY".into(), k.clone()));
            }
            if let Some(k) = &s3.key_secret {
                env.push(("PGBACKREST_REPO1_S3_KEY_SECRET".into(), k.clone()));
            }
        }
        env
    }

    /// `pgbackrest --config=… --stanza=clientflow`, shell-quoted, as the cluster runs it.
    fn command_prefix(&self) -> String {
        format!(
            "{} --config={} --stanza={}",
            shell_quote(&self.bin.display().to_string()),
            shell_quote(&self.config_file().display().to_string()),
            shell_quote(&self.stanza)
        )
    }

    /// Writes pgBackRest's configuration file (no secrets in it) and creates its directories.
    pub fn write_config(&self) -> Result<(), BackupError> {
        for dir in [self.home.clone(), self.home.join("log"), self.home.join("lock"), self.home.join("spool")] {
            self.cluster.make_owned_dir(&dir)?;
        }
        if let Some(repo) = &self.repo_path
            && !repo.exists()
        {
            self.cluster.make_owned_dir(repo)?;
        }
        let mut conf =
            String::from("# Written by ClientFlow at each start from its [backup] settings; edits are lost.\n");
        conf.push_str("# The repository's passphrase is not here: it comes from the environment.\n[global]\n");
        match (&self.repo_path, &self.config.s3) {
            (Some(p), _) => conf.push_str(&format!("repo1-path={}\n", p.display())),
            (None, Some(s3)) => {
                conf.push_str("repo1-type=s3\n");
                conf.push_str(&format!("repo1-path={}\n", s3_path(s3)));
                conf.push_str(&format!("repo1-s3-bucket={}\n", s3.bucket));
                conf.push_str(&format!("repo1-s3-endpoint={}\n", s3.endpoint));
                conf.push_str(&format!("repo1-s3-region={}\n", s3.region));
                conf.push_str(&format!("repo1-s3-uri-style={}\n", s3.uri_style.as_deref().unwrap_or("path")));
                if let Some(port) = s3.port {
                    conf.push_str(&format!("repo1-storage-port={port}\n"));
                }
                if s3.verify_tls == Some(false) {
                    conf.push_str("repo1-storage-verify-tls=n\n");
                }
            }
            (None, None) => {}
        }
        conf.push_str("repo1-cipher-type=aes-256-cbc\n");
        conf.push_str("repo1-retention-full-type=time\n");
        conf.push_str(&format!("repo1-retention-full={}\n", self.config.retention_days));
        conf.push_str(&format!("log-path={}\n", self.home.join("log").display()));
        conf.push_str(&format!("lock-path={}\n", self.home.join("lock").display()));
        conf.push_str(&format!("spool-path={}\n", self.home.join("spool").display()));
        conf.push_str("log-level-console=warn\nlog-level-stderr=error\nlog-level-file=info\n");
        conf.push_str("start-fast=y\ncompress-type=gz\ncompress-level=3\n");
        conf.push_str(&format!("archive-timeout={}\n", (self.config.archive_timeout_secs * 2).clamp(60, 3600)));
        conf.push_str(&format!("\n[{}]\n", self.stanza));
        conf.push_str(&format!("pg1-path={}\n", self.cluster.pgdata().display()));
        conf.push_str(&format!("pg1-socket-path={}\n", self.cluster.socket_dir().display()));
        conf.push_str(&format!("pg1-port={}\n", super::cluster::PORT));
        conf.push_str(&format!("pg1-user={}\n", super::cluster::SUPERUSER));
        self.cluster.write_owned_file(&self.config_file(), conf.as_bytes())?;
        Ok(())
    }

    fn pgbackrest(&self, command: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(format!("--config={}", self.config_file().display()))
            .arg(format!("--stanza={}", self.stanza))
            .arg(command);
        for (k, v) in self.secret_env() {
            c.env(k, v.expose());
        }
        c
    }

    /// Runs a pgBackRest command; while another one holds the stanza's lock (a scheduled
    /// backup, another process's stanza-create), waits for it, up to an hour.
    fn run(&self, step: &str, command: Command) -> Result<String, BackupError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        loop {
            let mut attempt = Command::new(command.get_program());
            attempt.args(command.get_args());
            for (k, v) in command.get_envs() {
                if let Some(v) = v {
                    attempt.env(k, v);
                }
            }
            match self.cluster.run_as_owner(step, &mut attempt) {
                Ok(out) => return Ok(out),
                Err(ClusterError::Command { detail, .. })
                    if detail.contains("unable to acquire lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(ClusterError::Command { step, detail }) => {
                    return Err(BackupError::Other(format!("{step} failed: {}", clean(&detail))));
                }
                Err(other) => return Err(BackupError::Cluster(other)),
            }
        }
    }

    /// Creates the stanza (or checks that it matches the cluster); safe to repeat.
    pub fn stanza_create(&self) -> Result<(), BackupError> {
        self.run("pgbackrest stanza-create", self.pgbackrest("stanza-create")).map(|_| ())
    }

    /// Takes a backup (and expires what retention no longer needs).
    pub fn backup(&self, kind: BackupType) -> Result<(), BackupError> {
        let mut c = self.pgbackrest("backup");
        c.arg(format!("--type={}", kind.as_str()));
        self.run("pgbackrest backup", c).map(|_| ())
    }

    /// Checks that the cluster archives into the repository (switches a WAL segment and waits
    /// for it to arrive).
    pub fn check(&self) -> Result<(), BackupError> {
        self.run("pgbackrest check", self.pgbackrest("check")).map(|_| ())
    }

    /// What the repository holds.
    pub fn info(&self) -> Result<RepoInfo, BackupError> {
        let mut c = self.pgbackrest("info");
        c.arg("--output=json");
        let out = self.run("pgbackrest info", c)?;
        parse_info(&out)
    }

    /// Restores into `into`'s data directory (which must not exist yet), recovering to `target`
    /// and promoting there. `into` is prepared (created, owned by the cluster's user) first.
    pub fn restore(&self, target: &RestoreTarget, into: &PrivateCluster) -> Result<(), BackupError> {
        into.prepare()?;
        if into.pgdata().exists() {
            return Err(BackupError::Other(format!(
                "{} exists: a restore never writes over a cluster",
                into.pgdata().display()
            )));
        }
        let mut c = self.pgbackrest("restore");
        c.arg(format!("--pg1-path={}", into.pgdata().display()));
        match target {
            RestoreTarget::Latest => {}
            RestoreTarget::Time(t) => {
                c.arg("--type=time").arg(format!("--target={}", pg_timestamp(*t)));
            }
            RestoreTarget::Xid(x) => {
                c.arg("--type=xid").arg(format!("--target={x}"));
            }
        }
        if !matches!(target, RestoreTarget::Latest) {
            c.arg("--target-action=promote");
        }
        self.run("pgbackrest restore", c).map(|_| ())
    }
}

/// `'…'` for a shell (pg_ctl and the archiver run commands through one).
fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=+:@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn s3_path(s3: &crate::config::S3RepoConfig) -> String {
    s3.path.clone().unwrap_or_else(|| "/clientflow".into())
}

/// PostgreSQL's timestamp syntax, in UTC with microseconds.
pub fn pg_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// pgBackRest's error output without its blank lines.
fn clean(detail: &str) -> String {
    detail.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

fn find_pgbackrest(configured: Option<&Path>) -> Result<PathBuf, BackupError> {
    if let Some(p) = configured {
        return if p.exists() { Ok(p.to_path_buf()) } else { Err(BackupError::NotInstalled(p.display().to_string())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("pgbackrest"))
        .find(|p| p.is_file())
        .ok_or_else(|| BackupError::NotInstalled("pgbackrest".into()))
}

/// Whether pgBackRest can be found (for `doctor`).
pub fn installed(config: &BackupConfig) -> Result<PathBuf, BackupError> {
    find_pgbackrest(config.pgbackrest.as_deref())
}

fn load_or_create_passphrase(path: &Path) -> Result<Secret, BackupError> {
    let path = path.to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 20 => return Ok(Secret::new(text.trim())),
        Ok(_) => {
            return Err(BackupError::Other(format!(
                "{} is too short to be a backup passphrase: restore it from your copy (without it the backups \
                 can't be read)",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BackupError::Other(format!("cannot read {}: {e}", path.display()))),
    }
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let passphrase = hex::encode(bytes);
    crate::fsutil::write_private(&path, format!("{passphrase}\n").as_bytes()).map_err(BackupError::Other)?;
    tracing::info!(
        file = %path.display(),
        "generated the backup repository's passphrase; keep a copy away from this server (without it the backups \
         can't be read)"
    );
    Ok(Secret::new(passphrase))
}

#[derive(Deserialize)]
struct RawStanza {
    #[serde(default)]
    archive: Vec<RawArchive>,
    #[serde(default)]
    backup: Vec<RawBackup>,
    status: RawStatus,
}

#[derive(Deserialize)]
struct RawArchive {
    min: Option<String>,
    max: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: RawTimestamp,
    info: RawSizes,
    prior: Option<String>,
    #[serde(default)]
    error: bool,
}

#[derive(Deserialize)]
struct RawTimestamp {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct RawSizes {
    size: u64,
    repository: RawRepoSize,
}

#[derive(Deserialize)]
struct RawRepoSize {
    delta: u64,
}

/// Parses `pgbackrest info --output=json` for the one stanza.
pub fn parse_info(json: &str) -> Result<RepoInfo, BackupError> {
    let stanzas: Vec<RawStanza> = serde_json::from_str(json)
        .map_err(|e| BackupError::Other(format!("unexpected output from pgbackrest info: {e}")))?;
    let Some(stanza) = stanzas.into_iter().next() else {
        return Ok(RepoInfo {
            status: "no stanza".into(),
            status_ok: false,
            backups: Vec::new(),
            wal_min: None,
            wal_max: None,
        });
    };
    let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let backups = stanza
        .backup
        .into_iter()
        .filter(|b| !b.error)
        .map(|b| BackupEntry {
            label: b.label,
            kind: b.kind,
            started_at: at(b.timestamp.start),
            stopped_at: at(b.timestamp.stop),
            database_bytes: b.info.size,
            repository_bytes: b.info.repository.delta,
            prior: b.prior,
        })
        .collect();
    let archive = stanza.archive.into_iter().next();
    Ok(RepoInfo {
        status: stanza.status.message,
        status_ok: stanza.status.code == 0,
        backups,
        wal_min: archive.as_ref().and_then(|a| a.min.clone()),
        wal_max: archive.and_then(|a| a.max),
    })
}

/// The number of a WAL segment (16 MiB segments) from its file name, for comparing positions.
pub fn wal_segment_number(name: &str) -> Option<u64> {
    if name.len() < 24 {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 0x100 + seg)
}

/// The live cluster's WAL archiver, from `pg_stat_archiver`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveStatus {
    /// `archive_mode` as the server runs with it.
    pub mode: String,
    pub last_archived_wal: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_archived_time: Option<OffsetDateTime>,
    pub last_failed_wal: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failed_time: Option<OffsetDateTime>,
    pub failed_count: i64,
    /// The segment being written now.
    pub current_wal: String,
    /// Whether the newest attempt failed (the archiver retries; WAL piles up meanwhile).
    pub failing: bool,
    /// Completed segments not yet archived.
    pub pending_segments: u64,
    /// How long WAL has been waiting: since the last success, while segments are pending.
    pub lag_seconds: f64,
}

impl ArchiveStatus {
    pub fn describe(&self) -> String {
        if self.mode == "off" {
            return "archive_mode is off".into();
        }
        let at = |t: &Option<OffsetDateTime>| t.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
        if self.failing {
            format!(
                "archiving is failing: {} failed at {} ({} failures); last success {} at {}",
                self.last_failed_wal.as_deref().unwrap_or("?"),
                at(&self.last_failed_time),
                self.failed_count,
                self.last_archived_wal.as_deref().unwrap_or("none"),
                at(&self.last_archived_time)
            )
        } else {
            format!(
                "last archived {} at {}; {} segment(s) waiting",
                self.last_archived_wal.as_deref().unwrap_or("none"),
                at(&self.last_archived_time),
                self.pending_segments
            )
        }
    }
}

/// Reads the archiver's state (any role may read it).
pub async fn archive_status(conn: &mut sqlx::PgConnection) -> Result<ArchiveStatus, sqlx::Error> {
    type Row = (
        String,
        Option<String>,
        Option<OffsetDateTime>,
        Option<String>,
        Option<OffsetDateTime>,
        i64,
        String,
        OffsetDateTime,
    );
    let (mode, last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, failed_count, current_wal, now): Row =
        sqlx::query_as(
            "SELECT current_setting('archive_mode'), last_archived_wal, last_archived_time, last_failed_wal,                     last_failed_time, failed_count,                     CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END, now()              FROM pg_stat_archiver",
        )
        .fetch_one(conn)
        .await?;
    let failing = match (last_failed_time, last_archived_time) {
        (Some(f), Some(a)) => f > a,
        (Some(_), None) => true,
        _ => false,
    };
    let current = wal_segment_number(&current_wal);
    let archived = last_archived_wal.as_deref().and_then(wal_segment_number);
    // The current segment is still being written; those before it are complete.
    let pending_segments = match (current, archived) {
        (Some(c), Some(a)) => c.saturating_sub(a + 1),
        (Some(_), None) if failing => 1,
        _ => 0,
    };
    let lag_seconds = if mode == "off" || (pending_segments == 0 && !failing) {
        0.0
    } else {
        let since = last_archived_time.or(last_failed_time).unwrap_or(now);
        (now - since).as_seconds_f64().max(0.0)
    };
    Ok(ArchiveStatus {
        mode,
        last_archived_wal,
        last_archived_time,
        last_failed_wal,
        last_failed_time,
        failed_count,
        current_wal,
        failing,
        pending_segments,
        lag_seconds,
    })
}

/// What `/metrics` says about backups: read by the app role from `backup_log` and the archiver.
#[derive(Debug, Clone, Default)]
pub struct BackupStatus {
    /// Seconds since the newest successful backup finished (`None`: never).
    pub newest_backup_age: Option<f64>,
    pub archive: Option<ArchiveStatus>,
    /// The last drill: passed, seconds since it finished, its RPO and RTO.
    pub last_drill_ok: Option<bool>,
    pub last_drill_age: Option<f64>,
    pub last_drill_rpo: Option<f64>,
    pub last_drill_rto: Option<f64>,
}

pub async fn backup_status(conn: &mut sqlx::PgConnection) -> Result<BackupStatus, sqlx::Error> {
    let newest_backup_age: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - max(finished_at))::float8 FROM backup_log WHERE kind = 'backup' AND ok",
    )
    .fetch_one(&mut *conn)
    .await?;
    let drill: Option<(bool, f64, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT ok, extract(epoch FROM now() - finished_at)::float8, (detail->>'rpo_seconds')::float8,                 (detail->>'rto_seconds')::float8          FROM backup_log WHERE kind = 'drill' ORDER BY finished_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let archive = archive_status(conn).await?;
    Ok(BackupStatus {
        newest_backup_age,
        archive: (archive.mode != "off").then_some(archive),
        last_drill_ok: drill.map(|d| d.0),
        last_drill_age: drill.map(|d| d.1),
        last_drill_rpo: drill.and_then(|d| d.2),
        last_drill_rto: drill.and_then(|d| d.3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed() {
        let json = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":23213658,"repository":{"delta":3101184,"size":3101184},"size":23213658},"label":"20261205-045916F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,"timestamp":{"start":1796446756,"stop":1796446762},"type":"full"}],"cipher":"aes-256-cbc","db":[],"name":"clientflow","repo":[],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;
        let info = parse_info(json).unwrap();
        assert!(info.status_ok);
        assert_eq!(info.backups.len(), 1);
        assert_eq!(info.newest_full().unwrap().label, "20261205-045916F");
        assert_eq!(info.earliest_recovery().unwrap().unix_timestamp(), 1796446762);
        assert_eq!(info.wal_max.as_deref(), Some("000000010000000000000003"));
    }

    #[test]
    fn segments_are_numbered_across_log_files() {
        assert_eq!(wal_segment_number("0000000100000000000000FF"), Some(0xFF));
        assert_eq!(wal_segment_number("000000010000000100000000"), Some(0x100));
        assert_eq!(wal_segment_number("short"), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/pgbackrest"), "/usr/bin/pgbackrest");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(pg_timestamp(t), "2023-11-14 22:13:20.123456+00");
    }
}
