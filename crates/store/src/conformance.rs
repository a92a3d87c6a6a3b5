//! The behaviour every store adapter must show, as plain async functions over `&dyn Store`.
//!
//! Each function expects a fresh, empty store and panics on the first deviation. An adapter
//! runs them all with [`conformance_tests!`](crate::conformance_tests), which generates one
//! `#[tokio::test]` per function (the calling crate needs `tokio` as a dev-dependency):
//!
//! ```ignore
//! confab_store::conformance_tests!(
//!     async { Box::new(PgStore::connect_for_test().await.with_offline_quota(5)) },
//!     offline_quota: 5
//! );
//! ```
//!
//! Adapter-specific behaviour (files, reopening, several handles) is tested beside the adapter.

use confab_core::archive::{CommitReceipt, NewMessage, new_server_id};
use confab_core::store::{
    OfflineMessage, RosterItem, Store, StoreError, StoredCredentials, Subscription,
};

/// Generates one `#[tokio::test]` per conformance function. `$make` is an expression whose
/// value is a future of a fresh, empty store with the given offline quota, behind anything
/// that dereferences to it: a `Box`, or a guard that also keeps the store's files alive.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, offline_quota: $quota:expr) => {
        $crate::conformance_tests!(@each $make;
            account_create_conflict_and_credentials,
            account_set_credentials,
            account_list_sorted,
            account_delete_cascades,
            roster_put_get_remove,
            roster_version_strictly_increases,
            roster_versions_are_per_owner,
            roster_hidden_rows_and_unicode_groups,
            roster_version_not_reused_after_account_recreation,
            offline_order_and_take_empties,
            documents_put_replace_get,
            blocklist_block_unblock,
            concurrent_writes_through_one_handle,
            archive_sequences_are_gap_free_per_conversation,
            archive_resend_returns_the_original_receipt,
            archive_resend_within_one_batch,
            archive_history_range_and_lookup,
            archive_purge_keeps_sequences_and_frees_client_ids,
            archive_concurrent_appends_keep_sequences_gap_free,
        );
        #[tokio::test]
        async fn offline_quota() {
            let store = $make.await;
            $crate::conformance::offline_quota(&*store, $quota).await;
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make.await;
                $crate::conformance::$name(&*store).await;
            }
        )*
    };
}

/// Distinct, recognisable credentials: `seed` fills every field so mix-ups show.
pub fn credentials(seed: u8) -> StoredCredentials {
    StoredCredentials {
        salt: vec![seed; 16],
        iterations: 4096 + u32::from(seed),
        stored_key_sha1: vec![seed.wrapping_add(1); 20],
        server_key_sha1: vec![seed.wrapping_add(2); 20],
        stored_key_sha256: vec![seed.wrapping_add(3); 32],
        server_key_sha256: vec![seed.wrapping_add(4); 32],
    }
}

/// A visible roster item with a subscription in both directions.
pub fn item(jid: &str) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: Some(format!("name of {jid}")),
        subscription: Subscription::Both,
        in_roster: true,
        ..RosterItem::default()
    }
}

/// An offline message whose body and stamp are derived from `n`.
pub fn message(n: i64) -> OfflineMessage {
    OfflineMessage {
        xml: format!("<message to='a@x'><body>{n}</body></message>"),
        stamp_ms: 1_700_000_000_000 + n,
    }
}

/// Creating an account stores its credentials exactly; a second create is `Conflict` and
/// leaves the first credentials untouched.
pub async fn account_create_conflict_and_credentials(store: &dyn Store) {
    assert!(!store.account_exists("alice").await.expect("exists"));
    assert_eq!(store.credentials("alice").await.expect("credentials"), None);

    store
        .create_account("alice", &credentials(1))
        .await
        .expect("create");
    assert!(store.account_exists("alice").await.expect("exists"));
    assert_eq!(
        store.credentials("alice").await.expect("credentials"),
        Some(credentials(1))
    );

    let again = store.create_account("alice", &credentials(2)).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert_eq!(
        store.credentials("alice").await.expect("credentials"),
        Some(credentials(1))
    );

    // Extreme values survive the round trip (u32::MAX does not fit a signed 32-bit column).
    let extreme = StoredCredentials {
        iterations: u32::MAX,
        salt: Vec::new(),
        ..credentials(255)
    };
    store
        .create_account("bob", &extreme)
        .await
        .expect("create bob");
    assert_eq!(
        store.credentials("bob").await.expect("credentials"),
        Some(extreme)
    );
}

/// `set_credentials` replaces every field, and is `NotFound` for a missing account.
pub async fn account_set_credentials(store: &dyn Store) {
    let missing = store.set_credentials("nobody", &credentials(1)).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert!(!store.account_exists("nobody").await.expect("exists"));

    store
        .create_account("alice", &credentials(1))
        .await
        .expect("create");
    store
        .set_credentials("alice", &credentials(7))
        .await
        .expect("set");
    assert_eq!(
        store.credentials("alice").await.expect("credentials"),
        Some(credentials(7))
    );
}

/// `list_accounts` returns every name once, sorted like Rust sorts strings.
pub async fn account_list_sorted(store: &dyn Store) {
    assert!(store.list_accounts().await.expect("list").is_empty());
    let names = ["mallory", "alice", "zoë", "bob", "Carol", "ärger"];
    for (i, name) in names.iter().enumerate() {
        let seed = u8::try_from(i).expect("few names");
        store
            .create_account(name, &credentials(seed))
            .await
            .expect("create");
    }
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(store.list_accounts().await.expect("list"), expected);
}

/// Deleting an account removes everything it owns and nothing anyone else owns; deleting it
/// again is `NotFound`.
pub async fn account_delete_cascades(store: &dyn Store) {
    for (name, seed) in [("alice", 1), ("bob", 2)] {
        store
            .create_account(name, &credentials(seed))
            .await
            .expect("create");
        store
            .put_roster_item(name, &item("carol@x"))
            .await
            .expect("roster");
        store.push_offline(name, &message(1)).await.expect("push");
        store
            .put_document(name, "vcard", "<vCard/>")
            .await
            .expect("document");
        store
            .block(name, &["spam@x".to_owned()])
            .await
            .expect("block");
    }

    store.delete_account("alice").await.expect("delete");

    assert!(!store.account_exists("alice").await.expect("exists"));
    assert_eq!(store.credentials("alice").await.expect("credentials"), None);
    let (version, items) = store.roster("alice").await.expect("roster");
    assert_eq!((version, items), (0, Vec::new()));
    assert!(store.take_offline("alice").await.expect("take").is_empty());
    assert_eq!(store.document("alice", "vcard").await.expect("doc"), None);
    assert!(
        store
            .blocklist("alice")
            .await
            .expect("blocklist")
            .is_empty()
    );

    // Bob's rows, including the ones naming the same contacts, are untouched.
    assert_eq!(store.list_accounts().await.expect("list"), ["bob"]);
    assert_eq!(
        store.roster("bob").await.expect("roster").1,
        [item("carol@x")]
    );
    assert_eq!(store.take_offline("bob").await.expect("take"), [message(1)]);
    assert_eq!(
        store
            .document("bob", "vcard")
            .await
            .expect("doc")
            .as_deref(),
        Some("<vCard/>")
    );
    assert_eq!(store.blocklist("bob").await.expect("blocklist"), ["spam@x"]);

    let again = store.delete_account("alice").await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    let never = store.delete_account("nobody").await;
    assert!(matches!(never, Err(StoreError::NotFound)), "{never:?}");
}

/// Items are stored whole, replaced whole, and removed.
pub async fn roster_put_get_remove(store: &dyn Store) {
    assert_eq!(
        store.roster_item("alice", "bob@x").await.expect("get"),
        None
    );
    let first = RosterItem {
        jid: "bob@x".to_owned(),
        name: Some("Bob".to_owned()),
        subscription: Subscription::To,
        ask_out: true,
        pending_in: Some("<presence type='subscribe' from='bob@x'/>".to_owned()),
        approved: true,
        groups: vec!["Friends".to_owned(), "Work".to_owned()],
        in_roster: true,
    };
    store.put_roster_item("alice", &first).await.expect("put");
    assert_eq!(
        store.roster_item("alice", "bob@x").await.expect("get"),
        Some(first)
    );

    // A replacement clears fields the new item leaves empty.
    let second = RosterItem {
        jid: "bob@x".to_owned(),
        subscription: Subscription::From,
        in_roster: true,
        ..RosterItem::default()
    };
    store.put_roster_item("alice", &second).await.expect("put");
    assert_eq!(
        store.roster_item("alice", "bob@x").await.expect("get"),
        Some(second.clone())
    );
    store
        .put_roster_item("alice", &item("carol@x"))
        .await
        .expect("put");
    let (_, mut items) = store.roster("alice").await.expect("roster");
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    assert_eq!(items, [second, item("carol@x")]);

    store
        .remove_roster_item("alice", "bob@x")
        .await
        .expect("remove");
    assert_eq!(
        store.roster_item("alice", "bob@x").await.expect("get"),
        None
    );
    assert_eq!(
        store.roster("alice").await.expect("roster").1,
        [item("carol@x")]
    );
}

/// Every put and remove returns a version above all earlier ones, and `roster` reports the
/// latest.
pub async fn roster_version_strictly_increases(store: &dyn Store) {
    let (start, items) = store.roster("alice").await.expect("roster");
    assert!(items.is_empty());
    let mut last = start;
    for step in 0..5 {
        let jid = format!("c{step}@x");
        let put = store
            .put_roster_item("alice", &item(&jid))
            .await
            .expect("put");
        assert!(put > last, "put gave {put} after {last}");
        // Replacing an identical item is still a change of version.
        let again = store
            .put_roster_item("alice", &item(&jid))
            .await
            .expect("put");
        assert!(again > put, "put gave {again} after {put}");
        let removed = store
            .remove_roster_item("alice", &jid)
            .await
            .expect("remove");
        assert!(removed > again, "remove gave {removed} after {again}");
        assert_eq!(store.roster("alice").await.expect("roster").0, removed);
        last = removed;
    }
    // Removing a contact that is not there still yields a fresh version.
    let removed = store
        .remove_roster_item("alice", "ghost@x")
        .await
        .expect("remove");
    assert!(removed > last);
}

/// One user's changes do not move another user's version or rows.
pub async fn roster_versions_are_per_owner(store: &dyn Store) {
    store
        .put_roster_item("alice", &item("carol@x"))
        .await
        .expect("put");
    let bob_before = store.roster("bob").await.expect("roster");
    assert_eq!(bob_before, (0, Vec::new()));
    store
        .put_roster_item("alice", &item("dave@x"))
        .await
        .expect("put");
    assert_eq!(store.roster("bob").await.expect("roster"), bob_before);
    assert_eq!(
        store.roster_item("bob", "carol@x").await.expect("get"),
        None
    );
}

/// Hidden bookkeeping rows come back from `roster`, and groups round-trip in order, including
/// non-ASCII and JSON-hostile names.
pub async fn roster_hidden_rows_and_unicode_groups(store: &dyn Store) {
    let hidden = RosterItem {
        jid: "stranger@x".to_owned(),
        pending_in: Some(
            "<presence type='subscribe'><status>hi \"you\"</status></presence>".to_owned(),
        ),
        in_roster: false,
        ..RosterItem::default()
    };
    let grouped = RosterItem {
        jid: "友達@例え.jp".to_owned(),
        name: Some("Ünïcödé 🦀".to_owned()),
        groups: vec![
            "Zoë's \"friends\"".to_owned(),
            "日本語".to_owned(),
            "back\\slash, comma".to_owned(),
            String::new(),
            "🦀".to_owned(),
        ],
        ..item("unused")
    };
    store.put_roster_item("alice", &hidden).await.expect("put");
    store.put_roster_item("alice", &grouped).await.expect("put");

    let (_, mut items) = store.roster("alice").await.expect("roster");
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    let mut expected = vec![hidden.clone(), grouped.clone()];
    expected.sort_by(|a, b| a.jid.cmp(&b.jid));
    assert_eq!(items, expected);
    assert_eq!(
        store
            .roster_item("alice", "友達@例え.jp")
            .await
            .expect("get"),
        Some(grouped)
    );
    assert_eq!(
        store.roster_item("alice", "stranger@x").await.expect("get"),
        Some(hidden)
    );
}

/// A re-created account must not hand out a version the deleted one already used: a client
/// that cached the old roster under that version would otherwise think it is current.
pub async fn roster_version_not_reused_after_account_recreation(store: &dyn Store) {
    store
        .create_account("alice", &credentials(1))
        .await
        .expect("create");
    let mut old = 0;
    for n in 0..3 {
        old = store
            .put_roster_item("alice", &item(&format!("c{n}@x")))
            .await
            .expect("put");
    }
    store.delete_account("alice").await.expect("delete");
    store
        .create_account("alice", &credentials(1))
        .await
        .expect("recreate");
    let new = store
        .put_roster_item("alice", &item("c0@x"))
        .await
        .expect("put");
    assert!(new > old, "new account's version {new} repeats old {old}");
}

/// Messages come back oldest first with their stamps, and a take leaves nothing behind.
pub async fn offline_order_and_take_empties(store: &dyn Store) {
    assert!(store.take_offline("alice").await.expect("take").is_empty());
    // Stamps deliberately out of order: arrival order, not stamp order, is what counts.
    let messages = [message(3), message(1), message(2), message(-5)];
    for m in &messages {
        store.push_offline("alice", m).await.expect("push");
    }
    store.push_offline("bob", &message(9)).await.expect("push");

    assert_eq!(store.take_offline("alice").await.expect("take"), messages);
    assert!(store.take_offline("alice").await.expect("take").is_empty());
    assert_eq!(store.take_offline("bob").await.expect("take"), [message(9)]);

    store
        .push_offline("alice", &message(4))
        .await
        .expect("push");
    assert_eq!(
        store.take_offline("alice").await.expect("take"),
        [message(4)]
    );
}

/// Pushing past `quota` messages fails with `Quota` and stores nothing; a take frees room.
/// Quotas are per account.
pub async fn offline_quota(store: &dyn Store, quota: u32) {
    for n in 0..i64::from(quota) {
        store
            .push_offline("alice", &message(n))
            .await
            .expect("push");
    }
    let over = store.push_offline("alice", &message(-1)).await;
    assert!(matches!(over, Err(StoreError::Quota(_))), "{over:?}");
    // Another account is not affected by Alice's full queue.
    store.push_offline("bob", &message(0)).await.expect("push");

    let taken = store.take_offline("alice").await.expect("take");
    let expected: Vec<_> = (0..i64::from(quota)).map(message).collect();
    assert_eq!(taken, expected);
    store
        .push_offline("alice", &message(-1))
        .await
        .expect("push after take");
}

/// Documents are per owner and key, and a put replaces.
pub async fn documents_put_replace_get(store: &dyn Store) {
    assert_eq!(store.document("alice", "vcard").await.expect("get"), None);
    store
        .put_document("alice", "vcard", "<vCard xmlns='vcard-temp'/>")
        .await
        .expect("put");
    store
        .put_document("alice", "storage|storage:bookmarks", "<storage/>")
        .await
        .expect("put");
    store
        .put_document("bob", "vcard", "<vCard><FN>Bob</FN></vCard>")
        .await
        .expect("put");
    store
        .put_document("alice", "vcard", "<vCard><FN>Алиса</FN></vCard>")
        .await
        .expect("replace");

    assert_eq!(
        store
            .document("alice", "vcard")
            .await
            .expect("get")
            .as_deref(),
        Some("<vCard><FN>Алиса</FN></vCard>")
    );
    assert_eq!(
        store
            .document("alice", "storage|storage:bookmarks")
            .await
            .expect("get")
            .as_deref(),
        Some("<storage/>")
    );
    assert_eq!(
        store
            .document("bob", "vcard")
            .await
            .expect("get")
            .as_deref(),
        Some("<vCard><FN>Bob</FN></vCard>")
    );
    assert_eq!(store.document("alice", "other").await.expect("get"), None);
}

/// Blocking is idempotent and sorted; unblocking some keeps the rest; an empty unblock
/// empties the list of that user only.
pub async fn blocklist_block_unblock(store: &dyn Store) {
    let jids = |list: &[&str]| list.iter().map(|j| (*j).to_owned()).collect::<Vec<_>>();
    assert!(store.blocklist("alice").await.expect("list").is_empty());

    store
        .block("alice", &jids(&["spam@x", "evil.example", "bad@y/phone"]))
        .await
        .expect("block");
    // Already blocked entries (and duplicates within one request) are ignored.
    store
        .block("alice", &jids(&["spam@x", "more@x", "more@x"]))
        .await
        .expect("block again");
    store.block("alice", &[]).await.expect("block nothing");
    store.block("bob", &jids(&["spam@x"])).await.expect("block");
    assert_eq!(
        store.blocklist("alice").await.expect("list"),
        ["bad@y/phone", "evil.example", "more@x", "spam@x"]
    );

    store
        .unblock("alice", &jids(&["spam@x", "never-blocked@x"]))
        .await
        .expect("unblock some");
    assert_eq!(
        store.blocklist("alice").await.expect("list"),
        ["bad@y/phone", "evil.example", "more@x"]
    );

    store.unblock("alice", &[]).await.expect("unblock all");
    assert!(store.blocklist("alice").await.expect("list").is_empty());
    assert_eq!(store.blocklist("bob").await.expect("list"), ["spam@x"]);
}

/// Interleaved writers on one handle all succeed and none of their writes is lost.
pub async fn concurrent_writes_through_one_handle(store: &dyn Store) {
    const EACH: i64 = 25;
    let roster_writer = async {
        for n in 0..EACH {
            store
                .put_roster_item("alice", &item(&format!("c{n}@x")))
                .await
                .expect("put");
        }
    };
    // One message per recipient, so the adapter's offline quota never comes into play.
    let offline_writer = async {
        for n in 0..EACH {
            store
                .push_offline(&format!("u{n}"), &message(n))
                .await
                .expect("push");
        }
    };
    let block_writer = async {
        for n in 0..EACH {
            store
                .block("alice", &[format!("b{n}@x")])
                .await
                .expect("block");
        }
    };
    let reader = async {
        for _ in 0..EACH {
            store.roster("alice").await.expect("roster");
        }
    };
    tokio::join!(roster_writer, offline_writer, block_writer, reader);

    let count = usize::try_from(EACH).expect("small");
    assert_eq!(store.roster("alice").await.expect("roster").1.len(), count);
    for n in 0..EACH {
        assert_eq!(
            store.take_offline(&format!("u{n}")).await.expect("take"),
            [message(n)]
        );
    }
    assert_eq!(store.blocklist("alice").await.expect("list").len(), count);
}

/// A message for the archive from `sender` to `recipient` in the conversation `conversation`,
/// with a fresh server id and a stamp and body derived from `n`.
pub fn chat(
    conversation: &str,
    sender: &str,
    recipient: &str,
    n: i64,
    client_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        server_id: new_server_id(),
        conversation: conversation.to_owned(),
        sender: sender.to_owned(),
        recipient: recipient.to_owned(),
        client_id: client_id.map(str::to_owned),
        stamp_ms: 1_700_000_000_000 + n,
        xml: format!("<message to='{recipient}'><body>{n}</body></message>"),
    }
}

/// The receipt a fresh (not duplicate) message gets at sequence `seq`.
fn fresh(message: &NewMessage, seq: u64) -> CommitReceipt {
    CommitReceipt {
        server_id: message.server_id.clone(),
        seq,
        stamp_ms: message.stamp_ms,
        duplicate: false,
    }
}

/// Each conversation numbers its messages 1, 2, 3, … across batches, in batch order, however
/// the batches mix conversations; messages without a client id are never duplicates.
pub async fn archive_sequences_are_gap_free_per_conversation(store: &dyn Store) {
    assert!(store.append(&[]).await.expect("empty batch").is_empty());
    assert_eq!(store.last_seq("a b").await.expect("last"), 0);

    let first = [
        chat("a b", "a", "b", 1, None),
        chat("a c", "a", "c", 2, None),
        chat("a b", "b", "a", 3, None),
    ];
    let receipts = store.append(&first).await.expect("append");
    assert_eq!(
        receipts,
        [
            fresh(&first[0], 1),
            fresh(&first[1], 1),
            fresh(&first[2], 2)
        ]
    );

    let second = [
        chat("a c", "c", "a", 4, None),
        chat("a b", "a", "b", 5, None),
        chat("a b", "a", "b", 6, None),
    ];
    let receipts = store.append(&second).await.expect("append");
    assert_eq!(
        receipts,
        [
            fresh(&second[0], 2),
            fresh(&second[1], 3),
            fresh(&second[2], 4)
        ]
    );
    assert_eq!(store.last_seq("a b").await.expect("last"), 4);
    assert_eq!(store.last_seq("a c").await.expect("last"), 2);

    let history = store
        .history("a b", None, None, 100)
        .await
        .expect("history");
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let bodies: Vec<&str> = history.iter().map(|m| m.xml.as_str()).collect();
    assert_eq!(
        bodies,
        [&first[0].xml, &first[2].xml, &second[1].xml, &second[2].xml]
    );
}

/// A sender's client id is committed once per conversation: a resend stores nothing and gets
/// the original receipt back. Another sender, or another conversation, may use the same id.
pub async fn archive_resend_returns_the_original_receipt(store: &dyn Store) {
    let original = chat("a b", "a", "b", 1, Some("c1"));
    let receipts = store
        .append(std::slice::from_ref(&original))
        .await
        .expect("append");
    assert_eq!(receipts, [fresh(&original, 1)]);

    // Same sender, conversation and client id, different server id, stamp and body.
    let resend = chat("a b", "a", "b", 2, Some("c1"));
    let other_sender = chat("a b", "b", "a", 3, Some("c1"));
    let other_conversation = chat("a c", "a", "c", 4, Some("c1"));
    let receipts = store
        .append(&[
            resend.clone(),
            other_sender.clone(),
            other_conversation.clone(),
        ])
        .await
        .expect("append");
    assert_eq!(
        receipts,
        [
            CommitReceipt {
                duplicate: true,
                ..fresh(&original, 1)
            },
            fresh(&other_sender, 2),
            fresh(&other_conversation, 1),
        ]
    );
    assert_eq!(
        store.message_by_id(&resend.server_id).await.expect("get"),
        None
    );
    let stored = store.history("a b", None, None, 10).await.expect("history");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].xml, original.xml);
    assert_eq!(stored[0].client_id.as_deref(), Some("c1"));
}

/// A resend inside the batch that holds the original is recognised too, and a batch mixing
/// new messages and resends of stored ones numbers only the new ones.
pub async fn archive_resend_within_one_batch(store: &dyn Store) {
    let stored = chat("a b", "a", "b", 1, Some("old"));
    store
        .append(std::slice::from_ref(&stored))
        .await
        .expect("append");

    let batch = [
        chat("a b", "a", "b", 2, Some("new")),
        chat("a b", "a", "b", 3, Some("old")),
        chat("a b", "a", "b", 4, Some("new")),
        chat("a b", "a", "b", 5, None),
        chat("a b", "a", "b", 6, Some("old")),
    ];
    let receipts = store.append(&batch).await.expect("append");
    let duplicate_of = |message: &NewMessage, seq| CommitReceipt {
        duplicate: true,
        ..fresh(message, seq)
    };
    assert_eq!(
        receipts,
        [
            fresh(&batch[0], 2),
            duplicate_of(&stored, 1),
            duplicate_of(&batch[0], 2),
            fresh(&batch[3], 3),
            duplicate_of(&stored, 1),
        ]
    );
    assert_eq!(store.last_seq("a b").await.expect("last"), 3);
    assert_eq!(
        store
            .history("a b", None, None, 10)
            .await
            .expect("history")
            .len(),
        3
    );
}

/// History returns the open range `(after, before)`, lowest first, capped at `limit`; a
/// message is found by server id with every field intact, including non-ASCII XML.
pub async fn archive_history_range_and_lookup(store: &dyn Store) {
    let batch: Vec<NewMessage> = (1..=10)
        .map(|n| chat("a b", "a", "b", n, Some(&format!("c{n}"))))
        .collect();
    store.append(&batch).await.expect("append");
    store
        .append(&[chat("x y", "x", "y", 99, None)])
        .await
        .expect("append");

    let seqs = |messages: Vec<confab_core::archive::ArchivedMessage>| {
        messages.iter().map(|m| m.seq).collect::<Vec<_>>()
    };
    let page = |after, before, limit| store.history("a b", after, before, limit);
    assert_eq!(seqs(page(None, None, 3).await.expect("h")), [1, 2, 3]);
    assert_eq!(seqs(page(Some(3), None, 3).await.expect("h")), [4, 5, 6]);
    assert_eq!(seqs(page(Some(8), None, 5).await.expect("h")), [9, 10]);
    assert_eq!(seqs(page(None, Some(3), 10).await.expect("h")), [1, 2]);
    assert_eq!(
        seqs(page(Some(2), Some(6), 10).await.expect("h")),
        [3, 4, 5]
    );
    assert!(page(Some(10), None, 10).await.expect("h").is_empty());
    assert!(page(None, None, 0).await.expect("h").is_empty());
    assert!(
        store
            .history("nobody", None, None, 10)
            .await
            .expect("h")
            .is_empty()
    );

    let special = NewMessage {
        xml: "<message><body>Grüße, 世界 🦀 \"quoted\" \\ back\nslash</body></message>".into(),
        ..chat("a b", "b", "a", 11, None)
    };
    let receipt = store
        .append(std::slice::from_ref(&special))
        .await
        .expect("append");
    assert_eq!(receipt, [fresh(&special, 11)]);
    let found = store
        .message_by_id(&special.server_id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        found,
        confab_core::archive::ArchivedMessage {
            server_id: special.server_id.clone(),
            conversation: "a b".into(),
            seq: 11,
            sender: "b".into(),
            recipient: "a".into(),
            client_id: None,
            stamp_ms: special.stamp_ms,
            xml: special.xml.clone(),
        }
    );
    assert_eq!(store.message_by_id("no-such-id").await.expect("get"), None);
}

/// Purging removes old messages and their client ids (a resend after the window is a new
/// message), keeps newer ones, and never lets a conversation reuse a sequence number.
pub async fn archive_purge_keeps_sequences_and_frees_client_ids(store: &dyn Store) {
    let batch: Vec<NewMessage> = (1..=6)
        .map(|n| chat("a b", "a", "b", n, Some(&format!("c{n}"))))
        .collect();
    store.append(&batch).await.expect("append");
    // Stamps are 1_700_000_000_000 + n: this cuts messages 1 to 3.
    let purged = store.purge_before(1_700_000_000_004).await.expect("purge");
    assert_eq!(purged, 3);
    let left = store.history("a b", None, None, 10).await.expect("history");
    assert_eq!(left.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(
        store.message_by_id(&batch[0].server_id).await.expect("get"),
        None
    );
    assert_eq!(store.last_seq("a b").await.expect("last"), 6);

    let after_window = chat("a b", "a", "b", 100, Some("c1"));
    let within_window = chat("a b", "a", "b", 101, Some("c5"));
    let receipts = store
        .append(&[after_window.clone(), within_window])
        .await
        .expect("append");
    assert_eq!(
        receipts,
        [
            fresh(&after_window, 7),
            CommitReceipt {
                duplicate: true,
                ..fresh(&batch[4], 5)
            },
        ]
    );
    assert_eq!(store.purge_before(0).await.expect("purge"), 0);
}

/// Appends racing on one handle still number every conversation 1..=N exactly once.
pub async fn archive_concurrent_appends_keep_sequences_gap_free(store: &dyn Store) {
    const WRITERS: i64 = 8;
    const BATCHES: i64 = 10;
    const CONVERSATIONS: i64 = 3;
    let writer = |w: i64| async move {
        for b in 0..BATCHES {
            let batch: Vec<NewMessage> = (0..CONVERSATIONS)
                .map(|c| chat(&format!("c{c}"), "s", "r", w * 1000 + b * 10 + c, None))
                .collect();
            store.append(&batch).await.expect("append");
        }
    };
    futures_join_all((0..WRITERS).map(writer)).await;
    for c in 0..CONVERSATIONS {
        let conversation = format!("c{c}");
        let history = store
            .history(&conversation, None, None, 10_000)
            .await
            .expect("history");
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (1..=u64::try_from(WRITERS * BATCHES).expect("small")).collect();
        assert_eq!(seqs, expected, "{conversation}");
    }
}

/// Runs futures concurrently on the current task (this module does not depend on `futures`).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
