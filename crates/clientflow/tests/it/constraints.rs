//! The application's table of named constraints (`clientflow::errors`) against the migrated
//! schema: a constraint renamed or dropped in a migration would otherwise silently turn a field
//! error back into a generic conflict.

use clientflow_test_support::TestApp;

#[tokio::test]
async fn every_named_constraint_exists_in_the_schema() {
    let app = TestApp::spawn().await;
    let mut db = app.db.admin_conn().await;
    // Table constraints, unique indexes, and the constraint names triggers raise.
    let mut known: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = 'public' \
         UNION SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'i'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for src in &functions {
        for part in src.split("CONSTRAINT = '").skip(1) {
            known.push(part.split('\'').next().unwrap_or_default().to_string());
        }
    }
    for c in clientflow::errors::CONSTRAINTS {
        assert!(
            known.iter().any(|k| k == c.constraint),
            "`{}` (field `{}`) is named in clientflow::errors but is not in the schema",
            c.constraint,
            c.field
        );
    }
    // The check can fail: a name that isn't there is not found.
    assert!(!known.iter().any(|k| k == "no_such_constraint"));
}
