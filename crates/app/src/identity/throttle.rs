//! Per-account throttling of guesses, independent of IP.
//!
//! A counter per (key, kind) with a fixed window: after `threshold` failures within
//! `window`, the key is locked for `lockout`. Keys are digests of what is guessed at — the
//! normalized email for passwords (so an unknown email behaves exactly like a known one), the
//! user id for second factors and re-authentication, the device cookie for known devices.

use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use crate::identity::config::IdentityConfig;
use crate::platform::crypto::sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Kind {
    Password,
    SecondFactor,
    Device,
    /// Re-authentication inside a signed-in session, per user: a budget apart from sign-in's.
    Reauth,
}

pub fn key(kind: Kind, subject: &str) -> [u8; 32] {
    let tag = match kind {
        Kind::Password => "password",
        Kind::SecondFactor => "second_factor",
        Kind::Device => "device",
        Kind::Reauth => "reauth",
    };
    sha256(format!("{tag}:{subject}").as_bytes())
}

/// When the key is locked, until when.
pub async fn locked_until(
    conn: &mut PgConnection,
    key: &[u8; 32],
    kind: Kind,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    let until: Option<(Option<OffsetDateTime>,)> =
        sqlx::query_as("SELECT locked_until FROM auth_throttle WHERE key = $1 AND kind = $2")
            .bind(&key[..])
            .bind(kind)
            .fetch_optional(conn)
            .await?;
    Ok(until.and_then(|(u,)| u).filter(|u| *u > now))
}

#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// This failure crossed the threshold and started a lockout.
    pub locked_now: bool,
    pub locked_until: Option<OffsetDateTime>,
}

/// Counts a failure atomically; starts the lockout when the threshold is reached.
pub async fn record_failure(
    conn: &mut PgConnection,
    key: &[u8; 32],
    kind: Kind,
    now: OffsetDateTime,
    config: &IdentityConfig,
) -> Result<Failure, sqlx::Error> {
    let window = Duration::minutes(config.lockout_window_minutes.into());
    let (failures,): (i32,) = sqlx::query_as(
        "INSERT INTO auth_throttle (key, kind, failures, window_started_at) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (key, kind) DO UPDATE SET \
           failures = CASE WHEN auth_throttle.window_started_at <= $4 THEN 1 ELSE auth_throttle.failures + 1 END, \
           window_started_at = CASE WHEN auth_throttle.window_started_at <= $4 THEN $3 ELSE auth_throttle.window_started_at END \
         RETURNING failures",
    )
    .bind(&key[..])
    .bind(kind)
    .bind(now)
    .bind(now - window)
    .fetch_one(&mut *conn)
    .await?;
    if failures as u32 >= config.lockout_threshold {
        let until = now + Duration::minutes(config.lockout_minutes.into());
        sqlx::query(
            "UPDATE auth_throttle SET locked_until = $3, failures = 0, window_started_at = $4 \
             WHERE key = $1 AND kind = $2",
        )
        .bind(&key[..])
        .bind(kind)
        .bind(until)
        .bind(now)
        .execute(conn)
        .await?;
        return Ok(Failure { locked_now: true, locked_until: Some(until) });
    }
    Ok(Failure { locked_now: false, locked_until: None })
}

pub async fn clear(conn: &mut PgConnection, key: &[u8; 32], kind: Kind) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM auth_throttle WHERE key = $1 AND kind = $2")
        .bind(&key[..])
        .bind(kind)
        .execute(conn)
        .await?;
    Ok(())
}

/// Minutes until `until`, rounded up, for messages.
pub fn minutes_left(until: OffsetDateTime, now: OffsetDateTime) -> i64 {
    ((until - now).whole_seconds() + 59).max(60) / 60
}
