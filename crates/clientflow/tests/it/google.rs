//! Sign in with Google, end to end against a local OpenID provider with real RS256 keys and
//! JWKS, and every path into a session going through the second-factor gate.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use clientflow_test_support::oidc::{FakeOidc, Misbehavior, OidcUser};

use crate::identity::{PASSWORD, current_code, enable_totp, next_step, sign_in, sign_up};

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

/// Every way to obtain a session demands the second factor from a user who has one.
#[tokio::test]
async fn every_sign_in_path_goes_through_the_second_factor() {
    let (app, provider) = app_with_google().await;
    let mut owner = sign_up(&app, "gate@example.com").await;
    let (secret, _) = enable_totp(&app, &mut owner).await;
    let mut paths = 0;

    // 1. Password.
    let mut b = app.browser();
    let res = sign_in(&app, &mut b, "gate@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_pending(&app, &mut b, "password").await;
    paths += 1;

    // 2. Google (linked by verified email).
    provider.set_user(user("gate-sub", "gate@example.com", true));
    let mut b = app.browser();
    let (_, res) = google_round_trip(&mut b).await;
    assert_eq!(location(&res), "/login/two-factor");
    assert_pending(&app, &mut b, "google").await;
    paths += 1;

    // 3. Password reset.
    let mut b = app.browser();
    b.submit("/forgot-password", "/forgot-password", &[("email", "gate@example.com")]).await;
    let link = app.link_in_mail("gate@example.com", "/reset-password?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = b.submit(&link, "/reset-password", &[("token", &token), ("password", PASSWORD)]).await;
    assert_eq!(location(&res), "/login/two-factor");
    // The reset signed every session out, the owner's too; sign the owner back in fully.
    let res = sign_in(&app, &mut owner, "gate@example.com", PASSWORD).await;
    assert_eq!(location(&res), "/login/two-factor");
    next_step(&app);
    let res = owner.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(location(&res), "/app");
    assert_pending(&app, &mut b, "reset").await;
    paths += 1;

    // 4. Email change confirmation (the confirming browser gets a new session).
    let res = owner
        .submit(
            "/account/security",
            "/account/email",
            &[("new_email", "gate@elsewhere.example"), ("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 303);
    let link = app.link_in_mail("gate@elsewhere.example", "/account/email/confirm?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = app.browser();
    let res = b.submit(&link, "/account/email/confirm", &[("token", &token)]).await;
    assert_eq!(location(&res), "/login/two-factor");
    let res = b.get("/app").await;
    assert_eq!(location(&res), "/login/two-factor", "email change");
    paths += 1;

    // 5. Accepting an invitation as an existing account.
    let mut inviter = sign_up(&app, "inviter@example.com").await;
    let slug = crate::tenancy::create_org(&mut inviter, "Gate Org").await;
    let token = crate::tenancy::session_token(&mut inviter).await;
    let res = inviter
        .post_with(
            &format!("/o/{slug}/invitations"),
            &[("email", "gate@elsewhere.example"), ("role", "member"), ("client_id", "")],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 303);
    let link = app.link_in_mail("gate@elsewhere.example", "/invitations/accept?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = app.browser();
    let res = b.submit(&link, "/invitations/accept", &[("token", &token), ("password", PASSWORD)]).await;
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
    paths += 1;
    assert_eq!(paths, 5);
}
