//! Billing with Stripe: plans and their limits (consulted by tenancy and work), the Stripe
//! client, the signed webhook, and each organization's subscription state and dunning.
//!
//! Off unless `billing.stripe_secret_key` is set: then every limit is unlimited. The billing
//! settings page is the tenancy area's (`tenancy::billing`), beside the other settings.

pub mod config;
pub mod limits;
pub mod service;
pub mod stripe;
pub mod webhook;

use crate::access::route::{Access, RouteDef, Surface};
use crate::route;

pub fn routes() -> Vec<RouteDef> {
    vec![route!(POST "/webhooks/stripe", Surface::Ops, Access::Public, webhook::stripe)]
}
