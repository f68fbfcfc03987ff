//! Stripe, acting on an organization's billing through a verified webhook event.

use super::directory::Placement;
use super::gate;
use super::principal::{Actor, OrgPrincipal};
use super::role::{PermissionSet, Role};
use crate::platform::db::Db;
use crate::platform::db::tenant::{Capability, GateTx};
use crate::platform::ids::OrgId;

/// The organization a verified Stripe event is about, as a principal that writes billing
/// state and its audit events and nothing else of consequence (no permissions).
///
/// Call only after the event's signature verified (`billing::webhook`): the signature is the
/// whole authorization. The customer id is looked up through its capability
/// (`app.stripe_customer`, the `billing_by_stripe_customer` policy of migration 0031): only
/// the one billing account of that customer is visible. Failing that, `org_hint` (the
/// `client_reference_id` or subscription metadata ClientFlow itself gave Stripe) names the
/// organization, which must exist. `None`: no organization of ours. With the principal comes
/// where the directory places the organization (whether it is moving).
pub async fn stripe_event(
    db: &Db,
    customer: Option<&str>,
    org_hint: Option<OrgId>,
) -> Result<Option<(OrgPrincipal, Placement)>, sqlx::Error> {
    // The customer's billing account is in its organization's region: each is asked in turn,
    // passing over the copy a move makes or leaves behind.
    for region in db.every_region() {
        if let Some(principal) = stripe_event_in(&region, customer, org_hint).await?
            && let Some(placed) = super::directory::own_copy(db, principal.org_id, principal.region).await?
        {
            return Ok(Some((principal, placed)));
        }
    }
    Ok(None)
}

async fn stripe_event_in(
    db: &Db,
    customer: Option<&str>,
    org_hint: Option<OrgId>,
) -> Result<Option<OrgPrincipal>, sqlx::Error> {
    let mut tx = GateTx::begin(db, &gate()).await?;
    let region = tx.region();
    let mut org = None;
    if let Some(customer) = customer.filter(|c| !c.is_empty()) {
        tx.set(Capability::StripeCustomer, customer).await?;
        org = sqlx::query_scalar::<_, OrgId>(
            "SELECT organization_id FROM billing_accounts WHERE stripe_customer_id = $1",
        )
        .bind(customer)
        .fetch_optional(&mut *tx)
        .await?;
    }
    if org.is_none()
        && let Some(hint) = org_hint
    {
        tx.switch_to_tenant(hint).await?;
        let exists: Option<(i32,)> =
            sqlx::query_as("SELECT 1 FROM organizations WHERE id = $1").bind(hint).fetch_optional(&mut *tx).await?;
        org = exists.map(|_| hint);
    }
    tx.commit().await?;
    Ok(org.map(|org_id| OrgPrincipal {
        org_id,
        actor: Actor::System("Stripe".into()),
        role: Role::Client,
        client_id: None,
        permissions: PermissionSet::default(),
        scope_user: None,
        region,
    }))
}
