//! TLS 1.3 only, with rustls and the `ring` provider.
//!
//! The self-signed certificate (`server.tls = "self-signed"`) is for localhost: valid for
//! [`SELF_SIGNED_DAYS`], named "ClientFlow local (localhost)", organization ClientFlow, and
//! replaced at start when it has less than [`RENEW_WITHIN_DAYS`] left (or is not valid now, or
//! was made by an older version for a far longer time). `clientflow doctor` reports the expiry
//! of whichever certificate is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::RwLock;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{PlatformSettings, TlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// How long a generated self-signed certificate is valid.
pub const SELF_SIGNED_DAYS: i64 = 90;
/// A certificate with less than this left is renewed at start (self-signed) or reported by
/// `doctor` (any).
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// The subject of the self-signed certificate.
pub const SELF_SIGNED_COMMON_NAME: &str = "ClientFlow local (localhost)";
pub const SELF_SIGNED_ORGANIZATION: &str = "ClientFlow";

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Generated {
        cert: PathBuf,
    },
    /// The self-signed certificate was replaced; `previous` says why.
    Renewed {
        cert: PathBuf,
        previous: String,
    },
    Existing {
        cert: PathBuf,
    },
    Files {
        cert: PathBuf,
    },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
}

/// How a certificate's validity stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    NotYetValid,
    Expired,
    /// Valid, with less than [`RENEW_WITHIN_DAYS`] left.
    ExpiresSoon,
    Valid,
}

impl Validity {
    pub fn standing(&self, now: time::OffsetDateTime) -> Standing {
        if now < self.not_before {
            Standing::NotYetValid
        } else if now >= self.not_after {
            Standing::Expired
        } else if self.not_after - now < time::Duration::days(RENEW_WITHIN_DAYS) {
            Standing::ExpiresSoon
        } else {
            Standing::Valid
        }
    }

    /// Why a self-signed certificate with this validity is to be replaced at `now`, if it is.
    pub fn renewal_reason(&self, now: time::OffsetDateTime) -> Option<String> {
        let until = format_date(self.not_after);
        match self.standing(now) {
            Standing::Expired => Some(format!("expired on {until}")),
            Standing::NotYetValid => Some(format!("not valid before {}", format_date(self.not_before))),
            Standing::ExpiresSoon => Some(format!("expires on {until}")),
            // Made by an older version, valid for centuries.
            Standing::Valid if self.not_after - self.not_before > time::Duration::days(SELF_SIGNED_DAYS + 1) => {
                Some(format!("valid until {until}, far longer than {SELF_SIGNED_DAYS} days"))
            }
            Standing::Valid => None,
        }
    }
}

/// `2026-03-05 12:00 UTC`.
pub fn format_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// A rustls server configuration accepting TLS 1.3 and nothing else, offering HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(Arc::new(rustls::sign::SingleCertAndKey::from(certified_key(certs, key)?)))
}

/// [`server_config`] with the certificate chosen by `resolver` at each handshake.
fn server_config_with(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A chain and its key, checked to fit together.
fn certified_key(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| TlsError::Setup(format!("certificate and key do not fit together: {e}")))
}

/// How often a running server looks at its self-signed certificate's end date.
pub const RENEWAL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// The self-signed certificate being served. A server that runs for months renews it in place
/// (see [`SelfSignedCertificate::keep_renewed`]): the next handshake gets the new one.
#[derive(Debug)]
pub struct SelfSignedCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Validity)>,
}

impl ResolvesServerCert for SelfSignedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

impl SelfSignedCertificate {
    fn read(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, Validity), TlsError> {
        let certs = read_certs(cert)?;
        let validity = certificate_validity(&certs[0]).ok_or_else(|| TlsError::Certificate {
            path: cert.display().to_string(),
            message: "cannot read its validity period".into(),
        })?;
        Ok((Arc::new(certified_key(certs, read_key(key)?)?), validity))
    }

    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let current = Self::read(cert, key)?;
        Ok(Self { cert: cert.to_path_buf(), key: key.to_path_buf(), current: RwLock::new(current) })
    }

    /// The validity of the certificate being served.
    pub fn validity(&self) -> Validity {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Replaces the certificate (files and the one served) when it is due at `now`; says why
    /// when it did.
    pub fn renew_if_due(&self, now: time::OffsetDateTime) -> Result<Option<String>, TlsError> {
        let Some(reason) = self.validity().renewal_reason(now) else { return Ok(None) };
        generate_self_signed(&self.cert, &self.key)?;
        let renewed = Self::read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = renewed;
        Ok(Some(reason))
    }

    /// Checks every [`RENEWAL_CHECK_EVERY`] and renews when due; runs until dropped.
    pub async fn keep_renewed(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RENEWAL_CHECK_EVERY).await;
            match self.renew_if_due(time::OffsetDateTime::now_utc()) {
                Ok(Some(previous)) => tracing::info!(
                    certificate = %self.cert.display(),
                    previous = %previous,
                    "renewed the self-signed certificate for localhost; browsers will ask you to trust the new one"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not renew the self-signed certificate"),
            }
        }
    }
}

/// A loaded TLS configuration.
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    pub source: CertificateSource,
    /// In self-signed mode: the certificate, for renewal while running.
    pub self_signed: Option<Arc<SelfSignedCertificate>>,
}

/// The TLS configuration for `config`, generating a self-signed certificate for localhost
/// under the data directory when that is the mode. `None` in proxy mode.
pub fn load(config: &impl PlatformSettings) -> Result<Option<Loaded>, TlsError> {
    match config.server().tls {
        TlsMode::Proxy => Ok(None),
        TlsMode::Files => {
            let cert = config.server().tls_cert_file.clone().unwrap_or_default();
            let key = config.server().tls_key_file.clone().unwrap_or_default();
            let server = server_config(read_certs(&cert)?, read_key(&key)?)?;
            Ok(Some(Loaded { server, source: CertificateSource::Files { cert }, self_signed: None }))
        }
        TlsMode::SelfSigned => {
            let (cert, key) = self_signed_paths(config);
            let source = if cert.exists() && key.exists() {
                let validity = read_certs(&cert).ok().and_then(|c| certificate_validity(&c[0]));
                let now = time::OffsetDateTime::now_utc();
                let reason = match validity {
                    Some(v) => v.renewal_reason(now),
                    None => Some("unreadable".to_string()),
                };
                match reason {
                    Some(previous) => {
                        generate_self_signed(&cert, &key)?;
                        CertificateSource::Renewed { cert: cert.clone(), previous }
                    }
                    None => CertificateSource::Existing { cert: cert.clone() },
                }
            } else {
                generate_self_signed(&cert, &key)?;
                CertificateSource::Generated { cert: cert.clone() }
            };
            let current = Arc::new(SelfSignedCertificate::load(&cert, &key)?);
            let server = server_config_with(current.clone())?;
            Ok(Some(Loaded { server, source, self_signed: Some(current) }))
        }
    }
}

/// Where the self-signed certificate and its key live.
pub fn self_signed_paths(config: &impl PlatformSettings) -> (PathBuf, PathBuf) {
    let dir = config.data_dir().join("tls");
    (dir.join("localhost.crt"), dir.join("localhost.key"))
}

/// The configured certificate file, if one exists now (proxy mode has none; self-signed mode
/// has none before the first start).
pub fn configured_certificate(config: &impl PlatformSettings) -> Option<PathBuf> {
    match config.server().tls {
        TlsMode::Proxy => None,
        TlsMode::Files => config.server().tls_cert_file.clone(),
        TlsMode::SelfSigned => Some(self_signed_paths(config).0).filter(|p| p.exists()),
    }
}

/// Checks without changing anything (for `doctor`): the certificate and key load and fit
/// together; the leaf certificate's validity.
pub fn check(config: &impl PlatformSettings) -> Result<Option<(PathBuf, Validity)>, TlsError> {
    let Some(cert) = configured_certificate(config) else { return Ok(None) };
    let key = match config.server().tls {
        TlsMode::Files => config.server().tls_key_file.clone().unwrap_or_default(),
        _ => self_signed_paths(config).1,
    };
    let certs = read_certs(&cert)?;
    server_config(certs.clone(), read_key(&key)?)?;
    let validity = certificate_validity(&certs[0]).ok_or_else(|| TlsError::Certificate {
        path: cert.display().to_string(),
        message: "cannot read its validity period".into(),
    })?;
    Ok(Some((cert, validity)))
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, valid from an hour ago
/// (clocks differ) for [`SELF_SIGNED_DAYS`]; the key is written 0600.
pub fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let now = time::OffsetDateTime::now_utc();
    generate_self_signed_for(
        cert_path,
        key_path,
        now - time::Duration::hours(1),
        now + time::Duration::days(SELF_SIGNED_DAYS),
    )
}

/// [`generate_self_signed`] with an explicit validity (tests make old and expiring ones).
pub fn generate_self_signed_for(
    cert_path: &Path,
    key_path: &Path,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(), TlsError> {
    let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let mut params = rcgen::CertificateParams::new(names).map_err(setup)?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, SELF_SIGNED_COMMON_NAME);
    subject.push(rcgen::DnType::OrganizationName, SELF_SIGNED_ORGANIZATION);
    params.distinguished_name = subject;
    params.not_before = not_before;
    params.not_after = not_after;
    // A fresh serial for every certificate: browsers refuse a new certificate that reuses the
    // issuer and serial of one they have seen.
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(setup)?;
    let cert = params.self_signed(&key).map_err(setup)?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::Setup(format!("{}: {e}", dir.display())))?;
    }
    crate::fsutil::write_private(key_path, key.serialize_pem().as_bytes()).map_err(TlsError::Setup)?;
    crate::fsutil::write_private(cert_path, cert.pem().as_bytes()).map_err(TlsError::Setup)?;
    Ok(())
}

/// The validity period of a DER certificate (X.509 `tbsCertificate.validity`).
pub fn certificate_validity(der: &[u8]) -> Option<Validity> {
    let (tag, certificate, _) = der_tlv(der)?;
    let (tbs_tag, tbs, _) = der_tlv(certificate).filter(|_| tag == 0x30)?;
    if tbs_tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (mut tag, mut _value, mut after) = der_tlv(rest)?;
    if tag == 0xa0 {
        // [0] version
        rest = after;
        (tag, _value, after) = der_tlv(rest)?;
    }
    // serialNumber, signature, issuer, then validity.
    if tag != 0x02 {
        return None;
    }
    let (_, _, after) = der_tlv(after)?; // signature AlgorithmIdentifier
    let (_, _, after) = der_tlv(after)?; // issuer
    let (validity_tag, validity, _) = der_tlv(after)?;
    if validity_tag != 0x30 {
        return None;
    }
    let (t1, v1, after) = der_tlv(validity)?;
    let (t2, v2, _) = der_tlv(after)?;
    Some(Validity { not_before: der_time(t1, v1)?, not_after: der_time(t2, v2)? })
}

/// One DER tag-length-value: (tag, value, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, value: &[u8]) -> Option<time::OffsetDateTime> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let date = time::Date::from_calendar_date(year, time::Month::try_from(num(0)?).ok()?, num(2)?).ok()?;
    let clock = time::Time::from_hms(num(4)?, num(6)?, num(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseConfig, ServerConfig as ServerSettings};

    /// The settings of an installation in `data_dir` with everything else at its default.
    struct Settings {
        data_dir: PathBuf,
        server: ServerSettings,
        database: DatabaseConfig,
    }

    impl Settings {
        fn in_dir(data_dir: &Path) -> Self {
            Self {
                data_dir: data_dir.to_path_buf(),
                server: ServerSettings::default(),
                database: DatabaseConfig::default(),
            }
        }
    }

    impl PlatformSettings for Settings {
        fn data_dir(&self) -> &Path {
            &self.data_dir
        }
        fn server(&self) -> &ServerSettings {
            &self.server
        }
        fn database(&self) -> &DatabaseConfig {
            &self.database
        }
        fn largest_request_body(&self) -> usize {
            self.server.body_limit_bytes
        }
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    fn validity_of(path: &Path) -> Validity {
        certificate_validity(&read_certs(path).unwrap()[0]).unwrap()
    }

    #[test]
    fn the_generated_certificate_is_short_lived_and_names_clientflow() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        generate_self_signed(&cert, &key).unwrap();
        let v = validity_of(&cert);
        let lifetime = v.not_after - v.not_before;
        assert!(lifetime >= time::Duration::days(SELF_SIGNED_DAYS), "{lifetime}");
        assert!(lifetime <= time::Duration::days(SELF_SIGNED_DAYS) + time::Duration::hours(2), "{lifetime}");
        assert!(v.not_before <= now() && (now() - v.not_before) < time::Duration::hours(2));
        assert_eq!(v.standing(now()), Standing::Valid);
        assert_eq!(v.renewal_reason(now()), None);
        let der = read_certs(&cert).unwrap()[0].to_vec();
        let has = |needle: &str| der.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(has(SELF_SIGNED_COMMON_NAME) && has(SELF_SIGNED_ORGANIZATION));
        assert!(!has("rcgen"));
        assert!(server_config(read_certs(&cert).unwrap(), read_key(&key).unwrap()).is_ok());
        // Two certificates never share a serial (nor, therefore, a DER encoding).
        generate_self_signed(&dir.path().join("d.crt"), &dir.path().join("d.key")).unwrap();
        assert_ne!(read_certs(&dir.path().join("d.crt")).unwrap()[0].to_vec(), der);
    }

    #[test]
    fn validity_reads_both_time_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        // The older versions' certificate: 1975 to 4096 (GeneralizedTime after 2049).
        let old = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&cert, old.cert.pem()).unwrap();
        let v = validity_of(&cert);
        assert_eq!(v.not_before.year(), 1975);
        assert_eq!(v.not_after.year(), 4096);
        assert!(v.renewal_reason(now()).unwrap().contains("far longer"));
        let start = time::macros::datetime!(2049-12-31 23:59:58 UTC);
        let end = time::macros::datetime!(2050-01-01 00:00:01 UTC);
        generate_self_signed_for(&cert, &key, start, end).unwrap();
        assert_eq!(validity_of(&cert), Validity { not_before: start, not_after: end });
        assert!(certificate_validity(b"not a certificate").is_none());
        assert!(certificate_validity(&[0x30, 0x82, 0xff]).is_none());
    }

    #[test]
    fn standing_and_renewal_follow_the_dates() {
        let t = now();
        let v = |from: i64, to: i64| Validity {
            not_before: t + time::Duration::days(from),
            not_after: t + time::Duration::days(to),
        };
        assert_eq!(v(-10, 80).standing(t), Standing::Valid);
        assert_eq!(v(-70, 20).standing(t), Standing::ExpiresSoon);
        assert_eq!(v(-90, -1).standing(t), Standing::Expired);
        assert_eq!(v(1, 91).standing(t), Standing::NotYetValid);
        assert!(v(-70, 20).renewal_reason(t).unwrap().starts_with("expires on"));
        assert!(v(-90, -1).renewal_reason(t).unwrap().starts_with("expired on"));
        assert_eq!(v(-10, 80).renewal_reason(t), None);
    }

    #[test]
    fn start_renews_a_self_signed_certificate_near_its_end_and_keeps_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = Settings::in_dir(dir.path());
        let (cert, key) = self_signed_paths(&config);
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        let t = now();
        for (from, to, renewed) in [(-80, 10, true), (-100, -10, true), (-30, 60, false)] {
            generate_self_signed_for(&cert, &key, t + time::Duration::days(from), t + time::Duration::days(to))
                .unwrap();
            let source = load(&config).unwrap().unwrap().source;
            let v = validity_of(&cert);
            if renewed {
                assert!(matches!(source, CertificateSource::Renewed { .. }), "{from}..{to}: {source:?}");
                assert!(v.not_after - t > time::Duration::days(SELF_SIGNED_DAYS - 1), "{v:?}");
            } else {
                assert!(matches!(source, CertificateSource::Existing { .. }), "{from}..{to}: {source:?}");
                assert_eq!(v.not_after.unix_timestamp(), (t + time::Duration::days(to)).unix_timestamp());
            }
        }
        // `check` (doctor) only reads.
        generate_self_signed_for(&cert, &key, t - time::Duration::days(80), t + time::Duration::days(10)).unwrap();
        let (_, v) = check(&config).unwrap().unwrap();
        assert_eq!(v.standing(now()), Standing::ExpiresSoon);
        assert_eq!(validity_of(&cert), v, "check changed the certificate");
    }

    /// The certificate a client is shown by `server`, over an in-memory connection.
    async fn served_certificate(server: Arc<ServerConfig>, trusted: &Path) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(read_certs(trusted).unwrap().remove(0)).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(server).accept(b).await.map(|_| ()) });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, a).await.unwrap();
        accept.await.unwrap().unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn a_running_server_renews_its_certificate_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let config = Settings::in_dir(dir.path());
        let (cert, key) = self_signed_paths(&config);
        let loaded = load(&config).unwrap().unwrap();
        assert!(matches!(loaded.source, CertificateSource::Generated { .. }));
        let running = loaded.self_signed.unwrap();
        let first = read_certs(&cert).unwrap()[0].to_vec();
        assert_eq!(served_certificate(loaded.server.clone(), &cert).await, first);
        // Not due: nothing changes.
        assert_eq!(running.renew_if_due(now()).unwrap(), None);
        // Seventy days on, it is due: the files and what the same server configuration serves
        // both change, without a restart.
        let later = now() + time::Duration::days(70);
        assert!(running.renew_if_due(later).unwrap().unwrap().starts_with("expires on"));
        let second = read_certs(&cert).unwrap()[0].to_vec();
        assert_ne!(second, first);
        assert_eq!(served_certificate(loaded.server, &cert).await, second);
        assert!(read_key(&key).is_ok());
        assert!(running.validity().not_after - now() > time::Duration::days(SELF_SIGNED_DAYS - 1));
    }
}
