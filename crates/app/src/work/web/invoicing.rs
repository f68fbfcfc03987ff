//! Settings → Invoicing (`/o/{org}/settings/invoicing`, Owners and Admins): the invoice
//! prefix, the organization's hourly rate, payment terms, default tax rate and currency.
//! Money and percentages are typed as people write them (`120.50`, `19`); a refused save shows
//! what was typed with each field's message.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};

use super::FormFields;
use crate::access::role::Permission as P;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult, DomainError, FieldError};
use crate::route;
use crate::state::AppState;
use crate::tenancy::frame::{OrgNav, failure, page, page_with_status};
use crate::tenancy::guard::OrgAccess;
use crate::work::invoicing::{self, InvoicingUpdate, parse_percent, parse_rate, show_rate};
use crate::work::money::percent;

#[rustfmt::skip]
pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/o/{org}/settings/invoicing", Surface::Web, Access::Org(P::SettingsManage), settings_page),
        route!(POST "/o/{org}/settings/invoicing", Surface::Web, Access::Org(P::SettingsManage), save),
    ]
}

/// The form's fields as typed.
#[derive(Default)]
struct InvoicingForm {
    invoice_prefix: String,
    hourly_rate: String,
    payment_terms_days: String,
    default_tax_rate: String,
    currency: String,
}

#[derive(Template)]
#[template(path = "work/invoicing_settings.html")]
struct InvoicingPage {
    csrf: String,
    org: OrgNav,
    form: InvoicingForm,
    message: Option<String>,
    errors: Vec<FieldError>,
}

async fn settings_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    let s = invoicing::get(&state.db, &access.principal).await?;
    let form = InvoicingForm {
        invoice_prefix: s.invoice_prefix,
        hourly_rate: show_rate(s.hourly_rate_minor),
        payment_terms_days: s.payment_terms_days.to_string(),
        default_tax_rate: percent(s.default_tax_rate_bp),
        currency: s.currency,
    };
    page(&InvoicingPage { csrf, org: OrgNav::of(&access), form, message: None, errors: vec![] })
}

/// The typed form as the service's update; every field's fault at once.
fn parse(form: &InvoicingForm) -> AppResult<InvoicingUpdate> {
    let mut errors = Vec::new();
    let mut note = |e: DomainError| match e {
        DomainError::Invalid(mut fields) => errors.append(&mut fields),
        other => errors.push(FieldError::new("form", other.to_string())),
    };
    let rate = parse_rate("hourly_rate", &form.hourly_rate).map_err(&mut note).ok();
    let terms = match form.payment_terms_days.trim().parse::<i32>() {
        Ok(d) if (0..=365).contains(&d) => Some(d),
        _ => {
            note(DomainError::field("payment_terms_days", "must be a whole number of days from 0 to 365"));
            None
        }
    };
    let tax = parse_percent("default_tax_rate", &form.default_tax_rate).map_err(&mut note).ok();
    if !errors.is_empty() {
        return Err(AppError::invalid(errors));
    }
    Ok(InvoicingUpdate {
        invoice_prefix: Some(form.invoice_prefix.trim().to_string()),
        hourly_rate_minor: Some(rate.flatten()),
        payment_terms_days: terms,
        default_tax_rate_bp: tax,
        currency: Some(form.currency.trim().to_string()),
    })
}

/// The service names the JSON fields; the form calls two of them differently.
fn form_field(e: DomainError) -> AppError {
    match e {
        DomainError::Invalid(fields) => AppError::invalid(
            fields
                .into_iter()
                .map(|f| match f.field.as_str() {
                    "hourly_rate_minor" => FieldError::new("hourly_rate", f.message),
                    "default_tax_rate_bp" => FieldError::new("default_tax_rate", f.message),
                    _ => f,
                })
                .collect(),
        ),
        other => other.into(),
    }
}

async fn save(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    body: Bytes,
) -> AppResult<Response> {
    const NAMES: [&str; 5] = ["invoice_prefix", "hourly_rate", "payment_terms_days", "default_tax_rate", "currency"];
    let fields = FormFields::parse(&body, |k| NAMES.contains(&k))?.only_once(&NAMES)?;
    let form = InvoicingForm {
        invoice_prefix: fields.get("invoice_prefix").to_string(),
        hourly_rate: fields.get("hourly_rate").to_string(),
        payment_terms_days: fields.get("payment_terms_days").to_string(),
        default_tax_rate: fields.get("default_tax_rate").to_string(),
        currency: fields.get("currency").to_string(),
    };
    let result = match parse(&form) {
        Ok(input) => invoicing::update(&state.db, &ctx, &access.principal, &input).await.map_err(form_field),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/o/{}/settings/invoicing", access.slug)).into_response()),
        Err(e) => {
            let (status, message, errors) = failure(e)?;
            page_with_status(status, &InvoicingPage { csrf, org: OrgNav::of(&access), form, message, errors })
        }
    }
}
