//! Invoice pages: list with status (overdue included) and client filters, drafts with line
//! items, sending, payment and voiding, and a print view.
//!
//! Amounts are typed as decimals ("12.50", quantity "1.5") and become integer minor units and
//! thousandths with `money::parse_decimal` before the service sees them; totals are shown
//! with `money::format_minor`. Without JavaScript the form shows the existing lines and
//! three empty rows; empty rows are ignored.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::projects::{client_names, client_options};
use super::repeat_view::{RepeatChangeForm, RepeatForm, RepeatView};
use super::{Errors, FormFields, PAGE_SIZE, Pager, form_id, path_id};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::platform::ids::{ClientId, InvoiceId, PaymentId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::Page;
use crate::work::invoice_mail;
use crate::work::invoice_payments::{self, NewPayment};
use crate::work::invoices::{self, InvoiceDetail, InvoiceFilter, InvoiceInput, InvoiceUpdate, LineInput};
use crate::work::money::{format_minor, milli, parse_decimal, percent};
use crate::work::repeats;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/invoices", Surface::Web, Access::Org(P::InvoicesRead), list),
        route!(GET "/o/{org}/invoices/new", Surface::Web, Access::Org(P::InvoicesCreate), new_page),
        route!(GET "/o/{org}/invoices/payments", Surface::Web, Access::Org(P::InvoicesRead), received),
        route!(GET "/o/{org}/invoices/payments.csv", Surface::Web, Access::Org(P::InvoicesRead), received_csv),
        route!(POST "/o/{org}/invoices", Surface::Web, Access::Org(P::InvoicesCreate), create),
        route!(GET "/o/{org}/invoices/{invoice}", Surface::Web, Access::Org(P::InvoicesRead), detail),
        route!(GET "/o/{org}/invoices/{invoice}/edit", Surface::Web, Access::Org(P::InvoicesUpdate), edit_page),
        route!(POST "/o/{org}/invoices/{invoice}/edit", Surface::Web, Access::Org(P::InvoicesUpdate), update),
        route!(POST "/o/{org}/invoices/{invoice}/send", Surface::Web, Access::Org(P::InvoicesUpdate), send),
        route!(POST "/o/{org}/invoices/{invoice}/pay", Surface::Web, Access::Org(P::InvoicesUpdate), pay),
        route!(POST "/o/{org}/invoices/{invoice}/void", Surface::Web, Access::Org(P::InvoicesUpdate), void),
        route!(POST "/o/{org}/invoices/{invoice}/duplicate", Surface::Web, Access::Org(P::InvoicesCreate), duplicate),
        route!(POST "/o/{org}/invoices/{invoice}/delete", Surface::Web, Access::Org(P::InvoicesDelete), delete),
        route!(GET "/o/{org}/invoices/{invoice}/print", Surface::Web, Access::Org(P::InvoicesRead), print),
        route!(POST "/o/{org}/invoices/{invoice}/time", Surface::Web, Access::Org(P::InvoicesUpdate), bill_time),
        route!(POST "/o/{org}/invoices/{invoice}/expenses", Surface::Web, Access::Org(P::InvoicesUpdate), bill_expenses),
        route!(GET "/o/{org}/invoices/{invoice}/pdf", Surface::Web, Access::Org(P::InvoicesRead), pdf),
        route!(POST "/o/{org}/invoices/{invoice}/remind", Surface::Web, Access::Org(P::InvoicesUpdate), remind),
        route!(POST "/o/{org}/invoices/{invoice}/payments", Surface::Web, Access::Org(P::InvoicesUpdate), record_payment),
        route!(POST "/o/{org}/invoices/{invoice}/payments/{payment}/delete", Surface::Web, Access::Org(P::InvoicesUpdate), delete_payment),
    ]
}

/// The statuses to filter by, in words ([`InvoiceStatus::label`](invoices::InvoiceStatus::label)).
const STATUSES: [(&str, &str); 5] = {
    use invoices::InvoiceStatus as S;
    const fn word(s: S) -> (&'static str, &'static str) {
        (s.as_str(), s.label())
    }
    [word(S::Draft), word(S::Sent), word(S::Overdue), word(S::Paid), word(S::Void)]
};

/// Empty rows offered below the existing lines.
const EMPTY_ROWS: usize = 3;
/// Row numbers beyond this are not accepted (the service allows 200 lines).
const MAX_ROWS: usize = 250;

fn title(i: &invoices::Invoice) -> String {
    match i.number {
        Some(_) => format!("Invoice {}", i.title()),
        None => "Draft invoice".into(),
    }
}

// ---- list ----

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    offset: i64,
}

struct Row {
    id: String,
    title: String,
    repeats: bool,
    client: String,
    issued: String,
    due: String,
    status: invoices::InvoiceStatus,
    total: String,
}

#[derive(Template)]
#[template(path = "work/invoices.html")]
struct ListPage {
    org: OrgNav,
    rows: Vec<Row>,
    q: String,
    status: String,
    client_id: String,
    statuses: [(&'static str, &'static str); 5],
    clients: Option<Vec<(String, String)>>,
    pager: Pager,
    can_create: bool,
}

async fn list(State(state): State<AppState>, access: OrgAccess, Query(q): Query<ListQuery>) -> AppResult<Response> {
    let filter =
        InvoiceFilter { client_id: Some(q.client_id.clone()), status: Some(q.status.clone()), q: Some(q.q.clone()) };
    let page_req = Page { limit: Some(PAGE_SIZE), offset: Some(q.offset) };
    let (items, total) = invoices::list(&state.db, state.clock.now(), &access.principal, &filter, page_req).await?;
    let names = client_names(&state, &access, items.iter().map(|i| i.client_id).collect()).await?;
    let base = format!("/o/{}/invoices", access.slug);
    let filters = [("q", q.q.as_str()), ("status", &q.status), ("client_id", &q.client_id)];
    let pager = Pager::new(&base, &filters, page_req.offset(), items.len(), total);
    let current = form_id::<ClientId>("client_id", &q.client_id).ok().flatten();
    page(&ListPage {
        clients: client_options(&state, &access, current).await?,
        can_create: access.principal.can(P::InvoicesCreate),
        org: OrgNav::of(&access),
        rows: items
            .into_iter()
            .map(|i| Row {
                id: i.id.to_string(),
                title: title(&i),
                repeats: i.repeats,
                client: names.get(&i.client_id).cloned().unwrap_or_default(),
                issued: i.issue_date.to_string(),
                due: i.due_date.to_string(),
                total: i.total_shown(),
                status: i.status,
            })
            .collect(),
        q: q.q,
        status: q.status,
        client_id: q.client_id,
        statuses: STATUSES,
        pager,
    })
}

// ---- the draft form ----

#[derive(Clone, Default)]
pub struct LineRow {
    description: String,
    quantity: String,
    price: String,
}

#[derive(Clone, Default)]
pub struct InvoiceForm {
    client_id: String,
    currency: String,
    tax_rate: String,
    issue_date: String,
    due_date: String,
    /// Payment terms in days (new invoices; empty for the organization's).
    terms: String,
    notes: String,
    rows: Vec<LineRow>,
}

impl InvoiceForm {
    fn of(d: &InvoiceDetail) -> Self {
        let i = &d.invoice;
        let mut rows: Vec<LineRow> = d
            .lines
            .iter()
            .map(|l| LineRow {
                description: l.description.clone(),
                quantity: milli(l.quantity_milli),
                price: format_minor(l.unit_price_minor),
            })
            .collect();
        rows.extend((0..EMPTY_ROWS).map(|_| LineRow::default()));
        Self {
            client_id: i.client_id.to_string(),
            currency: i.currency.clone(),
            tax_rate: percent(i.tax_rate_bp),
            issue_date: i.issue_date.to_string(),
            due_date: i.due_date.to_string(),
            terms: String::new(),
            notes: i.notes.clone(),
            rows,
        }
    }

    fn parse(body: &Bytes) -> AppResult<Self> {
        const FIXED: [&str; 7] = ["client_id", "currency", "tax_rate", "issue_date", "due_date", "terms", "notes"];
        let row_of = |k: &str| -> Option<usize> {
            let (_, n) = k.split_once('_')?;
            let n: usize = n.parse().ok()?;
            (["description_", "quantity_", "price_"].iter().any(|p| k.starts_with(p)) && n < MAX_ROWS).then_some(n)
        };
        // Every field takes one value (line items are numbered, not repeated).
        let fields = FormFields::parse(body, |k| FIXED.contains(&k) || row_of(k).is_some())?;
        let rows: Vec<String> = fields.names().filter(|k| row_of(k).is_some()).map(str::to_string).collect();
        let single: Vec<&str> = FIXED.iter().copied().chain(rows.iter().map(String::as_str)).collect();
        let fields = fields.only_once(&single)?;
        let rows_needed =
            form_urlencoded::parse(body).filter_map(|(k, _)| row_of(&k)).max().map(|n| n + 1).unwrap_or(0);
        Ok(Self {
            client_id: fields.get("client_id").to_string(),
            currency: fields.get("currency").to_string(),
            tax_rate: fields.get("tax_rate").to_string(),
            issue_date: fields.get("issue_date").to_string(),
            due_date: fields.get("due_date").to_string(),
            terms: fields.get("terms").to_string(),
            notes: fields.get("notes").to_string(),
            rows: (0..rows_needed)
                .map(|n| LineRow {
                    description: fields.get(&format!("description_{n}")).to_string(),
                    quantity: fields.get(&format!("quantity_{n}")).to_string(),
                    price: fields.get(&format!("price_{n}")).to_string(),
                })
                .collect(),
        })
    }

    /// The lines for the service and, for each, the form row it came from (to name the row in
    /// the service's messages).
    fn lines(&self) -> AppResult<(Vec<LineInput>, Vec<usize>)> {
        let mut errors = Errors::default();
        let mut lines = Vec::new();
        let mut rows = Vec::new();
        for (n, r) in self.rows.iter().enumerate() {
            if r.description.trim().is_empty() && r.quantity.trim().is_empty() && r.price.trim().is_empty() {
                continue;
            }
            let label = |what: &str| format!("line {} {what}", n + 1);
            let quantity = errors.check(parse_decimal(&label("quantity"), &r.quantity, 3));
            let price = errors.check(parse_decimal(&label("unit price"), &r.price, 2));
            if let (Some(quantity_milli), Some(unit_price_minor)) = (quantity, price) {
                lines.push(LineInput { description: r.description.clone(), quantity_milli, unit_price_minor });
                rows.push(n);
            }
        }
        errors.into_result()?;
        Ok((lines, rows))
    }

    fn tax_rate_bp(&self) -> AppResult<i32> {
        match self.tax_rate.trim() {
            "" => Ok(0),
            v => i32::try_from(parse_decimal("tax_rate", v, 2)?)
                .map_err(|_| AppError::field("tax_rate", "must be a percentage between 0 and 100")),
        }
    }

    /// The tax rate and the lines, parsed, with the form row of each line.
    fn amounts(&self) -> AppResult<(i32, Vec<LineInput>, Vec<usize>)> {
        let mut errors = Errors::default();
        let tax = errors.check(self.tax_rate_bp());
        let lines = errors.check(self.lines());
        errors.into_result()?;
        let (lines, rows) = lines.unwrap_or_default();
        Ok((tax.unwrap_or_default(), lines, rows))
    }

    /// The currency as typed (upper-cased), or none when left empty.
    fn currency(&self) -> Option<String> {
        Some(self.currency.trim().to_ascii_uppercase()).filter(|c| !c.is_empty())
    }

    /// A new invoice: empty dates take their defaults (today, and 30 days later).
    fn input(&self) -> AppResult<(InvoiceInput, Vec<usize>)> {
        let (tax, lines, rows) = self.amounts()?;
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        Ok((
            InvoiceInput {
                client_id: self.client_id.trim().to_string(),
                currency: self.currency(),
                tax_rate_bp: Some(tax),
                issue_date: opt(&self.issue_date),
                due_date: opt(&self.due_date),
                payment_terms_days: super::number("payment_terms_days", &self.terms)?,
                notes: Some(self.notes.clone()),
                lines: Some(lines),
            },
            rows,
        ))
    }

    /// Changes to a draft: the form sends every field, and a date can't be emptied.
    fn update(&self) -> AppResult<(InvoiceUpdate, Vec<usize>)> {
        let (tax, lines, rows) = self.amounts()?;
        Ok((
            InvoiceUpdate {
                client_id: Some(self.client_id.trim().to_string()),
                currency: self.currency(),
                tax_rate_bp: Some(tax),
                issue_date: Some(self.issue_date.trim().to_string()),
                due_date: Some(self.due_date.trim().to_string()),
                notes: Some(self.notes.clone()),
                lines: Some(lines),
            },
            rows,
        ))
    }
}

/// The service names lines by their position among the non-empty rows (`lines[0].…`); the
/// person filling the form counts rows on the page.
fn name_rows(e: impl Into<AppError>, rows: &[usize]) -> AppError {
    match e.into() {
        AppError::Domain(DomainError::Invalid(list)) => AppError::invalid(
            list.into_iter()
                .map(|f| {
                    let renamed = f.field.strip_prefix("lines[").and_then(|rest| {
                        let (k, what) = rest.split_once(']')?;
                        let row = rows.get(k.parse::<usize>().ok()?)?;
                        let what = match what.trim_start_matches('.') {
                            "quantity_milli" => "quantity",
                            "unit_price_minor" => "unit price",
                            "" => "amount",
                            other => other,
                        };
                        Some(format!("line {} {what}", row + 1))
                    });
                    FieldError { field: renamed.unwrap_or(f.field), message: f.message }
                })
                .collect(),
        ),
        other => other,
    }
}

#[derive(Template)]
#[template(path = "work/invoice_form.html")]
struct FormPage {
    csrf: String,
    org: OrgNav,
    invoice_id: Option<String>,
    heading: String,
    form: InvoiceForm,
    clients: Option<Vec<(String, String)>>,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[allow(clippy::too_many_arguments)]
async fn form_page(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    invoice_id: Option<InvoiceId>,
    heading: String,
    form: InvoiceForm,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<FormPage> {
    let current = form_id::<ClientId>("client_id", &form.client_id).ok().flatten();
    Ok(FormPage {
        csrf,
        org: OrgNav::of(access),
        invoice_id: invoice_id.map(|i| i.to_string()),
        heading,
        clients: client_options(state, access, current).await?,
        form,
        message,
        errors,
    })
}

#[derive(Deserialize, Default)]
struct NewQuery {
    #[serde(default)]
    client_id: String,
}

async fn new_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Query(q): Query<NewQuery>,
) -> AppResult<Response> {
    let tax = invoices::default_tax_rate(&state.db, &access.principal).await?;
    let form = InvoiceForm {
        client_id: q.client_id,
        tax_rate: percent(tax),
        rows: (0..EMPTY_ROWS).map(|_| LineRow::default()).collect(),
        ..InvoiceForm::default()
    };
    page(&form_page(&state, csrf, &access, None, "New invoice".into(), form, None, vec![]).await?)
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    body: Bytes,
) -> AppResult<Response> {
    let form = InvoiceForm::parse(&body)?;
    let result = match form.input() {
        Ok((input, rows)) => {
            invoices::create(&state.db, &ctx, &access.principal, &input).await.map_err(|e| name_rows(e, &rows))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(inv) => Ok(Redirect::to(&format!("/o/{}/invoices/{}", access.slug, inv.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let heading = "New invoice".to_string();
            page_with_status(status, &form_page(&state, csrf, &access, None, heading, form, message, errors).await?)
        }
    }
}

async fn edit_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let d = invoices::get(&state.db, state.clock.now(), &access.principal, id).await?;
    if d.invoice.status != invoices::InvoiceStatus::Draft {
        // Sent invoices are immutable: the invoice's page says so and offers voiding.
        return detail_result(
            &state,
            csrf,
            &access,
            id,
            Err(AppError::conflict("Only draft invoices can be edited; void this one and create a new one.".into())),
        )
        .await;
    }
    let heading = format!("Edit {}", title(&d.invoice));
    page(&form_page(&state, csrf, &access, Some(id), heading, InvoiceForm::of(&d), None, vec![]).await?)
}

async fn update(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let form = InvoiceForm::parse(&body)?;
    let result = match form.update() {
        Ok((input, rows)) => {
            invoices::update(&state.db, &ctx, &access.principal, id, &input).await.map_err(|e| name_rows(e, &rows))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(inv) => Ok(Redirect::to(&format!("/o/{}/invoices/{}", access.slug, inv.id)).into_response()),
        Err(AppError::Domain(DomainError::Conflict(m))) => {
            detail_result(&state, csrf, &access, id, Err(AppError::conflict(m))).await
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let heading = "Edit draft invoice".to_string();
            page_with_status(status, &form_page(&state, csrf, &access, Some(id), heading, form, message, errors).await?)
        }
    }
}

// ---- the invoice page ----

pub struct LineView {
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

/// An invoice as shown on screen and on paper.
pub struct InvoiceView {
    pub id: String,
    pub title: String,
    pub client: String,
    pub client_id: String,
    pub status: invoices::InvoiceStatus,
    pub issued: String,
    pub due: String,
    pub currency: String,
    pub notes: String,
    pub lines: Vec<LineView>,
    pub subtotal: String,
    pub tax_rate: String,
    pub tax: String,
    pub total: String,
    /// When the client first opened it in the portal (empty: not yet).
    pub viewed: String,
    /// "net 14" when the due date came from payment terms.
    pub terms: String,
    /// What its payments add up to, and what it still owes (both empty: nothing paid yet).
    pub paid: String,
    pub balance: String,
    /// The invoice whose repeat made it (empty: none).
    pub repeated_from: String,
}

pub fn invoice_view(d: InvoiceDetail) -> InvoiceView {
    let i = d.invoice;
    InvoiceView {
        id: i.id.to_string(),
        title: title(&i),
        client: d.client_name,
        client_id: i.client_id.to_string(),
        status: i.status,
        issued: i.issue_date.to_string(),
        due: i.due_date.to_string(),
        notes: i.notes,
        lines: d
            .lines
            .into_iter()
            .map(|l| LineView {
                description: l.description,
                quantity: milli(l.quantity_milli),
                unit_price: format_minor(l.unit_price_minor),
                amount: format_minor(l.amount_minor),
            })
            .collect(),
        subtotal: format_minor(i.subtotal_minor),
        tax_rate: percent(i.tax_rate_bp),
        tax: format_minor(i.tax_minor),
        total: format_minor(i.total_minor),
        viewed: i.viewed_at.map(|t| t.date().to_string()).unwrap_or_default(),
        terms: i.payment_terms_days.map(|d| format!("net {d}")).unwrap_or_default(),
        paid: if i.paid_minor > 0 { format_minor(i.paid_minor) } else { String::new() },
        balance: if i.paid_minor > 0 { format_minor(i.balance_minor) } else { String::new() },
        repeated_from: i.repeated_from.map(|r| r.to_string()).unwrap_or_default(),
        currency: i.currency,
    }
}

/// A billable expense not yet billed, offered on a draft.
pub struct UnbilledExpenseView {
    pub id: String,
    pub spent_on: String,
    pub project: String,
    pub category: String,
    pub person: String,
    pub amount: String,
    pub note: String,
}

/// A billable entry not yet billed, offered on a draft.
pub struct UnbilledView {
    pub id: String,
    pub spent_on: String,
    pub project: String,
    pub task: String,
    pub person: String,
    pub time: String,
    pub rate: String,
    pub note: String,
    pub approved: bool,
}

#[derive(Template)]
#[template(path = "work/invoice.html")]
pub(super) struct DetailPage {
    csrf: String,
    org: OrgNav,
    invoice: InvoiceView,
    can_update: bool,
    can_delete: bool,
    can_create: bool,
    can_clients: bool,
    /// On a draft: the client's unbilled billable time, and its projects to filter by.
    unbilled: Vec<UnbilledView>,
    unbilled_projects: Vec<(String, String)>,
    /// How many of those entries no rate applies to: they would be billed at zero.
    unrated: usize,
    /// On a draft: the client's unbilled billable expenses in the invoice's currency, and how
    /// many wait in other currencies.
    unbilled_expenses: Vec<UnbilledExpenseView>,
    expenses_elsewhere: i64,
    /// On a sent or paid invoice: its payments, and the form that records one.
    payments: Vec<PaymentView>,
    payment: PaymentForm,
    /// Its repeat, or (to those who may set one up) the form that does.
    repeat: Option<RepeatView>,
    pub(super) repeat_form: RepeatForm,
    /// The form that changes an existing repeat, and whether it shows open (after a refusal).
    pub(super) repeat_change: RepeatChangeForm,
    pub(super) repeat_changing: bool,
    /// The first copy's day of a monthly repeat counted from the issue date.
    repeat_first: String,
    message: Option<String>,
    errors: Vec<FieldError>,
}

pub struct PaymentView {
    pub id: String,
    pub paid_on: String,
    pub amount: String,
    pub note: String,
}

/// The "Record a payment" form as typed (amount as a decimal).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PaymentForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    paid_on: String,
    #[serde(default)]
    note: String,
}

pub(super) async fn detail_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: InvoiceId,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<DetailPage> {
    let p = &access.principal;
    let d = invoices::get(&state.db, state.clock.now(), p, id).await?;
    let unbilled = if d.invoice.status == invoices::InvoiceStatus::Draft && p.can(P::InvoicesUpdate) {
        invoices::unbilled(&state.db, p, id, &invoices::BillTime::default()).await?
    } else {
        vec![]
    };
    let mut unbilled_projects: Vec<(String, String)> =
        unbilled.iter().map(|u| (u.project_id.to_string(), u.project_name.clone())).collect();
    unbilled_projects.sort();
    unbilled_projects.dedup();
    let unrated = unbilled.iter().filter(|u| u.rate_minor.is_none()).count();
    let (unbilled_expenses, expenses_elsewhere) =
        if d.invoice.status == invoices::InvoiceStatus::Draft && p.can(P::InvoicesUpdate) {
            crate::work::expenses::unbilled(&state.db, p, id).await?
        } else {
            (vec![], 0)
        };
    let status = d.invoice.status;
    let payments = if status.is_open() || status == invoices::InvoiceStatus::Paid {
        invoice_payments::list(&state.db, p, id).await?
    } else {
        vec![]
    };
    // The form starts with what is still owed, paid today.
    let payment = if status.is_open() && p.can(P::InvoicesUpdate) {
        PaymentForm { amount: format_minor(d.invoice.balance_minor), paid_on: d.today.to_string(), note: String::new() }
    } else {
        PaymentForm::default()
    };
    let repeat = repeats::of_invoice(&state.db, p, id).await?;
    // Left to count from the issue date, a monthly repeat's first copy would be on this day.
    let repeat_first = repeats::suggested_start(d.invoice.issue_date, d.today).to_string();
    Ok(DetailPage {
        csrf,
        org: OrgNav::of(access),
        repeat: repeat.as_ref().map(RepeatView::of),
        repeat_form: RepeatForm::suggested(),
        repeat_change: repeat.as_ref().map(RepeatChangeForm::of).unwrap_or_default(),
        repeat_changing: false,
        repeat_first,
        invoice: invoice_view(d),
        can_update: p.can(P::InvoicesUpdate),
        can_delete: p.can(P::InvoicesDelete),
        can_create: p.can(P::InvoicesCreate),
        can_clients: p.can(P::ClientsRead),
        unbilled: unbilled
            .into_iter()
            .map(|u| UnbilledView {
                id: u.id.to_string(),
                spent_on: u.spent_on.to_string(),
                project: u.project_name,
                task: u.task_title.unwrap_or_default(),
                person: u.person,
                time: super::duration(u.minutes.into()),
                rate: match (u.rate_minor, u.recorded_rate) {
                    (Some(r), true) => format_minor(r),
                    (Some(r), false) => format!("{} (today's rate)", format_minor(r)),
                    (None, _) => "no rate".into(),
                },
                note: u.note,
                approved: u.approved,
            })
            .collect(),
        unbilled_projects,
        unrated,
        unbilled_expenses: unbilled_expenses
            .into_iter()
            .map(|x| UnbilledExpenseView {
                id: x.id.to_string(),
                spent_on: x.spent_on.to_string(),
                project: x.project_name,
                category: x.category,
                person: x.person,
                amount: format_minor(x.amount_minor),
                note: x.note,
            })
            .collect(),
        expenses_elsewhere,
        payments: payments
            .into_iter()
            .map(|pm| PaymentView {
                id: pm.id.to_string(),
                paid_on: pm.paid_on.to_string(),
                amount: format_minor(pm.amount_minor),
                note: pm.note,
            })
            .collect(),
        payment,
        message,
        errors,
    })
}

async fn detail(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    page(&detail_view(&state, csrf, &access, path_id(&id)?, None, vec![]).await?)
}

async fn detail_result(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: InvoiceId,
    result: Result<(), impl Into<AppError>>,
) -> AppResult<Response> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/invoices/{id}", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &detail_view(state, csrf, access, id, message, errors).await?)
        }
    }
}

async fn transition(
    state: AppState,
    csrf: String,
    ctx: Context,
    access: OrgAccess,
    id: String,
    action: invoices::InvoiceAction,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let r = invoices::transition(&state.db, &ctx, &access.principal, id, action).await.map(|_| ());
    detail_result(&state, csrf, &access, id, r).await
}

/// Copies the invoice as a new draft and opens the copy; a failure shows the invoice again.
async fn duplicate(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    match invoices::duplicate(&state.db, &ctx, &access.principal, id).await {
        Ok(copy) => Ok(Redirect::to(&format!("/o/{}/invoices/{}", access.slug, copy.id)).into_response()),
        Err(e) => detail_result(&state, csrf, &access, id, Err(e)).await,
    }
}

async fn send(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let invoice: InvoiceId = path_id(&id)?;
    // Sending mails it to the client's billing contact, in the same transaction.
    let r = invoice_mail::send_and_mail(&state.db, &ctx, &access.principal, invoice, &state.config.public_url())
        .await
        .map(|_| ());
    detail_result(&state, csrf, &access, invoice, r).await
}

/// Mails the client's billing contact a reminder of an open invoice (at most once a day).
async fn remind(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let invoice: InvoiceId = path_id(&id)?;
    let r = invoice_mail::email_invoice(
        &state.db,
        &ctx,
        &access.principal,
        invoice,
        &state.config.public_url(),
        invoice_mail::Mailing::Reminder,
    )
    .await
    .and_then(|to| {
        to.map(|_| ()).ok_or_else(|| {
            DomainError::Conflict("This client has no billing email: add one on the client's page first.".into())
        })
    });
    detail_result(&state, csrf, &access, invoice, r).await
}

async fn pay(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    transition(state, csrf, ctx, access, id, invoices::InvoiceAction::Pay).await
}

/// Records a payment; a failure shows the page again with what was typed.
async fn record_payment(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    axum::Form(form): axum::Form<PaymentForm>,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = async {
        let new = NewPayment {
            amount: Some(parse_decimal("amount", &form.amount, 2)?),
            paid_on: Some(crate::work::fields::date("paid_on", form.paid_on.trim())?),
            note: crate::work::fields::text("note", &form.note, 500)?,
        };
        invoice_payments::record(&state.db, &ctx, &access.principal, id, &new, "amount").await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/o/{}/invoices/{id}#payments", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            let mut view = detail_view(&state, csrf, &access, id, message, errors).await?;
            view.payment = form;
            page_with_status(status, &view)
        }
    }
}

async fn delete_payment(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, payment)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let payment: PaymentId = path_id(&payment)?;
    let r = invoice_payments::delete(&state.db, &ctx, &access.principal, id, payment).await.map(|_| ());
    detail_result(&state, csrf, &access, id, r).await
}

async fn void(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    transition(state, csrf, ctx, access, id, invoices::InvoiceAction::Void).await
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    match invoices::delete(&state.db, &ctx, &access.principal, id).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/invoices", access.slug)).into_response()),
        Err(e) => detail_result(&state, csrf, &access, id, Err(e)).await,
    }
}

/// Bills the ticked entries, or when none is ticked every entry matching the filters.
async fn bill_time(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = async {
        let f = FormFields::parse(&body, |k| {
            matches!(k, "entry" | "project_id" | "from" | "to" | "group" | "approved_only")
        })?
        .only_once(&["project_id", "from", "to", "group", "approved_only"])?;
        let entries = f.all("entry");
        let approved_only = Some(crate::work::fields::flag("approved_only", f.get("approved_only"))?);
        let input = if entries.is_empty() {
            invoices::BillTime {
                entry_ids: None,
                project_id: Some(f.get("project_id").to_string()),
                from: Some(f.get("from").to_string()),
                to: Some(f.get("to").to_string()),
                group: Some(f.get("group").to_string()),
                approved_only,
            }
        } else {
            invoices::BillTime {
                entry_ids: Some(entries),
                group: Some(f.get("group").to_string()),
                approved_only,
                ..Default::default()
            }
        };
        invoices::bill_time(&state.db, &ctx, &access.principal, id, &input).await.map(|_| ()).map_err(AppError::from)
    }
    .await;
    detail_result(&state, csrf, &access, id, result).await
}

/// Bills the ticked expenses, or when none is ticked every one of the client's in the invoice's
/// currency.
async fn bill_expenses(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let id: InvoiceId = path_id(&id)?;
    let result = async {
        let f = FormFields::parse(&body, |k| k == "expense")?;
        let ticked = f.all("expense");
        let input = crate::work::expenses::BillExpenses {
            expense_ids: (!ticked.is_empty()).then_some(ticked),
            ..Default::default()
        };
        crate::work::expenses::bill(&state.db, &ctx, &access.principal, id, &input)
            .await
            .map(|_| ())
            .map_err(AppError::from)
    }
    .await;
    detail_result(&state, csrf, &access, id, result).await
}

/// The invoice as a PDF download (the same document the portal gives the client).
pub fn pdf_response(organization: &str, d: &InvoiceDetail) -> AppResult<Response> {
    super::pdf_download(&crate::work::invoice_pdf::file_name(d), crate::work::invoice_pdf::render(organization, d))
}

async fn pdf(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let d = invoices::get(&state.db, state.clock.now(), &access.principal, id).await?;
    pdf_response(&access.name, &d)
}

// ---- print ----

#[derive(Template)]
#[template(path = "work/invoice_print.html")]
pub struct PrintPage {
    pub organization: String,
    pub invoice: InvoiceView,
    /// Where "back" leads (not printed).
    pub back: String,
    /// The same invoice as a PDF.
    pub pdf: String,
}

async fn print(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id = path_id(&id)?;
    let d = invoices::get(&state.db, state.clock.now(), &access.principal, id).await?;
    page(&PrintPage {
        organization: access.name.clone(),
        invoice: invoice_view(d),
        back: format!("/o/{}/invoices/{id}", access.slug),
        pdf: format!("/o/{}/invoices/{id}/pdf", access.slug),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_numbered_rows_and_skips_empty_ones() {
        let body = Bytes::from_static(
            b"client_id=&tax_rate=19&description_0=Design&quantity_0=1.5&price_0=99.99\
              &description_1=&quantity_1=&price_1=&description_2=Hosting&quantity_2=1&price_2=10",
        );
        let form = InvoiceForm::parse(&body).unwrap();
        let (input, rows) = form.input().unwrap();
        let lines = input.lines.unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].quantity_milli, lines[0].unit_price_minor), (1500, 9999));
        assert_eq!(rows, vec![0, 2]);
        assert_eq!(input.tax_rate_bp, Some(1900));
        let renamed = name_rows(AppError::field("lines[1].description", "is required"), &rows);
        let AppError::Domain(DomainError::Invalid(v)) = renamed else { panic!() };
        assert_eq!(v[0].field, "line 3 description");
    }

    #[test]
    fn bad_amounts_and_unknown_fields_are_refused() {
        let form = InvoiceForm::parse(&Bytes::from_static(b"description_0=x&quantity_0=1,5&price_0=abc")).unwrap();
        let AppError::Domain(DomainError::Invalid(v)) = form.input().unwrap_err() else { panic!() };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field, "line 1 quantity");
        assert!(InvoiceForm::parse(&Bytes::from_static(b"status=paid")).is_err());
        assert!(InvoiceForm::parse(&Bytes::from_static(b"description_9999=x")).is_err());
    }
}

// ---- payments received ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReceivedQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    offset: i64,
}

struct ReceivedView {
    paid_on: String,
    invoice_id: String,
    invoice: String,
    client_id: String,
    client: String,
    amount: String,
    note: String,
}

#[derive(Template)]
#[template(path = "work/payments_received.html")]
struct ReceivedPage {
    org: OrgNav,
    from: String,
    to: String,
    /// "1234.50 EUR and 50.00 USD", or empty for nothing received.
    sums: String,
    count: i64,
    rows: Vec<ReceivedView>,
    can_clients: bool,
    export: String,
    /// The range holds more payments than a CSV export does.
    capped: bool,
    pager: Pager,
}

/// The money received in a range of days (by default this month), newest first, with the sum
/// per currency and a CSV export.
async fn received(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ReceivedQuery>,
) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let offset = q.offset.max(0);
    let r = invoice_payments::received(&state.db, &access.principal, from, to, PAGE_SIZE, offset).await?;
    let base = format!("/o/{}/invoices/payments", access.slug);
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let pager = Pager::new(&base, &[("from", &from_s), ("to", &to_s)], offset, r.rows.len(), r.count);
    let sums: Vec<String> = r.sums.iter().map(|(c, m)| format!("{} {c}", format_minor(*m))).collect();
    page(&ReceivedPage {
        org: OrgNav::of(&access),
        export: format!("{base}.csv?from={from}&to={to}"),
        capped: r.count > invoice_payments::EXPORT_CAP,
        from: from_s,
        to: to_s,
        sums: sums.join(" and "),
        count: r.count,
        rows: r
            .rows
            .into_iter()
            .map(|row| ReceivedView {
                paid_on: row.paid_on.to_string(),
                invoice: row.invoice(),
                invoice_id: row.invoice_id.to_string(),
                client_id: row.client_id.to_string(),
                client: row.client_name,
                amount: format!("{} {}", format_minor(row.amount_minor), row.currency),
                note: row.note,
            })
            .collect(),
        can_clients: access.principal.can(P::ClientsRead),
        pager,
    })
}

async fn received_csv(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<ReceivedQuery>,
) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let r = invoice_payments::received(&state.db, &access.principal, from, to, invoice_payments::EXPORT_CAP, 0).await?;
    let body = invoice_payments::to_csv(&r.rows).map_err(AppError::internal)?;
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let disposition = format!("attachment; filename=\"payments-{from}-{to}.csv\"");
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(AppError::internal)?);
    Ok(res)
}
