//! Connections as an attacker (or a careless client) uses them: early answers to requests whose
//! body is still on its way, over HTTP/1.1 keep-alive and HTTP/2; connections that never send a
//! request; idle keep-alive connections; more connections than the server has file descriptors.

use std::time::{Duration, Instant};

use crate::support::net::{answer, connect_to, get_healthz, post_late_body};
use axum::body::Bytes;
use clientflow::access::route::{Access, RouteDef, Surface};
use clientflow::platform::http::error::AppError;
use clientflow::route;
use clientflow_test_support::TestApp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

async fn connect(app: &TestApp, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    connect_to(app.addr, &app.cert_path(), alpn).await.expect("TLS handshake")
}

/// Waits for the server to close the connection; returns how long that took, and whether the
/// close was clean (TLS `close_notify`, then end of stream).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<(Duration, bool)> {
    let started = Instant::now();
    let wait = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok().map(|clean| (started.elapsed(), clean))
}

fn routes() -> Vec<RouteDef> {
    let mut routes = clientflow::routes::all();
    routes.push(route!(POST "/api/v1/test/echo", Surface::Api, Access::Public, |body: Bytes| async move {
        format!("{} bytes", body.len())
    }));
    routes.push(route!(POST "/api/v1/test/boom", Surface::Api, Access::Public, || async {
        Err::<String, _>(AppError::Domain(clientflow::platform::error::DomainError::Internal(anyhow::anyhow!("a failure of our own"))))
    }));
    routes
}

/// Every kind of early answer (refused API key, unknown route, wrong method, rate limit, an
/// error of ours) leaves the HTTP/1.1 connection usable: one connection carries them all, each
/// followed by another request.
#[tokio::test]
async fn early_answers_keep_the_http1_connection_usable() {
    let app = TestApp::builder()
        .config(|c| {
            *c.rate_limits.get_mut(clientflow::abuse::limits::PolicyId::AuthIp) =
                clientflow::abuse::limits::LimitConfig::new(1, 600);
        })
        .routes(routes)
        .spawn()
        .await;
    let mut stream = connect(&app, &[b"http/1.1"]).await;
    let cases: &[(&str, &str, Option<u16>)] = &[
        ("/api/v1/clients", "Authorization: Bearer cf_live_nope\r\n", Some(401)),
        ("/no/such/thing", "", Some(404)),
        ("/healthz", "", Some(405)),
        ("/api/v1/test/boom", "", Some(500)),
        // The first sign-in attempt spends the address's budget, the second is refused.
        ("/login", "", None),
        ("/login", "", Some(429)),
    ];
    for (path, extra, expected) in cases {
        for body_len in [20, 200_000] {
            post_late_body(&mut stream, path, extra, body_len).await;
            let res = answer(&mut stream).await;
            if let Some(expected) = expected {
                assert_eq!(res.status, *expected, "POST {path}: {res:?}");
            }
            assert_ne!(res.header("connection"), Some("close"), "POST {path} ({body_len} bytes): {res:?}");
            let next = get_healthz(&mut stream).await;
            assert_eq!(next.status, 200, "the request after POST {path} ({body_len} bytes)");
        }
    }
}

/// A body the server won't wait for (one announced beyond any route's limit, or one held back
/// until `100 Continue`) gets an answer that says `Connection: close`, and a clean close.
#[tokio::test]
async fn an_unread_body_too_large_to_wait_for_closes_the_connection_cleanly() {
    let app = TestApp::builder().routes(routes).spawn().await;

    let mut stream = connect(&app, &[b"http/1.1"]).await;
    let head = "POST /api/v1/test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let res = answer(&mut stream).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    let (_, clean) = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed");
    assert!(clean, "closed without TLS close_notify");

    let mut stream = connect(&app, &[b"http/1.1"]).await;
    let head =
        "POST /no/such/thing HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let res = answer(&mut stream).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    let (_, clean) = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed");
    assert!(clean, "closed without TLS close_notify");
}

/// Sends `len` bytes on an HTTP/2 stream as flow control allows; an error means the server
/// reset the stream under the upload.
async fn upload(send: &mut h2::SendStream<Bytes>, len: usize) -> Result<(), h2::Error> {
    let mut left = len;
    while left > 0 {
        send.reserve_capacity(left.min(256 * 1024));
        let capacity = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(c) => c?,
            None => panic!("stream closed while uploading"),
        };
        let n = capacity.min(left);
        send.send_data(Bytes::from(vec![b'x'; n]), n == left)?;
        left -= n;
    }
    Ok(())
}

async fn h2_body(res: axum::http::Response<h2::RecvStream>) -> Vec<u8> {
    let mut body = res.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// A 3 MB body over HTTP/2 gets the same 413 problem+json as over HTTP/1.1: the stream is not
/// reset under the client while it is still uploading, and the connection goes on serving.
#[tokio::test]
async fn an_oversized_body_over_http2_gets_413_not_a_stream_reset() {
    let app = TestApp::builder().routes(routes).spawn().await;
    let tls = connect(&app, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    for path in ["/api/v1/test/echo", "/api/v1/clients"] {
        let len = 3_000_000;
        let req = axum::http::Request::post(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .header("content-length", len.to_string())
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(req, false).unwrap();
        if let Err(e) = upload(&mut send, len).await {
            panic!("POST {path}: the server reset the stream during the upload: {e}");
        }
        let res = tokio::time::timeout(Duration::from_secs(15), response).await.unwrap().unwrap();
        let status = res.status().as_u16();
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(&h2_body(res).await).unwrap();
        assert_eq!(body["status"], status);
        let expected = if path.ends_with("echo") { 413 } else { 401 };
        assert_eq!(status, expected, "POST {path}: {body}");
        client = client.ready().await.unwrap();
    }
    let (response, _) =
        client.send_request(axum::http::Request::get("https://localhost/healthz").body(()).unwrap(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

/// Connections that finish the TLS handshake and then say nothing, or trickle a request head,
/// are closed at the header deadline, counted from the end of the handshake, whatever ALPN
/// they chose.
#[tokio::test]
async fn silent_and_trickling_connections_are_closed_at_the_header_deadline() {
    let app = TestApp::builder().config(|c| c.server.header_timeout_secs = 1).spawn().await;
    let alpns: [&[&[u8]]; 3] = [&[], &[b"http/1.1"], &[b"h2"]];
    let mut silent = Vec::new();
    for alpn in alpns {
        silent.push(connect(&app, alpn).await);
    }
    for (i, stream) in silent.iter_mut().enumerate() {
        let (after, _) = closed_within(stream, Duration::from_secs(6))
            .await
            .unwrap_or_else(|| panic!("silent connection {i} still open after 6 s"));
        assert!(after < Duration::from_secs(4), "{i}: {after:?}");
    }

    // A request head that never ends, a header every 300 ms.
    let mut stream = connect(&app, &[b"http/1.1"]).await;
    let started = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
                break;
            }
        }
    };
    assert!(tokio::time::timeout(Duration::from_secs(6), trickle).await.is_ok(), "the trickling head was let run");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A client that speaks at once is served as before.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Keep-alive connections with nothing in flight are closed after the idle timeout, HTTP/1.1
/// and HTTP/2 alike.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.idle_timeout_secs = 1;
            c.server.header_timeout_secs = 30;
        })
        .spawn()
        .await;
    let mut stream = connect(&app, &[b"http/1.1"]).await;
    assert_eq!(get_healthz(&mut stream).await.status, 200);
    let (after, clean) = closed_within(&mut stream, Duration::from_secs(6)).await.expect("idle HTTP/1.1 left open");
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(4), "{after:?}");
    assert!(clean, "closed without TLS close_notify");

    let tls = connect(&app, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) =
        client.send_request(axum::http::Request::get("https://localhost/healthz").body(()).unwrap(), true).unwrap();
    let res = response.await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(!h2_body(res).await.is_empty());
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection left open");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

/// At the connection cap, a new connection is closed at once (no handshake, no waiting in the
/// backlog); once a slot is free again the server answers.
#[tokio::test]
async fn at_the_connection_cap_new_connections_are_refused_until_a_slot_frees() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.max_connections = Some(3);
            c.server.header_timeout_secs = 60;
        })
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&app, &[b"http/1.1"]).await);
    }
    let started = Instant::now();
    let refused =
        tokio::time::timeout(Duration::from_secs(5), connect_to(app.addr, &app.cert_path(), &[b"http/1.1"])).await;
    assert!(matches!(refused, Ok(Err(_))), "a fourth connection was not refused");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        if let Ok(s) = connect_to(app.addr, &app.cert_path(), &[b"http/1.1"]).await {
            break s;
        }
        assert!(Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let res = answer(&mut stream).await;
    assert_eq!(res.status, 200);
    let text = String::from_utf8_lossy(&res.body);
    assert!(text.contains("clientflow_http_connections 3"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("clientflow_http_connections_refused_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

/// The real binary with an open-file limit of 256 and 400 connections that complete the
/// handshake and say nothing: it never runs out of descriptors, refuses what it can't hold, and
/// answers `/readyz` once the header deadline has cleared the silent ones.
#[tokio::test]
async fn the_server_stays_reachable_when_connections_outnumber_its_file_descriptors() {
    use std::process::{Command, Stdio};
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let db = clientflow_test_support::TestDb::new().await;
    let passwords = clientflow_test_support::role_passwords().await;
    let app_url = crate::support::url_of(&db.app, Some(&passwords.app));
    let owner_url = crate::support::url_of(&db.owner, Some(&passwords.owner));
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::process::free_port();
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:256", "--"])
        .arg(env!("CARGO_BIN_EXE_clientflow"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CLIENTFLOW_DATA_DIR", dir.path())
        .env("CLIENTFLOW_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CLIENTFLOW_SERVER__HEADER_TIMEOUT_SECS", "2")
        .env("CLIENTFLOW_DATABASE__MAX_CONNECTIONS", "5")
        .env("DATABASE_URL", &app_url)
        .env("CLIENTFLOW_DATABASE__ADMIN_URL", &owner_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).to_string()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cert = dir.path().join("tls/localhost.crt");
    let ready = |cert: std::path::PathBuf| async move {
        let client = clientflow_test_support::client_for(&cert, addr).timeout(Duration::from_secs(3)).build().unwrap();
        client.get(format!("https://localhost:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(cert.exists() && ready(cert.clone()).await) {
        assert!(child.try_wait().unwrap().is_none(), "serve exited: {}", stderr.join().unwrap());
        assert!(Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 400 connections at once, each handshaking and then silent; kept open on our side.
    let attempts: Vec<_> = (0..400)
        .map(|_| {
            let cert = cert.clone();
            tokio::spawn(async move {
                let attempt = connect_to(addr, &cert, &[b"http/1.1"]);
                tokio::time::timeout(Duration::from_secs(10), attempt).await.ok().and_then(Result::ok)
            })
        })
        .collect();
    let mut held = Vec::new();
    for a in attempts {
        if let Some(s) = a.await.unwrap() {
            held.push(s);
        }
    }
    assert!(!held.is_empty() && held.len() < 256, "{} of 400 connections were taken on", held.len());
    // The silent ones are closed at the header deadline, and the server answers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(cert.clone()).await {
        assert!(Instant::now() < deadline, "/readyz unreachable 20 s after the flood");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(held);
    crate::support::process::nix_kill_term(child.id());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let out = stdout.join().unwrap();
    assert!(!out.contains("Too many open files"), "{out}");
    assert!(out.contains("connection limit reached"), "the refusals were not logged:\n{out}");
}
