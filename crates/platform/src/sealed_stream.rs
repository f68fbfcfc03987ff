//! Sealing long byte streams (export archives) with a data key, written and read as they
//! stream, in constant memory.
//!
//! The construction is STREAM (Hoang, Reyhanitabar, Rogaway, Vizár: "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance"), as the `aead` crate's
//! `stream` module implements it (`StreamBE32`) over AES-256-GCM: the plaintext is cut into
//! [`CHUNK`]-byte chunks, each sealed with a nonce made of the stream's random prefix, the
//! chunk's counter and a flag marking the last chunk. So a reader notices a chunk changed,
//! moved, dropped or repeated, and a stream cut short (even at a chunk boundary: its last
//! chunk was not sealed as the last one) or lengthened.
//!
//! Each stream has its own key, derived from the data key and a random salt in the header
//! ([`Keyring::stream_cipher`]), so streams never share a key and nonce. The associated data
//! of every chunk is the header and a context the caller names (for an export: organization,
//! export id), and the data key's version: a sealed file renamed to another export, or moved
//! to another organization, does not open. When the data key is destroyed (an organization's
//! deletion) nothing opens a stream sealed with it any more.
//!
//! Format (version 1):
//!
//! ```text
//! "CFSTREAM" (8) ‖ format version 0x01 (1) ‖ data-key version (u32, big endian) ‖ salt (32)
//!   ‖ nonce prefix (7) ‖ chunks
//! chunk: AES-256-GCM ciphertext of CHUNK plaintext bytes ‖ tag (16); the last chunk holds
//!   0..=CHUNK bytes and is sealed with the "last" flag
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};

use aead::generic_array::GenericArray;
use aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::Aes256Gcm;

use crate::crypto::random_bytes;
use crate::keys::{KeyError, Keyring, Scope};

/// The first bytes of a sealed stream.
pub const MAGIC: &[u8; 8] = b"CFSTREAM";
const VERSION: u8 = 1;
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const NONCE_PREFIX: usize = 7;
/// Header bytes before the first chunk.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + 32 + NONCE_PREFIX;

/// Why a sealed stream does not open.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the file is not a sealed stream (it may be an older, unsealed one)")]
    NotSealed,
    #[error("the key that sealed the file is gone: {0}")]
    Key(KeyError),
    #[error("the file is damaged, was changed, or belongs to something else")]
    Damaged,
    #[error("writing the sealed stream: {0}")]
    Io(io::Error),
}

impl StreamError {
    /// The stream error inside an I/O error a reader returned, if there is one.
    pub fn of(e: &io::Error) -> Option<&StreamError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<StreamError>())
    }
}

fn io_err(e: StreamError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The associated data of every chunk: the header (format, key version, salt, nonce prefix)
/// and what the caller binds the stream to.
fn associated_data(header: &[u8], scope: Scope, context: &str, version: u32) -> Vec<u8> {
    let mut aad = format!("clientflow sealed stream v1|{}|{context}|v{version}|", scope.label()).into_bytes();
    aad.extend_from_slice(header);
    aad
}

/// Seals what is written to it into `inner`; [`SealingWriter::finish`] seals the last chunk
/// (without it the stream does not open: a crash leaves nothing readable).
pub struct SealingWriter<W: Write> {
    inner: W,
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    /// The current chunk's plaintext (sealed in place, so it has room for the tag).
    buf: Vec<u8>,
}

impl<W: Write> SealingWriter<W> {
    /// Writes the header to `inner` and returns the writer, sealing with `scope`'s current
    /// data key, bound to `context`.
    pub fn new(keys: &Keyring, scope: Scope, context: &str, mut inner: W) -> Result<Self, StreamError> {
        let version = keys.current_version(scope).map_err(StreamError::Key)?;
        let salt = random_bytes::<32>();
        let prefix = random_bytes::<NONCE_PREFIX>();
        let cipher = keys.stream_cipher(scope, version, &salt).map_err(StreamError::Key)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&version.to_be_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        inner.write_all(&header).map_err(StreamError::Io)?;
        Ok(Self {
            inner,
            encryptor: Some(EncryptorBE32::from_aead(cipher, GenericArray::from_slice(&prefix))),
            aad: associated_data(&header, scope, context, version),
            buf: Vec::with_capacity(CHUNK + TAG),
        })
    }

    /// Seals the last chunk, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let encryptor = self.encryptor.take().ok_or_else(|| io::Error::other("sealed stream already finished"))?;
        encryptor
            .encrypt_last_in_place(&self.aad, &mut self.buf)
            .map_err(|_| io::Error::other("sealing the last chunk failed"))?;
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Seals the full chunk in the buffer (more data follows it).
    fn seal_chunk(&mut self) -> io::Result<()> {
        let encryptor = self.encryptor.as_mut().ok_or_else(|| io::Error::other("sealed stream already finished"))?;
        encryptor
            .encrypt_next_in_place(&self.aad, &mut self.buf)
            .map_err(|_| io::Error::other("sealing a chunk failed (stream too long)"))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full chunk is sealed only once more data comes, so the last chunk is never empty
        // unless the whole stream is.
        if self.buf.len() == CHUNK {
            self.seal_chunk()?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a stream sealed by [`SealingWriter`], chunk by chunk: every byte it returns has been
/// authenticated, and the end of the stream is only reported once the last chunk opened.
/// Errors are `InvalidData` I/O errors holding a [`StreamError`] ([`StreamError::of`]).
pub struct OpeningReader<R: Read> {
    inner: BufReader<R>,
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> OpeningReader<R> {
    /// Reads and checks the header of `inner` and derives its key.
    pub fn new(keys: &Keyring, scope: Scope, context: &str, inner: R) -> Result<Self, StreamError> {
        let mut inner = BufReader::with_capacity(CHUNK + TAG, inner);
        let mut header = [0u8; HEADER_LEN];
        inner.read_exact(&mut header).map_err(|_| StreamError::NotSealed)?;
        if &header[..MAGIC.len()] != MAGIC || header[MAGIC.len()] != VERSION {
            return Err(StreamError::NotSealed);
        }
        let at = MAGIC.len() + 1;
        let version = u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let salt: [u8; 32] = header[at + 4..at + 36].try_into().expect("32 bytes");
        let prefix: [u8; NONCE_PREFIX] = header[at + 36..].try_into().expect("7 bytes");
        let cipher = match keys.stream_cipher(scope, version, &salt) {
            Ok(c) => c,
            Err(e @ KeyError::Missing { .. }) => return Err(StreamError::Key(e)),
            Err(KeyError::Open) => return Err(StreamError::Damaged),
            Err(e) => return Err(StreamError::Key(e)),
        };
        Ok(Self {
            inner,
            decryptor: Some(DecryptorBE32::from_aead(cipher, GenericArray::from_slice(&prefix))),
            aad: associated_data(&header, scope, context, version),
            buf: Vec::with_capacity(CHUNK + TAG),
            pos: 0,
        })
    }

    /// Reads and opens the next chunk into `buf`; false at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.decryptor.is_none() {
            return Ok(false);
        }
        self.buf.clear();
        self.pos = 0;
        (&mut self.inner).take((CHUNK + TAG) as u64).read_to_end(&mut self.buf)?;
        // A short chunk, or a full one with nothing after it, is the last.
        let last = self.buf.len() < CHUNK + TAG || self.inner.fill_buf()?.is_empty();
        if self.buf.len() < TAG {
            return Err(io_err(StreamError::Damaged));
        }
        let opened = if last {
            let d = self.decryptor.take().expect("checked above");
            d.decrypt_last_in_place(&self.aad, &mut self.buf)
        } else {
            self.decryptor.as_mut().expect("checked above").decrypt_next_in_place(&self.aad, &mut self.buf)
        };
        if opened.is_err() {
            self.decryptor = None;
            self.buf.clear();
            return Err(io_err(StreamError::Damaged));
        }
        Ok(true)
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether `bytes` (a file's first bytes) start like a sealed stream.
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Sealer;

    fn ring(dir: &std::path::Path) -> Keyring {
        Keyring::local(dir, &Sealer::from_key(&[5u8; 32]))
    }

    fn seal(k: &Keyring, scope: Scope, context: &str, data: &[u8]) -> Vec<u8> {
        let mut w = SealingWriter::new(k, scope, context, Vec::new()).unwrap();
        // Odd-sized writes, to cross chunk boundaries anywhere.
        for piece in data.chunks(7001) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn open(k: &Keyring, scope: Scope, context: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut r = OpeningReader::new(k, scope, context, sealed).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| StreamError::of(&e).map(ToString::to_string).unwrap_or(e.to_string()))?;
        Ok(out)
    }

    #[test]
    fn streams_of_any_length_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let org = Scope::Org(uuid::Uuid::new_v4());
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sealed = seal(&k, org, "export:1", &data);
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG, "{len}");
            assert_eq!(open(&k, org, "export:1", &sealed).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn changed_cut_moved_or_orphaned_streams_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let (org, other) = (Scope::Org(uuid::Uuid::new_v4()), Scope::Org(uuid::Uuid::new_v4()));
        let data: Vec<u8> = (0..(2 * CHUNK + 100)).map(|i| (i % 7) as u8).collect();
        let sealed = seal(&k, org, "export:1", &data);
        assert!(!sealed.windows(64).any(|w| data.windows(64).next() == Some(w)), "no plaintext");
        let damaged = "the file is damaged, was changed, or belongs to something else";
        let mut flipped = sealed.clone();
        flipped[HEADER_LEN + CHUNK + 3] ^= 1;
        assert_eq!(open(&k, org, "export:1", &flipped).unwrap_err(), damaged);
        // Cut at a chunk boundary: the new last chunk was not sealed as the last.
        let cut = &sealed[..HEADER_LEN + 2 * (CHUNK + TAG)];
        assert_eq!(open(&k, org, "export:1", cut).unwrap_err(), damaged);
        assert_eq!(open(&k, org, "export:1", &sealed[..sealed.len() - 1]).unwrap_err(), damaged);
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert_eq!(open(&k, org, "export:1", &longer).unwrap_err(), damaged);
        // Chunks swapped.
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + CHUNK + TAG);
        let first = sealed[a..b].to_vec();
        swapped[a..b].copy_from_slice(&sealed[b..b + CHUNK + TAG]);
        swapped[b..b + CHUNK + TAG].copy_from_slice(&first);
        assert_eq!(open(&k, org, "export:1", &swapped).unwrap_err(), damaged);
        // Another export's name, another organization, a plain file.
        assert_eq!(open(&k, org, "export:2", &sealed).unwrap_err(), damaged);
        assert!(open(&k, other, "export:1", &sealed).is_err());
        assert!(open(&k, org, "export:1", b"PK\x03\x04 a zip").unwrap_err().contains("not a sealed stream"));
        // The data key destroyed: nothing opens it any more.
        k.store().destroy_scope(org).unwrap();
        assert!(open(&k, org, "export:1", &sealed).unwrap_err().contains("key that sealed the file is gone"));
    }
}
