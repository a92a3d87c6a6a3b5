//! [`RosterStore`] over `roster_items` and `roster_versions`.
//!
//! Every change bumps the owner's version in the same transaction, so a version number always
//! names exactly one roster state (XEP-0237 §4).

use async_trait::async_trait;
use confab_core::store::{RosterItem, RosterStore, StoreError, StoreResult, Subscription};
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, unavailable};

/// Column order shared by the item queries below.
type ItemRow = (
    String,
    Option<String>,
    String,
    bool,
    Option<String>,
    bool,
    String,
    bool,
);

/// Turns a stored row back into an item; a malformed column is reported, not guessed at.
fn item_from_row(owner: &str, row: ItemRow) -> StoreResult<RosterItem> {
    let (jid, name, subscription, ask_out, pending_in, approved, groups, in_roster) = row;
    let subscription = Subscription::parse(&subscription).ok_or_else(|| {
        StoreError::Unavailable(format!("corrupt subscription in roster of {owner}"))
    })?;
    let groups = serde_json::from_str(&groups)
        .map_err(|_| StoreError::Unavailable(format!("corrupt groups in roster of {owner}")))?;
    Ok(RosterItem {
        jid,
        name,
        subscription,
        ask_out,
        pending_in,
        approved,
        groups,
        in_roster,
    })
}

/// Gives the owner a new roster version inside `tx` and returns it.
///
/// Values come from the store-wide `roster_version_seq` (see the migration for why), so they
/// increase strictly for every owner and are never reused, even across account re-creation.
async fn bump_version(tx: &mut Transaction<'static, Sqlite>, owner: &str) -> StoreResult<u64> {
    let version: i64 =
        sqlx::query_scalar("UPDATE roster_version_seq SET last = last + 1 RETURNING last")
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
    sqlx::query(
        "INSERT INTO roster_versions (owner, version) VALUES (?, ?) \
         ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
    )
    .bind(owner)
    .bind(version)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    u64::try_from(version)
        .map_err(|_| StoreError::Unavailable(format!("corrupt roster version of {owner}")))
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn roster(&self, username: &str) -> StoreResult<(u64, Vec<RosterItem>)> {
        // The version and the rows must come from one snapshot, or a concurrent change could
        // pair the new version with the old rows and the client would never see that change.
        let mut tx = self.reader.begin().await.map_err(unavailable)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM roster_versions WHERE owner = ?")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let rows: Vec<ItemRow> = sqlx::query_as(
            "SELECT contact, name, subscription, ask_out, pending_in, approved, groups, \
             in_roster FROM roster_items WHERE owner = ? ORDER BY contact",
        )
        .bind(username)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;

        let version = u64::try_from(version.unwrap_or(0)).map_err(|_| {
            StoreError::Unavailable(format!("corrupt roster version of {username}"))
        })?;
        let items = rows
            .into_iter()
            .map(|row| item_from_row(username, row))
            .collect::<StoreResult<_>>()?;
        Ok((version, items))
    }

    async fn roster_item(&self, username: &str, contact: &str) -> StoreResult<Option<RosterItem>> {
        let row: Option<ItemRow> = sqlx::query_as(
            "SELECT contact, name, subscription, ask_out, pending_in, approved, groups, \
             in_roster FROM roster_items WHERE owner = ? AND contact = ?",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(|row| item_from_row(username, row)).transpose()
    }

    async fn put_roster_item(&self, username: &str, item: &RosterItem) -> StoreResult<u64> {
        let groups = serde_json::to_string(&item.groups)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode roster groups: {e}")))?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO roster_items (owner, contact, name, subscription, ask_out, pending_in, \
             approved, groups, in_roster) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name, \
             subscription = excluded.subscription, ask_out = excluded.ask_out, \
             pending_in = excluded.pending_in, approved = excluded.approved, \
             groups = excluded.groups, in_roster = excluded.in_roster",
        )
        .bind(username)
        .bind(item.jid.as_str())
        .bind(item.name.as_deref())
        .bind(item.subscription.as_str())
        .bind(item.ask_out)
        .bind(item.pending_in.as_deref())
        .bind(item.approved)
        .bind(groups)
        .bind(item.in_roster)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(version)
    }

    async fn remove_roster_item(&self, username: &str, contact: &str) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM roster_items WHERE owner = ? AND contact = ?")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Bumped even when no row matched: the trait promises a new version per call, and a
        // spare increment costs nothing but a full roster push to clients on an old version.
        let version = bump_version(&mut tx, username).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(version)
    }
}
