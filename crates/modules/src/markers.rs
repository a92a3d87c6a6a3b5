//! Read state kept on the server (`urn:confab:read:0`, specified in
//! `docs/protocol/confab-read.md`): how far each account has read each one-to-one
//! conversation, set by the XEP-0333 markers its devices send and pushed to its other devices,
//! so every device shows the same unread state.
//!
//! When a local session sends a `<displayed/>` (or the stronger `<acknowledged/>`) marker in
//! `urn:xmpp:chat-markers:0` to another account, the marked message is looked up in the
//! archive: first as a server id (the XEP-0359 `<stanza-id/>` the client got), then as the
//! client id the peer sent it with (its `origin-id`, or its stanza `id`, which is what
//! XEP-0333 §4 has clients reference in one-to-one chats). Its sequence number becomes the
//! account's read position in that conversation if that is further than the stored one;
//! positions never move back. When the position moved, the account's other resources get
//!
//! ```xml
//! <message type='headline' from='alice@example.org' to='alice@example.org/laptop' id='read-…'>
//!   <read xmlns='urn:confab:read:0' with='bob@example.org' seq='17' unread='0'/>
//! </message>
//! ```
//!
//! and a `<query xmlns='urn:confab:read:0'/>` IQ get returns every stored position, so a device
//! that was away catches up. The marker itself is routed on unchanged: the peer sees it, the
//! log archives it and carbons copy it as usual.
//!
//! The lookup runs at `on_inbound`, on the sender's path: the read position is the sender's
//! own state, recorded whatever then becomes of the marker (an unknown peer, a peer that
//! blocks the sender).
//!
//! **Groups** (docs/protocol/confab-groups.md, "Read state"). A marker sent to a group's room
//! JID (`type='groupchat'`, or any type to the bare room JID) whose id is the server id of a
//! message of the conversation `group:<room>` (the room's XEP-0359 `<stanza-id/>`, as
//! XEP-0333 has MUC clients reference) moves the member's read position there the same way,
//! and the push says `with='room@service'`. Only members of the group keep one. A group marker
//! without a body is consumed: it is not broadcast to the room, whose every occupant would
//! otherwise get every member's markers; "read by" is served by the HTTP API instead.

use crate::store_error;
use async_trait::async_trait;
use confab_core::archive::{direct_conversation, group_conversation};
use confab_core::stanza::element;
use confab_core::store::StoreError;
use confab_core::{BareJid, Element, Jid, Stanza, StanzaErrorCondition, StanzaKind, ns};
use confab_router::{Flow, IqOutcome, Module, Router};
use confab_sessions::{Resource, SessionId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Confab's read-state namespace.
pub const READ: &str = "urn:confab:read:0";
/// XEP-0333 chat markers.
pub const MARKERS: &str = "urn:xmpp:chat-markers:0";

/// Records read positions from markers and keeps an account's devices in agreement.
#[derive(Debug, Default)]
pub struct ReadState;

/// The message id a read marker names, if the message is one: `<displayed/>` or
/// `<acknowledged/>` (which XEP-0333 makes imply displayed).
pub fn read_marker(message: &Element) -> Option<&str> {
    message
        .children()
        .find(|c| c.ns() == MARKERS && matches!(c.name(), "displayed" | "acknowledged"))
        .and_then(|marker| marker.attr("id"))
        .filter(|id| !id.is_empty())
}

/// The other party of a direct conversation key, from `owner`'s side.
fn peer_of<'a>(conversation: &'a str, owner: &str) -> &'a str {
    match conversation.split_once(' ') {
        Some((a, b)) if a == owner => b,
        Some((a, _)) => a,
        None => conversation.strip_prefix("group:").unwrap_or(conversation),
    }
}

/// One `<read/>` element.
fn read_element(with: &str, seq: u64, unread: u64) -> Element {
    element(
        "read",
        READ,
        &[
            ("with", with),
            ("seq", &seq.to_string()),
            ("unread", &unread.to_string()),
        ],
    )
}

impl ReadState {
    /// Creates the feature.
    pub fn new() -> Self {
        Self
    }

    /// The sequence of the message `id` names in `conversation`, sent by `peer`.
    async fn resolve(
        &self,
        router: &Router,
        conversation: &str,
        peer: &BareJid,
        id: &str,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(message) = router.store.message_by_id(id).await?
            && message.conversation == conversation
        {
            return Ok(Some(message.seq));
        }
        router
            .store
            .seq_by_client_id(conversation, peer.as_str(), id)
            .await
    }

    /// Records a marker `origin` sends to `to`; pushes the new position to the account's
    /// other resources when it moved.
    async fn record(
        &self,
        router: &Router,
        origin: &Arc<Resource>,
        to: &Jid,
        id: &str,
    ) -> Result<(), StoreError> {
        let owner = origin.jid.to_bare();
        let peer = to.to_bare();
        if owner == peer || !router.is_local_account(to) {
            return Ok(());
        }
        let conversation = direct_conversation(&owner, &peer);
        let Some(seq) = self.resolve(router, &conversation, &peer, id).await? else {
            tracing::debug!(%owner, "marker names no archived message");
            return Ok(());
        };
        advance_read_position(router, &owner, &peer, seq, Some(origin.id)).await?;
        Ok(())
    }

    /// Records a marker `origin` sends to the room `room` if it marks a message of that
    /// group and `origin` is a member; returns whether it did.
    async fn record_group(
        &self,
        router: &Router,
        origin: &Arc<Resource>,
        room: &BareJid,
        id: &str,
    ) -> Result<bool, StoreError> {
        let Some(message) = router.store.message_by_id(id).await? else {
            return Ok(false);
        };
        // Rooms that are no group archive here too; their markers stay XEP-0045's.
        let owner = origin.jid.to_bare();
        if message.conversation != group_conversation(room)
            || !router
                .store
                .is_group_member(room.as_str(), owner.as_str())
                .await?
        {
            return Ok(false);
        }
        advance_group_read_position(router, &owner, room, message.seq, Some(origin.id)).await?;
        Ok(true)
    }
}

/// Where an account's read position in a conversation stands after a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    /// The stored position: the sequence number read up to.
    pub seq: u64,
    /// Unread messages after it.
    pub unread: u64,
    /// Whether this call moved it (positions never move back).
    pub moved: bool,
}

/// Moves `owner`'s read position in the one-to-one conversation with `peer` to `seq` if that
/// is further than the stored one, and when it moved pushes the new position to the account's
/// resources other than `except` (the device that read). Markers and the HTTP API both come
/// through here, so every device hears of a read however it was made.
pub async fn advance_read_position(
    router: &Router,
    owner: &BareJid,
    peer: &BareJid,
    seq: u64,
    except: Option<SessionId>,
) -> Result<ReadPosition, StoreError> {
    let conversation = direct_conversation(owner, peer);
    advance(router, owner, &conversation, peer, seq, except).await
}

/// [`advance_read_position`] for the group conversation of the room `room`, of which the
/// caller checked `owner` is a member; the push names the room as `with`.
pub async fn advance_group_read_position(
    router: &Router,
    owner: &BareJid,
    room: &BareJid,
    seq: u64,
    except: Option<SessionId>,
) -> Result<ReadPosition, StoreError> {
    advance(router, owner, &group_conversation(room), room, seq, except).await
}

/// Moves `owner`'s position in `conversation` (with `with`, as pushes name it).
async fn advance(
    router: &Router,
    owner: &BareJid,
    conversation: &str,
    with: &BareJid,
    seq: u64,
    except: Option<SessionId>,
) -> Result<ReadPosition, StoreError> {
    let before = router
        .store
        .read_position(owner.as_str(), conversation)
        .await?;
    let now = router
        .store
        .mark_read(owner.as_str(), conversation, seq)
        .await?;
    let unread = router
        .store
        .unread_count(owner.as_str(), conversation)
        .await?;
    let moved = now > before;
    if moved {
        for resource in router.sessions.resources(owner) {
            if Some(resource.id) == except {
                continue;
            }
            let id = format!("read-{}", NEXT_PUSH.fetch_add(1, Ordering::Relaxed));
            let mut push = element(
                "message",
                ns::CLIENT,
                &[
                    ("type", "headline"),
                    ("id", &id),
                    ("from", owner.as_str()),
                    ("to", resource.jid.as_str()),
                ],
            );
            push.append_child(read_element(with.as_str(), now, unread));
            router.send(&resource, Stanza::new(push));
        }
    }
    Ok(ReadPosition {
        seq: now,
        unread,
        moved,
    })
}

/// Makes push ids unique on this server.
static NEXT_PUSH: AtomicU64 = AtomicU64::new(0);

#[async_trait]
impl Module for ReadState {
    fn name(&self) -> &'static str {
        "read-state"
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[READ]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[READ]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        if iq.type_attr() != Some("get") || iq.payload().map(Element::name) != Some("query") {
            return StanzaErrorCondition::BadRequest.into();
        }
        let Some(owner) = iq.from.as_ref().map(Jid::to_bare) else {
            return StanzaErrorCondition::NotAllowed.into();
        };
        // Only the account itself reads its read state.
        if let Some(to) = &iq.to
            && !router.is_server(to)
            && to.to_bare() != owner
        {
            return StanzaErrorCondition::Forbidden.into();
        }
        let positions = match router.store.read_positions(owner.as_str()).await {
            Ok(positions) => positions,
            Err(error) => return store_error(error).into(),
        };
        let mut reply = Element::bare("query", READ);
        for (conversation, seq) in positions {
            let unread = match router
                .store
                .unread_count(owner.as_str(), &conversation)
                .await
            {
                Ok(unread) => unread,
                Err(error) => return store_error(error).into(),
            };
            reply.append_child(read_element(
                peer_of(&conversation, owner.as_str()),
                seq,
                unread,
            ));
        }
        IqOutcome::Result(Some(reply))
    }

    async fn on_inbound(
        &self,
        router: &Router,
        origin: &Arc<Resource>,
        stanza: &mut Stanza,
    ) -> Flow {
        if stanza.kind != StanzaKind::Message
            || !matches!(
                stanza.type_attr(),
                None | Some("chat" | "normal" | "groupchat")
            )
        {
            return Flow::Continue;
        }
        let (Some(to), Some(id)) = (stanza.to.as_ref(), read_marker(&stanza.element)) else {
            return Flow::Continue;
        };
        // Markers to a room: not a local account, so the one-to-one path pays nothing here.
        if stanza.type_attr() == Some("groupchat")
            || (to.resource().is_none() && !router.is_local_account(to))
        {
            match self.record_group(router, origin, &to.to_bare(), id).await {
                Ok(true) if !stanza.element.has_child("body", ns::CLIENT) => return Flow::Handled,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, jid = %origin.jid, "group read position not stored");
                }
            }
            if stanza.type_attr() == Some("groupchat") {
                return Flow::Continue;
            }
        }
        if let Err(error) = self.record(router, origin, to, id).await {
            // The marker still goes to the peer; a later marker moves the position.
            tracing::warn!(%error, jid = %origin.jid, "read position not stored");
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_that_mean_read() {
        let parse = |xml: &str| -> Element { xml.parse().expect("xml") };
        assert_eq!(
            read_marker(&parse(
                "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>"
            )),
            Some("m1")
        );
        assert_eq!(
            read_marker(&parse(
                "<message xmlns='jabber:client'><acknowledged xmlns='urn:xmpp:chat-markers:0' id='m2'/></message>"
            )),
            Some("m2")
        );
        for xml in [
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>",
            "<message xmlns='jabber:client'><displayed xmlns='urn:example' id='m1'/></message>",
            "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0'/></message>",
        ] {
            assert_eq!(read_marker(&parse(xml)), None, "{xml}");
        }
    }

    #[test]
    fn peer_is_the_other_side() {
        assert_eq!(peer_of("a@x b@x", "a@x"), "b@x");
        assert_eq!(peer_of("a@x b@x", "b@x"), "a@x");
        assert_eq!(peer_of("group:room@conf.x", "a@x"), "room@conf.x");
    }
}
