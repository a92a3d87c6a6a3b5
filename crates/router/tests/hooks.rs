//! The delivery hook reaches exactly the modules that ask for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use confab_core::metrics::Metrics;
use confab_core::store::{AccountStore, Store};
use confab_core::{BareJid, FullJid, Jid, Stanza};
use confab_router::{Module, Router};
use confab_sessions::{Resource, SessionManager};
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
