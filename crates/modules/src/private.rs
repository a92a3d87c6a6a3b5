//! XEP-0049 private XML storage: a client keeps arbitrary XML fragments on the server, each
//! filed under its root element's name and namespace.
//!
//! Only the account itself may read or write its fragments (XEP-0049 §2.3 and §4, where
//! `forbidden` is the preferred answer to anyone else). Fragments are stored as serialized
//! text under the key `name|namespace` and are never interpreted by the server.

use crate::store_error;
use async_trait::async_trait;
use confab_core::{BareJid, Element, Stanza, StanzaError, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};

/// Largest serialized fragment kept. Bookmarks and client preferences are a few KiB; the cap
/// bounds what one account can make the server store per key.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Namespaces a fragment may not be filed under (XEP-0049 §2.3): storing stanza or
/// private-storage elements themselves would let a client confuse later readers.
const RESERVED_NAMESPACES: [&str; 3] = [ns::CLIENT, "jabber:server", ns::PRIVATE];

/// Answers `jabber:iq:private` gets and sets for the sender's own account.
#[derive(Debug, Default)]
pub struct PrivateStorage;

impl PrivateStorage {
    /// Creates the module.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Module for PrivateStorage {
    fn name(&self) -> &'static str {
        "private"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::PRIVATE]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::PRIVATE]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let Some(account) = own_account(iq) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        let Some(username) = account.node().map(|node| node.as_str().to_owned()) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        let Some(query) = iq.payload().filter(|payload| payload.name() == "query") else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let result = match iq.type_attr() {
            Some("get") => get(router, &username, query).await.map(Some),
            Some("set") => set(router, &username, query).await.map(|()| None),
            _ => Err(StanzaErrorCondition::BadRequest.into()),
        };
        match result {
            Ok(payload) => IqOutcome::Result(payload),
            Err(error) => IqOutcome::Error(error),
        }
    }
}

/// Returns the stored fragment named by the query's one child, or that child empty.
async fn get(router: &Router, username: &str, query: &Element) -> Result<Element, StanzaError> {
    let mut children = query.children();
    // XEP-0049 §2.3: a get without a child is refused with not-acceptable.
    let Some(requested) = children.next() else {
        return Err(StanzaErrorCondition::NotAcceptable.into());
    };
    // XEP-0049 §2.3: a client must not ask for more than one namespace in a single get.
    if children.next().is_some() {
        return Err(StanzaError::new(StanzaErrorCondition::BadRequest)
            .with_text("ask for one fragment per request"));
    }
    let namespace = requested.ns();
    if is_reserved(&namespace) {
        return Err(reserved_namespace());
    }
    let stored = router
        .store
        .document(username, &key(requested.name(), &namespace))
        .await
        .map_err(store_error)?;
    let fragment = match stored {
        Some(xml) => xml.parse::<Element>().map_err(|error| {
            tracing::warn!(%error, username, "stored private fragment does not parse");
            StanzaError::new(StanzaErrorCondition::InternalServerError)
        })?,
        // XEP-0049 §2.3: nothing stored yet is answered with the requested element, empty.
        None => Element::bare(requested.name(), namespace),
    };
    let mut reply = Element::bare("query", ns::PRIVATE);
    reply.append_child(fragment);
    Ok(reply)
}

/// Stores every child of the query, each replacing what was filed under its name and
/// namespace. All children are checked before any is written, so a refused request changes
/// nothing.
async fn set(router: &Router, username: &str, query: &Element) -> Result<(), StanzaError> {
    let mut documents = Vec::new();
    for fragment in query.children() {
        let namespace = fragment.ns();
        if is_reserved(&namespace) {
            return Err(reserved_namespace());
        }
        let xml = String::from(fragment);
        if xml.len() > MAX_DOCUMENT_BYTES {
            return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
                .with_text("private XML fragment too large"));
        }
        documents.push((key(fragment.name(), &namespace), xml));
    }
    if documents.is_empty() {
        return Err(StanzaErrorCondition::NotAcceptable.into());
    }
    for (key, xml) in &documents {
        router
            .store
            .put_document(username, key, xml)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Whether fragments may not be filed under `namespace`: a reserved one, or none at all.
fn is_reserved(namespace: &str) -> bool {
    namespace.is_empty() || RESERVED_NAMESPACES.contains(&namespace)
}

/// XEP-0049 §2.3's answer to a reserved namespace.
fn reserved_namespace() -> StanzaError {
    StanzaError::new(StanzaErrorCondition::NotAcceptable).with_text("reserved namespace")
}

/// The storage key of a fragment (see `confab_core::store::DocumentStore`).
fn key(name: &str, namespace: &str) -> String {
    format!("{name}|{namespace}")
}

/// The sender's bare JID when the IQ is addressed to the sender's own account: without `to`
/// (RFC 6120 §10.3.3) or to its own bare JID.
fn own_account(iq: &Stanza) -> Option<BareJid> {
    let from = iq.from.as_ref()?.to_bare();
    match &iq.to {
        None => Some(from),
        Some(to) if to.resource().is_none() && to.to_bare() == from => Some(from),
        Some(_) => None,
    }
}
