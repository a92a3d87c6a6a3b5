//! [`AccountStore`] over the `accounts` table.

use async_trait::async_trait;
use confab_core::store::{AccountStore, StoreError, StoreResult, StoredCredentials};

use super::{SqliteStore, now_ms, unavailable};

/// Column order shared by the credential queries below.
type CredentialRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(
        &self,
        username: &str,
        credentials: &StoredCredentials,
    ) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO accounts (username, salt, iterations, stored_key_sha1, server_key_sha1, \
             stored_key_sha256, server_key_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(credentials.salt.as_slice())
        .bind(i64::from(credentials.iterations))
        .bind(credentials.stored_key_sha1.as_slice())
        .bind(credentials.server_key_sha1.as_slice())
        .bind(credentials.stored_key_sha256.as_slice())
        .bind(credentials.server_key_sha256.as_slice())
        .bind(now_ms())
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            // The primary key is the only unique constraint, so a violation means the name is
            // taken, including by a concurrent registration that won the race.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_account(&self, username: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM accounts WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if deleted.rows_affected() == 0 {
            // Dropping the transaction rolls it back; nothing was changed anyway.
            return Err(StoreError::NotFound);
        }
        // The other tables have no foreign key to `accounts` (see the migration), so every
        // table holding per-user rows must be listed here.
        for statement in [
            "DELETE FROM roster_items WHERE owner = ?",
            "DELETE FROM roster_versions WHERE owner = ?",
            "DELETE FROM offline_messages WHERE owner = ?",
            "DELETE FROM offline_cursors WHERE owner = ?",
            "DELETE FROM documents WHERE owner = ?",
            "DELETE FROM blocklist WHERE owner = ?",
            // These are keyed by bare JID; the store does not know the domain, so they are
            // matched by the localpart before the '@' (exact, no LIKE wildcards).
            "DELETE FROM read_state WHERE substr(owner, 1, instr(owner, '@') - 1) = ?",
            "DELETE FROM im_tokens WHERE substr(owner, 1, instr(owner, '@') - 1) = ?",
            // Client views (migration 0006), last: deleting the rows above records changes.
            // Username-keyed rows, then bare-JID-keyed ones by the primary-key range of the
            // JIDs with this localpart ('A' follows '@').
            "DELETE FROM sync_changes WHERE owner = ?1",
            "DELETE FROM sync_changes WHERE owner >= ?1 || '@' AND owner < ?1 || 'A'",
            "DELETE FROM conversation_members WHERE owner >= ?1 || '@' AND owner < ?1 || 'A'",
        ] {
            sqlx::query(statement)
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn set_credentials(
        &self,
        username: &str,
        credentials: &StoredCredentials,
    ) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE accounts SET salt = ?, iterations = ?, stored_key_sha1 = ?, \
             server_key_sha1 = ?, stored_key_sha256 = ?, server_key_sha256 = ? \
             WHERE username = ?",
        )
        .bind(credentials.salt.as_slice())
        .bind(i64::from(credentials.iterations))
        .bind(credentials.stored_key_sha1.as_slice())
        .bind(credentials.server_key_sha1.as_slice())
        .bind(credentials.stored_key_sha256.as_slice())
        .bind(credentials.server_key_sha256.as_slice())
        .bind(username)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<StoredCredentials>> {
        let row: Option<CredentialRow> = sqlx::query_as(
            "SELECT salt, iterations, stored_key_sha1, server_key_sha1, stored_key_sha256, \
             server_key_sha256 FROM accounts WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        let Some((salt, iterations, sk1, svk1, sk256, svk256)) = row else {
            return Ok(None);
        };
        // The schema's CHECK keeps this in range; a failure means the file was edited by hand.
        let iterations = u32::try_from(iterations).map_err(|_| {
            StoreError::Unavailable(format!("corrupt iteration count for account {username}"))
        })?;
        Ok(Some(StoredCredentials {
            salt,
            iterations,
            stored_key_sha1: sk1,
            server_key_sha1: svk1,
            stored_key_sha256: sk256,
            server_key_sha256: svk256,
        }))
    }

    async fn account_exists(&self, username: &str) -> StoreResult<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE username = ?)")
            .bind(username)
            .fetch_one(&self.reader)
            .await
            .map_err(unavailable)
    }

    async fn list_accounts(&self) -> StoreResult<Vec<String>> {
        // SQLite's default BINARY collation compares UTF-8 bytes, which is the same order as
        // Rust's `str` ordering, so callers may binary-search the result.
        sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)
    }
}
