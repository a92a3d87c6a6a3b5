//! `chat`: P pairs of users message each other; reports sent, received, lost, duplicated,
//! throughput, latency percentiles and (with `--pid`) server CPU per delivered message.
//!
//! Each message body is `<seq> <micros>`: a per-direction sequence number and the send time
//! on this process's monotonic clock (both ends are in this process, so no clock skew). At a
//! fixed `--rate` the sender also records how late each send was against its schedule
//! ("send lag"): if the server pushes back (full socket buffers), the lag grows, and latency
//! measured from the actual send would hide that wait (coordinated omission), so both are
//! reported. The stamp is not the scheduled time itself because tokio's timer wakes up to a
//! millisecond late, which would add tool noise to every sample. With `--max`, each pair keeps
//! at most `--inflight` messages sent but not yet received.
//!
//! Per pair, each connection has a reader task (counts, dedups, records latency, answers
//! pings) and a sender task writing to the other user's full JID, which works whether or not
//! the server routes by presence (RFC 6121 §8.5.3.1).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::client::{Read, Session, ping_reply, read_frame};
use crate::report::{self, CpuMeter, Failures};
use crate::transport::Stream;
use crate::xml::{self, Scanner};
use crate::{ChatArgs, logins, sasl};

/// Microseconds since this process's clock origin.
fn now_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Counters one pair's tasks share.
struct Pair {
    /// With `--max`: free slots of the pair's window; a receipt gives one back.
    window: Semaphore,
    /// Messages sent, per direction (0: first user to second, 1: back).
    sent: [AtomicU64; 2],
    /// Distinct messages received (or bounced with an error), per direction.
    settled: [AtomicU64; 2],
}

/// What a reader saw.
struct ReaderStats {
    hist: Histogram<u64>,
    received: u64,
    duplicates: u64,
    /// Bounces and unexpected stanzas, by reason.
    errors: Failures,
    /// When the last message arrived, in [`now_us`] time.
    last_us: u64,
    /// Why the connection ended before we stopped it, if it did.
    dropped: Option<String>,
}

type Writer = Arc<Mutex<WriteHalf<Stream>>>;

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let config = Arc::new(common.client_config(!args.no_presence)?);
    let users: Vec<u64> = (0..args.pairs * 2).map(|n| common.first + n).collect();
    let total = users.len() as u64;
    let plan = logins::Plan {
        users,
        prefix: common.users_prefix.clone(),
        password: common.password.clone(),
        rate: None,
        concurrency: common.concurrency,
        sources: common.sources(total)?,
    };
    let mut outcomes = logins::start(config, plan);
    let mut sessions: Vec<Option<Session>> = (0..total).map(|_| None).collect();
    let mut failures = Failures::new();
    let mut progress = logins::Progress::new("chat login:");
    for done in 1..=total {
        let Some(outcome) = outcomes.recv().await else {
            bail!("login dispatcher stopped early");
        };
        match outcome.result {
            Ok(session) => sessions[(outcome.index - common.first) as usize] = Some(session),
            Err(failure) => *failures.entry(failure.to_string()).or_default() += 1,
        }
        progress.tick(done, failures.values().sum(), total);
    }
    let failed_logins: u64 = failures.values().sum();
    report::print_failures("login failures", &failures);

    // Pairs where both users are online; the rest are reported and skipped.
    let mut ready = Vec::new();
    let mut it = sessions.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        if let (Some(a), Some(b)) = (a, b) {
            ready.push((a, b));
        }
    }
    if ready.is_empty() {
        bail!("no pair could log in");
    }
    let pairs = ready.len();
    // Let presence echoes and any post-login traffic settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let window = if args.max { args.inflight.max(1) } else { 0 };
    let meter = CpuMeter::start(common.pid);
    let start_us = now_us();
    let deadline = tokio::time::Instant::now() + duration;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut shared = Vec::new();
    for (a, b) in ready {
        let pair = Arc::new(Pair {
            window: Semaphore::new(window),
            sent: [AtomicU64::new(0), AtomicU64::new(0)],
            settled: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        shared.push(pair.clone());
        let (a_jid, b_jid) = (a.jid.clone(), b.jid.clone());
        let (a_in, a_wr) = split(a);
        let (b_in, b_wr) = split(b);
        // Direction 0 arrives at b, direction 1 at a.
        readers.push(tokio::spawn(reader(
            b_in,
            b_wr.clone(),
            pair.clone(),
            0,
            stop_rx.clone(),
        )));
        readers.push(tokio::spawn(reader(
            a_in,
            a_wr.clone(),
            pair.clone(),
            1,
            stop_rx.clone(),
        )));
        let per_direction = args.rate / 2.0;
        let mode = if args.max {
            Mode::Window
        } else {
            Mode::Rate(per_direction)
        };
        senders.push(tokio::spawn(sender(
            a_wr,
            b_jid,
            pair.clone(),
            0,
            mode,
            deadline,
        )));
        senders.push(tokio::spawn(sender(b_wr, a_jid, pair, 1, mode, deadline)));
    }
    eprintln!("chat: {pairs} pairs sending for {} s", args.duration);

    let mut send_errors = Failures::new();
    let mut lag = report::histogram();
    for handle in senders {
        match handle.await {
            Ok((hist, error)) => {
                lag.add(&hist).expect("same histogram bounds");
                if let Some(reason) = error {
                    *send_errors.entry(reason).or_default() += 1;
                }
            }
            Err(error) => {
                *send_errors
                    .entry(format!("sender failed: {error}"))
                    .or_default() += 1
            }
        }
    }
    let sent_total = || -> u64 {
        shared
            .iter()
            .map(|p| p.sent[0].load(Ordering::Relaxed) + p.sent[1].load(Ordering::Relaxed))
            .sum()
    };
    let settled_total = || -> u64 {
        shared
            .iter()
            .map(|p| p.settled[0].load(Ordering::Relaxed) + p.settled[1].load(Ordering::Relaxed))
            .sum()
    };
    let grace_end = Instant::now() + Duration::from_secs_f64(args.grace.max(0.0));
    while settled_total() < sent_total() && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = meter.stop();
    let _ = stop_tx.send(true);

    let mut hist = report::histogram();
    let (mut received, mut duplicates, mut last_us) = (0u64, 0u64, start_us);
    let mut errors = Failures::new();
    let mut drops = Failures::new();
    for handle in readers {
        match handle.await {
            Ok(stats) => {
                hist.add(&stats.hist).expect("same histogram bounds");
                received += stats.received;
                duplicates += stats.duplicates;
                last_us = last_us.max(stats.last_us);
                for (reason, n) in stats.errors {
                    *errors.entry(reason).or_default() += n;
                }
                if let Some(reason) = stats.dropped {
                    *drops.entry(reason).or_default() += 1;
                }
            }
            Err(error) => *drops.entry(format!("reader failed: {error}")).or_default() += 1,
        }
    }
    let sent = sent_total();
    let bounced: u64 = errors.values().sum();
    let lost = sent.saturating_sub(received + bounced);
    // Over the sending time, or until the last delivery if the server fell behind.
    let active_s = ((last_us.saturating_sub(start_us)) as f64 / 1e6).max(args.duration);
    let throughput = received as f64 / active_s.max(1e-9);
    let (computed, cached) = sasl::cache_stats();
    let cpu_json = cpu.json();
    let server_us_per_msg = cpu
        .server
        .filter(|_| received > 0)
        .map(|s| report::round3(s * 1e6 / received as f64));
    let result = json!({
        "scenario": "chat",
        "server": common.server,
        "tls": common.tls,
        "mech": common.mechanism.name(),
        "pairs": pairs,
        "failed_logins": failed_logins,
        "login_failures": failures,
        "mode": if args.max { "max" } else { "rate" },
        "rate_per_pair": (!args.max).then_some(args.rate),
        "inflight_per_pair": args.max.then_some(window),
        "duration_s": args.duration,
        "sent": sent,
        "received": received,
        "lost": lost,
        "duplicated": duplicates,
        "bounced": bounced,
        "bounce_reasons": errors,
        "send_errors": send_errors,
        "drops": drops,
        "throughput_per_s": report::round3(throughput),
        "offered_per_s": report::round3(sent as f64 / args.duration.max(1e-9)),
        "latency": report::summary(&hist),
        "send_lag": (!args.max).then(|| report::summary(&lag)),
        "cpu": cpu_json,
        "server_cpu_us_per_msg": server_us_per_msg,
        "pbkdf2_computed": computed,
        "pbkdf2_cached": cached,
    });

    println!(
        "== chat: {pairs} pairs, {} for {} s ==",
        if args.max {
            format!("max rate, {window} in flight per pair")
        } else {
            format!("{} msgs/s per pair", args.rate)
        },
        args.duration
    );
    println!("sent            {sent}");
    println!("received        {received}   ({throughput:.0} msgs/s)");
    println!("lost            {lost}");
    println!("duplicated      {duplicates}");
    if bounced > 0 {
        println!("bounced         {bounced}");
    }
    println!("latency         {}", report::summary_line(&hist));
    if !args.max {
        println!("send lag        {}", report::summary_line(&lag));
    }
    println!("cpu             {}", cpu.line());
    if let Some(us) = server_us_per_msg {
        println!("server cpu      {us:.1} µs per delivered message");
    }
    report::print_failures("bounces", &errors);
    report::print_failures("send errors", &send_errors);
    report::print_failures("connections lost", &drops);
    println!("{result}");
    Ok(())
}

/// Splits a session into its read half (with what is already buffered) and a shared writer.
fn split(session: Session) -> (Inbound, Writer) {
    let conn = session.conn;
    let (rd, wr) = tokio::io::split(conn.stream);
    (
        Inbound {
            rd,
            buf: conn.buf,
            scanner: conn.scanner,
        },
        Arc::new(Mutex::new(wr)),
    )
}

/// The receiving side of a session: the read half and the framing state so far.
struct Inbound {
    rd: ReadHalf<Stream>,
    buf: BytesMut,
    scanner: Scanner,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Messages per second in this direction.
    Rate(f64),
    /// As fast as the pair's window allows.
    Window,
}

/// Most messages one write carries when the window has several free slots.
const MAX_BATCH: usize = 32;

/// Sends messages to `to` until `deadline`; returns how late sends were against the
/// schedule (at a fixed rate) and why sending stopped early, if it did.
async fn sender(
    writer: Writer,
    to: String,
    pair: Arc<Pair>,
    direction: usize,
    mode: Mode,
    deadline: tokio::time::Instant,
) -> (Histogram<u64>, Option<String>) {
    let mut lag = report::histogram();
    let error = send_until(writer, to, pair, direction, mode, deadline, &mut lag).await;
    (lag, error.err())
}

async fn send_until(
    writer: Writer,
    to: String,
    pair: Arc<Pair>,
    direction: usize,
    mode: Mode,
    deadline: tokio::time::Instant,
    lag: &mut Histogram<u64>,
) -> Result<(), String> {
    let prefix = format!("<message to='{}' type='chat'><body>", xml::escape(&to));
    const SUFFIX: &str = "</body></message>";
    let mut out = Vec::with_capacity(MAX_BATCH * (prefix.len() + 48));
    let mut seq = 0u64;
    let start = tokio::time::Instant::now();
    let start_us = now_us();
    loop {
        out.clear();
        match mode {
            Mode::Rate(rate) => {
                let due_offset = Duration::from_secs_f64(seq as f64 / rate);
                let due = start + due_offset;
                if due >= deadline {
                    return Ok(());
                }
                tokio::time::sleep_until(due).await;
                let stamp = now_us();
                let scheduled = start_us + due_offset.as_micros() as u64;
                report::record(lag, stamp.saturating_sub(scheduled));
                push_message(&mut out, &prefix, seq, stamp, SUFFIX);
                seq += 1;
            }
            Mode::Window => {
                let permit = tokio::select! {
                    permit = pair.window.acquire() => permit,
                    _ = tokio::time::sleep_until(deadline) => return Ok(()),
                };
                let Ok(permit) = permit else { return Ok(()) };
                permit.forget();
                let mut batch = 1;
                while batch < MAX_BATCH {
                    match pair.window.try_acquire() {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                    batch += 1;
                }
                let stamp = now_us();
                for _ in 0..batch {
                    push_message(&mut out, &prefix, seq, stamp, SUFFIX);
                    seq += 1;
                }
            }
        }
        if let Err(error) = writer.lock().await.write_all(&out).await {
            return Err(format!("write: {error}"));
        }
        pair.sent[direction].store(seq, Ordering::Relaxed);
    }
}

fn push_message(out: &mut Vec<u8>, prefix: &str, seq: u64, stamp: u64, suffix: &str) {
    use std::io::Write as _;
    out.extend_from_slice(prefix.as_bytes());
    let _ = write!(out, "{seq} {stamp}");
    out.extend_from_slice(suffix.as_bytes());
}

/// Reads one connection until stopped: records each message of `direction`.
async fn reader(
    inbound: Inbound,
    writer: Writer,
    pair: Arc<Pair>,
    direction: usize,
    mut stop: watch::Receiver<bool>,
) -> ReaderStats {
    let mut stats = ReaderStats {
        hist: report::histogram(),
        received: 0,
        duplicates: 0,
        errors: Failures::new(),
        last_us: 0,
        dropped: None,
    };
    let Inbound {
        mut rd,
        mut buf,
        mut scanner,
    } = inbound;
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let element = tokio::select! {
            _ = stop.changed() => break,
            read = read_frame(&mut rd, &mut buf, &mut scanner, "chat") => match read {
                Ok(Read::Element(element)) => element,
                Ok(Read::Open) => continue,
                Err(failure) => {
                    stats.dropped = Some(failure.to_string());
                    break;
                }
            },
        };
        match xml::tag_name(&element) {
            b"message" => {}
            b"iq" => {
                if let Some(reply) = ping_reply(&element) {
                    let _ = writer.lock().await.write_all(reply.as_bytes()).await;
                }
                continue;
            }
            _ => continue,
        }
        if xml::attr(&element, "type") == Some(b"error") {
            *stats
                .errors
                .entry(format!("bounced: {}", xml::error_reason(&element)))
                .or_default() += 1;
            // The bounce went back to the sender's connection: it settles the other way.
            settle(&pair, 1 - direction);
            continue;
        }
        let Some((seq, stamp)) = xml::child_text(&element, "body").and_then(parse_body) else {
            *stats
                .errors
                .entry("message without a bench body".to_owned())
                .or_default() += 1;
            continue;
        };
        let now = now_us();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & (1 << bit) != 0 {
            stats.duplicates += 1;
            continue;
        }
        seen[word] |= 1 << bit;
        stats.received += 1;
        stats.last_us = now;
        report::record(&mut stats.hist, now.saturating_sub(stamp));
        settle(&pair, direction);
    }
    stats
}

/// One message of `direction` reached its end (delivered or bounced).
fn settle(pair: &Pair, direction: usize) {
    pair.settled[direction].fetch_add(1, Ordering::Relaxed);
    pair.window.add_permits(1);
}

/// Parses a body `"<seq> <micros>"`.
fn parse_body(body: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let (seq, stamp) = text.trim().split_once(' ')?;
    Some((seq.parse().ok()?, stamp.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let mut out = Vec::new();
        push_message(
            &mut out,
            "<message to='b'><body>",
            42,
            1234,
            "</body></message>",
        );
        assert_eq!(out, b"<message to='b'><body>42 1234</body></message>");
        let body = xml::child_text(&out, "body").expect("body");
        assert_eq!(parse_body(body), Some((42, 1234)));
        assert_eq!(parse_body(b"hello"), None);
    }
}
