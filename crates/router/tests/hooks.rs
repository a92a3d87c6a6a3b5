//! The delivery hook reaches exactly the modules that ask for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use confab_core::metrics::Metrics;
use confab_core::store::{AccountStore, Store};
use confab_core::{BareJid, FullJid, Jid, Stanza};
use confab_router::{Flow, Module, Router};
use confab_sessions::{Resource, SessionCommand, SessionManager};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts `on_delivered` calls; observes delivery only when asked to.
struct Counter {
    observes: bool,
    seen: AtomicUsize,
}

#[async_trait]
impl Module for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn observes_delivery(&self) -> bool {
        self.observes
    }

    async fn on_delivered(&self, _router: &Router, _resource: &Arc<Resource>, _stanza: &Stanza) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn on_delivered_reaches_only_observers() {
    let store = confab_store::SqliteStore::open_in_memory()
        .await
        .expect("store");
    store
        .create_account("bob", &confab_auth::derive_credentials("bob", 64))
        .await
        .expect("account");
    let observer = Arc::new(Counter {
        observes: true,
        seen: AtomicUsize::new(0),
    });
    let bystander = Arc::new(Counter {
        observes: false,
        seen: AtomicUsize::new(0),
    });
    let store: Arc<dyn Store> = Arc::new(store);
    let router = Router::new(
        BareJid::new("localhost").expect("domain"),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        vec![observer.clone(), bystander.clone()],
    );
    let (bob, mut mailbox) = Resource::new(FullJid::new("bob@localhost/desk").expect("jid"), 8);
    router.sessions.bind(bob.clone());
    let mut message = Stanza::new(
        "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
            .parse()
            .expect("xml"),
    );
    message.set_from(Some(Jid::new("alice@localhost/phone").expect("jid")));
    message.set_to(Some(Jid::from(bob.jid.clone())));
    router.route(message).await;
    assert!(mailbox.receiver.try_recv().is_ok(), "delivered");
    assert_eq!(observer.seen.load(Ordering::Relaxed), 1);
    assert_eq!(bystander.seen.load(Ordering::Relaxed), 0);
}

/// Serves `rooms.localhost` and remembers what reached it.
struct Rooms {
    seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Module for Rooms {
    fn name(&self) -> &'static str {
        "rooms"
    }

    fn hosted_domains(&self) -> Vec<String> {
        vec!["rooms.localhost".to_owned()]
    }

    async fn handle_hosted(&self, _router: &Router, stanza: Stanza) {
        let to = stanza.to.map(|to| to.to_string()).unwrap_or_default();
        self.seen.lock().unwrap().push(to);
    }
}

#[tokio::test]
async fn stanzas_to_a_hosted_domain_reach_its_module_and_others_bounce() {
    let store: Arc<dyn Store> = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let rooms = Arc::new(Rooms {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let router = Router::new(
        BareJid::new("localhost").expect("domain"),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        vec![rooms.clone()],
    );
    assert_eq!(
        router.hosted_domains().collect::<Vec<_>>(),
        ["rooms.localhost"]
    );
    let (alice, mut mailbox) =
        Resource::new(FullJid::new("alice@localhost/phone").expect("jid"), 8);
    router.sessions.bind(alice.clone());
    for to in ["lobby@rooms.localhost/alice", "lobby@elsewhere.example"] {
        let mut presence = Stanza::new("<presence xmlns='jabber:client'/>".parse().expect("xml"));
        presence.set_from(Some(Jid::from(alice.jid.clone())));
        presence.set_to(Some(Jid::new(to).expect("jid")));
        router.route(presence).await;
    }
    assert_eq!(*rooms.seen.lock().unwrap(), ["lobby@rooms.localhost/alice"]);
    // The unknown domain is remote: RFC 6120 §10.4 error back to the sender.
    let bounced = mailbox.receiver.try_recv().expect("an error came back");
    let xml = format!("{bounced:?}");
    assert!(xml.contains("remote-server-not-found"), "{xml}");
}

/// Counts the hooks a fan-out runs and refuses copies for `refused`.
struct FanOutProbe {
    refused: FullJid,
    fan_outs: AtomicUsize,
    routed: AtomicUsize,
    admits: AtomicUsize,
}

#[async_trait]
impl Module for FanOutProbe {
    fn name(&self) -> &'static str {
        "fan-out probe"
    }

    async fn on_fan_out(&self, _router: &Router, _stanza: &mut Stanza) -> Flow {
        self.fan_outs.fetch_add(1, Ordering::Relaxed);
        Flow::Continue
    }

    async fn on_routed(&self, _router: &Router, _stanza: &mut Stanza) -> Flow {
        self.routed.fetch_add(1, Ordering::Relaxed);
        Flow::Continue
    }

    fn filters_fan_out(&self) -> bool {
        true
    }

    async fn admits(&self, _router: &Router, stanza: &Stanza, recipient: &FullJid) -> bool {
        assert!(
            stanza.to.is_none(),
            "admits sees the message before it is addressed"
        );
        self.admits.fetch_add(1, Ordering::Relaxed);
        *recipient != self.refused
    }
}

#[tokio::test]
async fn a_fan_out_runs_its_hooks_once_and_checks_each_recipient() {
    let store: Arc<dyn Store> = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    let jid = |s: &str| FullJid::new(s).expect("jid");
    let probe = Arc::new(FanOutProbe {
        refused: jid("carol@localhost/desk"),
        fan_outs: AtomicUsize::new(0),
        routed: AtomicUsize::new(0),
        admits: AtomicUsize::new(0),
    });
    let rooms = Arc::new(Rooms {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let router = Router::new(
        BareJid::new("localhost").expect("domain"),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        vec![probe.clone(), rooms.clone()],
    );
    let (alice, mut alice_box) = Resource::new(jid("alice@localhost/phone"), 8);
    let (bob, mut bob_box) = Resource::new(jid("bob@localhost/desk"), 8);
    let (carol, mut carol_box) = Resource::new(jid("carol@localhost/desk"), 8);
    for resource in [&alice, &bob, &carol] {
        router.sessions.bind(resource.clone());
    }
    let mut message = Stanza::new(
        "<message xmlns='jabber:client' type='groupchat' from='lobby@rooms.localhost/nick'>\
         <body>hi</body></message>"
            .parse()
            .expect("xml"),
    );
    message.set_from(Some(Jid::new("lobby@rooms.localhost/nick").expect("jid")));
    let recipients = vec![
        alice.jid.clone(),
        bob.jid.clone(),
        carol.jid.clone(),
        jid("dave@localhost/gone"),
    ];
    router.fan_out(message, recipients).await;

    assert_eq!(probe.fan_outs.load(Ordering::Relaxed), 1);
    assert_eq!(
        probe.routed.load(Ordering::Relaxed),
        0,
        "no on_routed per copy"
    );
    assert_eq!(
        probe.admits.load(Ordering::Relaxed),
        3,
        "once per bound recipient"
    );
    for (mailbox, to) in [(&mut alice_box, &alice.jid), (&mut bob_box, &bob.jid)] {
        let SessionCommand::Deliver(copy) = mailbox.receiver.try_recv().expect("a copy");
        let expected = to.to_string();
        assert_eq!(copy.element.attr("to"), Some(expected.as_str()));
        assert_eq!(copy.to.as_ref().map(ToString::to_string), Some(expected));
        assert!(mailbox.receiver.try_recv().is_err(), "one copy each");
    }
    assert!(
        carol_box.receiver.try_recv().is_err(),
        "refused copy delivered"
    );
    // The copy for a gone resource takes the ordinary route: bounced to the room (RFC 6121
    // §8.5.3.2.1), which is how the room learns of it.
    assert_eq!(*rooms.seen.lock().unwrap(), ["lobby@rooms.localhost/nick"]);
}
