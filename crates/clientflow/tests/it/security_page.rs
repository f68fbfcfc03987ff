//! The security page, the sub-processor pages and vulnerability disclosure: generated from the
//! running installation (a feature that is off says off, the sub-processors listed are exactly
//! the enabled ones), every claim's tests exist, security.txt follows RFC 9116, and the report
//! form refuses what it should, stores reports sealed and answers the reporter alone.

use std::collections::BTreeSet;
use std::process::Command;

use clientflow::abuse::limits::{LimitConfig, PolicyId};
use clientflow::platform::http::middleware::CONTENT_SECURITY_POLICY;
use clientflow::platform::secret::Secret;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location, set_cookies};
use clientflow_test_support::redis::RedisServer;
use clientflow_test_support::resend::FakeResend;
use clientflow_test_support::turnstile::FakeTurnstile;

mod index {
    include!(concat!(env!("OUT_DIR"), "/test_index.rs"));
}

const SECRETS: &[&str] = &[
    "re_live_secret_key",
    "turnstile-secret-value",
    "smtp-password-value",
    "s3-secret-value",
    "stripe-secret-value",
    "sentrykey",
    "files-secret-value",
];

/// Every claim of the page names tests the build found in the sources; a made-up name is not.
#[test]
fn every_claim_names_tests_that_exist() {
    let tests: BTreeSet<&str> = index::TESTS.iter().copied().collect();
    assert!(tests.contains("it/security_page.rs::every_claim_names_tests_that_exist"), "the index covers tests/it");
    assert!(tests.contains("platform/seal.rs::seals_and_binds_to_context"), "the index covers unit tests");
    assert!(tests.contains("app/disclosure/reports.rs::reports_are_parsed_at_the_edge"));
    assert!(!tests.contains("it/tls.rs::a_test_nobody_wrote"));
    let mut missing = Vec::new();
    let mut named = 0;
    for (section, proofs) in clientflow::disclosure::claims::PROOFS {
        assert!(!proofs.is_empty(), "the section {section} names no test");
        for p in *proofs {
            named += 1;
            if !tests.contains(p) {
                missing.push(format!("{section}: {p}"));
            }
        }
    }
    assert!(named >= 20, "{named}");
    assert!(missing.is_empty(), "claims name tests that don't exist:\n{}", missing.join("\n"));
}

/// `data-subprocessor` ids on a page.
fn listed(page: &str) -> BTreeSet<String> {
    page.split("data-subprocessor=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_string).collect()
}

async fn page(app: &TestApp, path: &str) -> (reqwest::header::HeaderMap, String) {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    let headers = res.headers().clone();
    (headers, res.text().await.unwrap())
}

/// The three pages list the same set; returns it. Each page is public and cacheable, sets no
/// cookie, keeps the strict policy and shows no configured secret.
async fn listed_everywhere(app: &TestApp) -> BTreeSet<String> {
    let (_, security) = page(app, "/security").await;
    let on_security = listed(&security);
    for path in ["/security", "/legal/subprocessors", "/legal/dpa"] {
        let (headers, body) = page(app, path).await;
        assert_eq!(headers["cache-control"], "public, max-age=300", "{path}");
        assert!(headers.get("set-cookie").is_none(), "{path}: a cacheable page sets no cookie");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY, "{path}");
        assert!(!body.contains("style=") && !body.contains("<script>"), "{path}: nothing inline");
        for s in SECRETS {
            assert!(!body.contains(s), "{path} shows a secret");
        }
        assert_eq!(listed(&body), on_security, "{path} lists another set than /security");
        assert_eq!(body.contains("id=\"no-subprocessors\""), on_security.is_empty(), "{path}");
    }
    on_security
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_pages_list_exactly_the_enabled_sub_processors() {
    // Everything off: nobody.
    let app = TestApp::spawn().await;
    assert_eq!(listed_everywhere(&app).await, set(&[]));
    let (_, security) = page(&app, "/security").await;
    assert!(security.contains("This installation hands no data to any third party."), "{security}");
    assert!(security.contains("Redis (Upstash or self-hosted)</dt><dd>off (turned on by redis.url"), "{security}");
    drop(app);

    let redis = RedisServer::start().await;
    let resend = FakeResend::start("re_live_secret_key").await;
    let turnstile = FakeTurnstile::start("turnstile-secret-value").await;
    let redis_url = redis.url();
    let resend_url = resend.base_url();
    let turnstile_url = turnstile.base_url();
    type Tweak = Box<dyn Fn(&mut clientflow::config::Config)>;
    let tweaks: Vec<(&str, Tweak)> = vec![
        ("redis", Box::new(move |c| c.redis.url = Some(Secret::new(redis_url.clone())))),
        (
            "resend",
            Box::new(move |c| {
                c.mail.transport = clientflow::mail::config::MailTransport::Resend;
                c.mail.resend_api_key = Some(Secret::new("re_live_secret_key"));
                c.mail.resend_base_url = resend_url.clone();
            }),
        ),
        (
            "smtp",
            Box::new(|c| {
                c.mail.transport = clientflow::mail::config::MailTransport::Smtp;
                c.mail.smtp_url = Some(Secret::new("smtps://cf:smtp-password-value@127.0.0.1:4650"));
            }),
        ),
        (
            "turnstile",
            Box::new(move |c| {
                c.bot_check.turnstile_site_key = Some("1x00000000000000000000AA".into());
                c.bot_check.turnstile_secret_key = Some(Secret::new("turnstile-secret-value"));
                c.bot_check.turnstile_base_url = turnstile_url.clone();
            }),
        ),
        (
            "backup-store",
            Box::new(|c| {
                c.backup.s3 = Some(clientflow::config::BackupConfig::default().s3.unwrap_or_default());
                let s3 = c.backup.s3.as_mut().unwrap();
                s3.bucket = "backups".into();
                s3.endpoint = "127.0.0.1".into();
                s3.region = "eu-central-1".into();
                s3.key = Some(Secret::new("AKIAEXAMPLE"));
                s3.key_secret = Some(Secret::new("s3-secret-value"));
            }),
        ),
        ("stripe", Box::new(|c| c.billing.stripe_secret_key = Some(Secret::new("sk_test_stripe-secret-value")))),
        ("sentry", Box::new(|c| c.sentry.dsn = Some(Secret::new("https://sentrykey@127.0.0.1:9/42")))),
        (
            "object-storage",
            Box::new(|c| {
                c.files.storage = clientflow::work::files::StorageKind::S3;
                c.files.s3 = Some(clientflow::work::files::S3StorageConfig {
                    bucket: "files".into(),
                    region: "eu-central-1".into(),
                    endpoint: Some("http://127.0.0.1:9".into()),
                    access_key_id: Some(Secret::new("AKIAFILES")),
                    secret_access_key: Some(Secret::new("files-secret-value")),
                    allow_http: true,
                    ..Default::default()
                });
            }),
        ),
    ];
    let tweaks: Vec<(&str, std::rc::Rc<Tweak>)> = tweaks.into_iter().map(|(id, t)| (id, std::rc::Rc::new(t))).collect();
    // Each one alone: exactly it.
    for (id, tweak) in &tweaks {
        let t = tweak.clone();
        let app = TestApp::builder().config(move |c| t(c)).spawn().await;
        assert_eq!(listed_everywhere(&app).await, set(&[id]), "only {id} is on");
        let (_, security) = page(&app, "/security").await;
        assert!(security.contains("hands data to 1 third party"), "{id}");
    }
    // Every one that can be on together (one mail transport at a time).
    let together: Vec<_> = tweaks.iter().filter(|(id, _)| *id != "smtp").map(|(_, t)| t.clone()).collect();
    let app = TestApp::builder()
        .config(move |c| {
            for t in &together {
                t(c)
            }
        })
        .spawn()
        .await;
    assert_eq!(
        listed_everywhere(&app).await,
        set(&["redis", "resend", "turnstile", "backup-store", "stripe", "sentry", "object-storage"])
    );
    let (_, security) = page(&app, "/security").await;
    assert!(
        security.contains("Cloudflare Turnstile") && security.contains("shared by every server process through Redis")
    );
}

#[tokio::test]
async fn the_page_is_generated_from_the_running_installation() {
    let app = TestApp::builder().config(|c| c.disclosure.region = "Frankfurt (eu-central)".into()).spawn().await;
    let (headers, body) = page(&app, "/security").await;
    assert_eq!(headers["cache-control"], "public, max-age=300");
    for (id, _) in clientflow::disclosure::claims::PROOFS {
        assert!(body.contains(&format!("<section id=\"{id}\"")), "section {id} missing");
    }
    // Every claim link leads to a test listed on the page, and every listed test exists.
    let ids: BTreeSet<&str> = body.split(" id=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    let links: Vec<&str> = body.split("class=\"proof\" href=\"#").skip(1).filter_map(|s| s.split('"').next()).collect();
    assert!(links.len() >= 20, "{}", links.len());
    for l in &links {
        assert!(ids.contains(l), "the claim link #{l} leads nowhere");
    }
    let tests: BTreeSet<&str> = index::TESTS.iter().copied().collect();
    for p in body.split("data-proof=\"").skip(1).filter_map(|s| s.split('"').next()) {
        assert!(tests.contains(p), "the page lists {p}, which is not a test");
    }
    // What it says is what runs.
    assert!(body.contains("Frankfurt (eu-central)"));
    assert!(body.contains("self-signed certificate") && body.contains("TLS 1.3 only"));
    assert!(body.contains("built-in proof of work") && body.contains("8 leading zero bits"));
    assert!(body.contains("security-report-ip") && body.contains("kept in this process (single node)"));
    assert!(body.contains("local mail drop (nothing leaves this machine)"));
    assert!(body.contains("Bounce and complaint webhook</dt><dd>off"), "off says off");
    assert!(body.contains("Newest signed checkpoint</dt><dd>none yet"));
    // An organization's first audited action is signed at once: the page shows it.
    let mut owner = crate::support::accounts::sign_up(&app, "owner@page.test").await;
    crate::support::orgs::create_org(&mut owner, "Page").await;
    let (_, body) = page(&app, "/security").await;
    let key = app.state.audit_signer.key_id().to_string();
    assert!(body.contains(&format!("ago, key {key}")), "{body}");
    // Linked from the footer of every page, the home page's included.
    let (_, home) = page(&app, "/").await;
    assert!(home.contains("<a href=\"/security\">Security</a>") && home.contains("href=\"/security/report\""));
}

fn field<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(&format!("{name}: "))).collect()
}

#[tokio::test]
async fn security_txt_has_the_fields_rfc_9116_requires() {
    let app = TestApp::spawn().await;
    let res = app.get("/.well-known/security.txt").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    let text = res.text().await.unwrap();
    // Each line a comment or a field (RFC 9116 §2.2).
    for line in text.lines() {
        assert!(line.starts_with('#') || line.split_once(": ").is_some(), "{line:?}");
    }
    let public = app.config.public_url();
    assert_eq!(field(&text, "Contact"), [format!("{public}/security/report").as_str()], "defaults to the form");
    let expires = field(&text, "Expires");
    assert_eq!(expires.len(), 1, "Expires exactly once");
    let at = time::OffsetDateTime::parse(expires[0], &time::format_description::well_known::Rfc3339).unwrap();
    let now = app.state.clock.now();
    assert!(at > now && at <= now + time::Duration::days(366), "{at}");
    assert!(expires[0].ends_with('Z'));
    assert_eq!(field(&text, "Canonical"), [format!("{public}/.well-known/security.txt").as_str()]);
    assert_eq!(field(&text, "Policy"), [format!("{public}/security#disclosure").as_str()]);
    assert_eq!(field(&text, "Preferred-Languages"), ["en"]);
    assert_eq!(app.get("/security.txt").await.text().await.unwrap(), text);

    // From configuration.
    let app = TestApp::builder()
        .config(|c| {
            c.disclosure.contact = vec!["mailto:security@cf.test".into(), "https://cf.test/report".into()];
            c.disclosure.expires = Some("2099-01-31T00:00:00Z".into());
            c.disclosure.preferred_languages = vec!["en".into(), "de".into()];
        })
        .spawn()
        .await;
    let text = app.get("/.well-known/security.txt").await.text().await.unwrap();
    assert_eq!(field(&text, "Contact"), ["mailto:security@cf.test", "https://cf.test/report"]);
    assert_eq!(field(&text, "Expires"), ["2099-01-31T00:00:00Z"]);
    assert_eq!(field(&text, "Preferred-Languages"), ["en, de"]);

    // Bad settings are refused at start, naming the setting.
    for (var, value, setting) in [
        ("CLIENTFLOW_DISCLOSURE__CONTACT", "security@cf.test", "disclosure.contact"),
        ("CLIENTFLOW_DISCLOSURE__EXPIRES", "next year", "disclosure.expires"),
        ("CLIENTFLOW_DISCLOSURE__POLICY_URL", "http://cf.test/policy", "disclosure.policy_url"),
    ] {
        let e = clientflow::config::Config::load_from(None, &[(var.to_string(), value.to_string())]).unwrap_err();
        assert!(e.to_string().contains(setting), "{var}={value}: {e}");
    }

    // `doctor` warns 30 days ahead and fails once it has passed.
    let passwords = clientflow_test_support::role_passwords().await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::days(20);
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(120);
    for (expires, expect) in [(soon, "warn  security.txt"), (later, "ok    security.txt")] {
        let expires = expires.replace_nanosecond(0).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_clientflow"))
            .arg("doctor")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
            .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
            .env(
                "CLIENTFLOW_DISCLOSURE__EXPIRES",
                expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expect), "{expect}:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    }
}

async fn reports(app: &TestApp) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT reference, summary, details_sealed, status_token_digest FROM security_reports ORDER BY created_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
}

const REPORT: &[(&str, &str)] = &[
    ("email", "finder@research.test"),
    ("name", "Finder"),
    ("summary", "Stored XSS in task titles"),
    ("details", "1. Create a task titled <img src=x onerror=alert(1)>\n2. Open the board."),
];

fn multipart(b: &Browser, token: &str) -> reqwest::RequestBuilder {
    let boundary = "cfboundary7MA4YWxk";
    let mut body = String::new();
    for (k, v) in [("csrf_token", token)].iter().chain(REPORT.iter()) {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"poc.html\"\r\n\
         Content-Type: text/html\r\n\r\n<script>alert(1)</script>\r\n--{boundary}--\r\n"
    ));
    b.client
        .post(b.url("/security/report"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("origin", b.base_url.clone())
        .body(body)
}

#[tokio::test]
async fn the_report_form_refuses_missing_bot_checks_bursts_and_attachments() {
    let app = TestApp::builder()
        .config(|c| {
            *c.rate_limits.get_mut(PolicyId::SecurityReportIp) = LimitConfig::new(6, 3600);
            c.disclosure.report_max_chars = 200;
        })
        .spawn()
        .await;
    let mut visitor = app.browser();
    let res = visitor.get("/security/report").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-security-policy"], CONTENT_SECURITY_POLICY, "the strict policy");
    let form = res.text().await.unwrap();
    assert!(form.contains("data-pow-challenge") && !form.contains("style="));
    // Every field has its label.
    for name in ["email", "name", "summary", "details"] {
        let at = form.find(&format!("name=\"{name}\"")).unwrap();
        let open = form[..at].rfind("<label>").unwrap();
        assert!(!form[open..at].contains("</label>"), "{name} is outside its label");
    }
    visitor.page("/security/report").await;
    let token = visitor.token();
    // 1. No bot check.
    let res = visitor.post_with("/security/report", REPORT, Some(&token), true).await;
    assert_eq!(res.status(), 400);
    // 2. An attachment.
    let res = multipart(&visitor, &token).send().await.unwrap();
    assert_eq!(res.status(), 415);
    assert!(res.text().await.unwrap().contains("Attachments are not accepted"));
    // 3. Over the configured length.
    let long = "x".repeat(201);
    let mut too_long = REPORT.to_vec();
    too_long[3] = ("details", &long);
    let res = visitor.submit("/security/report", "/security/report", &too_long).await;
    assert_eq!(res.status(), 422);
    // 4. Over the body limit.
    let huge = "x".repeat(app.config.server.body_limit_bytes + 1);
    let res = visitor.post_with("/security/report", &[("details", &huge)], Some(&token), true).await;
    assert_eq!(res.status(), 413);
    assert!(reports(&app).await.is_empty(), "nothing refused was stored");
    // 5, 6: accepted; 7: the address's budget is spent.
    for _ in 0..2 {
        let res = visitor.submit("/security/report", "/security/report", REPORT).await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/security/report/sent");
    }
    let res = visitor.submit("/security/report", "/security/report", REPORT).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(reports(&app).await.len(), 2);
    let (status, sent) = visitor.page("/security/report/sent").await;
    assert_eq!(status, 200);
    assert!(sent.contains("Your report was received"));
}

async fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let passwords = clientflow_test_support::role_passwords().await;
    let out = Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .args(args)
        .env_clear()
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn reports_are_stored_sealed_and_the_reporter_is_acknowledged() {
    let app = TestApp::builder().config(|c| c.disclosure.notify = vec!["psirt@operator.test".into()]).spawn().await;
    let mut finder = app.browser();
    let res = finder.submit("/security/report", "/security/report", REPORT).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert!(set_cookies(&res).iter().all(|c| !c.contains("SR-")));
    let stored = reports(&app).await;
    assert_eq!(stored.len(), 1);
    let (reference, summary, sealed, digest) = &stored[0];
    assert_eq!(summary, "Stored XSS in task titles");
    assert!(!String::from_utf8_lossy(sealed).contains("onerror"), "the text is sealed");
    assert_eq!(digest.len(), 32);

    // Both mails were queued in the same transaction.
    let mut db = app.db.admin_conn().await;
    let queued: Vec<(String, String)> =
        sqlx::query_as("SELECT recipient, category::text FROM outbox ORDER BY recipient")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        queued,
        [("finder@research.test".into(), "transactional".into()), ("psirt@operator.test".into(), "critical".into())]
    );
    let ack = app.mail_to("finder@research.test").await;
    assert_eq!(ack.len(), 1);
    assert!(ack[0].contains(reference.as_str()));
    assert!(!ack[0].contains("XSS") && !ack[0].contains("onerror"), "nothing typed is relayed:\n{}", ack[0]);
    let notice = app.mail_to("psirt@operator.test").await;
    assert!(notice[0].contains(reference.as_str()) && notice[0].contains("onerror=alert(1)"), "{}", notice[0]);

    // The reporter's status link, and nobody else's.
    let link = app.link_in_mail("finder@research.test", "/security/report/status/").await;
    let token = link.rsplit('/').next().unwrap().to_string();
    assert_eq!(clientflow::platform::crypto::sha256(token.as_bytes()).as_slice(), digest.as_slice(), "stored hashed");
    let mut other = app.browser();
    let res = other.get(&link).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let status = res.text().await.unwrap();
    assert!(status.contains(reference.as_str()) && status.contains("<dd>Open: we are looking into it</dd>"));
    assert!(!status.contains("onerror") && !status.contains("finder@research.test"));
    // A second reporter gets their own; neither link nor reference opens the other's.
    let mut second = app.browser();
    let second_report = [("email", "second@research.test"), ("summary", "CSRF on logout"), ("details", "PoC")];
    assert_eq!(second.submit("/security/report", "/security/report", &second_report).await.status(), 303);
    let second_link = app.link_in_mail("second@research.test", "/security/report/status/").await;
    let (_, second_status) = second.page(&second_link).await;
    assert!(!second_status.contains(reference.as_str()));
    for path in [
        format!("/security/report/status/{reference}"),
        format!("/security/report/status/{}", "A".repeat(43)),
        format!("/security/report/status/{}x", token),
        "/security/report/status/".to_string(),
    ] {
        assert_eq!(other.get(&path).await.status(), 404, "{path}");
    }

    // The operator lists, reads and closes.
    let (ok, out) = cli(&app, &["security", "reports", "list", "--status", "open"]).await;
    assert!(ok && out.contains(reference.as_str()) && out.contains("CSRF on logout"), "{out}");
    let (ok, out) = cli(&app, &["security", "reports", "show", reference]).await;
    assert!(ok && out.contains("onerror=alert(1)") && out.contains("Finder"), "{out}");
    let (ok, out) =
        cli(&app, &["security", "reports", "close", reference, "--note", "Fixed in 1.4.2, thank you."]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&app, &["security", "reports", "close", reference]).await;
    assert!(!ok && out.contains("closed already"), "{out}");
    let (ok, out) = cli(&app, &["security", "reports", "show", "SR-NOSUCHREFX"]).await;
    assert!(!ok && out.contains("no report"), "{out}");
    let (_, status) = other.page(&link).await;
    assert!(status.contains("<dd>Closed</dd>") && status.contains("Fixed in 1.4.2, thank you."), "{status}");
}
