//! XEP-0199 XMPP ping, answered by the server for itself and for the sender's own account.
//!
//! Pings to a full JID are routed to that client by the router and never reach this module.
//! A ping to another account's bare JID is not answered on that account's behalf: the
//! account is not a pingable endpoint, and answering would only confirm the account exists.

use async_trait::async_trait;
use confab_core::{Stanza, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};

/// Answers `urn:xmpp:ping` IQs addressed to the server or to the sender's own account.
#[derive(Debug, Default)]
pub struct Ping;

impl Ping {
    /// Creates the module.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let is_ping = iq.payload().is_some_and(|payload| payload.name() == "ping");
        if iq.type_attr() != Some("get") || !is_ping {
            return StanzaErrorCondition::BadRequest.into();
        }
        let own_account = match (&iq.to, &iq.from) {
            // RFC 6120 §10.3.3: no `to` means the sender's own account.
            (None, _) => true,
            (Some(to), Some(from)) => to.resource().is_none() && to.to_bare() == from.to_bare(),
            (Some(_), None) => false,
        };
        let to_server = iq.to.as_ref().is_some_and(|to| router.is_server(to));
        if own_account || to_server {
            // XEP-0199 §4.2: an empty result is the pong.
            IqOutcome::Result(None)
        } else {
            StanzaErrorCondition::ServiceUnavailable.into()
        }
    }
}
