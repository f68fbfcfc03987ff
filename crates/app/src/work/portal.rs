//! The client portal: a Client user sees their own client's projects that are marked visible
//! to the client, the client-visible tasks and comments in them, the invoices addressed to the
//! client (never drafts), and the files shared with the client — read-only. Every query is
//! bounded by the principal's client id; nothing here works for any other scope.

use time::{Date, OffsetDateTime};

use super::files::{self, FileMeta, RegionStores};
use super::invoices::{self, Invoice, InvoiceDetail};
use super::projects::{self, Project};
use super::statement::Statement;
use super::tasks::{self, Comment, Task};
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::access::{OrgPrincipal, ProjectScope};
use crate::platform::db::Db;
use crate::platform::error::{DomainError, DomainResult};
use crate::platform::ids::{ClientId, FileId, InvoiceId, ProjectId, TaskId};
use crate::platform::keys::Keyring;

fn client_of(p: &OrgPrincipal) -> DomainResult<ClientId> {
    if !p.can(Permission::PortalRead) {
        return Err(DomainError::Forbidden("The portal is for client users.".into()));
    }
    match p.project_scope() {
        ProjectScope::Client(c) => Ok(c),
        _ => Err(DomainError::Forbidden("The portal is for client users.".into())),
    }
}

#[derive(Debug, Clone)]
pub struct PortalHome {
    pub client_name: String,
    /// Each project with how far along the tasks the client is shown are (done of all).
    pub projects: Vec<(Project, Shown)>,
    pub invoices: Vec<Invoice>,
}

/// How many of the tasks a client is shown there are, and how many of them are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shown {
    pub total: i64,
    pub done: i64,
}

const VISIBLE_PROJECT: &str = "p.client_id = $1 AND p.visible_to_client AND p.status <> 'archived'";

pub async fn home(db: &Db, now: OffsetDateTime, p: &OrgPrincipal) -> DomainResult<PortalHome> {
    let client = client_of(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, now).await?;
    let client_name: String =
        sqlx::query_scalar("SELECT name FROM clients WHERE id = $1").bind(client).fetch_one(&mut *tx).await?;
    let projects: Vec<Project> = sqlx::query_as(&format!(
        "SELECT {} FROM projects p WHERE {VISIBLE_PROJECT} ORDER BY lower(p.name), p.id",
        projects::COLUMNS
    ))
    .bind(client)
    .fetch_all(&mut *tx)
    .await?;
    // The client's tasks only: those marked visible, in the projects they are shown.
    let counts: Vec<(ProjectId, i64, i64)> = sqlx::query_as(&format!(
        "SELECT t.project_id, count(*), count(*) FILTER (WHERE t.status = 'done') \
           FROM projects p JOIN tasks t ON t.organization_id = p.organization_id AND t.project_id = p.id \
          WHERE {VISIBLE_PROJECT} AND t.visible_to_client GROUP BY t.project_id"
    ))
    .bind(client)
    .fetch_all(&mut *tx)
    .await?;
    let projects = projects
        .into_iter()
        .map(|p| {
            let shown = counts.iter().find(|c| c.0 == p.id).map(|c| Shown { total: c.1, done: c.2 });
            (p, shown.unwrap_or_default())
        })
        .collect();
    let invoices: Vec<Invoice> = sqlx::query_as(&format!(
        "SELECT {} FROM invoices i WHERE i.client_id = $1 AND i.status <> 'draft' ORDER BY i.issue_date DESC",
        invoices::COLUMNS
    ))
    .bind(client)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let invoices = invoices.into_iter().map(|i| invoices::shown_status(i, today)).collect();
    Ok(PortalHome { client_name, projects, invoices })
}

#[derive(Debug, Clone)]
pub struct PortalProject {
    pub project: Project,
    pub tasks: Vec<(Task, Vec<Comment>)>,
    pub files: Vec<FileMeta>,
}

impl PortalProject {
    /// How far along the tasks shown are.
    pub fn shown(&self) -> Shown {
        let done = self.tasks.iter().filter(|(t, _)| t.status == super::task_status::TaskStatus::Done).count();
        Shown { total: self.tasks.len() as i64, done: done as i64 }
    }
}

async fn visible_project(tx: &mut OrgTx, client: ClientId, id: ProjectId) -> DomainResult<Project> {
    sqlx::query_as(&format!("SELECT {} FROM projects p WHERE p.id = $2 AND {VISIBLE_PROJECT}", projects::COLUMNS))
        .bind(client)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::NotFound)
}

pub async fn project(db: &Db, keys: &Keyring, p: &OrgPrincipal, id: ProjectId) -> DomainResult<PortalProject> {
    let client = client_of(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let project = visible_project(&mut tx, client, id).await?;
    let task_rows: Vec<Task> = sqlx::query_as(&format!(
        "SELECT {} FROM tasks t WHERE t.project_id = $1 AND t.visible_to_client ORDER BY t.created_at",
        tasks::COLUMNS
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    // The shown comments of all those tasks in one query, then each task's in order.
    let ids: Vec<uuid::Uuid> = task_rows.iter().map(|t| t.id.as_uuid()).collect();
    let comments: Vec<Comment> = sqlx::query_as(&format!(
        "SELECT {} FROM comments c LEFT JOIN users u ON u.id = c.author_id WHERE c.task_id = ANY($1) AND c.client_visible \
         ORDER BY c.created_at, c.id",
        tasks::PORTAL_COMMENT_COLUMNS
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_task: std::collections::HashMap<TaskId, Vec<Comment>> = Default::default();
    for c in comments {
        by_task.entry(c.task_id).or_default().push(c);
    }
    let tasks_out: Vec<(Task, Vec<Comment>)> = task_rows
        .into_iter()
        .map(|t| {
            let its = by_task.remove(&t.id).unwrap_or_default();
            (t, its)
        })
        .collect();
    let files = sqlx::query_as(&format!(
        "SELECT {} FROM files f WHERE f.project_id = $1 AND f.shared_with_client ORDER BY f.created_at DESC, f.id DESC",
        files::COLUMNS
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let files = files::open_all(files, keys, p.org_id())?;
    Ok(PortalProject { project, tasks: tasks_out, files })
}

/// One of the client's invoices (never a draft). Opening it records that the client viewed it
/// (the first time: `viewed_at` and an audit event; staff opening it internally never do).
pub async fn invoice(
    db: &Db,
    ctx: &crate::audit::Context,
    p: &OrgPrincipal,
    id: InvoiceId,
) -> DomainResult<InvoiceDetail> {
    let client = client_of(p)?;
    let mut tx = OrgTx::begin(db, p).await?;
    let today = super::org_today(&mut tx, ctx.now).await?;
    let mine: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM invoices WHERE id = $1 AND client_id = $2 AND status <> 'draft')",
    )
    .bind(id)
    .bind(client)
    .fetch_one(&mut *tx)
    .await?;
    if !mine {
        return Err(DomainError::NotFound);
    }
    invoices::record_viewed(&mut tx, ctx, id).await?;
    let d = invoices::detail_in(&mut tx, id, today).await?;
    tx.commit().await?;
    Ok(d)
}

/// The client's own statement from `from` to `to` (see `work::statement`). Payment notes are
/// the organization's own records and are left out.
pub async fn statement(db: &Db, p: &OrgPrincipal, from: Date, to: Date) -> DomainResult<Statement> {
    let client = client_of(p)?;
    let mut s = super::statement::statement_of(db, p, client, from, to).await?;
    for entry in s.currencies.iter_mut().flat_map(|c| c.entries.iter_mut()) {
        entry.note.clear();
    }
    Ok(s)
}

/// A file shared with the client, in one of the client's visible projects.
pub async fn download(
    db: &Db,
    storage: &RegionStores,
    keys: &Keyring,
    p: &OrgPrincipal,
    id: FileId,
) -> DomainResult<(FileMeta, Vec<u8>)> {
    let client = client_of(p)?;
    let storage = storage.of(p.region())?;
    let mut tx = OrgTx::begin(db, p).await?;
    let row: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT f.storage_key FROM files f JOIN projects p ON p.organization_id = f.organization_id AND p.id = f.project_id \
         WHERE f.id = $2 AND f.shared_with_client AND {VISIBLE_PROJECT}"
    ))
    .bind(client)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (key,) = row.ok_or(DomainError::NotFound)?;
    let row: files::FileRow = sqlx::query_as(&format!("SELECT {} FROM files f WHERE f.id = $1", files::COLUMNS))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let meta = row.open(keys, p.org_id())?;
    let bytes = files::read_contents(storage, keys, p.org_id(), id, &key).await?;
    Ok((meta, bytes))
}
