//! Commit outcomes for senders that are not an XMPP stream.
//!
//! The HTTP send API (`POST /api/v1/messages`) sends a message as one of the caller's
//! sessions through the ordinary inbound path, so blocking, carbons, the log and delivery
//! treat it exactly like a stanza from the socket. What differs is where the outcome goes:
//! the caller waits for it in its HTTP response instead of reading a receipt stanza. Running
//! the inbound call inside [`capture_commit`] makes [`LogModule`](crate::LogModule) hand the
//! outcome of the first message it commits in that call to the caller, and send the session
//! neither a receipt nor a commit error for it.

use crate::receipt::Receipt;
use confab_core::store::StoreError;
use parking_lot::Mutex;
use std::future::Future;

/// What the log did with a captured message.
#[derive(Debug)]
pub enum CommitOutcome {
    /// Committed, or recognised as a resend (`duplicate`); delivery follows.
    Committed {
        /// The receipt the sender would have got.
        receipt: Receipt,
        /// True when the client id was committed before: nothing was stored or delivered.
        duplicate: bool,
    },
    /// The commit failed; nothing was stored or delivered.
    Failed(StoreError),
}

tokio::task_local! {
    /// The slot of the innermost [`capture_commit`]; the first outcome wins.
    static CAPTURE: Mutex<Option<CommitOutcome>>;
}

/// Runs `routing` (an inbound or route call on this task) and returns its output with the
/// outcome of the first message the log committed during it; `None` when it committed
/// nothing (the message was refused or dropped before the log, or is not archived).
pub async fn capture_commit<F: Future>(routing: F) -> (F::Output, Option<CommitOutcome>) {
    CAPTURE
        .scope(Mutex::new(None), async {
            let output = routing.await;
            let outcome = CAPTURE.with(|slot| slot.lock().take());
            (output, outcome)
        })
        .await
}

/// Hands `outcome` to an enclosing [`capture_commit`] with an empty slot; gives it back
/// when there is none, so the caller tells the session as usual.
pub(crate) fn offer(outcome: CommitOutcome) -> Option<CommitOutcome> {
    let mut outcome = Some(outcome);
    let _ = CAPTURE.try_with(|slot| {
        let mut slot = slot.lock();
        if slot.is_none() {
            *slot = outcome.take();
        }
    });
    outcome
}
