//! The write side of the client API: `POST /api/v1/messages` sends a chat message as the
//! caller and `POST /api/v1/read` moves the caller's read position.
//!
//! Both act as the session the caller's IM token is bound to and go through the same path as
//! the XMPP stream ([`ClientActions`], implemented by the server over its router): a message
//! sent here is checked by blocking, committed by the message log before anything is
//! answered, carbon-copied to the caller's other devices and delivered like any other; a
//! resend with the same `id` gets the original receipt and is not delivered again (the same
//! idempotency as XEP-0359 `origin-id` over XMPP). A read position moved here is pushed to the
//! caller's other devices like one moved by a chat marker.

use super::{ApiError, ApiJson, Authenticated, BadRequest, Caller, bad_request, storage_error};
use crate::error_response;
use async_trait::async_trait;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_core::BareJid;
use confab_core::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest body, in bytes, a message sent through the API may carry.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest client id accepted; ids are for recognising resends, not for carrying data.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// A message to send as the caller.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The recipient's bare JID, an account of this server.
    pub to: String,
    /// The text.
    pub body: String,
    /// The client's id for this message. Resending with the same id is safe: the message is
    /// stored and delivered once and every attempt gets the same receipt. Without one, a
    /// retry after a lost answer may deliver the message twice.
    pub id: Option<String>,
    /// XEP-0201 thread id.
    pub thread: Option<String>,
    /// Ask the recipient's client for a XEP-0184 delivery receipt.
    #[serde(default)]
    pub request_receipt: bool,
    /// Mark the message XEP-0333 `markable`, so the recipient's client sends chat markers.
    #[serde(default)]
    pub markable: bool,
}

/// The commit receipt of a sent message (the JSON form of `urn:confab:ack:0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SentMessage {
    /// The client id the message was sent with (generated when the request had none).
    pub id: String,
    /// The server id (XEP-0359 stanza-id) every device and the archive know it by.
    pub server_id: String,
    /// Its position in the conversation.
    pub seq: u64,
    /// The recipient's bare JID.
    pub to: String,
    /// Server time of the commit, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// True when the id was already used: nothing new was stored or delivered, and these
    /// are the original's figures.
    pub duplicate: bool,
}

/// A read position to set.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// The other party's bare JID.
    pub with: String,
    /// Everything up to and including this sequence number has been read.
    pub seq: u64,
}

/// The caller's read position in a conversation after a `POST /api/v1/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReadState {
    /// The other party's bare JID.
    pub with: String,
    /// The stored position; higher than asked when another device had read further
    /// (positions never move back).
    pub seq: u64,
    /// Unread messages after it.
    pub unread: u64,
}

/// Why an action was not carried out; each maps to one HTTP status and error code.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The session the token is bound to has ended or was replaced.
    #[error("the session this token belongs to has ended")]
    SessionGone,
    /// The addressee is no account of this server.
    #[error("no such account: {0}")]
    NoSuchAccount(String),
    /// The request is well-formed JSON but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Routing refused the message (a block on either side, a policy); nothing was stored.
    #[error("message refused: {0}")]
    Refused(String),
    /// The position names no message of the conversation yet.
    #[error("sequence {seq} is beyond the conversation's last message ({last})")]
    SeqOutOfRange {
        /// What was asked.
        seq: u64,
        /// The conversation's last sequence number.
        last: u64,
    },
    /// Storage failed or is unreachable; nothing was stored.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What the client API asks of the IM core; the server implements it over its router.
#[async_trait]
pub trait ClientActions: Send + Sync {
    /// Sends a message as the caller's bound session; returns once it is committed.
    async fn send_message(
        &self,
        caller: &Caller,
        request: SendRequest,
    ) -> Result<SentMessage, ActionError>;

    /// Moves the caller's read position in the conversation with `with`.
    async fn mark_read(
        &self,
        caller: &Caller,
        with: &BareJid,
        seq: u64,
    ) -> Result<ReadState, ActionError>;

    /// Creates a group owned by the caller with `members` (checked and deduplicated) and
    /// returns its room JID. The default has no groups.
    async fn create_group(
        &self,
        caller: &Caller,
        request: super::groups::CreateGroup,
        members: Vec<BareJid>,
    ) -> Result<String, super::groups::GroupActionError> {
        let _ = (caller, request, members);
        Err(super::groups::GroupActionError::Disabled)
    }

    /// The group `room` with its members, if the caller is one; `last_seq` and `last_id` are
    /// left for the caller to fill from the archive.
    async fn group(
        &self,
        caller: &Caller,
        room: &BareJid,
    ) -> Result<super::groups::GroupDetail, super::groups::GroupActionError> {
        let _ = (caller, room);
        Err(super::groups::GroupActionError::Disabled)
    }

    /// Applies `patch` to the group `room` as the caller.
    async fn update_group(
        &self,
        caller: &Caller,
        room: &BareJid,
        patch: super::groups::GroupPatch,
    ) -> Result<(), super::groups::GroupActionError> {
        let _ = (caller, room, patch);
        Err(super::groups::GroupActionError::Disabled)
    }

    /// Adds `members` to the group `room` as the caller.
    async fn add_members(
        &self,
        caller: &Caller,
        room: &BareJid,
        members: Vec<BareJid>,
    ) -> Result<(), super::groups::GroupActionError> {
        let _ = (caller, room, members);
        Err(super::groups::GroupActionError::Disabled)
    }

    /// Removes `member` from the group `room` as the caller.
    async fn remove_member(
        &self,
        caller: &Caller,
        room: &BareJid,
        member: &BareJid,
    ) -> Result<(), super::groups::GroupActionError> {
        let _ = (caller, room, member);
        Err(super::groups::GroupActionError::Disabled)
    }

    /// Whether the caller may read the archive of the group chat room `room` (the room's
    /// affiliation rules); `None` when there is no such room. The default knows no rooms.
    async fn may_read_group(&self, caller: &Caller, room: &BareJid) -> Option<bool> {
        let _ = (caller, room);
        None
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        let message = error.to_string();
        ApiError::from(match error {
            ActionError::SessionGone => super::unauthorized(&message),
            ActionError::NoSuchAccount(_) => {
                error_response(StatusCode::NOT_FOUND, "recipient_not_found", message)
            }
            ActionError::Invalid(_) => bad_request(message),
            ActionError::Refused(_) => error_response(StatusCode::FORBIDDEN, "refused", message),
            ActionError::SeqOutOfRange { .. } => {
                error_response(StatusCode::BAD_REQUEST, "seq_out_of_range", message)
            }
            ActionError::Storage(error) => storage_error(&error),
        })
    }
}

/// The actions, or the 404 saying the write side is off.
fn actions(api: &super::ApiState) -> Result<Arc<dyn ClientActions>, ApiError> {
    api.actions.clone().ok_or_else(|| {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "sending through the client API is not enabled".into(),
        )
        .into()
    })
}

/// Checks what the type system cannot, before anything reaches the IM core.
fn validate(request: &SendRequest) -> Result<BareJid, ActionError> {
    let to = BareJid::new(&request.to)
        .map_err(|_| ActionError::Invalid(format!("'to' is not a valid JID: {:?}", request.to)))?;
    if to.node().is_none() {
        return Err(ActionError::Invalid("'to' must name an account".into()));
    }
    if request.body.is_empty() {
        return Err(ActionError::Invalid("'body' must not be empty".into()));
    }
    if request.body.len() > MAX_BODY_BYTES {
        return Err(ActionError::Invalid(format!(
            "'body' is longer than {MAX_BODY_BYTES} bytes"
        )));
    }
    if let Some(id) = &request.id
        && (id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES)
    {
        return Err(ActionError::Invalid(format!(
            "'id' must be 1 to {MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
    Ok(to)
}

/// `POST /api/v1/messages`: sends a chat message as the caller.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "client",
    request_body = SendRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Committed; delivery follows", body = SentMessage),
        (status = 200, description = "A resend of an id already committed: the original receipt, nothing delivered again", body = SentMessage),
        (status = 400, description = "`bad_request`: malformed JSON, bad JID, empty or oversized body or id", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token, or its session ended", body = crate::ErrorBody),
        (status = 403, description = "`refused`: a block on either side; nothing stored", body = crate::ErrorBody),
        (status = 404, description = "`recipient_not_found`: no such account", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: nothing stored; retry with the same id", body = crate::ErrorBody),
    )
)]
pub async fn send_message(
    Authenticated { api, caller }: Authenticated,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<Response, ApiError> {
    let actions = actions(&api)?;
    validate(&request)?;
    let sent = actions.send_message(&caller, request).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(sent)).into_response())
}

/// `POST /api/v1/read`: the caller has read the conversation with `with` up to `seq`.
#[utoipa::path(
    post,
    path = "/api/v1/read",
    tag = "client",
    request_body = ReadRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored position (never lower than before) and the unread count", body = ReadState),
        (status = 400, description = "`bad_request` (malformed JSON, bad JID) or `seq_out_of_range`", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn mark_read(
    Authenticated { api, caller }: Authenticated,
    ApiJson(request): ApiJson<ReadRequest>,
) -> Result<Response, ApiError> {
    let actions = actions(&api)?;
    let with = BareJid::new(&request.with)
        .map_err(|_| BadRequest(format!("'with' is not a valid JID: {:?}", request.with)))?;
    let read = actions.mark_read(&caller, &with, request.seq).await?;
    Ok(Json(read).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(to: &str, body: &str, id: Option<&str>) -> SendRequest {
        SendRequest {
            to: to.into(),
            body: body.into(),
            id: id.map(str::to_owned),
            thread: None,
            request_receipt: false,
            markable: false,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate(&request("bob@localhost", "hi", Some("m1"))).is_ok());
        for (bad, needle) in [
            (request("not a jid@", "hi", None), "'to'"),
            (request("localhost", "hi", None), "account"),
            (request("bob@localhost", "", None), "'body'"),
            (
                request("bob@localhost", &"x".repeat(MAX_BODY_BYTES + 1), None),
                "'body'",
            ),
            (request("bob@localhost", "hi", Some("")), "'id'"),
            (
                request("bob@localhost", "hi", Some(&"i".repeat(129))),
                "'id'",
            ),
        ] {
            let error = validate(&bad).expect_err("invalid");
            assert!(error.to_string().contains(needle), "{error}");
        }
    }
}
