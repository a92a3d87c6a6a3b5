//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` and XEP-0156 discovery, driven by an
//! independent WebSocket client (tokio-tungstenite) against the real server.
//!
//! Every message the server sends is parsed on its own by minidom, which refuses undeclared
//! prefixes: each test therefore also checks that frames are standalone documents
//! (RFC 7395 §3.3.3).

use crate::harness::{DOMAIN, STEP, Server, body_of, ns, password};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::transport_clients::WsMessage;

/// RFC 7395 §3.3.1.
const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// XEP-0198.
const SM: &str = "urn:xmpp:sm:3";

/// What the server sent.
#[derive(Debug)]
enum Frame {
    /// A text message, parsed as a standalone document.
    Element(Element),
    /// A binary message.
    Binary(Vec<u8>),
    /// A WebSocket Close frame, then the end.
    Closed,
}

/// A raw RFC 7395 client.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
    next_id: u32,
    jid: Option<String>,
}

/// Opens a WebSocket to `path` with optional `Sec-WebSocket-Protocol` and `Origin`.
async fn try_connect(
    server: &Server,
    path: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<WsClient, WsError> {
    let (ws, response) =
        crate::transport_clients::ws_handshake(server.http, path, protocol, origin).await?;
    if let Some(protocol) = protocol {
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.as_bytes()),
            Some(protocol.as_bytes()),
            "§3.1: the server confirms the subprotocol"
        );
    }
    Ok(WsClient {
        ws,
        next_id: 0,
        jid: None,
    })
}

/// Opens `/xmpp-websocket` with the `xmpp` subprotocol.
async fn connect(server: &Server) -> WsClient {
    try_connect(server, "/xmpp-websocket", Some("xmpp"), None)
        .await
        .expect("WebSocket handshake")
}

/// The status and JSON body of a refused handshake.
fn refusal(result: Result<WsClient, WsError>) -> (u16, serde_json::Value) {
    match result {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "refusal body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            (response.status().as_u16(), json)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

impl WsClient {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("w{}", self.next_id)
    }

    async fn send(&mut self, xml: &str) {
        self.ws
            .send(Message::text(xml.to_owned()))
            .await
            .expect("send a message");
    }

    /// The next frame; panics after [`STEP`].
    async fn next(&mut self) -> Frame {
        match crate::transport_clients::next_ws_message(&mut self.ws).await {
            WsMessage::Text(text) => {
                let element = text
                    .parse::<Element>()
                    .unwrap_or_else(|e| panic!("not a standalone XML document ({e}): {text}"));
                Frame::Element(element)
            }
            WsMessage::Binary(data) => Frame::Binary(data),
            WsMessage::Closed => Frame::Closed,
        }
    }

    async fn expect(&mut self, name: &str, namespace: &str) -> Element {
        match self.next().await {
            Frame::Element(element) if element.is(name, namespace) => element,
            other => panic!("expected <{name} xmlns='{namespace}'/>, got {other:?}"),
        }
    }

    /// `<open/>`; returns the stream features.
    async fn open(&mut self) -> Element {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"
        ))
        .await;
        let open = self.expect("open", FRAMING).await;
        assert_eq!(open.attr("from"), Some(DOMAIN));
        assert_eq!(open.attr("version"), Some("1.0"));
        assert!(open.attr("id").is_some_and(|id| !id.is_empty()));
        self.expect("features", ns::STREAM).await
    }

    /// Opens, authenticates with PLAIN (allowed on loopback), restarts (§3.5) and binds.
    async fn login(&mut self, user: &str, resource: &str) {
        let features = self.open().await;
        let mechanisms = features
            .get_child("mechanisms", ns::SASL)
            .expect("SASL mechanisms offered");
        assert!(
            mechanisms.children().any(|m| m.text() == "PLAIN"),
            "{features:?}"
        );
        assert!(
            features.get_child("starttls", ns::TLS).is_none(),
            "no STARTTLS inside a WebSocket"
        );
        let payload = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{}", password(user)));
        self.send(&format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{payload}</auth>",
            ns::SASL
        ))
        .await;
        self.expect("success", ns::SASL).await;
        let features = self.open().await;
        assert!(features.get_child("bind", ns::BIND).is_some());
        let id = self.id();
        self.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='{id}'><bind xmlns='{}'>\
             <resource>{resource}</resource></bind></iq>",
            ns::BIND
        ))
        .await;
        let result = self.expect("iq", ns::CLIENT).await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        let jid = result
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text)
            .expect("bound JID");
        assert_eq!(jid, format!("{user}@{DOMAIN}/{resource}"));
        self.jid = Some(jid);
    }

    /// The next `<message/>` with a body, skipping anything else.
    async fn expect_message(&mut self) -> Element {
        loop {
            match self.next().await {
                Frame::Element(element)
                    if element.is("message", ns::CLIENT) && body_of(&element).is_some() =>
                {
                    return element;
                }
                Frame::Element(_) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// A stream error (its condition), then `<close/>` and the WebSocket closing (§3.6).
    async fn expect_stream_error(&mut self) -> String {
        let error = loop {
            match self.next().await {
                Frame::Element(element) if element.is("error", ns::STREAM) => break element,
                Frame::Element(element) if element.is("open", FRAMING) => {}
                other => panic!("expected a stream error, got {other:?}"),
            }
        };
        self.expect("close", FRAMING).await;
        assert!(matches!(self.next().await, Frame::Closed));
        error
            .children()
            .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
            .map(|c| c.name().to_owned())
            .expect("a condition")
    }

    /// Round trip through the server: proves the session is alive and in order.
    async fn ping(&mut self) {
        let id = self.id();
        self.send(&format!(
            "<iq xmlns='jabber:client' type='get' id='{id}'><ping xmlns='{}'/></iq>",
            ns::PING
        ))
        .await;
        loop {
            match self.next().await {
                Frame::Element(element)
                    if element.is("iq", ns::CLIENT) && element.attr("id") == Some(id.as_str()) =>
                {
                    assert_eq!(element.attr("type"), Some("result"));
                    return;
                }
                Frame::Element(_) => {}
                other => panic!("expected the ping result, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_client_logs_in_and_chats_with_a_tcp_client() {
    let server = Server::start(&[], &[]).await;
    let mut web = connect(&server).await;
    web.login("alice", "web").await;
    let mut tcp = server.login_available("bob", "desk", 0).await;

    web.send(&format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}/desk' type='chat' id='m1'>\
         <body>hello from the browser &amp; co</body></message>"
    ))
    .await;
    let got = tcp
        .expect_message_with_body("hello from the browser & co")
        .await;
    assert_eq!(
        got.attr("from"),
        Some(format!("alice@{DOMAIN}/web").as_str())
    );

    tcp.message(&format!("alice@{DOMAIN}/web"), "hello &lt;back&gt;")
        .await;
    let reply = web.expect_message().await;
    assert_eq!(body_of(&reply).as_deref(), Some("hello <back>"));
    assert_eq!(
        reply.attr("from"),
        Some(format!("bob@{DOMAIN}/desk").as_str())
    );

    // WebSocket pings are answered (RFC 6455 §5.5.2), between stanzas as at any time.
    web.ws
        .send(Message::Ping(b"keepalive".to_vec().into()))
        .await
        .expect("send ping");
    let pong = tokio::time::timeout(STEP, async {
        loop {
            match web.ws.next().await {
                Some(Ok(Message::Pong(data))) => return data.to_vec(),
                Some(Ok(_)) => {}
                other => panic!("no pong: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(pong, b"keepalive");

    // §3.6: the client closes; the server answers <close/> and ends the WebSocket.
    web.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    web.expect("close", FRAMING).await;
    assert!(matches!(web.next().await, Frame::Closed));
}

#[tokio::test]
async fn stream_management_enables_and_acknowledges_over_websocket() {
    let server = Server::start(&[], &[]).await;
    let mut web = connect(&server).await;
    web.login("alice", "web").await;
    web.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = web.expect("enabled", SM).await;
    assert_eq!(enabled.attr("resume"), Some("true"));

    // Client → server: the server counts the handled stanza.
    web.ping().await;
    web.send(&format!("<r xmlns='{SM}'/>")).await;
    let answer = web.expect("a", SM).await;
    assert_eq!(answer.attr("h"), Some("1"));

    // Server → client: a message, then acknowledged when the server asks.
    let mut tcp = server.login("bob", "desk").await;
    tcp.message(&format!("alice@{DOMAIN}/web"), "ack me").await;
    let message = web.expect_message().await;
    assert_eq!(body_of(&message).as_deref(), Some("ack me"));
    web.send(&format!("<r xmlns='{SM}'/>")).await;
    web.expect("a", SM).await;
    web.send(&format!("<a xmlns='{SM}' h='1'/>")).await;
    // Acknowledging more than was sent is a stream error: proves the count is tracked.
    web.send(&format!("<a xmlns='{SM}' h='5'/>")).await;
    assert_eq!(web.expect_stream_error().await, "undefined-condition");
}

#[tokio::test]
async fn the_xmpp_subprotocol_is_required() {
    let server = Server::start(&[], &[]).await;
    let (status, body) = refusal(try_connect(&server, "/xmpp-websocket", None, None).await);
    assert_eq!(status, 400);
    assert_eq!(body["error"], "subprotocol_required");
    let (status, body) =
        refusal(try_connect(&server, "/xmpp-websocket", Some("graphql-ws"), None).await);
    assert_eq!(status, 400);
    assert_eq!(body["error"], "subprotocol_required");
    // A plain GET is not an upgrade.
    let response = server.http_get("/xmpp-websocket").await;
    assert!(
        response.status >= 400 && response.status < 500,
        "{response:?}"
    );
    assert!(response.body.contains("\"error\""), "{response:?}");
}

#[tokio::test]
async fn origins_are_checked() {
    let server = Server::start(&[], &[]).await;
    // Default: the server's own origin and loopback pages only.
    let (status, body) = refusal(
        try_connect(
            &server,
            "/xmpp-websocket",
            Some("xmpp"),
            Some("https://evil.example"),
        )
        .await,
    );
    assert_eq!(status, 403);
    assert_eq!(body["error"], "origin_not_allowed");
    let own = format!("http://{}", server.http);
    let mut web = try_connect(&server, "/xmpp-websocket", Some("xmpp"), Some(&own))
        .await
        .expect("same origin");
    web.open().await;
    drop(web);

    let server = Server::start(
        &[],
        &[(
            "CONFAB__HTTP__WEBSOCKET_ORIGINS",
            "[\"https://chat.example.com\"]",
        )],
    )
    .await;
    let mut web = try_connect(
        &server,
        "/xmpp-websocket",
        Some("xmpp"),
        Some("https://chat.example.com"),
    )
    .await
    .expect("listed origin");
    web.open().await;
    let (status, _) = refusal(
        try_connect(
            &server,
            "/xmpp-websocket",
            Some("xmpp"),
            Some("http://localhost:8080"),
        )
        .await,
    );
    assert_eq!(status, 403, "a list replaces the default");
}

#[tokio::test]
async fn a_binary_message_ends_only_its_own_stream() {
    let server = Server::start(&[], &[]).await;
    let mut other = connect(&server).await;
    other.login("bob", "web").await;
    let mut web = connect(&server).await;
    web.login("alice", "web").await;

    web.ws
        .send(Message::binary(b"<presence/>".to_vec()))
        .await
        .expect("send binary");
    assert_eq!(web.expect_stream_error().await, "bad-format");

    other.ping().await;
    let mut tcp = server.login("carol", "desk").await;
    tcp.message(&format!("bob@{DOMAIN}/web"), "still here?")
        .await;
    let message = other.expect_message().await;
    assert_eq!(body_of(&message).as_deref(), Some("still here?"));
}

#[tokio::test]
async fn oversized_and_malformed_messages_are_stream_errors() {
    let server = Server::start(&[], &[("CONFAB__C2S__MAX_STANZA_BYTES", "4096")]).await;
    let mut web = connect(&server).await;
    web.login("alice", "web").await;
    let big = format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}'><body>{}</body></message>",
        "x".repeat(8192)
    );
    web.send(&big).await;
    assert_eq!(web.expect_stream_error().await, "policy-violation");

    // Two elements in one message (§3.3.3 allows exactly one).
    let mut web = connect(&server).await;
    web.open().await;
    web.send("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>")
        .await;
    assert_eq!(web.expect_stream_error().await, "bad-format");

    // Restricted XML, as on TCP.
    let mut web = connect(&server).await;
    web.open().await;
    web.send("<message xmlns='jabber:client'><!-- no --></message>")
        .await;
    assert_eq!(web.expect_stream_error().await, "restricted-xml");

    // A stanza before <open/>: the server opens, reports and closes (RFC 6120 §4.9.1.2).
    let mut web = connect(&server).await;
    web.send("<presence xmlns='jabber:client'/>").await;
    assert_eq!(web.expect_stream_error().await, "invalid-namespace");

    // A wrong domain in <open/>.
    let mut web = connect(&server).await;
    web.send(&format!(
        "<open xmlns='{FRAMING}' to='elsewhere.example' version='1.0'/>"
    ))
    .await;
    assert_eq!(web.expect_stream_error().await, "host-unknown");
}

#[tokio::test]
async fn websocket_sessions_are_capped() {
    let server = Server::start(&[], &[("CONFAB__C2S__MAX_CONNECTIONS", "1")]).await;
    let mut first = connect(&server).await;
    first.open().await;
    let (status, body) = refusal(try_connect(&server, "/xmpp-websocket", Some("xmpp"), None).await);
    assert_eq!(status, 503);
    assert_eq!(body["error"], "too_many_connections");
    // The permit comes back when the session ends.
    first.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    first.expect("close", FRAMING).await;
    assert!(matches!(first.next().await, Frame::Closed));
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match try_connect(&server, "/xmpp-websocket", Some("xmpp"), None).await {
            Ok(mut again) => {
                again.open().await;
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the permit was not returned: {error}"),
        }
    }
}

#[tokio::test]
async fn shutdown_ends_websocket_sessions_with_system_shutdown() {
    let mut server = Server::start(&[], &[]).await;
    let mut web = connect(&server).await;
    web.login("alice", "web").await;
    server.terminate().await;
    assert_eq!(web.expect_stream_error().await, "system-shutdown");
    server.wait_exit().await;
}

#[tokio::test]
async fn host_meta_advertises_the_websocket_endpoint() {
    let server = Server::start(&[], &[]).await;
    let expected = format!("ws://{}/xmpp-websocket", server.http);

    let xrd = server.http_get("/.well-known/host-meta").await;
    assert_eq!(xrd.status, 200, "{xrd:?}");
    assert!(
        xrd.headers.contains("content-type: application/xrd+xml"),
        "{xrd:?}"
    );
    assert!(
        xrd.headers.contains("access-control-allow-origin: *"),
        "{xrd:?}"
    );
    let doc: Element = xrd.body.parse().expect("XRD is XML");
    assert!(doc.is("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0"));
    let link = doc
        .children()
        .find(|l| l.attr("rel") == Some("urn:xmpp:alt-connections:websocket"))
        .expect("websocket link");
    assert_eq!(link.attr("href"), Some(expected.as_str()));

    let jrd = server.http_get("/.well-known/host-meta.json").await;
    assert_eq!(jrd.status, 200, "{jrd:?}");
    assert!(
        jrd.headers.contains("content-type: application/jrd+json"),
        "{jrd:?}"
    );
    assert!(
        jrd.headers.contains("access-control-allow-origin: *"),
        "{jrd:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&jrd.body).expect("JRD is JSON");
    assert_eq!(
        json["links"][0]["rel"],
        "urn:xmpp:alt-connections:websocket"
    );
    assert_eq!(json["links"][0]["href"], expected.as_str());

    let server = Server::start(
        &[],
        &[("CONFAB__HTTP__PUBLIC_URL", "https://chat.example.com/")],
    )
    .await;
    let jrd = server.http_get("/.well-known/host-meta.json").await;
    let json: serde_json::Value = serde_json::from_str(&jrd.body).expect("JRD is JSON");
    assert_eq!(
        json["links"][0]["href"],
        "wss://chat.example.com/xmpp-websocket"
    );
}

/// The next binary message as a protobuf binding unit.
async fn next_unit(client: &mut WsClient) -> confab_proto::Unit {
    use confab_proto::ProstMessage as _;
    match client.next().await {
        Frame::Binary(data) => {
            let frame = confab_proto::v1::Frame::decode(data.as_slice()).expect("a Frame");
            confab_proto::frame_to_unit(&frame, &mut confab_proto::MinidomFragments)
                .expect("a unit")
        }
        other => panic!("expected a binary message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_protobuf_binding_runs_over_binary_messages() {
    use confab_proto::ProstMessage as _;
    use confab_proto::Unit;
    let server = Server::start(&[], &[]).await;
    let (status, _) = refusal(try_connect(&server, "/pb-websocket", Some("xmpp"), None).await);
    assert_eq!(status, 400, "the protobuf endpoint has its own subprotocol");
    let mut pb = try_connect(&server, "/pb-websocket", Some("confab.xmpp.v1"), None)
        .await
        .expect("WebSocket handshake");
    let open = confab_proto::open_frame(confab_proto::v1::StreamOpen {
        to: Some(DOMAIN.to_owned()),
        version: Some("1.0".to_owned()),
        ..Default::default()
    });
    pb.ws
        .send(Message::binary(open.encode_to_vec()))
        .await
        .expect("send open");
    let Unit::Opened(opened) = next_unit(&mut pb).await else {
        panic!("expected the server's stream header");
    };
    assert_eq!(opened.from.as_deref(), Some(DOMAIN));
    let Unit::Element(features) = next_unit(&mut pb).await else {
        panic!("expected stream features");
    };
    assert!(features.is("features", ns::STREAM), "{features:?}");
    // A text message is the wrong kind here: a stream error, then the end.
    pb.send("<presence/>").await;
    let Unit::Element(error) = next_unit(&mut pb).await else {
        panic!("expected a stream error");
    };
    assert!(error.is("error", ns::STREAM), "{error:?}");
    assert!(error.has_child("bad-format", ns::STREAMS), "{error:?}");
    assert!(matches!(next_unit(&mut pb).await, Unit::Close));
    assert!(matches!(pb.next().await, Frame::Closed));
}
