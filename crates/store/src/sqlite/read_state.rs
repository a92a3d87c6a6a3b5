//! [`ReadStateStore`] over `read_state`, with unread counts and client-id lookups over the
//! archive's `messages` table.

use async_trait::async_trait;
use confab_core::store::{GroupReaders, ReadStateStore, StoreError, StoreResult};

use super::{SqliteStore, unavailable};

/// A stored position or count back to `u64`; a negative one means a hand-edited file.
fn to_u64(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Unavailable("corrupt read position".into()))
}

/// A sequence as SQLite's signed integer; beyond `i64::MAX` no message exists anyway.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl ReadStateStore for SqliteStore {
    async fn mark_read(&self, owner: &str, conversation: &str, seq: u64) -> StoreResult<u64> {
        // One statement: the max() in the upsert keeps positions monotonic even when two
        // devices' markers race, without a read-modify-write in the caller.
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO read_state (owner, conversation, seq) VALUES (?, ?, ?) \
             ON CONFLICT (owner, conversation) DO UPDATE SET seq = max(seq, excluded.seq) \
             RETURNING seq",
        )
        .bind(owner)
        .bind(conversation)
        .bind(to_i64(seq))
        .fetch_one(&self.writer)
        .await
        .map_err(unavailable)?;
        to_u64(stored)
    }

    async fn read_position(&self, owner: &str, conversation: &str) -> StoreResult<u64> {
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM read_state WHERE owner = ? AND conversation = ?")
                .bind(owner)
                .bind(conversation)
                .fetch_optional(&self.reader)
                .await
                .map_err(unavailable)?;
        to_u64(stored.unwrap_or(0))
    }

    async fn read_positions(&self, owner: &str) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT conversation, seq FROM read_state WHERE owner = ? ORDER BY conversation",
        )
        .bind(owner)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(conversation, seq)| Ok((conversation, to_u64(seq)?)))
            .collect()
    }

    async fn unread_count(&self, owner: &str, conversation: &str) -> StoreResult<u64> {
        // A range scan of the (conversation, seq) unique index from the read position on.
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE conversation = ?1 AND sender <> ?2 AND counts_unread AND seq > \
             coalesce((SELECT seq FROM read_state WHERE owner = ?2 AND conversation = ?1), 0)",
        )
        .bind(conversation)
        .bind(owner)
        .fetch_one(&self.reader)
        .await
        .map_err(unavailable)?;
        to_u64(count)
    }

    async fn seq_by_client_id(
        &self,
        conversation: &str,
        sender: &str,
        client_id: &str,
    ) -> StoreResult<Option<u64>> {
        // One lookup in the `messages_client_id` idempotency index.
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM messages WHERE conversation = ? AND sender = ? AND client_id = ?",
        )
        .bind(conversation)
        .bind(sender)
        .bind(client_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        seq.map(to_u64).transpose()
    }

    async fn is_group_member(&self, room: &str, jid: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM muc_affiliations AS a JOIN muc_groups AS g ON g.room = a.room \
             WHERE a.room = ? AND a.jid = ? AND a.affiliation IN ('member', 'admin', 'owner')",
        )
        .bind(room)
        .bind(jid)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(found.is_some())
    }

    async fn group_readers(&self, room: &str, seq: u64, sender: &str) -> StoreResult<GroupReaders> {
        // One read transaction, so the count and the readers describe the same membership.
        let mut tx = self.reader.begin().await.map_err(unavailable)?;
        let members: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM muc_affiliations \
             WHERE room = ? AND jid <> ? AND affiliation IN ('member', 'admin', 'owner')",
        )
        .bind(room)
        .bind(sender)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        // Per member one primary-key probe of `read_state`: a walk of the room's
        // affiliations, never of the archive.
        let readers: Vec<String> = sqlx::query_scalar(
            "SELECT a.jid FROM muc_affiliations AS a JOIN read_state AS r \
             ON r.owner = a.jid AND r.conversation = 'group:' || a.room \
             WHERE a.room = ? AND a.jid <> ? AND a.affiliation IN ('member', 'admin', 'owner') \
             AND r.seq >= ? ORDER BY a.jid",
        )
        .bind(room)
        .bind(sender)
        .bind(to_i64(seq))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        Ok(GroupReaders {
            readers,
            members: to_u64(members)?,
        })
    }
}
