//! [`AppStore`] over `apps`.
//!
//! The adapter only stores and fetches; generating secrets and comparing them in constant
//! time is `confab_core::apps`' job, so no backend can get it wrong.

use async_trait::async_trait;
use confab_core::apps::{App, AppStore};
use confab_core::store::{StoreError, StoreResult};

use super::{SqliteStore, unavailable};

#[async_trait]
impl AppStore for SqliteStore {
    async fn put_app(&self, app: &App, secret_hash: &[u8; 32]) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO apps (client_id, name, secret_hash, created_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(app.client_id.as_str())
        .bind(app.name.as_str())
        .bind(secret_hash.as_slice())
        .bind(app.created_ms)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT client_id, name, created_ms FROM apps ORDER BY created_ms, client_id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(client_id, name, created_ms)| App {
                client_id,
                name,
                created_ms,
            })
            .collect())
    }

    async fn delete_app(&self, client_id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM apps WHERE client_id = ?")
            .bind(client_id)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn app_secret(&self, client_id: &str) -> StoreResult<Option<(App, [u8; 32])>> {
        let row: Option<(String, i64, Vec<u8>)> =
            sqlx::query_as("SELECT name, created_ms, secret_hash FROM apps WHERE client_id = ?")
                .bind(client_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(unavailable)?;
        let Some((name, created_ms, hash)) = row else {
            return Ok(None);
        };
        // The CHECK constraint makes this infallible unless the file was edited by hand.
        let hash: [u8; 32] = hash.try_into().map_err(|_| {
            StoreError::Unavailable(format!("app {client_id}: malformed secret hash"))
        })?;
        Ok(Some((
            App {
                client_id: client_id.to_owned(),
                name,
                created_ms,
            },
            hash,
        )))
    }
}
