//! Files kept in an S3-compatible bucket, against a real local S3 server (moto, started by the
//! test; `scripts/test` installs it): upload, download (by the service and by a signed link),
//! delete, an organization's objects removed, and what the bucket holds is ciphertext, read
//! behind the application's back. Skipped, saying so loudly, only when moto isn't installed.

use clientflow::audit::Context;
use clientflow::config::Config;
use clientflow::platform::error::DomainError;
use clientflow::work::files::{self, S3StorageConfig, StorageKind};
use clientflow_test_support::TestApp;

use crate::support::s3::{self, S3Server};
use crate::support::seed_org;

const BUCKET: &str = "clientflow-files";
const PREFIX: &str = "tenant-files";

fn ctx(app: &TestApp) -> Context {
    Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()))
}

fn s3_config(server: &S3Server) -> S3StorageConfig {
    S3StorageConfig {
        bucket: BUCKET.into(),
        region: s3::REGION.into(),
        endpoint: Some(server.endpoint()),
        access_key_id: Some(clientflow::platform::secret::Secret::new(s3::ACCESS_KEY)),
        secret_access_key: Some(clientflow::platform::secret::Secret::new(s3::SECRET_KEY)),
        path_style: Some(true),
        prefix: Some(PREFIX.into()),
        allow_http: true,
    }
}

async fn upload(app: &TestApp, org: &crate::support::SeededOrg, name: &str, text: &[u8]) -> files::FileMeta {
    let up =
        files::Upload { project_id: org.project, task_id: None, name, bytes: text.to_vec(), shared_with_client: false };
    files::upload(&app.app_db, &app.state.storage, &app.state.keys, 1 << 20, &ctx(app), &org.principal, up)
        .await
        .unwrap()
}

#[tokio::test]
async fn files_in_an_s3_bucket_are_sealed_served_signed_and_removed_with_their_organization() {
    let Some(server) = S3Server::start(false).await else { return };
    server.create_bucket(BUCKET).await;
    let s3 = s3_config(&server);
    let app = TestApp::builder()
        .config(move |c| {
            c.files.storage = StorageKind::S3;
            c.files.s3 = Some(s3);
        })
        .spawn()
        .await;
    assert_eq!(app.config.object_storage(), StorageKind::S3);
    assert_eq!(app.state.storage.kind(), StorageKind::S3);
    let db = &app.app_db;
    let a = seed_org(db, "bucket-a").await;
    let b = seed_org(db, "bucket-b").await;

    let secret = b"Board minutes: the Hartley acquisition closes on 2026-04-01 at 41.5M".to_vec();
    let report = upload(&app, &a, "minutes.txt", &secret).await;
    let notes = upload(&app, &a, "notes.txt", b"second file of alpha, also confidential").await;
    let other = upload(&app, &b, "bravo.txt", b"bravo's own file").await;

    // The bucket holds one object per file, under the organization's folder.
    let mut expected = vec![
        format!("{PREFIX}/{}/{}", a.id, report.id),
        format!("{PREFIX}/{}/{}", a.id, notes.id),
        format!("{PREFIX}/{}/{}", b.id, other.id),
    ];
    expected.sort();
    assert_eq!(server.keys(BUCKET, PREFIX).await, expected);
    // Not a file on this machine.
    assert!(!app.config.data_dir.join("files").exists(), "nothing written to the local directory");

    // What the store keeps is ciphertext: no fragment of the contents, and not openable as another file.
    let key = format!("{PREFIX}/{}/{}", a.id, report.id);
    let raw = server.raw(BUCKET, &key).await;
    assert!(raw.len() > secret.len(), "nonce and tag added");
    for window in secret.windows(8) {
        assert!(!raw.windows(8).any(|w| w == window), "plaintext fragment {:?} in the stored object", window);
    }
    assert!(!raw.windows(7).any(|w| w == b"Hartley"));

    // Download through the service and through a signed link.
    let (_, bytes) = files::download(db, &app.state.storage, &app.state.keys, &a.principal, report.id).await.unwrap();
    assert_eq!(bytes, secret);
    let signing = files::LinkSigning {
        base: &app.base_url,
        key: &app.state.file_link_key,
        minutes: app.config.files.link_minutes,
    };
    let (_, link, _) =
        files::issue_link(db, &app.state.keys, &ctx(&app), &a.principal, signing, report.id).await.unwrap();
    let res = app.client.get(&link).send().await.unwrap();
    assert_eq!(res.status(), 200, "{link}");
    assert_eq!(res.bytes().await.unwrap().as_ref(), secret.as_slice());
    // The link is short-lived whatever the store.
    app.clock.advance(time::Duration::minutes(i64::from(app.config.files.link_minutes) + 1));
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 403, "an expired link");
    // Another tenant can't read it.
    assert!(matches!(
        files::download(db, &app.state.storage, &app.state.keys, &b.principal, report.id).await,
        Err(DomainError::NotFound)
    ));

    // A changed object is refused, not served: the seal is checked on the way back.
    let mut damaged = raw.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    server.overwrite(BUCKET, &key, damaged).await;
    assert!(matches!(
        files::download(db, &app.state.storage, &app.state.keys, &a.principal, report.id).await,
        Err(DomainError::Internal(_))
    ));
    // Another file's object put in its place is refused too (sealed to its own organization and id).
    let notes_raw = server.raw(BUCKET, &format!("{PREFIX}/{}/{}", a.id, notes.id)).await;
    server.overwrite(BUCKET, &key, notes_raw).await;
    assert!(matches!(
        files::download(db, &app.state.storage, &app.state.keys, &a.principal, report.id).await,
        Err(DomainError::Internal(_))
    ));

    // Deleting a file removes its object.
    files::delete(db, &app.state.storage, &ctx(&app), &a.principal, notes.id).await.unwrap();
    let left = server.keys(BUCKET, PREFIX).await;
    assert!(!left.contains(&format!("{PREFIX}/{}/{}", a.id, notes.id)), "{left:?}");
    assert_eq!(left.len(), 2);

    // Removing an organization's contents removes all of its objects and only its.
    let removed = files::remove_organization_contents(&app.state.storage, a.id).await.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(server.keys(BUCKET, &format!("{PREFIX}/{}", a.id)).await, Vec::<String>::new());
    assert_eq!(server.keys(BUCKET, PREFIX).await, vec![format!("{PREFIX}/{}/{}", b.id, other.id)]);
    let (_, bytes) = files::download(db, &app.state.storage, &app.state.keys, &b.principal, other.id).await.unwrap();
    assert_eq!(bytes, b"bravo's own file");
    // Twice is harmless.
    assert_eq!(files::remove_organization_contents(&app.state.storage, a.id).await.unwrap(), 0);
}

#[tokio::test]
async fn the_local_disk_removes_an_organizations_files_too() {
    let app = TestApp::spawn().await;
    assert_eq!(app.config.object_storage(), StorageKind::Local);
    let a = seed_org(&app.app_db, "disk-a").await;
    let b = seed_org(&app.app_db, "disk-b").await;
    let one = upload(&app, &a, "one.txt", b"one").await;
    upload(&app, &a, "two.txt", b"two").await;
    let kept = upload(&app, &b, "kept.txt", b"kept").await;
    let dir = app.config.data_dir.join("files");
    assert!(dir.join(format!("{}/{}", a.id, one.id)).exists());
    assert_eq!(files::remove_organization_contents(&app.state.storage, a.id).await.unwrap(), 2);
    assert!(!dir.join(a.id.to_string()).exists());
    assert!(dir.join(format!("{}/{}", b.id, kept.id)).exists());
}

#[test]
fn object_storage_and_error_reports_are_read_from_the_configuration() {
    let vars = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let c = Config::load_from(None, &[]).unwrap();
    assert_eq!(c.object_storage(), StorageKind::Local);
    assert!(!c.sentry_enabled());

    let c = Config::load_from(
        None,
        &vars(&[
            ("CLIENTFLOW_FILES__STORAGE", "s3"),
            ("CLIENTFLOW_FILES__S3__BUCKET", "files"),
            ("CLIENTFLOW_FILES__S3__REGION", "eu-central-1"),
            ("CLIENTFLOW_FILES__S3__ENDPOINT", "https://s3.example.net"),
            ("CLIENTFLOW_SENTRY__DSN", "https://public@sentry.example.net/7"),
        ]),
    )
    .unwrap();
    assert_eq!(c.object_storage(), StorageKind::S3);
    assert!(c.sentry_enabled());

    // Said, not guessed: S3 without a bucket, plain http without saying so, a broken DSN.
    let err = Config::load_from(None, &vars(&[("CLIENTFLOW_FILES__STORAGE", "s3")])).unwrap_err();
    assert!(err.to_string().contains("files.s3"), "{err}");
    let err = Config::load_from(
        None,
        &vars(&[
            ("CLIENTFLOW_FILES__STORAGE", "s3"),
            ("CLIENTFLOW_FILES__S3__BUCKET", "files"),
            ("CLIENTFLOW_FILES__S3__REGION", "eu-central-1"),
            ("CLIENTFLOW_FILES__S3__ENDPOINT", "http://s3.example.net"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("files.s3.endpoint"), "{err}");
    let err = Config::load_from(None, &vars(&[("CLIENTFLOW_SENTRY__DSN", "not a dsn")])).unwrap_err();
    assert!(err.to_string().contains("sentry.dsn"), "{err}");
}
