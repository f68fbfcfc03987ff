//! The schedule page: a month of deadlines across the projects one may see, day by day.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use time::Date;

use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::schedule::{self, Entry};

pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/o/{org}/schedule", Surface::Web, Access::Org(P::ProjectsRead), schedule_page)]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MonthQuery {
    /// `YYYY-MM` (default: this month).
    #[serde(default)]
    month: String,
}

struct Day {
    /// "Monday 7 December".
    heading: String,
    iso: String,
    today: bool,
    past: bool,
    entries: Vec<Entry>,
}

#[derive(Template)]
#[template(path = "work/schedule.html")]
struct SchedulePage {
    org: OrgNav,
    /// "December 2026".
    title: String,
    previous: Option<(String, String)>,
    next: Option<(String, String)>,
    this_month: bool,
    days: Vec<Day>,
    capped: bool,
    can_tasks: bool,
}

fn month_name(d: Date) -> String {
    format!("{} {}", d.month(), d.year())
}

fn link(access: &OrgAccess, d: Date) -> (String, String) {
    (format!("/o/{}/schedule?month={:04}-{:02}", access.slug, d.year(), u8::from(d.month())), month_name(d))
}

async fn schedule_page(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<MonthQuery>,
) -> AppResult<Response> {
    let s = schedule::schedule(&state.db, &access.principal, Some(q.month.trim()), state.clock.now()).await?;
    let mut days: Vec<Day> = Vec::new();
    for e in s.entries {
        match days.last_mut() {
            Some(d) if d.iso == e.day.to_string() => d.entries.push(e),
            _ => days.push(Day {
                heading: format!("{} {} {}", e.day.weekday(), e.day.day(), e.day.month()),
                iso: e.day.to_string(),
                today: e.day == s.today,
                past: e.day < s.today,
                entries: vec![e],
            }),
        }
    }
    page(&SchedulePage {
        title: month_name(s.month),
        previous: schedule::previous_month(s.month).map(|d| link(&access, d)),
        next: schedule::next_month(s.month).map(|d| link(&access, d)),
        this_month: s.today.year() == s.month.year() && s.today.month() == s.month.month(),
        days,
        capped: s.capped,
        can_tasks: access.principal.can(P::TasksRead),
        org: OrgNav::of(&access),
    })
}
