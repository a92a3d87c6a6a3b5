//! `chat`: P pairs of users message each other; reports sent, received, acknowledged, lost,
//! duplicated, throughput, delivery and acknowledgement latency percentiles and (with
//! `--pid`) server CPU per delivered message.
//!
//! # Stamps
//! Every message carries, in its stanza `id` and in its body, a per-direction sequence number,
//! the time it was *due* and the time it was written, on this process's monotonic clock (both
//! ends are in this process, so there is no clock skew). The id is
//! `<run nonce>-<seq>-<due µs>-<sent µs>`: fresh in every run, so a Confab server never takes a
//! message for a resend of an earlier run's (it would drop it and repeat the old receipt).
//!
//! # Acknowledgements
//! Confab commits each chat message to its archive, then sends the *sender* a commit receipt
//! (`<ack xmlns='urn:confab:ack:0' client-id='…'/>`, docs/protocol/confab-ack.md) carrying the
//! id the message was sent with. The reader of the sender's connection parses the id back,
//! checks that it names a message this run sent, and records *ack latency* (due → receipt)
//! next to *delivery latency* (due → arrival at the recipient). At the end each direction is
//! reconciled from the sets of sequence numbers acknowledged and received ([`tally`]): a
//! message is *lost* only if the server acknowledged it and it never arrived; one sent but
//! never acknowledged is *unacked*, reported separately. Servers without receipts
//! (ejabberd, Prosody) show the ack figures as "n/a" (null in JSON) and count as lost every
//! message sent and neither received nor bounced. Whether receipts are expected is asked once
//! with disco#info (the `urn:confab:ack:0` feature) before the clock starts.
//!
//! # Pacing
//! At a fixed `--rate` the run is open-loop: each sender has a schedule (message k of sender i
//! is due at `(k + i/n) / r` seconds, so the n senders' slots interleave evenly instead of all
//! firing at once) and latencies count from the *due* time, so a server that pushes back
//! makes latency grow rather than slowing the offered load (coordinated omission). After a
//! wake-up, every message already due goes out in one write, each with its own due time, so
//! the achieved rate holds even when the tool or the server stalls. tokio's timer wakes up
//! to a millisecond late, so latency from the due time has a floor of about that much; the
//! report therefore also gives the *send lag* (due → written) and both latencies measured from
//! the actual write, which show what the server alone added. With `--max`, each pair keeps at
//! most `--inflight` messages sent but not yet received, and due = written.
//!
//! Per pair, each connection has a reader task (counts, dedups, records latency, matches
//! receipts, answers pings) and a sender task writing to the other user's full JID, which
//! works whether or not the server routes by presence (RFC 6121 §8.5.3.1).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::client::{Read, Session};
use crate::link::{LinkReader, SharedWriter, bounce, message_to_count};
use crate::report::{self, CpuMeter, Failures};
use crate::sm::{self, SmCounter, SmEvent};
use crate::stamp::{
    SeqSet, Stamp, Tally, due_offset, now_us, parse_body, parse_id, per_second, push_id, tally,
};
use crate::xml;
use crate::{ChatArgs, logins, sasl, transport};

/// Confab's commit receipt namespace.
pub(crate) const ACK_NS: &str = "urn:confab:ack:0";

/// Counters one pair's tasks share. Index 0 is the first user's direction (to the second),
/// 1 the way back.
struct Pair {
    /// With `--max`: free slots of the pair's window; a delivery gives one back.
    window: Semaphore,
    /// Sequence numbers handed out, per direction: set before the write, so a message or
    /// receipt naming a sequence number at or above it was never sent.
    issued: [AtomicU64; 2],
    /// Messages written, per direction.
    sent: [AtomicU64; 2],
    /// Distinct messages received or bounced with an error, per direction.
    settled: [AtomicU64; 2],
    /// Distinct messages acknowledged or bounced, per direction.
    answered: [AtomicU64; 2],
}

impl Pair {
    fn new(window: usize) -> Self {
        let zero = || [AtomicU64::new(0), AtomicU64::new(0)];
        Self {
            window: Semaphore::new(window),
            issued: zero(),
            sent: zero(),
            settled: zero(),
            answered: zero(),
        }
    }
}

/// Writes one message: `<message to=… type='chat' id=…><body>seq due sent</body></message>`.
fn push_message(out: &mut Vec<u8>, to: &str, nonce: &str, stamp: Stamp) {
    use std::io::Write as _;
    let _ = write!(out, "<message to='{to}' type='chat' id='");
    push_id(out, nonce, stamp);
    let _ = write!(
        out,
        "'><body>{} {} {}</body></message>",
        stamp.seq, stamp.due_us, stamp.sent_us
    );
}

/// A commit receipt, as far as this run is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipt {
    /// It names a message of this run.
    Ours(Stamp),
    /// It does not; the text says why.
    Unmatched(&'static str),
}

/// The receipt `element` carries, if it is a `urn:confab:ack:0` receipt at all.
fn receipt(element: &[u8], nonce: &str) -> Option<Receipt> {
    let ack = xml::child(element, "ack")?;
    if xml::attr(ack, "xmlns") != Some(ACK_NS.as_bytes()) {
        return None;
    }
    Some(match xml::attr(ack, "client-id") {
        None => Receipt::Unmatched("receipt without client-id"),
        Some(id) => match parse_id(id, nonce) {
            Some(stamp) => Receipt::Ours(stamp),
            None => Receipt::Unmatched("receipt for a client id this run did not send"),
        },
    })
}

/// Whether a bench message was written by an earlier run: its id carries another run's nonce.
/// Such late deliveries (an earlier run's tail drained from offline storage, or still in flight
/// when that run ended) are reported apart, not as sequence numbers this run never sent.
fn from_an_earlier_run(element: &[u8], nonce: &str) -> bool {
    xml::attr(element, "id").is_some_and(|id| {
        parse_id(id, nonce).is_none()
            && std::str::from_utf8(id).is_ok_and(|id| {
                let mut parts = id.split('-');
                parts.next().is_some_and(|n| n.len() == nonce.len())
                    && parts.all(|part| part.parse::<u64>().is_ok())
            })
    })
}

/// What a reader saw: messages of its direction arriving, and receipts and bounces for the
/// other direction (sent from the same connection).
struct ReaderStats {
    /// Delivery latency from the due time.
    delivery: Histogram<u64>,
    /// Delivery latency from the write (fixed rate only).
    delivery_from_send: Option<Histogram<u64>>,
    /// Acknowledgement latency from the due time.
    ack: Histogram<u64>,
    /// Acknowledgement latency from the write (fixed rate only).
    ack_from_send: Option<Histogram<u64>>,
    /// Sequence numbers received (this reader's direction).
    received: SeqSet,
    duplicates: u64,
    /// Sequence numbers acknowledged (the other direction).
    acked: SeqSet,
    ack_duplicates: u64,
    /// Error replies to the other direction's messages.
    bounced: u64,
    /// Bounces and unexpected stanzas, by reason.
    errors: Failures,
    /// When the last message and the last receipt arrived, in [`now_us`] time.
    last_us: u64,
    last_ack_us: u64,
    /// Why the connection ended before we stopped it, if it did.
    dropped: Option<String>,
    /// With stream management enabled on this connection: its counter.
    sm: Option<SmCounter>,
}

type Writer = SharedWriter;

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let common = &args.common;
    // Pairs where both users are online; the rest are reported and skipped.
    let (mut ready, failures) =
        logins::login_pairs(common, &args.load, !args.no_presence, "chat login:").await?;
    let failed_logins: u64 = failures.values().sum();
    if ready.is_empty() {
        bail!("no pair could log in");
    }
    let pairs = ready.len();
    let advertised = match advertises_acks(&mut ready[0].0, &common.domain).await {
        Ok(advertised) => Some(advertised),
        Err(reason) => {
            eprintln!("note: disco#info failed ({reason}); expecting receipts only if any arrive");
            None
        }
    };
    // --sm / --carbons: enable them on every session, all at once.
    let mut extras: Vec<[sm::Enabled; 2]> = Vec::new();
    let (mut sm_failures, mut carbons_failures) = (Failures::new(), Failures::new());
    if args.sm || args.carbons {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (a, b)) in ready.into_iter().enumerate() {
            for (side, mut session) in [(0, a), (1, b)] {
                let (with_sm, with_carbons) = (args.sm, args.carbons);
                tasks.spawn(async move {
                    let enabled = sm::enable(&mut session, with_sm, with_carbons).await;
                    (i, side, session, enabled)
                });
            }
        }
        let mut slots: Vec<[Option<(Session, sm::Enabled)>; 2]> =
            (0..pairs).map(|_| [None, None]).collect();
        while let Some(done) = tasks.join_next().await {
            let (i, side, session, enabled) = done?;
            for failure in &enabled.failures {
                let failures = if failure.starts_with("carbons") {
                    &mut carbons_failures
                } else {
                    &mut sm_failures
                };
                *failures.entry(failure.clone()).or_default() += 1;
            }
            slots[i][side] = Some((session, enabled));
        }
        ready = Vec::with_capacity(pairs);
        for [a, b] in slots {
            let ((a, a_enabled), (b, b_enabled)) = (
                a.expect("every task returned"),
                b.expect("every task returned"),
            );
            ready.push((a, b));
            extras.push([a_enabled, b_enabled]);
        }
        report::print_failures("stream management not enabled", &sm_failures);
        report::print_failures("carbons not enabled", &carbons_failures);
    }
    let sm_enabled = extras.iter().flatten().filter(|e| e.sm.is_some()).count();
    let carbons_enabled = extras.iter().flatten().filter(|e| e.carbons).count();
    let mut extras = extras.into_iter();

    // Let presence echoes and any post-login traffic settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let nonce: Arc<str> = format!("{:08x}", rand::random::<u32>()).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let duration = Duration::from_secs_f64(args.load.duration.max(0.0));
    let window = if args.load.max {
        args.load.inflight.max(1)
    } else {
        0
    };
    let senders_n = pairs * 2;
    let per_direction = args.load.rate / 2.0;
    let meter = CpuMeter::start(common.pid);
    let bytes_before = transport::stream_bytes();
    // One origin for every sender's schedule, on both clocks.
    let start = tokio::time::Instant::now();
    let start_us = now_us();
    let deadline = start + duration;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut shared = Vec::new();
    for (i, (a, b)) in ready.into_iter().enumerate() {
        let pair = Arc::new(Pair::new(window));
        shared.push(pair.clone());
        let (a_jid, b_jid) = (a.jid.clone(), b.jid.clone());
        let (mut a_in, a_wr) = split(a);
        let (mut b_in, b_wr) = split(b);
        [a_in.sm, b_in.sm] = extras.next().map_or([None, None], |[a, b]| [a.sm, b.sm]);
        let (a_has_sm, b_has_sm) = (a_in.sm.is_some(), b_in.sm.is_some());
        // Direction 0 arrives at b (whose connection also gets direction 1's receipts),
        // direction 1 at a.
        for (inbound, writer, direction) in [(b_in, b_wr.clone(), 0), (a_in, a_wr.clone(), 1)] {
            readers.push(tokio::spawn(reader(
                inbound,
                writer,
                pair.clone(),
                direction,
                nonce.clone(),
                !args.load.max,
                stop_rx.clone(),
            )));
        }
        for (writer, to, direction, sm) in [(a_wr, b_jid, 0, a_has_sm), (b_wr, a_jid, 1, b_has_sm)]
        {
            let mode = if args.load.max {
                Mode::Window
            } else {
                Mode::Rate {
                    rate: per_direction,
                    index: 2 * i + direction,
                    senders: senders_n,
                }
            };
            senders.push(tokio::spawn(sender(
                writer,
                Plan {
                    to: xml::escape(&to),
                    nonce: nonce.clone(),
                    pair: pair.clone(),
                    direction,
                    mode,
                    start,
                    start_us,
                    deadline,
                    sm,
                },
            )));
        }
    }
    eprintln!("chat: {pairs} pairs sending for {} s", args.load.duration);

    let mut send_errors = Failures::new();
    let mut lag = report::histogram();
    let mut send_end_us = start_us;
    let mut sm_requests_sent = 0u64;
    for handle in senders {
        match handle.await {
            Ok(outcome) => {
                sm_requests_sent += outcome.sm_requests;
                lag.add(&outcome.lag).expect("same histogram bounds");
                send_end_us = send_end_us.max(outcome.end_us);
                if let Some(reason) = outcome.error {
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
    let sum = |field: fn(&Pair) -> &[AtomicU64; 2]| -> u64 {
        shared
            .iter()
            .map(|p| {
                field(p)
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    };
    // Drain: wait for every message to arrive and, when the server sends receipts, to be
    // acknowledged, as long as the server makes progress: a server behind the offered load
    // is drained completely, and only what has not moved for --grace seconds is missing.
    let drain_start = Instant::now();
    let idle_limit = Duration::from_secs_f64(args.load.grace.max(0.0));
    let (mut progress, mut last_progress) = (u64::MAX, Instant::now());
    let drained = loop {
        let sent = sum(|p| &p.sent);
        let settled = sum(|p| &p.settled);
        let answered = sum(|p| &p.answered);
        let acks_expected = advertised == Some(true) || answered > 0;
        if settled >= sent && (!acks_expected || answered >= sent) {
            break true;
        }
        if settled + answered != progress {
            (progress, last_progress) = (settled + answered, Instant::now());
        } else if last_progress.elapsed() >= idle_limit {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let bytes_after = transport::stream_bytes();
    let _ = stop_tx.send(true);

    // Reader 2i sees direction 0 of pair i arrive and direction 1's receipts; 2i+1 the reverse.
    let mut stats = Vec::new();
    let mut drops = Failures::new();
    for handle in readers {
        match handle.await {
            Ok(reader) => stats.push(Some(reader)),
            Err(error) => {
                *drops.entry(format!("reader failed: {error}")).or_default() += 1;
                stats.push(None);
            }
        }
    }
    let mut delivery = report::histogram();
    let mut delivery_from_send = report::histogram();
    let mut ack = report::histogram();
    let mut ack_from_send = report::histogram();
    let (mut duplicates, mut ack_duplicates) = (0u64, 0u64);
    let (mut last_us, mut last_ack_us) = (start_us, start_us);
    let mut errors = Failures::new();
    for reader in stats.iter().flatten() {
        delivery.add(&reader.delivery).expect("same bounds");
        ack.add(&reader.ack).expect("same bounds");
        if let Some(hist) = &reader.delivery_from_send {
            delivery_from_send.add(hist).expect("same bounds");
        }
        if let Some(hist) = &reader.ack_from_send {
            ack_from_send.add(hist).expect("same bounds");
        }
        duplicates += reader.duplicates;
        ack_duplicates += reader.ack_duplicates;
        last_us = last_us.max(reader.last_us);
        last_ack_us = last_ack_us.max(reader.last_ack_us);
        for (reason, n) in &reader.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
        if let Some(reason) = &reader.dropped {
            *drops.entry(reason.clone()).or_default() += 1;
        }
    }
    let sm_counters = || stats.iter().flatten().filter_map(|r| r.sm.as_ref());
    let sm_acks: u64 = sm_counters().map(|c| c.acks).sum();
    let sm_requests_answered: u64 = sm_counters().map(|c| c.requests).sum();
    let sm_acked_h: u64 = sm_counters().filter_map(|c| c.last_h).map(u64::from).sum();
    let clients = pairs * 2;
    let sm_json = args.sm.then(|| {
        json!({
            "clients": clients,
            "enabled": sm_enabled,
            "all_enabled": sm_enabled == clients,
            "failures": sm_failures,
            "requests_sent": sm_requests_sent,
            "acks_received": sm_acks,
            "acked_stanzas": sm_acked_h,
            "server_requests_answered": sm_requests_answered,
        })
    });
    let carbons_json = args.carbons.then(|| {
        json!({
            "clients": clients,
            "enabled": carbons_enabled,
            "all_enabled": carbons_enabled == clients,
            "failures": carbons_failures,
        })
    });
    let any_ack = stats.iter().flatten().any(|r| r.acked.len() > 0);
    let with_acks = advertised == Some(true) || any_ack;
    let mut totals = Tally::default();
    let empty = SeqSet::default();
    for (i, pair) in shared.iter().enumerate() {
        for direction in 0..2 {
            let arrived = stats[2 * i + direction].as_ref();
            let answered = stats[2 * i + 1 - direction].as_ref();
            totals += tally(
                pair.sent[direction].load(Ordering::Relaxed),
                arrived.map_or(&empty, |r| &r.received),
                with_acks.then(|| answered.map_or(&empty, |r| &r.acked)),
                answered.map_or(0, |r| r.bounced),
            );
        }
    }
    let Tally {
        sent,
        received,
        bounced,
        acked,
        unacked,
        lost,
        received_unacked,
    } = totals;

    let offered = (!args.load.max).then_some(args.load.rate * pairs as f64);
    let sent_rate = per_second(sent, start_us, send_end_us, args.load.duration);
    // Over the sending time, or until the last arrival if the server fell behind.
    let throughput = per_second(received, start_us, last_us, args.load.duration);
    let acked_rate =
        with_acks.then(|| per_second(acked, start_us, last_ack_us, args.load.duration));
    let (computed, cached) = sasl::cache_stats();
    let cpu_json = cpu.json();
    let server_us_per_msg = cpu
        .server
        .filter(|_| received > 0)
        .map(|s| report::round3(s * 1e6 / received as f64));
    // Everything on the clients' connections while sending and draining (both legs of each
    // message, its receipt, SM traffic), per delivered message: the transports' wire cost.
    let bytes_per_msg = (received > 0).then(|| {
        let sent_bytes = bytes_after.0.saturating_sub(bytes_before.0);
        let read_bytes = bytes_after.1.saturating_sub(bytes_before.1);
        report::round3((sent_bytes + read_bytes) as f64 / received as f64)
    });
    let ack_only = |value: Value| if with_acks { value } else { Value::Null };
    let rate_only = |hist: &Histogram<u64>| (!args.load.max).then(|| report::summary(hist));
    let mut result = json!({
        "scenario": "chat",
        "server": common.server,
        "tls": common.tls,
        "mech": common.mechanism.name(),
        "pairs": pairs,
        "failed_logins": failed_logins,
        "login_failures": failures,
        "mode": if args.load.max { "max" } else { "rate" },
        "rate_per_pair": (!args.load.max).then_some(args.load.rate),
        "inflight_per_pair": args.load.max.then_some(window),
        "duration_s": args.load.duration,
        "drain_s": report::round3(drain_s),
        "drained": drained,
        "acks_advertised": advertised,
        "sent": sent,
        "received": received,
        "acked": ack_only(json!(acked)),
        "unacked": ack_only(json!(unacked)),
        "received_unacked": ack_only(json!(received_unacked)),
        "ack_duplicates": ack_only(json!(ack_duplicates)),
        "lost": lost,
        "duplicated": duplicates,
        "bounced": bounced,
        "bounce_reasons": errors,
        "send_errors": send_errors,
        "drops": drops,
        "offered_per_s": offered.map(report::round3),
        "sent_per_s": report::round3(sent_rate),
        "throughput_per_s": report::round3(throughput),
        "acked_per_s": acked_rate.map(report::round3),
        "latency": report::summary(&delivery),
        "latency_from_send": rate_only(&delivery_from_send),
        "ack_latency": ack_only(report::summary(&ack)),
        "ack_latency_from_send": ack_only(json!(rate_only(&ack_from_send))),
        "send_lag": rate_only(&lag),
        "cpu": cpu_json,
        "server_cpu_us_per_msg": server_us_per_msg,
        "sm": sm_json,
        "carbons": carbons_json,
        "pbkdf2_computed": computed,
        "pbkdf2_cached": cached,
    });
    // Set apart: one more key in the literal exceeds json!'s macro recursion limit.
    result["transport"] = json!(common.transport.name());
    result["bytes_per_msg"] = json!(bytes_per_msg);

    println!(
        "== chat: {pairs} pairs, {} for {} s ==",
        if args.load.max {
            format!("max rate, {window} in flight per pair")
        } else {
            format!("{} msgs/s per pair", args.load.rate)
        },
        args.load.duration
    );
    let na = |shown: String| if with_acks { shown } else { "n/a".to_owned() };
    println!(
        "receipts        {}",
        match (advertised, any_ack) {
            (Some(true), _) => "urn:confab:ack:0 advertised",
            (_, true) => "urn:confab:ack:0 received (not advertised)",
            (Some(false), false) => "none (server does not advertise urn:confab:ack:0)",
            (None, false) => "none (disco#info failed)",
        }
    );
    match offered {
        Some(offered) => println!(
            "sent            {sent}   ({sent_rate:.0} msgs/s achieved, {offered:.0} offered, {:.2}%)",
            sent_rate / offered * 100.0
        ),
        None => println!("sent            {sent}   ({sent_rate:.0} msgs/s)"),
    }
    println!(
        "acked           {}",
        na(format!(
            "{acked}   ({:.0} msgs/s)",
            acked_rate.unwrap_or(0.0)
        ))
    );
    println!("received        {received}   ({throughput:.0} msgs/s)");
    println!("unacked         {}", na(unacked.to_string()));
    println!(
        "lost            {lost}{}",
        if with_acks {
            "   (acknowledged, never received)"
        } else {
            "   (sent, neither received nor bounced)"
        }
    );
    if with_acks && received_unacked > 0 {
        println!("received, unacked {received_unacked}");
    }
    println!("duplicated      {duplicates}");
    println!(
        "drain           {drain_s:.2} s after sending{}",
        if drained {
            ""
        } else {
            " (stopped: no progress for --grace)"
        }
    );
    if with_acks && ack_duplicates > 0 {
        println!("ack duplicates  {ack_duplicates}");
    }
    if bounced > 0 {
        println!("bounced         {bounced}");
    }
    let since = if args.load.max {
        ""
    } else {
        " (from due time)"
    };
    println!("delivery{since}  {}", report::summary_line(&delivery));
    println!("ack{since}       {}", na(report::summary_line(&ack)));
    if !args.load.max {
        println!(
            "delivery (from write)   {}",
            report::summary_line(&delivery_from_send)
        );
        println!(
            "ack (from write)        {}",
            na(report::summary_line(&ack_from_send))
        );
        println!("send lag        {}", report::summary_line(&lag));
    }
    if args.sm {
        println!(
            "stream mgmt     enabled on {sm_enabled}/{clients} clients{}; {sm_requests_sent} <r/> \
             sent, {sm_acks} <a/> received (h total {sm_acked_h}); {sm_requests_answered} \
             server <r/> answered",
            if sm_enabled == clients { " (all)" } else { "" }
        );
    }
    if args.carbons {
        println!(
            "carbons         enabled on {carbons_enabled}/{clients} clients{}",
            if carbons_enabled == clients {
                " (all)"
            } else {
                ""
            }
        );
    }
    println!("cpu             {}", cpu.line());
    if let Some(us) = server_us_per_msg {
        println!("server cpu      {us:.1} µs per delivered message");
    }
    if let Some(bytes) = bytes_per_msg {
        println!("wire bytes      {bytes:.0} per delivered message (both ways, above TLS)");
    }
    report::print_failures("bounces and unexpected stanzas", &errors);
    report::print_failures("send errors", &send_errors);
    report::print_failures("connections lost", &drops);
    println!("{result}");
    Ok(())
}

/// Asks the server's disco#info whether it sends `urn:confab:ack:0` receipts.
async fn advertises_acks(session: &mut Session, domain: &str) -> Result<bool, String> {
    const ID: &str = "bench-disco-ack";
    let query = format!(
        "<iq type='get' id='{ID}' to='{}'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        xml::escape(domain)
    );
    let conn = &mut session.conn;
    let ask = async {
        conn.send(query.as_bytes()).await?;
        loop {
            let element = conn.element().await?;
            if conn.answer_ping(&element).await? {
                continue;
            }
            if xml::tag_name(&element) == b"iq" && xml::attr(&element, "id") == Some(ID.as_bytes())
            {
                let found = xml::attr(&element, "type") == Some(b"result")
                    && xml::find(&element, ACK_NS.as_bytes()).is_some();
                return Ok(found);
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(result) => result.map_err(|failure: crate::client::Failure| failure.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Splits a session into its read half (with what is already buffered) and a shared writer.
fn split(session: Session) -> (Inbound, Writer) {
    let (rd, wr) = session.conn.link.split();
    (Inbound { rd, sm: None }, Arc::new(Mutex::new(wr)))
}

/// The receiving side of a session: the read half (with what is already buffered) and,
/// with stream management enabled, the stanzas counted so far.
struct Inbound {
    rd: LinkReader,
    sm: Option<SmCounter>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Sender `index` of `senders`, at `rate` messages per second.
    Rate {
        rate: f64,
        index: usize,
        senders: usize,
    },
    /// As fast as the pair's window allows.
    Window,
}

/// Most messages one write carries.
const MAX_BATCH: usize = 32;

/// What one sender does.
struct Plan {
    /// The recipient's full JID, escaped.
    to: String,
    nonce: Arc<str>,
    pair: Arc<Pair>,
    direction: usize,
    mode: Mode,
    /// The run's start, on tokio's clock and on [`now_us`]'s.
    start: tokio::time::Instant,
    start_us: u64,
    deadline: tokio::time::Instant,
    /// Stream management is enabled on this connection: ask for acknowledgements.
    sm: bool,
}

/// What a sender reports.
struct SendOutcome {
    /// How late each write was against the schedule (fixed rate only).
    lag: Histogram<u64>,
    /// When it stopped, in [`now_us`] time.
    end_us: u64,
    /// Why it stopped early, if it did.
    error: Option<String>,
    /// Stream-management `<r/>` requests written.
    sm_requests: u64,
}

/// Sends messages until the deadline.
async fn sender(writer: Writer, plan: Plan) -> SendOutcome {
    let mut lag = report::histogram();
    let mut sm_requests = 0;
    let mut error = send_until(&writer, &plan, &mut lag, &mut sm_requests)
        .await
        .err();
    let end_us = now_us();
    // One last request, so that the server acknowledges everything sent.
    if plan.sm && error.is_none() {
        match writer.lock().await.send(sm::REQUEST).await {
            Ok(()) => sm_requests += 1,
            Err(e) => error = Some(format!("write: {e}")),
        }
    }
    SendOutcome {
        lag,
        end_us,
        error,
        sm_requests,
    }
}

async fn send_until(
    writer: &Writer,
    plan: &Plan,
    lag: &mut Histogram<u64>,
    sm_requests: &mut u64,
) -> Result<(), String> {
    let Plan {
        to,
        nonce,
        pair,
        direction,
        mode,
        start,
        start_us,
        deadline,
        sm,
    } = plan;
    let mut out = Vec::with_capacity(MAX_BATCH * (to.len() + 120));
    let mut seq = 0u64;
    // With stream management: messages since the last <r/>, and when it was sent.
    let (mut unrequested, mut requested_at) = (0u64, Instant::now());
    loop {
        out.clear();
        match *mode {
            Mode::Rate {
                rate,
                index,
                senders,
            } => {
                let due = *start + due_offset(seq, rate, index, senders);
                if due >= *deadline {
                    return Ok(());
                }
                tokio::time::sleep_until(due).await;
                let now = now_us();
                // Everything due by now goes in this write, each with its own due time.
                for batch in 0..MAX_BATCH {
                    let offset = due_offset(seq, rate, index, senders);
                    let due_us = start_us + offset.as_micros() as u64;
                    if batch > 0 && (due_us > now || *start + offset >= *deadline) {
                        break;
                    }
                    report::record(lag, now.saturating_sub(due_us));
                    let stamp = Stamp {
                        seq,
                        due_us,
                        sent_us: now,
                    };
                    push_message(&mut out, to, nonce, stamp);
                    seq += 1;
                }
            }
            Mode::Window => {
                let permit = tokio::select! {
                    permit = pair.window.acquire() => permit,
                    _ = tokio::time::sleep_until(*deadline) => return Ok(()),
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
                let now = now_us();
                for _ in 0..batch {
                    let stamp = Stamp {
                        seq,
                        due_us: now,
                        sent_us: now,
                    };
                    push_message(&mut out, to, nonce, stamp);
                    seq += 1;
                }
            }
        }
        if *sm {
            unrequested += seq - pair.issued[*direction].load(Ordering::Relaxed);
            if unrequested >= sm::REQUEST_EVERY || requested_at.elapsed() >= sm::REQUEST_INTERVAL {
                out.extend_from_slice(sm::REQUEST);
                *sm_requests += 1;
                (unrequested, requested_at) = (0, Instant::now());
            }
        }
        pair.issued[*direction].store(seq, Ordering::Release);
        if let Err(error) = writer.lock().await.send(&out).await {
            return Err(format!("write: {error}"));
        }
        pair.sent[*direction].store(seq, Ordering::Relaxed);
    }
}

/// Reads one connection until stopped: records each message of `direction` and each
/// receipt or bounce for the other direction.
async fn reader(
    inbound: Inbound,
    writer: Writer,
    pair: Arc<Pair>,
    direction: usize,
    nonce: Arc<str>,
    from_send: bool,
    mut stop: watch::Receiver<bool>,
) -> ReaderStats {
    let mut stats = ReaderStats {
        delivery: report::histogram(),
        delivery_from_send: from_send.then(report::histogram),
        ack: report::histogram(),
        ack_from_send: from_send.then(report::histogram),
        received: SeqSet::default(),
        duplicates: 0,
        acked: SeqSet::default(),
        ack_duplicates: 0,
        bounced: 0,
        errors: Failures::new(),
        last_us: 0,
        last_ack_us: 0,
        dropped: None,
        sm: inbound.sm,
    };
    let Inbound { mut rd, .. } = inbound;
    let other = 1 - direction;
    let unexpected = |stats: &mut ReaderStats, reason: &str| {
        *stats.errors.entry(reason.to_owned()).or_default() += 1;
    };
    loop {
        let element = tokio::select! {
            _ = stop.changed() => break,
            read = rd.read("chat") => match read {
                Ok(Read::Element(element)) => element,
                Ok(Read::Open) => continue,
                Err(failure) => {
                    stats.dropped = Some(failure.to_string());
                    break;
                }
            },
        };
        if let Some(sm) = &mut stats.sm {
            match sm.observe(&element) {
                SmEvent::Request(answer) => {
                    let _ = writer.lock().await.send(answer.as_bytes()).await;
                    continue;
                }
                SmEvent::Ack | SmEvent::Other => continue,
                SmEvent::Stanza => {}
            }
        }
        if !message_to_count(&element, &writer).await {
            continue;
        }
        if let Some(reason) = bounce(&element) {
            *stats.errors.entry(reason).or_default() += 1;
            // The bounce went back to the sender's connection: it settles the other way.
            stats.bounced += 1;
            pair.answered[other].fetch_add(1, Ordering::Relaxed);
            settle(&pair, other);
            continue;
        }
        if let Some(receipt) = receipt(&element, &nonce) {
            let now = now_us();
            match receipt {
                Receipt::Ours(stamp) if stamp.seq < pair.issued[other].load(Ordering::Acquire) => {
                    if !stats.acked.insert(stamp.seq) {
                        stats.ack_duplicates += 1;
                        continue;
                    }
                    stats.last_ack_us = now;
                    report::record(&mut stats.ack, now.saturating_sub(stamp.due_us));
                    if let Some(hist) = &mut stats.ack_from_send {
                        report::record(hist, now.saturating_sub(stamp.sent_us));
                    }
                    pair.answered[other].fetch_add(1, Ordering::Relaxed);
                }
                Receipt::Ours(_) => unexpected(&mut stats, "receipt for a message never sent"),
                Receipt::Unmatched(reason) => unexpected(&mut stats, reason),
            }
            continue;
        }
        if from_an_earlier_run(&element, &nonce) {
            unexpected(&mut stats, "late message from an earlier run (ignored)");
            continue;
        }
        let Some(stamp) = xml::child_text(&element, "body").and_then(parse_body) else {
            unexpected(&mut stats, "message without a bench body");
            continue;
        };
        if stamp.seq >= pair.issued[direction].load(Ordering::Acquire) {
            unexpected(&mut stats, "message with a sequence number never sent");
            continue;
        }
        let now = now_us();
        if !stats.received.insert(stamp.seq) {
            stats.duplicates += 1;
            continue;
        }
        stats.last_us = now;
        report::record(&mut stats.delivery, now.saturating_sub(stamp.due_us));
        if let Some(hist) = &mut stats.delivery_from_send {
            report::record(hist, now.saturating_sub(stamp.sent_us));
        }
        settle(&pair, direction);
    }
    stats
}

/// One message of `direction` reached its end (delivered or bounced).
fn settle(pair: &Pair, direction: usize) {
    pair.settled[direction].fetch_add(1, Ordering::Relaxed);
    pair.window.add_permits(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0badcafe";

    #[test]
    fn messages_carry_their_stamp_in_id_and_body() {
        let stamp = Stamp {
            seq: 42,
            due_us: 1234,
            sent_us: 1300,
        };
        let mut out = Vec::new();
        push_message(&mut out, "b@x/r", NONCE, stamp);
        assert_eq!(
            out,
            b"<message to='b@x/r' type='chat' id='0badcafe-42-1234-1300'>\
              <body>42 1234 1300</body></message>"
                .as_slice()
        );
        let body = xml::child_text(&out, "body").expect("body");
        assert_eq!(parse_body(body), Some(stamp));
        let id = xml::attr(&out, "id").expect("id");
        assert_eq!(parse_id(id, NONCE), Some(stamp));
        // The earlier two-field body: due = sent.
        assert_eq!(
            parse_body(b"7 99"),
            Some(Stamp {
                seq: 7,
                due_us: 99,
                sent_us: 99
            })
        );
        assert_eq!(parse_body(b"hello"), None);
        assert_eq!(parse_body(b"1 2 3 4"), None);
    }

    #[test]
    fn late_messages_of_an_earlier_run_are_told_apart() {
        let stamp = Stamp {
            seq: 3,
            due_us: 10,
            sent_us: 11,
        };
        let mut ours = Vec::new();
        push_message(&mut ours, "b@x/r", NONCE, stamp);
        let mut earlier = Vec::new();
        push_message(&mut earlier, "b@x/r", "12345678", stamp);
        assert!(!from_an_earlier_run(&ours, NONCE));
        assert!(from_an_earlier_run(&earlier, NONCE));
        // Not a bench id at all: left to the body check.
        assert!(!from_an_earlier_run(
            b"<message id='x'><body>1 2 3</body></message>",
            NONCE
        ));
        assert!(!from_an_earlier_run(
            b"<message><body>1 2 3</body></message>",
            NONCE
        ));
    }

    #[test]
    fn receipts_are_matched_by_client_id() {
        // As Confab serializes it (docs/protocol/confab-ack.md).
        let ack = b"<message xmlns=\"jabber:client\" type=\"headline\" id=\"ack-0194\" \
            from=\"localhost\" to=\"user1@localhost/bench\"><ack xmlns=\"urn:confab:ack:0\" \
            client-id=\"0badcafe-5-100-150\" server-id=\"0194\" seq=\"6\" \
            with=\"user2@localhost\" stamp=\"2026-11-23T12:00:00.123Z\"/></message>";
        assert_eq!(
            receipt(ack, NONCE),
            Some(Receipt::Ours(Stamp {
                seq: 5,
                due_us: 100,
                sent_us: 150
            }))
        );
        // Another run's message, no client id, and an <ack/> of some other namespace.
        let other = b"<message from='localhost'><ack xmlns='urn:confab:ack:0' \
            client-id='12345678-5-100-150' server-id='1' seq='1' with='a@b' stamp='x'/></message>";
        assert!(matches!(receipt(other, NONCE), Some(Receipt::Unmatched(_))));
        let anonymous = b"<message from='localhost'><ack xmlns='urn:confab:ack:0' \
            server-id='1' seq='1' with='a@b' stamp='x'/></message>";
        assert!(matches!(
            receipt(anonymous, NONCE),
            Some(Receipt::Unmatched(_))
        ));
        let foreign = b"<message><ack xmlns='urn:example:other' client-id='0badcafe-5-100-150'/>\
            </message>";
        assert_eq!(receipt(foreign, NONCE), None);
        // A chat message is not a receipt.
        let mut chat = Vec::new();
        push_message(
            &mut chat,
            "b",
            NONCE,
            Stamp {
                seq: 1,
                due_us: 2,
                sent_us: 3,
            },
        );
        assert_eq!(receipt(&chat, NONCE), None);
    }
}
