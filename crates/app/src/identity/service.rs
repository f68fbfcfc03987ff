//! Account flows. Every way of obtaining a session ends in [`establish_session`], the one
//! second-factor gate: a user with two-factor authentication gets a *pending* session that
//! only the second-factor page accepts, whichever way they came in.
//!
//! Messages never tell an outsider whether an email has an account: sign-up, sign-in and
//! password reset answer the same way, with the same password-hashing work, for known and
//! unknown addresses, and leave whatever depends on the answer to the worker (`requests`), so
//! they take the same time too.

use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::repo::{self, User};
use super::session::{self, CurrentSession, Method, NewSession, RequestMeta, Stage};
use super::throttle::{self, Kind};
use super::tokens::{self, Purpose};
use super::{events, requests, totp};
use crate::mail::messages;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::crypto::sha256;
use crate::platform::error::{DomainError, DomainResult, FieldError};
use crate::platform::ids::UserId;
use crate::platform::keys::{At, Scope};
use crate::platform::secret::Secret;
use crate::platform::types::{Email, parse_name};
use crate::state::AppState;

pub const BAD_CREDENTIALS: &str = "Email or password is incorrect.";

/// A session handed to the browser, with the device cookie to set when it is complete.
pub struct SignedIn {
    pub session: NewSession,
    pub device_token: Option<String>,
}

impl From<super::password::Busy> for DomainError {
    fn from(e: super::password::Busy) -> Self {
        DomainError::Unavailable(e.to_string())
    }
}

fn totp_context(user: UserId) -> String {
    format!("totp:{user}")
}

/// A TOTP secret sealed with the installation's data key, bound to the user's row.
pub fn seal_totp_secret(state: &AppState, user: UserId, secret: &[u8]) -> DomainResult<Vec<u8>> {
    let row = user.to_string();
    state.keys.seal(Scope::Installation, At::new("users", "totp_secret", &row), secret).map_err(DomainError::internal)
}

/// Opens a stored TOTP secret: envelope-sealed, or sealed with the master key before
/// (`totp_context`) until `clientflow keys reseal` has converted it.
pub fn open_totp_secret(state: &AppState, user: UserId, sealed: &[u8]) -> DomainResult<Vec<u8>> {
    let row = user.to_string();
    state
        .keys
        .open(Scope::Installation, At::new("users", "totp_secret", &row), sealed, Some(&totp_context(user)))
        .map_err(DomainError::internal)
}

/// Records an account event in the audit log of each of the user's organizations, in the
/// caller's transaction.
pub(super) async fn audit_account(
    conn: &mut PgConnection,
    state: &AppState,
    meta: &RequestMeta,
    user_id: UserId,
    email: &str,
    action: &str,
    detail: serde_json::Value,
) -> DomainResult<()> {
    let ctx = crate::audit::Context {
        ip: Some(meta.ip),
        user_agent: meta.user_agent.clone(),
        request_id: meta.request_id.clone(),
        now: meta.now,
        signer: Some(state.audit_signer.clone()),
        plans: None,
    };
    let entry = crate::audit::Entry::new(action, "user", user_id).after(detail);
    crate::access::audit_account_event(conn, user_id, email, &entry, &ctx).await?;
    Ok(())
}

/// Queues a message and wakes the mail worker once the transaction commits.
async fn send(conn: &mut PgConnection, mail: OutgoingMail, key: String, now: OffsetDateTime) -> DomainResult<()> {
    outbox::enqueue(conn, &mail, &key, now).await?;
    Ok(())
}

/// The second-factor gate. Creates the session a successful first step earns: complete, or
/// pending when the user has a second factor.
pub async fn establish_session(
    conn: &mut PgConnection,
    state: &AppState,
    user: &User,
    method: Method,
    meta: &RequestMeta,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    if user.disabled_at.is_some() {
        return Err(DomainError::Forbidden("This account is disabled.".into()));
    }
    let stage = if user.two_factor_enabled() { Stage::Pending } else { signed_in_stage(user) };
    let session = session::create(conn, user.id, stage, method, meta, session_lifetime(state)).await?;
    let device_token = match stage {
        Stage::Complete => Some(session::remember_device(conn, user.id, device, meta.now).await?),
        Stage::Pending | Stage::Departing => None,
    };
    let kind = match stage {
        Stage::Pending => "sign_in_first_factor",
        Stage::Complete => "sign_in",
        Stage::Departing => "sign_in_during_account_deletion",
    };
    events::record(conn, Some(user.id), kind, meta, json!({ "method": method.label() })).await?;
    if stage == Stage::Complete {
        audit_account(conn, state, meta, user.id, &user.email, "member.signed_in", json!({ "method": method.label() }))
            .await?;
    }
    Ok(SignedIn { session, device_token })
}

/// The stage of a session once every factor is proven: complete, or departing when the account
/// is scheduled for deletion (only the page offering to cancel it accepts such a session).
fn signed_in_stage(user: &User) -> Stage {
    if user.status == "deleting" { Stage::Departing } else { Stage::Complete }
}

pub async fn sign_up(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: &Secret,
    display_name: &str,
) -> DomainResult<()> {
    let mut errors = Vec::new();
    let email = Email::parse(email).map_err(|m| errors.push(FieldError::new("email", m))).ok();
    let display_name = if display_name.trim().is_empty() {
        String::new()
    } else {
        parse_name(display_name).map_err(|m| errors.push(FieldError::new("display_name", m))).unwrap_or_default()
    };
    if let Some(email) = &email
        && let Err(m) = super::password::check_policy(password.expose(), email.as_str(), &display_name)
    {
        errors.push(FieldError::new("password", m));
    }
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(DomainError::Invalid(errors));
    };
    // Hash whether or not the account exists, and write one request row either way: the same
    // work for every address. The worker decides what the request means (`requests`).
    let hash = state.hasher.hash(password).await?;
    let mut tx = state.db.global().await?;
    let request = requests::Request {
        password_hash: Some(&hash),
        display_name: &display_name,
        ..requests::Request::new(requests::Kind::SignUp, &email)
    };
    requests::enqueue(&mut tx, &request, meta).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// 429 with `Retry-After` and a message saying how long (`{m}` is replaced by minutes).
fn locked_error(until: OffsetDateTime, now: OffsetDateTime, message: &str) -> DomainError {
    DomainError::Throttled {
        message: message.replace("{m}", &throttle::minutes_left(until, now).to_string()),
        retry_after_secs: (until - now).whole_seconds().max(1) as u64,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

pub async fn verify_email(
    state: &AppState,
    meta: &RequestMeta,
    token: &str,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    let mut tx = state.db.global().await?;
    let Some(redeemed) = tokens::consume(&mut tx, token, Purpose::VerifyEmail, meta.now).await? else {
        return Err(DomainError::Malformed(
            "This link is invalid, expired or already used. Sign in to get a new one.".into(),
        ));
    };
    repo::mark_email_verified(&mut tx, redeemed.user_id, meta.now).await?;
    let user = repo::get(&mut tx, redeemed.user_id).await?.ok_or(DomainError::NotFound)?;
    events::record(&mut tx, Some(user.id), "email_verified", meta, json!({})).await?;
    let signed_in = establish_session(&mut tx, state, &user, Method::EmailVerification, meta, device).await?;
    tx.commit().await?;
    Ok(signed_in)
}

/// Whether a password attempt for `key` may proceed: not locked, or locked but coming from a
/// device this user has signed in from before.
async fn password_gate(
    conn: &mut PgConnection,
    key: &[u8; 32],
    user: Option<&User>,
    device: Option<&str>,
    now: OffsetDateTime,
) -> DomainResult<Option<String>> {
    let known_device = match (user, device) {
        (Some(u), Some(d)) => session::is_known_device(conn, u.id, d, now).await?.then(|| d.to_string()),
        _ => None,
    };
    let locked = match &known_device {
        // A known device has a budget of its own.
        Some(d) => throttle::locked_until(conn, &throttle::key(Kind::Device, d), Kind::Device, now).await?,
        None => throttle::locked_until(conn, key, Kind::Password, now).await?,
    };
    if let Some(until) = locked {
        return Err(locked_error(
            until,
            now,
            "Too many failed attempts. Try again in {m} minutes, or reset your password.",
        ));
    }
    Ok(known_device)
}

pub async fn sign_in(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: &Secret,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    let email = Email::parse(email).ok();
    let key = throttle::key(Kind::Password, email.as_ref().map(Email::as_str).unwrap_or(""));
    let mut conn = state.db.global().await?;
    let user = match &email {
        Some(e) => repo::find_by_email(&mut conn, e).await?,
        None => None,
    };
    let known_device = password_gate(&mut conn, &key, user.as_ref(), device, meta.now).await?;
    // Don't hold a connection while hashing.
    conn.commit().await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = state.hasher.verify(password, stored.as_deref()).await?;

    let mut tx = state.db.global().await?;
    if !ok {
        let failure = match &known_device {
            Some(d) => {
                throttle::record_failure(
                    &mut tx,
                    &throttle::key(Kind::Device, d),
                    Kind::Device,
                    meta.now,
                    &state.config.identity,
                )
                .await?
            }
            None => throttle::record_failure(&mut tx, &key, Kind::Password, meta.now, &state.config.identity).await?,
        };
        // What the failure means for an account — its security event, the audit log of its
        // organizations, a lockout notice — the worker records: the same work here for every
        // address (`requests`).
        match &email {
            Some(email) => {
                let mut request = requests::Request::new(requests::Kind::SignInFailed, email);
                if failure.locked_now {
                    request.detail = json!({ "lockout_minutes": state.config.identity.lockout_minutes });
                }
                requests::enqueue(&mut tx, &request, meta).await?;
            }
            None => events::record(&mut tx, None, "sign_in_failed", meta, json!({})).await?,
        }
        tx.commit().await?;
        state.mail_wake.notify_one();
        return Err(DomainError::NotAuthenticated(BAD_CREDENTIALS.into()));
    }
    let user = user.ok_or_else(|| DomainError::NotAuthenticated(BAD_CREDENTIALS.into()))?;
    throttle::clear(&mut tx, &key, Kind::Password).await?;
    if user.email_verified_at.is_none() {
        // Only someone who knows the password learns this.
        let token = tokens::issue(&mut tx, user.id, Purpose::VerifyEmail, None, meta.now).await?;
        let link = format!("{}/verify-email?token={token}", state.config.public_url());
        send(&mut tx, messages::verify_email(&user.email, &link), format!("verify:{token}"), meta.now).await?;
        tx.commit().await?;
        state.mail_wake.notify_one();
        return Err(DomainError::Forbidden("Confirm your email address first: we just sent you a new link.".into()));
    }
    let signed_in = establish_session(&mut tx, state, &user, Method::Password, meta, device).await?;
    tx.commit().await?;
    Ok(signed_in)
}

/// The second step: a TOTP code (each accepted at most once) or a recovery code. Replaces the
/// pending session with a new, complete one.
pub async fn complete_second_factor(
    state: &AppState,
    meta: &RequestMeta,
    pending: &CurrentSession,
    code: &str,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    let user_id = pending.user.id();
    let key = throttle::key(Kind::SecondFactor, &user_id.to_string());
    let mut tx = state.db.global().await?;
    if let Some(until) = throttle::locked_until(&mut tx, &key, Kind::SecondFactor, meta.now).await? {
        return Err(locked_error(until, meta.now, "Too many wrong codes. Try again in {m} minutes."));
    }
    let user = repo::get_for_update(&mut tx, user_id).await?.ok_or(DomainError::NotFound)?;
    let accepted = match verify_second_factor(&mut tx, state, &user, code, meta).await? {
        Some(how) => how,
        None => {
            let failure =
                throttle::record_failure(&mut tx, &key, Kind::SecondFactor, meta.now, &state.config.identity).await?;
            events::record(&mut tx, Some(user.id), "second_factor_failed", meta, json!({})).await?;
            if failure.locked_now {
                let minutes = state.config.identity.lockout_minutes as i64;
                events::record(&mut tx, Some(user.id), "second_factor_lockout", meta, json!({})).await?;
                send(
                    &mut tx,
                    messages::second_factor_lockout(&user.email, minutes),
                    format!("2fa-lockout:{}:{}", user.id, meta.now.unix_timestamp()),
                    meta.now,
                )
                .await?;
                // The half-finished sign-in is over: start again from the password.
                session::delete(&mut tx, pending.id).await?;
            }
            tx.commit().await?;
            state.mail_wake.notify_one();
            return Err(DomainError::NotAuthenticated(
                "That code is not valid. Check your authenticator app and try again.".into(),
            ));
        }
    };
    throttle::clear(&mut tx, &key, Kind::SecondFactor).await?;
    match session::held_password(&mut tx, pending.id).await? {
        // A reset waiting on this second factor: now it happens (and ends every session).
        Some(hash) => apply_reset_password(&mut tx, state, meta, &user, &hash).await?,
        None => session::delete(&mut tx, pending.id).await?,
    }
    let stage = signed_in_stage(&user);
    let session = session::create(&mut tx, user.id, stage, pending.method, meta, session_lifetime(state)).await?;
    if stage == Stage::Departing {
        events::record(
            &mut tx,
            Some(user.id),
            "sign_in_during_account_deletion",
            meta,
            json!({ "second_factor": accepted }),
        )
        .await?;
        tx.commit().await?;
        return Ok(SignedIn { session, device_token: None });
    }
    let device_token = session::remember_device(&mut tx, user.id, device, meta.now).await?;
    events::record(
        &mut tx,
        Some(user.id),
        "sign_in",
        meta,
        json!({ "method": pending.method.label(), "second_factor": accepted }),
    )
    .await?;
    audit_account(
        &mut tx,
        state,
        meta,
        user.id,
        &user.email,
        "member.signed_in",
        json!({ "method": pending.method.label(), "second_factor": accepted }),
    )
    .await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(SignedIn { session, device_token: Some(device_token) })
}

/// Checks a TOTP or recovery code for `user`; on success records its use (replay-proof) and
/// says which kind it was.
async fn verify_second_factor(
    conn: &mut PgConnection,
    state: &AppState,
    user: &User,
    code: &str,
    meta: &RequestMeta,
) -> DomainResult<Option<&'static str>> {
    let Some(sealed) = user.totp_secret.as_deref().filter(|_| user.two_factor_enabled()) else {
        return Ok(None);
    };
    let trimmed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if trimmed.len() == totp::DIGITS && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let secret = open_totp_secret(state, user.id, sealed)?;
        let Some(step) = totp::matching_step(&secret, &trimmed, meta.now.unix_timestamp().max(0) as u64) else {
            return Ok(None);
        };
        // Compare-and-set: a code is good for one use, and never for a step before the last.
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(user.id)
        .bind(step as i64)
        .execute(&mut *conn)
        .await?;
        return Ok((done.rows_affected() == 1).then_some("totp"));
    }
    let normalized = totp::normalize_recovery_code(code);
    if normalized.len() != 12 {
        return Ok(None);
    }
    let done =
        sqlx::query("UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
            .bind(user.id)
            .bind(&sha256(normalized.as_bytes())[..])
            .bind(meta.now)
            .execute(&mut *conn)
            .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let (remaining,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user.id)
            .fetch_one(&mut *conn)
            .await?;
    events::record(conn, Some(user.id), "recovery_code_used", meta, json!({ "remaining": remaining })).await?;
    audit_account(
        conn,
        state,
        meta,
        user.id,
        &user.email,
        "member.recovery_code_used",
        json!({ "remaining": remaining }),
    )
    .await?;
    send(
        conn,
        messages::recovery_code_used(&user.email, remaining, &state.config.public_url()),
        format!("recovery-used:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    Ok(Some("recovery_code"))
}

/// Asks for a reset link. The request is one row whatever the address (`requests`): whether
/// it has an account, and so whether a link is sent, is decided by the worker, so the answer
/// takes the same time for every address.
pub async fn request_password_reset(state: &AppState, meta: &RequestMeta, email: &str) -> DomainResult<()> {
    let Ok(email) = Email::parse(email) else {
        return Err(DomainError::field("email", "must be an email address like name@example.com"));
    };
    let mut tx = state.db.global().await?;
    let request = requests::Request::new(requests::Kind::PasswordReset, &email);
    requests::enqueue(&mut tx, &request, meta).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// Whether a reset link is still good (to show the form or say it isn't).
pub async fn reset_token_valid(state: &AppState, token: &str, now: OffsetDateTime) -> DomainResult<bool> {
    let mut conn = state.db.global().await?;
    Ok(tokens::peek(&mut conn, token, Purpose::ResetPassword, now).await?.is_some())
}

pub async fn reset_password(
    state: &AppState,
    meta: &RequestMeta,
    token: &str,
    password: &Secret,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    let invalid =
        || DomainError::Malformed("This reset link is invalid, expired or already used. Ask for a new one.".into());
    let user = {
        let mut conn = state.db.global().await?;
        let redeemed = tokens::peek(&mut conn, token, Purpose::ResetPassword, meta.now).await?.ok_or_else(invalid)?;
        repo::get(&mut conn, redeemed.user_id).await?.ok_or_else(invalid)?
    };
    super::password::check_policy(password.expose(), &user.email, &user.display_name)
        .map_err(|m| DomainError::field("password", m))?;
    let hash = state.hasher.hash(password).await?;
    let mut tx = state.db.global().await?;
    let redeemed = tokens::consume(&mut tx, token, Purpose::ResetPassword, meta.now).await?.ok_or_else(invalid)?;
    let user = repo::get_for_update(&mut tx, redeemed.user_id).await?.ok_or_else(invalid)?;
    let signed_in = if user.two_factor_enabled() {
        // The mailbox alone changes nothing on an account with a second factor: the new
        // password waits on the pending session and is applied when the second factor is
        // given (`complete_second_factor`). Until then the old password and every session
        // stay as they were.
        let signed_in = establish_session(&mut tx, state, &user, Method::Reset, meta, device).await?;
        session::hold_password(&mut tx, signed_in.session.id, &hash).await?;
        events::record(&mut tx, Some(user.id), "password_reset_pending", meta, json!({})).await?;
        signed_in
    } else {
        apply_reset_password(&mut tx, state, meta, &user, &hash).await?;
        establish_session(&mut tx, state, &user, Method::Reset, meta, device).await?
    };
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(signed_in)
}

/// Sets the password chosen through a reset link and ends every session of the account.
async fn apply_reset_password(
    conn: &mut PgConnection,
    state: &AppState,
    meta: &RequestMeta,
    user: &User,
    hash: &str,
) -> DomainResult<()> {
    repo::set_password(conn, user.id, hash, meta.now).await?;
    // Whoever held a session with the old password is out.
    session::revoke_all(conn, user.id, None).await?;
    throttle::clear(conn, &throttle::key(Kind::Password, &user.email), Kind::Password).await?;
    // Proving control of the mailbox also verifies it.
    repo::mark_email_verified(conn, user.id, meta.now).await?;
    events::record(conn, Some(user.id), "password_reset", meta, json!({})).await?;
    audit_account(conn, state, meta, user.id, &user.email, "member.password_reset", json!({})).await?;
    send(
        conn,
        messages::password_changed(&user.email),
        format!("pw-changed:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    Ok(())
}

/// How long after signing in an account with neither a password nor a second factor (Google
/// only) may make a sensitive change: the sign-in itself is the proof, and it must be fresh.
pub const RECENT_SIGN_IN: time::Duration = time::Duration::minutes(10);

/// Re-authentication for sensitive changes inside a signed-in session (the password, the
/// email address): the password when the account has one, a current second-factor code when it
/// has only that, and a recent sign-in (within [`RECENT_SIGN_IN`]) when it has neither.
///
/// Failures count in a budget of the user's own (`Kind::Reauth`), not in the sign-in lockout:
/// a stolen session can't be used to lock the owner out of signing in, and a lockout started
/// by strangers guessing at the sign-in form doesn't stop the owner, already signed in, from
/// confirming a change.
pub async fn reauthenticate(
    state: &AppState,
    meta: &RequestMeta,
    user: &User,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
) -> DomainResult<()> {
    confirm_identity(state, meta, user, current, password, code, Factors::One, "code").await
}

/// Re-authentication for changing the second factor itself — setting one up, replacing or
/// removing it, new recovery codes: the first factor again (the password; for an account
/// without one, a sign-in within [`RECENT_SIGN_IN`]) and, when a factor is enrolled, a current
/// code from it or one of its recovery codes (`code`, named `code_field` on the form). A
/// stolen session alone changes nothing, and neither does a stolen password.
pub async fn reauthenticate_every_factor(
    state: &AppState,
    meta: &RequestMeta,
    user: &User,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
    code_field: &'static str,
) -> DomainResult<()> {
    confirm_identity(state, meta, user, current, password, code, Factors::Every, code_field).await
}

/// What a form for a sensitive organization change asks for to confirm it's the signed-in
/// person: the password when the account has one, else a current second-factor code, else
/// nothing beyond a sign-in within [`RECENT_SIGN_IN`]; the same order as [`reauthenticate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReauthPrompt {
    pub has_password: bool,
    pub two_factor: bool,
    pub recent_minutes: i64,
}

impl ReauthPrompt {
    /// The prompt for `user` (`None`, an API key or the system, never sees these forms: it
    /// gets the password field, which it can't fill).
    pub async fn for_user(state: &AppState, user: Option<UserId>) -> DomainResult<Self> {
        let recent_minutes = RECENT_SIGN_IN.whole_minutes();
        let Some(id) = user else {
            return Ok(ReauthPrompt { has_password: true, two_factor: false, recent_minutes });
        };
        let user = load_user(state, id).await?;
        Ok(ReauthPrompt {
            has_password: user.password_hash.is_some(),
            two_factor: user.two_factor_enabled(),
            recent_minutes,
        })
    }
}

/// Re-authentication for a security change to an organization: its IP allowlist, its session
/// and two-factor policy, its ownership, a new API key. A stolen session cookie alone can't
/// lock the owners out, lift the allowlist or mint a long-lived key; it needs the password
/// (or a code, or a fresh sign-in) as [`reauthenticate`] asks, failures counting in the same
/// per-user budget.
pub async fn confirm_sensitive_change(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
) -> DomainResult<()> {
    let user = load_user(state, current.user.id()).await?;
    reauthenticate(state, meta, &user, current, password, code).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factors {
    /// One proof: the password, else a code, else a recent sign-in.
    One,
    /// The first factor (password or recent sign-in) and the enrolled second factor.
    Every,
}

#[allow(clippy::too_many_arguments)]
async fn confirm_identity(
    state: &AppState,
    meta: &RequestMeta,
    user: &User,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
    factors: Factors,
    code_field: &'static str,
) -> DomainResult<()> {
    let wants_code = factors == Factors::Every && user.two_factor_enabled();
    if wants_code && code.trim().is_empty() {
        return Err(DomainError::field(
            code_field,
            "is required: a code from your authenticator app, or a recovery code",
        ));
    }
    let key = throttle::key(Kind::Reauth, &user.id.to_string());
    {
        let mut conn = state.db.global().await?;
        if let Some(until) = throttle::locked_until(&mut conn, &key, Kind::Reauth, meta.now).await? {
            return Err(locked_error(
                until,
                meta.now,
                "Too many failed attempts to confirm it's you. Try again in {m} minutes.",
            ));
        }
    }
    let recent = || {
        if meta.now - current.created_at <= RECENT_SIGN_IN {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "To confirm it's you, sign out and sign in again, then make this change within {} minutes.",
                RECENT_SIGN_IN.whole_minutes()
            )))
        }
    };
    let mut code_checked = false;
    let (mut ok, mut field) = match &user.password_hash {
        Some(hash) => (state.hasher.verify(password, Some(hash)).await?, "current_password"),
        None if factors == Factors::One && user.two_factor_enabled() => {
            let mut tx = state.db.global().await?;
            let ok = verify_second_factor(&mut tx, state, user, code, meta).await?.is_some();
            tx.commit().await?;
            code_checked = true;
            (ok, code_field)
        }
        None => {
            recent()?;
            (true, "")
        }
    };
    if ok && wants_code && !code_checked {
        let mut tx = state.db.global().await?;
        ok = verify_second_factor(&mut tx, state, user, code, meta).await?.is_some();
        tx.commit().await?;
        field = code_field;
    }
    if ok && field.is_empty() {
        // Only a recent sign-in was asked for: nothing was guessed, nothing to count.
        return Ok(());
    }
    let mut tx = state.db.global().await?;
    if !ok {
        let failure = throttle::record_failure(&mut tx, &key, Kind::Reauth, meta.now, &state.config.identity).await?;
        events::record(&mut tx, Some(user.id), "reauthentication_failed", meta, json!({})).await?;
        if failure.locked_now {
            events::record(&mut tx, Some(user.id), "reauthentication_locked", meta, json!({})).await?;
        }
        tx.commit().await?;
        return Err(DomainError::field(field, "is not correct"));
    }
    throttle::clear(&mut tx, &key, Kind::Reauth).await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces the current session with a fresh one (same user, complete) after a privilege or
/// credential change, ending every other session when `end_others`.
async fn rotate(
    conn: &mut PgConnection,
    state: &AppState,
    current: &CurrentSession,
    meta: &RequestMeta,
    end_others: bool,
) -> DomainResult<NewSession> {
    if end_others {
        session::revoke_all(conn, current.user.id(), None).await?;
    } else {
        session::delete(conn, current.id).await?;
    }
    Ok(session::create(conn, current.user.id(), Stage::Complete, current.method, meta, session_lifetime(state)).await?)
}

pub async fn load_user(state: &AppState, id: UserId) -> DomainResult<User> {
    let mut conn = state.db.global().await?;
    repo::get(&mut conn, id).await?.ok_or(DomainError::NotFound)
}

pub async fn change_password(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    current_password: &Secret,
    code: &str,
    new_password: &Secret,
) -> DomainResult<NewSession> {
    let user = load_user(state, current.user.id()).await?;
    // Setting a first password (a Google-only account) is as sensitive as changing one.
    reauthenticate(state, meta, &user, current, current_password, code).await?;
    super::password::check_policy(new_password.expose(), &user.email, &user.display_name)
        .map_err(|m| DomainError::field("new_password", m))?;
    let hash = state.hasher.hash(new_password).await?;
    let mut tx = state.db.global().await?;
    repo::set_password(&mut tx, user.id, &hash, meta.now).await?;
    let session = rotate(&mut tx, state, current, meta, true).await?;
    events::record(&mut tx, Some(user.id), "password_changed", meta, json!({})).await?;
    audit_account(&mut tx, state, meta, user.id, &user.email, "member.password_changed", json!({})).await?;
    send(
        &mut tx,
        messages::password_changed(&user.email),
        format!("pw-changed:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(session)
}

pub async fn request_email_change(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
    new_email: &str,
) -> DomainResult<()> {
    let new_email = Email::parse(new_email).map_err(|m| DomainError::field("new_email", m))?;
    let user = load_user(state, current.user.id()).await?;
    if new_email.as_str() == user.email {
        return Err(DomainError::field("new_email", "is already your email address"));
    }
    reauthenticate(state, meta, &user, current, password, code).await?;
    let mut tx = state.db.global().await?;
    // Whether the new address is taken is only revealed at confirmation, to its owner.
    let token = tokens::issue(&mut tx, user.id, Purpose::ChangeEmail, Some(new_email.as_str()), meta.now).await?;
    let link = format!("{}/account/email/confirm?token={token}", state.config.public_url());
    send(&mut tx, messages::confirm_new_email(new_email.as_str(), &link), format!("email-change:{token}"), meta.now)
        .await?;
    send(
        &mut tx,
        messages::email_change_requested(&user.email, new_email.as_str()),
        format!("email-change-notice:{token}"),
        meta.now,
    )
    .await?;
    events::record(&mut tx, Some(user.id), "email_change_requested", meta, json!({})).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// Confirms a new email address: every session ends (the account's identifier changed), and
/// the browser that confirmed gets a new one through the second-factor gate.
pub async fn confirm_email_change(
    state: &AppState,
    meta: &RequestMeta,
    token: &str,
    device: Option<&str>,
) -> DomainResult<SignedIn> {
    let mut tx = state.db.global().await?;
    let invalid = || DomainError::Malformed("This link is invalid, expired or already used.".into());
    let redeemed = tokens::consume(&mut tx, token, Purpose::ChangeEmail, meta.now).await?.ok_or_else(invalid)?;
    let new_email = redeemed.new_email.ok_or_else(invalid)?;
    let user = repo::get_for_update(&mut tx, redeemed.user_id).await?.ok_or_else(invalid)?;
    let old_email = user.email.clone();
    let updated = sqlx::query("UPDATE users SET email = $2, email_verified_at = $3, updated_at = $3 WHERE id = $1")
        .bind(user.id)
        .bind(&new_email)
        .bind(meta.now)
        .execute(&mut *tx)
        .await;
    match updated {
        Err(e) if is_unique_violation(&e) => {
            return Err(DomainError::Conflict("Another account already uses this email address.".into()));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    session::revoke_all(&mut tx, user.id, None).await?;
    events::record(&mut tx, Some(user.id), "email_changed", meta, json!({})).await?;
    audit_account(&mut tx, state, meta, user.id, &user.email, "member.email_changed", json!({})).await?;
    send(
        &mut tx,
        messages::email_changed(&old_email, &new_email),
        format!("email-changed:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    let user = repo::get(&mut tx, user.id).await?.ok_or_else(invalid)?;
    let signed_in = establish_session(&mut tx, state, &user, Method::EmailChange, meta, device).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(signed_in)
}

/// How long a secret shown on the set-up page waits for its confirming code.
pub const ENROLLMENT_LIFETIME: time::Duration = time::Duration::minutes(10);

/// A set-up secret is sealed to the user and to the session it was shown to (the legacy
/// master-key binding; `enrollment_row` is the envelope one).
fn enrollment_context(user: UserId, session: uuid::Uuid) -> String {
    format!("totp-enrollment:{user}:{session}")
}

fn enrollment_row(user: UserId, session: uuid::Uuid) -> String {
    format!("{user}:{session}")
}

/// A set-up attempt as the page shows it.
pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
    /// The account already has a second factor: this replaces it.
    pub replacing: bool,
    /// The account has a password (the form asks for it; otherwise a recent sign-in counts).
    pub has_password: bool,
}

fn enrollment_view(user: &User, secret: &[u8]) -> Enrollment {
    let uri = totp::otpauth_uri(secret, &user.email);
    Enrollment {
        secret_base32: totp::base32(secret),
        qr_svg: totp::qr_svg(&uri),
        otpauth_uri: uri,
        replacing: user.two_factor_enabled(),
        has_password: user.password_hash.is_some(),
    }
}

/// Starts a set-up attempt for this session: a fresh secret, shown to this session only, good
/// for [`ENROLLMENT_LIFETIME`]. It replaces whatever this session was shown before; it is never
/// stored on the user until a code from it is confirmed (with re-authentication), and it goes
/// with the session (sign-out, password change or reset, email change, rotation).
pub async fn start_totp_enrollment(
    state: &AppState,
    current: &CurrentSession,
    now: OffsetDateTime,
) -> DomainResult<Enrollment> {
    let mut tx = state.db.global().await?;
    let user = repo::get(&mut tx, current.user.id()).await?.ok_or(DomainError::NotFound)?;
    let secret = totp::new_secret();
    sqlx::query(
        "INSERT INTO totp_enrollments (session_id, user_id, secret, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (session_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at, \
         expires_at = EXCLUDED.expires_at",
    )
    .bind(current.id)
    .bind(user.id)
    .bind(
        state
            .keys
            .seal(Scope::Installation, At::new("totp_enrollments", "secret", &enrollment_row(user.id, current.id)), &secret)
            .map_err(DomainError::internal)?,
    )
    .bind(now)
    .bind(now + ENROLLMENT_LIFETIME)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(enrollment_view(&user, &secret))
}

/// This session's set-up secret, while it is still good.
async fn enrollment_secret(
    conn: &mut PgConnection,
    state: &AppState,
    current: &CurrentSession,
    now: OffsetDateTime,
) -> DomainResult<Option<Vec<u8>>> {
    let sealed: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT secret FROM totp_enrollments WHERE session_id = $1 AND user_id = $2 AND expires_at > $3",
    )
    .bind(current.id)
    .bind(current.user.id())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let (user, session) = (current.user.id(), current.id);
    Ok(sealed.and_then(|s| {
        let row = enrollment_row(user, session);
        let at = At::new("totp_enrollments", "secret", &row);
        state.keys.open(Scope::Installation, at, &s, Some(&enrollment_context(user, session))).ok()
    }))
}

/// The set-up page again after a refused confirmation: the same secret while it is good (the
/// person may have mistyped), a fresh one once it has expired.
pub async fn resume_totp_enrollment(
    state: &AppState,
    current: &CurrentSession,
    now: OffsetDateTime,
) -> DomainResult<Enrollment> {
    let mut conn = state.db.global().await?;
    let secret = enrollment_secret(&mut conn, state, current, now).await?;
    let user = repo::get(&mut conn, current.user.id()).await?.ok_or(DomainError::NotFound)?;
    conn.commit().await?;
    match secret {
        Some(secret) => Ok(enrollment_view(&user, &secret)),
        None => start_totp_enrollment(state, current, now).await,
    }
}

async fn store_new_recovery_codes(
    conn: &mut PgConnection,
    user: UserId,
    now: OffsetDateTime,
) -> DomainResult<Vec<String>> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user).execute(&mut *conn).await?;
    let codes = totp::new_recovery_codes();
    for code in &codes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user)
            .bind(&sha256(totp::normalize_recovery_code(code).as_bytes())[..])
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(codes)
}

/// What confirming a set-up needs besides the new code.
pub struct FactorProof<'a> {
    /// The account's password (ignored for an account without one, which needs a recent
    /// sign-in instead).
    pub password: &'a Secret,
    /// When replacing a factor: a current code from it, or a recovery code.
    pub current_code: &'a str,
}

/// Confirms this session's set-up with a code from the new secret and a re-authentication
/// ([`reauthenticate_every_factor`]): the secret becomes the account's second factor (turning
/// two-factor on, or replacing the one there was), new recovery codes are issued (returned
/// once, stored hashed), every other session ends, this one gets a new token, and the account
/// is told by mail.
pub async fn confirm_totp_enrollment(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    proof: &FactorProof<'_>,
    code: &str,
) -> DomainResult<(NewSession, Vec<String>)> {
    let expired = || {
        DomainError::Conflict(format!(
            "This set-up code has expired (they last {} minutes): scan the new one below and try again.",
            ENROLLMENT_LIFETIME.whole_minutes()
        ))
    };
    let user = load_user(state, current.user.id()).await?;
    let secret = {
        let mut conn = state.db.global().await?;
        let secret = enrollment_secret(&mut conn, state, current, meta.now).await?;
        conn.commit().await?;
        secret.ok_or_else(expired)?
    };
    // The new code first: it has no side effects, and a mistyped one shouldn't use up a code
    // of the factor being replaced.
    let Some(step) = totp::matching_step(&secret, code, meta.now.unix_timestamp().max(0) as u64) else {
        return Err(DomainError::field("code", "is not the current code of your authenticator app"));
    };
    reauthenticate_every_factor(state, meta, &user, current, proof.password, proof.current_code, "current_code")
        .await?;

    let mut tx = state.db.global().await?;
    let locked = repo::get_for_update(&mut tx, user.id).await?.ok_or(DomainError::NotFound)?;
    if locked.two_factor_enabled() != user.two_factor_enabled() {
        return Err(DomainError::Conflict("Two-factor authentication changed meanwhile. Reload the page.".into()));
    }
    // Used up: the secret is confirmed once, by this session.
    let taken = sqlx::query("DELETE FROM totp_enrollments WHERE session_id = $1 AND expires_at > $2")
        .bind(current.id)
        .bind(meta.now)
        .execute(&mut *tx)
        .await?;
    if taken.rows_affected() != 1 {
        return Err(expired());
    }
    sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1").bind(user.id).execute(&mut *tx).await?;
    sqlx::query("UPDATE users SET totp_secret = $2, totp_enabled_at = $3, totp_last_step = $4 WHERE id = $1")
        .bind(user.id)
        .bind(seal_totp_secret(state, user.id, &secret)?)
        .bind(meta.now)
        .bind(step as i64)
        .execute(&mut *tx)
        .await?;
    let codes = store_new_recovery_codes(&mut tx, user.id, meta.now).await?;
    let session = rotate(&mut tx, state, current, meta, true).await?;
    let (kind, mail) = if user.two_factor_enabled() {
        ("two_factor_replaced", messages::two_factor_replaced(&user.email))
    } else {
        ("two_factor_enabled", messages::two_factor_changed(&user.email, true))
    };
    events::record(&mut tx, Some(user.id), kind, meta, json!({})).await?;
    audit_account(&mut tx, state, meta, user.id, &user.email, &format!("member.{kind}"), json!({})).await?;
    send(&mut tx, mail, format!("{kind}:{}:{}", user.id, meta.now.unix_timestamp_nanos()), meta.now).await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok((session, codes))
}

/// Turns two-factor off, after [`reauthenticate_every_factor`]: every other session ends,
/// this one gets a new token, and the account is told by mail.
pub async fn disable_totp(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
) -> DomainResult<NewSession> {
    let user = load_user(state, current.user.id()).await?;
    if !user.two_factor_enabled() {
        return Err(DomainError::Conflict("Two-factor authentication is not on.".into()));
    }
    reauthenticate_every_factor(state, meta, &user, current, password, code, "code").await?;
    let mut tx = state.db.global().await?;
    remove_second_factor(&mut tx, user.id).await?;
    let session = rotate(&mut tx, state, current, meta, true).await?;
    events::record(&mut tx, Some(user.id), "two_factor_disabled", meta, json!({})).await?;
    audit_account(&mut tx, state, meta, user.id, &user.email, "member.two_factor_disabled", json!({})).await?;
    send(
        &mut tx,
        messages::two_factor_changed(&user.email, false),
        format!("2fa-off:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(session)
}

/// Removes the second factor, its recovery codes and any set-up in progress.
async fn remove_second_factor(conn: &mut PgConnection, user: UserId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1").bind(user).execute(&mut *conn).await?;
    Ok(())
}

/// New recovery codes (the old ones stop working), after [`reauthenticate_every_factor`]:
/// every other session ends, this one gets a new token, and the account is told by mail.
pub async fn regenerate_recovery_codes(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    password: &Secret,
    code: &str,
) -> DomainResult<(NewSession, Vec<String>)> {
    let user = load_user(state, current.user.id()).await?;
    if !user.two_factor_enabled() {
        return Err(DomainError::Conflict("Two-factor authentication is not on.".into()));
    }
    reauthenticate_every_factor(state, meta, &user, current, password, code, "code").await?;
    let mut tx = state.db.global().await?;
    let codes = store_new_recovery_codes(&mut tx, user.id, meta.now).await?;
    let session = rotate(&mut tx, state, current, meta, true).await?;
    events::record(&mut tx, Some(user.id), "recovery_codes_regenerated", meta, json!({})).await?;
    audit_account(&mut tx, state, meta, user.id, &user.email, "member.recovery_codes_regenerated", json!({})).await?;
    send(
        &mut tx,
        messages::recovery_codes_regenerated(&user.email),
        format!("codes:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok((session, codes))
}

/// What the operator's second-factor reset did.
pub struct OperatorReset {
    pub user: User,
    pub sessions_ended: u64,
    pub recovery_codes_removed: u64,
}

/// The operator removes a user's second factor (the owner lost it, or someone else enrolled
/// one in their account): the factor, its recovery codes and any set-up in progress go, every
/// session of the user ends, the account is told by critical mail, and the action is recorded
/// as a security event and in the audit log of each of the user's organizations under the
/// operator (a system actor). For the operator's command line only (`user reset-two-factor`):
/// no route reaches it.
pub async fn reset_two_factor_by_operator(
    conn: &mut PgConnection,
    email: &Email,
    reason: &str,
    ctx: &crate::audit::Context,
) -> DomainResult<OperatorReset> {
    let user = repo::find_by_email(conn, email).await?.ok_or(DomainError::NotFound)?;
    let user = repo::get_for_update(conn, user.id).await?.ok_or(DomainError::NotFound)?;
    if !user.two_factor_enabled() {
        return Err(DomainError::Conflict(format!("{} has no two-factor authentication to reset", user.email)));
    }
    let (recovery_codes_removed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user.id)
            .fetch_one(&mut *conn)
            .await?;
    remove_second_factor(conn, user.id).await?;
    let sessions_ended = session::revoke_all(conn, user.id, None).await?;
    let meta = RequestMeta {
        ip: ctx.ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        user_agent: ctx.user_agent.clone(),
        now: ctx.now,
        request_id: ctx.request_id.clone(),
    };
    let actor = "operator: user reset-two-factor".to_string();
    let detail = json!({ "actor": actor, "reason": reason, "sessions_ended": sessions_ended });
    events::record(conn, Some(user.id), "two_factor_reset_by_operator", &meta, detail.clone()).await?;
    let entry = crate::audit::Entry::new("member.two_factor_reset", "user", user.id)
        .before(json!({ "two_factor": true }))
        .after(json!({ "two_factor": false, "reason": reason, "sessions_ended": sessions_ended }));
    crate::access::audit_account_event_as(
        conn,
        user.id,
        &crate::access::Actor::System(actor.clone()),
        &actor,
        &entry,
        ctx,
    )
    .await?;
    send(
        conn,
        messages::two_factor_reset_by_operator(&user.email),
        format!("2fa-reset:{}:{}", user.id, ctx.now.unix_timestamp_nanos()),
        ctx.now,
    )
    .await?;
    Ok(OperatorReset { user, sessions_ended, recovery_codes_removed: recovery_codes_removed as u64 })
}

pub async fn sign_out(state: &AppState, meta: &RequestMeta, current: &CurrentSession) -> DomainResult<()> {
    let mut tx = state.db.global().await?;
    session::delete(&mut tx, current.id).await?;
    events::record(&mut tx, Some(current.user.id()), "signed_out", meta, json!({})).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn revoke_session(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
    id: uuid::Uuid,
) -> DomainResult<()> {
    let mut tx = state.db.global().await?;
    if !session::revoke(&mut tx, current.user.id(), id).await? {
        return Err(DomainError::NotFound);
    }
    events::record(&mut tx, Some(current.user.id()), "session_revoked", meta, json!({ "session": id })).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn revoke_other_sessions(
    state: &AppState,
    meta: &RequestMeta,
    current: &CurrentSession,
) -> DomainResult<u64> {
    let mut tx = state.db.global().await?;
    let n = session::revoke_all(&mut tx, current.user.id(), Some(current.id)).await?;
    events::record(&mut tx, Some(current.user.id()), "sessions_revoked", meta, json!({ "count": n })).await?;
    tx.commit().await?;
    Ok(n)
}

/// The invitee of an invitation signs in with their password, or — with no account yet —
/// creates one (the invitation link proves the mailbox, so the address counts as verified).
/// Either way the session comes from the second-factor gate; the user is returned only when
/// the session is complete.
pub async fn sign_in_for_invitation(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: &Secret,
    display_name: &str,
    device: Option<&str>,
) -> DomainResult<(SignedIn, Option<super::AuthenticatedUser>)> {
    let parsed = Email::parse(email).map_err(DomainError::internal)?;
    let existing = {
        let mut conn = state.db.global().await?;
        repo::find_by_email(&mut conn, &parsed).await?
    };
    let signed_in = match existing {
        Some(_) => sign_in(state, meta, email, password, device).await?,
        None => {
            let name = if display_name.trim().is_empty() {
                String::new()
            } else {
                parse_name(display_name).map_err(|m| DomainError::field("display_name", m))?
            };
            super::password::check_policy(password.expose(), parsed.as_str(), &name)
                .map_err(|m| DomainError::field("password", m))?;
            let hash = state.hasher.hash(password).await?;
            let mut tx = state.db.global().await?;
            let user = match repo::create(&mut tx, &parsed, &name, Some(&hash), Some(meta.now), meta.now).await {
                Ok(u) => u,
                Err(e) if is_unique_violation(&e) => {
                    return Err(DomainError::Conflict(
                        "An account with this address was just created; sign in instead.".into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            events::record(&mut tx, Some(user.id), "sign_up", meta, json!({ "via": "invitation" })).await?;
            let signed_in = establish_session(&mut tx, state, &user, Method::Invitation, meta, device).await?;
            tx.commit().await?;
            signed_in
        }
    };
    let user = {
        let mut conn = state.db.global().await?;
        let idle = time::Duration::minutes(state.config.identity.session_idle_minutes.into());
        let s = session::lookup(&mut conn, &signed_in.session.token, meta.now, idle).await?;
        conn.commit().await?;
        s.filter(|s| s.stage == Stage::Complete).map(|s| s.user)
    };
    Ok((signed_in, user))
}

/// How long a complete session lives, however active (`identity.session_absolute_hours`).
pub(super) fn session_lifetime(state: &AppState) -> time::Duration {
    time::Duration::hours(state.config.identity.session_absolute_hours.into())
}

/// Removes the bounce suppressions of the signed-in person's address (recorded in the
/// suppression log as theirs, and in their security events) and queues a message to it, in one
/// transaction.
pub async fn clear_bounce(state: &AppState, meta: &RequestMeta, current: &CurrentSession) -> DomainResult<()> {
    use crate::mail::suppression::{self, Reason};
    let user = load_user(state, current.user.id()).await?;
    let mut tx = state.db.global().await?;
    let actor = format!("user:{}", user.id);
    let mut removed = Vec::new();
    for reason in [Reason::HardBounce, Reason::SoftBounce] {
        removed.extend(
            suppression::remove(&mut tx, &user.email, Some(reason), None, "account page", &actor, meta.now).await?,
        );
    }
    if removed.is_empty() {
        return Err(DomainError::Conflict("Mail to your address is not stopped by a bounce.".into()));
    }
    events::record(
        &mut tx,
        Some(user.id),
        "mail_bounce_cleared",
        meta,
        json!({ "reasons": removed.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>() }),
    )
    .await?;
    let mail = messages::deliverability_check(&user.email, &state.config.public_url());
    outbox::enqueue(
        &mut tx,
        &mail,
        &format!("bounce-cleared:{}:{}", user.id, meta.now.unix_timestamp_nanos()),
        meta.now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}
