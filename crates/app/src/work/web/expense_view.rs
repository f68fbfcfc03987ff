//! The project page's Expenses tab as it reads: the project's expenses, their total per
//! currency, and the categories the form offers.

use super::People;
use crate::access::OrgPrincipal;
use crate::access::role::Permission as P;
use crate::platform::http::error::AppResult;
use crate::platform::ids::ProjectId;
use crate::state::AppState;
use crate::work::money::{format_minor, per_currency};
use crate::work::{expenses, files};

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
    /// The viewer may delete it (their own, or anyone's with projects.update; never a billed one),
    /// and so attach a receipt to it.
    pub deletable: bool,
    /// Its receipt's file id (for those who may read files).
    pub receipt: Option<String>,
}

/// What the tab shows: the expenses (the latest 100), their totals ("42.50 EUR", one per
/// currency), the categories used so far and the currency new ones are in.
pub struct ExpensesTab {
    pub expenses: Vec<ExpenseView>,
    pub totals: Vec<String>,
    pub categories: Vec<String>,
    /// The organization's currency, which new expenses are recorded in.
    pub currency: String,
    /// The project's files a receipt may be picked from, newest first: (id, name). Empty for
    /// those who may not read files.
    pub files: Vec<(String, String)>,
}

pub async fn tab(state: &AppState, p: &OrgPrincipal, project: ProjectId, names: &People) -> AppResult<ExpensesTab> {
    let db = &state.db;
    let page = crate::work::Page { limit: Some(crate::work::MAX_PAGE), offset: None };
    let list = expenses::list(db, p, Some(&project.to_string()), page).await?;
    let (currency, categories) = expenses::choices(db, p).await?;
    let may_files = p.can(P::FilesRead);
    let files = if may_files {
        let filter = files::FileFilter { project_id: Some(project.to_string()), task_id: None };
        files::list(db, &state.keys, p, &filter, page).await?.into_iter().map(|f| (f.id.to_string(), f.name)).collect()
    } else {
        vec![]
    };
    let totals = per_currency(list.iter().map(|x| (x.currency.as_str(), x.amount_minor)));
    let expenses = list
        .into_iter()
        .map(|x| ExpenseView {
            deletable: p.can(P::TimeTrack) && expenses::may_change(p, &x, "change").is_ok(),
            id: x.id.to_string(),
            spent_on: x.spent_on.to_string(),
            who: names.name(&x.user_id),
            amount: format!("{} {}", format_minor(x.amount_minor), x.currency),
            billable: x.billable,
            invoice: x.invoice_id.map(|i| i.to_string()),
            receipt: x.receipt_file_id.filter(|_| may_files).map(|f| f.to_string()),
            category: x.category,
            note: x.note,
        })
        .collect();
    Ok(ExpensesTab { expenses, totals, categories, currency, files })
}
