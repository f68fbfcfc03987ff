//! Approving time: a manager approves another person's week as its page showed it; approved
//! time is then fixed for everyone (pages, API, and the database itself) until the week is
//! reopened; time changed between the page and the approval is never approved unseen; nobody
//! approves their own week; the approvals page says whose weeks await approval.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{hidden_value, location};
use serde_json::json;
use uuid::Uuid;

use crate::support::api::{count, delete, get, patch, post};
use crate::support::orgs::{Org, org_with_every_role};
use crate::support::work::{insert_time, project_with_member};
use crate::support::{api_key, sql};

/// What `user` was told about their weeks: (title, body, link), oldest first.
async fn told(app: &TestApp, user: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT title, body, link FROM notifications WHERE recipient_id = $1 AND kind = 'time_approved'          ORDER BY created_at, title",
    )
    .bind(user)
    .fetch_all(&mut app.db.admin_conn().await)
    .await
    .unwrap()
}

/// An organization with every role, and a project of its client with the Member in it.
struct Setup {
    org: Org,
    org_id: Uuid,
    client: Uuid,
    member: Uuid,
    project: Uuid,
}

async fn setup(app: &TestApp, slug: &str) -> Setup {
    let org = org_with_every_role(app, slug).await;
    let (org_id, client): (Uuid, Uuid) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let project = project_with_member(app, org_id, client, "Relaunch", member).await;
    Setup { org, org_id, client, member, project }
}

async fn approved(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) FROM time_entries WHERE approved_at IS NOT NULL").await
}

#[tokio::test]
async fn a_week_is_approved_as_seen_by_someone_else_and_stays_fixed_until_reopened() {
    let app = TestApp::spawn().await;
    let Setup { mut org, org_id, member, project, .. } = setup(&app, "approve").await;
    let manager: Uuid = org.people["manager"].user_id.parse().unwrap();
    let slug = org.slug.clone();
    let wireframes = insert_time(&app, org_id, project, member, "2026-11-30", 90, "Wireframes").await;
    insert_time(&app, org_id, project, member, "2026-12-02", 60, "Review").await;
    // Another week's time and another person's stay out of it.
    insert_time(&app, org_id, project, member, "2026-12-07", 15, "Next week").await;
    insert_time(&app, org_id, project, manager, "2026-12-01", 120, "Manager's own").await;
    // Fourteen hours ahead of UTC: the day an approval is shown on is the organization's.
    sql(&app, "UPDATE organizations SET timezone = 'Pacific/Kiritimati' WHERE id = $1", &[org_id]).await;
    let week = format!("/o/{slug}/time/week?week=2026-12-02&person={member}");
    let approve = format!("/o/{slug}/time/week/approve");
    let reopen = format!("/o/{slug}/time/week/reopen");

    // The Member's own week says it awaits approval, and offers no approving.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = m.page(&format!("/o/{slug}/time/week?week=2026-12-02")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Awaiting approval: 2 entries (2h 30m)."), "{html}");
    assert!(!html.contains("Approve this week") && !html.contains("/approvals"), "{html}");
    let own_seen = hidden_value(&html, "seen");
    assert_eq!(own_seen, None, "a form to approve one's own week: {html}");
    let own_week = format!("/o/{slug}/time/week?week=2026-12-02");
    let tab = format!("/o/{slug}/projects/{project}/time");
    let res = m.submit(&tab, &approve, &[("person", &member.to_string()), ("week", "2026-11-30"), ("seen", "x")]).await;
    assert_eq!(res.status(), 403, "a Member approved");
    let body = res.text().await.unwrap();
    assert!(!body.contains("could not be accepted"), "refused as a forgery, not for its role: {body}");

    // The Manager sees the Member's week awaiting approval, with the form.
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let (status, html) = g.page(&week).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Week of") && html.contains("Awaiting approval: 2 entries (2h 30m)."), "{html}");
    let seen = hidden_value(&html, "seen").expect("the approve form");
    // Each entry the approval would fix is on the page: its note, day and standing; another
    // week's and another person's are not.
    assert!(html.contains("<td>Mon 30</td>") && html.contains("<td>Wireframes</td>"), "{html}");
    assert!(html.contains("<td>Wed 2</td>") && html.contains("<td>Review</td>"), "{html}");
    assert_eq!(html.matches("Awaiting approval</span>").count(), 2, "{html}");
    assert!(!html.contains("<td>Next week</td>") && !html.contains("s own</td>"), "{html}");
    assert!(html.contains(&format!("href=\"/o/{slug}/time/approvals?week=2026-11-30\"")), "{html}");

    // Their own week can't be approved by them (nor reopened).
    let (_, own) = g.page(&own_week).await;
    assert!(!own.contains("Approve this week"), "{own}");
    for route in [&approve, &reopen] {
        let res =
            g.submit(&week, route, &[("person", &manager.to_string()), ("week", "2026-12-01"), ("seen", "x")]).await;
        assert_eq!(res.status(), 403, "{route}");
        let body = res.text().await.unwrap();
        assert!(body.contains("your own time; someone else who approves time must"), "{body}");
    }

    // The Member records more time meanwhile: what the page showed is no longer the week, so
    // nothing is approved and the Manager is told to look again.
    let late = insert_time(&app, org_id, project, member, "2026-12-03", 30, "Late addition").await;
    let res =
        g.submit(&week, &approve, &[("person", &member.to_string()), ("week", "2026-12-02"), ("seen", &seen)]).await;
    assert_eq!(res.status(), 409);
    let body = res.text().await.unwrap();
    assert!(body.contains("changed since the page was opened, so nothing was approved"), "{body}");
    assert!(body.contains("Awaiting approval: 3 entries (3h)."), "the week as it is now: {body}");
    assert_eq!(approved(&app).await, 0);

    // Malformed forms are refused by name and approve nothing.
    for (field, value) in [("week", "2026-02-30"), ("person", "not-an-id"), ("week", "2026-12-02\u{0}")] {
        let mut fields =
            vec![("person", member.to_string()), ("week", "2026-12-02".to_string()), ("seen", seen.clone())];
        fields.retain(|(k, _)| *k != field);
        fields.push((field, value.to_string()));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = g.submit(&week, &approve, &fields).await;
        assert!(matches!(res.status().as_u16(), 400 | 422), "{field}={value:?}: {}", res.status());
    }
    assert_eq!(approved(&app).await, 0);

    // Looked at again, approved: the three entries of that week, by the Manager, told once.
    let (_, html) = g.page(&week).await;
    let seen = hidden_value(&html, "seen").unwrap();
    let res =
        g.submit(&week, &approve, &[("person", &member.to_string()), ("week", "2026-12-02"), ("seen", &seen)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/o/{slug}/time/week?week=2026-11-30&person={member}#approval"));
    let (_, html) = g.page(&week).await;
    assert!(html.contains("Week approved. Its time is fixed until the week is reopened."), "{html}");
    let day: String = sqlx::query_scalar(
        "SELECT (approved_at AT TIME ZONE 'Pacific/Kiritimati')::date::text FROM time_entries WHERE id = $1",
    )
    .bind(wireframes)
    .fetch_one(&mut app.db.admin_conn().await)
    .await
    .unwrap();
    assert!(html.contains(&format!("Approved: 3 entries (3h), last by manager@approve.test on {day}.")), "{html}");
    assert!(!html.contains("Awaiting approval") && !html.contains("Approve this week"), "{html}");
    assert!(html.contains("Reopen this week"), "{html}");
    assert_eq!(approved(&app).await, 3);
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM time_entries WHERE approved_by = '{manager}' AND spent_on BETWEEN '2026-11-30' AND '2026-12-06'"
            )
        )
        .await,
        3
    );
    let after: serde_json::Value =
        sqlx::query_scalar("SELECT after FROM audit_events WHERE action = 'time.approved' AND target_id = $1")
            .bind(member.to_string())
            .fetch_one(&mut app.db.admin_conn().await)
            .await
            .unwrap();
    assert_eq!(after, json!({"week": "2026-11-30", "entries": 3, "minutes": 180}));
    // The Member is told, with a link to the week.
    assert_eq!(
        told(&app, member).await,
        vec![(
            "Your week of 2026-11-30 is approved".to_string(),
            "3 entries are approved; it can't be changed until the week is reopened.".to_string(),
            format!("/o/{slug}/time/week?week=2026-11-30"),
        )]
    );
    // A link with a query is a path of this site still: one naming another host is refused.
    for forged in ["//evil.test/x", "/o/x?next=https://evil.test", "/o/x?a=<b>"] {
        let refused = sqlx::query("UPDATE notifications SET link = $2 WHERE recipient_id = $1")
            .bind(member)
            .bind(forged)
            .execute(&mut app.db.admin_conn().await)
            .await;
        assert!(refused.is_err(), "{forged} stored as a link");
    }
    // Approving again has nothing to approve.
    let res =
        g.submit(&week, &approve, &[("person", &member.to_string()), ("week", "2026-12-02"), ("seen", &seen)]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("its time is approved already"));

    // Approved time is fixed for its author, for the Manager, and through the API.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = m.page(&tab).await;
    assert!(html.contains("<span class=\"badge\">Approved</span>"), "{html}");
    assert!(!html.contains(&format!("time/{wireframes}/edit")), "Edit offered on approved time: {html}");
    let (status, html) = m.page(&format!("{tab}/{wireframes}/edit")).await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains("This time is approved and can")
            && html.contains("someone who approves time must reopen its week first."),
        "{html}"
    );
    let res = m.submit(&tab, &format!("{tab}/{wireframes}/delete"), &[("confirm", "yes")]).await;
    assert_eq!(res.status(), 409);
    let key = api_key(&app, org_id, "approvals").await;
    let entry = format!("/api/v1/time-entries/{wireframes}");
    let res = get(&app, &entry, &key).await;
    assert!(res.body["data"]["approved_at"].is_string(), "{:?}", res.body);
    patch(&app, &entry, &key, json!({"minutes": 30})).await.assert_problem(409);
    delete(&app, &entry, &key).await.assert_problem(409);
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM time_entries WHERE id = '{wireframes}' AND minutes = 90")).await,
        1
    );
    // Below the services too: no statement changes an approved entry's facts, not even the
    // database owner's; billing it and reopening it stay possible.
    let mut admin = app.db.admin_conn().await;
    let refused =
        sqlx::query("UPDATE time_entries SET minutes = 1 WHERE id = $1").bind(wireframes).execute(&mut admin).await;
    let error = refused.expect_err("approved time changed").to_string();
    assert!(error.contains("approved time can't be changed"), "{error}");
    sql(&app, "UPDATE time_entries SET approved_at = NULL, approved_by = NULL, minutes = 91 WHERE id = $1", &[late])
        .await;
    sql(
        &app,
        "UPDATE time_entries SET minutes = 30, approved_at = now(), approved_by = $2 WHERE id = $1",
        &[late, manager],
    )
    .await;

    // Reopened by the Manager (the Member can't): changeable again, awaiting approval again.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let res = m.submit(&tab, &reopen, &[("person", &member.to_string()), ("week", "2026-12-02")]).await;
    assert_eq!(res.status(), 403);
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let res = g.submit(&week, &reopen, &[("person", &member.to_string()), ("week", "2026-12-02")]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = g.page(&week).await;
    assert!(html.contains("Week reopened. Its time can be changed again."), "{html}");
    assert!(html.contains("Awaiting approval: 3 entries (3h)."), "{html}");
    assert_eq!(approved(&app).await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action = 'time.reopened'").await, 1);
    assert_eq!(
        told(&app, member).await.last().map(|(title, body, _)| (title.clone(), body.clone())),
        Some((
            "Your week of 2026-11-30 is reopened".to_string(),
            "3 entries can be changed again, and wait for approval again.".to_string()
        ))
    );
    let res = g.submit(&week, &reopen, &[("person", &member.to_string()), ("week", "2026-12-02")]).await;
    assert_eq!(res.status(), 409, "reopened twice");
    patch(&app, &entry, &key, json!({"minutes": 95})).await;
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM time_entries WHERE id = '{wireframes}' AND minutes = 95")).await,
        1
    );
}

#[tokio::test]
async fn the_approvals_page_lists_whose_weeks_await_approval() {
    let app = TestApp::spawn().await;
    let Setup { mut org, org_id, member, project, .. } = setup(&app, "approvals").await;
    let manager: Uuid = org.people["manager"].user_id.parse().unwrap();
    let slug = org.slug.clone();
    insert_time(&app, org_id, project, member, "2026-11-30", 90, "Design").await;
    let approved_one = insert_time(&app, org_id, project, manager, "2026-12-01", 45, "Calls").await;
    sql(
        &app,
        "UPDATE time_entries SET approved_at = now(), approved_by = (SELECT user_id FROM memberships \
         WHERE organization_id = $2 AND role = 'owner' LIMIT 1) WHERE id = $1",
        &[approved_one, org_id],
    )
    .await;
    let page = format!("/o/{slug}/time/approvals?week=2026-12-03");

    // Found from the Time page by those who approve, not by Members.
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let (_, html) = g.page(&format!("/o/{slug}/time")).await;
    assert!(html.contains(&format!("href=\"/o/{slug}/time/approvals\"")), "{html}");
    let (status, html) = g.page(&page).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("2026-11-30 – 2026-12-06"), "{html}");
    assert!(html.contains("1 person's week awaits approval."), "{html}");
    let link = format!("href=\"/o/{slug}/time/week?week=2026-11-30&#38;person={member}\"");
    assert!(html.contains(&link), "{html}");
    // The Member's week (awaiting) comes before the Manager's own (approved).
    let member_row = html.find(&link).unwrap();
    let manager_row = html.find(&format!("person={manager}")).unwrap();
    assert!(member_row < manager_row, "{html}");
    assert!(html.contains("1 entry (1h 30m)") && html.contains("1 entry (45m)"), "{html}");
    assert!(html.contains("(you)"), "{html}");
    // An empty week says so.
    let (_, html) = g.page(&format!("/o/{slug}/time/approvals?week=2025-01-01")).await;
    assert!(html.contains("Nobody recorded time this week."), "{html}");
    let (status, _) = g.page(&format!("/o/{slug}/time/approvals?week=yesterday")).await;
    assert!(matches!(status, 400 | 422), "{status}");
    // The calendar's last week is shown without a next one; a day whose week would end past
    // the calendar is refused by name, on both pages.
    for path in ["approvals", "week"] {
        let (status, html) = g.page(&format!("/o/{slug}/time/{path}?week=9999-12-26")).await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("9999-12-20 – 9999-12-26") && !html.contains("rel=\"next\""), "{html}");
        let (status, html) = g.page(&format!("/o/{slug}/time/{path}?week=9999-12-31")).await;
        assert_eq!(status, 422, "{html}");
        assert!(html.contains("must be in a week that ends by 9999-12-31"), "{html}");
    }

    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = m.page(&format!("/o/{slug}/time")).await;
    assert!(!html.contains("/time/approvals"), "{html}");
    assert_eq!(m.page(&page).await.0, 403);
}

#[tokio::test]
async fn the_api_approves_a_week_as_read_and_nothing_deletes_approved_time() {
    let app = TestApp::spawn().await;
    let Setup { org, org_id, member, project, .. } = setup(&app, "apiapprove").await;
    let owner: Uuid = org.people["owner"].user_id.parse().unwrap();
    let (column, parent, subtask) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sql(
        &app,
        "INSERT INTO board_columns (organization_id, id, project_id, name, position) VALUES ($1, $2, $3, 'To do', 0)",
        &[org_id, column, project],
    )
    .await;
    for (task, parent_id) in [(parent, None), (subtask, Some(parent))] {
        sqlx::query(
            "INSERT INTO tasks (organization_id, id, project_id, column_id, parent_id, title, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'Task', now(), now())",
        )
        .bind(org_id)
        .bind(task)
        .bind(project)
        .bind(column)
        .bind(parent_id)
        .execute(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    }
    let entry = insert_time(&app, org_id, project, member, "2026-12-01", 50, "On the subtask").await;
    sql(&app, "UPDATE time_entries SET task_id = $2 WHERE id = $1", &[entry, subtask]).await;
    // The key acts for the Owner.
    let key = api_key(&app, org_id, "approvals").await;
    let read = format!("/api/v1/time-approvals?user_id={member}&week=2026-12-03");

    let res = get(&app, &read, &key).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let week = &res.body["data"];
    assert_eq!(
        (week["week"].as_str(), week["pending_entries"].as_i64(), week["pending_minutes"].as_i64()),
        (Some("2026-11-30"), Some(1), Some(50))
    );
    assert!(week["last_approved_at"].is_null());
    let seen = week["seen"].as_str().unwrap().to_string();

    // Refused by name, with nothing approved: a malformed week, person or `seen`, a week past
    // the calendar's end; a stale `seen` is a 409; the key creator's own week a 403.
    let approve = "/api/v1/time-approvals/approve";
    for (body, field) in [
        (json!({"user_id": member, "week": "2026-02-30", "seen": seen}), "week"),
        (json!({"user_id": member, "week": "9999-12-31", "seen": seen}), "week"),
        (json!({"user_id": "someone", "week": "2026-12-01", "seen": seen}), "user_id"),
        (json!({"user_id": member, "week": "2026-12-01", "seen": " "}), "seen"),
    ] {
        post(&app, approve, &key, body).await.assert_problem_field(422, field);
    }
    let res = get(&app, "/api/v1/time-approvals?week=9999-12-31", &key).await;
    res.assert_problem_field(422, "week");
    post(&app, approve, &key, json!({"user_id": member, "week": "2026-12-01", "seen": "0000"}))
        .await
        .assert_problem(409);
    post(&app, approve, &key, json!({"user_id": owner, "week": "2026-12-01", "seen": seen})).await.assert_problem(403);
    assert_eq!(approved(&app).await, 0);

    // Approved as read.
    let res = post(&app, approve, &key, json!({"user_id": member, "week": "2026-12-05", "seen": seen})).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(res.body["data"], json!({"user_id": member, "week": "2026-11-30", "entries": 1}));
    let week = get(&app, &read, &key).await.body["data"].clone();
    assert_eq!((week["pending_entries"].as_i64(), week["approved_entries"].as_i64()), (Some(0), Some(1)));
    assert!(week["last_approved_at"].is_string(), "{week}");

    // Deleting what holds it would delete it: the subtask, its parent, the project all refuse.
    for path in
        [format!("/api/v1/tasks/{subtask}"), format!("/api/v1/tasks/{parent}"), format!("/api/v1/projects/{project}")]
    {
        let res = delete(&app, &path, &key).await;
        res.assert_problem(409);
        assert!(res.body["detail"].as_str().unwrap().contains("holds approved time (1 entry)"), "{:?}", res.body);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM tasks").await, 2);

    // Reopened, the parent task goes with its subtask and its time.
    let reopen = "/api/v1/time-approvals/reopen";
    let res = post(&app, reopen, &key, json!({"user_id": member, "week": "2026-11-30"})).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(res.body["data"]["entries"], 1);
    post(&app, reopen, &key, json!({"user_id": member, "week": "2026-11-30"})).await.assert_problem(409);
    assert_eq!(delete(&app, &format!("/api/v1/tasks/{parent}"), &key).await.status, 204);
    assert_eq!(count(&app, "SELECT count(*) FROM time_entries").await, 0);
}

#[tokio::test]
async fn a_draft_invoice_can_bill_only_approved_time() {
    let app = TestApp::spawn().await;
    let Setup { mut org, org_id, client, member, project } = setup(&app, "billapproved").await;
    let approved_entry = insert_time(&app, org_id, project, member, "2026-11-30", 60, "Approved week").await;
    let open_entry = insert_time(&app, org_id, project, member, "2026-12-07", 30, "Open week").await;
    let owner: Uuid = org.people["owner"].user_id.parse().unwrap();
    sql(
        &app,
        "UPDATE time_entries SET billable = true, approved_at = now(), approved_by = $2 WHERE id = $1",
        &[approved_entry, owner],
    )
    .await;
    sql(&app, "UPDATE time_entries SET billable = true WHERE id = $1", &[open_entry]).await;
    let invoice = Uuid::now_v7();
    sql(
        &app,
        "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at) \
         VALUES ($1, $2, $3, 'USD', current_date, current_date + 30, now())",
        &[org_id, invoice, client],
    )
    .await;
    let slug = org.slug.clone();
    let page = format!("/o/{slug}/invoices/{invoice}");
    let billed = |id: Uuid| format!("SELECT count(*) FROM time_entries WHERE id = '{id}' AND invoice_id IS NOT NULL");

    // The picker says which time is approved and offers to bill only that.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = o.page(&page).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Only approved time") && html.contains("<th scope=\"col\">Approval</th>"), "{html}");
    assert!(html.contains("<td>Approved</td>") && html.contains("<span class=\"muted\">Not yet</span>"), "{html}");

    // Ticking the open week's entry with "only approved" bills nothing, and says why.
    let res =
        o.submit(&page, &format!("{page}/time"), &[("entry", &open_entry.to_string()), ("approved_only", "1")]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("or not approved"));
    // A malformed flag is refused by name.
    let res = o.submit(&page, &format!("{page}/time"), &[("approved_only", "yes")]).await;
    assert_eq!(res.status(), 422);
    assert_eq!((count(&app, &billed(approved_entry)).await, count(&app, &billed(open_entry)).await), (0, 0));

    // Every approved entry matching the filters: the approved one alone.
    let res = o.submit(&page, &format!("{page}/time"), &[("approved_only", "1"), ("group", "entry")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!((count(&app, &billed(approved_entry)).await, count(&app, &billed(open_entry)).await), (1, 0));

    // Through the API: no approved time is left to bill; without the flag, the rest is billed.
    let key = api_key(&app, org_id, "billing").await;
    let bill = format!("/api/v1/invoices/{invoice}/time");
    let res = post(&app, &bill, &key, json!({"approved_only": true})).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("no unbilled billable, approved time"), "{:?}", res.body);
    post(&app, &bill, &key, json!({"approved_only": null})).await.assert_problem_field(422, "approved_only");
    assert_eq!(post(&app, &bill, &key, json!({"approved_only": false})).await.status, 200);
    assert_eq!(count(&app, &billed(open_entry)).await, 1);
}
