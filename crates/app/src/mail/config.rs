//! The mail area's configuration section: `[mail]`.

use serde::{Deserialize, Serialize};

use crate::platform::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailTransport {
    /// Messages are written under `<data_dir>/mail`; read them with `clientflow mail`.
    Maildrop,
    /// Messages are sent through `mail.smtp_url`.
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `From:` of every message.
    pub from: String,
    /// `smtps://user:pass@host:465` (implicit TLS) or `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS). Plain `smtp://` is accepted only for a relay on this machine.
    pub smtp_url: Option<Secret>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self { transport: MailTransport::Maildrop, from: "ClientFlow <no-reply@localhost>".into(), smtp_url: None }
    }
}
