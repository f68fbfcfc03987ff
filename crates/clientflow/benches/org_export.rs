//! `clientflow org export` of one organization with many tasks: rows per second and the peak
//! resident memory of the process, against PostgreSQL's own `COPY (SELECT row_to_json(t) …)
//! TO STDOUT` of the same rows (the same queries, in the same order) as the reference.
//!
//! The export runs as a child process (the real binary, on the seeded database and data
//! directory), so its peak resident set is the child's own (`VmHWM` of `/proc/<pid>/status`,
//! read while it runs): what an operator would see. The reference reads the same rows as one stream
//! per table and throws them away; the export also turns every row into a checked JSON line,
//! hashes it and deflates it into the archive on disk.
//!
//! Run: `cargo bench --bench org_export` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `BENCH_TASKS` sets the size (default 20,000; the goal is 1,000,000 tasks at 100,000 rows
//! per second or more, within 150 MB).

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

mod common;

use std::time::Instant;

use clientflow_test_support::TestApp;
use futures::TryStreamExt;

#[tokio::main]
async fn main() {
    let tasks = common::env_num("BENCH_TASKS", 20_000);
    let app = TestApp::builder().system_clock().spawn().await;
    common::seed(&app, 1, tasks).await;
    let mut admin = app.db.admin_conn().await;
    let (org, slug): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, slug FROM organizations ORDER BY created_at LIMIT 1")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let seeded: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE organization_id = $1")
        .bind(org)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    println!("organization {slug}: {seeded} tasks");

    // The export, as the operator runs it.
    let passwords = clientflow_test_support::role_passwords().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.zip");
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .args(["--json", "org", "export", "--org", &org.to_string(), "--out", out.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", common::url_of(&app.db.app, &passwords.app))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", common::url_of(&app.db.owner, &passwords.owner))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", common::url_of(&app.db.auditor, &passwords.auditor))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("clientflow org export");
    // The child's peak resident set (VmHWM, a high-water mark), read while it runs.
    let pid = child.id();
    let watcher = std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) else { break };
            let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            peak_kb = peak_kb.max(kb);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak_kb
    });
    let output = child.wait_with_output().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let peak_mb = watcher.join().unwrap() as f64 / 1024.0;
    assert!(output.status.success(), "export failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = report["rows"].as_u64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    let bytes = report["bytes"].as_u64().unwrap();
    let export_rate = rows as f64 / seconds;
    println!(
        "export: {rows} rows in {seconds:.2} s ({wall:.2} s with start-up) = {export_rate:.0} rows/s; archive {:.1} MB",
        bytes as f64 / 1e6
    );
    println!("peak resident memory of the export process (VmHWM): {peak_mb:.1} MB");

    // The reference: COPY of the same rows, one stream per table, discarded.
    let manifest = &report["manifest"];
    let tables: Vec<String> =
        manifest["counts"].as_object().unwrap().keys().filter(|t| *t != "users").cloned().collect();
    let mut copied = 0u64;
    let started = Instant::now();
    for t in &tables {
        let key = if t == "organizations" { "id" } else { "organization_id" };
        let pk = clientflow::privacy::export::primary_key(&mut admin, t).await.unwrap();
        let order: Vec<String> = pk.iter().map(|c| format!("t.{c}")).collect();
        let sql = format!(
            "COPY (SELECT row_to_json(t) FROM \"{t}\" t WHERE t.{key} = '{org}' ORDER BY {}) TO STDOUT",
            order.join(", ")
        );
        let mut stream = admin.copy_out_raw(&sql).await.unwrap();
        while let Some(chunk) = stream.try_next().await.unwrap() {
            copied += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    let copy_seconds = started.elapsed().as_secs_f64();
    let copy_rate = copied as f64 / copy_seconds;
    println!("reference COPY ... TO STDOUT: {copied} rows in {copy_seconds:.2} s = {copy_rate:.0} rows/s");
    println!("ratio export / COPY: {:.2}", export_rate / copy_rate);
    println!(
        "goals: >= 100,000 rows/s ({}), <= 150 MB peak ({})",
        if export_rate >= 100_000.0 { "met" } else { "not met" },
        if peak_mb <= 150.0 { "met" } else { "not met" }
    );
}
