//! Backups of the private cluster, end to end with the real binary, pgBackRest and PostgreSQL:
//! a point-in-time restore keeps exactly what was written before the moment, the repository is
//! unreadable without its passphrase, a broken archive shows in `doctor` and the metrics within
//! one `archive_timeout`, and the restore drill passes on good backups and fails loudly on a
//! damaged one.
//!
//! Each test runs its own private cluster in a temporary data directory (as the `postgres`
//! user when the tests run as root). The tests skip themselves, saying so, where pgBackRest is
//! not installed (`scripts/test` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clientflow::config::Config;
use clientflow::platform::db::provision::{self, Resolved};
use serde_json::Value;
use sqlx::Connection;

const ARCHIVE_TIMEOUT_SECS: u64 = 2;
/// What a loaded machine (the whole suite running, two cores) may add to a bound that follows
/// from [`ARCHIVE_TIMEOUT_SECS`]: pgBackRest's start, compression and encryption of a segment.
/// The bounds stay far below the 60 s the setting has by default, so they still prove it is the
/// configured timeout that moves WAL out.
const SLACK_SECS: u64 = 20;

fn installed() -> bool {
    let found = clientflow::platform::db::backup::installed(&Default::default()).is_ok();
    if !found {
        eprintln!("SKIPPED: pgbackrest is not installed (apt install pgbackrest)");
    }
    found
}

/// A data directory with backups on, its private cluster held running by the test.
struct Site {
    dir: tempfile::TempDir,
    config: Box<Config>,
    resolved: Option<Resolved>,
    /// Settings beyond the data directory's (the S3 repository's).
    extra: Vec<(String, String)>,
}

impl Site {
    async fn new() -> Self {
        Self::with(Vec::new()).await
    }

    async fn with(extra: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load_from(None, &Self::vars_for(dir.path(), &extra)).unwrap();
        let resolved = provision::resolve(&config).await.unwrap();
        provision::migrate(&resolved).await.unwrap();
        Self { dir, config: Box::new(config), resolved: Some(resolved), extra }
    }

    fn vars_for(dir: &Path, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut vars = vec![
            ("CLIENTFLOW_DATA_DIR".into(), dir.display().to_string()),
            ("CLIENTFLOW_BACKUP__ARCHIVE_TIMEOUT_SECS".into(), ARCHIVE_TIMEOUT_SECS.to_string()),
        ];
        vars.extend_from_slice(extra);
        vars
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn resolved(&self) -> &Resolved {
        self.resolved.as_ref().unwrap()
    }

    fn repo(&self) -> PathBuf {
        self.resolved().backups.as_ref().unwrap().repo_path().unwrap().to_path_buf()
    }

    fn live(&self) -> clientflow::backup::Live {
        clientflow::backup::Live::from_resolved(self.resolved(), &self.config).unwrap()
    }

    /// The real binary on this data directory (a clean environment, like the other CLI tests).
    fn cli(&self, args: &[&str]) -> Output {
        let mut c = crate::support::process::bin();
        c.args(args);
        for (k, v) in Self::vars_for(self.data(), &self.extra) {
            c.env(k, v);
        }
        // A damaged repository fails at once rather than after pgBackRest's retries.
        c.env("PGBACKREST_JOB_RETRY", "0");
        c.output().unwrap()
    }

    fn cli_json(&self, args: &[&str]) -> (Option<i32>, Value, String) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let doc = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (out.status.code(), doc, format!("{stdout}\n{stderr}"))
    }

    async fn admin(&self) -> sqlx::PgConnection {
        provision::connect(&self.live().admin, "test").await.unwrap()
    }

    /// An account and an organization (with its audit events), through the operator commands.
    fn org(&self, slug: &str) {
        let email = format!("owner-{slug}@example.com");
        let out = self.cli(&["user", "create", "--email", &email]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = self.cli(&["org", "create", "--name", slug, "--slug", slug, "--owner", &email]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until every WAL segment written so far is archived; returns how long that took.
    async fn wait_archived(&self) -> Duration {
        let started = Instant::now();
        let mut conn = self.admin().await;
        let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        loop {
            let status = clientflow::platform::db::backup::archive_status(&mut conn).await.unwrap();
            if status.last_archived_wal.as_deref().is_some_and(|w| w >= segment.as_str()) {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{segment} not archived: {}", status.describe());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self) -> String {
        let db = clientflow::platform::db::Db::connect(self.resolved().app.clone(), 1, Duration::from_secs(5))
            .await
            .unwrap();
        let status = db.backup_status().await.unwrap();
        db.close().await;
        let metrics = clientflow::platform::telemetry::Metrics::new();
        metrics.set_backup("us", Some(&status));
        metrics.render((0, 0, 0))
    }

    async fn finish(self) {
        drop(self.stop().await);
    }

    /// Ends the test's use of the cluster (stopping it), keeping the data directory.
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.resolved.take() {
            r.finish().await;
        }
        self.dir
    }
}

async fn slugs_in(conn_options: &sqlx::postgres::PgConnectOptions) -> Vec<String> {
    let mut conn = provision::connect(conn_options, "restored").await.unwrap();
    let slugs = sqlx::query_scalar("SELECT slug FROM organizations ORDER BY slug").fetch_all(&mut conn).await.unwrap();
    conn.close().await.ok();
    slugs
}

/// pgBackRest run as the cluster's user with `passphrase` (or none) in its environment.
fn pgbackrest_with(site: &Site, passphrase: Option<&str>, args: &[&str]) -> Output {
    let repo = site.resolved().backups.as_ref().unwrap();
    let cluster = repo.cluster();
    let mut c = match cluster.run_as_user() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "pgbackrest"]);
            c
        }
        None => Command::new("pgbackrest"),
    };
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir("/");
    c.arg(format!("--config={}", repo.config_file().display())).arg("--stanza=clientflow").args(args);
    if let Some(p) = passphrase {
        c.env("PGBACKREST_REPO1_CIPHER_PASS", p);
    }
    c.output().unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Canary A, the moment T, canary B; restored to T into a new data directory: A is there, B
/// is not, the audit chains verify and the catalog checks pass. The repository can't be read
/// without its passphrase. Then the repository turns read-only: `doctor` and the metrics report
/// the failing archive within about one archive_timeout.
#[tokio::test]
async fn a_point_in_time_restore_keeps_what_was_written_before_the_moment() {
    if !installed() {
        return;
    }
    let site = Site::new().await;
    let (code, doc, all) = site.cli_json(&["backup", "run", "--type", "full"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["backup"]["type"], "full", "{all}");
    assert!(doc["backup"]["label"].as_str().is_some_and(|l| l.ends_with('F')), "{all}");

    site.org("canary-a");
    let mut admin = site.admin().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t: time::OffsetDateTime = sqlx::query_scalar("SELECT now()").fetch_one(&mut admin).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    site.org("canary-b");
    let waited = site.wait_archived().await;
    assert!(
        waited <= Duration::from_secs(ARCHIVE_TIMEOUT_SECS + SLACK_SECS),
        "a quiet system's WAL waits at most about archive_timeout: {waited:?}"
    );

    // What the repository can recover.
    let (code, doc, all) = site.cli_json(&["backup", "list"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["backups"].as_array().unwrap().len(), 1, "{all}");
    let latest = doc["latest_recovery"].as_str().unwrap();
    let latest = time::OffsetDateTime::parse(latest, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(latest > t, "the archived WAL reaches past T: {all}");
    assert!(doc["earliest_recovery"].as_str().is_some(), "{all}");

    // Restore to T into a new data directory.
    let restored = site.data().join("restored");
    let to = clientflow::backup::rfc3339(t);
    let (code, doc, all) = site.cli_json(&["backup", "restore", "--to", &to, "--into", restored.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["ok"], true, "{all}");
    assert_eq!(doc["restore"]["checks"]["catalog_problems"], serde_json::json!([]), "{all}");
    assert_eq!(doc["restore"]["checks"]["audit_breaks"], serde_json::json!([]), "{all}");
    assert!(doc["restore"]["checks"]["audit_events"].as_u64().unwrap() > 0, "{all}");
    // A restore never writes over a cluster.
    let (code, _, all) = site.cli_json(&["backup", "restore", "--to", &to, "--into", restored.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("not empty"), "{all}");

    let copy = clientflow::platform::db::cluster::PrivateCluster::new(&restored, None, true).unwrap();
    let copy_use = copy.ensure_running().unwrap();
    let db = copy.admin_options().database("clientflow");
    assert_eq!(slugs_in(&db).await, vec!["canary-a".to_string()], "A is restored, B (after T) is not");
    let mut conn = provision::connect(&db, "restored").await.unwrap();
    let problems = clientflow::platform::db::catalog::tenant_invariant_problems(&mut conn).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    conn.close().await.ok();
    // The restored data directory is a working installation: its audit log verifies with the
    // real command.
    let out = crate::support::process::bin()
        .args(["audit", "verify"])
        .env("CLIENTFLOW_DATA_DIR", &restored)
        .env("CLIENTFLOW_BACKUP__ENABLED", "false")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ok      canary-a") && text.contains("0 broken"), "{text}");
    copy_use.end().unwrap();

    // Without its passphrase, or with another, the repository can't be read.
    let right = std::fs::read_to_string(site.data().join("secrets/backup-passphrase")).unwrap();
    let out = pgbackrest_with(&site, Some(right.trim()), &["info", "--output=json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info[0]["status"]["code"], 0, "{info}");
    for passphrase in [None, Some("not-the-passphrase-at-all")] {
        let out = pgbackrest_with(&site, passphrase, &["info", "--output=json"]);
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(!out.status.success() || info[0]["status"]["code"] != 0, "{passphrase:?}: {info}");
        let elsewhere = site.data().join(format!("stolen-{}", passphrase.is_some()));
        std::fs::create_dir_all(&elsewhere).unwrap();
        if let Some(user) = site.resolved().backups.as_ref().unwrap().cluster().run_as_user() {
            let u = nix::unistd::User::from_name(user).unwrap().unwrap();
            std::os::unix::fs::chown(&elsewhere, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        }
        let pg1 = format!("--pg1-path={}", elsewhere.join("data").display());
        let out = pgbackrest_with(&site, passphrase, &["restore", &pg1]);
        assert!(!out.status.success(), "restored without the passphrase ({passphrase:?})");
        assert!(!elsewhere.join("data/PG_VERSION").exists());
    }
    // Every file in the repository is ciphertext (OpenSSL's salted format), and no organization
    // name appears in it.
    let files = files_under(&site.repo());
    assert!(files.len() > 10, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.starts_with(b"Salted__"), "{} is not encrypted", f.display());
        assert!(!bytes.windows(8).any(|w| w == b"canary-a"), "{}", f.display());
    }
    assert!(
        !std::fs::read_to_string(site.repo().parent().unwrap().join("pgbackrest/pgbackrest.conf"))
            .unwrap()
            .contains(right.trim())
    );

    // A read-only repository: archiving fails, and says so within about one archive_timeout.
    let out = site.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("WAL archiving works"), "{text}");
    let archive_dirs: Vec<PathBuf> = files_under(&site.repo().join("archive"))
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .filter(|d| d.file_name().is_some_and(|n| n.len() == 16))
        .collect();
    assert!(!archive_dirs.is_empty());
    let set_mode = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        for d in &archive_dirs {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o500);
    site.org("canary-c");
    let broke = Instant::now();
    let mut conn = site.admin().await;
    loop {
        let status = clientflow::platform::db::backup::archive_status(&mut conn).await.unwrap();
        if status.failing {
            break;
        }
        assert!(
            broke.elapsed() < Duration::from_secs(ARCHIVE_TIMEOUT_SECS + SLACK_SECS),
            "the failure did not show within one archive_timeout: {}",
            status.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = site.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.lines().any(|l| l.starts_with("FAIL") && l.contains("backups") && l.contains("failing")), "{text}");
    let metrics = site.metrics().await;
    assert!(metrics.contains("clientflow_backup_wal_archive_failing{region=\"us\"} 1"), "{metrics}");
    assert!(metrics.contains("clientflow_backup_enabled{region=\"us\"} 1"), "{metrics}");

    // Writable again: the archiver catches up and the failure clears.
    set_mode(0o750);
    sqlx::query("SELECT pg_switch_wal()").execute(&mut conn).await.unwrap();
    // PostgreSQL retries a failed segment three times, then at its next wake (up to a minute).
    let deadline = Instant::now() + Duration::from_secs(90 + 2 * SLACK_SECS);
    loop {
        let status = clientflow::platform::db::backup::archive_status(&mut conn).await.unwrap();
        if !status.failing {
            break;
        }
        assert!(Instant::now() < deadline, "archiving did not recover: {}", status.describe());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    conn.close().await.ok();

    // The passphrase reached no log: pgBackRest's, PostgreSQL's, or a command's output at debug.
    let out = {
        let mut c = crate::support::process::bin();
        c.args(["backup", "list"]).env("CLIENTFLOW_LOG__FILTER", "debug");
        for (k, v) in Site::vars_for(site.data(), &site.extra) {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let cluster_root = site.repo().parent().unwrap().to_path_buf();
    let mut logs = files_under(&cluster_root.join("pgbackrest/log"));
    logs.extend(files_under(&cluster_root.join("log")));
    assert!(logs.len() >= 3, "{logs:?}");
    let mut texts: Vec<(String, String)> =
        logs.iter().map(|f| (f.display().to_string(), std::fs::read_to_string(f).unwrap_or_default())).collect();
    texts.push((
        "backup list".into(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ));
    for (name, text) in &texts {
        assert!(!text.contains(right.trim()), "the passphrase is in {name}");
    }
    site.finish().await;
}

/// The drill restores the newest recovery point into a scratch cluster and checks it; on a
/// damaged backup it fails loudly: non-zero exit, the failure in `doctor` and the metrics.
#[tokio::test]
async fn the_restore_drill_proves_the_backups_and_fails_loudly_on_a_damaged_one() {
    if !installed() {
        return;
    }
    let site = Site::new().await;
    site.org("drilled");
    let (code, _, all) = site.cli_json(&["backup", "run"]);
    assert_eq!(code, Some(0), "{all}");
    site.org("after-the-backup");

    let (code, doc, all) = site.cli_json(&["backup", "drill"]);
    assert_eq!(code, Some(0), "{all}");
    let drill = &doc["drill"];
    assert_eq!(drill["ok"], true, "{all}");
    assert_eq!(drill["canary_found"], true, "{all}");
    assert_eq!(drill["count_mismatches"], serde_json::json!([]), "{all}");
    assert_eq!(drill["checks"]["organizations"], 2, "WAL after the backup is replayed: {all}");
    assert!(drill["checks"]["audit_events"].as_u64().unwrap() > 0, "{all}");
    let rpo = drill["rpo_seconds"].as_f64().unwrap();
    assert!(rpo <= (ARCHIVE_TIMEOUT_SECS + SLACK_SECS) as f64, "RPO {rpo}");
    assert!(drill["rto_seconds"].as_f64().unwrap() > 0.0, "{all}");
    assert!(all.contains("RPO") && all.contains("restoring from"), "progress is shown: {all}");
    // The scratch cluster is gone.
    let root = site.resolved().backups.as_ref().unwrap().cluster().root().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("drill-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let metrics = site.metrics().await;
    assert!(metrics.contains("clientflow_backup_drill_last_ok{region=\"us\"} 1"), "{metrics}");
    assert!(!metrics.contains("clientflow_backup_newest_age_seconds{region=\"us\"} NaN"), "{metrics}");

    // Damage the backup the drill restores: one encrypted file of the database's.
    let label = doc["drill"]["backup"].as_str().unwrap();
    let base = site.repo().join("backup/clientflow").join(label).join("pg_data/base");
    let mut files: Vec<PathBuf> = files_under(&base);
    files.sort_by_key(|f| std::cmp::Reverse(std::fs::metadata(f).unwrap().len()));
    let victim = &files[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].fill(0);
    std::fs::write(victim, &bytes).unwrap();

    let (code, doc, all) = site.cli_json(&["backup", "drill"]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(doc["drill"]["ok"], false, "{all}");
    assert!(doc["drill"]["failure"].as_str().is_some_and(|f| !f.is_empty()), "{all}");
    let out = site.cli(&["backup", "drill"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("restore drill FAILED"), "{text}");
    let metrics = site.metrics().await;
    assert!(metrics.contains("clientflow_backup_drill_last_ok{region=\"us\"} 0"), "{metrics}");
    let out = site.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL") && l.contains("restore drill") && l.contains("FAILED")),
        "{text}"
    );
    site.finish().await;
}

/// A copy that restores without a complaint from pgBackRest can still be wrong: the drill's own
/// checks on the restored copy catch it. An audit event rewritten behind the chain's back (as a
/// superuser, the trigger bypassed) and a tenant table stripped of row-level security are both
/// faithfully backed up; the drill restores them, finds both, and fails loudly naming them.
#[tokio::test]
async fn the_drill_checks_the_restored_copy_not_only_the_restore() {
    if !installed() {
        return;
    }
    let site = Site::new().await;
    site.org("tampered");
    {
        let mut conn = site.admin().await;
        sqlx::query("SET session_replication_role = replica").execute(&mut conn).await.unwrap();
        let changed = sqlx::query(
            "UPDATE audit_events SET after = jsonb_build_object('name', 'rewritten')
              WHERE seq = 1 AND organization_id = (SELECT id FROM organizations WHERE slug = 'tampered')",
        )
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(changed, 1);
        sqlx::query("RESET session_replication_role").execute(&mut conn).await.unwrap();
        sqlx::query("ALTER TABLE projects NO FORCE ROW LEVEL SECURITY").execute(&mut conn).await.unwrap();
    }
    let (code, _, all) = site.cli_json(&["backup", "run", "--type", "full"]);
    assert_eq!(code, Some(0), "{all}");

    let (code, doc, all) = site.cli_json(&["backup", "drill"]);
    assert_eq!(code, Some(1), "{all}");
    let drill = &doc["drill"];
    assert_eq!(drill["ok"], false, "{all}");
    assert_eq!(drill["canary_found"], true, "the restore itself worked: {all}");
    let failure = drill["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("audit chain of tampered broken"), "{failure}");
    assert!(failure.contains("catalog:") && failure.contains("projects"), "{failure}");
    let metrics = site.metrics().await;
    assert!(metrics.contains("clientflow_backup_drill_last_ok{region=\"us\"} 0"), "{metrics}");
    site.finish().await;
}

/// The repository in an S3-compatible bucket (a real local S3 server, moto, over HTTPS with a
/// self-signed certificate: pgBackRest speaks only HTTPS to S3): WAL archiving, `backup run`
/// and `backup drill` work against it, nothing is kept on the machine, and every object in the
/// bucket is encrypted (pgBackRest's `aes-256-cbc` files begin with OpenSSL's `Salted__`).
#[tokio::test]
async fn backups_to_an_s3_bucket_run_restore_and_are_encrypted() {
    use crate::support::s3::{self, S3Server};
    if !installed() {
        return;
    }
    let Some(server) = S3Server::start(true).await else { return };
    let bucket = "clientflow-backups";
    server.create_bucket(bucket).await;
    let setting = |k: &str, v: &str| (format!("CLIENTFLOW_BACKUP__S3__{k}"), v.to_string());
    let site = Site::with(vec![
        setting("BUCKET", bucket),
        setting("ENDPOINT", "127.0.0.1"),
        setting("PORT", &server.port.to_string()),
        setting("REGION", s3::REGION),
        setting("KEY", s3::ACCESS_KEY),
        setting("KEY_SECRET", s3::SECRET_KEY),
        setting("URI_STYLE", "path"),
        setting("VERIFY_TLS", "false"),
    ])
    .await;
    assert!(site.resolved().backups.as_ref().unwrap().repo_path().is_none(), "no local repository");
    let repo = site.resolved().backups.clone().unwrap();
    if let Err(e) = tokio::task::spawn_blocking(move || repo.stanza_create()).await.unwrap() {
        let root = site.resolved().backups.as_ref().unwrap().cluster().root().to_path_buf();
        for f in files_under(&root.join("pgbackrest/log")) {
            eprintln!("==== {}\n{}", f.display(), std::fs::read_to_string(&f).unwrap_or_default());
        }
        panic!("the stanza in the bucket: {e}");
    }
    site.org("in-the-bucket");

    let (code, doc, all) = site.cli_json(&["backup", "run", "--type", "full"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["backup"]["type"], "full", "{all}");
    assert!(all.contains(&format!("s3://{bucket}/clientflow")), "the progress names the bucket: {all}");
    site.org("after-the-backup");
    site.wait_archived().await;

    let (code, doc, all) = site.cli_json(&["backup", "drill"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["drill"]["ok"], true, "{all}");
    assert_eq!(doc["drill"]["canary_found"], true, "{all}");
    assert_eq!(doc["drill"]["checks"]["organizations"], 2, "WAL after the backup replayed from the bucket: {all}");

    let (code, doc, all) = site.cli_json(&["backup", "list"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(doc.to_string().contains("full"), "{all}");

    // What the bucket holds: the backup and the archived WAL, every object encrypted.
    let keys = server.keys(bucket, "clientflow").await;
    assert!(keys.iter().any(|k| k.starts_with("clientflow/backup/clientflow/") && k.contains("/pg_data/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("clientflow/archive/clientflow/") && k.contains("/0000")), "{keys:?}");
    let mut checked = 0;
    for key in &keys {
        let raw = server.raw(bucket, key).await;
        if raw.is_empty() {
            continue;
        }
        assert!(raw.starts_with(b"Salted__"), "{key} is not encrypted: {:?}", &raw[..raw.len().min(16)]);
        assert!(!raw.windows(13).any(|w| w == b"in-the-bucket"), "{key} holds plaintext");
        checked += 1;
    }
    assert!(checked > 10, "{checked} objects checked");
    let cluster_root = site.resolved().backups.as_ref().unwrap().cluster().root().to_path_buf();
    assert!(!cluster_root.join("backups").exists(), "nothing kept on the machine");
    site.finish().await;
}

/// With an external database the backup commands take nothing and say whose backups they are.
#[test]
fn with_an_external_database_the_provider_owns_backups() {
    for command in [vec!["backup", "run"], vec!["backup", "list"], vec!["backup", "drill"]] {
        let out = crate::support::process::bin()
            .args(&command)
            .env("DATABASE_URL", "postgres://app:secret@db.example.com/clientflow")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}: {text}");
        assert!(text.contains("provider") && text.contains("point-in-time recovery"), "{command:?}: {text}");
    }
    let out = crate::support::process::bin()
        .args(["--json", "backup", "list"])
        .env("DATABASE_URL", "postgres://app:secret@db.example.com/clientflow")
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["managed_by_provider"], true);
}

/// `--in-place` refuses while the cluster runs and without confirmation; stopped and confirmed,
/// it restores over the data directory's cluster, keeps the one it replaced, and archiving goes
/// on afterwards (a backup of the restored cluster succeeds).
#[tokio::test]
async fn an_in_place_restore_needs_the_server_stopped_and_a_confirmation() {
    if !installed() {
        return;
    }
    let site = Site::new().await;
    let (code, _, all) = site.cli_json(&["backup", "run"]);
    assert_eq!(code, Some(0), "{all}");
    site.org("kept-org");
    site.wait_archived().await;
    let (code, _, all) = site.cli_json(&["backup", "restore", "--to", "latest", "--in-place", "--yes"]);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("is running"), "{all}");
    let data = site.data().to_path_buf();
    let root = site.resolved().backups.as_ref().unwrap().cluster().root().to_path_buf();
    let _dir = site.stop().await;

    let cli = |args: &[&str]| {
        let mut c = crate::support::process::bin();
        c.args(args).env("CLIENTFLOW_DATA_DIR", &data).env("CLIENTFLOW_BACKUP__ARCHIVE_TIMEOUT_SECS", "2");
        let out = c.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, text) = cli(&["backup", "restore", "--to", "latest", "--in-place"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("confirm with --yes"), "{text}");
    let (code, text) = cli(&["backup", "restore", "--to", "latest", "--in-place", "--yes"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("catalog checks: pass") && text.contains("all verify"), "{text}");
    let kept: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("data.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced cluster is kept");
    let (code, text) = cli(&["org", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("kept-org"), "{text}");
    let (code, text) = cli(&["backup", "run", "--type", "incr"]);
    assert_eq!(code, Some(0), "{text}");
}

/// The stanzas (pgBackRest's names for one cluster's backups) a repository directory holds.
fn stanzas_in(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["backup", "archive"] {
        for e in std::fs::read_dir(repo.join(kind)).unwrap().flatten() {
            out.push(format!("{kind}/{}", e.file_name().to_string_lossy()));
        }
    }
    out.sort();
    out
}

/// Two regions on one machine: the further region runs a private cluster of its own, backed up
/// into a repository of its own under a passphrase of its own (physical backups are of a whole
/// cluster: a region sharing the default region's cluster would be in its backups). After
/// `backup run` (every region), the US repository holds one stanza, the US cluster's, and what
/// it restores has no EU database and no row of the EU organization in any table (only its
/// directory entry, global by design: id, slug, region); the EU repository restores the EU
/// organization.
#[tokio::test]
async fn each_region_is_backed_up_into_its_own_repository_and_the_us_one_holds_nothing_of_an_eu_org() {
    if !installed() {
        return;
    }
    let site = Site::with(vec![("CLIENTFLOW_RESIDENCY__REGIONS__EU__LABEL".into(), "European Union".into())]).await;
    let (us_repo, eu_repo) = {
        let r = site.resolved();
        assert_eq!(r.regions.len(), 1, "the EU region got a private cluster of its own");
        (r.backups.clone().unwrap(), r.regions[0].backups.clone().unwrap())
    };
    assert_ne!(us_repo.cluster().root(), eu_repo.cluster().root());
    assert_eq!((us_repo.stanza(), eu_repo.stanza()), ("clientflow", "clientflow-eu"));
    let (us_path, eu_path) = (us_repo.repo_path().unwrap().to_path_buf(), eu_repo.repo_path().unwrap().to_path_buf());
    assert_eq!(eu_path, eu_repo.cluster().root().join("backups"));
    let passphrase = |name: &str| std::fs::read_to_string(site.data().join("secrets").join(name)).unwrap();
    assert_ne!(passphrase("backup-passphrase"), passphrase("backup-passphrase-eu"), "one key per repository");

    site.org("usco");
    let out = site.cli(&[
        "org",
        "create",
        "--name",
        "euco",
        "--slug",
        "euco",
        "--owner",
        "owner-usco@example.com",
        "--region",
        "eu",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let eu_db = eu_repo.cluster().admin_options().database("clientflow_eu");
    assert_eq!(slugs_in(&eu_db).await, vec!["euco".to_string()]);
    let mut conn = provision::connect(&eu_db, "eu").await.unwrap();
    let eu_org: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'euco'").fetch_one(&mut conn).await.unwrap();
    conn.close().await.ok();

    let (code, doc, all) = site.cli_json(&["backup", "run"]);
    assert_eq!(code, Some(0), "{all}");
    let regions: Vec<&str> = doc["regions"].as_array().unwrap().iter().map(|r| r["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["us", "eu"], "{all}");
    let (code, doc, all) = site.cli_json(&["backup", "list", "--region", "eu"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!((doc["region"].as_str(), doc["backups"].as_array().map(Vec::len)), (Some("eu"), Some(1)), "{all}");
    let (code, _, all) = site.cli_json(&["backup", "list", "--region", "mars"]);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("not a configured region"), "{all}");

    // Each repository holds one cluster's backups and WAL: its own region's.
    assert_eq!(stanzas_in(&us_path), ["archive/clientflow", "backup/clientflow"]);
    assert_eq!(stanzas_in(&eu_path), ["archive/clientflow-eu", "backup/clientflow-eu"]);

    // What the US repository restores.
    let restored = site.data().join("restored-us");
    let (code, doc, all) =
        site.cli_json(&["backup", "restore", "--to", "latest", "--into", restored.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["restore"]["checks"]["organizations"], 1, "{all}");
    let copy = clientflow::platform::db::cluster::PrivateCluster::new(&restored, None, true).unwrap();
    let copy_use = copy.ensure_running().unwrap();
    let mut conn = provision::connect(&copy.admin_options(), "restored").await.unwrap();
    let databases: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(databases, ["clientflow", "postgres"], "no EU database in the US backups");
    conn.close().await.ok();
    let mut conn = provision::connect(&copy.admin_options().database("clientflow"), "restored").await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() > 20, "{tables:?}");
    for (table, key) in tables.iter().map(|t| (t.as_str(), "organization_id")).chain([("organizations", "id")]) {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {key} = $1"))
            .bind(eu_org)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} of the US backups holds rows of the EU organization");
    }
    let routed: String = sqlx::query_scalar("SELECT region FROM organization_directory WHERE org = $1")
        .bind(eu_org)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(routed, "eu", "the directory (global) routes to it");
    conn.close().await.ok();
    copy_use.end().unwrap();

    // The EU repository restores the EU organization (into regions/eu of the new directory).
    let restored = site.data().join("restored-eu");
    let (code, doc, all) =
        site.cli_json(&["backup", "restore", "--region", "eu", "--to", "latest", "--into", restored.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(doc["restore"]["checks"]["organizations"], 1, "{all}");
    assert_eq!(doc["restore"]["checks"]["audit_breaks"], serde_json::json!([]), "{all}");
    site.finish().await;
}
