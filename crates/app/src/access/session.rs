//! Server-side sessions.
//!
//! The cookie carries a 256-bit random token; the database keeps only its SHA-256 digest, so
//! a leaked database can't be replayed as cookies. Cookies are `__Host-` prefixed, `Secure`,
//! `HttpOnly`, `SameSite=Lax`. A session is `pending` between the first factor and the second,
//! and only the second-factor page accepts it; completing the second factor replaces it with
//! a new `complete` session (new token), as does every sign-in (no fixation).

use std::net::IpAddr;

use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::AuthenticatedUser;
use crate::platform::crypto::{random_token, sha256};
use crate::platform::ids::UserId;

pub const SESSION_COOKIE: &str = "__Host-cf_session";
/// The cookie a browser keeps once it has signed in to an account: a known device.
pub const DEVICE_COOKIE: &str = "__Host-cf_device";
pub const CSRF_COOKIE: &str = "__Host-cf_csrf";
pub const OIDC_COOKIE: &str = "__Host-cf_oidc";

/// How long a half-finished sign-in (second factor outstanding) lives.
pub const PENDING_LIFETIME: Duration = Duration::minutes(10);
/// How long a device stays known after its last successful sign-in.
pub const DEVICE_LIFETIME: Duration = Duration::days(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Stage {
    Pending,
    Complete,
    /// Signed in to an account scheduled for deletion: only the page offering to cancel the
    /// deletion accepts it (`identity::account_deletion`).
    Departing,
}

/// How a session came to be (shown on the sessions page, recorded in security events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Method {
    Password,
    Google,
    Reset,
    EmailChange,
    EmailVerification,
    Invitation,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Google => "Google",
            Method::Reset => "password reset",
            Method::EmailChange => "email change",
            Method::EmailVerification => "email verification",
            Method::Invitation => "invitation",
        }
    }
}

/// The session of the current request, verified.
#[derive(Debug, Clone)]
pub struct CurrentSession {
    pub id: Uuid,
    pub user: AuthenticatedUser,
    pub email: String,
    pub stage: Stage,
    pub method: Method,
    pub csrf_token: String,
    pub created_at: OffsetDateTime,
    /// Whether the user has two-factor authentication on (organizations may require it).
    pub two_factor: bool,
    /// How long the session had been idle before this request.
    pub idle_for: Duration,
    /// The user's privileges changed since this session's token was issued: it is due for a
    /// new one (`rotate_token`).
    pub privileges_changed: bool,
}

/// Where a request comes from, for sessions and security events.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub user_agent: String,
    pub now: OffsetDateTime,
    pub request_id: String,
}

pub struct NewSession {
    pub id: Uuid,
    pub token: String,
    pub stage: Stage,
    pub expires_at: OffsetDateTime,
}

pub async fn create(
    conn: &mut PgConnection,
    user_id: UserId,
    stage: Stage,
    method: Method,
    meta: &RequestMeta,
    lifetime: Duration,
) -> Result<NewSession, sqlx::Error> {
    let token = random_token();
    let id = Uuid::now_v7();
    let expires_at = match stage {
        Stage::Pending | Stage::Departing => meta.now + PENDING_LIFETIME,
        Stage::Complete => meta.now + lifetime,
    };
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, stage, method, csrf_token, created_at, last_seen_at, expires_at, ip, user_agent, \
         privilege_epoch) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, (SELECT privilege_epoch FROM users WHERE id = $3))",
    )
    .bind(id)
    .bind(&sha256(token.as_bytes())[..])
    .bind(user_id)
    .bind(stage)
    .bind(method)
    .bind(random_token())
    .bind(meta.now)
    .bind(expires_at)
    .bind(meta.ip)
    .bind(&meta.user_agent)
    .execute(conn)
    .await?;
    Ok(NewSession { id, token, stage, expires_at })
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: UserId,
    email: String,
    stage: Stage,
    method: Method,
    csrf_token: String,
    created_at: OffsetDateTime,
    last_seen_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    two_factor: bool,
    privileges_changed: bool,
    /// With [`lookup_routing`]: the directory's entry for the slug (organization, region,
    /// region it moves to).
    dir_org: Option<crate::platform::ids::OrgId>,
    dir_region: Option<String>,
    dir_moving: Option<String>,
}

/// The live session for a cookie token: not expired (absolute), not idle too long (complete
/// sessions), its user not disabled. Expired sessions are deleted on sight.
pub async fn lookup(
    conn: &mut PgConnection,
    token: &str,
    now: OffsetDateTime,
    idle: Duration,
) -> Result<Option<CurrentSession>, sqlx::Error> {
    Ok(lookup_inner(conn, token, None, now, idle).await?.map(|(s, _)| s))
}

/// Where the directory places an organization, read with the session ([`lookup_routing`]).
pub type DirectoryRow = (crate::platform::ids::OrgId, String, Option<String>);

/// [`lookup`], also reading the directory's entry for `slug` in the same statement: with more
/// than one region, routing an organization's request costs no extra round trip.
pub async fn lookup_routing(
    conn: &mut PgConnection,
    token: &str,
    slug: &str,
    now: OffsetDateTime,
    idle: Duration,
) -> Result<Option<(CurrentSession, Option<DirectoryRow>)>, sqlx::Error> {
    lookup_inner(conn, token, Some(slug), now, idle).await
}

async fn lookup_inner(
    conn: &mut PgConnection,
    token: &str,
    slug: Option<&str>,
    now: OffsetDateTime,
    idle: Duration,
) -> Result<Option<(CurrentSession, Option<DirectoryRow>)>, sqlx::Error> {
    if token.len() != 43 {
        return Ok(None);
    }
    const COLUMNS: &str = "SELECT s.id, s.user_id, u.email, s.stage, s.method, s.csrf_token, s.created_at, \
         s.last_seen_at, s.expires_at, \
         (u.totp_enabled_at IS NOT NULL AND u.totp_secret IS NOT NULL) AS two_factor, \
         s.privilege_epoch < u.privilege_epoch AS privileges_changed";
    let row: Option<Row> = match slug {
        None => {
            static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                format!(
                    "{COLUMNS}, NULL::uuid AS dir_org, NULL::text AS dir_region, NULL::text AS dir_moving \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.token_hash = $1 AND u.disabled_at IS NULL"
                )
            });
            sqlx::query_as(SQL.as_str()).bind(&sha256(token.as_bytes())[..]).fetch_optional(&mut *conn).await?
        }
        Some(slug) => {
            static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                format!(
                    "{COLUMNS}, d.org AS dir_org, d.region AS dir_region, d.moving_to AS dir_moving \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     LEFT JOIN organization_directory d ON d.slug = $2 \
                     WHERE s.token_hash = $1 AND u.disabled_at IS NULL"
                )
            });
            sqlx::query_as(SQL.as_str())
                .bind(&sha256(token.as_bytes())[..])
                .bind(slug)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    let placement = match (row.dir_org, &row.dir_region) {
        (Some(org), Some(region)) => Some((org, region.clone(), row.dir_moving.clone())),
        _ => None,
    };
    let idle_expired = row.stage == Stage::Complete && row.last_seen_at + idle <= now;
    if row.expires_at <= now || idle_expired {
        sqlx::query("DELETE FROM sessions WHERE id = $1").bind(row.id).execute(&mut *conn).await?;
        return Ok(None);
    }
    if now - row.last_seen_at > Duration::seconds(60) {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    let session = CurrentSession {
        id: row.id,
        user: AuthenticatedUser::from_verified_session(row.user_id),
        email: row.email,
        stage: row.stage,
        method: row.method,
        csrf_token: row.csrf_token,
        created_at: row.created_at,
        two_factor: row.two_factor,
        idle_for: now - row.last_seen_at,
        privileges_changed: row.privileges_changed,
    };
    Ok(Some((session, placement)))
}

/// Gives a session a new token and synchronizer token, at the user's current privilege epoch;
/// the old token stops working at once. The session keeps its lifetime (creation, absolute
/// expiry, method). Only the holder of the current token `old` rotates, and only while the
/// session is behind its user's epoch: of two requests racing with the same old token, one
/// rotates and the other (`None`) goes on without a new cookie, so the browser keeps the one
/// that counts.
pub async fn rotate_token(
    conn: &mut PgConnection,
    session_id: Uuid,
    old: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let token = random_token();
    let csrf = random_token();
    let done = sqlx::query(
        "UPDATE sessions s SET token_hash = $3, csrf_token = $4, privilege_epoch = u.privilege_epoch \
         FROM users u WHERE s.id = $1 AND s.token_hash = $2 AND u.id = s.user_id AND s.privilege_epoch < u.privilege_epoch",
    )
    .bind(session_id)
    .bind(&sha256(old.as_bytes())[..])
    .bind(&sha256(token.as_bytes())[..])
    .bind(&csrf)
    .execute(conn)
    .await?;
    Ok((done.rows_affected() == 1).then_some((token, csrf)))
}

/// Keeps the hash of a password chosen through a reset link on the pending session that waits
/// for the second factor; only a pending session can hold one.
pub async fn hold_password(conn: &mut PgConnection, session_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    let done = sqlx::query("UPDATE sessions SET pending_password_hash = $2 WHERE id = $1 AND stage = 'pending'")
        .bind(session_id)
        .bind(hash)
        .execute(conn)
        .await?;
    if done.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol("a reset password can only wait on a pending session".into()));
    }
    Ok(())
}

/// The password a pending session holds for a reset, if any.
pub async fn held_password(conn: &mut PgConnection, session_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let held: Option<(Option<String>,)> =
        sqlx::query_as("SELECT pending_password_hash FROM sessions WHERE id = $1 AND stage = 'pending'")
            .bind(session_id)
            .fetch_optional(conn)
            .await?;
    Ok(held.and_then(|(h,)| h))
}

pub async fn delete(conn: &mut PgConnection, session_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = $1").bind(session_id).execute(conn).await?;
    Ok(())
}

/// Revokes one of the user's sessions; false if it isn't theirs or doesn't exist.
pub async fn revoke(conn: &mut PgConnection, user_id: UserId, session_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
        .bind(session_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every session of the user except `keep`.
pub async fn revoke_all(conn: &mut PgConnection, user_id: UserId, keep: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2)")
        .bind(user_id)
        .bind(keep)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: Uuid,
    pub method: Method,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub ip: Option<ipnet::IpNet>,
    pub user_agent: String,
}

pub async fn list(conn: &mut PgConnection, user_id: UserId) -> Result<Vec<SessionInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, method, created_at, last_seen_at, ip, user_agent FROM sessions \
         WHERE user_id = $1 AND stage = 'complete' ORDER BY last_seen_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Registers (or refreshes) the device cookie after a complete sign-in; returns the token.
pub async fn remember_device(
    conn: &mut PgConnection,
    user_id: UserId,
    existing: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, sqlx::Error> {
    if let Some(token) = existing {
        let done = sqlx::query(
            "UPDATE known_devices SET last_used_at = $3, expires_at = $4 \
             WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3",
        )
        .bind(&sha256(token.as_bytes())[..])
        .bind(user_id)
        .bind(now)
        .bind(now + DEVICE_LIFETIME)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(token.to_string());
        }
    }
    let token = random_token();
    sqlx::query(
        "INSERT INTO known_devices (token_hash, user_id, created_at, last_used_at, expires_at) VALUES ($1, $2, $3, $3, $4)",
    )
    .bind(&sha256(token.as_bytes())[..])
    .bind(user_id)
    .bind(now)
    .bind(now + DEVICE_LIFETIME)
    .execute(conn)
    .await?;
    Ok(token)
}

/// Whether `token` is a known device of `user_id`.
pub async fn is_known_device(
    conn: &mut PgConnection,
    user_id: UserId,
    token: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM known_devices WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3")
            .bind(&sha256(token.as_bytes())[..])
            .bind(user_id)
            .bind(now)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Whether `token` (a known-device cookie) is a live known device of the account with this
/// email: a device that signed in to it before. Used to give that device a sign-in budget of its
/// own (`abuse::limits`), so strangers sending the address can't lock its owner out.
pub async fn is_known_device_of_email(
    conn: &mut PgConnection,
    email: &str,
    token: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM known_devices d JOIN users u ON u.id = d.user_id \
         WHERE d.token_hash = $1 AND u.email = $2 AND d.expires_at > $3",
    )
    .bind(&sha256(token.as_bytes())[..])
    .bind(email)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// `Set-Cookie` for a `__Host-` cookie. `max_age: None` makes it a browser-session cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    let mut c = cookie::Cookie::build((name.to_string(), value.to_string()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Lax);
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.whole_seconds()));
    }
    c.build().to_string()
}

pub fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", Some(Duration::ZERO))
}
