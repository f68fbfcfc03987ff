//! Verified keys kept in the process, so that a key used again is not verified again while
//! nothing it was verified against has changed.
//!
//! A key's verification reads a dozen rows (its own, its creator's membership, account and
//! overrides, the organization's role customization, allowlist and deletion request); PostgreSQL
//! spends more on that statement than on a typical request's own query. What it found is kept
//! here with the database's access epoch as that statement read it (`migrations/0056`): every
//! committed change to any of those rows, in any process, raises the epoch, by a trigger in the
//! changing transaction. A request with a kept key opens its organization's transaction only
//! if the epoch's stamp (drawn anew with each raise, so that a failover or a restore that loses
//! raises can't bring back one a process has seen) is still the kept one, checked in the round
//! trip that begins it: unchanged, the kept standing is what verifying again would find, and
//! the request goes on in that transaction; changed, nothing begins, and the key is verified
//! again from scratch.
//!
//! What the epoch can't see is checked on every reuse instead: the key's expiry (a time, not a
//! change), and its last use, written at most once a minute by a verification (so a key used
//! more than a minute after its recorded use is verified again, which records it).
//!
//! Entries are found by the digest of the presented key: only someone presenting the key
//! reaches its entry, and nothing secret is kept. The map is bounded; when it is full, it
//! starts over (every key is then verified once more).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::KeyRequest;
use crate::access::principal::{OrgPrincipal, OrgTx};
use crate::platform::db::Db;
use crate::platform::db::tenant::Writes;

/// The SQLSTATE of `access_epoch_is` when the stamp moved (`migrations/0056`).
const EPOCH_MOVED: &str = "CFA01";

/// At most this many keys are kept (a few hundred bytes each).
const CAPACITY: usize = 10_000;

/// A key's recorded use older than this is recorded again (`verify_in`).
pub(super) const USE_RECORDED_EVERY: time::Duration = time::Duration::seconds(60);

/// The verified keys of this process (one per server: `AppState`).
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], Kept>>,
    reused: AtomicU64,
    verified: AtomicU64,
}

/// What a key's verification found, and the epoch it was found at.
#[derive(Clone)]
pub(super) struct Kept {
    /// The access epoch's stamp when the key was verified.
    pub stamp: uuid::Uuid,
    pub principal: OrgPrincipal,
    pub allowlist: Vec<ipnet::IpNet>,
    pub deletion_scheduled: Option<time::OffsetDateTime>,
    pub expires_at: Option<time::OffsetDateTime>,
    /// The key's last use as recorded in its row when it was verified.
    pub used_at: time::OffsetDateTime,
}

impl KeyCache {
    /// How many requests reused a kept verification, and how many verified their key from
    /// scratch (and found it good).
    pub fn counts(&self) -> (u64, u64) {
        (self.reused.load(Ordering::Relaxed), self.verified.load(Ordering::Relaxed))
    }

    /// The request of a kept key, in its organization's transaction, when nothing it was
    /// verified against has changed since (`None`: verify it).
    pub(super) async fn reopen(
        &self,
        db: &Db,
        digest: &[u8; 32],
        now: time::OffsetDateTime,
        writes: Writes,
    ) -> Result<Option<KeyRequest>, sqlx::Error> {
        let Some(kept) = self.lock().get(digest).cloned() else { return Ok(None) };
        if kept.expires_at.is_some_and(|e| e <= now) || now - kept.used_at > USE_RECORDED_EVERY {
            return Ok(None);
        }
        // The stamp is checked in the round trip that begins the transaction: a moved epoch
        // begins nothing.
        let check = format!("SELECT access_epoch_is('{}')", kept.stamp);
        let tx = match OrgTx::begin_if(db, &kept.principal, &check, writes).await {
            Ok(tx) => tx,
            Err(e) if e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == EPOCH_MOVED) => {
                self.forget(digest);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.reused.fetch_add(1, Ordering::Relaxed);
        Ok(Some(KeyRequest {
            tx: tx.with_nothing_written().await?,
            allowlist: kept.allowlist,
            deletion_scheduled: kept.deletion_scheduled,
        }))
    }

    /// Counts a key verified from scratch and found good.
    pub(super) fn note_verified(&self) {
        self.verified.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps what a verification found.
    pub(super) fn keep(&self, digest: [u8; 32], kept: Kept) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&digest) {
            entries.clear();
        }
        entries.insert(digest, kept);
    }

    /// Drops a key that no longer verifies (or may not).
    pub(super) fn forget(&self, digest: &[u8; 32]) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Kept>> {
        // A panic while the map was held can't leave an entry half written (inserts and
        // removals are whole): the map is still right.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
