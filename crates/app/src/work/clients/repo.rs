//! Client records. Every function takes `&mut OrgTx`: tenant data has no other door.

use crate::platform::db::OrgTx;
use crate::platform::ids::{ClientId, OrgId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Client {
    pub organization_id: OrgId,
    pub id: ClientId,
    pub name: String,
    pub status: String,
}

pub async fn create(tx: &mut OrgTx, name: &str) -> Result<Client, sqlx::Error> {
    let org = tx.org_id();
    sqlx::query_as(
        "INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, $3) \
         RETURNING organization_id, id, name, status",
    )
    .bind(org)
    .bind(ClientId::new())
    .bind(name)
    .fetch_one(&mut **tx)
    .await
}

pub async fn get(tx: &mut OrgTx, id: ClientId) -> Result<Option<Client>, sqlx::Error> {
    sqlx::query_as("SELECT organization_id, id, name, status FROM clients WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

pub async fn list(tx: &mut OrgTx, limit: i64) -> Result<Vec<Client>, sqlx::Error> {
    sqlx::query_as("SELECT organization_id, id, name, status FROM clients ORDER BY name, id LIMIT $1")
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

pub async fn rename(tx: &mut OrgTx, id: ClientId, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE clients SET name = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}
