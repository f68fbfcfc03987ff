//! People: global user identities.

pub mod repo;

use crate::platform::ids::UserId;

/// A user whose identity has been verified for this request.
///
/// Only the identity module hands these out (from a verified session or credential), so a
/// function that takes `&AuthenticatedUser` can trust the id inside.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    id: UserId,
}

impl AuthenticatedUser {
    pub fn id(&self) -> UserId {
        self.id
    }
}
