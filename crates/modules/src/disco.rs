//! XEP-0030 service discovery for the server and for accounts.
//!
//! The feature lists are not kept here: the server's disco#info is the union of every
//! module's [`Module::server_features`] and an account's is the union of
//! [`Module::account_features`], so a new module advertises itself without touching this file.
//!
//! An IQ to an account's bare JID is answered by the server on the account's behalf
//! (RFC 6121 §8.5.2.1.3). XEP-0030 leaves it to the server whom to answer; we answer any
//! requester, because the router has already answered `service-unavailable` for accounts
//! that do not exist, so the reply reveals nothing more than that.

use async_trait::async_trait;
use confab_core::stanza::element;
use confab_core::{Element, Stanza, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};

/// The `name` of the server's identity.
const SERVER_NAME: &str = "Confab";

/// Answers disco#info and disco#items for the server and for accounts (XEP-0030).
#[derive(Debug, Default)]
pub struct Disco;

impl Disco {
    /// Creates the module.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn account_features(&self) -> &'static [&'static str] {
        // XEP-0030: every entity that answers disco#info lists that feature itself.
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let Some(query) = iq.payload() else {
            return StanzaErrorCondition::BadRequest.into();
        };
        if iq.type_attr() != Some("get") || query.name() != "query" {
            return StanzaErrorCondition::BadRequest.into();
        }
        // No node is published yet, and XEP-0030 answers an unknown node with item-not-found.
        if query.attr("node").is_some() {
            return StanzaErrorCondition::ItemNotFound.into();
        }
        // Without `to` the IQ is for the sender's own account (RFC 6120 §10.3.3); the router
        // only hands us the server or a bare account JID.
        let to_account = iq.to.as_ref().is_none_or(|to| to.node().is_some());
        let namespace = query.ns();
        let reply = if namespace == ns::DISCO_INFO {
            if to_account {
                info("account", "registered", None, &router.account_features())
            } else {
                info("server", "im", Some(SERVER_NAME), &router.server_features())
            }
        } else {
            // Items of the server are the services modules host on their own domains (the
            // XEP-0045 conference service); accounts have none yet (PEP nodes, later), which
            // XEP-0030 answers with an empty result.
            let mut query = Element::bare("query", ns::DISCO_ITEMS);
            if !to_account {
                let mut services: Vec<&str> = router.hosted_domains().collect();
                services.sort_unstable();
                for service in services {
                    query.append_child(element("item", ns::DISCO_ITEMS, &[("jid", service)]));
                }
            }
            query
        };
        IqOutcome::Result(Some(reply))
    }
}

/// Builds a disco#info result with one identity and the given features.
fn info(category: &str, kind: &str, name: Option<&str>, features: &[&str]) -> Element {
    let mut identity_attrs = vec![("category", category), ("type", kind)];
    if let Some(name) = name {
        identity_attrs.push(("name", name));
    }
    let mut query = Element::bare("query", ns::DISCO_INFO);
    query.append_child(element("identity", ns::DISCO_INFO, &identity_attrs));
    for feature in features {
        query.append_child(element("feature", ns::DISCO_INFO, &[("var", feature)]));
    }
    query
}
