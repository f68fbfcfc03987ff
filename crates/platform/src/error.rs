//! What a service can decide, in the domain's words.
//!
//! Services (the functions the areas call each other and their handlers through) return
//! [`DomainResult`]: they say *what* happened — the input breaks a rule on a named field, the
//! thing isn't there for this tenant, the plan doesn't allow it, the database can't be reached —
//! and never how it is shown. The HTTP edge (`http/error.rs`) turns a [`DomainError`] into a
//! status and an RFC 9457 problem in one place; the CLI turns it into a message. This module
//! knows nothing of HTTP.
//!
//! It is also where a database error gets its meaning ([`from_db`]): a violated constraint the
//! application named is an error on the field it names, a reference into another tenant is
//! [`DomainError::NotFound`], an outage is [`DomainError::DatabaseUnavailable`].

use serde::Serialize;

/// One field of the input and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The field as a person filling in the form knows it: "Client" for `client_id`, "Due
    /// date" for `due_date` (pages speak in labels, the API in field names).
    pub fn label(&self) -> String {
        let name = self.field.strip_suffix("_id").unwrap_or(&self.field);
        let name = match name {
            "spent_on" => "date",
            "user" => "person",
            "minutes" => "time",
            other => other,
        };
        let mut words = name.replace(['_', '.'], " ");
        if let Some(first) = words.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        words
    }
}

/// The outcomes a service decides. Messages are safe to show to the person asking; the cause
/// of an [`DomainError::Internal`] never is.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a rule on the named fields.
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    /// A value can't be understood (an unknown or expired link, an event without an id…).
    #[error("malformed: {0}")]
    Malformed(String),
    /// The credentials were not accepted.
    #[error("not authenticated: {0}")]
    NotAuthenticated(String),
    /// The asker may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The thing does not exist, or not for this tenant (the two are not told apart).
    #[error("not found")]
    NotFound,
    /// The action contradicts the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The content is larger than allowed (an uploaded file).
    #[error("too large")]
    TooLarge,
    /// The content is of a kind that is not accepted (an uploaded file's type).
    #[error("unsupported type: {0}")]
    UnsupportedType(String),
    /// Too many attempts: wait `retry_after_secs` (a locked sign-in, for example).
    #[error("throttled: {message}")]
    Throttled { message: String, retry_after_secs: u64 },
    /// The organization's plan doesn't allow this: `limit` names the limit (`projects`,
    /// `seats`…), `upgrade` where to raise it.
    #[error("plan limit: {limit}")]
    PlanLimit { limit: &'static str, message: String, upgrade: String },
    /// Something this needs is not available now (an organization being moved, a third party
    /// that doesn't answer).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database can't be reached (see `db::outage`); logged once per outage rather than
    /// per request.
    #[error("database unavailable")]
    DatabaseUnavailable,
    /// A bug or a failure the asker can do nothing about; the cause is for the log only.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// The input's `field` breaks a rule, said by `message`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        DomainError::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        DomainError::Internal(anyhow::anyhow!("{e}"))
    }

    /// An internal error is that, unless its chain holds a failure to reach the database.
    pub fn reclassified(self) -> Self {
        match self {
            DomainError::Internal(cause) => DomainError::from(cause),
            other => other,
        }
    }
}

impl From<anyhow::Error> for DomainError {
    /// An error whose chain holds a failure to reach the database is that, not an internal
    /// error, however deep it was wrapped.
    fn from(e: anyhow::Error) -> Self {
        match crate::db::outage::unavailable_in(&e) {
            Some(cause) => {
                crate::db::outage::record_failure(cause);
                DomainError::DatabaseUnavailable
            }
            None => DomainError::Internal(e),
        }
    }
}

impl From<sqlx::Error> for DomainError {
    fn from(e: sqlx::Error) -> Self {
        from_db(e)
    }
}

/// What a named database constraint means to the person whose input broke it: the field it
/// names and the message they read. The application states its constraints in one table
/// ([`name_constraints`]); a violation of one of them is an error on that field instead of a
/// generic conflict.
#[derive(Debug)]
pub struct ConstraintField {
    pub constraint: &'static str,
    pub field: &'static str,
    pub message: &'static str,
}

static CONSTRAINTS: std::sync::OnceLock<&'static [ConstraintField]> = std::sync::OnceLock::new();

/// Registers the application's table of constraint names (once; later calls keep the first).
pub fn name_constraints(table: &'static [ConstraintField]) {
    let _ = CONSTRAINTS.set(table);
}

/// The field a violated constraint names, if the application stated it.
pub fn constraint_field(e: &sqlx::Error) -> Option<&'static ConstraintField> {
    let name = e.as_database_error()?.constraint()?;
    CONSTRAINTS.get()?.iter().find(|c| c.constraint == name)
}

/// What a database error means to the asker. A foreign-key or row-level-security violation is
/// a reference to something that doesn't exist *for this tenant*: [`DomainError::NotFound`], so
/// a foreign id can't be told apart from a missing one. A unique or check violation of a
/// constraint the application named is an error on the field it names.
pub fn from_db(e: sqlx::Error) -> DomainError {
    if crate::db::outage::note(&e) {
        return DomainError::DatabaseUnavailable;
    }
    if let Some(c) = constraint_field(&e)
        && matches!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("23505" | "23514" | "23P01"))
    {
        return DomainError::field(c.field, c.message);
    }
    match &e {
        sqlx::Error::RowNotFound => DomainError::NotFound,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => DomainError::Conflict("A record with these values already exists.".into()),
            Some("23503") => DomainError::NotFound,
            Some("42501") => DomainError::NotFound,
            Some("23514") | Some("22001") | Some("23502") => {
                DomainError::Malformed("A value is out of the allowed range.".into())
            }
            Some("22P02") => DomainError::Malformed("A value has the wrong format.".into()),
            _ => DomainError::Internal(anyhow::Error::new(e)),
        },
        _ => DomainError::Internal(anyhow::Error::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_an_outage_and_a_query_error_is_not() {
        let refused = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for e in [
            from_db(refused()),
            from_db(sqlx::Error::PoolTimedOut),
            DomainError::from(refused()),
            DomainError::from(anyhow::Error::new(refused()).context("loading")),
            DomainError::Internal(anyhow::Error::new(refused())).reclassified(),
        ] {
            assert!(matches!(e, DomainError::DatabaseUnavailable), "{e:?}");
        }
        assert!(matches!(from_db(sqlx::Error::RowNotFound), DomainError::NotFound));
        assert!(matches!(from_db(sqlx::Error::Protocol("x".into())), DomainError::Internal(_)));
        assert!(matches!(DomainError::from(anyhow::anyhow!("a bug")), DomainError::Internal(_)));
        assert!(matches!(DomainError::internal("a bug").reclassified(), DomainError::Internal(_)));
    }

    /// A database error as PostgreSQL would report it: its SQLSTATE and the constraint.
    #[derive(Debug)]
    struct Pg {
        code: &'static str,
        constraint: Option<&'static str>,
    }

    impl std::fmt::Display for Pg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.code)
        }
    }

    impl std::error::Error for Pg {}

    impl sqlx::error::DatabaseError for Pg {
        fn message(&self) -> &str {
            "a database error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }
        fn constraint(&self) -> Option<&str> {
            self.constraint
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn pg(code: &'static str, constraint: Option<&'static str>) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Pg { code, constraint }))
    }

    #[test]
    fn database_errors_are_classified_for_the_asker() {
        static NAMED: &[ConstraintField] =
            &[ConstraintField { constraint: "things_name_key", field: "name", message: "is already taken" }];
        name_constraints(NAMED);
        // A named constraint is its field, for unique, check and exclusion violations.
        for code in ["23505", "23514", "23P01"] {
            match from_db(pg(code, Some("things_name_key"))) {
                DomainError::Invalid(f) => assert_eq!(f, vec![FieldError::new("name", "is already taken")], "{code}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        // An unnamed one keeps its generic meaning.
        assert!(matches!(from_db(pg("23505", Some("other_key"))), DomainError::Conflict(_)));
        // A reference into another tenant (or to nothing) and a row-level-security refusal
        // look exactly like a missing row.
        assert!(matches!(from_db(pg("23503", Some("things_owner_fkey"))), DomainError::NotFound));
        assert!(matches!(from_db(pg("42501", None)), DomainError::NotFound));
        for code in ["23514", "22001", "23502"] {
            assert!(matches!(from_db(pg(code, None)), DomainError::Malformed(ref m) if m.contains("range")), "{code}");
        }
        assert!(matches!(from_db(pg("22P02", None)), DomainError::Malformed(ref m) if m.contains("format")));
        assert!(matches!(from_db(pg("42P01", None)), DomainError::Internal(_)));
        // The server going away is an outage, not a bug.
        assert!(matches!(from_db(pg("57P01", None)), DomainError::DatabaseUnavailable));
    }

    #[test]
    fn a_field_error_names_its_field() {
        match DomainError::field("name", "must not be empty") {
            DomainError::Invalid(errs) => assert_eq!(errs, vec![FieldError::new("name", "must not be empty")]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn labels_read_like_the_form() {
        assert_eq!(FieldError::new("client_id", "x").label(), "Client");
        assert_eq!(FieldError::new("due_date", "x").label(), "Due date");
        assert_eq!(FieldError::new("spent_on", "x").label(), "Date");
    }
}
