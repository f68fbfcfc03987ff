//! Invoices: drafts, lines, and the moves send, pay and void.

use super::*;
use crate::work::invoice_payments::{self, NewPayment, Payment, PaymentInput, ReceivedRow};
use crate::work::{invoice_mail, invoices};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// Only this client's invoices.
    #[param(value_type = Option<Uuid>)]
    pub client_id: Option<QueryId>,
    #[param(inline)]
    pub status: Option<InvoiceStatusFilter>,
    /// An invoice number (`42` or `#42`) or part of the client's name or company
    /// (case-insensitive).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/invoices", tag = "invoices", params(InvoiceQuery),
    responses((status = 200, description = "A page of invoices, newest first", body = List<crate::work::invoices::Invoice>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn list_invoices(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let filter =
        InvoiceFilter { client_id: query_id(q.client_id), status: q.status.map(|s| s.as_str().to_string()), q: q.q };
    let (items, total) = invoices::list(&s.db, s.clock.now(), &api.principal, &filter, page).await?;
    Ok(listed(items, page, Some(total)))
}

#[utoipa::path(post, path = "/api/v1/invoices", tag = "invoices", request_body = InvoiceInput,
    description = "`client_id` must name a client of the organization, `due_date` must not be before `issue_date`, and the total (lines plus tax) must fit in 2^63 - 1 minor units; otherwise 422 naming the field.",
    responses((status = 201, description = "Created as a draft", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.create"])))]
pub async fn create_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ApiJson(input): ApiJson<InvoiceInput>,
) -> AppResult<Response> {
    let inv = invoices::create(&s.db, &ctx, &api.principal, &input).await?;
    let detail = invoices::get(&s.db, ctx.now, &api.principal, inv.id).await?;
    Ok(created(format!("/api/v1/invoices/{}", inv.id), detail))
}

#[utoipa::path(get, path = "/api/v1/invoices/{invoice}", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice with its lines", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn get_invoice(State(s): State<AppState>, api: ApiAccess, ids: PathIds) -> AppResult<Response> {
    Ok(ok(invoices::get(&s.db, s.clock.now(), &api.principal, ids.get("invoice")?).await?))
}

#[utoipa::path(patch, path = "/api/v1/invoices/{invoice}", tag = "invoices", request_body = InvoiceUpdate,
    description = "Only drafts change (409 once sent). `client_id` must name a client of the organization, the due date must not be before the issue date (a date sent alone is compared with the invoice's other one), and the total must fit in 2^63 - 1 minor units; otherwise 422 naming the field.",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Updated draft (409 once sent; `lines` replaces the lines)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn update_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<InvoiceUpdate>,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    invoices::update(&s.db, &ctx, &api.principal, id, &input).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/invoices/{invoice}", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 204, description = "Deleted draft (409 once sent: void it instead)")),
    security(("api_key" = ["invoices.delete"])))]
pub async fn delete_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    invoices::delete(&s.db, &ctx, &api.principal, ids.get("invoice")?).await?;
    Ok(no_content())
}

pub(super) async fn transition(
    s: &AppState,
    api: &ApiAccess,
    ctx: &Context,
    ids: &PathIds,
    action: invoices::InvoiceAction,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    invoices::transition(&s.db, ctx, &api.principal, id, action).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/send", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Sent: numbered (`INV-2026-0007`), frozen and mailed to the client's billing contact (409 unless a draft with lines)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn send_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    // Sent and mailed to the client's billing contact (when it has one) through the outbox,
    // in one transaction.
    invoice_mail::send_and_mail(&s.db, &ctx, &api.principal, id, &s.config.public_url()).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/pay", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Paid in full: what it still owed is recorded as a payment today (409 unless sent)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn pay_invoice(State(s): State<AppState>, api: ApiAccess, ctx: Context, ids: PathIds) -> AppResult<Response> {
    transition(&s, &api, &ctx, &ids, invoices::InvoiceAction::Pay).await
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/duplicate", tag = "invoices",
    description = "Copies any invoice (whatever its status) as a new draft: the same client, currency, tax rate, notes and lines, issued today with the same payment terms. The copy bills no time.",
    params(("invoice" = Uuid, Path, description = "The invoice to copy")),
    responses((status = 201, description = "The new draft", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.create"])))]
pub async fn duplicate_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    let copy = invoices::duplicate(&s.db, &ctx, &api.principal, ids.get("invoice")?).await?;
    let detail = invoices::get(&s.db, ctx.now, &api.principal, copy.id).await?;
    Ok(created(format!("/api/v1/invoices/{}", copy.id), detail))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/void", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "Voided (409 once paid or void)", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn void_invoice(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    transition(&s, &api, &ctx, &ids, invoices::InvoiceAction::Void).await
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/time", tag = "invoices", request_body = invoices::BillTime,
    description = "Turns billable, unbilled time of the draft's client into lines (hours × the rate stored on each entry), \
        one per task and rate or one per entry, and marks the entries billed (with `approved_only`, only time whose week \
        is approved). 409 when the invoice is not a draft, when nothing matches, or when any entry named in `entry_ids` \
        is billed already, or not approved with `approved_only` (then nothing is written).",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice with its new lines", body = Data<InvoiceDetail>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn bill_time(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<invoices::BillTime>,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    invoices::bill_time(&s.db, &ctx, &api.principal, id, &input).await?;
    Ok(ok(invoices::get(&s.db, ctx.now, &api.principal, id).await?))
}

#[utoipa::path(get, path = "/api/v1/invoices/{invoice}/payments", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id"), PageQuery),
    responses((status = 200, description = "The invoice's payments, oldest first", body = List<Payment>)),
    security(("api_key" = ["invoices.read"])))]
pub async fn list_payments(
    State(s): State<AppState>,
    api: ApiAccess,
    ids: PathIds,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let payments = invoice_payments::list(&s.db, &api.principal, ids.get("invoice")?).await?;
    Ok(listed_whole(payments, page))
}

#[utoipa::path(post, path = "/api/v1/invoices/{invoice}/payments", tag = "invoices", request_body = PaymentInput,
    description = "Records money received against a sent invoice. `amount_minor` (default: all it still owes) must not be more than it still owes and `paid_on` (default: today) must not be after today; otherwise 422 naming the field. 409 unless the invoice is sent and owes something, or once it has 100 payments. The payment that reaches the total makes the invoice paid.",
    params(("invoice" = Uuid, Path, description = "Invoice id")),
    responses((status = 201, description = "Recorded; the invoice as it is now", body = Data<PaymentRecorded>)),
    security(("api_key" = ["invoices.update"])))]
pub async fn record_payment(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
    ApiJson(input): ApiJson<PaymentInput>,
) -> AppResult<Response> {
    let id: InvoiceId = ids.get("invoice")?;
    let new = NewPayment::parse(&input)?;
    let (payment, invoice) = invoice_payments::record(&s.db, &ctx, &api.principal, id, &new, "amount_minor").await?;
    Ok(created(format!("/api/v1/invoices/{id}/payments/{}", payment.id), PaymentRecorded { payment, invoice }))
}

/// A payment just recorded, with the invoice it was recorded against.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentRecorded {
    pub payment: Payment,
    pub invoice: invoices::Invoice,
}

#[utoipa::path(delete, path = "/api/v1/invoices/{invoice}/payments/{payment}", tag = "invoices",
    params(("invoice" = Uuid, Path, description = "Invoice id"), ("payment" = Uuid, Path, description = "Payment id")),
    responses((status = 204, description = "Deleted (a payment recorded by mistake); a paid invoice is owed again")),
    security(("api_key" = ["invoices.update"])))]
pub async fn delete_payment(
    State(s): State<AppState>,
    api: ApiAccess,
    ctx: Context,
    ids: PathIds,
) -> AppResult<Response> {
    invoice_payments::delete(&s.db, &ctx, &api.principal, ids.get("invoice")?, ids.get("payment")?).await?;
    Ok(no_content())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReceivedQuery {
    /// The first day, YYYY-MM-DD (default: the first of `to`'s month).
    #[param(format = Date)]
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD (default: today in the organization's time zone).
    #[param(format = Date)]
    pub to: Option<String>,
    /// Page size, at least 1 (default 50; larger values are capped at 100).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[serde(default, deserialize_with = "query_int")]
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// The payments received over a range of days: a page of them, and the whole range's sums.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsReceived {
    /// The page asked for, newest first.
    pub data: Vec<ReceivedRow>,
    pub pagination: Pagination,
    /// The range's first day, YYYY-MM-DD (both days are included).
    #[schema(format = Date)]
    pub from: String,
    /// The range's last day.
    #[schema(format = Date)]
    pub to: String,
    /// What the range's payments add up to, one entry per currency.
    pub received: Vec<CurrencySum>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencySum {
    pub currency: String,
    /// Minor units (capped at 2^63 - 1).
    pub amount_minor: i64,
}

#[utoipa::path(get, path = "/api/v1/payments", tag = "invoices", params(ReceivedQuery),
    description = "Money received against every invoice, by the day it came. `from` after `to` gets 422 naming `from`.",
    responses((status = 200, description = "A page of payments, newest first, and what the range adds up to per currency", body = PaymentsReceived)),
    security(("api_key" = ["invoices.read"])))]
pub async fn list_received(
    State(s): State<AppState>,
    api: ApiAccess,
    ApiQuery(q): ApiQuery<ReceivedQuery>,
) -> AppResult<Response> {
    let page = page(q.limit, q.offset)?;
    let (from, to) = super::range(&s, &api, q.from.as_deref(), q.to.as_deref()).await?;
    let (limit, offset) = (page.limit(), page.offset());
    let r = invoice_payments::received(&s.db, &api.principal, from, to, limit, offset).await?;
    let end = offset + r.rows.len() as i64;
    let pagination = Pagination { limit, offset, total: Some(r.count), next_offset: (end < r.count).then_some(end) };
    let received = r.sums.into_iter().map(|(currency, amount_minor)| CurrencySum { currency, amount_minor }).collect();
    Ok(Json(PaymentsReceived { data: r.rows, pagination, from: from.to_string(), to: to.to_string(), received })
        .into_response())
}
