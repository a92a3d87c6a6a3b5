//! [`OfflineStore`] over `offline_messages` (XEP-0160).

use async_trait::async_trait;
use confab_core::store::{OfflineMessage, OfflineStore, StoreError, StoreResult};

use super::{SqliteStore, unavailable};

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push_offline(&self, username: &str, message: &OfflineMessage) -> StoreResult<()> {
        // One statement does the quota check and the insert: a writing statement takes the
        // write lock before it reads, so two pushes cannot both see room for the last slot.
        let inserted = sqlx::query(
            "INSERT INTO offline_messages (owner, xml, stamp_ms) \
             SELECT ?1, ?2, ?3 \
             WHERE (SELECT COUNT(*) FROM offline_messages WHERE owner = ?1) < ?4",
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

    async fn take_offline(&self, username: &str) -> StoreResult<Vec<OfflineMessage>> {
        // Reading and deleting in one statement means a message pushed concurrently is either
        // returned now or kept for the next take, never lost between a SELECT and a DELETE.
        let mut rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "DELETE FROM offline_messages WHERE owner = ? RETURNING id, xml, stamp_ms",
        )
        .bind(username)
        .fetch_all(&self.writer)
        .await
        .map_err(unavailable)?;
        // SQLite does not promise an order for RETURNING rows; ids grow with arrival time.
        rows.sort_unstable_by_key(|(id, _, _)| *id);
        Ok(rows
            .into_iter()
            .map(|(_, xml, stamp_ms)| OfflineMessage { xml, stamp_ms })
            .collect())
    }
}
