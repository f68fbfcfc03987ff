//! Where mail goes: the local mail drop (default), SMTP, or Resend's HTTP API.
//!
//! Every transport sends the same [`Envelope`]: a text and an HTML part, `Message-ID`, `Date`,
//! and for mail that may be unsubscribed from, `List-Unsubscribe` with
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). How a failure is classified
//! decides what the worker does: retry later ([`SendError::transient`], honouring a provider's
//! `Retry-After`), give up at once, or give up and suppress the address
//! ([`SendError::hard_bounce`]: the receiving server refused the recipient for good).

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Message, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::config::{MailConfig, MailTransport};
use crate::platform::secret::Secret;
use crate::platform::subprocessor::SubProcessor;

#[derive(Debug, Clone)]
pub struct SendError {
    /// Worth retrying (connection trouble, SMTP 4xx, HTTP 429 and 5xx) as opposed to permanent.
    pub transient: bool,
    /// The provider said when to try again (`Retry-After`).
    pub retry_after: Option<StdDuration>,
    /// The receiving server refused the recipient for good (an SMTP 5xx about the mailbox):
    /// the address is suppressed as a hard bounce.
    pub hard_bounce: bool,
    pub message: String,
}

impl SendError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { transient: false, retry_after: None, hard_bounce: false, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self { transient: true, retry_after: None, hard_bounce: false, message: message.into() }
    }
}

/// One message, ready for any transport.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: Uuid,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub date: OffsetDateTime,
    /// `List-Unsubscribe`'s value; `None` for critical mail.
    pub list_unsubscribe: Option<String>,
    /// Files sent along (an invoice's PDF): a `multipart/mixed` message over SMTP, Resend's
    /// `attachments` over its API.
    pub attachments: Vec<Attachment>,
}

/// The most one attachment may weigh. An invoice's PDF is a few kilobytes; the cap keeps a
/// message well inside what relays accept (often 10 to 25 MiB, after base64's third more) and
/// Resend's 40 MB.
pub const MAX_ATTACHMENT_BYTES: usize = 5 * 1024 * 1024;
/// The most attachments one message carries.
pub const MAX_ATTACHMENTS: usize = 2;

/// A file sent with a message. Built only through [`Attachment::new`], which checks it: a
/// plain file name (it goes into a MIME header and a JSON field), a `type/subtype` content
/// type, and 1 byte to [`MAX_ATTACHMENT_BYTES`].
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attachment {
    filename: String,
    content_type: String,
    content: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("bytes", &self.content.len())
            .finish()
    }
}

/// Why a file can't be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentRefused {
    TooLarge { bytes: usize },
    Empty,
    BadName,
    BadContentType,
}

impl std::fmt::Display for AttachmentRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { bytes } => {
                write!(f, "{bytes} bytes is more than an attachment may weigh ({MAX_ATTACHMENT_BYTES})")
            }
            Self::Empty => f.write_str("an attachment can't be empty"),
            Self::BadName => f.write_str("an attachment's name is letters, digits, '.', '-' and '_' (at most 100)"),
            Self::BadContentType => f.write_str("an attachment's content type is type/subtype in lower case"),
        }
    }
}

impl Attachment {
    pub fn new(filename: &str, content_type: &str, content: Vec<u8>) -> Result<Self, AttachmentRefused> {
        let name_ok = (1..=100).contains(&filename.len())
            && filename.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && filename.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err(AttachmentRefused::BadName);
        }
        let type_ok = content_type.split_once('/').is_some_and(|(t, s)| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_lowercase())
                && (1..=100).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-'))
        });
        if !type_ok {
            return Err(AttachmentRefused::BadContentType);
        }
        if content.is_empty() {
            return Err(AttachmentRefused::Empty);
        }
        if content.len() > MAX_ATTACHMENT_BYTES {
            return Err(AttachmentRefused::TooLarge { bytes: content.len() });
        }
        Ok(Self { filename: filename.to_string(), content_type: content_type.to_string(), content })
    }

    pub fn filename(&self) -> &str {
        &self.filename
    }

    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    pub fn content(&self) -> &[u8] {
        &self.content
    }
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
    /// `POST {base}/emails` with the API key as bearer token and the outbox id as
    /// `Idempotency-Key`, so a retried send (after a timeout, or a worker killed before it
    /// recorded the answer) is delivered once.
    Resend {
        client: reqwest::Client,
        base: String,
        key: Secret,
        from: Mailbox,
    },
}

impl Transport {
    pub fn from_config(mail: &MailConfig, data_dir: &Path) -> Result<Self, String> {
        let from: Mailbox = mail
            .from
            .parse()
            .map_err(|e| format!("mail.from is not a valid mailbox ({e}): use \"Name <address@example.com>\""))?;
        match mail.transport {
            MailTransport::Maildrop => Ok(Transport::Maildrop { dir: maildrop_dir(data_dir), from }),
            MailTransport::Smtp => {
                let url = mail.smtp_url.as_ref().ok_or("mail.smtp_url is not set")?;
                require_tls(url.expose())?;
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| format!("mail.smtp_url: {e}"))?
                    .timeout(Some(StdDuration::from_secs(20)))
                    .build();
                Ok(Transport::Smtp { smtp, from })
            }
            MailTransport::Resend => {
                let key = mail.resend_api_key.clone().ok_or("mail.resend_api_key is not set")?;
                let client = reqwest::Client::builder()
                    .timeout(StdDuration::from_secs(20))
                    .user_agent(concat!("clientflow/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                Ok(Transport::resend(client, &mail.resend_base_url, key, from))
            }
        }
    }

    /// The Resend transport with a given HTTP client (the benchmark compares it with posting
    /// through the same client directly).
    pub fn resend(client: reqwest::Client, base: &str, key: Secret, from: Mailbox) -> Self {
        Transport::Resend { client, base: base.trim_end_matches('/').to_string(), key, from }
    }

    pub fn from_address(&self) -> &Mailbox {
        match self {
            Transport::Maildrop { from, .. } | Transport::Smtp { from, .. } | Transport::Resend { from, .. } => from,
        }
    }

    /// `<outbox id@sender's domain>`.
    pub fn message_id(&self, id: Uuid) -> String {
        format!("<{id}@{}>", self.from_address().email.domain())
    }

    fn message(&self, mail: &Envelope) -> Result<Message, SendError> {
        let from = self.from_address();
        let to: Mailbox = mail.to.parse().map_err(|e| SendError::permanent(format!("bad recipient: {e}")))?;
        let mut builder = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(&mail.subject)
            .date(mail.date.into())
            .message_id(Some(self.message_id(mail.id)));
        if let Some(value) = &mail.list_unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), value.clone()))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    super::unsubscribe::ONE_CLICK.to_string(),
                ));
        }
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(plain_body(&mail.text)))
            .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(plain_body(&mail.html)));
        let body = if mail.attachments.is_empty() {
            alternative
        } else {
            // multipart/mixed: the readable message first, then each file (base64, named in
            // Content-Disposition: attachment).
            let mut mixed = MultiPart::mixed().multipart(alternative);
            for a in &mail.attachments {
                let content_type = ContentType::parse(&a.content_type)
                    .map_err(|e| SendError::permanent(format!("attachment content type: {e}")))?;
                mixed = mixed.singlepart(
                    lettre::message::Attachment::new(a.filename.clone()).body(a.content.clone(), content_type),
                );
            }
            mixed
        };
        builder.multipart(body).map_err(|e| SendError::permanent(format!("cannot build message: {e}")))
    }

    /// Sends one message; returns the provider's message id when there is one.
    pub async fn send(&self, mail: &Envelope) -> Result<Option<String>, SendError> {
        match self {
            Transport::Maildrop { dir, .. } => {
                let message = self.message(mail)?;
                let name = format!("{}.eml", mail.id);
                let write = || -> std::io::Result<()> {
                    std::fs::create_dir_all(dir)?;
                    let tmp = dir.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, message.formatted())?;
                    std::fs::rename(&tmp, dir.join(&name))
                };
                write().map_err(|e| SendError::transient(format!("mail drop: {e}")))?;
                Ok(Some(name))
            }
            Transport::Smtp { smtp, .. } => {
                let message = self.message(mail)?;
                match smtp.send(message).await {
                    Ok(response) => Ok(response.message().next().map(str::to_string)),
                    Err(e) => Err(smtp_error(&e)),
                }
            }
            Transport::Resend { client, base, key, from } => resend_send(client, base, key, from, mail).await,
        }
    }
}

/// SMTP replies: 4xx and connection trouble are retried; a 5xx is permanent, and counts as a
/// hard bounce unless it is about us rather than the recipient (authentication, message size).
fn smtp_error(e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(u16::from);
    if e.is_permanent() {
        let about_us = matches!(code, Some(530 | 534 | 535 | 538 | 552));
        SendError { transient: false, retry_after: None, hard_bounce: !about_us, message: e.to_string() }
    } else {
        SendError::transient(e.to_string())
    }
}

/// Posts to Resend. 2xx: sent (its id returned). 429 and 5xx: retried, after `Retry-After`
/// when given. Any other 4xx (a validation error, a refused key): permanent.
async fn resend_send(
    client: &reqwest::Client,
    base: &str,
    key: &Secret,
    from: &Mailbox,
    mail: &Envelope,
) -> Result<Option<String>, SendError> {
    let mut headers = serde_json::Map::new();
    if let Some(value) = &mail.list_unsubscribe {
        headers.insert("List-Unsubscribe".into(), value.clone().into());
        headers.insert("List-Unsubscribe-Post".into(), super::unsubscribe::ONE_CLICK.into());
    }
    let domain = from.email.domain();
    headers.insert("Message-ID".into(), format!("<{}@{domain}>", mail.id).into());
    let mut body = serde_json::json!({
        "from": from.to_string(),
        "to": [mail.to],
        "subject": mail.subject,
        "text": mail.text,
        "html": mail.html,
        "headers": headers,
    });
    if !mail.attachments.is_empty() {
        use base64::Engine as _;
        // Resend's shape: `attachments: [{filename, content (base64), content_type}]`.
        let attachments: Vec<serde_json::Value> = mail
            .attachments
            .iter()
            .map(|a| {
                serde_json::json!({
                    "filename": a.filename,
                    "content": base64::engine::general_purpose::STANDARD.encode(&a.content),
                    "content_type": a.content_type,
                })
            })
            .collect();
        body["attachments"] = attachments.into();
    }
    let res = client
        .post(format!("{base}/emails"))
        .bearer_auth(key.expose())
        .header("Idempotency-Key", mail.id.to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| SendError::transient(format!("Resend: {}", without_url(&e))))?;
    let status = res.status();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(StdDuration::from_secs);
    let text = res.text().await.unwrap_or_default();
    if status.is_success() {
        let id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
        return Ok(id);
    }
    let detail: String = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let message = format!("Resend answered {}: {detail}", status.as_u16());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(SendError { transient: true, retry_after, hard_bounce: false, message })
    } else {
        Err(SendError::permanent(message))
    }
}

/// A request error's text without the URL (which could carry the base URL's credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_string()
}

/// A part's body. Links must arrive on one line: RFC 5322 allows 998-character lines, so a
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

/// The sub-processors of the mail transports, for the registry (`disclosure::subprocessors`):
/// Resend when `mail.transport = "resend"`, the operator's SMTP relay when `"smtp"`. The
/// default mail drop keeps every message on this machine and hands nothing to anyone.
pub fn sub_processors(mail: &MailConfig) -> [SubProcessor; 2] {
    const MESSAGE: &[&str] = &[
        "each recipient's email address and the message's sender, subject and text",
        "the one-click unsubscribe link of non-critical mail (a sealed, expiring token)",
        "the outbox id of each message, as its idempotency key",
    ];
    [
        SubProcessor {
            id: "resend",
            name: "Resend",
            enabled: mail.transport == MailTransport::Resend,
            setting: "mail.transport = \"resend\" and mail.resend_api_key",
            purpose: "Delivers email (sign-in links, invitations, notifications, invoices) and reports bounces and complaints back through a signed webhook.",
            receives: MESSAGE,
            region: "United States (Resend's default sending region)".into(),
        },
        SubProcessor {
            id: "smtp",
            name: "SMTP relay (configured by the operator)",
            enabled: mail.transport == MailTransport::Smtp,
            setting: "mail.transport = \"smtp\" and mail.smtp_url",
            purpose: "Delivers email over SMTP with TLS.",
            receives: MESSAGE,
            region: "Where the operator's relay runs".into(),
        },
    ]
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
    use super::{Attachment, AttachmentRefused, MAX_ATTACHMENT_BYTES, require_tls};

    #[test]
    fn attachments_are_checked_when_made() {
        assert!(Attachment::new("invoice-INV-2026-0001.pdf", "application/pdf", b"%PDF-1.4".to_vec()).is_ok());
        for bad in ["", ".hidden", "a b.pdf", "a\r\nX: y.pdf", "\"q\".pdf", "../x.pdf", &"a".repeat(101)] {
            assert_eq!(
                Attachment::new(bad, "application/pdf", b"x".to_vec()),
                Err(AttachmentRefused::BadName),
                "{bad:?}"
            );
        }
        for bad in ["pdf", "application/", "Application/PDF", "text/plain; charset=utf-8", "a/b\r\n"] {
            assert_eq!(Attachment::new("a.pdf", bad, b"x".to_vec()), Err(AttachmentRefused::BadContentType), "{bad:?}");
        }
        assert_eq!(Attachment::new("a.pdf", "application/pdf", vec![]), Err(AttachmentRefused::Empty));
        assert!(Attachment::new("a.pdf", "application/pdf", vec![0; MAX_ATTACHMENT_BYTES]).is_ok());
        assert_eq!(
            Attachment::new("a.pdf", "application/pdf", vec![0; MAX_ATTACHMENT_BYTES + 1]),
            Err(AttachmentRefused::TooLarge { bytes: MAX_ATTACHMENT_BYTES + 1 })
        );
    }

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
