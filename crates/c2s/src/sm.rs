//! XEP-0198 Stream Management: stanza acknowledgements (§4) and stream resumption (§5).
//!
//! The per-stream state lives in a boxed [`SmState`] that exists only once the client sent
//! `<enable/>`, so a session without stream management costs one pointer. Resumable streams
//! are registered in [`Resumption`] under an unguessable id; a new connection that presents
//! that id takes the state over from the connection task that holds it (live or parked).

use confab_core::stanza::element;
use confab_core::{Element, Stanza};
use confab_sessions::{Mailbox, Resource, SessionId};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// The XEP-0198 namespace (version 3).
pub const NS: &str = "urn:xmpp:sm:3";

/// The server asks for an ack (`<r/>`) once this many stanzas went out unrequested…
pub(crate) const ACK_REQUEST_EVERY: u32 = 5;
/// …or once the oldest unrequested one is this old, so the unacked queue stays short.
pub(crate) const ACK_REQUEST_AFTER: Duration = Duration::from_secs(5);
/// How long a resuming connection waits for the old connection task to hand over.
pub(crate) const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Stream management state of one stream (moves to the new connection on resumption).
pub(crate) struct SmState {
    /// The resumption id, when the client asked for resumption (§5).
    pub id: Option<String>,
    /// Our handle on the resumable stream's registry entry.
    pub takeover: Option<Takeover>,
    /// The resumption window in seconds (the `max` we announced).
    pub max_secs: u32,
    /// Stanzas received from the client and handled (`h` we report), modulo 2^32 (§4).
    pub inbound: u32,
    /// The last `h` the client acknowledged: how many of our stanzas it handled, mod 2^32.
    pub acked: u32,
    /// Stanzas written since `acked`, oldest first, each with [`confab_sessions::next_session_id`]
    /// at the time it was written. The stanza is moved here after encoding, never copied.
    pub unacked: VecDeque<(Box<Stanza>, SessionId)>,
    /// Stanzas written since the last `<r/>`.
    pub unrequested: u32,
    /// When the oldest of those was written.
    pub unrequested_since: Option<Instant>,
    /// An `<r/>` was sent and its `<a/>` has not arrived.
    pub request_outstanding: bool,
}

impl SmState {
    pub(crate) fn new(id: Option<String>, max_secs: u32) -> Self {
        Self {
            id,
            takeover: None,
            max_secs,
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            unrequested: 0,
            unrequested_since: None,
            request_outstanding: false,
        }
    }

    /// Our stanza count (the `send-count` of §4), mod 2^32.
    pub(crate) fn sent(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Applies the client's `h`: drops what it acknowledges. `Err(send_count)` when it
    /// acknowledges more than was sent (§4 `<handled-count-too-high/>`).
    pub(crate) fn ack(&mut self, h: u32) -> Result<(), u32> {
        let newly = newly_acked(self.acked, h, self.unacked.len()).ok_or(self.sent())?;
        self.unacked.drain(..newly);
        self.acked = h;
        Ok(())
    }

    /// Records a stanza just written to the client.
    pub(crate) fn sent_stanza(&mut self, stanza: Box<Stanza>) {
        self.unacked
            .push_back((stanza, confab_sessions::next_session_id()));
        self.unrequested += 1;
        self.unrequested_since.get_or_insert_with(Instant::now);
    }

    /// Whether an `<r/>` is due now by count.
    pub(crate) fn request_due_by_count(&self) -> bool {
        !self.request_outstanding && self.unrequested >= ACK_REQUEST_EVERY
    }

    /// When an `<r/>` falls due by age, if anything is waiting for one.
    pub(crate) fn request_due_at(&self) -> Option<Instant> {
        if self.request_outstanding {
            return None;
        }
        self.unrequested_since
            .map(|since| since + ACK_REQUEST_AFTER)
    }

    /// Notes that an `<r/>` went out.
    pub(crate) fn requested(&mut self) {
        self.unrequested = 0;
        self.unrequested_since = None;
        self.request_outstanding = true;
    }
}

/// How many queued stanzas an `<a h='h'/>` acknowledges when `acked` were acknowledged
/// before and `outstanding` are queued; `None` if it claims more than was sent. Counters
/// wrap at 2^32 (XEP-0198 §4), so the difference is taken modulo 2^32.
pub fn newly_acked(acked: u32, h: u32, outstanding: usize) -> Option<usize> {
    let newly = h.wrapping_sub(acked) as usize;
    (newly <= outstanding).then_some(newly)
}

/// `<a xmlns='urn:xmpp:sm:3' h='…'/>`.
pub(crate) fn answer(h: u32) -> Element {
    element("a", NS, &[("h", &h.to_string())])
}

/// `<r xmlns='urn:xmpp:sm:3'/>`.
pub(crate) fn request() -> Element {
    Element::bare("r", NS)
}

/// `<failed xmlns='urn:xmpp:sm:3'><condition xmlns='…stanzas'/></failed>` (§6).
pub(crate) fn failed(condition: &str) -> Element {
    let mut failed = Element::bare("failed", NS);
    failed.append_child(Element::bare(condition, confab_core::ns::STANZAS));
    failed
}

/// What a parked or live connection task hands to the connection resuming its stream.
pub(crate) struct Handoff {
    pub sm: Box<SmState>,
    pub mailbox: Option<Mailbox>,
}

/// One resumable stream.
pub(crate) struct Resumable {
    pub username: String,
    pub resource: Arc<Resource>,
    /// Set by a resuming connection; the task holding the stream sends its state here.
    takeover: Mutex<Option<oneshot::Sender<Handoff>>>,
    notify: Notify,
}

impl Resumable {
    fn takeover_pending(&self) -> bool {
        self.takeover.lock().is_some()
    }

    /// Sends the state to the resuming connection; gives it back if nobody waits any more.
    pub(crate) fn hand_over(&self, handoff: Handoff) -> Result<(), Handoff> {
        match self.takeover.lock().take() {
            Some(sender) => sender.send(handoff),
            None => Err(handoff),
        }
    }
}

/// A connection task's view of its resumable stream: resolves when another connection
/// resumes it (XEP-0198 §5), so the task closes its socket and hands the state over.
#[derive(Clone)]
pub struct Takeover(pub(crate) Arc<Resumable>);

impl Takeover {
    /// Resolves once a takeover was requested.
    pub async fn requested(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.takeover_pending() {
                return;
            }
            notified.await;
        }
    }
}

/// Resumable streams of this server, by resumption id.
pub struct Resumption {
    /// The resumption window (`c2s.resume_timeout_secs`); zero disables resumption.
    pub timeout: Duration,
    entries: Mutex<HashMap<String, Arc<Resumable>>>,
}

impl Resumption {
    /// A registry granting resumption for up to `timeout` after a connection is lost.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Number of resumable streams (live or parked).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no stream is resumable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn register(
        &self,
        id: String,
        username: String,
        resource: Arc<Resource>,
    ) -> Takeover {
        let entry = Arc::new(Resumable {
            username,
            resource,
            takeover: Mutex::new(None),
            notify: Notify::new(),
        });
        self.entries.lock().insert(id, entry.clone());
        Takeover(entry)
    }

    /// Asks the holder of stream `id` (if it belongs to `username`) to hand it over.
    pub(crate) fn request(
        &self,
        id: &str,
        username: &str,
    ) -> Option<(Arc<Resumable>, oneshot::Receiver<Handoff>)> {
        let entries = self.entries.lock();
        let entry = entries.get(id).filter(|e| e.username == username)?.clone();
        let (sender, receiver) = oneshot::channel();
        // A second resume racing for the same stream supersedes the first one, which
        // then fails with item-not-found.
        *entry.takeover.lock() = Some(sender);
        drop(entries);
        entry.notify.notify_one();
        Some((entry, receiver))
    }

    /// The holder ends stream `id`: removes it, unless a resume is waiting for it, in which
    /// case the entry stays and the caller gets the entry to hand over to.
    pub(crate) fn finish(&self, id: &str) -> Option<Arc<Resumable>> {
        let mut entries = self.entries.lock();
        let entry = entries.get(id)?;
        if entry.takeover_pending() {
            return Some(entry.clone());
        }
        entries.remove(id);
        None
    }
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumption")
            .field("timeout", &self.timeout)
            .field("streams", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_count_modulo_two_to_the_32() {
        assert_eq!(newly_acked(0, 0, 0), Some(0));
        assert_eq!(newly_acked(0, 3, 5), Some(3));
        assert_eq!(newly_acked(0, 6, 5), None);
        // §4: the counter wraps to zero after 2^32 - 1.
        assert_eq!(newly_acked(u32::MAX - 1, 1, 3), Some(3));
        assert_eq!(newly_acked(u32::MAX, 0, 1), Some(1));
        assert_eq!(newly_acked(u32::MAX, 1, 1), None);
        // An h older than the last one reads as far too high.
        assert_eq!(newly_acked(10, 9, 5), None);
    }

    #[test]
    fn ack_drops_acknowledged_stanzas() {
        let mut sm = SmState::new(None, 300);
        sm.acked = u32::MAX - 1;
        for _ in 0..4 {
            sm.sent_stanza(Box::new(Stanza::new(Element::bare(
                "message",
                "jabber:client",
            ))));
        }
        assert_eq!(sm.sent(), 2);
        assert_eq!(sm.ack(0), Ok(()));
        assert_eq!(sm.unacked.len(), 2);
        assert_eq!(sm.ack(3), Err(2));
        assert_eq!(sm.ack(2), Ok(()));
        assert!(sm.unacked.is_empty());
    }
}
