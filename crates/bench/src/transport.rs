//! TCP connections from a chosen source address, and the TLS client that accepts any
//! certificate (for STARTTLS, direct TLS and wss://).
//!
//! Source addresses: Linux gives each (source address, destination) pair at most the
//! ephemeral port range (`net.ipv4.ip_local_port_range`, about 28 000 ports by default), so
//! one source address cannot open more connections than that to one server port. Every
//! address in 127.0.0.0/8 is loopback, so spreading connections over 127.0.0.1, 127.0.0.2, …
//! multiplies the ceiling without any network setup.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use confab_pb_client::connection::AcceptAnyCertificate;
use rustls::ClientConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A client connection, before or after STARTTLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large and most of the time the enum is moved).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Bytes written to and read from every [`Stream`] of this process, for the chat report's
/// bytes per message. Counted above TLS (a TLS record's ~22 bytes of overhead are not), and
/// below WebSocket framing (which is).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static READ: AtomicU64 = AtomicU64::new(0);

/// Bytes written and read by all connections so far: `(written, read)`.
pub fn stream_bytes() -> (u64, u64) {
    (
        WRITTEN.load(Ordering::Relaxed),
        READ.load(Ordering::Relaxed),
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            READ.fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(written)) = poll {
            WRITTEN.fetch_add(written as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a TCP connection to `server`, from `source` when given (port chosen by the kernel).
pub async fn tcp_connect(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    // Stanzas are small and latency is measured: never let Nagle hold one back.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TLS connector that accepts any server certificate (bench servers use self-signed ones)
/// but still checks the handshake signature, as a real client's TLS stack would, so the
/// server's TLS cost is the real one. Session resumption is off: each simulated user is a
/// separate client with a full handshake.
pub fn tls_connector() -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(Arc::new(tls_config()?)))
}

/// As [`tls_connector`], offering ALPN `xmpp-client` for XEP-0368 direct TLS (§3: a server
/// multiplexing one port by ALPN needs it to route the connection to its XMPP service).
pub fn direct_tls_connector() -> anyhow::Result<TlsConnector> {
    let mut config = tls_config()?;
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn tls_config() -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The name sent in SNI: the XMPP domain (RFC 6120 §13.7.2.1).
pub fn server_name(domain: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(domain.to_owned()).with_context(|| format!("bad TLS name {domain}"))
}

/// Parses `--source`: comma-separated IPv4/IPv6 addresses and IPv4 ranges `A-B`
/// (e.g. `127.0.0.1-127.0.0.8`).
pub fn parse_sources(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((from, to)) => {
                let from: Ipv4Addr = from.trim().parse().context("range start")?;
                let to: Ipv4Addr = to.trim().parse().context("range end")?;
                let (from, to) = (u32::from(from), u32::from(to));
                if to < from || to - from > 65_535 {
                    bail!("bad source range {item}");
                }
                out.extend((from..=to).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
            }
            None => out.push(
                item.parse()
                    .with_context(|| format!("bad address {item}"))?,
            ),
        }
    }
    if out.is_empty() {
        bail!("--source lists no address");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let got = parse_sources("127.0.0.254-127.0.1.1, ::1").expect("valid");
        let text: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "127.0.0.254",
                "127.0.0.255",
                "127.0.1.0",
                "127.0.1.1",
                "::1"
            ]
        );
        assert!(parse_sources("127.0.0.2-127.0.0.1").is_err());
        assert!(parse_sources("").is_err());
    }
}
