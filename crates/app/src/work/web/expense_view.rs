//! The project page's Expenses tab as it reads: the project's expenses, their total per
//! currency, and the categories the form offers.

use super::People;
use crate::access::OrgPrincipal;
use crate::access::role::Permission as P;
use crate::platform::db::Db;
use crate::platform::http::error::AppResult;
use crate::platform::ids::ProjectId;
use crate::work::expenses;
use crate::work::money::format_minor;

pub struct ExpenseView {
    pub id: String,
    pub spent_on: String,
    pub who: String,
    pub category: String,
    pub note: String,
    /// "42.50 EUR".
    pub amount: String,
    pub billable: bool,
    /// The invoice that billed it.
    pub invoice: Option<String>,
    /// The viewer may delete it (their own, or anyone's with projects.update; never a billed one).
    pub deletable: bool,
}

/// What the tab shows: the expenses (the latest 100), their totals ("42.50 EUR", one per
/// currency), the categories used so far and the currency new ones are in.
pub struct ExpensesTab {
    pub expenses: Vec<ExpenseView>,
    pub totals: Vec<String>,
    pub categories: Vec<String>,
    /// The organization's currency, which new expenses are recorded in.
    pub currency: String,
}

pub async fn tab(db: &Db, p: &OrgPrincipal, project: ProjectId, names: &People) -> AppResult<ExpensesTab> {
    let page = crate::work::Page { limit: Some(crate::work::MAX_PAGE), offset: None };
    let list = expenses::list(db, p, Some(&project.to_string()), page).await?;
    let (currency, categories) = expenses::choices(db, p).await?;
    let mut totals: Vec<(String, i128)> = Vec::new();
    for x in &list {
        match totals.iter_mut().find(|t| t.0 == x.currency) {
            Some(t) => t.1 += i128::from(x.amount_minor),
            None => totals.push((x.currency.clone(), x.amount_minor.into())),
        }
    }
    totals.sort();
    let me = p.user_id();
    let may_any = p.can(P::ProjectsUpdate);
    let expenses = list
        .into_iter()
        .map(|x| ExpenseView {
            id: x.id.to_string(),
            spent_on: x.spent_on.to_string(),
            who: names.name(&x.user_id),
            amount: format!("{} {}", format_minor(x.amount_minor), x.currency),
            billable: x.billable,
            deletable: p.can(P::TimeTrack) && x.invoice_id.is_none() && (may_any || Some(x.user_id) == me),
            invoice: x.invoice_id.map(|i| i.to_string()),
            category: x.category,
            note: x.note,
        })
        .collect();
    Ok(ExpensesTab {
        expenses,
        totals: totals.into_iter().map(|(c, v)| format!("{} {c}", format_minor(v))).collect(),
        categories,
        currency,
    })
}
