//! Abuse controls: sliding-window rate limits declared on routes, bot checks (Turnstile or
//! proof of work) on the public forms.

pub mod botcheck;
pub mod guard;
pub mod limits;
pub mod ratelimit;
pub mod web;
