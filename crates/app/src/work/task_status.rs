//! A task's status, one of a closed set: what the board's columns are set to, what filters
//! name, and what the API accepts and returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::platform::error::{DomainError, DomainResult};

/// A task's status: the status of the board column it is in (a trigger keeps the two equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[schema(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Blocked,
    Done,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [Self::Todo, Self::InProgress, Self::Blocked, Self::Done];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::InProgress => "in_progress",
            Self::Blocked => "blocked",
            Self::Done => "done",
        }
    }

    /// The status in words, as pages show it.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Todo => "To do",
            Self::InProgress => "In progress",
            Self::Blocked => "Blocked",
            Self::Done => "Done",
        }
    }

    /// A status named in `field` of a form, a filter or a JSON body.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| DomainError::field(field, "must be todo, in_progress, blocked or done"))
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
