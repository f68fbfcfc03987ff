//! Payments against invoices: an invoice paid in parts, what it still owes everywhere that
//! says what is owed, the amounts and dates refused, payments recorded at once that together
//! would pay too much, and deleting a payment recorded by mistake.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{api_key, delete, get, patch, post, tenant};
use crate::support::orgs::org_with_every_role;

/// A sent invoice of 100.00 EUR to the tenant's client, by the API; its id.
async fn sent_invoice(app: &TestApp, key: &str, client: &str) -> String {
    let res = post(
        app,
        "/api/v1/invoices",
        key,
        json!({"client_id": client, "currency": "EUR",
               "lines": [{"description": "Design", "quantity_milli": 1000, "unit_price_minor": 10_000}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let res = post(app, &format!("/api/v1/invoices/{id}/send"), key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    id
}

fn field_error(body: &Value, field: &str) -> String {
    body["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["field"] == field))
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no error on {field}: {body}"))
}

async fn audit_count(app: &TestApp, action: &str) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = $1")
        .bind(action)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_invoice_is_paid_in_parts_never_beyond_what_it_owes() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "payments").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let client = t.org.client.to_string();
    let invoice = sent_invoice(&app, &key, &client).await;
    let payments = format!("/api/v1/invoices/{invoice}/payments");
    let today = app.clock.now_utc().date();

    // A part, on an earlier day.
    let earlier = (today - time::Duration::days(3)).to_string();
    let res =
        post(&app, &payments, &key, json!({"amount_minor": 2500, "paid_on": earlier, "note": "Transfer 118"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let data = &res.body["data"];
    assert_eq!(
        (data["payment"]["amount_minor"].as_i64(), data["payment"]["paid_on"].as_str()),
        (Some(2500), Some(earlier.as_str()))
    );
    assert_eq!(
        (
            data["invoice"]["status"].as_str(),
            data["invoice"]["paid_minor"].as_i64(),
            data["invoice"]["balance_minor"].as_i64()
        ),
        (Some("sent"), Some(2500), Some(7500))
    );
    let res = get(&app, &format!("/api/v1/invoices/{invoice}"), &key).await;
    assert_eq!(
        (res.body["data"]["paid_minor"].as_i64(), res.body["data"]["balance_minor"].as_i64()),
        (Some(2500), Some(7500))
    );
    // What the client owes is what is left.
    let balance = get(&app, &format!("/api/v1/clients/{client}/balance"), &key).await;
    assert_eq!(balance.body["data"]["owed"][0]["total_minor"].as_i64(), Some(7500), "{}", balance.body);

    // Refused, each naming its field, and nothing written.
    let tomorrow = (today + time::Duration::days(1)).to_string();
    for (body, field, says) in [
        (json!({"amount_minor": 7501}), "amount_minor", "at most 75.00 EUR"),
        (json!({"amount_minor": 0}), "amount_minor", "more than 0"),
        (json!({"amount_minor": -5}), "amount_minor", ""),
        (json!({"amount_minor": "5"}), "amount_minor", ""),
        (json!({"amount_minor": 100, "paid_on": tomorrow}), "paid_on", "after today"),
        (json!({"amount_minor": 100, "paid_on": "2026-02-30"}), "paid_on", ""),
        (json!({"amount_minor": 100, "note": "nul\u{0}byte"}), "note", "NUL"),
        (json!({"amount_minor": 100, "note": "bell\u{7}"}), "note", "control characters"),
        (json!({"amount_minor": 100, "note": "x".repeat(501)}), "note", "too long"),
    ] {
        let res = post(&app, &payments, &key, body.clone()).await;
        assert_eq!(res.status, 422, "{body}: {}", res.body);
        assert!(field_error(&res.body, field).contains(says), "{body}: {}", res.body);
    }
    let res = post(&app, &payments, &key, json!({"amount_minor": 100, "paid_by": "me"})).await;
    assert!(matches!(res.status, 400 | 422), "unknown fields are refused: {}", res.body);
    let list = get(&app, &payments, &key).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "{}", list.body);

    // Ten payments of 10.00 at once against 75.00 owed: seven go through, three are refused,
    // and the invoice never owes less than nothing.
    let tries = join_all((0..10).map(|_| post(&app, &payments, &key, json!({"amount_minor": 1000})))).await;
    let mut statuses: Vec<u16> = tries.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 201, 201, 422, 422, 422],
        "{:?}",
        tries.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let res = get(&app, &format!("/api/v1/invoices/{invoice}"), &key).await;
    assert_eq!(
        (res.body["data"]["paid_minor"].as_i64(), res.body["data"]["balance_minor"].as_i64()),
        (Some(9500), Some(500))
    );

    // Without an amount: all that is left. The invoice is paid.
    let res = post(&app, &payments, &key, json!({})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["data"]["payment"]["amount_minor"].as_i64(), Some(500));
    assert_eq!(res.body["data"]["payment"]["paid_on"].as_str(), Some(today.to_string().as_str()));
    assert_eq!(res.body["data"]["invoice"]["status"].as_str(), Some("paid"));
    assert_eq!(res.body["data"]["invoice"]["balance_minor"].as_i64(), Some(0));
    let list = get(&app, &payments, &key).await;
    let amounts: Vec<i64> =
        list.body["data"].as_array().unwrap().iter().map(|p| p["amount_minor"].as_i64().unwrap()).collect();
    assert_eq!(amounts.iter().sum::<i64>(), 10_000);
    assert_eq!(amounts[0], 2500, "oldest first: {amounts:?}");
    let balance = get(&app, &format!("/api/v1/clients/{client}/balance"), &key).await;
    assert_eq!(balance.body["data"]["owed"], json!([]), "a paid invoice is not owed");
    post(&app, &payments, &key, json!({"amount_minor": 1})).await.assert_problem(409);
    post(&app, &format!("/api/v1/invoices/{invoice}/void"), &key, json!({})).await.assert_problem(409);

    // A payment recorded by mistake is deleted: the invoice is owed again.
    let last = list.body["data"][8]["id"].as_str().unwrap().to_string();
    let res = delete(&app, &format!("{payments}/{last}"), &key).await;
    assert_eq!(res.status, 204, "{}", res.body);
    let res = get(&app, &format!("/api/v1/invoices/{invoice}"), &key).await;
    assert_eq!(
        (res.body["data"]["status"].as_str(), res.body["data"]["balance_minor"].as_i64()),
        (Some("sent"), Some(500))
    );
    assert_eq!(delete(&app, &format!("{payments}/{last}"), &key).await.status, 404, "gone once");
    // A sent invoice that has payments can't be voided: they would be lost from what was paid.
    let res = post(&app, &format!("/api/v1/invoices/{invoice}/void"), &key, json!({})).await;
    res.assert_problem(409);
    assert!(res.body.to_string().contains("delete them before voiding"), "{}", res.body);

    // A payment is reached through its own invoice only.
    let other_invoice = sent_invoice(&app, &key, &client).await;
    let first = list.body["data"][0]["id"].as_str().unwrap();
    assert_eq!(delete(&app, &format!("/api/v1/invoices/{other_invoice}/payments/{first}"), &key).await.status, 404);
    // "Mark paid" on a part-paid invoice records what is left, today.
    let other_payments = format!("/api/v1/invoices/{other_invoice}/payments");
    assert_eq!(post(&app, &other_payments, &key, json!({"amount_minor": 3000})).await.status, 201);
    let res = post(&app, &format!("/api/v1/invoices/{other_invoice}/pay"), &key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        (res.body["data"]["status"].as_str(), res.body["data"]["paid_minor"].as_i64()),
        (Some("paid"), Some(10_000))
    );
    let list = get(&app, &other_payments, &key).await;
    let amounts: Vec<i64> =
        list.body["data"].as_array().unwrap().iter().map(|p| p["amount_minor"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [3000, 7000]);
    // A draft can't be paid.
    let draft = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": client, "lines": [{"description": "x", "quantity_milli": 1000, "unit_price_minor": 100}]}),
    )
    .await;
    let draft = draft.body["data"]["id"].as_str().unwrap().to_string();
    post(&app, &format!("/api/v1/invoices/{draft}/payments"), &key, json!({"amount_minor": 1}))
        .await
        .assert_problem(409);

    // Who may: a key that only reads invoices lists them but records nothing; another
    // organization's key finds nothing.
    let reader = api_key(&app, &t, "admin", Some(&["invoices.read"])).await.1;
    assert_eq!(get(&app, &payments, &reader).await.status, 200);
    assert_eq!(post(&app, &payments, &reader, json!({"amount_minor": 1})).await.status, 403);
    assert_eq!(delete(&app, &format!("{payments}/{first}"), &reader).await.status, 403);
    let other = tenant(&app, "payments-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    assert_eq!(get(&app, &payments, &other_key).await.status, 404);
    assert_eq!(post(&app, &payments, &other_key, json!({"amount_minor": 1})).await.status, 404);
    assert_eq!(delete(&app, &format!("{payments}/{first}"), &other_key).await.status, 404);
    assert_eq!(get(&app, &format!("/api/v1/invoices/{}/payments", Uuid::now_v7()), &key).await.status, 404);

    // Each recorded and deleted payment is in the audit log.
    assert_eq!(audit_count(&app, "invoice.payment_recorded").await, 10);
    assert_eq!(audit_count(&app, "invoice.payment_deleted").await, 1);
}

#[tokio::test]
async fn the_invoice_page_records_payments_and_shows_what_is_left() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "paypage").await;
    let slug = org.slug.clone();
    let invoice = crate::support::work::fixture(&app, &org, "invoice", &[]).await.unwrap();
    let page = format!("/o/{slug}/invoices/{invoice}");
    let action = format!("{page}/payments");
    let today = app.clock.now_utc().date().to_string();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;

    // The form starts with all that is owed, today.
    let (status, html) = owner.page(&page).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("No payment recorded yet."), "{html}");
    assert!(html.contains("name=\"amount\" value=\"100.00\""), "{html}");
    assert!(html.contains(&format!("name=\"paid_on\" value=\"{today}\"")), "{html}");

    // Too much: the page again, with what was typed and the field named.
    let res = owner.submit(&page, &action, &[("amount", "100.01"), ("paid_on", &today), ("note", "Wire")]).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("<strong>Amount</strong>: must be at most 100.00"), "{html}");
    assert!(html.contains("name=\"amount\" value=\"100.01\""), "{html}");
    assert!(html.contains("value=\"Wire\""), "{html}");
    let res = owner.submit(&page, &action, &[("amount", "12,50"), ("paid_on", &today), ("note", "")]).await;
    assert_eq!(res.status(), 422);

    // 40.00 paid: the page, the list and the portal say 60.00 is left.
    let res = owner.submit(&page, &action, &[("amount", "40"), ("paid_on", &today), ("note", "Wire 7")]).await;
    assert_eq!(location(&res), format!("{page}#payments"));
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Payment recorded."), "{html}");
    assert!(html.contains("<td class=\"num\">40.00</td><td>Wire 7</td>"), "{html}");
    assert!(html.contains("Balance due</th><td class=\"num\"><strong>60.00"), "{html}");
    assert!(html.contains("name=\"amount\" value=\"60.00\""), "the form offers what is left: {html}");
    let (_, list) = owner.page(&format!("/o/{slug}/invoices")).await;
    assert!(list.contains(", 60.00 due"), "{list}");
    let pdf = owner.get(&format!("{page}/pdf")).await;
    assert_eq!(pdf.status(), 200);

    // Deleting it asks first, then the invoice owes all again.
    let payment_id = html.split(&format!("{page}/payments/")).nth(1).unwrap().split('/').next().unwrap().to_string();
    let delete_path = format!("{page}/payments/{payment_id}/delete");
    let res = owner.submit(&page, &delete_path, &[]).await;
    assert!(res.text().await.unwrap().contains("Delete this payment?"), "asked first");
    let res = owner.submit(&page, &delete_path, &[("confirm", "yes")]).await;
    assert_eq!(location(&res), page);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("No payment recorded yet."), "{html}");

    // A Member sees no money; the invoice's Client sees what is left in the portal.
    let res = owner.submit(&page, &action, &[("amount", "25.50"), ("paid_on", &today), ("note", "")]).await;
    assert_eq!(res.status(), 303);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    member.page(&format!("/o/{slug}")).await;
    let token = member.token();
    assert!(!token.is_empty());
    let res = member.post_with(&action, &[("amount", "1"), ("paid_on", &today)], Some(&token), true).await;
    assert_eq!(res.status(), 403, "a Member may not record payments");
    let received = format!("/o/{slug}/invoices/payments");
    let (status, html) = member.page(&received).await;
    assert_eq!(status, 403, "{html}");
    assert_eq!(member.get(&format!("{received}.csv")).await.status(), 403);
    let portal = &mut org.people.get_mut("client").unwrap().browser;
    let (status, html) = portal.page(&format!("/portal/{slug}/invoices/{invoice}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Balance due</th><td class=\"num\"><strong>74.50"), "{html}");
    assert!(!html.contains("Record a payment"), "{html}");

    // An invoice of 0.00 marked paid took no payment, and its page says why rather than
    // waiting for one.
    let key = crate::support::api_key(&app, org.id.parse().unwrap(), "zero").await;
    let res = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": org.client_id, "lines": [{"description": "Goodwill", "quantity_milli": 1000, "unit_price_minor": 0}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let zero = res.body["data"]["id"].as_str().unwrap().to_string();
    for step in ["send", "pay"] {
        let res = post(&app, &format!("/api/v1/invoices/{zero}/{step}"), &key, json!({})).await;
        assert_eq!(res.status, 200, "{step}: {}", res.body);
    }
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&format!("/o/{slug}/invoices/{zero}")).await;
    assert!(html.contains("Marked paid with nothing to pay; no payment was recorded."), "{html}");
    assert!(!html.contains("No payment recorded yet."), "{html}");
}

#[tokio::test]
async fn payments_received_are_listed_by_day_summed_per_currency_and_exported() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "received").await;
    let slug = org.slug.clone();
    let received = format!("/o/{slug}/invoices/payments");
    let today = app.clock.now_utc().date();
    let first = crate::support::work::fixture(&app, &org, "invoice", &[]).await.unwrap();
    let second = crate::support::work::fixture(&app, &org, "invoice", &[]).await.unwrap();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&received).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Nothing received from"), "{html}");
    // Reached from the invoices list.
    let (_, list) = owner.page(&format!("/o/{slug}/invoices")).await;
    assert!(list.contains(&format!("href=\"{received}\"")), "{list}");

    // On two invoices: 30.00 today (with a note a spreadsheet would run), 12.00 forty days ago.
    let long_ago = (today - time::Duration::days(40)).to_string();
    for (invoice, amount, day, note) in
        [(&first, "30", today.to_string(), "=SUM(A1:A9)"), (&second, "12", long_ago.clone(), "Cheque")]
    {
        let page = format!("/o/{slug}/invoices/{invoice}");
        let res = owner
            .submit(&page, &format!("{page}/payments"), &[("amount", amount), ("paid_on", &day), ("note", note)])
            .await;
        assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    }
    let currency = {
        let mut db = app.db.admin_conn().await;
        let c: String = sqlx::query_scalar("SELECT currency FROM invoices WHERE id = $1::uuid")
            .bind(&first)
            .fetch_one(&mut db)
            .await
            .unwrap();
        c
    };
    // By default this month: today's payment only (forty days ago is always an earlier month).
    let month_start = today.replace_day(1).unwrap();
    let (_, html) = owner.page(&received).await;
    assert!(
        html.contains(&format!(
            "Received <strong>30.00 {currency}</strong> in 1 payment from {month_start} to {today}."
        )),
        "{html}"
    );
    // A range holding both: summed, newest first.
    let range = format!("{received}?from={long_ago}&to={today}");
    let (_, html) = owner.page(&range).await;
    assert!(html.contains(&format!("Received <strong>42.00 {currency}</strong> in 2 payments")), "{html}");
    assert!(html.find("30.00").unwrap() < html.find("12.00").unwrap(), "newest first: {html}");
    assert!(html.contains(&format!("/o/{slug}/invoices/{first}#payments")), "{html}");
    // Refused: a range backwards, a day that doesn't exist, a field the page doesn't take.
    for bad in [format!("from={today}&to={long_ago}"), "from=2026-02-30".into(), "to=soon".into(), "sort=amount".into()]
    {
        let res = owner.get(&format!("{received}?{bad}")).await;
        assert!(matches!(res.status().as_u16(), 400 | 422), "{bad}: {}", res.status());
    }
    let res = owner.get(&format!("{received}?from={today}&to={long_ago}")).await;
    assert!(res.text().await.unwrap().contains("must not be after To"));

    // The CSV: the same rows, the note neutralised for spreadsheets.
    let res = owner.get(&format!("{received}.csv?from={long_ago}&to={today}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "paid_on,invoice,client,currency,amount_minor,amount,note");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with(&format!("{today},INV-"))
            && lines[1].ends_with(&format!("{currency},3000,30.00,'=SUM(A1:A9)")),
        "{csv}"
    );
    assert!(lines[2].starts_with(&format!("{long_ago},")) && lines[2].ends_with("1200,12.00,Cheque"), "{csv}");
}

#[tokio::test]
async fn the_api_lists_payments_received_over_a_range_with_the_ranges_sums() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "received-api").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let client = t.org.client.to_string();
    let today = app.clock.now_utc().date();
    let long_ago = today - time::Duration::days(40);
    let (first, second) = (sent_invoice(&app, &key, &client).await, sent_invoice(&app, &key, &client).await);
    for (invoice, amount, day, note) in [(&first, 2500, today, "Transfer 118"), (&second, 1000, long_ago, "Cheque")] {
        let res = post(
            &app,
            &format!("/api/v1/invoices/{invoice}/payments"),
            &key,
            json!({"amount_minor": amount, "paid_on": day.to_string(), "note": note}),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }

    // By default this month up to today: only today's payment (forty days ago is an earlier month).
    let res = get(&app, "/api/v1/payments", &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let b = &res.body;
    assert_eq!(
        (b["from"].as_str(), b["to"].as_str()),
        (Some(&*today.replace_day(1).unwrap().to_string()), Some(&*today.to_string()))
    );
    assert_eq!(b["data"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["data"][0]["invoice_id"], first.as_str());
    assert_eq!(b["received"], json!([{"currency": "EUR", "amount_minor": 2500}]));
    assert_eq!(b["pagination"]["total"], 1);

    // A range holding both, a page at a time: newest first, sums over the whole range.
    let range = format!("/api/v1/payments?from={long_ago}&to={today}&limit=1");
    let res = get(&app, &range, &key).await;
    let b = &res.body;
    assert_eq!(
        (
            b["data"].as_array().unwrap().len(),
            b["pagination"]["total"].as_i64(),
            b["pagination"]["next_offset"].as_i64()
        ),
        (1, Some(2), Some(1)),
        "{b}"
    );
    assert_eq!(b["data"][0]["amount_minor"], 2500);
    assert_eq!(b["received"], json!([{"currency": "EUR", "amount_minor": 3500}]));
    let res = get(&app, &format!("{range}&offset=1"), &key).await;
    let row = &res.body["data"][0];
    assert_eq!(
        (row["invoice_id"].as_str(), row["paid_on"].as_str(), row["note"].as_str(), row["currency"].as_str()),
        (Some(second.as_str()), Some(&*long_ago.to_string()), Some("Cheque"), Some("EUR")),
        "{row}"
    );
    assert_eq!(row["client_id"], client.as_str());
    assert!(row["reference"].as_str().is_some_and(|r| r.starts_with("INV-")), "{row}");
    assert!(res.body["pagination"]["next_offset"].is_null(), "{}", res.body);

    // Refused, naming the field: a range backwards, a day that doesn't exist, a word, a NUL
    // byte, a field the list doesn't take, a page of none.
    for (query, field) in [
        (format!("from={today}&to={long_ago}"), "from"),
        ("from=2026-02-30".to_string(), "from"),
        ("to=soon".to_string(), "to"),
        ("to=2026-01-01%00".to_string(), "to"),
        ("limit=0".to_string(), "limit"),
    ] {
        let res = get(&app, &format!("/api/v1/payments?{query}"), &key).await;
        assert_eq!(res.status, 422, "{query}: {}", res.body);
        assert!(!field_error(&res.body, field).is_empty(), "{query}");
    }
    assert!(matches!(get(&app, "/api/v1/payments?sort=amount", &key).await.status, 400 | 422));

    // Who may: a key without invoices.read is refused; another organization's key sees none of
    // these payments.
    let tasks_only = api_key(&app, &t, "admin", Some(&["projects.read"])).await.1;
    assert_eq!(get(&app, "/api/v1/payments", &tasks_only).await.status, 403);
    let other = tenant(&app, "received-api-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    let res = get(&app, &format!("/api/v1/payments?from={long_ago}&to={today}"), &other_key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!((res.body["data"].as_array().unwrap().len(), &res.body["received"]), (0, &json!([])));
}

/// An invoice of `price` minor units issued on `issue` to `client` in `currency`, sent unless
/// `status` says otherwise (`draft`, or `void`: voided as a draft); its id.
async fn issued(
    app: &TestApp,
    key: &str,
    client: &str,
    currency: &str,
    issue: &str,
    price: i64,
    status: &str,
) -> String {
    let res = post(
        app,
        "/api/v1/invoices",
        key,
        json!({"client_id": client, "currency": currency, "issue_date": issue,
               "lines": [{"description": format!("Work of {issue}"), "quantity_milli": 1000, "unit_price_minor": price}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let id = res.body["data"]["id"].as_str().unwrap().to_string();
    let step = match status {
        "draft" => return id,
        "void" => "void",
        _ => "send",
    };
    let res = post(app, &format!("/api/v1/invoices/{id}/{step}"), key, json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    id
}

#[tokio::test]
async fn a_clients_statement_carries_its_balance_through_invoices_and_payments() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "statement").await;
    let slug = org.slug.clone();
    let client = org.client_id.clone();
    let key = crate::support::api_key(&app, org.id.parse().unwrap(), "statement").await;
    // January: 100.00 EUR invoiced, 30.00 paid. February: 50.00 EUR invoiced and paid, 10.00 USD
    // invoiced, a draft and a void invoice that owe nothing. March: 20.00 EUR invoiced.
    let a = issued(&app, &key, &client, "EUR", "2025-01-10", 10_000, "sent").await;
    let b = issued(&app, &key, &client, "EUR", "2025-02-05", 5_000, "sent").await;
    let f = issued(&app, &key, &client, "USD", "2025-02-01", 1_000, "sent").await;
    issued(&app, &key, &client, "EUR", "2025-02-07", 7_777, "draft").await;
    issued(&app, &key, &client, "EUR", "2025-02-08", 8_888, "void").await;
    issued(&app, &key, &client, "EUR", "2025-03-01", 2_000, "sent").await;
    for (invoice, amount, day, note) in [(&a, 3_000, "2025-01-20", "Deposit"), (&b, 5_000, "2025-02-10", "Wire 55")] {
        let res = post(
            &app,
            &format!("/api/v1/invoices/{invoice}/payments"),
            &key,
            json!({"amount_minor": amount, "paid_on": day, "note": note}),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
    let statement = format!("/o/{slug}/clients/{client}/statement");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, page) = owner.page(&format!("/o/{slug}/clients/{client}")).await;
    assert!(page.contains(&format!("href=\"{statement}\"")), "the client's page links to it: {page}");
    let (_, list) = owner.page(&format!("/o/{slug}/clients")).await;
    assert!(list.contains(&format!("<a href=\"{statement}\" title=\"")), "what a client owes links to it: {list}");

    // February: 70.00 EUR brought forward, the invoice and its payment in order, each with the
    // balance after it; the USD invoice on a statement of its own.
    let (status, html) = owner.page(&format!("{statement}?from=2025-02-01&to=2025-02-28")).await;
    assert_eq!(status, 200, "{html}");
    let text = html.replace('\n', "");
    assert!(
        text.contains("Owed on 2025-02-01: <strong>70.00 EUR</strong>. Invoiced 50.00, paid 50.00. Owed at the end of 2025-02-28: <strong>70.00 EUR</strong>."),
        "{html}"
    );
    assert!(
        text.contains("Owed on 2025-02-01: <strong>0.00 USD</strong>. Invoiced 10.00, paid 0.00. Owed at the end of 2025-02-28: <strong>10.00 USD</strong>."),
        "{html}"
    );
    // An entry's figures: invoiced, paid, the balance after it.
    let row = |invoiced: &str, paid: &str, balance: &str| {
        format!(
            "<td class=\"num\" data-label=\"Invoiced\">{invoiced}</td><td class=\"num\" data-label=\"Paid\">{paid}</td>\
             <td class=\"num\" data-label=\"Balance\">{balance}</td>"
        )
    };
    let invoice_row = text.find(&format!("/invoices/{b}\"")).expect("the February invoice");
    let payment_row = text.find(&format!("/invoices/{b}#payments\"")).expect("its payment");
    assert!(invoice_row < payment_row, "in order of day: {html}");
    assert!(text.contains(&row("50.00", "", "120.00")), "{html}");
    assert!(text.contains(&row("", "50.00", "70.00")), "{html}");
    assert!(text.contains(" · Wire 55"), "{html}");
    assert!(text.contains(&format!("/invoices/{f}\"")), "{html}");
    for absent in ["77.77", "88.88", "Work of 2025-03-01", "Deposit"] {
        assert!(!text.contains(absent), "{absent} is not on February's statement: {html}");
    }

    // By default this month: everything before it brought forward, nothing in it.
    let month_start = app.clock.now_utc().date().replace_day(1).unwrap();
    let (_, html) = owner.page(&statement).await;
    let text = html.replace('\n', "");
    assert!(text.contains(&format!("Owed on {month_start}: <strong>90.00 EUR</strong>")), "{html}");
    assert!(text.contains(&format!("Owed on {month_start}: <strong>10.00 USD</strong>")), "{html}");

    // Refused: a range backwards, a day that doesn't exist, a field the page doesn't take.
    let res = owner.get(&format!("{statement}?from=2025-03-01&to=2025-02-01")).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("must not be after To"));
    for bad in ["from=2025-02-30", "to=soon", "to=2025-01-01%00", "sort=day"] {
        let res = owner.get(&format!("{statement}?{bad}")).await;
        assert!(matches!(res.status().as_u16(), 400 | 422), "{bad}: {}", res.status());
    }
    // A client that isn't this organization's is not found; a Member may not read money.
    let other = org_with_every_role(&app, "statement-other").await;
    let res = owner.get(&format!("/o/{slug}/clients/{}/statement", other.client_id)).await;
    assert_eq!(res.status(), 404);
    let res = owner.get(&format!("/o/{slug}/clients/{}/statement", Uuid::now_v7())).await;
    assert_eq!(res.status(), 404);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let (status, _) = member.page(&statement).await;
    assert_eq!(status, 403);

    // The API's statement is the same one.
    let api = format!("/api/v1/clients/{client}/statement");
    let res = get(&app, &format!("{api}?from=2025-02-01&to=2025-02-28"), &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let d = &res.body["data"];
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str(), d["capped"].as_bool()),
        (Some("2025-02-01"), Some("2025-02-28"), Some(false))
    );
    let eur = &d["currencies"][0];
    assert_eq!(
        (
            eur["currency"].as_str(),
            eur["opening_minor"].as_i64(),
            eur["invoiced_minor"].as_i64(),
            eur["paid_minor"].as_i64(),
            eur["closing_minor"].as_i64()
        ),
        (Some("EUR"), Some(7_000), Some(5_000), Some(5_000), Some(7_000)),
        "{d}"
    );
    assert_eq!(
        eur["entries"],
        json!([
            {"date": "2025-02-05", "kind": "invoice", "invoice_id": b, "reference": eur["entries"][0]["reference"], "number": eur["entries"][0]["number"],
             "amount_minor": 5_000, "note": "", "balance_minor": 12_000},
            {"date": "2025-02-10", "kind": "payment", "invoice_id": b, "reference": eur["entries"][0]["reference"], "number": eur["entries"][0]["number"],
             "amount_minor": 5_000, "note": "Wire 55", "balance_minor": 7_000},
        ])
    );
    assert!(eur["entries"][0]["reference"].as_str().is_some_and(|r| r.starts_with("INV-")), "{eur}");
    let usd = &d["currencies"][1];
    assert_eq!((usd["currency"].as_str(), usd["closing_minor"].as_i64()), (Some("USD"), Some(1_000)));
    for (query, field) in [("from=2025-03-01&to=2025-02-01", "from"), ("from=2025-02-30", "from"), ("to=soon", "to")] {
        let res = get(&app, &format!("{api}?{query}"), &key).await;
        assert_eq!(res.status, 422, "{query}: {}", res.body);
        assert!(!field_error(&res.body, field).is_empty(), "{query}");
    }
    let reader = crate::support::api_key(&app, other.id.parse().unwrap(), "other").await;
    assert_eq!(get(&app, &api, &reader).await.status, 404, "another organization's key finds no such client");

    // The client reads its own statement in the portal: the same figures, without the
    // organization's payment notes, and nothing of another client of the organization.
    let res = post(&app, "/api/v1/clients", &key, json!({"name": "Other Co"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let other_client = res.body["data"]["id"].as_str().unwrap().to_string();
    issued(&app, &key, &other_client, "EUR", "2025-02-03", 9_999, "sent").await;
    let portal = &mut org.people.get_mut("client").unwrap().browser;
    let (_, home) = portal.page(&format!("/portal/{slug}")).await;
    assert!(home.contains(&format!("href=\"/portal/{slug}/statement\"")), "{home}");
    let (status, html) = portal.page(&format!("/portal/{slug}/statement?from=2025-02-01&to=2025-02-28")).await;
    assert_eq!(status, 200, "{html}");
    let text = html.replace('\n', "");
    assert!(
        text.contains("Owed on 2025-02-01: <strong>70.00 EUR</strong>. Invoiced 50.00, paid 50.00. Owed at the end of 2025-02-28: <strong>70.00 EUR</strong>."),
        "{html}"
    );
    assert!(text.contains(&row("", "50.00", "70.00")), "{html}");
    assert!(text.contains(&format!("href=\"/portal/{slug}/invoices/{b}\"")), "{html}");
    for absent in ["Wire 55", "99.99", "/o/"] {
        assert!(!text.contains(absent), "{absent} is not in the client's statement: {html}");
    }
    // Its PDF: the same entries, without the note or the other client's invoice.
    let pdf_link = format!("/portal/{slug}/statement.pdf?from=2025-02-01&amp;to=2025-02-28");
    assert!(html.contains(&format!("href=\"{pdf_link}\" download")), "{html}");
    let res = portal.get(&pdf_link.replace("&amp;", "&")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    assert_eq!(res.headers()["content-disposition"], "attachment; filename=\"statement-2025-02-01-2025-02-28.pdf\"");
    let pdf = String::from_utf8_lossy(&res.bytes().await.unwrap()).to_string();
    assert!(pdf.starts_with("%PDF-1.4"), "{pdf}");
    for present in [
        "(Statement)",
        "(Balance brought forward)",
        "(70.00)",
        "(120.00)",
        "(Owed at the end of 2025-02-28)",
        "(70.00 EUR)",
    ] {
        assert!(pdf.contains(present), "{present} is not in the PDF:\n{pdf}");
    }
    for absent in ["Wire 55", "99.99"] {
        assert!(!pdf.contains(absent), "{absent} is in the client's PDF:\n{pdf}");
    }
    let (_, html) = owner_again(&mut org)
        .page(&format!("/o/{slug}/clients/{other_client}/statement?from=2025-02-01&to=2025-02-28"))
        .await;
    assert!(html.contains("99.99"), "the other client's statement has its invoice: {html}");
    assert_eq!(
        owner_again(&mut org).get(&format!("/portal/{slug}/statement")).await.status(),
        403,
        "the portal is for clients"
    );
}

fn owner_again(org: &mut crate::support::orgs::Org) -> &mut clientflow_test_support::browser::Browser {
    &mut org.people.get_mut("owner").unwrap().browser
}

#[tokio::test]
async fn a_statement_is_mailed_to_the_clients_billing_email_once_a_day_per_range() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "mailed").await;
    let client = t.org.client.to_string();
    let key = api_key(&app, &t, "admin", None).await.1;
    let res = patch(&app, &format!("/api/v1/clients/{client}"), &key, json!({"email": "billing@mailed.test"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    // 100.00 EUR invoiced in January, 30.00 of it paid with an internal note.
    let invoice = issued(&app, &key, &client, "EUR", "2025-01-10", 10_000, "sent").await;
    let res = post(
        &app,
        &format!("/api/v1/invoices/{invoice}/payments"),
        &key,
        json!({"amount_minor": 3_000, "paid_on": "2025-01-20", "note": "Wire 77, internal"}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let reference = get(&app, &format!("/api/v1/invoices/{invoice}"), &key).await.body["data"]["reference"]
        .as_str()
        .unwrap()
        .to_string();

    let mail = format!("/api/v1/clients/{client}/statement/email");
    let range = json!({"from": "2025-01-01", "to": "2025-01-31"});
    let res = post(&app, &mail, &key, range.clone()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"], json!({"to": "billing@mailed.test", "from": "2025-01-01", "until": "2025-01-31"}));
    let (subject, body): (String, String) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT subject, body_text FROM outbox WHERE recipient = 'billing@mailed.test' AND subject LIKE 'Statement from %'",
        )
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert!(subject.starts_with("Statement from ") && subject.ends_with(" for 2025-01-01 to 2025-01-31"), "{subject}");
    for line in [
        "Owed before 2025-01-01: 0.00".to_string(),
        format!("2025-01-10  Invoice {reference}  100.00  (owed 100.00)"),
        format!("2025-01-20  Payment for {reference}  -30.00  (owed 70.00)"),
        "Owed at the end of 2025-01-31: 70.00 EUR".to_string(),
        "/portal/mailed/statement?from=2025-01-01&to=2025-01-31".to_string(),
    ] {
        assert!(body.contains(&line), "{line:?} is not in:\n{body}");
    }
    assert!(!body.contains("Wire 77"), "the organization's payment notes stay out of the mail:\n{body}");
    // The statement's PDF is attached.
    let (name, pdf): (String, Vec<u8>) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT a.filename, a.content FROM outbox_attachments a JOIN outbox o ON o.id = a.outbox_id \
             WHERE o.recipient = 'billing@mailed.test' AND o.subject LIKE 'Statement from %'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert_eq!(name, "statement-2025-01-01-2025-01-31.pdf");
    let pdf = String::from_utf8_lossy(&pdf).to_string();
    assert!(pdf.contains(&format!("(Payment for {reference})")) && pdf.contains("(70.00 EUR)"), "{pdf}");
    assert!(!pdf.contains("Wire 77"), "{pdf}");

    // Once a day per range: the same range again is refused; another range goes.
    let res = post(&app, &mail, &key, range.clone()).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("today already"), "{}", res.body);
    assert_eq!(post(&app, &mail, &key, json!({"from": "2025-01-01", "to": "2025-02-28"})).await.status, 200);
    let audited: i64 = crate::support::api::count(
        &app,
        &format!(
            "SELECT count(*) FROM audit_events WHERE action = 'client.statement_mailed' AND target_id = '{client}'"
        ),
    )
    .await;
    assert_eq!(audited, 2);

    // Refused: a backwards range, a client with no billing email, a key that may only read, another
    // organization's key.
    let res = post(&app, &mail, &key, json!({"from": "2025-02-01", "to": "2025-01-31"})).await;
    assert_eq!((res.status, res.fields()), (422, vec!["from".to_string()]), "{}", res.body);
    let res = post(&app, &mail, &key, json!({"from": "2025-01-01\u{0}"})).await;
    assert!(matches!(res.status, 400 | 422), "{}", res.body);
    let bare = post(&app, "/api/v1/clients", &key, json!({"name": "No address"})).await.id();
    let res = post(&app, &format!("/api/v1/clients/{bare}/statement/email"), &key, range.clone()).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("no billing email"), "{}", res.body);
    let reader = api_key(&app, &t, "admin", Some(&["invoices.read"])).await.1;
    post(&app, &mail, &reader, json!({"from": "2025-03-01", "to": "2025-03-31"})).await.assert_problem(403);
    let other = tenant(&app, "mailed-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    post(&app, &mail, &other_key, json!({"from": "2025-03-01", "to": "2025-03-31"})).await.assert_problem(404);
    let mailed: i64 =
        crate::support::api::count(&app, "SELECT count(*) FROM outbox WHERE subject LIKE 'Statement from %'").await;
    assert_eq!(mailed, 2, "only the two statements that went were queued");
    // At most five a day to one client, whatever the ranges.
    for month in ["03", "04", "05"] {
        let range = json!({"from": format!("2025-{month}-01"), "to": format!("2025-{month}-28")});
        assert_eq!(post(&app, &mail, &key, range).await.status, 200);
    }
    let res = post(&app, &mail, &key, json!({"from": "2025-06-01", "to": "2025-06-30"})).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("5 statements in the last 24 hours"), "{}", res.body);

    // On the page: the button, the mail, and the statement again saying so.
    let mut org = org_with_every_role(&app, "mailed-page").await;
    let (slug, client) = (org.slug.clone(), org.client_id.clone());
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE clients SET email = 'billing@page.test' WHERE id = $1::uuid")
        .bind(&client)
        .execute(&mut db)
        .await
        .unwrap();
    let page = format!("/o/{slug}/clients/{client}/statement?from=2025-03-01&to=2025-03-31");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Email this statement to the client"), "{html}");
    let res = owner.get(&format!("/o/{slug}/clients/{client}/statement.pdf?from=2025-03-01&to=2025-03-31")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    assert!(String::from_utf8_lossy(&res.bytes().await.unwrap()).contains("(From 2025-03-01 to 2025-03-31)"));
    let action = format!("/o/{slug}/clients/{client}/statement/email");
    let res = owner.submit(&page, &action, &[("from", "2025-03-01"), ("to", "2025-03-31")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), page);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Statement mailed to the client&#39;s billing email."), "{html}");
    let res = owner.submit(&page, &action, &[("from", "2025-03-01"), ("to", "2025-03-31")]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("today already"));
}

/// A statement lists at most `MAX_ENTRIES` entries, says so, and keeps the whole range's
/// balances: 2,001 sent invoices of one client in one month.
#[tokio::test]
async fn a_statement_of_more_entries_than_it_lists_says_so_and_keeps_the_whole_balance() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "long-statement").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let many = clientflow::work::statement::MAX_ENTRIES as i64 + 1;
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at, status, number, \
                               number_year, sent_at, subtotal_minor, total_minor) \
         SELECT $1, gen_random_uuid(), $2, 'EUR', date '2025-05-01' + (n % 28)::int, date '2025-06-30', now(), 'sent', n, 2025, now(), \
                n, n \
           FROM generate_series(1, $3) AS n",
    )
    .bind(t.org.id.as_uuid())
    .bind(t.org.client.as_uuid())
    .bind(many)
    .execute(&mut db)
    .await
    .unwrap();
    let res =
        get(&app, &format!("/api/v1/clients/{}/statement?from=2025-05-01&to=2025-05-31", t.org.client), &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let eur = &res.body["data"]["currencies"][0];
    assert_eq!(res.body["data"]["capped"], true);
    let entries = eur["entries"].as_array().unwrap();
    assert_eq!(entries.len(), clientflow::work::statement::MAX_ENTRIES);
    // 1 + 2 + … + 2,001 minor units, all of them, at both ends.
    let whole = many * (many + 1) / 2;
    assert_eq!((&eur["invoiced_minor"], &eur["closing_minor"]), (&json!(whole), &json!(whole)));
    // The entries listed are the oldest, each with the balance after it.
    assert_eq!(entries[0]["date"], "2025-05-01");
    let listed: i64 = entries.iter().map(|e| e["amount_minor"].as_i64().unwrap()).sum();
    assert_eq!(entries.last().unwrap()["balance_minor"], json!(listed));
    assert!(listed < whole);
}
