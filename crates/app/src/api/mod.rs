//! The public JSON API (`/api/v1`): organization API keys, their guard, request parsing,
//! idempotency, the endpoints over the work domain, and the OpenAPI document.

pub mod extract;
pub mod guard;
pub mod idempotency;
pub mod openapi;
pub mod v1;
pub mod web;

pub use v1::routes;
