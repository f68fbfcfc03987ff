//! Organizations and their members, through the web as people make them.

use crate::support::accounts::{PASSWORD, sign_up};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use std::collections::HashMap;

pub struct Org {
    pub slug: String,
    pub id: String,
    pub client_id: String,
    pub people: HashMap<&'static str, Person>,
}

pub async fn user_id(app: &TestApp, email: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(&mut db).await.unwrap();
    id.to_string()
}

/// The token of the signed-in browser's session (any page of the app carries it).
pub async fn session_token(b: &mut Browser) -> String {
    b.page("/orgs/new").await;
    b.token()
}

pub async fn create_org(b: &mut Browser, name: &str) -> String {
    let res = b.submit("/orgs/new", "/orgs", &[("name", name)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    location(&res).trim_start_matches("/o/").to_string()
}

/// Invites `email` with `role` (and client record) as `inviter`, and has the invitee accept
/// by creating an account: returns the invitee's signed-in browser.
pub async fn invite_and_join(
    app: &TestApp,
    inviter: &mut Browser,
    slug: &str,
    email: &str,
    role: &str,
    client_id: Option<&str>,
) -> Browser {
    let res = inviter
        .submit(
            &format!("/o/{slug}/members"),
            &format!("/o/{slug}/invitations"),
            // The password confirms an Admin's invitation (a page asks for it); other roles ignore it.
            &[
                ("email", email),
                ("role", role),
                ("client_id", client_id.unwrap_or("")),
                ("current_password", PASSWORD),
                ("confirming", "1"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let link = app.link_in_mail(email, "/invitations/accept?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut b = app.browser();
    let res = b
        .submit(&link, "/invitations/accept", &[("token", &token), ("password", PASSWORD), ("display_name", "")])
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(location(&res), format!("/o/{slug}"));
    b
}

/// An organization with one person in each role (the Client linked to a client record).
pub async fn org_with_every_role(app: &TestApp, name: &str) -> Org {
    let owner_email = format!("owner@{name}.test");
    let mut owner = sign_up(app, &owner_email).await;
    let slug = create_org(&mut owner, name).await;
    let mut db = app.db.admin_conn().await;
    let org_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(&slug)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let client_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, $3)")
        .bind(org_id)
        .bind(client_id)
        .bind(format!("{name} client"))
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO organization_logos VALUES ($1, 'image/png', '\\x89504e470d0a1a0a', now())")
        .bind(org_id)
        .execute(&mut db)
        .await
        .unwrap();
    let mut people = HashMap::new();
    for role in ["admin", "manager", "member", "client"] {
        let email = format!("{role}@{name}.test");
        let cid = client_id.to_string();
        let b = invite_and_join(app, &mut owner, &slug, &email, role, (role == "client").then_some(cid.as_str())).await;
        people.insert(role, Person { user_id: user_id(app, &email).await, browser: b });
    }
    people.insert("owner", Person { user_id: user_id(app, &owner_email).await, browser: owner });
    Org { slug, id: org_id.to_string(), client_id: client_id.to_string(), people }
}

pub struct Person {
    pub user_id: String,
    pub browser: Browser,
}
