//! An organization API key: the bearer's key, verified against its digest, bounded by its
//! creator's current standing and the organization's customization of its role. Keys are
//! issued, listed and revoked in [`issue`], next to their verification here.

mod cache;
mod issue;

pub use cache::KeyCache;
pub use issue::{ApiKey, CreatedKey, NewKey, create, create_for, grantable, list, revoke, subset_role};

use super::principal::{Actor, OrgPrincipal, OrgTx};
use super::role::{Permission, PermissionSet, Role, effective_permissions};
use super::{directory, gate};
use crate::platform::db::tenant::{Capability, GateTx, Writes};
use crate::platform::db::{Db, RegionId};
use crate::platform::ids::{OrgId, UserId};

/// The prefix that makes ClientFlow API keys recognizable (to people and secret scanners).
pub const API_KEY_PREFIX: &str = "cf_live_";

/// Verifies an API key: unknown, revoked, expired and malformed keys all answer `None` (the
/// caller answers them identically). The key's digest is a capability that makes exactly its
/// own row readable; everything after that happens inside the key's organization.
pub async fn verify_api_key(
    db: &Db,
    presented: &str,
    now: time::OffsetDateTime,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    Ok(verify_api_key_with_allowlist(db, presented, now).await?.map(|(p, _)| p))
}

/// `+name` / `-name` grants as aggregated by SQL; unknown names are ignored.
fn parse_grants(grants: &[String]) -> Vec<(Permission, bool)> {
    grants
        .iter()
        .filter_map(|c| {
            let (sign, name) = c.split_at(1);
            name.parse().ok().map(|p| (p, sign == "+"))
        })
        .collect()
}

/// [`verify_api_key`], also returning the organization's IP allowlist: [`open_api_key_request`]
/// with nothing kept from earlier requests, its transaction committed.
pub async fn verify_api_key_with_allowlist(
    db: &Db,
    presented: &str,
    now: time::OffsetDateTime,
) -> Result<Option<(OrgPrincipal, Vec<ipnet::IpNet>)>, sqlx::Error> {
    let Some(KeyRequest { tx, allowlist, .. }) =
        open_api_key_request(db, &KeyCache::default(), presented, now, Writes::Allowed).await?
    else {
        return Ok(None);
    };
    let principal = tx.principal().clone();
    tx.commit().await?;
    Ok(Some((principal, allowlist)))
}

/// A verified key's request, in the transaction it was verified in.
pub struct KeyRequest {
    /// The key's organization transaction, for the request's own work.
    pub tx: OrgTx,
    /// The organization's IP allowlist.
    pub allowlist: Vec<ipnet::IpNet>,
    /// When the organization is to be purged, if it is scheduled for deletion (its keys are
    /// refused meanwhile: `access::suspension`).
    pub deletion_scheduled: Option<time::OffsetDateTime>,
}

/// [`verify_api_key_with_allowlist`], keeping the transaction open as the key's organization
/// transaction for the request's own work: an API request is one transaction. A key this
/// process verified before, against what is still current ([`cache`]), goes straight into
/// its organization's transaction; any other is verified in two round trips (see
/// [`begin_for_key`] and [`verify_in`]), and what that found is kept for its next request.
///
/// `writes` says whether the request may write: a kept key's transaction is begun read-only
/// when it may not (a request of a safe method). A key verified from scratch may record its
/// use, so its transaction may write whatever the request.
pub async fn open_api_key_request(
    db: &Db,
    kept: &KeyCache,
    presented: &str,
    now: time::OffsetDateTime,
    writes: Writes,
) -> Result<Option<KeyRequest>, sqlx::Error> {
    let Some((digest, hint)) = digest_of(presented) else { return Ok(None) };
    if let Some(request) = kept.reopen(db, &digest, now, writes).await? {
        return Ok(Some(request));
    }
    let capability = hex::encode(digest);
    for region in regions_to_ask(db, hint) {
        let mut tx = begin_for_key(&region, &capability).await?;
        let Some(key) = verify_in(&mut tx, &digest, now).await? else {
            tx.commit().await?;
            continue;
        };
        // The copy a move leaves in the old region until it is purged (or makes in the new one
        // before it switches): the key is the directory region's, and a change to it there
        // doesn't reach this copy.
        let Some(placed) = directory::own_copy_from(db, &mut tx, key.principal.region, key.principal.org_id).await?
        else {
            tx.commit().await?;
            continue;
        };
        kept.note_verified();
        // Kept once its use is on record (committed): a verification that records it is kept
        // by the key's next request, which finds it recorded. Not while the organization moves:
        // the move raises the epoch of the region it leaves before it switches the directory
        // (`cli::moving`), and a key kept during the move, after that raise, would still stand
        // in the copy left behind once the directory has switched.
        if let (false, Some(used_at), None) = (key.recorded_use, key.used_at, placed.moving_to) {
            kept.keep(
                digest,
                cache::Kept {
                    stamp: key.stamp,
                    principal: key.principal.clone(),
                    allowlist: key.allowlist.clone(),
                    deletion_scheduled: key.deletion_scheduled,
                    expires_at: key.expires_at,
                    used_at,
                },
            );
        }
        let tx = tx.into_org_tx(key.principal).await?;
        // Verifying read and wrote nothing (most requests): the request's first part needs no
        // savepoint.
        let tx = if key.recorded_use { tx } else { tx.with_nothing_written().await? };
        return Ok(Some(KeyRequest { tx, allowlist: key.allowlist, deletion_scheduled: key.deletion_scheduled }));
    }
    kept.forget(&digest);
    Ok(None)
}

/// The organization of the key whose digest is the capability (the one row it makes visible).
const KEY_ORGANIZATION: &str =
    "SELECT organization_id FROM api_keys WHERE key_hash = decode(current_setting('app.api_key_hash'), 'hex')";

/// The transaction a key is verified in: begun, in one round trip, inside the organization of
/// the key whose digest is `capability` (if there is one), with the capability cleared again,
/// so that everything after it reads inside that organization and nothing else.
async fn begin_for_key(db: &Db, capability: &str) -> Result<GateTx, sqlx::Error> {
    GateTx::begin_in_tenant_of(db, &gate(), Capability::ApiKeyHash, capability, KEY_ORGANIZATION).await
}

/// The digest of a presented key and the region it names, when it has a key's shape at all
/// (anything else is refused without a database round trip). A key is the prefix, optionally
/// a region and `_`, and 43 random characters; the lengths keep the two forms apart. The
/// region named is only where to ask first: the digest covers it, and a key is found only in
/// the database that holds its row.
fn digest_of(presented: &str) -> Option<([u8; 32], Option<RegionId>)> {
    let rest = presented.strip_prefix(API_KEY_PREFIX)?;
    let (hint, secret) = match rest.len() {
        43 => (None, rest),
        n if n > 44 => {
            let (region, secret) = rest.split_at(n - 43);
            (Some(RegionId::parse(region.strip_suffix('_')?)?), secret)
        }
        _ => return None,
    };
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    Some((crate::platform::crypto::sha256(presented.as_bytes()), hint))
}

/// The regions to look for a key in, in order: the one it names (when configured), then the
/// others, the default first.
fn regions_to_ask(db: &Db, hint: Option<RegionId>) -> Vec<Db> {
    let mut all = db.every_region();
    if let Some(hint) = hint
        && let Some(at) = all.iter().position(|d| d.region() == hint)
    {
        let named = all.remove(at);
        all.insert(0, named);
    }
    all
}

/// The statement [`verify_in`] runs: the key's row, its creator's standing, the organization's
/// customization of the key's role, its allowlist, a pending deletion, the tenant and the access
/// epoch's stamp. Every table it reads raises the access epoch when it changes
/// (`migrations/0056_access_epoch.sql`; `key_cache::every_column_a_verification_reads_raises_the_epoch`
/// reads the tables from here).
pub const VERIFICATION: &str = "SELECT k.organization_id, k.id, k.role, k.permissions, k.created_by, k.expires_at, k.revoked_at, \
                k.last_used_at, current_setting('app.org_id', true), \
                (SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id \
                   WHERE m.organization_id = k.organization_id AND m.user_id = k.created_by AND m.status = 'active' \
                     AND u.status NOT IN ('deleting', 'deleted') AND u.disabled_at IS NULL), \
                coalesce((SELECT array_agg(CASE WHEN rp.granted THEN '+' ELSE '-' END || rp.permission) \
                   FROM role_permissions rp WHERE rp.organization_id = k.organization_id AND rp.role = k.role), '{}'), \
                coalesce((SELECT array_agg(CASE WHEN rp.granted THEN '+' ELSE '-' END || rp.permission) \
                   FROM role_permissions rp JOIN memberships m ON m.organization_id = rp.organization_id AND m.role = rp.role \
                   WHERE rp.organization_id = k.organization_id AND m.user_id = k.created_by), '{}'), \
                coalesce((SELECT array_agg(CASE WHEN mp.granted THEN '+' ELSE '-' END || mp.permission) \
                   FROM member_permissions mp WHERE mp.organization_id = k.organization_id AND mp.user_id = k.created_by), '{}'), \
                (SELECT o.ip_allowlist FROM organizations o WHERE o.id = k.organization_id), \
                (SELECT d.purge_after FROM organization_deletion_requests d WHERE d.organization_id = k.organization_id), \
                (SELECT e.stamp FROM access_epoch e) \
         FROM api_keys k WHERE k.key_hash = $1";

/// What the verification of a key found.
struct VerifiedKey {
    principal: OrgPrincipal,
    allowlist: Vec<ipnet::IpNet>,
    deletion_scheduled: Option<time::OffsetDateTime>,
    /// The key's `last_used_at` was written (at most once a minute).
    recorded_use: bool,
    /// The key's use as its row recorded it before this verification.
    used_at: Option<time::OffsetDateTime>,
    expires_at: Option<time::OffsetDateTime>,
    /// The database's access epoch's stamp as the verifying statement saw it ([`cache`]).
    stamp: uuid::Uuid,
}

/// The verification itself, inside `tx` ([`begin_for_key`], which it leaves open): one
/// statement reads the key's row (visible only inside its own organization, now the tenant),
/// the creator's current standing (role, that role's customization and the creator's own
/// overrides: a key never holds what its creator no longer could), the organization's
/// customization of the key's role (tightening applies to keys too), the organization's IP
/// allowlist (NULL when the organization is gone), whether it is scheduled for deletion, the
/// tenant the transaction is in, and the access epoch (all of it in one snapshot).
async fn verify_in(
    tx: &mut GateTx,
    digest: &[u8; 32],
    now: time::OffsetDateTime,
) -> Result<Option<VerifiedKey>, sqlx::Error> {
    type KeyRow = (
        OrgId,
        uuid::Uuid,
        Role,
        Option<Vec<String>>,
        Option<UserId>,
        Option<time::OffsetDateTime>,
        Option<time::OffsetDateTime>,
        Option<time::OffsetDateTime>,
        Option<String>,
        Option<Role>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Option<Vec<ipnet::IpNet>>,
        Option<time::OffsetDateTime>,
        uuid::Uuid,
    );
    let row: Option<KeyRow> = sqlx::query_as(VERIFICATION).bind(&digest[..]).fetch_optional(&mut **tx).await?;
    let Some((
        org_id,
        key_id,
        role,
        explicit,
        created_by,
        expires_at,
        revoked_at,
        last_used_at,
        tenant,
        creator_role,
        key_role_custom,
        creator_role_custom,
        creator_overrides,
        allowlist,
        deletion_scheduled,
        stamp,
    )) = row
    else {
        return Ok(None);
    };
    // The row was visible only through its organization's tenant: the transaction is inside
    // that organization and nothing else, with nothing left to set.
    tx.tenant_reported(org_id, tenant.as_deref());
    if revoked_at.is_some() || expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let creator_bound = match (created_by, creator_role) {
        // Made by the command line before every key acted for a member: bounded by its role
        // alone, and it acts for nobody (it records nothing as anyone's).
        (None, _) => None,
        (Some(_), Some(creator_role)) if creator_role.rank() >= role.rank() => Some(effective_permissions(
            creator_role,
            &parse_grants(&creator_role_custom),
            &parse_grants(&creator_overrides),
        )),
        // The creator left, was suspended, is deleting their account, had it disabled by an
        // operator, or now ranks below the key.
        (Some(_), _) => {
            return Ok(None);
        }
    };
    let Some(allowlist) = allowlist else {
        return Ok(None);
    };
    let recorded_use = last_used_at.is_none_or(|t| now - t > cache::USE_RECORDED_EVERY);
    if recorded_use {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(key_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    let mut permissions =
        effective_permissions(role, &parse_grants(&key_role_custom), &[]).intersect(super::role::admin_bound());
    if let Some(bound) = creator_bound {
        permissions = permissions.intersect(bound);
    }
    if let Some(list) = explicit {
        let wanted = PermissionSet::of(&list.iter().filter_map(|p| p.parse().ok()).collect::<Vec<Permission>>());
        permissions = permissions.intersect(wanted);
    }
    let principal = OrgPrincipal {
        org_id,
        actor: Actor::ApiKey(key_id),
        role,
        client_id: None,
        permissions,
        scope_user: created_by,
        region: tx.region(),
    };
    Ok(Some(VerifiedKey {
        principal,
        allowlist,
        deletion_scheduled,
        recorded_use,
        used_at: last_used_at,
        expires_at,
        stamp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK012345";

    #[test]
    fn a_key_may_name_its_region_and_nothing_else_passes() {
        assert_eq!(SECRET.len(), 43);
        let plain = format!("{API_KEY_PREFIX}{SECRET}");
        assert_eq!(digest_of(&plain).map(|(_, hint)| hint), Some(None));
        let eu = format!("{API_KEY_PREFIX}eu_{SECRET}");
        let (digest, hint) = digest_of(&eu).expect("a key naming its region");
        assert_eq!(hint, RegionId::parse("eu"));
        // The region is part of what is hashed: the same secret elsewhere is another key.
        assert_ne!(Some(digest), digest_of(&plain).map(|(d, _)| d));
        for bad in [
            format!("{API_KEY_PREFIX}{}", &SECRET[1..]),
            format!("{API_KEY_PREFIX}{SECRET}x"),
            format!("{API_KEY_PREFIX}EU_{SECRET}"),
            format!("{API_KEY_PREFIX}eu-{SECRET}"),
            format!("{API_KEY_PREFIX}_{SECRET}"),
            format!("{API_KEY_PREFIX}eu_{}!", &SECRET[1..]),
            format!("{API_KEY_PREFIX}{}_{SECRET}", "a".repeat(17)),
        ] {
            assert!(digest_of(&bad).is_none(), "{bad}");
        }
    }
}
