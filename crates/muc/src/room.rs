//! One room's state and rules: occupants, affiliations, history, subject, and what every
//! XEP-0045 use case does to them.
//!
//! Sans-IO: each entry point takes a stanza the service received and returns an
//! [`Outcome`], the stanzas to route (in order) and the storage writes to make. The driver in
//! `lib.rs` holds the room's lock while it routes them, so every occupant sees one room's
//! events in the order the room decided them.
//!
//! Occupant state is kept small (a nick, a role, and per session a full JID and the
//! presence children), because a room must later hold 10k members; affiliations are the
//! only per-member state that is not per-visit. Broadcast presence is built once per view
//! (with or without real JIDs) and cloned per recipient.

use crate::model::{Affiliation, Role, RoomConfig, Whois, text_child};
use crate::ns;
use chrono::{DateTime, SecondsFormat, Utc};
use confab_core::stanza::{element, set_attr};
use confab_core::{
    BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaKind,
};
use std::collections::{HashMap, VecDeque};

/// Status codes of XEP-0045 §15.2.
mod status {
    /// Non-anonymous room: your real JID is visible to everyone.
    pub const NON_ANONYMOUS: u16 = 100;
    /// This presence is about you.
    pub const SELF: u16 = 110;
    /// A new room was created.
    pub const CREATED: u16 = 201;
    /// You were banned.
    pub const BANNED: u16 = 301;
    /// Nickname change.
    pub const NICK_CHANGED: u16 = 303;
    /// You were kicked.
    pub const KICKED: u16 = 307;
    /// Removed because of an affiliation change (members-only room).
    pub const AFFILIATION_CHANGED: u16 = 321;
    /// Removed because the room became members-only.
    pub const MEMBERS_ONLY: u16 = 322;
    /// The room's configuration changed (other than anonymity).
    pub const CONFIG_CHANGED: u16 = 104;
    /// The room is now non-anonymous.
    pub const NOW_NON_ANONYMOUS: u16 = 172;
    /// The room is now semi-anonymous.
    pub const NOW_SEMI_ANONYMOUS: u16 = 173;
}

/// A storage write the room asks for; only ever emitted for persistent rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store the configuration; with `all`, every affiliation too (the room just became
    /// persistent).
    Save {
        /// Also write every affiliation.
        all: bool,
    },
    /// Store one affiliation (`None` removes it).
    SetAffiliation(BareJid, Affiliation),
    /// Forget the stored room.
    Delete,
}

/// One groupchat message for many sessions: the element as broadcast but without `to`, and
/// the full JIDs to address a copy to (see `Router::fan_out`).
#[derive(Debug)]
pub struct Broadcast {
    /// The message, without `to`.
    pub message: Element,
    /// Its sender (the occupant JID), as the message's `from` says.
    pub from: Option<Jid>,
    /// Who gets a copy, in order.
    pub recipients: Vec<FullJid>,
}

impl Broadcast {
    /// The message as a stanza without `to`, for `Router::fan_out`.
    pub fn into_parts(self) -> (Stanza, Vec<FullJid>) {
        let stanza = Stanza {
            kind: StanzaKind::Message,
            element: self.message,
            to: None,
            from: self.from,
        };
        (stanza, self.recipients)
    }
}

/// What handling one stanza produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Stanzas to route, in order.
    pub stanzas: Vec<Stanza>,
    /// Storage writes to make.
    pub effects: Vec<Effect>,
    /// A groupchat message the room accepted, as broadcast but without `to`. It is not in
    /// `stanzas`: the service commits it first and then asks [`Room::broadcast`] for the
    /// copies (durable path), or broadcasts it at once when nothing archives the room.
    pub accepted: Option<Element>,
    /// A message to fan out after `stanzas` (see [`Broadcast`]).
    pub broadcast: Option<Broadcast>,
}

impl Outcome {
    fn error(stanza: &Stanza, error: impl Into<StanzaError>) -> Self {
        let mut outcome = Self::default();
        outcome.reply_error(stanza, error);
        outcome
    }

    fn reply_error(&mut self, stanza: &Stanza, error: impl Into<StanzaError>) {
        if let Some(reply) = stanza.error_reply(&error.into()) {
            self.stanzas.push(reply);
        }
    }

    fn result(stanza: &Stanza, payload: Option<Element>) -> Self {
        Self {
            stanzas: vec![stanza.iq_result(payload)],
            ..Self::default()
        }
    }
}

/// One person in the room: one nick, one account, one or more of its sessions (a phone and
/// a desktop joined under the same nick share it, as the room's other occupants see one
/// person).
#[derive(Debug, Clone)]
struct Occupant {
    /// `room@service/nick`.
    room_jid: FullJid,
    /// The account whose sessions these are.
    bare: BareJid,
    /// The temporary role (§5.1).
    role: Role,
    /// The sessions in this nick, first joined first; never empty. The first one's
    /// presence and JID are what the others see.
    sessions: Vec<Session>,
}

/// One session of an occupant.
#[derive(Debug, Clone)]
struct Session {
    /// The session's full JID.
    jid: FullJid,
    /// The children of its last presence (show, status, caps, …), minus the MUC
    /// extensions: what others see of it.
    presence: Vec<Element>,
}

impl Occupant {
    fn nick(&self) -> &str {
        self.room_jid.resource().as_str()
    }

    /// The session whose presence represents the occupant.
    fn primary(&self) -> &Session {
        // Never empty: a session is only removed while another remains (`Room::leave`);
        // otherwise the whole occupant goes. Peer input cannot break that.
        &self.sessions[0]
    }

    fn session_jids(&self) -> impl Iterator<Item = &FullJid> {
        self.sessions.iter().map(|s| &s.jid)
    }
}

/// Forwarded IQs a room remembers at most; more are not expected from clients that wait
/// for answers, and the table must stay small for rooms with many occupants.
const MAX_PENDING_IQS: usize = 256;

/// An IQ between occupants awaiting its answer.
#[derive(Debug, Clone)]
struct PendingIq {
    /// The session that asked.
    requester: FullJid,
    /// Its id for the request.
    original_id: Option<String>,
    /// Where the request went (a full JID, or a bare one for vCards): only it may answer.
    target: Jid,
    /// The nick that was asked, which the answer comes from.
    target_room_jid: FullJid,
}

/// A message kept for new occupants (§7.2.12).
#[derive(Debug, Clone)]
struct HistoryItem {
    /// The message as broadcast, without `to`.
    message: Element,
    /// When the room received it.
    stamp: DateTime<Utc>,
    /// Its size in characters, for `maxchars`.
    chars: usize,
}

/// The limits of a `<history/>` request (§7.2.13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    /// `maxstanzas`.
    pub max_stanzas: Option<usize>,
    /// `maxchars`, counted over the whole message XML.
    pub max_chars: Option<usize>,
    /// Only messages newer than this (from `seconds` or `since`).
    pub since: Option<DateTime<Utc>>,
}

impl HistoryRequest {
    /// Reads `<history/>` from the join presence's `<x/>`; unparsable attributes are ignored,
    /// as if absent.
    pub fn parse(history: Option<&Element>, now: DateTime<Utc>) -> Self {
        let Some(history) = history else {
            return Self::default();
        };
        let number = |name| history.attr(name).and_then(|v| v.parse::<usize>().ok());
        let seconds = history
            .attr("seconds")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|s| now - chrono::Duration::seconds(s));
        let since = history
            .attr("since")
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|d| d.with_timezone(&Utc));
        Self {
            max_stanzas: number("maxstanzas"),
            max_chars: number("maxchars"),
            since: seconds.max(since),
        }
    }
}

/// A room: configuration, affiliations, who is in it, recent history.
#[derive(Debug)]
pub struct Room {
    /// `room@service`.
    pub jid: BareJid,
    /// The configuration and subject.
    pub config: RoomConfig,
    /// Non-`none` affiliations by bare JID.
    affiliations: HashMap<BareJid, Affiliation>,
    /// Occupants by nick.
    occupants: HashMap<String, Occupant>,
    /// Nick of each occupant's session.
    nick_of: HashMap<FullJid, String>,
    history: VecDeque<HistoryItem>,
    history_max: usize,
    /// IQs forwarded between occupants and not answered yet, by the id the room gave them.
    pending_iqs: HashMap<String, PendingIq>,
    /// `pending_iqs` keys, oldest first, to forget the oldest when the table is full.
    pending_order: VecDeque<String>,
    /// Counter for the ids of forwarded IQs.
    next_iq: u64,
    /// Created and not yet configured (§10.1.1): only owners may enter.
    pub locked: bool,
    /// The next join is the creator's (status 201).
    fresh: bool,
    /// Destroyed or emptied and removed from the service: whoever still holds a handle must
    /// look the room up again.
    pub gone: bool,
    /// Whether the service archives this room's messages (XEP-0313 on the room JID), for
    /// disco#info.
    pub archived: bool,
    /// The broadcast turn of the last message queued for commit: resolves, or errs, once
    /// it was broadcast (see the crate docs, "Ordering"). The service's, not the room's
    /// logic: kept here because it is guarded by the same lock.
    pub broadcast_turn: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Above this many occupants the room is *quiet*: occupants' presence is not broadcast
    /// (see [`Room::quiet`]). `usize::MAX` (the default) never.
    pub presence_broadcast_max: usize,
}

impl Room {
    /// A room `creator` is creating; locked until configured unless `instant`.
    pub fn create(jid: BareJid, creator: BareJid, instant: bool, history_max: usize) -> Self {
        let mut room = Self::restore(jid, RoomConfig::default(), Vec::new(), history_max);
        room.affiliations.insert(creator, Affiliation::Owner);
        room.locked = !instant;
        room.fresh = true;
        room
    }

    /// A persistent room loaded from the store.
    pub fn restore(
        jid: BareJid,
        config: RoomConfig,
        affiliations: Vec<(BareJid, Affiliation)>,
        history_max: usize,
    ) -> Self {
        Self {
            jid,
            config,
            affiliations: affiliations.into_iter().collect(),
            occupants: HashMap::new(),
            nick_of: HashMap::new(),
            history: VecDeque::new(),
            history_max,
            pending_iqs: HashMap::new(),
            pending_order: VecDeque::new(),
            next_iq: 0,
            locked: false,
            fresh: false,
            gone: false,
            archived: false,
            broadcast_turn: None,
            presence_broadcast_max: usize::MAX,
        }
    }

    /// Whether the room has more occupants than `presence_broadcast_max`
    /// (docs/protocol/confab-groups.md, "Large rooms"). A quiet room neither sends a joiner
    /// everyone's presence nor tells everyone of each join, leave, presence or role change,
    /// which would cost O(occupants) stanzas per event and O(occupants²) to fill the room;
    /// each occupant hears only of itself (status 110), and the occupant count stays in
    /// disco#info and the list with moderators (muc#admin role queries).
    pub fn quiet(&self) -> bool {
        self.occupants.len() > self.presence_broadcast_max
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    /// Whether the session `jid` is in the room.
    pub fn has_occupant(&self, jid: &FullJid) -> bool {
        self.nick_of.contains_key(jid)
    }

    /// Every affiliation, for storing a room that just became persistent.
    pub fn affiliations(&self) -> impl Iterator<Item = (&BareJid, Affiliation)> {
        self.affiliations.iter().map(|(jid, a)| (jid, *a))
    }

    /// Whether `who` may read the room's archive (XEP-0313 §5 leaves it to the room; Confab
    /// follows entry, XEP-0045 §7.2): never outcasts; in a members-only room only members
    /// and up; in a password-protected or locked room only current occupants, since the
    /// room cannot check a password on a query; anyone else in an open room. An occupant
    /// always may, whatever changed since it joined.
    pub fn may_read_archive(&self, who: &FullJid) -> bool {
        self.archive_readable_by(&who.to_bare(), self.has_occupant(who))
    }

    /// [`Room::may_read_archive`] for an account rather than a session (the HTTP API): an
    /// account counts as an occupant when any of its sessions is in the room.
    pub fn may_read_archive_as(&self, who: &BareJid) -> bool {
        let present = self.nick_of.keys().any(|session| session.to_bare() == *who);
        self.archive_readable_by(who, present)
    }

    fn archive_readable_by(&self, who: &BareJid, occupant: bool) -> bool {
        let affiliation = self.affiliation(who);
        if affiliation == Affiliation::Outcast {
            return false;
        }
        if occupant {
            return true;
        }
        if self.config.members_only {
            return affiliation >= Affiliation::Member;
        }
        !(self.locked || self.config.password_protected)
    }

    /// Whether the room should be listed in the service's disco#items.
    pub fn listed(&self) -> bool {
        self.config.public && !self.locked
    }

    fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// The occupant JID (`room/nick`) of the session `jid` when it is a moderator here: who
    /// may retract others' messages (XEP-0425 §4).
    pub fn moderator_jid(&self, jid: &FullJid) -> Option<FullJid> {
        self.occupant_by_jid(jid)
            .filter(|occupant| occupant.role == Role::Moderator)
            .map(|occupant| occupant.room_jid.clone())
    }

    fn occupant_by_jid(&self, jid: &FullJid) -> Option<&Occupant> {
        self.nick_of.get(jid).and_then(|n| self.occupants.get(n))
    }

    /// The role an affiliation gets on entering (§5.1.2).
    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            _ if self.config.moderated => Role::Visitor,
            _ => Role::Participant,
        }
    }

    // -----------------------------------------------------------------------------------
    // Presence: join (§7.2), presence updates, nick change (§7.6), leave (§7.14)

    /// A presence addressed to `room/nick` from a local session.
    pub fn presence(&mut self, stanza: &Stanza, from: &FullJid, to: &FullJid) -> Outcome {
        match stanza.type_attr() {
            None => match self.nick_of.get(from).cloned() {
                None => self.join(stanza, from, to),
                Some(nick) if nick == to.resource().as_str() => self.update(stanza, from, &nick),
                Some(nick) => self.change_nick(stanza, &nick, to),
            },
            Some("unavailable") => self.leave(from, stanza_status(stanza)),
            // Subscriptions, probes and errors mean nothing to a room.
            _ => Outcome::default(),
        }
    }

    fn join(&mut self, stanza: &Stanza, from: &FullJid, to: &FullJid) -> Outcome {
        let nick = to.resource().as_str();
        let bare = from.to_bare();
        let affiliation = self.affiliation(&bare);
        let muc = stanza.element.get_child("x", ns::MUC);
        // §10.1.1: until the owner configures a new room, nobody else may enter.
        if self.locked && affiliation != Affiliation::Owner {
            return Outcome::error(stanza, StanzaErrorCondition::ItemNotFound);
        }
        // §7.2.7: banned users are refused.
        if affiliation == Affiliation::Outcast {
            return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
        }
        // §7.2.6: members-only rooms admit members and above.
        if self.config.members_only && affiliation < Affiliation::Member {
            return Outcome::error(stanza, StanzaErrorCondition::RegistrationRequired);
        }
        // §7.2.5: the password; owners manage the room and may always enter.
        if self.config.needs_password() && affiliation < Affiliation::Owner {
            let given = muc
                .and_then(|x| x.get_child("password", ns::MUC))
                .map(Element::text);
            if given.as_deref() != Some(self.config.secret.as_str()) {
                return Outcome::error(stanza, StanzaErrorCondition::NotAuthorized);
            }
        }
        // §7.2.9: someone else holds the nick; another session of the same account joins
        // it (multi-session).
        if let Some(existing) = self.occupants.get_mut(nick) {
            if existing.bare != bare {
                return Outcome::error(stanza, StanzaErrorCondition::Conflict);
            }
            existing.sessions.push(Session {
                jid: from.clone(),
                presence: presence_children(stanza),
            });
            let occupant = existing.clone();
            self.nick_of.insert(from.clone(), nick.to_owned());
            return self.enter(&occupant, from, muc, false);
        }
        // §7.2.10: the room is full; admins and owners still get in.
        let max = self.config.max_users as usize;
        if max > 0 && self.occupants.len() >= max && affiliation < Affiliation::Admin {
            return Outcome::error(stanza, StanzaErrorCondition::ServiceUnavailable);
        }

        let occupant = Occupant {
            room_jid: to.clone(),
            bare,
            role: self.default_role(affiliation),
            sessions: vec![Session {
                jid: from.clone(),
                presence: presence_children(stanza),
            }],
        };
        self.occupants.insert(nick.to_owned(), occupant.clone());
        self.nick_of.insert(from.clone(), nick.to_owned());
        self.enter(&occupant, from, muc, true)
    }

    /// What entering sends to the session `session` (§7.2.3): the others' presence, then
    /// (when `announce`) the occupant's to the others, its self-presence (which tells the
    /// client the room's presence is complete), the history and last the subject. Also the
    /// answer to a rejoin and to a second session joining a nick.
    fn enter(
        &mut self,
        occupant: &Occupant,
        session: &FullJid,
        muc: Option<&Element>,
        announce: bool,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let quiet = self.quiet();
        let others = self
            .occupants
            .values()
            .filter(|o| !quiet && o.room_jid != occupant.room_jid);
        for other in others {
            outcome
                .stanzas
                .push(self.presence_about(other, occupant, session, &Extra::default()));
        }
        if announce {
            outcome
                .stanzas
                .extend(self.presence_to_others(occupant, &Extra::default()));
        }
        let mut self_codes = vec![];
        if self.config.whois == Whois::Anyone {
            self_codes.push(status::NON_ANONYMOUS);
        }
        if std::mem::take(&mut self.fresh) {
            self_codes.push(status::CREATED);
        }
        outcome.stanzas.push(self.presence_about(
            occupant,
            occupant,
            session,
            &Extra {
                codes: self_codes,
                ..Extra::default()
            },
        ));
        // §7.2.12 history, then §7.2.15 the subject, always last and even when empty.
        let request = HistoryRequest::parse(
            muc.and_then(|x| x.get_child("history", ns::MUC)),
            Utc::now(),
        );
        for message in self.history_for(&request) {
            let from = message.attr("from").and_then(|f| Jid::new(f).ok());
            outcome.stanzas.push(deliver(message, from, session));
        }
        outcome.stanzas.push(self.subject_message(session));
        outcome
    }

    /// A presence change of someone already in the room, broadcast to all (§7.7). With the
    /// MUC `<x/>` it is a join from a client that thinks it is out (say, after a
    /// reconnection that kept its full JID): it gets the whole entry sequence again.
    fn update(&mut self, stanza: &Stanza, from: &FullJid, nick: &str) -> Outcome {
        let Some(occupant) = self.occupants.get_mut(nick) else {
            return Outcome::default();
        };
        if let Some(session) = occupant.sessions.iter_mut().find(|s| s.jid == *from) {
            session.presence = presence_children(stanza);
        }
        let occupant = occupant.clone();
        match stanza.element.get_child("x", ns::MUC) {
            Some(muc) => self.enter(&occupant, from, Some(muc), true),
            None => self.broadcast_presence(&occupant, &Extra::default()),
        }
    }

    /// §7.6: unavailable with 303 under the old nick, then available under the new one.
    fn change_nick(&mut self, stanza: &Stanza, old: &str, to: &FullJid) -> Outcome {
        let new = to.resource().as_str();
        if self.occupants.contains_key(new) {
            return Outcome::error(stanza, StanzaErrorCondition::Conflict);
        }
        // One session of several cannot take the shared nick with it: the others would be
        // renamed without asking. It may leave and join under the new nick instead.
        if self
            .occupants
            .get(old)
            .is_some_and(|o| o.sessions.len() > 1)
        {
            return Outcome::error(stanza, StanzaErrorCondition::NotAcceptable);
        }
        let Some(mut occupant) = self.occupants.remove(old) else {
            return Outcome::default();
        };
        let extra = Extra {
            unavailable: true,
            codes: vec![status::NICK_CHANGED],
            new_nick: Some(new.to_owned()),
            ..Extra::default()
        };
        let mut outcome = self.broadcast_presence(&occupant, &extra);
        occupant.room_jid = to.clone();
        let presence = presence_children(stanza);
        for session in &mut occupant.sessions {
            session.presence.clone_from(&presence);
            self.nick_of.insert(session.jid.clone(), new.to_owned());
        }
        self.occupants.insert(new.to_owned(), occupant.clone());
        outcome.stanzas.extend(
            self.broadcast_presence(&occupant, &Extra::default())
                .stanzas,
        );
        outcome
    }

    /// The session `from` leaves (§7.14), or its session ended.
    pub fn leave(&mut self, from: &FullJid, status_text: Option<String>) -> Outcome {
        let Some(nick) = self.nick_of.get(from).cloned() else {
            return Outcome::default();
        };
        if let Some(occupant) = self.occupants.get_mut(&nick)
            && occupant.sessions.len() > 1
        {
            // One session of several leaves: only it hears so; the others see a presence
            // change if it was the one representing the occupant.
            let was_primary = occupant.primary().jid == *from;
            let before = occupant.clone();
            occupant.sessions.retain(|s| s.jid != *from);
            let after = occupant.clone();
            self.nick_of.remove(from);
            let mut leaving = before;
            leaving.role = Role::None;
            let mut outcome = Outcome::default();
            outcome.stanzas.push(self.presence_about(
                &leaving,
                &leaving,
                from,
                &Extra {
                    unavailable: true,
                    status_text,
                    ..Extra::default()
                },
            ));
            if was_primary {
                outcome
                    .stanzas
                    .extend(self.broadcast_presence(&after, &Extra::default()).stanzas);
            }
            return outcome;
        }
        self.remove_occupant(
            &nick,
            Extra {
                unavailable: true,
                status_text,
                ..Extra::default()
            },
        )
    }

    /// Broadcasts `extra`'s unavailable presence for `nick` (to it too) and removes it.
    fn remove_occupant(&mut self, nick: &str, extra: Extra) -> Outcome {
        let Some(mut occupant) = self.occupants.get(nick).cloned() else {
            return Outcome::default();
        };
        occupant.role = Role::None;
        let outcome = self.broadcast_presence(&occupant, &extra);
        self.occupants.remove(nick);
        for jid in occupant.session_jids() {
            self.nick_of.remove(jid);
        }
        outcome
    }

    /// The presence of `about` sent to every occupant (itself included, with 110).
    fn broadcast_presence(&self, about: &Occupant, extra: &Extra) -> Outcome {
        let mut outcome = Outcome {
            stanzas: self.presence_to_others(about, extra),
            ..Outcome::default()
        };
        // Sent last so a client that waits for its own presence has seen the others'. Sent
        // also when `about` is no longer in the room (a nick change's unavailable).
        for session in about.session_jids() {
            outcome
                .stanzas
                .push(self.presence_about(about, about, session, extra));
        }
        outcome
    }

    /// `about`'s presence to every other occupant. One element per view, cloned per
    /// recipient: in a big room a broadcast is the same few stanzas many times, not many
    /// stanzas built one by one.
    fn presence_to_others(&self, about: &Occupant, extra: &Extra) -> Vec<Stanza> {
        if self.quiet() {
            return Vec::new();
        }
        let from = Jid::from(about.room_jid.clone());
        let with_jid = self.presence_element(about, extra, true, false);
        let anonymous = (self.config.whois != Whois::Anyone)
            .then(|| self.presence_element(about, extra, false, false));
        let mut stanzas = Vec::with_capacity(self.occupants.len());
        for other in self.occupants.values() {
            if other.room_jid == about.room_jid {
                continue;
            }
            let element = match &anonymous {
                Some(anonymous) if other.role != Role::Moderator => anonymous,
                _ => &with_jid,
            };
            for session in other.session_jids() {
                stanzas.push(address(
                    StanzaKind::Presence,
                    element.clone(),
                    Some(from.clone()),
                    session,
                ));
            }
        }
        stanzas
    }

    /// `about`'s presence as `to` sees it (§7.2.3, §7.2.4: real JIDs only for moderators
    /// unless the room is non-anonymous; one always sees one's own).
    fn presence_about(
        &self,
        about: &Occupant,
        to: &Occupant,
        session: &FullJid,
        extra: &Extra,
    ) -> Stanza {
        let is_self = about.room_jid == to.room_jid;
        let with_jid = is_self || self.config.whois == Whois::Anyone || to.role == Role::Moderator;
        let element = self.presence_element(about, extra, with_jid, is_self);
        address(
            StanzaKind::Presence,
            element,
            Some(about.room_jid.clone().into()),
            session,
        )
    }

    /// The presence of `about` with `from` set and no `to`: the real JID when `with_jid`,
    /// status 110 when `is_self`.
    fn presence_element(
        &self,
        about: &Occupant,
        extra: &Extra,
        with_jid: bool,
        is_self: bool,
    ) -> Element {
        let mut presence = element(
            "presence",
            ns::CLIENT,
            &[("from", &about.room_jid.to_string())],
        );
        if extra.unavailable {
            set_attr(&mut presence, "type", Some("unavailable".to_owned()));
            if let Some(text) = &extra.status_text {
                presence.append_child(text_child("status", ns::CLIENT, text));
            }
        } else {
            for child in &about.primary().presence {
                presence.append_child(child.clone());
            }
        }
        let affiliation = self.affiliation(&about.bare);
        let mut attrs = vec![
            ("affiliation", affiliation.as_str()),
            ("role", about.role.as_str()),
        ];
        let real = about.primary().jid.to_string();
        if with_jid {
            attrs.push(("jid", &real));
        }
        if let Some(nick) = &extra.new_nick {
            attrs.push(("nick", nick));
        }
        let mut item = element("item", ns::MUC_USER, &attrs);
        if let Some(actor) = &extra.actor {
            item.append_child(element("actor", ns::MUC_USER, &[("nick", actor)]));
        }
        if let Some(reason) = &extra.reason {
            item.append_child(text_child("reason", ns::MUC_USER, reason));
        }
        let mut x = element("x", ns::MUC_USER, &[]);
        x.append_child(item);
        if let Some(destroy) = &extra.destroy {
            x.append_child(destroy.clone());
        }
        let self_codes: &[u16] = if is_self { &[status::SELF] } else { &[] };
        let mut codes: Vec<u16> = extra.codes.iter().chain(self_codes).copied().collect();
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            x.append_child(element(
                "status",
                ns::MUC_USER,
                &[("code", &code.to_string())],
            ));
        }
        presence.append_child(x);
        presence
    }

    // -----------------------------------------------------------------------------------
    // Messages: groupchat (§7.4), subject (§8.1), private messages (§7.5), invitations (§7.8)

    /// A message addressed to the room's bare JID.
    pub fn message(&mut self, stanza: &Stanza, from: &FullJid) -> Outcome {
        match stanza.type_attr() {
            Some("groupchat") => self.groupchat(stanza, from),
            Some("error") => Outcome::default(),
            _ => match stanza.element.get_child("x", ns::MUC_USER) {
                Some(x) if x.has_child("invite", ns::MUC_USER) => self.invite(stanza, from, x),
                Some(x) if x.has_child("decline", ns::MUC_USER) => self.decline(from, x),
                // Voice requests (§7.13) and registration are not offered.
                _ => Outcome::error(stanza, StanzaErrorCondition::FeatureNotImplemented),
            },
        }
    }

    fn groupchat(&mut self, stanza: &Stanza, from: &FullJid) -> Outcome {
        // §7.4: only occupants may send to the room.
        let Some(sender) = self.occupant_by_jid(from).cloned() else {
            return Outcome::error(stanza, StanzaErrorCondition::NotAcceptable);
        };
        let subject = stanza.element.get_child("subject", ns::CLIENT);
        let has_body = stanza.element.has_child("body", ns::CLIENT);
        if let Some(subject) = subject.filter(|_| !has_body) {
            // §8.1: moderators, or participants when the room allows it.
            let allowed = sender.role == Role::Moderator
                || (self.config.change_subject && sender.role >= Role::Participant);
            if !allowed {
                return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
            }
            self.config.subject = subject.text();
            self.config.subject_by = sender.nick().to_owned();
            let mut outcome = Outcome::default();
            for session in self.occupants.values().flat_map(Occupant::session_jids) {
                outcome.stanzas.push(self.subject_message(session));
            }
            if self.config.persistent {
                outcome.effects.push(Effect::Save { all: false });
            }
            return outcome;
        }
        // §7.4 / §8.3: a visitor in a moderated room has no voice.
        if sender.role < Role::Participant {
            return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
        }
        let mut message = stanza.element.clone();
        set_attr(&mut message, "to", None);
        set_attr(&mut message, "from", Some(sender.room_jid.to_string()));
        // XEP-0359 §3: the room stamps stanza-ids `by` itself, so any such id a sender put in
        // is a forgery and goes, even when the room adds none.
        strip_stanza_ids_by(&mut message, self.jid.as_str());
        Outcome {
            accepted: Some(message),
            ..Outcome::default()
        }
    }

    /// The copies of an accepted (and, when archived, committed) groupchat message for every
    /// occupant now in the room (§7.4), which it also keeps for history at `stamp`.
    pub fn broadcast(&mut self, message: Element, stamp: DateTime<Utc>) -> Vec<Stanza> {
        let Broadcast {
            message,
            from,
            recipients,
        } = self.fan_out(message, stamp);
        recipients
            .iter()
            .map(|session| deliver(message.clone(), from.clone(), session))
            .collect()
    }

    /// [`Room::broadcast`] as one message and its recipients, for the router to fan out
    /// without a copy per occupant ([`Broadcast`]).
    pub fn fan_out(&mut self, message: Element, stamp: DateTime<Utc>) -> Broadcast {
        let from = message.attr("from").and_then(|f| Jid::new(f).ok());
        let recipients = self
            .occupants
            .values()
            .flat_map(Occupant::session_jids)
            .cloned()
            .collect();
        self.remember(message.clone(), stamp);
        Broadcast {
            message,
            from,
            recipients,
        }
    }

    /// Fills the history ring with archived messages (oldest first, as broadcast) after a
    /// restart, so joins see the same history as before it.
    pub fn seed_history(&mut self, messages: impl IntoIterator<Item = (Element, DateTime<Utc>)>) {
        for (message, stamp) in messages {
            self.remember(message, stamp);
        }
    }

    fn remember(&mut self, message: Element, stamp: DateTime<Utc>) {
        if self.history_max == 0 {
            return;
        }
        let chars = String::from(&message).chars().count();
        if self.history.len() >= self.history_max {
            self.history.pop_front();
        }
        self.history.push_back(HistoryItem {
            message,
            stamp,
            chars,
        });
    }

    /// Replaces the remembered copy of the message the room gave the stanza-id `server_id`
    /// with `amend` of it, so occupants joining after a retraction or correction get what
    /// the archive serves (XEP-0424, XEP-0308), not the original.
    pub fn amend_history(&mut self, server_id: &str, amend: impl FnOnce(&Element) -> Element) {
        let room = self.jid.to_string();
        let ours = |item: &HistoryItem| {
            item.message.children().any(|child| {
                child.is("stanza-id", ns::SID)
                    && child.attr("id") == Some(server_id)
                    && child.attr("by") == Some(room.as_str())
            })
        };
        if let Some(item) = self.history.iter_mut().find(|item| ours(item)) {
            item.message = amend(&item.message);
            item.chars = String::from(&item.message).chars().count();
        }
    }

    /// The newest messages within the request's limits, oldest first, each with an XEP-0203
    /// delay stamped by the room (§7.2.12).
    fn history_for(&self, request: &HistoryRequest) -> Vec<Element> {
        let mut chars = 0;
        let mut picked = Vec::new();
        for item in self.history.iter().rev() {
            if request.max_stanzas.is_some_and(|max| picked.len() >= max) {
                break;
            }
            if request.since.is_some_and(|since| item.stamp < since) {
                break;
            }
            chars += item.chars;
            if request.max_chars.is_some_and(|max| chars > max) {
                break;
            }
            picked.push(item);
        }
        picked
            .into_iter()
            .rev()
            .map(|item| {
                let mut message = item.message.clone();
                message.append_child(element(
                    "delay",
                    ns::DELAY,
                    &[
                        ("from", self.jid.as_str()),
                        (
                            "stamp",
                            &item.stamp.to_rfc3339_opts(SecondsFormat::Millis, true),
                        ),
                    ],
                ));
                message
            })
            .collect()
    }

    /// The subject as a new occupant receives it (§7.2.15), from the nick that set it.
    fn subject_message(&self, to: &FullJid) -> Stanza {
        let from = match self.config.subject_by.as_str() {
            "" => Some(Jid::from(self.jid.clone())),
            nick => self.jid.with_resource_str(nick).ok().map(Jid::from),
        }
        .unwrap_or_else(|| Jid::from(self.jid.clone()));
        let mut message = element("message", ns::CLIENT, &[("type", "groupchat")]);
        message.append_child(text_child("subject", ns::CLIENT, &self.config.subject));
        make(StanzaKind::Message, message, from, to.clone().into())
    }

    /// A message or IQ to `room/nick` (§7.5 private messages, IQs between occupants,
    /// XEP-0410 self-ping).
    pub fn to_occupant(&mut self, stanza: &Stanza, from: &FullJid, nick: &str) -> Outcome {
        if stanza.is_error() || stanza.type_attr() == Some("result") {
            // IQ answers go through `iq_response`; errors about private messages are dropped.
            return Outcome::default();
        }
        let sender = self.occupant_by_jid(from).cloned();
        // §7.5: private messages of type groupchat are refused.
        if stanza.kind == StanzaKind::Message && stanza.type_attr() == Some("groupchat") {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        }
        // §7.5 and XEP-0410 §3: only occupants may address other occupants.
        let Some(sender) = sender else {
            return Outcome::error(stanza, StanzaErrorCondition::NotAcceptable);
        };
        let is_ping = stanza.kind == StanzaKind::Iq
            && stanza.payload().is_some_and(|p| p.is("ping", ns::PING));
        if is_ping && sender.nick() == nick {
            // XEP-0410: the client is still joined under this nick.
            return Outcome::result(stanza, None);
        }
        let Some(target) = self.occupants.get(nick) else {
            return Outcome::error(stanza, StanzaErrorCondition::ItemNotFound);
        };
        if stanza.kind == StanzaKind::Iq {
            let target = target.clone();
            return self.forward_iq(stanza, from, &sender, &target);
        }
        // §7.5: to every session of the nick, marked as a private message from an occupant.
        let mut message = stanza.element.clone();
        message.append_child(element("x", ns::MUC_USER, &[]));
        set_attr(&mut message, "from", Some(sender.room_jid.to_string()));
        let from = Jid::from(sender.room_jid.clone());
        Outcome {
            stanzas: target
                .session_jids()
                .map(|session| deliver(message.clone(), Some(from.clone()), session))
                .collect(),
            ..Outcome::default()
        }
    }

    /// An IQ get/set between occupants: sent on from the sender's room nick under an id of
    /// the room's own, so the answer can be told apart from any other occupant's IQ with
    /// the same id and routed back with the original one. vCard requests go to the
    /// occupant's bare JID, where the server answers for the account (RFC 6121 §8.5.1,
    /// the usual practice for XEP-0054 in rooms).
    fn forward_iq(
        &mut self,
        stanza: &Stanza,
        from: &FullJid,
        sender: &Occupant,
        target: &Occupant,
    ) -> Outcome {
        // Other IQs go to the session representing the nick.
        let to: Jid = if stanza.payload().is_some_and(|p| p.ns() == ns::VCARD) {
            target.bare.clone().into()
        } else {
            target.primary().jid.clone().into()
        };
        self.next_iq += 1;
        let id = format!("muc-iq-{}", self.next_iq);
        if self.pending_order.len() >= MAX_PENDING_IQS
            && let Some(oldest) = self.pending_order.pop_front()
        {
            // Unanswered requests are forgotten oldest first; a late answer is dropped.
            self.pending_iqs.remove(&oldest);
        }
        self.pending_iqs.insert(
            id.clone(),
            PendingIq {
                requester: from.clone(),
                original_id: stanza.id().map(str::to_owned),
                target: to.clone(),
                target_room_jid: target.room_jid.clone(),
            },
        );
        self.pending_order.push_back(id.clone());
        let mut forwarded = forward(stanza, &sender.room_jid, &to);
        set_attr(&mut forwarded.element, "id", Some(id));
        Outcome {
            stanzas: vec![forwarded],
            ..Outcome::default()
        }
    }

    /// The answer to an IQ the room forwarded between occupants: back to the requester with
    /// its own id, from the nick it asked. Anything that does not match a pending request is
    /// dropped. `from` may be a bare JID: the server answers vCard requests for the account.
    pub fn iq_response(&mut self, stanza: &Stanza, from: &Jid) -> Outcome {
        let Some(id) = stanza.id() else {
            return Outcome::default();
        };
        let matches = self
            .pending_iqs
            .get(id)
            .is_some_and(|p| p.target.as_str() == from.as_str());
        if !matches {
            return Outcome::default();
        }
        let Some(pending) = self.pending_iqs.remove(id) else {
            return Outcome::default();
        };
        self.pending_order.retain(|p| p != id);
        let mut answer = forward(
            stanza,
            &pending.target_room_jid,
            &pending.requester.clone().into(),
        );
        set_attr(&mut answer.element, "id", pending.original_id);
        Outcome {
            stanzas: vec![answer],
            ..Outcome::default()
        }
    }

    /// §7.8.2 mediated invitation.
    fn invite(&mut self, stanza: &Stanza, from: &FullJid, x: &Element) -> Outcome {
        let Some(sender) = self.occupant_by_jid(from).cloned() else {
            return Outcome::error(stanza, StanzaErrorCondition::NotAcceptable);
        };
        let affiliation = self.affiliation(&from.to_bare());
        let may_invite = self.config.allow_invites
            || sender.role == Role::Moderator
            || affiliation >= Affiliation::Admin;
        if !may_invite {
            return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
        }
        let mut outcome = Outcome::default();
        let mut invitees = Vec::new();
        for invite in x.children().filter(|c| c.is("invite", ns::MUC_USER)) {
            let Some(to) = invite.attr("to").and_then(|t| BareJid::new(t).ok()) else {
                return Outcome::error(stanza, StanzaErrorCondition::JidMalformed);
            };
            invitees.push((
                to,
                invite.get_child("reason", ns::MUC_USER).map(Element::text),
            ));
        }
        for (to, reason) in invitees {
            // §9.3 via §7.8.2: in a members-only room the invitee becomes a member when the
            // inviter may grant membership (admins, or anyone when invitations are open).
            if self.config.members_only && self.affiliation(&to) < Affiliation::Member {
                self.affiliations.insert(to.clone(), Affiliation::Member);
                if self.config.persistent {
                    outcome
                        .effects
                        .push(Effect::SetAffiliation(to.clone(), Affiliation::Member));
                }
            }
            let inviter = from.to_bare().to_string();
            let mut invite = element("invite", ns::MUC_USER, &[("from", &inviter)]);
            if let Some(reason) = &reason {
                invite.append_child(text_child("reason", ns::MUC_USER, reason));
            }
            let mut x = element("x", ns::MUC_USER, &[]);
            x.append_child(invite);
            if self.config.needs_password() {
                x.append_child(text_child("password", ns::MUC_USER, &self.config.secret));
            }
            let mut message = element("message", ns::CLIENT, &[]);
            message.append_child(x);
            outcome.stanzas.push(make(
                StanzaKind::Message,
                message,
                self.jid.clone().into(),
                to.into(),
            ));
        }
        outcome
    }

    /// §7.8.2: a declined invitation goes back to the inviter, from the room.
    fn decline(&mut self, from: &FullJid, x: &Element) -> Outcome {
        let Some(decline) = x.get_child("decline", ns::MUC_USER) else {
            return Outcome::default();
        };
        let Some(to) = decline.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return Outcome::default();
        };
        let decliner = from.to_bare().to_string();
        let mut out = element("decline", ns::MUC_USER, &[("from", &decliner)]);
        if let Some(reason) = decline.get_child("reason", ns::MUC_USER) {
            out.append_child(reason.clone());
        }
        let mut x = element("x", ns::MUC_USER, &[]);
        x.append_child(out);
        let mut message = element("message", ns::CLIENT, &[]);
        message.append_child(x);
        Outcome {
            stanzas: vec![make(
                StanzaKind::Message,
                message,
                self.jid.clone().into(),
                to,
            )],
            ..Outcome::default()
        }
    }

    // -----------------------------------------------------------------------------------
    // IQs to the room: disco (§6.4), muc#admin (§8, §9), muc#owner (§10)

    /// An IQ get/set addressed to the room's bare JID.
    pub fn iq(&mut self, stanza: &Stanza, from: &FullJid) -> Outcome {
        let Some(payload) = stanza.payload() else {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        };
        let get = stanza.type_attr() == Some("get");
        match (payload.ns().as_str(), get) {
            (ns::DISCO_INFO, true) => Outcome::result(stanza, Some(self.disco_info())),
            (ns::DISCO_ITEMS, true) => {
                Outcome::result(stanza, Some(Element::bare("query", ns::DISCO_ITEMS)))
            }
            (ns::PING, true) => Outcome::result(stanza, None),
            (ns::MUC_ADMIN, true) => self.admin_get(stanza, from, payload),
            (ns::MUC_ADMIN, false) => self.admin_set(stanza, from, payload),
            (ns::MUC_OWNER, true) => {
                if self.affiliation(&from.to_bare()) != Affiliation::Owner {
                    return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
                }
                let mut query = Element::bare("query", ns::MUC_OWNER);
                query.append_child(self.config.form());
                Outcome::result(stanza, Some(query))
            }
            (ns::MUC_OWNER, false) => self.owner_set(stanza, from, payload),
            _ => Outcome::error(stanza, StanzaErrorCondition::ServiceUnavailable),
        }
    }

    fn disco_info(&self) -> Element {
        let mut query = Element::bare("query", ns::DISCO_INFO);
        let name = if self.config.name.is_empty() {
            self.jid.node().map(|n| n.as_str()).unwrap_or_default()
        } else {
            &self.config.name
        };
        query.append_child(element(
            "identity",
            ns::DISCO_INFO,
            &[("category", "conference"), ("type", "text"), ("name", name)],
        ));
        // XEP-0425 §3: moderation works on the archive, so only archived rooms offer it.
        let archive = self.archived.then_some([ns::MAM, ns::MODERATE]);
        for feature in [ns::DISCO_INFO]
            .into_iter()
            .chain(archive.into_iter().flatten())
            .chain(self.config.features())
        {
            query.append_child(element("feature", ns::DISCO_INFO, &[("var", feature)]));
        }
        // §15.5.4 muc#roominfo.
        let mut form = element("x", ns::DATA_FORMS, &[("type", "result")]);
        form.append_child(crate::model::form_field(
            "FORM_TYPE",
            "hidden",
            None,
            &[ns::MUC_ROOMINFO],
        ));
        let occupants = self.occupants.len().to_string();
        for (var, value) in [
            ("muc#roominfo_description", self.config.description.as_str()),
            ("muc#roominfo_occupants", occupants.as_str()),
            ("muc#roominfo_subject", self.config.subject.as_str()),
            (
                "muc#roomconfig_changesubject",
                if self.config.change_subject { "1" } else { "0" },
            ),
        ] {
            form.append_child(crate::model::form_field(var, "text-single", None, &[value]));
        }
        // Tells clients why they see no occupants' presence (docs/protocol/confab-groups.md,
        // "Large rooms"): an extra field, which XEP-0128 allows in a registered form.
        if self.presence_broadcast_max != usize::MAX {
            let max = self.presence_broadcast_max.to_string();
            form.append_child(crate::model::form_field(
                "confab#roominfo_presence_broadcast_max",
                "text-single",
                None,
                &[max.as_str()],
            ));
        }
        query.append_child(form);
        query
    }

    /// §8.5 / §9.1 / §9.5 / §9.8 / §10.5: role and affiliation lists.
    fn admin_get(&self, stanza: &Stanza, from: &FullJid, query: &Element) -> Outcome {
        let Some(item) = query.get_child("item", ns::MUC_ADMIN) else {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        };
        let actor_role = self.occupant_by_jid(from).map_or(Role::None, |o| o.role);
        let actor_affiliation = self.affiliation(&from.to_bare());
        let mut result = Element::bare("query", ns::MUC_ADMIN);
        if let Some(role) = item.attr("role").and_then(Role::parse) {
            if actor_role != Role::Moderator {
                return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
            }
            let mut occupants: Vec<&Occupant> =
                self.occupants.values().filter(|o| o.role == role).collect();
            occupants.sort_by(|a, b| a.nick().cmp(b.nick()));
            for o in occupants {
                let affiliation = self.affiliation(&o.bare);
                let real = o.primary().jid.to_string();
                result.append_child(element(
                    "item",
                    ns::MUC_ADMIN,
                    &[
                        ("affiliation", affiliation.as_str()),
                        ("jid", &real),
                        ("nick", o.nick()),
                        ("role", role.as_str()),
                    ],
                ));
            }
        } else if let Some(affiliation) = item
            .attr("affiliation")
            .and_then(Affiliation::parse)
            .filter(|a| *a != Affiliation::None)
        {
            if actor_affiliation < Affiliation::Admin {
                return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
            }
            let mut jids: Vec<&BareJid> = self
                .affiliations
                .iter()
                .filter(|(_, a)| **a == affiliation)
                .map(|(j, _)| j)
                .collect();
            jids.sort();
            for jid in jids {
                result.append_child(element(
                    "item",
                    ns::MUC_ADMIN,
                    &[("affiliation", affiliation.as_str()), ("jid", jid.as_str())],
                ));
            }
        } else {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        }
        Outcome::result(stanza, Some(result))
    }

    /// §8.2–§8.4, §9.1–§9.7, §10.3–§10.7: role and affiliation changes. Every item is
    /// checked before any is applied, so a request is applied whole or not at all.
    fn admin_set(&mut self, stanza: &Stanza, from: &FullJid, query: &Element) -> Outcome {
        let actor = self.occupant_by_jid(from).cloned();
        let actor_role = actor.as_ref().map_or(Role::None, |o| o.role);
        let actor_affiliation = self.affiliation(&from.to_bare());
        let mut changes = Vec::new();
        for item in query.children().filter(|c| c.is("item", ns::MUC_ADMIN)) {
            let reason = item.get_child("reason", ns::MUC_ADMIN).map(Element::text);
            let change = if let Some(role) = item.attr("role") {
                let (Some(role), Some(nick)) = (Role::parse(role), item.attr("nick")) else {
                    return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
                };
                let Some(target) = self.occupants.get(nick) else {
                    return Outcome::error(stanza, StanzaErrorCondition::ItemNotFound);
                };
                let target_affiliation = self.affiliation(&target.bare);
                if let Err(condition) = role_change_allowed(
                    actor_role,
                    actor_affiliation,
                    target.role,
                    target_affiliation,
                    role,
                ) {
                    return Outcome::error(stanza, condition);
                }
                Change::Role {
                    nick: nick.to_owned(),
                    role,
                    reason,
                }
            } else if let Some(affiliation) = item.attr("affiliation") {
                let Some(affiliation) = Affiliation::parse(affiliation) else {
                    return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
                };
                // An item may name the target by nick when it is present (§9.1 allows it).
                let jid = match (item.attr("jid"), item.attr("nick")) {
                    (Some(jid), _) => match BareJid::new(jid) {
                        Ok(jid) => jid,
                        Err(_) => {
                            return Outcome::error(stanza, StanzaErrorCondition::JidMalformed);
                        }
                    },
                    (None, Some(nick)) => match self.occupants.get(nick) {
                        Some(o) => o.bare.clone(),
                        None => return Outcome::error(stanza, StanzaErrorCondition::ItemNotFound),
                    },
                    (None, None) => {
                        return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
                    }
                };
                let current = self.affiliation(&jid);
                if let Err(condition) =
                    affiliation_change_allowed(actor_affiliation, current, affiliation)
                {
                    return Outcome::error(stanza, condition);
                }
                Change::Affiliation {
                    jid,
                    affiliation,
                    reason,
                }
            } else {
                return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
            };
            changes.push(change);
        }
        if changes.is_empty() {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        }
        // §10.6: the last owner cannot leave the room without one.
        let owners_after = {
            let mut owners: HashMap<&BareJid, bool> = self
                .affiliations
                .iter()
                .map(|(j, a)| (j, *a == Affiliation::Owner))
                .collect();
            for change in &changes {
                if let Change::Affiliation {
                    jid, affiliation, ..
                } = change
                {
                    owners.insert(jid, *affiliation == Affiliation::Owner);
                }
            }
            owners.values().filter(|o| **o).count()
        };
        if owners_after == 0 {
            return Outcome::error(stanza, StanzaErrorCondition::Conflict);
        }

        let actor_nick = actor.as_ref().map(|a| a.nick().to_owned());
        let mut outcome = Outcome::default();
        for change in changes {
            let applied = match change {
                Change::Role { nick, role, reason } => {
                    self.apply_role(&nick, role, reason, actor_nick.clone())
                }
                Change::Affiliation {
                    jid,
                    affiliation,
                    reason,
                } => self.apply_affiliation(jid, affiliation, reason, actor_nick.clone()),
            };
            outcome.stanzas.extend(applied.stanzas);
            outcome.effects.extend(applied.effects);
        }
        outcome.stanzas.push(stanza.iq_result(None));
        outcome
    }

    fn apply_role(
        &mut self,
        nick: &str,
        role: Role,
        reason: Option<String>,
        actor: Option<String>,
    ) -> Outcome {
        if role == Role::None {
            // §8.2 kick.
            return self.remove_occupant(
                nick,
                Extra {
                    unavailable: true,
                    codes: vec![status::KICKED],
                    reason,
                    actor,
                    ..Extra::default()
                },
            );
        }
        let Some(occupant) = self.occupants.get_mut(nick) else {
            return Outcome::default();
        };
        occupant.role = role;
        let occupant = occupant.clone();
        self.broadcast_presence(
            &occupant,
            &Extra {
                reason,
                actor,
                ..Extra::default()
            },
        )
    }

    fn apply_affiliation(
        &mut self,
        jid: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
        actor: Option<String>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        if affiliation == Affiliation::None {
            self.affiliations.remove(&jid);
        } else {
            self.affiliations.insert(jid.clone(), affiliation);
        }
        if self.config.persistent {
            outcome
                .effects
                .push(Effect::SetAffiliation(jid.clone(), affiliation));
        }
        let present: Vec<String> = self
            .occupants
            .values()
            .filter(|o| o.bare == jid)
            .map(|o| o.nick().to_owned())
            .collect();
        for nick in present {
            let removal = if affiliation == Affiliation::Outcast {
                Some(status::BANNED)
            } else if self.config.members_only && affiliation < Affiliation::Member {
                Some(status::AFFILIATION_CHANGED)
            } else {
                None
            };
            let extra = Extra {
                reason: reason.clone(),
                actor: actor.clone(),
                ..Extra::default()
            };
            let applied = match removal {
                Some(code) => self.remove_occupant(
                    &nick,
                    Extra {
                        unavailable: true,
                        codes: vec![code],
                        ..extra
                    },
                ),
                None => {
                    let default = self.default_role(affiliation);
                    let Some(occupant) = self.occupants.get_mut(&nick) else {
                        continue;
                    };
                    // A moderator by affiliation drops to the new default; a voice granted by
                    // a moderator survives a membership change.
                    occupant.role =
                        if affiliation >= Affiliation::Admin || occupant.role == Role::Moderator {
                            default
                        } else {
                            occupant.role.max(default)
                        };
                    let occupant = occupant.clone();
                    self.broadcast_presence(&occupant, &extra)
                }
            };
            outcome.stanzas.extend(applied.stanzas);
        }
        outcome
    }

    /// §10.1–§10.2 configuration and §10.9 destruction.
    fn owner_set(&mut self, stanza: &Stanza, from: &FullJid, query: &Element) -> Outcome {
        if self.affiliation(&from.to_bare()) != Affiliation::Owner {
            return Outcome::error(stanza, StanzaErrorCondition::Forbidden);
        }
        if let Some(destroy) = query.get_child("destroy", ns::MUC_OWNER) {
            let mut outcome = self.destroy(destroy);
            outcome.stanzas.push(stanza.iq_result(None));
            return outcome;
        }
        let Some(form) = query.get_child("x", ns::DATA_FORMS) else {
            return Outcome::error(stanza, StanzaErrorCondition::BadRequest);
        };
        match form.attr("type") {
            Some("cancel") => {
                // §10.1.3: cancelling the initial configuration destroys the new room.
                if self.locked {
                    let mut outcome = self.destroy(&Element::bare("destroy", ns::MUC_OWNER));
                    outcome.stanzas.push(stanza.iq_result(None));
                    return outcome;
                }
                Outcome::result(stanza, None)
            }
            Some("submit") => {
                let was_persistent = self.config.persistent;
                let was_members_only = self.config.members_only;
                let was_locked = self.locked;
                let before = self.config.clone();
                if let Err(error) = self.config.apply_form(form) {
                    return Outcome::error(
                        stanza,
                        StanzaError::new(StanzaErrorCondition::NotAcceptable)
                            .with_text(error.to_string()),
                    );
                }
                // §10.1.2 instant room (empty form) or §10.1.3 reserved room: unlocked now.
                self.locked = false;
                let mut outcome = Outcome::default();
                match (was_persistent, self.config.persistent) {
                    (false, true) => outcome.effects.push(Effect::Save { all: true }),
                    (true, true) => outcome.effects.push(Effect::Save { all: false }),
                    (true, false) => outcome.effects.push(Effect::Delete),
                    (false, false) => {}
                }
                if self.config.members_only && !was_members_only {
                    // §10.2, status 322 (§15.2): non-members leave a room that became members-only.
                    let outsiders: Vec<String> = self
                        .occupants
                        .values()
                        .filter(|o| self.affiliation(&o.bare) < Affiliation::Member)
                        .map(|o| o.nick().to_owned())
                        .collect();
                    for nick in outsiders {
                        let removed = self.remove_occupant(
                            &nick,
                            Extra {
                                unavailable: true,
                                codes: vec![status::MEMBERS_ONLY],
                                ..Extra::default()
                            },
                        );
                        outcome.stanzas.extend(removed.stanzas);
                    }
                }
                // §10.2.1: occupants learn that the configuration changed (not on the
                // initial configuration of a locked room, where only the owner is inside).
                if !was_locked && before != self.config {
                    let mut codes = vec![status::CONFIG_CHANGED];
                    match (before.whois, self.config.whois) {
                        (Whois::Moderators, Whois::Anyone) => {
                            codes.push(status::NOW_NON_ANONYMOUS);
                        }
                        (Whois::Anyone, Whois::Moderators) => {
                            codes.push(status::NOW_SEMI_ANONYMOUS);
                        }
                        _ => {}
                    }
                    outcome.stanzas.extend(self.config_notice(&codes));
                }
                outcome.stanzas.push(stanza.iq_result(None));
                outcome
            }
            _ => Outcome::error(stanza, StanzaErrorCondition::BadRequest),
        }
    }

    /// §10.2.1: the message telling every occupant that the configuration changed, with the
    /// status `codes` (104 and the anonymity ones).
    fn config_notice(&self, codes: &[u16]) -> Vec<Stanza> {
        let mut x = element("x", ns::MUC_USER, &[]);
        for code in codes {
            x.append_child(element(
                "status",
                ns::MUC_USER,
                &[("code", &code.to_string())],
            ));
        }
        let mut notice = element("message", ns::CLIENT, &[("type", "groupchat")]);
        notice.append_child(x);
        set_attr(&mut notice, "from", Some(self.jid.to_string()));
        let from = Some(Jid::from(self.jid.clone()));
        self.occupants
            .values()
            .flat_map(Occupant::session_jids)
            .map(|session| deliver(notice.clone(), from.clone(), session))
            .collect()
    }

    // -----------------------------------------------------------------------------------
    // Groups (docs/protocol/confab-groups.md): the same rules as the XEP-0045 admin and
    // owner use cases, for requests that come from the HTTP API as an account, not a session.

    /// A group `creator` makes through the API: persistent, members-only, hidden, open to
    /// every member's real JID, unlocked, with `members` as members.
    pub fn create_group(
        jid: BareJid,
        creator: BareJid,
        members: impl IntoIterator<Item = BareJid>,
        config: RoomConfig,
        history_max: usize,
    ) -> Self {
        let mut room = Self::restore(jid, config, Vec::new(), history_max);
        for member in members {
            room.affiliations.insert(member, Affiliation::Member);
        }
        room.affiliations.insert(creator, Affiliation::Owner);
        room
    }

    /// The affiliation of an account (`none` when it has none).
    pub fn affiliation_of(&self, jid: &BareJid) -> Affiliation {
        self.affiliation(jid)
    }

    /// Members, admins and owners: who gets a group's messages everywhere.
    pub fn members(&self) -> impl Iterator<Item = (&BareJid, Affiliation)> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a >= Affiliation::Member)
            .map(|(jid, a)| (jid, *a))
    }

    /// The account of the occupant with nick `nick`: exact match first, then ignoring case
    /// (for `@nick` mentions, crate::mentions).
    pub fn occupant_account(&self, nick: &str) -> Option<&BareJid> {
        let occupant = self.occupants.get(nick).or_else(|| {
            let nick = nick.to_lowercase();
            self.occupants
                .iter()
                .find(|(n, _)| n.to_lowercase() == nick)
                .map(|(_, o)| o)
        })?;
        Some(&occupant.bare)
    }

    /// Sets a group's name, avatar and announcement (those given) as `actor`, who must be an
    /// admin or owner. Occupants get the §10.2.1 status 104 notice when anything changed.
    pub fn set_group_meta(
        &mut self,
        actor: &BareJid,
        name: Option<String>,
        avatar: Option<String>,
        announcement: Option<String>,
    ) -> Result<Outcome, StanzaErrorCondition> {
        if self.affiliation(actor) < Affiliation::Admin {
            return Err(StanzaErrorCondition::Forbidden);
        }
        let before = self.config.clone();
        if let Some(name) = name {
            self.config.name = name;
        }
        if let Some(avatar) = avatar {
            self.config.avatar = avatar;
        }
        if let Some(announcement) = announcement {
            self.config.announcement = announcement;
        }
        let mut outcome = Outcome::default();
        if before != self.config {
            outcome.stanzas = self.config_notice(&[status::CONFIG_CHANGED]);
            if self.config.persistent {
                outcome.effects.push(Effect::Save { all: false });
            }
        }
        Ok(outcome)
    }

    /// Changes `jid`'s affiliation as the account `actor` under the §9/§10 rules (an admin
    /// manages members, an owner everyone), except that anyone below owner may drop their own
    /// affiliation (leave the group). The last owner cannot go. Occupants see what the
    /// XEP-0045 admin use cases show them.
    pub fn change_affiliation(
        &mut self,
        actor: &BareJid,
        jid: BareJid,
        affiliation: Affiliation,
    ) -> Result<Outcome, StanzaErrorCondition> {
        let current = self.affiliation(&jid);
        let leaving = *actor == jid && affiliation == Affiliation::None;
        if !(leaving && current < Affiliation::Owner) {
            affiliation_change_allowed(self.affiliation(actor), current, affiliation)?;
        }
        let owners_after = self
            .affiliations
            .iter()
            .filter(|(j, a)| **a == Affiliation::Owner && **j != jid)
            .count()
            + usize::from(affiliation == Affiliation::Owner);
        if owners_after == 0 {
            return Err(StanzaErrorCondition::Conflict);
        }
        if current == affiliation {
            return Ok(Outcome::default());
        }
        Ok(self.apply_affiliation(jid, affiliation, None, None))
    }

    /// §10.9: everyone leaves with the `<destroy/>` (alternate venue, reason); the room is
    /// gone.
    pub fn destroy(&mut self, destroy: &Element) -> Outcome {
        let mut notice = element("destroy", ns::MUC_USER, &[]);
        if let Some(venue) = destroy.attr("jid") {
            notice = element("destroy", ns::MUC_USER, &[("jid", venue)]);
        }
        if let Some(reason) = destroy.get_child("reason", ns::MUC_OWNER) {
            notice.append_child(text_child("reason", ns::MUC_USER, &reason.text()));
        }
        let mut outcome = Outcome::default();
        let extra = Extra {
            unavailable: true,
            destroy: Some(notice),
            ..Extra::default()
        };
        let nicks: Vec<String> = self.occupants.keys().cloned().collect();
        // Everyone gets only their own unavailable presence: the others leave at once.
        for nick in nicks {
            if let Some(mut occupant) = self.occupants.remove(&nick) {
                occupant.role = Role::None;
                for session in occupant.session_jids() {
                    outcome
                        .stanzas
                        .push(self.presence_about(&occupant, &occupant, session, &extra));
                }
            }
        }
        self.nick_of.clear();
        if self.config.persistent {
            outcome.effects.push(Effect::Delete);
        }
        self.gone = true;
        outcome
    }
}

/// Optional parts of an occupant presence.
#[derive(Debug, Default)]
struct Extra {
    unavailable: bool,
    /// Status codes for every recipient (110 is added for the occupant itself).
    codes: Vec<u16>,
    status_text: Option<String>,
    new_nick: Option<String>,
    reason: Option<String>,
    actor: Option<String>,
    destroy: Option<Element>,
}

/// One checked change of a `muc#admin` set.
enum Change {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
    },
}

/// §5.1.3 / §8 / §9.6: who may change an occupant's role.
fn role_change_allowed(
    actor_role: Role,
    actor_affiliation: Affiliation,
    target_role: Role,
    target_affiliation: Affiliation,
    role: Role,
) -> Result<(), StanzaErrorCondition> {
    if actor_role != Role::Moderator {
        return Err(StanzaErrorCondition::Forbidden);
    }
    // Granting or revoking moderator status is an admin's business (§9.6, §9.7).
    if (role == Role::Moderator || target_role == Role::Moderator)
        && role != Role::None
        && actor_affiliation < Affiliation::Admin
    {
        return Err(StanzaErrorCondition::Forbidden);
    }
    // §8.2, §8.4: an admin or owner cannot be kicked or silenced by someone who does not
    // outrank them.
    if role < target_role
        && target_affiliation >= Affiliation::Admin
        && actor_affiliation <= target_affiliation
    {
        return Err(StanzaErrorCondition::NotAllowed);
    }
    Ok(())
}

/// §9 / §10: admins manage members and outcasts below them; owners manage everything.
fn affiliation_change_allowed(
    actor: Affiliation,
    current: Affiliation,
    new: Affiliation,
) -> Result<(), StanzaErrorCondition> {
    match actor {
        Affiliation::Owner => Ok(()),
        Affiliation::Admin if current < Affiliation::Admin && new < Affiliation::Admin => Ok(()),
        Affiliation::Admin => Err(StanzaErrorCondition::NotAllowed),
        _ => Err(StanzaErrorCondition::Forbidden),
    }
}

/// The children of a presence others should see: everything but the MUC extensions.
fn presence_children(stanza: &Stanza) -> Vec<Element> {
    stanza
        .element
        .children()
        .filter(|c| c.ns() != ns::MUC && c.ns() != ns::MUC_USER)
        .cloned()
        .collect()
}

/// The `<status/>` text of an unavailable presence, passed on to the others (§7.14).
fn stanza_status(stanza: &Stanza) -> Option<String> {
    stanza
        .element
        .get_child("status", ns::CLIENT)
        .map(Element::text)
}

/// Builds a stanza with both addresses set on the element and the envelope.
fn make(kind: StanzaKind, mut element: Element, from: Jid, to: Jid) -> Stanza {
    set_attr(&mut element, "from", Some(from.as_str().to_owned()));
    set_attr(&mut element, "to", Some(to.as_str().to_owned()));
    Stanza {
        kind,
        to: Some(to),
        from: Some(from),
        element,
    }
}

/// A prepared stanza (with `from` set on the element) addressed to one occupant; `from` is
/// that attribute, passed in parsed so a broadcast does not parse it once per recipient.
fn address(kind: StanzaKind, mut element: Element, from: Option<Jid>, to: &FullJid) -> Stanza {
    set_attr(&mut element, "to", Some(to.to_string()));
    Stanza {
        kind,
        to: Some(to.clone().into()),
        from,
        element,
    }
}

/// [`address`] for a message.
fn deliver(message: Element, from: Option<Jid>, to: &FullJid) -> Stanza {
    address(StanzaKind::Message, message, from, to)
}

/// Removes every XEP-0359 `<stanza-id/>` whose `by` is `by`.
fn strip_stanza_ids_by(message: &mut Element, by: &str) {
    let ours = |child: &Element| child.is("stanza-id", ns::SID) && child.attr("by") == Some(by);
    if !message.children().any(ours) {
        return;
    }
    for node in message.take_nodes() {
        match node {
            minidom::Node::Element(child) if ours(&child) => {}
            node => message.append_node(node),
        }
    }
}

/// A copy of `stanza` from `from` (a room/nick JID) to `to`.
fn forward(stanza: &Stanza, from: &FullJid, to: &Jid) -> Stanza {
    make(
        stanza.kind,
        stanza.element.clone(),
        from.clone().into(),
        to.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> FullJid {
        FullJid::new(s).expect("full jid")
    }

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_element(xml.parse().expect("xml")).expect("stanza")
    }

    fn room_with_history(n: usize) -> Room {
        let mut room = Room::create(
            BareJid::new("r@c.x").expect("jid"),
            BareJid::new("o@x").expect("jid"),
            true,
            5,
        );
        let start = Utc::now() - chrono::Duration::seconds(100);
        for i in 0..n {
            let message: Element = format!(
                "<message xmlns='jabber:client' type='groupchat' from='r@c.x/n'><body>{i}</body></message>"
            )
            .parse()
            .expect("xml");
            room.remember(message, start + chrono::Duration::seconds(i as i64 * 10));
        }
        room
    }

    fn bodies(messages: &[Element]) -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| m.get_child("body", ns::CLIENT).map(Element::text))
            .collect()
    }

    #[test]
    fn history_is_a_ring_of_history_max() {
        let room = room_with_history(8);
        let all = room.history_for(&HistoryRequest::default());
        assert_eq!(bodies(&all), ["3", "4", "5", "6", "7"]);
        assert!(all.iter().all(|m| m.has_child("delay", ns::DELAY)));
    }

    #[test]
    fn history_limits_apply() {
        let room = room_with_history(5);
        let now = Utc::now();
        let request = |xml: &str| {
            let history: Element = xml.parse().expect("xml");
            room.history_for(&HistoryRequest::parse(Some(&history), now))
        };
        let h = |attrs: &str| format!("<history xmlns='{}' {attrs}/>", ns::MUC);
        assert_eq!(bodies(&request(&h("maxstanzas='2'"))), ["3", "4"]);
        assert!(request(&h("maxchars='0'")).is_empty());
        // Messages were stamped 100, 90, … 60 seconds ago.
        assert_eq!(bodies(&request(&h("seconds='75'"))), ["3", "4"]);
        let one = room.history.back().expect("item").chars;
        assert_eq!(
            bodies(&request(&h(&format!("maxchars='{}'", one * 2 + 1)))),
            ["3", "4"]
        );
    }

    #[test]
    fn locked_room_refuses_others_and_members_only_refuses_strangers() {
        let mut room = Room::create(
            BareJid::new("r@c.x").expect("jid"),
            BareJid::new("o@x").expect("jid"),
            false,
            5,
        );
        let join = stanza(
            "<presence xmlns='jabber:client' from='s@x/a' to='r@c.x/s'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
        );
        let out = room.presence(&join, &jid("s@x/a"), &jid("r@c.x/s"));
        assert_eq!(error_of(&out), Some("item-not-found"));
        room.locked = false;
        room.config.members_only = true;
        let out = room.presence(&join, &jid("s@x/a"), &jid("r@c.x/s"));
        assert_eq!(error_of(&out), Some("registration-required"));
    }

    fn error_of(outcome: &Outcome) -> Option<&str> {
        let stanza = outcome.stanzas.first()?;
        let error = stanza.element.get_child("error", ns::CLIENT)?;
        error
            .children()
            .find(|c| c.ns() == confab_core::ns::STANZAS)
            .map(|c| c.name())
    }

    /// An unlocked room owned by `o@x` with `o@x/a` joined as `O` and `p@x/b` as `P`.
    fn room_with_two() -> Room {
        let mut room = Room::create(
            BareJid::new("r@c.x").expect("jid"),
            BareJid::new("o@x").expect("jid"),
            true,
            5,
        );
        for (from, nick) in [("o@x/a", "O"), ("p@x/b", "P")] {
            let join = stanza(&format!(
                "<presence xmlns='jabber:client' from='{from}' to='r@c.x/{nick}'/>"
            ));
            let out = room.presence(&join, &jid(from), &jid(&format!("r@c.x/{nick}")));
            assert_eq!(error_of(&out), None);
        }
        room
    }

    /// Above `presence_broadcast_max` occupants a join, a presence change and a leave reach
    /// only the occupant concerned; at or below it they reach everyone.
    #[test]
    fn quiet_rooms_send_only_self_presence() {
        let mut room = room_with_two();
        room.presence_broadcast_max = 2;
        let join = |room: &mut Room, from: &str, nick: &str| {
            let presence = stanza(&format!(
                "<presence xmlns='jabber:client' from='{from}' to='r@c.x/{nick}'/>"
            ));
            room.presence(&presence, &jid(from), &jid(&format!("r@c.x/{nick}")))
        };
        let recipients = |out: &Outcome| -> Vec<String> {
            out.stanzas
                .iter()
                .filter(|s| s.kind == StanzaKind::Presence)
                .filter_map(|s| s.to.as_ref().map(ToString::to_string))
                .collect()
        };
        // Three occupants > 2: the joiner gets its self-presence only, nobody else hears.
        let out = join(&mut room, "q@x/c", "Q");
        assert!(room.quiet());
        assert_eq!(recipients(&out), ["q@x/c"]);
        let own = &out.stanzas[0].element;
        let x = own.get_child("x", ns::MUC_USER).expect("muc#user");
        assert!(x.children().any(|c| c.attr("code") == Some("110")));
        // The join still ends with the subject, and the nick stays taken.
        assert!(
            out.stanzas
                .last()
                .is_some_and(|s| s.kind == StanzaKind::Message)
        );
        assert_eq!(error_of(&join(&mut room, "z@x/d", "Q")), Some("conflict"));
        let update = stanza(
            "<presence xmlns='jabber:client' from='q@x/c' to='r@c.x/Q'><show>away</show></presence>",
        );
        let out = room.presence(&update, &jid("q@x/c"), &jid("r@c.x/Q"));
        assert_eq!(recipients(&out), ["q@x/c"]);
        let out = room.leave(&jid("q@x/c"), None);
        assert_eq!(recipients(&out), ["q@x/c"]);
        // Three occupants with a limit of three: presence is broadcast again.
        room.presence_broadcast_max = 3;
        let out = join(&mut room, "q@x/c", "Q");
        assert!(!room.quiet());
        let mut to = recipients(&out);
        to.sort();
        assert_eq!(to, ["o@x/a", "p@x/b", "q@x/c", "q@x/c", "q@x/c"]);
        // Disco#info still counts everyone and says why presence may be missing.
        let info = String::from(&room.disco_info());
        assert!(info.contains("<value>3</value>"), "{info}");
        assert!(
            info.contains("confab#roominfo_presence_broadcast_max"),
            "{info}"
        );
    }

    /// A groupchat message is only accepted by the room: the service commits it and asks
    /// for the copies, which go to everyone in the room then, stripped of forged room ids
    /// and kept for history at the commit time.
    #[test]
    fn groupchat_is_accepted_then_broadcast_on_request() {
        let mut room = room_with_two();
        let message = stanza(
            "<message xmlns='jabber:client' type='groupchat' from='p@x/b' to='r@c.x'>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='r@c.x' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='elsewhere@c.y' id='kept'/>\
             <body>hi</body></message>",
        );
        let mut out = room.message(&message, &jid("p@x/b"));
        assert!(out.stanzas.is_empty(), "nothing goes out before the commit");
        let accepted = out.accepted.take().expect("accepted");
        assert_eq!(accepted.attr("from"), Some("r@c.x/P"));
        assert_eq!(accepted.attr("to"), None);
        let ids: Vec<&str> = accepted
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .filter_map(|c| c.attr("id"))
            .collect();
        assert_eq!(ids, ["kept"]);
        assert!(room.history_for(&HistoryRequest::default()).is_empty());

        let stamp = Utc::now() - chrono::Duration::seconds(5);
        let copies = room.broadcast(accepted, stamp);
        let mut to: Vec<String> = copies
            .iter()
            .filter_map(|s| s.to.as_ref().map(|t| t.to_string()))
            .collect();
        to.sort();
        assert_eq!(to, ["o@x/a", "p@x/b"]);
        let history = room.history_for(&HistoryRequest::default());
        assert_eq!(bodies(&history), ["hi"]);
        let delay = history[0].get_child("delay", ns::DELAY).expect("delay");
        assert_eq!(
            delay.attr("stamp"),
            Some(stamp.to_rfc3339_opts(SecondsFormat::Millis, true).as_str())
        );
    }

    /// Group management through the API follows the admin and owner rules: a plain member
    /// may neither rename nor add, may remove itself, and the last owner cannot go; a rename
    /// reaches occupants as status 104 and is stored.
    #[test]
    fn group_management_rules() {
        let bare = |s: &str| BareJid::new(s).expect("jid");
        let config = RoomConfig {
            persistent: true,
            members_only: true,
            group: true,
            ..RoomConfig::default()
        };
        let mut room = Room::create_group(bare("g@c.x"), bare("o@x"), [bare("m@x")], config, 5);
        let members: Vec<_> = room.members().map(|(j, a)| (j.to_string(), a)).collect();
        assert_eq!(members.len(), 2);
        assert_eq!(
            room.set_group_meta(&bare("m@x"), Some("n".into()), None, None)
                .err(),
            Some(StanzaErrorCondition::Forbidden)
        );
        assert!(
            room.change_affiliation(&bare("m@x"), bare("z@x"), Affiliation::Member)
                .is_err()
        );
        // The owner joins, then renames: the notice and a save.
        let join = stanza("<presence xmlns='jabber:client' from='o@x/a' to='g@c.x/O'/>");
        let out = room.presence(&join, &jid("o@x/a"), &jid("g@c.x/O"));
        assert_eq!(error_of(&out), None);
        let out = room
            .set_group_meta(&bare("o@x"), Some("Coven".into()), None, None)
            .expect("owner may");
        assert_eq!(out.effects, [Effect::Save { all: false }]);
        assert_eq!(out.stanzas.len(), 1);
        let notice = &out.stanzas[0].element;
        let x = notice.get_child("x", ns::MUC_USER).expect("x");
        assert!(x.children().any(|c| c.attr("code") == Some("104")));
        // The same again changes nothing and tells nobody.
        let out = room
            .set_group_meta(&bare("o@x"), Some("Coven".into()), None, None)
            .expect("owner may");
        assert!(out.stanzas.is_empty() && out.effects.is_empty());
        // A member leaves by itself; the last owner cannot.
        let out = room
            .change_affiliation(&bare("m@x"), bare("m@x"), Affiliation::None)
            .expect("leaving");
        assert_eq!(
            out.effects,
            [Effect::SetAffiliation(bare("m@x"), Affiliation::None)]
        );
        assert_eq!(room.affiliation_of(&bare("m@x")), Affiliation::None);
        assert_eq!(
            room.change_affiliation(&bare("o@x"), bare("o@x"), Affiliation::None)
                .err(),
            Some(StanzaErrorCondition::Conflict)
        );
    }

    /// Who may read the room's archive follows who may enter.
    #[test]
    fn archive_readers_follow_entry_rules() {
        let mut room = room_with_two();
        let stranger = jid("s@x/c");
        let member = BareJid::new("m@x").expect("jid");
        assert!(room.may_read_archive(&stranger), "an open room");
        assert!(room.may_read_archive(&jid("p@x/b")));
        room.config.members_only = true;
        assert!(!room.may_read_archive(&stranger));
        assert!(!room.may_read_archive_as(&stranger.to_bare()));
        assert!(!room.may_read_archive_as(&member));
        room.affiliations
            .insert(member.clone(), Affiliation::Member);
        assert!(room.may_read_archive_as(&member));
        // An occupant already in may read, an outcast never.
        assert!(room.may_read_archive(&jid("p@x/b")));
        assert!(room.may_read_archive_as(&BareJid::new("p@x").expect("jid")));
        room.affiliations
            .insert(member.clone(), Affiliation::Outcast);
        assert!(!room.may_read_archive_as(&member));
        room.config.members_only = false;
        room.config.password_protected = true;
        assert!(!room.may_read_archive(&stranger), "no password on a query");
        assert!(room.may_read_archive(&jid("o@x/a")));
    }

    fn admin_set(room: &mut Room, from: &str, items: &str) -> Outcome {
        let iq = stanza(&format!(
            "<iq xmlns='jabber:client' type='set' id='a' from='{from}' to='r@c.x'>\
             <query xmlns='{}'>{items}</query></iq>",
            ns::MUC_ADMIN
        ));
        room.iq(&iq, &jid(from))
    }

    #[test]
    fn the_last_owner_cannot_step_down() {
        let mut room = room_with_two();
        let out = admin_set(&mut room, "o@x/a", "<item jid='o@x' affiliation='member'/>");
        assert_eq!(error_of(&out), Some("conflict"));
        // With a second owner it works.
        let out = admin_set(
            &mut room,
            "o@x/a",
            "<item jid='p@x' affiliation='owner'/><item jid='o@x' affiliation='member'/>",
        );
        assert_eq!(error_of(&out), None);
        assert_eq!(
            room.affiliation(&BareJid::new("o@x").expect("jid")),
            Affiliation::Member
        );
    }

    #[test]
    fn an_admin_set_applies_whole_or_not_at_all() {
        let mut room = room_with_two();
        // The first item alone would be applied; the second names a nick nobody holds, so
        // the request fails and the first is not applied either.
        let out = admin_set(
            &mut room,
            "o@x/a",
            "<item jid='p@x' affiliation='admin'/><item nick='Nobody' role='none'/>",
        );
        assert_eq!(error_of(&out), Some("item-not-found"));
        assert_eq!(
            room.affiliation(&BareJid::new("p@x").expect("jid")),
            Affiliation::None
        );
        assert!(out.effects.is_empty());
    }

    #[test]
    fn role_rules() {
        use Affiliation as A;
        use Role as R;
        // A participant cannot kick.
        assert_eq!(
            role_change_allowed(R::Participant, A::None, R::Participant, A::None, R::None),
            Err(StanzaErrorCondition::Forbidden)
        );
        // An admin cannot kick an owner; an owner can kick an admin.
        assert_eq!(
            role_change_allowed(R::Moderator, A::Admin, R::Moderator, A::Owner, R::None),
            Err(StanzaErrorCondition::NotAllowed)
        );
        assert_eq!(
            role_change_allowed(R::Moderator, A::Owner, R::Moderator, A::Admin, R::None),
            Ok(())
        );
        // A moderator without affiliation cannot make moderators.
        assert_eq!(
            role_change_allowed(R::Moderator, A::None, R::Participant, A::None, R::Moderator),
            Err(StanzaErrorCondition::Forbidden)
        );
        assert_eq!(
            affiliation_change_allowed(A::Admin, A::Owner, A::Outcast),
            Err(StanzaErrorCondition::NotAllowed)
        );
        assert_eq!(
            affiliation_change_allowed(A::Member, A::None, A::Outcast),
            Err(StanzaErrorCondition::Forbidden)
        );
    }
}
