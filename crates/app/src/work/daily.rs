//! The daily work: "My work" (the tasks assigned to me, by due date), search across the
//! organization, who is told about what happens to tasks and invoices, and the worker's daily
//! digest.
//!
//! Visibility is the lists' own: every query here is bounded by `project_visible` (a Member
//! sees the projects they are on), by the principal's permissions (clients, invoices), and in
//! the portal by the Client's own client (shared projects, tasks and comments only). Recipients
//! of notifications are chosen among the people who may see the task or invoice the
//! notification is about; `notify::record` then drops the actor.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::projects::{fetch_visible, require};
use super::{member_filter, org_slug, project_visible};
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, OrgTx, ProjectScope};
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::notify::{self, Kind};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{InvoiceId, OrgId, ProjectId, TaskId, UserId};

// ---- My work ----

/// One of my open tasks.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MyTask {
    pub id: TaskId,
    pub title: String,
    pub status: String,
    pub priority: String,
    #[serde(with = "super::iso_date::option")]
    pub due_date: Option<Date>,
    pub project_id: ProjectId,
    pub project: String,
}

/// My open tasks in groups, by the organization's today.
#[derive(Debug, Clone, Serialize)]
pub struct MyWork {
    #[serde(with = "super::iso_date")]
    pub today: Date,
    pub overdue: Vec<MyTask>,
    pub due_today: Vec<MyTask>,
    /// Due in the next seven days.
    pub this_week: Vec<MyTask>,
    /// Due later, then those without a due date.
    pub later: Vec<MyTask>,
}

/// The most open tasks My work shows.
pub const MY_WORK_CAP: i64 = 500;

/// The SQL of My work (the benchmark runs it bare as its reference): open tasks assigned to
/// `$2` in projects visible to `$1` (the member filter), by due date, those without last.
pub fn my_work_sql() -> String {
    format!(
        "SELECT t.id, t.title, t.status, t.priority, t.due_date, p.id AS project_id, p.name AS project \
           FROM task_assignees a JOIN tasks t ON t.organization_id = a.organization_id AND t.id = a.task_id \
           JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
          WHERE a.user_id = $2 AND t.status <> 'done' AND {} \
          ORDER BY t.due_date NULLS LAST, t.created_at, t.id LIMIT $3",
        project_visible("p", 1)
    )
}

pub async fn my_work(db: &Db, p: &OrgPrincipal, now: OffsetDateTime) -> DomainResult<MyWork> {
    require(p, Permission::TasksRead)?;
    let member = member_filter(p)?;
    let Some(me) = p.on_behalf_of() else {
        return Err(DomainError::Forbidden("My work is a person's own list.".into()));
    };
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let rows: Vec<MyTask> =
        sqlx::query_as(&my_work_sql()).bind(member).bind(me).bind(MY_WORK_CAP).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(group(rows, today))
}

/// `rows` (My work's, by due date) in My work's groups, by the organization's `today`.
pub(super) fn group(rows: Vec<MyTask>, today: Date) -> MyWork {
    let week_end = today + Duration::days(7);
    let mut out =
        MyWork { today, overdue: Vec::new(), due_today: Vec::new(), this_week: Vec::new(), later: Vec::new() };
    for t in rows {
        match t.due_date {
            Some(d) if d < today => out.overdue.push(t),
            Some(d) if d == today => out.due_today.push(t),
            Some(d) if d <= week_end => out.this_week.push(t),
            _ => out.later.push(t),
        }
    }
    out
}

// ---- Search ----

/// One search result.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Hit {
    /// client, project, task, comment or invoice.
    pub kind: String,
    pub id: Uuid,
    pub title: String,
    /// A short excerpt.
    pub excerpt: String,
    /// Where it is shown in the web app (a path).
    pub link: String,
}

/// The longest query searched for.
pub const MAX_QUERY: usize = 200;
/// Results per kind.
pub const PER_KIND: i64 = 20;

/// The query as searched: control characters count as spaces (they separate words and mean
/// nothing else), then trimmed; empty is no search (`None`); longer than `MAX_QUERY` is the
/// field's fault. (NUL never gets here: the request is refused before routing.)
pub fn parse_query(raw: &str) -> DomainResult<Option<String>> {
    let q: String = raw.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let q = q.trim();
    if q.chars().count() > MAX_QUERY {
        return Err(DomainError::field("q", format!("must be at most {MAX_QUERY} characters")));
    }
    Ok((!q.is_empty()).then(|| q.to_string()))
}

/// The SQL that searches tasks (the benchmark's reference runs it bare).
pub fn task_search_sql() -> String {
    format!(
        "SELECT 'task' AS kind, t.id, t.title, left(t.description, 160) AS excerpt, '' AS link \
           FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
          WHERE t.search @@ websearch_to_tsquery('simple', $2) AND {} \
          ORDER BY ts_rank(t.search, websearch_to_tsquery('simple', $2)) DESC, t.id LIMIT $3",
        project_visible("p", 1)
    )
}

/// Searches what the principal may see: the organization's clients, projects, tasks, comments
/// and invoices inside, or the Client's own portal (shared projects, tasks and comments, sent
/// invoices), each with the path of the page that shows it.
pub async fn search(db: &Db, p: &OrgPrincipal, raw: &str) -> DomainResult<Vec<Hit>> {
    let Some(q) = parse_query(raw)? else { return Ok(Vec::new()) };
    let mut tx = OrgTx::begin(db, p).await?;
    let slug = org_slug(&mut tx).await?;
    let hits = match p.project_scope() {
        ProjectScope::Client(client) if p.can(Permission::PortalRead) => {
            portal_search(&mut tx, client, &slug, &q).await?
        }
        ProjectScope::Client(_) | ProjectScope::Nothing => Vec::new(),
        ProjectScope::All | ProjectScope::MemberOf(_) => internal_search(&mut tx, p, &slug, &q).await?,
    };
    tx.commit().await?;
    Ok(hits)
}

async fn internal_search(tx: &mut OrgTx, p: &OrgPrincipal, slug: &str, q: &str) -> DomainResult<Vec<Hit>> {
    let member = member_filter(p)?;
    let mut hits: Vec<Hit> = Vec::new();
    let tsq = "websearch_to_tsquery('simple', $2)";
    if p.can(Permission::ClientsRead) {
        let rows: Vec<Hit> = sqlx::query_as(&format!(
            "SELECT 'client' AS kind, c.id, c.name AS title, c.company AS excerpt, '/o/' || $4 || '/clients/' || c.id AS link \
               FROM clients c WHERE c.search @@ {tsq} AND {} ORDER BY ts_rank(c.search, {tsq}) DESC, c.id LIMIT $3",
            super::clients::client_visible("c", 1)
        ))
        .bind(member)
        .bind(q)
        .bind(PER_KIND)
        .bind(slug)
        .fetch_all(&mut **tx)
        .await?;
        hits.extend(rows);
    }
    if p.can(Permission::ProjectsRead) {
        let rows: Vec<Hit> = sqlx::query_as(&format!(
            "SELECT 'project' AS kind, p.id, p.name AS title, left(p.description, 160) AS excerpt, \
                    '/o/' || $4 || '/projects/' || p.id AS link \
               FROM projects p WHERE p.search @@ {tsq} AND {} ORDER BY ts_rank(p.search, {tsq}) DESC, p.id LIMIT $3",
            project_visible("p", 1)
        ))
        .bind(member)
        .bind(q)
        .bind(PER_KIND)
        .bind(slug)
        .fetch_all(&mut **tx)
        .await?;
        hits.extend(rows);
    }
    if p.can(Permission::TasksRead) {
        let mut rows: Vec<Hit> =
            sqlx::query_as(&task_search_sql()).bind(member).bind(q).bind(PER_KIND).fetch_all(&mut **tx).await?;
        for h in &mut rows {
            h.link = format!("/o/{slug}/tasks/{}", h.id);
        }
        hits.extend(rows);
        let rows: Vec<Hit> = sqlx::query_as(&format!(
            "SELECT 'comment' AS kind, c.id, t.title, left(c.body, 160) AS excerpt, \
                    '/o/' || $4 || '/tasks/' || t.id AS link \
               FROM comments c JOIN tasks t ON t.organization_id = c.organization_id AND t.id = c.task_id \
               JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
              WHERE c.search @@ {tsq} AND {} ORDER BY ts_rank(c.search, {tsq}) DESC, c.id LIMIT $3",
            project_visible("p", 1)
        ))
        .bind(member)
        .bind(q)
        .bind(PER_KIND)
        .bind(slug)
        .fetch_all(&mut **tx)
        .await?;
        hits.extend(rows);
    }
    if p.can(Permission::InvoicesRead) {
        let rows: Vec<Hit> = sqlx::query_as(&format!(
            "SELECT 'invoice' AS kind, i.id, coalesce('Invoice ' || i.number, 'Draft invoice') || ' · ' || c.name AS title, \
                    left(i.notes, 160) AS excerpt, '/o/' || $3 || '/invoices/' || i.id AS link \
               FROM invoices i JOIN clients c ON c.organization_id = i.organization_id AND c.id = i.client_id \
              WHERE i.search @@ {tsq} ORDER BY ts_rank(i.search, {tsq}) DESC, i.id LIMIT $2",
            tsq = "websearch_to_tsquery('simple', $1)"
        ))
        .bind(q)
        .bind(PER_KIND)
        .bind(slug)
        .fetch_all(&mut **tx)
        .await?;
        hits.extend(rows);
    }
    Ok(hits)
}

async fn portal_search(
    tx: &mut OrgTx,
    client: crate::platform::ids::ClientId,
    slug: &str,
    q: &str,
) -> DomainResult<Vec<Hit>> {
    let tsq = "websearch_to_tsquery('simple', $2)";
    let shared = "p.client_id = $1 AND p.visible_to_client AND p.status <> 'archived'";
    let mut hits: Vec<Hit> = Vec::new();
    let projects: Vec<Hit> = sqlx::query_as(&format!(
        "SELECT 'project' AS kind, p.id, p.name AS title, left(p.description, 160) AS excerpt, \
                '/portal/' || $4 || '/projects/' || p.id AS link \
           FROM projects p WHERE p.search @@ {tsq} AND {shared} ORDER BY ts_rank(p.search, {tsq}) DESC, p.id LIMIT $3"
    ))
    .bind(client)
    .bind(q)
    .bind(PER_KIND)
    .bind(slug)
    .fetch_all(&mut **tx)
    .await?;
    hits.extend(projects);
    let tasks: Vec<Hit> = sqlx::query_as(&format!(
        "SELECT 'task' AS kind, t.id, t.title, left(t.description, 160) AS excerpt, \
                '/portal/' || $4 || '/projects/' || p.id AS link \
           FROM tasks t JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
          WHERE t.search @@ {tsq} AND t.visible_to_client AND {shared} \
          ORDER BY ts_rank(t.search, {tsq}) DESC, t.id LIMIT $3"
    ))
    .bind(client)
    .bind(q)
    .bind(PER_KIND)
    .bind(slug)
    .fetch_all(&mut **tx)
    .await?;
    hits.extend(tasks);
    // Comments the client was shown only: never an internal one.
    let comments: Vec<Hit> = sqlx::query_as(&format!(
        "SELECT 'comment' AS kind, c.id, t.title, left(c.body, 160) AS excerpt, \
                '/portal/' || $4 || '/projects/' || p.id AS link \
           FROM comments c JOIN tasks t ON t.organization_id = c.organization_id AND t.id = c.task_id \
           JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
          WHERE c.search @@ {tsq} AND c.client_visible AND t.visible_to_client AND {shared} \
          ORDER BY ts_rank(c.search, {tsq}) DESC, c.id LIMIT $3"
    ))
    .bind(client)
    .bind(q)
    .bind(PER_KIND)
    .bind(slug)
    .fetch_all(&mut **tx)
    .await?;
    hits.extend(comments);
    let invoices: Vec<Hit> = sqlx::query_as(&format!(
        "SELECT 'invoice' AS kind, i.id, 'Invoice ' || coalesce(i.number::text, '') AS title, left(i.notes, 160) AS excerpt, \
                '/portal/' || $4 || '/invoices/' || i.id AS link \
           FROM invoices i WHERE i.search @@ {tsq} AND i.client_id = $1 AND i.status <> 'draft' \
          ORDER BY ts_rank(i.search, {tsq}) DESC, i.id LIMIT $3"
    ))
    .bind(client)
    .bind(q)
    .bind(PER_KIND)
    .bind(slug)
    .fetch_all(&mut **tx)
    .await?;
    hits.extend(invoices);
    Ok(hits)
}

// ---- Who is told ----

/// The condition "member `m` works inside and may see the project `project` (an SQL
/// expression)"; Clients never: the internal side of a task is not theirs.
fn sees_project(project: &str) -> String {
    format!(
        "m.status = 'active' AND m.role <> 'client' AND (m.role IN ('owner', 'admin', 'manager') OR EXISTS \
         (SELECT 1 FROM project_members pm WHERE pm.organization_id = m.organization_id AND pm.project_id = {project} \
          AND pm.user_id = m.user_id))"
    )
}

/// The people following a task: those with an explicit follow, and otherwise its assignees,
/// its creator and its commenters — among the people who may see it.
pub async fn followers(tx: &mut OrgTx, task: TaskId) -> Result<Vec<UserId>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT m.user_id FROM tasks t JOIN memberships m ON m.organization_id = t.organization_id \
          WHERE t.id = $1 AND {} AND coalesce( \
           (SELECT f.following FROM task_followers f WHERE f.organization_id = m.organization_id AND f.task_id = t.id \
             AND f.user_id = m.user_id), \
           EXISTS (SELECT 1 FROM task_assignees a WHERE a.organization_id = m.organization_id AND a.task_id = t.id \
                   AND a.user_id = m.user_id) \
           OR t.created_by = m.user_id \
           OR EXISTS (SELECT 1 FROM comments c WHERE c.organization_id = m.organization_id AND c.task_id = t.id \
                      AND c.author_id = m.user_id))",
        sees_project("t.project_id")
    ))
    .bind(task)
    .fetch_all(&mut **tx)
    .await
}

/// Whether `user` follows `task` (explicitly or by taking part in it).
pub async fn is_following(tx: &mut OrgTx, task: TaskId, user: UserId) -> Result<bool, sqlx::Error> {
    Ok(followers(tx, task).await?.contains(&user))
}

/// Tells `users` (newly assigned) about `task`.
pub async fn task_assigned(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    task: TaskId,
    title: &str,
    users: &[UserId],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if users.is_empty() {
        return Ok(());
    }
    let slug = org_slug(tx).await?;
    let link = format!("/o/{slug}/tasks/{task}");
    let n = notify::New {
        kind: Kind::Assigned,
        actor: p.on_behalf_of(),
        title: &format!("You were assigned: {title}"),
        body: "",
        link: &link,
    };
    notify::record(tx, users, &n, now).await?;
    Ok(())
}

/// Tells the task's followers that it moved to another column or that its due date changed.
pub async fn task_changed(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    task: TaskId,
    title: &str,
    what: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let people = followers(tx, task).await?;
    let slug = org_slug(tx).await?;
    let link = format!("/o/{slug}/tasks/{task}");
    let n = notify::New {
        kind: Kind::TaskChanged,
        actor: p.on_behalf_of(),
        title: &format!("{title}: {what}"),
        body: "",
        link: &link,
    };
    notify::record(tx, &people, &n, now).await?;
    Ok(())
}

/// The `@handles` of a comment: `@` at the start or after a space or an opening bracket,
/// followed by an address or a name without spaces.
pub fn mention_handles(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c != '@' || (i > 0 && !(chars[i - 1].is_whitespace() || "([{,;:".contains(chars[i - 1]))) {
            continue;
        }
        let handle: String =
            chars[i + 1..].iter().take_while(|c| c.is_alphanumeric() || "._%+-@'".contains(**c)).collect();
        let handle = handle.trim_end_matches(['.', '\'', '-']).to_lowercase();
        if !handle.is_empty() && handle.chars().count() <= 254 && !out.contains(&handle) {
            out.push(handle);
        }
        if out.len() >= 20 {
            break;
        }
    }
    out
}

/// A person a comment may mention: who they are and how they may be written.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Person {
    pub id: UserId,
    pub name: String,
    pub email: String,
}

impl Person {
    /// What the picker inserts after `@`: the address, which is never ambiguous.
    pub fn handle(&self) -> &str {
        &self.email
    }

    fn answers_to(&self, handle: &str) -> bool {
        let email = self.email.to_lowercase();
        let local = email.split('@').next().unwrap_or("");
        let name: String = self.name.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
        handle == email || handle == local || (!name.is_empty() && handle == name)
    }
}

/// The people who work inside a project (those a comment on its tasks may mention, and the
/// picker lists): active non-Client members who see every project or are on this one.
async fn project_people(tx: &mut OrgTx, project: ProjectId, q: &str, limit: i64) -> Result<Vec<Person>, sqlx::Error> {
    let like = format!("%{}%", super::like_escape(q));
    sqlx::query_as(&format!(
        "SELECT m.user_id AS id, coalesce(nullif(u.display_name, ''), u.email) AS name, u.email \
           FROM memberships m JOIN users u ON u.id = m.user_id \
          WHERE {} AND u.status = 'active' AND ($2 = '' OR u.email ILIKE $3 OR u.display_name ILIKE $3) \
          ORDER BY lower(coalesce(nullif(u.display_name, ''), u.email)), m.user_id LIMIT $4",
        sees_project("$1")
    ))
    .bind(project)
    .bind(q)
    .bind(like)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// The people picker: who may be mentioned on the tasks of a project the principal may see.
pub async fn mentionable(db: &Db, p: &OrgPrincipal, project: ProjectId, q: &str) -> DomainResult<Vec<Person>> {
    require(p, Permission::CommentsCreate)?;
    let q: String = q.trim().chars().filter(|c| !c.is_control()).take(100).collect();
    let mut tx = OrgTx::begin(db, p).await?;
    fetch_visible(&mut tx, p, project).await?;
    let people = project_people(&mut tx, project, &q, 20).await?;
    tx.commit().await?;
    Ok(people)
}

/// After a comment: the people it mentions are told so, and the task's other followers that
/// there is a new comment. Only people who work inside the project are ever told (a comment is
/// read on the task's internal page); a handle that names nobody there tells nobody.
pub async fn commented(
    tx: &mut OrgTx,
    p: &OrgPrincipal,
    task: TaskId,
    body: &str,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let (title, project): (String, ProjectId) =
        sqlx::query_as("SELECT title, project_id FROM tasks WHERE id = $1").bind(task).fetch_one(&mut **tx).await?;
    let handles = mention_handles(body);
    let mut mentioned: Vec<UserId> = Vec::new();
    if !handles.is_empty() {
        let people = project_people(tx, project, "", 10_000).await?;
        for h in &handles {
            let matches: Vec<&Person> = people.iter().filter(|person| person.answers_to(h)).collect();
            // A name two people answer to names neither.
            if let [one] = matches.as_slice()
                && !mentioned.contains(&one.id)
            {
                mentioned.push(one.id);
            }
        }
    }
    let slug = org_slug(tx).await?;
    let link = format!("/o/{slug}/tasks/{task}");
    let excerpt: String = body.chars().take(500).collect();
    let actor = p.on_behalf_of();
    if !mentioned.is_empty() {
        let n = notify::New {
            kind: Kind::Mentioned,
            actor,
            title: &format!("You were mentioned on {title}"),
            body: &excerpt,
            link: &link,
        };
        notify::record(tx, &mentioned, &n, now).await?;
    }
    let told: HashSet<UserId> = mentioned.into_iter().collect();
    let others: Vec<UserId> = followers(tx, task).await?.into_iter().filter(|u| !told.contains(u)).collect();
    let n = notify::New {
        kind: Kind::Commented,
        actor,
        title: &format!("New comment on {title}"),
        body: &excerpt,
        link: &link,
    };
    notify::record(tx, &others, &n, now).await?;
    Ok(())
}

/// Something happened to an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceEvent {
    Viewed,
    Paid,
    /// It is a repeating invoice's copy, made as a draft to check and send (`work::repeats`).
    RepeatMade,
    /// Its repeat paused itself: a copy could not be made (`work::repeats`).
    RepeatPaused,
}

/// Tells the organization's Owners and Admins (who see every invoice) that an invoice was
/// viewed or paid, was made by a repeat as a draft, or stopped repeating by itself, in the
/// caller's transaction; `actor` is not told.
pub async fn notify_invoice_event(
    tx: &mut OrgTx,
    invoice: InvoiceId,
    event: InvoiceEvent,
    actor: Option<UserId>,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let found: Option<(Option<i64>, String)> = sqlx::query_as(
        "SELECT i.number, c.name FROM invoices i JOIN clients c ON c.organization_id = i.organization_id \
         AND c.id = i.client_id WHERE i.id = $1",
    )
    .bind(invoice)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((number, client)) = found else { return Ok(()) };
    let people: Vec<UserId> = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE status = 'active' AND role IN ('owner', 'admin') ORDER BY user_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let slug = org_slug(tx).await?;
    let name = number.map(|n| format!("Invoice {n}")).unwrap_or_else(|| "An invoice".into());
    let (kind, title) = match event {
        InvoiceEvent::Viewed => (Kind::InvoiceViewed, format!("{name} for {client} was viewed")),
        InvoiceEvent::Paid => (Kind::InvoicePaid, format!("{name} for {client} was paid")),
        InvoiceEvent::RepeatMade => (
            Kind::InvoiceRepeatMade,
            format!("A repeating invoice's copy for {client} waits as a draft: check it, then send it"),
        ),
        InvoiceEvent::RepeatPaused => {
            (Kind::InvoiceRepeatPaused, format!("{name} for {client} stopped repeating: a copy could not be made"))
        }
    };
    let link = format!("/o/{slug}/invoices/{invoice}");
    notify::record(tx, &people, &notify::New { kind, actor, title: &title, body: "", link: &link }, now).await?;
    Ok(())
}

// ---- The worker: waiting notification mail and the daily digest ----

/// When in the morning (the organization's local hour) the digest goes out.
pub const DIGEST_HOUR: u8 = 7;

/// One round of the notification worker: for every organization with something to do, opens
/// it as the scheduled notifier and mails its waiting notifications (with each person's
/// preference as it is now) and, once a day after `DIGEST_HOUR` in its time zone, its digest.
/// Returns how many messages were queued.
pub async fn run_due(db: &Db, public_url: &str, now: OffsetDateTime) -> Result<usize, sqlx::Error> {
    let mut queued = 0;
    // Region by region: each organization's notifications are in its own region's database.
    for db in db.every_region() {
        queued += run_due_in_region(&db, public_url, now).await?;
    }
    Ok(queued)
}

async fn run_due_in_region(db: &Db, public_url: &str, now: OffsetDateTime) -> Result<usize, sqlx::Error> {
    let mut queued = 0;
    for org in notify::organizations(db).await? {
        let local = crate::platform::tz::local(now, &org.timezone);
        let today = local.date();
        let digest_due = local.hour() >= DIGEST_HOUR && org.last_digest.is_none_or(|d| d < today);
        if !org.mail_waiting && !digest_due {
            continue;
        }
        let Some(principal) = crate::access::scheduled_notifier(db, org.id).await? else { continue };
        let mut tx = OrgTx::begin(db, &principal).await?;
        // Not the copy a region move makes or leaves behind, and not while it moves: what is
        // marked sent there would be sent again from the copy that stays. Asked in the
        // transaction that marks it, which holds a move's copy back until it commits.
        if !crate::access::directory::hold_for_writing(db, &mut tx, db.region(), org.id).await? {
            tx.rollback().await?;
            continue;
        }
        if org.mail_waiting {
            queued += notify::send_pending(&mut tx, public_url, now, 500).await?;
        }
        if digest_due {
            queued += send_digests(&mut tx, org.id, today, public_url, now).await?;
        }
        tx.commit().await?;
    }
    Ok(queued)
}

/// At most this many tasks of each kind (overdue, due today) are listed in a person's digest.
pub const DIGEST_LIST: i64 = 20;

/// Queues the day's digest for every person of the organization with open tasks overdue or
/// due today (in projects they may see) who has not turned the digest off or to in-app, and
/// records the day as done. Each message's idempotency key names the person and the day, so a
/// person gets one digest a day whatever happens.
pub async fn send_digests(
    tx: &mut OrgTx,
    org: OrgId,
    today: Date,
    public_url: &str,
    now: OffsetDateTime,
) -> Result<usize, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        user_id: UserId,
        email: String,
        task_id: TaskId,
        title: String,
        due_date: Date,
        project: String,
        /// The person's totals (over all their tasks, not only the rows listed).
        overdue_total: i64,
        today_total: i64,
    }
    // Counted in the database, listed at most DIGEST_LIST of each kind per person: however many
    // tasks an organization holds, the worker reads a bounded number of rows per person and the
    // mail stays readable (the rest are a link to My work away).
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT user_id, email, task_id, title, due_date, project, overdue_total, today_total FROM ( \
           SELECT m.user_id, u.email, t.id AS task_id, t.title, t.due_date, p.name AS project, \
                  count(*) FILTER (WHERE t.due_date < $1) OVER (PARTITION BY m.user_id) AS overdue_total, \
                  count(*) FILTER (WHERE t.due_date >= $1) OVER (PARTITION BY m.user_id) AS today_total, \
                  row_number() OVER (PARTITION BY m.user_id, t.due_date < $1 ORDER BY t.due_date, t.title, t.id) AS nth \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             JOIN task_assignees a ON a.organization_id = m.organization_id AND a.user_id = m.user_id \
             JOIN tasks t ON t.organization_id = a.organization_id AND t.id = a.task_id \
             JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id \
            WHERE u.status = 'active' AND t.status <> 'done' AND t.due_date <= $1 AND {} \
              AND coalesce((SELECT np.channel FROM notification_preferences np WHERE np.organization_id = m.organization_id \
                    AND np.user_id = m.user_id AND np.kind = 'digest'), 'email') = 'email' \
         ) listed WHERE nth <= $2 \
         ORDER BY user_id, due_date, title, task_id",
        sees_project("p.id")
    ))
    .bind(today)
    .bind(DIGEST_LIST)
    .fetch_all(&mut **tx)
    .await?;
    let (slug, org_name): (String, String) =
        sqlx::query_as("SELECT slug, name FROM organizations WHERE id = $1").bind(org).fetch_one(&mut **tx).await?;
    let mut by_person: BTreeMap<UserId, (String, Vec<Row>)> = BTreeMap::new();
    for r in rows {
        by_person.entry(r.user_id).or_insert_with(|| (r.email.clone(), Vec::new())).1.push(r);
    }
    let mut queued = 0;
    for (user, (email, tasks)) in by_person {
        let (overdue, due_today) = (tasks[0].overdue_total, tasks[0].today_total);
        let mut body = format!("Your tasks in {org_name} for {today}: {overdue} overdue, {due_today} due today.\n");
        for (heading, overdue_part, total) in [("Overdue", true, overdue), ("Due today", false, due_today)] {
            let part: Vec<&Row> = tasks.iter().filter(|t| (t.due_date < today) == overdue_part).collect();
            if part.is_empty() {
                continue;
            }
            body.push_str(&format!("\n{heading}:\n"));
            for t in &part {
                body.push_str(&format!(
                    "- {} ({}, due {}): {public_url}/o/{slug}/tasks/{}\n",
                    t.title, t.project, t.due_date, t.task_id
                ));
            }
            let more = total - part.len() as i64;
            if more > 0 {
                body.push_str(&format!("And {more} more in My work: {public_url}/o/{slug}/my-work\n"));
            }
        }
        body.push_str(&format!(
            "\nAll your work: {public_url}/o/{slug}/my-work\nChoose what you are told about, and how: \
             {public_url}/o/{slug}/notifications/preferences\n\n-- \nClientFlow\n"
        ));
        let mail = OutgoingMail {
            to: email,
            subject: format!("Your tasks for {today}: {overdue} overdue, {due_today} due today"),
            body,
            category: Category::Transactional,
            org_name: Some(org_name.clone()),
        };
        outbox::enqueue(tx, &mail, &format!("digest:{org}:{user}:{today}"), now).await?;
        queued += 1;
    }
    sqlx::query(
        "INSERT INTO notification_digest_days (organization_id, day, done_at) VALUES ($1, $2, $3) \
         ON CONFLICT (organization_id, day) DO NOTHING",
    )
    .bind(org)
    .bind(today)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn task(due: Option<Date>) -> MyTask {
        MyTask {
            id: TaskId::new(),
            title: "t".into(),
            status: "todo".into(),
            priority: "normal".into(),
            due_date: due,
            project_id: ProjectId::new(),
            project: "p".into(),
        }
    }

    #[test]
    fn my_work_groups_by_the_day() {
        let today = date!(2026 - 03 - 10);
        let rows = vec![
            task(Some(date!(2026 - 03 - 01))),
            task(Some(today)),
            task(Some(date!(2026 - 03 - 17))),
            task(Some(date!(2026 - 03 - 18))),
            task(None),
        ];
        let g = group(rows, today);
        assert_eq!((g.overdue.len(), g.due_today.len(), g.this_week.len(), g.later.len()), (1, 1, 1, 2));
        assert!(g.later[1].due_date.is_none(), "no due date comes last");
    }

    #[test]
    fn mentions_are_found_in_text() {
        assert_eq!(
            mention_handles("hi @Ana and @bob@x.test, (@carl). mail@example.com"),
            ["ana", "bob@x.test", "carl"]
        );
        assert!(mention_handles("no mentions a@b").is_empty());
        let p = Person { id: UserId::new(), name: "Ana Lima".into(), email: "ana.l@x.test".into() };
        assert!(p.answers_to("ana.l@x.test") && p.answers_to("ana.l") && p.answers_to("analima"));
        assert!(!p.answers_to("ana"));
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(parse_query("  ").unwrap(), None);
        assert_eq!(parse_query(" word ").unwrap().as_deref(), Some("word"));
        assert_eq!(parse_query("a\u{1}b\u{7f}").unwrap().as_deref(), Some("a b"));
        assert!(parse_query(&"x".repeat(10_000)).is_err());
    }
}
