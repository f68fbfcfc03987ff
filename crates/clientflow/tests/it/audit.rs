//! The audit log: written with the action, append-only for every role, tamper-evident
//! (edited, deleted, reordered, inserted rows and whole-chain rewrites are detected), safe under
//! concurrency, retained with checkpoints, viewable and exportable.

use std::process::Command;

use clientflow::audit::chain::{CheckpointKind, KnownHead, Signer, Verification, verify_org};
use clientflow::audit::{Context, Entry};
use clientflow::platform::ids::OrgId;
use clientflow_test_support::TestApp;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::support::accounts::sign_up;
use crate::support::orgs::{create_org, session_token};

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
    verify_knowing(app, org, None).await
}

/// Verifies at the app's clock, optionally against a head an earlier verification saw.
async fn verify_knowing(app: &TestApp, org: OrgId, known: Option<&KnownHead>) -> clientflow::audit::chain::OrgReport {
    let mut conn = auditor(app).await;
    let keys = [app.state.audit_signer.verifying_key()];
    verify_org(&mut conn, org, &Verification::new(&keys, app.clock.now_utc()).knowing(known)).await.unwrap()
}

/// Records one event in `org` as the operator `who`, at `at`, the way a privileged action
/// would (the server's signer included).
async fn record_at(app: &TestApp, org: OrgId, who: &str, at: time::OffsetDateTime, entry: Entry) {
    let principal =
        clientflow::access::operator(&app.app_db, &crate::support::operator(), org, who).await.unwrap().unwrap();
    let mut tx = clientflow::access::OrgTx::begin(&app.app_db, &principal).await.unwrap();
    let ctx = Context::system(at, Some(app.state.audit_signer.clone()));
    clientflow::audit::record(&mut tx, &ctx, entry).await.unwrap();
    tx.commit().await.unwrap();
}

/// Runs the `clientflow` binary against the test database; (success, stdout + stderr).
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let passwords = clientflow_test_support::role_passwords().await;
    let out = Command::new(env!("CARGO_BIN_EXE_clientflow"))
        .args(args)
        .env_clear()
        .env("CLIENTFLOW_DATA_DIR", &app.config.data_dir)
        .env("DATABASE_URL", crate::support::url_of(&app.db.app, Some(&passwords.app)))
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", crate::support::url_of(&app.db.owner, Some(&passwords.owner)))
        .env("CLIENTFLOW_DATABASE__AUDITOR_URL", crate::support::url_of(&app.db.auditor, Some(&passwords.auditor)))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Recomputes every hash of `org`'s chain from event `from` on (after an edit), as an attacker
/// with the database but without the signing key would, and moves the head along.
async fn rehash_from(tx: &mut PgConnection, org: OrgId, from: i64) {
    let sql = format!(
        "SELECT {} FROM audit_events WHERE organization_id = $1 AND seq >= $2 ORDER BY seq",
        clientflow::audit::STORED_COLUMNS
    );
    let events: Vec<clientflow::audit::StoredEvent> =
        sqlx::query_as(&sql).bind(org).bind(from).fetch_all(&mut *tx).await.unwrap();
    let mut prev: Vec<u8> = if from == 1 {
        vec![0u8; 32]
    } else {
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE organization_id = $1 AND seq = $2")
            .bind(org)
            .bind(from - 1)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    for e in &events {
        let h = e.recompute(&prev);
        sqlx::query("UPDATE audit_events SET prev_hash = $3, hash = $4 WHERE organization_id = $1 AND seq = $2")
            .bind(org)
            .bind(e.seq)
            .bind(&prev)
            .bind(&h[..])
            .execute(&mut *tx)
            .await
            .unwrap();
        prev = h.to_vec();
    }
    sqlx::query("UPDATE audit_heads SET hash = $2 WHERE organization_id = $1")
        .bind(org)
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .unwrap();
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
    crate::support::accounts::sign_in(&app, &mut b, "owner@ctx.test", crate::support::accounts::PASSWORD).await;
    let mut c = app.browser();
    assert_eq!(
        crate::support::accounts::sign_in(&app, &mut c, "owner@ctx.test", "wrong wrong wrong").await.status(),
        401
    );
    // The failure's events are written by the worker (`identity::requests`).
    app.process_requests().await;
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
        assert!(!s.contains(crate::support::accounts::PASSWORD) && !s.contains("token_hash"), "{s}");
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
        rehash_from(&mut tx, rewritten, 1).await;
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
    let (ok, text) = cli(&app, &["audit", "verify"]).await;
    assert!(!ok, "{text}");
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
    // Signed by another key under the server key's id, for a later moment (a different row
    // from the real checkpoint of this head).
    let forger = Signer::from_seed(&[7u8; 32]);
    let at = clientflow::audit::truncate_to_micros(app.clock.now_utc() + time::Duration::seconds(1));
    sqlx::query("SET session_replication_role = replica").execute(&mut db).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
         VALUES ($1, $2, 'signed', $3, $4, $5, $6) ON CONFLICT (organization_id, seq, kind) \
         DO UPDATE SET created_at = excluded.created_at, signature = excluded.signature",
    )
    .bind(org)
    .bind(seq)
    .bind(&hash)
    .bind(at)
    .bind(app.state.audit_signer.key_id())
    .bind(forger.sign(CheckpointKind::Signed, org, seq, &hash, at))
    .execute(&mut db)
    .await
    .unwrap();
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

/// An app whose clock starts `days` ago (the database's own clock, which retention's horizon
/// uses, stays at the real time).
async fn app_started_days_ago(days: i64) -> TestApp {
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    TestApp::builder().manual_clock(clientflow::platform::clock::ManualClock::new(start)).spawn().await
}

async fn count(app: &TestApp, sql: &str, org: OrgId) -> i64 {
    let mut db = app.db.admin_conn().await;
    sqlx::query_scalar(sql).bind(org).fetch_one(&mut db).await.unwrap()
}

#[tokio::test]
async fn retention_cuts_old_events_with_a_signed_checkpoint_and_the_chain_still_verifies() {
    let app = app_started_days_ago(400).await;
    let (org, _, _) = busy_org(&app, "ret").await;
    let old = count(&app, "SELECT count(*) FROM audit_events WHERE organization_id = $1", org).await;
    assert!(old >= 5);
    // Today, one more action: its append signs the head (the last signature is 400 days old)
    // and applies retention at the database's horizon (365 days).
    app.clock.advance(time::Duration::days(400));
    record_at(&app, org, "retention test", app.clock.now_utc(), Entry::new("test.late", "test", "late")).await;
    let left: Vec<(i64, String)> = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as("SELECT seq, action FROM audit_events WHERE organization_id = $1 ORDER BY seq")
            .bind(org)
            .fetch_all(&mut db)
            .await
            .unwrap()
    };
    // Everything old went except the newest of them? No: the head is the new event, so every
    // old event was removable.
    assert_eq!(left, vec![(old + 1, "test.late".to_string())], "old events were kept");
    let (cut, kind, signature): (i64, String, Option<Vec<u8>>) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as(
            "SELECT seq, kind, signature FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'retention'",
        )
        .bind(org)
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert_eq!((cut, kind.as_str()), (old, "retention"));
    assert_eq!(signature.map(|s| s.len()), Some(64), "the retention checkpoint is signed");
    let report = verify(&app, org).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert_eq!(report.events, 1);
}

#[tokio::test]
async fn tampering_with_a_retention_checkpoint_is_detected() {
    let app = app_started_days_ago(400).await;
    let (moved, _, _) = busy_org(&app, "moved").await;
    let (forged, _, _) = busy_org(&app, "forged").await;
    app.clock.advance(time::Duration::days(400));
    // Two recent events in each, so that the chain has something after the cut to hide.
    for org in [moved, forged] {
        for i in 0..3 {
            let at = app.clock.now_utc() + time::Duration::seconds(i);
            record_at(&app, org, "test", at, Entry::new("test.recent", "test", i)).await;
        }
        assert!(verify(&app, org).await.first_break.is_none());
    }
    let cut =
        count(&app, "SELECT seq FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'retention'", moved).await;
    // Move the cut forward over a recent event as the superuser: delete it and point the
    // checkpoint at it (the hash is right, the signature was made for the old cut).
    tamper(
        &app,
        &format!(
            "DELETE FROM audit_events WHERE organization_id = '{moved}' AND seq = {next};\n\
             UPDATE audit_checkpoints SET seq = {next}, \
               hash = (SELECT prev_hash FROM audit_events WHERE organization_id = '{moved}' AND seq = {after}) \
             WHERE organization_id = '{moved}' AND kind = 'retention'",
            next = cut + 1,
            after = cut + 2
        ),
    )
    .await;
    let b = verify(&app, moved).await.first_break.expect("a moved retention cut went unnoticed");
    assert!(b.message.contains("retention checkpoint at event") && b.message.contains("invalid signature"), "{b:?}");
    // A retention checkpoint added by hand (no signature from the key) to skip events that are
    // still there, or signed by someone else.
    let head = count(&app, "SELECT seq FROM audit_heads WHERE organization_id = $1", forged).await;
    let forger = Signer::from_seed(&[3u8; 32]);
    let mut db = app.db.admin_conn().await;
    let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE organization_id = $1 AND seq = $2")
        .bind(forged)
        .bind(head - 1)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let at = clientflow::audit::truncate_to_micros(app.clock.now_utc());
    sqlx::query(
        "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
         VALUES ($1, $2, 'retention', $3, $4, $5, $6)",
    )
    .bind(forged)
    .bind(head - 1)
    .bind(&hash)
    .bind(at)
    .bind(app.state.audit_signer.key_id())
    .bind(forger.sign(CheckpointKind::Retention, forged, head - 1, &hash, at))
    .execute(&mut db)
    .await
    .unwrap();
    let b = verify(&app, forged).await.first_break.expect("a forged retention checkpoint went unnoticed");
    assert!(b.message.contains("invalid signature"), "{b:?}");
}

#[tokio::test]
async fn no_role_can_delete_young_audit_events_or_move_the_retention_horizon() {
    let app = TestApp::spawn().await;
    let (org, _, _) = busy_org(&app, "attack").await;
    let events = count(&app, "SELECT count(*) FROM audit_events WHERE organization_id = $1", org).await;
    let (head, head_hash): (i64, Vec<u8>) = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1")
            .bind(org)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let young: Vec<u8> = {
        let mut db = app.db.admin_conn().await;
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE organization_id = $1 AND seq = 2")
            .bind(org)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let signer = &app.state.audit_signer;
    let at = clientflow::audit::truncate_to_micros(app.clock.now_utc());
    let now = at.format(&time::format_description::well_known::Rfc3339).unwrap();
    // The app role turns the retention flag on itself, then tries everything.
    let mut conn = app.db.app_conn().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('clientflow.audit_retention', 'on', true)").execute(&mut *tx).await.unwrap();
    let attempts: Vec<(String, &str)> = vec![
        ("DELETE FROM audit_events".into(), "permission denied"),
        ("UPDATE audit_events SET action = 'x'".into(), "permission denied"),
        ("TRUNCATE audit_events".into(), "permission denied"),
        ("DELETE FROM audit_checkpoints".into(), "permission denied"),
        ("UPDATE audit_checkpoints SET seq = seq + 1".into(), "permission denied"),
        ("UPDATE audit_retention_policy SET keep_days = 1".into(), "permission denied"),
        ("DELETE FROM audit_retention_policy".into(), "permission denied"),
        // Retention through the maintenance function, with a cut younger than the horizon…
        (
            format!(
                "SELECT audit_apply_retention('{org}', 2, '\\x{}', '{now}', '{}', '\\x{}')",
                hex::encode(&young),
                signer.key_id(),
                hex::encode(signer.sign(CheckpointKind::Retention, org, 2, &young, at))
            ),
            "only removes events older than",
        ),
        // …at the head…
        (
            format!(
                "SELECT audit_apply_retention('{org}', {head}, '\\x{}', '{now}', 'k', '\\x00')",
                hex::encode(&head_hash)
            ),
            "never removes the chain head",
        ),
        // …or at a made-up hash.
        (
            format!("SELECT audit_apply_retention('{org}', 1, '\\x{}', '{now}', 'k', '\\x00')", "00".repeat(32)),
            "is not an event of this chain",
        ),
        // A retention checkpoint written directly, to make the verifier skip events.
        (
            format!(
                "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
                 VALUES ('{org}', {}, 'retention', '\\x{}', now(), 'k', '\\x00')",
                head - 1,
                "00".repeat(32)
            ),
            "row-level security",
        ),
    ];
    for (stmt, expected) in &attempts {
        let mut sp = tx.begin().await.unwrap();
        let err = sqlx::query(stmt).execute(&mut *sp).await.expect_err(stmt);
        assert!(err.to_string().contains(expected), "{stmt}: {err}");
        sp.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();
    // The owner role (what the maintenance function runs as), flag on: young events and
    // checkpoints still can't go.
    let mut conn = app.db.owner_conn().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('clientflow.audit_retention', 'on', true)").execute(&mut *tx).await.unwrap();
    for stmt in ["DELETE FROM audit_events WHERE seq = 1", "DELETE FROM audit_checkpoints", "TRUNCATE audit_events"] {
        let mut sp = tx.begin().await.unwrap();
        let err = sqlx::query(stmt).execute(&mut *sp).await.expect_err(stmt);
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
        sp.rollback().await.unwrap();
    }
    tx.rollback().await.unwrap();
    assert_eq!(count(&app, "SELECT count(*) FROM audit_events WHERE organization_id = $1", org).await, events);
    assert!(verify(&app, org).await.first_break.is_none());
}

#[tokio::test]
async fn a_rewritten_chain_whose_signed_checkpoints_were_deleted_fails_verification() {
    let app = TestApp::spawn().await;
    let (wiped, wiped_slug, _) = busy_org(&app, "wiped").await;
    let (truncated, _, _) = busy_org(&app, "truncated").await;
    let (fine, _, _) = busy_org(&app, "fine").await;
    // Half an hour later more happens (not signed yet: the last signature is recent); an hour
    // after that the sweep signs the quiet heads, as `serve` and `worker` do.
    app.clock.advance(time::Duration::minutes(30));
    for org in [wiped, truncated, fine] {
        for i in 0..3 {
            record_at(&app, org, "test", app.clock.now_utc(), Entry::new("test.later", "test", i)).await;
        }
    }
    app.clock.advance(time::Duration::minutes(61));
    let signed =
        clientflow::access::maintenance::sign_due_heads(&app.app_db, &app.state.audit_signer, app.clock.now_utc())
            .await
            .unwrap();
    assert_eq!(signed.len(), 3, "{signed:?}");
    for org in [wiped, truncated, fine] {
        let r = verify(&app, org).await;
        assert!(r.first_break.is_none(), "{:?}", r.first_break);
        assert_eq!(r.signed_checkpoints, 2);
    }
    // Attack 1: edit the first event, recompute every hash, delete every signed checkpoint.
    {
        let mut db = app.db.admin_conn().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE audit_events SET actor_label = 'someone else' WHERE organization_id = $1 AND seq = 1")
            .bind(wiped)
            .execute(&mut *tx)
            .await
            .unwrap();
        rehash_from(&mut tx, wiped, 1).await;
        sqlx::query("DELETE FROM audit_checkpoints WHERE organization_id = $1")
            .bind(wiped)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    // Attack 2: keep the first (old) signed checkpoint, rewrite what came after it and delete
    // the newer signed checkpoint that would tell.
    {
        let first_signed =
            count(&app, "SELECT min(seq) FROM audit_checkpoints WHERE organization_id = $1", truncated).await;
        let mut db = app.db.admin_conn().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE audit_events SET target_id = 'nothing to see' WHERE organization_id = $1 AND seq = $2")
            .bind(truncated)
            .bind(first_signed + 1)
            .execute(&mut *tx)
            .await
            .unwrap();
        rehash_from(&mut tx, truncated, first_signed + 1).await;
        sqlx::query("DELETE FROM audit_checkpoints WHERE organization_id = $1 AND seq > $2")
            .bind(truncated)
            .bind(first_signed)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let b = verify(&app, wiped).await.first_break.expect("a rewrite without checkpoints went unnoticed");
    assert!(b.message.contains("no valid signed checkpoint"), "{b:?}");
    let b = verify(&app, truncated).await.first_break.expect("deleting the newer checkpoint went unnoticed");
    assert!(b.message.contains("not covered by a signed checkpoint"), "{b:?}");
    assert!(verify(&app, fine).await.first_break.is_none());
    // The command line reports it with a clear message and fails (it verifies at the real
    // time, which the test's clock is ahead of: the truncated chain is judged above).
    let (ok, text) = cli(&app, &["audit", "verify"]).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("BROKEN  {wiped_slug}")) && text.contains("signed checkpoints were deleted"),
        "{text}"
    );
    assert!(text.contains("ok      fine"), "{text}");
}

#[tokio::test]
async fn a_chain_cut_back_to_an_older_head_is_caught_by_the_verify_state() {
    let app = TestApp::spawn().await;
    let (org, slug, _) = busy_org(&app, "cutback").await;
    let state = app.config.data_dir.join("verify-state.json");
    let state_arg = state.to_str().unwrap().to_string();
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug, "--state", &state_arg]).await;
    assert!(ok, "{text}");
    let seen: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let known: KnownHead = seen[&org.to_string()].parse().unwrap();
    let report = verify(&app, org).await;
    assert_eq!(Some(&known), report.head.as_ref());
    // The superuser cuts the chain back to its first (signed) event, with the head to match:
    // every remaining link and signature is genuine.
    tamper(
        &app,
        &format!(
            "DELETE FROM audit_events WHERE organization_id = '{org}' AND seq > 1;\n\
             UPDATE audit_heads SET seq = 1, hash = (SELECT hash FROM audit_events WHERE organization_id = '{org}' AND seq = 1) \
             WHERE organization_id = '{org}'"
        ),
    )
    .await;
    assert!(verify(&app, org).await.first_break.is_none(), "without history, a cut-back chain looks whole");
    let b = verify_knowing(&app, org, Some(&known)).await.first_break.expect("cut back unnoticed");
    assert!(b.message.contains(&format!("an earlier verification saw event {}", known.seq)), "{b:?}");
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug, "--state", &state_arg]).await;
    assert!(!ok && text.contains("BROKEN  cutback") && text.contains("chain now ends at event 1"), "{text}");
    // The same through --expect-head, and the state keeps the old head after a failure.
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug, "--expect-head", &known.to_string()]).await;
    assert!(!ok && text.contains("an earlier verification saw"), "{text}");
    let after: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(after, seen);
    // Nonsense is refused clearly.
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug, "--expect-head", "12:zz"]).await;
    assert!(!ok && text.contains("--expect-head") && text.contains("SEQ:HASH"), "{text}");
}

#[tokio::test]
async fn quiet_chains_are_signed_by_the_sweep_and_on_demand_by_the_checkpoint_command() {
    let app = TestApp::spawn().await;
    let (quiet, slug, _) = busy_org(&app, "quiet").await;
    let (busy, _, _) = busy_org(&app, "busy").await;
    let signed_seqs = |org: OrgId| {
        let app = &app;
        async move {
            let mut db = app.db.admin_conn().await;
            let v: Vec<i64> = sqlx::query_scalar(
                "SELECT seq FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'signed' ORDER BY seq",
            )
            .bind(org)
            .fetch_all(&mut db)
            .await
            .unwrap();
            v
        }
    };
    let head = |org: OrgId| count(&app, "SELECT seq FROM audit_heads WHERE organization_id = $1", org);
    // The first event of a chain is signed when it is written; the rest of the first hour is not.
    assert_eq!(signed_seqs(quiet).await, vec![1]);
    assert!(head(quiet).await > 1);
    // Within the hour the sweep leaves it alone.
    app.clock.advance(time::Duration::minutes(20));
    let sweep =
        || clientflow::access::maintenance::sign_due_heads(&app.app_db, &app.state.audit_signer, app.clock.now_utc());
    assert!(sweep().await.unwrap().is_empty());
    // The on-demand command signs now.
    let (ok, text) = cli(&app, &["audit", "checkpoint", "--org", &slug]).await;
    assert!(ok, "{text}");
    let quiet_head = head(quiet).await;
    assert!(text.contains(&format!("signed  {slug}: head at event {quiet_head}")), "{text}");
    assert_eq!(signed_seqs(quiet).await, vec![1, quiet_head]);
    let report = verify(&app, quiet).await;
    assert!(report.first_break.is_none(), "{:?}", report.first_break);
    assert_eq!(report.newest_signed.map(|(s, _)| s), Some(quiet_head));
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug]).await;
    assert!(ok && text.contains("2 signed checkpoints"), "{text}");
    // An hour and a bit later, the sweep signs the chain whose tail is unsigned, and only it.
    app.clock.advance(time::Duration::minutes(50));
    assert_eq!(sweep().await.unwrap(), vec![busy]);
    assert_eq!(signed_seqs(busy).await, vec![1, head(busy).await]);
    assert!(sweep().await.unwrap().is_empty(), "nothing is signed twice");
    // Had it not, verification would say so once the tail is older than the rule allows.
    let (unswept, _, _) = busy_org(&app, "unswept").await;
    record_at(&app, unswept, "test", app.clock.now_utc() + time::Duration::minutes(1), Entry::new("t", "t", 1)).await;
    app.clock.advance(time::Duration::minutes(79));
    assert!(verify(&app, unswept).await.first_break.is_none(), "within the allowance");
    app.clock.advance(time::Duration::minutes(3));
    let b = verify(&app, unswept).await.first_break.expect("an unsigned tail past the allowance");
    assert!(b.message.contains("not covered by a signed checkpoint"), "{b:?}");
}

/// (seq, action, target) of the entries of an audit viewer page, in page order: each entry's
/// header is `<strong>action</strong> <span>target</span> <span class="muted">by … · #seq</span>`.
fn viewer_rows(html: &str) -> Vec<(i64, String, String)> {
    html.split("<article class=\"audit-entry\">")
        .skip(1)
        .map(|entry| {
            let header = entry.split("</header>").next().expect("an entry header");
            let between = |from: &str, to: &str| {
                let start = header.find(from).unwrap_or_else(|| panic!("{from} in {header}")) + from.len();
                header[start..].split(to).next().unwrap().to_string()
            };
            let seq = header.rsplit(" · #").next().unwrap().split('<').next().unwrap();
            (seq.parse().expect("seq"), between("<strong>", "</strong>"), between("<span>", "</span>"))
        })
        .collect()
}

/// The "Older" link of a viewer page, unescaped.
fn older_link(html: &str) -> Option<String> {
    let end = html.find("\">Older</a>")?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    let mut link = html[start..end].to_string();
    for (escaped, plain) in [("&amp;", "&"), ("&#38;", "&"), ("&#x26;", "&"), ("&#61;", "="), ("&#x3D;", "=")] {
        link = link.replace(escaped, plain);
    }
    Some(link)
}

/// A minimal RFC 4180 reader (quoted cells may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            // Part of a CRLF terminator (a cell holding a carriage return is quoted).
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

fn day(y: i32, m: u8, d: u8) -> time::OffsetDateTime {
    time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
        .unwrap()
        .with_hms(12, 0, 0)
        .unwrap()
        .assume_utc()
}

#[tokio::test]
async fn each_viewer_filter_narrows_the_log_to_matching_events() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "filters").await;
    for (who, action, target_type, target_id, at) in [
        ("alice", "client.created", "client", "c-1", day(2021, 3, 1)),
        ("bob", "client.deleted", "client", "c-2", day(2021, 3, 5)),
        ("alice", "project.created", "project", "p-1", day(2021, 3, 10)),
    ] {
        record_at(&app, org, who, at, Entry::new(action, target_type, target_id)).await;
    }
    let actions = |rows: Vec<(i64, String, String)>| {
        let mut v: Vec<String> = rows.into_iter().map(|r| r.1).collect();
        v.sort();
        v
    };
    let mut page = async |query: &str| {
        let (status, html) = owner.page(&format!("/o/{slug}/audit?{query}")).await;
        assert_eq!(status, 200, "{query}: {html}");
        actions(viewer_rows(&html))
    };
    let everything = page("").await;
    assert!(everything.len() >= 8, "{everything:?}");
    assert!(everything.contains(&"invitation.created".to_string()));
    // Actor: by label, case-insensitively, as a substring.
    assert_eq!(page("actor=ALICE").await, ["client.created", "project.created"]);
    assert_eq!(page("actor=operator%3A+bob").await, ["client.deleted"]);
    assert_eq!(page("actor=owner%40filters.test").await.len(), everything.len() - 3);
    assert!(page("actor=nobody").await.is_empty());
    // Action: exactly, or everything under a prefix.
    assert_eq!(page("action=client").await, ["client.created", "client.deleted"]);
    assert_eq!(page("action=client.deleted").await, ["client.deleted"]);
    assert!(page("action=client.del").await.is_empty(), "a prefix must end at a dot");
    // Target: by id or by type.
    assert_eq!(page("target=c-2").await, ["client.deleted"]);
    assert_eq!(page("target=project").await, ["project.created"]);
    // Dates: whole days, both ends included.
    assert_eq!(page("from=2021-03-04&to=2021-03-09").await, ["client.deleted"]);
    assert_eq!(page("from=2021-03-05&to=2021-03-05").await, ["client.deleted"]);
    assert_eq!(page("to=2021-03-05").await, ["client.created", "client.deleted"]);
    assert_eq!(page("from=2021-03-06&to=2021-12-31").await, ["project.created"]);
    // Filters combine.
    assert_eq!(page("actor=alice&action=client").await, ["client.created"]);
    assert!(page("actor=alice&from=2021-03-02&to=2021-03-09").await.is_empty());
    // Bad dates are a clear 422, not a 500.
    for bad in ["from=yesterday", "to=2021-02-30", "from=2021-13-01"] {
        let res = owner.get(&format!("/o/{slug}/audit?{bad}")).await;
        assert_eq!(res.status(), 422, "{bad}");
    }
}

#[tokio::test]
async fn the_viewer_pages_through_the_whole_log_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "pages").await;
    for i in 0..120 {
        record_at(&app, org, "bulk", app.clock.now_utc(), Entry::new("bulk.event", "item", i)).await;
    }
    let mut url = format!("/o/{slug}/audit?action=bulk.event");
    let (mut sizes, mut seqs, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for page in 0.. {
        assert!(page < 5, "pagination doesn't end");
        let (status, html) = owner.page(&url).await;
        assert_eq!(status, 200);
        let rows = viewer_rows(&html);
        sizes.push(rows.len());
        assert!(rows.iter().all(|r| r.1 == "bulk.event"), "the filter holds on every page");
        seqs.extend(rows.iter().map(|r| r.0));
        targets.extend(rows.into_iter().map(|r| r.2));
        assert_eq!(html.contains(">Newer</a>"), page > 0, "{url}: {}", &html[html.find("<p>").unwrap_or(0)..]);
        match older_link(&html) {
            Some(next) => {
                assert!(next.contains("action=bulk.event"), "{next}");
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(sizes, [50, 50, 20]);
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats: {seqs:?}");
    let mut ids: Vec<i64> = targets.iter().map(|t| t.trim_start_matches("item ").parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (0..120).collect::<Vec<_>>(), "every event exactly once");
}

#[tokio::test]
async fn the_csv_export_neutralizes_formula_cells_and_is_itself_audited() {
    let app = TestApp::spawn().await;
    let (org, slug, mut owner) = busy_org(&app, "csv").await;
    let token = session_token(&mut owner).await;
    // A user agent is attacker-controlled text that lands in a cell of its own.
    let res = owner
        .client
        .post(owner.url(&format!("/o/{slug}/settings")))
        .header("origin", owner.base_url.clone())
        .header("user-agent", "=HYPERLINK(\"http://evil\")")
        .form(&[
            ("name", "Csv"),
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
    let dangerous = ["=1+1", "+SUM(A1:A9)", "-2+3", "@cmd", "\tindented", "\rreturn"];
    for target in dangerous {
        record_at(&app, org, "importer", app.clock.now_utc(), Entry::new("formula.test", "cell", target)).await;
    }
    let exported = || {
        count(&app, "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'audit.exported'", org)
    };
    assert_eq!(exported().await, 0);

    let res = owner.get(&format!("/o/{slug}/audit.csv")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(res.headers()["content-disposition"].to_str().unwrap().contains(&format!("audit-{slug}.csv")));
    let rows = parse_csv(&res.text().await.unwrap());
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let data = &rows[1..];
    for row in data {
        assert_eq!(row.len(), header.len(), "{row:?}");
        for cell in row {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "live formula cell {cell:?} in {row:?}");
        }
    }
    let targets: Vec<&str> = data.iter().map(|r| r[col("target_id")].as_str()).collect();
    for target in dangerous {
        assert!(targets.contains(&format!("'{target}").as_str()), "{target:?} not neutralized: {targets:?}");
    }
    assert!(data.iter().any(|r| r[col("user_agent")] == "'=HYPERLINK(\"http://evil\")"));
    // Harmless cells are left as they are.
    assert!(data.iter().any(|r| r[col("action")] == "invitation.created"));
    // The export is audited, with the filter and the number of rows, under the owner.
    assert_eq!(exported().await, 1);
    let res = owner.get(&format!("/o/{slug}/audit.csv?action=formula.test")).await;
    let filtered = parse_csv(&res.text().await.unwrap());
    assert_eq!(filtered.len() - 1, dangerous.len());
    assert_eq!(exported().await, 2);
    let mut db = app.db.admin_conn().await;
    let (label, after): (String, serde_json::Value) = sqlx::query_as(
        "SELECT actor_label, after FROM audit_events WHERE organization_id = $1 AND action = 'audit.exported' \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(org)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(label, "owner@csv.test");
    assert_eq!(after["rows"], dangerous.len());
    assert_eq!(after["filter"]["action"], "formula.test");
    assert!(verify(&app, org).await.first_break.is_none());
}

#[tokio::test]
async fn only_owners_and_admins_read_the_log_and_other_organizations_get_not_found() {
    let app = TestApp::spawn().await;
    let mut org = crate::support::orgs::org_with_every_role(&app, "roles").await;
    let mut other = crate::support::orgs::org_with_every_role(&app, "other").await;
    let id = OrgId::from_uuid(org.id.parse().unwrap());
    let slug = org.slug.clone();
    let exported = || {
        count(&app, "SELECT count(*) FROM audit_events WHERE organization_id = $1 AND action = 'audit.exported'", id)
    };
    for role in ["owner", "admin"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(b.get(&format!("/o/{slug}/audit")).await.status(), 200, "{role}");
        assert_eq!(b.get(&format!("/o/{slug}/audit.csv")).await.status(), 200, "{role}");
    }
    assert_eq!(exported().await, 2);
    for role in ["manager", "member"] {
        let b = &mut org.people.get_mut(role).unwrap().browser;
        assert_eq!(b.get(&format!("/o/{slug}/audit")).await.status(), 403, "{role}");
        assert_eq!(b.get(&format!("/o/{slug}/audit.csv")).await.status(), 403, "{role}");
        assert_eq!(b.get(&format!("/o/{slug}/audit?action=member")).await.status(), 403, "{role}");
    }
    // The Owner of another organization: not found, whatever the query.
    let b = &mut other.people.get_mut("owner").unwrap().browser;
    for path in [format!("/o/{slug}/audit"), format!("/o/{slug}/audit.csv"), format!("/o/{slug}/audit.csv?actor=owner")]
    {
        assert_eq!(b.get(&path).await.status(), 404, "{path}");
    }
    // Refused requests export nothing, so nothing was audited either.
    assert_eq!(exported().await, 2);
}

/// Whoever holds the server can replace its signing key, rewrite a whole chain and re-sign
/// every checkpoint with the new key: every link and every signature is then genuine for the
/// key the server holds. Only a verifier that trusts nothing but the public key it kept
/// elsewhere (`--trust-only --public-key`) catches it, naming the key it does not trust.
#[tokio::test]
async fn a_chain_re_signed_with_a_substituted_key_fails_pinned_verification() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let (org, slug, _) = busy_org(&app, "pinned").await;
    // The key to pin, as the documented command prints it.
    let (ok, printed) = cli(&app, &["audit", "public-key"]).await;
    assert!(ok, "{printed}");
    let original = printed.trim().to_string();
    let server_key = app.state.audit_signer.verifying_key();
    assert_eq!(original, base64::engine::general_purpose::STANDARD.encode(server_key.as_bytes()));
    let pinned = ["audit", "verify", "--org", &slug, "--trust-only", "--public-key", &original];
    let (ok, text) = cli(&app, &pinned).await;
    assert!(ok && text.contains("ok      pinned"), "the genuine chain must verify pinned:\n{text}");

    // The attack: a new key on the server, the first event edited, every hash recomputed and
    // every checkpoint re-signed with the new key.
    let substitute = Signer::from_seed(&[42u8; 32]);
    std::fs::write(
        app.config.data_dir.join("secrets/audit-signing.key"),
        base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
    )
    .unwrap();
    {
        let mut db = app.db.admin_conn().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE audit_events SET actor_label = 'someone else' WHERE organization_id = $1 AND seq = 1")
            .bind(org)
            .execute(&mut *tx)
            .await
            .unwrap();
        rehash_from(&mut tx, org, 1).await;
        let checkpoints: Vec<(i64, String, time::OffsetDateTime)> =
            sqlx::query_as("SELECT seq, kind, created_at FROM audit_checkpoints WHERE organization_id = $1")
                .bind(org)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert!(!checkpoints.is_empty());
        for (seq, kind, at) in checkpoints {
            assert_eq!(kind, "signed");
            let hash: Vec<u8> =
                sqlx::query_scalar("SELECT hash FROM audit_events WHERE organization_id = $1 AND seq = $2")
                    .bind(org)
                    .bind(seq)
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            sqlx::query(
                "UPDATE audit_checkpoints SET hash = $3, key_id = $4, signature = $5 \
                 WHERE organization_id = $1 AND seq = $2 AND kind = 'signed'",
            )
            .bind(org)
            .bind(seq)
            .bind(&hash)
            .bind(substitute.key_id())
            .bind(substitute.sign(CheckpointKind::Signed, org, seq, &hash, at))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // Trusting the server's key, the rewritten chain looks whole — even with the original
    // public key passed, since it is only added to the keys trusted.
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug]).await;
    assert!(ok && text.contains("ok      pinned"), "{text}");
    let (ok, text) = cli(&app, &["audit", "verify", "--org", &slug, "--public-key", &original]).await;
    assert!(ok && text.contains("ok      pinned"), "{text}");
    // Pinned, it fails and names the key it does not trust.
    let (ok, text) = cli(&app, &pinned).await;
    assert!(!ok, "a chain re-signed with a substituted key passed pinned verification:\n{text}");
    assert!(text.contains("BROKEN  pinned"), "{text}");
    assert!(
        text.contains(&format!("signed with key {}, which is not a trusted key", substitute.key_id())),
        "the untrusted key is not named:\n{text}"
    );
    assert!(text.contains(&format!("trusting only the given keys: {}", app.state.audit_signer.key_id())), "{text}");

    // Pinning needs a key to pin, and never reads or creates the server's key.
    let (ok, text) = cli(&app, &["audit", "verify", "--trust-only"]).await;
    assert!(!ok && text.contains("--public-key"), "{text}");
    std::fs::remove_file(app.config.data_dir.join("secrets/audit-signing.key")).unwrap();
    let (ok, text) = cli(&app, &pinned).await;
    assert!(!ok && text.contains("not a trusted key"), "{text}");
    assert!(
        !app.config.data_dir.join("secrets/audit-signing.key").exists(),
        "pinned verification generated a signing key"
    );
    let (ok, text) = cli(&app, &["audit", "verify", "--trust-only", "--public-key", "bm90IGEga2V5"]).await;
    assert!(!ok && text.contains("is not an Ed25519 public key"), "{text}");
}
