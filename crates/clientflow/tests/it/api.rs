//! The public API over real HTTP: round trips, filters and the page cap, problem+json for every
//! kind of bad request, Idempotency-Key, mass assignment, cross-reference attacks, bad keys,
//! the permission matrix over every API route, and the OpenAPI document against the route table.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use clientflow::access::api_key::{self as keys, NewKey};
use clientflow::access::role::{Permission, PermissionSet, Role, admin_bound, default_permissions};
use clientflow::access::route::{Access, Surface};
use clientflow_test_support::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{
    Res, Tenant, add_member, api_key, count, ctx, delete, get, patch, post, send, send_raw, tenant, upload,
};
use crate::support::work::{approve_entry, insert_time, week_seen};

#[tokio::test]
async fn crud_round_trips_over_http() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "crud").await;
    let (key_id, key) = api_key(&app, &t, "admin", None).await;

    // Clients.
    let res =
        post(&app, "/api/v1/clients", &key, json!({"name": "Acme", "company": "Acme Ltd", "email": "a@acme.test"}))
            .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let client = res.id();
    let location = res.header("location").unwrap().to_string();
    assert_eq!(location, format!("/api/v1/clients/{client}"));
    let res = get(&app, &location, &key).await;
    assert_eq!((res.status, res.body["data"]["name"].as_str()), (200, Some("Acme")));
    let res = patch(&app, &location, &key, json!({"phone": "+44 1"})).await;
    assert_eq!(
        (res.status, res.body["data"]["phone"].as_str(), res.body["data"]["name"].as_str()),
        (200, Some("+44 1"), Some("Acme"))
    );
    let res = get(&app, "/api/v1/clients?q=acme", &key).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(res.body["pagination"]["total"], 1);
    let res = post(&app, &format!("{location}/archive"), &key, json!({})).await;
    assert_eq!((res.status, res.body["data"]["status"].as_str()), (200, Some("archived")));
    assert_eq!(get(&app, "/api/v1/clients?q=acme", &key).await.body["pagination"]["total"], 0);
    assert_eq!(get(&app, "/api/v1/clients?q=acme&status=archived", &key).await.body["pagination"]["total"], 1);
    let res = post(&app, &format!("{location}/restore"), &key, json!({})).await;
    assert_eq!(res.body["data"]["status"].as_str(), Some("active"));

    // Projects on that client, with their board.
    let res =
        post(&app, "/api/v1/projects", &key, json!({"name": "Website", "client_id": client, "budget_minor": 500000}))
            .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let project = res.id();
    assert_eq!(res.header("location").unwrap(), format!("/api/v1/projects/{project}"));
    let res = get(&app, &format!("/api/v1/projects?client_id={client}"), &key).await;
    assert_eq!(res.body["data"][0]["id"].as_str(), Some(project.as_str()));
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"status": "on_hold"})).await;
    assert_eq!(res.body["data"]["status"].as_str(), Some("on_hold"));
    let columns = get(&app, &format!("/api/v1/projects/{project}/columns"), &key).await;
    assert_eq!(columns.body["data"].as_array().unwrap().len(), 3, "{}", columns.body);
    let done_column = columns.body["data"][2]["id"].as_str().unwrap().to_string();

    // Tasks with an assignee and a subtask.
    let res = post(
        &app,
        "/api/v1/tasks",
        &key,
        json!({"project_id": project, "title": "Launch", "assignees": [t.admin], "due_date": "2030-01-31"}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let task = res.id();
    assert_eq!(res.body["data"]["assignees"], json!([t.admin]));
    assert_eq!(res.body["data"]["due_date"], "2030-01-31", "dates are ISO 8601, as documented");
    let res =
        post(&app, "/api/v1/tasks", &key, json!({"project_id": project, "title": "Copy", "parent_id": task})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let subtask = res.id();
    let res = get(&app, &format!("/api/v1/tasks/{task}"), &key).await;
    assert_eq!(res.body["data"]["subtasks"][0]["id"].as_str(), Some(subtask.as_str()));
    let res =
        patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"status": "done", "column_id": done_column})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["column_id"].as_str(), Some(done_column.as_str()));
    let filtered =
        get(&app, &format!("/api/v1/tasks?project_id={project}&status=done&assignee={}", t.admin), &key).await;
    let ids: Vec<&str> = filtered.body["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![task.as_str()]);
    assert_eq!(filtered.body["pagination"]["total"], Value::Null);
    let res = get(&app, "/api/v1/tasks?q=cop", &key).await;
    assert_eq!(res.body["data"][0]["id"].as_str(), Some(subtask.as_str()));

    // Comments.
    let res = post(&app, &format!("/api/v1/tasks/{task}/comments"), &key, json!({"body": "Shipped"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let comment_url = res.header("location").unwrap().to_string();
    let res = get(&app, &comment_url, &key).await;
    assert_eq!((res.status, res.body["data"]["body"].as_str()), (200, Some("Shipped")));
    let res = get(&app, &format!("/api/v1/tasks/{task}/comments"), &key).await;
    assert_eq!(res.body["pagination"]["total"], 1);

    // Time, recorded for the member behind the key.
    let res =
        post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "task_id": task, "minutes": 90})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["data"]["user_id"].as_str(), Some(t.admin.to_string().as_str()));
    let entry_url = res.header("location").unwrap().to_string();
    assert_eq!(get(&app, &entry_url, &key).await.body["data"]["minutes"], 90);
    assert_eq!(
        get(&app, &format!("/api/v1/time-entries?task_id={task}"), &key).await.body["data"].as_array().unwrap().len(),
        1
    );
    assert_eq!(delete(&app, &entry_url, &key).await.status, 204);
    assert_eq!(get(&app, &entry_url, &key).await.status, 404);

    // Invoices: a draft, edited, sent, paid; another voided; a third deleted.
    let lines = json!([{"description": "Design", "quantity_milli": 1500, "unit_price_minor": 10000}]);
    let res =
        post(&app, "/api/v1/invoices", &key, json!({"client_id": client, "currency": "EUR", "lines": lines})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let invoice = res.id();
    assert_eq!(
        (res.body["data"]["total_minor"].as_i64(), res.body["data"]["lines"].as_array().map(Vec::len)),
        (Some(15000), Some(1))
    );
    let res = patch(&app, &format!("/api/v1/invoices/{invoice}"), &key, json!({"tax_rate_bp": 2000})).await;
    assert_eq!(res.body["data"]["total_minor"], 18000, "{}", res.body);
    let res = post(&app, &format!("/api/v1/invoices/{invoice}/send"), &key, json!({})).await;
    assert_eq!((res.status, res.body["data"]["number"].as_i64()), (200, Some(1)), "{}", res.body);
    patch(&app, &format!("/api/v1/invoices/{invoice}"), &key, json!({"notes": "late"})).await.assert_problem(409);
    let res = post(&app, &format!("/api/v1/invoices/{invoice}/pay"), &key, json!({})).await;
    assert_eq!(res.body["data"]["status"].as_str(), Some("paid"));
    let other = post(&app, "/api/v1/invoices", &key, json!({"client_id": client, "lines": lines})).await.id();
    let res = post(&app, &format!("/api/v1/invoices/{other}/void"), &key, json!({})).await;
    assert_eq!(res.body["data"]["status"].as_str(), Some("void"));
    let draft = post(&app, "/api/v1/invoices", &key, json!({"client_id": client})).await.id();
    assert_eq!(delete(&app, &format!("/api/v1/invoices/{draft}"), &key).await.status, 204);
    let res = get(&app, "/api/v1/invoices?status=paid", &key).await;
    assert_eq!(res.body["pagination"]["total"], 1);

    // Files: metadata, a signed link, deletion.
    let p: clientflow::platform::ids::ProjectId = project.parse().unwrap();
    let up = clientflow::work::files::Upload {
        project_id: p,
        task_id: None,
        name: "brief.txt",
        bytes: b"the brief".to_vec(),
        shared_with_client: false,
    };
    let meta = clientflow::work::files::upload(
        &app.app_db,
        &app.state.storage,
        &app.state.keys,
        1 << 20,
        &ctx(&app),
        &t.org.principal,
        up,
    )
    .await
    .unwrap();
    let res = get(&app, &format!("/api/v1/files?project_id={project}"), &key).await;
    assert_eq!(res.body["data"][0]["name"].as_str(), Some("brief.txt"));
    assert!(res.body["data"][0].get("download_url").is_none(), "links are handed out one file at a time");
    let res = get(&app, &format!("/api/v1/files/{}", meta.id), &key).await;
    let url = res.body["data"]["download_url"].as_str().unwrap();
    assert!(url.contains(&format!("/files/{}/{}?expires=", t.org.id, meta.id)) && url.contains("signature="), "{url}");
    let expires = time::OffsetDateTime::parse(
        res.body["data"]["download_url_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires - app.clock.now_utc() <= time::Duration::minutes(app.config.files.link_minutes.into()));
    assert_eq!(delete(&app, &format!("/api/v1/files/{}", meta.id), &key).await.status, 204);

    // Deleting what's left.
    assert_eq!(delete(&app, &format!("/api/v1/tasks/{subtask}"), &key).await.status, 204);
    assert_eq!(delete(&app, &format!("/api/v1/projects/{project}"), &key).await.status, 204);
    assert_eq!(get(&app, &format!("/api/v1/tasks/{task}"), &key).await.status, 404);
    delete(&app, &location, &key).await.assert_problem(409); // it still has invoices
    let spare = post(&app, "/api/v1/clients", &key, json!({"name": "Spare"})).await.id();
    assert_eq!(delete(&app, &format!("/api/v1/clients/{spare}"), &key).await.status, 204);

    // Every write was audited as the key, with the request's id.
    let mut db = app.db.admin_conn().await;
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor_type, actor_id, action FROM audit_events WHERE organization_id = $1 AND seq > 0 ORDER BY seq",
    )
    .bind(t.org.id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    let by_key: Vec<&str> = events
        .iter()
        .filter(|(ty, id, _)| ty == "api_key" && *id == key_id.to_string())
        .map(|e| e.2.as_str())
        .collect();
    for action in [
        "client.created",
        "client.updated",
        "client.archived",
        "client.restored",
        "client.deleted",
        "project.created",
        "project.updated",
        "project.deleted",
        "task.created",
        "task.updated",
        "task.deleted",
        "comment.created",
        "time.recorded",
        "time.deleted",
        "invoice.created",
        "invoice.updated",
        "invoice.sent",
        "invoice.paid",
        "invoice.voided",
        "invoice.deleted",
        "file.deleted",
    ] {
        assert!(by_key.contains(&action), "{action} not audited as the API key: {by_key:?}");
    }
    let request_ids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND actor_type = 'api_key' AND request_id = ''",
    )
    .bind(t.org.id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(request_ids, 0, "API audit events carry the request id");
}

#[tokio::test]
async fn lists_filter_and_cap_their_pages() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "pages").await;
    let (_, key) = api_key(&app, &t, "manager", None).await;
    {
        let mut tx = clientflow::access::OrgTx::begin(&app.app_db, &t.org.principal).await.unwrap();
        for i in 0..120 {
            clientflow::work::clients::repo::create(&mut tx, &format!("Bulk {i:03}")).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let res = get(&app, "/api/v1/clients?limit=1000", &key).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["data"].as_array().unwrap().len(), 100);
    assert_eq!(res.body["pagination"], json!({"limit": 100, "offset": 0, "total": 121, "next_offset": 100}));
    let res = get(&app, "/api/v1/clients?limit=1000&offset=100", &key).await;
    assert_eq!(res.body["data"].as_array().unwrap().len(), 21);
    assert_eq!(res.body["pagination"]["next_offset"], Value::Null);
    let res = get(&app, "/api/v1/clients", &key).await;
    assert_eq!(res.body["data"].as_array().unwrap().len(), 50, "default page size");
    let res = get(&app, "/api/v1/clients?q=bulk%20011", &key).await;
    assert_eq!(res.body["data"][0]["name"].as_str(), Some("Bulk 011"));
    assert_eq!(res.body["pagination"]["total"], 1);
    // `%` and `_` in a search are literal characters, not patterns.
    assert_eq!(get(&app, "/api/v1/clients?q=%25", &key).await.body["pagination"]["total"], 0);

    // Uncounted lists: full pages point at the next one.
    let project = post(&app, "/api/v1/projects", &key, json!({"name": "Many tasks"})).await.id();
    for i in 0..3 {
        post(&app, "/api/v1/tasks", &key, json!({"project_id": project, "title": format!("T{i}")})).await;
    }
    let res = get(&app, "/api/v1/tasks?limit=2", &key).await;
    assert_eq!(res.body["pagination"], json!({"limit": 2, "offset": 0, "total": null, "next_offset": 2}));
    let res = get(&app, "/api/v1/tasks?limit=2&offset=2", &key).await;
    assert_eq!(res.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(res.body["pagination"]["next_offset"], Value::Null);
    assert!(get(&app, "/api/v1/tasks?limit=1000", &key).await.body["data"].as_array().unwrap().len() <= 100);

    // Bad parameters are named.
    get(&app, "/api/v1/clients?limit=0", &key).await.assert_problem_field(422, "limit");
    get(&app, "/api/v1/clients?limit=ten", &key).await.assert_problem_field(422, "limit");
    get(&app, "/api/v1/clients?offset=-1", &key).await.assert_problem_field(422, "offset");
    get(&app, "/api/v1/clients?stauts=archived", &key).await.assert_problem_field(422, "stauts");
    get(&app, "/api/v1/clients?status=gone", &key).await.assert_problem_field(422, "status");
    get(&app, "/api/v1/tasks?project_id=nope", &key).await.assert_problem_field(422, "project_id");
    get(&app, "/api/v1/tasks?status=finished", &key).await.assert_problem_field(422, "status");
    get(&app, "/api/v1/invoices?status=lost", &key).await.assert_problem_field(422, "status");
}

#[tokio::test]
async fn every_bad_request_is_a_problem_naming_what_was_wrong() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "problems").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let json_body = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    let raw = |path: &'static str, body: Option<(&'static str, Vec<u8>)>| {
        let app = &app;
        let key = key.clone();
        async move { send_raw(app, Method::POST, path, Some(&key), body, &[]).await }
    };

    // Wrong type, unknown field, missing field (nested), invalid value, bad date.
    raw("/api/v1/clients", json_body(r#"{"name": 42}"#)).await.assert_problem_field(422, "name");
    raw("/api/v1/clients", json_body(r#"{"name": "x", "colour": "red"}"#)).await.assert_problem_field(422, "colour");
    let res = raw(
        "/api/v1/invoices",
        json_body(
            &json!({"client_id": t.org.client, "lines": [{"description": "x", "quantity_milli": 1}]}).to_string(),
        ),
    )
    .await;
    res.assert_problem_field(422, "lines[0].unit_price_minor");
    let res = raw(
        "/api/v1/invoices",
        json_body(
            &json!({"client_id": t.org.client, "lines": [{"description": "x", "quantity_milli": "lots", "unit_price_minor": 1}]})
                .to_string(),
        ),
    )
    .await;
    res.assert_problem_field(422, "lines[0].quantity_milli");
    raw("/api/v1/clients", json_body(r#"{"name": ""}"#)).await.assert_problem_field(422, "name");
    raw("/api/v1/clients", json_body(r#"{"name": "x", "email": "not-an-email"}"#))
        .await
        .assert_problem_field(422, "email");
    raw("/api/v1/projects", json_body(r#"{"name": "x", "due_date": "31/01/2030"}"#))
        .await
        .assert_problem_field(422, "due_date");
    raw("/api/v1/tasks", json_body(r#"{"title": "x"}"#)).await.assert_problem_field(422, "project_id");
    raw("/api/v1/clients", json_body(r#"["name"]"#)).await.assert_problem_field(422, "body");

    // Not JSON: malformed, truncated, trailing garbage, empty, wrong content type.
    raw("/api/v1/clients", json_body(r#"{"name": "x",}"#)).await.assert_problem_field(400, "body");
    raw("/api/v1/clients", json_body(r#"{"name": "#)).await.assert_problem_field(400, "body");
    raw("/api/v1/clients", json_body(r#"{"name": "x"} {}"#)).await.assert_problem_field(400, "body");
    raw("/api/v1/clients", json_body("")).await.assert_problem_field(400, "body");
    raw("/api/v1/clients", Some(("text/plain", br#"{"name": "x"}"#.to_vec())))
        .await
        .assert_problem_field(415, "Content-Type");
    raw("/api/v1/clients", Some(("application/x-www-form-urlencoded", b"name=x".to_vec())))
        .await
        .assert_problem_field(415, "Content-Type");
    raw("/api/v1/clients", None).await.assert_problem_field(415, "Content-Type");
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(app.config.server.body_limit_bytes + 1));
    raw("/api/v1/clients", json_body(&big)).await.assert_problem(413);

    // Ids: malformed and unknown are both simply not found; routes and methods likewise.
    get(&app, "/api/v1/clients/not-a-uuid", &key).await.assert_problem(404);
    get(&app, &format!("/api/v1/clients/{}", Uuid::now_v7()), &key).await.assert_problem(404);
    get(&app, "/api/v1/nothing-here", &key).await.assert_problem(404);
    send(&app, Method::PUT, "/api/v1/clients", &key, Some(json!({}))).await.assert_problem(405);

    // State conflicts and validation from the services come through the same way.
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client})).await;
    post(&app, &format!("/api/v1/invoices/{}/send", res.id()), &key, json!({})).await.assert_problem(409);
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "tax_rate_bp": 20000})).await;
    res.assert_problem_field(422, "tax_rate_bp");

    // Nothing above was written.
    assert_eq!(count(&app, "SELECT count(*) FROM clients").await, 1);
}

#[tokio::test]
async fn idempotency_keys_replay_conflict_and_belong_to_one_api_key() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "idem").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let (_, other_key) = api_key(&app, &t, "manager", None).await;
    let call = |key: &str, idem: &str, body: &str| {
        let (app, key, idem, body) = (&app, key.to_string(), idem.to_string(), body.to_string());
        async move {
            send_raw(
                app,
                Method::POST,
                "/api/v1/clients",
                Some(&key),
                Some(("application/json", body.into_bytes())),
                &[("idempotency-key", &idem)],
            )
            .await
        }
    };
    let clients = || count(&app, "SELECT count(*) FROM clients");

    let first = call(&key, "k-1", r#"{"name": "Once", "company": "C"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    // The same request again (formatted differently): the stored response, nothing done.
    let again = call(&key, "k-1", "{\n  \"company\": \"C\",\n  \"name\": \"Once\"\n}").await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(clients().await, 2);
    // The same key with another body: 409, nothing done.
    let res = call(&key, "k-1", r#"{"name": "Twice"}"#).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("different request"), "{}", res.body);
    // The same key on another path is another request too.
    let res = send_raw(
        &app,
        Method::POST,
        "/api/v1/projects",
        Some(&key),
        Some(("application/json", br#"{"name": "Once", "company": "C"}"#.to_vec())),
        &[("idempotency-key", "k-1")],
    )
    .await;
    res.assert_problem(409);
    // Another API key has its own keys.
    let theirs = call(&other_key, "k-1", r#"{"name": "Once", "company": "C"}"#).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.id(), first.id());
    assert_eq!(clients().await, 3);
    // The structured-field form of the header names the same key.
    let quoted = call(&key, "\"k-1\"", r#"{"name": "Once", "company": "C"}"#).await;
    assert_eq!(quoted.header("idempotent-replayed"), Some("true"));

    // Errors are not stored: the key stays free for the corrected request.
    call(&key, "k-2", r#"{"name": ""}"#).await.assert_problem_field(422, "name");
    assert_eq!(call(&key, "k-2", r#"{"name": "Fixed"}"#).await.status, 201);
    // A malformed key is refused before anything runs.
    call(&key, "has spaces", r#"{"name": "x"}"#).await.assert_problem_field(400, "Idempotency-Key");
    call(&key, &"k".repeat(256), r#"{"name": "x"}"#).await.assert_problem_field(400, "Idempotency-Key");
    assert_eq!(clients().await, 4);

    // After 24 hours a key may be used again, for anything.
    app.clock.advance(time::Duration::hours(25));
    let res = call(&key, "k-1", r#"{"name": "Tomorrow"}"#).await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None));
    assert_eq!(clients().await, 5);

    // A duplicate while the first request is still running: 409, and only one is created.
    // The test holds a lock that makes inserts into `clients` wait.
    let mut locker = app.db.admin_conn().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE clients IN SHARE MODE").execute(&mut locker).await.unwrap();
    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/api/v1/clients");
        let key = key.clone();
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "slow")
                .json(&json!({"name": "Slow"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let mut pending = false;
    for _ in 0..100 {
        // The first request holds its key's lock (its record is not committed before its work).
        if count(
            &app,
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
        )
        .await
            >= 1
        {
            pending = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(pending, "the first request never registered its key");
    let res = call(&key, "slow", r#"{"name": "Slow"}"#).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("still being processed"), "{}", res.body);
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    assert_eq!(slow.await.unwrap(), 201);
    assert_eq!(call(&key, "slow", r#"{"name": "Slow"}"#).await.header("idempotent-replayed"), Some("true"));
    assert_eq!(count(&app, "SELECT count(*) FROM clients WHERE name = 'Slow'").await, 1);

    // A burst of identical requests: exactly one does the work.
    let burst: Vec<_> = (0..8).map(|_| call(&key, "burst", r#"{"name": "Burst"}"#)).collect();
    let statuses: Vec<u16> = futures::future::join_all(burst).await.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| matches!(s, 201 | 409)), "{statuses:?}");
    assert_eq!(count(&app, "SELECT count(*) FROM clients WHERE name = 'Burst'").await, 1, "{statuses:?}");
}

#[tokio::test]
async fn mass_assignment_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "mass").await;
    let other = tenant(&app, "victim").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let audit_before = count(&app, "SELECT count(*) FROM audit_events").await;
    let clients_before = count(&app, "SELECT count(*) FROM clients").await;
    let cases = [
        (
            Method::POST,
            "/api/v1/clients".to_string(),
            json!({"name": "x", "organization_id": other.org.id}),
            "organization_id",
        ),
        (Method::POST, "/api/v1/clients".to_string(), json!({"name": "x", "id": Uuid::now_v7()}), "id"),
        (Method::POST, "/api/v1/clients".to_string(), json!({"name": "x", "role": "owner"}), "role"),
        (Method::POST, "/api/v1/clients".to_string(), json!({"name": "x", "owner": true}), "owner"),
        (Method::PATCH, format!("/api/v1/projects/{}", t.org.project), json!({"is_owner": true}), "is_owner"),
        (
            Method::POST,
            "/api/v1/tasks".to_string(),
            json!({"project_id": t.org.project, "title": "x", "organization_id": other.org.id}),
            "organization_id",
        ),
        (Method::POST, "/api/v1/clients".to_string(), json!({"name": "x", "status": "archived"}), "status"),
        (
            Method::PATCH,
            format!("/api/v1/clients/{}", t.org.client),
            json!({"organization_id": other.org.id}),
            "organization_id",
        ),
        (Method::PATCH, format!("/api/v1/projects/{}", t.org.project), json!({"id": Uuid::now_v7()}), "id"),
        (
            Method::POST,
            "/api/v1/projects".to_string(),
            json!({"name": "x", "created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
        ),
        (
            Method::POST,
            "/api/v1/tasks".to_string(),
            json!({"project_id": t.org.project, "title": "x", "created_by": t.admin}),
            "created_by",
        ),
        (Method::POST, "/api/v1/invoices".to_string(), json!({"client_id": t.org.client, "status": "paid"}), "status"),
        (Method::POST, "/api/v1/invoices".to_string(), json!({"client_id": t.org.client, "number": 7}), "number"),
        (
            Method::POST,
            "/api/v1/invoices".to_string(),
            json!({"client_id": t.org.client, "lines": [{"description": "x", "quantity_milli": 1, "unit_price_minor": 1, "amount_minor": 999}]}),
            "lines[0].amount_minor",
        ),
        (
            Method::POST,
            "/api/v1/time-entries".to_string(),
            json!({"project_id": t.org.project, "minutes": 5, "user_id": t.admin}),
            "user_id",
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{}/comments", Uuid::now_v7()),
            json!({"body": "x", "api_key_id": Uuid::now_v7()}),
            "api_key_id",
        ),
    ];
    for (method, path, body, field) in cases {
        let res = send(&app, method.clone(), &path, &key, Some(body)).await;
        res.assert_problem_field(422, field);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM clients").await, clients_before);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM tasks").await + count(&app, "SELECT count(*) FROM invoices").await, 0);
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_events").await,
        audit_before,
        "nothing audited, nothing written"
    );
}

#[tokio::test]
async fn cross_reference_attacks_through_the_api_fail_cleanly() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "attacker").await;
    let b = tenant(&app, "target").await;
    let (_, key) = api_key(&app, &a, "admin", None).await;
    let (_, b_key) = api_key(&app, &b, "admin", None).await;
    let b_project = post(&app, "/api/v1/projects", &b_key, json!({"name": "B"})).await.id();
    let b_task = post(&app, "/api/v1/tasks", &b_key, json!({"project_id": b_project, "title": "B task"})).await.id();
    let p1 = post(&app, "/api/v1/projects", &key, json!({"name": "One"})).await.id();
    let p2 = post(&app, "/api/v1/projects", &key, json!({"name": "Two"})).await.id();
    let p2_column = get(&app, &format!("/api/v1/projects/{p2}/columns"), &key).await.body["data"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = post(&app, "/api/v1/tasks", &key, json!({"project_id": p1, "title": "Mine"})).await.id();
    let other_task = post(&app, "/api/v1/tasks", &key, json!({"project_id": p2, "title": "Theirs"})).await.id();
    let member_elsewhere = add_member(&app, &b.org, "member").await;
    let member_not_in_project = add_member(&app, &a.org, "member").await;
    let client_user = add_member(&app, &a.org, "manager").await;
    {
        let mut db = app.db.admin_conn().await;
        sqlx::query("UPDATE memberships SET role = 'client', client_id = $2 WHERE user_id = $1")
            .bind(client_user)
            .bind(a.org.client)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let before = count(&app, "SELECT count(*) FROM audit_events").await;

    let attacks: Vec<(&str, Res, &str)> = vec![
        (
            "project on another tenant's client",
            post(&app, "/api/v1/projects", &key, json!({"name": "x", "client_id": b.org.client})).await,
            "client_id",
        ),
        (
            "moving a project to another tenant's client",
            patch(&app, &format!("/api/v1/projects/{p1}"), &key, json!({"client_id": b.org.client})).await,
            "client_id",
        ),
        (
            "task in another tenant's project",
            post(&app, "/api/v1/tasks", &key, json!({"project_id": b_project, "title": "x"})).await,
            "project_id",
        ),
        (
            "subtask of another tenant's task",
            post(&app, "/api/v1/tasks", &key, json!({"project_id": p1, "title": "x", "parent_id": b_task})).await,
            "parent_id",
        ),
        (
            "subtask of another project's task",
            patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"parent_id": other_task})).await,
            "parent_id",
        ),
        (
            "assigning another tenant's member",
            patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"assignees": [member_elsewhere]})).await,
            "assignees",
        ),
        (
            "assigning a member outside the project",
            post(
                &app,
                "/api/v1/tasks",
                &key,
                json!({"project_id": p1, "title": "x", "assignees": [member_not_in_project]}),
            )
            .await,
            "assignees",
        ),
        (
            "assigning a Client user",
            patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"assignees": [client_user]})).await,
            "assignees",
        ),
        (
            "moving a task to another project's column",
            patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"column_id": p2_column})).await,
            "column_id",
        ),
        (
            "moving a task to another project",
            patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"project_id": p2})).await,
            "project_id",
        ),
        (
            "invoicing another tenant's client",
            post(&app, "/api/v1/invoices", &key, json!({"client_id": b.org.client})).await,
            "client_id",
        ),
        (
            "time on another tenant's project",
            post(&app, "/api/v1/time-entries", &key, json!({"project_id": b_project, "minutes": 5})).await,
            "project_id",
        ),
        (
            "time on another project's task",
            post(&app, "/api/v1/time-entries", &key, json!({"project_id": p1, "task_id": other_task, "minutes": 5}))
                .await,
            "task_id",
        ),
        (
            "comment on another tenant's task",
            post(&app, &format!("/api/v1/tasks/{b_task}/comments"), &key, json!({"body": "x"})).await,
            "",
        ),
    ];
    for (what, res, field) in attacks {
        assert!((400..500).contains(&res.status), "{what}: {} {}", res.status, res.body);
        if field.is_empty() {
            res.assert_problem(404);
        } else {
            res.assert_problem_field(422, field);
        }
    }
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events").await, before, "no attack wrote anything");
    // B's task is untouched and has no comments.
    assert_eq!(get(&app, &format!("/api/v1/tasks/{b_task}/comments"), &b_key).await.body["pagination"]["total"], 0);
}

#[tokio::test]
async fn bad_keys_fail_alike_and_foreign_ids_are_not_found() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "keyholder").await;
    let b = tenant(&app, "elsewhere").await;
    let (_, good) = api_key(&app, &a, "admin", None).await;
    let (revoked_id, revoked) = api_key(&app, &a, "admin", None).await;
    keys::revoke(&app.app_db, &ctx(&app), &a.org.principal, revoked_id).await.unwrap();
    let expiring = keys::create_for(
        &app.app_db,
        &ctx(&app),
        &a.org.principal,
        a.admin.to_string().parse().unwrap(),
        &NewKey { name: "short".into(), role: "admin".into(), permissions: None, expires_in_days: Some(1) },
    )
    .await
    .unwrap()
    .secret;
    let (demoted_id, demoted) = api_key(&app, &a, "admin", None).await;
    let (_, b_key) = api_key(&app, &b, "admin", None).await;
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = format!("cf_live_{}", "a".repeat(43));

    // The creator of `demoted` loses the Admin role: the key stops working.
    {
        let creator: Uuid = Uuid::now_v7();
        let mut db = app.db.admin_conn().await;
        sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'demoted@example.com')")
            .bind(creator)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'member')")
            .bind(a.org.id)
            .bind(creator)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE api_keys SET created_by = $1 WHERE id = $2")
            .bind(creator)
            .bind(demoted_id)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let path = format!("/api/v1/clients/{}", a.org.client);
    assert_eq!(get(&app, &path, &good).await.status, 200);
    assert_eq!(get(&app, &path, &expiring).await.status, 200);
    app.clock.advance(time::Duration::days(2));

    let mut bodies = BTreeSet::new();
    let attempts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no header", vec![]),
        ("empty bearer", vec![("authorization", "Bearer ".into())]),
        ("basic scheme", vec![("authorization", format!("Basic {good}"))]),
        ("no scheme", vec![("authorization", good.clone())]),
        ("malformed", vec![("authorization", "Bearer cf_live_short".into())]),
        ("wrong prefix", vec![("authorization", format!("Bearer {}", good.replace("cf_live_", "cf_test_")))]),
        ("tampered", vec![("authorization", format!("Bearer {tampered}"))]),
        ("unknown", vec![("authorization", format!("Bearer {unknown}"))]),
        ("revoked", vec![("authorization", format!("Bearer {revoked}"))]),
        ("expired", vec![("authorization", format!("Bearer {expiring}"))]),
        ("creator demoted", vec![("authorization", format!("Bearer {demoted}"))]),
        ("session cookie instead", vec![("cookie", "__Host-cf_session=abc".into())]),
    ];
    for (what, headers) in &attempts {
        for target in [path.as_str(), "/api/v1/clients"] {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = send_raw(&app, Method::GET, target, None, None, &hs).await;
            res.assert_problem(401);
            assert_eq!(res.header("www-authenticate"), Some("Bearer realm=\"ClientFlow API\""), "{what}");
            let mut body = res.body.clone();
            body["request_id"] = Value::Null;
            bodies.insert(body.to_string());
        }
    }
    assert_eq!(bodies.len(), 1, "every bad key must get the same answer: {bodies:#?}");

    // A valid key of another organization: A's ids are simply not found, exactly like ids that
    // don't exist, and A's records are in none of its lists.
    let mut not_found = BTreeSet::new();
    for path in [
        format!("/api/v1/clients/{}", a.org.client),
        format!("/api/v1/clients/{}", Uuid::now_v7()),
        format!("/api/v1/projects/{}", a.org.project),
        format!("/api/v1/projects/{}", Uuid::now_v7()),
    ] {
        let res = get(&app, &path, &b_key).await;
        res.assert_problem(404);
        let mut body = res.body.clone();
        body["request_id"] = Value::Null;
        not_found.insert(body.to_string());
    }
    assert_eq!(not_found.len(), 1, "{not_found:#?}");
    patch(&app, &format!("/api/v1/clients/{}", a.org.client), &b_key, json!({"name": "pwned"}))
        .await
        .assert_problem(404);
    delete(&app, &format!("/api/v1/projects/{}", a.org.project), &b_key).await.assert_problem(404);
    let listed = get(&app, "/api/v1/clients?status=all", &b_key).await;
    assert!(listed.body["data"].as_array().unwrap().iter().all(|c| c["organization_id"] == json!(b.org.id)));
}

/// Fresh records in `org` for every path parameter of the API routes, so that a case that
/// deletes or changes something never affects the next one.
async fn fresh_ids(app: &TestApp, t: &Tenant) -> BTreeMap<&'static str, String> {
    let mut db = app.db.admin_conn().await;
    let org = t.org.id;
    let id = || Uuid::now_v7();
    let (bare_client, client, project, column, task, comment, entry, invoice, file_project, file) =
        (id(), id(), id(), id(), id(), id(), id(), id(), id(), id());
    let (sent_invoice, part_paid_invoice, payment) = (id(), id(), id());
    let (timer, billable_entry, time_invoice) = (id(), id(), id());
    let (repeat, expense) = (id(), id());
    let statements: Vec<(&str, Vec<Uuid>)> = vec![
        ("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, 'Fixture')", vec![bare_client]),
        (
            "INSERT INTO clients (organization_id, id, name, email) VALUES ($1, $2, 'Fixture with work', 'billing@work.test')",
            vec![client],
        ),
        (
            "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, 'Fixture')",
            vec![project, client],
        ),
        ("INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, 'Files')", vec![file_project]),
        (
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())",
            vec![project, t.admin],
        ),
        (
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())",
            vec![file_project, t.admin],
        ),
        (
            "INSERT INTO board_columns (organization_id, id, project_id, name, position) VALUES ($1, $2, $3, 'To do', 0)",
            vec![column, project],
        ),
        (
            "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'Fixture', now(), now())",
            vec![task, project, column],
        ),
        (
            // Written by the member behind every matrix key, so it is each key's own.
            "INSERT INTO comments (organization_id, id, task_id, author_id, body, created_at) \
             VALUES ($1, $2, $3, $4, 'Fixture', now())",
            vec![comment, task, t.admin],
        ),
        (
            "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, created_at) \
             VALUES ($1, $2, $3, $4, 30, current_date, now())",
            vec![entry, project, t.admin],
        ),
        (
            "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at) \
             VALUES ($1, $2, $3, 'EUR', current_date, current_date + 30, now())",
            vec![invoice, client],
        ),
        (
            "INSERT INTO invoice_lines (organization_id, invoice_id, position, description, quantity_milli, unit_price_minor, amount_minor) \
             VALUES ($1, $2, 0, 'Fixture', 1000, 100, 100)",
            vec![invoice],
        ),
        (
            "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at, status, number, sent_at, \
                                   subtotal_minor, total_minor) \
             VALUES ($1, $2, $3, 'EUR', current_date, current_date + 30, now(), 'sent', \
                     (SELECT greatest(max(number), 1000000) + 1 FROM invoices WHERE organization_id = $1), now(), 100, 100)",
            vec![sent_invoice, client],
        ),
        (
            "INSERT INTO invoice_lines (organization_id, invoice_id, position, description, quantity_milli, unit_price_minor, amount_minor) \
             VALUES ($1, $2, 0, 'Fixture', 1000, 100, 100)",
            vec![sent_invoice],
        ),
        (
            // The draft repeats every month from tomorrow.
            "INSERT INTO invoice_repeats (organization_id, id, invoice_id, every, unit, starts_on, send, next_on, created_at) \
             VALUES ($1, $2, $3, 1, 'month', current_date + 1, false, current_date + 1, now())",
            vec![repeat, invoice],
        ),
        (
            // Sent, 1.00 EUR, 0.40 of it paid.
            "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at, status, number, sent_at, \
                                   subtotal_minor, total_minor) \
             VALUES ($1, $2, $3, 'EUR', current_date, current_date + 30, now(), 'sent', \
                     (SELECT greatest(max(number), 1000000) + 1 FROM invoices WHERE organization_id = $1), now(), 100, 100)",
            vec![part_paid_invoice, client],
        ),
        (
            "INSERT INTO invoice_payments (organization_id, id, invoice_id, amount_minor, paid_on, created_at) \
             VALUES ($1, $2, $3, 40, current_date, now())",
            vec![payment, part_paid_invoice],
        ),
        (
            // The key creator's running timer (one at most: a leftover one stays).
            "INSERT INTO timers (organization_id, id, user_id, project_id, started_at) VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT DO NOTHING",
            vec![timer, t.admin, project],
        ),
        (
            "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, created_at, billable, rate_minor) \
             VALUES ($1, $2, $3, $4, 90, current_date, now(), true, 12000)",
            vec![billable_entry, project, t.admin],
        ),
        (
            "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at) \
             VALUES ($1, $2, $3, 'EUR', current_date, current_date + 30, now())",
            vec![time_invoice, client],
        ),
        (
            // The key creator's, billable, in the currency of `time_invoice`.
            "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, amount_minor, currency, \
             billable, created_at) VALUES ($1, $2, $3, $4, current_date, 'Travel', 4250, 'EUR', true, now())",
            vec![expense, project, t.admin],
        ),
    ];
    for (sql, binds) in statements {
        let mut q = sqlx::query(sql).bind(org);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&mut db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    crate::support::work::insert_files(app, org, file_project, &[(file, "fixture.txt".into())], None).await;
    let (colleague, colleague_seen) = colleague_with_weeks(app, t).await;
    [
        ("colleague", colleague),
        // `{user}`: a person of the organization (the colleague).
        ("user", colleague),
        ("client", bare_client),
        ("work_client", client),
        ("project", project),
        ("task", task),
        ("comment", comment),
        ("time_entry", entry),
        ("expense", expense),
        ("invoice", invoice),
        ("sent_invoice", sent_invoice),
        ("part_paid_invoice", part_paid_invoice),
        ("payment", payment),
        ("time_invoice", time_invoice),
        ("file", file),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([("colleague_seen", colleague_seen)])
    .collect()
}

/// A fresh member of `t` other than the key creator, with 30 minutes awaiting approval in the
/// week of 2024-01-01 and 45 approved in the week of 2024-02-05 (in a fresh project): the
/// member, and what
/// `GET /api/v1/time-approvals` says of the first week (its `seen`).
async fn colleague_with_weeks(app: &TestApp, t: &Tenant) -> (Uuid, String) {
    // In a project of their own, which no other case deletes.
    let (colleague, project) = (Uuid::now_v7(), Uuid::now_v7());
    let mut db = app.db.admin_conn().await;
    for sql in [
        "INSERT INTO users (id, email) VALUES ($2, 'colleague-' || $2::text || '@example.com')",
        "INSERT INTO projects (organization_id, id, name) VALUES ($1, $3, 'Colleague')",
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'member')",
    ] {
        sqlx::query(sql).bind(t.org.id).bind(colleague).bind(project).execute(&mut db).await.unwrap();
    }
    let org = t.org.id.as_uuid();
    insert_time(app, org, project, colleague, "2024-01-03", 30, "").await;
    let approved = insert_time(app, org, project, colleague, "2024-02-06", 45, "").await;
    approve_entry(app, approved, t.admin).await;
    (colleague, week_seen(app, org, colleague, time::macros::date!(2024 - 01 - 01)).await)
}

/// The route's path with fresh ids of one organization; `fixtures` picks the record for a
/// parameter that needs one in a particular state (`{invoice}` already sent).
fn fill(path: &str, ids: &BTreeMap<&'static str, String>, fixtures: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (param, fixture) in fixtures {
        out = out.replace(&format!("{{{param}}}"), &ids[fixture]);
    }
    for (name, value) in ids {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    assert!(!out.contains('{'), "no fixture for a parameter of {path}: add one to fresh_ids");
    out
}

/// A valid body for every writing API route (ids from the caller's own organization, filled in
/// by [`body_for`]: `"$client"` is a client with work, `"$project"` a project), and the path
/// parameters that need a record in a particular state. A new writing route needs an entry
/// here: the matrix fails without one.
/// `("METHOD /path", JSON body or "", [(parameter, fixture)])`.
type ApiWrite = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

const API_WRITES: &[ApiWrite] = &[
    ("POST /api/v1/clients", r#"{"name": "Matrix", "company": "Matrix Ltd", "email": "m@matrix.test"}"#, &[]),
    ("PATCH /api/v1/clients/{client}", r#"{"name": "Matrix renamed", "notes": "edited"}"#, &[]),
    ("DELETE /api/v1/clients/{client}", "", &[]),
    ("POST /api/v1/clients/{client}/archive", "", &[]),
    ("POST /api/v1/clients/{client}/restore", "", &[]),
    ("POST /api/v1/projects", r#"{"name": "Matrix", "client_id": "$client", "budget_minor": 120000}"#, &[]),
    ("PATCH /api/v1/projects/{project}", r#"{"name": "Matrix renamed", "status": "on_hold"}"#, &[]),
    ("DELETE /api/v1/projects/{project}", "", &[]),
    ("POST /api/v1/projects/{project}/copy", r#"{"name": "Matrix copy", "start_date": "2031-01-06"}"#, &[]),
    ("POST /api/v1/tasks", r#"{"project_id": "$project", "title": "Matrix", "priority": "high"}"#, &[]),
    ("PATCH /api/v1/tasks/{task}", r#"{"title": "Matrix renamed", "status": "in_progress"}"#, &[]),
    ("DELETE /api/v1/tasks/{task}", "", &[]),
    ("POST /api/v1/tasks/{task}/comments", r#"{"body": "Matrix", "client_visible": true}"#, &[]),
    ("POST /api/v1/time-entries", r#"{"project_id": "$project", "minutes": 15, "note": "Matrix"}"#, &[]),
    ("DELETE /api/v1/time-entries/{time_entry}", "", &[]),
    (
        "POST /api/v1/expenses",
        r#"{"project_id": "$project", "category": "Travel", "amount_minor": 4250, "billable": true, "note": "Matrix"}"#,
        &[],
    ),
    ("PATCH /api/v1/expenses/{expense}", r#"{"amount_minor": 5000, "note": "Matrix"}"#, &[]),
    ("DELETE /api/v1/expenses/{expense}", "", &[]),
    ("POST /api/v1/invoices/{invoice}/expenses", "{}", &[("invoice", "time_invoice")]),
    (
        "POST /api/v1/invoices",
        r#"{"client_id": "$client", "currency": "EUR", "lines": [{"description": "Matrix", "quantity_milli": 1500, "unit_price_minor": 9999}]}"#,
        &[],
    ),
    ("PATCH /api/v1/invoices/{invoice}", r#"{"notes": "Matrix"}"#, &[]),
    ("DELETE /api/v1/invoices/{invoice}", "", &[]),
    ("POST /api/v1/invoices/{invoice}/send", "", &[]),
    ("POST /api/v1/invoices/{invoice}/pay", "", &[("invoice", "sent_invoice")]),
    ("POST /api/v1/invoices/{invoice}/void", "", &[("invoice", "sent_invoice")]),
    ("POST /api/v1/invoices/{invoice}/duplicate", "", &[("invoice", "sent_invoice")]),
    (
        "POST /api/v1/clients/{client}/statement/email",
        r#"{"from": "2026-01-01", "to": "2026-01-31"}"#,
        &[("client", "work_client")],
    ),
    // `invoice` repeats already; the sent one doesn't.
    (
        "POST /api/v1/invoices/{invoice}/repeat",
        r#"{"every": 2, "unit": "week", "ends_on": "2099-12-31"}"#,
        &[("invoice", "sent_invoice")],
    ),
    ("PATCH /api/v1/invoices/{invoice}/repeat", r#"{"paused": true, "ends_on": null}"#, &[]),
    ("DELETE /api/v1/invoices/{invoice}/repeat", "", &[]),
    (
        "POST /api/v1/invoices/{invoice}/payments",
        r#"{"amount_minor": 10, "note": "Matrix"}"#,
        &[("invoice", "sent_invoice")],
    ),
    ("DELETE /api/v1/invoices/{invoice}/payments/{payment}", "", &[("invoice", "part_paid_invoice")]),
    ("PATCH /api/v1/tasks/{task}/comments/{comment}", r#"{"body": "Matrix, edited"}"#, &[]),
    ("DELETE /api/v1/tasks/{task}/comments/{comment}", "", &[]),
    ("PATCH /api/v1/time-entries/{time_entry}", r#"{"minutes": 45, "note": "Matrix"}"#, &[]),
    ("POST /api/v1/timer/start", r#"{"project_id": "$project", "note": "Matrix"}"#, &[]),
    // Every case has a running timer of the key's creator to stop (fresh_ids starts one).
    ("POST /api/v1/timer/stop", "", &[]),
    // A fresh colleague of the key's creator, with a week awaiting approval and one approved.
    ("POST /api/v1/time-approvals/approve", r#"{"user_id": "$colleague", "week": "2024-01-01", "seen": "$seen"}"#, &[]),
    ("POST /api/v1/time-approvals/reopen", r#"{"user_id": "$colleague", "week": "2024-02-07"}"#, &[]),
    ("PUT /api/v1/workload/{user}/capacity", r#"{"weekly_capacity_minutes": 1920}"#, &[]),
    ("POST /api/v1/invoices/{invoice}/time", r#"{"group": "entry"}"#, &[("invoice", "time_invoice")]),
    // A multipart upload (the matrix sends one); no JSON body.
    ("POST /api/v1/files", "", &[]),
    ("PATCH /api/v1/files/{file}", r#"{"name": "matrix.txt", "shared_with_client": true}"#, &[]),
    ("DELETE /api/v1/files/{file}", "", &[]),
    (
        "PATCH /api/v1/settings/invoicing",
        r#"{"invoice_prefix": "MTX", "hourly_rate_minor": 12050, "payment_terms_days": 14}"#,
        &[],
    ),
];

/// The entry of a writing route (every route but GET must have one).
fn api_write(method: &Method, path: &str) -> Option<&'static ApiWrite> {
    let key = format!("{method} {path}");
    let found = API_WRITES.iter().find(|(k, _, _)| *k == key);
    assert!(
        method == Method::GET || found.is_some(),
        "{key} has no entry in API_WRITES: add a valid body so the matrix proves the route works"
    );
    found
}

/// The route's body, with the caller's own ids.
fn body_for(method: &Method, path: &str, own: &BTreeMap<&'static str, String>) -> Option<Value> {
    let (_, body, _) = api_write(method, path)?;
    if body.is_empty() {
        return None;
    }
    let filled = body
        .replace("$client", &own["work_client"])
        .replace("$project", &own["project"])
        .replace("$colleague", &own["colleague"])
        .replace("$seen", &own["colleague_seen"]);
    Some(serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{method} {path}: bad body: {e}")))
}

#[test]
fn every_writing_api_route_has_an_entry_and_every_entry_a_route() {
    let routes: Vec<String> = clientflow::routes::all()
        .into_iter()
        .filter(|r| matches!(r.access, Access::Api(_)))
        .map(|r| {
            api_write(&r.method, r.path);
            format!("{} {}", r.method, r.path)
        })
        .collect();
    for (k, _, _) in API_WRITES {
        assert!(routes.contains(&k.to_string()), "API_WRITES names {k}, which is not an API route");
    }
}

/// Every `Access::Api` route × keys of every grantable role, an explicit subset and a key whose
/// creator is now a Client × {own ids, another organization's ids}: 403 when the key lacks the
/// route's permission, 404 for foreign ids, and otherwise a success (2xx) with a valid body.
/// Prints how many cases ran.
#[tokio::test]
#[allow(clippy::print_stdout)] // the case count is part of the report
async fn the_api_matrix_over_every_route_and_key() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "matrix").await;
    let b = tenant(&app, "foreign").await;
    let subset = ["clients.read", "projects.read", "tasks.read", "tasks.update", "invoices.read"];
    let mut keys = Vec::new();
    for role in ["admin", "manager", "member"] {
        let (_, secret) = api_key(&app, &a, role, None).await;
        let r: Role = role.parse().unwrap();
        keys.push((role.to_string(), secret, default_permissions(r).intersect(admin_bound()), None));
    }
    let (_, secret) = api_key(&app, &a, "manager", Some(&subset)).await;
    let perms: Vec<Permission> = subset.iter().map(|p| p.parse().unwrap()).collect();
    keys.push(("manager with a subset".into(), secret, PermissionSet::of(&perms), None));
    // A Manager key whose creator has since become a Client: its creator no longer stands
    // behind it, so it is no key at all (401, like a revoked one) and reaches nothing.
    let (client_key_id, secret) = api_key(&app, &a, "manager", None).await;
    {
        let client_user = Uuid::now_v7();
        let mut db = app.db.admin_conn().await;
        sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'former-manager@example.com')")
            .bind(client_user)
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO memberships (organization_id, user_id, role, client_id) VALUES ($1, $2, 'client', $3)",
        )
        .bind(a.org.id)
        .bind(client_user)
        .bind(a.org.client)
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::query("UPDATE api_keys SET created_by = $1 WHERE id = $2")
            .bind(client_user)
            .bind(client_key_id)
            .execute(&mut db)
            .await
            .unwrap();
    }
    keys.push(("manager key of a Client".into(), secret, default_permissions(Role::Client), Some(401)));

    let routes: Vec<_> = clientflow::routes::all().into_iter().filter(|r| matches!(r.access, Access::Api(_))).collect();
    assert!(routes.len() >= 30, "only {} API routes?", routes.len());
    let with_ids = routes.iter().filter(|r| r.path.contains('{')).count();
    let (mut cases, mut allowed_cases, mut failures, mut statuses) = (0, 0, Vec::new(), BTreeMap::<u16, usize>::new());
    for route in &routes {
        let Access::Api(permission) = route.access else { unreachable!() };
        assert_eq!(route.surface, Surface::Api, "{} {}", route.method, route.path);
        let has_ids = route.path.contains('{');
        let fixtures = api_write(&route.method, route.path).map(|(_, _, f)| *f).unwrap_or(&[]);
        for (name, secret, perms, always) in &keys {
            let allowed = perms.contains(permission);
            let mut variants = Vec::new();
            let mut own = fresh_ids(&app, &a).await;
            if name == "member" {
                // A Member-role key sees only the clients of its creator's projects.
                own.insert("client", own["work_client"].clone());
            }
            variants.push(("own ids", fill(route.path, &own, fixtures), if allowed { None } else { Some(403) }));
            if has_ids {
                let foreign = fresh_ids(&app, &b).await;
                variants.push((
                    "foreign ids",
                    fill(route.path, &foreign, fixtures),
                    Some(if allowed { 404 } else { 403 }),
                ));
            }
            for (what, url, expected) in variants {
                let expected = always.or(expected);
                let res = if route.method == Method::POST && route.path == "/api/v1/files" {
                    upload(&app, secret, &[("project_id", &own["project"])], Some(("matrix.txt", b"matrix"))).await
                } else {
                    let body = body_for(&route.method, route.path, &own);
                    send(&app, route.method.clone(), &url, secret, body).await
                };
                cases += 1;
                *statuses.entry(res.status).or_default() += 1;
                let ok = match expected {
                    Some(code) => res.status == code,
                    None => {
                        allowed_cases += 1;
                        (200..300).contains(&res.status)
                    }
                };
                if res.status >= 400 && res.header("content-type") != Some("application/problem+json") {
                    failures.push(format!(
                        "{} {} as {name} ({what}): {} without problem+json",
                        route.method, route.path, res.status
                    ));
                }
                if !ok {
                    failures.push(format!(
                        "{} {} as {name} ({what}): got {} {} {}, expected {}",
                        route.method,
                        route.path,
                        res.status,
                        res.body["detail"],
                        res.body["errors"],
                        expected.map(|c| c.to_string()).unwrap_or_else(|| "success".into())
                    ));
                }
            }
        }
    }
    println!(
        "API matrix: {cases} cases = {} keys × ({} API routes + {with_ids} with ids); {allowed_cases} allowed \
         cases proven by a success; statuses {statuses:?}",
        keys.len(),
        routes.len(),
    );
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, keys.len() * (routes.len() + with_ids));
    assert!(allowed_cases > routes.len(), "{allowed_cases} allowed cases");
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_served_api() {
    let app = TestApp::spawn().await;
    // Public: no key needed.
    let res = send_raw(&app, Method::GET, "/api/v1/openapi.json", None, None, &[]).await;
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("application/json"));
    let spec = res.body;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "{}", spec["openapi"]);
    let scheme = &spec["components"]["securitySchemes"][clientflow::api::openapi::SECURITY_SCHEME];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));

    let mut documented = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete", "head", "options", "trace"].contains(&method.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()), op.clone());
            }
        }
    }
    let served: BTreeMap<String, Access> = clientflow::routes::all()
        .into_iter()
        .filter(|r| r.surface == Surface::Api)
        .map(|r| (format!("{} {}", r.method, r.path), r.access))
        .collect();
    let documented_keys: BTreeSet<&String> = documented.keys().collect();
    let served_keys: BTreeSet<&String> = served.keys().collect();
    assert_eq!(
        served_keys.difference(&documented_keys).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented_keys.difference(&served_keys).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "documented but not served"
    );
    for (key, access) in &served {
        let op = &documented[key];
        let scopes = &op["security"][0][clientflow::api::openapi::SECURITY_SCHEME];
        match access {
            Access::Api(p) => {
                assert_eq!(scopes, &json!([p.as_str()]), "{key}: the document must name the route's permission");
                for status in ["401", "403"] {
                    let content = &op["responses"][status]["content"]["application/problem+json"];
                    assert!(content.is_object(), "{key}: no problem+json {status}");
                }
                if key.contains('{') {
                    assert!(op["responses"]["404"].is_object(), "{key}: no 404");
                }
                if key.starts_with("POST ") {
                    let params = op["parameters"].as_array().unwrap();
                    assert!(params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"), "{key}");
                }
                if op["responses"]["201"].is_object() {
                    assert!(op["responses"]["201"]["headers"]["Location"].is_object(), "{key}: 201 without Location");
                }
            }
            Access::Public => assert_eq!(op["security"], json!([{}]), "{key} is public"),
            other => panic!("{key}: an API route must be Api or Public, not {other:?}"),
        }
    }
    // Every schema the operations refer to is in the document.
    let text = spec.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(spec["components"]["schemas"][name].is_object(), "missing schema {name}");
    }
}
