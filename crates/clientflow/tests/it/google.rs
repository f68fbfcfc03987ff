//! Sign in with Google, end to end against a local OpenID provider with real RS256 keys and
//! JWKS, and every path into a session going through the second-factor gate.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use clientflow_test_support::oidc::{FakeOidc, Misbehavior, OidcUser};

use clientflow::identity::session::Method;

use crate::support::accounts::{PASSWORD, current_code, enable_totp, next_step, sign_in, sign_up};

async fn app_with_google() -> (TestApp, FakeOidc) {
    let provider = FakeOidc::start("clientflow-test-client", "test client secret").await;
    let issuer = provider.issuer();
    let app = TestApp::builder()
        .config(move |c| {
            c.google.client_id = Some("clientflow-test-client".into());
            c.google.client_secret = Some(clientflow::platform::secret::Secret::new("test client secret"));
            c.google.issuer_url = Some(issuer);
        })
        .spawn()
        .await;
    (app, provider)
}

fn user(sub: &str, email: &str, verified: bool) -> OidcUser {
    OidcUser { sub: sub.into(), email: email.into(), email_verified: verified, name: "Zoe Example".into() }
}

/// Runs the browser through the provider and back; returns the callback URL and the app's
/// final response to it.
async fn google_round_trip(b: &mut Browser) -> (String, reqwest::Response) {
    let res = b.get("/login/google").await;
    assert_eq!(res.status(), 303);
    let authorize = location(&res);
    assert!(authorize.contains("code_challenge_method=S256"), "{authorize}");
    assert!(authorize.contains("nonce="), "{authorize}");
    assert!(authorize.contains("state="), "{authorize}");
    let res = b.client.get(&authorize).send().await.unwrap();
    assert_eq!(res.status(), 302, "{}", res.text().await.unwrap_or_default());
    let callback = location(&res);
    let res = b.client.get(&callback).send().await.unwrap();
    (callback, res)
}

async fn is_signed_in(b: &mut Browser) -> bool {
    b.get("/app").await.status() == 200
}

#[tokio::test]
async fn google_sign_in_creates_an_account_keyed_on_issuer_and_subject() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("google-sub-1", "zoe@example.com", true));
    let mut b = app.browser();
    let (status, html) = b.page("/login").await;
    assert_eq!(status, 200);
    assert!(html.contains("Sign in with Google"));
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    assert!(is_signed_in(&mut b).await);
    // PKCE: the verifier went to the token endpoint, with client authentication.
    let requests = provider.token_requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].get("code_verifier").is_some_and(|v| v.len() >= 43));
    assert!(requests[0].get("authorization").is_some_and(|v| v.starts_with("Basic ")));

    let mut db = app.db.admin_conn().await;
    let (issuer, subject, has_password): (String, String, bool) = sqlx::query_as(
        "SELECT i.issuer, i.subject, u.password_hash IS NOT NULL FROM oidc_identities i JOIN users u ON u.id = i.user_id",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((issuer.as_str(), subject.as_str(), has_password), (provider.issuer().as_str(), "google-sub-1", false));

    // The provider changes the email: the same (issuer, subject) still lands on the account.
    provider.set_user(user("google-sub-1", "zoe.new@example.com", true));
    let mut c = app.browser();
    let (_, res) = google_round_trip(&mut c).await;
    assert_eq!(res.status(), 303);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut db).await.unwrap();
    assert_eq!(users, 1);
}

#[tokio::test]
async fn a_verified_google_email_links_to_the_existing_account_and_an_unverified_one_does_not() {
    let (app, provider) = app_with_google().await;
    sign_up(&app, "amy@example.com").await;

    provider.set_user(user("sub-unverified", "amy@example.com", false));
    let mut b = app.browser();
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("has not verified"));
    assert!(!is_signed_in(&mut b).await);

    provider.set_user(user("sub-verified", "amy@example.com", true));
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(res.status(), 303);
    assert!(is_signed_in(&mut b).await);
    let mut db = app.db.admin_conn().await;
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oidc_identities i JOIN users u ON u.id = i.user_id WHERE u.email = 'amy@example.com'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(linked, 1);
}

#[tokio::test]
async fn forged_or_wrong_id_tokens_are_refused() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("sub-x", "xena@example.com", true));
    for m in [
        Misbehavior::ForgedSignature,
        Misbehavior::WrongAudience,
        Misbehavior::Expired,
        Misbehavior::OmitNonce,
        Misbehavior::WrongNonce,
        Misbehavior::WrongIssuer,
    ] {
        provider.misbehave(m);
        let mut b = app.browser();
        let (_, res) = google_round_trip(&mut b).await;
        assert_eq!(res.status(), 403, "{m:?} was accepted");
        assert!(!is_signed_in(&mut b).await, "{m:?} signed in");
    }
    let mut db = app.db.admin_conn().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut db).await.unwrap();
    assert_eq!(users, 0, "no account was created from a bad token");
    provider.misbehave(Misbehavior::None);
    let mut b = app.browser();
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn a_callback_is_good_once_and_only_in_the_browser_that_started_it() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("sub-r", "rita@example.com", true));

    // Replayed state: the same callback URL a second time.
    let mut b = app.browser();
    let (callback, res) = google_round_trip(&mut b).await;
    assert_eq!(res.status(), 303);
    let res = b.client.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 400);

    // A callback delivered to another browser (login CSRF): refused, and it doesn't use up
    // the victim's flow.
    let mut attacker = app.browser();
    let res = attacker.get("/login/google").await;
    let res = attacker.client.get(location(&res)).send().await.unwrap();
    let attackers_callback = location(&res);
    let mut victim = app.browser();
    let res = victim.client.get(&attackers_callback).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(!is_signed_in(&mut victim).await);

    // A made-up state, and a provider error.
    let res = b.client.get(b.url("/login/google/callback?code=x&state=made-up")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res = b.client.get(b.url("/login/google/callback?error=access_denied&state=x")).send().await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn google_sign_in_is_off_unless_configured() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    let (_, html) = b.page("/login").await;
    assert!(!html.contains("Sign in with Google"));
    assert_eq!(b.get("/login/google").await.status(), 404);
}

async fn assert_pending(app: &TestApp, b: &mut Browser, path: &str) {
    let res = b.get("/app").await;
    assert_eq!(res.status(), 303, "{path}: got a usable session without the second factor");
    assert_eq!(location(&res), "/login/two-factor", "{path}");
    let mut db = app.db.admin_conn().await;
    let complete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'gate@example.com' AND s.stage = 'complete'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(complete, 1, "{path}: only the original browser's session is complete");
}

/// The ways of obtaining a session, in a fixed order. The `match` is exhaustive: a new
/// `Method` does not compile until it is placed here, and so until the test below covers it.
fn next_method(after: Option<Method>) -> Option<Method> {
    match after {
        None => Some(Method::Password),
        Some(Method::Password) => Some(Method::Google),
        Some(Method::Google) => Some(Method::Reset),
        Some(Method::Reset) => Some(Method::EmailChange),
        Some(Method::EmailChange) => Some(Method::Invitation),
        Some(Method::Invitation) => Some(Method::EmailVerification),
        Some(Method::EmailVerification) => None,
    }
}

/// Every way to obtain a session demands the second factor from a user who has one.
#[tokio::test]
async fn every_sign_in_path_goes_through_the_second_factor() {
    const NEW_PASSWORD: &str = "a different passphrase entirely";
    let (app, provider) = app_with_google().await;
    let mut owner = sign_up(&app, "gate@example.com").await;
    let (secret, _) = enable_totp(&app, &mut owner).await;
    let mut password = PASSWORD;
    let mut email = "gate@example.com";
    let mut covered = Vec::new();
    let mut method = next_method(None);
    while let Some(m) = method {
        match m {
            Method::Password => {
                let mut b = app.browser();
                let res = sign_in(&app, &mut b, email, password).await;
                assert_eq!(res.status(), 303);
                assert_pending(&app, &mut b, "password").await;
            }
            Method::Google => {
                // Linked by verified email.
                provider.set_user(user("gate-sub", email, true));
                let mut b = app.browser();
                let (_, res) = google_round_trip(&mut b).await;
                assert_eq!(location(&res), "/login/two-factor");
                assert_pending(&app, &mut b, "google").await;
            }
            Method::Reset => {
                let mut b = app.browser();
                b.submit("/forgot-password", "/forgot-password", &[("email", email)]).await;
                let link = app.link_in_mail(email, "/reset-password?token=").await;
                let token = link.split("token=").nth(1).unwrap().to_string();
                let res = b.submit(&link, "/reset-password", &[("token", &token), ("password", NEW_PASSWORD)]).await;
                assert_eq!(location(&res), "/login/two-factor");
                assert_pending(&app, &mut b, "reset").await;
                let (_, html) = b.page("/login/two-factor").await;
                assert!(html.contains("new password takes effect when you enter the code"), "{html}");
                // The mailbox alone changed nothing: the old password still signs in, the new
                // one doesn't, and the owner's session is still there.
                let mut probe = app.browser();
                assert_eq!(location(&sign_in(&app, &mut probe, email, PASSWORD).await), "/login/two-factor");
                let res = sign_in(&app, &mut app.browser(), email, NEW_PASSWORD).await;
                assert_ne!(res.status(), 303, "the reset password applied before the second factor");
                assert_eq!(owner.get("/app").await.status(), 200);
                // The second factor completes the reset: now the new password holds and every
                // earlier session, the owner's too, is over.
                next_step(&app);
                let code = current_code(&app, &secret);
                let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
                assert_eq!(location(&res), "/app");
                assert_eq!(b.get("/app").await.status(), 200);
                assert_eq!(owner.get("/app").await.status(), 303, "the reset ended the other sessions");
                let res = sign_in(&app, &mut app.browser(), email, PASSWORD).await;
                assert_ne!(res.status(), 303, "the old password still works after the reset");
                password = NEW_PASSWORD;
                // Sign the owner back in fully for the paths that follow.
                owner = b;
                let mut db = app.db.admin_conn().await;
                let complete: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE u.email = $1 AND s.stage = 'complete'",
                )
                .bind(email)
                .fetch_one(&mut db)
                .await
                .unwrap();
                assert_eq!(complete, 1);
            }
            Method::EmailChange => {
                // The confirming browser gets a new session.
                let res = owner
                    .submit(
                        "/account/security",
                        "/account/email",
                        &[("new_email", "gate@elsewhere.example"), ("current_password", password)],
                    )
                    .await;
                assert_eq!(res.status(), 303);
                email = "gate@elsewhere.example";
                let link = app.link_in_mail(email, "/account/email/confirm?token=").await;
                let token = link.split("token=").nth(1).unwrap().to_string();
                let mut b = app.browser();
                let res = b.submit(&link, "/account/email/confirm", &[("token", &token)]).await;
                // The second factor first, then on to the security page.
                assert_eq!(location(&res), "/login/two-factor?next=%2Faccount%2Fsecurity");
                let res = b.get("/app").await;
                assert_eq!(location(&res), "/login/two-factor", "email change");
            }
            Method::Invitation => {
                // Accepting an invitation as an existing account.
                let mut inviter = sign_up(&app, "inviter@example.com").await;
                let slug = crate::support::orgs::create_org(&mut inviter, "Gate Org").await;
                let token = crate::support::orgs::session_token(&mut inviter).await;
                let res = inviter
                    .post_with(
                        &format!("/o/{slug}/invitations"),
                        &[("email", email), ("role", "member"), ("client_id", "")],
                        Some(&token),
                        true,
                    )
                    .await;
                assert_eq!(res.status(), 303);
                let link = app.link_in_mail(email, "/invitations/accept?token=").await;
                let token = link.split("token=").nth(1).unwrap().to_string();
                let mut b = app.browser();
                let res = b.submit(&link, "/invitations/accept", &[("token", &token), ("password", password)]).await;
                assert!(location(&res).starts_with("/login/two-factor?next="), "{}", location(&res));
                let res = b.get("/app").await;
                assert_eq!(location(&res), "/login/two-factor", "invitation");
                assert_eq!(b.get(&format!("/o/{slug}")).await.status(), 303, "not a member before the second factor");
                // After the second factor, back to the invitation, which now accepts.
                next_step(&app);
                let next = format!("/invitations/accept?token={token}");
                let res = b
                    .submit(
                        &format!("/login/two-factor?next={}", next.replace('?', "%3F").replace('=', "%3D")),
                        "/login/two-factor",
                        &[("code", &current_code(&app, &secret)), ("next", &next)],
                    )
                    .await;
                assert_eq!(location(&res), next);
                let res = b.submit(&next, "/invitations/accept", &[("token", &token)]).await;
                assert_eq!(location(&res), format!("/o/{slug}"));
            }
            Method::EmailVerification => {
                // A verification link for an account that already has a second factor (the
                // product sends one whenever an unverified account signs in; here it is issued
                // directly, as if the address had been un-verified): it verifies, but the
                // session it yields is pending like every other.
                let mut db = app.db.admin_conn().await;
                let user_id: clientflow::platform::ids::UserId =
                    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                        .bind(email)
                        .fetch_one(&mut db)
                        .await
                        .unwrap();
                let token = clientflow::identity::tokens::issue(
                    &mut db,
                    user_id,
                    clientflow::identity::tokens::Purpose::VerifyEmail,
                    None,
                    app.clock.now_utc(),
                )
                .await
                .unwrap();
                let mut b = app.browser();
                let link = format!("/verify-email?token={token}");
                let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
                assert_eq!(location(&res), "/login/two-factor");
                let res = b.get("/app").await;
                assert_eq!(location(&res), "/login/two-factor", "email verification");
            }
        }
        covered.push(m);
        method = next_method(Some(m));
    }
    assert_eq!(covered.len(), 6, "{covered:?}");
}

/// An account with neither a password nor a second factor proves who it is for a sensitive
/// change by a fresh sign-in: an old session can't set a password (which would give whoever
/// holds that session a permanent way in).
#[tokio::test]
async fn a_google_only_account_sets_a_password_only_soon_after_signing_in() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("sub-pw", "gil@example.com", true));
    let mut b = app.browser();
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/app");
    let minutes = clientflow::identity::service::RECENT_SIGN_IN.whole_minutes();
    app.clock.advance(time::Duration::minutes(minutes) / 2);
    b.page("/app").await; // active, so the session stays alive
    app.clock.advance(time::Duration::minutes(minutes) / 2 + time::Duration::minutes(1));
    let (status, html) = b.page("/account/security").await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("signed in within the last {minutes} minutes")), "{html}");
    let res = b.submit("/account/security", "/account/password", &[("new_password", "a fresh passphrase here")]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("sign in again"));
    let mut db = app.db.admin_conn().await;
    let has_password: bool =
        sqlx::query_scalar("SELECT password_hash IS NOT NULL FROM users WHERE email = 'gil@example.com'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(!has_password, "the password was set from a stale session");

    // Signing in again makes it possible.
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/app");
    let res = b.submit("/account/security", "/account/password", &[("new_password", "a fresh passphrase here")]).await;
    assert_eq!(res.status(), 303);
    let res = sign_in(&app, &mut app.browser(), "gil@example.com", "a fresh passphrase here").await;
    assert_eq!(location(&res), "/app");
}

/// Runs a Google sign-in started with `next` (as the sign-in page's Google link would).
async fn google_round_trip_to(b: &mut Browser, next: &str) -> reqwest::Response {
    let res = b.get(&format!("/login/google?next={}", crate::support::accounts::encode(next))).await;
    assert_eq!(res.status(), 303, "{next:?}");
    let res = b.client.get(location(&res)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    b.client.get(location(&res)).send().await.unwrap()
}

/// The return address a Google sign-in keeps in its state goes through the same check as every
/// other `next`: only a path on this site, in the form a browser would read it.
#[tokio::test]
async fn a_google_sign_in_returns_only_to_a_path_on_this_site() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("sub-next", "nell@example.com", true));
    let (_, html) = app.browser().page("/login?next=%2Faccount%2Fsecurity").await;
    assert!(html.contains("href=\"/login/google?next=%2Faccount%2Fsecurity\""), "the Google link lost next");
    for (raw, expected) in crate::support::accounts::next_values() {
        let mut b = app.browser();
        let res = google_round_trip_to(&mut b, &raw).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, expected), "{raw:?}");
    }
    // With a second factor, the page in between carries it on.
    let mut owner = app.browser();
    google_round_trip(&mut owner).await;
    owner.submit("/account/security", "/account/password", &[("new_password", "nell's own passphrase")]).await;
    let (secret, _) = enable_totp_with(&app, &mut owner, "nell's own passphrase").await;
    let mut b = app.browser();
    let res = google_round_trip_to(&mut b, "/\t/evil.example").await;
    assert_eq!(location(&res), "/login/two-factor");
    let res = google_round_trip_to(&mut b, "/account/security").await;
    assert_eq!(location(&res), "/login/two-factor?next=%2Faccount%2Fsecurity");
    next_step(&app);
    let (_, html) = b.page(&location(&res)).await;
    assert_eq!(crate::support::accounts::next_on_page(&html), "/account/security");
    let res = b
        .post_with(
            "/login/two-factor",
            &[("code", &current_code(&app, &secret)), ("next", "/account/security")],
            Some(&b.token()),
            true,
        )
        .await;
    assert_eq!(location(&res), "/account/security");
}

/// `enable_totp` for an account whose password is `password`.
async fn enable_totp_with(app: &TestApp, b: &mut Browser, password: &str) -> (Vec<u8>, Vec<String>) {
    let secret = crate::support::accounts::setup_secret(b).await;
    b.page("/account/security").await;
    let code = current_code(app, &secret);
    let res = b
        .post_with(
            "/account/two-factor/setup",
            &[("code", &code), ("current_password", password)],
            Some(&b.token()),
            true,
        )
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    (secret, html.split("<li><code>").skip(1).map(|s| s.split("</code>").next().unwrap().to_string()).collect())
}

/// An account without a password proves who it is for a change to its second factor by a
/// fresh sign-in (and, once it has a factor, a code from it): a session that is not fresh can't
/// put an authenticator on the account, nor take it off.
#[tokio::test]
async fn a_google_only_account_changes_its_second_factor_only_soon_after_signing_in() {
    let (app, provider) = app_with_google().await;
    provider.set_user(user("sub-2fa", "gia@example.com", true));
    let mut b = app.browser();
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/app");
    let minutes = clientflow::identity::service::RECENT_SIGN_IN.whole_minutes();
    app.clock.advance(time::Duration::minutes(minutes) / 2);
    b.page("/app").await; // active, so the session stays alive
    app.clock.advance(time::Duration::minutes(minutes) / 2 + time::Duration::minutes(1));
    let secret = crate::support::accounts::setup_secret(&mut b).await;
    assert!(b.last_page.contains(&format!("signed in within the last {minutes} minutes")));
    let res = b
        .post_with("/account/two-factor/setup", &[("code", &current_code(&app, &secret))], Some(&b.token()), true)
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("sign in again"));
    let mut db = app.db.admin_conn().await;
    let on = "SELECT totp_enabled_at IS NOT NULL FROM users WHERE email = 'gia@example.com'";
    assert!(!sqlx::query_scalar::<_, bool>(on).fetch_one(&mut db).await.unwrap(), "a stale session turned it on");

    // Signed in again: it turns on.
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/app");
    let secret = crate::support::accounts::setup_secret(&mut b).await;
    let res = b
        .post_with("/account/two-factor/setup", &[("code", &current_code(&app, &secret))], Some(&b.token()), true)
        .await;
    assert_eq!(res.status(), 200);
    assert!(sqlx::query_scalar::<_, bool>(on).fetch_one(&mut db).await.unwrap());

    // Turning it off later needs a fresh sign-in as well as a code.
    app.clock.advance(time::Duration::minutes(minutes) / 2);
    b.page("/app").await;
    app.clock.advance(time::Duration::minutes(minutes) / 2 + time::Duration::minutes(1));
    let res =
        b.submit("/account/security", "/account/two-factor/disable", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(res.status(), 403);
    assert!(sqlx::query_scalar::<_, bool>(on).fetch_one(&mut db).await.unwrap());
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/login/two-factor");
    next_step(&app);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(location(&res), "/app");
    let res = b.submit("/account/security", "/account/two-factor/disable", &[("code", "000000")]).await;
    assert_eq!(res.status(), 422, "a fresh sign-in without the code turned it off");
    next_step(&app);
    let res =
        b.submit("/account/security", "/account/two-factor/disable", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(res.status(), 303);
    assert!(!sqlx::query_scalar::<_, bool>(on).fetch_one(&mut db).await.unwrap());
}
