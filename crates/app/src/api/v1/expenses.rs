//! Expenses, and billing them onto a draft invoice.

use super::*;
use crate::work::expenses::{self, BillExpenses, Expense, ExpenseInput, ExpenseUpdate};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExpenseQuery {
    /// Only this project's expenses.
    #[param(value_type = Option<Uuid>)]
    pub project_id: Option<QueryId>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/expenses", tag = "time", params(ExpenseQuery),
    responses((status = 200, description = "A page of the expenses of the projects the key sees, most recent first", body = List<Expense>)),
    security(("api_key" = ["projects.read"])))]
pub async fn list_expenses(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<ExpenseQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let project = query_id(q.project_id);
    let items = expenses::list(&s.db, &api.principal, project.as_deref(), page).await?;
    Ok(listed(items, page, None))
}

#[utoipa::path(post, path = "/api/v1/expenses", tag = "time", request_body = ExpenseInput,
    description = "Recorded in the organization's currency. `project_id` must name a project the key sees (otherwise 422 naming the field). A key that no member created records no expense (403).",
    responses((status = 201, description = "Recorded for the member who created the API key", body = Data<Expense>)),
    security(("api_key" = ["time.track"])))]
pub async fn create_expense(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<ExpenseInput>,
) -> AppResult<Response> {
    let x = expenses::create(&s.db, &ctx, &api.principal, &input).await?;
    Ok(created(format!("/api/v1/expenses/{}", x.id), x))
}

#[utoipa::path(get, path = "/api/v1/expenses/{expense}", tag = "time",
    params(("expense" = Uuid, Path, description = "Expense id")),
    responses((status = 200, description = "The expense", body = Data<Expense>)),
    security(("api_key" = ["projects.read"])))]
pub async fn get_expense(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(expenses::get(&s.db, &api.principal, ids.get("expense")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/expenses/{expense}", tag = "time", request_body = ExpenseUpdate,
    description = "The key creator's own expenses, anyone's with projects.update (403 otherwise); 409 once it is billed.",
    params(("expense" = Uuid, Path, description = "Expense id")),
    responses((status = 200, description = "Updated (absent fields are unchanged)", body = Data<Expense>)),
    security(("api_key" = ["time.track"])))]
pub async fn update_expense(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<ExpenseUpdate>,
) -> AppResult<Response> {
    Ok(ok(expenses::update(&s.db, &ctx, &api.principal, ids.get("expense")?, &input).await?))
}

#[utoipa::path(delete, path = "/api/v1/expenses/{expense}", tag = "time",
    description = "The key creator's own expenses, anyone's with projects.update (403 otherwise); 409 once it is billed.",
    params(("expense" = Uuid, Path, description = "Expense id")),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = ["time.track"])))]
pub async fn delete_expense(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    expenses::delete(&s.db, &ctx, &api.principal, ids.get("expense")?).await?;
    Ok(no_content())
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/expenses", tag = "invoices", request_body = BillExpenses,
    description = "Turns billable, unbilled expenses of the draft's client in the invoice's currency into lines, one per \
        expense (quantity 1, the amount as the price), and marks them billed. 409 when the invoice is not a draft, when \
        nothing matches, or when any expense named in `expense_ids` is billed already or in another currency (then \
        nothing is written).",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice with its new lines", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn bill_expenses(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<BillExpenses>,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    expenses::bill(&s.db, &ctx, &api.principal, id, &input).await?;
    Ok(ok(crate::work::invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}
