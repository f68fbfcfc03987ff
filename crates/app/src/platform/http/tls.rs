//! TLS 1.3 only, with rustls and the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::platform::config::{Config, TlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Generated { cert: PathBuf },
    Existing { cert: PathBuf },
    Files { cert: PathBuf },
}

/// A rustls server configuration accepting TLS 1.3 and nothing else, offering HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(format!("certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS configuration for `config`, generating a self-signed certificate for localhost
/// under the data directory when that is the mode. `None` in proxy mode.
pub fn load(config: &Config) -> Result<Option<(Arc<ServerConfig>, CertificateSource)>, TlsError> {
    match config.server.tls {
        TlsMode::Proxy => Ok(None),
        TlsMode::Files => {
            let cert = config.server.tls_cert_file.clone().unwrap_or_default();
            let key = config.server.tls_key_file.clone().unwrap_or_default();
            let tls = server_config(read_certs(&cert)?, read_key(&key)?)?;
            Ok(Some((tls, CertificateSource::Files { cert })))
        }
        TlsMode::SelfSigned => {
            let dir = config.data_dir.join("tls");
            let cert = dir.join("localhost.crt");
            let key = dir.join("localhost.key");
            let source = if cert.exists() && key.exists() {
                CertificateSource::Existing { cert: cert.clone() }
            } else {
                generate_self_signed(&cert, &key)?;
                CertificateSource::Generated { cert: cert.clone() }
            };
            let tls = server_config(read_certs(&cert)?, read_key(&key)?)?;
            Ok(Some((tls, source)))
        }
    }
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`; the key is written 0600.
pub fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Setup(e.to_string()))?;
    crate::platform::fsutil::write_private(key_path, certified.key_pair.serialize_pem().as_bytes())
        .map_err(TlsError::Setup)?;
    crate::platform::fsutil::write_private(cert_path, certified.cert.pem().as_bytes()).map_err(TlsError::Setup)?;
    Ok(())
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Certificate { path: path.display().to_string(), message };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err("contains no certificate".into()));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Certificate {
        path: path.display().to_string(),
        message: format!("cannot read a PEM private key: {e}"),
    })
}
