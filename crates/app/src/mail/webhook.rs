//! `POST /webhooks/resend`: what happened to a message after it left, as Resend reports it.
//!
//! Resend signs its webhooks the way Svix documents: `svix-id`, `svix-timestamp` (Unix
//! seconds) and `svix-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}` keyed with the base64 secret after `whsec_`. Several signatures
//! arrive while a secret is being rotated; one match is enough. A timestamp more than five
//! minutes from now either way is refused, and comparisons are constant time. Anything that
//! does not verify is refused (401) before the body is even parsed, with no side effect.
//!
//! A verified event is processed once: its `svix-id` is recorded in the same transaction as
//! its effect, and a replay is acknowledged (200) and ignored. Handled: `email.delivered`,
//! `email.delivery_delayed`, `email.bounced` (a permanent bounce suppresses the address; a
//! transient or undetermined one counts as a soft bounce), `email.complained` (suppresses).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::category::Category;
use super::config::decode_secret;
use super::suppression::{self, Reason, SoftBouncePolicy};
use crate::platform::http::error::AppError;
use crate::state::AppState;

/// How far a signature's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// `v1,<base64>` for `id.timestamp.body` under `key` (what Svix sends; the test server signs
/// with it too).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHeader(&'static str),
    BadTimestamp,
    TooOld,
    TooNew,
    NoMatchingSignature,
}

impl Refusal {
    pub fn message(self) -> String {
        match self {
            Refusal::MissingHeader(h) => format!("the {h} header is missing"),
            Refusal::BadTimestamp => "svix-timestamp is not a Unix time".into(),
            Refusal::TooOld => "svix-timestamp is more than five minutes old".into(),
            Refusal::TooNew => "svix-timestamp is more than five minutes in the future".into(),
            Refusal::NoMatchingSignature => "no signature in svix-signature matches".into(),
        }
    }
}

/// Verifies a delivery. `headers` are (svix-id, svix-timestamp, svix-signature). Returns the
/// event id.
pub fn verify<'a>(
    key: &[u8],
    id: Option<&'a str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<&'a str, Refusal> {
    let id = id.filter(|s| !s.is_empty()).ok_or(Refusal::MissingHeader("svix-id"))?;
    let timestamp = timestamp.filter(|s| !s.is_empty()).ok_or(Refusal::MissingHeader("svix-timestamp"))?;
    let signatures = signatures.filter(|s| !s.is_empty()).ok_or(Refusal::MissingHeader("svix-signature"))?;
    let ts: i64 = timestamp.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
    let now = now.unix_timestamp();
    if ts < now - TOLERANCE_SECS {
        return Err(Refusal::TooOld);
    }
    if ts > now + TOLERANCE_SECS {
        return Err(Refusal::TooNew);
    }
    let expected = sign(key, id, ts, body);
    let expected = expected.as_bytes();
    // Check every candidate (no early exit), each comparison constant time.
    let mut matched = false;
    for candidate in signatures.split(' ').filter(|s| s.starts_with("v1,")) {
        matched |= crate::platform::secret::ct_eq(candidate.as_bytes(), expected);
    }
    if matched { Ok(id) } else { Err(Refusal::NoMatchingSignature) }
}

/// What processing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Applied,
    /// Seen before: acknowledged, nothing done.
    Duplicate,
    /// A type we don't act on, or a message we don't know: acknowledged.
    Ignored,
}

/// Applies a verified event, once per event id, in the caller's transaction.
pub async fn process(
    conn: &mut PgConnection,
    event_id: &str,
    event: &Value,
    soft_bounces: SoftBouncePolicy,
    now: OffsetDateTime,
) -> Result<Processed, sqlx::Error> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let first = sqlx::query(
        "INSERT INTO mail_provider_events (provider, event_id, type, received_at) VALUES ('resend', $1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(kind)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(Processed::Duplicate);
    }
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let email_id = data.get("email_id").and_then(Value::as_str).unwrap_or("");
    // The message as we recorded it: its recipient is ours, not only the event's word.
    let ours: Option<(uuid::Uuid, String, Category)> = if email_id.is_empty() {
        None
    } else {
        sqlx::query_as("SELECT id, recipient, category FROM outbox WHERE provider_message_id = $1")
            .bind(email_id)
            .fetch_optional(&mut *conn)
            .await?
    };
    let address = match &ours {
        Some((_, recipient, _)) => Some(recipient.clone()),
        None => data.get("to").and_then(|t| match t {
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }),
    };
    let delivery = match kind {
        "email.delivered" => "delivered",
        "email.delivery_delayed" => "delayed",
        "email.bounced" => "bounced",
        "email.complained" => "complained",
        _ => return Ok(Processed::Ignored),
    };
    if let Some((id, _, _)) = &ours {
        sqlx::query("UPDATE outbox SET delivery = $2, delivery_at = $3 WHERE id = $1")
            .bind(id)
            .bind(delivery)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    let Some(address) = address else {
        return Ok(if ours.is_some() { Processed::Applied } else { Processed::Ignored });
    };
    let source = format!("resend {kind} {event_id}");
    match kind {
        "email.bounced" => {
            let bounce_type = data.pointer("/bounce/type").and_then(Value::as_str).unwrap_or("");
            if bounce_type.eq_ignore_ascii_case("permanent") {
                suppression::add(conn, &address, Reason::HardBounce, None, &source, "provider", now).await?;
            } else {
                suppression::soft_bounce(conn, soft_bounces, &address, &source, "provider", now).await?;
            }
        }
        "email.complained" => {
            suppression::add(conn, &address, Reason::Complaint, None, &source, "provider", now).await?;
        }
        _ => {}
    }
    Ok(Processed::Applied)
}

/// The route's handler.
pub async fn resend(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = state.config.mail.resend_webhook_secret.as_ref().and_then(|s| decode_secret(s.expose())) else {
        return AppError::not_found().into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = state.clock.now();
    let id = match verify(&key, header("svix-id"), header("svix-timestamp"), header("svix-signature"), &body, now) {
        Ok(id) => id.to_string(),
        Err(refusal) => {
            tracing::warn!(reason = %refusal.message(), "resend webhook refused");
            return AppError::Unauthorized(refusal.message()).into_response();
        }
    };
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return AppError::BadRequest("the body is not a JSON event".into()).into_response();
    };
    let mail = &state.config.mail;
    let policy = SoftBouncePolicy {
        limit: mail.soft_bounce_limit,
        window: time::Duration::hours(mail.soft_bounce_window_hours),
    };
    let result = async {
        let mut tx = state.db.global().await?;
        let processed = process(&mut tx, &id, &event, policy, now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(processed)
    }
    .await;
    match result {
        Ok(p) => {
            let status = match p {
                Processed::Applied => "processed",
                Processed::Duplicate => "duplicate",
                Processed::Ignored => "ignored",
            };
            axum::Json(json!({ "status": status })).into_response()
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example Svix publishes in its verification documentation.
    #[test]
    fn the_published_svix_example_verifies() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), sig);
        let at = OffsetDateTime::from_unix_timestamp(1614265330).unwrap();
        assert_eq!(
            verify(&key, Some("msg_p5jXN8AQM9LWM0D4loKWxJek"), Some("1614265330"), Some(sig), body, at),
            Ok("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        // Five minutes and a second later, it is stale.
        let late = at + time::Duration::seconds(TOLERANCE_SECS + 1);
        assert_eq!(
            verify(&key, Some("msg_p5jXN8AQM9LWM0D4loKWxJek"), Some("1614265330"), Some(sig), body, late),
            Err(Refusal::TooOld)
        );
    }
}
