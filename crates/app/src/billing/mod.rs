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

/// Stripe's entry in the sub-processor registry (`disclosure::subprocessors`).
pub fn sub_processor(config: &crate::config::Config) -> crate::platform::subprocessor::SubProcessor {
    crate::platform::subprocessor::SubProcessor {
        id: "stripe",
        name: "Stripe",
        enabled: config.billing.enabled(),
        setting: "billing.stripe_secret_key",
        purpose: "Takes payments for paid plans: Checkout, the customer portal, subscriptions and invoices.",
        receives: &[
            "the organization's name and id, and the paying Owner's email address",
            "the chosen plan's price id",
            "card and billing details, entered by the Owner on Stripe's own pages (never through ClientFlow)",
        ],
        region: "United States (Stripe, Inc.)".into(),
    }
}
