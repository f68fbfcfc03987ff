//! API keys never hold more than the person who stands behind them holds right now.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;

use crate::support::accounts::PASSWORD;
use crate::support::orgs::{org_with_every_role, session_token};

async fn post(b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = session_token(b).await;
    b.post_with(path, fields, Some(&token), true).await
}

/// Creates a key on the API keys page and returns the secret the page shows once.
async fn key_from_page(b: &mut Browser, slug: &str, role: &str) -> String {
    let res = post(
        b,
        &format!("/o/{slug}/settings/api-keys"),
        &[("name", &format!("{role} key")), ("role", role), ("expires_in_days", ""), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let start = html.find("cf_live_").expect("the page shows the new key");
    html[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

async fn delete_client(app: &TestApp, key: &str, client: &str) -> u16 {
    app.browser()
        .client
        .delete(app.url(&format!("/api/v1/clients/{client}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn new_client(app: &TestApp, org: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1::uuid, $2, 'Spare')")
        .bind(org)
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test]
async fn a_key_never_exceeds_its_creators_own_overrides() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "kcap").await;
    let slug = org.slug.clone();
    let manager_id = org.people["manager"].user_id.clone();
    // The Owner lets one Manager manage API keys but denies them `clients.delete`, which the
    // Manager role holds by default.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let overrides = [("grant", "api_keys.manage"), ("deny", "clients.delete")];
    let res = post(owner, &format!("/o/{slug}/members/{manager_id}/permissions"), &overrides).await;
    assert_eq!(res.status(), 303);
    let owners_key = key_from_page(owner, &slug, "manager").await;
    // The Manager makes a Manager key: the role would allow deleting clients, its creator can't.
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    let managers_key = key_from_page(manager, &slug, "manager").await;
    let client = org.client_id.clone();
    assert_eq!(delete_client(&app, &managers_key, &client).await, 403, "the key outranked its creator");
    // Lifting the denial takes effect on the key's next request.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res =
        post(owner, &format!("/o/{slug}/members/{manager_id}/permissions"), &[("grant", "api_keys.manage")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(delete_client(&app, &managers_key, &new_client(&app, &org.id).await).await, 204);
    // And the Owner's Manager key could delete all along (the role is not what refused it).
    assert_eq!(delete_client(&app, &owners_key, &new_client(&app, &org.id).await).await, 204);
}

async fn api_status(app: &TestApp, key: &str, method: reqwest::Method, path: &str) -> u16 {
    let mut req = app.browser().client.request(method.clone(), app.url(path)).bearer_auth(key);
    if method == reqwest::Method::POST {
        req = req.json(&serde_json::json!({"name": "Made by a subset key"}));
    }
    req.send().await.unwrap().status().as_u16()
}

async fn key_count(app: &TestApp) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn the_key_page_offers_and_grants_only_the_creators_own_permissions() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "ksub").await;
    let slug = org.slug.clone();
    let manager_id = org.people["manager"].user_id.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res =
        post(owner, &format!("/o/{slug}/members/{manager_id}/permissions"), &[("grant", "api_keys.manage")]).await;
    assert_eq!(res.status(), 303);
    let page_url = format!("/o/{slug}/settings/api-keys");

    // The checkboxes are the viewer's own permissions: a Manager deletes clients but doesn't
    // read the audit log; an Admin does, and neither manages billing.
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    let html = manager.get(&page_url).await.text().await.unwrap();
    assert!(html.contains(r#"name="permissions" value="clients.delete""#), "{html}");
    assert!(!html.contains(r#"value="audit.read""#), "a Manager was offered audit.read");
    assert!(!html.contains(r#"value="billing.manage""#));
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let html = admin.get(&page_url).await.text().await.unwrap();
    assert!(html.contains(r#"value="audit.read""#));
    assert!(!html.contains(r#"value="billing.manage""#), "billing is the Owner's alone");

    // A Manager picks two permissions: the key reads clients but can't create them, although
    // its creator could.
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    let fields = [
        ("name", "reporting"),
        ("mode", "permissions"),
        ("role", "member"),
        ("permissions", "clients.read"),
        ("permissions", "projects.read"),
        ("expires_in_days", ""),
        ("current_password", PASSWORD),
    ];
    let res = post(manager, &page_url, &fields).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let start = html.find("cf_live_").expect("the page shows the new key");
    let key: String =
        html[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    assert!(html.contains("only clients.read, projects.read"), "the list shows the subset");
    let mut db = app.db.admin_conn().await;
    let (role, perms): (String, Option<Vec<String>>) =
        sqlx::query_as("SELECT role, permissions FROM api_keys WHERE name = 'reporting'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(
        (role.as_str(), perms),
        ("manager", Some(vec!["clients.read".to_string(), "projects.read".to_string()]))
    );
    assert_eq!(api_status(&app, &key, reqwest::Method::GET, "/api/v1/clients").await, 200);
    assert_eq!(api_status(&app, &key, reqwest::Method::POST, "/api/v1/clients").await, 403);
    assert_eq!(api_status(&app, &key, reqwest::Method::GET, "/api/v1/invoices").await, 403);

    // Forged forms: permissions the Manager doesn't hold, an Owner-only one, unknown ones, an
    // empty subset, an unknown mode, a role above theirs. Each is refused; no key is made.
    let before = key_count(&app).await;
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    type Forged<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let forged: Vec<Forged> = vec![
        (
            vec![("mode", "permissions"), ("permissions", "clients.read"), ("permissions", "audit.read")],
            422,
            "audit.read",
        ),
        (
            vec![("mode", "permissions"), ("permissions", "api_keys.manage"), ("permissions", "members.manage")],
            422,
            "members.manage",
        ),
        (vec![("mode", "permissions"), ("permissions", "billing.manage")], 422, "billing.manage"),
        (vec![("mode", "permissions"), ("permissions", "everything")], 422, "everything"),
        (vec![("mode", "permissions")], 422, "at least one"),
        (vec![("mode", "superuser"), ("role", "manager")], 422, "mode"),
        (vec![("mode", "role"), ("role", "admin")], 403, "above your own"),
        (vec![("mode", "role"), ("role", "manager"), ("organization_id", "x")], 422, "organization_id"),
    ];
    for (extra, status, says) in forged {
        let mut fields = vec![("name", "forged"), ("expires_in_days", ""), ("current_password", PASSWORD)];
        fields.extend(extra.iter().copied());
        let res = post(manager, &page_url, &fields).await;
        assert_eq!(res.status(), status, "{extra:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains(says), "{extra:?}: the page should say {says:?}");
        assert!(!html.contains("shown only this once"), "{extra:?} made a key");
    }
    assert_eq!(key_count(&app).await, before, "no forged key was stored");
}
