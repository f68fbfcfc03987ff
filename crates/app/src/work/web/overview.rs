//! The organization's overview page (`/o/{org}`), where a person lands: their tasks, the
//! active projects, money owed, their week's time, and a new organization's first steps.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};

use super::duration;
use crate::access::role::{Permission as P, Role};
use crate::access::route::{Access, RouteDef, Surface};
use crate::identity::guard::FormToken;
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::money::format_minor;
use crate::work::overview::{self, Overview};

pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/o/{org}", Surface::Web, Access::Org(P::OrgAccess), overview_page)]
}

/// A first step, with where to take it.
struct Step {
    href: String,
    label: &'static str,
    hint: &'static str,
    done: bool,
}

struct TaskLine {
    id: String,
    title: String,
    project: String,
    due: String,
    late: bool,
}

struct MyTasksView {
    overdue: usize,
    due_today: usize,
    this_week: usize,
    open: usize,
    /// "4 open tasks".
    open_label: String,
    next: Vec<TaskLine>,
}

struct ProjectLine {
    id: String,
    name: String,
    client: String,
    open: i64,
    overdue: i64,
    over_budget: bool,
}

struct InvoicesView {
    /// "EUR 1,200.00 in 2 invoices", per currency.
    outstanding: Vec<String>,
    overdue: i64,
    drafts: i64,
    /// "2 drafts".
    drafts_label: String,
}

#[derive(Template)]
#[template(path = "work/overview.html")]
struct OverviewPage {
    csrf: String,
    org: OrgNav,
    role: &'static str,
    today: String,
    steps: Vec<Step>,
    my_tasks: Option<MyTasksView>,
    /// How many are active ("3 active projects"), and the first of them.
    projects: Option<(String, Vec<ProjectLine>)>,
    with_tasks: bool,
    invoices: Option<InvoicesView>,
    week: Option<String>,
    /// What the person's open tasks due this week still need, in words.
    planned: Option<String>,
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn overview_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    let p = &access.principal;
    if p.role() == Role::Client {
        // Clients have the portal, nothing else.
        return Ok(Redirect::to(&format!("/portal/{}", access.slug)).into_response());
    }
    let Overview { today, my_tasks, projects, invoices, week_minutes, planned, setup } =
        overview::overview(&state.db, p, state.clock.now()).await?;
    let slug = &access.slug;
    let steps = match setup {
        Some(s) if !s.done() => {
            let step = |taken: Option<bool>, path: &str, label, hint| {
                taken.map(|done| Step { href: format!("/o/{slug}/{path}"), label, hint, done })
            };
            [
                step(
                    s.add_client,
                    "clients",
                    "Add your first client",
                    "Projects, invoices and the client's portal belong to a client.",
                ),
                step(
                    s.create_project,
                    "projects/new",
                    "Create a project",
                    "A board of tasks, with time, files and invoices.",
                ),
                step(
                    s.invite_team,
                    "members",
                    "Invite your team",
                    "Each with the role that fits: Admin, Manager or Member.",
                ),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
        _ => vec![],
    };
    let my_tasks = my_tasks.map(|m| MyTasksView {
        overdue: m.overdue,
        due_today: m.due_today,
        this_week: m.this_week,
        open: m.open,
        open_label: plural(m.open as i64, "open task", "open tasks"),
        next: m
            .next
            .into_iter()
            .map(|t| TaskLine {
                id: t.id.to_string(),
                title: t.title,
                project: t.project,
                due: t.due_date.map(|d| d.to_string()).unwrap_or_default(),
                late: t.due_date.is_some_and(|d| d < today),
            })
            .collect(),
    });
    let with_tasks = p.can(P::TasksRead);
    let projects = projects.map(|ps| {
        let lines = ps
            .listed
            .into_iter()
            .map(|s| ProjectLine {
                id: s.id.to_string(),
                name: s.name,
                client: s.client.unwrap_or_default(),
                open: s.open_tasks,
                overdue: s.overdue_tasks,
                over_budget: s.over_budget,
            })
            .collect();
        (plural(ps.active, "active project", "active projects"), lines)
    });
    let invoices = invoices.map(|i| InvoicesView {
        outstanding: i
            .outstanding
            .into_iter()
            .map(|(currency, n, total)| {
                format!("{currency} {} in {}", format_minor(total), plural(n, "invoice", "invoices"))
            })
            .collect(),
        overdue: i.overdue,
        drafts: i.drafts,
        drafts_label: plural(i.drafts, "draft", "drafts"),
    });
    page(&OverviewPage {
        csrf,
        org: OrgNav::of(&access),
        role: p.role().label(),
        today: today.to_string(),
        steps,
        my_tasks,
        projects,
        with_tasks,
        invoices,
        week: week_minutes.map(duration),
        planned: planned.map(planned_words),
    })
}

/// "Planned: 10h 30m of your 40h, for 2 open tasks due this week; over by 30m."
fn planned_words(w: crate::work::workload::MyWeek) -> String {
    if w.tasks == 0 {
        return "None of your open tasks is due this week.".into();
    }
    let capacity = if w.capacity_minutes == 0 { "0h".to_string() } else { duration(i64::from(w.capacity_minutes)) };
    let tasks = plural(w.tasks, "open task", "open tasks");
    let over = w.planned_minutes - i64::from(w.capacity_minutes);
    let over = if over > 0 { format!("; over by {}", duration(over)) } else { String::new() };
    format!("Planned: {} of your {capacity}, for {tasks} due this week{over}.", duration(w.planned_minutes))
}
