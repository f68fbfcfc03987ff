//! The "To invoice" page (`/o/{org}/invoices/uninvoiced`): every client with billable time or
//! expenses that no invoice bills yet, what it is worth, and a way to start its invoice.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::duration;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::AppResult;
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::money::{format_minor, per_currency};
use crate::work::uninvoiced;

pub fn routes() -> Vec<RouteDef> {
    vec![route!(GET "/o/{org}/invoices/uninvoiced", Surface::Web, Access::Org(P::InvoicesRead), show)]
}

struct Row {
    client_id: String,
    client: String,
    /// "12h 30m", or empty.
    time: String,
    /// "1500.00 USD", or empty.
    worth: String,
    unrated: i64,
    /// "42.50 EUR (2 expenses)", one per currency.
    expenses: Vec<String>,
}

#[derive(Template)]
#[template(path = "work/uninvoiced.html")]
struct UninvoicedPage {
    org: OrgNav,
    rows: Vec<Row>,
    /// The time's worth over every client ("1500.00 USD"), and the expenses' per currency.
    total: String,
    expense_totals: Vec<String>,
    can_create: bool,
    can_clients: bool,
}

async fn show(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    let p = &access.principal;
    let (clients, currency) = uninvoiced::by_client(&state.db, p).await?;
    let total: i128 = clients.iter().filter_map(|c| c.time.as_ref()).map(|t| i128::from(t.amount_minor)).sum();
    let expense_totals =
        per_currency(clients.iter().flat_map(|c| &c.expenses).map(|x| (x.currency.as_str(), x.amount_minor)));
    let rows = clients
        .into_iter()
        .map(|c| Row {
            client_id: c.client_id.to_string(),
            client: c.client,
            time: c.time.as_ref().map(|t| duration(t.minutes)).unwrap_or_default(),
            worth: c.time.as_ref().map(|t| format!("{} {currency}", format_minor(t.amount_minor))).unwrap_or_default(),
            unrated: c.time.as_ref().map_or(0, |t| t.unrated_entries),
            expenses: c
                .expenses
                .iter()
                .map(|x| {
                    let n = if x.expenses == 1 { "1 expense".into() } else { format!("{} expenses", x.expenses) };
                    format!("{} {} ({n})", format_minor(x.amount_minor), x.currency)
                })
                .collect(),
        })
        .collect();
    page(&UninvoicedPage {
        org: OrgNav::of(&access),
        rows,
        total: format!("{} {currency}", format_minor(total)),
        expense_totals,
        can_create: p.can(P::InvoicesCreate),
        can_clients: p.can(P::ClientsRead),
    })
}
