//! The audit log: every privileged action writes an event in the same transaction as the
//! action, into a per-organization SHA-256 hash chain with a gapless sequence.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ canonical(event n))`, with `hash(0)` = 32 zero bytes (or the
//! hash recorded by a retention checkpoint). The canonical encoding is JSON with object keys
//! sorted at every level, timestamps as RFC 3339 with microseconds in UTC, no insignificant
//! whitespace — stable across the jsonb round trip, so the verifier can recompute it from the
//! stored row.

pub mod chain;

use crate::platform::secret::Secret;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::platform::db::tenant::{OrgTx, TenantPrincipal};
use crate::platform::ids::OrgId;
use crate::platform::ids::UserId;

/// `[audit]`: retention and the key that signs chain heads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit events older than this are removed (a checkpoint keeps the chain verifiable).
    pub retention_days: u32,
    /// Ed25519 seed (32 bytes, base64) that signs chain heads. Unset: generated once into
    /// `<data_dir>/secrets/audit-signing.key`. Keep a copy of the public key elsewhere.
    pub signing_key: Option<Secret>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 365, signing_key: None }
    }
}

/// Where an action came from (and the key that signs chain heads).
#[derive(Debug, Clone)]
pub struct Context {
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub request_id: String,
    pub now: OffsetDateTime,
    pub signer: Option<std::sync::Arc<chain::Signer>>,
    /// The plans and their limits when billing is on (`billing::limits` consults them in the
    /// services that create what a plan counts); `None`, billing off: unlimited.
    pub plans: Option<std::sync::Arc<crate::platform::plans::PlanBook>>,
}

impl Context {
    /// For actions with no request behind them (the operator CLI, maintenance).
    pub fn system(now: OffsetDateTime, signer: Option<std::sync::Arc<chain::Signer>>) -> Self {
        Self { ip: None, user_agent: String::new(), request_id: String::new(), now, signer, plans: None }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Entry {
    pub fn new(action: &str, target_type: &str, target_id: impl ToString) -> Self {
        Self {
            action: action.to_string(),
            target_type: target_type.to_string(),
            target_id: target_id.to_string(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, v: Value) -> Self {
        self.before = Some(redact(v));
        self
    }

    pub fn after(mut self, v: Value) -> Self {
        self.after = Some(redact(v));
        self
    }
}

/// Keys whose values never enter a snapshot.
const SECRET_KEYS: &[&str] = &[
    "password",
    "password_hash",
    "secret",
    "token",
    "token_hash",
    "totp_secret",
    "key_hash",
    "api_key",
    "client_secret",
    "code",
    "recovery_codes",
    "signature",
];

/// Replaces secret values (by key, at any depth) with `"[redacted]"`.
pub fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower == *s || lower.ends_with(&format!("_{s}"))) {
                        (k, Value::String("[redacted]".into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

/// Who is acting, for authorization and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    /// An organization API key (its id).
    ApiKey(uuid::Uuid),
    /// An operator running the `clientflow` CLI on the server, or the server's own work.
    System(String),
}

/// A principal whose actions are recorded: the application's verified principal.
pub trait Acting {
    fn actor(&self) -> &Actor;
}

/// Writes `entry` for the principal of `tx`, in `tx`.
pub async fn record<P: TenantPrincipal + Acting>(
    tx: &mut OrgTx<P>,
    ctx: &Context,
    entry: Entry,
) -> Result<(), sqlx::Error> {
    let org = tx.org_id();
    let actor = tx.principal().actor().clone();
    let label = actor_label(&mut *tx, &actor).await?;
    append(&mut *tx, org, &actor, &label, &entry, ctx).await
}

async fn actor_label(conn: &mut PgConnection, actor: &Actor) -> Result<String, sqlx::Error> {
    Ok(match actor {
        Actor::User(id) => {
            let email: Option<(String,)> =
                sqlx::query_as("SELECT email FROM users WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
            email.map(|e| e.0).unwrap_or_default()
        }
        Actor::ApiKey(id) => format!("API key {id}"),
        Actor::System(name) => name.clone(),
    })
}

pub fn actor_parts(actor: &Actor) -> (&'static str, String) {
    match actor {
        Actor::User(id) => ("user", id.to_string()),
        Actor::ApiKey(id) => ("api_key", id.to_string()),
        Actor::System(name) => ("system", name.clone()),
    }
}

/// One stored event (as read back for verification and viewing).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub organization_id: OrgId,
    pub seq: i64,
    pub occurred_at: OffsetDateTime,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_label: String,
    pub ip: Option<ipnet::IpNet>,
    pub user_agent: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

pub const STORED_COLUMNS: &str = "organization_id, seq, occurred_at, actor_type, actor_id, actor_label, ip, \
     user_agent, action, target_type, target_id, before, after, request_id, prev_hash, hash";

/// Microsecond precision: what PostgreSQL stores, so the hash survives the round trip.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.nanosecond() / 1000 * 1000;
    t.replace_nanosecond(micros).unwrap_or(t)
}

/// Writes JSON with object keys sorted at every level.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical_json(&map[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical encoding of an event (everything but its hashes).
#[allow(clippy::too_many_arguments)]
pub fn canonical_event(
    org: OrgId,
    seq: i64,
    occurred_at: OffsetDateTime,
    actor_type: &str,
    actor_id: &str,
    actor_label: &str,
    ip: Option<IpAddr>,
    user_agent: &str,
    action: &str,
    target_type: &str,
    target_id: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    request_id: &str,
) -> String {
    let mut m = Map::new();
    m.insert("v".into(), Value::from(1));
    m.insert("organization_id".into(), Value::from(org.to_string()));
    m.insert("seq".into(), Value::from(seq));
    let ts = occurred_at
        .to_offset(time::UtcOffset::UTC)
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap_or_default();
    m.insert("occurred_at".into(), Value::from(ts));
    m.insert("actor_type".into(), Value::from(actor_type));
    m.insert("actor_id".into(), Value::from(actor_id));
    m.insert("actor_label".into(), Value::from(actor_label));
    m.insert("ip".into(), ip.map(|i| Value::from(i.to_string())).unwrap_or(Value::Null));
    m.insert("user_agent".into(), Value::from(user_agent));
    m.insert("action".into(), Value::from(action));
    m.insert("target_type".into(), Value::from(target_type));
    m.insert("target_id".into(), Value::from(target_id));
    m.insert("before".into(), before.cloned().unwrap_or(Value::Null));
    m.insert("after".into(), after.cloned().unwrap_or(Value::Null));
    m.insert("request_id".into(), Value::from(request_id));
    let mut out = String::new();
    canonical_json(&Value::Object(m), &mut out);
    out
}

pub fn link_hash(prev: &[u8], canonical: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().into()
}

impl StoredEvent {
    /// The hash this row should have, recomputed from its contents and `prev`.
    pub fn recompute(&self, prev: &[u8]) -> [u8; 32] {
        let canonical = canonical_event(
            self.organization_id,
            self.seq,
            self.occurred_at,
            &self.actor_type,
            &self.actor_id,
            &self.actor_label,
            self.ip.map(|n| n.addr()),
            &self.user_agent,
            &self.action,
            &self.target_type,
            &self.target_id,
            self.before.as_ref(),
            self.after.as_ref(),
            &self.request_id,
        );
        link_hash(prev, &canonical)
    }
}

/// Appends one event to `org`'s chain. The tenant must already be set on `conn` (the callers
/// are [`record`] through an `OrgTx`, and the door's account-event fan-out). Locking the chain
/// head serializes concurrent appends in one organization.
pub(crate) async fn append(
    conn: &mut PgConnection,
    org: OrgId,
    actor: &Actor,
    actor_label: &str,
    entry: &Entry,
    ctx: &Context,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_heads (organization_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING")
        .bind(org)
        .bind(&[0u8; 32][..])
        .execute(&mut *conn)
        .await?;
    let (head_seq, head_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1 FOR UPDATE")
            .bind(org)
            .fetch_one(&mut *conn)
            .await?;
    let seq = head_seq + 1;
    let occurred_at = truncate_to_micros(ctx.now);
    let (actor_type, actor_id) = actor_parts(actor);
    let user_agent: String = ctx.user_agent.chars().take(512).collect();
    let canonical = canonical_event(
        org,
        seq,
        occurred_at,
        actor_type,
        &actor_id,
        actor_label,
        ctx.ip,
        &user_agent,
        &entry.action,
        &entry.target_type,
        &entry.target_id,
        entry.before.as_ref(),
        entry.after.as_ref(),
        &ctx.request_id,
    );
    let hash = link_hash(&head_hash, &canonical);
    sqlx::query(
        "INSERT INTO audit_events (organization_id, seq, occurred_at, actor_type, actor_id, actor_label, ip, user_agent, \
         action, target_type, target_id, before, after, request_id, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(org)
    .bind(seq)
    .bind(occurred_at)
    .bind(actor_type)
    .bind(&actor_id)
    .bind(actor_label)
    .bind(ctx.ip)
    .bind(&user_agent)
    .bind(&entry.action)
    .bind(&entry.target_type)
    .bind(&entry.target_id)
    .bind(&entry.before)
    .bind(&entry.after)
    .bind(&ctx.request_id)
    .bind(&head_hash)
    .bind(&hash[..])
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE organization_id = $1")
        .bind(org)
        .bind(seq)
        .bind(&hash[..])
        .execute(&mut *conn)
        .await?;
    chain::maybe_sign_head(conn, ctx.signer.as_ref(), org, seq, &hash, occurred_at).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        canonical_json(&json!({"b": 1, "a": {"d": [true, null], "c": "x"}}), &mut out);
        assert_eq!(out, r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
    }

    #[test]
    fn snapshots_redact_secrets() {
        let v = redact(
            json!({"name": "x", "password": "p", "nested": {"token_hash": "h", "api_key": "k"}, "webhook_secret": "s"}),
        );
        assert_eq!(v["name"], "x");
        assert_eq!(v["password"], "[redacted]");
        assert_eq!(v["nested"]["token_hash"], "[redacted]");
        assert_eq!(v["nested"]["api_key"], "[redacted]");
        assert_eq!(v["webhook_secret"], "[redacted]");
    }
}
