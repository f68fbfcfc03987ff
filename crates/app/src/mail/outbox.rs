//! The outbox table and the delivery worker.
//!
//! A message is a row written in the transaction of the action that causes it ([`enqueue`]).
//! The worker ([`deliver_due`]) takes one due row at a time in a transaction of its own,
//! holding the row lock (`FOR UPDATE SKIP LOCKED`, so several workers share the queue and never
//! take the same row) while it checks the suppression list and sends. A worker killed mid-send
//! never commits: the row is unlocked as it was and sent again by the next worker, under the
//! same `Idempotency-Key` (the outbox id) so Resend delivers it once.
//!
//! Outcomes: sent; `suppressed` (the address is on the list for this category: recorded, not
//! sent); retried later (exponential backoff with jitter, or the provider's `Retry-After`);
//! `dead` (a permanent error, or attempts exhausted), for an operator to read and retry
//! (`clientflow mail list --state dead`, `clientflow mail retry <id>`). A hard bounce at send
//! time (an SMTP 5xx about the recipient) also suppresses the address.

use std::time::Duration as StdDuration;

use askama::Template;
use rand::Rng;
use serde::Serialize;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::category::Category;
use super::suppression::{self, Reason, SoftBouncePolicy};
pub use super::transport::{Attachment, AttachmentRefused, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS};
use super::transport::{Envelope, SendError, Transport};
use super::unsubscribe::Links;
use crate::access::OrgTx;
use crate::platform::db::Db;
use crate::platform::ids::OrgId;

#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub category: Category,
    /// The organization the message speaks for, named in its HTML part.
    pub org_name: Option<String>,
}

/// Queues `mail` in the caller's transaction. The same `idempotency_key` twice queues once.
pub async fn enqueue(
    conn: &mut PgConnection,
    mail: &OutgoingMail,
    idempotency_key: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, idempotency_key, kind, category, recipient, subject, body_text, org_name, created_at, next_attempt_at) \
         VALUES ($1, $2, 'email', $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(idempotency_key)
    .bind(mail.category)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(&mail.org_name)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues `mail` with files attached, in the caller's tenant transaction: the outbox row says
/// whose the files are and how many; the files themselves go to `outbox_attachments`, a tenant
/// table (so the organization's purge removes them and row-level security keeps them its own).
/// The same `idempotency_key` twice queues once, files included: `false` when it was queued
/// already. At most [`MAX_ATTACHMENTS`] files, each checked by [`Attachment::new`].
pub async fn enqueue_with_attachments(
    tx: &mut OrgTx,
    mail: &OutgoingMail,
    attachments: &[Attachment],
    idempotency_key: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(sqlx::Error::Protocol(format!("at most {MAX_ATTACHMENTS} attachments to a message")));
    }
    let org: OrgId = tx.org_id();
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO outbox (id, idempotency_key, kind, category, recipient, subject, body_text, org_name, created_at, next_attempt_at, \
         attachments_org, attachment_count) \
         VALUES ($1, $2, 'email', $3, $4, $5, $6, $7, $8, $8, $9, $10) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(idempotency_key)
    .bind(mail.category)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(&mail.org_name)
    .bind(now)
    .bind((!attachments.is_empty()).then_some(org))
    .bind(attachments.len() as i16)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(id) = id else { return Ok(false) };
    for (position, a) in attachments.iter().enumerate() {
        sqlx::query(
            "INSERT INTO outbox_attachments (organization_id, outbox_id, position, filename, content_type, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(org)
        .bind(id)
        .bind(position as i16)
        .bind(a.filename())
        .bind(a.content_type())
        .bind(a.content())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

/// A queued message's attachments, read through the tenant door of the organization they
/// belong to (as [`crate::access::mail_delivery`]): `None` when they are not all there any
/// more (the organization was deleted, or moved to another region).
async fn attachments_of(
    db: &Db,
    org: OrgId,
    outbox_id: Uuid,
    expected: usize,
) -> Result<Option<Vec<Attachment>>, sqlx::Error> {
    let Some(principal) = crate::access::mail_delivery(db, org).await? else { return Ok(None) };
    let mut tx = OrgTx::begin(db, &principal).await?;
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT filename, content_type, content FROM outbox_attachments WHERE outbox_id = $1 ORDER BY position",
    )
    .bind(outbox_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let files: Vec<Attachment> =
        rows.into_iter().filter_map(|(name, kind, bytes)| Attachment::new(&name, &kind, bytes).ok()).collect();
    Ok((files.len() == expected).then_some(files))
}

/// Removes a sent message's attachments: the organization's data is not kept in the queue
/// longer than it takes to deliver it.
async fn forget_attachments(db: &Db, org: OrgId, outbox_id: Uuid) -> Result<(), sqlx::Error> {
    let Some(principal) = crate::access::mail_delivery(db, org).await? else { return Ok(()) };
    let mut tx = OrgTx::begin(db, &principal).await?;
    sqlx::query("DELETE FROM outbox_attachments WHERE outbox_id = $1").bind(outbox_id).execute(&mut *tx).await?;
    tx.commit().await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMail {
    pub id: Uuid,
    pub idempotency_key: String,
    pub category: Category,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub org_name: Option<String>,
    pub created_at: OffsetDateTime,
    pub attempts: i32,
}

/// When to try again and when to give up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 10, base: Duration::seconds(30), cap: Duration::hours(6) }
    }
}

/// The longest `Retry-After` honoured: a provider asking for more is asked again after this.
const RETRY_AFTER_CAP: Duration = Duration::hours(24);

impl RetryPolicy {
    /// Delay before the next attempt after `attempts` failed ones: `base · 2^(attempts-1)`,
    /// capped, plus up to half of it again at random (so messages that failed together don't
    /// return together), and never sooner than the provider's `Retry-After`.
    pub fn delay(&self, attempts: i32, retry_after: Option<StdDuration>, rng: &mut impl Rng) -> Duration {
        let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
        let nominal = self.base.whole_seconds().saturating_mul(1i64 << exp).min(self.cap.whole_seconds()).max(1);
        let jitter = rng.gen_range(0..=nominal / 2);
        let backoff = Duration::seconds((nominal + jitter).min(self.cap.whole_seconds().max(nominal)));
        match retry_after {
            Some(after) => {
                let after = Duration::seconds(i64::try_from(after.as_secs()).unwrap_or(i64::MAX)).min(RETRY_AFTER_CAP);
                backoff.max(after)
            }
            None => backoff,
        }
    }
}

/// Everything the worker needs: where mail goes, the unsubscribe links it adds, and its
/// retry and soft-bounce policies.
#[derive(Clone)]
pub struct Delivery {
    pub transport: Transport,
    pub links: Links,
    pub retry: RetryPolicy,
    pub soft_bounces: SoftBouncePolicy,
}

impl Delivery {
    pub fn new(transport: Transport, links: Links, config: &super::config::MailConfig) -> Self {
        Self {
            transport,
            links,
            retry: RetryPolicy {
                max_attempts: config.max_attempts,
                base: Duration::seconds(config.retry_base_secs),
                cap: Duration::seconds(config.retry_max_secs),
            },
            soft_bounces: SoftBouncePolicy {
                limit: config.soft_bounce_limit,
                window: Duration::hours(config.soft_bounce_window_hours),
            },
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Suppressed,
    Retrying,
    Dead,
}

/// Delivers every message due at `now` (up to `limit`), one transaction per message holding its
/// row lock. Returns how many were sent.
pub async fn deliver_due(
    db: &Db,
    delivery: &Delivery,
    now: OffsetDateTime,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    let mut sent = 0;
    // Mail about an organization is queued in its region's database, with the organization's
    // other rows: each region's outbox is delivered from where it is.
    for db in db.every_region() {
        for _ in 0..limit {
            match deliver_one(&db, delivery, now).await? {
                None => break,
                Some(Outcome::Sent) => sent += 1,
                Some(_) => {}
            }
        }
    }
    Ok(sent)
}

/// Takes the next due message, if any, and decides it.
pub async fn deliver_one(db: &Db, delivery: &Delivery, now: OffsetDateTime) -> Result<Option<Outcome>, sqlx::Error> {
    let mut tx = db.global().await?;
    let row: Option<QueuedMail> = sqlx::query_as(
        "SELECT id, idempotency_key, category, recipient, subject, body_text, org_name, created_at, attempts FROM outbox \
         WHERE sent_at IS NULL AND failed_at IS NULL AND suppressed_at IS NULL AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(mail) = row else { return Ok(None) };

    // At send time, not only at enqueue: an address suppressed since the message was queued
    // is not mailed.
    // The suppression list is global (the directory's database): a region's mail consults it
    // there.
    let in_directory = db.region() == db.home_region();
    let blocking = if in_directory {
        suppression::blocking(&mut tx, &mail.recipient, mail.category).await?
    } else {
        let mut global = db.home().global().await?;
        let found = suppression::blocking(&mut global, &mail.recipient, mail.category).await?;
        global.commit().await?;
        found
    };
    if let Some(s) = blocking {
        let why = format!("{} ({})", s.reason.as_str(), s.source);
        sqlx::query("UPDATE outbox SET suppressed_at = $2, suppression = $3 WHERE id = $1")
            .bind(mail.id)
            .bind(now)
            .bind(&why)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(outbox_id = %mail.id, reason = s.reason.as_str(), "mail suppressed");
        return Ok(Some(Outcome::Suppressed));
    }

    let mut envelope = compose(&mail, &delivery.links, now);
    let (attachments_org, attachment_count): (Option<Uuid>, i16) =
        sqlx::query_as("SELECT attachments_org, attachment_count FROM outbox WHERE id = $1")
            .bind(mail.id)
            .fetch_one(&mut *tx)
            .await?;
    let attachments_org = attachments_org.map(OrgId::from_uuid);
    let mut missing = false;
    if let Some(org) = attachments_org {
        match attachments_of(db, org, mail.id, attachment_count.max(0) as usize).await? {
            Some(files) => envelope.attachments = files,
            None => missing = true,
        }
    }
    let outcome = if missing {
        // Sent without them, the message would promise what it doesn't carry.
        Err(SendError::permanent("its attachments are gone (the organization was deleted or moved)"))
    } else {
        tokio::time::timeout(StdDuration::from_secs(30), delivery.transport.send(&envelope))
            .await
            .unwrap_or_else(|_| Err(SendError::transient("timed out")))
    };
    let sent = outcome.is_ok();
    let attempts = mail.attempts + 1;
    let result = match outcome {
        Ok(provider_id) => {
            sqlx::query(
                "UPDATE outbox SET sent_at = $2, attempts = $3, provider_message_id = $4, last_error = NULL WHERE id = $1",
            )
            .bind(mail.id)
            .bind(now)
            .bind(attempts)
            .bind(provider_id)
            .execute(&mut *tx)
            .await?;
            Outcome::Sent
        }
        Err(e) if e.transient && attempts < delivery.retry.max_attempts => {
            let delay = delivery.retry.delay(attempts, e.retry_after, &mut rand::thread_rng());
            tracing::warn!(outbox_id = %mail.id, attempts, error = %e.message, retry_in_secs = delay.whole_seconds(), "mail delivery failed; will retry");
            sqlx::query("UPDATE outbox SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1")
                .bind(mail.id)
                .bind(attempts)
                .bind(now + delay)
                .bind(&e.message)
                .execute(&mut *tx)
                .await?;
            Outcome::Retrying
        }
        Err(e) => {
            tracing::error!(outbox_id = %mail.id, attempts, error = %e.message, "mail delivery failed for good");
            sqlx::query("UPDATE outbox SET attempts = $2, failed_at = $3, last_error = $4 WHERE id = $1")
                .bind(mail.id)
                .bind(attempts)
                .bind(now)
                .bind(&e.message)
                .execute(&mut *tx)
                .await?;
            if e.hard_bounce {
                sqlx::query("UPDATE outbox SET delivery = 'bounced', delivery_at = $2 WHERE id = $1")
                    .bind(mail.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let source: String = format!("SMTP at send: {}", e.message).chars().take(300).collect();
                if in_directory {
                    suppression::add(&mut tx, &mail.recipient, Reason::HardBounce, None, &source, "worker", now)
                        .await?;
                } else {
                    let mut global = db.home().global().await?;
                    suppression::add(&mut global, &mail.recipient, Reason::HardBounce, None, &source, "worker", now)
                        .await?;
                    global.commit().await?;
                }
            }
            Outcome::Dead
        }
    };
    tx.commit().await?;
    if sent && let Some(org) = attachments_org {
        // After the commit: a failure here leaves the files for the organization's purge,
        // never a message marked unsent that went out.
        if let Err(e) = forget_attachments(db, org, mail.id).await {
            tracing::warn!(outbox_id = %mail.id, error = %e, "could not remove a sent message's attachments");
        }
    }
    Ok(Some(result))
}

/// The message as sent: the text part as written plus, for mail that may be unsubscribed
/// from, the link; an HTML part rendered from the same text (escaped, links made clickable,
/// the organization named); no images, so nothing to track opens with.
pub fn compose(mail: &QueuedMail, links: &Links, now: OffsetDateTime) -> Envelope {
    let unsubscribe = links.header(&mail.recipient, mail.category, now);
    let mut text = mail.body_text.clone();
    if let Some((_, url)) = &unsubscribe {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("\nTo stop receiving {}: {url}\n", mail.category.describe()));
    }
    let html = HtmlMessage {
        subject: &mail.subject,
        org_name: mail.org_name.as_deref(),
        body: html_paragraphs(&mail.body_text),
        unsubscribe: unsubscribe.as_ref().map(|(_, url)| url.as_str()),
        category: mail.category.describe(),
    }
    .render()
    .unwrap_or_else(|_| format!("<pre>{}</pre>", crate::platform::html::escape_html(&mail.body_text)));
    Envelope {
        id: mail.id,
        to: mail.recipient.clone(),
        subject: mail.subject.clone(),
        text,
        html,
        date: now,
        list_unsubscribe: unsubscribe.map(|(header, _)| header),
        attachments: Vec::new(),
    }
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct HtmlMessage<'a> {
    subject: &'a str,
    org_name: Option<&'a str>,
    /// Already escaped.
    body: String,
    unsubscribe: Option<&'a str>,
    category: &'a str,
}

/// Paragraphs (blank-line separated) with line breaks, every `https://` link clickable; the
/// text is escaped first, so nothing a message quotes (a contact form's message) becomes markup.
fn html_paragraphs(text: &str) -> String {
    let mut out = String::new();
    for para in text.replace("\r\n", "\n").split("\n\n") {
        let para = para.trim_matches('\n');
        if para.is_empty() {
            continue;
        }
        let lines: Vec<String> = para.lines().map(linkify).collect();
        out.push_str("<p>");
        out.push_str(&lines.join("<br>\n"));
        out.push_str("</p>\n");
    }
    out
}

fn linkify(line: &str) -> String {
    let mut out = String::new();
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.starts_with("https://") || word.starts_with("http://") {
            let trimmed = word.trim_end_matches(['.', ',', ')', ';']);
            let rest = &word[trimmed.len()..];
            let e = crate::platform::html::escape_html(trimmed);
            out.push_str(&format!("<a href=\"{e}\">{e}</a>{}", crate::platform::html::escape_html(rest)));
        } else {
            out.push_str(&crate::platform::html::escape_html(word));
        }
    }
    out
}

/// The states of a message (the outbox's generated `state` column).
pub const STATES: [&str; 4] = ["queued", "sent", "suppressed", "dead"];

/// One outbox row, for operators.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub id: Uuid,
    pub state: String,
    pub category: Category,
    pub recipient: String,
    pub subject: String,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub last_error: Option<String>,
    pub suppression: Option<String>,
    pub delivery: Option<String>,
}

/// The outbox in one state (`queued`, `sent`, `dead`, `suppressed`), newest first.
pub async fn list(conn: &mut PgConnection, state: &str, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, state, category, recipient, subject, attempts, created_at, last_error, suppression, delivery \
         FROM outbox WHERE state = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(state)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Message counts by state (for `/metrics`).
pub async fn counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state").fetch_all(conn).await
}

/// Puts a dead or suppressed message back in the queue, due now, with its attempts reset.
/// A suppressed message meets the list again when the worker takes it. Returns whether a
/// message was requeued (`None`: no such message; `Some(false)`: it is not dead or suppressed).
pub async fn retry(conn: &mut PgConnection, id: Uuid, now: OffsetDateTime) -> Result<Option<bool>, sqlx::Error> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM outbox WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match state.as_deref() {
        None => Ok(None),
        Some("dead" | "suppressed") => {
            sqlx::query(
                "UPDATE outbox SET failed_at = NULL, suppressed_at = NULL, suppression = NULL, attempts = 0, \
                 next_attempt_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?;
            Ok(Some(true))
        }
        Some(_) => Ok(Some(false)),
    }
}

/// The worker loop: every few seconds, or at once when woken, runs `first` (work that queues
/// mail, such as deciding waiting sign-up and reset requests: the caller supplies it, so this
/// area needs nothing of the areas above it), then delivers what is due.
pub async fn run_worker<F, Fut>(
    db: Db,
    delivery: Delivery,
    clock: crate::platform::clock::SharedClock,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    first: F,
) where
    F: Fn(time::OffsetDateTime) -> Fut,
    Fut: std::future::Future<Output = Result<usize, sqlx::Error>>,
{
    loop {
        if let Err(e) = first(clock.now()).await
            && !crate::platform::db::outage::note(&e)
        {
            tracing::warn!(error = %e, "outbox worker: queued work: database error");
        }
        if let Err(e) = deliver_due(&db, &delivery, clock.now(), 100).await
            && !crate::platform::db::outage::note(&e)
        {
            tracing::warn!(error = %e, "outbox worker: database error");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(StdDuration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let p = RetryPolicy::default();
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let d1 = p.delay(1, None, &mut rng).whole_seconds();
            assert!((30..=45).contains(&d1), "{d1}");
            let d3 = p.delay(3, None, &mut rng).whole_seconds();
            assert!((120..=180).contains(&d3), "{d3}");
            assert!(p.delay(30, None, &mut rng) <= p.cap);
            let ra = p.delay(1, Some(StdDuration::from_secs(600)), &mut rng).whole_seconds();
            assert_eq!(ra, 600);
        }
        let spread: std::collections::HashSet<i64> =
            (0..50).map(|_| p.delay(4, None, &mut rng).whole_seconds()).collect();
        assert!(spread.len() > 5, "jitter spreads retries");
    }

    #[test]
    fn html_escapes_and_links() {
        let html = html_paragraphs("Hi <b>you</b>\n\nGo to https://x.example/a?b=1&c=2.\nbye");
        assert!(html.contains("Hi &lt;b&gt;you&lt;/b&gt;"), "{html}");
        assert!(html.contains("<a href=\"https://x.example/a?b=1&amp;c=2\">"), "{html}");
        assert!(html.contains("</a>.<br>"), "{html}");
    }
}
