//! No secret reaches a log line.
//!
//! The real `clientflow serve` runs with every crate logging at `debug`, its standard output and
//! error captured, while a person signs up, verifies their address, turns on two-factor, signs in
//! with a wrong password and then with the right one, replays a TOTP code, uses a recovery code,
//! creates and uses an API key (and a forged one), and resets their password. Every secret that
//! crossed the wire — passwords, tokens from the mail, session cookies, the API key, the TOTP
//! secret and codes, the recovery code — is then looked for in what the server printed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clientflow::identity::totp;
use clientflow_test_support::TestDb;
use clientflow_test_support::browser::{Browser, location, set_cookies};

use crate::support::process::{bin, free_port, nix_kill_term};

const EMAIL: &str = "quiet@example.com";

/// The first link containing `path_prefix` in the newest mail to `to`, waiting for the server's
/// outbox worker to deliver it.
async fn link_in_mail(data_dir: &Path, to: &str, path_prefix: &str, seen: usize) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mails: Vec<String> = clientflow::mail::transport::read_maildrop(data_dir)
            .into_iter()
            .map(|(_, raw)| raw)
            .filter(|raw| raw.lines().take_while(|l| !l.is_empty()).any(|l| l.starts_with("To:") && l.contains(to)))
            .collect();
        if mails.len() > seen
            && let Some(at) = mails[mails.len() - 1].find(path_prefix)
        {
            let raw = &mails[mails.len() - 1];
            let start = raw[..at].rfind("https://").expect("an absolute link");
            let link: String = raw[start..].chars().take_while(|c| !c.is_whitespace()).collect();
            return (link, mails.len());
        }
        assert!(Instant::now() < deadline, "no mail to {to} with {path_prefix}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the session cookie a response sets, if it sets one.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    set_cookies(res)
        .into_iter()
        .find_map(|c| c.strip_prefix("__Host-cf_session=").map(|v| v.split(';').next().unwrap_or("").to_string()))
        .filter(|v| !v.is_empty())
}

fn totp_code(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    totp::code_for_step(secret, totp::step_at(now))
}

/// Whether `digits` occurs in `text` as a number of its own (not inside a longer run of digits).
fn contains_number(text: &str, digits: &str) -> bool {
    text.match_indices(digits).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + digits.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let db = TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let port = free_port();
    let mut child = bin()
        .arg("serve")
        .env("CLIENTFLOW_DATA_DIR", &data)
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &app_url)
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", &owner_url)
        // Everything, every crate: an operator turning on debugging must not get secrets either.
        .env("CLIENTFLOW_LOG__FILTER", "debug")
        .env("CLIENTFLOW_BOT_CHECK__POW_DIFFICULTY", "8")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes as the server writes (debug logging fills a pipe's buffer quickly).
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).to_string()
        })
    };
    let stdout_reader = drain(Box::new(child.stdout.take().unwrap()));
    let stderr_reader = drain(Box::new(child.stderr.take().unwrap()));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("https://localhost:{port}");
    let cert = data.join("tls/localhost.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited early with {status}:\n{}", stderr_reader.join().unwrap());
        }
        assert!(Instant::now() < deadline, "serve did not become ready");
        if cert.exists() {
            let client = clientflow_test_support::client_for(&cert, addr).build().unwrap();
            if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every secret that crosses the wire, and the numeric ones (codes) apart.
    let mut secrets: Vec<(&str, String)> = Vec::new();
    let mut codes: Vec<(&str, String)> = Vec::new();
    let password = "Quiet-Passphrase-7c1e-never-logged";
    secrets.push(("password", password.into()));

    // Sign up and verify the address.
    let mut b = Browser::new(&cert, addr, &base);
    let res = b
        .submit("/signup", "/signup", &[("email", EMAIL), ("password", password), ("display_name", "Quiet Person")])
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let (link, seen) = link_in_mail(&data, EMAIL, "/verify-email?token=", 0).await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    secrets.push(("verification token", token.clone()));
    let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(location(&res), "/app");
    secrets.push(("session cookie", session_cookie(&res).expect("a session")));

    // Two-factor on.
    let (status, html) = b.page("/account/two-factor/setup").await;
    assert_eq!(status, 200);
    let secret_b32 = html.split("<code>").nth(1).unwrap().split("</code>").next().unwrap().to_string();
    let totp_secret = crate::support::accounts::data_encoding_decode(&secret_b32);
    secrets.push(("TOTP secret", secret_b32.clone()));
    secrets.push(("TOTP secret (hex)", hex::encode(&totp_secret)));
    let code = totp_code(&totp_secret);
    codes.push(("TOTP code", code.clone()));
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
    let recovery: Vec<String> =
        html.split("<li><code>").skip(1).map(|s| s.split("</code>").next().unwrap().to_string()).collect();
    assert_eq!(recovery.len(), 10);
    secrets.push(("recovery code", recovery[0].clone()));

    // An organization and an API key, used, and a forged one refused.
    let slug = crate::support::orgs::create_org(&mut b, "Quiet Studio").await;
    let (_, html) = b.page(&format!("/o/{slug}/settings/api-keys")).await;
    assert!(html.contains("csrf_token"));
    let res = b
        .post_with(
            &format!("/o/{slug}/settings/api-keys"),
            &[("name", "Deploy"), ("role", "manager"), ("expires_in_days", ""), ("current_password", password)],
            Some(&b.token()),
            true,
        )
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let at = html.find("value=\"cf_live_").expect("the key is shown once");
    let key = html[at + 7..].split('"').next().unwrap().to_string();
    secrets.push(("API key", key.clone()));
    secrets.push(("API key secret part", key["cf_live_".len()..].to_string()));
    let api = clientflow_test_support::client_for(&cert, addr).build().unwrap();
    let res = api.get(format!("{base}/api/v1/clients")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut forged = key.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    secrets.push(("forged API key", forged["cf_live_".len()..].to_string()));
    let res = api.get(format!("{base}/api/v1/clients")).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(res.status(), 401);

    // A wrong password, then the right one; the spent TOTP code replayed; a recovery code.
    let mut c = Browser::new(&cert, addr, &base);
    let wrong = "Wrong-Passphrase-3b9d-never-logged";
    secrets.push(("wrong password", wrong.into()));
    let res = c.submit("/login", "/login", &[("email", EMAIL), ("password", wrong)]).await;
    assert_ne!(location(&res), "/login/two-factor");
    let res = c.submit("/login", "/login", &[("email", EMAIL), ("password", password)]).await;
    assert_eq!(location(&res), "/login/two-factor");
    secrets.push(("pending session cookie", session_cookie(&res).expect("a pending session")));
    let res = c.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
    assert_eq!(res.status(), 401, "a replayed code is refused");
    let res = c.submit("/login/two-factor", "/login/two-factor", &[("code", &recovery[0])]).await;
    assert_eq!(location(&res), "/app");
    secrets.push(("signed-in session cookie", session_cookie(&res).expect("a rotated session")));

    // A password reset by mail.
    let mut d = Browser::new(&cert, addr, &base);
    d.submit("/forgot-password", "/forgot-password", &[("email", EMAIL)]).await;
    let (link, _) = link_in_mail(&data, EMAIL, "/reset-password?token=", seen).await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    secrets.push(("reset token", token.clone()));
    let (status, _) = d.page(&link).await;
    assert_eq!(status, 200);
    let new_password = "Fresh-Passphrase-5a2f-never-logged";
    secrets.push(("new password", new_password.into()));
    let res =
        d.post_with("/reset-password", &[("token", &token), ("password", new_password)], Some(&d.token()), true).await;
    assert_eq!(res.status(), 303);
    if let Some(cookie) = session_cookie(&res) {
        secrets.push(("session cookie after the reset", cookie));
    }

    nix_kill_term(child.id());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let stdout = stdout_reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(status.success(), "exit {status:?}\n{stderr}");
    let logs = format!("{stdout}\n{stderr}");

    // The capture is real: debug lines, and an access line for each step of the flow.
    let lines: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "debug logging was not on");
    for route in [
        "/signup",
        "/verify-email",
        "/account/two-factor/setup",
        "/login",
        "/login/two-factor",
        "/api/v1/clients",
        "/reset-password",
    ] {
        assert!(
            lines.iter().any(|l| l["target"] == "clientflow::access" && l["route"] == route),
            "no access line for {route}"
        );
    }

    let mut leaks = Vec::new();
    for (what, value) in &secrets {
        assert!(value.len() >= 8, "{what} is too short to search for: {value:?}");
        if logs.contains(value.as_str()) {
            leaks.push(format!("{what} ({value})"));
        }
    }
    // Six digits can occur by chance in a timestamp; look for them everywhere else.
    let without_timestamps: String = stdout
        .lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("timestamp");
                serde_json::Value::Object(m).to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (what, value) in &codes {
        if contains_number(&without_timestamps, value) || contains_number(&stderr, value) {
            leaks.push(format!("{what} ({value})"));
        }
    }
    if !leaks.is_empty() {
        let context: Vec<&str> = logs
            .lines()
            .filter(|l| secrets.iter().chain(codes.iter()).any(|(_, v)| l.contains(v.as_str())))
            .take(10)
            .collect();
        panic!("secrets in the logs: {}\n{}", leaks.join(", "), context.join("\n"));
    }
}

#[test]
fn contains_number_needs_the_whole_number() {
    assert!(contains_number("code 123456 sent", "123456"));
    assert!(contains_number("\"123456\"", "123456"));
    assert!(!contains_number("id 91234567", "123456"));
    assert!(!contains_number("nothing here", "123456"));
}
