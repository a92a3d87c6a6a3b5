//! The batching writer under concurrency, and its throughput.

use confab_core::archive::{CommitReceipt, NewMessage};
use confab_core::store::Store;
use confab_log::{LogConfig, MessageLog};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// Builds a realistic chat message (about 250 bytes serialized) in conversation
/// `c{conversation}` around the server id the log assigns.
fn message(conversation: usize, client_id: Option<String>) -> impl FnOnce(String) -> NewMessage {
    move |server_id| build(conversation, client_id, server_id)
}

fn build(conversation: usize, client_id: Option<String>, server_id: String) -> NewMessage {
    let xml = format!(
        "<message xmlns='jabber:client' type='chat' from='u{conversation}@localhost/phone' \
         to='v{conversation}@localhost'><body>The quick brown fox jumps over the lazy dog \
         number {server_id}.</body><stanza-id xmlns='urn:xmpp:sid:0' id='{server_id}' \
         by='v{conversation}@localhost'/></message>"
    );
    NewMessage {
        server_id,
        conversation: format!("c{conversation}"),
        sender: format!("u{conversation}@localhost"),
        recipient: format!("v{conversation}@localhost"),
        client_id,
        stamp_ms: chrono::Utc::now().timestamp_millis(),
        xml,
        counts_unread: true,
        for_later: false,
    }
}

async fn on_disk() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = confab_store::SqliteStore::open(dir.path())
        .await
        .expect("open");
    (dir, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_number_every_conversation_without_gaps() {
    const TASKS: usize = 50;
    const EACH: usize = 100;
    const CONVERSATIONS: usize = 10;
    let (_dir, store) = on_disk().await;
    let log = Arc::new(MessageLog::new(store.clone(), LogConfig::default()));

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let mut receipts = Vec::with_capacity(EACH);
            for n in 0..EACH {
                let conversation = (task + n) % CONVERSATIONS;
                // Half the messages carry a client id, unique per task and message.
                let client_id = (n % 2 == 0).then(|| format!("t{task}-m{n}"));
                let msg = message(conversation, client_id);
                let receipt = log.commit(msg).await.expect("commit");
                receipts.push((conversation, receipt));
            }
            receipts
        });
    }
    let mut receipts: Vec<(usize, CommitReceipt)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        receipts.extend(done.expect("task"));
    }
    assert_eq!(receipts.len(), TASKS * EACH);
    assert!(receipts.iter().all(|(_, r)| !r.duplicate));

    for conversation in 0..CONVERSATIONS {
        let key = format!("c{conversation}");
        let history = store
            .history(&key, None, None, 100_000)
            .await
            .expect("history");
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        let n = receipts.iter().filter(|(c, _)| *c == conversation).count();
        let expected: Vec<u64> = (1..=n as u64).collect();
        assert_eq!(seqs, expected, "{key}");
        // Server ids are taken in queue order and the queue commits in order, so the
        // commit-time sequence and the server id agree on the order of every pair.
        assert!(
            history.windows(2).all(|w| w[0].server_id < w[1].server_id),
            "{key}: server id order differs from commit order"
        );
        // Every receipt names exactly the stored row.
        let stored: HashSet<(u64, &str)> = history
            .iter()
            .map(|m| (m.seq, m.server_id.as_str()))
            .collect();
        for (_, receipt) in receipts.iter().filter(|(c, _)| *c == conversation) {
            assert!(stored.contains(&(receipt.seq, receipt.server_id.as_str())));
        }
    }
    let stats = log.stats();
    let batches = stats.batches.load(Ordering::Relaxed);
    assert_eq!(
        stats.messages.load(Ordering::Relaxed),
        (TASKS * EACH) as u64
    );
    assert!(
        batches < (TASKS * EACH) as u64,
        "concurrent commits share transactions ({batches} batches)"
    );
}

/// Percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Pushes `total` messages from `tasks` concurrent tasks, spread over `conversations`,
/// through a log with `max_batch` into an on-disk store and prints messages/s, commit latency
/// percentiles and the writer's time per message.
/// Submitted messages are committed in the order they were queued, and the receipts come
/// back whichever order they are awaited in; a later submission never overtakes an earlier
/// one in the conversation's sequence.
#[tokio::test]
async fn submitted_messages_commit_in_queue_order() {
    let (_dir, store) = on_disk().await;
    let log = MessageLog::new(store.clone(), LogConfig::default());
    let mut pending = Vec::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        let pending_commit = log
            .submit(|server_id| {
                ids.push(server_id.clone());
                build(0, Some(format!("s{n}")), server_id)
            })
            .await
            .expect("queued");
        pending.push(pending_commit);
    }
    let mut receipts = Vec::new();
    // Awaited last first: the order of the sequence is the order of submission regardless.
    for pending_commit in pending.into_iter().rev() {
        receipts.push(pending_commit.committed().await.expect("committed"));
    }
    receipts.reverse();
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let server_ids: Vec<String> = receipts.into_iter().map(|r| r.server_id).collect();
    assert_eq!(server_ids, ids);
    // A resend through `submit` is a duplicate like through `commit`.
    let again = log
        .submit(|server_id| build(0, Some("s2".into()), server_id))
        .await
        .expect("queued")
        .committed()
        .await
        .expect("committed");
    assert!(again.duplicate);
    assert_eq!(again.seq, 3);
}

async fn measure(label: &str, total: usize, tasks: usize, conversations: usize, max_batch: usize) {
    let (_dir, store) = on_disk().await;
    let log = Arc::new(MessageLog::new(
        store,
        LogConfig {
            max_batch,
            ..LogConfig::default()
        },
    ));
    let each = total / tasks;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let log = log.clone();
        set.spawn(async move {
            let mut latencies = Vec::with_capacity(each);
            for n in 0..each {
                let msg = message(task % conversations, Some(format!("t{task}-{n}")));
                let sent = Instant::now();
                log.commit(msg).await.expect("commit");
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = set.join_next().await {
        latencies.extend(done.expect("task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let stats = log.stats();
    let batches = stats.batches.load(Ordering::Relaxed);
    println!(
        "{label}: {} messages from {tasks} tasks in {:.2} s = {:.0} msg/s; \
         commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {batches} transactions, \
         {:.1} messages and {:.2} ms each; writer busy {:.1} µs per message",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        latencies.len() as f64 / batches.max(1) as f64,
        stats.append_micros.load(Ordering::Relaxed) as f64 / batches.max(1) as f64 / 1000.0,
        stats.append_micros.load(Ordering::Relaxed) as f64 / latencies.len() as f64,
    );
}

/// `cargo test -p confab-log --release -- --ignored --nocapture writer_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run on demand in release mode"]
async fn writer_throughput() {
    measure("group commit, 200 tasks", 100_000, 200, 200, 2048).await;
    // The shape of `scripts/bench-durable-ack.sh max`: 100 conversations, 16 messages in
    // flight in each, so the queue holds up to 1,600.
    measure("100 conversations x 16 in flight", 160_000, 1600, 100, 2048).await;
    // The same load as the last, capped at 256 per transaction: the cost of small batches.
    measure("max_batch 256", 160_000, 1600, 100, 256).await;
    // The same load, one transaction per message, for comparison (fewer messages: slow).
    measure("no batching (max_batch 1)", 5_000, 200, 200, 1).await;
}
