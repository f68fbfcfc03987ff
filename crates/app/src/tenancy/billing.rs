//! The billing settings page (`/o/{org}/settings/billing`), for whoever holds
//! `billing.manage` (the Owners: no other role can be given it, and no API key).
//!
//! It shows the plan and its state, usage against each limit, the invoices and receipts Stripe
//! holds, and the ways to change: upgrading goes through a Stripe Checkout Session
//! (subscription mode), payment method and cancelation through the Customer Portal. Every route
//! here is under the billing rate limit and every action is audited in its transaction. When
//! Stripe can't be reached the page says so and the rest of the product never notices. Billing
//! off (no Stripe configured): the page says there are no limits.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::frame::{OrgNav, page, page_with_status};
use super::guard::OrgAccess;
use crate::abuse::limits::BILLING_PER_ORG;
use crate::access::OrgTx;
use crate::access::role::Permission;
use crate::access::route::{Access, RouteDef, Surface};
use crate::audit::Context;
use crate::billing::limits::{self, Resource};
use crate::billing::service;
use crate::identity::guard::FormToken;
use crate::platform::http::error::{AppError, AppResult};
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    let p = Permission::BillingManage;
    vec![
        route!(GET "/o/{org}/settings/billing", Surface::Web, Access::Org(p), billing_page).limited(&[BILLING_PER_ORG]),
        route!(POST "/o/{org}/settings/billing/checkout", Surface::Web, Access::Org(p), checkout)
            .limited(&[BILLING_PER_ORG]),
        route!(POST "/o/{org}/settings/billing/portal", Surface::Web, Access::Org(p), portal)
            .limited(&[BILLING_PER_ORG]),
    ]
}

pub struct UsageRow {
    pub label: &'static str,
    pub used: String,
    pub allowed: String,
    pub over: bool,
}

pub struct PlanOption {
    pub id: String,
    pub name: String,
    pub summary: String,
    pub current: bool,
}

pub struct InvoiceRow {
    pub number: String,
    pub date: String,
    pub amount: String,
    pub status: String,
    pub url: Option<String>,
}

#[derive(Template)]
#[template(path = "tenancy/billing.html")]
struct BillingPage {
    csrf: String,
    org: OrgNav,
    enabled: bool,
    plan_name: String,
    status: String,
    read_only: bool,
    read_only_from: Option<String>,
    has_customer: bool,
    usage: Vec<UsageRow>,
    plans: Vec<PlanOption>,
    invoices: Vec<InvoiceRow>,
    /// Why the invoices (or an action) could not be had from Stripe.
    stripe_problem: Option<String>,
    message: Option<String>,
}

fn status_label(s: &str) -> &'static str {
    match s {
        "trialing" => "Trial",
        "active" => "Active",
        "past_due" => "Payment overdue",
        "canceled" => "Canceled (free plan limits apply; nothing was deleted)",
        _ => "No subscription",
    }
}

fn limits_summary(plan: &crate::platform::plans::Plan) -> String {
    Resource::ALL
        .iter()
        .map(|r| {
            let v = r.limit_of(plan).map_or_else(|| "unlimited".to_string(), |n| r.show(n));
            format!("{}: {v}", r.as_str().replace('_', " "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn view(state: &AppState, csrf: String, access: &OrgAccess, message: Option<String>) -> AppResult<BillingPage> {
    let org = OrgNav::of(access);
    let Some(book) = state.plans.as_deref() else {
        return Ok(BillingPage {
            csrf,
            org,
            enabled: false,
            plan_name: "Self-hosted".into(),
            status: "Billing is off".into(),
            read_only: false,
            read_only_from: None,
            has_customer: false,
            usage: vec![],
            plans: vec![],
            invoices: vec![],
            stripe_problem: None,
            message,
        });
    };
    let now = state.clock.now();
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let account = service::account(&mut tx).await?;
    let standing = limits::standing(book, account.as_ref(), now);
    let mut usage = Vec::new();
    for r in Resource::ALL {
        let used = limits::usage(&mut tx, r, now).await?;
        let limit = r.limit_of(&standing.plan);
        usage.push(UsageRow {
            label: r.label(),
            used: r.show(used),
            allowed: limit.map_or_else(|| "Unlimited".into(), |n| r.show(n)),
            over: limit.is_some_and(|n| used > n),
        });
    }
    tx.commit().await?;
    let plans = book
        .plans
        .iter()
        .filter(|p| p.price_id.is_some())
        .map(|p| PlanOption {
            id: p.id.clone(),
            name: p.name.clone(),
            summary: limits_summary(p),
            current: p.id == standing.plan.id,
        })
        .collect();
    let customer = account.as_ref().and_then(|a| a.stripe_customer_id.clone());
    let (invoices, stripe_problem) = match (&state.stripe, &customer) {
        (Some(client), Some(customer)) => match client.invoices(customer).await {
            Ok(list) => (list.into_iter().map(invoice_row).collect(), None),
            Err(e) => {
                tracing::warn!(error = %e, "billing page: invoices unavailable");
                (vec![], Some(stripe_unreachable()))
            }
        },
        _ => (vec![], None),
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Ok(BillingPage {
        csrf,
        org,
        enabled: true,
        plan_name: standing.plan.name.clone(),
        status: status_label(&standing.status).into(),
        read_only: standing.read_only,
        read_only_from: standing.read_only_from.and_then(|t| t.format(fmt).ok()),
        has_customer: customer.is_some(),
        usage,
        plans,
        invoices,
        stripe_problem,
        message,
    })
}

fn stripe_unreachable() -> String {
    "Stripe can't be reached right now, so invoices and plan changes are unavailable. Everything else works; \
     try again in a few minutes."
        .into()
}

fn invoice_row(i: crate::billing::stripe::Invoice) -> InvoiceRow {
    let date = time::OffsetDateTime::from_unix_timestamp(i.created)
        .ok()
        .and_then(|t| t.format(time::macros::format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_default();
    let cents = if i.amount_paid > 0 { i.amount_paid } else { i.amount_due };
    InvoiceRow {
        number: i.number.unwrap_or(i.id),
        date,
        amount: format!("{}.{:02} {}", cents / 100, cents % 100, i.currency.to_uppercase()),
        // Stripe's invoice statuses, in words.
        status: match i.status.as_deref() {
            Some("draft") => "Draft",
            Some("open") => "Due",
            Some("paid") => "Paid",
            Some("uncollectible") => "Uncollectible",
            Some("void") => "Void",
            _ => "",
        }
        .to_string(),
        url: i
            .hosted_invoice_url
            .or(i.invoice_pdf)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://127.0.0.1")),
    }
}

async fn billing_page(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    access: OrgAccess,
) -> AppResult<Response> {
    page(&view(&state, csrf, &access, None).await?)
}

/// The page again, with what went wrong (a Stripe outage: 503).
async fn again(
    state: &AppState,
    csrf: String,
    access: &OrgAccess,
    status: StatusCode,
    message: String,
) -> AppResult<Response> {
    let mut v = view(state, csrf, access, Some(message)).await?;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        v.stripe_problem = Some(stripe_unreachable());
    }
    page_with_status(status, &v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutForm {
    plan: String,
}

fn stripe_error(e: crate::billing::stripe::StripeError) -> (StatusCode, String) {
    tracing::warn!(error = %e, "billing action: Stripe failed");
    match e {
        crate::billing::stripe::StripeError::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Stripe can't be reached right now; nothing was changed.".into())
        }
        crate::billing::stripe::StripeError::Api { .. } => {
            (StatusCode::BAD_GATEWAY, "Stripe refused the request; nothing was changed.".into())
        }
    }
}

/// The Stripe customer of the organization, made on first use (idempotent per organization).
async fn customer(state: &AppState, ctx: &Context, access: &OrgAccess) -> Result<String, (StatusCode, String)> {
    let (book, client) = match (state.plans.as_deref(), state.stripe.as_ref()) {
        (Some(b), Some(c)) => (b, c),
        _ => return Err((StatusCode::NOT_FOUND, "Billing is off.".into())),
    };
    let internal = |e: sqlx::Error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}"));
    let mut tx = OrgTx::begin(&state.db, &access.principal).await.map_err(internal)?;
    let known = service::account(&mut tx).await.map_err(internal)?.and_then(|a| a.stripe_customer_id);
    if let Some(c) = known {
        tx.commit().await.map_err(internal)?;
        return Ok(c);
    }
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(access.principal.user_id())
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?
        .unwrap_or_default();
    let id = client.create_customer(&tx.org_id().to_string(), &access.name, &email).await.map_err(stripe_error)?;
    service::set_customer(&mut tx, ctx, book, &id).await.map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    Ok(id)
}

async fn checkout(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(form): Form<CheckoutForm>,
) -> AppResult<Response> {
    let (Some(book), Some(client)) = (state.plans.as_deref(), state.stripe.as_ref()) else {
        // Billing off: nothing to buy; the page says why.
        return Ok(Redirect::to(&format!("/o/{}/settings/billing", access.slug)).into_response());
    };
    let Some(price) = book.plan(&form.plan).and_then(|p| p.price_id.clone()) else {
        return Err(AppError::field("plan", "is not a plan that can be bought"));
    };
    let customer = match customer(&state, &ctx, &access).await {
        Ok(c) => c,
        Err((StatusCode::INTERNAL_SERVER_ERROR, m)) => return Err(AppError::internal(m)),
        Err((StatusCode::NOT_FOUND, _)) => return Err(AppError::not_found()),
        Err((status, m)) => return again(&state, csrf, &access, status, m).await,
    };
    let base = format!("{}/o/{}/settings/billing", state.config.public_url(), access.slug);
    let key = format!("checkout-{}", uuid::Uuid::now_v7());
    let org = access.principal.org_id().to_string();
    match client.create_checkout_session(&customer, &price, &org, &format!("{base}?checkout=done"), &base, &key).await {
        Ok(url) => {
            let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
            service::audit_action(&mut tx, &ctx, "billing.checkout_started", json!({ "plan": form.plan })).await?;
            tx.commit().await?;
            Ok(Redirect::to(&url).into_response())
        }
        Err(e) => {
            let (status, m) = stripe_error(e);
            again(&state, csrf, &access, status, m).await
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalForm {}

async fn portal(
    State(state): State<AppState>,
    FormToken(csrf): FormToken,
    ctx: Context,
    access: OrgAccess,
    Form(_form): Form<PortalForm>,
) -> AppResult<Response> {
    let Some(client) = state.stripe.as_ref() else {
        return Ok(Redirect::to(&format!("/o/{}/settings/billing", access.slug)).into_response());
    };
    let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
    let customer = service::account(&mut tx).await?.and_then(|a| a.stripe_customer_id);
    tx.commit().await?;
    let Some(customer) = customer else {
        return again(&state, csrf, &access, StatusCode::CONFLICT, "There is no subscription to manage yet.".into())
            .await;
    };
    let back = format!("{}/o/{}/settings/billing", state.config.public_url(), access.slug);
    let key = format!("portal-{}", uuid::Uuid::now_v7());
    match client.create_portal_session(&customer, &back, &key).await {
        Ok(url) => {
            let mut tx = OrgTx::begin(&state.db, &access.principal).await?;
            service::audit_action(&mut tx, &ctx, "billing.portal_opened", json!({})).await?;
            tx.commit().await?;
            Ok(Redirect::to(&url).into_response())
        }
        Err(e) => {
            let (status, m) = stripe_error(e);
            again(&state, csrf, &access, status, m).await
        }
    }
}
