//! Backups of the private cluster: taking them, listing what can be recovered, restoring to a
//! moment, and the restore drill that proves a backup restores.
//!
//! The mechanics (pgBackRest, the repository, WAL archiving) are the platform's
//! (`platform::db::backup`); this module decides what a backup run, a restore and a drill
//! consist of, records each in `backup_log`, and runs the schedule for the worker.
//!
//! **The drill** writes a canary row into the live database (in the same transaction that
//! counts every table's rows), waits until the WAL holding it is archived — the recovery point
//! objective, measured — restores the newest backup and the archived WAL up to the canary's
//! transaction into a scratch cluster on a private socket — the recovery time, measured — and
//! checks the copy: the canary is there, the catalog checks pass (row-level security on every
//! tenant table), every organization's audit chain verifies, and every table has the rows it
//! had when the canary was written. Transactions that committed while the counts were taken
//! are found in the copy (`pg_xact_status`) and reported, since their rows may differ. The
//! scratch cluster is removed whatever the outcome; a failure is recorded and makes the
//! command exit non-zero and `/metrics` say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use time::OffsetDateTime;

use crate::config::{BackupConfig, Config};
use crate::platform::db::RegionId;
use crate::platform::db::backup::{self as pgbr, BackupEntry, BackupType, Repository, RestoreTarget};
use crate::platform::db::cluster::{ClusterUse, PrivateCluster};
use crate::platform::db::provision::{self, Resolved};

/// What a command needs to take backups of one region's running private cluster.
#[derive(Clone)]
pub struct Live {
    /// Whose backups: each region's cluster has its own repository (`docs/security/residency.md`).
    pub region: RegionId,
    pub repo: Repository,
    /// The cluster's superuser on ClientFlow's database (canaries, the log, WAL positions).
    pub admin: PgConnectOptions,
    pub config: BackupConfig,
}

impl Live {
    /// From a resolution of the private cluster with backups on.
    /// The default region's.
    pub fn from_resolved(resolved: &Resolved, config: &Config) -> Option<Self> {
        let repo = resolved.backups.clone()?;
        let database = resolved.owner.as_ref().and_then(|o| o.get_database().map(str::to_string))?;
        let admin = repo.cluster().admin_options().database(&database);
        Some(Self { region: config.residency.default_region, repo, admin, config: config.backup.clone() })
    }

    /// Every region's whose database is a private cluster with backups on, the default first.
    pub fn every_region(resolved: &Resolved, config: &Config) -> Vec<Self> {
        let mut out: Vec<Self> = Self::from_resolved(resolved, config).into_iter().collect();
        for r in &resolved.regions {
            let (Some(repo), Some(database)) =
                (r.backups.clone(), r.owner.as_ref().and_then(|o| o.get_database().map(str::to_string)))
            else {
                continue;
            };
            let admin = repo.cluster().admin_options().database(&database);
            out.push(Self {
                region: r.region,
                repo,
                admin,
                config: config.residency.backup_config(r.region, &config.backup),
            });
        }
        out
    }
}

/// The regions a `--region` option names: the one given, or every region.
pub fn regions_named(config: &Config, region: Option<&str>) -> anyhow::Result<Vec<RegionId>> {
    let all = config.residency.region_ids();
    match region {
        None | Some("all") => Ok(all),
        Some(name) => match RegionId::parse(name).filter(|r| all.contains(r)) {
            Some(r) => Ok(vec![r]),
            None => anyhow::bail!(
                "--region {name}: not a configured region (configured: {})",
                all.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// The repository of `region`'s private cluster, without starting anything; an error saying
/// why when ClientFlow takes no backups of that region.
pub fn region_repository(config: &Config, region: RegionId) -> anyhow::Result<Repository> {
    if let Some(why) = not_ours(config) {
        anyhow::bail!(why);
    }
    provision::region_repository(config, region)?.ok_or_else(|| {
        anyhow::anyhow!(
            "region {region}'s database is at residency.regions.{region}.database_url, a server of its own: its \
             backups are that server's (its provider's, or pgBackRest run there), not ClientFlow's"
        )
    })
}

/// The database of `region` in its private cluster.
pub fn region_database(config: &Config, region: RegionId) -> String {
    if region == config.residency.default_region { "clientflow".into() } else { config.residency.database_name(region) }
}

/// Why backups are not ours to take, when they aren't (an external database, or backups off).
pub fn not_ours(config: &Config) -> Option<String> {
    if config.database.url.is_some() {
        return Some(
            "backups of an external database (DATABASE_URL) are its provider's: ClientFlow takes none. Check with \
             your provider (RDS, Cloud SQL, Neon, Supabase, Crunchy Bridge, …) that point-in-time recovery is on, \
             that it covers at least 7 days, and that a restore has been tried recently; docs/operations.md, \
             \"Backups\", has the checklist."
                .into(),
        );
    }
    if !config.backup.enabled {
        return Some(
            "backups are off (backup.enabled = false): the private cluster archives no WAL and no backups are taken"
                .into(),
        );
    }
    None
}

/// Progress lines for a long command (standard error, so `--json` output stays one document).
pub struct Progress {
    started: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self { started: Instant::now(), quiet }
    }

    #[allow(clippy::print_stderr)] // the command line's progress display
    pub fn step(&self, what: &str) {
        if !self.quiet {
            eprintln!("[{:>7.1}s] {what}", self.started.elapsed().as_secs_f64());
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    #[serde(rename = "type")]
    pub kind: BackupType,
    pub label: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub seconds: f64,
    pub database_bytes: Option<u64>,
    pub repository_bytes: Option<u64>,
}

/// Takes a backup now and records it.
pub async fn take_backup(live: &Live, kind: BackupType, progress: &Progress) -> anyhow::Result<BackupReport> {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    progress.step(&format!("region {}: taking a {} backup into {}", live.region, kind.as_str(), live.repo.describe()));
    let repo = live.repo.clone();
    let result = blocking(move || {
        repo.backup(kind)?;
        repo.info()
    })
    .await;
    let seconds = clock.elapsed().as_secs_f64();
    match result {
        Ok(info) => {
            let newest = info.newest().cloned();
            let report = BackupReport {
                kind,
                label: newest.as_ref().map(|b| b.label.clone()),
                started_at,
                seconds,
                database_bytes: newest.as_ref().map(|b| b.database_bytes),
                repository_bytes: newest.as_ref().map(|b| b.repository_bytes),
            };
            progress.step(&format!("backup {} done in {seconds:.1} s", report.label.as_deref().unwrap_or("?")));
            record(&live.admin, "backup", Some(kind), started_at, true, serde_json::to_value(&report)?).await;
            Ok(report)
        }
        Err(e) => {
            record(
                &live.admin,
                "backup",
                Some(kind),
                started_at,
                false,
                serde_json::json!({ "error": e.to_string(), "seconds": seconds }),
            )
            .await;
            Err(e)
        }
    }
}

/// Writes one row of `backup_log`; a failure to record is logged, never hides the outcome.
async fn record(
    admin: &PgConnectOptions,
    kind: &str,
    backup_type: Option<BackupType>,
    started_at: OffsetDateTime,
    ok: bool,
    detail: serde_json::Value,
) {
    let result = async {
        let mut conn = provision::connect(admin, "private cluster").await?;
        sqlx::query(
            "INSERT INTO backup_log (kind, backup_type, started_at, finished_at, ok, detail) \
             VALUES ($1, $2, $3, greatest(now(), $3), $4, $5)",
        )
        .bind(kind)
        .bind(backup_type.map(BackupType::as_str))
        .bind(started_at)
        .bind(ok)
        .bind(detail)
        .execute(&mut conn)
        .await?;
        conn.close().await.ok();
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, kind, "could not record the outcome in backup_log");
    }
}

/// The repository's backups and the window of time they can recover.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub region: Option<RegionId>,
    pub repository: String,
    pub status: String,
    pub backups: Vec<BackupEntry>,
    /// The earliest and latest moments a restore can reach (`None` without any backup).
    #[serde(with = "time::serde::rfc3339::option")]
    pub earliest_recovery: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub latest_recovery: Option<OffsetDateTime>,
    pub archiving: Option<pgbr::ArchiveStatus>,
}

/// Lists what `repo` holds; `archiving` is the live cluster's archiver when it runs.
pub async fn list(repo: &Repository, archiving: Option<pgbr::ArchiveStatus>) -> anyhow::Result<Listing> {
    let r = repo.clone();
    let info = blocking(move || r.info()).await?;
    let newest_stop = info.newest().map(|b| b.stopped_at);
    // WAL archived after the newest backup extends the window up to the newest archived segment.
    let latest = match (&archiving, newest_stop) {
        (_, None) => None,
        (Some(a), Some(stop)) => Some(a.last_archived_time.map_or(stop, |t| t.max(stop))),
        (None, Some(stop)) => Some(stop),
    };
    Ok(Listing {
        region: None,
        repository: repo.describe(),
        status: info.status.clone(),
        earliest_recovery: info.earliest_recovery(),
        latest_recovery: latest,
        backups: info.backups,
        archiving,
    })
}

/// The live cluster's archiver, over its superuser connection.
pub async fn archive_status(admin: &PgConnectOptions) -> anyhow::Result<pgbr::ArchiveStatus> {
    let mut conn = provision::connect(admin, "private cluster").await?;
    let status = pgbr::archive_status(&mut conn).await?;
    conn.close().await.ok();
    Ok(status)
}

/// What a restore (or the drill's restore) found in the copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopyChecks {
    /// Tenant tables whose row-level security is not as the invariants require (empty: pass).
    pub catalog_problems: Vec<String>,
    pub organizations: usize,
    pub audit_events: u64,
    /// Organizations whose audit chain is broken: (organization, first break).
    pub audit_breaks: Vec<(String, String)>,
    pub tables: usize,
    pub rows: i64,
}

impl CopyChecks {
    pub fn passed(&self) -> bool {
        self.catalog_problems.is_empty() && self.audit_breaks.is_empty()
    }
}

/// Runs the catalog checks and verifies every audit chain on a copy (as its superuser).
async fn check_copy(
    conn: &mut PgConnection,
    keys: &[ed25519_dalek::VerifyingKey],
    as_of: OffsetDateTime,
) -> anyhow::Result<CopyChecks> {
    let catalog_problems = crate::platform::db::catalog::tenant_invariant_problems(conn).await?;
    let orgs: Vec<(crate::platform::ids::OrgId, String)> =
        sqlx::query_as("SELECT id, slug FROM organizations ORDER BY created_at, id").fetch_all(&mut *conn).await?;
    let mut audit_events = 0;
    let mut audit_breaks = Vec::new();
    let verification = crate::audit::chain::Verification::new(keys, as_of);
    for (id, slug) in &orgs {
        let report = crate::audit::chain::verify_org(conn, *id, &verification).await?;
        audit_events += report.events;
        if let Some(b) = report.first_break {
            audit_breaks.push((slug.clone(), format!("at event {}: {}", b.seq, b.message)));
        }
    }
    let counts = table_counts(conn).await?;
    Ok(CopyChecks {
        catalog_problems,
        organizations: orgs.len(),
        audit_events,
        audit_breaks,
        tables: counts.len(),
        rows: counts.iter().map(|(_, n)| n).sum(),
    })
}

/// Rows of every table of the schema (the canaries excepted), by name.
async fn table_counts(conn: &mut PgConnection) -> anyhow::Result<Vec<(String, i64)>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relname <> 'backup_canaries' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", provision::quote_ident(&t)))
            .fetch_one(&mut *conn)
            .await?;
        out.push((t, n));
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub into: PathBuf,
    pub cluster: PathBuf,
    pub target: String,
    /// From the start of the restore until the copy answered, promoted.
    pub seconds: f64,
    pub checks: CopyChecks,
}

/// Restores the backups of the cluster under `data_dir` to `target` into the new data
/// directory `into` (its `postgres` cluster, with a copy of `data_dir`'s secrets so that
/// `clientflow serve` can use it), starts it to let recovery reach the target, checks it, and
/// stops it.
pub async fn restore_into(
    config: &Config,
    region: RegionId,
    target: RestoreTarget,
    into: &Path,
    keys: &[ed25519_dalek::VerifyingKey],
    progress: &Progress,
) -> anyhow::Result<RestoreReport> {
    if into.exists() && std::fs::read_dir(into).map(|mut d| d.next().is_some()).unwrap_or(true) {
        anyhow::bail!(
            "{} exists and is not empty: a restore goes into a new directory (it never writes over a cluster)",
            into.display()
        );
    }
    let source = region_repository(config, region)?;
    if std::fs::canonicalize(&config.data_dir).ok() == std::fs::canonicalize(into).ok() {
        anyhow::bail!("--into names the live data directory; use --in-place to restore over it");
    }
    std::fs::create_dir_all(into).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", into.display()))?;
    copy_secrets(&config.data_dir, into)?;
    // Where the region's cluster sits in a data directory: the restored one is laid out alike.
    let cluster_dir = if region == config.residency.default_region {
        into.to_path_buf()
    } else {
        provision::region_data_dir(into, region)
    };
    let copy = PrivateCluster::new(&cluster_dir, config.database.postgres_bin_dir.as_deref(), true)?
        .with_settings(vec![("archive_mode".into(), "off".into())], source.secret_env());
    let database = region_database(config, region);
    let (seconds, checks) = restore_and_check(&source, &copy, &target, keys, progress, &database).await?;
    Ok(RestoreReport {
        into: into.to_path_buf(),
        cluster: copy.root().to_path_buf(),
        target: describe_target(&target),
        seconds,
        checks,
    })
}

/// Restores over the data directory's own cluster, which must be stopped; the cluster it
/// replaces is kept beside it (`data.before-restore-<time>`).
pub async fn restore_in_place(
    config: &Config,
    region: RegionId,
    target: RestoreTarget,
    keys: &[ed25519_dalek::VerifyingKey],
    progress: &Progress,
) -> anyhow::Result<(RestoreReport, PathBuf)> {
    let source = region_repository(config, region)?;
    let cluster = source.cluster().clone();
    if cluster.is_running() {
        anyhow::bail!(
            "the private cluster in {} is running: stop `clientflow serve` and every other clientflow process first",
            cluster.root().display()
        );
    }
    let kept = cluster.root().join(format!("data.before-restore-{}", OffsetDateTime::now_utc().unix_timestamp()));
    if cluster.pgdata().exists() {
        progress.step(&format!("moving the current cluster aside to {}", kept.display()));
        std::fs::rename(cluster.pgdata(), &kept)
            .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", cluster.pgdata().display()))?;
    }
    let copy = cluster.with_settings(vec![("archive_mode".into(), "off".into())], source.secret_env());
    let database = region_database(config, region);
    let (seconds, checks) =
        restore_and_check(&source, &copy, &target, keys, progress, &database).await.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nthe cluster it was to replace is kept in {}: to go back to it, remove {} and move it there",
                kept.display(),
                copy.pgdata().display()
            )
        })?;
    Ok((
        RestoreReport {
            into: config.data_dir.clone(),
            cluster: copy.root().to_path_buf(),
            target: describe_target(&target),
            seconds,
            checks,
        },
        kept,
    ))
}

fn describe_target(target: &RestoreTarget) -> String {
    match target {
        RestoreTarget::Latest => "latest".into(),
        RestoreTarget::Time(t) => rfc3339(*t),
        RestoreTarget::Xid(x) => format!("transaction {x}"),
    }
}

/// The backup repository's object store as a sub-processor, for the registry
/// (`disclosure::subprocessors`): on when the private cluster's backups go to `backup.s3`.
/// A repository on a local disk involves no one else.
pub fn sub_processor(config: &Config) -> crate::platform::subprocessor::SubProcessor {
    // The default region's bucket, else the first further region's (each region's is its own).
    let regional =
        config.residency.regions.values().filter(|r| r.database_url.is_none()).find_map(|r| r.backup_s3.as_ref());
    let s3 = config.backup.s3.as_ref().or(regional).filter(|_| config.backup.enabled && config.database.url.is_none());
    crate::platform::subprocessor::SubProcessor {
        id: "backup-store",
        name: "S3-compatible object store (backups)",
        enabled: s3.is_some(),
        setting: "backup.s3",
        purpose: "Keeps the database's backups and WAL archive for point-in-time recovery.",
        receives: &[
            "the whole database and its write-ahead log, encrypted by pgBackRest (AES-256-CBC, the passphrase stays here) before upload",
        ],
        region: match s3 {
            Some(s3) if !s3.region.is_empty() => format!("{} ({})", s3.region, s3.endpoint),
            Some(s3) => s3.endpoint.clone(),
            None => "—".into(),
        },
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The keys and passwords a data directory's cluster goes with.
fn copy_secrets(from: &Path, to: &Path) -> anyhow::Result<()> {
    let (src, dst) = (provision::secrets_dir(from), provision::secrets_dir(to));
    let Ok(entries) = std::fs::read_dir(&src) else { return Ok(()) };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            crate::platform::fsutil::write_private(&dst.join(entry.file_name()), &bytes).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(())
}

/// Restores into `copy`, starts it until recovery has promoted it, checks it and stops it:
/// (seconds until it answered promoted, the checks).
async fn restore_and_check(
    source: &Repository,
    copy: &PrivateCluster,
    target: &RestoreTarget,
    keys: &[ed25519_dalek::VerifyingKey],
    progress: &Progress,
    database: &str,
) -> anyhow::Result<(f64, CopyChecks)> {
    let clock = Instant::now();
    let (seconds, use_) = restore_and_start(source, copy, target, progress).await?;
    let result = async {
        progress.step("checking the copy: catalog, audit chains, row counts");
        let mut conn = connect_copy(copy, database).await?;
        let as_of = match target {
            RestoreTarget::Time(t) => *t,
            _ => OffsetDateTime::now_utc(),
        };
        let checks = check_copy(&mut conn, keys, as_of).await?;
        conn.close().await.ok();
        anyhow::Ok(checks)
    }
    .await;
    progress.step("stopping the restored cluster");
    let _ = blocking(move || use_.end().map_err(anyhow::Error::from)).await;
    let checks = result?;
    progress.step(&format!("done in {:.1} s", clock.elapsed().as_secs_f64()));
    Ok((seconds, checks))
}

/// Restores and starts `copy`, waiting until recovery is over: (seconds, its use).
async fn restore_and_start(
    source: &Repository,
    copy: &PrivateCluster,
    target: &RestoreTarget,
    progress: &Progress,
) -> anyhow::Result<(f64, ClusterUse)> {
    let clock = Instant::now();
    progress.step(&format!(
        "restoring from {} into {} (target: {})",
        source.describe(),
        copy.root().display(),
        describe_target(target)
    ));
    let (s, c, t) = (source.clone(), copy.clone(), target.clone());
    blocking(move || s.restore(&t, &c).map_err(anyhow::Error::from)).await?;
    progress.step("starting the restored cluster and replaying WAL");
    let c = copy.clone();
    let use_ = blocking(move || c.ensure_running().map_err(anyhow::Error::from)).await?;
    let waited = async {
        let mut conn = connect_copy(copy, "postgres").await?;
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut conn).await?;
            if !recovering {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the restored cluster was still recovering after an hour");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        conn.close().await.ok();
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = waited {
        let log = copy.root().join("log").join("postgresql.log");
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        let _ = blocking(move || use_.end().map_err(anyhow::Error::from)).await;
        anyhow::bail!("the restored cluster did not finish recovery: {e}\n{}", tail.join("\n"));
    }
    let seconds = clock.elapsed().as_secs_f64();
    progress.step(&format!("the restored cluster answers, promoted, after {seconds:.1} s"));
    Ok((seconds, use_))
}

async fn connect_copy(copy: &PrivateCluster, database: &str) -> anyhow::Result<PgConnection> {
    Ok(provision::connect(&copy.admin_options().database(database), "restored cluster").await?)
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub ok: bool,
    /// What failed, when something did.
    pub failure: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The canary's commit time: the recovery point the drill restored.
    #[serde(with = "time::serde::rfc3339::option")]
    pub recovery_point: Option<OffsetDateTime>,
    /// From the canary's commit until its WAL was in the repository: what a loss of the server
    /// at that moment would have cost.
    pub rpo_seconds: Option<f64>,
    /// From the start of the restore until the copy answered, promoted.
    pub rto_seconds: Option<f64>,
    pub backup: Option<String>,
    pub canary_found: Option<bool>,
    pub checks: Option<CopyChecks>,
    /// Tables whose rows differ between the live database at the canary and the copy.
    pub count_mismatches: Vec<(String, i64, i64)>,
    /// Transactions that committed while the counts were taken (their rows may differ).
    pub concurrent_transactions: usize,
    pub seconds: f64,
}

/// Runs the restore drill against the live cluster and records the outcome. A failed drill
/// is a report with `ok: false` (and recorded); an `Err` only when not even that was possible.
pub async fn drill(
    live: &Live,
    keys: &[ed25519_dalek::VerifyingKey],
    bin_dir: Option<&Path>,
    progress: &Progress,
) -> DrillReport {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let mut report = DrillReport {
        ok: false,
        failure: None,
        started_at,
        recovery_point: None,
        rpo_seconds: None,
        rto_seconds: None,
        backup: None,
        canary_found: None,
        checks: None,
        count_mismatches: Vec::new(),
        concurrent_transactions: 0,
        seconds: 0.0,
    };
    if let Err(e) = drill_steps(live, keys, bin_dir, progress, &mut report).await {
        report.failure = Some(format!("{e:#}"));
    }
    report.ok = report.failure.is_none();
    report.seconds = clock.elapsed().as_secs_f64();
    match &report.failure {
        None => progress.step(&format!("drill passed in {:.1} s", report.seconds)),
        Some(f) => progress.step(&format!("DRILL FAILED: {f}")),
    }
    let detail = serde_json::to_value(&report).unwrap_or_default();
    record(&live.admin, "drill", None, started_at, report.ok, detail).await;
    report
}

async fn drill_steps(
    live: &Live,
    keys: &[ed25519_dalek::VerifyingKey],
    bin_dir: Option<&Path>,
    progress: &Progress,
    report: &mut DrillReport,
) -> anyhow::Result<()> {
    let repo = live.repo.clone();
    let info = blocking(move || repo.info()).await?;
    let newest = info.newest().ok_or_else(|| anyhow::anyhow!("the repository holds no backup yet"))?;
    report.backup = Some(newest.label.clone());

    // The canary, in the transaction that counts the rows.
    progress.step("writing the canary and counting rows in the live database");
    let token = {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    let mut conn = provision::connect(&live.admin, "private cluster").await?;
    sqlx::query("DELETE FROM backup_canaries WHERE written_at < now() - interval '30 days'").execute(&mut conn).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
    let counts = table_counts(&mut tx).await?;
    let (xid, written_at): (String, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO backup_canaries (token, written_at) VALUES ($1, clock_timestamp()) \
         RETURNING pg_current_xact_id()::text, written_at",
    )
    .bind(&token)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let committed = Instant::now();
    let committed_at = OffsetDateTime::now_utc();
    report.recovery_point = Some(written_at);
    let segment: String =
        sqlx::query_scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetch_one(&mut conn).await?;

    // Until the canary's WAL segment is in the repository.
    progress.step(&format!("waiting for WAL segment {segment} to be archived"));
    let deadline = Duration::from_secs(u64::from(live.config.archive_timeout_secs) * 2 + 60);
    loop {
        let status = pgbr::archive_status(&mut conn).await?;
        if status.last_archived_wal.as_deref().is_some_and(|w| w >= segment.as_str()) {
            break;
        }
        if committed.elapsed() > deadline {
            anyhow::bail!(
                "WAL segment {segment} was not archived within {} s: archiving is failing or far behind ({})",
                deadline.as_secs(),
                status.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rpo = committed.elapsed().as_secs_f64();
    report.rpo_seconds = Some(rpo);
    progress.step(&format!("archived {rpo:.1} s after the canary was written (RPO)"));
    let _ = committed_at;
    conn.close().await.ok();

    // The scratch cluster: its own directory and socket under the live cluster's directory.
    let scratch_dir = live.repo.cluster().root().join(format!("drill-{}", std::process::id()));
    remove_scratch(&scratch_dir, bin_dir).await;
    std::fs::create_dir_all(&scratch_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", scratch_dir.display()))?;
    let scratch = PrivateCluster::new(&scratch_dir, bin_dir, false)?
        .with_settings(vec![("archive_mode".into(), "off".into())], live.repo.secret_env());
    // Recovery stops just after the canary's transaction (32-bit transaction id, as recovery
    // takes it).
    let xid8: u64 = xid.parse()?;
    let target = RestoreTarget::Xid(xid8 & 0xFFFF_FFFF);
    let outcome = async {
        let (rto, use_) = restore_and_start(&live.repo, &scratch, &target, progress).await?;
        report.rto_seconds = Some(rto);
        let checked = async {
            let mut copy = connect_copy(&scratch, database_of(&live.admin)).await?;
            let found: Option<String> = sqlx::query_scalar("SELECT token FROM backup_canaries WHERE token = $1")
                .bind(&token)
                .fetch_optional(&mut copy)
                .await?;
            report.canary_found = Some(found.is_some());
            progress.step("checking the copy: canary, catalog, audit chains, row counts");
            let checks = check_copy(&mut copy, keys, written_at).await?;
            let copied = table_counts(&mut copy).await?;
            let concurrent = concurrent_commits(&mut copy, &snapshot, xid8).await?;
            copy.close().await.ok();
            anyhow::Ok((checks, copied, concurrent))
        }
        .await;
        let _ = blocking(move || use_.end().map_err(anyhow::Error::from)).await;
        let (checks, copied, concurrent) = checked?;
        report.concurrent_transactions = concurrent;
        for (table, n) in &counts {
            let restored = copied.iter().find(|(t, _)| t == table).map_or(-1, |(_, m)| *m);
            if restored != *n {
                report.count_mismatches.push((table.clone(), *n, restored));
            }
        }
        for (table, n) in &copied {
            if !counts.iter().any(|(t, _)| t == table) {
                report.count_mismatches.push((table.clone(), -1, *n));
            }
        }
        report.checks = Some(checks);
        anyhow::Ok(())
    }
    .await;
    progress.step("removing the scratch cluster");
    remove_scratch(&scratch_dir, bin_dir).await;
    outcome?;

    let mut failures = Vec::new();
    if report.canary_found != Some(true) {
        failures.push("the canary written before the restore is missing from the copy".to_string());
    }
    if let Some(checks) = &report.checks {
        for p in &checks.catalog_problems {
            failures.push(format!("catalog: {p}"));
        }
        for (org, b) in &checks.audit_breaks {
            failures.push(format!("audit chain of {org} broken {b}"));
        }
    }
    if !report.count_mismatches.is_empty() {
        let list: Vec<String> =
            report.count_mismatches.iter().map(|(t, a, b)| format!("{t}: {a} live, {b} restored")).collect();
        if report.concurrent_transactions == 0 {
            failures.push(format!("row counts differ: {}", list.join(", ")));
        } else {
            progress.step(&format!(
                "row counts differ where {} transactions committed while they were counted: {}",
                report.concurrent_transactions,
                list.join(", ")
            ));
        }
    }
    if !failures.is_empty() {
        anyhow::bail!(failures.join("; "));
    }
    Ok(())
}

fn database_of(options: &PgConnectOptions) -> &str {
    options.get_database().unwrap_or("clientflow")
}

/// How many transactions, in progress or not yet started when `snapshot` was taken and before
/// the canary's `xid`, committed in the copy (at most 10,000 are looked at; more is "many").
async fn concurrent_commits(copy: &mut PgConnection, snapshot: &str, xid: u64) -> anyhow::Result<usize> {
    let mut parts = snapshot.split(':');
    let _xmin = parts.next();
    let xmax: u64 = parts.next().unwrap_or("0").parse().unwrap_or(0);
    let mut xids: Vec<u64> =
        parts.next().unwrap_or("").split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    xids.extend((xmax..xid).take(10_000));
    let mut n = 0;
    for x in xids {
        let status: Option<String> = sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)")
            .bind(x.to_string())
            .fetch_one(&mut *copy)
            .await
            .unwrap_or(None);
        if status.as_deref() == Some("committed") {
            n += 1;
        }
    }
    Ok(n)
}

/// Stops (if it runs) and removes a scratch cluster.
async fn remove_scratch(dir: &Path, bin_dir: Option<&Path>) {
    if !dir.exists() {
        return;
    }
    let (dir, bin_dir) = (dir.to_path_buf(), bin_dir.map(Path::to_path_buf));
    let _ = blocking(move || {
        if let Ok(c) = PrivateCluster::new(&dir, bin_dir.as_deref(), false)
            && c.is_running()
        {
            let _ = c.stop();
        }
        if let Ok(c) = PrivateCluster::new(&dir, bin_dir.as_deref(), false)
            && c.is_linked()
        {
            let _ = std::fs::remove_dir_all(c.root());
        }
        std::fs::remove_dir_all(&dir).map_err(anyhow::Error::from)
    })
    .await;
}

async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> anyhow::Result<T>
where
    T: Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(Into::into)
}

/// The newest backup and drill as `backup_log` records them, for `/metrics`.
pub use crate::platform::db::backup::BackupStatus;

/// The worker's schedule: a full backup when the newest full one is `full_interval_hours`
/// old, a differential one when the newest backup is `diff_interval_hours` old, and the drill
/// when the last one is `drill_interval_hours` old. One process acts at a time (a lock file in
/// the repository's home); a pass runs a minute after start, then every five minutes.
pub async fn run_schedule(
    live: Live,
    keys: Vec<ed25519_dalek::VerifyingKey>,
    bin_dir: Option<PathBuf>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = Duration::from_secs(300);
        if *stop.borrow() {
            return;
        }
        if let Err(e) = schedule_pass(&live, &keys, bin_dir.as_deref()).await {
            tracing::error!(error = %e, "backup schedule");
        }
    }
}

async fn schedule_pass(
    live: &Live,
    keys: &[ed25519_dalek::VerifyingKey],
    bin_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let lock_path = live.repo.cluster().root().join("pgbackrest").join("schedule.lock");
    let lock = std::fs::File::create(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let repo = live.repo.clone();
    let info = blocking(move || repo.info()).await?;
    let now = OffsetDateTime::now_utc();
    let age_hours = |t: OffsetDateTime| (now - t).as_seconds_f64() / 3600.0;
    let due = match (info.newest_full(), info.newest()) {
        (None, _) => Some(BackupType::Full),
        (Some(full), _) if age_hours(full.stopped_at) >= f64::from(live.config.full_interval_hours) => {
            Some(BackupType::Full)
        }
        (_, Some(newest)) if age_hours(newest.stopped_at) >= f64::from(live.config.diff_interval_hours) => {
            Some(BackupType::Diff)
        }
        _ => None,
    };
    let quiet = Progress::new(true);
    if let Some(kind) = due {
        match take_backup(live, kind, &quiet).await {
            Ok(r) => tracing::info!(label = ?r.label, seconds = r.seconds, "scheduled {} backup taken", kind.as_str()),
            Err(e) => tracing::error!(error = %e, "scheduled {} backup failed", kind.as_str()),
        }
    }
    let mut conn = provision::connect(&live.admin, "private cluster").await?;
    let last_drill: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT max(finished_at) FROM backup_log WHERE kind = 'drill'").fetch_one(&mut conn).await?;
    conn.close().await.ok();
    let drill_due = last_drill.is_none_or(|t| age_hours(t) >= f64::from(live.config.drill_interval_hours));
    if drill_due && (due.is_some() || info.newest().is_some()) {
        let report = drill(live, keys, bin_dir, &quiet).await;
        if report.ok {
            tracing::info!(rpo_seconds = ?report.rpo_seconds, rto_seconds = ?report.rto_seconds, "restore drill passed");
        } else {
            tracing::error!(failure = ?report.failure, "restore drill FAILED");
        }
    }
    drop(lock);
    Ok(())
}
