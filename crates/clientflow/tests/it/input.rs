//! Text PostgreSQL can't store (U+0000) is refused at the boundary with a message naming where
//! it was, on every surface: query strings, paths, forms and JSON bodies. Never a 500, never a
//! partial write.

use axum::http::Method;
use clientflow_test_support::TestApp;
use serde_json::json;

use crate::support::api::{send, send_raw};
use crate::support::orgs::{create_org, session_token};
use crate::support::{api_key, org_id};

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn a_nul_in_a_search_term_is_refused_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@nul.test").await;
    let slug = create_org(&mut owner, "Nul Agency").await;
    let key = api_key(&app, org_id(&app, &slug).await, "nul").await;

    for list in ["clients", "projects", "tasks", "invoices"] {
        let res = send(&app, Method::GET, &format!("/api/v1/{list}?q=a%00b"), &key, None).await;
        res.assert_problem_field(422, "q");
        // The same search without the NUL works.
        assert_eq!(send(&app, Method::GET, &format!("/api/v1/{list}?q=ab"), &key, None).await.status, 200);
    }
    for (path, field) in [
        (format!("/o/{slug}/clients?q=a%00b"), "q"),
        (format!("/o/{slug}/projects?q=a%00b"), "q"),
        (format!("/o/{slug}/tasks?q=a%00b"), "q"),
        (format!("/o/{slug}/invoices?q=a%00b"), "q"),
        (format!("/o/{slug}/audit?actor=%00"), "actor"),
        (format!("/o/{slug}/audit?action=%00"), "action"),
        (format!("/o/{slug}/audit.csv?action=x%00"), "action"),
    ] {
        let res = owner.get(&path).await;
        assert_eq!(res.status(), 422, "{path}");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("&#34;{field}&#34;")), "{path}: {html}");
        assert!(html.contains("NUL"), "{path}: the page says what was wrong: {html}");
    }
    // A NUL in a path segment (an organization's slug here) can name nothing.
    let res = owner.get("/o/nul%00agency/projects").await;
    assert_eq!(res.status(), 400);
    let res = send(&app, Method::GET, "/api/v1/clients/a%00b", &key, None).await;
    res.assert_problem_field(400, "path");
}

#[tokio::test]
async fn a_nul_in_a_form_or_json_body_is_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@nulbody.test").await;
    let slug = create_org(&mut owner, "Nul Body").await;
    let key = api_key(&app, org_id(&app, &slug).await, "nul").await;
    let clients_before = count(&app, "SELECT count(*) FROM clients").await;

    let res = send(&app, Method::POST, "/api/v1/clients", &key, Some(json!({"name": "a\u{0}b"}))).await;
    res.assert_problem_field(422, "name");
    let res = send(
        &app,
        Method::POST,
        "/api/v1/clients",
        &key,
        Some(json!({"name": "Fine", "contact": {"notes": ["ok", "x\u{0}"]}})),
    )
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(res.fields().iter().any(|f| f == "contact.notes[1]"), "{}", res.body);
    // A key with a NUL.
    let raw = br#"{"na\u0000me": "x"}"#.to_vec();
    let res = send_raw(&app, Method::POST, "/api/v1/clients", Some(&key), Some(("application/json", raw)), &[]).await;
    assert_eq!(res.status, 422, "{}", res.body);
    // `\\u0000` is a backslash and five characters, not a NUL: accepted as text.
    let raw = br#"{"name": "C:\\u0000"}"#.to_vec();
    let res = send_raw(&app, Method::POST, "/api/v1/clients", Some(&key), Some(("application/json", raw)), &[]).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["data"]["name"], "C:\\u0000");

    let token = session_token(&mut owner).await;
    let res = owner.post_with(&format!("/o/{slug}/clients"), &[("name", "a\u{0}b")], Some(&token), true).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("&#34;name&#34;") && html.contains("NUL"), "{html}");
    assert_eq!(count(&app, "SELECT count(*) FROM clients").await, clients_before + 1, "only the plain-text client");
}

/// Over the whole route table: a NUL in the query string is a 422 naming it, whatever the route
/// and whoever asks (refused before the route's guard looks anything up); a NUL in a form or JSON
/// body is a 4xx, never a 5xx (the route's access checks come first, then the NUL check).
#[tokio::test]
async fn no_route_answers_a_nul_with_a_server_error() {
    let app = TestApp::spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@nulsweep.test").await;
    let slug = create_org(&mut owner, "Nul Sweep").await;
    let key = api_key(&app, org_id(&app, &slug).await, "nul").await;
    let token = session_token(&mut owner).await;
    let id = uuid::Uuid::now_v7().to_string();
    let mut cases = 0;
    let mut body_refusals = 0;
    for def in clientflow::routes::all() {
        let path = def
            .path
            .split('/')
            .map(|seg| match seg {
                "{org}" => slug.clone(),
                s if s.starts_with('{') => id.clone(),
                s => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(def.method.as_str().as_bytes()).unwrap();
        let is_api = path.starts_with("/api/");
        let mut req = owner.client.request(method.clone(), app.url(&format!("{path}?probe=x%00y")));
        if is_api {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 422, "{} {path}?probe=x%00y", def.method);
        cases += 1;
        if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            continue;
        }
        let req = owner.client.request(method.clone(), app.url(&path));
        let res = if is_api {
            req.header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(r#"{"name": "x\u0000y"}"#)
        } else {
            req.header("origin", app.url(""))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf_token={token}&name=x%00y"))
        }
        .send()
        .await
        .unwrap();
        // Refused or sent elsewhere by the route's own access checks (which come first, so an
        // unauthenticated body is never parsed), or refused for the NUL.
        let status = res.status().as_u16();
        assert!((300..500).contains(&status), "{} {path} with a NUL in its body: {status}", def.method);
        if status == 422 {
            body_refusals += 1;
        }
        cases += 1;
    }
    assert!(cases > 200, "the sweep covered {cases} cases");
    assert!(body_refusals > 60, "only {body_refusals} bodies reached the NUL check");
}
