//! The read models of the client API: `GET /api/v1/conversations` (the caller's
//! conversation list, most recently active first) and `GET /api/v1/sync` (one incremental
//! feed of everything a device mirrors), over [`confab_core::client_view`].
//!
//! Cursors and sync tokens are opaque to clients; the only promise is that passing back what
//! an answer returned continues where it stopped. A sync token is only ever replaced by the
//! one the next answer returns, so a client that loses an answer simply asks again with the
//! token it still holds.

use super::{ApiError, ApiQuery, Authenticated, BadRequest, HistoryItem, page_limit};
use crate::error_response;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_core::client_view::{
    ConversationCursor, ConversationSummary, DEFAULT_CONVERSATION_PAGE, MAX_CONVERSATION_PAGE,
    MAX_SYNC_CHANGES, SyncError, SyncToken,
};
use confab_core::store::RosterItem;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/conversations` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationsQuery {
    /// Page size, 1 to 500; 50 when absent.
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page: continue with older conversations.
    pub before: Option<String>,
}

/// One conversation as the list and the sync feed show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationEntry {
    /// The other party's bare JID (the caller's own for notes to self), or the room's for a
    /// group conversation.
    pub with: String,
    /// The conversation key, as history and read positions name it.
    pub conversation: String,
    /// The conversation's latest sequence number.
    pub last_seq: u64,
    /// The latest message, unless retention removed it.
    pub last_message: Option<HistoryItem>,
    /// How far the caller has read (a sequence number; 0 for nothing).
    pub read_seq: u64,
    /// Messages with content from the other party above `read_seq`.
    pub unread: u64,
    /// Whether an unread message of this group conversation mentions the caller (XEP-0372 or
    /// `@nick`); cleared once `read_seq` reaches it. Always false for one-to-one ones.
    pub mentioned: bool,
    /// The server id of the latest unread message that mentions the caller, when `mentioned`.
    pub mention_id: Option<String>,
}

impl From<ConversationSummary> for ConversationEntry {
    fn from(summary: ConversationSummary) -> Self {
        Self {
            with: summary.with,
            conversation: summary.conversation,
            last_seq: summary.last_seq,
            last_message: summary.last_message.map(HistoryItem::from),
            read_seq: summary.read_seq,
            unread: summary.unread,
            mentioned: summary.mention.is_some(),
            mention_id: summary.mention,
        }
    }
}

/// `GET /api/v1/conversations` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationList {
    /// Most recently active first.
    pub conversations: Vec<ConversationEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /api/v1/sync` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// The `next` token of the previous answer; absent for a full snapshot.
    pub since: Option<String>,
    /// Most change records per answer, 1 to 500 (the default); more follow with `more`.
    pub limit: Option<u32>,
}

/// A roster item as the feed shows it (the fields of an RFC 6121 roster push).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RosterEntry {
    /// The contact's bare JID.
    pub jid: String,
    /// The handle the user gave the contact.
    pub name: Option<String>,
    /// `none`, `to`, `from` or `both`.
    pub subscription: &'static str,
    /// Groups the item is filed under.
    pub groups: Vec<String>,
    /// `subscribe` while the user's subscription request awaits an answer.
    pub ask: Option<&'static str>,
}

impl From<RosterItem> for RosterEntry {
    fn from(item: RosterItem) -> Self {
        Self {
            jid: item.jid,
            name: item.name,
            subscription: item.subscription.as_str(),
            groups: item.groups,
            ask: item.ask_out.then_some("subscribe"),
        }
    }
}

/// Roster changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RosterChanges {
    /// New or changed items, sorted by JID.
    pub changed: Vec<RosterEntry>,
    /// JIDs no longer in the roster, sorted; always empty in a snapshot.
    pub removed: Vec<String>,
}

/// A moved read position.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadEntry {
    /// The conversation key.
    pub conversation: String,
    /// The other party's bare JID.
    pub with: String,
    /// The caller's read position.
    pub seq: u64,
}

/// A XEP-0049 private XML storage document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrivateDocument {
    /// `name|namespace` of the stored fragment.
    pub key: String,
    /// The stored fragment.
    pub xml: String,
}

/// Private XML storage changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrivateChanges {
    /// Stored or replaced documents, sorted by key.
    pub changed: Vec<PrivateDocument>,
    /// Keys of deleted documents, sorted; always empty in a snapshot.
    pub removed: Vec<String>,
}

/// Group changes (docs/protocol/confab-groups.md).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupChanges {
    /// Groups the caller was added to, or whose name, avatar, announcement or the caller's
    /// affiliation changed, sorted by JID. New messages show under `conversations`.
    pub changed: Vec<super::groups::GroupEntry>,
    /// Groups the caller is no longer in (removed, left, or the group is gone), sorted;
    /// always empty in a snapshot.
    pub removed: Vec<String>,
}

/// `GET /api/v1/sync` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncResponse {
    /// Pass as `since` next time.
    pub next: String,
    /// True for a snapshot: replace local state instead of applying changes.
    pub full: bool,
    /// True when further changes are waiting: ask again with `next` right away.
    pub more: bool,
    /// Roster changes.
    pub roster: RosterChanges,
    /// Conversations with new messages or a moved read position, most recently active first.
    pub conversations: Vec<ConversationEntry>,
    /// Read positions that moved, sorted by conversation.
    pub read: Vec<ReadEntry>,
    /// Private XML storage changes.
    pub private: PrivateChanges,
    /// The caller's groups that changed.
    pub groups: GroupChanges,
}

/// `GET /api/v1/conversations[?limit=N&before=CURSOR]`: the caller's one-to-one
/// conversations and group conversations (`with` the room, docs/protocol/confab-groups.md),
/// most recently active first, with read position and unread count.
#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "client",
    params(ConversationsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page, most recently active first", body = ConversationList),
        (status = 400, description = "`bad_request`: bad limit or cursor", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`not_found`: the client API is not enabled", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn conversations(
    Authenticated { api, caller }: Authenticated,
    ApiQuery(query): ApiQuery<ConversationsQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(
        query.limit,
        DEFAULT_CONVERSATION_PAGE,
        MAX_CONVERSATION_PAGE,
    )?;
    let cursor = match query.before.as_deref().map(decode_cursor) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => {
            return Err(BadRequest("'before' is not a cursor this API returned".into()).into());
        }
    };
    let page = api
        .store
        .conversations(caller.owner.as_str(), cursor.as_ref(), limit)
        .await?;
    Ok(Json(ConversationList {
        conversations: page.conversations.into_iter().map(Into::into).collect(),
        next: page.next.as_ref().map(encode_cursor),
    })
    .into_response())
}

/// `GET /api/v1/sync[?since=TOKEN][&limit=N]`: what changed for the caller since the token
/// (everything, without one), read from one consistent state of the store, with the token
/// for the next call.
#[utoipa::path(
    get,
    path = "/api/v1/sync",
    tag = "client",
    params(SyncQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changes after `since`, or a snapshot", body = SyncResponse),
        (status = 400, description = "`bad_sync_token`: the token is malformed, from another server or stale (start over without `since`); `bad_request`: bad limit", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`not_found`: the client API is not enabled", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn sync(
    Authenticated { api, caller }: Authenticated,
    ApiQuery(query): ApiQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let owner = caller.owner;
    let limit = page_limit(query.limit, MAX_SYNC_CHANGES, MAX_SYNC_CHANGES)?;
    let since = match query
        .since
        .as_deref()
        .map(|text| SyncToken::parse(text, owner.as_str()))
    {
        None => None,
        Some(Some(token)) => Some(token),
        Some(None) => {
            return Err(
                bad_sync_token("not a sync token this server issued to this account").into(),
            );
        }
    };
    let Some(username) = owner.node().map(|node| node.as_str().to_owned()) else {
        // Tokens are only issued to accounts, whose JIDs always have a localpart.
        return Err(super::unauthorized("token names no account").into());
    };
    let feed = match api
        .store
        .sync(&username, owner.as_str(), since.as_ref(), limit)
        .await
    {
        Ok(feed) => feed,
        Err(SyncError::Store(error)) => return Err(error.into()),
        // Foreign, ahead or predating the account: each means the client's state cannot be
        // brought up to date from this token, and the remedy is the same snapshot.
        Err(error) => return Err(bad_sync_token(&error.to_string()).into()),
    };
    let me = owner.as_str();
    let (changed, removed): (Vec<_>, Vec<_>) =
        feed.documents.into_iter().partition(|d| d.xml.is_some());
    Ok(Json(SyncResponse {
        next: feed.next.encode(owner.as_str()),
        full: feed.full,
        more: feed.more,
        roster: RosterChanges {
            changed: feed.roster.into_iter().map(Into::into).collect(),
            removed: feed.roster_removed,
        },
        conversations: feed.conversations.into_iter().map(Into::into).collect(),
        read: feed
            .read_positions
            .into_iter()
            .map(|(conversation, seq)| ReadEntry {
                with: peer_of(&conversation, me).to_owned(),
                conversation,
                seq,
            })
            .collect(),
        private: PrivateChanges {
            changed: changed
                .into_iter()
                .filter_map(|d| {
                    Some(PrivateDocument {
                        xml: d.xml?,
                        key: d.key,
                    })
                })
                .collect(),
            removed: removed.into_iter().map(|d| d.key).collect(),
        },
        groups: GroupChanges {
            changed: feed.groups.into_iter().map(Into::into).collect(),
            removed: feed.groups_removed,
        },
    })
    .into_response())
}

/// `400 bad_sync_token`: the client drops its token and starts over with a snapshot.
fn bad_sync_token(message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "bad_sync_token",
        format!("{message}; sync again without 'since'"),
    )
}

/// The other party of a direct conversation key, from `owner`'s side; the room of a group
/// conversation.
fn peer_of<'a>(conversation: &'a str, owner: &str) -> &'a str {
    if let Some(room) = conversation.strip_prefix("group:") {
        return room;
    }
    match conversation.split_once(' ') {
        Some((low, high)) if low == owner => high,
        Some((low, _)) => low,
        None => conversation,
    }
}

/// A page cursor as clients carry it: the hex of `"<activity> <conversation>"`, which needs
/// no escaping in a query string although conversation keys contain a space and `@`.
fn encode_cursor(cursor: &ConversationCursor) -> String {
    format!("{} {}", cursor.activity, cursor.conversation)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a cursor made by [`encode_cursor`]; `None` for anything else.
fn decode_cursor(text: &str) -> Option<ConversationCursor> {
    if !text.len().is_multiple_of(2) || text.len() > 4096 {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (activity, conversation) = text.split_once(' ')?;
    Some(ConversationCursor {
        activity: activity.parse().ok()?,
        conversation: conversation.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let cursor = ConversationCursor {
            activity: 42,
            conversation: "alice@x bob@x".into(),
        };
        let text = encode_cursor(&cursor);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert_eq!(decode_cursor(&text), Some(cursor));
        for bad in ["", "0", "zz", "3432", "2061", "ff20", "é0"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn peer_is_the_other_side() {
        assert_eq!(peer_of("a@x b@x", "a@x"), "b@x");
        assert_eq!(peer_of("a@x b@x", "b@x"), "a@x");
        assert_eq!(peer_of("a@x a@x", "a@x"), "a@x");
        assert_eq!(peer_of("group:g@conference.x", "a@x"), "g@conference.x");
    }
}
