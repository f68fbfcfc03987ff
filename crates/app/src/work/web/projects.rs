//! Project pages: list with search, status and client filters; create, edit, delete; the
//! project page with its task board, members, board columns, time entries and files.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{PAGE_SIZE, Pager, People, STATUS_WORDS, day, duration, form_id, name_of, path_id, people};
use crate::access::role::{Permission as P, Role};
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::fields;
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::platform::ids::{ClientId, ColumnId, ProjectId, TaskId, UserId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::money::{format_minor, parse_decimal};
use crate::work::projects::{self, Project, ProjectFilter, ProjectInput, ProjectUpdate};
use crate::work::time_entries::{self, TimeFilter, TimeInput};
use crate::work::{Page, clients, files, tasks};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/projects", Surface::Web, Access::Org(P::ProjectsRead), list),
        route!(GET "/o/{org}/projects/new", Surface::Web, Access::Org(P::ProjectsCreate), new_page),
        route!(POST "/o/{org}/projects", Surface::Web, Access::Org(P::ProjectsCreate), create),
        route!(GET "/o/{org}/projects/{project}", Surface::Web, Access::Org(P::ProjectsRead), detail),
        route!(GET "/o/{org}/projects/{project}/edit", Surface::Web, Access::Org(P::ProjectsUpdate), edit_page),
        route!(GET "/o/{org}/projects/{project}/list", Surface::Web, Access::Org(P::ProjectsRead), list_tab),
        route!(GET "/o/{org}/projects/{project}/time", Surface::Web, Access::Org(P::ProjectsRead), time_tab),
        route!(GET "/o/{org}/projects/{project}/expenses", Surface::Web, Access::Org(P::ProjectsRead), expenses_tab),
        route!(GET "/o/{org}/projects/{project}/files", Surface::Web, Access::Org(P::ProjectsRead), files_tab),
        route!(GET "/o/{org}/projects/{project}/invoices", Surface::Web, Access::Org(P::ProjectsRead), invoices_tab),
        route!(GET "/o/{org}/projects/{project}/people", Surface::Web, Access::Org(P::ProjectsRead), people_tab),
        route!(GET "/o/{org}/projects/{project}/activity", Surface::Web, Access::Org(P::ProjectsRead), activity_tab),
        route!(POST "/o/{org}/projects/{project}/edit", Surface::Web, Access::Org(P::ProjectsUpdate), update),
        route!(POST "/o/{org}/projects/{project}/delete", Surface::Web, Access::Org(P::ProjectsDelete), delete),
        route!(POST "/o/{org}/projects/{project}/members", Surface::Web, Access::Org(P::ProjectsUpdate), add_member),
        route!(POST "/o/{org}/projects/{project}/members/{user}/remove", Surface::Web, Access::Org(P::ProjectsUpdate), remove_member),
        route!(POST "/o/{org}/projects/{project}/members/{user}/rate", Surface::Web, Access::Org(P::ProjectsUpdate), member_rate),
        route!(POST "/o/{org}/projects/{project}/columns", Surface::Web, Access::Org(P::ProjectsUpdate), add_column),
        route!(POST "/o/{org}/projects/{project}/columns/{column}/move", Surface::Web, Access::Org(P::ProjectsUpdate), move_column),
        route!(POST "/o/{org}/projects/{project}/columns/{column}/delete", Surface::Web, Access::Org(P::ProjectsUpdate), delete_column),
        route!(POST "/o/{org}/projects/{project}/time", Surface::Web, Access::Org(P::TimeTrack), record_time),
        route!(POST "/o/{org}/projects/{project}/time/{entry}/delete", Surface::Web, Access::Org(P::TimeTrack), delete_time),
    ]
}

/// The statuses to choose from, in words ([`ProjectStatus::label`](projects::ProjectStatus::label)).
const STATUSES: [(&str, &str); 5] = {
    const fn word(s: projects::ProjectStatus) -> (&'static str, &'static str) {
        (s.as_str(), s.label())
    }
    let [a, b, c, d, e] = projects::ProjectStatus::ALL;
    [word(a), word(b), word(c), word(d), word(e)]
};

/// Clients to choose from: `None` when the viewer may not read clients (the form then takes
/// a client id). At most one page of active clients, plus the currently chosen one.
pub async fn client_options(
    state: &AppState,
    access: &OrgAccess,
    current: Option<ClientId>,
) -> AppResult<Option<Vec<(String, String)>>> {
    let p = &access.principal;
    if !p.can(P::ClientsRead) {
        return Ok(None);
    }
    let filter = clients::ClientFilter { q: None, status: Some("active".into()) };
    let (list, _) =
        clients::list(&state.db, p, &filter, Page { limit: Some(crate::work::MAX_PAGE), offset: None }).await?;
    let mut out: Vec<(String, String)> = list.into_iter().map(|c| (c.id.to_string(), c.name)).collect();
    if let Some(c) = current
        && !out.iter().any(|(id, _)| *id == c.to_string())
    {
        out.push((c.to_string(), clients::get(&state.db, p, c).await?.name));
    }
    Ok(Some(out))
}

/// Client names for a page of records (only when the viewer may read clients).
pub async fn client_names(
    state: &AppState,
    access: &OrgAccess,
    ids: Vec<ClientId>,
) -> AppResult<HashMap<ClientId, String>> {
    let mut names = HashMap::new();
    if !access.principal.can(P::ClientsRead) {
        return Ok(names);
    }
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(e) = names.entry(id) {
            e.insert(clients::get(&state.db, &access.principal, id).await?.name);
        }
    }
    Ok(names)
}

// ---- list ----

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    offset: i64,
}

struct Row {
    id: String,
    name: String,
    client: String,
    status: &'static str,
    due: String,
    /// How much of its budget is used ("68% used", "Over by 120.00"); empty without one.
    budget: String,
    over_budget: bool,
    /// Its tasks, done and overdue (zeros without tasks, or for those who may not read them).
    progress: projects::Progress,
}

/// A project's budget and what its billable time has used of it, as pages show it.
pub struct BudgetView {
    /// "USD 1500.00"
    pub total: String,
    pub used: String,
    /// What is left, or by how much the budget is exceeded.
    pub left: String,
    pub over: bool,
    /// Whole percent used; none for a budget of zero.
    pub percent: Option<i64>,
    /// The meter's value: the percent, at most 100.
    pub meter: i64,
    /// Billable entries without a rate (they count as nothing).
    pub unrated: i64,
    /// What the expenses counted add to the time ("120.50"), when the budget counts them.
    pub expenses: Option<String>,
    /// Billable expenses in another currency (they count as nothing).
    pub uncounted: i64,
}

impl BudgetView {
    /// The view of a project that has a budget.
    pub fn of(b: &projects::ProjectBudget) -> Option<Self> {
        let (budget, left) = (b.budget_minor?, b.remaining_minor?);
        let percent = b.percent();
        Some(Self {
            total: format!("{} {}", b.currency, format_minor(budget)),
            used: format_minor(b.used_minor),
            left: format_minor(left.saturating_abs()),
            over: left < 0,
            percent,
            meter: percent.unwrap_or(if left < 0 { 100 } else { 0 }).min(100),
            unrated: b.unrated_entries,
            expenses: b.counts_expenses.then(|| format_minor(b.expenses_minor)),
            uncounted: b.uncounted_expenses,
        })
    }

    /// The short form of the projects list.
    fn brief(&self) -> String {
        match (self.over, self.percent) {
            (true, _) => format!("Over by {}", self.left),
            (false, Some(p)) => format!("{p}% used"),
            (false, None) => "Nothing used".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "work/projects.html")]
struct ListPage {
    org: OrgNav,
    rows: Vec<Row>,
    q: String,
    status: String,
    client_id: String,
    clients: Option<Vec<(String, String)>>,
    statuses: [(&'static str, &'static str); 5],
    pager: Pager,
    can_create: bool,
    /// The progress column (for those who may read tasks).
    with_tasks: bool,
}

async fn list(State(state): State<AppState>, access: OrgAccess, Query(q): Query<ListQuery>) -> AppResult<Response> {
    let filter =
        ProjectFilter { q: Some(q.q.clone()), status: Some(q.status.clone()), client_id: Some(q.client_id.clone()) };
    let page_req = Page { limit: Some(PAGE_SIZE), offset: Some(q.offset) };
    let (items, total) = projects::list(&state.db, &access.principal, &filter, page_req).await?;
    let names = client_names(&state, &access, items.iter().filter_map(|p| p.client_id).collect()).await?;
    let with_budget: Vec<ProjectId> = items.iter().filter(|p| p.budget_minor.is_some()).map(|p| p.id).collect();
    let budgets = projects::budgets(&state.db, &access.principal, &with_budget).await?;
    let ids: Vec<ProjectId> = items.iter().map(|p| p.id).collect();
    let today = crate::work::today(&state.db, &access.principal, state.clock.now()).await?;
    let progress = projects::progress(&state.db, &access.principal, &ids, today).await?;
    let base = format!("/o/{}/projects", access.slug);
    let pager = Pager::new(
        &base,
        &[("q", &q.q), ("status", &q.status), ("client_id", &q.client_id)],
        page_req.offset(),
        items.len(),
        total,
    );
    let current_client = form_id::<ClientId>("client_id", &q.client_id).ok().flatten();
    page(&ListPage {
        clients: client_options(&state, &access, current_client).await?,
        can_create: access.principal.can(P::ProjectsCreate),
        with_tasks: access.principal.can(P::TasksRead),
        org: OrgNav::of(&access),
        rows: items
            .into_iter()
            .map(|p| {
                let budget = budgets.get(&p.id).and_then(BudgetView::of);
                Row {
                    id: p.id.to_string(),
                    client: p.client_id.and_then(|c| names.get(&c).cloned()).unwrap_or_default(),
                    status: p.status_label(),
                    budget: budget.as_ref().map(BudgetView::brief).unwrap_or_default(),
                    over_budget: budget.is_some_and(|b| b.over),
                    progress: progress.get(&p.id).copied().unwrap_or_default(),
                    name: p.name,
                    due: day(p.due_date),
                }
            })
            .collect(),
        q: q.q,
        status: q.status,
        client_id: q.client_id,
        statuses: STATUSES,
        pager,
    })
}

// ---- create and edit ----

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProjectForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    budget: String,
    #[serde(default)]
    start_date: String,
    #[serde(default)]
    due_date: String,
    #[serde(default)]
    visible_to_client: Option<String>,
    /// Money as typed (`120.50`); empty for none.
    #[serde(default)]
    hourly_rate: String,
    /// `on` when the budget counts billable expenses too.
    #[serde(default)]
    budget_counts_expenses: Option<String>,
}

impl ProjectForm {
    fn of(p: &Project) -> Self {
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            client_id: p.client_id.map(|c| c.to_string()).unwrap_or_default(),
            status: p.status.clone(),
            budget: p.budget_minor.map(format_minor).unwrap_or_default(),
            start_date: day(p.start_date),
            due_date: day(p.due_date),
            visible_to_client: p.visible_to_client.then(|| "on".into()),
            hourly_rate: crate::work::invoicing::show_rate(p.hourly_rate_minor),
            budget_counts_expenses: p.budget_counts_expenses.then(|| "on".into()),
        }
    }

    fn budget(&self) -> AppResult<Option<i64>> {
        match self.budget.trim() {
            "" => Ok(None),
            b => Ok(parse_decimal("budget", b, 2).map(Some)?),
        }
    }

    fn status(&self) -> String {
        if self.status.is_empty() { "active".into() } else { self.status.clone() }
    }

    fn input(&self) -> AppResult<ProjectInput> {
        Ok(ProjectInput {
            name: self.name.clone(),
            description: Some(self.description.clone()),
            client_id: Some(self.client_id.trim().to_string()),
            status: Some(self.status()),
            budget_minor: self.budget()?,
            start_date: Some(self.start_date.trim().to_string()),
            due_date: Some(self.due_date.trim().to_string()),
            visible_to_client: Some(self.visible_to_client.is_some()),
            hourly_rate_minor: crate::work::invoicing::parse_rate("hourly_rate", &self.hourly_rate)?,
            budget_counts_expenses: Some(self.budget_counts_expenses.is_some()),
        })
    }

    /// The form sends every field: an empty one clears it.
    fn update(&self) -> AppResult<ProjectUpdate> {
        Ok(ProjectUpdate {
            name: Some(self.name.clone()),
            description: Some(self.description.clone()),
            client_id: Some(Some(self.client_id.trim().to_string())),
            status: Some(self.status()),
            budget_minor: Some(self.budget()?),
            start_date: Some(Some(self.start_date.trim().to_string())),
            due_date: Some(Some(self.due_date.trim().to_string())),
            visible_to_client: Some(self.visible_to_client.is_some()),
            hourly_rate_minor: Some(crate::work::invoicing::parse_rate("hourly_rate", &self.hourly_rate)?),
            budget_counts_expenses: Some(self.budget_counts_expenses.is_some()),
        })
    }
}

#[derive(Template)]
#[template(path = "work/project_form.html")]
struct FormPage {
    csrf: String,
    org: OrgNav,
    project_id: Option<String>,
    form: ProjectForm,
    clients: Option<Vec<(String, String)>>,
    statuses: [(&'static str, &'static str); 5],
    /// The organization's currency, which budgets are kept in.
    currency: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Deserialize, Default)]
struct NewQuery {
    #[serde(default)]
    client_id: String,
}

async fn form_page(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    project_id: Option<String>,
    form: ProjectForm,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<FormPage> {
    let current = form_id::<ClientId>("client_id", &form.client_id).ok().flatten();
    let currency = {
        let mut tx = crate::access::OrgTx::begin(&state.db, &access.principal).await?;
        let settings = crate::tenancy::service::settings(&mut tx).await?;
        tx.commit().await?;
        settings.currency
    };
    Ok(FormPage {
        csrf,
        org: OrgNav::of(access),
        project_id,
        currency,
        clients: client_options(state, access, current).await?,
        form,
        statuses: STATUSES,
        message,
        errors,
    })
}

async fn new_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<NewQuery>,
) -> AppResult<Response> {
    let form = ProjectForm { client_id: q.client_id, status: "active".into(), ..ProjectForm::default() };
    page(&form_page(&state, csrf, &access, None, form, None, vec![]).await?)
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<ProjectForm>,
) -> AppResult<Response> {
    let result = match form.input() {
        Ok(input) => projects::create(&state.db, &ctx, &access.principal, &input).await.map_err(AppError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => Ok(Redirect::to(&format!("/o/{}/projects/{}", access.slug, p.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &form_page(&state, csrf, &access, None, form, message, errors).await?)
        }
    }
}

async fn edit_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let p = projects::get(&state.db, &access.principal, path_id(&id)?).await?;
    let form = ProjectForm::of(&p);
    page(&form_page(&state, csrf, &access, Some(p.id.to_string()), form, None, vec![]).await?)
}

async fn update(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ProjectForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let result = match form.update() {
        Ok(input) => projects::update(&state.db, &ctx, &access.principal, id, &input).await.map_err(AppError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => Ok(Redirect::to(&format!("/o/{}/projects/{}", access.slug, p.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(
                status,
                &form_page(&state, csrf, &access, Some(id.to_string()), form, message, errors).await?,
            )
        }
    }
}

// ---- the project page ----

pub struct CardView {
    pub id: String,
    pub title: String,
    pub priority: String,
    pub due: String,
    /// Open and due before the organization's today.
    pub late: bool,
    pub visible_to_client: bool,
    pub column_id: String,
    /// Initials and full name of each assignee.
    pub assignees: Vec<(String, String)>,
}

pub struct ColumnView {
    pub id: String,
    pub name: String,
    pub status: String,
    pub first: bool,
    pub last: bool,
    /// The column's first cards (at most [`tasks::BOARD_COLUMN_CAP`]).
    pub cards: Vec<CardView>,
    /// How many cards the column holds in all.
    pub total: i64,
}

impl ColumnView {
    /// Whether the column holds more cards than the board shows.
    pub fn more(&self) -> bool {
        self.total > self.cards.len() as i64
    }
}

/// A row of the List tab.
pub struct ListRow {
    pub card: CardView,
    pub column: String,
}

pub struct ActivityView {
    pub when: String,
    pub who: String,
    pub task: (String, String),
    pub what: String,
}

pub struct InvoiceView {
    pub id: String,
    pub number: String,
    pub status: crate::work::invoices::InvoiceStatus,
    pub total: String,
    pub issued: String,
}

pub struct TimeView {
    pub id: String,
    pub minutes: String,
    pub spent_on: String,
    pub note: String,
    pub who: String,
    pub task: Option<(String, String)>,
    /// The viewer may change or delete it (their own, or anyone's with projects.update; not
    /// billed, not approved).
    pub deletable: bool,
    /// The invoice that billed it (it can then be neither changed nor deleted).
    pub invoice: Option<String>,
    pub billable: bool,
    /// Its week is approved (it can then be neither changed nor deleted).
    pub approved: bool,
}

pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: String,
    pub content_type: String,
    pub shared: bool,
    pub added: String,
}

pub fn file_view(access: &OrgAccess, f: files::FileMeta) -> FileView {
    FileView {
        id: f.id.to_string(),
        size: size(f.size_bytes),
        name: f.name,
        content_type: f.content_type,
        shared: f.shared_with_client,
        added: access.when(f.created_at),
    }
}

pub fn size(bytes: i64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// Values typed into the project page's forms, shown again when one of them fails, and the tab
/// the page opens on.
#[derive(Default, Clone)]
pub struct ProjectForms {
    pub tab: &'static str,
    pub task_title: String,
    pub task_column: String,
    pub column_name: String,
    pub minutes: String,
    pub spent_on: String,
    pub note: String,
    pub task_id: String,
    /// The List tab: one column only (a board column's "Show all"), and the page.
    pub list_column: String,
    pub list_offset: i64,
    /// The List tab: whose tasks (`me`, `nobody`, or a person's id), and only the open ones (`1`).
    pub list_assignee: String,
    pub list_open: String,
    /// The Expenses tab's form (with `spent_on` and `note` above): the amount as typed, and the
    /// billable choice (`yes`, `no`, or empty for the project's default).
    pub category: String,
    pub amount: String,
    pub billable: String,
    pub receipt: String,
}

/// The project page's tabs: each its own address under the project's.
pub const TABS: [(&str, &str, &str); 8] = [
    ("board", "Board", ""),
    ("list", "List", "/list"),
    ("time", "Time", "/time"),
    ("expenses", "Expenses", "/expenses"),
    ("files", "Files", "/files"),
    ("invoices", "Invoices", "/invoices"),
    ("people", "People", "/people"),
    ("activity", "Activity", "/activity"),
];

#[derive(Template)]
#[template(path = "work/project.html")]
pub struct ProjectPage {
    csrf: String,
    org: OrgNav,
    project: Project,
    tab: &'static str,
    tabs: Vec<(&'static str, &'static str, &'static str)>,
    client: Option<(String, String)>,
    budget: Option<BudgetView>,
    /// Its tasks done and overdue, subtasks included (for those who may read tasks).
    progress: projects::Progress,
    board: Vec<ColumnView>,
    task_count: i64,
    list: Vec<ListRow>,
    list_pager: Option<Pager>,
    list_column: Option<(String, String)>,
    /// The List tab's "Assigned to" choices beyond "Me" and "Nobody": (id, name).
    assignee_options: Vec<(String, String)>,
    /// The List tab shows only some of the tasks (by person or open).
    list_narrowed: bool,
    members: Vec<projects::ProjectMember>,
    candidates: Vec<(String, String)>,
    time: Vec<TimeView>,
    time_total: String,
    task_options: Vec<(String, String)>,
    /// The Expenses tab (empty on the others).
    expenses: Option<super::expense_view::ExpensesTab>,
    files: Vec<FileView>,
    invoices: Vec<InvoiceView>,
    activity: Vec<ActivityView>,
    forms: ProjectForms,
    statuses: [(&'static str, &'static str); 4],
    can_tasks: bool,
    can_create_task: bool,
    can_move: bool,
    can_update: bool,
    /// May start a new project from this one (creating projects and tasks).
    can_copy: bool,
    can_delete: bool,
    can_track: bool,
    /// The viewer's running timer when it runs on this page's work: (shown, seconds).
    timer_here: Option<(String, i64)>,
    /// Whether the viewer has a timer running on something else (starting here stops it).
    timer_elsewhere: bool,
    can_files: bool,
    can_upload: bool,
    can_delete_files: bool,
    can_invoices: bool,
    can_create_invoice: bool,
    max_upload: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

/// Tasks per page on the List tab.
const LIST_PAGE: i64 = 100;

fn initials(name: &str) -> String {
    let words: Vec<&str> =
        name.split(|c: char| c.is_whitespace() || c == '@' || c == '.').filter(|w| !w.is_empty()).collect();
    words.iter().take(2).filter_map(|w| w.chars().next()).flat_map(char::to_uppercase).collect()
}

pub async fn project_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ProjectId,
    forms: ProjectForms,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<ProjectPage> {
    let p = &access.principal;
    let tab = TABS.iter().find(|t| t.0 == forms.tab).map(|t| t.0).unwrap_or("board");
    let project = projects::get(&state.db, p, id).await?;
    let budget = match project.budget_minor {
        Some(_) => BudgetView::of(&projects::budget(&state.db, p, id).await?),
        None => None,
    };
    let client = match project.client_id {
        Some(c) if p.can(P::ClientsRead) => Some((c.to_string(), clients::get(&state.db, p, c).await?.name)),
        _ => None,
    };
    // The organization's today: the progress's overdue count and the cards marked late.
    let today = crate::work::today(&state.db, p, state.clock.now()).await?;
    let progress = projects::progress(&state.db, p, &[id], today).await?.remove(&id).unwrap_or_default();
    let everyone = people(state, access).await?;
    let names = People::of(&everyone);
    let may_tasks = p.can(P::TasksRead);
    let columns: Vec<tasks::BoardColumn> = if tab == "board" && may_tasks {
        tasks::board(&state.db, p, id, tasks::BOARD_COLUMN_CAP).await?
    } else {
        let columns = projects::list_columns(&state.db, p, id).await?;
        columns.into_iter().map(|column| tasks::BoardColumn { column, total: 0, tasks: vec![] }).collect()
    };
    let column_names: HashMap<String, String> =
        columns.iter().map(|c| (c.column.id.to_string(), c.column.name.clone())).collect();
    // The List tab: a page of the project's tasks, of one column when a "Show all" asked.
    let list_column = form_id::<ColumnId>("column", &forms.list_column)
        .ok()
        .flatten()
        .filter(|c| column_names.contains_key(&c.to_string()));
    let list_filter = tasks::ProjectListFilter {
        column: list_column,
        assignee: match forms.list_assignee.trim() {
            "" | "nobody" => None,
            "me" => p.user_id(),
            other => form_id::<UserId>("assignee", other)?,
        },
        unassigned: forms.list_assignee.trim() == "nobody",
        open: fields::flag("open", &forms.list_open)?,
    };
    let (listed, list_total) = if tab == "list" && may_tasks {
        tasks::project_list(&state.db, p, id, &list_filter, LIST_PAGE, forms.list_offset.max(0)).await?
    } else {
        (vec![], 0)
    };
    let shown: Vec<TaskId> =
        columns.iter().flat_map(|c| c.tasks.iter().map(|t| t.id)).chain(listed.iter().map(|t| t.id)).collect();
    let assigned = if may_tasks && !shown.is_empty() {
        tasks::assignees_of(&state.db, p, id, &shown).await?
    } else {
        HashMap::new()
    };
    let card = |t: tasks::Task| CardView {
        late: t.status != crate::work::task_status::TaskStatus::Done && t.due_date.is_some_and(|due| due < today),
        assignees: assigned
            .get(&t.id)
            .map(|users| users.iter().map(|u| (initials(&names.short_name(u)), names.name(u))).collect())
            .unwrap_or_default(),
        id: t.id.to_string(),
        title: t.title,
        priority: t.priority,
        due: day(t.due_date),
        visible_to_client: t.visible_to_client,
        column_id: t.column_id.to_string(),
    };
    let list: Vec<ListRow> = listed
        .into_iter()
        .map(|t| ListRow {
            column: column_names.get(&t.column_id.to_string()).cloned().unwrap_or_default(),
            card: card(t),
        })
        .collect();
    let list_pager = (tab == "list").then(|| {
        let column = list_column.map(|c| c.to_string()).unwrap_or_default();
        Pager::sized(
            &tab_path(&access.slug, id, "list"),
            &[("column", &column), ("assignee", forms.list_assignee.trim()), ("open", &forms.list_open)],
            forms.list_offset.max(0),
            list.len(),
            list_total,
            LIST_PAGE,
        )
    });
    let n = columns.len();
    let board: Vec<ColumnView> = columns
        .into_iter()
        .enumerate()
        .map(|(i, c)| ColumnView {
            id: c.column.id.to_string(),
            name: c.column.name,
            status: c.column.status,
            first: i == 0,
            last: i + 1 == n,
            total: c.total,
            cards: c.tasks.into_iter().map(card).collect(),
        })
        .collect();
    let task_count = if tab == "list" { list_total } else { board.iter().map(|c| c.total).sum() };
    let list_column =
        list_column.map(|c| (c.to_string(), column_names.get(&c.to_string()).cloned().unwrap_or_default()));
    let assignee_options = if tab == "list" { super::assignee_choices(&everyone, &names, p.user_id()) } else { vec![] };
    let list_narrowed = list_filter.assignee.is_some() || list_filter.unassigned || list_filter.open;
    let (members, candidates) = if tab == "people" {
        let members = projects::members(&state.db, p, id).await?;
        let candidates = everyone
            .iter()
            .filter(|m| m.status == "active" && m.role != Role::Client)
            .filter(|m| !members.iter().any(|pm| pm.user_id == m.user_id))
            .map(|m| (m.user_id.to_string(), format!("{} ({})", name_of(m), m.role.label())))
            .collect();
        (members, candidates)
    } else {
        (vec![], vec![])
    };
    let (time, time_total, task_options) = if tab == "time" {
        let entries = time_entries::list(
            &state.db,
            p,
            &TimeFilter { project_id: Some(id.to_string()), task_id: None },
            Page { limit: Some(crate::work::MAX_PAGE), offset: None },
        )
        .await?;
        let titles: HashMap<TaskId, String> = board_titles(&state.db, p, id).await?;
        let total: i64 = entries.iter().map(|e| e.minutes as i64).sum();
        let time = entries
            .into_iter()
            .map(|e| TimeView {
                id: e.id.to_string(),
                minutes: duration(e.minutes.into()),
                spent_on: e.spent_on.to_string(),
                who: names.name(&e.user_id),
                task: e.task_id.map(|t| (t.to_string(), titles.get(&t).cloned().unwrap_or_default())),
                deletable: p.can(P::TimeTrack) && time_entries::may_change(p, &e, "changed").is_ok(),
                invoice: e.invoice_id.map(|i| i.to_string()),
                billable: e.billable,
                approved: e.approved_at.is_some(),
                note: e.note,
            })
            .collect();
        let mut options: Vec<(String, String)> = titles.into_iter().map(|(id, t)| (id.to_string(), t)).collect();
        options.sort_by_key(|o| o.1.to_lowercase());
        (time, duration(total), options)
    } else {
        (vec![], String::new(), vec![])
    };
    let expenses = match tab {
        "expenses" => Some(super::expense_view::tab(state, p, id, &names).await?),
        _ => None,
    };
    let files = if tab == "files" && p.can(P::FilesRead) {
        files::list(
            &state.db,
            &state.keys,
            p,
            &files::FileFilter { project_id: Some(id.to_string()), task_id: None },
            Page { limit: Some(crate::work::MAX_PAGE), offset: None },
        )
        .await?
        .into_iter()
        .map(|f| file_view(access, f))
        .collect()
    } else {
        vec![]
    };
    let invoices = match project.client_id {
        Some(c) if tab == "invoices" && p.can(P::InvoicesRead) => {
            let filter = crate::work::invoices::InvoiceFilter { client_id: Some(c.to_string()), status: None, q: None };
            crate::work::invoices::list(
                &state.db,
                state.clock.now(),
                p,
                &filter,
                Page { limit: Some(50), offset: None },
            )
            .await?
            .0
            .into_iter()
            .map(|i| InvoiceView {
                id: i.id.to_string(),
                number: i.title(),
                total: i.total_shown(),
                issued: i.issue_date.to_string(),
                status: i.status,
            })
            .collect()
        }
        _ => vec![],
    };
    let activity = if tab == "activity" && p.can(P::TasksRead) {
        let log = tasks::project_activity(&state.db, p, id, 100).await?;
        super::moves_once(log, |a| (Some(a.task_id), a.field.clone(), a.occurred_at, a.actor_label.clone()))
            .into_iter()
            .map(|a| ActivityView {
                when: access.when(a.occurred_at),
                who: names.actor(a.actor_id, &a.actor_label),
                task: (a.task_id.to_string(), a.title),
                what: describe_change(&a.field, a.old_value.as_deref(), a.new_value.as_deref(), &board_names(&board)),
            })
            .collect()
    } else {
        vec![]
    };
    Ok(ProjectPage {
        csrf,
        org: OrgNav::of(access),
        client,
        budget,
        progress,
        tabs: TABS.to_vec(),
        tab,
        project,
        board,
        task_count,
        list,
        list_pager,
        list_column,
        assignee_options,
        list_narrowed,
        members,
        candidates,
        time,
        time_total,
        task_options,
        expenses,
        files,
        invoices,
        activity,
        forms,
        statuses: STATUS_WORDS,
        can_tasks: p.can(P::TasksRead),
        can_create_task: p.can(P::TasksCreate),
        can_move: p.can(P::TasksUpdate),
        can_update: p.can(P::ProjectsUpdate),
        can_copy: p.can(P::ProjectsCreate) && p.can(P::TasksCreate),
        can_delete: p.can(P::ProjectsDelete),
        can_track: p.can(P::TimeTrack),
        timer_here: super::timesheet::timer_on(access, id.as_uuid(), None),
        timer_elsewhere: access.running_timer.is_some(),
        can_files: p.can(P::FilesRead),
        can_upload: p.can(P::FilesUpload),
        can_delete_files: p.can(P::FilesDelete),
        can_invoices: p.can(P::InvoicesRead),
        can_create_invoice: p.can(P::InvoicesCreate),
        max_upload: size(state.config.files.max_upload_bytes as i64),
        message,
        errors,
    })
}

fn board_names(board: &[ColumnView]) -> HashMap<String, String> {
    board.iter().map(|c| (c.id.clone(), c.name.clone())).collect()
}

/// A task change in words ("moved from To do to Done"), with column ids as column names.
fn describe_change(field: &str, old: Option<&str>, new: Option<&str>, columns: &HashMap<String, String>) -> String {
    let show = |v: Option<&str>| -> String {
        match v {
            None | Some("") => "nothing".into(),
            Some(v) => {
                columns.get(v).cloned().unwrap_or_else(|| super::word(&STATUS_WORDS, v).unwrap_or(v).to_string())
            }
        }
    };
    match field {
        "created" => "created the task".into(),
        "column" => format!("moved it from {} to {}", show(old), show(new)),
        "status" => format!("status {} → {}", show(old), show(new)),
        "description" => "edited the description".into(),
        "assignees" => "changed who is assigned".into(),
        other => format!("{} {} → {}", other.replace('_', " "), show(old), show(new)),
    }
}

/// Titles of the project's tasks (subtasks included), for labelling time entries.
pub(super) async fn board_titles(
    db: &crate::platform::db::Db,
    p: &crate::access::OrgPrincipal,
    project: ProjectId,
) -> AppResult<HashMap<TaskId, String>> {
    if !p.can(P::TasksRead) {
        return Ok(HashMap::new());
    }
    let filter = tasks::TaskFilter { project_id: Some(project.to_string()), ..Default::default() };
    let list = tasks::list(db, p, &filter, Page { limit: Some(crate::work::MAX_PAGE), offset: None }).await?;
    Ok(list.into_iter().map(|t| (t.id, t.title)).collect())
}

async fn show_tab(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: &str,
    tab: &'static str,
) -> AppResult<Response> {
    let forms = ProjectForms { tab, ..ProjectForms::default() };
    page(&project_view(state, csrf, access, path_id(id)?, forms, None, vec![]).await?)
}

async fn detail(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    show_tab(&state, csrf, &access, &id, "board").await
}

macro_rules! tab_handler {
    ($name:ident, $tab:literal) => {
        async fn $name(
            State(state): State<AppState>,
            FormToken(csrf): FormToken,
            access: OrgAccess,
            Path((_, id)): Path<(String, String)>,
        ) -> AppResult<Response> {
            show_tab(&state, csrf, &access, &id, $tab).await
        }
    };
}
tab_handler!(time_tab, "time");
tab_handler!(expenses_tab, "expenses");
tab_handler!(files_tab, "files");
tab_handler!(invoices_tab, "invoices");
tab_handler!(people_tab, "people");
tab_handler!(activity_tab, "activity");

#[derive(Deserialize, Default)]
struct ListTabQuery {
    #[serde(default)]
    column: String,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    open: String,
}

/// The List tab: every task of the project a page at a time, or one column's
/// (`?column=`, where a board column's "Show all" leads), narrowed to one person's tasks or no
/// one's (`?assignee=me|nobody|<id>`) and to the open ones (`?open=1`).
async fn list_tab(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<ListTabQuery>,
) -> AppResult<Response> {
    let forms = ProjectForms {
        tab: "list",
        list_column: q.column,
        list_offset: q.offset,
        list_assignee: q.assignee,
        list_open: q.open,
        ..ProjectForms::default()
    };
    page(&project_view(&state, csrf, &access, path_id(&id)?, forms, None, vec![]).await?)
}

/// The address of a project's tab.
pub fn tab_path(slug: &str, id: ProjectId, tab: &str) -> String {
    let suffix = TABS.iter().find(|t| t.0 == tab).map(|t| t.2).unwrap_or("");
    format!("/o/{slug}/projects/{id}{suffix}")
}

/// After an action on the project page: back to its tab, or the tab with the failure.
pub async fn project_result(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ProjectId,
    tab: &'static str,
    forms: ProjectForms,
    result: Result<(), impl Into<AppError>>,
) -> AppResult<Response> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(Redirect::to(&tab_path(&access.slug, id, tab)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let forms = ProjectForms { tab, ..forms };
            project_failure(state, csrf, access, id, forms, status, message, errors).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn project_failure(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ProjectId,
    forms: ProjectForms,
    status: StatusCode,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<Response> {
    page_with_status(status, &project_view(state, csrf, access, id, forms, message, errors).await?)
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    match projects::delete(&state.db, &ctx, &access.principal, id).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/projects", access.slug)).into_response()),
        Err(e) => project_result(&state, csrf, &access, id, "board", ProjectForms::default(), Err(e)).await,
    }
}

// ---- members ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberForm {
    #[serde(default)]
    user_id: String,
}

async fn add_member(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<MemberForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let result = async {
        let user: UserId =
            form_id("user_id", &form.user_id)?.ok_or_else(|| AppError::field("user_id", "choose a person"))?;
        projects::add_member(&state.db, &ctx, &access.principal, id, user).await.map_err(AppError::from)
    }
    .await;
    project_result(&state, csrf, &access, id, "people", ProjectForms::default(), result).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRateForm {
    #[serde(default)]
    hourly_rate: String,
}

/// Sets a person's hourly rate on the project (empty clears it).
async fn member_rate(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, user)): Path<(String, String, String)>,
    Form(form): Form<MemberRateForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let user: UserId = path_id(&user)?;
    let result = async {
        let rate = crate::work::invoicing::parse_rate("hourly_rate", &form.hourly_rate)?;
        projects::set_member_rate(&state.db, &ctx, &access.principal, id, user, rate).await.map_err(AppError::from)
    }
    .await;
    project_result(&state, csrf, &access, id, "people", ProjectForms::default(), result).await
}

async fn remove_member(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, user)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let user: UserId = path_id(&user)?;
    let r = projects::remove_member(&state.db, &ctx, &access.principal, id, user).await;
    project_result(&state, csrf, &access, id, "people", ProjectForms::default(), r).await
}

// ---- board columns ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
}

async fn add_column(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ColumnForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let r = projects::add_column_with_status(&state.db, &ctx, &access.principal, id, &form.name, Some(&form.status))
        .await
        .map(|_| ());
    let forms = ProjectForms { column_name: form.name, ..ProjectForms::default() };
    project_result(&state, csrf, &access, id, "board", forms, r).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveColumnForm {
    #[serde(default)]
    direction: String,
}

async fn move_column(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, column)): Path<(String, String, String)>,
    Form(form): Form<MoveColumnForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let column: ColumnId = path_id(&column)?;
    let result = async {
        let delta = match form.direction.as_str() {
            "left" => -1,
            "right" => 1,
            _ => return Err(AppError::field("direction", "must be left or right")),
        };
        projects::move_column(&state.db, &ctx, &access.principal, id, column, delta).await.map_err(AppError::from)
    }
    .await;
    project_result(&state, csrf, &access, id, "board", ProjectForms::default(), result).await
}

async fn delete_column(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, column)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let column: ColumnId = path_id(&column)?;
    let r = projects::delete_column(&state.db, &ctx, &access.principal, id, column).await;
    project_result(&state, csrf, &access, id, "board", ProjectForms::default(), r).await
}

// ---- time ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeForm {
    #[serde(default)]
    pub minutes: String,
    #[serde(default)]
    pub spent_on: String,
    #[serde(default)]
    pub note: String,
    /// Set by the form on a task's page, or picked on the project's Time tab.
    #[serde(default)]
    pub task_id: String,
    /// `project` when sent from the project's Time tab (the answer goes back there).
    #[serde(default)]
    pub from: String,
    /// `yes`, `no`, or empty for the project's default.
    #[serde(default)]
    pub billable: String,
}

/// A billable choice from a form: `yes`, `no`, or empty for the project's default.
pub fn billable_choice(raw: &str) -> AppResult<Option<bool>> {
    match raw.trim() {
        "" => Ok(None),
        "yes" => Ok(Some(true)),
        "no" => Ok(Some(false)),
        _ => Err(AppError::field("billable", "must be yes or no")),
    }
}

async fn record_time(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<TimeForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let result = async {
        // Typed as a duration: 1:30, 1h30m, 1.5h, 90m or minutes.
        let minutes = crate::work::duration::parse("minutes", &form.minutes)?;
        let billable = billable_choice(&form.billable)?;
        let spent_on = form.spent_on.trim();
        let input = TimeInput {
            project_id: id.to_string(),
            task_id: Some(form.task_id.trim().to_string()),
            minutes: Some(minutes),
            duration: None,
            billable,
            spent_on: (!spent_on.is_empty()).then(|| spent_on.to_string()),
            note: Some(form.note.clone()),
        };
        time_entries::create(&state.db, &ctx, &access.principal, &input).await.map_err(AppError::from)
    }
    .await;
    // The project in the address is not one the caller may see.
    if let Err(AppError::Domain(DomainError::Invalid(v))) = &result
        && v.iter().any(|f| f.field == "project_id")
    {
        return Err(AppError::not_found());
    }
    let task: Option<TaskId> = if form.from == "project" { None } else { form.task_id.trim().parse().ok() };
    match (result, task) {
        (Ok(_), Some(task)) => Ok(Redirect::to(&format!("/o/{}/tasks/{task}#time", access.slug)).into_response()),
        (Err(e), Some(task)) if !matches!(e, AppError::Domain(DomainError::NotFound)) => {
            let (status, message, errors) = failure(e)?;
            let forms = super::tasks::TaskForms {
                minutes: form.minutes,
                spent_on: form.spent_on,
                note: form.note,
                ..Default::default()
            };
            super::tasks::task_failure(&state, csrf, &access, task, forms, status, message, errors).await
        }
        (result, _) => {
            let forms = ProjectForms {
                minutes: form.minutes,
                spent_on: form.spent_on,
                note: form.note,
                task_id: form.task_id,
                ..ProjectForms::default()
            };
            project_result(&state, csrf, &access, id, "time", forms, result.map(|_| ())).await
        }
    }
}

async fn delete_time(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, entry)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let entry = path_id(&entry)?;
    // The entry must belong to the project in the address (its page is where we return).
    let found = time_entries::get(&state.db, &access.principal, entry).await?;
    if found.project_id != id {
        return Err(AppError::not_found());
    }
    let r = time_entries::delete(&state.db, &ctx, &access.principal, entry).await;
    project_result(&state, csrf, &access, id, "time", ProjectForms::default(), r).await
}
