//! XEP-0280 Message Carbons through a real router, store and message log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Client;
use common::logged::{
    drain, expect_no_message, next_message, next_non_presence, online, router, xml,
};
use confab_core::{Element, Stanza};
use confab_modules::carbons::{CARBONS, FORWARD};
use confab_router::Router;
use std::sync::Arc;

const SID: &str = "urn:xmpp:sid:0";

/// The message inside a carbon, checking the wrapper on the way.
fn unwrap_carbon<'a>(carbon: &'a Stanza, direction: &str, to: &str) -> &'a Element {
    assert_eq!(carbon.element.attr("from"), Some("alice@localhost"));
    assert_eq!(carbon.element.attr("to"), Some(to));
    assert_eq!(carbon.type_attr(), Some("chat"));
    carbon
        .element
        .get_child(direction, CARBONS)
        .unwrap_or_else(|| panic!("no <{direction}/> in {}", xml(carbon)))
        .get_child("forwarded", FORWARD)
        .expect("forwarded")
        .get_child("message", "jabber:client")
        .expect("message")
}

fn body(message: &Element) -> String {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

fn stanza_id<'a>(message: &'a Element, by: &str) -> Option<&'a str> {
    message
        .children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
}

struct Scene {
    router: Arc<Router>,
    phone: Client,
    laptop: Client,
    bob: Client,
}

/// alice/phone and alice/laptop (priority 1 and 0) both carbons-enabled; bob/pc without.
async fn scene() -> Scene {
    let router = router(&["alice", "bob"]).await;
    let mut phone = online(&router, "alice@localhost/phone", 1, true).await;
    let mut laptop = online(&router, "alice@localhost/laptop", 0, true).await;
    let mut bob = online(&router, "bob@localhost/pc", 0, false).await;
    for client in [&mut phone, &mut laptop, &mut bob] {
        drain(client).await;
    }
    Scene {
        router,
        phone,
        laptop,
        bob,
    }
}

#[tokio::test]
async fn carbons_feature_is_advertised() {
    let router = router(&["alice"]).await;
    assert!(router.server_features().contains(&CARBONS));
}

#[tokio::test]
async fn received_message_is_copied_to_other_enabled_resources() {
    let Scene {
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    bob.send("<message xmlns='jabber:client' type='chat' id='b1' to='alice@localhost/phone'><body>hi phone</body></message>").await;

    let original = next_message(&mut phone).await;
    assert_eq!(body(&original.element), "hi phone");
    let server_id = stanza_id(&original.element, "alice@localhost").expect("stanza-id");

    let carbon = next_message(&mut laptop).await;
    let inner = unwrap_carbon(&carbon, "received", "alice@localhost/laptop");
    assert_eq!(body(inner), "hi phone");
    assert_eq!(inner.attr("from"), Some("bob@localhost/pc"));
    assert_eq!(inner.attr("to"), Some("alice@localhost/phone"));
    assert_eq!(stanza_id(inner, "alice@localhost"), Some(server_id));

    expect_no_message(&mut phone).await;
    expect_no_message(&mut laptop).await;
    expect_no_message(&mut bob).await;
}

#[tokio::test]
async fn sent_message_is_copied_with_the_senders_stanza_id() {
    let Scene {
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    phone.send("<message xmlns='jabber:client' type='chat' id='a1' to='bob@localhost'><body>hi bob</body></message>").await;

    let original = next_message(&mut bob).await;
    let server_id = stanza_id(&original.element, "bob@localhost").expect("stanza-id");

    let carbon = next_message(&mut laptop).await;
    let inner = unwrap_carbon(&carbon, "sent", "alice@localhost/laptop");
    assert_eq!(body(inner), "hi bob");
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    // The same message, named for alice's own archive.
    assert_eq!(stanza_id(inner, "alice@localhost"), Some(server_id));
    assert_eq!(stanza_id(inner, "bob@localhost"), None);

    // The sending resource gets its receipt, never a copy of its own message.
    expect_no_message(&mut phone).await;
    expect_no_message(&mut laptop).await;
    expect_no_message(&mut bob).await;
}

#[tokio::test]
async fn private_messages_are_not_copied_and_private_is_stripped() {
    let Scene {
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    bob.send("<message xmlns='jabber:client' type='chat' to='alice@localhost/phone'><body>secret in</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    let delivered = next_message(&mut phone).await;
    assert_eq!(body(&delivered.element), "secret in");
    assert!(!delivered.element.has_child("private", CARBONS));

    phone.send("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>secret out</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    let delivered = next_message(&mut bob).await;
    assert_eq!(body(&delivered.element), "secret out");
    assert!(!delivered.element.has_child("private", CARBONS));

    expect_no_message(&mut laptop).await;
    expect_no_message(&mut phone).await;
}

#[tokio::test]
async fn no_copy_hint_suppresses_carbons() {
    let Scene {
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    bob.send("<message xmlns='jabber:client' type='chat' to='alice@localhost/phone'><body>in</body><no-copy xmlns='urn:xmpp:hints'/></message>").await;
    assert_eq!(body(&next_message(&mut phone).await.element), "in");
    phone.send("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>out</body><no-copy xmlns='urn:xmpp:hints'/></message>").await;
    assert_eq!(body(&next_message(&mut bob).await.element), "out");
    expect_no_message(&mut laptop).await;
}

#[tokio::test]
async fn disabled_and_never_enabled_resources_get_no_copies() {
    let Scene {
        router,
        mut phone,
        mut laptop,
        mut bob,
    } = scene().await;
    let mut tablet = online(&router, "alice@localhost/tablet", 0, false).await;
    laptop
        .send("<iq xmlns='jabber:client' type='set' id='off'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    let reply = next_non_presence(&mut laptop).await;
    assert_eq!(reply.type_attr(), Some("result"));
    drain(&mut tablet).await;
    drain(&mut phone).await;

    bob.send("<message xmlns='jabber:client' type='chat' to='alice@localhost/phone'><body>1</body></message>").await;
    phone.send("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>2</body></message>").await;
    assert_eq!(body(&next_message(&mut phone).await.element), "1");
    assert_eq!(body(&next_message(&mut bob).await.element), "2");
    expect_no_message(&mut laptop).await;
    expect_no_message(&mut tablet).await;

    // A new session under the same resource starts without carbons.
    laptop
        .send("<iq xmlns='jabber:client' type='set' id='on'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    laptop.disconnect().await;
    let mut again = online(&router, "alice@localhost/laptop", 0, false).await;
    drain(&mut again).await;
    bob.send("<message xmlns='jabber:client' type='chat' to='alice@localhost/phone'><body>3</body></message>").await;
    assert_eq!(body(&next_message(&mut phone).await.element), "3");
    expect_no_message(&mut again).await;
}

#[tokio::test]
async fn bare_jid_fan_out_copies_only_to_resources_without_the_original() {
    let router = router(&["alice", "bob"]).await;
    let mut phone = online(&router, "alice@localhost/phone", 0, true).await;
    let mut laptop = online(&router, "alice@localhost/laptop", 0, true).await;
    // Negative priority: never a bare-JID recipient (RFC 6121 §4.7.2.3), so it gets a copy.
    let mut tablet = online(&router, "alice@localhost/tablet", -1, true).await;
    let mut bob = online(&router, "bob@localhost/pc", 0, false).await;
    for client in [&mut phone, &mut laptop, &mut tablet, &mut bob] {
        drain(client).await;
    }
    bob.send("<message xmlns='jabber:client' type='chat' to='alice@localhost'><body>all</body></message>").await;

    for client in [&mut phone, &mut laptop] {
        let original = next_message(client).await;
        assert!(
            original.element.has_child("body", "jabber:client"),
            "{}",
            xml(&original)
        );
        assert!(!original.element.has_child("received", CARBONS));
        expect_no_message(client).await;
    }
    let carbon = next_message(&mut tablet).await;
    assert_eq!(
        body(unwrap_carbon(&carbon, "received", "alice@localhost/tablet")),
        "all"
    );
    expect_no_message(&mut tablet).await;
}

#[tokio::test]
async fn errors_headlines_and_bodiless_normal_messages_are_not_copied() {
    let Scene {
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    bob.send("<message xmlns='jabber:client' type='headline' to='alice@localhost/phone'><body>news</body></message>").await;
    bob.send("<message xmlns='jabber:client' type='error' to='alice@localhost/phone'><body>err</body></message>").await;
    bob.send("<message xmlns='jabber:client' to='alice@localhost/phone'><received xmlns='urn:xmpp:receipts' id='x'/></message>").await;
    for _ in 0..3 {
        next_message(&mut phone).await;
    }
    expect_no_message(&mut laptop).await;
    drain(&mut bob).await;
}

#[tokio::test]
async fn carbons_cannot_be_set_for_another_account() {
    let Scene { mut bob, .. } = scene().await;
    bob.send("<iq xmlns='jabber:client' type='set' id='x' to='alice@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>").await;
    let reply = next_non_presence(&mut bob).await;
    assert_eq!(reply.type_attr(), Some("error"), "{}", xml(&reply));
}

/// The phone dies without acknowledging a message to its full JID: the laptop, which holds
/// the carbon, does not get the original again, and nothing is kept for a later login.
/// A resource without carbons still gets the redelivery.
#[tokio::test]
async fn redelivery_skips_resources_holding_a_carbon() {
    let Scene {
        router,
        mut phone,
        mut laptop,
        mut bob,
    } = scene().await;
    let mut tablet = online(&router, "alice@localhost/tablet", 0, false).await;
    drain(&mut tablet).await;
    drain(&mut laptop).await;
    drain(&mut bob).await;
    // Bound before the message arrives, like every resource here.
    let bound_before = confab_sessions::next_session_id();
    bob.send("<message xmlns='jabber:client' type='chat' id='b9' to='alice@localhost/phone'><body>once</body></message>").await;
    let original = next_message(&mut phone).await;
    let carbon = next_message(&mut laptop).await;
    assert_eq!(
        body(unwrap_carbon(&carbon, "received", "alice@localhost/laptop")),
        "once"
    );

    // What the phone's session hands back when it ends without acking.
    let resource = phone.resource.clone();
    router.sessions.unbind(&resource);
    router
        .undelivered(
            &resource,
            vec![confab_sessions::Undelivered {
                stanza: original,
                bound_before,
                holders: Vec::new(),
            }],
        )
        .await;

    let again = next_message(&mut tablet).await;
    assert_eq!(body(&again.element), "once");
    expect_no_message(&mut laptop).await;
    assert!(
        router
            .store
            .take_offline("alice")
            .await
            .expect("take")
            .is_empty(),
        "a device holding the carbon is still online: nothing kept for later"
    );
}

/// What the server made for one session (a carbon, a MAM result: from the account's bare
/// JID) is not handed to other devices or kept for later when that session dies unacked.
#[tokio::test]
async fn server_made_messages_are_not_redelivered() {
    let Scene {
        router,
        phone,
        mut laptop,
        ..
    } = scene().await;
    drain(&mut laptop).await;
    let bound_before = confab_sessions::next_session_id();
    let made_for_phone = [
        "<message xmlns='jabber:client' type='chat' from='alice@localhost' to='alice@localhost/phone'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='alice@localhost/laptop' to='bob@localhost'><body>copy</body></message></forwarded></sent></message>",
        "<message xmlns='jabber:client' from='alice@localhost' to='alice@localhost/phone'><result xmlns='urn:xmpp:mam:2' queryid='q1' id='x'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><body>old</body></message></forwarded></result></message>",
    ];
    let stanzas = made_for_phone
        .iter()
        .map(|xml| confab_sessions::Undelivered {
            stanza: Stanza::from_element(xml.parse().expect("xml")).expect("stanza"),
            bound_before,
            holders: Vec::new(),
        })
        .collect();
    let resource = phone.resource.clone();
    router.sessions.unbind(&resource);
    router.undelivered(&resource, stanzas).await;

    expect_no_message(&mut laptop).await;
    assert!(
        router
            .store
            .take_offline("alice")
            .await
            .expect("take")
            .is_empty()
    );
}
