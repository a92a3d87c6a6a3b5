//! Offline message storage (XEP-0160) and its delayed delivery (XEP-0203), end to end.

mod common;

use common::{Client, router_with_accounts};
use confab_core::{Stanza, StanzaError, StanzaErrorCondition, ns};
use confab_modules::ModuleOptions;
use confab_router::Router;
use std::sync::Arc;

fn xml(stanza: &Stanza) -> String {
    String::from(&stanza.element)
}

/// Sends initial presence (optionally with a priority) and consumes its echo.
async fn available(client: &mut Client, priority: Option<i8>) {
    let priority = priority
        .map(|p| format!("<priority>{p}</priority>"))
        .unwrap_or_default();
    client
        .send(&format!(
            "<presence xmlns='jabber:client'>{priority}</presence>"
        ))
        .await;
    let echo = client.recv().await;
    assert_eq!(echo.element.name(), "presence", "{}", xml(&echo));
    assert_eq!(
        echo.element.attr("from"),
        Some(client.resource.jid.as_str())
    );
}

/// Asserts a stored chat message with its body and a well-formed XEP-0203 stamp.
fn assert_delayed(stanza: &Stanza, body: &str) {
    assert_eq!(stanza.element.name(), "message", "{}", xml(stanza));
    assert_eq!(stanza.element.attr("from"), Some("alice@localhost/a"));
    assert_eq!(
        stanza
            .element
            .get_child("body", ns::CLIENT)
            .map(|b| b.text())
            .as_deref(),
        Some(body)
    );
    let delay = stanza
        .element
        .get_child("delay", ns::DELAY)
        .unwrap_or_else(|| panic!("no delay stamp: {}", xml(stanza)));
    assert_eq!(delay.attr("from"), Some("localhost"));
    let stamp = delay.attr("stamp").expect("stamp");
    // XEP-0082 DateTime in UTC with milliseconds: YYYY-MM-DDThh:mm:ss.sssZ.
    assert_eq!(stamp.len(), 24, "{stamp}");
    let parsed = chrono::DateTime::parse_from_rfc3339(stamp).expect("XEP-0082 stamp");
    assert!(stamp.ends_with('Z'));
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(
        age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(60),
        "stamp {stamp} is when the server took the message"
    );
}

fn chat(to: &str, body: &str) -> String {
    format!("<message xmlns='jabber:client' type='chat' to='{to}'><body>{body}</body></message>")
}

#[tokio::test]
async fn message_for_offline_account_is_delivered_once_with_a_delay_stamp() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/a").await;
    alice.send(&chat("bob@localhost", "first")).await;
    alice
        .send(
            "<message xmlns='jabber:client' to='bob@localhost/gone'><body>second</body></message>",
        )
        .await;
    // Stored, so no error comes back.
    alice.expect_silence().await;

    // Binding alone is not availability: nothing yet.
    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    bob.expect_silence().await;
    available(&mut bob, None).await;
    assert_delayed(&bob.recv().await, "first");
    assert_delayed(&bob.recv().await, "second");
    bob.expect_silence().await;

    // A presence update in the same session replays nothing.
    bob.send("<presence xmlns='jabber:client'><show>away</show></presence>")
        .await;
    bob.recv().await;
    bob.expect_silence().await;
    bob.disconnect().await;

    // Exactly once: the next login gets nothing.
    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    available(&mut bob, None).await;
    bob.expect_silence().await;
}

#[tokio::test]
async fn negative_priority_resource_leaves_messages_offline() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut shy = Client::connect(&router, "bob@localhost/shy").await;
    available(&mut shy, Some(-1)).await;
    let alice = Client::connect(&router, "alice@localhost/a").await;
    alice.send(&chat("bob@localhost", "stored")).await;
    // RFC 6121 §8.5.2.1.1: a negative priority never gets bare-JID messages, nor the replay.
    shy.expect_silence().await;

    let mut pc = Client::connect(&router, "bob@localhost/pc").await;
    available(&mut pc, Some(0)).await;
    // The other resource's presence, then the stored message.
    let presence = pc.recv().await;
    assert_eq!(presence.element.attr("from"), Some("bob@localhost/shy"));
    assert_delayed(&pc.recv().await, "stored");
    pc.expect_silence().await;
    // Only pc's presence reaches shy.
    let presence = shy.recv().await;
    assert_eq!(presence.element.attr("from"), Some("bob@localhost/pc"));
    shy.expect_silence().await;
}

#[tokio::test]
async fn raising_priority_replays_stored_messages() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    available(&mut bob, Some(-1)).await;
    let alice = Client::connect(&router, "alice@localhost/a").await;
    alice.send(&chat("bob@localhost", "later")).await;
    bob.expect_silence().await;
    bob.send("<presence xmlns='jabber:client'><priority>1</priority></presence>")
        .await;
    bob.recv().await;
    assert_delayed(&bob.recv().await, "later");
}

#[tokio::test]
async fn headline_and_payloadless_messages_are_not_stored() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/a").await;
    alice
        .send("<message xmlns='jabber:client' type='headline' to='bob@localhost'><body>news</body></message>")
        .await;
    alice
        .send("<message xmlns='jabber:client' type='chat' to='bob@localhost'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    // Neither is an error for the sender.
    alice.expect_silence().await;
    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    available(&mut bob, None).await;
    bob.expect_silence().await;
    assert!(
        router
            .store
            .take_offline("bob")
            .await
            .expect("store")
            .is_empty()
    );
}

fn condition(stanza: &Stanza) -> StanzaErrorCondition {
    assert_eq!(stanza.type_attr(), Some("error"), "{}", xml(stanza));
    let error = stanza
        .element
        .get_child("error", ns::CLIENT)
        .expect("error");
    StanzaError::from_element(error)
        .expect("condition")
        .condition
}

#[tokio::test]
async fn groupchat_to_offline_account_and_chat_to_unknown_account_bounce() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/a").await;
    alice
        .send("<message xmlns='jabber:client' type='groupchat' to='bob@localhost' id='g'><body>x</body></message>")
        .await;
    let bounce = alice.recv().await;
    assert_eq!(condition(&bounce), StanzaErrorCondition::ServiceUnavailable);
    assert_eq!(bounce.id(), Some("g"));

    // RFC 6121 §8.5.1: no such account.
    alice
        .send("<message xmlns='jabber:client' type='chat' to='nobody@localhost' id='n'><body>x</body></message>")
        .await;
    let bounce = alice.recv().await;
    assert_eq!(condition(&bounce), StanzaErrorCondition::ServiceUnavailable);
    assert_eq!(bounce.element.attr("from"), Some("nobody@localhost"));
    assert!(
        router
            .store
            .take_offline("bob")
            .await
            .expect("store")
            .is_empty()
    );
}

/// A router like the harness's, over a store whose offline quota is `quota`.
async fn router_with_quota(quota: u32) -> Arc<Router> {
    let store = confab_store::SqliteStore::open_in_memory()
        .await
        .expect("store")
        .with_offline_quota(quota);
    let options = ModuleOptions {
        registration_open: false,
        scram_iterations: 64,
    };
    common::router_over(store, &["alice", "bob"], options).await
}

#[tokio::test]
async fn full_offline_store_answers_service_unavailable() {
    let router = router_with_quota(1).await;
    let mut alice = Client::connect(&router, "alice@localhost/a").await;
    alice.send(&chat("bob@localhost", "kept")).await;
    alice.expect_silence().await;
    alice
        .send("<message xmlns='jabber:client' type='chat' to='bob@localhost' id='over'><body>lost</body></message>")
        .await;
    let bounce = alice.recv().await;
    assert_eq!(condition(&bounce), StanzaErrorCondition::ServiceUnavailable);
    assert_eq!(bounce.id(), Some("over"));

    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    available(&mut bob, None).await;
    assert_delayed(&bob.recv().await, "kept");
    bob.expect_silence().await;
}

#[tokio::test]
async fn messages_survive_a_failed_replay() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let alice = Client::connect(&router, "alice@localhost/a").await;
    alice.send(&chat("bob@localhost", "one")).await;
    alice.send(&chat("bob@localhost", "two")).await;

    // A session whose connection died before it could take the replay.
    let Client {
        resource, mailbox, ..
    } = Client::connect(&router, "bob@localhost/dead").await;
    drop(mailbox);
    let mut presence =
        Stanza::from_element("<presence xmlns='jabber:client'/>".parse().expect("xml"))
            .expect("stanza");
    presence.set_from(Some(resource.jid.clone().into()));
    router.inbound(&resource, presence).await;
    if router.sessions.unbind(&resource) {
        router.session_closed(&resource).await;
    }

    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    available(&mut bob, None).await;
    assert_delayed(&bob.recv().await, "one");
    assert_delayed(&bob.recv().await, "two");
    bob.expect_silence().await;
}

#[tokio::test]
async fn msgoffline_is_advertised() {
    let router = router_with_accounts(&[]).await;
    assert!(router.server_features().contains(&"msgoffline"));
}
