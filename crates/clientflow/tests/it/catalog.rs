//! Catalog tests: the tenant invariants, read from pg_class / pg_policy / pg_constraint /
//! pg_roles. They find tenant tables by their `organization_id` column, so tables added by
//! later migrations are covered without touching this file.

use clientflow_test_support::TestDb;
use sqlx::PgConnection;

/// Every table in `public` that has an `organization_id` column.
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

/// Everything wrong with the tenant tables, as readable lines. Separate from the test so a
/// negative control can prove it detects violations.
async fn violations(conn: &mut PgConnection) -> Vec<String> {
    let mut out = Vec::new();
    let tables = tenant_tables(conn).await;
    for t in &tables {
        let (rls, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = ('public.' || quote_ident($1))::regclass",
        )
        .bind(t)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if !rls {
            out.push(format!("{t}: RLS not enabled"));
        }
        if !forced {
            out.push(format!("{t}: RLS not forced"));
        }
        // A policy that applies to every command, compares organization_id with app.org_id
        // in both USING and WITH CHECK.
        let good: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_policy p WHERE p.polrelid = ('public.' || quote_ident($1))::regclass \
             AND p.polcmd = '*' AND p.polpermissive \
             AND pg_get_expr(p.polqual, p.polrelid) ~ 'organization_id = .*current_setting\\(''app\\.org_id''::text, true\\)' \
             AND pg_get_expr(p.polwithcheck, p.polrelid) ~ 'organization_id = .*current_setting\\(''app\\.org_id''::text, true\\)'",
        )
        .bind(t)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if good == 0 {
            out.push(format!("{t}: no ALL policy on organization_id = app.org_id with WITH CHECK"));
        }
        out.extend(policy_violations(conn, t, "organization_id").await);
        // The primary key starts with organization_id.
        let pk_first: Option<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
             WHERE c.conrelid = ('public.' || quote_ident($1))::regclass AND c.contype = 'p'",
        )
        .bind(t)
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
        if pk_first.as_deref() != Some("organization_id") {
            out.push(format!("{t}: primary key does not start with organization_id ({pk_first:?})"));
        }
    }
    // organizations is its own tenant, keyed by id: the same rules for its policies.
    out.extend(policy_violations(conn, "organizations", "id").await);
    // Foreign keys between tenant tables include organization_id on both sides, at the same
    // position.
    let fks: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.conname::text, src.relname::text, dst.relname::text, \
           EXISTS (SELECT 1 FROM unnest(c.conkey, c.confkey) AS k(s, d) \
                   JOIN pg_attribute sa ON sa.attrelid = c.conrelid AND sa.attnum = k.s \
                   JOIN pg_attribute da ON da.attrelid = c.confrelid AND da.attnum = k.d \
                   WHERE sa.attname = 'organization_id' AND da.attname = 'organization_id') \
         FROM pg_constraint c JOIN pg_class src ON src.oid = c.conrelid JOIN pg_class dst ON dst.oid = c.confrelid \
         JOIN pg_namespace n ON n.oid = src.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (name, src, dst, has_org) in fks {
        if tables.contains(&src) && tables.contains(&dst) && !has_org {
            out.push(format!("foreign key {name} ({src} -> {dst}) does not include organization_id"));
        }
    }
    // Views must run with the caller's rights (else they bypass RLS as their owner).
    let views: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') \
           AND NOT coalesce('security_invoker=true' = ANY(c.reloptions) OR 'security_invoker=on' = ANY(c.reloptions), false)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for v in views {
        out.push(format!("view {v} is not security_invoker"));
    }
    out
}

/// Every permissive policy of `table` that lets rows in (INSERT, UPDATE, ALL) has a WITH CHECK
/// comparing `key` with app.org_id, and every one that reaches existing rows for a write
/// (UPDATE, DELETE, ALL) has a USING that does. Permissive policies are OR-ed together, so a
/// single one without the tenant check opens the table to writes into any tenant; SELECT-only
/// policies (capabilities such as an invitation token) can't write.
async fn policy_violations(conn: &mut PgConnection, table: &str, key: &str) -> Vec<String> {
    let tenant_check = format!("(^|[^a-z_]){key} = .*current_setting\\('app\\.org_id'::text, true\\)");
    let policies: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT p.polname::text, p.polcmd::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
         FROM pg_policy p WHERE p.polrelid = ('public.' || quote_ident($1))::regclass AND p.polpermissive ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (name, cmd, using, check) in policies {
        let lets_rows_in = matches!(cmd.as_str(), "a" | "w" | "*");
        let writes_existing = matches!(cmd.as_str(), "w" | "d" | "*");
        if lets_rows_in {
            match &check {
                None => out.push(format!("{table}: policy {name} allows INSERT/UPDATE without WITH CHECK")),
                Some(c) if !regex_match(conn, c, &tenant_check).await => out.push(format!(
                    "{table}: policy {name} has a WITH CHECK that does not compare {key} with app.org_id"
                )),
                Some(_) => {}
            }
        }
        if writes_existing && !regex_match(conn, using.as_deref().unwrap_or(""), &tenant_check).await {
            out.push(format!("{table}: policy {name} allows writes without the tenant check in USING"));
        }
    }
    out
}

/// PostgreSQL's own regular expressions (the test has no regex crate, and the patterns are
/// about PostgreSQL's rendering of the expressions anyway).
async fn regex_match(conn: &mut PgConnection, text: &str, pattern: &str) -> bool {
    sqlx::query_scalar("SELECT $1 ~ $2").bind(text).bind(pattern).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn every_tenant_table_is_isolated_by_construction() {
    let db = TestDb::new().await;
    let mut conn = db.owner_conn().await;
    let tables = tenant_tables(&mut conn).await;
    for expected in ["clients", "memberships", "projects"] {
        assert!(tables.iter().any(|t| t == expected), "{expected} not found among {tables:?}");
    }
    let v = violations(&mut conn).await;
    assert!(v.is_empty(), "tenant invariants violated:\n{}", v.join("\n"));
    // organizations is keyed by id, not organization_id; it is isolated the same way.
    let (rls, forced): (bool, bool) = sqlx::query_as(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.organizations'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(rls && forced);
}

#[tokio::test]
async fn the_catalog_check_catches_a_careless_table() {
    // Negative control: the check above must fail for tables that break the rules.
    let db = TestDb::new().await;
    let mut conn = db.owner_conn().await;
    for stmt in [
        "CREATE TABLE careless (organization_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (id))",
        "CREATE TABLE careless_child (organization_id uuid NOT NULL, id uuid NOT NULL, parent uuid, \
         PRIMARY KEY (organization_id, id), FOREIGN KEY (parent) REFERENCES careless (id))",
        "ALTER TABLE careless_child ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY read_all ON careless_child USING (true)",
        "CREATE VIEW careless_view AS SELECT * FROM clients",
        // Tables that get everything right except one policy each.
        "CREATE TABLE careless_insert (organization_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (organization_id, id))",
        "CREATE TABLE careless_nocheck (organization_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (organization_id, id))",
        "CREATE TABLE careless_update (organization_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (organization_id, id))",
        "CREATE TABLE careless_delete (organization_id uuid NOT NULL, id uuid NOT NULL, PRIMARY KEY (organization_id, id))",
        "CREATE TABLE careless_othercheck (organization_id uuid NOT NULL, id uuid NOT NULL, owner uuid, \
         PRIMARY KEY (organization_id, id))",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    let good = "organization_id = (NULLIF(current_setting('app.org_id', true), ''))::uuid";
    for t in ["careless_insert", "careless_nocheck", "careless_update", "careless_delete", "careless_othercheck"] {
        sqlx::query(&format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")).execute(&mut conn).await.unwrap();
        sqlx::query(&format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY")).execute(&mut conn).await.unwrap();
        if t != "careless_nocheck" {
            sqlx::query(&format!("CREATE POLICY tenant_isolation ON {t} USING ({good}) WITH CHECK ({good})"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    for stmt in [
        // An INSERT policy with no tenant check: OR-ed with the good one, it admits any tenant's rows.
        "CREATE POLICY open_insert ON careless_insert FOR INSERT WITH CHECK (true)".to_string(),
        // The tenant policy without WITH CHECK (PostgreSQL would reuse USING; the rule asks for it
        // spelled out).
        format!("CREATE POLICY tenant_isolation ON careless_nocheck USING ({good})"),
        format!("CREATE POLICY move_rows ON careless_update FOR UPDATE USING ({good}) WITH CHECK (true)"),
        "CREATE POLICY purge ON careless_delete FOR DELETE USING (true)".to_string(),
        // A WITH CHECK on app.org_id that compares the wrong column.
        "CREATE POLICY by_owner ON careless_othercheck FOR INSERT \
         WITH CHECK (owner = (NULLIF(current_setting('app.org_id', true), ''))::uuid)"
            .to_string(),
        // organizations is covered too (keyed by id).
        "CREATE POLICY open_signup ON organizations FOR INSERT WITH CHECK (true)".to_string(),
        // A SELECT-only capability policy is fine: it can't write.
        "CREATE POLICY by_token ON careless_update FOR SELECT USING (id = gen_random_uuid())".to_string(),
    ] {
        sqlx::query(&stmt).execute(&mut conn).await.unwrap();
    }
    let v = violations(&mut conn).await.join("\n");
    for needle in [
        "careless: RLS not enabled",
        "careless: RLS not forced",
        "careless: primary key does not start with organization_id",
        "careless_child: RLS not forced",
        "careless_child: no ALL policy",
        "careless_child: policy read_all allows INSERT/UPDATE without WITH CHECK",
        "careless_child: policy read_all allows writes without the tenant check in USING",
        "careless_insert: policy open_insert has a WITH CHECK that does not compare organization_id with app.org_id",
        "careless_nocheck: no ALL policy on organization_id = app.org_id with WITH CHECK",
        "careless_nocheck: policy tenant_isolation allows INSERT/UPDATE without WITH CHECK",
        "careless_update: policy move_rows has a WITH CHECK that does not compare organization_id",
        "careless_delete: policy purge allows writes without the tenant check in USING",
        "careless_othercheck: policy by_owner has a WITH CHECK that does not compare organization_id",
        "organizations: policy open_signup has a WITH CHECK that does not compare id with app.org_id",
        "foreign key careless_child_parent_fkey (careless_child -> careless) does not include organization_id",
        "view careless_view is not security_invoker",
    ] {
        assert!(v.contains(needle), "expected {needle:?} in:\n{v}");
    }
    // Only what is wrong is reported: the good policies and the SELECT-only one are not.
    for clean in ["tenant_isolation has", "careless_update: policy tenant_isolation", "by_token", "clients:"] {
        assert!(!v.contains(clean), "unexpected {clean:?} in:\n{v}");
    }
}

#[tokio::test]
async fn the_app_role_is_unprivileged_and_owns_nothing() {
    let db = TestDb::new().await;
    let mut conn = db.app_conn().await;
    let (name, superuser, bypass, createrole, createdb): (String, bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(name, "clientflow_app");
    assert!(!superuser && !bypass && !createrole && !createdb);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owned, 0, "the app role owns relations");
    let owned_fns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc WHERE proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owned_fns, 0);
    // It can't create objects either (so it can't create a table that escapes the rules).
    let err = sqlx::query("CREATE TABLE sneaky (id int)").execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    // Nor switch RLS off.
    let err = sqlx::query("ALTER TABLE clients DISABLE ROW LEVEL SECURITY").execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("must be owner"), "{err}");
    // The owner role is no superuser either.
    let mut owner = db.owner_conn().await;
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
}

/// The `SECURITY DEFINER` functions, each reviewed for what it lets its callers do with the
/// owner's rights. A new one fails [`every_function_that_pins_its_search_path_names_pg_temp_last`]
/// until it is added here with its reason.
const REVIEWED_DEFINERS: &[(&str, &str)] = &[
    ("account_purge_security_events", "deletes one account's security events, only while its due deletion is purged"),
    ("audit_apply_retention", "deletes an organization's audit events older than the horizon, behind a signed cut"),
    ("audit_heads_due_for_signing", "returns organization ids only"),
    ("audit_newest_signed_checkpoint", "returns the newest checkpoint's time and key id"),
    ("invoice_repeat_organizations", "returns organization ids, time zones and dates only"),
    ("notify_organizations", "returns organization ids, time zones and flags only"),
    ("org_exports_due", "returns organization and export ids only"),
    ("organization_deletions_due", "returns organization ids only"),
    ("raise_access_epoch", "trigger: raises the one access epoch row"),
    ("sealed_values_by_key_version", "returns counts per organization and key version only"),
];

/// Everything wrong with the functions of `public`, as readable lines: a `SECURITY DEFINER`
/// function nobody reviewed, one that doesn't pin its search_path, one that PUBLIC may run, and
/// any function whose pinned path doesn't name pg_temp last (unnamed, the temporary schema is
/// searched first for tables: `migrations/0058`).
async fn function_violations(conn: &mut PgConnection) -> Vec<String> {
    let rows: Vec<(String, bool, Option<String>, bool)> = sqlx::query_as(
        "SELECT p.proname::text, p.prosecdef, \
           (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'), \
           p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (name, definer, path, public_runs) in rows {
        if definer {
            if !REVIEWED_DEFINERS.iter().any(|(n, _)| *n == name) {
                out.push(format!("{name}: SECURITY DEFINER, not reviewed (REVIEWED_DEFINERS)"));
            }
            if path.is_none() {
                out.push(format!("{name}: SECURITY DEFINER without a pinned search_path"));
            }
            if public_runs {
                out.push(format!("{name}: SECURITY DEFINER that PUBLIC may execute"));
            }
        }
        if let Some(path) = path {
            let last = path.rsplit(',').next().unwrap_or("").trim();
            if last != "pg_temp" {
                out.push(format!("{name}: search_path {path:?} does not name pg_temp last"));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_function_that_pins_its_search_path_names_pg_temp_last() {
    let db = TestDb::new().await;
    let mut conn = db.owner_conn().await;
    let v = function_violations(&mut conn).await;
    assert!(v.is_empty(), "{}", v.join("\n"));
    // The list names only functions that exist (a reviewed function dropped leaves no entry).
    for (name, _) in REVIEWED_DEFINERS {
        let definer: Option<bool> = sqlx::query_scalar(
            "SELECT bool_and(prosecdef) FROM pg_proc WHERE proname = $1 AND pronamespace = 'public'::regnamespace",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(definer, Some(true), "{name} is listed as a SECURITY DEFINER function");
    }
}

#[tokio::test]
async fn the_function_check_catches_a_careless_function() {
    // Negative control: the check above must fail for functions that break the rules.
    let db = TestDb::new().await;
    let mut conn = db.owner_conn().await;
    for stmt in [
        "CREATE FUNCTION careless_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER \
         AS $$ SELECT count(*) FROM security_events $$",
        "CREATE FUNCTION careless_path() RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, public \
         AS $$ SELECT count(*) FROM security_events $$",
        "CREATE FUNCTION careful() RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, public, pg_temp \
         AS $$ SELECT count(*) FROM security_events $$",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    let v = function_violations(&mut conn).await.join("\n");
    for needle in [
        "careless_definer: SECURITY DEFINER, not reviewed",
        "careless_definer: SECURITY DEFINER without a pinned search_path",
        "careless_definer: SECURITY DEFINER that PUBLIC may execute",
        "careless_path: search_path \"pg_catalog, public\" does not name pg_temp last",
    ] {
        assert!(v.contains(needle), "expected {needle:?} in:\n{v}");
    }
    assert!(!v.contains("careful"), "{v}");
}

#[tokio::test]
async fn a_temporary_table_does_not_shadow_what_a_definer_function_reads() {
    // The app role may not create temporary tables. Where it can all the same (a database an
    // operator provisioned by hand, granted here as a superuser would), a temporary table named
    // like one a SECURITY DEFINER function reads must not change what the function does: here,
    // a deletion "being purged" for an account that asked for none, which would let the app
    // role erase that account's security events with the owner's rights.
    let db = TestDb::new().await;
    let mut app = db.app_conn().await;
    let err = sqlx::query("CREATE TEMP TABLE account_deletion_requests (user_id uuid, purge_started_at timestamptz)")
        .execute(&mut app)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let mut admin = db.admin_conn().await;
    let user = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'kept@example.com')")
        .bind(user)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO security_events (id, user_id, occurred_at, kind) VALUES (gen_random_uuid(), $1, now(), 'sign_in')",
    )
    .bind(user)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(&format!("GRANT TEMPORARY ON DATABASE {} TO clientflow_app", db.name))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut app = db.app_conn().await;
    for stmt in [
        "CREATE TEMP TABLE account_deletion_requests (user_id uuid, purge_started_at timestamptz)".to_string(),
        format!("INSERT INTO pg_temp.account_deletion_requests VALUES ('{user}', now())"),
    ] {
        sqlx::query(&stmt).execute(&mut app).await.unwrap();
    }
    let err = sqlx::query("SELECT account_purge_security_events($1)").bind(user).execute(&mut app).await.unwrap_err();
    assert!(err.to_string().contains("no due deletion is being purged"), "{err}");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM security_events WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the account's security events are still there");
}

/// ClientFlow's three roles.
const ROLES: [&str; 3] = ["clientflow_owner", "clientflow_app", "clientflow_auditor"];

/// The tables the auditor role (`BYPASSRLS`: every organization's rows, for `clientflow audit
/// verify` and operator lookups by slug) may read. It may write nothing.
const AUDITOR_READS: &[&str] =
    &["audit_checkpoints", "audit_events", "audit_heads", "audit_retention_policy", "organizations"];

/// Everything wrong with what the three roles may do beyond their grants, as readable lines:
/// the auditor reading a table not in [`AUDITOR_READS`] or writing any, a role that inherits
/// another's privileges (of `roles`), and the app or auditor role creating temporary tables or
/// schemas.
async fn role_violations(conn: &mut PgConnection, roles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, \
           has_any_column_privilege('clientflow_auditor', c.oid, 'SELECT'), \
           has_table_privilege('clientflow_auditor', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') \
             OR has_any_column_privilege('clientflow_auditor', c.oid, 'INSERT, UPDATE, REFERENCES') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (table, reads, writes) in rows {
        if reads && !AUDITOR_READS.contains(&table.as_str()) {
            out.push(format!("clientflow_auditor may read {table}"));
        }
        if writes {
            out.push(format!("clientflow_auditor may write {table}"));
        }
    }
    let sequences: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' \
           AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('clientflow_auditor', c.oid, 'USAGE, SELECT, UPDATE') END \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    out.extend(sequences.into_iter().map(|s| format!("clientflow_auditor may use sequence {s}")));
    let inherited: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.rolname::text, r.rolname::text FROM pg_auth_members a \
         JOIN pg_roles m ON m.oid = a.member JOIN pg_roles r ON r.oid = a.roleid \
         WHERE m.rolname = ANY($1) ORDER BY 1, 2",
    )
    .bind(roles)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    out.extend(inherited.into_iter().map(|(member, role)| format!("{member} is a member of {role}")));
    for role in ["clientflow_app", "clientflow_auditor"] {
        let (temp, create): (bool, bool) = sqlx::query_as(
            "SELECT has_database_privilege($1, current_database(), 'TEMPORARY'), \
                    has_database_privilege($1, current_database(), 'CREATE')",
        )
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if temp {
            out.push(format!("{role} may create temporary tables"));
        }
        if create {
            out.push(format!("{role} may create schemas"));
        }
    }
    out
}

#[tokio::test]
async fn the_auditor_only_reads_the_audit_tables_and_no_role_has_more_than_its_grants() {
    let db = TestDb::new().await;
    let mut conn = db.admin_conn().await;
    let v = role_violations(&mut conn, &ROLES).await;
    assert!(v.is_empty(), "{}", v.join("\n"));
    // The list names only what the auditor does read (a grant taken back leaves no entry).
    for table in AUDITOR_READS {
        let reads: bool = sqlx::query_scalar("SELECT has_table_privilege('clientflow_auditor', $1, 'SELECT')")
            .bind(format!("public.{table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(reads, "the auditor reads {table}");
    }
}

#[tokio::test]
async fn the_role_check_catches_a_careless_grant() {
    // Negative control: the check above must fail for grants that break the rules.
    let db = TestDb::new().await;
    let mut conn = db.admin_conn().await;
    let careless = format!("careless_{}", db.name);
    for stmt in [
        "GRANT SELECT (email, password_hash) ON users TO clientflow_auditor".to_string(),
        "GRANT UPDATE ON audit_heads TO clientflow_auditor".to_string(),
        format!("GRANT TEMPORARY, CREATE ON DATABASE {} TO clientflow_auditor", db.name),
        // Roles are the cluster's, shared with tests running beside this one: a membership is
        // shown on a role of this test's own.
        format!("CREATE ROLE {careless} NOLOGIN IN ROLE pg_read_all_data"),
    ] {
        sqlx::query(&stmt).execute(&mut conn).await.unwrap();
    }
    let v = role_violations(&mut conn, &[ROLES.as_slice(), &[careless.as_str()]].concat()).await.join("\n");
    sqlx::query(&format!("DROP ROLE {careless}")).execute(&mut conn).await.unwrap();
    for needle in [
        "clientflow_auditor may read users",
        "clientflow_auditor may write audit_heads",
        &format!("{careless} is a member of pg_read_all_data"),
        "clientflow_auditor may create temporary tables",
        "clientflow_auditor may create schemas",
    ] {
        assert!(v.contains(needle), "expected {needle:?} in:\n{v}");
    }
    assert!(!v.contains("may read organizations"), "{v}");
}

/// The values a check constraint on `table.column` allows (`status IN ('a', 'b')`), sorted.
async fn allowed_values(conn: &mut PgConnection, table: &str, column: &str) -> Vec<String> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.conrelid = $1::regclass AND c.contype = 'c' \
         AND pg_get_constraintdef(c.oid) LIKE '%' || $2 || '%ANY%'",
    )
    .bind(format!("public.{table}"))
    .bind(column)
    .fetch_all(conn)
    .await
    .unwrap();
    assert_eq!(defs.len(), 1, "one list of values for {table}.{column}: {defs:?}");
    // CHECK ((status = ANY (ARRAY['a'::text, 'b'::text]))): the quoted parts.
    let mut values: Vec<String> = defs[0].split('\'').skip(1).step_by(2).map(str::to_string).collect();
    values.sort();
    values
}

#[tokio::test]
async fn the_statuses_pages_put_in_words_are_the_ones_the_database_allows() {
    use clientflow::work::invoices::InvoiceStatus;
    use clientflow::work::projects::ProjectStatus;
    use clientflow::work::task_status::TaskStatus;
    let db = TestDb::new().await;
    let mut conn = db.owner_conn().await;
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(
        allowed_values(&mut conn, "projects", "status").await,
        sorted(ProjectStatus::ALL.iter().map(|s| s.as_str()).collect())
    );
    assert_eq!(
        allowed_values(&mut conn, "tasks", "status").await,
        sorted(TaskStatus::ALL.iter().map(|s| s.as_str()).collect())
    );
    // Overdue is a sent invoice past its due date, decided when read; it is never stored.
    let stored = InvoiceStatus::ALL.iter().filter(|s| **s != InvoiceStatus::Overdue).map(|s| s.as_str()).collect();
    assert_eq!(allowed_values(&mut conn, "invoices", "status").await, sorted(stored));
    // Every one of them has words of its own.
    let labels: Vec<&str> = ProjectStatus::ALL.iter().map(|s| s.label()).collect();
    assert!(labels.iter().all(|l| !l.contains('_') && l.chars().next().is_some_and(char::is_uppercase)), "{labels:?}");
    let labels: Vec<&str> = InvoiceStatus::ALL.iter().map(|s| s.label()).collect();
    assert!(labels.iter().all(|l| l.chars().next().is_some_and(char::is_uppercase)), "{labels:?}");
}
