//! Behaviour tests of tenant isolation, as the app role.

use clientflow::access::OrgTx;
use clientflow::platform::ids::OrgId;
use clientflow::work::{clients, projects};
use clientflow_test_support::TestDb;
use sqlx::Connection;

use crate::support::seed_org;

async fn tenant_tables(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND (c.relname = 'organizations' OR EXISTS \
         (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)) \
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The column that names a table's tenant: `organization_id`, or `id` for organizations.
fn tenant_column(table: &str) -> &'static str {
    if table == "organizations" { "id" } else { "organization_id" }
}

/// Two organizations, alpha and beta, with at least one row of their own in every tenant table:
/// clients and projects through the app's own door, the rest as the superuser (a member, an
/// invitation, a role customization, an override, a logo, audit rows, work, invoices, files,
/// API keys, a contact submission). Returns (alpha, beta) and the tenant tables, read from the
/// catalog; fails naming any table that didn't get rows for both, so a table added later
/// must be seeded here before this file passes.
async fn seed_every_tenant_table(tdb: &TestDb, db: &clientflow::platform::db::Db) -> (OrgId, OrgId, Vec<String>) {
    let a = seed_org(db, "alpha").await;
    let b = seed_org(db, "beta").await;
    let mut admin = tdb.admin_conn().await;
    for stmt in [
        "INSERT INTO users (id, email) SELECT gen_random_uuid(), slug || '@example.com' FROM organizations",
        "INSERT INTO memberships (organization_id, user_id, role) \
         SELECT o.id, u.id, 'member' FROM organizations o JOIN users u ON u.email = o.slug || '@example.com'",
        "INSERT INTO invitations (organization_id, id, email, role, token_hash, invited_by, created_at, expires_at) \
         SELECT organization_id, gen_random_uuid(), 'b@example.com', 'member', decode(md5(organization_id::text), 'hex'), \
           user_id, now(), now() + interval '1 day' FROM memberships",
        "INSERT INTO role_permissions SELECT id, 'member', 'invoices.read', true FROM organizations",
        "INSERT INTO member_permissions SELECT organization_id, user_id, 'invoices.read', true FROM memberships",
        "INSERT INTO organization_logos SELECT id, 'image/png', '\\x89504e47', now() FROM organizations",
        "INSERT INTO audit_heads SELECT id, 1, decode(repeat('00', 32), 'hex') FROM organizations",
        "INSERT INTO audit_events (organization_id, seq, occurred_at, actor_type, actor_id, actor_label, action, target_type, target_id, prev_hash, hash) \
         SELECT id, 1, now(), 'system', 'x', 'x', 'test', 'x', 'x', decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex') FROM organizations",
        "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
         SELECT id, 1, 'retention', decode(repeat('00', 32), 'hex'), now(), 'k', '\\x00' FROM organizations",
        "INSERT INTO client_contacts SELECT organization_id, gen_random_uuid(), id, 'Contact', NULL, NULL, '', now() FROM clients",
        "INSERT INTO project_members SELECT p.organization_id, p.id, m.user_id, now() FROM projects p JOIN memberships m ON m.organization_id = p.organization_id",
        "INSERT INTO board_columns SELECT organization_id, gen_random_uuid(), id, 'To do', 0 FROM projects",
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         SELECT organization_id, gen_random_uuid(), project_id, id, 'Task', now(), now() FROM board_columns",
        "INSERT INTO task_assignees SELECT t.organization_id, t.id, m.user_id FROM tasks t JOIN memberships m ON m.organization_id = t.organization_id",
        "INSERT INTO comments (organization_id, id, task_id, body, created_at) SELECT organization_id, gen_random_uuid(), id, 'Hi', now() FROM tasks",
        "INSERT INTO task_activity SELECT organization_id, gen_random_uuid(), id, 'x', 'title', NULL, 'Task', now() FROM tasks",
        "INSERT INTO time_entries SELECT t.organization_id, gen_random_uuid(), t.project_id, t.id, m.user_id, 30, current_date, '', now() \
         FROM tasks t JOIN memberships m ON m.organization_id = t.organization_id",
        "INSERT INTO invoice_counters SELECT id, 2 FROM organizations",
        "INSERT INTO invoice_number_counters SELECT id, 2026, 2 FROM organizations",
        "INSERT INTO timers (organization_id, id, user_id, project_id, started_at) \
         SELECT DISTINCT ON (m.organization_id, m.user_id) p.organization_id, gen_random_uuid(), m.user_id, p.id, now() \
         FROM projects p JOIN memberships m ON m.organization_id = p.organization_id",
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, issue_date, due_date, created_at) \
         SELECT organization_id, gen_random_uuid(), 1, id, 'EUR', current_date, current_date, now() FROM clients",
        "INSERT INTO invoice_lines SELECT organization_id, id, 0, 'Work', 1000, 100, 100 FROM invoices",
        "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, amount_minor, currency, billable, \
                               invoice_id, invoice_line, created_at) \
         SELECT DISTINCT ON (i.id) p.organization_id, gen_random_uuid(), p.id, m.user_id, current_date, 'Travel', 100, 'EUR', \
                true, i.id, 0, now() \
         FROM invoices i JOIN projects p ON p.organization_id = i.organization_id \
         JOIN memberships m ON m.organization_id = p.organization_id",
        "INSERT INTO invoice_payments (organization_id, id, invoice_id, amount_minor, paid_on, created_at) \
         SELECT organization_id, gen_random_uuid(), id, 50, current_date, now() FROM invoices",
        "INSERT INTO invoice_repeats (organization_id, id, invoice_id, every, unit, starts_on, send, next_on, last_invoice_id, created_at) \
         SELECT organization_id, gen_random_uuid(), id, 1, 'month', current_date, false, current_date, id, now() FROM invoices",
        // A name sealed as the app stores them (only the rows' visibility is looked at here).
        "INSERT INTO files (organization_id, id, project_id, name_sealed, content_type, size_bytes, sha256, storage_key, created_at) \
         SELECT organization_id, gen_random_uuid(), id, decode(repeat('02', 40), 'hex'), 'text/plain', 1, \
                decode(repeat('00', 32), 'hex'), 'k', now() FROM projects",
        "INSERT INTO api_keys (organization_id, id, name, prefix, key_hash, role, created_at) \
         SELECT id, gen_random_uuid(), 'k', 'cf_live_x', decode(md5(id::text) || md5(id::text), 'hex'), 'member', now() FROM organizations",
        "INSERT INTO idempotency_keys (organization_id, api_key_id, key, method, path, request_hash, created_at) \
         SELECT organization_id, id, 'k', 'POST', '/x', '\\x00', now() FROM api_keys",
        "INSERT INTO contact_submissions (organization_id, id, name, email, message, created_at) \
         SELECT id, gen_random_uuid(), 'Visitor', 'v@example.com', 'Hello', now() FROM organizations",
        "INSERT INTO billing_accounts (organization_id, plan, stripe_customer_id, updated_at) \
         SELECT id, 'free', 'cus_' || md5(id::text), now() FROM organizations",
        "INSERT INTO notifications (organization_id, id, recipient_id, kind, title, link, created_at) \
         SELECT organization_id, gen_random_uuid(), user_id, 'assigned', 'Task', '/o/x', now() FROM memberships",
        "INSERT INTO notification_preferences SELECT organization_id, user_id, 'assigned', 'off' FROM memberships",
        "INSERT INTO task_followers SELECT t.organization_id, t.id, m.user_id, true FROM tasks t \
         JOIN memberships m ON m.organization_id = t.organization_id",
        "INSERT INTO notification_digest_days SELECT id, current_date, now() FROM organizations",
        "INSERT INTO org_exports (organization_id, id, requested_at) SELECT id, gen_random_uuid(), now() FROM organizations",
        "INSERT INTO outbox_attachments SELECT id, gen_random_uuid(), 0, 'a.pdf', 'application/pdf', '\\x25', now() FROM organizations",
        "INSERT INTO audit_signing_keys SELECT id, 'k', decode(repeat('00', 32), 'hex') FROM organizations",
        "INSERT INTO member_capacities SELECT organization_id, user_id, 1200, now() FROM memberships",
        "INSERT INTO organization_deletion_requests SELECT id, gen_random_uuid(), now(), now() + interval '30 days' \
         FROM organizations",
    ] {
        sqlx::query(stmt).execute(&mut admin).await.unwrap_or_else(|e| panic!("{e}\n{stmt}"));
    }
    let tables = tenant_tables(&mut admin).await;
    assert!(tables.len() >= 20, "{tables:?}");
    let mut unseeded = Vec::new();
    for t in &tables {
        let key = tenant_column(t);
        let (of_a, of_b): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE {key} = $1), count(*) FILTER (WHERE {key} = $2) FROM {t}"
        ))
        .bind(a.id)
        .bind(b.id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if of_a == 0 || of_b == 0 {
            unseeded.push(format!("{t} (alpha {of_a}, beta {of_b})"));
        }
    }
    assert!(unseeded.is_empty(), "tenant tables without rows for both organizations: {unseeded:?}: seed them above");
    (a.id, b.id, tables)
}

#[tokio::test]
async fn without_a_tenant_every_tenant_table_reads_zero_rows() {
    let tdb = TestDb::new().await;
    let db = tdb.app_db(2).await;
    let (_, _, tables) = seed_every_tenant_table(&tdb, &db).await;
    let mut app = tdb.app_conn().await;
    for t in &tables {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut app).await.unwrap();
        assert_eq!(seen, 0, "{t} leaks rows without a tenant");
        // A reset setting (empty string) behaves the same, and is no error.
        let mut tx = app.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.org_id', '', true)").execute(&mut *tx).await.unwrap();
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(seen, 0, "{t} leaks rows with an empty tenant");
        tx.rollback().await.unwrap();
    }
    // Through the app's own global transaction as well.
    let mut g = db.global().await.unwrap();
    for t in &tables {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *g).await.unwrap();
        assert_eq!(seen, 0, "{t} leaks rows to a global transaction");
    }
}

/// Runs `sql` in a savepoint of `tx` and returns the rows it affected or its error (the
/// savepoint is rolled back either way, so one refused statement doesn't end the transaction).
async fn attempt(tx: &mut sqlx::PgConnection, sql: &str, bind: OrgId) -> Result<u64, sqlx::Error> {
    sqlx::query("SAVEPOINT attempt").execute(&mut *tx).await.unwrap();
    let result = sqlx::query(sql).bind(bind).execute(&mut *tx).await.map(|r| r.rows_affected());
    sqlx::query("ROLLBACK TO SAVEPOINT attempt").execute(&mut *tx).await.unwrap();
    result
}

/// With tenant A set, as the app role, over every tenant table from the catalog: A's own rows
/// are there (the policy is no blanket "deny"), B's are invisible and untouchable, and a row
/// naming B can neither be inserted nor made by updating one of A's.
#[tokio::test]
async fn with_a_tenant_set_every_tenant_table_hides_and_refuses_the_other_tenant() {
    let tdb = TestDb::new().await;
    let db = tdb.app_db(2).await;
    let (a, b, tables) = seed_every_tenant_table(&tdb, &db).await;
    let mut admin = tdb.admin_conn().await;
    let mut app = tdb.app_conn().await;
    let mut failures = Vec::new();
    for t in &tables {
        let key = tenant_column(t);
        let own: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE {key} = $1"))
            .bind(a)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        let mut tx = app.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(a.to_string()).execute(&mut *tx).await.unwrap();

        // Reads: exactly A's rows.
        let (seen, of_b): (i64, i64) =
            sqlx::query_as(&format!("SELECT count(*), count(*) FILTER (WHERE {key} = $1) FROM {t}"))
                .bind(b)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        if seen != own || of_b != 0 {
            failures.push(format!("{t}: tenant A sees {seen} rows ({of_b} of B), expected its own {own}"));
        }

        // B's rows can't be reached for a write: zero rows, or no privilege at all.
        for (verb, sql) in [
            ("UPDATE", format!("UPDATE {t} SET {key} = {key} WHERE {key} = $1")),
            ("DELETE", format!("DELETE FROM {t} WHERE {key} = $1")),
        ] {
            match attempt(&mut tx, &sql, b).await {
                Ok(0) => {}
                Ok(n) => failures.push(format!("{t}: tenant A's {verb} reached {n} rows of B")),
                Err(e) if e.to_string().contains("permission denied") => {}
                Err(e) => failures.push(format!("{t}: {verb} of B's rows failed oddly: {e}")),
            }
        }

        // A copy of one of A's rows, naming B: the WITH CHECK refuses it (or the app role
        // may not insert into the table at all).
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = ('public.' || quote_ident($1))::regclass \
             AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        )
        .bind(t)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let (may_insert, may_update): (bool, bool) = sqlx::query_as(
            "SELECT has_table_privilege(current_user, ('public.' || quote_ident($1))::regclass, 'INSERT'), \
                    has_column_privilege(current_user, ('public.' || quote_ident($1))::regclass, $2, 'UPDATE')",
        )
        .bind(t)
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let list = columns.join(", ");
        let values = columns.iter().map(|c| if c == key { "$1" } else { c.as_str() }).collect::<Vec<_>>().join(", ");
        let insert = format!("INSERT INTO {t} ({list}) SELECT {values} FROM {t} LIMIT 1");
        let update = format!("UPDATE {t} SET {key} = $1 WHERE ctid = (SELECT ctid FROM {t} LIMIT 1)");
        for (verb, sql, privileged) in [("INSERT", insert, may_insert), ("UPDATE", update, may_update)] {
            match attempt(&mut tx, &sql, b).await {
                Ok(n) => failures.push(format!("{t}: tenant A's {verb} of a row naming B succeeded ({n} rows)")),
                Err(e) => {
                    let msg = e.to_string();
                    let expected = if privileged { "violates row-level security policy" } else { "permission denied" };
                    if !msg.contains(expected) {
                        failures.push(format!("{t}: {verb} naming B: expected {expected:?}, got: {msg}"));
                    }
                }
            }
        }
        tx.rollback().await.unwrap();
    }
    assert!(failures.is_empty(), "tenant isolation broken:\n{}", failures.join("\n"));

    // Nothing of B changed (everything above was rolled back, but prove it).
    for t in &tables {
        let key = tenant_column(t);
        let of_b: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE {key} = $1"))
            .bind(b)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(of_b > 0, "{t}: B's rows are gone");
    }
}

#[tokio::test]
async fn a_tenant_sees_and_writes_only_its_own_rows() {
    let tdb = TestDb::new().await;
    let db = tdb.app_db(2).await;
    let a = seed_org(&db, "alpha").await;
    let b = seed_org(&db, "beta").await;

    let mut tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    let listed = clients::repo::list(&mut tx, 100).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed.iter().all(|c| c.organization_id == a.id));
    assert!(clients::repo::get(&mut tx, b.client).await.unwrap().is_none(), "B's client visible to A");
    assert!(!clients::repo::rename(&mut tx, b.client, "pwned").await.unwrap(), "A updated B's client");
    let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(orgs, 1);
    let deleted = sqlx::query("DELETE FROM projects WHERE id = $1").bind(b.project).execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    tx.rollback().await.unwrap();

    // Inserting a row that names B fails the WITH CHECK.
    let mut tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    let err = sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, gen_random_uuid(), 'x')")
        .bind(b.id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // Moving one of A's rows into B fails too.
    let mut tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    let err = sqlx::query("UPDATE clients SET organization_id = $1 WHERE id = $2")
        .bind(b.id)
        .bind(a.client)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // Nothing of B changed.
    let mut tx = OrgTx::begin(&db, &b.principal).await.unwrap();
    let c = clients::repo::get(&mut tx, b.client).await.unwrap().unwrap();
    assert_eq!(c.name, "beta client");
    assert_eq!(projects::repo::list(&mut tx, 10).await.unwrap().len(), 1);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_project_cannot_reference_another_tenants_client() {
    let tdb = TestDb::new().await;
    let db = tdb.app_db(2).await;
    let a = seed_org(&db, "alpha").await;
    let b = seed_org(&db, "beta").await;
    let mut tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    let err = projects::repo::create(&mut tx, Some(b.client), "sneaky").await.unwrap_err();
    let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23503"), "{err}");
    tx.rollback().await.unwrap();
    // Even the superuser can't make such a row: the composite key forbids it.
    let mut admin = tdb.admin_conn().await;
    let err = sqlx::query(
        "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, gen_random_uuid(), $2, 'x')",
    )
    .bind(a.id)
    .bind(b.client)
    .execute(&mut admin)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("foreign key"), "{err}");
    // And the app maps it to "not found", not a 500.
    let mapped = clientflow::platform::error::from_db(err);
    assert!(matches!(mapped, clientflow::platform::error::DomainError::NotFound), "{mapped:?}");
    assert_eq!(clientflow::platform::http::error::AppError::from(mapped).status().as_u16(), 404);
}

#[tokio::test]
async fn a_pooled_connection_never_carries_a_tenant_into_the_next_request() {
    let tdb = TestDb::new().await;
    // One connection: every transaction below runs on the same backend.
    let db = tdb.app_db(1).await;
    let a = seed_org(&db, "alpha").await;
    let b = seed_org(&db, "beta").await;

    let mut tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    let pid_a: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(clients::repo::list(&mut tx, 10).await.unwrap()[0].organization_id, a.id);
    tx.commit().await.unwrap();

    let mut tx = OrgTx::begin(&db, &b.principal).await.unwrap();
    let pid_b: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(pid_a, pid_b, "test needs the same pooled connection");
    let seen = clients::repo::list(&mut tx, 10).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].organization_id, b.id);
    tx.commit().await.unwrap();

    // A rolled-back tenant transaction leaves nothing behind either.
    let tx = OrgTx::begin(&db, &a.principal).await.unwrap();
    tx.rollback().await.unwrap();
    let mut g = db.global().await.unwrap();
    let pid_g: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *g).await.unwrap();
    assert_eq!(pid_g, pid_a);
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.org_id', true)").fetch_one(&mut *g).await.unwrap();
    assert!(setting.unwrap_or_default().is_empty(), "tenant setting survived the transaction");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM clients").fetch_one(&mut *g).await.unwrap();
    assert_eq!(seen, 0);
}

#[tokio::test]
async fn an_org_tx_can_only_be_opened_for_an_existing_org_by_the_operator() {
    let tdb = TestDb::new().await;
    let db = tdb.app_db(1).await;
    let missing =
        clientflow::access::operator(&db, &crate::support::operator(), clientflow::platform::ids::OrgId::new(), "t")
            .await
            .unwrap();
    assert!(missing.is_none());
}
