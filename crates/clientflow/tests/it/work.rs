//! The work domain's services: cross-reference attacks, invoices, files, API keys.

use clientflow::access;
use clientflow::access::api_key::{self as keys, NewKey};
use clientflow::audit::Context;
use clientflow::platform::error::DomainError;
use clientflow::work::{Page, files, invoices, projects, tasks};
use clientflow_test_support::TestApp;

use crate::support::seed_org;

fn ctx(app: &TestApp) -> Context {
    Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()))
}

fn field_of(e: &DomainError) -> Option<String> {
    match e {
        DomainError::Invalid(v) => v.first().map(|f| f.field.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn references_never_cross_tenants_or_projects() {
    let app = TestApp::spawn().await;
    let db = &app.app_db;
    let a = seed_org(db, "alpha").await;
    let b = seed_org(db, "bravo").await;
    let c = ctx(&app);

    // A project on another tenant's client.
    let input =
        projects::ProjectInput { name: "x".into(), client_id: Some(b.client.to_string()), ..Default::default() };
    let err = projects::create(db, &c, &a.principal, &input).await.unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("client_id"), "{err:?}");

    // A task in another tenant's project.
    let input = tasks::TaskInput { project_id: b.project.to_string(), title: "x".into(), ..Default::default() };
    let err = tasks::create(db, &c, &a.principal, &input).await.unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("project_id"), "{err:?}");

    // Two projects in A with their boards.
    let p1 =
        projects::create(db, &c, &a.principal, &projects::ProjectInput { name: "One".into(), ..Default::default() })
            .await
            .unwrap();
    let p2 =
        projects::create(db, &c, &a.principal, &projects::ProjectInput { name: "Two".into(), ..Default::default() })
            .await
            .unwrap();
    let cols2 = projects::list_columns(db, &a.principal, p2.id).await.unwrap();
    let task = tasks::create(
        db,
        &c,
        &a.principal,
        &tasks::TaskInput { project_id: p1.id.to_string(), title: "Write".into(), ..Default::default() },
    )
    .await
    .unwrap();
    // Moving the task to another project's column.
    let err = tasks::update(
        db,
        &c,
        &a.principal,
        task.id,
        &tasks::TaskUpdate { column_id: Some(cols2[1].id.to_string()), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("column_id"), "{err:?}");
    // Moving it to another project outright.
    let err = tasks::update(
        db,
        &c,
        &a.principal,
        task.id,
        &tasks::TaskUpdate { project_id: Some(p2.id.to_string()), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("project_id"));
    // A subtask whose parent is in another project.
    let other = tasks::create(
        db,
        &c,
        &a.principal,
        &tasks::TaskInput { project_id: p2.id.to_string(), title: "Other".into(), ..Default::default() },
    )
    .await
    .unwrap();
    let err = tasks::create(
        db,
        &c,
        &a.principal,
        &tasks::TaskInput {
            project_id: p1.id.to_string(),
            parent_id: Some(other.id.to_string()),
            title: "Sub".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("parent_id"));
    // Assigning someone who isn't a member (B's only user doesn't exist in A).
    let mut admin = app.db.admin_conn().await;
    let outsider = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'outsider@example.com')")
        .bind(outsider)
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'member')")
        .bind(b.id)
        .bind(outsider)
        .execute(&mut admin)
        .await
        .unwrap();
    let err = tasks::update(
        db,
        &c,
        &a.principal,
        task.id,
        &tasks::TaskUpdate { assignees: Some(vec![outsider.to_string()]), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("assignees"));
    // A Member of A who is not in the project can't be assigned either.
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'member')")
        .bind(a.id)
        .bind(outsider)
        .execute(&mut admin)
        .await
        .unwrap();
    let err = tasks::update(
        db,
        &c,
        &a.principal,
        task.id,
        &tasks::TaskUpdate { assignees: Some(vec![outsider.to_string()]), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("assignees"));
    projects::add_member(db, &c, &a.principal, p1.id, clientflow::platform::ids::UserId::from_uuid(outsider))
        .await
        .unwrap();
    tasks::update(
        db,
        &c,
        &a.principal,
        task.id,
        &tasks::TaskUpdate { assignees: Some(vec![outsider.to_string()]), ..Default::default() },
    )
    .await
    .unwrap();
    // B's ids are simply not found from A.
    assert!(matches!(tasks::get(db, &b.principal, task.id).await, Err(DomainError::NotFound)));
    assert!(matches!(projects::get(db, &b.principal, p1.id).await, Err(DomainError::NotFound)));
    // The activity log recorded the changes.
    let log = tasks::activity_log(db, &a.principal, task.id).await.unwrap();
    assert!(log.iter().any(|e| e.field == "assignees"));
}

#[tokio::test]
async fn invoices_number_gaplessly_and_freeze_once_sent() {
    let app = TestApp::spawn().await;
    let db = &app.app_db;
    let a = seed_org(db, "inv").await;
    let c = ctx(&app);
    let line =
        |q: i64, p: i64| invoices::LineInput { description: "Work".into(), quantity_milli: q, unit_price_minor: p };
    let input = invoices::InvoiceInput {
        client_id: a.client.to_string(),
        tax_rate_bp: Some(2000),
        lines: Some(vec![line(1500, 10_000), line(1000, 333)]),
        ..Default::default()
    };
    let one = invoices::create(db, &c, &a.principal, &input).await.unwrap();
    assert_eq!(one.number, None);
    assert_eq!(one.subtotal_minor, 15_000 + 333);
    assert_eq!(one.tax_minor, (15_333 * 2000 + 5000) / 10_000);
    assert_eq!(one.total_minor, one.subtotal_minor + one.tax_minor);
    let two = invoices::create(db, &c, &a.principal, &input).await.unwrap();
    let draft = invoices::create(db, &c, &a.principal, &input).await.unwrap();
    let sent2 = invoices::transition(db, &c, &a.principal, two.id, invoices::InvoiceAction::Send).await.unwrap();
    let sent1 = invoices::transition(db, &c, &a.principal, one.id, invoices::InvoiceAction::Send).await.unwrap();
    assert_eq!((sent2.number, sent1.number), (Some(1), Some(2)));
    // Sent invoices don't change and aren't deleted.
    let err = invoices::update(
        db,
        &c,
        &a.principal,
        one.id,
        &invoices::InvoiceUpdate { notes: Some("x".into()), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DomainError::Conflict(_)));
    assert!(matches!(invoices::delete(db, &c, &a.principal, one.id).await, Err(DomainError::Conflict(_))));
    assert!(matches!(
        invoices::transition(db, &c, &a.principal, one.id, invoices::InvoiceAction::Send).await,
        Err(DomainError::Conflict(_))
    ));
    invoices::delete(db, &c, &a.principal, draft.id).await.unwrap();
    // Overdue is computed from the due date.
    app.clock.advance(time::Duration::days(31));
    let (list, _) =
        invoices::list(db, app.clock.now_utc(), &a.principal, &Default::default(), Page { limit: None, offset: None })
            .await
            .unwrap();
    assert!(list.iter().all(|i| i.status == invoices::InvoiceStatus::Overdue), "{list:?}");
    // Another tenant's client can't be billed.
    let b = seed_org(db, "other").await;
    let err = invoices::create(
        db,
        &c,
        &a.principal,
        &invoices::InvoiceInput { client_id: b.client.to_string(), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("client_id"));
}

/// "Today" is the organization's: an invoice is overdue once its due date has passed where
/// the organization is, and an invoice without a date is issued on its local day.
#[tokio::test]
async fn today_is_the_organizations_own_day() {
    use time::macros::{date, datetime};
    let app = TestApp::spawn().await;
    let db = &app.app_db;
    // 20:00 UTC on 1 March: already 2 March in Kiritimati (UTC+14), still 1 March in Pago Pago
    // (UTC-11).
    app.clock.set(datetime!(2026-03-01 20:00 UTC));
    let mut results = Vec::new();
    for (slug, zone) in [("east", "Pacific/Kiritimati"), ("west", "Pacific/Pago_Pago")] {
        let org = seed_org(db, slug).await;
        let mut admin = app.db.admin_conn().await;
        sqlx::query("UPDATE organizations SET timezone = $2 WHERE id = $1")
            .bind(org.id)
            .bind(zone)
            .execute(&mut admin)
            .await
            .unwrap();
        let c = ctx(&app);
        let input = invoices::InvoiceInput {
            client_id: org.client.to_string(),
            issue_date: Some("2026-02-01".into()),
            due_date: Some("2026-03-01".into()),
            lines: Some(vec![invoices::LineInput {
                description: "Work".into(),
                quantity_milli: 1000,
                unit_price_minor: 5000,
            }]),
            ..Default::default()
        };
        let inv = invoices::create(db, &c, &org.principal, &input).await.unwrap();
        let sent = invoices::transition(db, &c, &org.principal, inv.id, invoices::InvoiceAction::Send).await.unwrap();
        let shown = invoices::get(db, app.clock.now_utc(), &org.principal, inv.id).await.unwrap();
        let undated = invoices::InvoiceInput { client_id: org.client.to_string(), ..Default::default() };
        let fresh = invoices::create(db, &c, &org.principal, &undated).await.unwrap();
        results.push((sent.status.to_string(), shown.invoice.status.to_string(), fresh.issue_date));
    }
    assert_eq!(
        results,
        [
            ("overdue".to_string(), "overdue".to_string(), date!(2026 - 03 - 02)),
            ("sent".to_string(), "sent".to_string(), date!(2026 - 03 - 01)),
        ]
    );
}

#[tokio::test]
async fn files_are_encrypted_at_rest_and_type_checked() {
    let app = TestApp::spawn().await;
    let db = &app.app_db;
    let a = seed_org(db, "files").await;
    let c = ctx(&app);
    let secret_text = b"Quarterly numbers: 123456 confidential".to_vec();
    let up = files::Upload {
        project_id: a.project,
        task_id: None,
        name: "../../report.txt",
        bytes: secret_text.clone(),
        shared_with_client: false,
    };
    let meta = files::upload(db, &app.state.storage, &app.state.keys, 1 << 20, &c, &a.principal, up).await.unwrap();
    assert_eq!(meta.name, "report.txt");
    assert_eq!(meta.content_type, "text/plain");
    // On disk: sealed, not the plaintext.
    let on_disk = std::fs::read(app.config.data_dir.join("files").join(format!("{}/{}", a.id, meta.id))).unwrap();
    assert!(!on_disk.windows(10).any(|w| w == &secret_text[..10]));
    let (_, bytes) = files::download(db, &app.state.storage, &app.state.keys, &a.principal, meta.id).await.unwrap();
    assert_eq!(bytes, secret_text);
    // Another tenant can't read it.
    let b = seed_org(db, "spy").await;
    assert!(matches!(
        files::download(db, &app.state.storage, &app.state.keys, &b.principal, meta.id).await,
        Err(DomainError::NotFound)
    ));
    // Executables are refused whatever their name; oversized files too.
    let exe = files::Upload {
        project_id: a.project,
        task_id: None,
        name: "invoice.pdf",
        bytes: vec![0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0, 0xff],
        shared_with_client: false,
    };
    assert!(matches!(
        files::upload(db, &app.state.storage, &app.state.keys, 1 << 20, &c, &a.principal, exe).await,
        Err(DomainError::UnsupportedType(_))
    ));
    let big = files::Upload {
        project_id: a.project,
        task_id: None,
        name: "big.txt",
        bytes: vec![b'a'; 2048],
        shared_with_client: false,
    };
    assert!(matches!(
        files::upload(db, &app.state.storage, &app.state.keys, 1024, &c, &a.principal, big).await,
        Err(DomainError::TooLarge)
    ));
    files::delete(db, &app.state.storage, &c, &a.principal, meta.id).await.unwrap();
    assert!(!app.config.data_dir.join("files").join(format!("{}/{}", a.id, meta.id)).exists());
}

#[tokio::test]
async fn api_keys_are_hashed_scoped_and_fail_identically() {
    let app = TestApp::spawn().await;
    let db = &app.app_db;
    let a = seed_org(db, "keys").await;
    let c = ctx(&app);
    // A key acts for a member: the operator, who is nobody, must name one.
    let err = keys::create(
        db,
        &c,
        &a.principal,
        &NewKey { name: "CI".into(), role: "manager".into(), permissions: None, expires_in_days: None },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("as"));
    let owner: clientflow::platform::ids::UserId =
        crate::support::api::add_member(&app, &a, "owner").await.to_string().parse().unwrap();
    let created = keys::create_for(
        db,
        &c,
        &a.principal,
        owner,
        &NewKey { name: "CI".into(), role: "manager".into(), permissions: None, expires_in_days: Some(1) },
    )
    .await
    .unwrap();
    assert!(created.secret.starts_with("cf_live_"));
    assert!(created.secret.starts_with(&created.key.prefix));
    let now = app.clock.now_utc();
    let p = access::verify_api_key(db, &created.secret, now).await.unwrap().expect("valid key");
    assert_eq!(p.org_id(), a.id);
    assert_eq!(p.api_key_id(), Some(created.key.id));
    // Stored as a digest only.
    let mut admin = app.db.admin_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_one(&mut admin).await.unwrap();
    assert_eq!(stored, clientflow::platform::crypto::sha256(created.secret.as_bytes()).to_vec());
    // Unknown, tampered, expired and revoked keys all give the same answer.
    let mut tampered = created.secret.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_ne!(tampered, created.secret);
    for bad in ["", "cf_live_", "Bearer x", tampered.as_str(), "cf_test_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] {
        assert!(access::verify_api_key(db, bad, now).await.unwrap().is_none(), "{bad}");
    }
    assert!(
        access::verify_api_key(db, &created.secret, now + time::Duration::days(2)).await.unwrap().is_none(),
        "expired"
    );
    keys::revoke(db, &c, &a.principal, created.key.id).await.unwrap();
    assert!(access::verify_api_key(db, &created.secret, now).await.unwrap().is_none(), "revoked");
    // A key can't be given more than its role allows.
    let err = keys::create_for(
        db,
        &c,
        &a.principal,
        owner,
        &NewKey {
            name: "x".into(),
            role: "member".into(),
            permissions: Some(vec!["audit.read".into()]),
            expires_in_days: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("permissions"));
    let err = keys::create_for(
        db,
        &c,
        &a.principal,
        owner,
        &NewKey { name: "x".into(), role: "owner".into(), permissions: None, expires_in_days: None },
    )
    .await
    .unwrap_err();
    assert_eq!(field_of(&err).as_deref(), Some("role"));
    // A key with an explicit subset has exactly that.
    let k = keys::create_for(
        db,
        &c,
        &a.principal,
        owner,
        &NewKey {
            name: "ro".into(),
            role: "manager".into(),
            permissions: Some(vec!["tasks.read".into()]),
            expires_in_days: None,
        },
    )
    .await
    .unwrap();
    let p = access::verify_api_key(db, &k.secret, now).await.unwrap().unwrap();
    assert!(p.can(clientflow::access::role::Permission::TasksRead));
    assert!(!p.can(clientflow::access::role::Permission::TasksCreate));
    // The organization's customization of a role binds its keys too.
    let full = keys::create_for(
        db,
        &c,
        &a.principal,
        owner,
        &NewKey { name: "m".into(), role: "manager".into(), permissions: None, expires_in_days: None },
    )
    .await
    .unwrap();
    let p = access::verify_api_key(db, &full.secret, now).await.unwrap().unwrap();
    assert!(p.can(clientflow::access::role::Permission::ClientsDelete));
    sqlx::query("INSERT INTO role_permissions VALUES ($1, 'manager', 'clients.delete', false)")
        .bind(a.id)
        .execute(&mut admin)
        .await
        .unwrap();
    let p = access::verify_api_key(db, &full.secret, now).await.unwrap().unwrap();
    assert!(!p.can(clientflow::access::role::Permission::ClientsDelete));
}
