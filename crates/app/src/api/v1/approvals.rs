//! Approving time: where a person's week stands, approving it as it was read, reopening it.

use super::*;
use crate::platform::ids::UserId;
use crate::work::approvals::{self, WeekApproval};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WeekQuery {
    /// Whose week (default: the member who created the key; another's needs projects.update).
    #[param(value_type = Option<Uuid>)]
    pub user_id: Option<QueryId>,
    /// Any day of the week, YYYY-MM-DD (default: today in the organization's time zone).
    #[param(format = Date)]
    pub week: Option<String>,
}

/// Where a person's week (Monday to Sunday) stands, of the entries the key sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekApprovalView {
    #[schema(format = Uuid)]
    pub user_id: String,
    /// The week's Monday.
    #[schema(format = Date)]
    pub week: String,
    pub pending_entries: usize,
    pub pending_minutes: i64,
    pub approved_entries: usize,
    pub approved_minutes: i64,
    /// When its time was last approved, or null.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_approved_at: Option<OffsetDateTime>,
    /// What approving must send back as `seen`: it stands for the entries awaiting approval
    /// as they are now.
    pub seen: String,
}

impl WeekApprovalView {
    fn of(user: UserId, week: time::Date, w: WeekApproval) -> Self {
        Self {
            user_id: user.to_string(),
            week: approvals::monday_of(week).to_string(),
            pending_entries: w.pending_entries,
            pending_minutes: w.pending_minutes,
            approved_entries: w.approved_entries,
            approved_minutes: w.approved_minutes,
            last_approved_at: w.last_approval.map(|(_, at, _)| at),
            seen: w.digest,
        }
    }
}

/// A week to approve, as it was read.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveWeek {
    /// Whose week: anyone's but the key creator's own.
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Any day of the week, YYYY-MM-DD.
    #[schema(format = Date)]
    pub week: String,
    /// `seen` from `GET /api/v1/time-approvals` for the same week.
    #[schema(format = "nonblank-text", max_length = 64)]
    pub seen: String,
}

/// A week to reopen.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenWeek {
    /// Whose week: anyone's but the key creator's own.
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Any day of the week, YYYY-MM-DD.
    #[schema(format = Date)]
    pub week: String,
}

/// What approving or reopening changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekChanged {
    #[schema(format = Uuid)]
    pub user_id: String,
    /// The week's Monday.
    #[schema(format = Date)]
    pub week: String,
    /// How many entries were approved, or reopened.
    pub entries: usize,
}

#[utoipa::path(get, path = "/api/v1/time-approvals", tag = "time", params(WeekQuery),
    description = "Where a person's week stands: what awaits approval and what is approved, of the projects the key sees. \
        Another person's week needs projects.update (403 otherwise).",
    responses((status = 200, description = "The week", body = Data<WeekApprovalView>)),
    security(("api_key" = ["projects.read"])))]
pub async fn get_week(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<WeekQuery>,
) -> AppResult<Response> {
    let p = &api.principal;
    let user = match query_id(q.user_id) {
        Some(u) => fields::id::<UserId>("user_id", &u)?,
        None => {
            p.on_behalf_of().ok_or_else(|| AppError::field("user_id", "is required for a key no member created"))?
        }
    };
    let day = match q.week.as_deref() {
        Some(d) => fields::date("week", d)?,
        None => crate::work::today(&s.db, p, s.clock.now()).await?,
    };
    let week = approvals::week(&s.db, p, user, day).await?;
    Ok(ok(WeekApprovalView::of(user, day, week)))
}

#[utoipa::path(post, path = "/api/v1/time-approvals/approve", tag = "time", request_body = ApproveWeek,
    description = "Approves the entries of another person's week that await approval, provided they are still those \
        `seen` stands for; approved time can't be changed or deleted until the week is reopened. 409 when the week \
        changed since it was read (nothing is approved: read it again) or nothing awaits approval; 403 for the key \
        creator's own week.",
    responses((status = 200, description = "Approved", body = Data<WeekChanged>)),
    security(("api_key" = ["projects.update"])))]
pub async fn approve_week(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ApproveWeek>,
) -> AppResult<Response> {
    let user: UserId = fields::id("user_id", &input.user_id)?;
    let day = fields::date("week", &input.week)?;
    if input.seen.trim().is_empty() {
        return Err(AppError::field("seen", "is required: send the `seen` of GET /api/v1/time-approvals"));
    }
    let entries = approvals::approve_week(&s.db, &ctx, &api.principal, user, day, &input.seen).await?;
    Ok(ok(WeekChanged { user_id: user.to_string(), week: approvals::monday_of(day).to_string(), entries }))
}

#[utoipa::path(post, path = "/api/v1/time-approvals/reopen", tag = "time", request_body = ReopenWeek,
    description = "Reopens another person's week: its approved entries may be changed again and await approval again. \
        409 when nothing in it is approved; 403 for the key creator's own week.",
    responses((status = 200, description = "Reopened", body = Data<WeekChanged>)),
    security(("api_key" = ["projects.update"])))]
pub async fn reopen_week(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ReopenWeek>,
) -> AppResult<Response> {
    let user: UserId = fields::id("user_id", &input.user_id)?;
    let day = fields::date("week", &input.week)?;
    let entries = approvals::reopen_week(&s.db, &ctx, &api.principal, user, day).await?;
    Ok(ok(WeekChanged { user_id: user.to_string(), week: approvals::monday_of(day).to_string(), entries }))
}
