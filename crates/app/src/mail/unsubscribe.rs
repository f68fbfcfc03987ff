//! Unsubscribe links (RFC 8058 one-click, RFC 2369 `List-Unsubscribe`).
//!
//! A token names one address and one category and carries its expiry, sealed with AES-256-GCM
//! under a key derived from the master key: authenticated (an altered token opens to nothing)
//! and opaque (the address does not appear in the URL, so it stays out of proxies' logs and
//! browser history). The token is the whole authorization of `/u/{token}`: mail clients post
//! to it with no cookie and no CSRF token, as RFC 8058 requires, and a forged request needs the
//! token, which only the recipient's mailbox has.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};

use super::category::Category;
use crate::platform::seal::Sealer;

const CONTEXT: &str = "clientflow unsubscribe v1";

/// Makes and opens unsubscribe tokens, and renders the links and headers that carry them.
#[derive(Clone)]
pub struct Links {
    sealer: Sealer,
    public_url: String,
    lifetime: Duration,
    mailto: Option<String>,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub address: String,
    pub category: Category,
    pub expires: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Altered, truncated, made with another key, or not a token at all.
    Invalid,
    Expired,
}

impl Links {
    pub fn new(key: &[u8; 32], public_url: &str, lifetime: Duration, mailto: Option<String>) -> Self {
        Self {
            sealer: Sealer::from_key(key),
            public_url: public_url.trim_end_matches('/').to_string(),
            lifetime,
            mailto,
        }
    }

    /// A token for `category` mail to `address`, valid from `now` for the configured lifetime.
    pub fn token(&self, address: &str, category: Category, now: OffsetDateTime) -> String {
        let expires = (now + self.lifetime).unix_timestamp();
        let plain = format!("{}\n{}\n{expires}", super::suppression::normalise(address), category.as_str());
        URL_SAFE_NO_PAD.encode(self.sealer.seal(plain.as_bytes(), CONTEXT))
    }

    pub fn open(&self, token: &str, now: OffsetDateTime) -> Result<Subscription, TokenError> {
        if token.len() > 1024 {
            return Err(TokenError::Invalid);
        }
        let sealed = URL_SAFE_NO_PAD.decode(token.as_bytes()).map_err(|_| TokenError::Invalid)?;
        let plain = self.sealer.open(&sealed, CONTEXT).map_err(|_| TokenError::Invalid)?;
        let plain = String::from_utf8(plain).map_err(|_| TokenError::Invalid)?;
        let mut parts = plain.split('\n');
        let (Some(address), Some(category), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let category = Category::parse(category).ok_or(TokenError::Invalid)?;
        let expires = expires
            .parse::<i64>()
            .ok()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .ok_or(TokenError::Invalid)?;
        if category == Category::Critical {
            return Err(TokenError::Invalid);
        }
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Subscription { address: address.to_string(), category, expires })
    }

    pub fn url(&self, token: &str) -> String {
        format!("{}/u/{token}", self.public_url)
    }

    /// `List-Unsubscribe` for a message, or `None` for critical mail, which nobody can
    /// unsubscribe from. Returns (the header's value, the https link).
    pub fn header(&self, address: &str, category: Category, now: OffsetDateTime) -> Option<(String, String)> {
        if category == Category::Critical {
            return None;
        }
        let token = self.token(address, category, now);
        let url = self.url(&token);
        let value = match &self.mailto {
            Some(m) => format!("<{url}>, <mailto:{m}?subject=unsubscribe%20{token}>"),
            None => format!("<{url}>"),
        };
        Some((value, url))
    }
}

/// The value of `List-Unsubscribe-Post` (RFC 8058 §3.1).
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links::new(&[7u8; 32], "https://cf.example/", Duration::days(60), None)
    }

    #[test]
    fn a_token_opens_to_what_it_was_made_for_until_it_expires() {
        let now = OffsetDateTime::now_utc();
        let l = links();
        let t = l.token("Ann@Example.com", Category::Marketing, now);
        assert!(!t.contains("ann"), "the address is not readable in the token");
        let s = l.open(&t, now + Duration::days(59)).unwrap();
        assert_eq!((s.address.as_str(), s.category), ("ann@example.com", Category::Marketing));
        assert_eq!(l.open(&t, now + Duration::days(60)), Err(TokenError::Expired));
        let other = Links::new(&[8u8; 32], "https://cf.example", Duration::days(60), None);
        assert_eq!(other.open(&t, now), Err(TokenError::Invalid));
        let mut bytes = t.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(l.open(&String::from_utf8(bytes).unwrap(), now), Err(TokenError::Invalid));
        assert!(l.header("ann@example.com", Category::Critical, now).is_none());
        assert!(
            l.header("ann@example.com", Category::Transactional, now).unwrap().0.starts_with("<https://cf.example/u/")
        );
    }
}
