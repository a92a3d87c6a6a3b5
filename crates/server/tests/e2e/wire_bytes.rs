//! Bytes on the wire, counted on real sockets: the same login and the same chat message over
//! XML on TCP, XML over WebSocket (RFC 7395) and the protobuf binding (TCP and WebSocket).
//!
//! The client side counts every byte it writes and reads at the TCP level (for WebSocket that
//! includes the HTTP upgrade, frame headers and client masking). TLS is left out on every
//! transport so the figures compare the encodings, not the ciphers; TLS adds about the same
//! per-record overhead to each. Run with `--nocapture` to see the table the README quotes:
//! `cargo test -p confab --test e2e wire_bytes -- --nocapture`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use base64::Engine as _;
use confab_proto::v1::{Frame, StreamOpen};
use confab_proto::{MinidomFragments, ProstMessage as _, Unit};
use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{DOMAIN, STEP, Server, password};

/// A socket that counts what passes through it.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    XmlTcp,
    XmlWebSocket,
    PbTcp,
    PbWebSocket,
}

impl Encoding {
    const ALL: [Encoding; 4] = [
        Encoding::XmlTcp,
        Encoding::XmlWebSocket,
        Encoding::PbTcp,
        Encoding::PbWebSocket,
    ];

    fn label(self) -> &'static str {
        match self {
            Encoding::XmlTcp => "XML over TCP",
            Encoding::XmlWebSocket => "XML over WebSocket",
            Encoding::PbTcp => "protobuf over TCP",
            Encoding::PbWebSocket => "protobuf over WebSocket",
        }
    }
}

enum Link {
    Tcp(Counted),
    Ws(Box<WebSocketStream<Counted>>),
}

/// One client connection in one encoding, with the text of what it received so far (for
/// protobuf, the frames converted back to XML) to wait on.
struct Client {
    encoding: Encoding,
    link: Link,
    read: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
    received: String,
    input: Vec<u8>,
    /// Bytes of the HTTP upgrade (WebSocket only).
    upgrade: usize,
}

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

impl Client {
    async fn connect(server: &Server, encoding: Encoding) -> Client {
        let addr = match encoding {
            Encoding::XmlTcp => server.c2s,
            Encoding::PbTcp => server.pb.expect("the pb listener is enabled"),
            Encoding::XmlWebSocket | Encoding::PbWebSocket => server.http,
        };
        let read = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let socket = Counted {
            inner: TcpStream::connect(addr).await.expect("connect"),
            read: read.clone(),
            written: written.clone(),
        };
        let link = match encoding {
            Encoding::XmlTcp | Encoding::PbTcp => Link::Tcp(socket),
            Encoding::XmlWebSocket | Encoding::PbWebSocket => {
                let (path, protocol) = match encoding {
                    Encoding::XmlWebSocket => ("xmpp-websocket", "xmpp"),
                    _ => ("pb-websocket", "confab.xmpp.v1"),
                };
                let mut request = format!("ws://{addr}/{path}")
                    .into_client_request()
                    .expect("request");
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
                let (ws, _) = tokio_tungstenite::client_async(request, socket)
                    .await
                    .expect("WebSocket handshake");
                Link::Ws(Box::new(ws))
            }
        };
        let upgrade = read.load(Ordering::Relaxed) + written.load(Ordering::Relaxed);
        Client {
            encoding,
            link,
            read,
            written,
            received: String::new(),
            input: Vec::new(),
            upgrade,
        }
    }

    /// Bytes written and read so far.
    fn total(&self) -> usize {
        self.read.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>, text: bool) {
        match &mut self.link {
            Link::Tcp(socket) => socket.write_all(&bytes).await.expect("write"),
            Link::Ws(ws) => {
                let message = match text {
                    true => Message::text(String::from_utf8(bytes).expect("UTF-8")),
                    false => Message::binary(bytes),
                };
                ws.send(message).await.expect("send")
            }
        }
    }

    async fn send_frame(&mut self, frame: Frame) {
        let bytes = match self.encoding {
            Encoding::PbTcp => frame.encode_length_delimited_to_vec(),
            _ => frame.encode_to_vec(),
        };
        self.send_bytes(bytes, false).await;
    }

    /// The stream header (or its restart after SASL).
    async fn open(&mut self) {
        match self.encoding {
            Encoding::XmlTcp => {
                let header = format!(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
                );
                self.send_bytes(header.into_bytes(), true).await;
            }
            Encoding::XmlWebSocket => {
                let open = format!("<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>");
                self.send_bytes(open.into_bytes(), true).await;
            }
            Encoding::PbTcp | Encoding::PbWebSocket => {
                let open = StreamOpen {
                    to: Some(DOMAIN.to_owned()),
                    version: Some("1.0".to_owned()),
                    ..Default::default()
                };
                self.send_frame(confab_proto::open_frame(open)).await;
            }
        }
    }

    /// One first-level element, written as a client of that encoding would: inside a TCP
    /// stream, stanzas inherit `jabber:client`; a WebSocket message must declare it.
    async fn send(&mut self, xml: &str) {
        match self.encoding {
            Encoding::XmlTcp => {
                let inherited = xml.replacen(" xmlns='jabber:client'", "", 1);
                self.send_bytes(inherited.into_bytes(), true).await;
            }
            Encoding::XmlWebSocket => self.send_bytes(xml.as_bytes().to_vec(), true).await,
            Encoding::PbTcp | Encoding::PbWebSocket => {
                let element: Element = xml.parse().expect("valid element");
                let frame = confab_proto::element_to_frame(&element, &mut MinidomFragments);
                self.send_frame(frame).await;
            }
        }
    }

    /// Reads until the received text holds one of `needles`, and forgets what came before.
    async fn wait(&mut self, needles: &[&str]) {
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(end) = needles
                    .iter()
                    .filter_map(|n| self.received.find(n).map(|at| at + n.len()))
                    .min()
                {
                    self.received.drain(..end);
                    return;
                }
                self.receive().await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{:?}: none of {needles:?} arrived; got {}",
                self.encoding, self.received
            )
        });
    }

    /// Appends the next chunk of what the server sent to `received`.
    async fn receive(&mut self) {
        match &mut self.link {
            Link::Tcp(socket) => {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.expect("read");
                assert!(n > 0, "{:?}: the server closed the stream", self.encoding);
                match self.encoding {
                    Encoding::XmlTcp => self
                        .received
                        .push_str(std::str::from_utf8(&chunk[..n]).expect("UTF-8")),
                    _ => {
                        self.input.extend_from_slice(&chunk[..n]);
                        while let Some(frame) = take_frame(&mut self.input) {
                            self.received.push_str(&frame_text(&frame));
                        }
                    }
                }
            }
            Link::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => self.received.push_str(&text),
                Some(Ok(Message::Binary(data))) => {
                    let frame = Frame::decode(&data[..]).expect("a frame");
                    self.received.push_str(&frame_text(&frame));
                }
                Some(Ok(_)) => {}
                other => panic!("{:?}: the WebSocket ended: {other:?}", self.encoding),
            },
        }
    }
}

/// One whole varint length-delimited frame from the front of `input`, if it holds one.
fn take_frame(input: &mut Vec<u8>) -> Option<Frame> {
    let mut view = input.as_slice();
    let length = confab_proto::prost::decode_length_delimiter(&mut view).ok()?;
    let prefix = input.len() - view.len();
    if view.len() < length {
        return None;
    }
    let frame = Frame::decode(&view[..length]).expect("a frame");
    input.drain(..prefix + length);
    Some(frame)
}

fn frame_text(frame: &Frame) -> String {
    match confab_proto::frame_to_unit(frame, &mut MinidomFragments).expect("a valid frame") {
        Unit::Element(element) => String::from(&element),
        Unit::Opened(_) => "<opened/>".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A stream's end of features in any of the encodings (minidom writes the streams namespace
/// as a default namespace, XML streams use the `stream:` prefix).
const FEATURES: &[&str] = &["</stream:features>", "</features>"];

/// What one encoding cost.
#[derive(Clone, Copy)]
struct Figures {
    /// The HTTP upgrade (0 on TCP).
    upgrade: usize,
    /// From the stream header through the first message's Confab ack, upgrade excluded.
    login: usize,
    /// The chat message with a receipt request and its Confab ack.
    message: usize,
}

async fn measure(server: &Server, encoding: Encoding) -> Figures {
    let mut client = Client::connect(server, encoding).await;
    client.open().await;
    client.wait(FEATURES).await;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{}", password("alice")));
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
        ))
        .await;
    client.wait(&["<success"]).await;
    client.open().await;
    client.wait(FEATURES).await;
    client
        .send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
        .await;
    client.wait(&["</jid>"]).await;
    client
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    client.wait(&["<enabled"]).await;
    client.send("<presence xmlns='jabber:client'/>").await;
    // RFC 6121 §4.2.2: initial presence comes back to the resource that sent it.
    client.wait(&["<presence"]).await;
    let before_message = client.total();
    client
        .send("<message xmlns='jabber:client' to='bob@localhost' type='chat' id='9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69'><body>Hi Bob, lunch at noon?</body><request xmlns='urn:xmpp:receipts'/></message>")
        .await;
    client.wait(&["urn:confab:ack:0"]).await;
    let total = client.total();
    Figures {
        upgrade: client.upgrade,
        login: total - client.upgrade,
        message: total - before_message,
    }
}

#[tokio::test]
async fn protobuf_takes_at_least_60_percent_fewer_bytes_than_xml() {
    let server = Server::builder()
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
        ])
        .users(crate::harness::DEFAULT_USERS)
        .start()
        .await;
    let mut figures = Vec::new();
    for encoding in Encoding::ALL {
        figures.push((encoding, measure(&server, encoding).await));
    }
    println!(
        "| transport | login through first message acknowledged | chat message with receipt request + Confab ack | HTTP upgrade |"
    );
    println!("| --- | --- | --- | --- |");
    for (encoding, f) in &figures {
        println!(
            "| {} | {} B | {} B | {} |",
            encoding.label(),
            f.login,
            f.message,
            match f.upgrade {
                0 => "none".to_owned(),
                bytes => format!("{bytes} B"),
            }
        );
    }
    let of = |wanted: Encoding| {
        figures
            .iter()
            .find(|(encoding, _)| *encoding == wanted)
            .map(|(_, figure)| *figure)
            .expect("measured")
    };
    let saving = |xml: usize, pb: usize| 100.0 * (1.0 - pb as f64 / xml as f64);
    for (xml, pb) in [
        (Encoding::XmlTcp, Encoding::PbTcp),
        (Encoding::XmlWebSocket, Encoding::PbWebSocket),
    ] {
        let (xml_figures, pb_figures) = (of(xml), of(pb));
        let (xml_login, xml_message) = (xml_figures.login, xml_figures.message);
        let (pb_login, pb_message) = (pb_figures.login, pb_figures.message);
        println!(
            "{} vs {}: login {:.0}% fewer, message {:.0}% fewer",
            pb.label(),
            xml.label(),
            saving(xml_login, pb_login),
            saving(xml_message, pb_message)
        );
        assert!(
            saving(xml_message, pb_message) >= 60.0,
            "{pb:?} message {pb_message} B vs {xml:?} {xml_message} B"
        );
        assert!(
            saving(xml_login, pb_login) >= 60.0,
            "{pb:?} login {pb_login} B vs {xml:?} {xml_login} B"
        );
    }
}
