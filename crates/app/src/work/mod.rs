//! The work domain: clients, projects (tasks, invoices and files follow the same pattern).

pub mod clients;
pub mod projects;
