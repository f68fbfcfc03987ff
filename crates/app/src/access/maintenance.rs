//! The server's own scheduled work that needs to open organizations: signing the audit chain
//! heads of organizations that went quiet, as the audit-maintenance principal (which holds no
//! permission at all).

use std::sync::Arc;

use time::OffsetDateTime;

use crate::audit::chain::Signer;
use crate::platform::db::Db;
use crate::platform::ids::OrgId;

/// One sweep of `audit::chain::sign_due_heads`, opening each due organization as
/// [`super::audit_maintenance`].
pub async fn sign_due_heads(db: &Db, signer: &Signer, now: OffsetDateTime) -> Result<Vec<OrgId>, sqlx::Error> {
    // Region by region: each region's heads are signed in its own database. Not a copy a
    // region move makes or leaves behind, nor while it moves: the sweep writes one region's
    // copy before the other's, and a move that verifies in between finds them different (it
    // must then be run again); a signature in the copy left behind goes with its purge.
    let mut signed = Vec::new();
    for db in db.every_region() {
        let open = |org| {
            let db = &db;
            async move {
                let placed = super::directory::own_copy(db, org, db.region()).await?;
                if placed.is_none_or(|p| p.moving_to.is_some()) {
                    return Ok(None);
                }
                super::audit_maintenance(db, org).await
            }
        };
        signed.extend(crate::audit::chain::sign_due_heads(&db, signer, now, open).await?);
    }
    Ok(signed)
}

/// Runs [`sign_due_heads`] every `audit::chain::SWEEP_EVERY` until `shutdown` changes (in
/// `serve` and `worker`), so a chain's unsigned tail never outlives
/// `audit::chain::SIGNED_HEAD_MAX_AGE`.
pub async fn run_signer(
    db: Db,
    signer: Arc<Signer>,
    clock: crate::platform::clock::SharedClock,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = std::time::Duration::from_secs(crate::audit::chain::SWEEP_EVERY.whole_seconds().unsigned_abs());
    loop {
        match sign_due_heads(&db, &signer, clock.now()).await {
            Ok(signed) if !signed.is_empty() => {
                tracing::info!(organizations = signed.len(), "signed audit chain heads")
            }
            Ok(_) => {}
            Err(e) if crate::platform::db::outage::note(&e) => {}
            Err(e) => tracing::warn!(error = %e, "audit signing sweep: database error"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
