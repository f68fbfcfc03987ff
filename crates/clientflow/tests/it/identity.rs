//! Accounts, sessions, CSRF, throttling, two-factor, reset, email change.

use crate::support::accounts::secret_on_page;
use crate::support::accounts::{
    PASSWORD, critical_mail, current_code, enable_totp, encode, next_on_page, next_step, next_values, setup_secret,
    sign_in, sign_up,
};
use clientflow::identity::totp;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location, set_cookies};
use sqlx::Row;

async fn is_signed_in(b: &mut Browser) -> bool {
    let res = b.get("/app").await;
    res.status() == 200
}

#[tokio::test]
async fn sign_up_verify_sign_out_and_in() {
    let app = TestApp::spawn().await;
    let mut b = sign_up(&app, "ann@example.com").await;
    assert!(is_signed_in(&mut b).await);
    let (_, html) = b.page("/app").await;
    assert!(html.contains("ann@example.com"));

    let token = b.token();
    let res = b.post_with("/logout", &[], Some(&token), true).await;
    assert_eq!(res.status(), 303);
    assert!(!is_signed_in(&mut b).await);

    let res = sign_in(&app, &mut b, "ANN@example.com ", PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    assert!(is_signed_in(&mut b).await);
}

#[tokio::test]
async fn verification_links_are_single_use() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    b.submit("/signup", "/signup", &[("email", "bob@example.com"), ("password", PASSWORD)]).await;
    let link = app.link_in_mail("bob@example.com", "/verify-email?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    // Fetching the link (a mail scanner) doesn't use it up.
    b.page(&link).await;
    let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), 303);
    let mut other = app.browser();
    let res = other.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("already used"));
    // Unverified accounts can't sign in; a made-up token does nothing.
    let res = other.submit("/verify-email?token=x", "/verify-email", &[("token", "made-up")]).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn unverified_accounts_must_confirm_first() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    b.submit("/signup", "/signup", &[("email", "cat@example.com"), ("password", PASSWORD)]).await;
    app.process_requests().await;
    let res = sign_in(&app, &mut b, "cat@example.com", PASSWORD).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("Confirm your email address first"));
    assert!(!is_signed_in(&mut b).await);
}

#[tokio::test]
async fn existing_and_unknown_emails_get_the_same_answers() {
    let app = TestApp::spawn().await;
    sign_up(&app, "dan@example.com").await;

    // Sign-up: same redirect; the owner is told by mail instead.
    let mut b = app.browser();
    let again = b
        .submit("/signup", "/signup", &[("email", "dan@example.com"), ("password", "another long passphrase here")])
        .await;
    let fresh = b
        .submit("/signup", "/signup", &[("email", "eve@example.com"), ("password", "another long passphrase here")])
        .await;
    assert_eq!((again.status(), location(&again)), (fresh.status(), location(&fresh)));
    let mails = app.mail_to("dan@example.com").await;
    assert!(mails.iter().any(|m| m.contains("Someone tried to sign up")), "{mails:?}");

    // Sign-in: wrong password and unknown account look identical.
    let wrong = sign_in(&app, &mut b, "dan@example.com", "not the password at all").await;
    let wrong_status = wrong.status();
    let wrong_body = wrong.text().await.unwrap();
    let unknown = sign_in(&app, &mut b, "nobody@example.com", "not the password at all").await;
    assert_eq!(unknown.status(), wrong_status);
    assert_eq!(wrong_status, 401);
    let unknown_body = unknown.text().await.unwrap();
    let message =
        |html: &str| html.split("role=\"alert\">").nth(1).unwrap_or("").split('<').next().unwrap_or("").to_string();
    assert_eq!(message(&wrong_body), message(&unknown_body));
    assert_eq!(message(&wrong_body), "Email or password is incorrect.");

    // Reset: same redirect for both.
    let a = b.submit("/forgot-password", "/forgot-password", &[("email", "dan@example.com")]).await;
    let u = b.submit("/forgot-password", "/forgot-password", &[("email", "nobody@example.com")]).await;
    assert_eq!((a.status(), location(&a)), (u.status(), location(&u)));
    assert!(app.mail_to("nobody@example.com").await.is_empty());
}

/// The same argon2 work for a known and an unknown address, on every form that takes an
/// address and a password: time doesn't tell which accounts exist.
#[tokio::test]
async fn known_and_unknown_emails_cost_the_same_password_work() {
    let app = TestApp::spawn().await;
    sign_up(&app, "kim@example.com").await;
    let hasher = &app.state.hasher;
    let mut b = app.browser();
    let mut work = async |email: &str, path: &str, fields: &[(&str, &str)]| {
        let before = hasher.runs();
        let mut all = vec![("email", email)];
        all.extend_from_slice(fields);
        let res = b.submit(path, path, &all).await;
        (res.status().as_u16(), hasher.runs() - before)
    };
    let wrong = [("password", "not the password at all")];
    let known = work("kim@example.com", "/login", &wrong).await;
    let unknown = work("nobody-here@example.com", "/login", &wrong).await;
    assert_eq!(known, (401, 1));
    assert_eq!(unknown, known, "sign-in: an unknown address skipped the hash");
    let fields = [("password", "another long passphrase here"), ("display_name", "")];
    let known = work("kim@example.com", "/signup", &fields).await;
    let unknown = work("new-person@example.com", "/signup", &fields).await;
    assert_eq!(known, (303, 1));
    assert_eq!(unknown, known, "sign-up: an existing address skipped the hash");
    let known = work("kim@example.com", "/forgot-password", &[]).await;
    let unknown = work("nobody-here@example.com", "/forgot-password", &[]).await;
    assert_eq!(unknown, known, "reset");
}

/// The per-account lockout counts failures for the account whatever address they come from:
/// spreading guesses over many client addresses (behind a trusted proxy, so each really is a
/// different client) doesn't buy more of them.
#[tokio::test]
async fn the_lockout_holds_across_client_addresses() {
    let app =
        TestApp::builder().config(|c| c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).spawn().await;
    sign_up(&app, "lou@example.com").await;
    for n in 1..=5 {
        let mut b = app.browser().from_address(&format!("198.51.100.{n}"));
        assert_eq!(sign_in(&app, &mut b, "lou@example.com", "guess guess guess").await.status(), 401);
    }
    let mut b = app.browser().from_address("2001:db8:77::1");
    let res = sign_in(&app, &mut b, "lou@example.com", PASSWORD).await;
    assert_eq!(res.status(), 429, "a sixth address got a fresh budget");
}

#[tokio::test]
async fn the_password_policy_explains_itself() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    for (password, expected) in [
        ("short", "at least 12 characters"),
        ("password1234", "too easy to guess"),
        ("frank.smith.2024", "email address"),
        ("clientflow-rocks!", "product name"),
    ] {
        let res = b.submit("/signup", "/signup", &[("email", "frank.smith@example.com"), ("password", password)]).await;
        assert_eq!(res.status(), 422, "{password}");
        let html = res.text().await.unwrap();
        assert!(html.contains(expected), "{password}: {html}");
        assert!(html.contains("<strong>Password</strong>"), "names the field");
    }
    let res = b.submit("/signup", "/signup", &[("email", "not-an-email"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("<strong>Email</strong>"));
    // 64+ characters are fine.
    let long = "the quick brown fox jumps over the lazy dog and keeps on running far away";
    let res = b.submit("/signup", "/signup", &[("email", "gus@example.com"), ("password", long)]).await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn session_cookies_are_host_prefixed_secure_and_stored_hashed() {
    let app = TestApp::spawn().await;
    sign_up(&app, "hal@example.com").await;
    let mut b = app.browser();
    let res = sign_in(&app, &mut b, "hal@example.com", PASSWORD).await;
    let cookies = set_cookies(&res);
    let session = cookies.iter().find(|c| c.starts_with("__Host-cf_session=")).expect("session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Domain"), "{session}");
    let token = session.split(';').next().unwrap().trim_start_matches("__Host-cf_session=").to_string();
    assert_eq!(token.len(), 43, "256-bit token");
    let mut db = app.db.admin_conn().await;
    let rows = sqlx::query("SELECT token_hash FROM sessions").fetch_all(&mut db).await.unwrap();
    assert!(!rows.is_empty());
    let digest = clientflow::platform::crypto::sha256(token.as_bytes()).to_vec();
    assert!(rows.iter().any(|r| r.get::<Vec<u8>, _>(0) == digest), "stored as SHA-256");
    let raw: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'")
            .bind(&token)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(raw, 0);
    // Session fixation: a session cookie planted before sign-in is never adopted.
    let bare = clientflow_test_support::client_for(&app.cert_path(), app.addr).build().unwrap();
    let res = bare.get(app.url("/login")).send().await.unwrap();
    let csrf_cookie = set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with("__Host-cf_csrf="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = res.text().await.unwrap();
    let form_token = clientflow_test_support::browser::csrf_token(&html).unwrap();
    let planted = "A".repeat(43);
    let res = bare
        .post(app.url("/login"))
        .header("origin", app.base_url.clone())
        .header("cookie", format!("{csrf_cookie}; __Host-cf_session={planted}"))
        .form(&[("email", "hal@example.com"), ("password", PASSWORD), ("csrf_token", &form_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let issued = set_cookies(&res).into_iter().find(|c| c.starts_with("__Host-cf_session=")).unwrap();
    assert!(!issued.contains(&planted));
    assert_ne!(session, &issued, "each sign-in gets a fresh token");
}

#[tokio::test]
async fn csrf_is_enforced_on_every_form() {
    let app = TestApp::spawn().await;
    let mut victim = sign_up(&app, "ida@example.com").await;
    victim.page("/account/security").await;
    let token = victim.token();
    let change = [("current_password", PASSWORD), ("new_password", "a completely new passphrase")];

    // No Origin (and no Referer): refused.
    let res = victim.post_with("/account/password", &change, Some(&token), false).await;
    assert_eq!(res.status(), 403);
    // Another site's Origin: refused.
    let res = victim
        .client
        .post(victim.url("/account/password"))
        .header("origin", "https://evil.example")
        .form(&[
            ("current_password", PASSWORD),
            ("new_password", "a completely new passphrase"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Right Origin, no token / wrong token: refused.
    let res = victim.post_with("/account/password", &change, None, true).await;
    assert_eq!(res.status(), 403);
    let res = victim.post_with("/account/password", &change, Some("forged"), true).await;
    assert_eq!(res.status(), 403);
    // Another session's token: refused.
    let mut attacker = sign_up(&app, "jay@example.com").await;
    attacker.page("/account/security").await;
    let res = victim.post_with("/account/password", &change, Some(&attacker.token()), true).await;
    assert_eq!(res.status(), 403);
    // A Referer from this site is accepted when Origin is missing.
    let res = victim
        .client
        .post(victim.url("/account/password"))
        .header("referer", victim.url("/account/security"))
        .form(&[
            ("current_password", PASSWORD),
            ("new_password", "a completely new passphrase"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // Sign-in forms are protected too (login CSRF).
    let fresh = app.browser();
    let res = fresh.post_with("/login", &[("email", "ida@example.com"), ("password", PASSWORD)], None, true).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn sessions_can_be_listed_and_revoked() {
    let app = TestApp::spawn().await;
    let mut laptop = sign_up(&app, "kim@example.com").await;
    let mut phone = app.browser();
    sign_in(&app, &mut phone, "kim@example.com", PASSWORD).await;
    let mut tablet = app.browser();
    sign_in(&app, &mut tablet, "kim@example.com", PASSWORD).await;

    let (_, html) = laptop.page("/account/security").await;
    assert_eq!(html.matches("/revoke\"").count(), 2, "two other sessions listed");
    assert!(html.contains("(this session)"));
    assert!(html.contains("127.0.0.1"));

    // Revoke the phone.
    let mut db = app.db.admin_conn().await;
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM sessions ORDER BY created_at").fetch_all(&mut db).await.unwrap();
    assert_eq!(ids.len(), 3);
    let res = laptop.post_with(&format!("/account/sessions/{}/revoke", ids[1]), &[], Some(&laptop.token()), true).await;
    assert_eq!(res.status(), 303);
    assert!(!is_signed_in(&mut phone).await);
    assert!(is_signed_in(&mut tablet).await);

    // Someone else's session id: not found, nothing revoked.
    let mut other = sign_up(&app, "lee@example.com").await;
    other.page("/account/security").await;
    let res = other.post_with(&format!("/account/sessions/{}/revoke", ids[2]), &[], Some(&other.token()), true).await;
    assert_eq!(res.status(), 404);
    assert!(is_signed_in(&mut tablet).await);

    // Sign out everywhere else.
    laptop.page("/account/security").await;
    let res = laptop.post_with("/account/sessions/revoke-others", &[], Some(&laptop.token()), true).await;
    assert_eq!(res.status(), 303);
    assert!(!is_signed_in(&mut tablet).await);
    assert!(is_signed_in(&mut laptop).await);
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_and_rotates_this_one() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "max@example.com").await;
    let mut other = app.browser();
    sign_in(&app, &mut other, "max@example.com", PASSWORD).await;

    // Wrong current password: refused.
    let res = a
        .submit(
            "/account/security",
            "/account/password",
            &[("current_password", "nope nope nope"), ("new_password", "brand new passphrase words")],
        )
        .await;
    assert_eq!(res.status(), 422);
    let res = a
        .submit(
            "/account/security",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "brand new passphrase words")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(set_cookies(&res).iter().any(|c| c.starts_with("__Host-cf_session=")), "rotated");
    assert!(is_signed_in(&mut a).await);
    assert!(!is_signed_in(&mut other).await);
    assert!(app.mail_to("max@example.com").await.iter().any(|m| m.contains("Your password was changed")));
    let res = sign_in(&app, &mut other, "max@example.com", PASSWORD).await;
    assert_eq!(res.status(), 401);
    let res = sign_in(&app, &mut other, "max@example.com", "brand new passphrase words").await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn disabling_a_user_ends_all_sessions() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "ned@example.com").await;
    assert!(is_signed_in(&mut a).await);
    let mut tx = app.app_db.global().await.unwrap();
    let id: clientflow::platform::ids::UserId =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'ned@example.com'").fetch_one(&mut *tx).await.unwrap();
    clientflow::identity::repo::set_disabled(&mut tx, id, true, app.clock.now_utc()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!is_signed_in(&mut a).await);
    let res = sign_in(&app, &mut a, "ned@example.com", PASSWORD).await;
    assert_ne!(res.status(), 303);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_absolutely() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "ola@example.com").await;
    // Active every 20 minutes: survives past the idle timeout...
    for _ in 0..3 {
        app.clock.advance(time::Duration::minutes(20));
        assert!(is_signed_in(&mut a).await);
    }
    // ...but not 31 idle minutes.
    app.clock.advance(time::Duration::minutes(31));
    assert!(!is_signed_in(&mut a).await);

    // Absolute: 12 hours however active.
    let res = sign_in(&app, &mut a, "ola@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303);
    for _ in 0..((12 * 60) / 25) {
        app.clock.advance(time::Duration::minutes(25));
        assert!(is_signed_in(&mut a).await);
    }
    app.clock.advance(time::Duration::minutes(25));
    assert!(!is_signed_in(&mut a).await);
}

#[tokio::test]
async fn five_failures_lock_new_devices_out_but_not_known_ones() {
    let app = TestApp::spawn().await;
    let mut known = sign_up(&app, "pia@example.com").await;
    // The known device signs out but keeps its device cookie.
    known.page("/app").await;
    let t = known.token();
    known.post_with("/logout", &[], Some(&t), true).await;

    let mut attacker = app.browser();
    for _ in 0..5 {
        let res = sign_in(&app, &mut attacker, "pia@example.com", "guess guess guess").await;
        assert_eq!(res.status(), 401);
    }
    // Now even the right password is refused from a new device, for 15 minutes.
    let res = sign_in(&app, &mut attacker, "pia@example.com", PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("Too many failed attempts"));
    let mut stranger = app.browser();
    let res = sign_in(&app, &mut stranger, "pia@example.com", PASSWORD).await;
    assert_eq!(res.status(), 429);
    // The owner was told.
    assert!(
        app.mail_to("pia@example.com").await.iter().any(|m| m.contains("Sign-in attempts to your account were paused"))
    );
    // The owner's own device is not locked out.
    let res = sign_in(&app, &mut known, "pia@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303, "known device locked out");
    // After the lockout, new devices may try again.
    app.clock.advance(time::Duration::minutes(16));
    let res = sign_in(&app, &mut stranger, "pia@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303);

    // Unknown accounts lock the same way (no enumeration through the lockout).
    for _ in 0..5 {
        sign_in(&app, &mut attacker, "ghost@example.com", "guess guess guess").await;
    }
    let res = sign_in(&app, &mut attacker, "ghost@example.com", "guess guess guess").await;
    assert_eq!(res.status(), 429);
}

/// Re-authentication inside a session has its own budget: a sign-in lockout started by
/// strangers doesn't stop the signed-in owner from confirming a change, and failed
/// confirmations (say, from a stolen session) don't lock the owner out of signing in.
#[tokio::test]
async fn reauthentication_has_a_budget_of_its_own() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "rex@example.com").await;
    let mut attacker = app.browser();
    for _ in 0..5 {
        assert_eq!(sign_in(&app, &mut attacker, "rex@example.com", "guess guess guess").await.status(), 401);
    }
    assert_eq!(sign_in(&app, &mut attacker, "rex@example.com", PASSWORD).await.status(), 429);
    // Locked for sign-in from new devices, the owner's session still confirms a change.
    let res = owner
        .submit(
            "/account/security",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "second passphrase of rex")],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());

    // Five wrong confirmations lock confirmations (even a right one), not the sign-in.
    app.clock.advance(time::Duration::minutes(16));
    for _ in 0..5 {
        let res = owner
            .submit(
                "/account/security",
                "/account/password",
                &[("current_password", "not the password"), ("new_password", "third passphrase of rex")],
            )
            .await;
        assert_eq!(res.status(), 422);
    }
    let res = owner
        .submit(
            "/account/security",
            "/account/password",
            &[("current_password", "second passphrase of rex"), ("new_password", "third passphrase of rex")],
        )
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.text().await.unwrap().contains("confirm it"));
    let res = sign_in(&app, &mut app.browser(), "rex@example.com", "second passphrase of rex").await;
    assert_eq!(res.status(), 303, "failed confirmations locked the sign-in");
    app.clock.advance(time::Duration::minutes(16));
    let res = owner
        .submit(
            "/account/security",
            "/account/password",
            &[("current_password", "second passphrase of rex"), ("new_password", "third passphrase of rex")],
        )
        .await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn failures_spread_over_more_than_the_window_do_not_lock() {
    let app = TestApp::spawn().await;
    sign_up(&app, "quin@example.com").await;
    let mut b = app.browser();
    for _ in 0..8 {
        let res = sign_in(&app, &mut b, "quin@example.com", "guess guess guess").await;
        assert_eq!(res.status(), 401);
        app.clock.advance(time::Duration::minutes(4));
    }
    let res = sign_in(&app, &mut b, "quin@example.com", PASSWORD).await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn totp_enrollment_sign_in_replay_and_recovery_codes() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "ray@example.com").await;
    let (secret, codes) = enable_totp(&app, &mut a).await;
    assert!(app.mail_to("ray@example.com").await.iter().any(|m| m.contains("Two-factor authentication is on")));

    // The secret is stored sealed, never in the clear.
    let mut db = app.db.admin_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT totp_secret FROM users WHERE email = 'ray@example.com'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_slice()));
    // Recovery codes are stored hashed.
    let hashes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT code_hash FROM recovery_codes").fetch_all(&mut db).await.unwrap();
    assert_eq!(hashes.len(), 10);
    assert!(hashes.iter().all(|h| h.len() == 32));

    // Sign in again: password alone yields a pending session.
    let mut b = app.browser();
    let res = sign_in(&app, &mut b, "ray@example.com", PASSWORD).await;
    assert_eq!(location(&res), "/login/two-factor");
    let pending_cookie = set_cookies(&res).into_iter().find(|c| c.starts_with("__Host-cf_session=")).unwrap();
    let res = b.get("/app").await;
    assert_eq!(location(&res), "/login/two-factor", "pending session reaches nothing else");
    let res = b.get("/account/security").await;
    assert_eq!(res.status(), 303);

    next_step(&app);
    let code = current_code(&app, &secret);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    let complete_cookie = set_cookies(&res).into_iter().find(|c| c.starts_with("__Host-cf_session=")).unwrap();
    assert_ne!(pending_cookie, complete_cookie, "rotated on second-factor completion");
    assert!(is_signed_in(&mut b).await);

    // The same code can't be used again (replay), not even within its window.
    let mut c = app.browser();
    sign_in(&app, &mut c, "ray@example.com", PASSWORD).await;
    let res = c.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
    assert_eq!(res.status(), 401);
    // Nor the previous step's code (older than the last accepted).
    let step = totp::step_at(app.clock.now_utc().unix_timestamp() as u64);
    let res =
        c.submit("/login/two-factor", "/login/two-factor", &[("code", &totp::code_for_step(&secret, step - 1))]).await;
    assert_eq!(res.status(), 401);
    // Two steps away is out of tolerance.
    let res =
        c.submit("/login/two-factor", "/login/two-factor", &[("code", &totp::code_for_step(&secret, step + 2))]).await;
    assert_eq!(res.status(), 401);
    // The next step's code (clock skew +1) is fine.
    let res =
        c.submit("/login/two-factor", "/login/two-factor", &[("code", &totp::code_for_step(&secret, step + 1))]).await;
    assert_eq!(res.status(), 303);

    // A recovery code works once, and its use is announced.
    let mut d = app.browser();
    sign_in(&app, &mut d, "ray@example.com", PASSWORD).await;
    let res = d.submit("/login/two-factor", "/login/two-factor", &[("code", &codes[3].to_uppercase())]).await;
    assert_eq!(res.status(), 303);
    assert!(
        app.mail_to("ray@example.com")
            .await
            .iter()
            .any(|m| m.contains("A recovery code was used") && m.contains("9 unused"))
    );
    let mut e = app.browser();
    sign_in(&app, &mut e, "ray@example.com", PASSWORD).await;
    let res = e.submit("/login/two-factor", "/login/two-factor", &[("code", &codes[3])]).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn second_factor_attempts_are_throttled() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "sam@example.com").await;
    let (secret, _) = enable_totp(&app, &mut a).await;
    let mut b = app.browser();
    sign_in(&app, &mut b, "sam@example.com", PASSWORD).await;
    for _ in 0..4 {
        let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", "123456")]).await;
        assert_eq!(res.status(), 401);
    }
    // The fifth failure locks the second factor and ends the half-finished sign-in.
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", "123456")]).await;
    assert_eq!(res.status(), 401);
    assert!(app.mail_to("sam@example.com").await.iter().any(|m| m.contains("Two-factor attempts")));
    let mut c = app.browser();
    sign_in(&app, &mut c, "sam@example.com", PASSWORD).await;
    next_step(&app);
    let res = c.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(res.status(), 429, "locked even with the right code");
    app.clock.advance(time::Duration::minutes(16));
    let mut d = app.browser();
    sign_in(&app, &mut d, "sam@example.com", PASSWORD).await;
    let res = d.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &secret))]).await;
    assert_eq!(res.status(), 303);
}

/// Signs `b` in fully (password, then a fresh code).
async fn sign_in_with_code(app: &TestApp, b: &mut Browser, email: &str, secret: &[u8]) {
    assert_eq!(location(&sign_in(app, b, email, PASSWORD).await), "/login/two-factor");
    next_step(app);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(app, secret))]).await;
    assert_eq!(location(&res), "/app");
}

/// New recovery codes and turning two-factor off need the password *and* the second factor
/// (a current code or a recovery code): neither a stolen session nor a stolen password alone
/// does it. Both end the other sessions, rotate this one and are announced.
#[tokio::test]
async fn turning_two_factor_off_or_regenerating_codes_needs_the_password_and_a_code() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "tia@example.com").await;
    let mut other = app.browser();
    assert_eq!(location(&sign_in(&app, &mut other, "tia@example.com", PASSWORD).await), "/app");
    let (secret, old_codes) = enable_totp(&app, &mut a).await;
    assert!(is_signed_in(&mut a).await);
    assert!(!is_signed_in(&mut other).await, "turning two-factor on left another session signed in");
    sign_in_with_code(&app, &mut other, "tia@example.com", &secret).await;

    // The password alone, a wrong password with a right code, a wrong code: refused.
    next_step(&app);
    let code = current_code(&app, &secret);
    let codes_path = "/account/two-factor/recovery-codes";
    let off_path = "/account/two-factor/disable";
    for (path, fields) in [
        (codes_path, vec![("current_password", PASSWORD)]),
        (off_path, vec![("current_password", PASSWORD)]),
        (codes_path, vec![("current_password", "wrong wrong wrong"), ("code", code.as_str())]),
        (off_path, vec![("current_password", PASSWORD), ("code", "000000")]),
        (codes_path, vec![("code", code.as_str())]),
    ] {
        let res = a.submit("/account/security", path, &fields).await;
        assert_eq!(res.status(), 422, "{path} {fields:?}");
    }
    assert!(is_signed_in(&mut other).await);

    let before = session_count(&app, "tia@example.com").await;
    assert_eq!(before, 2);
    let res = a
        .submit(
            "/account/security",
            "/account/two-factor/recovery-codes",
            &[("current_password", PASSWORD), ("code", &current_code(&app, &secret))],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(session_cookie(&res).is_some(), "the session was not rotated");
    let html = res.text().await.unwrap();
    assert!(!html.contains(&old_codes[0]));
    assert_eq!(html.matches("<li><code>").count(), 10);
    assert!(is_signed_in(&mut a).await);
    assert!(!is_signed_in(&mut other).await, "new recovery codes left another session signed in");
    let mail = critical_mail(&app, "tia@example.com", "New recovery codes were generated").await;
    assert!(mail.contains("other sessions were signed out"), "{mail}");
    let new_codes: Vec<String> =
        html.split("<li><code>").skip(1).map(|s| s.split("</code>").next().unwrap().to_string()).collect();

    // A recovery code stands in for the authenticator: turning it off with one.
    sign_in_with_code(&app, &mut other, "tia@example.com", &secret).await;
    let res = a
        .submit(
            "/account/security",
            "/account/two-factor/disable",
            &[("current_password", PASSWORD), ("code", &old_codes[1])],
        )
        .await;
    assert_eq!(res.status(), 422, "an old recovery code still worked");
    let res = a
        .submit(
            "/account/security",
            "/account/two-factor/disable",
            &[("current_password", PASSWORD), ("code", &new_codes[0])],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(is_signed_in(&mut a).await);
    assert!(!is_signed_in(&mut other).await, "turning two-factor off left another session signed in");
    critical_mail(&app, "tia@example.com", "Two-factor authentication was turned off").await;
    let mut db = app.db.admin_conn().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM recovery_codes").fetch_one(&mut db).await.unwrap();
    assert_eq!(left, 0);
    // Password alone signs in again.
    let mut c = app.browser();
    let res = sign_in(&app, &mut c, "tia@example.com", PASSWORD).await;
    assert_eq!(location(&res), "/app");
}

async fn session_count(app: &TestApp, email: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = $1")
        .bind(email)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn password_reset_links_work_once_and_expire() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "uma@example.com").await;
    let mut b = app.browser();
    b.submit("/forgot-password", "/forgot-password", &[("email", "uma@example.com")]).await;
    let link = app.link_in_mail("uma@example.com", "/reset-password?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let (status, _) = b.page(&link).await;
    assert_eq!(status, 200);
    // Policy applies.
    let res = b.post_with("/reset-password", &[("token", &token), ("password", "short")], Some(&b.token()), true).await;
    assert_eq!(res.status(), 422);
    let res = b
        .post_with(
            "/reset-password",
            &[("token", &token), ("password", "a fresh reset passphrase")],
            Some(&b.token()),
            true,
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    // The old session is gone, the link is spent.
    assert!(!is_signed_in(&mut a).await);
    let (status, _) = b.page(&link).await;
    assert_eq!(status, 400);
    // A second link expires after an hour.
    b.submit("/forgot-password", "/forgot-password", &[("email", "uma@example.com")]).await;
    let link2 = app.link_in_mail("uma@example.com", "/reset-password?token=").await;
    assert_ne!(link, link2);
    app.clock.advance(time::Duration::minutes(61));
    let (status, _) = b.page(&link2).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn changing_the_email_is_verified_and_announced() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "val@example.com").await;
    let mut other = app.browser();
    sign_in(&app, &mut other, "val@example.com", PASSWORD).await;
    let res = a
        .submit(
            "/account/security",
            "/account/email",
            &[("new_email", "val@new.example"), ("current_password", "wrong wrong")],
        )
        .await;
    assert_eq!(res.status(), 422);
    let res = a
        .submit(
            "/account/security",
            "/account/email",
            &[("new_email", "val@new.example"), ("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(app.mail_to("val@example.com").await.iter().any(|m| m.contains("is being changed")));
    let link = app.link_in_mail("val@new.example", "/account/email/confirm?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = a.submit(&link, "/account/email/confirm", &[("token", &token)]).await;
    assert_eq!(res.status(), 303);
    assert!(!is_signed_in(&mut other).await, "other sessions end");
    assert!(is_signed_in(&mut a).await);
    assert!(app.mail_to("val@example.com").await.iter().any(|m| m.contains("is now val@new.example")));
    let mut c = app.browser();
    assert_eq!(sign_in(&app, &mut c, "val@example.com", PASSWORD).await.status(), 401);
    assert_eq!(sign_in(&app, &mut c, "val@new.example", PASSWORD).await.status(), 303);
}

#[tokio::test]
async fn security_events_record_what_happened() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "wes@example.com").await;
    let mut b = app.browser();
    sign_in(&app, &mut b, "wes@example.com", "wrong wrong wrong").await;
    enable_totp(&app, &mut a).await;
    app.process_requests().await;
    let mut db = app.db.admin_conn().await;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM security_events e JOIN users u ON u.id = e.user_id WHERE u.email = 'wes@example.com' ORDER BY e.occurred_at, e.id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for k in ["sign_up", "email_verified", "sign_in", "sign_in_failed", "two_factor_enabled"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail::text FROM security_events").fetch_all(&mut db).await.unwrap();
    assert!(details.iter().all(|d| !d.contains(PASSWORD) && !d.contains("wrong wrong")));
    let (_, html) = a.page("/account/security").await;
    assert!(html.contains("two factor enabled"));
}

fn session_cookie(res: &reqwest::Response) -> Option<String> {
    set_cookies(res)
        .into_iter()
        .find(|c| c.starts_with("__Host-cf_session="))
        .map(|c| c.trim_start_matches("__Host-cf_session=").split(';').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
}

/// A change to what a user may do gives their session a new token on its next request: the
/// token from before the change stops working, and the session goes on with the new one.
#[tokio::test]
async fn a_privilege_change_rotates_the_session_token() {
    let app = TestApp::spawn().await;
    let mut org = crate::support::orgs::org_with_every_role(&app, "rot").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let mut b = app.browser();
    let res = sign_in(&app, &mut b, "member@rot.test", PASSWORD).await;
    let first = session_cookie(&res).expect("signed in");
    let with_token = async |token: &str, path: &str| {
        app.client
            .get(app.url(path))
            .header("cookie", format!("__Host-cf_session={token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let home = format!("/o/{slug}");
    // No change, no new token.
    let res = b.get(&home).await;
    assert_eq!(res.status(), 200);
    assert_eq!(session_cookie(&res), None);

    // Promoted to Manager by the Owner.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let token = crate::support::orgs::session_token(owner).await;
    let path = format!("/o/{slug}/members/{member_id}/role");
    let res = owner.post_with(&path, &[("role", "manager"), ("client_id", "")], Some(&token), true).await;
    assert_eq!(res.status(), 303);
    let res = b.get(&home).await;
    assert_eq!(res.status(), 200);
    let second = session_cookie(&res).expect("a new token after the role change");
    assert_ne!(second, first);
    assert_eq!(with_token(&first, &home).await, 303, "the token from before the change still works");
    assert_eq!(with_token(&second, &home).await, 200);
    // The browser goes on with the new token, and forms carry the new session's CSRF token.
    let res = b.get(&format!("/o/{slug}/clients")).await;
    assert_eq!((res.status().as_u16(), session_cookie(&res)), (200, None));
    let res = b.submit("/account/security", "/account/sessions/revoke-others", &[]).await;
    assert_eq!(res.status(), 303, "a form from the rotated session is accepted");

    // A per-member override is a privilege change too.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let token = crate::support::orgs::session_token(owner).await;
    let path = format!("/o/{slug}/members/{member_id}/permissions");
    let res = owner.post_with(&path, &[("grant", "invoices.read")], Some(&token), true).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let res = b.get("/app").await;
    let third = session_cookie(&res).expect("a new token after the override");
    assert!(third != second && third != first);
    assert_eq!(with_token(&second, "/app").await, 303);

    // Demoted back to Member: the next request is refused (no invoices for a Member), and the
    // refusal still carries the new token, so the browser stays signed in.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let token = crate::support::orgs::session_token(owner).await;
    let path = format!("/o/{slug}/members/{member_id}/role");
    let res = owner.post_with(&path, &[("role", "member"), ("client_id", "")], Some(&token), true).await;
    assert_eq!(res.status(), 303);
    let res = b.get(&format!("/o/{slug}/invoices/new")).await;
    assert_eq!(res.status(), 403);
    assert!(session_cookie(&res).is_some_and(|t| t != third), "a refusal dropped the rotated token");
    assert_eq!(b.get(&home).await.status(), 200);
}

/// Two requests racing with the same old token after a privilege change: one rotates, the other
/// finds nothing to do (and sends no cookie), so the browser keeps the token that counts.
#[tokio::test]
async fn only_the_first_of_racing_requests_rotates_the_token() {
    use clientflow::identity::session;
    let app = TestApp::spawn().await;
    sign_up(&app, "race@example.com").await;
    let res = sign_in(&app, &mut app.browser(), "race@example.com", PASSWORD).await;
    let token = session_cookie(&res).expect("signed in");
    let mut db = app.db.admin_conn().await;
    let hash = clientflow::platform::crypto::sha256(token.as_bytes());
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM sessions WHERE token_hash = $1")
        .bind(&hash[..])
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut tx = app.app_db.global().await.unwrap();
    assert!(session::rotate_token(&mut tx, id, &token).await.unwrap().is_none(), "nothing changed: no rotation");
    tx.commit().await.unwrap();
    sqlx::query("UPDATE users SET privilege_epoch = privilege_epoch + 1 WHERE email = 'race@example.com'")
        .execute(&mut db)
        .await
        .unwrap();
    let mut tx = app.app_db.global().await.unwrap();
    let first = session::rotate_token(&mut tx, id, &token).await.unwrap();
    let second = session::rotate_token(&mut tx, id, &token).await.unwrap();
    tx.commit().await.unwrap();
    let (new_token, _) = first.expect("the first rotates");
    assert!(second.is_none(), "the second rotated again");
    assert_eq!(
        sqlx::query_scalar::<_, Vec<u8>>("SELECT token_hash FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap(),
        clientflow::platform::crypto::sha256(new_token.as_bytes()).to_vec()
    );
}

pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// Sends `rounds` requests for a known address and as many for unknown ones, interleaved
/// (which of the pair goes first alternates), after a few uncounted warm-up rounds; returns
/// the times in milliseconds (known, unknown). `send(known, round)` sends one request and
/// answers how long it took.
async fn interleaved_timings(rounds: usize, mut send: impl AsyncFnMut(bool, usize) -> f64) -> (Vec<f64>, Vec<f64>) {
    const WARM_UP: usize = 5;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for round in 0..WARM_UP + rounds {
        for is_known in [round % 2 == 0, round % 2 == 1] {
            let ms = send(is_known, round).await;
            if round >= WARM_UP {
                if is_known { known.push(ms) } else { unknown.push(ms) }
            }
        }
    }
    (known, unknown)
}

/// Timing tells nothing when a request for a known address is as likely to be the slower of
/// its pair as the one for an unknown address it was interleaved with (pairing cancels the
/// load of a busy machine, which drifts slowly). The share of pairs where the known one was
/// slower is about one half then; `within` is how far from one half it may be (four standard
/// deviations of a fair split: with 100 pairs 0.2, with 40 pairs 0.3 — a false alarm about once
/// in fifteen thousand runs), while a real difference drives it towards 1.
fn assert_same_timing(what: &str, known: &[f64], unknown: &[f64]) {
    assert_eq!(known.len(), unknown.len());
    let n = known.len() as f64;
    let slower = known.iter().zip(unknown).filter(|(k, u)| k > u).count() as f64 / n;
    let within = 2.0 / n.sqrt();
    eprintln!(
        "{what}: known median {:.3} ms, unknown median {:.3} ms; the known request was the slower in {:.0}% of {n} pairs",
        median(known),
        median(unknown),
        slower * 100.0
    );
    assert!(
        (slower - 0.5).abs() <= within,
        "{what}: the request for a known address was the slower of its pair in {:.0}% of {n} pairs \
         (medians {:.3} ms and {:.3} ms): timing tells which addresses have accounts",
        slower * 100.0,
        median(known),
        median(unknown)
    );
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

/// A reset request for an address with an account does exactly what one for an unknown address
/// does — it records the request — and the worker decides the rest: so it takes the same time.
#[tokio::test]
async fn password_reset_requests_take_the_same_time_for_known_and_unknown_addresses() {
    let app = TestApp::spawn().await;
    sign_up(&app, "kim@example.com").await;
    let mut b = app.browser();
    b.page("/forgot-password").await;
    let token = b.token();
    let outbox_before = count(&app, "SELECT count(*) FROM outbox").await;
    for email in ["kim@example.com", "nobody@example.com"] {
        let res = b.post_with("/forgot-password", &[("email", email)], Some(&token), true).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, "/forgot-password/sent".to_string()));
    }
    // Until the worker runs, the request for the real account left what the other one left.
    assert_eq!(count(&app, "SELECT count(*) FROM email_tokens WHERE purpose = 'reset_password'").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await, outbox_before);
    assert_eq!(count(&app, "SELECT count(*) FROM account_requests").await, 2);
    // The worker sends the link to the account, and nothing to the unknown address.
    app.link_in_mail("kim@example.com", "/reset-password?token=").await;
    assert!(app.mail_to("nobody@example.com").await.is_empty());
    assert_eq!(count(&app, "SELECT count(*) FROM account_requests").await, 0);

    let (known, unknown) = interleaved_timings(100, async |known, round| {
        let email = if known { "kim@example.com".to_string() } else { format!("nobody{round}@example.com") };
        let start = std::time::Instant::now();
        let res = b.post_with("/forgot-password", &[("email", &email)], Some(&token), true).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(res.status(), 303);
        ms
    })
    .await;
    assert_same_timing("password reset", &known, &unknown);
}

/// Sign-up hashes the password and records the request either way; the worker creates the
/// account or tells the existing one's owner. The same work, the same time.
#[tokio::test]
async fn sign_up_takes_the_same_time_for_new_and_taken_addresses() {
    let app = TestApp::spawn().await;
    sign_up(&app, "kim@example.com").await;
    let mut b = app.browser();
    let users_before = count(&app, "SELECT count(*) FROM users").await;
    let outbox_before = count(&app, "SELECT count(*) FROM outbox").await;
    let mut sign_up_timed = async |email: &str| {
        b.page("/signup").await;
        let token = b.token();
        let (challenge, solution) = clientflow_test_support::browser::pow_fields(&b.last_page).expect("a challenge");
        let fields = [
            ("email", email),
            ("password", "another long passphrase here"),
            ("display_name", ""),
            ("pow_challenge", challenge.as_str()),
            ("pow_solution", solution.as_str()),
        ];
        let start = std::time::Instant::now();
        let res = b.post_with("/signup", &fields, Some(&token), true).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!((res.status().as_u16(), location(&res)), (303, "/signup/check-email".to_string()));
        ms
    };
    sign_up_timed("kim@example.com").await;
    sign_up_timed("lee@example.com").await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM users").await,
        users_before,
        "an account was created before the worker ran"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await, outbox_before);
    assert!(app.mail_to("kim@example.com").await.iter().any(|m| m.contains("Someone tried to sign up")));
    app.link_in_mail("lee@example.com", "/verify-email?token=").await;
    assert_eq!(count(&app, "SELECT count(*) FROM users").await, users_before + 1);

    let (known, unknown) = interleaved_timings(40, async |known, round| {
        let email = if known { "kim@example.com".to_string() } else { format!("new{round}@example.com") };
        sign_up_timed(&email).await
    })
    .await;
    assert_same_timing("sign-up", &known, &unknown);
}

/// Asking to move to an address that another account uses looks exactly like asking for a free
/// one: the same mails, the same time (the conflict shows only to whoever confirms from that
/// mailbox).
#[tokio::test]
async fn an_email_change_to_a_taken_address_looks_like_any_other() {
    let app = TestApp::spawn().await;
    sign_up(&app, "kim@example.com").await;
    let mut a = sign_up(&app, "ada@example.com").await;
    a.page("/account/security").await;
    let token = a.token();
    let change = async |new_email: &str| {
        let fields = [("new_email", new_email), ("current_password", PASSWORD)];
        let start = std::time::Instant::now();
        let res = a.post_with("/account/email", &fields, Some(&token), true).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!((res.status().as_u16(), location(&res)), (303, "/account/security?done=email".to_string()));
        ms
    };
    change("kim@example.com").await;
    change("free@example.com").await;
    app.link_in_mail("kim@example.com", "/account/email/confirm?token=").await;
    app.link_in_mail("free@example.com", "/account/email/confirm?token=").await;

    let (known, unknown) = interleaved_timings(40, async |known, round| {
        let email = if known { "kim@example.com".to_string() } else { format!("free{round}@example.com") };
        change(&email).await
    })
    .await;
    assert_same_timing("email change", &known, &unknown);
}

async fn post_setup(b: &mut Browser, fields: &[(&str, &str)]) -> reqwest::Response {
    b.page("/account/security").await;
    b.post_with("/account/two-factor/setup", fields, Some(&b.token()), true).await
}

async fn two_factor_on(app: &TestApp, email: &str) -> bool {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT totp_enabled_at IS NOT NULL FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// A stolen session cookie is not enough to put the thief's authenticator on the account (which
/// would then stop the owner's password sign-in and reset at a factor only the thief has).
#[tokio::test]
async fn turning_two_factor_on_needs_the_password_not_just_a_session() {
    let app = TestApp::spawn().await;
    // `stolen` holds the owner's session, as a thief with the cookie would; no password.
    let mut stolen = sign_up(&app, "nia@example.com").await;
    let mut other = app.browser();
    assert_eq!(location(&sign_in(&app, &mut other, "nia@example.com", PASSWORD).await), "/app");
    let secret = setup_secret(&mut stolen).await;
    let code = current_code(&app, &secret);
    for fields in
        [vec![("code", code.as_str())], vec![("code", code.as_str()), ("current_password", "a guess a guess")]]
    {
        let res = post_setup(&mut stolen, &fields).await;
        assert_eq!(res.status(), 422, "{fields:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains("<strong>Current password</strong>"), "{html}");
        assert!(!html.contains("<li><code>"), "recovery codes were shown");
    }
    assert!(!two_factor_on(&app, "nia@example.com").await, "a session alone turned two-factor on");
    assert_eq!(count(&app, "SELECT count(*) FROM recovery_codes").await, 0);
    assert!(is_signed_in(&mut other).await);
    // The owner's password still signs in without a second factor.
    assert_eq!(location(&sign_in(&app, &mut app.browser(), "nia@example.com", PASSWORD).await), "/app");

    // With the password: on, other sessions end, this one is rotated, the account is told.
    let res = post_setup(&mut stolen, &[("code", &code), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 200);
    assert!(session_cookie(&res).is_some(), "the session was not rotated");
    assert_eq!(res.text().await.unwrap().matches("<li><code>").count(), 10);
    assert!(two_factor_on(&app, "nia@example.com").await);
    assert!(!is_signed_in(&mut other).await, "turning two-factor on left another session signed in");
    assert!(is_signed_in(&mut stolen).await);
    let mail = critical_mail(&app, "nia@example.com", "Two-factor authentication is on").await;
    assert!(mail.contains("other sessions were signed out") && mail.contains("reset your two-factor"), "{mail}");
}

/// Replacing the authenticator needs the password and a code from the current one: a stolen
/// session (or a stolen password with it) can't swap in the thief's app.
#[tokio::test]
async fn replacing_the_authenticator_needs_the_password_and_the_current_code() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "oli@example.com").await;
    let (old_secret, old_codes) = enable_totp(&app, &mut owner).await;
    let mut other = app.browser();
    sign_in_with_code(&app, &mut other, "oli@example.com", &old_secret).await;

    let (status, html) = owner.page("/account/two-factor/setup").await;
    assert_eq!(status, 200);
    assert!(html.contains("Replace your authenticator app") && html.contains("name=\"current_code\""), "{html}");
    let new_secret = secret_on_page(&html);
    assert_ne!(new_secret, old_secret);
    next_step(&app);
    let new_code = current_code(&app, &new_secret);
    let old_code = current_code(&app, &old_secret);
    for fields in [
        vec![("code", new_code.as_str()), ("current_password", PASSWORD)],
        vec![("code", new_code.as_str()), ("current_password", PASSWORD), ("current_code", "000000")],
        vec![("code", new_code.as_str()), ("current_password", "a guess a guess"), ("current_code", old_code.as_str())],
    ] {
        let res = post_setup(&mut owner, &fields).await;
        assert_eq!(res.status(), 422, "{fields:?}");
        assert!(!res.text().await.unwrap().contains("<li><code>"));
    }
    assert!(is_signed_in(&mut other).await);

    let res =
        post_setup(&mut owner, &[("code", &new_code), ("current_password", PASSWORD), ("current_code", &old_code)])
            .await;
    assert_eq!(res.status(), 200);
    assert!(session_cookie(&res).is_some());
    assert_eq!(res.text().await.unwrap().matches("<li><code>").count(), 10);
    assert!(!is_signed_in(&mut other).await, "replacing the authenticator left another session signed in");
    critical_mail(&app, "oli@example.com", "Your two-factor authenticator was replaced").await;
    // The old app and the old recovery codes are done; the new app signs in.
    next_step(&app);
    let mut b = app.browser();
    sign_in(&app, &mut b, "oli@example.com", PASSWORD).await;
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &old_secret))]).await;
    assert_eq!(res.status(), 401);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &old_codes[0])]).await;
    assert_eq!(res.status(), 401);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &current_code(&app, &new_secret))]).await;
    assert_eq!(location(&res), "/app");
}

/// A secret shown on the set-up page belongs to the session that saw it and to that one
/// attempt: a session that signed out took its secret with it, showing the page again starts a
/// new attempt, and nothing is stored on the account until a code is confirmed.
#[tokio::test]
async fn a_set_up_secret_belongs_to_one_session_and_one_attempt() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "pat@example.com").await;
    let mut earlier = app.browser();
    assert_eq!(location(&sign_in(&app, &mut earlier, "pat@example.com", PASSWORD).await), "/app");
    let seen_earlier = setup_secret(&mut earlier).await;
    assert_eq!(count(&app, "SELECT count(*) FROM users WHERE totp_secret IS NOT NULL").await, 0);
    let res = earlier.post_with("/logout", &[], Some(&earlier.token()), true).await;
    assert_eq!(res.status(), 303);
    assert_eq!(count(&app, "SELECT count(*) FROM totp_enrollments").await, 0, "signing out kept the secret");

    // The owner's set-up is a new secret; the earlier one's codes are refused.
    let first = setup_secret(&mut owner).await;
    assert_ne!(first, seen_earlier, "the owner was shown the secret an earlier session saw");
    let res =
        post_setup(&mut owner, &[("code", &current_code(&app, &seen_earlier)), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 422);
    // A mistyped code keeps the same attempt (the page shows the same secret again).
    assert_eq!(secret_on_page(&res.text().await.unwrap()), first);
    // Showing the page again is a new attempt: the first secret stops working.
    let second = setup_secret(&mut owner).await;
    assert_ne!(second, first);
    let res = post_setup(&mut owner, &[("code", &current_code(&app, &first)), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 422);
    assert!(!two_factor_on(&app, "pat@example.com").await);
    assert_eq!(count(&app, "SELECT count(*) FROM totp_enrollments").await, 1);

    // It expires after ten minutes: refused, and a new secret is shown.
    app.clock.advance(time::Duration::minutes(11));
    let res = post_setup(&mut owner, &[("code", &current_code(&app, &second)), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 409);
    let html = res.text().await.unwrap();
    assert!(html.contains("expired"), "{html}");
    let third = secret_on_page(&html);
    assert_ne!(third, second);
    let res = post_setup(&mut owner, &[("code", &current_code(&app, &third)), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 200);
    // Confirmed once: the attempt is over.
    assert_eq!(count(&app, "SELECT count(*) FROM totp_enrollments").await, 0);
    assert!(two_factor_on(&app, "pat@example.com").await);
}

/// A password change ends the sessions, and the set-up secrets they were shown with them.
#[tokio::test]
async fn a_password_change_discards_set_up_secrets() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "quy@example.com").await;
    let mut other = app.browser();
    sign_in(&app, &mut other, "quy@example.com", PASSWORD).await;
    let seen_by_other = setup_secret(&mut other).await;
    let seen = setup_secret(&mut owner).await;
    const NEW: &str = "quite another passphrase";
    let res = owner
        .submit("/account/security", "/account/password", &[("current_password", PASSWORD), ("new_password", NEW)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(count(&app, "SELECT count(*) FROM totp_enrollments").await, 0, "a set-up secret outlived the change");
    // The first try finds no set-up (a new secret is shown), the second one the new secret.
    let res = post_setup(&mut owner, &[("code", &current_code(&app, &seen)), ("current_password", NEW)]).await;
    assert_eq!(res.status(), 409, "a secret shown before the password change was accepted");
    let fresh = secret_on_page(&res.text().await.unwrap());
    assert!(fresh != seen && fresh != seen_by_other);
    let res = post_setup(&mut owner, &[("code", &current_code(&app, &seen_by_other)), ("current_password", NEW)]).await;
    assert_eq!(res.status(), 422, "a secret another session saw before the password change was accepted");
    assert!(!two_factor_on(&app, "quy@example.com").await);
}

/// A NUL in `next` never reaches the return-address check (or anything else): like every NUL in
/// a request, it is refused first, naming the field (`platform::http::input`).
#[tokio::test]
async fn a_nul_in_next_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let mut signed_in = sign_up(&app, "nul@example.com").await;
    for raw in ["\u{0}//evil.example", "/a\u{0}b", "/\u{0}"] {
        let query = format!("/login?next={}", encode(raw));
        let mut anonymous = app.browser();
        for b in [&mut anonymous, &mut signed_in] {
            let res = b.get(&query).await;
            assert_eq!(res.status(), 422, "{raw:?}");
            assert!(res.text().await.unwrap().contains("&#34;next&#34;"), "{raw:?}");
        }
        let res = app.browser().get(&format!("/login/google?next={}", encode(raw))).await;
        assert_ne!(res.status().as_u16() / 100, 5, "{raw:?}");
        assert_ne!(res.status(), 303, "{raw:?}: never redirected");
    }
}

/// Every entry point that takes a `next` — the sign-in page (signed in and not), the sign-in
/// form, the second-factor page and form — sends the browser only to a path on this site, in
/// the form a browser would read it (Google's is in `google.rs`).
#[tokio::test]
async fn next_never_leads_off_the_site_from_any_entry_point() {
    let app = TestApp::spawn().await;
    let mut plain = sign_up(&app, "ned@example.com").await;
    let mut owner = sign_up(&app, "two@example.com").await;
    let (secret, _) = enable_totp(&app, &mut owner).await;
    for (raw, expected) in next_values() {
        let what = format!("{raw:?}");
        let query = format!("/login?next={}", encode(&raw));
        // The sign-in page, signed in: straight there.
        let res = plain.get(&query).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, expected.clone()), "GET /login signed in: {what}");
        // Not signed in: the form carries it.
        let mut b = app.browser();
        let (status, html) = b.page(&query).await;
        assert_eq!(status, 200, "GET /login: {what}");
        assert_eq!(next_on_page(&html), expected, "GET /login: {what}");
        // The sign-in form.
        let fields = [("email", "ned@example.com"), ("password", PASSWORD), ("next", raw.as_str())];
        let res = b.post_with("/login", &fields, Some(&b.token()), true).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, expected.clone()), "POST /login: {what}");
        // With a second factor: the page in between carries it on.
        let mut c = app.browser();
        c.page(&query).await;
        let fields = [("email", "two@example.com"), ("password", PASSWORD), ("next", raw.as_str())];
        let res = c.post_with("/login", &fields, Some(&c.token()), true).await;
        let between = if expected == "/app" {
            "/login/two-factor".to_string()
        } else {
            format!("/login/two-factor?next={}", encode(&expected))
        };
        assert_eq!((res.status().as_u16(), location(&res)), (303, between), "POST /login, two-factor: {what}");
        let (status, html) = c.page(&format!("/login/two-factor?next={}", encode(&raw))).await;
        assert_eq!(status, 200, "GET /login/two-factor: {what}");
        assert_eq!(next_on_page(&html), expected, "GET /login/two-factor: {what}");
        next_step(&app);
        let fields = [("code", current_code(&app, &secret)), ("next", raw.clone())];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = c.post_with("/login/two-factor", &fields, Some(&c.token()), true).await;
        assert_eq!((res.status().as_u16(), location(&res)), (303, expected.clone()), "POST /login/two-factor: {what}");
    }
}

/// A failed sign-in for an address with an account — a member of organizations, whose audit
/// logs record it — does here what one for an unknown address does: the failure is counted and
/// the request recorded; the worker writes the account's security and audit events. So a wrong
/// password takes the same time whichever address it was tried for.
#[tokio::test]
async fn a_failed_sign_in_takes_the_same_time_for_known_and_unknown_addresses() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "kim@example.com").await;
    crate::support::orgs::create_org(&mut owner, "Kim One").await;
    crate::support::orgs::create_org(&mut owner, "Kim Two").await;
    let failed = "SELECT count(*) FROM audit_events WHERE action = 'member.sign_in_failed'";
    let mut b = app.browser();
    b.page("/login").await;
    let token = b.token();
    let fields = [("email", "kim@example.com"), ("password", "not the password at all")];
    let res = b.post_with("/login", &fields, Some(&token), true).await;
    assert_eq!(res.status(), 401);
    assert_eq!(count(&app, failed).await, 0, "the account's audit events were written by the request");
    assert_eq!(count(&app, "SELECT count(*) FROM account_requests WHERE kind = 'sign_in_failed'").await, 1);
    app.process_requests().await;
    assert_eq!(count(&app, failed).await, 2, "one event in each organization");

    let (known, unknown) = interleaved_timings(60, async |known, round| {
        let email = if known { "kim@example.com".to_string() } else { format!("nobody{round}@example.com") };
        let fields = [("email", email.as_str()), ("password", "not the password at all")];
        let start = std::time::Instant::now();
        let res = b.post_with("/login", &fields, Some(&token), true).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(res.status(), 401);
        // Fewer failures than lock an address within the window.
        app.clock.advance(time::Duration::minutes(4));
        ms
    })
    .await;
    assert_same_timing("failed sign-in", &known, &unknown);
}
