//! Session manager: which resources of which accounts are online here, and a bounded mailbox
//! into each of them.
//!
//! **Architecture invariant:** sessions never call each other. The router looks a resource up
//! here and posts into its mailbox; the owning connection task drains it. This crate holds no
//! protocol logic beyond RFC 6121 §8.5.2.1.1's choice of "most available" resources.

use confab_core::{BareJid, Element, FullJid, Jid, Stanza, StreamErrorCondition, jids};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Identifies one bound session for its lifetime (a reconnect gets a new id).
pub type SessionId = u64;

/// Work posted to a session's connection task.
#[derive(Debug)]
pub enum SessionCommand {
    /// Write this stanza to the client. Boxed so the mailbox slot stays pointer-sized.
    Deliver(Box<Stanza>),
}

/// Why a stanza could not be posted to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The session is closing or gone.
    #[error("session closed")]
    Closed,
    /// The mailbox is full: the session is too slow and is being disconnected.
    #[error("mailbox full")]
    Overflow,
}

/// Per-resource presence state the router and presence features read and update.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// The last broadcast available presence; `None` until initial presence (and after
    /// unavailable), which makes the resource not "available" in RFC 6121 §4.
    pub presence: Option<Element>,
    /// Priority from the last available presence (RFC 6121 §4.7.2.3).
    pub priority: i8,
    /// The resource asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    pub roster_requested: bool,
    /// Entities this resource sent directed presence to; they get unavailable presence when
    /// it goes offline (RFC 6121 §4.6.3).
    pub directed_to: HashSet<Jid>,
}

/// One bound resource.
pub struct Resource {
    /// Unique id of this session.
    pub id: SessionId,
    /// The bound full JID.
    pub jid: FullJid,
    mailbox: Arc<MailboxShared>,
    /// Presence bookkeeping.
    pub state: Mutex<PresenceState>,
    kick: Mutex<Option<(StreamErrorCondition, &'static str)>>,
    kicked: Notify,
}

impl Drop for Resource {
    fn drop(&mut self) {
        // Like a channel whose last sender is gone: the receiver drains, then sees the end.
        self.mailbox.queue.lock().sender_gone = true;
        self.mailbox.ready.notify_one();
    }
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("id", &self.id)
            .field("jid", &self.jid)
            .finish_non_exhaustive()
    }
}

/// The receiving half a connection task owns.
pub struct Mailbox {
    /// Stanzas to write.
    pub receiver: MailboxReceiver,
}

/// A bounded queue of stanzas for one session.
///
/// Not a `tokio::sync::mpsc` channel: that allocates about 800 bytes per channel up front
/// (its shared state and a first block of 32 slots), about a seventh of what an idle
/// session cost. This queue holds nothing while empty and gives a grown buffer back once it
/// drains.
struct MailboxShared {
    queue: Mutex<Queue>,
    /// Wakes the receiver; one permit is stored when it is not waiting.
    ready: Notify,
}

struct Queue {
    items: VecDeque<SessionCommand>,
    capacity: usize,
    /// No further stanzas are accepted: the receiver closed or dropped.
    receiver_gone: bool,
    /// The resource (the sending side) is gone: `recv` returns `None` once drained.
    sender_gone: bool,
}

/// A drained queue keeps a buffer this small (in entries); a larger one is released.
const KEEP_QUEUE_CAPACITY: usize = 16;

/// The mailbox is empty (or, after [`MailboxReceiver::close`] or once the resource is gone,
/// drained for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mailbox empty")]
pub struct TryRecvError;

/// The receiving end of a session's mailbox.
pub struct MailboxReceiver {
    shared: Arc<MailboxShared>,
}

impl MailboxReceiver {
    /// The next stanza; `None` once the mailbox was closed (or its resource dropped) and
    /// everything queued before was taken. Cancel-safe: nothing is lost when the future is
    /// dropped before it completes.
    pub async fn recv(&mut self) -> Option<SessionCommand> {
        loop {
            match self.shared.take() {
                Ok(command) => return Some(command),
                Err(true) => return None,
                Err(false) => self.shared.ready.notified().await,
            }
        }
    }

    /// The next stanza if one is queued.
    pub fn try_recv(&mut self) -> Result<SessionCommand, TryRecvError> {
        self.shared.take().map_err(|_| TryRecvError)
    }

    /// Refuses further stanzas; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.queue.lock().receiver_gone = true;
    }
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock();
        queue.receiver_gone = true;
        queue.items = VecDeque::new();
    }
}

impl MailboxShared {
    /// Pops the next command; `Err(finished)` when empty, `finished` when nothing can come.
    fn take(&self) -> Result<SessionCommand, bool> {
        let mut queue = self.queue.lock();
        match queue.items.pop_front() {
            Some(command) => {
                if queue.items.is_empty() && queue.items.capacity() > KEEP_QUEUE_CAPACITY {
                    queue.items = VecDeque::new();
                }
                Ok(command)
            }
            None => Err(queue.receiver_gone || queue.sender_gone),
        }
    }
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// The id the next bound session will get. Every session bound so far has a smaller id, so
/// a value taken when a stanza is written tells which sessions existed at that moment.
pub fn next_session_id() -> SessionId {
    NEXT_SESSION_ID.load(Ordering::Relaxed)
}

/// A stanza a session took but whose delivery the client never confirmed (XEP-0198 §4), or
/// that was still in its mailbox when the session ended for good.
#[derive(Debug, Clone)]
pub struct Undelivered {
    /// The stanza as it was posted to the session (a committed message keeps its
    /// XEP-0359 `<stanza-id/>`).
    pub stanza: Stanza,
    /// [`next_session_id`] when the stanza reached the session: sessions with a smaller id
    /// were bound then, so those of them that were most available already got their own copy
    /// of a message addressed to the bare JID.
    pub bound_before: SessionId,
    /// Sessions known to hold a copy already (a XEP-0280 carbon, noted by the carbons
    /// feature at `on_undelivered`): redelivery skips them, so no device gets it twice.
    pub holders: Vec<SessionId>,
}

impl Resource {
    /// Creates a resource and its mailbox of `capacity` stanzas.
    pub fn new(jid: FullJid, capacity: usize) -> (Arc<Self>, Mailbox) {
        let mailbox = Arc::new(MailboxShared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                receiver_gone: false,
                sender_gone: false,
            }),
            ready: Notify::new(),
        });
        let receiver = MailboxReceiver {
            shared: mailbox.clone(),
        };
        let resource = Arc::new(Self {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            jid,
            mailbox,
            state: Mutex::new(PresenceState::default()),
            kick: Mutex::new(None),
            kicked: Notify::new(),
        });
        (resource, Mailbox { receiver })
    }

    /// Posts a stanza. Overflow policy: a session whose mailbox is full is kicked with
    /// `policy-violation` rather than slowing the sender or growing without bound; the
    /// stanza is reported undelivered so the caller can fall back (for example to storage).
    pub fn send(&self, stanza: Stanza) -> Result<(), DeliveryError> {
        let command = SessionCommand::Deliver(Box::new(stanza));
        let mut queue = self.mailbox.queue.lock();
        if queue.receiver_gone {
            return Err(DeliveryError::Closed);
        }
        if queue.items.len() >= queue.capacity {
            drop(queue);
            self.kick(
                StreamErrorCondition::PolicyViolation,
                "mailbox overflow: client too slow",
            );
            return Err(DeliveryError::Overflow);
        }
        queue.items.push_back(command);
        drop(queue);
        self.mailbox.ready.notify_one();
        Ok(())
    }

    /// Asks the connection task to close with a stream error (RFC 6120 §4.9).
    pub fn kick(&self, condition: StreamErrorCondition, text: &'static str) {
        let mut kick = self.kick.lock();
        if kick.is_none() {
            *kick = Some((condition, text));
        }
        drop(kick);
        self.kicked.notify_one();
    }

    /// Resolves when the session was kicked; returns the condition to send.
    pub async fn kicked(&self) -> (StreamErrorCondition, &'static str) {
        loop {
            if let Some(reason) = *self.kick.lock() {
                return reason;
            }
            self.kicked.notified().await;
        }
    }

    /// Whether the resource sent available presence and has not gone unavailable.
    pub fn is_available(&self) -> bool {
        self.state.lock().presence.is_some()
    }

    /// Current priority.
    pub fn priority(&self) -> i8 {
        self.state.lock().priority
    }

    /// Whether this resource requested the roster and so receives roster pushes.
    pub fn is_interested(&self) -> bool {
        self.state.lock().roster_requested
    }
}

const SHARDS: usize = 64;
/// Offline gates: many more than registry shards, because an offline flush holds its gate
/// for writing across a store call and every message to an account that shares the gate
/// waits meanwhile. 1,024 gates cost about 40 KiB.
const OFFLINE_GATES: usize = 1024;

/// One shard of the registry: bare JID to its bound resources.
type Shard = RwLock<HashMap<BareJid, Vec<Arc<Resource>>>>;

/// All bound resources on this node, sharded by bare JID to keep lock contention low.
pub struct SessionManager {
    shards: Box<[Shard]>,
    count: AtomicUsize,
    /// See [`SessionManager::offline_gate`]; sharded like the registry.
    offline_gates: Box<[tokio::sync::RwLock<()>]>,
}

impl Default for SessionManager {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionManager {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            offline_gates: (0..OFFLINE_GATES)
                .map(|_| tokio::sync::RwLock::new(()))
                .collect(),
        }
    }

    fn hash(bare: &BareJid) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bare.hash(&mut hasher);
        hasher.finish() as usize
    }

    fn shard(&self, bare: &BareJid) -> &Shard {
        &self.shards[Self::hash(bare) % SHARDS]
    }

    /// Orders "this message waits for the account's next availability" against "the account
    /// became available; hand it what waits". A message that finds no resource to take it is
    /// committed as waiting while this is held for reading; offline delivery takes what
    /// waits while holding it for writing. So a message is either seen as waiting by the
    /// take that follows the availability it missed, or saw that availability and was
    /// delivered live: never both, never neither.
    pub fn offline_gate(&self, bare: &BareJid) -> &tokio::sync::RwLock<()> {
        &self.offline_gates[Self::hash(bare) % OFFLINE_GATES]
    }

    /// Registers a resource. If the same full JID was bound already, the old session is
    /// removed and returned so the caller can close it with `conflict` (RFC 6120 §7.7.2.2).
    pub fn bind(&self, resource: Arc<Resource>) -> Option<Arc<Resource>> {
        let bare = jids::bare(&resource.jid);
        let mut shard = self.shard(&bare).write();
        let list = shard.entry(bare).or_default();
        let replaced = list
            .iter()
            .position(|r| r.jid == resource.jid)
            .map(|index| list.swap_remove(index));
        list.push(resource);
        if replaced.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    }

    /// Removes a session if it is still the one bound to its JID. Returns whether it was.
    pub fn unbind(&self, resource: &Resource) -> bool {
        let bare = jids::bare(&resource.jid);
        let mut shard = self.shard(&bare).write();
        let Some(list) = shard.get_mut(&bare) else {
            return false;
        };
        let Some(index) = list.iter().position(|r| r.id == resource.id) else {
            return false;
        };
        list.swap_remove(index);
        if list.is_empty() {
            shard.remove(&bare);
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Every bound resource of an account.
    pub fn resources(&self, bare: &BareJid) -> Vec<Arc<Resource>> {
        self.shard(bare)
            .read()
            .get(bare)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the account has an available resource with a non-negative priority, i.e.
    /// whether [`SessionManager::most_available`] would be non-empty; checked without
    /// collecting the resources, for the per-message "will anyone take it now" question.
    pub fn has_available(&self, bare: &BareJid) -> bool {
        self.shard(bare).read().get(bare).is_some_and(|resources| {
            resources.iter().any(|r| {
                let state = r.state.lock();
                state.presence.is_some() && state.priority >= 0
            })
        })
    }

    /// The session bound to a full JID.
    pub fn get(&self, full: &FullJid) -> Option<Arc<Resource>> {
        let bare = jids::bare(full);
        self.shard(&bare)
            .read()
            .get(&bare)?
            .iter()
            .find(|r| &r.jid == full)
            .cloned()
    }

    /// Available resources with the highest non-negative priority; all of them on a tie
    /// (RFC 6121 §8.5.2.1.1).
    pub fn most_available(&self, bare: &BareJid) -> Vec<Arc<Resource>> {
        let candidates: Vec<(i8, Arc<Resource>)> = self
            .resources(bare)
            .into_iter()
            .filter_map(|r| {
                let state = r.state.lock();
                let priority = state.priority;
                let available = state.presence.is_some() && priority >= 0;
                drop(state);
                available.then_some((priority, r))
            })
            .collect();
        let Some(best) = candidates.iter().map(|(p, _)| *p).max() else {
            return Vec::new();
        };
        candidates
            .into_iter()
            .filter(|(p, _)| *p == best)
            .map(|(_, r)| r)
            .collect()
    }

    /// Available resources with non-negative priority (RFC 6121 §8.5.2.1.2 headlines and
    /// presence broadcast).
    pub fn available(&self, bare: &BareJid) -> Vec<Arc<Resource>> {
        self.resources(bare)
            .into_iter()
            .filter(|r| r.is_available())
            .collect()
    }

    /// Number of bound sessions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no session is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every bound session (for shutdown).
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).expect("jid")
    }

    fn available(resource: &Resource, priority: i8) {
        let mut state = resource.state.lock();
        state.presence = Some(Element::bare("presence", "jabber:client"));
        state.priority = priority;
    }

    #[test]
    fn rebinding_same_full_jid_returns_the_old_session() {
        let manager = SessionManager::new();
        let (first, _m1) = Resource::new(full("a@x/r"), 8);
        let (second, _m2) = Resource::new(full("a@x/r"), 8);
        assert!(manager.bind(first.clone()).is_none());
        let replaced = manager.bind(second.clone()).expect("conflict");
        assert_eq!(replaced.id, first.id);
        assert_eq!(manager.len(), 1);
        assert!(
            !manager.unbind(&first),
            "the replaced session no longer owns the JID"
        );
        assert!(manager.unbind(&second));
        assert!(manager.is_empty());
    }

    #[test]
    fn most_available_picks_highest_priority_and_ties() {
        let manager = SessionManager::new();
        let (a, _m1) = Resource::new(full("a@x/1"), 8);
        let (b, _m2) = Resource::new(full("a@x/2"), 8);
        let (c, _m3) = Resource::new(full("a@x/3"), 8);
        let (d, _m4) = Resource::new(full("a@x/4"), 8);
        for r in [&a, &b, &c, &d] {
            manager.bind(r.clone());
        }
        available(&a, 5);
        available(&b, 5);
        available(&c, 1);
        available(&d, -1);
        let bare = BareJid::new("a@x").expect("jid");
        let mut ids: Vec<_> = manager.most_available(&bare).iter().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![a.id, b.id]);
        available(&a, -2);
        available(&b, -2);
        available(&c, -2);
        assert!(
            manager.most_available(&bare).is_empty(),
            "negative priority never receives bare-JID messages"
        );
    }

    #[tokio::test]
    async fn mailbox_delivers_in_order_and_ends_like_a_channel() {
        let (resource, mut mailbox) = Resource::new(full("a@x/r"), 8);
        let stanza = |id: &str| {
            let mut element = Element::bare("message", "jabber:client");
            confab_core::stanza::set_attr(&mut element, "id", Some(id.to_owned()));
            Stanza::new(element)
        };
        let id = |command: Option<SessionCommand>| match command {
            Some(SessionCommand::Deliver(stanza)) => stanza.id().map(str::to_owned),
            None => None,
        };
        assert_eq!(mailbox.receiver.try_recv().err(), Some(TryRecvError));
        // A receiver waiting before the send is woken.
        let waiting = tokio::spawn(async move {
            let first = mailbox.receiver.recv().await;
            (mailbox, first)
        });
        tokio::task::yield_now().await;
        assert_eq!(resource.send(stanza("1")), Ok(()));
        let (mut mailbox, first) = waiting.await.expect("join");
        assert_eq!(id(first).as_deref(), Some("1"));
        assert_eq!(resource.send(stanza("2")), Ok(()));
        assert_eq!(resource.send(stanza("3")), Ok(()));
        assert_eq!(id(mailbox.receiver.recv().await).as_deref(), Some("2"));
        // The resource going away ends the mailbox after what was queued.
        drop(resource);
        assert_eq!(id(mailbox.receiver.recv().await).as_deref(), Some("3"));
        assert!(mailbox.receiver.recv().await.is_none());

        // Closing refuses new stanzas but keeps what is queued.
        let (resource, mut mailbox) = Resource::new(full("a@x/r"), 8);
        assert_eq!(resource.send(stanza("4")), Ok(()));
        mailbox.receiver.close();
        assert_eq!(resource.send(stanza("5")), Err(DeliveryError::Closed));
        assert_eq!(id(mailbox.receiver.try_recv().ok()).as_deref(), Some("4"));
        assert!(mailbox.receiver.recv().await.is_none());
        drop(mailbox);
        assert_eq!(resource.send(stanza("6")), Err(DeliveryError::Closed));
    }

    #[test]
    fn has_available_agrees_with_most_available() {
        let manager = SessionManager::new();
        let bare = BareJid::new("a@x").expect("jid");
        assert!(!manager.has_available(&bare));
        let (resource, _mailbox) = Resource::new(full("a@x/r"), 4);
        manager.bind(resource.clone());
        assert!(!manager.has_available(&bare), "bound without presence");
        for (priority, expected) in [(-1, false), (0, true), (5, true)] {
            {
                let mut state = resource.state.lock();
                state.presence = Some(Element::bare("presence", "jabber:client"));
                state.priority = priority;
            }
            assert_eq!(
                manager.has_available(&bare),
                expected,
                "priority {priority}"
            );
            assert_eq!(!manager.most_available(&bare).is_empty(), expected);
        }
    }

    #[test]
    fn full_mailbox_kicks_the_session() {
        let (resource, _mailbox) = Resource::new(full("a@x/r"), 1);
        let stanza = Stanza::new(Element::bare("message", "jabber:client"));
        assert_eq!(resource.send(stanza.clone()), Ok(()));
        assert_eq!(resource.send(stanza), Err(DeliveryError::Overflow));
        assert!(resource.kick.lock().is_some());
    }
}
