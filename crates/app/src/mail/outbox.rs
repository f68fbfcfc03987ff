//! The outbox table and the delivery worker.

use std::time::Duration as StdDuration;

use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::transport::{SendError, Transport};
use crate::platform::db::Db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Category {
    /// Authentication, security and billing mail: always sent (bypasses suppression).
    Critical,
    Transactional,
    Marketing,
}

#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub category: Category,
}

/// Attempts before a message is marked failed.
pub const MAX_ATTEMPTS: i32 = 10;

/// Queues `mail` in the caller's transaction. The same `idempotency_key` twice queues once.
pub async fn enqueue(
    conn: &mut PgConnection,
    mail: &OutgoingMail,
    idempotency_key: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, idempotency_key, kind, category, recipient, subject, body_text, created_at, next_attempt_at) \
         VALUES ($1, $2, 'email', $3, $4, $5, $6, $7, $7) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(idempotency_key)
    .bind(mail.category)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMail {
    pub id: Uuid,
    pub idempotency_key: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub created_at: OffsetDateTime,
    pub attempts: i32,
}

/// Delay before attempt `n + 1`: 30 s, 1 min, 2 min … capped at 6 h.
pub fn backoff(attempts: i32) -> Duration {
    let secs = 30i64.saturating_mul(1i64 << attempts.clamp(0, 20));
    Duration::seconds(secs.min(6 * 3600))
}

/// Delivers every message due at `now`, one transaction per message holding its row lock
/// (`FOR UPDATE SKIP LOCKED`, so several workers share the queue). Returns how many were
/// delivered.
pub async fn deliver_due(
    db: &Db,
    transport: &Transport,
    now: OffsetDateTime,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    let mut delivered = 0;
    for _ in 0..limit {
        let mut tx = db.global().await?;
        let row: Option<QueuedMail> = sqlx::query_as(
            "SELECT id, idempotency_key, recipient, subject, body_text, created_at, attempts FROM outbox \
             WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mail) = row else { break };
        let outcome = tokio::time::timeout(StdDuration::from_secs(30), transport.send(&mail))
            .await
            .unwrap_or_else(|_| Err(SendError { transient: true, message: "timed out".into() }));
        let attempts = mail.attempts + 1;
        match outcome {
            Ok(provider_id) => {
                sqlx::query("UPDATE outbox SET sent_at = $2, attempts = $3, provider_message_id = $4, last_error = NULL WHERE id = $1")
                    .bind(mail.id)
                    .bind(now)
                    .bind(attempts)
                    .bind(provider_id)
                    .execute(&mut *tx)
                    .await?;
                delivered += 1;
            }
            Err(e) if e.transient && attempts < MAX_ATTEMPTS => {
                tracing::warn!(outbox_id = %mail.id, attempts, error = %e.message, "mail delivery failed; will retry");
                sqlx::query("UPDATE outbox SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1")
                    .bind(mail.id)
                    .bind(attempts)
                    .bind(now + backoff(attempts))
                    .bind(&e.message)
                    .execute(&mut *tx)
                    .await?;
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
            }
        }
        tx.commit().await?;
    }
    Ok(delivered)
}

/// The worker loop: every few seconds, or at once when woken, runs `first` (work that queues
/// mail, such as deciding waiting sign-up and reset requests: the caller supplies it, so this
/// area needs nothing of the areas above it), then delivers what is due.
pub async fn run_worker<F, Fut>(
    db: Db,
    transport: Transport,
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
        if let Err(e) = deliver_due(&db, &transport, clock.now(), 100).await
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
