//! The router: decides where a stanza goes (RFC 6121 §8) and runs the hook chain that every
//! feature plugs into.
//!
//! ```text
//! session ─ inbound(origin, stanza) ─ [on_inbound hooks] ─ route ─┬─ server / account IQ → Module::handle_iq
//!                                                                 ├─ local full JID  ─ [on_routed] ─ mailbox
//!                                                                 ├─ local bare JID  ─ [on_routed] ─ most available mailboxes
//!                                                                 │                   └─ none available → [on_offline_message]
//!                                                                 ├─ hosted domain (a module's service, e.g. MUC) → Module::handle_hosted
//!                                                                 └─ other domain → remote-server-not-found
//! ```
//!
//! **Architecture invariant:** the router never touches a socket and knows no feature by
//! name. Features (roster, presence, offline storage, disco, …) are [`Module`]s registered at
//! start-up; adding one never adds a branch here.
//!
//! One message for many full JIDs (a room's broadcast) goes through [`Router::fan_out`]: the
//! `on_fan_out` hooks once per message, per copy only the modules' `admits` checks.

mod module;

pub use module::{Flow, IqOutcome, Module};

use confab_core::store::Store;
use confab_core::{
    BareJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, metrics::Metrics,
};
use confab_sessions::{Resource, SessionManager, Undelivered};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Everything a stanza needs on its way: the domain served, live sessions, storage, the
/// registered features and metrics. One per server, shared by every session.
pub struct Router {
    domain: BareJid,
    /// Live sessions on this node.
    pub sessions: Arc<SessionManager>,
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Server-wide counters.
    pub metrics: Arc<Metrics>,
    modules: Vec<Arc<dyn Module>>,
    /// The modules that asked for `on_delivered`; empty means no per-message copy is made.
    delivery_observers: Vec<Arc<dyn Module>>,
    /// The modules that check each copy of a fan-out ([`Module::admits`]).
    fan_out_filters: Vec<Arc<dyn Module>>,
    iq_handlers: HashMap<&'static str, Arc<dyn Module>>,
    /// Service domains (e.g. `conference.<domain>`) and the module serving each.
    hosted: HashMap<String, Arc<dyn Module>>,
}

impl Router {
    /// Creates a router for `domain` with the given features, in hook order.
    pub fn new(
        domain: BareJid,
        sessions: Arc<SessionManager>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        modules: Vec<Arc<dyn Module>>,
    ) -> Self {
        let mut iq_handlers = HashMap::new();
        for module in &modules {
            for namespace in module.iq_namespaces() {
                iq_handlers.insert(*namespace, module.clone());
            }
        }
        let mut hosted = HashMap::new();
        for module in &modules {
            for domain in module.hosted_domains() {
                hosted.insert(domain, module.clone());
            }
        }
        let delivery_observers = modules
            .iter()
            .filter(|m| m.observes_delivery())
            .cloned()
            .collect();
        let fan_out_filters = modules
            .iter()
            .filter(|m| m.filters_fan_out())
            .cloned()
            .collect();
        Self {
            domain,
            sessions,
            store,
            metrics,
            modules,
            delivery_observers,
            fan_out_filters,
            iq_handlers,
            hosted,
        }
    }

    /// The domain this server serves, as a JID.
    pub fn domain(&self) -> &BareJid {
        &self.domain
    }

    /// The service domains modules host (e.g. `conference.<domain>`), for disco#items.
    pub fn hosted_domains(&self) -> impl Iterator<Item = &str> {
        self.hosted.keys().map(String::as_str)
    }

    /// The registered features, in hook order.
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        &self.modules
    }

    /// Whether `jid` names an account of this server (a localpart at our domain).
    pub fn is_local_account(&self, jid: &Jid) -> bool {
        jid.node().is_some() && jid.domain() == self.domain.domain()
    }

    /// Whether `jid` is the server itself.
    pub fn is_server(&self, jid: &Jid) -> bool {
        jid.node().is_none() && jid.resource().is_none() && jid.domain() == self.domain.domain()
    }

    /// Entry for stanzas a local client session sent. The session has already stamped
    /// `from` with its full JID (RFC 6120 §8.1.2.1).
    pub async fn inbound(&self, origin: &Arc<Resource>, mut stanza: Stanza) {
        for module in &self.modules {
            if let Flow::Handled = module.on_inbound(self, origin, &mut stanza).await {
                return;
            }
        }
        self.route(stanza).await;
    }

    /// Routes a stanza whose `from` is already trustworthy (from a session after `inbound`,
    /// or generated by the server or a feature).
    pub fn route(&self, stanza: Stanza) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Boxed once here: routing recurses (an IQ answer or an error reply is routed too).
        Box::pin(self.route_inner(stanza))
    }

    async fn route_inner(&self, stanza: Stanza) {
        let to = match &stanza.to {
            Some(to) => to.clone(),
            // RFC 6120 §10.3: no 'to' means the sender's own account.
            None => match &stanza.from {
                Some(from) => Jid::from(from.to_bare()),
                None => return,
            },
        };
        if to.domain() != self.domain.domain() {
            if let Some(service) = self.hosted.get(to.domain().as_str()) {
                service.handle_hosted(self, stanza).await;
                return;
            }
            // Server-to-server federation is not offered: RFC 6120 §10.4.
            self.bounce(&stanza, StanzaErrorCondition::RemoteServerNotFound)
                .await;
            return;
        }
        if to.node().is_none() {
            self.to_server(stanza, &to).await;
            return;
        }
        match to.try_into_full() {
            Ok(full) => self.to_full_jid(stanza, &full).await,
            Err(bare) => self.to_bare_jid(stanza, &bare).await,
        }
    }

    async fn to_server(&self, stanza: Stanza, to: &Jid) {
        match stanza.kind {
            StanzaKind::Iq => self.handle_iq(stanza).await,
            StanzaKind::Message => {
                // RFC 6120 §10.3.1: the server either handles the message or answers with an
                // error; chat/normal to the bare domain has no consumer here.
                if matches!(stanza.type_attr(), None | Some("normal" | "chat")) {
                    self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                        .await;
                }
            }
            // Presence to the server is handled by features that care (e.g. probes); the
            // rest is dropped (RFC 6121 §4.3 does not define it).
            StanzaKind::Presence => {
                tracing::trace!(to = %to, "presence to server dropped");
            }
        }
    }

    async fn to_full_jid(&self, stanza: Stanza, full: &confab_core::FullJid) {
        if let Some(resource) = self.sessions.get(full) {
            self.deliver(&resource, stanza).await;
            return;
        }
        let bare = full.to_bare();
        // RFC 6121 §8.5.3.2: no such resource.
        match stanza.kind {
            StanzaKind::Message => match stanza.type_attr() {
                Some("groupchat") => {
                    self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                        .await
                }
                Some("headline") | Some("error") => {}
                _ => self.to_bare_jid(stanza, &bare).await,
            },
            StanzaKind::Presence => {
                // §8.5.3.2.2: subscription-related presence is handled like the bare JID;
                // availability presence to a gone resource is dropped.
                if matches!(
                    stanza.type_attr(),
                    Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "probe")
                ) {
                    self.to_bare_jid(stanza, &bare).await
                }
            }
            StanzaKind::Iq => {
                if matches!(stanza.type_attr(), Some("get" | "set")) {
                    self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                        .await;
                }
            }
        }
    }

    async fn to_bare_jid(&self, mut stanza: Stanza, bare: &BareJid) {
        let exists = match self.account_exists(bare).await {
            Ok(exists) => exists,
            Err(error) => {
                tracing::warn!(%error, "account lookup failed");
                self.bounce(&stanza, StanzaErrorCondition::InternalServerError)
                    .await;
                return;
            }
        };
        if !exists {
            // RFC 6121 §8.5.1: no such account.
            match stanza.kind {
                StanzaKind::Message
                    if !matches!(stanza.type_attr(), Some("headline" | "error")) =>
                {
                    self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                        .await
                }
                StanzaKind::Iq if matches!(stanza.type_attr(), Some("get" | "set")) => {
                    self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                        .await
                }
                _ => {}
            }
            return;
        }
        match stanza.kind {
            // RFC 6121 §8.5.2.1.3: the server answers IQs to a bare JID on the account's behalf.
            StanzaKind::Iq => self.handle_iq(stanza).await,
            StanzaKind::Presence => {
                for module in &self.modules {
                    if let Flow::Handled = module.on_routed(self, &mut stanza).await {
                        return;
                    }
                }
                // §8.5.2.1.1: available/unavailable presence goes to every available resource.
                for resource in self.sessions.available(bare) {
                    self.send(&resource, stanza.clone());
                }
            }
            StanzaKind::Message => self.message_to_bare(stanza, bare).await,
        }
    }

    async fn message_to_bare(&self, mut stanza: Stanza, bare: &BareJid) {
        for module in &self.modules {
            if let Flow::Handled = module.on_routed(self, &mut stanza).await {
                return;
            }
        }
        let targets = match stanza.type_attr() {
            // §8.5.2.1.1: error messages to a bare JID are silently dropped.
            Some("error") => return,
            Some("groupchat") => {
                self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                    .await;
                return;
            }
            // §8.5.2.1.1: headlines go to all available resources with non-negative priority.
            Some("headline") => self
                .sessions
                .available(bare)
                .into_iter()
                .filter(|r| r.priority() >= 0)
                .collect(),
            _ => self.sessions.most_available(bare),
        };
        let mut delivered = false;
        for resource in &targets {
            delivered |= self.send_and_notify(resource, stanza.clone()).await;
        }
        if delivered || stanza.type_attr() == Some("headline") {
            return;
        }
        // §8.5.2.2.1: no available resource; offline storage is a feature.
        for module in &self.modules {
            if let Flow::Handled = module.on_offline_message(self, &stanza).await {
                return;
            }
        }
        self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
            .await;
    }

    /// Delivers to one session after the `on_routed` hooks.
    pub async fn deliver(&self, resource: &Arc<Resource>, mut stanza: Stanza) {
        for module in &self.modules {
            if let Flow::Handled = module.on_routed(self, &mut stanza).await {
                return;
            }
        }
        self.send_and_notify(resource, stanza).await;
    }

    /// Delivers one message to many full JIDs (a room's broadcast): `stanza` has no `to`. The
    /// [`Module::on_fan_out`] hooks run once for the message instead of `on_routed` once per
    /// copy; each copy then passes only the per-recipient [`Module::admits`] checks (inbound
    /// blocking) and goes into the session's mailbox without waiting ([`Router::send`]). A
    /// recipient without a session takes the ordinary route (a group chat message to a gone
    /// resource is bounced, RFC 6121 §8.5.3.2.1), so the sender learns of it as before.
    pub async fn fan_out(&self, mut stanza: Stanza, recipients: Vec<confab_core::FullJid>) {
        debug_assert!(stanza.to.is_none(), "a fan-out is addressed per copy");
        for module in &self.modules {
            if let Flow::Handled = module.on_fan_out(self, &mut stanza).await {
                return;
            }
        }
        'copies: for recipient in recipients {
            let Some(resource) = self.sessions.get(&recipient) else {
                self.route(addressed(&stanza, &recipient)).await;
                continue;
            };
            for module in &self.fan_out_filters {
                if !module.admits(self, &stanza, &recipient).await {
                    continue 'copies;
                }
            }
            self.send_and_notify(&resource, addressed(&stanza, &recipient))
                .await;
        }
    }

    async fn send_and_notify(&self, resource: &Arc<Resource>, stanza: Stanza) -> bool {
        // Copying a message costs a DOM clone; only make one if a module listens.
        let notify = stanza.kind == StanzaKind::Message && !self.delivery_observers.is_empty();
        let copy = notify.then(|| stanza.clone());
        if !self.send(resource, stanza) {
            return false;
        }
        if let Some(copy) = copy {
            for module in &self.delivery_observers {
                module.on_delivered(self, resource, &copy).await;
            }
        }
        true
    }

    /// Posts to a session's mailbox without hooks; for features that already decided.
    pub fn send(&self, resource: &Resource, stanza: Stanza) -> bool {
        match resource.send(stanza) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(jid = %resource.jid, %error, "stanza not delivered");
                false
            }
        }
    }

    async fn handle_iq(&self, stanza: Stanza) {
        if !matches!(stanza.type_attr(), Some("get" | "set")) {
            // Results and errors addressed to the server or an account answer requests the
            // server made; nobody waits for them here.
            return;
        }
        let handler = stanza
            .payload()
            .and_then(|p| self.iq_handlers.get(p.ns().as_str()));
        let Some(handler) = handler else {
            self.bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                .await;
            return;
        };
        match handler.handle_iq(self, &stanza).await {
            IqOutcome::Result(payload) => self.route(stanza.iq_result(payload)).await,
            IqOutcome::Error(error) => self.reply_error(&stanza, &error).await,
            IqOutcome::Replied => {}
        }
    }

    /// Answers a stanza with an error (never answers an error; RFC 6120 §8.3.1).
    pub async fn bounce(&self, stanza: &Stanza, condition: StanzaErrorCondition) {
        self.reply_error(stanza, &StanzaError::new(condition)).await;
    }

    /// Answers a stanza with a specific error.
    pub async fn reply_error(&self, stanza: &Stanza, error: &StanzaError) {
        if let Some(reply) = stanza.error_reply(error) {
            self.route(reply).await;
        }
    }

    async fn account_exists(&self, bare: &BareJid) -> Result<bool, confab_core::store::StoreError> {
        match bare.node() {
            Some(node) => self.store.account_exists(node.as_str()).await,
            None => Ok(false),
        }
    }

    /// Runs the session-opened hooks (after resource binding).
    pub async fn session_opened(&self, resource: &Arc<Resource>) {
        self.metrics.sessions.inc();
        for module in &self.modules {
            module.on_session_opened(self, resource).await;
        }
    }

    /// Runs the session-closed hooks (clean close, drop or replacement).
    pub async fn session_closed(&self, resource: &Arc<Resource>) {
        self.metrics.sessions.dec();
        for module in &self.modules {
            module.on_session_closed(self, resource).await;
        }
    }

    /// Messages a session that ended for good never confirmed (issue 3 item 4: they stay
    /// retrievable and reach the account's devices, never twice the same one). Runs the
    /// `on_undelivered` hooks, then redelivers what no module took to the account, like a
    /// message to a resource that is gone (RFC 6121 §8.5.3.2.1):
    ///
    /// - only `chat`/`normal` messages a client sent are kept (presence and IQs are not
    ///   replayed, nor are headlines, errors or group chat, nor what the server made for
    ///   this one session: MAM results and carbons come from the account's bare JID, commit
    ///   receipts from the domain, never from a full JID);
    /// - the `on_routed` hooks do not run again: blocking was applied and the message log
    ///   committed the message (its `<stanza-id/>` is in the stanza) on the first routing, so
    ///   the log neither archives it twice nor swallows it as a resend;
    /// - it goes to the most available other resources; for a message addressed to the bare
    ///   JID only to those bound after it reached the dead session (the others that were
    ///   most available then had their own copy);
    /// - with no such resource it goes to `on_offline_message` (offline storage, delivered at
    ///   the next login). It is never bounced: the sender already holds a commit receipt.
    pub async fn undelivered(&self, resource: &Arc<Resource>, mut stanzas: Vec<Undelivered>) {
        stanzas.retain(|u| {
            u.stanza.kind == StanzaKind::Message
                && matches!(u.stanza.type_attr(), None | Some("chat" | "normal"))
                && u.stanza
                    .from
                    .as_ref()
                    .is_some_and(|from| from.resource().is_some())
        });
        for module in &self.modules {
            if stanzas.is_empty() {
                return;
            }
            module.on_undelivered(self, resource, &mut stanzas).await;
        }
        let bare = resource.jid.to_bare();
        for Undelivered {
            stanza,
            bound_before,
            holders,
        } in stanzas
        {
            let to_bare = stanza.to.as_ref().is_some_and(|to| to.resource().is_none());
            // A device still bound that already holds a copy means the user has it: it is
            // not stored for later, where the next device to log in would get it again.
            let mut delivered = !holders.is_empty()
                && self
                    .sessions
                    .resources(&bare)
                    .iter()
                    .any(|r| holders.contains(&r.id));
            let targets: Vec<Arc<Resource>> = self
                .sessions
                .most_available(&bare)
                .into_iter()
                .filter(|r| {
                    r.id != resource.id
                        && !holders.contains(&r.id)
                        && (!to_bare || r.id >= bound_before)
                })
                .collect();
            for target in &targets {
                delivered |= self.send_and_notify(target, stanza.clone()).await;
            }
            if delivered {
                continue;
            }
            for module in &self.modules {
                if let Flow::Handled = module.on_offline_message(self, &stanza).await {
                    break;
                }
            }
        }
    }

    /// Runs the presence-changed hooks after a resource's broadcast presence changed.
    pub async fn presence_changed(&self, resource: &Arc<Resource>) {
        for module in &self.modules {
            module.on_presence_changed(self, resource).await;
        }
    }

    /// The server-level disco features contributed by every module.
    pub fn server_features(&self) -> Vec<&'static str> {
        let mut features: Vec<&'static str> = self
            .modules
            .iter()
            .flat_map(|m| m.server_features().iter().copied())
            .collect();
        features.sort_unstable();
        features.dedup();
        features
    }

    /// The account-level disco features contributed by every module.
    pub fn account_features(&self) -> Vec<&'static str> {
        let mut features: Vec<&'static str> = self
            .modules
            .iter()
            .flat_map(|m| m.account_features().iter().copied())
            .collect();
        features.sort_unstable();
        features.dedup();
        features
    }

    /// Stream features modules add after authentication (e.g. roster versioning).
    pub fn stream_features(&self) -> Vec<confab_core::Element> {
        self.modules
            .iter()
            .flat_map(|m| m.stream_features())
            .collect()
    }
}

/// A copy of a fanned-out stanza addressed to `to` (attribute and routing field).
fn addressed(stanza: &Stanza, to: &confab_core::FullJid) -> Stanza {
    let mut copy = stanza.clone();
    confab_core::stanza::set_attr(&mut copy.element, "to", Some(to.to_string()));
    copy.to = Some(to.clone().into());
    copy
}
