//! The disclosure section of the configuration: `[disclosure]`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::platform::config::ConfigError;
use crate::platform::types::Email;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisclosureConfig {
    /// security.txt `Contact:` lines, most preferred first: `mailto:` or `https:` URIs.
    /// Empty: the report form (`{public_url}/security/report`) is the contact.
    pub contact: Vec<String>,
    /// Addresses told about each new report (through the mail outbox). Empty: the `mailto:`
    /// contacts.
    pub notify: Vec<String>,
    /// security.txt `Expires:` (RFC 3339). Unset: `expires_days` after each request, so the
    /// file never goes stale but says nothing about when it was last reviewed; `clientflow
    /// doctor` warns 30 days before a set date.
    pub expires: Option<String>,
    pub expires_days: i64,
    /// security.txt `Policy:`. Unset: the disclosure section of `/security`.
    pub policy_url: Option<String>,
    /// security.txt `Preferred-Languages:` (language tags).
    pub preferred_languages: Vec<String>,
    /// Where the source code is browsable (e.g. `https://github.com/acme/clientflow/blob/main`):
    /// the security page then links each claim's tests to their files. Unset: the page names
    /// the file and the command that runs the test.
    pub source_url: Option<String>,
    /// The name of the region this installation's data lives in (one database, one region).
    pub region: String,
    /// Longest report text accepted.
    pub report_max_chars: usize,
}

impl Default for DisclosureConfig {
    fn default() -> Self {
        Self {
            contact: Vec::new(),
            notify: Vec::new(),
            expires: None,
            expires_days: 90,
            policy_url: None,
            preferred_languages: vec!["en".into()],
            source_url: None,
            region: "the operator's data center (not named)".into(),
            report_max_chars: 20_000,
        }
    }
}

impl DisclosureConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for c in &self.contact {
            let ok = match c.split_once(':') {
                Some(("mailto", addr)) => Email::parse(addr).is_ok(),
                Some(("https", _)) => url::Url::parse(c).is_ok(),
                Some(("tel", rest)) => !rest.is_empty() && rest.chars().all(|ch| ch == '+' || ch.is_ascii_digit()),
                _ => false,
            };
            if !ok {
                return Err(ConfigError::invalid(
                    "disclosure.contact",
                    format!("{c:?} is not a mailto:, https: or tel: URI (RFC 9116 Contact)"),
                ));
            }
        }
        for n in &self.notify {
            if Email::parse(n).is_err() {
                return Err(ConfigError::invalid("disclosure.notify", format!("{n:?} is not an email address")));
            }
        }
        if let Some(e) = &self.expires {
            OffsetDateTime::parse(e, &Rfc3339).map_err(|_| {
                ConfigError::invalid(
                    "disclosure.expires",
                    "must be an RFC 3339 date and time, e.g. 2027-01-31T00:00:00Z",
                )
            })?;
        }
        if !(1..=365).contains(&self.expires_days) {
            return Err(ConfigError::invalid(
                "disclosure.expires_days",
                "must be between 1 and 365 (RFC 9116 advises less than a year)",
            ));
        }
        for (setting, url) in [("disclosure.policy_url", &self.policy_url), ("disclosure.source_url", &self.source_url)]
        {
            if let Some(u) = url
                && !url::Url::parse(u).is_ok_and(|u| u.scheme() == "https")
            {
                return Err(ConfigError::invalid(setting, "must be an https:// URL"));
            }
        }
        if self
            .preferred_languages
            .iter()
            .any(|l| l.is_empty() || l.len() > 35 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(ConfigError::invalid("disclosure.preferred_languages", "must be language tags such as en, de"));
        }
        if self.region.trim().is_empty() || self.region.len() > 100 {
            return Err(ConfigError::invalid("disclosure.region", "must be a name of at most 100 characters"));
        }
        if !(100..=100_000).contains(&self.report_max_chars) {
            return Err(ConfigError::invalid("disclosure.report_max_chars", "must be between 100 and 100000"));
        }
        Ok(())
    }

    /// The set `Expires:` date, if any.
    pub fn pinned_expiry(&self) -> Option<OffsetDateTime> {
        self.expires.as_deref().and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
    }

    /// Who is told about a new report.
    pub fn notify_addresses(&self) -> Vec<String> {
        if !self.notify.is_empty() {
            return self.notify.clone();
        }
        self.contact.iter().filter_map(|c| c.strip_prefix("mailto:")).map(str::to_string).collect()
    }
}
