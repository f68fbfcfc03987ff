//! Test harness: a fresh database per test, cloned from a migrated template, and the real
//! server (TLS included) on port 0.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (a superuser URL) when set, and otherwise from a
//! private cluster under `target/clientflow-test`, started with the same code `serve` uses.
//! The owner and app roles are provisioned exactly as in production, and the app under test
//! connects as the unprivileged app role, so row-level security is really in force.

pub mod browser;
pub mod mime;
pub mod oidc;
pub mod proxy;
pub mod redis;
pub mod resend;
pub mod smtp;
pub mod stripe;
pub mod turnstile;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clientflow::config::Config;
use clientflow::platform::clock::{ManualClock, SharedClock, SystemClock};
use clientflow::platform::db::cluster::PrivateCluster;
use clientflow::platform::db::provision::{self, RolePasswords};
use clientflow::platform::db::{APP_ROLE, AUDITOR_ROLE, Db, MIGRATOR, OWNER_ROLE};
use clientflow::platform::http::{server, tls};
use clientflow::state::AppState;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{OnceCell, oneshot};

struct Shared {
    admin: PgConnectOptions,
    passwords: RolePasswords,
    template: String,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where the harness keeps its private cluster and secrets.
pub fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("clientflow-test")
}

async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(|| async { init_shared().await.unwrap_or_else(|e| panic!("test database setup failed: {e:#}")) })
        .await
}

async fn init_shared() -> anyhow::Result<Shared> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let admin = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => provision::parse_url(&url, "TEST_DATABASE_URL")?,
        _ => {
            let cluster = PrivateCluster::new(&dir, None, false)?;
            let c = cluster.clone();
            // Shared by every test process and left running for the next run.
            tokio::task::spawn_blocking(move || c.ensure_running()).await??.keep_running();
            cluster.admin_options()
        }
    };
    // One password file per database server, shared by every checkout on this machine, so
    // test runs of two checkouts against the same server don't take the roles from each other.
    let secrets = std::env::temp_dir().join("clientflow-test-roles").join(format!(
        "{}-{}",
        admin.get_host().replace(['/', '.'], "_"),
        admin.get_port()
    ));
    std::fs::create_dir_all(&secrets)?;
    let passwords = RolePasswords::load_or_create(&secrets)?;
    let mut conn = provision::connect(&admin, "test admin").await?;
    if let Err(e @ provision::SetupError::RolePasswords { .. }) = provision::ensure_roles(&mut conn, &passwords).await {
        // Roles left by an older test run with other passwords: tests may take them over,
        // as an operator would with `clientflow db reset-role-passwords`.
        eprintln!("test setup: {e}; resetting them for the tests");
        provision::reset_role_passwords(&mut conn, &passwords).await?;
    }

    // The template is named after the migrations it holds, so a changed migration gets a
    // fresh template and concurrent test processes agree on the name.
    let mut digest = Vec::new();
    for m in MIGRATOR.iter() {
        digest.extend_from_slice(&m.version.to_be_bytes());
        digest.extend_from_slice(&m.checksum);
    }
    let template = format!("cf_tpl_{}", &clientflow::platform::crypto::sha256_hex(&digest)[..16]);

    ensure_template(&mut conn, &admin, &passwords, &template).await?;
    drop_stale(&mut conn, &template).await;
    conn.close().await.ok();
    Ok(Shared { admin, passwords, template })
}

/// Builds the template unless it exists, serialized across processes.
async fn ensure_template(
    conn: &mut PgConnection,
    admin: &PgConnectOptions,
    passwords: &RolePasswords,
    template: &str,
) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock(hashtext('clientflow:test-template'))").execute(&mut *conn).await?;
    let result = build_template(conn, admin, passwords, template).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('clientflow:test-template'))").execute(&mut *conn).await?;
    result
}

async fn build_template(
    conn: &mut PgConnection,
    admin: &PgConnectOptions,
    passwords: &RolePasswords,
    template: &str,
) -> anyhow::Result<()> {
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(template)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_some() {
        return Ok(());
    }
    let building = format!("{template}_build");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).execute(&mut *conn).await?;
    sqlx::query(&format!("CREATE DATABASE {building} OWNER {OWNER_ROLE}")).execute(&mut *conn).await?;
    provision::prepare_database(admin, &building).await?;
    let owner = provision::role_options(admin, OWNER_ROLE, &passwords.owner, &building);
    provision::run_migrations(&owner).await?;
    sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {template}")).execute(&mut *conn).await?;
    sqlx::query(&format!("ALTER DATABASE {template} IS_TEMPLATE true")).execute(&mut *conn).await?;
    Ok(())
}

/// Drops test databases left behind by crashed runs (older than an hour) and templates of other
/// migration sets untouched for a day. Another checkout (a branch with other migrations) may be
/// running its tests against the same server right now: a template younger than that is
/// probably in use, and dropping it would fail that run.
async fn drop_stale(conn: &mut PgConnection, current_template: &str) {
    let now = unix_now();
    // A database's age: when its PG_VERSION file was written (readable by a superuser only,
    // which the harness is).
    let names: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT datname::text, \
           extract(epoch FROM (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification)::bigint \
         FROM pg_database WHERE datname LIKE 'cf\\_test\\_%' OR datname LIKE 'cf\\_tpl\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for (name, created) in names {
        let stale = if let Some(rest) = name.strip_prefix("cf_test_") {
            rest.split('_').next().and_then(|t| t.parse::<u64>().ok()).is_some_and(|t| t + 3600 < now)
        } else {
            let old = created.is_some_and(|t| u64::try_from(t).unwrap_or(0) + 24 * 3600 < now);
            name != current_template && !name.ends_with("_build") && old
        };
        if stale {
            if name.starts_with("cf_tpl_") {
                let _ = sqlx::query(&format!("ALTER DATABASE {name} IS_TEMPLATE false")).execute(&mut *conn).await;
            }
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut *conn).await;
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh, migrated database of its own, dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
    /// Superuser on this database: for tampering the way an attacker with the server could.
    pub admin: PgConnectOptions,
    /// The owner role (what migrations run as).
    pub owner: PgConnectOptions,
    /// The unprivileged app role (what the server runs as).
    pub app: PgConnectOptions,
    /// The read-only auditor role (operator commands across organizations).
    pub auditor: PgConnectOptions,
    server_admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> TestDb {
        // As every server and command does: the named constraints mean their fields, also for
        // tests that call the services without a server.
        clientflow::errors::register();
        let shared = shared().await;
        let name = format!("cf_test_{}_{}_{}", unix_now(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut conn = provision::connect(&shared.admin, "test admin").await.expect("admin connection");
        let mut attempt = 0;
        loop {
            let created =
                sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {} OWNER {OWNER_ROLE}", shared.template))
                    .execute(&mut conn)
                    .await;
            match created {
                Ok(_) => break,
                // Dropped by a test run of an older checkout that took it for stale: build it
                // again and carry on.
                Err(e) if attempt < 50 && e.to_string().contains("does not exist") => {
                    attempt += 1;
                    ensure_template(&mut conn, &shared.admin, &shared.passwords, &shared.template)
                        .await
                        .unwrap_or_else(|e| panic!("cannot rebuild the test template: {e:#}"));
                }
                // "source database is being accessed by other users": another process is
                // still finishing the template; wait and retry.
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "retrying CREATE DATABASE");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        conn.close().await.ok();
        // A database's own grants are not copied from its template: given as production's are.
        provision::prepare_database(&shared.admin, &name).await.expect("test database grants");
        TestDb {
            admin: shared.admin.clone().database(&name),
            owner: provision::role_options(&shared.admin, OWNER_ROLE, &shared.passwords.owner, &name),
            app: provision::role_options(&shared.admin, APP_ROLE, &shared.passwords.app, &name),
            auditor: provision::role_options(&shared.admin, AUDITOR_ROLE, &shared.passwords.auditor, &name),
            server_admin: shared.admin.clone(),
            name,
        }
    }

    pub async fn admin_conn(&self) -> PgConnection {
        self.admin.clone().disable_statement_logging().connect().await.expect("superuser connection")
    }

    pub async fn owner_conn(&self) -> PgConnection {
        self.owner.clone().connect().await.expect("owner connection")
    }

    pub async fn app_conn(&self) -> PgConnection {
        self.app.clone().connect().await.expect("app connection")
    }

    /// A `Db` (the app's own handle) on this database as the app role.
    pub async fn app_db(&self, max_connections: u32) -> Db {
        Db::connect(self.app.clone(), max_connections, Duration::from_secs(5)).await.expect("app pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("CLIENTFLOW_KEEP_TEST_DB").is_some() {
            return;
        }
        let admin = self.server_admin.clone();
        let name = self.name.clone();
        // Drop runs outside any async context we can rely on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = admin.disable_statement_logging().connect().await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

type ConfigTweak = Box<dyn FnOnce(&mut Config)>;

/// How to start a test app.
pub struct TestAppBuilder {
    tweak: Option<ConfigTweak>,
    clock: Option<SharedClock>,
    manual: Option<ManualClock>,
    routes: Option<Box<dyn FnOnce() -> Vec<clientflow::access::route::RouteDef>>>,
    pool_size: u32,
    /// Further regions, each with a fresh database of its own.
    regions: Vec<String>,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self { tweak: None, clock: None, manual: None, routes: None, pool_size: 5, regions: Vec::new() }
    }
}

impl TestAppBuilder {
    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweak = Some(Box::new(f));
        self
    }

    /// Start the app's manual clock at a given time.
    pub fn manual_clock(mut self, clock: ManualClock) -> Self {
        self.manual = Some(clock);
        self
    }

    /// Use the real system clock instead of the (default) manual one.
    pub fn system_clock(mut self) -> Self {
        self.clock = Some(Arc::new(SystemClock));
        self
    }

    /// Serve an explicit route table instead of the application's (for middleware tests).
    pub fn routes(mut self, f: impl FnOnce() -> Vec<clientflow::access::route::RouteDef> + 'static) -> Self {
        self.routes = Some(Box::new(f));
        self
    }

    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }

    /// A further region (`[residency.regions.<name>]`) with a fresh database of its own (from
    /// the same template) and a files directory of its own; the default region is `us`.
    pub fn region(mut self, name: &str) -> Self {
        self.regions.push(name.to_string());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = TestDb::new().await;
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: data_dir.path().to_path_buf(), ..Config::default() };
        config.server.listen = "127.0.0.1:0".parse().expect("literal");
        config.server.shutdown_grace_secs = 5;
        relax_abuse_controls(&mut config);
        let mut region_dbs = Vec::new();
        for name in &self.regions {
            let region_db = TestDb::new().await;
            config.residency.regions.insert(
                name.clone(),
                clientflow::config::RegionConfig {
                    label: format!("Region {}", name.to_uppercase()),
                    files_dir: Some(data_dir.path().join(format!("files-{name}"))),
                    database_name: Some(region_db.name.clone()),
                    ..Default::default()
                },
            );
            region_dbs.push((clientflow::platform::db::RegionId::parse(name).expect("a region name"), region_db));
        }
        if let Some(f) = self.tweak {
            f(&mut config);
        }
        let tls = tls::load(&config).expect("tls");
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        if config.public_url.is_none() {
            config.public_url = Some(format!("https://localhost:{}", addr.port()));
        }
        let mut app_db = db.app_db(self.pool_size).await;
        if !region_dbs.is_empty() {
            let mut others = Vec::new();
            for (region, region_db) in &region_dbs {
                others.push((*region, region_db.app_db(self.pool_size).await.named(*region)));
            }
            app_db = app_db.with_regions(others);
        }
        let manual = self.manual.unwrap_or_else(|| ManualClock::new(time::OffsetDateTime::now_utc()));
        let clock: SharedClock = match self.clock {
            Some(c) => c,
            None => Arc::new(manual.clone()),
        };
        let state = AppState::new(config.clone(), app_db.clone(), clock).await.expect("app state");
        let router = match self.routes {
            Some(f) => clientflow::routes::router_from(state.clone(), f()),
            None => clientflow::routes::router(state.clone()),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let options = server::ServeOptions::from_config(&config).with_metrics(&state.metrics);
        let handle = tokio::spawn(server::serve(
            listener,
            tls.as_ref().map(|t| t.server.clone()),
            router,
            async move {
                let _ = stop_rx.await;
            },
            options,
        ));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://localhost:{}", addr.port());
        let cert = config.data_dir.join("tls/localhost.crt");
        let client = client_for(&cert, addr).cookie_store(true).build().expect("client");
        TestApp {
            addr,
            base_url,
            client,
            clock: manual,
            db,
            region_dbs,
            app_db,
            state,
            config,
            stop: Some(stop_tx),
            server: Some(handle),
            _data_dir: data_dir,
        }
    }
}

/// Tests sign up many people from one address and solve many proofs of work: every rate limit
/// is raised out of reach and the proof of work is made as cheap as configuration allows, so
/// only the tests about abuse controls (which set their own numbers) ever meet them.
fn relax_abuse_controls(config: &mut Config) {
    for id in clientflow::abuse::limits::PolicyId::ALL {
        *config.rate_limits.get_mut(id) = clientflow::abuse::limits::LimitConfig::new(1_000_000, 60);
    }
    config.bot_check.pow_difficulty = 8;
}

/// A reqwest builder that trusts the app's self-signed certificate, pins `localhost` to the
/// app's address and never follows redirects.
pub fn client_for(cert: &std::path::Path, addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30));
    if let Ok(pem) = std::fs::read(cert) {
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("certificate"));
    }
    builder
}

/// A running app on port 0 with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub client: reqwest::Client,
    /// The app's clock (a manual one unless `system_clock()` was asked for): tests move time
    /// with it instead of sleeping.
    pub clock: ManualClock,
    /// The default region's database (`us`), which also holds the global directory.
    pub db: TestDb,
    /// The databases of further regions ([`TestAppBuilder::region`]).
    pub region_dbs: Vec<(clientflow::platform::db::RegionId, TestDb)>,
    /// Every region's pools (the default region's handle).
    pub app_db: Db,
    pub state: AppState,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub async fn spawn() -> TestApp {
        TestAppBuilder::default().spawn().await
    }

    /// The database of region `name` (`us`: the default one).
    pub fn region_db(&self, name: &str) -> &TestDb {
        if name == "us" {
            return &self.db;
        }
        &self.region_dbs.iter().find(|(r, _)| r.as_str() == name).expect("a configured region").1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    /// Begins graceful shutdown and waits for the server loop to finish.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.config.data_dir.join("tls/localhost.crt")
    }

    /// A fresh browser (own cookie jar).
    pub fn browser(&self) -> browser::Browser {
        browser::Browser::new(&self.cert_path(), self.addr, &self.base_url)
    }

    /// Runs the outbox worker once (at the app's clock) into the mail drop: decides the waiting
    /// account requests (`identity::requests`), then delivers what is due.
    pub async fn deliver_mail(&self) -> usize {
        self.process_requests().await;
        clientflow::mail::outbox::deliver_due(&self.app_db, &self.mail_delivery(), self.state.clock.now(), 1000)
            .await
            .expect("deliver mail")
    }

    /// What the app's worker delivers mail with (its configured transport).
    pub fn mail_delivery(&self) -> clientflow::mail::outbox::Delivery {
        let transport = clientflow::mail::transport::Transport::from_config(&self.config.mail, &self.config.data_dir)
            .expect("mail transport");
        clientflow::mail::outbox::Delivery::new(transport, self.state.unsubscribe.clone(), &self.config.mail)
    }

    /// What the app's worker decides account requests with.
    pub fn request_settings(&self) -> clientflow::identity::requests::Settings {
        clientflow::identity::requests::Settings {
            public_url: self.config.public_url(),
            audit_signer: Some(self.state.audit_signer.clone()),
        }
    }

    /// Decides the waiting sign-up, reset and failed sign-in requests as the worker would (accounts are
    /// created, links queued), without delivering mail.
    pub async fn process_requests(&self) -> usize {
        clientflow::identity::requests::process_due(
            &self.app_db,
            &self.request_settings(),
            self.state.clock.now(),
            1000,
        )
        .await
        .expect("account requests")
    }

    /// Delivers queued mail and returns the raw messages sent to `to`, oldest first.
    pub async fn mail_to(&self, to: &str) -> Vec<String> {
        self.deliver_mail().await;
        clientflow::mail::transport::read_maildrop(&self.config.data_dir)
            .into_iter()
            .map(|(_, raw)| raw)
            .filter(|raw| raw.lines().take_while(|l| !l.is_empty()).any(|l| l.starts_with("To:") && l.contains(to)))
            .collect()
    }

    /// The first link to `{base_url}{path_prefix}` in the newest message to `to`.
    pub async fn link_in_mail(&self, to: &str, path_prefix: &str) -> String {
        let mails = self.mail_to(to).await;
        let needle = format!("{}{}", self.base_url, path_prefix);
        for raw in mails.iter().rev() {
            if let Some(at) = raw.find(&needle) {
                let link: String = raw[at..].chars().take_while(|c| !c.is_whitespace()).collect();
                return link;
            }
        }
        panic!("no link to {needle} in mail to {to}:\n{}", mails.join("\n----\n"));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// The provisioned roles' passwords (for handing connection URLs to the binary).
pub async fn role_passwords() -> RolePasswords {
    shared().await.passwords.clone()
}
