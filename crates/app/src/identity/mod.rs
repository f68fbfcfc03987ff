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

use crate::platform::ids::UserId;

/// A user whose identity has been verified for this request.
///
/// Only the identity module hands these out (from a verified session), so a function that
/// takes `&AuthenticatedUser` can trust the id inside.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    id: UserId,
}

impl AuthenticatedUser {
    pub fn id(&self) -> UserId {
        self.id
    }
}
