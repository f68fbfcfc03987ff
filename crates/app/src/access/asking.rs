//! Who is asking, as the route guard resolved it once for this request: the signed-in user and,
//! on an organization's route or with an API key, the verified principal. The rate limiter keys
//! on it; handlers get the richer views their guard also inserted (the session, the
//! organization's display facts), all taken from this one resolution.

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::OrgPrincipal;
use crate::platform::crypto::sha256;
use crate::platform::ids::UserId;

/// The request's verified asker (a request extension). Absent on public routes.
#[derive(Debug, Clone)]
pub struct Asking {
    /// The signed-in user (also the member behind an organization's principal).
    pub user: Option<UserId>,
    /// The principal acting in an organization: a member's, or an API key's.
    pub principal: Option<OrgPrincipal>,
}

impl Asking {
    pub fn user(user: UserId) -> Self {
        Self { user: Some(user), principal: None }
    }

    pub fn member(user: UserId, principal: OrgPrincipal) -> Self {
        Self { user: Some(user), principal: Some(principal) }
    }

    pub fn api_key(principal: OrgPrincipal) -> Self {
        Self { user: None, principal: Some(principal) }
    }
}

/// The cookie a browser keeps once it has signed in to an account: a known device.
pub const DEVICE_COOKIE: &str = "__Host-cf_device";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
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
