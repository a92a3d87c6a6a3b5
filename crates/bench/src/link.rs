//! How elements travel between the tool and the server: the seam between the XMPP logic
//! (`client`, the scenarios) and the wire.
//!
//! Everything above this module speaks in XML bytes: it sends whole first-level elements,
//! stream headers and `</stream:stream>` (several at once when pipelining), and reads
//! [`Read`] frames. A [`Link`] carries them:
//!
//! - [`Link::Xml`]: an XML stream over TCP, STARTTLS or direct TLS (XEP-0368); bytes are
//!   written as they are and the server's stream is framed by [`Scanner`].
//! - [`Link::WebSocket`]: RFC 7395. Each element is one text message; the stream header
//!   becomes `<open/>` and `</stream:stream>` becomes `<close/>` in the framing namespace
//!   (§3.3), and a stream restart is a new `<open/>` (§3.5), which the header the client
//!   logic already sends after SASL turns into.
//!
//! A message-oriented transport (WebSocket now, a protobuf one next) adds a variant here
//! and its reader/writer halves: it turns what the client sends into [`Unit`]s with
//! [`Units`] and what arrives into [`Read`]s, and nothing above this module changes.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt as _, Stream as FuturesStream, StreamExt as _};
use tokio::io::{ReadHalf, WriteHalf};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::client::{Failure, Read, read_frame};
use crate::transport::{Stream, server_name, tcp_connect};
use crate::xml::{self, Frame, Scanner};

/// `--transport`: how clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// XML stream over TCP (RFC 6120), with STARTTLS when --tls is given.
    Tcp,
    /// XML stream over TLS from the first byte (XEP-0368 direct TLS, ALPN `xmpp-client`).
    Tls,
    /// XMPP over WebSocket (RFC 7395, subprotocol `xmpp`); --server is a ws:// or wss:// URL.
    Websocket,
}

impl TransportKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Websocket => "websocket",
        }
    }
}

/// How each connection of a run is opened.
#[derive(Clone)]
pub enum Dial {
    /// Plain TCP (STARTTLS, if any, is negotiated by the client logic afterwards).
    Tcp,
    /// TLS from the first byte with this connector (which offers ALPN `xmpp-client`).
    DirectTls(TlsConnector),
    /// An RFC 7395 WebSocket.
    WebSocket(WsTarget),
}

/// Where and how to open an RFC 7395 WebSocket.
#[derive(Clone)]
pub struct WsTarget {
    /// The URL requested, e.g. `ws://127.0.0.1:5280/xmpp-websocket`.
    pub url: String,
    /// The URL's host, for SNI with `wss://`.
    host: String,
    /// For `wss://`: TLS under the WebSocket.
    tls: Option<TlsConnector>,
    /// The `<open/>` every stream (re)start sends, shared by all connections: cloning it
    /// only bumps a reference count.
    open: Utf8Bytes,
}

/// RFC 7395 §3.3.1.
const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// RFC 7395 §3.6: ends the stream, as `</stream:stream>` does over TCP.
const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

impl WsTarget {
    /// Parses `url` (`ws://` or `wss://`; `host:port` alone means
    /// `ws://host:port/xmpp-websocket`) and resolves its host. `tls` is used for `wss://`.
    pub fn new(url: &str, domain: &str, tls: TlsConnector) -> anyhow::Result<(Self, SocketAddr)> {
        use anyhow::Context as _;
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("ws://{url}/xmpp-websocket")
        };
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => anyhow::bail!("{url}: a WebSocket URL starts with ws:// or wss://"),
        };
        let host = uri.host().with_context(|| format!("{url} has no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        // `Uri::host` keeps the brackets of an IPv6 literal.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, port)
            .to_socket_addrs()
            .with_context(|| format!("resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let open = format!(
            "<open xmlns='{FRAMING_NS}' to='{}' version='1.0'/>",
            xml::escape(domain)
        );
        let target = WsTarget {
            host: bare.to_owned(),
            url,
            tls: secure.then_some(tls),
            open: open.into(),
        };
        Ok((target, addr))
    }
}

/// The WebSocket settings of every connection. Tungstenite's defaults allocate 128 KiB read
/// and write buffers per connection, which at tens of thousands of idle sessions would
/// measure the tool's memory rather than the server's; stanzas here are a few hundred bytes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        // Messages fed in one batch are coalesced up to this size; `flush` writes the rest.
        .write_buffer_size(4096)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// One open connection, whole (before [`Link::split`]).
pub enum Link {
    /// An XML stream over TCP or TLS.
    Xml(XmlLink),
    /// An RFC 7395 WebSocket (boxed: tungstenite's state is large).
    WebSocket(Box<WsLink>),
}

/// An XML stream and the server's bytes not yet framed.
pub struct XmlLink {
    /// The byte stream; plain until STARTTLS or from the start with direct TLS.
    pub stream: Stream,
    /// Bytes read but not yet returned as frames.
    pub buf: BytesMut,
    /// Framing state over `buf`.
    pub scanner: Scanner,
}

/// A WebSocket carrying one element per message.
pub struct WsLink {
    ws: WebSocketStream<Stream>,
    open: Utf8Bytes,
}

impl Link {
    /// Connects from `source` (if any) to `server` as `dial` says. Failures name the stage:
    /// `connect`, `tls` or `websocket`.
    pub async fn connect(
        dial: &Dial,
        server: SocketAddr,
        domain: &str,
        source: Option<IpAddr>,
    ) -> Result<Link, Failure> {
        let tcp = tcp_connect(server, source)
            .await
            .map_err(|e| Failure::new("connect", e.to_string()))?;
        let stream = match dial {
            Dial::Tcp => Stream::Plain(tcp),
            Dial::DirectTls(connector) => Stream::Tls(Box::new(tls(connector, domain, tcp).await?)),
            Dial::WebSocket(target) => {
                let stream = match &target.tls {
                    Some(connector) => {
                        Stream::Tls(Box::new(tls(connector, &target.host, tcp).await?))
                    }
                    None => Stream::Plain(tcp),
                };
                return ws_handshake(target, stream).await;
            }
        };
        Ok(Link::Xml(XmlLink {
            stream,
            buf: BytesMut::with_capacity(4096),
            scanner: Scanner::default(),
        }))
    }

    /// Writes `data`: whole elements, stream headers or `</stream:stream>`, any number.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Link::Xml(link) => {
                use tokio::io::AsyncWriteExt as _;
                link.stream.write_all(data).await
            }
            Link::WebSocket(link) => ws_send(&mut link.ws, &link.open, data).await,
        }
    }

    /// Reads the next frame; cancel-safe. A stream error, the server closing the stream or
    /// the connection is a failure at `stage`.
    pub async fn read(&mut self, stage: &'static str) -> Result<Read, Failure> {
        match self {
            Link::Xml(link) => {
                read_frame(&mut link.stream, &mut link.buf, &mut link.scanner, stage).await
            }
            Link::WebSocket(link) => ws_read(&mut link.ws, stage).await,
        }
    }

    /// A new stream starts on the same connection (RFC 6120 §6.4.6, after SASL): bytes
    /// already buffered belong to it. Over WebSocket every message is framed on its own, so
    /// there is no state to forget.
    pub fn restart(&mut self) {
        if let Link::Xml(link) = self {
            link.scanner.reset();
        }
    }

    /// Splits the link into a reader and a writer that can be used from different tasks.
    pub fn split(self) -> (LinkReader, LinkWriter) {
        match self {
            Link::Xml(link) => {
                let (rd, wr) = tokio::io::split(link.stream);
                (
                    LinkReader::Xml {
                        rd,
                        buf: link.buf,
                        scanner: link.scanner,
                    },
                    LinkWriter::Xml(wr),
                )
            }
            Link::WebSocket(link) => {
                let (sink, stream) = link.ws.split();
                (
                    LinkReader::WebSocket(stream),
                    LinkWriter::WebSocket {
                        sink,
                        open: link.open,
                    },
                )
            }
        }
    }
}

/// The receiving half of a split [`Link`].
pub enum LinkReader {
    /// XML stream: the read half and the framing state so far.
    Xml {
        rd: ReadHalf<Stream>,
        buf: BytesMut,
        scanner: Scanner,
    },
    /// WebSocket messages.
    WebSocket(SplitStream<WebSocketStream<Stream>>),
}

impl LinkReader {
    /// As [`Link::read`].
    pub async fn read(&mut self, stage: &'static str) -> Result<Read, Failure> {
        match self {
            LinkReader::Xml { rd, buf, scanner } => read_frame(rd, buf, scanner, stage).await,
            LinkReader::WebSocket(stream) => ws_read(stream, stage).await,
        }
    }
}

/// The sending half of a split [`Link`].
pub enum LinkWriter {
    /// XML stream: the write half.
    Xml(WriteHalf<Stream>),
    /// WebSocket messages.
    WebSocket {
        sink: SplitSink<WebSocketStream<Stream>, Message>,
        open: Utf8Bytes,
    },
}

impl LinkWriter {
    /// As [`Link::send`].
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            LinkWriter::Xml(wr) => {
                use tokio::io::AsyncWriteExt as _;
                wr.write_all(data).await
            }
            LinkWriter::WebSocket { sink, open } => ws_send(sink, open, data).await,
        }
    }
}

/// Opens the TLS session of a direct TLS or `wss://` connection, with SNI `name`.
async fn tls(
    connector: &TlsConnector,
    name: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Failure> {
    let name = server_name(name).map_err(|e| Failure::new("tls", e.to_string()))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::new("tls", e.to_string()))
}

/// The WebSocket upgrade with subprotocol `xmpp` (RFC 7395 §3.1).
async fn ws_handshake(target: &WsTarget, stream: Stream) -> Result<Link, Failure> {
    let fail = |reason: String| Failure::new("websocket", reason);
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("xmpp"),
    );
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .map_err(|e| fail(e.to_string()))?;
    // §3.1: without `xmpp` in the answer the server is not speaking RFC 7395.
    if response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(HeaderValue::as_bytes)
        != Some(b"xmpp")
    {
        return Err(fail("server did not accept subprotocol xmpp".to_owned()));
    }
    Ok(Link::WebSocket(Box::new(WsLink {
        ws,
        open: target.open.clone(),
    })))
}

/// What the client logic sends, cut at element boundaries, for message transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// A stream header (`<stream:stream …>`, after any XML declaration): open the stream.
    Open,
    /// One first-level element.
    Element(Bytes),
    /// `</stream:stream>`: close the stream.
    Close,
}

/// Cuts the bytes of one send into [`Unit`]s. The tool only sends whole elements, so a
/// leftover partial element is an error (a bug in the tool, not the server's doing). The
/// elements share one copy of the data: one allocation per send, not per element.
pub struct Units {
    buf: BytesMut,
    scanner: Scanner,
}

impl Units {
    /// The units of `data`.
    pub fn new(data: &[u8]) -> Self {
        Self {
            buf: BytesMut::from(data),
            scanner: Scanner::default(),
        }
    }
}

impl Iterator for Units {
    type Item = io::Result<Unit>;

    fn next(&mut self) -> Option<Self::Item> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        match self.scanner.next(&mut self.buf) {
            Ok(Some(Frame::Open(len))) => {
                self.buf.advance(len);
                Some(Ok(Unit::Open))
            }
            Ok(Some(Frame::Element(len))) => {
                Some(Ok(Unit::Element(self.buf.split_to(len).freeze())))
            }
            Ok(Some(Frame::Close(len))) => {
                self.buf.advance(len);
                Some(Ok(Unit::Close))
            }
            Ok(None) if self.buf.is_empty() => None,
            Ok(None) => Some(Err(invalid("partial element in a send"))),
            Err(e) => Some(Err(invalid(e.0))),
        }
    }
}

/// Sends `data` as one text message per unit and flushes once, so a pipelined batch leaves
/// in as few writes as the TCP stream would use.
async fn ws_send<S>(sink: &mut S, open: &Utf8Bytes, data: &[u8]) -> io::Result<()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    for unit in Units::new(data) {
        let text = match unit? {
            Unit::Open => open.clone(),
            Unit::Element(element) => Utf8Bytes::try_from(element).map_err(io::Error::other)?,
            Unit::Close => Utf8Bytes::from_static(CLOSE),
        };
        sink.feed(Message::Text(text))
            .await
            .map_err(io::Error::other)?;
    }
    sink.flush().await.map_err(io::Error::other)
}

/// Reads the next RFC 7395 message as a frame; cancel-safe (the stream keeps a partial
/// message itself).
async fn ws_read<S>(stream: &mut S, stage: &'static str) -> Result<Read, Failure>
where
    S: FuturesStream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let message = match stream.next().await {
            None => return Err(Failure::new(stage, "connection closed by server")),
            Some(Err(e)) => return Err(Failure::new(stage, format!("read: {e}"))),
            Some(Ok(message)) => message,
        };
        let text = match message {
            Message::Text(text) => Bytes::from(text),
            // §3.2: XMPP travels in text messages only.
            Message::Binary(_) => return Err(Failure::new(stage, "binary WebSocket message")),
            Message::Close(_) => return Err(Failure::new(stage, "connection closed by server")),
            // Tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let start = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let element = text.slice(start..);
        if element.is_empty() {
            continue;
        }
        match xml::tag_name(&element) {
            b"open" => return Ok(Read::Open),
            b"close" => return Err(Failure::new(stage, "server closed the stream")),
            name if name != b"error" && xml::local_name(name) == b"error" => {
                return Err(Failure::new(
                    stage,
                    format!("stream error {}", xml::error_reason(&element)),
                ));
            }
            _ => return Ok(Read::Element(element)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipelined_send_becomes_one_unit_per_element() {
        let data = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>\
            <auth mechanism='PLAIN'>AHUxAHB3</auth> <message to='a'><body>x &gt; y</body>\
            </message><r xmlns='urn:xmpp:sm:3'/></stream:stream>";
        let units: Vec<Unit> = Units::new(data).map(|u| u.expect("valid")).collect();
        let element = |text: &'static str| Unit::Element(Bytes::from_static(text.as_bytes()));
        assert_eq!(
            units,
            [
                Unit::Open,
                element("<auth mechanism='PLAIN'>AHUxAHB3</auth>"),
                element("<message to='a'><body>x &gt; y</body></message>"),
                element("<r xmlns='urn:xmpp:sm:3'/>"),
                Unit::Close,
            ]
        );
        assert!(Units::new(b"<message><body>").any(|u| u.is_err()));
        assert_eq!(Units::new(b"").count(), 0);
    }

    #[tokio::test]
    async fn websocket_messages_become_frames() {
        let messages = [
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' version='1.0'/>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict \
             xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ];
        let mut rx = futures_util::stream::iter(messages.map(|text| Ok(Message::text(text))));
        assert!(matches!(ws_read(&mut rx, "t").await, Ok(Read::Open)));
        match ws_read(&mut rx, "t").await {
            Ok(Read::Element(element)) => assert_eq!(xml::tag_name(&element), b"stream:features"),
            _ => panic!("features expected"),
        }
        let error = ws_read(&mut rx, "t").await.err().expect("stream error");
        assert!(error.reason.contains("conflict"), "{error}");
        let closed = ws_read(&mut rx, "t").await.err().expect("close");
        assert_eq!(closed.reason, "server closed the stream");
        let gone = ws_read(&mut rx, "t").await.err().expect("end");
        assert_eq!(gone.reason, "connection closed by server");
    }

    #[tokio::test]
    async fn a_send_becomes_framing_messages() {
        let mut texts: Vec<String> = Vec::new();
        let sink = futures_util::sink::unfold((), |(), message: Message| {
            texts.push(message.into_text().expect("text").to_string());
            async { Ok::<(), WsError>(()) }
        });
        let mut sink = std::pin::pin!(sink);
        ws_send(
            &mut sink,
            &Utf8Bytes::from_static("<open/>"),
            b"<?xml version='1.0'?><stream:stream to='x'><iq id='b'/></stream:stream>",
        )
        .await
        .expect("sent");
        assert_eq!(texts, ["<open/>", "<iq id='b'/>", CLOSE]);
    }
}
