//! `POST /webhooks/stripe`: what happened to a subscription, as Stripe reports it.
//!
//! Stripe signs each delivery as it documents: `Stripe-Signature: t=<unix seconds>,v1=<hex>`
//! with one `v1` per active endpoint secret (several while a secret is rolled), each an
//! HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint secret (the whole `whsec_…`
//! string). A delivery is accepted when any `v1` matches any configured secret; every
//! candidate is compared (no early exit), each comparison constant time. A `t` more than 300
//! seconds from now, either way, is refused; so is anything that does not verify (401), before
//! the body is parsed and with no side effect.
//!
//! A verified event is applied once: its id is recorded in the transaction that applies it,
//! so a replay (or Stripe's own redelivery) is acknowledged and changes nothing. Events arrive
//! out of order: the subscription's state is taken from the event with the newest `created`
//! (`billing_accounts.state_at`), never from arrival order, and a checkout completed before
//! any subscription event re-reads the subscription from Stripe.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use super::service;
use crate::access::OrgTx;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::http::error::AppError;
use crate::platform::ids::OrgId;
use crate::route;
use crate::state::AppState;

/// How far a signature's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHeader,
    Malformed,
    TooOld,
    TooNew,
    NoMatchingSignature,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingHeader => "the Stripe-Signature header is missing",
            Refusal::Malformed => "Stripe-Signature has no t= or no v1=",
            Refusal::TooOld => "the signature's timestamp is more than 300 seconds old",
            Refusal::TooNew => "the signature's timestamp is more than 300 seconds in the future",
            Refusal::NoMatchingSignature => "no v1 signature matches",
        }
    }
}

/// The hex HMAC-SHA256 of `"{t}.{body}"` under `secret` (what Stripe sends as `v1`).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, t, body))
}

fn mac(secret: &str, t: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Verifies a delivery's `Stripe-Signature` against every configured secret.
pub fn verify(secrets: &[&str], header: Option<&str>, body: &[u8], now: OffsetDateTime) -> Result<(), Refusal> {
    let header = header.filter(|h| !h.trim().is_empty()).ok_or(Refusal::MissingHeader)?;
    let mut t: Option<i64> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => t = Some(v.parse().map_err(|_| Refusal::Malformed)?),
            // Only the scheme Stripe signs live events with; v0 (test-mode) is ignored.
            "v1" => {
                if let Ok(bytes) = hex::decode(v)
                    && bytes.len() == 32
                {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(Refusal::Malformed)?;
    if candidates.is_empty() {
        return Err(Refusal::Malformed);
    }
    let now = now.unix_timestamp();
    if t < now - TOLERANCE_SECS {
        return Err(Refusal::TooOld);
    }
    if t > now + TOLERANCE_SECS {
        return Err(Refusal::TooNew);
    }
    let mut matched = false;
    for secret in secrets {
        let expected = mac(secret, t, body);
        for c in &candidates {
            matched |= crate::platform::secret::ct_eq(c, &expected);
        }
    }
    if matched { Ok(()) } else { Err(Refusal::NoMatchingSignature) }
}

/// What processing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Applied,
    /// Seen before: acknowledged, nothing done.
    Duplicate,
    /// A type we don't act on, or about no organization of ours: acknowledged.
    Ignored,
}

impl Processed {
    pub fn as_str(self) -> &'static str {
        match self {
            Processed::Applied => "processed",
            Processed::Duplicate => "duplicate",
            Processed::Ignored => "ignored",
        }
    }
}

pub const HANDLED: [&str; 7] = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.deleted",
];

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A verified event's effect. Errors mean "not applied, ask Stripe to deliver again".
pub async fn process(state: &AppState, event: &Value) -> DomainResult<Processed> {
    let id = str_at(event, "/id").ok_or_else(|| DomainError::Malformed("the event has no id".into()))?;
    if id.len() > 255 {
        return Err(DomainError::Malformed("the event id is too long".into()));
    }
    let kind = str_at(event, "/type").unwrap_or("");
    let created = event.get("created").and_then(Value::as_i64).unwrap_or(0);
    let at = OffsetDateTime::from_unix_timestamp(created)
        .map_err(|_| DomainError::Malformed("the event's created time is not a Unix time".into()))?;
    let now = state.clock.now();
    let object = event.pointer("/data/object").cloned().unwrap_or(Value::Null);
    let Some(book) = state.plans.clone() else {
        return Ok(Processed::Ignored);
    };
    if !HANDLED.contains(&kind) {
        return record_only(state, id, kind, now).await;
    }
    let customer = match kind {
        "customer.deleted" => str_at(&object, "/id"),
        _ => str_at(&object, "/customer"),
    };
    let hint = str_at(&object, "/client_reference_id")
        .or_else(|| str_at(&object, "/metadata/organization_id"))
        .and_then(|s| s.parse::<OrgId>().ok());
    let Some((principal, placed)) = crate::access::stripe_event(&state.db, customer, hint).await? else {
        return record_only(state, id, kind, now).await;
    };
    // Applied now, during a move to another region, the event would stay behind in the region
    // the organization leaves: not applied, and Stripe delivers it again later.
    if placed.moving_to.is_some() {
        return Err(DomainError::Unavailable(
            "The organization is being moved to another region: the event is applied when Stripe delivers it again."
                .into(),
        ));
    }
    // A completed checkout whose subscription no event has described yet: ask Stripe (before
    // the transaction, so no lock waits on the network). Unreachable: not applied, Stripe
    // delivers again later.
    let mut fresh = None;
    if kind == "checkout.session.completed"
        && let Some(sub) = str_at(&object, "/subscription")
    {
        let mut tx = OrgTx::begin(&state.db, &principal).await?;
        let known = service::account(&mut tx).await?.is_some_and(|a| a.status != "none");
        tx.commit().await?;
        if !known {
            let client =
                state.stripe.as_ref().ok_or_else(|| DomainError::Unavailable("Stripe is not configured".into()))?;
            fresh = Some(client.subscription(sub).await.map_err(|e| DomainError::Unavailable(e.to_string()))?);
        }
    }
    let ctx = Context { user_agent: "Stripe webhook".into(), ..Context::system(now, Some(state.audit_signer.clone())) };
    let mut tx = OrgTx::begin(&state.db, &principal).await?;
    // Asked again where the event is written, holding a move's copy back until it commits.
    if !crate::access::directory::hold_for_writing(&state.db, &mut tx, principal.region(), principal.org_id()).await? {
        tx.rollback().await?;
        return Err(DomainError::Unavailable(
            "The organization is being moved to another region: the event is applied when Stripe delivers it again."
                .into(),
        ));
    }
    if !first_delivery(&mut tx, id, kind, now).await? {
        tx.commit().await?;
        return Ok(Processed::Duplicate);
    }
    let mailed =
        service::apply_event(&mut tx, &ctx, &book, &state.config.public_url(), id, kind, at, &object, fresh.as_ref())
            .await?;
    tx.commit().await?;
    if mailed {
        state.mail_wake.notify_one();
    }
    Ok(Processed::Applied)
}

async fn first_delivery(
    conn: &mut sqlx::PgConnection,
    id: &str,
    kind: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO stripe_events (event_id, type, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(kind.chars().take(100).collect::<String>())
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

async fn record_only(state: &AppState, id: &str, kind: &str, now: OffsetDateTime) -> DomainResult<Processed> {
    let mut tx = state.db.global().await?;
    let first = first_delivery(&mut tx, id, kind, now).await?;
    tx.commit().await?;
    Ok(if first { Processed::Ignored } else { Processed::Duplicate })
}

/// Stripe's webhook endpoint, signed by Stripe (checked before anything is read).
pub fn routes() -> Vec<RouteDef> {
    vec![route!(POST "/webhooks/stripe", Surface::Ops, Access::Public, stripe)]
}

/// The route's handler.
pub async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets: Vec<&str> = state.config.billing.webhook_secrets.iter().map(|s| s.expose()).collect();
    if secrets.is_empty() || state.plans.is_none() {
        return AppError::not_found().into_response();
    }
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    if let Err(refusal) = verify(&secrets, header, &body, state.clock.now()) {
        tracing::warn!(reason = refusal.message(), "stripe webhook refused");
        return AppError::Unauthorized(refusal.message().into()).into_response();
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return AppError::BadRequest("the body is not a JSON event".into()).into_response();
    };
    match process(&state, &event).await {
        Ok(p) => axum::Json(json!({ "status": p.as_str() })).into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    #[test]
    fn a_signature_verifies_under_any_configured_secret_and_nothing_else() {
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let t = 1_700_000_000;
        let good = sign("whsec_new", t, body);
        let other = sign("whsec_unrelated", t, body);
        let header = format!("t={t},v1={other},v1={good},v0=deadbeef");
        assert_eq!(verify(&["whsec_old", "whsec_new"], Some(&header), body, at(t)), Ok(()));
        assert_eq!(verify(&["whsec_old"], Some(&header), body, at(t)), Err(Refusal::NoMatchingSignature));
        assert_eq!(verify(&["whsec_new"], Some(&header), b"{}", at(t)), Err(Refusal::NoMatchingSignature));
        assert_eq!(verify(&["whsec_new"], Some(&header), body, at(t + 301)), Err(Refusal::TooOld));
        assert_eq!(verify(&["whsec_new"], Some(&header), body, at(t - 301)), Err(Refusal::TooNew));
        assert_eq!(verify(&["whsec_new"], Some(&header), body, at(t + 300)), Ok(()));
        assert_eq!(verify(&["whsec_new"], Some(&format!("v1={good}")), body, at(t)), Err(Refusal::Malformed));
        assert_eq!(verify(&["whsec_new"], Some(&format!("t={t}")), body, at(t)), Err(Refusal::Malformed));
        assert_eq!(verify(&["whsec_new"], None, body, at(t)), Err(Refusal::MissingHeader));
    }

    /// Stripe's documented construction, computed independently: HMAC-SHA256 keyed with the
    /// whole `whsec_…` string over `t.payload`, lower-case hex.
    #[test]
    fn the_signature_is_stripes_construction() {
        let sig =
            sign("whsec_test_secret", 1492774577, b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}");
        assert_eq!(sig.len(), 64);
        assert!(sig.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
