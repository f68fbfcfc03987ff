//! Single-use, expiring, purpose-bound tokens sent by email. Stored as digests; using one is
//! a compare-and-set, so two clicks can't both succeed.

use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use crate::platform::crypto::{random_token, sha256};
use crate::platform::ids::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
}

impl Purpose {
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(24),
            Purpose::ResetPassword => Duration::hours(1),
            Purpose::ChangeEmail => Duration::hours(24),
        }
    }
}

/// Issues a token; earlier unused tokens of the same purpose for the user stop working.
pub async fn issue(
    conn: &mut PgConnection,
    user_id: UserId,
    purpose: Purpose,
    new_email: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, sqlx::Error> {
    sqlx::query("UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(purpose)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let token = random_token();
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, new_email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&sha256(token.as_bytes())[..])
    .bind(user_id)
    .bind(purpose)
    .bind(new_email)
    .bind(now)
    .bind(now + purpose.lifetime())
    .execute(conn)
    .await?;
    Ok(token)
}

#[derive(Debug, Clone)]
pub struct Redeemed {
    pub user_id: UserId,
    pub new_email: Option<String>,
}

/// Whether the token is currently valid for `purpose` (doesn't use it up).
pub async fn peek(
    conn: &mut PgConnection,
    token: &str,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Result<Option<Redeemed>, sqlx::Error> {
    let row: Option<(UserId, Option<String>)> = sqlx::query_as(
        "SELECT user_id, new_email FROM email_tokens \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(&sha256(token.as_bytes())[..])
    .bind(purpose)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(user_id, new_email)| Redeemed { user_id, new_email }))
}

/// Uses the token up; `None` when it is unknown, expired, used, or for another purpose.
pub async fn consume(
    conn: &mut PgConnection,
    token: &str,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Result<Option<Redeemed>, sqlx::Error> {
    let row: Option<(UserId, Option<String>)> = sqlx::query_as(
        "UPDATE email_tokens SET used_at = $3 \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
         RETURNING user_id, new_email",
    )
    .bind(&sha256(token.as_bytes())[..])
    .bind(purpose)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(user_id, new_email)| Redeemed { user_id, new_email }))
}
