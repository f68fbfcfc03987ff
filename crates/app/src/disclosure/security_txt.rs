//! `/.well-known/security.txt` (RFC 9116), from the `[disclosure]` configuration: where to
//! report a vulnerability (`Contact`, required), until when the file holds (`Expires`,
//! required, at most a year ahead), the disclosure policy, the languages reports are read in,
//! and the file's own address (`Canonical`). `clientflow doctor` warns 30 days before a set
//! `Expires`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::access::route::{Access, RouteDef, Surface};
use crate::config::Config;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/.well-known/security.txt", Surface::Web, Access::Public, security_txt),
        // RFC 9116 §3: a file at the top level is for legacy compatibility; the same content.
        route!(GET "/security.txt", Surface::Web, Access::Public, security_txt),
    ]
}

/// The date `Expires` says at `now`: the configured one, or `expires_days` ahead.
pub fn expires(config: &Config, now: OffsetDateTime) -> OffsetDateTime {
    config
        .disclosure
        .pinned_expiry()
        .unwrap_or_else(|| now + time::Duration::days(config.disclosure.expires_days))
        .replace_nanosecond(0)
        .unwrap_or(now)
}

/// The `Contact:` URIs, most preferred first (the report form when none is configured).
pub fn contacts(config: &Config) -> Vec<String> {
    if config.disclosure.contact.is_empty() {
        vec![format!("{}/security/report", config.public_url())]
    } else {
        config.disclosure.contact.clone()
    }
}

/// The policy's address.
pub fn policy_url(config: &Config) -> String {
    config.disclosure.policy_url.clone().unwrap_or_else(|| format!("{}/security#disclosure", config.public_url()))
}

/// The file's text.
pub fn render(config: &Config, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let public = config.public_url();
    out.push_str(&format!("# Security contacts and policy of the ClientFlow installation at {public}\n"));
    out.push_str(&format!("# Reports through the form: {public}/security/report\n"));
    for c in contacts(config) {
        out.push_str(&format!("Contact: {c}\n"));
    }
    let expires = expires(config, now).to_offset(time::UtcOffset::UTC);
    out.push_str(&format!("Expires: {}\n", expires.format(&Rfc3339).unwrap_or_default()));
    out.push_str(&format!("Policy: {}\n", policy_url(config)));
    if !config.disclosure.preferred_languages.is_empty() {
        out.push_str(&format!("Preferred-Languages: {}\n", config.disclosure.preferred_languages.join(", ")));
    }
    out.push_str(&format!("Canonical: {public}/.well-known/security.txt\n"));
    out
}

async fn security_txt(State(state): State<AppState>) -> Response {
    let mut res = render(&state.config, state.clock.now()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    super::cacheable(res)
}

/// What `doctor` says about the file: `Ok(detail)`, or `Err((fatal, detail))`.
pub fn doctor_check(config: &Config, now: OffsetDateTime) -> Result<String, (bool, String)> {
    match config.disclosure.pinned_expiry() {
        None => Ok(format!(
            "Expires is {} days after each request (set disclosure.expires to a date you will review it by)",
            config.disclosure.expires_days
        )),
        Some(at) if at <= now => Err((
            true,
            format!("Expires ({}) has passed: review the contacts and set a new disclosure.expires", at.date()),
        )),
        Some(at) if at - now <= time::Duration::days(30) => Err((
            false,
            format!(
                "Expires ({}) is in {} days: review the contacts and set a new disclosure.expires",
                at.date(),
                (at - now).whole_days()
            ),
        )),
        Some(at) if at - now > time::Duration::days(366) => {
            Err((false, format!("Expires ({}) is more than a year away; RFC 9116 advises less", at.date())))
        }
        Some(at) => Ok(format!("Expires {} ({} days from now)", at.date(), (at - now).whole_days())),
    }
}
