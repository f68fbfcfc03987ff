//! The OpenAPI document against the server, by a schema-based fuzzer: schemathesis generates
//! requests from `/api/v1/openapi.json`, valid ones and invalid ones, and runs every check it has
//! (`--checks all`) against a running app with a fixed seed: no 5xx, every response as
//! documented (status, content type, headers, body), every valid request accepted and every
//! invalid one refused, created resources reachable through the document's links and gone after
//! their deletion.
//!
//! `scripts/test` installs schemathesis (a pinned version, in a virtualenv under `target/`) and
//! sets `SCHEMATHESIS` to it. Without it the test says so loudly and passes: only a machine that
//! can't install it (no network) should ever skip it.
//!
//! What the document can't say — references to records that exist, dates in order, an invoice
//! total within 64 bits — `tests/schemathesis/hooks.py` keeps consistent in the generated
//! requests, using the records seeded here.
//!
//! To look further than the suite does: `CLIENTFLOW_FUZZ_SEED=7 CLIENTFLOW_FUZZ_EXAMPLES=200
//! cargo test -p clientflow --test it schemathesis -- --nocapture` (and `CLIENTFLOW_FUZZ_LOG=file`
//! has the hooks write every request's operation, kind and status there as JSON lines).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clientflow_test_support::TestApp;
use serde_json::json;

use crate::support::api::{Tenant, api_key, post, tenant, upload};

/// The version `scripts/test` installs; the test refuses another (a newer schemathesis adds
/// checks, which should be a deliberate upgrade, not a surprise in someone's test run).
const VERSION: &str = "4.32.5";

/// What one run may take at most before the test gives up on it.
const TIME_LIMIT: Duration = Duration::from_secs(600);

/// A setting of the run, from the environment for a deeper look (another seed, more examples);
/// the suite always runs the defaults.
fn setting(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SCHEMATHESIS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    // Installed by an earlier `scripts/test` in this checkout.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin/schemathesis");
    venv.exists().then_some(venv)
}

/// Records for the generated requests to refer to, and spares for them to delete.
async fn fixtures(app: &TestApp, t: &Tenant, key: &str) -> serde_json::Value {
    let id = |res: crate::support::api::Res| {
        assert!(matches!(res.status, 200 | 201), "{}", res.body);
        res.id()
    };
    let client = t.org.client.to_string();
    // A billing email, for its statement to be mailed to (once a day per range).
    let billed = crate::support::api::patch(
        app,
        &format!("/api/v1/clients/{client}"),
        key,
        json!({"email": "billing@fuzzed.test"}),
    )
    .await;
    assert_eq!(billed.status, 200, "{}", billed.body);
    let project = id(post(app, "/api/v1/projects", key, json!({"name": "Fuzzed", "client_id": client})).await);
    let columns = crate::support::api::get(app, &format!("/api/v1/projects/{project}/columns"), key).await;
    let column = columns.body["data"][0]["id"].as_str().expect("a column").to_string();
    // A task's status is its column's: a request naming both must name them alike.
    let column_status = columns.body["data"][0]["status"].as_str().expect("a column's status").to_string();
    let task_of = |title: &'static str| post(app, "/api/v1/tasks", key, json!({"project_id": project, "title": title}));
    let parent_task = id(task_of("Parent").await);
    let task = id(task_of("Task").await);
    let spare_task = id(task_of("Spare").await);
    let comments = format!("/api/v1/tasks/{task}/comments");
    let comment = id(post(app, &comments, key, json!({"body": "Comment"})).await);
    let spare_comment = id(post(app, &comments, key, json!({"body": "Spare"})).await);
    let entry =
        || post(app, "/api/v1/time-entries", key, json!({"project_id": project, "task_id": task, "minutes": 30}));
    let time_entry = id(entry().await);
    let spare_time_entry = id(entry().await);
    let expense = || {
        post(app, "/api/v1/expenses", key, json!({"project_id": project, "category": "Travel", "amount_minor": 4250}))
    };
    let (expense_id, spare_expense) = (id(expense().await), id(expense().await));
    let invoice = || {
        post(
            app,
            "/api/v1/invoices",
            key,
            json!({"client_id": client, "lines": [{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 5000}]}),
        )
    };
    let (invoice_id, action_invoice, spare_invoice) = (id(invoice().await), id(invoice().await), id(invoice().await));
    // The invoice read and changed repeats, and so does the one deleted (once).
    for repeated in [&invoice_id, &spare_invoice] {
        let res =
            post(app, &format!("/api/v1/invoices/{repeated}/repeat"), key, json!({"starts_on": "2990-01-01"})).await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
    // Sent, for payments to be recorded against.
    let payment_invoice = id(invoice().await);
    let sent = post(app, &format!("/api/v1/invoices/{payment_invoice}/send"), key, json!({})).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    // A payment on it, for the deletion to find (once).
    let recorded =
        post(app, &format!("/api/v1/invoices/{payment_invoice}/payments"), key, json!({"amount_minor": 1})).await;
    assert_eq!(recorded.status, 201, "{}", recorded.body);
    let spare_payment = recorded.body["data"]["payment"]["id"].as_str().expect("a payment id").to_string();
    // A file on the project and its task keeps both from being deleted under the other requests.
    let file =
        id(upload(app, key, &[("project_id", &project), ("task_id", &task)], Some(("notes.txt", b"notes"))).await);
    let spare_file = id(upload(app, key, &[("project_id", &project)], Some(("spare.txt", b"spare"))).await);
    let spare_client = id(post(app, "/api/v1/clients", key, json!({"name": "Spare"})).await);
    let spare_project = id(post(app, "/api/v1/projects", key, json!({"name": "Spare"})).await);
    // What copies are made of: a board without tasks, so that every task stays in `project`.
    let copy_source =
        id(post(app, "/api/v1/projects", key, json!({"name": "Template", "start_date": "2026-01-05"})).await);
    json!({
        "client": client, "project": project, "column": column, "column_status": column_status, "parent_task": parent_task, "task": task,
        "comment": comment, "time_entry": time_entry, "expense": expense_id, "invoice": invoice_id, "action_invoice": action_invoice,
        "payment_invoice": payment_invoice, "spare_payment": spare_payment,
        "file": file, "member": t.admin,
        "spare_client": spare_client, "spare_project": spare_project, "spare_task": spare_task,
        "spare_comment": spare_comment, "spare_time_entry": spare_time_entry, "spare_expense": spare_expense, "spare_invoice": spare_invoice,
        "spare_file": spare_file, "copy_source": copy_source,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout, clippy::print_stderr)] // schemathesis' report is the test's output
async fn schemathesis_finds_the_api_exactly_as_documented() {
    let Some(bin) = schemathesis() else {
        eprintln!(
            "\n!!!!! SKIPPED: schemathesis is not installed, so the API was NOT checked against its OpenAPI \
             document. `scripts/test` installs it (pip, into target/schemathesis); set SCHEMATHESIS to a \
             schemathesis {VERSION} executable to run this test. !!!!!\n"
        );
        return;
    };
    let version = std::process::Command::new(&bin).arg("--version").output().expect("schemathesis runs");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains(VERSION), "{} is {version}, not {VERSION}", bin.display());

    // A server of its own, with every budget out of reach: the fuzzer sends thousands of requests
    // from one address with one key (429 stays documented, and is checked by ratelimit_http.rs).
    let app = TestApp::builder()
        .config(|c| {
            for id in clientflow::abuse::limits::PolicyId::ALL {
                *c.rate_limits.get_mut(id) = clientflow::abuse::limits::LimitConfig::new(100_000_000, 60);
            }
        })
        .pool_size(10)
        .spawn()
        .await;
    let t = tenant(&app, "fuzz").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let fixtures = fixtures(&app, &t, &key).await;

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/hooks.py");
    let work = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let run = tokio::process::Command::new(&bin)
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--url", &app.base_url])
        .arg("--tls-verify")
        .arg(app.cert_path())
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        .args([
            "--seed",
            &setting("CLIENTFLOW_FUZZ_SEED", "1"),
            "--max-examples",
            &setting("CLIENTFLOW_FUZZ_EXAMPLES", "30"),
        ])
        .args(["--generation-database", "none"])
        .args(["--no-color", "--output-truncate", "false"])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("CLIENTFLOW_FUZZ_FIXTURES", fixtures.to_string())
        .current_dir(work.path())
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(TIME_LIMIT, run).await.expect("schemathesis finishes in time").expect("schemathesis runs");
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("schemathesis took {:.0?}", started.elapsed());
    assert!(out.status.success(), "schemathesis found the API differing from its document (report above)");
}
