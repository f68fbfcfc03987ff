//! Security events: what happened to an account, written in the same transaction as the
//! change. Details never contain secrets (no passwords, tokens, codes).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::session::RequestMeta;
use crate::platform::ids::UserId;

pub async fn record(
    conn: &mut PgConnection,
    user_id: Option<UserId>,
    kind: &str,
    meta: &RequestMeta,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO security_events (id, user_id, occurred_at, kind, ip, user_agent, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(meta.now)
    .bind(kind)
    .bind(meta.ip)
    .bind(&meta.user_agent)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecurityEvent {
    pub occurred_at: time::OffsetDateTime,
    pub kind: String,
    pub ip: Option<ipnet::IpNet>,
    pub user_agent: String,
}

pub async fn recent(conn: &mut PgConnection, user_id: UserId, limit: i64) -> Result<Vec<SecurityEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT occurred_at, kind, ip, user_agent FROM security_events WHERE user_id = $1 \
         ORDER BY occurred_at DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}
