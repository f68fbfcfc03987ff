//! The bot check on web forms: what a form template renders ([`BotCheckView`]), the check of a
//! submitted form ([`verify_form`]) and the Content-Security-Policy a Turnstile page needs.
//!
//! A form with a bot check renders, with a fresh proof-of-work challenge on every render (an
//! error re-render included, since a challenge is single use):
//!
//! ```text
//! {% block head %}{% include "abuse/bot_check_head.html" %}{% endblock %}
//! <form … {% include "abuse/bot_check_form_attr.html" %}>
//!   {% include "abuse/bot_check_fields.html" %}
//! ```
//!
//! and its handler calls [`verify_form`] before any expensive work (a password hash, a write):
//! the check exists to make bulk submissions cost the sender, not us.

use std::net::IpAddr;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use super::botcheck::{BotCheck, BotCheckError, BotCheckFields, Purpose, Widget};
use crate::platform::http::middleware::CONTENT_SECURITY_POLICY;
use crate::state::AppState;

/// Where Cloudflare serves the Turnstile script and its challenge frame.
pub const TURNSTILE_ORIGIN: &str = "https://challenges.cloudflare.com";

/// What a form's template needs for its bot check.
#[derive(Debug, Clone)]
pub struct BotCheckView {
    /// Proof of work: the signed challenge (on the form as `data-pow-challenge` and in a hidden
    /// field); `/static/pow.js` solves it on submit.
    pub pow_challenge: Option<String>,
    /// Turnstile: the public site key of the widget.
    pub turnstile_site_key: Option<String>,
    /// The Turnstile action (also the challenge's purpose).
    pub action: &'static str,
}

impl BotCheckView {
    /// A fresh widget for a form (issues a new challenge for proof of work).
    pub fn new(check: &BotCheck, purpose: Purpose) -> Self {
        match check.widget(purpose) {
            Widget::ProofOfWork { challenge, .. } => {
                Self { pow_challenge: Some(challenge), turnstile_site_key: None, action: purpose.as_str() }
            }
            Widget::Turnstile { site_key, action } => {
                Self { pow_challenge: None, turnstile_site_key: Some(site_key), action }
            }
        }
    }
}

/// The bot-check fields of a submitted form, as sent by `pow.js` or the Turnstile widget.
/// Flattening [`BotCheckFields`] into a form with `deny_unknown_fields` is not possible with
/// serde, so forms list these three fields and convert.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubmittedProof {
    #[serde(rename = "cf-turnstile-response", default)]
    pub turnstile_response: Option<String>,
    #[serde(default)]
    pub pow_challenge: Option<String>,
    #[serde(default)]
    pub pow_solution: Option<String>,
}

impl From<SubmittedProof> for BotCheckFields {
    fn from(p: SubmittedProof) -> Self {
        BotCheckFields {
            turnstile_response: p.turnstile_response,
            pow_challenge: p.pow_challenge,
            pow_solution: p.pow_solution,
        }
    }
}

/// Checks the proof a form carried, logging why a refusal happened (the user only ever sees the
/// generic message of [`BotCheckError::user_message`]).
pub async fn verify_form(
    state: &AppState,
    proof: SubmittedProof,
    client_ip: IpAddr,
    purpose: Purpose,
) -> Result<(), BotCheckError> {
    let result = state.bot_check.verify(&proof.into(), client_ip, purpose).await;
    if let Err(e) = &result {
        tracing::info!(purpose = purpose.as_str(), reason = %e, "bot check refused a form");
    }
    result
}

/// The site's policy with Cloudflare allowed to serve the Turnstile script and frame, for the
/// pages that show the widget (and only those: every other page keeps the strict policy).
pub fn turnstile_csp() -> String {
    CONTENT_SECURITY_POLICY
        .replace("script-src 'self';", &format!("script-src 'self' {TURNSTILE_ORIGIN}; frame-src {TURNSTILE_ORIGIN};"))
}

/// Gives a page that renders the bot-check widget the policy the widget needs: nothing for
/// proof of work (`pow.js` is one of our own files), Cloudflare's origin for Turnstile.
pub fn with_widget_policy(state: &AppState, mut res: Response) -> Response {
    if matches!(state.bot_check, BotCheck::Turnstile(_))
        && let Ok(v) = HeaderValue::from_str(&turnstile_csp())
    {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turnstile_policy_adds_only_cloudflare_script_and_frame() {
        let csp = turnstile_csp();
        assert!(csp.contains("script-src 'self' https://challenges.cloudflare.com;"), "{csp}");
        assert!(csp.contains("frame-src https://challenges.cloudflare.com;"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(
            csp.replace(" https://challenges.cloudflare.com", "").replace(" frame-src;", ""),
            CONTENT_SECURITY_POLICY
        );
    }
}
