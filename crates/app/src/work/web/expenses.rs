//! Recording and deleting a project's expenses from its Expenses tab.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::path_id;
use super::projects::{ProjectForms, billable_choice, project_result};
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError};
use crate::platform::ids::{ExpenseId, ProjectId};
use crate::route;
use crate::state::AppState;
use crate::tenancy::guard::OrgAccess;
use crate::work::expenses::{self, ExpenseInput};
use crate::work::money::parse_decimal;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(POST "/o/{org}/projects/{project}/expenses", Surface::Web, Access::Org(P::TimeTrack), record),
        route!(POST "/o/{org}/projects/{project}/expenses/{expense}/delete", Surface::Web, Access::Org(P::TimeTrack), delete),
        route!(POST "/o/{org}/projects/{project}/expenses/{expense}/receipt", Surface::Web, Access::Org(P::TimeTrack), attach_receipt),
    ]
}

/// The Expenses tab's form as typed (the amount as a decimal, like 42.50).
#[derive(Deserialize, Default)]
struct ExpenseForm {
    #[serde(default)]
    spent_on: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    billable: String,
    #[serde(default)]
    note: String,
    /// A file of the project (its id), or empty for none.
    #[serde(default)]
    receipt: String,
}

/// The service names the amount in minor units and the receipt by its id; the form's fields are
/// `amount` and `receipt`.
pub(super) fn as_typed(e: AppError) -> AppError {
    match e {
        AppError::Domain(DomainError::Invalid(mut v)) => {
            for f in &mut v {
                if f.field == "amount_minor" {
                    f.field = "amount".into();
                } else if f.field == "receipt_file_id" {
                    f.field = "receipt".into();
                }
            }
            AppError::Domain(DomainError::Invalid(v))
        }
        other => other,
    }
}

async fn record(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<ExpenseForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let result = async {
        let amount_minor = parse_decimal("amount", &form.amount, 2)?;
        let spent_on = form.spent_on.trim();
        let input = ExpenseInput {
            project_id: id.to_string(),
            category: form.category.clone(),
            amount_minor,
            spent_on: (!spent_on.is_empty()).then(|| spent_on.to_string()),
            billable: billable_choice(&form.billable)?,
            note: Some(form.note.clone()),
            receipt_file_id: Some(form.receipt.clone()),
        };
        expenses::create(&state.db, &ctx, &access.principal, &input).await.map(|_| ()).map_err(AppError::from)
    }
    .await
    .map_err(as_typed);
    // The project in the address is not one the caller may see.
    if let Err(AppError::Domain(DomainError::Invalid(v))) = &result
        && v.iter().any(|f| f.field == "project_id")
    {
        return Err(AppError::not_found());
    }
    let forms = ProjectForms {
        spent_on: form.spent_on,
        note: form.note,
        category: form.category,
        amount: form.amount,
        billable: form.billable,
        receipt: form.receipt,
        ..ProjectForms::default()
    };
    project_result(&state, csrf, &access, id, "expenses", forms, result).await
}

async fn delete(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, expense)): Path<(String, String, String)>,
    _confirmed: crate::tenancy::confirm::Confirmed,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let expense: ExpenseId = path_id(&expense)?;
    // The expense must belong to the project in the address (its page is where we return).
    if expenses::get(&state.db, &access.principal, expense).await?.project_id != id {
        return Err(AppError::not_found());
    }
    let r = expenses::delete(&state.db, &ctx, &access.principal, expense).await.map(|_| ());
    project_result(&state, csrf, &access, id, "expenses", ProjectForms::default(), r).await
}

#[derive(Deserialize, Default)]
struct ReceiptForm {
    #[serde(default)]
    receipt: String,
}

/// Attaches one of the project's files to an expense as its receipt (or, empty, removes it).
async fn attach_receipt(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Path((_, id, expense)): Path<(String, String, String)>,
    Form(form): Form<ReceiptForm>,
) -> AppResult<Response> {
    let id: ProjectId = path_id(&id)?;
    let expense: ExpenseId = path_id(&expense)?;
    if expenses::get(&state.db, &access.principal, expense).await?.project_id != id {
        return Err(AppError::not_found());
    }
    let change = expenses::ExpenseUpdate { receipt_file_id: Some(Some(form.receipt)), ..Default::default() };
    let r = expenses::update(&state.db, &ctx, &access.principal, expense, &change)
        .await
        .map(|_| ())
        .map_err(AppError::from);
    project_result(&state, csrf, &access, id, "expenses", ProjectForms::default(), r.map_err(as_typed)).await
}
