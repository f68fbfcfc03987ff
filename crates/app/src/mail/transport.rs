//! Where mail goes: the local mail drop (default) or SMTP.

use std::path::{Path, PathBuf};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::MailTransport;
use super::outbox::QueuedMail;
use crate::config::Config;

#[derive(Debug, Clone)]
pub struct SendError {
    /// Worth retrying (connection trouble, 4xx) as opposed to permanent (5xx, bad address).
    pub transient: bool,
    pub message: String,
}

#[derive(Clone)]
pub enum Transport {
    /// RFC 5322 files under a directory, for the operator to read (`clientflow mail`).
    Maildrop {
        dir: PathBuf,
        from: Mailbox,
    },
    Smtp {
        smtp: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl Transport {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let from: Mailbox = config
            .mail
            .from
            .parse()
            .map_err(|e| format!("mail.from is not a valid mailbox ({e}): use \"Name <address@example.com>\""))?;
        match config.mail.transport {
            MailTransport::Maildrop => Ok(Transport::Maildrop { dir: maildrop_dir(&config.data_dir), from }),
            MailTransport::Smtp => {
                let url = config.mail.smtp_url.as_ref().ok_or("mail.smtp_url is not set")?;
                require_tls(url.expose())?;
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| format!("mail.smtp_url: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(20)))
                    .build();
                Ok(Transport::Smtp { smtp, from })
            }
        }
    }

    fn message(from: &Mailbox, mail: &QueuedMail) -> Result<Message, SendError> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| SendError { transient: false, message: format!("bad recipient: {e}") })?;
        let domain = from.email.domain().to_string();
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(&mail.subject)
            .message_id(Some(format!("<{}@{}>", mail.id, domain)))
            .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(plain_body(&mail.body_text)))
            .map_err(|e| SendError { transient: false, message: format!("cannot build message: {e}") })
    }

    /// Sends one message; returns the provider's message id when there is one.
    pub async fn send(&self, mail: &QueuedMail) -> Result<Option<String>, SendError> {
        match self {
            Transport::Maildrop { dir, from } => {
                let message = Self::message(from, mail)?;
                let name = format!("{}.eml", mail.id);
                let write = || -> std::io::Result<()> {
                    std::fs::create_dir_all(dir)?;
                    let tmp = dir.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, message.formatted())?;
                    std::fs::rename(&tmp, dir.join(&name))
                };
                write().map_err(|e| SendError { transient: true, message: format!("mail drop: {e}") })?;
                Ok(Some(name))
            }
            Transport::Smtp { smtp, from } => {
                let message = Self::message(from, mail)?;
                match smtp.send(message).await {
                    Ok(response) => Ok(response.message().next().map(str::to_string)),
                    Err(e) => {
                        Err(SendError { transient: e.is_transient() || !e.is_permanent(), message: e.to_string() })
                    }
                }
            }
        }
    }
}

/// The text body. Links must arrive on one line: RFC 5322 allows 998-character lines, so a
/// body whose lines all fit goes as 8bit (lettre's chooser would pick quoted-printable past
/// 76 characters and break long links with soft line breaks); anything else is left to
/// lettre's encoder.
fn plain_body(text: &str) -> Body {
    let text = crlf(text);
    let fits = text.split("\r\n").all(|line| line.len() < 998) && !text.contains('\0');
    if fits {
        Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::EightBit)
    } else {
        Body::new(text)
    }
}

/// Message bodies travel with CRLF line ends (RFC 5322).
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n")
}

/// SMTP credentials and mail content must not cross a network in the clear: `smtps://` or
/// `smtp://…?tls=required`, except to a relay on this machine.
fn require_tls(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("mail.smtp_url: {e}"))?;
    let tls_required = parsed.scheme() == "smtps" || parsed.query_pairs().any(|(k, v)| k == "tls" && v == "required");
    let local = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // `smtp:` is not a special scheme, so even an IP address arrives as an opaque host.
        Some(url::Host::Domain(d)) => {
            d == "localhost" || d.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    };
    if tls_required || local {
        Ok(())
    } else {
        Err("mail.smtp_url must use TLS: smtps://host:465, or smtp://host:587?tls=required \
             (plain SMTP is allowed only to a relay on this machine)"
            .into())
    }
}

pub fn maildrop_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("mail")
}

/// The messages in the mail drop, oldest first: (file name, raw message).
pub fn read_maildrop(data_dir: &Path) -> Vec<(String, String)> {
    let dir = maildrop_dir(data_dir);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with(".eml") || name.starts_with('.') {
                return None;
            }
            std::fs::read_to_string(e.path()).ok().map(|body| (name, body))
        })
        .collect();
    // UUIDv7 names sort by creation time.
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::require_tls;

    #[test]
    fn smtp_needs_tls_off_this_machine() {
        assert!(require_tls("smtps://u:p@mail.example.com:465").is_ok());
        assert!(require_tls("smtp://u:p@mail.example.com:587?tls=required").is_ok());
        assert!(require_tls("smtp://127.0.0.1:2525").is_ok());
        assert!(require_tls("smtp://localhost:25").is_ok());
        assert!(require_tls("smtp://u:p@mail.example.com:587").is_err());
        assert!(require_tls("smtp://u:p@mail.example.com:587?tls=opportunistic").is_err());
    }
}
