//! Sign in with Google: OpenID Connect authorization code flow with PKCE (S256), `state` and
//! `nonce`, through the `openidconnect` crate, which checks the ID token's signature against
//! the provider's JWKS, its issuer, audience, expiry and nonce.
//!
//! The in-flight `state` is stored hashed, single use, ten minutes, and bound to the browser
//! that started the flow by a cookie (so an attacker can't make a victim's browser finish the
//! attacker's sign-in). Identities are keyed on (issuer, subject); an identity is linked to an
//! existing account by email only when the provider says the email is verified.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use time::Duration;

use super::oidc::GoogleSignIn;
use super::service::{SignedIn, establish_session};
use super::session::{Method, RequestMeta};
use super::{repo, return_to};
use crate::platform::crypto::{random_token, sha256};
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::keys::{At, Scope as KeyScope};
use crate::platform::types::Email;
use crate::state::AppState;

const FLOW_LIFETIME: Duration = Duration::minutes(10);

fn google(state: &AppState) -> DomainResult<&GoogleSignIn> {
    state.google.as_ref().ok_or(DomainError::NotFound)
}

/// Starts a sign-in: returns the provider URL to redirect to and the browser-binding token
/// to set as a cookie. `next` (where to go afterwards) is kept with the state, as a path on
/// this site ([`return_to::local_path`]).
pub async fn start(state: &AppState, meta: &RequestMeta, next: Option<&str>) -> DomainResult<(String, String)> {
    let g = google(state)?;
    let (url, oidc_state, nonce, verifier) = g.begin().await?;
    let browser = random_token();
    let state_row = hex::encode(sha256(oidc_state.as_bytes()));
    let mut tx = state.db.global().await?;
    sqlx::query("DELETE FROM oidc_login_states WHERE expires_at < $1").bind(meta.now).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO oidc_login_states (state_hash, browser_hash, nonce, pkce_verifier, created_at, expires_at, return_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&sha256(oidc_state.as_bytes())[..])
    .bind(&sha256(browser.as_bytes())[..])
    .bind(&nonce)
    .bind(B64.encode(
        state
            .keys
            .seal(KeyScope::Installation, verifier_at(&state_row), verifier.as_bytes())
            .map_err(DomainError::internal)?,
    ))
    .bind(meta.now)
    .bind(meta.now + FLOW_LIFETIME)
    .bind(return_to::local_path(&state.config.public_url(), next))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((url, browser))
}

/// Where a flow's PKCE verifier is bound: the installation's data key, the flow's row (the
/// digest of its state).
fn verifier_at(state_row: &str) -> At<'_> {
    At::new("oidc_login_states", "pkce_verifier", state_row)
}
/// Finishes a sign-in from the provider's redirect. Returns the session and where the browser
/// asked to go when it started (checked again: [`return_to::local_path`]).
pub async fn callback(
    state: &AppState,
    meta: &RequestMeta,
    code: &str,
    oidc_state: &str,
    browser: Option<&str>,
    device: Option<&str>,
) -> DomainResult<(SignedIn, String)> {
    let g = google(state)?;
    let stale =
        || DomainError::Malformed("This sign-in link is no longer valid. Start again from the sign-in page.".into());
    let browser = browser.ok_or_else(stale)?;
    // Use the state up, whatever happens next: a state is good for one attempt.
    let row: Option<(String, String, String)> = {
        let mut tx = state.db.global().await?;
        let row = sqlx::query_as(
            "UPDATE oidc_login_states SET used_at = $3 \
             WHERE state_hash = $1 AND browser_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING nonce, pkce_verifier, return_to",
        )
        .bind(&sha256(oidc_state.as_bytes())[..])
        .bind(&sha256(browser.as_bytes())[..])
        .bind(meta.now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row
    };
    let (nonce, sealed_verifier, next) = row.ok_or_else(stale)?;
    let next = return_to::local_path(&state.config.public_url(), Some(&next));
    let verifier = B64
        .decode(sealed_verifier)
        .ok()
        .and_then(|s| {
            let row = hex::encode(sha256(oidc_state.as_bytes()));
            state.keys.open(KeyScope::Installation, verifier_at(&row), &s, Some("oidc-pkce")).ok()
        })
        .and_then(|v| String::from_utf8(v).ok())
        .ok_or_else(stale)?;
    let identity = g.finish(code, &nonce, &verifier).await?;

    let mut tx = state.db.global().await?;
    let linked: Option<(crate::platform::ids::UserId,)> =
        sqlx::query_as("SELECT user_id FROM oidc_identities WHERE issuer = $1 AND subject = $2")
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .fetch_optional(&mut *tx)
            .await?;
    let user = match linked {
        Some((user_id,)) => {
            sqlx::query("UPDATE oidc_identities SET last_used_at = $3 WHERE issuer = $1 AND subject = $2")
                .bind(&identity.issuer)
                .bind(&identity.subject)
                .bind(meta.now)
                .execute(&mut *tx)
                .await?;
            repo::get(&mut tx, user_id).await?.ok_or(DomainError::NotFound)?
        }
        None => {
            let email =
                identity.email.as_deref().and_then(|e| Email::parse(e).ok()).ok_or_else(|| {
                    DomainError::Forbidden("Your Google account did not share an email address.".into())
                })?;
            if !identity.email_verified {
                return Err(DomainError::Forbidden(
                    "Google has not verified the email address of this Google account, so it can't be used to sign in."
                        .into(),
                ));
            }
            let user = match repo::find_by_email(&mut tx, &email).await? {
                Some(existing) => existing,
                None => {
                    let name = identity.name.clone().unwrap_or_default();
                    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
                    repo::create(&mut tx, &email, name.trim(), None, Some(meta.now), meta.now).await?
                }
            };
            sqlx::query(
                "INSERT INTO oidc_identities (issuer, subject, user_id, email, created_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(user.id)
            .bind(email.as_str())
            .bind(meta.now)
            .execute(&mut *tx)
            .await?;
            repo::mark_email_verified(&mut tx, user.id, meta.now).await?;
            super::events::record(&mut tx, Some(user.id), "google_linked", meta, json!({ "issuer": identity.issuer }))
                .await?;
            user
        }
    };
    let signed_in = establish_session(&mut tx, state, &user, Method::Google, meta, device).await?;
    tx.commit().await?;
    Ok((signed_in, next))
}
