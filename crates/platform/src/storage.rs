//! Object storage: where sealed file contents are kept.
//!
//! One trait, [`ObjectStorage`], with two adapters: the local disk (a directory under the data
//! directory; the default) and any S3-compatible store (AWS S3, MinIO, Ceph, R2…) through the
//! `object_store` crate. What crosses the trait is [`Sealed`] bytes only: a value that only
//! [`Sealed::seal`] makes, by AES-256-GCM under the organization's key, so plaintext can't leave
//! the process through storage by mistake (the type has no constructor from raw bytes).
//!
//! Keys are made by the application (`<organization uuid>/<file uuid>`), never taken from a
//! request; the adapters still refuse a key that could step outside its directory or prefix.
//! Downloads never go to the store directly (no pre-signed store URLs): they pass through the
//! application's authorized routes and signed links, which check the organization's allowlist.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::keys::{At, KeyError, Keyring, Scope};
use crate::seal::Sealer;
use crate::secret::Secret;

/// Which adapter keeps the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A directory on this machine (`files.dir`, default `<data_dir>/files`).
    #[default]
    Local,
    /// An S3-compatible bucket (`files.s3`).
    S3,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Local => "local",
            StorageKind::S3 => "s3",
        }
    }
}

/// `[files.s3]`: an S3-compatible bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3StorageConfig {
    pub bucket: String,
    /// e.g. `eu-central-1` (S3-compatible stores usually accept any region name).
    pub region: String,
    /// The store's base URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `https://minio.internal:9000`. Empty: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need;
    /// `false` for AWS's virtual-hosted style (`bucket.endpoint/key`). Default true.
    pub path_style: Option<bool>,
    /// A folder inside the bucket to keep the files under (default: the bucket's root).
    pub prefix: Option<String>,
    /// Allow an `http://` endpoint. Only for a store on the same host or a private network:
    /// the contents are sealed, but the credentials' signatures and the metadata travel in clear.
    pub allow_http: bool,
}

impl S3StorageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket.trim().is_empty() {
            return Err(ConfigError::invalid("files.s3.bucket", "set the bucket the files are kept in"));
        }
        if self.region.trim().is_empty() {
            return Err(ConfigError::invalid("files.s3.region", "set the bucket's region (e.g. eu-central-1)"));
        }
        if let Some(endpoint) = self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            let url = url::Url::parse(endpoint)
                .map_err(|e| ConfigError::invalid("files.s3.endpoint", format!("not a URL: {e}")))?;
            match url.scheme() {
                "https" => {}
                "http" if self.allow_http => {}
                "http" => {
                    return Err(ConfigError::invalid(
                        "files.s3.endpoint",
                        "is plain http; use https, or set files.s3.allow_http = true for a store on a private network",
                    ));
                }
                other => return Err(ConfigError::invalid("files.s3.endpoint", format!("unsupported scheme {other}"))),
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(ConfigError::invalid(
                "files.s3.secret_access_key",
                "set both files.s3.access_key_id and files.s3.secret_access_key, or neither (credentials from the environment)",
            ));
        }
        Ok(())
    }
}

/// Bytes sealed with AES-256-GCM for one organization and one purpose: the only thing storage
/// accepts and returns.
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// Seals `plaintext`, bound to `context` (the organization and the object).
    pub fn seal(sealer: &Sealer, plaintext: &[u8], context: &str) -> Sealed {
        Sealed(sealer.seal(plaintext, context))
    }

    /// Opens the contents; fails when they were changed or belong to another context.
    pub fn open(&self, sealer: &Sealer, context: &str) -> anyhow::Result<Vec<u8>> {
        sealer.open(&self.0, context).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Seals `plaintext` with `scope`'s current data key (envelope encryption, `keys.rs`).
    pub fn seal_with(keys: &Keyring, scope: Scope, at: At<'_>, plaintext: &[u8]) -> Result<Sealed, KeyError> {
        Ok(Sealed(keys.seal(scope, at, plaintext)?))
    }

    /// Seals with one given data-key version (re-sealing).
    pub fn seal_with_version(
        keys: &Keyring,
        scope: Scope,
        at: At<'_>,
        plaintext: &[u8],
        version: u32,
    ) -> Result<Sealed, KeyError> {
        Ok(Sealed(keys.seal_with_version(scope, at, plaintext, version)?))
    }

    /// Opens contents sealed by [`Sealed::seal_with`], or by [`Sealed::seal`] under
    /// `legacy_context` (before envelope encryption).
    pub fn open_with(
        &self,
        keys: &Keyring,
        scope: Scope,
        at: At<'_>,
        legacy_context: &str,
    ) -> Result<Vec<u8>, KeyError> {
        keys.open(scope, at, &self.0, Some(legacy_context))
    }

    /// The data-key version, `None` for contents sealed with the master key (version 1).
    pub fn key_version(&self) -> Option<u32> {
        crate::keys::version_of(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// SHA-256 of the sealed bytes: two copies of an object compare equal without opening
    /// either (moving an organization between regions verifies its files this way).
    pub fn digest(&self) -> [u8; 32] {
        crate::crypto::sha256(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where sealed objects are kept. Every method takes a key made by the application.
pub trait ObjectStorage: Send + Sync + 'static {
    fn kind(&self) -> StorageKind;
    /// Stores an object whole (readers never see a partial one).
    fn put<'a>(&'a self, key: &'a str, contents: Sealed) -> BoxFuture<'a, io::Result<()>>;
    /// Reads an object; `NotFound` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Sealed>>;
    /// Removes an object; removing one that isn't there is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>>;
    /// Removes every object whose key starts with `prefix/` and returns how many there were.
    fn delete_all_under<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<usize>>;
}

/// The installation's object storage (cheap to clone).
#[derive(Clone)]
pub struct Storage(Arc<dyn ObjectStorage>);

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.0.kind().as_str())
    }
}

impl std::ops::Deref for Storage {
    type Target = dyn ObjectStorage;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Storage {
    /// The local directory adapter.
    pub fn local(dir: &Path) -> Self {
        Storage(Arc::new(LocalDisk { dir: dir.to_path_buf() }))
    }

    /// The S3 adapter (nothing is contacted until the first request).
    pub fn s3(config: &S3StorageConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Storage(Arc::new(S3Store::new(config)?)))
    }

    /// The adapter `kind` names, configured from `dir` (local) or `s3`.
    pub fn from_config(kind: StorageKind, dir: &Path, s3: Option<&S3StorageConfig>) -> Result<Self, ConfigError> {
        match kind {
            StorageKind::Local => Ok(Self::local(dir)),
            StorageKind::S3 => match s3 {
                Some(c) => Self::s3(c),
                None => Err(ConfigError::invalid(
                    "files.s3",
                    "files.storage is s3: set files.s3.bucket, files.s3.region and (for a store other than AWS) files.s3.endpoint",
                )),
            },
        }
    }
}

/// Keys are ASCII letters, digits, `-` and `_` in `/`-separated segments, none empty: nothing
/// that could climb out of the directory or prefix.
fn check_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')));
    if ok { Ok(()) } else { Err(io::Error::new(io::ErrorKind::InvalidInput, "not a storage key")) }
}

struct LocalDisk {
    dir: PathBuf,
}

impl LocalDisk {
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }
}

impl ObjectStorage for LocalDisk {
    fn kind(&self) -> StorageKind {
        StorageKind::Local
    }

    fn put<'a>(&'a self, key: &'a str, contents: Sealed) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let tmp = path.with_extension("tmp");
            tokio::fs::write(&tmp, contents.0).await?;
            tokio::fs::rename(&tmp, &path).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Sealed>> {
        Box::pin(async move { Ok(Sealed(tokio::fs::read(self.path(key)?).await?)) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn delete_all_under<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            let dir = self.path(prefix)?;
            let mut count = 0;
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let mut entries = match tokio::fs::read_dir(&d).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                while let Some(entry) = entries.next_entry().await? {
                    if entry.file_type().await?.is_dir() {
                        stack.push(entry.path());
                    } else {
                        count += 1;
                    }
                }
            }
            match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(count),
            }
        })
    }
}

struct S3Store {
    store: Arc<dyn object_store::ObjectStore>,
}

impl S3Store {
    fn new(c: &S3StorageConfig) -> Result<Self, ConfigError> {
        use object_store::aws::AmazonS3Builder;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&c.bucket)
            .with_region(&c.region)
            .with_virtual_hosted_style_request(!c.path_style.unwrap_or(true))
            .with_allow_http(c.allow_http);
        if let Some(endpoint) = c.endpoint.as_deref().filter(|e| !e.is_empty()) {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
            builder = builder.with_access_key_id(id.expose()).with_secret_access_key(secret.expose());
        }
        let s3 = builder.build().map_err(|e| ConfigError::invalid("files.s3", e.to_string()))?;
        let store: Arc<dyn object_store::ObjectStore> = match c.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
            _ => Arc::new(s3),
        };
        Ok(Self { store })
    }
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

fn object_path(key: &str) -> io::Result<object_store::path::Path> {
    check_key(key)?;
    object_store::path::Path::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

impl ObjectStorage for S3Store {
    fn kind(&self) -> StorageKind {
        StorageKind::S3
    }

    fn put<'a>(&'a self, key: &'a str, contents: Sealed) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = object_path(key)?;
            self.store.put(&path, contents.0.into()).await.map_err(io_error)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Sealed>> {
        Box::pin(async move {
            let path = object_path(key)?;
            let got = self.store.get(&path).await.map_err(io_error)?;
            Ok(Sealed(got.bytes().await.map_err(io_error)?.to_vec()))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = object_path(key)?;
            match self.store.delete(&path).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other.map_err(io_error),
            }
        })
    }

    fn delete_all_under<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            let prefix = object_path(prefix)?;
            // Listed first, then removed in batches (DeleteObjects); an object written while this
            // runs is left for the next pass, never half-removed.
            let found: Vec<object_store::path::Path> =
                self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.map_err(io_error)?;
            let count = found.len();
            let locations = futures::stream::iter(found.into_iter().map(Ok)).boxed();
            self.store.delete_stream(locations).try_collect::<Vec<_>>().await.map_err(io_error)?;
            Ok(count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside() {
        for good in ["a", "0f1e/9a8b-77", "org_1/file-2"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/../b", "a/.", "a b", "a\\b", "a%2e"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_needs_saying_so() {
        let mut c = S3StorageConfig {
            bucket: "b".into(),
            region: "r".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.allow_http = true;
        assert!(c.validate().is_ok());
        c.access_key_id = Some(Secret::new("id"));
        assert!(c.validate().is_err(), "a key id without its secret");
    }
}
