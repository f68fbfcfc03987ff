//! Mail that arrives and respects people: the Resend transport against a local server that
//! speaks its wire format, retries and dead messages, Resend's signed webhooks, the
//! suppression list (fed by bounces, complaints, SMTP refusals and unsubscribes, checked at
//! send time, bypassed by critical mail), one-click unsubscribe, and several workers (one of
//! them killed) delivering each message once.

use std::time::Duration;

use clientflow::mail::category::Category;
use clientflow::mail::outbox::{self, OutgoingMail};
use clientflow::platform::secret::Secret;
use clientflow_test_support::TestApp;
use clientflow_test_support::resend::{self, FakeResend, Planned, Webhook};
use clientflow_test_support::smtp::SmtpSink;
use serde_json::{Value, json};

const KEY: &str = "re_test_key_123";

async fn resend_app(fake: &FakeResend, secret: &str) -> TestApp {
    resend_app_with(fake, secret, |_| {}).await
}

async fn resend_app_with(
    fake: &FakeResend,
    secret: &str,
    more: impl FnOnce(&mut clientflow::config::Config) + 'static,
) -> TestApp {
    let (base, secret) = (fake.base_url(), secret.to_string());
    TestApp::builder()
        .config(move |c| {
            c.mail.transport = clientflow::mail::config::MailTransport::Resend;
            c.mail.resend_api_key = Some(Secret::new(KEY));
            c.mail.resend_base_url = base;
            c.mail.resend_webhook_secret = Some(Secret::new(secret));
            c.mail.from = "ClientFlow <no-reply@clientflow.test>".into();
            more(c);
        })
        .spawn()
        .await
}

async fn queue(app: &TestApp, to: &str, category: Category, key: &str) -> uuid::Uuid {
    let mut tx = app.app_db.global().await.unwrap();
    let mail = OutgoingMail {
        to: to.into(),
        subject: format!("About {key}"),
        body: format!("Hello.\n\nSee https://example.test/{key} for more."),
        category,
        org_name: Some("Acme & Co".into()),
    };
    outbox::enqueue(&mut tx, &mail, key, app.clock.now_utc()).await.unwrap();
    tx.commit().await.unwrap();
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT id FROM outbox WHERE idempotency_key = $1").bind(key).fetch_one(&mut db).await.unwrap()
}

async fn row(app: &TestApp, id: uuid::Uuid) -> (String, i32, Option<String>, f64) {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT state, attempts, last_error, extract(epoch FROM next_attempt_at - $2)::float8 FROM outbox WHERE id = $1",
    )
    .bind(id)
    .bind(app.clock.now_utc())
    .fetch_one(&mut db)
    .await
    .unwrap()
}

async fn suppressions(app: &TestApp, address: &str) -> Vec<(String, String, String)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT reason, category, source FROM mail_suppressions WHERE address = $1 ORDER BY reason, category",
    )
    .bind(address)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn resend_gets_a_bearer_key_the_outbox_id_as_idempotency_key_and_both_parts() {
    let fake = FakeResend::start(KEY).await;
    let app = resend_app(&fake, &resend::new_secret()).await;
    let note = queue(&app, "ann@example.com", Category::Transactional, "note-1").await;
    let critical = queue(&app, "ann@example.com", Category::Critical, "critical-1").await;
    assert_eq!(app.deliver_mail().await, 2);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    }
    let by_key =
        |id: uuid::Uuid| requests.iter().find(|r| r.idempotency_key == Some(id.to_string())).unwrap().body.clone();
    let body = by_key(note);
    assert_eq!(body["to"], json!(["ann@example.com"]));
    assert_eq!(body["from"], "ClientFlow <no-reply@clientflow.test>");
    let text = body["text"].as_str().unwrap();
    let html = body["html"].as_str().unwrap();
    assert!(text.contains("https://example.test/note-1"), "{text}");
    assert!(html.contains("<a href=\"https://example.test/note-1\">"), "{html}");
    assert!(
        html.contains("Acme &#38; Co") && !html.contains("Acme & Co"),
        "the organization is named, escaped: {html}"
    );
    assert!(!html.contains("<img"), "no images, so no tracking pixels: {html}");
    let unsubscribe = body["headers"]["List-Unsubscribe"].as_str().unwrap();
    assert!(unsubscribe.starts_with(&format!("<{}/u/", app.base_url)), "{unsubscribe}");
    assert_eq!(body["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    assert_eq!(body["headers"]["Message-ID"], format!("<{note}@clientflow.test>"));
    // Critical mail is never offered an unsubscribe.
    let body = by_key(critical);
    assert!(body["headers"].get("List-Unsubscribe").is_none(), "{body}");
    assert!(!body["text"].as_str().unwrap().contains("/u/"));
    // The provider's id is kept, for its events.
    let mut db = app.db.admin_conn().await;
    let provider_id: Option<String> = sqlx::query_scalar("SELECT provider_message_id FROM outbox WHERE id = $1")
        .bind(note)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(provider_id.is_some());
}

#[tokio::test]
async fn rate_limits_and_outages_are_retried_and_refusals_are_dead_at_once() {
    let fake = FakeResend::start(KEY).await;
    let app = resend_app(&fake, &resend::new_secret()).await;

    // 429 with Retry-After: not before the provider said.
    let id = queue(&app, "bob@example.com", Category::Transactional, "rl").await;
    fake.plan(&[Planned::RateLimited { retry_after_secs: 600 }]);
    assert_eq!(app.deliver_mail().await, 0);
    let (state, attempts, error, due_in) = row(&app, id).await;
    assert_eq!((state.as_str(), attempts), ("queued", 1));
    assert!(error.unwrap().contains("429"));
    assert!((600.0..=900.0).contains(&due_in), "Retry-After honoured: due in {due_in}s");
    app.clock.advance(time::Duration::seconds(590));
    assert_eq!(app.deliver_mail().await, 0, "not before Retry-After");
    app.clock.advance(time::Duration::seconds(400));
    assert_eq!(app.deliver_mail().await, 1);

    // 500: retried with backoff (30 s doubling, with jitter).
    let id = queue(&app, "carl@example.com", Category::Transactional, "5xx").await;
    fake.plan(&[Planned::ServerError]);
    assert_eq!(app.deliver_mail().await, 0);
    let (state, _, _, due_in) = row(&app, id).await;
    assert_eq!(state, "queued");
    assert!((30.0..=45.0).contains(&due_in), "first retry in 30–45 s: {due_in}");
    app.clock.advance(time::Duration::seconds(46));
    assert_eq!(app.deliver_mail().await, 1);

    // 422: permanent, dead after one attempt.
    let dead = queue(&app, "dora@example.com", Category::Transactional, "422").await;
    fake.plan(&[Planned::Invalid]);
    assert_eq!(app.deliver_mail().await, 0);
    let (state, attempts, error, _) = row(&app, dead).await;
    assert_eq!((state.as_str(), attempts), ("dead", 1));
    assert!(error.unwrap().contains("422"));
    app.clock.advance(time::Duration::hours(1));
    assert_eq!(app.deliver_mail().await, 0, "a dead message is not retried by itself");

    // Operators see it (command line and metrics) and can retry it.
    let (ok, out) = cli(&app, &["mail", "list", "--state", "dead"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(&dead.to_string()) && out.contains("dora@example.com") && out.contains("422"), "{out}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("clientflow_mail_outbox_messages{state=\"dead\"} 1"), "{metrics}");
    let (ok, out) = cli(&app, &["mail", "retry", &dead.to_string()]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&app, &["mail", "retry", &dead.to_string()]).await;
    assert!(!ok && out.contains("neither dead nor suppressed"), "{out}");
    assert_eq!(app.deliver_mail().await, 1);
    assert_eq!(row(&app, dead).await.0, "sent");
}

#[tokio::test]
async fn a_message_that_exhausts_its_attempts_is_dead() {
    let fake = FakeResend::start(KEY).await;
    let app = resend_app_with(&fake, &resend::new_secret(), |c| c.mail.max_attempts = 3).await;
    let id = queue(&app, "eve@example.com", Category::Transactional, "flaky").await;
    fake.plan(&[Planned::ServerError, Planned::ServerError, Planned::ServerError]);
    for _ in 0..3 {
        app.deliver_mail().await;
        app.clock.advance(time::Duration::hours(1));
    }
    let (state, attempts, _, _) = row(&app, id).await;
    assert_eq!((state.as_str(), attempts), ("dead", 3));
    assert_eq!(fake.requests().len(), 3);
}

// ---- webhooks ----

fn webhook_url(app: &TestApp) -> String {
    app.url("/webhooks/resend")
}

/// A bounce of a message the app really sent through the fake, so the event names it.
async fn sent_to(app: &TestApp, fake: &FakeResend, to: &str, key: &str) -> String {
    let id = queue(app, to, Category::Transactional, key).await;
    assert_eq!(app.deliver_mail().await, 1);
    let _ = fake;
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT provider_message_id FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// The example Svix publishes, through HTTP: the app's clock at the example's time.
#[tokio::test]
async fn the_published_svix_example_is_accepted() {
    let fake = FakeResend::start(KEY).await;
    let at = time::OffsetDateTime::from_unix_timestamp(1614265330).unwrap();
    let (base, secret) = (fake.base_url(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let app = TestApp::builder()
        .manual_clock(clientflow::platform::clock::ManualClock::new(at))
        .config(move |c| {
            c.mail.resend_base_url = base;
            c.mail.resend_webhook_secret = Some(Secret::new(secret));
        })
        .spawn()
        .await;
    let hook = Webhook {
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
        timestamp: 1614265330,
        signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into(),
        body: r#"{"test": 2432232314}"#.into(),
    };
    // The independent signer agrees with the published signature.
    assert_eq!(resend::sign(secret, &hook.id, hook.timestamp, &hook.body), hook.signature);
    let res = hook.post(&app.client, &webhook_url(&app)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");
    // With any other secret, refused.
    let mut other = hook.clone();
    other.id = "msg_other".into();
    other.signature = resend::sign(&resend::new_secret(), &other.id, other.timestamp, &other.body);
    assert_eq!(other.post(&app.client, &webhook_url(&app)).await.status(), 401);
}

#[tokio::test]
async fn webhooks_that_do_not_verify_are_refused_with_no_side_effect() {
    let fake = FakeResend::start(KEY).await;
    let secret = resend::new_secret();
    let app = resend_app(&fake, &secret).await;
    let email_id = sent_to(&app, &fake, "frank@example.com", "w1").await;
    let event = resend::bounced(&email_id, "frank@example.com", true);
    let now = app.clock.now_utc().unix_timestamp();
    let url = webhook_url(&app);

    let wrong_secret = Webhook::signed(&resend::new_secret(), &event, now);
    let stale = Webhook::signed(&secret, &event, now - 301);
    let future = Webhook::signed(&secret, &event, now + 301);
    let mut tampered = Webhook::signed(&secret, &event, now);
    tampered.body = tampered.body.replace("Permanent", "Transient");
    let mut wrong_version = Webhook::signed(&secret, &event, now);
    wrong_version.signature = wrong_version.signature.replacen("v1,", "v2,", 1);
    for (what, hook) in [
        ("wrong secret", wrong_secret),
        ("stale", stale),
        ("future", future),
        ("tampered", tampered),
        ("v2", wrong_version),
    ] {
        let res = hook.post(&app.client, &url).await;
        assert_eq!(res.status(), 401, "{what}");
        assert!(res.headers()["content-type"].to_str().unwrap().contains("problem+json"), "{what}");
    }
    // Missing headers, one at a time.
    let good = Webhook::signed(&secret, &event, now);
    for missing in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut req = app.client.post(&url).header("content-type", "application/json").body(good.body.clone());
        for (name, value) in [
            ("svix-id", good.id.clone()),
            ("svix-timestamp", good.timestamp.to_string()),
            ("svix-signature", good.signature.clone()),
        ] {
            if name != missing {
                req = req.header(name, value);
            }
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "without {missing}");
        assert!(res.text().await.unwrap().contains(missing), "the refusal names {missing}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM mail_provider_events").await, 0);
    assert!(suppressions(&app, "frank@example.com").await.is_empty());

    // Within tolerance (both ways), and among several signatures (a secret being rotated).
    let mut rotating = Webhook::signed(&secret, &event, now + 290);
    rotating.signature = format!("v1,{} {}", "A".repeat(44), rotating.signature);
    assert_eq!(rotating.post(&app.client, &url).await.status(), 200);
    assert_eq!(suppressions(&app, "frank@example.com").await[0].0, "hard_bounce");
}

#[tokio::test]
async fn each_event_is_processed_once_and_bounces_and_complaints_suppress() {
    let fake = FakeResend::start(KEY).await;
    let secret = resend::new_secret();
    let app = resend_app_with(&fake, &secret, |c| c.mail.soft_bounce_limit = 2).await;
    let url = webhook_url(&app);
    let now = || app.clock.now_utc().unix_timestamp();

    // Delivered and delayed update the message.
    let id = sent_to(&app, &fake, "gina@example.com", "d1").await;
    let hook = Webhook::signed(&secret, &resend::event("email.delivered", &id, "gina@example.com", json!({})), now());
    assert_eq!(hook.post(&app.client, &url).await.json::<Value>().await.unwrap()["status"], "processed");
    assert_eq!(count(&app, "SELECT count(*) FROM outbox WHERE delivery = 'delivered'").await, 1);

    // A transient bounce counts; the same event again (a replay) is acknowledged and ignored.
    let id = sent_to(&app, &fake, "hank@example.com", "s1").await;
    let soft = Webhook::signed(&secret, &resend::bounced(&id, "hank@example.com", false), now());
    assert_eq!(soft.post(&app.client, &url).await.json::<Value>().await.unwrap()["status"], "processed");
    let replay = soft.post(&app.client, &url).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["status"], "duplicate");
    assert!(suppressions(&app, "hank@example.com").await.is_empty(), "one soft bounce (the replay didn't count)");
    // A second, distinct soft bounce within the window reaches the limit (2 here).
    let id = sent_to(&app, &fake, "hank@example.com", "s2").await;
    let soft = Webhook::signed(&secret, &resend::bounced(&id, "hank@example.com", false), now());
    assert_eq!(soft.post(&app.client, &url).await.status(), 200);
    assert_eq!(suppressions(&app, "hank@example.com").await[0].0, "soft_bounce");

    // A complaint suppresses at once.
    let id = sent_to(&app, &fake, "ivy@example.com", "c1").await;
    let hook = Webhook::signed(&secret, &resend::event("email.complained", &id, "ivy@example.com", json!({})), now());
    assert_eq!(hook.post(&app.client, &url).await.status(), 200);
    let s = suppressions(&app, "ivy@example.com").await;
    assert_eq!((s[0].0.as_str(), s[0].1.as_str()), ("complaint", "*"));
    assert!(s[0].2.contains(&hook.id), "the source names the event: {}", s[0].2);

    // The log has each addition, by the provider.
    assert_eq!(
        count(&app, "SELECT count(*) FROM mail_suppression_log WHERE actor = 'provider' AND change = 'added'").await,
        2
    );
}

#[tokio::test]
async fn critical_mail_bypasses_suppression_and_other_mail_is_recorded_suppressed() {
    let fake = FakeResend::start(KEY).await;
    let secret = resend::new_secret();
    let app = resend_app(&fake, &secret).await;
    let email_id = sent_to(&app, &fake, "jack@example.com", "first").await;
    let hook = Webhook::signed(
        &secret,
        &resend::bounced(&email_id, "jack@example.com", true),
        app.clock.now_utc().unix_timestamp(),
    );
    assert_eq!(hook.post(&app.client, &webhook_url(&app)).await.status(), 200);

    // Queued before or after the bounce: the list is checked when sending. The address is
    // matched however it is written.
    let notification = queue(&app, "Jack <JACK@example.com>", Category::Transactional, "after").await;
    let reset = queue(&app, "jack@example.com", Category::Critical, "reset").await;
    let sent_before = fake.delivered().len();
    assert_eq!(app.deliver_mail().await, 1);
    assert_eq!(fake.delivered().len(), sent_before + 1);
    assert_eq!(row(&app, reset).await.0, "sent");
    let mut db = app.db.admin_conn().await;
    let (state, why): (String, Option<String>) = sqlx::query_as("SELECT state, suppression FROM outbox WHERE id = $1")
        .bind(notification)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(state, "suppressed");
    assert!(why.unwrap().starts_with("hard_bounce"));
    let (ok, out) = cli(&app, &["mail", "list", "--state", "suppressed"]).await;
    assert!(ok && out.contains(&notification.to_string()), "{out}");
}

#[tokio::test]
async fn an_smtp_550_at_send_time_is_a_hard_bounce() {
    let sink = SmtpSink::start().await;
    sink.refuse("gone@example.com");
    let url = format!("smtp://{}", sink.addr());
    let app = TestApp::builder()
        .config(move |c| {
            c.mail.transport = clientflow::mail::config::MailTransport::Smtp;
            c.mail.smtp_url = Some(Secret::new(url));
            c.mail.from = "ClientFlow <no-reply@clientflow.test>".into();
        })
        .spawn()
        .await;
    let first = queue(&app, "gone@example.com", Category::Transactional, "g1").await;
    let other = queue(&app, "here@example.com", Category::Transactional, "h1").await;
    assert_eq!(app.deliver_mail().await, 1);
    let (state, attempts, error, _) = row(&app, first).await;
    assert_eq!((state.as_str(), attempts), ("dead", 1), "a 5xx is not retried");
    assert!(error.unwrap().contains("550"));
    let s = suppressions(&app, "gone@example.com").await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, "hard_bounce");
    assert!(s[0].2.contains("550"), "{}", s[0].2);
    assert_eq!(row(&app, other).await.0, "sent");
    // The next notification is not attempted at all.
    let next = queue(&app, "gone@example.com", Category::Transactional, "g2").await;
    app.deliver_mail().await;
    assert_eq!(row(&app, next).await.0, "suppressed");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    // Multipart: a text and an HTML part, Message-ID, Date, List-Unsubscribe (RFC 8058).
    let data = &got[0].data;
    for needle in [
        "Content-Type: multipart/alternative",
        "Content-Type: text/plain",
        "Content-Type: text/html",
        &format!("Message-ID: <{other}@clientflow.test>"),
        "Date: ",
        "List-Unsubscribe: <https://localhost:",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ] {
        assert!(data.contains(needle), "{needle} in\n{data}");
    }
}

// ---- unsubscribe ----

/// The `List-Unsubscribe` URL of the newest message to `to` in the mail drop.
async fn unsubscribe_url(app: &TestApp, to: &str) -> String {
    let mails = app.mail_to(to).await;
    let raw = mails.last().expect("a message");
    let line =
        raw.lines().find(|l| l.starts_with("List-Unsubscribe:")).unwrap_or_else(|| panic!("no header in\n{raw}"));
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    line.split('<').nth(1).unwrap().split('>').next().unwrap().to_string()
}

fn cookieless(app: &TestApp) -> reqwest::Client {
    clientflow_test_support::client_for(&app.cert_path(), app.addr).build().unwrap()
}

async fn one_click(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_click_unsubscribe_works_without_cookies_and_a_get_changes_nothing() {
    let app = TestApp::spawn().await;
    queue(&app, "kim@example.com", Category::Transactional, "n1").await;
    let url = unsubscribe_url(&app, "kim@example.com").await;
    let client = cookieless(&app);

    // A link scanner's GET shows a page and changes nothing.
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Unsubscribe?") && page.contains("kim@example.com"), "{page}");
    assert!(suppressions(&app, "kim@example.com").await.is_empty());

    // The one-click POST: no cookie, no CSRF token.
    let res = one_click(&client, &url).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(
        suppressions(&app, "kim@example.com").await,
        vec![("unsubscribe".to_string(), "transactional".to_string(), "unsubscribe link".to_string())]
    );
    // Only that category: notifications stop, news and critical mail still go.
    let n2 = queue(&app, "kim@example.com", Category::Transactional, "n2").await;
    let m1 = queue(&app, "kim@example.com", Category::Marketing, "m1").await;
    let c1 = queue(&app, "kim@example.com", Category::Critical, "c1").await;
    app.deliver_mail().await;
    assert_eq!(row(&app, n2).await.0, "suppressed");
    assert_eq!(row(&app, m1).await.0, "sent");
    assert_eq!(row(&app, c1).await.0, "sent");

    // The preferences page lets the person subscribe again.
    let res = client.get(format!("{url}/preferences")).send().await.unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains("is unsubscribed from") && page.contains("/resubscribe"), "{page}");
    let res = client.post(format!("{url}/resubscribe")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert!(suppressions(&app, "kim@example.com").await.is_empty());
    let n3 = queue(&app, "kim@example.com", Category::Transactional, "n3").await;
    app.deliver_mail().await;
    assert_eq!(row(&app, n3).await.0, "sent");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM mail_suppression_log WHERE address = 'kim@example.com' AND actor = 'recipient'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn altered_and_expired_unsubscribe_tokens_are_refused() {
    let app = TestApp::spawn().await;
    queue(&app, "lou@example.com", Category::Marketing, "m").await;
    let url = unsubscribe_url(&app, "lou@example.com").await;
    let client = cookieless(&app);
    let (prefix, token) = url.rsplit_once('/').unwrap();
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let altered = format!("{prefix}/{}", String::from_utf8(bytes).unwrap());
    for target in [altered.clone(), format!("{prefix}/{}", &token[..token.len() - 4]), format!("{prefix}/not-a-token")]
    {
        assert_eq!(one_click(&client, &target).await.status(), 400, "{target}");
        assert_eq!(client.get(&target).send().await.unwrap().status(), 400, "{target}");
    }
    // Critical mail carries no token at all; a token for "critical" can't be made from outside.
    // Sixty days later (the default), the link has expired.
    app.clock.advance(time::Duration::days(60));
    let res = one_click(&client, &url).await;
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));
    assert!(suppressions(&app, "lou@example.com").await.is_empty());
    app.clock.advance(time::Duration::days(-1));
    assert_eq!(one_click(&client, &url).await.status(), 200, "a day before expiry it works");
}

#[tokio::test]
async fn unsubscribe_is_rate_limited_per_address() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limits.unsubscribe_ip = clientflow::abuse::limits::LimitConfig::new(2, 3600);
        })
        .spawn()
        .await;
    let client = cookieless(&app);
    let url = app.url("/u/whatever");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 400);
    assert_eq!(one_click(&client, &url).await.status(), 400);
    let res = one_click(&client, &url).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

// ---- people and operators ----

#[tokio::test]
async fn a_person_sees_a_bounce_and_turns_mail_on_again() {
    let app = TestApp::spawn().await;
    let mut b = crate::support::accounts::sign_up(&app, "mia@example.com").await;
    let mut tx = app.app_db.global().await.unwrap();
    clientflow::mail::suppression::add(
        &mut tx,
        "mia@example.com",
        clientflow::mail::suppression::Reason::HardBounce,
        None,
        "resend email.bounced msg_1",
        "provider",
        app.clock.now_utc(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, page) = b.page("/account/security").await;
    assert_eq!(status, 200);
    assert!(page.contains("refused by its mail server") && page.contains("Turn mail on again"), "{page}");
    let before = app.mail_to("mia@example.com").await.len();
    let res = b.submit("/account/security", "/account/email/deliverability", &[]).await;
    assert_eq!(res.status(), 303);
    assert!(suppressions(&app, "mia@example.com").await.is_empty());
    let mails = app.mail_to("mia@example.com").await;
    assert_eq!(mails.len(), before + 1);
    assert!(mails.last().unwrap().contains("Mail to your address is on again"));
    assert_eq!(
        count(&app, "SELECT count(*) FROM mail_suppression_log WHERE change = 'removed' AND actor LIKE 'user:%'").await,
        1
    );
    // Nothing left to clear.
    let (_, page) = b.page("/account/security").await;
    assert!(page.contains("is delivered normally"), "{page}");
    let res = b.submit("/account/security", "/account/email/deliverability", &[]).await;
    assert_eq!(res.status(), 409);
}

#[tokio::test]
async fn operators_manage_the_list_from_the_command_line_and_every_change_is_logged() {
    let app = TestApp::spawn().await;
    let (ok, out) = cli(&app, &["mail", "suppressions", "add", "Nia@Example.com", "--note", "asked by phone"]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&app, &["mail", "suppressions", "list"]).await;
    assert!(ok && out.contains("nia@example.com") && out.contains("manual"), "{out}");
    let (ok, out) = cli(&app, &["mail", "suppressions", "add", "nia@example.com", "--note", " "]).await;
    assert!(!ok && out.contains("--note"), "{out}");
    let (ok, out) = cli(&app, &["mail", "suppressions", "remove", "nia@example.com", "--note", "ticket 7"]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&app, &["mail", "suppressions", "remove", "nia@example.com", "--note", "again"]).await;
    assert!(!ok, "{out}");
    let (ok, out) = cli(&app, &["mail", "suppressions", "list", "--address", "nia@example.com"]).await;
    assert!(ok && out.contains("added manual") && out.contains("removed manual") && out.contains("ticket 7"), "{out}");
    // The log is append-only for the server.
    let mut conn = app.db.app_conn().await;
    let err = sqlx::query("DELETE FROM mail_suppression_log").execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("permission denied") || err.to_string().contains("append-only"), "{err}");
}

#[test]
fn the_policy_table_in_the_docs_is_the_one_in_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md")).unwrap();
    let table = clientflow::mail::suppression::policy_markdown();
    assert!(doc.contains(&table), "docs/operations.md must contain `clientflow docs mail-policy`:\n{table}");
}

// ---- workers ----

/// Two workers share the queue while a third, a real `clientflow worker` process, is killed
/// while a request is in flight: the provider counts every message once (the retry of the
/// killed worker's message carries the same Idempotency-Key) and the outbox lost nothing.
#[tokio::test]
async fn two_workers_and_a_killed_one_deliver_each_message_exactly_once() {
    let fake = FakeResend::start(KEY).await;
    let app = resend_app(&fake, &resend::new_secret()).await;
    const N: usize = 40;
    for i in 0..N {
        queue(&app, &format!("p{i}@example.com"), Category::Transactional, &format!("k{i}")).await;
    }
    fake.set_latency(Duration::from_millis(150));
    let passwords = clientflow_test_support::role_passwords().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&app.db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_MAIL__TRANSPORT", "resend")
        .env("CLIENTFLOW_MAIL__RESEND_API_KEY", KEY)
        .env("CLIENTFLOW_MAIL__RESEND_BASE_URL", fake.base_url())
        .env("CLIENTFLOW_MAIL__FROM", "ClientFlow <no-reply@clientflow.test>")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Kill it mid-send: the provider has accepted a message it is still answering.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fake.requests().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the worker process sent nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let killed_sent = count(&app, "SELECT count(*) FROM outbox WHERE state = 'sent'").await;
    assert!((killed_sent as usize) < fake.requests().len(), "a request was in flight when the worker died");

    fake.set_latency(Duration::from_millis(5));
    let delivery = app.mail_delivery();
    let now = app.clock.now_utc() + time::Duration::seconds(1);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (db, d) = (app.app_db.clone(), delivery.clone());
            tokio::spawn(async move { outbox::deliver_due(&db, &d, now, 1000).await.unwrap() })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total as i64 + killed_sent, N as i64);
    assert_eq!(count(&app, "SELECT count(*) FROM outbox WHERE state = 'sent'").await, N as i64);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), N, "the provider accepted each message once");
    let mut to: Vec<String> = delivered.iter().map(|d| d["to"][0].as_str().unwrap().to_string()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), N);
    let requests = fake.requests();
    let mut keys: Vec<String> = requests.iter().filter_map(|r| r.idempotency_key.clone()).collect();
    keys.sort();
    let all = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), N);
    assert!(all > N, "the killed worker's message was sent again, under the same key ({all} requests)");
}

/// Runs the `clientflow` binary against the test database; (success, stdout + stderr).
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let passwords = clientflow_test_support::role_passwords().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&app.db.owner, Some(&passwords.owner)))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
