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
//! Then what sealing costs, against plaintext references in the same run: the archive the
//! worker keeps for download, sealed at rest (`platform::sealed_stream`) and opened again for
//! the download, against writing and reading the same bytes plain; one file upload sealed and
//! stored against storing its plaintext; one sealed field sealed and opened.
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
    sealing(&app, org, &out, rows, seconds).await;
}

/// The cost of sealing: the archive at rest, one file upload, one field.
async fn sealing(app: &TestApp, org: uuid::Uuid, archive: &std::path::Path, rows: u64, export_seconds: f64) {
    use std::io::{Read, Write};

    use clientflow::platform::keys::{At, Scope};
    use clientflow::platform::sealed_stream::{OpeningReader, SealingWriter};
    use clientflow::platform::storage::Sealed;

    let keys = &app.state.keys;
    let scope = Scope::Org(org);
    let export = uuid::Uuid::now_v7();
    let context = clientflow::privacy::export::archive_context(export);
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::metadata(archive).unwrap().len() as f64;
    let mb = bytes / 1e6;

    // The archive: written plain vs through the sealing stream, read plain vs opened.
    let plain_path = dir.path().join("plain.zip");
    let sealed_path = dir.path().join("sealed.zip.sealed");
    let started = Instant::now();
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&plain_path).unwrap());
        std::io::copy(&mut std::fs::File::open(archive).unwrap(), &mut out).unwrap();
        out.into_inner().unwrap().sync_all().unwrap();
    }
    let write_plain = started.elapsed().as_secs_f64();
    let started = Instant::now();
    {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&sealed_path).unwrap());
        let mut sealing = SealingWriter::new(keys, scope, &context, out).unwrap();
        std::io::copy(&mut std::fs::File::open(archive).unwrap(), &mut sealing).unwrap();
        sealing.flush().unwrap();
        sealing.finish().unwrap().into_inner().unwrap().sync_all().unwrap();
    }
    let write_sealed = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let n = std::io::copy(&mut std::fs::File::open(&plain_path).unwrap(), &mut std::io::sink()).unwrap();
    let read_plain = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut opening = OpeningReader::new(keys, scope, &context, std::fs::File::open(&sealed_path).unwrap()).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut m = 0u64;
    loop {
        let k = opening.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        m += k as u64;
    }
    let read_sealed = started.elapsed().as_secs_f64();
    assert_eq!(n, m);
    let sealed_size = std::fs::metadata(&sealed_path).unwrap().len() as f64;
    println!(
        "archive at rest ({mb:.1} MB): write plain {:.0} MB/s, sealed {:.0} MB/s (+{:.3} s, {:.1}% of the export's \
         {export_seconds:.2} s, {:.2} µs per row); size +{:.2}%",
        mb / write_plain,
        mb / write_sealed,
        write_sealed - write_plain,
        (write_sealed - write_plain) * 100.0 / export_seconds,
        (write_sealed - write_plain) * 1e6 / rows as f64,
        (sealed_size - bytes) * 100.0 / bytes
    );
    println!(
        "archive download: read plain {:.0} MB/s, opened {:.0} MB/s (+{:.3} s per download; opened twice: checked, then sent)",
        mb / read_plain,
        mb / read_sealed,
        read_sealed - read_plain
    );

    // One file upload: sealed with the organization's data key and stored vs the plaintext stored.
    let iterations = common::env_num("BENCH_ITERATIONS", 50);
    let plain_dir = dir.path().join("plain-files");
    std::fs::create_dir_all(&plain_dir).unwrap();
    for size in [64 * 1024usize, 1024 * 1024] {
        let contents: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let started = Instant::now();
        for i in 0..iterations {
            tokio::fs::write(plain_dir.join(format!("{size}-{i}")), &contents).await.unwrap();
        }
        let plain = started.elapsed().as_secs_f64() / iterations as f64;
        let started = Instant::now();
        for i in 0..iterations {
            let id = format!("bench-{size}-{i}");
            let sealed = Sealed::seal_with(keys, scope, At::new("files", "contents", &id), &contents).unwrap();
            app.state.storage.put(&format!("{org}/{id}"), sealed).await.unwrap();
        }
        let sealed = started.elapsed().as_secs_f64() / iterations as f64;
        println!(
            "file upload of {:>4} KiB: plaintext stored {:.1} µs, sealed and stored {:.1} µs (+{:.1} µs per upload)",
            size / 1024,
            plain * 1e6,
            sealed * 1e6,
            (sealed - plain) * 1e6
        );
    }

    // One sealed field (a contact's email address), as the export opens them.
    let n = iterations * 200;
    let at = At::new("client_contacts", "email", "0190b2c4-0000-7000-8000-000000000000");
    let email = b"ada.lovelace@example.test";
    let started = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..n {
        sealed = keys.seal(scope, at, email).unwrap();
    }
    let seal = started.elapsed().as_secs_f64() / n as f64;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(keys.open(scope, at, &sealed, None).unwrap());
    }
    let open = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "one sealed field ({} bytes): seal {:.2} µs, open {:.2} µs (against 0 for a plaintext column)",
        email.len(),
        seal * 1e6,
        open * 1e6
    );
}
