//! A TCP proxy in front of PostgreSQL that a test can cut: the database "goes away" for the app
//! behind it (open connections dropped, new ones refused) and comes back on the same address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// Where the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Upstream {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Upstream {
    /// The server behind connection options (its Unix socket, or host and port).
    pub fn of(options: &PgConnectOptions) -> Self {
        match options.get_socket() {
            Some(dir) => Upstream::Unix(dir.join(format!(".s.PGSQL.{}", options.get_port()))),
            None => Upstream::Tcp(options.get_host().to_string(), options.get_port()),
        }
    }
}

pub struct TcpProxy {
    addr: SocketAddr,
    upstream: Upstream,
    accept: Option<JoinHandle<()>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: Upstream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Self { addr, upstream, accept: None, links: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let links = self.links.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    let _ = pipe(client, &upstream).await;
                });
                links.lock().unwrap_or_else(|e| e.into_inner()).push(link);
            }
        }));
    }

    /// The database goes away: the listener closes (new connections are refused) and every
    /// open connection is dropped.
    pub fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for link in self.links.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            link.abort();
        }
    }

    /// The database is back, on the same address.
    pub async fn restore(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "proxy port not free yet");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn pipe(mut client: TcpStream, upstream: &Upstream) -> std::io::Result<()> {
    match upstream {
        Upstream::Tcp(host, port) => {
            let mut server = TcpStream::connect((host.as_str(), *port)).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        Upstream::Unix(path) => {
            let mut server = UnixStream::connect(path).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
    }
    Ok(())
}
