//! Migrations that repair data written before them: each is run on a database holding the data
//! as the earlier schema allowed it, and the repaired rows are checked.

use clientflow::platform::db::MIGRATOR;
use clientflow_test_support::TestDb;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// A database migrated up to (not including) `version`, reached as the owner role, and a
/// superuser connection to it. Dropped with the `TestDb` it was made next to.
struct Partial {
    owner: PgConnection,
    admin: PgConnection,
    name: String,
    server: PgConnection,
}

impl Partial {
    async fn new(db: &TestDb, version: i64) -> Self {
        let name = format!("{}_mig{version}", db.name);
        let mut server = db.admin_conn().await;
        sqlx::query(&format!("CREATE DATABASE {name} OWNER {}", clientflow::platform::db::OWNER_ROLE))
            .execute(&mut server)
            .await
            .unwrap();
        clientflow::platform::db::provision::prepare_database(&db.admin, &name).await.unwrap();
        let mut owner = db.owner.clone().database(&name).connect().await.unwrap();
        let earlier = sqlx::migrate::Migrator {
            migrations: MIGRATOR.iter().filter(|m| m.version < version).cloned().collect::<Vec<_>>().into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        earlier.run(&mut owner).await.unwrap();
        let admin = db.admin.clone().database(&name).connect().await.unwrap();
        Self { owner, admin, name, server }
    }

    /// Runs the pending migrations (the one under test first) as the owner role, as
    /// `clientflow migrate` does.
    async fn migrate(&mut self) {
        MIGRATOR.run(&mut self.owner).await.unwrap();
    }

    async fn drop(mut self) {
        self.owner.close().await.ok();
        self.admin.close().await.ok();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name)).execute(&mut self.server).await.unwrap();
    }
}

/// Seeds an organization with an owner, a project and its board column (as the superuser, who
/// isn't subject to row-level security). Returns (organization, owner, project, column).
async fn org(admin: &mut PgConnection, slug: &str) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    let (o, u, p, c) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $2)")
        .bind(o)
        .bind(slug)
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
        .bind(u)
        .bind(format!("owner@{slug}.test"))
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(o)
        .bind(u)
        .execute(&mut *admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projects (organization_id, id, name, created_at, updated_at) VALUES ($1, $2, 'P', now(), now())",
    )
    .bind(o)
    .bind(p)
    .execute(&mut *admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO board_columns (organization_id, id, project_id, name, position) VALUES ($1, $2, $3, 'To do', 0)",
    )
    .bind(o)
    .bind(c)
    .bind(p)
    .execute(&mut *admin)
    .await
    .unwrap();
    (o, u, p, c)
}

async fn task(
    admin: &mut PgConnection,
    org: (uuid::Uuid, uuid::Uuid, uuid::Uuid, uuid::Uuid),
    title: &str,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, now(), now())",
    )
    .bind(org.0)
    .bind(id)
    .bind(org.2)
    .bind(org.3)
    .bind(title)
    .execute(&mut *admin)
    .await
    .unwrap();
    id
}

async fn set_parent(admin: &mut PgConnection, task: uuid::Uuid, parent: uuid::Uuid) {
    sqlx::query("UPDATE tasks SET parent_id = $2 WHERE id = $1")
        .bind(task)
        .bind(parent)
        .execute(&mut *admin)
        .await
        .unwrap();
}

/// 0009: loops of subtasks stored before the trigger existed are broken (every task on one
/// becomes top-level again); trees without a loop are left as they are.
#[tokio::test]
async fn migration_9_detaches_the_tasks_of_stored_loops() {
    let db = TestDb::new().await;
    let mut m = Partial::new(&db, 9).await;
    let o = org(&mut m.admin, "loops").await;
    let (a, b, c) =
        (task(&mut m.admin, o, "A").await, task(&mut m.admin, o, "B").await, task(&mut m.admin, o, "C").await);
    let (x, y) = (task(&mut m.admin, o, "X").await, task(&mut m.admin, o, "Y").await);
    let (tree, leaf) = (task(&mut m.admin, o, "Tree").await, task(&mut m.admin, o, "Leaf").await);
    // A → B → C → A, X ⇄ Y, and Leaf under Tree.
    set_parent(&mut m.admin, a, b).await;
    set_parent(&mut m.admin, b, c).await;
    set_parent(&mut m.admin, c, a).await;
    set_parent(&mut m.admin, x, y).await;
    set_parent(&mut m.admin, y, x).await;
    set_parent(&mut m.admin, leaf, tree).await;
    m.migrate().await;
    let parents: Vec<(String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT title, parent_id FROM tasks ORDER BY title").fetch_all(&mut m.admin).await.unwrap();
    for (title, parent) in &parents {
        match title.as_str() {
            "Leaf" => assert_eq!(*parent, Some(tree), "a tree without a loop is kept"),
            _ => assert_eq!(*parent, None, "{title} was on a loop"),
        }
    }
    // The trigger now guards the table: the owner (whom row-level security binds) can't close a
    // loop either, nor can the superuser.
    let closing =
        sqlx::query("UPDATE tasks SET parent_id = $2 WHERE id = $1").bind(tree).bind(leaf).execute(&mut m.admin).await;
    assert!(closing.is_err_and(|e| e.to_string().contains("own subtask")));
    m.drop().await;
}

/// 0011: keys made with the command line before keys had to act for a member are bound to the
/// organization's earliest active Owner; keys made by a member keep their member.
#[tokio::test]
async fn migration_11_binds_unbound_keys_to_the_earliest_owner() {
    let db = TestDb::new().await;
    let mut m = Partial::new(&db, 11).await;
    let o = org(&mut m.admin, "keys").await;
    let later_owner = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'second@keys.test')")
        .bind(later_owner)
        .execute(&mut m.admin)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ($1, $2, 'owner', now() + interval '1 day')",
    )
    .bind(o.0)
    .bind(later_owner)
    .execute(&mut m.admin)
    .await
    .unwrap();
    let orphan = uuid::Uuid::now_v7();
    let owned = uuid::Uuid::now_v7();
    for (id, by, hash) in [(orphan, None, [1u8; 32]), (owned, Some(later_owner), [2u8; 32])] {
        sqlx::query(
            "INSERT INTO api_keys (organization_id, id, name, prefix, key_hash, role, created_by, created_at) \
             VALUES ($1, $2, 'k', 'cf_live_x', $3, 'admin', $4, now())",
        )
        .bind(o.0)
        .bind(id)
        .bind(&hash[..])
        .bind(by)
        .execute(&mut m.admin)
        .await
        .unwrap();
    }
    m.migrate().await;
    let by = |id: uuid::Uuid| {
        let q = sqlx::query_scalar::<_, Option<uuid::Uuid>>("SELECT created_by FROM api_keys WHERE id = $1").bind(id);
        async move { q }
    };
    let orphan_by: Option<uuid::Uuid> = by(orphan).await.fetch_one(&mut m.admin).await.unwrap();
    let owned_by: Option<uuid::Uuid> = by(owned).await.fetch_one(&mut m.admin).await.unwrap();
    assert_eq!(orphan_by, Some(o.1), "bound to the earliest active Owner");
    assert_eq!(owned_by, Some(later_owner), "a member's key keeps its member");
    // Row-level security is forced again on both tables.
    let forced: Vec<(String, bool)> = sqlx::query_as(
        "SELECT relname::text, relforcerowsecurity FROM pg_class WHERE relname IN ('api_keys', 'memberships', 'tasks')",
    )
    .fetch_all(&mut m.admin)
    .await
    .unwrap();
    assert!(forced.iter().all(|(_, f)| *f), "{forced:?}");
    m.drop().await;
}

/// 0061: each invoice marked paid before payments were kept is paid in full by one payment,
/// on the day it was marked paid where its organization is (UTC for a zone PostgreSQL doesn't
/// know); nothing else gets a payment.
#[tokio::test]
async fn migration_61_pays_the_invoices_marked_paid_by_one_payment_each() {
    let db = TestDb::new().await;
    let mut m = Partial::new(&db, 61).await;
    let mut invoices = Vec::new();
    for (slug, zone) in [("auckland", "Pacific/Auckland"), ("nowhere", "Mars/Olympus_Mons")] {
        let o = org(&mut m.admin, slug).await;
        sqlx::query("UPDATE organizations SET timezone = $2 WHERE id = $1")
            .bind(o.0)
            .bind(zone)
            .execute(&mut m.admin)
            .await
            .unwrap();
        let client = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, 'C')")
            .bind(o.0)
            .bind(client)
            .execute(&mut m.admin)
            .await
            .unwrap();
        // Marked paid at 20:00 UTC on 1 March: 2 March in Auckland.
        for (number, status, total) in [(1, "paid", 12_345), (2, "paid", 0), (3, "sent", 500), (4, "void", 700)] {
            let id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO invoices (organization_id, id, number, client_id, currency, status, issue_date, due_date, \
                 subtotal_minor, total_minor, created_at, paid_at) \
                 VALUES ($1, $2, $3, $4, 'EUR', $5, '2026-02-01', '2026-02-28', $6, $6, '2026-02-01T09:00:00Z', \
                         CASE WHEN $5 = 'paid' THEN '2026-03-01T20:00:00Z'::timestamptz END)",
            )
            .bind(o.0)
            .bind(id)
            .bind(number)
            .bind(client)
            .bind(status)
            .bind(total)
            .execute(&mut m.admin)
            .await
            .unwrap();
            invoices.push((slug, number, id));
        }
    }
    m.migrate().await;
    let payments: Vec<(uuid::Uuid, i64, time::Date)> =
        sqlx::query_as("SELECT invoice_id, amount_minor, paid_on FROM invoice_payments ORDER BY paid_on DESC")
            .fetch_all(&mut m.admin)
            .await
            .unwrap();
    let id_of = |slug: &str, number: i64| invoices.iter().find(|i| i.0 == slug && i.1 == number).unwrap().2;
    let date = |s: &str| time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE).unwrap();
    assert_eq!(
        payments,
        [(id_of("auckland", 1), 12_345, date("2026-03-02")), (id_of("nowhere", 1), 12_345, date("2026-03-01"))],
        "one payment per paid invoice with something to pay"
    );
    let forced: Vec<(String, bool)> = sqlx::query_as(
        "SELECT relname::text, relforcerowsecurity FROM pg_class \
         WHERE relname IN ('invoices', 'invoice_payments', 'organizations')",
    )
    .fetch_all(&mut m.admin)
    .await
    .unwrap();
    assert!(forced.len() == 3 && forced.iter().all(|(_, f)| *f), "{forced:?}");
    m.drop().await;
}
