//! [`ClientViewStore`] over `conversation_members`, `conversations` (with its `activity`
//! position) and `sync_changes`, all kept current at write time (migration 0006).
//!
//! A sync answer is read inside one read transaction: under WAL every statement of it sees the
//! same snapshot, taken at its first read, so the counter value it reports as the next token
//! and the changes it returns describe the same state.
//!
//! Cost: a conversation page or a sync answer walks the caller's membership rows (one per
//! conversation it has) and sorts them by activity; it never reads the archive beyond the
//! last message and the unread range of the conversations it returns. An index ordered by
//! activity per member would make pages independent of the conversation count, but it would
//! cost two index writes per conversation per batch on the append path, which is the hot
//! path this design keeps at one extra statement per batch.

use async_trait::async_trait;
use confab_core::archive::ArchivedMessage;
use confab_core::client_view::{
    ClientViewStore, ConversationCursor, ConversationPage, ConversationSummary, DocumentChange,
    GroupSummary, MAX_CONVERSATION_PAGE, MAX_SYNC_CHANGES, SyncError, SyncFeed, SyncToken,
};
use confab_core::store::{RosterItem, StoreError, StoreResult, Subscription};
use sqlx::SqliteConnection;

use super::{SqliteStore, unavailable};

/// The columns of one conversation summary, over a derived table `p` of the chosen
/// conversations (`owner`, `conversation`, `peer`, `last_seq`, `activity`). The unread count
/// is a range scan of the `(conversation, seq)` index from the read position on, and the last
/// message one lookup in it: per listed conversation, never per archived message. An unread
/// group mention (migration 0012) is one primary-key lookup.
macro_rules! summary_columns {
    () => {
        "SELECT p.conversation, p.peer, p.last_seq, p.activity, coalesce(r.seq, 0), \
         (SELECT count(*) FROM messages AS u WHERE u.conversation = p.conversation \
          AND u.seq > coalesce(r.seq, 0) AND u.sender <> p.owner AND u.counts_unread), \
         l.server_id, l.sender, l.recipient, l.client_id, l.stamp_ms, l.xml, g.server_id \
         FROM p \
         LEFT JOIN read_state AS r ON r.owner = p.owner AND r.conversation = p.conversation \
         LEFT JOIN group_mentions AS g ON g.owner = p.owner AND g.conversation = p.conversation \
           AND g.seq > coalesce(r.seq, 0) \
         LEFT JOIN messages AS l ON l.conversation = p.conversation AND l.seq = p.last_seq \
         ORDER BY p.activity DESC, p.conversation DESC"
    };
}

/// One page of an owner's conversations after the cursor `(?2, ?3)`, `?4` rows. The page is
/// chosen first (a CTE with its own LIMIT, kept apart from the joins), so the per-row work of
/// [`summary_columns!`] is done for the page only, not for every conversation of the owner.
const CONVERSATION_PAGE: &str = concat!(
    "WITH p AS MATERIALIZED (SELECT m.owner, m.conversation, m.peer, c.last_seq, c.activity \
     FROM conversation_members AS m JOIN conversations AS c ON c.conversation = m.conversation \
     WHERE m.owner = ?1 AND (c.activity < ?2 OR (c.activity = ?2 AND c.conversation < ?3)) \
     ORDER BY c.activity DESC, c.conversation DESC LIMIT ?4) ",
    summary_columns!()
);

/// The owner's (`?1`) conversations with a commit or a read-position change in
/// `(?2, ?3]`.
const CHANGED_CONVERSATIONS: &str = concat!(
    "WITH p AS MATERIALIZED (SELECT m.owner, m.conversation, m.peer, c.last_seq, c.activity \
     FROM conversation_members AS m JOIN conversations AS c ON c.conversation = m.conversation \
     WHERE m.owner = ?1 AND ((c.activity > ?2 AND c.activity <= ?3) OR EXISTS \
     (SELECT 1 FROM sync_changes AS s WHERE s.owner = m.owner AND s.kind = 'read' \
      AND s.key = m.conversation AND s.position > ?2 AND s.position <= ?3))) ",
    summary_columns!()
);

/// The position of every change record of the account (username `?1`, bare JID `?2`) in
/// `(?3, ?4]`, lowest first, from offset `?5`: the `?5`-th is where a page must end.
const NTH_CHANGE: &str = "SELECT position FROM ( \
     SELECT position FROM sync_changes WHERE owner = ?1 AND position > ?3 AND position <= ?4 \
     UNION ALL \
     SELECT position FROM sync_changes WHERE owner = ?2 AND position > ?3 AND position <= ?4 \
     UNION ALL \
     SELECT c.activity FROM conversation_members AS m \
     JOIN conversations AS c ON c.conversation = m.conversation \
     WHERE m.owner = ?2 AND c.activity > ?3 AND c.activity <= ?4 \
     UNION ALL \
     SELECT position FROM group_changes WHERE owner = ?2 AND position > ?3 AND position <= ?4) \
     ORDER BY position LIMIT 1 OFFSET ?5";

/// The owner's (`?1`, a bare JID) group change records in `(?2, ?3]`, sorted by room, with
/// the group as it is now: the `muc_groups` and membership columns are NULL when the owner is
/// no longer a member or the room no longer a group (a removal).
const GROUP_CHANGES: &str = "SELECT g.room, m.name, m.avatar, m.announcement, a.affiliation, \
     c.last_seq, l.server_id \
     FROM group_changes AS g \
     LEFT JOIN muc_groups AS m ON m.room = g.room \
     LEFT JOIN muc_affiliations AS a ON a.room = g.room AND a.jid = g.owner \
       AND a.affiliation IN ('member', 'admin', 'owner') \
     LEFT JOIN conversations AS c ON c.conversation = 'group:' || g.room \
     LEFT JOIN messages AS l ON l.conversation = c.conversation AND l.seq = c.last_seq \
     WHERE g.owner = ?1 AND g.position > ?2 AND g.position <= ?3 \
     ORDER BY g.room";

/// Column order of [`summary_columns!`].
type SummaryRow = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// A roster change: the contact, then the item's columns when it still exists.
type RosterRow = (
    String,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<bool>,
);

/// Column order of [`GROUP_CHANGES`].
type GroupRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// The group of a change row, or `Err(room)` when the owner is no longer in it.
fn group_from_row(row: GroupRow) -> StoreResult<Result<GroupSummary, String>> {
    let (room, name, avatar, announcement, affiliation, last_seq, last_id) = row;
    let (Some(name), Some(avatar), Some(announcement), Some(affiliation)) =
        (name, avatar, announcement, affiliation)
    else {
        return Ok(Err(room));
    };
    Ok(Ok(GroupSummary {
        room,
        name,
        avatar,
        announcement,
        affiliation,
        last_seq: to_u64(last_seq.unwrap_or(0), "sequence")?,
        last_id,
    }))
}

/// The owner's group changes in `(lo, hi]`: the groups it is in, and the rooms it left.
async fn group_changes(
    conn: &mut SqliteConnection,
    owner: &str,
    lo: i64,
    hi: i64,
) -> StoreResult<(Vec<GroupSummary>, Vec<String>)> {
    let rows: Vec<GroupRow> = sqlx::query_as(GROUP_CHANGES)
        .bind(owner)
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?;
    let mut groups = Vec::new();
    let mut removed = Vec::new();
    for row in rows {
        match group_from_row(row)? {
            Ok(group) => groups.push(group),
            Err(room) => removed.push(room),
        }
    }
    Ok((groups, removed))
}

/// A stored count or position back to `u64`; a negative one means a hand-edited file.
fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Unavailable(format!("corrupt {what}")))
}

/// A position as SQLite's signed integer; beyond `i64::MAX` nothing is stored anyway.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn summary_from_row(row: SummaryRow) -> StoreResult<ConversationSummary> {
    let (
        conversation,
        with,
        last_seq,
        activity,
        read_seq,
        unread,
        id,
        from,
        to,
        client_id,
        stamp,
        xml,
        mention,
    ) = row;
    let last_seq = to_u64(last_seq, "sequence")?;
    // The left join yields all of these or none of them.
    let last_message = match (id, from, to, stamp, xml) {
        (Some(server_id), Some(sender), Some(recipient), Some(stamp_ms), Some(xml)) => {
            Some(ArchivedMessage {
                server_id,
                conversation: conversation.clone(),
                seq: last_seq,
                sender,
                recipient,
                client_id,
                stamp_ms,
                xml,
            })
        }
        _ => None,
    };
    Ok(ConversationSummary {
        with,
        last_seq,
        last_message,
        read_seq: to_u64(read_seq, "read position")?,
        unread: to_u64(unread, "unread count")?,
        mention,
        activity: to_u64(activity, "activity position")?,
        conversation,
    })
}

/// The roster item of a change row, or `None` when the contact is no longer shown (deleted,
/// or only a hidden bookkeeping row).
fn roster_item(owner: &str, row: RosterRow) -> StoreResult<Option<RosterItem>> {
    let (jid, name, subscription, ask_out, groups, in_roster) = row;
    let (Some(subscription), Some(ask_out), Some(groups), Some(true)) =
        (subscription, ask_out, groups, in_roster)
    else {
        return Ok(None);
    };
    let subscription = Subscription::parse(&subscription).ok_or_else(|| {
        StoreError::Unavailable(format!("corrupt subscription in roster of {owner}"))
    })?;
    let groups = serde_json::from_str(&groups)
        .map_err(|_| StoreError::Unavailable(format!("corrupt groups in roster of {owner}")))?;
    Ok(Some(RosterItem {
        jid,
        name,
        subscription,
        ask_out,
        groups,
        in_roster: true,
        // Subscription bookkeeping stays on the server: the feed shows what a roster push
        // shows (RFC 6121 §2.1.2).
        pending_in: None,
        approved: false,
    }))
}

#[async_trait]
impl ClientViewStore for SqliteStore {
    async fn conversations(
        &self,
        owner: &str,
        after: Option<&ConversationCursor>,
        limit: u32,
    ) -> StoreResult<ConversationPage> {
        let limit = limit.min(MAX_CONVERSATION_PAGE);
        if limit == 0 {
            return Ok(ConversationPage::default());
        }
        let (activity, conversation) = match after {
            Some(cursor) => (to_i64(cursor.activity), cursor.conversation.as_str()),
            // Above every stored position, so the tie-break never applies.
            None => (i64::MAX, ""),
        };
        // One row more than the page shows whether another page follows.
        let rows: Vec<SummaryRow> = sqlx::query_as(CONVERSATION_PAGE)
            .bind(owner)
            .bind(activity)
            .bind(conversation)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        let more = rows.len() > limit as usize;
        let conversations = rows
            .into_iter()
            .take(limit as usize)
            .map(summary_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match conversations.last() {
            Some(last) if more => Some(ConversationCursor {
                activity: last.activity,
                conversation: last.conversation.clone(),
            }),
            _ => None,
        };
        Ok(ConversationPage {
            conversations,
            next,
        })
    }

    async fn groups(&self, owner: &str) -> StoreResult<Vec<GroupSummary>> {
        let mut conn = self.reader.acquire().await.map_err(unavailable)?;
        // Every change record the owner has is the latest of its group: the whole range is
        // the list (removed groups are dropped).
        let (groups, _) = group_changes(&mut conn, owner, 0, i64::MAX).await?;
        Ok(groups)
    }

    async fn sync(
        &self,
        username: &str,
        owner: &str,
        since: Option<&SyncToken>,
        limit: u32,
    ) -> Result<SyncFeed, SyncError> {
        let limit = limit.clamp(1, MAX_SYNC_CHANGES);
        let mut tx = self.reader.begin().await.map_err(unavailable)?;
        let feed = read_feed(&mut tx, username, owner, since, limit).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(feed)
    }
}

/// The position of the account's `offset`-th change record (from 0, lowest first) in
/// `(after, until]`, if there are that many.
async fn nth_change(
    conn: &mut SqliteConnection,
    username: &str,
    owner: &str,
    after: u64,
    until: u64,
    offset: u32,
) -> StoreResult<Option<u64>> {
    let position: Option<i64> = sqlx::query_scalar(NTH_CHANGE)
        .bind(username)
        .bind(owner)
        .bind(to_i64(after))
        .bind(to_i64(until))
        .bind(i64::from(offset))
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
    position.map(|p| to_u64(p, "change position")).transpose()
}

/// The body of [`ClientViewStore::sync`], inside its read transaction.
async fn read_feed(
    conn: &mut SqliteConnection,
    username: &str,
    owner: &str,
    since: Option<&SyncToken>,
    limit: u32,
) -> Result<SyncFeed, SyncError> {
    // The first read fixes the snapshot: everything below sees the state this counter
    // value describes.
    let (current, store, floor): (i64, String, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT last FROM change_seq), (SELECT store FROM store_identity), \
         (SELECT sync_floor FROM accounts WHERE username = ?1)",
    )
    .bind(username)
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    let current = to_u64(current, "change position")?;
    let floor = to_u64(floor.unwrap_or(0), "account sync floor")?;

    let after = match since {
        None => 0,
        Some(token) if token.store != store => return Err(SyncError::ForeignToken),
        Some(token) if token.position > current => {
            return Err(SyncError::TokenAhead {
                position: token.position,
                current,
            });
        }
        Some(token) if token.position < floor => return Err(SyncError::TokenPredatesAccount),
        Some(token) => token.position,
    };
    let full = since.is_none();

    // Where this answer ends: at `current`, unless more than `limit` change records lie
    // beyond `after`. Then it ends before the position of the first record that does not
    // fit, or, when the first position alone holds that many (one write touched many items),
    // just after it: records sharing a position are never split, or the next token would
    // skip the rest of them.
    let until = match nth_change(conn, username, owner, after, current, limit).await? {
        None => current,
        Some(cut) => match nth_change(conn, username, owner, after, current, 0).await? {
            Some(first) if first < cut => cut - 1,
            _ => cut,
        },
    };
    let more = until < current
        && nth_change(conn, username, owner, until, current, 0)
            .await?
            .is_some();
    let (lo, hi) = (to_i64(after), to_i64(until));

    let rows: Vec<RosterRow> = sqlx::query_as(
        "SELECT s.key, r.name, r.subscription, r.ask_out, r.groups, r.in_roster \
         FROM sync_changes AS s \
         LEFT JOIN roster_items AS r ON r.owner = s.owner AND r.contact = s.key \
         WHERE s.owner = ?1 AND s.kind = 'roster' AND s.position > ?2 AND s.position <= ?3 \
         ORDER BY s.key",
    )
    .bind(username)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    let mut roster = Vec::new();
    let mut roster_removed = Vec::new();
    for row in rows {
        let jid = row.0.clone();
        match roster_item(username, row)? {
            Some(item) => roster.push(item),
            None if !full => roster_removed.push(jid),
            None => {}
        }
    }

    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT s.key, d.xml FROM sync_changes AS s \
         LEFT JOIN documents AS d ON d.owner = s.owner AND d.key = s.key \
         WHERE s.owner = ?1 AND s.kind = 'document' AND s.position > ?2 AND s.position <= ?3 \
         ORDER BY s.key",
    )
    .bind(username)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    let documents = rows
        .into_iter()
        .filter(|(_, xml)| !full || xml.is_some())
        .map(|(key, xml)| DocumentChange { key, xml })
        .collect();

    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.key, coalesce(r.seq, 0) FROM sync_changes AS s \
         LEFT JOIN read_state AS r ON r.owner = s.owner AND r.conversation = s.key \
         WHERE s.owner = ?1 AND s.kind = 'read' AND s.position > ?2 AND s.position <= ?3 \
         ORDER BY s.key",
    )
    .bind(owner)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    let read_positions = rows
        .into_iter()
        .map(|(conversation, seq)| Ok((conversation, to_u64(seq, "read position")?)))
        .collect::<StoreResult<Vec<_>>>()?;

    let rows: Vec<SummaryRow> = sqlx::query_as(CHANGED_CONVERSATIONS)
        .bind(owner)
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?;
    let conversations = rows
        .into_iter()
        .map(summary_from_row)
        .collect::<StoreResult<Vec<_>>>()?;

    let (groups, mut groups_removed) = group_changes(conn, owner, lo, hi).await?;
    if full {
        groups_removed.clear();
    }

    Ok(SyncFeed {
        next: SyncToken {
            store,
            position: until,
        },
        full,
        more,
        roster,
        roster_removed,
        conversations,
        read_positions,
        documents,
        groups,
        groups_removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Details of the query plan of `statement` with `binds` string parameters.
    async fn plan(store: &SqliteStore, statement: &str, binds: usize) -> Vec<String> {
        // The statements are this module's constants; only the prefix is added.
        let explain = sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}"));
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(explain);
        for _ in 0..binds {
            query = query.bind("x");
        }
        query
            .fetch_all(&store.reader)
            .await
            .expect("plan")
            .into_iter()
            .map(|row| row.3)
            .collect()
    }

    /// Listing, changed-conversation and cut-off queries reach the owner's rows through
    /// primary keys and indexes: none scans `messages`, `conversations` or `sync_changes`.
    #[tokio::test]
    async fn client_view_queries_never_scan_shared_tables() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        for (statement, binds) in [
            (CONVERSATION_PAGE, 4),
            (CHANGED_CONVERSATIONS, 3),
            (NTH_CHANGE, 5),
            (GROUP_CHANGES, 3),
        ] {
            let details = plan(&store, statement, binds).await;
            // Every table is reached by a key or an index; the only scan allowed is of the
            // materialized page `p` itself.
            assert!(
                details
                    .iter()
                    .all(|d| !d.starts_with("SCAN ") || d == "SCAN p"),
                "{details:?}"
            );
        }
    }
}
