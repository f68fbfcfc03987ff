//! Owners in control of their data: values sealed with per-organization data keys (bound to
//! their row and organization), re-sealing of values from before envelope encryption, rotation,
//! organization deletion (who may ask, who gets in meanwhile, the purge) and deletion reaching
//! a backup taken before the purge.

use clientflow::platform::ids::{ContactId, FileId, OrgId};
use clientflow::platform::keys::{KeyError, Scope};
use clientflow::platform::storage::Sealed;
use clientflow::privacy::{deletion, keys};
use clientflow::work::clients::{self, ContactInput, contact_at};
use clientflow::work::files::{self, contents_at, legacy_context, name_at};
use clientflow_test_support::TestApp;
use sqlx::Connection;

use crate::support::accounts::PASSWORD;
use crate::support::api::ctx;
use crate::support::orgs::{Org, org_with_every_role};
use crate::support::{SeededOrg, seed_org};

fn contact(name: &str, email: &str) -> ContactInput {
    ContactInput {
        name: Some(name.into()),
        email: Some(email.into()),
        phone: Some("+44 20 7946 0000".into()),
        title: None,
    }
}

async fn add_contact(app: &TestApp, org: &SeededOrg, name: &str, email: &str) -> ContactId {
    clients::add_contact(&app.app_db, &app.state.keys, &ctx(app), &org.principal, org.client, &contact(name, email))
        .await
        .unwrap()
        .id
}

async fn upload(app: &TestApp, org: &SeededOrg, name: &str, bytes: &[u8]) -> FileId {
    let up = files::Upload {
        project_id: org.project,
        task_id: None,
        name,
        bytes: bytes.to_vec(),
        shared_with_client: false,
    };
    files::upload(&app.app_db, &app.state.storage, &app.state.keys, 1 << 20, &ctx(app), &org.principal, up)
        .await
        .unwrap()
        .id
}

async fn emails(app: &TestApp, org: &SeededOrg) -> Result<Vec<String>, String> {
    clients::contacts(&app.app_db, &app.state.keys, &org.principal, org.client)
        .await
        .map(|cs| cs.into_iter().filter_map(|c| c.email).collect())
        .map_err(|e| e.to_string())
}

/// The names of `org`'s files, as its lists show them.
async fn file_names(app: &TestApp, org: &SeededOrg) -> Result<Vec<String>, String> {
    let filter = files::FileFilter::default();
    let page = clientflow::work::Page { limit: Some(clientflow::work::MAX_PAGE), offset: None };
    files::list(&app.app_db, &app.state.keys, &org.principal, &filter, page)
        .await
        .map(|fs| {
            let mut names: Vec<String> = fs.into_iter().map(|f| f.name).collect();
            names.sort();
            names
        })
        .map_err(|e| e.to_string())
}

async fn sealed_name(db: &mut sqlx::PgConnection, id: FileId) -> (Option<String>, Option<Vec<u8>>) {
    sqlx::query_as("SELECT name, name_sealed FROM files WHERE id = $1").bind(id).fetch_one(db).await.unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn download(app: &TestApp, org: &SeededOrg, id: FileId) -> Result<Vec<u8>, String> {
    files::download(&app.app_db, &app.state.storage, &app.state.keys, &org.principal, id)
        .await
        .map(|(_, b)| b)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sealed_values_open_only_in_their_own_row_and_organization() {
    let app = TestApp::spawn().await;
    let (a, b) = (seed_org(&app.app_db, "alpha").await, seed_org(&app.app_db, "beta").await);
    let ada = add_contact(&app, &a, "Ada", "ada@alpha.test").await;
    let bob = add_contact(&app, &a, "Bob", "bob@alpha.test").await;
    let eve = add_contact(&app, &b, "Eve", "eve@beta.test").await;
    let mut db = app.db.admin_conn().await;

    // Stored sealed under the organization's key version 1, nothing in the clear.
    let (plain, sealed, version): (Option<String>, Vec<u8>, Option<i32>) =
        sqlx::query_as("SELECT email, email_sealed, key_version FROM client_contacts WHERE id = $1")
            .bind(ada)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((plain, version), (None, Some(1)));
    assert!(!sealed.windows(7).any(|w| w == b"ada@alp"));
    assert_eq!(emails(&app, &a).await.unwrap(), ["ada@alpha.test", "bob@alpha.test"]);

    // Ada's sealed email moved into Bob's row does not open.
    sqlx::query("UPDATE client_contacts SET email_sealed = $2 WHERE id = $1")
        .bind(bob)
        .bind(&sealed)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(emails(&app, &a).await.is_err(), "a value moved to another row opened");
    let row = bob.to_string();
    let scope = Scope::org(a.id);
    assert!(app.state.keys.open(scope, contact_at("email", &row), &sealed, None).is_err());
    // Nor into its phone column, nor into another organization's row.
    let ada_row = ada.to_string();
    assert!(app.state.keys.open(scope, contact_at("phone", &ada_row), &sealed, None).is_err());
    sqlx::query("UPDATE client_contacts SET email_sealed = $2 WHERE id = $1")
        .bind(eve)
        .bind(&sealed)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(emails(&app, &b).await.is_err(), "a value moved to another organization opened");
    assert!(app.state.keys.open(Scope::org(b.id), contact_at("email", &ada_row), &sealed, None).is_err());

    // The same for files: one organization's object in another's place is refused.
    let fa = upload(&app, &a, "a.txt", b"alpha's numbers").await;
    let fb = upload(&app, &b, "b.txt", b"beta's numbers").await;
    assert_eq!(download(&app, &b, fb).await.unwrap(), b"beta's numbers");
    let object = app.state.storage.get(&format!("{}/{fa}", a.id)).await.unwrap();
    app.state.storage.put(&format!("{}/{fb}", b.id), object).await.unwrap();
    assert!(download(&app, &b, fb).await.is_err(), "another organization's file opened");

    // File names too: a's sealed name moved into another of a's rows, or into b's row, does
    // not open (the list and the file's page fail rather than show it).
    let fa2 = upload(&app, &a, "a2.txt", b"more of alpha").await;
    let (_, fa_name) = sealed_name(&mut db, fa).await;
    let fa_name = fa_name.unwrap();
    let (fa_row, fa2_row) = (fa.to_string(), fa2.to_string());
    assert_eq!(app.state.keys.open(scope, name_at(&fa_row), &fa_name, None).unwrap(), b"a.txt");
    assert_eq!(file_names(&app, &a).await.unwrap(), ["a.txt", "a2.txt"]);
    sqlx::query("UPDATE files SET name_sealed = $2 WHERE id = $1")
        .bind(fa2)
        .bind(&fa_name)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(
        files::get(&app.app_db, &app.state.keys, &a.principal, fa2).await.is_err(),
        "a name moved to another row opened"
    );
    assert!(file_names(&app, &a).await.is_err());
    assert!(app.state.keys.open(scope, name_at(&fa2_row), &fa_name, None).is_err());
    sqlx::query("UPDATE files SET name_sealed = $2 WHERE id = $1")
        .bind(fb)
        .bind(&fa_name)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(
        files::get(&app.app_db, &app.state.keys, &b.principal, fb).await.is_err(),
        "a name moved to another organization opened"
    );
    assert!(app.state.keys.open(Scope::org(b.id), name_at(&fa_row), &fa_name, None).is_err());
    // Nor as another column of its own row (the contents).
    assert!(app.state.keys.open(scope, contents_at(&fa_row), &fa_name, None).is_err());
    // Each organization has its own data key.
    let store = app.state.keys.store();
    assert_ne!(store.data_key(Scope::org(a.id), 1).unwrap(), store.data_key(Scope::org(b.id), 1).unwrap());
}

/// Names no other value in the database could hold by chance.
const SECRET_NAME: &str = "Zebrafish merger terms 7Q2X.txt";
const RENAMED: &str = "Okapi settlement draft 9K4W.txt";
const DELETED_NAME: &str = "Throwaway notes 3M8P.txt";

#[tokio::test]
async fn file_names_are_sealed_in_their_row_and_never_written_to_the_audit_log() {
    use crate::support::api as http;
    let app = TestApp::spawn().await;
    let t = http::tenant(&app, "names").await;
    let (_, key) = http::api_key(&app, &t, "admin", None).await;
    let project = t.org.project.to_string();
    // With an Idempotency-Key: the answer kept for a retry holds the name too.
    let parts = [("project_id", project.as_str())];
    let idem = [("idempotency-key", "names-1")];
    let upload_once = async || {
        http::upload_with(&app, &key, &parts, Some((SECRET_NAME, b"the terms")), "names-boundary", &idem).await
    };
    let res = upload_once().await;
    assert_eq!((res.status, res.body["data"]["name"].as_str()), (201, Some(SECRET_NAME)), "{}", res.body);
    let file = res.id();
    let replayed = upload_once().await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!((replayed.id(), replayed.body["data"]["name"].as_str()), (file.clone(), Some(SECRET_NAME)));
    let other = http::upload(&app, &key, &[("project_id", &project)], Some((DELETED_NAME, b"scratch"))).await.id();
    let file_id: FileId = file.parse().unwrap();

    // Stored sealed: the plaintext column empty, and nothing of the name in the row's bytes.
    let mut db = app.db.admin_conn().await;
    let (plain, sealed) = sealed_name(&mut db, file_id).await;
    let sealed = sealed.expect("a sealed name");
    assert_eq!(plain, None);
    assert_eq!(clientflow::platform::keys::version_of(&sealed), Some(1));
    let row: String =
        sqlx::query_scalar("SELECT f::text FROM files f WHERE id = $1").bind(file_id).fetch_one(&mut db).await.unwrap();
    for needle in ["Zebrafish", &hex::encode("Zebrafish")] {
        assert!(!row.contains(needle), "{needle} in {row}");
    }
    assert!(!contains(&sealed, "Zebrafish"));

    // Shown opened: the API's list and file, and the download's file name.
    let list = http::get(&app, &format!("/api/v1/files?project_id={project}"), &key).await;
    let mut names: Vec<&str> =
        list.body["data"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, [DELETED_NAME, SECRET_NAME]);
    let one = http::get(&app, &format!("/api/v1/files/{file}"), &key).await;
    assert_eq!(one.body["data"]["name"].as_str(), Some(SECRET_NAME), "{}", one.body);
    let link = one.body["data"]["download_url"].as_str().unwrap();
    let res = app.client.get(app.url(&link[link.find("/files/").unwrap()..])).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.starts_with(&format!("attachment; filename=\"{SECRET_NAME}\"")), "{disposition}");
    assert_eq!(&res.bytes().await.unwrap()[..], b"the terms");

    // Renamed (sealed again), shared and unshared, linked again, the other one deleted.
    let res = http::patch(&app, &format!("/api/v1/files/{file}"), &key, serde_json::json!({"name": RENAMED})).await;
    assert_eq!(res.body["data"]["name"].as_str(), Some(RENAMED), "{}", res.body);
    let (plain, resealed) = sealed_name(&mut db, file_id).await;
    assert_eq!(plain, None);
    assert_ne!(resealed.as_ref(), Some(&sealed));
    files::set_shared(&app.app_db, &app.state.keys, &ctx(&app), &t.org.principal, file_id, true).await.unwrap();
    let shared = files::set_shared(&app.app_db, &app.state.keys, &ctx(&app), &t.org.principal, file_id, false).await;
    assert_eq!(shared.unwrap().name, RENAMED);
    assert_eq!(
        http::get(&app, &format!("/api/v1/files/{file}"), &key).await.body["data"]["name"].as_str(),
        Some(RENAMED)
    );
    assert_eq!(http::delete(&app, &format!("/api/v1/files/{other}"), &key).await.status, 204);

    // Every one of them audited, by the file's id, and no event holds a name.
    let events: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT action, target_id, e::text FROM audit_events e WHERE organization_id = $1 ORDER BY seq")
            .bind(t.org.id)
            .fetch_all(&mut db)
            .await
            .unwrap();
    for action in ["file.uploaded", "file.updated", "file.sharing_changed", "file.link_issued", "file.deleted"] {
        assert!(
            events
                .iter()
                .any(|(a, target, _)| a == action
                    && (target.as_deref() == Some(&file) || target.as_deref() == Some(&other))),
            "no {action} event about the files"
        );
    }
    for (action, _, text) in &events {
        for needle in ["Zebrafish", "Okapi", "Throwaway"] {
            assert!(!text.contains(needle), "{action} holds a file's name: {text}");
        }
    }
    let renamed: serde_json::Value = sqlx::query_scalar(
        "SELECT after FROM audit_events WHERE organization_id = $1 AND action = 'file.updated' ORDER BY seq DESC LIMIT 1",
    )
    .bind(t.org.id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(renamed["renamed"], true, "{renamed}");

    // The kept API answer is sealed too; nowhere in the whole database is any of the names.
    let answers: Vec<Vec<u8>> = sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE key = 'names-1'")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(clientflow::platform::keys::version_of(&answers[0]), Some(1));
    let url = crate::support::url_of(&app.db.admin, None);
    let dump =
        std::process::Command::new("pg_dump").args(["--format=plain", "--data-only"]).arg(&url).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(contains(&dump.stdout, &file) && contains(&dump.stdout, "file.link_issued"));
    for needle in ["Zebrafish", "Okapi", "Throwaway"] {
        assert!(!contains(&dump.stdout, needle), "{needle} is in the database");
    }

    // After a rotation the answer moves to the new key like every sealed value, and replays.
    assert_eq!(keys::rotate(&app.state.keys, t.org.id).unwrap(), 2);
    let total =
        keys::reseal_all(&app.app_db, &app.state.keys, &app.state.storage, 10, std::time::Duration::ZERO, |_| {})
            .await
            .unwrap();
    assert_eq!((total.files, total.api_answers, total.retired_versions), (1, 1, 1));
    let answer: Vec<u8> = sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE key = 'names-1'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(clientflow::platform::keys::version_of(&answer), Some(2));
    let replayed = upload_once().await;
    assert_eq!(
        (replayed.status, replayed.body["data"]["name"].as_str()),
        (201, Some(SECRET_NAME)),
        "{}",
        replayed.body
    );
    assert_eq!(
        http::get(&app, &format!("/api/v1/files/{file}"), &key).await.body["data"]["name"].as_str(),
        Some(RENAMED)
    );
}

#[tokio::test]
async fn values_from_before_envelope_encryption_are_resealed_and_stay_readable() {
    let app = TestApp::spawn().await;
    let a = seed_org(&app.app_db, "legacy").await;
    let mut db = app.db.admin_conn().await;
    // A contact written before: plaintext columns.
    let old_contact = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO client_contacts (organization_id, id, client_id, name, email, phone, created_at) \
         VALUES ($1, $2, $3, 'Old', 'old@legacy.test', '+1 555 0100', now())",
    )
    .bind(a.id)
    .bind(old_contact)
    .bind(a.client)
    .execute(&mut db)
    .await
    .unwrap();
    // A file sealed with the master key (format 1).
    let file = upload(&app, &a, "old.txt", b"old contents").await;
    let legacy = Sealed::seal(&app.state.sealer, b"old contents", &legacy_context(a.id, file));
    app.state.storage.put(&format!("{}/{file}", a.id), legacy).await.unwrap();
    sqlx::query("UPDATE files SET key_version = NULL WHERE id = $1").bind(file).execute(&mut db).await.unwrap();
    // Its name, and another file's, in plaintext as before migration 0054. The constraint that
    // refuses a plaintext name now is lifted for the moment it takes to write them, and put
    // back as the migration left it (not checked against old rows).
    let older = upload(&app, &a, "older.txt", b"older contents").await;
    sqlx::raw_sql(&format!(
        "ALTER TABLE files DROP CONSTRAINT files_name_sealed_only; \
         UPDATE files SET name = 'old.txt', name_sealed = NULL WHERE id = '{file}'; \
         UPDATE files SET name = 'older.txt', name_sealed = NULL WHERE id = '{older}'; \
         ALTER TABLE files ADD CONSTRAINT files_name_sealed_only CHECK (name IS NULL) NOT VALID"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    // A new plaintext name is refused by the database itself.
    let refused = sqlx::query("UPDATE files SET name = 'again.txt' WHERE id = $1").bind(older).execute(&mut db).await;
    assert!(refused.unwrap_err().to_string().contains("files_name_sealed_only"));
    // A TOTP secret sealed with the master key.
    let user = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, totp_secret, totp_enabled_at) VALUES ($1, 'old@legacy.test', $2, now())",
    )
    .bind(user)
    .bind(app.state.sealer.seal(b"12345678901234567890", &format!("totp:{user}")))
    .execute(&mut db)
    .await
    .unwrap();
    let user_id = user.to_string().parse().unwrap();

    // Readable before…
    assert_eq!(emails(&app, &a).await.unwrap(), ["old@legacy.test"]);
    assert_eq!(download(&app, &a, file).await.unwrap(), b"old contents");
    assert_eq!(file_names(&app, &a).await.unwrap(), ["old.txt", "older.txt"]);
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT totp_secret FROM users WHERE id = $1").bind(user).fetch_one(&mut db).await.unwrap();
    let opened = clientflow::identity::service::open_totp_secret(&app.state, user_id, &stored).unwrap();
    assert_eq!(opened, b"12345678901234567890");
    let status = keys::status(&app.app_db, &app.state.keys).await.unwrap();
    assert_eq!(status.legacy_totp_secrets, 1);
    let org = status.organizations.iter().find(|o| o.organization_id == a.id.as_uuid()).unwrap();
    // The contact, the file's contents, the two names.
    assert_eq!(org.pending, 4, "{org:?}");
    // Changing a file whose name is in plaintext seals it in the same update.
    files::set_shared(&app.app_db, &app.state.keys, &ctx(&app), &a.principal, older, true).await.unwrap();
    let (plain, sealed) = sealed_name(&mut db, older).await;
    assert_eq!(plain, None);
    let older_row = older.to_string();
    assert_eq!(
        app.state.keys.open(Scope::org(a.id), name_at(&older_row), &sealed.unwrap(), None).unwrap(),
        b"older.txt"
    );
    let status = keys::status(&app.app_db, &app.state.keys).await.unwrap();
    let org = status.organizations.iter().find(|o| o.organization_id == a.id.as_uuid()).unwrap();
    assert_eq!(org.pending, 3, "{org:?}");

    // … re-sealed (twice: idempotent) …
    let total =
        keys::reseal_all(&app.app_db, &app.state.keys, &app.state.storage, 1, std::time::Duration::ZERO, |_| {})
            .await
            .unwrap();
    assert_eq!((total.totp_secrets, total.contacts, total.files), (1, 1, 1));
    let again =
        keys::reseal_all(&app.app_db, &app.state.keys, &app.state.storage, 1, std::time::Duration::ZERO, |_| {})
            .await
            .unwrap();
    assert_eq!(again.resealed(), 0);

    // … and readable after, in the new format, with the plaintext gone.
    assert_eq!(emails(&app, &a).await.unwrap(), ["old@legacy.test"]);
    assert_eq!(download(&app, &a, file).await.unwrap(), b"old contents");
    let (email, phone, version): (Option<String>, Option<String>, Option<i32>) =
        sqlx::query_as("SELECT email, phone, key_version FROM client_contacts WHERE id = $1")
            .bind(old_contact)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((email, phone, version), (None, None, Some(1)));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT totp_secret FROM users WHERE id = $1").bind(user).fetch_one(&mut db).await.unwrap();
    assert_eq!(clientflow::platform::keys::version_of(&stored), Some(1));
    let opened = clientflow::identity::service::open_totp_secret(&app.state, user_id, &stored).unwrap();
    assert_eq!(opened, b"12345678901234567890");
    let object = app.state.storage.get(&format!("{}/{file}", a.id)).await.unwrap();
    assert_eq!(object.key_version(), Some(1));
    let (plain, sealed) = sealed_name(&mut db, file).await;
    let sealed = sealed.expect("the name is sealed");
    assert_eq!((plain, clientflow::platform::keys::version_of(&sealed)), (None, Some(1)));
    assert_eq!(file_names(&app, &a).await.unwrap(), ["old.txt", "older.txt"]);
    let plaintext_names: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files WHERE name IS NOT NULL").fetch_one(&mut db).await.unwrap();
    assert_eq!(plaintext_names, 0);
    let status = keys::status(&app.app_db, &app.state.keys).await.unwrap();
    assert_eq!(status.legacy_totp_secrets, 0);
    assert!(status.organizations.iter().all(|o| o.pending == 0), "{:?}", status.organizations);
}

#[tokio::test]
async fn rotation_keeps_every_value_readable_and_leaves_nothing_on_the_old_version() {
    let app = TestApp::spawn().await;
    let a = seed_org(&app.app_db, "rotating").await;
    let other = seed_org(&app.app_db, "steady").await;
    let mut expected_emails = Vec::new();
    for i in 0..5 {
        let email = format!("person{i}@rotating.test");
        add_contact(&app, &a, &format!("Person {i}"), &email).await;
        expected_emails.push(email);
    }
    let mut expected_files = Vec::new();
    let expected_names: Vec<String> = (0..3).map(|i| format!("f{i}.txt")).collect();
    for i in 0..3 {
        let body = format!("file {i} of rotating").into_bytes();
        expected_files.push((upload(&app, &a, &format!("f{i}.txt"), &body).await, body));
    }
    add_contact(&app, &other, "Steady", "steady@steady.test").await;
    let other_before = app.state.keys.store().data_key(Scope::org(other.id), 1).unwrap();

    assert_eq!(keys::rotate(&app.state.keys, a.id).unwrap(), 2);
    // New values use the new version at once.
    let fresh = add_contact(&app, &a, "Fresh", "fresh@rotating.test").await;
    expected_emails.push("fresh@rotating.test".into());
    expected_emails.sort();
    let mut db = app.db.admin_conn().await;
    let v: Option<i32> = sqlx::query_scalar("SELECT key_version FROM client_contacts WHERE id = $1")
        .bind(fresh)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(v, Some(2));

    let scope = Scope::org(a.id);
    let mut passes = 0;
    loop {
        // Every value readable between batches.
        let mut got = emails(&app, &a).await.unwrap();
        got.sort();
        assert_eq!(got, expected_emails, "after {passes} passes");
        for (id, body) in &expected_files {
            assert_eq!(&download(&app, &a, *id).await.unwrap(), body, "after {passes} passes");
        }
        assert_eq!(file_names(&app, &a).await.unwrap(), expected_names, "after {passes} passes");
        let status = keys::status(&app.app_db, &app.state.keys).await.unwrap();
        let org = status.organizations.iter().find(|o| o.organization_id == a.id.as_uuid()).unwrap();
        eprintln!(
            "pass {passes}: key versions {:?}, values {:?}, pending {}",
            org.key_versions, org.values, org.pending
        );
        let pass = keys::reseal_pass(&app.app_db, &app.state.keys, &app.state.storage, 2, std::time::Duration::ZERO)
            .await
            .unwrap();
        passes += 1;
        if pass == keys::Pass::default() {
            break;
        }
        assert!(passes < 20, "re-sealing does not end");
    }
    assert!(passes >= 3, "batches of 2 over 5 contacts and 3 files take several passes ({passes})");

    // Nothing on version 1 any more, and version 1 destroyed.
    let on_v1: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM client_contacts WHERE organization_id = $1 AND key_version IS DISTINCT FROM 2) \
              + (SELECT count(*) FROM files WHERE organization_id = $1 AND key_version IS DISTINCT FROM 2) \
              + (SELECT count(*) FROM files WHERE organization_id = $1 \
                 AND (name IS NOT NULL OR get_byte(name_sealed, 0) <> 2 OR substring(name_sealed FROM 2 FOR 4) <> '\\x00000002'::bytea))",
    )
    .bind(a.id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(on_v1, 0);
    for (id, _) in &expected_files {
        assert_eq!(app.state.storage.get(&format!("{}/{id}", a.id)).await.unwrap().key_version(), Some(2));
        let (_, name) = sealed_name(&mut db, *id).await;
        assert_eq!(clientflow::platform::keys::version_of(&name.unwrap()), Some(2));
    }
    assert_eq!(file_names(&app, &a).await.unwrap(), expected_names);
    assert_eq!(app.state.keys.store().versions(scope).unwrap(), [2]);
    assert!(matches!(app.state.keys.store().data_key(scope, 1), Err(KeyError::Missing { .. })));
    let mut got = emails(&app, &a).await.unwrap();
    got.sort();
    assert_eq!(got, expected_emails);
    // The other organization's key was not touched.
    assert_eq!(app.state.keys.store().data_key(Scope::org(other.id), 1).unwrap(), other_before);
    assert_eq!(emails(&app, &other).await.unwrap(), ["steady@steady.test"]);

    // Rotating the key-encryption key re-wraps and keeps everything readable.
    let (kek, rewrapped) = app.state.keys.store().rotate_kek().unwrap();
    assert!(kek >= 2 && rewrapped >= 2, "{kek} {rewrapped}");
    let fresh_ring = app.config.privacy.keyring(&app.config.data_dir, &app.state.sealer);
    let at = contact_at("email", "x");
    let sealed = fresh_ring.seal(scope, at, b"after kek rotation").unwrap();
    assert_eq!(app.state.keys.open(scope, at, &sealed, None).unwrap(), b"after kek rotation");
    assert_eq!(emails(&app, &other).await.unwrap(), ["steady@steady.test"]);
}

async fn post(b: &mut clientflow_test_support::browser::Browser, path: &str, fields: &[(&str, &str)]) -> u16 {
    let token = crate::support::orgs::session_token(b).await;
    b.post_with(path, fields, Some(&token), true).await.status().as_u16()
}

async fn request_deletion(org: &mut Org, name: &str) -> reqwest::Response {
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let path = format!("/o/{}/settings/deletion", org.slug);
    owner.submit(&path, &path, &[("confirm_name", name), ("current_password", PASSWORD)]).await
}

async fn pending_requests(db: &mut sqlx::PgConnection, slug: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM organization_deletion_requests r JOIN organizations o ON o.id = r.organization_id \
         WHERE o.slug = $1",
    )
    .bind(slug)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn only_owners_request_or_cancel_and_others_are_shut_out_meanwhile() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "acme").await;
    let mut outsider = org_with_every_role(&app, "other").await;
    let slug = org.slug.clone();
    let name: String = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT name FROM organizations WHERE slug = $1")
            .bind(&slug)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let request = format!("/o/{slug}/settings/deletion");
    let cancel = format!("/o/{slug}/settings/deletion/cancel");
    let fields = [("confirm_name", name.as_str()), ("current_password", PASSWORD)];
    for role in ["admin", "manager", "member", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(post(b, &request, &fields).await, 403, "{role} requested");
        assert_eq!(post(b, &cancel, &[]).await, 403, "{role} cancelled");
        assert_eq!(b.page(&request).await.0, 403, "{role} opened the page");
    }
    // Another organization's Owner: not found.
    let stranger = &mut outsider.people.get_mut("owner").unwrap().browser;
    assert_eq!(post(stranger, &request, &fields).await, 404);
    assert_eq!(post(stranger, &cancel, &[]).await, 404);

    // The Owner must type the name and confirm it is them.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = owner.submit(&request, &request, &[("confirm_name", "acme?"), ("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 422);
    let res = owner.submit(&request, &request, &[("confirm_name", &name), ("current_password", "wrong")]).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let mut db = app.db.admin_conn().await;
    assert_eq!(pending_requests(&mut db, &slug).await, 0, "a refused request left a row");
    let res = request_deletion(&mut org, &name).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    assert_eq!(pending_requests(&mut db, &slug).await, 1);
    let mail =
        crate::support::accounts::critical_mail(&app, "owner@acme.test", "Your organization is scheduled for deletion")
            .await;
    assert!(mail.contains("only Owners can open it"), "{mail}");

    // Meanwhile: members of every other role, and API keys, are refused with the reason.
    for role in ["admin", "member", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        let (status, body) = b.page(&format!("/o/{slug}")).await;
        assert_eq!(status, 403, "{role}");
        assert!(body.contains("scheduled for deletion"), "{role}: {body}");
    }
    let portal = &mut org.people.get_mut("client").unwrap().browser;
    assert_eq!(portal.page(&format!("/portal/{slug}")).await.0, 403);
    let key = crate::support::api_key(&app, org.id.parse().unwrap(), "integration").await;
    let res = app.client.get(app.url("/api/v1/projects")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("scheduled for deletion"));
    // The Owners still get in, and see when it happens.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    assert_eq!(owner.page(&format!("/o/{slug}")).await.0, 200);
    let (status, page) = owner.page(&request).await;
    assert_eq!(status, 200);
    assert!(page.contains("is scheduled for deletion on"), "{page}");
    // The other organization is not affected.
    let other_member = &mut outsider.people.get_mut("member").unwrap().browser;
    assert_eq!(other_member.page(&format!("/o/{}", outsider.slug)).await.0, 200);

    // An Owner cancels: everyone is back, and both steps are in the audit log.
    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    let res = owner.submit(&request, &cancel, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(pending_requests(&mut db, &slug).await, 0);
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert_eq!(member.page(&format!("/o/{slug}")).await.0, 200);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE organization_id = $1::uuid AND action LIKE 'organization.deletion%' ORDER BY seq",
    )
    .bind(&org.id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(actions, ["organization.deletion_requested", "organization.deletion_cancelled"]);
}

/// Every table with an `organization_id` column, from the catalog.
async fn tenant_tables(db: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM information_schema.columns k \
         JOIN pg_class c ON c.relname = k.table_name JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = k.table_schema \
         WHERE k.table_schema = 'public' AND k.column_name = 'organization_id' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

async fn rows_of(db: &mut sqlx::PgConnection, org: uuid::Uuid) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for t in tenant_tables(db).await {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{t}\" WHERE organization_id = $1"))
            .bind(org)
            .fetch_one(&mut *db)
            .await
            .unwrap();
        out.insert(t, n);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(&mut *db)
        .await
        .unwrap();
    out.insert("organizations".into(), n);
    out
}

async fn purge(app: &TestApp) -> Vec<deletion::Purged> {
    let mut owner = app.db.owner_conn().await;
    let key = clientflow::privacy::record_key(&app.state.sealer);
    deletion::purge_due(
        &mut owner,
        &app.state.keys,
        &app.state.storage,
        &key,
        app.clock.now_utc(),
        app.state.stripe.as_deref(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_purge_leaves_no_row_of_the_organization_in_any_table_and_spares_the_other() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "doomed").await;
    let keep = org_with_every_role(&app, "kept").await;
    let mut db = app.db.admin_conn().await;
    // Data of every kind in both, through the services.
    let mut seeded = Vec::new();
    for o in [&org, &keep] {
        let id: OrgId = o.id.parse().unwrap();
        let principal =
            clientflow::access::operator(&app.app_db, &crate::support::operator(), id, "test").await.unwrap().unwrap();
        let c = ctx(&app);
        let client = clients::create(
            &app.app_db,
            &c,
            &principal,
            &clients::ClientInput { name: format!("{} client", o.slug), ..Default::default() },
        )
        .await
        .unwrap();
        let project = clientflow::work::projects::create(
            &app.app_db,
            &c,
            &principal,
            &clientflow::work::projects::ProjectInput {
                name: "Site".into(),
                client_id: Some(client.id.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let s = SeededOrg { id, principal, client: client.id, project: project.id };
        add_contact(&app, &s, "Person", &format!("person@{}.test", o.slug)).await;
        let file = upload(&app, &s, "brief.txt", format!("{} brief", o.slug).as_bytes()).await;
        crate::support::api_key(&app, o.id.parse().unwrap(), "key").await;
        seeded.push((s, file));
    }
    let doomed_id: uuid::Uuid = org.id.parse().unwrap();
    let kept_id: uuid::Uuid = keep.id.parse().unwrap();
    let kept_before = rows_of(&mut db, kept_id).await;
    let doomed_before = rows_of(&mut db, doomed_id).await;
    assert!(doomed_before["audit_events"] > 0 && doomed_before["memberships"] == 5, "{doomed_before:?}");

    let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(doomed_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let res = request_deletion(&mut org, &name).await;
    assert_eq!(res.status(), 303);
    // Not before the grace period is over.
    app.clock.advance(time::Duration::days(29));
    assert!(purge(&app).await.is_empty());
    assert_eq!(rows_of(&mut db, doomed_id).await["organizations"], 1);
    app.clock.advance(time::Duration::days(2));
    let purged = purge(&app).await;
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].files_removed, 1);
    assert_eq!(purged[0].keys_destroyed, 1);

    // Zero rows with its id in every table the catalog lists; the other organization untouched.
    let after = rows_of(&mut db, doomed_id).await;
    let left: Vec<_> = after.iter().filter(|(_, n)| **n > 0).collect();
    assert!(left.is_empty(), "rows left: {left:?}");
    assert_eq!(rows_of(&mut db, kept_id).await, kept_before);
    let (kept, kept_file) = &seeded[1];
    assert_eq!(emails(&app, kept).await.unwrap(), ["person@kept.test"]);
    assert_eq!(download(&app, kept, *kept_file).await.unwrap(), b"kept brief");
    // Its files and keys are gone.
    assert!(app.state.storage.get(&format!("{doomed_id}/{}", seeded[0].1)).await.is_err());
    assert!(app.state.keys.store().versions(Scope::Org(doomed_id)).unwrap().is_empty());
    assert!(!app.config.privacy.keys_dir(&app.config.data_dir).join(format!("orgs/{doomed_id}")).exists());

    // What remains: a signed record that names no one.
    let record = &purged[0].record;
    assert_eq!(record.name_sha256, clientflow::platform::crypto::sha256_hex(name.as_bytes()));
    assert_eq!(record.row_counts["client_contacts"], 1);
    assert_eq!(record.row_counts["organizations"], 1);
    let key = clientflow::privacy::record_key(&app.state.sealer);
    let mut owner = app.db.owner_conn().await;
    assert!(deletion::verify_record(&mut owner, OrgId::from_uuid(doomed_id), &key).await.unwrap());
    let text: String = sqlx::query_scalar(
        "SELECT row_to_json(r)::text FROM organization_deletion_records r WHERE deleted_organization_id = $1",
    )
    .bind(doomed_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(!text.contains('@') && !text.contains("doomed"), "{text}");
    sqlx::query("UPDATE organization_deletion_records SET row_counts = '{}' WHERE deleted_organization_id = $1")
        .bind(doomed_id)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(!deletion::verify_record(&mut owner, OrgId::from_uuid(doomed_id), &key).await.unwrap(), "an edited record");
    // The people keep their accounts (and their other organizations).
    let owner_exists: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'owner@doomed.test'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(owner_exists, 1);
}

#[tokio::test]
async fn a_purged_organization_is_unreadable_in_a_backup_taken_before_the_purge() {
    let app = TestApp::spawn().await;
    let (a, b) = (seed_org(&app.app_db, "gone").await, seed_org(&app.app_db, "stays").await);
    let ada = add_contact(&app, &a, "Ada", "ada@gone.test").await;
    let bea = add_contact(&app, &b, "Bea", "bea@stays.test").await;
    let file = upload(&app, &a, SECRET_NAME, b"the gone organization's secret").await;
    // A file-store backup of the object, as it was before the purge.
    let object_backup = app.state.storage.get(&format!("{}/{file}", a.id)).await.unwrap();
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO organization_deletion_requests (organization_id, requested_by, requested_at, purge_after) \
         VALUES ($1, gen_random_uuid(), $2, $2)",
    )
    .bind(a.id)
    .bind(app.clock.now_utc())
    .execute(&mut db)
    .await
    .unwrap();

    // The database backup, before the purge.
    let dump = tempfile::NamedTempFile::new().unwrap();
    let url = crate::support::url_of(&app.db.admin, None);
    let out = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(dump.path())
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The same backup as plain SQL: the file's row and its audit events are in it, its name
    // nowhere (not in the row, not in an audit snapshot, not in any other table).
    let out = std::process::Command::new("pg_dump").args(["--format=plain", "--data-only"]).arg(&url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(contains(&out.stdout, &file.to_string()) && contains(&out.stdout, "file.uploaded"));
    assert!(!contains(&out.stdout, "Zebrafish"), "a file's name is in the database backup");

    assert_eq!(purge(&app).await.len(), 1);

    // Restored into a fresh database after the purge.
    let restored = format!("{}_restored", app.db.name);
    sqlx::query(&format!("CREATE DATABASE {restored}")).execute(&mut db).await.unwrap();
    let restored_url = crate::support::url_of(&app.db.admin.clone().database(&restored), None);
    let out = std::process::Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(&restored_url)
        .arg(dump.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut copy = sqlx::PgConnection::connect_with(&app.db.admin.clone().database(&restored)).await.unwrap();
    let sealed = |id: ContactId| {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT email_sealed FROM client_contacts WHERE id = $1").bind(id)
    };
    // The backup has the organization's rows, sealed…
    let ada_sealed = sealed(ada).fetch_one(&mut copy).await.unwrap();
    let bea_sealed = sealed(bea).fetch_one(&mut copy).await.unwrap();
    // … which nothing opens any more: the key is gone from the key store.
    let ada_row = ada.to_string();
    let opened = app.state.keys.open(Scope::org(a.id), contact_at("email", &ada_row), &ada_sealed, None);
    assert!(matches!(opened, Err(KeyError::Missing { .. })), "{opened:?}");
    let fresh = app.config.privacy.keyring(&app.config.data_dir, &app.state.sealer);
    assert!(fresh.open(Scope::org(a.id), contact_at("email", &ada_row), &ada_sealed, None).is_err());
    let file_row = file.to_string();
    let opened = object_backup.open_with(&app.state.keys, Scope::org(a.id), contents_at(&file_row), "unused");
    assert!(matches!(opened, Err(KeyError::Missing { .. })), "{opened:?}");
    // Nor the file's name, which the restored row holds sealed only.
    let (plain, name) = sealed_name(&mut copy, file).await;
    assert_eq!(plain, None);
    let opened = app.state.keys.open(Scope::org(a.id), name_at(&file_row), &name.unwrap(), None);
    assert!(matches!(opened, Err(KeyError::Missing { .. })), "{opened:?}");
    // The same backup still opens what the other organization sealed: the restore is sound.
    let bea_row = bea.to_string();
    assert_eq!(
        app.state.keys.open(Scope::org(b.id), contact_at("email", &bea_row), &bea_sealed, None).unwrap(),
        b"bea@stays.test"
    );
    copy.close().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {restored} WITH (FORCE)")).execute(&mut db).await.unwrap();
}
