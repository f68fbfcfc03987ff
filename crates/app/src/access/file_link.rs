//! A signed file download link: an HMAC over organization, file and expiry, verified here;
//! the principal it yields reads that one organization's files and nothing else.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::principal::{Actor, OrgPrincipal};
use super::role::{Permission, PermissionSet, Role};
use crate::platform::db::Db;
use time::OffsetDateTime;

use crate::platform::ids::{FileId, OrgId};

/// The principal behind a signed file download link: checks the signature and expiry, then
/// acts inside that one organization with nothing but `files.read`.
pub async fn verify_file_link(
    db: &Db,
    key: &[u8; 32],
    org_id: OrgId,
    file: FileId,
    expires: i64,
    signature: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let expected = link_signature(key, org_id, file, expires);
    if expires <= now.unix_timestamp() || !crate::platform::secret::ct_eq(expected.as_bytes(), signature.as_bytes()) {
        return Ok(None);
    }
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::System("signed file link".into()),
        // Manager: scope over every project (the link was issued to someone allowed to see it).
        role: Role::Manager,
        client_id: None,
        permissions: PermissionSet::of(&[Permission::FilesRead]),
        scope_user: None,
        region: super::directory::region_of(db, org_id).await?,
    };
    // An organization scheduled for deletion shares nothing more, links issued before included.
    let mut tx = super::OrgTx::begin(db, &principal).await?;
    let scheduled = super::suspension::deletion_scheduled(&mut tx).await?;
    tx.commit().await?;
    Ok(scheduled.is_none().then_some(principal))
}

/// A signed, short-lived download link's signature: HMAC over organization, file and expiry.
pub fn link_signature(key: &[u8; 32], org: OrgId, file: FileId, expires: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(format!("file-link v1\n{org}\n{file}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `/files/{org}/{file}?expires=…&signature=…`, valid for `minutes`.
pub fn signed_link(
    base: &str,
    key: &[u8; 32],
    org: OrgId,
    file: FileId,
    now: OffsetDateTime,
    minutes: u32,
) -> (String, OffsetDateTime) {
    let expires = now + time::Duration::minutes(minutes.into());
    let ts = expires.unix_timestamp();
    (format!("{base}/files/{org}/{file}?expires={ts}&signature={}", link_signature(key, org, file, ts)), expires)
}
