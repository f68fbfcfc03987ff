//! Envelope encryption: per-organization data keys wrapped by a key-encryption key.
//!
//! Three layers of keys, none of which encrypts what the one above it protects:
//!
//! - the **master key** (`secrets.master_key`) only wraps the key-encryption keys of the local
//!   key store (and derives purpose keys: CSRF, links; `seal.rs`). It never encrypts data;
//! - the **key-encryption key** (KEK, versioned) wraps data keys. It lives in the key store;
//! - a **data key** (random 256 bits, versioned) per organization, and one for the
//!   installation (user-level secrets such as TOTP), seals the values themselves.
//!
//! Data keys live in the key store, never in the database: a database backup holds ciphertexts
//! but no key that opens them, so destroying an organization's data keys in the key store
//! (`destroy_scope`) makes its sealed values in every backup unreadable at once
//! (docs/security/encryption.md).
//!
//! [`KeyStore`] is the seam for a cloud KMS: an implementation keeps the KEK inside the KMS
//! (wrap and unwrap are KMS calls), keeps the wrapped data keys where it likes (a secrets
//! manager, a bucket with object lock off), and destroys by deleting the wrapped key (and,
//! for the KMS's own backups, by scheduling the KEK version's deletion after `rotate_kek`).
//! [`LocalKeyStore`] is the default: files under `<data_dir>/keys` (mode 0600, directory 0700).
//!
//! Sealed value format (version 2): `0x02 ‖ data-key version (u32, big endian) ‖ nonce (12) ‖
//! AES-256-GCM ciphertext and tag`. The associated data names the scope (organization or
//! installation), the table, the column, the row and the key version, so a value copied into
//! another row, column or organization fails to open. Values in the version 1 format (sealed
//! directly with the master key, before this module) still open through the legacy
//! [`Sealer`] until `clientflow keys reseal` has converted them.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use uuid::Uuid;

use crate::crypto::random_bytes;
use crate::seal::Sealer;

/// The format byte of envelope-sealed values.
pub const FORMAT: u8 = 2;

/// Whose data key: one organization's, or the installation's (user-level secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Installation,
    Org(Uuid),
}

impl Scope {
    pub fn org(id: crate::ids::OrgId) -> Self {
        Scope::Org(id.as_uuid())
    }

    /// The name used in associated data and messages.
    pub fn label(&self) -> String {
        match self {
            Scope::Installation => "installation".into(),
            Scope::Org(id) => format!("org:{id}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// Where a sealed value is stored: the associated data it is bound to.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
}

impl<'a> At<'a> {
    pub fn new(table: &'a str, column: &'a str, row: &'a str) -> Self {
        Self { table, column, row }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store: {0}")]
    Store(String),
    #[error("the data key {scope} v{version} does not exist (destroyed, or never created)")]
    Missing { scope: Scope, version: u32 },
    #[error("sealed value is damaged or belongs to something else")]
    Open,
}

impl From<io::Error> for KeyError {
    fn from(e: io::Error) -> Self {
        KeyError::Store(e.to_string())
    }
}

/// Where the key-encryption key and the wrapped data keys are kept. Implementations must make
/// `create_version` safe against other processes of the installation doing the same.
pub trait KeyStore: Send + Sync + 'static {
    /// `local` or the KMS's name (for `keys status` and `doctor`).
    fn kind(&self) -> &'static str;
    /// Versions of `scope`'s data key that exist, ascending (empty: none yet, or destroyed).
    fn versions(&self, scope: Scope) -> Result<Vec<u32>, KeyError>;
    /// One data key, unwrapped.
    fn data_key(&self, scope: Scope, version: u32) -> Result<[u8; 32], KeyError>;
    /// Makes a new random data key, one version above the newest, and returns its version.
    fn create_version(&self, scope: Scope) -> Result<u32, KeyError>;
    /// How long ago a version was made (re-wrapping may make it look younger, never older);
    /// `None` when it does not exist.
    fn age(&self, scope: Scope, version: u32) -> Result<Option<std::time::Duration>, KeyError>;
    /// Destroys one version (its values become unreadable); false if it was not there.
    fn destroy_version(&self, scope: Scope, version: u32) -> Result<bool, KeyError>;
    /// Destroys every version of `scope` (crypto-shredding); returns how many there were.
    fn destroy_scope(&self, scope: Scope) -> Result<usize, KeyError>;
    /// Every scope that has at least one data key.
    fn scopes(&self) -> Result<Vec<Scope>, KeyError>;
    /// The current key-encryption key's version.
    fn kek_version(&self) -> Result<u32, KeyError>;
    /// A new KEK version; every data key is re-wrapped under it and the old KEK destroyed.
    /// Returns the new version and how many data keys were re-wrapped.
    fn rotate_kek(&self) -> Result<(u32, usize), KeyError>;
}

/// The local key store: files under one directory (default `<data_dir>/keys`), which every
/// process of an installation must share, like the file store.
///
/// ```text
/// keys/.lock                     serializes creation and KEK rotation between processes
/// keys/kek/v1.key                the KEK, sealed with a key derived from the master key
/// keys/installation/v1.key       "kek 1" line, then the data key sealed with the KEK
/// keys/orgs/<uuid>/v1.key        the same for one organization
/// ```
pub struct LocalKeyStore {
    dir: PathBuf,
    /// Wraps the KEK files: derived from the master key, so the key directory alone (a copy of
    /// it in a backup, say) opens nothing without the master key, and the reverse.
    master_wrap: Aes256Gcm,
}

impl std::fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalKeyStore({})", self.dir.display())
    }
}

fn wrap(cipher: &Aes256Gcm, key: &[u8; 32], aad: &str) -> String {
    let nonce = random_bytes::<12>();
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: key, aad: aad.as_bytes() })
        .expect("AES-GCM encryption of an in-memory buffer does not fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    B64.encode(out)
}

fn unwrap(cipher: &Aes256Gcm, text: &str, aad: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Store("a key file is not base64".into()))?;
    if bytes.len() < 12 + 16 {
        return Err(KeyError::Store("a key file is truncated".into()));
    }
    let (nonce, ct) = bytes.split_at(12);
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
        .map_err(|_| KeyError::Store(format!("a key file does not open ({aad}): wrong master key or damaged file")))?;
    plain.try_into().map_err(|_| KeyError::Store("a key file holds a key of the wrong size".into()))
}

fn kek_aad(version: u32) -> String {
    format!("clientflow kek v{version}")
}

fn data_key_aad(scope: Scope, version: u32) -> String {
    format!("clientflow data key|{}|v{version}", scope.label())
}

/// Version numbers of the `v<N>.key` files in `dir`, ascending.
fn versions_in(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix('v').and_then(|s| s.strip_suffix(".key")).and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes a new file, failing with `AlreadyExists` when it is there (another process won).
fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", hex::encode(random_bytes::<6>())));
    crate::fsutil::write_private(&tmp, contents).map_err(io::Error::other)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Overwrites a key file before unlinking it, so the key is not left in the file's blocks on
/// file systems that write in place (on copy-on-write and flash storage this is best effort:
/// the key store's own backups and the disk's encryption are what the docs rely on).
fn shred(path: &Path) -> io::Result<bool> {
    use std::io::Write;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.write_all(&vec![0u8; len]).and_then(|_| f.sync_all());
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl LocalKeyStore {
    /// The key store in `dir`, its KEK files wrapped by a key derived from `master`.
    pub fn new(dir: &Path, master: &Sealer) -> Self {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&master.derivation_key()).expect("any length");
        mac.update(b"clientflow key store wrap v1");
        let wrap_key: [u8; 32] = mac.finalize().into_bytes().into();
        Self { dir: dir.to_path_buf(), master_wrap: Aes256Gcm::new((&wrap_key).into()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn scope_dir(&self, scope: Scope) -> PathBuf {
        match scope {
            Scope::Installation => self.dir.join("installation"),
            Scope::Org(id) => self.dir.join("orgs").join(id.to_string()),
        }
    }

    fn kek_dir(&self) -> PathBuf {
        self.dir.join("kek")
    }

    /// An exclusive lock across processes for creations and KEK rotation.
    fn lock(&self) -> Result<std::fs::File, KeyError> {
        std::fs::create_dir_all(&self.dir)?;
        let _ = std::fs::set_permissions(&self.dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join(".lock"))?;
        file.lock()?;
        Ok(file)
    }

    fn kek(&self, version: u32) -> Result<Aes256Gcm, KeyError> {
        let path = self.kek_dir().join(format!("v{version}.key"));
        let text = std::fs::read_to_string(&path).map_err(|e| KeyError::Store(format!("{}: {e}", path.display())))?;
        let key = unwrap(&self.master_wrap, &text, &kek_aad(version))?;
        Ok(Aes256Gcm::new((&key).into()))
    }

    /// The current KEK, created (v1) when there is none. Called under the lock.
    fn current_kek(&self) -> Result<(u32, Aes256Gcm), KeyError> {
        let version = match versions_in(&self.kek_dir())?.last() {
            Some(v) => *v,
            None => {
                let key = random_bytes::<32>();
                let path = self.kek_dir().join("v1.key");
                match create_private(&path, wrap(&self.master_wrap, &key, &kek_aad(1)).as_bytes()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
                1
            }
        };
        Ok((version, self.kek(version)?))
    }

    fn key_file(&self, scope: Scope, version: u32) -> PathBuf {
        self.scope_dir(scope).join(format!("v{version}.key"))
    }

    fn wrapped_file(kek_version: u32, kek: &Aes256Gcm, scope: Scope, version: u32, key: &[u8; 32]) -> String {
        format!("kek {kek_version}\n{}\n", wrap(kek, key, &data_key_aad(scope, version)))
    }

    fn read_wrapped(&self, scope: Scope, version: u32) -> Result<(u32, String), KeyError> {
        let path = self.key_file(scope, version);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KeyError::Missing { scope, version }),
            Err(e) => return Err(KeyError::Store(format!("{}: {e}", path.display()))),
        };
        let mut lines = text.lines();
        let kek_version = lines
            .next()
            .and_then(|l| l.strip_prefix("kek "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| KeyError::Store(format!("{}: no kek line", path.display())))?;
        Ok((kek_version, lines.next().unwrap_or("").to_string()))
    }
}

impl KeyStore for LocalKeyStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn versions(&self, scope: Scope) -> Result<Vec<u32>, KeyError> {
        Ok(versions_in(&self.scope_dir(scope))?)
    }

    fn data_key(&self, scope: Scope, version: u32) -> Result<[u8; 32], KeyError> {
        let (kek_version, wrapped) = self.read_wrapped(scope, version)?;
        unwrap(&self.kek(kek_version)?, &wrapped, &data_key_aad(scope, version))
    }

    fn create_version(&self, scope: Scope) -> Result<u32, KeyError> {
        let _lock = self.lock()?;
        let (kek_version, kek) = self.current_kek()?;
        let version = self.versions(scope)?.last().map_or(1, |v| v + 1);
        let key = random_bytes::<32>();
        let path = self.key_file(scope, version);
        create_private(&path, Self::wrapped_file(kek_version, &kek, scope, version, &key).as_bytes())?;
        Ok(version)
    }

    fn age(&self, scope: Scope, version: u32) -> Result<Option<std::time::Duration>, KeyError> {
        match std::fs::metadata(self.key_file(scope, version)) {
            Ok(m) => Ok(Some(m.modified()?.elapsed().unwrap_or_default())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn destroy_version(&self, scope: Scope, version: u32) -> Result<bool, KeyError> {
        Ok(shred(&self.key_file(scope, version))?)
    }

    fn destroy_scope(&self, scope: Scope) -> Result<usize, KeyError> {
        let _lock = self.lock()?;
        let mut count = 0;
        for v in self.versions(scope)? {
            count += usize::from(shred(&self.key_file(scope, v))?);
        }
        match std::fs::remove_dir_all(self.scope_dir(scope)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(count)
    }

    fn scopes(&self) -> Result<Vec<Scope>, KeyError> {
        let mut out = Vec::new();
        if !self.versions(Scope::Installation)?.is_empty() {
            out.push(Scope::Installation);
        }
        match std::fs::read_dir(self.dir.join("orgs")) {
            Ok(entries) => {
                for entry in entries {
                    if let Ok(id) = entry?.file_name().to_string_lossy().parse::<Uuid>()
                        && !self.versions(Scope::Org(id))?.is_empty()
                    {
                        out.push(Scope::Org(id));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        out.sort();
        Ok(out)
    }

    fn kek_version(&self) -> Result<u32, KeyError> {
        let _lock = self.lock()?;
        Ok(self.current_kek()?.0)
    }

    fn rotate_kek(&self) -> Result<(u32, usize), KeyError> {
        let _lock = self.lock()?;
        let (old_version, _) = self.current_kek()?;
        let new_version = old_version + 1;
        let new_key = random_bytes::<32>();
        create_private(
            &self.kek_dir().join(format!("v{new_version}.key")),
            wrap(&self.master_wrap, &new_key, &kek_aad(new_version)).as_bytes(),
        )?;
        let new_kek = Aes256Gcm::new((&new_key).into());
        let mut count = 0;
        for scope in self.scopes()? {
            for version in self.versions(scope)? {
                let key = self.data_key(scope, version)?;
                let contents = Self::wrapped_file(new_version, &new_kek, scope, version, &key);
                crate::fsutil::write_private(&self.key_file(scope, version), contents.as_bytes())
                    .map_err(KeyError::Store)?;
                count += 1;
            }
        }
        // Only once nothing is wrapped by them any more.
        for v in versions_in(&self.kek_dir())? {
            if v < new_version {
                shred(&self.kek_dir().join(format!("v{v}.key")))?;
            }
        }
        Ok((new_version, count))
    }
}

/// Sealing and opening with data keys: what the application holds (cheap to clone).
#[derive(Clone)]
pub struct Keyring {
    store: Arc<dyn KeyStore>,
    /// Opens version 1 values (sealed with the master key directly) until they are resealed.
    legacy: Arc<Sealer>,
    cache: Arc<Mutex<HashMap<(Scope, u32), Aes256Gcm>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.store.kind())
    }
}

impl Keyring {
    pub fn new(store: Arc<dyn KeyStore>, legacy: Sealer) -> Self {
        Self { store, legacy: Arc::new(legacy), cache: Arc::default() }
    }

    /// The local key store under `dir`.
    pub fn local(dir: &Path, master: &Sealer) -> Self {
        Self::new(Arc::new(LocalKeyStore::new(dir, master)), master.clone())
    }

    pub fn store(&self) -> &dyn KeyStore {
        &*self.store
    }

    /// The version new values of `scope` are sealed with: the newest, created when there is none.
    pub fn current_version(&self, scope: Scope) -> Result<u32, KeyError> {
        match self.store.versions(scope)?.last() {
            Some(v) => Ok(*v),
            None => self.store.create_version(scope).or_else(|e| {
                // Another process may have created it meanwhile.
                self.store.versions(scope)?.last().copied().ok_or(e)
            }),
        }
    }

    fn cipher(&self, scope: Scope, version: u32) -> Result<Aes256Gcm, KeyError> {
        // A destroyed version stays destroyed for this process too, cached or not.
        if !self.store.versions(scope)?.contains(&version) {
            self.cache.lock().expect("key cache").remove(&(scope, version));
            return Err(KeyError::Missing { scope, version });
        }
        if let Some(c) = self.cache.lock().expect("key cache").get(&(scope, version)) {
            return Ok(c.clone());
        }
        let key = self.store.data_key(scope, version)?;
        let cipher = Aes256Gcm::new((&key).into());
        self.cache.lock().expect("key cache").insert((scope, version), cipher.clone());
        Ok(cipher)
    }

    fn aad(scope: Scope, at: At<'_>, version: u32) -> String {
        format!("clientflow v2|{}|{}|{}|{}|v{version}", scope.label(), at.table, at.column, at.row)
    }

    /// Seals `plaintext` for `scope`, bound to where it will be stored.
    pub fn seal(&self, scope: Scope, at: At<'_>, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let version = self.current_version(scope)?;
        self.seal_with_version(scope, at, plaintext, version)
    }

    /// Seals with one given version (re-sealing to the current one).
    pub fn seal_with_version(
        &self,
        scope: Scope,
        at: At<'_>,
        plaintext: &[u8],
        version: u32,
    ) -> Result<Vec<u8>, KeyError> {
        let cipher = self.cipher(scope, version)?;
        let nonce = random_bytes::<12>();
        let aad = Self::aad(scope, at, version);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(1 + 4 + 12 + ct.len());
        out.push(FORMAT);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The cipher of one sealed stream (`sealed_stream.rs`): a key derived from `scope`'s data
    /// key `version` and the stream's own random salt, so no two streams share a key (and so
    /// never a key and nonce), however many are sealed under one data key. Fails like
    /// [`Keyring::open`] once the version is destroyed.
    pub fn stream_cipher(&self, scope: Scope, version: u32, salt: &[u8; 32]) -> Result<Aes256Gcm, KeyError> {
        use hmac::Mac;
        let key = self.store.data_key(scope, version)?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(format!("clientflow stream key v1|{}|v{version}|", scope.label()).as_bytes());
        mac.update(salt);
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Aes256Gcm::new((&derived).into()))
    }

    /// Opens a value sealed by [`Keyring::seal`], or a version 1 value sealed with the master
    /// key under `legacy_context` (when the caller's data may still hold one).
    pub fn open(
        &self,
        scope: Scope,
        at: At<'_>,
        sealed: &[u8],
        legacy_context: Option<&str>,
    ) -> Result<Vec<u8>, KeyError> {
        match version_of(sealed) {
            Some(version) => {
                if sealed.len() < 1 + 4 + 12 + 16 {
                    return Err(KeyError::Open);
                }
                let cipher = self.cipher(scope, version)?;
                let (nonce, ct) = sealed[5..].split_at(12);
                let aad = Self::aad(scope, at, version);
                cipher
                    .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
                    .map_err(|_| KeyError::Open)
            }
            None => match legacy_context {
                Some(context) => self.legacy.open(sealed, context).map_err(|_| KeyError::Open),
                None => Err(KeyError::Open),
            },
        }
    }
}

/// The data-key version a value is sealed with; `None` for a version 1 (master key) value.
pub fn version_of(sealed: &[u8]) -> Option<u32> {
    match sealed {
        [FORMAT, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> Keyring {
        Keyring::local(dir, &Sealer::from_key(&[9u8; 32]))
    }

    #[test]
    fn values_are_bound_to_scope_table_column_row_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let (a, b) = (Scope::Org(Uuid::new_v4()), Scope::Org(Uuid::new_v4()));
        let at = At::new("client_contacts", "email", "row-1");
        let sealed = k.seal(a, at, b"ada@example.com").unwrap();
        assert_eq!(version_of(&sealed), Some(1));
        assert_eq!(k.open(a, at, &sealed, None).unwrap(), b"ada@example.com");
        assert!(k.open(b, at, &sealed, None).is_err(), "another organization");
        assert!(k.open(a, At::new("client_contacts", "email", "row-2"), &sealed, None).is_err(), "another row");
        assert!(k.open(a, At::new("client_contacts", "phone", "row-1"), &sealed, None).is_err(), "another column");
        assert!(k.open(a, At::new("clients", "email", "row-1"), &sealed, None).is_err(), "another table");
        let mut forged = sealed.clone();
        forged[4] = 2;
        k.store().create_version(a).unwrap();
        assert!(k.open(a, at, &forged, None).is_err(), "another version");
        // Each organization has its own key, not just its own associated data.
        k.seal(b, at, b"x").unwrap();
        assert_ne!(k.store().data_key(a, 1).unwrap(), k.store().data_key(b, 1).unwrap());
    }

    #[test]
    fn legacy_values_open_until_resealed() {
        let dir = tempfile::tempdir().unwrap();
        let master = Sealer::from_key(&[9u8; 32]);
        let k = ring(dir.path());
        let old = master.seal(b"JBSWY3DP", "totp:u1");
        let at = At::new("users", "totp_secret", "u1");
        assert_eq!(k.open(Scope::Installation, at, &old, Some("totp:u1")).unwrap(), b"JBSWY3DP");
        assert!(k.open(Scope::Installation, at, &old, None).is_err());
        assert_eq!(version_of(&old), None);
    }

    #[test]
    fn rotation_keeps_old_versions_readable_until_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let org = Scope::Org(Uuid::new_v4());
        let at = At::new("files", "contents", "f");
        let v1 = k.seal(org, at, b"one").unwrap();
        assert_eq!(k.store().create_version(org).unwrap(), 2);
        let v2 = k.seal(org, at, b"two").unwrap();
        assert_eq!(version_of(&v2), Some(2));
        assert_eq!(k.open(org, at, &v1, None).unwrap(), b"one");
        assert!(k.store().destroy_version(org, 1).unwrap());
        assert!(matches!(k.open(org, at, &v1, None), Err(KeyError::Missing { .. })), "cached keys go too");
        assert_eq!(k.open(org, at, &v2, None).unwrap(), b"two");
    }

    #[test]
    fn kek_rotation_rewraps_and_shredding_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let (a, b) = (Scope::Org(Uuid::new_v4()), Scope::Org(Uuid::new_v4()));
        let at = At::new("t", "c", "r");
        let sa = k.seal(a, at, b"a").unwrap();
        let sb = k.seal(b, at, b"b").unwrap();
        let su = k.seal(Scope::Installation, at, b"u").unwrap();
        assert_eq!(k.store().rotate_kek().unwrap(), (2, 3));
        assert!(!dir.path().join("kek/v1.key").exists());
        let fresh = ring(dir.path());
        assert_eq!(fresh.open(a, at, &sa, None).unwrap(), b"a");
        assert_eq!(fresh.open(Scope::Installation, at, &su, None).unwrap(), b"u");
        assert_eq!(fresh.store().destroy_scope(a).unwrap(), 1);
        assert!(fresh.open(a, at, &sa, None).is_err());
        assert!(k.open(a, at, &sa, None).is_err(), "another process's cache does not outlive the key");
        assert_eq!(fresh.open(b, at, &sb, None).unwrap(), b"b");
        // Another master key opens nothing in this key store.
        let other = Keyring::local(dir.path(), &Sealer::from_key(&[1u8; 32]));
        assert!(other.open(b, at, &sb, None).is_err());
    }

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = ring(dir.path());
        let org = Uuid::new_v4();
        k.seal(Scope::Org(org), At::new("t", "c", "r"), b"x").unwrap();
        for p in [dir.path().join("kek/v1.key"), dir.path().join(format!("orgs/{org}/v1.key"))] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        assert_eq!(k.store().scopes().unwrap(), vec![Scope::Org(org)]);
    }
}
