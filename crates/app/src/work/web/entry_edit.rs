//! Correcting a recorded time entry or expense on a page of its own, reached from its row on the
//! project's Time or Expenses tab (and a time entry from its task's page too).
//!
//! The page opens only for whoever may change the entry (its author, or anyone with
//! `projects.update`) and only while nothing billed it; the service checks both again when the
//! form is saved, under the row's lock, so an invoice billing the entry meanwhile wins with a 409.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::projects::{billable_choice, board_titles, tab_path};
use super::{People, path_id, people};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, FieldError};
use crate::platform::ids::{ExpenseId, ProjectId, TimeEntryId, UserId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::duration::format_hm;
use crate::work::expenses::{self, Expense, ExpenseUpdate};
use crate::work::money::{format_minor, parse_decimal};
use crate::work::time_entries::{self, TimeEntry, TimeUpdate};
use crate::work::{Page, files, projects, tasks};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/projects/{project}/time/{entry}/edit", Surface::Web, Access::Org(P::TimeTrack), time_page),
        route!(POST "/o/{org}/projects/{project}/time/{entry}/edit", Surface::Web, Access::Org(P::TimeTrack), save_time),
        route!(GET "/o/{org}/projects/{project}/expenses/{expense}/edit", Surface::Web, Access::Org(P::TimeTrack), expense_page),
        route!(POST "/o/{org}/projects/{project}/expenses/{expense}/edit", Surface::Web, Access::Org(P::TimeTrack), save_expense),
    ]
}

/// Where the page was opened from: `task` for a task's time list (the answer goes back there);
/// anything else is the project's tab.
#[derive(Deserialize, Default)]
struct Origin {
    #[serde(default)]
    from: String,
}

// ---- time ----

/// The time entry's form as typed.
#[derive(Deserialize, Default)]
struct TimeForm {
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    spent_on: String,
    /// A task of the project, or empty for none; absent (for those who may not read tasks, who
    /// are offered none) leaves the entry's task as it is.
    task_id: Option<String>,
    #[serde(default)]
    note: String,
    /// `yes` or `no`.
    #[serde(default)]
    billable: String,
    #[serde(default)]
    from: String,
}

impl TimeForm {
    fn of(e: &TimeEntry, from: String) -> Self {
        Self {
            minutes: format_hm(e.minutes.into()),
            spent_on: e.spent_on.to_string(),
            task_id: Some(e.task_id.map(|t| t.to_string()).unwrap_or_default()),
            note: e.note.clone(),
            billable: if e.billable { "yes" } else { "no" }.into(),
            from,
        }
    }
}

#[derive(Template)]
#[template(path = "work/time_edit.html")]
struct TimePage {
    csrf: String,
    org: OrgNav,
    project_id: String,
    project_name: String,
    entry_id: String,
    /// Who recorded it, when someone else did.
    recorded_by: Option<String>,
    form: TimeForm,
    /// The project's tasks: (id, title); none (and no field) for those who may not read tasks.
    tasks: Option<Vec<(String, String)>>,
    back: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

/// The entry named by the address, if it belongs to the project in it and the caller may change
/// it now.
async fn changeable_entry(state: &AppState, access: &OrgAccess, project: &str, entry: &str) -> AppResult<TimeEntry> {
    let project: ProjectId = path_id(project)?;
    let entry: TimeEntryId = path_id(entry)?;
    let found = time_entries::get(&state.db, &access.principal, entry).await?;
    if found.project_id != project {
        return Err(AppError::not_found());
    }
    time_entries::may_change(&access.principal, &found, "changed")?;
    Ok(found)
}

fn time_back(slug: &str, e: &TimeEntry, from: &str) -> String {
    match e.task_id {
        Some(t) if from == "task" => format!("/o/{slug}/tasks/{t}#time"),
        _ => tab_path(slug, e.project_id, "time"),
    }
}

/// Who recorded an entry, named for a viewer who isn't that person.
async fn recorded_by(state: &AppState, access: &OrgAccess, author: UserId) -> AppResult<Option<String>> {
    if access.principal.user_id() == Some(author) {
        return Ok(None);
    }
    Ok(Some(People::of(&people(state, access).await?).name(&author)))
}

#[allow(clippy::too_many_arguments)]
async fn render_time(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    e: &TimeEntry,
    form: TimeForm,
    status: StatusCode,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<Response> {
    let p = &access.principal;
    let project = projects::get(&state.db, p, e.project_id).await?;
    let options = if p.can(P::TasksRead) {
        let mut titles = board_titles(&state.db, p, e.project_id).await?;
        // Its own task stays offered when the project has more tasks than one list holds.
        if let Some(t) = e.task_id
            && !titles.contains_key(&t)
        {
            titles.insert(t, tasks::get(&state.db, p, t).await?.task.title);
        }
        let mut options: Vec<(String, String)> = titles.into_iter().map(|(id, t)| (id.to_string(), t)).collect();
        options.sort_by_key(|o| o.1.to_lowercase());
        Some(options)
    } else {
        None
    };
    let recorded_by = recorded_by(state, access, e.user_id).await?;
    page_with_status(
        status,
        &TimePage {
            csrf,
            org: OrgNav::of(access),
            project_id: project.id.to_string(),
            project_name: project.name,
            entry_id: e.id.to_string(),
            recorded_by,
            back: time_back(&access.slug, e, &form.from),
            form,
            tasks: options,
            message,
            errors,
        },
    )
}

async fn time_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, project, entry)): Path<(String, String, String)>,
    Query(from): Query<Origin>,
) -> AppResult<Response> {
    let e = changeable_entry(&state, &access, &project, &entry).await?;
    let form = TimeForm::of(&e, from.from);
    render_time(&state, csrf, &access, &e, form, StatusCode::OK, None, vec![]).await
}

async fn save_time(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, project, entry)): Path<(String, String, String)>,
    Form(form): Form<TimeForm>,
) -> AppResult<Response> {
    let before = changeable_entry(&state, &access, &project, &entry).await?;
    let saved = async {
        let minutes = crate::work::duration::parse("minutes", &form.minutes)?;
        let change = TimeUpdate {
            task_id: form.task_id.as_deref().map(|t| Some(t.trim().to_string())),
            minutes: Some(minutes),
            billable: billable_choice(&form.billable)?,
            spent_on: Some(form.spent_on.trim().to_string()),
            note: Some(form.note.clone()),
            ..TimeUpdate::default()
        };
        time_entries::update(&state.db, &ctx, &access.principal, before.id, &change).await.map_err(AppError::from)
    }
    .await;
    match saved {
        Ok(after) => Ok(Redirect::to(&time_back(&access.slug, &after, &form.from)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            render_time(&state, csrf, &access, &before, form, status, message, errors).await
        }
    }
}

// ---- expenses ----

/// The expense's form as typed (the amount as a decimal, like 42.50).
#[derive(Deserialize, Default)]
struct ExpenseForm {
    #[serde(default)]
    category: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    spent_on: String,
    #[serde(default)]
    note: String,
    /// `yes` or `no`.
    #[serde(default)]
    billable: String,
    /// A file of the project, or empty for none; absent (for those who may not read files)
    /// leaves the receipt as it is.
    receipt: Option<String>,
}

impl ExpenseForm {
    fn of(x: &Expense) -> Self {
        Self {
            category: x.category.clone(),
            amount: format_minor(x.amount_minor),
            spent_on: x.spent_on.to_string(),
            note: x.note.clone(),
            billable: if x.billable { "yes" } else { "no" }.into(),
            receipt: Some(x.receipt_file_id.map(|f| f.to_string()).unwrap_or_default()),
        }
    }
}

#[derive(Template)]
#[template(path = "work/expense_edit.html")]
struct ExpensePage {
    csrf: String,
    org: OrgNav,
    project_id: String,
    project_name: String,
    expense_id: String,
    currency: String,
    recorded_by: Option<String>,
    form: ExpenseForm,
    categories: Vec<String>,
    /// The project's files a receipt may be picked from: (id, name); empty for those who may
    /// not read files (the field is then left out).
    files: Vec<(String, String)>,
    back: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn changeable_expense(state: &AppState, access: &OrgAccess, project: &str, expense: &str) -> AppResult<Expense> {
    let project: ProjectId = path_id(project)?;
    let expense: ExpenseId = path_id(expense)?;
    let found = expenses::get(&state.db, &access.principal, expense).await?;
    if found.project_id != project {
        return Err(AppError::not_found());
    }
    expenses::may_change(&access.principal, &found, "change")?;
    Ok(found)
}

#[allow(clippy::too_many_arguments)]
async fn render_expense(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    x: &Expense,
    form: ExpenseForm,
    status: StatusCode,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<Response> {
    let p = &access.principal;
    let project = projects::get(&state.db, p, x.project_id).await?;
    let (_, categories) = expenses::choices(&state.db, p).await?;
    let files = if p.can(P::FilesRead) {
        let filter = files::FileFilter { project_id: Some(x.project_id.to_string()), task_id: None };
        let page = Page { limit: Some(crate::work::MAX_PAGE), offset: None };
        let mut list: Vec<(String, String)> = files::list(&state.db, &state.keys, p, &filter, page)
            .await?
            .into_iter()
            .map(|f| (f.id.to_string(), f.name))
            .collect();
        // Its own receipt stays offered when the project has more files than one list holds.
        if let Some(r) = x.receipt_file_id
            && !list.iter().any(|f| f.0 == r.to_string())
        {
            list.push((r.to_string(), files::get(&state.db, &state.keys, p, r).await?.name));
        }
        list
    } else {
        vec![]
    };
    let recorded_by = recorded_by(state, access, x.user_id).await?;
    page_with_status(
        status,
        &ExpensePage {
            csrf,
            org: OrgNav::of(access),
            project_id: project.id.to_string(),
            project_name: project.name,
            expense_id: x.id.to_string(),
            currency: x.currency.clone(),
            recorded_by,
            form,
            categories,
            files,
            back: tab_path(&access.slug, x.project_id, "expenses"),
            message,
            errors,
        },
    )
}

async fn expense_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, project, expense)): Path<(String, String, String)>,
) -> AppResult<Response> {
    let x = changeable_expense(&state, &access, &project, &expense).await?;
    let form = ExpenseForm::of(&x);
    render_expense(&state, csrf, &access, &x, form, StatusCode::OK, None, vec![]).await
}

async fn save_expense(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, project, expense)): Path<(String, String, String)>,
    Form(form): Form<ExpenseForm>,
) -> AppResult<Response> {
    let before = changeable_expense(&state, &access, &project, &expense).await?;
    let saved = async {
        let change = ExpenseUpdate {
            category: Some(form.category.clone()),
            amount_minor: Some(parse_decimal("amount", &form.amount, 2)?),
            spent_on: Some(form.spent_on.trim().to_string()),
            billable: billable_choice(&form.billable)?,
            note: Some(form.note.clone()),
            receipt_file_id: form.receipt.clone().map(Some),
        };
        expenses::update(&state.db, &ctx, &access.principal, before.id, &change).await.map_err(AppError::from)
    }
    .await
    .map_err(super::expenses::as_typed);
    match saved {
        Ok(after) => Ok(Redirect::to(&tab_path(&access.slug, after.project_id, "expenses")).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            render_expense(&state, csrf, &access, &before, form, status, message, errors).await
        }
    }
}
