//! Abuse resistance: rate limiting now; bot checks (Turnstile, proof of work) will live here too.

pub mod ratelimit;
