//! Repeating invoices: an invoice's repeat (`/api/v1/invoices/{invoice}/repeat`), and the list
//! of every repeat.

use super::*;
use crate::work::repeats::{self, Repeat, RepeatInput, RepeatUpdate};

#[utoipa::path(get, path = "/api/v1/invoice-repeats", tag = "invoices", params(PageQuery),
    responses((status = 200, description = "Every repeat of the organization, the next due first (paused and ended ones last)", body = List<Repeat>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn list_repeats(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let (items, total) = repeats::list(&s.db, &api.principal, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(get, path = "/api/v1/invoices/{invoice}/repeat", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "The repeated invoice")),
    responses((status = 200, description = "The invoice's repeat (404 when it has none)", body = Data<Repeat>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn get_repeat(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(repeats::get(&s.db, &api.principal, ids.get("invoice")?).await?))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/repeat", tag = "invoices", request_body = RepeatInput,
    description = "Copies the invoice on a schedule: on each of its days a new invoice is made with the invoice's client, currency, tax rate, notes and lines as they are then, issued on that day, and sent and mailed to the client when `send` is true (which needs `invoices.update` too). The days count from `starts_on`, so a repeat that starts on the 31st is issued on the last day of shorter months. 422 naming the field when `every` is out of bounds for its `unit`, `starts_on` is before today or `ends_on` before `starts_on`; 409 when the invoice is void or repeats already.",
    params(("invoice" = Uuid, Path, description = "The invoice to repeat")),
    responses((status = 201, description = "The repeat", body = Data<Repeat>)),
    security(("api_key" = ["invoices.create"])))]
pub async fn create_repeat(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<RepeatInput>,
) -> AppResult<Response> {
    let invoice: InvoiceId = ids.get("invoice")?;
    let r = repeats::create(&s.db, &ctx, &api.principal, invoice, &input).await?;
    Ok(created(format!("/api/v1/invoices/{invoice}/repeat"), r))
}

#[utoipa::path(patch, path = "/api/v1/invoices/{invoice}/repeat", tag = "invoices", request_body = RepeatUpdate,
    description = "Pauses or resumes the repeat, turns sending on or off, or moves its last day (`null`: until stopped). A resumed repeat goes on from the next of its days that is today or later. Resuming a repeat that sends, or turning sending on, needs `invoices.update` too. 422 naming `ends_on` when it is before `starts_on`.",
    params(("invoice" = Uuid, Path, description = "The repeated invoice")),
    responses((status = 200, description = "The repeat as it is now", body = Data<Repeat>)),
    security(("api_key" = ["invoices.create"])))]
pub async fn update_repeat(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<RepeatUpdate>,
) -> AppResult<Response> {
    Ok(ok(repeats::update(&s.db, &ctx, &api.principal, ids.get("invoice")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/invoices/{invoice}/repeat", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "The repeated invoice")),
    responses((status = 204, description = "Stopped: no more copies are made (those made stay)")),
    security(("api_key" = ["invoices.create"])))]
pub async fn delete_repeat(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    repeats::delete(&s.db, &ctx, &api.principal, ids.get("invoice")?).await?;
    Ok(no_content())
}
