//! The work domain's web pages and the client portal, through real HTTP with a browser-like
//! client: the main flows, what Members and Clients may see, uploads and signed links, API keys.
//! Also the fixtures that give the permission matrix (matrix.rs) an entity for each path
//! parameter these pages introduce.

use clientflow::access;
use clientflow_test_support::TestApp;
use clientflow_test_support::browser::{Browser, location};

use crate::support::accounts::{PASSWORD, sign_up};
use crate::support::api::count;
use crate::support::orgs::{create_org, org_with_every_role, session_token};

// ---- helpers ----

/// What a destructive form sends once confirmed.
const CONFIRM: &[(&str, &str)] = &[("confirm", "yes")];

async fn post(b: &Browser, token: &str, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    b.post_with(path, fields, Some(token), true).await
}

async fn redirected(res: reqwest::Response) -> String {
    let status = res.status();
    let loc = location(&res);
    assert_eq!(status, 303, "{}", res.text().await.unwrap_or_default());
    loc
}

/// The id at the end of a redirect to `…/{kind}/{id}`.
fn id_in(loc: &str, kind: &str) -> String {
    let at = loc.find(&format!("/{kind}/")).unwrap_or_else(|| panic!("{loc} has no /{kind}/"));
    loc[at + kind.len() + 2..].split(['/', '#', '?']).next().unwrap().to_string()
}

async fn page(b: &mut Browser, path: &str) -> String {
    let (status, html) = b.page(path).await;
    assert_eq!(status, 200, "GET {path}: {html}");
    assert_csp_clean(&html);
    html
}

/// Nothing the CSP would block: no inline script or style, no event handler attributes.
fn assert_csp_clean(html: &str) {
    assert!(!html.contains(" style="), "inline style attribute");
    assert!(!html.contains("<style"), "inline style element");
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap();
        assert!(open.contains("src=\"/static/"), "inline script: <script{open}>");
        assert!(tag[open.len() + 1..].starts_with("</script>"), "script with a body");
    }
    assert!(!html.contains(" onclick=") && !html.contains(" onsubmit="), "inline event handler");
}

async fn id_by(app: &TestApp, sql: &str, arg: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let id: uuid::Uuid = sqlx::query_scalar(sql).bind(arg).fetch_one(&mut db).await.unwrap();
    id.to_string()
}

/// The id of the file named `name` (names are sealed: each row's is opened to find it).
async fn file_named(app: &TestApp, name: &str) -> String {
    let mut db = app.db.admin_conn().await;
    let rows: Vec<(uuid::Uuid, uuid::Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT organization_id, id, name_sealed FROM files").fetch_all(&mut db).await.unwrap();
    let found: Vec<String> = rows
        .into_iter()
        .filter(|(org, id, sealed)| {
            use clientflow::platform::ids::{FileId, OrgId};
            let (org, id) = (OrgId::from_uuid(*org), FileId::from_uuid(*id));
            clientflow::work::files::open_name(&app.state.keys, org, id, Some(sealed), None).unwrap() == name
        })
        .map(|(_, id, _)| id.to_string())
        .collect();
    assert_eq!(found.len(), 1, "files named {name}: {found:?}");
    found.into_iter().next().unwrap()
}

async fn columns_of(app: &TestApp, project: &str) -> Vec<String> {
    let mut db = app.db.admin_conn().await;
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM board_columns WHERE project_id = $1::uuid ORDER BY position")
            .bind(project)
            .fetch_all(&mut db)
            .await
            .unwrap();
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// The board column (`<section … data-column="id">`) of the project page that holds `text`.
fn column_holding(html: &str, text: &str) -> Option<String> {
    html.split("data-column=\"")
        .skip(1)
        .find(|section| {
            let section = section.split("</section>").next().unwrap();
            section.contains(text)
        })
        .map(|s| s.split('"').next().unwrap().to_string())
}

/// A multipart upload like a browser sends it (the CSRF token is one of the form's fields).
async fn upload(
    b: &Browser,
    token: Option<&str>,
    path: &str,
    name: &str,
    bytes: &[u8],
    shared: bool,
) -> reqwest::Response {
    let boundary = "----clientflow-test-7d2f91";
    let mut body = Vec::new();
    let mut text = |k: &str, v: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        )
    };
    if let Some(t) = token {
        text("csrf_token", t);
    }
    if shared {
        text("shared_with_client", "on");
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b.client
        .post(b.url(path))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("origin", b.base_url.clone())
        .body(body)
        .send()
        .await
        .unwrap()
}

struct Owner {
    browser: Browser,
    token: String,
    slug: String,
}

async fn owner_with_org(app: &TestApp, name: &str) -> Owner {
    let mut browser = sign_up(app, &format!("owner@{name}.test")).await;
    let slug = create_org(&mut browser, name).await;
    let token = session_token(&mut browser).await;
    Owner { browser, token, slug }
}

async fn new_client(o: &Owner, name: &str) -> String {
    let loc = redirected(post(&o.browser, &o.token, &format!("/o/{}/clients", o.slug), &[("name", name)]).await).await;
    id_in(&loc, "clients")
}

async fn new_project(o: &Owner, name: &str, client: &str, visible: bool) -> String {
    let mut fields = vec![("name", name), ("client_id", client), ("status", "active")];
    if visible {
        fields.push(("visible_to_client", "on"));
    }
    let loc = redirected(post(&o.browser, &o.token, &format!("/o/{}/projects", o.slug), &fields).await).await;
    id_in(&loc, "projects")
}

async fn new_task(app: &TestApp, o: &Owner, project: &str, title: &str, visible: bool) -> String {
    let mut fields = vec![("title", title)];
    if visible {
        fields.push(("visible_to_client", "on"));
    }
    let path = format!("/o/{}/projects/{project}/tasks", o.slug);
    redirected(post(&o.browser, &o.token, &path, &fields).await).await;
    id_by(app, "SELECT id FROM tasks WHERE title = $1", title).await
}

async fn new_invoice(o: &Owner, client: &str, lines: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> String {
    let names: Vec<[String; 3]> =
        (0..lines.len()).map(|i| [format!("description_{i}"), format!("quantity_{i}"), format!("price_{i}")]).collect();
    let mut fields: Vec<(&str, &str)> = vec![("client_id", client)];
    for (n, (d, q, p)) in names.iter().zip(lines) {
        fields.extend([(n[0].as_str(), *d), (n[1].as_str(), *q), (n[2].as_str(), *p)]);
    }
    fields.extend_from_slice(extra);
    let loc = redirected(post(&o.browser, &o.token, &format!("/o/{}/invoices", o.slug), &fields).await).await;
    id_in(&loc, "invoices")
}

// ---- the main flow ----

#[tokio::test]
async fn clients_projects_board_comments_time_and_invoices_through_the_pages() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "flow").await;
    let slug = o.slug.clone();

    // The navigation leads to the new pages.
    let home = page(&mut o.browser, &format!("/o/{slug}")).await;
    for link in ["clients", "projects", "invoices", "settings"] {
        assert!(home.contains(&format!("href=\"/o/{slug}/{link}\"")), "{link} missing from the navigation");
    }
    // Each settings page leads to the others.
    for at in ["settings", "settings/security", "settings/roles", "settings/api-keys"] {
        let html = page(&mut o.browser, &format!("/o/{slug}/{at}")).await;
        for link in ["settings", "settings/security", "settings/roles", "settings/api-keys"] {
            assert!(html.contains(&format!("href=\"/o/{slug}/{link}\"")), "{link} missing from {at}");
        }
    }

    // Clients: a form with a per-field message, then a client with a contact.
    let res = post(&o.browser, &o.token, &format!("/o/{slug}/clients"), &[("name", " "), ("email", "nope")]).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("<strong>Name</strong>: is required"), "{html}");
    let acme = new_client(&o, "Acme Corp").await;
    let res = post(
        &o.browser,
        &o.token,
        &format!("/o/{slug}/clients/{acme}/contacts"),
        &[("name", "Ada Buyer"), ("email", "ada@acme.test"), ("phone", ""), ("title", "Purchasing")],
    )
    .await;
    redirected(res).await;
    let detail = page(&mut o.browser, &format!("/o/{slug}/clients/{acme}")).await;
    assert!(detail.contains("Ada Buyer") && detail.contains("Purchasing"));
    let contact = id_by(&app, "SELECT id FROM client_contacts WHERE name = $1", "Ada Buyer").await;
    let path = format!("/o/{slug}/clients/{acme}/contacts/{contact}/delete");
    // Unconfirmed, the route asks first (naming what is lost) and changes nothing; its form
    // repeats the request with the confirmation.
    let res = post(&o.browser, &o.token, &path, &[]).await;
    assert_eq!(res.status(), 200);
    let asked = res.text().await.unwrap();
    assert!(asked.contains("Remove this contact?") && asked.contains("name=\"confirm\" value=\"yes\""), "{asked}");
    assert!(asked.contains(&format!("action=\"{path}\"")), "{asked}");
    assert!(page(&mut o.browser, &format!("/o/{slug}/clients/{acme}")).await.contains("Ada Buyer"));
    redirected(post(&o.browser, &o.token, &path, CONFIRM).await).await;
    assert!(!page(&mut o.browser, &format!("/o/{slug}/clients/{acme}")).await.contains("Ada Buyer"));
    // Edit with a bad email: 422 and the typed values come back.
    let path = format!("/o/{slug}/clients/{acme}/edit");
    let res = post(&o.browser, &o.token, &path, &[("name", "Acme Corporation"), ("email", "not-an-email")]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("value=\"Acme Corporation\""));
    redirected(post(&o.browser, &o.token, &path, &[("name", "Acme Corp"), ("company", "Acme Holdings")]).await).await;

    // Search, status filter and pagination.
    {
        let mut db = app.db.admin_conn().await;
        for i in 0..30 {
            sqlx::query(
                "INSERT INTO clients (organization_id, id, name) SELECT id, $2, $3 FROM organizations WHERE slug = $1",
            )
            .bind(&slug)
            .bind(uuid::Uuid::now_v7())
            .bind(format!("Filler {i:02}"))
            .execute(&mut db)
            .await
            .unwrap();
        }
    }
    let list = page(&mut o.browser, &format!("/o/{slug}/clients?q=acme")).await;
    assert!(list.contains("Acme Corp") && !list.contains("Filler"));
    let first = page(&mut o.browser, &format!("/o/{slug}/clients")).await;
    assert!(first.contains("1–25 of 31"), "{first}");
    assert!(first.contains(&format!("href=\"/o/{slug}/clients?offset=25\"")));
    let second = page(&mut o.browser, &format!("/o/{slug}/clients?offset=25")).await;
    assert!(second.contains("26–31 of 31") && second.contains("Filler 29"));
    let throwaway = new_client(&o, "Short-lived").await;
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/clients/{throwaway}/archive"), &[]).await).await;
    assert!(!page(&mut o.browser, &format!("/o/{slug}/clients?q=short")).await.contains("Short-lived"));
    assert!(page(&mut o.browser, &format!("/o/{slug}/clients?q=short&status=archived")).await.contains("Short-lived"));
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/clients/{throwaway}/restore"), &[]).await).await;
    let loc =
        redirected(post(&o.browser, &o.token, &format!("/o/{slug}/clients/{throwaway}/delete"), CONFIRM).await).await;
    assert_eq!(loc, format!("/o/{slug}/clients"));

    // A project with its board.
    let res =
        post(&o.browser, &o.token, &format!("/o/{slug}/projects"), &[("name", "Site"), ("due_date", "31/12")]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("<strong>Due date</strong>"));
    let project = new_project(&o, "Website relaunch", &acme, true).await;
    let cols = columns_of(&app, &project).await;
    assert_eq!(cols.len(), 3);
    let task = new_task(&app, &o, &project, "Design the homepage", false).await;
    let board = page(&mut o.browser, &format!("/o/{slug}/projects/{project}")).await;
    assert!(board.contains("src=\"/static/board.js\""));
    assert_eq!(column_holding(&board, "Design the homepage").as_deref(), Some(cols[0].as_str()));
    assert!(page(&mut o.browser, &format!("/o/{slug}/projects?q=relaunch")).await.contains("Website relaunch"));
    assert!(!page(&mut o.browser, &format!("/o/{slug}/projects?status=completed")).await.contains("Website relaunch"));

    // Moving a card without JavaScript: the card's own form.
    let move_path = format!("/o/{slug}/tasks/{task}/move");
    let loc = redirected(post(&o.browser, &o.token, &move_path, &[("column_id", &cols[1])]).await).await;
    assert_eq!(loc, format!("/o/{slug}/projects/{project}"), "back to the board");
    let board = page(&mut o.browser, &format!("/o/{slug}/projects/{project}")).await;
    assert_eq!(column_holding(&board, "Design the homepage").as_deref(), Some(cols[1].as_str()));
    // What board.js sends: the token in a header, asking for JSON.
    let js_move = |token: Option<&str>| {
        let mut req = o
            .browser
            .client
            .post(o.browser.url(&move_path))
            .header("origin", o.browser.base_url.clone())
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("column_id={}", cols[2]));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    assert_eq!(js_move(None).await.unwrap().status(), 403, "no token, no move");
    // The answer is the project's counts, for the header's "N of M tasks done".
    let res = js_move(Some(&o.token)).await.unwrap();
    assert_eq!(res.status(), 200);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["progress"], serde_json::json!({"done": 1, "total": 1, "overdue": 0}), "moved into Done");
    let board = page(&mut o.browser, &format!("/o/{slug}/projects/{project}")).await;
    assert_eq!(column_holding(&board, "Design the homepage").as_deref(), Some(cols[2].as_str()));
    // A column of another project is refused with a field message.
    let other = new_project(&o, "Other project", "", false).await;
    let other_cols = columns_of(&app, &other).await;
    let res = post(&o.browser, &o.token, &move_path, &[("column_id", &other_cols[0])]).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("column_id"));

    // Columns: add, move left, delete.
    let path = format!("/o/{slug}/projects/{project}/columns");
    redirected(post(&o.browser, &o.token, &path, &[("name", "Review")]).await).await;
    let cols = columns_of(&app, &project).await;
    assert_eq!(cols.len(), 4);
    let review = cols[3].clone();
    let path = format!("/o/{slug}/projects/{project}/columns/{review}/move");
    redirected(post(&o.browser, &o.token, &path, &[("direction", "left")]).await).await;
    assert_eq!(columns_of(&app, &project).await[2], review);
    let path = format!("/o/{slug}/projects/{project}/columns/{review}/delete");
    redirected(post(&o.browser, &o.token, &path, CONFIRM).await).await;
    assert_eq!(columns_of(&app, &project).await.len(), 3);

    // The task page: edit, subtask, comments, time, activity.
    let owner_id = crate::support::orgs::user_id(&app, "owner@flow.test").await;
    let edit = format!("/o/{slug}/tasks/{task}/edit");
    let mut fields = vec![
        ("title", "Design the homepage"),
        ("description", "Hero, navigation, footer"),
        ("status", "in_progress"),
        ("priority", "high"),
        ("due_date", "2030-02-30"),
        ("estimate_minutes", "240"),
        ("column_id", cols[2].as_str()),
        ("parent_id", ""),
        ("visible_to_client", "on"),
        ("assignee", owner_id.as_str()),
    ];
    let res = post(&o.browser, &o.token, &edit, &fields).await;
    assert_eq!(res.status(), 422, "an impossible date is refused");
    let html = res.text().await.unwrap();
    assert!(html.contains("<strong>Due date</strong>") && html.contains("Hero, navigation, footer"));
    fields[4] = ("due_date", "2030-02-28");
    redirected(post(&o.browser, &o.token, &edit, &fields).await).await;
    let res = post(&o.browser, &o.token, &edit, &[("title", "x"), ("project_id", &other)]).await;
    assert_eq!(res.status(), 422, "unknown fields are refused");
    let path = format!("/o/{slug}/tasks/{task}/subtasks");
    redirected(post(&o.browser, &o.token, &path, &[("title", "Pick the fonts")]).await).await;
    let path = format!("/o/{slug}/tasks/{task}/comments");
    redirected(post(&o.browser, &o.token, &path, &[("body", "Internal: budget is tight")]).await).await;
    redirected(
        post(&o.browser, &o.token, &path, &[("body", "Draft is ready for you"), ("client_visible", "on")]).await,
    )
    .await;
    let res = post(&o.browser, &o.token, &path, &[("body", "")]).await;
    assert_eq!(res.status(), 422);
    let time = format!("/o/{slug}/projects/{project}/time");
    let res = post(&o.browser, &o.token, &time, &[("minutes", "0"), ("task_id", &task)]).await;
    assert_eq!(res.status(), 422);
    let loc = redirected(
        post(&o.browser, &o.token, &time, &[("minutes", "90"), ("task_id", &task), ("note", "Wireframes")]).await,
    )
    .await;
    assert_eq!(loc, format!("/o/{slug}/tasks/{task}#time"));
    let html = page(&mut o.browser, &format!("/o/{slug}/tasks/{task}")).await;
    for expected in ["Pick the fonts", "Internal: budget is tight", "Draft is ready for you", "1h 30m", "Wireframes"] {
        assert!(html.contains(expected), "{expected} missing from the task page");
    }
    let activity = html.split("id=\"activity\"").nth(1).unwrap();
    assert!(activity.contains("<td>Priority</td><td>Normal</td><td>High</td>"), "{activity}");
    assert!(
        activity.contains("<td>Assignees</td><td></td><td>Test User</td>") && !activity.contains("owner@flow.test"),
        "assignees are shown by name: {activity}"
    );
    let comment = id_by(&app, "SELECT id FROM comments WHERE body = $1", "Internal: budget is tight").await;
    let path = format!("/o/{slug}/tasks/{task}/comments/{comment}/delete");
    redirected(post(&o.browser, &o.token, &path, CONFIRM).await).await;
    assert!(!page(&mut o.browser, &format!("/o/{slug}/tasks/{task}")).await.contains("budget is tight"));
    let project_page = page(&mut o.browser, &format!("/o/{slug}/projects/{project}/time")).await;
    assert!(project_page.contains("Wireframes") && project_page.contains("<th>1h 30m</th>"));
    let entry = id_by(&app, "SELECT id FROM time_entries WHERE note = $1", "Wireframes").await;
    let path = format!("/o/{slug}/projects/{other}/time/{entry}/delete");
    assert_eq!(post(&o.browser, &o.token, &path, CONFIRM).await.status(), 404, "the entry is not in that project");
    let path = format!("/o/{slug}/projects/{project}/time/{entry}/delete");
    redirected(post(&o.browser, &o.token, &path, CONFIRM).await).await;

    // Invoices: lines typed as decimals, totals in integer minor units.
    let res = post(
        &o.browser,
        &o.token,
        &format!("/o/{slug}/invoices"),
        &[("client_id", &acme), ("description_0", "Design"), ("quantity_0", "1,5"), ("price_0", "99.99")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("Line 1 quantity") && html.contains("value=\"1,5\""), "{html}");
    let form = page(&mut o.browser, &format!("/o/{slug}/invoices/new?client_id={acme}")).await;
    assert!(form.contains("name=\"description_2\"") && !form.contains("name=\"description_3\""), "three empty rows");
    let invoice = new_invoice(
        &o,
        &acme,
        &[("Design", "1.5", "99.99"), ("", "", ""), ("Hosting", "1", "10")],
        &[("tax_rate", "19"), ("currency", "EUR")],
    )
    .await;
    let html = page(&mut o.browser, &format!("/o/{slug}/invoices/{invoice}")).await;
    for expected in ["Draft invoice", "149.99", "159.99", "Tax (19%)", "30.40", "190.39 EUR"] {
        assert!(html.contains(expected), "{expected} missing: {html}");
    }
    let edit_form = page(&mut o.browser, &format!("/o/{slug}/invoices/{invoice}/edit")).await;
    assert!(edit_form.contains("value=\"1.5\"") && edit_form.contains("value=\"99.99\""));
    assert!(edit_form.contains("name=\"description_4\"") && !edit_form.contains("name=\"description_5\""));
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{invoice}/send"), &[]).await).await;
    let html = page(&mut o.browser, &format!("/o/{slug}/invoices/{invoice}")).await;
    let year = app.clock.now_utc().year();
    assert!(html.contains(&format!("Invoice INV-{year}-0001")) && html.contains(">Sent<"), "{html}");
    let res = post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{invoice}/edit"), &[("notes", "x")]).await;
    assert_eq!(res.status(), 409, "a sent invoice is immutable");
    let print = page(&mut o.browser, &format!("/o/{slug}/invoices/{invoice}/print")).await;
    assert!(print.contains("/static/print.css") && print.contains("190.39 EUR") && print.contains("Acme Corp"));
    assert!(!print.contains("org_nav") && !print.contains("/settings"), "the print view has no navigation");
    // Filters: status (overdue included) and client.
    let late =
        new_invoice(&o, &acme, &[("Old work", "2", "50")], &[("issue_date", "2020-01-01"), ("due_date", "2020-01-31")])
            .await;
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{late}/send"), &[]).await).await;
    let overdue = page(&mut o.browser, &format!("/o/{slug}/invoices?status=overdue")).await;
    assert!(overdue.contains(&late) && !overdue.contains(&invoice));
    let sent = page(&mut o.browser, &format!("/o/{slug}/invoices?status=sent&client_id={acme}")).await;
    assert!(sent.contains(&invoice) && !sent.contains(&late));
    // Statuses read as words, in the list as on the invoice.
    assert!(overdue.contains(">Overdue</span>") && !overdue.contains(">overdue<"), "{overdue}");
    // Marking paid and voiding can't be undone: the buttons ask first, and without the
    // confirmation the route asks on a page of its own and changes nothing.
    let html = page(&mut o.browser, &format!("/o/{slug}/invoices/{late}")).await;
    assert!(
        html.contains("data-confirm=\"Mark this invoice paid in full?")
            && html.contains("data-confirm=\"Void this invoice?")
    );
    for (action, question) in [("pay", "Mark this invoice paid in full?"), ("void", "Void this invoice?")] {
        let res = post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{late}/{action}"), &[]).await;
        assert_eq!(res.status(), 200, "{action}");
        let asked = res.text().await.unwrap();
        assert!(asked.contains(question) && asked.contains("name=\"confirm\" value=\"yes\""), "{asked}");
    }
    assert!(page(&mut o.browser, &format!("/o/{slug}/invoices/{late}")).await.contains(">Overdue</span>"));
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{invoice}/pay"), CONFIRM).await).await;
    assert!(page(&mut o.browser, &format!("/o/{slug}/invoices?status=paid")).await.contains(&invoice));
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{late}/void"), CONFIRM).await).await;
    assert!(page(&mut o.browser, &format!("/o/{slug}/invoices/{late}")).await.contains(">Void</span>"));
    let draft = new_invoice(&o, &acme, &[("Maybe", "1", "1")], &[]).await;
    let loc =
        redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{draft}/delete"), CONFIRM).await).await;
    assert_eq!(loc, format!("/o/{slug}/invoices"));
    let res = post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{late}/delete"), CONFIRM).await;
    assert_eq!(res.status(), 409, "only drafts are deleted");
}

#[tokio::test]
async fn files_upload_download_and_signed_links() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.body_limit_bytes = 16 * 1024;
            c.files.max_upload_bytes = 64 * 1024;
        })
        .spawn()
        .await;
    let mut o = owner_with_org(&app, "files").await;
    let slug = o.slug.clone();
    let client = new_client(&o, "Files client").await;
    let project = new_project(&o, "Files project", &client, true).await;
    let path = format!("/o/{slug}/projects/{project}/files");

    // Larger than an ordinary form may be, within the upload limit.
    let contents: Vec<u8> = b"quarterly report\n".iter().cycle().take(40 * 1024).copied().collect();
    let loc = redirected(upload(&o.browser, Some(&o.token), &path, "report.txt", &contents, false).await).await;
    assert_eq!(loc, format!("/o/{slug}/projects/{project}/files"), "back to the project's files tab");
    let file = file_named(&app, "report.txt").await;
    let html = page(&mut o.browser, &loc).await;
    assert!(html.contains("report.txt") && html.contains("40.0 KiB"));
    // Other routes keep the ordinary limit.
    let big_form = "x".repeat(40 * 1024);
    let res = post(&o.browser, &o.token, &format!("/o/{slug}/clients"), &[("name", &big_form)]).await;
    assert_eq!(res.status(), 413);

    // Download through an authorized request.
    let res = o.browser.get(&format!("/o/{slug}/files/{file}/download")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"report.txt\"; filename*=UTF-8''report%2Etxt"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["content-security-policy"], "sandbox; default-src 'none'");
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.bytes().await.unwrap().as_ref(), contents.as_slice());
    assert_eq!(app.browser().get(&format!("/o/{slug}/files/{file}/download")).await.status(), 303, "signed out");

    // Refused uploads.
    let res = upload(&o.browser, None, &path, "notes.txt", b"hello", false).await;
    assert_eq!(res.status(), 403, "no CSRF token");
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00";
    let res = upload(&o.browser, Some(&o.token), &path, "invoice.pdf", exe, false).await;
    assert_eq!(res.status(), 415);
    assert!(res.text().await.unwrap().contains("can be uploaded"));
    let too_big = vec![b'a'; 64 * 1024 + 1];
    let res = upload(&o.browser, Some(&o.token), &path, "big.txt", &too_big, false).await;
    assert_eq!(res.status(), 413);
    let far_too_big = vec![b'a'; 512 * 1024];
    let res = upload(&o.browser, Some(&o.token), &path, "huge.txt", &far_too_big, false).await;
    assert_eq!(res.status(), 413);
    let mut db = app.db.admin_conn().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut db).await.unwrap();
    assert_eq!(count, 1, "refused uploads leave nothing behind");

    // Sharing with the client toggles.
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/files/{file}/share"), &[("shared", "on")]).await).await;
    let shared: bool = sqlx::query_scalar("SELECT shared_with_client FROM files").fetch_one(&mut db).await.unwrap();
    assert!(shared);

    // A signed link works without a session until it expires, and only as signed.
    let res = post(&o.browser, &o.token, &format!("/o/{slug}/files/{file}/link"), &[]).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let start = html.find(&format!("{}/files/", app.base_url)).expect("a link on the page");
    let link = html[start..].split('"').next().unwrap().replace("&#38;", "&");
    let stranger = app.browser();
    let res = stranger.client.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 200, "{link}");
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"report.txt\"; filename*=UTF-8''report%2Etxt"
    );
    assert_eq!(res.bytes().await.unwrap().len(), contents.len());
    let (base, signature) = link.split_once("signature=").unwrap();
    let mut forged = signature.to_string();
    forged.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
    let res = stranger.client.get(format!("{base}signature={forged}")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let expires: i64 = link.split("expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let longer = link.replace(&format!("expires={expires}"), &format!("expires={}", expires + 3600));
    assert_eq!(stranger.client.get(&longer).send().await.unwrap().status(), 403, "the expiry is signed");
    let other_org = link.replace(
        &format!("/files/{}/", link.split('/').nth(4).unwrap()),
        "/files/00000000-0000-0000-0000-000000000000/",
    );
    assert_eq!(stranger.client.get(&other_org).send().await.unwrap().status(), 403);
    app.clock.advance(time::Duration::minutes(i64::from(app.config.files.link_minutes) + 1));
    assert_eq!(stranger.client.get(&link).send().await.unwrap().status(), 403, "expired");

    // Deletion.
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/files/{file}/delete"), CONFIRM).await).await;
    assert_eq!(o.browser.get(&format!("/o/{slug}/files/{file}/download")).await.status(), 404);
}

#[tokio::test]
async fn an_api_key_is_shown_once_and_can_be_revoked() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "keys").await;
    let slug = o.slug.clone();
    let path = format!("/o/{slug}/settings/api-keys");
    let res = post(
        &o.browser,
        &o.token,
        &path,
        &[("name", ""), ("role", "member"), ("expires_in_days", ""), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 422);
    let res = post(
        &o.browser,
        &o.token,
        &path,
        &[("name", "CI"), ("role", "member"), ("expires_in_days", "0"), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("expires_in_days"));
    let res = post(
        &o.browser,
        &o.token,
        &path,
        &[("name", "Deploy bot"), ("role", "manager"), ("expires_in_days", "30"), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let at = html.find("value=\"cf_live_").expect("the secret is shown");
    let secret = html[at + 7..].split('"').next().unwrap().to_string();
    let now = app.clock.now_utc();
    let principal = access::verify_api_key(&app.app_db, &secret, now).await.unwrap().expect("the key works");
    assert_eq!(principal.role().as_str(), "manager");
    // Never again: the list shows the prefix only.
    let list = page(&mut o.browser, &path).await;
    assert!(!list.contains(&secret));
    assert!(list.contains("Deploy bot") && list.contains(&secret[..12]) && list.contains(">Manager<"));
    let mut db = app.db.admin_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_one(&mut db).await.unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&secret[8..]), "stored hashed");
    // Revoked: the key stops working and the list says when.
    let key = id_by(&app, "SELECT id FROM api_keys WHERE name = $1", "Deploy bot").await;
    let loc = redirected(post(&o.browser, &o.token, &format!("{path}/{key}/revoke"), &[]).await).await;
    assert_eq!(loc, path);
    assert!(access::verify_api_key(&app.app_db, &secret, now).await.unwrap().is_none());
    let list = page(&mut o.browser, &path).await;
    assert!(!list.contains(&format!("{key}/revoke")));
}

// ---- who sees what ----

#[tokio::test]
async fn members_see_only_the_projects_they_belong_to() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "scope").await;
    let slug = org.slug.clone();
    let owner_browser = org.people.remove("owner").unwrap().browser;
    let mut o = Owner { token: String::new(), browser: owner_browser, slug: slug.clone() };
    o.token = session_token(&mut o.browser).await;
    let mine = new_project(&o, "Member project", &org.client_id, false).await;
    let theirs = new_project(&o, "Team project", &org.client_id, false).await;
    let member_id = org.people["member"].user_id.clone();
    let path = format!("/o/{slug}/projects/{mine}/members");
    redirected(post(&o.browser, &o.token, &path, &[("user_id", &member_id)]).await).await;
    let my_task = new_task(&app, &o, &mine, "Visible task", false).await;
    let their_task = new_task(&app, &o, &theirs, "Hidden task", false).await;
    let upload_path = format!("/o/{slug}/projects/{theirs}/files");
    redirected(upload(&o.browser, Some(&o.token), &upload_path, "secret.txt", b"secret plans", false).await).await;
    let their_file = file_named(&app, "secret.txt").await;
    let other_client = new_client(&o, "Unrelated Holdings").await;
    new_project(&o, "Unrelated work", &other_client, false).await;

    let member = &mut org.people.get_mut("member").unwrap().browser;
    let token = session_token(member).await;
    // Clients: only those of the member's projects.
    let clients = page(member, &format!("/o/{slug}/clients?status=all")).await;
    assert!(!clients.contains("Unrelated Holdings"), "{clients}");
    assert!(!page(member, &format!("/o/{slug}/clients?q=Unrelated")).await.contains("Unrelated Holdings"));
    assert_eq!(member.get(&format!("/o/{slug}/clients/{other_client}")).await.status(), 404);
    assert_eq!(member.get(&format!("/o/{slug}/clients/{}", org.client_id)).await.status(), 200);
    let list = page(member, &format!("/o/{slug}/projects?status=all")).await;
    assert!(list.contains("Member project"), "{list}");
    assert!(!list.contains("Team project"));
    assert!(!list.contains(&format!("href=\"/o/{slug}/invoices\"")), "no invoices in a Member's navigation");
    assert_eq!(member.get(&format!("/o/{slug}/projects/{mine}")).await.status(), 200);
    assert_eq!(member.get(&format!("/o/{slug}/tasks/{my_task}")).await.status(), 200);
    for url in [
        format!("/o/{slug}/projects/{theirs}"),
        format!("/o/{slug}/tasks/{their_task}"),
        format!("/o/{slug}/files/{their_file}/download"),
    ] {
        assert_eq!(member.get(&url).await.status(), 404, "{url}");
    }
    for (url, fields) in [
        (format!("/o/{slug}/projects/{theirs}/tasks"), vec![("title", "sneaky")]),
        (format!("/o/{slug}/tasks/{their_task}/comments"), vec![("body", "sneaky")]),
        (format!("/o/{slug}/tasks/{their_task}/move"), vec![("column_id", "00000000-0000-0000-0000-000000000000")]),
        (format!("/o/{slug}/projects/{theirs}/time"), vec![("minutes", "5")]),
    ] {
        assert_eq!(member.post_with(&url, &fields, Some(&token), true).await.status(), 404, "{url}");
    }
    // Taken off the project: gone from the list and from direct addresses.
    let path = format!("/o/{slug}/projects/{mine}/members/{member_id}/remove");
    redirected(post(&o.browser, &o.token, &path, CONFIRM).await).await;
    let member = &mut org.people.get_mut("member").unwrap().browser;
    assert!(!page(member, &format!("/o/{slug}/projects?status=all")).await.contains("Member project"));
    assert_eq!(member.get(&format!("/o/{slug}/projects/{mine}")).await.status(), 404);
    assert_eq!(member.get(&format!("/o/{slug}/tasks/{my_task}")).await.status(), 404);
    assert_eq!(member.get(&format!("/o/{slug}/clients/{}", org.client_id)).await.status(), 404);
}

#[tokio::test]
async fn the_portal_shows_a_client_exactly_its_own_visible_work() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "portal").await;
    let slug = org.slug.clone();
    let mine = org.client_id.clone();
    let owner_browser = org.people.remove("owner").unwrap().browser;
    let mut o = Owner { token: String::new(), browser: owner_browser, slug: slug.clone() };
    o.token = session_token(&mut o.browser).await;
    let other = new_client(&o, "Other client").await;
    let shown = new_project(&o, "Shown project", &mine, true).await;
    let internal = new_project(&o, "Internal project", &mine, false).await;
    let others = new_project(&o, "Other client project", &other, true).await;
    let visible_task = new_task(&app, &o, &shown, "Client-facing task", true).await;
    new_task(&app, &o, &shown, "Behind the scenes task", false).await;
    new_task(&app, &o, &others, "Other client task", true).await;
    let comments = format!("/o/{slug}/tasks/{visible_task}/comments");
    redirected(post(&o.browser, &o.token, &comments, &[("body", "Hello client"), ("client_visible", "on")]).await)
        .await;
    // A second task shown to the client, done, with a comment of its own.
    let finished = new_task(&app, &o, &shown, "Finished task", true).await;
    let done_column = columns_of(&app, &shown).await.pop().unwrap();
    let move_path = format!("/o/{slug}/tasks/{finished}/move");
    redirected(post(&o.browser, &o.token, &move_path, &[("column_id", &done_column)]).await).await;
    let finished_comments = format!("/o/{slug}/tasks/{finished}/comments");
    redirected(
        post(&o.browser, &o.token, &finished_comments, &[("body", "Done and dusted"), ("client_visible", "on")]).await,
    )
    .await;
    redirected(post(&o.browser, &o.token, &comments, &[("body", "Team-only remark")]).await).await;
    let files = format!("/o/{slug}/projects/{shown}/files");
    redirected(upload(&o.browser, Some(&o.token), &files, "deliverable.pdf", b"%PDF-1.7 final", true).await).await;
    redirected(upload(&o.browser, Some(&o.token), &files, "draft.txt", b"internal draft", false).await).await;
    let other_files = format!("/o/{slug}/projects/{others}/files");
    redirected(upload(&o.browser, Some(&o.token), &other_files, "theirs.txt", b"other client", true).await).await;
    let deliverable = file_named(&app, "deliverable.pdf").await;
    let draft_file = file_named(&app, "draft.txt").await;
    let their_file = file_named(&app, "theirs.txt").await;
    let sent = new_invoice(&o, &mine, &[("Work", "1", "100")], &[]).await;
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{sent}/send"), &[]).await).await;
    let draft = new_invoice(&o, &mine, &[("Not yet", "1", "5")], &[]).await;
    let theirs = new_invoice(&o, &other, &[("Other work", "1", "7")], &[]).await;
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{theirs}/send"), &[]).await).await;

    let client = &mut org.people.get_mut("client").unwrap().browser;
    let res = client.get(&format!("/o/{slug}")).await;
    assert_eq!(location(&res), format!("/portal/{slug}"));
    let home = page(client, &format!("/portal/{slug}")).await;
    assert!(home.contains("Shown project") && home.contains(&sent));
    // How far along: the two tasks shown, not the one behind the scenes.
    assert!(home.contains("<span class=\"muted\">· 1 of 2 tasks done</span>"), "{home}");
    for hidden in ["Internal project", "Other client", &draft, &theirs, "href=\"/o/"] {
        assert!(!home.contains(hidden), "{hidden} shown on the portal home");
    }
    let project = page(client, &format!("/portal/{slug}/projects/{shown}")).await;
    assert!(project.contains("Client-facing task") && project.contains("Hello client"));
    assert!(project.contains("Client-facing task <span class=\"badge\">To do</span>"), "{project}");
    assert!(project.contains("<p class=\"muted\">1 of 2 tasks done"), "{project}");
    // Each comment under its own task.
    let at = |text: &str| project.find(text).unwrap_or_else(|| panic!("{text}: {project}"));
    assert!(at("Client-facing task") < at("Hello client") && at("Hello client") < at("Finished task"), "{project}");
    assert!(at("Finished task") < at("Done and dusted"), "{project}");
    assert!(project.contains(&format!("/portal/{slug}/files/{deliverable}")));
    for hidden in ["Behind the scenes", "Team-only remark", "draft.txt", &draft_file] {
        assert!(!project.contains(hidden), "{hidden} shown on the portal project page");
    }
    let invoice = page(client, &format!("/portal/{slug}/invoices/{sent}")).await;
    assert!(invoice.contains("100.00") && invoice.contains("/static/print.css"));
    assert!(!invoice.contains("method=\"post\""), "the portal is read-only");
    let res = client.get(&format!("/portal/{slug}/files/{deliverable}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"%PDF-1.7 final");
    for url in [
        format!("/portal/{slug}/projects/{internal}"),
        format!("/portal/{slug}/projects/{others}"),
        format!("/portal/{slug}/invoices/{draft}"),
        format!("/portal/{slug}/invoices/{theirs}"),
        format!("/portal/{slug}/files/{draft_file}"),
        format!("/portal/{slug}/files/{their_file}"),
    ] {
        assert_eq!(client.get(&url).await.status(), 404, "{url}");
    }
    // Nothing internal, lists included.
    for url in [
        format!("/o/{slug}/clients"),
        format!("/o/{slug}/projects"),
        format!("/o/{slug}/projects/{shown}"),
        format!("/o/{slug}/tasks/{visible_task}"),
        format!("/o/{slug}/invoices"),
        format!("/o/{slug}/invoices/{sent}/print"),
        format!("/o/{slug}/files/{deliverable}/download"),
        format!("/o/{slug}/settings/api-keys"),
    ] {
        assert_eq!(client.get(&url).await.status(), 403, "{url}");
    }
    // And the portal is the Client's alone.
    assert_eq!(o.browser.get(&format!("/portal/{slug}")).await.status(), 403);
}

/// How many links to `/o/{slug}/{kind}/…` a page has.
fn links_to(html: &str, slug: &str, kind: &str) -> usize {
    html.matches(&format!("href=\"/o/{slug}/{kind}/")).count()
}

#[tokio::test]
async fn lists_search_and_page_tasks_time_files_and_invoices() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "lists").await;
    let slug = o.slug.clone();
    let north = new_client(&o, "Northwind").await;
    let acme = new_client(&o, "Acme").await;
    let project = new_project(&o, "Busy project", &north, false).await;
    let org_id = id_by(&app, "SELECT id FROM organizations WHERE slug = $1", &slug).await;
    let owner_id = id_by(&app, "SELECT id FROM users WHERE email = $1", "owner@lists.test").await;
    let column = columns_of(&app, &project).await.remove(0);
    // A malformed page number is refused with a page that names it.
    let res = o.browser.get(&format!("/o/{slug}/time?offset=lots")).await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("<strong>offset</strong>: has the wrong format"), "{html}");
    {
        let mut db = app.db.admin_conn().await;
        for sql in [
            "INSERT INTO tasks (organization_id, id, project_id, column_id, title, position, created_at, updated_at) \
             SELECT $1::uuid, gen_random_uuid(), $2::uuid, $3::uuid, 'Routine chore ' || i, i, now(), now() \
             FROM generate_series(1, 30) i",
            "INSERT INTO tasks (organization_id, id, project_id, column_id, title, position, created_at, updated_at) \
             SELECT $1::uuid, gen_random_uuid(), $2::uuid, $3::uuid, 'Special widget ' || i, 100 + i, now(), now() \
             FROM generate_series(1, 2) i",
        ] {
            sqlx::query(sql).bind(&org_id).bind(&project).bind(&column).execute(&mut db).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO time_entries (organization_id, id, project_id, user_id, minutes, spent_on, created_at) \
             SELECT $1::uuid, gen_random_uuid(), $2::uuid, $3::uuid, 30, current_date, now() FROM generate_series(1, 32)",
        )
        .bind(&org_id)
        .bind(&project)
        .bind(&owner_id)
        .execute(&mut db)
        .await
        .unwrap();
        let bulk: Vec<(uuid::Uuid, String)> =
            (1..=32).map(|i| (uuid::Uuid::now_v7(), format!("bulk-{i}.txt"))).collect();
        let org: clientflow::platform::ids::OrgId = org_id.parse().unwrap();
        crate::support::work::insert_files(&app, org, project.parse().unwrap(), &bulk, None).await;
    }

    // Tasks: searched by title, paged 25 at a time with the filters kept.
    let html = page(&mut o.browser, &format!("/o/{slug}/tasks?q=widget")).await;
    assert_eq!(links_to(&html, &slug, "tasks"), 2, "{html}");
    assert!(html.contains("Special widget 1") && !html.contains("Routine chore"));
    // Status and priority in words.
    assert!(html.contains("<td>To do</td><td>Normal</td>") && !html.contains("<td>todo</td>"), "{html}");
    let html = page(&mut o.browser, &format!("/o/{slug}/tasks?q=chore&project_id={project}")).await;
    assert_eq!(links_to(&html, &slug, "tasks"), 25);
    let next = format!("/o/{slug}/tasks?q=chore&#38;project_id={project}&#38;offset=25");
    assert!(html.contains(&format!("href=\"{next}\" rel=\"next\"")), "{html}");
    let html = page(&mut o.browser, &next.replace("&#38;", "&")).await;
    assert_eq!(links_to(&html, &slug, "tasks"), 5);
    assert!(!html.contains("rel=\"next\""));
    assert!(html.contains("rel=\"prev\""));

    // Time and files: 32 each, 25 on the first page, 7 on the second.
    for (kind, row_link) in [("time", "projects"), ("files", "files")] {
        let first = page(&mut o.browser, &format!("/o/{slug}/{kind}")).await;
        // The nav links to projects too; count the rows' links only.
        let rows = |html: &str| html.split("<tbody>").nth(1).map(|b| links_to(b, &slug, row_link)).unwrap_or(0);
        assert_eq!(rows(&first), 25, "{kind}: {first}");
        assert!(first.contains(&format!("href=\"/o/{slug}/{kind}?offset=25\" rel=\"next\"")), "{kind}: {first}");
        let second = page(&mut o.browser, &format!("/o/{slug}/{kind}?offset=25")).await;
        assert_eq!(rows(&second), 7, "{kind}");
        assert!(!second.contains("rel=\"next\""), "{kind}");
        let elsewhere = page(&mut o.browser, &format!("/o/{slug}/{kind}?project_id={acme}")).await;
        assert_eq!(rows(&elsewhere), 0, "{kind}: the project filter (an id that is no project's)");
    }
    let (status, _) = o.browser.page(&format!("/o/{slug}/files?project_id=nope")).await;
    assert_eq!(status, 422, "a malformed filter is the filter's fault");

    // Invoices: by client name or number.
    let lines = [("Work", "1", "100")];
    let north_invoice = new_invoice(&o, &north, &lines, &[]).await;
    let acme_invoice = new_invoice(&o, &acme, &lines, &[]).await;
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/invoices/{acme_invoice}/send"), &[]).await).await;
    let html = page(&mut o.browser, &format!("/o/{slug}/invoices?q=northw")).await;
    assert!(html.contains(&north_invoice) && !html.contains(&acme_invoice), "{html}");
    assert!(html.contains("1–1 of 1"));
    let html = page(&mut o.browser, &format!("/o/{slug}/invoices?q=%231")).await;
    assert!(html.contains(&acme_invoice) && !html.contains(&north_invoice), "{html}");
}

#[tokio::test]
async fn task_edits_on_the_page_record_exact_old_and_new_values() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "webactivity").await;
    let slug = o.slug.clone();
    let client = new_client(&o, "Activity client").await;
    let project = new_project(&o, "Activity project", &client, false).await;
    let task = new_task(&app, &o, &project, "Sketch", false).await;
    let owner_id = id_by(&app, "SELECT id FROM users WHERE email = $1", "owner@webactivity.test").await;
    // New boards: To do, In progress, Done. A task's status is its column.
    let cols = columns_of(&app, &project).await;
    let edit = |fields: Vec<(&'static str, String)>| {
        let (o, path) = (&o, format!("/o/{slug}/tasks/{task}/edit"));
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(&o.browser, &o.token, &path, &fields).await
        }
    };
    let form = |title: &str, column: &str, priority: &str, due: &str, assignee: Option<&str>| {
        let mut f = vec![
            ("title", title.to_string()),
            ("description", String::new()),
            ("priority", priority.to_string()),
            ("due_date", due.to_string()),
            ("estimate_minutes", String::new()),
            ("column_id", column.to_string()),
            ("parent_id", String::new()),
        ];
        if let Some(a) = assignee {
            f.push(("assignee", a.to_string()));
        }
        f
    };
    redirected(edit(form("Sketch", &cols[0], "normal", "2030-03-01", None)).await).await;
    redirected(edit(form("Blueprint", &cols[1], "high", "2030-04-02", Some(&owner_id))).await).await;

    let rows = crate::support::work::activity_of(&app, &task).await;
    let who = "owner@webactivity.test".to_string();
    let row = |field: &str, old: Option<&str>, new: Option<&str>| {
        (who.clone(), field.to_string(), old.map(str::to_string), new.map(str::to_string))
    };
    let mut second_edit = rows[2..].to_vec();
    second_edit.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        (rows[..2].to_vec(), second_edit),
        (
            vec![row("created", None, Some("Sketch")), row("due_date", None, Some("2030-03-01"))],
            vec![
                row("assignees", Some(""), Some(&owner_id)),
                row("column", Some(&cols[0]), Some(&cols[1])),
                row("due_date", Some("2030-03-01"), Some("2030-04-02")),
                row("priority", Some("normal"), Some("high")),
                row("status", Some("todo"), Some("in_progress")),
                row("title", Some("Sketch"), Some("Blueprint")),
            ]
        )
    );
    // A third edit: an estimate, a parent, and shown to the client.
    let parent = new_task(&app, &o, &project, "Whole site", false).await;
    let mut third = form("Blueprint", &cols[1], "high", "2030-04-02", Some(&owner_id));
    third.retain(|f| f.0 != "estimate_minutes" && f.0 != "parent_id");
    third.extend([
        // The estimate typed as a duration, as time is.
        ("estimate_minutes", "1h 30m".to_string()),
        ("parent_id", parent.clone()),
        ("visible_to_client", "on".to_string()),
    ]);
    redirected(edit(third).await).await;
    // The page shows the history in words: fields, statuses, columns, people, the estimate as a
    // duration and the parent by its title, never a stored code or id.
    let html = page(&mut o.browser, &format!("/o/{slug}/tasks/{task}")).await;
    let history = html.split("id=\"activity\"").nth(1).unwrap();
    for change in [
        "<td>Created</td><td></td><td>Sketch</td>",
        "<td>Title</td><td>Sketch</td><td>Blueprint</td>",
        "<td>Due date</td><td>2030-03-01</td><td>2030-04-02</td>",
        "<td>Board column</td><td>To do</td><td>In progress</td>",
        "<td>Priority</td><td>Normal</td><td>High</td>",
        "<td>Assignees</td><td></td><td>Test User</td>",
        "<td>Estimate</td><td></td><td>1h 30m</td>",
        "<td>Parent task</td><td></td><td>Whole site</td>",
        "<td>Visible to the client</td><td>No</td><td>Yes</td>",
    ] {
        assert!(history.contains(change), "no {change} in {history}");
    }
    // The move is recorded as its status and its column; the page shows it once, as the column.
    assert!(!history.contains("<td>Status</td>"), "{history}");
    let recorded = "SELECT count(*) FROM task_activity WHERE task_id = $1::uuid AND field = 'status'";
    let statuses: i64 =
        sqlx::query_scalar(recorded).bind(&task).fetch_one(&mut app.db.admin_conn().await).await.unwrap();
    assert_eq!(statuses, 1, "the status change is still recorded");
    let tab = page(&mut o.browser, &format!("/o/{slug}/projects/{project}/activity")).await;
    assert!(tab.contains("moved it from To do to In progress") && !tab.contains("status To do"), "{tab}");
    for code in ["in_progress", "todo", "due_date", "normal", &owner_id, &parent, &cols[0], "true"] {
        assert!(!history.contains(&format!(">{code}<")), "{code} shown as stored: {history}");
    }
    // And the task itself in words: its priority, estimate, assignee and parent by title.
    let facts = html.split("id=\"activity\"").next().unwrap();
    for fact in [
        "<span class=\"badge\">High priority</span>",
        "<dt>Due</dt><dd>2030-04-02</dd>",
        "<dt>Estimate</dt><dd>1h 30m</dd>",
        "<dt>Assignees</dt><dd>Test User</dd>",
        &format!("<a href=\"/o/{slug}/tasks/{parent}\">Whole site</a>"),
    ] {
        assert!(facts.contains(fact), "no {fact} in {facts}");
    }
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM tasks WHERE id = '{task}' AND estimate_minutes = 90")).await,
        1
    );
    // The edit form gives the estimate back in a form it reads ("1:30"); longer than a day is
    // fine for an estimate, and what isn't a duration is refused by name, keeping what was typed.
    assert!(html.contains("name=\"estimate_minutes\" value=\"1:30\""), "{html}");
    // The time recorded on the task reads against its estimate.
    assert!(html.contains("<th>0m <span class=\"muted\">of 1h 30m estimated</span></th>"), "{html}");
    let path = format!("/o/{slug}/tasks/{task}/edit");
    let with_estimate = |typed: &str| {
        let mut f = form("Blueprint", &cols[1], "high", "2030-04-02", Some(&owner_id));
        f.retain(|f| f.0 != "estimate_minutes");
        f.push(("estimate_minutes", typed.to_string()));
        f
    };
    for (typed, minutes) in [("40h", 2400), ("90", 90)] {
        let fields = with_estimate(typed);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        redirected(post(&o.browser, &o.token, &path, &fields).await).await;
        let stored = format!("SELECT count(*) FROM tasks WHERE id = '{task}' AND estimate_minutes = {minutes}");
        assert_eq!(count(&app, &stored).await, 1, "{typed}");
    }
    for (typed, message) in
        [("soon", "must be a duration like"), ("0", "must be more than zero"), ("20000h", "at most 16666 hours")]
    {
        let fields = with_estimate(typed);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post(&o.browser, &o.token, &path, &fields).await;
        assert_eq!(res.status(), 422, "{typed}");
        let html = res.text().await.unwrap();
        assert!(html.contains(message) && html.contains(&format!("value=\"{typed}\"")), "{typed}: {html}");
    }
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM tasks WHERE id = '{task}' AND estimate_minutes = 90")).await,
        1
    );
    // A task with nothing set says so.
    let bare = page(&mut o.browser, &format!("/o/{slug}/tasks/{parent}")).await;
    for fact in [
        "<dt>Due</dt><dd><span class=\"muted\">No due date</span></dd>",
        "<dt>Estimate</dt><dd><span class=\"muted\">None</span></dd>",
        "<dt>Assignees</dt><dd><span class=\"muted\">Nobody</span></dd>",
    ] {
        assert!(bare.contains(fact), "no {fact} in {bare}");
    }
}

/// Pages call people by their names: the task page's assignees, assignee choices, time, activity
/// and comments, and the project's activity, with the email only for someone who has no name or
/// to tell two of the same name apart. The client portal never shows a staff email address.
#[tokio::test]
async fn pages_call_people_by_name_and_tell_namesakes_apart() {
    let app = TestApp::spawn().await;
    let mut org = org_with_every_role(&app, "webnames").await;
    let slug = org.slug.clone();
    let mut db = app.db.admin_conn().await;
    // The owner signed up as "Test User"; the member goes by that name too, the admin by a name
    // of their own, and the manager has none.
    for (email, name) in [("member@webnames.test", "test user"), ("admin@webnames.test", "Grace Hopper")] {
        sqlx::query("UPDATE users SET display_name = $2 WHERE email = $1")
            .bind(email)
            .bind(name)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let owner_browser = org.people.remove("owner").unwrap().browser;
    let mut o = Owner { token: String::new(), browser: owner_browser, slug: slug.clone() };
    o.token = session_token(&mut o.browser).await;
    let project = new_project(&o, "Named project", &org.client_id, true).await;
    let task = new_task(&app, &o, &project, "Named task", true).await;
    let admin_id = crate::support::orgs::user_id(&app, "admin@webnames.test").await;
    let cols = columns_of(&app, &project).await;
    let edit = [
        ("title", "Named task"),
        ("description", ""),
        ("priority", "normal"),
        ("due_date", ""),
        ("estimate_minutes", ""),
        ("column_id", &cols[0]),
        ("parent_id", ""),
        ("assignee", &admin_id),
        ("visible_to_client", "on"),
    ];
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/tasks/{task}/edit"), &edit).await).await;
    let time = [("minutes", "1:30"), ("task_id", task.as_str()), ("spent_on", "2030-01-02"), ("note", "")];
    redirected(post(&o.browser, &o.token, &format!("/o/{slug}/projects/{project}/time"), &time).await).await;
    let manager = &mut org.people.get_mut("manager").unwrap().browser;
    let manager_token = session_token(manager).await;
    let comments = format!("/o/{slug}/tasks/{task}/comments");
    redirected(
        post(manager, &manager_token, &comments, &[("body", "From the manager"), ("client_visible", "on")]).await,
    )
    .await;

    // The owner's address changes, and the member takes the old one: the history still names
    // who made each change (by account, not by the address it was recorded with).
    for (from, to) in
        [("owner@webnames.test", "owner-new@webnames.test"), ("member@webnames.test", "owner@webnames.test")]
    {
        sqlx::query("UPDATE users SET email = $2 WHERE email = $1").bind(from).bind(to).execute(&mut db).await.unwrap();
    }
    let html = page(&mut o.browser, &format!("/o/{slug}/tasks/{task}")).await;
    let owner = "Test User (owner-new@webnames.test)";
    // Assignees, and the activity that assigned them, by name; the admin's email nowhere.
    assert!(html.contains("<dd>Grace Hopper</dd>"), "{html}");
    assert!(!html.contains("admin@webnames.test"), "{html}");
    assert!(html.contains(&format!("<td>{owner}</td><td>Assignees</td><td></td><td>Grace Hopper</td>")), "{html}");
    // The owner's time, by a name told apart from the member's.
    assert!(html.contains(&format!("<td>2030-01-02</td><td>{owner}</td>")), "{html}");
    // The assignee choices: each says whom it assigns.
    for choice in [owner, "Grace Hopper", "manager@webnames.test"] {
        assert!(html.contains(&format!("> {choice}</label>")), "no choice {choice}: {html}");
    }
    // A comment by someone without a name is theirs by email, not nobody's.
    let comment = html.find("From the manager").unwrap();
    assert!(html[..comment].rfind("manager@webnames.test").is_some_and(|at| comment - at < 400), "{html}");
    let activity = page(&mut o.browser, &format!("/o/{slug}/projects/{project}/activity")).await;
    assert!(activity.contains(&format!(" · {owner} · ")), "{activity}");
    assert!(!activity.contains(" · owner@webnames.test · "), "{activity}");

    let client = &mut org.people.get_mut("client").unwrap().browser;
    let portal = page(client, &format!("/portal/{slug}/projects/{project}")).await;
    assert!(portal.contains("From the manager") && portal.contains("Team member"), "{portal}");
    assert!(!portal.contains("@webnames.test"), "{portal}");
}

/// The value of the form field `name` in a page (`name="…" value="…"`).
fn field_value(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no field {name}"));
    let rest = &html[at..];
    let value = rest[..rest.find('>').unwrap()].split("value=\"").nth(1).unwrap_or("\"");
    value.split('"').next().unwrap().to_string()
}

/// The edit pages apply every field they show: a draft's currency changes (to a real ISO 4217
/// code only), and an emptied budget or date is cleared rather than kept.
#[tokio::test]
async fn edit_pages_apply_what_they_show() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "edits").await;
    let slug = o.slug.clone();
    let acme = new_client(&o, "Acme").await;
    let invoice = new_invoice(&o, &acme, &[("Design", "1", "100")], &[("currency", "USD")]).await;
    let edit = format!("/o/{slug}/invoices/{invoice}/edit");
    let form = page(&mut o.browser, &edit).await;
    assert_eq!(field_value(&form, "currency"), "USD", "the currency is a field of the edit form");
    let (issue, due) = (field_value(&form, "issue_date"), field_value(&form, "due_date"));
    let fields = |currency: &'static str| {
        vec![
            ("client_id", acme.clone()),
            ("currency", currency.to_string()),
            ("tax_rate", "0".to_string()),
            ("issue_date", issue.clone()),
            ("due_date", due.clone()),
            ("description_0", "Design".to_string()),
            ("quantity_0", "1".to_string()),
            ("price_0", "100".to_string()),
        ]
    };
    async fn submit(o: &Owner, path: &str, fields: Vec<(&'static str, String)>) -> reqwest::Response {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(&o.browser, &o.token, path, &fields).await
    }
    redirected(submit(&o, &edit, fields("gbp")).await).await;
    let shown = page(&mut o.browser, &format!("/o/{slug}/invoices/{invoice}")).await;
    assert!(shown.contains("100.00 GBP"), "{shown}");
    for bad in ["XXX", "ABC", "EURO"] {
        let res = submit(&o, &edit, fields(bad)).await;
        assert_eq!(res.status(), 422, "{bad}");
        assert!(res.text().await.unwrap().contains("ISO 4217"), "{bad}: the page says why");
    }
    let mut emptied = fields("GBP");
    emptied.retain(|(k, _)| *k != "issue_date");
    emptied.push(("issue_date", String::new()));
    assert_eq!(submit(&o, &edit, emptied).await.status(), 422, "an emptied issue date is refused, not kept");
    let currency = id_by(&app, "SELECT id FROM invoices WHERE currency = $1", "GBP").await;
    assert_eq!(currency, invoice, "the refused edits changed nothing");

    // A project's budget and dates: emptied fields are cleared.
    let project = new_project(&o, "Site", &acme, false).await;
    let path = format!("/o/{slug}/projects/{project}/edit");
    let with = [
        ("name", "Site"),
        ("client_id", acme.as_str()),
        ("status", "active"),
        ("budget", "250.00"),
        ("due_date", "2030-01-31"),
    ];
    redirected(post(&o.browser, &o.token, &path, &with).await).await;
    let budget = || async {
        let mut db = app.db.admin_conn().await;
        let row: (Option<i64>, Option<time::Date>, Option<uuid::Uuid>) =
            sqlx::query_as("SELECT budget_minor, due_date, client_id FROM projects WHERE id = $1::uuid")
                .bind(&project)
                .fetch_one(&mut db)
                .await
                .unwrap();
        row
    };
    assert_eq!(budget().await.0, Some(25_000));
    let without = [("name", "Site"), ("client_id", ""), ("status", "active"), ("budget", ""), ("due_date", "")];
    redirected(post(&o.browser, &o.token, &path, &without).await).await;
    assert_eq!(budget().await, (None, None, None), "budget, due date and client cleared");
}

/// A board column of hundreds of cards shows its first ones by position, says how many it holds
/// in all, and links to all of them: the List tab for that column, a page at a time.
#[tokio::test]
async fn a_long_board_column_shows_its_first_cards_and_links_to_every_one() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "longboard").await;
    let client = new_client(&o, "Bulk Ltd").await;
    let project = new_project(&o, "Backlog", &client, false).await;
    let cols = columns_of(&app, &project).await;
    let mut db = app.db.admin_conn().await;
    // 250 tasks in the first column (positions 1..250), 3 in the second.
    sqlx::query(
        "INSERT INTO tasks (organization_id, id, project_id, column_id, title, priority, position, created_by, \
                            created_at, updated_at) \
         SELECT p.organization_id, gen_random_uuid(), p.id, \
                CASE WHEN n <= 250 THEN $2::uuid ELSE $3::uuid END, 'Bulk task ' || n, 'normal', n, \
                (SELECT id FROM users WHERE email = 'owner@longboard.test'), now(), now() \
         FROM projects p, generate_series(1, 253) AS n WHERE p.id = $1::uuid",
    )
    .bind(&project)
    .bind(&cols[0])
    .bind(&cols[1])
    .execute(&mut db)
    .await
    .unwrap();

    let board = page(&mut o.browser, &format!("/o/{}/projects/{project}", o.slug)).await;
    let section = |id: &str| -> String {
        let at = board.find(&format!("data-column=\"{id}\"")).unwrap();
        board[at..].split("</section>").next().unwrap().to_string()
    };
    let first = section(&cols[0]);
    assert!(first.contains("data-count>250</span>"), "the count is the column's total");
    assert_eq!(first.matches("data-card=").count(), 100, "the board shows the first 100 cards");
    assert!(first.contains(">Bulk task 100<") && !first.contains(">Bulk task 101<"), "by position");
    let all = format!("/o/{}/projects/{project}/list?column={}", o.slug, cols[0]);
    assert!(first.contains(&format!("href=\"{all}\"")) && first.contains("Show all 250"), "{first}");
    let second = section(&cols[1]);
    assert!(second.contains("data-count>3</span>"));
    assert_eq!(second.matches("data-card=").count(), 3);
    assert!(!second.contains("Show all"), "a short column shows every card");
    // A full column can't be deleted from the board even though its cards aren't all shown.
    assert!(!first.contains(&format!("columns/{}/delete", cols[0])));

    // The column's link: its tasks a page at a time, in board order.
    let list = page(&mut o.browser, &all).await;
    assert_eq!(list.matches("<tr><td><a href=\"/o/").count(), 100);
    assert!(list.contains(">Bulk task 1<") && list.contains(">Bulk task 100<") && !list.contains(">Bulk task 101<"));
    assert!(list.contains("1–100 of 250"), "the pager counts the column");
    assert!(!list.contains(">Bulk task 251<"), "only that column");
    let next = format!("/o/{}/projects/{project}/list?column={}&#38;offset=100", o.slug, cols[0]);
    assert!(list.contains(&next), "a next page: {}", list.split("class=\"pager\"").nth(1).unwrap_or_default());
    let last = page(&mut o.browser, &format!("{all}&offset=200")).await;
    assert_eq!(last.matches("<tr><td><a href=\"/o/").count(), 50);
    assert!(last.contains("201–250 of 250") && last.contains(">Bulk task 250<"));
    // Every column: the total is the project's.
    let everything = page(&mut o.browser, &format!("/o/{}/projects/{project}/list?offset=200", o.slug)).await;
    assert!(everything.contains("201–253 of 253") && everything.contains(">Bulk task 253<"));
    // A column of another project is no filter at all.
    let other = new_project(&o, "Other", &client, false).await;
    let foreign = columns_of(&app, &other).await;
    let list = page(&mut o.browser, &format!("/o/{}/projects/{project}/list?column={}", o.slug, foreign[0])).await;
    assert!(list.contains("1–100 of 253"));
}

/// The field-error part of a refused form: the field marked invalid and pointing at its own
/// message, which sits next to it in plain words.
fn assert_field_error(html: &str, id: &str, words: &str) {
    assert!(
        html.contains(&format!("aria-invalid=\"true\" aria-describedby=\"{id}-error\"")),
        "{id} not marked: {html}"
    );
    let message = html
        .split(&format!("<p class=\"field-error\" id=\"{id}-error\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no message next to {id}: {html}"))
        .split("</p>")
        .next()
        .unwrap();
    assert!(message.contains(words), "{id}: {message}");
    assert!(!message.contains('_'), "the message names no internal field: {message}");
}

/// A refused form comes back with each refused field's message next to it (tied to it for
/// screen readers), the summary at the top, and what was typed still in the fields.
#[tokio::test]
async fn refused_forms_say_what_is_wrong_next_to_each_field_and_keep_what_was_typed() {
    let app = TestApp::spawn().await;
    let mut o = owner_with_org(&app, "fieldwise").await;
    let client = new_client(&o, "Typed Ltd").await;

    // A project with a budget that isn't money.
    let res = post(
        &o.browser,
        &o.token,
        &format!("/o/{}/projects", o.slug),
        &[("name", "Kept name"), ("budget", "lots"), ("client_id", &client), ("status", "active")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert_csp_clean(&html);
    assert_field_error(&html, "project-form-budget", "Budget");
    assert!(html.contains("value=\"Kept name\"") && html.contains("value=\"lots\""), "what was typed is kept");
    assert!(html.contains("class=\"errors\" role=\"alert\""), "the summary stays");
    assert!(!html.contains("aria-describedby=\"project-form-name-error\""), "only the refused field is marked");

    // A task edit with a due date that isn't a date.
    let project = new_project(&o, "Fields", &client, false).await;
    let task = new_task(&app, &o, &project, "Date me", false).await;
    let res = post(
        &o.browser,
        &o.token,
        &format!("/o/{}/tasks/{task}/edit", o.slug),
        &[("title", "Date me later"), ("priority", "high"), ("due_date", "someday")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert_field_error(&html, "task-due-date", "Due date");
    assert!(html.contains("value=\"Date me later\"") && html.contains("value=\"someday\""), "{html}");

    // Time on the project's Time tab that isn't a number of minutes.
    let res = post(
        &o.browser,
        &o.token,
        &format!("/o/{}/projects/{project}/time", o.slug),
        &[("from", "project"), ("minutes", "forever"), ("note", "kept note"), ("spent_on", ""), ("task_id", "")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert_field_error(&html, "project-minutes", "");
    assert!(html.contains("value=\"forever\"") && html.contains("value=\"kept note\""));
    let _ = o.browser.page("/").await;
}
