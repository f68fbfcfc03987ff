//! Copying a project: the board and the task tree come along with their dates moved, the
//! original's history stays behind, and the copy is refused (with nothing written) to whoever
//! may not see the original, create projects and tasks, or put people on it.

use clientflow_test_support::TestApp;
use clientflow_test_support::browser::location;
use serde_json::{Value, json};
use uuid::Uuid;

use clientflow::access::api_key as keys;

use crate::support::api::{Tenant, add_member, api_key, count, ctx, get, post, tenant};
use crate::support::orgs::org_with_every_role;
use crate::support::work::add_to_project;

async fn made(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let res = post(app, path, key, body.clone()).await;
    assert_eq!(res.status, 201, "{path} {body}: {}", res.body);
    res.body["data"].clone()
}

/// A task of a project as the board shows it, with its parent's and its column's names.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct TaskRow {
    title: String,
    parent: Option<String>,
    board_column: String,
    status: String,
    due: Option<String>,
    estimate: Option<i32>,
    priority: String,
    seen_by_client: bool,
}

/// A task in "To do", of normal priority, without an estimate, not shown to the client.
fn task(title: &str, parent: Option<&str>, due: Option<&str>) -> TaskRow {
    TaskRow {
        title: title.into(),
        parent: parent.map(Into::into),
        board_column: "To do".into(),
        status: "todo".into(),
        due: due.map(Into::into),
        estimate: None,
        priority: "normal".into(),
        seen_by_client: false,
    }
}

/// The project's tasks, by title.
async fn tasks_of(app: &TestApp, project: &str) -> Vec<TaskRow> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT t.title, p.title AS parent, c.name AS board_column, t.status, t.due_date::text AS due, \
         t.estimate_minutes AS estimate, t.priority, t.visible_to_client AS seen_by_client \
         FROM tasks t JOIN board_columns c ON c.organization_id = t.organization_id AND c.id = t.column_id \
         LEFT JOIN tasks p ON p.organization_id = t.organization_id AND p.id = t.parent_id \
         WHERE t.project_id = $1::uuid ORDER BY t.title",
    )
    .bind(project)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

/// A project with a board of four columns and a tree of four tasks, with time, a comment and an
/// assignee on one of them; returns its id.
async fn template(app: &TestApp, t: &Tenant, key: &str) -> String {
    let project = made(
        app,
        key,
        "/api/v1/projects",
        json!({"name": "Website launch", "description": "Five weeks, start to finish.", "client_id": t.org.client,
               "start_date": "2026-03-02", "due_date": "2026-03-31", "budget_minor": 500000, "hourly_rate_minor": 12000,
               "visible_to_client": true, "status": "completed"}),
    )
    .await;
    let id = project["id"].as_str().unwrap().to_string();
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO board_columns (organization_id, id, project_id, name, position, status) VALUES ($1, $2, $3::uuid, 'Review', 3, 'in_progress')",
    )
    .bind(t.org.id.as_uuid())
    .bind(Uuid::now_v7())
    .bind(&id)
    .execute(&mut db)
    .await
    .unwrap();
    let design = made(
        app,
        key,
        "/api/v1/tasks",
        json!({"project_id": id, "title": "Design", "status": "done", "priority": "high", "due_date": "2026-03-09",
               "estimate_minutes": 600, "visible_to_client": true, "assignees": [t.admin], "description": "Two directions."}),
    )
    .await;
    let design = design["id"].as_str().unwrap().to_string();
    let wireframes = made(
        app,
        key,
        "/api/v1/tasks",
        json!({"project_id": id, "title": "Wireframes", "parent_id": design, "due_date": "2026-03-05", "status": "in_progress"}),
    )
    .await;
    made(app, key, "/api/v1/tasks", json!({"project_id": id, "title": "Sketch", "parent_id": wireframes["id"]})).await;
    made(app, key, "/api/v1/tasks", json!({"project_id": id, "title": "Build", "priority": "low"})).await;
    made(app, key, "/api/v1/time-entries", json!({"project_id": id, "task_id": design, "duration": "2h"})).await;
    made(app, key, &format!("/api/v1/tasks/{design}/comments"), json!({"body": "Client chose B."})).await;
    id
}

#[tokio::test]
async fn a_copy_takes_the_board_and_task_tree_with_dates_moved_and_leaves_the_history_behind() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "copies").await;
    let key = api_key(&app, &t, "admin", None).await.1;
    let original = template(&app, &t, &key).await;
    let before = tasks_of(&app, &original).await;

    let res = post(
        &app,
        &format!("/api/v1/projects/{original}/copy"),
        &key,
        json!({"name": "Website launch: Beta", "start_date": "2026-04-06"}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let copy = res.body["data"].clone();
    let id = copy["id"].as_str().unwrap().to_string();
    assert_eq!(res.header("location"), Some(format!("/api/v1/projects/{id}").as_str()));
    assert_eq!(
        get(&app, &format!("/api/v1/projects/{id}"), &key).await.body["data"],
        copy,
        "the answer is what a GET returns"
    );
    // Dates move with the start (2 March to 6 April: 35 days); the rest is the original's, but
    // the copy is active and hidden from the client.
    assert_eq!(copy["name"], "Website launch: Beta");
    assert_eq!((copy["start_date"].as_str(), copy["due_date"].as_str()), (Some("2026-04-06"), Some("2026-05-05")));
    assert_eq!(copy["client_id"], json!(t.org.client));
    assert_eq!((copy["budget_minor"].as_i64(), copy["hourly_rate_minor"].as_i64()), (Some(500000), Some(12000)));
    assert_eq!(copy["description"], "Five weeks, start to finish.");
    assert_eq!((copy["status"].as_str(), copy["visible_to_client"].as_bool()), (Some("active"), Some(false)));

    let columns = |p: String| {
        let (app, key) = (&app, &key);
        async move {
            let res = get(app, &format!("/api/v1/projects/{p}/columns"), key).await;
            res.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["name"].clone(), c["status"].clone()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(columns(id.clone()).await, columns(original.clone()).await);
    assert_eq!(columns(id.clone()).await.len(), 4);

    // Every task, its subtasks under the copy's own parents, in "To do", due dates moved.
    assert_eq!(
        tasks_of(&app, &id).await,
        vec![
            TaskRow { priority: "low".into(), ..task("Build", None, None) },
            TaskRow {
                estimate: Some(600),
                priority: "high".into(),
                seen_by_client: true,
                ..task("Design", None, Some("2026-04-13"))
            },
            task("Sketch", Some("Wireframes"), None),
            task("Wireframes", Some("Design"), Some("2026-04-09")),
        ]
    );
    let foreign_parents = count(
        &app,
        &format!(
            "SELECT count(*) FROM tasks t JOIN tasks p ON p.organization_id = t.organization_id AND p.id = t.parent_id \
             WHERE t.project_id = '{id}' AND p.project_id <> t.project_id"
        ),
    )
    .await;
    assert_eq!(foreign_parents, 0);
    let description: String = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT description FROM tasks WHERE project_id = $1::uuid AND title = 'Design'")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert_eq!(description, "Two directions.");

    // The history stays with the original, which is unchanged.
    let on_tasks = "JOIN tasks t ON t.organization_id = x.organization_id AND t.id = x.task_id WHERE t.project_id";
    let tables = [
        "time_entries x WHERE x.project_id".to_string(),
        format!("task_assignees x {on_tasks}"),
        format!("comments x {on_tasks}"),
    ];
    for table in tables {
        assert_eq!(count(&app, &format!("SELECT count(*) FROM {table} = '{id}'")).await, 0, "{table}");
        assert_eq!(count(&app, &format!("SELECT count(*) FROM {table} = '{original}'")).await, 1, "{table}");
    }
    assert_eq!(tasks_of(&app, &original).await, before);
    // Each task says who made it; the copy is one audit event naming its original.
    let created = count(
        &app,
        &format!(
            "SELECT count(*) FROM task_activity a JOIN tasks t ON t.organization_id = a.organization_id AND t.id = a.task_id \
             WHERE t.project_id = '{id}' AND a.field = 'created' AND a.new_value = t.title AND a.actor_label LIKE 'API key %'"
        ),
    )
    .await;
    assert_eq!(created, 4);
    let audit = count(
        &app,
        &format!(
            "SELECT count(*) FROM audit_events WHERE action = 'project.copied' AND target_id = '{id}' \
             AND after->>'copied_from' = '{original}' AND after->>'tasks' = '4' AND after->>'columns' = '4'"
        ),
    )
    .await;
    assert_eq!(audit, 1);
    // The one who copied is on the copy; nobody else was asked for.
    assert_eq!(count(&app, &format!("SELECT count(*) FROM project_members WHERE project_id = '{id}'")).await, 1);

    // Without a start date, the copy has no due dates; the client can be changed or removed.
    let bare =
        made(&app, &key, &format!("/api/v1/projects/{original}/copy"), json!({"name": "Undated", "client_id": null}))
            .await;
    assert_eq!(
        (bare["start_date"].is_null(), bare["due_date"].is_null(), bare["client_id"].is_null()),
        (true, true, true)
    );
    let bare = bare["id"].as_str().unwrap().to_string();
    assert!(tasks_of(&app, &bare).await.iter().all(|t| t.due.is_none()));
    assert_eq!(tasks_of(&app, &bare).await.len(), 4);
    // A start so late that the due dates would leave the calendar: they are left empty.
    let far = made(
        &app,
        &key,
        &format!("/api/v1/projects/{original}/copy"),
        json!({"name": "Far", "start_date": "9999-12-30"}),
    )
    .await;
    assert_eq!((far["start_date"].as_str(), far["due_date"].as_str()), (Some("9999-12-30"), None));
    let dues: Vec<_> = tasks_of(&app, far["id"].as_str().unwrap()).await.into_iter().map(|t| t.due).collect();
    assert_eq!(dues, [None, None, None, None]);
    // A copy of a copy is a copy like any other.
    let again =
        made(&app, &key, &format!("/api/v1/projects/{id}/copy"), json!({"name": "Gamma", "start_date": "2026-04-06"}))
            .await;
    assert_eq!(tasks_of(&app, again["id"].as_str().unwrap()).await, tasks_of(&app, &id).await);

    // Nearly ten thousand years back: a date that far before the year 1 is beyond even what
    // PostgreSQL can hold, and must not be formed on the way.
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE projects SET start_date = '9999-01-01', due_date = NULL WHERE id = $1::uuid")
        .bind(&original)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET due_date = '0001-01-05' WHERE project_id = $1::uuid AND title = 'Build'")
        .bind(&original)
        .execute(&mut db)
        .await
        .unwrap();
    let back = made(
        &app,
        &key,
        &format!("/api/v1/projects/{original}/copy"),
        json!({"name": "Back", "start_date": "0001-01-01"}),
    )
    .await;
    assert_eq!(back["due_date"], Value::Null);
    let dues: Vec<_> = tasks_of(&app, back["id"].as_str().unwrap()).await.into_iter().map(|t| t.due).collect();
    assert_eq!(dues, [None, None, None, None]);
}

#[tokio::test]
async fn a_copy_is_refused_with_nothing_written_to_whoever_may_not_make_it_and_for_bad_input() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "copyattack").await;
    let other = tenant(&app, "copyvictim").await;
    let admin = api_key(&app, &t, "admin", None).await.1;
    let original = template(&app, &t, &admin).await;
    let path = format!("/api/v1/projects/{original}/copy");
    let projects = "SELECT count(*) FROM projects";
    let tasks = "SELECT count(*) FROM tasks";
    let (p0, t0) = (count(&app, projects).await, count(&app, tasks).await);

    // Another organization's key: the project doesn't exist for it.
    let foreign = api_key(&app, &other, "admin", None).await.1;
    post(&app, &path, &foreign, json!({"name": "Stolen"})).await.assert_problem(404);
    // Roles and keys without the permissions.
    post(&app, &path, &api_key(&app, &t, "member", None).await.1, json!({"name": "X"})).await.assert_problem(403);
    let no_tasks = api_key(&app, &t, "admin", Some(&["projects.read", "projects.create"])).await.1;
    post(&app, &path, &no_tasks, json!({"name": "X"})).await.assert_problem(403);
    let no_people = api_key(&app, &t, "manager", Some(&["projects.read", "projects.create", "tasks.create"])).await.1;
    post(&app, &path, &no_people, json!({"name": "X", "with_people": true})).await.assert_problem(403);
    // Bad input, each named.
    for (body, field) in [
        (json!({"name": " "}), "name"),
        (json!({"name": "A\u{0}B"}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "X", "client_id": other.org.client}), "client_id"),
        (json!({"name": "X", "client_id": "not-an-id"}), "client_id"),
        (json!({"name": "X", "start_date": "2026-02-30"}), "start_date"),
        (json!({"name": "X", "with_people": null}), "with_people"),
        (json!({"name": "X", "status": "active"}), "status"),
    ] {
        post(&app, &path, &admin, body.clone()).await.assert_problem_field(422, field);
    }
    assert_eq!((count(&app, projects).await, count(&app, tasks).await), (p0, t0), "nothing was written");

    // A Member allowed to create projects still copies only the projects they may see.
    let mut db = app.db.admin_conn().await;
    sqlx::query("INSERT INTO role_permissions VALUES ($1, 'member', 'projects.create', true)")
        .bind(t.org.id.as_uuid())
        .execute(&mut db)
        .await
        .unwrap();
    let member = add_member(&app, &t.org, "member").await;
    let unseen = t.org.project;
    let member_key = keys::create_for(
        &app.app_db,
        &ctx(&app),
        &t.org.principal,
        member.to_string().parse().unwrap(),
        &keys::NewKey { name: "member key".into(), role: "member".into(), permissions: None, expires_in_days: None },
    )
    .await
    .unwrap()
    .secret;
    let seen_path = format!("/api/v1/projects/{unseen}/copy");
    post(&app, &seen_path, &member_key, json!({"name": "Peek"})).await.assert_problem(404);
    add_to_project(&app, t.org.id.as_uuid(), unseen.as_uuid(), member).await;
    let copy = made(&app, &member_key, &seen_path, json!({"name": "Mine"})).await;
    let members = format!(
        "SELECT count(*) FROM project_members WHERE project_id = '{}' AND user_id = '{member}'",
        copy["id"].as_str().unwrap()
    );
    assert_eq!(count(&app, &members).await, 1, "the Member sees the copy they made");

    // Too large to copy: refused whole.
    sqlx::query(
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         SELECT p.organization_id, gen_random_uuid(), p.id, c.id, 'Task ' || n, now(), now() \
         FROM projects p JOIN LATERAL (SELECT id FROM board_columns WHERE project_id = p.id ORDER BY position LIMIT 1) c ON true, \
         generate_series(1, 5001) n WHERE p.id = $1",
    )
    .bind(Uuid::parse_str(&original).unwrap())
    .execute(&mut db)
    .await
    .unwrap();
    let (p1, t1) = (count(&app, projects).await, count(&app, tasks).await);
    let res = post(&app, &path, &admin, json!({"name": "Huge"})).await;
    res.assert_problem(409);
    assert!(res.body["detail"].as_str().unwrap().contains("more than 5000 tasks"), "{}", res.body);
    assert_eq!((count(&app, projects).await, count(&app, tasks).await), (p1, t1));
}

#[tokio::test]
async fn with_people_puts_the_originals_active_members_on_the_copy_with_their_rates() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "copypeople").await;
    let key = api_key(&app, &t, "manager", None).await.1;
    let original = template(&app, &t, &key).await;
    let designer = add_member(&app, &t.org, "member").await;
    let gone = add_member(&app, &t.org, "member").await;
    let mut db = app.db.admin_conn().await;
    for (user, rate) in [(designer, Some(9000_i64)), (gone, None)] {
        sqlx::query(
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at, hourly_rate_minor) VALUES ($1, $2::uuid, $3, now(), $4)",
        )
        .bind(t.org.id.as_uuid())
        .bind(&original)
        .bind(user)
        .bind(rate)
        .execute(&mut db)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE memberships SET status = 'suspended' WHERE user_id = $1")
        .bind(gone)
        .execute(&mut db)
        .await
        .unwrap();

    let copy = made(
        &app,
        &key,
        &format!("/api/v1/projects/{original}/copy"),
        json!({"name": "Team copy", "with_people": true}),
    )
    .await;
    let people: Vec<(Uuid, Option<i64>)> = sqlx::query_as(
        "SELECT user_id, hourly_rate_minor FROM project_members WHERE project_id = $1::uuid ORDER BY user_id",
    )
    .bind(copy["id"].as_str().unwrap())
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut expected = vec![(t.admin, None), (designer, Some(9000))];
    expected.sort();
    assert_eq!(people, expected, "the suspended member is left out");
    let audit = "SELECT count(*) FROM audit_events WHERE action = 'project.copied' AND after->>'people' = '2'";
    assert_eq!(count(&app, audit).await, 1, "the admin was on it already, as its creator's key");
}

#[tokio::test]
async fn the_project_page_offers_the_copy_to_those_who_may_make_it() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "copyweb").await;
    let slug = org.slug.clone();
    let (org_id, manager) = (org.id.clone(), org.people["manager"].user_id.clone());
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    // The new-project page says where copies come from.
    let (_, new_page) = owner.page(&format!("/o/{slug}/projects/new")).await;
    assert!(new_page.contains("choose “Copy project”"), "{new_page}");
    let res = owner
        .submit(
            &format!("/o/{slug}/projects/new"),
            &format!("/o/{slug}/projects"),
            &[
                ("name", "Brand refresh"),
                ("client_id", &org.client_id),
                ("start_date", "2026-05-04"),
                ("status", "active"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let project = location(&res);
    let res = owner.submit(&project, &format!("{project}/tasks"), &[("title", "Moodboard")]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE tasks SET due_date = '2026-05-11' WHERE title = 'Moodboard'").execute(&mut db).await.unwrap();
    let (_, html) = owner.page(&project).await;
    assert!(html.contains(&format!("href=\"{project}/copy\">Copy project</a>")), "{html}");

    let (status, form) = owner.page(&format!("{project}/copy")).await;
    assert_eq!(status, 200);
    assert!(form.contains("value=\"Brand refresh (copy)\""), "{form}");
    assert!(form.contains("its 1 task (subtasks included)"), "{form}");
    assert!(form.contains("This project started 2026-05-04"), "{form}");
    assert!(form.contains("1 person"), "only the owner is on it: {form}");
    // The count is whom "the same people" would take along: the active members on it.
    sqlx::query(
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) \
         VALUES ($1::uuid, $2::uuid, $3::uuid, now())",
    )
    .bind(&org_id)
    .bind(project.rsplit('/').next().unwrap())
    .bind(&manager)
    .execute(&mut db)
    .await
    .unwrap();
    for (status, people) in [("active", "2 people"), ("suspended", "1 person"), ("active", "2 people")] {
        sqlx::query("UPDATE memberships SET status = $1 WHERE user_id = $2::uuid")
            .bind(status)
            .bind(&manager)
            .execute(&mut db)
            .await
            .unwrap();
        let (_, form) = owner.page(&format!("{project}/copy")).await;
        assert!(form.contains(&format!("same people on it ({people},")), "{status}: {form}");
    }

    // A bad date is named, what was typed is kept, nothing is made.
    let before = count(&app, "SELECT count(*) FROM projects").await;
    let res = owner
        .submit(
            &format!("{project}/copy"),
            &format!("{project}/copy"),
            &[("name", "Brand refresh: Acme"), ("start_date", "2026-13-01"), ("client_id", "")],
        )
        .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("Start date") && html.contains("value=\"Brand refresh: Acme\""), "{html}");
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, before);

    let res = owner
        .submit(
            &format!("{project}/copy"),
            &format!("{project}/copy"),
            &[("name", "Brand refresh: Acme"), ("start_date", "2026-06-01"), ("client_id", "")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let copy = location(&res);
    assert_ne!(copy, project);
    let (_, html) = owner.page(&copy).await;
    assert!(
        html.contains("Project copied.") && html.contains("Moodboard") && html.contains("Starts 2026-06-01"),
        "{html}"
    );
    let id = copy.rsplit('/').next().unwrap().to_string();
    let due: String = sqlx::query_scalar("SELECT due_date::text FROM tasks WHERE project_id = $1::uuid")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(due, "2026-06-08");

    // A Member may not create projects: no form, and the copy itself is refused. The Client
    // can't reach the staff page at all.
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let (status, _) = member.page(&format!("{project}/copy")).await;
    assert_eq!(status, 403);
    let token = crate::support::orgs::session_token(member).await;
    let res = member.post_with(&format!("{project}/copy"), &[("name", "Mine")], Some(&token), true).await;
    assert_eq!(res.status(), 403);
    let client = &mut org.people.get_mut("client").unwrap().browser;
    let (status, _) = client.page(&format!("{project}/copy")).await;
    assert_ne!(status, 200);
    assert_eq!(count(&app, "SELECT count(*) FROM projects").await, before + 1);
}
