//! The audit log: written with the action, append-only for every role, tamper-evident
//! (edited, deleted, reordered, inserted rows and whole-chain rewrites are detected), safe under
//! concurrency, retained with checkpoints, viewable and exportable.

use std::process::Command;

use clientflow::audit::chain::{Signer, verify_org};
use clientflow::platform::ids::OrgId;
use clientflow_test_support::TestApp;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::identity::sign_up;
use crate::tenancy::{create_org, session_token};
use clientflow_test_support::browser::location;

async fn org_id(app: &TestApp, slug: &str) -> OrgId {
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1").bind(slug).fetch_one(&mut db).await.unwrap();
    OrgId::from_uuid(id)
}

/// An organization with a few audited actions.
async fn busy_org(app: &TestApp, name: &str) -> (OrgId, String, clientflow_test_support::browser::Browser) {
    let mut owner = sign_up(app, &format!("owner@{name}.test")).await;
    let slug = create_org(&mut owner, name).await;
    for i in 0..3 {
        let token = session_token(&mut owner).await;
        let res = owner
            .post_with(
                &format!("/o/{slug}/invitations"),
                &[("email", &format!("p{i}@{name}.test")), ("role", "member"), ("client_id", "")],
                Some(&token),
                true,
            )
            .await;
        assert_eq!(res.status(), 303);
    }
    (org_id(app, &slug).await, slug, owner)
}

async fn auditor(app: &TestApp) -> PgConnection {
    app.db.auditor.clone().connect().await.unwrap()
}

async fn verify(app: &TestApp, org: OrgId) -> clientflow::audit::chain::OrgReport {
    let mut conn = auditor(app).await;
    verify_org(&mut conn, org, &[app.state.audit_signer.verifying_key()]).await.unwrap()
}

/// Runs SQL as the superuser with triggers off: what an attacker with the database would do.
async fn tamper(app: &TestApp, sql: &str) {
    let mut db = app.db.admin_conn().await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    for stmt in sql.split(";\n") {
        sqlx::query(stmt).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn actions_are_audited_with_actor_context_and_redacted_snapshots() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "ctx").await;
    let token = session_token(&mut owner).await;
    owner
        .client
        .post(owner.url(&format!("/o/{slug}/settings")))
        .header("origin", owner.base_url.clone())
        .header("user-agent", "AuditTest/1.0")
        .header("x-request-id", "req-audit-1")
        .form(&[
            ("name", "Renamed"),
            ("slug", &slug),
            ("brand_color", "#112233"),
            ("timezone", "Europe/Berlin"),
            ("currency", "EUR"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    let mut db = app.db.admin_conn().await;
    let (actor_type, actor_label, ip, ua, rid, before, after): (
        String,
        String,
        Option<String>,
        String,
        String,
        serde_json::Value,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT actor_type, actor_label, host(ip), user_agent, request_id, before, after FROM audit_events \
             WHERE organization_id = $1 AND action = 'organization.settings_changed'",
    )
    .bind(org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(actor_type, "user");
    assert_eq!(actor_label, "owner@ctx.test");
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ua, "AuditTest/1.0");
    assert_eq!(rid, "req-audit-1");
    assert_eq!(before["name"], "ctx");
    assert_eq!(after["name"], "Renamed");
    assert_eq!(after["timezone"], "Europe/Berlin");
    // The organization's pages show times in its zone.
    let (status, html) = owner.page(&format!("/o/{slug}/audit")).await;
    assert_eq!(status, 200);
    assert!(html.contains("(Europe/Berlin)") && !html.contains(" UTC<"), "{html}");
    // Sign-ins of members reach the organization's log too.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE organization_id = $1 ORDER BY seq")
            .bind(org)
            .fetch_all(&mut db)
            .await
            .unwrap();
    for a in ["organization.created", "member.added", "invitation.created", "organization.settings_changed"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }
    let mut b = app.browser();
    crate::identity::sign_in(&app, &mut b, "owner@ctx.test", crate::identity::PASSWORD).await;
    let mut c = app.browser();
    assert_eq!(crate::identity::sign_in(&app, &mut c, "owner@ctx.test", "wrong wrong wrong").await.status(), 401);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE organization_id = $1 ORDER BY seq")
            .bind(org)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(actions.iter().any(|a| a == "member.signed_in"));
    assert!(actions.iter().any(|a| a == "member.sign_in_failed"));
    // No secret ever enters a snapshot: invitation tokens aren't there.
    let snapshots: Vec<String> =
        sqlx::query_scalar("SELECT coalesce(before::text, '') || coalesce(after::text, '') FROM audit_events")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let hashes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM invitations").fetch_all(&mut db).await.unwrap();
    for s in &snapshots {
        assert!(!s.contains(crate::identity::PASSWORD) && !s.contains("token_hash"), "{s}");
        for h in &hashes {
            assert!(!s.contains(&hex::encode(h)));
        }
    }
    let report = verify(&app, org).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert!(report.events >= 6);
}

#[tokio::test]
async fn the_log_is_append_only_for_every_role() {
    let app = TestApp::spawn().await;
    let (org, _, _) = busy_org(&app, "ro").await;
    // The app role: no privilege at all.
    let mut conn = app.db.app_conn().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await.unwrap();
    for stmt in ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
        let mut sp = tx.begin().await.unwrap();
        let err = sqlx::query(stmt).execute(&mut *sp).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{stmt}: {err}");
        sp.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();
    // The owner and even the superuser: the trigger refuses.
    for mut conn in [app.db.owner_conn().await, app.db.admin_conn().await] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await.unwrap();
        for stmt in ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
            let mut sp = tx.begin().await.unwrap();
            let err = sqlx::query(stmt).execute(&mut *sp).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
            sp.rollback().await.unwrap();
        }
        tx.rollback().await.unwrap();
    }
    // The auditor role reads only.
    let mut conn = auditor(&app).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events").fetch_one(&mut conn).await.unwrap();
    assert!(n > 0, "the auditor reads across organizations");
    let err = sqlx::query("INSERT INTO organizations (id, slug, name) VALUES (gen_random_uuid(), 'x', 'x')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn verify_detects_edited_deleted_reordered_inserted_and_rewritten_events() {
    let app = TestApp::spawn().await;
    let (clean, _, _) = busy_org(&app, "clean").await;
    let (edited, _, _) = busy_org(&app, "edited").await;
    let (deleted, _, _) = busy_org(&app, "deleted").await;
    let (tail, _, _) = busy_org(&app, "tail").await;
    let (reordered, _, _) = busy_org(&app, "reordered").await;
    let (inserted, _, _) = busy_org(&app, "inserted").await;
    let (rewritten, _, _) = busy_org(&app, "rewritten").await;
    for org in [clean, edited, deleted, tail, reordered, inserted, rewritten] {
        assert!(verify(&app, org).await.first_break.is_none());
    }
    tamper(
        &app,
        &format!(
            "UPDATE audit_events SET after = '{{\"email\":\"evil@x\"}}' WHERE organization_id = '{edited}' AND seq = 3"
        ),
    )
    .await;
    tamper(&app, &format!("DELETE FROM audit_events WHERE organization_id = '{deleted}' AND seq = 2")).await;
    tamper(&app, &format!(
        "DELETE FROM audit_events WHERE organization_id = '{tail}' AND seq = (SELECT max(seq) FROM audit_events WHERE organization_id = '{tail}')"
    ))
    .await;
    tamper(
        &app,
        &format!(
            "UPDATE audit_events SET seq = seq + 1000 WHERE organization_id = '{reordered}' AND seq IN (2, 3);\n\
         UPDATE audit_events SET seq = 3 WHERE organization_id = '{reordered}' AND seq = 1002;\n\
         UPDATE audit_events SET seq = 2 WHERE organization_id = '{reordered}' AND seq = 1003"
        ),
    )
    .await;
    tamper(&app, &format!(
        "UPDATE audit_events SET seq = seq + 1000 WHERE organization_id = '{inserted}' AND seq >= 3;\n\
         UPDATE audit_events SET seq = seq - 999 WHERE organization_id = '{inserted}' AND seq >= 1003;\n\
         INSERT INTO audit_events (organization_id, seq, occurred_at, actor_type, actor_id, actor_label, action, target_type, target_id, prev_hash, hash) \
         SELECT organization_id, 3, occurred_at, actor_type, actor_id, actor_label, 'member.added', 'member', 'intruder', hash, hash \
         FROM audit_events WHERE organization_id = '{inserted}' AND seq = 2;\n\
         UPDATE audit_heads SET seq = seq + 1 WHERE organization_id = '{inserted}'"
    ))
    .await;

    // A whole-chain rewrite: recompute every hash consistently after changing an event. Only
    // the signed checkpoint (made with a key the attacker doesn't have) can tell.
    {
        let mut db = app.db.admin_conn().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query(&format!(
            "UPDATE audit_events SET actor_label = 'someone else' WHERE organization_id = '{rewritten}' AND seq = 1"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        let sql = format!(
            "SELECT {} FROM audit_events WHERE organization_id = $1 ORDER BY seq",
            clientflow::audit::STORED_COLUMNS
        );
        let events: Vec<clientflow::audit::StoredEvent> =
            sqlx::query_as(&sql).bind(rewritten).fetch_all(&mut *tx).await.unwrap();
        let mut prev = vec![0u8; 32];
        for e in &events {
            let h = e.recompute(&prev);
            sqlx::query("UPDATE audit_events SET prev_hash = $3, hash = $4 WHERE organization_id = $1 AND seq = $2")
                .bind(rewritten)
                .bind(e.seq)
                .bind(&prev)
                .bind(&h[..])
                .execute(&mut *tx)
                .await
                .unwrap();
            prev = h.to_vec();
        }
        sqlx::query("UPDATE audit_heads SET hash = $2 WHERE organization_id = $1")
            .bind(rewritten)
            .bind(&prev)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let expect = |r: &clientflow::audit::chain::OrgReport, needle: &str| {
        let b = r.first_break.as_ref().unwrap_or_else(|| panic!("no break found, expected {needle:?}"));
        assert!(b.message.contains(needle), "expected {needle:?}, got {:?}", b.message);
    };
    assert!(verify(&app, clean).await.first_break.is_none());
    expect(&verify(&app, edited).await, "event 3 was altered");
    expect(&verify(&app, deleted).await, "events 2..2 are missing");
    expect(&verify(&app, tail).await, "missing (deleted from the end)");
    expect(&verify(&app, reordered).await, "event 2 does not link");
    expect(&verify(&app, inserted).await, "was altered");
    expect(&verify(&app, rewritten).await, "differs from the signed checkpoint");

    // The command line says the same, with a failing exit code and a summary.
    let passwords = clientflow_test_support::role_passwords().await;
    let out = Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .args(["audit", "verify"])
        .env_clear()
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&app.db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", crate::support::url_of(&app.db.auditor, Some(&passwords.auditor)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ok      clean"), "{text}");
    for slug in ["edited", "deleted", "tail", "reordered", "inserted", "rewritten"] {
        assert!(text.contains(&format!("BROKEN  {slug}")), "{slug} not reported:\n{text}");
    }
    assert!(text.contains("6 broken"), "{text}");
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_detected() {
    let app = TestApp::spawn().await;
    let (org, _, _) = busy_org(&app, "forge").await;
    let mut db = app.db.admin_conn().await;
    let (seq, hash): (i64, Vec<u8>) = sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1")
        .bind(org)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let forger = Signer::from_seed(&[7u8; 32]);
    tamper(
        &app,
        &format!(
            "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
             VALUES ('{org}', {seq}, 'signed', '\\x{}', now() + interval '1 second', '{}', '\\x{}') ON CONFLICT DO NOTHING",
            hex::encode(&hash),
            app.state.audit_signer.key_id(),
            hex::encode(forger.sign(org, seq, &hash))
        ),
    )
    .await;
    let report = verify(&app, org).await;
    let b = report.first_break.expect("forged signature accepted");
    assert!(b.message.contains("invalid signature"), "{}", b.message);
}

#[tokio::test]
async fn concurrent_actions_in_one_organization_keep_a_valid_gapless_chain() {
    let app = TestApp::builder().pool_size(12).spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "conc").await;
    let token = session_token(&mut owner).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let client = owner.client.clone();
        let url = owner.url(&format!("/o/{slug}/invitations"));
        let origin = owner.base_url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("origin", origin)
                .form(&[
                    ("email", format!("c{i}@conc.test")),
                    ("role", "member".into()),
                    ("client_id", String::new()),
                    ("csrf_token", token),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 303);
    }
    let mut db = app.db.admin_conn().await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_events WHERE organization_id = $1 ORDER BY seq")
        .bind(org)
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    let report = verify(&app, org).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert!(report.events >= 24);
}

#[tokio::test]
async fn retention_cuts_old_events_and_the_chain_still_verifies() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "ret").await;
    let before: i64 = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE organization_id = $1")
            .bind(org)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    // A year and a bit later, one more action.
    app.clock.advance(time::Duration::days(400));
    // The session expired long ago: sign in again, then act.
    let mut again = app.browser();
    crate::identity::sign_in(&app, &mut again, "owner@ret.test", crate::identity::PASSWORD).await;
    let token = session_token(&mut again).await;
    let res = again
        .post_with(
            &format!("/o/{slug}/invitations"),
            &[("email", "late@ret.test"), ("role", "member"), ("client_id", "")],
            Some(&token),
            true,
        )
        .await;
    assert_eq!(location(&res), format!("/o/{slug}/members"));
    let _ = &mut owner;
    let mut g = app.app_db.global().await.unwrap();
    let cutoff = app.clock.now_utc() - time::Duration::days(365);
    let removed: i64 = sqlx::query_scalar("SELECT audit_apply_retention($1, $2)")
        .bind(org)
        .bind(cutoff)
        .fetch_one(&mut *g)
        .await
        .unwrap();
    g.commit().await.unwrap();
    // Retention also runs by itself when heads are signed; either way nothing older than the
    // cutoff is left, and a checkpoint marks the cut.
    let _ = (removed, before);
    let mut db = app.db.admin_conn().await;
    let old: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE organization_id = $1 AND occurred_at < $2")
            .bind(org)
            .bind(cutoff)
            .fetch_one(&mut db)
            .await
            .unwrap();
    let all: Vec<(i64, String, time::OffsetDateTime)> =
        sqlx::query_as("SELECT seq, action, occurred_at FROM audit_events WHERE organization_id = $1 ORDER BY seq")
            .bind(org)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(old, 0, "cutoff {cutoff}: {all:?}");
    let report = verify(&app, org).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    let cps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'retention'")
            .bind(org)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(cps >= 1);
    // The app role can't use retention on another organization's behalf with a future cutoff
    // to wipe the head: the newest event always stays.
    let mut g = app.app_db.global().await.unwrap();
    sqlx::query("SELECT audit_apply_retention($1, $2)")
        .bind(org)
        .bind(app.clock.now_utc() + time::Duration::days(1))
        .execute(&mut *g)
        .await
        .unwrap();
    g.commit().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE organization_id = $1")
        .bind(org)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(left >= 1);
    assert!(verify(&app, org).await.first_break.is_none());
}

#[tokio::test]
async fn the_viewer_filters_and_the_csv_export_is_neutralized_and_audited() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "view").await;
    let token = session_token(&mut owner).await;
    // A user agent is attacker-controlled text that lands in a cell of its own.
    let res = owner
        .client
        .post(owner.url(&format!("/o/{slug}/settings")))
        .header("origin", owner.base_url.clone())
        .header("user-agent", "=HYPERLINK(\"http://evil\")")
        .form(&[
            ("name", "View"),
            ("slug", &slug),
            ("brand_color", "#112233"),
            ("timezone", "UTC"),
            ("currency", "EUR"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let (status, html) = owner.page(&format!("/o/{slug}/audit?action=invitation")).await;
    assert_eq!(status, 200);
    assert!(html.contains("invitation.created"));
    assert!(!html.contains("organization.settings_changed"));
    let (_, html) = owner.page(&format!("/o/{slug}/audit?actor=nobody")).await;
    assert!(!html.contains("invitation.created"));
    let res = owner.get(&format!("/o/{slug}/audit.csv")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = res.text().await.unwrap();
    assert!(csv.contains("'=HYPERLINK"), "{csv}");
    assert!(!csv.contains(",=HYPERLINK") && !csv.contains("\"=HYPERLINK"), "{csv}");
    let mut db = app.db.admin_conn().await;
    let exported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'audit.exported'",
    )
    .bind(org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(exported, 1);
    // Members can't read the log.
    let mut member = crate::tenancy::invite_and_join(&app, &mut owner, &slug, "m@view.test", "member", None).await;
    assert_eq!(member.get(&format!("/o/{slug}/audit")).await.status(), 403);
    assert_eq!(member.get(&format!("/o/{slug}/audit.csv")).await.status(), 403);
    // Bad filter input is a clear 422, not a 500.
    assert_eq!(owner.get(&format!("/o/{slug}/audit?from=yesterday")).await.status(), 422);
}
