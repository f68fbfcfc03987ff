//! Who is asking, and what may they do.
//!
//! Each kind of principal has a module that verifies it: a signed-in member ([`member`]), an API
//! key ([`api_key`]), a signed file link ([`file_link`]), a signed export link and the export
//! worker ([`export_link`]), an invitation's holder
//! ([`invitation`]), a visitor of a public contact form ([`contact_form`]), Stripe acting
//! through a verified webhook event ([`stripe_event`]), the operator's
//! command line and the server's own maintenance ([`principal`]). Each yields an
//! [`OrgPrincipal`], the one type that opens the tenant door ([`OrgTx`]). Roles and permissions
//! are in [`role`], what a route declares in [`route`].
//!
//! This is the only place that assumes the platform's gate key (capability transactions, which
//! verifying a principal needs before one exists) and the only implementation of the door's
//! principal traits; `tests/it/door.rs` checks both.

pub mod account;
pub mod api_key;
pub mod asking;
pub mod contact_form;
pub mod departure;
pub mod directory;
pub mod export_link;
pub mod file_link;
pub mod invitation;
pub mod maintenance;
pub mod member;
pub mod principal;
pub mod request_tx;
pub mod requirement;
pub mod role;
pub mod route;
pub mod session;
pub mod stripe_event;
pub mod suspension;
pub mod user;

pub use account::{audit_account_event, audit_account_event_as};
pub use api_key::{API_KEY_PREFIX, open_api_key_request, verify_api_key, verify_api_key_with_allowlist};
pub use asking::Asking;
pub use contact_form::contact_form;
pub use file_link::verify_file_link;
pub use invitation::{
    OpenInvitation, PendingInvitation, begin_invitation_acceptance, begin_invitation_acceptance_by_id,
    begin_invitation_decline, find_invitation, pending_invitations,
};
pub use principal::{
    Actor, NewOrgCreator, OperatorAuthority, OrgPrincipal, OrgTx, ProjectScope, audit_maintenance, begin_import,
    begin_new_organization, key_maintenance, mail_delivery, operator, operator_in_region, scheduled_invoicing,
    scheduled_notifier,
};
pub use stripe_event::stripe_event;
pub use user::AuthenticatedUser;

/// The access layer's key to the platform's capability transactions.
fn gate() -> crate::platform::db::tenant::GateKey {
    crate::platform::db::tenant::GateKey::unsafe_assume_access_layer()
}
