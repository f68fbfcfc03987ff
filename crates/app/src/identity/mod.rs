//! People: accounts, passwords, sessions, two-factor authentication, Google sign-in.

pub mod config;
pub mod events;
pub mod google;
pub mod guard;
pub mod password;
pub mod repo;
pub mod requests;
pub mod return_to;
pub mod service;
pub mod session;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod web;

pub use crate::access::AuthenticatedUser;
