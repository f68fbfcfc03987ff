//! One installation, however many processes: every `serve` and `worker` of an installation must
//! share its master key (sessions' CSRF tokens, bot-check challenges, sealed secrets, unsubscribe
//! links), its audit signing key (checkpoints) and its file store. Started with its own defaults,
//! a second process would start fine and then fail later and quietly: forms from one node
//! refused by the other, a second factor that can't be opened, checkpoints that read as forged,
//! files only one node has.
//!
//! So the first process records fingerprints of the three in `installation_identity`, and every
//! process compares its own before it serves, refusing to start with a message that names the
//! setting to share; `doctor` makes the same comparison. The fingerprints reveal nothing: the
//! master key's is a key derived from it for this purpose only, the signing key's is a digest of
//! its public half, the file store's is a random marker kept in the store.

use std::path::{Path, PathBuf};

use rand::RngCore;
use sqlx::PgConnection;

use crate::config::Config;
use crate::platform::crypto::sha256;
use crate::platform::db::Db;
use crate::platform::seal::Sealer;

/// What this process would record, or must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub master_key: String,
    pub audit_key: String,
    pub file_store: String,
}

/// The file store's marker: a random id, written once into the store every process shares.
const STORE_MARKER: &str = ".clientflow-store-id";

impl Identity {
    /// This process's identity; creates the file store's marker when the store has none.
    pub fn of(config: &Config, sealer: &Sealer, audit_key: &ed25519_dalek::VerifyingKey) -> anyhow::Result<Self> {
        Self::build(config, sealer, audit_key, true)
    }

    /// The same without writing anything (`doctor`): a store without a marker reads as
    /// `local:(no marker)`.
    pub fn peek(config: &Config, sealer: &Sealer, audit_key: &ed25519_dalek::VerifyingKey) -> anyhow::Result<Self> {
        Self::build(config, sealer, audit_key, false)
    }

    fn build(
        config: &Config,
        sealer: &Sealer,
        audit_key: &ed25519_dalek::VerifyingKey,
        create: bool,
    ) -> anyhow::Result<Self> {
        let master = crate::state::derive_key(sealer, "clientflow installation fingerprint v1");
        Ok(Identity {
            master_key: hex::encode(&master[..16]),
            audit_key: hex::encode(&sha256(audit_key.as_bytes())[..16]),
            file_store: match (&config.files.storage, &config.files.s3) {
                (crate::work::files::StorageKind::S3, Some(s3)) => format!(
                    "s3:{}/{}/{}",
                    s3.endpoint.as_deref().unwrap_or("aws"),
                    s3.bucket,
                    s3.prefix.as_deref().unwrap_or("")
                ),
                _ => local_store_marker(&files_dir(config), create)?,
            },
        })
    }

    /// What differs between `self` (this process) and `recorded` (the installation), each with
    /// the setting to share.
    pub fn differences(&self, recorded: &Identity, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if self.master_key != recorded.master_key {
            out.push(format!(
                "this process's master key is not the installation's: set secrets.master_key \
                 (CLIENTFLOW_SECRETS__MASTER_KEY) to the key the other processes use (theirs is in their \
                 <data_dir>/secrets/master.key unless configured); this process's default would be {}",
                config.data_dir.join("secrets/master.key").display()
            ));
        }
        if self.audit_key != recorded.audit_key {
            out.push(format!(
                "this process's audit signing key is not the installation's: set audit.signing_key \
                 (CLIENTFLOW_AUDIT__SIGNING_KEY) to the key the other processes use (theirs is in their \
                 <data_dir>/secrets/audit-signing.key unless configured); this process's default would be {}",
                config.data_dir.join("secrets/audit-signing.key").display()
            ));
        }
        if self.file_store != recorded.file_store {
            out.push(format!(
                "this process's file store ({}) is not the installation's ({}): point files.dir \
                 (CLIENTFLOW_FILES__DIR) at the directory every process shares (the one holding the \
                 installation's {STORE_MARKER}), or files.storage = \"s3\" and files.s3 at the same bucket",
                describe_store(&self.file_store, Some(config)),
                describe_store(&recorded.file_store, None)
            ));
        }
        out
    }
}

/// A store for a message: this process's with its directory, the installation's by its id.
fn describe_store(id: &str, mine: Option<&Config>) -> String {
    match (id.starts_with("local:"), mine) {
        (true, Some(config)) => format!("{}, {id}", files_dir(config).display()),
        _ => id.to_string(),
    }
}

pub fn files_dir(config: &Config) -> PathBuf {
    config.files.dir.clone().unwrap_or_else(|| config.data_dir.join("files"))
}

fn local_store_marker(dir: &Path, create: bool) -> anyhow::Result<String> {
    let path = dir.join(STORE_MARKER);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(format!("local:{}", id.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e} (files.dir)", path.display()),
    }
    if !create {
        return Ok("local:(no marker)".to_string());
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e} (files.dir)", dir.display()))?;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let id = hex::encode(id);
    // Two processes creating it at once: the first one written wins, and both read it back.
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).and_then(|mut f| {
        use std::io::Write;
        f.write_all(id.as_bytes())
    });
    match written {
        Ok(()) => Ok(format!("local:{id}")),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let id = std::fs::read_to_string(&path)?;
            Ok(format!("local:{}", id.trim()))
        }
        Err(e) => anyhow::bail!("cannot write {}: {e} (files.dir)", path.display()),
    }
}

/// The installation's recorded identity, if any process recorded one yet.
pub async fn recorded(conn: &mut PgConnection) -> sqlx::Result<Option<Identity>> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT master_key_fingerprint, audit_key_fingerprint, file_store FROM installation_identity")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(master_key, audit_key, file_store)| Identity { master_key, audit_key, file_store }))
}

/// Records `mine` if this is the installation's first process, then compares: an error naming
/// every setting that differs.
pub async fn claim(db: &Db, mine: &Identity, config: &Config) -> anyhow::Result<()> {
    let mut tx = db.global().await?;
    sqlx::query(
        "INSERT INTO installation_identity (master_key_fingerprint, audit_key_fingerprint, file_store)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&mine.master_key)
    .bind(&mine.audit_key)
    .bind(&mine.file_store)
    .execute(&mut *tx)
    .await?;
    let recorded = recorded(&mut tx).await?.ok_or_else(|| anyhow::anyhow!("installation identity not recorded"))?;
    tx.commit().await?;
    let differences = mine.differences(&recorded, config);
    if differences.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "refusing to start: this process is not set up like the rest of this installation (every process \
             shares the database, its keys and its file store; docs/deploy.md):\n  - {}",
            differences.join("\n  - ")
        )
    }
}
