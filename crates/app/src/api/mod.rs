//! The public JSON API (`/api/v1`): organization API keys, their guard, idempotency, and the
//! endpoints over the work domain.

pub mod guard;
pub mod keys;
pub mod web;
