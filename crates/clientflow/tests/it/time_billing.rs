//! Time that bills: durations as people type them, rates resolved and kept on the entry, the
//! timer (one per person, under races too), time turned into invoice lines exactly once (two
//! concurrent requests: one wins), yearly invoice numbers under concurrent sends, payment terms,
//! the week and totals pages, the CSV export's formula neutralisation, and "viewed" recorded
//! only when the client opens an invoice.

use clientflow::access;
use clientflow::work::{invoice_mail, invoices};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{Tenant, add_member, api_key, count, ctx, delete, get, patch, post, tenant};
use crate::support::orgs::{Org, org_with_every_role};
use crate::support::sql;
use crate::support::work::{StoredInvoice, insert_invoice};

/// Puts `user` on `project`.
async fn join_project(app: &TestApp, org: Uuid, project: Uuid, user: Uuid) {
    let add = "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())";
    sql(app, add, &[org, project, user]).await
}

async fn manager_key(app: &TestApp, t: &Tenant) -> String {
    api_key(app, t, "manager", None).await.1
}

/// A project of the tenant's client, named.
async fn client_project(app: &TestApp, t: &Tenant, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4)")
        .bind(t.org.id)
        .bind(id)
        .bind(t.org.client)
        .bind(name)
        .execute(&mut db)
        .await
        .unwrap();
    id
}

async fn record(app: &TestApp, key: &str, project: Uuid, duration: &str) -> Value {
    let res = post(app, "/api/v1/time-entries", key, json!({"project_id": project, "duration": duration})).await;
    assert_eq!(res.status, 201, "{duration}: {}", res.body);
    res.body["data"].clone()
}

#[tokio::test]
async fn durations_parse_everywhere_and_rates_resolve_from_the_most_specific() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "rates").await;
    let key = manager_key(&app, &t).await;
    let project = t.org.project;
    for (typed, minutes) in
        [("1:30", 90), ("1h30m", 90), ("1h", 60), ("90m", 90), ("1.5h", 90), ("1,5h", 90), ("45", 45)]
    {
        assert_eq!(record(&app, &key, project.as_uuid(), typed).await["minutes"], minutes, "{typed}");
    }
    for bad in ["0", "0:00", "-1h", "25h", "24:01", "1441m", "abc", "1.5", "1h75m", "", "1\u{0}h"] {
        let res = post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "duration": bad})).await;
        res.assert_problem_field(422, "duration");
    }
    let res =
        post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "minutes": 5, "duration": "1h"})).await;
    res.assert_problem_field(422, "duration");
    post(&app, "/api/v1/time-entries", &key, json!({"project_id": project})).await.assert_problem_field(422, "minutes");

    // Rates: nothing set, then the organization's, the client's, the project's, the person's
    // on the project; each entry keeps the rate of its moment.
    let rate = |e: &Value| e["rate_minor"].as_i64();
    assert_eq!(rate(&record(&app, &key, project.as_uuid(), "1h").await), None);
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 5000 WHERE id = $1", &[t.org.id.as_uuid()]).await;
    let org_rate = record(&app, &key, project.as_uuid(), "1h").await;
    assert_eq!(rate(&org_rate), Some(5000));
    sql(&app, "UPDATE clients SET hourly_rate_minor = 8000 WHERE id = $1", &[t.org.client.as_uuid()]).await;
    assert_eq!(rate(&record(&app, &key, project.as_uuid(), "1h").await), Some(8000));
    sql(&app, "UPDATE projects SET hourly_rate_minor = 9000 WHERE id = $1", &[project.as_uuid()]).await;
    assert_eq!(rate(&record(&app, &key, project.as_uuid(), "1h").await), Some(9000));
    sql(
        &app,
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at, hourly_rate_minor) \
         VALUES ($1, $2, $3, now(), 9500)",
        &[t.org.id.as_uuid(), project.as_uuid(), t.admin],
    )
    .await;
    let personal = record(&app, &key, project.as_uuid(), "1h").await;
    assert_eq!(rate(&personal), Some(9500));
    // History stays: the entry at the organization's rate still says 5000.
    assert_eq!(
        get(&app, &format!("/api/v1/time-entries/{}", org_rate["id"].as_str().unwrap()), &key).await.body["data"]["rate_minor"],
        5000
    );
    // Billable follows the project unless the entry says otherwise.
    assert_eq!(personal["billable"], true);
    sql(&app, "UPDATE projects SET billable = false WHERE id = $1", &[project.as_uuid()]).await;
    assert_eq!(record(&app, &key, project.as_uuid(), "1h").await["billable"], false);
    let res =
        post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "duration": "1h", "billable": true}))
            .await;
    assert_eq!(res.body["data"]["billable"], true, "{}", res.body);
    // Durations in edits too.
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let res = patch(&app, &format!("/api/v1/time-entries/{id}"), &key, json!({"duration": "2:15"})).await;
    assert_eq!(res.body["data"]["minutes"], 135, "{}", res.body);
    patch(&app, &format!("/api/v1/time-entries/{id}"), &key, json!({"duration": "0m"}))
        .await
        .assert_problem_field(422, "duration");
}

#[tokio::test]
async fn one_timer_per_person_and_stopping_records_the_time() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "timers").await;
    let key = manager_key(&app, &t).await;
    let project = t.org.project.as_uuid();
    let other = client_project(&app, &t, "Other").await;
    assert_eq!(get(&app, "/api/v1/timer", &key).await.body["data"], Value::Null);
    let res = post(&app, "/api/v1/timer/start", &key, json!({"project_id": project, "note": "Design"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(get(&app, "/api/v1/timer", &key).await.body["data"]["note"], "Design");
    app.clock.advance(time::Duration::minutes(25));
    // A second start stops the first, recording its 25 minutes.
    let res = post(&app, "/api/v1/timer/start", &key, json!({"project_id": other})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let recorded: i64 = count(&app, "SELECT count(*) FROM time_entries WHERE minutes = 25 AND note = 'Design'").await;
    assert_eq!(recorded, 1);
    app.clock.advance(time::Duration::minutes(61));
    let res = post(&app, "/api/v1/timer/stop", &key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["entry"]["minutes"], 61);
    assert_eq!(res.body["data"]["entry"]["project_id"], json!(other));
    post(&app, "/api/v1/timer/stop", &key, json!({})).await.assert_problem(409);
    // Unknown or foreign projects are the field's fault.
    post(&app, "/api/v1/timer/start", &key, json!({"project_id": Uuid::now_v7()}))
        .await
        .assert_problem_field(422, "project_id");

    // Racing starts: every answer is a start or a clear 409, and one timer runs.
    let starts = (0..12).map(|_| post(&app, "/api/v1/timer/start", &key, json!({"project_id": project})));
    let answers = join_all(starts).await;
    for a in &answers {
        assert!(a.status == 200 || a.status == 409, "{} {}", a.status, a.body);
    }
    assert!(answers.iter().any(|a| a.status == 200));
    let running = count(&app, "SELECT count(*) FROM timers WHERE stopped_at IS NULL").await;
    assert_eq!(running, 1);
    // The index itself refuses a second running timer, whatever the code does.
    let mut db = app.db.admin_conn().await;
    let e = sqlx::query(
        "INSERT INTO timers (organization_id, id, user_id, project_id, started_at) VALUES ($1, $2, $3, $4, now())",
    )
    .bind(t.org.id)
    .bind(Uuid::now_v7())
    .bind(t.admin)
    .bind(project)
    .execute(&mut db)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("timers_one_running"), "{e}");
}

async fn draft(app: &TestApp, key: &str, t: &Tenant) -> String {
    let res = post(app, "/api/v1/invoices", key, json!({"client_id": t.org.client})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.body["data"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn time_is_billed_once_even_by_concurrent_requests_and_released_by_voiding() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "billing-time").await;
    let key = manager_key(&app, &t).await;
    sql(&app, "UPDATE clients SET hourly_rate_minor = 10000 WHERE id = $1", &[t.org.client.as_uuid()]).await;
    let project = t.org.project.as_uuid();

    // Two requests, two drafts, the same entry: one wins, the other writes nothing.
    for round in 0..4 {
        let entry = record(&app, &key, project, "1h").await["id"].as_str().unwrap().to_string();
        let (a, b) = (draft(&app, &key, &t).await, draft(&app, &key, &t).await);
        let body = json!({"entry_ids": [entry], "group": "entry"});
        let (path_a, path_b) = (format!("/api/v1/invoices/{a}/time"), format!("/api/v1/invoices/{b}/time"));
        let (ra, rb) = futures::join!(post(&app, &path_a, &key, body.clone()), post(&app, &path_b, &key, body.clone()));
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {} / {}", ra.body, rb.body);
        let (winner, loser, won) = if ra.status == 200 { (&a, &b, &ra) } else { (&b, &a, &rb) };
        assert_eq!(won.body["data"]["total_minor"], 10000, "{}", won.body);
        assert_eq!(won.body["data"]["lines"].as_array().unwrap().len(), 1);
        let lost = get(&app, &format!("/api/v1/invoices/{loser}"), &key).await;
        assert_eq!(
            (lost.body["data"]["total_minor"].as_i64(), lost.body["data"]["lines"].as_array().map(Vec::len)),
            (Some(0), Some(0))
        );
        let billed = get(&app, &format!("/api/v1/time-entries/{entry}"), &key).await;
        assert_eq!(billed.body["data"]["invoice_id"], json!(winner));
        // Billed time is fixed.
        patch(&app, &format!("/api/v1/time-entries/{entry}"), &key, json!({"note": "changed"}))
            .await
            .assert_problem(409);
        delete(&app, &format!("/api/v1/time-entries/{entry}"), &key).await.assert_problem(409);
        // Deleting the draft (round 0) or voiding it (the others) releases it.
        if round == 0 {
            assert_eq!(delete(&app, &format!("/api/v1/invoices/{winner}"), &key).await.status, 204);
        } else {
            assert_eq!(post(&app, &format!("/api/v1/invoices/{winner}/void"), &key, json!({})).await.status, 200);
        }
        let released = get(&app, &format!("/api/v1/time-entries/{entry}"), &key).await;
        assert_eq!(released.body["data"]["invoice_id"], Value::Null, "round {round}");
        assert_eq!(delete(&app, &format!("/api/v1/time-entries/{entry}"), &key).await.status, 204);
        delete(&app, &format!("/api/v1/invoices/{loser}"), &key).await;
    }

    // Everything matching a filter, one line per task and rate: 30 + 45 minutes at 100.00.
    let old = record(&app, &key, project, "2h").await;
    sql(
        &app,
        "UPDATE time_entries SET spent_on = '2020-01-01' WHERE id = $1",
        &[old["id"].as_str().unwrap().parse().unwrap()],
    )
    .await;
    record(&app, &key, project, "30m").await;
    record(&app, &key, project, "0:45").await;
    let unbillable =
        post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "duration": "3h", "billable": false}))
            .await;
    assert_eq!(unbillable.status, 201);
    let inv = draft(&app, &key, &t).await;
    let res = post(&app, &format!("/api/v1/invoices/{inv}/time"), &key, json!({"from": "2021-01-01"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let lines = res.body["data"]["lines"].as_array().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0]["quantity_milli"].as_i64(), lines[0]["amount_minor"].as_i64()), (Some(1250), Some(12500)));
    // Nothing left in that range: a clear 409.
    let res = post(&app, &format!("/api/v1/invoices/{inv}/time"), &key, json!({"from": "2021-01-01"})).await;
    res.assert_problem(409);
    // Editing the draft's notes keeps its lines and their time.
    assert_eq!(patch(&app, &format!("/api/v1/invoices/{inv}"), &key, json!({"notes": "Thanks"})).await.status, 200);
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries WHERE invoice_id IS NOT NULL").await, 2);
    // A sent invoice takes no more time.
    assert_eq!(post(&app, &format!("/api/v1/invoices/{inv}/send"), &key, json!({})).await.status, 200);
    post(&app, &format!("/api/v1/invoices/{inv}/time"), &key, json!({})).await.assert_problem(409);
    // Bad filters name their field.
    let other = draft(&app, &key, &t).await;
    post(&app, &format!("/api/v1/invoices/{other}/time"), &key, json!({"group": "month"}))
        .await
        .assert_problem_field(422, "group");
    post(&app, &format!("/api/v1/invoices/{other}/time"), &key, json!({"from": "2026-02-01", "to": "2026-01-01"}))
        .await
        .assert_problem_field(422, "to");
    post(&app, &format!("/api/v1/invoices/{other}/time"), &key, json!({"entry_ids": ["nope"]}))
        .await
        .assert_problem_field(422, "entry_ids[0]");
}

#[tokio::test]
async fn invoice_numbers_are_a_gapless_yearly_sequence_under_concurrent_sends() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "numbers").await;
    let key = manager_key(&app, &t).await;
    let year = app.clock.now_utc().year();
    let line = json!([{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 100}]);
    let mut drafts = Vec::new();
    for _ in 0..10 {
        let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
        drafts.push(res.body["data"]["id"].as_str().unwrap().to_string());
    }
    let paths: Vec<String> = drafts.iter().map(|d| format!("/api/v1/invoices/{d}/send")).collect();
    let sends = paths.iter().map(|p| post(&app, p, &key, json!({})));
    let answers = join_all(sends).await;
    let mut references: Vec<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{}", a.body);
            a.body["data"]["reference"].as_str().unwrap().to_string()
        })
        .collect();
    references.sort();
    let expected: Vec<String> = (1..=10).map(|n| format!("INV-{year}-{n:04}")).collect();
    assert_eq!(references, expected);
    // The prefix is the organization's; the sequence goes on.
    sql(&app, "UPDATE organizations SET invoice_prefix = 'ACME' WHERE id = $1", &[t.org.id.as_uuid()]).await;
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let sent = post(&app, &format!("/api/v1/invoices/{id}/send"), &key, json!({})).await;
    assert_eq!(sent.body["data"]["reference"], format!("ACME-{year}-0011"));
    // A new year starts again at 1.
    app.clock.advance(time::Duration::days(366));
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let sent = post(&app, &format!("/api/v1/invoices/{id}/send"), &key, json!({})).await;
    assert_eq!(sent.body["data"]["reference"], format!("ACME-{}-0001", year + 1));

    // Payment terms: given, the organization's, or a due date instead (not both).
    let res = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": t.org.client, "issue_date": "2026-03-01", "payment_terms_days": 14}),
    )
    .await;
    assert_eq!(
        (res.body["data"]["due_date"].as_str(), res.body["data"]["payment_terms_days"].as_i64()),
        (Some("2026-03-15"), Some(14))
    );
    sql(&app, "UPDATE organizations SET payment_terms_days = 7 WHERE id = $1", &[t.org.id.as_uuid()]).await;
    let res =
        post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "issue_date": "2026-03-01"})).await;
    assert_eq!(res.body["data"]["due_date"], "2026-03-08");
    post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": t.org.client, "due_date": "2026-04-01", "payment_terms_days": 14}),
    )
    .await
    .assert_problem_field(422, "payment_terms_days");
    post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "payment_terms_days": 400}))
        .await
        .assert_problem_field(422, "payment_terms_days");
}

/// A project of the organization's client with the Member in it, and entries whose notes look
/// like spreadsheet formulas.
async fn web_fixture(app: &TestApp, org: &Org) -> Uuid {
    let org_id: Uuid = org.id.parse().unwrap();
    let client: Uuid = org.client_id.parse().unwrap();
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let project = Uuid::now_v7();
    sql(
        app,
        "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, 'Formula project')",
        &[org_id, project, client],
    )
    .await;
    join_project(app, org_id, project, member).await;
    for note in ["=HYPERLINK(\"http://evil\")", "+SUM(A1)", "-2+3", "@cmd", "\tTabbed", "\rReturn", "Plain note"] {
        entry(app, org_id, project, member, Entry { minutes: 30, billable: true, rate: Some(6000), note }).await;
    }
    project
}

#[tokio::test]
async fn csv_export_neutralises_formulas_and_time_pages_answer_by_role() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "csvco").await;
    let project = web_fixture(&app, &org).await;
    // The Owner's hour on the same project, not billable.
    let (owner_id, member_id) = (org.people["owner"].user_id.clone(), org.people["member"].user_id.clone());
    let review = Entry { minutes: 60, billable: false, rate: None, note: "Review" };
    entry(&app, org.id.parse().unwrap(), project, owner_id.parse().unwrap(), review).await;
    let slug = org.slug.clone();
    let today = app.clock.now_utc().date();
    let export = format!("/o/{slug}/time/export.csv?from={today}&to={today}");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = owner.get(&export).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let body = res.text().await.unwrap();
    for neutral in ["'=HYPERLINK", "'+SUM(A1)", "'-2+3", "'@cmd", "'\tTabbed", "'\rReturn", "Plain note"] {
        assert!(body.contains(neutral), "{neutral:?} missing in {body}");
    }
    for cell in body.lines().flat_map(|l| l.split(',')) {
        let cell = cell.trim_start_matches('"');
        assert!(!cell.starts_with(['=', '+', '@']), "a formula cell: {cell:?}");
    }
    assert_eq!(body.lines().count(), 9, "{body}");
    let report = format!("/o/{slug}/time/report?from={today}&to={today}");
    let (status, html) = owner.page(&report).await;
    assert_eq!(status, 200);
    assert!(html.contains("Formula project") && html.contains("4h 30m") && html.contains("210.00"), "{html}");
    // Per person: each one's hours, billable hours and amount, leading to their week.
    let per_person = |html: &str, id: &str| -> Option<String> {
        let section = html.split("<h2>Per person</h2>").nth(1)?;
        let row = section.split("<tr>").find(|r| r.contains(&format!("person={id}\">")))?;
        Some(row.split("</tr>").next()?.to_string())
    };
    let row = per_person(&html, &member_id).unwrap_or_else(|| panic!("no row for the member: {html}"));
    assert!(row.contains(&format!("/time/week?week={today}&#38;person={member_id}\"")), "{row}");
    assert!(
        row.ends_with("<td class=\"num\">3h 30m</td><td class=\"num\">3h 30m</td><td class=\"num\">210.00</td>"),
        "{row}"
    );
    let row = per_person(&html, &owner_id).unwrap_or_else(|| panic!("no row for the owner: {html}"));
    assert!(row.ends_with("<td class=\"num\">1h</td><td class=\"num\">0m</td><td class=\"num\">0.00</td>"), "{row}");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&format!("/o/{slug}/time/week?person={member_id}&week={today}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Formula project") && html.contains("3h 30m"), "{html}");
    // A Member sees their own week, not someone else's; a Client none of it.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.page(&format!("/o/{slug}/time/week")).await.0, 200);
    assert_eq!(member.get(&format!("/o/{slug}/time/week?person={owner_id}")).await.status(), 403);
    assert_eq!(member.get(&export).await.status(), 200);
    // The Member's report has both people of their project; only their own week is a link.
    let (_, html) = member.page(&report).await;
    assert!(per_person(&html, &member_id).is_some() && per_person(&html, &owner_id).is_none(), "{html}");
    let people = html.split("<h2>Per person</h2>").nth(1).unwrap();
    assert_eq!(people.matches("<th scope=\"row\">").count(), 2, "{people}");
    let client = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(client.get(&export).await.status(), 403);
    assert_eq!(client.get(&format!("/o/{slug}/time/week")).await.status(), 403);
    // Another organization's member gets nothing of this one.
    let mut other = org_with_every_role(&app, "othercsv").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&export).await.status(), 404);

    // The timer from the web: start on the project, see it in the navigation, stop it.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = owner
        .submit(
            &format!("/o/{slug}/projects/{project}/time"),
            &format!("/o/{slug}/timer/start"),
            &[("project_id", &project.to_string()), ("note", "From the web")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/o/{slug}/projects/{project}/time#timer"));
    app.clock.advance(time::Duration::minutes(20));
    let (_, html) = owner.page(&format!("/o/{slug}/time")).await;
    assert!(html.contains("timer-running") && html.contains("0:20:00"), "{html}");
    let (_, html) = owner.page(&format!("/o/{slug}/projects/{project}/time")).await;
    assert!(html.contains("Stop timer"), "{html}");
    let res = owner.submit(&format!("/o/{slug}/projects/{project}/time"), &format!("/o/{slug}/timer/stop"), &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries WHERE note = 'From the web' AND minutes = 20").await, 1);
    // Durations typed into the web form.
    let res = owner
        .submit(
            &format!("/o/{slug}/projects/{project}/time"),
            &format!("/o/{slug}/projects/{project}/time"),
            &[("from", "project"), ("minutes", "1,5h"), ("note", "Typed")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries WHERE note = 'Typed' AND minutes = 90").await, 1);
    let res = owner
        .submit(
            &format!("/o/{slug}/projects/{project}/time"),
            &format!("/o/{slug}/projects/{project}/time"),
            &[("from", "project"), ("minutes", "25h")],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("at most 24 hours"));
}

/// Whether the invoice has `viewed_at`, and how many `invoice.viewed` audit events name it.
async fn viewed(app: &TestApp, id: Uuid) -> (bool, i64) {
    let mut db = app.db.admin_conn().await;
    let (at, events): (Option<time::OffsetDateTime>, i64) = sqlx::query_as(
        "SELECT viewed_at, (SELECT count(*) FROM audit_events WHERE action = 'invoice.viewed' AND target_id = $2) \
         FROM invoices WHERE id = $1",
    )
    .bind(id)
    .bind(id.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    (at.is_some(), events)
}

#[tokio::test]
async fn viewed_is_recorded_when_the_client_opens_the_invoice_and_not_when_staff_do() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "viewedco").await;
    let org_id = org.id.parse().unwrap();
    let op = access::operator(&app.app_db, &crate::support::operator(), org_id, "test").await.unwrap().unwrap();
    let c = ctx(&app);
    let input = invoices::InvoiceInput {
        client_id: org.client_id.clone(),
        lines: Some(vec![invoices::LineInput {
            description: "Work".into(),
            quantity_milli: 1000,
            unit_price_minor: 100,
        }]),
        ..Default::default()
    };
    let draft = invoices::create(&app.app_db, &c, &op, &input).await.unwrap();
    let sent = invoices::create(&app.app_db, &c, &op, &input).await.unwrap();
    invoices::transition(&app.app_db, &c, &op, sent.id, invoices::InvoiceAction::Send).await.unwrap();
    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(owner.page(&format!("/o/{slug}/invoices/{}", sent.id)).await.0, 200);
    assert_eq!(owner.page(&format!("/o/{slug}/invoices/{}/print", sent.id)).await.0, 200);
    assert_eq!(viewed(&app, sent.id.as_uuid()).await, (false, 0));
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let (status, html) = client.page(&format!("/portal/{slug}/invoices/{}", sent.id)).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("INV-{}-0001", app.clock.now_utc().year())), "{html}");
    assert_eq!(viewed(&app, sent.id.as_uuid()).await, (true, 1));
    client.page(&format!("/portal/{slug}/invoices/{}", sent.id)).await;
    assert_eq!(viewed(&app, sent.id.as_uuid()).await, (true, 1), "recorded once");
    // The Owners and Admins are told, once; nobody else.
    let told: Vec<String> = sqlx::query_scalar(
        "SELECT m.role FROM notifications n JOIN memberships m \
           ON m.organization_id = n.organization_id AND m.user_id = n.recipient_id \
         WHERE n.kind = 'invoice_viewed' ORDER BY m.role",
    )
    .fetch_all(&mut app.db.admin_conn().await)
    .await
    .unwrap();
    assert_eq!(told, vec!["admin".to_string(), "owner".to_string()]);
    // A draft is not the client's to open.
    assert_eq!(client.get(&format!("/portal/{slug}/invoices/{}", draft.id)).await.status(), 404);
    assert_eq!(viewed(&app, draft.id.as_uuid()).await, (false, 0));
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&format!("/o/{slug}/invoices/{}", sent.id)).await;
    assert!(html.contains("Viewed by the client"), "{html}");

    // The PDF: the same document for staff and for the client, never a draft for the client.
    let reference = format!("INV-{}-0001", app.clock.now_utc().year());
    let res = owner.get(&format!("/o/{slug}/invoices/{}/pdf", sent.id)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let staff_pdf = res.bytes().await.unwrap().to_vec();
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let res = client.get(&format!("/portal/{slug}/invoices/{}/pdf", sent.id)).await;
    assert_eq!(res.status(), 200);
    let pdf = res.bytes().await.unwrap().to_vec();
    assert_eq!(pdf, staff_pdf);
    assert!(pdf.starts_with(b"%PDF-") && pdf.ends_with(b"%%EOF\n"));
    let text = String::from_utf8_lossy(&pdf);
    assert!(text.contains(&format!("(Invoice {reference})")), "{text}");
    assert!(text.contains("(Total)") && text.contains("(1.00 "), "{text}");
    assert_eq!(client.get(&format!("/portal/{slug}/invoices/{}/pdf", draft.id)).await.status(), 404);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/invoices/{}/pdf", sent.id)).await.status(), 403);
}

#[tokio::test]
async fn sending_mails_the_billing_contact_and_reminders_go_at_most_daily() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "mailing").await;
    let key = manager_key(&app, &t).await;
    let line = json!([{"description": "Work", "quantity_milli": 2000, "unit_price_minor": 4500}]);
    // Without a billing email, sending still works and mails nobody.
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
    let quiet = res.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(post(&app, &format!("/api/v1/invoices/{quiet}/send"), &key, json!({})).await.status, 200);
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await, 0);
    sql(&app, "UPDATE clients SET email = 'billing@client.test' WHERE id = $1", &[t.org.client.as_uuid()]).await;
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let sent = post(&app, &format!("/api/v1/invoices/{id}/send"), &key, json!({})).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let reference = sent.body["data"]["reference"].as_str().unwrap().to_string();
    let mut db = app.db.admin_conn().await;
    let (to, subject, body): (String, String, String) =
        sqlx::query_as("SELECT recipient, subject, body_text FROM outbox").fetch_one(&mut db).await.unwrap();
    assert_eq!(to, "billing@client.test");
    assert!(subject.contains(&reference), "{subject}");
    assert!(body.contains(&format!("/portal/mailing/invoices/{id}")), "{body}");
    assert!(body.contains("90.00"), "{body}");
    // Reminders: one a day.
    let op = t.org.principal.clone();
    let c = ctx(&app);
    let inv: clientflow::platform::ids::InvoiceId = id.parse().unwrap();
    let first =
        invoice_mail::email_invoice(&app.app_db, &c, &op, inv, "https://cf.test", invoice_mail::Mailing::Reminder)
            .await;
    assert_eq!(first.unwrap().as_deref(), Some("billing@client.test"));
    let again =
        invoice_mail::email_invoice(&app.app_db, &c, &op, inv, "https://cf.test", invoice_mail::Mailing::Reminder)
            .await;
    assert!(matches!(again, Err(clientflow::platform::error::DomainError::Conflict(_))), "{again:?}");
    app.clock.advance(time::Duration::hours(25));
    let later = invoice_mail::email_invoice(
        &app.app_db,
        &ctx(&app),
        &op,
        inv,
        "https://cf.test",
        invoice_mail::Mailing::Reminder,
    )
    .await;
    assert!(later.unwrap().is_some());
    assert_eq!(count(&app, "SELECT count(*) FROM outbox WHERE subject LIKE 'Reminder:%'").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action = 'invoice.reminded'").await, 2);
}

// ---- invoices out: the PDF attached, over SMTP and over Resend ----

/// An organization with every role whose client has a billing email; one invoice sent and
/// mailed. Returns the organization, the invoice's id and reference, and the PDF the client
/// downloads from the portal.
async fn sent_and_mailed(app: &TestApp, name: &str) -> (Org, clientflow::platform::ids::InvoiceId, String, Vec<u8>) {
    let mut org = org_with_every_role(app, name).await;
    let client_id: Uuid = org.client_id.parse().unwrap();
    sql(app, "UPDATE clients SET email = 'billing@client.test' WHERE id = $1", &[client_id]).await;
    let op = access::operator(&app.app_db, &crate::support::operator(), org.id.parse().unwrap(), "test")
        .await
        .unwrap()
        .unwrap();
    let c = ctx(app);
    let input = invoices::InvoiceInput {
        client_id: org.client_id.clone(),
        lines: Some(vec![invoices::LineInput {
            description: "Design (a) \\ review".into(),
            quantity_milli: 2500,
            unit_price_minor: 12050,
        }]),
        ..Default::default()
    };
    let inv = invoices::create(&app.app_db, &c, &op, &input).await.unwrap();
    invoices::transition(&app.app_db, &c, &op, inv.id, invoices::InvoiceAction::Send).await.unwrap();
    let to =
        invoice_mail::email_invoice(&app.app_db, &c, &op, inv.id, "https://cf.test", invoice_mail::Mailing::Sent).await;
    assert_eq!(to.unwrap().as_deref(), Some("billing@client.test"));
    assert_eq!(count(app, "SELECT count(*) FROM outbox_attachments").await, 1, "the PDF waits with the message");
    let reference = invoices::get(&app.app_db, c.now, &op, inv.id).await.unwrap().invoice.reference.unwrap();
    let slug = org.slug.clone();
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let res = client.get(&format!("/portal/{slug}/invoices/{}/pdf", inv.id)).await;
    assert_eq!(res.status(), 200);
    let pdf = res.bytes().await.unwrap().to_vec();
    assert!(pdf.starts_with(b"%PDF-"));
    (org, inv.id, reference, pdf)
}

/// Delivers what is queued through another transport than the app's (whose mail drop the
/// sign-up and invitation links of the fixture are read from).
async fn deliver_with(app: &TestApp, configure: impl FnOnce(&mut clientflow::config::Config)) {
    let mut config = app.config.clone();
    configure(&mut config);
    let transport = clientflow::mail::transport::Transport::from_config(&config.mail, &config.data_dir).unwrap();
    let delivery = clientflow::mail::outbox::Delivery::new(transport, app.mail_delivery().links, &config.mail);
    clientflow::mail::outbox::deliver_due(&app.app_db, &delivery, app.clock.now_utc(), 1000).await.unwrap();
}

#[tokio::test]
async fn a_sent_invoice_is_mailed_with_its_portal_pdf_attached_over_smtp() {
    use clientflow_test_support::smtp::SmtpSink;
    let sink = SmtpSink::start().await;
    let url = format!("smtp://{}", sink.addr());
    let app = TestApp::spawn().await;
    let (org, id, reference, portal_pdf) = sent_and_mailed(&app, "pdfsmtp").await;
    deliver_with(&app, move |c| {
        c.mail.transport = clientflow::mail::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(clientflow::platform::secret::Secret::new(url));
        c.mail.from = "ClientFlow <no-reply@clientflow.test>".into();
    })
    .await;
    let all = sink.messages();
    let mail = all
        .iter()
        .find(|m| m.rcpt_to == ["billing@client.test"])
        .unwrap_or_else(|| panic!("no invoice mail among {:?}", all.iter().map(|m| &m.rcpt_to).collect::<Vec<_>>()));
    let mime = mail.mime();
    assert_eq!(mime.media_type(), "multipart/mixed", "{}", mail.data);
    // The readable message first (text and HTML), then the file.
    let leaves = mime.leaves();
    assert_eq!(
        leaves.iter().map(|p| p.media_type()).collect::<Vec<_>>(),
        ["text/plain", "text/html", "application/pdf"]
    );
    let text = String::from_utf8(leaves[0].decoded()).unwrap();
    assert!(text.contains(&format!("https://cf.test/portal/{}/invoices/{id}", org.slug)), "{text}");
    assert!(text.contains("attached as a PDF"), "{text}");
    let files = mail.attachments();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].filename, format!("invoice-{reference}.pdf"));
    assert_eq!(files[0].content_type, "application/pdf");
    assert_eq!(files[0].content, portal_pdf, "the attachment is the portal's document, byte for byte");
    assert!(String::from_utf8_lossy(&files[0].content).contains(&format!("(Invoice {reference})")));
    // Once sent, the organization's copy leaves the queue.
    assert_eq!(count(&app, "SELECT count(*) FROM outbox_attachments").await, 0);
}

#[tokio::test]
async fn a_sent_invoice_is_mailed_with_its_pdf_in_resends_format_and_never_without_it() {
    use clientflow_test_support::resend::{self, FakeResend};
    let fake = FakeResend::start("re_test_key").await;
    let base = fake.base_url();
    let resend = move |c: &mut clientflow::config::Config| {
        c.mail.transport = clientflow::mail::config::MailTransport::Resend;
        c.mail.resend_api_key = Some(clientflow::platform::secret::Secret::new("re_test_key"));
        c.mail.resend_base_url = base.clone();
        c.mail.from = "ClientFlow <no-reply@clientflow.test>".into();
    };
    let app = TestApp::spawn().await;
    let (org, id, reference, portal_pdf) = sent_and_mailed(&app, "pdfresend").await;
    deliver_with(&app, resend.clone()).await;
    let delivered = fake.delivered();
    let mail = delivered.iter().find(|m| m["to"] == json!(["billing@client.test"])).expect("the invoice mail");
    // Resend's wire format: [{filename, content: base64}], plus the optional content_type.
    let raw = mail["attachments"].as_array().expect("attachments");
    assert_eq!(raw.len(), 1);
    assert!(raw[0]["content"].is_string() && raw[0]["filename"].is_string(), "{}", raw[0]);
    let files = resend::attachments(mail);
    assert_eq!(files[0].filename, format!("invoice-{reference}.pdf"));
    assert_eq!(files[0].content_type.as_deref(), Some("application/pdf"));
    assert_eq!(files[0].content, portal_pdf);
    assert!(mail["text"].as_str().unwrap().contains(&format!("/portal/{}/invoices/{id}", org.slug)));
    assert_eq!(count(&app, "SELECT count(*) FROM outbox_attachments").await, 0);

    // A reminder whose PDF is gone (as after the organization's purge) is given up, not sent
    // without it.
    let op = access::operator(&app.app_db, &crate::support::operator(), org.id.parse().unwrap(), "test")
        .await
        .unwrap()
        .unwrap();
    invoice_mail::email_invoice(&app.app_db, &ctx(&app), &op, id, "https://cf.test", invoice_mail::Mailing::Reminder)
        .await
        .unwrap();
    sql(&app, "DELETE FROM outbox_attachments", &[]).await;
    let before = fake.delivered().len();
    deliver_with(&app, resend).await;
    assert_eq!(fake.delivered().len(), before);
    let mut db = app.db.admin_conn().await;
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM outbox WHERE subject LIKE 'Reminder:%'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(state, "dead");
    assert!(error.unwrap_or_default().contains("attachments are gone"));
}

// ---- the invoicing settings ----

#[tokio::test]
async fn invoicing_settings_round_trip_refuse_bad_values_by_name_and_are_audited() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "settings").await;
    let admin = api_key(&app, &t, "admin", None).await.1;
    let res = get(&app, "/api/v1/settings/invoicing", &admin).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["invoice_prefix"], "INV");
    assert_eq!(res.body["data"]["payment_terms_days"], 30);
    assert_eq!(res.body["data"]["default_tax_rate_bp"], 0);
    assert_eq!(res.body["data"]["hourly_rate_minor"], Value::Null);
    let res = patch(
        &app,
        "/api/v1/settings/invoicing",
        &admin,
        json!({"invoice_prefix": "ACME7", "hourly_rate_minor": 12050, "payment_terms_days": 14, "default_tax_rate_bp": 1900, "currency": "usd"}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let data = get(&app, "/api/v1/settings/invoicing", &admin).await.body["data"].clone();
    assert_eq!(
        data,
        json!({"invoice_prefix": "ACME7", "hourly_rate_minor": 12050, "payment_terms_days": 14, "default_tax_rate_bp": 1900, "currency": "USD"})
    );
    // null clears the rate; left out stays.
    let res = patch(&app, "/api/v1/settings/invoicing", &admin, json!({"hourly_rate_minor": null})).await;
    assert_eq!(res.body["data"]["hourly_rate_minor"], Value::Null);
    assert_eq!(res.body["data"]["invoice_prefix"], "ACME7");
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_events WHERE action = 'organization.invoicing_changed'").await,
        2
    );
    // A new invoice starts with the defaults: 14 days, 19% tax.
    let line = json!([{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 10000}]);
    let inv = post(&app, "/api/v1/invoices", &admin, json!({"client_id": t.org.client, "lines": line})).await;
    assert_eq!(inv.body["data"]["tax_rate_bp"], 1900, "{}", inv.body);
    assert_eq!(inv.body["data"]["tax_minor"], 1900);
    assert_eq!(inv.body["data"]["payment_terms_days"], 14);

    for (body, field) in [
        (json!({"invoice_prefix": "IN-V"}), "invoice_prefix"),
        (json!({"invoice_prefix": ""}), "invoice_prefix"),
        (json!({"invoice_prefix": "ABCDEFGHIJK"}), "invoice_prefix"),
        (json!({"invoice_prefix": "ÄBC"}), "invoice_prefix"),
        (json!({"invoice_prefix": null}), "invoice_prefix"),
        (json!({"hourly_rate_minor": -1}), "hourly_rate_minor"),
        (json!({"hourly_rate_minor": 100000000001_i64}), "hourly_rate_minor"),
        (json!({"hourly_rate_minor": "120.50"}), "hourly_rate_minor"),
        (json!({"payment_terms_days": 366}), "payment_terms_days"),
        (json!({"payment_terms_days": -1}), "payment_terms_days"),
        (json!({"default_tax_rate_bp": 10001}), "default_tax_rate_bp"),
        (json!({"currency": "XYZ"}), "currency"),
        (json!({"surprise": 1}), "surprise"),
    ] {
        patch(&app, "/api/v1/settings/invoicing", &admin, body.clone()).await.assert_problem_field(422, field);
    }
    // Nothing of the refused changes was written.
    assert_eq!(get(&app, "/api/v1/settings/invoicing", &admin).await.body["data"]["invoice_prefix"], "ACME7");
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_events WHERE action = 'organization.invoicing_changed'").await,
        2
    );
    // Managers and Members can't read or change them.
    for role in ["manager", "member"] {
        let key = api_key(&app, &t, role, None).await.1;
        assert_eq!(get(&app, "/api/v1/settings/invoicing", &key).await.status, 403, "{role}");
        patch(&app, "/api/v1/settings/invoicing", &key, json!({"invoice_prefix": "X"})).await.assert_problem(403);
    }
    assert_eq!(get(&app, "/api/v1/settings/invoicing", &admin).await.body["data"]["invoice_prefix"], "ACME7");
}

#[tokio::test]
async fn the_invoicing_page_saves_shows_inline_errors_and_is_closed_to_members_and_clients() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "invpage").await;
    let slug = org.slug.clone();
    let page = format!("/o/{slug}/settings/invoicing");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&page).await;
    assert_eq!(status, 200);
    assert!(html.contains("Invoice prefix") && html.contains("Default hourly rate"), "{html}");
    let fields = |prefix: &'static str, rate: &'static str, terms: &'static str, tax: &'static str| {
        vec![
            ("invoice_prefix", prefix),
            ("hourly_rate", rate),
            ("payment_terms_days", terms),
            ("default_tax_rate", tax),
            ("currency", "EUR"),
        ]
    };
    let res = owner.submit(&page, &page, &fields("Q", "120.50", "21", "7.5")).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    // One notice says so (the page once showed a second "Saved.").
    assert_eq!(html.matches("Invoicing settings saved.").count(), 1, "{html}");
    assert!(!html.contains(">Saved.<"), "{html}");
    assert!(
        html.contains("value=\"120.50\"") && html.contains("value=\"21\"") && html.contains("value=\"Q\""),
        "{html}"
    );
    // Bad values: 422, each field's message next to it, nothing written.
    let res = owner.submit(&page, &page, &fields("IN V", "12,50", "400", "101")).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    for id in ["invoicing-hourly-rate", "invoicing-payment-terms-days", "invoicing-default-tax-rate"] {
        assert!(html.contains(&format!("id=\"{id}-error\"")), "{id}: {html}");
    }
    assert!(html.contains("value=\"12,50\""), "what was typed is kept: {html}");
    let res = owner.submit(&page, &page, &fields("IN V", "1", "1", "1")).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("id=\"invoicing-invoice-prefix-error\""));
    assert_eq!(
        count(&app, "SELECT count(*) FROM audit_events WHERE action = 'organization.invoicing_changed'").await,
        1
    );
    let (prefix, rate): (String, Option<i64>) =
        sqlx::query_as("SELECT invoice_prefix, hourly_rate_minor FROM organizations WHERE slug = $1")
            .bind(&slug)
            .fetch_one(&mut app.db.admin_conn().await)
            .await
            .unwrap();
    assert_eq!((prefix.as_str(), rate), ("Q", Some(12050)));
    for role in ["manager", "member", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(b.get(&page).await.status(), 403, "{role}");
        let token = b.token();
        let res = b.post_with(&page, &fields("HACK", "1", "1", "1"), Some(&token), true).await;
        assert_eq!(res.status(), 403, "{role}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM organizations WHERE invoice_prefix = 'HACK'").await, 0);
}

#[tokio::test]
async fn rates_set_through_the_api_and_pages_resolve_person_project_client_organization() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "precedence").await;
    let admin = api_key(&app, &t, "admin", None).await.1;
    let project = t.org.project.as_uuid();
    let rate = |e: &Value| e["rate_minor"].as_i64();
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), None);
    patch(&app, "/api/v1/settings/invoicing", &admin, json!({"hourly_rate_minor": 5000})).await;
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), Some(5000));
    let res =
        patch(&app, &format!("/api/v1/clients/{}", t.org.client), &admin, json!({"hourly_rate_minor": 8000})).await;
    assert_eq!(res.body["data"]["hourly_rate_minor"], 8000, "{}", res.body);
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), Some(8000));
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &admin, json!({"hourly_rate_minor": 9000})).await;
    assert_eq!(res.body["data"]["hourly_rate_minor"], 9000, "{}", res.body);
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), Some(9000));
    // The person on the project (the key acts for the admin): the service the People tab uses.
    sql(
        &app,
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT DO NOTHING",
        &[t.org.id.as_uuid(), project, t.admin],
    )
    .await;
    let user: clientflow::platform::ids::UserId = t.admin.to_string().parse().unwrap();
    clientflow::work::projects::set_member_rate(
        &app.app_db,
        &ctx(&app),
        &t.org.principal,
        t.org.project,
        user,
        Some(9500),
    )
    .await
    .unwrap();
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), Some(9500));
    // Clearing the most specific falls back to the next one.
    clientflow::work::projects::set_member_rate(&app.app_db, &ctx(&app), &t.org.principal, t.org.project, user, None)
        .await
        .unwrap();
    patch(&app, &format!("/api/v1/projects/{project}"), &admin, json!({"hourly_rate_minor": null})).await;
    assert_eq!(rate(&record(&app, &admin, project, "1h").await), Some(8000));
    // Bad rates name their field; a Member can't set any.
    for path in [format!("/api/v1/clients/{}", t.org.client), format!("/api/v1/projects/{project}")] {
        patch(&app, &path, &admin, json!({"hourly_rate_minor": -5}))
            .await
            .assert_problem_field(422, "hourly_rate_minor");
        patch(&app, &path, &admin, json!({"hourly_rate_minor": 100000000001_i64}))
            .await
            .assert_problem_field(422, "hourly_rate_minor");
    }
    let member = api_key(&app, &t, "member", None).await.1;
    let res = patch(&app, &format!("/api/v1/clients/{}", t.org.client), &member, json!({"hourly_rate_minor": 1})).await;
    assert_eq!(res.status, 403, "{}", res.body);
    let audited = count(&app, "SELECT count(*) FROM audit_events WHERE action = 'project.member_rate_changed'").await;
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn a_new_prefix_numbers_the_next_invoice_sent_and_leaves_sent_ones_alone() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "prefix").await;
    let admin = api_key(&app, &t, "admin", None).await.1;
    let year = app.clock.now_utc().year();
    let line = json!([{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 100}]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = post(&app, "/api/v1/invoices", &admin, json!({"client_id": t.org.client, "lines": line})).await;
        ids.push(res.body["data"]["id"].as_str().unwrap().to_string());
    }
    let first = post(&app, &format!("/api/v1/invoices/{}/send", ids[0]), &admin, json!({})).await;
    assert_eq!(first.body["data"]["reference"], format!("INV-{year}-0001"));
    patch(&app, "/api/v1/settings/invoicing", &admin, json!({"invoice_prefix": "ACME"})).await;
    let second = post(&app, &format!("/api/v1/invoices/{}/send", ids[1]), &admin, json!({})).await;
    assert_eq!(second.body["data"]["reference"], format!("ACME-{year}-0002"), "{}", second.body);
    // The one sent before keeps its number everywhere.
    let again = get(&app, &format!("/api/v1/invoices/{}", ids[0]), &admin).await;
    assert_eq!(again.body["data"]["reference"], format!("INV-{year}-0001"));
    // A draft has no number until it is sent, under the prefix of that moment.
    let draft = get(&app, &format!("/api/v1/invoices/{}", ids[2]), &admin).await;
    assert_eq!(draft.body["data"]["reference"], Value::Null);
}

/// Sending numbers the invoice and queues its mail in one transaction: when the mail can't be
/// queued, the invoice stays a draft and its number is not used up; sent again, it takes the
/// first number and its mail is queued once.
#[tokio::test]
async fn a_send_whose_mail_cannot_be_queued_leaves_the_invoice_a_draft() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "atomic").await;
    let key = manager_key(&app, &t).await;
    let org = t.org.id.as_uuid();
    sql(&app, "UPDATE clients SET email = 'billing@atomic.test' WHERE organization_id = $1", &[org]).await;
    let line = json!([{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 100}]);
    let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": t.org.client, "lines": line})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let mut admin = app.db.admin_conn().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_mail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no mail'; END $$; \
         CREATE TRIGGER refuse_mail BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_mail();",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let failed = post(&app, &format!("/api/v1/invoices/{id}/send"), &key, json!({})).await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    let shown = get(&app, &format!("/api/v1/invoices/{id}"), &key).await;
    assert_eq!(shown.body["data"]["status"], "draft", "{}", shown.body);
    assert!(shown.body["data"]["reference"].is_null(), "{}", shown.body);
    sqlx::raw_sql("DROP TRIGGER refuse_mail ON outbox").execute(&mut admin).await.unwrap();
    let sent = post(&app, &format!("/api/v1/invoices/{id}/send"), &key, json!({})).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let year = app.clock.now_utc().year();
    assert_eq!(sent.body["data"]["reference"], format!("INV-{year}-0001"), "the failed send used up a number");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE recipient = 'billing@atomic.test'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn time_recorded_without_a_rate_is_flagged_and_billed_at_the_rate_that_applies_when_billed() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "unrated").await;
    let org_id: Uuid = org.id.parse().unwrap();
    let key = crate::support::api_key(&app, org_id, "billing").await;
    let project = Uuid::now_v7();
    sql(
        &app,
        "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, 'Unrated project')",
        &[org_id, project, org.client_id.parse().unwrap()],
    )
    .await;
    // No rate anywhere: the entry records none.
    let entry = record(&app, &key, project, "1h30m").await;
    assert_eq!(entry["rate_minor"], Value::Null, "{entry}");
    let invoice = {
        let res = post(&app, "/api/v1/invoices", &key, json!({"client_id": org.client_id})).await;
        assert_eq!(res.status, 201, "{}", res.body);
        res.body["data"]["id"].as_str().unwrap().to_string()
    };
    let page = format!("/o/{}/invoices/{invoice}", org.slug);
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&page).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"unrated-time\"") && html.contains("1 entry has"), "{html}");
    assert!(html.contains("no rate"), "{html}");

    // A default rate set afterwards: the page shows it as today's rate, the warning goes, and
    // billing uses it and keeps it on the entry.
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 9000 WHERE id = $1", &[org_id]).await;
    let (_, html) = owner.page(&page).await;
    assert!(!html.contains("id=\"unrated-time\""), "{html}");
    assert!(html.contains("90.00 (today&#39;s rate)"), "{html}");
    let res = post(&app, &format!("/api/v1/invoices/{invoice}/time"), &key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["lines"][0]["unit_price_minor"], 9000, "{}", res.body);
    assert_eq!(res.body["data"]["subtotal_minor"], 13500, "{}", res.body);
    let billed = get(&app, &format!("/api/v1/time-entries/{}", entry["id"].as_str().unwrap()), &key).await;
    assert_eq!(billed.body["data"]["rate_minor"], 9000, "{}", billed.body);
    assert_eq!(billed.body["data"]["invoice_id"], json!(invoice));

    // A rate recorded on an entry stays, whatever applies today.
    let kept = record(&app, &key, project, "1h").await;
    assert_eq!(kept["rate_minor"], 9000);
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 20000 WHERE id = $1", &[org_id]).await;
    let second = post(&app, "/api/v1/invoices", &key, json!({"client_id": org.client_id})).await.body["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = post(&app, &format!("/api/v1/invoices/{second}/time"), &key, json!({})).await;
    assert_eq!(res.body["data"]["lines"][0]["unit_price_minor"], 9000, "{}", res.body);
}

/// One time entry for [`entry`].
struct Entry<'a> {
    minutes: i32,
    billable: bool,
    rate: Option<i64>,
    note: &'a str,
}

/// Inserts one time entry on `project` by `user`, today.
async fn entry(app: &TestApp, org: Uuid, project: Uuid, user: Uuid, e: Entry<'_>) {
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, note, created_at, billable, rate_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9)",
    )
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(user)
    .bind(e.minutes)
    .bind(app.clock.now_utc().date())
    .bind(e.note)
    .bind(e.billable)
    .bind(e.rate)
    .execute(&mut db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_project_budget_shows_what_its_billable_time_used_to_the_team_and_never_to_the_client() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "budgetco").await;
    // Seven billable half hours at 60.00 an hour: 210.00.
    let project = web_fixture(&app, &org).await;
    let slug = org.slug.clone();
    let org_id: Uuid = org.id.parse().unwrap();
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    sql(&app, "UPDATE projects SET budget_minor = 50000, visible_to_client = true WHERE id = $1", &[project]).await;
    // Each entry is rounded as the report and invoices round it: 7 minutes at 10.00 an hour is
    // 1.17, twice 2.34 (the sum of the minutes, rounded once, would be 2.33).
    entry(&app, org_id, project, member, Entry { minutes: 7, billable: true, rate: Some(1000), note: "" }).await;
    entry(&app, org_id, project, member, Entry { minutes: 7, billable: true, rate: Some(1000), note: "" }).await;
    // Time not billable, and billable time without a rate, count for nothing; the page says
    // how many entries had no rate.
    entry(&app, org_id, project, member, Entry { minutes: 600, billable: false, rate: Some(6000), note: "" }).await;
    entry(&app, org_id, project, member, Entry { minutes: 60, billable: true, rate: None, note: "" }).await;
    let page = format!("/o/{slug}/projects/{project}");
    for who in ["owner", "member"] {
        let b = &mut org.people.get_mut(who).unwrap().browser;
        let (status, html) = b.page(&page).await;
        assert_eq!(status, 200);
        assert!(html.contains("Budget USD 500.00:</strong> 212.34 used (42%), 287.66 left."), "{who}: {html}");
        assert!(html.contains("value=\"42\"") && html.contains("1 billable entry has no rate"), "{who}: {html}");
        assert!(!html.contains("budget caution"), "{who}: not over yet");
        let (_, list) = b.page(&format!("/o/{slug}/projects")).await;
        assert!(list.contains("<td>42% used</td>"), "{who}: {list}");
        let (_, home) = b.page(&format!("/o/{slug}")).await;
        assert!(home.contains("Formula project") && !home.contains("over budget"), "{who}: {home}");
    }
    // A project without a budget shows none.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    // The form says which currency a budget is in.
    let (_, form) = owner.page(&format!("/o/{slug}/projects/{project}/edit")).await;
    assert!(form.contains("Budget in USD (optional, like 1500.00)") && form.contains("value=\"500.00\""), "{form}");
    let plain = {
        let id = Uuid::now_v7();
        sql(&app, "INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, 'No budget')", &[org_id, id]).await;
        id
    };
    let (_, html) = owner.page(&format!("/o/{slug}/projects/{plain}")).await;
    assert!(!html.contains("id=\"budget\"") && !html.contains("<meter"), "{html}");
    // A budget with no time recorded against it yet has used nothing.
    sql(&app, "UPDATE projects SET budget_minor = 75000 WHERE id = $1", &[plain]).await;
    let (_, html) = owner.page(&format!("/o/{slug}/projects/{plain}")).await;
    assert!(html.contains("Budget USD 750.00:</strong> 0.00 used (0%), 750.00 left."), "{html}");

    // A full day at 60.00 takes it over: by 1152.34, 330 % of it.
    entry(&app, org_id, project, member, Entry { minutes: 1440, billable: true, rate: Some(6000), note: "" }).await;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("budget caution"), "{html}");
    assert!(html.contains("1652.34 used (330%), <strong>over by 1152.34</strong>."), "{html}");
    assert!(html.contains("value=\"100\""), "the meter stops at its end: {html}");
    let (_, list) = owner.page(&format!("/o/{slug}/projects")).await;
    assert!(list.contains("<td class=\"over-budget\">Over by 1152.34</td>"), "{list}");
    // The overview, where people land, says so beside the project.
    let (_, home) = owner.page(&format!("/o/{slug}")).await;
    assert!(home.contains("Formula project</a> <span class=\"muted\">· "), "{home}");
    assert!(home.contains("<strong class=\"late\">· over budget</strong>"), "{home}");
    // A budget of zero: anything used is over it, with no percentage.
    sql(&app, "UPDATE projects SET budget_minor = 0 WHERE id = $1", &[project]).await;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Budget USD 0.00:</strong> 1652.34 used, <strong>over by 1652.34</strong>."), "{html}");

    // The client's portal shows the project, and nothing of its money.
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let (status, portal) = client.page(&format!("/portal/{slug}/projects/{project}")).await;
    assert_eq!(status, 200, "{portal}");
    assert!(portal.contains("Formula project"), "{portal}");
    for money in ["Budget", "1652.34", "0.00", "<meter"] {
        assert!(!portal.contains(money), "{money} on the portal: {portal}");
    }
    assert_eq!(client.get(&page).await.status(), 403, "the staff page is closed to a client");
}

#[tokio::test]
async fn the_api_reports_a_project_budget_to_whoever_may_see_the_project() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "apibudget").await;
    let key = manager_key(&app, &t).await;
    let project = t.org.project;
    let path = format!("/api/v1/projects/{project}/budget");
    // No budget and no time yet.
    let res = get(&app, &path, &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body["data"],
        json!({"budget_minor": null, "used_minor": 0, "remaining_minor": null, "unrated_entries": 0, "currency": "USD",
               "expenses_minor": 0, "counts_expenses": false, "uncounted_expenses": 0})
    );
    // An hour without a rate, then two at 60.00: 120.00 used of a 100.00 budget.
    record(&app, &key, project.as_uuid(), "1h").await;
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 6000 WHERE id = $1", &[t.org.id.as_uuid()]).await;
    record(&app, &key, project.as_uuid(), "1h").await;
    record(&app, &key, project.as_uuid(), "1:00").await;
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_minor": 10000})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = get(&app, &path, &key).await;
    assert_eq!(
        res.body["data"],
        json!({"budget_minor": 10000, "used_minor": 12000, "remaining_minor": -2000, "unrated_entries": 1, "currency": "USD",
               "expenses_minor": 0, "counts_expenses": false, "uncounted_expenses": 0})
    );
    // A Member-role key sees it only once its person is on the project; another organization's
    // key never does, and neither learns whether the project exists.
    let member_key = api_key(&app, &t, "member", None).await.1;
    assert_eq!(get(&app, &path, &member_key).await.status, 404);
    join_project(&app, t.org.id.as_uuid(), project.as_uuid(), t.admin).await;
    assert_eq!(get(&app, &path, &member_key).await.body["data"]["used_minor"], 12000);
    let other = tenant(&app, "apibudget-other").await;
    let other_key = manager_key(&app, &other).await;
    assert_eq!(get(&app, &path, &other_key).await.status, 404);
    assert_eq!(get(&app, &format!("/api/v1/projects/{}/budget", Uuid::now_v7()), &key).await.status, 404);
    // A key without projects.read is refused.
    let narrow = api_key(&app, &t, "manager", Some(&["tasks.read"])).await.1;
    assert_eq!(get(&app, &path, &narrow).await.status, 403);
}

#[tokio::test]
async fn the_api_reports_what_a_client_owes_and_what_is_left_to_bill() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "apibalance").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let project = client_project(&app, &t, "Retainer").await;
    let path = format!("/api/v1/clients/{}/balance", t.org.client);
    let res = get(&app, &path, &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body["data"],
        json!({"owed": [], "unbilled_minutes": 0, "unbilled_minor": 0, "unrated_entries": 0, "currency": "USD", "unbilled_expenses": []})
    );
    // An hour no rate applies to; once the organization has a rate, it would be billed at it.
    record(&app, &key, project, "1h").await;
    let res = get(&app, &path, &key).await;
    assert_eq!(
        (res.body["data"]["unbilled_minutes"].as_i64(), res.body["data"]["unrated_entries"].as_i64()),
        (Some(60), Some(1))
    );
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 6000 WHERE id = $1", &[t.org.id.as_uuid()]).await;
    record(&app, &key, project, "0:30").await;
    sql(
        &app,
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, status, issue_date, due_date, \
         subtotal_minor, total_minor, created_at) VALUES ($1, $2, 1, $3, 'EUR', 'sent', '2020-01-01', '2020-01-31', 5000, 5000, now())",
        &[t.org.id.as_uuid(), Uuid::now_v7(), t.org.client.as_uuid()],
    )
    .await;
    let res = get(&app, &path, &key).await;
    assert_eq!(
        res.body["data"],
        json!({
            "owed": [{"currency": "EUR", "invoices": 1, "total_minor": 5000, "overdue": 1, "overdue_minor": 5000}],
            "unbilled_minutes": 90, "unbilled_minor": 9000, "unrated_entries": 0, "currency": "USD",
            "unbilled_expenses": []
        })
    );
    // A key without invoices.read is refused; another organization's key learns nothing.
    let narrow = api_key(&app, &t, "admin", Some(&["clients.read", "projects.read"])).await.1;
    assert_eq!(get(&app, &path, &narrow).await.status, 403);
    let other = tenant(&app, "apibalance-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    assert_eq!(get(&app, &path, &other_key).await.status, 404);
    assert_eq!(get(&app, &format!("/api/v1/clients/{}/balance", Uuid::now_v7()), &key).await.status, 404);
}

#[tokio::test]
async fn a_budget_counts_billable_expenses_in_its_currency_once_the_project_says_so_and_alerts_on_them() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "xbudget").await;
    let key = manager_key(&app, &t).await;
    let (project, org) = (t.org.project.as_uuid(), t.org.id.as_uuid());
    let manager = add_member(&app, &t.org, "manager").await;
    join_project(&app, org, project, manager).await;
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 6000 WHERE id = $1", &[org]).await;
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_minor": 10000})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["budget_counts_expenses"], false, "off until chosen");
    let path = format!("/api/v1/projects/{project}/budget");
    let spend = |amount: i64, billable: bool| {
        let (app, key) = (&app, &key);
        async move {
            app.clock.advance(time::Duration::seconds(1));
            let body =
                json!({"project_id": project, "category": "Travel", "amount_minor": amount, "billable": billable});
            let res = post(app, "/api/v1/expenses", key, body).await;
            assert_eq!(res.status, 201, "{}", res.body);
            res.id()
        }
    };

    // An hour at 60.00 and a billable 30.00 expense: the budget counts only the time.
    record(&app, &key, project, "1h").await;
    let travel = spend(3000, true).await;
    let budget = get(&app, &path, &key).await.body["data"].clone();
    assert_eq!((budget["used_minor"].as_i64(), budget["expenses_minor"].as_i64()), (Some(6000), Some(0)));
    assert!(budget_alerts(&app, manager).await.is_empty());

    // Counted from now on: 90.00 of 100.00, told at once, saying what counted.
    app.clock.advance(time::Duration::seconds(1));
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_counts_expenses": true})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        get(&app, &path, &key).await.body["data"],
        json!({"budget_minor": 10000, "used_minor": 9000, "remaining_minor": 1000, "unrated_entries": 0, "currency": "USD",
               "expenses_minor": 3000, "counts_expenses": true, "uncounted_expenses": 0})
    );
    let alerts = budget_alerts(&app, manager).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].1, "USD 90.00 of 100.00 used by billable time and expenses.");
    // An unbillable expense counts for nothing; a billable one in another currency neither (the
    // organization changed its own), and the budget says how many there are.
    spend(50000, false).await;
    sql(&app, "UPDATE organizations SET currency = 'EUR' WHERE id = $1", &[org]).await;
    let budget = get(&app, &path, &key).await.body["data"].clone();
    assert_eq!(
        (budget["used_minor"].as_i64(), budget["expenses_minor"].as_i64(), budget["uncounted_expenses"].as_i64()),
        (Some(6000), Some(0), Some(1))
    );
    sql(&app, "UPDATE organizations SET currency = 'USD' WHERE id = $1", &[org]).await;
    // Raised past the budget by changing the expense: over, told once.
    app.clock.advance(time::Duration::seconds(1));
    let res = patch(&app, &format!("/api/v1/expenses/{travel}"), &key, json!({"amount_minor": 4500})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let alerts = budget_alerts(&app, manager).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1].1, "USD 105.00 of 100.00 used by billable time and expenses.");
    spend(100, true).await;
    assert_eq!(budget_alerts(&app, manager).await.len(), 2, "over once");
    // Deleting the expenses brings it back under 80% (silently); a new one crossing is told again.
    let listed = get(&app, &format!("/api/v1/expenses?project_id={project}"), &key).await;
    for x in listed.body["data"].as_array().unwrap() {
        let res = delete(&app, &format!("/api/v1/expenses/{}", x["id"].as_str().unwrap()), &key).await;
        assert_eq!(res.status, 204, "{}", res.body);
    }
    assert_eq!(get(&app, &path, &key).await.body["data"]["used_minor"], 6000);
    spend(2500, true).await;
    let alerts = budget_alerts(&app, manager).await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[2].1, "USD 85.00 of 100.00 used by billable time and expenses.");
    // Stopped counting them: back to the time alone.
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_counts_expenses": false})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(get(&app, &path, &key).await.body["data"]["used_minor"], 6000);
    // null is refused, by name.
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_counts_expenses": null})).await;
    res.assert_problem_field(422, "budget_counts_expenses");
}

#[tokio::test]
async fn the_project_form_chooses_whether_the_budget_counts_expenses_and_the_page_says_what_counted() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "xbudgetweb").await;
    let project = web_fixture(&app, &org).await;
    let slug = org.slug.clone();
    sql(&app, "UPDATE projects SET budget_minor = 50000 WHERE id = $1", &[project]).await;
    // The fixture's seven billable half hours at 60.00: 210.00.
    let page = format!("/o/{slug}/projects/{project}");
    let expenses = format!("{page}/expenses");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res =
        owner.submit(&expenses, &expenses, &[("category", "Printing"), ("amount", "40"), ("billable", "yes")]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Budget USD 500.00:</strong> 210.00 used (42%), 290.00 left."), "{html}");
    assert!(!html.contains("billable expenses ("), "{html}");
    // The form offers the choice, unticked; ticked and saved, the page counts the expense.
    let edit = format!("{page}/edit");
    let (_, form) = owner.page(&edit).await;
    assert!(
        form.contains("<input type=\"checkbox\" name=\"budget_counts_expenses\" value=\"on\"> Count billable expenses"),
        "{form}"
    );
    let res = owner
        .submit(
            &edit,
            &edit,
            &[
                ("name", "Formula project"),
                ("status", "active"),
                ("budget", "500.00"),
                ("budget_counts_expenses", "on"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Budget USD 500.00:</strong> 250.00 used (50%), 250.00 left."), "{html}");
    assert!(html.contains("and its billable expenses (40.00 of it)."), "{html}");
    let (_, form) = owner.page(&edit).await;
    assert!(form.contains("name=\"budget_counts_expenses\" value=\"on\" checked"), "{form}");
    // Saved without it (a checkbox left unticked sends nothing): the time alone again.
    let res =
        owner.submit(&edit, &edit, &[("name", "Formula project"), ("status", "active"), ("budget", "500.00")]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("210.00 used (42%)"), "{html}");
    // A copy of the project keeps the choice.
    sql(&app, "UPDATE projects SET budget_counts_expenses = true WHERE id = $1", &[project]).await;
    let res = owner
        .submit(
            &format!("{page}/copy"),
            &format!("{page}/copy"),
            &[("name", "Formula again"), ("start_date", "2031-01-06")],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let copied: bool = sqlx::query_scalar("SELECT budget_counts_expenses FROM projects WHERE name = 'Formula again'")
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    assert!(copied);
}

#[tokio::test]
async fn the_to_invoice_page_lists_what_each_client_has_left_to_bill_and_starts_its_invoice() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "toinvoice").await;
    let slug = org.slug.clone();
    let org_id: Uuid = org.id.parse().unwrap();
    let client: Uuid = org.client_id.parse().unwrap();
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    // The fixture's seven billable half hours at 60.00 (210.00); an hour not billable; an hour
    // with no rate; a billable expense, and one that isn't.
    let project = web_fixture(&app, &org).await;
    entry(&app, org_id, project, member, Entry { minutes: 60, billable: false, rate: Some(6000), note: "" }).await;
    entry(&app, org_id, project, member, Entry { minutes: 60, billable: true, rate: None, note: "" }).await;
    let expenses = format!("/o/{slug}/projects/{project}/expenses");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    for (amount, billable) in [("40", "yes"), ("99", "no")] {
        let res = owner
            .submit(&expenses, &expenses, &[("category", "Printing"), ("amount", amount), ("billable", billable)])
            .await;
        assert_eq!(res.status(), 303);
    }
    // A second client, with nothing to bill, isn't listed.
    sql(
        &app,
        "INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, 'Quiet client')",
        &[org_id, Uuid::now_v7()],
    )
    .await;

    // Found from the invoices page.
    let (_, list) = owner.page(&format!("/o/{slug}/invoices")).await;
    let page = format!("/o/{slug}/invoices/uninvoiced");
    assert!(list.contains(&format!("<a href=\"{page}\">To invoice</a>")), "{list}");
    let (status, html) = owner.page(&page).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("<a href=\"/o/{slug}/clients/{client}\">toinvoice client</a>")), "{html}");
    assert!(
        html.contains(">4h 30m</td>") && html.contains("210.00 USD<br><span class=\"muted\">1 entry has no rate"),
        "{html}"
    );
    assert!(html.contains("40.00 USD (1 expense)") && !html.contains("99.00"), "{html}");
    assert!(!html.contains("Quiet client"), "{html}");
    assert!(html.contains(&format!("href=\"/o/{slug}/invoices/new?client_id={client}\"")), "{html}");
    // The client's balance reads the same sums.
    let (_, client_page) = owner.page(&format!("/o/{slug}/clients/{client}")).await;
    assert!(client_page.contains("40.00 USD of billable expenses not yet billed (1 expense)."), "{client_page}");

    // Billed, the client leaves the page.
    let invoice = crate::support::work::web_draft(owner, &slug, client).await;
    assert_eq!(owner.submit(&invoice, &format!("{invoice}/time"), &[]).await.status(), 303);
    assert_eq!(owner.submit(&invoice, &format!("{invoice}/expenses"), &[]).await.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Nothing waits to be billed"), "{html}");

    // Those who may not read invoices are refused; another organization finds nothing.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(m.get(&page).await.status(), 403);
    let c = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(c.get(&page).await.status(), 403);
    let mut other = org_with_every_role(&app, "toinvoice-other").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&page).await.status(), 404);
}

/// The budget alerts a person has, oldest first: (title, body, link).
async fn budget_alerts(app: &TestApp, person: Uuid) -> Vec<(String, String, String)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT title, body, link FROM notifications WHERE recipient_id = $1 AND kind = 'budget_used' \
         ORDER BY created_at, title",
    )
    .bind(person)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn budget_alerts_tell_who_answers_for_the_project_once_at_80_percent_and_once_over() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "alerts").await;
    // The Admin stands behind the key: it records the time, and is never told of its own doing.
    let key = manager_key(&app, &t).await;
    let project = t.org.project.as_uuid();
    let org = t.org.id.as_uuid();
    // Each entry a second after the one before: alerts are listed in the order they were made.
    let rec = |project: Uuid, duration: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            app.clock.advance(time::Duration::seconds(1));
            record(app, key, project, duration).await
        }
    };
    let manager = add_member(&app, &t.org, "manager").await;
    join_project(&app, org, project, manager).await;
    let elsewhere = add_member(&app, &t.org, "manager").await;
    let member = add_member(&app, &t.org, "member").await;
    join_project(&app, org, project, member).await;
    sql(&app, "UPDATE organizations SET hourly_rate_minor = 6000 WHERE id = $1", &[org]).await;
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_minor": 10000})).await;
    assert_eq!(res.status, 200, "{}", res.body);

    rec(project, "1h").await;
    assert!(budget_alerts(&app, manager).await.is_empty(), "60% tells nobody");
    let thirty = rec(project, "30m").await;
    let link = format!("/o/alerts/projects/{project}");
    let told = |title: &str, body: &str| (title.to_string(), body.to_string(), link.clone());
    let eighty = told("alerts project has used 80% of its budget", "USD 90.00 of 100.00 used by billable time.");
    assert_eq!(budget_alerts(&app, manager).await, vec![eighty.clone()]);
    rec(project, "5m").await;
    assert_eq!(budget_alerts(&app, manager).await.len(), 1, "told once");
    // Time not billable doesn't count.
    let res =
        post(&app, "/api/v1/time-entries", &key, json!({"project_id": project, "duration": "5h", "billable": false}))
            .await;
    assert_eq!(res.status, 201);
    assert_eq!(budget_alerts(&app, manager).await.len(), 1);
    let fifteen = rec(project, "15m").await;
    let over = told("alerts project is over its budget", "USD 110.00 of 100.00 used by billable time.");
    assert_eq!(budget_alerts(&app, manager).await, vec![eighty.clone(), over.clone()]);
    let hour = rec(project, "1h").await;
    assert_eq!(budget_alerts(&app, manager).await.len(), 2, "over once");
    // Nobody else: not the actor, not a Manager of other projects, not a Member.
    for (who, person) in [("the actor", t.admin), ("a manager elsewhere", elsewhere), ("a member", member)] {
        assert!(budget_alerts(&app, person).await.is_empty(), "{who} was told");
    }

    // Back under 80% (entries deleted: 65.00 used), the next crossing is told again.
    for e in [&fifteen, &thirty, &hour] {
        let res = delete(&app, &format!("/api/v1/time-entries/{}", e["id"].as_str().unwrap()), &key).await;
        assert_eq!(res.status, 204);
    }
    rec(project, "1m").await;
    assert_eq!(budget_alerts(&app, manager).await.len(), 2, "66% tells nobody");
    rec(project, "30m").await;
    let again = budget_alerts(&app, manager).await;
    assert_eq!(again.len(), 3, "96% is told again");
    assert_eq!(again[2].1, "USD 96.00 of 100.00 used by billable time.");
    // A budget lowered under what is used tells it at once; raised, nothing is said.
    app.clock.advance(time::Duration::seconds(1));
    let res = patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_minor": 5000})).await;
    assert_eq!(res.status, 200);
    let alerts = budget_alerts(&app, manager).await;
    assert_eq!(alerts.len(), 4);
    assert_eq!(alerts[3].0, "alerts project is over its budget");
    patch(&app, &format!("/api/v1/projects/{project}"), &key, json!({"budget_minor": 100000})).await;
    assert_eq!(budget_alerts(&app, manager).await.len(), 4);

    // Two entries that cross together, recorded at the same moment: 45.00 each on a budget of
    // 100.00. The first transaction records its entry and checks (45%: nothing), holding the
    // project; the second, an API request, records its own and waits at its check until the
    // first commits, then counts both (90%) and tells it. Without the wait each would count only
    // its own entry and nobody would be told.
    let res = post(&app, "/api/v1/projects", &key, json!({"name": "Rush", "budget_minor": 10000})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let rush: Uuid = res.body["data"]["id"].as_str().unwrap().parse().unwrap();
    join_project(&app, org, rush, manager).await;
    let mut first = clientflow::access::OrgTx::begin(&app.app_db, &t.org.principal).await.unwrap();
    sqlx::query(
        "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, note, created_at, billable, rate_minor) \
         VALUES ($1, $2, $3, $4, 45, $5, '', now(), true, 6000)",
    )
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(rush)
    .bind(t.admin)
    .bind(app.clock.now_utc().date())
    .execute(&mut *first)
    .await
    .unwrap();
    let rush_id = rush.to_string().parse().unwrap();
    clientflow::work::projects::check_budget_alert(&mut first, rush_id, None, app.clock.now_utc()).await.unwrap();
    let second = async {
        record(&app, &key, rush, "45m").await;
        std::time::Instant::now()
    };
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let at = std::time::Instant::now();
        first.commit().await.unwrap();
        at
    };
    let (second_done, committed) = tokio::join!(second, commit);
    assert!(second_done > committed, "the second check waited for the first transaction");
    let rush_link = format!("/o/alerts/projects/{rush}");
    let rush_alerts: Vec<_> =
        budget_alerts(&app, manager).await.into_iter().filter(|a| a.2 == rush_link).map(|a| (a.0, a.1)).collect();
    assert_eq!(
        rush_alerts,
        vec![("Rush has used 80% of its budget".to_string(), "USD 90.00 of 100.00 used by billable time.".to_string())]
    );
}

#[tokio::test]
async fn a_clients_page_says_what_it_owes_and_what_is_left_to_bill() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "balance").await;
    // 3h 30m of billable time at 60.00 an hour: 210.00.
    let project = web_fixture(&app, &org).await;
    let org_id: Uuid = org.id.parse().unwrap();
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    // Billable time no rate applies to counts as time, not money; time not billable not at all.
    entry(&app, org_id, project, member, Entry { minutes: 15, billable: true, rate: None, note: "No rate" }).await;
    entry(&app, org_id, project, member, Entry { minutes: 45, billable: false, rate: Some(6000), note: "Internal" })
        .await;
    let other = Uuid::now_v7();
    sql(&app, "INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, 'Quiet client')", &[org_id, other])
        .await;
    let today = app.clock.now_utc().date();
    let mut db = app.db.admin_conn().await;
    let currency: String = sqlx::query_scalar("SELECT currency FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let client: Uuid = org.client_id.parse().unwrap();
    for (number, client, currency, status, total, due_in) in [
        (1, client, "EUR", "sent", 123_450, -1),
        (2, client, "EUR", "sent", 12_400, 10),
        (3, client, "USD", "sent", 5_000, 10),
        (4, client, "EUR", "paid", 999, 0),
        (5, client, "EUR", "void", 777, -5),
        (6, other, "EUR", "paid", 4_000, -5),
    ] {
        let invoice = StoredInvoice { number, currency, status, total, due_in };
        insert_invoice(&mut db, org_id, client, today, invoice).await;
    }
    sqlx::query(
        "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, total_minor, created_at) \
         VALUES ($1, $2, $3, 'EUR', $4, $4, 50000, now())",
    )
    .bind(org_id)
    .bind(Uuid::now_v7())
    .bind(client)
    .bind(today)
    .execute(&mut db)
    .await
    .unwrap();

    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&format!("/o/{slug}/clients/{client}")).await;
    assert_eq!(status, 200, "{html}");
    let money = html.split("<h2 id=\"money\">Money</h2>").nth(1).unwrap_or_else(|| panic!("{html}"));
    let money = money.split("</section>").next().unwrap();
    assert!(
        money.contains(
            "<p>1358.50 EUR owed on 2 sent invoices, <strong class=\"late\">1234.50 EUR overdue</strong>.</p>"
        ),
        "the draft, the paid and the void invoices are not owed: {money}"
    );
    assert!(money.contains("<p>50.00 USD owed on 1 sent invoice.</p>"), "{money}");
    assert!(
        money.contains(&format!(
            "<p>3h 45m of billable time not yet billed, worth 210.00 {currency} at the rates that apply \
             (1 entry without a rate counts as nothing).</p>"
        )),
        "{money}"
    );
    // Billed time is no longer waiting.
    sqlx::query("UPDATE time_entries SET billable = false WHERE note = 'No rate'").execute(&mut db).await.unwrap();
    let (_, html) = owner.page(&format!("/o/{slug}/clients/{client}")).await;
    assert!(
        html.contains(&format!(
            "<p>3h 30m of billable time not yet billed, worth 210.00 {currency} at the rates that apply.</p>"
        )),
        "{html}"
    );
    let (_, html) = owner.page(&format!("/o/{slug}/clients/{other}")).await;
    assert!(
        html.contains("<p>Nothing owed: no sent invoice waits to be paid.</p>")
            && html.contains("<p>No billable time waits to be billed.</p>"),
        "{html}"
    );
    assert!(html.contains("<dt>Email</dt><dd><span class=\"muted\">Not given</span></dd>"), "{html}");
    // The list says it too, client by client.
    let (_, list) = owner.page(&format!("/o/{slug}/clients")).await;
    // Each amount owed links to the client's statement.
    let name: String = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT name FROM clients WHERE id = $1").bind(client).fetch_one(&mut db).await.unwrap()
    };
    let owed = |amount: &str| {
        format!("<a href=\"/o/{slug}/clients/{client}/statement\" title=\"{name}: statement\">{amount}</a>")
    };
    assert!(
        list.contains(&format!(
            "<td class=\"num\">{} <span class=\"late\">(1234.50 overdue)</span><br>{}</td>",
            owed("1358.50 EUR"),
            owed("50.00 USD")
        )),
        "{list}"
    );
    assert!(list.contains("<td class=\"num\"><span class=\"muted\">Nothing</span></td>"), "the quiet client: {list}");
    // Who may not read invoices sees no money; a foreign organization gets nothing.
    let member_browser = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = member_browser.page(&format!("/o/{slug}/clients/{client}")).await;
    assert!(status == 200 && !html.contains("id=\"money\"") && !html.contains("owed"), "{status} {html}");
    let (_, list) = member_browser.page(&format!("/o/{slug}/clients")).await;
    assert!(!list.contains("Owed") && !list.contains("1358.50"), "{list}");
    let mut stranger = org_with_every_role(&app, "balancestranger").await;
    let stranger = &mut stranger.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.page(&format!("/o/{slug}/clients/{client}")).await.0, 404);
}

#[tokio::test]
async fn an_invoice_is_duplicated_as_a_draft_issued_today_that_bills_no_time() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "duplicate").await;
    let key = manager_key(&app, &t).await;
    sql(&app, "UPDATE clients SET hourly_rate_minor = 10000 WHERE id = $1", &[t.org.client.as_uuid()]).await;
    let project = t.org.project.as_uuid();
    let today = app.clock.now_utc().date();

    // The source: time billed into it, a line typed by hand, a tax rate, notes, 14 days' terms,
    // sent and part-paid, issued long ago.
    record(&app, &key, project, "1h30m").await;
    let res = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": t.org.client, "currency": "EUR", "tax_rate_bp": 1900, "notes": "Retainer, monthly",
               "issue_date": "2026-01-05", "payment_terms_days": 14,
               "lines": [{"description": "Hosting", "quantity_milli": 1000, "unit_price_minor": 5000}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let source = res.body["data"]["id"].as_str().unwrap().to_string();
    let res = post(&app, &format!("/api/v1/invoices/{source}/time"), &key, json!({"group": "entry"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(post(&app, &format!("/api/v1/invoices/{source}/send"), &key, json!({})).await.status, 200);
    let res = post(&app, &format!("/api/v1/invoices/{source}/payments"), &key, json!({"amount_minor": 100})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let billed_before = count(&app, "SELECT count(*) FROM time_entries WHERE invoice_id IS NOT NULL").await;
    assert_eq!(billed_before, 1);

    // The copy: a draft of the same client, currency, tax, notes and lines, issued today with
    // the same terms, unnumbered, owing its whole total and billing no time.
    let res = post(&app, &format!("/api/v1/invoices/{source}/duplicate"), &key, json!({})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let copy = &res.body["data"];
    let copy_id = copy["id"].as_str().unwrap().to_string();
    assert_ne!(copy_id, source);
    assert_eq!(res.headers["location"], format!("/api/v1/invoices/{copy_id}"));
    let original = get(&app, &format!("/api/v1/invoices/{source}"), &key).await.body["data"].clone();
    for field in
        ["client_id", "currency", "tax_rate_bp", "notes", "lines", "subtotal_minor", "tax_minor", "total_minor"]
    {
        assert_eq!(copy[field], original[field], "{field}");
    }
    assert_eq!(copy["lines"].as_array().unwrap().len(), 2, "{copy}");
    assert_eq!(
        (copy["status"].as_str(), copy["number"].as_i64(), copy["paid_minor"].as_i64()),
        (Some("draft"), None, Some(0))
    );
    assert_eq!(copy["balance_minor"], copy["total_minor"]);
    assert_eq!(copy["issue_date"], today.to_string());
    assert_eq!(copy["due_date"], (today + time::Duration::days(14)).to_string());
    assert_eq!(copy["payment_terms_days"], 14);
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries WHERE invoice_id IS NOT NULL").await, billed_before);
    assert_eq!(
        (original["status"].as_str(), original["paid_minor"].as_i64()),
        (Some("overdue"), Some(100)),
        "the source is left as it was: sent long ago, part-paid"
    );
    // Audited as a creation that names its source.
    let mut db = app.db.admin_conn().await;
    let copied_from: Option<String> = sqlx::query_scalar(
        "SELECT after ->> 'copied_from' FROM audit_events WHERE action = 'invoice.created' AND target_id = $1",
    )
    .bind(&copy_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(copied_from.as_deref(), Some(source.as_str()));

    // Who may: a key that only reads invoices can't; another organization's key finds nothing;
    // an invoice that isn't there is a 404.
    let reader = api_key(&app, &t, "admin", Some(&["invoices.read"])).await.1;
    assert_eq!(post(&app, &format!("/api/v1/invoices/{source}/duplicate"), &reader, json!({})).await.status, 403);
    let other = tenant(&app, "duplicate-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    assert_eq!(post(&app, &format!("/api/v1/invoices/{source}/duplicate"), &other_key, json!({})).await.status, 404);
    let nowhere = format!("/api/v1/invoices/{}/duplicate", Uuid::now_v7());
    assert_eq!(post(&app, &nowhere, &key, json!({})).await.status, 404);
    assert_eq!(count(&app, "SELECT count(*) FROM invoices").await, 2, "nothing else was created");
}

#[tokio::test]
async fn the_invoice_page_duplicates_an_invoice_and_opens_the_copy() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "dup-page").await;
    let slug = org.slug.clone();
    let invoice = crate::support::work::fixture(&app, &org, "invoice", &[]).await.unwrap();
    let page = format!("/o/{slug}/invoices/{invoice}");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains(&format!("action=\"{page}/duplicate\"")), "{html}");
    let res = owner.submit(&page, &format!("{page}/duplicate"), &[]).await;
    assert_eq!(res.status(), 303);
    let copy = location(&res);
    assert!(copy.starts_with(&format!("/o/{slug}/invoices/")) && copy != page, "{copy}");
    let (status, html) = owner.page(&copy).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Copied as a new draft, issued today: check it, then send it."), "{html}");
    assert!(html.contains(&format!("href=\"{copy}/edit\"")), "the copy is a draft: {html}");
    // A Member may not create invoices: no button, and the action is refused.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    member.page(&format!("/o/{slug}")).await;
    let token = member.token();
    let res = member.post_with(&format!("{page}/duplicate"), &[], Some(&token), true).await;
    assert_eq!(res.status(), 403);
}
