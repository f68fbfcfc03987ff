//! The outbox: durable, delivered by SMTP with retries, shared safely by several workers, and
//! readable from the local mail drop.

use std::time::Duration;

use clientflow::mail::category::Category;
use clientflow::mail::outbox::{self, OutgoingMail};
use clientflow::mail::transport::Transport;
use clientflow_test_support::TestApp;
use clientflow_test_support::smtp::SmtpSink;

async fn smtp_app(sink: &SmtpSink) -> TestApp {
    let url = format!("smtp://{}", sink.addr());
    TestApp::builder()
        .config(move |c| {
            c.mail.transport = clientflow::mail::config::MailTransport::Smtp;
            c.mail.smtp_url = Some(clientflow::platform::secret::Secret::new(url));
            c.mail.from = "ClientFlow <no-reply@clientflow.test>".into();
        })
        .spawn()
        .await
}

async fn queue(app: &TestApp, n: usize) {
    let mut tx = app.app_db.global().await.unwrap();
    for i in 0..n {
        let mail = OutgoingMail {
            to: format!("person{i}@example.com"),
            subject: format!("Message {i}"),
            body: format!("Hello {i}"),
            category: Category::Transactional,
            org_name: None,
        };
        outbox::enqueue(&mut tx, &mail, &format!("test:{i}"), app.clock.now_utc()).await.unwrap();
        // The same idempotency key twice queues once.
        outbox::enqueue(&mut tx, &mail, &format!("test:{i}"), app.clock.now_utc()).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn account_mail_goes_out_over_smtp() {
    let sink = SmtpSink::start().await;
    let app = smtp_app(&sink).await;
    let mut b = app.browser();
    b.submit("/signup", "/signup", &[("email", "smtp@example.com"), ("password", crate::support::accounts::PASSWORD)])
        .await;
    assert_eq!(app.deliver_mail().await, 1);
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].rcpt_to.len(), 1);
    assert!(got[0].rcpt_to[0].contains("smtp@example.com"), "{:?}", got[0].rcpt_to);
    assert!(got[0].data.contains("Subject: Confirm your email address"));
    assert!(got[0].data.contains(&format!("{}/verify-email?token=", app.base_url)));
    let mut db = app.db.admin_conn().await;
    let (sent, attempts): (bool, i32) =
        sqlx::query_as("SELECT sent_at IS NOT NULL, attempts FROM outbox").fetch_one(&mut db).await.unwrap();
    assert!(sent);
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn a_provider_outage_loses_nothing_and_retries_with_backoff() {
    let sink = SmtpSink::start().await;
    let app = smtp_app(&sink).await;
    queue(&app, 1).await;
    sink.fail_next(1);
    assert_eq!(app.deliver_mail().await, 0);
    let mut db = app.db.admin_conn().await;
    let (attempts, error, due_in): (i32, Option<String>, f64) = sqlx::query_as(
        "SELECT attempts, last_error, extract(epoch FROM next_attempt_at - created_at)::float8 FROM outbox",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.is_some_and(|e| e.contains("451")));
    assert!(due_in >= 30.0, "retry is scheduled later, not immediately ({due_in}s)");
    // Not due yet: nothing happens.
    assert_eq!(app.deliver_mail().await, 0);
    app.clock.advance(time::Duration::minutes(2));
    assert_eq!(app.deliver_mail().await, 1);
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn several_workers_deliver_each_message_exactly_once() {
    let sink = SmtpSink::start().await;
    let app = smtp_app(&sink).await;
    queue(&app, 30).await;
    let transport = app.mail_delivery();
    let now = app.clock.now_utc();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let db = app.app_db.clone();
        let t = transport.clone();
        workers.push(tokio::spawn(async move { outbox::deliver_due(&db, &t, now, 100).await.unwrap() }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total, 30);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = sink.messages();
    assert_eq!(got.len(), 30);
    let mut subjects: Vec<String> =
        got.iter().map(|m| m.data.lines().find(|l| l.starts_with("Subject:")).unwrap().to_string()).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 30, "a message went out twice");
}

#[tokio::test]
async fn plain_smtp_to_another_host_is_refused() {
    let mut config = clientflow::config::Config::default();
    config.mail.transport = clientflow::mail::config::MailTransport::Smtp;
    config.mail.smtp_url = Some(clientflow::platform::secret::Secret::new("smtp://user:pw@mail.example.com:587"));
    let err = Transport::from_config(&config.mail, &config.data_dir).err().unwrap();
    assert!(err.contains("must use TLS"), "{err}");
}

#[tokio::test]
async fn the_operator_reads_the_mail_drop_from_the_command_line() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    b.submit("/signup", "/signup", &[("email", "drop@example.com"), ("password", crate::support::accounts::PASSWORD)])
        .await;
    assert_eq!(app.deliver_mail().await, 1);
    let data_dir = app.config.data_dir.clone();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clientflow"))
            .args(args)
            .env_clear()
            .env("CLIENTFLOW_DATA_DIR", &data_dir)
            .output()
            .unwrap()
    };
    let out = run(&["mail", "list"]);
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.contains("drop@example.com") && list.contains("Confirm your email address"), "{list}");
    let id = list.split_whitespace().next().unwrap().to_string();
    let out = run(&["mail", "show", &id[..12]]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/verify-email?token="));
    let out = run(&["mail", "show", "no-such-id"]);
    assert!(!out.status.success());
}

/// Sign-up and reset requests are decided by the mail worker (so the request takes the same
/// time for every address): the worker loop the server runs decides them, at once when woken,
/// and delivers the mail they queue; a request made while no worker runs waits, and loses
/// nothing.
#[tokio::test]
async fn the_worker_decides_account_requests_and_delivers_their_mail() {
    let app = TestApp::spawn().await;
    crate::support::accounts::sign_up(&app, "wendy@example.com").await;
    let mut b = app.browser();
    b.submit("/forgot-password", "/forgot-password", &[("email", "wendy@example.com")]).await;
    b.submit("/forgot-password", "/forgot-password", &[("email", "nobody@example.com")]).await;
    let mut db = app.db.admin_conn().await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM account_requests").fetch_one(&mut db).await.unwrap();
    assert_eq!(waiting, 2);

    let transport = app.mail_delivery();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(outbox::run_worker(
        app.app_db.clone(),
        transport,
        app.state.clock.clone(),
        app.state.mail_wake.clone(),
        stopped,
        {
            let (db, requests) = (app.app_db.clone(), app.request_settings());
            move |now| {
                let (db, requests) = (db.clone(), requests.clone());
                async move { clientflow::identity::requests::process_due(&db, &requests, now, 100).await }
            }
        },
    ));
    let reset_mail = || {
        clientflow::mail::transport::read_maildrop(&app.config.data_dir)
            .into_iter()
            .filter(|(_, raw)| raw.contains("/reset-password?token="))
            .map(|(_, raw)| raw)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reset_mail().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = reset_mail();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: wendy@example.com") && mails[0].contains(&app.base_url), "{}", mails[0]);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM account_requests").fetch_one(&mut db).await.unwrap();
    assert_eq!(waiting, 0);

    // Woken by a new request, it answers at once (not on its next tick).
    b.submit("/signup", "/signup", &[("email", "new@example.com"), ("password", crate::support::accounts::PASSWORD)])
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let created = || async {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE email = 'new@example.com'")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    while created().await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(created().await, 1);
    stop.send(true).unwrap();
    worker.await.unwrap();
}
