//! The client API under `/api/v1`, authenticated by the IM token a client obtained over its
//! XMPP connection (`Authorization: Bearer <token>`).
//!
//! Every handler answers JSON; errors use the crate's `{"error", "message"}` body with a
//! stable code, and a missing or unknown token is `401 unauthorized` with a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750 §3).

use crate::{HttpState, error_response};
use async_trait::async_trait;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_core::BareJid;
use confab_core::archive::{ArchivedMessage, direct_conversation, group_conversation};
use confab_core::store::{Store, StoreError, TokenInfo};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub mod groups;
pub mod send;
pub mod views;

/// Largest page a history request may ask for.
pub const MAX_PAGE: u32 = 500;
/// Page size when the request names none.
pub const DEFAULT_PAGE: u32 = 50;

/// Checks an IM token and says whose it is.
#[async_trait]
pub trait TokenVerifier: Send + Sync {
    /// The record of a live token (its account, session and lifetime), `None` if it is
    /// unknown, expired or revoked, an error when storage cannot tell.
    async fn verify(&self, token: &str) -> Result<Option<TokenInfo>, StoreError>;
}

/// The caller of a client API request, as proven by its bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account's bare JID.
    pub owner: BareJid,
    /// The token's record: the session it is bound to and its lifetime.
    pub token: TokenInfo,
}

/// What the client API needs from the rest of the server.
#[derive(Clone)]
pub struct ApiState {
    /// Persistent state (archive, accounts).
    pub store: Arc<dyn Store>,
    /// IM token verification.
    pub tokens: Arc<dyn TokenVerifier>,
    /// Sending and read positions through the IM core; `None` leaves those routes off.
    pub actions: Option<Arc<dyn send::ClientActions>>,
}

/// `GET /api/v1/history` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The other party's bare JID (a one-to-one conversation).
    pub with: Option<String>,
    /// A group chat room's bare JID instead of `with`: the room's archive, for those the
    /// room's affiliation rules let in.
    pub group: Option<String>,
    /// Only messages with a higher sequence number (page forward).
    pub after_seq: Option<u64>,
    /// Only messages with a lower sequence number (page backward).
    pub before_seq: Option<u64>,
    /// Page size, at most [`MAX_PAGE`].
    pub limit: Option<u32>,
}

/// One archived message as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    /// The server id (XEP-0359 stanza-id).
    pub id: String,
    /// Position in the conversation, gap-free.
    pub seq: u64,
    /// Sender's bare JID.
    pub from: String,
    /// Recipient's bare JID.
    pub to: String,
    /// Server time in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The message as delivered.
    pub xml: String,
}

impl From<ArchivedMessage> for HistoryItem {
    fn from(message: ArchivedMessage) -> Self {
        Self {
            id: message.server_id,
            seq: message.seq,
            from: message.sender,
            to: message.recipient,
            stamp_ms: message.stamp_ms,
            xml: message.xml,
        }
    }
}

/// `GET /api/v1/history` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// The other party.
    pub with: String,
    /// The conversation's latest sequence number, so a client knows how far behind it is.
    pub last_seq: u64,
    /// Messages, lowest sequence first.
    pub messages: Vec<HistoryItem>,
}

/// The API state and the caller of a request, or the error response to send: 404 when the
/// client API is off, 401 for a missing, unknown, expired or revoked token.
pub async fn caller(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<(ApiState, Caller), Response> {
    let Some(api) = state.api.clone() else {
        return Err(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "the client API is not enabled".into(),
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(unauthorized("missing bearer token"));
    };
    let info = match api.tokens.verify(token).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(unauthorized("unknown, expired or revoked token")),
        Err(error) => return Err(storage_error(&error)),
    };
    match BareJid::new(&info.owner) {
        Ok(owner) => Ok((api, Caller { owner, token: info })),
        // Only a hand-edited token table gets here.
        Err(_) => Err(unauthorized("token names no valid account")),
    }
}

/// `401 unauthorized` with the RFC 6750 §3 challenge.
pub fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message.into());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"confab\""),
    );
    response
}

/// `400 bad_request`.
pub fn bad_request(message: String) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A request parameter the API refuses: becomes `400 bad_request` naming the problem.
#[derive(Debug)]
pub struct BadRequest(pub String);

/// The error response of a client API handler, so handlers can use `?` on parameter checks
/// ([`BadRequest`]) and storage calls (`503 storage_unavailable`). Boxed: errors are the
/// cold path and a `Response` is large.
#[derive(Debug)]
pub struct ApiError(Box<Response>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for ApiError {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl From<BadRequest> for ApiError {
    fn from(BadRequest(message): BadRequest) -> Self {
        bad_request(message).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        storage_error(&error).into()
    }
}

/// A page size: `default` when the request names none, else 1 to `max`.
pub fn page_limit(requested: Option<u32>, default: u32, max: u32) -> Result<u32, BadRequest> {
    match requested.unwrap_or(default) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(BadRequest(format!("'limit' must be between 1 and {max}"))),
    }
}

/// An authenticated client API request, extracted before anything else of the request is
/// looked at, so an unauthenticated caller learns nothing about its parameters. Refuses
/// with 404 (API off), 401 (token) or 503 (storage) as [`caller`] does.
pub struct Authenticated {
    /// The client API's dependencies.
    pub api: ApiState,
    /// Who is asking.
    pub caller: Caller,
}

impl FromRequestParts<HttpState> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Response> {
        caller(state, &parts.headers)
            .await
            .map(|(api, caller)| Self { api, caller })
    }
}

/// Query parameters whose rejection is the API's JSON `400 bad_request`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| Self(query))
            .map_err(|rejection| bad_request(rejection.body_text()))
    }
}

/// A JSON body whose rejection (syntax, missing or unknown field, content type) is the API's
/// JSON `400 bad_request`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(body)| Self(body))
            .map_err(|rejection| bad_request(rejection.body_text()))
    }
}

/// `GET /api/v1/history?with=JID[&after_seq=N|&before_seq=N][&limit=N]`: one page of the
/// caller's conversation with `with`. Without bounds it returns the latest page; with
/// `before_seq` the page just before it; with `after_seq` the page just after it.
/// `group=ROOM` instead of `with` pages the same way through a group chat room's archive,
/// if the room would let the caller read it (members-only rooms: members).
#[utoipa::path(
    get,
    path = "/api/v1/history",
    tag = "client",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page, lowest sequence first", body = HistoryPage),
        (status = 400, description = "`bad_request`: missing or invalid parameter", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown, expired or revoked token", body = crate::ErrorBody),
        (status = 403, description = "`forbidden`: the room does not let the caller read its archive", body = crate::ErrorBody),
        (status = 404, description = "`not_found`: the client API is not enabled; `group_not_found`: no such room", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn history(
    Authenticated { api, caller }: Authenticated,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let (with, conversation) = match (query.with.as_deref(), query.group.as_deref()) {
        (Some(with), None) => {
            let with = BareJid::new(with)
                .map_err(|_| BadRequest(format!("'with' is not a valid JID: {with:?}")))?;
            let conversation = direct_conversation(&caller.owner, &with);
            (with, conversation)
        }
        (None, Some(group)) => {
            let room = BareJid::new(group)
                .map_err(|_| BadRequest(format!("'group' is not a valid JID: {group:?}")))?;
            authorise_group(&api, &caller, &room).await?;
            let conversation = group_conversation(&room);
            (room, conversation)
        }
        _ => {
            return Err(BadRequest(
                "exactly one of the query parameters 'with' and 'group' (a bare JID) is required"
                    .into(),
            )
            .into());
        }
    };
    let limit = page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let last_seq = api.store.last_seq(&conversation).await?;
    // Sequences are gap-free, so "the page before N" is the range (N - limit - 1, N).
    let (after, before) = match (query.after_seq, query.before_seq) {
        (Some(after), before) => (Some(after), before),
        (None, Some(before)) => (before.checked_sub(u64::from(limit) + 1), Some(before)),
        (None, None) => (last_seq.checked_sub(u64::from(limit)), None),
    };
    let messages = api
        .store
        .history(&conversation, after, before, limit)
        .await?;
    Ok(Json(HistoryPage {
        with: with.to_string(),
        last_seq,
        messages: messages.into_iter().map(HistoryItem::from).collect(),
    })
    .into_response())
}

/// Lets the caller read `room`'s archive or says why not: `404 group_not_found` when no
/// room by that JID exists (or the server has no group chat), `403 forbidden` when the
/// room's rules keep the caller out.
async fn authorise_group(api: &ApiState, caller: &Caller, room: &BareJid) -> Result<(), ApiError> {
    let verdict = match &api.actions {
        Some(actions) => actions.may_read_group(caller, room).await,
        None => None,
    };
    match verdict {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::from(error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the room does not let you read its archive".into(),
        ))),
        None => Err(ApiError::from(error_response(
            StatusCode::NOT_FOUND,
            "group_not_found",
            format!("no group chat room {room}"),
        ))),
    }
}

/// `503 storage_unavailable`, logging the cause (never shown to the client).
pub fn storage_error(error: &confab_core::store::StoreError) -> Response {
    tracing::warn!(%error, "client API storage failure");
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "storage is unavailable; retry later".into(),
    )
}
