//! The JSON API: requests, answers, tenants with API keys.

use crate::support::{SeededOrg, seed_org};
use axum::http::Method;
use clientflow::api::keys::{self, NewKey};
use clientflow::audit::Context;
use clientflow_test_support::TestApp;
use reqwest::header::HeaderMap;
use serde_json::Value;
use uuid::Uuid;

pub(crate) struct Res {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The field errors of a problem document.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.body["data"]["id"].as_str().unwrap_or_else(|| panic!("no id in {}", self.body)).to_string()
    }

    /// A problem document with the request id, as every API error must be.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.body);
        assert_eq!(self.body["status"], status, "{}", self.body);
        for k in ["type", "title", "detail", "request_id"] {
            assert!(self.body[k].is_string(), "problem without {k}: {}", self.body);
        }
    }

    pub fn assert_problem_field(&self, status: u16, field: &str) {
        self.assert_problem(status);
        assert!(self.fields().iter().any(|f| f == field), "expected field {field}: {}", self.body);
    }
}

pub(crate) async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
    headers: &[(&str, &str)],
) -> Res {
    let mut req = app.client.request(method, app.url(path));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Res { status, headers, body }
}

pub(crate) async fn send(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> Res {
    send_raw(app, method, path, Some(key), body.map(|b| ("application/json", b.to_string().into_bytes())), &[]).await
}

/// A `multipart/form-data` upload to `POST /api/v1/files`: the text parts, then the file.
pub(crate) async fn upload(app: &TestApp, key: &str, parts: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Res {
    upload_with(app, key, parts, file, "cf-test-boundary-1", &[]).await
}

pub(crate) async fn upload_with(
    app: &TestApp,
    key: &str,
    parts: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
    boundary: &str,
    headers: &[(&str, &str)],
) -> Res {
    let mut body = Vec::new();
    for (k, v) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    send_raw(app, Method::POST, "/api/v1/files", Some(key), Some((&content_type, body)), headers).await
}

pub(crate) async fn get(app: &TestApp, path: &str, key: &str) -> Res {
    send(app, Method::GET, path, key, None).await
}

pub(crate) async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> Res {
    send(app, Method::POST, path, key, Some(body)).await
}

pub(crate) async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> Res {
    send(app, Method::PATCH, path, key, Some(body)).await
}

pub(crate) async fn delete(app: &TestApp, path: &str, key: &str) -> Res {
    send(app, Method::DELETE, path, key, None).await
}

pub(crate) fn ctx(app: &TestApp) -> Context {
    Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()))
}

/// An organization with a client and a project (from `seed_org`) and an Admin member who
/// stands behind its API keys.
pub(crate) struct Tenant {
    pub org: SeededOrg,
    pub admin: Uuid,
}

pub(crate) async fn add_member(app: &TestApp, org: &SeededOrg, role: &str) -> Uuid {
    let mut db = app.db.admin_conn().await;
    let user = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
        .bind(user)
        .bind(format!("{role}-{user}@example.com"))
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(org.id)
        .bind(user)
        .bind(role)
        .execute(&mut db)
        .await
        .unwrap();
    user
}

pub(crate) async fn tenant(app: &TestApp, slug: &str) -> Tenant {
    let org = seed_org(&app.app_db, slug).await;
    let admin = add_member(app, &org, "admin").await;
    Tenant { org, admin }
}

/// An API key made by the operator acting for the tenant's Admin (`api::keys::create_for`),
/// as if the Admin had made it in the web app: the Admin bounds the key's role, is the person
/// its time entries are recorded for, and gives a Member-role key its projects.
pub(crate) async fn api_key(app: &TestApp, t: &Tenant, role: &str, permissions: Option<&[&str]>) -> (Uuid, String) {
    let created = keys::create_for(
        &app.app_db,
        &ctx(app),
        &t.org.principal,
        t.admin.to_string().parse().unwrap(),
        &NewKey {
            name: format!("{role} key"),
            role: role.into(),
            permissions: permissions.map(|ps| ps.iter().map(|p| p.to_string()).collect()),
            expires_in_days: None,
        },
    )
    .await
    .unwrap();
    (created.key.id, created.secret)
}

pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}
