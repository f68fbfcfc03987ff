//! The one place where the database's named constraints get their meaning for people: the
//! field each one names and the words they read when their input breaks it. Services let such
//! a violation travel as a database error (`?`); `platform::error::from_db` turns it into a
//! `DomainError::Invalid` on that field, which the HTTP edge shows as a 422 naming it, the same
//! on the web and the API. A constraint that is not here is a generic conflict (409) or a
//! malformed value (400); `tests/it/constraints.rs` checks that every name here
//! exists in the migrated schema, so a renamed constraint can't silently lose its field.

use crate::platform::error::{ConstraintField, name_constraints};

pub const CONSTRAINTS: &[ConstraintField] = &[
    ConstraintField { constraint: "users_email_key", field: "email", message: "already has an account" },
    ConstraintField {
        constraint: "organizations_slug_key",
        field: "slug",
        message: "is already taken; choose another",
    },
    ConstraintField {
        constraint: "organization_directory_slug_key",
        field: "slug",
        message: "is already taken; choose another",
    },
    ConstraintField {
        constraint: "invoices_organization_id_number_key",
        field: "number",
        message: "is already the number of another invoice",
    },
    ConstraintField {
        constraint: "tasks_parent_acyclic",
        field: "parent_id",
        message: "can't be this task's own subtask",
    },
    ConstraintField {
        constraint: "tasks_parent_depth",
        field: "parent_id",
        message: "would nest subtasks more than 5 levels deep",
    },
];

/// Makes the table above the one the error mapping consults (every server and CLI command).
pub fn register() {
    name_constraints(CONSTRAINTS);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_depth_message_states_the_limit() {
        let depth = super::CONSTRAINTS.iter().find(|c| c.constraint == "tasks_parent_depth").unwrap();
        assert!(depth.message.contains(&format!("{} levels", crate::work::tasks::MAX_LEVELS)));
    }

    #[test]
    fn each_constraint_is_named_once() {
        let mut names: Vec<_> = super::CONSTRAINTS.iter().map(|c| c.constraint).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::CONSTRAINTS.len());
    }
}
