//! `clientflow org move --org X --to eu`: moving an organization to another region
//! (`docs/security/residency.md`).
//!
//! The move is a sequence of steps, each recorded in `organization_moves` (the directory's
//! database) once it is done, so an interrupted move continues where it stopped when run again,
//! or is rolled back with `--rollback` as long as the directory still points to the old region:
//!
//! 1. **frozen**: the directory entry is marked `moving_to`; the organization's pages and API
//!    refuse writes (503) until the move ends.
//! 2. **copied**: once every write that found the organization not moving has ended (they hold
//!    a lock the copy waits for: `access::directory::hold_for_writing`), every tenant row
//!    (catalog-driven: each table with an `organization_id`, in
//!    foreign-key order) is copied into the new region's database in one transaction, after
//!    removing whatever an earlier attempt left there, so nothing is ever duplicated; the people
//!    the rows name are copied as the directory's projection (no sign-in secrets); each file's
//!    sealed contents are copied to the new region's store.
//! 3. **verified**: row counts per table match, every file's sealed bytes hash the same, the
//!    audit chain verifies in the new region; then the chain continues there with a signed
//!    `organization.moved` event. A mismatch sends the move back to step 2. The old region's
//!    access epoch is raised, so that API keys kept as verified there are verified again (and
//!    none is kept while the organization moves).
//! 4. **switched**: the directory names the new region (one transaction with the step), writes
//!    are accepted again, in the new region; a key is never accepted from a copy the directory
//!    no longer names, nor a write made with one.
//! 5. **purged**: the old region's rows (audit log included: the owner role may delete one
//!    departing organization's events, migration 0051) and files are removed.
//!
//! The copy and the purge run as each region's owner role (like migrations), which the server
//! never runs as; they set the organization as the tenant, so row-level security still holds.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use time::OffsetDateTime;

use crate::access::{self, OperatorAuthority, OrgTx};
use crate::audit::{self, Context, Entry};
use crate::platform::db::{Db, RegionId, provision};
use crate::platform::ids::OrgId;
use crate::work::files::RegionStores;

/// The steps of a move, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Frozen,
    Copied,
    Verified,
    Switched,
    Purged,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Frozen => "frozen",
            Step::Copied => "copied",
            Step::Verified => "verified",
            Step::Switched => "switched",
            Step::Purged => "purged",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        [Step::Frozen, Step::Copied, Step::Verified, Step::Switched, Step::Purged].into_iter().find(|x| x.as_str() == s)
    }
}

/// What a move needs: every region's database as the app role (the directory, the audit
/// event), as its owner role (copy and purge), every region's file store, the audit key.
pub struct Mover {
    pub db: Db,
    pub owners: Vec<(RegionId, PgConnectOptions)>,
    pub stores: RegionStores,
    pub signer: std::sync::Arc<crate::audit::chain::Signer>,
    pub authority: OperatorAuthority,
}

/// What a move did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub org: OrgId,
    pub from: RegionId,
    pub to: RegionId,
    /// The steps this run completed.
    pub done: Vec<Step>,
    /// Rows per table in the new region, as verified.
    pub counts: BTreeMap<String, i64>,
    pub files: usize,
}

impl Mover {
    fn owner(&self, region: RegionId) -> anyhow::Result<&PgConnectOptions> {
        self.owners.iter().find(|(r, _)| *r == region).map(|(_, o)| o).ok_or_else(|| {
            anyhow::anyhow!(
                "region {region}: moving needs its owner role (a privileged database URL for the region, or \
                 database.admin_url for the default one)"
            )
        })
    }
}

/// Where the move of `org` stands: (from, to, step).
async fn move_row(db: &Db, org: OrgId) -> anyhow::Result<Option<(String, String, String)>> {
    let mut tx = db.home().global().await?;
    let row = sqlx::query_as("SELECT from_region, to_region, step FROM organization_moves WHERE org = $1")
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

async fn set_step(db: &Db, org: OrgId, step: Step, counts: Option<&BTreeMap<String, i64>>) -> anyhow::Result<()> {
    let mut tx = db.home().global().await?;
    sqlx::query(
        "UPDATE organization_moves SET step = $2, counts = coalesce($3, counts), updated_at = now() WHERE org = $1",
    )
    .bind(org)
    .bind(step.as_str())
    .bind(counts.map(|c| json!(c)))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn region(name: &str) -> anyhow::Result<RegionId> {
    RegionId::parse(name).ok_or_else(|| anyhow::anyhow!("{name:?} is not a region name"))
}

/// Moves `org` to `to`, or continues the move under way. `fail_after`: stop with an error right
/// after that step is recorded (tests use it to interrupt a move at each step).
pub async fn move_organization(
    m: &Mover,
    org: OrgId,
    to: RegionId,
    now: OffsetDateTime,
    fail_after: Option<Step>,
) -> anyhow::Result<MoveReport> {
    if m.db.in_region(to).is_none() {
        anyhow::bail!("--to {to}: not a region of this installation (add [residency.regions.{to}])");
    }
    let Some(placement) = access::directory::locate(&m.db, org).await? else {
        anyhow::bail!("no organization {org} in the directory");
    };
    let (from, mut step, fresh) = match move_row(&m.db, org).await? {
        Some((from, dest, step)) if step != Step::Purged.as_str() => {
            if dest != to.as_str() {
                anyhow::bail!(
                    "a move of this organization to {dest} is under way: run it again with --to {dest} to finish it, \
                     or with --rollback to undo it"
                );
            }
            (region(&from)?, Step::parse(&step).ok_or_else(|| anyhow::anyhow!("unknown step {step}"))?, false)
        }
        _ => {
            if placement.region == to {
                anyhow::bail!("the organization already lives in region {to}");
            }
            let mut tx = m.db.home().global().await?;
            sqlx::query(
                "INSERT INTO organization_moves (org, from_region, to_region, step) VALUES ($1, $2, $3, 'frozen') \
                 ON CONFLICT (org) DO UPDATE SET from_region = $2, to_region = $3, step = 'frozen', counts = NULL, \
                 started_at = now(), updated_at = now()",
            )
            .bind(org)
            .bind(placement.region.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE organization_directory SET moving_to = $2 WHERE org = $1")
                .bind(org)
                .bind(to.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            (placement.region, Step::Frozen, true)
        }
    };
    let mut report = MoveReport { org, from, to, done: Vec::new(), counts: BTreeMap::new(), files: 0 };
    let stop = |report: &MoveReport, at: Step| -> anyhow::Result<()> {
        if fail_after == Some(at) && report.done.contains(&at) {
            anyhow::bail!("interrupted after step {}", at.as_str());
        }
        Ok(())
    };
    if fresh {
        report.done.push(Step::Frozen);
        stop(&report, Step::Frozen)?;
    }
    loop {
        match step {
            Step::Frozen => {
                wait_for_writes(m, org, from).await?;
                report.files = copy(m, org, from, to).await?;
                set_step(&m.db, org, Step::Copied, None).await?;
                step = Step::Copied;
                report.done.push(step);
                stop(&report, step)?;
            }
            Step::Copied => match verify(m, org, from, to).await? {
                Ok(counts) => {
                    // The chain continues in the new region, signed.
                    let principal = access::operator_in_region(&m.db, &m.authority, org, to, "org move")
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("the copy of the organization is missing in {to}"))?;
                    let mut tx = OrgTx::begin(&m.db, &principal).await?;
                    let ctx =
                        Context { user_agent: "clientflow cli".into(), ..Context::system(now, Some(m.signer.clone())) };
                    audit::record(
                        &mut tx,
                        &ctx,
                        Entry::new("organization.moved", "organization", org)
                            .before(json!({ "region": from.as_str() }))
                            .after(json!({ "region": to.as_str() })),
                    )
                    .await?;
                    crate::audit::chain::sign_head_now(&mut tx, &m.signer, org, now).await?;
                    tx.commit().await?;
                    raise_access_epoch(m, from).await?;
                    set_step(&m.db, org, Step::Verified, Some(&counts)).await?;
                    report.counts = counts;
                    step = Step::Verified;
                    report.done.push(step);
                    stop(&report, step)?;
                }
                Err(why) => {
                    // Something changed or went missing: copy again.
                    set_step(&m.db, org, Step::Frozen, None).await?;
                    anyhow::bail!("verification failed ({why}); run the move again to copy anew");
                }
            },
            Step::Verified => {
                let mut tx = m.db.home().global().await?;
                sqlx::query("UPDATE organization_directory SET region = $2, moving_to = NULL WHERE org = $1")
                    .bind(org)
                    .bind(to.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE organization_moves SET step = 'switched', updated_at = now() WHERE org = $1")
                    .bind(org)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                step = Step::Switched;
                report.done.push(step);
                stop(&report, step)?;
            }
            Step::Switched => {
                purge(m, org, from).await?;
                set_step(&m.db, org, Step::Purged, None).await?;
                step = Step::Purged;
                report.done.push(step);
                stop(&report, step)?;
            }
            Step::Purged => return Ok(report),
        }
    }
}

/// Undoes a move that hasn't switched the directory yet: the new region's copy is removed and
/// writes are accepted again in the old region.
pub async fn roll_back(m: &Mover, org: OrgId) -> anyhow::Result<Step> {
    let Some((_, to, step)) = move_row(&m.db, org).await? else {
        anyhow::bail!("no move of this organization is under way");
    };
    let step = Step::parse(&step).ok_or_else(|| anyhow::anyhow!("unknown step {step}"))?;
    if step >= Step::Switched {
        anyhow::bail!(
            "the directory already names the new region ({to}): run the move again to finish it (the old region's \
             copy is then removed)"
        );
    }
    purge(m, org, region(&to)?).await?;
    let mut tx = m.db.home().global().await?;
    sqlx::query("UPDATE organization_directory SET moving_to = NULL WHERE org = $1")
        .bind(org)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM organization_moves WHERE org = $1").bind(org).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(step)
}

/// Every tenant table (an `organization_id` column) and `organizations`, parents before
/// children (foreign keys), read from the catalog.
pub async fn tables_in_order(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    tables.push("organizations".into());
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT cl.relname::text, pa.relname::text FROM pg_constraint c \
         JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class pa ON pa.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let set: BTreeSet<&String> = tables.iter().collect();
    let mut parents: BTreeMap<String, BTreeSet<String>> = tables.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for (child, parent) in &edges {
        if child != parent && set.contains(child) && set.contains(parent) {
            parents.get_mut(child).expect("a table").insert(parent.clone());
        }
    }
    let mut ordered = Vec::new();
    while !parents.is_empty() {
        let ready: Vec<String> =
            parents.iter().filter(|(_, ps)| ps.iter().all(|p| ordered.contains(p))).map(|(t, _)| t.clone()).collect();
        if ready.is_empty() {
            anyhow::bail!("the tenant tables' foreign keys form a cycle: {:?}", parents.keys().collect::<Vec<_>>());
        }
        for t in ready {
            parents.remove(&t);
            ordered.push(t);
        }
    }
    Ok(ordered)
}

fn key_of(table: &str) -> &'static str {
    if table == "organizations" { "id" } else { "organization_id" }
}

/// What an owner-role transaction of a move does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OwnerTx {
    /// Reads the organization, in one snapshot from its first query to its end
    /// (`REPEATABLE READ`): what is copied and compared is one consistent state.
    Reads,
    /// Writes (copies it in, or removes it), marked as the departing organization, in `READ
    /// COMMITTED`: its commit raises the region's access epoch (`migrations/0056`), one row
    /// every change to access raises, which a snapshot older than another organization's
    /// change to it could not update (it would fail to serialize instead of waiting).
    Writes,
}

/// An owner-role connection with a transaction whose tenant is `org`.
async fn owner_tx(options: &PgConnectOptions, org: OrgId, does: OwnerTx) -> anyhow::Result<PgConnection> {
    let departing = does == OwnerTx::Writes;
    let mut conn = provision::connect(options, "owner role").await?;
    let begin =
        if departing { "BEGIN ISOLATION LEVEL READ COMMITTED" } else { "BEGIN ISOLATION LEVEL REPEATABLE READ" };
    sqlx::query(begin).execute(&mut conn).await?;
    sqlx::query("SELECT set_config('app.org_id', $1, true), set_config('clientflow.org_departure', $2, true)")
        .bind(org.to_string())
        .bind(if departing { org.to_string() } else { String::new() })
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

async fn commit(mut conn: PgConnection) -> anyhow::Result<()> {
    sqlx::query("COMMIT").execute(&mut conn).await?;
    conn.close().await.ok();
    Ok(())
}

/// Removes every row of `org` from the region's database, children first.
async fn delete_rows(conn: &mut PgConnection, org: OrgId, tables: &[String]) -> anyhow::Result<()> {
    for t in tables.iter().rev() {
        sqlx::query(&format!("DELETE FROM {t} WHERE {} = $1", key_of(t))).bind(org).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Copies every row and file of `org` from `from` to `to`; returns how many files.
async fn copy(m: &Mover, org: OrgId, from: RegionId, to: RegionId) -> anyhow::Result<usize> {
    let mut src = owner_tx(m.owner(from)?, org, OwnerTx::Reads).await?;
    let tables = tables_in_order(&mut src).await?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for t in &tables {
        let all: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(x)), '[]'::jsonb) FROM {t} x WHERE {} = $1",
            key_of(t)
        ))
        .bind(org)
        .fetch_one(&mut src)
        .await?;
        rows.push((t.clone(), all));
    }
    let people = access::directory::people_named(&mut src, org).await?;
    let keys: Vec<String> = sqlx::query_scalar("SELECT storage_key FROM files WHERE organization_id = $1")
        .bind(org)
        .fetch_all(&mut src)
        .await?;
    commit(src).await?;
    for user in people {
        access::directory::project_user(&m.db, to, user.to_string().parse()?).await?;
    }
    let mut dst = owner_tx(m.owner(to)?, org, OwnerTx::Writes).await?;
    // Whatever an interrupted attempt left is replaced, never added to.
    delete_rows(&mut dst, org, &tables).await?;
    for (t, all) in &rows {
        // Generated columns (search vectors) are computed again by the target, never written.
        let columns: String = sqlx::query_scalar(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
        )
        .bind(t)
        .fetch_one(&mut dst)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {t} ({columns}) SELECT {columns} FROM jsonb_populate_recordset(NULL::{t}, $1)"
        ))
        .bind(all)
        .execute(&mut dst)
        .await?;
    }
    commit(dst).await?;
    let (source, target) = (m.stores.of(from).map_err(anyhow_of)?, m.stores.of(to).map_err(anyhow_of)?);
    for key in &keys {
        let sealed = source.get(key).await?;
        target.put(key, sealed).await?;
    }
    Ok(keys.len())
}

fn anyhow_of(e: crate::platform::error::DomainError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Compares the copy with the original: rows per table, each file's sealed bytes, the audit
/// chain in the new region. `Ok(Err(why))`: they differ.
async fn verify(
    m: &Mover,
    org: OrgId,
    from: RegionId,
    to: RegionId,
) -> anyhow::Result<Result<BTreeMap<String, i64>, String>> {
    let mut src = owner_tx(m.owner(from)?, org, OwnerTx::Reads).await?;
    let mut dst = owner_tx(m.owner(to)?, org, OwnerTx::Reads).await?;
    let tables = tables_in_order(&mut src).await?;
    let mut counts = BTreeMap::new();
    for t in &tables {
        let sql = format!("SELECT count(*) FROM {t} WHERE {} = $1", key_of(t));
        let a: i64 = sqlx::query_scalar(&sql).bind(org).fetch_one(&mut src).await?;
        let b: i64 = sqlx::query_scalar(&sql).bind(org).fetch_one(&mut dst).await?;
        if a != b {
            return Ok(Err(format!("{t}: {a} rows in {from}, {b} in {to}")));
        }
        if a > 0 {
            counts.insert(t.clone(), b);
        }
    }
    let keys: Vec<String> = sqlx::query_scalar("SELECT storage_key FROM files WHERE organization_id = $1")
        .bind(org)
        .fetch_all(&mut src)
        .await?;
    let report = crate::audit::chain::verify_org(
        &mut dst,
        org,
        &crate::audit::chain::Verification::new(&[m.signer.verifying_key()], OffsetDateTime::now_utc()),
    )
    .await?;
    commit(src).await?;
    commit(dst).await?;
    if let Some(b) = report.first_break {
        return Ok(Err(format!("the audit chain in {to} breaks at event {}: {}", b.seq, b.message)));
    }
    let (source, target) = (m.stores.of(from).map_err(anyhow_of)?, m.stores.of(to).map_err(anyhow_of)?);
    for key in &keys {
        let a = source.get(key).await?.digest();
        let b = match target.get(key).await {
            Ok(s) => s.digest(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(format!("file {key} missing in {to}")));
            }
            Err(e) => return Err(e.into()),
        };
        if a != b {
            return Ok(Err(format!("file {key} differs in {to}")));
        }
    }
    Ok(Ok(counts))
}

/// How long the copy waits for writes that found the organization not moving.
const WRITES_WAIT: &str = "60s";

/// Waits, before the copy, for every write that found the organization not moving, in the
/// region it leaves: each holds [`access::directory::MOVE_LOCK_KEY`] shared to its commit
/// (`access::directory::hold_for_writing`), so taking it exclusively here returns once they
/// have all committed or rolled back, and the copy's snapshot holds what they wrote. Writes
/// that ask after the directory marked the move are refused, and take the lock only briefly.
async fn wait_for_writes(m: &Mover, org: OrgId, region: RegionId) -> anyhow::Result<()> {
    let mut conn = provision::connect(m.owner(region)?, "owner role").await?;
    sqlx::query(&format!("SET lock_timeout = '{WRITES_WAIT}'")).execute(&mut conn).await?;
    let lock = format!("SELECT pg_advisory_lock({})", access::directory::MOVE_LOCK_KEY);
    if let Err(e) = sqlx::query(&lock).bind(org).execute(&mut conn).await {
        conn.close().await.ok();
        if e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "55P03") {
            anyhow::bail!(
                "writes to the organization in region {region} were still running after {WRITES_WAIT}: \
                 run the move again to copy once they end"
            );
        }
        return Err(e.into());
    }
    conn.close().await.ok();
    Ok(())
}

/// Raises the region's access epoch (`migrations/0056`), once the copy is verified and before
/// the directory switches: a process that kept one of the organization's keys as verified in
/// the old region verifies it again on its next request. While the organization moves, a
/// verification keeps nothing (`access::api_key`), so once the directory names the new region
/// no kept key stands in the copy that waits in the old one for the purge, however the move
/// is interrupted; a verification from scratch passes that copy over for the new region's.
async fn raise_access_epoch(m: &Mover, region: RegionId) -> anyhow::Result<()> {
    let mut conn = provision::connect(m.owner(region)?, "owner role").await?;
    sqlx::query("UPDATE access_epoch SET epoch = epoch + 1, stamp = gen_random_uuid() WHERE only_row")
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(())
}

/// Removes every row and file of `org` from `region`, and, in the same transaction, the people
/// copied there for it that no other organization there names
/// (`access::directory::forget_departed_people`).
async fn purge(m: &Mover, org: OrgId, region: RegionId) -> anyhow::Result<()> {
    let mut conn = owner_tx(m.owner(region)?, org, OwnerTx::Writes).await?;
    let tables = tables_in_order(&mut conn).await?;
    let people = access::directory::people_named(&mut conn, org).await?;
    delete_rows(&mut conn, org, &tables).await?;
    access::directory::forget_departed_people(&m.db, &mut conn, region, org, &people).await?;
    commit(conn).await?;
    m.stores.of(region).map_err(anyhow_of)?.delete_all_under(&org.to_string()).await?;
    Ok(())
}

/// `clientflow org move`: connects every region (as the app and the owner roles), then moves,
/// continues or rolls back.
pub async fn run(
    config: &crate::config::Config,
    json: bool,
    authority: OperatorAuthority,
    org: &str,
    to: Option<&str>,
    rollback: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let result: anyhow::Result<(Value, String)> = async {
        let resolved = provision::resolve(config).await?;
        let outcome = async {
            provision::migrate(&resolved).await?;
            provision::guard_runtime_role(&resolved.app).await?;
            let timeout = std::time::Duration::from_secs(config.database.acquire_timeout_secs);
            let home = Db::connect(resolved.app.clone(), 2, timeout).await?;
            let regions = super::residency::resolve_regions(config, &resolved).await?;
            super::residency::migrate_regions(&regions).await?;
            let db = super::residency::join_regions(config, home, &regions, 2).await?;
            let mut owners: Vec<(RegionId, PgConnectOptions)> = Vec::new();
            if let Some(owner) = &resolved.owner {
                owners.push((db.home_region(), owner.clone()));
            }
            owners.extend(regions.iter().filter_map(|r| r.owner.clone().map(|o| (r.region, o))));
            let signer = crate::audit::chain::Signer::load(config.audit.signing_key.as_ref(), &config.data_dir)
                .map_err(anyhow::Error::msg)?;
            let mover = Mover {
                stores: crate::state::region_stores(config, &db)?,
                db: db.clone(),
                owners,
                signer: std::sync::Arc::new(signer),
                authority,
            };
            let org_id = find_org(&db, org).await?;
            let done = if rollback {
                let step = roll_back(&mover, org_id).await?;
                (
                    json!({ "organization": org_id.to_string(), "rolled_back_from": step.as_str() }),
                    format!("Rolled back the move of {org} (it had reached: {}).\n", step.as_str()),
                )
            } else {
                let to = to.ok_or_else(|| anyhow::anyhow!("--to <region> is required (or --rollback)"))?;
                let to = region(to)?;
                let r = move_organization(&mover, org_id, to, OffsetDateTime::now_utc(), None).await?;
                let steps: Vec<&str> = r.done.iter().map(|s| s.as_str()).collect();
                let mut text = format!("Moved {org} from {} to {} (steps: {}).\n", r.from, r.to, steps.join(", "));
                for (table, n) in &r.counts {
                    text.push_str(&format!("  {table:<28} {n}\n"));
                }
                text.push_str(&format!("  files copied: {}\n", r.files));
                (
                    json!({ "organization": org_id.to_string(), "from": r.from.as_str(), "to": r.to.as_str(),
                            "steps": steps, "counts": r.counts, "files": r.files }),
                    text,
                )
            };
            db.close().await;
            anyhow::Ok(done)
        }
        .await;
        resolved.finish().await;
        outcome
    }
    .await;
    match result {
        Ok((doc, text)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{text}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// An organization named by id or slug, through the directory.
async fn find_org(db: &Db, org: &str) -> anyhow::Result<OrgId> {
    if let Ok(id) = org.parse::<OrgId>() {
        return Ok(id);
    }
    let mut tx = db.home().global().await?;
    let found = access::directory::by_slug(db, &mut tx, org).await?;
    tx.commit().await?;
    found.map(|p| p.org_id).ok_or_else(|| anyhow::anyhow!("--org {org}: no organization with this id or slug"))
}
