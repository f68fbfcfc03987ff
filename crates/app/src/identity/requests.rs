//! Requests that name an address — sign-up, password reset, a failed sign-in — decided by the
//! mail worker.
//!
//! A request that names an address must not take longer for an address with an account than
//! for one without: the time would tell an outsider which addresses exist. So the request
//! itself does the same work whatever the address ([`enqueue`]: one row, after the password is
//! hashed for a sign-up or checked for a sign-in), and the worker ([`process_due`], run before
//! each round of delivery) looks the address up and does what the request means: a new account
//! and its verification link, a note to an existing account's owner, a reset link, the security
//! and audit events of a failed sign-in and its lockout notice — or nothing. The row is deleted
//! in the transaction that does it, so a crash loses nothing and nothing happens twice.

use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::session::RequestMeta;
use super::tokens::{self, Purpose};
use super::{events, repo};
use crate::mail::messages;
use crate::mail::outbox;
use crate::platform::db::Db;
use crate::platform::types::Email;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Kind {
    SignUp,
    PasswordReset,
    SignInFailed,
}

/// What a request carries besides its kind and address.
pub struct Request<'a> {
    pub kind: Kind,
    pub email: &'a Email,
    /// Sign-up: the argon2id hash of the chosen password.
    pub password_hash: Option<&'a str>,
    /// Sign-up: the display name (may be empty).
    pub display_name: &'a str,
    /// Failed sign-in: `{"lockout_minutes": n}` when this failure started a lockout.
    pub detail: Value,
}

impl<'a> Request<'a> {
    pub fn new(kind: Kind, email: &'a Email) -> Self {
        Self { kind, email, password_hash: None, display_name: "", detail: json!({}) }
    }
}

/// What the worker needs to decide requests: where links point, and the audit key.
#[derive(Clone)]
pub struct Settings {
    pub public_url: String,
    pub audit_signer: Option<Arc<crate::audit::chain::Signer>>,
}

/// Records a request in the caller's transaction: one insert, the same for every address.
pub async fn enqueue(conn: &mut PgConnection, request: &Request<'_>, meta: &RequestMeta) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_requests \
         (id, kind, email, password_hash, display_name, detail, ip, user_agent, request_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(request.kind)
    .bind(request.email.as_str())
    .bind(request.password_hash)
    .bind(request.display_name)
    .bind(&request.detail)
    .bind(meta.ip)
    .bind(&meta.user_agent)
    .bind(meta.request_id.chars().take(64).collect::<String>())
    .bind(meta.now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: Kind,
    email: String,
    password_hash: Option<String>,
    display_name: String,
    detail: Value,
    ip: Option<ipnet::IpNet>,
    user_agent: String,
    request_id: String,
    created_at: OffsetDateTime,
}

/// Decides up to `limit` waiting requests (oldest first, one transaction each, rows locked
/// with `SKIP LOCKED` so several workers share them). Returns how many were decided.
pub async fn process_due(
    db: &Db,
    settings: &Settings,
    now: OffsetDateTime,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    let mut done = 0;
    let mut attempts = 0;
    while done < limit && attempts < limit * 2 {
        attempts += 1;
        let mut tx = db.global().await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, kind, email, password_hash, display_name, detail, ip, user_agent, request_id, created_at \
             FROM account_requests ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { break };
        match decide(&mut tx, &row, settings, now).await {
            Ok(()) => {
                sqlx::query("DELETE FROM account_requests WHERE id = $1").bind(row.id).execute(&mut *tx).await?;
                tx.commit().await?;
                done += 1;
            }
            // Another worker created the account a moment ago: decided again, as for an
            // existing one. (Dropping the transaction rolls it back.)
            Err(e) if is_unique_violation(&e) => drop(tx),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

async fn decide(
    conn: &mut PgConnection,
    row: &Row,
    settings: &Settings,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let base = settings.public_url.as_str();
    // Events are dated when the request was made; links and tokens when they are issued.
    let meta = RequestMeta {
        ip: row.ip.map(|i| i.addr()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        user_agent: row.user_agent.clone(),
        now: row.created_at,
        request_id: row.request_id.clone(),
    };
    // The address was parsed when the request was made; a row that no longer parses (it
    // can't, but) is dropped rather than retried forever.
    let Ok(email) = Email::parse(&row.email) else {
        return Ok(());
    };
    let existing = repo::find_by_email(conn, &email).await?;
    match (row.kind, existing) {
        (Kind::PasswordReset, Some(user)) if user.disabled_at.is_none() => {
            let token = tokens::issue(conn, user.id, Purpose::ResetPassword, None, now).await?;
            let link = format!("{base}/reset-password?token={token}");
            outbox::enqueue(conn, &messages::reset_password(&user.email, &link), &format!("reset:{token}"), now)
                .await?;
            events::record(conn, Some(user.id), "password_reset_requested", &meta, json!({})).await?;
        }
        (Kind::PasswordReset, _) => {}
        (Kind::SignUp, Some(existing)) => {
            // Tell the owner, at most once an hour, instead of telling the requester.
            let hour = now.unix_timestamp() / 3600;
            outbox::enqueue(
                conn,
                &messages::signup_attempt_on_existing(&existing.email, base),
                &format!("signup-existing:{}:{hour}", existing.id),
                now,
            )
            .await?;
            events::record(conn, Some(existing.id), "sign_up_attempt_existing", &meta, json!({})).await?;
        }
        (Kind::SignUp, None) => {
            let Some(hash) = row.password_hash.as_deref() else { return Ok(()) };
            let user = repo::create(conn, &email, &row.display_name, Some(hash), None, now).await?;
            let token = tokens::issue(conn, user.id, Purpose::VerifyEmail, None, now).await?;
            let link = format!("{base}/verify-email?token={token}");
            outbox::enqueue(conn, &messages::verify_email(&user.email, &link), &format!("verify:{token}"), now).await?;
            events::record(conn, Some(user.id), "sign_up", &meta, json!({})).await?;
        }
        (Kind::SignInFailed, None) => {
            events::record(conn, None, "sign_in_failed", &meta, json!({})).await?;
        }
        (Kind::SignInFailed, Some(user)) => {
            events::record(conn, Some(user.id), "sign_in_failed", &meta, json!({})).await?;
            audit(conn, settings, now, &meta, &user, "member.sign_in_failed", json!({})).await?;
            if let Some(minutes) = row.detail.get("lockout_minutes").and_then(Value::as_i64) {
                let detail = json!({ "minutes": minutes });
                events::record(conn, Some(user.id), "lockout", &meta, detail.clone()).await?;
                audit(conn, settings, now, &meta, &user, "member.locked_out", detail).await?;
                outbox::enqueue(
                    conn,
                    &messages::lockout(&user.email, minutes, base),
                    &format!("lockout:{}:{}", user.id, meta.now.unix_timestamp()),
                    now,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// An account event in the audit log of each of the user's organizations.
async fn audit(
    conn: &mut PgConnection,
    settings: &Settings,
    now: OffsetDateTime,
    meta: &RequestMeta,
    user: &repo::User,
    action: &str,
    detail: Value,
) -> Result<(), sqlx::Error> {
    let ctx = crate::audit::Context {
        ip: Some(meta.ip),
        user_agent: meta.user_agent.clone(),
        request_id: meta.request_id.clone(),
        // Appended now, in the chain's order (its times follow its sequence).
        now,
        signer: settings.audit_signer.clone(),
        plans: None,
    };
    let entry = crate::audit::Entry::new(action, "user", user.id).after(detail);
    crate::access::audit_account_event(conn, user.id, &user.email, &entry, &ctx).await
}
