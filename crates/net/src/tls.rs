//! TLS server configuration: the operator's certificate, or a self-signed one generated on
//! first start and kept in the data directory so clients can pin it.

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Loads the configured pair, or generates (once) and loads a self-signed pair for `domain`.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    domain: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| file_error(&cert_path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert_path,
            reason: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_error(&key_path, e))?;
    // Only TLS 1.2 and 1.3 with rustls' default (modern, AEAD-only) suites.
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
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
}
