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
//!   logic already sends after SASL turns into. With the protobuf binding
//!   (`/pb-websocket`, subprotocol `confab.xmpp.v1`) each unit is instead one binary
//!   message holding a `Frame`, converted by [`crate::pb`].
//! - [`Link::Pb`]: Confab's protobuf binding over TCP or TLS from the first byte: each unit
//!   is a varint length-prefixed `Frame` ([`crate::pb`] converts; the client library's
//!   `decode_frame` reads the prefixes). The stream header becomes `open`, and the restart
//!   after SASL a new `open`, as the binding specifies.
//!
//! A message-oriented transport adds a variant here and its reader/writer halves: it turns
//! what the client sends into [`Unit`]s with [`Units`] and what arrives into [`Read`]s, and
//! nothing above this module changes.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

use bytes::{Buf as _, Bytes, BytesMut};
use confab_pb_client::connection::{SUBPROTOCOL as PB_SUBPROTOCOL, decode_frame};
use confab_proto::ProstMessage as _;
use confab_proto::v1::Frame as PbFrame;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt as _, Stream as FuturesStream, StreamExt as _};
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::client::{Failure, Read, read_frame};
use crate::pb;
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
    /// Confab's protobuf binding over TCP; --server is the `[pb]` listener.
    Pb,
    /// The protobuf binding over TLS from the first byte (`[pb] tls = true`).
    PbTls,
    /// The protobuf binding over WebSocket (`/pb-websocket`, binary messages, subprotocol
    /// `confab.xmpp.v1`); --server is a ws:// or wss:// URL.
    PbWebsocket,
}

impl TransportKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Websocket => "websocket",
            TransportKind::Pb => "pb",
            TransportKind::PbTls => "pb-tls",
            TransportKind::PbWebsocket => "pb-websocket",
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
    /// A WebSocket: RFC 7395, or the protobuf binding's `/pb-websocket`.
    WebSocket(WsTarget),
    /// The protobuf binding on a TCP listener.
    Pb(PbTarget),
}

/// How to open a protobuf binding connection on TCP.
#[derive(Clone)]
pub struct PbTarget {
    /// TLS from the first byte (SNI: the domain), or plain TCP.
    tls: Option<TlsConnector>,
    /// The encoded `open` frame every stream (re)start sends (see [`pb::open_payload`]).
    open: Bytes,
}

impl PbTarget {
    /// The target for `domain`'s accounts, over TLS when `tls` is given.
    pub fn new(domain: &str, tls: Option<TlsConnector>) -> Self {
        Self {
            tls,
            open: pb::open_payload(domain),
        }
    }
}

/// Where and how to open a WebSocket.
#[derive(Clone)]
pub struct WsTarget {
    /// The URL requested, e.g. `ws://127.0.0.1:5280/xmpp-websocket`.
    pub url: String,
    /// The URL's host, for SNI with `wss://`.
    host: String,
    /// For `wss://`: TLS under the WebSocket.
    tls: Option<TlsConnector>,
    /// The binding, by what every stream (re)start sends.
    open: WsOpen,
}

/// What a stream (re)start sends on a WebSocket, which also says which binding it carries.
/// Shared by all connections: cloning only bumps a reference count.
#[derive(Clone)]
pub enum WsOpen {
    /// RFC 7395: the `<open/>` text message.
    Xml(Utf8Bytes),
    /// The protobuf binding: the encoded `open` frame, sent as a binary message.
    Pb(Bytes),
}

impl WsOpen {
    /// The subprotocol requested, which the server must echo.
    fn subprotocol(&self) -> &'static str {
        match self {
            WsOpen::Xml(_) => "xmpp",
            WsOpen::Pb(_) => PB_SUBPROTOCOL,
        }
    }

    /// Whether messages carry protobuf frames.
    fn is_pb(&self) -> bool {
        matches!(self, WsOpen::Pb(_))
    }
}

/// RFC 7395 §3.3.1.
const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// RFC 7395 §3.6: ends the stream, as `</stream:stream>` does over TCP.
const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

impl WsTarget {
    /// Parses `url` (`ws://` or `wss://`; `host:port` alone means
    /// `ws://host:port/xmpp-websocket`, or `/pb-websocket` with `pb`) and resolves its host.
    /// `tls` is used for `wss://`; `pb` chooses the protobuf binding over RFC 7395.
    pub fn new(
        url: &str,
        domain: &str,
        tls: TlsConnector,
        pb: bool,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        use anyhow::Context as _;
        let url = match (url.contains("://"), pb) {
            (true, _) => url.to_owned(),
            (false, false) => format!("ws://{url}/xmpp-websocket"),
            (false, true) => format!("ws://{url}/pb-websocket"),
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
        let open = if pb {
            WsOpen::Pb(pb::open_payload(domain))
        } else {
            WsOpen::Xml(
                format!(
                    "<open xmlns='{FRAMING_NS}' to='{}' version='1.0'/>",
                    xml::escape(domain)
                )
                .into(),
            )
        };
        let target = WsTarget {
            host: bare.to_owned(),
            url,
            tls: secure.then_some(tls),
            open,
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
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// The largest WebSocket message or protobuf frame accepted from the server; the bench's
/// traffic is a few hundred bytes per element.
const MAX_MESSAGE: usize = 1 << 20;

/// One open connection, whole (before [`Link::split`]).
pub enum Link {
    /// An XML stream over TCP or TLS.
    Xml(XmlLink),
    /// A WebSocket (boxed: tungstenite's state is large).
    WebSocket(Box<WsLink>),
    /// The protobuf binding over TCP or TLS.
    Pb(PbLink),
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

/// A WebSocket carrying one element (or one frame) per message.
pub struct WsLink {
    ws: WebSocketStream<Stream>,
    open: WsOpen,
}

/// Length-prefixed protobuf frames and the server's bytes not yet decoded.
pub struct PbLink {
    stream: Stream,
    /// Bytes read but not yet returned as frames.
    input: BytesMut,
    /// The encoded `open` frame, shared.
    open: Bytes,
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
            Dial::Pb(target) => {
                let stream = match &target.tls {
                    Some(connector) => Stream::Tls(Box::new(tls(connector, domain, tcp).await?)),
                    None => Stream::Plain(tcp),
                };
                return Ok(Link::Pb(PbLink {
                    stream,
                    input: BytesMut::with_capacity(4096),
                    open: target.open.clone(),
                }));
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
            Link::Xml(link) => link.stream.write_all(data).await,
            Link::WebSocket(link) => ws_send(&mut link.ws, &link.open, data).await,
            Link::Pb(link) => pb_send(&mut link.stream, &link.open, data).await,
        }
    }

    /// Reads the next frame; cancel-safe. A stream error, the server closing the stream or
    /// the connection is a failure at `stage`.
    pub async fn read(&mut self, stage: &'static str) -> Result<Read, Failure> {
        match self {
            Link::Xml(link) => {
                read_frame(&mut link.stream, &mut link.buf, &mut link.scanner, stage).await
            }
            Link::WebSocket(link) => ws_read(&mut link.ws, link.open.is_pb(), stage).await,
            Link::Pb(link) => pb_read(&mut link.stream, &mut link.input, stage).await,
        }
    }

    /// A new stream starts on the same connection (RFC 6120 §6.4.6, after SASL): bytes
    /// already buffered belong to it. Over WebSocket and protobuf every message or frame
    /// stands on its own, so there is no state to forget.
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
                    LinkReader::WebSocket {
                        stream,
                        pb: link.open.is_pb(),
                    },
                    LinkWriter::WebSocket {
                        sink,
                        open: link.open,
                    },
                )
            }
            Link::Pb(link) => {
                let (rd, wr) = tokio::io::split(link.stream);
                (
                    LinkReader::Pb {
                        rd,
                        input: link.input,
                    },
                    LinkWriter::Pb {
                        wr,
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
    /// WebSocket messages, carrying protobuf frames when `pb`.
    WebSocket {
        stream: SplitStream<WebSocketStream<Stream>>,
        pb: bool,
    },
    /// Protobuf frames: the read half and the bytes not yet decoded.
    Pb {
        rd: ReadHalf<Stream>,
        input: BytesMut,
    },
}

impl LinkReader {
    /// As [`Link::read`].
    pub async fn read(&mut self, stage: &'static str) -> Result<Read, Failure> {
        match self {
            LinkReader::Xml { rd, buf, scanner } => read_frame(rd, buf, scanner, stage).await,
            LinkReader::WebSocket { stream, pb } => ws_read(stream, *pb, stage).await,
            LinkReader::Pb { rd, input } => pb_read(rd, input, stage).await,
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
        open: WsOpen,
    },
    /// Protobuf frames: the write half and the encoded `open` frame.
    Pb { wr: WriteHalf<Stream>, open: Bytes },
}

impl LinkWriter {
    /// As [`Link::send`].
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            LinkWriter::Xml(wr) => wr.write_all(data).await,
            LinkWriter::WebSocket { sink, open } => ws_send(sink, open, data).await,
            LinkWriter::Pb { wr, open } => pb_send(wr, open, data).await,
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

/// The WebSocket upgrade with subprotocol `xmpp` (RFC 7395 §3.1) or `confab.xmpp.v1`.
async fn ws_handshake(target: &WsTarget, stream: Stream) -> Result<Link, Failure> {
    let fail = |reason: String| Failure::new("websocket", reason);
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    let subprotocol = target.open.subprotocol();
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(subprotocol),
    );
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .map_err(|e| fail(e.to_string()))?;
    // §3.1: without `xmpp` in the answer the server is not speaking RFC 7395 (and without
    // `confab.xmpp.v1`, not the protobuf binding).
    if response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(HeaderValue::as_bytes)
        != Some(subprotocol.as_bytes())
    {
        return Err(fail(format!(
            "server did not accept subprotocol {subprotocol}"
        )));
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

/// Sends `data` as one message per unit (text for RFC 7395, a binary frame for the protobuf
/// binding) and flushes once, so a pipelined batch leaves in as few writes as the TCP stream
/// would use.
async fn ws_send<S>(sink: &mut S, open: &WsOpen, data: &[u8]) -> io::Result<()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    match open {
        WsOpen::Xml(open) => {
            for unit in Units::new(data) {
                let text = match unit? {
                    Unit::Open => open.clone(),
                    Unit::Element(element) => {
                        Utf8Bytes::try_from(element).map_err(io::Error::other)?
                    }
                    Unit::Close => Utf8Bytes::from_static(CLOSE),
                };
                sink.feed(Message::Text(text))
                    .await
                    .map_err(io::Error::other)?;
            }
        }
        WsOpen::Pb(open) => {
            for frame in pb::Frames::new(data, open) {
                sink.feed(Message::Binary(frame?))
                    .await
                    .map_err(io::Error::other)?;
            }
        }
    }
    sink.flush().await.map_err(io::Error::other)
}

/// Sends `data` as length-prefixed frames in one write, as the XML stream writes a pipelined
/// batch at once.
async fn pb_send<W: AsyncWrite + Unpin>(wr: &mut W, open: &Bytes, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(data.len());
    for frame in pb::Frames::new(data, open) {
        let frame = frame?;
        confab_proto::prost::encoding::encode_varint(frame.len() as u64, &mut out);
        out.extend_from_slice(&frame);
    }
    wr.write_all(&out).await
}

/// Reads the next protobuf frame as a [`Read`]; cancel-safe (a frame leaves `input` only
/// when it is returned). Prefixes are checked against [`MAX_MESSAGE`] before the payload is
/// buffered, by the client library's decoder.
async fn pb_read<R: AsyncRead + Unpin>(
    rd: &mut R,
    input: &mut BytesMut,
    stage: &'static str,
) -> Result<Read, Failure> {
    loop {
        match decode_frame(input, MAX_MESSAGE) {
            Ok(Some(frame)) => return pb::read(&frame, stage),
            Ok(None) => {}
            Err(e) => return Err(Failure::new(stage, format!("unparsable stream: {e}"))),
        }
        if input.capacity() - input.len() < 1024 {
            input.reserve(4096);
        }
        match rd.read_buf(input).await {
            Ok(0) => return Err(Failure::new(stage, "connection closed by server")),
            Ok(_) => {}
            Err(e) => return Err(Failure::new(stage, format!("read: {e}"))),
        }
    }
}

/// Reads the next WebSocket message as a frame: RFC 7395 text, or with `pb` a binary
/// protobuf frame; cancel-safe (the stream keeps a partial message itself).
async fn ws_read<S>(stream: &mut S, pb: bool, stage: &'static str) -> Result<Read, Failure>
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
            Message::Binary(bytes) if pb => {
                let frame = PbFrame::decode(bytes)
                    .map_err(|e| Failure::new(stage, format!("undecodable frame: {e}")))?;
                return pb::read(&frame, stage);
            }
            Message::Text(_) if pb => {
                return Err(Failure::new(stage, "text message on the protobuf binding"));
            }
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

/// A connection's writer shared by a scenario's sender and its reader (which answers pings).
pub type SharedWriter = std::sync::Arc<tokio::sync::Mutex<LinkWriter>>;

/// First step of a scenario reader: whether `element` is a message to account for. An IQ is
/// answered here (XEP-0199 ping, or `service-unavailable`), so the server never waits on the
/// tool; anything else (presence) is skipped.
pub async fn message_to_count(element: &[u8], writer: &SharedWriter) -> bool {
    match xml::tag_name(element) {
        b"message" => true,
        b"iq" => {
            if let Some(reply) = crate::client::ping_reply(element) {
                let _ = writer.lock().await.send(reply.as_bytes()).await;
            }
            false
        }
        _ => false,
    }
}

/// `bounced: <condition>` for an error message, as the scenarios tally bounces.
pub fn bounce(element: &[u8]) -> Option<String> {
    (xml::attr(element, "type") == Some(b"error"))
        .then(|| format!("bounced: {}", xml::error_reason(element)))
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
        assert!(matches!(ws_read(&mut rx, false, "t").await, Ok(Read::Open)));
        match ws_read(&mut rx, false, "t").await {
            Ok(Read::Element(element)) => assert_eq!(xml::tag_name(&element), b"stream:features"),
            _ => panic!("features expected"),
        }
        let error = ws_read(&mut rx, false, "t")
            .await
            .err()
            .expect("stream error");
        assert!(error.reason.contains("conflict"), "{error}");
        let closed = ws_read(&mut rx, false, "t").await.err().expect("close");
        assert_eq!(closed.reason, "server closed the stream");
        let gone = ws_read(&mut rx, false, "t").await.err().expect("end");
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
            &WsOpen::Xml(Utf8Bytes::from_static("<open/>")),
            b"<?xml version='1.0'?><stream:stream to='x'><iq id='b'/></stream:stream>",
        )
        .await
        .expect("sent");
        assert_eq!(texts, ["<open/>", "<iq id='b'/>", CLOSE]);
    }

    #[tokio::test]
    async fn protobuf_frames_cross_a_byte_stream_in_both_directions() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let open = pb::open_payload("localhost");
        // What the client sends arrives as length-prefixed frames the library decodes.
        let send = b"<stream:stream to='localhost' version='1.0'><presence/>";
        pb_send(&mut client, &open, send).await.expect("sent");
        let mut wire = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            server.read_buf(&mut wire).await.expect("read");
            while let Some(frame) = decode_frame(&mut wire, MAX_MESSAGE).expect("valid") {
                frames.push(frame);
            }
        }
        assert!(matches!(
            frames[0].kind,
            Some(confab_proto::v1::frame::Kind::Open(_))
        ));
        assert!(matches!(
            frames[1].kind,
            Some(confab_proto::v1::frame::Kind::Presence(_))
        ));
        // The server's frames, written a few bytes at a time, read as whole units.
        let mut out = BytesMut::new();
        for frame in [
            confab_proto::opened_frame(Default::default()),
            frames[1].clone(),
            confab_proto::close_frame(),
        ] {
            frame.encode_length_delimited(&mut out).expect("encode");
        }
        let writer = tokio::spawn(async move {
            for chunk in out.chunks(3) {
                server.write_all(chunk).await.expect("write");
            }
            server
        });
        let mut input = BytesMut::new();
        assert!(matches!(
            pb_read(&mut client, &mut input, "t").await,
            Ok(Read::Open)
        ));
        match pb_read(&mut client, &mut input, "t").await {
            Ok(Read::Element(element)) => assert_eq!(xml::tag_name(&element), b"presence"),
            _ => panic!("presence expected"),
        }
        let closed = pb_read(&mut client, &mut input, "t")
            .await
            .err()
            .expect("close");
        assert_eq!(closed.reason, "server closed the stream");
        drop(writer.await.expect("writer"));
        let gone = pb_read(&mut client, &mut input, "t")
            .await
            .err()
            .expect("end");
        assert_eq!(gone.reason, "connection closed by server");
    }

    #[tokio::test]
    async fn protobuf_websocket_messages_are_binary_frames() {
        let features = confab_proto::v1::Frame {
            kind: Some(confab_proto::v1::frame::Kind::Features(Default::default())),
        };
        let messages = [
            Message::Binary(features.encode_to_vec().into()),
            Message::text("<open/>"),
        ];
        let mut rx = futures_util::stream::iter(messages.map(Ok));
        match ws_read(&mut rx, true, "t").await {
            Ok(Read::Element(element)) => {
                assert_eq!(xml::local_name(xml::tag_name(&element)), b"features");
            }
            _ => panic!("features expected"),
        }
        let text = ws_read(&mut rx, true, "t")
            .await
            .err()
            .expect("text refused");
        assert_eq!(text.reason, "text message on the protobuf binding");

        let mut binaries: Vec<Bytes> = Vec::new();
        let sink = futures_util::sink::unfold((), |(), message: Message| {
            if let Message::Binary(bytes) = message {
                binaries.push(bytes);
            }
            async { Ok::<(), WsError>(()) }
        });
        let mut sink = std::pin::pin!(sink);
        let open = WsOpen::Pb(pb::open_payload("localhost"));
        ws_send(
            &mut sink,
            &open,
            b"<stream:stream to='localhost'><r xmlns='urn:xmpp:sm:3'/>",
        )
        .await
        .expect("sent");
        let kinds: Vec<_> = binaries
            .iter()
            .map(|b| PbFrame::decode(b.clone()).expect("frame").kind)
            .collect();
        assert!(matches!(
            kinds[..],
            [
                Some(confab_proto::v1::frame::Kind::Open(_)),
                Some(confab_proto::v1::frame::Kind::SmRequest(_))
            ]
        ));
    }
}
