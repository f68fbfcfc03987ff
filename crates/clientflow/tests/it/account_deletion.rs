//! Deleting one's own account: the request (re-authenticated, typed email, refused for the last
//! Owner), the grace period (signed out everywhere, sign-in leads only to cancelling), the
//! purge (no personal data left anywhere, in both regions; authorship kept as "Deleted user";
//! the address free again), and the attacks: forged or token-less forms, someone else's
//! session.

use clientflow::access::api_key::{self as keys, NewKey};
use clientflow::identity::account_deletion;
use clientflow::platform::ids::{OrgId, UserId};
use clientflow::work::{projects, tasks};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use sqlx::PgConnection;

use crate::support::accounts::{PASSWORD, critical_mail, current_code, enable_totp, next_step, sign_in, sign_up};
use crate::support::api::ctx;
use crate::support::operator;
use crate::support::orgs::{create_org, invite_and_join, user_id};

const NAME: &str = "Zephyrine Quillfeather";

/// Signs up `email` with a display name of its own (the shared helper gives everyone the same).
async fn sign_up_named(app: &TestApp, email: &str, name: &str) -> Browser {
    let mut b = app.browser();
    let res = b.submit("/signup", "/signup", &[("email", email), ("password", PASSWORD), ("display_name", name)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let link = app.link_in_mail(email, "/verify-email?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), 303);
    b
}

async fn ask_to_delete(b: &mut Browser, fields: &[(&str, &str)]) -> reqwest::Response {
    b.submit("/account/security", "/account/delete", fields).await
}

/// (status, pending requests, live sessions) of the account with this id.
async fn standing(app: &TestApp, user: &str) -> (String, i64, i64) {
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid = user.parse().unwrap();
    sqlx::query_as(
        "SELECT u.status, (SELECT count(*) FROM account_deletion_requests WHERE user_id = u.id), \
                (SELECT count(*) FROM sessions WHERE user_id = u.id) FROM users u WHERE u.id = $1",
    )
    .bind(id)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

async fn purge_after_grace(app: &TestApp) -> account_deletion::Pass {
    app.clock.advance(time::Duration::days(31));
    account_deletion::purge_due(&app.app_db, app.clock.now_utc()).await.unwrap()
}

#[tokio::test]
async fn the_last_owner_is_refused_with_the_organizations_named_and_the_purge_checks_again() {
    let app = TestApp::spawn().await;
    let mut alice = sign_up(&app, "alice@owners.test").await;
    let slug = create_org(&mut alice, "Acme Widgets").await;
    let alice_id = user_id(&app, "alice@owners.test").await;
    let res = ask_to_delete(
        &mut alice,
        &[("confirm_email", "alice@owners.test"), ("current_password", PASSWORD), ("code", "")],
    )
    .await;
    assert_eq!(res.status(), 409);
    let html = res.text().await.unwrap();
    assert!(html.contains("You are the last Owner of &#34;Acme Widgets&#34;"), "{html}");
    assert_eq!(standing(&app, &alice_id).await, ("active".into(), 0, 1));
    assert_eq!(alice.page("/account/security").await.0, 200, "still signed in");

    // With a second Owner she may go; if she is the last one when the purge runs, it waits.
    let mut bob = invite_and_join(&app, &mut alice, &slug, "bob@owners.test", "admin", None).await;
    let bob_id = user_id(&app, "bob@owners.test").await;
    let org = crate::support::org_id(&app, &slug).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE memberships SET role = 'owner' WHERE organization_id = $1 AND user_id = $2")
        .bind(org)
        .bind(bob_id.parse::<uuid::Uuid>().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    let res =
        ask_to_delete(&mut bob, &[("confirm_email", "bob@owners.test"), ("current_password", PASSWORD), ("code", "")])
            .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // Alice can't go now: Bob's account is on its way out.
    let res = ask_to_delete(
        &mut alice,
        &[("confirm_email", "alice@owners.test"), ("current_password", PASSWORD), ("code", "")],
    )
    .await;
    assert_eq!(res.status(), 409);
    // Alice steps down: Bob is the last Owner when his purge comes.
    sqlx::query("UPDATE memberships SET role = 'admin' WHERE organization_id = $1 AND user_id = $2")
        .bind(org)
        .bind(alice_id.parse::<uuid::Uuid>().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    let pass = purge_after_grace(&app).await;
    assert!(pass.purged.is_empty());
    assert_eq!(pass.postponed, vec![bob_id.parse::<UserId>().unwrap()]);
    let mail = critical_mail(&app, "bob@owners.test", "The deletion of your account is postponed").await;
    assert!(mail.contains("Acme Widgets"), "{mail}");
    let (status, pending, _) = standing(&app, &bob_id).await;
    assert_eq!((status.as_str(), pending), ("deleting", 1));
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(bob_id.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(email, "bob@owners.test", "nothing was purged");
}

#[tokio::test]
async fn a_wrong_password_a_missing_second_factor_or_a_wrong_email_change_nothing() {
    let app = TestApp::spawn().await;
    let mut b = sign_up(&app, "carol@factors.test").await;
    let (secret, _) = enable_totp(&app, &mut b).await;
    let id = user_id(&app, "carol@factors.test").await;
    let before = standing(&app, &id).await;
    next_step(&app);
    let code = current_code(&app, &secret);
    // Each with the id of the field the page marks invalid.
    let attempts: [(&[(&str, &str)], &str); 5] = [
        (
            &[("confirm_email", "someone@else.test"), ("current_password", PASSWORD), ("code", &code)],
            "security-confirm-email-error",
        ),
        (&[("confirm_email", ""), ("current_password", PASSWORD), ("code", &code)], "security-confirm-email-error"),
        (
            &[("confirm_email", "carol@factors.test"), ("current_password", "wrong password!!"), ("code", &code)],
            "security-current-password-5-error",
        ),
        (
            &[("confirm_email", "carol@factors.test"), ("current_password", PASSWORD), ("code", "")],
            "security-code-5-error",
        ),
        (
            &[("confirm_email", "carol@factors.test"), ("current_password", PASSWORD), ("code", "000000")],
            "security-code-5-error",
        ),
    ];
    for (fields, field) in attempts {
        let res = ask_to_delete(&mut b, fields).await;
        assert_eq!(res.status(), 422, "{fields:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("aria-describedby=\"{}\"", field)), "{field}: {html}");
        assert_eq!(standing(&app, &id).await, before, "nothing changes: {fields:?}");
        assert_eq!(b.page("/account/security").await.0, 200, "still signed in");
    }
    let mut db = app.db.admin_conn().await;
    let mails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject = 'Your account is scheduled for deletion'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(mails, 0);
    // Every factor right: scheduled, and signed out.
    next_step(&app);
    let code = current_code(&app, &secret);
    let res = ask_to_delete(
        &mut b,
        &[("confirm_email", " Carol@Factors.test "), ("current_password", PASSWORD), ("code", &code)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let (status, pending, sessions) = standing(&app, &id).await;
    assert_eq!((status.as_str(), pending, sessions), ("deleting", 1, 0));
    // Signing in again takes both factors and leads to the cancel page only.
    let res = sign_in(&app, &mut b, "carol@factors.test", PASSWORD).await;
    assert_eq!(location(&res), "/login/two-factor");
    assert_eq!(location(&b.get("/account/deletion").await), "/login/two-factor");
    next_step(&app);
    let code = current_code(&app, &secret);
    let res = b.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
    assert_eq!(location(&res), "/account/deletion");
}

#[tokio::test]
async fn the_grace_period_offers_only_cancelling_and_cancelling_restores_access() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "owner@grace.test").await;
    let slug = create_org(&mut owner, "Grace Co").await;
    let mut dave = invite_and_join(&app, &mut owner, &slug, "dave@grace.test", "admin", None).await;
    let dave_id = user_id(&app, "dave@grace.test").await;
    let org = crate::support::org_id(&app, &slug).await;
    let key = api_key_for(&app, org, &dave_id).await;
    assert_eq!(api_get(&app, &key, "/api/v1/projects").await, 200);
    let res =
        ask_to_delete(&mut dave, &[("confirm_email", "dave@grace.test"), ("current_password", PASSWORD), ("code", "")])
            .await;
    assert_eq!(res.status(), 200);
    let body = critical_mail(&app, "dave@grace.test", "Your account is scheduled for deletion").await;
    assert!(body.contains("/login"), "{body}");
    // Signed out everywhere: the old session and his API key are refused.
    assert!(location(&dave.get("/account/security").await).starts_with("/login"));
    assert_eq!(api_get(&app, &key, "/api/v1/projects").await, 401);
    // Signing in leads to the cancel page, and nowhere else.
    let res = sign_in(&app, &mut dave, "dave@grace.test", PASSWORD).await;
    assert_eq!(location(&res), "/account/deletion");
    for path in ["/app", "/account/security", &format!("/o/{slug}"), "/login/two-factor", "/orgs/new"] {
        let res = dave.get(path).await;
        assert_eq!(location(&res), "/account/deletion", "{path}");
    }
    let (status, html) = dave.page("/account/deletion").await;
    assert_eq!(status, 200);
    assert!(html.contains("Cancel the deletion"), "{html}");
    assert_eq!(api_get(&app, &key, "/api/v1/projects").await, 401);
    // Without the form's token the cancel is refused.
    let res = dave.post_with("/account/deletion/cancel", &[], None, true).await;
    assert_eq!(res.status(), 403);
    let res = dave.post_with("/account/deletion/cancel", &[], Some("forged-token"), true).await;
    assert_eq!(res.status(), 403);
    assert_eq!(standing(&app, &dave_id).await.1, 1);
    // Once the worker has started purging, the deletion can't be cancelled any more (else a
    // cancel could leave an account that lost its memberships half-way).
    let token = dave.token();
    let mut db = app.db.admin_conn().await;
    let dave_uuid: uuid::Uuid = dave_id.parse().unwrap();
    let mark = |started: bool| {
        sqlx::query(
            "UPDATE account_deletion_requests SET purge_started_at = CASE WHEN $2 THEN now() END WHERE user_id = $1",
        )
        .bind(dave_uuid)
        .bind(started)
    };
    mark(true).execute(&mut db).await.unwrap();
    let res = dave.post_with("/account/deletion/cancel", &[], Some(&token), true).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("already under way"));
    assert_eq!(standing(&app, &dave_id).await.1, 1);
    mark(false).execute(&mut db).await.unwrap();
    drop(db);
    // Cancelled: a normal session, the key works again, and the organization's log says so.
    let res = dave.post_with("/account/deletion/cancel", &[], Some(&token), true).await;
    assert_eq!(location(&res), "/account/security?done=deletion-cancelled");
    assert_eq!(dave.page("/account/security").await.0, 200);
    assert_eq!(dave.page(&format!("/o/{slug}")).await.0, 200);
    assert_eq!(api_get(&app, &key, "/api/v1/projects").await, 200);
    assert_eq!(standing(&app, &dave_id).await.0, "active");
    let mut db = app.db.admin_conn().await;
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE organization_id = $1 AND action LIKE 'member.account_deletion%' ORDER BY seq",
    )
    .bind(org)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(actions, ["member.account_deletion_requested", "member.account_deletion_cancelled"]);
    critical_mail(&app, "dave@grace.test", "The deletion of your account was cancelled").await;
    // Nothing is purged after the grace period of a cancelled request.
    let pass = purge_after_grace(&app).await;
    assert!(pass.purged.is_empty() && pass.postponed.is_empty());
}

#[tokio::test]
async fn forms_need_their_token_and_nobody_acts_for_someone_else() {
    let app = TestApp::spawn().await;
    let mut erin = sign_up(&app, "erin@csrf.test").await;
    let mut frank = sign_up(&app, "frank@csrf.test").await;
    let erin_id = user_id(&app, "erin@csrf.test").await;
    let frank_id = user_id(&app, "frank@csrf.test").await;
    let fields = [("confirm_email", "erin@csrf.test"), ("current_password", PASSWORD), ("code", "")];
    erin.page("/account/security").await;
    assert_eq!(erin.post_with("/account/delete", &fields, None, true).await.status(), 403);
    assert_eq!(erin.post_with("/account/delete", &fields, Some("forged"), true).await.status(), 403);
    // Erin's token in Frank's browser is not Frank's.
    let erin_token = erin.token();
    assert_eq!(frank.post_with("/account/delete", &fields, Some(&erin_token), true).await.status(), 403);
    // Frank, with his own token, asking with Erin's address and password: about his account only.
    let res = ask_to_delete(&mut frank, &fields).await;
    assert_eq!(res.status(), 422);
    assert_eq!(standing(&app, &erin_id).await.1, 0);
    assert_eq!(standing(&app, &frank_id).await.1, 0);
    // No session: to the sign-in page.
    let anon = app.browser();
    let res = anon.post_with("/account/delete", &fields, None, true).await;
    assert!(res.status() == 403 || location(&res).starts_with("/login"), "{}", res.status());

    // Erin asks; Frank can't cancel it (his session is not hers, and not a departing one).
    let res = ask_to_delete(&mut erin, &fields).await;
    assert_eq!(res.status(), 200);
    frank.page("/account/security").await;
    let token = frank.token();
    let res = frank.post_with("/account/deletion/cancel", &[], Some(&token), true).await;
    assert_ne!(res.status(), 200);
    assert_eq!(location(&res), "/app");
    assert_eq!(standing(&app, &erin_id).await.1, 1);
    assert_eq!(standing(&app, &frank_id).await.0, "active");
    let res = anon.post_with("/account/deletion/cancel", &[], None, true).await;
    assert!(res.status() == 403 || location(&res).starts_with("/login"));
    assert_eq!(standing(&app, &erin_id).await.1, 1);
}

async fn api_key_for(app: &TestApp, org: uuid::Uuid, user: &str) -> String {
    let id: OrgId = org.to_string().parse().unwrap();
    let principal = clientflow::access::operator(&app.app_db, &operator(), id, "test").await.unwrap().unwrap();
    let input = NewKey { name: "mine".into(), role: "manager".into(), permissions: None, expires_in_days: None };
    keys::create_for(&app.app_db, &ctx(app), &principal, user.parse().unwrap(), &input).await.unwrap().secret
}

async fn api_get(app: &TestApp, key: &str, path: &str) -> u16 {
    app.client.get(app.url(path)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

/// Every table of `conn`'s database and how many of its rows mention `needle` anywhere (the
/// row as text), but the audit log's events (kept as written: docs/security/deletion.md).
async fn mentions(conn: &mut PgConnection, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(tables.len() > 40, "{tables:?}");
    let mut found = Vec::new();
    for t in tables {
        if t == "audit_events" {
            continue;
        }
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM public.\"{t}\" x WHERE strpos(lower(x::text), lower($1)) > 0"
        ))
        .bind(needle)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if n > 0 {
            found.push((t, n));
        }
    }
    found
}

#[tokio::test]
async fn after_the_grace_period_nothing_personal_is_left_in_either_region() {
    let app = TestApp::builder().region("eu").spawn().await;
    let email = "zephyrine@purge.test";
    let mut owner = sign_up(&app, "owner@purge.test").await;
    let us = create_org(&mut owner, "Purge US").await;
    let res = owner.submit("/orgs/new", "/orgs", &[("name", "Purge EU"), ("region", "eu")]).await;
    assert_eq!(res.status(), 303);
    let eu = location(&res).trim_start_matches("/o/").to_string();
    let mut zeph = sign_up_named(&app, email, NAME).await;
    let zeph_id = user_id(&app, email).await;
    let _ = invite_and_join(&app, &mut owner, &us, email, "admin", None).await;
    let _ = invite_and_join(&app, &mut owner, &eu, email, "admin", None).await;
    let mut zeph_again = app.browser();
    sign_in(&app, &mut zeph_again, email, PASSWORD).await;

    // She writes a comment and logs time in the US organization, and has an API key there.
    let us_org = crate::support::org_id(&app, &us).await;
    let principal = clientflow::access::operator(&app.app_db, &operator(), us_org.to_string().parse().unwrap(), "test")
        .await
        .unwrap()
        .unwrap();
    let project = projects::create(
        &app.app_db,
        &ctx(&app),
        &principal,
        &projects::ProjectInput { name: "Launch".into(), ..Default::default() },
    )
    .await
    .unwrap();
    let task = tasks::create(
        &app.app_db,
        &ctx(&app),
        &principal,
        &tasks::TaskInput { project_id: project.id.to_string(), title: "Ship it".into(), ..Default::default() },
    )
    .await
    .unwrap();
    zeph.page(&format!("/o/{us}/tasks/{}", task.id)).await;
    let token = zeph.token();
    let res = zeph
        .post_with(&format!("/o/{us}/tasks/{}/comments", task.id), &[("body", "Looks good to me")], Some(&token), true)
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let her_key = api_key_for(&app, us_org, &zeph_id).await;
    let owner_key = crate::support::api_key(&app, us_org, "owner's").await;
    let old_cookie_browser = zeph_again;

    let res = ask_to_delete(&mut zeph, &[("confirm_email", email), ("current_password", PASSWORD), ("code", "")]).await;
    assert_eq!(res.status(), 200);
    app.deliver_mail().await;
    let pass = purge_after_grace(&app).await;
    assert_eq!(pass.purged, vec![zeph_id.parse::<UserId>().unwrap()]);

    // The users row, in both regions: a tombstone.
    for region in ["us", "eu"] {
        let mut db = app.region_db(region).admin_conn().await;
        let row: (String, String) = sqlx::query_as("SELECT u.status, row_to_json(u)::text FROM users u WHERE id = $1")
            .bind(zeph_id.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(row.0, "deleted", "{region}");
        assert!(!row.1.to_lowercase().contains("zephyrine") && !row.1.contains("Quillfeather"), "{region}: {}", row.1);
        assert!(!row.1.contains("argon2"), "{region}: {}", row.1);
        // And nowhere else: every column of every table.
        for needle in [email, NAME, "Quillfeather"] {
            assert_eq!(mentions(&mut db, needle).await, Vec::<(String, i64)>::new(), "{region}: {needle}");
        }
        let memberships: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships WHERE user_id = $1")
            .bind(zeph_id.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(memberships, 0, "{region}");
    }
    let mut db = app.db.admin_conn().await;
    for table in ["sessions", "known_devices", "recovery_codes", "email_tokens", "oidc_identities", "security_events"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE user_id = $1"))
            .bind(zeph_id.parse::<uuid::Uuid>().unwrap())
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE created_by = $1")
        .bind(zeph_id.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(keys, 0);
    // The audit log says she went, by id only.
    let purge_event: (String, String) = sqlx::query_as(
        "SELECT actor_label, target_id FROM audit_events WHERE organization_id = $1 AND action = 'member.account_deleted'",
    )
    .bind(us_org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(purge_event, ("account deletion".to_string(), zeph_id.clone()));

    // Her sessions and key are dead.
    let mut old = old_cookie_browser;
    assert!(location(&old.get("/account/security").await).starts_with("/login"));
    assert_eq!(api_get(&app, &her_key, "/api/v1/projects").await, 401);
    // Her comment stays, by "Deleted user", on the page and in the API (a month later: the
    // owner signs in again).
    sign_in(&app, &mut owner, "owner@purge.test", PASSWORD).await;
    let (status, html) = owner.page(&format!("/o/{us}/tasks/{}", task.id)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Looks good to me") && html.contains("Deleted user"), "{html}");
    assert!(!html.contains("zephyrine"), "{html}");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/tasks/{}/comments", task.id)))
        .bearer_auth(&owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("Looks good to me") && body.contains("Deleted user"), "{body}");
    assert!(!body.contains("zephyrine"), "{body}");

    // The audit log keeps her events; the viewer names their actor "Deleted user".
    let (status, html) = owner.page(&format!("/o/{us}/audit?actor={zeph_id}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("member.account_deletion_requested") && html.contains("Deleted user"), "{html}");
    assert!(!html.contains(email), "{html}");

    // The address is free: a new account, a new person.
    let _ = sign_up(&app, email).await;
    let new_id = user_id(&app, email).await;
    assert_ne!(new_id, zeph_id);
}
