//! The transaction a request was verified in, handed on to its work.
//!
//! An API key is verified inside a transaction that then becomes the key's organization
//! transaction ([`super::api_key::open_api_key_request`]); the route guard runs the handler
//! with it as the request transaction (`platform::db::tenant::with_request_tx`), so the
//! handler's `OrgTx` joins it and an API request is one transaction, verification included.

use std::sync::{Arc, Mutex};

use super::OrgTx;

/// The open transaction of a verified request, as a request extension (which must be
/// cloneable): whoever runs the request takes it out once.
#[derive(Clone)]
pub struct VerifiedTx(Arc<Mutex<Option<OrgTx>>>);

impl VerifiedTx {
    pub fn new(tx: OrgTx) -> Self {
        Self(Arc::new(Mutex::new(Some(tx))))
    }

    /// The transaction, the first time it is asked for.
    pub fn take(&self) -> Option<OrgTx> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
