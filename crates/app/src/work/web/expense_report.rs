//! The expenses of a range of days across the projects the viewer may see: totals per category
//! and per project (per currency), every expense with its billing, and the CSV export.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::http::error::{AppError, AppResult};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, page};
use crate::tenancy::guard::OrgAccess;
use crate::work::expenses::{self, ExpenseRow};
use crate::work::money::format_minor;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/time/expenses", Surface::Web, Access::Org(P::ProjectsRead), report),
        route!(GET "/o/{org}/time/expenses.csv", Surface::Web, Access::Org(P::ProjectsRead), export),
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// A total: what it is for (and where that leads), how many expenses, and their sum per
/// currency ("120.50 USD", one line each).
struct TotalRow {
    name: String,
    href: String,
    count: usize,
    amounts: Vec<String>,
}

struct ExpenseLine {
    spent_on: String,
    who: String,
    project: (String, String),
    category: String,
    note: String,
    amount: String,
    /// "Billed" (with the invoice), "Billable" or "Not billable".
    billing: (&'static str, String),
}

#[derive(Template)]
#[template(path = "work/expense_report.html")]
struct ReportPage {
    org: OrgNav,
    from: String,
    to: String,
    total: Vec<String>,
    categories: Vec<TotalRow>,
    projects: Vec<TotalRow>,
    expenses: Vec<ExpenseLine>,
    export: String,
    capped: bool,
}

/// Sums per currency, in currency order, as shown.
fn amounts<'a>(rows: impl Iterator<Item = &'a ExpenseRow>) -> Vec<String> {
    let mut by: BTreeMap<&str, i128> = BTreeMap::new();
    for r in rows {
        *by.entry(r.currency.as_str()).or_default() += i128::from(r.amount_minor);
    }
    by.into_iter().map(|(c, v)| format!("{} {c}", format_minor(v))).collect()
}

fn totals(rows: &[ExpenseRow], key: impl Fn(&ExpenseRow) -> (String, String)) -> Vec<TotalRow> {
    let mut by: BTreeMap<(String, String), Vec<&ExpenseRow>> = BTreeMap::new();
    for r in rows {
        by.entry(key(r)).or_default().push(r);
    }
    by.into_iter()
        .map(|((name, href), group)| TotalRow { name, href, count: group.len(), amounts: amounts(group.into_iter()) })
        .collect()
}

async fn report(State(state): State<AppState>, access: OrgAccess, Query(q): Query<RangeQuery>) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let rows = expenses::in_range(&state.db, &access.principal, from, to).await?;
    let slug = &access.slug;
    let may_invoices = access.principal.can(P::InvoicesRead);
    let names = super::People::of(&super::people(&state, &access).await?);
    let categories = totals(&rows, |r| (r.category.clone(), String::new()));
    let projects = totals(&rows, |r| (r.project_name.clone(), format!("/o/{slug}/projects/{}/expenses", r.project_id)));
    let expenses = rows
        .iter()
        .map(|r| ExpenseLine {
            spent_on: r.spent_on.to_string(),
            who: names.actor(Some(r.user_id), &r.person),
            project: (r.project_name.clone(), format!("/o/{slug}/projects/{}/expenses", r.project_id)),
            category: r.category.clone(),
            note: r.note.clone(),
            amount: format!("{} {}", format_minor(r.amount_minor), r.currency),
            billing: match r.invoice_id {
                Some(i) if may_invoices => ("Billed", format!("/o/{slug}/invoices/{i}")),
                Some(_) => ("Billed", String::new()),
                None if r.billable => ("Billable", String::new()),
                None => ("Not billable", String::new()),
            },
        })
        .collect();
    page(&ReportPage {
        org: OrgNav::of(&access),
        from: from.to_string(),
        to: to.to_string(),
        total: amounts(rows.iter()),
        capped: rows.len() as i64 >= expenses::REPORT_CAP,
        export: format!("/o/{slug}/time/expenses.csv?from={from}&to={to}"),
        categories,
        projects,
        expenses,
    })
}

async fn export(State(state): State<AppState>, access: OrgAccess, Query(q): Query<RangeQuery>) -> AppResult<Response> {
    let (from, to) = super::timesheet::range(&state, &access, &q.from, &q.to).await?;
    let rows = expenses::in_range(&state.db, &access.principal, from, to).await?;
    let body = expenses::to_csv(&rows).map_err(AppError::internal)?;
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let disposition = format!("attachment; filename=\"expenses-{from}-{to}.csv\"");
    res.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(AppError::internal)?);
    Ok(res)
}
