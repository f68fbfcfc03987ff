//! Operations endpoints: liveness, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::access::route::{Access, RouteDef, Surface};
use crate::platform::db::MigrationStatus;
use crate::route;
use crate::state::AppState;

pub fn routes() -> Vec<RouteDef> {
    vec![
        route!(GET "/healthz", Surface::Ops, Access::Public, healthz),
        route!(GET "/readyz", Surface::Ops, Access::Public, readyz),
        route!(GET "/metrics", Surface::Ops, Access::Operator, metrics),
    ]
}

/// The process is up and serving.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// How the rate limiter decides right now, for `/readyz`: the probe makes a real decision on
/// Redis, so a Redis that answers `PING` but refuses writes reads as degraded too. A degraded
/// limiter is reported but does not make the instance unready: it still limits (with its
/// in-process store), and taking every instance out of rotation because Redis failed would turn
/// a Redis outage into an outage of the whole site.
async fn rate_limiter_check(state: &AppState) -> &'static str {
    let limiter = state.rate_limits.limiter();
    match limiter.probe().await {
        None => "in-process",
        Some(true) => "redis",
        Some(false) => "degraded: Redis is failing (unreachable, or refusing writes), limiting in-process",
    }
}

/// The database answers and its schema matches this binary.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(std::time::Duration::from_secs(3), state.db.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            // Logged once per outage, however often the probe asks.
            if !crate::platform::db::outage::note(&e) {
                tracing::warn!(error = %e, "readiness: database check failed");
            }
            "unreachable".to_string()
        }
        Err(_) => "timeout".to_string(),
    };
    let migrations = if database == "ok" {
        match state.db.migration_status().await {
            Ok(MigrationStatus::Current) => "current".to_string(),
            Ok(MigrationStatus::Pending(v)) => format!("pending: {v:?}"),
            Ok(MigrationStatus::Diverged(why)) => format!("diverged: {why}"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: cannot read migrations");
                "unknown".to_string()
            }
        }
    } else {
        "unknown".to_string()
    };
    let rate_limiter = rate_limiter_check(&state).await;
    let ready = database == "ok" && migrations == "current";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": { "database": database, "migrations": migrations, "rate_limiter": rate_limiter },
    });
    let mut res = (status, Json(body)).into_response();
    if !ready {
        // The body is the useful part here; don't let the error renderer replace it.
        res.extensions_mut().insert(crate::platform::http::error::RenderedByHandler);
    }
    res
}

async fn metrics(State(state): State<AppState>) -> Response {
    // A scrape doubles as a health probe of Redis, so the gauge is current even when no
    // request has needed a decision lately.
    let limiter = state.rate_limits.limiter();
    limiter.probe().await;
    state.metrics.set_rate_limiter_degraded(limiter.is_degraded());
    let (reused, verified) = state.api_keys.counts();
    state.metrics.set_api_key_checks(reused, verified);
    // Dead and suppressed mail is visible to whoever watches the metrics.
    let counts = async {
        let mut tx = state.db.global().await?;
        let counts = crate::mail::outbox::counts(&mut tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(counts)
    }
    .await;
    match counts {
        Ok(counts) => state.metrics.set_outbox_counts(&crate::mail::outbox::STATES, &counts),
        Err(e) => {
            if !crate::platform::db::outage::note(&e) {
                tracing::warn!(error = %e, "metrics: cannot count the outbox");
            }
        }
    }
    // Each region's backups, labelled with the region. They are ours only for a private
    // cluster (the default region's when no `database.url` is set, a further region's when it
    // has no `database_url`); a managed database's are its provider's.
    let private = crate::platform::db::provision::private_regions(&state.config.residency);
    let backups_ours = state.config.database.url.is_none() && state.config.backup.enabled;
    for region_db in state.db.every_region() {
        let region = region_db.region();
        let ours = backups_ours && (region == state.db.home_region() || private.contains(&region));
        if !ours {
            state.metrics.set_backup(region.as_str(), None);
            continue;
        }
        match region_db.backup_status().await {
            Ok(status) => state.metrics.set_backup(region.as_str(), Some(&status)),
            Err(e) => {
                tracing::warn!(error = %e, %region, "metrics: cannot read the backup status");
                state.metrics.set_backup(region.as_str(), Some(&Default::default()));
            }
        }
    }
    let body = state.metrics.render(state.db.pool_usage());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
