//! Transport: TLS 1.3 only, and plain HTTP only redirects.

use std::sync::Arc;
use std::time::Duration;

use clientflow::platform::http::server;
use clientflow_test_support::TestApp;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client_config(app: &TestApp, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(app.cert_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn handshake(
    app: &TestApp,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let connector = tokio_rustls::TlsConnector::from(client_config(app, versions));
    let tcp = tokio::net::TcpStream::connect(app.addr).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

#[tokio::test]
async fn tls13_clients_connect_and_tls12_clients_are_refused() {
    let app = TestApp::spawn().await;
    let mut stream = handshake(&app, &[&rustls::version::TLS13]).await.expect("TLS 1.3 handshake");
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("strict-transport-security: max-age="));

    // A client that offers both still gets 1.3.
    let stream = handshake(&app, &[&rustls::version::TLS12, &rustls::version::TLS13]).await.unwrap();
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

    let refused = handshake(&app, &[&rustls::version::TLS12]).await;
    assert!(refused.is_err(), "a TLS 1.2-only handshake must fail");

    // And through the ordinary HTTP client (HTTP/2 by ALPN).
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn plain_http_only_redirects_to_the_configured_https_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_redirect(listener, "https://clientflow.example".into(), async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res =
        client.get(format!("http://{addr}/app/clients?page=2")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "https://clientflow.example/app/clients?page=2");
    let res = client.post(format!("http://{addr}/api/v1/clients")).body("x").send().await.unwrap();
    assert_eq!(res.status(), 308, "no content is ever served over plain HTTP");
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

/// `clientflow doctor` reports how long the configured certificate has left, self-signed or
/// from files: ok with the date, a warning within 30 days, a failure once expired.
#[tokio::test]
async fn doctor_reports_the_certificate_expiry() {
    use clientflow::platform::http::tls::generate_self_signed_for;
    let db = clientflow_test_support::TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let now = time::OffsetDateTime::now_utc();
    let days = time::Duration::days;
    let doctor = |dir: std::path::PathBuf, extra: Vec<(&'static str, String)>| {
        let (app_url, owner_url) = (app_url.clone(), owner_url.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let mut c = crate::support::process::bin();
                c.arg("doctor")
                    .env("CLIENTFLOW_DATA_DIR", &dir)
                    .env("DATABASE_URL", app_url)
                    .env("CLIENTFLOW_DATABASE__ADMIN_URL", owner_url);
                for (k, v) in extra {
                    c.env(k, v);
                }
                c.output().unwrap()
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let tls_line = text.lines().find(|l| l.contains(" tls ")).unwrap_or_default().to_string();
            (out.status.success(), tls_line, text)
        }
    };
    let self_signed = |from: i64, to: i64| {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        generate_self_signed_for(
            &tls.join("localhost.crt"),
            &tls.join("localhost.key"),
            now + days(from),
            now + days(to),
        )
        .unwrap();
        dir
    };

    let fresh = self_signed(-1, 89);
    let (ok, line, text) = doctor(fresh.path().to_path_buf(), vec![]).await;
    assert!(ok, "{text}");
    assert!(line.starts_with("ok") && line.contains("valid until") && line.contains("(88 days)"), "{line}");

    let soon = self_signed(-80, 10);
    let (ok, line, text) = doctor(soon.path().to_path_buf(), vec![]).await;
    assert!(ok, "a warning is not a failure: {text}");
    assert!(line.starts_with("warn") && line.contains("expires on") && line.contains("renews it at start"), "{line}");
    // doctor only reports: the certificate is still the one about to expire.
    let again = doctor(soon.path().to_path_buf(), vec![]).await.1;
    assert!(again.starts_with("warn"), "{again}");

    let expired = self_signed(-100, -3);
    let (ok, line, _) = doctor(expired.path().to_path_buf(), vec![]).await;
    assert!(!ok);
    assert!(line.starts_with("FAIL") && line.contains("expired on"), "{line}");

    // Files: the operator's own certificate, expired.
    let files = self_signed(-400, -1);
    let (cert, key) = (files.path().join("tls/localhost.crt"), files.path().join("tls/localhost.key"));
    let data = tempfile::tempdir().unwrap();
    let extra = vec![
        ("CLIENTFLOW_SERVER__TLS", "files".to_string()),
        ("CLIENTFLOW_SERVER__TLS_CERT_FILE", cert.display().to_string()),
        ("CLIENTFLOW_SERVER__TLS_KEY_FILE", key.display().to_string()),
    ];
    let (ok, line, _) = doctor(data.path().to_path_buf(), extra).await;
    assert!(!ok);
    assert!(line.starts_with("FAIL") && line.contains("expired on") && line.contains("tls_cert_file"), "{line}");
}
