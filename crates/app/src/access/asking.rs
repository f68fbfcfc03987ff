//! Who is asking, as the route guard resolved it once for this request: the signed-in user and,
//! on an organization's route or with an API key, the verified principal. The rate limiter keys
//! on it; handlers get the richer views their guard also inserted (the session, the
//! organization's display facts), all taken from this one resolution.

use super::OrgPrincipal;
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
