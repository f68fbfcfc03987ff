//! Correcting a time entry or an expense on its own page: reached from its row, filled with what
//! was recorded, saved back to where it was opened from; a mistyped field is refused by name
//! with what was typed kept and nothing written; only the author or someone who manages
//! projects may open it, never once billed, and never through another project's address.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use uuid::Uuid;

use crate::support::api::count;
use crate::support::orgs::org_with_every_role;
use crate::support::sql;
use crate::support::work::{project_with_member, web_draft};

async fn entry_row(app: &TestApp, id: Uuid) -> (i32, String, String, bool, Option<Uuid>) {
    sqlx::query_as("SELECT minutes, spent_on::text, note, billable, task_id FROM time_entries WHERE id = $1")
        .bind(id)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_time_entry_is_corrected_on_its_page_by_its_author_or_a_manager_and_not_once_billed() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "timeedit").await;
    let (org_id, client): (Uuid, Uuid) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let project = project_with_member(&app, org_id, client, "Relaunch", member).await;
    let other_project = project_with_member(&app, org_id, client, "Other", member).await;
    let (task, column) = (Uuid::now_v7(), Uuid::now_v7());
    sql(
        &app,
        "INSERT INTO board_columns (organization_id, id, project_id, name, position) VALUES ($1, $2, $3, 'To do', 0)",
        &[org_id, column, project],
    )
    .await;
    sql(
        &app,
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'Homepage copy', now(), now())",
        &[org_id, task, project, column],
    )
    .await;
    let other_task = Uuid::now_v7();
    let other_column = Uuid::now_v7();
    sql(
        &app,
        "INSERT INTO board_columns (organization_id, id, project_id, name, position) VALUES ($1, $2, $3, 'To do', 0)",
        &[org_id, other_column, other_project],
    )
    .await;
    sql(
        &app,
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'Elsewhere', now(), now())",
        &[org_id, other_task, other_project, other_column],
    )
    .await;
    let slug = org.slug.clone();
    let tab = format!("/o/{slug}/projects/{project}/time");

    // The Member records 1:30 and finds Edit on its row, which opens the page filled in.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let res = m.submit(&tab, &tab, &[("minutes", "1:30"), ("note", "Typo"), ("from", "project")]).await;
    assert_eq!(res.status(), 303);
    let entry: Uuid =
        sqlx::query_scalar("SELECT id FROM time_entries").fetch_one(&mut app.db.admin_conn().await).await.unwrap();
    let edit = format!("{tab}/{entry}/edit");
    let (_, html) = m.page(&tab).await;
    assert!(html.contains(&format!("href=\"{edit}\"")), "no Edit on the row: {html}");
    let (status, html) = m.page(&edit).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("value=\"1:30\"") && html.contains("value=\"Typo\""), "{html}");
    assert!(html.contains("<option value=\"yes\" selected>Yes</option>"), "billable by default: {html}");
    assert!(html.contains(&format!("<option value=\"{task}\">Homepage copy</option>")), "{html}");
    assert!(!html.contains("Elsewhere"), "another project's task offered: {html}");
    assert!(!html.contains("Recorded by"), "their own entry: {html}");

    // Saved: back on the tab with the message; every field as typed; one audit event.
    let before_audit = count(&app, "SELECT count(*) FROM audit_events WHERE action = 'time.updated'").await;
    let res = m
        .submit(
            &edit,
            &edit,
            &[
                ("minutes", "2h 15m"),
                ("spent_on", "2026-11-30"),
                ("task_id", &task.to_string()),
                ("note", "Homepage copy, second round"),
                ("billable", "no"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(location(&res), tab);
    let (_, html) = m.page(&tab).await;
    assert!(html.contains("Time entry saved.") && html.contains("2h 15m"), "{html}");
    assert!(html.contains("<th>Billing</th>") && html.contains("<td>Not billable</td>"), "{html}");
    assert_eq!(
        entry_row(&app, entry).await,
        (135, "2026-11-30".into(), "Homepage copy, second round".into(), false, Some(task))
    );
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action = 'time.updated'").await, before_audit + 1);

    // Typed wrong: 422 on the page, the field named and marked, what was typed kept, nothing
    // written.
    let bad_task = other_task.to_string();
    for (field, value, says) in [
        ("minutes", "25h", "must be at most 24 hours"),
        ("minutes", "abc", "must be a duration like 1:30"),
        ("minutes", "", "is required"),
        ("spent_on", "2026-02-30", "must be a date like 2026-01-31"),
        ("spent_on", "", "must be a date like 2026-01-31"),
        ("task_id", bad_task.as_str(), "is not a task of this entry"),
        ("task_id", "not-an-id", "is not a valid id"),
        ("note", "bell\u{7}", "must not contain control characters"),
        ("billable", "maybe", "must be yes or no"),
    ] {
        let mut fields =
            vec![("minutes", "1:00"), ("spent_on", "2026-12-01"), ("task_id", ""), ("note", "x"), ("billable", "yes")];
        fields.retain(|f| f.0 != field);
        fields.push((field, value));
        let res = m.submit(&edit, &edit, &fields).await;
        assert_eq!(res.status(), 422, "{field}={value:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains("aria-invalid=\"true\""), "{field}={value:?}: {html}");
        assert!(html.contains(says), "{field}={value:?}: {html}");
        if field == "minutes" && !value.is_empty() {
            assert!(html.contains(&format!("value=\"{value}\"")), "{value} not kept: {html}");
        }
        assert_eq!(entry_row(&app, entry).await.0, 135, "{field}={value:?} wrote something");
    }

    // Someone who may not read tasks is offered no task, and saving keeps the entry's own.
    sql(
        &app,
        "INSERT INTO member_permissions (organization_id, user_id, permission, granted) VALUES ($1, $2, 'tasks.read', false)",
        &[org_id, member],
    )
    .await;
    let (status, html) = m.page(&edit).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("name=\"task_id\"") && !html.contains("Homepage copy</option>"), "{html}");
    let res = m
        .submit(
            &edit,
            &edit,
            &[("minutes", "2:15"), ("spent_on", "2026-11-30"), ("note", "No tasks"), ("billable", "no")],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(entry_row(&app, entry).await, (135, "2026-11-30".into(), "No tasks".into(), false, Some(task)));
    sql(&app, "DELETE FROM member_permissions WHERE user_id = $1", &[member]).await;

    // A NUL byte is refused before the form is read, naming the field.
    let res = m.submit(&edit, &edit, &[("minutes", "1:00"), ("spent_on", "2026-12-01"), ("note", "a\u{0}b")]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("must not contain a NUL character"));
    assert_eq!(entry_row(&app, entry).await.0, 135);

    // From the task's page, Edit leads back to the task.
    let (_, html) = m.page(&format!("/o/{slug}/tasks/{task}")).await;
    assert!(html.contains(&format!("href=\"{edit}?from=task\"")), "{html}");
    let (_, html) = m.page(&format!("{edit}?from=task")).await;
    assert!(html.contains(&format!("href=\"/o/{slug}/tasks/{task}#time\">Cancel</a>")), "{html}");
    let res = m
        .submit(
            &format!("{edit}?from=task"),
            &edit,
            &[
                ("minutes", "2:15"),
                ("spent_on", "2026-11-30"),
                ("task_id", &task.to_string()),
                ("note", "ok"),
                ("from", "task"),
                ("billable", "no"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("/o/{slug}/tasks/{task}#time"));

    // Another's entry: the Member can't open or save the Owner's; a Manager opens the Member's
    // (and is told whose it is); a Client is refused; another organization finds nothing; the
    // entry under another project's address is not there.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let res = o.submit(&tab, &tab, &[("minutes", "30"), ("from", "project")]).await;
    assert_eq!(res.status(), 303);
    let owners: Uuid = sqlx::query_scalar("SELECT id FROM time_entries WHERE id <> $1")
        .bind(entry)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = m.page(&tab).await;
    assert!(!html.contains(&format!("{owners}/edit")), "Edit offered on another's entry: {html}");
    let (status, html) = m.page(&format!("{tab}/{owners}/edit")).await;
    assert_eq!(status, 403);
    assert!(html.contains("You can change only your own time entries."), "{html}");
    let res = m.submit(&tab, &format!("{tab}/{owners}/edit"), &[("minutes", "9:00"), ("spent_on", "2026-12-01")]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(entry_row(&app, owners).await.0, 30);
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let (status, html) = g.page(&edit).await;
    assert_eq!(status, 200);
    assert!(html.contains("Recorded by member@timeedit.test."), "{html}");
    let c = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(c.get(&edit).await.status(), 403);
    let m = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(m.get(&format!("/o/{slug}/projects/{other_project}/time/{entry}/edit")).await.status(), 404);
    assert_eq!(m.get(&format!("{tab}/not-an-id/edit")).await.status(), 404);
    let mut other = org_with_every_role(&app, "timeeditother").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&edit).await.status(), 404);
    let res = stranger.submit("/orgs/new", &edit, &[("minutes", "9:00"), ("spent_on", "2026-12-01")]).await;
    assert_eq!(res.status(), 404);
    assert_eq!(entry_row(&app, entry).await.0, 135);

    // Billed (the Member's entry made billable again, then put on a draft): the row says Billed
    // and links to the invoice instead of Edit, and the page and the save are refused with 409.
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let res = m
        .submit(&edit, &edit, &[("minutes", "2:15"), ("spent_on", "2026-11-30"), ("note", "ok"), ("billable", "yes")])
        .await;
    assert_eq!(res.status(), 303);
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let invoice = web_draft(o, &slug, client).await;
    let res = o.submit(&invoice, &format!("{invoice}/time"), &[]).await;
    assert_eq!(res.status(), 303);
    let billed: Option<Uuid> = sqlx::query_scalar("SELECT invoice_id FROM time_entries WHERE id = $1")
        .bind(entry)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    assert!(billed.is_some(), "the entry wasn't billed");
    let (_, html) = o.page(&tab).await;
    assert!(html.contains(&format!("<a href=\"{invoice}\">Billed</a>")), "{html}");
    assert!(!html.contains(&format!("href=\"{edit}\"")), "Edit offered on billed time: {html}");
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = m.page(&edit).await;
    assert_eq!(status, 409);
    assert!(html.contains("This time is billed on an invoice and can&#39;t be changed"), "{html}");
    let res = m.submit(&tab, &edit, &[("minutes", "9:00"), ("spent_on", "2026-12-01"), ("billable", "yes")]).await;
    assert_eq!(res.status(), 409);
    assert_eq!(entry_row(&app, entry).await.0, 135);
}

#[tokio::test]
async fn an_expense_is_corrected_on_its_page_its_receipt_kept_to_its_project_and_not_once_billed() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "expenseedit").await;
    let (org_id, client): (Uuid, Uuid) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let project = project_with_member(&app, org_id, client, "Brochure", member).await;
    let other_project = project_with_member(&app, org_id, client, "Other", member).await;
    let (receipt, elsewhere) = (Uuid::now_v7(), Uuid::now_v7());
    crate::support::work::insert_files(
        &app,
        org_id.to_string().parse().unwrap(),
        project,
        &[(receipt, "proofs.pdf".into())],
        None,
    )
    .await;
    crate::support::work::insert_files(
        &app,
        org_id.to_string().parse().unwrap(),
        other_project,
        &[(elsewhere, "other.pdf".into())],
        None,
    )
    .await;
    let slug = org.slug.clone();
    let tab = format!("/o/{slug}/projects/{project}/expenses");

    let m = &mut org.people.get_mut("member").unwrap().browser;
    let res = m.submit(&tab, &tab, &[("category", "Printing"), ("amount", "120.5"), ("note", "Proofs")]).await;
    assert_eq!(res.status(), 303);
    let expense: Uuid =
        sqlx::query_scalar("SELECT id FROM expenses").fetch_one(&mut app.db.admin_conn().await).await.unwrap();
    let edit = format!("{tab}/{expense}/edit");
    let (_, html) = m.page(&tab).await;
    assert!(html.contains(&format!("href=\"{edit}\"")), "no Edit on the row: {html}");
    let (status, html) = m.page(&edit).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("value=\"120.50\"") && html.contains("value=\"Printing\""), "{html}");
    assert!(html.contains("Amount (USD)") && html.contains(">proofs.pdf</option>"), "{html}");
    assert!(!html.contains("other.pdf"), "another project's file offered: {html}");

    // Saved: every field as typed, the receipt attached; back on the tab with the message.
    let res = m
        .submit(
            &edit,
            &edit,
            &[
                ("category", " Print "),
                ("amount", "99.9"),
                ("spent_on", "2026-11-28"),
                ("note", "Proofs, reprinted"),
                ("billable", "no"),
                ("receipt", &receipt.to_string()),
            ],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(location(&res), tab);
    let (_, html) = m.page(&tab).await;
    assert!(html.contains("Expense saved.") && html.contains("99.90 USD") && html.contains("Not billable"), "{html}");
    let row: (String, i64, String, String, bool, Option<Uuid>) =
        sqlx::query_as("SELECT category, amount_minor, spent_on::text, note, billable, receipt_file_id FROM expenses")
            .fetch_one(&mut app.db.admin_conn().await)
            .await
            .unwrap();
    assert_eq!(row, ("Print".into(), 9990, "2026-11-28".into(), "Proofs, reprinted".into(), false, Some(receipt)));
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE action = 'expense.updated'").await, 1);
    let (_, html) = m.page(&edit).await;
    assert!(html.contains(&format!("<option value=\"{receipt}\" selected>proofs.pdf</option>")), "{html}");

    // Typed wrong: 422, the field named and marked, what was typed kept, nothing written.
    let elsewhere_id = elsewhere.to_string();
    for (field, value, says) in [
        ("amount", "12,50", "must be a number with at most 2 decimals"),
        ("amount", "0", "must be more than 0"),
        ("amount", "1000000000.01", "must be more than 0 and at most"),
        ("category", "  ", "is required"),
        ("category", "esc\u{1b}", "must not contain control characters"),
        ("spent_on", "2026-02-30", "must be a date like 2026-01-31"),
        ("receipt", elsewhere_id.as_str(), "is not a file of this expense"),
        ("receipt", "not-an-id", "is not a valid id"),
    ] {
        let mut fields = vec![
            ("category", "Print"),
            ("amount", "10"),
            ("spent_on", "2026-12-01"),
            ("billable", "yes"),
            ("receipt", ""),
        ];
        fields.retain(|f| f.0 != field);
        fields.push((field, value));
        let res = m.submit(&edit, &edit, &fields).await;
        assert_eq!(res.status(), 422, "{field}={value:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains("aria-invalid=\"true\"") && html.contains(says), "{field}={value:?}: {html}");
        if field == "amount" {
            assert!(html.contains(&format!("value=\"{value}\"")), "{value} not kept: {html}");
        }
        let amount: i64 = sqlx::query_scalar("SELECT amount_minor FROM expenses")
            .fetch_one(&mut app.db.admin_conn().await)
            .await
            .unwrap();
        assert_eq!(amount, 9990, "{field}={value:?} wrote something");
    }

    // Another's: the Member can't open the Owner's; a Manager opens the Member's; a Client is
    // refused; another organization and another project's address find nothing.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let res = o.submit(&tab, &tab, &[("category", "Travel"), ("amount", "30"), ("billable", "yes")]).await;
    assert_eq!(res.status(), 303);
    let owners: Uuid = sqlx::query_scalar("SELECT id FROM expenses WHERE id <> $1")
        .bind(expense)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    let m = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = m.page(&format!("{tab}/{owners}/edit")).await;
    assert_eq!(status, 403);
    assert!(html.contains("You can change only your own expenses."), "{html}");
    let res = m.submit(&tab, &format!("{tab}/{owners}/edit"), &[("category", "Mine"), ("amount", "1")]).await;
    assert_eq!(res.status(), 403);
    let g = &mut org.people.get_mut("manager").unwrap().browser;
    let (status, html) = g.page(&edit).await;
    assert_eq!(status, 200);
    assert!(html.contains("Recorded by member@expenseedit.test."), "{html}");
    let c = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(c.get(&edit).await.status(), 403);
    let m = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(m.get(&format!("/o/{slug}/projects/{other_project}/expenses/{expense}/edit")).await.status(), 404);
    let mut other = org_with_every_role(&app, "expenseeditother").await;
    let stranger = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(stranger.get(&edit).await.status(), 404);

    // Billed: no Edit on the row; the page and the save give 409 and change nothing.
    let o = &mut org.people.get_mut("owner").unwrap().browser;
    let invoice = web_draft(o, &slug, client).await;
    let res = o.submit(&invoice, &format!("{invoice}/expenses"), &[("expense", &owners.to_string())]).await;
    assert_eq!(res.status(), 303);
    let (_, html) = o.page(&tab).await;
    assert!(!html.contains(&format!("{owners}/edit")), "Edit offered on a billed expense: {html}");
    let (status, html) = o.page(&format!("{tab}/{owners}/edit")).await;
    assert_eq!(status, 409);
    assert!(html.contains("This expense is billed on an invoice and can&#39;t be changed"), "{html}");
    let res = o.submit(&tab, &format!("{tab}/{owners}/edit"), &[("category", "Changed"), ("amount", "1")]).await;
    assert_eq!(res.status(), 409);
    let category: String = sqlx::query_scalar("SELECT category FROM expenses WHERE id = $1")
        .bind(owners)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    assert_eq!(category, "Travel");
}
