//! Organizations and memberships.

use crate::access::OrgTx;
use crate::access::role::Role;
use crate::platform::db::tenant::UserTx;
use crate::platform::ids::{OrgId, UserId};
use crate::platform::types::Slug;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organization {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
}

/// Inserts the organization of a transaction opened with `OrgTx::begin_new_organization`.
/// In the default region its directory entry is written in the same transaction; elsewhere the
/// caller reserved it first (`access::directory::reserve`, as `service::create_organization`).
pub async fn insert_organization(tx: &mut OrgTx, slug: &Slug, name: &str) -> Result<Organization, sqlx::Error> {
    let id = tx.org_id();
    if tx.in_directory_region() {
        let region = tx.region();
        crate::access::directory::register_in(tx, id, slug.as_str(), region).await?;
    }
    sqlx::query_as("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $3) RETURNING id, slug, name")
        .bind(id)
        .bind(slug.as_str())
        .bind(name)
        .fetch_one(&mut **tx)
        .await
}

pub async fn add_member(tx: &mut OrgTx, user_id: UserId, role: Role) -> Result<(), sqlx::Error> {
    let org_id = tx.org_id();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The organizations the user is an active member of, with their role in each.
pub async fn list_for_user(tx: &mut UserTx) -> Result<Vec<(Organization, Role)>, sqlx::Error> {
    let rows: Vec<(OrgId, String, String, Role)> = sqlx::query_as(
        "SELECT o.id, o.slug, o.name, m.role FROM memberships m \
         JOIN organizations o ON o.id = m.organization_id \
         WHERE m.user_id = $1 AND m.status = 'active' ORDER BY o.name",
    )
    .bind(tx.user_id())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, slug, name, role)| (Organization { id, slug, name }, role)).collect())
}

/// Adds an active member with any role; a Client-role member is linked to `client_id` (the
/// table's check constraint insists on exactly that pairing).
pub async fn insert_membership(
    tx: &mut OrgTx,
    user_id: UserId,
    role: Role,
    client_id: Option<crate::platform::ids::ClientId>,
) -> Result<(), sqlx::Error> {
    let org_id = tx.org_id();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role, client_id) VALUES ($1, $2, $3, $4)")
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .bind(client_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
