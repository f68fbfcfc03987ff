//! Telling "the database can't be reached" apart from a query that failed, and saying so in the
//! log once per outage instead of once per request.
//!
//! [`is_unavailable`] decides. Unreachable means: no connection could be had (refused, reset,
//! TLS, pool timeout, pool closed), or the server ended the session — every error PostgreSQL
//! reports with severity `FATAL` or `PANIC` does (shutting down, connections terminated,
//! `CONNECT` revoked, too many connections), as do the SQLSTATE classes for connection failures
//! (`08…`) and operator intervention (`57P01`–`57P03`). A query error (`ERROR` severity: a
//! constraint, a row-level-security refusal, bad SQL) stays what it is.
//!
//! The first failure of an outage is logged at `ERROR` with its cause; while it lasts, one
//! reminder a minute says how many failures there were since; the first success afterwards
//! logs that the database is back and how long it was away.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// How often an ongoing outage is mentioned again.
pub const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// Whether `e` means the database can't be reached (rather than that one query failed).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let session_ended = db
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            session_ended || code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    }
}

/// The first error in `e`'s chain that says the database can't be reached.
pub fn unavailable_in(e: &anyhow::Error) -> Option<&sqlx::Error> {
    e.chain().filter_map(|c| c.downcast_ref::<sqlx::Error>()).find(|s| is_unavailable(s))
}

/// What the outage log says at a given moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The first failure of an outage.
    Down,
    /// Still down: `failures` since the last line, for `down_for` so far.
    StillDown { failures: u64, down_for: Duration },
    /// Back after `failures` failures in `down_for`.
    Back { failures: u64, down_for: Duration },
}

/// The state behind the log lines, with time passed in (the process-wide one uses the
/// monotonic clock).
#[derive(Debug, Default)]
pub struct OutageLog {
    down: AtomicBool,
    state: Mutex<Spell>,
}

#[derive(Debug, Default)]
struct Spell {
    since: Option<Instant>,
    last_note: Option<Instant>,
    failures_since_note: u64,
    failures: u64,
}

impl OutageLog {
    pub const fn new() -> Self {
        Self {
            down: AtomicBool::new(false),
            state: Mutex::new(Spell { since: None, last_note: None, failures_since_note: 0, failures: 0 }),
        }
    }

    fn spell(&self) -> std::sync::MutexGuard<'_, Spell> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One failure to reach the database; what to log, if anything.
    pub fn failed(&self, now: Instant) -> Option<Note> {
        let mut spell = self.spell();
        spell.failures += 1;
        spell.failures_since_note += 1;
        let Some(since) = spell.since else {
            spell.since = Some(now);
            spell.last_note = Some(now);
            spell.failures_since_note = 0;
            self.down.store(true, Ordering::Release);
            return Some(Note::Down);
        };
        if spell.last_note.is_some_and(|t| now.duration_since(t) >= REMINDER_EVERY) {
            let failures = std::mem::take(&mut spell.failures_since_note);
            spell.last_note = Some(now);
            return Some(Note::StillDown { failures, down_for: now.duration_since(since) });
        }
        None
    }

    /// The database answered; what to log, if anything. Free while it is up.
    pub fn succeeded(&self, now: Instant) -> Option<Note> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        let mut spell = self.spell();
        let since = spell.since.take()?;
        self.down.store(false, Ordering::Release);
        let failures = std::mem::take(&mut spell.failures);
        spell.failures_since_note = 0;
        spell.last_note = None;
        Some(Note::Back { failures, down_for: now.duration_since(since) })
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

static LOG: OutageLog = OutageLog::new();

/// Records a failure to reach the database (`error` says why), logging as [`OutageLog`] says.
pub fn record_failure(error: &dyn std::fmt::Display) {
    match LOG.failed(Instant::now()) {
        Some(Note::Down) => tracing::error!(
            error = %error,
            "database unavailable: requests that need it get 503 until it answers again"
        ),
        Some(Note::StillDown { failures, down_for }) => tracing::error!(
            error = %error,
            failures,
            down_for_secs = down_for.as_secs(),
            "database still unavailable"
        ),
        _ => {}
    }
}

/// Records that the database answered.
pub fn record_success() {
    if let Some(Note::Back { failures, down_for }) = LOG.succeeded(Instant::now()) {
        tracing::warn!(failures, down_for_secs = down_for.as_secs(), "database reachable again");
    }
}

/// Whether the last attempt to reach the database failed.
pub fn is_down() -> bool {
    LOG.is_down()
}

/// Records `e` when it says the database can't be reached; true when it did.
pub fn note(e: &sqlx::Error) -> bool {
    let unavailable = is_unavailable(e);
    if unavailable {
        record_failure(e);
    }
    unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailability_and_query_errors_are_not() {
        let io = |kind| sqlx::Error::Io(std::io::Error::from(kind));
        assert!(is_unavailable(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(is_unavailable(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(is_unavailable(&io(std::io::ErrorKind::UnexpectedEof)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::Protocol("garbled".into())));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
        let wrapped = anyhow::Error::new(io(std::io::ErrorKind::BrokenPipe)).context("loading the session");
        assert!(unavailable_in(&wrapped).is_some());
        assert!(unavailable_in(&anyhow::anyhow!("something else")).is_none());
        assert!(unavailable_in(&anyhow::Error::new(sqlx::Error::RowNotFound)).is_none());
    }

    #[test]
    fn an_outage_is_logged_once_then_once_a_minute_then_when_it_ends() {
        let log = OutageLog::new();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(log.succeeded(t0), None, "nothing to say while up");
        assert_eq!(log.failed(at(0)), Some(Note::Down));
        assert!(log.is_down());
        for i in 0..500 {
            assert_eq!(log.failed(at(1) + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(log.failed(at(60)), Some(Note::StillDown { failures: 501, down_for: Duration::from_secs(60) }));
        assert_eq!(log.failed(at(61)), None);
        assert_eq!(log.failed(at(119)), None);
        assert_eq!(log.failed(at(120)), Some(Note::StillDown { failures: 3, down_for: Duration::from_secs(120) }));
        assert_eq!(log.succeeded(at(130)), Some(Note::Back { failures: 505, down_for: Duration::from_secs(130) }));
        assert!(!log.is_down());
        assert_eq!(log.succeeded(at(131)), None);
        // The next outage starts afresh.
        assert_eq!(log.failed(at(200)), Some(Note::Down));
    }
}
