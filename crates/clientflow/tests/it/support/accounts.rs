//! Accounts: signing up, signing in, second factor, reading mail.

use clientflow::identity::totp;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};

pub const PASSWORD: &str = "correct horse battery staple";

/// Signs up `email` and follows the verification link: returns a signed-in browser. The sign-up
/// form carries a proof-of-work challenge, which `Browser::submit` solves as `pow.js` would
/// (cheaply: the test apps run at the lowest configurable difficulty).
pub async fn sign_up(app: &TestApp, email: &str) -> Browser {
    let mut b = app.browser();
    let res = b
        .submit("/signup", "/signup", &[("email", email), ("password", PASSWORD), ("display_name", "Test User")])
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    assert_eq!(location(&res), "/signup/check-email");
    let link = app.link_in_mail(email, "/verify-email?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    b
}

pub async fn sign_in(app: &TestApp, b: &mut Browser, email: &str, password: &str) -> reqwest::Response {
    let _ = app;
    b.submit("/login", "/login", &[("email", email), ("password", password)]).await
}

/// Turns on two-factor for the signed-in browser; returns (secret, recovery codes).
pub async fn enable_totp(app: &TestApp, b: &mut Browser) -> (Vec<u8>, Vec<String>) {
    let (status, html) = b.page("/account/two-factor/setup").await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg"), "QR code missing");
    let secret_b32 = html.split("<code>").nth(1).unwrap().split("</code>").next().unwrap().to_string();
    let secret = data_encoding_decode(&secret_b32);
    assert_eq!(secret.len(), 20, "160-bit secret");
    let token = b.token();
    // A wrong code doesn't turn it on.
    let res = b
        .post_with(
            "/account/two-factor/setup",
            &[("code", "000000"), ("current_password", PASSWORD)],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 422);
    let code = current_code(app, &secret);
    let res = b
        .post_with("/account/two-factor/setup", &[("code", &code), ("current_password", PASSWORD)], Some(&token), true)
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let html = res.text().await.unwrap();
    let codes: Vec<String> =
        html.split("<li><code>").skip(1).map(|s| s.split("</code>").next().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

pub fn data_encoding_decode(b32: &str) -> Vec<u8> {
    // RFC 4648 base32 without padding.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b32.bytes() {
        let v = alphabet.iter().position(|a| *a == c).expect("base32") as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

pub fn current_code(app: &TestApp, secret: &[u8]) -> String {
    let step = totp::step_at(app.clock.now_utc().unix_timestamp() as u64);
    totp::code_for_step(secret, step)
}

/// Moves the app's clock to the next TOTP step (so a fresh code is accepted).
pub fn next_step(app: &TestApp) {
    app.clock.advance(time::Duration::seconds(30));
}

/// The body of the newest message to `to` with `subject`, which must be queued as critical
/// mail (it bypasses suppression).
pub async fn critical_mail(app: &TestApp, to: &str, subject: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT category, body_text FROM outbox WHERE recipient = $1 AND subject = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(to)
    .bind(subject)
    .fetch_optional(&mut db)
    .await
    .unwrap();
    let (category, body) = row.unwrap_or_else(|| panic!("no mail \"{subject}\" to {to}"));
    assert_eq!(category, "critical", "{subject}");
    body
}

/// Opens the set-up page and returns the secret it shows.
pub async fn setup_secret(b: &mut Browser) -> Vec<u8> {
    let (status, html) = b.page("/account/two-factor/setup").await;
    assert_eq!(status, 200, "{html}");
    secret_on_page(&html)
}

/// `next` values and where each must lead: hostile ones to the default page, odd but local
/// ones to their normalized form (what a browser makes of them), never elsewhere, never a 500.
pub fn next_values() -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = [
        ("/\t/evil.example/a", "/app"),
        ("/\n/evil.example", "/app"),
        ("/\r\n/evil.example", "/app"),
        ("\t//evil.example", "/app"),
        ("/\\evil.example", "/app"),
        ("\\\\evil.example", "/app"),
        ("//evil.example", "/app"),
        ("///evil.example", "/app"),
        ("/.//evil.example", "/app"),
        ("https://evil.example/", "/app"),
        ("HTTPS:evil.example", "/evil.example"),
        ("javascript:alert(1)", "/app"),
        (" JavaScript:alert(1)", "/app"),
        ("data:text/html,<script>alert(1)</script>", "/app"),
        ("\u{b}//evil.example", "/app"),
        ("/\u{b}/evil.example", "/%0B/evil.example"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("/%09/evil.example", "/%09/evil.example"),
        ("//ｅｖｉｌ.example", "/app"),
        ("/ünïcode", "/%C3%BCn%C3%AFcode"),
        ("", "/app"),
        ("/account/security", "/account/security"),
        ("/o/acme/projects?view=board#top", "/o/acme/projects?view=board"),
    ]
    .iter()
    .map(|(raw, to)| (raw.to_string(), to.to_string()))
    .collect();
    values.push((format!("/{}", "a".repeat(3000)), "/app".into()));
    values
}

pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The hidden `next` of a page's form, as the browser will send it back.
pub fn next_on_page(html: &str) -> String {
    clientflow_test_support::browser::hidden_value(html, "next").expect("a next field").replace("&#x2f;", "/")
}

pub fn secret_on_page(html: &str) -> Vec<u8> {
    data_encoding_decode(html.split("<code>").nth(1).expect("a secret").split("</code>").next().unwrap())
}
