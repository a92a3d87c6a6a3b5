//! The shared conformance suite run against SQLite (in memory and on disk), plus what only the
//! SQLite adapter has: files, reopening, several handles on one file, pragmas.

use std::ops::Deref;
use std::path::Path;

use confab_core::store::{
    AccountStore, BlockStore, DocumentStore, OfflineStore, RosterStore, StoreError,
};
use tempfile::TempDir;

use super::{DEFAULT_OFFLINE_QUOTA, SqliteStore, StoreOpenError, unavailable};
use crate::conformance::{credentials, item, message};

/// The quota the conformance runs use, small so the quota test is quick.
const TEST_QUOTA: u32 = 5;

/// A store on a fresh temporary directory, deleted when the test ends.
struct OnDisk {
    store: SqliteStore,
    dir: TempDir,
}

impl Deref for OnDisk {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn on_disk() -> OnDisk {
    let dir = TempDir::new().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    OnDisk { store, dir }
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).await.expect("open")
}

/// In memory: one connection serves reads and writes.
mod in_memory {
    use super::*;

    crate::conformance_tests!(
        async {
            Box::new(
                SqliteStore::open_in_memory()
                    .await
                    .expect("open")
                    .with_offline_quota(TEST_QUOTA),
            )
        },
        offline_quota: TEST_QUOTA
    );
}

/// On disk: separate read and write pools over a WAL file, as in production.
mod file {
    use super::*;

    crate::conformance_tests!(
        async {
            let mut disk = on_disk().await;
            disk.store = disk.store.with_offline_quota(TEST_QUOTA);
            disk
        },
        offline_quota: TEST_QUOTA
    );
}

#[tokio::test]
async fn default_offline_quota_applies() {
    let store = SqliteStore::open_in_memory().await.expect("open");
    assert_eq!(store.offline_quota, DEFAULT_OFFLINE_QUOTA);
    for n in 0..i64::from(DEFAULT_OFFLINE_QUOTA) {
        store
            .push_offline("alice", &message(n))
            .await
            .expect("push");
    }
    let over = store.push_offline("alice", &message(-1)).await;
    assert!(matches!(over, Err(StoreError::Quota(_))), "{over:?}");
}

#[tokio::test]
async fn open_creates_directory_and_configures_connections() {
    let root = TempDir::new().expect("tempdir");
    let data_dir = root.path().join("nested").join("data");
    let store = open(&data_dir).await;
    assert!(data_dir.join("confab.db").is_file());

    for pool in [&store.writer, &store.reader] {
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        // 2 is FULL: acknowledged writes survive power loss, not only a process crash.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .expect("synchronous");
        assert_eq!(synchronous, 2);
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .expect("foreign_keys");
        assert_eq!(foreign_keys, 1);
        let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .expect("busy_timeout");
        assert_eq!(busy_timeout, 5000);
    }
}

#[tokio::test]
async fn data_survives_reopen_and_roster_version_keeps_increasing() {
    let dir = TempDir::new().expect("tempdir");
    let last = {
        let store = open(dir.path()).await;
        store
            .create_account("alice", &credentials(3))
            .await
            .expect("create");
        for n in 0..3 {
            store
                .put_roster_item("alice", &item(&format!("c{n}@x")))
                .await
                .expect("put");
        }
        let last = store
            .remove_roster_item("alice", "c0@x")
            .await
            .expect("remove");
        store.close().await;
        last
    };

    // Reopening re-runs the migrator, which must find nothing to do.
    let store = open(dir.path()).await;
    assert_eq!(
        store.credentials("alice").await.expect("credentials"),
        Some(credentials(3))
    );
    let (version, items) = store.roster("alice").await.expect("roster");
    assert_eq!(version, last);
    assert_eq!(items.len(), 2);
    let next = store
        .put_roster_item("alice", &item("c9@x"))
        .await
        .expect("put");
    assert!(next > last, "{next} after reopen is not above {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_write_concurrently() {
    // The server and the `confab user ...` CLI hold separate handles (separate processes in
    // production) on the same file; their writers must wait for each other, not fail.
    const EACH: usize = 30;
    let dir = TempDir::new().expect("tempdir");
    let server = open(dir.path()).await;
    let cli = open(dir.path()).await;

    let write = |store: SqliteStore, who: &'static str| async move {
        for n in 0..EACH {
            store
                .create_account(&format!("{who}{n}"), &credentials(1))
                .await
                .expect("create");
            // Both handles also write the same user's rows, which contend on the same pages.
            store
                .put_roster_item("shared", &item(&format!("{who}{n}@x")))
                .await
                .expect("put");
            store
                .push_offline("shared", &message(0))
                .await
                .expect("push");
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(write(server.clone(), "server")),
        tokio::spawn(write(cli.clone(), "cli"))
    );
    a.expect("server writer");
    b.expect("cli writer");

    for store in [&server, &cli] {
        assert_eq!(store.list_accounts().await.expect("list").len(), 2 * EACH);
        assert_eq!(
            store.roster("shared").await.expect("roster").1.len(),
            2 * EACH
        );
    }
    assert_eq!(
        cli.take_offline("shared").await.expect("take").len(),
        2 * EACH
    );
    assert!(
        server
            .take_offline("shared")
            .await
            .expect("take")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_opens_both_succeed() {
    // The server and the CLI may both find no database yet and race to create and migrate it.
    for _ in 0..10 {
        let dir = TempDir::new().expect("tempdir");
        let (a, b) = tokio::join!(SqliteStore::open(dir.path()), SqliteStore::open(dir.path()));
        let (a, b) = (a.expect("first open"), b.expect("second open"));
        a.create_account("alice", &credentials(1))
            .await
            .expect("create");
        assert!(b.account_exists("alice").await.expect("exists"));
    }
}

#[tokio::test]
async fn uncreatable_directory_names_the_path() {
    let root = TempDir::new().expect("tempdir");
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"").expect("write");
    let data_dir = file.join("data");

    let err = SqliteStore::open(&data_dir).await.expect_err("must fail");
    assert!(matches!(err, StoreOpenError::CreateDir { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("cannot create data directory "), "{text}");
    assert!(text.contains(&data_dir.display().to_string()), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[tokio::test]
async fn unopenable_database_names_the_file() {
    let root = TempDir::new().expect("tempdir");
    // A directory where the database file should be cannot be opened as a database.
    let db = root.path().join("confab.db");
    std::fs::create_dir(&db).expect("mkdir");

    let err = SqliteStore::open(root.path()).await.expect_err("must fail");
    assert!(matches!(err, StoreOpenError::Open { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot open database {}: ", db.display())),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[tokio::test]
async fn read_connections_refuse_writes() {
    let disk = on_disk().await;
    let err = sqlx::query("DELETE FROM accounts")
        .execute(&disk.reader)
        .await
        .expect_err("query_only connection accepted a write");
    match unavailable(err) {
        StoreError::Unavailable(reason) => assert!(reason.contains("readonly"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(disk.dir.path().join("confab.db").is_file());
}

#[tokio::test]
async fn database_failures_are_unavailable_not_panics() {
    let store = SqliteStore::open_in_memory().await.expect("open");

    // A row edited behind the store's back is reported, not guessed at.
    store
        .put_roster_item("alice", &item("bob@x"))
        .await
        .expect("put");
    sqlx::query("UPDATE roster_items SET groups = 'not json'")
        .execute(&store.writer)
        .await
        .expect("corrupt");
    assert!(matches!(
        store.roster("alice").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.roster_item("alice", "bob@x").await,
        Err(StoreError::Unavailable(_))
    ));

    // A missing table stands in for a broken or foreign database file.
    for table in [
        "DROP TABLE documents",
        "DROP TABLE blocklist",
        "DROP TABLE accounts",
    ] {
        sqlx::query(table)
            .execute(&store.writer)
            .await
            .expect("drop");
    }
    assert!(matches!(
        store.put_document("alice", "k", "<x/>").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.block("alice", &["x@y".to_owned()]).await,
        Err(StoreError::Unavailable(_))
    ));
    // Not a `Conflict`: only a unique violation means the name is taken.
    assert!(matches!(
        store.create_account("alice", &credentials(1)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.delete_account("alice").await,
        Err(StoreError::Unavailable(_))
    ));

    // A closed store fails calls instead of hanging or panicking.
    store.close().await;
    assert!(matches!(
        store.take_offline("alice").await,
        Err(StoreError::Unavailable(_))
    ));
}
