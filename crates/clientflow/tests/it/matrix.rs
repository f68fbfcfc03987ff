//! The cross-tenant / cross-role matrix over every organization route of the route table, and
//! the Client role swept over the whole table.
//!
//! Every writing route is sent a valid body (from [`BODIES`]), so "allowed" is proven by a real
//! success and a refusal can only come from the role or the organization, never from a form
//! that failed validation. A route without an entry in [`BODIES`] fails the test.

use axum::http::Method;
use clientflow::access::role::{Permission, Role, default_permissions};
use clientflow::access::route::{Access, RouteDef, Surface};
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};

use crate::support::accounts::PASSWORD;
use crate::support::orgs::{Org, org_with_every_role, session_token};
use crate::support::work::{approve_entry, insert_time, week_seen};

/// What a writing route is sent. Values may hold placeholders, filled per case by [`resolve`]:
/// `{unique}` (a fresh word), `{slug}` (the organization's slug), `{name}` (its name as it is
/// now), `{portal_client}` (the Client member's client record), `{new_member}` (a fresh member
/// of the organization), `{fixture_project}` (a fresh project of the portal's client with the
/// Member in it), `{column_of_task}` (another column of the project of the path's `{task}`),
/// `{member_user}` (the organization's Member), `{member_week_seen}` (a fresh entry of the
/// Member's in the week of [`APPROVABLE_WEEK`], then what that week's page shows awaiting
/// approval) and `{approved_member_week}` (a week of the Member's with approved time).
#[derive(Clone, Copy)]
pub enum Body {
    Form(&'static [(&'static str, &'static str)]),
    /// A multipart form with one file part.
    Multipart {
        fields: &'static [(&'static str, &'static str)],
        file_field: &'static str,
        file_name: &'static str,
        bytes: &'static [u8],
    },
}

/// One writing route: its body, and the path parameters that need an entity in a particular
/// state (`{invoice}` as a draft, `{member}` suspended…): `(parameter, fixture)`.
pub struct Write {
    pub route: &'static str,
    pub body: Body,
    pub fixtures: &'static [(&'static str, &'static str)],
}

/// A whole 1 × 1 PNG: logos are decoded and re-encoded, so a bare header is refused.
const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

const fn form(route: &'static str, fields: &'static [(&'static str, &'static str)]) -> Write {
    Write { route, body: Body::Form(fields), fixtures: &[] }
}

const fn form_on(
    route: &'static str,
    fields: &'static [(&'static str, &'static str)],
    fixtures: &'static [(&'static str, &'static str)],
) -> Write {
    Write { route, body: Body::Form(fields), fixtures }
}

/// A destructive form says it was confirmed (without it the route answers with a page that asks).
const CONFIRMED: &[(&str, &str)] = &[("confirm", "yes")];

/// A valid body for every writing organization route. A new route needs an entry here (the
/// matrix fails without one), and an entry for a route that no longer exists fails too.
pub const BODIES: &[Write] = &[
    // Organization and members.
    form("POST /o/{org}/leave", &[]),
    form("POST /o/{org}/invitations", &[("email", "{unique}@invitee.test"), ("role", "member"), ("client_id", "")]),
    form("POST /o/{org}/invitations/{invitation}/revoke", &[]),
    form("POST /o/{org}/invitations/{invitation}/resend", &[]),
    form("POST /o/{org}/members/{member}/role", &[("role", "manager"), ("client_id", "")]),
    form("POST /o/{org}/members/{member}/suspend", &[]),
    form_on("POST /o/{org}/members/{member}/reactivate", &[], &[("member", "suspended_member")]),
    form("POST /o/{org}/members/{member}/remove", CONFIRMED),
    form("POST /o/{org}/members/{member}/permissions", &[("grant", "tasks.delete"), ("deny", "time.track")]),
    form("POST /o/{org}/transfer", &[("member", "{new_member}"), ("current_password", PASSWORD)]),
    // Settings.
    form(
        "POST /o/{org}/settings",
        &[
            ("name", "Matrix {unique}"),
            ("slug", "{slug}"),
            ("brand_color", "#112233"),
            ("timezone", "Europe/Berlin"),
            ("currency", "EUR"),
        ],
    ),
    Write {
        route: "POST /o/{org}/settings/logo",
        body: Body::Multipart { fields: &[], file_field: "logo", file_name: "logo.png", bytes: PNG },
        fixtures: &[],
    },
    form(
        "POST /o/{org}/settings/contact",
        &[("contact_form_enabled", "on"), ("contact_email", "{unique}@contact.test")],
    ),
    form("POST /o/{org}/settings/security", &[("session_timeout_minutes", "120"), ("current_password", PASSWORD)]),
    form("POST /o/{org}/settings/allowlist", &[("ip_allowlist", ""), ("current_password", PASSWORD)]),
    form(
        "POST /o/{org}/settings/roles",
        &[
            ("role", "member"),
            ("permission", "org.view"),
            ("permission", "clients.read"),
            ("permission", "projects.read"),
            ("permission", "tasks.read"),
            ("permission", "tasks.create"),
            ("permission", "tasks.update"),
            ("permission", "comments.create"),
            ("permission", "time.track"),
            ("permission", "files.read"),
            ("permission", "files.upload"),
            ("permission", "members.read"),
            ("permission", "invoices.read"),
        ],
    ),
    form(
        "POST /o/{org}/settings/api-keys",
        &[("name", "Matrix {unique}"), ("role", "member"), ("expires_in_days", "30"), ("current_password", PASSWORD)],
    ),
    form("POST /o/{org}/settings/api-keys/{key}/revoke", &[]),
    form(
        "POST /o/{org}/settings/invoicing",
        &[
            ("invoice_prefix", "MTX"),
            ("hourly_rate", "120.50"),
            ("payment_terms_days", "14"),
            ("default_tax_rate", "19"),
            ("currency", "EUR"),
        ],
    ),
    // Billing (off in the matrix's app: the Owner is sent back to the page that says so).
    form("POST /o/{org}/settings/billing/checkout", &[("plan", "pro")]),
    form("POST /o/{org}/settings/billing/portal", &[]),
    // Starting a data export (the worker is not running in the matrix's app: it stays queued).
    form("POST /o/{org}/settings/export", &[("current_password", PASSWORD)]),
    // Deleting the organization (scheduled, then cancelled; the purge is the worker's).
    form("POST /o/{org}/settings/deletion", &[("confirm_name", "{name}"), ("current_password", PASSWORD)]),
    form("POST /o/{org}/settings/deletion/cancel", &[]),
    // Clients.
    form(
        "POST /o/{org}/clients",
        &[("name", "Matrix {unique}"), ("company", "Matrix Ltd"), ("email", "{unique}@client.test")],
    ),
    form("POST /o/{org}/clients/{client}/edit", &[("name", "Matrix {unique}"), ("notes", "edited")]),
    form("POST /o/{org}/clients/{client}/archive", &[]),
    form("POST /o/{org}/clients/{client}/restore", &[]),
    // Only a client without projects, invoices or portal users can be deleted.
    form_on("POST /o/{org}/clients/{client}/delete", CONFIRMED, &[("client", "unused_client")]),
    form(
        "POST /o/{org}/clients/{client}/contacts",
        &[("name", "Ada {unique}"), ("email", "{unique}@contact.test"), ("title", "Buyer")],
    ),
    form("POST /o/{org}/clients/{client}/contacts/{contact}/delete", CONFIRMED),
    // Projects, the board and time.
    form(
        "POST /o/{org}/projects",
        &[("name", "Matrix {unique}"), ("client_id", "{portal_client}"), ("status", "active"), ("budget", "1200")],
    ),
    form(
        "POST /o/{org}/projects/{project}/edit",
        &[("name", "Matrix {unique}"), ("status", "on_hold"), ("due_date", "2031-01-31")],
    ),
    form("POST /o/{org}/projects/{project}/delete", CONFIRMED),
    form("POST /o/{org}/projects/{project}/copy", &[("name", "Matrix copy {unique}"), ("start_date", "2031-01-06")]),
    form("POST /o/{org}/projects/{project}/members", &[("user_id", "{new_member}")]),
    form("POST /o/{org}/projects/{project}/members/{user}/remove", CONFIRMED),
    form("POST /o/{org}/projects/{project}/members/{user}/rate", &[("hourly_rate", "99.50")]),
    form("POST /o/{org}/projects/{project}/columns", &[("name", "Column {unique}")]),
    form("POST /o/{org}/projects/{project}/columns/{column}/move", &[("direction", "left")]),
    form("POST /o/{org}/projects/{project}/columns/{column}/delete", CONFIRMED),
    form("POST /o/{org}/projects/{project}/time", &[("minutes", "45"), ("note", "Matrix {unique}")]),
    form("POST /o/{org}/projects/{project}/time/{entry}/delete", CONFIRMED),
    form(
        "POST /o/{org}/projects/{project}/time/{entry}/edit",
        &[("minutes", "1:15"), ("spent_on", "2026-12-01"), ("note", "Matrix {unique}"), ("billable", "no")],
    ),
    form(
        "POST /o/{org}/projects/{project}/expenses",
        &[("category", "Travel"), ("amount", "42.50"), ("billable", "yes"), ("note", "Matrix {unique}")],
    ),
    form("POST /o/{org}/projects/{project}/expenses/{expense}/delete", CONFIRMED),
    form("POST /o/{org}/projects/{project}/expenses/{expense}/receipt", &[("receipt", "")]),
    form(
        "POST /o/{org}/projects/{project}/expenses/{expense}/edit",
        &[("category", "Travel"), ("amount", "12.00"), ("spent_on", "2026-12-01"), ("billable", "no")],
    ),
    // Tasks and comments.
    form("POST /o/{org}/projects/{project}/tasks", &[("title", "Matrix {unique}"), ("visible_to_client", "on")]),
    form(
        "POST /o/{org}/tasks/{task}/edit",
        &[("title", "Matrix {unique}"), ("status", "in_progress"), ("priority", "high"), ("estimate_minutes", "60")],
    ),
    form("POST /o/{org}/tasks/{task}/move", &[("column_id", "{column_of_task}")]),
    form("POST /o/{org}/tasks/{task}/subtasks", &[("title", "Sub {unique}")]),
    form("POST /o/{org}/tasks/{task}/comments", &[("body", "Comment {unique}"), ("client_visible", "on")]),
    form("POST /o/{org}/tasks/{task}/comments/{comment}/delete", CONFIRMED),
    form("POST /o/{org}/tasks/{task}/delete", CONFIRMED),
    form("POST /o/{org}/tasks/{task}/follow", &[("following", "yes")]),
    // Notifications (one's own).
    form("POST /o/{org}/notifications/read", &[]),
    form("POST /o/{org}/notifications/preferences", &[("assigned", "in_app"), ("digest", "off")]),
    // Files.
    Write {
        route: "POST /o/{org}/projects/{project}/files",
        body: Body::Multipart {
            fields: &[("shared_with_client", "on")],
            file_field: "file",
            file_name: "matrix.txt",
            bytes: b"matrix upload\n",
        },
        fixtures: &[],
    },
    form("POST /o/{org}/files/{file}/share", &[("shared", "on")]),
    form("POST /o/{org}/files/{file}/link", &[]),
    form("POST /o/{org}/files/{file}/delete", CONFIRMED),
    // Invoices: drafts may be edited, sent and deleted; sent ones paid or voided.
    form_on(
        "POST /o/{org}/invoices",
        &[
            ("client_id", "{portal_client}"),
            ("currency", "EUR"),
            ("tax_rate", "19"),
            ("description_0", "Matrix {unique}"),
            ("quantity_0", "1.5"),
            ("price_0", "99.99"),
        ],
        &[],
    ),
    form_on(
        "POST /o/{org}/invoices/{invoice}/edit",
        &[
            ("client_id", "{portal_client}"),
            ("issue_date", "2026-01-01"),
            ("due_date", "2026-01-31"),
            ("description_0", "Edited {unique}"),
            ("quantity_0", "2"),
            ("price_0", "10"),
        ],
        &[("invoice", "draft_invoice")],
    ),
    form_on("POST /o/{org}/invoices/{invoice}/send", &[], &[("invoice", "draft_invoice")]),
    form("POST /o/{org}/invoices/{invoice}/pay", CONFIRMED),
    form("POST /o/{org}/invoices/{invoice}/void", CONFIRMED),
    form_on(
        "POST /o/{org}/clients/{client}/statement/email",
        &[("from", "2026-01-01"), ("to", "2026-01-31")],
        &[("client", "billed_client")],
    ),
    form("POST /o/{org}/invoices/{invoice}/duplicate", &[]),
    form(
        "POST /o/{org}/invoices/{invoice}/repeat",
        &[("every", "1"), ("unit", "month"), ("starts_on", ""), ("ends_on", "")],
    ),
    form_on(
        "POST /o/{org}/invoices/{invoice}/repeat/edit",
        &[("every", "2"), ("unit", "week"), ("next_on", "2031-01-06"), ("ends_on", "")],
        &[("invoice", "repeated_invoice")],
    ),
    form_on("POST /o/{org}/invoices/{invoice}/repeat/pause", &[], &[("invoice", "repeated_invoice")]),
    form_on("POST /o/{org}/invoices/{invoice}/repeat/resume", &[], &[("invoice", "repeated_invoice")]),
    form_on("POST /o/{org}/invoices/{invoice}/repeat/delete", CONFIRMED, &[("invoice", "repeated_invoice")]),
    form(
        "POST /o/{org}/invoices/{invoice}/payments",
        &[("amount", "1.00"), ("paid_on", "2024-01-15"), ("note", "Matrix {unique}")],
    ),
    form("POST /o/{org}/invoices/{invoice}/payments/{payment}/delete", CONFIRMED),
    form_on("POST /o/{org}/invoices/{invoice}/delete", CONFIRMED, &[("invoice", "draft_invoice")]),
    form_on("POST /o/{org}/invoices/{invoice}/time", &[("group", "task")], &[("invoice", "draft_invoice_with_time")]),
    form_on("POST /o/{org}/invoices/{invoice}/expenses", &[], &[("invoice", "draft_invoice_with_expense")]),
    // Timers (stopping with none running goes to the week: nothing to do).
    form("POST /o/{org}/timer/start", &[("project_id", "{fixture_project}"), ("note", "Matrix {unique}")]),
    form("POST /o/{org}/timer/stop", &[]),
    // Approving another's week as its page showed it, and reopening an approved one.
    form(
        "POST /o/{org}/time/week/approve",
        &[("person", "{member_user}"), ("week", APPROVABLE_WEEK), ("seen", "{member_week_seen}")],
    ),
    form("POST /o/{org}/time/week/reopen", &[("person", "{member_user}"), ("week", "{approved_member_week}")]),
    // A person's hours a week, on the workload page.
    form("POST /o/{org}/workload/capacity", &[("person", "{member_user}"), ("hours_a_week", "32"), ("week", "")]),
    // The fixture's sent invoice goes to a client with a billing email; fresh, so never reminded.
    form("POST /o/{org}/invoices/{invoice}/remind", &[]),
];

/// The week the matrix approves the Member's time in (its Monday).
const APPROVABLE_WEEK: &str = "2024-01-01";

/// The organization's first member of `role` (read from the database: the person sending a case
/// is out of `org.people` meanwhile).
async fn first_of_role(app: &TestApp, org: &Org, role: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE organization_id = $1::uuid AND role = $2 ORDER BY created_at, user_id LIMIT 1",
    )
    .bind(&org.id)
    .bind(role)
    .fetch_one(&mut app.db.admin_conn().await)
    .await
    .unwrap()
}

/// Records `minutes` of the Member's on `day` in a project of its own (approved by the Owner
/// when `approved`).
async fn member_time(app: &TestApp, org: &Org, day: &str, minutes: i32, approved: bool) {
    let org_id: uuid::Uuid = org.id.parse().unwrap();
    let member = first_of_role(app, org, "member").await;
    let project = uuid::Uuid::now_v7();
    crate::support::sql(
        app,
        "INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, 'Approval project')",
        &[org_id, project],
    )
    .await;
    let entry = insert_time(app, org_id, project, member, day, minutes, "").await;
    if approved {
        approve_entry(app, entry, first_of_role(app, org, "owner").await).await;
    }
}

/// Reading routes whose path entity must be in a particular state.
const READ_FIXTURES: &[(&str, &[(&str, &str)])] =
    &[("GET /o/{org}/invoices/{invoice}/edit", &[("invoice", "draft_invoice")])];

fn key(route: &RouteDef) -> String {
    format!("{} {}", route.method, route.path)
}

/// The organization routes of the table.
fn org_routes() -> Vec<RouteDef> {
    clientflow::routes::all().into_iter().filter(|r| matches!(r.access, Access::Org(_))).collect()
}

/// The body and fixtures of `route`; fails for a writing route without an entry.
fn write_of(route: &RouteDef) -> Option<&'static Write> {
    let k = key(route);
    let found = BODIES.iter().find(|w| w.route == k);
    assert!(
        route.method == Method::GET || found.is_some(),
        "{k} has no body in matrix::BODIES: add a valid one so the matrix proves the route works"
    );
    found
}

fn fixtures_of(route: &RouteDef) -> &'static [(&'static str, &'static str)] {
    let k = key(route);
    match write_of(route) {
        Some(w) => w.fixtures,
        None => READ_FIXTURES.iter().find(|(r, _)| *r == k).map(|(_, f)| *f).unwrap_or(&[]),
    }
}

#[test]
fn every_writing_route_has_a_body_and_every_body_a_route() {
    let routes = org_routes();
    let keys: Vec<String> = routes.iter().map(key).collect();
    for r in &routes {
        write_of(r);
    }
    for w in BODIES {
        assert!(
            keys.contains(&w.route.to_string()),
            "matrix::BODIES names {}, which is not an organization route",
            w.route
        );
    }
    for (r, _) in READ_FIXTURES {
        assert!(keys.contains(&r.to_string()), "READ_FIXTURES names {r}, which is not an organization route");
    }
}

/// A fresh entity of `org` for a path parameter, through `fixture` (the parameter's own name
/// unless the route asks for a particular state). `earlier` holds the parameters before it in
/// the path, so a nested entity (a column of `{project}`) belongs to its parent.
pub async fn fresh_param(app: &TestApp, org: &Org, fixture: &str, earlier: &[(String, String)]) -> String {
    let mut db = app.db.admin_conn().await;
    let org_id: uuid::Uuid = org.id.parse().unwrap();
    match fixture {
        "member" | "suspended_member" => {
            let user = uuid::Uuid::now_v7();
            sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
                .bind(user)
                .bind(format!("target-{user}@example.com"))
                .execute(&mut db)
                .await
                .unwrap();
            let status = if fixture == "member" { "active" } else { "suspended" };
            sqlx::query(
                "INSERT INTO memberships (organization_id, user_id, role, status) VALUES ($1, $2, 'member', $3)",
            )
            .bind(org_id)
            .bind(user)
            .bind(status)
            .execute(&mut db)
            .await
            .unwrap();
            user.to_string()
        }
        "invitation" => {
            let id = uuid::Uuid::now_v7();
            let inviter: uuid::Uuid = org.people["owner"].user_id.parse().unwrap();
            sqlx::query(
                "INSERT INTO invitations (organization_id, id, email, role, token_hash, invited_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, 'member', $4, $5, now(), now() + interval '7 days')",
            )
            .bind(org_id)
            .bind(id)
            .bind(format!("invitee-{id}@example.com"))
            .bind(id.as_bytes().to_vec())
            .bind(inviter)
            .execute(&mut db)
            .await
            .unwrap();
            id.to_string()
        }
        "unused_client" => {
            let id = uuid::Uuid::now_v7();
            sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, 'Unused client')")
                .bind(org_id)
                .bind(id)
                .execute(&mut db)
                .await
                .unwrap();
            id.to_string()
        }
        other => crate::support::work::fixture(app, org, other, earlier)
            .await
            .unwrap_or_else(|| panic!("no fixture for path parameter {{{other}}}: add one to fresh_param")),
    }
}

/// A request path and the values of its parameters (by name).
pub type Target = (String, Vec<(String, String)>);

/// The route's path for `org`'s slug with fresh entities of `ids_from` for its parameters, and
/// the parameters' values.
pub async fn url_for(app: &TestApp, route: &RouteDef, org: &Org, ids_from: &Org) -> Target {
    url_with(app, route, org, ids_from, fixtures_of(route)).await
}

/// [`url_for`] with the given `(parameter, fixture)` choices.
pub async fn url_with(app: &TestApp, route: &RouteDef, org: &Org, ids_from: &Org, fixtures: &[(&str, &str)]) -> Target {
    let mut out = String::new();
    let mut rest = route.path;
    let mut params = Vec::new();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let name = &rest[start + 1..end];
        if name == "org" {
            out.push_str(&org.slug);
        } else {
            let fixture = fixtures.iter().find(|(p, _)| *p == name).map(|(_, f)| *f).unwrap_or(name);
            let value = fresh_param(app, ids_from, fixture, &params).await;
            out.push_str(&value);
            params.push((name.to_string(), value));
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (out, params)
}

/// Fills the placeholders of a body value (see [`Body`]) for `org`, with the path's parameters.
async fn resolve(app: &TestApp, org: &Org, value: &str, params: &[(String, String)]) -> String {
    let mut out = value.replace("{unique}", &format!("m{}", uuid::Uuid::now_v7().simple()));
    out = out.replace("{slug}", &org.slug).replace("{portal_client}", &org.client_id);
    if out.contains("{name}") {
        let mut db = app.db.admin_conn().await;
        let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1::uuid")
            .bind(&org.id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        out = out.replace("{name}", &name);
    }
    if out.contains("{new_member}") {
        let member = fresh_param(app, org, "member", &[]).await;
        out = out.replace("{new_member}", &member);
    }
    if out.contains("{fixture_project}") {
        // Made here rather than by `fresh_param`: the person sending may be out of `org.people`.
        let project = uuid::Uuid::now_v7();
        let org_id: uuid::Uuid = org.id.parse().unwrap();
        let mut db = app.db.admin_conn().await;
        sqlx::query(
            "INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3::uuid, 'Timer project')",
        )
        .bind(org_id)
        .bind(project)
        .bind(&org.client_id)
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO project_members (organization_id, project_id, user_id, added_at) \
             SELECT organization_id, $2, user_id, now() FROM memberships WHERE organization_id = $1 AND role = 'member'",
        )
        .bind(org_id)
        .bind(project)
        .execute(&mut db)
        .await
        .unwrap();
        out = out.replace("{fixture_project}", &project.to_string());
    }
    if out.contains("{column_of_task}") {
        let task = &params.iter().find(|(k, _)| k == "task").expect("{column_of_task} needs a {task}").1;
        let mut db = app.db.admin_conn().await;
        let column: uuid::Uuid = sqlx::query_scalar(
            "SELECT c.id FROM board_columns c JOIN tasks t ON t.project_id = c.project_id \
             WHERE t.id = $1::uuid AND c.id <> t.column_id ORDER BY c.position DESC LIMIT 1",
        )
        .bind(task)
        .fetch_one(&mut db)
        .await
        .unwrap();
        out = out.replace("{column_of_task}", &column.to_string());
    }
    if out.contains("{member_user}") {
        out = out.replace("{member_user}", &first_of_role(app, org, "member").await.to_string());
    }
    if out.contains("{member_week_seen}") {
        member_time(app, org, APPROVABLE_WEEK, 30, false).await;
        let member = first_of_role(app, org, "member").await;
        let day = time::Date::parse(APPROVABLE_WEEK, &time::format_description::well_known::Iso8601::DATE).unwrap();
        let seen = week_seen(app, org.id.parse().unwrap(), member, day).await;
        out = out.replace("{member_week_seen}", &seen);
    }
    if out.contains("{approved_member_week}") {
        member_time(app, org, "2024-02-05", 45, true).await;
        out = out.replace("{approved_member_week}", "2024-02-05");
    }
    assert!(!out.contains('{'), "unknown placeholder in {value}");
    out
}

/// Sends `route`'s request to `url` as `b`, with the route's body resolved for `body_org`.
pub async fn send(
    app: &TestApp,
    b: &mut Browser,
    route: &RouteDef,
    url: &str,
    body_org: &Org,
    params: &[(String, String)],
) -> reqwest::Response {
    if route.method == Method::GET {
        return b.get(url).await;
    }
    let write = write_of(route).expect("writing routes have a body");
    let token = session_token(b).await;
    match write.body {
        Body::Form(fields) => {
            let mut resolved = Vec::new();
            for (k, v) in fields {
                resolved.push((*k, resolve(app, body_org, v, params).await));
            }
            let pairs: Vec<(&str, &str)> = resolved.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.post_with(url, &pairs, Some(&token), true).await
        }
        Body::Multipart { fields, file_field, file_name, bytes } => {
            let boundary = "----clientflow-matrix-5c1e";
            let mut body = Vec::new();
            let mut text = |k: &str, v: &str| {
                body.extend_from_slice(
                    format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
                )
            };
            text("csrf_token", &token);
            for (k, v) in fields {
                text(k, v);
            }
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{file_name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            b.client
                .post(b.url(url))
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .header("origin", b.base_url.clone())
                .body(body)
                .send()
                .await
                .unwrap()
        }
    }
}

/// Whether a response is a success: a 2xx, or a 303 to a page that itself answers 200 (not
/// the sign-in page, not an error).
pub async fn succeeded(b: &mut Browser, res: reqwest::Response) -> Result<(), String> {
    let status = res.status().as_u16();
    if res.status().is_success() {
        return Ok(());
    }
    if status == 303 {
        let to = location(&res);
        if to.starts_with("/login") || to.starts_with("/account/two-factor") {
            return Err(format!("303 to {to}"));
        }
        let (after, html) = b.page(to.split('#').next().unwrap()).await;
        return if after == 200 {
            Ok(())
        } else {
            Err(format!("303 to {to}, which answered {after}: {}", brief(&html)))
        };
    }
    let text = res.text().await.unwrap_or_default();
    Err(format!("{status}: {}", brief(&text)))
}

/// The messages of an error page (its `<strong>field</strong> message` items or its title).
fn brief(html: &str) -> String {
    let errors: Vec<String> = html
        .split("<li>")
        .skip(1)
        .filter(|li| li.contains("<strong>"))
        .map(|li| li.split("</li>").next().unwrap().replace("<strong>", "").replace("</strong>", ""))
        .collect();
    if !errors.is_empty() {
        return errors.join("; ");
    }
    let text: String = html.chars().take(300).collect();
    text.replace('\n', " ")
}

/// Puts the caller back in place before each case (a case may have changed them, their
/// organization's settings or its role customization).
pub async fn restore_membership(app: &TestApp, org: &Org, role: &str) {
    let mut db = app.db.admin_conn().await;
    let user: uuid::Uuid = org.people[role].user_id.parse().unwrap();
    let org_id: uuid::Uuid = org.id.parse().unwrap();
    let client: Option<uuid::Uuid> = (role == "client").then(|| org.client_id.parse().unwrap());
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, client_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = $3, client_id = $4, status = 'active'",
    )
    .bind(org_id)
    .bind(user)
    .bind(role)
    .bind(client)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM member_permissions WHERE organization_id = $1")
        .bind(org_id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM role_permissions WHERE organization_id = $1").bind(org_id).execute(&mut db).await.unwrap();
    // A case that scheduled the organization's deletion must not shut the next one out.
    sqlx::query("DELETE FROM organization_deletion_requests WHERE organization_id = $1")
        .bind(org_id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE organizations SET require_two_factor = false, session_timeout_minutes = NULL, slug = $2, \
         ip_allowlist = '{}' WHERE id = $1",
    )
    .bind(org_id)
    .bind(&org.slug)
    .execute(&mut db)
    .await
    .unwrap();
}

/// A second, silent Owner, so that the Owner's own "leave" is a success in the matrix (the
/// last Owner's refusal is tested on its own).
async fn add_second_owner(app: &TestApp, org: &Org) {
    let mut db = app.db.admin_conn().await;
    let user = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
        .bind(user)
        .bind(format!("co-owner@{}.test", org.slug))
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org.id.parse::<uuid::Uuid>().unwrap())
        .bind(user)
        .execute(&mut db)
        .await
        .unwrap();
}

const ROLES: [&str; 5] = ["owner", "admin", "manager", "member", "client"];

/// Every organization route × every role × {foreign organization, own organization, own
/// organization with another organization's ids (routes with ids)}: foreign → 404, a role
/// without the route's permission → 403, allowed → a real success with a valid body. Prints how
/// many cases ran on standard output (`cargo test -- --nocapture` shows it).
#[tokio::test]
#[allow(clippy::print_stdout)] // the case count is part of the report
async fn the_cross_tenant_cross_role_matrix_over_every_route() {
    let app = TestApp::spawn().await;
    let mut a = org_with_every_role(&app, "alpha").await;
    let b = org_with_every_role(&app, "bravo").await;
    add_second_owner(&app, &a).await;
    let routes = org_routes();
    assert!(routes.len() >= 80, "only {} organization routes?", routes.len());
    let with_ids = routes.iter().filter(|r| r.path.matches('{').count() > 1).count();
    let (mut cases, mut allowed_cases, mut failures) = (0usize, 0usize, Vec::new());
    for route in &routes {
        let Access::Org(permission) = route.access else { unreachable!() };
        assert_eq!(route.surface, Surface::Web, "{}", key(route));
        let has_ids = route.path.matches('{').count() > 1;
        for role_name in ROLES {
            let role: Role = role_name.parse().unwrap();
            let allowed = default_permissions(role).contains(permission);
            let mut variants = vec![("foreign organization", url_for(&app, route, &b, &b).await, Some(404))];
            variants.push((
                "own organization",
                url_for(&app, route, &a, &a).await,
                if allowed { None } else { Some(403) },
            ));
            if has_ids {
                variants.push((
                    "own organization, foreign ids",
                    url_for(&app, route, &a, &b).await,
                    Some(if allowed { 404 } else { 403 }),
                ));
            }
            for (what, (url, params), expected) in variants {
                restore_membership(&app, &a, role_name).await;
                // The body's ids are the caller's own: with foreign path ids only the path is foreign.
                let params =
                    if what == "own organization, foreign ids" { url_for(&app, route, &a, &a).await.1 } else { params };
                let mut person = a.people.remove(role_name).unwrap();
                let body_org = if what == "foreign organization" { &b } else { &a };
                let res = send(&app, &mut person.browser, route, &url, body_org, &params).await;
                cases += 1;
                let verdict = match expected {
                    Some(code) if res.status().as_u16() == code => Ok(()),
                    Some(_) => {
                        Err(format!("{}: {}", res.status().as_u16(), brief(&res.text().await.unwrap_or_default())))
                    }
                    None => {
                        allowed_cases += 1;
                        succeeded(&mut person.browser, res).await
                    }
                };
                a.people.insert(role_name, person);
                if let Err(got) = verdict {
                    failures.push(format!(
                        "{} as {role_name} ({what}): got {got}; expected {}",
                        key(route),
                        expected.map(|c| c.to_string()).unwrap_or_else(|| "success".into())
                    ));
                }
            }
        }
    }
    let expected_cases = ROLES.len() * (2 * routes.len() + with_ids);
    println!(
        "permission matrix: {cases} cases = {} roles × (2 × {} organization routes + {with_ids} with ids); \
         {allowed_cases} allowed cases proven by a success",
        ROLES.len(),
        routes.len()
    );
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, expected_cases);
    assert!(allowed_cases > routes.len(), "{allowed_cases} allowed cases");
}

/// Names of records only the organization's team may see; no page a Client reaches shows them.
const INTERNAL: [&str; 3] = ["Internal-only client", "Internal-only project", "Another client"];

/// A Client user over the whole route table: every organization route but the portal's and
/// membership itself (the organization's home, which sends a Client to the portal; its logo;
/// leaving) answers 403, and 404 in another organization; every API route answers 401 to the
/// Client's session (the API takes keys only; a key whose creator became a Client is refused
/// in the API matrix); the portal serves the Client's own client's records and answers 404
/// for another client's project, invoice or file; and no page the Client reaches — account
/// and public pages included — shows an internal record.
#[tokio::test]
#[allow(clippy::print_stdout)] // the case count is part of the report
async fn a_client_user_reaches_nothing_internal_over_the_whole_route_table() {
    let app = TestApp::spawn().await;
    let mut a = org_with_every_role(&app, "portalside").await;
    let b = org_with_every_role(&app, "otherside").await;
    {
        let mut db = app.db.admin_conn().await;
        let (client, project) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let org_id: uuid::Uuid = a.id.parse().unwrap();
        sqlx::query("INSERT INTO clients (organization_id, id, name) VALUES ($1, $2, $3)")
            .bind(org_id)
            .bind(client)
            .bind(INTERNAL[0])
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO projects (organization_id, id, client_id, name) VALUES ($1, $2, $3, $4)")
            .bind(org_id)
            .bind(project)
            .bind(client)
            .bind(INTERNAL[1])
            .execute(&mut db)
            .await
            .unwrap();
    }
    let mut person = a.people.remove("client").unwrap();
    let routes = clientflow::routes::all();
    let (mut cases, mut expected_cases, mut failures) = (0usize, 0usize, Vec::new());
    let shows_internal = |html: &str| INTERNAL.iter().find(|n| html.contains(*n)).map(|n| n.to_string());
    for route in &routes {
        let has_ids = route.path.matches('{').count() > 1;
        let mut checks: Vec<(&str, Target, Option<u16>)> = Vec::new();
        match route.access {
            Access::Org(p) => {
                let portal = p == Permission::PortalRead;
                expected_cases += 2 + usize::from(portal && has_ids);
                checks.push(("another organization", url_for(&app, route, &b, &b).await, Some(404)));
                let own = url_for(&app, route, &a, &a).await;
                let expected = if portal || p == Permission::OrgAccess { None } else { Some(403) };
                checks.push(("own organization", own, expected));
                if portal && has_ids {
                    let names: Vec<String> = route
                        .path
                        .split('{')
                        .skip(1)
                        .map(|s| s.split('}').next().unwrap().to_string())
                        .filter(|n| n != "org")
                        .collect();
                    let fixtures: Vec<(String, String)> =
                        names.iter().map(|n| (n.clone(), format!("another_clients_{n}"))).collect();
                    let fixtures: Vec<(&str, &str)> = fixtures.iter().map(|(p, f)| (p.as_str(), f.as_str())).collect();
                    checks.push(("another client's record", url_with(&app, route, &a, &a, &fixtures).await, Some(404)));
                }
            }
            Access::Api(_) => {
                expected_cases += 1;
                let fixtures = [("time_entry", "entry")];
                checks.push(("session instead of a key", url_with(&app, route, &a, &a, &fixtures).await, Some(401)));
            }
            // Personal and public pages: whatever they answer, nothing internal on them.
            _ if route.method == Method::GET && !route.path.contains('{') => {
                expected_cases += 1;
                let html = person.browser.get(route.path).await.text().await.unwrap_or_default();
                cases += 1;
                if let Some(name) = shows_internal(&html) {
                    failures.push(format!("{} shows {name} to a Client", key(route)));
                }
                continue;
            }
            _ => continue,
        }
        for (what, (url, params), expected) in checks {
            a.people.insert("client", person);
            restore_membership(&app, &a, "client").await;
            person = a.people.remove("client").unwrap();
            let res = if route.surface == Surface::Api {
                person.browser.client.request(route.method.clone(), person.browser.url(&url)).send().await.unwrap()
            } else {
                send(&app, &mut person.browser, route, &url, &a, &params).await
            };
            cases += 1;
            let status = res.status().as_u16();
            let verdict = match expected {
                Some(code) if status == code => Ok(()),
                Some(_) => Err(status.to_string()),
                None if route.method == Method::GET && status == 200 => {
                    let html = res.text().await.unwrap_or_default();
                    shows_internal(&html).map_or(Ok(()), |name| Err(format!("200 showing {name}")))
                }
                None => succeeded(&mut person.browser, res).await,
            };
            if let Err(got) = verdict {
                failures.push(format!(
                    "{} as the Client ({what}): got {got}; expected {}",
                    key(route),
                    expected.map(|c| c.to_string()).unwrap_or_else(|| "success".into())
                ));
            }
        }
    }
    println!("Client sweep: {cases} cases over all {} routes of the table", routes.len());
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, expected_cases);
    assert!(cases > routes.len(), "{cases} cases");
}
