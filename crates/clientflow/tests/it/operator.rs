//! The operator CLI and the data generator, run as the real binary against a fresh database:
//! JSON shapes, refusals, audit events under a system actor, and `seed` counts checked in the
//! database.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use clientflow::access;
use clientflow::platform::ids::OrgId;
use clientflow::platform::secret::Secret;
use clientflow::work::clients;
use clientflow_test_support::TestDb;
use serde_json::Value;
use sqlx::{ConnectOptions, PgConnection};

/// Runs `clientflow` with the test database's three role URLs.
#[derive(Clone)]
struct Cli {
    env: Arc<Vec<(String, String)>>,
    _dir: Arc<tempfile::TempDir>,
}

impl Cli {
    async fn new(db: &TestDb) -> Self {
        let passwords = clientflow_test_support::role_passwords().await;
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("CLIENTFLOW_DATA_DIR".to_string(), dir.path().display().to_string()),
            ("DATABASE_URL".to_string(), crate::support::url_of(&db.app, Some(&passwords.app))),
            ("CLIENTFLOW_DATABASE__ADMIN_URL".to_string(), crate::support::url_of(&db.owner, Some(&passwords.owner))),
            (
                "CLIENTFLOW_DATABASE__AUDITOR_URL".to_string(),
                crate::support::url_of(&db.auditor, Some(&passwords.auditor)),
            ),
        ];
        Cli { env: Arc::new(env), _dir: Arc::new(dir) }
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let env = self.env.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_clientflow"));
            c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(&args);
            for (k, v) in env.iter() {
                c.env(k, v);
            }
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None).await
    }

    /// Runs with `--json`, expects success, and returns the one JSON document on stdout.
    async fn ok(&self, args: &[&str]) -> Value {
        self.ok_with(args, None).await
    }

    async fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run_with(&all, stdin).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}):\n{stdout}"))
    }

    /// Runs with `--json`, expects exit status 1, and returns the error document on stderr.
    async fn refused(&self, args: &[&str]) -> Value {
        self.refused_with(args, None).await
    }

    async fn refused_with(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run_with(&all, stdin).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout: {}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `seed` reports progress on stderr before the error document.
        let stderr = match stderr.find("\n{") {
            Some(i) if !stderr.starts_with('{') => stderr[i + 1..].to_string(),
            _ => stderr.to_string(),
        };
        let doc: Value =
            serde_json::from_str(&stderr).unwrap_or_else(|e| panic!("{args:?}: error is not JSON ({e}):\n{stderr}"));
        doc["error"].clone()
    }
}

async fn auditor(db: &TestDb) -> PgConnection {
    db.auditor.clone().connect().await.unwrap()
}

/// (action, actor_type, actor_label) of one organization's audit events, in order.
async fn audit_trail(db: &TestDb, org: &str) -> Vec<(String, String, String)> {
    let mut conn = auditor(db).await;
    sqlx::query_as(
        "SELECT action, actor_type, actor_label FROM audit_events WHERE organization_id = $1::uuid ORDER BY seq",
    )
    .bind(org)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

fn field_of(error: &Value) -> String {
    error["fields"][0]["field"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn operator_commands_work_and_print_stable_json() {
    let db = TestDb::new().await;
    let cli = Cli::new(&db).await;

    // Accounts: a generated password printed once, or one read from standard input.
    let owner = cli.ok(&["user", "create", "--email", "Olive@Example.com", "--name", "Olive Owner"]).await;
    assert_eq!(owner["user"]["email"], "olive@example.com");
    assert_eq!(owner["user"]["name"], "Olive Owner");
    assert_eq!(owner["user"]["email_verified"], true);
    assert_eq!(owner["user"]["two_factor"], false);
    assert_eq!(owner["user"]["disabled"], false);
    assert!(owner["user"]["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(owner["user"]["created_at"].as_str().unwrap().contains('T'));
    let generated = owner["password"].as_str().unwrap().to_string();
    assert!(generated.len() >= 40, "{generated}");
    let manager = cli
        .ok_with(
            &["user", "create", "--email", "max@example.com", "--password-stdin"],
            Some("purple elephants juggle quietly\n"),
        )
        .await;
    assert!(manager.get("password").is_none(), "a password from stdin is not echoed: {manager}");
    let text = cli.run(&["user", "create", "--email", "cleo@example.com", "--name", "Cleo Client"]).await;
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("created user cleo@example.com") && text.contains("password (shown once"), "{text}");

    // The stored account: verified, argon2id, the password the operator was given.
    let mut admin = db.admin_conn().await;
    let (hash, verified): (String, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT password_hash, email_verified_at FROM users WHERE email = 'olive@example.com'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(verified.is_some());
    let hasher = clientflow::identity::password::PasswordHasher::new(1, 4);
    assert!(hasher.verify(&Secret::new(generated.clone()), Some(&hash)).await.unwrap());
    let (hash,): (String,) = sqlx::query_as("SELECT password_hash FROM users WHERE email = 'max@example.com'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(hasher.verify(&Secret::new("purple elephants juggle quietly"), Some(&hash)).await.unwrap());
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT e.kind, e.detail FROM security_events e JOIN users u ON u.id = e.user_id WHERE u.email = 'olive@example.com'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "created_by_operator");
    assert_eq!(events[0].1["actor"], "operator: user create");
    assert!(!events[0].1.to_string().contains(&generated), "the password reached a security event");

    let list = cli.ok(&["user", "list"]).await;
    let emails: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["olive@example.com", "max@example.com", "cleo@example.com"]);
    assert!(!list.to_string().contains("argon2"), "a list leaked password hashes");

    // Organizations.
    let created = cli.ok(&["org", "create", "--name", "Acme Studio", "--owner", "olive@example.com"]).await;
    let org = &created["organization"];
    assert_eq!(org["slug"], "acme-studio");
    assert_eq!(org["name"], "Acme Studio");
    assert_eq!(created["owner"]["email"], "olive@example.com");
    let org_id = org["id"].as_str().unwrap().to_string();
    cli.ok(&["org", "create", "--name", "Other", "--slug", "other-co", "--owner", "max@example.com"]).await;
    let orgs = cli.ok(&["org", "list"]).await;
    let slugs: Vec<&str> =
        orgs["organizations"].as_array().unwrap().iter().map(|o| o["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["acme-studio", "other-co"]);

    // Members, by slug and by id; a Client member is linked to a client record.
    let added =
        cli.ok(&["member", "add", "--org", "acme-studio", "--email", "max@example.com", "--role", "manager"]).await;
    assert_eq!(added["organization"]["id"], org_id.as_str());
    assert_eq!(added["member"]["email"], "max@example.com");
    assert_eq!(added["member"]["role"], "manager");
    assert_eq!(added["member"]["status"], "active");
    assert_eq!(added["member"]["client_id"], Value::Null);
    let app_db = db.app_db(2).await;
    let principal = access::operator(&app_db, &crate::support::operator(), org_id.parse::<OrgId>().unwrap(), "test")
        .await
        .unwrap()
        .expect("organization exists");
    let mut tx = clientflow::access::OrgTx::begin(&app_db, &principal).await.unwrap();
    let client = clients::repo::create(&mut tx, "Globex").await.unwrap();
    tx.commit().await.unwrap();
    let client_id = client.id.to_string();
    let added = cli
        .ok(&[
            "member",
            "add",
            "--org",
            &org_id,
            "--email",
            "cleo@example.com",
            "--role",
            "client",
            "--client",
            &client_id,
        ])
        .await;
    assert_eq!(added["member"]["role"], "client");
    assert_eq!(added["member"]["client_id"], client_id.as_str());
    let members = cli.ok(&["member", "list", "--org", "acme-studio"]).await;
    let roles: Vec<(&str, &str)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("olive@example.com", "owner"), ("max@example.com", "manager"), ("cleo@example.com", "client")]);
    let text = String::from_utf8_lossy(&cli.run(&["member", "list", "--org", "acme-studio"]).await.stdout).to_string();
    assert!(text.starts_with("EMAIL") && text.contains("max@example.com") && text.contains("manager"), "{text}");

    // API keys: printed once, working, listed without the key, revoked.
    let key = cli
        .ok(&[
            "api-key",
            "create",
            "--org",
            "acme-studio",
            "--name",
            "CI",
            "--role",
            "member",
            "--permissions",
            "tasks.read,projects.read",
            "--expires-in-days",
            "30",
        ])
        .await;
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("cf_live_"), "{secret}");
    let api_key = &key["api_key"];
    assert_eq!(api_key["name"], "CI");
    assert_eq!(api_key["role"], "member");
    assert_eq!(api_key["permissions"], serde_json::json!(["projects.read", "tasks.read"]));
    assert!(api_key["expires_at"].is_string());
    assert_eq!(api_key["revoked_at"], Value::Null);
    assert!(secret.starts_with(api_key["prefix"].as_str().unwrap()));
    let now = time::OffsetDateTime::now_utc();
    let p = access::verify_api_key(&app_db, &secret, now).await.unwrap().expect("the printed key works");
    assert_eq!(p.org_id().to_string(), org_id);
    let listed = cli.ok(&["api-key", "list", "--org", "acme-studio"]).await;
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["api_keys"][0]["id"], api_key["id"]);
    assert!(!listed.to_string().contains(&secret), "a list showed the key");
    let key_id = api_key["id"].as_str().unwrap().to_string();
    let revoked = cli.ok(&["api-key", "revoke", "--org", "acme-studio", "--id", &key_id]).await;
    assert!(revoked["api_key"]["revoked_at"].is_string());
    assert!(access::verify_api_key(&app_db, &secret, now).await.unwrap().is_none(), "a revoked key still works");
    let text = cli.run(&["api-key", "create", "--org", "acme-studio", "--name", "Deploy", "--role", "admin"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("created API key \"Deploy\"") && text.contains("key (shown once, store it now): cf_live_"),
        "{text}"
    );

    // Every organization-scoped action is audited under the operator, in order, and the
    // chain verifies.
    let trail = audit_trail(&db, &org_id).await;
    let actions: Vec<&str> = trail.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "organization.created",
            "member.added",
            "member.added",
            "member.added",
            "api_key.created",
            "api_key.revoked",
            "api_key.created"
        ]
    );
    for (action, actor_type, label) in &trail {
        assert_eq!(actor_type, "system", "{action}");
        assert!(label.starts_with("operator: "), "{action}: {label}");
    }
    assert_eq!(trail[4].2, "operator: api-key create");
    let mut conn = auditor(&db).await;
    let after: Vec<Value> =
        sqlx::query_scalar("SELECT after FROM audit_events WHERE organization_id = $1::uuid AND after IS NOT NULL")
            .bind(&org_id)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(!after.iter().any(|a| a.to_string().contains(&secret)), "an API key reached the audit log");
    let out = cli.run(&["audit", "verify", "--org", "acme-studio"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    app_db.close().await;
}

#[tokio::test]
async fn operator_commands_refuse_and_write_nothing() {
    let db = TestDb::new().await;
    let cli = Cli::new(&db).await;
    cli.ok(&["user", "create", "--email", "olive@example.com"]).await;
    cli.ok(&["user", "create", "--email", "max@example.com"]).await;
    let org = cli.ok(&["org", "create", "--name", "Acme", "--owner", "olive@example.com"]).await;
    let org_id = org["organization"]["id"].as_str().unwrap().to_string();
    cli.ok(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "member"]).await;
    let events_before = audit_trail(&db, &org_id).await.len();

    // Accounts.
    let e = cli.refused(&["user", "create", "--email", "OLIVE@example.com"]).await;
    assert_eq!(e["kind"], "conflict");
    assert!(e["message"].as_str().unwrap().contains("already exists"), "{e}");
    let e = cli.refused(&["user", "create", "--email", "not-an-email"]).await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "email"));
    let e = cli
        .refused_with(&["user", "create", "--email", "new@example.com", "--password-stdin"], Some("password1234\n"))
        .await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "password-stdin"));
    assert!(e["message"].as_str().unwrap().contains("too easy"), "{e}");
    assert!(!e.to_string().contains("password1234"), "the refused password was echoed");

    // Organizations.
    let e = cli.refused(&["org", "create", "--name", "Nobody's", "--owner", "ghost@example.com"]).await;
    assert_eq!(e["kind"], "not_found");
    let e = cli.refused(&["org", "create", "--name", "Acme", "--owner", "max@example.com"]).await;
    assert_eq!(e["kind"], "conflict");
    assert!(e["message"].as_str().unwrap().contains("slug acme is already taken"), "{e}");
    let e = cli.refused(&["org", "create", "--name", "X", "--slug", "Bad Slug", "--owner", "max@example.com"]).await;
    assert_eq!(field_of(&e), "slug");

    // Unknown organizations, by slug and by id, look the same.
    for org in ["no-such-org", "0190b7a8-5f7e-7000-8000-000000000000", "not a slug"] {
        let e = cli.refused(&["member", "list", "--org", org]).await;
        assert_eq!(e["kind"], "not_found", "{org}: {e}");
        assert_eq!(e["message"], format!("no organization {org}"));
        let e = cli.refused(&["api-key", "create", "--org", org, "--name", "k", "--role", "member"]).await;
        assert_eq!(e["kind"], "not_found", "{org}: {e}");
    }

    // Members.
    let e = cli.refused(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "boss"]).await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "role"));
    let e = cli.refused(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "client"]).await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "client"));
    let some_client = uuid::Uuid::now_v7().to_string();
    let e = cli
        .refused(&[
            "member",
            "add",
            "--org",
            "acme",
            "--email",
            "max@example.com",
            "--role",
            "manager",
            "--client",
            &some_client,
        ])
        .await;
    assert_eq!(field_of(&e), "client");
    cli.ok(&["user", "create", "--email", "cleo@example.com"]).await;
    let e = cli
        .refused(&[
            "member",
            "add",
            "--org",
            "acme",
            "--email",
            "cleo@example.com",
            "--role",
            "client",
            "--client",
            &some_client,
        ])
        .await;
    assert_eq!(field_of(&e), "client", "a client of no organization (or another one) is refused: {e}");
    let e = cli.refused(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "admin"]).await;
    assert_eq!(e["kind"], "conflict");
    let e = cli.refused(&["member", "add", "--org", "acme", "--email", "ghost@example.com", "--role", "admin"]).await;
    assert_eq!(e["kind"], "not_found");

    // API keys.
    let e = cli.refused(&["api-key", "create", "--org", "acme", "--name", "k", "--role", "owner"]).await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "role"));
    let e = cli
        .refused(&[
            "api-key",
            "create",
            "--org",
            "acme",
            "--name",
            "k",
            "--role",
            "member",
            "--permissions",
            "org.delete",
        ])
        .await;
    assert_eq!(field_of(&e), "permissions");
    let e = cli
        .refused(&["api-key", "create", "--org", "acme", "--name", "k", "--role", "member", "--expires-in-days", "0"])
        .await;
    assert_eq!(field_of(&e), "expires-in-days");
    let e = cli.refused(&["api-key", "revoke", "--org", "acme", "--id", &uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(e["kind"], "not_found");

    // Text mode: one line on stderr, exit status 1.
    let out = cli.run(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "boss"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --role: unknown role \"boss\""), "{err}");

    // None of it was written or audited.
    assert_eq!(audit_trail(&db, &org_id).await.len(), events_before);
    let mut admin = db.admin_conn().await;
    let counts: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM organizations), (SELECT count(*) FROM memberships), \
         (SELECT count(*) FROM api_keys)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(counts, (3, 1, 2, 0));
}

/// A small `seed` run: the counts it reports are the rows in the database, the data hangs
/// together (assignees may work in the project, subtasks sit in their parent's project,
/// statuses match columns), each organization has one audit event and a valid chain.
#[tokio::test]
async fn seed_writes_what_it_reports_through_the_tenant_door() {
    let db = TestDb::new().await;
    let cli = Cli::new(&db).await;
    let args =
        ["seed", "--orgs", "2", "--clients", "4", "--projects", "5", "--tasks", "301", "--users", "7", "--seed", "7"];
    let report = cli.ok(&args).await;
    assert_eq!(report["totals"]["tasks"], 301);
    let orgs = report["organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 2);
    assert_eq!(orgs[0]["counts"]["tasks"].as_u64().unwrap() + orgs[1]["counts"]["tasks"].as_u64().unwrap(), 301);
    assert!(report["task_list_plan"]["uses_list_index"].is_boolean());
    assert_eq!(report["analyzed"], true);

    let mut admin = db.admin_conn().await;
    for org in orgs {
        let id = org["id"].as_str().unwrap();
        let c = &org["counts"];
        for (table, key) in [
            ("memberships", "memberships"),
            ("clients", "clients"),
            ("client_contacts", "client_contacts"),
            ("projects", "projects"),
            ("project_members", "project_members"),
            ("board_columns", "board_columns"),
            ("tasks", "tasks"),
            ("task_assignees", "task_assignees"),
            ("comments", "comments"),
            ("task_activity", "task_activity"),
            ("time_entries", "time_entries"),
            ("invoices", "invoices"),
            ("invoice_lines", "invoice_lines"),
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE organization_id = $1::uuid"))
                .bind(id)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert_eq!(n as u64, c[key].as_u64().unwrap(), "{table} in {}", org["slug"]);
        }
        assert_eq!(c["clients"], 4);
        assert_eq!(c["projects"], 5);
        assert_eq!(c["board_columns"], 20);
        assert!(c["users"].as_u64().unwrap() >= 8, "7 people and at least one client-portal user");
        assert!(c["comments"].as_u64().unwrap() > 0 && c["time_entries"].as_u64().unwrap() > 0);
        assert!(
            c["invoices"].as_u64().unwrap() > 0
                && c["invoice_lines"].as_u64().unwrap() >= c["invoices"].as_u64().unwrap()
        );

        // Exactly one audit event, by the operator, with the counts; the chain verifies.
        let trail = audit_trail(&db, id).await;
        assert_eq!(trail, [("seed.generated".to_string(), "system".to_string(), "operator: seed".to_string())]);
        let out = cli.run(&["audit", "verify", "--org", org["slug"].as_str().unwrap()]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let mut conn = auditor(&db).await;
    let after: Value = sqlx::query_scalar("SELECT after FROM audit_events WHERE organization_id = $1::uuid")
        .bind(orgs[0]["id"].as_str().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(after["counts"], orgs[0]["counts"]);

    // The data hangs together.
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_assignees a JOIN tasks t ON t.organization_id = a.organization_id AND t.id = a.task_id \
         JOIN memberships m ON m.organization_id = a.organization_id AND m.user_id = a.user_id \
         WHERE m.role = 'client' OR (m.role = 'member' AND NOT EXISTS (SELECT 1 FROM project_members pm \
               WHERE pm.organization_id = t.organization_id AND pm.project_id = t.project_id AND pm.user_id = a.user_id))",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(broken, 0, "assignees without access to the task's project");
    let subtasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE parent_id IS NOT NULL")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(subtasks > 0);
    // Top-level tasks and subtasks are written by two statements: each column's positions are
    // still one run 0..n-1 over both, and every subtask's parent is a top-level task.
    let misplaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT count(*) AS n, min(position) AS lo, max(position) AS hi, \
                count(DISTINCT position) AS d FROM tasks GROUP BY organization_id, column_id) c \
         WHERE lo <> 0 OR hi <> n - 1 OR d <> n",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(misplaced, 0, "board positions with gaps or repeats");
    let nested: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks s JOIN tasks p ON p.organization_id = s.organization_id AND p.id = s.parent_id \
         WHERE p.parent_id IS NOT NULL OR p.project_id <> s.project_id",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(nested, 0, "subtasks under subtasks or in another project");
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks t JOIN board_columns c ON c.organization_id = t.organization_id AND c.id = t.column_id \
         WHERE (t.status = 'done') <> (c.name = 'Done') OR (t.status = 'todo') <> (c.name = 'To do')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "statuses and board columns disagree");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT status FROM tasks ORDER BY 1").fetch_all(&mut admin).await.unwrap();
    assert!(statuses.len() >= 3, "{statuses:?}");
    let late: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tasks WHERE created_at > now() OR updated_at < created_at) \
              + (SELECT count(*) FROM comments WHERE created_at > now())",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(late, 0, "timestamps in the future or out of order");
    let numbers: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT count(number), coalesce(max(number), 0), (SELECT next_number FROM invoice_counters c WHERE c.organization_id = i.organization_id) \
         FROM invoices i GROUP BY organization_id",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for (count, max, next) in numbers {
        assert_eq!((count, next), (max, max + 1), "invoice numbers have gaps");
    }

    // The app role, without a tenant, sees none of it; with one, only that organization's.
    let mut app = db.app_conn().await;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&mut app).await.unwrap();
    assert_eq!(visible, 0);

    // The same seed again names the same organizations: refused, and nothing half-written.
    let e = cli.refused(&args).await;
    assert_eq!(e["kind"], "conflict");
    assert!(e["message"].as_str().unwrap().contains("another --seed"), "{e}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut admin).await.unwrap();
    assert_eq!(n, 2);
}

/// The same seed on another database gives the same data (ids and instants aside).
#[tokio::test]
async fn seed_is_reproducible() {
    async fn fingerprint(db: &TestDb) -> Vec<(String, String, String, String, Option<i32>, i64)> {
        let cli = Cli::new(db).await;
        cli.ok(&[
            "seed",
            "--orgs",
            "1",
            "--clients",
            "2",
            "--projects",
            "3",
            "--tasks",
            "120",
            "--users",
            "5",
            "--seed",
            "99",
        ])
        .await;
        let mut admin = db.admin_conn().await;
        sqlx::query_as(
            "SELECT o.slug, t.title, t.status, t.priority, t.estimate_minutes, \
                    (SELECT count(*) FROM task_assignees a WHERE a.organization_id = t.organization_id AND a.task_id = t.id) \
             FROM tasks t JOIN organizations o ON o.id = t.organization_id ORDER BY 1, 2, 3, 4, 5, 6",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap()
    }
    let (a, b) = (TestDb::new().await, TestDb::new().await);
    let first = fingerprint(&a).await;
    assert_eq!(first.len(), 120);
    assert_eq!(first, fingerprint(&b).await);
}

#[tokio::test]
async fn seed_refuses_impossible_arguments() {
    let db = TestDb::new().await;
    let cli = Cli::new(&db).await;
    let e = cli.refused(&["seed", "--orgs", "0", "--clients", "1", "--projects", "1", "--tasks", "1"]).await;
    assert_eq!(field_of(&e), "orgs");
    let e = cli.refused(&["seed", "--orgs", "1", "--clients", "1", "--projects", "0", "--tasks", "10"]).await;
    assert_eq!(field_of(&e), "projects");
    let out = cli.run(&["seed", "--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--tasks") && help.contains("in total"), "{help}");
}

/// A key made with the command line acts for a member (`--as`, by default the organization's
/// first Owner) and works as its role through the API: reads, time recorded for that member,
/// comments that are theirs to edit. A key that would hold more than its member is refused.
#[tokio::test]
async fn api_keys_made_with_the_command_line_act_for_a_member_and_work_as_their_role() {
    use crate::support::api::{get, patch, post};
    use serde_json::json;
    let app = clientflow_test_support::TestApp::spawn().await;
    let cli = Cli::new(&app.db).await;
    let olive =
        cli.ok(&["user", "create", "--email", "olive@example.com"]).await["user"]["id"].as_str().unwrap().to_string();
    let max =
        cli.ok(&["user", "create", "--email", "max@example.com"]).await["user"]["id"].as_str().unwrap().to_string();
    cli.ok(&["user", "create", "--email", "nomad@example.com"]).await;
    let org_id =
        cli.ok(&["org", "create", "--name", "Acme", "--owner", "olive@example.com"]).await["organization"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    cli.ok(&["member", "add", "--org", "acme", "--email", "max@example.com", "--role", "member"]).await;
    let key = |role: &'static str, acting_for: Option<&'static str>| {
        let cli = cli.clone();
        async move {
            let mut args = vec!["api-key", "create", "--org", "acme", "--name", role, "--role", role];
            if let Some(email) = acting_for {
                args.extend(["--as", email]);
            }
            cli.ok(&args).await
        }
    };

    // Keys of each role; by default they act for the Owner.
    let admin = key("admin", None).await;
    assert_eq!(admin["acts_for"]["email"], "olive@example.com");
    assert_eq!(admin["acts_for"]["role"], "owner");
    assert_eq!(admin["api_key"]["acts_for"], olive.as_str());
    let admin = admin["secret"].as_str().unwrap().to_string();
    let manager = key("manager", None).await["secret"].as_str().unwrap().to_string();
    let owners_member_key = key("member", None).await["secret"].as_str().unwrap().to_string();
    let max_key = key("member", Some("max@example.com")).await;
    assert_eq!(
        (max_key["acts_for"]["email"].as_str(), max_key["acts_for"]["role"].as_str()),
        (Some("max@example.com"), Some("member"))
    );
    let max_key = max_key["secret"].as_str().unwrap().to_string();
    let text = String::from_utf8_lossy(
        &cli.run(&["api-key", "create", "--org", "acme", "--name", "t", "--role", "manager"]).await.stdout,
    )
    .to_string();
    assert!(text.contains("acting for olive@example.com (owner)"), "{text}");
    let listed = String::from_utf8_lossy(&cli.run(&["api-key", "list", "--org", "acme"]).await.stdout).to_string();
    assert!(listed.contains("ACTS FOR") && listed.contains("max@example.com"), "{listed}");

    // A project made through the Owner's admin key has the Owner in it; Max is added.
    let res = post(&app, "/api/v1/projects", &admin, json!({"name": "Launch"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let project = res.id();
    let org: OrgId = org_id.parse().unwrap();
    let principal = access::operator(&app.app_db, &crate::support::operator(), org, "test").await.unwrap().unwrap();
    clientflow::work::projects::add_member(
        &app.app_db,
        &crate::support::api::ctx(&app),
        &principal,
        project.parse().unwrap(),
        max.parse().unwrap(),
    )
    .await
    .unwrap();
    let res = post(&app, "/api/v1/tasks", &admin, json!({"project_id": project, "title": "Ship it"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let task = res.id();

    for (name, secret, person) in [
        ("admin", &admin, &olive),
        ("manager", &manager, &olive),
        ("member acting for the Owner", &owners_member_key, &olive),
        ("member acting for Max", &max_key, &max),
    ] {
        // Reads its role holds.
        let res = get(&app, "/api/v1/projects", secret).await;
        assert_eq!(res.status, 200, "{name}: {}", res.body);
        let ids: Vec<&str> = res.body["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [project.as_str()], "{name}");
        let res = get(&app, &format!("/api/v1/tasks/{task}"), secret).await;
        assert_eq!(res.status, 200, "{name}: {}", res.body);
        // Time, recorded for the member it acts for.
        let res =
            post(&app, "/api/v1/time-entries", secret, json!({"project_id": project, "task_id": task, "minutes": 15}))
                .await;
        assert_eq!(res.status, 201, "{name}: {}", res.body);
        assert_eq!(res.body["data"]["user_id"].as_str(), Some(person.as_str()), "{name}");
        // A comment, then editing it: it is theirs.
        let res = post(&app, &format!("/api/v1/tasks/{task}/comments"), secret, json!({"body": name})).await;
        assert_eq!(res.status, 201, "{name}: {}", res.body);
        let comment = res.header("location").unwrap().to_string();
        let res = patch(&app, &comment, secret, json!({"body": format!("{name}, edited")})).await;
        assert_eq!(res.status, 200, "{name}: {}", res.body);
        assert_eq!(res.body["data"]["body"].as_str(), Some(format!("{name}, edited").as_str()));
    }

    // A key never holds more than the member it acts for.
    for role in ["admin", "manager"] {
        let e = cli
            .refused(&["api-key", "create", "--org", "acme", "--name", "k", "--role", role, "--as", "max@example.com"])
            .await;
        assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "as"), "{e}");
        let message = e["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains("max@example.com is a member") && message.contains("never holds more"), "{message}");
    }
    let e = cli
        .refused(&[
            "api-key",
            "create",
            "--org",
            "acme",
            "--name",
            "k",
            "--role",
            "member",
            "--permissions",
            "audit.read",
            "--as",
            "max@example.com",
        ])
        .await;
    assert_eq!(field_of(&e), "permissions", "{e}");
    let e = cli
        .refused(&[
            "api-key",
            "create",
            "--org",
            "acme",
            "--name",
            "k",
            "--role",
            "member",
            "--as",
            "nomad@example.com",
        ])
        .await;
    assert_eq!(field_of(&e), "as", "someone outside the organization: {e}");
    let e = cli
        .refused(&[
            "api-key",
            "create",
            "--org",
            "acme",
            "--name",
            "k",
            "--role",
            "member",
            "--as",
            "ghost@example.com",
        ])
        .await;
    assert_eq!(e["kind"], "not_found", "{e}");
    let listed = cli.ok(&["api-key", "list", "--org", "acme"]).await;
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 5, "a refused key was written: {listed}");
}

/// An owner locked out by a second factor they don't have (lost, or enrolled by someone who
/// had their session) gets back in through the operator: `user reset-two-factor` removes the
/// factor and its recovery codes, ends every session, tells the account by critical mail, and
/// is recorded as a security event and in each of the user's organizations' audit logs under
/// the operator, where the chain still verifies.
#[tokio::test]
async fn the_operator_resets_a_second_factor_with_an_audit_trail() {
    use crate::support::accounts::{PASSWORD, critical_mail, enable_totp, sign_in, sign_up};
    use clientflow_test_support::browser::location;

    let app = clientflow_test_support::TestApp::spawn().await;
    let cli = Cli::new(&app.db).await;
    let mut owner = sign_up(&app, "rue@example.com").await;
    let slug = crate::support::orgs::create_org(&mut owner, "Rue Studio").await;
    let (secret, _) = enable_totp(&app, &mut owner).await;
    let mut other = app.browser();
    assert_eq!(location(&sign_in(&app, &mut other, "rue@example.com", PASSWORD).await), "/login/two-factor");
    crate::support::accounts::next_step(&app);
    let code = crate::support::accounts::current_code(&app, &secret);
    other.submit("/login/two-factor", "/login/two-factor", &[("code", &code)]).await;
    assert_eq!(other.get("/account/security").await.status(), 200);

    // Refusals write nothing.
    let e = cli.refused(&["user", "reset-two-factor", "ghost@example.com"]).await;
    assert_eq!(e["kind"], "not_found");
    let e = cli.refused(&["user", "reset-two-factor", "rue@example.com", "--reason", " "]).await;
    assert_eq!((e["kind"].as_str().unwrap(), field_of(&e).as_str()), ("invalid", "reason"));
    let e = cli.refused(&["user", "reset-two-factor", "rue@example.com", "--reason", "two\nlines"]).await;
    assert_eq!(field_of(&e), "reason");
    assert_eq!(owner.get("/account/security").await.status(), 200);

    let done = cli.ok(&["user", "reset-two-factor", "Rue@Example.com", "--reason", "ticket 4711"]).await;
    assert_eq!(done["user"]["email"], "rue@example.com");
    assert_eq!(done["user"]["two_factor"], false);
    assert_eq!(done["sessions_ended"], 2);
    assert_eq!(done["recovery_codes_removed"], 10);

    // The factor, its codes and every session are gone; the password alone signs in.
    for b in [&mut owner, &mut other] {
        let res = b.get("/account/security").await;
        assert_eq!(
            (res.status().as_u16(), location(&res)),
            (303, "/login?next=%2Faccount%2Fsecurity".to_string()),
            "the session survived"
        );
    }
    let mut db = app.db.admin_conn().await;
    let (secret_left, codes_left): (bool, i64) = sqlx::query_as(
        "SELECT totp_secret IS NOT NULL OR totp_enabled_at IS NOT NULL, \
         (SELECT count(*) FROM recovery_codes r WHERE r.user_id = u.id) FROM users u WHERE email = 'rue@example.com'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((secret_left, codes_left), (false, 0));
    let mut b = app.browser();
    assert_eq!(location(&sign_in(&app, &mut b, "rue@example.com", PASSWORD).await), "/app");

    // Told by critical mail; a security event; the audit log under the operator.
    let mail = critical_mail(&app, "rue@example.com", "Your two-factor authentication was reset").await;
    assert!(mail.contains("administrator"), "{mail}");
    let detail: Value = sqlx::query_scalar(
        "SELECT e.detail FROM security_events e JOIN users u ON u.id = e.user_id \
         WHERE u.email = 'rue@example.com' AND e.kind = 'two_factor_reset_by_operator'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(detail["actor"], "operator: user reset-two-factor");
    assert_eq!(detail["reason"], "ticket 4711");
    let org_id: String = sqlx::query_scalar("SELECT id::text FROM organizations WHERE slug = $1")
        .bind(&slug)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let trail = audit_trail(&app.db, &org_id).await;
    let reset: Vec<_> = trail.iter().filter(|(a, _, _)| a == "member.two_factor_reset").collect();
    assert_eq!(reset.len(), 1, "{trail:?}");
    assert_eq!((reset[0].1.as_str(), reset[0].2.as_str()), ("system", "operator: user reset-two-factor"));
    let mut conn = auditor(&app.db).await;
    let after: Value = sqlx::query_scalar(
        "SELECT after FROM audit_events WHERE organization_id = $1::uuid AND action = 'member.two_factor_reset'",
    )
    .bind(&org_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(after["reason"], "ticket 4711");
    assert_eq!(after["two_factor"], false);
    // The chain verifies: the server's events signed with its key, the operator's with the CLI's.
    let out = cli
        .run(&[
            "audit",
            "verify",
            "--org",
            &org_id,
            "--public-key",
            &base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                app.state.audit_signer.verifying_key().as_bytes(),
            ),
        ])
        .await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // Nothing left to reset.
    let e = cli.refused(&["user", "reset-two-factor", "rue@example.com"]).await;
    assert_eq!(e["kind"], "conflict");
}
