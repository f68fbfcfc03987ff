//! Projects, optionally belonging to a client of the same organization.

use crate::platform::db::OrgTx;
use crate::platform::ids::{ClientId, OrgId, ProjectId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub organization_id: OrgId,
    pub id: ProjectId,
    pub client_id: Option<ClientId>,
    pub name: String,
    pub status: String,
}

/// A client id of another organization fails here (composite foreign key), whatever the
/// caller does.
pub async fn create(tx: &mut OrgTx, client_id: Option<ClientId>, name: &str) -> Result<Project, sqlx::Error> {
    let org = tx.org_id();
    sqlx::query_as(
        "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4) \
         RETURNING organization_id, id, client_id, name, status",
    )
    .bind(org)
    .bind(ProjectId::new())
    .bind(client_id)
    .bind(name)
    .fetch_one(&mut **tx)
    .await
}

pub async fn list(tx: &mut OrgTx, limit: i64) -> Result<Vec<Project>, sqlx::Error> {
    sqlx::query_as("SELECT organization_id, id, client_id, name, status FROM projects ORDER BY name, id LIMIT $1")
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}
