//! Persistent member groups (docs/protocol/confab-groups.md) over the client API:
//! `POST /api/v1/groups` creates one, `GET /api/v1/groups` lists the caller's,
//! `GET|PATCH /api/v1/groups/{jid}` shows one or sets its name, avatar and announcement, and
//! `POST /api/v1/groups/{jid}/members` / `DELETE /api/v1/groups/{jid}/members/{member}` add and
//! remove members, and `GET /api/v1/groups/{jid}/messages/{server_id}/read` tells who of the
//! members has read a message ("read by N of M", from their read positions).
//!
//! Writes go through the conference service ([`ClientActions`], implemented by the server), so
//! they take the room's path: occupants see the XEP-0045 notifications and the change is
//! stored before the answer. Reads of the list come from the store's group records, the same
//! ones the sync feed reports. A group the caller is not a member of is `404 group_not_found`,
//! whether or not it exists.

use super::send::ClientActions;
use super::{ApiError, ApiJson, ApiState, Authenticated, BadRequest, storage_error};
use crate::error_response;
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_core::BareJid;
use confab_core::archive::group_conversation;
use confab_core::client_view::GroupSummary;
use confab_core::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest group name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest avatar URL, in bytes.
pub const MAX_AVATAR_BYTES: usize = 2048;
/// Longest announcement, in bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 16 * 1024;
/// Most members one request may add (a group may grow past it over several requests).
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;

/// `POST /api/v1/groups` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// The group's name.
    pub name: String,
    /// Bare JIDs of accounts of this server to add as members; the caller becomes the owner.
    #[serde(default)]
    pub members: Vec<String>,
    /// An `https://` (or `http://`) URL of the group's avatar.
    pub avatar: Option<String>,
    /// The announcement members see.
    pub announcement: Option<String>,
}

/// `PATCH /api/v1/groups/{jid}` body: the fields to change; an empty string clears avatar or
/// announcement.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// New name.
    pub name: Option<String>,
    /// New avatar URL, or `""` for none.
    pub avatar: Option<String>,
    /// New announcement, or `""` for none.
    pub announcement: Option<String>,
}

/// `POST /api/v1/groups/{jid}/members` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Bare JIDs of accounts of this server to add as members.
    pub members: Vec<String>,
}

/// `201` answer of `POST /api/v1/groups`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedGroup {
    /// The group's room JID: join it over XMPP, read it with `/api/v1/history?group=`.
    pub jid: String,
}

/// A group as the caller's list and the sync feed show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupEntry {
    /// The room's bare JID.
    pub jid: String,
    /// The group's name.
    pub name: String,
    /// Avatar URL; empty for none.
    pub avatar: String,
    /// Announcement; empty for none.
    pub announcement: String,
    /// The caller's affiliation: `member`, `admin` or `owner`.
    pub affiliation: String,
    /// The group conversation's last sequence number (0 before the first message).
    pub last_seq: u64,
    /// The server id of that message, when there is one.
    pub last_id: Option<String>,
}

impl From<GroupSummary> for GroupEntry {
    fn from(group: GroupSummary) -> Self {
        Self {
            jid: group.room,
            name: group.name,
            avatar: group.avatar,
            announcement: group.announcement,
            affiliation: group.affiliation,
            last_seq: group.last_seq,
            last_id: group.last_id,
        }
    }
}

/// `GET /api/v1/groups` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupList {
    /// The caller's groups, sorted by JID.
    pub groups: Vec<GroupEntry>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupMember {
    /// The member's bare JID.
    pub jid: String,
    /// `member`, `admin` or `owner`.
    pub affiliation: String,
}

/// `GET /api/v1/groups/{jid}` answer: the group, its members and its latest message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupDetail {
    /// The group as the list shows it.
    #[serde(flatten)]
    pub group: GroupEntry,
    /// Every member, sorted by JID.
    pub members: Vec<GroupMember>,
}

/// Why a group action was not carried out; each maps to one HTTP status and error code.
#[derive(Debug, thiserror::Error)]
pub enum GroupActionError {
    /// The server has no group chat.
    #[error("groups are not enabled on this server")]
    Disabled,
    /// No such group, or the caller is not a member.
    #[error("no such group")]
    NotFound,
    /// The caller is a member without the right to do this.
    #[error("only the group's admins and owners may do that")]
    Forbidden,
    /// The group would be left without an owner.
    #[error("the group must keep an owner")]
    LastOwner,
    /// A member to add is no account of this server.
    #[error("no such account: {0}")]
    NoSuchAccount(String),
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed; nothing changed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl From<GroupActionError> for ApiError {
    fn from(error: GroupActionError) -> Self {
        let message = error.to_string();
        ApiError::from(match error {
            GroupActionError::Disabled => {
                error_response(StatusCode::NOT_FOUND, "not_found", message)
            }
            GroupActionError::NotFound => {
                error_response(StatusCode::NOT_FOUND, "group_not_found", message)
            }
            GroupActionError::Forbidden => {
                error_response(StatusCode::FORBIDDEN, "forbidden", message)
            }
            GroupActionError::LastOwner => {
                error_response(StatusCode::CONFLICT, "last_owner", message)
            }
            GroupActionError::NoSuchAccount(_) => {
                error_response(StatusCode::NOT_FOUND, "member_not_found", message)
            }
            GroupActionError::Invalid(_) => super::bad_request(message),
            GroupActionError::Storage(error) => storage_error(&error),
        })
    }
}

/// The actions, or `Disabled` when the write side is off.
fn actions(api: &ApiState) -> Result<Arc<dyn ClientActions>, GroupActionError> {
    api.actions.clone().ok_or(GroupActionError::Disabled)
}

/// A room JID from the path.
fn room_jid(jid: &str) -> Result<BareJid, BadRequest> {
    BareJid::new(jid)
        .ok()
        .filter(|jid| jid.node().is_some())
        .ok_or_else(|| BadRequest(format!("not a group JID: {jid:?}")))
}

/// Member JIDs: bare account JIDs, deduplicated, at most [`MAX_MEMBERS_PER_REQUEST`].
fn member_jids(members: &[String]) -> Result<Vec<BareJid>, BadRequest> {
    if members.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(BadRequest(format!(
            "at most {MAX_MEMBERS_PER_REQUEST} members per request"
        )));
    }
    let mut jids = members
        .iter()
        .map(|member| {
            BareJid::new(member)
                .ok()
                .filter(|jid| jid.node().is_some())
                .ok_or_else(|| BadRequest(format!("not an account JID: {member:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    jids.sort();
    jids.dedup();
    Ok(jids)
}

/// Checks the lengths and the avatar's scheme of what a create or patch sets.
fn check_fields(
    name: Option<&str>,
    avatar: Option<&str>,
    announcement: Option<&str>,
) -> Result<(), BadRequest> {
    if let Some(name) = name
        && (name.trim().is_empty() || name.len() > MAX_NAME_BYTES)
    {
        return Err(BadRequest(format!(
            "'name' must be 1 to {MAX_NAME_BYTES} bytes, not blank"
        )));
    }
    if let Some(avatar) = avatar
        && !avatar.is_empty()
        && (avatar.len() > MAX_AVATAR_BYTES
            || !(avatar.starts_with("https://") || avatar.starts_with("http://")))
    {
        return Err(BadRequest(format!(
            "'avatar' must be an http(s) URL of at most {MAX_AVATAR_BYTES} bytes"
        )));
    }
    if announcement.is_some_and(|a| a.len() > MAX_ANNOUNCEMENT_BYTES) {
        return Err(BadRequest(format!(
            "'announcement' must be at most {MAX_ANNOUNCEMENT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `POST /api/v1/groups`: creates a group owned by the caller.
#[utoipa::path(
    post,
    path = "/api/v1/groups",
    tag = "client",
    request_body = CreateGroup,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created and stored; members' devices are told", body = CreatedGroup),
        (status = 400, description = "`bad_request`: malformed JSON, blank or oversized name, bad JID or avatar URL", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`member_not_found`: a member is no account of this server; `not_found`: groups are not enabled", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: nothing created; retry later", body = crate::ErrorBody),
    )
)]
pub async fn create(
    Authenticated { api, caller }: Authenticated,
    ApiJson(request): ApiJson<CreateGroup>,
) -> Result<Response, ApiError> {
    let actions = actions(&api)?;
    check_fields(
        Some(&request.name),
        request.avatar.as_deref(),
        request.announcement.as_deref(),
    )?;
    let members = member_jids(&request.members)?;
    let jid = actions.create_group(&caller, request, members).await?;
    Ok((StatusCode::CREATED, Json(CreatedGroup { jid })).into_response())
}

/// `GET /api/v1/groups`: the caller's groups.
#[utoipa::path(
    get,
    path = "/api/v1/groups",
    tag = "client",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's groups, sorted by JID", body = GroupList),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`not_found`: the client API is not enabled", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn list(Authenticated { api, caller }: Authenticated) -> Result<Response, ApiError> {
    let groups = api.store.groups(caller.owner.as_str()).await?;
    Ok(Json(GroupList {
        groups: groups.into_iter().map(GroupEntry::from).collect(),
    })
    .into_response())
}

/// `GET /api/v1/groups/{jid}`: one of the caller's groups with its members.
#[utoipa::path(
    get,
    path = "/api/v1/groups/{jid}",
    tag = "client",
    params(("jid" = String, Path, description = "The group's room JID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group and its members", body = GroupDetail),
        (status = 400, description = "`bad_request`: not a room JID", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`group_not_found`: no such group, or the caller is not a member", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn show(
    Authenticated { api, caller }: Authenticated,
    Path(jid): Path<String>,
) -> Result<Response, ApiError> {
    let room = room_jid(&jid)?;
    let mut detail = actions(&api)?.group(&caller, &room).await?;
    let conversation = group_conversation(&room);
    let last_seq = api.store.last_seq(&conversation).await?;
    if last_seq > 0 {
        let last = api
            .store
            .history(&conversation, Some(last_seq - 1), None, 1)
            .await?;
        detail.group.last_id = last.into_iter().next().map(|m| m.server_id);
    }
    detail.group.last_seq = last_seq;
    Ok(Json(detail).into_response())
}

/// `PATCH /api/v1/groups/{jid}`: sets name, avatar or announcement (admins and owners).
#[utoipa::path(
    patch,
    path = "/api/v1/groups/{jid}",
    tag = "client",
    params(("jid" = String, Path, description = "The group's room JID")),
    request_body = GroupPatch,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed and stored; occupants got status 104"),
        (status = 400, description = "`bad_request`: malformed JSON, blank or oversized name, bad avatar URL", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 403, description = "`forbidden`: the caller is a plain member", body = crate::ErrorBody),
        (status = 404, description = "`group_not_found`: no such group, or the caller is not a member", body = crate::ErrorBody),
    )
)]
pub async fn update(
    Authenticated { api, caller }: Authenticated,
    Path(jid): Path<String>,
    ApiJson(patch): ApiJson<GroupPatch>,
) -> Result<Response, ApiError> {
    let room = room_jid(&jid)?;
    check_fields(
        patch.name.as_deref(),
        patch.avatar.as_deref(),
        patch.announcement.as_deref(),
    )?;
    actions(&api)?.update_group(&caller, &room, patch).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/groups/{jid}/members`: adds members (admins and owners).
#[utoipa::path(
    post,
    path = "/api/v1/groups/{jid}/members",
    tag = "client",
    params(("jid" = String, Path, description = "The group's room JID")),
    request_body = AddMembers,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Added and stored (members already in are left as they are)"),
        (status = 400, description = "`bad_request`: malformed JSON or JID", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 403, description = "`forbidden`: the caller is a plain member", body = crate::ErrorBody),
        (status = 404, description = "`group_not_found`: no such group, or the caller is not a member; `member_not_found`: no such account", body = crate::ErrorBody),
    )
)]
pub async fn add_members(
    Authenticated { api, caller }: Authenticated,
    Path(jid): Path<String>,
    ApiJson(request): ApiJson<AddMembers>,
) -> Result<Response, ApiError> {
    let room = room_jid(&jid)?;
    let members = member_jids(&request.members)?;
    if members.is_empty() {
        return Err(BadRequest("'members' must name at least one account".into()).into());
    }
    actions(&api)?.add_members(&caller, &room, members).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/v1/groups/{jid}/members/{member}`: removes a member (admins and owners; any
/// member may remove itself).
#[utoipa::path(
    delete,
    path = "/api/v1/groups/{jid}/members/{member}",
    tag = "client",
    params(
        ("jid" = String, Path, description = "The group's room JID"),
        ("member" = String, Path, description = "The member's bare JID"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed and stored; the member's devices stop getting the group's messages"),
        (status = 400, description = "`bad_request`: bad JID", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not remove that member", body = crate::ErrorBody),
        (status = 404, description = "`group_not_found`: no such group, or the caller is not a member", body = crate::ErrorBody),
        (status = 409, description = "`last_owner`: the group would have no owner", body = crate::ErrorBody),
    )
)]
pub async fn remove_member(
    Authenticated { api, caller }: Authenticated,
    Path((jid, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let room = room_jid(&jid)?;
    let member = member_jids(std::slice::from_ref(&member))?
        .pop()
        .ok_or_else(|| BadRequest("no member named".into()))?;
    actions(&api)?
        .remove_member(&caller, &room, &member)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/groups/{jid}/messages/{server_id}/read` answer: "read by `read` of `members`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReadBy {
    /// Members other than the sender whose read position reached the message.
    pub read: u64,
    /// Members of the group other than the message's sender.
    pub members: u64,
    /// Bare JIDs of those readers, sorted.
    pub readers: Vec<String>,
}

/// `GET /api/v1/groups/{jid}/messages/{server_id}/read`: how many of the group's members have
/// read a message (their read position, moved by XEP-0333 markers or `POST /api/v1/read`, is
/// at or past it), not counting its sender. Only members may ask.
#[utoipa::path(
    get,
    path = "/api/v1/groups/{jid}/messages/{server_id}/read",
    tag = "client",
    params(
        ("jid" = String, Path, description = "The group's room JID"),
        ("server_id" = String, Path, description = "The message's server id (its stanza-id)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Who of the members has read the message", body = ReadBy),
        (status = 400, description = "`bad_request`: not a room JID", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 404, description = "`group_not_found` (no such group, or the caller is not a member) or `message_not_found` (no such message in the group)", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn read_by(
    Authenticated { api, caller }: Authenticated,
    Path((jid, server_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let room = room_jid(&jid)?;
    if !api
        .store
        .is_group_member(room.as_str(), caller.owner.as_str())
        .await?
    {
        return Err(GroupActionError::NotFound.into());
    }
    let message = api
        .store
        .message_by_id(&server_id)
        .await?
        .filter(|m| m.conversation == group_conversation(&room))
        .ok_or_else(|| {
            error_response(
                StatusCode::NOT_FOUND,
                "message_not_found",
                format!("no message {server_id:?} in this group"),
            )
        })?;
    let readers = api
        .store
        .group_readers(room.as_str(), message.seq, &message.sender)
        .await?;
    Ok(Json(ReadBy {
        read: u64::try_from(readers.readers.len()).unwrap_or(u64::MAX),
        members: readers.members,
        readers: readers.readers,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_members_are_checked() {
        assert!(check_fields(Some("Coven"), Some("https://x/a.png"), Some("hi")).is_ok());
        assert!(check_fields(None, Some(""), Some("")).is_ok());
        for (name, avatar) in [
            (Some(" "), None),
            (Some(&*"n".repeat(MAX_NAME_BYTES + 1)), None),
            (None, Some("javascript:alert(1)")),
        ] {
            assert!(
                check_fields(name, avatar, None).is_err(),
                "{name:?} {avatar:?}"
            );
        }
        let members = member_jids(&["b@x".into(), "a@x".into(), "b@x".into()]).expect("valid");
        assert_eq!(members.len(), 2);
        assert!(member_jids(&["x".into()]).is_err());
        assert!(member_jids(&["not a jid@".into()]).is_err());
    }
}
