//! A real local S3 server for the tests: `moto_server` (PyPI `moto[server]`), which
//! `scripts/test` installs into a virtualenv under `target/moto`. Each test starts its own on a
//! free port, plain HTTP, or behind a TLS terminator of ours with a self-signed certificate for
//! pgBackRest, which speaks only HTTPS to S3 (moto's own `--ssl` ends connections without TLS's
//! close_notify, which OpenSSL 3 clients take for a truncation attack). The test reads the
//! bucket behind the application's back: the listing and the raw bytes of each object.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "AKIACLIENTFLOWTEST";
pub const SECRET_KEY: &str = "clientflow-test-secret";

fn moto_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto/bin/moto_server");
    venv.exists().then_some(venv)
}

/// A running moto server; stopped when dropped.
pub struct S3Server {
    child: Child,
    /// Where clients connect: moto itself, or the TLS terminator in front of it.
    pub port: u16,
    pub tls: bool,
    http: reqwest::Client,
    terminator: Option<tokio::sync::oneshot::Sender<()>>,
}

impl S3Server {
    /// Starts a server, or says loudly why the test is skipped and returns `None`.
    pub async fn start(tls: bool) -> Option<S3Server> {
        let Some(bin) = moto_server() else {
            eprintln!(
                "\n!!!!! SKIPPED: moto_server is not installed, so S3-compatible storage was NOT tested. \
                 `scripts/test` installs it (pip, into target/moto); or set MOTO_SERVER. !!!!!\n"
            );
            return None;
        };
        let port = super::process::free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("moto_server starts");
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut server = S3Server { child, port, tls: false, http, terminator: None };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server.http.get(server.url("/")).send().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if tls {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            server.port = terminate_tls(port, stopped);
            server.tls = true;
            server.terminator = Some(stop);
        }
        Some(server)
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint())
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let res = self.http.put(self.url(&format!("/{bucket}"))).send().await.expect("create bucket");
        assert!(res.status().is_success(), "create bucket: {}", res.status());
    }

    /// A client of our own for the bucket (signed requests: moto refuses anonymous reads).
    fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_endpoint(self.endpoint())
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_client_options(object_store::ClientOptions::new().with_allow_invalid_certificates(true))
            .with_allow_http(true)
            .build()
            .expect("an S3 client")
    }

    /// Every key in the bucket under `prefix`, as the server lists them.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(prefix);
        let found: Vec<object_store::ObjectMeta> =
            self.store(bucket).list(Some(&prefix)).try_collect().await.expect("list");
        let mut keys: Vec<String> = found.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    /// The stored bytes of one object, exactly as the server keeps them.
    pub async fn raw(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStore;
        let got = self.store(bucket).get(&object_store::path::Path::from(key)).await.expect("get");
        got.bytes().await.expect("bytes").to_vec()
    }

    /// Replaces an object's bytes (to damage it).
    pub async fn overwrite(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStore;
        self.store(bucket).put(&object_store::path::Path::from(key), bytes.into()).await.expect("put");
    }
}

/// A TLS terminator on a free port in front of `upstream`, on a thread of its own (the tests
/// block their runtime while the binary runs). Closes each connection with close_notify.
fn terminate_tls(upstream: u16, stopped: tokio::sync::oneshot::Receiver<()>) -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = rustls_pki_types::CertificateDer::from(certified.cert.der().to_vec());
    let key = rustls_pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serve = async {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stopped => {}
            }
        });
    });
    port
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.terminator.take() {
            let _ = stop.send(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
