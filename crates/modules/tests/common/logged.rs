//! Harness additions for features that run behind the message log (carbons, read state):
//! a router with the log where the server puts it, and waits that skip commit receipts.

use super::{Client, router_over_with};
use confab_core::{Stanza, StanzaKind};
use confab_log::{LogConfig, LogModule};
use confab_modules::ModuleOptions;
use confab_router::Router;
use std::sync::Arc;
use std::time::Duration;

/// The default modules with the message log where the server puts it (before offline).
pub async fn router(accounts: &[&str]) -> Arc<Router> {
    let store = confab_store::SqliteStore::open_in_memory()
        .await
        .expect("store");
    let options = ModuleOptions {
        registration_open: false,
        scram_iterations: 64,
    };
    router_over_with(store, accounts, |store| {
        confab_modules::modules_with_log(
            &options,
            vec![Arc::new(LogModule::new(
                store.clone(),
                LogConfig::default(),
            ))],
        )
    })
    .await
}

/// Connects, sends presence with `priority` and optionally enables carbons.
pub async fn online(router: &Arc<Router>, jid: &str, priority: i8, carbons: bool) -> Client {
    let mut client = Client::connect(router, jid).await;
    client
        .send(&format!(
            "<presence xmlns='jabber:client'><priority>{priority}</priority></presence>"
        ))
        .await;
    if carbons {
        client
            .send("<iq xmlns='jabber:client' type='set' id='on'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            .await;
        let reply = next_non_presence(&mut client).await;
        assert_eq!(reply.type_attr(), Some("result"), "{}", xml(&reply));
        assert_eq!(reply.id(), Some("on"));
    }
    client
}

pub fn xml(stanza: &Stanza) -> String {
    String::from(&stanza.element)
}

pub async fn next_non_presence(client: &mut Client) -> Stanza {
    loop {
        let stanza = client.recv().await;
        if stanza.kind != StanzaKind::Presence {
            return stanza;
        }
    }
}

/// Discards whatever is queued (presence broadcasts, receipts).
pub async fn drain(client: &mut Client) {
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(50), client.mailbox.receiver.recv()).await
    {}
}

/// The next message that is not a commit receipt.
pub async fn next_message(client: &mut Client) -> Stanza {
    loop {
        let stanza = next_non_presence(client).await;
        if !stanza.element.has_child("ack", "urn:confab:ack:0") {
            return stanza;
        }
    }
}

/// Asserts that only commit receipts (and presence) arrive within 100 ms.
pub async fn expect_no_message(client: &mut Client) {
    while let Ok(Some(confab_sessions::SessionCommand::Deliver(stanza))) =
        tokio::time::timeout(Duration::from_millis(100), client.mailbox.receiver.recv()).await
    {
        let ack = stanza.element.has_child("ack", "urn:confab:ack:0");
        assert!(
            ack || stanza.kind == StanzaKind::Presence,
            "{}: unexpected {}",
            client.resource.jid,
            xml(&stanza)
        );
    }
}
