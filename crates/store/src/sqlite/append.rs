//! The archive's append path: [`ArchiveStore::append`] on a connection of its own.
//!
//! Every chat message is committed here before it is delivered, so this is the server's
//! hottest write. sqlx's SQLite driver costs a round trip to its worker thread per statement,
//! which pushed the batch into a few statements over JSON arrays (`json_each`); each row was
//! then re-parsed once per column, and a multi-row `INSERT … SELECT` needs a statement journal,
//! a copy of every page it touches. A `rusqlite` connection called once per batch from a
//! blocking thread instead runs one cached prepared statement per message: no JSON, no round
//! trips, no statement journal (a single-row `INSERT … VALUES` on a table without triggers
//! cannot half-fail).
//!
//! The connection shares the database with the sqlx writer pool, and [`SqliteStore::append`]
//! holds that pool's only connection for the duration of the batch, so SQLite never sees two
//! writers of this store contend: other writes queue fairly on the pool as before.
//!
//! [`ArchiveStore::append`]: confab_core::archive::ArchiveStore::append
//! [`SqliteStore::append`]: super::SqliteStore

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use confab_core::archive::{CommitReceipt, NewMessage};
use confab_core::store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::WAL_AUTOCHECKPOINT_PAGES;
use super::archive::to_seq;

/// Inserts one message unless its sender already committed its client id in the
/// conversation; the partial unique index `messages_client_id` decides, for stored rows and
/// for earlier rows of the same batch alike. Any other constraint (a reused server id, a
/// taken sequence) still fails the statement.
const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml, counts_unread, \
      for_later) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (conversation, sender, client_id) WHERE client_id IS NOT NULL DO NOTHING";

/// The original of a message `INSERT_MESSAGE` skipped as a resend.
const FIND_ORIGINAL: &str = "SELECT server_id, seq, stamp_ms FROM messages \
     WHERE conversation = ?1 AND sender = ?2 AND client_id = ?3";

/// The last sequence number a conversation handed out; no row means none yet.
const LAST_SEQ: &str = "SELECT last_seq FROM conversations WHERE conversation = ?1";

/// Takes the batch's change position from the store-wide counter the client views read
/// (core::client_view): one position for the whole batch, since it commits as one.
const NEXT_CHANGE_POSITION: &str = "UPDATE change_seq SET last = last + 1 RETURNING last";

/// Records a conversation's new last sequence and stamps it with the batch's change position
/// (its `activity`, see migration 0006). A new conversation is an INSERT, which fires the
/// `conversation_members` trigger.
const SAVE_SEQUENCE: &str = "INSERT INTO conversations (conversation, last_seq, activity) \
     VALUES (?1, ?2, ?3) \
     ON CONFLICT (conversation) DO UPDATE SET last_seq = excluded.last_seq, \
     activity = excluded.activity";

/// Page cache of the append connection, in KiB. A batch touches the tail pages of every
/// index in every conversation it writes to, and a conversation's client ids land anywhere
/// in its range; with SQLite's default of 2 MiB busy batches spilled dirty pages to the WAL
/// mid-transaction and read evicted pages back. Measured on `bench-durable-ack.sh max`:
/// 64 MiB gave about 72 µs of server CPU per message, 256 MiB about 65 µs. 64 MiB is the
/// default: the last 10% is not worth 192 MiB more resident memory on every installation.
/// SQLite allocates the cache as pages are used, so a small archive never grows it to the cap.
const CACHE_KIB: i64 = 64 * 1024;

/// The append connection, shared by the clones of one store; `None` once the store closed.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    connection: Arc<Mutex<Option<Connection>>>,
}

impl Appender {
    /// Opens the append connection to the database file at `path` (already migrated).
    pub(crate) fn open_file(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::configure(Connection::open_with_flags(path, flags)?, busy_timeout)
    }

    /// Opens the append connection to the shared-cache in-memory database `name`, which the
    /// caller keeps alive with a connection of its own.
    pub(crate) fn open_memory(name: &str, busy_timeout: Duration) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_MEMORY
            | OpenFlags::SQLITE_OPEN_SHARED_CACHE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::configure(Connection::open_with_flags(name, flags)?, busy_timeout)
    }

    fn configure(connection: Connection, busy_timeout: Duration) -> rusqlite::Result<Self> {
        connection.busy_timeout(busy_timeout)?;
        // FULL like every other connection of the store (see `SqliteStore::open`): the log
        // acknowledges a message once this commit returns.
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
        connection.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(Some(connection))),
        })
    }

    /// Commits `batch` as one transaction on a blocking thread (see [`append`]).
    pub(crate) async fn append(&self, batch: Vec<NewMessage>) -> StoreResult<Vec<CommitReceipt>> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic mid-batch dropped its transaction, which rolled back: the connection
            // is fine to use.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let connection = connection
                .as_mut()
                .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
            append(connection, &batch)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("archive append task failed: {e}")))?
    }

    /// Closes the connection (waiting for a batch in progress), so that the last connection
    /// to close checkpoints the WAL; later appends fail as `Unavailable`.
    pub(crate) async fn close(&self) {
        let connection = self.connection.clone();
        let closed = tokio::task::spawn_blocking(move || {
            let taken = connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(Err((_, error))) = taken.map(Connection::close) {
                tracing::warn!(%error, "closing the archive append connection failed");
            }
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "closing the archive append connection failed");
        }
    }
}

/// A conversation's sequence during one batch.
struct Sequence {
    /// The last sequence stored before the batch.
    stored: i64,
    /// The last sequence handed out so far.
    last: i64,
}

/// Commits a batch in order in one `BEGIN IMMEDIATE` transaction and returns one receipt per
/// message (see `ArchiveStore::append`). Sequences are handed out in Rust as rows go in, so a
/// resend takes none and each conversation stays gap-free; the counters are written back once
/// per conversation.
fn append(connection: &mut Connection, batch: &[NewMessage]) -> StoreResult<Vec<CommitReceipt>> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut receipts = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(INSERT_MESSAGE).map_err(unavailable)?;
        let mut find_original = tx.prepare_cached(FIND_ORIGINAL).map_err(unavailable)?;
        let mut last_seq = tx.prepare_cached(LAST_SEQ).map_err(unavailable)?;
        let mut sequences: Vec<(&str, Sequence)> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();

        for message in batch {
            let conversation = message.conversation.as_str();
            let at = match position.entry(conversation) {
                Entry::Occupied(at) => *at.get(),
                Entry::Vacant(slot) => {
                    let stored: i64 = last_seq
                        .query_row([conversation], |row| row.get(0))
                        .optional()
                        .map_err(unavailable)?
                        .unwrap_or(0);
                    sequences.push((
                        conversation,
                        Sequence {
                            stored,
                            last: stored,
                        },
                    ));
                    *slot.insert(sequences.len() - 1)
                }
            };
            let sequence = &mut sequences[at].1;
            let seq = sequence.last + 1;
            let inserted = insert
                .execute(params![
                    message.server_id,
                    conversation,
                    seq,
                    message.sender,
                    message.recipient,
                    message.client_id,
                    message.stamp_ms,
                    message.xml,
                    message.counts_unread,
                    message.for_later,
                ])
                .map_err(|e| {
                    // Only a server id used twice can collide here: the sequence is the
                    // conversation's next under the write lock, and a resend was skipped.
                    if is_unique_violation(&e) {
                        StoreError::Conflict
                    } else {
                        unavailable(e)
                    }
                })?;
            if inserted == 1 {
                sequence.last = seq;
                receipts.push(CommitReceipt {
                    server_id: message.server_id.clone(),
                    seq: to_seq(seq, conversation)?,
                    stamp_ms: message.stamp_ms,
                    duplicate: false,
                });
                continue;
            }
            // Skipped: the client id is taken, by a stored row or by an earlier one of this
            // batch, and the receipt is that message's.
            let (server_id, seq, stamp_ms): (String, i64, i64) = find_original
                .query_row(
                    params![conversation, message.sender, message.client_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(unavailable)?
                .ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "message skipped as a resend without an original in {conversation}"
                    ))
                })?;
            receipts.push(CommitReceipt {
                server_id,
                seq: to_seq(seq, conversation)?,
                stamp_ms,
                duplicate: true,
            });
        }

        // Conversations that got new messages; one holding only resends is not touched (and
        // keeps its activity).
        let mut advanced = sequences
            .iter()
            .filter(|(_, s)| s.last > s.stored)
            .peekable();
        if advanced.peek().is_some() {
            let change_position: i64 = tx
                .prepare_cached(NEXT_CHANGE_POSITION)
                .and_then(|mut next| next.query_row([], |row| row.get(0)))
                .map_err(unavailable)?;
            let mut save = tx.prepare_cached(SAVE_SEQUENCE).map_err(unavailable)?;
            for (conversation, sequence) in advanced {
                save.execute(params![conversation, sequence.last, change_position])
                    .map_err(unavailable)?;
            }
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(receipts)
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            )
    )
}

/// Maps a failure nobody can act on except by retrying later (disk full, lock timeout,
/// corrupt row) to `Unavailable`, with SQLite's own message.
fn unavailable(err: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    /// Finding a resend's original is one lookup in the `messages_client_id` index (the same
    /// index the insert's conflict clause probes), never a scan of the archive.
    #[tokio::test]
    async fn original_lookup_uses_the_client_id_index() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        let guard = store.appender.connection.lock().expect("lock");
        let connection = guard.as_ref().expect("open connection");
        let mut plan = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {FIND_ORIGINAL}"))
            .expect("prepare");
        let details: Vec<String> = plan
            .query_map(["a b", "a", "c1"], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            details
                .iter()
                .any(|d| d.contains("USING INDEX messages_client_id")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.starts_with("SCAN")),
            "{details:?}"
        );
    }
}
