//! API keys never hold more than the person who stands behind them holds right now.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;

use crate::tenancy::{org_with_every_role, session_token};

async fn post(b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = session_token(b).await;
    b.post_with(path, fields, Some(&token), true).await
}

/// Creates a key on the API keys page and returns the secret the page shows once.
async fn key_from_page(b: &mut Browser, slug: &str, role: &str) -> String {
    let res = post(
        b,
        &format!("/o/{slug}/settings/api-keys"),
        &[("name", &format!("{role} key")), ("role", role), ("expires_in_days", "")],
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
