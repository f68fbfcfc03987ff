//! The principals of an organization's data export (`privacy/export.rs`): the signed, expiring
//! download link of one archive, and the worker that writes archives (the operator's import of
//! an archive opens its transaction with `principal::begin_import`).
//!
//! A link is an HMAC over organization, export and expiry, under a key derived from the master
//! key for this purpose only; it yields a principal that holds `org.export` in that one
//! organization and nothing else. The caller still checks the organization's IP allowlist.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use super::principal::{Actor, OrgPrincipal, if_exists};
use super::role::{Permission, PermissionSet, Role};
use crate::platform::db::Db;
use crate::platform::ids::OrgId;

/// What a presented download link turned out to be.
#[derive(Debug)]
pub enum ExportLink {
    /// Signed by us and not expired: acting with `org.export` in its organization.
    Valid(OrgPrincipal),
    /// Signed by us, but past its expiry.
    Expired,
    /// Not a signature of ours (tampered, or made up).
    Invalid,
}

/// Checks a download link's signature (in constant time) and expiry; a valid link acts in its
/// organization's region (from the directory).
pub async fn verify_export_link(
    db: &Db,
    key: &[u8; 32],
    org_id: OrgId,
    export: Uuid,
    expires: i64,
    signature: &str,
    now: OffsetDateTime,
) -> Result<ExportLink, sqlx::Error> {
    let expected = link_signature(key, org_id, export, expires);
    if !crate::platform::secret::ct_eq(expected.as_bytes(), signature.as_bytes()) {
        return Ok(ExportLink::Invalid);
    }
    if expires <= now.unix_timestamp() {
        return Ok(ExportLink::Expired);
    }
    Ok(ExportLink::Valid(OrgPrincipal {
        org_id,
        actor: Actor::System("signed export link".into()),
        role: Role::Owner,
        client_id: None,
        permissions: PermissionSet::of(&[Permission::OrgExport]),
        scope_user: None,
        region: super::directory::region_of(db, org_id).await?,
    }))
}

/// A download link's signature: HMAC over organization, export and expiry.
pub fn link_signature(key: &[u8; 32], org: OrgId, export: Uuid, expires: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(format!("export-link v1\n{org}\n{export}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `/exports/{org}/{export}?expires=…&signature=…`, valid for `minutes`.
pub fn signed_link(
    base: &str,
    key: &[u8; 32],
    org: OrgId,
    export: Uuid,
    now: OffsetDateTime,
    minutes: u32,
) -> (String, OffsetDateTime) {
    let expires = now + time::Duration::minutes(minutes.into());
    let ts = expires.unix_timestamp();
    (format!("{base}/exports/{org}/{export}?expires={ts}&signature={}", link_signature(key, org, export, ts)), expires)
}

/// The worker that writes an organization's export: a system principal holding `org.export`
/// only (it reads every table of the organization through the tenant door, writes the export's
/// progress and its audit events). Returns `None` when the organization doesn't exist.
pub async fn export_worker(db: &Db, org_id: OrgId) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("data export".into()),
        role: Role::Owner,
        client_id: None,
        permissions: PermissionSet::of(&[Permission::OrgExport]),
        scope_user: None,
        // The worker sweeps region by region: the export was found in `db`'s region.
        region: db.region(),
    };
    if_exists(db, principal).await
}
