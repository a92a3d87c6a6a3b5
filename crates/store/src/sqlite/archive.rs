//! [`ArchiveStore`] over `messages` and `conversations`.
//!
//! Appends, the message log's hot path, run on a connection of their own (`append.rs`);
//! reads and every other write go through sqlx.

use async_trait::async_trait;
use confab_core::archive::{
    AmendKind, Amendment, ArchiveDefault, ArchivePage, ArchivePrefs, ArchiveQuery, ArchiveStore,
    ArchivedMessage, CommitReceipt, MAX_QUERY_LIMIT, MessageVersion, NewMessage, Page,
};
use confab_core::store::{StoreError, StoreResult};

use super::{SqliteStore, unavailable};

/// Column list shared by the read queries, in [`MessageRow`] order.
macro_rules! columns {
    () => {
        "server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml"
    };
}

/// The filters of one half of an owner's archive, where the owner is in `$own` and the other
/// party in `$other`. Group messages (a conversation key without a space, see
/// `core::archive::group_conversation`) are the room's archive, not the sender's. Parameters: ?1 owner, ?2/?3 exclusive server id bounds (sentinels when
/// absent, so the index range always applies), ?4 `with` or NULL, ?5 JSON array to exclude,
/// ?6 JSON array to keep only or NULL, ?7/?8 inclusive stamp bounds.
macro_rules! mam_filter {
    ($own:literal, $other:literal) => {
        concat!(
            $own,
            " = ?1 AND server_id > ?2 AND server_id < ?3 \
             AND (?4 IS NULL OR ",
            $other,
            " = ?4) \
             AND ",
            $other,
            " NOT IN (SELECT value FROM json_each(?5)) \
             AND (?6 IS NULL OR ",
            $other,
            " IN (SELECT value FROM json_each(?6))) \
             AND stamp_ms >= ?7 AND stamp_ms <= ?8 \
             AND instr(conversation, ' ') > 0"
        )
    };
}

/// One page of an owner's archive in `$dir` server id order, `?9` rows: the sent half and
/// the received half (self-addressed messages only once) are each an index range scan
/// (`messages_sender`, `messages_recipient`) cut at `?9` rows, merged.
macro_rules! mam_page {
    ($dir:literal) => {
        concat!(
            "SELECT * FROM (SELECT ",
            columns!(),
            " FROM messages WHERE ",
            mam_filter!("sender", "recipient"),
            " ORDER BY server_id ",
            $dir,
            " LIMIT ?9) UNION ALL SELECT * FROM (SELECT ",
            columns!(),
            " FROM messages WHERE sender <> ?1 AND ",
            mam_filter!("recipient", "sender"),
            " ORDER BY server_id ",
            $dir,
            " LIMIT ?9) ORDER BY server_id ",
            $dir,
            " LIMIT ?9"
        )
    };
}

/// The filters of a conversation query. Parameters: ?1 conversation, ?2/?3 exclusive sequence
/// bounds, ?4 sender or NULL, ?5/?6 inclusive stamp bounds, ?7 JSON array of server ids or
/// NULL.
macro_rules! conversation_filter {
    () => {
        "conversation = ?1 AND seq > ?2 AND seq < ?3 AND (?4 IS NULL OR sender = ?4) \
         AND stamp_ms >= ?5 AND stamp_ms <= ?6 \
         AND (?7 IS NULL OR server_id IN (SELECT value FROM json_each(?7)))"
    };
}

/// One page of a conversation in `$dir` sequence order, `?8` rows: a range scan of the
/// (conversation, seq) index.
macro_rules! conversation_page {
    ($dir:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE ",
            conversation_filter!(),
            " ORDER BY seq ",
            $dir,
            " LIMIT ?8"
        )
    };
}

/// Every match of an owner's archive query, ignoring cursors (pass the sentinels).
const MAM_COUNT: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM messages WHERE ",
    mam_filter!("sender", "recipient"),
    ") + (SELECT COUNT(*) FROM messages WHERE sender <> ?1 AND ",
    mam_filter!("recipient", "sender"),
    ")"
);

/// Lower server id bound when a query has none: below every non-empty id.
const NO_AFTER: &str = "";
/// Upper server id bound when a query has none: above every id that does not start with
/// U+10FFFF, the last code point (server ids are ASCII UUIDs).
const NO_BEFORE: &str = "\u{10FFFF}";

/// Rows deleted per purge transaction: small enough that appends waiting for the writer
/// connection are held up for milliseconds, not for the whole purge.
const PURGE_CHUNK: i64 = 5_000;

/// Column order of `columns!()`.
type MessageRow = (
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    String,
);

/// One page from rows fetched with `limit + 1` (the extra row only says more exist), in
/// chronological order whichever way it was read.
fn archive_page(
    rows: Vec<MessageRow>,
    limit: u32,
    page: &Page,
    count: Option<u64>,
) -> StoreResult<ArchivePage> {
    let complete = rows.len() <= limit as usize;
    let mut messages = rows
        .into_iter()
        .take(limit as usize)
        .map(message_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    if *page == Page::Backward {
        messages.reverse();
    }
    Ok(ArchivePage {
        messages,
        complete,
        count,
    })
}

/// Turns a stored row back into a message; a negative sequence means a hand-edited file.
fn message_from_row(row: MessageRow) -> StoreResult<ArchivedMessage> {
    let (server_id, conversation, seq, sender, recipient, client_id, stamp_ms, xml) = row;
    Ok(ArchivedMessage {
        seq: to_seq(seq, &conversation)?,
        server_id,
        conversation,
        sender,
        recipient,
        client_id,
        stamp_ms,
        xml,
    })
}

pub(super) fn to_seq(value: i64, conversation: &str) -> StoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Unavailable(format!("corrupt sequence in {conversation}")))
}

/// A sequence bound as SQLite's signed integer; beyond `i64::MAX` nothing is stored anyway.
fn seq_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn append(&self, batch: &[NewMessage]) -> StoreResult<Vec<CommitReceipt>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The writer pool's only connection is this store's write turn: holding it keeps
        // every other write out while the append connection commits (see `append.rs`). Were
        // this future dropped mid-commit, a write let in early would only wait on SQLite's
        // lock (busy timeout), not interleave.
        let _turn = self.writer.acquire().await.map_err(unavailable)?;
        self.appender.append(batch.to_vec()).await
    }

    async fn history(
        &self,
        conversation: &str,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE conversation = ?1 AND seq > ?2 AND seq < ?3 \
             ORDER BY seq LIMIT ?4"
        ))
        .bind(conversation)
        .bind(seq_bound(after_seq.unwrap_or(0)))
        .bind(before_seq.map_or(i64::MAX, seq_bound))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(message_from_row).collect()
    }

    async fn message_by_id(&self, server_id: &str) -> StoreResult<Option<ArchivedMessage>> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE server_id = ?"
        ))
        .bind(server_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(message_from_row).transpose()
    }

    async fn find_message(
        &self,
        conversation: &str,
        sender: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<ArchivedMessage>> {
        // Two probes of unique indexes (primary key, `messages_client_id`); a server id
        // match wins over a client id that happens to look the same.
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE conversation = ?1 \
             AND (server_id = ?2 OR (?3 IS NOT NULL AND sender = ?3 AND client_id = ?2)) \
             ORDER BY server_id = ?2 DESC LIMIT 1"
        ))
        .bind(conversation)
        .bind(id)
        .bind(sender)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(message_from_row).transpose()
    }

    async fn amend(&self, amendment: &Amendment) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let current: Option<(String, i64)> =
            sqlx::query_as("SELECT xml, retracted FROM messages WHERE server_id = ?")
                .bind(&amendment.server_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some((xml, retracted)) = current else {
            return Err(StoreError::NotFound);
        };
        if retracted != 0 {
            return Err(StoreError::Conflict);
        }
        sqlx::query(
            "INSERT INTO message_versions (server_id, version, replaced_by, by_jid, stamp_ms, xml) \
             SELECT ?1, COUNT(*), ?2, ?3, ?4, ?5 FROM message_versions WHERE server_id = ?1",
        )
        .bind(&amendment.server_id)
        .bind(amendment.kind.as_str())
        .bind(&amendment.by)
        .bind(amendment.stamp_ms)
        .bind(&xml)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("UPDATE messages SET xml = ?2, retracted = ?3 WHERE server_id = ?1")
            .bind(&amendment.server_id)
            .bind(&amendment.xml)
            .bind(i64::from(amendment.kind == AmendKind::Retract))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn message_versions(&self, server_id: &str) -> StoreResult<Vec<MessageVersion>> {
        let rows: Vec<(i64, String, String, i64, String)> = sqlx::query_as(
            "SELECT version, replaced_by, by_jid, stamp_ms, xml FROM message_versions \
             WHERE server_id = ? ORDER BY version",
        )
        .bind(server_id)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(version, replaced_by, by, stamp_ms, xml)| {
                let corrupt = || StoreError::Unavailable(format!("corrupt version of {server_id}"));
                Ok(MessageVersion {
                    version: u32::try_from(version).map_err(|_| corrupt())?,
                    replaced_by: match replaced_by.as_str() {
                        "retract" => AmendKind::Retract,
                        "correct" => AmendKind::Correct,
                        _ => return Err(corrupt()),
                    },
                    by,
                    stamp_ms,
                    xml,
                })
            })
            .collect()
    }

    async fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM conversations WHERE conversation = ?")
                .bind(conversation)
                .fetch_optional(&self.reader)
                .await
                .map_err(unavailable)?;
        to_seq(last.unwrap_or(0), conversation)
    }

    async fn purge_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            // One transaction per chunk: appends queued on the writer run in between.
            let mut tx = self.begin_write().await?;
            let deleted = sqlx::query(
                "DELETE FROM messages WHERE rowid IN \
                 (SELECT rowid FROM messages WHERE stamp_ms < ?1 LIMIT ?2)",
            )
            .bind(cutoff_ms)
            .bind(PURGE_CHUNK)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            tx.commit().await.map_err(unavailable)?;
            total += deleted;
            if deleted < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn query_archive(&self, query: &ArchiveQuery) -> StoreResult<ArchivePage> {
        let owner = query.owner.as_str();
        for cursor in [&query.after_id, &query.before_id].into_iter().flatten() {
            if !self.in_archive(owner, cursor).await? {
                return Err(StoreError::NotFound);
            }
        }
        let limit = query.limit.min(MAX_QUERY_LIMIT);
        if let Some(ids) = &query.ids {
            return self.query_ids(query, ids, limit as usize).await;
        }
        let exclude = json_list(&query.exclude);
        let only = query.only.as_deref().map(json_list);
        let start = query.start_ms.unwrap_or(i64::MIN);
        let end = query.end_ms.unwrap_or(i64::MAX);

        let count = if query.count {
            let count: i64 = sqlx::query_scalar(MAM_COUNT)
                .bind(owner)
                .bind(NO_AFTER)
                .bind(NO_BEFORE)
                .bind(query.with.as_deref())
                .bind(&exclude)
                .bind(only.as_deref())
                .bind(start)
                .bind(end)
                .fetch_one(&self.reader)
                .await
                .map_err(unavailable)?;
            Some(u64::try_from(count).unwrap_or(0))
        } else {
            None
        };

        let statement = match query.page {
            Page::Forward => mam_page!("ASC"),
            Page::Backward => mam_page!("DESC"),
        };
        // One row more than the page shows whether anything lies beyond it.
        let rows: Vec<MessageRow> = sqlx::query_as(statement)
            .bind(owner)
            .bind(query.after_id.as_deref().unwrap_or(NO_AFTER))
            .bind(query.before_id.as_deref().unwrap_or(NO_BEFORE))
            .bind(query.with.as_deref())
            .bind(&exclude)
            .bind(only.as_deref())
            .bind(start)
            .bind(end)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        archive_page(rows, limit, &query.page, count)
    }

    async fn query_conversation(
        &self,
        conversation: &str,
        query: &ArchiveQuery,
    ) -> StoreResult<ArchivePage> {
        // Cursors become sequence bounds: within one conversation, sequence order is server
        // id order (both follow commit order), and the (conversation, seq) index serves it.
        let after = match &query.after_id {
            Some(id) => self.seq_in(conversation, id).await?,
            None => 0,
        };
        let before = match &query.before_id {
            Some(id) => self.seq_in(conversation, id).await?,
            None => i64::MAX,
        };
        let limit = query.limit.min(MAX_QUERY_LIMIT);
        let ids = query.ids.as_deref().map(json_list);
        let start = query.start_ms.unwrap_or(i64::MIN);
        let end = query.end_ms.unwrap_or(i64::MAX);
        let count = if query.count {
            let count: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM messages WHERE ",
                conversation_filter!()
            ))
            .bind(conversation)
            .bind(0_i64)
            .bind(i64::MAX)
            .bind(query.with.as_deref())
            .bind(start)
            .bind(end)
            .bind(ids.as_deref())
            .fetch_one(&self.reader)
            .await
            .map_err(unavailable)?;
            Some(u64::try_from(count).unwrap_or(0))
        } else {
            None
        };
        let statement = match query.page {
            Page::Forward => conversation_page!("ASC"),
            Page::Backward => conversation_page!("DESC"),
        };
        // One row more than the page shows whether anything lies beyond it.
        let rows: Vec<MessageRow> = sqlx::query_as(statement)
            .bind(conversation)
            .bind(after)
            .bind(before)
            .bind(query.with.as_deref())
            .bind(start)
            .bind(end)
            .bind(ids.as_deref())
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        archive_page(rows, limit, &query.page, count)
    }

    async fn archive_prefs(&self, owner: &str) -> StoreResult<ArchivePrefs> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT default_mode, always, never FROM mam_prefs WHERE owner = ?")
                .bind(owner)
                .fetch_optional(&self.reader)
                .await
                .map_err(unavailable)?;
        let Some((mode, always, never)) = row else {
            return Ok(ArchivePrefs::default());
        };
        Ok(ArchivePrefs {
            default: ArchiveDefault::parse(&mode).ok_or_else(|| {
                StoreError::Unavailable(format!("corrupt archive default {mode}"))
            })?,
            always: parse_list(&always)?,
            never: parse_list(&never)?,
        })
    }

    async fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> StoreResult<()> {
        let never = tidy(&prefs.never);
        let always: Vec<String> = tidy(&prefs.always)
            .into_iter()
            .filter(|jid| never.binary_search(jid).is_err())
            .collect();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO mam_prefs (owner, default_mode, always, never) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (owner) DO UPDATE SET default_mode = excluded.default_mode, \
             always = excluded.always, never = excluded.never",
        )
        .bind(owner)
        .bind(prefs.default.as_str())
        .bind(json_list(&always))
        .bind(json_list(&never))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

/// Whether a message belongs to the owner's view under every filter of `query` except the
/// cursors, the ids and the limit (the in-memory twin of `mam_filter!`, for the `ids` path).
fn in_view(query: &ArchiveQuery, message: &ArchivedMessage) -> bool {
    let owner = query.owner.as_str();
    if !message.conversation.contains(' ') {
        return false;
    }
    let other = if message.sender == owner {
        &message.recipient
    } else if message.recipient == owner {
        &message.sender
    } else {
        return false;
    };
    query.with.as_ref().is_none_or(|with| with == other)
        && !query.exclude.contains(other)
        && query.only.as_ref().is_none_or(|only| only.contains(other))
        && query.start_ms.is_none_or(|start| message.stamp_ms >= start)
        && query.end_ms.is_none_or(|end| message.stamp_ms <= end)
}

/// Cuts one page out of matches sorted by server id, and counts them if asked.
fn page_of(query: &ArchiveQuery, mut matches: Vec<ArchivedMessage>, limit: usize) -> ArchivePage {
    let count = query.count.then_some(matches.len() as u64);
    if let Some(after) = &query.after_id {
        matches.retain(|m| m.server_id > *after);
    }
    if let Some(before) = &query.before_id {
        matches.retain(|m| m.server_id < *before);
    }
    let complete = matches.len() <= limit;
    if !complete {
        match query.page {
            Page::Forward => matches.truncate(limit),
            Page::Backward => {
                matches.drain(..matches.len() - limit);
            }
        }
    }
    ArchivePage {
        messages: matches,
        complete,
        count,
    }
}

/// Preference lists as stored: sorted, without repeats.
fn tidy(jids: &[String]) -> Vec<String> {
    let mut jids = jids.to_vec();
    jids.sort();
    jids.dedup();
    jids
}

fn json_list(jids: &[String]) -> String {
    serde_json::to_string(jids).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("corrupt archive preferences: {e}")))
}

impl SqliteStore {
    /// Whether `server_id` is a message of `owner`'s archive (a valid RSM cursor).
    async fn in_archive(&self, owner: &str, server_id: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM messages WHERE server_id = ?1 AND (sender = ?2 OR recipient = ?2) \
             AND instr(conversation, ' ') > 0",
        )
        .bind(server_id)
        .bind(owner)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(found.is_some())
    }

    /// The sequence of the message `server_id` in `conversation`: a cursor of a conversation
    /// query. `NotFound` when it is not a message of that conversation.
    async fn seq_in(&self, conversation: &str, server_id: &str) -> StoreResult<i64> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM messages WHERE server_id = ?1 AND conversation = ?2",
        )
        .bind(server_id)
        .bind(conversation)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        seq.ok_or(StoreError::NotFound)
    }

    /// The `ids` form of a query: a handful of primary-key lookups, filtered and paged here.
    async fn query_ids(
        &self,
        query: &ArchiveQuery,
        ids: &[String],
        limit: usize,
    ) -> StoreResult<ArchivePage> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE server_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY server_id"
        ))
        .bind(json_list(ids))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let mut matches = Vec::with_capacity(rows.len());
        for row in rows {
            let message = message_from_row(row)?;
            if in_view(query, &message) {
                matches.push(message);
            }
        }
        Ok(page_of(query, matches, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions of an archive page are two index range scans (one per half of the
    /// owner's archive), never a scan of the table.
    #[tokio::test]
    async fn archive_pages_use_the_owner_indexes() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        for statement in [
            concat!("EXPLAIN QUERY PLAN ", mam_page!("ASC")),
            concat!("EXPLAIN QUERY PLAN ", mam_page!("DESC")),
        ] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(statement)
                .bind("alice@x")
                .bind(NO_AFTER)
                .bind(NO_BEFORE)
                .bind(None::<&str>)
                .bind("[]")
                .bind(None::<&str>)
                .bind(i64::MIN)
                .bind(i64::MAX)
                .bind(51)
                .fetch_all(&store.reader)
                .await
                .expect("plan");
            let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            for index in ["messages_sender", "messages_recipient"] {
                assert!(
                    details
                        .iter()
                        .any(|d| d.contains(&format!("USING INDEX {index} ("))
                            && d.contains("server_id>? AND server_id<?")),
                    "{index}: {details:?}"
                );
            }
            assert!(
                !details.iter().any(|d| d.starts_with("SCAN messages")),
                "{details:?}"
            );
        }
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(concat!(
            "EXPLAIN QUERY PLAN ",
            "SELECT 1 FROM messages WHERE server_id = ?1 AND (sender = ?2 OR recipient = ?2)"
        ))
        .bind("x")
        .bind("alice@x")
        .fetch_all(&store.reader)
        .await
        .expect("plan");
        assert!(
            plan.iter().all(|row| !row.3.starts_with("SCAN")),
            "{plan:?}"
        );
    }

    /// Conversation pages walk the (conversation, seq) index both ways instead of sorting.
    #[tokio::test]
    async fn conversation_pages_use_the_sequence_index() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        for statement in [
            concat!("EXPLAIN QUERY PLAN ", conversation_page!("ASC")),
            concat!("EXPLAIN QUERY PLAN ", conversation_page!("DESC")),
        ] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(statement)
                .bind("group:room@conference.x")
                .bind(0_i64)
                .bind(i64::MAX)
                .bind(None::<&str>)
                .bind(i64::MIN)
                .bind(i64::MAX)
                .bind(None::<&str>)
                .bind(51)
                .fetch_all(&store.reader)
                .await
                .expect("plan");
            let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert!(
                details.iter().any(|d| d.contains("USING INDEX")),
                "{details:?}"
            );
            assert!(
                !details.iter().any(|d| d.contains("TEMP B-TREE")),
                "{details:?}"
            );
        }
    }

    /// History reads walk the (conversation, seq) index instead of sorting.
    #[tokio::test]
    async fn history_uses_the_sequence_index() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT server_id FROM messages \
             WHERE conversation = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
        )
        .bind("a b")
        .bind(0)
        .bind(10)
        .bind(5)
        .fetch_all(&store.reader)
        .await
        .expect("plan");
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details.iter().any(|d| d.contains("USING INDEX")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "{details:?}"
        );
    }
}
