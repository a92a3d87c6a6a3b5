//! One scenario suite over every client transport (issue 5 item 6).
//!
//! [`AnyClient`] speaks to the server over any of the five transports and exposes the session
//! at the stanza level (`minidom::Element`): the XML transports send and parse elements
//! directly, the protobuf transports convert them with `confab_proto::element_to_frame` and
//! `frame_to_unit`, so each scenario is written once, in XML terms, and runs per transport
//! (one test per scenario and transport, named after both). The negotiation (stream open,
//! SASL, restart, bind) is also written in XML terms: only opening a stream differs between
//! transports.
//!
//! Then every ordered pair of transports exchanges a message with a payload the server does
//! not know (it must arrive unchanged), and malformed input the transport-specific suites do
//! not already cover ends only its own stream.

use minidom::Element;

use crate::harness::{Client, DOMAIN, Event, STEP, Server, body_of, ns, password, stanza_error};
use crate::scram::ScramSha256;
use crate::transport_clients::{PbTcpConn, WsConn, WsMessage};
use confab_proto::{MinidomFragments, ProstMessage as _, Unit};

/// RFC 7395 §3.3.1.
const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// XEP-0198.
const SM: &str = "urn:xmpp:sm:3";
/// docs/protocol/confab-ack.md.
const ACK: &str = "urn:confab:ack:0";
/// XEP-0359.
const SID: &str = "urn:xmpp:sid:0";
/// XEP-0184.
const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0313.
const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0297.
const FORWARD: &str = "urn:xmpp:forward:0";

/// A client transport of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// XML over TCP, upgraded with STARTTLS (RFC 6120 §5).
    TcpStarttls,
    /// XML over TLS from the first byte (XEP-0368).
    DirectTls,
    /// XML over WebSocket, one element per text message (RFC 7395).
    WebSocket,
    /// The protobuf binding over TCP, varint length-delimited frames.
    PbTcp,
    /// The protobuf binding over WebSocket, one frame per binary message.
    PbWebSocket,
}

impl Transport {
    /// Every transport, in a fixed order.
    pub const ALL: [Transport; 5] = [
        Transport::TcpStarttls,
        Transport::DirectTls,
        Transport::WebSocket,
        Transport::PbTcp,
        Transport::PbWebSocket,
    ];
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::TcpStarttls => "tcp+starttls",
            Transport::DirectTls => "direct-tls",
            Transport::WebSocket => "websocket",
            Transport::PbTcp => "pb-tcp",
            Transport::PbWebSocket => "pb-websocket",
        })
    }
}

/// A server with every transport enabled and the default accounts plus `users`.
async fn server_with(users: &[&str], env: &[(&str, &str)]) -> Server {
    Server::builder()
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
        ])
        .env(env)
        .users(crate::harness::DEFAULT_USERS)
        .users(users)
        .start()
        .await
}

/// A server with every transport enabled and the default accounts.
async fn server() -> Server {
    server_with(&[], &[]).await
}

/// Parses a literal stanza of a test.
fn el(xml: &str) -> Element {
    xml.parse()
        .unwrap_or_else(|e| panic!("bad test XML ({e}): {xml}"))
}

/// What a connection delivered.
#[derive(Debug)]
pub enum Incoming {
    /// A first-level element.
    Element(Element),
    /// The server closed the stream (`</stream:stream>`, `<close/>` or a `Close` frame).
    Close,
    /// The connection ended.
    Eof,
}

/// The connection under a client.
enum Wire {
    /// Both XML-over-TCP transports: the harness's raw client (boxed: it holds the parser).
    Xml(Box<Client>),
    /// RFC 7395 text messages.
    Ws(WsConn),
    /// Protobuf frames over TCP.
    PbTcp(PbTcpConn),
    /// Protobuf frames in binary WebSocket messages.
    PbWs(WsConn),
}

/// Input no well-behaved client sends, for [`AnyClient::send_malformed`].
#[derive(Debug, Clone)]
pub enum Malformed {
    /// Raw bytes on the TCP connection.
    Bytes(Vec<u8>),
    /// Raw bytes on the TCP connection, then our end of it closed (TCP FIN).
    BytesThenEof(Vec<u8>),
    /// One binary WebSocket message.
    Binary(Vec<u8>),
    /// One text WebSocket message.
    Text(String),
}

impl Wire {
    async fn connect(server: &Server, transport: Transport) -> Wire {
        match transport {
            Transport::TcpStarttls => Wire::Xml(Box::new(server.connect().await)),
            Transport::DirectTls => Wire::Xml(Box::new(
                server
                    .connect_direct_tls(crate::harness::insecure_tls_config())
                    .await,
            )),
            Transport::WebSocket => {
                Wire::Ws(WsConn::connect(server.http, "/xmpp-websocket", "xmpp").await)
            }
            Transport::PbTcp => {
                Wire::PbTcp(PbTcpConn::connect(server.pb.expect("the pb listener")).await)
            }
            Transport::PbWebSocket => {
                Wire::PbWs(WsConn::connect(server.http, "/pb-websocket", "confab.xmpp.v1").await)
            }
        }
    }

    /// Opens (or restarts) the stream and returns the server's features.
    async fn open(&mut self) -> Element {
        match self {
            Wire::Xml(client) => client.open_stream().await,
            Wire::Ws(_) => {
                self.send(&el(&format!(
                    "<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"
                )))
                .await;
                let open = self.next_element("the server's <open/>").await;
                assert!(open.is("open", FRAMING), "expected <open/>: {open:?}");
                assert_eq!(open.attr("from"), Some(DOMAIN));
                self.next_element("stream features").await
            }
            Wire::PbTcp(_) | Wire::PbWs(_) => {
                let open = confab_proto::open_frame(confab_proto::v1::StreamOpen {
                    to: Some(DOMAIN.to_owned()),
                    version: Some("1.0".to_owned()),
                    ..Default::default()
                });
                match self {
                    Wire::PbTcp(conn) => conn.send(&open).await,
                    Wire::PbWs(conn) => conn.send_binary(open.encode_to_vec()).await,
                    _ => unreachable!("protobuf transports only"),
                }
                match self.next_unit().await {
                    Some(Unit::Opened(opened)) => assert_eq!(opened.from.as_deref(), Some(DOMAIN)),
                    other => panic!("expected the Opened frame, got {other:?}"),
                }
                self.next_element("stream features").await
            }
        }
    }

    async fn send(&mut self, element: &Element) {
        match self {
            Wire::Xml(client) => client.send(String::from(element)).await,
            Wire::Ws(conn) => conn.send_text(String::from(element)).await,
            Wire::PbTcp(conn) => {
                conn.send(&confab_proto::element_to_frame(
                    element,
                    &mut MinidomFragments,
                ))
                .await;
            }
            Wire::PbWs(conn) => {
                let frame = confab_proto::element_to_frame(element, &mut MinidomFragments);
                conn.send_binary(frame.encode_to_vec()).await;
            }
        }
    }

    /// The next unit of a protobuf transport; `None` at the end of the connection.
    async fn next_unit(&mut self) -> Option<Unit> {
        let frame = match self {
            Wire::PbTcp(conn) => conn.next().await?,
            Wire::PbWs(conn) => match conn.next().await {
                WsMessage::Binary(data) => {
                    confab_proto::v1::Frame::decode(data.as_slice()).expect("a Frame")
                }
                WsMessage::Closed => return None,
                WsMessage::Text(text) => panic!("a text message on /pb-websocket: {text}"),
            },
            _ => unreachable!("protobuf transports only"),
        };
        Some(
            confab_proto::frame_to_unit(&frame, &mut MinidomFragments).unwrap_or_else(|e| {
                panic!("the server sent a frame we cannot read ({e}): {frame:?}")
            }),
        )
    }

    async fn next(&mut self) -> Incoming {
        loop {
            match self {
                Wire::Xml(client) => match client.next_event().await {
                    Event::Open => {}
                    Event::Element(element) => return Incoming::Element(element),
                    Event::Close => return Incoming::Close,
                    Event::Eof => return Incoming::Eof,
                },
                Wire::Ws(conn) => match conn.next().await {
                    WsMessage::Text(text) => {
                        // RFC 7395 §3.3.3: every message is a standalone document.
                        let element: Element = text.parse().unwrap_or_else(|e| {
                            panic!("not a standalone XML document ({e}): {text}")
                        });
                        if element.is("close", FRAMING) {
                            return Incoming::Close;
                        }
                        // `<open/>` stays an element: [`Wire::open`] reads it, and a stream
                        // error may follow one (RFC 6120 §4.9.1.2).
                        return Incoming::Element(element);
                    }
                    WsMessage::Binary(data) => {
                        panic!("a binary message on /xmpp-websocket: {data:?}")
                    }
                    WsMessage::Closed => return Incoming::Eof,
                },
                Wire::PbTcp(_) | Wire::PbWs(_) => match self.next_unit().await {
                    None => return Incoming::Eof,
                    Some(Unit::Element(element)) => return Incoming::Element(element),
                    Some(Unit::Close) => return Incoming::Close,
                    Some(Unit::Open(_) | Unit::Opened(_)) => {}
                },
            }
        }
    }

    async fn next_element(&mut self, what: &str) -> Element {
        match self.next().await {
            Incoming::Element(element) => element,
            other => panic!("expected {what}, got {other:?}"),
        }
    }
}

/// How a client authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// RFC 7677, with the test's own client ([`ScramSha256`]).
    ScramSha256,
}

/// A logged-in session over any transport, at the stanza level.
pub struct AnyClient {
    /// The transport under this client.
    pub transport: Transport,
    wire: Wire,
    next_id: u32,
    /// The bound full JID.
    pub jid: String,
    /// Stanzas received since XEP-0198 was enabled; `None` while it is not.
    handled: Option<u32>,
}

/// Connects over `transport`, authenticates `user` with PLAIN and binds `resource`.
pub async fn connect_and_login(
    server: &Server,
    transport: Transport,
    user: &str,
    resource: &str,
) -> AnyClient {
    connect_and_login_with(server, transport, user, resource, Mechanism::Plain).await
}

/// Like [`connect_and_login`] with a choice of SASL mechanism.
pub async fn connect_and_login_with(
    server: &Server,
    transport: Transport,
    user: &str,
    resource: &str,
    mechanism: Mechanism,
) -> AnyClient {
    let mut wire = Wire::connect(server, transport).await;
    let features = match &mut wire {
        Wire::Xml(client) if transport == Transport::TcpStarttls => client.starttls().await,
        wire => wire.open().await,
    };
    let offered = crate::harness::mechanisms(&features);
    let sasl = |name: &str, text: &str| {
        // RFC 6120 §6.4.2: an empty payload travels as "=".
        let text = if text.is_empty() { "=" } else { text };
        el(&format!("<{name} xmlns='{}'>{text}</{name}>", ns::SASL))
    };
    match mechanism {
        Mechanism::Plain => {
            assert!(
                offered.iter().any(|m| m == "PLAIN"),
                "{transport}: {offered:?}"
            );
            let initial = crate::harness::b64(format!("\0{user}\0{}", password(user)).as_bytes());
            wire.send(&el(&format!(
                "<auth xmlns='{}' mechanism='PLAIN'>{initial}</auth>",
                ns::SASL
            )))
            .await;
            let success = wire.next_element("SASL success").await;
            assert!(success.is("success", ns::SASL), "{transport}: {success:?}");
        }
        Mechanism::ScramSha256 => {
            assert!(
                offered.iter().any(|m| m == "SCRAM-SHA-256"),
                "{transport}: {offered:?}"
            );
            let mut scram = ScramSha256::new(user, &password(user));
            wire.send(&el(&format!(
                "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
                ns::SASL,
                crate::harness::b64(&scram.client_first())
            )))
            .await;
            let challenge = wire.next_element("the SCRAM challenge").await;
            assert!(
                challenge.is("challenge", ns::SASL),
                "{transport}: {challenge:?}"
            );
            let response = scram.client_final(&crate::harness::unb64(&challenge.text()));
            wire.send(&sasl("response", &crate::harness::b64(&response)))
                .await;
            let success = wire.next_element("SASL success").await;
            assert!(success.is("success", ns::SASL), "{transport}: {success:?}");
            // The server proves it knows the credentials too (RFC 5802 §3).
            scram.verify_server_final(&crate::harness::unb64(&success.text()));
        }
    }
    // RFC 6120 §6.4.6: the stream restarts after SASL.
    let features = wire.open().await;
    assert!(
        features.has_child("bind", ns::BIND),
        "{transport}: bind offered after SASL: {features:?}"
    );
    let mut client = AnyClient {
        transport,
        wire,
        next_id: 0,
        jid: String::new(),
        handled: None,
    };
    let reply = client
        .iq(
            "set",
            None,
            &format!(
                "<bind xmlns='{}'><resource>{resource}</resource></bind>",
                ns::BIND
            ),
        )
        .await;
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{transport}: bind: {reply:?}"
    );
    client.jid = reply
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(Element::text)
        .unwrap_or_else(|| panic!("{transport}: bind result without a JID: {reply:?}"));
    assert_eq!(
        client.jid,
        format!("{user}@{DOMAIN}/{resource}"),
        "{transport}"
    );
    client
}

impl AnyClient {
    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("x{}", self.next_id)
    }

    /// Sends one first-level element.
    pub async fn send(&mut self, element: Element) {
        self.wire.send(&element).await;
    }

    /// Parses and sends one first-level element (stanzas in `jabber:client` must say so).
    pub async fn send_xml(&mut self, xml: &str) {
        self.send(el(xml)).await;
    }

    /// The next element, whatever it is; the server's XEP-0198 `<r/>` is answered on the way
    /// with the number of stanzas received, as a client must (XEP-0198 §4).
    pub async fn next_stanza(&mut self) -> Element {
        loop {
            match self.wire.next().await {
                Incoming::Element(element) => {
                    if let Some(handled) = self.handled.as_mut() {
                        if element.is("r", SM) {
                            let h = *handled;
                            self.send(el(&format!("<a xmlns='{SM}' h='{h}'/>"))).await;
                            continue;
                        }
                        if ["message", "presence", "iq"]
                            .iter()
                            .any(|name| element.is(name, ns::CLIENT))
                        {
                            *handled += 1;
                        }
                    }
                    return element;
                }
                other => panic!("{}: the stream ended: {other:?}", self.transport),
            }
        }
    }

    /// Skips elements until one satisfies `matches`; returns it and what was skipped.
    pub async fn expect_matching(
        &mut self,
        what: &str,
        matches: impl Fn(&Element) -> bool,
    ) -> (Element, Vec<Element>) {
        let mut skipped = Vec::new();
        let found = tokio::time::timeout(STEP, async {
            loop {
                let element = self.next_stanza().await;
                if matches(&element) {
                    return element;
                }
                skipped.push(element);
            }
        })
        .await;
        match found {
            Ok(element) => (element, skipped),
            Err(_) => panic!(
                "{}: expected {what}, got only {}",
                self.transport,
                skipped
                    .iter()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }

    /// Sends an IQ with `body` as its child and returns the response with the same id.
    pub async fn iq(&mut self, type_: &str, to: Option<&str>, body: &str) -> Element {
        let id = self.id();
        let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
        self.send_xml(&format!(
            "<iq xmlns='jabber:client' type='{type_}' id='{id}'{to}>{body}</iq>"
        ))
        .await;
        self.expect_matching(&format!("the response to IQ {id}"), |e| {
            e.is("iq", ns::CLIENT)
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result" | "error"))
        })
        .await
        .0
    }

    /// Pings the server and returns everything that arrived before the answer: a barrier
    /// for "nothing else was delivered" (see the harness module docs).
    pub async fn sync(&mut self) -> Vec<Element> {
        let id = self.id();
        self.send_xml(&format!(
            "<iq xmlns='jabber:client' type='get' id='{id}' to='{DOMAIN}'><ping xmlns='{}'/></iq>",
            ns::PING
        ))
        .await;
        let (answer, before) = self
            .expect_matching("the answer to the sync ping", |e| {
                e.is("iq", ns::CLIENT) && e.attr("id") == Some(id.as_str())
            })
            .await;
        assert_eq!(
            answer.attr("type"),
            Some("result"),
            "{}: {answer:?}",
            self.transport
        );
        before
    }

    /// Sends initial presence and consumes what it triggers.
    pub async fn available(&mut self) -> Vec<Element> {
        self.send_xml("<presence xmlns='jabber:client'/>").await;
        self.sync().await
    }

    /// A message with this body (skipping anything else).
    pub async fn expect_message_with_body(&mut self, body: &str) -> Element {
        self.expect_matching(&format!("a message with body {body:?}"), |e| {
            e.is("message", ns::CLIENT) && body_of(e).as_deref() == Some(body)
        })
        .await
        .0
    }

    /// The Confab commit receipt (`<ack/>`) for the message with client id `id`.
    pub async fn expect_ack(&mut self, id: &str) -> Element {
        let (envelope, _) = self
            .expect_matching(&format!("the commit receipt for {id}"), |e| {
                e.get_child("ack", ACK)
                    .is_some_and(|ack| ack.attr("client-id") == Some(id))
            })
            .await;
        envelope
    }

    /// Enables XEP-0198; from now on received stanzas are counted and the server's `<r/>`
    /// answered.
    pub async fn enable_sm(&mut self) -> Element {
        self.send_xml(&format!("<enable xmlns='{SM}'/>")).await;
        let (enabled, _) = self
            .expect_matching("<enabled/>", |e| e.is("enabled", SM))
            .await;
        self.handled = Some(0);
        enabled
    }

    /// Stanzas received since XEP-0198 was enabled.
    pub fn handled(&self) -> u32 {
        self.handled.expect("stream management is enabled")
    }

    /// Sends input no well-behaved client sends.
    pub async fn send_malformed(&mut self, input: &Malformed) {
        match (&mut self.wire, input) {
            (Wire::PbTcp(conn), Malformed::Bytes(bytes)) => conn.send_raw(bytes).await,
            (Wire::PbTcp(conn), Malformed::BytesThenEof(bytes)) => {
                conn.send_raw(bytes).await;
                conn.shutdown_write().await;
            }
            (Wire::Ws(conn) | Wire::PbWs(conn), Malformed::Binary(data)) => {
                conn.send_binary(data.clone()).await;
            }
            (Wire::Ws(conn) | Wire::PbWs(conn), Malformed::Text(text)) => {
                conn.send_text(text.clone()).await;
            }
            (_, input) => panic!("{}: cannot send {input:?}", self.transport),
        }
    }

    /// The server's stream error (skipping stanzas before it), then the end of the stream
    /// and of the connection; returns the condition. `what` names the case in failures.
    pub async fn expect_stream_error(&mut self, what: &str) -> String {
        let transport = format!("{}: {what}", self.transport);
        let error = loop {
            match self.wire.next().await {
                Incoming::Element(element) if element.is("error", ns::STREAM) => break element,
                Incoming::Element(_) => {}
                other => panic!("{transport}: expected a stream error, got {other:?}"),
            }
        };
        let condition = error
            .children()
            .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| {
                panic!("{transport}: a stream error without a condition: {error:?}")
            });
        let close = self.wire.next().await;
        assert!(
            matches!(close, Incoming::Close),
            "{transport}: the stream is closed after the error, got {close:?}"
        );
        let end = self.wire.next().await;
        assert!(
            matches!(end, Incoming::Eof),
            "{transport}: the connection ends after the close, got {end:?}"
        );
        condition
    }
}

/// Generates one test per transport for each scenario: `transports::SCENARIO::TRANSPORT`.
macro_rules! per_transport {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Transport;

            #[tokio::test]
            async fn tcp_starttls() {
                super::$scenario(Transport::TcpStarttls).await;
            }

            #[tokio::test]
            async fn direct_tls() {
                super::$scenario(Transport::DirectTls).await;
            }

            #[tokio::test]
            async fn websocket() {
                super::$scenario(Transport::WebSocket).await;
            }

            #[tokio::test]
            async fn pb_tcp() {
                super::$scenario(Transport::PbTcp).await;
            }

            #[tokio::test]
            async fn pb_websocket() {
                super::$scenario(Transport::PbWebSocket).await;
            }
        }
    )*};
}

per_transport!(
    login_bind_and_roster,
    chat_gets_a_commit_receipt,
    a_resend_gets_the_same_receipt_and_is_delivered_once,
    presence_reaches_a_subscribed_contact,
    ping_and_unknown_namespace,
    stream_management_counts,
    offline_message_arrives_on_next_login,
    mam_returns_the_exchanged_messages,
);

/// SCRAM-SHA-256 and PLAIN both log in, bind and read the roster.
async fn login_bind_and_roster(t: Transport) {
    let server = server().await;
    let mut alice =
        connect_and_login_with(&server, t, "alice", "scram", Mechanism::ScramSha256).await;
    let mut bob = connect_and_login(&server, t, "bob", "plain").await;
    for client in [&mut alice, &mut bob] {
        let roster = client
            .iq("get", None, &format!("<query xmlns='{}'/>", ns::ROSTER))
            .await;
        assert_eq!(roster.attr("type"), Some("result"), "{t}: {roster:?}");
        assert!(roster.has_child("query", ns::ROSTER), "{t}: {roster:?}");
    }
    // Both sessions carry stanzas to each other.
    bob.available().await;
    let id = alice.id();
    alice
        .send_xml(&format!(
            "<message xmlns='jabber:client' to='{}' type='chat' id='{id}'><body>hi</body></message>",
            bob.jid
        ))
        .await;
    let got = bob.expect_message_with_body("hi").await;
    assert_eq!(got.attr("from"), Some(alice.jid.as_str()), "{t}");
}

/// A chat message with a receipt request, as every scenario that needs one sends it.
fn chat(to: &str, id: &str, body: &str) -> Element {
    el(&format!(
        "<message xmlns='jabber:client' to='{to}' type='chat' id='{id}'>\
           <body>{body}</body><request xmlns='{RECEIPTS}'/></message>"
    ))
}

/// The commit receipt, then the message with the same server id at the peer.
async fn chat_gets_a_commit_receipt(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    let mut bob = connect_and_login(&server, t, "bob", "b").await;
    bob.available().await;

    let id = "6b1d6f0e-3c1a-4d5e-9f7a-2b3c4d5e6f70";
    alice
        .send(chat("bob@localhost", id, "with a receipt"))
        .await;
    let envelope = alice.expect_ack(id).await;
    assert_eq!(envelope.attr("type"), Some("headline"), "{t}: {envelope:?}");
    assert_eq!(envelope.attr("from"), Some(DOMAIN), "{t}: {envelope:?}");
    let ack = envelope.get_child("ack", ACK).expect("ack");
    let server_id = ack.attr("server-id").expect("server-id").to_owned();
    assert_eq!(
        envelope.attr("id"),
        Some(format!("ack-{server_id}").as_str()),
        "{t}: the envelope id derives from the server id"
    );
    assert_eq!(ack.attr("seq"), Some("1"), "{t}: {envelope:?}");
    assert_eq!(ack.attr("with"), Some("bob@localhost"), "{t}: {envelope:?}");
    assert!(
        ack.attr("stamp").is_some_and(|s| s.ends_with('Z')),
        "{t}: {envelope:?}"
    );

    let delivered = bob.expect_message_with_body("with a receipt").await;
    assert_eq!(delivered.attr("from"), Some(alice.jid.as_str()), "{t}");
    assert!(
        delivered.has_child("request", RECEIPTS),
        "{t}: {delivered:?}"
    );
    let stanza_id = delivered
        .get_child("stanza-id", SID)
        .unwrap_or_else(|| panic!("{t}: no XEP-0359 stanza-id: {delivered:?}"));
    assert_eq!(stanza_id.attr("id"), Some(server_id.as_str()), "{t}");
    assert_eq!(stanza_id.attr("by"), Some("bob@localhost"), "{t}");
}

/// The second send of the same id is answered with the first receipt and not delivered.
async fn a_resend_gets_the_same_receipt_and_is_delivered_once(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    let mut bob = connect_and_login(&server, t, "bob", "b").await;
    bob.available().await;

    let id = "resend-1";
    alice.send(chat("bob@localhost", id, "only once")).await;
    let first = alice.expect_ack(id).await;
    bob.expect_message_with_body("only once").await;

    alice.send(chat("bob@localhost", id, "only once")).await;
    let second = alice.expect_ack(id).await;
    assert_eq!(first, second, "{t}: a resend gets the original receipt");
    let after = bob.sync().await;
    assert!(
        !after.iter().any(|e| body_of(e).is_some()),
        "{t}: delivered twice: {:?}",
        after.iter().map(String::from).collect::<Vec<_>>()
    );
}

/// Alice subscribes to bob (RFC 6121 §3.1); bob's presence update then reaches her.
async fn presence_reaches_a_subscribed_contact(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    let mut bob = connect_and_login(&server, t, "bob", "b").await;
    alice.available().await;
    bob.available().await;

    let reply = alice
        .iq(
            "set",
            None,
            &format!(
                "<query xmlns='{}'><item jid='bob@localhost'/></query>",
                ns::ROSTER
            ),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{t}: {reply:?}");
    alice
        .send_xml("<presence xmlns='jabber:client' to='bob@localhost' type='subscribe'/>")
        .await;
    bob.expect_matching("the subscription request", |e| {
        e.is("presence", ns::CLIENT)
            && e.attr("type") == Some("subscribe")
            && e.attr("from") == Some("alice@localhost")
    })
    .await;
    bob.send_xml("<presence xmlns='jabber:client' to='alice@localhost' type='subscribed'/>")
        .await;
    // §3.1.6: the approval, then bob's current presence.
    let bob_jid = bob.jid.clone();
    alice
        .expect_matching("bob's available presence", |e| {
            e.is("presence", ns::CLIENT)
                && e.attr("type").is_none()
                && e.attr("from") == Some(bob_jid.as_str())
        })
        .await;

    bob.send_xml("<presence xmlns='jabber:client'><status>on the move</status></presence>")
        .await;
    let (update, _) = alice
        .expect_matching("bob's presence update", |e| {
            e.is("presence", ns::CLIENT)
                && e.attr("from") == Some(bob_jid.as_str())
                && e.get_child("status", ns::CLIENT)
                    .map(Element::text)
                    .as_deref()
                    == Some("on the move")
        })
        .await;
    assert_eq!(update.attr("type"), None, "{t}: {update:?}");
}

/// XEP-0199 ping is answered; an unknown namespace is service-unavailable (RFC 6120 §8.4).
async fn ping_and_unknown_namespace(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    let reply = alice
        .iq(
            "get",
            Some(DOMAIN),
            &format!("<ping xmlns='{}'/>", ns::PING),
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{t}: {reply:?}");
    assert_eq!(reply.attr("from"), Some(DOMAIN), "{t}: {reply:?}");
    assert_eq!(reply.attr("to"), Some(alice.jid.as_str()), "{t}: {reply:?}");

    let reply = alice
        .iq("get", Some(DOMAIN), "<query xmlns='urn:example:unknown'/>")
        .await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("service-unavailable"),
        "{t}: {reply:?}"
    );
}

/// XEP-0198: the server counts what it handled, and takes our count of what it sent.
async fn stream_management_counts(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    alice.enable_sm().await;

    // Client → server: three IQs handled, then <r/>.
    for _ in 0..3 {
        let reply = alice
            .iq(
                "get",
                Some(DOMAIN),
                &format!("<ping xmlns='{}'/>", ns::PING),
            )
            .await;
        assert_eq!(reply.attr("type"), Some("result"), "{t}: {reply:?}");
    }
    alice.send_xml(&format!("<r xmlns='{SM}'/>")).await;
    let (answer, _) = alice.expect_matching("<a/>", |e| e.is("a", SM)).await;
    assert_eq!(answer.attr("h"), Some("3"), "{t}: {answer:?}");

    // Server → client: two messages from bob, then our exact count is accepted…
    let mut bob = connect_and_login(&server, Transport::TcpStarttls, "bob", "b").await;
    for body in ["one", "two"] {
        bob.send_xml(&format!(
            "<message xmlns='jabber:client' to='{}' type='chat'><body>{body}</body></message>",
            alice.jid
        ))
        .await;
        alice.expect_message_with_body(body).await;
    }
    alice.sync().await;
    let h = alice.handled();
    assert_eq!(h, 6, "{t}: three IQ results, two messages and the sync");
    alice.send_xml(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    alice.sync().await;
    // …and a count one beyond what the server sent is not (XEP-0198 §4): it tracks them.
    let h = alice.handled() + 1;
    alice.send_xml(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    assert_eq!(
        alice.expect_stream_error("an over-ack").await,
        "undefined-condition",
        "{t}"
    );
}

/// A message stored while bob is offline reaches him after his next login's presence.
async fn offline_message_arrives_on_next_login(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    alice.available().await;
    alice
        .send(chat("bob@localhost", "off-1", "while you were out"))
        .await;
    // Stored (acknowledged), not bounced.
    alice.expect_ack("off-1").await;

    let mut bob = connect_and_login(&server, t, "bob", "back").await;
    let after_presence = bob.available().await;
    let message = after_presence
        .iter()
        .find(|e| body_of(e).as_deref() == Some("while you were out"))
        .unwrap_or_else(|| {
            panic!(
                "{t}: the offline message after presence: {:?}",
                after_presence.iter().map(String::from).collect::<Vec<_>>()
            )
        });
    assert_eq!(message.attr("from"), Some(alice.jid.as_str()), "{t}");
    assert!(message.has_child("delay", ns::DELAY), "{t}: {message:?}");
}

/// XEP-0313: alice's archive holds both directions, under the ids the recipient saw.
async fn mam_returns_the_exchanged_messages(t: Transport) {
    let server = server().await;
    let mut alice = connect_and_login(&server, t, "alice", "a").await;
    let mut bob = connect_and_login(&server, t, "bob", "b").await;
    alice.available().await;
    bob.available().await;

    let mut seen = Vec::new();
    for (n, body) in ["one", "two"].into_iter().enumerate() {
        alice
            .send(chat("bob@localhost", &format!("mam-{n}"), body))
            .await;
        let got = bob.expect_message_with_body(body).await;
        let id = got
            .get_child("stanza-id", SID)
            .and_then(|s| s.attr("id"))
            .unwrap_or_else(|| panic!("{t}: no stanza-id: {got:?}"))
            .to_owned();
        seen.push((body.to_owned(), id));
    }
    bob.send(chat("alice@localhost", "mam-back", "three")).await;
    let got = alice.expect_message_with_body("three").await;
    let id = got
        .get_child("stanza-id", SID)
        .and_then(|s| s.attr("id"))
        .unwrap_or_else(|| panic!("{t}: no stanza-id: {got:?}"))
        .to_owned();
    seen.push(("three".to_owned(), id));

    let query_id = alice.id();
    alice
        .send_xml(&format!(
            "<iq xmlns='jabber:client' type='set' id='{query_id}'>\
               <query xmlns='{MAM}' queryid='q1'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                   <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>\
                   <field var='with'><value>bob@localhost</value></field>\
                 </x>\
               </query></iq>"
        ))
        .await;
    let (fin, before) = alice
        .expect_matching("the MAM answer", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some(query_id.as_str())
        })
        .await;
    assert_eq!(fin.attr("type"), Some("result"), "{t}: {fin:?}");
    let results: Vec<(String, String)> = before
        .iter()
        .filter_map(|m| m.get_child("result", MAM))
        .map(|result| {
            assert_eq!(result.attr("queryid"), Some("q1"), "{t}");
            let forwarded = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", ns::CLIENT))
                .unwrap_or_else(|| panic!("{t}: a forwarded message: {result:?}"));
            (
                body_of(forwarded).unwrap_or_default(),
                result.attr("id").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results, seen,
        "{t}: oldest first, under the ids the recipients saw"
    );
}

/// Every ordered pair of transports: a message with body, thread, an unknown payload and a
/// receipt request arrives unchanged, and the XEP-0184 receipt comes back.
#[tokio::test]
async fn every_pair_of_transports_exchanges_messages_and_receipts() {
    let senders: Vec<String> = (0..Transport::ALL.len())
        .map(|i| format!("send{i}"))
        .collect();
    let receivers: Vec<String> = (0..Transport::ALL.len())
        .map(|i| format!("recv{i}"))
        .collect();
    let accounts: Vec<&str> = senders
        .iter()
        .chain(&receivers)
        .map(String::as_str)
        .collect();
    let server = server_with(&accounts, &[]).await;
    let mut senders_by_transport = Vec::new();
    let mut receivers_by_transport = Vec::new();
    for (i, t) in Transport::ALL.into_iter().enumerate() {
        let mut sender = connect_and_login(&server, t, &senders[i], "s").await;
        sender.available().await;
        senders_by_transport.push(sender);
        let mut receiver = connect_and_login(&server, t, &receivers[i], "r").await;
        receiver.available().await;
        receivers_by_transport.push(receiver);
    }
    let payload = el("<x xmlns='urn:example:payload' a='1'><y>z</y></x>");

    for (s, from) in Transport::ALL.into_iter().enumerate() {
        for (r, to) in Transport::ALL.into_iter().enumerate() {
            let pair = format!("{from} → {to}");
            let sender = &mut senders_by_transport[s];
            let receiver = &mut receivers_by_transport[r];
            let id = format!("pair-{s}-{r}");
            let body = format!("from {from} to {to}: a &amp; b &lt;c&gt;");
            sender
                .send_xml(&format!(
                    "<message xmlns='jabber:client' to='{}' type='chat' id='{id}'>\
                       <body>{body}</body><thread>thread-{s}-{r}</thread>\
                       <x xmlns='urn:example:payload' a='1'><y>z</y></x>\
                       <request xmlns='{RECEIPTS}'/></message>",
                    receiver.jid
                ))
                .await;
            let (got, _) = receiver
                .expect_matching(&format!("{pair}: the message"), |e| {
                    e.is("message", ns::CLIENT) && e.attr("id") == Some(id.as_str())
                })
                .await;
            assert_eq!(got.attr("from"), Some(sender.jid.as_str()), "{pair}");
            assert_eq!(
                body_of(&got).as_deref(),
                Some(format!("from {from} to {to}: a & b <c>").as_str()),
                "{pair}"
            );
            assert_eq!(
                got.get_child("thread", ns::CLIENT)
                    .map(Element::text)
                    .as_deref(),
                Some(format!("thread-{s}-{r}").as_str()),
                "{pair}"
            );
            assert_eq!(
                got.get_child("x", "urn:example:payload"),
                Some(&payload),
                "{pair}: the payload arrives unchanged: {}",
                String::from(&got)
            );
            assert!(got.has_child("request", RECEIPTS), "{pair}: {got:?}");

            receiver
                .send_xml(&format!(
                    "<message xmlns='jabber:client' to='{}' id='rcpt-{s}-{r}'>\
                       <received xmlns='{RECEIPTS}' id='{id}'/></message>",
                    sender.jid
                ))
                .await;
            let receiver_jid = receiver.jid.clone();
            let (receipt, _) = sender
                .expect_matching(&format!("{pair}: the receipt"), |e| {
                    e.get_child("received", RECEIPTS)
                        .is_some_and(|r| r.attr("id") == Some(id.as_str()))
                })
                .await;
            assert_eq!(receipt.attr("from"), Some(receiver_jid.as_str()), "{pair}");
        }
    }
}

/// The stanza limit the malformed-input test runs with.
const SMALL_STANZA_LIMIT: usize = 4096;

/// Malformed input on the binary transports that protobuf.rs and websocket.rs do not already
/// send (they cover bad varints, invalid protobuf and an enormous length on pb-tcp, a text
/// message before login on pb-websocket and a binary message on xmpp-websocket). Each ends
/// its own stream with the documented stream error; sessions on other transports still chat.
#[tokio::test]
async fn malformed_binary_input_ends_only_its_own_stream() {
    let limit = SMALL_STANZA_LIMIT.to_string();
    let server = server_with(&[], &[("CONFAB__C2S__MAX_STANZA_BYTES", &limit)]).await;
    let mut alice = connect_and_login(&server, Transport::TcpStarttls, "alice", "a").await;
    let mut bob = connect_and_login(&server, Transport::WebSocket, "bob", "b").await;
    alice.available().await;
    bob.available().await;

    let varint = |n: usize| {
        let mut v = Vec::new();
        confab_proto::prost::encode_length_delimiter(n, &mut v).expect("encode length");
        v
    };
    let cases: Vec<(Transport, &str, Malformed, &str)> = vec![
        (
            Transport::PbTcp,
            "a length prefix one byte over the stanza limit",
            Malformed::Bytes(varint(SMALL_STANZA_LIMIT + 1)),
            "policy-violation",
        ),
        (
            Transport::PbTcp,
            "an empty frame (no kind set)",
            Malformed::Bytes(varint(0)),
            "bad-format",
        ),
        (
            Transport::PbTcp,
            "a truncated frame, then the end of the connection",
            Malformed::BytesThenEof({
                let mut v = varint(50);
                v.extend_from_slice(&[0x0a; 10]);
                v
            }),
            "bad-format",
        ),
        (
            Transport::PbWebSocket,
            "a message that is not a Frame",
            Malformed::Binary(vec![0xff, 0xff, 0xff]),
            "bad-format",
        ),
        (
            Transport::PbWebSocket,
            "eleven varint continuation bytes",
            Malformed::Binary(vec![0xff; 11]),
            "bad-format",
        ),
        (
            Transport::PbWebSocket,
            "an empty binary message",
            Malformed::Binary(Vec::new()),
            "bad-format",
        ),
        (
            Transport::PbWebSocket,
            "a message over the stanza limit",
            Malformed::Binary(vec![0x0a; SMALL_STANZA_LIMIT + 1]),
            "policy-violation",
        ),
        (
            Transport::PbWebSocket,
            "a text message after login",
            Malformed::Text("<presence xmlns='jabber:client'/>".to_owned()),
            "bad-format",
        ),
    ];
    for (n, (t, what, input, condition)) in cases.into_iter().enumerate() {
        let mut carol = connect_and_login(&server, t, "carol", &format!("bad{n}")).await;
        carol.available().await;
        carol.send_malformed(&input).await;
        assert_eq!(
            carol.expect_stream_error(what).await,
            condition,
            "{t}: {what}"
        );

        // The other sessions, on other transports, are unaffected.
        let body = format!("still here after {what}");
        alice
            .send(chat("bob@localhost", &format!("after-{n}"), &body))
            .await;
        bob.expect_message_with_body(&body).await;
        bob.send(chat("alice@localhost", &format!("back-{n}"), &body))
            .await;
        alice.expect_message_with_body(&body).await;
    }
}
