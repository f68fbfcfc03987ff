//! Organizations, invitations, roles, the route declarations, and privilege-escalation attempts
//! (mass assignment, self-promotion, inviting above one's role, stale standing, the last Owner).
//! The permission matrix over the route table is in `matrix.rs`.

use clientflow::access::role::{Permission, Role, default_permissions};
use clientflow::access::route::Access;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};

use crate::support::accounts::{PASSWORD, sign_up};
use crate::support::orgs::{create_org, org_with_every_role, session_token};

async fn role_of(app: &TestApp, slug: &str, email: &str) -> Option<(String, String)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT m.role, m.status FROM memberships m JOIN users u ON u.id = m.user_id \
         JOIN organizations o ON o.id = m.organization_id WHERE o.slug = $1 AND u.email = $2",
    )
    .bind(slug)
    .bind(email)
    .fetch_optional(&mut db)
    .await
    .unwrap()
}

async fn post(b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = session_token(b).await;
    b.post_with(path, fields, Some(&token), true).await
}

/// The fields of a member action's form: removing is confirmed (else a page asks first).
fn confirmed(action: &str) -> &'static [(&'static str, &'static str)] {
    if action == "remove" { &[("confirm", "yes")] } else { &[] }
}

#[tokio::test]
async fn create_an_organization_and_switch_between_them() {
    let app = TestApp::spawn().await;
    let mut a = sign_up(&app, "founder@example.com").await;
    let one = create_org(&mut a, "Acme & Co").await;
    assert_eq!(one, "acme-co");
    let two = create_org(&mut a, "Beta Studio").await;
    // The switcher lists both; /app takes the person to the first (or the last one used).
    let (_, home) = a.page("/orgs").await;
    assert!(home.contains("Acme") && home.contains("Beta Studio"), "{home}");
    assert_eq!(location(&a.get("/app").await), format!("/o/{one}"));
    a.page(&format!("/o/{two}/members")).await;
    assert_eq!(location(&a.get("/app").await), format!("/o/{two}"), "the last organization used");
    for slug in [&one, &two] {
        let (status, html) = a.page(&format!("/o/{slug}")).await;
        assert_eq!(status, 200);
        assert!(html.contains("Owner"));
    }
    // Every organization page's navigation holds the switcher: a menu (a <details>, which works
    // without JavaScript) of the person's organizations, this one marked, and a way to create one.
    let (_, html) = a.page(&format!("/o/{two}/members")).await;
    let switcher = html
        .split("<details class=\"menu switcher\" data-menu>")
        .nth(1)
        .expect("a switcher menu")
        .split("</details>")
        .next()
        .unwrap()
        .to_string();
    assert!(switcher.contains("<summary"), "{switcher}");
    assert!(switcher.contains(&format!("href=\"/o/{one}\">Acme &#38; Co</a>")), "{switcher}");
    assert!(switcher.contains(&format!("href=\"/o/{two}\" aria-current=\"true\">Beta Studio</a>")), "{switcher}");
    assert!(switcher.contains("href=\"/orgs/new\"") && switcher.contains("href=\"/orgs\""));
    // A taken slug is refused with a field message.
    let res = a.submit("/orgs/new", "/orgs", &[("name", "Other"), ("slug", "acme-co")]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("already taken"));
    // Someone else can't see either.
    let mut b = sign_up(&app, "stranger@example.com").await;
    assert_eq!(b.get(&format!("/o/{one}")).await.status(), 404);
    // Nor in their switcher, which lists only their own.
    let three = create_org(&mut b, "Gamma").await;
    let (_, html) = b.page(&format!("/o/{three}")).await;
    assert!(html.contains(&format!("href=\"/o/{three}\" aria-current=\"true\">Gamma</a>")));
    assert!(!html.contains("Acme") && !html.contains("Beta Studio") && !html.contains(&format!("/o/{one}\"")));
}

#[tokio::test]
async fn the_role_hierarchy_is_enforced() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "hier").await;
    let slug = org.slug.clone();
    let owner_id = org.people["owner"].user_id.clone();
    let member_id = org.people["member"].user_id.clone();
    let admin_id = org.people["admin"].user_id.clone();

    // An Admin can't invite an Owner, can't demote, suspend or remove the Owner.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let res = post(
        admin,
        &format!("/o/{slug}/invitations"),
        &[("email", "x@hier.test"), ("role", "owner"), ("client_id", "")],
    )
    .await;
    assert_eq!(res.status(), 403);
    for action in ["suspend", "remove"] {
        let res = post(admin, &format!("/o/{slug}/members/{owner_id}/{action}"), confirmed(action)).await;
        assert_eq!(res.status(), 403, "admin could {action} the owner");
    }
    let res =
        post(admin, &format!("/o/{slug}/members/{owner_id}/role"), &[("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 403);
    // Self-promotion: an Admin can't make themselves Owner.
    let res = post(admin, &format!("/o/{slug}/members/{admin_id}/role"), &[("role", "owner"), ("client_id", "")]).await;
    assert_eq!(res.status(), 403);
    // An Admin may manage a Member.
    let res =
        post(admin, &format!("/o/{slug}/members/{member_id}/role"), &[("role", "manager"), ("client_id", "")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(role_of(&app, &slug, "member@hier.test").await.unwrap().0, "manager");

    // A Member (now Manager) can't invite or manage at all.
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    let res = post(
        manager,
        &format!("/o/{slug}/invitations"),
        &[("email", "y@hier.test"), ("role", "member"), ("client_id", "")],
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = post(manager, &format!("/o/{slug}/members/{member_id}/suspend"), &[]).await;
    assert_eq!(res.status(), 403);

    // The last Owner can neither leave nor be demoted by themselves.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = post(owner, &format!("/o/{slug}/leave"), &[]).await;
    assert_eq!(res.status(), 409);
    let res = post(
        owner,
        &format!("/o/{slug}/members/{owner_id}/role"),
        &[("role", "admin"), ("client_id", ""), ("current_password", PASSWORD), ("confirming", "1")],
    )
    .await;
    assert_eq!(res.status(), 409);
    assert_eq!(role_of(&app, &slug, "owner@hier.test").await.unwrap().0, "owner");

    // Explicit transfer: the Admin becomes Owner, the Owner becomes Admin.
    let res =
        post(owner, &format!("/o/{slug}/transfer"), &[("member", &admin_id), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(role_of(&app, &slug, "admin@hier.test").await.unwrap().0, "owner");
    assert_eq!(role_of(&app, &slug, "owner@hier.test").await.unwrap().0, "admin");
    // Now the former owner (an Admin) can't touch the new Owner.
    let res = post(owner, &format!("/o/{slug}/members/{admin_id}/suspend"), &[]).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn mass_assignment_is_refused() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "mass").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    // Settings with smuggled fields.
    let res = post(
        admin,
        &format!("/o/{slug}/settings"),
        &[
            ("name", "Renamed"),
            ("slug", "mass"),
            ("brand_color", "#112233"),
            ("timezone", "UTC"),
            ("currency", "EUR"),
            ("organization_id", "00000000-0000-0000-0000-000000000000"),
            ("require_two_factor", "on"),
        ],
    )
    .await;
    assert_eq!(res.status(), 422);
    let mut db = app.db.admin_conn().await;
    let (name, require): (String, bool) =
        sqlx::query_as("SELECT name, require_two_factor FROM organizations WHERE slug = 'mass'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((name.as_str(), require), ("mass", false));
    // An invitation that smuggles an owner flag.
    let res = post(
        admin,
        &format!("/o/{slug}/invitations"),
        &[("email", "z@mass.test"), ("role", "member"), ("client_id", ""), ("owner", "true")],
    )
    .await;
    assert_eq!(res.status(), 422);
    // A role change can't carry an organization.
    let res = post(
        admin,
        &format!("/o/{slug}/members/{member_id}/role"),
        &[("role", "manager"), ("client_id", ""), ("organization_id", "x")],
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(role_of(&app, &slug, "member@mass.test").await.unwrap().0, "member");
    // The member's own override attempt: no permission at all.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let res = post(member, &format!("/o/{slug}/members/{member_id}/permissions"), &[("grant", "members.manage")]).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn suspension_and_removal_end_access_at_once() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "susp").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    assert_eq!(org.people.get_mut("member").unwrap().browser.get(&format!("/o/{slug}/members")).await.status(), 200);
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(post(owner, &format!("/o/{slug}/members/{member_id}/suspend"), &[]).await.status(), 303);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/members")).await.status(), 404, "suspended member kept access");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(post(owner, &format!("/o/{slug}/members/{member_id}/reactivate"), &[]).await.status(), 303);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/members")).await.status(), 200);
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(
        post(owner, &format!("/o/{slug}/members/{member_id}/remove"), &[("confirm", "yes")]).await.status(),
        303
    );
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}")).await.status(), 404);
}

#[tokio::test]
async fn roles_can_be_customized_within_bounds() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "cust").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    // Members can't invite by default.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let invite = [("email", "new@cust.test"), ("role", "member"), ("client_id", "")];
    assert_eq!(post(member, &format!("/o/{slug}/invitations"), &invite).await.status(), 403);
    // The Admin widens Members with members.invite, and tightens away members.read.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let mut fields: Vec<(&str, &str)> = vec![("role", "member")];
    for p in default_permissions(Role::Member).iter().filter(|p| *p != Permission::MembersRead) {
        fields.push(("permission", p.as_str()));
    }
    fields.push(("permission", "members.invite"));
    let res = post(admin, &format!("/o/{slug}/settings/roles"), &fields).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/members")).await.status(), 403, "members.read was removed");
    assert_eq!(
        post(member, &format!("/o/{slug}/invitations"), &invite).await.status(),
        303,
        "members.invite was granted"
    );
    // Never beyond the Admin bound, never beyond the granter's own permissions.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let res =
        post(admin, &format!("/o/{slug}/settings/roles"), &[("role", "member"), ("permission", "billing.manage")])
            .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("billing.manage"));
    let res =
        post(admin, &format!("/o/{slug}/settings/roles"), &[("role", "admin"), ("permission", "clients.read")]).await;
    assert_eq!(res.status(), 422);
    // A per-member override beats the role.
    let res = post(admin, &format!("/o/{slug}/members/{member_id}/permissions"), &[("grant", "members.read")]).await;
    assert_eq!(res.status(), 303);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/members")).await.status(), 200);
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let res = post(admin, &format!("/o/{slug}/members/{member_id}/permissions"), &[("grant", "org.delete")]).await;
    assert_eq!(res.status(), 422);
    // The per-member page shows the override and its effect, as the server computes them.
    let (status, html) = admin.page(&format!("/o/{slug}/members/{member_id}/permissions")).await;
    assert_eq!(status, 200);
    assert!(html.contains("name=\"grant\" value=\"members.read\" checked"), "{html}");
    let row = html.split("<code>members.read</code>").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.ends_with("<td>yes</td>\n"), "{row}");
    // Owners' and Admins' permissions are fixed.
    let owner_id = org.people["owner"].user_id.clone();
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    assert_eq!(admin.get(&format!("/o/{slug}/members/{owner_id}/permissions")).await.status(), 409);
    // The customization page shows exactly what the server enforces.
    let (_, html) = admin.page(&format!("/o/{slug}/settings/roles")).await;
    let member_section = html.split("<h2>Member</h2>").nth(1).unwrap();
    assert!(member_section.contains("value=\"members.invite\" checked"));
    assert!(!member_section.contains("value=\"members.read\" checked"));
}

#[tokio::test]
async fn an_organization_can_require_two_factor_and_a_shorter_session() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "sec").await;
    let slug = org.slug.clone();
    // The Owner can't require two-factor before having it (would lock themselves out).
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = post(
        owner,
        &format!("/o/{slug}/settings/security"),
        &[("require_two_factor", "on"), ("session_timeout_minutes", ""), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 422);
    crate::support::accounts::enable_totp(&app, owner).await;
    let res = post(
        owner,
        &format!("/o/{slug}/settings/security"),
        &[("require_two_factor", "on"), ("session_timeout_minutes", "10"), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 303);
    // A member without two-factor is sent to set it up, on every page of the organization.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let res = member.get(&format!("/o/{slug}/members")).await;
    assert_eq!(location(&res), "/account/two-factor/setup?required=1");
    assert_eq!(member.get("/orgs").await.status(), 200, "only this organization requires it");
    assert_eq!(member.get("/account/security").await.status(), 200, "only this organization requires it");
    // The shorter idle timeout ends the session.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(owner.get(&format!("/o/{slug}")).await.status(), 200);
    app.clock.advance(time::Duration::minutes(11));
    let res = owner.get(&format!("/o/{slug}")).await;
    assert_eq!(location(&res), "/login");
    assert_eq!(
        location(&owner.get("/account/security").await),
        "/login?next=%2Faccount%2Fsecurity",
        "the session is gone everywhere"
    );
}

#[tokio::test]
async fn invitations_can_be_revoked_resent_and_declined() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "boss@inv.test").await;
    let slug = create_org(&mut owner, "inv").await;
    let invite = |email: &'static str| [("email", email), ("role", "member"), ("client_id", "")];
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations"), &invite("a@inv.test")).await.status(), 303);
    // A second open invitation for the same address: conflict.
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations"), &invite("a@inv.test")).await.status(), 409);
    let first = app.link_in_mail("a@inv.test", "/invitations/accept?token=").await;
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM invitations WHERE email = 'a@inv.test'").fetch_one(&mut db).await.unwrap();
    // Resend: a new link; the old one stops working.
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations/{id}/resend"), &[]).await.status(), 303);
    let second = app.link_in_mail("a@inv.test", "/invitations/accept?token=").await;
    assert_ne!(first, second);
    let mut invitee = app.browser();
    assert_eq!(invitee.page(&first).await.0, 400);
    assert_eq!(invitee.page(&second).await.0, 200);
    // Revoke: the link is dead.
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations/{id}/revoke"), &[]).await.status(), 303);
    assert_eq!(invitee.page(&second).await.0, 400);
    // Decline.
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations"), &invite("b@inv.test")).await.status(), 303);
    let link = app.link_in_mail("b@inv.test", "/invitations/accept?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = invitee.submit(&link, "/invitations/decline", &[("token", &token)]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(invitee.page(&link).await.0, 400);
    // An invitation is bound to its address: another signed-in user can't take it.
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations"), &invite("c@inv.test")).await.status(), 303);
    let link = app.link_in_mail("c@inv.test", "/invitations/accept?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let mut thief = sign_up(&app, "thief@example.com").await;
    let (_, html) = thief.page(&link).await;
    assert!(html.contains("another address"), "{html}");
    let res = thief.submit(&link, "/invitations/accept", &[("token", &token)]).await;
    assert_ne!(res.status(), 303);
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = 'thief@example.com'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(members, 0);
    // Expired invitations don't work.
    app.clock.advance(time::Duration::days(8));
    assert_eq!(invitee.page(&link).await.0, 400);
}

#[tokio::test]
async fn the_permission_document_is_generated_from_the_matrix() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/permissions.md")).unwrap();
    assert_eq!(
        doc,
        clientflow::access::role::permissions_markdown(),
        "docs/permissions.md is stale: run `cargo run -p clientflow -- docs permissions > docs/permissions.md`"
    );
}

/// Routes anyone may call without signing in. Adding a public route means adding it here,
/// where a reviewer sees it.
const PUBLIC_ROUTES: &[&str] = &[
    "GET /",
    "GET /static/{file}",
    "GET /healthz",
    "GET /readyz",
    "GET /login",
    "POST /login",
    "GET /login/google",
    "GET /login/google/callback",
    "GET /signup",
    "POST /signup",
    "GET /signup/check-email",
    "GET /verify-email",
    "POST /verify-email",
    "GET /forgot-password",
    "POST /forgot-password",
    "GET /forgot-password/sent",
    "GET /reset-password",
    "POST /reset-password",
    "GET /account/email/confirm",
    "POST /account/email/confirm",
    "GET /invitations/accept",
    "POST /invitations/accept",
    "POST /invitations/decline",
    "GET /files/{org}/{file}",
    "GET /exports/{org}/{export}",
    "GET /api/v1/openapi.json",
    "GET /contact/{slug}",
    "POST /contact/{slug}",
    "GET /contact/{slug}/sent",
    // Unsubscribe links: the sealed token is the authorization (mail::unsubscribe).
    "GET /u/{token}",
    "POST /u/{token}",
    "GET /u/{token}/preferences",
    "POST /u/{token}/resubscribe",
    // Resend's events: the Svix signature is the authorization (mail::webhook).
    "POST /webhooks/resend",
    // Stripe's events: the Stripe-Signature is the authorization (billing::webhook).
    "POST /webhooks/stripe",
    // The security page, disclosure and the legal pages: public by design (disclosure/).
    "GET /security",
    "GET /.well-known/security.txt",
    "GET /security.txt",
    "GET /legal/subprocessors",
    "GET /legal/dpa",
    "GET /security/report",
    "POST /security/report",
    "GET /security/report/sent",
    // The status token is the authorization (stored hashed; disclosure::reports).
    "GET /security/report/status/{token}",
];

#[test]
fn every_route_declares_its_access_and_public_routes_are_intended() {
    let routes = clientflow::routes::all();
    assert!(routes.len() > 40);
    let mut seen = std::collections::HashSet::new();
    for r in &routes {
        let key = format!("{} {}", r.method, r.path);
        assert!(seen.insert(key.clone()), "{key} declared twice");
        match r.access {
            Access::Public => {
                assert!(PUBLIC_ROUTES.contains(&key.as_str()), "{key} is public but not in PUBLIC_ROUTES")
            }
            Access::Org(_) => {
                assert!(r.path.contains("{org}"), "{key}: organization access without an {{org}} segment")
            }
            _ => assert!(!r.path.contains("{org}"), "{key} has an {{org}} segment but isn't declared Org(permission)"),
        }
    }
    for p in PUBLIC_ROUTES {
        assert!(seen.contains(*p), "{p} is listed as public but doesn't exist");
    }
}

// ---- privilege escalation ----

async fn count(app: &TestApp, sql: &str, arg: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).bind(arg).fetch_one(&mut db).await.unwrap()
}

/// What the organization's people, invitations, keys and settings look like: a refused request
/// must leave all of it exactly as it was.
async fn org_state(app: &TestApp, org_id: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let row: (String,) = sqlx::query_as(
        "SELECT concat_ws(' | ', \
           (SELECT string_agg(user_id || ':' || role || ':' || status || ':' || coalesce(client_id::text, ''), ',' ORDER BY user_id) \
              FROM memberships WHERE organization_id = $1::uuid), \
           (SELECT string_agg(email || ':' || role, ',' ORDER BY email) FROM invitations WHERE organization_id = $1::uuid), \
           (SELECT string_agg(name || ':' || role || ':' || coalesce(array_to_string(permissions, '+'), ''), ',' ORDER BY name) \
              FROM api_keys WHERE organization_id = $1::uuid), \
           (SELECT string_agg(role || ':' || permission || ':' || granted, ',' ORDER BY role, permission) \
              FROM role_permissions WHERE organization_id = $1::uuid), \
           (SELECT string_agg(user_id || ':' || permission || ':' || granted, ',' ORDER BY user_id, permission) \
              FROM member_permissions WHERE organization_id = $1::uuid), \
           (SELECT concat_ws(':', id, slug, name, brand_color, timezone, currency, require_two_factor, session_timeout_minutes) \
              FROM organizations WHERE id = $1::uuid))",
    )
    .bind(org_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    row.0
}

/// An extra `role`, `organization_id`, `owner` or `is_owner` on any form that manages people,
/// keys or settings is refused, and nothing changes — on the forms of
/// members, invitations, settings (general, security, roles, per-member permissions), API keys,
/// organization creation and invitation acceptance.
#[tokio::test]
async fn mass_assignment_of_role_organization_and_owner_is_refused_on_every_form() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "smuggle").await;
    let other = org_with_every_role(&app, "target").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let smuggled: [(&str, &str); 5] = [
        ("role", "owner"),
        ("organization_id", other.id.as_str()),
        ("owner", "true"),
        ("is_owner", "on"),
        ("owner", "on"),
    ];
    let settings = [
        ("name", "Smuggled"),
        ("slug", "smuggle"),
        ("brand_color", "#112233"),
        ("timezone", "UTC"),
        ("currency", "EUR"),
    ];
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/o/{slug}/settings"), settings.to_vec()),
        (
            format!("/o/{slug}/settings/security"),
            vec![("session_timeout_minutes", "30"), ("current_password", PASSWORD)],
        ),
        (format!("/o/{slug}/settings/contact"), vec![("contact_email", "c@smuggle.test")]),
        (format!("/o/{slug}/invitations"), vec![("email", "new@smuggle.test"), ("role", "member"), ("client_id", "")]),
        (format!("/o/{slug}/members/{member_id}/role"), vec![("role", "manager"), ("client_id", "")]),
        (format!("/o/{slug}/members/{member_id}/permissions"), vec![("grant", "tasks.delete")]),
        (format!("/o/{slug}/settings/roles"), vec![("role", "member"), ("permission", "clients.read")]),
        (
            format!("/o/{slug}/settings/api-keys"),
            vec![("name", "Smuggled key"), ("role", "member"), ("expires_in_days", ""), ("current_password", PASSWORD)],
        ),
    ];
    let before = org_state(&app, &org.id).await;
    let other_before = org_state(&app, &other.id).await;
    for as_role in ["admin", "owner"] {
        for (path, fields) in &forms {
            for (name, value) in smuggled {
                // `role` is a real field of some forms: smuggle it twice there instead.
                let mut all = fields.clone();
                all.push((name, value));
                let b = &mut org.people.get_mut(as_role).unwrap().browser;
                let res = post(b, path, &all).await;
                assert_eq!(res.status(), 422, "{as_role}: {path} with {name}={value}");
            }
        }
    }
    assert_eq!(org_state(&app, &org.id).await, before, "a refused form changed the organization");
    assert_eq!(org_state(&app, &other.id).await, other_before, "a refused form changed another organization");

    // Creating an organization can't adopt another one's id or hand out roles.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    for (name, value) in smuggled {
        let res = admin.submit("/orgs/new", "/orgs", &[("name", "Adopted"), (name, value)]).await;
        assert_eq!(res.status(), 422, "/orgs with {name}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains(&format!("<strong>{name}</strong>: is not a field of this form")),
            "the refusal doesn't name {name}: {page}"
        );
    }
    assert_eq!(count(&app, "SELECT count(*) FROM organizations WHERE name = $1", "Adopted").await, 0);

    // The invitee can't pick a role (or an organization) when accepting.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = post(
        owner,
        &format!("/o/{slug}/invitations"),
        &[("email", "joiner@smuggle.test"), ("role", "member"), ("client_id", "")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let link = app.link_in_mail("joiner@smuggle.test", "/invitations/accept?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    for (name, value) in smuggled {
        let mut invitee = app.browser();
        let res = invitee
            .submit(
                &link,
                "/invitations/accept",
                &[("token", &token), ("password", PASSWORD), ("display_name", ""), (name, value)],
            )
            .await;
        assert_eq!(res.status(), 422, "accepting with {name}");
    }
    assert_eq!(role_of(&app, &slug, "joiner@smuggle.test").await, None);
    let mut invitee = app.browser();
    let res = invitee
        .submit(&link, "/invitations/accept", &[("token", &token), ("password", PASSWORD), ("display_name", "")])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(role_of(&app, &slug, "joiner@smuggle.test").await, Some(("member".into(), "active".into())));
    assert_eq!(role_of(&app, &slug, "admin@smuggle.test").await.unwrap().0, "admin");
}

/// The permissions of the Member role as the customization form sends them, plus `extra`.
fn member_role_form(extra: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    let mut fields = vec![("role", "member")];
    for p in default_permissions(Role::Member).iter().filter(|p| *p != Permission::OrgAccess) {
        fields.push(("permission", p.as_str()));
    }
    fields.extend(extra.iter().map(|p| ("permission", *p)));
    fields
}

/// Being handed `members.invite` or `members.manage` (per member, or through a customized
/// role) never lets anyone invite above their own role, promote themselves, or act on someone
/// above them.
#[tokio::test]
async fn nobody_invites_above_their_role_or_promotes_themselves() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "climb").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let manager_id = org.people["manager"].user_id.clone();
    let client_id = org.people["client"].user_id.clone();
    let admin_id = org.people["admin"].user_id.clone();

    // The Admin hands the Member both people permissions, and Managers `members.manage`.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let res = post(
        admin,
        &format!("/o/{slug}/members/{member_id}/permissions"),
        &[("grant", "members.invite"), ("grant", "members.manage")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let mut manager_role = vec![("role", "manager")];
    for p in default_permissions(Role::Manager).iter().filter(|p| *p != Permission::OrgAccess) {
        manager_role.push(("permission", p.as_str()));
    }
    manager_role.push(("permission", "members.manage"));
    assert_eq!(post(admin, &format!("/o/{slug}/settings/roles"), &manager_role).await.status(), 303);
    // Admins' own permissions are not customizable, not even by themselves.
    let res = post(admin, &format!("/o/{slug}/members/{admin_id}/permissions"), &[("grant", "org.transfer")]).await;
    assert_eq!(res.status(), 422);

    let member = &mut org.people.get_mut("member").unwrap().browser;
    for role in ["owner", "admin", "manager"] {
        let email = format!("{role}-by-member@climb.test");
        let res =
            post(member, &format!("/o/{slug}/invitations"), &[("email", &email), ("role", role), ("client_id", "")])
                .await;
        assert_eq!(res.status(), 403, "a Member invited a {role}");
    }
    let res = post(
        member,
        &format!("/o/{slug}/invitations"),
        &[("email", "peer@climb.test"), ("role", "member"), ("client_id", "")],
    )
    .await;
    assert_eq!(res.status(), 303, "inviting at one's own level is what the permission is for");
    // Self-promotion, and acting on people above.
    for role in ["manager", "admin", "owner"] {
        let res =
            post(member, &format!("/o/{slug}/members/{member_id}/role"), &[("role", role), ("client_id", "")]).await;
        assert_eq!(res.status(), 403, "a Member made themselves {role}");
        let res =
            post(member, &format!("/o/{slug}/members/{client_id}/role"), &[("role", role), ("client_id", "")]).await;
        assert_eq!(res.status(), 403, "a Member made someone else {role}");
    }
    for action in ["suspend", "remove"] {
        let res = post(member, &format!("/o/{slug}/members/{manager_id}/{action}"), confirmed(action)).await;
        assert_eq!(res.status(), 403, "a Member could {action} a Manager");
    }
    let res =
        post(member, &format!("/o/{slug}/members/{manager_id}/role"), &[("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 403, "a Member demoted a Manager");

    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    for role in ["admin", "owner"] {
        let res =
            post(manager, &format!("/o/{slug}/members/{manager_id}/role"), &[("role", role), ("client_id", "")]).await;
        assert_eq!(res.status(), 403, "a Manager made themselves {role}");
    }
    let res =
        post(manager, &format!("/o/{slug}/members/{admin_id}/role"), &[("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 403, "a Manager demoted an Admin");

    for (email, role) in [
        ("owner@climb.test", "owner"),
        ("admin@climb.test", "admin"),
        ("manager@climb.test", "manager"),
        ("member@climb.test", "member"),
        ("client@climb.test", "client"),
    ] {
        assert_eq!(role_of(&app, &slug, email).await, Some((role.into(), "active".into())), "{email}");
    }
    let invited: Vec<String> = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT email FROM invitations WHERE email LIKE '%@climb.test' ORDER BY email")
            .fetch_all(&mut db)
            .await
            .unwrap()
    };
    assert!(!invited.iter().any(|e| e.contains("-by-member")), "refused invitations were stored: {invited:?}");
}

/// A Manager whose role was given `roles.manage` customizes within the Admin bound and within
/// what they hold themselves, and never touches a role above their own; the same goes for a
/// Member given `roles.manage` by override.
#[tokio::test]
async fn a_manager_who_manages_roles_stays_within_bounds() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "bound").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let manager_id = org.people["manager"].user_id.clone();
    let roles = format!("/o/{slug}/settings/roles");
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let mut manager_role = vec![("role", "manager")];
    for p in default_permissions(Role::Manager).iter().filter(|p| *p != Permission::OrgAccess) {
        manager_role.push(("permission", p.as_str()));
    }
    let mut with_roles = manager_role.clone();
    with_roles.push(("permission", "roles.manage"));
    assert_eq!(post(admin, &roles, &with_roles).await.status(), 303);
    let before = org_state(&app, &org.id).await;

    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    assert_eq!(manager.get(&roles).await.status(), 200, "the customized role took effect");
    // Beyond the Admin bound: refused whoever asks.
    for p in ["billing.manage", "org.delete", "org.export", "ip_allowlist.manage", "org.transfer", "portal.read"] {
        let res = post(manager, &roles, &member_role_form(&[p])).await;
        assert!(matches!(res.status().as_u16(), 403 | 422), "{p} granted to Members: {}", res.status());
    }
    // Within the bound but beyond the Manager's own permissions.
    for p in ["audit.read", "members.manage", "settings.manage", "api_keys.manage", "members.invite"] {
        let res = post(manager, &roles, &member_role_form(&[p])).await;
        assert_eq!(res.status(), 403, "{p} granted to Members by a Manager");
        let mut own = with_roles.clone();
        own.push(("permission", p));
        let res = post(manager, &roles, &own).await;
        assert_eq!(res.status(), 403, "{p} granted to the Manager's own role");
        let res = post(manager, &format!("/o/{slug}/members/{manager_id}/permissions"), &[("grant", p)]).await;
        assert_eq!(res.status(), 403, "{p} granted to themselves");
        let res = post(manager, &format!("/o/{slug}/members/{member_id}/permissions"), &[("grant", p)]).await;
        assert_eq!(res.status(), 403, "{p} granted to a Member");
    }
    // Admin and Owner are not customizable at all.
    for role in ["admin", "owner", "client"] {
        let res = post(manager, &roles, &[("role", role), ("permission", "clients.read")]).await;
        assert_eq!(res.status(), 422, "{role} customized");
    }
    assert_eq!(org_state(&app, &org.id).await, before, "a refused customization changed something");
    // What the Manager holds may be handed on.
    let res = post(manager, &roles, &member_role_form(&["invoices.read"])).await;
    assert_eq!(res.status(), 303);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/invoices")).await.status(), 200);

    // A Member given `roles.manage` can't reshape the Manager role above them, not even by
    // taking permissions away from it.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let res = post(admin, &format!("/o/{slug}/members/{member_id}/permissions"), &[("grant", "roles.manage")]).await;
    assert_eq!(res.status(), 303);
    let before = org_state(&app, &org.id).await;
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let mut tightened = vec![("role", "manager")];
    for p in default_permissions(Role::Member).iter().filter(|p| *p != Permission::OrgAccess) {
        tightened.push(("permission", p.as_str()));
    }
    let (_, html) = member.page(&roles).await;
    assert!(html.contains("<h2>Member</h2>") && !html.contains("<h2>Manager</h2>"), "{html}");
    let res = post(member, &roles, &tightened).await;
    assert_eq!(res.status(), 403, "a Member reshaped the Manager role");
    let res = post(member, &format!("/o/{slug}/members/{manager_id}/permissions"), &[("deny", "clients.read")]).await;
    assert_eq!(res.status(), 403, "a Member took a Manager's permission away");
    assert_eq!(org_state(&app, &org.id).await, before);
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    assert_eq!(manager.get(&format!("/o/{slug}/clients")).await.status(), 200);
}

/// Creates an API key on the keys page as `b` and returns its secret (shown once).
async fn key_from_the_page(b: &mut Browser, slug: &str, name: &str, role: &str) -> String {
    let res = post(
        b,
        &format!("/o/{slug}/settings/api-keys"),
        &[("name", name), ("role", role), ("expires_in_days", ""), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let at = html.find("value=\"cf_live_").expect("the secret is shown");
    html[at + 7..].split('"').next().unwrap().to_string()
}

async fn api_status(app: &TestApp, key: &str, path: &str) -> u16 {
    app.client
        .get(app.url(path))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A key stands on its creator: suspending the creator stops it on the next request,
/// reactivating brings it back, removing the creator ends it for good.
#[tokio::test]
async fn an_api_key_stops_working_when_its_creator_is_suspended_or_removed() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "keyman").await;
    let slug = org.slug.clone();
    let admin_id = org.people["admin"].user_id.clone();
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let key = key_from_the_page(admin, &slug, "Admin's bot", "manager").await;
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let owners_key = key_from_the_page(owner, &slug, "Owner's bot", "manager").await;
    assert_eq!(api_status(&app, &key, "/api/v1/clients").await, 200);

    assert_eq!(post(owner, &format!("/o/{slug}/members/{admin_id}/suspend"), &[]).await.status(), 303);
    assert_eq!(api_status(&app, &key, "/api/v1/clients").await, 401, "the suspended creator's key still works");
    assert_eq!(api_status(&app, &key, &format!("/api/v1/clients/{}", org.client_id)).await, 401);
    assert_eq!(api_status(&app, &owners_key, "/api/v1/clients").await, 200, "other keys are untouched");

    assert_eq!(post(owner, &format!("/o/{slug}/members/{admin_id}/reactivate"), &[]).await.status(), 303);
    assert_eq!(api_status(&app, &key, "/api/v1/clients").await, 200);

    assert_eq!(post(owner, &format!("/o/{slug}/members/{admin_id}/remove"), &[("confirm", "yes")]).await.status(), 303);
    assert_eq!(api_status(&app, &key, "/api/v1/clients").await, 401, "the removed creator's key still works");
    assert_eq!(api_status(&app, &owners_key, "/api/v1/clients").await, 200);
}

/// Changing a role takes effect on the very next request of the person's existing session and
/// of the keys they made: nothing is cached from before.
#[tokio::test]
async fn a_downgraded_admin_loses_access_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "demote").await;
    let slug = org.slug.clone();
    let admin_id = org.people["admin"].user_id.clone();
    let member_id = org.people["member"].user_id.clone();
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    let key = key_from_the_page(admin, &slug, "Admin's key", "admin").await;
    let internal = [
        format!("/o/{slug}/settings"),
        format!("/o/{slug}/settings/security"),
        format!("/o/{slug}/settings/roles"),
        format!("/o/{slug}/settings/api-keys"),
        format!("/o/{slug}/audit"),
        format!("/o/{slug}/members/{member_id}/permissions"),
        format!("/o/{slug}/invoices"),
    ];
    for path in &internal {
        assert_eq!(admin.get(path).await.status(), 200, "{path} before");
    }
    let token = session_token(admin).await;
    assert_eq!(api_status(&app, &key, "/api/v1/invoices").await, 200);

    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res =
        post(owner, &format!("/o/{slug}/members/{admin_id}/role"), &[("role", "member"), ("client_id", "")]).await;
    assert_eq!(res.status(), 303);

    // The same browser, the same session, the same form token.
    let admin = &mut org.people.get_mut("admin").unwrap().browser;
    for path in &internal {
        assert_eq!(admin.get(path).await.status(), 403, "{path} after the downgrade");
    }
    let res = admin
        .post_with(
            &format!("/o/{slug}/invitations"),
            &[("email", "late@demote.test"), ("role", "admin"), ("client_id", "")],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = admin
        .post_with(
            &format!("/o/{slug}/members/{member_id}/role"),
            &[("role", "admin"), ("client_id", "")],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(admin.get(&format!("/o/{slug}/projects")).await.status(), 200, "still a Member");
    assert_eq!(api_status(&app, &key, "/api/v1/invoices").await, 401, "an Admin key outranks its creator now");
    assert_eq!(role_of(&app, &slug, "member@demote.test").await.unwrap().0, "member");
    assert_eq!(count(&app, "SELECT count(*) FROM invitations WHERE email = $1", "late@demote.test").await, 0);
}

/// An organization always keeps an active Owner: the last one (another Owner being suspended
/// doesn't count) can't leave, remove themselves, be demoted or suspend themselves; once another
/// Owner is active, leaving works.
#[tokio::test]
async fn the_last_active_owner_can_neither_leave_nor_be_demoted() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "lastone").await;
    let slug = org.slug.clone();
    let owner_id = org.people["owner"].user_id.clone();
    let admin_id = org.people["admin"].user_id.clone();
    // The Admin becomes a second Owner, then is suspended.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = post(owner, &format!("/o/{slug}/members/{admin_id}/role"), &[("role", "owner"), ("client_id", "")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(post(owner, &format!("/o/{slug}/members/{admin_id}/suspend"), &[]).await.status(), 303);

    assert_eq!(post(owner, &format!("/o/{slug}/leave"), &[]).await.status(), 409);
    assert_eq!(post(owner, &format!("/o/{slug}/members/{owner_id}/remove"), &[("confirm", "yes")]).await.status(), 409);
    for role in ["admin", "member"] {
        let res = post(
            owner,
            &format!("/o/{slug}/members/{owner_id}/role"),
            &[("role", role), ("client_id", ""), ("current_password", PASSWORD), ("confirming", "1")],
        )
        .await;
        assert_eq!(res.status(), 409, "the last active Owner became {role}");
    }
    assert_eq!(post(owner, &format!("/o/{slug}/members/{owner_id}/suspend"), &[]).await.status(), 403);
    assert_eq!(role_of(&app, &slug, "owner@lastone.test").await, Some(("owner".into(), "active".into())));
    // The suspended Owner can't act at all.
    let suspended = &mut org.people.get_mut("admin").unwrap().browser;
    assert_eq!(suspended.get(&format!("/o/{slug}")).await.status(), 404);

    // With another active Owner, the first may go.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(post(owner, &format!("/o/{slug}/members/{admin_id}/reactivate"), &[]).await.status(), 303);
    let res = post(owner, &format!("/o/{slug}/leave"), &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app");
    assert_eq!(role_of(&app, &slug, "owner@lastone.test").await, None);
    // And now the former Admin is the last Owner.
    let remaining = &mut org.people.get_mut("admin").unwrap().browser;
    assert_eq!(post(remaining, &format!("/o/{slug}/leave"), &[]).await.status(), 409);
    let res = post(
        remaining,
        &format!("/o/{slug}/members/{admin_id}/role"),
        &[("role", "admin"), ("client_id", ""), ("current_password", PASSWORD), ("confirming", "1")],
    )
    .await;
    assert_eq!(res.status(), 409);
}

async fn invitation_id(app: &TestApp, email: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM invitations WHERE email = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(email)
            .fetch_one(&mut db)
            .await
            .unwrap();
    id.to_string()
}

/// Someone who signs up without the invitation link finds the invitations to their verified
/// address on the getting-started page and accepts one there. Nobody can list or accept an
/// invitation to another address by its id, nor with an unverified address, nor a revoked or
/// expired one.
#[tokio::test]
async fn pending_invitations_wait_on_getting_started_and_are_accepted_from_there() {
    let app = TestApp::spawn().await;
    let mut owner = sign_up(&app, "owner@inviters.test").await;
    let slug = create_org(&mut owner, "Inviters").await;
    let mut other = sign_up(&app, "owner@others.test").await;
    let other_slug = create_org(&mut other, "Others Ltd").await;
    let invite = |email: &'static str| [("email", email), ("role", "member"), ("client_id", "")];
    for email in ["newbie@example.com", "gone@example.com", "late@example.com"] {
        assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations"), &invite(email)).await.status(), 303);
    }
    assert_eq!(
        post(&mut other, &format!("/o/{other_slug}/invitations"), &invite("someone@example.com")).await.status(),
        303
    );
    let mine = invitation_id(&app, "newbie@example.com").await;
    let theirs = invitation_id(&app, "someone@example.com").await;
    let revoked = invitation_id(&app, "gone@example.com").await;
    let expired = invitation_id(&app, "late@example.com").await;
    assert_eq!(post(&mut owner, &format!("/o/{slug}/invitations/{revoked}/revoke"), &[]).await.status(), 303);
    // Invited under another spelling of the same address: still the same mailbox.
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE invitations SET email = 'NewBie@Example.com' WHERE id = $1::uuid")
        .bind(&mine)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE invitations SET email = 'newbie@example.com', expires_at = now() - interval '1 minute' WHERE id = $1::uuid")
        .bind(&expired)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE invitations SET email = 'newbie@example.com' WHERE id = $1::uuid")
        .bind(&revoked)
        .execute(&mut db)
        .await
        .unwrap();

    // Signed up without the link: getting started lists exactly the open invitation.
    let mut newbie = sign_up(&app, "newbie@example.com").await;
    let (status, html) = newbie.page("/app").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Invitations waiting for you")
            && html.contains("<strong>Inviters</strong> invited you as Member")
    );
    assert!(html.contains(&format!("action=\"/invitations/{mine}/join\"")), "{html}");
    assert!(html.contains("Create organization"), "creating one stays on offer");
    for hidden in [&theirs, &revoked, &expired] {
        assert!(!html.contains(hidden.as_str()), "{hidden} is not theirs to see");
    }
    assert!(!html.contains("Others Ltd"));

    // Another address's invitation, a revoked one, an expired one, a made-up one: refused, nothing written.
    for id in [&theirs, &revoked, &expired, &uuid::Uuid::now_v7().to_string()] {
        let res = post(&mut newbie, &format!("/invitations/{id}/join"), &[]).await;
        assert_eq!(res.status(), 400, "{id}");
        assert!(res.text().await.unwrap().contains("no longer open, or it is for another email address"));
    }
    assert_eq!(post(&mut newbie, "/invitations/not-an-id/join", &[]).await.status(), 404);
    assert_eq!(role_of(&app, &other_slug, "newbie@example.com").await, None);
    assert_eq!(role_of(&app, &slug, "newbie@example.com").await, None);
    // Without the session's CSRF token: refused.
    assert_eq!(newbie.post_with(&format!("/invitations/{mine}/join"), &[], None, true).await.status(), 403);

    // An unverified address proves nothing: no list, no accepting.
    sqlx::query("UPDATE users SET email_verified_at = NULL WHERE email = 'newbie@example.com'")
        .execute(&mut db)
        .await
        .unwrap();
    let (_, html) = newbie.page("/app").await;
    assert!(!html.contains(&mine), "an unverified address sees no invitation");
    assert_eq!(post(&mut newbie, &format!("/invitations/{mine}/join"), &[]).await.status(), 400);
    sqlx::query("UPDATE users SET email_verified_at = now() WHERE email = 'newbie@example.com'")
        .execute(&mut db)
        .await
        .unwrap();

    // Accepting: the membership, the invitation closed, both audited; then the organization opens.
    let res = post(&mut newbie, &format!("/invitations/{mine}/join"), &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/o/{slug}"));
    assert_eq!(role_of(&app, &slug, "newbie@example.com").await, Some(("member".into(), "active".into())));
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT e.action FROM audit_events e JOIN organizations o ON o.id = e.organization_id \
         JOIN users u ON u.id::text = e.actor_id \
         WHERE o.slug = $1 AND u.email = 'newbie@example.com' AND e.action IN ('invitation.accepted', 'member.added') \
         ORDER BY e.action",
    )
    .bind(&slug)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(events, ["invitation.accepted", "member.added"]);
    assert_eq!(location(&newbie.get("/app").await), format!("/o/{slug}"));
    // Once accepted it is no longer open.
    assert_eq!(post(&mut newbie, &format!("/invitations/{mine}/join"), &[]).await.status(), 400);
}

/// A logo is decoded, scaled to fit 256 pixels and stored as a fresh PNG: never the uploaded
/// bytes (no metadata, no crafted chunk). An image that doesn't decode, or whose header claims
/// dimensions that would exhaust memory, is refused naming the field, never a 500.
#[tokio::test]
async fn a_logo_is_scaled_and_stored_as_a_fresh_png() {
    use clientflow::platform::error::DomainError;
    let app = TestApp::spawn().await;
    let org = crate::support::seed_org(&app.app_db, "logos").await;
    let ctx = crate::support::api::ctx(&app);
    let mut big = image::RgbImage::new(800, 400);
    for (x, _, px) in big.enumerate_pixels_mut() {
        *px = image::Rgb([(x % 256) as u8, 80, 160]);
    }
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(big).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    clientflow::tenancy::service::set_logo(&app.app_db, &ctx, &org.principal, &jpeg).await.unwrap();
    let mut db = app.db.admin_conn().await;
    let (content_type, stored): (String, Vec<u8>) =
        sqlx::query_as("SELECT content_type, bytes FROM organization_logos WHERE organization_id = $1")
            .bind(org.id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(content_type, "image/png");
    assert_ne!(stored, jpeg);
    let decoded = image::load_from_memory_with_format(&stored, image::ImageFormat::Png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (256, 128), "scaled to fit, proportions kept");

    // A PNG whose header claims 100,000 × 100,000 pixels, and one that is only a header.
    let claims_huge = {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        let ihdr = [&100_000u32.to_be_bytes()[..], &100_000u32.to_be_bytes()[..], &[8, 2, 0, 0, 0]].concat();
        png.extend_from_slice(&ihdr);
        let mut crc_input = b"IHDR".to_vec();
        crc_input.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        png.extend_from_slice(b"\x00\x00\x00\x00IEND\xae\x42\x60\x82");
        png
    };
    for bad in [claims_huge, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(), [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3].to_vec()] {
        match clientflow::tenancy::service::set_logo(&app.app_db, &ctx, &org.principal, &bad).await {
            Err(DomainError::Invalid(fields)) => assert_eq!(fields[0].field, "logo"),
            other => panic!("{other:?}"),
        }
    }
    let after: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM organization_logos WHERE organization_id = $1")
        .bind(org.id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(after, stored, "a refused logo changes nothing");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
