//! Organization data export and import (promise 12): the archive holds exactly the
//! organization's rows, every tenant table is either exported or excluded with a reason,
//! secrets never leave, an export → import → export round trip gives the same manifest, only
//! Owners start and download exports (signed, expiring links that obey the allowlist), and a
//! damaged archive is refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clientflow::access;
use clientflow::platform::ids::OrgId;
use clientflow::privacy::{export, export_jobs, import};
use clientflow_test_support::{TestApp, TestDb};
use sqlx::PgConnection;

use crate::support::accounts::{PASSWORD, sign_up};
use crate::support::orgs::{create_org, org_with_every_role, session_token};
use crate::support::{self, seed_org};

/// Rows in most tenant tables of every organization (the two seeded ones), through SQL as
/// the owner: users, memberships, contacts, board columns, tasks with subtasks, comments,
/// activity, time, invoices and lines, permissions, a logo, a contact submission, a billing
/// account, and an API key and invitation (which must not be exported).
async fn fill(conn: &mut PgConnection) {
    for stmt in [
        "INSERT INTO users (id, email, display_name) SELECT gen_random_uuid(), slug || '@example.com', 'Person of ' || name FROM organizations",
        "INSERT INTO memberships (organization_id, user_id, role) \
         SELECT o.id, u.id, 'member' FROM organizations o JOIN users u ON u.email = o.slug || '@example.com'",
        "INSERT INTO invitations (organization_id, id, email, role, token_hash, invited_by, created_at, expires_at) \
         SELECT organization_id, gen_random_uuid(), 'b@example.com', 'member', decode(md5(organization_id::text), 'hex'), \
           user_id, now(), now() + interval '1 day' FROM memberships",
        "INSERT INTO role_permissions SELECT id, 'member', 'invoices.read', true FROM organizations",
        "INSERT INTO member_permissions SELECT organization_id, user_id, 'invoices.read', true FROM memberships",
        "INSERT INTO organization_logos SELECT id, 'image/png', '\\x89504e47', now() FROM organizations",
        "INSERT INTO client_contacts SELECT organization_id, gen_random_uuid(), id, 'Contact \"quoted\" ü', NULL, NULL, '', now() FROM clients",
        "INSERT INTO project_members SELECT p.organization_id, p.id, m.user_id, now() FROM projects p JOIN memberships m ON m.organization_id = p.organization_id",
        "INSERT INTO board_columns SELECT organization_id, gen_random_uuid(), id, 'To do', 0 FROM projects",
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         SELECT organization_id, gen_random_uuid(), project_id, id, 'Task ' || n, now(), now() FROM board_columns, generate_series(1, 5) n",
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, parent_id, created_at, updated_at) \
         SELECT organization_id, gen_random_uuid(), project_id, column_id, 'Sub of ' || title, id, now(), now() FROM tasks",
        "INSERT INTO task_assignees SELECT t.organization_id, t.id, m.user_id FROM tasks t JOIN memberships m ON m.organization_id = t.organization_id",
        "INSERT INTO comments (organization_id, id, task_id, body, created_at) SELECT organization_id, gen_random_uuid(), id, 'Hi\nthere', now() FROM tasks",
        "INSERT INTO task_activity SELECT organization_id, gen_random_uuid(), id, 'x', 'title', NULL, 'Task', now() FROM tasks",
        "INSERT INTO time_entries SELECT t.organization_id, gen_random_uuid(), t.project_id, t.id, m.user_id, 30, current_date, '', now() \
         FROM tasks t JOIN memberships m ON m.organization_id = t.organization_id",
        "INSERT INTO invoice_counters SELECT id, 2 FROM organizations ON CONFLICT DO NOTHING",
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, issue_date, due_date, created_at) \
         SELECT organization_id, gen_random_uuid(), 1, id, 'EUR', current_date, current_date, now() FROM clients",
        "INSERT INTO invoice_lines SELECT organization_id, id, 0, 'Work', 1000, 100, 100 FROM invoices",
        // Expenses: one unbilled per person and project, and one billed by an invoice's line.
        "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, note, amount_minor, currency, \
                               billable, created_at) \
         SELECT p.organization_id, gen_random_uuid(), p.id, m.user_id, current_date, 'Travel', 'Train\nback', 4250, 'EUR', \
                true, now() FROM projects p JOIN memberships m ON m.organization_id = p.organization_id",
        "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, amount_minor, currency, billable, \
                               invoice_id, invoice_line, created_at) \
         SELECT DISTINCT ON (i.id) p.organization_id, gen_random_uuid(), p.id, m.user_id, current_date, 'Printing', 100, 'EUR', \
                true, i.id, 0, now() \
         FROM invoices i JOIN projects p ON p.organization_id = i.organization_id \
         JOIN memberships m ON m.organization_id = p.organization_id WHERE i.number = 1",
        // A repeated invoice and its copy, which refers back to it (random ids: the copy may
        // come first in the archive), and the repeat, which refers to both.
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, issue_date, due_date, created_at, repeated_from) \
         SELECT organization_id, gen_random_uuid(), 2, client_id, 'EUR', current_date, current_date, now(), id \
         FROM invoices WHERE number = 1",
        "INSERT INTO invoice_repeats (organization_id, id, invoice_id, every, unit, starts_on, send, made, nth, next_on, \
                                      last_invoice_id, created_at) \
         SELECT t.organization_id, gen_random_uuid(), t.id, 1, 'month', current_date, true, 1, 1, current_date + 30, c.id, now() \
         FROM invoices t JOIN invoices c ON c.organization_id = t.organization_id AND c.repeated_from = t.id",
        "INSERT INTO api_keys (organization_id, id, name, prefix, key_hash, role, created_at) \
         SELECT id, gen_random_uuid(), 'k', 'cf_live_x', decode(md5(id::text) || md5(id::text), 'hex'), 'member', now() FROM organizations",
        "INSERT INTO contact_submissions (organization_id, id, name, email, message, created_at) \
         SELECT id, gen_random_uuid(), 'Visitor', 'v@example.com', 'Hello', now() FROM organizations",
        "INSERT INTO billing_accounts (organization_id, plan, stripe_customer_id, updated_at) \
         SELECT id, 'free', 'cus_' || md5(id::text), now() FROM organizations",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await.unwrap_or_else(|e| panic!("{e}\n{stmt}"));
    }
}

/// A file uploaded to the organization's project, through the app (sealed in its storage).
async fn upload(
    app: &TestApp,
    org: &support::SeededOrg,
    name: &str,
    bytes: &[u8],
) -> clientflow::work::files::FileMeta {
    let ctx = clientflow::audit::Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()));
    let up = clientflow::work::files::Upload {
        project_id: org.project,
        task_id: None,
        name,
        bytes: bytes.to_vec(),
        shared_with_client: false,
    };
    Box::pin(clientflow::work::files::upload(
        &app.app_db,
        &app.state.storage,
        &app.state.keys,
        1 << 20,
        &ctx,
        &org.principal,
        up,
    ))
    .await
    .unwrap()
}

/// Exports `org` of `app` to `dir/name` as the operator.
async fn export_of(app: &TestApp, org: OrgId, out: &Path) -> export::Written {
    let principal = access::operator(&app.app_db, &support::operator(), org, "test export").await.unwrap().unwrap();
    let (progress, _watch) = tokio::sync::watch::channel(export::Progress::default());
    let job = export::Job {
        db: &app.app_db,
        principal: &principal,
        storage: &app.state.storage,
        keys: &app.state.keys,
        signer: &app.state.audit_signer,
        now: app.clock.now_utc(),
        progress,
        sealed_as: None,
    };
    Box::pin(export::write_archive(job, out)).await.unwrap()
}

async fn import_into(app: &TestApp, file: &Path) -> anyhow::Result<import::Imported> {
    let job = import::Job {
        db: &app.app_db,
        storage: &app.state.storage,
        keys: &app.state.keys,
        local_key: app.state.audit_signer.verifying_key(),
    };
    let authority = support::operator();
    Box::pin(import::import_archive(job, file, |org| access::begin_import(&app.app_db, &authority, org))).await
}

/// An archive's entries by name.
type Entries = BTreeMap<String, Vec<u8>>;

/// Every entry of a (small) archive.
fn entries(path: &Path) -> Entries {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.insert(e.name().unwrap().to_string(), bytes);
    }
    out
}

/// Writes an archive with these entries (a tampered copy).
fn write_entries(path: &Path, entries: &BTreeMap<String, Vec<u8>>) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn manifest_of(entries: &BTreeMap<String, Vec<u8>>) -> export::Manifest {
    serde_json::from_slice(&entries["manifest.json"]).unwrap()
}

/// Replaces a part and fixes the manifest's size, SHA-256 (and rows) so that only a deeper
/// check can notice.
fn replace_part(entries: &mut BTreeMap<String, Vec<u8>>, name: &str, bytes: Vec<u8>) {
    let mut m = manifest_of(entries);
    let part = m.parts.iter_mut().find(|p| p.name == name).unwrap();
    part.bytes = bytes.len() as u64;
    part.sha256 = clientflow::platform::crypto::sha256_hex(&bytes);
    entries.insert(name.to_string(), bytes);
    entries.insert("manifest.json".into(), serde_json::to_vec_pretty(&m).unwrap());
}

async fn tenant_tables(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::str::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn an_export_holds_exactly_the_organizations_rows_and_covers_every_tenant_table() {
    let app = TestApp::spawn().await;
    let alpha = seed_org(&app.app_db, "alpha").await;
    let beta = seed_org(&app.app_db, "beta").await;
    let mut admin = app.db.admin_conn().await;
    fill(&mut admin).await;
    let file = upload(&app, &alpha, "plan.txt", b"the plan, in alpha").await;
    upload(&app, &beta, "other.txt", b"beta's own").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alpha.zip");
    let written = export_of(&app, alpha.id, &out).await;
    let archive = entries(&out);
    let m = manifest_of(&archive);
    assert_eq!(m, written.manifest);
    assert_eq!((m.format.as_str(), m.format_version, m.organization_id), (export::FORMAT, 1, alpha.id));
    assert!(archive.contains_key("README.md"));

    // Every tenant table is a part, or excluded with a reason; nothing else is a part.
    let catalog: BTreeSet<String> = tenant_tables(&mut admin).await.into_iter().collect();
    let parts: BTreeSet<String> =
        m.parts.iter().filter_map(|p| p.table.clone()).filter(|t| t != "users" && t != "organizations").collect();
    let excluded: BTreeSet<String> = m.excluded.iter().map(|e| e.table.clone()).collect();
    let uncovered: Vec<&String> = catalog.iter().filter(|t| !parts.contains(*t) && !excluded.contains(*t)).collect();
    assert!(uncovered.is_empty(), "tenant tables neither exported nor excluded: {uncovered:?}");
    assert!(parts.is_disjoint(&excluded), "{parts:?} / {excluded:?}");
    for e in &m.excluded {
        assert!(catalog.contains(&e.table), "excluded table {} is not a tenant table (stale exclusion)", e.table);
        assert!(e.reason.len() > 10, "{}: give the reason", e.table);
    }
    for needed in [
        "organizations",
        "memberships",
        "role_permissions",
        "clients",
        "client_contacts",
        "projects",
        "tasks",
        "comments",
        "time_entries",
        "expenses",
        "invoices",
        "invoice_lines",
        "invoice_payments",
        "invoice_repeats",
        "files",
        "audit_events",
        "audit_heads",
        "audit_checkpoints",
    ] {
        assert!(m.counts.contains_key(needed), "{needed} is not exported");
    }

    // Columns named like secrets, in exported tables: each one known not to be a credential.
    let suspicious: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public' \
         AND column_name ~ '(hash|token|secret|password|sha256|_key$|^key)' ORDER BY 1, 2",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for (t, c) in suspicious {
        if m.counts.contains_key(&t) && t != "users" {
            assert!(
                export::NOT_SECRET_COLUMNS.iter().any(|(nt, nc, _)| *nt == t && *nc == c),
                "{t}.{c} looks like a secret and is exported: exclude its table or list it in NOT_SECRET_COLUMNS"
            );
        }
    }

    // Exactly alpha's rows, counted against the database, and none of beta's.
    let beta_id = beta.id.to_string();
    for part in m.parts.iter().filter(|p| p.table.is_some()) {
        let table = part.table.as_deref().unwrap();
        let bytes = &archive[&part.name];
        let rows = lines(bytes);
        assert_eq!(Some(rows.len() as u64), part.rows, "{table}");
        assert_eq!(m.counts[table], rows.len() as u64, "{table}");
        assert_eq!(clientflow::platform::crypto::sha256_hex(bytes), part.sha256, "{table}");
        assert!(!String::from_utf8_lossy(bytes).contains(&beta_id), "{table} holds a row of beta");
        if table == "users" {
            continue;
        }
        let key = if table == "organizations" { "id" } else { "organization_id" };
        let in_db: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {key} = $1"))
            .bind(alpha.id)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(in_db as u64, rows.len() as u64, "{table}: the database and the archive disagree");
        assert!(rows.iter().all(|r| r[key] == alpha.id.to_string()), "{table}");
    }
    assert!(m.counts["tasks"] >= 10 && m.counts["comments"] >= 10, "{:?}", m.counts);

    // Accounts without credentials; no API key or invitation token anywhere.
    let users = lines(&archive["data/users.ndjson"]);
    assert!(!users.is_empty());
    for u in &users {
        let keys: Vec<&str> = u.keys().map(String::as_str).collect();
        assert_eq!(keys, ["created_at", "display_name", "email", "id"]);
    }
    assert!(!archive.contains_key("data/api_keys.ndjson") && !archive.contains_key("data/invitations.ndjson"));
    let all = archive.values().map(|b| String::from_utf8_lossy(b).to_string()).collect::<String>();
    assert!(!all.contains("cf_live_x") && !all.contains("password_hash") && !all.contains("totp"));

    // The file's contents, opened; its name, opened, in the `name` column (never the sealed
    // one); the audit log with its signed head and the key.
    assert_eq!(archive[&format!("files/{}", file.id)], b"the plan, in alpha");
    let file_rows = lines(&archive["data/files.ndjson"]);
    assert_eq!(file_rows.len(), 1);
    assert_eq!(file_rows[0]["name"], "plan.txt");
    assert!(!file_rows[0].contains_key("name_sealed"), "{:?}", file_rows[0]);
    assert_eq!(m.parts.iter().filter(|p| p.name.starts_with("files/")).count(), 1);
    assert!(m.counts["audit_events"] >= 1 && m.counts["audit_checkpoints"] >= 1, "{:?}", m.counts);
    assert_eq!(m.counts["audit_signing_keys"], 1);
    // The archive on disk is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn export_import_export_gives_the_same_manifest() {
    let source = TestApp::spawn().await;
    let alpha = seed_org(&source.app_db, "alpha").await;
    seed_org(&source.app_db, "beta").await;
    fill(&mut source.db.admin_conn().await).await;
    upload(&source, &alpha, "plan.txt", b"the plan").await;
    upload(&source, &alpha, "notes.csv", b"a,b\n1,2\n").await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.zip");
    let written = export_of(&source, alpha.id, &first).await;

    // A fresh installation: its own database, master key, signing key and file store.
    let target = TestApp::spawn().await;
    let imported = import_into(&target, &first).await.unwrap();
    assert_eq!(imported.files, 2);
    assert_eq!(
        imported.rows,
        written.manifest.counts.iter().filter(|(t, _)| *t != "users").map(|(_, n)| n).sum::<u64>()
    );
    assert!(imported.accounts_created >= 1);
    assert_eq!(imported.audit_keys, vec![source.state.audit_signer.key_id().to_string()]);
    let second = dir.path().join("second.zip");
    let again = export_of(&target, alpha.id, &second).await;
    let mut expected = written.manifest.clone();
    expected.created_at = again.manifest.created_at;
    assert_eq!(again.manifest, expected, "export → import → export changed the manifest");
    let (a, b) = (entries(&first), entries(&second));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        if name != "manifest.json" {
            assert_eq!(bytes, &b[name], "{name} differs");
        }
    }
    // Imported accounts have no password; the files open under the new installation's keys,
    // their names sealed under them too (never stored in plaintext).
    let mut db = target.db.admin_conn().await;
    type FileName = (uuid::Uuid, Option<String>, Vec<u8>, Option<i32>);
    let names: Vec<FileName> = sqlx::query_as("SELECT id, name, name_sealed, key_version FROM files ORDER BY id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let mut opened = Vec::new();
    for (id, plain, sealed, version) in names {
        assert_eq!((plain, version), (None, Some(1)));
        let row = id.to_string();
        let name = target
            .state
            .keys
            .open(
                clientflow::platform::keys::Scope::org(alpha.id),
                clientflow::work::files::name_at(&row),
                &sealed,
                None,
            )
            .unwrap();
        assert!(
            source
                .state
                .keys
                .open(
                    clientflow::platform::keys::Scope::org(alpha.id),
                    clientflow::work::files::name_at(&row),
                    &sealed,
                    None
                )
                .is_err()
        );
        opened.push(String::from_utf8(name).unwrap());
    }
    opened.sort();
    assert_eq!(opened, ["notes.csv", "plan.txt"]);
    let with_password: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE password_hash IS NOT NULL")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(with_password, 0);

    // Importing it again is refused, and writes nothing.
    let orgs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut db).await.unwrap();
    let err = import_into(&target, &first).await.unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let orgs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut db).await.unwrap();
    assert_eq!(orgs_before, orgs_after);
}

#[tokio::test]
async fn a_damaged_archive_is_refused_before_anything_is_written() {
    let source = TestApp::spawn().await;
    let alpha = seed_org(&source.app_db, "alpha").await;
    fill(&mut source.db.admin_conn().await).await;
    upload(&source, &alpha, "plan.txt", b"the plan").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.zip");
    export_of(&source, alpha.id, &good).await;
    let original = entries(&good);
    let target = TestApp::spawn().await;
    let mut db = target.db.admin_conn().await;
    let count = async |db: &mut PgConnection| -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM users), (SELECT count(*) FROM tasks)",
        )
        .fetch_one(db)
        .await
        .unwrap()
    };
    let before = count(&mut db).await;
    let mut refuse = async |name: &str, bytes: Vec<u8>, says: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", import_into(&target, &path).await.unwrap_err());
        assert!(err.contains(says), "{name}: {err}");
        assert_eq!(count(&mut db).await, before, "{name}: something was written");
    };
    let bytes = std::fs::read(&good).unwrap();
    refuse("truncated.zip", bytes[..bytes.len() / 2].to_vec(), "not a complete export archive").await;
    refuse("empty.zip", Vec::new(), "not a complete export archive").await;

    let tampered = |f: &dyn Fn(&mut Entries)| {
        let mut e = original.clone();
        f(&mut e);
        let path = dir.path().join("t.zip");
        write_entries(&path, &e);
        std::fs::read(path).unwrap()
    };
    // A changed row: the part's SHA-256 no longer matches.
    let changed = tampered(&|e| {
        let t = String::from_utf8(e["data/tasks.ndjson"].clone()).unwrap().replacen("Task 1", "Task X", 1);
        e.insert("data/tasks.ndjson".into(), t.into_bytes());
    });
    refuse("changed.zip", changed, "corrupted").await;
    // A part missing, an entry the manifest doesn't list, another format version.
    refuse("missing.zip", tampered(&|e| drop(e.remove("data/comments.ndjson"))), "missing").await;
    refuse("extra.zip", tampered(&|e| drop(e.insert("data/evil.ndjson".into(), b"{}\n".to_vec()))), "does not list")
        .await;
    let newer = tampered(&|e| {
        let mut m: serde_json::Value = serde_json::from_slice(&e["manifest.json"]).unwrap();
        m["format_version"] = 2.into();
        e.insert("manifest.json".into(), serde_json::to_vec(&m).unwrap());
    });
    refuse("newer.zip", newer, "format version is 2").await;
    // A rewritten audit event with the manifest fixed to match: the chain catches it.
    let rewritten = tampered(&|e| {
        let text = String::from_utf8(e["data/audit_events.ndjson"].clone()).unwrap();
        let text = text.replacen("file.uploaded", "file.deleted", 1);
        replace_part(e, "data/audit_events.ndjson", text.into_bytes());
    });
    refuse("rewritten.zip", rewritten, "audit log does not verify").await;
    // Rows removed, with hashes and counts fixed: the chain still holds, the count doesn't.
    let fewer = tampered(&|e| {
        let text = String::from_utf8(e["data/comments.ndjson"].clone()).unwrap();
        let kept: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        replace_part(e, "data/comments.ndjson", kept.into_bytes());
    });
    refuse("fewer.zip", fewer, "rows").await;
    // And the untouched archive imports.
    import_into(&target, &good).await.unwrap();
}

#[tokio::test]
async fn only_owners_start_and_download_exports_through_signed_expiring_links() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "exporters").await;
    let slug = org.slug.clone();
    let page = format!("/o/{slug}/settings/export");
    for role in ["admin", "manager", "member", "client"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(b.get(&page).await.status(), 403, "{role} sees the export page");
        let token = session_token(b).await;
        let res = b.post_with(&page, &[("current_password", PASSWORD)], Some(&token), true).await;
        assert_eq!(res.status(), 403, "{role} starts an export");
    }
    // An Owner of another organization: not found.
    let mut stranger = sign_up(&app, "owner@strangers.test").await;
    create_org(&mut stranger, "Strangers").await;
    assert_eq!(stranger.get(&page).await.status(), 404);

    let owner = &mut org.people.get_mut("owner").unwrap().browser;
    // Reachable from the settings navigation.
    let (_, billing) = owner.page(&format!("/o/{slug}/settings/billing")).await;
    assert!(billing.contains(&format!("href=\"{page}\"")), "{billing}");
    // The password confirms it's the Owner.
    let res = owner.submit(&page, &page, &[("current_password", "not my password")]).await;
    assert_eq!(res.status(), 422);
    let res = owner.submit(&page, &page, &[("current_password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let (_, html) = owner.page(&page).await;
    assert!(
        html.contains("Waiting to start") && html.contains("data-live=\"5\"") && !html.contains("http-equiv"),
        "{html}"
    );

    let runner = export_jobs::Runner::of(&app.state);
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 1);
    let (_, html) = owner.page(&page).await;
    assert!(html.contains("Ready to download"), "{html}");
    let start = html.find("/exports/").expect("a download link");
    let path = html[start..].split('"').next().unwrap().replace("&amp;", "&").replace("&#38;", "&");
    let fetch = async |path: &str, from: &str| {
        app.client.get(app.url(path)).header("x-forwarded-for", from).send().await.unwrap()
    };
    let res = fetch(&path, "192.0.2.1").await;
    if res.status() != 200 {
        panic!("{path}: {}: {}", res.status(), res.text().await.unwrap());
    }
    assert_eq!(res.headers()["content-type"], "application/zip");
    let body = res.bytes().await.unwrap();
    assert!(body.starts_with(b"PK"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.zip"), &body).unwrap();
    let got = manifest_of(&entries(&dir.path().join("d.zip")));
    assert_eq!(got.organization_slug, slug);

    // Tampered: 403. Outside the allowlist: 403. Expired: 410.
    let mut bad = path.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_eq!(fetch(&bad, "192.0.2.1").await.status(), 403);
    let other_org = path.replace(&org.id, &uuid::Uuid::now_v7().to_string());
    assert_eq!(fetch(&other_org, "192.0.2.1").await.status(), 403);
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE organizations SET ip_allowlist = '{203.0.113.0/24}' WHERE slug = $1")
        .bind(&slug)
        .execute(&mut db)
        .await
        .unwrap();
    let res = fetch(&path, "192.0.2.1").await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("approved network addresses"));
    // (The test server sees every request from 127.0.0.1: it trusts no proxy.)
    sqlx::query("UPDATE organizations SET ip_allowlist = '{203.0.113.0/24, 127.0.0.1/32}' WHERE slug = $1")
        .bind(&slug)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(fetch(&path, "192.0.2.1").await.status(), 200);
    sqlx::query("UPDATE organizations SET ip_allowlist = '{}' WHERE slug = $1")
        .bind(&slug)
        .execute(&mut db)
        .await
        .unwrap();
    app.clock.advance(time::Duration::minutes(i64::from(export_jobs::LINK_MINUTES) + 1));
    let res = fetch(&path, "192.0.2.1").await;
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));

    // After its expiry the archive is deleted; a fresh link to it finds it gone.
    app.clock.advance(time::Duration::hours(export_jobs::KEEP_HOURS));
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 1);
    let org_id: OrgId = org.id.parse().unwrap();
    let export_id: uuid::Uuid = path.split('/').nth(3).unwrap().split('?').next().unwrap().parse().unwrap();
    assert!(
        !export_jobs::archive_path(&app.config.data_dir, &app.app_db, app.app_db.home_region(), org_id, export_id)
            .exists()
    );
    let key = clientflow::privacy::web::link_key(&app.state);
    let (link, _) = access::export_link::signed_link("", &key, org_id, export_id, app.clock.now_utc(), 5);
    assert_eq!(fetch(&link, "192.0.2.1").await.status(), 410);
    let status: String = sqlx::query_scalar("SELECT status FROM org_exports WHERE id = $1")
        .bind(export_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(status, "expired");

    // Every step is on the record.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE organization_id = $1 AND action LIKE 'organization.export%' ORDER BY seq",
    )
    .bind(org_id)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "organization.export_requested",
            "organization.export_ready",
            "organization.export_downloaded",
            "organization.export_downloaded"
        ]
    );
}

/// The environment that points `clientflow` at a test database, with its own data directory.
async fn cli_env(db: &TestDb, data: &Path) -> Vec<(String, String)> {
    let passwords = clientflow_test_support::role_passwords().await;
    vec![
        ("CLIENTFLOW_DATA_DIR".into(), data.display().to_string()),
        ("DATABASE_URL".into(), support::url_of(&db.app, Some(&passwords.app))),
        ("CLIENTFLOW_DATABASE__ADMIN_URL".into(), support::url_of(&db.owner, Some(&passwords.owner))),
        ("CLIENTFLOW_DATABASE__AUDITOR_URL".into(), support::url_of(&db.auditor, Some(&passwords.auditor))),
    ]
}

async fn cli(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clientflow"));
        c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(&args).stdin(Stdio::null());
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_command_line_exports_and_imports_an_organization() {
    let (source, target) = (TestDb::new().await, TestDb::new().await);
    let db = source.app_db(2).await;
    seed_org(&db, "alpha").await;
    fill(&mut source.admin_conn().await).await;
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("alpha.zip");
    let from = cli_env(&source, &dir.path().join("source")).await;
    let into = cli_env(&target, &dir.path().join("target")).await;
    let out = cli(&from, &["org", "export", "--org", "alpha", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exporting: "), "a progress line");
    assert!(String::from_utf8_lossy(&out.stdout).contains("exported alpha"));
    // A truncated copy is refused with a clear message and writes nothing.
    let truncated = dir.path().join("cut.zip");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let out = cli(&into, &["org", "import", truncated.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a complete export archive"));
    let mut b = target.admin_conn().await;
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut b).await.unwrap();
    assert_eq!(none, 0);
    let out = cli(&into, &["org", "import", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imported alpha") && text.contains("audit log verified"), "{text}");
    let mut a = source.admin_conn().await;
    for table in ["organizations", "tasks", "comments", "time_entries", "expenses", "invoice_lines", "memberships"] {
        let q = format!("SELECT count(*) FROM {table}");
        let n: i64 = sqlx::query_scalar(&q).fetch_one(&mut b).await.unwrap();
        let key = if table == "organizations" {
            "slug"
        } else {
            "(SELECT slug FROM organizations o WHERE o.id = organization_id)"
        };
        let m: i64 = sqlx::query_scalar(&format!("{q} WHERE {key} = 'alpha'")).fetch_one(&mut a).await.unwrap();
        assert_eq!(n, m, "{table}");
    }
}

/// Queues an export of `org` (as if asked for on the Data export page) and runs the worker's
/// sweep, which writes it; returns its id.
async fn worker_export(app: &TestApp, org: OrgId) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO org_exports (organization_id, id, requested_at) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(id)
        .bind(app.clock.now_utc())
        .execute(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    let runner = export_jobs::Runner::of(&app.state);
    assert_eq!(Box::pin(export_jobs::sweep(&runner)).await.unwrap(), 1);
    let status: String = sqlx::query_scalar("SELECT status FROM org_exports WHERE id = $1")
        .bind(id)
        .fetch_one(&mut app.db.admin_conn().await)
        .await
        .unwrap();
    assert_eq!(status, "ready");
    id
}

/// GETs a freshly signed download link of export `id` of `org`.
async fn download(app: &TestApp, org: OrgId, id: uuid::Uuid) -> reqwest::Response {
    let key = clientflow::privacy::web::link_key(&app.state);
    let (link, _) = access::export_link::signed_link("", &key, org, id, app.clock.now_utc(), 5);
    app.client.get(app.url(&link)).send().await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn archives_are_sealed_at_rest_and_opened_only_for_their_download() {
    let app = TestApp::spawn().await;
    let alpha = seed_org(&app.app_db, "alpha").await;
    fill(&mut app.db.admin_conn().await).await;
    // A PDF is stored in the ZIP as it is (not deflated): in a plain archive its bytes would be
    // on disk verbatim.
    let marker = format!("%PDF-1.4 the signed contract {}", uuid::Uuid::now_v7());
    upload(&app, &alpha, "contract.pdf", marker.as_bytes()).await;
    let id = worker_export(&app, alpha.id).await;

    // At rest: a sealed stream, not a ZIP; no entry name, no row value, no file contents.
    let path = export_jobs::archive_path(&app.config.data_dir, &app.app_db, app.app_db.home_region(), alpha.id, id);
    let at_rest = std::fs::read(&path).unwrap();
    assert!(at_rest.starts_with(b"CFSTREAM"), "{:?}", &at_rest[..16]);
    assert!(zip::ZipArchive::new(std::io::Cursor::new(&at_rest)).is_err(), "the file on disk opens as a ZIP");
    for plain in [marker.as_bytes(), b"PK\x03\x04", b"PK\x01\x02", b"manifest.json", b"data/tasks.ndjson", b"README.md"]
    {
        assert!(!contains(&at_rest, plain), "{} is on disk in plain", String::from_utf8_lossy(plain));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The download is the plain ZIP the record describes, and a complete, valid export.
    let res = download(&app, alpha.id, id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/zip");
    let body = res.bytes().await.unwrap();
    assert!(body.starts_with(b"PK\x03\x04") && contains(&body, marker.as_bytes()));
    let mut admin = app.db.admin_conn().await;
    let (size, sha256): (i64, Vec<u8>) = sqlx::query_as("SELECT size_bytes, sha256 FROM org_exports WHERE id = $1")
        .bind(id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!((body.len() as i64, clientflow::platform::crypto::sha256(&body).to_vec()), (size, sha256));
    let dir = tempfile::tempdir().unwrap();
    let downloaded = dir.path().join("downloaded.zip");
    std::fs::write(&downloaded, &body).unwrap();
    let archive = entries(&downloaded);
    let manifest = manifest_of(&archive);
    assert_eq!(manifest.organization_id, alpha.id);
    for part in &manifest.parts {
        assert_eq!(clientflow::platform::crypto::sha256_hex(&archive[&part.name]), part.sha256, "{}", part.name);
    }
    let target = TestApp::spawn().await;
    let imported = import_into(&target, &downloaded).await.unwrap();
    assert_eq!(imported.manifest, manifest);
    assert_eq!(imported.files, 1);

    // Changed at rest, in any way: refused with a page that says why (410), never a 500, and
    // not recorded as downloaded.
    let another = worker_export(&app, alpha.id).await;
    let other_archive = std::fs::read(export_jobs::archive_path(
        &app.config.data_dir,
        &app.app_db,
        app.app_db.home_region(),
        alpha.id,
        another,
    ))
    .unwrap();
    let mut flipped = at_rest.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let tampered: [(&str, Vec<u8>); 5] = [
        ("a flipped bit", flipped),
        ("cut short", at_rest[..at_rest.len() - 40].to_vec()),
        ("a plain ZIP in its place", body.to_vec()),
        ("empty", Vec::new()),
        ("another export's archive in its place", other_archive),
    ];
    for (what, bytes) in tampered {
        std::fs::write(&path, &bytes).unwrap();
        let res = download(&app, alpha.id, id).await;
        assert_eq!(res.status(), 410, "{what}");
        let text = res.text().await.unwrap();
        assert!(text.contains("failed its integrity check"), "{what}: {text}");
        assert!(!text.contains("PK\u{3}\u{4}"), "{what}");
    }
    std::fs::write(&path, &at_rest).unwrap();
    assert_eq!(download(&app, alpha.id, id).await.status(), 200, "the untouched archive downloads again");
    let downloads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'organization.export_downloaded'",
    )
    .bind(alpha.id)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(downloads, 2, "refused downloads are not recorded as downloads");

    // The organization deleted (its purge destroys its data keys): a leftover copy of the
    // archive opens for no one, this process or another.
    let leftover = dir.path().join("leftover.sealed");
    std::fs::copy(&path, &leftover).unwrap();
    sqlx::query(
        "INSERT INTO organization_deletion_requests (organization_id, requested_by, requested_at, purge_after) \
         VALUES ($1, gen_random_uuid(), $2, $2)",
    )
    .bind(alpha.id)
    .bind(app.clock.now_utc())
    .execute(&mut admin)
    .await
    .unwrap();
    let mut owner = app.db.owner_conn().await;
    let record_key = clientflow::privacy::record_key(&app.state.sealer);
    let purged = clientflow::privacy::deletion::purge_due(
        &mut owner,
        &app.state.keys,
        &app.state.storage,
        &record_key,
        app.clock.now_utc(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(purged.len(), 1);
    assert!(purged[0].keys_destroyed >= 1);
    let fresh = app.config.privacy.keyring(&app.config.data_dir, &app.state.sealer);
    for keys in [&app.state.keys, &fresh] {
        match export::open_sealed_archive(keys, alpha.id, id, &leftover).unwrap() {
            Err(clientflow::platform::sealed_stream::StreamError::Key(_)) => {}
            Err(e) => panic!("refused, but not for its key: {e}"),
            Ok(_) => panic!("a leftover archive opened after the organization's keys were destroyed"),
        }
    }
}
