//! The first hour of a new agency, in a real Chromium driven with real pointer and keyboard
//! events (`tests/browser/journey.mjs`, npm `playwright-core` pointed at the installed
//! Chromium, npm `axe-core` injected into every page): sign up, verify, create the
//! organization, invite a Member, client, project, tasks, drag across columns, comment, time,
//! invoice, a shared file, a Client user and their portal, two-factor, the audit log. On every
//! page, at 1,280 and 390 px: no console error, no CSP violation, no horizontal overflow, no word
//! of a table's header or figure split across lines, no serious or critical axe violation; a
//! screenshot per step under `target/browser-journey/`.
//!
//! The suite asks this test for what only the server side has (the mail a step sent) over its
//! standard streams: a line `MAIL <address> <path prefix>` is answered with the link.
//! It is skipped, loudly, only when there is no browser or no Node.js to drive it.

use std::path::PathBuf;
use std::process::Stdio;

use clientflow_test_support::TestApp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> Option<PathBuf> {
    let candidate =
        std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    candidate.is_file().then_some(candidate)
}

fn have(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(why: &str) {
    eprintln!("\n**********************************************************************");
    eprintln!("SKIPPED browser_journey: {why}");
    eprintln!("(scripts/test installs chromium and the suite's npm packages)");
    eprintln!("**********************************************************************\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the suite's page-by-page progress is the test's report
async fn a_new_agency_gets_through_its_first_hour_in_a_real_browser() {
    let Some(browser) = chromium() else { return skip("no Chromium at /usr/bin/chromium (or $CHROMIUM)") };
    if !have("node") {
        return skip("no Node.js (node) to drive the browser");
    }
    let suite = repo_root().join("tests/browser");
    if !suite.join("node_modules/playwright-core").is_dir() {
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&suite)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "npm ci in tests/browser failed (the npm registry must be reachable once)");
    }
    let shots = repo_root().join("target/browser-journey");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    // The real clock: the suite computes TOTP codes from the browser's time.
    let app = TestApp::builder().system_clock().spawn().await;
    let mut child = tokio::process::Command::new("node")
        .arg("journey.mjs")
        .current_dir(&suite)
        .env("BASE_URL", &app.base_url)
        .env("CHROMIUM", &browser)
        .env("SCREENSHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut transcript = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("read suite output") {
            if let Some(rest) = line.strip_prefix("MAIL ") {
                let (to, prefix) = rest.split_once(' ').expect("MAIL <to> <prefix>");
                let link = app.link_in_mail(to, prefix).await;
                stdin.write_all(format!("{link}\n").as_bytes()).await.expect("answer the suite");
                stdin.flush().await.expect("flush");
            } else {
                println!("{line}");
                transcript.push(line);
            }
        }
        child.wait().await.expect("suite exit")
    };
    let status = tokio::time::timeout(std::time::Duration::from_secs(600), run).await.expect("suite timed out");
    assert!(
        status.success(),
        "the browser journey failed (screenshots in {}):\n{}",
        shots.display(),
        transcript.join("\n")
    );
}
