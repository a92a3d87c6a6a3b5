//! End-to-end tests of XEP-0191 blocking: list management, pushes and enforcement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, router_with_accounts};
use confab_core::store::{RosterItem, Subscription};
use confab_core::{Element, Stanza, StanzaError, StanzaErrorCondition, ns};
use confab_router::Router;

/// Sends an IQ and returns the reply.
async fn iq(client: &mut Client, xml: &str) -> Stanza {
    client.send(xml).await;
    let reply = client.recv().await;
    assert_eq!(
        reply.element.name(),
        "iq",
        "expected an IQ, got {}",
        String::from(&reply.element)
    );
    reply
}

/// The defined condition of an error reply, `None` for anything else.
fn condition(stanza: &Stanza) -> Option<StanzaErrorCondition> {
    if stanza.type_attr() != Some("error") {
        return None;
    }
    stanza
        .element
        .get_child("error", ns::CLIENT)
        .and_then(StanzaError::from_element)
        .map(|error| error.condition)
}

fn assert_result(stanza: &Stanza, id: &str) {
    assert_eq!(
        stanza.type_attr(),
        Some("result"),
        "expected a result, got {}",
        String::from(&stanza.element)
    );
    assert_eq!(stanza.id(), Some(id));
}

/// Marks a session available as initial presence would, without depending on the presence
/// module: the router delivers bare-JID messages only to available resources.
fn make_available(client: &Client) {
    let mut state = client.resource.state.lock();
    state.presence = Some(Element::bare("presence", ns::CLIENT));
    state.priority = 0;
}

async fn block(client: &mut Client, id: &str, jids: &[&str]) {
    let items: String = jids
        .iter()
        .map(|jid| format!("<item jid='{jid}'/>"))
        .collect();
    let reply = iq(
        client,
        &format!("<iq xmlns='jabber:client' type='set' id='{id}'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"),
    )
    .await;
    assert_result(&reply, id);
}

fn item_jids(payload: &Element) -> Vec<String> {
    payload
        .children()
        .filter(|child| child.is("item", ns::BLOCKING))
        .filter_map(|child| child.attr("jid").map(str::to_owned))
        .collect()
}

async fn message(from: &Client, to: &str, body: &str) {
    from.send(&format!(
        "<message xmlns='jabber:client' type='chat' id='m-{body}' to='{to}'><body>{body}</body></message>"
    ))
    .await;
}

async fn subscribe(router: &Router, user: &str, contact: &str, subscription: Subscription) {
    let item = RosterItem {
        jid: contact.to_owned(),
        subscription,
        in_roster: true,
        ..RosterItem::default()
    };
    router
        .store
        .put_roster_item(user, &item)
        .await
        .expect("roster");
}

#[tokio::test]
async fn blocked_contact_cannot_reach_the_user() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    make_available(&alice);
    make_available(&bob);

    // Delivery works before the block, so silence below is the block's doing.
    message(&bob, "alice@localhost", "before").await;
    assert_eq!(
        alice
            .recv()
            .await
            .element
            .get_child("body", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("before")
    );

    block(&mut alice, "b1", &["bob@localhost"]).await;
    message(&bob, "alice@localhost", "bare").await;
    message(&bob, "alice@localhost/phone", "full").await;
    bob.send("<presence xmlns='jabber:client' to='alice@localhost'/>")
        .await;
    alice.expect_silence().await;
    // XEP-0191 §3.3: each message is answered as an unavailable user would answer it;
    // presence is dropped without a trace.
    for _ in 0..2 {
        let bounce = bob.recv().await;
        assert_eq!(bounce.type_attr(), Some("error"));
        let error = bounce
            .element
            .get_child("error", ns::CLIENT)
            .and_then(StanzaError::from_element);
        assert_eq!(
            error.map(|e| e.condition),
            Some(StanzaErrorCondition::ServiceUnavailable)
        );
    }
    bob.expect_silence().await;

    // IQ requests get service-unavailable, to the full JID and to the bare JID.
    let reply = iq(
        &mut bob,
        "<iq xmlns='jabber:client' type='get' id='q1' to='alice@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(
        condition(&reply),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    let reply = iq(
        &mut bob,
        "<iq xmlns='jabber:client' type='get' id='q2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        condition(&reply),
        Some(StanzaErrorCondition::ServiceUnavailable)
    );
    alice.expect_silence().await;
}

#[tokio::test]
async fn user_cannot_reach_whom_they_block() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    make_available(&bob);
    block(&mut alice, "b1", &["bob@localhost"]).await;

    message(&alice, "bob@localhost", "hi").await;
    let reply = alice.recv().await;
    assert_eq!(reply.element.name(), "message");
    assert_eq!(reply.type_attr(), Some("error"));
    assert_eq!(reply.element.attr("from"), Some("bob@localhost"));
    let error = reply.element.get_child("error", ns::CLIENT).expect("error");
    assert_eq!(error.attr("type"), Some("cancel"));
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAcceptable));
    assert!(
        error.has_child("blocked", ns::BLOCKING_ERRORS),
        "XEP-0191 <blocked/> condition"
    );

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='q1' to='bob@localhost/desk'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::NotAcceptable));

    // Presence is dropped silently in both directions.
    alice
        .send("<presence xmlns='jabber:client' to='bob@localhost'/>")
        .await;
    alice.expect_silence().await;
    bob.expect_silence().await;
}

#[tokio::test]
async fn blocklist_changes_are_pushed_to_resources_that_fetched_it() {
    let router = router_with_accounts(&["alice"]).await;
    let mut watcher = Client::connect(&router, "alice@localhost/watcher").await;
    let mut editor = Client::connect(&router, "alice@localhost/editor").await;
    let mut bystander = Client::connect(&router, "alice@localhost/bystander").await;

    let reply = iq(
        &mut watcher,
        "<iq xmlns='jabber:client' type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_result(&reply, "l1");
    assert!(item_jids(reply.payload().expect("blocklist")).is_empty());

    block(&mut editor, "b1", &["mallory@localhost", "eve@localhost"]).await;
    let push = watcher.recv().await;
    assert_eq!(push.type_attr(), Some("set"));
    assert_eq!(push.element.attr("to"), Some("alice@localhost/watcher"));
    let payload = push.payload().expect("block");
    assert!(payload.is("block", ns::BLOCKING));
    let mut pushed = item_jids(payload);
    pushed.sort();
    assert_eq!(pushed, ["eve@localhost", "mallory@localhost"]);
    // Only resources that fetched the list get pushes; the editor got its result.
    editor.expect_silence().await;
    bystander.expect_silence().await;

    let reply = iq(
        &mut watcher,
        "<iq xmlns='jabber:client' type='get' id='l2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        item_jids(reply.payload().expect("blocklist")),
        ["eve@localhost", "mallory@localhost"]
    );

    let reply = iq(
        &mut editor,
        "<iq xmlns='jabber:client' type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/></unblock></iq>",
    )
    .await;
    assert_result(&reply, "u1");
    let push = watcher.recv().await;
    let payload = push.payload().expect("unblock");
    assert!(payload.is("unblock", ns::BLOCKING));
    assert_eq!(item_jids(payload), ["eve@localhost"]);
    bystander.expect_silence().await;

    // A closed session no longer counts as having fetched the list.
    watcher.disconnect().await;
    let mut watcher = Client::connect(&router, "alice@localhost/watcher").await;
    block(&mut editor, "b2", &["trent@localhost"]).await;
    watcher.expect_silence().await;
}

#[tokio::test]
async fn unblock_all_restores_delivery() {
    let router = router_with_accounts(&["alice", "bob", "carol"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let bob = Client::connect(&router, "bob@localhost/desk").await;
    let carol = Client::connect(&router, "carol@localhost/desk").await;
    make_available(&alice);
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_result(&reply, "l1");
    block(&mut alice, "b1", &["bob@localhost", "carol@localhost"]).await;
    let _push = alice.recv().await;
    message(&bob, "alice@localhost", "blocked").await;
    alice.expect_silence().await;

    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_result(&reply, "u1");
    let push = alice.recv().await;
    let payload = push.payload().expect("unblock");
    assert!(payload.is("unblock", ns::BLOCKING));
    assert!(
        item_jids(payload).is_empty(),
        "unblock-all push has no items"
    );

    message(&bob, "alice@localhost", "from-bob").await;
    message(&carol, "alice@localhost", "from-carol").await;
    for expected in ["from-bob", "from-carol"] {
        let delivered = alice.recv().await;
        assert_eq!(
            delivered
                .element
                .get_child("body", ns::CLIENT)
                .map(Element::text)
                .as_deref(),
            Some(expected)
        );
    }
    assert!(
        router
            .store
            .blocklist("alice")
            .await
            .expect("store")
            .is_empty()
    );
}

#[tokio::test]
async fn blocking_a_domain_blocks_every_account_there_but_not_own_resources() {
    let router = router_with_accounts(&["alice", "bob", "carol"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut laptop = Client::connect(&router, "alice@localhost/laptop").await;
    let bob = Client::connect(&router, "bob@localhost/desk").await;
    let carol = Client::connect(&router, "carol@localhost/desk").await;
    block(&mut alice, "b1", &["localhost"]).await;
    message(&bob, "alice@localhost/phone", "bob").await;
    message(&carol, "alice@localhost/phone", "carol").await;
    alice.expect_silence().await;
    // The user's own resources are never blocked from each other.
    message(&laptop, "alice@localhost/phone", "self").await;
    let delivered = alice.recv().await;
    assert_eq!(
        delivered
            .element
            .get_child("body", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("self")
    );
    laptop.expect_silence().await;
}

#[tokio::test]
async fn blocking_a_full_jid_blocks_only_that_resource() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let desk = Client::connect(&router, "bob@localhost/desk").await;
    let tablet = Client::connect(&router, "bob@localhost/tablet").await;
    block(&mut alice, "b1", &["bob@localhost/desk"]).await;
    message(&desk, "alice@localhost/phone", "desk").await;
    alice.expect_silence().await;
    message(&tablet, "alice@localhost/phone", "tablet").await;
    let delivered = alice.recv().await;
    assert_eq!(
        delivered
            .element
            .get_child("body", ns::CLIENT)
            .map(Element::text)
            .as_deref(),
        Some("tablet")
    );
}

#[tokio::test]
async fn block_requests_are_validated() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='e1'><block xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::BadRequest));
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='e2'><block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::JidMalformed));
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='e3' to='bob@localhost'><block xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/></block></iq>",
    )
    .await;
    assert_eq!(condition(&reply), Some(StanzaErrorCondition::Forbidden));
    assert!(
        router
            .store
            .blocklist("alice")
            .await
            .expect("store")
            .is_empty()
    );
    assert!(
        router
            .store
            .blocklist("bob")
            .await
            .expect("store")
            .is_empty()
    );
}

#[tokio::test]
async fn blocking_sends_unavailable_presence_to_subscribed_contact() {
    let router = router_with_accounts(&["alice", "bob"]).await;
    subscribe(&router, "alice", "bob@localhost", Subscription::From).await;
    subscribe(&router, "bob", "alice@localhost", Subscription::To).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    make_available(&alice);
    make_available(&bob);
    block(&mut alice, "b1", &["bob@localhost"]).await;
    let presence = bob.recv().await;
    assert_eq!(presence.element.name(), "presence");
    assert_eq!(presence.type_attr(), Some("unavailable"));
    assert_eq!(presence.element.attr("from"), Some("alice@localhost/phone"));
    bob.expect_silence().await;

    // XEP-0191 §3.4: unblocking (here: everything) sends the current presence again.
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_result(&reply, "u1");
    let presence = bob.recv().await;
    assert_eq!(presence.element.name(), "presence");
    assert_eq!(presence.type_attr(), None, "available again");
    assert_eq!(presence.element.attr("from"), Some("alice@localhost/phone"));
    bob.expect_silence().await;
}

#[tokio::test]
async fn block_outlives_the_session_and_applies_to_offline_users() {
    let router = router_with_accounts(&["alice", "bob", "carol"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    block(&mut alice, "b1", &["bob@localhost"]).await;
    alice.disconnect().await;

    // With no session the list comes from the store: bob's message is not kept for alice,
    // while carol's is.
    let bob = Client::connect(&router, "bob@localhost/desk").await;
    let carol = Client::connect(&router, "carol@localhost/desk").await;
    message(&bob, "alice@localhost", "from-bob").await;
    message(&carol, "alice@localhost", "from-carol").await;
    let kept = router.store.take_offline("alice").await.expect("store");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].xml.contains("from-carol"));

    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let reply = iq(
        &mut alice,
        "<iq xmlns='jabber:client' type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        item_jids(reply.payload().expect("blocklist")),
        ["bob@localhost"]
    );
    message(&bob, "alice@localhost/phone", "online").await;
    alice.expect_silence().await;

    // Once the last session is gone the in-memory copy is dropped, so a change made to the
    // store meanwhile (by an administrator, say) is what counts.
    alice.disconnect().await;
    router.store.unblock("alice", &[]).await.expect("store");
    message(&bob, "alice@localhost", "after-unblock").await;
    let kept = router.store.take_offline("alice").await.expect("store");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].xml.contains("after-unblock"));
}

#[tokio::test]
async fn server_generated_stanzas_from_a_blocker_are_dropped() {
    let router = router_with_accounts(&["alice", "bob", "carol"]).await;
    let mut alice = Client::connect(&router, "alice@localhost/phone").await;
    let mut bob = Client::connect(&router, "bob@localhost/desk").await;
    let mut carol = Client::connect(&router, "carol@localhost/desk").await;
    make_available(&bob);
    make_available(&carol);
    block(&mut alice, "b1", &["bob@localhost"]).await;
    // What a presence broadcast or probe answer on alice's behalf looks like to the router.
    for contact in ["bob@localhost", "carol@localhost"] {
        let presence = format!(
            "<presence xmlns='jabber:client' from='alice@localhost/phone' to='{contact}'/>"
        );
        let presence = Stanza::new(presence.parse().expect("xml"));
        router.route(presence).await;
    }
    bob.expect_silence().await;
    let delivered = carol.recv().await;
    assert_eq!(delivered.element.name(), "presence");
    assert_eq!(
        delivered.element.attr("from"),
        Some("alice@localhost/phone")
    );
}
