//! One simulated client: connect, open the stream, STARTTLS, SASL, bind, initial presence.
//! The connection itself (TCP, direct TLS or WebSocket) is a [`Link`]; this module only
//! speaks XML over it.
//!
//! Pipelining (on unless `--no-pipeline`): the client sends what the protocol lets it send
//! before the server's answer arrives, because a server processes a stream's elements in
//! order. The stream header travels with `<starttls/>`, the restarted header with `<auth/>`,
//! and the post-SASL header with the bind request, so a PLAIN login over plain TCP costs
//! two round trips instead of five. The features that arrive are still checked, so a server
//! that did not offer what was sent is reported by name rather than as a confusing failure.
//! `--no-pipeline` waits for each `<stream:features/>` like a cautious client.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_rustls::TlsConnector;

use crate::link::{Dial, Link};
use crate::sasl::{Mechanism, Scram, plain_initial};
use crate::transport::{Stream, server_name};
use crate::xml::{self, Frame, Scanner};

/// How every client of a run connects and logs in.
#[derive(Clone)]
pub struct ClientConfig {
    /// Server address (of the WebSocket URL's host, with `--transport websocket`).
    pub server: SocketAddr,
    /// How connections are opened: TCP, direct TLS or WebSocket.
    pub dial: Dial,
    /// XMPP domain (the stream's `to`, the JIDs' domain, the TLS SNI name).
    pub domain: String,
    /// STARTTLS connector, when STARTTLS is wanted (TCP only).
    pub tls: Option<TlsConnector>,
    /// SASL mechanism.
    pub mechanism: Mechanism,
    /// Resource requested at bind.
    pub resource: String,
    /// Send initial presence after binding.
    pub presence: bool,
    /// Send ahead of the server's answers where the protocol allows it.
    pub pipeline: bool,
    /// Deadline for the whole login.
    pub timeout: Duration,
}

/// Why a connection failed: the stage and the reason, aggregated by their text in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which stage (connect, tls, sasl, bind, …).
    pub stage: &'static str,
    /// What happened, e.g. a stream-error condition or an IO error.
    pub reason: String,
}

impl Failure {
    pub fn new(stage: &'static str, reason: impl Into<String>) -> Self {
        Self {
            stage,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.reason)
    }
}

/// An open XMPP stream.
pub struct Conn {
    /// The connection and its framing state.
    pub link: Link,
    /// The stage reported if the connection fails now.
    pub stage: &'static str,
}

/// What a read yielded.
pub enum Read {
    /// The server's stream header (after a restart).
    Open,
    /// A first-level element.
    Element(Bytes),
}

const STREAM_NS: &str = "http://etherx.jabber.org/streams";

impl Conn {
    /// Opens a connection from `source` (if any) to the server, as `config.dial` says.
    pub async fn connect(config: &ClientConfig, source: Option<IpAddr>) -> Result<Self, Failure> {
        let link = Link::connect(&config.dial, config.server, &config.domain, source).await?;
        Ok(Self {
            link,
            stage: "stream",
        })
    }

    /// Writes all of `data`: whole elements, stream headers or the stream's end.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.link
            .send(data)
            .await
            .map_err(|e| Failure::new(self.stage, format!("write: {e}")))
    }

    /// Reads the next frame; cancel-safe. A stream error or the server closing the stream
    /// is a failure.
    pub async fn read(&mut self) -> Result<Read, Failure> {
        self.link.read(self.stage).await
    }

    /// Reads the next element, skipping stream headers.
    pub async fn element(&mut self) -> Result<Bytes, Failure> {
        loop {
            if let Read::Element(element) = self.read().await? {
                return Ok(element);
            }
        }
    }

    /// Reads until `<stream:features/>` and returns it.
    async fn features(&mut self) -> Result<Bytes, Failure> {
        loop {
            let element = self.element().await?;
            if xml::local_name(xml::tag_name(&element)) == b"features" {
                return Ok(element);
            }
        }
    }

    /// Answers an XEP-0199 ping addressed to us; returns whether `element` was one.
    pub async fn answer_ping(&mut self, element: &[u8]) -> Result<bool, Failure> {
        if let Some(reply) = ping_reply(element) {
            self.send(reply.as_bytes()).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Reads the next frame from `reader`, buffering in `buf`. Cancel-safe: a frame is taken
/// out of `buf` only when it is returned. A stream error or the server closing the stream is
/// a failure reported at `stage`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    scanner: &mut Scanner,
    stage: &'static str,
) -> Result<Read, Failure> {
    loop {
        let frame = scanner
            .next(buf)
            .map_err(|e| Failure::new(stage, format!("unparsable stream: {}", e.0)))?;
        match frame {
            Some(Frame::Open(len)) => {
                let _ = buf.split_to(len);
                return Ok(Read::Open);
            }
            Some(Frame::Element(len)) => {
                let element = buf.split_to(len).freeze();
                let name = xml::tag_name(&element);
                if name != b"error" && xml::local_name(name) == b"error" {
                    return Err(Failure::new(
                        stage,
                        format!("stream error {}", xml::error_reason(&element)),
                    ));
                }
                return Ok(Read::Element(element));
            }
            Some(Frame::Close(_)) => {
                return Err(Failure::new(stage, "server closed the stream"));
            }
            None => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match reader.read_buf(buf).await {
            Ok(0) => return Err(Failure::new(stage, "connection closed by server")),
            Ok(_) => {}
            Err(e) => return Err(Failure::new(stage, format!("read: {e}"))),
        }
    }
}

/// The result for an IQ get carrying an XEP-0199 ping, or for any other IQ get/set the tool
/// cannot answer, `service-unavailable` (RFC 6120 §8.4), so the server never waits on us.
pub fn ping_reply(element: &[u8]) -> Option<String> {
    if xml::tag_name(element) != b"iq" {
        return None;
    }
    let kind = xml::attr(element, "type")?;
    if kind != b"get" && kind != b"set" {
        return None;
    }
    let id = String::from_utf8_lossy(xml::attr(element, "id").unwrap_or_default()).into_owned();
    let to = xml::attr(element, "from")
        .map(|from| format!(" to='{}'", String::from_utf8_lossy(from)))
        .unwrap_or_default();
    if xml::has_child(element, "ping") {
        Some(format!("<iq type='result' id='{id}'{to}/>"))
    } else {
        Some(format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ))
    }
}

/// A bound session, ready for stanzas.
pub struct Session {
    pub conn: Conn,
    /// The full JID the server assigned at bind.
    pub jid: String,
}

/// The stream header a client sends.
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='{STREAM_NS}' to='{}' version='1.0'>",
        xml::escape(domain)
    )
}

/// Logs `user` in and binds a resource, within `config.timeout`.
pub async fn login(
    config: &ClientConfig,
    user: &str,
    password: &str,
    source: Option<IpAddr>,
) -> Result<Session, Failure> {
    let mut stage = "connect";
    match tokio::time::timeout(
        config.timeout,
        login_inner(config, user, password, source, &mut stage),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Failure::new(stage, "timed out")),
    }
}

async fn login_inner(
    config: &ClientConfig,
    user: &str,
    password: &str,
    source: Option<IpAddr>,
    stage: &mut &'static str,
) -> Result<Session, Failure> {
    let mut conn = Conn::connect(config, source).await?;
    if let Some(connector) = &config.tls {
        *stage = "starttls";
        conn = starttls(conn, config, connector).await?;
    }

    *stage = "sasl";
    conn.stage = "sasl";
    authenticate(&mut conn, config, user, password).await?;

    *stage = "bind";
    conn.stage = "bind";
    let header = stream_header(&config.domain);
    let bind = format!(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{}</resource></bind></iq>",
        xml::escape(&config.resource)
    );
    let features = if config.pipeline {
        conn.send(format!("{header}{bind}").as_bytes()).await?;
        conn.features().await?
    } else {
        conn.send(header.as_bytes()).await?;
        let features = conn.features().await?;
        conn.send(bind.as_bytes()).await?;
        features
    };
    if !xml::has_child(&features, "bind") {
        return Err(Failure::new(
            "bind",
            "server did not offer resource binding",
        ));
    }
    let jid = loop {
        let element = conn.element().await?;
        if xml::attr(&element, "id") != Some(b"bind1") {
            conn.answer_ping(&element).await?;
            continue;
        }
        if xml::attr(&element, "type") != Some(b"result") {
            return Err(Failure::new("bind", xml::error_reason(&element)));
        }
        match xml::child_text(&element, "jid") {
            Some(jid) if !jid.is_empty() => break xml::unescape(jid),
            _ => return Err(Failure::new("bind", "bind result without a JID")),
        }
    };

    // RFC 6121 Appendix E: only servers that still require the legacy session get one.
    if xml::has_child(&features, "session") && !xml::has_child(&features, "optional") {
        *stage = "session";
        conn.stage = "session";
        conn.send(
            b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>\
              </iq>",
        )
        .await?;
        loop {
            let element = conn.element().await?;
            if xml::attr(&element, "id") == Some(b"sess1") {
                if xml::attr(&element, "type") != Some(b"result") {
                    return Err(Failure::new("session", xml::error_reason(&element)));
                }
                break;
            }
        }
    }

    *stage = "presence";
    conn.stage = "online";
    if config.presence {
        conn.send(b"<presence/>").await?;
    }
    Ok(Session { conn, jid })
}

/// Connects, negotiates STARTTLS if configured, and opens the stream; returns the
/// connection, unauthenticated, with the server's features (for in-band registration).
pub async fn open(config: &ClientConfig, source: Option<IpAddr>) -> Result<(Conn, Bytes), Failure> {
    let mut conn = Conn::connect(config, source).await?;
    if let Some(connector) = &config.tls {
        conn = starttls(conn, config, connector).await?;
    }
    conn.stage = "stream";
    conn.send(stream_header(&config.domain).as_bytes()).await?;
    let features = conn.features().await?;
    Ok((conn, features))
}

/// Negotiates STARTTLS (RFC 6120 §5) and returns the connection over TLS.
async fn starttls(
    mut conn: Conn,
    config: &ClientConfig,
    connector: &TlsConnector,
) -> Result<Conn, Failure> {
    conn.stage = "starttls";
    let header = stream_header(&config.domain);
    const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    if config.pipeline {
        conn.send(format!("{header}{STARTTLS}").as_bytes()).await?;
    } else {
        conn.send(header.as_bytes()).await?;
    }
    let features = conn.features().await?;
    if !xml::has_child(&features, "starttls") {
        return Err(Failure::new("starttls", "server did not offer STARTTLS"));
    }
    if !config.pipeline {
        conn.send(STARTTLS.as_bytes()).await?;
    }
    let answer = conn.element().await?;
    if xml::local_name(xml::tag_name(&answer)) != b"proceed" {
        return Err(Failure::new("starttls", "server refused STARTTLS"));
    }
    // RFC 6120 §5.4.3.3: nothing the server sent in plaintext after <proceed/> counts.
    let Link::Xml(mut link) = conn.link else {
        return Err(Failure::new(
            "starttls",
            "STARTTLS needs an XML stream over TCP",
        ));
    };
    let Stream::Plain(tcp) = link.stream else {
        return Err(Failure::new("starttls", "already encrypted"));
    };
    let name = server_name(&config.domain).map_err(|e| Failure::new("tls", e.to_string()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::new("tls", e.to_string()))?;
    link.stream = Stream::Tls(Box::new(tls));
    link.buf.clear();
    link.scanner.reset();
    conn.link = Link::Xml(link);
    Ok(conn)
}

/// Opens the (restarted) stream and runs SASL (RFC 6120 §6); on success the scanner has been
/// reset for the stream restart that follows.
async fn authenticate(
    conn: &mut Conn,
    config: &ClientConfig,
    user: &str,
    password: &str,
) -> Result<(), Failure> {
    let header = stream_header(&config.domain);
    let mechanism = config.mechanism;
    let mut scram = match mechanism {
        Mechanism::Plain => None,
        _ => Some(Scram::new(mechanism, user, password).map_err(|e| sasl_error(&e))?),
    };
    let initial = match &scram {
        Some(scram) => scram.client_first(),
        None => plain_initial(user, password),
    };
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
        mechanism.name(),
        B64.encode(initial)
    );
    let features = if config.pipeline {
        conn.send(format!("{header}{auth}").as_bytes()).await?;
        conn.features().await?
    } else {
        conn.send(header.as_bytes()).await?;
        conn.features().await?
    };
    let offered = mechanism_offered(&features, mechanism.name());
    if !config.pipeline {
        if !offered {
            return Err(not_offered(&features, mechanism));
        }
        conn.send(auth.as_bytes()).await?;
    }
    loop {
        let element = conn.element().await?;
        // "=" (an empty payload) and no text both decode to nothing.
        let payload = B64
            .decode(element_text(&element).trim_ascii())
            .unwrap_or_default();
        match xml::local_name(xml::tag_name(&element)) {
            b"challenge" => {
                let Some(scram) = scram.as_mut() else {
                    return Err(Failure::new("sasl", "unexpected challenge for PLAIN"));
                };
                let response = scram
                    .client_final(&payload)
                    .await
                    .map_err(|e| sasl_error(&e))?;
                conn.send(
                    format!(
                        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                        B64.encode(response)
                    )
                    .as_bytes(),
                )
                .await?;
            }
            b"success" => {
                if let Some(scram) = &scram {
                    scram
                        .verify_server_final(&payload)
                        .map_err(|e| sasl_error(&e))?;
                }
                // RFC 6120 §6.4.6: a new stream starts right after <success/>; bytes already
                // buffered belong to it.
                conn.link.restart();
                return Ok(());
            }
            b"failure" => {
                let mut failure = Failure::new("sasl", xml::error_reason(&element));
                if !offered {
                    failure
                        .reason
                        .push_str(&format!("; {} not offered", mechanism.name()));
                }
                return Err(failure);
            }
            _ => {
                // Stanzas cannot arrive before authentication; tolerate anything else.
            }
        }
    }
}

/// The character data directly inside a one-level element such as `<success>…</success>`.
fn element_text(element: &[u8]) -> &[u8] {
    let Some(gt) = xml::find(element, b">") else {
        return &[];
    };
    if element[gt - 1] == b'/' {
        return &[];
    }
    let rest = &element[gt + 1..];
    let end = rest.iter().rposition(|b| *b == b'<').unwrap_or(rest.len());
    &rest[..end]
}

fn mechanism_offered(features: &[u8], name: &str) -> bool {
    xml::find(features, format!(">{name}</").as_bytes()).is_some()
}

fn not_offered(features: &[u8], mechanism: Mechanism) -> Failure {
    Failure::new(
        "sasl",
        format!(
            "{} not offered ({})",
            mechanism.name(),
            if xml::has_child(features, "mechanisms") {
                "try --mech"
            } else {
                "no SASL mechanisms offered; TLS required?"
            }
        ),
    )
}

fn sasl_error(error: &anyhow::Error) -> Failure {
    Failure::new("sasl", error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn pings_get_results_and_other_requests_errors() {
        let ping = b"<iq from='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>";
        assert_eq!(
            ping_reply(ping).as_deref(),
            Some("<iq type='result' id='p1' to='localhost'/>")
        );
        let other = b"<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>";
        assert!(
            ping_reply(other)
                .expect("answered")
                .contains("service-unavailable")
        );
        assert_eq!(ping_reply(b"<iq type='result' id='x'/>"), None);
        assert_eq!(ping_reply(b"<message/>"), None);
    }

    /// A scripted server: answers each stream header with features, `<auth/>` with
    /// success and the bind request with a JID, reacting only to what it has received, so a
    /// client that sends ahead and one that waits both work.
    async fn fake_server(listener: tokio::net::TcpListener) -> String {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut seen = String::new();
        let (mut headers, mut authed, mut bound) = (0, false, false);
        let mut buf = [0u8; 4096];
        while !bound {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "client closed early; got {seen}");
            seen.push_str(std::str::from_utf8(&buf[..n]).expect("utf8"));
            let mut out = String::new();
            while seen.matches("<stream:stream").count() > headers {
                headers += 1;
                out.push_str("<stream:stream xmlns='jabber:client' id='s' from='localhost'");
                out.push_str(" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
                out.push_str(if authed {
                    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                     <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/>\
                     </session></stream:features>"
                } else {
                    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                     <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
                });
            }
            if !authed && seen.contains("</auth>") {
                authed = true;
                out.push_str("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
            }
            if authed && seen.contains("</bind></iq>") && headers == 2 {
                bound = true;
                out.push_str(
                    "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:\
                     xmpp-bind'><jid>u1@localhost/bench</jid></bind></iq>",
                );
            }
            socket.write_all(out.as_bytes()).await.expect("write");
        }
        seen
    }

    #[tokio::test]
    async fn logs_in_with_and_without_pipelining() {
        for pipeline in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let config = ClientConfig {
                server: listener.local_addr().expect("addr"),
                dial: Dial::Tcp,
                domain: "localhost".to_owned(),
                tls: None,
                mechanism: Mechanism::Plain,
                resource: "bench".to_owned(),
                presence: false,
                pipeline,
                timeout: Duration::from_secs(5),
            };
            let server = tokio::spawn(fake_server(listener));
            let session = login(&config, "u1", "pw", None).await.expect("login");
            assert_eq!(session.jid, "u1@localhost/bench");
            let seen = server.await.expect("server");
            // PLAIN carries "\0u1\0pw"; the legacy session is optional, so none is sent.
            assert!(seen.contains(&B64.encode(b"\0u1\0pw")), "{seen}");
            assert!(!seen.contains("xmpp-session"), "{seen}");
        }
    }

    #[test]
    fn success_payloads() {
        assert_eq!(element_text(b"<success xmlns='s'>dj1h</success>"), b"dj1h");
        assert_eq!(element_text(b"<success xmlns='s'/>"), b"");
        assert!(mechanism_offered(
            b"<features><mechanisms><mechanism>SCRAM-SHA-1</mechanism></mechanisms></features>",
            "SCRAM-SHA-1"
        ));
        assert!(!mechanism_offered(
            b"<mechanisms><mechanism>SCRAM-SHA-1-PLUS</mechanism></mechanisms>",
            "SCRAM-SHA-1"
        ));
    }
}
