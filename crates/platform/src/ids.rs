//! Identifier newtypes. An `OrgId` can't be passed where a `ClientId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered identifier (UUIDv7: good index locality).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// An organization (tenant).
    OrgId
);
id_type!(
    /// A person's global identity.
    UserId
);
id_type!(
    /// A client record of an organization.
    ClientId
);
id_type!(
    /// A project of an organization.
    ProjectId
);
id_type!(
    /// A contact person of a client.
    ContactId
);
id_type!(
    /// A board column of a project.
    ColumnId
);
id_type!(
    /// A task of a project.
    TaskId
);
id_type!(
    /// A comment on a task.
    CommentId
);
id_type!(
    /// A time entry.
    TimeEntryId
);
id_type!(
    /// An expense recorded on a project.
    ExpenseId
);
id_type!(
    /// An invoice.
    InvoiceId
);
id_type!(
    /// A payment against an invoice.
    PaymentId
);
id_type!(
    /// An invoice's repeat: the schedule it is copied on.
    RepeatId
);
id_type!(
    /// A stored file.
    FileId
);
