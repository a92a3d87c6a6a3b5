//! Resends: recognised by origin-id or stanza id per sender, across sessions and restarts.

use crate::harness::{Client, body, create_users, router, router_over};
use confab_core::store::Store;
use confab_log::receipt::SID;
use std::sync::Arc;

#[tokio::test]
async fn resend_with_the_same_origin_id_gets_the_original_receipt_and_is_not_delivered() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let origin = format!("<origin-id xmlns='{SID}' id='o-1'/>");

    alice
        .chat("bob@localhost", "id='s1'", "once", &origin)
        .await;
    let original = alice.receipt().await;
    assert_eq!(original.client_id.as_deref(), Some("o-1"));
    assert_eq!(body(&bob.recv().await).as_deref(), Some("once"));

    // Same origin-id, another stanza id (as after a reconnect), even another body.
    alice
        .chat("bob@localhost", "id='s2'", "once again", &origin)
        .await;
    assert_eq!(alice.receipt().await, original);
    bob.expect_silence().await;

    // From another session of the same account, after the first one went away.
    alice.disconnect().await;
    let mut phone = Client::available(&router, "alice@localhost/phone").await;
    phone.chat("bob@localhost", "", "once", &origin).await;
    assert_eq!(phone.receipt().await, original);
    phone.expect_silence().await;
    bob.expect_silence().await;

    // A new origin-id is a new message.
    phone
        .chat(
            "bob@localhost",
            "",
            "twice",
            &format!("<origin-id xmlns='{SID}' id='o-2'/>"),
        )
        .await;
    assert_eq!(phone.receipt().await.seq, original.seq + 1);
    assert_eq!(body(&bob.recv().await).as_deref(), Some("twice"));
}

#[tokio::test]
async fn resend_with_the_same_stanza_id_and_no_origin_id_is_recognised() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    alice.chat("bob@localhost", "id='plain-1'", "hi", "").await;
    let original = alice.receipt().await;
    assert_eq!(original.client_id.as_deref(), Some("plain-1"));
    bob.recv().await;

    alice.chat("bob@localhost", "id='plain-1'", "hi", "").await;
    assert_eq!(alice.receipt().await, original);
    bob.expect_silence().await;

    // Without any id a message cannot be recognised: every send is new.
    for seq in [2, 3] {
        alice.chat("bob@localhost", "", "no id", "").await;
        let receipt = alice.receipt().await;
        assert_eq!((receipt.seq, receipt.client_id), (seq, None));
        bob.recv().await;
    }
}

#[tokio::test]
async fn the_same_client_id_from_another_sender_is_a_new_message() {
    let (router, _store) = router().await;
    let mut alice = Client::available(&router, "alice@localhost/a").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    let mut carol = Client::available(&router, "carol@localhost/c").await;

    alice
        .chat("bob@localhost", "id='same'", "from alice", "")
        .await;
    let from_alice = alice.receipt().await;
    bob.recv().await;

    // The other side of the same conversation.
    bob.chat("alice@localhost", "id='same'", "from bob", "")
        .await;
    let from_bob = bob.receipt().await;
    assert_eq!(from_bob.seq, from_alice.seq + 1);
    assert_eq!(body(&alice.recv().await).as_deref(), Some("from bob"));

    // A third account, to the same recipient.
    carol
        .chat("bob@localhost", "id='same'", "from carol", "")
        .await;
    let from_carol = carol.receipt().await;
    assert_eq!(from_carol.seq, 1);
    assert_eq!(body(&bob.recv().await).as_deref(), Some("from carol"));
}

#[tokio::test]
async fn idempotency_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = {
        let sqlite = confab_store::SqliteStore::open(dir.path())
            .await
            .expect("open");
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        create_users(store.as_ref()).await;
        let router = router_over(store);
        let mut alice = Client::available(&router, "alice@localhost/a").await;
        let mut bob = Client::available(&router, "bob@localhost/b").await;
        alice
            .chat("bob@localhost", "id='before-restart'", "durable", "")
            .await;
        let receipt = alice.receipt().await;
        bob.recv().await;
        alice.disconnect().await;
        bob.disconnect().await;
        drop(router);
        // As at shutdown: every connection closes and the WAL is checkpointed.
        sqlite.close().await;
        receipt
    };

    let store: Arc<dyn Store> = Arc::new(
        confab_store::SqliteStore::open(dir.path())
            .await
            .expect("reopen"),
    );
    let router = router_over(store);
    let mut alice = Client::available(&router, "alice@localhost/new").await;
    let mut bob = Client::available(&router, "bob@localhost/b").await;
    alice
        .chat("bob@localhost", "id='before-restart'", "durable", "")
        .await;
    assert_eq!(alice.receipt().await, original);
    bob.expect_silence().await;

    // And the sequence carries on where it was.
    alice.chat("bob@localhost", "", "after", "").await;
    assert_eq!(alice.receipt().await.seq, original.seq + 1);
}
