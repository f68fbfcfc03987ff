//! An organization scheduled for deletion (`privacy::deletion`): during the grace period only
//! its Owners get in (to cancel, or to export). Members of every other role, its API keys and
//! its client-portal users are refused with a page that says why and until when.

use time::OffsetDateTime;

use super::OrgTx;
use crate::platform::error::DomainError;

/// When the organization open in `tx` is to be purged, if it is scheduled for deletion.
pub async fn deletion_scheduled(tx: &mut OrgTx) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar("SELECT purge_after FROM organization_deletion_requests").fetch_optional(&mut **tx).await
}

/// The refusal: 403 with the reason, for pages and the API alike.
pub fn refusal(name: &str, purge_after: OffsetDateTime) -> DomainError {
    DomainError::Forbidden(format!(
        "{name} is scheduled for deletion on {} (UTC) and is closed to everyone but its Owners until then. \
         Ask an Owner if you think this is a mistake: they can cancel the deletion from the billing settings.",
        purge_after.date()
    ))
}
