//! Editing and listing through the API: invoice search, long uncounted lists page by page;
//! comments (one's own; others' only to delete, with projects.update),
//! time entries, file metadata, and file uploads with the web's size and type limits. Each
//! change is audited with its before and after, refuses foreign ids with 404 and bad fields
//! with a problem naming them.

use clientflow_test_support::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::api::{Tenant, add_member, api_key, count, delete, get, patch, post, tenant, upload, upload_with};
use crate::support::work::activity_of;

/// A key of `role` that stands for `creator` (a member of `t`'s organization).
async fn key_of(app: &TestApp, t: &Tenant, role: &str, creator: Uuid) -> String {
    let (id, secret) = api_key(app, t, role, None).await;
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE api_keys SET created_by = $1 WHERE id = $2")
        .bind(creator)
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    secret
}

async fn join_project(app: &TestApp, t: &Tenant, project: &str, user: Uuid) {
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2::uuid, $3, now())",
    )
    .bind(t.org.id)
    .bind(project)
    .bind(user)
    .execute(&mut db)
    .await
    .unwrap();
}

/// The last audit event of `action` on `target`: (actor type, before, after).
async fn last_audit(app: &TestApp, action: &str, target: &str) -> (String, Value, Value) {
    let mut db = app.db.admin_conn().await;
    let row: Option<(String, Option<Value>, Option<Value>)> = sqlx::query_as(
        "SELECT actor_type, before, after FROM audit_events WHERE action = $1 AND target_id = $2 ORDER BY seq DESC LIMIT 1",
    )
    .bind(action)
    .bind(target)
    .fetch_optional(&mut db)
    .await
    .unwrap();
    let (actor, before, after) = row.unwrap_or_else(|| panic!("no {action} on {target} in the audit log"));
    (actor, before.unwrap_or(Value::Null), after.unwrap_or(Value::Null))
}

async fn comment_body(app: &TestApp, id: &str) -> Option<String> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar("SELECT body FROM comments WHERE id = $1::uuid").bind(id).fetch_optional(&mut db).await.unwrap()
}

#[tokio::test]
async fn comments_are_edited_by_their_authors_and_deleted_by_authors_or_moderators() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "comments").await;
    let other = tenant(&app, "comments-elsewhere").await;
    let member = add_member(&app, &t.org, "member").await;
    let manager = add_member(&app, &t.org, "manager").await;
    let admin_key = key_of(&app, &t, "admin", t.admin).await;
    let project = post(&app, "/api/v1/projects", &admin_key, json!({"name": "Work"})).await.id();
    join_project(&app, &t, &project, member).await;
    let member_key = key_of(&app, &t, "member", member).await;
    let manager_key = key_of(&app, &t, "manager", manager).await;
    let (_, no_comments_key) = api_key(&app, &t, "manager", Some(&["tasks.read", "tasks.update"])).await;
    let (_, foreign_key) = api_key(&app, &other, "admin", None).await;

    let task = post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": project, "title": "Discuss"})).await.id();
    let other_task =
        post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": project, "title": "Else"})).await.id();
    let comments = format!("/api/v1/tasks/{task}/comments");
    let mine = post(&app, &comments, &member_key, json!({"body": "First draft"})).await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    let mine_url = mine.header("location").unwrap().to_string();
    let mine_id = mine.id();
    assert_eq!(mine.body["data"]["edited_at"], Value::Null);
    let admins = post(&app, &comments, &admin_key, json!({"body": "Admin's words"})).await.id();
    let admins_url = format!("{comments}/{admins}");

    // The author edits: text and visibility, recorded with before and after.
    let res = patch(&app, &mine_url, &member_key, json!({"body": "Final text", "client_visible": true})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["body"], "Final text");
    assert_eq!(res.body["data"]["client_visible"], true);
    assert!(res.body["data"]["edited_at"].is_string(), "{}", res.body);
    assert_eq!(get(&app, &mine_url, &member_key).await.body["data"]["body"], "Final text");
    let (actor, before, after) = last_audit(&app, "comment.updated", &task).await;
    assert_eq!(actor, "api_key");
    assert_eq!(before, json!({"comment": mine_id, "body": "First draft", "client_visible": false}));
    assert_eq!(after, json!({"comment": mine_id, "body": "Final text", "client_visible": true}));

    // Nobody edits someone else's words, a moderator neither; a Member can't delete them.
    for key in [&member_key, &manager_key] {
        patch(&app, &admins_url, key, json!({"body": "Rewritten"})).await.assert_problem(403);
    }
    delete(&app, &admins_url, &member_key).await.assert_problem(403);
    assert_eq!(comment_body(&app, &admins).await.as_deref(), Some("Admin's words"));

    // Bad input names the field and changes nothing.
    patch(&app, &mine_url, &member_key, json!({"body": ""})).await.assert_problem_field(422, "body");
    patch(&app, &mine_url, &member_key, json!({"body": 7})).await.assert_problem_field(422, "body");
    patch(&app, &mine_url, &member_key, json!({"author_id": t.admin})).await.assert_problem_field(422, "author_id");
    patch(&app, &mine_url, &member_key, json!({"body": "x".repeat(20001)})).await.assert_problem_field(422, "body");
    assert_eq!(comment_body(&app, &mine_id).await.as_deref(), Some("Final text"));

    // Foreign or mismatched ids are not found; a key without comments.create is refused first.
    patch(&app, &mine_url, &foreign_key, json!({"body": "pwned"})).await.assert_problem(404);
    delete(&app, &mine_url, &foreign_key).await.assert_problem(404);
    let wrong_task = format!("/api/v1/tasks/{other_task}/comments/{mine_id}");
    patch(&app, &wrong_task, &member_key, json!({"body": "moved?"})).await.assert_problem(404);
    delete(&app, &wrong_task, &admin_key).await.assert_problem(404);
    patch(&app, &format!("{comments}/{}", Uuid::now_v7()), &member_key, json!({"body": "x"})).await.assert_problem(404);
    patch(&app, &mine_url, &no_comments_key, json!({"body": "x"})).await.assert_problem(403);
    delete(&app, &mine_url, &no_comments_key).await.assert_problem(403);
    assert_eq!(comment_body(&app, &mine_id).await.as_deref(), Some("Final text"));

    // A Manager moderates (deletes) others' comments; a Member deletes their own.
    assert_eq!(delete(&app, &admins_url, &manager_key).await.status, 204);
    let (_, before, _) = last_audit(&app, "comment.deleted", &task).await;
    assert_eq!(before["body"], "Admin's words");
    assert_eq!(delete(&app, &mine_url, &member_key).await.status, 204);
    assert_eq!(get(&app, &mine_url, &member_key).await.status, 404);
    assert_eq!(count(&app, "SELECT count(*) FROM comments").await, 0);
}

#[tokio::test]
async fn time_entries_are_edited_by_their_person_or_with_projects_update() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "timeedit").await;
    let other = tenant(&app, "timeedit-elsewhere").await;
    let member = add_member(&app, &t.org, "member").await;
    let admin_key = key_of(&app, &t, "admin", t.admin).await;
    let project = post(&app, "/api/v1/projects", &admin_key, json!({"name": "Work"})).await.id();
    join_project(&app, &t, &project, member).await;
    let member_key = key_of(&app, &t, "member", member).await;
    let (_, foreign_key) = api_key(&app, &other, "admin", None).await;
    let (_, other_admin_key) = api_key(&app, &other, "admin", None).await;
    let task = post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": project, "title": "Build"})).await.id();
    let second_project = post(&app, "/api/v1/projects", &admin_key, json!({"name": "Second"})).await.id();
    let elsewhere_task =
        post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": second_project, "title": "Elsewhere"})).await.id();
    let foreign_project = post(&app, "/api/v1/projects", &other_admin_key, json!({"name": "Theirs"})).await.id();
    let foreign_task =
        post(&app, "/api/v1/tasks", &other_admin_key, json!({"project_id": foreign_project, "title": "Theirs"}))
            .await
            .id();

    let res = post(
        &app,
        "/api/v1/time-entries",
        &member_key,
        json!({"project_id": project, "minutes": 30, "spent_on": "2030-01-02", "note": "first"}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let mine = res.header("location").unwrap().to_string();
    let mine_id = res.id();
    let admins = post(&app, "/api/v1/time-entries", &admin_key, json!({"project_id": project, "minutes": 60}))
        .await
        .header("location")
        .unwrap()
        .to_string();

    let res = patch(
        &app,
        &mine,
        &member_key,
        json!({"minutes": 95, "spent_on": "2030-01-03", "note": "corrected", "task_id": task}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let d = &res.body["data"];
    assert_eq!(
        (d["minutes"].as_i64(), d["spent_on"].as_str(), d["note"].as_str(), d["task_id"].as_str()),
        (Some(95), Some("2030-01-03"), Some("corrected"), Some(task.as_str())),
        "{d}"
    );
    assert_eq!(d["user_id"], json!(member), "an entry stays with its person: {d}");
    let (actor, before, after) = last_audit(&app, "time.updated", &mine_id).await;
    assert_eq!(actor, "api_key");
    assert_eq!(before, json!({"task_id": null, "minutes": 30, "spent_on": "2030-01-02", "note": "first"}));
    assert_eq!(after, json!({"task_id": task, "minutes": 95, "spent_on": "2030-01-03", "note": "corrected"}));
    // Absent fields stay; an empty task_id detaches.
    let res = patch(&app, &mine, &member_key, json!({"task_id": ""})).await;
    assert_eq!((res.body["data"]["task_id"].clone(), res.body["data"]["minutes"].as_i64()), (Value::Null, Some(95)));

    // Bad input names the field and changes nothing.
    for (body, field) in [
        (json!({"minutes": 0}), "minutes"),
        (json!({"minutes": 1441}), "minutes"),
        (json!({"minutes": "lots"}), "minutes"),
        (json!({"spent_on": "03/01/2030"}), "spent_on"),
        (json!({"spent_on": ""}), "spent_on"),
        (json!({"task_id": "nope"}), "task_id"),
        (json!({"task_id": elsewhere_task}), "task_id"),
        (json!({"task_id": foreign_task}), "task_id"),
        (json!({"project_id": second_project}), "project_id"),
        (json!({"user_id": t.admin}), "user_id"),
        (json!({"note": "x".repeat(2001)}), "note"),
    ] {
        patch(&app, &mine, &member_key, body).await.assert_problem_field(422, field);
    }
    let res = get(&app, &mine, &member_key).await;
    assert_eq!(
        (res.body["data"]["minutes"].as_i64(), res.body["data"]["note"].as_str()),
        (Some(95), Some("corrected"))
    );

    // Someone else's entry: a Member can't, projects.update can; another tenant can't find it.
    patch(&app, &admins, &member_key, json!({"minutes": 1})).await.assert_problem(403);
    let res = patch(&app, &mine, &admin_key, json!({"minutes": 100})).await;
    assert_eq!(res.body["data"]["minutes"], 100, "{}", res.body);
    patch(&app, &mine, &foreign_key, json!({"minutes": 1})).await.assert_problem(404);
    patch(&app, &format!("/api/v1/time-entries/{}", Uuid::now_v7()), &admin_key, json!({"minutes": 1}))
        .await
        .assert_problem(404);
    assert_eq!(get(&app, &mine, &admin_key).await.body["data"]["minutes"], 100);
}

#[tokio::test]
async fn files_are_uploaded_with_the_web_limits_and_their_metadata_edited() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.body_limit_bytes = 16 * 1024;
            c.files.max_upload_bytes = 64 * 1024;
        })
        .spawn()
        .await;
    let t = tenant(&app, "apifiles").await;
    let other = tenant(&app, "apifiles-elsewhere").await;
    let member = add_member(&app, &t.org, "member").await;
    let admin_key = key_of(&app, &t, "admin", t.admin).await;
    let project = post(&app, "/api/v1/projects", &admin_key, json!({"name": "Work"})).await.id();
    let member_key = key_of(&app, &t, "member", member).await;
    let (_, read_only_key) = api_key(&app, &t, "manager", Some(&["files.read", "projects.read"])).await;
    let (_, foreign_key) = api_key(&app, &other, "admin", None).await;
    let task = post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": project, "title": "Docs"})).await.id();
    let second = post(&app, "/api/v1/projects", &admin_key, json!({"name": "Second"})).await.id();
    let elsewhere_task =
        post(&app, "/api/v1/tasks", &admin_key, json!({"project_id": second, "title": "Elsewhere"})).await.id();
    let files = || count(&app, "SELECT count(*) FROM files");
    let foreign_project = other.org.project.to_string();

    // Larger than any JSON body may be, within the upload limit: stored, and downloadable
    // through the link the file's GET issues.
    let contents: Vec<u8> = b"minutes of the meeting\n".iter().cycle().take(40 * 1024).copied().collect();
    let res =
        upload(&app, &admin_key, &[("project_id", &project), ("task_id", &task)], Some(("notes.txt", &contents))).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let file = res.id();
    let location = res.header("location").unwrap().to_string();
    assert_eq!(location, format!("/api/v1/files/{file}"));
    let d = &res.body["data"];
    assert_eq!(
        (d["name"].as_str(), d["content_type"].as_str(), d["size_bytes"].as_i64(), d["task_id"].as_str()),
        (Some("notes.txt"), Some("text/plain"), Some(contents.len() as i64), Some(task.as_str()))
    );
    assert_eq!(d["shared_with_client"], false);
    let (actor, _, after) = last_audit(&app, "file.uploaded", &file).await;
    assert_eq!((actor.as_str(), after["size_bytes"].as_i64()), ("api_key", Some(contents.len() as i64)));
    let link = get(&app, &location, &admin_key).await.body["data"]["download_url"].as_str().unwrap().to_string();
    let path = &link[link.find("/files/").unwrap()..];
    let downloaded = app.client.get(app.url(path)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&downloaded[..], &contents[..], "the stored file is the uploaded one");

    // The web's limits and checks, as problems naming the part; nothing is stored.
    let too_big = vec![b'a'; 64 * 1024 + 1];
    upload(&app, &admin_key, &[("project_id", &project)], Some(("big.txt", &too_big)))
        .await
        .assert_problem_field(413, "file");
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\xff\xff\x00\x00";
    upload(&app, &admin_key, &[("project_id", &project)], Some(("setup.pdf", exe)))
        .await
        .assert_problem_field(415, "file");
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("project_id", &project)], None, "file"),
        (vec![("project_id", &project)], Some(("empty.txt", b"")), "file"),
        (vec![], Some(("a.txt", b"a")), "project_id"),
        (vec![("project_id", "nope")], Some(("a.txt", b"a")), "project_id"),
        (vec![("project_id", &foreign_project)], Some(("a.txt", b"a")), "project_id"),
        (vec![("project_id", &project), ("task_id", &elsewhere_task)], Some(("a.txt", b"a")), "task_id"),
        (vec![("project_id", &project), ("task_id", "nope")], Some(("a.txt", b"a")), "task_id"),
        (vec![("project_id", &project), ("shared_with_client", "yes")], Some(("a.txt", b"a")), "shared_with_client"),
        (vec![("project_id", &project), ("organization_id", "x")], Some(("a.txt", b"a")), "organization_id"),
    ];
    for (parts, file, field) in cases {
        upload(&app, &admin_key, &parts, file).await.assert_problem_field(422, field);
    }
    // A Member key can't upload into a project its person doesn't belong to.
    upload(&app, &member_key, &[("project_id", &project)], Some(("a.txt", b"a")))
        .await
        .assert_problem_field(422, "project_id");
    upload(&app, &read_only_key, &[("project_id", &project)], Some(("a.txt", b"a"))).await.assert_problem(403);
    let res = post(&app, "/api/v1/files", &admin_key, json!({"project_id": project})).await;
    res.assert_problem_field(415, "Content-Type");
    assert_eq!(files().await, 1);

    // Idempotency-Key: a retry with another multipart boundary is the same request and is
    // replayed; other contents under the same key are a conflict.
    let parts = [("project_id", project.as_str())];
    let idem = [("idempotency-key", "upload-1")];
    let first = upload_with(&app, &admin_key, &parts, Some(("once.txt", b"once")), "boundary-a", &idem).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = upload_with(&app, &admin_key, &parts, Some(("once.txt", b"once")), "boundary-b-2", &idem).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(again.id(), first.id());
    upload_with(&app, &admin_key, &parts, Some(("once.txt", b"twice")), "boundary-a", &idem).await.assert_problem(409);
    assert_eq!(files().await, 2);

    // Metadata: rename, share, move between the project's tasks, detach. A name is applied as
    // given or refused, never cut down to something else.
    let res =
        patch(&app, &location, &admin_key, json!({"name": "../Minutes \"Q1\".txt", "shared_with_client": true})).await;
    res.assert_problem_field(422, "name");
    let res = patch(&app, &location, &admin_key, json!({"name": " Minutes Q1.txt ", "shared_with_client": true})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        (res.body["data"]["name"].as_str(), res.body["data"]["shared_with_client"].as_bool()),
        (Some("Minutes Q1.txt"), Some(true))
    );
    let (actor, before, after) = last_audit(&app, "file.updated", &file).await;
    assert_eq!(actor, "api_key");
    // Whether it was renamed, never the names: the audit log outlives the organization's key.
    assert_eq!(before, json!({"shared_with_client": false, "task_id": task}));
    assert_eq!(after, json!({"renamed": true, "shared_with_client": true, "task_id": task}));
    let res = patch(&app, &location, &admin_key, json!({"task_id": null})).await;
    assert_eq!(
        (res.body["data"]["task_id"].clone(), res.body["data"]["name"].as_str()),
        (Value::Null, Some("Minutes Q1.txt"))
    );
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "../"}), "name"),
        (json!({"task_id": elsewhere_task}), "task_id"),
        (json!({"task_id": "nope"}), "task_id"),
        (json!({"shared_with_client": "yes"}), "shared_with_client"),
        (json!({"content_type": "text/html"}), "content_type"),
        (json!({"project_id": second}), "project_id"),
    ] {
        patch(&app, &location, &admin_key, body).await.assert_problem_field(422, field);
    }
    patch(&app, &location, &foreign_key, json!({"name": "pwned.txt"})).await.assert_problem(404);
    patch(&app, &location, &read_only_key, json!({"name": "x.txt"})).await.assert_problem(403);
    patch(&app, &location, &member_key, json!({"name": "x.txt"})).await.assert_problem(404);
    let res = get(&app, &location, &admin_key).await;
    assert_eq!(
        (res.body["data"]["name"].as_str(), res.body["data"]["task_id"].clone()),
        (Some("Minutes Q1.txt"), Value::Null)
    );
}

/// `n` time entries and `n` files in `project`, all with the same timestamps (so only a
/// complete sort order keeps the pages apart).
async fn bulk_time_and_files(app: &TestApp, t: &Tenant, project: &str, n: i32) {
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, note, created_at) \
         SELECT $1, gen_random_uuid(), $2::uuid, $3, 15, date '2030-01-01', 'bulk ' || i, timestamptz '2030-01-01 12:00Z' \
         FROM generate_series(1, $4) i",
    )
    .bind(t.org.id)
    .bind(project)
    .bind(t.admin)
    .bind(n)
    .execute(&mut db)
    .await
    .unwrap();
    let bulk: Vec<(Uuid, String)> = (1..=n).map(|i| (Uuid::now_v7(), format!("bulk-{i}.txt"))).collect();
    let at = time::macros::datetime!(2030-01-01 12:00 UTC);
    crate::support::work::insert_files(app, t.org.id, project.parse().unwrap(), &bulk, Some(at)).await;
}

fn ids_of(res: &crate::support::api::Res) -> Vec<String> {
    res.body["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn invoices_are_searched_and_long_lists_are_paged_to_the_end() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "apilists").await;
    let key = key_of(&app, &t, "admin", t.admin).await;

    // Search: by the client's name or company, by number (with or without `#`).
    let north = post(&app, "/api/v1/clients", &key, json!({"name": "Northwind", "company": "Traders Ltd"})).await.id();
    let acme = post(&app, "/api/v1/clients", &key, json!({"name": "Acme 50%"})).await.id();
    let lines = json!([{"description": "Work", "quantity_milli": 1000, "unit_price_minor": 100}]);
    let sent = post(&app, "/api/v1/invoices", &key, json!({"client_id": north, "lines": lines})).await.id();
    post(&app, &format!("/api/v1/invoices/{sent}/send"), &key, json!({})).await;
    let north_draft = post(&app, "/api/v1/invoices", &key, json!({"client_id": north})).await.id();
    let acme_draft = post(&app, "/api/v1/invoices", &key, json!({"client_id": acme})).await.id();
    let search = |q: &str| {
        let (app, key, q) = (&app, key.clone(), q.to_string());
        async move {
            let res = get(app, &format!("/api/v1/invoices?q={q}"), &key).await;
            assert_eq!(res.status, 200, "{}", res.body);
            let mut ids = ids_of(&res);
            ids.sort();
            assert_eq!(res.body["pagination"]["total"], ids.len(), "q={q}");
            ids
        }
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(search("NORTH").await, sorted(vec![&sent, &north_draft]));
    assert_eq!(search("traders").await, sorted(vec![&sent, &north_draft]));
    assert_eq!(search("1").await, vec![sent.clone()], "number 1 (no client name has a 1)");
    assert_eq!(search("%231").await, vec![sent.clone()], "#1");
    assert_eq!(search("50%25").await, vec![acme_draft.clone()], "% is a literal character");
    assert_eq!(search("%25").await, vec![acme_draft.clone()]);
    assert_eq!(search("nobody").await, Vec::<String>::new());
    let res = get(&app, "/api/v1/invoices?q=north&status=draft", &key).await;
    assert_eq!(ids_of(&res), vec![north_draft.clone()], "search combines with the other filters");
    get(&app, &format!("/api/v1/invoices?q={}", "x".repeat(201)), &key).await.assert_problem_field(422, "q");

    // Time entries and files beyond one page: capped at 100, page two reachable, every item
    // exactly once.
    let project = post(&app, "/api/v1/projects", &key, json!({"name": "Busy"})).await.id();
    bulk_time_and_files(&app, &t, &project, 130).await;
    for list in ["time-entries", "files"] {
        let first = get(&app, &format!("/api/v1/{list}?project_id={project}&limit=1000"), &key).await;
        assert_eq!(first.body["data"].as_array().unwrap().len(), 100, "{list}: the cap");
        assert_eq!(first.body["pagination"], json!({"limit": 100, "offset": 0, "total": null, "next_offset": 100}));
        let second = get(&app, &format!("/api/v1/{list}?project_id={project}&limit=100&offset=100"), &key).await;
        assert_eq!(second.body["data"].as_array().unwrap().len(), 30, "{list}: page two");
        assert_eq!(second.body["pagination"]["next_offset"], Value::Null);
        let mut all: Vec<String> = ids_of(&first).into_iter().chain(ids_of(&second)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 130, "{list}: pages overlap or miss items");
        get(&app, &format!("/api/v1/{list}?offset=-1"), &key).await.assert_problem_field(422, "offset");
        get(&app, &format!("/api/v1/{list}?limit=0"), &key).await.assert_problem_field(422, "limit");
    }
}

#[tokio::test]
async fn task_updates_record_exact_old_and_new_values() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "activity").await;
    let (key_id, key) = api_key(&app, &t, "admin", None).await;
    let project = post(&app, "/api/v1/projects", &key, json!({"name": "Tracked"})).await.id();
    let second = add_member(&app, &t.org, "manager").await;
    let (first_assignee, second_assignee) = (t.admin.to_string(), second.to_string());
    let res = post(
        &app,
        "/api/v1/tasks",
        &key,
        json!({"project_id": project, "title": "Draft plan", "due_date": "2030-01-31", "assignees": [t.admin]}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let task = res.id();
    let actor = format!("API key {key_id}");
    let created = activity_of(&app, &task).await;
    assert_eq!(created, vec![(actor.clone(), "created".into(), None, Some("Draft plan".into()))]);

    let res = patch(
        &app,
        &format!("/api/v1/tasks/{task}"),
        &key,
        json!({"title": "Final plan", "status": "in_progress", "priority": "urgent", "due_date": "2030-02-15",
               "assignees": [second]}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let mut changes = activity_of(&app, &task).await.split_off(1);
    changes.sort_by(|a, b| a.1.cmp(&b.1));
    let row =
        |field: &str, old: &str, new: &str| (actor.clone(), field.to_string(), Some(old.into()), Some(new.into()));
    // A task's status is its board column: the new status moved the card, and both are recorded.
    let column_of = |status: &'static str| {
        let (app, project) = (&app, project.clone());
        async move {
            let mut db = app.db.admin_conn().await;
            let id: uuid::Uuid = sqlx::query_scalar(
                "SELECT id FROM board_columns WHERE project_id = $1::uuid AND status = $2 ORDER BY position LIMIT 1",
            )
            .bind(project)
            .bind(status)
            .fetch_one(&mut db)
            .await
            .unwrap();
            id.to_string()
        }
    };
    let (todo, in_progress) = (column_of("todo").await, column_of("in_progress").await);
    assert_eq!(
        changes,
        vec![
            row("assignees", &first_assignee, &second_assignee),
            row("column", &todo, &in_progress),
            row("due_date", "2030-01-31", "2030-02-15"),
            row("priority", "normal", "urgent"),
            row("status", "todo", "in_progress"),
            row("title", "Draft plan", "Final plan"),
        ],
        "exactly the changed fields, each with its old and new value"
    );
    // The audit event carries the same change as whole snapshots.
    let (actor_type, before, after) = last_audit(&app, "task.updated", &task).await;
    assert_eq!(actor_type, "api_key");
    for (field, old, new) in [
        ("title", json!("Draft plan"), json!("Final plan")),
        ("status", json!("todo"), json!("in_progress")),
        ("priority", json!("normal"), json!("urgent")),
        ("due_date", json!("2030-01-31"), json!("2030-02-15")),
        ("assignees", json!([t.admin]), json!([second])),
        ("estimate_minutes", Value::Null, Value::Null),
    ] {
        assert_eq!((&before[field], &after[field]), (&old, &new), "{field}: {before} → {after}");
    }

    // Clearing the due date records the old date and no new one; an update that changes
    // nothing records nothing.
    patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"due_date": ""})).await;
    let last = activity_of(&app, &task).await.pop().unwrap();
    assert_eq!(last, (actor.clone(), "due_date".into(), Some("2030-02-15".into()), None));
    let rows = activity_of(&app, &task).await.len();
    let res = patch(
        &app,
        &format!("/api/v1/tasks/{task}"),
        &key,
        json!({"title": "Final plan", "status": "in_progress", "assignees": [second]}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(activity_of(&app, &task).await.len(), rows, "nothing changed, nothing recorded");
    // A refused update records nothing either.
    patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"title": "Again", "status": "finished"}))
        .await
        .assert_problem_field(422, "status");
    assert_eq!(activity_of(&app, &task).await.len(), rows);

    // The estimate: set, kept when left out, cleared by null.
    let res = patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"estimate_minutes": 90})).await;
    assert_eq!(res.body["data"]["estimate_minutes"], 90, "{}", res.body);
    let res = patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"title": "Final plan v2"})).await;
    assert_eq!(res.body["data"]["estimate_minutes"], 90, "left out: kept");
    let res = patch(&app, &format!("/api/v1/tasks/{task}"), &key, json!({"estimate_minutes": null})).await;
    assert_eq!(res.body["data"]["estimate_minutes"], Value::Null, "null: cleared");
    let last = activity_of(&app, &task).await.pop().unwrap();
    assert_eq!(last, (actor.clone(), "estimate_minutes".into(), Some("90".into()), None));

    // The same history through the API, oldest first.
    let res = get(&app, &format!("/api/v1/tasks/{task}/activity"), &key).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let entries = res.body["data"].as_array().unwrap();
    let stored = activity_of(&app, &task).await;
    assert_eq!(entries.len(), stored.len());
    for (entry, (who, field, old, new)) in entries.iter().zip(&stored) {
        assert_eq!(entry["actor_label"].as_str(), Some(who.as_str()));
        assert_eq!(entry["field"].as_str(), Some(field.as_str()));
        assert_eq!(entry["old_value"].as_str(), old.as_deref());
        assert_eq!(entry["new_value"].as_str(), new.as_deref());
    }
    // Another organization's key finds no such task.
    let other = tenant(&app, "activity-elsewhere").await;
    let (_, foreign_key) = api_key(&app, &other, "admin", None).await;
    assert_eq!(get(&app, &format!("/api/v1/tasks/{task}/activity"), &foreign_key).await.status, 404);
}
