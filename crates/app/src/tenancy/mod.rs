//! Organizations, memberships, roles and permissions.

pub mod repo;
pub mod role;
