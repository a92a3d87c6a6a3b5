//! Test harness: a real router over an in-memory SQLite store, with sessions that are just
//! mailboxes. Exercises modules end to end without sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod logged;

use confab_core::metrics::Metrics;
use confab_core::store::{AccountStore, Store};
use confab_core::{BareJid, FullJid, Jid, Stanza};
use confab_modules::{ModuleOptions, default_modules};
use confab_router::Router;
use confab_sessions::{Mailbox, Resource, SessionCommand, SessionManager};
use std::sync::Arc;
use std::time::Duration;

/// A router with the default modules and the given accounts (password = username).
pub async fn router_with_accounts(accounts: &[&str]) -> Arc<Router> {
    router_with_options(
        accounts,
        ModuleOptions {
            registration_open: true,
            scram_iterations: 64,
        },
    )
    .await
}

/// Like `router_with_accounts` with explicit module options.
pub async fn router_with_options(accounts: &[&str], options: ModuleOptions) -> Arc<Router> {
    let store = confab_store::SqliteStore::open_in_memory()
        .await
        .expect("store");
    router_over(store, accounts, options).await
}

/// A router over a given store, creating the accounts (password = username).
pub async fn router_over(
    store: confab_store::SqliteStore,
    accounts: &[&str],
    options: ModuleOptions,
) -> Arc<Router> {
    router_over_with(store, accounts, |_| default_modules(&options)).await
}

/// Like [`router_over`], with the module list built by `modules` over the store (e.g. the
/// defaults with the message log).
pub async fn router_over_with(
    store: confab_store::SqliteStore,
    accounts: &[&str],
    modules: impl FnOnce(&Arc<dyn Store>) -> Vec<Arc<dyn confab_router::Module>>,
) -> Arc<Router> {
    for account in accounts {
        let credentials = confab_auth::derive_credentials(account, 64);
        store
            .create_account(account, &credentials)
            .await
            .expect("account");
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let modules = modules(&store);
    Arc::new(Router::new(
        BareJid::new("localhost").expect("domain"),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        modules,
    ))
}

/// A connected, bound client session (no initial presence sent yet).
pub struct Client {
    pub resource: Arc<Resource>,
    pub mailbox: Mailbox,
    pub router: Arc<Router>,
}

impl Client {
    /// Binds `full_jid` like a session does after resource binding.
    pub async fn connect(router: &Arc<Router>, full_jid: &str) -> Client {
        let (resource, mailbox) = Resource::new(FullJid::new(full_jid).expect("jid"), 256);
        if let Some(old) = router.sessions.bind(resource.clone()) {
            old.kick(confab_core::StreamErrorCondition::Conflict, "replaced");
        }
        router.session_opened(&resource).await;
        Client {
            resource,
            mailbox,
            router: router.clone(),
        }
    }

    /// Sends a stanza as this session would: parse, stamp `from`, hand to the router.
    pub async fn send(&self, xml: &str) {
        let element = xml.parse().expect("test xml");
        let mut stanza = Stanza::from_element(element).expect("stanza");
        stanza.set_from(Some(Jid::from(self.resource.jid.clone())));
        self.router.inbound(&self.resource, stanza).await;
    }

    /// The next stanza delivered to this session (fails the test after 2 s).
    pub async fn recv(&mut self) -> Stanza {
        match tokio::time::timeout(Duration::from_secs(2), self.mailbox.receiver.recv()).await {
            Ok(Some(SessionCommand::Deliver(stanza))) => *stanza,
            Ok(None) => panic!("{}: mailbox closed", self.resource.jid),
            Err(_) => panic!("{}: nothing received within 2 s", self.resource.jid),
        }
    }

    /// Asserts nothing more is delivered within 100 ms.
    pub async fn expect_silence(&mut self) {
        if let Ok(Some(SessionCommand::Deliver(stanza))) =
            tokio::time::timeout(Duration::from_millis(100), self.mailbox.receiver.recv()).await
        {
            panic!(
                "{}: unexpected stanza {}",
                self.resource.jid,
                String::from(&stanza.element)
            );
        }
    }

    /// Disconnects like a dropped or closed connection.
    pub async fn disconnect(self) {
        if self.router.sessions.unbind(&self.resource) {
            self.router.session_closed(&self.resource).await;
        }
    }
}
