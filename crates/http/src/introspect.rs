//! `POST /api/v1/token/introspect`: OAuth 2.0 token introspection (RFC 7662) for IM tokens,
//! so a registered app's backend can check a token a client handed it and learn whose it is.
//!
//! The caller is a registered app (`confab app add`), authenticated as a confidential OAuth
//! client (RFC 6749 §2.3.1): HTTP Basic with the client id and secret, each
//! form-urlencoded before base64, or `client_id` and `client_secret` in the body, never
//! both (RFC 6749 §2.3: one method per request). Client authentication is checked before
//! anything else about the request, so an unauthenticated caller learns nothing, not even
//! whether its request was well formed.
//!
//! An unknown, expired or revoked token is exactly `{"active": false}` (RFC 7662 §2.2
//! "SHOULD NOT include any additional information"). IM tokens die with their session, so a
//! token whose session ended is inactive at once, well before its `exp`.

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confab_core::BareJid;
use confab_core::apps;
use serde::{Deserialize, Serialize};

use crate::api::storage_error;
use crate::{HttpState, error_response};

/// Name of the response member that carries the bound session's full JID: a private
/// extension (RFC 7662 §2.2), prefixed so it cannot collide with a registered name.
pub const FULL_JID_MEMBER: &str = "confab_full_jid";

/// The form body of an introspection request (RFC 7662 §2.1).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct IntrospectionRequest {
    /// The token to check (required).
    pub token: Option<String>,
    /// A hint about the token's type; accepted and ignored, since Confab issues one kind
    /// and RFC 7662 §2.1 requires searching all kinds anyway.
    pub token_type_hint: Option<String>,
    /// The app's client id, when it does not use HTTP Basic.
    pub client_id: Option<String>,
    /// The app's secret, when it does not use HTTP Basic.
    pub client_secret: Option<String>,
}

/// The introspection response (RFC 7662 §2.2); only `active` is present for an inactive
/// token.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    /// Whether the token is live.
    pub active: bool,
    /// The account's bare JID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The account's localpart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Always `Bearer` (RFC 6750).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Issue time, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Expiry, seconds since the Unix epoch; the token dies earlier if its session ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// The XMPP domain that issued the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The full JID of the session the token is bound to.
    #[serde(rename = "confab_full_jid", skip_serializing_if = "Option::is_none")]
    pub full_jid: Option<String>,
}

/// Client credentials as presented, before verification.
struct ClientCredentials {
    /// The client id.
    id: String,
    /// The secret.
    secret: String,
}

/// `POST /api/v1/token/introspect`.
#[utoipa::path(
    post,
    path = "/api/v1/token/introspect",
    tag = "apps",
    request_body(
        content = IntrospectionRequest,
        content_type = "application/x-www-form-urlencoded",
        description = "RFC 7662 §2.1; client_id/client_secret only when not using HTTP Basic",
    ),
    security(("app_basic" = [])),
    responses(
        (status = 200, description = "The token's state; exactly `{\"active\": false}` when it is unknown, expired or revoked",
         body = Introspection),
        (status = 400, description = "`invalid_request`: no token, a malformed body or two client authentication methods",
         body = crate::ErrorBody),
        (status = 401, description = "`invalid_client`: missing or wrong client credentials",
         body = crate::ErrorBody),
        (status = 404, description = "`not_found`: the API is not enabled", body = crate::ErrorBody),
        (status = 503, description = "`storage_unavailable`: retry later", body = crate::ErrorBody),
    )
)]
pub async fn introspect(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<IntrospectionRequest>, FormRejection>,
) -> Response {
    no_store(respond(state, &headers, form).await)
}

async fn respond(
    state: HttpState,
    headers: &HeaderMap,
    form: Result<Form<IntrospectionRequest>, FormRejection>,
) -> Response {
    let Some(api) = state.api else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "the API is not enabled".into(),
        );
    };
    let (body, rejection) = match form {
        Ok(Form(body)) => (body, None),
        Err(rejection) => (IntrospectionRequest::default(), Some(rejection)),
    };
    let header = headers.get(header::AUTHORIZATION);
    let in_body = body.client_id.is_some() || body.client_secret.is_some();
    let credentials = match (header, in_body) {
        (Some(_), true) => {
            return invalid_request("use one client authentication method, not two");
        }
        (Some(value), false) => basic_credentials(value),
        (None, true) => body
            .client_id
            .clone()
            .zip(body.client_secret.clone())
            .map(|(id, secret)| ClientCredentials { id, secret }),
        (None, false) => None,
    };
    let Some(credentials) = credentials else {
        return invalid_client("client authentication required");
    };
    match apps::verify(api.store.as_ref(), &credentials.id, &credentials.secret).await {
        Ok(Some(_app)) => {}
        Ok(None) => return invalid_client("unknown client or wrong secret"),
        Err(error) => return storage_error(&error),
    }
    if let Some(rejection) = rejection {
        return invalid_request(&rejection.body_text());
    }
    let Some(token) = body.token.as_deref() else {
        return invalid_request("form parameter 'token' is required");
    };
    let info = match api.tokens.verify(token).await {
        Ok(Some(info)) => info,
        Ok(None) => return Json(Introspection::default()).into_response(),
        // "Inactive" would tell the app to log its user out; storage trouble is not that.
        Err(error) => return storage_error(&error),
    };
    let Ok(owner) = BareJid::new(&info.owner) else {
        // Only a hand-edited token table gets here; such a token authenticates nobody.
        return Json(Introspection::default()).into_response();
    };
    Json(Introspection {
        active: true,
        sub: Some(owner.to_string()),
        username: owner.node().map(|node| node.to_string()),
        token_type: Some("Bearer"),
        iat: Some(info.created_ms.div_euclid(1000)),
        exp: Some(info.expires_ms.div_euclid(1000)),
        iss: Some(owner.domain().to_string()),
        full_jid: Some(info.full_jid),
    })
    .into_response()
}

/// Decodes `Authorization: Basic …` per RFC 6749 §2.3.1: base64 of `id:secret` where both
/// were form-urlencoded first, so a `:` inside either arrives as `%3A`.
fn basic_credentials(value: &HeaderValue) -> Option<ClientCredentials> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    // Auth scheme names are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some(ClientCredentials {
        id: form_decode(id)?,
        secret: form_decode(secret)?,
    })
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value.
fn form_decode(value: &str) -> Option<String> {
    let plus_as_space = value.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// Responses carry token state and must not be cached (RFC 6749 §5.1 for the same reason).
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `400 invalid_request` (RFC 6749 §5.2).
fn invalid_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid_request", message.into())
}

/// `401 invalid_client` with a Basic challenge (RFC 6749 §5.2).
fn invalid_client(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "invalid_client", message.into());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"confab\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> Option<(String, String)> {
        let value = HeaderValue::from_str(raw).expect("header value");
        basic_credentials(&value).map(|c| (c.id, c.secret))
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // "a%3Ab:s+c%2B" is id "a:b", secret "s c+".
        let encoded = STANDARD.encode("a%3Ab:s+c%2B");
        assert_eq!(
            basic(&format!("Basic {encoded}")),
            Some(("a:b".into(), "s c+".into()))
        );
        assert_eq!(
            basic(&format!("bAsIc  {encoded}")),
            Some(("a:b".into(), "s c+".into()))
        );
    }

    #[test]
    fn malformed_basic_credentials_are_none() {
        let no_colon = STANDARD.encode("abc");
        let bad_percent = STANDARD.encode("a:%FF");
        for raw in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            &format!("Basic {no_colon}"),
            &format!("Basic {bad_percent}"),
        ] {
            assert_eq!(basic(raw), None, "{raw}");
        }
    }
}
