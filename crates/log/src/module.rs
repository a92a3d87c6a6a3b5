//! The router hook that commits every chat message before it is delivered.
//!
//! It runs at `on_routed`, not `on_inbound`: by then the router has settled that the
//! recipient is an existing local account, and the blocking feature (registered before this
//! one) has already dropped messages the recipient blocks. Committing at `on_inbound` would
//! archive, and acknowledge, messages that are then bounced (`service-unavailable` for an
//! unknown account or a blocked sender), so a sender would hold a receipt and an error for
//! the same message, and anyone could fill the archive with messages to nobody.
//!
//! What is archived: `<message/>` of type `chat`, `normal` or none (RFC 6121 §5.2.2), from a
//! local account to a local account, carrying something a user would miss: a `<body/>`, a
//! delivery receipt (XEP-0184), a chat marker (XEP-0333), a `<store/>` hint (XEP-0334) or a
//! retraction (XEP-0424). A retraction or correction (XEP-0308) first amends the message it
//! names in the archive (see [`crate::recall`]); if that is refused, the sender gets the
//! error and nothing is committed or delivered.
//! Chat states alone, headlines, group chat and errors pass through untouched, as do
//! messages asking not to be stored (XEP-0334 `<no-store/>`, `<no-permanent-store/>`).

use crate::recall;
use crate::receipt::{self, Receipt};
use crate::submit::{CommitOutcome, offer};
use crate::writer::{LogConfig, MessageLog};
use async_trait::async_trait;
use confab_core::archive::{NewMessage, direct_conversation};
use confab_core::store::{Store, StoreError};
use confab_core::{
    Element, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaErrorType, StanzaKind, ns,
};
use confab_router::{Flow, Module, Router};
use std::sync::Arc;

/// XEP-0334 message processing hints.
const HINTS: &str = "urn:xmpp:hints";
/// XEP-0184 message delivery receipts.
const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333 chat markers.
const MARKERS: &str = "urn:xmpp:chat-markers:0";

/// Assigns server ids and sequence numbers, commits through the [`MessageLog`] and tells
/// the sender, before the router delivers anything.
#[derive(Debug)]
pub struct LogModule {
    /// Shared with the group chat service, whose messages take the same writer.
    log: Arc<MessageLog>,
}

impl LogModule {
    /// Starts the message log over `store` (see [`MessageLog::new`]).
    pub fn new(store: Arc<dyn Store>, config: LogConfig) -> Self {
        Self {
            log: Arc::new(MessageLog::new(store, config)),
        }
    }

    /// A handle to the same writer, for other committers (group chat rooms): one queue and
    /// one batch for every message, whoever commits it.
    pub fn shared_log(&self) -> Arc<MessageLog> {
        self.log.clone()
    }

    /// The batching writer behind the hook.
    pub fn log(&self) -> &MessageLog {
        &self.log
    }
}

/// Whether a message holds anything worth keeping (see the module documentation).
fn archivable(message: &Element) -> bool {
    if message.has_child("no-store", HINTS) || message.has_child("no-permanent-store", HINTS) {
        return false;
    }
    message.children().any(|child| {
        let namespace = child.ns();
        match child.name() {
            "body" => namespace == ns::CLIENT,
            "received" => namespace == RECEIPTS || namespace == MARKERS,
            "displayed" | "acknowledged" => namespace == MARKERS,
            "store" => namespace == HINTS,
            // XEP-0424: a retraction must reach the archive even without a fallback body.
            "retract" => namespace == recall::RETRACT,
            _ => false,
        }
    })
}

/// Whether a session can take a message to `to` now (RFC 6121 §8.5): its bound full JID,
/// or else an available resource of the account with a non-negative priority.
fn has_receiver(router: &Router, to: Option<&Jid>, recipient: &confab_core::BareJid) -> bool {
    if let Some(full) = to.and_then(|to| to.try_as_full().ok())
        && router.sessions.get(full).is_some()
    {
        return true;
    }
    router.sessions.has_available(recipient)
}

/// The error a sender gets when its message could not be committed: RFC 6120 §8.3.2 `wait`,
/// since nothing was stored and a resend later may succeed.
fn commit_error(error: &StoreError) -> StanzaError {
    let condition = match error {
        StoreError::Quota(_) => StanzaErrorCondition::ResourceConstraint,
        _ => StanzaErrorCondition::InternalServerError,
    };
    StanzaError::new(condition)
        .with_type(StanzaErrorType::Wait)
        .with_text("message not stored; try again later")
}

#[async_trait]
impl Module for LogModule {
    fn name(&self) -> &'static str {
        "log"
    }

    fn server_features(&self) -> &'static [&'static str] {
        // XEP-0359 ("Determining support"): the server adds stanza ids; plus commit receipts,
        // and XEP-0424 §2: the server applies retractions to the archive (tombstones).
        &[receipt::SID, receipt::ACK, recall::RETRACT]
    }

    async fn on_fan_out(&self, router: &Router, stanza: &mut Stanza) -> Flow {
        // Fan-outs carry group chat, which this log never commits (the room commits its own
        // messages); only the XEP-0359 §3 stripping of `on_routed` applies, once per message.
        if stanza.kind == StanzaKind::Message {
            receipt::strip_our_stanza_ids(&mut stanza.element, router.domain().as_str());
        }
        Flow::Continue
    }

    async fn on_routed(&self, router: &Router, stanza: &mut Stanza) -> Flow {
        if stanza.kind != StanzaKind::Message {
            return Flow::Continue;
        }
        let domain = router.domain().as_str();
        // XEP-0359 §3 applies to every message reaching a local account, archived or not.
        receipt::strip_our_stanza_ids(&mut stanza.element, domain);

        if !matches!(stanza.type_attr(), None | Some("chat" | "normal")) {
            return Flow::Continue;
        }
        // Messages the server itself generates have no account as sender.
        let Some(from) = stanza.from.clone().filter(|f| router.is_local_account(f)) else {
            return Flow::Continue;
        };
        // `clone().into_bare()` truncates a copy; `to_bare()` formats the parts anew.
        let sender = from.clone().into_bare();
        // RFC 6120 §10.3: no 'to' means the sender's own account.
        let recipient = stanza
            .to
            .as_ref()
            .map_or_else(|| sender.clone(), |to| to.clone().into_bare());
        // `Router::is_local_account` for a bare JID, without building a `Jid` for it.
        let local = recipient.node().is_some() && recipient.domain() == router.domain().domain();
        if !local || !archivable(&stanza.element) {
            return Flow::Continue;
        }

        let client_id = receipt::client_id(&stanza.element);
        let conversation = direct_conversation(&sender, &recipient);
        // Ordinary messages pay this one scan of their children and no query.
        if let Some(edit) = recall::edit_of(&stanza.element) {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let applied = self
                .log
                .recall()
                .apply(
                    &conversation,
                    sender.as_str(),
                    &edit,
                    &stanza.element,
                    now_ms,
                )
                .await;
            if let Err(error) = applied {
                tracing::debug!(%error, %sender, target = %edit.target, "edit refused");
                router.reply_error(stanza, &error.to_stanza_error()).await;
                return Flow::Handled;
            }
        }
        let counts_unread = stanza.element.has_child("body", ns::CLIENT);
        // Decided before the commit so the offline entry is part of it (see `for_later`), and
        // under the gate, held until the commit is done, so the offline delivery of an
        // availability this check missed waits for the commit and takes the message.
        let gate = router.sessions.offline_gate(&recipient).read().await;
        let for_later = !has_receiver(router, stanza.to.as_ref(), &recipient);
        let element = &mut stanza.element;
        let build = |server_id: String| {
            element.append_child(receipt::stanza_id(&server_id, recipient.as_str()));
            NewMessage {
                server_id,
                conversation,
                sender: sender.as_str().to_owned(),
                recipient: recipient.as_str().to_owned(),
                client_id: client_id.clone(),
                stamp_ms: chrono::Utc::now().timestamp_millis(),
                // The codec's encoder with the root declaring `jabber:client`: a standalone
                // document like minidom's `String::from`, at about a third of its cost
                // (BENCHMARKS.md, "Archive copy").
                xml: confab_codec::encode::to_standalone_string(element),
                counts_unread,
                for_later,
            }
        };

        let committed = match self.log.commit(build).await {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, %sender, "message not committed; sender told to retry");
                // The stanza-id names nothing stored: it must not go back in the error.
                receipt::strip_our_stanza_ids(&mut stanza.element, domain);
                if let Some(CommitOutcome::Failed(error)) = offer(CommitOutcome::Failed(error)) {
                    router.reply_error(stanza, &commit_error(&error)).await;
                }
                return Flow::Handled;
            }
        };
        drop(gate);

        let duplicate = committed.duplicate;
        let ack = Receipt {
            client_id,
            server_id: committed.server_id,
            seq: committed.seq,
            with: recipient.as_str().to_owned(),
            stamp_ms: committed.stamp_ms,
        };
        // The session that sent it, if it is still here; a receipt for a session that is
        // gone is lost like any stanza to it, and a resend fetches it again.
        if let Some(CommitOutcome::Committed { receipt: ack, .. }) =
            offer(CommitOutcome::Committed {
                receipt: ack,
                duplicate,
            })
            && let Some(origin) = from.try_as_full().ok().and_then(|f| router.sessions.get(f))
        {
            // Built directly: `Stanza::new` would parse back the JIDs we already hold.
            let receipt = Stanza {
                kind: StanzaKind::Message,
                element: ack.to_message(domain, from.as_str()),
                to: Some(from),
                from: Some(Jid::from(router.domain().clone())),
            };
            router.send(&origin, receipt);
        }
        if duplicate {
            // Exactly once as the user sees it: the original was delivered (or stored for
            // later) when it was committed.
            tracing::debug!(%sender, "resent message not delivered again");
            return Flow::Handled;
        }
        if for_later {
            // Waiting in the offline queue since the commit: offline delivery hands it over
            // at the next availability. Routing it now as well could deliver it twice.
            return Flow::Handled;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn what_is_archived() {
        let archived = [
            "<message xmlns='jabber:client'><body>hi</body></message>",
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='m1'/></message>",
            "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message xmlns='jabber:client'><acknowledged xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message xmlns='jabber:client'><reactions xmlns='urn:xmpp:reactions:0' id='m1'/><store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1' id='m1'/></message>",
        ];
        for xml in archived {
            assert!(archivable(&parse(xml)), "{xml}");
        }
        let skipped = [
            "<message xmlns='jabber:client'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client'><thread>t</thread></message>",
            "<message xmlns='jabber:client'/>",
            "<message xmlns='jabber:client'><body>otr</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client'><body xmlns='urn:example'>not a body</body></message>",
        ];
        for xml in skipped {
            assert!(!archivable(&parse(xml)), "{xml}");
        }
    }

    #[test]
    fn commit_errors_ask_to_wait() {
        let error = commit_error(&StoreError::Unavailable("disk full".into()));
        assert_eq!(error.kind, StanzaErrorType::Wait);
        assert_eq!(error.condition, StanzaErrorCondition::InternalServerError);
        let quota = commit_error(&StoreError::Quota("archive"));
        assert_eq!(quota.condition, StanzaErrorCondition::ResourceConstraint);
    }
}
