//! ClientFlow: client work for agencies and service teams.
//!
//! Layout (see docs/ARCHITECTURE.md): `platform` is what every area stands on (config, db and
//! the tenant door, HTTP, TLS, telemetry); each domain area owns its routes, SQL and types.

/// The ground floor, its own crate: it depends on nothing of the application.
pub use clientflow_platform as platform;

pub mod abuse;
pub mod access;
pub mod api;
pub mod audit;
pub mod backup;
pub mod billing;
pub mod cli;
pub mod config;
pub mod contact;
pub mod disclosure;
pub mod errors;
pub mod identity;
pub mod mail;
pub mod ops;
pub mod privacy;
pub mod routes;
pub mod state;
pub mod tenancy;
pub mod web;
pub mod work;
