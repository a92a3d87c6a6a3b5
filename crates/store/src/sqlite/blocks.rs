//! [`BlockStore`] over `blocklist` (XEP-0191).

use async_trait::async_trait;
use confab_core::store::{BlockStore, StoreResult};

use super::{SqliteStore, unavailable};

#[async_trait]
impl BlockStore for SqliteStore {
    async fn blocklist(&self, username: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT jid FROM blocklist WHERE owner = ? ORDER BY jid")
            .bind(username)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)
    }

    async fn block(&self, username: &str, jids: &[String]) -> StoreResult<()> {
        if jids.is_empty() {
            return Ok(());
        }
        // One transaction so a block request with several items applies whole or not at all,
        // and pays for one sync to disk instead of one per JID.
        let mut tx = self.begin_write().await?;
        for jid in jids {
            sqlx::query("INSERT INTO blocklist (owner, jid) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(username)
                .bind(jid.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn unblock(&self, username: &str, jids: &[String]) -> StoreResult<()> {
        if jids.is_empty() {
            // XEP-0191 §3.4: an unblock without items empties the list.
            sqlx::query("DELETE FROM blocklist WHERE owner = ?")
                .bind(username)
                .execute(&self.writer)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for jid in jids {
            sqlx::query("DELETE FROM blocklist WHERE owner = ? AND jid = ?")
                .bind(username)
                .bind(jid.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}
