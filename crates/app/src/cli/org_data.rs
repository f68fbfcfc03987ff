//! `clientflow org export` and `clientflow org import`: the organization's archive
//! (`privacy::export`, `privacy::import`) from the command line.
//!
//! The export is the Data export page's archive, written to a file the operator names, with a
//! progress line on standard error; it is recorded in the organization's audit log after the
//! archive is complete (so the archive's own chain ends where its snapshot was taken). The
//! import checks the whole archive and its audit chain before writing anything, in one
//! transaction.

use std::io::Write as _;
use std::path::Path;

use serde_json::json;
use time::OffsetDateTime;

use super::session::{OpError, OpResult, Report, Session, audit_context, org_principal};
use crate::access::OrgTx;
use crate::audit::{self, Entry};
use crate::config::Config;
use crate::privacy::{export, import};

fn storage_and_keys(config: &Config) -> OpResult<(crate::work::files::Storage, crate::platform::keys::Keyring)> {
    let storage = config.files.open_storage(&config.data_dir).map_err(|e| OpError::Failed(anyhow::anyhow!("{e}")))?;
    let sealer = crate::platform::seal::Sealer::load(config.secrets.master_key.as_ref(), &config.data_dir)
        .map_err(|e| OpError::Failed(anyhow::anyhow!("{e}")))?;
    Ok((storage, config.privacy.keyring(&config.data_dir, &sealer)))
}

/// Writes `org`'s archive to `out`.
pub(crate) async fn export(s: &Session, config: &Config, org: &str, out: &Path, json: bool) -> OpResult<Report> {
    if out.exists() {
        return Err(OpError::invalid("out", format!("{} already exists; choose another file", out.display())));
    }
    let (principal, org) = org_principal(s, org, "org export").await?;
    let (storage, keys) = storage_and_keys(config)?;
    let now = OffsetDateTime::now_utc();
    let (progress, mut watch) = tokio::sync::watch::channel(export::Progress::default());
    let job = export::Job {
        db: &s.db,
        principal: &principal,
        storage: &storage,
        keys: &keys,
        signer: &s.signer,
        now,
        progress,
        // The operator's own file: the plain ZIP.
        sealed_as: None,
    };
    // A progress line on standard error (not with --json, whose output is one document).
    let show = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let p = *watch.borrow_and_update();
            if !json && p.total > 0 {
                let mut err = std::io::stderr();
                let _ = write!(err, "\rexporting: {} of {} rows ({}%)", p.done, p.total, p.done * 100 / p.total.max(1));
                let _ = err.flush();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let started = std::time::Instant::now();
    let written = Box::pin(export::write_archive(job, out)).await;
    let _ = show.await;
    if !json {
        eprintln!();
    }
    let written = written.map_err(OpError::Failed)?;
    let seconds = started.elapsed().as_secs_f64();
    let rows: u64 = written.manifest.counts.values().sum();
    let mut tx = OrgTx::begin(&s.db, &principal).await?;
    audit::record(
        &mut tx,
        &audit_context(s, OffsetDateTime::now_utc()),
        Entry::new("organization.exported", "organization", org.id).after(json!({
            "size_bytes": written.size_bytes, "sha256": hex::encode(written.sha256), "rows": rows,
        })),
    )
    .await?;
    tx.commit().await?;
    let text = format!(
        "exported {} ({}): {rows} rows, {} files, {} bytes in {seconds:.1} s to {}\nSHA-256 {}\n",
        org.slug,
        org.id,
        written.manifest.parts.iter().filter(|p| p.table.is_none()).count(),
        written.size_bytes,
        out.display(),
        hex::encode(written.sha256),
    );
    Ok(Report {
        json: json!({
            "organization": org, "file": out.display().to_string(), "rows": rows, "bytes": written.size_bytes,
            "sha256": hex::encode(written.sha256), "seconds": seconds, "manifest": written.manifest,
        }),
        text,
    })
}

/// Imports the archive at `file`.
pub(crate) async fn import(s: &Session, config: &Config, file: &Path) -> OpResult<Report> {
    let (storage, keys) = storage_and_keys(config)?;
    let job = import::Job { db: &s.db, storage: &storage, keys: &keys, local_key: s.signer.verifying_key() };
    let done = Box::pin(import::import_archive(job, file, |org| crate::access::begin_import(&s.db, &s.operator, org)))
        .await
        .map_err(|e| OpError::Refused(format!("{e:#}")))?;
    let m = &done.manifest;
    let text = format!(
        "imported {} ({}): {} rows, {} files, {} accounts created\n\
         audit log verified: {} events, signed with key {}\n\
         Accounts created by the import have no password: their owners sign in with \"Forgot password\" or Google.\n",
        m.organization_slug,
        m.organization_id,
        done.rows,
        done.files,
        done.accounts_created,
        done.audit_events,
        if done.audit_keys.is_empty() { "(none)".to_string() } else { done.audit_keys.join(", ") },
    );
    Ok(Report {
        json: json!({
            "organization_id": m.organization_id, "slug": m.organization_slug, "rows": done.rows, "files": done.files,
            "accounts_created": done.accounts_created, "audit_events": done.audit_events, "audit_keys": done.audit_keys,
        }),
        text,
    })
}
