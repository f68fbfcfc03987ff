//! Abuse controls for the public surface: bot checks (and rate limits).
pub mod botcheck;
