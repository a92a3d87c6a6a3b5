//! Roster management (RFC 6121 §2) with roster versioning (XEP-0237, RFC 6121 §2.6).
//!
//! The roster is the server-side list of a user's contacts together with the subscription
//! state of each. Clients read it (`get`) and edit names and groups (`set`); subscription
//! states are changed only by subscription presence, which `presence.rs` handles and which
//! reuses the push helpers here.
//!
//! A store row may be hidden (`in_roster == false`): it only remembers an inbound request
//! that the user has not answered (RFC 6121 §3.1.3). Hidden rows are never shown to clients,
//! neither in results nor in pushes.

use crate::presence;
use async_trait::async_trait;
use confab_core::stanza::element;
use confab_core::store::{RosterItem, Subscription};
use confab_core::{BareJid, Element, Jid, Stanza, StanzaErrorCondition, ns};
use confab_router::{IqOutcome, Module, Router};
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest `name` attribute or group name accepted in a roster set. RFC 6121 §2.3.3 lets the
/// server choose the limit; this matches common servers and keeps rows small.
const MAX_TEXT_LEN: usize = 1023;

/// Answers `jabber:iq:roster` requests and advertises roster versioning and pre-approval.
pub struct Roster;

impl Roster {
    /// Creates the roster feature.
    pub fn new() -> Self {
        Self
    }
}

impl Default for Roster {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::ROSTER]
    }

    fn stream_features(&self) -> Vec<Element> {
        // XEP-0237 §3 and RFC 6121 §3.4.1: both are empty marker elements.
        vec![
            element("ver", ns::ROSTER_VER, &[]),
            element("sub", ns::PRE_APPROVAL, &[]),
        ]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let Some(from) = iq.from.as_ref() else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let user = from.to_bare();
        // RFC 6121 §2.1.5: only the user's own account may read or change its roster; a
        // request addressed to anyone else (another account, the server) is refused.
        if !router.is_local_account(from) || iq.to.as_ref().is_some_and(|to| *to != user) {
            return StanzaErrorCondition::Forbidden.into();
        }
        let Some(username) = user.node().map(|n| n.as_str()) else {
            return StanzaErrorCondition::Forbidden.into();
        };
        let Some(query) = iq.payload().filter(|p| p.is("query", ns::ROSTER)) else {
            return StanzaErrorCondition::BadRequest.into();
        };
        match iq.type_attr() {
            Some("get") => get(router, from, username, query).await,
            Some("set") => set(router, &user, username, query).await,
            _ => StanzaErrorCondition::BadRequest.into(),
        }
    }
}

/// RFC 6121 §2.2 roster get, with XEP-0237 versioning.
async fn get(router: &Router, from: &Jid, username: &str, query: &Element) -> IqOutcome {
    // §2.1.6: a resource that asked for the roster is "interested" and gets pushes from now on.
    if let Ok(full) = from.try_as_full()
        && let Some(resource) = router.sessions.get(full)
    {
        resource.state.lock().roster_requested = true;
    }
    let (version, items) = match router.store.roster(username).await {
        Ok(roster) => roster,
        Err(error) => {
            tracing::warn!(%error, username, "roster load failed");
            return StanzaErrorCondition::InternalServerError.into();
        }
    };
    let version = version.to_string();
    // §2.6.3: an unchanged roster is answered with an empty result (no <query/> at all); the
    // client keeps its cached copy. Nothing changed, so there are no pushes to send either.
    if query.attr("ver") == Some(version.as_str()) {
        return IqOutcome::Result(None);
    }
    let mut result = element("query", ns::ROSTER, &[("ver", &version)]);
    for item in items.iter().filter(|item| item.in_roster) {
        result.append_child(item_element(item));
    }
    IqOutcome::Result(Some(result))
}

/// RFC 6121 §2.3 (add or update) and §2.5 (remove) roster set.
async fn set(router: &Router, user: &BareJid, username: &str, query: &Element) -> IqOutcome {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    // §2.3.3: a roster set carries exactly one item.
    let (Some(item), None) = (items.next(), items.next()) else {
        return StanzaErrorCondition::BadRequest.into();
    };
    let Some(jid) = item.attr("jid") else {
        return StanzaErrorCondition::BadRequest.into();
    };
    let Ok(jid) = Jid::new(jid) else {
        return StanzaErrorCondition::JidMalformed.into();
    };
    // §2.1.2.5: roster items are bare JIDs; a full JID cannot be a contact.
    let Ok(contact) = BareJid::try_from(jid) else {
        return StanzaErrorCondition::BadRequest.into();
    };
    // §2.1.2.5: any other 'subscription' value from a client is ignored, as are 'ask' and
    // 'approved' (§2.1.2.1), since only presence changes subscription state.
    if item.attr("subscription") == Some("remove") {
        return remove(router, user, username, &contact).await;
    }
    let name = item.attr("name").filter(|name| !name.is_empty());
    if name.is_some_and(|name| name.len() > MAX_TEXT_LEN) {
        return StanzaErrorCondition::NotAcceptable.into();
    }
    let mut groups: Vec<String> = Vec::new();
    for group in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let group = group.text();
        // §2.3.3: an empty or oversized group is not-acceptable, a repeated one bad-request.
        if group.is_empty() || group.len() > MAX_TEXT_LEN {
            return StanzaErrorCondition::NotAcceptable.into();
        }
        if groups.contains(&group) {
            return StanzaErrorCondition::BadRequest.into();
        }
        groups.push(group);
    }
    let existing = match router.store.roster_item(username, contact.as_str()).await {
        Ok(existing) => existing,
        Err(error) => {
            tracing::warn!(%error, username, "roster item load failed");
            return StanzaErrorCondition::InternalServerError.into();
        }
    };
    // Subscription bookkeeping (pending requests, pre-approval) survives an edit; a hidden
    // row becomes visible because the user now lists the contact (§3.1.3).
    let mut row = existing.unwrap_or_else(|| RosterItem {
        jid: contact.to_string(),
        ..RosterItem::default()
    });
    row.name = name.map(str::to_owned);
    row.groups = groups;
    row.in_roster = true;
    let version = match router.store.put_roster_item(username, &row).await {
        Ok(version) => version,
        Err(error) => {
            tracing::warn!(%error, username, "roster item store failed");
            return StanzaErrorCondition::InternalServerError.into();
        }
    };
    push(router, user, item_element(&row), version);
    IqOutcome::Result(None)
}

/// RFC 6121 §2.5: deletes the item and cancels every subscription and request with the
/// contact, so neither side is left with a half-open subscription.
async fn remove(router: &Router, user: &BareJid, username: &str, contact: &BareJid) -> IqOutcome {
    let row = match router.store.roster_item(username, contact.as_str()).await {
        Ok(Some(row)) if row.in_roster => row,
        // §2.5.3: removing what the user does not have is item-not-found; hidden rows are
        // not the user's items.
        Ok(_) => return StanzaErrorCondition::ItemNotFound.into(),
        Err(error) => {
            tracing::warn!(%error, username, "roster item load failed");
            return StanzaErrorCondition::InternalServerError.into();
        }
    };
    let contact_jid = Jid::from(contact.clone());
    if row.subscription.has_from() {
        // §3.2.2: while the contact is still subscribed, tell it the user's resources are
        // gone; after the unsubscribed it would no longer be entitled to presence.
        presence::send_unavailable_from_all(router, user, &contact_jid).await;
    }
    let version = match router
        .store
        .remove_roster_item(username, contact.as_str())
        .await
    {
        Ok(version) => version,
        Err(error) => {
            tracing::warn!(%error, username, "roster item removal failed");
            return StanzaErrorCondition::InternalServerError.into();
        }
    };
    push(
        router,
        user,
        element(
            "item",
            ns::ROSTER,
            &[("jid", contact.as_str()), ("subscription", "remove")],
        ),
        version,
    );
    // §2.5.2: cancel the user's subscription to the contact (or the pending request)…
    if row.subscription.has_to() || row.ask_out {
        router
            .route(subscription_presence("unsubscribe", user, contact))
            .await;
    }
    // …and the contact's subscription to the user (or deny its pending request).
    if row.subscription.has_from() || row.pending_in.is_some() {
        router
            .route(subscription_presence("unsubscribed", user, contact))
            .await;
    }
    IqOutcome::Result(None)
}

/// A subscription presence of `kind` from the user's bare JID (RFC 6121 §3.1.2 stamping).
pub(crate) fn subscription_presence(kind: &str, from: &BareJid, to: &BareJid) -> Stanza {
    Stanza::new(element(
        "presence",
        ns::CLIENT,
        &[("type", kind), ("from", from.as_str()), ("to", to.as_str())],
    ))
}

/// The `<item/>` a client sees for a roster row (RFC 6121 §2.1.2).
pub(crate) fn item_element(item: &RosterItem) -> Element {
    let mut attrs: Vec<(&'static str, &str)> = vec![
        ("jid", item.jid.as_str()),
        ("subscription", item.subscription.as_str()),
    ];
    if let Some(name) = &item.name {
        attrs.push(("name", name));
    }
    // §2.1.2.2: 'ask' shows only the user's own pending request ("Pending Out").
    if item.ask_out && !item.subscription.has_to() {
        attrs.push(("ask", "subscribe"));
    }
    // §2.1.2.1: shown only when set, since the server supports pre-approval (§3.4).
    if item.approved && !item.subscription.has_from() {
        attrs.push(("approved", "true"));
    }
    let mut out = element("item", ns::ROSTER, &attrs);
    for group in &item.groups {
        out.append_child(
            Element::builder("group", ns::ROSTER)
                .append(group.as_str())
                .build(),
        );
    }
    out
}

/// Ids for server-generated pushes; clients echo them in their (ignored) results.
static PUSH_ID: AtomicU64 = AtomicU64::new(1);

/// Sends a roster push carrying `item` to every interested resource of `user`
/// (RFC 6121 §2.1.6), including the one whose request caused it.
pub(crate) fn push(router: &Router, user: &BareJid, item: Element, version: u64) {
    let version = version.to_string();
    let mut query = element("query", ns::ROSTER, &[("ver", &version)]);
    query.append_child(item);
    for resource in router.sessions.resources(user) {
        if !resource.is_interested() {
            continue;
        }
        let id = format!("push{}", PUSH_ID.fetch_add(1, Ordering::Relaxed));
        let mut iq = element(
            "iq",
            ns::CLIENT,
            &[
                ("type", "set"),
                ("id", &id),
                ("from", user.as_str()),
                ("to", resource.jid.as_str()),
            ],
        );
        iq.append_child(query.clone());
        router.send(&resource, Stanza::new(iq));
    }
}

/// Stores a roster row and pushes it when the client-visible part changed; hidden rows are
/// stored silently. Returns false when the store failed (already logged).
pub(crate) async fn save(
    router: &Router,
    user: &BareJid,
    username: &str,
    before: Option<&RosterItem>,
    after: &RosterItem,
) -> bool {
    match router.store.put_roster_item(username, after).await {
        Ok(version) => {
            if after.in_roster && before.is_none_or(|before| visible_differs(before, after)) {
                push(router, user, item_element(after), version);
            }
            true
        }
        Err(error) => {
            tracing::warn!(%error, username, "roster item store failed");
            false
        }
    }
}

/// Deletes a roster row, pushing the removal if the client could see it.
pub(crate) async fn delete(router: &Router, user: &BareJid, username: &str, before: &RosterItem) {
    match router.store.remove_roster_item(username, &before.jid).await {
        Ok(version) if before.in_roster => push(
            router,
            user,
            element(
                "item",
                ns::ROSTER,
                &[("jid", before.jid.as_str()), ("subscription", "remove")],
            ),
            version,
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, username, "roster item removal failed"),
    }
}

/// Whether a client would see a difference between two rows (pending-in is server-side only).
fn visible_differs(before: &RosterItem, after: &RosterItem) -> bool {
    before.in_roster != after.in_roster || item_element(before) != item_element(after)
}

/// The subscription a roster row grants, for callers that only need that.
pub(crate) fn subscription_of(item: Option<&RosterItem>) -> Subscription {
    item.map(|item| item.subscription).unwrap_or_default()
}
