//! Checks of the tenant invariants against the live catalog (used by `clientflow doctor`; the
//! test suite runs its own, independent catalog queries).

use sqlx::PgConnection;

/// Problems found with the tenant invariants; empty when all hold.
pub async fn tenant_invariant_problems(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut problems = Vec::new();
    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
           AND (c.relname = 'organizations' OR EXISTS (SELECT 1 FROM pg_attribute a \
                WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)) \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (table, rls, forced) in tables {
        if !rls {
            problems.push(format!("table {table}: row-level security is not enabled"));
        }
        if !forced {
            problems.push(format!("table {table}: row-level security is not forced"));
        }
        let (policies,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
             WHERE c.relname = $1 AND p.polwithcheck IS NOT NULL \
               AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_setting(''app.org_id''%' \
               AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%current_setting(''app.org_id''%'",
        )
        .bind(&table)
        .fetch_one(&mut *conn)
        .await?;
        if policies == 0 {
            problems.push(format!("table {table}: no tenant policy on app.org_id with WITH CHECK"));
        }
        // Permissive policies are OR-ed: one that lets rows in (INSERT, UPDATE, ALL) without a
        // WITH CHECK on app.org_id, or reaches rows for a write (UPDATE, DELETE, ALL) without a
        // USING on it, opens the table to every tenant. SELECT-only policies can't write.
        let policies: Vec<(String, String, bool, bool, bool)> = sqlx::query_as(
            "SELECT p.polname::text, p.polcmd::text, p.polwithcheck IS NOT NULL, \
               coalesce(pg_get_expr(p.polqual, p.polrelid) LIKE '%current_setting(''app.org_id''%', false), \
               coalesce(pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%current_setting(''app.org_id''%', false) \
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = $1 AND p.polpermissive ORDER BY 1",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await?;
        for (policy, cmd, has_check, using_on_tenant, check_on_tenant) in policies {
            if matches!(cmd.as_str(), "a" | "w" | "*") {
                if !has_check {
                    problems.push(format!("table {table}: policy {policy} allows INSERT/UPDATE without WITH CHECK"));
                } else if !check_on_tenant {
                    problems.push(format!("table {table}: policy {policy} has a WITH CHECK that ignores app.org_id"));
                }
            }
            if matches!(cmd.as_str(), "w" | "d" | "*") && !using_on_tenant {
                problems.push(format!("table {table}: policy {policy} allows writes without checking app.org_id"));
            }
        }
    }
    Ok(problems)
}
