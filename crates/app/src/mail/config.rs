//! The mail area's configuration section: `[mail]`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::platform::config::ConfigError;
use crate::platform::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailTransport {
    /// Messages are written under `<data_dir>/mail`; read them with `clientflow mail`.
    Maildrop,
    /// Messages are sent through `mail.smtp_url`.
    Smtp,
    /// Messages are posted to Resend's HTTP API (`mail.resend_api_key`).
    Resend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `From:` of every message.
    pub from: String,
    /// `smtps://user:pass@host:465` (implicit TLS) or `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS). Plain `smtp://` is accepted only for a relay on this machine.
    pub smtp_url: Option<Secret>,
    /// Resend API key (`re_…`), sent as a bearer token.
    pub resend_api_key: Option<Secret>,
    /// Resend's API; another address only for a compatible local server (tests).
    pub resend_base_url: String,
    /// Signing secret of the Resend webhook (`whsec_…`). Unset: `POST /webhooks/resend` refuses
    /// everything.
    pub resend_webhook_secret: Option<Secret>,
    /// Attempts before a message is dead (`clientflow mail list --state dead`).
    pub max_attempts: i32,
    /// First retry delay; each further one doubles (with jitter) up to `retry_max_secs`.
    pub retry_base_secs: i64,
    pub retry_max_secs: i64,
    /// How long an unsubscribe link works.
    pub unsubscribe_days: i64,
    /// An address for `mailto:` unsubscribe requests (RFC 2369), offered in
    /// `List-Unsubscribe` beside the one-click link. Unset: the link alone.
    pub unsubscribe_mailto: Option<String>,
    /// Soft bounces within `soft_bounce_window_hours` that suppress an address.
    pub soft_bounce_limit: i64,
    pub soft_bounce_window_hours: i64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            transport: MailTransport::Maildrop,
            from: "ClientFlow <no-reply@localhost>".into(),
            smtp_url: None,
            resend_api_key: None,
            resend_base_url: "https://api.resend.com".into(),
            resend_webhook_secret: None,
            max_attempts: 10,
            retry_base_secs: 30,
            retry_max_secs: 6 * 3600,
            unsubscribe_days: 60,
            unsubscribe_mailto: None,
            soft_bounce_limit: 3,
            soft_bounce_window_hours: 72,
        }
    }
}

impl MailConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.transport == MailTransport::Resend && self.resend_api_key.is_none() {
            return Err(ConfigError::invalid("mail.resend_api_key", "is required when mail.transport = \"resend\""));
        }
        if self.transport == MailTransport::Smtp && self.smtp_url.is_none() {
            return Err(ConfigError::invalid("mail.smtp_url", "is required when mail.transport = \"smtp\""));
        }
        let base = url::Url::parse(&self.resend_base_url)
            .map_err(|e| ConfigError::invalid("mail.resend_base_url", format!("is not a URL: {e}")))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(ConfigError::invalid("mail.resend_base_url", "must be an https:// URL"));
        }
        if let Some(secret) = &self.resend_webhook_secret
            && decode_secret(secret.expose()).is_none()
        {
            return Err(ConfigError::invalid(
                "mail.resend_webhook_secret",
                "must be the whsec_… signing secret shown with the webhook in Resend",
            ));
        }
        if self.max_attempts < 1 {
            return Err(ConfigError::invalid("mail.max_attempts", "must be at least 1"));
        }
        if self.retry_base_secs < 1 || self.retry_max_secs < self.retry_base_secs {
            return Err(ConfigError::invalid(
                "mail.retry_base_secs",
                "must be at least 1, and mail.retry_max_secs at least as much",
            ));
        }
        if !(1..=3650).contains(&self.unsubscribe_days) {
            return Err(ConfigError::invalid("mail.unsubscribe_days", "must be between 1 and 3650"));
        }
        if let Some(m) = &self.unsubscribe_mailto
            && crate::platform::types::Email::parse(m).is_err()
        {
            return Err(ConfigError::invalid("mail.unsubscribe_mailto", "must be an email address"));
        }
        if self.soft_bounce_limit < 1 || self.soft_bounce_window_hours < 1 {
            return Err(ConfigError::invalid(
                "mail.soft_bounce_limit",
                "mail.soft_bounce_limit and mail.soft_bounce_window_hours must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The key bytes of a `whsec_…` secret (the webhook's signing key: `mail::webhook`).
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.trim().strip_prefix("whsec_")?;
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}
