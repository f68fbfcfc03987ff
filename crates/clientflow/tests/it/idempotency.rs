//! `Idempotency-Key` under races and interruptions: concurrent requests sharing a key get one
//! execution and otherwise the stored answer or "in progress", never another error; a request
//! whose work committed can always be replayed, and one whose work did not commit can always run
//! again, whatever moment it was interrupted at.

use axum::http::Method;
use clientflow_test_support::TestApp;
use serde_json::json;

use crate::support::api::{Res, api_key, count, send_raw, tenant, upload_with};

async fn post_client(app: &TestApp, key: &str, idem: &str, body: &str) -> Res {
    send_raw(
        app,
        Method::POST,
        "/api/v1/clients",
        Some(key),
        Some(("application/json", body.as_bytes().to_vec())),
        &[("idempotency-key", idem)],
    )
    .await
}

#[tokio::test]
async fn concurrent_requests_sharing_a_key_get_one_execution_and_no_other_error() {
    let app = TestApp::builder().pool_size(12).spawn().await;
    let t = tenant(&app, "race-idem").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let unknown_project = uuid::Uuid::now_v7().to_string();
    for round in 0..15 {
        let idem = format!("invalid-{round}");
        let parts = [("project_id", unknown_project.as_str())];
        let file = Some(("a.txt", &b"hello"[..]));
        let headers = [("idempotency-key", idem.as_str())];
        let (a, b, c, d) = tokio::join!(
            post_client(&app, &key, &idem, r#"{"name": ""}"#),
            post_client(&app, &key, &idem, r#"{"name": ""}"#),
            upload_with(&app, &key, &parts, file, "b1", &headers),
            upload_with(&app, &key, &parts, file, "b2", &headers),
        );
        for r in [&a, &b, &c, &d] {
            match r.status {
                // Ran, and was refused for what it is.
                422 => {}
                // Another request held the key (in progress, or the same key for another body).
                409 => {}
                other => panic!("round {round}: unexpected {other}: {}", r.body),
            }
        }
        for r in [&a, &b] {
            if r.status == 422 {
                r.assert_problem_field(422, "name");
            }
        }
        for r in [&c, &d] {
            if r.status == 422 {
                r.assert_problem_field(422, "project_id");
            }
        }

        // Valid and identical: one creates, the others are told it is in progress or get its
        // stored answer.
        let idem = format!("valid-{round}");
        let name = format!(r#"{{"name": "Round {round}"}}"#);
        let results = futures::future::join_all((0..4).map(|_| post_client(&app, &key, &idem, &name))).await;
        let created: Vec<&Res> = results.iter().filter(|r| r.status == 201).collect();
        assert!(!created.is_empty() || results.iter().all(|r| r.status == 409), "{:?}", statuses(&results));
        for r in &results {
            assert!(matches!(r.status, 201 | 409), "{:?}", statuses(&results));
        }
        let ids: std::collections::BTreeSet<String> = created.iter().map(|r| r.id()).collect();
        assert!(ids.len() <= 1, "one client, replayed: {ids:?}");
        let made = count(&app, &format!("SELECT count(*) FROM clients WHERE name = 'Round {round}'")).await;
        // If every request found the key busy, none ran: a retry runs it.
        if made == 0 {
            assert_eq!(post_client(&app, &key, &idem, &name).await.status, 201);
        }
        assert_eq!(count(&app, &format!("SELECT count(*) FROM clients WHERE name = 'Round {round}'")).await, 1);
    }
}

fn statuses(results: &[Res]) -> Vec<u16> {
    results.iter().map(|r| r.status).collect()
}

/// Waits until a request of this test's database is blocked inside `INSERT INTO clients`, and
/// returns its backend's process id.
async fn blocked_insert(app: &TestApp) -> i32 {
    for _ in 0..200 {
        let mut db = app.db.admin_conn().await;
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE 'INSERT INTO clients%'",
        )
        .fetch_optional(&mut db)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the request never reached its insert");
}

/// The server's connection dies in the middle of the work (as when the server process is
/// killed: PostgreSQL rolls its transaction back). Nothing was saved, so the retry with the same
/// key runs the request, once: the client is never left with "interrupted, may or may not have
/// happened".
#[tokio::test]
async fn a_request_interrupted_before_its_work_committed_runs_again_on_retry() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "interrupted").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let mut locker = app.db.admin_conn().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE clients IN SHARE MODE").execute(&mut locker).await.unwrap();
    let first = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/api/v1/clients");
        let key = key.clone();
        async move {
            let res = client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "crash-1")
                .json(&json!({"name": "Crash"}))
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    });
    let pid = blocked_insert(&app).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut db).await.unwrap();
    let status = first.await.unwrap();
    assert!(status >= 500, "the interrupted request failed: {status}");
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();

    let retry = post_client(&app, &key, "crash-1", r#"{"name": "Crash"}"#).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), None, "it ran for the first time");
    assert_eq!(count(&app, "SELECT count(*) FROM clients WHERE name = 'Crash'").await, 1);
    // And from now on it is replayed.
    let again = post_client(&app, &key, "crash-1", r#"{"name": "Crash"}"#).await;
    assert_eq!((again.status, again.id()), (201, retry.id()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

/// The work commits but the client never hears back (it gave up, or the connection broke on the
/// way back). The retry gets the saved answer, with the id of what was created.
#[tokio::test]
async fn a_request_whose_answer_was_lost_is_replayed_with_its_result() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "lost-answer").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let mut locker = app.db.admin_conn().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE clients IN SHARE MODE").execute(&mut locker).await.unwrap();
    let gave_up = app
        .client
        .post(app.url("/api/v1/clients"))
        .bearer_auth(&key)
        .header("idempotency-key", "lost-1")
        .json(&json!({"name": "Lost"}))
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up before the answer");
    blocked_insert(&app).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    // The server finishes the work on its own.
    let mut made = 0;
    for _ in 0..100 {
        made = count(&app, "SELECT count(*) FROM clients WHERE name = 'Lost'").await;
        if made == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(made, 1);
    let retry = post_client(&app, &key, "lost-1", r#"{"name": "Lost"}"#).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM clients WHERE name = 'Lost'").fetch_one(&mut db).await.unwrap();
    assert_eq!(retry.id(), id.to_string(), "the replay names what was created");
    assert_eq!(count(&app, "SELECT count(*) FROM clients WHERE name = 'Lost'").await, 1);
}

/// A stored answer and its work are one transaction: there is never a committed record of a
/// key without its work, nor work done under a key without its record.
#[tokio::test]
async fn no_key_record_is_ever_committed_without_its_answer() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "records").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    for i in 0..5 {
        assert_eq!(post_client(&app, &key, &format!("r{i}"), &format!(r#"{{"name": "R{i}"}}"#)).await.status, 201);
        post_client(&app, &key, &format!("bad{i}"), r#"{"name": ""}"#).await.assert_problem_field(422, "name");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys WHERE status IS NULL").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys WHERE status = 201").await, 5);
}

/// A running `clientflow serve` on `db`, with its data directory; killed on drop.
struct Server {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is killed and waited for by `Server`'s `Drop`.
#[allow(clippy::zombie_processes)]
async fn serve(db: &clientflow_test_support::TestDb, data: &std::path::Path) -> Server {
    let passwords = clientflow_test_support::role_passwords().await;
    let port = crate::support::process::free_port();
    let mut child = crate::support::process::bin()
        .arg("serve")
        .env("CLIENTFLOW_DATA_DIR", data)
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", crate::support::url_of(&db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&db.owner, Some(&passwords.owner)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let client = crate::support::process::wait_ready(&mut child, data, port).await;
    Server { child, base, client }
}

/// The server process is killed (SIGKILL) while a request with an `Idempotency-Key` is in the
/// middle of its work. A new process on the same database answers the retry by running it, once.
#[tokio::test]
async fn a_request_cut_off_by_a_killed_server_runs_once_on_retry() {
    let db = clientflow_test_support::TestDb::new().await;
    let app_db = db.app_db(2).await;
    let org = crate::support::seed_org(&app_db, "killed").await;
    let ctx = clientflow::audit::Context::system(time::OffsetDateTime::now_utc(), None);
    let new_key = clientflow::access::api_key::NewKey {
        name: "k".into(),
        role: "admin".into(),
        permissions: None,
        expires_in_days: None,
    };
    let owner = uuid::Uuid::now_v7();
    let mut admin = db.admin_conn().await;
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'owner@killed.test')")
        .bind(owner)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org.id)
        .bind(owner)
        .execute(&mut admin)
        .await
        .unwrap();
    let owner: clientflow::platform::ids::UserId = owner.to_string().parse().unwrap();
    let key =
        clientflow::access::api_key::create_for(&app_db, &ctx, &org.principal, owner, &new_key).await.unwrap().secret;
    let dir = tempfile::tempdir().unwrap();
    let clients_named = |name: &'static str| {
        let admin = db.admin.clone();
        async move {
            use sqlx::{ConnectOptions, Row};
            let mut c = admin.connect().await.unwrap();
            sqlx::query("SELECT count(*) FROM clients WHERE name = $1")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };

    let server = serve(&db, dir.path()).await;
    let mut locker = db.admin_conn().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE clients IN SHARE MODE").execute(&mut locker).await.unwrap();
    let request = server
        .client
        .post(format!("{}/api/v1/clients", server.base))
        .bearer_auth(&key)
        .header("idempotency-key", "killed-1")
        .json(&json!({"name": "Killed"}))
        .send();
    let in_flight = tokio::spawn(request);
    // Wait for the request to be inside its work, then kill the process.
    let mut waiting = false;
    for _ in 0..200 {
        let mut c = db.admin_conn().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waiting, "the request never reached its work");
    drop(server);
    assert!(in_flight.await.unwrap().is_err(), "the killed server never answered");
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();

    let server = serve(&db, dir.path()).await;
    let retry = |server: &Server| {
        server
            .client
            .post(format!("{}/api/v1/clients", server.base))
            .bearer_auth(&key)
            .header("idempotency-key", "killed-1")
            .json(&json!({"name": "Killed"}))
            .send()
    };
    // PostgreSQL notices the dead connection and rolls its transaction back; until then the key
    // is held (409, "still being processed").
    let mut answer = None;
    for _ in 0..100 {
        let res = retry(&server).await.unwrap();
        if res.status() != 409 {
            answer = Some(res);
            break;
        }
        let body = res.text().await.unwrap();
        assert!(body.contains("still being processed"), "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let res = answer.expect("the key was released");
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(clients_named("Killed").await, 1);
    let again = retry(&server).await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(clients_named("Killed").await, 1);
}
