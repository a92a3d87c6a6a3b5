//! XMPP over WebSocket (RFC 7395) at `GET /xmpp-websocket`, the same sessions over binary
//! messages at `GET /pb-websocket` (the protobuf binding), and XEP-0156 discovery at
//! `/.well-known/host-meta` and `/.well-known/host-meta.json`.
//!
//! The handshake is HTTP, so its refusals are this crate's JSON errors: no `xmpp`
//! subprotocol offered (RFC 7395 §3.1), an `Origin` not allowed, the connection cap
//! reached. After the upgrade, [`WebSocketTransport`] carries the session: each received
//! message becomes one varint length-delimited frame in the session's read buffer and each
//! frame the session writes becomes one message (`confab_codec::wire`), so negotiation,
//! routing, limits and shutdown are the TCP listener's, in `confab_net`.
//!
//! **Memory.** tungstenite's defaults (128 KiB read and write buffers, 64 MiB messages)
//! would make an idle WebSocket cost far more than an idle TCP session; here the read buffer
//! is 1 KiB, nothing waits in the write buffer, and messages are capped at the stanza limit.
//! tungstenite keeps the capacity its buffers once grew to, so a session that carried a large
//! stanza keeps about that much until it ends (unlike the TCP driver, which releases its
//! buffers when idle).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::uri::Authority;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use confab_codec::Framing;
use confab_codec::wire::{frames, put_frame, put_varint};
use confab_net::MessageTransport;
use futures::SinkExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::{HttpState, error_response};

/// The WebSocket subprotocol RFC 7395 §3.1 registers.
pub const SUBPROTOCOL: &str = "xmpp";
/// The subprotocol of the protobuf endpoint: its package name, versioned with it. Not
/// `xmpp`, which RFC 7395 registered for XML text messages.
pub const PROTOBUF_SUBPROTOCOL: &str = "confab.xmpp.v1";
/// The path of the RFC 7395 endpoint.
pub const XMPP_PATH: &str = "/xmpp-websocket";
/// The path of the protobuf endpoint (binary messages).
pub const PROTOBUF_PATH: &str = "/pb-websocket";
/// XEP-0156 §3: the link relation of a WebSocket endpoint.
pub const WEBSOCKET_REL: &str = "urn:xmpp:alt-connections:websocket";

/// Bytes tungstenite reads per syscall. Smaller than the TCP driver's 4 KiB read chunk,
/// because tungstenite allocates its read buffer up front and keeps it for the life of the
/// connection, idle or not. 1 KiB holds a typical stanza in one read; an idle bound session
/// then costs 7.0 KiB against 3.9 KiB over TCP (release build, 8,000 sessions,
/// tests/websocket/idle_rss.py), where 4 KiB cost about 3 KiB more and 256 bytes saved only
/// 0.4 KiB. A larger message is read in 1 KiB steps into a buffer grown to its length.
const READ_BUFFER: usize = 1024;
/// How long `close` waits for the client's closing handshake (RFC 6455 §5.5.1) before it
/// drops the connection anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Runs one session over an upgraded WebSocket to completion. The binary wires it to
/// `confab_net::serve_messages` with the limits of the `[c2s]` listener for `framing`, so
/// this crate knows no router.
pub type SessionRunner = Arc<
    dyn Fn(
            Box<dyn MessageTransport>,
            SocketAddr,
            Framing,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// What the WebSocket endpoints need; absent when WebSockets are not served.
#[derive(Clone)]
pub struct WebSocketState {
    /// Runs a session once the connection is upgraded.
    pub run: SessionRunner,
    /// Origins a browser may connect from (`scheme://host[:port]`); see [`origin_allowed`].
    pub origins: Arc<[String]>,
    /// One permit per live WebSocket session: the cap `[c2s] max_connections` sets for TCP.
    pub permits: Arc<Semaphore>,
    /// Every live session, so shutdown can wait until each has sent `system-shutdown`.
    pub sessions: TaskTracker,
    /// The largest message accepted: the stanza limit (`[c2s] max_stanza_bytes`).
    pub max_message_bytes: usize,
    /// The server's public base URL (`https://chat.example.com`) for XEP-0156; `None`
    /// takes the request's `Host` header.
    pub public_url: Option<String>,
}

impl WebSocketState {
    /// State with a cap of `max_sessions` and no origin restriction beyond the default.
    pub fn new(run: SessionRunner, max_sessions: usize, max_message_bytes: usize) -> Self {
        Self {
            run,
            origins: Arc::new([]),
            permits: Arc::new(Semaphore::new(max_sessions)),
            sessions: TaskTracker::new(),
            max_message_bytes,
            public_url: None,
        }
    }
}

impl std::fmt::Debug for WebSocketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketState")
            .field("origins", &self.origins)
            .field("available", &self.permits.available_permits())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// `GET /xmpp-websocket`: RFC 7395.
pub(crate) async fn xmpp(
    State(state): State<HttpState>,
    extensions: Extensions,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    accept(state, &extensions, &headers, upgrade, Framing::XmlWebSocket)
}

/// `GET /pb-websocket`: the protobuf binding, one `Frame` per binary message.
pub(crate) async fn protobuf(
    State(state): State<HttpState>,
    extensions: Extensions,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    accept(state, &extensions, &headers, upgrade, Framing::Protobuf)
}

/// Checks the handshake and upgrades; the session runs in the upgraded connection's task.
fn accept(
    state: HttpState,
    extensions: &Extensions,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    framing: Framing,
) -> Response {
    let Some(ws) = state.websocket.clone() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "WebSockets are not served here".into(),
        );
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return error_response(
                rejection.status(),
                "websocket_upgrade_required",
                rejection.body_text(),
            );
        }
    };
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin_allowed(&ws.origins, origin, headers.get(header::HOST))
    {
        return error_response(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "origin {} may not open XMPP WebSockets here (see [http] websocket_origins)",
                origin.to_str().unwrap_or("(not text)")
            ),
        );
    }
    // §3.1: the client must offer the subprotocol; without it, it would not know the
    // server speaks XMPP and we could not know the client does.
    let binary = framing != Framing::XmlWebSocket;
    let subprotocol = if binary {
        PROTOBUF_SUBPROTOCOL
    } else {
        SUBPROTOCOL
    };
    let upgrade = upgrade.protocols([subprotocol]);
    if upgrade.selected_protocol().is_none() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "subprotocol_required",
            format!("offer the '{subprotocol}' WebSocket subprotocol"),
        );
    }
    let Ok(permit) = ws.permits.clone().try_acquire_owned() else {
        state.metrics.connections_refused.inc();
        tracing::warn!("WebSocket session cap reached; refusing");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server has as many sessions as it takes".into(),
        );
    };
    // Without `ConnectInfo` (a router served without it, as in unit tests) the peer is
    // unknown; the unspecified address is not loopback, so it gets no loopback leniency.
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
    // Counted from here, not from the upgrade: shutdown also waits for a handshake that
    // completes after it started.
    let tracked = ws.sessions.token();
    let max = ws.max_message_bytes;
    // Only what the session needs moves into its task, which lives as long as it does.
    let run = ws.run;
    upgrade
        .read_buffer_size(READ_BUFFER)
        // Each batch of frames is flushed whole (`write_frames`); nothing waits to fill a
        // buffer first.
        .write_buffer_size(0)
        // Only reached when writes fail; room for a few stanzas.
        .max_write_buffer_size(max.saturating_mul(4).max(READ_BUFFER))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let transport = WebSocketTransport::new(socket, binary, max);
            run(Box::new(transport), peer, framing).await;
            drop(permit);
            drop(tracked);
        })
}

/// Whether a browser page from `origin` may open a session.
///
/// - `["*"]`: any origin.
/// - A non-empty list: exactly those origins (ASCII case-insensitive, a trailing `/`
///   ignored).
/// - An empty list (the default): the page's own server (the origin's host and port are the
///   request's `Host`) and pages served from a loopback address (`localhost`, 127.0.0.0/8,
///   `[::1]`) for local development. A page from any other site needs to be listed.
///
/// XMPP authenticates in-band (SASL), so a foreign page gains no ambient credential from
/// the visitor's browser; the check still keeps other sites from using visitors' browsers to
/// reach a server they cannot (an intranet server, open registration) or to spread password
/// guessing across many addresses. Requests without `Origin` do not come from a browser
/// (RFC 6455 §4.1 makes browsers send it) and are not restricted.
pub fn origin_allowed(
    allowed: &[String],
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if !allowed.is_empty() {
        return allowed.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        });
    }
    let Some((_, authority)) = origin.split_once("://") else {
        // `null` (sandboxed frames, file: pages) and other opaque origins.
        return false;
    };
    let Ok(authority) = Authority::from_str(authority) else {
        return false;
    };
    if host
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority.as_str()))
    {
        return true;
    }
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A WebSocket carrying one session's frames (see the module docs).
pub struct WebSocketTransport {
    socket: WebSocket,
    /// Binary messages (the protobuf endpoint) instead of text (RFC 7395 §3.2).
    binary: bool,
    /// The stanza limit; a longer message is reported to the session as an oversized frame.
    max_message_bytes: usize,
}

impl WebSocketTransport {
    /// Wraps an upgraded socket; `binary` for the protobuf endpoint.
    pub fn new(socket: WebSocket, binary: bool, max_message_bytes: usize) -> Self {
        Self {
            socket,
            binary,
            max_message_bytes,
        }
    }
}

#[async_trait::async_trait]
impl MessageTransport for WebSocketTransport {
    /// Cancel-safe: the only await that consumes input is `recv`, itself cancel-safe, and a
    /// message is appended in the same poll that returns it.
    async fn read_frame(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        loop {
            let message = match self.socket.recv().await {
                None => return Ok(0),
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    if is_capacity_error(&error) {
                        // Longer than the stanza limit: announce a frame one byte over it,
                        // so the session ends the stream with policy-violation exactly as
                        // for an oversized stanza on TCP.
                        let before = buf.len();
                        put_varint(buf, self.max_message_bytes as u64 + 1);
                        return Ok(buf.len() - before);
                    }
                    return Err(std::io::Error::other(error));
                }
            };
            let before = buf.len();
            match message {
                Message::Text(text) if !self.binary => put_frame(buf, text.as_str().as_bytes()),
                Message::Binary(data) if self.binary => put_frame(buf, &data),
                // RFC 7395 §3.2: data frames are text. The wrong kind becomes an empty
                // frame, which every framing refuses with bad-format, so the session ends
                // with a stream error instead of a dropped connection.
                Message::Text(_) | Message::Binary(_) => put_varint(buf, 0),
                Message::Ping(_) => {
                    // tungstenite queued the pong; send it now rather than with the next
                    // stanza. Losing this flush to cancellation only delays the pong.
                    let _ = self.socket.flush().await;
                    continue;
                }
                Message::Pong(_) => continue,
                Message::Close(_) => return Ok(0),
            }
            return Ok(buf.len() - before);
        }
    }

    async fn write_frames(&mut self, data: &[u8]) -> std::io::Result<()> {
        for frame in frames(data) {
            let message = if self.binary {
                Message::Binary(Bytes::copy_from_slice(frame))
            } else {
                let text = Utf8Bytes::try_from(Bytes::copy_from_slice(frame)).map_err(|_| {
                    std::io::Error::other("the codec wrote a frame that is not UTF-8")
                })?;
                Message::Text(text)
            };
            self.socket
                .feed(message)
                .await
                .map_err(std::io::Error::other)?;
        }
        self.socket.flush().await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let close = Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: Utf8Bytes::from_static(""),
        }));
        if self.socket.send(close).await.is_err() {
            return;
        }
        // RFC 6455 §5.5.1: wait (briefly) for the client's Close so the TCP connection ends
        // cleanly instead of with a reset the client may report as an error.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = self.socket.recv().await {}
        })
        .await;
    }
}

/// Whether tungstenite refused a message for exceeding `max_message_size`/`max_frame_size`.
fn is_capacity_error(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(inner) = source {
        if let Some(tungstenite) = inner.downcast_ref::<tungstenite::Error>() {
            return matches!(tungstenite, tungstenite::Error::Capacity(_));
        }
        source = inner.source();
    }
    false
}

/// XEP-0156 §3 (XRD): `GET /.well-known/host-meta`.
pub(crate) async fn host_meta(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let url = match websocket_url(&state, &headers) {
        Ok(url) => url,
        Err(response) => return *response,
    };
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
         <Link rel='{WEBSOCKET_REL}' href='{}'/>\n\
         </XRD>\n",
        xml_attr(&url)
    );
    discovery(body, "application/xrd+xml; charset=utf-8")
}

/// XEP-0156 §3 (JRD): `GET /.well-known/host-meta.json`.
pub(crate) async fn host_meta_json(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let url = match websocket_url(&state, &headers) {
        Ok(url) => url,
        Err(response) => return *response,
    };
    let body = serde_json::json!({
        "links": [{ "rel": WEBSOCKET_REL, "href": url }],
    });
    discovery(body.to_string(), "application/jrd+json")
}

/// A discovery document, readable by pages from any origin (XEP-0156 §3 recommends CORS).
fn discovery(body: String, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// The `ws://` (or `wss://`) URL of [`XMPP_PATH`] on this server: from `public_url`, else
/// from the request's `Host`.
fn websocket_url(state: &HttpState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(ws) = &state.websocket else {
        return Err(Box::new(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "WebSockets are not served here".into(),
        )));
    };
    if let Some(public) = &ws.public_url {
        let public = public.trim_end_matches('/');
        let url = match public.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                Cow::Owned(format!("wss://{rest}"))
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
                Cow::Owned(format!("ws://{rest}"))
            }
            _ => Cow::Borrowed(public),
        };
        return Ok(format!("{url}{XMPP_PATH}"));
    }
    // Parsed as an authority so nothing but a host and port reaches the document.
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| Authority::from_str(host).ok())
        .filter(|authority| !authority.as_str().contains('@'));
    match host {
        Some(host) => Ok(format!("ws://{host}{XMPP_PATH}")),
        None => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "host_required",
            "a Host header naming this server is needed (or set [http] public_url)".into(),
        ))),
    }
}

/// Escapes text for a single-quoted XML attribute.
fn xml_attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str], origin: &str, host: Option<&str>) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        let host = host.map(|h| HeaderValue::from_str(h).expect("header"));
        origin_allowed(
            &list,
            &HeaderValue::from_str(origin).expect("header"),
            host.as_ref(),
        )
    }

    #[test]
    fn by_default_only_the_same_site_and_loopback_pages_connect() {
        let host = Some("xmpp.example.com:5280");
        assert!(allowed(&[], "http://xmpp.example.com:5280", host));
        assert!(allowed(&[], "http://localhost:8080", host));
        assert!(allowed(&[], "http://127.0.0.1:3000", host));
        assert!(allowed(&[], "http://[::1]:3000", host));
        assert!(!allowed(&[], "https://evil.example", host));
        assert!(
            !allowed(&[], "http://xmpp.example.com", host),
            "port differs"
        );
        assert!(!allowed(&[], "null", host));
    }

    #[test]
    fn a_list_allows_exactly_its_origins() {
        let list = ["https://chat.example.com", "https://web.example.org/"];
        assert!(allowed(&list, "https://chat.example.com", None));
        assert!(allowed(&list, "HTTPS://Chat.Example.com/", None));
        assert!(allowed(&list, "https://web.example.org", None));
        assert!(!allowed(&list, "http://chat.example.com", None));
        assert!(
            !allowed(&list, "http://localhost", None),
            "a list replaces the default"
        );
        assert!(allowed(&["*"], "https://anything.example", None));
    }

    #[test]
    fn attribute_text_is_escaped() {
        assert_eq!(xml_attr("a'b\"<&>"), "a&apos;b&quot;&lt;&amp;&gt;");
    }
}
