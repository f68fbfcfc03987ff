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
