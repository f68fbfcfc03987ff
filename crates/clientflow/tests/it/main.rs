//! The integration test binary: every test gets its own database and (where it needs one) its
//! own server on port 0. See `clientflow-test-support`.

mod api;
mod audit;
mod botcheck;
mod catalog;
mod cli;
mod google;
mod http;
mod identity;
mod isolation;
mod mail;
mod operator;
mod ratelimit;
mod support;
mod tenancy;
mod tls;
mod web_work;
mod work;
