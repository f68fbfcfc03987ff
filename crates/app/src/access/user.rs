//! A signed-in person, verified for this request.

use crate::platform::db::tenant::UserPrincipal;
use crate::platform::ids::UserId;

/// A user whose identity has been verified for this request.
///
/// Only a verified session hands these out (`access::session`, the one caller of
/// [`AuthenticatedUser::from_verified_session`]; the door test checks), so a function that takes
/// `&AuthenticatedUser` can trust the id inside.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    id: UserId,
}

impl AuthenticatedUser {
    /// The user of a session that was just verified (its token's digest found, not expired, the
    /// account enabled).
    pub(crate) fn from_verified_session(id: UserId) -> Self {
        Self { id }
    }

    pub fn id(&self) -> UserId {
        self.id
    }
}

impl UserPrincipal for AuthenticatedUser {
    fn user_id(&self) -> UserId {
        self.id
    }
}
