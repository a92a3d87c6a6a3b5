//! The compact protobuf binding (docs/protocol/confab-protobuf.md) on its own listener: a
//! minimal client written here with `confab-proto` logs in, binds, enables stream management
//! and chats with an XML client; malformed frames end only their own stream.

use std::net::SocketAddr;

use confab_proto::v1::frame::Kind;
use confab_proto::v1::{
    Bind, Frame, Id, Iq, IqType, Message, MessageType, SaslAuth, SmEnable, StreamOpen,
};
use confab_proto::{MinidomFragments, Unit};

use crate::harness::{DOMAIN, Server, body_of, password};
use crate::transport_clients::PbTcpConn;

async fn server() -> Server {
    Server::builder()
        .env(&[
            ("CONFAB__PB__ENABLED", "true"),
            ("CONFAB__PB__LISTEN", "127.0.0.1:0"),
        ])
        .users(crate::harness::DEFAULT_USERS)
        .start()
        .await
}

/// A protobuf client: frames in, frames out, over the shared framing of
/// [`PbTcpConn`].
struct PbClient {
    conn: PbTcpConn,
}

impl PbClient {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            conn: PbTcpConn::connect(addr).await,
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.conn.send(&frame).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.send_raw(bytes).await;
    }

    /// The next frame; `None` at end of stream.
    async fn next(&mut self) -> Option<Frame> {
        self.conn.next().await
    }

    /// The next frame that is not an XEP-0198 request (answered by nobody here).
    async fn next_kind(&mut self) -> Kind {
        loop {
            let frame = self.next().await.expect("stream still open");
            match frame.kind.expect("frame has a kind") {
                Kind::SmRequest(_) => continue,
                kind => return kind,
            }
        }
    }

    async fn open(&mut self) -> Kind {
        self.send(confab_proto::open_frame(StreamOpen {
            to: Some(DOMAIN.into()),
            version: Some("1.0".into()),
            ..StreamOpen::default()
        }))
        .await;
        let Kind::Opened(opened) = self.next_kind().await else {
            panic!("Opened expected");
        };
        assert_eq!(opened.from.as_deref(), Some(DOMAIN));
        self.next_kind().await
    }

    /// PLAIN (offered on loopback), bind, enable stream management; returns the full JID.
    async fn login(&mut self, user: &str, resource: &str) -> String {
        let Kind::Features(features) = self.open().await else {
            panic!("features expected");
        };
        assert!(
            features.mechanisms.iter().any(|m| m == "PLAIN"),
            "{features:?}"
        );
        let mut data = vec![0u8];
        data.extend_from_slice(user.as_bytes());
        data.push(0);
        data.extend_from_slice(password(user).as_bytes());
        self.send(Frame {
            kind: Some(Kind::SaslAuth(SaslAuth {
                mechanism: "PLAIN".into(),
                data: Some(data),
            })),
        })
        .await;
        assert!(matches!(self.next_kind().await, Kind::SaslSuccess(_)));
        let Kind::Features(features) = self.open().await else {
            panic!("features expected after SASL");
        };
        assert!(features.bind && features.sm, "{features:?}");
        self.send(Frame {
            kind: Some(Kind::Iq(Iq {
                id: Some(text_id("bind")),
                r#type: IqType::Set as i32,
                payload: Some(confab_proto::v1::iq::Payload::Bind(Bind {
                    resource: Some(resource.into()),
                    jid: None,
                })),
                ..Iq::default()
            })),
        })
        .await;
        let Kind::Iq(result) = self.next_kind().await else {
            panic!("bind result expected");
        };
        let Some(confab_proto::v1::iq::Payload::Bind(Bind { jid: Some(jid), .. })) = result.payload
        else {
            panic!("typed bind result expected: {result:?}");
        };
        self.send(Frame {
            kind: Some(Kind::SmEnable(SmEnable {
                resume: true,
                max: None,
            })),
        })
        .await;
        let Kind::SmEnabled(enabled) = self.next_kind().await else {
            panic!("sm enabled expected");
        };
        assert!(enabled.resume);
        jid
    }

    /// Sends a chat message with a receipt request and returns the Confab ack.
    async fn chat(&mut self, to: &str, id: &str, body: &str) -> confab_proto::v1::ConfabAck {
        self.send(Frame {
            kind: Some(Kind::Message(Message {
                to: Some(to.into()),
                id: Some(confab_proto::convert::id_of(id)),
                r#type: MessageType::Chat as i32,
                body: Some(body.into()),
                receipt_request: true,
                ..Message::default()
            })),
        })
        .await;
        loop {
            if let Kind::Message(message) = self.next_kind().await
                && let Some(ack) = message.ack
            {
                assert!(
                    message.id_is_ack,
                    "the receipt's id is derived from its ack"
                );
                return ack;
            }
        }
    }
}

fn text_id(text: &str) -> Id {
    Id {
        text: Some(text.into()),
        uuid: Vec::new(),
    }
}

#[tokio::test]
async fn a_protobuf_client_chats_with_an_xml_client() {
    let server = server().await;
    let pb_addr = server.pb.expect("pb listener");
    let mut bob = server.login_available("bob", "xml", 5).await;
    let mut alice = PbClient::connect(pb_addr).await;
    let jid = alice.login("alice", "pb").await;
    assert_eq!(jid, format!("alice@{DOMAIN}/pb"));

    let ack = alice
        .chat(
            &format!("bob@{DOMAIN}"),
            "9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69",
            "hi bob",
        )
        .await;
    assert_eq!(ack.seq, 1);
    assert_eq!(ack.with, format!("bob@{DOMAIN}"));
    assert_eq!(ack.server_id.len(), 16, "the server id travels as 16 bytes");
    assert_eq!(
        ack.client_id
            .and_then(|id| confab_proto::convert::id_text(&id).ok())
            .as_deref(),
        Some("9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69")
    );

    // The XML client sees an ordinary stanza, with the receipt request and a stanza id.
    let delivered = bob.expect_message_with_body("hi bob").await;
    assert_eq!(delivered.attr("from"), Some(jid.as_str()));
    assert!(delivered.has_child("request", "urn:xmpp:receipts"));
    assert!(delivered.has_child("stanza-id", "urn:xmpp:sid:0"));

    // The reply arrives typed: body, receipt, stanza id.
    bob.send(format!(
        "<message to='{jid}' type='chat' id='r1'><body>hi alice</body><received xmlns='urn:xmpp:receipts' id='9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69'/></message>"
    ))
    .await;
    let reply = loop {
        if let Kind::Message(message) = alice.next_kind().await
            && message.body.is_some()
        {
            break message;
        }
    };
    assert_eq!(reply.body.as_deref(), Some("hi alice"));
    assert_eq!(
        reply.from.as_deref(),
        Some(format!("bob@{DOMAIN}/xml").as_str())
    );
    assert_eq!(
        reply.receipt_received.as_deref(),
        Some("9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69")
    );
    assert_eq!(reply.stanza_ids.len(), 1);
    assert!(reply.xml.is_empty(), "nothing fell back to XML: {reply:?}");
    // And it converts back to the element the XML client would have seen.
    let frame = Frame {
        kind: Some(Kind::Message(reply)),
    };
    let Ok(Unit::Element(element)) = confab_proto::frame_to_unit(&frame, &mut MinidomFragments)
    else {
        panic!("the reply converts to XML");
    };
    assert_eq!(body_of(&element).as_deref(), Some("hi alice"));
}

#[tokio::test]
async fn malformed_frames_end_only_their_own_stream() {
    let server = server().await;
    let pb_addr = server.pb.expect("pb listener");
    let mut bob = server.login_available("bob", "xml", 5).await;
    let mut alice = PbClient::connect(pb_addr).await;
    alice.login("alice", "pb").await;

    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("invalid protobuf", vec![3, 0xff, 0xff, 0xff], "bad-format"),
        ("bad varint", vec![0xff; 11], "bad-format"),
        (
            "oversized length",
            {
                let mut v = Vec::new();
                confab_proto::prost::encode_length_delimiter(1 << 30, &mut v)
                    .expect("encode length");
                v
            },
            "policy-violation",
        ),
    ];
    for (what, bytes, condition) in cases {
        let mut carol = PbClient::connect(pb_addr).await;
        let Kind::Features(_) = carol.open().await else {
            panic!("features expected");
        };
        carol.send_raw(&bytes).await;
        let Kind::StreamError(error) = carol.next_kind().await else {
            panic!("{what}: stream error expected");
        };
        assert_eq!(error.condition, condition, "{what}");
        assert!(matches!(carol.next_kind().await, Kind::Close(_)), "{what}");
        assert!(carol.next().await.is_none(), "{what}: connection closed");
    }

    // The established session is unaffected.
    let ack = alice
        .chat(&format!("bob@{DOMAIN}"), "m2", "still here")
        .await;
    assert_eq!(ack.seq, 1);
    bob.expect_message_with_body("still here").await;
}
