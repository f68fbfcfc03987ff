//! Clients: list, create, read, update, archive, restore, delete.

use super::*;
use crate::work::clients;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    /// Matches name, company or email (case-insensitive).
    pub q: Option<String>,
    /// Default `active`.
    #[param(inline)]
    pub status: Option<ClientStatusFilter>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(ClientQuery),
    responses((status = 200, description = "A page of clients", body = List<Client>)),
    security(("api_key" = ["clients.read"])))]
pub async fn list_clients(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<ClientQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter = ClientFilter { q: q.q, status: q.status.map(|s| s.as_str().to_string()) };
    let (items, total) = clients::list(&s.db, &api.principal, &filter, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(post, path = "/api/v1/clients", tag = "clients", request_body = ClientInput,
    responses((status = 201, description = "Created", body = Data<Client>)),
    security(("api_key" = ["clients.create"])))]
pub async fn create_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ClientInput>,
) -> AppResult<Response> {
    let c = clients::create(&s.db, &ctx, &api.principal, &input).await?;
    Ok(created(format!("/api/v1/clients/{}", c.id), c))
}

#[utoipa::path(get, path = "/api/v1/clients/{client}/balance", tag = "clients",
    description = "What the client owes (its sent, unpaid invoices per currency, and the part past due) and its billable time not yet on an invoice, with that time's worth at the rates that would bill it now. Entries no rate applies to count as nothing and are counted in `unrated_entries`. Billable expenses not yet on an invoice are summed per currency in `unbilled_expenses`.",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "What the client owes and what is left to bill", body = Data<crate::work::invoices::ClientBalance>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn get_client_balance(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    let client = ids.get::<ClientId>("client")?;
    Ok(ok(crate::work::invoices::client_balance(&s.db, &api.principal, client, s.clock.now()).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// The first day, YYYY-MM-DD (default: the first of `to`'s month).
    #[param(format = Date)]
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD (default: today in the organization's time zone).
    #[param(format = Date)]
    pub to: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/clients/{client}/statement", tag = "clients",
    description = "The client's statement over a range of days, per currency: what it owed before the range, each invoice it was sent (by issue date) and each payment it made in the range with the balance after it, and what it owed at the end. Drafts and void invoices owe nothing and are left out; at most 2,000 entries are listed (`capped`), the balances are always the whole range's. `from` after `to` gets 422 naming `from`.",
    params(("client" = Uuid, Path, description = "Client id"), StatementQuery),
    responses((status = 200, description = "The statement", body = Data<crate::work::statement::Statement>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn get_client_statement(
    State(s): State<AppState>,
    api: ApiAccess,
    ids: PathIds,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> AppResult<Response> {
    let client = ids.get::<ClientId>("client")?;
    let (from, to) = super::range(&s, &api, q.from.as_deref(), q.to.as_deref()).await?;
    Ok(ok(crate::work::statement::statement(&s.db, &api.principal, client, from, to).await?))
}

/// The range of a statement to mail.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementRange {
    /// The first day, YYYY-MM-DD (default: the first of the month `to` is in).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD (default: today in the organization's time zone).
    #[serde(default, deserialize_with = "fields::non_null")]
    #[schema(format = Date, nullable = false)]
    pub to: Option<String>,
}

/// Where a statement was mailed.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementMailed {
    /// The client's billing email.
    pub to: String,
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub until: String,
}

#[utoipa::path(post, path = "/api/v1/clients/{client}/statement/email", tag = "clients", request_body = StatementRange,
    description = "Mails the client's statement over a range of days (as `GET /api/v1/clients/{client}/statement` gives it, without payment notes) to its billing email (the client's, else its first contact's), with a link to it in the client's portal. The same range goes out at most once a day, and at most 5 statements go to one client in 24 hours: 409 beyond those, or when the client has no billing email. `from` after `to` gets 422 naming `from`.",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Queued for the client's billing email", body = Data<StatementMailed>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn email_client_statement(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<StatementRange>,
) -> AppResult<Response> {
    let client = ids.get::<ClientId>("client")?;
    let (from, to) = super::range(&s, &api, input.from.as_deref(), input.to.as_deref()).await?;
    let public_url = s.config.public_url();
    let address =
        crate::work::statement_mail::email(&s.db, &ctx, &api.principal, client, from, to, &public_url).await?;
    Ok(ok(StatementMailed { to: address, from: from.to_string(), until: to.to_string() }))
}

#[utoipa::path(get, path = "/api/v1/clients/{client}", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "The client", body = Data<Client>)),
    security(("api_key" = ["clients.read"])))]
pub async fn get_client(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(clients::get(&s.db, &api.principal, ids.get::<ClientId>("client")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/clients/{client}", tag = "clients", request_body = ClientUpdate,
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Updated (absent fields are unchanged)", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn update_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<ClientUpdate>,
) -> AppResult<Response> {
    Ok(ok(clients::update(&s.db, &ctx, &api.principal, ids.get("client")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/clients/{client}", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 204, description = "Deleted (refused with 409 while it has projects, invoices or portal users)")),
    security(("api_key" = ["clients.delete"])))]
pub async fn delete_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    clients::delete(&s.db, &ctx, &api.principal, ids.get("client")?).await?;
    Ok(no_content())
}

#[utoipa::path(post, path = "/api/v1/clients/{client}/archive", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Archived", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn archive_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    Ok(ok(clients::set_archived(&s.db, &ctx, &api.principal, ids.get("client")?, true).await?))
}

#[utoipa::path(post, path = "/api/v1/clients/{client}/restore", tag = "clients",
    params(("client" = Uuid, Path, description = "Client id")),
    responses((status = 200, description = "Active again", body = Data<Client>)),
    security(("api_key" = ["clients.update"])))]
pub async fn restore_client(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    Ok(ok(clients::set_archived(&s.db, &ctx, &api.principal, ids.get("client")?, false).await?))
}
