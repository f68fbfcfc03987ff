//! A signed-in member of an organization: the membership, its role, the organization's
//! customization of that role and the member's own overrides.

use super::OrgPrincipal;
use super::gate;
use super::principal::{Actor, load_permissions};
use super::role::Role;
use super::user::AuthenticatedUser;
use crate::platform::db::Db;
use crate::platform::db::tenant::{GateTx, UserTx};
use crate::platform::ids::{ClientId, OrgId};

/// Verifies that `user` is an active member of `org_id` and returns the principal, or `None`
/// when they are not (unknown organization, no membership, suspended): callers answer 404
/// so that a foreign organization can't be told apart from a missing one.
pub async fn verify_member(
    db: &Db,
    user: &AuthenticatedUser,
    org_id: OrgId,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = GateTx::begin(db, &gate()).await?;
    tx.set_tenant(org_id).await?;
    let row: Option<(Role, Option<ClientId>)> = sqlx::query_as(
        "SELECT m.role, m.client_id FROM memberships m \
         WHERE m.organization_id = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(org_id)
    .bind(user.id())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((role, client_id)) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let permissions = load_permissions(&mut tx, org_id, user.id(), role).await?;
    tx.commit().await?;
    Ok(Some(OrgPrincipal { org_id, actor: Actor::User(user.id()), role, client_id, permissions, scope_user: None }))
}

/// Like [`verify_member`], finding the organization by its slug among the user's own
/// organizations (a slug of an organization they don't belong to is simply not found).
pub async fn verify_member_by_slug(
    db: &Db,
    user: &AuthenticatedUser,
    slug: &str,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = UserTx::begin(db, user).await?;
    let org: Option<(OrgId,)> = sqlx::query_as(
        "SELECT o.id FROM organizations o JOIN memberships m ON m.organization_id = o.id \
         WHERE o.slug = $1 AND m.user_id = $2 AND m.status = 'active'",
    )
    .bind(slug)
    .bind(user.id())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match org {
        Some((org_id,)) => verify_member(db, user, org_id).await,
        None => Ok(None),
    }
}
