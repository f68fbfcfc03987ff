//! Exports asked for on the "Data export" page: their records (`org_exports`), the worker that
//! writes them (in `serve` and `worker`), and their expiry.
//!
//! An Owner's request writes a queued export and its audit event in one transaction. The
//! worker's sweep (every [`SWEEP_EVERY`]) finds queued exports, exports whose worker stopped
//! (no heartbeat for [`STALE_AFTER`]) and expired ones across organizations through one
//! `SECURITY DEFINER` function returning ids only (migration 0043), then opens each
//! organization through the tenant door as the export worker (`access::export_link`), claims
//! the export with a conditional update (so two workers never write the same archive), writes
//! the archive (`export::write_archive`) while recording progress and a heartbeat every
//! second, and marks it ready for [`KEEP_HOURS`] hours. The archive on disk is sealed with the
//! organization's data key (`platform::sealed_stream`), bound to the organization and the
//! export's id: it is never plaintext at rest, and once the organization's keys are destroyed
//! (its deletion) a leftover copy opens for no one. Expired archives are deleted from disk
//! and their records marked expired; the record stays (who asked, when) and its audit events
//! stay in the chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::chain::Signer;
use crate::audit::{self, Context, Entry};
use crate::platform::clock::SharedClock;
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::OrgId;

/// How long a finished archive (and any link to it) exists.
pub const KEEP_HOURS: i64 = 24;
/// How long a download link works once the page shows it.
pub const LINK_MINUTES: u32 = 15;
/// A running export without a heartbeat for this long is taken up again.
pub const STALE_AFTER: Duration = Duration::minutes(2);
/// How often the worker looks for work.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Where an export's archive is kept, sealed with the organization's data key
/// (`export::Job::sealed_as`): made from the two ids, never from a row or a request, in the
/// directory of the organization's region (`exports` for the default region, `exports-<region>`
/// for another: an archive holds the organization's data, which stays with its region's like
/// its files).
pub fn archive_path(data_dir: &Path, db: &Db, region: crate::platform::db::RegionId, org: OrgId, id: Uuid) -> PathBuf {
    archive_dir(data_dir, db, region, org).join(format!("{id}.zip.sealed"))
}

/// The directory of an organization's archives (removed whole by its deletion's purge).
pub fn archive_dir(data_dir: &Path, db: &Db, region: crate::platform::db::RegionId, org: OrgId) -> PathBuf {
    let dir = if region == db.home_region() { "exports".to_string() } else { format!("exports-{region}") };
    data_dir.join(dir).join(org.to_string())
}

/// One export as the page shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRecord {
    pub id: Uuid,
    pub requested_at: OffsetDateTime,
    pub status: String,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub rows_done: i64,
    pub rows_total: i64,
    pub size_bytes: Option<i64>,
    pub sha256: Option<Vec<u8>>,
    pub error: Option<String>,
    pub expires_at: Option<OffsetDateTime>,
}

impl ExportRecord {
    pub fn in_progress(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "running")
    }

    /// Ready and not past its expiry at `now`.
    pub fn downloadable(&self, now: OffsetDateTime) -> bool {
        self.status == "ready" && self.expires_at.is_some_and(|e| e > now)
    }

    /// Rows done as a percentage (0 until the total is known).
    pub fn percent(&self) -> i64 {
        if self.rows_total > 0 { (self.rows_done * 100 / self.rows_total).clamp(0, 100) } else { 0 }
    }
}

const RECORD_COLUMNS: &str = "id, requested_at, status, started_at, finished_at, rows_done, rows_total, size_bytes, \
                              sha256, error, expires_at";

fn require(p: &OrgPrincipal) -> DomainResult<()> {
    if p.can(Permission::OrgExport) {
        Ok(())
    } else {
        Err(DomainError::Forbidden("Only the organization's Owners can export its data.".into()))
    }
}

/// Queues an export and records who asked, in one transaction. One export at a time: while
/// one is queued or running, asking again returns it.
pub async fn request(db: &Db, ctx: &Context, p: &OrgPrincipal) -> DomainResult<Uuid> {
    require(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    // Serializes requests of one organization (two clicks can't queue two exports).
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE").bind(tx.org_id()).execute(&mut *tx).await?;
    let open: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM org_exports WHERE status IN ('queued', 'running') ORDER BY requested_at LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = open {
        tx.commit().await?;
        return Ok(id);
    }
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO org_exports (organization_id, id, requested_by, requested_at) VALUES ($1, $2, $3, $4)")
        .bind(tx.org_id())
        .bind(id)
        .bind(p.user_id())
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("organization.export_requested", "export", id).after(json!({ "status": "queued" })),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The organization's most recent exports, newest first.
pub async fn recent(db: &Db, p: &OrgPrincipal, limit: i64) -> DomainResult<Vec<ExportRecord>> {
    require(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM org_exports ORDER BY requested_at DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// One export of the principal's organization.
pub async fn find(tx: &mut OrgTx, id: Uuid) -> DomainResult<Option<ExportRecord>> {
    Ok(sqlx::query_as(&format!("SELECT {RECORD_COLUMNS} FROM org_exports WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// What the worker needs.
#[derive(Clone)]
pub struct Runner {
    pub db: Db,
    /// Each region's file store: an export reads the files of its organization's region.
    pub stores: crate::work::files::RegionStores,
    pub keys: crate::platform::keys::Keyring,
    pub signer: Arc<Signer>,
    pub clock: SharedClock,
    pub data_dir: PathBuf,
}

impl Runner {
    /// The server's runner, from its state.
    pub fn of(state: &crate::state::AppState) -> Self {
        Self {
            db: state.db.clone(),
            stores: state.storage.clone(),
            keys: state.keys.clone(),
            signer: state.audit_signer.clone(),
            clock: state.clock.clone(),
            data_dir: state.config.data_dir.clone(),
        }
    }
}

/// Sweeps every [`SWEEP_EVERY`] until `shutdown` changes.
pub async fn run_worker(runner: Runner, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        match sweep(&runner).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "export sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One sweep: every due export, one after the other. Returns how many were handled.
pub async fn sweep(runner: &Runner) -> anyhow::Result<usize> {
    let now = runner.clock.now();
    // Region by region: each organization's exports are recorded in its own region's database.
    let mut due: Vec<(Db, OrgId, Uuid)> = Vec::new();
    for db in runner.db.every_region() {
        let mut g = db.global().await?;
        let found: Vec<(OrgId, Uuid)> = sqlx::query_as("SELECT organization_id, id FROM org_exports_due($1, $2)")
            .bind(now)
            .bind(now - STALE_AFTER)
            .fetch_all(&mut *g)
            .await?;
        g.commit().await?;
        for (org, id) in found {
            // Not the copy a region move makes or leaves behind, and not while it moves: the
            // archive and its record would stay in the region the organization leaves.
            let placed = crate::access::directory::own_copy(&db, org, db.region()).await?;
            if placed.is_some_and(|p| p.moving_to.is_none()) {
                due.push((db.clone(), org, id));
            }
        }
    }
    let mut handled = 0;
    for (db, org, id) in due {
        match handle(runner, &db, org, id).await {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(organization = %org, export = %id, error = %e, "export failed"),
        }
    }
    Ok(handled)
}

/// Expires or writes one export; `false` when another worker had it.
async fn handle(runner: &Runner, region_db: &Db, org: OrgId, id: Uuid) -> anyhow::Result<bool> {
    let Some(principal) = crate::access::export_link::export_worker(region_db, org).await? else {
        return Ok(false);
    };
    let storage = runner.stores.of(principal.region()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = runner.clock.now();
    let path = archive_path(&runner.data_dir, &runner.db, principal.region(), org, id);
    // Expired: the archive goes, the record stays.
    {
        let mut tx = OrgTx::begin(&runner.db, &principal).await?;
        let expired: Option<Uuid> = sqlx::query_scalar(
            "UPDATE org_exports SET status = 'expired' WHERE id = $1 AND status IN ('ready', 'failed') AND expires_at < $2 \
             RETURNING id",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if expired.is_some() {
            remove_archive(&path);
            tx.commit().await?;
            return Ok(true);
        }
        tx.commit().await?;
    }
    // Claim it: queued, or running without a heartbeat.
    let claimed: Option<Uuid> = {
        let mut tx = OrgTx::begin(&runner.db, &principal).await?;
        let claimed = sqlx::query_scalar(
            "UPDATE org_exports SET status = 'running', started_at = $2, heartbeat_at = $2, rows_done = 0 \
             WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $3))) \
             RETURNING id",
        )
        .bind(id)
        .bind(now)
        .bind(now - STALE_AFTER)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        claimed
    };
    if claimed.is_none() {
        return Ok(false);
    }
    let ctx =
        Context { user_agent: "clientflow export worker".into(), ..Context::system(now, Some(runner.signer.clone())) };
    let (progress, watch) = tokio::sync::watch::channel(super::export::Progress::default());
    let job = super::export::Job {
        db: &runner.db,
        principal: &principal,
        storage,
        keys: &runner.keys,
        signer: &runner.signer,
        now,
        progress,
        sealed_as: Some(id),
    };
    let export = Box::pin(super::export::write_archive(job, &path));
    let result = heartbeat(runner, &principal, id, export, watch).await;
    let mut tx = OrgTx::begin(&runner.db, &principal).await?;
    let finished = runner.clock.now();
    match result {
        Ok(written) => {
            let expires = finished + Duration::hours(KEEP_HOURS);
            sqlx::query(
                "UPDATE org_exports SET status = 'ready', finished_at = $2, heartbeat_at = $2, rows_done = rows_total, \
                 size_bytes = $3, sha256 = $4, expires_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(finished)
            .bind(written.size_bytes as i64)
            .bind(&written.sha256[..])
            .bind(expires)
            .execute(&mut *tx)
            .await?;
            audit::record(
                &mut tx,
                &Context { now: finished, ..ctx },
                Entry::new("organization.export_ready", "export", id).after(json!({
                    "size_bytes": written.size_bytes,
                    "sha256": hex::encode(written.sha256),
                    "rows": written.manifest.counts.values().sum::<u64>(),
                    "expires_at": expires.to_string(),
                })),
            )
            .await?;
        }
        Err(e) => {
            tracing::warn!(organization = %org, export = %id, error = %format!("{e:#}"), "export failed");
            sqlx::query(
                "UPDATE org_exports SET status = 'failed', finished_at = $2, error = $3, expires_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(finished)
            .bind("The export could not be completed. Start a new one; if it fails again, tell your operator.")
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Runs the export, writing its progress and a heartbeat every second.
async fn heartbeat<F>(
    runner: &Runner,
    principal: &OrgPrincipal,
    id: Uuid,
    mut export: std::pin::Pin<Box<F>>,
    watch: tokio::sync::watch::Receiver<super::export::Progress>,
) -> anyhow::Result<super::export::Written>
where
    F: std::future::Future<Output = anyhow::Result<super::export::Written>>,
{
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut export => return result,
            _ = tick.tick() => {
                let p = *watch.borrow();
                let write = async {
                    let mut tx = OrgTx::begin(&runner.db, principal).await?;
                    sqlx::query("UPDATE org_exports SET rows_done = $2, rows_total = $3, heartbeat_at = $4 WHERE id = $1")
                        .bind(id)
                        .bind(p.done as i64)
                        .bind(p.total as i64)
                        .bind(runner.clock.now())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                };
                if let Err(e) = write.await {
                    tracing::warn!(export = %id, error = %e, "export progress not recorded");
                }
            }
        }
    }
}

fn remove_archive(path: &Path) {
    // The archive, a partial one, and one written before archives were sealed (`<id>.zip`).
    let partial = path.with_extension("sealed.partial");
    let unsealed = path.with_extension("");
    for p in [path.to_path_buf(), partial, unsealed] {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove an expired export");
        }
    }
}
