//! The daily pages: My work, search (inside and in the portal), the notification inbox and its
//! preferences, following a task, and the people picker's JSON.

use askama::Template;
use axum::Form;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::path_id;
use super::portal::PortalNav;
use crate::access::OrgTx;
use crate::access::role::{Permission as P, Role};
use crate::access::route::{Access, RouteDef, Surface};
use crate::identity::guard::FormToken;
use crate::notify::{self, Channel, Kind};
use crate::platform::http::error::{AppError, AppResult, DomainError};
use crate::platform::ids::{ProjectId, TaskId, UserId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::daily::{self, Hit, MyTask};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/my-work", Surface::Web, Access::Org(P::TasksRead), my_work),
        route!(GET "/o/{org}/search", Surface::Web, Access::Org(P::OrgView), search),
        route!(GET "/portal/{org}/search", Surface::Web, Access::Org(P::PortalRead), portal_search),
        route!(GET "/o/{org}/notifications", Surface::Web, Access::Org(P::OrgAccess), inbox),
        route!(POST "/o/{org}/notifications/read", Surface::Web, Access::Org(P::OrgAccess), mark_read),
        route!(GET "/o/{org}/notifications/preferences", Surface::Web, Access::Org(P::OrgAccess), preferences),
        route!(POST "/o/{org}/notifications/preferences", Surface::Web, Access::Org(P::OrgAccess), save_preferences),
        route!(POST "/o/{org}/tasks/{task}/follow", Surface::Web, Access::Org(P::TasksRead), follow),
        route!(GET "/o/{org}/projects/{project}/mentions", Surface::Web, Access::Org(P::CommentsCreate), people),
    ]
}

/// The person behind a signed-in page (every organization page has one).
fn me(access: &OrgAccess) -> AppResult<UserId> {
    access.principal.user_id().ok_or_else(|| AppError::internal("an organization page without a person"))
}

// ---- My work ----

struct Group {
    id: &'static str,
    heading: &'static str,
    tasks: Vec<MyTask>,
}

#[derive(Template)]
#[template(path = "work/my_work.html")]
struct MyWorkPage {
    org: OrgNav,
    today: String,
    groups: Vec<Group>,
    empty: bool,
}

async fn my_work(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    let work = daily::my_work(&state.db, &access.principal, state.clock.now()).await?;
    let empty =
        work.overdue.is_empty() && work.due_today.is_empty() && work.this_week.is_empty() && work.later.is_empty();
    page(&MyWorkPage {
        org: OrgNav::of(&access),
        today: work.today.to_string(),
        groups: vec![
            Group { id: "overdue", heading: "Overdue", tasks: work.overdue },
            Group { id: "today", heading: "Due today", tasks: work.due_today },
            Group { id: "week", heading: "This week", tasks: work.this_week },
            Group { id: "later", heading: "Later or no due date", tasks: work.later },
        ],
        empty,
    })
}

// ---- Search ----

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

#[derive(Template)]
#[template(path = "work/search.html")]
struct SearchPage {
    org: OrgNav,
    nav: PortalNav,
    portal: bool,
    action: String,
    q: String,
    searched: bool,
    hits: Vec<Hit>,
    error: Option<String>,
}

async fn search_page(state: &AppState, access: &OrgAccess, raw: String, portal: bool) -> AppResult<Response> {
    let action = if portal { format!("/portal/{}/search", access.slug) } else { format!("/o/{}/search", access.slug) };
    let (hits, error) = match daily::search(&state.db, &access.principal, &raw).await {
        Ok(hits) => (hits, None),
        Err(DomainError::Invalid(errors)) => {
            (Vec::new(), Some(errors.first().map(|e| format!("The search {}.", e.message)).unwrap_or_default()))
        }
        Err(e) => return Err(e.into()),
    };
    let shown: String = raw.chars().filter(|c| !c.is_control()).take(daily::MAX_QUERY).collect();
    let t = SearchPage {
        org: OrgNav::of(access),
        nav: PortalNav::of(access),
        portal,
        action,
        searched: !shown.trim().is_empty(),
        q: shown,
        hits,
        error: error.clone(),
    };
    if error.is_some() {
        crate::tenancy::frame::page_with_status(axum::http::StatusCode::UNPROCESSABLE_ENTITY, &t)
    } else {
        page(&t)
    }
}

async fn search(State(state): State<AppState>, access: OrgAccess, Query(q): Query<SearchQuery>) -> AppResult<Response> {
    search_page(&state, &access, q.q, false).await
}

async fn portal_search(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<SearchQuery>,
) -> AppResult<Response> {
    search_page(&state, &access, q.q, true).await
}

// ---- The inbox ----

struct Row {
    id: String,
    title: String,
    body: String,
    link: String,
    at: String,
    unread: bool,
}

#[derive(Template)]
#[template(path = "work/notifications.html")]
struct InboxPage {
    csrf: String,
    org: OrgNav,
    nav: PortalNav,
    portal: bool,
    rows: Vec<Row>,
    unread: i64,
}

fn is_client(access: &OrgAccess) -> bool {
    access.principal.role() == Role::Client
}

async fn inbox(State(state): State<AppState>, FormToken(csrf): FormToken, access: OrgAccess) -> AppResult<Response> {
    let user = me(&access)?;
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let items = notify::inbox(&mut tx, user, 100, 0).await?;
    tx.commit().await?;
    let rows = items
        .into_iter()
        .map(|n| Row {
            id: n.id.to_string(),
            title: n.title,
            body: n.body,
            link: n.link,
            at: access.when(n.created_at),
            unread: n.read_at.is_none(),
        })
        .collect();
    page(&InboxPage {
        csrf,
        org: OrgNav::of(&access),
        nav: PortalNav::of(&access),
        portal: is_client(&access),
        rows,
        unread: access.unread,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadForm {
    /// One notification; without it, every one.
    #[serde(default)]
    id: String,
    /// `open`: go where the notification leads once marked.
    #[serde(default)]
    then: String,
}

async fn mark_read(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(form): Form<ReadForm>,
) -> AppResult<Response> {
    let user = me(&access)?;
    let now = state.clock.now();
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let to = if form.id.trim().is_empty() {
        notify::mark_all_read(&mut tx, user, now).await?;
        format!("/o/{}/notifications", access.slug)
    } else {
        let id: uuid::Uuid = form.id.trim().parse().map_err(|_| AppError::not_found())?;
        let n = notify::mark_read(&mut tx, user, id, now).await?.ok_or(AppError::not_found())?;
        if form.then == "open" { n.link } else { format!("/o/{}/notifications", access.slug) }
    };
    tx.commit().await?;
    Ok(Redirect::to(&to).into_response())
}

// ---- Preferences ----

#[derive(Template)]
#[template(path = "work/notification_preferences.html")]
struct PreferencesPage {
    csrf: String,
    org: OrgNav,
    nav: PortalNav,
    portal: bool,
    /// (kind, what it means, chosen channel)
    rows: Vec<(&'static str, &'static str, &'static str)>,
    channels: Vec<(&'static str, &'static str)>,
}

async fn preferences(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    let user = me(&access)?;
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let prefs = notify::preferences(&mut tx, user).await?;
    tx.commit().await?;
    page(&PreferencesPage {
        csrf,
        org: OrgNav::of(&access),
        nav: PortalNav::of(&access),
        portal: is_client(&access),
        rows: prefs.into_iter().map(|(k, c)| (k.as_str(), k.describe(), c.as_str())).collect(),
        channels: Channel::ALL.into_iter().map(|c| (c.as_str(), c.describe())).collect(),
    })
}

async fn save_preferences(
    State(state): State<AppState>,
    access: OrgAccess,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let user = me(&access)?;
    let form =
        super::FormFields::parse(&body, |k| Kind::parse(k).is_some())?.only_once(&Kind::ALL.map(|k| k.as_str()))?;
    let mut choices = Vec::new();
    for k in Kind::ALL {
        let v = form.get(k.as_str());
        if v.is_empty() {
            continue;
        }
        let c = Channel::parse(v).ok_or_else(|| AppError::field(k.as_str(), "must be email, in_app or off"))?;
        choices.push((k, c));
    }
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    notify::set_preferences(&mut tx, user, &choices).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/o/{}/notifications/preferences", access.slug)).into_response())
}

// ---- Following, and the people picker ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowForm {
    #[serde(default)]
    following: String,
}

async fn follow(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, task)): Path<(String, String)>,
    Form(form): Form<FollowForm>,
) -> AppResult<Response> {
    let task: TaskId = path_id(&task)?;
    let following = match form.following.as_str() {
        "yes" => true,
        "no" => false,
        _ => return Err(AppError::field("following", "must be yes or no")),
    };
    crate::work::tasks::set_following(&state.db, &access.principal, task, following).await?;
    Ok(Redirect::to(&format!("/o/{}/tasks/{task}", access.slug)).into_response())
}

#[derive(Deserialize, Default)]
struct PeopleQuery {
    #[serde(default)]
    q: String,
}

#[derive(serde::Serialize)]
struct PersonJson {
    id: UserId,
    name: String,
    handle: String,
}

/// The people a comment on this project's tasks may mention, for the picker (`daily.js`).
async fn people(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, project)): Path<(String, String)>,
    Query(q): Query<PeopleQuery>,
) -> AppResult<Response> {
    let project: ProjectId = path_id(&project)?;
    let people = daily::mentionable(&state.db, &access.principal, project, &q.q).await?;
    let out: Vec<PersonJson> =
        people.into_iter().map(|p| PersonJson { handle: p.handle().to_string(), id: p.id, name: p.name }).collect();
    Ok(Json(out).into_response())
}
