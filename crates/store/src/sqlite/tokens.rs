//! [`TokenStore`] over `im_tokens`.
//!
//! Lookups are by equality on the SHA-256 of the presented token, which is the primary key.
//! No constant-time comparison is needed: the B-tree search compares hashes, and what its
//! timing could reveal is how much of a stored *hash* a guess's hash shares. That does not
//! help to find a token: a token whose hash matches a stored one is a SHA-256 preimage, and the
//! token itself (256 random bits) never reaches the database.

use async_trait::async_trait;
use confab_core::store::{StoreError, StoreResult, TokenInfo, TokenStore};

use super::{SqliteStore, unavailable};

/// Session ids are `u64`; SQLite integers are `i64`. Stored bit for bit so every id fits.
fn session_to_sql(session: u64) -> i64 {
    i64::from_ne_bytes(session.to_ne_bytes())
}

fn session_from_sql(session: i64) -> u64 {
    u64::from_ne_bytes(session.to_ne_bytes())
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn put_token(&self, hash: &[u8; 32], info: &TokenInfo) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO im_tokens (hash, owner, full_jid, session, created_ms, expires_ms) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(hash.as_slice())
        .bind(info.owner.as_str())
        .bind(info.full_jid.as_str())
        .bind(session_to_sql(info.session))
        .bind(info.created_ms)
        .bind(info.expires_ms)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn token_owner(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenInfo>> {
        let row: Option<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT owner, full_jid, session, created_ms, expires_ms FROM im_tokens \
             WHERE hash = ?",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(row.map(
            |(owner, full_jid, session, created_ms, expires_ms)| TokenInfo {
                owner,
                full_jid,
                session: session_from_sql(session),
                created_ms,
                expires_ms,
            },
        ))
    }

    async fn revoke_for_session(&self, full_jid: &str, session: u64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM im_tokens WHERE full_jid = ? AND session = ?")
            .bind(full_jid)
            .bind(session_to_sql(session))
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn revoke_all(&self) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM im_tokens")
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
