//! The platform: what every domain area stands on.

pub mod clock;
pub mod config;
pub mod crypto;
pub mod currency;
pub mod db;
pub mod error;
pub mod error_reports;
pub mod fields;
pub mod fsutil;
pub mod html;
pub mod http;
pub mod ids;
pub mod keys;
pub mod net;
pub mod plans;
pub mod seal;
pub mod sealed_stream;
pub mod secret;
pub mod storage;
pub mod subprocessor;
pub mod telemetry;
pub mod types;
pub mod tz;
