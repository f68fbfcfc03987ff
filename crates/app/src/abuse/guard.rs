//! The rate-limit step of the route guard: it enforces what a route declares (`abuse::limits`
//! has the policies and the limiter), before access for the keys a request carries and after
//! it for the principal's, and gives every response of a limited route its headers.

use std::net::IpAddr;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ratelimit::{Decision, Policy};
use crate::access::Asking;
use crate::access::asking::read_cookie;
use crate::access::session::{DEVICE_COOKIE, is_known_device_of_email};
use crate::platform::crypto::sha256_hex;
use crate::platform::http::error::{AppError, DomainError};
use crate::platform::http::middleware::ClientIp;
use crate::platform::net;
use crate::platform::types::Email;
use crate::state::AppState;

use super::limits::*;

/// The decisions taken for one request, for its response headers.
#[derive(Debug, Default)]
pub struct Applied {
    decisions: Vec<(Policy, Decision)>,
}

impl Applied {
    /// Adds `RateLimit-Policy` and `RateLimit` for each decision (one field line each, which
    /// is the same as one comma-separated list) and, after a refusal, `Retry-After`.
    pub fn decorate(self, mut res: Response) -> Response {
        for (policy, decision) in &self.decisions {
            for (name, value) in super::ratelimit::headers(policy, decision) {
                // Every character is visible ASCII by construction; a failure would only drop a hint.
                let Ok(value) = HeaderValue::from_str(&value) else { continue };
                let name = HeaderName::from_static(name);
                if name == header::RETRY_AFTER {
                    res.headers_mut().insert(name, value);
                } else {
                    res.headers_mut().append(name, value);
                }
            }
        }
        res
    }
}

/// Checks the limits keyed before authentication. `Err` is the 429 to send.
pub async fn enforce_before_access(
    state: &AppState,
    limits: &[Limit],
    req: Request,
    applied: &mut Applied,
) -> Result<Request, Response> {
    if !limits.iter().any(|l| l.key.before_authentication()) {
        return Ok(req);
    }
    let ip = client_ip(&req);
    // Addresses first: they need nothing from the body.
    for limit in limits.iter().filter(|l| l.key == KeyBy::ClientIp) {
        decide(state, limit.policy, &ip_key(ip), applied).await?;
    }
    let form_limits: Vec<&Limit> = limits.iter().filter(|l| l.key.form_field().is_some()).collect();
    if form_limits.is_empty() {
        return Ok(req);
    }
    let (req, fields) = read_form(state, req).await?;
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    for limit in form_limits {
        let key = match limit.key {
            KeyBy::FormEmail(f) => format!("email:{}", normalized_email(field(f))),
            KeyBy::FormEmailPerDevice(f) => {
                let email = normalized_email(field(f));
                match read_cookie(req.headers(), DEVICE_COOKIE) {
                    Some(device) if known_device(state, &email, &device).await => {
                        format!("email:{email}|device:{}", sha256_hex(device.as_bytes()))
                    }
                    _ => format!("email:{email}"),
                }
            }
            KeyBy::FormSecret(f) => format!("secret:{}", sha256_hex(field(f).as_bytes())),
            _ => continue,
        };
        decide(state, limit.policy, &key, applied).await?;
    }
    Ok(req)
}

/// Checks the limits keyed on the principal the access guard established, with the keys
/// [`principal_keys`] read from the request. (Two steps because a borrowed request can't be
/// held across an await by a future that must be `Send`: its body is not `Sync`.)
pub async fn enforce_after_access(
    state: &AppState,
    keys: Vec<(Limit, Option<String>)>,
    applied: &mut Applied,
) -> Result<(), Response> {
    for (limit, key) in keys {
        // A declaration the route's access can't satisfy is a programming error; refusing
        // the request beats quietly not limiting it.
        let Some(key) = key else {
            return Err(AppError::internal(format!(
                "route declares rate limit {} keyed by {:?}, which its access does not provide",
                limit.policy.name(),
                limit.key
            ))
            .into_response());
        };
        decide(state, limit.policy, &key, applied).await?;
    }
    Ok(())
}

/// The keys of the limits taken after authentication (`None`: the request has no such
/// principal).
pub fn principal_keys(limits: &[Limit], req: &Request) -> Vec<(Limit, Option<String>)> {
    let asking = req.extensions().get::<Asking>();
    limits
        .iter()
        .filter(|l| !l.key.before_authentication())
        .map(|limit| {
            let key = match limit.key {
                KeyBy::SessionUser => asking.and_then(|a| a.user).map(|u| format!("user:{u}")),
                KeyBy::ApiKey => asking
                    .and_then(|a| a.principal.as_ref())
                    .and_then(|p| p.api_key_id())
                    .map(|id| format!("api-key:{id}")),
                KeyBy::Organization => asking.and_then(|a| a.principal.as_ref()).map(|p| format!("org:{}", p.org_id())),
                _ => None,
            };
            (*limit, key)
        })
        .collect()
}

async fn decide(state: &AppState, id: PolicyId, key: &str, applied: &mut Applied) -> Result<(), Response> {
    let policy = *state.rate_limits.policy(id);
    let decision = state.rate_limits.limiter().check(&policy, key).await;
    state.metrics.observe_rate_limit(policy.name, decision.allowed);
    applied.decisions.push((policy, decision));
    if decision.allowed {
        return Ok(());
    }
    let wait = decision.retry_after.unwrap_or(decision.reset_after);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    tracing::info!(policy = policy.name, retry_after_secs = secs, "rate limited");
    Err(AppError::from(DomainError::Throttled {
        message: refusal(id).replace("{t}", &describe_wait(secs)),
        retry_after_secs: secs.max(1),
    })
    .into_response())
}

fn describe_wait(secs: u64) -> String {
    match secs {
        0..=1 => "a second".into(),
        2..=90 => format!("{secs} seconds"),
        _ => {
            let minutes = secs.div_ceil(60);
            if minutes == 1 { "a minute".into() } else { format!("{minutes} minutes") }
        }
    }
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ClientIp>().map(|c| c.0).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The key of a client address. An IPv6 client usually holds a whole /64 (its ISP hands out
/// prefixes, and privacy addresses rotate inside it), so it is counted by that prefix;
/// counting single IPv6 addresses would give every client 2^64 budgets.
pub fn ip_key(ip: IpAddr) -> String {
    match net::normalize_ip(ip) {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Whether a device cookie is one the account really signed in from. A made-up or stale
/// cookie (or a database error) counts as no device: the request shares the address's budget.
async fn known_device(state: &AppState, email: &str, device: &str) -> bool {
    let Ok(mut conn) = state.db.global().await else { return false };
    let known = is_known_device_of_email(&mut conn, email, device, state.clock.now()).await;
    let _ = conn.commit().await;
    known.unwrap_or(false)
}

fn normalized_email(raw: &str) -> String {
    Email::parse(raw).map(|e| e.as_str().to_string()).unwrap_or_else(|_| raw.trim().to_lowercase())
}

/// The fields of a URL-encoded form body, with the request rebuilt around the same bytes.
async fn read_form(state: &AppState, req: Request) -> Result<(Request, Vec<(String, String)>), Response> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((req, Vec::new()));
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, state.config.server.body_limit_bytes)
        .await
        .map_err(|_| AppError::PayloadTooLarge.into_response())?;
    let fields = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((Request::from_parts(parts, Body::from(bytes)), fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_v4_as_v4() {
        assert_eq!(ip_key("203.0.113.9".parse().unwrap()), "ip:203.0.113.9");
        assert_eq!(ip_key("::ffff:203.0.113.9".parse().unwrap()), "ip:203.0.113.9");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()), ip_key("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn waits_read_naturally() {
        assert_eq!(describe_wait(1), "a second");
        assert_eq!(describe_wait(42), "42 seconds");
        assert_eq!(describe_wait(100), "2 minutes");
        assert_eq!(describe_wait(60 * 15), "15 minutes");
    }
}
