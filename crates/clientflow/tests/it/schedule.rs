//! Deadlines and who is on what: the schedule (a month, day by day, only in the projects one
//! may see); the overdue marks and progress of the board and the projects list; and the task
//! lists narrowed to a person's tasks, no one's, or the open ones.

use clientflow_test_support::TestApp;
use uuid::Uuid;

use crate::support::orgs::org_with_every_role;

/// A project of `org` with a "To do" and a "Done" column; returns it and the two columns.
async fn project(db: &mut sqlx::PgConnection, org: Uuid, name: &str, due: Option<&str>) -> (Uuid, Uuid, Uuid) {
    let (id, todo, done) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO projects (organization_id, id, name, due_date) VALUES ($1, $2, $3, $4::date)")
        .bind(org)
        .bind(id)
        .bind(name)
        .bind(due)
        .execute(&mut *db)
        .await
        .unwrap();
    for (column, status, position) in [(todo, "todo", 0), (done, "done", 1)] {
        sqlx::query("INSERT INTO board_columns (organization_id, id, project_id, name, position, status) VALUES ($1, $2, $3, $4, $5, $4)")
            .bind(org)
            .bind(column)
            .bind(id)
            .bind(status)
            .bind(position)
            .execute(&mut *db)
            .await
            .unwrap();
    }
    (id, todo, done)
}

async fn task(db: &mut sqlx::PgConnection, org: Uuid, project: Uuid, column: Uuid, title: &str, due: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, due_date, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6::date, now(), now())",
    )
    .bind(org)
    .bind(id)
    .bind(project)
    .bind(column)
    .bind(title)
    .bind(due)
    .execute(&mut *db)
    .await
    .unwrap();
    id
}

async fn join(db: &mut sqlx::PgConnection, org: Uuid, project: Uuid, user: Uuid) {
    sqlx::query(
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())",
    )
    .bind(org)
    .bind(project)
    .bind(user)
    .execute(db)
    .await
    .unwrap();
}

async fn assign(db: &mut sqlx::PgConnection, org: Uuid, task: Uuid, user: Uuid) {
    sqlx::query("INSERT INTO task_assignees (organization_id, task_id, user_id) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(task)
        .bind(user)
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_schedule_shows_a_months_deadlines_day_by_day_in_the_projects_one_may_see() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "schedule").await;
    let org_id: Uuid = org.id.parse().unwrap();
    let member: Uuid = org.people["member"].user_id.parse().unwrap();
    let mut db = app.db.admin_conn().await;
    let (launch, todo, done) = project(&mut db, org_id, "Launch", Some("2031-05-20")).await;
    let (secret, secret_todo, _) = project(&mut db, org_id, "Secret merger", None).await;
    project(&mut db, org_id, "Not started", None).await;
    join(&mut db, org_id, launch, member).await;
    let copy = task(&mut db, org_id, launch, todo, "Write the copy", "2031-05-07").await;
    assign(&mut db, org_id, copy, member).await;
    // The Admin goes by the same name: the schedule tells the two apart, as the task page does.
    let admin: Uuid = org.people["admin"].user_id.parse().unwrap();
    sqlx::query("UPDATE users SET display_name = 'Mia Member' WHERE id = ANY($1)")
        .bind([member, admin])
        .execute(&mut db)
        .await
        .unwrap();
    task(&mut db, org_id, launch, todo, "Book the venue", "2031-05-01").await;
    task(&mut db, org_id, launch, done, "Already done", "2031-05-07").await;
    task(&mut db, org_id, launch, todo, "Next month", "2031-06-01").await;
    task(&mut db, org_id, launch, todo, "Last month", "2031-04-30").await;
    task(&mut db, org_id, secret, secret_todo, "Sign the merger", "2031-05-07").await;
    task(&mut db, org_id, launch, todo, "Old deadline", "2020-01-15").await;

    let slug = org.slug.clone();
    let path = format!("/o/{slug}/schedule?month=2031-05");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&path).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<h1>Schedule: May 2031</h1>"), "{html}");
    assert!(html.contains(&format!("href=\"/o/{slug}/schedule\">Schedule</a>")), "the navigation leads here");
    assert!(
        html.contains("month=2031-04\" rel=\"prev\">← April 2031")
            && html.contains("month=2031-06\" rel=\"next\">June 2031 →")
    );
    assert!(html.contains(&format!("href=\"/o/{slug}/schedule\">This month</a>")));
    // Day by day, in order: only this month's open tasks, and the project's due date.
    let order: Vec<usize> = [
        "datetime=\"2031-05-01\"",
        "Book the venue",
        "datetime=\"2031-05-07\"",
        "Write the copy",
        "Sign the merger",
        "datetime=\"2031-05-20\"",
        "Launch</a> <span class=\"muted\">is due",
    ]
    .iter()
    .map(|s| html.find(s).unwrap_or_else(|| panic!("{s} missing: {html}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        html.contains("Write the copy</a> <span class=\"muted\">· Launch · Mia Member (member@schedule.test)</span>"),
        "{html}"
    );
    for absent in ["Already done", "Next month", "Last month"] {
        assert!(!html.contains(absent), "{absent}");
    }
    assert!(!html.contains("overdue"), "May 2031 is still ahead");

    // Only mine: the tasks assigned to me and the projects I am on. The Owner is on no task and
    // no project here; the Member is on "Write the copy" and on Launch.
    let (_, mine) = owner.page(&format!("{path}&mine=1")).await;
    assert!(
        mine.contains("Nothing falls due in May 2031.") && mine.contains("aria-current=\"page\">Only mine"),
        "{mine}"
    );
    assert!(mine.contains("month=2031-06&#38;mine=1\" rel=\"next\""), "{mine}");
    let (status, html) = owner.page(&format!("{path}&mine=yes")).await;
    assert!(status == 422 && html.contains("must be 1 or left out"), "{html}");
    // A Member sees the projects they are on, and nothing of the others.
    let member_browser = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = member_browser.page(&path).await;
    assert_eq!(status, 200);
    assert!(html.contains("Write the copy") && html.contains("Book the venue"));
    assert!(!html.contains("Sign the merger") && !html.contains("Secret merger"), "{html}");
    let (_, mine) = member_browser.page(&format!("{path}&mine=1")).await;
    assert!(mine.contains("Write the copy") && mine.contains("Launch</a> <span class=\"muted\">is due"), "{mine}");
    assert!(!mine.contains("Book the venue"), "not assigned to the Member: {mine}");
    // A Client has no schedule, and no link to one.
    let client = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(client.page(&path).await.0, 403);

    // A month that isn't one is named; an empty month says so.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    for bad in ["2031-13", "2031-5", "2031-05-01", "0000-01", "%E2%80%AE2031-05", "x".repeat(5000).as_str()] {
        let (status, html) = owner.page(&format!("/o/{slug}/schedule?month={bad}")).await;
        assert_eq!(status, 422, "{bad}: {html}");
        assert!(html.contains("must be a month like 2026-12"), "{bad}: {html}");
    }
    // An open task of a day gone by is overdue.
    let (_, html) = owner.page(&format!("/o/{slug}/schedule?month=2020-01")).await;
    assert!(html.contains("Old deadline</a>") && html.contains("<strong class=\"late\">overdue</strong>"), "{html}");
    // The board marks the same task overdue, and only that one.
    let (_, board) = owner.page(&format!("/o/{slug}/projects/{launch}")).await;
    assert!(board.contains("<span class=\"late\">Due 2020-01-15 (overdue)</span>"), "{board}");
    assert!(board.contains("<span>Due 2031-05-07</span>") && board.matches("(overdue)").count() == 1, "{board}");
    // Its header says how far along the project is.
    assert!(
        board.contains("<span data-progress>1 of 6 tasks done, <strong class=\"late\">1 overdue</strong></span>"),
        "{board}"
    );
    let (_, list) = owner.page(&format!("/o/{slug}/projects/{launch}/list")).await;
    assert!(
        list.contains("<td class=\"late\">2020-01-15 (overdue)</td>") && list.matches("(overdue)").count() == 1,
        "{list}"
    );
    let (status, html) = owner.page(&format!("/o/{slug}/schedule?month=2031-05%00")).await;
    assert!(status == 422 && html.contains("NUL character"), "{html}");
    let (status, html) = owner.page(&format!("/o/{slug}/schedule?month=2031-07")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Nothing falls due in July 2031."), "{html}");
    // The calendar's ends have no step beyond them.
    let (_, html) = owner.page(&format!("/o/{slug}/schedule?month=9999-12")).await;
    assert!(html.contains("← November 9999") && !html.contains("rel=\"next\""), "{html}");
    // Today's month is the default.
    let (status, html) = owner.page(&format!("/o/{slug}/schedule")).await;
    assert_eq!(status, 200);
    assert!(!html.contains(">This month</a>"), "already on it: {html}");

    // The projects list counts each project's tasks: done of all, and the open ones overdue.
    let (_, projects) = owner.page(&format!("/o/{slug}/projects")).await;
    let launch_row = "1 of 6 done, <span class=\"late\">1 overdue</span>\
                      <progress max=\"6\" value=\"1\" aria-hidden=\"true\"></progress>";
    assert!(projects.contains("<th>Tasks</th>") && projects.contains(launch_row), "{projects}");
    assert!(
        projects.contains("<td class=\"progress\">0 of 1 done<progress max=\"1\" value=\"0\""),
        "the merger's one task: {projects}"
    );
    assert!(projects.contains("<td class=\"progress\"><span class=\"muted\">None yet</span></td>"), "{projects}");
    // A Member counts the tasks of the projects they are on, and sees nothing of the others.
    let member_browser = &mut org.people.get_mut("member").unwrap().browser;
    let (_, projects) = member_browser.page(&format!("/o/{slug}/projects")).await;
    assert!(projects.contains(launch_row) && !projects.contains("of 1 done"), "{projects}");
}

#[tokio::test]
async fn task_lists_narrow_to_ones_own_tasks_to_no_ones_and_to_the_open_ones() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "listfilter").await;
    let org_id: Uuid = org.id.parse().unwrap();
    let person = |role: &str| -> Uuid { org.people[role].user_id.parse().unwrap() };
    let (owner_id, member, admin) = (person("owner"), person("member"), person("admin"));
    let mut db = app.db.admin_conn().await;
    let (launch, todo, done) = project(&mut db, org_id, "Launch", None).await;
    join(&mut db, org_id, launch, member).await;
    let mut add = async |title: &str, column: Uuid, who: Option<Uuid>| {
        let id = task(&mut db, org_id, launch, column, title, "2031-05-07").await;
        if let Some(user) = who {
            assign(&mut db, org_id, id, user).await;
        }
    };
    add("Write the copy", todo, Some(member)).await;
    add("Proofread the copy", done, Some(member)).await;
    add("Book the venue", todo, None).await;
    add("Approve the budget", todo, Some(owner_id)).await;
    let titles = ["Write the copy", "Proofread the copy", "Book the venue", "Approve the budget"];

    let slug = org.slug.clone();
    let list = format!("/o/{slug}/projects/{launch}/list");
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let shows = async |b: &mut clientflow_test_support::browser::Browser, query: &str, expected: &[&str]| {
        let (status, html) = b.page(&format!("{list}{query}")).await;
        assert_eq!(status, 200, "{query}: {html}");
        for t in titles {
            assert_eq!(html.contains(&format!(">{t}</a>")), expected.contains(&t), "{query}: {t}: {html}");
        }
        html
    };
    let html = shows(owner, "", &titles).await;
    assert!(
        html.contains("<option value=\"me\">Me</option>") && html.contains(&format!("<option value=\"{member}\">"))
    );
    assert!(!html.contains(&format!("<option value=\"{owner_id}\">")), "the Owner is \"Me\" here");
    shows(owner, "?assignee=me", &["Approve the budget"]).await;
    shows(owner, "?assignee=nobody", &["Book the venue"]).await;
    shows(owner, &format!("?assignee={member}"), &["Write the copy", "Proofread the copy"]).await;
    let html = shows(owner, &format!("?assignee={member}&open=1"), &["Write the copy"]).await;
    assert!(
        html.contains(&format!("<option value=\"{member}\" selected>")) && html.contains("value=\"1\" checked"),
        "the form keeps the choice: {html}"
    );
    shows(owner, "?open=1", &["Write the copy", "Book the venue", "Approve the budget"]).await;
    let html = shows(owner, &format!("?assignee={admin}"), &[]).await;
    assert!(html.contains("No task matches."), "{html}");
    // One column's tasks, narrowed too (the "Show all" of a board column keeps its column).
    let html = shows(owner, &format!("?column={done}&assignee={member}"), &["Proofread the copy"]).await;
    assert!(html.contains(&format!("<input type=\"hidden\" name=\"column\" value=\"{done}\">")), "{html}");
    // What isn't a choice is named.
    for (query, field, message) in
        [("?assignee=someone", "assignee", "is not a valid choice"), ("?open=yes", "open", "must be 1 or left out")]
    {
        let (status, html) = owner.page(&format!("{list}{query}")).await;
        assert!(status == 422 && html.contains(message), "{field}: {status} {html}");
    }
    // The organization's task list narrows the same way, across projects.
    for (query, expected) in [
        ("?assignee=me".to_string(), vec!["Approve the budget"]),
        (format!("?assignee={member}"), vec!["Write the copy", "Proofread the copy"]),
        (format!("?assignee={member}&status=todo"), vec!["Write the copy"]),
        (String::new(), titles.to_vec()),
    ] {
        let (status, html) = owner.page(&format!("/o/{slug}/tasks{query}")).await;
        assert_eq!(status, 200, "{query}: {html}");
        for t in titles {
            assert_eq!(html.contains(&format!(">{t}</a>")), expected.contains(&t), "{query}: {t}: {html}");
        }
    }
    let (status, html) = owner.page(&format!("/o/{slug}/tasks?assignee=nobody%00")).await;
    assert_eq!(status, 422, "{html}");
    let (status, html) = owner.page(&format!("/o/{slug}/tasks?assignee=someone")).await;
    assert!(status == 422 && html.contains("is not a valid choice"), "{html}");
    let (_, html) = owner.page(&format!("/o/{slug}/tasks?assignee={member}&q=copy")).await;
    assert!(html.contains(&format!("<option value=\"{member}\" selected>")), "{html}");

    // The pages of a narrowed list keep it narrowed.
    sqlx::query(
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         SELECT $1, gen_random_uuid(), $2, $3, 'Unassigned ' || n, now(), now() FROM generate_series(1, 100) n",
    )
    .bind(org_id)
    .bind(launch)
    .bind(todo)
    .execute(&mut db)
    .await
    .unwrap();
    let (_, html) = owner.page(&format!("{list}?assignee=nobody")).await;
    assert!(html.contains("list?assignee=nobody&#38;offset=100"), "{html}");
    let (_, html) = owner.page(&format!("{list}?assignee=nobody&offset=100")).await;
    assert_eq!(html.matches("<tr><td><a href=").count(), 1, "101 unassigned tasks, the last one on page two: {html}");

    // A Member's "Me" is their own.
    let member_browser = &mut org.people.get_mut("member").unwrap().browser;
    shows(member_browser, "?assignee=me", &["Write the copy", "Proofread the copy"]).await;
}
