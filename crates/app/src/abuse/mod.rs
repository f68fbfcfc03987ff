//! Abuse controls: sliding-window rate limits and bot checks (Turnstile or proof of work).

pub mod botcheck;
pub mod ratelimit;
