//! The schedule page: a month of deadlines across the projects one may see, day by day.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use time::Date;

use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::fields;
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::schedule::{self, Entry};
use crate::work::web::{People, people};

pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/o/{org}/schedule", Surface::Web, Access::Org(P::ProjectsRead), schedule_page)]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MonthQuery {
    /// `YYYY-MM` (default: this month).
    #[serde(default)]
    month: String,
    /// `1`: only my tasks and the projects I am on.
    #[serde(default)]
    mine: String,
}

struct Day {
    /// "Monday 7 December".
    heading: String,
    /// Shown as `YYYY-MM-DD`, the page's anchors and `datetime`.
    date: Date,
    today: bool,
    past: bool,
    entries: Vec<Item>,
}

struct Item {
    entry: Entry,
    /// The people on a task by name, told apart where two go by the same one.
    people: String,
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
    /// The same month, everyone's and only mine.
    everyone_link: String,
    mine_link: String,
    mine: bool,
    days: Vec<Day>,
    capped: bool,
    can_tasks: bool,
}

fn month_name(d: Date) -> String {
    format!("{} {}", d.month(), d.year())
}

fn link(access: &OrgAccess, d: Date, mine: bool) -> String {
    let mine = if mine { "&mine=1" } else { "" };
    format!("/o/{}/schedule?month={:04}-{:02}{mine}", access.slug, d.year(), u8::from(d.month()))
}

async fn schedule_page(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<MonthQuery>,
) -> AppResult<Response> {
    let mine = fields::flag("mine", &q.mine)?;
    let s = schedule::schedule(&state.db, &access.principal, Some(q.month.trim()), mine, state.clock.now()).await?;
    let names = People::of(&people(&state, &access).await?);
    let mut days: Vec<Day> = Vec::new();
    for e in s.entries {
        let mut people: Vec<String> = e.people.iter().map(|u| names.name(u)).collect();
        people.sort_by_key(|n| n.to_lowercase());
        let e = Item { people: people.join(", "), entry: e };
        match days.last_mut() {
            Some(d) if d.date == e.entry.day => d.entries.push(e),
            _ => days.push(Day {
                heading: format!("{} {} {}", e.entry.day.weekday(), e.entry.day.day(), e.entry.day.month()),
                date: e.entry.day,
                today: e.entry.day == s.today,
                past: e.entry.day < s.today,
                entries: vec![e],
            }),
        }
    }
    page(&SchedulePage {
        title: month_name(s.month),
        previous: schedule::previous_month(s.month).map(|d| (link(&access, d, mine), month_name(d))),
        next: schedule::next_month(s.month).map(|d| (link(&access, d, mine), month_name(d))),
        everyone_link: link(&access, s.month, false),
        mine_link: link(&access, s.month, true),
        mine,
        this_month: s.today.year() == s.month.year() && s.today.month() == s.month.month(),
        days,
        capped: s.capped,
        can_tasks: access.principal.can(P::TasksRead),
        org: OrgNav::of(&access),
    })
}
