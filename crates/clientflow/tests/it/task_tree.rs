//! Subtasks form a forest: no loop of any length (through the API, the pages or racing
//! requests), nesting bounded, and nothing written when a change is refused.

use clientflow_test_support::TestApp;
use serde_json::json;

use crate::support::api::{api_key, patch, post, tenant};

/// A project made through the API (with its board columns).
async fn project(app: &TestApp, key: &str) -> String {
    post(app, "/api/v1/projects", key, json!({"name": "Site"})).await.id()
}

async fn new_task(app: &TestApp, key: &str, project: &str, title: &str, parent: Option<&str>) -> String {
    let mut body = json!({"project_id": project, "title": title});
    if let Some(p) = parent {
        body["parent_id"] = json!(p);
    }
    let res = post(app, "/api/v1/tasks", key, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.id()
}

async fn parent_of(app: &TestApp, task: &str) -> Option<uuid::Uuid> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT parent_id FROM tasks WHERE id = $1::uuid").bind(task).fetch_one(&mut db).await.unwrap()
}

/// Tasks of the organization whose ancestor chain comes back to themselves.
async fn tasks_on_a_loop(app: &TestApp) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(
        "WITH RECURSIVE walk (start, cur, n) AS ( \
           SELECT id, parent_id, 1 FROM tasks WHERE parent_id IS NOT NULL \
           UNION ALL SELECT w.start, t.parent_id, w.n + 1 FROM walk w JOIN tasks t ON t.id = w.cur \
            WHERE w.cur <> w.start AND t.parent_id IS NOT NULL AND w.n < 100) \
         SELECT count(DISTINCT start) FROM walk WHERE cur = start",
    )
    .fetch_one(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_task_can_not_be_placed_under_its_own_subtree() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "tree").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let p = project(&app, &key).await;
    let top = new_task(&app, &key, &p, "T", None).await;
    let sub = new_task(&app, &key, &p, "S", Some(&top)).await;
    let subsub = new_task(&app, &key, &p, "U", Some(&sub)).await;

    // Two- and three-task loops, and the task itself.
    for (task, parent) in [(&top, &sub), (&top, &subsub), (&sub, &subsub), (&top, &top)] {
        let res = patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"parent_id": parent})).await;
        res.assert_problem_field(422, "parent_id");
    }
    assert_eq!(parent_of(&app, &top).await, None, "nothing was written");
    assert_eq!(tasks_on_a_loop(&app).await, 0);
    // A refused change in the same request as other fields changes none of them.
    let res = patch(&app, &format!("/api/v1/tasks/{top}"), &key, json!({"parent_id": sub, "title": "renamed"})).await;
    res.assert_problem_field(422, "parent_id");
    let res = crate::support::api::get(&app, &format!("/api/v1/tasks/{top}"), &key).await;
    assert_eq!(res.body["data"]["title"], "T");

    // Moving within the tree the other way is fine: U becomes a sibling of S, then S goes under U.
    let res = patch(&app, &format!("/api/v1/tasks/{subsub}"), &key, json!({"parent_id": top})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = patch(&app, &format!("/api/v1/tasks/{sub}"), &key, json!({"parent_id": subsub})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(parent_of(&app, &sub).await.map(|u| u.to_string()), Some(subsub.clone()));

    // Deleting a task deletes its own subtree and nothing else.
    let other = new_task(&app, &key, &p, "Other", None).await;
    let res = crate::support::api::delete(&app, &format!("/api/v1/tasks/{subsub}"), &key).await;
    assert_eq!(res.status, 204, "{}", res.body);
    let remaining = crate::support::api::count(&app, "SELECT count(*) FROM tasks").await;
    assert_eq!(remaining, 2, "T and Other remain");
    let _ = other;
}

#[tokio::test]
async fn subtasks_nest_at_most_five_levels() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "deep").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let p = project(&app, &key).await;
    let mut chain = vec![new_task(&app, &key, &p, "level 1", None).await];
    for level in 2..=5 {
        let parent = chain.last().unwrap().clone();
        chain.push(new_task(&app, &key, &p, &format!("level {level}"), Some(&parent)).await);
    }
    // A sixth level is refused, on creation…
    let res =
        post(&app, "/api/v1/tasks", &key, json!({"project_id": p, "title": "level 6", "parent_id": chain[4]})).await;
    res.assert_problem_field(422, "parent_id");
    assert!(res.body["detail"].as_str().unwrap().contains("5 levels"), "{}", res.body);
    // …and by moving a subtree: a two-level subtree under level 4 would reach level 6.
    let a = new_task(&app, &key, &p, "A", None).await;
    let _b = new_task(&app, &key, &p, "B", Some(&a)).await;
    let res = patch(&app, &format!("/api/v1/tasks/{a}"), &key, json!({"parent_id": chain[3]})).await;
    res.assert_problem_field(422, "parent_id");
    // Under level 3 it fits exactly.
    let res = patch(&app, &format!("/api/v1/tasks/{a}"), &key, json!({"parent_id": chain[2]})).await;
    assert_eq!(res.status, 200, "{}", res.body);
}

/// Two requests racing to put T under S and S under T: each alone is valid, together they are a
/// loop. One may win; never both.
#[tokio::test]
async fn racing_parent_changes_never_make_a_loop() {
    let app = TestApp::builder().pool_size(8).spawn().await;
    let t = tenant(&app, "race").await;
    let (_, key) = api_key(&app, &t, "admin", None).await;
    let p = project(&app, &key).await;
    for round in 0..12 {
        let a = new_task(&app, &key, &p, &format!("A{round}"), None).await;
        let b = new_task(&app, &key, &p, &format!("B{round}"), None).await;
        let (path_a, path_b) = (format!("/api/v1/tasks/{a}"), format!("/api/v1/tasks/{b}"));
        let (ra, rb) = tokio::join!(
            patch(&app, &path_a, &key, json!({"parent_id": b})),
            patch(&app, &path_b, &key, json!({"parent_id": a})),
        );
        let ok = [ra.status, rb.status].iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 1, "exactly one wins: {} {} / {} {}", ra.status, ra.body, rb.status, rb.body);
        for r in [&ra, &rb] {
            if r.status != 200 {
                r.assert_problem_field(422, "parent_id");
            }
        }
    }
    assert_eq!(tasks_on_a_loop(&app).await, 0);
}

#[tokio::test]
async fn the_task_page_refuses_a_loop_naming_the_parent_field() {
    let app = TestApp::spawn().await;
    let mut owner = crate::support::accounts::sign_up(&app, "owner@treepage.test").await;
    let slug = crate::support::orgs::create_org(&mut owner, "Tree Page").await;
    let key = crate::support::api_key(&app, crate::support::org_id(&app, &slug).await, "tree").await;
    let project = post(&app, "/api/v1/projects", &key, json!({"name": "Site"})).await.id();
    let task = |title: &'static str, parent: Option<String>| {
        let mut body = json!({"project_id": project, "title": title});
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        body
    };
    let top = post(&app, "/api/v1/tasks", &key, task("Top", None)).await.id();
    let sub = post(&app, "/api/v1/tasks", &key, task("Sub", Some(top.clone()))).await.id();

    let page = format!("/o/{slug}/tasks/{top}");
    let res = owner
        .submit(
            &page,
            &format!("/o/{slug}/tasks/{top}/edit"),
            &[
                ("title", "Top"),
                ("description", ""),
                ("status", "todo"),
                ("priority", "normal"),
                ("due_date", ""),
                ("estimate_minutes", ""),
                ("column_id", ""),
                ("parent_id", &sub),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("parent_id") || html.contains("Parent"), "{html}");
    assert!(html.contains("own subtask"), "the page says why: {html}");
    assert_eq!(parent_of(&app, &top).await, None);
}
