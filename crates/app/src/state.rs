//! Shared application state handed to every handler.

use std::ops::Deref;
use std::sync::Arc;

use crate::platform::clock::SharedClock;
use crate::platform::config::Config;
use crate::platform::db::Db;
use crate::platform::http::middleware::SecurityHeaders;
use crate::platform::telemetry::Metrics;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppStateInner>,
}

pub struct AppStateInner {
    pub config: Config,
    pub db: Db,
    pub metrics: Metrics,
    pub clock: SharedClock,
    pub security_headers: SecurityHeaders,
}

impl AppState {
    pub fn new(config: Config, db: Db, clock: SharedClock) -> Self {
        let security_headers = SecurityHeaders::new(config.server.hsts_preload);
        Self {
            inner: Arc::new(AppStateInner {
                config,
                db,
                metrics: Metrics::new(),
                clock,
                security_headers,
            }),
        }
    }
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.inner
    }
}
