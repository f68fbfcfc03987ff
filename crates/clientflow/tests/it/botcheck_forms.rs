//! The bot check on the real forms (sign-up and the contact form), through HTTP: the built-in
//! proof of work by default, Cloudflare Turnstile against the local fake siteverify when
//! configured, with the Content-Security-Policy each needs.

use std::time::Duration;

use clientflow::abuse::botcheck::{POW_JS, USER_MESSAGE, leading_zero_bits, pow_digest};
use clientflow::platform::http::middleware::CONTENT_SECURITY_POLICY;
use clientflow::platform::secret::Secret;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, hidden_value, location, pow_fields};
use clientflow_test_support::turnstile::FakeTurnstile;

use crate::support::accounts::PASSWORD;

const SITE_KEY: &str = "0x4AAAAAAAtestsitekey";
const SECRET: &str = "0x4AAAAAAAtest-secret-key";

/// Accounts, once the worker has decided the sign-ups waiting for it (`identity::requests`).
async fn accounts(app: &TestApp) -> i64 {
    app.process_requests().await;
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut db).await.unwrap()
}

/// A counter that does not solve `challenge` at its difficulty.
fn wrong_solution(challenge: &str) -> String {
    let difficulty: u32 = challenge.split('.').nth(2).unwrap().parse().unwrap();
    (0u64..).find(|c| leading_zero_bits(&pow_digest(challenge, *c)) < difficulty).unwrap().to_string()
}

async fn sign_up_with(b: &Browser, email: &str, token: &str, proof: &[(&str, &str)]) -> reqwest::Response {
    let mut fields = vec![("email", email), ("password", PASSWORD)];
    fields.extend_from_slice(proof);
    b.post_with("/signup", &fields, Some(token), true).await
}

#[tokio::test]
async fn pow_js_is_served_as_a_file_of_our_own() {
    let app = TestApp::spawn().await;
    let res = app.get("/static/pow.js").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.text().await.unwrap(), POW_JS);
}

#[tokio::test]
async fn sign_up_refuses_missing_wrong_expired_and_replayed_proofs_of_work() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    let res = b.get("/signup").await;
    assert_eq!(res.headers()["content-security-policy"], CONTENT_SECURITY_POLICY, "no third party needed");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"<script src="/static/pow.js" defer></script>"#), "{page}");
    assert!(page.contains("data-pow-challenge=\"pow1.signup.8."), "{page}");
    assert!(page.contains(r#"<input type="hidden" name="pow_solution" value="">"#), "{page}");
    assert!(!page.contains("<script>"), "no inline script");
    b.last_page = page;
    let token = b.token();
    let (challenge, solution) = pow_fields(&b.last_page).unwrap();

    // What a browser without JavaScript sends: the challenge and an empty solution.
    let res = sign_up_with(&b, "a@example.com", &token, &[("pow_challenge", &challenge), ("pow_solution", "")]).await;
    assert_eq!(res.status(), 400);
    let page = res.text().await.unwrap();
    assert!(page.contains("JavaScript"), "{page}");
    let fresh = hidden_value(&page, "pow_challenge").unwrap();
    assert_ne!(fresh, challenge, "a re-rendered form carries a fresh challenge");
    // No fields at all; a wrong counter; a tampered challenge.
    assert_eq!(sign_up_with(&b, "a@example.com", &token, &[]).await.status(), 400);
    let wrong = wrong_solution(&challenge);
    let res =
        sign_up_with(&b, "a@example.com", &token, &[("pow_challenge", &challenge), ("pow_solution", &wrong)]).await;
    assert_eq!(res.status(), 400);
    let tampered = challenge.replacen(".signup.", ".contact.", 1);
    let res =
        sign_up_with(&b, "a@example.com", &token, &[("pow_challenge", &tampered), ("pow_solution", &solution)]).await;
    assert_eq!(res.status(), 400);
    assert!(USER_MESSAGE.contains("sent by a person"));
    assert!(res.text().await.unwrap().contains("sent by a person"));
    assert_eq!(accounts(&app).await, 0);
    assert!(app.mail_to("a@example.com").await.is_empty(), "nothing was sent");

    // The right counter: accepted, once.
    let res =
        sign_up_with(&b, "a@example.com", &token, &[("pow_challenge", &challenge), ("pow_solution", &solution)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/signup/check-email");
    let res =
        sign_up_with(&b, "b@example.com", &token, &[("pow_challenge", &challenge), ("pow_solution", &solution)]).await;
    assert_eq!(res.status(), 400, "a replayed proof is refused");
    assert_eq!(accounts(&app).await, 1);

    // A challenge older than its five minutes is refused, even solved.
    b.page("/signup").await;
    let (old, old_solution) = pow_fields(&b.last_page).unwrap();
    app.clock.advance(time::Duration::minutes(5));
    let res =
        sign_up_with(&b, "c@example.com", &token, &[("pow_challenge", &old), ("pow_solution", &old_solution)]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(accounts(&app).await, 1);
}

async fn turnstile_app(fake: &FakeTurnstile, timeout_ms: u64) -> TestApp {
    let base = fake.base_url();
    TestApp::builder()
        .config(move |c| {
            c.bot_check.turnstile_site_key = Some(SITE_KEY.into());
            c.bot_check.turnstile_secret_key = Some(Secret::new(SECRET));
            c.bot_check.turnstile_base_url = base;
            c.bot_check.turnstile_timeout_ms = timeout_ms;
        })
        .spawn()
        .await
}

#[tokio::test]
async fn sign_up_with_turnstile_success_failure_replay_wrong_hostname_and_timeout() {
    let fake = FakeTurnstile::start(SECRET).await;
    let app = turnstile_app(&fake, 1000).await;
    let mut b = app.browser();
    let res = b.get("/signup").await;
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self' https://challenges.cloudflare.com;"), "{csp}");
    assert!(csp.contains("frame-src https://challenges.cloudflare.com;"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let page = res.text().await.unwrap();
    assert!(page.contains(&format!(r#"<div class="cf-turnstile" data-sitekey="{SITE_KEY}" data-action="signup">"#)));
    assert!(page.contains(r#"<script src="https://challenges.cloudflare.com/turnstile/v0/api.js" async defer>"#));
    assert!(!page.contains("pow_challenge"), "{page}");
    // Only the pages with the widget allow Cloudflare.
    let login = b.get("/login").await;
    assert_eq!(login.headers()["content-security-policy"], CONTENT_SECURITY_POLICY);
    b.page("/signup").await;
    let token = b.token();
    let with = |t: &str| vec![("cf-turnstile-response", t.to_string())];
    let post = async |email: &str, proof: Vec<(&str, String)>| {
        let proof: Vec<(&str, &str)> = proof.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sign_up_with(&b, email, &token, &proof).await.status().as_u16()
    };

    // Success, with our secret and the client's address sent to siteverify.
    let good = fake.issue_token("localhost", "signup");
    assert_eq!(post("ok@example.com", with(&good)).await, 303);
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.secret.as_deref(), Some(SECRET));
    assert_eq!(sent.remoteip.as_deref(), Some("127.0.0.1"));
    // Replay: refused without asking Cloudflare again.
    let asked = fake.requests().len();
    assert_eq!(post("replay@example.com", with(&good)).await, 400);
    assert_eq!(fake.requests().len(), asked);
    // Failure: a token siteverify never issued; none at all.
    assert_eq!(post("fail@example.com", with("XXXX.DUMMY.TOKEN.XXXX")).await, 400);
    assert_eq!(post("none@example.com", vec![]).await, 400);
    // Solved on another site, or for the other form.
    assert_eq!(post("host@example.com", with(&fake.issue_token("evil.example", "signup"))).await, 400);
    assert_eq!(post("action@example.com", with(&fake.issue_token("localhost", "contact"))).await, 400);
    // siteverify too slow: refused (503, "try again"), never waved through.
    fake.set_delay(Duration::from_millis(1500));
    let slow = fake.issue_token("localhost", "signup");
    let proof = [("cf-turnstile-response", slow.as_str())];
    let res = sign_up_with(&b, "slow@example.com", &token, &proof).await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("try again in a moment"));
    assert_eq!(accounts(&app).await, 1);
}

#[tokio::test]
async fn the_contact_form_uses_turnstile_when_configured() {
    let fake = FakeTurnstile::start(SECRET).await;
    let app = turnstile_app(&fake, 2000).await;
    // Signing up an Owner would need a Turnstile token of its own: the organization is seeded.
    let slug = "tsite";
    crate::support::seed_org(&app.app_db, slug).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "UPDATE organizations SET contact_form_enabled = true, contact_email = 'inbox@tsite.test' WHERE slug = $1",
    )
    .bind(slug)
    .execute(&mut db)
    .await
    .unwrap();
    let mut visitor = app.browser();
    let res = visitor.get(&format!("/contact/{slug}")).await;
    assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("frame-src https://challenges"));
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"data-action="contact""#), "{page}");
    let fields = [("name", "Vera"), ("email", "vera@example.com"), ("message", "Hello")];
    let wrong_form = fake.issue_token("localhost", "signup");
    let mut with = fields.to_vec();
    with.push(("cf-turnstile-response", wrong_form.as_str()));
    let res = visitor.submit(&format!("/contact/{slug}"), &format!("/contact/{slug}"), &with).await;
    assert_eq!(res.status(), 400, "a token solved for sign-up is no good for the contact form");
    let right = fake.issue_token("localhost", "contact");
    let mut with = fields.to_vec();
    with.push(("cf-turnstile-response", right.as_str()));
    let res = visitor.submit(&format!("/contact/{slug}"), &format!("/contact/{slug}"), &with).await;
    assert_eq!(res.status(), 303);
}
