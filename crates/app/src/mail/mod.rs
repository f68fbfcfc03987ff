//! Email: the durable outbox and its delivery worker, transports (mail drop, SMTP, Resend),
//! the suppression list and what feeds it (provider webhooks, SMTP refusals, unsubscribe
//! links), and the messages themselves.
//!
//! Actions never send mail directly. They write an outbox row in their own transaction
//! ([`outbox::enqueue`]); the worker delivers it, checking the suppression list at send time
//! and retrying with backoff, so a crash or a provider outage loses nothing.

pub mod category;
pub mod config;
pub mod messages;
pub mod outbox;
pub mod suppression;
pub mod transport;
pub mod unsubscribe;
pub mod web;
pub mod webhook;
