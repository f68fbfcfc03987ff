//! Users (a global table).

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::platform::ids::UserId;
use crate::platform::types::Email;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub email_verified_at: Option<OffsetDateTime>,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled_at: Option<OffsetDateTime>,
    pub totp_last_step: Option<i64>,
    pub disabled_at: Option<OffsetDateTime>,
    /// 'active', or 'deleting' during an account deletion's grace period (migration 0052).
    pub status: String,
    pub created_at: OffsetDateTime,
}

impl User {
    pub fn two_factor_enabled(&self) -> bool {
        self.totp_enabled_at.is_some() && self.totp_secret.is_some()
    }
}

const COLUMNS: &str = "id, email, display_name, password_hash, email_verified_at, totp_secret, totp_enabled_at, \
                       totp_last_step, disabled_at, status, created_at";

pub async fn find_by_email(conn: &mut PgConnection, email: &Email) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
        .bind(email.as_str())
        .fetch_optional(conn)
        .await
}

pub async fn get(conn: &mut PgConnection, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// Like `get`, locking the row for the rest of the transaction.
pub async fn get_for_update(conn: &mut PgConnection, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(conn).await
}

pub async fn create(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
    password_hash: Option<&str>,
    email_verified_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<User, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, email, display_name, password_hash, email_verified_at, password_changed_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $4::text IS NULL THEN NULL ELSE $6 END, $6, $6) RETURNING {COLUMNS}"
    ))
    .bind(UserId::new())
    .bind(email.as_str())
    .bind(display_name)
    .bind(password_hash)
    .bind(email_verified_at)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn set_password(
    conn: &mut PgConnection,
    id: UserId,
    hash: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(hash)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn mark_email_verified(conn: &mut PgConnection, id: UserId, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_verified_at = coalesce(email_verified_at, $2), updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Disables (or re-enables) an account. Disabling ends every session at once.
pub async fn set_disabled(
    conn: &mut PgConnection,
    id: UserId,
    disabled: bool,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE users SET disabled_at = CASE WHEN $2 THEN $3 ELSE NULL END, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    if disabled {
        super::session::revoke_all(conn, id, None).await?;
    }
    Ok(done.rows_affected() == 1)
}
