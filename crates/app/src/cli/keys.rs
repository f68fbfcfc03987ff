//! `clientflow keys …`: envelope encryption's operator commands (privacy::keys,
//! docs/security/encryption.md).

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::platform::keys::Keyring;
use crate::platform::seal::Sealer;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Where every organization's sealed values stand: key versions in the key store, values
    /// per version, values still to re-seal, TOTP secrets still sealed with the master key.
    Status,
    /// Re-seal every value that is not on its key's newest version (values sealed with the
    /// master key before envelope encryption included), in batches, then destroy the versions
    /// nothing uses. Idempotent; the worker does the same a batch at a time.
    Reseal,
    /// Give an organization a new data-key version: new values use it at once, the re-seal job
    /// moves the old ones, and the old version is destroyed when nothing uses it.
    Rotate {
        /// Organization id, or its slug (a slug needs the auditor role, CLIENTFLOW_DATABASE__AUDITOR_URL).
        #[arg(long)]
        org: String,
    },
    /// A new key-encryption key: every data key is re-wrapped under it and the old one
    /// destroyed. No value is re-sealed.
    RotateKek,
}

fn keyring(config: &Config) -> anyhow::Result<Keyring> {
    let sealer = Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)?;
    Ok(config.privacy.keyring(&config.data_dir, &sealer))
}

pub async fn run(config: Config, json: bool, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let keys = keyring(&config)?;
    match command {
        KeysCommand::RotateKek => {
            let (version, count) = keys.store().rotate_kek().map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("key-encryption key is now v{version}; {count} data keys re-wrapped, the old one destroyed");
            return Ok(ExitCode::SUCCESS);
        }
        KeysCommand::Rotate { org } => {
            let (db, resolved, privileged) = super::connect_app_privileged(&config).await?;
            let named = super::named_org(&db, &privileged, &org).await;
            db.close().await;
            resolved.finish().await;
            let (id, label) = named?;
            let version = crate::privacy::keys::rotate(&keys, id).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{label}: new values are sealed with data key v{version}; run `clientflow keys reseal` (or let the \
                 worker) move the others, then the old version is destroyed"
            );
            return Ok(ExitCode::SUCCESS);
        }
        KeysCommand::Status | KeysCommand::Reseal => {}
    }
    let (db, resolved) = super::connect_app(&config).await?;
    let result = async {
        match command {
            KeysCommand::Status => {
                let status = crate::privacy::keys::status(&db, &keys).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    println!(
                        "key store: {} (key-encryption key v{}); installation key versions {:?}; TOTP secrets still \
                         sealed with the master key: {}",
                        status.key_store, status.kek_version, status.installation_versions, status.legacy_totp_secrets
                    );
                    for o in &status.organizations {
                        println!(
                            "{}: key versions {:?}, values {:?}, to re-seal {}",
                            o.organization_id, o.key_versions, o.values, o.pending
                        );
                    }
                }
            }
            KeysCommand::Reseal => {
                // Each organization's files are re-sealed in its own region's store.
                let storage = crate::state::region_stores(&config, &db)?;
                let retire = std::time::Duration::from_secs(u64::from(config.privacy.retire_after_minutes) * 60);
                let total = crate::privacy::keys::reseal_all(
                    &db,
                    &keys,
                    &storage,
                    i64::from(config.privacy.reseal_batch),
                    retire,
                    |p| {
                        println!(
                            "batch: {} TOTP secrets, {} contacts, {} files, {} API answers re-sealed; {} key versions retired",
                            p.totp_secrets, p.contacts, p.files, p.api_answers, p.retired_versions
                        )
                    },
                )
                .await?;
                println!(
                    "done: {} values re-sealed, {} key versions retired (versions superseded less than {} minutes \
                     ago are retired by a later run or the worker)",
                    total.resealed(),
                    total.retired_versions,
                    config.privacy.retire_after_minutes
                );
            }
            KeysCommand::Rotate { .. } | KeysCommand::RotateKek => unreachable!("handled above"),
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    resolved.finish().await;
    result.map(|_| ExitCode::SUCCESS)
}
