//! Read models for clients that are not XMPP sessions (the HTTP client API): an account's
//! conversation list and one incremental feed of everything a device mirrors.
//!
//! Both are derived from state other ports write (archive, read positions, roster, private
//! storage), so an adapter maintains what it needs when those writes happen instead of
//! scanning an account's archive per request.
//!
//! # Change positions
//! Every change the feed reports gets a *position* from one store-wide counter, taken inside
//! the write transaction that makes the change. A reader that sees the counter at `P` in one
//! consistent snapshot therefore sees every change numbered up to `P` and none above it, so a
//! client that keeps asking for "changes after the position I was given" never skips one,
//! whatever commits concurrently with its read. The contract needs only that positions are
//! handed out in commit order: SQLite gets that from its single writer; PostgreSQL would take
//! them under a lock on one counter row.
//!
//! A position is reused by nothing: a change moves an item to a new, higher position, and a
//! removed roster item keeps its change record (with the removal's position) so the feed can
//! say it is gone.

use crate::archive::ArchivedMessage;
use crate::store::{RosterItem, StoreError, StoreResult};
use async_trait::async_trait;

/// Most conversations one page of [`ClientViewStore::conversations`] returns.
pub const MAX_CONVERSATION_PAGE: u32 = 500;

/// Conversations per page when the caller names no limit.
pub const DEFAULT_CONVERSATION_PAGE: u32 = 50;

/// Most change records one [`ClientViewStore::sync`] answer carries before it pages with
/// [`SyncFeed::more`]. Changes that share a position are never split across pages, so an
/// answer can exceed it by the changes of one write.
pub const MAX_SYNC_CHANGES: u32 = 500;

/// Where a conversation page continues: the last entry of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor {
    /// That entry's [`ConversationSummary::activity`].
    pub activity: u64,
    /// That entry's conversation key, which breaks ties between equal activity positions.
    pub conversation: String,
}

/// One of an account's one-to-one conversations, as its conversation list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The archive conversation key (see [`crate::archive::direct_conversation`]).
    pub conversation: String,
    /// The other party's bare JID; the owner's own for a conversation with itself.
    pub with: String,
    /// The highest sequence number the conversation assigned.
    pub last_seq: u64,
    /// The message numbered `last_seq`, unless retention purged it.
    pub last_message: Option<ArchivedMessage>,
    /// The owner's read position in the conversation; 0 when nothing was read.
    pub read_seq: u64,
    /// Messages that count as unread (content, from the other party) above `read_seq`.
    pub unread: u64,
    /// Server id of the latest message of a group conversation that mentions the owner, while
    /// it is unread (above `read_seq`); `None` otherwise and for one-to-one conversations.
    pub mention: Option<String>,
    /// The change position of the conversation's last commit: higher is more recent. Lists
    /// are ordered by it, newest first.
    pub activity: u64,
}

/// One page of an account's conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationPage {
    /// Most recently active first; ties in conversation key order, descending.
    pub conversations: Vec<ConversationSummary>,
    /// Where the next page starts, when more conversations follow this one.
    pub next: Option<ConversationCursor>,
}

/// A place in one store's change history: what a sync answer hands back for the next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncToken {
    /// The store the position belongs to: 32 lowercase hex digits fixed when its schema was
    /// created, so a token from another database is recognised instead of misread.
    pub store: String,
    /// Every change up to and including this position has been reported.
    pub position: u64,
}

impl SyncToken {
    /// Length of [`SyncToken::store`] in hex digits.
    pub const STORE_ID_LEN: usize = 32;

    /// The token as `owner` (a bare JID) carries it: opaque ASCII, safe in a URL query
    /// without escaping. It names the owner too, so a client that mixes up the tokens of
    /// two accounts is told so instead of silently missing changes.
    pub fn encode(&self, owner: &str) -> String {
        format!(
            "{}{:08x}{:016x}",
            self.store,
            owner_tag(owner),
            self.position
        )
    }

    /// Reads a token [`SyncToken::encode`] made for `owner`; `None` for anything else,
    /// including a token made for another account.
    pub fn parse(text: &str, owner: &str) -> Option<Self> {
        let is_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if text.len() != Self::STORE_ID_LEN + 8 + 16 || !is_hex(text) {
            return None;
        }
        let (store, rest) = text.split_at(Self::STORE_ID_LEN);
        let (tag, position) = rest.split_at(8);
        if u32::from_str_radix(tag, 16).ok()? != owner_tag(owner) {
            return None;
        }
        Some(Self {
            store: store.to_owned(),
            position: u64::from_str_radix(position, 16).ok()?,
        })
    }
}

/// FNV-1a (32 bits) of the owner's JID: enough to tell accounts' tokens apart. It is no
/// secret and needs none, since a token only ever reads its bearer's own state.
fn owner_tag(owner: &str) -> u32 {
    owner.bytes().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// A document of XEP-0049 private XML storage, or the note that it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChange {
    /// The document key, `name|namespace`.
    pub key: String,
    /// The stored XML; `None` when the document was deleted.
    pub xml: Option<String>,
}

/// One of an account's groups (persistent member rooms, docs/protocol/confab-groups.md) as
/// its group list and the sync feed show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The room's bare JID.
    pub room: String,
    /// The group's name.
    pub name: String,
    /// The avatar URL; empty when none is set.
    pub avatar: String,
    /// The announcement; empty when none is set.
    pub announcement: String,
    /// The owner's affiliation with the room: `member`, `admin` or `owner`.
    pub affiliation: String,
    /// The group conversation's highest sequence number; 0 before its first message.
    pub last_seq: u64,
    /// The server id of the message numbered `last_seq`, unless there is none (or retention
    /// purged it).
    pub last_id: Option<String>,
}

/// What changed for one account after a [`SyncToken`], or everything when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFeed {
    /// Pass it to the next call to get the changes after this answer.
    pub next: SyncToken,
    /// True when this is a snapshot (no token was given): the client replaces its state, and
    /// nothing is reported as removed.
    pub full: bool,
    /// True when changes after `next` were left for the next call to keep the answer small.
    pub more: bool,
    /// Roster items that are new or changed, sorted by JID. Hidden bookkeeping rows (not
    /// `in_roster`) are never listed here.
    pub roster: Vec<RosterItem>,
    /// JIDs removed from the roster (or hidden again), sorted. Empty in a snapshot.
    pub roster_removed: Vec<String>,
    /// Conversations with new messages or a moved read position, most recently active first.
    pub conversations: Vec<ConversationSummary>,
    /// The owner's read positions that moved, as `(conversation, seq)`, sorted by
    /// conversation.
    pub read_positions: Vec<(String, u64)>,
    /// Private XML storage documents that changed, sorted by key; in a snapshot only the
    /// stored ones.
    pub documents: Vec<DocumentChange>,
    /// Groups the owner was added to or whose name, avatar, announcement or the owner's
    /// affiliation changed, sorted by room JID. New messages in a group show under
    /// `conversations`, not here.
    pub groups: Vec<GroupSummary>,
    /// Rooms the owner is no longer a member of (removed, or the group is gone), sorted.
    /// Empty in a snapshot.
    pub groups_removed: Vec<String>,
}

/// Why a sync request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The token names another store (another database, or one rebuilt from scratch).
    #[error("the sync token belongs to another store")]
    ForeignToken,
    /// The token names a position this store has not reached: not one it handed out.
    #[error("the sync token is ahead of the store (position {position}, store at {current})")]
    TokenAhead {
        /// The token's position.
        position: u64,
        /// The store's latest position.
        current: u64,
    },
    /// The token predates the account: it was issued to an account of the same name that
    /// has since been deleted, whose removals can no longer be reported.
    #[error("the sync token predates the account")]
    TokenPredatesAccount,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Client read models (see the module documentation).
#[async_trait]
pub trait ClientViewStore: Send + Sync {
    /// One page of `owner`'s (bare JID) one-to-one conversations and the conversations of the
    /// groups it is a member of (`with` the room), most recently active first,
    /// starting after `after` (from the most recent without one). `limit` is capped at
    /// [`MAX_CONVERSATION_PAGE`]. A conversation with itself is listed once.
    async fn conversations(
        &self,
        owner: &str,
        after: Option<&ConversationCursor>,
        limit: u32,
    ) -> StoreResult<ConversationPage>;

    /// Every group whose member (`member`, `admin` or `owner`) `owner` (bare JID) is, sorted
    /// by room JID. The default, for stores that keep no rooms, knows none; the conformance
    /// suite holds a store that does keep rooms to the real answer.
    async fn groups(&self, owner: &str) -> StoreResult<Vec<GroupSummary>> {
        let _ = owner;
        Ok(Vec::new())
    }

    /// What changed for the account `username` (bare JID `owner`) after `since`, or a
    /// snapshot without it, read from one consistent state of the store. At most about
    /// `limit` change records (capped at [`MAX_SYNC_CHANGES`]); `more` says whether the
    /// next call has further changes already.
    async fn sync(
        &self,
        username: &str,
        owner: &str,
        since: Option<&SyncToken>,
        limit: u32,
    ) -> Result<SyncFeed, SyncError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_anything_else() {
        let token = SyncToken {
            store: "0123456789abcdef0123456789abcdef".into(),
            position: 0x1_0000_0001,
        };
        let text = token.encode("a@x");
        assert_eq!(text.len(), 56);
        assert!(
            text.starts_with("0123456789abcdef0123456789abcdef"),
            "{text}"
        );
        assert!(text.ends_with("0000000100000001"), "{text}");
        assert_eq!(SyncToken::parse(&text, "a@x"), Some(token.clone()));
        // Another account's token is not this account's.
        assert_eq!(SyncToken::parse(&text, "b@x"), None);
        assert_ne!(token.encode("b@x"), text);
        let upper = text.to_ascii_uppercase();
        let accented = format!("{}é", &text[..54]);
        let signed = format!("{}+{}", &text[..40], &text[41..]);
        for bad in [
            "",
            &text[..55],
            &format!("{text}0"),
            upper.as_str(),
            accented.as_str(),
            signed.as_str(),
        ] {
            assert_eq!(SyncToken::parse(bad, "a@x"), None, "{bad:?}");
        }
    }
}
