//! `clientflow org export` of one organization with many tasks, and the same export written by
//! the export worker (`clientflow worker`, what the Data export page starts): rows per second
//! and the peak resident memory of the process, against PostgreSQL's own `COPY (…) TO STDOUT`
//! of the same rows (the same queries, in the same order) as the reference.
//!
//! What is measured, and what is not:
//!
//! * **Seeding** is `clientflow seed` in a process of its own (set-based: the rows are
//!   generated inside PostgreSQL); its duration and that process's peak memory are printed on
//!   their own line, and count in neither export figure. Then `VACUUM (ANALYZE)`: freshly
//!   written rows carry no hint bits or visibility map yet, and whichever read came first
//!   would pay for setting them (writing every page again); after the vacuum the reference
//!   and both exports read the same settled tables, as an organization's data is in practice.
//! * **The reference** reads each part's rows with the export's own query (`export::part_queries`:
//!   `row_to_json` over the stored columns, primary-key order) through `COPY (…) TO STDOUT
//!   (FORMAT binary)`, as a superuser (no row-level security), and throws the bytes away: what
//!   PostgreSQL alone costs. It runs before and after the exports; the faster run is the one
//!   compared against.
//! * **`clientflow org export`** runs as a child process (the real binary): the rows it
//!   reports over the seconds it reports (from the start of the export to the archive on disk,
//!   the process's start-up excluded and printed apart), and its own peak resident set
//!   (`VmHWM` of `/proc/<pid>/status`, the kernel's high-water mark, sampled every 10 ms while
//!   it runs). It writes the plain ZIP the operator asked for.
//! * **The worker** is `clientflow worker` as a child process, idle until the benchmark queues
//!   an export (a row in `org_exports`, as the page does); it writes the archive sealed at rest,
//!   as in production. Rows per second are the export's rows over its own `started_at` to
//!   `finished_at`; the peak is the worker process's `VmHWM`, counted from its start (its
//!   memory before the export is printed too: the mail, signing and maintenance loops it also
//!   runs). The organization's daily digest is recorded as sent for today first: on a seeded
//!   organization it lists hundreds of thousands of overdue tasks, a load of the worker's that
//!   is not the export's.
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

use std::time::{Duration, Instant};

use clientflow_test_support::TestApp;
use futures::TryStreamExt;

#[tokio::main]
async fn main() {
    let tasks = common::env_num("BENCH_TASKS", 20_000);
    let app = TestApp::builder().system_clock().spawn().await;
    common::seed(&app, 1, tasks).await;
    let mut admin = app.db.admin_conn().await;
    let started = Instant::now();
    sqlx::query("VACUUM (ANALYZE)").execute(&mut admin).await.unwrap();
    println!("VACUUM (ANALYZE) after seeding: {:.1} s", started.elapsed().as_secs_f64());
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

    let copy_before = reference(&mut admin, org).await;

    // The export, as the operator runs it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.zip");
    let started = Instant::now();
    let child = common::clientflow(&app)
        .await
        .args(["--json", "org", "export", "--org", &org.to_string(), "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("clientflow org export");
    let peak = common::watch_peak(child.id());
    let output = child.wait_with_output().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let peak_mb = peak.join().unwrap() as f64 / 1024.0;
    assert!(output.status.success(), "export failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = report["rows"].as_u64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    let bytes = report["bytes"].as_u64().unwrap();
    let export_rate = rows as f64 / seconds;
    println!(
        "clientflow org export: {rows} rows in {seconds:.2} s ({wall:.2} s with start-up) = {export_rate:.0} rows/s; \
         archive {:.1} MB",
        bytes as f64 / 1e6
    );
    println!("  peak resident memory of the export process (VmHWM): {peak_mb:.1} MB");

    let worker = worker_export(&app, org).await;
    println!(
        "export worker (sealed at rest): {} rows in {:.2} s = {:.0} rows/s; archive {:.1} MB",
        worker.rows,
        worker.seconds,
        worker.rate(),
        worker.bytes as f64 / 1e6
    );
    println!(
        "  peak resident memory of the worker process (VmHWM): {:.1} MB ({:.1} MB before the export)",
        worker.peak_mb, worker.idle_mb
    );

    let copy_after = reference(&mut admin, org).await;
    let copy_rate = copy_before.max(copy_after);
    println!("ratio export / COPY: org export {:.2}, worker {:.2}", export_rate / copy_rate, worker.rate() / copy_rate);
    let verdict = |met: bool| if met { "met" } else { "not met" };
    println!(
        "goals: >= 100,000 rows/s (org export {}, worker {}), <= 150 MB peak (org export {}, worker {})",
        verdict(export_rate >= 100_000.0),
        verdict(worker.rate() >= 100_000.0),
        verdict(peak_mb <= 150.0),
        verdict(worker.peak_mb <= 150.0)
    );
    sealing(&app, org, &out, rows, seconds).await;
}

/// The reference: every part's rows read with the export's own queries through `COPY …
/// TO STDOUT`, one stream per part, discarded. Returns rows per second.
async fn reference(admin: &mut sqlx::PgConnection, org: uuid::Uuid) -> f64 {
    use clientflow::privacy::export;
    let org_id = clientflow::platform::ids::OrgId::from_uuid(org);
    let tables = export::exported_tables(admin).await.unwrap();
    let queries = export::part_queries(admin, org_id, &tables).await.unwrap();
    let mut copied = 0u64;
    let started = Instant::now();
    for q in &queries {
        let mut stream = admin.copy_out_raw(&format!("COPY ({}) TO STDOUT (FORMAT binary)", q.sql)).await.unwrap();
        let mut tail = Vec::new();
        while let Some(chunk) = stream.try_next().await.unwrap() {
            // Counted from the framing (2-byte field count, 4-byte length, the bytes).
            tail.extend_from_slice(&chunk);
            copied += count_rows(&mut tail);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = copied as f64 / seconds;
    println!(
        "reference COPY (same queries) TO STDOUT: {copied} rows of {} parts in {seconds:.2} s = {rate:.0} rows/s",
        queries.len()
    );
    rate
}

/// Counts and drops the complete rows at the front of a binary `COPY` stream (the 19-byte
/// header on first sight); leaves an incomplete row in `buf`.
fn count_rows(buf: &mut Vec<u8>) -> u64 {
    let mut at = if buf.starts_with(b"PGCOPY\n\xff\r\n\0") && buf.len() >= 19 { 19 } else { 0 };
    let mut rows = 0;
    while buf.len() >= at + 2 {
        let fields = i16::from_be_bytes([buf[at], buf[at + 1]]);
        if fields == -1 {
            at += 2;
            continue;
        }
        let Some(len) = buf.get(at + 2..at + 6) else { break };
        let len = i32::from_be_bytes(len.try_into().unwrap()) as usize;
        if buf.len() < at + 6 + len {
            break;
        }
        at += 6 + len;
        rows += 1;
    }
    buf.drain(..at);
    rows
}

struct WorkerRun {
    rows: u64,
    seconds: f64,
    bytes: u64,
    peak_mb: f64,
    idle_mb: f64,
}

impl WorkerRun {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
}

/// Starts `clientflow worker`, queues an export of `org` once it is idle, and waits for it.
async fn worker_export(app: &TestApp, org: uuid::Uuid) -> WorkerRun {
    // The worker also sends each organization's daily digest of overdue tasks, which for a
    // seeded organization (hundreds of thousands of overdue tasks) is a load of its own, not
    // the export's: today's digest is recorded as sent, so what is measured is the export.
    let mut admin = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO notification_digest_days (organization_id, day, done_at) \
         SELECT id, (now() AT TIME ZONE timezone)::date, now() FROM organizations WHERE id = $1 ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .execute(&mut admin)
    .await
    .unwrap();
    let mut child = common::clientflow(app)
        .await
        .arg("worker")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("clientflow worker");
    let pid = child.id();
    // Started and past its first sweeps: its memory now is what it holds idle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the worker is running");
    let idle_mb = common::status_kb(&status, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let peak = common::watch_peak(pid);
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO org_exports (organization_id, id, requested_at) VALUES ($1, $2, now())")
        .bind(org)
        .bind(id)
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let (rows, seconds, bytes) = loop {
        assert!(Instant::now() < deadline, "the worker did not finish the export within an hour");
        assert!(child.try_wait().unwrap().is_none(), "the worker stopped");
        // The rows of the archive's manifest, as the worker records them when it is ready.
        let (status, rows, seconds, bytes): (String, Option<i64>, Option<f64>, Option<i64>) = sqlx::query_as(
            "SELECT e.status, (SELECT (a.after ->> 'rows')::int8 FROM audit_events a WHERE a.organization_id = e.organization_id \
                                 AND a.action = 'organization.export_ready' AND a.target_id = e.id::text), \
                    extract(epoch FROM e.finished_at - e.started_at)::float8, e.size_bytes \
             FROM org_exports e WHERE e.id = $1",
        )
        .bind(id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        match status.as_str() {
            "ready" => break (rows.unwrap_or(0) as u64, seconds.unwrap_or(f64::NAN), bytes.unwrap_or(0) as u64),
            "queued" | "running" => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the worker's export ended {other}"),
        }
    };
    // Read the high-water mark before stopping it (its samples end when the process does).
    tokio::time::sleep(Duration::from_millis(50)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let peak_mb = peak.join().unwrap() as f64 / 1024.0;
    WorkerRun { rows, seconds, bytes, peak_mb, idle_mb }
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
