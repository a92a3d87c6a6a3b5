//! [`DocumentStore`] over `documents` (XEP-0049 private storage, XEP-0054 vCards, ...).

use async_trait::async_trait;
use confab_core::store::{DocumentStore, StoreResult};

use super::{SqliteStore, unavailable};

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn document(&self, username: &str, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT xml FROM documents WHERE owner = ? AND key = ?")
            .bind(username)
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)
    }

    async fn put_document(&self, username: &str, key: &str, xml: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO documents (owner, key, xml) VALUES (?, ?, ?) \
             ON CONFLICT (owner, key) DO UPDATE SET xml = excluded.xml",
        )
        .bind(username)
        .bind(key)
        .bind(xml)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
