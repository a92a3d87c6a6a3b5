//! Message Carbons (XEP-0280, `urn:xmpp:carbons:2`): every device of a user sees both sides
//! of every conversation, whichever device took part.
//!
//! A session opts in with `<enable/>` (and out with `<disable/>`); the choice lives in memory
//! by session id and goes with the session.
//!
//! Both kinds of copy are made at `on_routed`, once per message, registered after the message
//! log so that:
//! - the message has been committed and carries its XEP-0359 `<stanza-id/>`, which the copies
//!   carry too (a `<sent/>` copy gets it with `by` set to the sender, whose archive view holds
//!   the same message under the same server id), and a resend the log answers without
//!   delivering produces no copies either;
//! - messages the recipient blocks (dropped earlier at `on_routed`) are not copied, just as
//!   they are not acknowledged;
//! - the `<private/>` element (§7) is still there to be honoured, and is then removed before
//!   the recipient gets the message.
//!
//! `on_delivered` is not used: it fires once per receiving resource, so a message to a bare
//! JID that the router fans out to several equally available resources would have to decide
//! at its first delivery which other resources will not get the original, and it only sees
//! the message after `<private/>` was stripped. At `on_routed` the receivers are known exactly
//! as the router chooses them next (RFC 6121 §8.5.2.1.1: the bound full JID, else the most
//! available resources), and every carbons-enabled resource outside that set gets one
//! `<received/>` copy (§6). A presence change between this hook and the router's choice can
//! make one resource miss or double a message in that instant; the router offers no hook
//! that would close this window.
//!
//! Eligibility (§5, the suggested rules): `type='chat'`, or `normal` (or no type) with a
//! `<body/>`; never errors, groupchat or headlines, never a message from a MUC (a
//! `muc#user` payload), and never a message that already is a carbon. `<private/>` and the
//! XEP-0334 `<no-copy/>` hint suppress both kinds of copy.

use async_trait::async_trait;
use confab_core::ns::SID;
use confab_core::stanza::{element, stanza_id_by};
use confab_core::{BareJid, Element, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use confab_core::{FullJid, ns};
use confab_router::{Flow, IqOutcome, Module, Router};
use confab_sessions::{Resource, SessionId, Undelivered};
use minidom::Node;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// XEP-0280 namespace.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 stanza forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 message processing hints.
const HINTS: &str = "urn:xmpp:hints";
/// XEP-0045 MUC user payload: marks messages from a room, including private messages.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Messages remembered by [`CopyLedger`]; older ones fall out (see there).
const LEDGER_CAPACITY: usize = 16_384;

/// Which sessions got a `<received/>` copy of recent messages addressed to one full JID, by
/// server id. If that session dies without acknowledging the original, the router redelivers
/// it to the account's other resources (`on_undelivered`); those that hold the carbon must
/// be skipped, or one device shows the message twice. Bounded: for a message that fell out,
/// redelivery may duplicate (clients deduplicate by stanza-id), it never loses.
#[derive(Debug, Default)]
struct CopyLedger {
    order: VecDeque<String>,
    holders: HashMap<String, Vec<SessionId>>,
}

impl CopyLedger {
    fn record(&mut self, server_id: &str, sessions: Vec<SessionId>) {
        if self.order.len() == LEDGER_CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.holders.remove(&oldest);
        }
        self.order.push_back(server_id.to_owned());
        self.holders.insert(server_id.to_owned(), sessions);
    }
}

/// Tracks carbons-enabled sessions and sends the copies.
#[derive(Debug, Default)]
pub struct Carbons {
    enabled: Mutex<HashSet<SessionId>>,
    copies: Mutex<CopyLedger>,
}

impl Carbons {
    /// Creates the feature with no session enabled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a session asked for carbons.
    pub fn is_enabled(&self, session: SessionId) -> bool {
        self.enabled.lock().contains(&session)
    }

    /// The carbons-enabled resources of `account` not in `except`.
    fn enabled_resources(
        &self,
        router: &Router,
        account: &BareJid,
        except: &HashSet<SessionId>,
    ) -> Vec<Arc<Resource>> {
        let resources = router.sessions.resources(account);
        let enabled = self.enabled.lock();
        resources
            .into_iter()
            .filter(|r| enabled.contains(&r.id) && !except.contains(&r.id))
            .collect()
    }
}

/// Whether a message is eligible for carbons delivery (see the module documentation). Does
/// not look at `<private/>` or `<no-copy/>`, which are opt-outs rather than eligibility.
pub fn eligible(message: &Element) -> bool {
    let typed = match message.attr("type") {
        Some("chat") => true,
        None | Some("normal") => message.has_child("body", ns::CLIENT),
        _ => false,
    };
    typed
        && !message.has_child("received", CARBONS)
        && !message.has_child("sent", CARBONS)
        && !message.has_child("x", MUC_USER)
}

/// Whether the sender opted this message out of copies (§7, XEP-0334 §4).
pub fn opted_out(message: &Element) -> bool {
    message.has_child("private", CARBONS) || message.has_child("no-copy", HINTS)
}

/// Removes `<private/>` (§7: the receiving server SHOULD, before delivery).
fn strip_private(message: &mut Element) {
    if !message.has_child("private", CARBONS) {
        return;
    }
    for node in message.take_nodes() {
        match node {
            Node::Element(child) if child.is("private", CARBONS) => {}
            node => message.append_node(node),
        }
    }
}

/// A copy of `original` for `to`, wrapped in `<sent/>` or `<received/>` (`direction`) and
/// `<forwarded/>`, from the user's bare JID (§6, §7).
pub fn wrap(direction: &str, original: &Element, user: &BareJid, to: &FullJid) -> Stanza {
    let mut attrs: Vec<(&'static str, &str)> = vec![("from", user.as_str()), ("to", to.as_str())];
    if let Some(kind) = original.attr("type") {
        attrs.push(("type", kind));
    }
    let mut forwarded = Element::bare("forwarded", FORWARD);
    forwarded.append_child(original.clone());
    let mut wrapper = Element::bare(direction, CARBONS);
    wrapper.append_child(forwarded);
    let mut message = element("message", ns::CLIENT, &attrs);
    message.append_child(wrapper);
    Stanza::new(message)
}

/// The sender's view of a committed message: the log's `<stanza-id/>` names the recipient's
/// archive; the sender finds the same message in its own under the same id.
fn sender_view(message: &Element, recipient: &BareJid, sender: &BareJid) -> Element {
    let mut copy = message.clone();
    for child in copy.children_mut() {
        if child.is("stanza-id", SID) && child.attr("by") == Some(recipient.as_str()) {
            confab_core::stanza::set_attr(child, "by", Some(sender.as_str().to_owned()));
        }
    }
    copy
}

#[async_trait]
impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[CARBONS]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[CARBONS]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let Some(payload) = iq.payload() else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let enable = match payload.name() {
            "enable" => true,
            "disable" => false,
            _ => return StanzaErrorCondition::BadRequest.into(),
        };
        if iq.type_attr() != Some("set") {
            return StanzaErrorCondition::BadRequest.into();
        }
        // §3, §4: only the session itself, addressing its own account or the server.
        let Some(from) = iq.from.as_ref().and_then(|f| f.try_as_full().ok()) else {
            return StanzaErrorCondition::NotAllowed.into();
        };
        if let Some(to) = &iq.to
            && !router.is_server(to)
            && to.to_bare() != from.to_bare()
        {
            return StanzaError::new(StanzaErrorCondition::NotAllowed)
                .with_text("carbons are set by the session itself")
                .into();
        }
        let Some(resource) = router.sessions.get(from) else {
            return StanzaErrorCondition::NotAllowed.into();
        };
        // §8.1: repeated enables or disables are not errors.
        let mut enabled = self.enabled.lock();
        if enable {
            enabled.insert(resource.id);
        } else {
            enabled.remove(&resource.id);
        }
        IqOutcome::Result(None)
    }

    async fn on_fan_out(&self, _router: &Router, stanza: &mut Stanza) -> Flow {
        // Fan-outs carry group chat, which is never copied (§6: not `eligible`); what is left
        // of `on_routed` is hiding the sender's hint from the recipients.
        if stanza.kind == StanzaKind::Message {
            strip_private(&mut stanza.element);
        }
        Flow::Continue
    }

    async fn on_routed(&self, router: &Router, stanza: &mut Stanza) -> Flow {
        if stanza.kind != StanzaKind::Message {
            return Flow::Continue;
        }
        let copy = eligible(&stanza.element) && !opted_out(&stanza.element);
        strip_private(&mut stanza.element);
        if !copy {
            return Flow::Continue;
        }
        let Some(from) = stanza.from.clone() else {
            return Flow::Continue;
        };
        // `clone().into_bare()` truncates a copy; `to_bare()` formats the parts anew.
        let recipient = match &stanza.to {
            Some(to) => to.clone().into_bare(),
            // RFC 6120 §10.3: no 'to' means the sender's own account.
            None => from.clone().into_bare(),
        };
        // The resources the router is about to hand the original to.
        let bound = stanza
            .to
            .as_ref()
            .and_then(|to| to.try_as_full().ok())
            .and_then(|full| router.sessions.get(full));
        let receivers: HashSet<SessionId> = match &bound {
            Some(resource) => HashSet::from([resource.id]),
            None => router
                .sessions
                .most_available(&recipient)
                .iter()
                .map(|r| r.id)
                .collect(),
        };

        let sender = from.clone().into_bare();
        let origin = from
            .try_as_full()
            .ok()
            .filter(|_| router.is_local_account(&from))
            .and_then(|full| router.sessions.get(full));
        if let Some(origin) = &origin {
            // §7: the sender's other carbons-enabled resources (also a message to oneself:
            // the receivers already have it, and each resource gets one copy at most).
            let mut except = HashSet::from([origin.id]);
            if sender == recipient {
                except.extend(receivers.iter().copied());
            }
            let targets = self.enabled_resources(router, &sender, &except);
            if !targets.is_empty() {
                let view = sender_view(&stanza.element, &recipient, &sender);
                for target in targets {
                    router.send(&target, wrap("sent", &view, &sender, &target.jid));
                }
            }
        }
        // `Router::is_local_account` for a bare JID, without building a `Jid` for it.
        let local = recipient.node().is_some() && recipient.domain() == router.domain().domain();
        if sender != recipient && local {
            // §6: the recipient's carbons-enabled resources that do not get the original.
            let mut copied = Vec::new();
            for target in self.enabled_resources(router, &recipient, &receivers) {
                if router.send(
                    &target,
                    wrap("received", &stanza.element, &recipient, &target.jid),
                ) {
                    copied.push(target.id);
                }
            }
            // Only a message to one full JID is redelivered to resources that were bound
            // when it arrived (see `CopyLedger`).
            if bound.is_some()
                && !copied.is_empty()
                && let Some(server_id) = stanza_id_by(&stanza.element, recipient.as_str())
            {
                self.copies.lock().record(server_id, copied);
            }
        }
        Flow::Continue
    }

    async fn on_undelivered(
        &self,
        _router: &Router,
        resource: &Arc<Resource>,
        stanzas: &mut Vec<Undelivered>,
    ) {
        let owner = resource.jid.to_bare();
        let ledger = self.copies.lock();
        for undelivered in stanzas.iter_mut() {
            if let Some(holders) = stanza_id_by(&undelivered.stanza.element, owner.as_str())
                .and_then(|server_id| ledger.holders.get(server_id))
            {
                undelivered.holders.extend(holders.iter().copied());
            }
        }
    }

    async fn on_session_closed(&self, _router: &Router, resource: &Arc<Resource>) {
        self.enabled.lock().remove(&resource.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn eligibility_follows_section_5() {
        let yes = [
            "<message xmlns='jabber:client' type='chat'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message xmlns='jabber:client' type='normal'><body>hi</body></message>",
            "<message xmlns='jabber:client'><body>hi</body></message>",
        ];
        for xml in yes {
            assert!(eligible(&parse(xml)), "{xml}");
        }
        let no = [
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='m1'/></message>",
            "<message xmlns='jabber:client' type='error'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='headline'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            "<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>",
        ];
        for xml in no {
            assert!(!eligible(&parse(xml)), "{xml}");
        }
    }

    #[test]
    fn private_is_stripped_and_others_kept() {
        let mut message = parse(
            "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
        );
        assert!(opted_out(&message));
        strip_private(&mut message);
        assert!(!message.has_child("private", CARBONS));
        assert!(message.has_child("body", ns::CLIENT));
        assert!(opted_out(&parse(
            "<message xmlns='jabber:client'><no-copy xmlns='urn:xmpp:hints'/></message>"
        )));
    }
}
