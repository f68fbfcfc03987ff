//! Importing an organization's export (`clientflow org import FILE`) into an installation that
//! does not have that organization: the operator's way to move an organization between
//! installations, or to bring one back.
//!
//! Nothing is written until the whole archive has been checked: its manifest (format and
//! version), every part's size, rows and SHA-256 against the manifest, and no entry the
//! manifest doesn't list. Then everything happens in one transaction: the accounts its rows
//! refer to (created without a password or second factor when this installation doesn't have
//! them: they sign in by password reset or Google), every table in foreign-key order, and the
//! audit chain, which is verified (`audit::chain::verify_org`) before the transaction commits.
//! The files' contents are sealed and stored under this installation's keys before the commit
//! and removed again when anything fails: an import lands whole or not at all. Their names are
//! sealed under this installation's keys as their rows are read from the archive, before the
//! rows reach the database ([`seal_file_row`]).
//!
//! Every imported column value passes through [`import_value`], the inverse of
//! `export::export_value`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::sync::mpsc;

use super::export::{FORMAT, FORMAT_VERSION, MANIFEST, Manifest, README_NAME, checked_identifier, part_name};
use crate::access::OrgTx;
use crate::audit::chain::Verification;
use crate::platform::db::Db;
use crate::platform::ids::{FileId, OrgId};
use crate::work::files::Storage;

/// The one function every imported column value passes through: the inverse of
/// `export::export_value` (a column sealed in the database is sealed here again, under this
/// installation's keys).
pub fn import_value(table: &str, column: &str, value: Value) -> anyhow::Result<Value> {
    let _ = (table, column);
    Ok(value)
}

/// What an import needs.
pub struct Job<'a> {
    pub db: &'a Db,
    pub storage: &'a Storage,
    pub keys: &'a crate::platform::keys::Keyring,
    /// This installation's audit key, trusted besides the keys the archive's chain lists.
    pub local_key: ed25519_dalek::VerifyingKey,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Manifest,
    pub rows: u64,
    pub files: u64,
    pub accounts_created: u64,
    /// The ids of the keys the audit chain's checkpoints were verified with.
    pub audit_keys: Vec<String>,
    pub audit_events: u64,
}

const BATCH_ROWS: usize = 1000;
const MANIFEST_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Opens `path` as an export archive: a ZIP with its central directory (a truncated file has
/// none).
fn open_zip(path: &Path) -> anyhow::Result<zip::ZipArchive<std::fs::File>> {
    let file = std::fs::File::open(path).with_context(|| format!("can't open {}", path.display()))?;
    zip::ZipArchive::new(file).map_err(|e| {
        anyhow!("{} is not a complete export archive (is it truncated or not a ZIP file?): {e}", path.display())
    })
}

/// Checks the whole archive against its manifest before anything is written: format and
/// version, every part present with the size, rows and SHA-256 the manifest says, and nothing
/// the manifest doesn't list. Reads each part once, streaming.
pub fn verify_archive(path: &Path) -> anyhow::Result<Manifest> {
    let mut zip = open_zip(path)?;
    let manifest: Manifest = {
        let entry = zip.by_name(MANIFEST).map_err(|_| anyhow!("the archive has no {MANIFEST}"))?;
        let mut text = String::new();
        entry.take(MANIFEST_MAX_BYTES).read_to_string(&mut text).context("reading the manifest")?;
        let raw: Value = serde_json::from_str(&text).context("the manifest is not JSON")?;
        if raw.get("format").and_then(Value::as_str) != Some(FORMAT) {
            bail!("this is not a ClientFlow organization export (the manifest's format is not {FORMAT:?})");
        }
        let version = raw.get("format_version").and_then(Value::as_u64).unwrap_or(0);
        if version != u64::from(FORMAT_VERSION) {
            bail!("the archive's format version is {version}; this installation reads version {FORMAT_VERSION}");
        }
        serde_json::from_value(raw).context("the manifest does not have the expected fields")?
    };
    let listed: BTreeSet<&str> = manifest.parts.iter().map(|p| p.name.as_str()).collect();
    if listed.len() != manifest.parts.len() {
        bail!("the manifest lists a part twice");
    }
    for name in zip.file_names() {
        let name = name.map_err(|e| anyhow!("the archive's directory is damaged: {e}"))?;
        let name: &str = &name;
        if name != MANIFEST && name != README_NAME && !listed.contains(name) {
            bail!("the archive holds {name:?}, which its manifest does not list");
        }
    }
    for part in &manifest.parts {
        let entry = zip.by_name(&part.name).map_err(|_| anyhow!("part {} is missing from the archive", part.name))?;
        let (bytes, lines, sha) = digest_entry(entry).with_context(|| format!("part {} is corrupted", part.name))?;
        if bytes != part.bytes || hex::encode(sha) != part.sha256 {
            bail!("part {} is corrupted: its size or SHA-256 does not match the manifest", part.name);
        }
        if let Some(rows) = part.rows
            && rows != lines
        {
            bail!("part {} has {lines} rows; the manifest says {rows}", part.name);
        }
        if let Some(table) = &part.table
            && manifest.counts.get(table) != part.rows.as_ref()
        {
            bail!("the manifest's count for {table} does not match its part");
        }
    }
    Ok(manifest)
}

/// Size, newlines and SHA-256 of an entry (the ZIP reader also checks its CRC-32).
fn digest_entry(mut entry: impl Read) -> anyhow::Result<(u64, u64, [u8; 32])> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut bytes, mut lines) = (0u64, 0u64);
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
        lines += memchr_count(&buf[..n]);
    }
    Ok((bytes, lines, hash.finalize().into()))
}

fn memchr_count(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// A batch of rows for one statement: the columns they have and the rows as a JSON array.
struct Batch {
    columns: Vec<String>,
    json: String,
    rows: u64,
}

/// What a reader thread sends for each row: all columns (`Insert`, with `nulled` columns set
/// to null), or the key and the `nulled` columns only (`Update`, the second pass).
#[derive(Clone)]
enum Pass {
    Insert { nulled: Vec<String> },
    Update { key: Vec<String>, deferred: Vec<String> },
}

/// What seals the names of imported files: this installation's keys, the organization, and
/// the data-key version the import seals with.
#[derive(Clone)]
struct NameSealing {
    keys: crate::platform::keys::Keyring,
    org: OrgId,
    version: u32,
}

/// A file's row as the archive has it (its name in the plain `name` column) made into the row
/// this installation stores: the name sealed under this installation's key and the plain column
/// empty, before the row reaches the database (not even the transaction's WAL holds the name in
/// plaintext), and the version its contents will be sealed with.
fn seal_file_row(row: &mut Map<String, Value>, sealing: &NameSealing) -> anyhow::Result<()> {
    let id: FileId = row.get("id").and_then(Value::as_str).unwrap_or_default().parse().context("a file's id")?;
    let name = match row.remove("name") {
        Some(Value::String(name)) => name,
        _ => bail!("file {id} has no name in the archive"),
    };
    if name.is_empty() || name.chars().count() > 255 {
        bail!("file {id}'s name in the archive is empty or longer than 255 characters");
    }
    let sealed = crate::work::files::seal_name(&sealing.keys, sealing.org, id, &name, Some(sealing.version))
        .map_err(|e| anyhow!("sealing the name of file {id}: {e}"))?;
    row.insert("name".into(), Value::Null);
    row.insert("name_sealed".into(), Value::String(format!("\\x{}", hex::encode(sealed))));
    row.insert("key_version".into(), Value::from(sealing.version));
    Ok(())
}

/// Streams one NDJSON part in batches, each value through [`import_value`] (and each file's row
/// through [`seal_file_row`]).
fn read_part(
    path: PathBuf,
    part: String,
    table: String,
    pass: Pass,
    sealing: Option<NameSealing>,
    send: mpsc::Sender<anyhow::Result<Batch>>,
) {
    let run = || -> anyhow::Result<()> {
        let mut zip = open_zip(&path)?;
        let entry = zip.by_name(&part).map_err(|_| anyhow!("part {part} is missing"))?;
        let reader = BufReader::with_capacity(256 * 1024, entry);
        let mut rows: Vec<Map<String, Value>> = Vec::with_capacity(BATCH_ROWS);
        let flush = |rows: &mut Vec<Map<String, Value>>| -> anyhow::Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let columns: Vec<String> = rows[0].keys().cloned().collect();
            let n = rows.len() as u64;
            let json = serde_json::to_string(&rows)?;
            rows.clear();
            send.blocking_send(Ok(Batch { columns, json, rows: n })).map_err(|_| anyhow!("import stopped"))
        };
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading {part}"))?;
            let row: Map<String, Value> =
                serde_json::from_str(&line).with_context(|| format!("a line of {part} is not a JSON object"))?;
            let mut out = Map::new();
            for (column, value) in row {
                checked_identifier(&column)?;
                let value = import_value(&table, &column, value)?;
                match &pass {
                    Pass::Insert { nulled } if nulled.contains(&column) => {
                        out.insert(column, Value::Null);
                    }
                    Pass::Insert { .. } => {
                        out.insert(column, value);
                    }
                    Pass::Update { key, deferred } => {
                        if key.contains(&column) || deferred.contains(&column) {
                            out.insert(column, value);
                        }
                    }
                }
            }
            if let Pass::Update { deferred, .. } = &pass
                && deferred.iter().all(|c| out.get(c).is_none_or(Value::is_null))
            {
                continue;
            }
            if table == "files" && matches!(pass, Pass::Insert { .. }) {
                let sealing =
                    sealing.as_ref().ok_or_else(|| anyhow!("files are imported with no keys to seal their names"))?;
                seal_file_row(&mut out, sealing)?;
            }
            rows.push(out);
            if rows.len() >= BATCH_ROWS {
                flush(&mut rows)?;
            }
        }
        flush(&mut rows)
    };
    if let Err(e) = run() {
        let _ = send.blocking_send(Err(e));
    }
}

/// (from, to, the nullable referencing columns, whether there are any).
type ForeignKey = (String, String, Vec<String>, bool);

/// The tables in insertion order, and the columns of each filled in a second pass.
type Order = (Vec<String>, BTreeMap<String, Vec<String>>);

/// Foreign keys between the given tables: (from, to, the referencing columns that may be null
/// (organization_id never is), whether there is one). Setting those to null lifts the reference
/// (`MATCH SIMPLE`), which is how a cycle is broken.
async fn foreign_keys(conn: &mut PgConnection, tables: &[String]) -> anyhow::Result<Vec<ForeignKey>> {
    let rows: Vec<ForeignKey> = sqlx::query_as(
        "SELECT src.relname::text, dst.relname::text, \
           array(SELECT a.attname::text FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k \
                 WHERE a.attname <> 'organization_id' AND NOT a.attnotnull ORDER BY a.attname), \
           EXISTS (SELECT 1 FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k \
                 WHERE a.attname <> 'organization_id' AND NOT a.attnotnull) \
         FROM pg_constraint c JOIN pg_class src ON src.oid = c.conrelid JOIN pg_class dst ON dst.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = src.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public' AND src.relname = ANY ($1) AND dst.relname = ANY ($1) \
         ORDER BY 1, 2, 3",
    )
    .bind(tables)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// The order to insert `tables` in, and the columns of each to fill in a second pass: a table
/// comes after the tables it refers to; a reference that closes a cycle (a task's parent) is
/// inserted as null and set once every row is in.
fn insertion_order(tables: &[String], fks: &[ForeignKey]) -> anyhow::Result<Order> {
    let mut deferred: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut remaining: BTreeSet<String> = tables.iter().cloned().collect();
    let mut order = Vec::new();
    let mut edges: Vec<&ForeignKey> = fks.iter().collect();
    // A table's references to itself are always filled in afterwards (they can't be otherwise
    // when a row may refer to one after it).
    edges.retain(|e| {
        if e.0 == e.1 {
            if !e.3 {
                return true;
            }
            deferred.entry(e.0.clone()).or_default().extend(e.2.iter().cloned());
            false
        } else {
            true
        }
    });
    while !remaining.is_empty() {
        let ready: Vec<String> = remaining
            .iter()
            .filter(|t| !edges.iter().any(|e| &e.0 == *t && e.0 != e.1 && remaining.contains(&e.1)))
            .cloned()
            .collect();
        if let Some(t) = ready.into_iter().next() {
            remaining.remove(&t);
            order.push(t);
            continue;
        }
        // A cycle: break it at a nullable reference.
        let Some(pos) =
            edges.iter().position(|e| remaining.contains(&e.0) && remaining.contains(&e.1) && e.3 && !e.2.is_empty())
        else {
            bail!("the tables {remaining:?} refer to each other through references that can't be null");
        };
        let e = edges.remove(pos);
        deferred.entry(e.0.clone()).or_default().extend(e.2.iter().cloned());
    }
    for cols in deferred.values_mut() {
        cols.sort();
        cols.dedup();
    }
    Ok((order, deferred))
}

/// Imports the archive at `path`. Checks it whole first; then one transaction, which `open`
/// begins for the archive's organization (the operator's: `access::begin_import`).
pub async fn import_archive<F, Fut>(job: Job<'_>, path: &Path, open: F) -> anyhow::Result<Imported>
where
    F: FnOnce(OrgId) -> Fut,
    Fut: std::future::Future<Output = Result<OrgTx, sqlx::Error>>,
{
    let manifest = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || verify_archive(&path)).await.map_err(|e| anyhow!("{e}"))??
    };
    let org = manifest.organization_id;
    let mut tx = open(org).await?;
    let exists: Option<OrgId> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1").bind(org).fetch_optional(&mut *tx).await?;
    if exists.is_some() {
        bail!("organization {org} already exists in this installation; nothing was imported");
    }
    // The tables of the archive, all known here as tenant tables (or organizations).
    let known: BTreeSet<String> = super::export::tenant_tables(&mut tx).await?.into_iter().collect();
    let mut tables = Vec::new();
    for part in &manifest.parts {
        let Some(table) = &part.table else { continue };
        if table == "users" {
            continue;
        }
        checked_identifier(table)?;
        if table != "organizations" && !known.contains(table) {
            bail!(
                "the archive has rows of {table}, a table this installation doesn't have (the archive's schema \
                 version is {}); upgrade this installation first",
                manifest.schema_version
            );
        }
        tables.push(table.clone());
    }
    let fks = foreign_keys(&mut tx, &tables).await?;
    let (order, deferred) = insertion_order(&tables, &fks)?;

    // Accounts first: every table may refer to them.
    let accounts_created = import_users(&mut tx, path, &manifest).await?;
    let sealing = NameSealing {
        keys: job.keys.clone(),
        org,
        version: job.keys.current_version(crate::platform::keys::Scope::org(org)).map_err(|e| anyhow!("{e}"))?,
    };
    let mut rows = 0u64;
    for table in &order {
        let nulled = deferred.get(table).cloned().unwrap_or_default();
        let inserted = run_part(&mut tx, path, table, Pass::Insert { nulled }, Some(&sealing)).await?;
        let expected = manifest.counts.get(table).copied().unwrap_or(0);
        if inserted != expected {
            bail!("{table}: {inserted} rows imported, the manifest says {expected}");
        }
        rows += inserted;
    }
    for (table, cols) in &deferred {
        let key = super::export::primary_key(&mut tx, table).await?;
        run_part(&mut tx, path, table, Pass::Update { key, deferred: cols.clone() }, None).await?;
    }
    // Files are kept under this installation's key scheme (`<organization>/<file>`).
    sqlx::query(
        "UPDATE files SET storage_key = organization_id || '/' || id WHERE storage_key <> organization_id || '/' || id",
    )
    .execute(&mut *tx)
    .await?;

    // The audit chain, as it now stands in this transaction.
    let stored_keys: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key_id, public_key FROM audit_signing_keys ORDER BY key_id").fetch_all(&mut *tx).await?;
    let mut keys = vec![job.local_key];
    let mut audit_keys = Vec::new();
    for (id, bytes) in &stored_keys {
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| anyhow!("audit key {id} is not 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| anyhow!("audit key {id} is not valid"))?;
        if crate::audit::chain::key_id(&key) != *id {
            bail!("audit key {id} does not match its id");
        }
        keys.push(key);
        audit_keys.push(id.clone());
    }
    let report = crate::audit::chain::verify_org(&mut tx, org, &Verification::new(&keys, manifest.created_at)).await?;
    if let Some(b) = report.first_break {
        bail!("the archive's audit log does not verify at event {}: {}; nothing was imported", b.seq, b.message);
    }

    // The files' contents, sealed under this installation's keys; removed again on failure.
    let files: Vec<(FileId, String)> =
        sqlx::query_as("SELECT id, storage_key FROM files ORDER BY id").fetch_all(&mut *tx).await?;
    let mut stored = Vec::new();
    let put = async {
        for (id, key) in &files {
            let name = super::export::file_part_name(*id);
            if manifest.part(&name).is_none() {
                bail!("the archive has no contents for file {id}");
            }
            let bytes = {
                let (path, name) = (path.to_path_buf(), name.clone());
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
                    let mut zip = open_zip(&path)?;
                    let mut entry = zip.by_name(&name)?;
                    let mut out = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut out)?;
                    Ok(out)
                })
                .await
                .map_err(|e| anyhow!("{e}"))??
            };
            crate::work::files::store_contents(job.storage, job.keys, org, *id, key, &bytes)
                .await
                .with_context(|| format!("storing file {id}"))?;
            stored.push(key.clone());
        }
        Ok(())
    };
    let outcome = match put.await {
        Ok(()) => tx.commit().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        for key in &stored {
            let _ = job.storage.delete(key).await;
        }
        return Err(unique_violation_message(e));
    }
    Ok(Imported {
        files: files.len() as u64,
        manifest,
        rows,
        accounts_created,
        audit_keys,
        audit_events: report.events,
    })
}

/// Explains a slug that is taken here.
fn unique_violation_message(e: anyhow::Error) -> anyhow::Error {
    let unique = e
        .downcast_ref::<sqlx::Error>()
        .and_then(|d| d.as_database_error())
        .and_then(|d| d.constraint().map(str::to_string));
    match unique.as_deref() {
        Some("organizations_slug_key") => {
            anyhow!("an organization with the archive's slug already exists here; nothing was imported")
        }
        _ => e,
    }
}

/// Streams one part through a reader thread into INSERT (or, second pass, UPDATE) statements.
async fn run_part(
    tx: &mut PgConnection,
    path: &Path,
    table: &str,
    pass: Pass,
    sealing: Option<&NameSealing>,
) -> anyhow::Result<u64> {
    let (send, mut recv) = mpsc::channel(4);
    let reader = {
        let (path, part, table, pass) = (path.to_path_buf(), part_name(table), table.to_string(), pass.clone());
        let sealing = sealing.cloned();
        tokio::task::spawn_blocking(move || read_part(path, part, table, pass, sealing, send))
    };
    let mut done = 0u64;
    while let Some(batch) = recv.recv().await {
        let batch = batch?;
        for c in &batch.columns {
            checked_identifier(c)?;
        }
        let sql = match &pass {
            Pass::Insert { .. } => {
                let cols = batch.columns.join(", ");
                format!(
                    "INSERT INTO \"{table}\" ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::\"{table}\", $1::json)"
                )
            }
            Pass::Update { key, deferred } => {
                let set = deferred.iter().map(|c| format!("{c} = r.{c}")).collect::<Vec<_>>().join(", ");
                let on = key.iter().map(|c| format!("t.{c} = r.{c}")).collect::<Vec<_>>().join(" AND ");
                format!(
                    "UPDATE \"{table}\" t SET {set} FROM json_populate_recordset(NULL::\"{table}\", $1::json) r WHERE {on}"
                )
            }
        };
        let n = sqlx::query(&sql)
            .bind(&batch.json)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("importing {table}"))?
            .rows_affected();
        if matches!(pass, Pass::Insert { .. }) && n != batch.rows {
            bail!("{table}: {n} of {} rows were imported", batch.rows);
        }
        done += n;
    }
    reader.await.map_err(|e| anyhow!("{e}"))?;
    Ok(done)
}

/// Creates the accounts the archive's rows refer to that this installation doesn't have, as
/// accounts without a password or second factor. An account with the same id is used as it
/// is; the same email under another id is refused (it would be a different person here).
async fn import_users(tx: &mut PgConnection, path: &Path, manifest: &Manifest) -> anyhow::Result<u64> {
    if manifest.part(&part_name("users")).is_none() {
        return Ok(0);
    }
    let (send, mut recv) = mpsc::channel(4);
    let reader = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            read_part(path, part_name("users"), "users".into(), Pass::Insert { nulled: vec![] }, None, send)
        })
    };
    let mut created = 0u64;
    while let Some(batch) = recv.recv().await {
        let batch = batch?;
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT u.email FROM json_populate_recordset(NULL::users, $1::json) r JOIN users u ON u.email = r.email AND u.id <> r.id LIMIT 1",
        )
        .bind(&batch.json)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(email) = clash {
            bail!(
                "an account with the email {email} already exists here under another id; nothing was imported \
                 (remove or rename that account first)"
            );
        }
        created += sqlx::query(
            "INSERT INTO users (id, email, display_name, created_at, updated_at) \
             SELECT r.id, r.email, coalesce(r.display_name, ''), r.created_at, r.created_at \
             FROM json_populate_recordset(NULL::users, $1::json) r ON CONFLICT (id) DO NOTHING",
        )
        .bind(&batch.json)
        .execute(&mut *tx)
        .await
        .context("importing the accounts")?
        .rows_affected();
    }
    reader.await.map_err(|e| anyhow!("{e}"))?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(from: &str, to: &str, cols: &[&str], nullable: bool) -> ForeignKey {
        (from.into(), to.into(), cols.iter().map(|c| c.to_string()).collect(), nullable)
    }

    #[test]
    fn tables_come_after_the_tables_they_refer_to() {
        let tables: Vec<String> = ["tasks", "projects", "organizations", "comments"].map(String::from).to_vec();
        let fks = vec![
            fk("tasks", "projects", &["project_id"], false),
            fk("tasks", "tasks", &["parent_id"], true),
            fk("comments", "tasks", &["task_id"], false),
            fk("projects", "organizations", &["organization_id"], false),
            fk("tasks", "organizations", &["organization_id"], false),
        ];
        let (order, deferred) = insertion_order(&tables, &fks).unwrap();
        let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
        assert!(pos("organizations") < pos("projects"));
        assert!(pos("projects") < pos("tasks"));
        assert!(pos("tasks") < pos("comments"));
        assert_eq!(deferred.get("tasks"), Some(&vec!["parent_id".to_string()]));
    }

    #[test]
    fn a_cycle_through_references_that_cant_be_null_is_refused() {
        let tables: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let fks = vec![fk("a", "b", &["b_id"], false), fk("b", "a", &["a_id"], false)];
        assert!(insertion_order(&tables, &fks).is_err());
        let fks = vec![fk("a", "b", &["b_id"], true), fk("b", "a", &["a_id"], false)];
        let (order, deferred) = insertion_order(&tables, &fks).unwrap();
        assert_eq!(order, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(deferred.get("a"), Some(&vec!["b_id".to_string()]));
    }
}
