//! An organization's billing account: reading it, and applying what Stripe reports.
//!
//! Every change is audited in the transaction that makes it. States: `none` (never
//! subscribed), `trialing`, `active`, `past_due` (a payment failed: the Owners get a critical
//! mail; after `billing.grace_days` the organization is read-only), `canceled` (back to the
//! free plan's limits). Nothing here deletes anything of the organization.

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::access::OrgTx;
use crate::audit::{self, Context, Entry};
use crate::mail::category::Category;
use crate::mail::outbox::{self, OutgoingMail};
use crate::platform::plans::PlanBook;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub plan: String,
    pub status: String,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub state_at: Option<OffsetDateTime>,
    pub current_period_end: Option<OffsetDateTime>,
    pub past_due_since: Option<OffsetDateTime>,
}

const COLUMNS: &str =
    "plan, status, stripe_customer_id, stripe_subscription_id, state_at, current_period_end, past_due_since";

pub async fn account(tx: &mut OrgTx) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM billing_accounts WHERE organization_id = $1"))
        .bind(tx.org_id())
        .fetch_optional(&mut **tx)
        .await
}

/// The account, made (on the free plan) if there is none, locked for the transaction.
async fn account_for_update(tx: &mut OrgTx, book: &PlanBook, now: OffsetDateTime) -> Result<Account, sqlx::Error> {
    sqlx::query(
        "INSERT INTO billing_accounts (organization_id, plan, updated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tx.org_id())
    .bind(&book.free)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM billing_accounts WHERE organization_id = $1 FOR UPDATE"))
        .bind(tx.org_id())
        .fetch_one(&mut **tx)
        .await
}

fn snapshot(a: &Account) -> Value {
    json!({
        "plan": a.plan, "status": a.status, "stripe_customer_id": a.stripe_customer_id,
        "stripe_subscription_id": a.stripe_subscription_id, "past_due_since": a.past_due_since,
        "current_period_end": a.current_period_end,
    })
}

async fn save(tx: &mut OrgTx, a: &Account, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE billing_accounts SET plan = $2, status = $3, stripe_customer_id = $4, stripe_subscription_id = $5, \
         state_at = $6, current_period_end = $7, past_due_since = $8, updated_at = $9 WHERE organization_id = $1",
    )
    .bind(tx.org_id())
    .bind(&a.plan)
    .bind(&a.status)
    .bind(&a.stripe_customer_id)
    .bind(&a.stripe_subscription_id)
    .bind(a.state_at)
    .bind(a.current_period_end)
    .bind(a.past_due_since)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the Stripe customer made for the organization (before its first checkout).
pub async fn set_customer(tx: &mut OrgTx, ctx: &Context, book: &PlanBook, customer: &str) -> Result<(), sqlx::Error> {
    let before = account_for_update(tx, book, ctx.now).await?;
    if before.stripe_customer_id.as_deref() == Some(customer) {
        return Ok(());
    }
    let after = Account { stripe_customer_id: Some(customer.to_string()), ..before.clone() };
    save(tx, &after, ctx.now).await?;
    audit::record(
        tx,
        ctx,
        Entry::new("billing.customer_created", "billing", tx.org_id())
            .before(snapshot(&before))
            .after(snapshot(&after)),
    )
    .await
}

/// Audits a billing action that changes nothing here (a checkout or portal session started).
pub async fn audit_action(tx: &mut OrgTx, ctx: &Context, action: &str, detail: Value) -> Result<(), sqlx::Error> {
    audit::record(tx, ctx, Entry::new(action, "billing", tx.org_id()).after(detail)).await
}

fn status_of(stripe_status: &str) -> &'static str {
    match stripe_status {
        "trialing" => "trialing",
        "active" => "active",
        "past_due" | "unpaid" => "past_due",
        "canceled" | "incomplete_expired" => "canceled",
        // `incomplete`, `paused`: no paid limits until Stripe says more.
        _ => "none",
    }
}

fn time_at(v: &Value, key: &str) -> Option<OffsetDateTime> {
    v.get(key).and_then(Value::as_i64).and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

/// A subscription object's state applied to the account (the caller decided it is newest).
fn take_subscription(a: &mut Account, book: &PlanBook, sub: &Value, now: OffsetDateTime) {
    let status = status_of(sub.get("status").and_then(Value::as_str).unwrap_or(""));
    if let Some(price) = sub.pointer("/items/data/0/price/id").and_then(Value::as_str)
        && let Some(plan) = book.by_price(price)
    {
        a.plan = plan.id.clone();
    }
    if let Some(id) = sub.get("id").and_then(Value::as_str) {
        a.stripe_subscription_id = Some(id.to_string());
    }
    if let Some(c) = sub.get("customer").and_then(Value::as_str) {
        a.stripe_customer_id = Some(c.to_string());
    }
    a.current_period_end = time_at(sub, "current_period_end").or(a.current_period_end);
    match status {
        "past_due" => a.past_due_since = a.past_due_since.or(Some(now)),
        _ => a.past_due_since = None,
    }
    if status == "canceled" {
        a.plan = book.free.clone();
    }
    a.status = status.to_string();
}

/// Whether an event created at `at` may decide the state (it is not older than the one that did).
fn is_newest(a: &Account, at: OffsetDateTime) -> bool {
    a.state_at.is_none_or(|s| at >= s)
}

/// Applies a verified, first-seen event in the organization's transaction. Returns whether
/// critical mail was queued.
#[allow(clippy::too_many_arguments)]
pub async fn apply_event(
    tx: &mut OrgTx,
    ctx: &Context,
    book: &PlanBook,
    public_url: &str,
    event_id: &str,
    kind: &str,
    at: OffsetDateTime,
    object: &Value,
    fresh_subscription: Option<&Value>,
) -> Result<bool, sqlx::Error> {
    let before = account_for_update(tx, book, ctx.now).await?;
    let mut after = before.clone();
    let mut mail = false;
    match kind {
        "checkout.session.completed" => {
            if let Some(c) = object.get("customer").and_then(Value::as_str) {
                after.stripe_customer_id = Some(c.to_string());
            }
            if let Some(s) = object.get("subscription").and_then(Value::as_str) {
                after.stripe_subscription_id = Some(s.to_string());
            }
            // Only when no subscription event has said anything yet: a later-created one
            // that arrived first stays in force.
            if after.status == "none"
                && let Some(sub) = fresh_subscription
                && is_newest(&after, at)
            {
                take_subscription(&mut after, book, sub, ctx.now);
                after.state_at = Some(at);
            }
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted"
            if is_newest(&after, at) =>
        {
            let mut sub = object.clone();
            if kind == "customer.subscription.deleted" {
                sub["status"] = json!("canceled");
            }
            take_subscription(&mut after, book, &sub, ctx.now);
            after.state_at = Some(at);
        }
        "invoice.paid" if is_newest(&after, at) && after.status == "past_due" => {
            after.status = "active".into();
            after.past_due_since = None;
            after.state_at = Some(at);
        }
        "invoice.payment_failed"
            if is_newest(&after, at) && matches!(after.status.as_str(), "active" | "trialing" | "past_due") =>
        {
            after.status = "past_due".into();
            after.past_due_since = after.past_due_since.or(Some(ctx.now));
            after.state_at = Some(at);
            mail = dunning_mail(tx, book, public_url, event_id, ctx.now).await?;
        }
        "customer.deleted" => {
            after.stripe_customer_id = None;
            after.stripe_subscription_id = None;
            after.status = "canceled".into();
            after.plan = book.free.clone();
            after.past_due_since = None;
            after.state_at = Some(after.state_at.map_or(at, |s| s.max(at)));
        }
        _ => {}
    }
    save(tx, &after, ctx.now).await?;
    let action = format!("billing.{}", kind.replace("customer.", "").replace('.', "_"));
    audit::record(
        tx,
        ctx,
        Entry::new(&action, "billing", tx.org_id())
            .before(snapshot(&before))
            .after(json!({ "event_id": event_id, "account": snapshot(&after) })),
    )
    .await?;
    Ok(mail)
}

/// Queues the critical "payment failed" mail to every active Owner (bypasses suppression).
async fn dunning_mail(
    tx: &mut OrgTx,
    book: &PlanBook,
    public_url: &str,
    event_id: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let (org_name, slug): (String, String) = sqlx::query_as("SELECT name, slug FROM organizations WHERE id = $1")
        .bind(tx.org_id())
        .fetch_one(&mut **tx)
        .await?;
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND m.role = 'owner' AND m.status = 'active' ORDER BY u.email",
    )
    .bind(tx.org_id())
    .fetch_all(&mut **tx)
    .await?;
    let link = format!("{public_url}/o/{slug}/settings/billing");
    for to in &owners {
        let mail = OutgoingMail {
            to: to.clone(),
            subject: format!("Payment failed for {org_name}"),
            body: format!(
                "A payment for {org_name}'s ClientFlow subscription failed.\n\n\
                 Update the payment method on the billing page:\n\n{link}\n\n\
                 If it isn't paid within {} days, {org_name} becomes read-only until it is. Nothing is deleted.\n\n-- \nClientFlow\n",
                book.grace_days
            ),
            category: Category::Critical,
            org_name: Some(org_name.clone()),
        };
        outbox::enqueue(tx, &mail, &format!("billing-payment-failed:{event_id}:{to}"), now).await?;
    }
    Ok(!owners.is_empty())
}
