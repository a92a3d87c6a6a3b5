//! XEP-0045 multi-user chat: a conference service on its own domain
//! (`conference.<domain>`), plugged into the router as a [`Module`] with a hosted domain.
//!
//! ```text
//! router ─ handle_hosted(stanza to conference.<domain>) ─ Muc ─┬─ service JID: disco (§6.1–§6.3)
//!                                                              └─ room JID / room/nick ─ lock room ─ Room (sans-IO)
//!                                                                   └─ Outcome: stanzas routed in order, store writes
//! ```
//!
//! Rooms live in memory, one `tokio::sync::Mutex` each: a room's events are decided and
//! routed under its lock, so every occupant sees them in one order, and rooms never wait for
//! each other. Persistent rooms' configuration and affiliations go through
//! [`RoomStore`] and are loaded at start ([`Muc::load`]); occupants are not persisted.
//!
//! **Durable path** ([`Muc::with_archive`]). A groupchat message the room accepts is
//! committed through the message log's writer (the same queue and batches as one-to-one
//! chat) to the conversation `group:<room>`, sender the occupant's real bare JID, recipient
//! the room, with the room's XEP-0359 `<stanza-id by='room'/>` in the stored copy, *before*
//! it is broadcast. The sender then gets the `urn:confab:ack:0` receipt (`with` the room,
//! `seq` the room's sequence); a resend of a client id the sender already used in the room
//! gets the original receipt and is not broadcast again; a failed commit is a `wait` error
//! and nothing is broadcast.
//!
//! Ordering: the room's lock is held only to decide and to queue the commit
//! ([`MessageLog::submit`]), not through it. Queueing under the lock makes queue order, and
//! so the room's sequence, the order the room accepted messages in; each queued message also
//! takes the room's *broadcast turn* (a oneshot chain: it waits until the message queued
//! before it was broadcast, or its task ended). After its commit and its turn, a message
//! takes the lock again, the sender gets the receipt, and the copies go to whoever is in the
//! room at that moment. So broadcasts follow the sequence, several of one room's messages
//! share a batch, and joins and presence are not held up by a commit in flight. A joiner
//! never misses nor doubles a message: history holds only broadcast messages, and one
//! committed but not yet broadcast is broadcast to it as an occupant.
//!
//! History: the in-memory ring of `history_max` messages stays, as a cache of the archive's
//! tail: it only ever holds committed messages (as broadcast, with their stanza-id and
//! commit time), and persistent rooms refill it from the archive at start, so history on join
//! survives a restart without a store read per join. XEP-0313 queries on the room JID read
//! the archive itself.
//!
//! **Re-entrancy.** Routing a room's output can come straight back to the room on the same
//! task while its lock is held: a bounce for an occupant whose session just vanished, or the
//! server's own answer to a vCard request the room forwarded to an account. A task-local
//! marks "this task is routing for room R"; stanzas for R arriving under it are queued and
//! handled once R's lock is released, instead of deadlocking on it.
//!
//! **Groups** (docs/protocol/confab-groups.md). A room whose configuration has
//! `muc#roomconfig_confab_group` is a group: a committed message is also sent to every
//! available resource of every member (affiliation member and up) that is not an occupant,
//! under the room's lock right after the occupants' copies; members without one get nothing
//! queued and catch up from the archive. The HTTP API creates and manages groups through
//! [`Muc::create_group`], [`Muc::update_group`] and [`Muc::set_member`], which apply the same
//! admin and owner rules as `muc#admin`/`muc#owner` and notify occupants the same way; the
//! affected account's other resources get a status 101 notice. Stored groups also write their
//! list entry through [`RoomStore::put_group`], which feeds the sync feed.
//! Members a group message mentions ([`mentions`]) are found under the room's lock and
//! recorded with [`RoomStore::record_mentions`] once it is committed, before its receipt and
//! broadcast, so the flag is stored before anyone can have seen the message.
//!
//! **Large rooms** (docs/protocol/confab-groups.md, "Large rooms"). Above
//! `presence_broadcast_max` occupants a room is quiet ([`Room::quiet`]): no occupant presence
//! is broadcast, so a join costs O(1) stanzas instead of O(occupants). Copies go into the
//! recipients' bounded mailboxes without waiting ([`Resource::send`]): a member whose mailbox
//! is full is disconnected (`policy-violation`), never waited for. A broadcast leaves the room
//! as one message and its recipients ([`room::Broadcast`]) for [`Router::fan_out`], which runs
//! the routing hooks once per message and per copy only the recipient's checks (blocking).
//! Not yet: serialising a broadcast once. Each copy is still its own `Stanza` (an element
//! clone with its own `to`) encoded by each connection. The plan: a
//! `SessionCommand::Shared(Arc<SharedStanza>, FullJid)` whose shared part holds the element
//! without `to` and its encoding per wire format, made once (`OnceLock`); the XML writer
//! splices ` to='…'` after the element name, the protobuf writer appends the `to` field;
//! XEP-0198 keeps the shared command in its unacknowledged queue and builds a `Stanza` only to
//! resend or hand back; one-to-one delivery keeps `Deliver`.
//!
//! Several sessions of one account may share a nick (the others see one occupant; a
//! session that leaves while another stays is not announced; such a session cannot change
//! the shared nick alone).
//!
//! Not yet: MAM preferences on rooms, voice requests (§7.13), registration (§7.10), reserved nicks, `roomadmins`/`roomowners`
//! form fields, kicking occupants whose client answers with an error.

pub mod mentions;
pub mod model;
pub mod ns;
pub mod room;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use confab_core::archive::{
    AmendKind, ArchiveStore, NewMessage, group_conversation, new_server_id,
};
use confab_core::stanza::element;
use confab_core::store::{RoomStore, StoreError};
use confab_core::{
    BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaErrorType,
    StanzaKind,
};
use confab_log::receipt::{self, Receipt};
use confab_log::{MessageLog, PendingCommit, recall};
use confab_router::{Module, Router};
use confab_sessions::Resource;
use model::{Affiliation, RoomConfig};
use room::{Broadcast, Effect, Outcome, Room};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Mutex, oneshot};

/// The room whose output a task is routing, and stanzas for that room that arrived meanwhile
/// (see the crate docs on re-entrancy).
struct Routing {
    room: BareJid,
    deferred: RefCell<Vec<Stanza>>,
}

tokio::task_local! {
    static ROUTING: Routing;
}

/// The `name` of the service's disco identity.
const SERVICE_NAME: &str = "Chatrooms";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum MucError {
    /// The configured service domain is not a valid XMPP domain.
    #[error("invalid MUC domain {0:?}")]
    InvalidDomain(String),
    /// Persistent rooms could not be loaded.
    #[error("loading persistent rooms: {0}")]
    Store(#[from] StoreError),
}

/// Why a group request from the HTTP API (docs/protocol/confab-groups.md) was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group, or the caller is not one of its members (who may not learn more).
    #[error("no such group")]
    NotFound,
    /// The caller is a member without the right (admins and owners manage a group).
    #[error("only the group's admins and owners may do that")]
    Forbidden,
    /// The change would leave the group without an owner.
    #[error("the group must keep an owner")]
    LastOwner,
    /// Nothing to do it with: the request names something invalid.
    #[error("{0}")]
    Invalid(String),
    /// The group could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StanzaErrorCondition> for GroupError {
    fn from(condition: StanzaErrorCondition) -> Self {
        match condition {
            StanzaErrorCondition::Conflict => Self::LastOwner,
            _ => Self::Forbidden,
        }
    }
}

/// A group to create (`POST /api/v1/groups`).
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    /// The group's name.
    pub name: String,
    /// Accounts to add as members besides the creator (the owner).
    pub members: Vec<BareJid>,
    /// Avatar URL; empty for none.
    pub avatar: String,
    /// Announcement; empty for none.
    pub announcement: String,
}

/// A group as one of its members sees it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The room's bare JID.
    pub jid: BareJid,
    /// Name, avatar and announcement (and the rest of the room's configuration).
    pub config: RoomConfig,
    /// The asking member's affiliation.
    pub affiliation: Affiliation,
    /// Every member with its affiliation, sorted by JID.
    pub members: Vec<(BareJid, Affiliation)>,
}

/// The recipients of a group's message among its members' available resources that are not
/// in the room (docs/protocol/confab-groups.md): joined sessions get theirs from [`Room::fan_out`],
/// so none gets it twice. Nothing for a room that is no group, and nothing is queued for a
/// member without an available resource: it catches up through MAM on the room or the HTTP
/// history instead of an offline queue flooded by every group it is in.
fn member_recipients(router: &Router, room: &Room) -> Vec<FullJid> {
    if !room.config.group {
        return Vec::new();
    }
    let mut recipients = Vec::new();
    for (member, _) in room.members() {
        for resource in router.sessions.available(member) {
            if !room.has_occupant(&resource.jid) {
                recipients.push(resource.jid.clone());
            }
        }
    }
    recipients
}

/// XEP-0045 status 101 ("your affiliation changed while you were not in the room", §15.2) to
/// the available resources of `who` that are not in the room: how a member's devices learn
/// they were added to or removed from a group they never joined.
fn affiliation_notices(
    router: &Router,
    room: &Room,
    who: &BareJid,
    affiliation: Affiliation,
) -> Vec<Stanza> {
    let mut x = element("x", ns::MUC_USER, &[]);
    x.append_child(element(
        "item",
        ns::MUC_USER,
        &[("affiliation", affiliation.as_str()), ("jid", who.as_str())],
    ));
    x.append_child(element("status", ns::MUC_USER, &[("code", "101")]));
    router
        .sessions
        .available(who)
        .into_iter()
        .filter(|resource| !room.has_occupant(&resource.jid))
        .map(|resource| {
            let mut message = element(
                "message",
                ns::CLIENT,
                &[("from", room.jid.as_str()), ("to", resource.jid.as_str())],
            );
            message.append_child(x.clone());
            Stanza {
                kind: StanzaKind::Message,
                element: message,
                to: Some(resource.jid.clone().into()),
                from: Some(room.jid.clone().into()),
            }
        })
        .collect()
}

/// A groupchat message queued for commit, between the room's two turns with it (see
/// [`Muc::broadcast_committed`]).
struct Committing {
    /// The commit in flight.
    pending: PendingCommit,
    /// Resolves (or is dropped) once the message accepted before this one was broadcast.
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped once this message was broadcast: the next message's turn.
    done: oneshot::Sender<()>,
    /// The message as it will be broadcast, with the room's stanza-id.
    message: Element,
    /// The client id it was recognised by, for the receipt.
    client_id: Option<String>,
    /// The session that sent it.
    sender: FullJid,
    /// The group conversation and the members the message mentions (crate::mentions), when
    /// it mentions any.
    mentions: Option<(String, Vec<String>)>,
}

/// The error a sender gets when its group message could not be committed: nothing was
/// stored and nothing is broadcast; a resend later may succeed (RFC 6120 §8.3.2 `wait`).
fn commit_failed(room: &str, stanza: &Stanza, sender: &str, error: &StoreError) -> Vec<Stanza> {
    tracing::warn!(%room, %error, %sender, "group message not committed; sender told to retry");
    let error = StanzaError::new(StanzaErrorCondition::ResourceConstraint)
        .with_type(StanzaErrorType::Wait)
        .with_text("message not stored; try again later");
    stanza.error_reply(&error).into_iter().collect()
}

/// Where rooms commit their messages: the message log's writer and the archive it writes to.
#[derive(Clone)]
pub struct RoomArchive {
    /// The batching writer shared with one-to-one chat (`LogModule::shared_log`).
    pub log: Arc<MessageLog>,
    /// The archive the log writes, for history and MAM reads.
    pub store: Arc<dyn ArchiveStore>,
}

impl std::fmt::Debug for RoomArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomArchive")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// The conference service.
pub struct Muc {
    /// `conference.<domain>`.
    domain: BareJid,
    /// Messages kept per room for new occupants.
    history_max: usize,
    store: Arc<dyn RoomStore>,
    /// Live rooms by bare JID. The map lock is held only to look up, insert or remove.
    rooms: parking_lot::Mutex<HashMap<BareJid, Arc<Mutex<Room>>>>,
    /// The rooms each session joined, so a session that ends leaves them without a scan of
    /// every room. May hold rooms the session already left (kicks do not update it); leaving
    /// a room one is not in does nothing.
    joined: parking_lot::Mutex<HashMap<FullJid, HashSet<BareJid>>>,
    /// Where group messages are committed; without it rooms broadcast at once and keep
    /// history in memory only.
    archive: Option<RoomArchive>,
    /// Rooms with more occupants stop broadcasting presence ([`Room::quiet`]).
    presence_broadcast_max: usize,
}

impl std::fmt::Debug for Muc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muc")
            .field("domain", &self.domain)
            .field("rooms", &self.rooms.lock().len())
            .finish_non_exhaustive()
    }
}

impl Muc {
    /// Creates the service on `domain` and loads its persistent rooms from `store`.
    pub async fn load(
        domain: &str,
        history_max: usize,
        store: Arc<dyn RoomStore>,
    ) -> Result<Self, MucError> {
        let domain = BareJid::new(domain)
            .ok()
            .filter(|d| d.node().is_none())
            .ok_or_else(|| MucError::InvalidDomain(domain.to_owned()))?;
        let mut rooms = HashMap::new();
        for stored in store.rooms().await? {
            let Ok(jid) = BareJid::new(&stored.room) else {
                tracing::warn!(room = %stored.room, "stored room with an invalid JID skipped");
                continue;
            };
            let config: RoomConfig = match serde_json::from_str(&stored.config) {
                Ok(config) => config,
                Err(error) => {
                    tracing::warn!(room = %jid, %error, "stored room configuration unreadable; skipped");
                    continue;
                }
            };
            let affiliations = store
                .affiliations(&stored.room)
                .await?
                .into_iter()
                .filter_map(|(jid, a)| Some((BareJid::new(&jid).ok()?, Affiliation::parse(&a)?)))
                .collect();
            let room = Room::restore(jid.clone(), config, affiliations, history_max);
            rooms.insert(jid, Arc::new(Mutex::new(room)));
        }
        tracing::info!(domain = %domain, rooms = rooms.len(), "conference service ready");
        Ok(Self {
            domain,
            history_max,
            store,
            rooms: parking_lot::Mutex::new(rooms),
            joined: parking_lot::Mutex::new(HashMap::new()),
            archive: None,
            presence_broadcast_max: usize::MAX,
        })
    }

    /// Rooms with more than `max` occupants no longer broadcast occupants' presence
    /// (docs/protocol/confab-groups.md, "Large rooms"); applies to loaded rooms and to every
    /// room created later.
    pub fn with_presence_broadcast_max(mut self, max: usize) -> Self {
        self.presence_broadcast_max = max;
        for handle in self.rooms.get_mut().values() {
            // Nothing else holds a room before the service is shared, so the lock is free.
            if let Ok(mut room) = handle.try_lock() {
                room.presence_broadcast_max = max;
            }
        }
        self
    }

    /// Makes group messages take the durable path through `archive` (see the crate docs),
    /// and refills the history of the rooms already loaded from it.
    pub async fn with_archive(mut self, archive: RoomArchive) -> Result<Self, MucError> {
        let handles: Vec<Arc<Mutex<Room>>> = self.rooms.get_mut().values().cloned().collect();
        for handle in handles {
            let mut room = handle.lock().await;
            room.archived = true;
            if self.history_max == 0 {
                continue;
            }
            let conversation = group_conversation(&room.jid);
            let last = archive.store.last_seq(&conversation).await?;
            let max = u32::try_from(self.history_max).unwrap_or(u32::MAX);
            let after = last.saturating_sub(u64::from(max));
            let stored = archive
                .store
                .history(&conversation, Some(after), None, max)
                .await?;
            let jid = room.jid.clone();
            let messages: Vec<_> = stored
                .into_iter()
                .filter_map(|m| {
                    let stamp = DateTime::from_timestamp_millis(m.stamp_ms)?;
                    m.xml
                        .parse::<Element>()
                        .inspect_err(|error| {
                            tracing::warn!(room = %jid, id = %m.server_id, %error,
                                "archived message is not XML; not in history");
                        })
                        .ok()
                        .map(|message| (message, stamp))
                })
                .collect();
            room.seed_history(messages);
        }
        self.archive = Some(archive);
        Ok(self)
    }

    /// Handles a stanza for a room (its bare JID or an occupant's `room/nick`).
    async fn to_room(&self, router: &Router, stanza: Stanza, from: Jid, to: Jid) {
        let room_jid = to.to_bare();
        // Our own routing came back to this room (see the crate docs): handle it after the
        // room's lock is released.
        let deferred = ROUTING
            .try_with(|routing| {
                let ours = routing.room == room_jid;
                if ours {
                    routing.deferred.borrow_mut().push(stanza.clone());
                }
                ours
            })
            .unwrap_or(false);
        if deferred {
            return;
        }
        let answer = stanza.kind == StanzaKind::Iq
            && matches!(stanza.type_attr(), Some("result" | "error"))
            && to.resource().is_some();
        // Only answers to forwarded IQs may come from a bare JID (the server answering a
        // vCard request for an account); everything else comes from a session.
        let full = from.clone().try_into_full().ok();
        if full.is_none() && !answer {
            tracing::debug!(%from, room = %room_jid, "stanza to a room without a full sender dropped");
            return;
        }
        // A room removed between lookup and lock is looked up again; twice is plenty, since
        // a removal needs the lock we then hold.
        for _ in 0..3 {
            let handle = match &full {
                Some(full) => self.room_for(&stanza, full, &to, &room_jid),
                None => self.rooms.lock().get(&room_jid).cloned(),
            };
            let Some(handle) = handle else {
                self.no_such_room(router, &stanza).await;
                return;
            };
            let mut room = handle.lock().await;
            if room.gone {
                continue;
            }
            if let Some(from) = &full
                && self.archive.is_some()
                && is_mam_query(&stanza, &to)
            {
                let allowed = room.may_read_archive(from);
                drop(room);
                self.room_mam(router, &stanza, from, &room_jid, allowed)
                    .await;
                return;
            }
            if let Some(from) = &full
                && self.archive.is_some()
                && is_moderation(&stanza, &to)
            {
                let moderator = room.moderator_jid(from);
                drop(room);
                self.moderate(router, &handle, &stanza, &room_jid, from, moderator)
                    .await;
                return;
            }
            let mut outcome = match (stanza.kind, to.try_as_full(), &full) {
                (StanzaKind::Iq, Ok(_), _) if answer => room.iq_response(&stanza, &from),
                (_, _, None) => return,
                (StanzaKind::Presence, Ok(occupant), Some(from)) => {
                    let outcome = room.presence(&stanza, from, occupant);
                    self.note_membership(&room, from);
                    outcome
                }
                // §7.2 ("no nickname specified"): presence to the bare room JID is
                // jid-malformed.
                (StanzaKind::Presence, Err(_), Some(_)) => {
                    if stanza.type_attr().is_none() {
                        router
                            .bounce(&stanza, StanzaErrorCondition::JidMalformed)
                            .await;
                    }
                    return;
                }
                (StanzaKind::Message, Err(_), Some(from)) => room.message(&stanza, from),
                (StanzaKind::Iq, Err(_), Some(from)) => {
                    if !matches!(stanza.type_attr(), Some("get" | "set")) {
                        return;
                    }
                    room.iq(&stanza, from)
                }
                (_, Ok(occupant), Some(from)) => {
                    let nick = occupant.resource().as_str().to_owned();
                    room.to_occupant(&stanza, from, &nick)
                }
            };
            let mut committing = None;
            if let (Some(message), Some(from)) = (outcome.accepted.take(), &full) {
                let (stanzas, broadcast, pending) =
                    self.accept(router, &mut room, message, &stanza, from).await;
                outcome.stanzas.extend(stanzas);
                outcome.broadcast = broadcast;
                committing = pending;
            }
            let deferred = self.finish(router, &mut room, outcome).await;
            drop(room);
            self.handle_deferred(router, deferred).await;
            if let Some(committing) = committing {
                self.broadcast_committed(router, &handle, &stanza, committing)
                    .await;
            }
            return;
        }
    }

    /// The service's domain (`conference.<domain>`).
    pub fn domain(&self) -> &BareJid {
        &self.domain
    }

    /// Creates a group as `creator` (docs/protocol/confab-groups.md): a persistent,
    /// members-only, hidden, non-anonymous room flagged as a group, with a generated JID,
    /// stored before it is offered. Members' available resources get the status 101 notice.
    pub async fn create_group(
        &self,
        router: &Router,
        creator: &BareJid,
        group: NewGroup,
    ) -> Result<BareJid, GroupError> {
        let jid = BareJid::new(&format!("{}@{}", new_server_id(), self.domain))
            .map_err(|e| GroupError::Invalid(format!("group JID: {e}")))?;
        let config = RoomConfig {
            name: group.name,
            persistent: true,
            public: false,
            members_only: true,
            whois: model::Whois::Anyone,
            group: true,
            avatar: group.avatar,
            announcement: group.announcement,
            ..RoomConfig::default()
        };
        let mut room = Room::create_group(
            jid.clone(),
            creator.clone(),
            group.members,
            config,
            self.history_max,
        );
        room.archived = self.archive.is_some();
        room.presence_broadcast_max = self.presence_broadcast_max;
        self.save(&room, true).await?;
        let mut notices = Vec::new();
        for (member, affiliation) in room.members() {
            notices.extend(affiliation_notices(router, &room, member, affiliation));
        }
        self.rooms
            .lock()
            .insert(jid.clone(), Arc::new(Mutex::new(room)));
        tracing::debug!(room = %jid, %creator, "group created");
        for notice in notices {
            router.route(notice).await;
        }
        Ok(jid)
    }

    /// The live group `room`, locked, if `who` is one of its members.
    async fn member_of(
        &self,
        room: &BareJid,
        who: &BareJid,
    ) -> Result<tokio::sync::OwnedMutexGuard<Room>, GroupError> {
        let handle = self
            .rooms
            .lock()
            .get(room)
            .cloned()
            .ok_or(GroupError::NotFound)?;
        let guard = handle.lock_owned().await;
        if guard.gone || !guard.config.group || guard.affiliation_of(who) < Affiliation::Member {
            return Err(GroupError::NotFound);
        }
        Ok(guard)
    }

    /// The group `room` as its member `who` sees it.
    pub async fn group(&self, room: &BareJid, who: &BareJid) -> Result<GroupView, GroupError> {
        let guard = self.member_of(room, who).await?;
        let mut members: Vec<(BareJid, Affiliation)> =
            guard.members().map(|(j, a)| (j.clone(), a)).collect();
        members.sort();
        Ok(GroupView {
            jid: guard.jid.clone(),
            config: guard.config.clone(),
            affiliation: guard.affiliation_of(who),
            members,
        })
    }

    /// Sets the name, avatar and announcement given, as `actor` (an admin or owner); stored,
    /// and occupants get the status 104 notice.
    pub async fn update_group(
        &self,
        router: &Router,
        actor: &BareJid,
        room: &BareJid,
        name: Option<String>,
        avatar: Option<String>,
        announcement: Option<String>,
    ) -> Result<(), GroupError> {
        let mut guard = self.member_of(room, actor).await?;
        let outcome = guard.set_group_meta(actor, name, avatar, announcement)?;
        let deferred = self.finish(router, &mut guard, outcome).await;
        drop(guard);
        self.handle_deferred(router, deferred).await;
        Ok(())
    }

    /// Gives `member` the `affiliation` (`member` to add, `none` to remove) as `actor`,
    /// under the XEP-0045 §9/§10 rules (a member may remove itself). Stored; occupants see
    /// the admin use case's presence, the member's other resources the status 101 notice.
    pub async fn set_member(
        &self,
        router: &Router,
        actor: &BareJid,
        room: &BareJid,
        member: &BareJid,
        affiliation: Affiliation,
    ) -> Result<(), GroupError> {
        let mut guard = self.member_of(room, actor).await?;
        let before = guard.affiliation_of(member);
        let mut outcome = guard.change_affiliation(actor, member.clone(), affiliation)?;
        if before != affiliation {
            outcome
                .stanzas
                .extend(affiliation_notices(router, &guard, member, affiliation));
        }
        let deferred = self.finish(router, &mut guard, outcome).await;
        drop(guard);
        self.handle_deferred(router, deferred).await;
        Ok(())
    }

    /// Whether the account `who` may read the archive of `room` under the room's rules (see
    /// [`Room::may_read_archive`]); `None` when the service has no such room or archives
    /// nothing.
    pub async fn may_read_archive(&self, room: &BareJid, who: &BareJid) -> Option<bool> {
        self.archive.as_ref()?;
        let handle = self.rooms.lock().get(room).cloned()?;
        let room = handle.lock().await;
        (!room.gone).then(|| room.may_read_archive_as(who))
    }

    /// A groupchat message the room accepted, under the room's lock: broadcast at once when
    /// nothing archives the room; otherwise queued for commit with the room's stanza-id, and
    /// given its turn to broadcast after the message accepted before it (crate docs,
    /// "Ordering"). Returns the stanzas to route now (an error when it could not be queued)
    /// and the commit to finish once the lock is released.
    async fn accept(
        &self,
        router: &Router,
        room: &mut Room,
        mut message: Element,
        stanza: &Stanza,
        from: &FullJid,
    ) -> (Vec<Stanza>, Option<Broadcast>, Option<Committing>) {
        let Some(archive) = &self.archive else {
            let members = member_recipients(router, room);
            let mut broadcast = room.fan_out(message, Utc::now());
            broadcast.recipients.extend(members);
            return (Vec::new(), Some(broadcast), None);
        };
        let client_id = receipt::client_id(&stanza.element);
        let room_jid = room.jid.to_string();
        let conversation = group_conversation(&room.jid);
        let sender = from.to_bare().to_string();
        let counts_unread = message.has_child("body", ns::CLIENT);
        // Found under the lock (occupants' nicks), recorded after the commit.
        let mentions = if room.config.group && counts_unread {
            let mentioned = mentions::mentioned(&message, &room.jid, &from.to_bare(), &*room);
            (!mentioned.is_empty()).then(|| {
                let members = mentioned.iter().map(ToString::to_string).collect();
                (conversation.clone(), members)
            })
        } else {
            None
        };
        // XEP-0424/XEP-0308 in a room: the edit amends the room's archive before it is
        // committed and broadcast; a refused edit goes back to its sender only.
        if let Some(edit) = recall::edit_of(&message) {
            let now_ms = Utc::now().timestamp_millis();
            let applied = archive
                .log
                .recall()
                .apply(&conversation, &sender, &edit, &message, now_ms)
                .await;
            match applied {
                Ok(server_id) => room.amend_history(&server_id, |remembered| match edit.kind {
                    AmendKind::Retract => recall::tombstone(remembered, now_ms, None),
                    AmendKind::Correct => recall::corrected(remembered, &message),
                }),
                Err(error) => {
                    tracing::debug!(room = %room_jid, %error, %sender, "group edit refused");
                    let reply = stanza.error_reply(&error.to_stanza_error());
                    return (reply.into_iter().collect(), None, None);
                }
            }
        }
        let submitted = archive
            .log
            .submit(|server_id| {
                message.append_child(receipt::stanza_id(&server_id, &room_jid));
                NewMessage {
                    server_id,
                    conversation,
                    sender: sender.clone(),
                    recipient: room_jid.clone(),
                    client_id: client_id.clone(),
                    stamp_ms: Utc::now().timestamp_millis(),
                    xml: String::from(&message),
                    counts_unread,
                    for_later: false,
                }
            })
            .await;
        match submitted {
            Ok(pending) => {
                let (done, turn) = oneshot::channel();
                let previous = room.broadcast_turn.replace(turn);
                let committing = Committing {
                    pending,
                    previous,
                    done,
                    message,
                    client_id,
                    sender: from.clone(),
                    mentions,
                };
                (Vec::new(), None, Some(committing))
            }
            Err(error) => (
                commit_failed(&room_jid, stanza, &sender, &error),
                None,
                None,
            ),
        }
    }

    /// The rest of a groupchat message's path, outside the room's lock: waits for its commit
    /// and for the message before it to be broadcast, then (under the lock again) tells the
    /// sender and broadcasts it to whoever is in the room by then.
    async fn broadcast_committed(
        &self,
        router: &Router,
        handle: &Mutex<Room>,
        stanza: &Stanza,
        committing: Committing,
    ) {
        let Committing {
            pending,
            previous,
            done,
            message,
            client_id,
            sender,
            mentions,
        } = committing;
        let committed = pending.committed().await;
        // Before the receipt and the broadcast, so whoever learns of the message can see the
        // mention; outside the room's lock. A failure loses the flag, not the message.
        if let (Ok(committed), Some((conversation, members))) = (&committed, &mentions)
            && !committed.duplicate
            && let Err(error) = self
                .store
                .record_mentions(conversation, committed.seq, &committed.server_id, members)
                .await
        {
            tracing::warn!(%conversation, %error, "group mentions not recorded");
        }
        if let Some(previous) = previous {
            // An error only means the previous message's task ended without broadcasting
            // (its commit failed, or it was cancelled): our turn either way.
            let _ = previous.await;
        }
        let mut room = handle.lock().await;
        let room_jid = room.jid.to_string();
        let committed = match committed {
            Ok(committed) => committed,
            Err(error) => {
                let stanzas = commit_failed(&room_jid, stanza, sender.as_str(), &error);
                drop(room);
                drop(done);
                for stanza in stanzas {
                    router.route(stanza).await;
                }
                return;
            }
        };
        let ack = Receipt {
            client_id,
            server_id: committed.server_id,
            seq: committed.seq,
            with: room_jid,
            stamp_ms: committed.stamp_ms,
        };
        // Committed: the sender hears so even if the room went meanwhile.
        if let Some(origin) = router.sessions.get(&sender) {
            let domain = router.domain().as_str();
            let receipt = Stanza {
                kind: StanzaKind::Message,
                element: ack.to_message(domain, sender.as_str()),
                to: Some(sender.clone().into()),
                from: Some(Jid::from(router.domain().clone())),
            };
            router.send(&origin, receipt);
        }
        if committed.duplicate || room.gone {
            // A resend: the original was broadcast when it was committed.
            tracing::debug!(room = %ack.with, %sender, duplicate = committed.duplicate, "group message not broadcast");
            return;
        }
        let stamp = DateTime::from_timestamp_millis(committed.stamp_ms).unwrap_or_else(Utc::now);
        let members = member_recipients(router, &room);
        let mut broadcast = room.fan_out(message, stamp);
        broadcast.recipients.extend(members);
        let outcome = Outcome {
            broadcast: Some(broadcast),
            ..Outcome::default()
        };
        let deferred = self.finish(router, &mut room, outcome).await;
        drop(room);
        // The next message's turn: after ours was routed.
        drop(done);
        self.handle_deferred(router, deferred).await;
    }

    /// XEP-0425 §4: a moderator retracts a message of the room. The archive is amended
    /// outside the room's lock (like a MAM query); the notice (§5) is then broadcast under
    /// it. `moderator` is the requester's occupant JID when it is a moderator.
    async fn moderate(
        &self,
        router: &Router,
        handle: &Mutex<Room>,
        stanza: &Stanza,
        room_jid: &BareJid,
        from: &FullJid,
        moderator: Option<FullJid>,
    ) {
        let Some(archive) = &self.archive else {
            return;
        };
        let request = stanza.payload().filter(|p| {
            p.is("moderate", recall::MODERATE) && p.has_child("retract", recall::RETRACT)
        });
        let Some((request, id)) =
            request.and_then(|r| r.attr("id").filter(|id| !id.is_empty()).map(|id| (r, id)))
        else {
            router
                .bounce(stanza, StanzaErrorCondition::BadRequest)
                .await;
            return;
        };
        let Some(moderator) = moderator else {
            router.bounce(stanza, StanzaErrorCondition::Forbidden).await;
            return;
        };
        let reason = request
            .get_child("reason", recall::MODERATE)
            .map(Element::text)
            .filter(|reason| !reason.is_empty());
        // The audit trail records the account; the notice names the occupant, as §5 asks.
        let by = from.to_bare().to_string();
        let now_ms = Utc::now().timestamp_millis();
        let moderated = archive
            .log
            .recall()
            .moderate(
                &group_conversation(room_jid),
                id,
                &by,
                reason.as_deref(),
                now_ms,
            )
            .await;
        if let Err(error) = moderated {
            tracing::debug!(room = %room_jid, %error, "moderation refused");
            router.reply_error(stanza, &error.to_stanza_error()).await;
            return;
        }
        let mut retract = element("retract", recall::RETRACT, &[("id", id)]);
        retract.append_child(element(
            "moderated",
            recall::MODERATE,
            &[("by", moderator.as_str())],
        ));
        if let Some(reason) = &reason {
            let mut text = element("reason", recall::RETRACT, &[]);
            text.append_text(reason.as_str());
            retract.append_child(text);
        }
        let notice_id = new_server_id();
        let mut notice = element(
            "message",
            ns::CLIENT,
            &[
                ("type", "groupchat"),
                ("from", room_jid.as_str()),
                ("id", notice_id.as_str()),
            ],
        );
        notice.append_child(retract);
        let mut room = handle.lock().await;
        if !room.gone {
            room.amend_history(id, |remembered| {
                recall::tombstone(
                    remembered,
                    now_ms,
                    Some((moderator.as_str(), reason.as_deref())),
                )
            });
            let outcome = Outcome {
                broadcast: Some(room.fan_out(notice, Utc::now())),
                ..Outcome::default()
            };
            let deferred = self.finish(router, &mut room, outcome).await;
            drop(room);
            self.handle_deferred(router, deferred).await;
        }
        router.route(stanza.iq_result(None)).await;
    }
    /// XEP-0313 §5: a query on the room's archive, answered from the archive once the
    /// room's lock is released. `allowed` is the room's verdict on the requester.
    async fn room_mam(
        &self,
        router: &Router,
        stanza: &Stanza,
        from: &FullJid,
        room_jid: &BareJid,
        allowed: bool,
    ) {
        let Some(archive) = &self.archive else { return };
        if !allowed {
            router.bounce(stanza, StanzaErrorCondition::Forbidden).await;
            return;
        }
        if stanza.type_attr() == Some("get") {
            // The fields a query may use (XEP-0313 §4.1.5 of v1.1).
            let form = confab_log::mam::query_form();
            router.route(stanza.iq_result(Some(form))).await;
            return;
        }
        let Some(payload) = stanza.payload() else {
            return;
        };
        let request = match confab_log::mam::parse_query(room_jid, payload) {
            Ok(request) => request,
            Err(error) => {
                router.reply_error(stanza, &error).await;
                return;
            }
        };
        let conversation = group_conversation(room_jid);
        let page = match archive
            .store
            .query_conversation(&conversation, &request.query)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                router
                    .reply_error(stanza, &confab_log::mam::store_error(&error))
                    .await;
                return;
            }
        };
        if let Some(origin) = router.sessions.get(from) {
            let to = from.to_string();
            let ordered: Box<dyn Iterator<Item = _>> = if request.flip {
                Box::new(page.messages.iter().rev())
            } else {
                Box::new(page.messages.iter())
            };
            for message in ordered {
                if let Some(result) = confab_log::mam::result_message(
                    room_jid,
                    &to,
                    request.query_id.as_deref(),
                    message,
                ) {
                    router.send(&origin, Stanza::new(result));
                }
            }
        }
        let fin = confab_log::mam::fin(&page, request.flip);
        router.route(stanza.iq_result(Some(fin))).await;
    }

    /// Handles stanzas that came back to a room while it was routing.
    async fn handle_deferred(&self, router: &Router, deferred: Vec<Stanza>) {
        for stanza in deferred {
            // Through the boxed trait method: this recursion needs a boxed future.
            self.handle_hosted(router, stanza).await;
        }
    }

    /// The live room, or a new one when an available presence creates it (§10.1.1).
    fn room_for(
        &self,
        stanza: &Stanza,
        from: &FullJid,
        to: &Jid,
        room_jid: &BareJid,
    ) -> Option<Arc<Mutex<Room>>> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.get(room_jid) {
            return Some(room.clone());
        }
        let creates = stanza.kind == StanzaKind::Presence
            && stanza.type_attr().is_none()
            && to.resource().is_some();
        if !creates {
            return None;
        }
        // §10.1.2: a client that does not speak MUC (no `<x/>`) gets an instant room; one
        // that does gets a locked room it must configure or accept.
        let instant = !stanza.element.has_child("x", ns::MUC);
        let mut room = Room::create(room_jid.clone(), from.to_bare(), instant, self.history_max);
        room.archived = self.archive.is_some();
        room.presence_broadcast_max = self.presence_broadcast_max;
        let room = Arc::new(Mutex::new(room));
        rooms.insert(room_jid.clone(), room.clone());
        tracing::debug!(room = %room_jid, creator = %from, "room created");
        Some(room)
    }

    async fn no_such_room(&self, router: &Router, stanza: &Stanza) {
        // §7.2 and XEP-0410: a room that does not exist is item-not-found; presence that
        // does not create one (unavailable) and errors get no answer.
        let answer = match stanza.kind {
            StanzaKind::Presence => false,
            StanzaKind::Iq => matches!(stanza.type_attr(), Some("get" | "set")),
            StanzaKind::Message => !stanza.is_error(),
        };
        if answer {
            router
                .bounce(stanza, StanzaErrorCondition::ItemNotFound)
                .await;
        }
    }

    fn note_membership(&self, room: &Room, from: &FullJid) {
        let mut joined = self.joined.lock();
        if room.has_occupant(from) {
            joined
                .entry(from.clone())
                .or_default()
                .insert(room.jid.clone());
        } else if let Some(rooms) = joined.get_mut(from) {
            rooms.remove(&room.jid);
            if rooms.is_empty() {
                joined.remove(from);
            }
        }
    }

    /// Writes what the room asked to store, routes its stanzas (under the room's lock, in
    /// order) and forgets the room when it is gone or empty and temporary. Returns the
    /// stanzas for this room that routing produced, to handle once the lock is released.
    async fn finish(&self, router: &Router, room: &mut Room, outcome: Outcome) -> Vec<Stanza> {
        self.persist(room, &outcome.effects).await;
        let room_jid = room.jid.clone();
        let routing = Routing {
            room: room_jid.clone(),
            deferred: RefCell::new(Vec::new()),
        };
        let deferred = ROUTING
            .scope(routing, async {
                for stanza in outcome.stanzas {
                    router.route(stanza).await;
                }
                // After the stanzas: an occupant's own presence or errors come first, as
                // when the copies were among them.
                if let Some(broadcast) = outcome.broadcast {
                    let (stanza, recipients) = broadcast.into_parts();
                    router.fan_out(stanza, recipients).await;
                }
                ROUTING.with(|routing| routing.deferred.take())
            })
            .await;
        // §10.1.1: a temporary room is destroyed when its last occupant leaves (a locked
        // room its creator left unconfigured too, or it would stay locked for ever).
        if room.is_empty() && !room.config.persistent {
            room.gone = true;
        }
        if room.gone {
            self.rooms.lock().remove(&room_jid);
            tracing::debug!(room = %room_jid, "room removed");
        }
        deferred
    }

    /// Applies a room's storage writes. A failure is logged and the in-memory room keeps the
    /// change: occupants already saw it, and the next save of the room writes it again.
    async fn persist(&self, room: &Room, effects: &[Effect]) {
        let jid = room.jid.as_str();
        for effect in effects {
            let result = match effect {
                Effect::Save { all } => self.save(room, *all).await,
                Effect::SetAffiliation(who, affiliation) => {
                    let value = (*affiliation != Affiliation::None).then(|| affiliation.as_str());
                    self.store.set_affiliation(jid, who.as_str(), value).await
                }
                Effect::Delete => match self.store.delete_room(jid).await {
                    Err(StoreError::NotFound) => Ok(()),
                    other => other,
                },
            };
            if let Err(error) = result {
                tracing::warn!(room = %jid, %error, "room not stored");
            }
        }
    }

    async fn save(&self, room: &Room, all: bool) -> Result<(), StoreError> {
        let config = serde_json::to_string(&room.config)
            .map_err(|e| StoreError::Unavailable(format!("serializing room config: {e}")))?;
        let jid = room.jid.as_str();
        self.store.put_room(jid, &config).await?;
        if all {
            for (who, affiliation) in room.affiliations() {
                self.store
                    .set_affiliation(jid, who.as_str(), Some(affiliation.as_str()))
                    .await?;
            }
        }
        // After the affiliations, so a new group's row finds its members (migration 0010).
        self.store
            .put_group(jid, room.config.group_meta().as_ref())
            .await
    }

    /// A stanza to the service's own JID: disco (§6.1–§6.3).
    async fn to_service(&self, router: &Router, stanza: Stanza) {
        if stanza.kind != StanzaKind::Iq {
            if stanza.kind == StanzaKind::Message && !stanza.is_error() {
                router
                    .bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                    .await;
            }
            return;
        }
        if !matches!(stanza.type_attr(), Some("get" | "set")) {
            return;
        }
        let payload = stanza.payload();
        let get = stanza.type_attr() == Some("get");
        let reply = match payload.map(|p| p.ns()) {
            Some(namespace) if get && namespace == ns::DISCO_INFO => self.service_info(),
            Some(namespace) if get && namespace == ns::DISCO_ITEMS => self.service_items().await,
            Some(namespace) if get && namespace == ns::PING => {
                router.route(stanza.iq_result(None)).await;
                return;
            }
            _ => {
                router
                    .bounce(&stanza, StanzaErrorCondition::ServiceUnavailable)
                    .await;
                return;
            }
        };
        router.route(stanza.iq_result(Some(reply))).await;
    }

    fn service_info(&self) -> Element {
        let mut query = Element::bare("query", ns::DISCO_INFO);
        query.append_child(element(
            "identity",
            ns::DISCO_INFO,
            &[
                ("category", "conference"),
                ("type", "text"),
                ("name", SERVICE_NAME),
            ],
        ));
        for feature in [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::MUC, ns::PING] {
            query.append_child(element("feature", ns::DISCO_INFO, &[("var", feature)]));
        }
        query
    }

    /// §6.3: public rooms.
    async fn service_items(&self) -> Element {
        let handles: Vec<Arc<Mutex<Room>>> = self.rooms.lock().values().cloned().collect();
        let mut items = Vec::new();
        for handle in handles {
            let room = handle.lock().await;
            if room.listed() && !room.gone {
                let name = match room.config.name.as_str() {
                    "" => room.jid.node().map(|n| n.as_str().to_owned()),
                    name => Some(name.to_owned()),
                };
                items.push((room.jid.to_string(), name));
            }
        }
        items.sort();
        let mut query = Element::bare("query", ns::DISCO_ITEMS);
        for (jid, name) in items {
            let mut attrs = vec![("jid", jid.as_str())];
            if let Some(name) = &name {
                attrs.push(("name", name));
            }
            query.append_child(element("item", ns::DISCO_ITEMS, &attrs));
        }
        query
    }
}

#[async_trait]
impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn hosted_domains(&self) -> Vec<String> {
        vec![self.domain.to_string()]
    }

    async fn handle_hosted(&self, router: &Router, stanza: Stanza) {
        let Some(to) = stanza.to.clone() else { return };
        // The router only hands us stanzas from local sessions (full JIDs) or the server's
        // answers on an account's behalf (bare JIDs).
        let Some(from) = stanza.from.clone() else {
            return;
        };
        if to.node().is_none() {
            if to.resource().is_none() {
                self.to_service(router, stanza).await;
            } else if !stanza.is_error() {
                router
                    .bounce(&stanza, StanzaErrorCondition::ItemNotFound)
                    .await;
            }
            return;
        }
        self.to_room(router, stanza, from, to).await;
    }

    async fn on_session_closed(&self, router: &Router, resource: &Arc<Resource>) {
        // Usually empty by now: the presence module sends unavailable presence to every room
        // the session sent presence to. This catches the rest.
        let rooms = self.joined.lock().remove(&resource.jid);
        for room_jid in rooms.into_iter().flatten() {
            let handle = self.rooms.lock().get(&room_jid).cloned();
            let Some(handle) = handle else { continue };
            let mut room = handle.lock().await;
            if room.gone {
                continue;
            }
            let outcome = room.leave(&resource.jid, None);
            let deferred = self.finish(router, &mut room, outcome).await;
            drop(room);
            self.handle_deferred(router, deferred).await;
        }
    }
}

/// Whether `stanza` is an XEP-0425 moderation request (an IQ `set`) to the room's bare JID.
fn is_moderation(stanza: &Stanza, to: &Jid) -> bool {
    stanza.kind == StanzaKind::Iq
        && to.resource().is_none()
        && stanza.type_attr() == Some("set")
        && stanza
            .payload()
            .is_some_and(|p| p.is("moderate", recall::MODERATE))
}

/// Whether `stanza` is an XEP-0313 query (an IQ `set`) or a request for its form (`get`)
/// on the room's bare JID `to`.
fn is_mam_query(stanza: &Stanza, to: &Jid) -> bool {
    stanza.kind == StanzaKind::Iq
        && to.resource().is_none()
        && matches!(stanza.type_attr(), Some("get" | "set"))
        && stanza.payload().is_some_and(|p| p.is("query", ns::MAM))
}
