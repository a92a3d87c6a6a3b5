//! Endpoints and the frame transport: a [`Connection`] moves [`Frame`]s over TCP, TLS or a
//! WebSocket and knows nothing of XMPP.
//!
//! On TCP and TLS every frame is a protobuf varint length prefix and the serialized frame
//! (docs/protocol/confab-protobuf.md, "Transport and framing"). The length is checked
//! against the maximum as soon as the prefix is complete, before any of the payload is
//! buffered, so a hostile or broken peer cannot make the client allocate more than the
//! maximum. On a WebSocket each binary message is one frame, without a prefix; tungstenite's
//! own message limit is set to the same maximum.
//!
//! Writes go through an output buffer that is drained with `write_buf`, so a send that is
//! cancelled half-way (a `select!` in the caller) loses nothing: the rest is written by the
//! next send or flush. Reads keep partial input in the connection for the same reason.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::{Buf as _, BytesMut};
use confab_proto::ProstMessage as _;
use confab_proto::framing::{Prefix, read_prefix};
use confab_proto::v1::Frame;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::Error;

/// The WebSocket subprotocol of the binding (`/pb-websocket`).
pub const SUBPROTOCOL: &str = "confab.xmpp.v1";

/// Default largest frame accepted: the server's default `[c2s] max_stanza_bytes`.
pub const DEFAULT_MAX_FRAME: usize = 262_144;

/// Where a Confab protobuf listener is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Plain TCP (`[pb] listen`).
    Tcp(SocketAddr),
    /// TLS from the first byte (`[pb] tls = true`).
    Tls {
        /// The listener's address.
        addr: SocketAddr,
        /// The name the certificate must be valid for (and the SNI sent).
        server_name: String,
        /// Whether to check the certificate against the system's trust store; `false`
        /// accepts any certificate (self-signed test servers only).
        verify: bool,
    },
    /// Binary messages on the HTTP listener's `/pb-websocket`, subprotocol `confab.xmpp.v1`.
    WebSocket {
        /// `ws://host:port/pb-websocket` or `wss://…`.
        url: String,
        /// For `wss://`: as in [`Endpoint::Tls`].
        verify: bool,
    },
}

/// Any byte stream a connection runs over (TCP or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Transport {
    /// Length-prefixed frames on a byte stream.
    Stream {
        io: Box<dyn Io>,
        input: BytesMut,
        output: BytesMut,
    },
    /// One frame per binary WebSocket message.
    WebSocket(Box<WebSocketStream<Box<dyn Io>>>),
}

/// A frame transport to one endpoint.
pub struct Connection {
    transport: Transport,
    max_frame: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.transport {
            Transport::Stream { .. } => "stream",
            Transport::WebSocket(_) => "websocket",
        };
        f.debug_struct("Connection")
            .field("transport", &kind)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl Connection {
    /// Connects to `endpoint` (TCP, then TLS or the WebSocket handshake); frames larger than
    /// `max_frame` bytes are refused when read.
    pub async fn connect(endpoint: &Endpoint, max_frame: usize) -> Result<Connection, Error> {
        let transport = match endpoint {
            Endpoint::Tcp(addr) => stream(Box::new(tcp(*addr).await?)),
            Endpoint::Tls {
                addr,
                server_name,
                verify,
            } => stream(tls(tcp(*addr).await?, server_name, *verify).await?),
            Endpoint::WebSocket { url, verify } => {
                Transport::WebSocket(Box::new(websocket(url, *verify, max_frame).await?))
            }
        };
        Ok(Connection {
            transport,
            max_frame,
        })
    }

    /// Queues `frame` and writes everything queued.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), Error> {
        match &mut self.transport {
            Transport::Stream { io, output, .. } => {
                // Encoding into a BytesMut only fails for lack of capacity, which grows.
                frame
                    .encode_length_delimited(output)
                    .map_err(|e| Error::Protocol(e.to_string()))?;
                flush_stream(io, output).await
            }
            Transport::WebSocket(ws) => {
                let bytes = frame.encode_to_vec();
                // `feed` then `flush`: a message already fed survives a cancelled flush.
                ws.feed(WsMessage::Binary(bytes.into())).await?;
                ws.flush().await?;
                Ok(())
            }
        }
    }

    /// Writes whatever an earlier, cancelled send left queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        match &mut self.transport {
            Transport::Stream { io, output, .. } => flush_stream(io, output).await,
            Transport::WebSocket(ws) => Ok(ws.flush().await?),
        }
    }

    /// The next frame; `None` when the peer closed the connection cleanly between frames.
    /// Cancel-safe: partial input stays buffered.
    pub async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        self.flush().await?;
        match &mut self.transport {
            Transport::Stream { io, input, .. } => loop {
                if let Some(frame) = decode_frame(input, self.max_frame)? {
                    return Ok(Some(frame));
                }
                if io.read_buf(input).await? == 0 {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            },
            Transport::WebSocket(ws) => loop {
                match ws.next().await {
                    None
                    | Some(Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    )) => return Ok(None),
                    Some(Err(error)) => return Err(error.into()),
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        return Frame::decode(bytes)
                            .map(Some)
                            .map_err(|e| Error::Protocol(format!("undecodable frame: {e}")));
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        return Err(Error::Protocol(
                            "text WebSocket message on the protobuf binding".into(),
                        ));
                    }
                    // Pings are answered by tungstenite; a close frame ends the stream
                    // (the next poll returns `None`).
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    /// Ends the transport: TLS close_notify / TCP FIN, or a WebSocket close handshake.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        match &mut self.transport {
            Transport::Stream { io, output, .. } => {
                flush_stream(io, output).await?;
                io.shutdown().await?;
            }
            Transport::WebSocket(ws) => match WebSocketStream::close(ws, None).await {
                Ok(())
                | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                }
                Err(error) => return Err(error.into()),
            },
        }
        Ok(())
    }
}

fn stream(io: Box<dyn Io>) -> Transport {
    Transport::Stream {
        io,
        input: BytesMut::with_capacity(4096),
        output: BytesMut::with_capacity(512),
    }
}

async fn flush_stream(io: &mut Box<dyn Io>, output: &mut BytesMut) -> Result<(), Error> {
    while output.has_remaining() {
        if io.write_buf(output).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
    }
    io.flush().await?;
    Ok(())
}

/// Takes one length-prefixed frame off the front of `input`: `None` while it is incomplete.
/// The announced length is checked against `max_frame` before the payload is awaited.
pub fn decode_frame(input: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, Error> {
    let (prefix, length) = match read_prefix(input) {
        Ok(Prefix::Complete { bytes, length }) => (bytes, length),
        Ok(Prefix::Incomplete) => return Ok(None),
        Err(_) => return Err(Error::Protocol("malformed length prefix".into())),
    };
    let fits = usize::try_from(length).ok().filter(|len| *len <= max_frame);
    let Some(len) = fits else {
        return Err(Error::FrameTooLarge {
            length,
            max: max_frame,
        });
    };
    if input.len() < prefix + len {
        // Room for the whole frame at once, instead of growing in read-sized steps.
        input.reserve(prefix + len - input.len());
        return Ok(None);
    }
    input.advance(prefix);
    let payload = input.split_to(len).freeze();
    Frame::decode(payload)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("undecodable frame: {e}")))
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, Error> {
    let socket = TcpStream::connect(addr).await?;
    // Frames are small and latency matters more than packet count.
    socket.set_nodelay(true)?;
    Ok(socket)
}

async fn tls(socket: TcpStream, server_name: &str, verify: bool) -> Result<Box<dyn Io>, Error> {
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| Error::Tls(format!("server name {server_name:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(verify)?);
    let stream = connector
        .connect(name, socket)
        .await
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Box::new(stream))
}

/// The two client configurations, built once per process: loading the system's trust store
/// and setting up a provider is far more work than a handshake, and a load tool opens many
/// connections.
fn tls_config(verify: bool) -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIGS: [OnceLock<Arc<rustls::ClientConfig>>; 2] = [OnceLock::new(), OnceLock::new()];
    let cell = &CONFIGS[usize::from(verify)];
    if let Some(config) = cell.get() {
        return Ok(config.clone());
    }
    let config = build_tls_config(verify)?;
    Ok(cell.get_or_init(|| Arc::new(config)).clone())
}

fn build_tls_config(verify: bool) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no trusted root certificates on this system".into(),
        ));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

async fn websocket(
    url: &str,
    verify: bool,
    max_frame: usize,
) -> Result<WebSocketStream<Box<dyn Io>>, Error> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => {
            return Err(Error::Protocol(format!(
                "WebSocket URL scheme must be ws or wss, not {other:?}"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| Error::Protocol(format!("no host in {url}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let socket = TcpStream::connect((host.as_str(), port)).await?;
    socket.set_nodelay(true)?;
    let io: Box<dyn Io> = if secure {
        tls(socket, &host, verify).await?
    } else {
        Box::new(socket)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(config)).await?;
    Ok(ws)
}

/// Accepts any server certificate: for self-signed test and load-test servers (chosen here
/// with `verify = false`; the load tool and the end-to-end tests use it too). Signatures are
/// still checked with the given provider, so the handshake itself is sound.
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::v1::frame::Kind;

    fn ack(h: u32) -> Frame {
        Frame {
            kind: Some(Kind::SmAck(confab_proto::v1::SmAck { h })),
        }
    }

    #[test]
    fn frames_are_taken_whole_and_in_order() {
        let mut wire = BytesMut::new();
        ack(1).encode_length_delimited(&mut wire).expect("encode");
        ack(300).encode_length_delimited(&mut wire).expect("encode");
        let whole = wire.clone();
        // Byte by byte: nothing is returned until a frame is complete.
        let mut input = BytesMut::new();
        let mut frames = Vec::new();
        for byte in whole.iter() {
            input.extend_from_slice(&[*byte]);
            if let Some(frame) = decode_frame(&mut input, 64).expect("valid input") {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![ack(1), ack(300)]);
        assert!(input.is_empty());
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_prefix_alone() {
        let mut input = BytesMut::new();
        confab_proto::prost::encode_length_delimiter(1 << 20, &mut input).expect("encode");
        let error = decode_frame(&mut input, 1024).expect_err("too large");
        assert!(
            matches!(error, Error::FrameTooLarge { length, max: 1024 } if length == 1 << 20),
            "{error:?}"
        );
    }

    #[test]
    fn a_prefix_of_ten_continuation_bytes_is_malformed() {
        let mut input = BytesMut::from(&[0xff; 9][..]);
        assert!(
            decode_frame(&mut input, 1024)
                .expect("incomplete")
                .is_none()
        );
        input.extend_from_slice(&[0xff]);
        assert!(matches!(
            decode_frame(&mut input, 1024),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn a_payload_that_is_not_a_frame_is_an_error() {
        let mut input = BytesMut::from(&[3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut input, 1024),
            Err(Error::Protocol(_))
        ));
    }
}
