//! An organization's data export: one ZIP archive with every row of the organization (one
//! NDJSON part per table), the accounts its rows refer to (without any credential), the
//! contents of its files, the audit log with its heads and signed checkpoints, a
//! `manifest.json` (format version, time, organization, rows and SHA-256 of every part) and a
//! `README.md` describing the format ([`README`]).
//!
//! What is exported is read from the database's catalog, not listed by hand: every table with
//! an `organization_id` column is a part unless [`EXCLUDED_TABLES`] names it with the reason,
//! so a table added later is exported without touching this file (`tests/it/export.rs` fails
//! when the catalog and the archive disagree).
//!
//! Memory stays flat whatever the organization's size: rows are streamed from one read-only
//! `REPEATABLE READ` snapshot (`OrgTx::begin_snapshot`, so the parts agree with each other
//! while others keep writing) into a ZIP writer, in a thread of its own, through a bounded
//! channel; no table is ever collected in memory. One file's contents at a time are in memory
//! (uploads are bounded by `files.max_upload_bytes`).
//!
//! Speed: PostgreSQL writes each row's JSON itself (`row_to_json` over the columns in name
//! order) and sends it with `COPY … TO STDOUT (FORMAT binary)`, whose framing carries the text
//! unescaped; the rows' bytes are appended to the part as they arrive, with no per-row
//! allocation or re-encoding here ([`CopyRows`]). Only a table with sealed columns
//! (`…_sealed`) takes the slower path that parses each row to open them ([`encode_row_with`]).
//! Deflate is zlib-rs at level 1; file contents that are compressed already (images, PDFs,
//! archives, audio, video) are stored as they are.
//!
//! Archives the worker keeps for download are sealed at rest ([`Job::sealed_as`]): the ZIP
//! stream goes through `platform::sealed_stream` (STREAM over AES-256-GCM with the
//! organization's data key, bound to the organization and the export's id) before it reaches
//! the disk, and is opened again while it is downloaded. The archive an operator writes with
//! `clientflow org export` to a file they name is the plain ZIP.
//!
//! Every value of a sealed column passes through [`export_value`] once opened, and every
//! imported one through `import::import_value`: the one place where a sealed column is opened
//! for the archive (and sealed again under the importing installation's keys).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx};
use crate::audit::chain::Signer;
use crate::platform::db::Db;
use crate::platform::ids::{FileId, OrgId};
use crate::platform::keys::Scope;
use crate::platform::sealed_stream::{OpeningReader, SealingWriter, StreamError};
use crate::work::files::Storage;

/// What the archive calls itself in its manifest.
pub const FORMAT: &str = "clientflow-organization-export";
/// Raised whenever a reader of version N could misread an archive (documented in [`README`]).
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's name inside the archive.
pub const MANIFEST: &str = "manifest.json";
/// The format's description inside the archive.
pub const README_NAME: &str = "README.md";

/// Tenant tables that are not exported, each with the reason. Everything else with an
/// `organization_id` column is.
pub const EXCLUDED_TABLES: &[(&str, &str)] = &[
    ("api_keys", "secrets: each key's SHA-256 digest is a credential; keys are issued again after an import"),
    ("idempotency_keys", "API responses kept for a day to answer retries, keyed on API keys (not exported)"),
    ("invitations", "secrets: each pending invitation's token digest; invitations are sent again after an import"),
    ("org_exports", "the exports themselves (progress, expiry of their links), not the organization's data"),
    (
        "outbox_attachments",
        "mail in delivery: files attached to queued messages (invoice PDFs, made again from the invoices), removed once sent",
    ),
];

/// Columns of exported tables that look like credentials by name but are not: each with why
/// it is safe to export. A column named like a secret (`…hash…`, `…token…`, `…secret…`,
/// `…password…`) in an exported table must be listed here or its table excluded; the export
/// test checks it.
pub const NOT_SECRET_COLUMNS: &[(&str, &str, &str)] = &[
    ("audit_events", "hash", "the audit chain's link hash (public, verifiable)"),
    ("audit_events", "prev_hash", "the audit chain's link hash (public, verifiable)"),
    ("audit_heads", "hash", "the audit chain's head hash"),
    ("audit_checkpoints", "hash", "the audit chain's checkpoint hash"),
    ("audit_checkpoints", "key_id", "names the key that signed a checkpoint"),
    ("audit_signing_keys", "key_id", "names a signing key"),
    ("audit_signing_keys", "public_key", "an Ed25519 public key: it verifies signatures, it can't make them"),
    ("files", "sha256", "the digest of the file's own contents, which are in the archive"),
    ("files", "key_version", "the version number of the data key the stored contents use, not a key"),
    (
        "client_contacts",
        "key_version",
        "the version number of the data key of the sealed details, not a key (the archive holds the details opened)",
    ),
    ("files", "storage_key", "where the sealed contents are kept (`<organization>/<file>`), not a key to them"),
];

/// The accounts referenced by the organization's rows, without any credential: what an import
/// recreates (as accounts without a password: they sign in by password reset or Google).
/// In name order, like every part's keys.
const USER_COLUMNS: &str = "created_at, display_name, email, id";

/// Where rows go in the archive.
pub fn part_name(table: &str) -> String {
    format!("data/{table}.ndjson")
}

/// Where a file's contents go in the archive.
pub fn file_part_name(id: FileId) -> String {
    format!("files/{id}")
}

/// The function every value of a row with sealed columns passes through once they are opened
/// (rows of other tables are written as PostgreSQL gives them: `row_to_json`). A table with a
/// sealed column the export does not know how to open fails the export ([`encode_row_with`]),
/// so the archive never holds ciphertext.
pub fn export_value(table: &str, column: &str, value: Value) -> anyhow::Result<Value> {
    let _ = (table, column);
    Ok(value)
}

/// Progress of an export: rows written and rows in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// One part of the archive, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// The table whose rows it holds (`None` for a file's contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Rows (lines) in an NDJSON part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub bytes: u64,
    /// SHA-256 of the part's bytes, in hex.
    pub sha256: String,
}

/// A table left out, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Excluded {
    pub table: String,
    pub reason: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// When the export's snapshot was taken (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub organization_id: OrgId,
    pub organization_slug: String,
    /// The newest database migration of the exporting installation.
    pub schema_version: i64,
    /// Rows per table (the same numbers as the parts').
    pub counts: std::collections::BTreeMap<String, u64>,
    pub parts: Vec<Part>,
    pub excluded: Vec<Excluded>,
}

impl Manifest {
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// What a finished export produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
}

/// What an export needs.
pub struct Job<'a> {
    pub db: &'a Db,
    /// Holds `org.export` in the organization exported.
    pub principal: &'a OrgPrincipal,
    pub storage: &'a Storage,
    pub keys: &'a crate::platform::keys::Keyring,
    /// Signs the audit chain's head before the snapshot, so the archive's chain ends in a
    /// signed checkpoint.
    pub signer: &'a Signer,
    pub now: OffsetDateTime,
    pub progress: watch::Sender<Progress>,
    /// `Some(export id)`: the archive is sealed at rest with the organization's data key, bound
    /// to the organization and this export ([`archive_context`]); `None`: a plain ZIP (the
    /// operator's `clientflow org export`).
    pub sealed_as: Option<uuid::Uuid>,
}

/// What a sealed archive is bound to besides its organization (the data key's scope) and the
/// data key's version (in its header): the export it belongs to.
pub fn archive_context(export: uuid::Uuid) -> String {
    format!("org_exports|{export}")
}

/// Every table in `public` with an `organization_id` column (the catalog's tenant tables).
pub async fn tenant_tables(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(conn)
    .await
}

/// The tables exported, in name order: `organizations` and every tenant table not excluded.
pub async fn exported_tables(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let mut tables = vec!["organizations".to_string()];
    for t in tenant_tables(conn).await? {
        if !EXCLUDED_TABLES.iter().any(|(x, _)| *x == t) {
            tables.push(checked_identifier(&t)?.to_string());
        }
    }
    tables.sort();
    Ok(tables)
}

/// A table or column name from the catalog, used in SQL only when it is a plain identifier.
pub fn checked_identifier(name: &str) -> anyhow::Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { Ok(name) } else { Err(anyhow!("unexpected identifier {name:?} in the catalog")) }
}

/// The primary key's columns of `table`, in key order.
pub async fn primary_key(conn: &mut PgConnection, table: &str) -> anyhow::Result<Vec<String>> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) \
         WHERE i.indrelid = ('public.' || quote_ident($1))::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    if cols.is_empty() {
        bail!("table {table} has no primary key");
    }
    cols.iter().map(|c| checked_identifier(c).map(str::to_string)).collect()
}

/// (table, column) of every foreign key from a tenant table to `users`.
async fn user_references(conn: &mut PgConnection) -> anyhow::Result<Vec<(String, String)>> {
    let refs: Vec<(String, String)> = sqlx::query_as(
        "SELECT src.relname::text, a.attname::text FROM pg_constraint c \
         JOIN pg_class src ON src.oid = c.conrelid JOIN pg_class dst ON dst.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = src.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         WHERE c.contype = 'f' AND n.nspname = 'public' AND dst.relname = 'users' AND cardinality(c.conkey) = 1 \
           AND EXISTS (SELECT 1 FROM pg_attribute o WHERE o.attrelid = c.conrelid AND o.attname = 'organization_id') \
         ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await?;
    let mut out = Vec::new();
    for (t, c) in refs {
        if EXCLUDED_TABLES.iter().any(|(x, _)| *x == t) {
            continue;
        }
        out.push((checked_identifier(&t)?.to_string(), checked_identifier(&c)?.to_string()));
    }
    Ok(out)
}

/// The query streaming one table's rows as JSON text, in primary-key order: its stored
/// columns, not the generated ones (search vectors), which the importing database computes.
///
/// The columns are listed in name order, so `row_to_json` writes the keys sorted. `org` is
/// written into the query as a literal (`COPY` takes no parameters): a UUID, formatted here.
fn rows_query(table: &str, pk: &[String], columns: &[String], org: OrgId) -> String {
    let key = if table == "organizations" { "id" } else { "organization_id" };
    let mut columns = columns.to_vec();
    columns.sort();
    format!(
        "SELECT row_to_json(t)::text FROM (SELECT {} FROM \"{table}\" WHERE {key} = '{org}'::uuid) t ORDER BY {}",
        columns.join(", "),
        order_by(pk)
    )
}

/// The columns of `table` that hold stored values (not generated ones), in table order.
pub async fn stored_columns(conn: &mut PgConnection, table: &str) -> anyhow::Result<Vec<String>> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
         WHERE attrelid = ('public.' || quote_ident($1))::regclass AND attnum > 0 AND NOT attisdropped \
           AND attgenerated = '' ORDER BY attnum",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    cols.iter().map(|c| checked_identifier(c).map(str::to_string)).collect()
}

fn order_by(pk: &[String]) -> String {
    pk.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
}

/// The query streaming the accounts the organization's rows refer to.
fn users_query(refs: &[(String, String)], org: OrgId) -> String {
    let ids = refs
        .iter()
        .map(|(t, c)| format!("SELECT {c} FROM \"{t}\" WHERE organization_id = '{org}'::uuid AND {c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" UNION ");
    let ids = if ids.is_empty() { "SELECT NULL::uuid WHERE false".to_string() } else { ids };
    format!("SELECT row_to_json(t)::text FROM (SELECT {USER_COLUMNS} FROM users WHERE id IN ({ids})) t ORDER BY t.id")
}

/// How one data part of the archive is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartQuery {
    /// The table (or `users`, the accounts the rows refer to).
    pub table: String,
    /// A query whose rows are the part's lines, one JSON text each, in the part's order.
    pub sql: String,
    /// Whether its rows hold sealed values to open ([`encode_row_with`]); the others are
    /// streamed with `COPY (sql) TO STDOUT (FORMAT binary)`.
    pub sealed: bool,
}

/// The queries the data parts of `org`'s archive are read with, one per table of `tables`
/// ([`exported_tables`]) plus `users`, in part order. Public so that a benchmark can read the
/// same rows with the same queries as its reference.
pub async fn part_queries(conn: &mut PgConnection, org: OrgId, tables: &[String]) -> anyhow::Result<Vec<PartQuery>> {
    let mut queries = Vec::new();
    for t in tables {
        let (pk, columns) = (primary_key(conn, t).await?, stored_columns(conn, t).await?);
        queries.push(PartQuery {
            table: t.clone(),
            sql: rows_query(t, &pk, &columns, org),
            sealed: !sealed_columns(&columns).is_empty(),
        });
    }
    let user_refs = user_references(conn).await?;
    queries.push(PartQuery { table: "users".into(), sql: users_query(&user_refs, org), sealed: false });
    queries.sort();
    Ok(queries)
}

/// Where a piece of the archive goes: the writer thread's input.
enum Piece {
    /// A new entry, deflated or stored as it is.
    Start(String, Compression),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Deflate,
    Store,
}

/// Bytes and SHA-256 of each part, as the writer thread saw them.
type Digests = Vec<(String, u64, String)>;

/// Writes one NDJSON line per row into `buf` (sent on when it grows), each value through
/// [`export_value`].
#[cfg(test)]
fn encode_row(table: &str, line: &str, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    encode_row_with(table, line, buf, None)
}

/// The columns of a table whose names say they hold sealed values.
fn sealed_columns(columns: &[String]) -> Vec<&str> {
    columns.iter().map(String::as_str).filter(|c| c.ends_with("_sealed")).collect()
}

/// One row of a table with sealed columns, opening them with the organization's data keys
/// first: the archive holds what the owner sees (a contact's email and phone, a file's name,
/// in their plain columns), never ciphertext only this installation could open. An import
/// writes contacts' details in plain, and the re-seal pass seals them under the new
/// installation's keys; it seals files' names itself before writing their rows. A sealed value
/// in a table this function does not know how to open fails the export.
fn encode_row_with(
    table: &str,
    line: &str,
    buf: &mut Vec<u8>,
    keys: Option<(&crate::platform::keys::Keyring, crate::platform::ids::OrgId)>,
) -> anyhow::Result<()> {
    let mut row: Map<String, Value> =
        serde_json::from_str(line).with_context(|| format!("a row of {table} is not a JSON object"))?;
    if table == "client_contacts" {
        for column in ["email", "phone"] {
            let sealed = row.remove(&format!("{column}_sealed")).unwrap_or(Value::Null);
            let Some(hex_text) = sealed.as_str() else { continue };
            let (keys, org) =
                keys.ok_or_else(|| anyhow!("client_contacts has sealed values and no keys to open them"))?;
            let bytes = hex::decode(hex_text.trim_start_matches("\\x")).context("a sealed contact detail")?;
            let id: crate::platform::ids::ContactId =
                row.get("id").and_then(Value::as_str).unwrap_or_default().parse().context("a contact's id")?;
            let plain = crate::work::clients::open_contact_detail(keys, org, column, id, &bytes)
                .map_err(|e| anyhow!("opening a contact's {column}: {e}"))?;
            row.insert(column.to_string(), Value::String(plain));
        }
        row.remove("key_version");
    }
    if table == "files" {
        // The name opened into its plain column (a name from before names were sealed is
        // there already); the sealed column does not go into the archive.
        let sealed = row.remove("name_sealed").unwrap_or(Value::Null);
        if let Some(hex_text) = sealed.as_str() {
            let (keys, org) = keys.ok_or_else(|| anyhow!("files has sealed names and no keys to open them"))?;
            let bytes = hex::decode(hex_text.trim_start_matches("\\x")).context("a sealed file name")?;
            let id: FileId =
                row.get("id").and_then(Value::as_str).unwrap_or_default().parse().context("a file's id")?;
            let name = crate::work::files::open_name(keys, org, id, Some(&bytes), None)
                .map_err(|e| anyhow!("opening the name of file {id}: {e}"))?;
            row.insert("name".to_string(), Value::String(name));
        }
    }
    if let Some((column, _)) = row.iter().find(|(c, v)| c.ends_with("_sealed") && !v.is_null()) {
        bail!("{table}.{column} holds sealed values the export does not know how to open");
    }
    for (column, value) in row.iter_mut() {
        *value = export_value(table, column, std::mem::take(value))?;
    }
    serde_json::to_writer(&mut *buf, &row)?;
    buf.push(b'\n');
    Ok(())
}

/// Bytes of rows gathered before they are handed to the writer thread.
const CHUNK: usize = 256 * 1024;

/// The rows of `COPY (SELECT row_to_json(t)::text …) TO STDOUT (FORMAT binary)`, as NDJSON:
/// each row's text is appended to the part followed by a newline. The binary framing (a
/// 19-byte header, then per row a 16-bit field count and a 32-bit length before the bytes, and
/// a -1 field count at the end) carries the JSON as PostgreSQL wrote it, with nothing to
/// unescape. A row split across messages waits in `pending` for the rest.
#[derive(Default)]
struct CopyRows {
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
}

/// `PGCOPY\n\377\r\n\0`: the binary format's signature.
const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl CopyRows {
    /// Appends the complete rows in `data` to `out`; returns how many.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<u64> {
        let mut rows = 0;
        if self.pending.is_empty() {
            let used = self.parse(data, out, &mut rows)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.parse(&pending, out, &mut rows)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(rows)
    }

    /// Parses what it can of `data`; returns the bytes consumed.
    fn parse(&mut self, data: &[u8], out: &mut Vec<u8>, rows: &mut u64) -> anyhow::Result<usize> {
        let mut at = 0;
        if !self.header_done {
            if data.len() < 19 {
                return Ok(0);
            }
            if &data[..11] != COPY_SIGNATURE {
                bail!("COPY did not answer in its binary format");
            }
            let extension = u32::from_be_bytes(data[15..19].try_into().expect("4 bytes")) as usize;
            if data.len() < 19 + extension {
                return Ok(0);
            }
            at = 19 + extension;
            self.header_done = true;
        }
        loop {
            let rest = &data[at..];
            if self.ended {
                if !rest.is_empty() {
                    bail!("COPY sent bytes after its end");
                }
                return Ok(at);
            }
            if rest.len() < 2 {
                return Ok(at);
            }
            match i16::from_be_bytes([rest[0], rest[1]]) {
                -1 => {
                    self.ended = true;
                    at += 2;
                    continue;
                }
                1 => {}
                n => bail!("COPY sent a row of {n} fields, expected 1"),
            }
            if rest.len() < 6 {
                return Ok(at);
            }
            let len = i32::from_be_bytes(rest[2..6].try_into().expect("4 bytes"));
            let len = usize::try_from(len).map_err(|_| anyhow!("COPY sent a null row"))?;
            if rest.len() < 6 + len {
                return Ok(at);
            }
            out.extend_from_slice(&rest[6..6 + len]);
            out.push(b'\n');
            *rows += 1;
            at += 6 + len;
        }
    }

    /// Checks the stream ended where it should.
    fn finish(&self) -> anyhow::Result<()> {
        if self.ended && self.pending.is_empty() { Ok(()) } else { bail!("COPY ended in the middle of a row") }
    }
}

/// Writes the organization's archive to `out` (through `out.partial`, renamed when complete),
/// reporting progress on `job.progress`. Refuses a principal without `org.export`.
pub async fn write_archive(job: Job<'_>, out: &Path) -> anyhow::Result<Written> {
    if !job.principal.can(Permission::OrgExport) {
        bail!("exporting an organization needs the org.export permission");
    }
    let org = job.principal.org_id();
    // The chain's head is signed (and the signing key recorded) before the snapshot, so the
    // archive's audit log ends in a signed checkpoint that an import can verify.
    {
        let mut tx = OrgTx::begin(job.db, job.principal).await?;
        crate::audit::chain::sign_head_now(&mut tx, job.signer, org, job.now).await?;
        record_signing_key(&mut tx, job.signer, org).await?;
        tx.commit().await?;
    }
    let mut tx = OrgTx::begin_snapshot(job.db, job.principal).await?;
    sqlx::query("SET LOCAL TimeZone = 'UTC'").execute(&mut *tx).await?;
    let tables = exported_tables(&mut tx).await?;
    let mut total = 0u64;
    let mut counts = std::collections::BTreeMap::new();
    for t in &tables {
        let key = if t == "organizations" { "id" } else { "organization_id" };
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{t}\" WHERE {key} = $1"))
            .bind(org)
            .fetch_one(&mut *tx)
            .await?;
        total += n as u64;
        counts.insert(t.clone(), n as u64);
    }
    let queries = part_queries(&mut tx, org, &tables).await?;
    let slug: String =
        sqlx::query_scalar("SELECT slug FROM organizations WHERE id = $1").bind(org).fetch_one(&mut *tx).await?;
    let schema_version: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations").fetch_one(&mut *tx).await?;
    job.progress.send_replace(Progress { done: 0, total });

    let partial = partial_path(out);
    let sink = match job.sealed_as {
        Some(export) => Sink::sealed(&partial, job.keys, org, export)?,
        None => Sink::plain(&partial)?,
    };
    let (send, recv) = mpsc::channel::<Piece>(8);
    let writer = tokio::task::spawn_blocking(move || write_zip(sink, recv));
    let streamed = stream_parts(&mut tx, &job, &queries, send, total).await;
    // The writer ends when the channel closes (`send` was moved into `stream_parts`).
    let written = writer.await.map_err(|e| anyhow!("the archive writer stopped: {e}"))?;
    let (mut zip, digests, rows) = match (streamed, written) {
        (Ok(rows), Ok((zip, digests))) => (zip, digests, rows),
        (Err(e), _) | (Ok(_), Err(e)) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    tx.commit().await?;
    let mut parts: Vec<Part> = digests
        .into_iter()
        .map(|(name, bytes, sha256)| {
            let table = name.strip_prefix("data/").and_then(|n| n.strip_suffix(".ndjson")).map(str::to_string);
            let rows = table.as_ref().map(|t| rows.get(t).copied().unwrap_or(0));
            Part { name, table, rows, bytes, sha256 }
        })
        .collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    counts.insert("users".into(), rows.get("users").copied().unwrap_or(0));
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created_at: crate::audit::truncate_to_micros(job.now),
        organization_id: org,
        organization_slug: slug,
        schema_version,
        counts,
        parts,
        excluded: EXCLUDED_TABLES.iter().map(|(t, r)| Excluded { table: (*t).into(), reason: (*r).into() }).collect(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let finished = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, [u8; 32])> {
        zip.start_file(MANIFEST, entry_options(Compression::Deflate))?;
        zip.write_all(&manifest_json)?;
        let hashing = zip.finish()?.into_inner();
        let (sink, size, sha256) = hashing.finish();
        let file = sink.finish()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&partial, partial.with_extension(""))?;
        Ok((size, sha256))
    })
    .await
    .map_err(|e| anyhow!("the archive writer stopped: {e}"));
    let (size_bytes, sha256) = match finished {
        Ok(Ok(done)) => done,
        Ok(Err(e)) | Err(e) => {
            let _ = std::fs::remove_file(partial_path(out));
            return Err(e);
        }
    };
    job.progress.send_replace(Progress { done: total, total });
    Ok(Written { manifest, size_bytes, sha256 })
}

/// `out` with `.partial` added: where the archive is written until it is complete.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Streams every part into the writer; returns rows per table.
async fn stream_parts(
    tx: &mut OrgTx,
    job: &Job<'_>,
    queries: &[PartQuery],
    send: mpsc::Sender<Piece>,
    total: u64,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let org = job.principal.org_id();
    let closed = || anyhow!("the archive writer stopped");
    let mut rows_of = std::collections::BTreeMap::new();
    send.send(Piece::Start(README_NAME.into(), Compression::Deflate)).await.map_err(|_| closed())?;
    send.send(Piece::Bytes(README.as_bytes().to_vec())).await.map_err(|_| closed())?;
    let mut done = 0u64;
    for PartQuery { table, sql, sealed } in queries {
        send.send(Piece::Start(part_name(table), Compression::Deflate)).await.map_err(|_| closed())?;
        let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
        let mut n = 0u64;
        let counts_progress = table != "users";
        // Hands `buf` to the writer once it holds a chunk's worth.
        macro_rules! pass_on_full {
            () => {
                if buf.len() >= CHUNK {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 64 * 1024));
                    send.send(Piece::Bytes(full)).await.map_err(|_| closed())?;
                    if counts_progress {
                        job.progress.send_replace(Progress { done: done + n, total });
                    }
                }
            };
        }
        if *sealed {
            let mut rows = sqlx::query_scalar::<_, String>(sql).fetch(&mut **tx);
            while let Some(line) = rows.try_next().await? {
                encode_row_with(table, &line, &mut buf, Some((job.keys, org)))?;
                n += 1;
                pass_on_full!();
            }
        } else {
            let mut copy = CopyRows::default();
            let mut stream = (**tx).copy_out_raw(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)")).await?;
            while let Some(bytes) = stream.try_next().await? {
                n += copy.feed(&bytes, &mut buf)?;
                pass_on_full!();
            }
            copy.finish()?;
        }
        if !buf.is_empty() {
            send.send(Piece::Bytes(buf)).await.map_err(|_| closed())?;
        }
        if counts_progress {
            done += n;
            job.progress.send_replace(Progress { done, total });
        }
        rows_of.insert(table.clone(), n);
    }
    // The files' contents, through the storage API (which opens them), one at a time.
    let files: Vec<(FileId, String, String)> = {
        // Ids, keys and types only: small, and the snapshot stays open for them.
        sqlx::query_as("SELECT id, storage_key, content_type FROM files WHERE organization_id = $1 ORDER BY id")
            .bind(org)
            .fetch_all(&mut **tx)
            .await?
    };
    for (id, key, content_type) in files {
        let bytes = crate::work::files::read_contents(job.storage, job.keys, org, id, &key)
            .await
            .map_err(|e| anyhow!("file {id} could not be read from storage: {e}"))?;
        let compression = if compressed_already(&content_type) { Compression::Store } else { Compression::Deflate };
        send.send(Piece::Start(file_part_name(id), compression)).await.map_err(|_| closed())?;
        send.send(Piece::Bytes(bytes)).await.map_err(|_| closed())?;
    }
    Ok(rows_of)
}

/// Content types whose bytes are compressed already: deflating them again costs time and
/// saves nothing.
fn compressed_already(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (t.starts_with("image/") && t != "image/svg+xml" && t != "image/bmp")
        || t.starts_with("video/")
        || t.starts_with("audio/")
        || matches!(
            t.as_str(),
            "application/pdf"
                | "application/zip"
                | "application/gzip"
                | "application/x-gzip"
                | "application/x-7z-compressed"
                | "application/x-rar-compressed"
                | "application/x-bzip2"
                | "application/x-xz"
                | "application/zstd"
                | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                | "application/vnd.openxmlformats-officedocument.presentationml.presentation"
                | "application/vnd.oasis.opendocument.text"
                | "application/vnd.oasis.opendocument.spreadsheet"
        )
}

/// Records the installation's audit signing key for `org`, so the archive carries the public
/// key its checkpoints are verified with (`audit_signing_keys`, migration 0044).
async fn record_signing_key(conn: &mut PgConnection, signer: &Signer, org: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_signing_keys (organization_id, key_id, public_key) \
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM audit_checkpoints WHERE organization_id = $1 AND key_id = $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(signer.key_id())
    .bind(signer.verifying_key().as_bytes().as_slice())
    .execute(conn)
    .await?;
    Ok(())
}

fn entry_options(compression: Compression) -> zip::write::SimpleFileOptions {
    let options = zip::write::SimpleFileOptions::default()
        .large_file(true)
        .unix_permissions(0o600)
        .last_modified_time(zip::DateTime::default());
    match compression {
        Compression::Deflate => options.compression_method(zip::CompressionMethod::Deflated).compression_level(Some(1)),
        Compression::Store => options.compression_method(zip::CompressionMethod::Stored),
    }
}

/// Where the archive's bytes go: the file itself, or the file through the sealing stream.
enum Sink {
    Plain(std::io::BufWriter<std::fs::File>),
    Sealed(Box<SealingWriter<std::io::BufWriter<std::fs::File>>>),
}

/// Write buffer between the ZIP writer and the file.
const WRITE_BUFFER: usize = 1024 * 1024;

impl Sink {
    fn plain(path: &Path) -> anyhow::Result<Self> {
        Ok(Sink::Plain(std::io::BufWriter::with_capacity(WRITE_BUFFER, open_private(path)?)))
    }

    fn sealed(
        path: &Path,
        keys: &crate::platform::keys::Keyring,
        org: OrgId,
        export: uuid::Uuid,
    ) -> anyhow::Result<Self> {
        let file = std::io::BufWriter::with_capacity(WRITE_BUFFER, open_private(path)?);
        let writer = SealingWriter::new(keys, Scope::org(org), &archive_context(export), file)
            .map_err(|e| anyhow!("sealing the archive: {e}"));
        match writer {
            Ok(w) => Ok(Sink::Sealed(Box::new(w))),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Seals the last chunk (when sealed), flushes, and returns the file.
    fn finish(self) -> std::io::Result<std::fs::File> {
        let buffered = match self {
            Sink::Plain(w) => w,
            Sink::Sealed(w) => w.finish()?,
        };
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}

/// Counts and hashes the ZIP's bytes on their way to the sink: the size and SHA-256 of the
/// archive as it is downloaded (the plain ZIP), without reading it back.
struct Hashing<W> {
    inner: W,
    bytes: u64,
    hash: Sha256,
}

impl<W: Write> Hashing<W> {
    fn finish(self) -> (W, u64, [u8; 32]) {
        (self.inner, self.bytes, self.hash.finalize().into())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type ArchiveZip = zip::ZipWriter<zip::write::StreamWriter<Hashing<Sink>>>;

/// The writer thread: every piece into the ZIP stream, hashing each part as it goes. The ZIP
/// is written as a stream (sizes in data descriptors after each entry), so it never seeks
/// back: the sealed stream can only go forward.
fn write_zip(sink: Sink, mut recv: mpsc::Receiver<Piece>) -> anyhow::Result<(ArchiveZip, Digests)> {
    let mut zip = zip::ZipWriter::new_stream(Hashing { inner: sink, bytes: 0, hash: Sha256::new() });
    let mut digests: Digests = Vec::new();
    let mut current: Option<(String, u64, Sha256)> = None;
    let finish = |current: &mut Option<(String, u64, Sha256)>, digests: &mut Digests| {
        if let Some((name, bytes, hash)) = current.take() {
            digests.push((name, bytes, hex::encode(hash.finalize())));
        }
    };
    while let Some(piece) = recv.blocking_recv() {
        match piece {
            Piece::Start(name, compression) => {
                finish(&mut current, &mut digests);
                zip.start_file(name.as_str(), entry_options(compression))?;
                current = Some((name, 0, Sha256::new()));
            }
            Piece::Bytes(bytes) => {
                let Some((_, n, hash)) = current.as_mut() else { bail!("bytes before a part") };
                zip.write_all(&bytes)?;
                hash.update(&bytes);
                *n += bytes.len() as u64;
            }
        }
    }
    finish(&mut current, &mut digests);
    digests.retain(|(name, _, _)| name != README_NAME);
    Ok((zip, digests))
}

/// Creates `path` readable by this user only (the archive holds the organization's data).
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).truncate(true).write(true).read(true).mode(0o600).open(path)
}

/// Size and SHA-256 of a file, streamed.
pub fn digest_file(path: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let n = std::io::copy(&mut f, &mut hash)?;
    Ok((n, hash.finalize().into()))
}

/// Opens an archive the worker sealed ([`Job::sealed_as`]): a reader of the plain ZIP, which
/// authenticates every chunk before returning it. Fails at once when the file is not a sealed
/// archive of this export or the organization's data key is gone, and while reading when the
/// file was changed.
pub fn open_sealed_archive(
    keys: &crate::platform::keys::Keyring,
    org: OrgId,
    export: uuid::Uuid,
    path: &Path,
) -> anyhow::Result<Result<OpeningReader<std::fs::File>, StreamError>> {
    let file = std::fs::File::open(path).with_context(|| format!("export archive {}", path.display()))?;
    Ok(OpeningReader::new(keys, Scope::org(org), &archive_context(export), file))
}

/// The archive's `README.md`: the format, for whoever opens it.
pub const README: &str = include_str!("export_format.md");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_from_the_catalog_are_plain() {
        assert!(checked_identifier("time_entries").is_ok());
        assert!(checked_identifier("x\"; DROP TABLE users; --").is_err());
        assert!(checked_identifier("").is_err());
        assert!(checked_identifier("Tasks").is_err());
    }

    #[test]
    fn rows_keep_their_values_and_end_in_a_newline() {
        let mut buf = Vec::new();
        encode_row("tasks", r#"{"organization_id":"o","title":"A \"b\"","n":3,"x":null}"#, &mut buf).unwrap();
        let line = String::from_utf8(buf).unwrap();
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["title"], "A \"b\"");
        assert_eq!(v["n"], 3);
        assert!(v["x"].is_null());
    }

    /// A `COPY … (FORMAT binary)` answer of one text column.
    fn copy_answer(rows: &[&str]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes()); // flags
        out.extend_from_slice(&4u32.to_be_bytes()); // a header extension, skipped
        out.extend_from_slice(b"ext!");
        for r in rows {
            out.extend_from_slice(&1i16.to_be_bytes());
            out.extend_from_slice(&(r.len() as i32).to_be_bytes());
            out.extend_from_slice(r.as_bytes());
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn copy_rows_become_lines_however_the_messages_split_them() {
        let rows = [r#"{"a":"x\"y","b":1}"#, "{}", r#"{"t":"line\nbreak ü"}"#];
        let answer = copy_answer(&rows);
        let expected: String = rows.iter().map(|r| format!("{r}\n")).collect();
        for split in [1, 2, 3, 5, 7, 19, 23, 1000] {
            let mut copy = CopyRows::default();
            let (mut out, mut n) = (Vec::new(), 0);
            for piece in answer.chunks(split) {
                n += copy.feed(piece, &mut out).unwrap();
            }
            copy.finish().unwrap();
            assert_eq!((n, String::from_utf8(out).unwrap()), (3, expected.clone()), "split {split}");
        }
        // Cut short, a null, two columns, not binary: refused.
        let mut copy = CopyRows::default();
        copy.feed(&answer[..answer.len() - 3], &mut Vec::new()).unwrap();
        assert!(copy.finish().is_err());
        let mut null = copy_answer(&[]);
        null.truncate(null.len() - 2);
        null.extend_from_slice(&1i16.to_be_bytes());
        null.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(CopyRows::default().feed(&null, &mut Vec::new()).is_err());
        let mut two = copy_answer(&[]);
        two.truncate(two.len() - 2);
        two.extend_from_slice(&2i16.to_be_bytes());
        assert!(CopyRows::default().feed(&two, &mut Vec::new()).is_err());
        assert!(CopyRows::default().feed(b"{\"a\":1}\n and more bytes", &mut Vec::new()).is_err());
    }

    #[test]
    fn compressed_contents_are_stored_and_text_is_deflated() {
        for t in ["image/png", "image/jpeg", "application/pdf", "application/zip", "video/mp4"] {
            assert!(compressed_already(t), "{t}");
        }
        for t in ["text/plain", "text/csv", "image/svg+xml", "application/json"] {
            assert!(!compressed_already(t), "{t}");
        }
    }

    #[test]
    fn the_partial_archive_sits_next_to_the_final_one() {
        assert_eq!(partial_path(Path::new("/d/e.zip")), PathBuf::from("/d/e.zip.partial"));
        assert_eq!(partial_path(Path::new("/d/e.zip")).with_extension(""), PathBuf::from("/d/e.zip"));
    }
}
