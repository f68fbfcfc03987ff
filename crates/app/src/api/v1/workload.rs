//! Workload: four weeks of everyone's planned work against their hours a week, and setting
//! those hours.

use super::*;
use crate::platform::ids::UserId;
use crate::work::workload::{self, Load, PersonLoad};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkloadQuery {
    /// Any day of the first of the four weeks, YYYY-MM-DD (default: today in the organization's
    /// time zone).
    #[param(format = Date)]
    pub week: Option<String>,
}

/// What falls in one span for one person.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadView {
    /// Minutes the estimated tasks still need: each one's estimate less the time logged on it
    /// (never below zero), shared equally among its assignees.
    pub planned_minutes: i64,
    /// Open tasks counted, estimated or not.
    pub tasks: i64,
    /// Of those, the tasks without an estimate.
    pub unestimated_tasks: i64,
    /// The tasks counted, by due date and title.
    pub items: Vec<LoadTaskView>,
}

/// One task in a person's load.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadTaskView {
    #[schema(format = Uuid)]
    pub task_id: String,
    pub title: String,
    pub project: String,
    #[schema(format = Date)]
    pub due_date: Option<String>,
    /// The person's share of what it still needs, in minutes; null without an estimate.
    pub share_minutes: Option<i64>,
}

impl From<&Load> for LoadView {
    fn from(l: &Load) -> Self {
        Self {
            planned_minutes: l.planned_minutes,
            tasks: l.tasks,
            unestimated_tasks: l.unestimated_tasks,
            items: l
                .items
                .iter()
                .map(|t| LoadTaskView {
                    task_id: t.id.to_string(),
                    title: t.title.clone(),
                    project: t.project.clone(),
                    due_date: t.due_date.map(|d| d.to_string()),
                    share_minutes: t.share_minutes,
                })
                .collect(),
        }
    }
}

/// One week of one person.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekLoadView {
    /// The week's Monday.
    #[schema(format = Date)]
    pub week: String,
    #[serde(flatten)]
    pub load: LoadView,
    /// By how many minutes the planned work exceeds the person's hours (0 when it fits).
    pub over_by_minutes: i64,
}

/// One person's workload.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonLoadView {
    #[schema(format = Uuid)]
    pub user_id: String,
    pub name: String,
    /// Minutes a week for planned work (40 hours until set).
    pub weekly_capacity_minutes: i32,
    /// Open tasks due before the first week.
    pub earlier: LoadView,
    pub weeks: Vec<WeekLoadView>,
    /// Open tasks without a due date.
    pub undated: LoadView,
}

impl PersonLoadView {
    fn of(p: &PersonLoad, weeks: &[time::Date]) -> Self {
        Self {
            user_id: p.user_id.to_string(),
            name: p.person.clone(),
            weekly_capacity_minutes: p.capacity_minutes,
            earlier: (&p.earlier).into(),
            weeks: p
                .weeks
                .iter()
                .zip(weeks)
                .map(|(l, w)| WeekLoadView { week: w.to_string(), load: l.into(), over_by_minutes: p.over_by(l) })
                .collect(),
            undated: (&p.undated).into(),
        }
    }
}

/// Four weeks of everyone's planned work.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkloadView {
    /// The Monday of each week.
    #[schema(value_type = Vec<String>)]
    pub weeks: Vec<String>,
    /// Everyone inside the organization but Client users, by name.
    pub people: Vec<PersonLoadView>,
}

/// A person's hours a week for planned work.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityUpdate {
    /// Minutes, from 0 (no planned work) to 10080 (the whole week).
    #[schema(minimum = 0, maximum = 10080)]
    #[serde(deserialize_with = "fields::int")]
    pub weekly_capacity_minutes: i64,
}

/// A person's hours a week, as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapacityView {
    #[schema(format = Uuid)]
    pub user_id: String,
    pub weekly_capacity_minutes: i32,
}

#[utoipa::path(get, path = "/api/v1/workload", tag = "projects", params(WorkloadQuery),
    description = "Four weeks from the week holding `week`: for everyone inside the organization but Client users, what \
        their open tasks due each week still need against their hours a week, and what is due earlier or has no due \
        date. Done tasks, archived projects and projects the key doesn't see are left out.",
    responses((status = 200, description = "The workload", body = Data<WorkloadView>)),
    security(("api_key" = ["projects.update"])))]
pub async fn get_workload(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<WorkloadQuery>,
) -> AppResult<Response> {
    let day = q.week.as_deref().map(|d| fields::date("week", d)).transpose()?;
    let w = workload::workload(&s.db, &api.principal, day, s.clock.now()).await?;
    Ok(ok(WorkloadView {
        weeks: w.weeks.iter().map(ToString::to_string).collect(),
        people: w.people.iter().map(|person| PersonLoadView::of(person, &w.weeks)).collect(),
    }))
}

#[utoipa::path(put, path = "/api/v1/workload/{user}/capacity", tag = "projects", request_body = CapacityUpdate,
    description = "Sets a person's hours a week for planned work, recorded in the audit log. 404 for someone outside the \
        organization, 409 for a Client user.",
    params(("user" = Uuid, Path, description = "The person's user id")),
    responses((status = 200, description = "Saved", body = Data<CapacityView>)),
    security(("api_key" = ["projects.update"])))]
pub async fn set_capacity(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<CapacityUpdate>,
) -> AppResult<Response> {
    let user: UserId = ids.get("user")?;
    // The service bounds it; only what an i32 can't hold is refused here, for the same reason.
    let minutes = i32::try_from(input.weekly_capacity_minutes)
        .map_err(|_| AppError::field("weekly_capacity_minutes", workload::MINUTES_BOUNDS))?;
    workload::set_capacity(&s.db, &ctx, &api.principal, user, minutes).await?;
    Ok(ok(CapacityView { user_id: user.to_string(), weekly_capacity_minutes: minutes }))
}
