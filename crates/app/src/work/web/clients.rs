//! Client pages: list with search, status filter and pagination; create, edit, archive and
//! restore, delete; contacts.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{PAGE_SIZE, Pager, duration, path_id};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, FieldError};
use crate::platform::ids::ClientId;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::clients::{self, Client, ClientFilter, ClientInput, ClientUpdate, Contact, ContactInput};
use crate::work::money::format_minor;
use crate::work::statement::{self as statements, EntryKind};
use crate::work::{Page, invoices};

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/clients", Surface::Web, Access::Org(P::ClientsRead), list),
        route!(GET "/o/{org}/clients/new", Surface::Web, Access::Org(P::ClientsCreate), new_page),
        route!(POST "/o/{org}/clients", Surface::Web, Access::Org(P::ClientsCreate), create),
        route!(GET "/o/{org}/clients/{client}", Surface::Web, Access::Org(P::ClientsRead), detail),
        route!(GET "/o/{org}/clients/{client}/statement", Surface::Web, Access::Org(P::InvoicesRead), statement),
        route!(POST "/o/{org}/clients/{client}/statement/email", Surface::Web, Access::Org(P::InvoicesUpdate), email_statement),
        route!(GET "/o/{org}/clients/{client}/statement.pdf", Surface::Web, Access::Org(P::InvoicesRead), statement_pdf),
        route!(GET "/o/{org}/clients/{client}/edit", Surface::Web, Access::Org(P::ClientsUpdate), edit_page),
        route!(POST "/o/{org}/clients/{client}/edit", Surface::Web, Access::Org(P::ClientsUpdate), update),
        route!(POST "/o/{org}/clients/{client}/archive", Surface::Web, Access::Org(P::ClientsUpdate), archive),
        route!(POST "/o/{org}/clients/{client}/restore", Surface::Web, Access::Org(P::ClientsUpdate), restore),
        route!(POST "/o/{org}/clients/{client}/delete", Surface::Web, Access::Org(P::ClientsDelete), delete),
        route!(POST "/o/{org}/clients/{client}/contacts", Surface::Web, Access::Org(P::ClientsUpdate), add_contact),
        route!(POST "/o/{org}/clients/{client}/contacts/{contact}/delete", Surface::Web, Access::Org(P::ClientsUpdate), remove_contact),
    ]
}

// ---- list ----

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    offset: i64,
}

#[derive(Template)]
#[template(path = "work/clients.html")]
struct ListPage {
    org: OrgNav,
    clients: Vec<Row>,
    q: String,
    status: String,
    pager: Pager,
    can_create: bool,
    /// The "Owed" column (for those who may read invoices).
    with_money: bool,
}

struct Row {
    client: Client,
    /// What it owes on sent invoices, per currency ("1358.50 EUR"), with the part past due
    /// ("1234.50", empty when none is); empty when nothing is owed.
    owed: Vec<(String, String)>,
}

async fn list(State(state): State<AppState>, access: OrgAccess, Query(q): Query<ListQuery>) -> AppResult<Response> {
    let filter = ClientFilter {
        q: Some(q.q.clone()),
        status: Some(if q.status.is_empty() { "active".into() } else { q.status.clone() }),
    };
    let page_req = Page { limit: Some(PAGE_SIZE), offset: Some(q.offset) };
    let (items, total) = clients::list(&state.db, &access.principal, &filter, page_req).await?;
    let ids: Vec<ClientId> = items.iter().map(|c| c.id).collect();
    let mut owed = invoices::owed(&state.db, &access.principal, &ids, state.clock.now()).await?;
    let base = format!("/o/{}/clients", access.slug);
    let pager = Pager::new(&base, &[("q", &q.q), ("status", &q.status)], page_req.offset(), items.len(), total);
    page(&ListPage {
        can_create: access.principal.can(P::ClientsCreate),
        with_money: access.principal.can(P::InvoicesRead),
        org: OrgNav::of(&access),
        clients: items
            .into_iter()
            .map(|c| {
                let owed = owed.remove(&c.id).unwrap_or_default();
                let shown = |o: &invoices::Owed| {
                    let overdue = if o.overdue > 0 { format_minor(o.overdue_minor) } else { String::new() };
                    (format!("{} {}", format_minor(o.total_minor), o.currency), overdue)
                };
                Row { owed: owed.iter().map(shown).collect(), client: c }
            })
            .collect(),
        q: q.q,
        status: q.status,
        pager,
    })
}

// ---- create and edit ----

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct ClientForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    notes: String,
    /// Money as typed (`120.50`); empty for none.
    #[serde(default)]
    hourly_rate: String,
}

impl ClientForm {
    fn of(c: &Client) -> Self {
        Self {
            name: c.name.clone(),
            company: c.company.clone(),
            email: c.email.clone().unwrap_or_default(),
            phone: c.phone.clone().unwrap_or_default(),
            notes: c.notes.clone(),
            hourly_rate: crate::work::invoicing::show_rate(c.hourly_rate_minor),
        }
    }

    fn input(&self) -> AppResult<ClientInput> {
        Ok(ClientInput {
            name: self.name.clone(),
            company: Some(self.company.clone()),
            email: Some(self.email.trim().to_string()),
            phone: Some(self.phone.clone()),
            notes: Some(self.notes.clone()),
            hourly_rate_minor: crate::work::invoicing::parse_rate("hourly_rate", &self.hourly_rate)?,
        })
    }

    /// The form sends every field: an empty one clears it.
    fn update(&self) -> AppResult<ClientUpdate> {
        Ok(ClientUpdate {
            name: Some(self.name.clone()),
            company: Some(self.company.clone()),
            email: Some(Some(self.email.trim().to_string())),
            phone: Some(Some(self.phone.clone())),
            notes: Some(self.notes.clone()),
            hourly_rate_minor: Some(crate::work::invoicing::parse_rate("hourly_rate", &self.hourly_rate)?),
        })
    }
}

#[derive(Template)]
#[template(path = "work/client_form.html")]
struct FormPage {
    csrf: String,
    org: OrgNav,
    /// `None` when creating.
    client_id: Option<String>,
    form: ClientForm,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn new_page(FormToken(csrf): FormToken, access: OrgAccess) -> AppResult<Response> {
    page(&FormPage {
        csrf,
        org: OrgNav::of(&access),
        client_id: None,
        form: ClientForm::default(),
        message: None,
        errors: vec![],
    })
}

async fn create(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<ClientForm>,
) -> AppResult<Response> {
    let created =
        async { clients::create(&state.db, &ctx, &access.principal, &form.input()?).await.map_err(AppError::from) }
            .await;
    match created {
        Ok(c) => Ok(Redirect::to(&format!("/o/{}/clients/{}", access.slug, c.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(
                status,
                &FormPage { csrf, org: OrgNav::of(&access), client_id: None, form, message, errors },
            )
        }
    }
}

async fn edit_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let c = clients::get(&state.db, &access.principal, path_id(&id)?).await?;
    page(&FormPage {
        csrf,
        org: OrgNav::of(&access),
        client_id: Some(c.id.to_string()),
        form: ClientForm::of(&c),
        message: None,
        errors: vec![],
    })
}

async fn update(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ClientForm>,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    let updated = async {
        clients::update(&state.db, &ctx, &access.principal, id, &form.update()?).await.map_err(AppError::from)
    }
    .await;
    match updated {
        Ok(c) => Ok(Redirect::to(&format!("/o/{}/clients/{}", access.slug, c.id)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(
                status,
                &FormPage { csrf, org: OrgNav::of(&access), client_id: Some(id.to_string()), form, message, errors },
            )
        }
    }
}

// ---- detail, contacts, archive, delete ----

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct ContactForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    title: String,
}

#[derive(Template)]
#[template(path = "work/client.html")]
struct DetailPage {
    csrf: String,
    org: OrgNav,
    client: Client,
    contacts: Vec<Contact>,
    contact: ContactForm,
    can_update: bool,
    can_delete: bool,
    can_projects: bool,
    can_invoices: bool,
    can_invoice: bool,
    /// What the client owes and what is still to bill (for those who may read invoices).
    money: Option<MoneyView>,
    message: Option<String>,
    errors: Vec<FieldError>,
}

struct MoneyView {
    /// Per currency: what is owed, and the overdue part of it (empty when none is).
    owed: Vec<(String, String)>,
    unbilled: String,
    /// Per currency: the billable expenses not yet billed (none when there are none).
    expenses: Vec<String>,
}

/// "1 sent invoice", "2 entries".
fn count(n: i64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

impl MoneyView {
    fn of(b: &invoices::ClientBalance) -> Self {
        let owed = b
            .owed
            .iter()
            .map(|o| {
                let overdue = if o.overdue > 0 {
                    format!("{} {} overdue", format_minor(o.overdue_minor), o.currency)
                } else {
                    String::new()
                };
                let owed = format!(
                    "{} {} owed on {}",
                    format_minor(o.total_minor),
                    o.currency,
                    count(o.invoices, "sent invoice", "sent invoices")
                );
                (owed, overdue)
            })
            .collect();
        let unbilled = if b.unbilled_minutes == 0 {
            "No billable time waits to be billed.".to_string()
        } else {
            let unrated = if b.unrated_entries > 0 {
                let verb = if b.unrated_entries == 1 { "counts" } else { "count" };
                format!(" ({} without a rate {verb} as nothing)", count(b.unrated_entries, "entry", "entries"))
            } else {
                String::new()
            };
            format!(
                "{} of billable time not yet billed, worth {} {} at the rates that apply{unrated}.",
                duration(b.unbilled_minutes),
                format_minor(b.unbilled_minor),
                b.currency
            )
        };
        let expenses = b
            .unbilled_expenses
            .iter()
            .map(|x| {
                format!(
                    "{} {} of billable expenses not yet billed ({}).",
                    format_minor(x.amount_minor),
                    x.currency,
                    count(x.expenses, "expense", "expenses")
                )
            })
            .collect();
        Self { owed, unbilled, expenses }
    }
}

async fn detail_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ClientId,
    contact: ContactForm,
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<DetailPage> {
    let p = &access.principal;
    let client = clients::get(&state.db, p, id).await?;
    let contacts = clients::contacts(&state.db, &state.keys, p, id).await?;
    let money = if p.can(P::InvoicesRead) {
        Some(MoneyView::of(&invoices::client_balance(&state.db, p, id, state.clock.now()).await?))
    } else {
        None
    };
    Ok(DetailPage {
        csrf,
        org: OrgNav::of(access),
        client,
        contacts,
        contact,
        can_update: p.can(P::ClientsUpdate),
        can_delete: p.can(P::ClientsDelete),
        can_projects: p.can(P::ProjectsRead),
        can_invoices: p.can(P::InvoicesRead),
        can_invoice: p.can(P::InvoicesCreate),
        money,
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
    page(&detail_view(&state, csrf, &access, path_id(&id)?, ContactForm::default(), None, vec![]).await?)
}

/// After an action on a client: back to its page, or its page with the failure.
async fn detail_result(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    id: ClientId,
    contact: ContactForm,
    result: Result<(), impl Into<AppError>>,
) -> AppResult<Response> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/clients/{id}", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &detail_view(state, csrf, access, id, contact, message, errors).await?)
        }
    }
}

async fn archive(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    let r = clients::set_archived(&state.db, &ctx, &access.principal, id, true).await.map(|_| ());
    detail_result(&state, csrf, &access, id, ContactForm::default(), r).await
}

async fn restore(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    let r = clients::set_archived(&state.db, &ctx, &access.principal, id, false).await.map(|_| ());
    detail_result(&state, csrf, &access, id, ContactForm::default(), r).await
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    match clients::delete(&state.db, &ctx, &access.principal, id).await {
        Ok(()) => Ok(Redirect::to(&format!("/o/{}/clients", access.slug)).into_response()),
        Err(e) => detail_result(&state, csrf, &access, id, ContactForm::default(), Err(e)).await,
    }
}

async fn add_contact(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ContactForm>,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    let input = ContactInput {
        name: Some(form.name.clone()),
        email: Some(form.email.trim().to_string()),
        phone: Some(form.phone.clone()),
        title: Some(form.title.clone()),
    };
    let r = clients::add_contact(&state.db, &state.keys, &ctx, &access.principal, id, &input).await.map(|_| ());
    detail_result(&state, csrf, &access, id, form, r).await
}

async fn remove_contact(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, contact)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ClientId = path_id(&id)?;
    let contact = path_id(&contact)?;
    let r = clients::remove_contact(&state.db, &ctx, &access.principal, id, contact).await;
    detail_result(&state, csrf, &access, id, ContactForm::default(), r).await
}

pub(super) struct StatementRow {
    pub(super) day: String,
    pub(super) invoice: String,
    pub(super) invoice_id: String,
    /// A payment (else an invoice).
    pub(super) payment: bool,
    pub(super) note: String,
    pub(super) invoiced: String,
    pub(super) paid: String,
    pub(super) balance: String,
}

pub(super) struct CurrencyView {
    pub(super) currency: String,
    pub(super) opening: String,
    pub(super) invoiced: String,
    pub(super) paid: String,
    pub(super) closing: String,
    pub(super) rows: Vec<StatementRow>,
}

/// A statement as `work/statement_body.html` shows it, on the internal page and in the portal.
pub(super) struct StatementView {
    pub(super) client: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) currencies: Vec<CurrencyView>,
    pub(super) capped: bool,
    pub(super) max_entries: usize,
    /// The page's own address (the range form's action).
    pub(super) action: String,
    /// Where the statement's invoices are (`/o/{org}/invoices` or `/portal/{org}/invoices`).
    pub(super) invoices: String,
    /// Read by the client, in the portal.
    pub(super) portal: bool,
}

impl StatementView {
    pub(super) fn new(s: statements::Statement, action: String, invoices: String, portal: bool) -> Self {
        let currencies = s
            .currencies
            .into_iter()
            .map(|c| CurrencyView {
                opening: format_minor(c.opening),
                invoiced: format_minor(c.invoiced),
                paid: format_minor(c.paid),
                closing: format_minor(c.closing),
                rows: c
                    .entries
                    .into_iter()
                    .map(|e| {
                        let amount = format_minor(e.amount);
                        let payment = e.kind == EntryKind::Payment;
                        StatementRow {
                            day: e.day.to_string(),
                            invoice: e.invoice(),
                            invoice_id: e.invoice_id.to_string(),
                            payment,
                            note: e.note,
                            invoiced: if payment { String::new() } else { amount.clone() },
                            paid: if payment { amount } else { String::new() },
                            balance: format_minor(e.balance),
                        }
                    })
                    .collect(),
                currency: c.currency,
            })
            .collect();
        Self {
            client: s.client_name,
            from: s.from.to_string(),
            to: s.to.to_string(),
            currencies,
            capped: s.capped,
            max_entries: statements::MAX_ENTRIES,
            action,
            invoices,
            portal,
        }
    }
}

#[derive(Template)]
#[template(path = "work/statement.html")]
struct StatementPage {
    csrf: String,
    org: OrgNav,
    client_id: String,
    s: StatementView,
    /// May mail it to the client (`invoices.update`).
    can_mail: bool,
    message: Option<String>,
    errors: Vec<FieldError>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StatementQuery {
    #[serde(default)]
    pub(super) from: String,
    #[serde(default)]
    pub(super) to: String,
}

/// A client's statement over a range of days (by default this month): what it owed before,
/// each invoice and payment with the balance after it, and what it owed at the end.
async fn statement(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<StatementQuery>,
) -> AppResult<Response> {
    let client: ClientId = path_id(&id)?;
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    page(&statement_view(&state, csrf, &access, client, (from, to), None, vec![]).await?)
}

async fn statement_view(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    client: ClientId,
    (from, to): (time::Date, time::Date),
    message: Option<String>,
    errors: Vec<FieldError>,
) -> AppResult<StatementPage> {
    let s = statements::statement(&state.db, &access.principal, client, from, to).await?;
    let slug = &access.slug;
    let s =
        StatementView::new(s, format!("/o/{slug}/clients/{client}/statement"), format!("/o/{slug}/invoices"), false);
    Ok(StatementPage {
        csrf,
        org: OrgNav::of(access),
        client_id: client.to_string(),
        s,
        can_mail: access.principal.can(P::InvoicesUpdate),
        message,
        errors,
    })
}

/// The statement as a PDF (the range as on the page).
async fn statement_pdf(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<StatementQuery>,
) -> AppResult<Response> {
    let client: ClientId = path_id(&id)?;
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let s = statements::statement(&state.db, &access.principal, client, from, to).await?;
    statement_pdf_download(&access.name, &s)
}

/// A statement as the PDF to download (the internal page's and the portal's).
pub(super) fn statement_pdf_download(organization: &str, s: &statements::Statement) -> AppResult<Response> {
    super::pdf_download(&crate::work::statement_pdf::file_name(s), crate::work::statement_pdf::render(organization, s))
}

/// Mails the statement of the range shown to the client's billing contact, and shows it again.
async fn email_statement(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    axum::Form(q): axum::Form<StatementQuery>,
) -> AppResult<Response> {
    let client: ClientId = path_id(&id)?;
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let public_url = state.config.public_url();
    match crate::work::statement_mail::email(&state.db, &ctx, &access.principal, client, from, to, &public_url).await {
        Ok(_) => {
            Ok(Redirect::to(&format!("/o/{}/clients/{client}/statement?from={from}&to={to}", access.slug))
                .into_response())
        }
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &statement_view(&state, csrf, &access, client, (from, to), message, errors).await?)
        }
    }
}
