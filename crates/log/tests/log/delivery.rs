//! What senders and recipients see: stanza ids, receipts after commit, per-conversation
//! sequences, errors instead of delivery when the commit fails, and what is not archived.

use crate::harness::{
    Client, FlakyStore, body, create_users, router, router_over, stanza_ids, xml,
};
use confab_core::archive::{ArchiveStore, direct_conversation};
use confab_core::store::Store;
use confab_core::{BareJid, StanzaError, StanzaErrorCondition, StanzaErrorType, ns};
use confab_log::receipt::{ACK, SID};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn conversation(a: &str, b: &str) -> String {
    direct_conversation(
        &BareJid::new(a).expect("jid"),
        &BareJid::new(b).expect("jid"),
    )
}

#[tokio::test]
async fn recipient_gets_a_stanza_id_and_sender_a_receipt_matching_the_archive() {
    let (router, store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;

    alice.chat("bob@localhost", "id='m1'", "hello", "").await;
    let receipt = alice.receipt().await;
    let delivered = bob.recv().await;
    assert_eq!(body(&delivered).as_deref(), Some("hello"));
    // XEP-0359 §2.1: the id the archive knows the message by, vouched for by the archive
    // of the recipient.
    assert_eq!(
        stanza_ids(&delivered),
        [(receipt.server_id.clone(), "bob@localhost".to_owned())]
    );
    assert_eq!(receipt.client_id.as_deref(), Some("m1"));
    assert_eq!(receipt.seq, 1);
    assert_eq!(receipt.with, "bob@localhost");

    let stored = store
        .message_by_id(&receipt.server_id)
        .await
        .expect("lookup")
        .expect("archived");
    assert_eq!(stored.seq, receipt.seq);
    assert_eq!(stored.stamp_ms, receipt.stamp_ms);
    assert_eq!(stored.sender, "alice@localhost");
    assert_eq!(stored.recipient, "bob@localhost");
    assert_eq!(
        stored.conversation,
        conversation("alice@localhost", "bob@localhost")
    );
    assert_eq!(stored.client_id.as_deref(), Some("m1"));
    // The archive holds the message as delivered: sender stamped, stanza-id included.
    assert_eq!(stored.xml, xml(&delivered));
    assert_eq!(delivered.element.attr("from"), Some("alice@localhost/a"));
    let age = chrono::Utc::now().timestamp_millis() - receipt.stamp_ms;
    assert!(
        (0..60_000).contains(&age),
        "stamp is server time: {age} ms old"
    );

    alice.expect_silence().await;
    bob.expect_silence().await;
}

#[tokio::test]
async fn sequences_are_gap_free_per_conversation_whoever_sends() {
    let (router, store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let mut carol = Client::available(&router, "carol@localhost/c").await;

    let mut seqs = Vec::new();
    for n in 0..3 {
        alice.chat("bob@localhost", "", &format!("a{n}"), "").await;
        seqs.push(alice.receipt().await.seq);
        bob.recv().await;
        // A full JID addresses the same conversation as the bare one.
        bob.chat("alice@localhost/a", "", &format!("b{n}"), "")
            .await;
        seqs.push(bob.receipt().await.seq);
        alice.recv().await;
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    // Another conversation starts its own sequence.
    alice.chat("carol@localhost", "", "hi carol", "").await;
    let receipt = alice.receipt().await;
    assert_eq!((receipt.seq, receipt.with.as_str()), (1, "carol@localhost"));
    carol.recv().await;

    let history = store
        .history(
            &conversation("alice@localhost", "bob@localhost"),
            None,
            None,
            100,
        )
        .await
        .expect("history");
    let bodies: Vec<String> = history
        .iter()
        .map(|m| {
            let element: confab_core::Element = m.xml.parse().expect("stored xml");
            element
                .get_child("body", ns::CLIENT)
                .map(confab_core::Element::text)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(bodies, ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

#[tokio::test]
async fn forged_stanza_ids_of_this_server_are_replaced() {
    let (router, _store) = router().await;
    let alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    alice
        .chat(
            "bob@localhost",
            "",
            "trust me",
            &format!(
                "<stanza-id xmlns='{SID}' id='forged' by='bob@localhost'/>\
                 <stanza-id xmlns='{SID}' id='forged2' by='localhost'/>\
                 <stanza-id xmlns='{SID}' id='muc-1' by='room@conference.example.net'/>"
            ),
        )
        .await;
    let delivered = bob.recv().await;
    let ids = stanza_ids(&delivered);
    assert_eq!(ids.len(), 2, "{}", xml(&delivered));
    assert_eq!(
        ids[0],
        ("muc-1".into(), "room@conference.example.net".into())
    );
    assert_eq!(ids[1].1, "bob@localhost");
    assert_ne!(ids[1].0, "forged");
}

#[tokio::test]
async fn commit_failure_answers_the_sender_and_delivers_nothing() {
    let flaky = Arc::new(FlakyStore {
        inner: confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
        failing: AtomicBool::new(false),
        offline_down: AtomicBool::new(false),
    });
    create_users(flaky.as_ref()).await;
    let router = router_over(flaky.clone() as Arc<dyn Store>);
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;

    flaky.fail(true);
    alice.chat("bob@localhost", "id='f1'", "lost?", "").await;
    let error = alice.recv().await;
    assert_eq!(error.type_attr(), Some("error"), "{}", xml(&error));
    assert_eq!(error.id(), Some("f1"));
    assert!(!error.element.has_child("ack", ACK));
    // The stanza-id of the failed commit is not echoed back.
    assert!(stanza_ids(&error).is_empty(), "{}", xml(&error));
    let condition =
        StanzaError::from_element(error.element.get_child("error", ns::CLIENT).expect("error"))
            .expect("stanza error");
    assert_eq!(
        condition.condition,
        StanzaErrorCondition::InternalServerError
    );
    assert_eq!(condition.kind, StanzaErrorType::Wait);
    bob.expect_silence().await;
    alice.expect_silence().await;
    assert_eq!(
        flaky
            .last_seq(&conversation("alice@localhost", "bob@localhost"))
            .await
            .expect("last"),
        0
    );

    // Nothing was stored, so the same client id is new when the disk is back.
    flaky.fail(false);
    alice.chat("bob@localhost", "id='f1'", "lost?", "").await;
    assert_eq!(alice.receipt().await.seq, 1);
    assert_eq!(body(&bob.recv().await).as_deref(), Some("lost?"));
}

#[tokio::test]
async fn message_for_an_offline_account_is_committed_then_stored_with_its_stanza_id() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    alice.chat("bob@localhost", "", "later", "").await;
    let receipt = alice.receipt().await;
    alice.expect_silence().await;

    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    let mut offline = None;
    for _ in 0..2 {
        let stanza = bob.recv().await;
        if stanza.element.name() == "message" {
            offline = Some(stanza);
        }
    }
    let offline = offline.expect("the offline message");
    assert_eq!(body(&offline).as_deref(), Some("later"));
    assert_eq!(
        stanza_ids(&offline),
        [(receipt.server_id, "bob@localhost".to_owned())]
    );
}

/// The offline queue is a view over the archive: it names the archived message instead of
/// copying it, so a full copy quota cannot bounce a message its sender holds a receipt for.
#[tokio::test]
async fn offline_queue_references_the_archive_and_ignores_the_copy_quota() {
    let store: Arc<dyn Store> = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store")
            .with_offline_quota(0),
    );
    create_users(store.as_ref()).await;
    let router = router_over(store.clone());
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    alice
        .chat("bob@localhost", "", "while you were out", "")
        .await;
    let receipt = alice.receipt().await;
    // No error follows the receipt, although bob's quota for copies is zero.
    alice.expect_silence().await;

    let queued = store.take_offline("bob").await.expect("take");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        queued[0].archived.as_deref(),
        Some(receipt.server_id.as_str())
    );
    let archived = store
        .message_by_id(&receipt.server_id)
        .await
        .expect("lookup")
        .expect("archived");
    assert_eq!(queued[0].xml, archived.xml);
}

/// The offline entry of a message for an absent recipient is written by the commit itself:
/// with every later write to the offline queue failing (as after a crash right after the
/// commit), the acknowledged message still reaches the recipient at the next login, once.
#[tokio::test]
async fn offline_entry_is_part_of_the_commit() {
    let flaky = Arc::new(FlakyStore {
        inner: confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
        failing: AtomicBool::new(false),
        offline_down: AtomicBool::new(true),
    });
    create_users(flaky.as_ref()).await;
    let router = router_over(flaky.clone() as Arc<dyn Store>);
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    alice
        .chat("bob@localhost", "id='k1'", "kept by the commit", "")
        .await;
    let receipt = alice.receipt().await;
    alice.expect_silence().await;

    let mut bob = Client::connect(&router, "bob@localhost/b").await;
    bob.send("<presence xmlns='jabber:client'/>").await;
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let stanza = bob.recv().await;
        if stanza.element.name() == "message" {
            delivered.push(stanza);
        }
    }
    bob.expect_silence().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(body(&delivered[0]).as_deref(), Some("kept by the commit"));
    assert_eq!(
        stanza_ids(&delivered[0]),
        [(receipt.server_id, "bob@localhost".to_owned())]
    );
}

#[tokio::test]
async fn blocked_and_undeliverable_messages_are_not_archived() {
    let (router, store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    bob.send(
        "<iq xmlns='jabber:client' type='set' id='b1'>\
           <block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>",
    )
    .await;
    assert_eq!(bob.recv().await.type_attr(), Some("result"));

    // XEP-0191 §3.3: bob blocks alice, so alice's message bounces, unarchived and unacked.
    alice
        .chat("bob@localhost", "id='x1'", "let me in", "")
        .await;
    let bounce = alice.recv().await;
    assert_eq!(bounce.type_attr(), Some("error"), "{}", xml(&bounce));
    alice.expect_silence().await;
    bob.expect_silence().await;

    // RFC 6121 §8.5.1: no such account.
    alice
        .chat("nobody@localhost", "id='x2'", "anyone?", "")
        .await;
    let bounce = alice.recv().await;
    assert_eq!(bounce.type_attr(), Some("error"), "{}", xml(&bounce));
    alice.expect_silence().await;

    for peer in ["bob@localhost", "nobody@localhost"] {
        assert_eq!(
            store
                .last_seq(&conversation("alice@localhost", peer))
                .await
                .expect("last"),
            0,
            "{peer}"
        );
    }
}

#[tokio::test]
async fn chat_states_headlines_and_no_store_messages_pass_unarchived() {
    let (router, store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    for message in [
        "<message xmlns='jabber:client' type='chat' to='bob@localhost'>\
           <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message xmlns='jabber:client' type='headline' to='bob@localhost'><body>news</body></message>",
        "<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>off the record</body>\
           <no-permanent-store xmlns='urn:xmpp:hints'/></message>",
    ] {
        alice.send(message).await;
        let delivered = bob.recv().await;
        assert!(stanza_ids(&delivered).is_empty(), "{}", xml(&delivered));
    }
    alice.expect_silence().await;
    assert_eq!(
        store
            .last_seq(&conversation("alice@localhost", "bob@localhost"))
            .await
            .expect("last"),
        0
    );

    // Receipts (XEP-0184) and markers (XEP-0333) are archived, like bodies.
    alice
        .send(
            "<message xmlns='jabber:client' to='bob@localhost' id='r1'>\
               <received xmlns='urn:xmpp:receipts' id='m0'/></message>",
        )
        .await;
    assert_eq!(alice.receipt().await.seq, 1);
    assert_eq!(stanza_ids(&bob.recv().await).len(), 1);
}

#[tokio::test]
async fn disco_advertises_stanza_ids_and_receipts() {
    let (router, _store) = router().await;
    let features = router.server_features();
    assert!(features.contains(&SID), "{features:?}");
    assert!(features.contains(&ACK), "{features:?}");
}
