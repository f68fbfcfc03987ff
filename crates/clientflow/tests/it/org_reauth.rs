//! A security change to an organization (its session and two-factor policy, its IP allowlist,
//! its ownership, a new API key) needs the person, not only their session: a stolen cookie and
//! CSRF token change nothing without the password.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;

use crate::support::accounts::{PASSWORD, current_code, enable_totp};
use crate::support::orgs::{org_with_every_role, session_token};

async fn post(b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = session_token(b).await;
    b.post_with(path, fields, Some(&token), true).await
}

/// Everything the four forms could change, read past the tenant door.
async fn security_state(app: &TestApp, org: &str) -> (String, String) {
    let mut db = app.db.admin_conn().await;
    let org_id: uuid::Uuid = org.parse().unwrap();
    let settings: String = sqlx::query_scalar(
        "SELECT concat_ws(' | ', ip_allowlist::text, session_timeout_minutes::text, require_two_factor::text)
           FROM organizations WHERE id = $1",
    )
    .bind(org_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let people: String = sqlx::query_scalar(
        "SELECT concat_ws(' | ',
                (SELECT string_agg(user_id::text || ':' || role, ',' ORDER BY user_id) FROM memberships
                  WHERE organization_id = $1),
                (SELECT count(*)::text FROM api_keys WHERE organization_id = $1))",
    )
    .bind(org_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    (settings, people)
}

fn forms(slug: &str, new_owner: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    vec![
        (
            format!("/o/{slug}/settings/security"),
            vec![("session_timeout_minutes", "15".into()), ("require_two_factor", "".into())],
        ),
        (
            format!("/o/{slug}/settings/allowlist"),
            vec![("ip_allowlist", "203.0.113.0/24".into()), ("confirm_lockout", "on".into())],
        ),
        (
            format!("/o/{slug}/settings/api-keys"),
            vec![("name", "Thief's key".into()), ("role", "admin".into()), ("expires_in_days", "".into())],
        ),
        (format!("/o/{slug}/transfer"), vec![("member", new_owner.into())]),
    ]
}

#[tokio::test]
async fn a_stolen_session_changes_no_security_setting_of_an_organization() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "stolen").await;
    let slug = org.slug.clone();
    let admin_id = org.people["admin"].user_id.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;

    // Each form asks for the password where people fill it in.
    for page in ["settings/security", "settings/api-keys", "members"] {
        let (status, html) = owner.page(&format!("/o/{slug}/{page}")).await;
        assert_eq!(status, 200);
        assert!(html.contains(r#"name="current_password""#), "{page} doesn't ask for the password");
    }

    let before = security_state(&app, &org.id).await;
    for (path, fields) in forms(&slug, &admin_id) {
        // No password, then a wrong one: refused, naming the field, nothing changed.
        for password in [None, Some("a guess at the password")] {
            let mut f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(p) = password {
                f.push(("current_password", p));
            }
            let res = post(owner, &path, &f).await;
            assert_eq!(res.status(), 422, "{path} with {password:?}");
            let html = res.text().await.unwrap();
            assert!(html.contains("Current password"), "{path}: the refusal names the field: {html}");
            assert!(!html.contains("cf_live_"), "{path} showed a key");
            assert!(!html.contains("a guess at the password"), "{path} echoed the password back");
        }
        assert_eq!(security_state(&app, &org.id).await, before, "{path} changed something");
        // Failed confirmations have a budget: start each form with a fresh one.
        app.clock.advance(time::Duration::minutes(16));
    }

    // Failures are recorded against the account, not silently dropped.
    let mut db = app.db.admin_conn().await;
    let owner_id: uuid::Uuid = org.people["owner"].user_id.parse().unwrap();
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_events WHERE user_id = $1 AND kind = 'reauthentication_failed'",
    )
    .bind(owner_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(failed, 8);

    // With the password, each one goes through (the transfer last: the Owner stops being one).
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    for (path, fields) in forms(&slug, &admin_id) {
        let mut f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if path.ends_with("/allowlist") {
            // The saver keeps access: the test's own address is in the list.
            f[0].1 = "127.0.0.1/32\n::1/128";
        }
        f.push(("current_password", PASSWORD));
        let res = post(owner, &path, &f).await;
        assert!(matches!(res.status().as_u16(), 200 | 303), "{path}: {}", res.text().await.unwrap());
    }
    let after = security_state(&app, &org.id).await;
    assert!(after.0.contains("127.0.0.1/32") && after.0.contains("15"), "{after:?}");
    assert!(after.1.contains(&format!("{admin_id}:owner")), "{after:?}");
    assert!(after.1.ends_with(" | 1"), "one key: {after:?}");
}

/// Five wrong confirmations lock confirmations for a while, even with the right password, so a
/// stolen session can't guess the password through these forms either.
#[tokio::test]
async fn guessing_the_password_through_an_organization_form_locks_confirmations() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "guessing").await;
    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let path = format!("/o/{slug}/settings/security");
    for guess in 0..5 {
        let guess = format!("guess number {guess}");
        let res = post(owner, &path, &[("session_timeout_minutes", "20"), ("current_password", &guess)]).await;
        assert_eq!(res.status(), 422);
    }
    let res = post(owner, &path, &[("session_timeout_minutes", "20"), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 429);
    let before = security_state(&app, &org.id).await;
    assert!(!before.0.contains("20"), "a locked confirmation changed the setting: {before:?}");
}

/// With two-factor on, the password is still the confirmation asked for (a code alone, from a
/// stolen phone, is not enough), and a code in its place is refused.
#[tokio::test]
async fn an_owner_with_two_factor_confirms_with_the_password() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "twofactor").await;
    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (secret, _) = enable_totp(&app, owner).await;
    crate::support::accounts::next_step(&app);
    let code = current_code(&app, &secret);
    let path = format!("/o/{slug}/settings/security");
    let res = post(owner, &path, &[("session_timeout_minutes", "25"), ("code", &code)]).await;
    assert_eq!(res.status(), 422);
    let res = post(owner, &path, &[("session_timeout_minutes", "25"), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    assert!(security_state(&app, &org.id).await.0.contains("25"));
}

/// Making someone an Admin (an invitation or a role change) gives lasting access to everything:
/// a page asks for the password first, and a stolen session without it makes nobody an Admin.
#[tokio::test]
async fn making_someone_an_admin_asks_for_the_password() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "elevate").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let role_path = format!("/o/{slug}/members/{member_id}/role");
    let invite_path = format!("/o/{slug}/invitations");
    let role = [("role", "admin"), ("client_id", "")];
    let invite = [("email", "accomplice@evil.test"), ("role", "admin"), ("client_id", "")];

    // The first answer is the page that asks, repeating the choice.
    for (path, fields) in [(&role_path, &role[..]), (&invite_path, &invite[..])] {
        let res = post(owner, path, fields).await;
        assert_eq!(res.status(), 200, "{path}");
        let html = res.text().await.unwrap();
        assert!(html.contains("an Admin?") && html.contains(r#"name="current_password""#), "{html}");
        assert!(html.contains(r#"name="confirming" value="1""#));
        // Confirming without the password, or with a wrong one: refused, nothing changes.
        for password in ["", "a guess at it"] {
            let mut f = fields.to_vec();
            f.extend([("confirming", "1"), ("current_password", password)]);
            let res = post(owner, path, &f).await;
            assert_eq!(res.status(), 422, "{path} {password:?}");
            assert!(res.text().await.unwrap().contains("Current password"));
        }
        app.clock.advance(time::Duration::minutes(16));
    }
    let mut db = app.db.admin_conn().await;
    let member: uuid::Uuid = member_id.parse().unwrap();
    let role_now: String = sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1")
        .bind(member)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(role_now, "member");
    let invited: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE email = 'accomplice@evil.test'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(invited, 0);

    // With the password, both go through; other roles never ask.
    for (path, fields) in [(&role_path, &role[..]), (&invite_path, &invite[..])] {
        let mut f = fields.to_vec();
        f.extend([("confirming", "1"), ("current_password", PASSWORD)]);
        assert_eq!(post(owner, path, &f).await.status(), 303, "{path}");
    }
    let res = post(owner, &invite_path, &[("email", "helper@ok.test"), ("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 303);
    let role_now: String = sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1")
        .bind(member)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(role_now, "admin");
}
