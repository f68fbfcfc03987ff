//! Organization API keys: random with a recognizable prefix, shown once, stored as a SHA-256
//! digest, with a role or permission subset never above the creator's, optional expiry,
//! last-used time and revocation.
//!
//! Every key acts for one member of its organization (`created_by`): the person whose projects a
//! Member-role key sees, whose time it records and whose comments it may edit, and whose
//! standing bounds it (a key never holds more than that member, now or later: the guard checks
//! again on every request). On the web that is the member who makes it; the operator's command
//! line names one.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::API_KEY_PREFIX;
use crate::access::OrgPrincipal;
use crate::access::OrgTx;
use crate::access::role::{Permission, PermissionSet, Role, admin_bound, effective_permissions};
use crate::audit::{self, Context, Entry};
use crate::platform::crypto::{random_token, sha256};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::UserId;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognize it.
    pub prefix: String,
    pub role: String,
    pub permissions: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The member the key acts for (null only for keys made by the command line before keys
    /// were bound to a member: such a key records nothing as anyone's; replace it).
    #[schema(value_type = Option<String>)]
    pub acts_for: Option<UserId>,
}

const COLUMNS: &str =
    "id, name, prefix, role, permissions, created_at, expires_at, last_used_at, revoked_at, created_by AS acts_for";

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    /// admin, manager or member (never above the creator's role).
    pub role: String,
    /// Optional subset of the role's permissions.
    pub permissions: Option<Vec<String>>,
    /// Days until the key stops working (1–3650); none for no expiry.
    pub expires_in_days: Option<i64>,
}

/// The key itself, returned exactly once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Store it now: it is never shown again.
    pub secret: String,
}

pub async fn list(db: &Db, p: &OrgPrincipal) -> DomainResult<Vec<ApiKey>> {
    if !p.can(Permission::ApiKeysManage) {
        return Err(DomainError::Forbidden("Your role doesn't allow this (api_keys.manage).".into()));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let rows =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC")).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// What a key of `role` made by `p` can hold at most: the role's permissions in this
/// organization (its customization applies to keys, as when a key is verified) within the Admin
/// bound and `p`'s own effective permissions.
async fn bound_of(tx: &mut OrgTx, p: &OrgPrincipal, role: Role) -> DomainResult<PermissionSet> {
    let customization = crate::access::role::role_customization(tx, role).await?;
    Ok(effective_permissions(role, &customization, &[]).intersect(admin_bound()).intersect(p.permissions()))
}

/// The role a key with an explicit permission subset carries: its creator's, at most Admin (the
/// subset, not the role, says what it may do; the role keeps it tied to its creator's standing).
pub fn subset_role(p: &OrgPrincipal) -> Role {
    if p.role().rank() >= Role::Admin.rank() { Role::Admin } else { p.role() }
}

/// The permissions `p` may put into a key's explicit subset, for the key page's checkboxes.
pub async fn grantable(db: &Db, p: &OrgPrincipal) -> DomainResult<PermissionSet> {
    if !p.can(Permission::ApiKeysManage) {
        return Err(DomainError::Forbidden("Your role doesn't allow this (api_keys.manage).".into()));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let set = bound_of(&mut tx, p, subset_role(p)).await?;
    tx.commit().await?;
    Ok(set)
}

fn article(role: Role) -> &'static str {
    if matches!(role, Role::Owner | Role::Admin) { "an" } else { "a" }
}

/// The member a key acts for, as they stand now.
struct Holder {
    role: Role,
    permissions: PermissionSet,
}

/// Reads `user`'s standing in the transaction's organization: an active member of the team
/// (a Client is a portal user, whose role no key can hold). Refusals name the `as` field.
async fn holder(tx: &mut OrgTx, user: UserId) -> DomainResult<Holder> {
    let row: Option<(Role, String)> =
        sqlx::query_as("SELECT role, status FROM memberships WHERE organization_id = $1 AND user_id = $2")
            .bind(tx.org_id())
            .bind(user)
            .fetch_optional(&mut **tx)
            .await?;
    let (role, status) = row.ok_or_else(|| DomainError::field("as", "is not a member of this organization"))?;
    if status != "active" {
        return Err(DomainError::field("as", "is a suspended member: a key acts only for an active member"));
    }
    if role == Role::Client {
        return Err(DomainError::field("as", "is a client (portal user): a key acts only for a member of the team"));
    }
    let customization = crate::access::role::role_customization(tx, role).await?;
    let overrides: Vec<(String, bool)> = sqlx::query_as(
        "SELECT permission, granted FROM member_permissions WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(tx.org_id())
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    let overrides: Vec<(Permission, bool)> =
        overrides.into_iter().filter_map(|(p, g)| p.parse().ok().map(|p| (p, g))).collect();
    Ok(Holder { role, permissions: effective_permissions(role, &customization, &overrides) })
}

/// Creates a key as `p`, acting for `p`'s own person (the web: the signed-in member). A
/// principal that is no person (the operator) must name the member: [`create_for`].
pub async fn create(db: &Db, ctx: &Context, p: &OrgPrincipal, input: &NewKey) -> DomainResult<CreatedKey> {
    let Some(member) = p.on_behalf_of() else {
        return Err(DomainError::field("as", "an API key acts for a member of the organization: name one"));
    };
    create_for(db, ctx, p, member, input).await
}

/// Creates a key as `p` that acts for `member` (the operator's command line, which may create
/// any role but Owner). The key holds at most what `member` holds: a role above theirs is
/// refused, and its permissions are bounded by theirs, exactly as if they had made it.
pub async fn create_for(
    db: &Db,
    ctx: &Context,
    p: &OrgPrincipal,
    member: UserId,
    input: &NewKey,
) -> DomainResult<CreatedKey> {
    if !p.can(Permission::ApiKeysManage) {
        return Err(DomainError::Forbidden("Your role doesn't allow this (api_keys.manage).".into()));
    }
    let name = crate::platform::fields::nonblank("name", &input.name, 100)?;
    let role: Role = input.role.parse().map_err(|m: String| DomainError::field("role", m))?;
    if !matches!(role, Role::Admin | Role::Manager | Role::Member) {
        return Err(DomainError::field("role", "must be admin, manager or member"));
    }
    if role.rank() > p.role().rank() {
        return Err(DomainError::Forbidden("A key can't have a role above your own.".into()));
    }
    let wanted = match &input.permissions {
        None => None,
        Some(list) => {
            let perms: Vec<Permission> = list
                .iter()
                .map(|s| s.parse::<Permission>().map_err(|m| DomainError::field("permissions", m)))
                .collect::<DomainResult<_>>()?;
            if perms.is_empty() {
                return Err(DomainError::field("permissions", "choose at least one permission"));
            }
            Some(PermissionSet::of(&perms))
        }
    };
    let mut tx = OrgTx::begin(db, p).await?;
    let holder = holder(&mut tx, member).await?;
    if role.rank() > holder.role.rank() {
        return Err(DomainError::field(
            "as",
            format!(
                "is {} {}, and a key never holds more than the member it acts for: {} {role} key can't act for them",
                article(holder.role),
                holder.role,
                article(role)
            ),
        ));
    }
    let mut granted = bound_of(&mut tx, p, role).await?.intersect(holder.permissions);
    let explicit = match wanted {
        None => None,
        Some(wanted) => {
            if !wanted.is_subset(granted) {
                let beyond: Vec<&str> =
                    wanted.iter().filter(|x| !granted.contains(*x)).map(Permission::as_str).collect();
                return Err(DomainError::field(
                    "permissions",
                    format!(
                        "not within the key's role, your own and those of the member it acts for: {}",
                        beyond.join(", ")
                    ),
                ));
            }
            granted = wanted;
            Some(wanted.iter().map(|x| x.as_str().to_string()).collect::<Vec<_>>())
        }
    };
    let expires_at = match input.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(ctx.now + time::Duration::days(d)),
        Some(_) => return Err(DomainError::field("expires_in_days", "must be between 1 and 3650")),
    };
    // A key of an organization outside the default region names its region, so that its
    // verification asks that region first (`verify_api_key`).
    let hint = if db.is_multi_region() && db.home_region() != p.region {
        format!("{}_", p.region.as_str())
    } else {
        String::new()
    };
    let secret = format!("{API_KEY_PREFIX}{hint}{}", random_token());
    let prefix: String = secret.chars().take(API_KEY_PREFIX.len() + hint.len() + 4).collect();
    let key: ApiKey = sqlx::query_as(&format!(
        "INSERT INTO api_keys (organization_id, id, name, prefix, key_hash, role, permissions, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(tx.org_id())
    .bind(Uuid::now_v7())
    .bind(&name)
    .bind(&prefix)
    .bind(&sha256(secret.as_bytes())[..])
    .bind(role)
    .bind(&explicit)
    .bind(member)
    .bind(ctx.now)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("api_key.created", "api_key", key.id).after(json!({
            "name": name, "prefix": prefix, "role": role, "permissions": granted.iter().map(Permission::as_str).collect::<Vec<_>>(),
            "expires_at": expires_at.map(|e| e.to_string()), "acts_for": member,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedKey { key, secret })
}

pub async fn revoke(db: &Db, ctx: &Context, p: &OrgPrincipal, id: Uuid) -> DomainResult<ApiKey> {
    if !p.can(Permission::ApiKeysManage) {
        return Err(DomainError::Forbidden("Your role doesn't allow this (api_keys.manage).".into()));
    }
    let mut tx = OrgTx::begin(db, p).await?;
    let key: ApiKey = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(ctx.now)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::NotFound)?;
    audit::record(
        &mut tx,
        ctx,
        Entry::new("api_key.revoked", "api_key", id).before(json!({ "name": key.name, "prefix": key.prefix })),
    )
    .await?;
    tx.commit().await?;
    Ok(key)
}
