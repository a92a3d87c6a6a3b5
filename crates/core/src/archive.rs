//! The message archive port: the durable, ordered log every chat message is committed to
//! before it is acknowledged or delivered (DESIGN.md, "Delivery model").
//!
//! A message belongs to one *conversation* (a pair of accounts today, a group later). At
//! commit the store gives it the next number of that conversation's gap-free sequence, and
//! keeps the server id and server time the caller chose. A message carrying a client id
//! (XEP-0359 `origin-id`, or the stanza `id`) that its sender already used in the same
//! conversation is not stored again: the store answers with the original receipt, so a
//! client resending after a lost acknowledgement gets exactly the answer it missed.
//!
//! The contract is deliberately SQL-neutral: an adapter needs a transaction, a unique
//! constraint and a counter per conversation (SQLite: one `BEGIN IMMEDIATE` writer;
//! PostgreSQL: `INSERT … ON CONFLICT` on a `conversations` row locked `FOR UPDATE`).

use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use jid::BareJid;

/// A message to commit. The server id and the stamp are chosen before the commit, because both
/// are written into the XML the recipient sees (XEP-0359 `<stanza-id/>`). A store commits a
/// batch in the order given; the message log makes that the order of the server ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Server-assigned unique id, time-ordered (see [`new_server_id`]). Discarded if the
    /// message turns out to be a duplicate.
    pub server_id: String,
    /// The conversation it belongs to (see [`direct_conversation`]).
    pub conversation: String,
    /// The sender's bare JID.
    pub sender: String,
    /// The recipient's bare JID.
    pub recipient: String,
    /// The id the sending client gave it, if any: what makes a resend recognisable.
    pub client_id: Option<String>,
    /// Server time at receipt, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The serialized `<message/>` as delivered; opaque to the store.
    pub xml: String,
    /// Whether the message counts toward the recipient's unread count: true for content
    /// (a body), false for receipts and markers, which are archived but are not news.
    pub counts_unread: bool,
    /// Whether the recipient had no resource to take the message when it was committed: it
    /// is then in the recipient's offline queue from the same transaction on (see
    /// [`OfflineStore`](crate::store::OfflineStore)), so no crash between commit and delivery
    /// can lose it.
    pub for_later: bool,
}

/// What a commit assigned to one message, or, for a duplicate, what it assigned the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The server id of the stored message.
    pub server_id: String,
    /// Its position in the conversation, starting at 1, without gaps.
    pub seq: u64,
    /// Its server time, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// True when nothing was stored because the sender had already committed this client id
    /// in this conversation; the other fields then describe the original.
    pub duplicate: bool,
}

/// A stored message, as history reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The server id.
    pub server_id: String,
    /// The conversation it belongs to.
    pub conversation: String,
    /// Its position in the conversation.
    pub seq: u64,
    /// The sender's bare JID.
    pub sender: String,
    /// The recipient's bare JID.
    pub recipient: String,
    /// The client id it was sent with, if any.
    pub client_id: Option<String>,
    /// Server time at receipt, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The serialized `<message/>` as delivered.
    pub xml: String,
}

/// What an [`Amendment`] does to an archived message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmendKind {
    /// XEP-0424 retraction or XEP-0425 moderation: the visible copy becomes a tombstone and
    /// the message is marked retracted, which no later amendment can undo.
    Retract,
    /// XEP-0308 correction: the visible copy becomes the corrected message.
    Correct,
}

impl AmendKind {
    /// The name stored in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retract => "retract",
            Self::Correct => "correct",
        }
    }
}

/// A change to the copy of an archived message that readers (MAM, offline delivery, HTTP
/// history) see. The copy it replaces is kept in the audit trail, never served to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amendment {
    /// The server id of the message to amend.
    pub server_id: String,
    /// Retraction or correction.
    pub kind: AmendKind,
    /// The bare JID of whoever amends it (the sender, or a group moderator).
    pub by: String,
    /// Server time of the amendment, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The new visible `<message/>`: a tombstone or the corrected message.
    pub xml: String,
}

/// One superseded visible copy of an archived message, from the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageVersion {
    /// 0 for the message as first committed, then 1, 2, … for each later copy replaced.
    pub version: u32,
    /// The amendment that replaced this copy.
    pub replaced_by: AmendKind,
    /// Who made that amendment (bare JID).
    pub by: String,
    /// When that amendment was made, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The copy as readers saw it before.
    pub xml: String,
}

/// Most messages one archive query returns, whatever the caller asks for.
pub const MAX_QUERY_LIMIT: u32 = 250;

/// Messages an archive query returns when the caller names no limit.
pub const DEFAULT_QUERY_LIMIT: u32 = 50;

/// Which way a query pages through an owner's archive, in server id order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Page {
    /// The first `limit` matches with a server id above `after` (from the start without one):
    /// XEP-0059 `<after/>`, or no cursor at all.
    #[default]
    Forward,
    /// The last `limit` matches with a server id below `before` (up to the end without one):
    /// XEP-0059 `<before/>`, and `<before/>` without a value for the last page.
    Backward,
}

/// A query over one owner's archive: the one-to-one messages the owner sent or received
/// (XEP-0313 user archive). Every filter narrows the result; the cursors are server ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiveQuery {
    /// The owner's bare JID: only messages it sent or received are seen.
    pub owner: String,
    /// Only the conversation with this bare JID (XEP-0313 §4.1.1 `with`). A full JID is the
    /// caller's to reduce to its bare JID: Confab archives bare JIDs only.
    pub with: Option<String>,
    /// Only messages stamped at or after this time (ms since the epoch; §4.1.2 `start`).
    pub start_ms: Option<i64>,
    /// Only messages stamped at or before this time (ms since the epoch; §4.1.2 `end`).
    pub end_ms: Option<i64>,
    /// Only messages with a server id above this one. Must name a message of the owner's
    /// archive, else the query fails with [`StoreError::NotFound`](crate::store::StoreError).
    pub after_id: Option<String>,
    /// Only messages with a server id below this one; same rule as `after_id`.
    pub before_id: Option<String>,
    /// Only messages with these server ids (XEP-0313 `ids` field); `None` for no such filter.
    pub ids: Option<Vec<String>>,
    /// Which end of the matching range the page is taken from.
    pub page: Page,
    /// Most messages returned; capped at [`MAX_QUERY_LIMIT`]. Zero returns no messages,
    /// which with `count` asks only for the size of the result set (XEP-0059 §2.5).
    pub limit: u32,
    /// Whether to count every match, ignoring the cursors and the limit.
    pub count: bool,
    /// Messages whose other party is one of these bare JIDs are not seen (preferences).
    pub exclude: Vec<String>,
    /// When set, only messages whose other party is one of these bare JIDs are seen
    /// (preferences with a default of `never` or `roster`).
    pub only: Option<Vec<String>>,
}

/// One page of an [`ArchiveQuery`]: matching messages in ascending server id order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchivePage {
    /// The messages, lowest server id first, whichever way the query paged.
    pub messages: Vec<ArchivedMessage>,
    /// True when no further match lies beyond this page in the paging direction (after the
    /// last message going forward, before the first going backward): XEP-0313 `complete`.
    pub complete: bool,
    /// The number of matches ignoring cursors and limit, when the query asked for it.
    pub count: Option<u64>,
}

impl ArchivePage {
    /// The server id of the first message of the page (XEP-0059 `<first/>`).
    pub fn first_id(&self) -> Option<&str> {
        self.messages.first().map(|m| m.server_id.as_str())
    }

    /// The server id of the last message of the page (XEP-0059 `<last/>`).
    pub fn last_id(&self) -> Option<&str> {
        self.messages.last().map(|m| m.server_id.as_str())
    }
}

/// XEP-0313 §6 default archiving preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveDefault {
    /// Every conversation is in the archive view.
    #[default]
    Always,
    /// Only conversations with JIDs in `always`.
    Never,
    /// Conversations with roster contacts, plus `always`.
    Roster,
}

impl ArchiveDefault {
    /// The attribute value of `<prefs default='…'/>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
            Self::Roster => "roster",
        }
    }

    /// Parses the attribute value of `<prefs default='…'/>`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            "roster" => Some(Self::Roster),
            _ => None,
        }
    }
}

/// A user's archiving preferences (XEP-0313 §6). Confab commits every message for delivery
/// whatever they say (DESIGN.md, "Delivery model"); they govern what the user's own archive
/// queries return, at query time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchivePrefs {
    /// What happens to conversations with JIDs in neither list.
    pub default: ArchiveDefault,
    /// Bare JIDs whose conversations are always shown, sorted.
    pub always: Vec<String>,
    /// Bare JIDs whose conversations are never shown, sorted; wins over `always`.
    pub never: Vec<String>,
}

/// The conversation key of two accounts' one-to-one chat, the same whichever of them sends.
///
/// Bare JIDs cannot contain a space (RFC 7622 §3.3.1 and §3.2 disallow it in the localpart and
/// domainpart), so joining the two sorted JIDs with one keeps every pair distinct, and distinct
/// from the bare JID a group conversation will be keyed by.
pub fn direct_conversation(a: &BareJid, b: &BareJid) -> String {
    let (a, b) = (a.as_str(), b.as_str());
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{low} {high}")
}

/// The conversation key of a group chat room: `group:` and the room's bare JID. No space, so
/// it never looks like a [`direct_conversation`] pair (the store keeps one-to-one archives
/// and conversation lists to keys with a space).
pub fn group_conversation(room: &BareJid) -> String {
    format!("group:{room}")
}

/// A fresh server id: a UUIDv7 (RFC 9562 §5.7) in its hyphenated lowercase form. Ids made by
/// one process sort in creation order, as text too, which keeps archive indexes append-mostly.
pub fn new_server_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// The message archive (see the module documentation).
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Commits a batch atomically, in order, and returns one receipt per message, in the same
    /// order. Each new message gets its conversation's next sequence number. A message whose
    /// `(conversation, sender, client_id)` is already stored, or appears earlier in the same
    /// batch, is not stored: its receipt is the original's, with `duplicate` set. On error
    /// nothing of the batch was stored.
    async fn append(&self, batch: &[NewMessage]) -> StoreResult<Vec<CommitReceipt>>;

    /// Up to `limit` messages of a conversation with `after_seq < seq < before_seq` (either
    /// bound may be absent), lowest sequence first.
    async fn history(
        &self,
        conversation: &str,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>>;

    /// The message with this server id, if stored.
    async fn message_by_id(&self, server_id: &str) -> StoreResult<Option<ArchivedMessage>>;

    /// The highest sequence number a conversation ever assigned (0 for none). Purging does
    /// not lower it: sequence numbers are never reused.
    async fn last_seq(&self, conversation: &str) -> StoreResult<u64>;

    /// Deletes messages stamped before `cutoff_ms` and returns how many. Their client ids go
    /// with them, so the retention window is also the idempotency window.
    async fn purge_before(&self, cutoff_ms: i64) -> StoreResult<u64>;

    /// One page of an owner's archive (see [`ArchiveQuery`]): the one-to-one messages the
    /// owner sent or received that pass every filter, ordered by server id. The message log
    /// hands out server ids in commit order, so paging "after this id" never skips a message
    /// committed later. `NotFound` when `after_id` or
    /// `before_id` names no message of the owner's archive (purged, foreign or made up).
    async fn query_archive(&self, query: &ArchiveQuery) -> StoreResult<ArchivePage>;

    /// One page of a single conversation (a group chat room's archive, XEP-0313 §5), ordered
    /// by sequence, which is server id order within a conversation. Of `query` it honours
    /// `with` (the sender's bare JID), `start_ms`, `end_ms`, `after_id`, `before_id`, `ids`,
    /// `page`, `limit` and `count`; `owner`, `exclude` and `only` are ignored. `NotFound` when
    /// a cursor names no message of this conversation.
    async fn query_conversation(
        &self,
        conversation: &str,
        query: &ArchiveQuery,
    ) -> StoreResult<ArchivePage>;

    /// The owner's archiving preferences; the defaults (`always`, empty lists) if never set.
    async fn archive_prefs(&self, owner: &str) -> StoreResult<ArchivePrefs>;

    /// Replaces the owner's archiving preferences. A JID in both lists is kept in `never`
    /// only; the stored lists are sorted and free of repeats.
    async fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> StoreResult<()>;

    /// The message of `conversation` that `id` names: the message with that server id, or
    /// else, when `sender` is given, the message that sender committed with that client id
    /// (XEP-0424 and XEP-0308 name a one-to-one message by the id its sender gave it).
    /// Adapters without recall support answer `Unavailable`.
    async fn find_message(
        &self,
        conversation: &str,
        sender: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<ArchivedMessage>> {
        let _ = (conversation, sender, id);
        Err(StoreError::Unavailable(
            "message recall not supported".into(),
        ))
    }

    /// Applies an [`Amendment`] atomically: the current visible copy goes to the audit trail
    /// and the amendment's copy takes its place. `NotFound` when no such message is stored,
    /// `Conflict` when it is already retracted (nothing then changes).
    async fn amend(&self, amendment: &Amendment) -> StoreResult<()> {
        let _ = amendment;
        Err(StoreError::Unavailable(
            "message recall not supported".into(),
        ))
    }

    /// The audit trail of a message: every visible copy an amendment replaced, oldest first
    /// (empty for a message never amended). For audits; never served to users.
    async fn message_versions(&self, server_id: &str) -> StoreResult<Vec<MessageVersion>> {
        let _ = server_id;
        Err(StoreError::Unavailable(
            "message recall not supported".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(jid: &str) -> BareJid {
        BareJid::new(jid).expect("jid")
    }

    #[test]
    fn direct_conversation_is_order_independent() {
        let ab = direct_conversation(&bare("alice@x"), &bare("bob@x"));
        assert_eq!(ab, "alice@x bob@x");
        assert_eq!(ab, direct_conversation(&bare("bob@x"), &bare("alice@x")));
        assert_ne!(ab, direct_conversation(&bare("alice@x"), &bare("carol@x")));
        assert_eq!(
            direct_conversation(&bare("alice@x"), &bare("alice@x")),
            "alice@x alice@x"
        );
    }

    #[test]
    fn group_conversations_are_not_pairs() {
        let group = group_conversation(&bare("room@conference.x"));
        assert_eq!(group, "group:room@conference.x");
        assert!(!group.contains(' '));
    }

    #[test]
    fn server_ids_are_unique_and_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_server_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert_eq!(ids[0].len(), 36);
    }
}
