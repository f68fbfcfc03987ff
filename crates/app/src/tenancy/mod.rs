//! Organizations, memberships, invitations, roles and permissions.

pub mod allowlist;
pub mod audit_log;
pub mod billing;
pub mod confirm;
pub mod frame;
pub mod guard;
pub mod repo;
pub mod service;
pub mod web;

/// The answer to a write while the organization moves to another region
/// (`clientflow org move`): 503, its data is read-only until the move ends.
pub fn residency_refusal(name: &str) -> crate::platform::error::DomainError {
    crate::platform::error::DomainError::Unavailable(format!(
        "{name} is being moved to another region: its data is read-only until the move is done. Try again in a few minutes."
    ))
}
