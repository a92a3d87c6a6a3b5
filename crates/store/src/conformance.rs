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

use confab_core::archive::{
    ArchiveDefault, ArchivePage, ArchivePrefs, ArchiveQuery, CommitReceipt, NewMessage, Page,
    new_server_id,
};
use confab_core::store::{
    OfflineMessage, RosterItem, Store, StoreError, StoredCredentials, Subscription, TokenInfo,
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
            archive_query_pages_forward_and_backward,
            archive_query_filters_by_with_time_ids_and_prefs,
            archive_query_is_per_owner_and_cursors_must_be_its_own,
            archive_prefs_round_trip_and_go_with_the_account,
            read_state_moves_forward_only,
            read_state_unread_count_and_client_id_lookup,
            tokens_put_lookup_and_revoke,
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
        let owner = format!("{name}@x");
        store.mark_read(&owner, "conv", 5).await.expect("read");
        let token = TokenInfo {
            owner: owner.clone(),
            full_jid: format!("{owner}/r"),
            session: u64::from(seed),
            created_ms: 1,
            expires_ms: i64::MAX,
        };
        store.put_token(&[seed; 32], &token).await.expect("token");
    }

    store.delete_account("alice").await.expect("delete");
    assert_eq!(
        store.read_position("alice@x", "conv").await.expect("read"),
        0
    );
    assert_eq!(store.token_owner(&[1; 32]).await.expect("token"), None);
    assert_eq!(store.read_position("bob@x", "conv").await.expect("read"), 5);
    assert!(store.token_owner(&[2; 32]).await.expect("token").is_some());

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
        counts_unread: true,
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
        counts_unread: true,
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

/// Appends one direct message per `(sender, recipient)` pair, in order, stamped
/// `1_700_000_000_000 + index`, and returns their server ids (ascending, as created).
async fn direct_messages(store: &dyn Store, pairs: &[(&str, &str)]) -> Vec<String> {
    let batch: Vec<NewMessage> = pairs
        .iter()
        .enumerate()
        .map(|(n, (sender, recipient))| {
            // The key `direct_conversation` makes, without parsing JIDs here.
            let (low, high) = if sender <= recipient {
                (sender, recipient)
            } else {
                (recipient, sender)
            };
            let conversation = format!("{low} {high}");
            chat(&conversation, sender, recipient, n as i64, None)
        })
        .collect();
    store.append(&batch).await.expect("append");
    batch.into_iter().map(|m| m.server_id).collect()
}

/// The server ids of a page.
fn ids_of(page: &ArchivePage) -> Vec<String> {
    page.messages.iter().map(|m| m.server_id.clone()).collect()
}

/// A query over `owner`'s archive returning up to `limit` messages.
fn query(owner: &str, limit: u32) -> ArchiveQuery {
    ArchiveQuery {
        owner: owner.to_owned(),
        limit,
        ..ArchiveQuery::default()
    }
}

/// RSM paging over an owner's archive: forward from the start with `after`, backward from
/// the end with `before`, `complete` exactly on the page holding the last (first) match, and
/// the count ignoring cursors.
pub async fn archive_query_pages_forward_and_backward(store: &dyn Store) {
    let a = "a@x";
    // Seven messages in a's archive (sent and received, with two contacts, one to itself)
    // interleaved with two foreign ones.
    let ids = direct_messages(
        store,
        &[
            (a, "b@x"),
            ("b@x", a),
            ("c@x", "d@x"),
            (a, "c@x"),
            (a, a),
            ("c@x", a),
            ("d@x", "b@x"),
            ("b@x", a),
            (a, "b@x"),
        ],
    )
    .await;
    let mine: Vec<String> = [0, 1, 3, 4, 5, 7, 8]
        .iter()
        .map(|&i| ids[i].clone())
        .collect();

    let all = store.query_archive(&query(a, 50)).await.expect("query");
    assert_eq!(ids_of(&all), mine);
    assert!(all.complete);
    assert_eq!(all.count, None);
    assert_eq!(all.first_id(), Some(mine[0].as_str()));
    assert_eq!(all.last_id(), Some(mine[6].as_str()));

    // Forward, three at a time.
    let mut forward = query(a, 3);
    forward.count = true;
    let first = store.query_archive(&forward).await.expect("query");
    assert_eq!(ids_of(&first), mine[0..3]);
    assert!(!first.complete);
    assert_eq!(first.count, Some(7));
    forward.after_id = first.last_id().map(str::to_owned);
    let second = store.query_archive(&forward).await.expect("query");
    assert_eq!(ids_of(&second), mine[3..6]);
    assert!(!second.complete);
    assert_eq!(second.count, Some(7), "the count ignores cursors");
    forward.after_id = second.last_id().map(str::to_owned);
    let third = store.query_archive(&forward).await.expect("query");
    assert_eq!(ids_of(&third), mine[6..7]);
    assert!(third.complete);
    // Exactly a page left: complete on that page, not one later.
    let mut exact = query(a, 1);
    exact.after_id = Some(mine[5].clone());
    let last = store.query_archive(&exact).await.expect("query");
    assert_eq!(ids_of(&last), mine[6..7]);
    assert!(last.complete);
    exact.after_id = Some(mine[6].clone());
    let beyond = store.query_archive(&exact).await.expect("query");
    assert!(beyond.messages.is_empty() && beyond.complete);
    assert_eq!(beyond.first_id(), None);

    // Backward from the end (`<before/>` without a value), three at a time.
    let mut backward = ArchiveQuery {
        page: Page::Backward,
        ..query(a, 3)
    };
    let last_page = store.query_archive(&backward).await.expect("query");
    assert_eq!(ids_of(&last_page), mine[4..7], "oldest first within a page");
    assert!(!last_page.complete);
    backward.before_id = last_page.first_id().map(str::to_owned);
    let middle = store.query_archive(&backward).await.expect("query");
    assert_eq!(ids_of(&middle), mine[1..4]);
    assert!(!middle.complete);
    backward.before_id = middle.first_id().map(str::to_owned);
    let start = store.query_archive(&backward).await.expect("query");
    assert_eq!(ids_of(&start), mine[0..1]);
    assert!(start.complete);

    // Both cursors: the open range between them, from either end.
    let mut between = query(a, 2);
    between.after_id = Some(mine[1].clone());
    between.before_id = Some(mine[6].clone());
    let page = store.query_archive(&between).await.expect("query");
    assert_eq!(ids_of(&page), mine[2..4]);
    assert!(!page.complete);
    between.page = Page::Backward;
    let page = store.query_archive(&between).await.expect("query");
    assert_eq!(ids_of(&page), mine[4..6]);
    assert!(!page.complete);

    // A zero limit only counts; the limit is capped.
    let mut count_only = query(a, 0);
    count_only.count = true;
    let counted = store.query_archive(&count_only).await.expect("query");
    assert!(counted.messages.is_empty());
    assert!(!counted.complete);
    assert_eq!(counted.count, Some(7));
    let huge = store
        .query_archive(&query(a, u32::MAX))
        .await
        .expect("query");
    assert_eq!(ids_of(&huge), mine);
    assert!(
        store
            .query_archive(&query("nobody@x", 10))
            .await
            .expect("query")
            .complete
    );
}

/// `with` narrows to one conversation, `start`/`end` to a closed time range, `ids` to given
/// messages of the owner's archive; `exclude` and `only` (preferences) hide conversations.
pub async fn archive_query_filters_by_with_time_ids_and_prefs(store: &dyn Store) {
    let a = "a@x";
    let ids = direct_messages(
        store,
        &[
            (a, "b@x"),     // 0
            ("c@x", a),     // 1
            ("b@x", a),     // 2
            (a, a),         // 3
            (a, "c@x"),     // 4
            ("b@x", "c@x"), // 5: foreign
            (a, "b@x"),     // 6
        ],
    )
    .await;
    let pick = |indexes: &[usize]| indexes.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();
    let run = |q: ArchiveQuery| async move { store.query_archive(&q).await.expect("query") };

    let with_b = run(ArchiveQuery {
        with: Some("b@x".into()),
        count: true,
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&with_b), pick(&[0, 2, 6]));
    assert_eq!(with_b.count, Some(3));
    let with_self = run(ArchiveQuery {
        with: Some(a.into()),
        ..query(a, 10)
    })
    .await;
    assert_eq!(
        ids_of(&with_self),
        pick(&[3]),
        "a note to self appears once"
    );
    let with_b_paged = run(ArchiveQuery {
        with: Some("b@x".into()),
        after_id: Some(ids[0].clone()),
        ..query(a, 1)
    })
    .await;
    assert_eq!(ids_of(&with_b_paged), pick(&[2]));
    assert!(!with_b_paged.complete);

    // Stamps are 1_700_000_000_000 + index; both bounds are inclusive.
    let base = 1_700_000_000_000;
    let range = run(ArchiveQuery {
        start_ms: Some(base + 1),
        end_ms: Some(base + 4),
        count: true,
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&range), pick(&[1, 2, 3, 4]));
    assert_eq!(range.count, Some(4));
    let since = run(ArchiveQuery {
        start_ms: Some(base + 4),
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&since), pick(&[4, 6]));
    let until = run(ArchiveQuery {
        end_ms: Some(base + 1),
        page: Page::Backward,
        ..query(a, 1)
    })
    .await;
    assert_eq!(ids_of(&until), pick(&[1]));
    assert!(!until.complete);

    // Specific ids: only the owner's, in server id order; unknown ids are skipped.
    let wanted = vec![
        ids[6].clone(),
        ids[5].clone(),
        "no-such-id".into(),
        ids[1].clone(),
    ];
    let chosen = run(ArchiveQuery {
        ids: Some(wanted.clone()),
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&chosen), pick(&[1, 6]));
    assert!(chosen.complete);
    let chosen_with = run(ArchiveQuery {
        ids: Some(wanted.clone()),
        with: Some("c@x".into()),
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&chosen_with), pick(&[1]));
    let chosen_page = run(ArchiveQuery {
        ids: Some(wanted),
        ..query(a, 1)
    })
    .await;
    assert_eq!(ids_of(&chosen_page), pick(&[1]));
    assert!(!chosen_page.complete);

    // Preference filters apply to the other party of either direction.
    let without_b = run(ArchiveQuery {
        exclude: vec!["b@x".into()],
        count: true,
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&without_b), pick(&[1, 3, 4]));
    assert_eq!(without_b.count, Some(3));
    let only_c = run(ArchiveQuery {
        only: Some(vec!["c@x".into()]),
        ..query(a, 10)
    })
    .await;
    assert_eq!(ids_of(&only_c), pick(&[1, 4]));
    let nothing = run(ArchiveQuery {
        only: Some(Vec::new()),
        ..query(a, 10)
    })
    .await;
    assert!(nothing.messages.is_empty() && nothing.complete);
}

/// Nobody sees another owner's messages, and a cursor naming a message outside the owner's
/// archive (foreign, purged or made up) is `NotFound`.
pub async fn archive_query_is_per_owner_and_cursors_must_be_its_own(store: &dyn Store) {
    let ids = direct_messages(store, &[("a@x", "b@x"), ("c@x", "d@x"), ("b@x", "a@x")]).await;
    let c_view = store.query_archive(&query("c@x", 10)).await.expect("query");
    assert_eq!(ids_of(&c_view), [ids[1].clone()]);
    let e_view = store.query_archive(&query("e@x", 10)).await.expect("query");
    assert!(e_view.messages.is_empty());

    for cursor in [ids[1].clone(), "no-such-id".to_owned()] {
        let after = store
            .query_archive(&ArchiveQuery {
                after_id: Some(cursor.clone()),
                ..query("a@x", 10)
            })
            .await;
        assert!(matches!(after, Err(StoreError::NotFound)), "{after:?}");
        let before = store
            .query_archive(&ArchiveQuery {
                before_id: Some(cursor),
                page: Page::Backward,
                ..query("a@x", 10)
            })
            .await;
        assert!(matches!(before, Err(StoreError::NotFound)), "{before:?}");
    }
    // A foreign id asked for by `ids` is simply not there.
    let foreign = store
        .query_archive(&ArchiveQuery {
            ids: Some(vec![ids[1].clone()]),
            ..query("a@x", 10)
        })
        .await
        .expect("query");
    assert!(foreign.messages.is_empty());

    store.purge_before(1_700_000_000_001).await.expect("purge");
    let purged = store
        .query_archive(&ArchiveQuery {
            after_id: Some(ids[0].clone()),
            ..query("a@x", 10)
        })
        .await;
    assert!(matches!(purged, Err(StoreError::NotFound)), "{purged:?}");
    let left = store.query_archive(&query("a@x", 10)).await.expect("query");
    assert_eq!(ids_of(&left), [ids[2].clone()]);
}

/// Preferences default to `always` with empty lists, are replaced whole (sorted, repeats
/// dropped, `never` winning over `always`), are per owner, and go when the account goes.
pub async fn archive_prefs_round_trip_and_go_with_the_account(store: &dyn Store) {
    assert_eq!(
        store.archive_prefs("alice@x").await.expect("prefs"),
        ArchivePrefs::default()
    );
    let prefs = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec!["z@x".into(), "b@x".into(), "b@x".into(), "n@x".into()],
        never: vec!["n@x".into(), "m@x".into()],
    };
    store
        .set_archive_prefs("alice@x", &prefs)
        .await
        .expect("set");
    let stored = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec!["b@x".into(), "z@x".into()],
        never: vec!["m@x".into(), "n@x".into()],
    };
    assert_eq!(store.archive_prefs("alice@x").await.expect("prefs"), stored);
    let never = ArchivePrefs {
        default: ArchiveDefault::Never,
        ..ArchivePrefs::default()
    };
    store
        .set_archive_prefs("alice2@x", &never)
        .await
        .expect("set");
    assert_eq!(store.archive_prefs("alice@x").await.expect("prefs"), stored);
    assert_eq!(store.archive_prefs("alice2@x").await.expect("prefs"), never);

    store
        .create_account("alice", &credentials(1))
        .await
        .expect("create");
    store.delete_account("alice").await.expect("delete");
    assert_eq!(
        store.archive_prefs("alice@x").await.expect("prefs"),
        ArchivePrefs::default()
    );
    assert_eq!(
        store.archive_prefs("alice2@x").await.expect("prefs"),
        never,
        "another account sharing the prefix keeps its preferences"
    );
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

/// Read positions only move forward, per owner and conversation, and list sorted.
pub async fn read_state_moves_forward_only(store: &dyn Store) {
    assert_eq!(store.read_position("a@x", "a@x b@x").await.expect("get"), 0);
    assert!(store.read_positions("a@x").await.expect("list").is_empty());
    assert_eq!(store.mark_read("a@x", "a@x b@x", 5).await.expect("mark"), 5);
    // Backwards is ignored and answered with the position kept.
    assert_eq!(store.mark_read("a@x", "a@x b@x", 3).await.expect("mark"), 5);
    assert_eq!(store.read_position("a@x", "a@x b@x").await.expect("get"), 5);
    assert_eq!(store.mark_read("a@x", "a@x b@x", 9).await.expect("mark"), 9);
    assert_eq!(store.mark_read("a@x", "a@x c@x", 2).await.expect("mark"), 2);
    // Another owner of the same conversation has a position of its own.
    assert_eq!(store.read_position("b@x", "a@x b@x").await.expect("get"), 0);
    assert_eq!(store.mark_read("b@x", "a@x b@x", 1).await.expect("mark"), 1);
    assert_eq!(
        store.read_positions("a@x").await.expect("list"),
        [("a@x b@x".to_owned(), 9), ("a@x c@x".to_owned(), 2)]
    );
    assert_eq!(store.read_position("a@x", "a@x b@x").await.expect("get"), 9);
}

/// Unread counts the peer's messages above the read position; client ids find sequences.
pub async fn read_state_unread_count_and_client_id_lookup(store: &dyn Store) {
    let conv = "a@x b@x";
    store
        .append(&[
            chat(conv, "b@x", "a@x", 1, Some("b1")),
            chat(conv, "a@x", "b@x", 2, Some("a1")),
            chat(conv, "b@x", "a@x", 3, Some("b2")),
            chat(conv, "b@x", "a@x", 4, None),
            chat("a@x c@x", "c@x", "a@x", 5, Some("b2")),
        ])
        .await
        .expect("append");
    assert_eq!(store.unread_count("a@x", conv).await.expect("count"), 3);
    assert_eq!(store.unread_count("b@x", conv).await.expect("count"), 1);
    assert_eq!(
        store.unread_count("a@x", "a@x c@x").await.expect("count"),
        1
    );
    assert_eq!(store.unread_count("a@x", "nobody").await.expect("count"), 0);
    store.mark_read("a@x", conv, 3).await.expect("mark");
    assert_eq!(store.unread_count("a@x", conv).await.expect("count"), 1);
    store.mark_read("a@x", conv, 4).await.expect("mark");
    assert_eq!(store.unread_count("a@x", conv).await.expect("count"), 0);
    assert_eq!(store.unread_count("b@x", conv).await.expect("count"), 1);
    // A marker or receipt from the peer is archived but is not news.
    let marker = NewMessage {
        counts_unread: false,
        ..chat(conv, "b@x", "a@x", 6, Some("m1"))
    };
    store.append(&[marker]).await.expect("append marker");
    assert_eq!(store.unread_count("a@x", conv).await.expect("count"), 0);
    assert_eq!(store.last_seq(conv).await.expect("last"), 5);

    let lookup = |sender: &'static str, id: &'static str| async move {
        store
            .seq_by_client_id(conv, sender, id)
            .await
            .expect("lookup")
    };
    assert_eq!(lookup("b@x", "b1").await, Some(1));
    assert_eq!(lookup("b@x", "b2").await, Some(3));
    assert_eq!(lookup("a@x", "a1").await, Some(2));
    // Client ids are per sender and per conversation.
    assert_eq!(lookup("a@x", "b1").await, None);
    assert_eq!(lookup("b@x", "zz").await, None);
    assert_eq!(
        store
            .seq_by_client_id("a@x c@x", "c@x", "b2")
            .await
            .expect("lookup"),
        Some(1)
    );
}

/// Token hashes are unique keys; revocation is per session (not per full JID) or total.
pub async fn tokens_put_lookup_and_revoke(store: &dyn Store) {
    let info = |full_jid: &str, session: u64| TokenInfo {
        owner: "a@x".to_owned(),
        full_jid: full_jid.to_owned(),
        session,
        created_ms: 1_700_000_000_000,
        expires_ms: 1_700_086_400_000,
    };
    let (h1, h2, h3, h4) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
    assert_eq!(store.token_owner(&h1).await.expect("get"), None);
    store
        .put_token(&h1, &info("a@x/phone", 7))
        .await
        .expect("put");
    store
        .put_token(&h2, &info("a@x/phone", 7))
        .await
        .expect("put");
    // The same full JID bound again by a later session, and an id beyond i64::MAX.
    store
        .put_token(&h3, &info("a@x/phone", 8))
        .await
        .expect("put");
    store
        .put_token(&h4, &info("a@x/laptop", u64::MAX))
        .await
        .expect("put");
    assert!(matches!(
        store.put_token(&h1, &info("a@x/laptop", 9)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.token_owner(&h1).await.expect("get"),
        Some(info("a@x/phone", 7))
    );
    assert_eq!(
        store.token_owner(&h4).await.expect("get"),
        Some(info("a@x/laptop", u64::MAX))
    );

    assert_eq!(
        store
            .revoke_for_session("a@x/phone", 7)
            .await
            .expect("revoke"),
        2
    );
    assert_eq!(store.token_owner(&h1).await.expect("get"), None);
    assert_eq!(store.token_owner(&h2).await.expect("get"), None);
    assert_eq!(
        store.token_owner(&h3).await.expect("get"),
        Some(info("a@x/phone", 8))
    );
    assert_eq!(
        store
            .revoke_for_session("a@x/phone", 7)
            .await
            .expect("revoke"),
        0
    );
    assert_eq!(store.revoke_all().await.expect("revoke all"), 2);
    assert_eq!(store.token_owner(&h3).await.expect("get"), None);
    assert_eq!(store.token_owner(&h4).await.expect("get"), None);
}
