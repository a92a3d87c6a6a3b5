//! The client against a scripted server on a loopback socket: exact frames for the XEP-0198
//! paths a real server rarely takes (its acknowledgement requests, a resumption where the
//! server had not handled the client's last stanza). The real-server tests are in
//! crates/server/tests/e2e/pb_client.rs.

use std::time::Duration;

use bytes::BytesMut;
use confab_pb_client::confab_proto::ProstMessage as _;
use confab_pb_client::confab_proto::v1::frame::Kind;
use confab_pb_client::confab_proto::v1::{
    self, Features, Frame, IqType, SaslData, SmEnabled, SmResume, StreamOpen,
};
use confab_pb_client::connection::decode_frame;
use confab_pb_client::{Client, Endpoint, Event, LoginOptions, Mechanism};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(10);

/// The server side of one connection.
struct Peer {
    stream: TcpStream,
    input: BytesMut,
}

impl Peer {
    async fn send(&mut self, kind: Kind) {
        let bytes = Frame { kind: Some(kind) }.encode_length_delimited_to_vec();
        self.stream.write_all(&bytes).await.expect("write");
    }

    async fn recv(&mut self) -> Kind {
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(frame) = decode_frame(&mut self.input, 1 << 16).expect("valid frame") {
                    return frame.kind.expect("frame has a kind");
                }
                let n = self.stream.read_buf(&mut self.input).await.expect("read");
                assert!(n > 0, "the client closed the connection");
            }
        })
        .await
        .expect("a frame from the client within the step")
    }

    /// Opens, PLAIN, restart: the server half of authentication.
    async fn authenticate(stream: TcpStream) -> Peer {
        let mut peer = Peer {
            stream,
            input: BytesMut::new(),
        };
        peer.open(Features {
            mechanisms: vec!["PLAIN".into()],
            has_mechanisms: true,
            ..Features::default()
        })
        .await;
        let Kind::SaslAuth(auth) = peer.recv().await else {
            panic!("sasl_auth expected");
        };
        assert_eq!(auth.mechanism, "PLAIN");
        assert_eq!(auth.data.as_deref(), Some(&b"\0alice\0pw"[..]));
        peer.send(Kind::SaslSuccess(SaslData { data: None })).await;
        peer.open(Features {
            bind: true,
            sm: true,
            ..Features::default()
        })
        .await;
        peer
    }

    async fn open(&mut self, features: Features) {
        let Kind::Open(open) = self.recv().await else {
            panic!("open expected");
        };
        assert_eq!(open.to.as_deref(), Some("example.org"));
        self.send(Kind::Opened(StreamOpen {
            from: Some("example.org".into()),
            id: Some("s".into()),
            version: Some("1.0".into()),
            ..StreamOpen::default()
        }))
        .await;
        self.send(Kind::Features(features)).await;
    }
}

fn incoming(body: &str) -> Kind {
    Kind::Message(v1::Message {
        from: Some("bob@example.org/x".into()),
        to: Some("alice@example.org/r".into()),
        body: Some(body.into()),
        ..v1::Message::default()
    })
}

#[tokio::test]
async fn acks_are_answered_and_unhandled_stanzas_are_resent_on_resume() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = Endpoint::Tcp(listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        // First connection: bind, enable, one stanza each way, then the socket is lost.
        let (stream, _) = listener.accept().await.expect("accept");
        let mut peer = Peer::authenticate(stream).await;
        let Kind::Iq(bind) = peer.recv().await else {
            panic!("bind expected");
        };
        peer.send(Kind::Iq(v1::Iq {
            id: bind.id.clone(),
            r#type: IqType::Result as i32,
            payload: Some(v1::iq::Payload::Bind(v1::Bind {
                resource: None,
                jid: Some("alice@example.org/r".into()),
            })),
            ..v1::Iq::default()
        }))
        .await;
        let Kind::SmEnable(enable) = peer.recv().await else {
            panic!("sm_enable expected");
        };
        assert!(enable.resume);
        peer.send(Kind::SmEnabled(SmEnabled {
            id: Some("prev".into()),
            resume: true,
            ..SmEnabled::default()
        }))
        .await;
        let Kind::Message(sent) = peer.recv().await else {
            panic!("the client's message expected");
        };
        assert_eq!(sent.body.as_deref(), Some("one"));
        peer.send(Kind::SmRequest(v1::SmRequest {})).await;
        assert_eq!(peer.recv().await, Kind::SmAck(v1::SmAck { h: 0 }));
        peer.send(incoming("hello")).await;
        peer.send(Kind::SmRequest(v1::SmRequest {})).await;
        assert_eq!(peer.recv().await, Kind::SmAck(v1::SmAck { h: 1 }));
        drop(peer);

        // Second connection: the server had not handled "one" (h = 0), so it comes again.
        let (stream, _) = listener.accept().await.expect("accept");
        let mut peer = Peer::authenticate(stream).await;
        assert_eq!(
            peer.recv().await,
            Kind::SmResume(SmResume {
                h: 1,
                previd: "prev".into()
            })
        );
        peer.send(Kind::SmResumed(SmResume {
            h: 0,
            previd: "prev".into(),
        }))
        .await;
        let Kind::Message(again) = peer.recv().await else {
            panic!("the unhandled message is sent again");
        };
        assert_eq!(again, sent, "the same stanza, same id");
        assert!(matches!(peer.recv().await, Kind::SmRequest(_)));
        peer.send(Kind::SmAck(v1::SmAck { h: 1 })).await;
        peer.send(incoming("after")).await;
        assert!(matches!(peer.recv().await, Kind::Close(_)));
        peer.send(Kind::Close(v1::Close {})).await;
    });

    let mut options = LoginOptions::new("alice@example.org", "pw").expect("jid");
    options.mechanism = Mechanism::Plain;
    options.sm = true;
    options.timeout = STEP;
    let mut alice = Client::login(&endpoint, options).await.expect("login");
    assert_eq!(alice.jid(), "alice@example.org/r");
    alice
        .send_message("bob@example.org", "one")
        .await
        .expect("send");
    let Event::Message(hello) = alice.next_event().await.expect("event") else {
        panic!("a message event");
    };
    assert_eq!(hello.body(), Some("hello"));
    let token = alice.resume_token().expect("resumable");
    assert_eq!(token.sm.inbound, 1);
    assert_eq!(token.sm.unacked.len(), 1, "\"one\" was never acknowledged");
    // The server answers the last <r/> and drops the socket; reading runs into the end.
    assert!(alice.next_event().await.is_err(), "the connection is gone");
    drop(alice);

    let mut alice = Client::resume(&endpoint, token).await.expect("resume");
    let Event::Message(after) = alice.next_event().await.expect("event") else {
        panic!("a message event");
    };
    assert_eq!(after.body(), Some("after"));
    assert_eq!(alice.unacked(), 0, "the resent stanza was acknowledged");
    alice.close().await.expect("close");
    server.await.expect("the scripted server ran to the end");
}

#[tokio::test]
async fn a_mechanism_the_server_does_not_offer_is_an_auth_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = Endpoint::Tcp(listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut peer = Peer {
            stream,
            input: BytesMut::new(),
        };
        peer.open(Features {
            mechanisms: vec!["PLAIN".into()],
            has_mechanisms: true,
            ..Features::default()
        })
        .await;
    });
    let mut options = LoginOptions::new("alice@example.org", "pw").expect("jid");
    options.timeout = STEP;
    let error = Client::login(&endpoint, options)
        .await
        .expect_err("SCRAM-SHA-256 is not offered");
    assert!(
        matches!(&error, confab_pb_client::Error::Auth { condition, .. } if condition == "mechanism-not-offered"),
        "{error:?}"
    );
    server.await.expect("server task");
}
