//! The organization-wide lists that are read a page at a time (no total is counted): tasks
//! with search, time entries and files, each filtered by project. One item beyond the page is
//! read to know whether a next page exists.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{PAGE_SIZE, Pager, day, duration};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::AppResult;
use crate::platform::ids::UserId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::files::{self, FileFilter};
use crate::work::tasks::{self, TaskFilter};
use crate::work::time_entries::{self, TimeFilter};
use crate::work::{Page, projects};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/tasks", Surface::Web, Access::Org(P::TasksRead), task_list),
        route!(GET "/o/{org}/time", Surface::Web, Access::Org(P::ProjectsRead), time_list),
        route!(GET "/o/{org}/files", Surface::Web, Access::Org(P::FilesRead), file_list),
    ]
}

/// One page plus one item: (the page, whether more follow).
fn one_more(offset: i64) -> Page {
    Page { limit: Some(PAGE_SIZE + 1), offset: Some(offset) }
}

fn split<T>(mut items: Vec<T>) -> (Vec<T>, bool) {
    let more = items.len() as i64 > PAGE_SIZE;
    items.truncate(PAGE_SIZE as usize);
    (items, more)
}

/// Names of the projects the viewer can see, for the filter and the rows.
async fn project_names(state: &AppState, access: &OrgAccess) -> AppResult<Vec<(String, String)>> {
    let filter = projects::ProjectFilter { q: None, status: Some("all".into()), client_id: None };
    let mut out = Vec::new();
    let mut offset = 0;
    // Every visible project (a few pages at most), so rows from any of them are named.
    loop {
        let page = Page { limit: Some(crate::work::MAX_PAGE), offset: Some(offset) };
        let (list, total) = projects::list(&state.db, &access.principal, &filter, page).await?;
        let n = list.len() as i64;
        out.extend(list.into_iter().map(|p| (p.id.to_string(), p.name)));
        offset += n;
        if n == 0 || offset >= total || offset >= 10 * crate::work::MAX_PAGE {
            break;
        }
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    project_id: String,
    /// `me` or a person's id.
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    offset: i64,
}

struct TaskRow {
    id: String,
    title: String,
    project: String,
    status: String,
    priority: String,
    due: String,
}

#[derive(Template)]
#[template(path = "work/tasks.html")]
struct TaskListPage {
    org: OrgNav,
    rows: Vec<TaskRow>,
    q: String,
    status: String,
    project_id: String,
    projects: Vec<(String, String)>,
    assignee: String,
    /// The "Assigned to" choices beyond "Me": (id, name).
    people: Vec<(String, String)>,
    statuses: [(&'static str, &'static str); 4],
    pager: Pager,
}

async fn task_list(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ListQuery>,
) -> AppResult<Response> {
    let me = access.principal.user_id();
    let assignee = match q.assignee.trim() {
        "me" => me,
        other => super::form_id::<UserId>("assignee", other)?,
    };
    let filter = TaskFilter {
        project_id: Some(q.project_id.clone()),
        status: Some(q.status.clone()),
        assignee: assignee.map(|u| u.to_string()),
        q: Some(q.q.clone()),
    };
    let offset = q.offset.max(0);
    let (items, more) = split(tasks::list(&state.db, &access.principal, &filter, one_more(offset)).await?);
    let projects = project_names(&state, &access).await?;
    let names: HashMap<&str, &str> = projects.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    let everyone = super::people(&state, &access).await?;
    let people = super::assignee_choices(&everyone, &super::People::of(&everyone), me);
    let filters =
        [("q", q.q.as_str()), ("status", &q.status), ("project_id", &q.project_id), ("assignee", q.assignee.trim())];
    let pager = Pager::uncounted(&format!("/o/{}/tasks", access.slug), &filters, offset, items.len(), more);
    let rows = items
        .into_iter()
        .map(|t| TaskRow {
            id: t.id.to_string(),
            project: names.get(t.project_id.to_string().as_str()).map(|n| n.to_string()).unwrap_or_default(),
            title: t.title,
            status: t.status.label().to_string(),
            priority: super::priority_word(&t.priority).to_string(),
            due: day(t.due_date),
        })
        .collect();
    page(&TaskListPage {
        org: OrgNav::of(&access),
        rows,
        q: q.q,
        status: q.status,
        project_id: q.project_id,
        projects,
        assignee: q.assignee.trim().to_string(),
        people,
        statuses: super::STATUS_WORDS,
        pager,
    })
}

#[derive(Deserialize, Default)]
struct ProjectQuery {
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    offset: i64,
}

struct TimeRow {
    spent_on: String,
    minutes: String,
    project_id: String,
    project: String,
    task_id: String,
    note: String,
}

#[derive(Template)]
#[template(path = "work/time.html")]
struct TimeListPage {
    org: OrgNav,
    rows: Vec<TimeRow>,
    project_id: String,
    projects: Vec<(String, String)>,
    pager: Pager,
    /// The viewer approves time (the approvals page is offered).
    approves: bool,
}

async fn time_list(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ProjectQuery>,
) -> AppResult<Response> {
    let filter = TimeFilter { project_id: Some(q.project_id.clone()), task_id: None };
    let offset = q.offset.max(0);
    let (items, more) = split(time_entries::list(&state.db, &access.principal, &filter, one_more(offset)).await?);
    let projects = project_names(&state, &access).await?;
    let names: HashMap<&str, &str> = projects.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    let pager = Pager::uncounted(
        &format!("/o/{}/time", access.slug),
        &[("project_id", &q.project_id)],
        offset,
        items.len(),
        more,
    );
    let rows = items
        .into_iter()
        .map(|e| TimeRow {
            spent_on: e.spent_on.to_string(),
            minutes: duration(e.minutes.into()),
            project: names.get(e.project_id.to_string().as_str()).map(|n| n.to_string()).unwrap_or_default(),
            project_id: e.project_id.to_string(),
            task_id: e.task_id.map(|t| t.to_string()).unwrap_or_default(),
            note: e.note,
        })
        .collect();
    let approves = access.principal.can(P::ProjectsUpdate);
    page(&TimeListPage { org: OrgNav::of(&access), rows, project_id: q.project_id, projects, pager, approves })
}

struct FileRow {
    id: String,
    name: String,
    size: String,
    project_id: String,
    project: String,
    shared: bool,
    uploaded: String,
}

#[derive(Template)]
#[template(path = "work/files.html")]
struct FileListPage {
    org: OrgNav,
    rows: Vec<FileRow>,
    project_id: String,
    projects: Vec<(String, String)>,
    pager: Pager,
}

async fn file_list(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ProjectQuery>,
) -> AppResult<Response> {
    let filter = FileFilter { project_id: Some(q.project_id.clone()), task_id: None };
    let offset = q.offset.max(0);
    let (items, more) = split(files::list(&state.db, &state.keys, &access.principal, &filter, one_more(offset)).await?);
    let projects = project_names(&state, &access).await?;
    let names: HashMap<&str, &str> = projects.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    let pager = Pager::uncounted(
        &format!("/o/{}/files", access.slug),
        &[("project_id", &q.project_id)],
        offset,
        items.len(),
        more,
    );
    let rows = items
        .into_iter()
        .map(|f| FileRow {
            id: f.id.to_string(),
            size: super::projects::size(f.size_bytes),
            project: names.get(f.project_id.to_string().as_str()).map(|n| n.to_string()).unwrap_or_default(),
            project_id: f.project_id.to_string(),
            shared: f.shared_with_client,
            uploaded: access.when(f.created_at),
            name: f.name,
        })
        .collect();
    page(&FileListPage { org: OrgNav::of(&access), rows, project_id: q.project_id, projects, pager })
}
