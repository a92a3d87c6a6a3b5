//! [`ArchiveStore`] over `messages` and `conversations`.
//!
//! An append is one `BEGIN IMMEDIATE` transaction on the single writer connection, so the
//! duplicate check, the sequence allocation and the inserts see no concurrent writer. Each
//! step is one statement for the whole batch, whatever its size: the batch travels as one
//! JSON array parameter that `json_each` unpacks inside SQLite. Every statement of sqlx's
//! SQLite driver is a round trip to the connection's worker thread, so this keeps a 256-row
//! batch at five round trips instead of hundreds, and the statement text stays constant, so
//! each stays prepared in the statement cache.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use async_trait::async_trait;
use confab_core::archive::{ArchiveStore, ArchivedMessage, CommitReceipt, NewMessage};
use confab_core::store::{StoreError, StoreResult};
use serde_json::{Value, json};

use super::{SqliteStore, unavailable};

/// The text of [`FIND_DUPLICATES`], as a macro so the query-plan test can prefix it while
/// every statement stays a literal (sqlx refuses dynamically built SQL).
macro_rules! find_duplicates {
    () => {
        "SELECT k.key, m.server_id, m.seq, m.stamp_ms \
         FROM json_each(?1) AS k CROSS JOIN messages AS m \
         WHERE m.conversation = k.value ->> 0 AND m.sender = k.value ->> 1 \
         AND m.client_id = k.value ->> 2"
    };
}

/// Stored messages matching `[conversation, sender, client_id]` keys; `k.key` is the index
/// of the key in the parameter array. `CROSS JOIN` keeps the (small) key list as the outer
/// loop, so each key is one lookup in the `messages_client_id` index.
const FIND_DUPLICATES: &str = find_duplicates!();

/// Advances each `[conversation, count]` by `count` and returns the new last sequence. The
/// `WHERE true` resolves SQLite's parsing ambiguity between `INSERT … SELECT` and upsert.
const ALLOCATE_SEQUENCES: &str = "INSERT INTO conversations (conversation, last_seq) \
     SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
     ON CONFLICT (conversation) DO UPDATE SET last_seq = last_seq + excluded.last_seq \
     RETURNING conversation, last_seq";

/// Inserts `[server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml]` rows.
const INSERT_MESSAGES: &str = "INSERT INTO messages \
     (server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7 FROM json_each(?1)";

/// Column list shared by the read queries, in [`MessageRow`] order.
macro_rules! columns {
    () => {
        "server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml"
    };
}

/// Rows deleted per purge transaction: small enough that appends waiting for the writer
/// connection are held up for milliseconds, not for the whole purge.
const PURGE_CHUNK: i64 = 5_000;

/// Column order of `columns!()`.
type MessageRow = (
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    String,
);

/// Turns a stored row back into a message; a negative sequence means a hand-edited file.
fn message_from_row(row: MessageRow) -> StoreResult<ArchivedMessage> {
    let (server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml) = row;
    Ok(ArchivedMessage {
        seq: to_seq(seq, &conversation)?,
        server_id,
        conversation,
        sender,
        recipient,
        client_id,
        stamp_ms,
        xml,
    })
}

fn to_seq(value: i64, conversation: &str) -> StoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Unavailable(format!("corrupt sequence in {conversation}")))
}

/// A sequence bound as SQLite's signed integer; beyond `i64::MAX` nothing is stored anyway.
fn seq_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn append(&self, batch: &[NewMessage]) -> StoreResult<Vec<CommitReceipt>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut receipts: Vec<Option<CommitReceipt>> = vec![None; batch.len()];

        // Resends inside the batch: the first occurrence of a key is checked against the
        // table (and stored if new); later ones repeat its receipt.
        let mut first_with_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        let mut keyed: Vec<usize> = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            let Some(client_id) = message.client_id.as_deref() else {
                continue;
            };
            let key = (
                message.conversation.as_str(),
                message.sender.as_str(),
                client_id,
            );
            match first_with_key.entry(key) {
                Entry::Occupied(first) => repeats.push((index, *first.get())),
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    keyed.push(index);
                }
            }
        }

        let mut tx = self.begin_write().await?;

        if !keyed.is_empty() {
            let keys: Vec<Value> = keyed
                .iter()
                .map(|&i| {
                    let m = &batch[i];
                    json!([m.conversation, m.sender, m.client_id])
                })
                .collect();
            let found: Vec<(i64, String, i64, i64)> = sqlx::query_as(FIND_DUPLICATES)
                .bind(Value::Array(keys).to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            for (key, server_id, seq, stamp_ms) in found {
                let Some(&index) = usize::try_from(key).ok().and_then(|k| keyed.get(k)) else {
                    return Err(StoreError::Unavailable("json_each key out of range".into()));
                };
                receipts[index] = Some(CommitReceipt {
                    server_id,
                    seq: to_seq(seq, &batch[index].conversation)?,
                    stamp_ms,
                    duplicate: true,
                });
            }
        }

        let mut repeated = vec![false; batch.len()];
        for &(index, _) in &repeats {
            repeated[index] = true;
        }
        let fresh: Vec<usize> = (0..batch.len())
            .filter(|&i| receipts[i].is_none() && !repeated[i])
            .collect();

        if !fresh.is_empty() {
            // How many new messages each conversation gets, in order of first appearance.
            let mut counts: Vec<(&str, i64)> = Vec::new();
            let mut position: HashMap<&str, usize> = HashMap::new();
            for &i in &fresh {
                let conversation = batch[i].conversation.as_str();
                match position.entry(conversation) {
                    Entry::Occupied(at) => counts[*at.get()].1 += 1,
                    Entry::Vacant(slot) => {
                        slot.insert(counts.len());
                        counts.push((conversation, 1));
                    }
                }
            }
            let request: Vec<Value> = counts
                .iter()
                .map(|(conversation, count)| json!([conversation, count]))
                .collect();
            let allocated: Vec<(String, i64)> = sqlx::query_as(ALLOCATE_SEQUENCES)
                .bind(Value::Array(request).to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            // The next sequence to hand out per conversation: the range just reserved ends at
            // the returned last_seq.
            let mut next: HashMap<&str, u64> = HashMap::with_capacity(counts.len());
            for (conversation, last) in &allocated {
                let Some(&at) = position.get(conversation.as_str()) else {
                    return Err(StoreError::Unavailable(format!(
                        "sequence allocated for unknown conversation {conversation}"
                    )));
                };
                let (key, count) = counts[at];
                next.insert(key, to_seq(last - count + 1, conversation)?);
            }

            let mut rows: Vec<Value> = Vec::with_capacity(fresh.len());
            for &i in &fresh {
                let m = &batch[i];
                let Some(seq) = next.get_mut(m.conversation.as_str()) else {
                    return Err(StoreError::Unavailable(format!(
                        "no sequence allocated for {}",
                        m.conversation
                    )));
                };
                rows.push(json!([
                    m.server_id,
                    m.conversation,
                    *seq,
                    m.sender,
                    m.recipient,
                    m.client_id,
                    m.stamp_ms,
                    m.xml
                ]));
                receipts[i] = Some(CommitReceipt {
                    server_id: m.server_id.clone(),
                    seq: *seq,
                    stamp_ms: m.stamp_ms,
                    duplicate: false,
                });
                *seq += 1;
            }
            let inserted = sqlx::query(INSERT_MESSAGES)
                .bind(Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    // Only a server id used twice can collide here: sequences were just
                    // reserved and client ids were checked under the same write lock.
                    sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
                    e => unavailable(e),
                })?;
            if inserted.rows_affected() != fresh.len() as u64 {
                return Err(StoreError::Unavailable(format!(
                    "inserted {} of {} messages",
                    inserted.rows_affected(),
                    fresh.len()
                )));
            }
        }

        tx.commit().await.map_err(unavailable)?;

        for (index, first) in repeats {
            let mut receipt = receipts[first].clone();
            if let Some(receipt) = receipt.as_mut() {
                receipt.duplicate = true;
            }
            receipts[index] = receipt;
        }
        receipts
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StoreError::Unavailable("a message got no receipt".into()))
    }

    async fn history(
        &self,
        conversation: &str,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE conversation = ?1 AND seq > ?2 AND seq < ?3 \
             ORDER BY seq LIMIT ?4"
        ))
        .bind(conversation)
        .bind(seq_bound(after_seq.unwrap_or(0)))
        .bind(before_seq.map_or(i64::MAX, seq_bound))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(message_from_row).collect()
    }

    async fn message_by_id(&self, server_id: &str) -> StoreResult<Option<ArchivedMessage>> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE server_id = ?"
        ))
        .bind(server_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(message_from_row).transpose()
    }

    async fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM conversations WHERE conversation = ?")
                .bind(conversation)
                .fetch_optional(&self.reader)
                .await
                .map_err(unavailable)?;
        to_seq(last.unwrap_or(0), conversation)
    }

    async fn purge_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            // One transaction per chunk: appends queued on the writer run in between.
            let mut tx = self.begin_write().await?;
            let deleted = sqlx::query(
                "DELETE FROM messages WHERE rowid IN \
                 (SELECT rowid FROM messages WHERE stamp_ms < ?1 LIMIT ?2)",
            )
            .bind(cutoff_ms)
            .bind(PURGE_CHUNK)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            tx.commit().await.map_err(unavailable)?;
            total += deleted;
            if deleted < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The duplicate lookup must be index lookups per key, not a scan of the archive.
    #[tokio::test]
    async fn duplicate_lookup_uses_the_client_id_index() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(concat!("EXPLAIN QUERY PLAN ", find_duplicates!()))
                .bind("[]")
                .fetch_all(&store.reader)
                .await
                .expect("plan");
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details
                .iter()
                .any(|d| d.contains("USING INDEX messages_client_id")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.starts_with("SCAN m")),
            "{details:?}"
        );
    }

    /// History reads walk the (conversation, seq) index instead of sorting.
    #[tokio::test]
    async fn history_uses_the_sequence_index() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT server_id FROM messages \
             WHERE conversation = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
        )
        .bind("a b")
        .bind(0)
        .bind(10)
        .bind(5)
        .fetch_all(&store.reader)
        .await
        .expect("plan");
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details.iter().any(|d| d.contains("USING INDEX")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "{details:?}"
        );
    }
}
