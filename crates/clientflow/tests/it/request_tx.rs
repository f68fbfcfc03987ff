//! The request transaction: a page or an API request is one database transaction, and each
//! service call inside it is a savepoint, exactly as atomic as it was on its own.

use clientflow::access::OrgTx;
use clientflow::platform::db::tenant::{abandon_request_tx, with_request_tx};
use clientflow_test_support::{TestApp, TestDb};

use crate::support::seed_org;

async fn names(db: &TestDb) -> Vec<String> {
    let mut admin = db.admin_conn().await;
    sqlx::query_scalar("SELECT name FROM clients WHERE name LIKE 'part %' ORDER BY name")
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

async fn insert(tx: &mut OrgTx, name: &str) {
    sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, $3)")
        .bind(tx.org_id())
        .bind(uuid::Uuid::now_v7())
        .bind(name)
        .execute(&mut **tx)
        .await
        .unwrap();
}

/// An insert the table's check refuses (an empty name): the statement fails, and the
/// transaction with it until it is undone.
async fn insert_refused(tx: &mut OrgTx) {
    let refused = sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, '')")
        .bind(tx.org_id())
        .bind(uuid::Uuid::now_v7())
        .execute(&mut **tx)
        .await;
    assert!(refused.is_err(), "an empty name violates the table's check");
}

#[tokio::test]
async fn parts_commit_with_the_request_and_a_failed_part_undoes_only_itself() {
    let db = TestDb::new().await;
    let app_db = db.app_db(4).await;
    let org = seed_org(&app_db, "parts").await;
    let outer = OrgTx::begin(&app_db, &org.principal).await.unwrap();
    let (_, back) = with_request_tx(outer, async {
        // A part that commits: kept for the request.
        let mut a = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut a, "part a").await;
        a.commit().await.unwrap();
        // A part that fails halfway (a constraint violation) and is dropped, as `?` does.
        let mut b = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut b, "part b").await;
        insert_refused(&mut b).await;
        drop(b);
        // The transaction goes on after the failed part: another part commits.
        let mut c = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut c, "part c").await;
        c.commit().await.unwrap();
        // An explicit rollback undoes its part.
        let mut d = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut d, "part d").await;
        d.rollback().await.unwrap();
        // Nothing is visible outside until the request commits.
        assert!(names(&db).await.is_empty(), "uncommitted parts are invisible to others");
    })
    .await;
    back.unwrap().expect("the request transaction comes back").commit().await.unwrap();
    assert_eq!(names(&db).await, ["part a", "part c"]);
}

/// The statement a backend ran last, as the database reports it.
async fn last_statement(db: &TestDb, pid: i32) -> String {
    let mut admin = db.admin_conn().await;
    sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

/// A request transaction in which nothing has been written yet (an API request whose key's
/// verification only read) begins its first part without a savepoint; undoing that part
/// begins the transaction again with the same tenant, and later parts work as before.
#[tokio::test]
async fn a_first_part_with_nothing_written_before_it_needs_no_savepoint() {
    let db = TestDb::new().await;
    let app_db = db.app_db(4).await;
    let org = seed_org(&app_db, "fresh").await;
    let mut outer = OrgTx::begin(&app_db, &org.principal).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *outer).await.unwrap();
    let outer = outer.with_nothing_written().await.unwrap();
    let (_, back) = with_request_tx(outer, async {
        // The first part: no savepoint (the backend's last statement is still ours).
        let mut a = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        assert_eq!(last_statement(&db, pid).await, "SELECT txid_current_if_assigned() IS NOT NULL");
        insert(&mut a, "part a").await;
        // It fails halfway and is dropped: undone by beginning again.
        insert_refused(&mut a).await;
        drop(a);
        // Still nothing written: the next part starts at the beginning too, after the undo,
        // and the tenant is set again (the insert passes row-level security's check).
        let mut b = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        assert!(last_statement(&db, pid).await.starts_with("ROLLBACK; BEGIN; SELECT set_config('app.org_id'"));
        insert(&mut b, "part b").await;
        b.rollback().await.unwrap();
        let mut c = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM clients WHERE name LIKE 'part %'")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(visible, 0, "the undone parts left nothing");
        insert(&mut c, "part c").await;
        c.commit().await.unwrap();
        // Something is written now: the next part takes a savepoint, and undoing it keeps c.
        let mut d = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        assert!(last_statement(&db, pid).await.starts_with("SAVEPOINT cf_part_"));
        insert(&mut d, "part d").await;
        drop(d);
    })
    .await;
    back.unwrap().expect("the request transaction comes back").commit().await.unwrap();
    assert_eq!(names(&db).await, ["part c"]);
}

/// The claim is checked in debug builds: a transaction that has written can't make it.
#[tokio::test]
#[should_panic(expected = "with_nothing_written on a transaction that has written")]
async fn a_transaction_that_wrote_cant_claim_it_wrote_nothing() {
    let db = TestDb::new().await;
    let app_db = db.app_db(4).await;
    let org = seed_org(&app_db, "claim").await;
    let mut outer = OrgTx::begin(&app_db, &org.principal).await.unwrap();
    insert(&mut outer, "part written").await;
    let _ = outer.with_nothing_written().await;
}

#[tokio::test]
async fn an_abandoned_request_leaves_nothing() {
    let db = TestDb::new().await;
    let app_db = db.app_db(4).await;
    let org = seed_org(&app_db, "abandon").await;
    let outer = OrgTx::begin(&app_db, &org.principal).await.unwrap();
    let (_, back) = with_request_tx(outer, async {
        let mut a = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut a, "part kept?").await;
        a.commit().await.unwrap();
        abandon_request_tx().await;
        // After the request is abandoned, a part is a transaction of its own again.
        let mut e = OrgTx::begin(&app_db, &org.principal).await.unwrap();
        insert(&mut e, "part on its own").await;
        e.commit().await.unwrap();
    })
    .await;
    assert!(back.unwrap().is_none(), "nothing to commit");
    assert_eq!(names(&db).await, ["part on its own"]);
}

/// A member whose role changed gets a new session token on their next page, even when the
/// session's idle clock is also due (both write the session's row, in the page's transaction:
/// a second transaction would wait on the first's lock).
#[tokio::test]
async fn a_page_that_rotates_the_session_and_touches_it_answers() {
    let app = TestApp::spawn().await;
    let mut org = crate::support::orgs::org_with_every_role(&app, "rotate").await;
    let slug = org.slug.clone();
    let member_id = org.people["member"].user_id.clone();
    let mut db = app.db.admin_conn().await;
    sqlx::query("UPDATE memberships SET role = 'manager' WHERE user_id = $1::uuid")
        .bind(&member_id)
        .execute(&mut db)
        .await
        .unwrap();
    app.clock.advance(time::Duration::minutes(5));
    let member = &mut org.people.get_mut("member").unwrap().browser;
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), member.get(&format!("/o/{slug}/projects")))
        .await
        .expect("the page answers");
    assert_eq!(res.status(), 200);
    let cookies = clientflow_test_support::browser::set_cookies(&res);
    assert!(cookies.iter().any(|c| c.starts_with("__Host-cf_session=")), "a new session token: {cookies:?}");
}
