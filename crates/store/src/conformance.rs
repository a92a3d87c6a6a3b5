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
