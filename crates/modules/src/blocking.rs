//! XEP-0191 blocking command: managing a blocklist, and enforcing it on every stanza.
//!
//! Enforcement runs at two hooks. `on_inbound` sees what a user's own session sends: a
//! stanza to a JID the user blocks is refused with `<not-acceptable/>` plus
//! `<blocked xmlns='urn:xmpp:blocking:errors'/>` (XEP-0191 §3.3), and an IQ to the bare JID
//! of an account that blocks the sender is refused there too, because the server answers
//! such IQs for the account and they never reach `on_routed`. `on_routed` sees every
//! message, presence and full-JID IQ about to reach a local account: if that account blocks
//! the sender, presence and messages are dropped without a trace and IQ requests get
//! `<service-unavailable/>`, so the user simply appears offline. It also drops stanzas the
//! server generates on behalf of an account (presence broadcasts, probe answers) towards a
//! JID that account blocks.
//!
//! Because this runs for every stanza, blocklists of accounts with a bound session are kept
//! in memory and only read from the store on first use; they are dropped when the last
//! session closes. Lists of accounts without a session are read from the store when needed,
//! except for plain presence to an account with no session, which the router delivers to
//! nobody anyway; that keeps presence broadcasts to offline contacts off the database.
//!
//! JID matching follows XEP-0191 §6 (the rules of XEP-0016 §2.1): an item matches exactly
//! that full JID, or any resource of a bare JID, or a domain with everything at it and at
//! its subdomains.

use crate::store_error;
use async_trait::async_trait;
use confab_core::jids;
use confab_core::stanza::element;
use confab_core::store::StoreError;
use confab_core::{
    BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaErrorType,
    StanzaKind, ns,
};
use confab_router::{Flow, IqOutcome, Module, Router};
use confab_sessions::{Resource, SessionId};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most JIDs one account may block. Bounds the memory a cached list takes and the work of a
/// single block request.
pub const MAX_BLOCKLIST_ITEMS: usize = 10_000;

/// One account's blocked JIDs, normalized as `jid` prints them.
#[derive(Debug, Default, Clone)]
struct Blocklist {
    items: HashSet<String>,
}

impl Blocklist {
    /// Whether a stanza from or to `jid` is blocked (XEP-0191 §6).
    fn blocks(&self, jid: &Jid) -> bool {
        // Most accounts block nobody; spare them the string building below.
        if self.items.is_empty() {
            return false;
        }
        // The JID itself, whatever its form: a blocked full JID, bare JID, domain/resource
        // or domain matches exactly that.
        if self.items.contains(jid.as_str()) {
            return true;
        }
        // user@domain matches every resource of it.
        if jid.node().is_some()
            && jid.resource().is_some()
            && self.items.contains(jids::bare_str(jid))
        {
            return true;
        }
        // A domain matches everything at it and at its subdomains.
        let mut domain = jid.domain().as_str();
        loop {
            if self.items.contains(domain) {
                return true;
            }
            match domain.split_once('.') {
                Some((_, parent)) => domain = parent,
                None => return false,
            }
        }
    }
}

/// Manages blocklists (XEP-0191) and drops or refuses stanzas they block.
#[derive(Debug, Default)]
pub struct Blocking {
    /// Blocklists of accounts with at least one bound session, by username, so enforcement
    /// is a hash lookup rather than a query per stanza.
    cache: RwLock<HashMap<String, Arc<Blocklist>>>,
    /// Sessions that fetched the blocklist: only they get block and unblock pushes
    /// (XEP-0191 §3.3, §3.4), as only they know the list the push changes.
    requested: Mutex<HashSet<SessionId>>,
    /// Makes push ids unique on this server.
    next_push: AtomicU64,
}

impl Blocking {
    /// Creates the module with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The blocklist of a local account, from the cache or the store. The list is cached
    /// only while the account has a session; the session-closed hook drops it again.
    async fn list(&self, router: &Router, account: &BareJid) -> Result<Arc<Blocklist>, StoreError> {
        let Some(username) = account.node().map(|node| node.as_str()) else {
            return Ok(Arc::default());
        };
        let cached = self.cache.read().get(username).cloned();
        if let Some(list) = cached {
            return Ok(list);
        }
        let items = router.store.blocklist(username).await?;
        let list = Arc::new(Blocklist {
            items: items.into_iter().collect(),
        });
        if router.sessions.resources(account).is_empty() {
            return Ok(list);
        }
        // Keep what another task may have cached meanwhile: a block or unblock updates the
        // cached entry after writing the store, so the entry present is at least as new.
        Ok(self
            .cache
            .write()
            .entry(username.to_owned())
            .or_insert(list)
            .clone())
    }

    /// Applies a change to the cached list of `account`, if cached. An uncached list is
    /// read from the store, which already holds the change, on next use.
    fn update_cache(&self, account: &BareJid, change: impl FnOnce(&mut HashSet<String>)) {
        let Some(username) = account.node() else {
            return;
        };
        let mut cache = self.cache.write();
        if let Some(entry) = cache.get_mut(username.as_str()) {
            let mut items = entry.items.clone();
            change(&mut items);
            *entry = Arc::new(Blocklist { items });
        }
    }

    /// `<blocklist/>` get: the list, and the session is marked to receive pushes.
    async fn get(
        &self,
        router: &Router,
        iq: &Stanza,
        account: &BareJid,
    ) -> Result<IqOutcome, StanzaError> {
        let list = self.list(router, account).await.map_err(store_error)?;
        if let Some(full) = iq.from.as_ref().and_then(|from| from.try_as_full().ok())
            && let Some(resource) = router.sessions.get(full)
        {
            self.requested.lock().insert(resource.id);
        }
        let mut items: Vec<&String> = list.items.iter().collect();
        items.sort_unstable();
        let mut reply = Element::bare("blocklist", ns::BLOCKING);
        for jid in items {
            reply.append_child(element("item", ns::BLOCKING, &[("jid", jid)]));
        }
        Ok(IqOutcome::Result(Some(reply)))
    }

    /// `<block/>` set (XEP-0191 §3.3).
    async fn block(
        &self,
        router: &Router,
        iq: &Stanza,
        account: &BareJid,
        username: &str,
        payload: &Element,
    ) -> Result<IqOutcome, StanzaError> {
        let jids = parse_items(payload)?;
        if jids.is_empty() {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest)
                .with_text("a block needs at least one item"));
        }
        // Loading first puts the list in the cache before the store changes, so a stale
        // copy read concurrently cannot be cached after our update below.
        let current = self.list(router, account).await.map_err(store_error)?;
        let added = jids
            .iter()
            .filter(|jid| !current.items.contains(jid.as_str()))
            .count();
        if current.items.len() + added > MAX_BLOCKLIST_ITEMS {
            return Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("blocklist full"));
        }
        let items: Vec<String> = jids.iter().map(|jid| jid.as_str().to_owned()).collect();
        router
            .store
            .block(username, &items)
            .await
            .map_err(store_error)?;
        // XEP-0191 §3.3: contacts who saw the user's presence now see them go offline. This
        // must happen before the cache learns the block, or `on_routed` would drop it.
        self.send_presence(router, account, username, &jids, Courtesy::Unavailable)
            .await;
        self.update_cache(account, |set| set.extend(items.iter().cloned()));
        router.route(iq.iq_result(None)).await;
        self.push(router, account, items_element("block", &items));
        Ok(IqOutcome::Replied)
    }

    /// `<unblock/>` set, with items or, empty, for everything (XEP-0191 §3.4, §3.5).
    async fn unblock(
        &self,
        router: &Router,
        iq: &Stanza,
        account: &BareJid,
        username: &str,
        payload: &Element,
    ) -> Result<IqOutcome, StanzaError> {
        let jids = parse_items(payload)?;
        let items: Vec<String> = jids.iter().map(|jid| jid.as_str().to_owned()).collect();
        // Unblocking everything unblocks what the list held, for the presence below.
        let unblocked: Vec<Jid> = if jids.is_empty() {
            let current = self.list(router, account).await.map_err(store_error)?;
            current
                .items
                .iter()
                .filter_map(|jid| Jid::new(jid).ok())
                .collect()
        } else {
            jids.clone()
        };
        router
            .store
            .unblock(username, &items)
            .await
            .map_err(store_error)?;
        if items.is_empty() {
            self.update_cache(account, HashSet::clear);
        } else {
            self.update_cache(account, |set| {
                for item in &items {
                    set.remove(item);
                }
            });
        }
        // XEP-0191 §3.4 (MUST): unblocked contacts get the user's current presence again,
        // after the cache forgot the block so `on_routed` lets it through.
        self.send_presence(router, account, username, &unblocked, Courtesy::Current)
            .await;
        router.route(iq.iq_result(None)).await;
        self.push(router, account, items_element("unblock", &items));
        Ok(IqOutcome::Replied)
    }

    /// Sends presence from each available resource of the user to the newly blocked or
    /// unblocked JIDs that are entitled to its presence: roster contacts with a `from` or
    /// `both` subscription, and entities the resource sent directed presence to.
    async fn send_presence(
        &self,
        router: &Router,
        account: &BareJid,
        username: &str,
        blocked: &[Jid],
        courtesy: Courtesy,
    ) {
        let available = router.sessions.available(account);
        if available.is_empty() {
            return;
        }
        let blocked_list = Blocklist {
            items: blocked.iter().map(|jid| jid.as_str().to_owned()).collect(),
        };
        let subscribers: Vec<Jid> = match router.store.roster(username).await {
            Ok((_, roster)) => roster
                .iter()
                .filter(|item| item.subscription.has_from())
                .filter_map(|item| Jid::new(&item.jid).ok())
                .collect(),
            Err(error) => {
                // The block itself stands; only the courtesy presence is skipped.
                tracing::warn!(%error, username, "roster unavailable for block presence");
                Vec::new()
            }
        };
        let mut targets: Vec<Jid> = subscribers
            .iter()
            .filter(|contact| blocked_list.blocks(contact))
            .cloned()
            .collect();
        // A blocked full JID matches no bare roster JID, but its account may be subscribed.
        for jid in blocked {
            if jid.node().is_some()
                && jid.resource().is_some()
                && subscribers.contains(&Jid::from(jid.to_bare()))
            {
                targets.push(jid.clone());
            }
        }
        for resource in available {
            let directed: Vec<Jid> = resource
                .state
                .lock()
                .directed_to
                .iter()
                .filter(|jid| blocked_list.blocks(jid))
                .cloned()
                .collect();
            let mut sent = HashSet::new();
            for target in targets.iter().chain(&directed) {
                if !sent.insert(target.as_str().to_owned()) {
                    continue;
                }
                let mut presence = match courtesy {
                    Courtesy::Unavailable => {
                        Stanza::new(element("presence", ns::CLIENT, &[("type", "unavailable")]))
                    }
                    Courtesy::Current => match resource.state.lock().presence.clone() {
                        Some(current) => Stanza::new(current),
                        None => continue,
                    },
                };
                presence.set_from(Some(Jid::from(resource.jid.clone())));
                presence.set_to(Some(target.clone()));
                router.route(presence).await;
            }
        }
    }

    /// Sends a block or unblock push to each session of the account that fetched the list.
    fn push(&self, router: &Router, account: &BareJid, payload: Element) {
        let resources = router.sessions.resources(account);
        let targets: Vec<Arc<Resource>> = {
            let requested = self.requested.lock();
            resources
                .into_iter()
                .filter(|resource| requested.contains(&resource.id))
                .collect()
        };
        for resource in targets {
            let id = format!(
                "blocking-push-{}",
                self.next_push.fetch_add(1, Ordering::Relaxed)
            );
            // Like the pushes in XEP-0191 §3.3, without `from`: they come from the account.
            let mut iq = element(
                "iq",
                ns::CLIENT,
                &[("type", "set"), ("id", &id), ("to", resource.jid.as_str())],
            );
            iq.append_child(payload.clone());
            router.send(&resource, Stanza::new(iq));
        }
    }

    /// Consumes a stanza whose recipient blocks its sender (XEP-0191 §3.3): presence and
    /// messages vanish, IQ requests get `<service-unavailable/>` as if nobody were there.
    async fn refuse_inbound(router: &Router, stanza: &Stanza) {
        // XEP-0191 §3.3: IQ requests and messages from a blocked entity are answered with
        // service-unavailable (the answer an offline or absent user would give, so the block
        // is not revealed); presence is dropped.
        let answerable = match stanza.kind {
            StanzaKind::Iq => matches!(stanza.type_attr(), Some("get" | "set")),
            StanzaKind::Message => {
                !matches!(stanza.type_attr(), Some("error" | "groupchat" | "headline"))
            }
            StanzaKind::Presence => false,
        };
        if answerable {
            router
                .bounce(stanza, StanzaErrorCondition::ServiceUnavailable)
                .await;
        }
    }
}

#[async_trait]
impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[ns::BLOCKING]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::BLOCKING]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        // XEP-0191 §3: the blocklist is managed by its owner, with no `to` (or its own JID).
        let Some(account) = own_account(iq) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        let Some(username) = account.node().map(|node| node.as_str().to_owned()) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        let Some(payload) = iq.payload() else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let result = match (iq.type_attr(), payload.name()) {
            (Some("get"), "blocklist") => self.get(router, iq, &account).await,
            (Some("set"), "block") => self.block(router, iq, &account, &username, payload).await,
            (Some("set"), "unblock") => {
                self.unblock(router, iq, &account, &username, payload).await
            }
            _ => Err(StanzaErrorCondition::BadRequest.into()),
        };
        result.unwrap_or_else(IqOutcome::Error)
    }

    async fn on_inbound(
        &self,
        router: &Router,
        origin: &Arc<Resource>,
        stanza: &mut Stanza,
    ) -> Flow {
        let Some(to) = stanza.to.clone() else {
            // Addressed to the sender's own account.
            return Flow::Continue;
        };
        if jids::same_bare(&to, &origin.jid) || router.is_server(&to) {
            return Flow::Continue;
        }
        let user = jids::bare(&origin.jid);
        // Presence, errors and IQ results are never answered with an error (RFC 6120
        // §8.2.3, §8.3.1; XEP-0191 §3.3 for presence): those are dropped without a word.
        let silent = match stanza.kind {
            StanzaKind::Presence => true,
            StanzaKind::Message => stanza.is_error(),
            StanzaKind::Iq => !matches!(stanza.type_attr(), Some("get" | "set")),
        };
        match self.list(router, &user).await {
            Ok(list) if list.blocks(&to) => {
                // XEP-0191 §3.3: the user may not reach whom they block.
                if !silent {
                    let error = StanzaError::new(StanzaErrorCondition::NotAcceptable)
                        .with_type(StanzaErrorType::Cancel)
                        .with_app_condition(Element::bare("blocked", ns::BLOCKING_ERRORS));
                    reply_to_origin(router, origin, stanza, &error);
                }
                return Flow::Handled;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, %user, "blocklist unavailable; stanza refused");
                if !silent {
                    let error = StanzaError::new(StanzaErrorCondition::InternalServerError);
                    reply_to_origin(router, origin, stanza, &error);
                }
                return Flow::Handled;
            }
        }
        // IQ requests to an account's bare JID are answered by the server for the account
        // (RFC 6121 §8.5.2.1.3) and skip `on_routed`, so the account's block applies here.
        if stanza.kind == StanzaKind::Iq
            && !silent
            && to.resource().is_none()
            && router.is_local_account(&to)
        {
            let sender = Jid::from(origin.jid.clone());
            let refused = match self.list(router, &to.to_bare()).await {
                Ok(list) => list
                    .blocks(&sender)
                    .then_some(StanzaErrorCondition::ServiceUnavailable),
                Err(error) => {
                    tracing::warn!(%error, "blocklist unavailable; IQ refused");
                    Some(StanzaErrorCondition::InternalServerError)
                }
            };
            if let Some(condition) = refused {
                reply_to_origin(router, origin, stanza, &StanzaError::new(condition));
                return Flow::Handled;
            }
        }
        Flow::Continue
    }

    fn filters_fan_out(&self) -> bool {
        true
    }

    /// The checks of `on_routed` for one copy of a fan-out (a room's broadcast): a recipient
    /// who blocks the sender (for group chat the occupant JID, its room or the service) does
    /// not get it, silently (XEP-0191 §3.3: group chat is not answered).
    async fn admits(&self, router: &Router, stanza: &Stanza, recipient: &FullJid) -> bool {
        let Some(from) = &stanza.from else {
            return true;
        };
        let to = Jid::from(recipient.clone());
        if !router.is_local_account(&to) || router.is_server(from) || jids::same_bare(from, &to) {
            return true;
        }
        match self.list(router, &recipient.clone().into_bare()).await {
            Ok(list) if list.blocks(from) => return false,
            Ok(_) => {}
            Err(error) => {
                // Failing closed, as in `on_routed`.
                tracing::warn!(%error, %recipient, "blocklist unavailable; copy dropped");
                return false;
            }
        }
        if !stanza.is_error() && router.is_local_account(from) {
            match self.list(router, &from.to_bare()).await {
                Ok(list) => return !list.blocks(&to),
                Err(error) => {
                    tracing::warn!(%error, sender = %from, "blocklist unavailable; copy dropped");
                    return false;
                }
            }
        }
        true
    }

    async fn on_routed(&self, router: &Router, stanza: &mut Stanza) -> Flow {
        let (Some(from), Some(to)) = (stanza.from.clone(), stanza.to.clone()) else {
            // Without a sender the stanza comes from the server itself, which nobody blocks.
            return Flow::Continue;
        };
        if !router.is_local_account(&to) || router.is_server(&from) {
            return Flow::Continue;
        }
        if jids::same_bare(&from, &to) {
            // Between an account's own resources.
            return Flow::Continue;
        }
        let recipient = jids::bare(&to);
        // Plain presence to an account without sessions reaches nobody; skip the lookup so
        // presence broadcasts to offline contacts do not cost a query each.
        let undeliverable_presence = stanza.kind == StanzaKind::Presence
            && matches!(stanza.type_attr(), None | Some("unavailable"))
            && router.sessions.resources(&recipient).is_empty();
        if !undeliverable_presence {
            match self.list(router, &recipient).await {
                Ok(list) if list.blocks(&from) => {
                    Self::refuse_inbound(router, stanza).await;
                    return Flow::Handled;
                }
                Ok(_) => {}
                Err(error) => {
                    // Failing closed: a stanza the recipient may have blocked is not delivered.
                    tracing::warn!(%error, %recipient, "blocklist unavailable; stanza refused");
                    let answerable = match stanza.kind {
                        StanzaKind::Presence => false,
                        StanzaKind::Message => true,
                        StanzaKind::Iq => matches!(stanza.type_attr(), Some("get" | "set")),
                    };
                    if answerable {
                        router
                            .bounce(stanza, StanzaErrorCondition::InternalServerError)
                            .await;
                    }
                    return Flow::Handled;
                }
            }
        }
        // Stanzas the server emits on behalf of a local account (presence broadcasts, probe
        // answers) to a JID that account blocks. Errors are exempt: they are the server's
        // answers to the blocked party, such as the service-unavailable above.
        if !stanza.is_error() && router.is_local_account(&from) {
            match self.list(router, &from.to_bare()).await {
                Ok(list) if list.blocks(&to) => return Flow::Handled,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, sender = %from, "blocklist unavailable; stanza dropped");
                    return Flow::Handled;
                }
            }
        }
        Flow::Continue
    }

    async fn on_session_closed(&self, router: &Router, resource: &Arc<Resource>) {
        self.requested.lock().remove(&resource.id);
        let account = resource.jid.to_bare();
        if router.sessions.resources(&account).is_empty()
            && let Some(username) = account.node()
        {
            self.cache.write().remove(username.as_str());
        }
    }
}

/// Parses and normalizes the `<item jid='…'/>` children of a block or unblock request,
/// without duplicates. Returns only a condition: the texts would add nothing to it.
fn parse_items(payload: &Element) -> Result<Vec<Jid>, StanzaErrorCondition> {
    let mut seen = HashSet::new();
    let mut jids = Vec::new();
    for item in payload
        .children()
        .filter(|child| child.is("item", ns::BLOCKING))
    {
        let value = item.attr("jid").ok_or(StanzaErrorCondition::BadRequest)?;
        let jid = Jid::new(value).map_err(|_| StanzaErrorCondition::JidMalformed)?;
        if seen.insert(jid.as_str().to_owned()) {
            jids.push(jid);
        }
        if jids.len() > MAX_BLOCKLIST_ITEMS {
            return Err(StanzaErrorCondition::ResourceConstraint);
        }
    }
    Ok(jids)
}

/// `<block/>` or `<unblock/>` with one item per JID, for pushes.
fn items_element(name: &str, items: &[String]) -> Element {
    let mut payload = Element::bare(name, ns::BLOCKING);
    for jid in items {
        payload.append_child(element("item", ns::BLOCKING, &[("jid", jid)]));
    }
    payload
}

/// Answers a stanza straight into the sending session. Routing the error instead would run
/// it through `on_routed`, where the user's own block would drop it.
fn reply_to_origin(router: &Router, origin: &Resource, stanza: &Stanza, error: &StanzaError) {
    if let Some(reply) = stanza.error_reply(error) {
        router.send(origin, reply);
    }
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

/// Which presence a block change sends to the affected contacts.
#[derive(Clone, Copy)]
enum Courtesy {
    /// The user went invisible to a newly blocked contact (XEP-0191 §3.3).
    Unavailable,
    /// The user's current presence, to a newly unblocked contact (XEP-0191 §3.4).
    Current,
}
