//! The cost of envelope encryption, against plaintext references measured in the same run:
//!
//! 1. Per file upload: sealing a file with the organization's data key (key version lookup in
//!    the key store, AES-256-GCM) and storing it with the local storage adapter, against writing
//!    the same plaintext bytes to the same directory; for a small, a medium and a large file.
//! 2. Per sealed field: listing a client's contacts through the service (`clients::contacts`,
//!    which opens each contact's sealed email address and phone number) against the same query
//!    over contacts whose details are plaintext columns; printed per list, per field and as a
//!    ratio. Also the bare `Keyring::seal` / `open` of one field.
//! 3. Per file name: a project's file list through the service (`files::list`, which opens
//!    each sealed name) against the same list over files whose names are plaintext (as before
//!    migration 0054); per list, per name and as a ratio. An upload seals one name besides its
//!    contents: the cost of one field in (2).
//!
//! Run: `cargo bench --bench sealing` (PostgreSQL: `TEST_DATABASE_URL` as for the tests).
//! `--profile dev` reuses the test build, but AES-GCM is then monomorphized into the
//! unoptimized workspace crates and runs at a few MB/s: its file ratios say little about a
//! release build; the per-field cost inside a contact list is the figure that carries over.
//! `BENCH_ITERATIONS` (default 200) and `BENCH_CONTACTS` (default 50) change the size.

#![allow(clippy::print_stdout)] // a benchmark reports on standard output

use std::time::{Duration, Instant};

use clientflow::access::{self, NewOrgCreator, OperatorAuthority, OrgTx};
use clientflow::platform::keys::{At, Scope};
use clientflow::platform::storage::Sealed;
use clientflow::platform::types::Slug;
use clientflow::work::clients::{self, ContactInput};
use clientflow::work::files;
use clientflow_test_support::TestApp;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn per_op(total: Duration, n: u64) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main]
async fn main() {
    let iterations = env_num("BENCH_ITERATIONS", 200);
    let contacts = env_num("BENCH_CONTACTS", 50);
    let app = TestApp::spawn().await;
    let authority = OperatorAuthority::unsafe_assume_cli_operator();
    let mut tx =
        access::begin_new_organization(&app.app_db, NewOrgCreator::Operator(&authority, "bench")).await.unwrap();
    let org = clientflow::tenancy::repo::insert_organization(&mut tx, &Slug::parse("sealing").unwrap(), "Sealing")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let principal = access::operator(&app.app_db, &authority, org.id, "bench").await.unwrap().unwrap();
    let keys = &app.state.keys;
    let scope = Scope::org(org.id);

    // 1. Files.
    println!("file upload: seal + store vs store plaintext ({iterations} iterations each)");
    let dir = app.config.data_dir.join("files");
    let plain_dir = dir.join("plaintext-reference");
    tokio::fs::create_dir_all(&plain_dir).await.unwrap();
    for size in [64 * 1024usize, 1024 * 1024, 8 * 1024 * 1024] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let n = if size > 1024 * 1024 { iterations.div_ceil(8) } else { iterations };
        let started = Instant::now();
        for i in 0..n {
            tokio::fs::write(plain_dir.join(format!("f{i}")), &bytes).await.unwrap();
        }
        let plain = started.elapsed();
        let started = Instant::now();
        for i in 0..n {
            let id = format!("bench-{size}-{i}");
            let sealed = Sealed::seal_with(keys, scope, At::new("files", "contents", &id), &bytes).unwrap();
            app.state.storage.put(&format!("{}/{id}", org.id), sealed).await.unwrap();
        }
        let sealed = started.elapsed();
        println!(
            "  {:>5} KiB: plaintext {:>9.1} µs, sealed {:>9.1} µs per upload; ratio {:.2}",
            size / 1024,
            per_op(plain, n),
            per_op(sealed, n),
            sealed.as_secs_f64() / plain.as_secs_f64()
        );
    }

    // 2. Fields.
    let n = iterations * 20;
    let email = b"ada.lovelace@example.test";
    let at = At::new("client_contacts", "email", "0190b2c4-0000-7000-8000-000000000000");
    let started = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..n {
        sealed = keys.seal(scope, at, email).unwrap();
    }
    let seal = started.elapsed();
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(keys.open(scope, at, &sealed, None).unwrap());
    }
    let open = started.elapsed();
    println!(
        "one field ({} bytes): seal {:.2} µs, open {:.2} µs ({n} each; a key version lookup in the key store each)",
        email.len(),
        per_op(seal, n),
        per_op(open, n)
    );

    let mut tx = OrgTx::begin(&app.app_db, &principal).await.unwrap();
    let sealed_client = clients::repo::create(&mut tx, "Sealed contacts").await.unwrap().id;
    let plain_client = clients::repo::create(&mut tx, "Plaintext contacts").await.unwrap().id;
    tx.commit().await.unwrap();
    let ctx = clientflow::audit::Context::system(app.clock.now_utc(), Some(app.state.audit_signer.clone()));
    let mut db = app.db.admin_conn().await;
    for i in 0..contacts {
        let input = ContactInput {
            name: Some(format!("Person {i}")),
            email: Some(format!("person{i}@example.test")),
            phone: Some(format!("+44 20 7946 {i:04}")),
            title: None,
        };
        clients::add_contact(&app.app_db, keys, &ctx, &principal, sealed_client, &input).await.unwrap();
        sqlx::query(
            "INSERT INTO client_contacts (organization_id, id, client_id, name, email, phone, created_at) \
             VALUES ($1, gen_random_uuid(), $2, $3, $4, $5, now())",
        )
        .bind(org.id)
        .bind(plain_client)
        .bind(format!("Person {i}"))
        .bind(format!("person{i}@example.test"))
        .bind(format!("+44 20 7946 {i:04}"))
        .execute(&mut db)
        .await
        .unwrap();
    }
    // The reference: the same service call, over rows whose details are plaintext columns
    // (nothing to open), so only the opening differs.
    let list = |client| clients::contacts(&app.app_db, keys, &principal, client);
    assert_eq!(list(sealed_client).await.unwrap().len() as u64, contacts);
    assert_eq!(list(plain_client).await.unwrap().len() as u64, contacts);
    let (mut plain, mut sealed) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iterations {
        let started = Instant::now();
        std::hint::black_box(list(plain_client).await.unwrap());
        plain += started.elapsed();
        let started = Instant::now();
        std::hint::black_box(list(sealed_client).await.unwrap());
        sealed += started.elapsed();
    }
    let fields = contacts * 2;
    println!(
        "contact list of {contacts} ({fields} sealed fields): plaintext {:.1} µs, sealed {:.1} µs per list; \
         {:.2} µs per sealed field; ratio {:.2}",
        per_op(plain, iterations),
        per_op(sealed, iterations),
        (sealed.as_secs_f64() - plain.as_secs_f64()) * 1e6 / (iterations * fields) as f64,
        sealed.as_secs_f64() / plain.as_secs_f64()
    );

    // 3. File names: a project's file list through the service (`files::list`, which opens
    // each file's sealed name) against the same list over files whose names are in the plain
    // column, as rows written before names were sealed are (the constraint that refuses them
    // now is lifted for the moment it takes to write them).
    let mut tx = OrgTx::begin(&app.app_db, &principal).await.unwrap();
    let sealed_project = clientflow::work::projects::repo::create(&mut tx, None, "Sealed names").await.unwrap().id;
    let plain_project = clientflow::work::projects::repo::create(&mut tx, None, "Plaintext names").await.unwrap().id;
    tx.commit().await.unwrap();
    sqlx::query("ALTER TABLE files DROP CONSTRAINT files_name_sealed_only").execute(&mut db).await.unwrap();
    for i in 0..contacts {
        let name = format!("Quarterly report {i:04} (final).pdf");
        let id = uuid::Uuid::now_v7();
        let sealed =
            files::seal_name(keys, org.id, clientflow::platform::ids::FileId::from_uuid(id), &name, None).unwrap();
        for (project, name, sealed) in [(sealed_project, None, Some(sealed)), (plain_project, Some(name), None)] {
            sqlx::query(
                "INSERT INTO files (organization_id, id, project_id, name, name_sealed, content_type, size_bytes, sha256, \
                 storage_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'application/pdf', 1, decode(repeat('00', 32), 'hex'), 'nowhere', now())",
            )
            .bind(org.id)
            .bind(if name.is_some() { uuid::Uuid::now_v7() } else { id })
            .bind(project)
            .bind(name)
            .bind(sealed)
            .execute(&mut db)
            .await
            .unwrap();
        }
    }
    sqlx::query("ALTER TABLE files ADD CONSTRAINT files_name_sealed_only CHECK (name IS NULL) NOT VALID")
        .execute(&mut db)
        .await
        .unwrap();
    let (db_ref, principal_ref) = (&app.app_db, &principal);
    let list = |project: clientflow::platform::ids::ProjectId| {
        let filter = files::FileFilter { project_id: Some(project.to_string()), task_id: None };
        let page = clientflow::work::Page { limit: Some(clientflow::work::MAX_PAGE), offset: None };
        async move { files::list(db_ref, keys, principal_ref, &filter, page).await.unwrap() }
    };
    let shown = contacts.min(clientflow::work::MAX_PAGE as u64);
    assert_eq!(list(sealed_project).await.len() as u64, shown);
    assert_eq!(list(plain_project).await.len() as u64, shown);
    let (mut plain, mut sealed) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iterations {
        let started = Instant::now();
        std::hint::black_box(list(plain_project).await);
        plain += started.elapsed();
        let started = Instant::now();
        std::hint::black_box(list(sealed_project).await);
        sealed += started.elapsed();
    }
    println!(
        "file list of {shown} (sealed names): plaintext {:.1} µs, sealed {:.1} µs per list; {:.2} µs per name; \
         ratio {:.2}",
        per_op(plain, iterations),
        per_op(sealed, iterations),
        (sealed.as_secs_f64() - plain.as_secs_f64()) * 1e6 / (iterations * shown) as f64,
        sealed.as_secs_f64() / plain.as_secs_f64()
    );
}
