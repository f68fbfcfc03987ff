//! The public contact form: off until enabled with an address, stored in the organization's
//! tenant table, announced through the outbox, bot-checked and rate limited per address, and
//! reached by visitors only through the narrow contact-form capability.

use clientflow::abuse::limits::{LimitConfig, PolicyId};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{location, pow_fields};

use crate::support::accounts::sign_up;
use crate::support::orgs::{create_org, session_token};

/// Signs up an Owner, creates the organization and publishes its contact form; returns the slug.
pub async fn organization_with_a_contact_form(app: &TestApp, name: &str, inbox: &str) -> String {
    let mut owner = sign_up(app, &format!("owner@{}.test", name.to_lowercase())).await;
    let slug = create_org(&mut owner, name).await;
    let token = session_token(&mut owner).await;
    let res = owner
        .post_with(
            &format!("/o/{slug}/settings/contact"),
            &[("contact_form_enabled", "on"), ("contact_email", inbox)],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    slug
}

async fn submissions(app: &TestApp) -> Vec<(String, String, String)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as("SELECT name, email, message FROM contact_submissions ORDER BY created_at")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_contact_form_is_off_until_an_owner_or_admin_enables_it_with_an_address() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "boss@shop.test").await;
    let slug = create_org(&mut owner, "Shop").await;
    let mut visitor = app.browser();
    assert_eq!(visitor.get(&format!("/contact/{slug}")).await.status(), 404);
    assert_eq!(visitor.get("/contact/no-such-org").await.status(), 404);
    let token = session_token(&mut owner).await;
    let path = format!("/o/{slug}/settings/contact");
    let res =
        owner.post_with(&path, &[("contact_form_enabled", "on"), ("contact_email", "")], Some(&token), true).await;
    assert_eq!(res.status(), 422, "on without an address to tell");
    let res =
        owner.post_with(&path, &[("contact_form_enabled", "on"), ("contact_email", "nope")], Some(&token), true).await;
    assert_eq!(res.status(), 422);
    let res = owner
        .post_with(&path, &[("contact_form_enabled", "on"), ("contact_email", "Hello@Shop.test")], Some(&token), true)
        .await;
    assert_eq!(res.status(), 303);
    let (status, page) = visitor.page(&format!("/contact/{slug}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Contact Shop") && page.contains("data-pow-challenge"), "{page}");
    let (_, settings) = owner.page(&format!("/o/{slug}/settings")).await;
    assert!(
        settings.contains("hello@shop.test") && settings.contains("name=\"contact_form_enabled\" value=\"on\" checked")
    );
    // The change is audited, before and after.
    let mut db = app.db.admin_conn().await;
    let (before, after): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT before, after FROM audit_events WHERE action = 'organization.contact_form_changed' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(before["contact_form_enabled"], false);
    assert_eq!(after["contact_email"], "hello@shop.test");
    // Off again: the form is gone, for reading and for writing.
    let res = owner.post_with(&path, &[("contact_email", "hello@shop.test")], Some(&token), true).await;
    assert_eq!(res.status(), 303);
    assert_eq!(visitor.get(&format!("/contact/{slug}")).await.status(), 404);
    let res = visitor.post_with(&format!("/contact/{slug}"), &[("name", "x")], Some(&visitor.token()), true).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_submission_is_stored_in_the_organization_and_mailed_to_its_address() {
    let app = TestApp::spawn().await;
    let slug = organization_with_a_contact_form(&app, "Studio", "inbox@studio.test").await;
    let mut visitor = app.browser();
    let fields = [("name", "Grace"), ("email", "grace@example.com"), ("message", "Can you build us a site?\nThanks")];
    let res = visitor.submit(&format!("/contact/{slug}"), &format!("/contact/{slug}"), &fields).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(location(&res), format!("/contact/{slug}/sent"));
    let (status, page) = visitor.page(&format!("/contact/{slug}/sent")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Studio"));
    let stored = submissions(&app).await;
    assert_eq!(stored, [("Grace".into(), "grace@example.com".into(), "Can you build us a site?\nThanks".into())]);
    let mail = app.mail_to("inbox@studio.test").await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Subject: New message through the contact form of Studio"), "{}", mail[0]);
    assert!(mail[0].contains("grace@example.com") && mail[0].contains("Can you build us a site?"), "{}", mail[0]);
    // Members who manage settings read them; others can't.
    let mut owner = app.browser();
    crate::support::accounts::sign_in(&app, &mut owner, "owner@studio.test", crate::support::accounts::PASSWORD).await;
    let (status, page) = owner.page(&format!("/o/{slug}/contact-submissions")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Grace") && page.contains("Can you build us a site?"), "{page}");
    // Invalid input is answered on the form, field by field, and stores nothing.
    let res = visitor
        .submit(
            &format!("/contact/{slug}"),
            &format!("/contact/{slug}"),
            &[("name", ""), ("email", "x"), ("message", "")],
        )
        .await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains("<strong>Name</strong>") && page.contains("<strong>Email</strong>"), "{page}");
    assert_eq!(submissions(&app).await.len(), 1);
}

#[tokio::test]
async fn contact_needs_a_valid_proof_and_is_limited_per_address() {
    let app = TestApp::builder()
        .config(|c| *c.rate_limits.get_mut(PolicyId::ContactIp) = LimitConfig::new(3, 600))
        .spawn()
        .await;
    let slug = organization_with_a_contact_form(&app, "Agency", "hi@agency.test").await;
    let path = format!("/contact/{slug}");
    let mut visitor = app.browser();
    let fields = vec![("name", "Bot"), ("email", "bot@example.com"), ("message", "Buy now")];
    // 1: no proof at all.
    let (_, page) = visitor.page(&path).await;
    let token = visitor.token();
    let res = visitor.post_with(&path, &fields, Some(&token), true).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("JavaScript"));
    // 2: a valid proof, accepted; 3: the same proof again, refused.
    let (challenge, solution) = pow_fields(&page).unwrap();
    let mut with_proof = fields.clone();
    with_proof.extend([("pow_challenge", challenge.as_str()), ("pow_solution", solution.as_str())]);
    assert_eq!(visitor.post_with(&path, &with_proof, Some(&token), true).await.status(), 303);
    assert_eq!(visitor.post_with(&path, &with_proof, Some(&token), true).await.status(), 400);
    // 4: the address has used its three submissions (refused ones count too).
    let res = visitor.submit(&path, &path, &fields).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(submissions(&app).await.len(), 1);
    // A proof solved for the contact form can't be spent on sign-up.
    app.clock.advance(time::Duration::minutes(20));
    visitor.page(&path).await;
    let (challenge, solution) = pow_fields(&visitor.last_page).unwrap();
    let res = visitor
        .post_with(
            "/signup",
            &[
                ("email", "sneaky@example.com"),
                ("password", crate::support::accounts::PASSWORD),
                ("pow_challenge", &challenge),
                ("pow_solution", &solution),
            ],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 400);
}

/// The capability behind the form, as the app role sees it: the slug of an organization with an
/// enabled form shows that one row and no tenant data; any other slug shows nothing.
#[tokio::test]
async fn the_contact_capability_shows_one_enabled_organization_and_nothing_else() {
    let app = TestApp::spawn().await;
    let open = organization_with_a_contact_form(&app, "Open", "a@open.test").await;
    let mut owner = sign_up(&app, "owner@closed.test").await;
    let closed = create_org(&mut owner, "Closed").await;
    let mut conn = app.db.app_conn().await;
    let visible = async |conn: &mut sqlx::PgConnection, slug: &str| -> (i64, i64, i64) {
        let mut tx = sqlx::Connection::begin(conn).await.unwrap();
        sqlx::query("SELECT set_config('app.contact_form_slug', $1, true)").bind(slug).execute(&mut *tx).await.unwrap();
        let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut *tx).await.unwrap();
        let members: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships").fetch_one(&mut *tx).await.unwrap();
        let subs: i64 =
            sqlx::query_scalar("SELECT count(*) FROM contact_submissions").fetch_one(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        (orgs, members, subs)
    };
    assert_eq!(visible(&mut conn, &open).await, (1, 0, 0));
    assert_eq!(visible(&mut conn, &closed).await, (0, 0, 0));
    assert_eq!(visible(&mut conn, "").await, (0, 0, 0));
    // Writing needs the tenant door: the capability alone can't insert a submission.
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('app.contact_form_slug', $1, true)").bind(&open).execute(&mut *tx).await.unwrap();
    let org: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations").fetch_one(&mut *tx).await.unwrap();
    let inserted = sqlx::query(
        "INSERT INTO contact_submissions (organization_id, id, name, email, message, created_at) \
         VALUES ($1, gen_random_uuid(), 'x', 'x@example.com', 'x', now())",
    )
    .bind(org)
    .execute(&mut *tx)
    .await;
    assert!(inserted.is_err(), "row-level security must refuse it");
}
