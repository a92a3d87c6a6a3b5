//! TLS server configuration: the operator's certificate, or a self-signed one generated on
//! first start and kept in the data directory so clients can pin it.
//!
//! Both client listeners (STARTTLS and XEP-0368 direct TLS) take their certificate from one
//! [`ReloadableCert`], so `SIGHUP` swaps it for both at once: handshakes that start after the
//! swap present the new certificate, established connections keep the keys they negotiated.
//!
//! Protocol versions and cipher suites are pinned here rather than taken from rustls'
//! defaults, so a rustls upgrade cannot silently widen what the server accepts: TLS 1.3
//! and TLS 1.2, and for TLS 1.2 only ECDHE key exchange with an AEAD cipher (forward secrecy,
//! no CBC). Older protocols and suites are refused with a handshake alert.

/// The TLS server configuration every listener takes (rustls).
pub use rustls::ServerConfig;
use rustls::SupportedCipherSuite;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The ALPN protocol id XEP-0368 §4 has clients offer on a direct TLS c2s connection.
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// The cipher suites the server accepts, strongest first: the TLS 1.3 suites and, for
/// TLS 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 only.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The protocol versions the server accepts.
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why TLS could not be set up; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("certificate and key do not form a usable pair: {0}")]
    Config(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// Paths of the self-signed pair inside the data directory.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// aws-lc-rs restricted to [`CIPHER_SUITES`]; key exchange groups stay rustls' defaults
/// (X25519MLKEM768, X25519, P-256, P-384: all ephemeral).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

/// The server certificate, re-read from its files on [`ReloadableCert::reload`].
///
/// A `std::sync::RwLock` over an `Arc` rather than a lock-free swap (`arc-swap`): the lock is
/// taken once per TLS handshake, only to clone the `Arc`, and written only when an operator
/// reloads, so it is never contended in a way a handshake (milliseconds of public-key
/// cryptography) could notice, and it costs no extra dependency.
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// Loads the configured pair, or generates (once) and loads a self-signed pair for
    /// `domain` in `data_dir`; later reloads read the same paths.
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
        domain: &str,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert_path, key_path) = match (cert, key) {
            (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned()),
            _ => {
                let (cert_path, key_path) = self_signed_paths(data_dir);
                if !cert_path.exists() || !key_path.exists() {
                    generate_self_signed(&cert_path, &key_path, domain)?;
                }
                (cert_path, key_path)
            }
        };
        let provider = crypto_provider();
        let certified = read_pair(&cert_path, &key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(certified)),
        }))
    }

    /// Re-reads the certificate and key files and, if they form a usable pair, serves them
    /// to every handshake from now on. On error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// The certificate file this pair is read from.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate chain and key handshakes use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate for every name: the server hosts one domain.
        Some(self.current())
    }
}

/// A server configuration presenting `cert` with the pinned versions and suites, offering
/// `alpn` (empty: no ALPN). With ALPN set, rustls refuses a client that offers ALPN but
/// none of these protocols and accepts one that offers no ALPN at all.
pub fn server_config_for(
    cert: Arc<ReloadableCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(cert.provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The configuration for STARTTLS (RFC 6120 §5): no ALPN, since the client already chose
/// XMPP by connecting to the port.
pub fn starttls_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(cert, &[])
}

/// The configuration for XEP-0368 direct TLS: ALPN `xmpp-client` (§4), which clients send so
/// the connection can share port 443 with HTTPS; clients that send no ALPN are accepted too.
pub fn direct_tls_config(cert: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(cert, &[ALPN_XMPP_CLIENT])
}

/// Loads the configured pair, or generates (once) and loads a self-signed pair for `domain`,
/// as a STARTTLS configuration that never reloads.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    domain: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    starttls_config(ReloadableCert::load(cert, key, data_dir, domain)?)
}

/// Reads a PEM chain and key and checks that the key belongs to the first certificate.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| file_error(cert_path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert_path.to_owned(),
            reason: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_error(key_path, e))?;
    Ok(CertifiedKey::from_der(certs, key, provider)?)
}

fn file_error(path: &Path, error: rustls_pki_types::pem::Error) -> TlsError {
    let reason = match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    };
    TlsError::File {
        path: path.to_owned(),
        reason,
    }
}

fn generate_self_signed(cert_path: &Path, key_path: &Path, domain: &str) -> Result<(), TlsError> {
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    }
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(|e| TlsError::File {
        path: cert_path.to_owned(),
        reason: e.to_string(),
    })?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = std::env::temp_dir().join(format!("confab-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        server_config(None, None, &dir, "localhost").expect("generate");
        let (cert, _) = self_signed_paths(&dir);
        let first = std::fs::read(&cert).expect("cert");
        server_config(None, None, &dir, "localhost").expect("reuse");
        assert_eq!(
            first,
            std::fs::read(&cert).expect("cert"),
            "an existing pair is kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_cert_names_the_file() {
        let missing = Path::new("/nonexistent/cert.pem");
        let error = server_config(Some(missing), Some(missing), Path::new("/tmp"), "localhost")
            .expect_err("missing file");
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }

    /// Writes a fresh self-signed pair for `name` and returns the certificate's DER.
    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let certified =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("generate");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key");
        certified.cert.der().to_vec()
    }

    fn end_entity(cert: &ReloadableCert) -> Vec<u8> {
        cert.current().cert[0].to_vec()
    }

    #[test]
    fn reload_swaps_and_a_bad_reload_keeps_the_old_pair() {
        let dir = std::env::temp_dir().join(format!("confab-tls-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let a = write_pair(&dir, "a.example");
        let cert = ReloadableCert::load(Some(&cert_path), Some(&key_path), &dir, "localhost")
            .expect("load A");
        assert_eq!(end_entity(&cert), a);

        let b = write_pair(&dir, "b.example");
        assert_eq!(end_entity(&cert), a, "nothing changes before a reload");
        cert.reload().expect("reload B");
        assert_eq!(end_entity(&cert), b);

        std::fs::write(&cert_path, "not a certificate").expect("garble");
        cert.reload().expect_err("a file without a certificate");
        assert_eq!(end_entity(&cert), b, "a failed reload keeps the old pair");

        // A key from another pair is refused, not served (every handshake would fail).
        let kept_key = std::fs::read(&key_path).expect("key");
        write_pair(&dir, "c.example");
        std::fs::write(&key_path, kept_key).expect("mismatched key");
        let error = cert.reload().expect_err("mismatched pair");
        assert!(matches!(error, TlsError::Config(_)), "{error}");
        assert_eq!(end_entity(&cert), b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_modern_suites_and_versions() {
        for suite in CIPHER_SUITES {
            match suite {
                SupportedCipherSuite::Tls13(_) => {}
                SupportedCipherSuite::Tls12(tls12) => {
                    let name = format!("{:?}", tls12.common.suite);
                    assert!(name.starts_with("TLS_ECDHE_"), "{name}");
                    assert!(
                        name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"),
                        "{name}"
                    );
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("confab-tls-alpn-{}", std::process::id()));
        let cert = ReloadableCert::load(None, None, &dir, "localhost").expect("self-signed");
        let direct = direct_tls_config(cert.clone()).expect("direct");
        assert_eq!(direct.alpn_protocols, vec![b"xmpp-client".to_vec()]);
        assert!(
            starttls_config(cert)
                .expect("starttls")
                .alpn_protocols
                .is_empty()
        );
        assert_eq!(
            direct.crypto_provider().cipher_suites.len(),
            CIPHER_SUITES.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
