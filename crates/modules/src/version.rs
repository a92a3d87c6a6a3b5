//! XEP-0092 software version of the server.
//!
//! The reply names the software and its version but omits `<os/>`: XEP-0092 §3 makes it
//! optional, and the operating system only helps an attacker pick an exploit.

use async_trait::async_trait;
use confab_core::{Element, Stanza, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};

/// The software name reported to clients.
const SOFTWARE_NAME: &str = "Confab";

/// Answers `jabber:iq:version` queries addressed to the server.
#[derive(Debug, Default)]
pub struct Version;

impl Version {
    /// Creates the module.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let is_query = iq
            .payload()
            .is_some_and(|payload| payload.name() == "query");
        if iq.type_attr() != Some("get") || !is_query {
            return StanzaErrorCondition::BadRequest.into();
        }
        // An account has no software of its own; its clients answer at their full JIDs.
        if !iq.to.as_ref().is_some_and(|to| router.is_server(to)) {
            return StanzaErrorCondition::ServiceUnavailable.into();
        }
        let query = Element::builder("query", ns::VERSION)
            .append(
                Element::builder("name", ns::VERSION)
                    .append(SOFTWARE_NAME)
                    .build(),
            )
            .append(
                Element::builder("version", ns::VERSION)
                    .append(env!("CARGO_PKG_VERSION"))
                    .build(),
            )
            .build();
        IqOutcome::Result(Some(query))
    }
}
