//! Moving sealed values between keys: converting values sealed with the master key (format
//! version 1, before envelope encryption) and re-sealing an organization's values under its
//! newest data key after a rotation; then retiring the versions nothing uses any more.
//!
//! Every step is idempotent and works in batches (`privacy.reseal_batch`), each batch its own
//! transaction with its rows locked (`FOR UPDATE SKIP LOCKED`): values stay readable between
//! batches (a reader opens whichever version a value names), and two workers never re-seal the
//! same row. `clientflow keys reseal` runs it to the end; the worker runs one pass per tick.
//!
//! What is sealed where (docs/security/encryption.md):
//!
//! | value | key | bound to |
//! |---|---|---|
//! | file contents (storage) | organization | `files.contents`, file id |
//! | file name (`files.name_sealed`) | organization | `files.name`, file id |
//! | API answer kept for an Idempotency-Key replay | organization | `idempotency_keys.response_body`, API key and Idempotency-Key |
//! | client contact email / phone | organization | `client_contacts.email`/`phone`, contact id |
//! | TOTP secret | installation | `users.totp_secret`, user id |
//! | TOTP set-up secret | installation | `totp_enrollments.secret`, user and session ids |
//! | Google sign-in PKCE verifier | installation | `oidc_login_states.pkce_verifier`, state digest |
//! | vulnerability report text | installation | `security_reports.details`, report id |

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::access::{OrgTx, key_maintenance};
use crate::platform::db::Db;
use crate::platform::ids::{ContactId, FileId, OrgId, UserId};
use crate::platform::keys::{At, KeyError, Keyring, Scope};
use crate::platform::storage::Sealed;
use crate::work::clients::{open_contact_detail, seal_contact_detail};
use crate::work::files::RegionStores;
use crate::work::files::{contents_at, legacy_context, open_name, seal_name};

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Pass {
    pub totp_secrets: u64,
    /// Vulnerability reports' texts.
    pub reports: u64,
    pub contacts: u64,
    pub files: u64,
    /// API answers kept for Idempotency-Key replays.
    pub api_answers: u64,
    /// Data-key versions destroyed because nothing used them any more.
    pub retired_versions: u64,
}

impl Pass {
    pub fn resealed(&self) -> u64 {
        self.totp_secrets + self.reports + self.contacts + self.files + self.api_answers
    }
}

/// Sealed values per organization and key version (`None`: not envelope-sealed yet), and each
/// organization's key versions in the key store.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Status {
    pub key_store: String,
    pub kek_version: u32,
    pub organizations: Vec<OrgStatus>,
    /// TOTP secrets still sealed with the master key.
    pub legacy_totp_secrets: i64,
    pub installation_versions: Vec<u32>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct OrgStatus {
    pub organization_id: Uuid,
    pub key_versions: Vec<u32>,
    /// Values per version: "legacy" (master key or plaintext) or "v<N>".
    pub values: BTreeMap<String, i64>,
    /// Values not yet on the newest version.
    pub pending: i64,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Sealed values per organization, source and key version, in every region: the key store is
/// the installation's, so a version is in use when any region's rows use it (an organization
/// being moved has rows in two regions; both count).
async fn counts(db: &Db) -> anyhow::Result<Vec<(Uuid, String, Option<i32>, i64)>> {
    let mut all = Vec::new();
    for region in db.every_region() {
        let mut g = region.global().await?;
        let rows: Vec<(Uuid, String, Option<i32>, i64)> = sqlx::query_as(
            "SELECT organization_id, source, key_version, sealed_values FROM sealed_values_by_key_version() ORDER BY 1, 2, 3",
        )
        .fetch_all(&mut *g)
        .await?;
        g.commit().await?;
        all.extend(rows);
    }
    all.sort();
    Ok(all)
}

/// Where every organization's values stand (`clientflow keys status`).
pub async fn status(db: &Db, keys: &Keyring) -> anyhow::Result<Status> {
    let store = keys.store();
    let mut by_org: BTreeMap<Uuid, OrgStatus> = BTreeMap::new();
    for scope in store.scopes().map_err(err)? {
        if let Scope::Org(id) = scope {
            by_org.entry(id).or_insert_with(|| OrgStatus { organization_id: id, ..Default::default() });
        }
    }
    for (org, _source, version, n) in counts(db).await? {
        let e = by_org.entry(org).or_insert_with(|| OrgStatus { organization_id: org, ..Default::default() });
        let label = version.map_or_else(|| "legacy".to_string(), |v| format!("v{v}"));
        *e.values.entry(label).or_default() += n;
    }
    for (org, s) in by_org.iter_mut() {
        s.key_versions = store.versions(Scope::Org(*org)).map_err(err)?;
        let newest = s.key_versions.last().map(|v| format!("v{v}"));
        s.pending = s.values.iter().filter(|(k, _)| Some(*k) != newest.as_ref()).map(|(_, n)| n).sum();
    }
    let mut g = db.global().await?;
    let legacy_totp_secrets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE totp_secret IS NOT NULL AND get_byte(totp_secret, 0) <> $1",
    )
    .bind(i32::from(crate::platform::keys::FORMAT))
    .fetch_one(&mut *g)
    .await?;
    g.commit().await?;
    Ok(Status {
        key_store: store.kind().to_string(),
        kek_version: store.kek_version().map_err(err)?,
        organizations: by_org.into_values().collect(),
        legacy_totp_secrets,
        installation_versions: store.versions(Scope::Installation).map_err(err)?,
    })
}

/// A new data-key version for `org` (`clientflow keys rotate`): new values use it at once;
/// the re-seal job moves the old ones, then the old version is destroyed.
pub fn rotate(keys: &Keyring, org: OrgId) -> Result<u32, KeyError> {
    let scope = Scope::org(org);
    // An organization that never sealed anything gets v1 first, then v2: a rotation always
    // leaves a version behind to retire, which keeps the command's meaning simple.
    keys.current_version(scope)?;
    keys.store().create_version(scope)
}

/// Converts up to `batch` TOTP secrets sealed with the master key to the installation's key.
pub async fn reseal_totp_secrets(db: &Db, keys: &Keyring, batch: i64) -> anyhow::Result<u64> {
    let mut g = db.global().await?;
    let rows: Vec<(UserId, Vec<u8>)> = sqlx::query_as(
        "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL AND get_byte(totp_secret, 0) <> $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(i32::from(crate::platform::keys::FORMAT))
    .bind(batch)
    .fetch_all(&mut *g)
    .await?;
    for (user, sealed) in &rows {
        let row = user.to_string();
        let at = At::new("users", "totp_secret", &row);
        let secret = keys.open(Scope::Installation, at, sealed, Some(&format!("totp:{user}"))).map_err(err)?;
        let resealed = keys.seal(Scope::Installation, at, &secret).map_err(err)?;
        sqlx::query("UPDATE users SET totp_secret = $2 WHERE id = $1")
            .bind(user)
            .bind(resealed)
            .execute(&mut *g)
            .await?;
    }
    g.commit().await?;
    Ok(rows.len() as u64)
}

/// Converts up to `batch` vulnerability reports' texts sealed with the master key to the
/// installation's key.
pub async fn reseal_reports(db: &Db, keys: &Keyring, batch: i64) -> anyhow::Result<u64> {
    let mut g = db.global().await?;
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, details_sealed FROM security_reports WHERE get_byte(details_sealed, 0) <> $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(i32::from(crate::platform::keys::FORMAT))
    .bind(batch)
    .fetch_all(&mut *g)
    .await?;
    for (id, sealed) in &rows {
        let row = id.to_string();
        let at = At::new("security_reports", "details", &row);
        let text = keys.open(Scope::Installation, at, sealed, Some(&format!("security-report:{id}"))).map_err(err)?;
        let resealed = keys.seal(Scope::Installation, at, &text).map_err(err)?;
        sqlx::query("UPDATE security_reports SET details_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(resealed)
            .execute(&mut *g)
            .await?;
    }
    g.commit().await?;
    Ok(rows.len() as u64)
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: ContactId,
    email: Option<String>,
    phone: Option<String>,
    email_sealed: Option<Vec<u8>>,
    phone_sealed: Option<Vec<u8>>,
}

/// Re-seals up to `batch` of `org`'s contacts not on `version` (plaintext ones included) and
/// clears their plaintext columns.
pub async fn reseal_contacts(db: &Db, keys: &Keyring, org: OrgId, version: u32, batch: i64) -> anyhow::Result<u64> {
    let Some(p) = key_maintenance(db, org).await? else { return Ok(0) };
    let mut tx = OrgTx::begin(db, &p).await?;
    let rows: Vec<ContactRow> = sqlx::query_as(
        "SELECT id, email, phone, email_sealed, phone_sealed FROM client_contacts \
         WHERE key_version IS DISTINCT FROM $1 AND (key_version IS NOT NULL OR email IS NOT NULL OR phone IS NOT NULL) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(version as i32)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    for r in &rows {
        let email = match &r.email_sealed {
            Some(s) => Some(open_contact_detail(keys, org, "email", r.id, s).map_err(err)?),
            None => r.email.clone(),
        };
        let phone = match &r.phone_sealed {
            Some(s) => Some(open_contact_detail(keys, org, "phone", r.id, s).map_err(err)?),
            None => r.phone.clone(),
        };
        sqlx::query(
            "UPDATE client_contacts SET email = NULL, phone = NULL, email_sealed = $2, phone_sealed = $3, key_version = $4 \
             WHERE id = $1",
        )
        .bind(r.id)
        .bind(seal_contact_detail(keys, org, "email", r.id, version, email.as_deref()).map_err(err)?)
        .bind(seal_contact_detail(keys, org, "phone", r.id, version, phone.as_deref()).map_err(err)?)
        .bind(version as i32)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

#[derive(sqlx::FromRow)]
struct FileKeyRow {
    id: FileId,
    storage_key: String,
    key_version: Option<i32>,
    name: Option<String>,
    name_sealed: Option<Vec<u8>>,
}

/// Re-seals up to `batch` of `org`'s stored files whose contents or name are not on `version`
/// (names still in plaintext, from before migration 0054, included: their plaintext is
/// cleared). Each object is replaced whole (readers see the old sealed object or the new one,
/// never a partial one) before its row records the new version; a crash in between leaves a
/// row naming the old version over contents on the new one, which still open (the contents
/// name their own version). The name is re-sealed in the row's own update.
pub async fn reseal_files(
    db: &Db,
    keys: &Keyring,
    stores: &RegionStores,
    org: OrgId,
    version: u32,
    batch: i64,
) -> anyhow::Result<u64> {
    let Some(p) = key_maintenance(db, org).await? else { return Ok(0) };
    // The organization's own region's store.
    let storage = stores.of(p.region()).map_err(err)?;
    let mut tx = OrgTx::begin(db, &p).await?;
    let rows: Vec<FileKeyRow> = sqlx::query_as(
        "SELECT id, storage_key, key_version, name, name_sealed FROM files \
         WHERE key_version IS DISTINCT FROM $1 OR name IS NOT NULL OR sealed_key_version(name_sealed) IS DISTINCT FROM $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(version as i32)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let scope = Scope::org(org);
    for r in rows.iter() {
        let (id, key) = (r.id, &r.storage_key);
        let row = id.to_string();
        if r.key_version != Some(version as i32) {
            let stored = storage.get(key).await?;
            if stored.key_version() != Some(version) {
                let plain = stored.open_with(keys, scope, contents_at(&row), &legacy_context(org, id)).map_err(err)?;
                let resealed =
                    Sealed::seal_with_version(keys, scope, contents_at(&row), &plain, version).map_err(err)?;
                storage.put(key, resealed).await?;
            }
        }
        let name_sealed = match &r.name_sealed {
            Some(s) if crate::platform::keys::version_of(s) == Some(version) => s.clone(),
            sealed => {
                let name = open_name(keys, org, id, sealed.as_deref(), r.name.clone()).map_err(err)?;
                seal_name(keys, org, id, &name, Some(version)).map_err(err)?
            }
        };
        sqlx::query("UPDATE files SET key_version = $2, name = NULL, name_sealed = $3 WHERE id = $1")
            .bind(id)
            .bind(version as i32)
            .bind(&name_sealed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Where an API answer kept for an Idempotency-Key replay is bound: its organization's data
/// key, `idempotency_keys.response_body`, the API key and the Idempotency-Key.
fn api_answer_row(api_key: Uuid, key: &str) -> String {
    format!("{api_key}/{key}")
}

/// Seals the answer kept for a replay (`api::idempotency`) with the organization's newest data
/// key, or the given version (re-sealing).
pub fn seal_api_answer(
    keys: &Keyring,
    org: OrgId,
    api_key: Uuid,
    key: &str,
    answer: &[u8],
    version: Option<u32>,
) -> Result<Vec<u8>, KeyError> {
    let row = api_answer_row(api_key, key);
    let at = At::new("idempotency_keys", "response_body", &row);
    match version {
        Some(v) => keys.seal_with_version(Scope::org(org), at, answer, v),
        None => keys.seal(Scope::org(org), at, answer),
    }
}

/// Opens a kept answer; one stored before answers were sealed (plain JSON, migration 0055) is
/// returned as it is.
pub fn open_api_answer(
    keys: &Keyring,
    org: OrgId,
    api_key: Uuid,
    key: &str,
    stored: &[u8],
) -> Result<Vec<u8>, KeyError> {
    if crate::platform::keys::version_of(stored).is_none() && stored.first() == Some(&b'{') {
        return Ok(stored.to_vec());
    }
    let row = api_answer_row(api_key, key);
    keys.open(Scope::org(org), At::new("idempotency_keys", "response_body", &row), stored, None)
}

/// Re-seals up to `batch` of `org`'s kept API answers not on `version` (plaintext ones included).
pub async fn reseal_api_answers(db: &Db, keys: &Keyring, org: OrgId, version: u32, batch: i64) -> anyhow::Result<u64> {
    let Some(p) = key_maintenance(db, org).await? else { return Ok(0) };
    let mut tx = OrgTx::begin(db, &p).await?;
    let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT api_key_id, key, response_body FROM idempotency_keys \
         WHERE response_body IS NOT NULL AND sealed_key_version(response_body) IS DISTINCT FROM $1 \
         ORDER BY api_key_id, key LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(version as i32)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    for (api_key, key, stored) in &rows {
        let answer = open_api_answer(keys, org, *api_key, key, stored).map_err(err)?;
        let resealed = seal_api_answer(keys, org, *api_key, key, &answer, Some(version)).map_err(err)?;
        sqlx::query("UPDATE idempotency_keys SET response_body = $3 WHERE api_key_id = $1 AND key = $2")
            .bind(api_key)
            .bind(key)
            .bind(resealed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// One pass: up to `batch` values of each kind per organization moved to its newest key, then
/// every superseded version that no value uses and that was superseded at least `retire_after`
/// ago destroyed. Returns what it did; call again until it does nothing.
pub async fn reseal_pass(
    db: &Db,
    keys: &Keyring,
    storage: &RegionStores,
    batch: i64,
    retire_after: std::time::Duration,
) -> anyhow::Result<Pass> {
    let mut pass = Pass {
        totp_secrets: reseal_totp_secrets(db, keys, batch).await?,
        reports: reseal_reports(db, keys, batch).await?,
        ..Default::default()
    };
    let mut orgs: BTreeMap<Uuid, Vec<(String, Option<i32>, i64)>> = BTreeMap::new();
    for (org, source, version, n) in counts(db).await? {
        orgs.entry(org).or_default().push((source, version, n));
    }
    for scope in keys.store().scopes().map_err(err)? {
        if let Scope::Org(id) = scope {
            orgs.entry(id).or_default();
        }
    }
    for (org_uuid, rows) in orgs {
        let org = OrgId::from_uuid(org_uuid);
        let scope = Scope::Org(org_uuid);
        let behind = |source: &str, current: u32| {
            rows.iter().any(|(s, v, n)| s == source && *n > 0 && *v != Some(current as i32))
        };
        let versions = keys.store().versions(scope).map_err(err)?;
        if rows.iter().any(|(_, _, n)| *n > 0) || !versions.is_empty() {
            let current = keys.current_version(scope).map_err(err)?;
            let contacts = behind("client_contacts", current);
            let files = behind("files", current) || behind("file_names", current);
            let api_answers = behind("api_answers", current);
            if !(contacts || files || api_answers) {
                continue;
            }
            // In the organization's own region (the directory's), and not while it moves
            // between regions: its values wait in both copies until the move ends.
            let Some(placed) = crate::access::directory::locate(db, org).await? else { continue };
            let Some(db) = db.in_region(placed.region).filter(|_| placed.moving_to.is_none()) else { continue };
            let db = &db;
            if contacts {
                pass.contacts += reseal_contacts(db, keys, org, current, batch).await?;
            }
            if files {
                pass.files += reseal_files(db, keys, storage, org, current, batch).await?;
            }
            if api_answers {
                pass.api_answers += reseal_api_answers(db, keys, org, current, batch).await?;
            }
        }
    }
    pass.retired_versions = retire_unused_versions(db, keys, retire_after).await?;
    Ok(pass)
}

/// Destroys every organization's data-key versions below its newest that no value uses, once
/// the next version has existed for `retire_after` (a request that sealed with the old version
/// just before the rotation has long committed or failed by then).
pub async fn retire_unused_versions(db: &Db, keys: &Keyring, retire_after: std::time::Duration) -> anyhow::Result<u64> {
    let mut used: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (org, _source, version, n) in counts(db).await? {
        if let (Some(v), true) = (version, n > 0) {
            used.entry(org).or_default().push(v);
        }
    }
    let store = keys.store();
    let mut retired = 0;
    for scope in store.scopes().map_err(err)? {
        let Scope::Org(org) = scope else { continue };
        let versions = store.versions(scope).map_err(err)?;
        let Some(newest) = versions.last().copied() else { continue };
        for v in versions.iter().copied().filter(|v| *v < newest) {
            if used.get(&org).is_some_and(|u| u.contains(&(v as i32))) {
                continue;
            }
            let next_age = store.age(scope, v + 1).map_err(err)?;
            if next_age.is_some_and(|age| age >= retire_after) && store.destroy_version(scope, v).map_err(err)? {
                tracing::info!(organization = %org, version = v, "destroyed a retired data-key version");
                retired += 1;
            }
        }
    }
    Ok(retired)
}

/// Runs passes until one does nothing (`clientflow keys reseal`), printing progress through
/// `progress`.
pub async fn reseal_all(
    db: &Db,
    keys: &Keyring,
    storage: &RegionStores,
    batch: i64,
    retire_after: std::time::Duration,
    mut progress: impl FnMut(&Pass),
) -> anyhow::Result<Pass> {
    let mut total = Pass::default();
    loop {
        let pass = reseal_pass(db, keys, storage, batch, retire_after).await?;
        if pass == Pass::default() {
            return Ok(total);
        }
        progress(&pass);
        total.totp_secrets += pass.totp_secrets;
        total.reports += pass.reports;
        total.contacts += pass.contacts;
        total.files += pass.files;
        total.api_answers += pass.api_answers;
        total.retired_versions += pass.retired_versions;
    }
}
