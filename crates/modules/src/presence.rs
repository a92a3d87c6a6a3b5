//! Presence (RFC 6121 §4) and presence subscriptions (RFC 6121 §3).
//!
//! Two directions meet here. Stanzas a local session sends arrive at `on_inbound` ("outbound"
//! in the RFC's terms: the user's server processing what the user sends); stanzas arriving at
//! a local account arrive at `on_routed` ("inbound": the contact's server). When both parties
//! are local, an outbound subscription stanza is routed and comes straight back through
//! `on_routed` for the contact's side, so the two halves never share state except the store.
//!
//! The subscription state machine itself is the sans-IO [`subscription`] module: it takes the
//! current roster row and returns what to store, push and send, exactly as the tables of
//! RFC 6121 Appendix A prescribe; the async code around it only performs those effects.
//!
//! Cost note: a broadcast loads the user's roster once (one store query per presence change),
//! and answering the probes of a login costs one row lookup per local contact. That is fine at
//! today's scale; a per-user in-memory roster cache is the next step if it shows up.

use crate::roster;
use async_trait::async_trait;
use confab_core::stanza::{element, set_attr};
use confab_core::store::RosterItem;
use confab_core::{BareJid, Element, FullJid, Jid, Stanza, StanzaKind, ns};
use confab_router::{Flow, Module, Router};
use confab_sessions::Resource;
use std::sync::Arc;
use subscription::{Kind, Write};

/// Presence broadcast, probes, directed presence and the subscription state machine.
pub struct Presence;

impl Presence {
    /// Creates the presence feature.
    pub fn new() -> Self {
        Self
    }
}

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    async fn on_inbound(
        &self,
        router: &Router,
        origin: &Arc<Resource>,
        stanza: &mut Stanza,
    ) -> Flow {
        if stanza.kind != StanzaKind::Presence {
            return Flow::Continue;
        }
        let type_attr = stanza.type_attr().map(str::to_owned);
        match type_attr.as_deref() {
            None | Some("unavailable") if stanza.to.is_none() => {
                if type_attr.is_none() {
                    broadcast_available(router, origin, stanza).await;
                } else {
                    broadcast_unavailable(router, origin, stanza).await;
                }
                Flow::Handled
            }
            None | Some("unavailable") => {
                note_directed(router, origin, stanza).await;
                Flow::Continue
            }
            Some(kind) => match Kind::parse(kind) {
                Some(kind) => {
                    outbound_subscription(router, origin, stanza, kind).await;
                    Flow::Handled
                }
                // Probes and errors are routed as they are; a probe comes back through
                // `on_routed` if it is for a local account.
                None => Flow::Continue,
            },
        }
    }

    async fn on_routed(&self, router: &Router, stanza: &mut Stanza) -> Flow {
        if stanza.kind != StanzaKind::Presence {
            return Flow::Continue;
        }
        match stanza.type_attr() {
            Some("probe") => {
                inbound_probe(router, stanza).await;
                Flow::Handled
            }
            Some(kind) => match Kind::parse(kind) {
                Some(kind) => {
                    inbound_subscription(router, stanza, kind).await;
                    Flow::Handled
                }
                None => Flow::Continue,
            },
            // Available and unavailable presence is delivered by the router as it is.
            None => Flow::Continue,
        }
    }

    async fn on_session_closed(&self, router: &Router, resource: &Arc<Resource>) {
        // Covers unclean disconnects: contacts must not keep seeing a resource that is gone
        // (RFC 6121 §4.5.2, §4.6.3).
        let (was_available, directed) = {
            let mut state = resource.state.lock();
            (
                state.presence.take().is_some(),
                std::mem::take(&mut state.directed_to),
            )
        };
        let unavailable = element(
            "presence",
            ns::CLIENT,
            &[("type", "unavailable"), ("from", resource.jid.as_str())],
        );
        finish_unavailable(router, resource, unavailable, was_available, directed).await;
    }
}

/// RFC 6121 §4.7.2.3: an integer in -128..=127, zero when absent. Out-of-range values are
/// clamped rather than rejected so a sloppy client still comes online.
fn priority(presence: &Element) -> i8 {
    presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i64>().ok())
        .map_or(0, |p| p.clamp(i64::from(i8::MIN), i64::from(i8::MAX)) as i8)
}

/// The user's roster rows, or none when the store fails: presence is best-effort and a
/// failed lookup must not take the session down.
async fn roster_rows(router: &Router, user: &BareJid) -> Vec<RosterItem> {
    let Some(username) = user.node() else {
        return Vec::new();
    };
    match router.store.roster(username.as_str()).await {
        Ok((_, items)) => items,
        Err(error) => {
            tracing::warn!(%error, %user, "roster load for presence failed");
            Vec::new()
        }
    }
}

/// One roster row, `None` when absent or when the store fails (logged).
async fn roster_row(router: &Router, user: &BareJid, contact: &BareJid) -> Option<RosterItem> {
    let username = user.node()?;
    match router
        .store
        .roster_item(username.as_str(), contact.as_str())
        .await
    {
        Ok(row) => row,
        Err(error) => {
            tracing::warn!(%error, %user, "roster item load for presence failed");
            None
        }
    }
}

/// A copy of `presence` addressed to `to`.
fn addressed(presence: &Element, to: &Jid) -> Stanza {
    let mut copy = presence.clone();
    set_attr(&mut copy, "to", Some(to.as_str().to_owned()));
    Stanza::new(copy)
}

/// Sends `presence` to every contact subscribed to the user (§4.2.2, §4.4.2, §4.5.2) through
/// the router, so other features (blocking) still see each copy.
async fn to_subscribers(router: &Router, roster: &[RosterItem], presence: &Element) {
    for row in roster.iter().filter(|row| row.subscription.has_from()) {
        match Jid::new(&row.jid) {
            Ok(contact) => router.route(addressed(presence, &contact)).await,
            Err(_) => tracing::warn!(jid = %row.jid, "unparsable roster JID skipped"),
        }
    }
}

/// Sends `presence` to the user's available resources, optionally skipping `skip`.
fn to_own_resources(router: &Router, user: &BareJid, presence: &Element, skip: Option<u64>) {
    for resource in router.sessions.available(user) {
        if Some(resource.id) == skip {
            continue;
        }
        router.send(
            &resource,
            addressed(presence, &Jid::from(resource.jid.clone())),
        );
    }
}

/// RFC 6121 §4.2 (initial presence) and §4.4 (presence updates).
async fn broadcast_available(router: &Router, origin: &Arc<Resource>, stanza: &Stanza) {
    let mut presence = stanza.element.clone();
    set_attr(&mut presence, "from", Some(origin.jid.as_str().to_owned()));
    let first = {
        let mut state = origin.state.lock();
        let first = state.presence.is_none();
        state.presence = Some(presence.clone());
        state.priority = priority(&presence);
        first
    };
    let user = origin.jid.to_bare();
    let roster = roster_rows(router, &user).await;
    to_subscribers(router, &roster, &presence).await;
    // §4.2.2 / §4.4.2: every available resource of the user, including the one that sent
    // it, so a client learns what the server now broadcasts for it. The echo comes first,
    // so a client sees its own presence confirmed before its contacts'.
    to_own_resources(router, &user, &presence, None);
    if first {
        send_probes(router, origin, &user, &roster).await;
        // §4.2.2: the new resource learns about the user's other resources…
        for resource in router.sessions.available(&user) {
            if resource.id == origin.id {
                continue;
            }
            let last = resource.state.lock().presence.clone();
            if let Some(last) = last {
                router.send(origin, addressed(&last, &Jid::from(origin.jid.clone())));
            }
        }
        // …and §3.1.3: requests that arrived while nobody could answer them are offered
        // again at every login until the user decides.
        for row in &roster {
            let Some(xml) = &row.pending_in else { continue };
            match xml.parse::<Element>() {
                Ok(request) => {
                    router.send(origin, Stanza::new(request));
                }
                Err(error) => tracing::warn!(%error, "stored subscription request unparsable"),
            }
        }
    }
    router.presence_changed(origin).await;
}

/// RFC 6121 §4.2.2 / §4.3.1: asks every contact the user is subscribed to for its presence.
/// Local contacts are answered directly to the new resource, which spares the user's other
/// resources a second copy of presence they already have.
async fn send_probes(
    router: &Router,
    origin: &Arc<Resource>,
    user: &BareJid,
    roster: &[RosterItem],
) {
    let reply_to = Jid::from(origin.jid.clone());
    for row in roster.iter().filter(|row| row.subscription.has_to()) {
        let Ok(contact) = BareJid::new(&row.jid) else {
            tracing::warn!(jid = %row.jid, "unparsable roster JID skipped");
            continue;
        };
        if router.is_local_account(&contact) {
            answer_probe(router, &contact, user, &reply_to, None).await;
        } else {
            // §4.3.1: probes come from the bare JID; the answer goes to all resources.
            router
                .route(Stanza::new(element(
                    "presence",
                    ns::CLIENT,
                    &[
                        ("type", "probe"),
                        ("from", user.as_str()),
                        ("to", contact.as_str()),
                    ],
                )))
                .await;
        }
    }
}

/// RFC 6121 §4.3.2: answers a probe of `owner` by `prober` with the last presence of each of
/// the owner's available resources (only `only` if the probe named one), provided the prober
/// is subscribed to the owner. Unauthorized probes are dropped without revealing anything.
async fn answer_probe(
    router: &Router,
    owner: &BareJid,
    prober: &BareJid,
    reply_to: &Jid,
    only: Option<&FullJid>,
) {
    if owner != prober {
        let row = roster_row(router, owner, prober).await;
        if !roster::subscription_of(row.as_ref()).has_from() {
            return;
        }
    }
    for resource in router.sessions.available(owner) {
        if only.is_some_and(|only| *only != resource.jid) {
            continue;
        }
        let last = resource.state.lock().presence.clone();
        if let Some(last) = last {
            router.route(addressed(&last, reply_to)).await;
        }
    }
}

/// `on_routed` for probes: the router only calls it for existing local accounts.
async fn inbound_probe(router: &Router, stanza: &Stanza) {
    let (Some(to), Some(from)) = (&stanza.to, &stanza.from) else {
        return;
    };
    let only = to.try_as_full().ok();
    answer_probe(router, &to.to_bare(), &from.to_bare(), from, only).await;
}

/// RFC 6121 §4.5: broadcast unavailable presence.
async fn broadcast_unavailable(router: &Router, origin: &Arc<Resource>, stanza: &Stanza) {
    let mut unavailable = stanza.element.clone();
    set_attr(
        &mut unavailable,
        "from",
        Some(origin.jid.as_str().to_owned()),
    );
    let (was_available, directed) = {
        let mut state = origin.state.lock();
        (
            state.presence.take().is_some(),
            std::mem::take(&mut state.directed_to),
        )
    };
    finish_unavailable(router, origin, unavailable, was_available, directed).await;
    router.presence_changed(origin).await;
}

/// Sends unavailable presence to subscribers and the user's other resources (if the resource
/// was available) and to every target of directed presence (§4.6.3, in any case: directed
/// presence can be sent before initial presence).
async fn finish_unavailable(
    router: &Router,
    origin: &Arc<Resource>,
    unavailable: Element,
    was_available: bool,
    directed: std::collections::HashSet<Jid>,
) {
    if was_available {
        let user = origin.jid.to_bare();
        let roster = roster_rows(router, &user).await;
        to_subscribers(router, &roster, &unavailable).await;
        to_own_resources(router, &user, &unavailable, Some(origin.id));
    }
    for target in directed {
        router.route(addressed(&unavailable, &target)).await;
    }
}

/// RFC 6121 §4.6.2: remembers who got directed presence so they learn when the resource goes
/// away. Subscribers are left out: the broadcast already covers them.
async fn note_directed(router: &Router, origin: &Arc<Resource>, stanza: &Stanza) {
    let Some(target) = stanza.to.clone() else {
        return;
    };
    let user = origin.jid.to_bare();
    let target_bare = target.to_bare();
    if target_bare == user || router.is_server(&target) {
        return;
    }
    let available = stanza.type_attr().is_none();
    if available {
        let row = roster_row(router, &user, &target_bare).await;
        if roster::subscription_of(row.as_ref()).has_from() {
            return;
        }
    }
    let mut state = origin.state.lock();
    if available {
        state.directed_to.insert(target);
    } else {
        state.directed_to.remove(&target);
    }
}

/// Sends `<presence type='unavailable'/>` from each available resource of `owner` to `to`
/// (RFC 6121 §3.2.2, §3.3.3: a subscription is ending).
pub(crate) async fn send_unavailable_from_all(router: &Router, owner: &BareJid, to: &Jid) {
    for resource in router.sessions.available(owner) {
        router
            .route(Stanza::new(element(
                "presence",
                ns::CLIENT,
                &[
                    ("type", "unavailable"),
                    ("from", resource.jid.as_str()),
                    ("to", to.as_str()),
                ],
            )))
            .await;
    }
}

/// Sends the last presence of each available resource of `owner` to `to` (RFC 6121 §3.1.5:
/// a subscription was just approved).
async fn send_presence_from_all(router: &Router, owner: &BareJid, to: &Jid) {
    for resource in router.sessions.available(owner) {
        let last = resource.state.lock().presence.clone();
        if let Some(last) = last {
            router.route(addressed(&last, to)).await;
        }
    }
}

/// Applies the store side of a transition, pushing visible changes.
async fn write(
    router: &Router,
    user: &BareJid,
    username: &str,
    before: Option<&RosterItem>,
    write: &Write,
) -> bool {
    match write {
        Write::Keep => true,
        Write::Put(after) => roster::save(router, user, username, before, after).await,
        Write::Delete => {
            if let Some(before) = before {
                roster::delete(router, user, username, before).await;
            }
            true
        }
    }
}

/// The user's server processing a subscription stanza the user sent (RFC 6121 §3.1.2,
/// §3.1.5, §3.2.2, §3.3.2, §3.4.1; Appendix A.2).
async fn outbound_subscription(
    router: &Router,
    origin: &Arc<Resource>,
    stanza: &mut Stanza,
    kind: Kind,
) {
    let Some(to) = stanza.to.as_ref() else {
        return;
    };
    // §3.1.2: a full JID is treated as the contact's bare JID, and the stanza is stamped with
    // the user's bare JID since a subscription is between accounts, not resources.
    let contact = to.to_bare();
    let user = origin.jid.to_bare();
    let Some(username) = user.node().map(|n| n.as_str().to_owned()) else {
        return;
    };
    stanza.set_to(Some(Jid::from(contact.clone())));
    stanza.set_from(Some(Jid::from(user.clone())));
    let before = match router.store.roster_item(&username, contact.as_str()).await {
        Ok(row) => row,
        Err(error) => {
            tracing::warn!(%error, %user, "roster item load failed; subscription stanza dropped");
            return;
        }
    };
    let effects = subscription::outbound(kind, before.as_ref(), contact.as_str());
    let contact_jid = Jid::from(contact.clone());
    if effects.send_unavailable {
        send_unavailable_from_all(router, &user, &contact_jid).await;
    }
    // The row is stored (and pushed) before routing: for a local contact the answer can come
    // back synchronously (pre-approval) and must find the pending state already recorded.
    if !write(router, &user, &username, before.as_ref(), &effects.write).await {
        return;
    }
    if effects.forward {
        router.route(stanza.clone()).await;
    }
    if effects.send_presence {
        send_presence_from_all(router, &user, &contact_jid).await;
    }
    if kind == Kind::Subscribe && effects.forward && router.is_local_account(&contact_jid) {
        // §3.1.3: a request to an account that does not exist is answered with unsubscribed,
        // which also clears the pending state on the user's side. The router drops presence
        // for unknown accounts, so the answer is generated here.
        let exists = match contact.node() {
            Some(node) => router.store.account_exists(node.as_str()).await,
            None => Ok(true),
        };
        if let Ok(false) = exists {
            router
                .route(roster::subscription_presence(
                    "unsubscribed",
                    &contact,
                    &user,
                ))
                .await;
        }
    }
}

/// The contact's server processing a subscription stanza for a local account (RFC 6121
/// §3.1.3, §3.1.6, §3.2.3, §3.3.3, §3.4.2; Appendix A.3).
async fn inbound_subscription(router: &Router, stanza: &mut Stanza, kind: Kind) {
    let (Some(to), Some(from)) = (stanza.to.as_ref(), stanza.from.as_ref()) else {
        return;
    };
    let owner = to.to_bare();
    let requester = from.to_bare();
    let Some(username) = owner.node().map(|n| n.as_str().to_owned()) else {
        return;
    };
    stanza.set_to(Some(Jid::from(owner.clone())));
    stanza.set_from(Some(Jid::from(requester.clone())));
    let before = match router
        .store
        .roster_item(&username, requester.as_str())
        .await
    {
        Ok(row) => row,
        Err(error) => {
            tracing::warn!(%error, %owner, "roster item load failed; subscription stanza dropped");
            return;
        }
    };
    let xml = String::from(&stanza.element);
    let effects = subscription::inbound(kind, before.as_ref(), requester.as_str(), &xml);
    if !write(router, &owner, &username, before.as_ref(), &effects.write).await {
        return;
    }
    if effects.forward {
        // Subscription stanzas go to available resources only; a request nobody saw stays
        // in the row and is offered again at the next login.
        for resource in router.sessions.available(&owner) {
            router.send(&resource, stanza.clone());
        }
    }
    let requester_jid = Jid::from(requester.clone());
    if effects.auto_subscribed {
        router
            .route(roster::subscription_presence(
                "subscribed",
                &owner,
                &requester,
            ))
            .await;
        // As after a manual approval (§3.1.5), the new subscriber gets current presence.
        send_presence_from_all(router, &owner, &requester_jid).await;
    }
    if effects.send_unavailable {
        send_unavailable_from_all(router, &owner, &requester_jid).await;
    }
}

/// The subscription state machine of RFC 6121 Appendix A, free of IO.
///
/// States are read off a roster row: `subscription` gives None/To/From/Both, `ask_out` is
/// "Pending Out" and `pending_in` is "Pending In". A missing row is state "None".
pub(crate) mod subscription {
    use confab_core::store::{RosterItem, Subscription};

    /// The four subscription presence types (RFC 6121 §3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Kind {
        /// Request a subscription.
        Subscribe,
        /// Approve a request (or pre-approve one, §3.4).
        Subscribed,
        /// Cancel one's own subscription.
        Unsubscribe,
        /// Deny a request or revoke the other side's subscription.
        Unsubscribed,
    }

    impl Kind {
        /// The kind for a presence `type`, `None` for non-subscription types.
        pub(crate) fn parse(value: &str) -> Option<Self> {
            Some(match value {
                "subscribe" => Self::Subscribe,
                "subscribed" => Self::Subscribed,
                "unsubscribe" => Self::Unsubscribe,
                "unsubscribed" => Self::Unsubscribed,
                _ => return None,
            })
        }
    }

    /// What happens to the roster row.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Write {
        /// Nothing changes.
        Keep,
        /// Store this row (pushed if its visible part changed).
        Put(RosterItem),
        /// Delete the row (a hidden row with nothing left to remember).
        Delete,
    }

    /// Everything a transition asks the server to do, in the order it must be done:
    /// `send_unavailable` (outbound) first, then `write`, then `forward`, then the rest.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Effects {
        /// Roster change.
        pub(crate) write: Write,
        /// Outbound: route the stanza to the contact. Inbound: deliver it to the user.
        pub(crate) forward: bool,
        /// Outbound approval: send current presence to the new subscriber (§3.1.5).
        pub(crate) send_presence: bool,
        /// Send unavailable presence from each available resource to the other party
        /// (§3.2.2 outbound unsubscribed, §3.3.3 inbound unsubscribe).
        pub(crate) send_unavailable: bool,
        /// Inbound subscribe: answer `subscribed` on the user's behalf (§3.1.3, §3.4.2).
        pub(crate) auto_subscribed: bool,
    }

    impl Effects {
        fn new(write: Write, forward: bool) -> Self {
            Self {
                write,
                forward,
                send_presence: false,
                send_unavailable: false,
                auto_subscribed: false,
            }
        }
    }

    fn row(item: Option<&RosterItem>, contact: &str) -> RosterItem {
        item.cloned().unwrap_or_else(|| RosterItem {
            jid: contact.to_owned(),
            ..RosterItem::default()
        })
    }

    fn put_if_changed(before: Option<&RosterItem>, after: RosterItem) -> Write {
        if before == Some(&after) {
            Write::Keep
        } else {
            Write::Put(after)
        }
    }

    /// A hidden row that no longer remembers anything is deleted rather than kept empty.
    fn put_or_drop(before: Option<&RosterItem>, after: RosterItem) -> Write {
        if !after.in_roster && after.pending_in.is_none() && !after.approved {
            if before.is_some() {
                Write::Delete
            } else {
                Write::Keep
            }
        } else {
            put_if_changed(before, after)
        }
    }

    /// The user sent `kind` to `contact`; `item` is the user's row for the contact.
    pub(crate) fn outbound(kind: Kind, item: Option<&RosterItem>, contact: &str) -> Effects {
        let mut after = row(item, contact);
        match kind {
            // A.2.1: always routed (a repeat lets the contact's server re-send an answer);
            // None → None+Pending Out, None+Pending In → None+Pending Out+In,
            // From → From+Pending Out; states with "to" are unchanged.
            Kind::Subscribe => {
                if !after.subscription.has_to() {
                    after.ask_out = true;
                    // §3.1.2: the contact appears in the user's roster from now on.
                    after.in_roster = true;
                }
                Effects::new(put_if_changed(item, after), true)
            }
            // A.2.2: To → None, Both → From, Pending Out cleared; always routed.
            Kind::Unsubscribe => {
                after.ask_out = false;
                after.subscription = match after.subscription {
                    Subscription::To => Subscription::None,
                    Subscription::Both => Subscription::From,
                    other => other,
                };
                Effects::new(put_or_drop(item, after), true)
            }
            Kind::Subscribed => {
                // §3.4.1 rule 1 / A.2.3: already subscribed, nothing to approve.
                if after.subscription.has_from() {
                    return Effects::new(Write::Keep, false);
                }
                if after.pending_in.is_some() {
                    // A.2.3: None+Pending In → From, None+Pending Out+In → From+Pending Out,
                    // To+Pending In → Both.
                    after.subscription = match after.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    after.pending_in = None;
                    after.approved = false;
                    // §3.1.5: the approved contact is pushed (and so listed) as 'from'.
                    after.in_roster = true;
                    let mut effects = Effects::new(put_if_changed(item, after), true);
                    effects.send_presence = true;
                    return effects;
                }
                // §3.4.1 rules 3 and 4: no request to answer, so this is a pre-approval. It
                // is recorded (creating a visible 'none' item if needed) and NOT routed.
                after.approved = true;
                after.in_roster = true;
                Effects::new(put_if_changed(item, after), false)
            }
            Kind::Unsubscribed => {
                if after.subscription.has_from() {
                    // A.2.4: From → None, Both → To; §3.2.2: unavailable goes out first.
                    after.subscription = match after.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                    after.approved = false;
                    let mut effects = Effects::new(put_or_drop(item, after), true);
                    effects.send_unavailable = true;
                    return effects;
                }
                if after.pending_in.is_some() {
                    // A.2.4: denying a request; None+Pending In → None, To+Pending In → To.
                    after.pending_in = None;
                    after.approved = false;
                    return Effects::new(put_or_drop(item, after), true);
                }
                if after.approved {
                    // §3.4 (cancelling a pre-approval): the flag goes, nothing is routed.
                    after.approved = false;
                    return Effects::new(put_or_drop(item, after), false);
                }
                // A.2.4: no state change; routed so a contact with a stale view converges.
                Effects::new(Write::Keep, true)
            }
        }
    }

    /// `kind` arrived from `contact` for the user; `item` is the user's row for the contact.
    /// `xml` is the stanza, kept when a request must wait for the user (§3.1.3).
    pub(crate) fn inbound(
        kind: Kind,
        item: Option<&RosterItem>,
        contact: &str,
        xml: &str,
    ) -> Effects {
        let mut after = row(item, contact);
        match kind {
            Kind::Subscribe => {
                if after.subscription.has_from() {
                    // A.3.1 (From, From+Pending Out, Both): not delivered, auto-answered.
                    let mut effects = Effects::new(Write::Keep, false);
                    effects.auto_subscribed = true;
                    return effects;
                }
                if after.approved {
                    // §3.4.2: pre-approved, so the subscription is granted without asking.
                    after.subscription = match after.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    after.approved = false;
                    after.pending_in = None;
                    let mut effects = Effects::new(put_if_changed(item, after), false);
                    effects.auto_subscribed = true;
                    return effects;
                }
                if after.pending_in.is_some() {
                    // A.3.1: a repeated request while one is pending is not delivered again.
                    return Effects::new(Write::Keep, false);
                }
                // A.3.1: None → None+Pending In, None+Pending Out → None+Pending Out+In,
                // To → To+Pending In. A new row stays hidden until the user adds the contact.
                after.pending_in = Some(xml.to_owned());
                Effects::new(Write::Put(after), true)
            }
            Kind::Subscribed => {
                // A.3.3: only an answer to the user's own pending request counts;
                // None+Pending Out → To, None+Pending Out+In → To+Pending In,
                // From+Pending Out → Both. Anything else is dropped.
                if !after.ask_out || after.subscription.has_to() {
                    return Effects::new(Write::Keep, false);
                }
                after.ask_out = false;
                after.subscription = match after.subscription {
                    Subscription::From => Subscription::Both,
                    _ => Subscription::To,
                };
                Effects::new(put_if_changed(item, after), true)
            }
            Kind::Unsubscribe => {
                if after.subscription.has_from() {
                    // A.3.2: From → None, Both → To; §3.3.3: and the contact stops getting
                    // the user's presence, announced with unavailable.
                    after.subscription = match after.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                    let mut effects = Effects::new(put_or_drop(item, after), true);
                    effects.send_unavailable = true;
                    return effects;
                }
                if after.pending_in.is_some() {
                    // A.3.2: the contact withdrew its request; a hidden row simply goes.
                    after.pending_in = None;
                    return Effects::new(put_or_drop(item, after), true);
                }
                Effects::new(Write::Keep, false)
            }
            Kind::Unsubscribed => {
                // A.3.4: To → None, Both → From, and a pending request is refused
                // (None+Pending Out → None, From+Pending Out → From).
                if !after.subscription.has_to() && !after.ask_out {
                    return Effects::new(Write::Keep, false);
                }
                after.ask_out = false;
                after.subscription = match after.subscription {
                    Subscription::Both => Subscription::From,
                    Subscription::To => Subscription::None,
                    other => other,
                };
                Effects::new(put_or_drop(item, after), true)
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A row in the named Appendix A state.
        fn state(name: &str) -> Option<RosterItem> {
            let (subscription, ask_out, pending_in) = match name {
                "None" => return None,
                "None+Out" => (Subscription::None, true, false),
                "None+In" => (Subscription::None, false, true),
                "None+Out+In" => (Subscription::None, true, true),
                "To" => (Subscription::To, false, false),
                "To+In" => (Subscription::To, false, true),
                "From" => (Subscription::From, false, false),
                "From+Out" => (Subscription::From, true, false),
                "Both" => (Subscription::Both, false, false),
                other => panic!("unknown state {other}"),
            };
            Some(RosterItem {
                jid: "c@x".into(),
                subscription,
                ask_out,
                pending_in: pending_in.then(|| "<presence/>".to_owned()),
                in_roster: true,
                ..RosterItem::default()
            })
        }

        /// The Appendix A state name of a row after a transition.
        fn name(before: Option<&RosterItem>, write: &Write) -> String {
            let row = match write {
                Write::Keep => before.cloned(),
                Write::Put(row) => Some(row.clone()),
                Write::Delete => None,
            };
            let Some(row) = row else {
                return "None".into();
            };
            let mut name = match row.subscription {
                Subscription::None => "None",
                Subscription::To => "To",
                Subscription::From => "From",
                Subscription::Both => "Both",
            }
            .to_owned();
            if row.ask_out {
                name.push_str("+Out");
            }
            if row.pending_in.is_some() {
                name.push_str("+In");
            }
            name
        }

        const STATES: [&str; 9] = [
            "None",
            "None+Out",
            "None+In",
            "None+Out+In",
            "To",
            "To+In",
            "From",
            "From+Out",
            "Both",
        ];

        /// Checks one Appendix A table: (state, forwarded?, new state) per row.
        fn check(
            transition: impl Fn(Option<&RosterItem>) -> Effects,
            table: [(&str, bool, &str); 9],
        ) {
            for (row, (from, forward, to)) in STATES.iter().zip(table) {
                assert_eq!(*row, from, "table rows follow Appendix A order");
                let before = state(from);
                let effects = transition(before.as_ref());
                assert_eq!(effects.forward, forward, "{from}: forwarded");
                assert_eq!(
                    name(before.as_ref(), &effects.write),
                    to,
                    "{from}: new state"
                );
            }
        }

        #[test]
        fn outbound_subscribe_matches_a_2_1() {
            check(
                |item| outbound(Kind::Subscribe, item, "c@x"),
                [
                    ("None", true, "None+Out"),
                    ("None+Out", true, "None+Out"),
                    ("None+In", true, "None+Out+In"),
                    ("None+Out+In", true, "None+Out+In"),
                    ("To", true, "To"),
                    ("To+In", true, "To+In"),
                    ("From", true, "From+Out"),
                    ("From+Out", true, "From+Out"),
                    ("Both", true, "Both"),
                ],
            );
        }

        #[test]
        fn outbound_unsubscribe_matches_a_2_2() {
            check(
                |item| outbound(Kind::Unsubscribe, item, "c@x"),
                [
                    ("None", true, "None"),
                    ("None+Out", true, "None"),
                    ("None+In", true, "None+In"),
                    ("None+Out+In", true, "None+In"),
                    ("To", true, "None"),
                    ("To+In", true, "None+In"),
                    ("From", true, "From"),
                    ("From+Out", true, "From"),
                    ("Both", true, "From"),
                ],
            );
        }

        #[test]
        fn outbound_subscribed_matches_a_2_3() {
            // States without a pending request become pre-approvals, which are not routed.
            check(
                |item| outbound(Kind::Subscribed, item, "c@x"),
                [
                    ("None", false, "None"),
                    ("None+Out", false, "None+Out"),
                    ("None+In", true, "From"),
                    ("None+Out+In", true, "From+Out"),
                    ("To", false, "To"),
                    ("To+In", true, "Both"),
                    ("From", false, "From"),
                    ("From+Out", false, "From+Out"),
                    ("Both", false, "Both"),
                ],
            );
            let effects = outbound(Kind::Subscribed, None, "c@x");
            let Write::Put(row) = effects.write else {
                panic!("pre-approval must be stored");
            };
            assert!(row.approved && row.in_roster);
            assert!(outbound(Kind::Subscribed, state("None+In").as_ref(), "c@x").send_presence);
        }

        #[test]
        fn outbound_unsubscribed_matches_a_2_4() {
            check(
                |item| outbound(Kind::Unsubscribed, item, "c@x"),
                [
                    ("None", true, "None"),
                    ("None+Out", true, "None+Out"),
                    ("None+In", true, "None"),
                    ("None+Out+In", true, "None+Out"),
                    ("To", true, "To"),
                    ("To+In", true, "To"),
                    ("From", true, "None"),
                    ("From+Out", true, "None+Out"),
                    ("Both", true, "To"),
                ],
            );
            assert!(outbound(Kind::Unsubscribed, state("Both").as_ref(), "c@x").send_unavailable);
        }

        #[test]
        fn cancelling_a_pre_approval_is_not_routed() {
            let approved = RosterItem {
                jid: "c@x".into(),
                approved: true,
                in_roster: true,
                ..RosterItem::default()
            };
            let effects = outbound(Kind::Unsubscribed, Some(&approved), "c@x");
            assert!(!effects.forward);
            assert!(matches!(effects.write, Write::Put(ref row) if !row.approved));
        }

        #[test]
        fn inbound_subscribe_matches_a_3_1() {
            check(
                |item| inbound(Kind::Subscribe, item, "c@x", "<presence/>"),
                [
                    ("None", true, "None+In"),
                    ("None+Out", true, "None+Out+In"),
                    ("None+In", false, "None+In"),
                    ("None+Out+In", false, "None+Out+In"),
                    ("To", true, "To+In"),
                    ("To+In", false, "To+In"),
                    ("From", false, "From"),
                    ("From+Out", false, "From+Out"),
                    ("Both", false, "Both"),
                ],
            );
            assert!(inbound(Kind::Subscribe, state("Both").as_ref(), "c@x", "").auto_subscribed);
            let Write::Put(row) = inbound(Kind::Subscribe, None, "c@x", "<p/>").write else {
                panic!("request must be kept");
            };
            assert!(!row.in_roster, "a stranger's request does not list them");
            assert_eq!(row.pending_in.as_deref(), Some("<p/>"));
        }

        #[test]
        fn inbound_subscribe_honours_pre_approval() {
            let approved = RosterItem {
                jid: "c@x".into(),
                approved: true,
                in_roster: true,
                ..RosterItem::default()
            };
            let effects = inbound(Kind::Subscribe, Some(&approved), "c@x", "");
            assert!(effects.auto_subscribed && !effects.forward);
            assert!(matches!(
                effects.write,
                Write::Put(ref row) if row.subscription == Subscription::From && !row.approved
            ));
        }

        #[test]
        fn inbound_unsubscribe_matches_a_3_2() {
            check(
                |item| inbound(Kind::Unsubscribe, item, "c@x", ""),
                [
                    ("None", false, "None"),
                    ("None+Out", false, "None+Out"),
                    ("None+In", true, "None"),
                    ("None+Out+In", true, "None+Out"),
                    ("To", false, "To"),
                    ("To+In", true, "To"),
                    ("From", true, "None"),
                    ("From+Out", true, "None+Out"),
                    ("Both", true, "To"),
                ],
            );
            assert!(inbound(Kind::Unsubscribe, state("From").as_ref(), "c@x", "").send_unavailable);
        }

        #[test]
        fn inbound_subscribed_matches_a_3_3() {
            check(
                |item| inbound(Kind::Subscribed, item, "c@x", ""),
                [
                    ("None", false, "None"),
                    ("None+Out", true, "To"),
                    ("None+In", false, "None+In"),
                    ("None+Out+In", true, "To+In"),
                    ("To", false, "To"),
                    ("To+In", false, "To+In"),
                    ("From", false, "From"),
                    ("From+Out", true, "Both"),
                    ("Both", false, "Both"),
                ],
            );
        }

        #[test]
        fn inbound_unsubscribed_matches_a_3_4() {
            check(
                |item| inbound(Kind::Unsubscribed, item, "c@x", ""),
                [
                    ("None", false, "None"),
                    ("None+Out", true, "None"),
                    ("None+In", false, "None+In"),
                    ("None+Out+In", true, "None+In"),
                    ("To", true, "None"),
                    ("To+In", true, "None+In"),
                    ("From", false, "From"),
                    ("From+Out", true, "From"),
                    ("Both", true, "From"),
                ],
            );
        }

        #[test]
        fn hidden_row_without_anything_to_remember_is_deleted() {
            let mut hidden = state("None+In").expect("row");
            hidden.in_roster = false;
            assert_eq!(
                inbound(Kind::Unsubscribe, Some(&hidden), "c@x", "").write,
                Write::Delete
            );
            assert_eq!(
                outbound(Kind::Unsubscribed, Some(&hidden), "c@x").write,
                Write::Delete
            );
        }
    }
}
