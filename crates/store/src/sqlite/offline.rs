//! [`OfflineStore`] over `offline_messages` (XEP-0160): references into `messages` for
//! archived messages, copies for the rest.

use async_trait::async_trait;
use confab_core::store::{OfflineMessage, OfflineStore, StoreError, StoreResult};

use super::{SqliteStore, unavailable};

/// Queue rows as a take returns them: `(id, server_id, xml, stamp_ms)`, where a reference's
/// `xml` and `stamp_ms` come from the archive and are NULL once the message was purged.
type QueueRow = (i64, Option<String>, Option<String>, Option<i64>);

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push_offline(&self, username: &str, message: &OfflineMessage) -> StoreResult<()> {
        // One statement does the quota check and the insert: a writing statement takes the
        // write lock before it reads, so two pushes cannot both see room for the last slot.
        let inserted = sqlx::query(
            "INSERT INTO offline_messages (owner, xml, stamp_ms) \
             SELECT ?1, ?2, ?3 \
             WHERE (SELECT COUNT(*) FROM offline_messages \
                    WHERE owner = ?1 AND xml IS NOT NULL) < ?4",
        )
        .bind(username)
        .bind(message.xml.as_str())
        .bind(message.stamp_ms)
        .bind(i64::from(self.offline_quota))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Quota("offline messages"));
        }
        Ok(())
    }

    async fn push_offline_archived(&self, username: &str, server_id: &str) -> StoreResult<()> {
        // The archive keeps bare JIDs; `username@` prefixes exactly this account's. A message
        // committed `for_later` and still ahead of the account's cursor is queued already.
        let inserted = sqlx::query(
            "INSERT INTO offline_messages (owner, server_id, stamp_ms) \
             SELECT ?1, server_id, stamp_ms FROM messages \
             WHERE server_id = ?2 AND substr(recipient, 1, length(?1) + 1) = ?1 || '@' \
             AND NOT (for_later = 1 AND server_id > COALESCE( \
                 (SELECT server_id FROM offline_cursors WHERE owner = ?1), ''))",
        )
        .bind(username)
        .bind(server_id)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        if inserted.rows_affected() > 0 {
            return Ok(());
        }
        let archived: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM messages \
             WHERE server_id = ?2 AND substr(recipient, 1, length(?1) + 1) = ?1 || '@'",
        )
        .bind(username)
        .bind(server_id)
        .fetch_optional(&self.writer)
        .await
        .map_err(unavailable)?;
        archived.map(drop).ok_or(StoreError::NotFound)
    }

    async fn take_offline(&self, username: &str) -> StoreResult<Vec<OfflineMessage>> {
        // Reading, deleting and moving the cursor in one transaction means a message queued
        // or committed concurrently is either returned now or kept for the next take.
        let mut tx = self.begin_write().await?;
        // Flagged at commit and past the cursor; `[username@, usernameA)` is exactly the
        // bare JIDs with this localpart ('A' follows '@'), a range of `messages_for_later`.
        let flagged: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT server_id, xml, stamp_ms FROM messages \
             WHERE for_later = 1 AND recipient >= ?1 || '@' AND recipient < ?1 || 'A' \
             AND server_id > COALESCE((SELECT server_id FROM offline_cursors WHERE owner = ?1), '') \
             ORDER BY server_id",
        )
        .bind(username)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut queued: Vec<QueueRow> = sqlx::query_as(
            "SELECT q.id, q.server_id, COALESCE(q.xml, m.xml), \
                    CASE WHEN q.xml IS NULL THEN m.stamp_ms ELSE q.stamp_ms END \
             FROM offline_messages AS q LEFT JOIN messages AS m ON m.server_id = q.server_id \
             WHERE q.owner = ?",
        )
        .bind(username)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        if !queued.is_empty() {
            sqlx::query("DELETE FROM offline_messages WHERE owner = ?")
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        if let Some((last, ..)) = flagged.last() {
            sqlx::query(
                "INSERT INTO offline_cursors (owner, server_id) VALUES (?1, ?2) \
                 ON CONFLICT (owner) DO UPDATE SET server_id = excluded.server_id",
            )
            .bind(username)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;

        // Ids grow with arrival time.
        queued.sort_unstable_by_key(|(id, ..)| *id);
        let flagged = flagged
            .into_iter()
            .map(|(server_id, xml, stamp_ms)| OfflineMessage {
                xml,
                stamp_ms,
                archived: Some(server_id),
            });
        let queued = queued
            .into_iter()
            .filter_map(|(_, archived, xml, stamp_ms)| {
                Some(OfflineMessage {
                    xml: xml?,
                    stamp_ms: stamp_ms?,
                    archived,
                })
            });
        let messages = merge_by_stamp(flagged.collect(), queued.collect());
        Ok(messages)
    }
}

/// Merges two lists that are each in arrival order into one, by server time; each list keeps
/// its own order (a copy's stamp is the caller's, so it need not be monotonic).
fn merge_by_stamp(
    flagged: Vec<OfflineMessage>,
    queued: Vec<OfflineMessage>,
) -> Vec<OfflineMessage> {
    let mut merged = Vec::with_capacity(flagged.len() + queued.len());
    let mut flagged = flagged.into_iter().peekable();
    let mut queued = queued.into_iter().peekable();
    loop {
        let take_flagged = match (flagged.peek(), queued.peek()) {
            (Some(f), Some(q)) => f.stamp_ms <= q.stamp_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return merged,
        };
        let next = if take_flagged {
            flagged.next()
        } else {
            queued.next()
        };
        merged.extend(next);
    }
}
