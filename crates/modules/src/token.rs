//! IM tokens (`urn:confab:token:0`, specified in `docs/protocol/confab-token.md`): a bound
//! session asks for a bearer token that authenticates the same account on the HTTP API for as
//! long as the session lives.
//!
//! ```xml
//! <iq type='get' id='t1'><token xmlns='urn:confab:token:0'/></iq>
//! <iq type='result' id='t1'>
//!   <token xmlns='urn:confab:token:0' expires='2025-02-01T12:00:00.000Z'>q3Lw…(43 chars)</token>
//! </iq>
//! ```
//!
//! A token is 256 bits from the operating system's random source, base64url without padding.
//! The store keeps only its SHA-256, with the owner, the session (full JID and session id)
//! and the expiry: a copy of the database authenticates nobody. Tokens die with their session
//! (`on_session_closed`) or at expiry, whichever is first; after a restart no session
//! survives, so the server deletes them all at start-up (`TokenStore::revoke_all`).
//!
//! IQs reach modules only from bound sessions, and the request must come from a session that
//! is live in the registry, so a token is never issued before resource binding.

use crate::store_error;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_core::stanza::element;
use confab_core::store::{Store, StoreError, TokenInfo};
use confab_core::{Element, Stanza, StanzaError, StanzaErrorCondition};
use confab_router::{IqOutcome, Module, Router};
use confab_sessions::{Resource, SessionId};
use parking_lot::Mutex;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Confab's IM token namespace.
pub const TOKEN: &str = "urn:confab:token:0";

/// How long a token lives at most, unless its session ends first.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Most live tokens one session may hold; bounds the rows a client can make. A client that
/// needs more asks again after reconnecting.
pub const MAX_TOKENS_PER_SESSION: u32 = 8;

/// Length of an encoded token: 32 bytes in unpadded base64.
const TOKEN_CHARS: usize = 43;

/// Issues session-bound tokens and revokes them when the session ends.
#[derive(Debug)]
pub struct ImToken {
    ttl: Duration,
    /// Tokens issued per live session, for [`MAX_TOKENS_PER_SESSION`].
    issued: Mutex<HashMap<SessionId, u32>>,
}

impl Default for ImToken {
    fn default() -> Self {
        Self::new(DEFAULT_TOKEN_TTL)
    }
}

impl ImToken {
    /// Creates the feature with tokens valid for `ttl` at most.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    async fn issue(&self, router: &Router, resource: &Resource) -> Result<Element, StanzaError> {
        {
            let mut issued = self.issued.lock();
            let count = issued.entry(resource.id).or_insert(0);
            if *count >= MAX_TOKENS_PER_SESSION {
                return Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                    .with_text("too many tokens for this session"));
            }
            *count += 1;
        }
        let mut secret = [0u8; 32];
        if let Err(error) = rand::rngs::OsRng.try_fill_bytes(&mut secret) {
            tracing::error!(%error, "no randomness for a token");
            return Err(StanzaError::new(StanzaErrorCondition::InternalServerError));
        }
        let token = URL_SAFE_NO_PAD.encode(secret);
        let now = now_ms();
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let info = TokenInfo {
            owner: resource.jid.to_bare().as_str().to_owned(),
            full_jid: resource.jid.as_str().to_owned(),
            session: resource.id,
            created_ms: now,
            expires_ms: now.saturating_add(ttl),
        };
        router
            .store
            .put_token(&hash(&secret), &info)
            .await
            .map_err(store_error)?;
        let expires = format_stamp(info.expires_ms);
        let mut reply = element("token", TOKEN, &[("expires", &expires)]);
        reply.append_text_node(token);
        Ok(reply)
    }
}

/// SHA-256 of the decoded token bytes: the key the store knows the token by.
fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Milliseconds since the epoch in the XEP-0082 DateTime profile (UTC, milliseconds, `Z`).
fn format_stamp(stamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(stamp_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Who a presented token authenticates: `None` if it is malformed, unknown, revoked (its
/// session ended) or expired; an error when the store cannot tell, so callers can answer
/// "try later" instead of "unknown token". For the HTTP API's bearer authentication.
pub async fn verify_token(store: &dyn Store, token: &str) -> Result<Option<TokenInfo>, StoreError> {
    // Anything else cannot be one of ours; refusing it before decoding bounds the work an
    // unauthenticated caller can cause.
    if token.len() != TOKEN_CHARS {
        return Ok(None);
    }
    let Ok(secret) = URL_SAFE_NO_PAD.decode(token) else {
        return Ok(None);
    };
    let info = store.token_owner(&hash(&secret)).await?;
    Ok(info.filter(|info| info.expires_ms > now_ms()))
}

#[async_trait]
impl Module for ImToken {
    fn name(&self) -> &'static str {
        "token"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[TOKEN]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[TOKEN]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        if iq.type_attr() != Some("get") || iq.payload().map(Element::name) != Some("token") {
            return StanzaErrorCondition::BadRequest.into();
        }
        // Only a live, bound session gets a token, and only for its own account.
        let resource = iq
            .from
            .as_ref()
            .and_then(|from| from.try_as_full().ok())
            .and_then(|full| router.sessions.get(full));
        let Some(resource) = resource else {
            return StanzaError::new(StanzaErrorCondition::NotAuthorized)
                .with_text("tokens are issued to bound sessions")
                .into();
        };
        if let Some(to) = &iq.to
            && !router.is_server(to)
            && to.to_bare() != resource.jid.to_bare()
        {
            return StanzaErrorCondition::Forbidden.into();
        }
        match self.issue(router, &resource).await {
            Ok(token) => IqOutcome::Result(Some(token)),
            Err(error) => error.into(),
        }
    }

    async fn on_session_closed(&self, router: &Router, resource: &Arc<Resource>) {
        // Most sessions never ask for a token; a store write for each of them made closing
        // many sessions at once queue on the writer (seen as seconds of pool waits).
        if self.issued.lock().remove(&resource.id).is_none() {
            return;
        }
        if let Err(error) = router
            .store
            .revoke_for_session(resource.jid.as_str(), resource.id)
            .await
        {
            // Expiry still ends them, and the next start-up deletes them.
            tracing::error!(%error, jid = %resource.jid, "tokens of a closed session not revoked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_length_matches_encoding() {
        assert_eq!(URL_SAFE_NO_PAD.encode([0u8; 32]).len(), TOKEN_CHARS);
    }
}
