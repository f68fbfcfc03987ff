//! Owners in control of their data: the organization's export (`export`, its page and worker
//! in `web` and `export_jobs`) and the operator's import of an export (`import`).

pub mod export;
pub mod export_jobs;
pub mod import;
pub mod web;
