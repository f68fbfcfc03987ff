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
use crate::platform::ids::OrgId;
use crate::platform::secret::Secret;

/// How often (at most) the head of an active organization's chain is signed.
pub const SIGN_EVERY: Duration = Duration::hours(1);

/// The Ed25519 key that signs chain heads.
pub struct Signer {
    key: SigningKey,
    key_id: String,
    retention: Option<Duration>,
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
        Self { key, key_id, retention: None }
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

    /// Also apply retention (events older than `days`) when signing heads.
    pub fn with_retention(mut self, days: u32) -> Self {
        self.retention = Some(Duration::days(days.into()));
        self
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn sign(&self, org: OrgId, seq: i64, hash: &[u8]) -> Vec<u8> {
        self.key.sign(&checkpoint_message(org, seq, hash)).to_bytes().to_vec()
    }
}

pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&crate::platform::crypto::sha256(key.as_bytes())[..8])
}

/// What a checkpoint signature covers.
pub fn checkpoint_message(org: OrgId, seq: i64, hash: &[u8]) -> Vec<u8> {
    format!("clientflow audit checkpoint v1\n{org}\n{seq}\n{}", hex::encode(hash)).into_bytes()
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
    if let Some(keep) = signer.retention {
        sqlx::query("SELECT audit_apply_retention($1, $2)").bind(org).bind(now - keep).execute(&mut *conn).await?;
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
    sqlx::query(
        "INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature) \
         VALUES ($1, $2, 'signed', $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(seq)
    .bind(hash)
    .bind(now)
    .bind(signer.key_id())
    .bind(signer.sign(org, seq, hash))
    .execute(conn)
    .await?;
    Ok(())
}

/// Signs the current head of `org` now (on demand). The tenant must be set on `conn`.
pub async fn sign_head_now(
    conn: &mut PgConnection,
    signer: &Signer,
    org: OrgId,
    now: OffsetDateTime,
) -> Result<Option<i64>, sqlx::Error> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1 AND seq > 0")
            .bind(org)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((seq, hash)) = head else { return Ok(None) };
    insert_signed(conn, signer, org, seq, &hash, now).await?;
    Ok(Some(seq))
}

/// (seq, hash, key id, signature) of a signed checkpoint.
type SignedRow = (i64, Vec<u8>, Option<String>, Option<Vec<u8>>);

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
    pub first_break: Option<Break>,
}

/// Walks `org`'s chain from its start (or its retention checkpoint), recomputing every hash,
/// and checks the head and every signed checkpoint. `keys` are the accepted signing keys.
/// Reads with the tenant set (app role) or as the auditor role.
pub async fn verify_org(conn: &mut PgConnection, org: OrgId, keys: &[VerifyingKey]) -> Result<OrgReport, sqlx::Error> {
    let mut report = OrgReport::default();
    let start: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, hash FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'retention' ORDER BY seq DESC LIMIT 1",
    )
    .bind(org)
    .fetch_optional(&mut *conn)
    .await?;
    let (mut expected_seq, mut prev) = match start {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, vec![0u8; 32]),
    };
    let signed: Vec<SignedRow> = sqlx::query_as(
        "SELECT seq, hash, key_id, signature FROM audit_checkpoints WHERE organization_id = $1 AND kind = 'signed' ORDER BY seq",
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
    // Signatures first: a forged checkpoint is itself a break.
    for (seq, hash, key_id, signature) in &signed {
        let ok = match (key_id, signature) {
            (Some(kid), Some(sig)) => keys.iter().filter(|k| &self::key_id(k) == kid).any(|k| {
                Signature::from_slice(sig)
                    .map(|s| k.verify(&checkpoint_message(org, *seq, hash), &s).is_ok())
                    .unwrap_or(false)
            }),
            _ => false,
        };
        if !ok {
            note(Break {
                seq: *seq,
                message: format!("signed checkpoint at event {seq} has an invalid signature or unknown key"),
            });
        }
    }
    report.signed_checkpoints = signed.len() as u64;
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
            while let Some((cp_seq, cp_hash, _, _)) = signed_iter.peek() {
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
                }
                break;
            }
            prev = event.hash.clone();
            expected_seq = event.seq + 1;
        }
    }
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE organization_id = $1")
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?;
    let last = expected_seq - 1;
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
        let sig = Signature::from_slice(&s.sign(org, 5, &[1u8; 32])).unwrap();
        let k = s.verifying_key();
        assert!(k.verify(&checkpoint_message(org, 5, &[1u8; 32]), &sig).is_ok());
        assert!(k.verify(&checkpoint_message(org, 6, &[1u8; 32]), &sig).is_err());
        assert!(k.verify(&checkpoint_message(OrgId::new(), 5, &[1u8; 32]), &sig).is_err());
        assert!(k.verify(&checkpoint_message(org, 5, &[2u8; 32]), &sig).is_err());
        assert_eq!(s.key_id().len(), 16);
    }
}
