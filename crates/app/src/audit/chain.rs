//! Verifying the chain, signed checkpoints, retention.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use futures::TryStreamExt;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use super::{STORED_COLUMNS, StoredEvent};
use crate::platform::db::Db;
use crate::platform::db::tenant::{OrgTx, TenantPrincipal};
use crate::platform::ids::OrgId;
use crate::platform::secret::Secret;

/// How often (at most) the head of an active organization's chain is signed.
pub const SIGN_EVERY: Duration = Duration::hours(1);
/// How often `serve` and `worker` look for heads that are due for a signature.
pub const SWEEP_EVERY: Duration = Duration::minutes(5);
/// Slack for clock differences between servers and a sweep that runs late.
pub const SIGNING_GRACE: Duration = Duration::minutes(15);
/// The verifier's rule: an event newer than the newest signed checkpoint is acceptable only
/// while that checkpoint is younger than this. Appends sign the head when the newest signed
/// checkpoint is older than [`SIGN_EVERY`] (so the first event of a chain is always signed,
/// in its own transaction), and the sweep signs any head with unsigned events once the newest
/// signed checkpoint is older than [`SIGN_EVERY`] — so on an honest installation the unsigned
/// tail of a chain is never older than `SIGN_EVERY + SWEEP_EVERY`.
pub const SIGNED_HEAD_MAX_AGE: Duration =
    Duration::seconds(SIGN_EVERY.whole_seconds() + SWEEP_EVERY.whole_seconds() + SIGNING_GRACE.whole_seconds());

/// What a checkpoint marks: a signed chain head, or where retention cut the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    Signed,
    Retention,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Retention => "retention",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "signed" => Some(Self::Signed),
            "retention" => Some(Self::Retention),
            _ => None,
        }
    }
}

/// The Ed25519 key that signs chain heads and retention cuts.
pub struct Signer {
    key: SigningKey,
    key_id: String,
    apply_retention: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id)
    }
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id, apply_retention: false }
    }

    /// The configured key (32-byte seed, base64), or one generated once under
    /// `<data_dir>/secrets/audit-signing.key`.
    pub fn load(configured: Option<&Secret>, data_dir: &Path) -> Result<Self, String> {
        let decode = |text: &str| -> Result<[u8; 32], String> {
            B64.decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| "audit.signing_key must be 32 bytes encoded as base64".to_string())
        };
        let seed = match configured {
            Some(s) => decode(s.expose())?,
            None => {
                let path = data_dir.join("secrets").join("audit-signing.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => decode(&text)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let seed = crate::platform::crypto::random_bytes::<32>();
                        crate::platform::fsutil::write_private(&path, B64.encode(seed).as_bytes())?;
                        seed
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
        };
        Ok(Self::from_seed(&seed))
    }

    /// Also apply retention (the database's horizon, `audit_retention_policy`) whenever a head
    /// is signed.
    pub fn applying_retention(mut self) -> Self {
        self.apply_retention = true;
        self
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs a checkpoint; `at` must already be at microsecond precision (what is stored).
    pub fn sign(&self, kind: CheckpointKind, org: OrgId, seq: i64, hash: &[u8], at: OffsetDateTime) -> Vec<u8> {
        self.key.sign(&checkpoint_message(kind, org, seq, hash, at)).to_bytes().to_vec()
    }
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&crate::platform::crypto::sha256(key.as_bytes())[..8])
}

/// What a checkpoint signature covers: its kind, the organization, the event, the event's
/// hash and the moment of signing (so a verifier can trust how old a checkpoint is).
pub fn checkpoint_message(kind: CheckpointKind, org: OrgId, seq: i64, hash: &[u8], at: OffsetDateTime) -> Vec<u8> {
    let micros = at.unix_timestamp_nanos() / 1000;
    format!("clientflow audit checkpoint v2\n{}\n{org}\n{seq}\n{}\n{micros}", kind.as_str(), hex::encode(hash))
        .into_bytes()
}

/// Signs the new head when the last signed checkpoint is older than [`SIGN_EVERY`] (called
/// inside the append's transaction, so active organizations get signed heads without any
/// scheduler), and applies retention at the same moments.
pub(crate) async fn maybe_sign_head(
    conn: &mut PgConnection,
    signer: Option<&Arc<Signer>>,
    org: OrgId,
    seq: i64,
    hash: &[u8],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let Some(signer) = signer else { return Ok(()) };
    let last: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT max(created_at) FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'signed'",
    )
    .bind(org)
    .fetch_one(&mut *conn)
    .await?;
    if last.is_some_and(|t| now - t < SIGN_EVERY) {
        return Ok(());
    }
    insert_signed(conn, signer, org, seq, hash, now).await?;
    if signer.apply_retention {
        apply_retention(conn, signer, org, now).await?;
    }
    Ok(())
}

async fn insert_signed(
    conn: &mut PgConnection,
    signer: &Signer,
    org: OrgId,
    seq: i64,
    hash: &[u8],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let at = super::truncate_to_micros(now);
    sqlx::query(
        "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
         VALUES ($1, $2, 'signed', $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(seq)
    .bind(hash)
    .bind(at)
    .bind(signer.key_id())
    .bind(signer.sign(CheckpointKind::Signed, org, seq, hash, at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes `org`'s events older than the database's retention horizon (never the head),
/// recording a signed retention checkpoint at the cut. The horizon is the owner's
/// (`audit_retention_policy`); the database refuses any cut younger than it. The tenant must
/// be set on `conn`. Returns the number of events removed.
pub async fn apply_retention(
    conn: &mut PgConnection,
    signer: &Signer,
    org: OrgId,
    now: OffsetDateTime,
) -> Result<i64, sqlx::Error> {
    let (seq, hash): (Option<i64>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT seq, hash FROM audit_retention_cut($1)").bind(org).fetch_one(&mut *conn).await?;
    let (Some(seq), Some(hash)) = (seq, hash) else { return Ok(0) };
    let at = super::truncate_to_micros(now);
    sqlx::query_scalar("SELECT audit_apply_retention($1, $2, $3, $4, $5, $6)")
        .bind(org)
        .bind(seq)
        .bind(&hash)
        .bind(at)
        .bind(signer.key_id())
        .bind(signer.sign(CheckpointKind::Retention, org, seq, &hash, at))
        .fetch_one(&mut *conn)
        .await
}

/// Signs the current head of `org` now (on demand). The tenant must be set on `conn`.
pub async fn sign_head_now(
    conn: &mut PgConnection,
    signer: &Signer,
    org: OrgId,
    now: OffsetDateTime,
) -> Result<Option<i64>, sqlx::Error> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1 AND seq > 0 FOR UPDATE")
            .bind(org)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((seq, hash)) = head else { return Ok(None) };
    insert_signed(conn, signer, org, seq, &hash, now).await?;
    Ok(Some(seq))
}

/// One sweep: signs the head of every organization that has events after its newest signed
/// checkpoint while that checkpoint is older than [`SIGN_EVERY`] (an organization that went
/// quiet right after an unsigned append), applying retention as signing does. `open` gives the
/// principal that opens an organization for it (the access layer's audit maintenance; `None`
/// when the organization is gone). Returns the organizations signed.
pub async fn sign_due_heads<P, F, Fut>(
    db: &Db,
    signer: &Signer,
    now: OffsetDateTime,
    open: F,
) -> Result<Vec<OrgId>, sqlx::Error>
where
    P: TenantPrincipal,
    F: Fn(OrgId) -> Fut,
    Fut: std::future::Future<Output = Result<Option<P>, sqlx::Error>>,
{
    let due: Vec<OrgId> = {
        let mut g = db.global().await?;
        let due = sqlx::query_scalar("SELECT audit_heads_due_for_signing($1)")
            .bind(now - SIGN_EVERY)
            .fetch_all(&mut *g)
            .await?;
        g.commit().await?;
        due
    };
    let mut signed = Vec::new();
    for org in due {
        let Some(principal) = open(org).await? else {
            continue;
        };
        let mut tx = OrgTx::begin(db, &principal).await?;
        if sign_head_now(&mut tx, signer, org, now).await?.is_some() {
            if signer.apply_retention {
                apply_retention(&mut tx, signer, org, now).await?;
            }
            signed.push(org);
        }
        tx.commit().await?;
    }
    Ok(signed)
}

/// A chain head seen by an earlier verification (`audit verify --state`, `--expect-head`):
/// the chain must still contain it, so a chain cut back and re-grown (or truncated to an older
/// signed head) is detected even where no signature can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHead {
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl std::str::FromStr for KnownHead {
    type Err = String;
    /// `SEQ:HASH` (hash in hex), as `audit verify` prints it.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not SEQ:HASH (a sequence number and a 64-digit hex hash)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hex::decode(hash).map_err(|_| bad())?;
        if seq < 0 || hash.len() != 32 {
            return Err(bad());
        }
        Ok(Self { seq, hash })
    }
}

impl std::fmt::Display for KnownHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(&self.hash))
    }
}

/// (seq, kind, hash, created_at, key id, signature) of a checkpoint.
type CheckpointRow = (i64, String, Vec<u8>, OffsetDateTime, Option<String>, Option<Vec<u8>>);

/// The first thing wrong with one organization's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: i64,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct OrgReport {
    pub events: u64,
    pub signed_checkpoints: u64,
    /// The newest validly signed head: (seq, when it was signed).
    pub newest_signed: Option<(i64, OffsetDateTime)>,
    /// The chain's last event as verified (for `--state`), when there is one.
    pub head: Option<KnownHead>,
    pub first_break: Option<Break>,
}

/// How a chain is verified: the accepted keys, the time of verification, and optionally a
/// head an earlier verification saw.
#[derive(Debug, Clone)]
pub struct Verification<'a> {
    pub keys: &'a [VerifyingKey],
    pub now: OffsetDateTime,
    pub known_head: Option<&'a KnownHead>,
}

impl<'a> Verification<'a> {
    pub fn new(keys: &'a [VerifyingKey], now: OffsetDateTime) -> Self {
        Self { keys, now, known_head: None }
    }

    pub fn knowing(mut self, head: Option<&'a KnownHead>) -> Self {
        self.known_head = head;
        self
    }
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Walks `org`'s chain from its start (or its retention checkpoint), recomputing every hash,
/// and checks the head, every checkpoint's signature, that every signed head is still in the
/// chain, that the chain's unsigned tail is not older than [`SIGNED_HEAD_MAX_AGE`] allows, and
/// (when given) that an earlier verification's head is still there. Reads with the tenant set
/// (app role) or as the auditor role.
pub async fn verify_org(conn: &mut PgConnection, org: OrgId, v: &Verification<'_>) -> Result<OrgReport, sqlx::Error> {
    let mut report = OrgReport::default();
    let checkpoints: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT seq, kind, hash, created_at, key_id, signature FROM audit_checkpoints \
         WHERE organization_id = $1 ORDER BY seq, kind",
    )
    .bind(org)
    .fetch_all(&mut *conn)
    .await?;
    let mut first_break: Option<Break> = None;
    let mut note = |b: Break| {
        if first_break.is_none() {
            first_break = Some(b);
        }
    };
    // Signatures first: a forged or altered checkpoint is itself a break.
    let mut signed: Vec<(i64, Vec<u8>, OffsetDateTime)> = Vec::new();
    let mut retention: Option<(i64, Vec<u8>)> = None;
    for (seq, kind, hash, at, key_id, signature) in &checkpoints {
        let Some(kind) = CheckpointKind::parse(kind) else { continue };
        let ok = match (key_id, signature) {
            (Some(kid), Some(sig)) => v.keys.iter().filter(|k| &self::key_id(k) == kid).any(|k| {
                Signature::from_slice(sig)
                    .map(|s| k.verify(&checkpoint_message(kind, org, *seq, hash, *at), &s).is_ok())
                    .unwrap_or(false)
            }),
            _ => false,
        };
        if !ok {
            let message = match key_id {
                Some(kid) if !v.keys.iter().any(|k| &self::key_id(k) == kid) => format!(
                    "{} checkpoint at event {seq} is signed with key {kid}, which is not a trusted key \
                     (the signing key was replaced, or pass the key with --public-key)",
                    kind.as_str()
                ),
                _ => {
                    format!("{} checkpoint at event {seq} has an invalid signature (forged or altered)", kind.as_str())
                }
            };
            note(Break { seq: *seq, message });
        }
        match kind {
            CheckpointKind::Signed => {
                report.signed_checkpoints += 1;
                if ok {
                    signed.push((*seq, hash.clone(), *at));
                }
            }
            // The newest cut is where the remaining chain starts.
            CheckpointKind::Retention => retention = Some((*seq, hash.clone())),
        }
    }
    report.newest_signed = signed.iter().map(|(s, _, at)| (*s, *at)).max_by_key(|(s, at)| (*s, *at));
    let (mut expected_seq, mut prev) = match &retention {
        Some((seq, hash)) => (seq + 1, hash.clone()),
        None => (1, vec![0u8; 32]),
    };
    if let Some((cut, _)) = &retention {
        let left: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM audit_events WHERE organization_id = $1 AND seq <= $2")
                .bind(org)
                .bind(cut)
                .fetch_one(&mut *conn)
                .await?;
        if let Some(left) = left {
            note(Break {
                seq: left,
                message: format!(
                    "event {left} is still present although retention cut the chain at event {cut} \
                     (a retention checkpoint was added to skip events)"
                ),
            });
        }
    }
    let mut signed_iter = signed.iter().peekable();
    {
        let sql =
            format!("SELECT {STORED_COLUMNS} FROM audit_events WHERE organization_id = $1 AND seq >= $2 ORDER BY seq");
        let mut rows = sqlx::query_as::<_, StoredEvent>(&sql).bind(org).bind(expected_seq).fetch(&mut *conn);
        while let Some(event) = rows.try_next().await? {
            report.events += 1;
            if event.seq != expected_seq {
                note(Break {
                    seq: expected_seq,
                    message: if event.seq > expected_seq {
                        format!("events {expected_seq}..{} are missing (deleted)", event.seq - 1)
                    } else {
                        format!("event {} appears out of order", event.seq)
                    },
                });
            }
            if event.prev_hash != prev {
                note(Break {
                    seq: event.seq,
                    message: format!(
                        "event {} does not link to event {} (reordered, inserted or rewritten)",
                        event.seq,
                        event.seq - 1
                    ),
                });
            }
            let recomputed = event.recompute(&event.prev_hash);
            if recomputed[..] != event.hash[..] {
                note(Break {
                    seq: event.seq,
                    message: format!("event {} was altered after it was written", event.seq),
                });
            }
            while let Some((cp_seq, cp_hash, _)) = signed_iter.peek() {
                if *cp_seq < event.seq {
                    signed_iter.next();
                    continue;
                }
                if *cp_seq == event.seq {
                    if cp_hash[..] != event.hash[..] {
                        note(Break {
                            seq: event.seq,
                            message: format!(
                                "event {} differs from the signed checkpoint (the chain was rewritten)",
                                event.seq
                            ),
                        });
                    }
                    signed_iter.next();
                    continue;
                }
                break;
            }
            if let Some(known) = v.known_head
                && known.seq == event.seq
                && known.hash != event.hash
            {
                note(Break {
                    seq: event.seq,
                    message: format!(
                        "event {} differs from the head an earlier verification saw (the chain was rewritten)",
                        event.seq
                    ),
                });
            }
            prev = event.hash.clone();
            expected_seq = event.seq + 1;
        }
    }
    let last = expected_seq - 1;
    if last > 0 && report.events > 0 {
        report.head = Some(KnownHead { seq: last, hash: prev.clone() });
    }
    if let Some((cp_seq, _, _)) = signed_iter.find(|(s, _, _)| *s > last) {
        note(Break {
            seq: *cp_seq,
            message: format!(
                "a signed checkpoint names event {cp_seq} but the chain ends at event {last} (events deleted from the end)"
            ),
        });
    }
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1")
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?;
    match head {
        Some((seq, hash)) if seq == last && (seq == 0 || hash == prev) => {}
        Some((seq, _)) if seq > last => note(Break {
            seq: last + 1,
            message: format!("events {}..{seq} are missing (deleted from the end)", last + 1),
        }),
        Some((seq, _)) => {
            note(Break { seq, message: format!("the chain head ({seq}) does not match the last event ({last})") })
        }
        None if last > 0 => note(Break { seq: 1, message: "the chain head is missing".into() }),
        None => {}
    }
    // Coverage: the first append of a chain signs it, and later heads are signed within
    // SIGN_EVERY + SWEEP_EVERY, so a chain without a valid signed head, or with an unsigned
    // tail behind a checkpoint that old, has lost its newer signed checkpoints.
    if last > 0 {
        match report.newest_signed {
            None => note(Break {
                seq: expected_seq.min(retention.as_ref().map_or(1, |(s, _)| s + 1)),
                message: format!(
                    "no valid signed checkpoint covers events up to {last}: signed checkpoints were deleted \
                     (the chain may have been rewritten), or heads are not being signed"
                ),
            }),
            Some((seq, at)) if seq < last && v.now - at > SIGNED_HEAD_MAX_AGE => note(Break {
                seq: seq + 1,
                message: format!(
                    "events {}..{last} are not covered by a signed checkpoint and the newest one (event {seq}) \
                     was signed at {}, more than {} minutes ago: newer signed checkpoints were deleted \
                     (the chain may have been rewritten after event {seq}), or heads are not being signed",
                    seq + 1,
                    format_time(at),
                    SIGNED_HEAD_MAX_AGE.whole_minutes()
                ),
            }),
            Some(_) => {}
        }
    }
    if let Some(known) = v.known_head {
        let cut = retention.as_ref().map_or(0, |(s, _)| *s);
        if known.seq > last {
            note(Break {
                seq: last + 1,
                message: format!(
                    "an earlier verification saw event {} but the chain now ends at event {last} \
                     (events deleted from the end)",
                    known.seq
                ),
            });
        } else if known.seq == cut && retention.as_ref().is_some_and(|(_, h)| *h != known.hash) {
            note(Break {
                seq: cut,
                message: format!(
                    "the retention checkpoint at event {cut} differs from the head an earlier verification saw"
                ),
            });
        }
    }
    report.first_break = first_break;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_org_seq_and_hash() {
        let s = Signer::from_seed(&[9u8; 32]);
        let org = OrgId::new();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let signed = CheckpointKind::Signed;
        let sig = Signature::from_slice(&s.sign(signed, org, 5, &[1u8; 32], at)).unwrap();
        let k = s.verifying_key();
        assert!(k.verify(&checkpoint_message(signed, org, 5, &[1u8; 32], at), &sig).is_ok());
        assert!(k.verify(&checkpoint_message(signed, org, 6, &[1u8; 32], at), &sig).is_err());
        assert!(k.verify(&checkpoint_message(signed, OrgId::new(), 5, &[1u8; 32], at), &sig).is_err());
        assert!(k.verify(&checkpoint_message(signed, org, 5, &[2u8; 32], at), &sig).is_err());
        let later = at + Duration::microseconds(1);
        assert!(k.verify(&checkpoint_message(signed, org, 5, &[1u8; 32], later), &sig).is_err());
        let retention = CheckpointKind::Retention;
        assert!(k.verify(&checkpoint_message(retention, org, 5, &[1u8; 32], at), &sig).is_err());
        assert_eq!(s.key_id().len(), 16);
    }

    #[test]
    fn known_heads_parse_and_print() {
        let h: KnownHead = format!("12:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!((h.seq, h.hash.clone()), (12, vec![0xab; 32]));
        assert_eq!(h.to_string().parse::<KnownHead>().unwrap(), h);
        for bad in ["12", "x:ab", &format!("12:{}", "ab".repeat(31)), &format!("-1:{}", "ab".repeat(32))] {
            assert!(bad.parse::<KnownHead>().is_err(), "{bad}");
        }
    }
}
