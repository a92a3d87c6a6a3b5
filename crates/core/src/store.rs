//! Storage ports. Adapters (SQLite today, PostgreSQL later) implement these traits; protocol
//! code sees nothing else.
//!
//! XML payloads (vCards, private storage, offline messages) are stored as serialized text:
//! the store never interprets them.

use async_trait::async_trait;

/// Storage failures a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row to create exists already (for example an account name taken).
    #[error("already exists")]
    Conflict,
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A per-account quota was reached; nothing was written.
    #[error("quota exceeded: {0}")]
    Quota(&'static str),
    /// The database failed or is unreachable; nothing was written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// SCRAM material for one account (RFC 5802 §3): enough to verify any SCRAM or PLAIN login,
/// never enough to recover the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    /// Random salt shared by both hash variants.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// H(ClientKey) for SCRAM-SHA-1.
    pub stored_key_sha1: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key") for SCRAM-SHA-1.
    pub server_key_sha1: Vec<u8>,
    /// H(ClientKey) for SCRAM-SHA-256.
    pub stored_key_sha256: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key") for SCRAM-SHA-256.
    pub server_key_sha256: Vec<u8>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are password-equivalent for impersonating the server: never log them.
        f.debug_struct("StoredCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Accounts and their credentials. Usernames are the nodeprep'd localpart of the bare JID.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account; `Conflict` if the name is taken.
    async fn create_account(
        &self,
        username: &str,
        credentials: &StoredCredentials,
    ) -> StoreResult<()>;
    /// Deletes an account and everything it owns; `NotFound` if absent.
    async fn delete_account(&self, username: &str) -> StoreResult<()>;
    /// Replaces the credentials; `NotFound` if absent.
    async fn set_credentials(
        &self,
        username: &str,
        credentials: &StoredCredentials,
    ) -> StoreResult<()>;
    /// The credentials of an account, or `None` if it does not exist.
    async fn credentials(&self, username: &str) -> StoreResult<Option<StoredCredentials>>;
    /// Whether the account exists.
    async fn account_exists(&self, username: &str) -> StoreResult<bool>;
    /// All usernames, sorted.
    async fn list_accounts(&self) -> StoreResult<Vec<String>>;
}

/// RFC 6121 §2.1.2.5 subscription states as stored on the roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither side is subscribed.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The value of the roster item's `subscription` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    /// Parses the stored or wire value.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "none" => Self::None,
            "to" => Self::To,
            "from" => Self::From,
            "both" => Self::Both,
            _ => return None,
        })
    }

    /// Whether the user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Self::From | Self::Both)
    }
}

/// One row of a user's roster, including the server-side subscription bookkeeping that
/// RFC 6121 §3 needs but clients only partly see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub jid: String,
    /// The handle the user gave the contact.
    pub name: Option<String>,
    /// Current subscription state.
    pub subscription: Subscription,
    /// The user asked to subscribe and awaits an answer ("Pending Out", shown as `ask='subscribe'`).
    pub ask_out: bool,
    /// The contact asked to subscribe and awaits the user's answer ("Pending In"). The request
    /// stanza is kept so it can be redelivered at each login (RFC 6121 §3.1.3).
    pub pending_in: Option<String>,
    /// The user pre-approved a subscription request from the contact (RFC 6121 §3.4).
    pub approved: bool,
    /// Groups the item is filed under.
    pub groups: Vec<String>,
    /// False for rows that exist only to remember a pending-in request: those are not shown
    /// to clients until the user adds the contact (RFC 6121 §3.1.3). Pre-approved contacts
    /// are shown (`approved='true'`, §3.4.1).
    pub in_roster: bool,
}

/// Rosters, versioned per user for XEP-0237.
#[async_trait]
pub trait RosterStore: Send + Sync {
    /// All rows of a user's roster (including hidden bookkeeping rows) and the roster version.
    async fn roster(&self, username: &str) -> StoreResult<(u64, Vec<RosterItem>)>;
    /// One row, if present.
    async fn roster_item(&self, username: &str, contact: &str) -> StoreResult<Option<RosterItem>>;
    /// Inserts or replaces a row; returns the new roster version.
    async fn put_roster_item(&self, username: &str, item: &RosterItem) -> StoreResult<u64>;
    /// Deletes a row; returns the new roster version.
    async fn remove_roster_item(&self, username: &str, contact: &str) -> StoreResult<u64>;
}

/// A message kept for an account with no available resource (XEP-0160).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Serialized `<message/>`.
    pub xml: String,
    /// When the server received it, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The server id when the message is in the archive and the queue only points at it
    /// (see [`OfflineStore::push_offline_archived`]); `None` for a stored copy.
    pub archived: Option<String>,
}

/// Offline message storage (XEP-0160): a per-account queue that is a view over the archive.
/// Archived messages are queued by reference, so the queue holds no second copy of them; a
/// message the archive does not keep is queued as a copy.
#[async_trait]
pub trait OfflineStore: Send + Sync {
    /// Queues a copy of a message the archive does not hold; `Quota` when the account holds
    /// too many copies already. (`message.archived` is ignored.)
    async fn push_offline(&self, username: &str, message: &OfflineMessage) -> StoreResult<()>;
    /// Queues the archived message `server_id` for the account. `NotFound` unless the archive
    /// holds that message addressed to this account, so a reference cannot reach someone
    /// else's messages. References are not counted against the quota: they cost a few bytes
    /// and the message is kept by the archive anyway.
    async fn push_offline_archived(&self, username: &str, server_id: &str) -> StoreResult<()>;
    /// Returns and deletes everything queued, oldest first: copies as stored, references
    /// with the archived message's XML and stamp. A reference whose message has left the
    /// archive (retention) is dropped.
    async fn take_offline(&self, username: &str) -> StoreResult<Vec<OfflineMessage>>;
}

/// Private XML storage (XEP-0049), vCards (XEP-0054) and similar per-account documents.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// A stored document under a key (for XEP-0049 the key is `name|namespace`).
    async fn document(&self, username: &str, key: &str) -> StoreResult<Option<String>>;
    /// Stores or replaces a document.
    async fn put_document(&self, username: &str, key: &str, xml: &str) -> StoreResult<()>;
}

/// Blocklists (XEP-0191).
#[async_trait]
pub trait BlockStore: Send + Sync {
    /// The JIDs the user blocks, sorted.
    async fn blocklist(&self, username: &str) -> StoreResult<Vec<String>>;
    /// Adds JIDs to the blocklist (already blocked ones are ignored).
    async fn block(&self, username: &str, jids: &[String]) -> StoreResult<()>;
    /// Removes JIDs from the blocklist; an empty slice empties it (XEP-0191 §3.4).
    async fn unblock(&self, username: &str, jids: &[String]) -> StoreResult<()>;
}

/// Per-conversation read positions (XEP-0333 displayed markers, stored server-side so every
/// device agrees). `owner` is the reader's bare JID; `conversation` is an archive conversation
/// key (see [`crate::archive::direct_conversation`]); positions are archive sequence numbers.
#[async_trait]
pub trait ReadStateStore: Send + Sync {
    /// Moves the owner's read position in a conversation to `seq` if that is further than the
    /// stored one (positions never move back) and returns the position now stored.
    async fn mark_read(&self, owner: &str, conversation: &str, seq: u64) -> StoreResult<u64>;
    /// The owner's read position in a conversation; 0 when nothing was read yet.
    async fn read_position(&self, owner: &str, conversation: &str) -> StoreResult<u64>;
    /// Every stored read position of the owner as `(conversation, seq)`, sorted by conversation.
    async fn read_positions(&self, owner: &str) -> StoreResult<Vec<(String, u64)>>;
    /// Unread messages of the owner in a conversation: archived messages with a sequence above
    /// the owner's read position whose sender is not the owner.
    async fn unread_count(&self, owner: &str, conversation: &str) -> StoreResult<u64>;
    /// The sequence of the archived message `sender` committed in `conversation` under the
    /// client id `client_id` (XEP-0359 origin-id or stanza id), if stored. Markers name
    /// messages by the id the clients know, which is not always the server id.
    async fn seq_by_client_id(
        &self,
        conversation: &str,
        sender: &str,
        client_id: &str,
    ) -> StoreResult<Option<u64>>;
    /// Whether `jid` is a member (member, admin or owner) of the group `room`: who may keep a
    /// read position in its conversation and counts towards "read by N of M". The default
    /// answers that no store support exists.
    async fn is_group_member(&self, room: &str, jid: &str) -> StoreResult<bool> {
        let _ = (room, jid);
        Err(StoreError::Unavailable(
            "group read state not supported".into(),
        ))
    }
    /// Who of the group `room`'s members other than `sender` has read up to `seq` in its
    /// conversation (sorted by JID), and how many such members there are.
    async fn group_readers(&self, room: &str, seq: u64, sender: &str) -> StoreResult<GroupReaders> {
        let _ = (room, seq, sender);
        Err(StoreError::Unavailable(
            "group read state not supported".into(),
        ))
    }
}

/// Read receipts of one group message: "read by `readers.len()` of `members`".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupReaders {
    /// Bare JIDs of the members (not the sender) whose read position reached the message.
    pub readers: Vec<String>,
    /// Members of the group other than the message's sender.
    pub members: u64,
}

/// An IM token's record: who it authenticates and for how long. The token itself is never
/// stored, only its SHA-256 (DESIGN.md, "Security posture").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The account's bare JID.
    pub owner: String,
    /// The full JID of the session the token was issued to.
    pub full_jid: String,
    /// That session's id: together with `full_jid` it names the session, so a session that
    /// replaced another one under the same full JID does not lose its tokens when the old
    /// one's close is processed.
    pub session: u64,
    /// Issue time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: i64,
}

/// IM tokens (`urn:confab:token:0`) bound to a live session, keyed by SHA-256 of the token.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token hash; `Conflict` if that hash exists already.
    async fn put_token(&self, hash: &[u8; 32], info: &TokenInfo) -> StoreResult<()>;
    /// The record of a token hash, expired or not (the caller checks `expires_ms`).
    async fn token_owner(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenInfo>>;
    /// Deletes every token of one session; returns how many.
    async fn revoke_for_session(&self, full_jid: &str, session: u64) -> StoreResult<u64>;
    /// Deletes every token; returns how many. Called at start-up, when no session survives.
    async fn revoke_all(&self) -> StoreResult<u64>;
}

/// A persistent XEP-0045 room as stored: its bare JID and its configuration, which the MUC
/// service serializes itself (the store keeps it as opaque text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's bare JID (`room@conference.example.org`).
    pub room: String,
    /// The serialized configuration.
    pub config: String,
}

/// Persistent multi-user chat rooms (XEP-0045 §10.1.3 `muc#roomconfig_persistentroom`):
/// their configuration and affiliation lists survive a restart; occupants and history do
/// not. Deliberately not part of [`Store`]: only the MUC service needs it, and the server
/// wires it in beside the store.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Creates or replaces a room's configuration.
    async fn put_room(&self, room: &str, config: &str) -> StoreResult<()>;
    /// Deletes a room and its affiliations; `NotFound` if it is not stored.
    async fn delete_room(&self, room: &str) -> StoreResult<()>;
    /// Every stored room, sorted by JID.
    async fn rooms(&self) -> StoreResult<Vec<StoredRoom>>;
    /// Sets a bare JID's affiliation with a stored room (`owner`, `admin`, `member`,
    /// `outcast`; opaque here), or with `None` removes it. `NotFound` if the room is not
    /// stored.
    async fn set_affiliation(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> StoreResult<()>;
    /// A stored room's affiliations as `(bare JID, affiliation)`, sorted by JID.
    async fn affiliations(&self, room: &str) -> StoreResult<Vec<(String, String)>>;
    /// Makes a stored room a group with `meta` (its members' group lists and sync feeds show
    /// it), updates it, or with `None` makes it no group (its members see it removed).
    /// `NotFound` if the room is not stored.
    async fn put_group(&self, room: &str, meta: Option<&GroupMeta>) -> StoreResult<()>;
    /// Records that the committed message `server_id`, numbered `seq` in the group
    /// conversation `conversation`, mentions each of `members` (bare JIDs): it becomes their
    /// latest mention there, shown until their read position reaches it. The default stores
    /// nothing: a store without the support shows no mentions.
    async fn record_mentions(
        &self,
        conversation: &str,
        seq: u64,
        server_id: &str,
        members: &[String],
    ) -> StoreResult<()> {
        let _ = (conversation, seq, server_id, members);
        Ok(())
    }
}

/// What a group list shows of a group besides its members (docs/protocol/confab-groups.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMeta {
    /// The group's name.
    pub name: String,
    /// An avatar URL; empty for none.
    pub avatar: String,
    /// The announcement; empty for none.
    pub announcement: String,
}

/// Everything the IM core needs from storage, as one object the server wires in.
pub trait Store:
    AccountStore
    + RosterStore
    + OfflineStore
    + DocumentStore
    + BlockStore
    + ReadStateStore
    + TokenStore
    + crate::archive::ArchiveStore
    + crate::client_view::ClientViewStore
    + crate::apps::AppStore
{
}

impl<T> Store for T where
    T: AccountStore
        + RosterStore
        + OfflineStore
        + DocumentStore
        + BlockStore
        + ReadStateStore
        + TokenStore
        + crate::archive::ArchiveStore
        + crate::client_view::ClientViewStore
        + crate::apps::AppStore
{
}
