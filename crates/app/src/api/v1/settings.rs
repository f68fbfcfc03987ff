//! The organization's settings that work depends on: its invoicing defaults.

use super::*;
use crate::work::invoicing::{self, InvoicingSettings, InvoicingUpdate};

#[utoipa::path(get, path = "/api/v1/settings/invoicing", tag = "settings",
    responses((status = 200, description = "The invoicing defaults", body = Data<InvoicingSettings>)),
    security(("api_key" = ["settings.manage"])))]
pub async fn get_invoicing(State(s): State<AppState>, api: ApiAccess) -> AppResult<Response> {
    Ok(ok(invoicing::get(&s.db, &api.principal).await?))
}

#[utoipa::path(patch, path = "/api/v1/settings/invoicing", tag = "settings", request_body = InvoicingUpdate,
    responses((status = 200, description = "Updated (absent fields are unchanged; a new prefix applies to the next invoice sent)", body = Data<InvoicingSettings>)),
    security(("api_key" = ["settings.manage"])))]
pub async fn update_invoicing(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<InvoicingUpdate>,
) -> AppResult<Response> {
    Ok(ok(invoicing::update(&s.db, &ctx, &api.principal, &input).await?))
}
