//! Offline message storage (XEP-0160) with delayed-delivery stamps (XEP-0203).
//!
//! The router calls `on_offline_message` for a message to an existing account that has no
//! resource able to take it (RFC 6121 §8.5.2.2.1). Stored messages are handed to the first
//! resource that becomes available with a non-negative priority, each stamped with when the
//! server received it.
//!
//! Delivery is at most once per stored message: the store hands the messages over and
//! deletes them in one call, and anything that cannot be posted to the session is put back.
//!
//! The queue is a view over the archive: a message the log committed (it carries the log's
//! XEP-0359 `<stanza-id by=recipient/>`, which the log strips from anything a client sent)
//! is queued by its server id, so the recipient gets exactly the archived message and the
//! database keeps one copy. Only messages the archive does not keep are queued as copies,
//! and only those count against the offline quota.

use async_trait::async_trait;
use confab_core::stanza::{element, stanza_id_by};
use confab_core::store::{OfflineMessage, StoreError};
use confab_core::{Element, Stanza, StanzaKind, ns};
use confab_router::{Flow, Module, Router};
use confab_sessions::{Resource, SessionId};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// XEP-0085 chat states: notifications that mean nothing once the moment has passed.
const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0334 message processing hints.
const HINTS: &str = "urn:xmpp:hints";

/// Stores messages for unavailable accounts and replays them at the next availability.
pub struct Offline {
    /// Sessions that already received the stored messages since they last became available.
    /// A session that goes unavailable leaves the set, so messages stored meanwhile are
    /// replayed when it comes back; each stored message is still delivered only once.
    flushed: Mutex<HashSet<SessionId>>,
}

impl Offline {
    /// Creates the offline storage feature.
    pub fn new() -> Self {
        Self {
            flushed: Mutex::new(HashSet::new()),
        }
    }

    /// Hands every stored message of the resource's account to the resource.
    async fn flush(&self, router: &Router, resource: &Arc<Resource>) {
        let Some(username) = resource.jid.node().map(|n| n.as_str()) else {
            return;
        };
        // Messages committed as waiting while this availability was not yet seen finish
        // their commit before the take (see `SessionManager::offline_gate`).
        let taken = {
            let _gate = router
                .sessions
                .offline_gate(&resource.jid.to_bare())
                .write()
                .await;
            router.store.take_offline(username).await
        };
        let messages = match taken {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, username, "offline messages could not be read");
                // Let a later presence change try again.
                self.flushed.lock().remove(&resource.id);
                return;
            }
        };
        let domain = router.domain().as_str();
        let mut pending = messages.into_iter();
        while let Some(message) = pending.next() {
            let Some(stanza) = stamped(&message, domain) else {
                tracing::warn!(username, "stored offline message unparsable; dropped");
                continue;
            };
            if !router.send(resource, stanza) {
                // The session went away (or overflowed) mid-replay: the store already
                // deleted these, so they go back rather than being lost.
                for message in std::iter::once(message).chain(pending) {
                    let requeued = match &message.archived {
                        Some(server_id) => {
                            router
                                .store
                                .push_offline_archived(username, server_id)
                                .await
                        }
                        None => router.store.push_offline(username, &message).await,
                    };
                    if let Err(error) = requeued {
                        tracing::error!(%error, username, "offline message lost on requeue");
                    }
                }
                self.flushed.lock().remove(&resource.id);
                return;
            }
        }
    }
}

impl Default for Offline {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a message carries anything worth keeping. Chat states (XEP-0085), threads and
/// processing hints alone do not, nor does a message asking not to be stored (XEP-0334).
fn worth_storing(message: &Element) -> bool {
    if message.has_child("no-store", HINTS) || message.has_child("no-permanent-store", HINTS) {
        return false;
    }
    message.children().any(|child| {
        let namespace = child.ns();
        !(namespace == CHAT_STATES
            || namespace == HINTS
            || (child.name() == "thread" && namespace == ns::CLIENT))
    })
}

/// The stored message with its XEP-0203 `<delay/>` added, `None` if it no longer parses.
fn stamped(message: &OfflineMessage, domain: &str) -> Option<Stanza> {
    let mut element: Element = message.xml.parse().ok()?;
    element.append_child(delay(domain, message.stamp_ms));
    Some(Stanza::new(element))
}

/// A XEP-0203 `<delay/>` for a stamp in milliseconds since the epoch, written in the
/// XEP-0082 DateTime profile (UTC, milliseconds, `Z`).
pub(crate) fn delay(from: &str, stamp_ms: i64) -> Element {
    let stamp = chrono::DateTime::from_timestamp_millis(stamp_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    element("delay", ns::DELAY, &[("from", from), ("stamp", &stamp)])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn server_features(&self) -> &'static [&'static str] {
        // XEP-0160: the service discovery feature of offline storage.
        &["msgoffline"]
    }

    async fn on_offline_message(&self, router: &Router, stanza: &Stanza) -> Flow {
        if stanza.kind != StanzaKind::Message {
            return Flow::Continue;
        }
        // RFC 6121 §8.5.2.2.1 and XEP-0160: only normal and chat messages are kept; the
        // router answers groupchat with an error and drops headline and error.
        if !matches!(stanza.type_attr(), None | Some("normal" | "chat")) {
            return Flow::Continue;
        }
        if !worth_storing(&stanza.element) {
            // Nothing a user would miss (a bare chat state): dropped without an error
            // bounce, which would only produce noise for the sender.
            return Flow::Handled;
        }
        let Some(to) = stanza.to.as_ref() else {
            return Flow::Continue;
        };
        let Some(username) = to.node() else {
            return Flow::Continue;
        };
        if let Some(server_id) = stanza_id_by(&stanza.element, to.to_bare().as_str()) {
            match router
                .store
                .push_offline_archived(username.as_str(), server_id)
                .await
            {
                Ok(()) => return Flow::Handled,
                // Not in the archive after all (the log is not in this server's chain):
                // keep a copy as before.
                Err(StoreError::NotFound) => {}
                Err(error) => {
                    // The message is committed and its sender holds a receipt, so an error
                    // bounce would contradict it; the recipient's archive (MAM, the HTTP
                    // API) still has it.
                    tracing::warn!(%error, "archived message not queued for offline delivery");
                    return Flow::Handled;
                }
            }
        }
        let message = OfflineMessage {
            xml: String::from(&stanza.element),
            stamp_ms: now_ms(),
            archived: None,
        };
        match router.store.push_offline(username.as_str(), &message).await {
            Ok(()) => Flow::Handled,
            // Quota reached or storage down: Continue lets the router answer
            // service-unavailable (RFC 6121 §8.5.2.2.1), so the sender knows it was not kept.
            Err(StoreError::Quota(what)) => {
                tracing::debug!(username = username.as_str(), what, "offline quota reached");
                Flow::Continue
            }
            Err(error) => {
                tracing::warn!(%error, "offline message could not be stored");
                Flow::Continue
            }
        }
    }

    async fn on_presence_changed(&self, router: &Router, resource: &Arc<Resource>) {
        let (available, priority) = {
            let state = resource.state.lock();
            (state.presence.is_some(), state.priority)
        };
        if !available {
            self.flushed.lock().remove(&resource.id);
            return;
        }
        // RFC 6121 §4.7.2.3: a negative priority means "no messages for my bare JID", which
        // includes stored ones; a later change to >= 0 triggers the replay.
        if priority < 0 {
            return;
        }
        // Marked before the store call so concurrent presence changes replay only once.
        if !self.flushed.lock().insert(resource.id) {
            return;
        }
        self.flush(router, resource).await;
    }

    async fn on_session_closed(&self, _router: &Router, resource: &Arc<Resource>) {
        self.flushed.lock().remove(&resource.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stamp_uses_xep_0082_utc_with_milliseconds() {
        let delay = delay("localhost", 1_700_000_000_123);
        assert_eq!(delay.attr("stamp"), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(delay.attr("from"), Some("localhost"));
        assert_eq!(delay.ns(), ns::DELAY);
    }

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn chat_states_alone_are_not_stored() {
        assert!(!worth_storing(&parse(
            "<message xmlns='jabber:client'><composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread></message>"
        )));
        assert!(worth_storing(&parse(
            "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/><body>hi</body></message>"
        )));
        assert!(worth_storing(&parse(
            "<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>u</url></x></message>"
        )));
        assert!(!worth_storing(&parse(
            "<message xmlns='jabber:client'><body>hi</body><no-store xmlns='urn:xmpp:hints'/></message>"
        )));
    }
}
