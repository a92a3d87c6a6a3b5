//! Server-side read state (urn:confab:read:0) through a real router, store and message log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Client;
use common::logged::{drain, expect_no_message, next_message, online, router, xml};
use confab_core::archive::direct_conversation;
use confab_core::{BareJid, Stanza};
use confab_modules::markers::READ;
use confab_router::Router;
use std::sync::Arc;

fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).expect("jid")
}

fn conversation() -> String {
    direct_conversation(&bare("alice@localhost"), &bare("bob@localhost"))
}

/// The `<read/>` push in a message, as (with, seq, unread).
fn read_push(stanza: &Stanza) -> (String, u64, u64) {
    let read = stanza
        .element
        .get_child("read", READ)
        .unwrap_or_else(|| panic!("no <read/> in {}", xml(stanza)));
    assert_eq!(stanza.element.attr("from"), Some("alice@localhost"));
    (
        read.attr("with").expect("with").to_owned(),
        read.attr("seq").expect("seq").parse().expect("seq"),
        read.attr("unread")
            .expect("unread")
            .parse()
            .expect("unread"),
    )
}

fn displayed(id: &str) -> String {
    format!(
        "<message xmlns='jabber:client' type='chat' to='bob@localhost'>\
         <displayed xmlns='urn:xmpp:chat-markers:0' id='{id}'/></message>"
    )
}

struct Scene {
    router: Arc<Router>,
    phone: Client,
    laptop: Client,
    bob: Client,
    /// Server ids of bob's three messages, as alice's devices got them.
    server_ids: Vec<String>,
}

/// bob sent alice three messages (client ids b1..b3, seq 1..3), which both devices got.
async fn scene() -> Scene {
    let router = router(&["alice", "bob", "carol"]).await;
    let mut phone = online(&router, "alice@localhost/phone", 0, false).await;
    let mut laptop = online(&router, "alice@localhost/laptop", 0, false).await;
    let mut bob = online(&router, "bob@localhost/pc", 0, false).await;
    for client in [&mut phone, &mut laptop, &mut bob] {
        drain(client).await;
    }
    let mut server_ids = Vec::new();
    for n in 1..=3 {
        bob.send(&format!(
            "<message xmlns='jabber:client' type='chat' id='b{n}' to='alice@localhost'><body>{n}</body></message>"
        ))
        .await;
        let got = next_message(&mut phone).await;
        let id = got
            .element
            .children()
            .find(|c| c.is("stanza-id", "urn:xmpp:sid:0"))
            .and_then(|c| c.attr("id"))
            .expect("stanza-id");
        server_ids.push(id.to_owned());
        next_message(&mut laptop).await;
    }
    drain(&mut bob).await;
    Scene {
        router,
        phone,
        laptop,
        bob,
        server_ids,
    }
}

#[tokio::test]
async fn read_position_is_pushed_to_the_other_devices_and_only_moves_forward() {
    let Scene {
        router,
        mut phone,
        mut laptop,
        mut bob,
        ..
    } = scene().await;
    let store = router.store.clone();
    assert_eq!(
        store
            .unread_count("alice@localhost", &conversation())
            .await
            .expect("count"),
        3
    );

    // The marker names bob's stanza id (XEP-0333 §4 in one-to-one chats).
    phone.send(&displayed("b2")).await;
    assert_eq!(
        store
            .read_position("alice@localhost", &conversation())
            .await
            .expect("position"),
        2
    );
    assert_eq!(
        read_push(&next_message(&mut laptop).await),
        ("bob@localhost".to_owned(), 2, 1)
    );
    // The marker itself still reaches bob.
    let marker = next_message(&mut bob).await;
    assert!(
        marker
            .element
            .has_child("displayed", "urn:xmpp:chat-markers:0")
    );
    expect_no_message(&mut phone).await;

    // An older marker from the other device changes nothing and pushes nothing.
    laptop.send(&displayed("b1")).await;
    assert_eq!(
        store
            .read_position("alice@localhost", &conversation())
            .await
            .expect("position"),
        2
    );
    expect_no_message(&mut phone).await;
    expect_no_message(&mut laptop).await;

    laptop.send(&displayed("b3")).await;
    assert_eq!(
        read_push(&next_message(&mut phone).await),
        ("bob@localhost".to_owned(), 3, 0)
    );
    assert_eq!(
        store
            .unread_count("alice@localhost", &conversation())
            .await
            .expect("count"),
        0
    );
    expect_no_message(&mut laptop).await;
}

#[tokio::test]
async fn markers_may_name_the_server_id() {
    let Scene {
        router,
        mut phone,
        mut laptop,
        server_ids,
        ..
    } = scene().await;
    phone.send(&displayed(&server_ids[2])).await;
    assert_eq!(
        read_push(&next_message(&mut laptop).await),
        ("bob@localhost".to_owned(), 3, 0)
    );
    assert_eq!(
        router
            .store
            .read_position("alice@localhost", &conversation())
            .await
            .expect("position"),
        3
    );
    drain(&mut phone).await;
}

#[tokio::test]
async fn unknown_ids_and_other_conversations_move_nothing() {
    let Scene {
        router,
        mut phone,
        mut laptop,
        ..
    } = scene().await;
    // carol writes alice; her message's server id is not part of alice's chat with bob.
    let mut carol = online(&router, "carol@localhost/x", 0, false).await;
    drain(&mut carol).await;
    drain(&mut phone).await;
    drain(&mut laptop).await;
    carol
        .send("<message xmlns='jabber:client' type='chat' id='c1' to='alice@localhost/phone'><body>hi</body></message>")
        .await;
    let got = next_message(&mut phone).await;
    let carol_id = got
        .element
        .children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0"))
        .and_then(|c| c.attr("id"))
        .expect("stanza-id")
        .to_owned();

    for id in ["nope", carol_id.as_str(), "c1"] {
        phone.send(&displayed(id)).await;
    }
    expect_no_message(&mut laptop).await;
    assert_eq!(
        router
            .store
            .read_position("alice@localhost", &conversation())
            .await
            .expect("position"),
        0
    );
}

#[tokio::test]
async fn read_state_query_lists_positions_and_unread_counts() {
    let Scene {
        mut phone,
        mut laptop,
        ..
    } = scene().await;
    phone.send(&displayed("b1")).await;
    read_push(&next_message(&mut laptop).await);
    drain(&mut phone).await;
    laptop
        .send("<iq xmlns='jabber:client' type='get' id='q'><query xmlns='urn:confab:read:0'/></iq>")
        .await;
    let reply = next_message(&mut laptop).await;
    assert_eq!(reply.type_attr(), Some("result"), "{}", xml(&reply));
    let reads: Vec<(String, String, String)> = reply
        .element
        .get_child("query", READ)
        .expect("query")
        .children()
        .map(|r| {
            (
                r.attr("with").unwrap_or_default().to_owned(),
                r.attr("seq").unwrap_or_default().to_owned(),
                r.attr("unread").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reads,
        [("bob@localhost".to_owned(), "1".to_owned(), "2".to_owned())]
    );
}
