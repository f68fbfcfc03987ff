//! Files on projects and tasks: type- and size-checked uploads, contents sealed with
//! AES-256-GCM (bound to organization and file id) in a storage adapter, downloads only through
//! an authorized request or a short-lived signed link.
//!
//! A file's name is sealed too, in its row (`files.name_sealed`, bound to the organization,
//! `files.name` and the file's id): every read goes through [`FileRow::open`], and lists sort
//! by upload time, never by name, so the database never needs to read one. Audit events name
//! a file by its id only (docs/security/encryption.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::projects::{fetch_visible, require};
use super::{fields, member_filter, project_visible};
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::audit::{self, Context, Entry};
use crate::platform::db::{Db, RegionId};
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{FileId, OrgId, ProjectId, TaskId};
use crate::platform::keys::{At, KeyError, Keyring, Scope};
pub use crate::platform::storage::{S3StorageConfig, Sealed, Storage, StorageKind};

/// `[files]`: upload size, where contents are kept (the local disk, or an S3-compatible
/// bucket: `platform::storage`), how long a download link works.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest accepted upload.
    pub max_upload_bytes: usize,
    /// Where encrypted file contents are kept (default `<data_dir>/files`).
    pub dir: Option<PathBuf>,
    /// How long a signed download link works.
    pub link_minutes: u32,
    /// `local` (default: `dir`) or `s3` (`[files.s3]`).
    pub storage: StorageKind,
    /// The bucket, when `storage = "s3"`.
    pub s3: Option<S3StorageConfig>,
}

impl FilesConfig {
    /// The configured adapter (validated: an S3 store without its settings is refused here).
    pub fn open_storage(&self, data_dir: &std::path::Path) -> Result<Storage, crate::platform::config::ConfigError> {
        let dir = self.dir.clone().unwrap_or_else(|| data_dir.join("files"));
        Storage::from_config(self.storage, &dir, self.s3.as_ref())
    }

    pub fn validate(&self) -> Result<(), crate::platform::config::ConfigError> {
        match (self.storage, &self.s3) {
            (StorageKind::S3, None) => Err(crate::platform::config::ConfigError::invalid(
                "files.s3",
                "files.storage is s3: set files.s3.bucket and files.s3.region (and files.s3.endpoint for a store other than AWS)",
            )),
            (StorageKind::S3, Some(s3)) => s3.validate(),
            (StorageKind::Local, _) => Ok(()),
        }
    }
}

/// Every region's file store (`[files]` is the default region's; further regions keep theirs
/// in their own directory, `residency.regions.<name>.files_dir`). The file functions below pick
/// the store of their principal's region, so an organization's files land where its rows are.
/// Dereferences to the default region's store.
#[derive(Clone, Debug)]
pub struct RegionStores {
    stores: std::sync::Arc<Vec<(RegionId, Storage)>>,
}

impl RegionStores {
    /// The default region's store first.
    pub fn new(stores: Vec<(RegionId, Storage)>) -> Self {
        assert!(!stores.is_empty(), "at least the default region's store");
        Self { stores: std::sync::Arc::new(stores) }
    }

    /// The store of `region`.
    pub fn of(&self, region: RegionId) -> DomainResult<&Storage> {
        self.stores
            .iter()
            .find(|(r, _)| *r == region)
            .map(|(_, s)| s)
            .ok_or_else(|| DomainError::internal(format!("no file store for region {region}")))
    }

    /// Every region with its store, the default first.
    pub fn all(&self) -> impl Iterator<Item = (RegionId, &Storage)> {
        self.stores.iter().map(|(r, s)| (*r, s))
    }
}

impl std::ops::Deref for RegionStores {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.stores[0].1
    }
}

/// Multipart framing and the small fields around the file (boundaries, part headers, the
/// CSRF token, the sharing checkbox).
pub const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The largest request body of a file upload: the file and its multipart framing.
pub fn upload_body_limit(files: &FilesConfig) -> usize {
    files.max_upload_bytes.saturating_add(MULTIPART_OVERHEAD)
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self { max_upload_bytes: 25 * 1024 * 1024, dir: None, link_minutes: 5, storage: StorageKind::Local, s3: None }
    }
}

/// A file's metadata as shown and sent: its name opened ([`FileRow::open`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileMeta {
    #[schema(value_type = String, format = Uuid)]
    pub id: FileId,
    #[schema(value_type = String, format = Uuid)]
    pub project_id: ProjectId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub task_id: Option<TaskId>,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub shared_with_client: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A file's row as stored: its name sealed (`name_sealed`), or in plaintext (`name`) when it
/// was written before names were sealed and the re-seal job has not reached it yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: FileId,
    pub project_id: ProjectId,
    pub task_id: Option<TaskId>,
    name: Option<String>,
    name_sealed: Option<Vec<u8>>,
    pub content_type: String,
    pub size_bytes: i64,
    pub shared_with_client: bool,
    pub created_at: OffsetDateTime,
}

impl FileRow {
    /// The metadata with the name opened with `org`'s data key. A sealed name that does not
    /// open (moved from another row or organization, or its key destroyed) is an error, never
    /// shown as something else.
    pub fn open(self, keys: &Keyring, org: OrgId) -> DomainResult<FileMeta> {
        let name =
            open_name(keys, org, self.id, self.name_sealed.as_deref(), self.name).map_err(DomainError::internal)?;
        Ok(FileMeta {
            id: self.id,
            project_id: self.project_id,
            task_id: self.task_id,
            name,
            content_type: self.content_type,
            size_bytes: self.size_bytes,
            shared_with_client: self.shared_with_client,
            created_at: self.created_at,
        })
    }

    /// Whether the name is still stored in plaintext (written before names were sealed).
    pub fn name_in_plaintext(&self) -> bool {
        self.name_sealed.is_none()
    }
}

/// Opens every row's name (lists).
pub fn open_all(rows: Vec<FileRow>, keys: &Keyring, org: OrgId) -> DomainResult<Vec<FileMeta>> {
    rows.into_iter().map(|r| r.open(keys, org)).collect()
}

/// The columns of a [`FileRow`].
pub const COLUMNS: &str = "f.id, f.project_id, f.task_id, f.name, f.name_sealed, f.content_type, f.size_bytes, \
     f.shared_with_client, f.created_at";

/// Where a file's name is bound: its organization's data key, `files.name`, this file's id.
pub fn name_at(id: &str) -> At<'_> {
    At::new("files", "name", id)
}

/// Seals a file's name for its row, with the organization's newest data key or the given
/// version (re-sealing).
pub fn seal_name(
    keys: &Keyring,
    org: OrgId,
    id: FileId,
    name: &str,
    version: Option<u32>,
) -> Result<Vec<u8>, KeyError> {
    let row = id.to_string();
    match version {
        Some(v) => keys.seal_with_version(Scope::org(org), name_at(&row), name.as_bytes(), v),
        None => keys.seal(Scope::org(org), name_at(&row), name.as_bytes()),
    }
}

/// A file's name: the sealed one opened, or the plaintext one of a row the re-seal job has not
/// reached yet.
pub fn open_name(
    keys: &Keyring,
    org: OrgId,
    id: FileId,
    sealed: Option<&[u8]>,
    plain: Option<String>,
) -> Result<String, KeyError> {
    match (sealed, plain) {
        (Some(sealed), _) => {
            let row = id.to_string();
            let bytes = keys.open(Scope::org(org), name_at(&row), sealed, None)?;
            String::from_utf8(bytes).map_err(|_| KeyError::Open)
        }
        (None, Some(plain)) => Ok(plain),
        (None, None) => Err(KeyError::Open),
    }
}

/// The content type, from the bytes themselves (the declared type is ignored): PDF, PNG, JPEG,
/// GIF, WebP, Office/ZIP, or plain text/CSV when the bytes are UTF-8.
pub fn detect_type(bytes: &[u8], name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some(if lower.ends_with(".docx") {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        } else if lower.ends_with(".xlsx") {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        } else if lower.ends_with(".pptx") {
            "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        } else {
            "application/zip"
        })
    } else if std::str::from_utf8(bytes).is_ok() && !bytes.contains(&0) {
        Some(if lower.ends_with(".csv") { "text/csv" } else { "text/plain" })
    } else {
        None
    }
}

/// A file name safe to store and to put in a `Content-Disposition` header.
pub fn clean_name(name: &str) -> DomainResult<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control() && *c != '"').collect::<String>().trim().to_string();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(DomainError::field("file", "needs a file name"));
    }
    Ok(cleaned.chars().take(255).collect())
}

/// What contents sealed with the master key (before envelope encryption) were bound to.
pub fn legacy_context(org: OrgId, id: FileId) -> String {
    format!("file:{org}:{id}")
}

/// Where a file's contents are bound: its organization's data key, this file's id.
pub fn contents_at(id: &str) -> At<'_> {
    At::new("files", "contents", id)
}

pub struct Upload<'a> {
    pub project_id: ProjectId,
    pub task_id: Option<TaskId>,
    pub name: &'a str,
    pub bytes: Vec<u8>,
    pub shared_with_client: bool,
}

pub async fn upload(
    db: &Db,
    storage: &RegionStores,
    keys: &Keyring,
    max_bytes: usize,
    ctx: &Context,
    p: &OrgPrincipal,
    up: Upload<'_>,
) -> DomainResult<FileMeta> {
    require(p, Permission::FilesUpload)?;
    let storage = storage.of(p.region())?;
    if up.bytes.is_empty() {
        return Err(DomainError::field("file", "is empty"));
    }
    if up.bytes.len() > max_bytes {
        return Err(DomainError::TooLarge);
    }
    let name = clean_name(up.name)?;
    let content_type = detect_type(&up.bytes, &name).ok_or_else(|| {
        DomainError::UnsupportedType(
            "Only PDF, images (PNG, JPEG, GIF, WebP), Office documents, ZIP archives and text files can be uploaded."
                .into(),
        )
    })?;
    let mut tx = OrgTx::begin(db, p).await?;
    let size = up.bytes.len() as i64;
    crate::billing::limits::check(&mut tx, ctx, crate::billing::limits::Resource::StorageBytes, size).await?;
    fetch_visible(&mut tx, p, up.project_id).await?;
    if let Some(t) = up.task_id {
        super::require_task_in_project(&mut tx, t, up.project_id, "task_id", "is not a task of this project").await?;
    }
    let org = tx.org_id();
    let id = FileId::new();
    let key = format!("{org}/{id}");
    let digest: [u8; 32] = Sha256::digest(&up.bytes).into();
    let row = id.to_string();
    let sealed =
        Sealed::seal_with(keys, Scope::org(org), contents_at(&row), &up.bytes).map_err(DomainError::internal)?;
    // The name with the same data-key version as the contents.
    let name_sealed = seal_name(keys, org, id, &name, sealed.key_version()).map_err(DomainError::internal)?;
    let key_version = sealed.key_version().map(|v| v as i32);
    storage.put(&key, sealed).await.map_err(DomainError::internal)?;
    let inserted = sqlx::query_as::<_, FileRow>(&format!(
        "INSERT INTO files AS f (organization_id, id, project_id, task_id, name_sealed, content_type, size_bytes, sha256, \
         storage_key, shared_with_client, uploaded_by, created_at, key_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {COLUMNS}"
    ))
    .bind(org)
    .bind(id)
    .bind(up.project_id)
    .bind(up.task_id)
    .bind(&name_sealed)
    .bind(content_type)
    .bind(size)
    .bind(&digest[..])
    .bind(&key)
    .bind(up.shared_with_client)
    .bind(p.user_id())
    .bind(ctx.now)
    .bind(key_version)
    .fetch_one(&mut *tx)
    .await;
    let meta = match inserted.map_err(DomainError::from).and_then(|row| row.open(keys, org)) {
        Ok(m) => m,
        Err(e) => {
            let _ = storage.delete(&key).await;
            return Err(e);
        }
    };
    // The event names the file by its id: the audit log is kept whole for years and can't
    // be re-sealed, so nothing in it may identify a document once the organization's key is
    // destroyed (neither its name nor its contents' digest).
    audit::record(
        &mut tx,
        ctx,
        Entry::new("file.uploaded", "file", id).after(json!({
            "content_type": content_type, "size_bytes": size, "project_id": up.project_id, "task_id": up.task_id,
            "shared_with_client": up.shared_with_client,
        })),
    )
    .await?;
    if let Err(e) = tx.commit().await {
        let _ = storage.delete(&key).await;
        return Err(e.into());
    }
    Ok(meta)
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct FileFilter {
    pub project_id: Option<String>,
    pub task_id: Option<String>,
}

pub async fn list(
    db: &Db,
    keys: &Keyring,
    p: &OrgPrincipal,
    f: &FileFilter,
    page: super::Page,
) -> DomainResult<Vec<FileMeta>> {
    require(p, Permission::FilesRead)?;
    let member = member_filter(p)?;
    let project: Option<Uuid> =
        f.project_id.as_deref().map(|s| fields::id_or_empty("project_id", s)).transpose()?.flatten();
    let task: Option<TaskId> = f.task_id.as_deref().map(|s| fields::id_or_empty("task_id", s)).transpose()?.flatten();
    let mut tx = OrgTx::begin(db, p).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM files f JOIN projects p ON p.organization_id = f.organization_id AND p.id = f.project_id \
         WHERE {} AND ($2::uuid IS NULL OR f.project_id = $2) AND ($3::uuid IS NULL OR f.task_id = $3) \
         ORDER BY f.created_at DESC, f.id DESC LIMIT $4 OFFSET $5",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(project)
    .bind(task)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    open_all(rows, keys, p.org_id())
}

/// The file's row and storage key, when the principal may see it.
async fn fetch(tx: &mut OrgTx, p: &OrgPrincipal, id: FileId) -> DomainResult<(FileRow, String)> {
    let member = member_filter(p)?;
    let row: Option<(FileId, String)> = sqlx::query_as(&format!(
        "SELECT f.id, f.storage_key FROM files f JOIN projects p ON p.organization_id = f.organization_id AND p.id = f.project_id \
         WHERE f.id = $2 AND {}",
        project_visible("p", 1)
    ))
    .bind(member)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let (_, key) = row.ok_or(DomainError::NotFound)?;
    let meta =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM files f WHERE f.id = $1")).bind(id).fetch_one(&mut **tx).await?;
    Ok((meta, key))
}

pub async fn get(db: &Db, keys: &Keyring, p: &OrgPrincipal, id: FileId) -> DomainResult<FileMeta> {
    require(p, Permission::FilesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (row, _) = fetch(&mut tx, p, id).await?;
    tx.commit().await?;
    row.open(keys, p.org_id())
}

/// Reads and opens a file's contents (the caller has checked access through `fetch`).
pub async fn read_contents(
    storage: &Storage,
    keys: &Keyring,
    org: OrgId,
    id: FileId,
    key: &str,
) -> DomainResult<Vec<u8>> {
    let sealed = storage.get(key).await.map_err(DomainError::internal)?;
    let row = id.to_string();
    sealed.open_with(keys, Scope::org(org), contents_at(&row), &legacy_context(org, id)).map_err(DomainError::internal)
}

/// Seals and stores a file's contents under `key` (an organization's import puts its files
/// back this way: `privacy::import`).
pub async fn store_contents(
    storage: &Storage,
    keys: &Keyring,
    org: OrgId,
    id: FileId,
    key: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let row = id.to_string();
    let sealed = Sealed::seal_with(keys, Scope::org(org), contents_at(&row), bytes).map_err(std::io::Error::other)?;
    storage.put(key, sealed).await
}

pub async fn download(
    db: &Db,
    storage: &RegionStores,
    keys: &Keyring,
    p: &OrgPrincipal,
    id: FileId,
) -> DomainResult<(FileMeta, Vec<u8>)> {
    require(p, Permission::FilesRead)?;
    let storage = storage.of(p.region())?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (row, key) = fetch(&mut tx, p, id).await?;
    tx.commit().await?;
    let meta = row.open(keys, p.org_id())?;
    let bytes = read_contents(storage, keys, p.org_id(), id, &key).await?;
    Ok((meta, bytes))
}

pub async fn delete(db: &Db, storage: &RegionStores, ctx: &Context, p: &OrgPrincipal, id: FileId) -> DomainResult<()> {
    require(p, Permission::FilesDelete)?;
    let storage = storage.of(p.region())?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (row, key) = fetch(&mut tx, p, id).await?;
    sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("file.deleted", "file", id)
            .before(json!({ "content_type": row.content_type, "size_bytes": row.size_bytes })),
    )
    .await?;
    tx.commit().await?;
    // After the commit: a failed delete leaves an orphan blob, never a row without contents.
    if let Err(e) = storage.delete(&key).await {
        tracing::warn!(file = %id, error = %e, "could not remove file contents");
    }
    Ok(())
}

/// Removes every stored file of an organization (its objects are under `<organization id>/`);
/// returns how many there were. Called when an organization is deleted, after its rows are gone.
pub async fn remove_organization_contents(storage: &Storage, org: OrgId) -> std::io::Result<usize> {
    storage.delete_all_under(&org.to_string()).await
}

pub async fn set_shared(
    db: &Db,
    keys: &Keyring,
    ctx: &Context,
    p: &OrgPrincipal,
    id: FileId,
    shared: bool,
) -> DomainResult<FileMeta> {
    require(p, Permission::FilesUpload)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (before, _) = fetch(&mut tx, p, id).await?;
    // A row still holding its name in plaintext can only be written with it sealed
    // (`files_name_sealed_only`, migration 0054).
    let legacy = before.name_in_plaintext();
    let name = before.open(keys, p.org_id())?.name;
    let name_sealed =
        if legacy { Some(seal_name(keys, p.org_id(), id, &name, None).map_err(DomainError::internal)?) } else { None };
    let row: FileRow = sqlx::query_as(&format!(
        "UPDATE files AS f SET shared_with_client = $2, name = NULL, name_sealed = coalesce($3, f.name_sealed) \
         WHERE f.id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(shared)
    .bind(name_sealed)
    .fetch_one(&mut *tx)
    .await?;
    let meta = row.open(keys, p.org_id())?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("file.sharing_changed", "file", id).after(json!({ "shared_with_client": shared })),
    )
    .await?;
    tx.commit().await?;
    Ok(meta)
}

/// Changes to a file's metadata (its contents never change: upload a new file instead). Fields
/// left out stay as they are; `name` and `shared_with_client` refuse `null`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUpdate {
    /// A new name: no path separators, double quotes or control characters, and more than dots
    /// and spaces.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = "file-name", max_length = 255, nullable = false)]
    pub name: Option<String>,
    /// Shown to the client in the portal.
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(nullable = false)]
    pub shared_with_client: Option<bool>,
    /// Attaches the file to a task of its project; null or empty detaches it from its task.
    #[serde(default, deserialize_with = "fields::present")]
    #[schema(value_type = Option<String>, format = "uuid-or-empty")]
    pub task_id: Option<Option<String>>,
}

/// A new name for a file, checked as the document's `file-name` says (`fields::FILE_NAME_PATTERN`)
/// rather than cleaned like an upload's name: a name sent on its own is applied as given or
/// refused. Surrounding white space is trimmed; a name of only dots and white space is none.
pub fn new_name(name: &str) -> DomainResult<String> {
    if name.chars().count() > 255 {
        return Err(DomainError::field("name", "is too long (at most 255 characters)"));
    }
    if name.chars().any(|c| c.is_control() || matches!(c, '/' | '\\' | '"')) {
        return Err(DomainError::field(
            "name",
            "must not contain control characters, slashes, backslashes or double quotes",
        ));
    }
    if name.chars().all(|c| c == '.' || c.is_whitespace()) {
        return Err(DomainError::field("name", "needs a file name"));
    }
    Ok(name.trim().to_string())
}

/// Renames a file, shares or unshares it, or moves it between the tasks of its project.
pub async fn update(
    db: &Db,
    keys: &Keyring,
    ctx: &Context,
    p: &OrgPrincipal,
    id: FileId,
    input: &FileUpdate,
) -> DomainResult<FileMeta> {
    require(p, Permission::FilesUpload)?;
    let name = input.name.as_deref().map(new_name).transpose()?;
    let task: Option<Option<TaskId>> = match &input.task_id {
        None => None,
        Some(None) => Some(None),
        Some(Some(v)) => Some(fields::id_or_empty("task_id", v)?),
    };
    let mut tx = OrgTx::begin(db, p).await?;
    let (before, _) = fetch(&mut tx, p, id).await?;
    let before = before.open(keys, p.org_id())?;
    if let Some(Some(t)) = task {
        super::require_task_in_project(
            &mut tx,
            t,
            before.project_id,
            "task_id",
            "is not a task of this file's project",
        )
        .await?;
    }
    // The name is sealed again whether or not it changed: a new nonce, the newest key, and no
    // plaintext left in a row written before names were sealed.
    let new_name = name.as_deref().unwrap_or(&before.name);
    let name_sealed = seal_name(keys, p.org_id(), id, new_name, None).map_err(DomainError::internal)?;
    let after: FileRow = sqlx::query_as(&format!(
        "UPDATE files AS f SET name = NULL, name_sealed = $2, shared_with_client = $3, task_id = $4 WHERE f.id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&name_sealed)
    .bind(input.shared_with_client.unwrap_or(before.shared_with_client))
    .bind(task.unwrap_or(before.task_id))
    .fetch_one(&mut *tx)
    .await?;
    let after = after.open(keys, p.org_id())?;
    // Whether it was renamed, not the names (the audit log outlives the organization's key).
    let snapshot = |f: &FileMeta| json!({ "shared_with_client": f.shared_with_client, "task_id": f.task_id });
    let mut after_snapshot = snapshot(&after);
    after_snapshot["renamed"] = json!(after.name != before.name);
    audit::record(&mut tx, ctx, Entry::new("file.updated", "file", id).before(snapshot(&before)).after(after_snapshot))
        .await?;
    tx.commit().await?;
    Ok(after)
}

pub use crate::access::file_link::{link_signature, signed_link};

/// How a download link is made: the site's public URL, the key its signature is made with,
/// and how long it works.
#[derive(Debug, Clone, Copy)]
pub struct LinkSigning<'a> {
    pub base: &'a str,
    pub key: &'a [u8; 32],
    pub minutes: u32,
}

/// Issues a signed link to a file the principal may download, and records who shared it.
pub async fn issue_link(
    db: &Db,
    keys: &Keyring,
    ctx: &Context,
    p: &OrgPrincipal,
    signing: LinkSigning<'_>,
    id: FileId,
) -> DomainResult<(FileMeta, String, OffsetDateTime)> {
    let LinkSigning { base, key, minutes } = signing;
    require(p, Permission::FilesRead)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let (row, _) = fetch(&mut tx, p, id).await?;
    let meta = row.open(keys, p.org_id())?;
    let (link, expires) = signed_link(base, key, p.org_id(), id, ctx.now, minutes);
    // The link itself is a bearer credential: the log records that one was issued, not it
    // (and the file by its id, not its name).
    audit::record(
        &mut tx,
        ctx,
        Entry::new("file.link_issued", "file", id).after(json!({ "expires_at": expires.to_string() })),
    )
    .await?;
    tx.commit().await?;
    Ok((meta, link, expires))
}

/// An S3-compatible object store's entry in the sub-processor registry (the local disk is not a
/// third party).
pub fn sub_processor(config: &FilesConfig) -> crate::platform::subprocessor::SubProcessor {
    crate::platform::subprocessor::SubProcessor {
        id: "object-storage",
        name: "S3-compatible object storage (configured by the operator)",
        enabled: config.storage == StorageKind::S3,
        setting: "files.storage = \"s3\" and files.s3",
        purpose: "Keeps uploaded files and images.",
        receives: &[
            "each file's contents sealed with AES-256-GCM before it leaves the process (the store never sees plaintext or the key)",
            "an object name made of the organization's and the file's ids (no file names)",
        ],
        region: config
            .s3
            .as_ref()
            .map(|s| format!("The bucket's region ({})", s.region))
            .unwrap_or_else(|| "The bucket's region".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(detect_type(b"%PDF-1.7 ...", "x.exe"), Some("application/pdf"));
        assert_eq!(detect_type(b"hello, world", "notes.txt"), Some("text/plain"));
        assert_eq!(detect_type(b"a,b\n1,2", "data.csv"), Some("text/csv"));
        assert_eq!(detect_type(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\xff\xff", "setup.pdf"), None);
        assert_eq!(detect_type(&[0u8, 159, 146, 150], "x.txt"), None);
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_name("C:\\Users\\a\\report \"final\".pdf").unwrap(), "report final.pdf");
        assert!(clean_name("..").is_err());
        assert!(clean_name("  ").is_err());
    }

    #[test]
    fn new_names_are_applied_as_given_or_refused_as_the_document_says() {
        assert_eq!(new_name(" report.pdf ").unwrap(), "report.pdf");
        assert_eq!(new_name("...x").unwrap(), "...x");
        for bad in ["", " ", ".", "..", " ... ", ". .", "a/b", "a\\b", "a\"b", "a\tb", &"x".repeat(256)] {
            assert!(new_name(bad).is_err(), "{bad:?}");
        }
        let pattern = regex::Regex::new(super::fields::FILE_NAME_PATTERN).unwrap();
        for cp in (0u32..0x3100).chain([0xfeff, 0x1_f600]) {
            let Some(c) = char::from_u32(cp) else { continue };
            for s in [format!("a{c}b"), c.to_string(), format!(" {c}."), format!("{c}{c}")] {
                assert_eq!(pattern.is_match(&s), new_name(&s).is_ok(), "{s:?}");
            }
        }
    }

    #[test]
    fn link_signatures_bind_everything() {
        let k = [3u8; 32];
        let org = OrgId::new();
        let f = FileId::new();
        let s = link_signature(&k, org, f, 100);
        assert_ne!(s, link_signature(&k, org, f, 101));
        assert_ne!(s, link_signature(&k, OrgId::new(), f, 100));
        assert_ne!(s, link_signature(&k, org, FileId::new(), 100));
        assert_ne!(s, link_signature(&[4u8; 32], org, f, 100));
    }
}
