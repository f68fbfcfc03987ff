//! Sealing stored secrets with AES-256-GCM.
//!
//! Every stored secret (today: TOTP secrets) goes through this one module, so that the
//! envelope-encryption design (per-organization data keys wrapped by the master key) can
//! replace the key handling here without touching callers. The associated data binds a
//! ciphertext to its purpose and owner: a sealed secret copied into another user's row fails
//! to open.
//!
//! Format: `version (1) ‖ nonce (12) ‖ ciphertext+tag`.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::crypto::random_bytes;
use crate::secret::Secret;

const VERSION: u8 = 1;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// HMAC(master, "derive"): the root of purpose-specific keys (CSRF tokens, …), so the
    /// master key itself is only ever used for sealing.
    derivation: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("secrets.master_key must be 32 bytes encoded as base64")]
    BadKey,
    #[error("cannot read or create the master key: {0}")]
    KeyFile(String),
    #[error("sealed value is damaged or belongs to something else")]
    Open,
}

impl Sealer {
    pub fn from_key(key: &[u8; 32]) -> Self {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(b"clientflow derive v1");
        Self { cipher: Aes256Gcm::new(key.into()), derivation: mac.finalize().into_bytes().into() }
    }

    /// Root key for purpose-specific derived keys.
    pub fn derivation_key(&self) -> [u8; 32] {
        self.derivation
    }

    /// The configured master key, or the one under `<data_dir>/secrets/master.key`
    /// (generated on first use, mode 0600).
    pub fn load(configured: Option<&Secret>, data_dir: &Path) -> Result<Self, SealError> {
        let key = match configured {
            Some(secret) => decode_key(secret.expose())?,
            None => {
                let path = data_dir.join("secrets").join("master.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => decode_key(text.trim())?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key = random_bytes::<32>();
                        crate::fsutil::write_private(&path, B64.encode(key).as_bytes()).map_err(SealError::KeyFile)?;
                        key
                    }
                    Err(e) => return Err(SealError::KeyFile(format!("{}: {e}", path.display()))),
                }
            }
        };
        Ok(Self::from_key(&key))
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let nonce_bytes = random_bytes::<12>();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(1 + 12 + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| SealError::Open)
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], SealError> {
    let bytes = B64.decode(text.trim()).map_err(|_| SealError::BadKey)?;
    bytes.try_into().map_err(|_| SealError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_binds_to_context() {
        let s = Sealer::from_key(&[7u8; 32]);
        let sealed = s.seal(b"totp secret", "totp:user-a");
        assert_eq!(s.open(&sealed, "totp:user-a").unwrap(), b"totp secret");
        assert!(s.open(&sealed, "totp:user-b").is_err(), "moved to another user");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(s.open(&tampered, "totp:user-a").is_err());
        assert!(Sealer::from_key(&[8u8; 32]).open(&sealed, "totp:user-a").is_err(), "wrong key");
        assert_ne!(s.seal(b"x", "c"), s.seal(b"x", "c"), "nonces are fresh");
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load(None, dir.path()).unwrap();
        let b = Sealer::load(None, dir.path()).unwrap();
        assert_eq!(b.open(&a.seal(b"v", "c"), "c").unwrap(), b"v");
        assert!(matches!(Sealer::load(Some(&Secret::new("short")), dir.path()), Err(SealError::BadKey)));
    }
}
