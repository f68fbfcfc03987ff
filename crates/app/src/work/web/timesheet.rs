//! Time pages beyond the lists: the timer's start and stop, a person's week (Monday to Sunday,
//! totals per day and per project), totals per project and per client over a range, and the
//! CSV export of a range.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::{Date, Duration};

use super::duration;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::platform::ids::UserId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::approvals::{self, WeekApproval};
use crate::work::fields;
use crate::work::money::format_minor;
use crate::work::time_entries::{self, ReportRow};
use crate::work::timers::{self, TimerStart};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(POST "/o/{org}/timer/start", Surface::Web, Access::Org(P::TimeTrack), start),
        route!(POST "/o/{org}/timer/stop", Surface::Web, Access::Org(P::TimeTrack), stop),
        route!(GET "/o/{org}/time/week", Surface::Web, Access::Org(P::ProjectsRead), week),
        route!(POST "/o/{org}/time/week/approve", Surface::Web, Access::Org(P::ProjectsUpdate), approve),
        route!(POST "/o/{org}/time/week/reopen", Surface::Web, Access::Org(P::ProjectsUpdate), reopen),
        route!(GET "/o/{org}/time/approvals", Surface::Web, Access::Org(P::ProjectsUpdate), approvals_page),
        route!(GET "/o/{org}/time/report", Surface::Web, Access::Org(P::ProjectsRead), report),
        route!(GET "/o/{org}/time/export.csv", Surface::Web, Access::Org(P::ProjectsRead), export),
    ]
}

/// The viewer's running timer when it runs on `project` (and `task`, or no task when `None`
/// on a project's page): (shown elapsed, seconds).
pub fn timer_on(access: &OrgAccess, project: uuid::Uuid, task: Option<uuid::Uuid>) -> Option<(String, i64)> {
    access
        .running_timer
        .as_ref()
        .filter(|t| t.project_id == project && (task.is_none() || t.task_id == task))
        .map(|t| (timers::clock(t.elapsed_seconds), t.elapsed_seconds))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartForm {
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    task_id: String,
    #[serde(default)]
    note: String,
}

/// Where a timer's work is shown.
fn timer_page(slug: &str, project: &str, task: Option<&str>) -> String {
    match task {
        Some(t) => format!("/o/{slug}/tasks/{t}#timer"),
        None => format!("/o/{slug}/projects/{project}/time#timer"),
    }
}

async fn start(
    State(state): State<AppState>,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<StartForm>,
) -> AppResult<Response> {
    let input = TimerStart {
        project_id: form.project_id.trim().to_string(),
        task_id: Some(form.task_id.trim().to_string()),
        note: Some(form.note),
    };
    let (timer, _) = match timers::start(&state.db, &ctx, &access.principal, &input).await {
        // A project or task the viewer can't see is simply not found.
        Err(DomainError::Invalid(v)) if v.iter().any(|f| f.field == "project_id" || f.field == "task_id") => {
            return Err(AppError::not_found());
        }
        other => other?,
    };
    let task = timer.task_id.map(|t| t.to_string());
    Ok(Redirect::to(&timer_page(&access.slug, &timer.project_id.to_string(), task.as_deref())).into_response())
}

async fn stop(State(state): State<AppState>, ctx: Context, access: OrgAccess) -> AppResult<Response> {
    let stopped = match timers::stop(&state.db, &ctx, &access.principal).await {
        Ok(s) => s,
        // Stopped already (in another tab): the week shows what it recorded.
        Err(DomainError::Conflict(_)) => {
            return Ok(Redirect::to(&format!("/o/{}/time/week", access.slug)).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let task = stopped.timer.task_id.map(|t| t.to_string());
    Ok(Redirect::to(&timer_page(&access.slug, &stopped.timer.project_id.to_string(), task.as_deref())).into_response())
}

// ---- week ----

#[derive(Deserialize, Default)]
struct WeekQuery {
    /// Any day of the week (default: today).
    #[serde(default)]
    week: String,
    /// Whose week (managers and up; default: one's own).
    #[serde(default)]
    person: String,
}

struct WeekRow {
    project_id: String,
    project: String,
    days: Vec<String>,
    total: String,
}

/// One entry of the week, as approving it fixes it.
struct WeekEntryRow {
    day: String,
    project_id: String,
    project: String,
    task: String,
    time: String,
    note: String,
    billing: &'static str,
    approved: bool,
}

#[derive(Template)]
#[template(path = "work/time_week.html")]
struct WeekPage {
    org: OrgNav,
    csrf: String,
    message: Option<String>,
    errors: Vec<FieldError>,
    days: Vec<(String, String)>,
    rows: Vec<WeekRow>,
    entries: Vec<WeekEntryRow>,
    day_totals: Vec<String>,
    total: String,
    prev: String,
    next: String,
    this_week: String,
    person: String,
    people: Vec<(String, String)>,
    whose: String,
    approval: ApprovalView,
}

/// The week's approval as its page says it.
struct ApprovalView {
    /// What is approved and what awaits approval, in words.
    status: Vec<String>,
    /// The viewer may approve what awaits (someone else's week, with something awaiting).
    may_approve: bool,
    /// The viewer may reopen what is approved.
    may_reopen: bool,
    digest: String,
    /// The approvals page, for those who approve time.
    approvals: Option<String>,
}

/// "3 entries (4h 30m)".
fn entries_of(n: usize, minutes: i64) -> String {
    format!("{} ({})", approvals::entries_of(n), duration(minutes))
}

impl ApprovalView {
    fn of(w: &WeekApproval, mine: bool, approver: bool, approvals: String) -> Self {
        let mut status = Vec::new();
        if w.approved_entries > 0 {
            let by = match &w.last_approval {
                Some((who, _, day)) => format!(", last by {who} on {day}"),
                None => String::new(),
            };
            status.push(format!("Approved: {}{by}.", entries_of(w.approved_entries, w.approved_minutes)));
        }
        if w.pending_entries > 0 {
            status.push(format!("Awaiting approval: {}.", entries_of(w.pending_entries, w.pending_minutes)));
        }
        Self {
            status,
            may_approve: approver && !mine && w.pending_entries > 0,
            may_reopen: approver && !mine && w.approved_entries > 0,
            digest: w.digest.clone(),
            approvals: approver.then_some(approvals),
        }
    }
}

/// Whether the viewer may look at other people's time and approve it (managers and up).
fn sees_others(access: &OrgAccess) -> bool {
    access.principal.can(P::ProjectsUpdate)
}

/// The person and day a week's page or form names: `person` empty for oneself, `week` empty
/// for today.
async fn whose_week(state: &AppState, access: &OrgAccess, person: &str, week: &str) -> AppResult<(UserId, Date)> {
    let p = &access.principal;
    let me = p.user_id().ok_or(AppError::not_found())?;
    let day = fields::date_or_empty("week", week)?;
    let person: UserId = match fields::id_or_empty::<UserId>("person", person)? {
        Some(u) if u != me && !sees_others(access) => {
            return Err(AppError::forbidden("Your role shows only your own week.".into()));
        }
        Some(u) => u,
        None => me,
    };
    let day = match day {
        Some(d) => d,
        None => crate::work::today(&state.db, p, state.clock.now()).await?,
    };
    Ok((person, day))
}

async fn week(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<WeekQuery>,
) -> AppResult<Response> {
    let (person, day) = whose_week(&state, &access, &q.person, &q.week).await?;
    let view = week_view(&state, csrf, &access, person, day).await?;
    page(&view)
}

async fn week_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    person: UserId,
    day: Date,
) -> AppResult<WeekPage> {
    let p = &access.principal;
    let me = p.user_id().ok_or(AppError::not_found())?;
    let (monday, sunday) = approvals::week_of("week", day)?;
    // One read: the totals, the entries and the approval's digest are of the same time.
    let approval = approvals::week(&state.db, p, person, monday).await?;
    let mut per_project: BTreeMap<(String, String), [i64; 7]> = BTreeMap::new();
    let mut day_totals = [0i64; 7];
    for r in &approval.entries {
        let i = (r.spent_on - monday).whole_days() as usize;
        per_project.entry((r.project_name.clone(), r.project_id.to_string())).or_default()[i] += i64::from(r.minutes);
        day_totals[i] += i64::from(r.minutes);
    }
    let show = |m: i64| if m == 0 { String::new() } else { duration(m) };
    let people = if sees_others(access) {
        super::people(state, access)
            .await?
            .into_iter()
            .filter(|m| m.role != crate::access::role::Role::Client)
            .map(|m| (m.user_id.to_string(), super::name_of(&m)))
            .collect()
    } else {
        vec![]
    };
    let whose = if person == me {
        "Your week".to_string()
    } else {
        let name = people.iter().find(|(id, _)| *id == person.to_string()).map(|(_, n)| n.clone());
        format!("Week of {}", name.unwrap_or_else(|| "a former member".into()))
    };
    // The weeks before and after, where the calendar has them.
    let link = |d: Option<Date>| {
        let Some(d) = d.filter(|d| approvals::week_of("week", *d).is_ok()) else { return String::new() };
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("week", &d.to_string());
        if person != me {
            q.append_pair("person", &person.to_string());
        }
        format!("/o/{}/time/week?{}", access.slug, q.finish())
    };
    Ok(WeekPage {
        org: OrgNav::of(access),
        csrf,
        message: None,
        errors: vec![],
        days: (0..7)
            .map(|i| {
                let d = monday + Duration::days(i);
                (format!("{} {}", &d.weekday().to_string()[..3], d.day()), d.to_string())
            })
            .collect(),
        rows: per_project
            .into_iter()
            .map(|((name, id), days)| WeekRow {
                project_id: id,
                project: name,
                total: duration(days.iter().sum()),
                days: days.iter().map(|m| show(*m)).collect(),
            })
            .collect(),
        entries: approval
            .entries
            .iter()
            .map(|e| WeekEntryRow {
                day: format!("{} {}", &e.spent_on.weekday().to_string()[..3], e.spent_on.day()),
                project_id: e.project_id.to_string(),
                project: e.project_name.clone(),
                task: e.task_title.clone().unwrap_or_default(),
                time: duration(e.minutes.into()),
                note: e.note.clone(),
                billing: match (e.billed, e.billable) {
                    (true, _) => "Billed",
                    (false, true) => "Billable",
                    (false, false) => "Not billable",
                },
                approved: e.approved_at.is_some(),
            })
            .collect(),
        day_totals: day_totals.iter().map(|m| show(*m)).collect(),
        total: duration(day_totals.iter().sum()),
        prev: link(monday.checked_sub(Duration::days(7))),
        next: link(monday.checked_add(Duration::days(7))),
        this_week: format!("{monday} – {sunday}"),
        person: if person == me { String::new() } else { person.to_string() },
        people,
        whose,
        approval: ApprovalView::of(
            &approval,
            person == me,
            sees_others(access),
            format!("/o/{}/time/approvals?week={monday}", access.slug),
        ),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApprovalForm {
    #[serde(default)]
    person: String,
    #[serde(default)]
    week: String,
    /// What the page showed awaiting approval (`WeekApproval::digest`).
    #[serde(default)]
    seen: String,
}

/// Approves the week the form names, as its page showed it.
async fn approve(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<ApprovalForm>,
) -> AppResult<Response> {
    let (person, day) = whose_week(&state, &access, &form.person, &form.week).await?;
    let result = approvals::approve_week(&state.db, &ctx, &access.principal, person, day, &form.seen).await.map(|_| ());
    after_approval(&state, csrf, &access, person, day, result).await
}

/// Reopens the week the form names.
async fn reopen(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<ApprovalForm>,
) -> AppResult<Response> {
    let (person, day) = whose_week(&state, &access, &form.person, &form.week).await?;
    let result = approvals::reopen_week(&state.db, &ctx, &access.principal, person, day).await.map(|_| ());
    after_approval(&state, csrf, &access, person, day, result).await
}

/// Back to the week's page; a refusal shows the week as it is now, saying why.
async fn after_approval(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    person: UserId,
    day: Date,
    result: Result<(), DomainError>,
) -> AppResult<Response> {
    match result {
        Ok(()) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("week", &approvals::monday_of(day).to_string());
            q.append_pair("person", &person.to_string());
            Ok(Redirect::to(&format!("/o/{}/time/week?{}#approval", access.slug, q.finish())).into_response())
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let mut view = week_view(state, csrf, access, person, day).await?;
            view.message = message;
            view.errors = errors;
            page_with_status(status, &view)
        }
    }
}

struct PersonWeekRow {
    person: String,
    href: String,
    hours: String,
    approved: String,
    awaiting: String,
}

#[derive(Template)]
#[template(path = "work/time_approvals.html")]
struct ApprovalsPage {
    org: OrgNav,
    this_week: String,
    prev: String,
    next: String,
    rows: Vec<PersonWeekRow>,
    awaiting: usize,
}

#[derive(Deserialize, Default)]
struct ApprovalsQuery {
    /// Any day of the week (default: this week).
    #[serde(default)]
    week: String,
}

/// Everyone's week: who has time awaiting approval and who is approved.
async fn approvals_page(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ApprovalsQuery>,
) -> AppResult<Response> {
    let p = &access.principal;
    let day = match fields::date_or_empty("week", &q.week)? {
        Some(d) => d,
        None => crate::work::today(&state.db, p, state.clock.now()).await?,
    };
    let (monday, sunday) = approvals::week_of("week", day)?;
    let people = approvals::people_of_week(&state.db, p, monday).await?;
    let me = p.user_id();
    let link = |d: Option<Date>| match d.filter(|d| approvals::week_of("week", *d).is_ok()) {
        Some(d) => format!("/o/{}/time/approvals?week={d}", access.slug),
        None => String::new(),
    };
    let rows: Vec<PersonWeekRow> = people
        .into_iter()
        .map(|w| {
            let pending = w.entries - w.approved_entries;
            let shown = |n: i64, m: i64| if n == 0 { String::new() } else { entries_of(n as usize, m) };
            PersonWeekRow {
                person: if Some(w.user_id) == me { format!("{} (you)", w.person) } else { w.person },
                href: format!("/o/{}/time/week?week={monday}&person={}", access.slug, w.user_id),
                hours: duration(w.minutes),
                approved: shown(w.approved_entries, w.approved_minutes),
                awaiting: shown(pending, w.minutes - w.approved_minutes),
            }
        })
        .collect();
    page(&ApprovalsPage {
        org: OrgNav::of(&access),
        this_week: format!("{monday} – {sunday}"),
        prev: link(monday.checked_sub(Duration::days(7))),
        next: link(monday.checked_add(Duration::days(7))),
        awaiting: rows.iter().filter(|r| !r.awaiting.is_empty()).count(),
        rows,
    })
}

// ---- report and export ----

#[derive(Deserialize, Default)]
struct RangeQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The range of days asked for (`from`, `to`, each empty for its default): by default the
/// current month up to today, where the organization is.
pub(super) async fn range(state: &AppState, access: &OrgAccess, from: &str, to: &str) -> AppResult<(Date, Date)> {
    let from = fields::date_or_empty("from", from)?;
    let to = fields::date_or_empty("to", to)?;
    Ok(crate::work::range(&state.db, &access.principal, state.clock.now(), from, to).await?)
}

struct TotalRow {
    name: String,
    href: String,
    hours: String,
    billable: String,
    amount: String,
}

#[derive(Template)]
#[template(path = "work/time_report.html")]
struct ReportPage {
    org: OrgNav,
    from: String,
    to: String,
    projects: Vec<TotalRow>,
    clients: Vec<TotalRow>,
    people: Vec<TotalRow>,
    total: String,
    export: String,
    capped: bool,
}

fn totals(rows: &[ReportRow], key: impl Fn(&ReportRow) -> (String, String)) -> Vec<TotalRow> {
    let mut by: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for r in rows {
        let t = by.entry(key(r)).or_default();
        t.0 += i64::from(r.minutes);
        if r.billable {
            t.1 += i64::from(r.minutes);
        }
        t.2 += r.amount_minor();
    }
    by.into_iter()
        .map(|((name, href), (all, billable, amount))| TotalRow {
            name,
            href,
            hours: duration(all),
            billable: duration(billable),
            amount: format_minor(amount),
        })
        .collect()
}

async fn report(State(state): State<AppState>, access: OrgAccess, Query(q): Query<RangeQuery>) -> AppResult<Response> {
    let (from, to) = range(&state, &access, &q.from, &q.to).await?;
    let rows = time_entries::in_range(&state.db, &access.principal, from, to, None).await?;
    let slug = &access.slug;
    let projects = totals(&rows, |r| (r.project_name.clone(), format!("/o/{slug}/projects/{}/time", r.project_id)));
    let clients = totals(&rows, |r| match (&r.client_name, r.client_id) {
        (Some(n), Some(c)) => (n.clone(), format!("/o/{slug}/clients/{c}")),
        _ => ("No client".into(), String::new()),
    });
    // Each person by the name pages give them (namesakes told apart), leading to their week
    // where the viewer may see it.
    let names = super::People::of(&super::people(&state, &access).await?);
    let me = access.principal.user_id();
    let people = totals(&rows, |r| {
        let href = if sees_others(&access) || Some(r.user_id) == me {
            format!("/o/{slug}/time/week?week={to}&person={}", r.user_id)
        } else {
            String::new()
        };
        (names.actor(Some(r.user_id), &r.person), href)
    });
    page(&ReportPage {
        org: OrgNav::of(&access),
        from: from.to_string(),
        to: to.to_string(),
        total: duration(rows.iter().map(|r| i64::from(r.minutes)).sum()),
        capped: rows.len() as i64 >= time_entries::REPORT_CAP,
        export: format!("/o/{slug}/time/export.csv?from={from}&to={to}"),
        projects,
        clients,
        people,
    })
}

async fn export(State(state): State<AppState>, access: OrgAccess, Query(q): Query<RangeQuery>) -> AppResult<Response> {
    let (from, to) = range(&state, &access, &q.from, &q.to).await?;
    let rows = time_entries::in_range(&state.db, &access.principal, from, to, None).await?;
    let body = time_entries::to_csv(&rows).map_err(AppError::internal)?;
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let disposition = format!("attachment; filename=\"time-{from}-{to}.csv\"");
    res.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(AppError::internal)?);
    Ok(res)
}
