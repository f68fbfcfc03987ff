//! Organizations, memberships, invitations, roles and permissions.

pub mod allowlist;
pub mod audit_log;
pub mod billing;
pub mod confirm;
pub mod guard;
pub mod repo;
pub mod service;
pub mod web;
