//! Deleting one's own account: asked for from the account security page (re-authenticated with
//! every factor, typing the account's email address), refused while the person is the last
//! Owner of an organization, then a grace period (`privacy.deletion_grace_days`, like an
//! organization's deletion) and the purge by the worker.
//!
//! At the request every session ends and a critical email goes out. During the grace period
//! every sign-in (after the second factor, when there is one) yields a *departing* session that
//! only the cancel page accepts; cancelling turns it into a normal session, and is audited.
//! API keys acting for the person stop working with their sessions (their status, copied into
//! every region, is checked with each key).
//!
//! The purge (the worker, [`purge_due`]) checks the last-Owner rule again — if the person became
//! the last Owner somewhere meanwhile, it is postponed by a day and they are told by mail —
//! then removes them from every organization (`access::departure`), and in the directory their
//! sessions, devices, second factor and recovery codes, Google identities, tokens, security
//! events and the requests and mail naming their address, and turns the `users` row into a
//! tombstone (migration 0052) so what they wrote keeps its author, shown as "Deleted user".

use serde_json::json;
use time::OffsetDateTime;

use super::events;
use super::repo::{self, User};
use super::service::{audit_account, reauthenticate_every_factor, session_lifetime};
use super::session::{self, CurrentSession, NewSession, RequestMeta, Stage};
use crate::access::departure::{self, DELETED_USER, tombstone_email};
use crate::mail::messages;
use crate::mail::outbox;
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::UserId;
use crate::platform::secret::Secret;
use crate::platform::types::Email;
use crate::state::AppState;

/// How long a postponed purge waits before the worker tries again.
pub const RETRY_AFTER_POSTPONED: time::Duration = time::Duration::days(1);

/// A pending account deletion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub requested_at: OffsetDateTime,
    pub purge_after: OffsetDateTime,
    pub postponed_at: Option<OffsetDateTime>,
}

pub async fn pending(db: &Db, user: UserId) -> DomainResult<Option<Pending>> {
    let mut tx = db.global().await?;
    let p = sqlx::query_as(
        "SELECT requested_at, purge_after, postponed_at FROM account_deletion_requests WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(p)
}

/// The refusal naming the organizations the person is the last Owner of.
fn last_owner_refusal(orgs: &[String]) -> DomainError {
    DomainError::Conflict(format!(
        "You are the last Owner of {}: make someone else Owner of {} (or delete {}) before deleting your account.",
        orgs.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", "),
        if orgs.len() == 1 { "it" } else { "each of them" },
        if orgs.len() == 1 { "the organization" } else { "them" },
    ))
}

/// Schedules the deletion of the signed-in person's account. `typed_email` must be the
/// account's address; `password` and `code` re-authenticate with every factor the account has.
/// Nothing changes unless all of it holds. Returns when the purge is due.
pub async fn request(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
    typed_email: &str,
) -> DomainResult<OffsetDateTime> {
    let user = super::service::load_user(state, current.user.id()).await?;
    if typed_email.trim().is_empty() {
        return Err(DomainError::field("confirm_email", "type your email address to confirm"));
    }
    let typed =
        Email::parse(typed_email).map_err(|_| DomainError::field("confirm_email", "must be your email address"))?;
    if typed.as_str() != user.email {
        return Err(DomainError::field("confirm_email", "must be your email address exactly as shown"));
    }
    let sole = departure::sole_owner_of(&state.db, user.id).await?;
    if !sole.is_empty() {
        return Err(last_owner_refusal(&sole));
    }
    reauthenticate_every_factor(state, meta, &user, current, password, code, "code").await?;
    let purge_after = meta.now + state.config.privacy.grace();
    let mut tx = state.db.global().await?;
    let user: User = repo::get_for_update(&mut tx, user.id).await?.ok_or(DomainError::NotFound)?;
    if user.status != "active" {
        return Err(DomainError::Conflict("This account is already scheduled for deletion.".into()));
    }
    sqlx::query("INSERT INTO account_deletion_requests (user_id, requested_at, purge_after) VALUES ($1, $2, $3)")
        .bind(user.id)
        .bind(meta.now)
        .bind(purge_after)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE users SET status = 'deleting', updated_at = $2 WHERE id = $1")
        .bind(user.id)
        .bind(meta.now)
        .execute(&mut *tx)
        .await?;
    let ended = session::revoke_all(&mut tx, user.id, None).await?;
    events::record(
        &mut tx,
        Some(user.id),
        "account_deletion_requested",
        meta,
        json!({ "purge_after": purge_after.to_string(), "sessions_ended": ended }),
    )
    .await?;
    audit_account(
        &mut tx,
        state,
        meta,
        user.id,
        &user.email,
        "member.account_deletion_requested",
        json!({ "purge_after": purge_after.to_string() }),
    )
    .await?;
    let mail = messages::account_deletion_requested(&user.email, &super::when(purge_after), &state.config.public_url());
    outbox::enqueue(
        &mut tx,
        &mail,
        &format!("account-deletion:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    departure::copy_status(&state.db, user.id, "deleting").await?;
    state.mail_wake.notify_one();
    Ok(purge_after)
}

/// Cancels the pending deletion of the account of `current` (a departing session, the only kind
/// its owner can have during the grace period). The session is replaced by a normal one.
pub async fn cancel(state: &AppState, meta: &RequestMeta, current: &CurrentSession) -> DomainResult<NewSession> {
    let mut tx = state.db.global().await?;
    let user = repo::get_for_update(&mut tx, current.user.id()).await?.ok_or(DomainError::NotFound)?;
    let started: Option<Option<OffsetDateTime>> =
        sqlx::query_scalar("SELECT purge_started_at FROM account_deletion_requests WHERE user_id = $1 FOR UPDATE")
            .bind(user.id)
            .fetch_optional(&mut *tx)
            .await?;
    match started {
        None => return Err(DomainError::Conflict("This account is not scheduled for deletion.".into())),
        Some(Some(_)) => {
            return Err(DomainError::Conflict(
                "The deletion of this account is already under way and can no longer be cancelled.".into(),
            ));
        }
        Some(None) => {}
    }
    let was: Pending = sqlx::query_as(
        "DELETE FROM account_deletion_requests WHERE user_id = $1 RETURNING requested_at, purge_after, postponed_at",
    )
    .bind(user.id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE users SET status = 'active', updated_at = $2 WHERE id = $1")
        .bind(user.id)
        .bind(meta.now)
        .execute(&mut *tx)
        .await?;
    session::delete(&mut tx, current.id).await?;
    let new = session::create(&mut tx, user.id, Stage::Complete, current.method, meta, session_lifetime(state)).await?;
    events::record(&mut tx, Some(user.id), "account_deletion_cancelled", meta, json!({})).await?;
    audit_account(
        &mut tx,
        state,
        meta,
        user.id,
        &user.email,
        "member.account_deletion_cancelled",
        json!({ "purge_after": was.purge_after.to_string() }),
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        &messages::account_deletion_cancelled(&user.email),
        &format!("account-deletion-cancelled:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    departure::copy_status(&state.db, user.id, "active").await?;
    state.mail_wake.notify_one();
    Ok(new)
}

/// What one pass of the worker did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub purged: Vec<UserId>,
    pub postponed: Vec<UserId>,
}

/// Purges every account whose grace period is over (the worker, every minute; tests call it
/// with a moved clock). An account whose person is now the last Owner of an organization is
/// postponed by [`RETRY_AFTER_POSTPONED`] and its person told by mail, once a day.
pub async fn purge_due(db: &Db, now: OffsetDateTime) -> anyhow::Result<Pass> {
    let due: Vec<UserId> = {
        let mut tx = db.home().global().await?;
        let due = sqlx::query_scalar(
            "SELECT user_id FROM account_deletion_requests WHERE purge_after <= $1 ORDER BY purge_after",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        due
    };
    let mut pass = Pass::default();
    for user in due {
        let sole = departure::sole_owner_of(db, user).await?;
        if !sole.is_empty() {
            postpone(db, user, &sole, now).await?;
            pass.postponed.push(user);
            continue;
        }
        if purge_one(db, user, now).await? {
            tracing::info!(user = %user, "purged a deleted account");
            pass.purged.push(user);
        }
    }
    Ok(pass)
}

async fn postpone(db: &Db, user: UserId, orgs: &[String], now: OffsetDateTime) -> anyhow::Result<()> {
    let mut tx = db.home().global().await?;
    let email: Option<String> = sqlx::query_scalar(
        "UPDATE account_deletion_requests r SET purge_after = $2, postponed_at = $3 FROM users u \
         WHERE r.user_id = $1 AND u.id = r.user_id RETURNING u.email",
    )
    .bind(user)
    .bind(now + RETRY_AFTER_POSTPONED)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(email) = email {
        let mail = messages::account_deletion_postponed(&email, orgs);
        outbox::enqueue(&mut tx, &mail, &format!("account-deletion-postponed:{user}:{}", now.date()), now).await?;
    }
    tx.commit().await?;
    tracing::info!(user = %user, organizations = orgs.len(), "postponed an account deletion: last Owner");
    Ok(())
}

/// Purges one account whose request is due. `false`: nothing to do (cancelled meanwhile), or
/// not yet (an organization of theirs is moving to another region; the next pass goes on).
async fn purge_one(db: &Db, user: UserId, now: OffsetDateTime) -> anyhow::Result<bool> {
    // Marked as started (under the request's row lock, which a cancel takes too) before
    // anything is removed: from here on the deletion can't be cancelled.
    let row: Option<(String, String)> = {
        let mut tx = db.home().global().await?;
        let row = sqlx::query_as(
            "UPDATE account_deletion_requests r SET purge_started_at = coalesce(r.purge_started_at, $2) \
               FROM users u WHERE u.id = r.user_id AND r.user_id = $1 AND r.purge_after <= $2 \
             RETURNING u.email, u.display_name",
        )
        .bind(user)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row
    };
    let Some((email, name)) = row else { return Ok(false) };
    // The organizations first: a crash after this leaves the request in place, and the next
    // pass finishes (each step finds nothing left to do the second time).
    if departure::remove_from_organizations(db, user, &email, &name, now).await?.waits_for_move {
        tracing::info!(user = %user, "an account deletion waits for an organization's region move");
        return Ok(false);
    }
    let mut tx = db.home().global().await?;
    // The request is still there (a cancel can't take it once the purge has started; this
    // guards against anything else having removed it).
    let locked: Option<String> = sqlx::query_scalar(
        "SELECT u.status FROM users u JOIN account_deletion_requests r ON r.user_id = u.id \
                             WHERE u.id = $1 FOR UPDATE OF u",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        return Ok(false);
    }
    for table in ["sessions", "known_devices", "recovery_codes", "email_tokens", "oidc_identities", "totp_enrollments"]
    {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1")).bind(user).execute(&mut *tx).await?;
    }
    sqlx::query("SELECT account_purge_security_events($1)").bind(user).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM account_requests WHERE lower(email) = $1").bind(&email).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM mail_suppressions WHERE address = $1").bind(&email).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM mail_soft_bounces WHERE address = $1").bind(&email).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM outbox WHERE lower(recipient) = $1").bind(&email).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM account_deletion_requests WHERE user_id = $1").bind(user).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE users SET email = $2, display_name = $3, password_hash = NULL, email_verified_at = NULL, \
           password_changed_at = NULL, totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL, \
           disabled_at = NULL, status = 'deleted', deleted_at = $4, updated_at = $4, \
           privilege_epoch = privilege_epoch + 1 \
         WHERE id = $1",
    )
    .bind(user)
    .bind(tombstone_email(user))
    .bind(DELETED_USER)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
