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
    AmendKind, Amendment, ArchiveDefault, ArchivePage, ArchivePrefs, ArchiveQuery, CommitReceipt,
    NewMessage, Page, new_server_id,
};
use confab_core::client_view::{
    ConversationCursor, ConversationPage, ConversationSummary, DocumentChange, MAX_SYNC_CHANGES,
    SyncError, SyncFeed, SyncToken,
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
            offline_references_read_the_archive,
            offline_messages_flagged_at_commit_are_taken_once,
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
            archive_group_conversation_pages_and_stays_out_of_owner_archives,
            archive_failed_batch_leaves_no_trace_in_queries,
            archive_prefs_round_trip_and_go_with_the_account,
            archive_find_message_by_server_or_client_id,
            archive_amend_keeps_every_version_and_retraction_is_final,
            read_state_moves_forward_only,
            read_state_unread_count_and_client_id_lookup,
            tokens_put_lookup_and_revoke,
            client_view_conversations_newest_first_with_unread_counts,
            client_view_sync_snapshot_then_incremental,
            client_view_sync_token_reuse_and_bad_tokens,
            client_view_sync_pages_at_position_boundaries,
            client_view_sync_never_skips_interleaved_writes,
            client_view_rows_go_with_the_account,
            apps_create_list_verify_delete,
            apps_put_conflict_and_hash_round_trip,
            rooms_put_replace_list_delete,
            rooms_affiliations_set_remove_and_go_with_the_room,
            groups_list_and_sync_follow_membership_and_metadata,
            groups_mentions_read_positions_and_readers,
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
        archived: None,
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

/// Archived messages are queued by reference: a take reads them from the archive, in queue
/// order among copies; a reference must name a message to that account; references do not
/// count against the quota; a reference whose message was purged is dropped.
pub async fn offline_references_read_the_archive(store: &dyn Store) {
    let first = chat("alice@x bob@x", "alice@x", "bob@x", 1, None);
    let second = chat("alice@x bob@x", "alice@x", "bob@x", 2, None);
    let to_alice = chat("alice@x bob@x", "bob@x", "alice@x", 3, None);
    store
        .append(&[first.clone(), second.clone(), to_alice.clone()])
        .await
        .expect("append");

    store
        .push_offline_archived("bob", &first.server_id)
        .await
        .expect("ref");
    store.push_offline("bob", &message(7)).await.expect("copy");
    store
        .push_offline_archived("bob", &second.server_id)
        .await
        .expect("ref");
    // Not bob's message, not a message at all, and a name that merely starts like bob's.
    for (owner, id) in [
        ("bob", to_alice.server_id.as_str()),
        ("bob", "no-such-id"),
        ("bo", first.server_id.as_str()),
    ] {
        let refused = store.push_offline_archived(owner, id).await;
        assert!(
            matches!(refused, Err(StoreError::NotFound)),
            "{owner} {id}: {refused:?}"
        );
    }

    let taken = store.take_offline("bob").await.expect("take");
    let archived = |m: &NewMessage| OfflineMessage {
        xml: m.xml.clone(),
        stamp_ms: m.stamp_ms,
        archived: Some(m.server_id.clone()),
    };
    assert_eq!(taken, [archived(&first), message(7), archived(&second)]);
    assert!(store.take_offline("bob").await.expect("take").is_empty());
    assert!(store.take_offline("bo").await.expect("take").is_empty());

    // The archive's retention reaches the queue: nothing dangles, nothing fails.
    store
        .push_offline_archived("bob", &first.server_id)
        .await
        .expect("ref");
    store.purge_before(i64::MAX).await.expect("purge");
    assert!(store.take_offline("bob").await.expect("take").is_empty());
}

/// A message committed `for_later` is in its recipient's offline queue from the commit on,
/// merged by time with queued entries, taken once (the account's cursor moves past it), and
/// can be queued again by reference after it was taken (a replay that did not reach the
/// session); queueing one still ahead of the cursor does not double it.
pub async fn offline_messages_flagged_at_commit_are_taken_once(store: &dyn Store) {
    let later = |n: i64, to: &str| NewMessage {
        for_later: true,
        ..chat("alice@x bob@x", "alice@x", to, n, None)
    };
    let first = later(10, "bob@x");
    let live = chat("alice@x bob@x", "alice@x", "bob@x", 11, None);
    let second = later(30, "bob@x");
    // A localpart that merely starts like bob's is another account.
    let other = later(12, "bobby@x");
    store
        .append(&[first.clone(), live, other.clone()])
        .await
        .expect("append");
    let copy = OfflineMessage {
        stamp_ms: 1_700_000_000_020,
        ..message(20)
    };
    store.push_offline("bob", &copy).await.expect("copy");
    store
        .append(std::slice::from_ref(&second))
        .await
        .expect("append");
    // Already queued by its commit: accepted, not doubled.
    store
        .push_offline_archived("bob", &second.server_id)
        .await
        .expect("ref");

    let archived = |m: &NewMessage| OfflineMessage {
        xml: m.xml.clone(),
        stamp_ms: m.stamp_ms,
        archived: Some(m.server_id.clone()),
    };
    assert_eq!(
        store.take_offline("bob").await.expect("take"),
        [archived(&first), copy, archived(&second)]
    );
    assert!(store.take_offline("bob").await.expect("take").is_empty());
    assert_eq!(
        store.take_offline("bobby").await.expect("take"),
        [archived(&other)]
    );

    // Put back after a replay that failed: it comes once more.
    store
        .push_offline_archived("bob", &first.server_id)
        .await
        .expect("requeue");
    assert_eq!(
        store.take_offline("bob").await.expect("take"),
        [archived(&first)]
    );
    let third = later(40, "bob@x");
    store
        .append(std::slice::from_ref(&third))
        .await
        .expect("append");
    assert_eq!(
        store.take_offline("bob").await.expect("take"),
        [archived(&third)]
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

    // References into the archive are not copies: a full queue still takes them.
    for n in 0..i64::from(quota) {
        let _ = store.push_offline("bob", &message(n)).await;
    }
    let archived = chat("alice@x bob@x", "alice@x", "bob@x", 1, None);
    store
        .append(std::slice::from_ref(&archived))
        .await
        .expect("append");
    store
        .push_offline_archived("bob", &archived.server_id)
        .await
        .expect("reference past the quota");
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
        for_later: false,
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
        for_later: false,
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

/// Recall names a message by its server id, or by the client id its sender gave it, and
/// only within one conversation.
pub async fn archive_find_message_by_server_or_client_id(store: &dyn Store) {
    let first = chat("a b", "a", "b", 1, Some("c1"));
    let other = chat("a c", "a", "c", 2, Some("c1"));
    // A message whose client id is the first one's server id: the server id still wins.
    let lookalike = chat("a b", "b", "a", 3, Some(&first.server_id));
    store
        .append(&[first.clone(), other.clone(), lookalike.clone()])
        .await
        .expect("append");
    let found = |conversation: &'static str, sender: Option<&'static str>, id: String| async move {
        store
            .find_message(conversation, sender, &id)
            .await
            .expect("find")
            .map(|m| m.server_id)
    };
    assert_eq!(
        found("a b", None, first.server_id.clone()).await,
        Some(first.server_id.clone())
    );
    assert_eq!(
        found("a b", Some("a"), "c1".into()).await,
        Some(first.server_id.clone())
    );
    assert_eq!(
        found("a c", Some("a"), "c1".into()).await,
        Some(other.server_id.clone())
    );
    // Client ids are the sender's own: another sender's, or none given, finds nothing.
    assert_eq!(found("a b", Some("b"), "c1".into()).await, None);
    assert_eq!(found("a b", None, "c1".into()).await, None);
    // Another conversation's server id is not this conversation's message.
    assert_eq!(found("a b", None, other.server_id.clone()).await, None);
    assert_eq!(
        found("a b", Some("b"), first.server_id.clone()).await,
        Some(first.server_id.clone())
    );
}

/// Corrections replace the copy every reader sees and keep each replaced copy in order;
/// a retraction leaves a tombstone and refuses every later amendment.
pub async fn archive_amend_keeps_every_version_and_retraction_is_final(store: &dyn Store) {
    let original = chat("a b", "a", "b", 1, Some("c1"));
    let untouched = chat("a b", "a", "b", 2, Some("c2"));
    store
        .append(&[original.clone(), untouched.clone()])
        .await
        .expect("append");
    let id = original.server_id.clone();
    assert_eq!(store.message_versions(&id).await.expect("versions"), []);
    let amend = |kind: AmendKind, n: i64, xml: &str| Amendment {
        server_id: id.clone(),
        kind,
        by: "a".into(),
        stamp_ms: 1_800_000_000_000 + n,
        xml: xml.into(),
    };
    store
        .amend(&amend(
            AmendKind::Correct,
            1,
            "<message><body>one</body></message>",
        ))
        .await
        .expect("first correction");
    store
        .amend(&amend(
            AmendKind::Correct,
            2,
            "<message><body>two</body></message>",
        ))
        .await
        .expect("second correction");
    let visible = store
        .message_by_id(&id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(visible.xml, "<message><body>two</body></message>");
    assert_eq!((visible.seq, visible.stamp_ms), (1, original.stamp_ms));
    let history = store.history("a b", None, None, 10).await.expect("history");
    assert_eq!(history[0].xml, visible.xml);
    assert_eq!(history[1].xml, untouched.xml);

    store
        .amend(&amend(
            AmendKind::Retract,
            3,
            "<message><retracted/></message>",
        ))
        .await
        .expect("retraction");
    let page = store
        .query_archive(&ArchiveQuery {
            owner: "b".into(),
            limit: 10,
            ..ArchiveQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(page.messages[0].xml, "<message><retracted/></message>");
    assert_eq!(page.messages[1].xml, untouched.xml);

    // Final: neither a correction nor a second retraction changes anything.
    for kind in [AmendKind::Correct, AmendKind::Retract] {
        let refused = store
            .amend(&amend(kind, 4, "<message><body>back</body></message>"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict)),
            "{kind:?}: {refused:?}"
        );
    }
    assert_eq!(
        store
            .message_by_id(&id)
            .await
            .expect("get")
            .expect("stored")
            .xml,
        "<message><retracted/></message>"
    );
    let versions = store.message_versions(&id).await.expect("versions");
    let summary: Vec<_> = versions
        .iter()
        .map(|v| (v.version, v.replaced_by, v.stamp_ms, v.xml.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                0,
                AmendKind::Correct,
                1_800_000_000_001,
                original.xml.as_str()
            ),
            (
                1,
                AmendKind::Correct,
                1_800_000_000_002,
                "<message><body>one</body></message>"
            ),
            (
                2,
                AmendKind::Retract,
                1_800_000_000_003,
                "<message><body>two</body></message>"
            ),
        ]
    );
    assert!(versions.iter().all(|v| v.by == "a"));
    let missing = Amendment {
        server_id: "no-such-id".into(),
        ..amend(AmendKind::Correct, 5, "<message/>")
    };
    let missing = store.amend(&missing).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // Retention takes the audit trail with the message.
    store.purge_before(1_700_000_000_002).await.expect("purge");
    assert_eq!(store.message_versions(&id).await.expect("versions"), []);
    assert_eq!(
        store
            .message_versions(&untouched.server_id)
            .await
            .expect("versions"),
        []
    );
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

/// A batch that fails as a whole leaves nothing behind that later queries could trip over: a
/// party it was the first to name is found, and only found, with the messages that commit
/// later (a backend that remembers derived keys, such as JID ids, across batches must not keep
/// those of a batch that rolled back).
pub async fn archive_failed_batch_leaves_no_trace_in_queries(store: &dyn Store) {
    let first = chat("a@x z@x", "a@x", "z@x", 1, Some("c1"));
    store
        .append(std::slice::from_ref(&first))
        .await
        .expect("append");
    // `n1@x` appears for the first time in a batch that fails on a reused server id.
    let mut reused = chat("a@x z@x", "a@x", "z@x", 2, None);
    reused.server_id = first.server_id.clone();
    let failed = store
        .append(&[chat("a@x n1@x", "a@x", "n1@x", 3, None), reused])
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict)), "{failed:?}");

    // Now another new party commits first, then `n1@x`.
    let to_n2 = chat("a@x n2@x", "a@x", "n2@x", 4, None);
    let to_n1 = chat("a@x n1@x", "a@x", "n1@x", 5, None);
    store
        .append(&[to_n2.clone(), to_n1.clone()])
        .await
        .expect("append");
    for (with, expected) in [("n1@x", &to_n1), ("n2@x", &to_n2)] {
        let page = store
            .query_archive(&ArchiveQuery {
                with: Some(with.to_owned()),
                count: true,
                ..query("a@x", 10)
            })
            .await
            .expect("query");
        assert_eq!(ids_of(&page), [expected.server_id.as_str()], "with {with}");
        assert_eq!(page.count, Some(1), "with {with}");
        let theirs = store.query_archive(&query(with, 10)).await.expect("query");
        assert_eq!(
            ids_of(&theirs),
            [expected.server_id.as_str()],
            "{with}'s archive"
        );
    }
    let excluded = store
        .query_archive(&ArchiveQuery {
            exclude: vec!["n1@x".to_owned()],
            ..query("a@x", 10)
        })
        .await
        .expect("query");
    assert_eq!(
        ids_of(&excluded),
        [first.server_id.clone(), to_n2.server_id.clone()]
    );
    let only = store
        .query_archive(&ArchiveQuery {
            only: Some(vec!["n1@x".to_owned(), "nobody@x".to_owned()]),
            ..query("a@x", 10)
        })
        .await
        .expect("query");
    assert_eq!(ids_of(&only), [to_n1.server_id.as_str()]);
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

/// A group conversation (a room's archive) pages by sequence both ways with server id
/// cursors, filters by sender, time and ids, counts, refuses foreign cursors, dedups per
/// sender, and is not part of any account's own archive.
pub async fn archive_group_conversation_pages_and_stays_out_of_owner_archives(store: &dyn Store) {
    let room = "group:room@conference.x";
    let batch: Vec<NewMessage> = (1..=5)
        .map(|n| {
            let sender = if n % 2 == 1 { "alice@x" } else { "bob@x" };
            chat(room, sender, "room@conference.x", n, Some(&format!("c{n}")))
        })
        .collect();
    let receipts = store.append(&batch).await.expect("append");
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    // The same client id from the same sender in the room is a resend; from another, not.
    let resend = chat(room, "alice@x", "room@conference.x", 9, Some("c1"));
    let other = chat(room, "bob@x", "room@conference.x", 10, Some("c1"));
    let receipts = store
        .append(&[resend, other.clone()])
        .await
        .expect("append");
    assert_eq!(receipts[0].server_id, batch[0].server_id);
    assert!(receipts[0].duplicate);
    assert_eq!(receipts[1], fresh(&other, 6));
    let mut ids: Vec<String> = batch.iter().map(|m| m.server_id.clone()).collect();
    ids.push(other.server_id.clone());
    // A one-to-one message elsewhere is not in the room's archive.
    let direct = chat("alice@x bob@x", "alice@x", "bob@x", 20, None);
    store
        .append(std::slice::from_ref(&direct))
        .await
        .expect("append");

    let page_ids = |page: &ArchivePage| -> Vec<String> {
        page.messages.iter().map(|m| m.server_id.clone()).collect()
    };
    let query = |f: &dyn Fn(&mut ArchiveQuery)| {
        let mut query = ArchiveQuery {
            limit: 2,
            ..ArchiveQuery::default()
        };
        f(&mut query);
        query
    };
    let first = store
        .query_conversation(room, &query(&|q| q.count = true))
        .await
        .expect("first page");
    assert_eq!(page_ids(&first), ids[..2]);
    assert!(!first.complete);
    assert_eq!(first.count, Some(6));
    let next = store
        .query_conversation(room, &query(&|q| q.after_id = Some(ids[1].clone())))
        .await
        .expect("next page");
    assert_eq!(page_ids(&next), ids[2..4]);
    let last = store
        .query_conversation(room, &query(&|q| q.page = Page::Backward))
        .await
        .expect("last page");
    assert_eq!(page_ids(&last), ids[4..]);
    assert!(!last.complete);
    let before = store
        .query_conversation(
            room,
            &query(&|q| {
                q.page = Page::Backward;
                q.before_id = Some(ids[2].clone());
            }),
        )
        .await
        .expect("before page");
    assert_eq!(page_ids(&before), ids[..2]);
    assert!(before.complete);

    let by_bob = store
        .query_conversation(
            room,
            &query(&|q| {
                q.limit = 50;
                q.with = Some("bob@x".into());
            }),
        )
        .await
        .expect("with");
    assert_eq!(
        page_ids(&by_bob),
        [ids[1].clone(), ids[3].clone(), ids[5].clone()]
    );
    let in_time = store
        .query_conversation(
            room,
            &query(&|q| {
                q.limit = 50;
                q.start_ms = Some(batch[1].stamp_ms);
                q.end_ms = Some(batch[2].stamp_ms);
            }),
        )
        .await
        .expect("time");
    assert_eq!(page_ids(&in_time), ids[1..3]);
    let picked = store
        .query_conversation(
            room,
            &query(&|q| {
                q.limit = 50;
                q.ids = Some(vec![ids[4].clone(), direct.server_id.clone()]);
            }),
        )
        .await
        .expect("ids");
    assert_eq!(page_ids(&picked), [ids[4].clone()]);

    // A cursor from another conversation is refused.
    let foreign = store
        .query_conversation(
            room,
            &query(&|q| q.after_id = Some(direct.server_id.clone())),
        )
        .await;
    assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");

    // Alice's own archive holds her direct message only, and a room message is no cursor in it.
    let own = store
        .query_archive(&ArchiveQuery {
            owner: "alice@x".into(),
            limit: 50,
            count: true,
            ..ArchiveQuery::default()
        })
        .await
        .expect("own archive");
    assert_eq!(page_ids(&own), std::slice::from_ref(&direct.server_id));
    assert_eq!(own.count, Some(1));
    let cursor = store
        .query_archive(&ArchiveQuery {
            owner: "alice@x".into(),
            limit: 50,
            after_id: Some(ids[0].clone()),
            ..ArchiveQuery::default()
        })
        .await;
    assert!(matches!(cursor, Err(StoreError::NotFound)), "{cursor:?}");
    let by_id = store
        .query_archive(&ArchiveQuery {
            owner: "alice@x".into(),
            limit: 50,
            ids: Some(vec![ids[0].clone()]),
            ..ArchiveQuery::default()
        })
        .await
        .expect("ids in own archive");
    assert!(by_id.messages.is_empty());
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
        for_later: false,
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

// ---------------------------------------------------------------------------------------
// Client views (core::client_view)

/// The page's conversations as `(with, last_seq, read_seq, unread)`.
fn summaries(page: &[ConversationSummary]) -> Vec<(&str, u64, u64, u64)> {
    page.iter()
        .map(|c| (c.with.as_str(), c.last_seq, c.read_seq, c.unread))
        .collect()
}

/// A complete sync from `since`: follows `more` to the end and returns the feeds.
async fn sync_all(
    store: &dyn Store,
    username: &str,
    owner: &str,
    since: Option<&SyncToken>,
    limit: u32,
) -> Vec<SyncFeed> {
    let mut feeds: Vec<SyncFeed> = Vec::new();
    loop {
        let token = feeds.last().map(|f| f.next.clone());
        let feed = store
            .sync(username, owner, token.as_ref().or(since), limit)
            .await
            .expect("sync");
        let more = feed.more;
        feeds.push(feed);
        if !more {
            return feeds;
        }
        assert!(feeds.len() < 10_000, "sync never finishes");
    }
}

/// What a device mirrors, built only from sync feeds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mirror {
    roster: std::collections::BTreeMap<String, RosterItem>,
    documents: std::collections::BTreeMap<String, String>,
    read: std::collections::BTreeMap<String, u64>,
    /// Conversation key → (last_seq, read_seq, unread).
    conversations: std::collections::BTreeMap<String, (u64, u64, u64)>,
}

impl Mirror {
    fn apply(&mut self, feed: &SyncFeed) {
        if feed.full {
            *self = Mirror::default();
        }
        for item in &feed.roster {
            self.roster.insert(item.jid.clone(), item.clone());
        }
        for jid in &feed.roster_removed {
            self.roster.remove(jid);
        }
        for change in &feed.documents {
            match &change.xml {
                Some(xml) => self.documents.insert(change.key.clone(), xml.clone()),
                None => self.documents.remove(&change.key),
            };
        }
        for (conversation, seq) in &feed.read_positions {
            self.read.insert(conversation.clone(), *seq);
        }
        for c in &feed.conversations {
            self.conversations
                .insert(c.conversation.clone(), (c.last_seq, c.read_seq, c.unread));
        }
    }
}

/// The conversation list: newest activity first, one entry per conversation (a conversation
/// with oneself once), unread counting the peer's content above the read position, the last
/// message whatever it is, and cursors that walk the list without repeats.
pub async fn client_view_conversations_newest_first_with_unread_counts(store: &dyn Store) {
    let (a, ab, ac, aa) = ("a@x", "a@x b@x", "a@x c@x", "a@x a@x");
    let empty = store.conversations(a, None, 10).await.expect("list");
    assert_eq!(empty, ConversationPage::default());

    for batch in [
        vec![
            chat(ab, "b@x", "a@x", 1, None),
            chat(ab, "a@x", "b@x", 2, None),
        ],
        vec![
            chat(ac, "c@x", "a@x", 3, None),
            chat(ac, "c@x", "a@x", 4, None),
        ],
        vec![chat(aa, "a@x", "a@x", 5, None)],
        vec![chat(ab, "b@x", "a@x", 6, None)],
        // Not a's: must never show in a's list.
        vec![chat("b@x c@x", "b@x", "c@x", 7, None)],
    ] {
        store.append(&batch).await.expect("append");
    }
    let page = store.conversations(a, None, 10).await.expect("list");
    assert_eq!(
        summaries(&page.conversations),
        [("b@x", 3, 0, 2), ("a@x", 1, 0, 0), ("c@x", 2, 0, 2)]
    );
    assert_eq!(page.next, None);
    let latest = page.conversations[0].last_message.as_ref().expect("last");
    assert_eq!((latest.seq, latest.sender.as_str()), (3, "b@x"));
    assert!(latest.xml.contains("<body>6</body>"), "{latest:?}");
    assert_eq!(page.conversations[0].conversation, ab);
    assert_eq!(page.conversations[1].conversation, aa);

    // Reading moves the position and the count; a marker from the peer is activity (it
    // moves the conversation up and becomes the last message) but not news.
    store.mark_read(a, ab, 1).await.expect("mark");
    let marker = NewMessage {
        counts_unread: false,
        for_later: false,
        ..chat(ac, "c@x", "a@x", 8, None)
    };
    store.append(&[marker]).await.expect("marker");
    let page = store.conversations(a, None, 10).await.expect("list");
    assert_eq!(
        summaries(&page.conversations),
        [("c@x", 3, 0, 2), ("b@x", 3, 1, 1), ("a@x", 1, 0, 0)]
    );
    assert_eq!(
        page.conversations[0]
            .last_message
            .as_ref()
            .map(|m| m.stamp_ms),
        Some(1_700_000_000_008)
    );
    // The other side sees its own counts.
    let b_page = store.conversations("b@x", None, 10).await.expect("list");
    assert_eq!(
        summaries(&b_page.conversations),
        [("c@x", 1, 0, 0), ("a@x", 3, 0, 1)]
    );

    // One batch touching two conversations gives them the same activity: the tie is broken
    // by conversation key, descending, and paging by one still sees each exactly once.
    store
        .append(&[
            chat("a@x d@x", "d@x", "a@x", 9, None),
            chat("a@x e@x", "e@x", "a@x", 10, None),
        ])
        .await
        .expect("append");
    let full = store.conversations(a, None, 500).await.expect("list");
    let order: Vec<&str> = full.conversations.iter().map(|c| c.with.as_str()).collect();
    assert_eq!(order, ["e@x", "d@x", "c@x", "b@x", "a@x"]);
    let mut walked = Vec::new();
    let mut cursor: Option<ConversationCursor> = None;
    loop {
        let page = store
            .conversations(a, cursor.as_ref(), 2)
            .await
            .expect("page");
        assert!(page.conversations.len() <= 2);
        walked.extend(page.conversations);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, full.conversations);
    // The limit is capped; zero lists nothing.
    assert!(
        store
            .conversations(a, None, 0)
            .await
            .expect("zero")
            .conversations
            .is_empty()
    );
    let capped = store.conversations(a, None, u32::MAX).await.expect("cap");
    assert_eq!(capped.conversations.len(), 5);
    // An account with nothing lists nothing.
    assert!(
        store
            .conversations("z@x", None, 10)
            .await
            .expect("z")
            .conversations
            .is_empty()
    );
}

/// A snapshot holds the current state and no removals; a feed from its token holds exactly
/// what changed after it: changed and removed roster items, private XML (not the vCard),
/// moved read positions and the conversations they or new messages touched.
pub async fn client_view_sync_snapshot_then_incremental(store: &dyn Store) {
    let (u, o, ab, ac) = ("a", "a@x", "a@x b@x", "a@x c@x");
    let bookmarks = "storage|storage:bookmarks";
    let empty = store
        .sync(u, o, None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(empty.full && !empty.more, "{empty:?}");
    assert!(empty.roster.is_empty() && empty.conversations.is_empty());
    assert!(empty.documents.is_empty() && empty.read_positions.is_empty());

    store.put_roster_item(u, &item("b@x")).await.expect("put");
    store.put_roster_item(u, &item("c@x")).await.expect("put");
    let hidden = RosterItem {
        in_roster: false,
        pending_in: Some("<presence type='subscribe'/>".into()),
        ..item("d@x")
    };
    store.put_roster_item(u, &hidden).await.expect("put");
    store
        .put_document(u, bookmarks, "<storage/>")
        .await
        .expect("doc");
    store
        .put_document(u, "vcard", "<vCard/>")
        .await
        .expect("vcard");
    store
        .append(&[chat(ab, "b@x", "a@x", 1, None)])
        .await
        .expect("append");
    store.mark_read(o, ab, 1).await.expect("mark");
    // Another account's changes are not a's.
    store.put_roster_item("b", &item("a@x")).await.expect("put");
    store
        .put_document("b", bookmarks, "<b/>")
        .await
        .expect("doc");
    store.mark_read("b@x", ab, 1).await.expect("mark");

    let snapshot = store
        .sync(u, o, None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(snapshot.full && !snapshot.more, "{snapshot:?}");
    assert_eq!(snapshot.roster, [item("b@x"), item("c@x")]);
    assert!(snapshot.roster_removed.is_empty());
    assert_eq!(
        snapshot.documents,
        [DocumentChange {
            key: bookmarks.into(),
            xml: Some("<storage/>".into())
        }]
    );
    assert_eq!(snapshot.read_positions, [(ab.to_owned(), 1)]);
    assert_eq!(summaries(&snapshot.conversations), [("b@x", 1, 1, 0)]);
    assert!(snapshot.next.position > empty.next.position);

    let quiet = store
        .sync(u, o, Some(&snapshot.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(!quiet.full && !quiet.more, "{quiet:?}");
    assert!(quiet.roster.is_empty() && quiet.roster_removed.is_empty());
    assert!(quiet.conversations.is_empty() && quiet.documents.is_empty());
    assert!(quiet.read_positions.is_empty());
    // Changes of other accounts do not move the token past a's own... but they may: the
    // token is store-wide. Either way a's feed stays empty.
    assert!(quiet.next.position >= snapshot.next.position);

    store.remove_roster_item(u, "b@x").await.expect("remove");
    let renamed = RosterItem {
        name: Some("Carol".into()),
        groups: vec!["Friends".into()],
        ask_out: true,
        ..item("c@x")
    };
    store.put_roster_item(u, &renamed).await.expect("put");
    store
        .put_roster_item(
            u,
            &RosterItem {
                in_roster: true,
                ..hidden.clone()
            },
        )
        .await
        .expect("put");
    store
        .put_document(u, bookmarks, "<storage>2</storage>")
        .await
        .expect("doc");
    store
        .put_document(u, "vcard", "<vCard>2</vCard>")
        .await
        .expect("vcard");
    store
        .append(&[chat(ac, "c@x", "a@x", 2, None)])
        .await
        .expect("append");
    // Not a move: the position stays 1, so this is no change.
    store.mark_read(o, ab, 1).await.expect("mark");

    let changes = store
        .sync(u, o, Some(&snapshot.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(!changes.full && !changes.more, "{changes:?}");
    let shown_d = RosterItem {
        pending_in: None,
        ..item("d@x")
    };
    assert_eq!(changes.roster, [renamed.clone(), shown_d]);
    assert_eq!(changes.roster_removed, ["b@x"]);
    assert_eq!(
        changes.documents,
        [DocumentChange {
            key: bookmarks.into(),
            xml: Some("<storage>2</storage>".into())
        }]
    );
    assert!(changes.read_positions.is_empty(), "{changes:?}");
    assert_eq!(summaries(&changes.conversations), [("c@x", 1, 0, 1)]);

    // Hiding an item again is a removal too; a moved read position brings its conversation.
    store
        .append(&[chat(ab, "b@x", "a@x", 3, None)])
        .await
        .expect("append");
    let since = store
        .sync(u, o, Some(&changes.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(summaries(&since.conversations), [("b@x", 2, 1, 1)]);
    store.put_roster_item(u, &hidden).await.expect("hide");
    store.mark_read(o, ab, 2).await.expect("mark");
    let later = store
        .sync(u, o, Some(&since.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(later.roster.is_empty());
    assert_eq!(later.roster_removed, ["d@x"]);
    assert_eq!(later.read_positions, [(ab.to_owned(), 2)]);
    assert_eq!(summaries(&later.conversations), [("b@x", 2, 2, 0)]);

    // A new snapshot shows the state, not the history: no removals.
    let again = store
        .sync(u, o, None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(again.full);
    assert_eq!(again.roster, [renamed]);
    assert!(again.roster_removed.is_empty());
    assert_eq!(
        summaries(&again.conversations),
        [("b@x", 2, 2, 0), ("c@x", 1, 0, 1)]
    );
}

/// The same token answers the same feed as long as nothing changed; tokens this store did
/// not hand out, or handed out before the account existed, are refused.
pub async fn client_view_sync_token_reuse_and_bad_tokens(store: &dyn Store) {
    let (u, o) = ("a", "a@x");
    let before_account = store.sync(u, o, None, 10).await.expect("sync").next;
    store
        .create_account(u, &credentials(1))
        .await
        .expect("create");
    let result = store.sync(u, o, Some(&before_account), 10).await;
    assert!(
        matches!(result, Err(SyncError::TokenPredatesAccount)),
        "{result:?}"
    );

    let start = store.sync(u, o, None, 10).await.expect("sync").next;
    store.put_roster_item(u, &item("b@x")).await.expect("put");
    store
        .append(&[chat("a@x b@x", "b@x", "a@x", 1, None)])
        .await
        .expect("append");
    store.mark_read(o, "a@x b@x", 1).await.expect("mark");
    let first = store.sync(u, o, Some(&start), 10).await.expect("sync");
    let second = store.sync(u, o, Some(&start), 10).await.expect("sync");
    assert_eq!(first, second);
    assert_eq!(first.roster, [item("b@x")]);
    assert_eq!(first.conversations.len(), 1);
    // The token is opaque text that survives a round trip.
    let parsed = SyncToken::parse(&first.next.encode(o), o).expect("parse");
    assert_eq!(parsed, first.next);

    let ahead = SyncToken {
        position: first.next.position + 1,
        ..first.next.clone()
    };
    let result = store.sync(u, o, Some(&ahead), 10).await;
    assert!(
        matches!(result, Err(SyncError::TokenAhead { .. })),
        "{result:?}"
    );
    let foreign = SyncToken {
        store: "0".repeat(SyncToken::STORE_ID_LEN),
        position: 1,
    };
    let result = store.sync(u, o, Some(&foreign), 10).await;
    assert!(matches!(result, Err(SyncError::ForeignToken)), "{result:?}");
    assert_eq!(first.next.store.len(), SyncToken::STORE_ID_LEN);
}

/// A feed larger than the limit pages with `more`, never splitting the records of one write
/// (one archive batch touching many conversations shares one position), and the pages
/// together are the whole state.
pub async fn client_view_sync_pages_at_position_boundaries(store: &dyn Store) {
    let (u, o) = ("a", "a@x");
    for n in 0..10 {
        store
            .put_roster_item(u, &item(&format!("c{n}@x")))
            .await
            .expect("put");
    }
    let feeds = sync_all(store, u, o, None, 3).await;
    assert_eq!(feeds.len(), 4, "{feeds:?}");
    assert!(feeds[0].full && feeds.iter().skip(1).all(|f| !f.full));
    assert!(feeds.iter().all(|f| f.roster.len() <= 3));
    let mut mirror = Mirror::default();
    for feed in &feeds {
        mirror.apply(feed);
    }
    assert_eq!(mirror.roster.len(), 10);

    let token = feeds.last().map(|f| f.next.clone()).expect("token");
    let batch: Vec<NewMessage> = (0..5)
        .map(|n| {
            let peer = format!("p{n}@x");
            chat(&format!("a@x {peer}"), &peer, "a@x", n, None)
        })
        .collect();
    store.append(&batch).await.expect("append");
    store
        .put_roster_item(u, &item("late@x"))
        .await
        .expect("put");
    let page = store.sync(u, o, Some(&token), 2).await.expect("sync");
    assert_eq!(page.conversations.len(), 5, "{page:?}");
    assert!(page.roster.is_empty() && page.more, "{page:?}");
    let rest = store.sync(u, o, Some(&page.next), 2).await.expect("sync");
    assert_eq!(rest.roster, [item("late@x")]);
    assert!(rest.conversations.is_empty() && !rest.more, "{rest:?}");
    // An exhausted feed answers nothing more and keeps its position.
    let idle = store.sync(u, o, Some(&rest.next), 2).await.expect("sync");
    assert_eq!(idle.next, rest.next);
    assert!(!idle.more && idle.roster.is_empty());
}

/// A device that keeps syncing with the returned token while roster, private storage, read
/// positions and the archive change concurrently ends up with exactly the store's state:
/// no change is skipped, whatever commits while a feed is read.
pub async fn client_view_sync_never_skips_interleaved_writes(store: &dyn Store) {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: usize = 40;
    let (u, o) = ("a", "a@x");
    let done = AtomicBool::new(false);
    let writers = async {
        for n in 0..ROUNDS {
            let contact = format!("c{}@x", n % 7);
            if n % 5 == 4 {
                store.remove_roster_item(u, &contact).await.expect("remove");
            } else {
                let changed = RosterItem {
                    name: Some(format!("round {n}")),
                    ..item(&contact)
                };
                store.put_roster_item(u, &changed).await.expect("put");
            }
            let key = format!("k{}|urn:x", n % 3);
            store
                .put_document(u, &key, &format!("<k n='{n}'/>"))
                .await
                .expect("doc");
            let peer = format!("p{}@x", n % 4);
            let conversation = format!("a@x {peer}");
            store
                .append(&[
                    chat(&conversation, &peer, "a@x", n as i64, None),
                    chat("a@x q@x", "a@x", "q@x", n as i64, None),
                ])
                .await
                .expect("append");
            let read = store.last_seq(&conversation).await.expect("last") / 2;
            store.mark_read(o, &conversation, read).await.expect("mark");
            tokio::task::yield_now().await;
        }
        done.store(true, Ordering::SeqCst);
    };
    let reader = async {
        let mut mirror = Mirror::default();
        let mut token: Option<SyncToken> = None;
        let mut feeds = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let feed = store.sync(u, o, token.as_ref(), 5).await.expect("sync");
            mirror.apply(&feed);
            feeds += 1;
            let more = feed.more;
            token = Some(feed.next);
            // Only a feed that started after the writers finished and has nothing more can
            // be the last one.
            if finished && !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        (mirror, feeds)
    };
    let ((), (mirror, feeds)) = tokio::join!(writers, reader);
    assert!(
        feeds > 2,
        "the reader ran alongside the writers ({feeds} feeds)"
    );

    let mut expected = Mirror::default();
    for feed in sync_all(store, u, o, None, MAX_SYNC_CHANGES).await {
        expected.apply(&feed);
    }
    assert_eq!(mirror, expected);
    // And the snapshot is the state the other ports report.
    let (_, roster) = store.roster(u).await.expect("roster");
    let visible: Vec<&str> = roster.iter().map(|i| i.jid.as_str()).collect();
    let mirrored: Vec<&str> = mirror.roster.keys().map(String::as_str).collect();
    assert_eq!(visible, mirrored);
    let read: Vec<(String, u64)> = mirror.read.clone().into_iter().collect();
    assert_eq!(read, store.read_positions(o).await.expect("read"));
    let listed = store.conversations(o, None, 500).await.expect("list");
    assert_eq!(listed.conversations.len(), mirror.conversations.len());
    for c in &listed.conversations {
        assert_eq!(
            mirror.conversations.get(&c.conversation),
            Some(&(c.last_seq, c.read_seq, c.unread)),
            "{}",
            c.conversation
        );
    }
}

/// Deleting an account removes its conversation memberships and change records; an account
/// created again under the name gets back its side of the conversations its peers kept, and
/// tokens of the old account are refused.
pub async fn client_view_rows_go_with_the_account(store: &dyn Store) {
    let (u, o, ab) = ("a", "a@x", "a@x b@x");
    store
        .create_account(u, &credentials(1))
        .await
        .expect("create");
    store
        .create_account("b", &credentials(2))
        .await
        .expect("create");
    store.put_roster_item(u, &item("b@x")).await.expect("put");
    store.put_document(u, "q|urn:x", "<q/>").await.expect("doc");
    store
        .append(&[chat(ab, "b@x", "a@x", 1, None)])
        .await
        .expect("append");
    store.mark_read(o, ab, 1).await.expect("mark");
    store.mark_read("b@x", ab, 1).await.expect("mark");
    let old = store.sync(u, o, None, 10).await.expect("sync").next;

    store.delete_account(u).await.expect("delete");
    assert!(
        store
            .conversations(o, None, 10)
            .await
            .expect("list")
            .conversations
            .is_empty()
    );
    let gone = store.sync(u, o, None, 10).await.expect("sync");
    assert!(gone.roster.is_empty() && gone.documents.is_empty());
    assert!(gone.read_positions.is_empty() && gone.conversations.is_empty());
    let b_view = store.conversations("b@x", None, 10).await.expect("list");
    assert_eq!(summaries(&b_view.conversations), [("a@x", 1, 1, 0)]);

    store
        .create_account(u, &credentials(3))
        .await
        .expect("create");
    let result = store.sync(u, o, Some(&old), 10).await;
    assert!(
        matches!(result, Err(SyncError::TokenPredatesAccount)),
        "{result:?}"
    );
    store
        .append(&[chat(ab, "b@x", "a@x", 2, None)])
        .await
        .expect("append");
    let back = store.conversations(o, None, 10).await.expect("list");
    assert_eq!(summaries(&back.conversations), [("b@x", 2, 0, 2)]);
}

// ---------------------------------------------------------------------------------------
// Registered apps (core::apps)

/// The lifecycle through the core policy: a created app is listed, its secret verifies and
/// nothing else does, and after deletion it neither lists nor verifies.
pub async fn apps_create_list_verify_delete(store: &dyn Store) {
    use confab_core::apps;
    assert!(store.list_apps().await.expect("list").is_empty());
    let first = apps::create(store, "reports", 1_000).await.expect("create");
    let second = apps::create(store, "dashboard", 2_000)
        .await
        .expect("create");
    assert_ne!(first.app.client_id, second.app.client_id);
    assert_ne!(first.secret, second.secret);
    assert_eq!(
        store.list_apps().await.expect("list"),
        [first.app.clone(), second.app.clone()]
    );
    let verified = apps::verify(store, &first.app.client_id, &first.secret)
        .await
        .expect("verify");
    assert_eq!(verified, Some(first.app.clone()));
    // Another app's secret, an unknown id and an empty secret all fail.
    for (id, secret) in [
        (first.app.client_id.as_str(), second.secret.as_str()),
        ("unknown", first.secret.as_str()),
        (first.app.client_id.as_str(), ""),
    ] {
        assert_eq!(apps::verify(store, id, secret).await.expect("verify"), None);
    }
    store
        .delete_app(&first.app.client_id)
        .await
        .expect("delete");
    assert!(matches!(
        store.delete_app(&first.app.client_id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.list_apps().await.expect("list"),
        std::slice::from_ref(&second.app)
    );
    assert_eq!(
        apps::verify(store, &first.app.client_id, &first.secret)
            .await
            .expect("verify"),
        None
    );
    assert!(
        apps::verify(store, &second.app.client_id, &second.secret)
            .await
            .expect("verify")
            .is_some()
    );
}

/// The port itself: a client id is unique, the hash comes back bit for bit, and names keep
/// their Unicode.
pub async fn apps_put_conflict_and_hash_round_trip(store: &dyn Store) {
    use confab_core::apps::App;
    let app = App {
        client_id: "c1".into(),
        name: "Ünïcode app".into(),
        created_ms: 5,
    };
    let hash: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
    assert_eq!(store.app_secret("c1").await.expect("get"), None);
    store.put_app(&app, &hash).await.expect("put");
    assert!(matches!(
        store.put_app(&app, &[0; 32]).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.app_secret("c1").await.expect("get"),
        Some((app.clone(), hash))
    );
    assert!(matches!(
        store.delete_app("c2").await,
        Err(StoreError::NotFound)
    ));
}

/// Persistent MUC rooms: configuration is upserted verbatim, listed by JID, and deleting an
/// unknown room is `NotFound`.
pub async fn rooms_put_replace_list_delete(store: &dyn confab_core::store::RoomStore) {
    use confab_core::store::StoredRoom;
    assert!(store.rooms().await.expect("rooms").is_empty());
    store
        .put_room("b@conference.x", "{\"name\":\"B\"}")
        .await
        .expect("put");
    store
        .put_room("a@conference.x", "first")
        .await
        .expect("put");
    store
        .put_room("a@conference.x", "Ünïcode second")
        .await
        .expect("replace");
    assert_eq!(
        store.rooms().await.expect("rooms"),
        [
            StoredRoom {
                room: "a@conference.x".into(),
                config: "Ünïcode second".into(),
            },
            StoredRoom {
                room: "b@conference.x".into(),
                config: "{\"name\":\"B\"}".into(),
            },
        ]
    );
    store.delete_room("a@conference.x").await.expect("delete");
    assert!(matches!(
        store.delete_room("a@conference.x").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.rooms().await.expect("rooms").len(), 1);
}

/// Affiliations belong to a stored room: set, replaced, removed, refused for an unknown room,
/// and gone with the room (a room recreated under the same JID starts with none).
pub async fn rooms_affiliations_set_remove_and_go_with_the_room(
    store: &dyn confab_core::store::RoomStore,
) {
    let room = "r@conference.x";
    assert!(matches!(
        store.set_affiliation(room, "a@x", Some("owner")).await,
        Err(StoreError::NotFound)
    ));
    store.put_room(room, "c").await.expect("put");
    store
        .put_room("other@conference.x", "c")
        .await
        .expect("put");
    store
        .set_affiliation(room, "b@x", Some("member"))
        .await
        .expect("set");
    store
        .set_affiliation(room, "a@x", Some("owner"))
        .await
        .expect("set");
    store
        .set_affiliation(room, "b@x", Some("outcast"))
        .await
        .expect("replace");
    store
        .set_affiliation("other@conference.x", "c@x", Some("admin"))
        .await
        .expect("set");
    assert_eq!(
        store.affiliations(room).await.expect("list"),
        [
            ("a@x".to_owned(), "owner".to_owned()),
            ("b@x".to_owned(), "outcast".to_owned()),
        ]
    );
    store
        .set_affiliation(room, "b@x", None)
        .await
        .expect("remove");
    // Removing what is not there is not an error: the list already says "none".
    store
        .set_affiliation(room, "b@x", None)
        .await
        .expect("remove again");
    assert_eq!(
        store.affiliations(room).await.expect("list"),
        [("a@x".to_owned(), "owner".to_owned())]
    );
    store.delete_room(room).await.expect("delete");
    store.put_room(room, "c").await.expect("recreate");
    assert!(store.affiliations(room).await.expect("list").is_empty());
    assert_eq!(
        store
            .affiliations("other@conference.x")
            .await
            .expect("list"),
        [("c@x".to_owned(), "admin".to_owned())]
    );
}

/// Groups (migration 0010 in SQLite): a stored room made a group appears in its members'
/// group lists and sync feeds with its metadata and last sequence; a metadata change, a new
/// member and a removed member are each one feed change; a save that changes nothing is none;
/// the group's conversation is listed with the one-to-one ones; a deleted group is removed.
pub async fn groups_list_and_sync_follow_membership_and_metadata<S>(store: &S)
where
    S: Store + confab_core::store::RoomStore + ?Sized,
{
    use confab_core::archive::group_conversation;
    use confab_core::store::GroupMeta;
    let room = "g@conference.x";
    let meta = |name: &str| GroupMeta {
        name: name.into(),
        avatar: "https://x/a.png".into(),
        announcement: String::new(),
    };
    assert!(matches!(
        store.put_group(room, Some(&meta("G"))).await,
        Err(StoreError::NotFound)
    ));
    store
        .create_account("a", &credentials(1))
        .await
        .expect("account a");
    store
        .create_account("b", &credentials(2))
        .await
        .expect("account b");
    store.put_room(room, "c").await.expect("put");
    store
        .set_affiliation(room, "a@x", Some("owner"))
        .await
        .expect("owner");
    store
        .set_affiliation(room, "b@x", Some("member"))
        .await
        .expect("member");
    // Not a group yet: nobody lists it.
    assert!(store.groups("b@x").await.expect("groups").is_empty());
    let before = store
        .sync("b", "b@x", None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(before.groups.is_empty());

    store
        .put_group(room, Some(&meta("G")))
        .await
        .expect("group");
    let listed = store.groups("b@x").await.expect("groups");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].room, room);
    assert_eq!(listed[0].name, "G");
    assert_eq!(listed[0].avatar, "https://x/a.png");
    assert_eq!(listed[0].affiliation, "member");
    assert_eq!(listed[0].last_seq, 0);
    assert_eq!(
        store.groups("a@x").await.expect("groups")[0].affiliation,
        "owner"
    );
    let added = store
        .sync("b", "b@x", Some(&before.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(added.groups, listed);
    assert!(added.groups_removed.is_empty());

    // A message in the group: a conversation change, with the group's last sequence.
    let message = NewMessage {
        server_id: new_server_id(),
        conversation: group_conversation(&confab_core::BareJid::new(room).expect("jid")),
        sender: "a@x".into(),
        recipient: room.into(),
        client_id: None,
        stamp_ms: 1,
        xml: "<message/>".into(),
        counts_unread: true,
        for_later: false,
    };
    let server_id = message.server_id.clone();
    store.append(&[message]).await.expect("append");
    let after_message = store
        .sync("b", "b@x", Some(&added.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(after_message.groups.is_empty(), "{after_message:?}");
    assert_eq!(after_message.conversations.len(), 1);
    assert_eq!(after_message.conversations[0].with, room);
    assert_eq!(after_message.conversations[0].unread, 1);
    let listed = store.groups("b@x").await.expect("groups");
    assert_eq!(listed[0].last_seq, 1);
    assert_eq!(listed[0].last_id.as_deref(), Some(server_id.as_str()));

    // The same metadata again is no change; a rename is one.
    store.put_group(room, Some(&meta("G"))).await.expect("same");
    let same = store
        .sync("b", "b@x", Some(&after_message.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(
        same.groups.is_empty() && same.next == after_message.next,
        "{same:?}"
    );
    store
        .put_group(room, Some(&meta("Renamed")))
        .await
        .expect("rename");
    let renamed = store
        .sync("b", "b@x", Some(&same.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(renamed.groups.len(), 1);
    assert_eq!(renamed.groups[0].name, "Renamed");

    // Removed from the group: reported as removed, and the conversation is no longer listed.
    store
        .set_affiliation(room, "b@x", None)
        .await
        .expect("remove");
    let removed = store
        .sync("b", "b@x", Some(&renamed.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(removed.groups.is_empty());
    assert_eq!(removed.groups_removed, [room.to_owned()]);
    assert!(store.groups("b@x").await.expect("groups").is_empty());
    let conversations = store.conversations("b@x", None, 10).await.expect("list");
    assert!(conversations.conversations.is_empty(), "{conversations:?}");
    assert_eq!(
        store
            .conversations("a@x", None, 10)
            .await
            .expect("list")
            .conversations
            .len(),
        1
    );
    // A snapshot never reports removals.
    let snapshot = store
        .sync("b", "b@x", None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert!(snapshot.groups.is_empty() && snapshot.groups_removed.is_empty());

    // The room deleted: the owner sees the group go.
    let owner = store
        .sync("a", "a@x", None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(owner.groups.len(), 1);
    store.delete_room(room).await.expect("delete");
    let gone = store
        .sync("a", "a@x", Some(&owner.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(gone.groups_removed, [room.to_owned()]);
    assert!(store.groups("a@x").await.expect("groups").is_empty());
}

/// Group mentions and read state (migration 0012): a recorded mention shows in the member's
/// conversation list and sync feed until the read position reaches it, only a newer mention
/// replaces it, and "read by" counts the members other than the sender whose position reached
/// a message.
pub async fn groups_mentions_read_positions_and_readers<S>(store: &S)
where
    S: Store + confab_core::store::RoomStore + ?Sized,
{
    use confab_core::archive::group_conversation;
    use confab_core::store::{GroupMeta, GroupReaders};
    let room = "g@conference.x";
    let conversation = group_conversation(&confab_core::BareJid::new(room).expect("jid"));
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        store
            .create_account(name, &credentials(seed))
            .await
            .expect("account");
    }
    store.put_room(room, "c").await.expect("put");
    for (jid, affiliation) in [("a@x", "owner"), ("b@x", "member"), ("c@x", "member")] {
        store
            .set_affiliation(room, jid, Some(affiliation))
            .await
            .expect("affiliation");
    }
    store
        .set_affiliation(room, "o@x", Some("outcast"))
        .await
        .expect("outcast");
    // Not a group yet: nobody is a group member.
    assert!(!store.is_group_member(room, "b@x").await.expect("member?"));
    store
        .put_group(room, Some(&GroupMeta::default()))
        .await
        .expect("group");
    assert!(store.is_group_member(room, "b@x").await.expect("member?"));
    assert!(!store.is_group_member(room, "o@x").await.expect("member?"));
    assert!(!store.is_group_member(room, "z@x").await.expect("member?"));

    let mut ids = Vec::new();
    for stamp_ms in 1..=3 {
        let message = NewMessage {
            server_id: new_server_id(),
            conversation: conversation.clone(),
            sender: "a@x".into(),
            recipient: room.into(),
            client_id: None,
            stamp_ms,
            xml: "<message/>".into(),
            counts_unread: true,
            for_later: false,
        };
        ids.push(message.server_id.clone());
        store.append(&[message]).await.expect("append");
    }
    let before = store
        .sync("b", "b@x", None, MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(before.conversations[0].mention, None);

    // Message 2 mentions b; an older mention recorded late does not replace it.
    store
        .record_mentions(&conversation, 2, &ids[1], &["b@x".to_owned()])
        .await
        .expect("mention");
    store
        .record_mentions(&conversation, 1, &ids[0], &["b@x".to_owned()])
        .await
        .expect("older mention");
    let page = store.conversations("b@x", None, 10).await.expect("list");
    assert_eq!(
        page.conversations[0].mention.as_deref(),
        Some(ids[1].as_str())
    );
    assert_eq!(page.conversations[0].unread, 3);
    let page = store.conversations("c@x", None, 10).await.expect("list");
    assert_eq!(page.conversations[0].mention, None);
    // The sync feed reports the conversation again though no message was committed.
    let mentioned = store
        .sync("b", "b@x", Some(&before.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(mentioned.conversations.len(), 1, "{mentioned:?}");
    assert_eq!(
        mentioned.conversations[0].mention.as_deref(),
        Some(ids[1].as_str())
    );

    // Read up to message 1: still mentioned; up to 2: cleared, and the feed says so.
    store
        .mark_read("b@x", &conversation, 1)
        .await
        .expect("read");
    let page = store.conversations("b@x", None, 10).await.expect("list");
    assert!(page.conversations[0].mention.is_some());
    store
        .mark_read("b@x", &conversation, 2)
        .await
        .expect("read");
    let page = store.conversations("b@x", None, 10).await.expect("list");
    assert_eq!(page.conversations[0].mention, None);
    assert_eq!(page.conversations[0].unread, 1);
    let cleared = store
        .sync("b", "b@x", Some(&mentioned.next), MAX_SYNC_CHANGES)
        .await
        .expect("sync");
    assert_eq!(cleared.conversations.len(), 1, "{cleared:?}");
    assert_eq!(cleared.conversations[0].mention, None);

    // Read by: b reached 2, c nothing; the sender and the outcast never count.
    let readers = |seq| store.group_readers(room, seq, "a@x");
    assert_eq!(
        readers(2).await.expect("readers"),
        GroupReaders {
            readers: vec!["b@x".into()],
            members: 2,
        }
    );
    assert_eq!(
        readers(3).await.expect("readers").readers,
        Vec::<String>::new()
    );
    store
        .mark_read("c@x", &conversation, 3)
        .await
        .expect("read");
    store
        .mark_read("o@x", &conversation, 3)
        .await
        .expect("read");
    assert_eq!(
        readers(1).await.expect("readers").readers,
        ["b@x".to_owned(), "c@x".to_owned()]
    );
    // Counted from b's side, a sent nothing it read: one member (c) of two read message 3.
    let from_b = store.group_readers(room, 3, "b@x").await.expect("readers");
    assert_eq!(from_b.members, 2);
    assert_eq!(from_b.readers, ["c@x".to_owned()]);
}
