//! The workload page: four weeks of everyone's planned work against their hours a week, and
//! the form that sets those hours.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::{Date, Duration};

use super::duration;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppResult, DomainError, FieldError};
use crate::platform::ids::UserId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::approvals;
use crate::work::duration as durations;
use crate::work::fields;
use crate::work::workload::{self, Load, MAX_WEEKLY_MINUTES, PersonLoad};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/workload", Surface::Web, Access::Org(P::ProjectsUpdate), workload_page),
        route!(POST "/o/{org}/workload/capacity", Surface::Web, Access::Org(P::ProjectsUpdate), set_capacity),
    ]
}

/// The most tasks one cell lists; the rest are on the person's task list.
const LISTED: usize = 50;

/// One cell: what a span holds for a person, in words.
struct Cell {
    /// The span's heading, which labels the cell on a phone.
    label: String,
    /// "6h 30m", or empty when nothing falls there.
    planned: String,
    /// "3 tasks, 1 without an estimate".
    tasks: String,
    /// "Over by 2h" against the week's capacity, or empty.
    over: String,
    /// The tasks, at most [`LISTED`].
    items: Vec<Item>,
    /// Tasks beyond those listed.
    more: i64,
}

impl Cell {
    fn of(slug: &str, label: &str, load: &Load, over_by: i64) -> Self {
        let tasks = match (load.tasks, load.unestimated_tasks) {
            (0, _) => String::new(),
            (n, 0) => tasks_of(n),
            (n, u) if u == n => format!("{}, none estimated", tasks_of(n)),
            (n, u) => format!("{}, {u} without an estimate", tasks_of(n)),
        };
        let items = load
            .items
            .iter()
            .take(LISTED)
            .map(|t| Item {
                href: format!("/o/{slug}/tasks/{}", t.id),
                title: t.title.clone(),
                project: t.project.clone(),
                due: t.due_date.map(|d| d.to_string()).unwrap_or_default(),
                share: match t.share_minutes {
                    Some(m) => format!("{} to go", duration(m)),
                    None => "no estimate".into(),
                },
            })
            .collect();
        Self {
            label: label.to_string(),
            planned: if load.tasks == 0 { String::new() } else { duration(load.planned_minutes) },
            tasks,
            over: if over_by > 0 { format!("Over by {}", duration(over_by)) } else { String::new() },
            items,
            more: load.tasks - LISTED.min(load.items.len()) as i64,
        }
    }
}

/// A task in a cell.
struct Item {
    href: String,
    title: String,
    project: String,
    /// Its due date, or empty.
    due: String,
    /// "4h to go", or "no estimate".
    share: String,
}

fn tasks_of(n: i64) -> String {
    if n == 1 { "1 task".into() } else { format!("{n} tasks") }
}

struct Row {
    user_id: String,
    person: String,
    /// The person's tasks, on the task list.
    href: String,
    capacity: String,
    /// The capacity as the form shows it: whole hours as a number ("40"), otherwise hours and
    /// minutes ("37:30"), which the form reads back the same.
    capacity_field: String,
    /// The form to change the hours is open (a change that was refused).
    changing: bool,
    /// Due earlier, each week, no due date.
    cells: Vec<Cell>,
    /// Weeks over capacity.
    over_weeks: usize,
}

#[derive(Template)]
#[template(path = "work/workload.html")]
struct WorkloadPage {
    org: OrgNav,
    csrf: String,
    /// The Monday of the first week, as the form carries it back.
    week: String,
    /// Each week's heading: ("This week" or "Week of", its Monday).
    weeks: Vec<(&'static str, String)>,
    prev: String,
    next: String,
    this_week: String,
    rows: Vec<Row>,
    /// People over capacity in at least one week.
    over: usize,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Deserialize, Default)]
struct WorkloadQuery {
    /// Any day of the first week (default: this week).
    #[serde(default)]
    week: String,
}

async fn workload_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<WorkloadQuery>,
) -> AppResult<Response> {
    let day = fields::date_or_empty("week", &q.week)?;
    page(&view(&state, csrf, &access, day).await?)
}

async fn view(state: &AppState, csrf: String, access: &OrgAccess, day: Option<Date>) -> AppResult<WorkloadPage> {
    let p = &access.principal;
    let w = workload::workload(&state.db, p, day, state.clock.now()).await?;
    let (first, today) = (w.weeks[0], w.today);
    let me = p.user_id();
    let link = |d: Option<Date>| match d.filter(|d| workload::weeks_from("week", *d).is_ok()) {
        Some(d) => format!("/o/{}/workload?week={d}", access.slug),
        None => String::new(),
    };
    let this_monday = approvals::monday_of(today);
    // Each week's heading, and the same in one line for a cell's label on a phone.
    let (weeks, labels): (Vec<(&'static str, String)>, Vec<String>) = w
        .weeks
        .iter()
        .map(|m| match *m == this_monday {
            true => (("This week", m.to_string()), format!("This week, {m}")),
            false => (("Week of", m.to_string()), format!("Week of {m}")),
        })
        .unzip();
    let rows: Vec<Row> = w.people.iter().map(|person| row(access, person, me, &labels)).collect();
    Ok(WorkloadPage {
        org: OrgNav::of(access),
        csrf,
        week: first.to_string(),
        weeks,
        prev: link(first.checked_sub(Duration::days(28))),
        next: link(first.checked_add(Duration::days(28))),
        this_week: if first == this_monday { String::new() } else { format!("/o/{}/workload", access.slug) },
        over: rows.iter().filter(|r| r.over_weeks > 0).count(),
        rows,
        message: None,
        errors: vec![],
    })
}

fn row(access: &OrgAccess, person: &PersonLoad, me: Option<UserId>, headings: &[String]) -> Row {
    let slug = access.slug.as_str();
    let mut cells = vec![Cell::of(slug, "Due earlier", &person.earlier, 0)];
    cells.extend(person.weeks.iter().zip(headings).map(|(l, h)| Cell::of(slug, h, l, person.over_by(l))));
    cells.push(Cell::of(slug, "No due date", &person.undated, 0));
    let capacity = i64::from(person.capacity_minutes);
    Row {
        user_id: person.user_id.to_string(),
        person: if Some(person.user_id) == me { format!("{} (you)", person.person) } else { person.person.clone() },
        href: format!("/o/{}/tasks?assignee={}", access.slug, person.user_id),
        capacity: if capacity == 0 { "0h".into() } else { duration(capacity) },
        capacity_field: if capacity % 60 == 0 { (capacity / 60).to_string() } else { durations::format_hm(capacity) },
        over_weeks: cells.iter().filter(|c| !c.over.is_empty()).count(),
        changing: false,
        cells,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CapacityForm {
    #[serde(default)]
    person: String,
    #[serde(default)]
    hours_a_week: String,
    /// The first week of the page the form was on, to return to it.
    #[serde(default)]
    week: String,
}

/// Sets a person's hours a week, then back to the same weeks.
async fn set_capacity(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<CapacityForm>,
) -> AppResult<Response> {
    let day = fields::date_or_empty("week", &form.week)?;
    let result = async {
        let person: UserId = fields::id("person", &form.person)?;
        let minutes = durations::parse_hours("hours_a_week", &form.hours_a_week, MAX_WEEKLY_MINUTES)?;
        workload::set_capacity(&state.db, &ctx, &access.principal, person, minutes).await
    }
    .await;
    match result {
        Ok(_) => {
            let week = day.map(|d| format!("?week={d}")).unwrap_or_default();
            Ok(Redirect::to(&format!("/o/{}/workload{week}", access.slug)).into_response())
        }
        Err(e) => refused(&state, csrf, &access, day, (&form.person, &form.hours_a_week), e).await,
    }
}

/// The page again, saying why the change was refused, with the person's form open on what was
/// typed.
async fn refused(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    day: Option<Date>,
    (person, typed): (&str, &str),
    e: DomainError,
) -> AppResult<Response> {
    let (status, message, errors) = failure(e)?;
    let mut view = view(state, csrf, access, day).await?;
    if let Some(row) = view.rows.iter_mut().find(|r| r.user_id == person.trim()) {
        row.changing = true;
        row.capacity_field = typed.to_string();
    }
    view.message = message;
    view.errors = errors;
    page_with_status(status, &view)
}
