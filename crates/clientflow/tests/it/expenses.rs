//! Expenses: recorded on a project in the organization's currency, refused when malformed,
//! changed only by their author or someone who manages projects, billed onto a draft of the
//! project's client in the same currency exactly once (two concurrent requests: one wins),
//! fixed once billed and released by voiding or deleting the draft; the Expenses tab and the
//! invoice's "Add expenses" by role.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{Tenant, api_key, count, delete, get, patch, post, tenant};
use crate::support::orgs::org_with_every_role;
use crate::support::sql;

async fn record(app: &TestApp, key: &str, t: &Tenant, body: Value) -> Value {
    let mut body = body;
    body["project_id"] = json!(t.org.project);
    let res = post(app, "/api/v1/expenses", key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.body["data"].clone()
}

/// A draft to the tenant's client in `currency`; its id.
async fn draft(app: &TestApp, key: &str, t: &Tenant, currency: &str) -> String {
    let res = post(app, "/api/v1/invoices", key, json!({"client_id": t.org.client, "currency": currency})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.id()
}

#[tokio::test]
async fn expenses_are_checked_billed_once_in_their_currency_and_released_by_voiding() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "expenses").await;
    let key = api_key(&app, &t, "manager", None).await.1;
    let today = app.clock.now_utc().date();

    // Recorded in the organization's currency, for the key's member, billable by the project's default.
    let train = record(&app, &key, &t, json!({"category": " Travel ", "amount_minor": 4250, "note": "Train"})).await;
    assert_eq!(
        (&train["category"], &train["amount_minor"], &train["currency"], &train["billable"], &train["spent_on"]),
        (&json!("Travel"), &json!(4250), &json!("USD"), &json!(true), &json!(today.to_string()))
    );
    assert_eq!(train["user_id"], json!(t.admin));
    let id = train["id"].as_str().unwrap().to_string();
    assert_eq!(get(&app, &format!("/api/v1/expenses/{id}"), &key).await.body["data"], train);
    let listed = get(&app, &format!("/api/v1/expenses?project_id={}", t.org.project), &key).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    let lunch = record(&app, &key, &t, json!({"category": "Meals", "amount_minor": 1800, "billable": false})).await;

    // Malformed input names its field and writes nothing.
    let project = t.org.project.to_string();
    for (body, field) in [
        (json!({"project_id": project, "category": "Travel", "amount_minor": 0}), "amount_minor"),
        (json!({"project_id": project, "category": "Travel", "amount_minor": -5}), "amount_minor"),
        (json!({"project_id": project, "category": "Travel", "amount_minor": 100_000_000_001_i64}), "amount_minor"),
        (json!({"project_id": project, "category": "  ", "amount_minor": 100}), "category"),
        (json!({"project_id": project, "category": "Tra\u{0}vel", "amount_minor": 100}), "category"),
        (json!({"project_id": project, "category": "x".repeat(101), "amount_minor": 100}), "category"),
        (json!({"project_id": project, "category": "Travel", "amount_minor": 100, "note": "n".repeat(2001)}), "note"),
        (
            json!({"project_id": project, "category": "Travel", "amount_minor": 100, "spent_on": "2026-02-30"}),
            "spent_on",
        ),
        (json!({"project_id": Uuid::now_v7(), "category": "Travel", "amount_minor": 100}), "project_id"),
    ] {
        post(&app, "/api/v1/expenses", &key, body.clone()).await.assert_problem_field(422, field);
    }
    let unknown = post(
        &app,
        "/api/v1/expenses",
        &key,
        json!({"project_id": project, "category": "T", "amount_minor": 1, "x": 1}),
    )
    .await;
    assert!(matches!(unknown.status, 400 | 422), "{}", unknown.body);
    let read_only = api_key(&app, &t, "manager", Some(&["projects.read"])).await.1;
    post(&app, "/api/v1/expenses", &read_only, json!({"project_id": project, "category": "T", "amount_minor": 1}))
        .await
        .assert_problem(403);
    patch(&app, &format!("/api/v1/expenses/{id}"), &key, json!({"amount_minor": 0}))
        .await
        .assert_problem_field(422, "amount_minor");
    patch(&app, &format!("/api/v1/expenses/{id}"), &key, json!({"category": null})).await.assert_problem(422);
    assert_eq!(count(&app, "SELECT count(*) FROM expenses").await, 2);
    let changed =
        patch(&app, &format!("/api/v1/expenses/{id}"), &key, json!({"amount_minor": 4500, "note": "Train back"})).await;
    assert_eq!((changed.status, &changed.body["data"]["amount_minor"]), (200, &json!(4500)), "{}", changed.body);

    // Two drafts, the same expense: one wins, the other writes nothing.
    let (a, b) = (draft(&app, &key, &t, "USD").await, draft(&app, &key, &t, "USD").await);
    let body = json!({"expense_ids": [id]});
    let (path_a, path_b) = (format!("/api/v1/invoices/{a}/expenses"), format!("/api/v1/invoices/{b}/expenses"));
    let (ra, rb) = futures::join!(post(&app, &path_a, &key, body.clone()), post(&app, &path_b, &key, body.clone()));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", ra.body, rb.body);
    let (winner, loser, won) = if ra.status == 200 { (&a, &b, &ra) } else { (&b, &a, &rb) };
    let lines = won.body["data"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["description"], json!(format!("Travel — expenses project: Train back ({today})")), "{lines:?}");
    assert_eq!((&lines[0]["quantity_milli"], &lines[0]["amount_minor"]), (&json!(1000), &json!(4500)));
    assert_eq!(won.body["data"]["total_minor"], json!(4500));
    let lost = get(&app, &format!("/api/v1/invoices/{loser}"), &key).await;
    assert_eq!(lost.body["data"]["lines"], json!([]));
    assert_eq!(get(&app, &format!("/api/v1/expenses/{id}"), &key).await.body["data"]["invoice_id"], json!(winner));
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action = 'invoice.expenses_billed'").await, 1);
    // Billed is fixed.
    patch(&app, &format!("/api/v1/expenses/{id}"), &key, json!({"note": "changed"})).await.assert_problem(409);
    delete(&app, &format!("/api/v1/expenses/{id}"), &key).await.assert_problem(409);
    // Nothing billable is left (lunch is not billable): a clear 409; an invoice in another
    // currency never takes a USD expense.
    post(&app, &path_a, &key, json!({})).await.assert_problem(409);
    let taxi = record(&app, &key, &t, json!({"category": "Travel", "amount_minor": 900})).await;
    let euros = draft(&app, &key, &t, "EUR").await;
    let refused = post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({})).await;
    refused.assert_problem(409);
    assert!(refused.body["detail"].as_str().unwrap_or_default().contains("EUR"), "{}", refused.body);
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({"expense_ids": [taxi["id"]]}))
        .await
        .assert_problem(409);
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({"expense_ids": [lunch["id"]]}))
        .await
        .assert_problem(409);
    // Bad filters name their field.
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({"expense_ids": []}))
        .await
        .assert_problem_field(422, "expense_ids");
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({"expense_ids": ["nope"]}))
        .await
        .assert_problem_field(422, "expense_ids[0]");
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({"from": "2026-02-01", "to": "2026-01-01"}))
        .await
        .assert_problem_field(422, "to");

    // Editing the draft's notes keeps the line's expense; voiding releases it.
    assert_eq!(patch(&app, &format!("/api/v1/invoices/{winner}"), &key, json!({"notes": "Thanks"})).await.status, 200);
    assert_eq!(get(&app, &format!("/api/v1/expenses/{id}"), &key).await.body["data"]["invoice_id"], json!(winner));
    assert_eq!(post(&app, &format!("/api/v1/invoices/{winner}/void"), &key, json!({})).await.status, 200);
    assert_eq!(get(&app, &format!("/api/v1/expenses/{id}"), &key).await.body["data"]["invoice_id"], Value::Null);
    // Billed again, everything at once, then the draft deleted: released again.
    let res = post(&app, &format!("/api/v1/invoices/{loser}/expenses"), &key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["total_minor"], json!(5400));
    assert_eq!(delete(&app, &format!("/api/v1/invoices/{loser}"), &key).await.status, 204);
    assert_eq!(count(&app, "SELECT count(*) FROM expenses WHERE invoice_id IS NOT NULL").await, 0);
    assert_eq!(delete(&app, &format!("/api/v1/expenses/{id}"), &key).await.status, 204);
    get(&app, &format!("/api/v1/expenses/{id}"), &key).await.assert_problem(404);
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action LIKE 'expense.%'").await, 5);

    // Another organization's key finds none of it.
    let other = tenant(&app, "expenses-other").await;
    let stranger = api_key(&app, &other, "admin", None).await.1;
    let taxi_path = format!("/api/v1/expenses/{}", taxi["id"].as_str().unwrap());
    get(&app, &taxi_path, &stranger).await.assert_problem(404);
    patch(&app, &taxi_path, &stranger, json!({"note": "mine"})).await.assert_problem(404);
    delete(&app, &taxi_path, &stranger).await.assert_problem(404);
    post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &stranger, json!({})).await.assert_problem(404);
    assert_eq!(get(&app, "/api/v1/expenses", &stranger).await.body["data"], json!([]));
    post(&app, "/api/v1/expenses", &stranger, json!({"project_id": project, "category": "T", "amount_minor": 1}))
        .await
        .assert_problem_field(422, "project_id");
}

#[tokio::test]
async fn a_recorded_expense_keeps_its_currency_when_the_organization_changes_its_own() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "expense-currency").await;
    let key = api_key(&app, &t, "manager", None).await.1;
    let usd = record(&app, &key, &t, json!({"category": "Stock photos", "amount_minor": 2999})).await;
    sql(&app, "UPDATE organizations SET currency = 'EUR' WHERE id = $1", &[t.org.id.as_uuid()]).await;
    let eur = record(&app, &key, &t, json!({"category": "Stock photos", "amount_minor": 1999})).await;
    assert_eq!((&usd["currency"], &eur["currency"]), (&json!("USD"), &json!("EUR")));
    // The client's balance counts them per currency.
    let balance = format!("/api/v1/clients/{}/balance", t.org.client);
    assert_eq!(
        get(&app, &balance, &key).await.body["data"]["unbilled_expenses"],
        json!([{"currency": "EUR", "expenses": 1, "amount_minor": 1999},
               {"currency": "USD", "expenses": 1, "amount_minor": 2999}])
    );
    // Each goes only on an invoice in its own currency.
    let euros = draft(&app, &key, &t, "EUR").await;
    let res = post(&app, &format!("/api/v1/invoices/{euros}/expenses"), &key, json!({})).await;
    assert_eq!((res.status, &res.body["data"]["total_minor"]), (200, &json!(1999)), "{}", res.body);
    let dollars = draft(&app, &key, &t, "USD").await;
    let res = post(&app, &format!("/api/v1/invoices/{dollars}/expenses"), &key, json!({})).await;
    assert_eq!((res.status, &res.body["data"]["total_minor"]), (200, &json!(2999)), "{}", res.body);
    assert_eq!(get(&app, &balance, &key).await.body["data"]["unbilled_expenses"], json!([]));
}

#[tokio::test]
async fn the_expenses_tab_records_refuses_and_deletes_by_role_and_the_invoice_bills_them() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "expenseweb").await;
    let (org_id, client): (Uuid, Uuid) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let project = crate::support::work::project_with_member(&app, org_id, client, "Brochure", member).await;
    let slug = org.slug.clone();
    let tab = format!("/o/{slug}/projects/{project}/expenses");

    // The Member records one from the tab: back to the tab, which shows it and its total.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = m.page(&format!("/o/{slug}/projects/{project}")).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("href=\"/o/{slug}/projects/{project}/expenses\"")), "no Expenses tab: {html}");
    let res = m
        .submit(&tab, &tab, &[("category", "Printing"), ("amount", "120.5"), ("note", "Proofs"), ("billable", "")])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), tab);
    let (_, html) = m.page(&tab).await;
    assert!(html.contains("Expense recorded."), "{html}");
    assert!(html.contains("Printing") && html.contains("Proofs") && html.contains("120.50 USD"), "{html}");
    assert!(html.contains("Billable") && html.contains("Delete"), "{html}");
    // The category is offered again.
    assert!(html.contains("<option value=\"Printing\">"), "{html}");
    // Typed wrong: 422, the field named, what was typed kept, nothing written.
    for (amount, category, says) in [
        ("12,50", "Printing", "must be a number with at most 2 decimals"),
        ("0", "Printing", "must be more than 0"),
        ("1.234", "Printing", "must be a number with at most 2 decimals"),
        ("12", "", "is required"),
    ] {
        let res = m.submit(&tab, &tab, &[("category", category), ("amount", amount), ("note", "Typed")]).await;
        assert_eq!(res.status(), 422, "{amount} {category}");
        let html = res.text().await.unwrap();
        assert!(html.contains(says) && html.contains("aria-invalid=\"true\""), "{amount}: {html}");
        assert!(html.contains(&format!("value=\"{amount}\"")), "{amount}: {html}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM expenses").await, 1);

    // A receipt uploaded on the Files tab is attached from the row, and leads to the file.
    let receipt = Uuid::now_v7();
    crate::support::work::insert_files(
        &app,
        org_id.to_string().parse().unwrap(),
        project,
        &[(receipt, "proofs.pdf".into())],
        None,
    )
    .await;
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = m.page(&tab).await;
    assert!(html.contains("Attach receipt") && html.contains(">proofs.pdf</option>"), "{html}");
    let only: Uuid =
        sqlx::query_scalar("SELECT id FROM expenses").fetch_one(&mut app.db.admin_conn().await).await.unwrap();
    let res = m.submit(&tab, &format!("{tab}/{only}/receipt"), &[("receipt", &receipt.to_string())]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = m.page(&tab).await;
    assert!(
        html.contains("Receipt saved.")
            && html.contains(&format!("href=\"/o/{slug}/files/{receipt}/download\">Receipt</a>")),
        "{html}"
    );
    let res = m.submit(&tab, &format!("{tab}/{only}/receipt"), &[("receipt", &Uuid::now_v7().to_string())]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("is not a file of this expense"));

    // The Owner's expense: the Member can't delete it, a Manager can delete the Member's.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let res = o.submit(&tab, &tab, &[("category", "Travel"), ("amount", "30"), ("billable", "no")]).await;
    assert_eq!(res.status(), 303);
    let mut db = app.db.admin_conn().await;
    let ids: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, category FROM expenses ORDER BY created_at").fetch_all(&mut db).await.unwrap();
    let (printing, travel) = (ids[0].0, ids[1].0);
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = m.page(&tab).await;
    assert_eq!(html.matches("Delete this expense?").count(), 1, "only their own is deletable: {html}");
    assert!(html.contains("Not billable"), "{html}");
    let res = m.submit(&tab, &format!("{tab}/{travel}/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 403);
    // The Client sees no tab; another organization's member finds nothing.
    let c = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(c.get(&tab).await.status(), 403);
    let mut other = org_with_every_role(&app, "expenseother").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&tab).await.status(), 404);
    let res = stranger.submit("/orgs/new", &format!("{tab}/{printing}/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 404);

    // The client's page says what waits to be billed; on a draft of the client's, the Owner
    // adds the billable one; the unbillable one isn't offered.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = o.page(&format!("/o/{slug}/clients/{client}")).await;
    assert!(html.contains("120.50 USD of billable expenses not yet billed (1 expense)."), "{html}");
    let invoice = crate::support::work::web_draft(o, &slug, client).await;
    let (_, html) = o.page(&invoice).await;
    assert!(html.contains("Add expenses") && html.contains("Proofs"), "{html}");
    assert!(
        html.contains(&format!("value=\"{printing}\"")) && !html.contains(&format!("value=\"{travel}\"")),
        "{html}"
    );
    let res = o.submit(&invoice, &format!("{invoice}/expenses"), &[]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = o.page(&invoice).await;
    assert!(html.contains("Expenses added to the invoice."), "{html}");
    assert!(html.contains("Printing — Brochure: Proofs") && html.contains("120.50"), "{html}");
    assert!(html.contains("This client has no unbilled billable expenses in USD."), "{html}");
    // Billed: the tab links to the invoice and offers no Delete.
    let (_, html) = o.page(&tab).await;
    assert!(html.contains(&format!("<a href=\"{invoice}\">Billed</a>")), "{html}");
    let res = o.submit(&tab, &format!("{tab}/{printing}/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 409);
    // A Manager deletes the Owner's unbilled one.
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let res = g.submit(&tab, &format!("{tab}/{travel}/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(count(&app, "SELECT count(*) FROM expenses").await, 1);
}

/// An expense recorded by `user` on `project` (today unless `on` names a day): (category,
/// amount in minor units, currency, note).
async fn spent(app: &TestApp, ids: [Uuid; 3], what: (&str, i64, &str, &str), on: Option<&str>) {
    let [org, project, user] = ids;
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, note, amount_minor, currency, \
         billable, created_at) VALUES ($1, $2, $3, $4, coalesce($9::date, current_date), $5, $6, $7, $8, true, now())",
    )
    .bind(org)
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(user)
    .bind(what.0)
    .bind(what.3)
    .bind(what.1)
    .bind(what.2)
    .bind(on)
    .execute(&mut db)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_expenses_report_totals_per_category_and_project_by_role_and_exports_neutralised_csv() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "expensereport").await;
    let (org_id, client): (Uuid, Uuid) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let owner: Uuid = org.people["owner"].user_id.parse().unwrap();
    let (brochure, launch) = (Uuid::now_v7(), Uuid::now_v7());
    let mut db = app.db.admin_conn().await;
    for (id, name) in [(brochure, "Brochure"), (launch, "Launch")] {
        sqlx::query("INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4)")
            .bind(org_id)
            .bind(id)
            .bind(client)
            .bind(name)
            .execute(&mut db)
            .await
            .unwrap();
    }
    sql(
        &app,
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())",
        &[org_id, brochure, member],
    )
    .await;
    spent(&app, [org_id, brochure, member], ("Travel", 1000, "USD", "=HYPERLINK(\"http://evil\")"), None).await;
    spent(&app, [org_id, brochure, member], ("Printing", 550, "USD", "Proofs"), None).await;
    spent(&app, [org_id, launch, owner], ("Travel", 2000, "EUR", "Flight"), None).await;
    spent(&app, [org_id, launch, owner], ("Travel", 99_999, "USD", "Long ago"), Some("2020-01-01")).await;
    spent(&app, [org_id, launch, owner], ("Legal", 50_000, "USD", "Settlement"), Some("2020-01-01")).await;
    let slug = org.slug.clone();
    let today = app.clock.now_utc().date();
    let report = format!("/o/{slug}/time/expenses?from={today}&to={today}");
    let export = format!("/o/{slug}/time/expenses.csv?from={today}&to={today}");

    // Found from the Time page; totals per currency, per category and per project.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = o.page(&format!("/o/{slug}/time")).await;
    assert!(html.contains(&format!("href=\"/o/{slug}/time/expenses\"")), "{html}");
    let (status, html) = o.page(&report).await;
    assert_eq!(status, 200);
    assert!(html.contains("<strong>20.00 EUR</strong>, <strong>15.50 USD</strong>"), "{html}");
    let category = |html: &str, name: &str| -> String {
        let section = html.split("<h2>Per category</h2>").nth(1).unwrap().split("</table>").next().unwrap();
        let row = section.split("<tr>").find(|r| r.contains(&format!(">{name}</th>"))).unwrap_or_default();
        row.split("</tr>").next().unwrap().to_string()
    };
    assert!(
        category(&html, "Travel").ends_with("<td class=\"num\">2</td><td class=\"num\">20.00 EUR<br>10.00 USD</td>"),
        "{html}"
    );
    assert!(category(&html, "Printing").ends_with("<td class=\"num\">1</td><td class=\"num\">5.50 USD</td>"), "{html}");
    assert!(html.contains("Launch") && html.contains("Flight") && !html.contains("Long ago"), "{html}");
    let res = o.get(&export).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("'=HYPERLINK") && csv.contains(",2000,20.00,EUR,yes,no,Flight"), "{csv}");
    for cell in csv.lines().flat_map(|l| l.split(',')) {
        assert!(!cell.trim_start_matches('"').starts_with(['=', '+', '@']), "a formula cell: {cell:?}");
    }
    // A range that runs backwards is refused, naming its end.
    let res = o.get(&format!("/o/{slug}/time/expenses?from={today}&to=2020-01-01")).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("must not be before from"));

    // A Member sees the projects they are on; a Client none of it; another organization nothing.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = m.page(&report).await;
    assert_eq!(status, 200);
    assert!(html.contains("<strong>15.50 USD</strong>") && !html.contains("Launch") && !html.contains("EUR"), "{html}");
    assert_eq!(m.get(&export).await.text().await.unwrap().lines().count(), 3);
    // The categories offered come from the projects one sees only.
    let (_, html) = m.page(&format!("/o/{slug}/projects/{brochure}/expenses")).await;
    assert!(html.contains("<option value=\"Printing\">") && !html.contains("Legal"), "{html}");
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = o.page(&format!("/o/{slug}/projects/{brochure}/expenses")).await;
    assert!(html.contains("<option value=\"Legal\">"), "{html}");
    let c = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(c.get(&report).await.status(), 403);
    assert_eq!(c.get(&export).await.status(), 403);
    let mut other = org_with_every_role(&app, "expensereportother").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&report).await.status(), 404);
}

/// The lines of an invoice as the API gives them, each as a line to send back.
async fn lines_of(app: &TestApp, key: &str, invoice: &str) -> Vec<Value> {
    let res = get(app, &format!("/api/v1/invoices/{invoice}"), key).await;
    res.body["data"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| json!({"description": l["description"], "quantity_milli": l["quantity_milli"], "unit_price_minor": l["unit_price_minor"]}))
        .collect()
}

async fn billed_line(app: &TestApp, table: &str, id: &Value) -> (Option<Uuid>, Option<i32>) {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(&format!("SELECT invoice_id, invoice_line FROM {table} WHERE id = $1::uuid"))
        .bind(id.as_str().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn what_a_line_bills_follows_it_when_other_lines_go_and_is_released_when_it_goes() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "relink").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let expense = record(&app, &key, &t, json!({"category": "Travel", "amount_minor": 4250})).await["id"].clone();
    let entry = post(&app, "/api/v1/time-entries", &key, json!({"project_id": t.org.project, "minutes": 60})).await;
    assert_eq!(entry.status, 201, "{}", entry.body);
    let entry = entry.body["data"]["id"].clone();
    let res = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": t.org.client, "currency": "USD",
               "lines": [{"description": "Design", "quantity_milli": 1000, "unit_price_minor": 10_000}]}),
    )
    .await;
    let invoice = res.id();
    let invoice_id: Uuid = invoice.parse().unwrap();
    assert_eq!(post(&app, &format!("/api/v1/invoices/{invoice}/time"), &key, json!({})).await.status, 200);
    assert_eq!(post(&app, &format!("/api/v1/invoices/{invoice}/expenses"), &key, json!({})).await.status, 200);
    assert_eq!(billed_line(&app, "time_entries", &entry).await, (Some(invoice_id), Some(1)));
    assert_eq!(billed_line(&app, "expenses", &expense).await, (Some(invoice_id), Some(2)));

    // The first line removed: the others move up, and so do the links.
    let lines = lines_of(&app, &key, &invoice).await;
    let path = format!("/api/v1/invoices/{invoice}");
    let res = patch(&app, &path, &key, json!({"lines": [lines[1], lines[2]]})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(billed_line(&app, "time_entries", &entry).await, (Some(invoice_id), Some(0)));
    assert_eq!(billed_line(&app, "expenses", &expense).await, (Some(invoice_id), Some(1)));
    // Reordered: each follows its text; nothing is left to bill twice.
    let res = patch(&app, &path, &key, json!({"lines": [lines[2], lines[1]]})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(billed_line(&app, "time_entries", &entry).await, (Some(invoice_id), Some(1)));
    assert_eq!(billed_line(&app, "expenses", &expense).await, (Some(invoice_id), Some(0)));
    post(&app, &format!("/api/v1/invoices/{invoice}/expenses"), &key, json!({})).await.assert_problem(409);
    post(&app, &format!("/api/v1/invoices/{invoice}/time"), &key, json!({})).await.assert_problem(409);

    // What it bills ties the draft to its client, and its expenses to its currency.
    let other = post(&app, "/api/v1/clients", &key, json!({"name": "Someone else"})).await.id();
    patch(&app, &path, &key, json!({"client_id": other})).await.assert_problem(409);
    patch(&app, &path, &key, json!({"currency": "EUR"})).await.assert_problem(409);
    assert_eq!(get(&app, &path, &key).await.body["data"]["currency"], json!("USD"));

    // The expense's line removed: released (and billable again); the time stays with its line.
    let res = patch(&app, &path, &key, json!({"lines": [lines[1]]})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(billed_line(&app, "expenses", &expense).await, (None, None));
    assert_eq!(billed_line(&app, "time_entries", &entry).await, (Some(invoice_id), Some(0)));
    let res = post(&app, &format!("/api/v1/invoices/{invoice}/expenses"), &key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(billed_line(&app, "expenses", &expense).await, (Some(invoice_id), Some(1)));
}

#[tokio::test]
async fn a_receipt_is_a_file_of_the_expenses_own_project_and_goes_when_the_file_goes() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "receipts").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let (receipt, elsewhere) = (Uuid::now_v7(), Uuid::now_v7());
    crate::support::work::insert_files(&app, t.org.id, t.org.project.as_uuid(), &[(receipt, "taxi.pdf".into())], None)
        .await;
    let other_project = post(&app, "/api/v1/projects", &key, json!({"name": "Other"})).await.id();
    crate::support::work::insert_files(
        &app,
        t.org.id,
        other_project.parse().unwrap(),
        &[(elsewhere, "x.pdf".into())],
        None,
    )
    .await;

    let x = record(&app, &key, &t, json!({"category": "Taxi", "amount_minor": 1500, "receipt_file_id": receipt})).await;
    assert_eq!(x["receipt_file_id"], json!(receipt));
    let path = format!("/api/v1/expenses/{}", x["id"].as_str().unwrap());
    // Another project's file, an unknown one, or a malformed id: refused by name.
    for bad in [json!(elsewhere), json!(Uuid::now_v7())] {
        patch(&app, &path, &key, json!({"receipt_file_id": bad})).await.assert_problem_field(422, "receipt_file_id");
        let mut body = json!({"category": "Taxi", "amount_minor": 1, "receipt_file_id": bad});
        body["project_id"] = json!(t.org.project);
        post(&app, "/api/v1/expenses", &key, body).await.assert_problem_field(422, "receipt_file_id");
    }
    patch(&app, &path, &key, json!({"receipt_file_id": "nope"})).await.assert_problem_field(422, "receipt_file_id");
    // A key that can't read files can't name one.
    let blind = api_key(&app, &t, "admin", Some(&["projects.read", "time.track"])).await.1;
    patch(&app, &path, &blind, json!({"receipt_file_id": receipt})).await.assert_problem(403);
    // Cleared with null, set again; the file deleted takes the receipt with it, not the expense.
    let res = patch(&app, &path, &key, json!({"receipt_file_id": null})).await;
    assert_eq!((res.status, &res.body["data"]["receipt_file_id"]), (200, &Value::Null), "{}", res.body);
    let res = patch(&app, &path, &key, json!({"receipt_file_id": receipt})).await;
    assert_eq!(res.body["data"]["receipt_file_id"], json!(receipt), "{}", res.body);
    assert_eq!(delete(&app, &format!("/api/v1/files/{receipt}"), &key).await.status, 204);
    let res = get(&app, &path, &key).await;
    assert_eq!((res.status, &res.body["data"]["receipt_file_id"]), (200, &Value::Null), "{}", res.body);
}
