//! Negotiation transcripts: bytes in, bytes out, no sockets. Each test feeds what a client
//! would send and checks what the session queued for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use bytes::BytesMut;
use confab_auth::LoginThrottle;
use confab_c2s::{Action, C2sConfig, Resumption, Session};
use confab_codec::Limits;
use confab_core::BareJid;
use confab_core::metrics::Metrics;
use confab_core::store::{AccountStore, Store};
use confab_modules::{ModuleOptions, default_modules};
use confab_router::Router;
use confab_sessions::SessionManager;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

async fn session(peer: &str, tls_available: bool) -> Session {
    let store = confab_store::SqliteStore::open_in_memory().await.unwrap();
    store
        .create_account("alice", &confab_auth::derive_credentials("secret", 4096))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let options = ModuleOptions {
        registration_open: false,
        scram_iterations: 4096,
    };
    let router = Arc::new(Router::new(
        BareJid::new("localhost").unwrap(),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        default_modules(&options),
    ));
    let config = Arc::new(C2sConfig {
        domain: BareJid::new("localhost").unwrap(),
        limits: Limits::default(),
        tls_available,
        plain_on_loopback: true,
        mailbox_capacity: 16,
        registration_open: false,
        pre_auth_iq: None,
        throttle: Arc::new(LoginThrottle::default()),
        resumption: Arc::new(Resumption::new(Duration::from_secs(300))),
    });
    Session::new(
        router,
        config,
        peer.parse::<SocketAddr>().unwrap(),
        confab_codec::Framing::XmlStream,
        false,
    )
}

async fn send(session: &mut Session, xml: &str) -> (Action, String) {
    let mut input = BytesMut::from(xml.as_bytes());
    let action = session.receive(&mut input).await;
    let output = session.output().split();
    (action, String::from_utf8(output.to_vec()).unwrap())
}

fn plain(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
}

#[tokio::test]
async fn loopback_offers_plain_and_binds_after_success() {
    let mut s = session("127.0.0.1:4000", true).await;
    let (action, out) = send(&mut s, HEADER).await;
    assert_eq!(action, Action::Continue);
    assert!(out.contains("<starttls"), "{out}");
    assert!(
        !out.contains("<required"),
        "TLS is optional on loopback: {out}"
    );
    assert!(out.contains("<mechanism>PLAIN</mechanism>"), "{out}");
    let (_, out) = send(&mut s, &plain("alice", "secret")).await;
    assert!(out.contains("<success"), "{out}");
    let (_, out) = send(&mut s, HEADER).await;
    assert!(out.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{out}");
    let (_, out) = send(
        &mut s,
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
    )
    .await;
    assert!(out.contains("<jid>alice@localhost/phone</jid>"), "{out}");
    assert!(s.resource().is_some());
}

#[tokio::test]
async fn remote_peer_must_negotiate_tls_first() {
    let mut s = session("192.0.2.7:4000", true).await;
    let (_, out) = send(&mut s, HEADER).await;
    assert!(out.contains("<required"), "{out}");
    assert!(
        !out.contains("<mechanisms"),
        "no SASL before mandatory TLS: {out}"
    );
    let (action, out) = send(
        &mut s,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )
    .await;
    assert_eq!(action, Action::StartTls);
    assert!(out.contains("<proceed"), "{out}");
    s.tls_established();
    let (_, out) = send(&mut s, HEADER).await;
    assert!(
        out.contains("<mechanism>PLAIN</mechanism>"),
        "PLAIN after TLS: {out}"
    );
    assert!(!out.contains("starttls"), "{out}");
}

#[tokio::test]
async fn wrong_domain_gets_host_unknown_after_our_header() {
    let mut s = session("127.0.0.1:4000", false).await;
    let (action, out) = send(
        &mut s,
        &HEADER.replace("to='localhost'", "to='example.org'"),
    )
    .await;
    assert_eq!(action, Action::Close);
    let header = out.find("<stream:stream").expect("our header comes first");
    let error = out.find("host-unknown").expect("host-unknown");
    assert!(header < error, "{out}");
    assert!(out.ends_with("</stream:stream>"), "{out}");
}

#[tokio::test]
async fn wrong_password_fails_and_third_failure_closes() {
    let mut s = session("127.0.0.1:4000", false).await;
    send(&mut s, HEADER).await;
    for attempt in 1..=3 {
        let (action, out) = send(&mut s, &plain("alice", "wrong")).await;
        assert!(out.contains("<not-authorized"), "{out}");
        if attempt < 3 {
            assert_eq!(action, Action::Continue);
        } else {
            assert_eq!(action, Action::Close);
            assert!(out.contains("policy-violation"), "{out}");
        }
    }
}

#[tokio::test]
async fn stanza_before_authentication_is_refused() {
    let mut s = session("127.0.0.1:4000", false).await;
    send(&mut s, HEADER).await;
    let (action, out) = send(
        &mut s,
        "<message to='alice@localhost'><body>x</body></message>",
    )
    .await;
    assert_eq!(action, Action::Close);
    assert!(out.contains("<not-authorized"), "{out}");
}

#[tokio::test]
async fn spoofed_from_closes_with_invalid_from() {
    let mut s = session("127.0.0.1:4000", false).await;
    send(&mut s, HEADER).await;
    send(&mut s, &plain("alice", "secret")).await;
    send(&mut s, HEADER).await;
    send(
        &mut s,
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    )
    .await;
    let (action, out) = send(
        &mut s,
        "<message from='bob@localhost' to='alice@localhost'/>",
    )
    .await;
    assert_eq!(action, Action::Close);
    assert!(out.contains("invalid-from"), "{out}");
}

#[tokio::test]
async fn generated_resource_when_none_requested_and_bad_iq_rejected() {
    let mut s = session("127.0.0.1:4000", false).await;
    send(&mut s, HEADER).await;
    send(&mut s, &plain("alice", "secret")).await;
    send(&mut s, HEADER).await;
    let (_, out) = send(
        &mut s,
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    )
    .await;
    assert!(out.contains("<jid>alice@localhost/"), "{out}");
    let (action, out) = send(&mut s, "<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(action, Action::Continue);
    assert!(out.contains("bad-request"), "IQ without id: {out}");
    let (action, out) = send(&mut s, "<message to='a@b@c'><body>x</body></message>").await;
    assert_eq!(
        action,
        Action::Continue,
        "a malformed address keeps the stream"
    );
    assert!(out.contains("jid-malformed"), "{out}");
}
