//! Billing with Stripe against a local server speaking Stripe's wire format: checkout and
//! portal sessions, signed webhooks attacked (forged, stale, future, tampered, replayed),
//! exactly-once and out-of-order delivery, dunning and read-only, a Stripe outage, who may
//! reach billing, and plan limits refused alike on the web and through the API.

use clientflow::platform::secret::Secret;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use clientflow_test_support::stripe::{FakeStripe, signature_header};
use serde_json::{Value, json};

use crate::support::accounts::sign_up;
use crate::support::orgs::{create_org, org_with_every_role};

const SK: &str = "sk_test_clientflow";
const CURRENT: &str = "whsec_current_secret";
const PREVIOUS: &str = "whsec_previous_secret";

/// An app with billing on against `fake`: Free allows 1 project, 2 seats, 1 MiB and 1 API key.
async fn billed_app(fake: &FakeStripe) -> TestApp {
    billed_app_with_seats(fake, 2).await
}

async fn billed_app_with_seats(fake: &FakeStripe, seats: i64) -> TestApp {
    let base = fake.base_url();
    TestApp::builder().config(move |c| bill(c, base, seats)).spawn().await
}

/// Billing on against the fake at `base`: Free allows 1 project, `seats` seats, 1 MiB and 1 API key.
fn bill(c: &mut clientflow::config::Config, base: String, seats: i64) {
    let b = &mut c.billing;
    b.stripe_secret_key = Some(Secret::new(SK));
    b.stripe_base_url = base;
    b.webhook_secrets = vec![Secret::new(PREVIOUS), Secret::new(CURRENT)];
    b.retry_base_ms = 1;
    b.timeout_ms = 2_000;
    b.grace_days = 7;
    for p in &mut b.plans {
        match p.id.as_str() {
            "free" => {
                (p.projects, p.seats, p.storage_mb, p.api_keys) = (Some(1), Some(seats), Some(1), Some(1));
            }
            "pro" => p.price_id = Some("price_pro".into()),
            "business" => p.price_id = Some("price_business".into()),
            _ => {}
        }
    }
}

async fn owner_org(app: &TestApp, name: &str) -> (Browser, String) {
    let mut owner = sign_up(app, &format!("owner@{name}.test")).await;
    let slug = create_org(&mut owner, name).await;
    (owner, slug)
}

fn now(app: &TestApp) -> i64 {
    app.clock.now_utc().unix_timestamp()
}

/// Delivers `event` to the webhook with the given signature header (or none).
async fn deliver_raw(app: &TestApp, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut req =
        app.client.post(app.url("/webhooks/stripe")).header("content-type", "application/json").body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Delivers `event` signed now with the current secret, as Stripe does.
async fn deliver(app: &TestApp, event: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let sig = signature_header(&[CURRENT], now(app), &body);
    deliver_raw(app, &body, Some(&sig)).await
}

/// (plan, status, past_due_since set) of the organization, read as the superuser.
async fn account(app: &TestApp, slug: &str) -> Option<(String, String, bool)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT b.plan, b.status, b.past_due_since IS NOT NULL FROM billing_accounts b \
         JOIN organizations o ON o.id = b.organization_id WHERE o.slug = $1",
    )
    .bind(slug)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

/// The Owner upgrades to `plan` through Checkout: answers the Checkout Session's id.
async fn start_checkout(owner: &mut Browser, slug: &str, plan: &str) -> String {
    let page = format!("/o/{slug}/settings/billing");
    let res = owner.submit(&page, &format!("{page}/checkout"), &[("plan", plan)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let to = location(&res);
    assert!(to.starts_with("https://checkout.stripe.test/c/pay/cs_"), "{to}");
    to.rsplit('/').next().unwrap().to_string()
}

/// An organization subscribed to Pro (active), through checkout and its webhook.
async fn subscribed(app: &TestApp, fake: &FakeStripe, name: &str) -> (Browser, String, String) {
    let (mut owner, slug) = owner_org(app, name).await;
    let session = start_checkout(&mut owner, &slug, "pro").await;
    let event = fake.complete_checkout(&session, "active", now(app) - 5);
    let sub = event["data"]["object"]["subscription"].as_str().unwrap().to_string();
    assert_eq!(deliver(app, &event).await, (200, json!({"status": "processed"})));
    assert_eq!(account(app, &slug).await, Some(("pro".into(), "active".into(), false)));
    (owner, slug, sub)
}

#[tokio::test]
async fn billing_off_is_unlimited_and_the_page_says_so() {
    let app = TestApp::spawn().await;
    let (mut owner, slug) = owner_org(&app, "selfhosted").await;
    let (status, html) = owner.page(&format!("/o/{slug}/settings")).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("href=\"/o/{slug}/settings/billing\"")), "the settings tabs link billing");
    let (status, html) = owner.page(&format!("/o/{slug}/settings/billing")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Billing is off on this installation"), "{html}");
    assert!(html.contains("id=\"deletion\""), "the place of the deletion request is marked");
    // No limit: more projects than any plan's free allowance.
    for i in 0..4 {
        let res = owner
            .submit(&format!("/o/{slug}/projects/new"), &format!("/o/{slug}/projects"), &[("name", &format!("P{i}"))])
            .await;
        assert_eq!(res.status(), 303);
    }
    // No webhook endpoint without Stripe.
    assert_eq!(deliver(&app, &json!({"id": "evt_1"})).await.0, 404);
}

#[tokio::test]
async fn checkout_and_portal_speak_stripe_with_idempotency_keys_and_are_audited() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug, _) = subscribed(&app, &fake, "upgrader").await;
    let page = format!("/o/{slug}/settings/billing");
    let res = owner.submit(&page, &format!("{page}/portal"), &[]).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with("https://billing.stripe.test/p/session/bps_"));
    let posts: Vec<_> = fake.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(
        posts.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/v1/customers", "/v1/checkout/sessions", "/v1/billing_portal/sessions"]
    );
    assert!(posts.iter().all(|r| r.idempotency_key.as_deref().is_some_and(|k| !k.is_empty())), "{posts:?}");
    let checkout = &posts[1].form;
    assert_eq!(checkout["mode"], "subscription");
    assert_eq!(checkout["line_items[0][price]"], "price_pro");
    let org = crate::support::org_id(&app, &slug).await.to_string();
    assert_eq!(checkout["client_reference_id"], org);
    // Every billing action is in the organization's audit log.
    let actions: Vec<String> = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT action FROM audit_events WHERE action LIKE 'billing.%' ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap()
    };
    assert_eq!(
        actions,
        [
            "billing.customer_created",
            "billing.checkout_started",
            "billing.checkout_session_completed",
            "billing.portal_opened"
        ]
    );
    let (status, html) = owner.page(&page).await;
    assert_eq!(status, 200);
    assert!(html.contains("Pro") && html.contains("Active"), "{html}");
}

#[tokio::test]
async fn forged_stale_future_tampered_and_replayed_webhooks_have_no_effect() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (_owner, slug, sub) = subscribed(&app, &fake, "attacked").await;
    let events_before = count(&app, "SELECT count(*) FROM stripe_events").await;
    let audit_before = count(&app, "SELECT count(*) FROM audit_events").await;
    let cancel = fake.update_subscription(&sub, "deleted", "canceled", None, now(&app));
    let body = serde_json::to_vec(&cancel).unwrap();
    let t = now(&app);
    let attacks: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("no signature", body.clone(), None),
        ("forged with another secret", body.clone(), Some(signature_header(&["whsec_attacker"], t, &body))),
        ("stale", body.clone(), Some(signature_header(&[CURRENT], t - 301, &body))),
        ("future", body.clone(), Some(signature_header(&[CURRENT], t + 301, &body))),
        ("tampered body", body.replace_status(), Some(signature_header(&[CURRENT], t, &body))),
        (
            "timestamp changed",
            body.clone(),
            Some(signature_header(&[CURRENT], t, &body).replacen(&format!("t={t}"), &format!("t={}", t - 1), 1)),
        ),
        ("signature not hex", body.clone(), Some(format!("t={t},v1=zz"))),
    ];
    for (what, b, sig) in attacks {
        let (status, _) = deliver_raw(&app, &b, sig.as_deref()).await;
        assert_eq!(status, 401, "{what}");
    }
    assert_eq!(account(&app, &slug).await, Some(("pro".into(), "active".into(), false)), "nothing changed");
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events").await, events_before);
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events").await, audit_before);
    // During a secret roll, the previous secret still signs (Stripe sends a v1 per secret).
    let both = signature_header(&["whsec_unrelated", PREVIOUS], t, &body);
    assert_eq!(deliver_raw(&app, &body, Some(&both)).await, (200, json!({"status": "processed"})));
    assert_eq!(account(&app, &slug).await, Some(("free".into(), "canceled".into(), false)));
    // Replayed within the tolerance: acknowledged, nothing more happens.
    let audit = count(&app, "SELECT count(*) FROM audit_events").await;
    assert_eq!(deliver_raw(&app, &body, Some(&both)).await, (200, json!({"status": "duplicate"})));
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events").await, audit);
}

trait ReplaceStatus {
    fn replace_status(&self) -> Vec<u8>;
}

impl ReplaceStatus for Vec<u8> {
    /// The body with its status changed after signing.
    fn replace_status(&self) -> Vec<u8> {
        String::from_utf8(self.clone()).unwrap().replace("\"canceled\"", "\"active\"").into_bytes()
    }
}

#[tokio::test]
async fn the_same_payment_failure_twice_changes_state_and_mails_once() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (_owner, slug, sub) = subscribed(&app, &fake, "dunned").await;
    let failed = fake.invoice(&sub, false, 2900, now(&app));
    assert_eq!(deliver(&app, &failed).await.1, json!({"status": "processed"}));
    assert_eq!(deliver(&app, &failed).await.1, json!({"status": "duplicate"}));
    assert_eq!(account(&app, &slug).await, Some(("pro".into(), "past_due".into(), true)));
    let mails =
        count(&app, "SELECT count(*) FROM outbox WHERE category = 'critical' AND subject LIKE 'Payment failed for%'")
            .await;
    assert_eq!(mails, 1, "one critical mail for the one Owner");
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_events WHERE action = 'billing.invoice_payment_failed'").await,
        1
    );
    // Paid: active again, the overdue mark cleared.
    let paid = fake.invoice(&sub, true, 2900, now(&app) + 1);
    assert_eq!(deliver(&app, &paid).await.1, json!({"status": "processed"}));
    assert_eq!(account(&app, &slug).await, Some(("pro".into(), "active".into(), false)));
}

/// The billing account's status in a region's database.
async fn status_in(app: &TestApp, region: &str, slug: &str) -> Option<String> {
    let mut db = app.region_db(region).admin_conn().await;
    sqlx::query_scalar(
        "SELECT b.status FROM billing_accounts b JOIN organizations o ON o.id = b.organization_id WHERE o.slug = $1",
    )
    .bind(slug)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_event_for_an_organization_on_the_move_waits_and_lands_in_its_new_region() {
    // From a move's copy step to its purge, both regions hold the organization's billing
    // account. Applied during the move, an event would stay in the region the organization
    // leaves: it is refused (503), so Stripe delivers it again, and once the directory has
    // switched it is applied in the new region, not in the copy the purge deletes.
    use clientflow::cli::moving::{self, Step};
    let fake = FakeStripe::start(SK).await;
    let base = fake.base_url();
    let app = TestApp::builder().region("eu").config(move |c| bill(c, base, 2)).spawn().await;
    let (_owner, slug, sub) = subscribed(&app, &fake, "relocating").await;
    let org: clientflow::platform::ids::OrgId = {
        let mut db = app.db.admin_conn().await;
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
            .bind(&slug)
            .fetch_one(&mut db)
            .await
            .unwrap();
        id.to_string().parse().unwrap()
    };
    let eu = clientflow::platform::db::RegionId::parse("eu").unwrap();
    let m = crate::support::mover(&app);
    moving::move_organization(&m, org, eu, app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    let failed = fake.invoice(&sub, false, 2900, now(&app));
    let (status, body) = deliver(&app, &failed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(status_in(&app, "us", &slug).await.as_deref(), Some("active"), "not applied where it is leaving");
    moving::move_organization(&m, org, eu, app.clock.now_utc(), Some(Step::Switched)).await.unwrap_err();
    // Stripe delivers it again.
    assert_eq!(deliver(&app, &failed).await, (200, json!({"status": "processed"})));
    assert_eq!(status_in(&app, "eu", &slug).await.as_deref(), Some("past_due"));
    assert_eq!(status_in(&app, "us", &slug).await.as_deref(), Some("active"), "not in the copy left behind");
    moving::move_organization(&m, org, eu, app.clock.now_utc(), None).await.unwrap();
    assert_eq!(status_in(&app, "eu", &slug).await.as_deref(), Some("past_due"));
}

#[tokio::test]
async fn subscription_updated_before_checkout_completed_ends_right() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug) = owner_org(&app, "ooo").await;
    let session = start_checkout(&mut owner, &slug, "pro").await;
    let t = now(&app);
    let completed = fake.complete_checkout(&session, "active", t - 30);
    let sub = completed["data"]["object"]["subscription"].as_str().unwrap().to_string();
    let created = fake.event("customer.subscription.created", t - 29, {
        let mut s = fake.update_subscription(&sub, "updated", "active", None, t - 29)["data"]["object"].clone();
        s["items"]["data"][0]["price"]["id"] = json!("price_pro");
        s
    });
    let upgraded = fake.update_subscription(&sub, "updated", "active", Some("price_business"), t - 10);
    // The newest first, then the older ones: the newest stays in force.
    assert_eq!(deliver(&app, &upgraded).await.1, json!({"status": "processed"}));
    assert_eq!(deliver(&app, &completed).await.1, json!({"status": "processed"}));
    assert_eq!(deliver(&app, &created).await.1, json!({"status": "processed"}));
    assert_eq!(account(&app, &slug).await, Some(("business".into(), "active".into(), false)));
    // The checkout's own answer did not need Stripe: no subscription was re-read.
    assert!(fake.requests().iter().all(|r| !r.path.starts_with("/v1/subscriptions")));
}

#[tokio::test]
async fn a_checkout_completed_alone_reads_the_subscription_and_waits_for_stripe_when_it_is_down() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug) = owner_org(&app, "reread").await;
    let session = start_checkout(&mut owner, &slug, "business").await;
    let completed = fake.complete_checkout(&session, "trialing", now(&app) - 1);
    fake.set_failing(true);
    // Stripe can't say what the subscription is: not applied, so Stripe delivers again.
    assert_eq!(deliver(&app, &completed).await.0, 503);
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events").await, 0);
    fake.set_failing(false);
    assert_eq!(deliver(&app, &completed).await.1, json!({"status": "processed"}));
    assert_eq!(account(&app, &slug).await, Some(("business".into(), "trialing".into(), false)));
}

#[tokio::test]
async fn stripe_down_leaves_other_pages_working_and_billing_pages_say_so() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug, sub) = subscribed(&app, &fake, "outage").await;
    let _ = fake.invoice(&sub, true, 2900, now(&app));
    let page = format!("/o/{slug}/settings/billing");
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("invoice.stripe.test"), "invoices listed while Stripe is up");
    assert!(html.contains("<td>29.00 EUR</td><td>Paid</td>"), "Stripe's status in words: {html}");
    for failure in ["500", "down"] {
        if failure == "500" {
            fake.set_failing(true);
        } else {
            fake.stop();
        }
        for other in [format!("/o/{slug}"), format!("/o/{slug}/projects"), format!("/o/{slug}/settings")] {
            assert_eq!(owner.page(&other).await.0, 200, "{other} with Stripe {failure}");
        }
        let res = owner
            .submit(&format!("/o/{slug}/projects/new"), &format!("/o/{slug}/projects"), &[("name", "Still works")])
            .await;
        assert_eq!(res.status(), 303, "creating a project with Stripe {failure}");
        let (status, html) = owner.page(&page).await;
        assert_eq!(status, 200);
        assert!(html.contains("be reached right now, so invoices and plan changes are unavailable"), "{html}");
        let res = owner.submit(&page, &format!("{page}/portal"), &[]).await;
        assert_eq!(res.status(), 503, "with Stripe {failure}");
        let html = res.text().await.unwrap();
        assert!(html.contains("nothing was changed"), "{html}");
        // Plan, status and usage still shown from our own records.
        assert!(html.contains("Pro"));
        // Cheap: the project was counted once more per round, nothing else changed.
        let _ = &sub;
    }
}

#[tokio::test]
async fn only_owners_reach_billing_on_the_web_and_no_api_key_does() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app_with_seats(&fake, 10).await;
    let mut org = org_with_every_role(&app, "roles").await;
    let page = format!("/o/{}/settings/billing", org.slug);
    for role in ["admin", "manager", "member", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        let (status, _) = b.page(&page).await;
        assert!(status == 403 || status == 404, "{role}: {status}");
        let (_, html) = b.page(&format!("/o/{}", org.slug)).await;
        let res = b
            .post_with(
                &format!("{page}/checkout"),
                &[("plan", "pro")],
                Some(&clientflow_test_support::browser::csrf_token(&html).unwrap_or_default()),
                true,
            )
            .await;
        assert!(matches!(res.status().as_u16(), 403 | 404), "{role} checkout: {}", res.status());
    }
    assert!(fake.requests().is_empty(), "nobody but an Owner reached Stripe");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(owner.page(&page).await.0, 200);
    // The API: even a key made by the Owner's organization with the highest role can't.
    let org_id = crate::support::org_id(&app, &org.slug).await;
    let key = crate::support::api_key(&app, org_id, "highest").await;
    let res = app.client.get(app.url("/api/v1/billing")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn plan_limits_are_refused_alike_on_the_web_and_the_api() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug) = owner_org(&app, "limited").await;
    let new = format!("/o/{slug}/projects/new");
    let create = format!("/o/{slug}/projects");
    assert_eq!(owner.submit(&new, &create, &[("name", "First")]).await.status(), 303);
    // The web: the second project is refused, naming the limit and where to upgrade.
    let res = owner.submit(&new, &create, &[("name", "Second")]).await;
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Free plan allows 1 project and this organization uses 1.")
            && html.contains(&format!("/o/{slug}/settings/billing")),
        "{html}"
    );
    // The API: the same refusal as problem+json naming the limit.
    let org_id = crate::support::org_id(&app, &slug).await;
    let key = crate::support::api_key(&app, org_id, "limits").await;
    let res = app
        .client
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({"name": "Via API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "https://clientflow.dev/problems/plan-limit");
    assert_eq!(problem["limit"], "projects");
    assert_eq!(problem["upgrade_url"], format!("/o/{slug}/settings/billing"));
    assert!(problem["detail"].as_str().unwrap().contains("Free plan allows 1 project and"), "{problem}");
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 1, "nothing was written");
    let mut db = app.db.admin_conn().await;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects").fetch_one(&mut db).await.unwrap();
    // A copy is a project like any other, on the web and through the API.
    let copy = format!("/o/{slug}/projects/{project}/copy");
    let res = owner.submit(&copy, &copy, &[("name", "Copy"), ("client_id", ""), ("start_date", "")]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("allows 1 project and"));
    let res =
        crate::support::api::post(&app, &format!("/api/v1/projects/{project}/copy"), &key, json!({"name": "Copy"}))
            .await;
    res.assert_problem(403);
    assert_eq!(res.body["limit"], "projects");
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 1, "nothing was written");
    assert_eq!(count(&app, "SELECT count(*) FROM board_columns").await, 3, "nothing was written");
    // Storage: the Free plan's 1 MB, refused alike through the API and the project's page.
    let big = vec![b'a'; 1_200_000];
    let res =
        crate::support::api::upload(&app, &key, &[("project_id", &project.to_string())], Some(("big.txt", &big))).await;
    res.assert_problem(403);
    assert_eq!(res.body["limit"], "storage", "{:?}", res.body);
    let page = format!("/o/{slug}/projects/{project}/files");
    let (_, html) = owner.page(&page).await;
    let token = clientflow_test_support::browser::csrf_token(&html).unwrap_or_else(|| owner.token());
    let mut body = format!(
        "--cf-limit\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n\
         --cf-limit\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\r\n--cf-limit--\r\n");
    let res = owner
        .client
        .post(owner.url(&format!("/o/{slug}/projects/{project}/files")))
        .header("content-type", "multipart/form-data; boundary=cf-limit")
        .header("origin", owner.base_url.clone())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(html.contains("Free plan allows 1.0 MiB of file storage and"), "{html}");
    assert_eq!(count(&app, "SELECT count(*) FROM files").await, 0, "nothing was stored");
    // Seats: the Owner and one invitation fill the Free plan's two.
    let members = format!("/o/{slug}/members");
    let invite = format!("/o/{slug}/invitations");
    let ok =
        owner.submit(&members, &invite, &[("email", "one@limited.test"), ("role", "member"), ("client_id", "")]).await;
    assert_eq!(ok.status(), 303);
    let res =
        owner.submit(&members, &invite, &[("email", "two@limited.test"), ("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("seats"));
    // API keys: the one made above is the Free plan's one.
    let keys = format!("/o/{slug}/settings/api-keys");
    let res = owner
        .submit(
            &keys,
            &keys,
            &[
                ("name", "second"),
                ("mode", "role"),
                ("role", "member"),
                ("expires_in_days", ""),
                ("current_password", crate::support::accounts::PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("Free plan allows 1 API key and"));
    // Upgrading lifts the limit at once.
    let session = start_checkout(&mut owner, &slug, "pro").await;
    let event = fake.complete_checkout(&session, "active", now(&app));
    assert_eq!(deliver(&app, &event).await.0, 200);
    assert_eq!(owner.submit(&new, &create, &[("name", "Second")]).await.status(), 303);
}

#[tokio::test]
async fn overdue_past_the_grace_period_is_read_only_and_nothing_is_deleted() {
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (mut owner, slug, sub) = subscribed(&app, &fake, "overdue").await;
    let create = format!("/o/{slug}/projects");
    let new = format!("/o/{slug}/projects/new");
    assert_eq!(owner.submit(&new, &create, &[("name", "Kept")]).await.status(), 303);
    let failed = fake.invoice(&sub, false, 2900, now(&app));
    assert_eq!(deliver(&app, &failed).await.0, 200);
    // Within the grace period (six of seven days gone): still working. The payment is made to
    // have failed earlier rather than the clock moved, which would end the Owner's session.
    let back =
        |days: i64| format!("UPDATE billing_accounts SET past_due_since = past_due_since - interval '{days} days'");
    let mut db = app.db.admin_conn().await;
    sqlx::query(&back(6)).execute(&mut db).await.unwrap();
    assert_eq!(owner.submit(&new, &create, &[("name", "During grace")]).await.status(), 303);
    sqlx::query(&back(2)).execute(&mut db).await.unwrap();
    let res = owner.submit(&new, &create, &[("name", "After grace")]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("read-only"));
    let (status, html) = owner.page(&create).await;
    assert_eq!(status, 200, "reading still works");
    assert!(html.contains("Kept") && html.contains("During grace"), "nothing was deleted");
    let (status, html) = owner.page(&format!("/o/{slug}/settings/billing")).await;
    assert_eq!(status, 200);
    assert!(html.contains("read-only"));
    // Paid (a new event, signed at the app's current time): writable again.
    let paid = fake.invoice(&sub, true, 2900, now(&app));
    assert_eq!(deliver(&app, &paid).await.0, 200);
    assert_eq!(owner.submit(&new, &create, &[("name", "After paying")]).await.status(), 303);
}

/// A deleted organization stops paying: its subscription is cancelled in Stripe (`DELETE
/// /v1/subscriptions/{id}`) before its rows are purged, and while Stripe can't be reached the
/// purge waits rather than leave a subscription charging for an organization that is gone.
#[tokio::test]
async fn a_deleted_organizations_subscription_is_cancelled_before_its_purge() {
    use clientflow::privacy::deletion;
    let fake = FakeStripe::start(SK).await;
    let app = billed_app(&fake).await;
    let (_owner, slug, sub) = subscribed(&app, &fake, "leaving").await;
    let (_other_owner, other, other_sub) = subscribed(&app, &fake, "staying").await;
    let org = crate::support::org_id(&app, &slug).await;
    let mut db = app.db.admin_conn().await;
    let t = app.clock.now_utc();
    sqlx::query(
        "INSERT INTO organization_deletion_requests (organization_id, requested_by, requested_at, purge_after) \
         SELECT $1, user_id, $2, $2 FROM memberships WHERE organization_id = $1 AND role = 'owner' LIMIT 1",
    )
    .bind(org)
    .bind(t - time::Duration::days(31))
    .execute(&mut db)
    .await
    .unwrap();
    let purge = async || {
        let mut owner = app.db.owner_conn().await;
        let key = clientflow::privacy::record_key(&app.state.sealer);
        deletion::purge_due(&mut owner, &app.state.keys, &app.state.storage, &key, t, app.state.stripe.as_deref())
            .await
            .unwrap()
    };
    let cancels =
        || fake.requests().into_iter().filter(|r| r.method == "DELETE").map(|r| (r.path, r.status)).collect::<Vec<_>>();
    // Stripe down: nothing is purged yet, and the request stays due.
    fake.set_failing(true);
    assert!(purge().await.is_empty());
    let sql = format!("SELECT count(*) FROM organizations WHERE id = '{org}'");
    assert_eq!(count(&app, &sql).await, 1, "purged while its subscription could not be cancelled");
    // Stripe back: cancelled first, then purged; the other organization's subscription is untouched.
    fake.set_failing(false);
    let purged = purge().await;
    assert_eq!(purged.len(), 1);
    assert_eq!(count(&app, &sql).await, 0);
    let done = cancels();
    assert_eq!(done.last(), Some(&(format!("/v1/subscriptions/{sub}"), 200)), "{done:?}");
    assert!(!done.iter().any(|(p, _)| p.ends_with(&other_sub)), "{done:?}");
    assert_eq!(account(&app, &other).await, Some(("pro".into(), "active".into(), false)));
    // Nothing is due any more: no second cancellation.
    assert!(purge().await.is_empty());
    assert_eq!(cancels().iter().filter(|(_, s)| *s == 200).count(), 1);
}
