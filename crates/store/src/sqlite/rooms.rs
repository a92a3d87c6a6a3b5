//! [`RoomStore`] over `muc_rooms` and `muc_affiliations` (XEP-0045 persistent rooms).

use async_trait::async_trait;
use confab_core::store::{GroupMeta, RoomStore, StoreError, StoreResult, StoredRoom};

use super::{SqliteStore, unavailable};

#[async_trait]
impl RoomStore for SqliteStore {
    async fn put_room(&self, room: &str, config: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO muc_rooms (room, config) VALUES (?, ?) \
             ON CONFLICT (room) DO UPDATE SET config = excluded.config",
        )
        .bind(room)
        .bind(config)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_room(&self, room: &str) -> StoreResult<()> {
        // Explicit deletes in one transaction rather than relying on the foreign key's
        // cascade, which only runs on connections with `foreign_keys` enabled.
        let mut tx = self.begin_write().await?;
        // The group row first, while the affiliations still say who must see it go.
        sqlx::query("DELETE FROM muc_groups WHERE room = ?")
            .bind(room)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("DELETE FROM muc_affiliations WHERE room = ?")
            .bind(room)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM muc_rooms WHERE room = ?")
            .bind(room)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn rooms(&self) -> StoreResult<Vec<StoredRoom>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT room, config FROM muc_rooms ORDER BY room")
                .fetch_all(&self.reader)
                .await
                .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(room, config)| StoredRoom { room, config })
            .collect())
    }

    async fn set_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM muc_rooms WHERE room = ?")
            .bind(room)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        match affiliation {
            Some(affiliation) => sqlx::query(
                "INSERT INTO muc_affiliations (room, jid, affiliation) VALUES (?, ?, ?) \
                 ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation",
            )
            .bind(room)
            .bind(jid)
            .bind(affiliation),
            None => sqlx::query("DELETE FROM muc_affiliations WHERE room = ? AND jid = ?")
                .bind(room)
                .bind(jid),
        }
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn affiliations(&self, room: &str) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as("SELECT jid, affiliation FROM muc_affiliations WHERE room = ? ORDER BY jid")
            .bind(room)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)
    }

    async fn put_group(&self, room: &str, meta: Option<&GroupMeta>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM muc_rooms WHERE room = ?")
            .bind(room)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        match meta {
            // An update that changes nothing leaves the row alone, so no feed change is
            // recorded for a save that did not touch the group (migration 0010 triggers).
            Some(meta) => sqlx::query(
                "INSERT INTO muc_groups (room, name, avatar, announcement) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (room) DO UPDATE SET name = excluded.name, \
                 avatar = excluded.avatar, announcement = excluded.announcement \
                 WHERE name IS NOT excluded.name OR avatar IS NOT excluded.avatar \
                 OR announcement IS NOT excluded.announcement",
            )
            .bind(room)
            .bind(&meta.name)
            .bind(&meta.avatar)
            .bind(&meta.announcement),
            None => sqlx::query("DELETE FROM muc_groups WHERE room = ?").bind(room),
        }
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_mentions(
        &self,
        conversation: &str,
        seq: u64,
        server_id: &str,
        members: &[String],
    ) -> StoreResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        for member in members {
            // Only a newer mention replaces the stored one: commits and their mention writes
            // may finish out of order.
            sqlx::query(
                "INSERT INTO group_mentions (owner, conversation, seq, server_id) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (owner, conversation) DO UPDATE \
                 SET seq = excluded.seq, server_id = excluded.server_id \
                 WHERE excluded.seq > seq",
            )
            .bind(member)
            .bind(conversation)
            .bind(seq)
            .bind(server_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}
