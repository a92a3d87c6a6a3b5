//! The batching writer: one task that turns a stream of commit requests into few, large
//! transactions (group commit).
//!
//! # Group-commit policy
//! The writer takes one request, then everything else already queued, up to
//! [`LogConfig::max_batch`], and commits them with one [`ArchiveStore::append`] call. It never
//! waits on a timer for a batch to fill: while one commit is in flight new requests queue up,
//! and they form the next batch. A lone message on an idle server is therefore committed at
//! once, and under load the batch size grows with the commit latency by itself.
//!
//! There is no `max_delay`: it would only add latency at low load, and under load the writer
//! is busy all the time anyway. The cap is high because a commit's cost is mostly the index
//! pages it writes to the WAL, and messages of one conversation share those pages: with 100
//! conversations and 1,600 messages in flight (`writer_throughput` in `tests/log/writer.rs`),
//! batches settle at about 800 and cost about 30 µs of writer time per message, against
//! about 50 µs when capped at 256. A full batch of 2,048 commits in well under 100 ms.
//!
//! # Order
//! The log assigns server ids itself, in queue order ([`MessageLog::commit`]), and the
//! writer commits the queue in order, so server id order is commit order: a reader that has
//! seen a message has seen every message with a lower server id, and a client paging with
//! "after this id" (XEP-0313 `after-id`, the HTTP sync feed) can never skip one that
//! committed later with a lower id. Ids chosen by callers before queueing could not promise
//! that: two senders can reach the queue in the other order than they took their ids.
//!
//! # Backpressure
//! Requests wait in a bounded queue of [`LogConfig::queue_capacity`]. When it is full,
//! [`MessageLog::commit`] waits for room, so a sender's session stops reading from its socket
//! until the disk catches up, instead of memory growing without bound.
//!
//! # Failure
//! A batch commits or fails as a whole; on failure every message in it gets the error and
//! none is stored, so every sender may resend (idempotently) later. A request that reached
//! the queue is committed even if its caller stopped waiting.
//!
//! [`ArchiveStore::append`]: confab_core::archive::ArchiveStore::append

use crate::recall::Recall;
use confab_core::archive::{CommitReceipt, NewMessage, new_server_id};
use confab_core::store::{Store, StoreError, StoreResult};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Tuning of the message log. The defaults suit one SQLite file on one machine.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Commit requests that may wait for the writer; when full, senders wait (backpressure).
    pub queue_capacity: usize,
    /// Most messages committed in one transaction.
    pub max_batch: usize,
    /// How long messages, and with them their client ids, are kept; `None` keeps them for
    /// ever. This is also the window in which a resend is recognised as one.
    pub retention: Option<Duration>,
    /// How often expired messages are purged when `retention` is set.
    pub purge_interval: Duration,
    /// How long after its commit a message may be retracted by its sender (XEP-0424);
    /// `None` for ever. Moderators (XEP-0425) are not bound by it.
    pub retract_window: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch: 2048,
            retention: None,
            purge_interval: Duration::from_secs(3600),
            retract_window: Some(Duration::from_secs(86_400)),
        }
    }
}

/// Counters of the writer's work, for tests, benchmarks and later metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Transactions committed (or attempted).
    pub batches: AtomicU64,
    /// Messages in those transactions, duplicates included.
    pub messages: AtomicU64,
    /// Transactions that failed.
    pub failed_batches: AtomicU64,
    /// Microseconds spent waiting for `append`: the writer's busy time.
    pub append_micros: AtomicU64,
}

/// One message waiting for the writer, and where its outcome goes.
struct Request {
    message: NewMessage,
    reply: oneshot::Sender<StoreResult<CommitReceipt>>,
}

/// Handle to the batching writer; the writer task ends once every handle is dropped and the
/// queue is drained.
pub struct MessageLog {
    requests: mpsc::Sender<Request>,
    /// Makes "take a server id, enqueue" atomic, so ids enter the queue in order.
    order: Mutex<()>,
    stats: Arc<LogStats>,
    /// The retention task, stopped with the log.
    purger: Option<JoinHandle<()>>,
    /// Retractions and corrections, over the same store.
    recall: Recall,
}

impl std::fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageLog")
            .field(
                "queued",
                &(self.requests.max_capacity() - self.requests.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl MessageLog {
    /// Starts the writer (and, with a retention window, the purge task) on the current tokio
    /// runtime.
    pub fn new(store: Arc<dyn Store>, config: LogConfig) -> Self {
        let (requests, queue) = mpsc::channel(config.queue_capacity.max(1));
        let recall = Recall::new(store.clone(), config.retract_window);
        let stats = Arc::new(LogStats::default());
        tokio::spawn(write_batches(
            store.clone(),
            queue,
            config.max_batch.max(1),
            stats.clone(),
        ));
        let purger = config
            .retention
            .map(|retention| tokio::spawn(purge_expired(store, retention, config.purge_interval)));
        Self {
            requests,
            order: Mutex::new(()),
            stats,
            purger,
            recall,
        }
    }

    /// Commits the message `build` makes around the server id the log assigns, and returns
    /// its receipt (the original one for a duplicate). Waits for room in the queue when the
    /// writer is behind.
    ///
    /// `build` runs while the log holds its ordering lock (see "Order" above), so it should
    /// only fill in the message: the id has to be in the XML that is stored.
    pub async fn commit(
        &self,
        build: impl FnOnce(String) -> NewMessage,
    ) -> Result<CommitReceipt, StoreError> {
        let permit = self.requests.reserve().await.map_err(|_| stopped())?;
        let (reply, outcome) = oneshot::channel();
        {
            // Taking the id and queueing are one step for every other sender: the lock is
            // held across no await, only across the id, `build` and a non-blocking send.
            let _order = self.order.lock();
            let message = build(new_server_id());
            permit.send(Request { message, reply });
        }
        outcome.await.map_err(|_| stopped())?
    }

    /// Queues the message `build` makes, like [`MessageLog::commit`], but returns as soon as
    /// it is queued, with the commit still to come. For committers that must fix their order
    /// under a lock of their own (a group chat room) without holding that lock through the
    /// commit: what is queued first is committed first, and its [`PendingCommit`] resolves
    /// no later than those of messages queued after it.
    pub async fn submit(
        &self,
        build: impl FnOnce(String) -> NewMessage,
    ) -> Result<PendingCommit, StoreError> {
        let permit = self.requests.reserve().await.map_err(|_| stopped())?;
        let (reply, outcome) = oneshot::channel();
        {
            // As in `commit`: the id and the place in the queue are taken together.
            let _order = self.order.lock();
            let message = build(new_server_id());
            permit.send(Request { message, reply });
        }
        Ok(PendingCommit { outcome })
    }

    /// Retraction, moderation and correction over the log's store (see [`Recall`]).
    pub fn recall(&self) -> &Recall {
        &self.recall
    }

    /// The writer's counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }
}

impl Drop for MessageLog {
    fn drop(&mut self) {
        if let Some(purger) = self.purger.take() {
            purger.abort();
        }
    }
}

/// A message [`MessageLog::submit`] queued, whose commit is still to come.
#[derive(Debug)]
pub struct PendingCommit {
    outcome: oneshot::Receiver<StoreResult<CommitReceipt>>,
}

impl PendingCommit {
    /// Waits for the commit: the receipt (the original one for a duplicate) or why the
    /// batch failed.
    pub async fn committed(self) -> Result<CommitReceipt, StoreError> {
        self.outcome.await.map_err(|_| stopped())?
    }
}

/// The error a caller sees when the writer is gone (it panicked, or the runtime is ending).
fn stopped() -> StoreError {
    StoreError::Unavailable("message log stopped".into())
}

/// `StoreError` is not `Clone`; every waiter of a failed batch gets its own copy.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Quota(what) => StoreError::Quota(what),
        StoreError::Unavailable(text) => StoreError::Unavailable(text.clone()),
    }
}

/// The writer task: see the module documentation for the batching policy.
async fn write_batches(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<Request>,
    max_batch: usize,
    stats: Arc<LogStats>,
) {
    let mut requests = Vec::with_capacity(max_batch);
    let mut messages = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    // `recv_many` waits for the first request, then takes what is already queued.
    while queue.recv_many(&mut requests, max_batch).await > 0 {
        for request in requests.drain(..) {
            messages.push(request.message);
            replies.push(request.reply);
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let appended = store.append(&messages).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.append_micros.fetch_add(micros, Ordering::Relaxed);
        let outcome = match appended {
            Ok(receipts) if receipts.len() == replies.len() => Ok(receipts),
            Ok(receipts) => Err(StoreError::Unavailable(format!(
                "archive returned {} receipts for {} messages",
                receipts.len(),
                replies.len()
            ))),
            Err(error) => Err(error),
        };
        messages.clear();
        match outcome {
            Ok(receipts) => {
                for (reply, receipt) in replies.drain(..).zip(receipts) {
                    // A caller that stopped waiting does not need its receipt.
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(error) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, messages = replies.len(), "message batch not committed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// Deletes messages older than `retention` at start and then every `interval`.
async fn purge_expired(store: Arc<dyn Store>, retention: Duration, interval: Duration) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(retention_ms);
        match store.purge_before(cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired messages purged from the archive"),
            Err(error) => tracing::warn!(%error, "archive purge failed; retried next interval"),
        }
    }
}
