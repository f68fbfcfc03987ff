//! People: accounts, passwords, sessions, two-factor authentication, Google sign-in.

pub mod account_deletion;
pub mod config;
pub mod events;
pub mod google;
pub mod guard;
pub mod oidc;
pub mod password;
pub mod repo;
pub mod requests;
pub mod return_to;
pub mod service;
/// Sessions are stored and resolved by the access layer (they say who is asking); the sign-in
/// flows here create and end them.
pub use crate::access::session;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod web;

pub use crate::access::AuthenticatedUser;

/// A moment of an account's life as its pages and mail show it, in UTC to the minute.
pub fn when(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&fmt).unwrap_or_default()
}
