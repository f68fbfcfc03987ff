//! Email: the durable outbox, its delivery worker, transports, and the messages themselves.
//!
//! Actions never send mail directly. They write an outbox row in their own transaction
//! ([`outbox::enqueue`]); the worker delivers it, retrying with backoff, so a crash or a
//! provider outage loses nothing. (Resend, suppression and bounce handling plug in here.)

pub mod config;
pub mod messages;
pub mod outbox;
pub mod transport;
