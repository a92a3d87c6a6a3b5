//! XEP-0198 stream management transcripts: bytes in, bytes out, no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use bytes::BytesMut;
use confab_auth::LoginThrottle;
use confab_c2s::{Action, C2sConfig, Resumption, Session};
use confab_codec::Limits;
use confab_core::metrics::Metrics;
use confab_core::store::{AccountStore, Store};
use confab_core::{BareJid, Element, Stanza};
use confab_modules::{ModuleOptions, default_modules};
use confab_router::Router;
use confab_sessions::{SessionCommand, SessionManager};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

struct Server {
    router: Arc<Router>,
    config: Arc<C2sConfig>,
}

async fn server() -> Server {
    let store = confab_store::SqliteStore::open_in_memory().await.unwrap();
    for user in ["alice", "bob"] {
        store
            .create_account(user, &confab_auth::derive_credentials("secret", 4096))
            .await
            .unwrap();
    }
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
        tls_available: false,
        plain_on_loopback: true,
        mailbox_capacity: 16,
        registration_open: false,
        pre_auth_iq: None,
        throttle: Arc::new(LoginThrottle::default()),
        resumption: Arc::new(Resumption::new(Duration::from_secs(300))),
    });
    Server { router, config }
}

impl Server {
    /// A session authenticated as `user`, not bound yet; returns the post-auth features.
    async fn authenticated(&self, user: &str) -> (Session, String) {
        let peer = "127.0.0.1:4000".parse::<SocketAddr>().unwrap();
        let mut s = Session::new(
            self.router.clone(),
            self.config.clone(),
            peer,
            confab_codec::Framing::XmlStream,
            false,
        );
        send(&mut s, HEADER).await;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0secret"));
        let (_, out) = send(
            &mut s,
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            ),
        )
        .await;
        assert!(out.contains("<success"), "{out}");
        let (_, features) = send(&mut s, HEADER).await;
        (s, features)
    }

    async fn bound(&self, user: &str, resource: &str) -> Session {
        let (mut s, _) = self.authenticated(user).await;
        let (_, out) = send(
            &mut s,
            &format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        )
        .await;
        assert!(out.contains("<jid>"), "{out}");
        s
    }
}

async fn send(session: &mut Session, xml: &str) -> (Action, String) {
    let mut input = BytesMut::from(xml.as_bytes());
    let action = session.receive(&mut input).await;
    let output = session.output().split();
    (action, String::from_utf8(output.to_vec()).unwrap())
}

fn deliver(session: &mut Session, body: &str) -> Action {
    let message: Element = format!(
        "<message xmlns='jabber:client' type='chat' from='bob@localhost/x' to='alice@localhost/phone'><body>{body}</body></message>"
    )
    .parse()
    .unwrap();
    session.deliver(SessionCommand::Deliver(Box::new(Stanza::new(message))))
}

fn parse(fragment: &str) -> Element {
    fragment.parse().expect(fragment)
}

/// The `id` of an `<enabled/>` in `out`.
fn enabled_id(out: &str) -> String {
    let start = out.find("<enabled").expect(out);
    let end = out[start..].find("/>").unwrap() + start + 2;
    parse(&out[start..end]).attr("id").unwrap().to_owned()
}

#[tokio::test]
async fn sm_is_offered_after_auth_and_refused_before_bind() {
    let server = server().await;
    let (mut s, features) = server.authenticated("alice").await;
    assert!(features.contains("<sm xmlns='urn:xmpp:sm:3'"), "{features}");
    // XEP-0198 §3: before resource binding, enabling fails with unexpected-request.
    let (action, out) = send(&mut s, "<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(action, Action::Continue);
    assert!(
        out.contains("<failed") && out.contains("unexpected-request"),
        "{out}"
    );
}

#[tokio::test]
async fn enable_twice_fails() {
    let server = server().await;
    let mut s = server.bound("alice", "phone").await;
    let (_, out) = send(&mut s, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await;
    assert!(out.contains("<enabled"), "{out}");
    let id = enabled_id(&out);
    assert!(id.len() >= 22, "at least 128 bits: {id}");
    assert!(
        out.contains("resume='true'") && out.contains("max='300'"),
        "{out}"
    );
    let (action, out) = send(&mut s, "<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(action, Action::Continue);
    assert!(
        out.contains("<failed") && out.contains("unexpected-request"),
        "{out}"
    );
}

#[tokio::test]
async fn r_is_answered_with_the_count_of_handled_stanzas() {
    let server = server().await;
    let mut s = server.bound("alice", "phone").await;
    // Stanzas before <enable/> are not counted.
    send(&mut s, "<presence/>").await;
    let (_, out) = send(&mut s, "<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert!(out.contains("<enabled"), "{out}");
    assert!(!out.contains("resume"), "{out}");
    let (_, out) = send(&mut s, "<r xmlns='urn:xmpp:sm:3'/>").await;
    assert!(out.contains("<a xmlns='urn:xmpp:sm:3' h='0'"), "{out}");
    send(
        &mut s,
        "<message to='bob@localhost' type='chat' id='m1'><body>one</body></message><presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let (_, out) = send(&mut s, "<r xmlns='urn:xmpp:sm:3'/>").await;
    assert!(out.contains("h='3'"), "{out}");
}

#[tokio::test]
async fn outbound_stanzas_are_requested_acked_and_bounded_by_h() {
    let server = server().await;
    let mut s = server.bound("alice", "phone").await;
    send(&mut s, "<enable xmlns='urn:xmpp:sm:3'/>").await;
    for i in 0..4 {
        assert_eq!(deliver(&mut s, &format!("m{i}")), Action::Continue);
    }
    let out = String::from_utf8(s.output().split().to_vec()).unwrap();
    assert!(!out.contains("<r "), "no request before 5: {out}");
    assert!(s.ack_request_due().is_some(), "a timed request is pending");
    deliver(&mut s, "m4");
    let out = String::from_utf8(s.output().split().to_vec()).unwrap();
    assert!(out.contains("<r xmlns='urn:xmpp:sm:3'"), "{out}");
    let (action, out) = send(&mut s, "<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    assert_eq!(action, Action::Continue, "{out}");
    // XEP-0198 §4: 5 were sent; acknowledging 6 is a stream error.
    let (action, out) = send(&mut s, "<a xmlns='urn:xmpp:sm:3' h='6'/>").await;
    assert_eq!(action, Action::Close);
    assert!(out.contains("undefined-condition"), "{out}");
    assert!(out.contains("<handled-count-too-high"), "{out}");
    assert!(out.contains("send-count='5'"), "{out}");
}

#[tokio::test]
async fn r_without_sm_is_a_stream_error() {
    let server = server().await;
    let mut s = server.bound("alice", "phone").await;
    let (action, out) = send(&mut s, "<r xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(action, Action::Close);
    assert!(out.contains("unsupported-stanza-type"), "{out}");
}

#[tokio::test]
async fn a_lost_stream_is_resumed_with_unacked_stanzas_resent() {
    let server = server().await;
    let mut old = server.bound("alice", "phone").await;
    let (_, out) = send(&mut old, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await;
    let id = enabled_id(&out);
    send(&mut old, "<presence/>").await;
    for body in ["one", "two", "three"] {
        deliver(&mut old, body);
    }
    send(&mut old, "<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    old.output().clear();
    // The connection drops without </stream:stream>: the session parks.
    let mailbox = old.take_mailbox();
    let parked = tokio::spawn(async move {
        old.disconnected(mailbox, std::future::pending()).await;
    });
    tokio::task::yield_now().await;
    let jid = confab_core::FullJid::new("alice@localhost/phone").unwrap();
    assert!(server.router.sessions.get(&jid).is_some(), "still bound");

    // Another account cannot resume it.
    let (mut bob, _) = server.authenticated("bob").await;
    let (_, out) = send(
        &mut bob,
        &format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"),
    )
    .await;
    assert!(out.contains("<item-not-found"), "{out}");

    let (mut new, _) = server.authenticated("alice").await;
    let (action, out) = send(
        &mut new,
        &format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>"),
    )
    .await;
    assert_eq!(action, Action::Continue);
    assert!(out.contains("<resumed"), "{out}");
    assert!(out.contains("h='1'"), "one stanza was handled: {out}");
    assert!(!out.contains(">one<"), "acked stanza not resent: {out}");
    assert!(out.contains(">two<") && out.contains(">three<"), "{out}");
    parked.await.unwrap();
    assert_eq!(new.resource().unwrap().jid, jid);
    assert!(server.router.sessions.get(&jid).is_some());
    // The counters continue: 3 stanzas were sent in all.
    let (action, _) = send(&mut new, "<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    assert_eq!(action, Action::Continue);
    let (_, out) = send(&mut new, "<r xmlns='urn:xmpp:sm:3'/>").await;
    assert!(out.contains("h='1'"), "{out}");
}

#[tokio::test]
async fn unknown_previd_fails_and_bind_still_works() {
    let server = server().await;
    let (mut s, _) = server.authenticated("alice").await;
    let (_, out) = send(
        &mut s,
        "<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>",
    )
    .await;
    assert!(
        out.contains("<failed") && out.contains("<item-not-found"),
        "{out}"
    );
    let (_, out) = send(
        &mut s,
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    )
    .await;
    assert!(out.contains("<jid>alice@localhost/"), "{out}");
    assert!(server.config.resumption.is_empty());
}
