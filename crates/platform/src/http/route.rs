//! The route table is data: every route is a [`RouteDef`] declaring its method, path, surface,
//! the access it requires and its rate limits. What an access requirement or a limit *is*
//! belongs to the application (`access::route`); the platform only carries the declarations,
//! so the router is assembled from them and tests walk the same table.

use axum::http::Method;
use axum::routing::MethodRouter;

/// Which surface a route belongs to: decides how errors are rendered (problem+json on the API
/// and operations endpoints, a page on the web) and how a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Web,
    Api,
    Ops,
}

/// One route: `A` is the application's access requirement, `L` its rate-limit declaration,
/// `S` the handlers' state.
pub struct RouteDef<A, L, S> {
    pub method: Method,
    pub path: &'static str,
    pub access: A,
    pub surface: Surface,
    /// Rate limits, checked by the route guard in this order.
    pub limits: Vec<L>,
    pub handler: MethodRouter<S>,
    /// Whether a request of a safe method (`GET`, `HEAD`) may write. An API request of a safe
    /// method runs in a transaction that refuses writes unless its route declares that reading
    /// it writes something ([`RouteDef::writes_when_read`]); an organization page's transaction
    /// may always write (it keeps the session's idle clock).
    pub writes_when_read: bool,
}

impl<A, L: Clone, S> RouteDef<A, L, S> {
    pub fn new(
        method: Method,
        path: &'static str,
        surface: Surface,
        access: A,
        limits: Vec<L>,
        handler: MethodRouter<S>,
    ) -> Self {
        Self { method, path, access, surface, limits, handler, writes_when_read: false }
    }

    /// Declares that a safe-method request of this route writes (issuing a file's download link
    /// records it in the audit log), so its transaction must accept writes:
    /// `route!(GET "/api/v1/files/{file}", …).writes_when_read()`. A route that writes without
    /// saying so fails with a 500 rather than losing what it wrote.
    pub fn writes_when_read(mut self) -> Self {
        self.writes_when_read = true;
        self
    }

    /// Declares rate limits on this route, checked in this order after those it has:
    /// `route!(POST "/login", …).limited(&[AUTH_PER_IP, SIGN_IN_PER_ACCOUNT])`.
    pub fn limited(mut self, limits: &[L]) -> Self {
        self.limits.extend_from_slice(limits);
        self
    }
}
