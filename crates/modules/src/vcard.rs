//! XEP-0054 vcard-temp: each account publishes one vCard, which anyone may read and only the
//! account may replace.
//!
//! The vCard is stored as serialized text under the document key [`VCARD_KEY`] and served
//! back verbatim. A vCard request to an account that exists but has published nothing is
//! answered with an empty `<vCard/>` (XEP-0054 §3.1); the router has already answered
//! `service-unavailable` for accounts that do not exist.

use crate::store_error;
use async_trait::async_trait;
use confab_core::{BareJid, Element, Stanza, StanzaError, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};

/// Document key the vCard is stored under.
pub const VCARD_KEY: &str = "vcard";

/// Largest serialized vCard kept, photo included. An avatar of a few tens of KiB, base64
/// encoded, fits comfortably; anything larger belongs in an upload service, not a stanza.
pub const MAX_VCARD_BYTES: usize = 256 * 1024;

/// Answers vcard-temp gets for any account and sets for the sender's own.
#[derive(Debug, Default)]
pub struct VCard;

impl VCard {
    /// Creates the module.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Module for VCard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::VCARD]
    }

    fn account_features(&self) -> &'static [&'static str] {
        // Anyone may fetch an account's vCard at its bare JID.
        &[ns::VCARD]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::VCARD]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let Some(payload) = iq.payload().filter(|payload| payload.name() == "vCard") else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let Some(sender) = iq.from.as_ref().map(|from| from.to_bare()) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        // RFC 6120 §10.3.3: without `to` the request is for the sender's own account.
        let target = match &iq.to {
            None => sender.clone(),
            Some(to) if to.node().is_some() && to.resource().is_none() => to.to_bare(),
            // The server itself has no vCard.
            Some(_) => return StanzaErrorCondition::ServiceUnavailable.into(),
        };
        let Some(username) = target.node().map(|node| node.as_str().to_owned()) else {
            return StanzaErrorCondition::ServiceUnavailable.into();
        };
        let result = match iq.type_attr() {
            Some("get") => get(router, &username).await.map(Some),
            Some("set") => set(router, &sender, &target, &username, payload)
                .await
                .map(|()| None),
            _ => Err(StanzaErrorCondition::BadRequest.into()),
        };
        match result {
            Ok(payload) => IqOutcome::Result(payload),
            Err(error) => IqOutcome::Error(error),
        }
    }
}

/// The stored vCard of `username`, or an empty one.
async fn get(router: &Router, username: &str) -> Result<Element, StanzaError> {
    let stored = router
        .store
        .document(username, VCARD_KEY)
        .await
        .map_err(store_error)?;
    match stored {
        Some(xml) => xml.parse::<Element>().map_err(|error| {
            tracing::warn!(%error, username, "stored vCard does not parse");
            StanzaError::new(StanzaErrorCondition::InternalServerError)
        }),
        None => Ok(Element::bare("vCard", ns::VCARD)),
    }
}

/// Replaces the sender's vCard; nobody may write another account's (XEP-0054 §3.2).
async fn set(
    router: &Router,
    sender: &BareJid,
    target: &BareJid,
    username: &str,
    vcard: &Element,
) -> Result<(), StanzaError> {
    if sender != target {
        return Err(StanzaErrorCondition::Forbidden.into());
    }
    let xml = String::from(vcard);
    if xml.len() > MAX_VCARD_BYTES {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("vCard too large; use a smaller photo"));
    }
    router
        .store
        .put_document(username, VCARD_KEY, &xml)
        .await
        .map_err(store_error)
}
