//! Certificate reload without a restart: `SIGHUP` re-reads the TLS certificate and key.
//!
//! Operators renew certificates (ACME every 60-90 days) far more often than they want to drop
//! every client session. The reload only swaps what future handshakes present: established
//! TLS connections keep their negotiated keys and never notice. A reload that fails (a
//! half-written file, a key that does not match) is logged and the old certificate stays.

use confab_net::tls::ReloadableCert;
use std::sync::Arc;

/// Reloads `certificate` on every `SIGHUP` for the life of the runtime. The handler is
/// installed before this returns, so from then on SIGHUP no longer terminates the process.
pub fn spawn(certificate: Arc<ReloadableCert>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; TLS reload is unavailable");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reload(&certificate);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = certificate;
}

/// One reload attempt; the outcome is logged either way so an operator can confirm it.
fn reload(certificate: &ReloadableCert) {
    // File reads of a few kilobytes: short enough to do on the runtime thread.
    match certificate.reload() {
        Ok(()) => tracing::info!(
            cert = %certificate.cert_path().display(),
            "reloaded the TLS certificate"
        ),
        Err(error) => tracing::error!(
            %error,
            "TLS certificate reload failed; keeping the previous certificate"
        ),
    }
}
