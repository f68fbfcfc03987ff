//! Repeating invoices: copies made on each of a schedule's days (month ends and the
//! organization's time zone included), sent and mailed when asked, never twice however many
//! workers run; a copy that can't be made pauses its repeat and says why; the API's and the
//! pages' refusals.

use clientflow::work::repeats::{self, Unit};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use serde_json::{Value, json};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use uuid::Uuid;

use crate::support::api::{Tenant, api_key, delete, get, patch, post, tenant};
use crate::support::orgs::org_with_every_role;

/// One round of the repeating worker at the app's time; how many copies it made.
async fn round(app: &TestApp) -> usize {
    repeats::run_due(&app.app_db, &app.config.public_url(), None, app.clock.now_utc()).await.unwrap()
}

/// Moves the app's clock forwards to `at`.
fn move_to(app: &TestApp, at: OffsetDateTime) {
    let by = at - app.clock.now_utc();
    assert!(by >= time::Duration::ZERO, "the clock only goes forwards: {at}");
    app.clock.advance(by);
}

fn at(day: Date, hour: u8) -> OffsetDateTime {
    PrimitiveDateTime::new(day, Time::from_hms(hour, 0, 0).unwrap()).assume_utc()
}

/// The tenant's organization in `zone`, its client billed at `billing@retainer.test`.
async fn set_up(app: &TestApp, t: &Tenant, zone: &str) {
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE organizations SET timezone = $2 WHERE id = $1")
        .bind(t.org.id)
        .bind(zone)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE clients SET email = 'billing@retainer.test' WHERE id = $1")
        .bind(t.org.client)
        .execute(&mut db)
        .await
        .unwrap();
}

/// A draft of 250.00 EUR (two lines), net 14, by the API; its id.
async fn draft(app: &TestApp, key: &str, t: &Tenant) -> String {
    let res = post(
        app,
        "/api/v1/invoices",
        key,
        json!({"client_id": t.org.client, "currency": "EUR", "payment_terms_days": 14, "notes": "Monthly retainer",
               "lines": [{"description": "Retainer", "quantity_milli": 1000, "unit_price_minor": 20_000},
                         {"description": "Hosting", "quantity_milli": 2000, "unit_price_minor": 2_500}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.id()
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Copy {
    id: Uuid,
    issue_date: Date,
    due_date: Date,
    status: String,
    total_minor: i64,
    notes: String,
}

/// The invoices of the organization other than `template`, oldest issue first.
async fn copies(app: &TestApp, t: &Tenant, template: &str) -> Vec<Copy> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT id, issue_date, due_date, status, total_minor, notes FROM invoices \
         WHERE organization_id = $1 AND id <> $2::uuid ORDER BY issue_date, created_at",
    )
    .bind(t.org.id)
    .bind(template)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

async fn scalar<T>(app: &TestApp, sql: &str, bind: Uuid) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).bind(bind).fetch_one(&mut db).await.unwrap()
}

fn field(res: &crate::support::api::Res) -> String {
    res.fields().join(",")
}

#[tokio::test]
async fn a_repeat_copies_the_invoice_on_each_of_its_days_sends_it_and_never_twice() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeats").await;
    set_up(&app, &t, "UTC").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let template = draft(&app, &key, &t).await;
    let today = app.clock.now_utc().date();
    let path = format!("/api/v1/invoices/{template}/repeat");

    let res = post(&app, &path, &key, json!({"starts_on": today.to_string(), "send": true})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.header("location"), Some(path.as_str()));
    let repeat = res.body["data"].clone();
    assert_eq!(
        (&repeat["every"], &repeat["unit"], &repeat["next_on"], &repeat["made"], &repeat["send"], &repeat["paused"]),
        (&json!(1), &json!("month"), &json!(today.to_string()), &json!(0), &json!(true), &json!(false))
    );
    assert_eq!((&repeat["total_minor"], &repeat["currency"]), (&json!(25_000), &json!("EUR")));
    assert_eq!(get(&app, &path, &key).await.body["data"], repeat);
    let repeat_id: Uuid = repeat["id"].as_str().unwrap().parse().unwrap();

    // Two workers at once make the day's copy once; a round after them makes nothing.
    let (a, b) = tokio::join!(round(&app), round(&app));
    assert_eq!(a + b, 1, "{a} + {b}");
    assert_eq!(round(&app).await, 0);
    let made = copies(&app, &t, &template).await;
    assert_eq!(made.len(), 1, "{made:?}");
    let first = &made[0];
    assert_eq!(
        (first.issue_date, first.due_date, first.status.as_str(), first.total_minor, first.notes.as_str()),
        (today, today + time::Duration::days(14), "sent", 25_000, "Monthly retainer")
    );
    let lines: Vec<(String, i64, i64)> = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT description, quantity_milli, unit_price_minor FROM invoice_lines WHERE invoice_id = $1 ORDER BY position",
        )
        .bind(first.id)
        .fetch_all(&mut db)
        .await
        .unwrap()
    };
    assert_eq!(lines, [("Retainer".into(), 1000, 20_000), ("Hosting".into(), 2000, 2_500)]);
    // Mailed to the client's billing contact, once, with the PDF.
    let mailed: i64 = scalar(
        &app,
        "SELECT count(*) FROM outbox WHERE recipient = 'billing@retainer.test' AND idempotency_key = 'invoice-sent:' || $1::text",
        first.id,
    )
    .await;
    assert_eq!(mailed, 1);
    // Audited as made by the repeat, from the template, by the worker.
    let audited: (Option<String>, Option<String>) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT after ->> 'copied_from', after ->> 'repeat' FROM audit_events \
             WHERE action = 'invoice.created' AND target_id = $1::text",
        )
        .bind(first.id)
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert_eq!(audited, (Some(template.clone()), Some(repeat_id.to_string())));
    let told: i64 = scalar(
        &app,
        "SELECT count(*) FROM notifications WHERE organization_id = $1 AND kind = 'invoice_repeat_made'",
        t.org.id.as_uuid(),
    )
    .await;
    assert_eq!(told, 0, "a copy that was sent needs nobody to send it");
    let res = get(&app, &path, &key).await;
    let next = repeats::day(today, 1, Unit::Month, 1).unwrap();
    assert_eq!(
        (&res.body["data"]["made"], &res.body["data"]["next_on"], &res.body["data"]["last_invoice_id"]),
        (&json!(1), &json!(next.to_string()), &json!(first.id))
    );
    // The template is untouched: still a draft, and said to repeat; its copies don't.
    let shown = get(&app, &format!("/api/v1/invoices/{template}"), &key).await.body["data"].clone();
    assert_eq!((&shown["status"], &shown["repeats"]), (&json!("draft"), &json!(true)));
    assert_eq!(get(&app, &format!("/api/v1/invoices/{}", first.id), &key).await.body["data"]["repeats"], false);

    // Three months on (the worker was down): each missed day gets its copy, issued on its day.
    let third = repeats::day(today, 1, Unit::Month, 3).unwrap();
    move_to(&app, at(third, 12));
    assert_eq!(round(&app).await, 3);
    let days: Vec<Date> = copies(&app, &t, &template).await.iter().map(|c| c.issue_date).collect();
    assert_eq!(days, (0..4).map(|n| repeats::day(today, 1, Unit::Month, n).unwrap()).collect::<Vec<_>>());
    assert_eq!(round(&app).await, 0);

    // The list shows it, and another organization sees nothing of it.
    let res = get(&app, "/api/v1/invoice-repeats", &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(res.body["data"][0]["made"], 4);
    let other = tenant(&app, "repeats-other").await;
    let other_key = api_key(&app, &other, "admin", None).await.1;
    assert_eq!(get(&app, "/api/v1/invoice-repeats", &other_key).await.body["data"], json!([]));
    get(&app, &path, &other_key).await.assert_problem(404);
    patch(&app, &path, &other_key, json!({"paused": true})).await.assert_problem(404);
    delete(&app, &path, &other_key).await.assert_problem(404);
    post(&app, &path, &other_key, json!({})).await.assert_problem(404);

    // Stopped: no more copies; the copies stay.
    assert_eq!(delete(&app, &path, &key).await.status, 204);
    get(&app, &path, &key).await.assert_problem(404);
    assert_eq!(get(&app, &format!("/api/v1/invoices/{template}"), &key).await.body["data"]["repeats"], false);
    move_to(&app, at(repeats::day(today, 1, Unit::Month, 5).unwrap(), 12));
    assert_eq!(round(&app).await, 0);
    assert_eq!(copies(&app, &t, &template).await.len(), 4);
}

#[tokio::test]
async fn month_ends_and_the_organizations_time_zone_decide_the_day() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeat-days").await;
    // Fourteen hours ahead of UTC: its day begins at 10:00 UTC the day before.
    set_up(&app, &t, "Pacific/Kiritimati").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let template = draft(&app, &key, &t).await;
    let path = format!("/api/v1/invoices/{template}/repeat");
    let year = app.clock.now_utc().year() + 1;
    let start = Date::from_calendar_date(year, Month::January, 31).unwrap();
    let ends = Date::from_calendar_date(year, Month::March, 30).unwrap();
    let res = post(&app, &path, &key, json!({"starts_on": start.to_string(), "ends_on": ends.to_string()})).await;
    assert_eq!(res.status, 201, "{}", res.body);

    // 09:00 UTC on the 30th is still the 30th there; 11:00 UTC is the 31st.
    let eve = start.previous_day().unwrap();
    move_to(&app, at(eve, 9));
    assert_eq!(round(&app).await, 0);
    move_to(&app, at(eve, 11));
    assert_eq!(round(&app).await, 1);
    // Not sent: a draft to check, which says where it came from; the Owners and Admins are told.
    let made = copies(&app, &t, &template).await;
    assert_eq!((made[0].issue_date, made[0].status.as_str()), (start, "draft"));
    let copy = get(&app, &format!("/api/v1/invoices/{}", made[0].id), &key).await;
    assert_eq!(copy.body["data"]["repeated_from"], json!(template), "{}", copy.body);
    let (told, people): (i64, i64) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM notifications WHERE organization_id = $1 AND kind = 'invoice_repeat_made' \
                       AND link LIKE '%/invoices/' || $2::text), \
                    (SELECT count(*) FROM memberships WHERE organization_id = $1 AND role IN ('owner', 'admin'))",
        )
        .bind(t.org.id.as_uuid())
        .bind(made[0].id)
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert!(people >= 1);
    assert_eq!(told, people);
    let feb_end = repeats::day(start, 1, Unit::Month, 1).unwrap();
    assert_eq!(feb_end.month(), Month::February);
    assert_eq!(feb_end.day(), time::util::days_in_month(Month::February, year));
    assert_eq!(get(&app, &path, &key).await.body["data"]["next_on"], json!(feb_end.to_string()));
    move_to(&app, at(feb_end.previous_day().unwrap(), 11));
    assert_eq!(round(&app).await, 1);
    // Back on the 31st in March, which is past the last day: the repeat has ended.
    let res = get(&app, &path, &key).await;
    assert_eq!(
        (&res.body["data"]["next_on"], &res.body["data"]["ended"], &res.body["data"]["made"]),
        (&json!(format!("{year}-03-31")), &json!(true), &json!(2))
    );
    move_to(&app, at(Date::from_calendar_date(year, Month::April, 15).unwrap(), 12));
    assert_eq!(round(&app).await, 0);
    let days: Vec<Date> = copies(&app, &t, &template).await.iter().map(|c| c.issue_date).collect();
    assert_eq!(days, [start, feb_end]);
}

#[tokio::test]
async fn a_repeat_left_to_count_from_the_issue_date_keeps_its_day_of_the_month() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeat-anchor").await;
    set_up(&app, &t, "UTC").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let year = app.clock.now_utc().year() + 1;
    let issued = Date::from_calendar_date(year, Month::January, 31).unwrap();
    let res = post(
        &app,
        "/api/v1/invoices",
        &key,
        json!({"client_id": t.org.client, "issue_date": issued.to_string(),
               "lines": [{"description": "Licence", "quantity_milli": 1000, "unit_price_minor": 9_900}]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let template = res.id();
    let path = format!("/api/v1/invoices/{template}/repeat");
    // An end before the first copy (February's) is refused.
    let res = post(&app, &path, &key, json!({"ends_on": issued.to_string()})).await;
    assert_eq!((res.status, field(&res)), (422, "ends_on".to_string()), "{}", res.body);
    let res = post(&app, &path, &key, json!({})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let feb_end = repeats::day(issued, 1, Unit::Month, 1).unwrap();
    assert_eq!(
        (&res.body["data"]["starts_on"], &res.body["data"]["next_on"]),
        (&json!(issued.to_string()), &json!(feb_end.to_string()))
    );
    move_to(&app, at(feb_end, 12));
    assert_eq!(round(&app).await, 1);
    let res = get(&app, &path, &key).await;
    assert_eq!(res.body["data"]["next_on"], json!(format!("{year}-03-31")), "{}", res.body);
    let days: Vec<Date> = copies(&app, &t, &template).await.iter().map(|c| c.issue_date).collect();
    assert_eq!(days, [feb_end]);
}

#[tokio::test]
async fn a_copy_that_cannot_be_made_pauses_its_repeat_and_resuming_skips_the_days_missed() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeat-pause").await;
    set_up(&app, &t, "UTC").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let template = draft(&app, &key, &t).await;
    let path = format!("/api/v1/invoices/{template}/repeat");
    let today = app.clock.now_utc().date();
    let res = post(&app, &path, &key, json!({"starts_on": today.to_string(), "send": true})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    // The draft loses its lines: a copy of it can't be sent.
    let res = patch(&app, &format!("/api/v1/invoices/{template}"), &key, json!({"lines": []})).await;
    assert_eq!(res.status, 200, "{}", res.body);

    assert_eq!(round(&app).await, 0);
    assert!(copies(&app, &t, &template).await.is_empty(), "nothing of the failed copy is kept");
    let repeat = get(&app, &path, &key).await.body["data"].clone();
    assert_eq!((&repeat["paused"], &repeat["made"]), (&json!(true), &json!(0)));
    let problem = repeat["problem"].as_str().unwrap();
    assert!(problem.contains(&format!("Paused on {today}")), "{problem}");
    assert!(problem.contains("An invoice needs at least one line before it is sent."), "{problem}");
    let paused_events: i64 = scalar(
        &app,
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'invoice.repeat_paused'",
        t.org.id.as_uuid(),
    )
    .await;
    assert_eq!(paused_events, 1);
    // Its Owners and Admins are told, each once, with a link to the invoice.
    let (told, people): (i64, i64) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM notifications WHERE organization_id = $1 AND kind = 'invoice_repeat_paused' \
                       AND title LIKE '%stopped repeating: a copy could not be made' AND link LIKE '%/invoices/' || $2), \
                    (SELECT count(*) FROM memberships WHERE organization_id = $1 AND role IN ('owner', 'admin'))",
        )
        .bind(t.org.id.as_uuid())
        .bind(&template)
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert!(people >= 1);
    assert_eq!(told, people);
    // Paused, it stays so: later rounds make nothing and say nothing more.
    assert_eq!(round(&app).await, 0);

    // Mended, and resumed forty days later: it goes on from its next day still to come.
    let res = patch(
        &app,
        &format!("/api/v1/invoices/{template}"),
        &key,
        json!({"lines": [{"description": "Retainer", "quantity_milli": 1000, "unit_price_minor": 20_000}]}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    move_to(&app, at(today + time::Duration::days(40), 12));
    // Resuming one that sends needs invoices.update as well.
    let creator = api_key(&app, &t, "admin", Some(&["invoices.read", "invoices.create"])).await.1;
    patch(&app, &path, &creator, json!({"paused": false})).await.assert_problem(403);
    let res = patch(&app, &path, &key, json!({"paused": false})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let later = today + time::Duration::days(40);
    let next = (0..).map(|n| repeats::day(today, 1, Unit::Month, n).unwrap()).find(|d| *d >= later).unwrap();
    assert_eq!(
        (&res.body["data"]["paused"], &res.body["data"]["next_on"], &res.body["data"]["problem"]),
        (&json!(false), &json!(next.to_string()), &Value::Null)
    );
    assert_eq!(round(&app).await, usize::from(next == later));
    move_to(&app, at(next, 12));
    round(&app).await;
    let made = copies(&app, &t, &template).await;
    assert_eq!(made.iter().map(|c| (c.issue_date, c.status.as_str())).collect::<Vec<_>>(), [(next, "sent")]);
    // A repeated invoice that is voided is not copied any more: its repeat pauses, saying so.
    assert_eq!(post(&app, &format!("/api/v1/invoices/{template}/void"), &key, json!({})).await.status, 200);
    let n = (0..).find(|n| repeats::day(today, 1, Unit::Month, *n) == Some(next)).unwrap();
    move_to(&app, at(repeats::day(today, 1, Unit::Month, n + 1).unwrap(), 12));
    assert_eq!(round(&app).await, 0);
    let repeat = get(&app, &path, &key).await.body["data"].clone();
    assert_eq!(repeat["paused"], true, "{repeat}");
    assert!(repeat["problem"].as_str().unwrap().contains("The repeated invoice was voided"), "{repeat}");
    assert_eq!(copies(&app, &t, &template).await.len(), 1);
    // The creator may pause one, and stop it.
    assert_eq!(patch(&app, &path, &creator, json!({"paused": true})).await.status, 200);
    assert_eq!(delete(&app, &path, &creator).await.status, 204);
}

#[tokio::test]
async fn repeats_refuse_bad_schedules_wrong_keys_and_invoices_that_cannot_repeat() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeat-refusals").await;
    set_up(&app, &t, "UTC").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let template = draft(&app, &key, &t).await;
    let path = format!("/api/v1/invoices/{template}/repeat");
    let today = app.clock.now_utc().date();
    let yesterday = today.previous_day().unwrap().to_string();

    for (body, named) in [
        (json!({"every": 0}), "every"),
        (json!({"every": 13, "unit": "month"}), "every"),
        (json!({"every": 53, "unit": "week"}), "every"),
        (json!({"every": 100000}), "every"),
        (json!({"unit": "day"}), "unit"),
        (json!({"starts_on": yesterday}), "starts_on"),
        (json!({"starts_on": "2099-02-30"}), "starts_on"),
        (json!({"starts_on": "2099-01-01\u{0}"}), "starts_on"),
        (json!({"starts_on": "2099-03-01", "ends_on": "2099-02-28"}), "ends_on"),
    ] {
        let res = post(&app, &path, &key, body.clone()).await;
        assert!(matches!(res.status, 400 | 422), "{body}: {} {}", res.status, res.body);
        if res.status == 422 {
            assert_eq!(field(&res), named, "{body}: {}", res.body);
        }
    }
    let res = post(&app, &path, &key, json!({"every": 1, "stray": true})).await;
    assert!(matches!(res.status, 400 | 422), "{}", res.body);
    // Sending each copy needs invoices.update; reading is not enough to create.
    let creator = api_key(&app, &t, "admin", Some(&["invoices.read", "invoices.create"])).await.1;
    post(&app, &path, &creator, json!({"send": true})).await.assert_problem(403);
    let reader = api_key(&app, &t, "admin", Some(&["invoices.read"])).await.1;
    post(&app, &path, &reader, json!({})).await.assert_problem(403);
    get(&app, &path, &key).await.assert_problem(404);
    assert_eq!(get(&app, "/api/v1/invoice-repeats", &key).await.body["data"], json!([]));

    // A plain repeat by the creator; a second one is refused.
    let res = post(&app, &path, &creator, json!({"every": 2, "unit": "week"})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["data"]["send"], false);
    let res = post(&app, &path, &key, json!({})).await;
    res.assert_problem(409);
    // Turning sending on needs invoices.update; moving the last day before the first is refused.
    patch(&app, &path, &creator, json!({"send": true})).await.assert_problem(403);
    let res = patch(&app, &path, &key, json!({"ends_on": "2000-01-01"})).await;
    assert_eq!((res.status, field(&res)), (422, "ends_on".into()), "{}", res.body);
    let res = patch(&app, &path, &key, json!({"paused": "yes"})).await;
    assert!(matches!(res.status, 400 | 422), "{}", res.body);
    let res = patch(&app, &path, &key, json!({"ends_on": "2099-12-31"})).await;
    assert_eq!(res.body["data"]["ends_on"], "2099-12-31", "{}", res.body);
    let res = patch(&app, &path, &key, json!({"ends_on": null})).await;
    assert_eq!(res.body["data"]["ends_on"], Value::Null, "{}", res.body);

    // A void invoice doesn't repeat; an unknown one is not found.
    let other = draft(&app, &key, &t).await;
    assert_eq!(post(&app, &format!("/api/v1/invoices/{other}/void"), &key, json!({})).await.status, 200);
    post(&app, &format!("/api/v1/invoices/{other}/repeat"), &key, json!({})).await.assert_problem(409);
    post(&app, &format!("/api/v1/invoices/{}/repeat", Uuid::now_v7()), &key, json!({})).await.assert_problem(404);
    // Deleting a repeated draft ends its repeat with it.
    assert_eq!(delete(&app, &format!("/api/v1/invoices/{template}"), &key).await.status, 204);
    assert_eq!(get(&app, "/api/v1/invoice-repeats", &key).await.body["data"], json!([]));
}

#[tokio::test]
async fn the_invoice_page_sets_up_pauses_resumes_and_stops_a_repeat() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "repeat-page").await;
    let slug = org.slug.clone();
    let invoice = crate::support::work::fixture(&app, &org, "invoice", &[]).await.unwrap();
    let page = format!("/o/{slug}/invoices/{invoice}");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains(&format!("action=\"{page}/repeat\"")), "{html}");
    assert!(html.contains("Repeat this invoice"), "{html}");

    // A word where a number goes: the form again, saying so, with what was typed.
    let res = owner.submit(&page, &format!("{page}/repeat"), &[("every", "often"), ("unit", "week")]).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("Every must be a whole number from 1 to 52."), "{html}");
    assert!(html.contains("<option value=\"week\" selected>"), "{html}");

    let today = app.clock.now_utc().date().to_string();
    let res = owner
        .submit(
            &page,
            &format!("{page}/repeat"),
            &[("every", "1"), ("unit", "month"), ("starts_on", &today), ("send", "1")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{page}#repeat"));
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Repeat set up: a copy of this invoice is made on each of its days."), "{html}");
    assert!(html.contains(">Running</span> A copy every month, counted from "), "{html}");
    assert!(html.contains("sent to the client by email"), "{html}");
    assert!(html.contains("<dt>Next copy</dt>"), "{html}");
    // Today's copy, made by the worker, says where it came from.
    assert_eq!(round(&app).await, 1);
    let copy: Uuid = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT id FROM invoices WHERE repeated_from = $1::uuid")
            .bind(&invoice)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let (_, html) = owner.page(&format!("/o/{slug}/invoices/{copy}")).await;
    assert!(html.contains(&format!("<a href=\"{page}#repeat\">the repeat of another invoice</a>")), "{html}");
    let (status, list) = owner.page(&format!("/o/{slug}/invoices/repeating")).await;
    assert_eq!(status, 200, "{list}");
    assert!(list.contains(&format!("href=\"{page}#repeat\"")) && list.contains("every month"), "{list}");
    let (_, invoices) = owner.page(&format!("/o/{slug}/invoices")).await;
    assert!(
        invoices.contains(&format!("href=\"{page}#repeat\" title=\"Copied on a schedule\">Repeats</a>")),
        "{invoices}"
    );

    let res = owner.submit(&page, &format!("{page}/repeat/pause"), &[]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains(">Paused</span>") && html.contains(&format!("action=\"{page}/repeat/resume\"")), "{html}");
    assert!(!html.contains("<dt>Next copy</dt>"), "{html}");
    let res = owner.submit(&page, &format!("{page}/repeat/resume"), &[]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains(">Running</span>"), "{html}");
    // Stopping asks first, then stops: the form is back.
    let res = owner.submit(&page, &format!("{page}/repeat/delete"), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Stop repeating this invoice?"));
    let res = owner.submit(&page, &format!("{page}/repeat/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Stopped repeating: the copies made so far stay."), "{html}");
    assert!(html.contains(&format!("action=\"{page}/repeat\"")), "{html}");

    // A Member may not set one up.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    member.page(&format!("/o/{slug}")).await;
    let token = member.token();
    let res = member.post_with(&format!("{page}/repeat"), &[("every", "1")], Some(&token), true).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_repeats_schedule_changes_from_its_next_copy_on_and_never_makes_two_copies_on_one_day() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "repeat-change").await;
    set_up(&app, &t, "UTC").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let template = draft(&app, &key, &t).await;
    let path = format!("/api/v1/invoices/{template}/repeat");
    let today = app.clock.now_utc().date();
    let res = post(&app, &path, &key, json!({"starts_on": today.to_string()})).await;
    assert_eq!(res.status, 201, "{}", res.body);
    // Today's copy is made; the next would be a month on.
    assert_eq!(round(&app).await, 1);
    let month_on = repeats::day(today, 1, Unit::Month, 1).unwrap();
    assert_eq!(get(&app, &path, &key).await.body["data"]["next_on"], json!(month_on.to_string()));

    // The same schedule sent back changes nothing (not even what it counts from).
    let res = patch(&app, &path, &key, json!({"every": 1, "unit": "month", "next_on": month_on.to_string()})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["starts_on"], json!(today.to_string()));

    // Refused by name, nothing changed: today again (a copy was made today), a day gone by, an
    // interval out of bounds for its unit, a last day before the next copy.
    let yesterday = today - time::Duration::days(1);
    for (body, field_name, says) in [
        (json!({"next_on": today.to_string()}), "next_on", "must be after the day of the last copy"),
        (json!({"next_on": yesterday.to_string()}), "next_on", "must not be before today"),
        (json!({"every": 13}), "every", ""),
        (json!({"every": 0, "unit": "week"}), "every", ""),
        (json!({"unit": "fortnight"}), "unit", ""),
        (json!({"next_on": "2031-02-30"}), "next_on", ""),
        (
            json!({"next_on": (today + time::Duration::days(10)).to_string(), "ends_on": (today + time::Duration::days(9)).to_string()}),
            "ends_on",
            "must not be before the next copy's day",
        ),
    ] {
        let res = patch(&app, &path, &key, body.clone()).await;
        assert_eq!((res.status, field(&res)), (422, field_name.to_string()), "{body}: {}", res.body);
        assert!(res.body.to_string().contains(says), "{body}: {}", res.body);
    }
    assert_eq!(get(&app, &path, &key).await.body["data"]["next_on"], json!(month_on.to_string()));

    // Every two weeks from tomorrow: tomorrow's copy, then a fortnight later, and no other.
    let tomorrow = today + time::Duration::days(1);
    let res = patch(&app, &path, &key, json!({"every": 2, "unit": "week", "next_on": tomorrow.to_string()})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let r = &res.body["data"];
    assert_eq!(
        (&r["every"], &r["unit"], &r["next_on"], &r["starts_on"], &r["made"]),
        (&json!(2), &json!("week"), &json!(tomorrow.to_string()), &json!(tomorrow.to_string()), &json!(1))
    );
    let changed: i64 = scalar(
        &app,
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'invoice.repeat_updated' \
         AND before->>'unit' = 'month' AND after->>'unit' = 'week'",
        t.org.id.as_uuid(),
    )
    .await;
    assert_eq!(changed, 1);
    assert_eq!(round(&app).await, 0, "nothing more today");
    move_to(&app, at(tomorrow, 12));
    assert_eq!(round(&app).await, 1);
    move_to(&app, at(tomorrow + time::Duration::days(13), 12));
    assert_eq!(round(&app).await, 0);
    move_to(&app, at(tomorrow + time::Duration::days(14), 12));
    assert_eq!(round(&app).await, 1);
    let days: Vec<Date> = copies(&app, &t, &template).await.iter().map(|c| c.issue_date).collect();
    assert_eq!(days, [today, tomorrow, tomorrow + time::Duration::days(14)]);
    // A key that may only read invoices changes nothing.
    let reader = api_key(&app, &t, "admin", Some(&["invoices.read"])).await.1;
    patch(&app, &path, &reader, json!({"every": 1})).await.assert_problem(403);
}

#[tokio::test]
async fn the_invoice_page_changes_a_repeats_schedule_and_says_what_is_wrong() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "repeat-change-page").await;
    let slug = org.slug.clone();
    let invoice = crate::support::work::fixture(&app, &org, "repeated_invoice", &[]).await.unwrap();
    let page = format!("/o/{slug}/invoices/{invoice}");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("<summary>Change the schedule</summary>"), "{html}");
    assert!(html.contains(&format!("action=\"{page}/repeat/edit\"")), "{html}");
    let next: String = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT next_on::text FROM invoice_repeats WHERE invoice_id = $1::uuid")
            .bind(&invoice)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert!(html.contains(&format!("name=\"next_on\" value=\"{next}\"")), "filled with the next copy's day: {html}");

    // A day gone by: the page again, the field named and marked, the form open with what was
    // typed.
    let yesterday = (app.clock.now_utc().date() - time::Duration::days(1)).to_string();
    let res = owner
        .submit(&page, &format!("{page}/repeat/edit"), &[("every", "3"), ("unit", "week"), ("next_on", &yesterday)])
        .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("must not be before today") && html.contains("aria-invalid=\"true\""), "{html}");
    assert!(html.contains("<details class=\"repeat-change\" open>"), "{html}");
    assert!(html.contains(&format!("value=\"{yesterday}\"")) && html.contains("value=\"3\""), "{html}");

    let later = (app.clock.now_utc().date() + time::Duration::days(3)).to_string();
    let res = owner
        .submit(
            &page,
            &format!("{page}/repeat/edit"),
            &[("every", "3"), ("unit", "week"), ("next_on", &later), ("ends_on", ""), ("send", "1")],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{page}#repeat"));
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Schedule saved."), "{html}");
    assert!(html.contains(&format!("A copy every 3 weeks, counted from {later}")), "{html}");
    assert!(html.contains("sent to the client by email"), "{html}");
    // A Member may not change it; another organization finds nothing.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    member.page(&format!("/o/{slug}")).await;
    let token = member.token();
    let res = member.post_with(&format!("{page}/repeat/edit"), &[("every", "1")], Some(&token), true).await;
    assert_eq!(res.status(), 403);
    let mut other = org_with_every_role(&app, "repeat-change-other").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    let res =
        stranger.submit("/orgs/new", &format!("{page}/repeat/edit"), &[("every", "1"), ("next_on", &later)]).await;
    assert_eq!(res.status(), 404);
}
