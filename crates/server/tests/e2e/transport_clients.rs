//! Wire-level test clients for the transports that are not XML over TCP: a WebSocket
//! connection (text or binary messages, RFC 6455) and a protobuf connection over TCP (varint
//! length-delimited `confab.xmpp.v1.Frame`s, docs/protocol/confab-protobuf.md).
//!
//! They only move messages and frames; what the messages mean (stream opening, SASL, stanzas)
//! is up to the caller, so the scenario suite in `transports.rs` and the transport-specific
//! tests share one framing implementation each.

use std::net::SocketAddr;

use confab_proto::ProstMessage as _;
use confab_proto::v1::Frame;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::harness::STEP;

/// What arrived on a WebSocket.
#[derive(Debug)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A Close frame, or the end of the connection.
    Closed,
}

/// A WebSocket to the server's HTTP listener with one subprotocol.
pub struct WsConn {
    /// The socket, for tests that need WebSocket-level control (pings, raw messages).
    pub ws: WebSocketStream<TcpStream>,
}

impl WsConn {
    /// Opens `ws://http/path` offering `protocol` and checks the server confirmed it.
    pub async fn connect(http: SocketAddr, path: &str, protocol: &str) -> WsConn {
        let (ws, response) = ws_handshake(http, path, Some(protocol), None)
            .await
            .expect("WebSocket handshake");
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.as_bytes()),
            Some(protocol.as_bytes()),
            "RFC 6455 §4.2.2: the server confirms the subprotocol"
        );
        WsConn { ws }
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a text message");
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws
            .send(Message::binary(data))
            .await
            .expect("send a binary message");
    }

    /// The next data message (pings and pongs are skipped); panics after [`STEP`].
    pub async fn next(&mut self) -> WsMessage {
        next_ws_message(&mut self.ws).await
    }
}

/// The WebSocket handshake to `ws://http/path` with optional `Sec-WebSocket-Protocol` and
/// `Origin`; the server's refusal is the error (tests of the refusal read it).
pub async fn ws_handshake(
    http: SocketAddr,
    path: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<(WebSocketStream<TcpStream>, Response), WsError> {
    let mut request = format!("ws://{http}{path}")
        .into_client_request()
        .expect("request");
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).expect("header"),
        );
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).expect("header"));
    }
    let stream = TcpStream::connect(http).await.expect("connect");
    // Room to receive anything the server may send (and for the oversized-message tests to
    // get their answer); the server's limits are what is under test.
    let config = WebSocketConfig::default().max_message_size(Some(1 << 20));
    tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await
    .expect("WebSocket handshake timed out")
}

/// The next data message on `ws` (pings and pongs are skipped); panics after [`STEP`].
pub async fn next_ws_message(ws: &mut WebSocketStream<TcpStream>) -> WsMessage {
    loop {
        let message = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("nothing arrived on the WebSocket in time");
        match message {
            Some(Ok(Message::Text(text))) => return WsMessage::Text(text.as_str().to_owned()),
            Some(Ok(Message::Binary(data))) => return WsMessage::Binary(data.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => return WsMessage::Closed,
            Some(Err(error)) => panic!("WebSocket error: {error}"),
        }
    }
}

/// A protobuf connection over TCP: varint length-delimited frames both ways.
pub struct PbTcpConn {
    stream: TcpStream,
    /// Bytes read but not yet returned as a frame.
    input: Vec<u8>,
}

impl PbTcpConn {
    /// Connects to the `[pb]` listener.
    pub async fn connect(addr: SocketAddr) -> PbTcpConn {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect to pb timed out")
            .expect("connect to pb");
        let _ = stream.set_nodelay(true);
        PbTcpConn {
            stream,
            input: Vec::new(),
        }
    }

    /// Sends one frame with its length prefix.
    pub async fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.encode_length_delimited_to_vec()).await;
    }

    /// Sends bytes as they are (for malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to pb");
    }

    /// Closes our sending half (TCP FIN): the server reads the end of the stream while it can
    /// still answer.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .expect("shut down the write half");
    }

    /// The next frame; `None` when the server closed the connection. Panics after [`STEP`].
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(STEP, async {
            loop {
                let mut view = self.input.as_slice();
                if let Ok(length) = confab_proto::prost::decode_length_delimiter(&mut view) {
                    let prefix = self.input.len() - view.len();
                    if view.len() >= length {
                        let frame = Frame::decode(&view[..length]).expect("server frame decodes");
                        self.input.drain(..prefix + length);
                        return Some(frame);
                    }
                }
                let mut buf = [0u8; 4096];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.input.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("nothing arrived on the pb connection in time")
    }
}
