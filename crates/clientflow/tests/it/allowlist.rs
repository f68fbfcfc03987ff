//! IP allowlists per organization, through HTTP: the app trusts the test's loopback address as
//! a proxy, so each browser can present the client address of its choice in
//! `X-Forwarded-For`, exactly as a browser behind a real proxy would.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;

use crate::support::accounts::PASSWORD;
use crate::support::orgs::{create_org, invite_and_join, session_token};
use crate::support::{api_key, org_id, routes_with_an_api_route};

const OFFICE: &str = "203.0.113.10";

async fn proxied_app() -> TestApp {
    TestApp::builder()
        .config(|c| c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .routes(routes_with_an_api_route)
        .spawn()
        .await
}

/// Signs up in a fresh browser that appears to come from `addr`.
async fn person_at(app: &TestApp, email: &str, addr: &str) -> Browser {
    let mut b = app.browser().from_address(addr);
    let res =
        b.submit("/signup", "/signup", &[("email", email), ("password", crate::support::accounts::PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    let link = app.link_in_mail(email, "/verify-email?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = b.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), 303);
    b
}

async fn save(b: &mut Browser, slug: &str, list: &str, confirm: bool) -> reqwest::Response {
    let token = session_token(b).await;
    let mut fields = vec![("ip_allowlist", list), ("current_password", PASSWORD)];
    if confirm {
        fields.push(("confirm_lockout", "on"));
    }
    b.post_with(&format!("/o/{slug}/settings/allowlist"), &fields, Some(&token), true).await
}

async fn status_from(b: &mut Browser, addr: &str, path: &str) -> u16 {
    b.forwarded_for = Some(addr.to_string());
    b.get(path).await.status().as_u16()
}

async fn stored(app: &TestApp, slug: &str) -> Vec<String> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT e::text FROM organizations, unnest(ip_allowlist) AS e WHERE slug = $1")
        .bind(slug)
        .fetch_all(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn inside_and_outside_for_ipv4_ipv6_and_ipv4_mapped_addresses() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@allow.test", OFFICE).await;
    let slug = create_org(&mut owner, "Allow").await;
    let mut member = invite_and_join(&app, &mut owner, &slug, "member@allow.test", "member", None).await;
    let res = save(&mut owner, &slug, "203.0.113.0/24 # office\n2001:db8:1::/48\n::ffff:198.51.100.0/120", false).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(stored(&app, &slug).await, ["203.0.113.0/24", "2001:db8:1::/48", "198.51.100.0/24"]);

    let home = format!("/o/{slug}");
    for (addr, expected) in [
        ("203.0.113.77", 200),
        ("::ffff:203.0.113.77", 200),
        ("198.51.100.20", 200),
        ("::ffff:198.51.100.20", 200),
        ("2001:db8:1:ffff::5", 200),
        ("203.0.114.1", 403),
        ("::ffff:203.0.114.1", 403),
        ("2001:db8:2::5", 403),
        ("192.0.2.1", 403),
    ] {
        assert_eq!(status_from(&mut owner, addr, &home).await, expected, "owner from {addr}");
        assert_eq!(status_from(&mut member, addr, &format!("/o/{slug}/members")).await, expected, "member from {addr}");
    }
    // The refusal explains itself and names the address seen.
    member.forwarded_for = Some("192.0.2.1".into());
    let res = member.get(&home).await;
    let page = res.text().await.unwrap();
    assert!(page.contains("approved network addresses") && page.contains("192.0.2.1"), "{page}");
    // It is per organization: the rest of the account still works from anywhere.
    assert_eq!(status_from(&mut member, "192.0.2.1", "/orgs").await, 200);
    assert_eq!(status_from(&mut member, "192.0.2.1", "/account/security").await, 200);
    // Signing in from outside succeeds, but the organization stays closed.
    let mut traveller = app.browser().from_address("192.0.2.50");
    let res = crate::support::accounts::sign_in(
        &app,
        &mut traveller,
        "member@allow.test",
        crate::support::accounts::PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(traveller.get(&home).await.status(), 403);
}

#[tokio::test]
async fn api_keys_from_outside_are_refused_with_a_problem_body() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@api.test", OFFICE).await;
    let slug = create_org(&mut owner, "Api").await;
    let key = api_key(&app, org_id(&app, &slug).await, "integration").await;
    let call = async |addr: &str| {
        app.client
            .get(app.url("/api/v1/test/whoami"))
            .bearer_auth(&key)
            .header("x-forwarded-for", addr)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(call("192.0.2.1").await.status(), 200, "no list: everywhere");
    assert_eq!(save(&mut owner, &slug, "203.0.113.0/24\n2001:db8:1::/48", false).await.status(), 303);
    let res = call("192.0.2.1").await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("approved network addresses"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("192.0.2.1"), "{body}");
    assert_eq!(call("203.0.113.200").await.text().await.unwrap(), "203.0.113.200");
    assert_eq!(call("::ffff:203.0.113.201").await.status(), 200);
    assert_eq!(call("2001:db8:1::9").await.status(), 200);
    assert_eq!(call("2001:db8:9::9").await.status(), 403);
}

/// Without a trusted proxy, `X-Forwarded-For` is the client's own claim and is ignored.
#[tokio::test]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_does_not_get_in() {
    let app = TestApp::builder().routes(routes_with_an_api_route).spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@spoof.test").await;
    let slug = create_org(&mut owner, "Spoof").await;
    let key = api_key(&app, org_id(&app, &slug).await, "k").await;
    // The owner (at 127.0.0.1) confirms a list without their own address: locked out.
    assert_eq!(save(&mut owner, &slug, "203.0.113.0/24", true).await.status(), 303);
    assert_eq!(status_from(&mut owner, "203.0.113.5", &format!("/o/{slug}")).await, 403);
    owner.forwarded_for = Some("203.0.113.5".into());
    let res = owner.get(&format!("/o/{slug}")).await;
    assert!(res.text().await.unwrap().contains("127.0.0.1"), "the refusal names the real address");
    let res = app
        .client
        .get(app.url("/api/v1/test/whoami"))
        .bearer_auth(&key)
        .header("x-forwarded-for", "203.0.113.5")
        .header("forwarded", "for=203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn saving_a_list_that_locks_the_saver_out_needs_confirmation() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@lock.test", OFFICE).await;
    let slug = create_org(&mut owner, "Lock").await;
    let res = save(&mut owner, &slug, "198.51.100.0/24", false).await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains(OFFICE) && page.contains("lock you out"), "{page}");
    assert!(page.contains(r#"name="confirm_lockout""#), "the page offers the confirmation");
    assert!(page.contains("198.51.100.0/24"), "the submitted list is kept in the form");
    assert!(stored(&app, &slug).await.is_empty(), "nothing saved");
    // Malformed entries are named by line.
    let res = save(&mut owner, &slug, "203.0.113.0/24\nnot-an-address", false).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("line 2"));
    // Only the Owner may change it: an Admin sees it but can't save.
    let mut admin = invite_and_join(&app, &mut owner, &slug, "admin@lock.test", "admin", None).await;
    admin.forwarded_for = Some(OFFICE.into());
    let (status, page) = admin.page(&format!("/o/{slug}/settings/security")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Only an Owner can change the allowlist"), "{page}");
    assert_eq!(save(&mut admin, &slug, "", false).await.status(), 403);
    // Confirmed: saved, and the owner is out at once.
    assert_eq!(save(&mut owner, &slug, "198.51.100.0/24", true).await.status(), 303);
    assert_eq!(stored(&app, &slug).await, ["198.51.100.0/24"]);
    assert_eq!(status_from(&mut owner, OFFICE, &format!("/o/{slug}")).await, 403);
}

#[tokio::test]
async fn removing_the_list_restores_access_and_every_change_is_audited() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@undo.test", OFFICE).await;
    let slug = create_org(&mut owner, "Undo").await;
    let mut member = invite_and_join(&app, &mut owner, &slug, "member@undo.test", "member", None).await;
    let members = format!("/o/{slug}/members");
    assert_eq!(save(&mut owner, &slug, OFFICE, false).await.status(), 303);
    assert_eq!(status_from(&mut member, "192.0.2.7", &members).await, 403);
    assert_eq!(save(&mut owner, &slug, "203.0.113.0/24\n2001:db8::/32", false).await.status(), 303);
    assert_eq!(save(&mut owner, &slug, "", false).await.status(), 303);
    assert_eq!(status_from(&mut member, "192.0.2.7", &members).await, 200);
    let mut db = app.db.admin_conn().await;
    let changes: Vec<(String, String, serde_json::Value, serde_json::Value, Option<String>)> = sqlx::query_as(
        "SELECT actor_type, actor_label, before, after, host(ip) FROM audit_events \
         WHERE action = 'organization.ip_allowlist_changed' ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let lists: Vec<(serde_json::Value, serde_json::Value)> =
        changes.iter().map(|(_, _, b, a, _)| (b["ip_allowlist"].clone(), a["ip_allowlist"].clone())).collect();
    assert_eq!(
        lists,
        [
            (serde_json::json!([]), serde_json::json!([OFFICE])),
            (serde_json::json!([OFFICE]), serde_json::json!(["203.0.113.0/24", "2001:db8::/32"])),
            (serde_json::json!(["203.0.113.0/24", "2001:db8::/32"]), serde_json::json!([])),
        ]
    );
    for (actor_type, label, _, _, ip) in &changes {
        assert_eq!((actor_type.as_str(), label.as_str()), ("user", "owner@undo.test"));
        assert_eq!(ip.as_deref(), Some(OFFICE), "the audit records the client address");
    }
}

/// The recovery for an Owner who locked everyone out: the operator clears the list with the
/// command line, which the organization's audit log records under a system actor.
#[tokio::test]
async fn the_operator_clears_the_list_from_the_command_line() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@rescue.test", OFFICE).await;
    let slug = create_org(&mut owner, "Rescue").await;
    assert_eq!(save(&mut owner, &slug, "198.51.100.0/24", true).await.status(), 303);
    assert_eq!(status_from(&mut owner, OFFICE, &format!("/o/{slug}")).await, 403);

    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&app.db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&app.db.owner, Some(&passwords.owner));
    let auditor_url = crate::support::url_of(&app.db.auditor, Some(&passwords.auditor));
    let data_dir = app.config.data_dir.clone();
    let run = move |args: Vec<String>, with_auditor: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clientflow"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args)
            .env("CLIENTFLOW_DATA_DIR", &data_dir)
            .env("DATABASE_URL", &app_url)
            .env("CLIENTFLOW_DATABASE__ADMIN_URL", &owner_url);
        if with_auditor {
            c.env("CLIENTFLOW_DATABASE__AUDITOR_URL", &auditor_url);
        }
        c.output().unwrap()
    };
    let run = std::sync::Arc::new(run);
    let cli = async |args: &[&str], with_auditor: bool| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = run.clone();
        tokio::task::spawn_blocking(move || r(args, with_auditor)).await.unwrap()
    };
    let id = org_id(&app, &slug).await.to_string();
    let out = cli(&["org", "allowlist", "show", "--org", &id], false).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "198.51.100.0/24");
    // A slug needs the auditor role to be looked up; the message says so.
    let out = cli(&["org", "allowlist", "clear", "--org", &slug], false).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUDITOR_URL"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["org", "allowlist", "clear", "--org", &slug, "--reason", "ticket 42"], true).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("removed the IP allowlist") && stdout.contains("198.51.100.0/24"), "{stdout}");
    assert_eq!(status_from(&mut owner, OFFICE, &format!("/o/{slug}")).await, 200, "the owner is back in");
    let out = cli(&["org", "allowlist", "clear", "--org", &id], false).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("already empty"));

    let mut db = app.db.admin_conn().await;
    let (actor_type, label, before, after): (String, String, serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT actor_type, actor_label, before, after FROM audit_events \
         WHERE action = 'organization.ip_allowlist_changed' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(actor_type, "system");
    assert!(label.contains("operator") && label.contains("ticket 42"), "{label}");
    assert_eq!(before["ip_allowlist"], serde_json::json!(["198.51.100.0/24"]));
    assert_eq!(after["ip_allowlist"], serde_json::json!([]));
    // The chain still verifies with the new, operator-written event in it.
    let out = cli(&["audit", "verify", "--org", &slug], true).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A signed download link is a bearer capability, but not a way around the list: from outside
/// it is refused like any other download, from inside it serves the file.
#[tokio::test]
async fn signed_file_links_are_held_to_the_list() {
    let app = proxied_app().await;
    let mut owner = person_at(&app, "owner@links.test", OFFICE).await;
    let slug = create_org(&mut owner, "Links").await;
    let org = org_id(&app, &slug).await;
    let key = api_key(&app, org, "integration").await;
    let api = async |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = app.client.request(method, app.url(path)).bearer_auth(&key).header("x-forwarded-for", OFFICE);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json::<serde_json::Value>().await.unwrap()
    };
    let project = api(reqwest::Method::POST, "/api/v1/projects", Some(serde_json::json!({"name": "Site"}))).await;
    let project: clientflow::platform::ids::ProjectId = project["data"]["id"].as_str().unwrap().parse().unwrap();
    let principal = clientflow::access::operator(
        &app.app_db,
        &crate::support::operator(),
        org.to_string().parse().unwrap(),
        "test",
    )
    .await
    .unwrap()
    .unwrap();
    let ctx = clientflow::audit::Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()));
    let up = clientflow::work::files::Upload {
        project_id: project,
        task_id: None,
        name: "plan.txt",
        bytes: b"the plan".to_vec(),
        shared_with_client: false,
    };
    let meta = clientflow::work::files::upload(
        &app.app_db,
        &app.state.storage,
        &app.state.keys,
        1 << 20,
        &ctx,
        &principal,
        up,
    )
    .await
    .unwrap();
    let file = api(reqwest::Method::GET, &format!("/api/v1/files/{}", meta.id), None).await;
    let url = file["data"]["download_url"].as_str().unwrap();
    let path = &url[url.find("/files/").unwrap()..];
    let fetch = async |addr: &str| app.client.get(app.url(path)).header("x-forwarded-for", addr).send().await.unwrap();
    assert_eq!(fetch("192.0.2.1").await.status(), 200, "no list: the link works anywhere");

    assert_eq!(save(&mut owner, &slug, "203.0.113.0/24", false).await.status(), 303);
    let res = fetch("192.0.2.1").await;
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(body.contains("approved network addresses") && !body.contains("the plan"), "{body}");
    let res = fetch("::ffff:203.0.113.9").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"the plan");

    // Handing out the link is on the record, whichever surface did it.
    let mut db = app.db.admin_conn().await;
    let issued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'file.link_issued'",
    )
    .bind(org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(issued, 1);
}
