//! Data residency: with two regions (two databases, two file stores), an organization's rows and
//! files are only ever in its own region's, whatever its people do on the pages and through the
//! API; the directory (accounts, sessions, the organization → region map) is in the default
//! region only. Scans are catalog-driven: every table with an `organization_id` column, so a
//! table added later is scanned too. `docs/security/residency.md`.

use std::path::Path;

use clientflow::access::{self, OrgTx};
use clientflow::platform::db::RegionId;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};
use serde_json::json;
use sqlx::PgConnection;

use crate::support::accounts::{PASSWORD, sign_up};
use crate::support::api;
use crate::support::orgs::{create_org, invite_and_join, session_token};

async fn two_regions() -> TestApp {
    TestApp::builder().region("eu").spawn().await
}

/// Every table of the schema with an `organization_id` column (the tenant tables).
async fn tenant_tables(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The tables of `conn`'s database holding rows of `org` (as the superuser: no row-level
/// security), with their counts. `organizations` is keyed by `id`.
async fn rows_of(conn: &mut PgConnection, org: uuid::Uuid) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    let mut tables = tenant_tables(conn).await;
    assert!(tables.len() > 20, "the catalog lists the tenant tables: {tables:?}");
    tables.push("organizations".into());
    for t in tables {
        let key = if t == "organizations" { "id" } else { "organization_id" };
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE {key} = $1"))
            .bind(org)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if n > 0 {
            found.push((t, n));
        }
    }
    found
}

/// Every file under `dir` whose path mentions `org`.
fn files_of(dir: &Path, org: uuid::Uuid) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if path.to_string_lossy().contains(&org.to_string()) {
            out.push(path.display().to_string());
        }
        if path.is_dir() {
            out.extend(files_of(&path, org));
        }
    }
    out
}

async fn org_id(app: &TestApp, region: &str, slug: &str) -> uuid::Uuid {
    let mut db = app.region_db(region).admin_conn().await;
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1").bind(slug).fetch_one(&mut db).await.unwrap()
}

/// An Owner signed up as `owner@<name>.test`, and their organization `name`, made in the
/// default region: the Owner, the slug and the organization's id.
async fn owned_in_us(app: &TestApp, name: &str) -> (Browser, String, uuid::Uuid) {
    let mut owner = sign_up(app, &format!("owner@{name}.test")).await;
    let slug = create_org(&mut owner, name).await;
    let uuid = org_id(app, "us", &slug).await;
    (owner, slug, uuid)
}

async fn post(b: &Browser, token: &str, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    b.post_with(path, fields, Some(token), true).await
}

async fn redirected(res: reqwest::Response) -> String {
    let status = res.status();
    let loc = location(&res);
    assert_eq!(status, 303, "{}", res.text().await.unwrap_or_default());
    loc
}

fn id_in(loc: &str, kind: &str) -> String {
    let at = loc.find(&format!("/{kind}/")).unwrap_or_else(|| panic!("{loc} has no /{kind}/"));
    loc[at + kind.len() + 2..].split(['/', '#', '?']).next().unwrap().to_string()
}

/// Creates an organization from the form, in `region` (none: the form's default).
async fn create_in(b: &mut Browser, name: &str, region: Option<&str>) -> reqwest::Response {
    let mut fields = vec![("name", name)];
    if let Some(r) = region {
        fields.push(("region", r));
    }
    b.submit("/orgs/new", "/orgs", &fields).await
}

/// A multipart upload of a small text file on the project's files tab.
async fn upload(b: &Browser, token: &str, path: &str, name: &str, bytes: &[u8]) -> reqwest::Response {
    let boundary = "----clientflow-residency-1";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b.client
        .post(b.url(path))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("origin", b.base_url.clone())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Every feature once, on the pages and through the API, as the organization's Owner: clients,
/// projects, tasks, comments, time, invoices, files, an invitation accepted, an API key and the
/// API, the audit log.
/// Returns the API key it made.
async fn tour(app: &TestApp, owner: &mut Browser, slug: &str, tag: &str) -> String {
    let token = session_token(owner).await;
    let o = |p: &str| format!("/o/{slug}{p}");
    let client = id_in(
        &redirected(post(owner, &token, &o("/clients"), &[("name", &format!("{tag} client"))]).await).await,
        "clients",
    );
    let fields = [("name", "Website"), ("client_id", client.as_str()), ("status", "active")];
    let project = id_in(&redirected(post(owner, &token, &o("/projects"), &fields).await).await, "projects");
    redirected(
        post(owner, &token, &o(&format!("/projects/{project}/tasks")), &[("title", &format!("{tag} task"))]).await,
    )
    .await;
    let (status, html) = owner.page(&o(&format!("/projects/{project}"))).await;
    assert_eq!(status, 200, "{html}");
    let task = html
        .split(&format!("/o/{slug}/tasks/"))
        .nth(1)
        .expect("a task link")
        .split(['"', '/', '#'])
        .next()
        .unwrap()
        .to_string();
    redirected(post(owner, &token, &o(&format!("/tasks/{task}/comments")), &[("body", "Looks good")]).await).await;
    redirected(
        post(owner, &token, &o(&format!("/projects/{project}/time")), &[("minutes", "45"), ("task_id", &task)]).await,
    )
    .await;
    let invoice =
        [("client_id", client.as_str()), ("description_0", "Design"), ("quantity_0", "2"), ("price_0", "100")];
    redirected(post(owner, &token, &o("/invoices"), &invoice).await).await;
    let res = upload(owner, &token, &o(&format!("/projects/{project}/files")), "brief.txt", b"the brief").await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    // A colleague joins through the emailed invitation (mail queued in the region's outbox).
    invite_and_join(app, owner, slug, &format!("member@{tag}.test"), "member", None).await;
    // An API key from the settings page, then the API.
    let res = post(
        owner,
        &token,
        &o("/settings/api-keys"),
        &[("name", "ci"), ("role", "manager"), ("expires_in_days", ""), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let start = html.find("cf_live_").expect("the page shows the new key");
    let key: String =
        html[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    // A key names its organization's region when that is not the default one (where it is
    // looked for first); a key of the default region is as it always was.
    let region: String = sqlx::query_scalar("SELECT region FROM organization_directory WHERE slug = $1")
        .bind(slug)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    if region == "us" {
        assert_eq!(key.len(), "cf_live_".len() + 43, "{key}");
    } else {
        assert!(key.starts_with(&format!("cf_live_{region}_")), "{key}");
        // The region is part of the key: moved to another region's name, it is no key at all.
        let forged = key.replacen(&format!("cf_live_{region}_"), "cf_live_us_", 1);
        assert_eq!(api::get(app, "/api/v1/tasks", &forged).await.status, 401);
        let bare = key.replacen(&format!("cf_live_{region}_"), "cf_live_", 1);
        assert_eq!(api::get(app, "/api/v1/tasks", &bare).await.status, 401);
    }
    let res =
        api::post(app, "/api/v1/tasks", &key, json!({"project_id": project, "title": format!("{tag} api task")})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let api_task = res.id();
    let res = api::post(app, &format!("/api/v1/tasks/{api_task}/comments"), &key, json!({"body": "via the API"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let res = api::post(app, "/api/v1/time-entries", &key, json!({"project_id": project, "minutes": 30})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let res = api::post(app, "/api/v1/invoices", &key, json!({"client_id": client})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let res = api::upload(app, &key, &[("project_id", &project)], Some(("api.txt", b"from the api"))).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(api::get(app, "/api/v1/tasks", &key).await.status, 200);
    // The audit log shows what happened.
    let (status, html) = owner.page(&o("/audit")).await;
    assert_eq!(status, 200);
    assert!(html.contains("file.uploaded") || html.contains("task.created"), "{html}");
    app.deliver_mail().await;
    key
}

#[tokio::test]
async fn an_account_disabled_by_the_operator_loses_its_keys_in_every_region() {
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@disabled.test").await;
    let res = create_in(&mut owner, "disabled", Some("eu")).await;
    let slug = location(&res).trim_start_matches("/o/").to_string();
    let key = tour(&app, &mut owner, &slug, "disabled").await;
    for _ in 0..2 {
        assert_eq!(api::get(&app, "/api/v1/tasks", &key).await.status, 200, "kept by the server");
    }
    // What `clientflow user disable` does: the account in the directory's region, then its
    // copies in the others (where the key's check reads it).
    let user: clientflow::platform::ids::UserId =
        crate::support::orgs::user_id(&app, "owner@disabled.test").await.parse().unwrap();
    let now = app.clock.now_utc();
    let mut tx = app.app_db.global().await.unwrap();
    clientflow::identity::repo::set_disabled(&mut tx, user, true, now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(api::get(&app, "/api/v1/tasks", &key).await.status, 200, "the eu copy doesn't know yet");
    clientflow::access::departure::copy_disabled(&app.app_db, user, Some(now)).await.unwrap();
    assert_eq!(api::get(&app, "/api/v1/tasks", &key).await.status, 401, "disabled in the key's region too");
    let mut tx = app.app_db.global().await.unwrap();
    clientflow::identity::repo::set_disabled(&mut tx, user, false, now).await.unwrap();
    tx.commit().await.unwrap();
    clientflow::access::departure::copy_disabled(&app.app_db, user, None).await.unwrap();
    assert_eq!(api::get(&app, "/api/v1/tasks", &key).await.status, 200, "enabled again");
}

#[tokio::test]
async fn each_organization_lives_only_in_its_region() {
    let app = two_regions().await;
    let mut us_owner = sign_up(&app, "owner@usco.test").await;
    let us_slug = create_org(&mut us_owner, "usco").await;
    let mut eu_owner = sign_up(&app, "owner@euco.test").await;
    let res = create_in(&mut eu_owner, "euco", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let eu_slug = location(&res).trim_start_matches("/o/").to_string();

    tour(&app, &mut us_owner, &us_slug, "usco").await;
    tour(&app, &mut eu_owner, &eu_slug, "euco").await;

    let us_org = org_id(&app, "us", &us_slug).await;
    let eu_org = org_id(&app, "eu", &eu_slug).await;
    let mut us = app.region_db("us").admin_conn().await;
    let mut eu = app.region_db("eu").admin_conn().await;

    // Each organization's rows are all in its own region, and at least one of each kind the
    // tour made.
    let eu_rows = rows_of(&mut eu, eu_org).await;
    let us_rows = rows_of(&mut us, us_org).await;
    for table in [
        "organizations",
        "memberships",
        "clients",
        "projects",
        "tasks",
        "task_comments",
        "time_entries",
        "invoices",
        "files",
        "invitations",
        "api_keys",
        "audit_events",
    ] {
        let present = |rows: &[(String, i64)]| rows.iter().any(|(t, _)| t == table);
        assert!(
            present(&eu_rows) || !present(&us_rows),
            "{table}: the tour left rows in the US org but not the EU one"
        );
    }
    assert!(eu_rows.len() >= 10, "the EU tour reached its region: {eu_rows:?}");
    // And nothing of either is in the other's.
    assert_eq!(rows_of(&mut us, eu_org).await, vec![], "the US database holds rows of the EU organization");
    assert_eq!(rows_of(&mut eu, us_org).await, vec![], "the EU database holds rows of the US organization");

    // The directory: in the default region only, naming each organization's region.
    let entries: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT org, region FROM organization_directory ORDER BY region")
            .fetch_all(&mut us)
            .await
            .unwrap();
    assert_eq!(entries, vec![(eu_org, "eu".to_string()), (us_org, "us".to_string())]);
    for table in ["organization_directory", "organization_moves", "sessions", "known_devices", "recovery_codes"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut eu).await.unwrap();
        assert_eq!(n, 0, "{table} is global: nothing of it in the EU database");
    }
    // Only what the organization's pages show of its people is copied to its region: nobody's
    // password hash or second factor.
    let secrets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE password_hash IS NOT NULL OR totp_secret IS NOT NULL")
            .fetch_one(&mut eu)
            .await
            .unwrap();
    assert_eq!(secrets, 0, "sign-in secrets stay in the directory");
    let eu_people: Vec<String> =
        sqlx::query_scalar("SELECT email FROM users ORDER BY email").fetch_all(&mut eu).await.unwrap();
    assert_eq!(eu_people, vec!["member@euco.test".to_string(), "owner@euco.test".to_string()]);

    // Files: each organization's in its region's store only.
    let us_files = app.config.files.dir.clone().unwrap_or_else(|| app.config.data_dir.join("files"));
    let eu_files = app.config.residency.files_dir(RegionId::parse("eu").unwrap(), &app.config.data_dir);
    assert!(files_of(&us_files, eu_org).is_empty(), "{:?}", files_of(&us_files, eu_org));
    assert!(files_of(&eu_files, us_org).is_empty(), "{:?}", files_of(&eu_files, us_org));
    assert!(!files_of(&eu_files, eu_org).is_empty(), "the EU organization's files are in the EU store");
    assert!(!files_of(&us_files, us_org).is_empty(), "the US organization's files are in the US store");

    // The audit chain of the EU organization verifies in its region.
    let principal =
        access::operator(&app.app_db, &crate::support::operator(), eu_org.to_string().parse().unwrap(), "t")
            .await
            .unwrap()
            .expect("the EU organization is found through the directory");
    assert_eq!(principal.region().as_str(), "eu");
    let mut tx = OrgTx::begin(&app.app_db, &principal).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()::text").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(database, app.region_db("eu").name, "the door opened the organization's own region");

    // Pages show the region.
    let (_, html) = eu_owner.page(&format!("/o/{eu_slug}/settings")).await;
    assert!(html.contains("Region EU") && html.contains("<code>eu</code>"), "{html}");
    let (_, html) = us_owner.page(&format!("/o/{us_slug}/settings")).await;
    assert!(html.contains("<code>us</code>"), "{html}");
    let (_, html) = app.browser().page("/security").await;
    assert!(html.contains("Region EU (eu)") && html.contains("United States (us)"), "{html}");
}

#[tokio::test]
async fn slugs_are_unique_across_regions_and_regions_must_be_offered() {
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@slugs.test").await;
    let (status, html) = owner.page("/orgs/new").await;
    assert_eq!(status, 200);
    assert!(html.contains("name=\"region\"") && html.contains("value=\"eu\""), "the form offers the regions: {html}");
    let res = create_in(&mut owner, "shared", Some("eu")).await;
    assert_eq!(res.status(), 303);
    // The same address in the other region is taken.
    let res = create_in(&mut owner, "shared", Some("us")).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("already taken"));
    // A region the installation doesn't offer is a field error, and nothing is created.
    let res = create_in(&mut owner, "nowhere", Some("mars")).await;
    assert_eq!(res.status(), 422);
    let mut us = app.region_db("us").admin_conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM organization_directory").fetch_one(&mut us).await.unwrap();
    assert_eq!(n, 1, "only the one organization is in the directory");
    // Both the EU organization's pages and the list of one's organizations work.
    let (status, html) = owner.page("/orgs").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("/o/shared"), "{html}");
}

#[tokio::test]
async fn one_region_is_the_default_and_needs_no_directory_lookup() {
    let app = TestApp::spawn().await;
    assert!(!app.app_db.is_multi_region());
    assert_eq!(app.app_db.region_ids(), vec![RegionId::DEFAULT]);
    let mut owner = sign_up(&app, "owner@single.test").await;
    let (_, html) = owner.page("/orgs/new").await;
    assert!(!html.contains("name=\"region\""), "no region to choose with one region");
    let slug = create_org(&mut owner, "single").await;
    let mut us = app.db.admin_conn().await;
    let region: String = sqlx::query_scalar("SELECT region FROM organization_directory WHERE slug = $1")
        .bind(&slug)
        .fetch_one(&mut us)
        .await
        .unwrap();
    assert_eq!(region, "us", "the directory is kept, ready for a second region");
}

/// With two regions, a page of an organization in either region reads the session and the
/// directory's entry as one autocommit statement in the directory's database, then goes on in
/// the organization's region: the session's bookkeeping in that statement stands on its own
/// (the idle clock, written when due, is kept; an idle session is removed and the page sends
/// the browser to sign in), and nothing of it is left on the pooled connection.
#[tokio::test]
async fn a_page_in_either_region_reads_its_session_in_one_statement() {
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@routed.test").await;
    let home_slug = create_org(&mut owner, "routed home").await;
    let res = create_in(&mut owner, "routed abroad", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let abroad = location(&res).trim_start_matches("/o/").to_string();
    let mut us = app.db.admin_conn().await;
    let seen = async |us: &mut PgConnection| -> time::OffsetDateTime {
        sqlx::query_scalar(
            "SELECT s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.email = 'owner@routed.test' AND s.stage = 'complete'",
        )
        .fetch_one(us)
        .await
        .unwrap()
    };
    for slug in [&home_slug, &abroad] {
        // Ten minutes idle: the page's read writes the idle clock, and it is kept.
        app.clock.advance(time::Duration::minutes(10));
        let (status, html) = owner.page(&format!("/o/{slug}/projects")).await;
        assert_eq!(status, 200, "{slug}: {html}");
        let last = seen(&mut us).await;
        assert!((app.clock.now_utc() - last).abs() < time::Duration::seconds(2), "{slug}: idle clock at {last}");
        // A second page within the minute: nothing to write, the same clock.
        let (status, _) = owner.page(&format!("/o/{slug}/clients")).await;
        assert_eq!(status, 200);
        assert_eq!(seen(&mut us).await, last);
    }
    // Another person's session can't open the organization (not a member): 404, as before.
    let mut stranger = sign_up(&app, "stranger@routed.test").await;
    let (status, _) = stranger.page(&format!("/o/{abroad}/projects")).await;
    assert_eq!(status, 404);
    // Idle past the installation's limit: removed by the read, and the page asks to sign in.
    app.clock.advance(time::Duration::minutes(31));
    let res = owner.get(&format!("/o/{abroad}/projects")).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
    let sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = 'owner@routed.test'",
    )
    .fetch_one(&mut us)
    .await
    .unwrap();
    assert_eq!(sessions, 0, "the idle session was removed");

    // The gate's connection: a setting made in one statement is gone by the next, so the
    // connection goes back to its pool as it came; a transaction begun on it has its capability.
    use clientflow::platform::db::tenant::{Capability, GateConn, GateKey};
    let key = GateKey::unsafe_assume_access_layer();
    let eu_org = org_id(&app, "eu", &abroad).await;
    let eu_db = app.app_db.in_region(eu()).unwrap();
    let mut conn = GateConn::acquire(&eu_db, &key).await.unwrap();
    assert_eq!(conn.region(), eu());
    sqlx::query("SELECT set_config('app.org_id', $1, true)")
        .bind(eu_org.to_string())
        .execute(&mut *conn)
        .await
        .unwrap();
    let (left, visible): (Option<String>, i64) =
        sqlx::query_as("SELECT current_setting('app.org_id', true), (SELECT count(*) FROM organizations)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(left.as_deref().unwrap_or("").is_empty(), "a setting outlived its statement: {left:?}");
    assert_eq!(visible, 0, "the organization's row is visible after the statement that set its tenant");
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE id = $1")
        .bind(eu_org)
        .fetch_one(&mut app.region_db("eu").admin_conn().await)
        .await
        .unwrap();
    assert_eq!(present, 1);
    let user = uuid::Uuid::now_v7().to_string();
    let mut tx = conn.begin_with(Capability::User, &user).await.unwrap();
    let set: String = sqlx::query_scalar("SELECT current_setting('app.user_id')").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(set, user);
    tx.commit().await.unwrap();
}

#[test]
fn region_configuration_is_validated_with_messages_that_say_what_to_set() {
    let load = |toml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clientflow.toml");
        std::fs::write(&file, toml).unwrap();
        clientflow::config::Config::load_from(Some(&file), &[]).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(load(""), Ok(()));
    assert_eq!(load("[residency.regions.eu]\nlabel = \"European Union\"\n"), Ok(()));
    let err = load("[residency.regions.EU]\n").unwrap_err();
    assert!(err.contains("residency.regions") && err.contains("lower-case"), "{err}");
    let err = load("[residency.regions.us]\n").unwrap_err();
    assert!(err.contains("default region"), "{err}");
    let err = load("[residency]\nnew_organizations = \"eu\"\n").unwrap_err();
    assert!(err.contains("residency.new_organizations") && err.contains("[residency.regions.eu]"), "{err}");
    let err = load("[residency.regions.eu]\ndatabase_name = \"x\"\n[residency.regions.de]\ndatabase_name = \"x\"\n")
        .unwrap_err();
    assert!(err.contains("database_name"), "{err}");
    // No two regions' backups in one repository: a directory, a bucket's path, a stanza.
    let err = load("[residency.regions.eu]\nbackup_path = \"/b\"\n[residency.regions.de]\nbackup_path = \"/b\"\n")
        .unwrap_err();
    assert!(err.contains("backup_path") && err.contains("shares the backup repository"), "{err}");
    let s3 = "bucket = \"b\"\nendpoint = \"s3.example.com\"\nregion = \"r\"\npath = \"/x\"\nkey = \"k\"\nkey_secret = \"s\"\n";
    let err = load(&format!("[backup.s3]\n{s3}[residency.regions.eu.backup_s3]\n{s3}")).unwrap_err();
    assert!(err.contains("backup_s3") && err.contains("shares its backup bucket"), "{err}");
    let err = load("[residency.regions.eu.backup_s3]\nbucket = \"b\"\nendpoint = \"e\"\nregion = \"r\"\n").unwrap_err();
    assert!(err.contains("region eu") && err.contains("backup_s3.key"), "{err}");
    let err = load("[residency.regions.eu]\nbackup_repo = \"clientflow\"\n").unwrap_err();
    assert!(err.contains("backup_repo"), "{err}");
    // A further region never inherits the default region's bucket.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clientflow.toml");
    std::fs::write(&file, format!("[backup.s3]\n{s3}[residency.regions.eu]\n")).unwrap();
    let config = clientflow::config::Config::load_from(Some(&file), &[]).unwrap();
    let eu_backup = config.residency.backup_config(eu(), &config.backup);
    assert!(eu_backup.s3.is_none() && config.backup.s3.is_some());
    assert_eq!(config.residency.backup_stanza(eu()), "clientflow-eu");
}

// ---- moving an organization between regions ----

use crate::support::mover;
use clientflow::cli::moving::{self, Step};

/// An organization in the default region with a client, a project, a file and their audit
/// events, made through the services as the operator.
async fn seeded(app: &TestApp, slug: &str) -> (uuid::Uuid, clientflow::platform::ids::OrgId) {
    let org = crate::support::seed_org(&app.app_db, slug).await;
    let up = clientflow::work::files::Upload {
        project_id: org.project,
        task_id: None,
        name: "notes.txt",
        bytes: format!("notes of {slug}").into_bytes(),
        shared_with_client: false,
    };
    clientflow::work::files::upload(
        &app.app_db,
        &app.state.storage,
        &app.state.keys,
        1 << 20,
        &api::ctx(app),
        &org.principal,
        up,
    )
    .await
    .unwrap();
    (org.id.to_string().parse().unwrap(), org.id)
}

fn eu() -> RegionId {
    RegionId::parse("eu").unwrap()
}

/// Rows per table of `org` in a region, with the audit log's own bookkeeping set apart (a move
/// adds its signed "organization moved" event).
async fn snapshot(app: &TestApp, region: &str, org: uuid::Uuid) -> Vec<(String, i64)> {
    let mut conn = app.region_db(region).admin_conn().await;
    rows_of(&mut conn, org).await.into_iter().filter(|(t, _)| !t.starts_with("audit_")).collect()
}

/// Rows of `org` in `table`, in a region's database.
async fn rows_in(app: &TestApp, region: &str, table: &str, org: uuid::Uuid) -> i64 {
    let mut conn = app.region_db(region).admin_conn().await;
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE organization_id = $1"))
        .bind(org)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn directory_region(app: &TestApp, org: uuid::Uuid) -> (String, Option<String>) {
    let mut conn = app.db.admin_conn().await;
    sqlx::query_as("SELECT region, moving_to FROM organization_directory WHERE org = $1")
        .bind(org)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The organization is whole in `region` and absent from `other`: rows (as before, plus
/// `extra_events` audit events), files, and its chain verifies.
async fn whole_in(
    app: &TestApp,
    uuid: uuid::Uuid,
    region: &str,
    other: &str,
    before: &[(String, i64)],
    events_before: i64,
    extra_events: i64,
) {
    assert_eq!(snapshot(app, region, uuid).await, before, "every row, once, in {region}");
    assert_eq!(rows_in(app, region, "audit_events", uuid).await, events_before + extra_events);
    let mut conn = app.region_db(other).admin_conn().await;
    assert_eq!(rows_of(&mut conn, uuid).await, vec![], "nothing left in {other}");
    let dir = |r: &str| {
        if r == "us" {
            app.config.data_dir.join("files")
        } else {
            app.config.residency.files_dir(RegionId::parse(r).unwrap(), &app.config.data_dir)
        }
    };
    assert!(!files_of(&dir(region), uuid).is_empty(), "the files are in {region}");
    assert!(files_of(&dir(other), uuid).is_empty(), "no file left in {other}");
    let org: clientflow::platform::ids::OrgId = uuid.to_string().parse().unwrap();
    let p = access::operator(&app.app_db, &crate::support::operator(), org, "t").await.unwrap().unwrap();
    assert_eq!(p.region().as_str(), region);
    let mut tx = OrgTx::begin(&app.app_db, &p).await.unwrap();
    let keys = [app.state.audit_signer.verifying_key()];
    let v = clientflow::audit::chain::Verification::new(&keys, time::OffsetDateTime::now_utc());
    let report = clientflow::audit::chain::verify_org(&mut tx, org, &v).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(report.first_break, None, "the chain verifies in {region}");
    // The file opens in its new region.
    let mut tx = OrgTx::begin(&app.app_db, &p).await.unwrap();
    let file: uuid::Uuid = sqlx::query_scalar("SELECT id FROM files LIMIT 1").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let (_, bytes) = clientflow::work::files::download(
        &app.app_db,
        &app.state.storage,
        &app.state.keys,
        &p,
        file.to_string().parse().unwrap(),
    )
    .await
    .unwrap();
    assert!(String::from_utf8(bytes).unwrap().starts_with("notes of"));
}

#[tokio::test]
async fn a_moved_organization_keeps_everything_and_leaves_nothing_behind() {
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@mover.test").await;
    let slug = create_org(&mut owner, "mover").await;
    tour(&app, &mut owner, &slug, "mover").await;
    let uuid = org_id(&app, "us", &slug).await;
    let org: clientflow::platform::ids::OrgId = uuid.to_string().parse().unwrap();
    let before = snapshot(&app, "us", uuid).await;
    let events = rows_in(&app, "us", "audit_events", uuid).await;

    let m = mover(&app);
    let report = moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(report.done, vec![Step::Frozen, Step::Copied, Step::Verified, Step::Switched, Step::Purged]);
    assert!(report.files >= 2);
    assert_eq!(directory_region(&app, uuid).await, ("eu".to_string(), None));
    assert_eq!(snapshot(&app, "eu", uuid).await, before);
    assert_eq!(
        rows_in(&app, "eu", "audit_events", uuid).await,
        events + 1,
        "the chain continues with the move's event"
    );
    let mut us = app.db.admin_conn().await;
    assert_eq!(rows_of(&mut us, uuid).await, vec![], "the old region holds nothing of it");
    assert!(files_of(&app.config.data_dir.join("files"), uuid).is_empty());

    // Its people go on working, now in the new region.
    let (status, html) = owner.page(&format!("/o/{slug}/settings")).await;
    assert_eq!(status, 200);
    assert!(html.contains("<code>eu</code>"), "{html}");
    let (status, html) = owner.page(&format!("/o/{slug}/audit")).await;
    assert_eq!(status, 200);
    assert!(html.contains("organization.moved"), "{html}");
    let token = session_token(&mut owner).await;
    redirected(post(&owner, &token, &format!("/o/{slug}/clients"), &[("name", "After the move")]).await).await;
    let mut eu_conn = app.region_db("eu").admin_conn().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM clients WHERE organization_id = $1 AND name = 'After the move'")
            .bind(uuid)
            .fetch_one(&mut eu_conn)
            .await
            .unwrap();
    assert_eq!(n, 1);
    // Moving it where it is is refused.
    let err = moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap_err();
    assert!(err.to_string().contains("already lives in region eu"), "{err}");
}

#[tokio::test]
async fn a_move_goes_through_while_access_changes_elsewhere_in_its_region() {
    // Every change to who may do what raises the region's access epoch as it commits (one row,
    // `migrations/0056`). The purge of the old region commits such changes (the organization's
    // memberships and keys go): it must wait for another organization's change to the same
    // row and go on, not fail to serialize with it. Here that change holds the row from before
    // the move begins until the purge waits for it, then commits.
    let app = two_regions().await;
    let (uuid, org) = seeded(&app, "busy-region").await;
    crate::support::api_key(&app, uuid, "going along").await;
    let us = app.region_db("us");
    let mut elsewhere = us.admin_conn().await;
    sqlx::query("BEGIN").execute(&mut elsewhere).await.unwrap();
    sqlx::query("UPDATE access_epoch SET epoch = epoch + 1, stamp = gen_random_uuid()")
        .execute(&mut elsewhere)
        .await
        .unwrap();
    let m = mover(&app);
    let now = app.clock.now_utc();
    let moving = tokio::spawn(async move { moving::move_organization(&m, org, eu(), now, None).await });
    let mut watch = us.admin_conn().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(!moving.is_finished(), "the move ended without waiting for the change: {:?}", moving.await);
        assert!(std::time::Instant::now() < deadline, "the purge never waited for the change");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query("COMMIT").execute(&mut elsewhere).await.unwrap();
    let report = moving.await.unwrap().unwrap();
    assert_eq!(report.done, vec![Step::Frozen, Step::Copied, Step::Verified, Step::Switched, Step::Purged]);
    assert_eq!(rows_of(&mut us.admin_conn().await, uuid).await, vec![], "the old region holds nothing of it");
}

#[tokio::test]
async fn writes_are_refused_while_an_organization_moves() {
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "frozen").await;
    let key = crate::support::api_key(&app, uuid, "ci").await;
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    let err = moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Frozen)).await.unwrap_err();
    assert!(err.to_string().contains("interrupted after step frozen"), "{err}");
    assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), Some("eu".to_string())));
    // Reads go on; writes are refused with a message, on the pages and through the API.
    let (status, _) = owner.page(&format!("/o/{slug}/clients")).await;
    assert_eq!(status, 200);
    let token = session_token(&mut owner).await;
    let res = post(&owner, &token, &format!("/o/{slug}/clients"), &[("name", "Too late")]).await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("being moved to another region"));
    let res = api::post(&app, "/api/v1/clients", &key, json!({"name": "Too late"})).await;
    assert_eq!(res.status, 503, "{}", res.body);
    assert_eq!(api::get(&app, "/api/v1/clients", &key).await.status, 200);
    // Rolled back: writable again, where it was.
    assert_eq!(moving::roll_back(&m, org).await.unwrap(), Step::Frozen);
    assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), None));
    redirected(post(&owner, &token, &format!("/o/{slug}/clients"), &[("name", "Now")]).await).await;
}

/// Clients of `org` named `name` in a region's database.
async fn clients_named(app: &TestApp, region: &str, org: uuid::Uuid, name: &str) -> i64 {
    rows_with(app, region, "clients", org, ("name", name)).await
}

/// Rows of `org` in a region's database's `table` whose `column` holds `value`.
async fn rows_with(app: &TestApp, region: &str, table: &str, org: uuid::Uuid, (column, value): (&str, &str)) -> i64 {
    let mut conn = app.region_db(region).admin_conn().await;
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE organization_id = $1 AND {column} = $2"))
        .bind(org)
        .bind(value)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Uses `key` until the server keeps its verification (the use is then on record) and reuses it.
async fn kept_in_us(app: &TestApp, key: &str) {
    let (reused, _) = app.state.api_keys.counts();
    for _ in 0..3 {
        assert_eq!(api::get(app, "/api/v1/clients", key).await.status, 200);
    }
    assert!(app.state.api_keys.counts().0 > reused, "the key's verification is kept");
}

/// The directory switched to the new region by hand, as a move does at its switch (a move
/// that dies right after it, or a request verified just before it).
async fn switch_by_hand(app: &TestApp, org: uuid::Uuid) {
    sqlx::query("UPDATE organization_directory SET region = 'eu', moving_to = NULL WHERE org = $1")
        .bind(org)
        .execute(&mut app.db.admin_conn().await)
        .await
        .unwrap();
}

/// What a key would read in the copy left behind in the old region, changed there behind the
/// server's back.
async fn change_left_behind(app: &TestApp, org: uuid::Uuid) {
    sqlx::query("UPDATE clients SET name = 'Left behind' WHERE organization_id = $1")
        .bind(org)
        .execute(&mut app.region_db("us").admin_conn().await)
        .await
        .unwrap();
}

/// `key` reads the new region's copy (its client "Before", not what [`change_left_behind`]
/// wrote) and writes a client `name` there, and nothing into the copy left behind.
async fn reads_and_writes_the_new_region(app: &TestApp, org: uuid::Uuid, key: &str, name: &str) {
    let res = api::get(app, "/api/v1/clients", key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let names: Vec<&str> = res.body["data"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains(&"Before") && !names.contains(&"Left behind"), "{name}: read in the new region: {names:?}");
    let res = api::post(app, "/api/v1/clients", key, json!({ "name": name })).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(clients_named(app, "eu", org, name).await, 1, "{name}: written in the new region");
    assert_eq!(clients_named(app, "us", org, name).await, 0, "{name}: not in the copy left behind");
}

#[tokio::test]
async fn between_a_moves_switch_and_its_purge_keys_answer_from_the_new_region() {
    // Until the purge, the old region still holds a copy of the organization, its keys
    // included. Once the directory names the new region, no key may be accepted from that
    // copy (it would read what the move left behind, write what the purge then deletes, and
    // ignore a revocation made in the new region): neither a key this server kept as verified
    // there before the move, nor one it verifies for the first time.
    let app = two_regions().await;
    let (_, _, uuid) = owned_in_us(&app, "switching").await;
    let kept = crate::support::api_key(&app, uuid, "kept").await;
    let fresh = crate::support::api_key(&app, uuid, "fresh").await;
    assert_eq!(api::post(&app, "/api/v1/clients", &kept, json!({"name": "Before"})).await.status, 201);
    kept_in_us(&app, &kept).await;
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    let err = moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Switched)).await.unwrap_err();
    assert!(err.to_string().contains("interrupted after step switched"), "{err}");
    assert_eq!(directory_region(&app, uuid).await, ("eu".to_string(), None));
    change_left_behind(&app, uuid).await;
    for (key, name) in [(&kept, "After, kept"), (&fresh, "After, fresh")] {
        reads_and_writes_the_new_region(&app, uuid, key, name).await;
    }
    // Revoked in the new region: refused, though its copy in the old one still stands.
    let mut eu_conn = app.region_db("eu").admin_conn().await;
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE organization_id = $1 AND name = 'kept'")
        .bind(uuid)
        .execute(&mut eu_conn)
        .await
        .unwrap();
    assert_eq!(api::get(&app, "/api/v1/clients", &kept).await.status, 401);
    // A request verified in the old region as the directory switched (here: a key kept before
    // the move, the directory switched by hand after the copy, before the raise of the old
    // region's epoch) may read what was frozen there, but its writes are refused: they would go
    // to the copy the purge deletes.
    let (uuid, org) = seeded(&app, "racing").await;
    let key = crate::support::api_key(&app, uuid, "racing").await;
    kept_in_us(&app, &key).await;
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    switch_by_hand(&app, uuid).await;
    let res = api::post(&app, "/api/v1/clients", &key, json!({"name": "Into the void"})).await;
    assert_eq!(res.status, 503, "{}", res.body);
    assert_eq!(clients_named(&app, "us", uuid, "Into the void").await, 0);
    // The move, run again, finishes: everything is in the new region, and the key works there.
    sqlx::query("UPDATE organization_moves SET step = 'switched' WHERE org = $1")
        .bind(uuid)
        .execute(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(api::post(&app, "/api/v1/clients", &key, json!({"name": "Landed"})).await.status, 201);
    assert_eq!(clients_named(&app, "eu", uuid, "Landed").await, 1);
}

#[tokio::test]
async fn a_key_kept_before_a_move_is_verified_again_before_the_switch() {
    // The move raises the old region's epoch once the copy is verified, before it switches the
    // directory, and a verification during the move keeps nothing: a move that dies just after
    // its switch commits leaves no server with a kept key standing in the copy left behind.
    let app = two_regions().await;
    let (uuid, org) = seeded(&app, "stopping").await;
    let key = crate::support::api_key(&app, uuid, "stopping").await;
    assert_eq!(api::post(&app, "/api/v1/clients", &key, json!({"name": "Before"})).await.status, 201);
    kept_in_us(&app, &key).await;
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Verified)).await.unwrap_err();
    // During the move: read (in the old region, which the directory still names), verified
    // anew each time, kept never.
    let (_, verified) = app.state.api_keys.counts();
    for _ in 0..3 {
        assert_eq!(api::get(&app, "/api/v1/clients", &key).await.status, 200);
    }
    assert_eq!(app.state.api_keys.counts().1, verified + 3, "verified from scratch while the organization moves");
    // The switch commits (by hand: the move dies right after it), and the copy left behind is
    // changed behind the server's back.
    switch_by_hand(&app, uuid).await;
    change_left_behind(&app, uuid).await;
    reads_and_writes_the_new_region(&app, uuid, &key, "After").await;
}

#[tokio::test]
async fn a_write_that_found_the_organization_settled_is_in_the_moves_copy() {
    // A write asks the directory, then writes; the move marks the organization, then copies.
    // A write that asked just before the mark and commits after the copy began would be in
    // neither the copy nor, after the purge, anywhere. The write holds the move's lock from
    // before it asks to its commit, and the copy waits for it.
    let app = two_regions().await;
    let org = crate::support::seed_org(&app.app_db, "inflight").await;
    let uuid: uuid::Uuid = org.id.to_string().parse().unwrap();
    let mut writing = OrgTx::begin(&app.app_db, &org.principal).await.unwrap();
    assert!(
        access::directory::hold_for_writing(&app.app_db, &mut writing, org.principal.region(), org.id).await.unwrap()
    );
    sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, gen_random_uuid(), 'In flight')")
        .bind(uuid)
        .execute(&mut *writing)
        .await
        .unwrap();
    let m = mover(&app);
    let now = app.clock.now_utc();
    let moving =
        tokio::spawn(async move { moving::move_organization(&m, org.id, eu(), now, Some(Step::Copied)).await });
    // Marked, and waiting for the write.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), Some("eu".to_string())));
    assert!(!moving.is_finished(), "the copy waits for the write that found the organization settled");
    writing.commit().await.unwrap();
    let err = moving.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("interrupted after step copied"), "{err}");
    // A write that asks now is refused (one that asks while the copy waits waits too, behind it).
    let mut late = OrgTx::begin(&app.app_db, &org.principal).await.unwrap();
    assert!(
        !access::directory::hold_for_writing(&app.app_db, &mut late, org.principal.region(), org.id).await.unwrap()
    );
    late.rollback().await.unwrap();
    assert_eq!(clients_named(&app, "eu", uuid, "In flight").await, 1, "the copy holds the write");
}

#[tokio::test]
async fn a_write_request_routed_before_a_move_asks_again_once_the_copy_may_begin() {
    // A page request reads the directory before its transaction begins, an API request as its
    // key is verified. A move marked between that read and the write must still stop the
    // write: the request takes the move's lock, which a move about to copy holds (here: held by
    // hand), and asks the directory again once it has it.
    // So must a read that writes: a file's download link, recorded in the audit log.
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "raced").await;
    let key = crate::support::api_key(&app, uuid, "raced").await;
    let token = session_token(&mut owner).await;
    let project = api::post(&app, "/api/v1/projects", &key, json!({"name": "Filed"})).await.id();
    let file =
        api::upload(&app, &key, &[("project_id", &project)], Some(("brief.txt", b"brief".as_slice()))).await.id();
    let links = || rows_with(&app, "us", "audit_events", uuid, ("action", "file.link_issued"));
    let linked = links().await;
    assert_eq!(api::get(&app, &format!("/api/v1/files/{file}"), &key).await.status, 200);
    assert_eq!(links().await, linked + 1, "issuing a link is recorded");
    let lock = format!("SELECT pg_advisory_lock({})", access::directory::MOVE_LOCK_KEY);
    let mut copying = app.region_db("us").admin_conn().await;
    sqlx::query(&lock).bind(uuid).execute(&mut copying).await.unwrap();
    let path = format!("/o/{slug}/clients");
    let (page, api, link, marked) = tokio::join!(
        async {
            let res = post(&owner, &token, &path, &[("name", "Raced")]).await;
            (res, std::time::Instant::now())
        },
        async {
            let res = api::post(&app, "/api/v1/clients", &key, json!({"name": "Raced"})).await;
            (res, std::time::Instant::now())
        },
        async {
            let res = api::get(&app, &format!("/api/v1/files/{file}"), &key).await;
            (res, std::time::Instant::now())
        },
        async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            // The move marks the organization, then lets the writes through to the copy.
            let mut dir = app.db.admin_conn().await;
            sqlx::query("UPDATE organization_directory SET moving_to = 'eu' WHERE org = $1")
                .bind(uuid)
                .execute(&mut dir)
                .await
                .unwrap();
            let marked = std::time::Instant::now();
            sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut copying).await.unwrap();
            marked
        }
    );
    let ((page, page_done), (api, api_done), (link, link_done)) = (page, api, link);
    assert!(page_done > marked && api_done > marked && link_done > marked, "every write waited for the lock");
    assert_eq!(page.status(), 503);
    assert!(page.text().await.unwrap().contains("being moved to another region"));
    assert_eq!(api.status, 503, "{}", api.body);
    assert_eq!(link.status, 503, "{}", link.body);
    assert_eq!(clients_named(&app, "us", uuid, "Raced").await, 0);
    assert_eq!(links().await, linked + 1, "no link was issued during the move");
}

#[tokio::test]
async fn the_contact_form_waits_while_its_organization_moves() {
    // A visitor's message stored during a move would stay in the copy the move leaves behind:
    // the form says to send it again shortly, keeps what was written, and takes it once the
    // move is done, in the new region.
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "contacting").await;
    let token = session_token(&mut owner).await;
    let settings = [("contact_form_enabled", "on"), ("contact_email", "inbox@contacting.test")];
    assert_eq!(post(&owner, &token, &format!("/o/{slug}/settings/contact"), &settings).await.status(), 303);
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Frozen)).await.unwrap_err();
    let form = format!("/contact/{slug}");
    let fields = [("name", "Grace"), ("email", "grace@example.com"), ("message", "Still taking clients?")];
    let mut visitor = app.browser();
    let res = visitor.submit(&form, &form, &fields).await;
    assert_eq!(res.status(), 503);
    let page = res.text().await.unwrap();
    assert!(page.contains("take messages for a few minutes"), "{page}");
    assert!(page.contains("Still taking clients?"), "what was written is kept: {page}");
    let stored = async |region: &str| rows_in(&app, region, "contact_submissions", uuid).await;
    assert_eq!((stored("us").await, stored("eu").await), (0, 0));
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    let res = visitor.submit(&form, &form, &fields).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!((stored("us").await, stored("eu").await), (0, 1));
}

/// Memberships of the account `email` in `org`, in a region's database.
async fn memberships_of(app: &TestApp, region: &str, org: uuid::Uuid, email: &str) -> i64 {
    let mut conn = app.region_db(region).admin_conn().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND u.email = $2",
    )
    .bind(org)
    .bind(email)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_account_deletion_waits_for_a_move_of_one_of_its_organizations() {
    // The purge removes the person from each copy it finds; during a move, the copy the move
    // is making could bring them back. It waits, and the next pass after the move purges them
    // from where the organization ended up.
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "leaving").await;
    let email = "member@leaving.test";
    let mut member = invite_and_join(&app, &mut owner, &slug, email, "member", None).await;
    let fields = [("confirm_email", email), ("current_password", PASSWORD), ("code", "")];
    let res = member.submit("/account/security", "/account/delete", &fields).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    app.clock.advance(time::Duration::days(31));
    let pass = clientflow::identity::account_deletion::purge_due(&app.app_db, app.clock.now_utc()).await.unwrap();
    assert!(pass.purged.is_empty(), "{pass:?}");
    assert_eq!((memberships_of(&app, "us", uuid, email).await, memberships_of(&app, "eu", uuid, email).await), (1, 1));
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    let pass = clientflow::identity::account_deletion::purge_due(&app.app_db, app.clock.now_utc()).await.unwrap();
    assert_eq!(pass.purged.len(), 1, "{pass:?}");
    assert_eq!(rows_in(&app, "eu", "memberships", uuid).await, 1, "only the Owner is left");
}

#[tokio::test]
async fn an_invitation_is_listed_and_answered_in_its_organizations_region_only() {
    // From a move's copy step to its purge, both regions hold the organization and its
    // invitations. The invitee sees the invitation once, its answer waits while the
    // organization moves (written now, it would stay in the region it leaves), and once the
    // directory has switched the answer is written in the new region. The member's list of
    // organizations shows each once, too.
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "inviting").await;
    let res = owner
        .submit(
            &format!("/o/{slug}/members"),
            &format!("/o/{slug}/invitations"),
            &[("email", "joiner@inviting.test"), ("role", "member"), ("client_id", ""), ("confirming", "1")],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let invitation: uuid::Uuid = sqlx::query_scalar("SELECT id FROM invitations WHERE organization_id = $1")
        .bind(uuid)
        .fetch_one(&mut app.region_db("us").admin_conn().await)
        .await
        .unwrap();
    let join = format!("/invitations/{invitation}/join");
    let mut joiner = sign_up(&app, "joiner@inviting.test").await;
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    let (status, html) = joiner.page("/app").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches(&format!("action=\"{join}\"")).count(), 1, "listed once: {html}");
    let (_, html) = owner.page("/orgs").await;
    assert_eq!(html.matches(&format!("href=\"/o/{slug}\"")).count(), 1, "the owner's organization once: {html}");
    let token = session_token(&mut joiner).await;
    let res = post(&joiner, &token, &join, &[]).await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("being moved to another region"));
    assert_eq!(memberships_of(&app, "us", uuid, "joiner@inviting.test").await, 0);
    // Switched (the old region's copy not purged yet): answered in the new region.
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Switched)).await.unwrap_err();
    assert_eq!(redirected(post(&joiner, &token, &join, &[]).await).await, format!("/o/{slug}"));
    assert_eq!(memberships_of(&app, "eu", uuid, "joiner@inviting.test").await, 1);
    assert_eq!(memberships_of(&app, "us", uuid, "joiner@inviting.test").await, 0, "not in the copy left behind");
    let (_, html) = joiner.page("/orgs").await;
    assert_eq!(html.matches(&format!("href=\"/o/{slug}\"")).count(), 1, "{html}");
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(memberships_of(&app, "eu", uuid, "joiner@inviting.test").await, 1);
}

/// One run of the deletion sweep over both regions, as the worker runs it (with each
/// region's owner role).
async fn purge_sweep(app: &TestApp) -> Vec<(RegionId, clientflow::privacy::deletion::Purged)> {
    let owners =
        vec![(RegionId::DEFAULT, app.region_db("us").owner.clone()), (eu(), app.region_db("eu").owner.clone())];
    let key = clientflow::privacy::record_key(&app.state.sealer);
    clientflow::privacy::deletion::purge_due_everywhere(
        &app.app_db,
        &owners,
        &app.state.keys,
        &app.state.storage,
        &key,
        app.clock.now_utc(),
        clientflow::privacy::deletion::Beyond { stripe: None, data_dir: Some(&app.config.data_dir) },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deletion_due_during_a_move_waits_and_purges_the_organization_where_the_move_ends() {
    // A move makes a copy in the region it goes to and leaves one in the region it leaves:
    // purging either in the middle of it would leave the other behind, with no directory
    // entry to find it by. The purge waits, then purges the organization where it ended up.
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "ending").await;
    let path = format!("/o/{slug}/settings/deletion");
    let res = owner.submit(&path, &path, &[("confirm_name", "ending"), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    app.clock.advance(time::Duration::days(31));
    assert!(purge_sweep(&app).await.is_empty(), "nothing purged while the organization moves");
    for region in ["us", "eu"] {
        let rows = rows_of(&mut app.region_db(region).admin_conn().await, uuid).await;
        assert!(rows.iter().any(|(t, n)| t == "organizations" && *n == 1), "{region}: {rows:?}");
    }
    assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), Some("eu".to_string())));
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    let purged = purge_sweep(&app).await;
    assert_eq!(purged.len(), 1, "{purged:?}");
    assert_eq!(purged[0].0, eu(), "purged where the move ended");
    for region in ["us", "eu"] {
        assert_eq!(rows_of(&mut app.region_db(region).admin_conn().await, uuid).await, vec![], "{region}");
    }
    let mut dir = app.db.admin_conn().await;
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM organization_directory WHERE org = $1")
        .bind(uuid)
        .fetch_one(&mut dir)
        .await
        .unwrap();
    assert_eq!(entries, 0, "its directory entry goes with it");
}

#[tokio::test]
async fn notification_mail_waits_for_a_move_and_goes_out_once_from_where_it_ends() {
    // The notification worker asks every region for mail waiting. Sent from a copy during a
    // move, a notification would be marked sent there and sent again from the copy that stays.
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@notified.test").await;
    let slug = create_org(&mut owner, "notified").await;
    invite_and_join(&app, &mut owner, &slug, "member@notified.test", "member", None).await;
    let uuid = org_id(&app, "us", &slug).await;
    let mut us = app.region_db("us").admin_conn().await;
    let id_of = async |conn: &mut PgConnection, email: &str| -> uuid::Uuid {
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(conn).await.unwrap()
    };
    let (owner_id, member_id) =
        (id_of(&mut us, "owner@notified.test").await, id_of(&mut us, "member@notified.test").await);
    notification_by(&mut us, uuid, member_id, owner_id).await;
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    let run = async || {
        clientflow::work::daily::run_due(&app.app_db, &app.config.public_url(), app.clock.now_utc()).await.unwrap()
    };
    assert_eq!(run().await, 0, "nothing sent while the organization moves");
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert!(run().await >= 1, "sent once the move is done");
    assert_eq!(run().await, 0, "and only once");
}

#[tokio::test]
async fn an_export_requested_before_a_move_is_written_once_where_the_move_ends() {
    // Written from a copy during a move, the archive and its record would stay in the region
    // the organization leaves, and the copy that stays would write it again.
    use clientflow::privacy::export_jobs;
    let app = two_regions().await;
    let (mut owner, slug, uuid) = owned_in_us(&app, "exporting").await;
    let page = format!("/o/{slug}/settings/export");
    let res = owner.submit(&page, &page, &[("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let status_in = async |region: &str| -> Vec<String> {
        let mut conn = app.region_db(region).admin_conn().await;
        sqlx::query_scalar("SELECT status FROM org_exports WHERE organization_id = $1")
            .bind(uuid)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    let requested = status_in("us").await;
    assert_eq!(requested.len(), 1);
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    let runner = export_jobs::Runner::of(&app.state);
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 0, "nothing written while it moves");
    assert_eq!(status_in("us").await, requested);
    assert_eq!(status_in("eu").await, requested);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 1, "written once the move is done");
    assert_eq!(status_in("eu").await, vec!["ready".to_string()]);
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 0);
}

#[tokio::test]
async fn the_audit_signer_leaves_an_organization_alone_while_it_moves() {
    // The signer asks every region for chain heads due for signing, one region after the
    // other: a move that verifies between its signature of one copy and of the other finds
    // them different. It leaves both copies alone while the organization moves (the move signs
    // the head in the new region as it verifies).
    let app = two_regions().await;
    let (_, _, uuid) = owned_in_us(&app, "signed-later").await;
    let org = uuid.to_string().parse().unwrap();
    let m = mover(&app);
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    let later = app.clock.now_utc() + clientflow::audit::chain::SIGN_EVERY * 2;
    let sign = async |at| {
        clientflow::access::maintenance::sign_due_heads(&app.app_db, &app.state.audit_signer, at).await.unwrap()
    };
    assert!(!sign(later).await.contains(&org), "not signed while it moves");
    let report = moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(report.done.last(), Some(&Step::Purged));
    assert_eq!(rows_of(&mut app.region_db("us").admin_conn().await, uuid).await, vec![]);
}

#[tokio::test]
async fn a_key_rotation_reseals_an_organization_in_its_own_region() {
    // The re-sealing pass opens each organization in the region the directory names: run from
    // the default region, it must still reach an organization of another region, and leave one
    // alone while it moves.
    use clientflow::privacy::keys;
    let app = two_regions().await;
    let m = mover(&app);
    let versions = async |org: uuid::Uuid| -> Vec<Option<i32>> {
        let mut conn = app.region_db("eu").admin_conn().await;
        sqlx::query_scalar("SELECT key_version FROM files WHERE organization_id = $1")
            .bind(org)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    let reseal = async || {
        keys::reseal_all(&app.app_db, &app.state.keys, &app.state.storage, 10, std::time::Duration::ZERO, |_| {})
            .await
            .unwrap()
    };
    let (moved, moved_id) = seeded(&app, "rotating").await;
    moving::move_organization(&m, moved_id, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(keys::rotate(&app.state.keys, moved_id).unwrap(), 2);
    let total = reseal().await;
    assert_eq!((total.files, total.retired_versions), (1, 1), "{total:?}");
    assert_eq!(versions(moved).await, vec![Some(2)], "re-sealed in its region");

    let (moving_now, moving_id) = seeded(&app, "rotating-later").await;
    moving::move_organization(&m, moving_id, eu(), app.clock.now_utc(), Some(Step::Copied)).await.unwrap_err();
    assert_eq!(keys::rotate(&app.state.keys, moving_id).unwrap(), 2);
    assert_eq!(reseal().await.files, 0, "nothing re-sealed while it moves");
    moving::move_organization(&m, moving_id, eu(), app.clock.now_utc(), None).await.unwrap();
    assert_eq!(reseal().await.files, 1);
    assert_eq!(versions(moving_now).await, vec![Some(2)]);
}

#[tokio::test]
async fn a_move_interrupted_after_any_step_resumes_or_rolls_back_losing_and_duplicating_nothing() {
    let app = two_regions().await;
    let m = mover(&app);
    for (i, step) in [Step::Frozen, Step::Copied, Step::Verified, Step::Switched].into_iter().enumerate() {
        // Interrupted, then run again: it finishes from where it stopped.
        let (uuid, org) = seeded(&app, &format!("resume{i}")).await;
        let before = snapshot(&app, "us", uuid).await;
        let events = rows_in(&app, "us", "audit_events", uuid).await;
        let err = moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(step)).await.unwrap_err();
        assert!(err.to_string().contains(step.as_str()), "{err}");
        let report = moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
        assert_eq!(report.done.last(), Some(&Step::Purged));
        assert!(!report.done.contains(&step), "resumed after {step:?}: {:?}", report.done);
        whole_in(&app, uuid, "eu", "us", &before, events, 1).await;

        // Interrupted, then rolled back: whole where it was (possible until the switch).
        let (uuid, org) = seeded(&app, &format!("back{i}")).await;
        let before = snapshot(&app, "us", uuid).await;
        let events = rows_in(&app, "us", "audit_events", uuid).await;
        moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(step)).await.unwrap_err();
        if step < Step::Switched {
            assert_eq!(moving::roll_back(&m, org).await.unwrap(), step);
            assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), None));
            whole_in(&app, uuid, "us", "eu", &before, events, 0).await;
        } else {
            let err = moving::roll_back(&m, org).await.unwrap_err();
            assert!(err.to_string().contains("run the move again"), "{err}");
            moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
            whole_in(&app, uuid, "eu", "us", &before, events, 1).await;
        }
    }
    // A copy interrupted half-way is replaced, never added to: a stray row in the new region
    // from an earlier attempt is gone after the move.
    let (uuid, org) = seeded(&app, "stray").await;
    let before = snapshot(&app, "us", uuid).await;
    let events = rows_in(&app, "us", "audit_events", uuid).await;
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), Some(Step::Frozen)).await.unwrap_err();
    let mut eu_conn = app.region_db("eu").owner_conn().await;
    sqlx::query("BEGIN").execute(&mut eu_conn).await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)")
        .bind(uuid.to_string())
        .execute(&mut eu_conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'stray', 'stray')")
        .bind(uuid)
        .execute(&mut eu_conn)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut eu_conn).await.unwrap();
    moving::move_organization(&m, org, eu(), app.clock.now_utc(), None).await.unwrap();
    whole_in(&app, uuid, "eu", "us", &before, events, 1).await;
}

// ---- every region's operations: deletion, operator commands ----

/// An organization of the second region, scheduled for deletion by its Owner, is purged by the
/// worker's sweep in its own region (its database, its file store), its data keys destroyed and
/// its directory entry removed: no row of it is left in either database, and the other region's
/// organization is untouched.
#[tokio::test]
async fn an_organization_of_another_region_is_purged_there_leaving_nothing_in_either_database() {
    use clientflow::platform::keys::Scope;
    use clientflow::privacy::deletion;
    let app = two_regions().await;
    let mut us_owner = sign_up(&app, "owner@stays.test").await;
    let us_slug = create_org(&mut us_owner, "stays").await;
    let mut eu_owner = sign_up(&app, "owner@leaves.test").await;
    let res = create_in(&mut eu_owner, "leaves", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let eu_slug = location(&res).trim_start_matches("/o/").to_string();
    tour(&app, &mut eu_owner, &eu_slug, "leaves").await;

    // A second EU organization of the same Owner: the Owner's copy in the EU database is shared
    // with it. Someone who was only in the deleted organization but whom a row of the second
    // one still names (a notification of their doing) keeps their copy too, and that row its
    // reference: the purge changes nothing of another organization.
    let res = create_in(&mut eu_owner, "also here", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let also_slug = location(&res).trim_start_matches("/o/").to_string();
    invite_and_join(&app, &mut eu_owner, &eu_slug, "named@leaves.test", "member", None).await;
    let person = |email: &'static str| {
        let app = &app;
        async move {
            let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                .bind(email)
                .fetch_one(&mut app.db.admin_conn().await)
                .await
                .unwrap();
            id
        }
    };
    let (owner_id, departed_id, named_id) =
        (person("owner@leaves.test").await, person("member@leaves.test").await, person("named@leaves.test").await);
    let also_org = org_id(&app, "eu", &also_slug).await;
    let notification = notification_by(&mut app.region_db("eu").admin_conn().await, also_org, owner_id, named_id).await;

    let us_org = org_id(&app, "us", &us_slug).await;
    let eu_org = org_id(&app, "eu", &eu_slug).await;
    let mut us = app.region_db("us").admin_conn().await;
    let mut eu_db = app.region_db("eu").admin_conn().await;
    let us_before = rows_of(&mut us, us_org).await;
    let copies = async |conn: &mut PgConnection| -> Vec<(uuid::Uuid, String)> {
        sqlx::query_as("SELECT id, email FROM users ORDER BY email").fetch_all(conn).await.unwrap()
    };
    let eu_people = copies(&mut eu_db).await;
    for id in [owner_id, departed_id, named_id] {
        assert!(eu_people.iter().any(|(p, _)| *p == id), "{id} was copied into the EU database: {eu_people:?}");
    }
    assert!(rows_of(&mut eu_db, eu_org).await.len() >= 10, "the tour reached the EU database");
    let eu_files = app.config.residency.files_dir(eu(), &app.config.data_dir);
    assert!(!files_of(&eu_files, eu_org).is_empty(), "the EU organization has files in its store");

    let path = format!("/o/{eu_slug}/settings/deletion");
    let res = eu_owner.submit(&path, &path, &[("confirm_name", "leaves"), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());

    // An export archive left on disk (sealed, as the export worker leaves it).
    let archives = clientflow::privacy::export_jobs::archive_dir(
        &app.config.data_dir,
        &app.app_db,
        eu(),
        eu_org.to_string().parse().unwrap(),
    );
    std::fs::create_dir_all(&archives).unwrap();
    std::fs::write(archives.join("leftover.zip.sealed"), b"sealed bytes").unwrap();
    assert!(archives.to_string_lossy().contains("exports-eu"), "{}", archives.display());
    // Not before the grace period is over.
    app.clock.advance(time::Duration::days(29));
    assert!(purge_sweep(&app).await.is_empty());
    assert_eq!(rows_of(&mut eu_db, eu_org).await.iter().find(|(t, _)| t == "organizations").map(|(_, n)| *n), Some(1));
    app.clock.advance(time::Duration::days(2));
    let purged = purge_sweep(&app).await;
    assert_eq!(purged.len(), 1, "{purged:?}");
    assert_eq!(purged[0].0, eu(), "purged in its own region");
    assert_eq!(purged[0].1.record.organization_id, eu_org);
    assert!(purged[0].1.files_removed > 0 && purged[0].1.keys_destroyed > 0, "{purged:?}");

    // Zero rows of it in every tenant table of both databases; the US organization untouched.
    assert_eq!(rows_of(&mut eu_db, eu_org).await, vec![], "rows of the purged organization left in the EU database");
    assert_eq!(rows_of(&mut us, eu_org).await, vec![], "rows of the purged organization in the US database");
    assert_eq!(rows_of(&mut us, us_org).await, us_before);
    // Its files, keys and directory entry are gone; its signed deletion record stays in its region.
    assert!(files_of(&eu_files, eu_org).is_empty(), "{:?}", files_of(&eu_files, eu_org));
    assert!(!archives.exists(), "the purged organization's export archives are left in {}", archives.display());
    assert!(app.state.keys.store().versions(Scope::Org(eu_org)).unwrap().is_empty());
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM organization_directory WHERE org = $1")
        .bind(eu_org)
        .fetch_one(&mut us)
        .await
        .unwrap();
    assert_eq!(entries, 0, "the directory no longer routes to the purged organization");
    for (conn, expected) in [(&mut eu_db, 1i64), (&mut us, 0)] {
        let records: i64 =
            sqlx::query_scalar("SELECT count(*) FROM organization_deletion_records WHERE deleted_organization_id = $1")
                .bind(eu_org)
                .fetch_one(conn)
                .await
                .unwrap();
        assert_eq!(records, expected);
    }
    let key = clientflow::privacy::record_key(&app.state.sealer);
    assert!(deletion::verify_record(&mut eu_db, eu_org.to_string().parse().unwrap(), &key).await.unwrap());

    // Its people's copies left the EU database with it: the member only it had is gone (id and
    // email); the Owner, still in the other EU organization, stays, and so does the person that
    // organization's notification names, the notification unchanged.
    let eu_people = copies(&mut eu_db).await;
    assert!(
        !eu_people.iter().any(|(id, email)| *id == departed_id || email == "member@leaves.test"),
        "the departed member's copy is left in the EU database: {eu_people:?}"
    );
    assert!(eu_people.iter().any(|(id, _)| *id == owner_id), "{eu_people:?}");
    assert!(eu_people.iter().any(|(id, _)| *id == named_id), "{eu_people:?}");
    let actor: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT actor_id FROM notifications WHERE organization_id = $1 AND id = $2")
            .bind(also_org)
            .bind(notification)
            .fetch_one(&mut eu_db)
            .await
            .unwrap();
    assert_eq!(actor, Some(named_id), "another organization's row was changed by the purge");
    assert_eq!(purged[0].1.record.row_counts.get("users"), Some(&1), "{:?}", purged[0].1.record.row_counts);
    // Their accounts are untouched in the directory.
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = ANY($1)")
        .bind(vec![owner_id, departed_id, named_id])
        .fetch_one(&mut us)
        .await
        .unwrap();
    assert_eq!(accounts, 3);
}

/// An organization moved out of a region takes its people's copies along: after the source's
/// purge, the region's `users` table holds none of those only it had (id or email), while the
/// Owner, a member of another organization there, keeps the copy that organization needs, and
/// so does a person only a row of that other organization names (a notification of their
/// doing), that row unchanged.
#[tokio::test]
async fn a_move_out_of_a_region_leaves_no_copy_of_its_people_behind() {
    let app = two_regions().await;
    let mut owner = sign_up(&app, "owner@departs.test").await;
    let res = create_in(&mut owner, "departs", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let slug = location(&res).trim_start_matches("/o/").to_string();
    invite_and_join(&app, &mut owner, &slug, "member@departs.test", "member", None).await;
    invite_and_join(&app, &mut owner, &slug, "named@departs.test", "member", None).await;
    let res = create_in(&mut owner, "remains", Some("eu")).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let remains = location(&res).trim_start_matches("/o/").to_string();
    let uuid = org_id(&app, "eu", &slug).await;
    let org: clientflow::platform::ids::OrgId = uuid.to_string().parse().unwrap();
    let mut us = app.db.admin_conn().await;
    let ids: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE email LIKE '%@departs.test' ORDER BY email")
            .fetch_all(&mut us)
            .await
            .unwrap();
    let (member_id, named_id, owner_id) = (ids[0].0, ids[1].0, ids[2].0);
    let emails: Vec<&str> = ids.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(emails, ["member@departs.test", "named@departs.test", "owner@departs.test"]);
    let mut eu_db = app.region_db("eu").admin_conn().await;
    let remains_org = org_id(&app, "eu", &remains).await;
    let notification = notification_by(&mut eu_db, remains_org, owner_id, named_id).await;
    let copies = async |conn: &mut PgConnection| -> Vec<(uuid::Uuid, String)> {
        sqlx::query_as("SELECT id, email FROM users ORDER BY email").fetch_all(conn).await.unwrap()
    };
    assert_eq!(copies(&mut eu_db).await.len(), 3, "all three were copied into the EU database");

    let m = mover(&app);
    let report = moving::move_organization(&m, org, RegionId::DEFAULT, app.clock.now_utc(), None).await.unwrap();
    assert_eq!(report.done.last(), Some(&Step::Purged));
    assert_eq!(directory_region(&app, uuid).await, ("us".to_string(), None));
    assert_eq!(rows_of(&mut eu_db, uuid).await, vec![], "nothing of it left in the EU database");
    let left = copies(&mut eu_db).await;
    assert!(
        !left.iter().any(|(id, email)| *id == member_id || email == "member@departs.test"),
        "the moved organization's member is left in the EU database: {left:?}"
    );
    assert_eq!(
        left,
        vec![(named_id, "named@departs.test".to_string()), (owner_id, "owner@departs.test".to_string())],
        "the other organization's people keep their copies"
    );
    let actor: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT actor_id FROM notifications WHERE organization_id = $1 AND id = $2")
            .bind(remains_org)
            .bind(notification)
            .fetch_one(&mut eu_db)
            .await
            .unwrap();
    assert_eq!(actor, Some(named_id), "another organization's row was changed by the move's purge");
    // Both go on working: the moved organization in the default region, the other in the EU.
    for path in [format!("/o/{slug}/projects"), format!("/o/{remains}/projects")] {
        let (status, html) = owner.page(&path).await;
        assert_eq!(status, 200, "{path}: {html}");
    }
}

/// The real binary with both regions configured by URL: each region's app, owner and auditor
/// roles, like a production installation with one database server per region.
async fn region_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    use crate::support::url_of;
    let passwords = clientflow_test_support::role_passwords().await;
    let (us, eu_db) = (app.region_db("us"), app.region_db("eu"));
    let out = crate::support::process::bin()
        .args(args)
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", url_of(&us.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", url_of(&us.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", url_of(&us.auditor, Some(&passwords.auditor)))
        .env("CLIENTFLOW_RESIDENCY__REGIONS__EU__LABEL", "European Union")
        .env("CLIENTFLOW_RESIDENCY__REGIONS__EU__DATABASE_URL", url_of(&eu_db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_RESIDENCY__REGIONS__EU__ADMIN_URL", url_of(&eu_db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_RESIDENCY__REGIONS__EU__AUDITOR_URL", url_of(&eu_db.auditor, Some(&passwords.auditor)))
        .env("CLIENTFLOW_RESIDENCY__REGIONS__EU__FILES_DIR", app.config.residency.files_dir(eu(), &app.config.data_dir))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `org list` and `audit verify` read every region's organizations, each in its own database:
/// an edit to the EU organization's audit log is found by the command run on the default
/// region's configuration.
#[tokio::test]
async fn org_list_and_audit_verify_cover_every_region() {
    let app = two_regions().await;
    let mut us_owner = sign_up(&app, "owner@listed-us.test").await;
    let us_slug = create_org(&mut us_owner, "listed-us").await;
    let mut eu_owner = sign_up(&app, "owner@listed-eu.test").await;
    let res = create_in(&mut eu_owner, "listed-eu", Some("eu")).await;
    assert_eq!(res.status(), 303);
    let eu_slug = location(&res).trim_start_matches("/o/").to_string();
    let eu_org = org_id(&app, "eu", &eu_slug).await;

    let (ok, text) = region_cli(&app, &["--json", "org", "list"]).await;
    assert!(ok, "{text}");
    let doc: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("{text}"));
    let listed: Vec<(String, String)> = doc["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["slug"].as_str().unwrap().to_string(), o["region"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, vec![(us_slug.clone(), "us".to_string()), (eu_slug.clone(), "eu".to_string())]);

    let (ok, text) = region_cli(&app, &["audit", "verify"]).await;
    assert!(ok, "{text}");
    assert!(text.contains(&format!("ok      {us_slug} [us] (")), "{text}");
    assert!(text.contains(&format!("ok      {eu_slug} [eu] (")), "{text}");
    assert!(text.contains("verified 2 organizations"), "{text}");

    // An edit in the EU database is found.
    {
        let mut db = app.region_db("eu").admin_conn().await;
        let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE audit_events SET actor_label = 'someone else' WHERE organization_id = $1 AND seq = 1")
            .bind(eu_org)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let (ok, text) = region_cli(&app, &["audit", "verify"]).await;
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("BROKEN  {eu_slug} [eu]")) && text.contains("1 broken"), "{text}");
    assert!(text.contains(&format!("ok      {us_slug} [us] (")), "{text}");
}

/// A notification to `recipient` of `actor`'s doing in `org` (a row of that organization that
/// names the actor); its id.
async fn notification_by(
    conn: &mut PgConnection,
    org: uuid::Uuid,
    recipient: uuid::Uuid,
    actor: uuid::Uuid,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notifications (organization_id, id, recipient_id, kind, actor_id, title, link, created_at) \
         VALUES ($1, $2, $3, 'task_changed', $4, 'A task changed', '/tasks', now())",
    )
    .bind(org)
    .bind(id)
    .bind(recipient)
    .bind(actor)
    .execute(conn)
    .await
    .unwrap();
    id
}
