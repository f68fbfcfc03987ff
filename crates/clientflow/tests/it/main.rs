//! The integration test binary: every test gets its own database and (where it needs one) its
//! own server on port 0. See `clientflow-test-support`.

mod allowlist;
mod api;
mod api_edits;
mod api_fields;
mod audit;
mod botcheck;
mod botcheck_forms;
mod catalog;
mod cli;
mod connections;
mod contact;
mod database_outage;
mod door;
mod google;
mod http;
mod idempotency;
mod identity;
mod input;
mod isolation;
mod keys;
mod layers;
mod logs;
mod mail;
mod matrix;
mod migrations;
mod operator;
mod ratelimit;
mod ratelimit_http;
mod schemathesis;
mod support;
mod task_tree;
mod tenancy;
mod tls;
mod web_work;
mod work;
