//! The daily work: My work, search, notifications (inbox, mentions, preferences) and the digest,
//! each bounded by what its reader may see.

use clientflow::access::{self, OrgPrincipal};
use clientflow::platform::ids::{OrgId, ProjectId, TaskId, UserId};
use clientflow::work::{daily, projects, tasks};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::Browser;

use crate::support::api::ctx;
use crate::support::operator;
use crate::support::orgs::{Org, org_with_every_role, session_token};
use crate::support::work::{StoredInvoice, fixture_project, insert_invoice};

async fn operator_of(app: &TestApp, org: &Org) -> OrgPrincipal {
    let id: OrgId = org.id.parse().unwrap();
    access::operator(&app.app_db, &operator(), id, "test").await.unwrap().unwrap()
}

/// A project the Member is not on (nor the Client's).
async fn hidden_project(app: &TestApp, op: &OrgPrincipal) -> ProjectId {
    let input = projects::ProjectInput { name: "Hidden project".into(), ..Default::default() };
    projects::create(&app.app_db, &ctx(app), op, &input).await.unwrap().id
}

async fn task_in(app: &TestApp, op: &OrgPrincipal, project: ProjectId, title: &str, extra: tasks::TaskInput) -> TaskId {
    let title = if title.is_empty() { extra.title.clone() } else { title.to_string() };
    let input = tasks::TaskInput { project_id: project.to_string(), title, ..extra };
    tasks::create(&app.app_db, &ctx(app), op, &input).await.unwrap().id
}

async fn comment(b: &mut Browser, slug: &str, task: TaskId, body: &str, client_visible: bool) {
    let token = session_token(b).await;
    let mut fields = vec![("body", body)];
    if client_visible {
        fields.push(("client_visible", "on"));
    }
    let res = b.post_with(&format!("/o/{slug}/tasks/{task}/comments"), &fields, Some(&token), true).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
}

async fn notifications_of(app: &TestApp, org: &Org, user: &str) -> Vec<(uuid::Uuid, String, String)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT id, kind, title FROM notifications WHERE organization_id = $1::uuid AND recipient_id = $2::uuid \
         ORDER BY created_at",
    )
    .bind(&org.id)
    .bind(user)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

async fn run_worker(app: &TestApp) -> usize {
    daily::run_due(&app.app_db, &app.config.public_url(), app.state.clock.now()).await.unwrap()
}

async fn set_channel(b: &mut Browser, slug: &str, kind: &str, channel: &str) -> u16 {
    let path = format!("/o/{slug}/notifications/preferences");
    b.submit(&path, &path, &[(kind, channel)]).await.status().as_u16()
}

async fn subjects(app: &TestApp, to: &str) -> Vec<String> {
    app.mail_to(to)
        .await
        .into_iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("Subject:")).map(str::to_string))
        .collect()
}

async fn mark(b: &mut Browser, slug: &str, id: &str) -> u16 {
    let token = session_token(b).await;
    b.post_with(&format!("/o/{slug}/notifications/read"), &[("id", id)], Some(&token), true).await.status().as_u16()
}

fn person(org: &Org, role: &str) -> UserId {
    org.people[role].user_id.parse().unwrap()
}

#[tokio::test]
async fn a_member_sees_only_projects_they_are_on_in_my_work_search_and_notifications() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "daily").await;
    let op = operator_of(&app, &org).await;
    let mine = fixture_project(&app, &org, &op).await;
    let hidden = hidden_project(&app, &op).await;
    let member = person(&org, "member");
    let assigned = tasks::TaskInput {
        assignees: Some(vec![member.to_string()]),
        priority: Some("urgent".into()),
        ..Default::default()
    };
    let visible_task = task_in(&app, &op, mine, "Quarterly zephyr review", assigned).await;
    let assigned = tasks::TaskInput { assignees: Some(vec![member.to_string()]), ..Default::default() };
    task_in(&app, &op, mine, "Routine zephyr check", assigned).await;
    let hidden_task = task_in(&app, &op, hidden, "Secret zephyr plans", tasks::TaskInput::default()).await;
    // Assigned behind the app's back to a task of a project the Member is not on: My work
    // still doesn't show it (the lists' own visibility rule decides, not the assignment).
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO task_assignees VALUES ($1::uuid, $2, $3)")
        .bind(&org.id)
        .bind(hidden_task)
        .bind(member)
        .execute(&mut db)
        .await
        .unwrap();

    let slug = org.slug.clone();
    let b = &mut org.people.get_mut("member").unwrap().browser;
    let (status, html) = b.page(&format!("/o/{slug}/my-work")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Quarterly zephyr review") && !html.contains("Secret zephyr plans"), "{html}");
    // A priority in words, and only where it is not the usual one.
    assert!(html.contains(" · Urgent priority</span>") && !html.contains("normal"), "{html}");
    assert!(html.contains("Routine zephyr check"), "{html}");
    let (status, html) = b.page(&format!("/o/{slug}/search?q=zephyr")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Quarterly zephyr review") && !html.contains("Secret zephyr plans"), "{html}");
    assert!(!html.contains("Hidden project"));

    // The Owner mentions the Member on both tasks: only the one on the Member's project tells them.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    comment(owner, &slug, hidden_task, "Have a look @member@daily.test", false).await;
    comment(owner, &slug, visible_task, "Have a look @member@daily.test", false).await;
    let got = notifications_of(&app, &org, &member.to_string()).await;
    let mentions: Vec<_> = got.iter().filter(|(_, k, _)| k == "mentioned").collect();
    assert_eq!(mentions.len(), 1, "{got:?}");
    assert!(mentions[0].2.contains("Quarterly zephyr review"), "{got:?}");
    assert!(got.iter().all(|(_, _, t)| !t.contains("Secret")), "{got:?}");
    // Nobody is told about their own comment.
    let owners = notifications_of(&app, &org, &org.people["owner"].user_id).await;
    assert!(owners.iter().all(|(_, k, _)| k == "invitation_accepted"), "{owners:?}");
    // The inbox page shows it, and the count in the navigation.
    let b = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = b.page(&format!("/o/{slug}/notifications")).await;
    assert!(html.contains("You were mentioned on Quarterly zephyr review"), "{html}");
    assert!(!html.contains("Secret zephyr"), "{html}");
}

#[tokio::test]
async fn a_client_searches_only_their_portal_and_never_internal_comments() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "portal").await;
    let op = operator_of(&app, &org).await;
    let shared = fixture_project(&app, &org, &op).await;
    let task = task_in(
        &app,
        &op,
        shared,
        "Homepage mockups",
        tasks::TaskInput { visible_to_client: Some(true), ..Default::default() },
    )
    .await;
    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    comment(owner, &slug, task, "Internal note: margin is thin, quokka", false).await;
    comment(owner, &slug, task, "Shared note for the client, wombat", true).await;

    let client = &mut org.people.get_mut("client").unwrap().browser;
    let (status, html) = client.page(&format!("/portal/{slug}/search?q=quokka")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Nothing found") && !html.contains("margin is thin"), "{html}");
    let (_, html) = client.page(&format!("/portal/{slug}/search?q=wombat")).await;
    assert!(html.contains("Shared note for the client"), "{html}");
    let (_, html) = client.page(&format!("/portal/{slug}/search?q=mockups")).await;
    assert!(html.contains("Homepage mockups"), "{html}");
    // The internal search is not the portal's.
    assert_eq!(client.get(&format!("/o/{slug}/search?q=quokka")).await.status(), 403);
    // The Owner finds both.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&format!("/o/{slug}/search?q=quokka")).await;
    assert!(html.contains("margin is thin"), "{html}");
    // Bad input: a clear 422 (too long), never a 500; control characters separate words.
    let res = owner.get(&format!("/o/{slug}/search?q={}", "x".repeat(10_000))).await;
    assert!(matches!(res.status().as_u16(), 414 | 422 | 431), "{}", res.status());
    let (status, html) = owner.page(&format!("/o/{slug}/search?q=%01quokka%1F")).await;
    assert_eq!(status, 200);
    assert!(html.contains("margin is thin"), "{html}");
    let res = owner.get(&format!("/o/{slug}/search?q={}", "y".repeat(201))).await;
    assert_eq!(res.status(), 422);
    let res = owner.get(&format!("/o/{slug}/search?q=%00")).await;
    assert!(matches!(res.status().as_u16(), 400 | 422), "{}", res.status());
    // Operators, punctuation and quotes are just a search.
    for q in ["%22unclosed", "a%20%26%20%7C%20!", "-", "or"] {
        assert_eq!(owner.get(&format!("/o/{slug}/search?q={q}")).await.status(), 200, "{q}");
    }
}

#[tokio::test]
async fn the_people_picker_lists_only_project_members_to_those_who_may_comment() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "picker").await;
    let other = org_with_every_role(&app, "elsewhere").await;
    let op = operator_of(&app, &org).await;
    let mine = fixture_project(&app, &org, &op).await;
    let hidden = hidden_project(&app, &op).await;
    let slug = org.slug.clone();
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = owner.get(&format!("/o/{slug}/projects/{mine}/mentions")).await;
    assert_eq!(res.status(), 200);
    let people: serde_json::Value = res.json().await.unwrap();
    let handles: Vec<&str> = people.as_array().unwrap().iter().map(|p| p["handle"].as_str().unwrap()).collect();
    assert!(handles.contains(&"member@picker.test") && handles.contains(&"owner@picker.test"), "{handles:?}");
    assert!(!handles.contains(&"client@picker.test"), "a Client is never offered: {handles:?}");
    let res = owner.get(&format!("/o/{slug}/projects/{hidden}/mentions?q=mem")).await;
    let people: serde_json::Value = res.json().await.unwrap();
    let handles: Vec<&str> = people.as_array().unwrap().iter().map(|p| p["handle"].as_str().unwrap()).collect();
    assert!(!handles.contains(&"member@picker.test"), "not on the project: {handles:?}");
    // The Member may not see the hidden project at all; the Client may not comment; another
    // organization's Owner finds no such organization.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.get(&format!("/o/{slug}/projects/{hidden}/mentions")).await.status(), 404);
    assert_eq!(member.get(&format!("/o/{slug}/projects/{mine}/mentions")).await.status(), 200);
    let client = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(client.get(&format!("/o/{slug}/projects/{mine}/mentions")).await.status(), 403);
    let mut stranger = other.people.into_iter().find(|(r, _)| *r == "owner").unwrap().1.browser;
    assert_eq!(stranger.get(&format!("/o/{slug}/projects/{mine}/mentions")).await.status(), 404);
    let mine_elsewhere = format!("/o/{}/projects/{mine}/mentions", other.slug);
    assert_eq!(stranger.get(&mine_elsewhere).await.status(), 404);
}

#[tokio::test]
async fn email_follows_the_preference_at_send_time() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "prefs").await;
    let op = operator_of(&app, &org).await;
    let project = fixture_project(&app, &org, &op).await;
    let member = person(&org, "member");
    let slug = org.slug.clone();
    let assign = |title: &'static str| tasks::TaskInput {
        title: title.into(),
        assignees: Some(vec![member.to_string()]),
        ..Default::default()
    };
    // Email at event time, in-app only by the time the worker runs: no mail.
    task_in(&app, &op, project, "", assign("Alpha assignment")).await;
    assert_eq!(set_channel(&mut org.people.get_mut("member").unwrap().browser, &slug, "assigned", "in_app").await, 303);
    run_worker(&app).await;
    assert!(!subjects(&app, "member@prefs.test").await.iter().any(|s| s.contains("Alpha")));
    // In-app only at event time, email by the time the worker runs: mailed, once.
    task_in(&app, &op, project, "", assign("Beta assignment")).await;
    assert_eq!(set_channel(&mut org.people.get_mut("member").unwrap().browser, &slug, "assigned", "email").await, 303);
    run_worker(&app).await;
    run_worker(&app).await;
    let got = subjects(&app, "member@prefs.test").await;
    assert_eq!(got.iter().filter(|s| s.contains("Beta")).count(), 1, "{got:?}");
    // Off: not even in the inbox.
    assert_eq!(set_channel(&mut org.people.get_mut("member").unwrap().browser, &slug, "assigned", "off").await, 303);
    task_in(&app, &op, project, "", assign("Gamma assignment")).await;
    run_worker(&app).await;
    let inbox = notifications_of(&app, &org, &member.to_string()).await;
    assert!(inbox.iter().any(|(_, _, t)| t.contains("Alpha")) && !inbox.iter().any(|(_, _, t)| t.contains("Gamma")));
    assert!(!subjects(&app, "member@prefs.test").await.iter().any(|s| s.contains("Gamma")));
    // A value that is no channel is the field's fault.
    let b = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(set_channel(b, &slug, "assigned", "pigeon").await, 422);
    assert_eq!(set_channel(b, &slug, "nonsense", "email").await, 422);
}

#[tokio::test]
async fn one_person_can_never_read_or_mark_anothers_notification() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "mine").await;
    let mut other = org_with_every_role(&app, "theirs").await;
    let op = operator_of(&app, &org).await;
    let project = fixture_project(&app, &org, &op).await;
    let member = person(&org, "member");
    let input = tasks::TaskInput { assignees: Some(vec![member.to_string()]), ..Default::default() };
    task_in(&app, &op, project, "Private to the member", input).await;
    let (id, _, _) = notifications_of(&app, &org, &member.to_string()).await.remove(0);
    let slug = org.slug.clone();
    let id_text = id.to_string();
    // Another member of the same organization, the Owner included: not found.
    for role in ["owner", "admin", "manager", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(mark(b, &slug, &id_text).await, 404, "{role}");
        let (_, html) = b.page(&format!("/o/{slug}/notifications")).await;
        assert!(!html.contains("Private to the member"), "{role}");
    }
    // Another organization's people, through their own organization: not found.
    let other_slug = other.slug.clone();
    let b = &mut other.people.get_mut("owner").unwrap().browser;
    assert_eq!(mark(b, &other_slug, &id_text).await, 404);
    // A made-up id: not found. Its recipient: marked, and the count goes down.
    let b = &mut org.people.get_mut("member").unwrap().browser;
    let (_, html) = b.page(&format!("/o/{slug}/notifications")).await;
    assert!(html.contains("data-unread>1<"), "{html}");
    assert_eq!(mark(b, &slug, &uuid::Uuid::now_v7().to_string()).await, 404);
    assert_eq!(mark(b, &slug, "not-an-id").await, 404);
    assert_eq!(mark(b, &slug, &id_text).await, 303);
    let (_, html) = b.page(&format!("/o/{slug}/notifications")).await;
    assert!(!html.contains("data-unread") && html.contains("No unread notifications"), "{html}");
    let mut db = app.db.admin_conn().await;
    let read: bool = sqlx::query_scalar("SELECT read_at IS NOT NULL FROM notifications WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(read);
}

#[tokio::test]
async fn the_digest_goes_out_once_a_day_per_person() {
    let app = TestApp::spawn().await;
    app.clock.set(time::macros::datetime!(2026-03-10 08:30 UTC));
    let org = org_with_every_role(&app, "digest").await;
    let op = operator_of(&app, &org).await;
    let project = fixture_project(&app, &org, &op).await;
    let hidden = hidden_project(&app, &op).await;
    let member = person(&org, "member");
    let due = |title: &'static str, day: &'static str| tasks::TaskInput {
        title: title.into(),
        due_date: Some(day.into()),
        assignees: Some(vec![member.to_string()]),
        ..Default::default()
    };
    task_in(&app, &op, project, "", due("Late report", "2026-03-09")).await;
    task_in(&app, &op, project, "", due("Todays call", "2026-03-10")).await;
    task_in(&app, &op, project, "", due("Next week thing", "2026-03-16")).await;
    let hidden_task = task_in(&app, &op, hidden, "Hidden deadline", tasks::TaskInput::default()).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE tasks SET due_date = '2026-03-01' WHERE id = $1")
        .bind(hidden_task)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO task_assignees VALUES ($1::uuid, $2, $3)")
        .bind(&org.id)
        .bind(hidden_task)
        .bind(member)
        .execute(&mut db)
        .await
        .unwrap();
    run_worker(&app).await;
    run_worker(&app).await;
    let got = digests(&app, "member@digest.test").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("Late report") && got[0].contains("Todays call"), "{}", got[0]);
    assert!(!got[0].contains("Next week thing") && !got[0].contains("Hidden deadline"), "{}", got[0]);
    // The next morning, one more; before 07:00 local time, none yet.
    app.clock.set(time::macros::datetime!(2026-03-11 06:00 UTC));
    run_worker(&app).await;
    assert_eq!(digests(&app, "member@digest.test").await.len(), 1);
    app.clock.set(time::macros::datetime!(2026-03-11 07:05 UTC));
    run_worker(&app).await;
    run_worker(&app).await;
    assert_eq!(digests(&app, "member@digest.test").await.len(), 2);
    // Turned off: none.
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO notification_preferences VALUES ($1::uuid, $2, 'digest', 'off')")
        .bind(&org.id)
        .bind(member)
        .execute(&mut db)
        .await
        .unwrap();
    app.clock.set(time::macros::datetime!(2026-03-12 09:00 UTC));
    run_worker(&app).await;
    assert_eq!(digests(&app, "member@digest.test").await.len(), 2);
}

async fn digests(app: &TestApp, to: &str) -> Vec<String> {
    app.mail_to(to).await.into_iter().filter(|m| m.contains("Subject: Your tasks for")).collect()
}

#[tokio::test]
async fn a_digest_lists_at_most_twenty_of_each_kind_and_counts_the_rest() {
    let app = TestApp::spawn().await;
    app.clock.set(time::macros::datetime!(2026-03-10 08:30 UTC));
    let org = org_with_every_role(&app, "bigdigest").await;
    let op = operator_of(&app, &org).await;
    let project = fixture_project(&app, &org, &op).await;
    let admin = person(&org, "admin");
    let limit = clientflow::work::daily::DIGEST_LIST as usize;
    for i in 0..limit + 3 {
        let input = tasks::TaskInput {
            title: format!("Overdue number {i:02}"),
            due_date: Some("2026-03-02".into()),
            assignees: Some(vec![admin.to_string()]),
            ..Default::default()
        };
        task_in(&app, &op, project, "", input).await;
    }
    let input = tasks::TaskInput {
        title: "The one due today".into(),
        due_date: Some("2026-03-10".into()),
        assignees: Some(vec![admin.to_string()]),
        ..Default::default()
    };
    task_in(&app, &op, project, "", input).await;
    run_worker(&app).await;
    run_worker(&app).await;
    let got = digests(&app, "admin@bigdigest.test").await;
    assert_eq!(got.len(), 1, "{got:?}");
    // The plain-text part (the HTML part, from its first paragraph on, says the same).
    let mail = got[0].split("<p>").next().unwrap();
    assert!(mail.contains(&format!("{} overdue, 1 due today", limit + 3)), "{mail}");
    assert_eq!(mail.matches("Overdue number").count(), limit, "{mail}");
    assert!(mail.contains("Overdue number 00") && !mail.contains(&format!("Overdue number {:02}", limit)), "{mail}");
    assert!(mail.contains("And 3 more in My work"), "{mail}");
    assert!(mail.contains("The one due today"), "{mail}");
    assert_eq!(mail.matches("more in My work").count(), 1, "{mail}");
}

/// The text of a page's section headed `heading` (up to the next section).
fn section<'a>(html: &'a str, heading: &str) -> &'a str {
    let at = html.find(&format!(">{heading}</h2>")).unwrap_or_else(|| panic!("no section {heading}: {html}"));
    let rest = &html[at..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

/// The overview is where people land: each sees their own tasks, the projects they may see with
/// open and late counts, money owed (those who read invoices), their week's time, and, while the
/// organization is new, its first steps for those who may take them.
#[tokio::test]
async fn the_overview_shows_each_person_what_needs_them_and_nothing_they_may_not_see() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "overview").await;
    let slug = org.slug.clone();
    let today = app.state.clock.now().date();

    // A new organization (one client, a full team, no project yet): the first steps, one to go.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (status, html) = owner.page(&format!("/o/{slug}")).await;
    assert_eq!(status, 200, "{html}");
    let steps = section(&html, "Get started");
    assert!(steps.contains(&format!("<li><a href=\"/o/{slug}/projects/new\">Create a project</a>")), "{steps}");
    for done in ["clients\">Add your first client", "members\">Invite your team"] {
        assert!(steps.contains(&format!("<span class=\"sr-only\">Done: </span><a href=\"/o/{slug}/{done}")), "{steps}");
    }
    let tasks = section(&html, "Your tasks");
    assert!(tasks.contains("Nothing assigned to you is open.") && tasks.contains(">My work</a>"), "{tasks}");
    let projects = section(&html, "Active projects");
    assert!(projects.contains("No active projects.") && projects.contains(">Projects</a>"), "{projects}");

    let op = operator_of(&app, &org).await;
    let mine = fixture_project(&app, &org, &op).await;
    let hidden = hidden_project(&app, &op).await;
    let member = person(&org, "member");
    let owner_id = person(&org, "owner");
    let due = |days: i64, who: UserId| tasks::TaskInput {
        assignees: Some(vec![who.to_string()]),
        due_date: Some((today + time::Duration::days(days)).to_string()),
        ..Default::default()
    };
    task_in(&app, &op, mine, "Late zephyr copy", due(-2, member)).await;
    task_in(&app, &op, mine, "Zephyr copy for today", due(0, member)).await;
    task_in(&app, &op, mine, "Zephyr copy for Friday", due(3, member)).await;
    task_in(&app, &op, mine, "Zephyr copy next month", due(30, member)).await;
    task_in(&app, &op, hidden, "Secret zephyr plans", due(-1, owner_id)).await;
    let mut db = app.db.admin_conn().await;
    let (org_id, client) = (org.id.parse().unwrap(), org.client_id.parse().unwrap());
    for (number, currency, status, total, due_in) in [
        (1, "EUR", "sent", 123_450, -1),
        (2, "EUR", "sent", 10_000, 10),
        (3, "USD", "sent", 5_000, 10),
        (4, "EUR", "paid", 999, 0),
    ] {
        let invoice = StoredInvoice { number, currency, status, total, due_in };
        insert_invoice(&mut db, org_id, client, today, invoice).await;
    }
    sqlx::query(
        "INSERT INTO invoices (organization_id, id, client_id, currency, issue_date, due_date, created_at) \
         VALUES ($1::uuid, $2, $3::uuid, 'EUR', $4, $4, now())",
    )
    .bind(&org.id)
    .bind(uuid::Uuid::now_v7())
    .bind(&org.client_id)
    .bind(today)
    .execute(&mut db)
    .await
    .unwrap();
    // The Member's time this week: today's, and last week's, which doesn't count.
    let b = &mut org.people.get_mut("member").unwrap().browser;
    let token = session_token(b).await;
    let monday = today - time::Duration::days(today.weekday().number_days_from_monday().into());
    for (minutes, day) in [("1:30", today), ("0:45", monday), ("2:00", monday - time::Duration::days(1))] {
        let fields = [("minutes", minutes), ("spent_on", &day.to_string()), ("note", ""), ("task_id", "")];
        let res = b.post_with(&format!("/o/{slug}/projects/{mine}/time"), &fields, Some(&token), true).await;
        assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    }

    // The Member: their own tasks, their project only, no invoices, no first steps.
    let (status, html) = b.page(&format!("/o/{slug}")).await;
    assert_eq!(status, 200, "{html}");
    let tasks = section(&html, "Your tasks");
    for tally in ["<strong>1</strong> overdue", "<strong>1</strong> due today", "<strong>1</strong> due this week"] {
        assert!(tasks.contains(tally), "no {tally} in {tasks}");
    }
    assert!(tasks.contains("Late zephyr copy") && tasks.contains("<strong class=\"late\">late, </strong>"), "{tasks}");
    assert!(tasks.contains("All 4 open tasks in My work"), "{tasks}");
    let projects = section(&html, "Active projects");
    assert!(
        projects.contains("Fixture project") && projects.contains("4 open, </span><strong class=\"late\">1 overdue")
    );
    assert!(projects.contains(">All 1 active project<"), "{projects}");
    assert!(!html.contains("Hidden project") && !html.contains("Secret zephyr"), "{html}");
    assert!(!html.contains(">Invoices</h2>") && !html.contains(">Get started</h2>"), "{html}");
    // Leaving is there, and asks first.
    assert!(html.contains(&format!("action=\"/o/{slug}/leave\" data-confirm=\"Leave ")), "{html}");
    let week = (90 + 45) / 60;
    assert!(section(&html, "Your time this week").contains(&format!("<strong>{week}h 15m</strong>")), "{html}");

    // The Owner: every project, money owed per currency and what is late or unsent.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let (_, html) = owner.page(&format!("/o/{slug}")).await;
    assert!(!html.contains(">Get started</h2>"), "the first steps are taken: {html}");
    let tasks = section(&html, "Your tasks");
    assert!(tasks.contains("Secret zephyr plans") && tasks.contains("<strong>1</strong> overdue"), "{tasks}");
    let projects = section(&html, "Active projects");
    assert!(projects.contains("Hidden project") && projects.contains(">All 2 active projects<"), "{projects}");
    let invoices = section(&html, "Invoices");
    assert!(
        invoices.contains("EUR 1334.50 in 2 invoices") && invoices.contains("USD 50.00 in 1 invoice<"),
        "{invoices}"
    );
    assert!(invoices.contains("status=overdue\">1 overdue</a>"), "{invoices}");
    assert!(invoices.contains("status=draft\">1 draft not sent yet</a>"), "{invoices}");
    assert!(section(&html, "Your time this week").contains("<strong>0m</strong>"), "{html}");

    // The Client has the portal instead.
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let res = client.get(&format!("/o/{slug}")).await;
    assert_eq!(clientflow_test_support::browser::location(&res), format!("/portal/{slug}"));
}
