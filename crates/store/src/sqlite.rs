//! Opening the SQLite database and the plumbing shared by every store trait implementation.

mod accounts;
mod append;
mod apps;
mod archive;
mod blocks;
mod client_view;
mod documents;
mod offline;
mod read_state;
mod rooms;
mod roster;
#[cfg(test)]
mod tests;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_core::store::StoreError;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::time::{Instant, sleep};

/// File name of the database inside the data directory.
const DB_FILE: &str = "confab.db";

/// Offline messages kept per account unless [`SqliteStore::with_offline_quota`] says otherwise.
pub const DEFAULT_OFFLINE_QUOTA: u32 = 1000;

/// Read connections per store. Reads run concurrently with the single writer under WAL, but a
/// 2-core machine gains nothing from more; each sqlx SQLite connection is also a thread.
const READ_CONNECTIONS: u32 = 4;

/// How long a writer waits for another process's write lock (the CLI and the server share the
/// file) before the call fails as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between attempts while another process is creating or migrating the same file.
const OPEN_RETRY: Duration = Duration::from_millis(20);

/// Prepared statements cached per connection; the store issues a few dozen distinct ones, so
/// every statement stays prepared after its first use.
const STATEMENT_CACHE: usize = 64;

/// WAL size (pages) past which a committing writer copies the WAL back into the database.
/// SQLite's default of 1,000 (4 MiB) meant a checkpoint every two or three busy message
/// batches, each copying and syncing the same hot index pages again; at 10,000 a page
/// rewritten by many batches is copied once, which halved the checkpoint's share of an
/// append. The cost is a WAL file of up to about 40 MiB, replayed after a crash.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The embedded schema; `build.rs` makes Cargo re-embed it when a migration changes.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Why the database could not be opened; its message names the path so the binary can print
/// it as a single line.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    /// The data directory does not exist and could not be created.
    #[error("cannot create data directory {}: {reason}", path.display())]
    CreateDir {
        /// The directory that was to hold the database.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// SQLite could not open or configure the database file.
    #[error("cannot open database {}: {reason}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database {}: {reason}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What the migrator said.
        reason: String,
    },
}

/// The SQLite adapter for every [`confab_core::store`] trait; cheap to clone (pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: SQLite serializes writers anyway, and queueing them here is fair
    /// and sleeps on a semaphore instead of polling in SQLite's busy handler.
    writer: SqlitePool,
    /// Connections for plain reads, which WAL lets run while the writer commits. For an
    /// in-memory database this is the writer pool itself, since the data lives in one connection.
    reader: SqlitePool,
    /// The message log's append path, on a connection of its own (see `append.rs`); it
    /// writes only while holding `writer`'s connection.
    appender: append::Appender,
    /// Maximum offline messages kept per account.
    offline_quota: u32,
}

impl SqliteStore {
    /// Opens (creating if needed) `confab.db` in `data_dir` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreOpenError> {
        let path = data_dir.join(DB_FILE);
        std::fs::create_dir_all(data_dir).map_err(|e| StoreOpenError::CreateDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let open_error = |e: sqlx::Error| StoreOpenError::Open {
            path: path.clone(),
            reason: describe(&e),
        };

        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(STATEMENT_CACHE)
            .foreign_keys(true)
            // FULL, not NORMAL: in WAL mode NORMAL survives a process crash but may lose the
            // last commits on power loss, and the server acknowledges stanzas once the store
            // call returns (DESIGN.md invariant 3: nothing is acknowledged before it is durable).
            .synchronous(SqliteSynchronous::Full);

        // WAL lets readers proceed while one writer commits, and is a persistent property of
        // the file, so only the writer (opened first) needs to ask for it.
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
        let deadline = Instant::now() + BUSY_TIMEOUT;
        // Switching a new file to WAL needs an exclusive lock that SQLite does not wait for, so
        // a second process opening the same fresh file at that moment gets SQLITE_BUSY at once.
        let writer = loop {
            let attempt = SqlitePoolOptions::new()
                .max_connections(1)
                // A local file connection does not go stale; pinging it before every call
                // would only add a round trip to the connection's worker thread.
                .test_before_acquire(false)
                .connect_with(writer_options.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && Instant::now() < deadline => sleep(OPEN_RETRY).await,
                Err(e) => return Err(open_error(e)),
            }
        };

        check_wal(&writer, &path).await;
        migrate(&writer, &path, deadline).await?;

        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .test_before_acquire(false)
            // query_only turns a write accidentally sent to a read connection into an error
            // instead of a second, uncoordinated writer.
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(open_error)?;
        let appender =
            append::Appender::open_file(&path, BUSY_TIMEOUT).map_err(|e| StoreOpenError::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?;

        Ok(Self {
            writer,
            reader,
            appender,
            offline_quota: DEFAULT_OFFLINE_QUOTA,
        })
    }

    /// Opens a private, empty in-memory database (for tests); it vanishes when dropped.
    pub async fn open_in_memory() -> Result<Self, StoreOpenError> {
        // A named shared-cache database, so the append connection sees the same data; the
        // name is unique to this store, which keeps it private.
        static STORES: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "file:confab-memory-{}-{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::Relaxed)
        );
        let path = PathBuf::from(&name);
        // The database lives as long as a connection to it is open, so the pool holds
        // exactly one and must never retire it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&name)
                    .in_memory(true)
                    .shared_cache(true)
                    .foreign_keys(true),
            )
            .await
            .map_err(|e| StoreOpenError::Open {
                path: path.clone(),
                reason: describe(&e),
            })?;
        migrate(&pool, &path, Instant::now()).await?;
        let appender = append::Appender::open_memory(&name, BUSY_TIMEOUT).map_err(|e| {
            StoreOpenError::Open {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            appender,
            offline_quota: DEFAULT_OFFLINE_QUOTA,
        })
    }

    /// Sets how many offline messages an account may hold before pushes fail with `Quota`.
    pub fn with_offline_quota(mut self, quota: u32) -> Self {
        self.offline_quota = quota;
        self
    }

    /// Closes every connection, waiting for in-flight calls; the last one to close
    /// checkpoints the WAL back into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.appender.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction that takes SQLite's write lock at once. A plain (deferred)
    /// `BEGIN` that reads before writing can fail with `SQLITE_BUSY` when it tries to upgrade,
    /// without waiting for the busy timeout, if another process wrote in between.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }
}

/// Applies pending migrations, retrying until `deadline` when the database got in the way.
///
/// Two processes opening a fresh file at the same moment race to apply the same migration:
/// the loser sees a lock or an "already exists" error. Each migration runs in its own
/// transaction, so the loser rolled back cleanly and a later pass finds the work done.
async fn migrate(pool: &SqlitePool, path: &Path, deadline: Instant) -> Result<(), StoreOpenError> {
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                if Instant::now() < deadline =>
            {
                sleep(OPEN_RETRY).await;
            }
            Err(e) => {
                return Err(StoreOpenError::Migrate {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// Whether SQLite refused because another connection holds a lock (SQLITE_BUSY or
/// SQLITE_LOCKED, including their extended codes), which is worth retrying.
fn is_busy(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    // sqlx reports the extended result code; its low byte is the primary code.
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Warns when the file system refused WAL mode (some network file systems do): the store still
/// works, but readers and the writer then block each other.
async fn check_wal(pool: &SqlitePool, path: &Path) {
    match sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
    {
        Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
        Ok(mode) => tracing::warn!(path = %path.display(), %mode, "database is not in WAL mode"),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read journal mode"),
    }
}

/// Maps a failure nobody can act on except by retrying later (disk full, read-only file,
/// lock timeout, corrupt row) to `Unavailable`.
pub(crate) fn unavailable(err: sqlx::Error) -> StoreError {
    StoreError::Unavailable(describe(&err))
}

/// A short description of a sqlx error: SQLite's own message and code rather than sqlx's
/// generic wrapper text.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (sqlite code {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
