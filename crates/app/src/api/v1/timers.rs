//! The timer of the member who created the key: read it, start it, stop it (stopping records
//! the time entry).

use super::*;
use crate::work::timers::{self, Stopped, Timer, TimerStart};

#[utoipa::path(get, path = "/api/v1/timer", tag = "time",
    responses((status = 200, description = "The running timer, or null when none runs", body = Data<Option<Timer>>)),
    security(("api_key" = ["time.track"])))]
pub async fn get_timer(State(s): State<AppState>, api: ApiAccess) -> AppResult<Response> {
    Ok(ok(timers::current(&s.db, &api.principal).await?))
}

#[utoipa::path(post, path = "/api/v1/timer/start", tag = "time", request_body = TimerStart,
    description = "Starts a timer on a project (or a task of it) for the member who created the key. A running timer is \
        stopped first and its time recorded; of two starts at the same moment one wins and the other gets 409.",
    responses((status = 200, description = "Started (it is the key creator's timer: `GET /api/v1/timer`)", body = Data<Timer>)),
    security(("api_key" = ["time.track"])))]
pub async fn start_timer(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<TimerStart>,
) -> AppResult<Response> {
    let (timer, _) = timers::start(&s.db, &ctx, &api.principal, &input).await?;
    Ok(ok(timer))
}

#[utoipa::path(post, path = "/api/v1/timer/stop", tag = "time",
    description = "Stops the running timer and records its time (rounded to the minute; none under half a minute). 409 when none runs.",
    responses((status = 200, description = "Stopped, with the time entry it recorded", body = Data<Stopped>)),
    security(("api_key" = ["time.track"])))]
pub async fn stop_timer(State(s): State<AppState>, api: ApiAccess, ctx: Context) -> AppResult<Response> {
    Ok(ok(timers::stop(&s.db, &ctx, &api.principal).await?))
}
