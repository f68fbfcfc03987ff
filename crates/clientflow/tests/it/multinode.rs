//! Several `clientflow serve` processes as one installation (docs/deploy.md): real binaries,
//! one PostgreSQL database, one Redis, one shared file directory, real HTTPS.
//!
//! Processes set up alike share sessions, CSRF tokens, sign-up challenges, mail tokens, file
//! links and files, deliver each message once, and lose no acknowledged write when one stops
//! under load. A process set up unlike the installation (its own default keys, its own file
//! directory, its own role passwords) refuses to start and says which setting to share, instead
//! of starting and failing later.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use clientflow_test_support::TestDb;
use clientflow_test_support::browser::{Browser, location};
use clientflow_test_support::redis::RedisServer;
use serde_json::{Value, json};

use crate::support::accounts::PASSWORD;
use crate::support::process::{bin, free_port, nix_kill_term};

/// What every process of the installation shares besides the database.
struct Shared {
    master_key: String,
    signing_key: String,
    files: tempfile::TempDir,
    /// The key store (privacy.keys_dir): shared like the files it opens.
    keys: tempfile::TempDir,
    redis: RedisServer,
}

impl Shared {
    async fn new() -> Self {
        let key = || {
            let mut k = uuid::Uuid::new_v4().as_bytes().to_vec();
            k.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            base64::engine::general_purpose::STANDARD.encode(k)
        };
        Shared {
            master_key: key(),
            signing_key: key(),
            files: tempfile::tempdir().unwrap(),
            keys: tempfile::tempdir().unwrap(),
            redis: RedisServer::start().await,
        }
    }
}

/// How a process differs from the shared set-up (for the ones that must refuse).
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Alike,
    OwnKeys,
    OwnFiles,
}

struct Node {
    child: Child,
    data: tempfile::TempDir,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn cert(&self) -> PathBuf {
        self.data.path().join("tls/localhost.crt")
    }
}

async fn command(db: &TestDb, shared: &Shared, setup: Setup, data: &Path, port: u16) -> std::process::Command {
    let passwords = clientflow_test_support::role_passwords().await;
    let mut c = bin();
    c.env("CLIENTFLOW_DATA_DIR", data)
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CLIENTFLOW_PUBLIC_URL", format!("https://localhost:{port}"))
        .env("DATABASE_URL", crate::support::url_of(&db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_REDIS__URL", shared.redis.url())
        .env("CLIENTFLOW_BOT_CHECK__POW_DIFFICULTY", "8");
    if setup != Setup::OwnKeys {
        c.env("CLIENTFLOW_SECRETS__MASTER_KEY", &shared.master_key)
            .env("CLIENTFLOW_AUDIT__SIGNING_KEY", &shared.signing_key)
            .env("CLIENTFLOW_PRIVACY__KEYS_DIR", shared.keys.path());
    }
    if setup != Setup::OwnFiles {
        c.env("CLIENTFLOW_FILES__DIR", shared.files.path());
    }
    c
}

/// Starts a process; `like` gives it the same certificate (one name, one certificate, as
/// behind a TCP load balancer).
// The child is killed and waited for by `Node`'s `Drop`.
#[allow(clippy::zombie_processes)]
async fn start(db: &TestDb, shared: &Shared, like: Option<&Node>) -> Node {
    let data = tempfile::tempdir().unwrap();
    if let Some(other) = like {
        std::fs::create_dir_all(data.path().join("tls")).unwrap();
        for f in ["localhost.crt", "localhost.key"] {
            std::fs::copy(other.data.path().join("tls").join(f), data.path().join("tls").join(f)).unwrap();
        }
    }
    let port = free_port();
    let child = command(db, shared, Setup::Alike, data.path(), port)
        .await
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut node = Node { child, data, port };
    crate::support::process::wait_ready(&mut node.child, node.data.path(), port).await;
    // Its log is not read from here on: don't let a full pipe stop it.
    let mut stderr = node.child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    node
}

/// Every message to `to` in either process's mail drop, waiting for at least one.
async fn mails_to(nodes: &[&Node], to: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mails: Vec<String> = nodes
            .iter()
            .flat_map(|n| clientflow::mail::transport::read_maildrop(n.data.path()))
            .map(|(_, raw)| raw)
            .filter(|raw| raw.lines().take_while(|l| !l.is_empty()).any(|l| l.starts_with("To:") && l.contains(to)))
            .collect();
        if !mails.is_empty() {
            return mails;
        }
        assert!(Instant::now() < deadline, "no mail to {to}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn link_in(raw: &str, path_prefix: &str) -> String {
    let at = raw.find(path_prefix).expect("the link");
    let start = raw[..at].rfind("https://").expect("an absolute link");
    raw[start..].chars().take_while(|c| !c.is_whitespace()).collect()
}

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// How many API requests a process answered with a key verification it kept
/// (`clientflow_api_key_checks_total{outcome="reused"}` on its `/metrics`).
async fn reused_keys(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("clientflow_api_key_checks_total{outcome=\"reused\"} "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Creates an API key on the organization's keys page (with the password: a security change)
/// and returns the secret the page shows once.
async fn key_from_page(browser: &mut Browser, slug: &str, name: &str, role: &str) -> String {
    let (_, _) = browser.page(&format!("/o/{slug}/settings/api-keys")).await;
    let csrf = browser.token();
    let res = browser
        .post_with(
            &format!("/o/{slug}/settings/api-keys"),
            &[("name", name), ("role", role), ("expires_in_days", ""), ("current_password", PASSWORD)],
            Some(&csrf),
            true,
        )
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let start_at = html.find("cf_live_").expect("the new key");
    html[start_at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

#[tokio::test]
async fn two_processes_serve_as_one_installation() {
    let db = TestDb::new().await;
    let shared = Shared::new().await;
    let a = start(&db, &shared, None).await;
    let b = start(&db, &shared, Some(&a)).await;
    let addr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    // One browser, one cookie jar; it talks to either process by changing the port.
    let mut browser = Browser::new(&a.cert(), addr, &a.base());

    // Sign up on A (the bot-check challenge was issued by A): the verification mail is
    // delivered once, by whichever worker took it, and its token works on B.
    let email = "nodes@example.com";
    let res = browser
        .submit("/signup", "/signup", &[("email", email), ("password", PASSWORD), ("display_name", "Two Nodes")])
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let mails = mails_to(&[&a, &b], email).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails_to(&[&a, &b], email).await.len(), 1, "the verification mail went out more than once");
    let link = link_in(&mails[0], "/verify-email?token=").replace(&a.base(), &b.base());
    let token = link.split("token=").nth(1).unwrap().to_string();
    browser.base_url = b.base();
    let res = browser.submit(&link, "/verify-email", &[("token", &token)]).await;
    assert_eq!(location(&res), "/app", "a mail token from A is good on B");

    // The session from B is good on A, and a form token A issued is good on B.
    browser.base_url = a.base();
    let (status, _) = browser.page("/orgs/new").await;
    assert_eq!(status, 200);
    let csrf = browser.token();
    browser.base_url = b.base();
    let res = browser.post_with("/orgs", &[("name", "Two Nodes")], Some(&csrf), true).await;
    assert_eq!(res.status(), 303, "a form from A submitted to B");
    let slug = location(&res).trim_start_matches("/o/").to_string();

    // An API key made on B (with the password: a security change) works on A.
    browser.base_url = b.base();
    let key = key_from_page(&mut browser, &slug, "nodes", "admin").await;
    let http = browser.client.clone();
    let (status, client) =
        api(&http, reqwest::Method::POST, &format!("{}/api/v1/clients", a.base()), &key, Some(json!({"name": "Acme"})))
            .await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["data"]["id"].as_str().unwrap().to_string();
    let (status, project) = api(
        &http,
        reqwest::Method::POST,
        &format!("{}/api/v1/projects", b.base()),
        &key,
        Some(json!({"name": "Site", "client_id": client_id})),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    let project_id = project["data"]["id"].as_str().unwrap().to_string();

    // A file uploaded through A is downloaded through B with a link A issued, then deleted
    // through B: gone for A too, and from the shared store.
    let content = b"a deliverable both processes can read".to_vec();
    let mut body = format!(
        "--cf-nodes\r\nContent-Disposition: form-data; name=\"project_id\"\r\n\r\n{project_id}\r\n\
         --cf-nodes\r\nContent-Disposition: form-data; name=\"file\"; filename=\"brief.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(b"\r\n--cf-nodes--\r\n");
    let res = http
        .post(format!("{}/api/v1/files", a.base()))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=cf-nodes")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    let file_id = file["data"]["id"].as_str().unwrap().to_string();
    let (status, linked) =
        api(&http, reqwest::Method::GET, &format!("{}/api/v1/files/{file_id}", a.base()), &key, None).await;
    assert_eq!(status, 200);
    let link = linked["data"]["download_url"].as_str().unwrap().replace(&a.base(), &b.base());
    let res = http.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 200, "A's link on B");
    assert_eq!(res.bytes().await.unwrap().to_vec(), content);
    let stored = files_under(shared.files.path());
    assert!(!stored.is_empty());
    for f in &stored {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(content.len()).any(|w| w == content.as_slice()), "stored in the clear: {f:?}");
    }
    let (status, _) =
        api(&http, reqwest::Method::DELETE, &format!("{}/api/v1/files/{file_id}", b.base()), &key, None).await;
    assert_eq!(status, 204);
    let (status, _) =
        api(&http, reqwest::Method::GET, &format!("{}/api/v1/files/{file_id}", a.base()), &key, None).await;
    assert_eq!(status, 404);
    let left = files_under(shared.files.path());
    assert!(left.is_empty(), "the deleted file's content is still stored: {left:?}");

    // A key A has verified and keeps (`access::api_key::KeyCache`) stops working on A at once
    // when B revokes it.
    browser.base_url = b.base();
    let kept = key_from_page(&mut browser, &slug, "kept on A", "member").await;
    let reused_before = reused_keys(&http, &a.base()).await;
    for _ in 0..3 {
        let (status, _) = api(&http, reqwest::Method::GET, &format!("{}/api/v1/clients", a.base()), &kept, None).await;
        assert_eq!(status, 200);
    }
    assert!(reused_keys(&http, &a.base()).await > reused_before, "A reused its verification of the key");
    let kept_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'kept on A'")
        .fetch_one(&mut db.admin_conn().await)
        .await
        .unwrap();
    let (_, _) = browser.page(&format!("/o/{slug}/settings/api-keys")).await;
    let csrf = browser.token();
    let res = browser.post_with(&format!("/o/{slug}/settings/api-keys/{kept_id}/revoke"), &[], Some(&csrf), true).await;
    assert_eq!(res.status(), 303, "revoked on B");
    let (status, _) = api(&http, reqwest::Method::GET, &format!("{}/api/v1/clients", a.base()), &kept, None).await;
    assert_eq!(status, 401, "a key revoked on B is refused by A on its next request");

    // B stops (SIGTERM) while writers use both; a request B didn't answer is retried on A with
    // the same Idempotency-Key. Every acknowledged write exists exactly once.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, key) = (http.clone(), key.clone());
            let bases = [a.base(), b.base()];
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..25 {
                    let name = format!("w{w}-{i}");
                    let idem = uuid::Uuid::new_v4().to_string();
                    let mut base = &bases[(w + i) % 2];
                    loop {
                        let sent = http
                            .post(format!("{base}/api/v1/clients"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", &idem)
                            .json(&json!({"name": name}))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        match sent {
                            Ok(res) if res.status() == 201 => {
                                acknowledged.push(name.clone());
                                break;
                            }
                            Ok(res) if res.status() == 429 => tokio::time::sleep(Duration::from_millis(200)).await,
                            // Refused or cut off by the stopping process: the other one.
                            _ => base = &bases[0],
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix_kill_term(b.child.id());
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 100);
    let mut conn = db.admin_conn().await;
    for name in &acknowledged {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clients WHERE name = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "{name}");
    }
    drop(b);

    // The audit chain written by both processes verifies.
    let passwords = clientflow_test_support::role_passwords().await;
    let out = bin()
        .args(["audit", "verify"])
        .env("CLIENTFLOW_DATA_DIR", a.data.path())
        .env("DATABASE_URL", crate::support::url_of(&db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", crate::support::url_of(&db.auditor, Some(&passwords.auditor)))
        .env("CLIENTFLOW_SECRETS__MASTER_KEY", &shared.master_key)
        .env("CLIENTFLOW_AUDIT__SIGNING_KEY", &shared.signing_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_none_or(|n| n != ".clientflow-store-id") {
                out.push(p);
            }
        }
    }
    out
}

/// A process set up unlike the running installation refuses to start, naming what to share,
/// and `doctor` says the same; a process with its own role password file can't reset the
/// passwords the running processes use.
#[tokio::test]
async fn a_process_set_up_unlike_the_installation_refuses_to_start() {
    let db = TestDb::new().await;
    let shared = Shared::new().await;
    let a = start(&db, &shared, None).await;

    for (setup, names) in
        [(Setup::OwnKeys, vec!["secrets.master_key", "audit.signing_key"]), (Setup::OwnFiles, vec!["files.dir"])]
    {
        let data = tempfile::tempdir().unwrap();
        let out = command(&db, &shared, setup, data.path(), free_port()).await.arg("serve").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "started: {err}");
        for name in &names {
            assert!(err.contains(name), "the refusal names {name}:\n{err}");
        }
        if setup == Setup::OwnFiles {
            assert!(!err.contains("secrets.master_key"), "{err}");
        }
        let out = command(&db, &shared, setup, data.path(), free_port()).await.arg("doctor").output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            report.lines().any(|l| l.starts_with("FAIL") && l.contains("installation") && l.contains(names[0])),
            "{report}"
        );
    }
    // The installation still runs, and doctor is content with a process set up alike.
    let client = clientflow_test_support::client_for(&a.cert(), format!("127.0.0.1:{}", a.port).parse().unwrap())
        .build()
        .unwrap();
    assert_eq!(client.get(format!("{}/readyz", a.base())).send().await.unwrap().status(), 200);
    let out = command(&db, &shared, Setup::Alike, a.data.path(), free_port()).await.arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.lines().any(|l| l.starts_with("ok") && l.contains("installation")), "{report}");

    // A process provisioning with a superuser URL and a password file of its own: refused,
    // and the roles keep the passwords the running processes use.
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("migrate")
        .env("CLIENTFLOW_DATA_DIR", data.path())
        .env("DATABASE_URL", crate::support::url_of(&db.admin, None))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("postgres-roles.json") && err.contains("reset-role-passwords"), "{err}");
    let passwords = clientflow_test_support::role_passwords().await;
    let app = db.app.clone().password(&passwords.app);
    let mut conn = sqlx::ConnectOptions::connect(&app).await.expect("the app role's password is unchanged");
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    assert_eq!(client.get(format!("{}/readyz", a.base())).send().await.unwrap().status(), 200);
}

/// One rate-limit budget for the installation, not one per process: the sign-in forms' 30
/// requests per address per 5 minutes, spent alternately on A and B, and the 31st refused
/// whichever process gets it.
#[tokio::test]
async fn the_authentication_budget_is_the_installations_not_each_processes() {
    let db = TestDb::new().await;
    let shared = Shared::new().await;
    let a = start(&db, &shared, None).await;
    let b = start(&db, &shared, Some(&a)).await;
    let addr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    let mut browser = Browser::new(&a.cert(), addr, &a.base());
    let mut statuses = Vec::new();
    for i in 0..31 {
        browser.base_url = if i % 2 == 0 { a.base() } else { b.base() };
        let email = format!("nobody{i}@example.com");
        let res = browser.submit("/forgot-password", "/forgot-password", &[("email", &email)]).await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 30, "{statuses:?}");
    assert_eq!(statuses[30], 429, "{statuses:?}");
    // And the other process refuses too.
    browser.base_url = a.base();
    let res = browser.submit("/forgot-password", "/forgot-password", &[("email", "late@example.com")]).await;
    assert_eq!(res.status(), 429);
}
