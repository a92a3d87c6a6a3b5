//! The plug-in interface: every feature is a [`Module`] that hooks named points of the
//! stanza path.

use crate::Router;
use async_trait::async_trait;
use confab_core::{Element, FullJid, Stanza, StanzaError};
use confab_sessions::{Resource, Undelivered};
use std::sync::Arc;

/// What a hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Let the next hook and then the router see the stanza.
    Continue,
    /// The hook consumed the stanza (answered, stored or dropped it); stop here.
    Handled,
}

/// The answer of an IQ handler.
#[derive(Debug)]
pub enum IqOutcome {
    /// Reply `type='result'` with this payload.
    Result(Option<Element>),
    /// Reply `type='error'`.
    Error(StanzaError),
    /// The module sent its own reply (or none is due).
    Replied,
}

impl From<StanzaError> for IqOutcome {
    fn from(error: StanzaError) -> Self {
        Self::Error(error)
    }
}

impl From<confab_core::StanzaErrorCondition> for IqOutcome {
    fn from(condition: confab_core::StanzaErrorCondition) -> Self {
        Self::Error(StanzaError::new(condition))
    }
}

/// A feature plugged into the stanza path. Every hook has a no-op default, so a module
/// implements only the points it cares about. Hooks run in registration order.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    /// Features advertised in the server's disco#info (XEP-0030).
    fn server_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Features advertised in an account's disco#info.
    fn account_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Stream features offered after authentication (RFC 6120 §4.3.2), e.g. `<ver/>`.
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// IQ payload namespaces this module answers when the IQ is addressed to the server or
    /// to an account's bare JID (RFC 6121 §8.5.2.1.3, §8.5.1).
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[]
    }

    /// Answers an IQ get/set whose payload namespace is one of `iq_namespaces`. The stanza's
    /// `from` is trustworthy; `to` is `None`, the server, or an account's bare JID.
    async fn handle_iq(&self, _router: &Router, _iq: &Stanza) -> IqOutcome {
        IqOutcome::Error(StanzaError::new(
            confab_core::StanzaErrorCondition::ServiceUnavailable,
        ))
    }

    /// A stanza from a local session, `from` stamped, before routing. Presence broadcast,
    /// outbound subscription handling and outbound blocking hook here.
    async fn on_inbound(
        &self,
        _router: &Router,
        _origin: &Arc<Resource>,
        _stanza: &mut Stanza,
    ) -> Flow {
        Flow::Continue
    }

    /// A message or presence about to be delivered to a local account (to its bare JID or to
    /// one full JID). Inbound subscription handling, probes and inbound blocking hook here.
    async fn on_routed(&self, _router: &Router, _stanza: &mut Stanza) -> Flow {
        Flow::Continue
    }

    /// A message the router fans out to many sessions ([`Router::fan_out`], e.g. a room's
    /// broadcast), once per message and before any copy is addressed: `to` is `None`. The
    /// part of `on_routed` that does not depend on the recipient (stripping elements)
    /// belongs here; per-recipient decisions go to [`Module::admits`].
    async fn on_fan_out(&self, _router: &Router, _stanza: &mut Stanza) -> Flow {
        Flow::Continue
    }

    /// Whether this module wants [`Module::admits`] for every copy of a fan-out. Asked once,
    /// when the router is built, so modules without a per-recipient check cost nothing.
    fn filters_fan_out(&self) -> bool {
        false
    }

    /// Whether the fanned-out `stanza` (without `to`) may reach `recipient` (only called when
    /// [`Module::filters_fan_out`] is true). A refused copy is dropped silently.
    async fn admits(&self, _router: &Router, _stanza: &Stanza, _recipient: &FullJid) -> bool {
        true
    }

    /// A message for an existing account that has no available resource
    /// (RFC 6121 §8.5.2.2.1). Offline storage hooks here.
    async fn on_offline_message(&self, _router: &Router, _stanza: &Stanza) -> Flow {
        Flow::Continue
    }

    /// Domains this module serves as a service of its own (XEP-0045's `conference.<domain>`):
    /// every stanza addressed to one of them goes to [`Module::handle_hosted`] instead of
    /// being bounced as a remote domain. Asked once, when the router is built.
    fn hosted_domains(&self) -> Vec<String> {
        Vec::new()
    }

    /// A stanza addressed to one of [`Module::hosted_domains`] (any JID at that domain).
    /// `from` is trustworthy. The module answers, routes or drops it; errors it wants the
    /// sender to see it sends itself (see [`Router::bounce`]).
    async fn handle_hosted(&self, _router: &Router, _stanza: Stanza) {}

    /// Whether this module wants [`Module::on_delivered`]. Delivery notifications need a
    /// copy of every delivered message, so the router makes one only when some module asks.
    fn observes_delivery(&self) -> bool {
        false
    }

    /// A message was posted to a session's mailbox (only called when
    /// [`Module::observes_delivery`] is true).
    async fn on_delivered(&self, _router: &Router, _resource: &Arc<Resource>, _stanza: &Stanza) {}

    /// A resource was bound.
    async fn on_session_opened(&self, _router: &Router, _resource: &Arc<Resource>) {}

    /// A session ended (cleanly, by connection loss, or replaced). Its last presence is still
    /// in `resource.state` so features can broadcast unavailable presence.
    async fn on_session_closed(&self, _router: &Router, _resource: &Arc<Resource>) {}

    /// A resource's broadcast presence changed (available, away, unavailable).
    async fn on_presence_changed(&self, _router: &Router, _resource: &Arc<Resource>) {}

    /// A session ended for good (no XEP-0198 §5 resumption) holding messages the client
    /// never acknowledged (XEP-0198 §4) or that were still queued for it. Runs after
    /// `on_session_closed`. A module that takes care of some of them removes those from
    /// `stanzas`; the router redelivers what is left (see [`Router::undelivered`]).
    async fn on_undelivered(
        &self,
        _router: &Router,
        _resource: &Arc<Resource>,
        _stanzas: &mut Vec<Undelivered>,
    ) {
    }
}
