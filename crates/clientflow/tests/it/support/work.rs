//! The work domain: fixtures and activity.

use crate::support::api::ctx;
use crate::support::orgs::Org;
use clientflow::access;
use clientflow::access::api_key::{self as keys, NewKey};
use clientflow::platform::ids::{ClientId, OrgId, ProjectId, UserId};
use clientflow::work::{clients, files, invoices, projects, tasks};
use clientflow_test_support::TestApp;

/// An entity of `org` for the path parameter `name` (nested in the parent named earlier in
/// the path, when there is one), created through the services as the operator; `None` for a
/// parameter these pages don't introduce.
pub async fn fixture(app: &TestApp, org: &Org, name: &str, earlier: &[(String, String)]) -> Option<String> {
    let db = &app.app_db;
    let org_id: OrgId = org.id.parse().unwrap();
    let op =
        access::operator(db, &crate::support::operator(), org_id, "permission matrix fixture").await.unwrap().unwrap();
    let c = ctx(app);
    Some(match name {
        "client" => {
            // With a project the organization's Member belongs to: Members see only the
            // clients of their projects.
            let input = clients::ClientInput { name: "Fixture client".into(), ..Default::default() };
            let client = clients::create(db, &c, &op, &input).await.unwrap().id;
            let input = projects::ProjectInput {
                name: "Fixture client's project".into(),
                client_id: Some(client.to_string()),
                ..Default::default()
            };
            let project = projects::create(db, &c, &op, &input).await.unwrap();
            let member: UserId = org.people["member"].user_id.parse().unwrap();
            projects::add_member(db, &c, &op, project.id, member).await.unwrap();
            client.to_string()
        }
        "billed_client" => {
            // A client with a billing email, whom statements are mailed to.
            let input = clients::ClientInput {
                name: "Billed client".into(),
                email: Some("billing@billed.test".into()),
                ..Default::default()
            };
            clients::create(db, &c, &op, &input).await.unwrap().id.to_string()
        }
        "contact" => {
            let client = match earlier_value::<ClientId>(earlier, "client") {
                Some(client) => client,
                None => {
                    let input = clients::ClientInput { name: "Fixture client".into(), ..Default::default() };
                    clients::create(db, &c, &op, &input).await.unwrap().id
                }
            };
            let input = clients::ContactInput { name: Some("Fixture contact".into()), ..Default::default() };
            clients::add_contact(db, &app.state.keys, &c, &op, client, &input).await.unwrap().id.to_string()
        }
        "project" => fixture_project(app, org, &op).await.to_string(),
        "user" => {
            let project = parent_project(app, org, &op, earlier).await;
            let user = uuid::Uuid::now_v7();
            let mut admin = app.db.admin_conn().await;
            sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
                .bind(user)
                .bind(format!("project-member-{user}@example.com"))
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'member')")
                .bind(org_id.as_uuid())
                .bind(user)
                .execute(&mut admin)
                .await
                .unwrap();
            projects::add_member(db, &c, &op, project, UserId::from_uuid(user)).await.unwrap();
            user.to_string()
        }
        "column" => {
            let project = parent_project(app, org, &op, earlier).await;
            projects::add_column(db, &c, &op, project, "Fixture column").await.unwrap().id.to_string()
        }
        "task" => {
            let project = parent_project(app, org, &op, earlier).await;
            fixture_task(app, &op, project).await.to_string()
        }
        "comment" => {
            let task = match earlier_value::<clientflow::platform::ids::TaskId>(earlier, "task") {
                Some(t) => t,
                None => fixture_task(app, &op, parent_project(app, org, &op, earlier).await).await,
            };
            let input = tasks::CommentInput { body: "Fixture comment".into(), client_visible: Some(true) };
            let id = tasks::add_comment(db, &c, &op, task, &input).await.unwrap().id;
            // Written by the organization's Member, who may delete their own comments.
            let member: uuid::Uuid = org.people["member"].user_id.parse().unwrap();
            let mut admin = app.db.admin_conn().await;
            sqlx::query("UPDATE comments SET author_id = $2 WHERE id = $1")
                .bind(id)
                .bind(member)
                .execute(&mut admin)
                .await
                .unwrap();
            id.to_string()
        }
        "entry" => {
            // Recorded by the organization's Member, who may delete their own entries.
            let project = parent_project(app, org, &op, earlier).await;
            let id = uuid::Uuid::now_v7();
            let member: uuid::Uuid = org.people["member"].user_id.parse().unwrap();
            let mut admin = app.db.admin_conn().await;
            sqlx::query(
                "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, created_at) \
                 VALUES ($1, $2, $3, $4, 30, current_date, now())",
            )
            .bind(org_id.as_uuid())
            .bind(id)
            .bind(project.as_uuid())
            .bind(member)
            .execute(&mut admin)
            .await
            .unwrap();
            id.to_string()
        }
        "expense" => {
            // Recorded by the organization's Member, who may delete their own expenses.
            let project = parent_project(app, org, &op, earlier).await;
            let member: uuid::Uuid = org.people["member"].user_id.parse().unwrap();
            insert_expense(app, org_id, project, member).await.to_string()
        }
        "invoice" => {
            // Sent, to the portal's client: the portal shows it, and internal pages may act on it.
            let input = invoices::InvoiceInput {
                client_id: org.client_id.clone(),
                lines: Some(vec![invoices::LineInput {
                    description: "Fixture work".into(),
                    quantity_milli: 1000,
                    unit_price_minor: 10_000,
                }]),
                ..Default::default()
            };
            let inv = invoices::create(db, &c, &op, &input).await.unwrap();
            invoices::transition(db, &c, &op, inv.id, invoices::InvoiceAction::Send).await.unwrap();
            // The client's billing contact, whom sending and reminders mail.
            let mut admin = app.db.admin_conn().await;
            sqlx::query("UPDATE clients SET email = 'billing@fixture.test' WHERE id = $1::uuid AND email IS NULL")
                .bind(&org.client_id)
                .execute(&mut admin)
                .await
                .unwrap();
            inv.id.to_string()
        }
        "payment" => {
            // 10.00 paid on the sent invoice (the route's own, else a new one).
            let invoice = match earlier_value::<clientflow::platform::ids::InvoiceId>(earlier, "invoice") {
                Some(i) => i,
                None => Box::pin(fixture(app, org, "invoice", earlier)).await.unwrap().parse().unwrap(),
            };
            let new = clientflow::work::invoice_payments::NewPayment {
                amount: Some(1_000),
                paid_on: None,
                note: "Fixture payment".into(),
            };
            let (payment, _) =
                clientflow::work::invoice_payments::record(db, &c, &op, invoice, &new, "amount").await.unwrap();
            payment.id.to_string()
        }
        "draft_invoice" => {
            // A draft, to the portal's client: the only state that may still be edited, sent or deleted.
            let input = invoices::InvoiceInput {
                client_id: org.client_id.clone(),
                lines: Some(vec![invoices::LineInput {
                    description: "Fixture draft".into(),
                    quantity_milli: 1000,
                    unit_price_minor: 5_000,
                }]),
                ..Default::default()
            };
            invoices::create(db, &c, &op, &input).await.unwrap().id.to_string()
        }
        "repeated_invoice" => {
            // A draft to the portal's client that repeats every month from its default day.
            let input = invoices::InvoiceInput {
                client_id: org.client_id.clone(),
                lines: Some(vec![invoices::LineInput {
                    description: "Fixture retainer".into(),
                    quantity_milli: 1000,
                    unit_price_minor: 7_000,
                }]),
                ..Default::default()
            };
            let inv = invoices::create(db, &c, &op, &input).await.unwrap();
            clientflow::work::repeats::create(db, &c, &op, inv.id, &Default::default()).await.unwrap();
            inv.id.to_string()
        }
        "draft_invoice_with_time" => {
            // A draft to the portal's client, whose project has an hour of billable, unbilled time.
            let project = fixture_project(app, org, &op).await;
            let member: uuid::Uuid = org.people["member"].user_id.parse().unwrap();
            let mut admin = app.db.admin_conn().await;
            sqlx::query(
                "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, created_at, billable, rate_minor) \
                 VALUES ($1, $2, $3, $4, 60, current_date, now(), true, 9000)",
            )
            .bind(org_id.as_uuid())
            .bind(uuid::Uuid::now_v7())
            .bind(project.as_uuid())
            .bind(member)
            .execute(&mut admin)
            .await
            .unwrap();
            let input = invoices::InvoiceInput { client_id: org.client_id.clone(), ..Default::default() };
            invoices::create(db, &c, &op, &input).await.unwrap().id.to_string()
        }
        "draft_invoice_with_expense" => {
            // A draft to the portal's client, whose project has a billable, unbilled expense.
            let project = fixture_project(app, org, &op).await;
            let member: uuid::Uuid = org.people["member"].user_id.parse().unwrap();
            insert_expense(app, org_id, project, member).await;
            let input = invoices::InvoiceInput { client_id: org.client_id.clone(), ..Default::default() };
            invoices::create(db, &c, &op, &input).await.unwrap().id.to_string()
        }
        "file" => {
            let project = parent_project(app, org, &op, earlier).await;
            let up = files::Upload {
                project_id: project,
                task_id: None,
                name: "fixture.txt",
                bytes: b"fixture contents\n".to_vec(),
                shared_with_client: true,
            };
            let max = app.config.files.max_upload_bytes;
            files::upload(db, &app.state.storage, &app.state.keys, max, &c, &op, up).await.unwrap().id.to_string()
        }
        // The same records, but of another client of the organization: the portal's Client must
        // not reach them.
        "another_clients_project" => another_clients_project(app, &op).await.to_string(),
        "another_clients_invoice" => {
            let client = another_client(app, &op).await;
            let input = invoices::InvoiceInput {
                client_id: client.to_string(),
                lines: Some(vec![invoices::LineInput {
                    description: "Another client's work".into(),
                    quantity_milli: 1000,
                    unit_price_minor: 7_000,
                }]),
                ..Default::default()
            };
            let inv = invoices::create(db, &c, &op, &input).await.unwrap();
            invoices::transition(db, &c, &op, inv.id, invoices::InvoiceAction::Send).await.unwrap();
            inv.id.to_string()
        }
        "another_clients_file" => {
            let up = files::Upload {
                project_id: another_clients_project(app, &op).await,
                task_id: None,
                name: "another-clients.txt",
                bytes: b"another client's file\n".to_vec(),
                shared_with_client: true,
            };
            let max = app.config.files.max_upload_bytes;
            files::upload(db, &app.state.storage, &app.state.keys, max, &c, &op, up).await.unwrap().id.to_string()
        }
        "key" => {
            let input =
                NewKey { name: "Fixture key".into(), role: "member".into(), permissions: None, expires_in_days: None };
            let member = org.people["member"].user_id.parse().unwrap();
            keys::create_for(db, &c, &op, member, &input).await.unwrap().key.id.to_string()
        }
        _ => return None,
    })
}

/// A task's activity rows: (actor, field, old, new), in the order they were written.
pub(crate) async fn activity_of(app: &TestApp, task: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    let mut db = app.db.admin_conn().await;
    sqlx::query_as(
        "SELECT actor_label, field, old_value, new_value FROM task_activity WHERE task_id = $1::uuid ORDER BY occurred_at, id",
    )
    .bind(task)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

pub fn earlier_value<T: std::str::FromStr>(earlier: &[(String, String)], name: &str) -> Option<T> {
    earlier.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok())
}

/// A project of the organization's (portal) client, visible to the client, with the
/// organization's Member in it: every role that may see projects sees this one.
pub async fn fixture_project(app: &TestApp, org: &Org, operator: &access::OrgPrincipal) -> ProjectId {
    let input = projects::ProjectInput {
        name: "Fixture project".into(),
        client_id: Some(org.client_id.clone()),
        visible_to_client: Some(true),
        ..Default::default()
    };
    let project = projects::create(&app.app_db, &ctx(app), operator, &input).await.unwrap();
    let member: UserId = org.people["member"].user_id.parse().unwrap();
    projects::add_member(&app.app_db, &ctx(app), operator, project.id, member).await.unwrap();
    project.id
}

pub async fn another_client(app: &TestApp, operator: &access::OrgPrincipal) -> ClientId {
    let input = clients::ClientInput { name: "Another client".into(), ..Default::default() };
    clients::create(&app.app_db, &ctx(app), operator, &input).await.unwrap().id
}

/// A project visible to its client, of a client other than the portal's.
pub async fn another_clients_project(app: &TestApp, operator: &access::OrgPrincipal) -> ProjectId {
    let client = another_client(app, operator).await;
    let input = projects::ProjectInput {
        name: "Another client's project".into(),
        client_id: Some(client.to_string()),
        visible_to_client: Some(true),
        ..Default::default()
    };
    projects::create(&app.app_db, &ctx(app), operator, &input).await.unwrap().id
}

/// The project named earlier in the path, or a new one.
pub async fn parent_project(
    app: &TestApp,
    org: &Org,
    operator: &access::OrgPrincipal,
    earlier: &[(String, String)],
) -> ProjectId {
    match earlier_value::<ProjectId>(earlier, "project") {
        Some(p) => p,
        None => fixture_project(app, org, operator).await,
    }
}

pub async fn fixture_task(
    app: &TestApp,
    operator: &access::OrgPrincipal,
    project: ProjectId,
) -> clientflow::platform::ids::TaskId {
    let input = tasks::TaskInput {
        project_id: project.to_string(),
        title: "Fixture task".into(),
        visible_to_client: Some(true),
        ..Default::default()
    };
    tasks::create(&app.app_db, &ctx(app), operator, &input).await.unwrap().id
}

/// Files written straight into the database (lists and pages over many rows), as the app
/// stores them: each name sealed with the organization's key for its own row, the plaintext
/// column empty (`files_name_sealed_only`). Their contents are not stored (`storage_key`
/// "nowhere"); `created_at` defaults to now.
pub async fn insert_files(
    app: &TestApp,
    org: OrgId,
    project: uuid::Uuid,
    rows: &[(uuid::Uuid, String)],
    created_at: Option<time::OffsetDateTime>,
) {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let sealed: Vec<Vec<u8>> = rows
        .iter()
        .map(|(id, name)| {
            files::seal_name(&app.state.keys, org, clientflow::platform::ids::FileId::from_uuid(*id), name, None)
                .unwrap()
        })
        .collect();
    let mut db = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO files (organization_id, id, project_id, name_sealed, content_type, size_bytes, sha256, storage_key, created_at) \
         SELECT $1, f.id, $2, f.sealed, 'text/plain', 1, decode(repeat('00', 32), 'hex'), 'nowhere', coalesce($5, now()) \
         FROM unnest($3::uuid[], $4::bytea[]) AS f(id, sealed)",
    )
    .bind(org)
    .bind(project)
    .bind(&ids)
    .bind(&sealed)
    .bind(created_at)
    .execute(&mut db)
    .await
    .unwrap();
}

/// A numbered invoice of `client` inserted as it stands (`sent`, `paid`, `void`), issued 20
/// days before `today` and due `due_in` days after it, for `total` minor units of `currency`.
pub struct StoredInvoice<'a> {
    pub number: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub total: i64,
    pub due_in: i64,
}

pub async fn insert_invoice(
    db: &mut sqlx::PgConnection,
    org: uuid::Uuid,
    client: uuid::Uuid,
    today: time::Date,
    i: StoredInvoice<'_>,
) {
    sqlx::query(
        "INSERT INTO invoices (organization_id, id, number, client_id, currency, status, issue_date, due_date, \
         subtotal_minor, total_minor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, now())",
    )
    .bind(org)
    .bind(uuid::Uuid::now_v7())
    .bind(i.number)
    .bind(client)
    .bind(i.currency)
    .bind(i.status)
    .bind(today - time::Duration::days(20))
    .bind(today + time::Duration::days(i.due_in))
    .bind(i.total)
    .execute(db)
    .await
    .unwrap();
}

/// A billable, unbilled expense of 42.50 in the organization's currency on `project`, recorded
/// by `user` today.
pub async fn insert_expense(app: &TestApp, org: OrgId, project: ProjectId, user: uuid::Uuid) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut admin = app.db.admin_conn().await;
    sqlx::query(
        "INSERT INTO expenses (organization_id, id, project_id, user_id, spent_on, category, amount_minor, currency, \
         billable, created_at) SELECT $1, $2, $3, $4, current_date, 'Travel', 4250, currency, true, now() \
         FROM organizations WHERE id = $1",
    )
    .bind(org.as_uuid())
    .bind(id)
    .bind(project.as_uuid())
    .bind(user)
    .execute(&mut admin)
    .await
    .unwrap();
    id
}

/// A project of `client` named `name`, written straight into the database, with `member` on it
/// (a Member sees only the projects they are on); its id.
pub async fn project_with_member(
    app: &TestApp,
    org: uuid::Uuid,
    client: uuid::Uuid,
    name: &str,
    member: uuid::Uuid,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut admin = app.db.admin_conn().await;
    sqlx::query("INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4)")
        .bind(org)
        .bind(id)
        .bind(client)
        .bind(name)
        .execute(&mut admin)
        .await
        .unwrap();
    add_to_project(app, org, id, member).await;
    id
}

/// Puts `user` on `project` (a Member sees only the projects they are on; a task's assignees are
/// the project's people), as the database's owner.
pub async fn add_to_project(app: &TestApp, org: uuid::Uuid, project: uuid::Uuid, user: uuid::Uuid) {
    crate::support::sql(
        app,
        "INSERT INTO project_members (organization_id, project_id, user_id, added_at) VALUES ($1, $2, $3, now())",
        &[org, project, user],
    )
    .await;
}

/// A new USD draft to `client`, made from the organization's New invoice page; its address.
pub async fn web_draft(b: &mut clientflow_test_support::browser::Browser, slug: &str, client: uuid::Uuid) -> String {
    let res = b
        .submit(
            &format!("/o/{slug}/invoices/new"),
            &format!("/o/{slug}/invoices"),
            &[("client_id", &client.to_string()), ("currency", "USD")],
        )
        .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    clientflow_test_support::browser::location(&res)
}

/// Records `minutes` of `user`'s on `day` (YYYY-MM-DD) in `project`, as the database's owner;
/// its id.
pub async fn insert_time(
    app: &TestApp,
    org: uuid::Uuid,
    project: uuid::Uuid,
    user: uuid::Uuid,
    day: &str,
    minutes: i32,
    note: &str,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6::date, $7, now())",
    )
    .bind(org)
    .bind(id)
    .bind(project)
    .bind(user)
    .bind(minutes)
    .bind(day)
    .bind(note)
    .execute(&mut app.db.admin_conn().await)
    .await
    .unwrap();
    id
}

/// Marks `entry` approved by `approver` now.
pub async fn approve_entry(app: &TestApp, entry: uuid::Uuid, approver: uuid::Uuid) {
    crate::support::sql(
        app,
        "UPDATE time_entries SET approved_at = now(), approved_by = $2 WHERE id = $1",
        &[entry, approver],
    )
    .await;
}

/// What the page of `user`'s week holding `day` shows awaiting approval (the `seen` approving
/// sends back), read as the operator, who sees every project.
pub async fn week_seen(app: &TestApp, org: uuid::Uuid, user: uuid::Uuid, day: time::Date) -> String {
    let org: OrgId = org.to_string().parse().unwrap();
    let op =
        access::operator(&app.app_db, &crate::support::operator(), org, "approval fixture").await.unwrap().unwrap();
    clientflow::work::approvals::week(&app.app_db, &op, UserId::from_uuid(user), day).await.unwrap().digest
}
