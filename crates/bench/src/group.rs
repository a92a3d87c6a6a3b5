//! `group`: fan-out through one XEP-0045 multi-user chat room. M users are on the room's
//! member list, K of them are in the room, S of those send; reports messages sent, deliveries
//! expected (sent × K: the service reflects each message to every occupant, its sender
//! included, §7.4) and received, lost, duplicated, the delivery rate, latency from the send
//! to each delivery, the time K members took to join and (with `--pid`) the server's CPU and
//! RSS.
//!
//! # Set-up (before the clock starts)
//! User `<prefix><first>` owns the room: it enters `room@service/nick` with the MUC `<x/>`;
//! status 201 in its self-presence means the room was created and is locked until
//! configured (§10.1.1), so it submits the owner form making the room members-only and
//! persistent, or, if the service refuses that form, an empty one: an instant room
//! (§10.1.2). It then puts the other M−1 users on the member list (muc#admin, §9.3) with
//! `--member-batch` items per request, and reads the list back: a service that applies only
//! part of a batch (Prosody 0.12 applies the first item and answers success) gets the
//! missing users one item per request. Then the other K−1 members enter at once, each with
//! `<history maxstanzas='0'/>` so that no earlier message is replayed (§7.2.15), and a join
//! counts as done when the member's own presence (status 110) arrives.
//!
//! # Traffic
//! The first S occupants send `type='groupchat'` messages to the room, stamped like `chat`'s
//! ([`crate::stamp`]): per sender sequence number, due and write times. Every occupant's
//! reader tells senders apart by the nick in the reflected `from` (`room@service/<nick>`),
//! keeps a sequence set per sender, and records latency from the due time (and, at a fixed
//! rate, from the write). At a fixed `--rate` each sender follows an open-loop schedule
//! (phases spread over the senders); with `--max`, each sender has at most `--inflight`
//! messages not yet delivered to every occupant: its window holds `inflight × K` delivery
//! credits, a message takes K, and each delivery (K for a bounce) gives one back.
//!
//! A message is *lost* for an occupant when it was sent, neither bounced nor received there;
//! the sums over occupants and senders are the report's figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{Conn, Read, Session};
use crate::link::{LinkReader, SharedWriter, bounce, message_to_count};
use crate::report::{self, CpuMeter, Failures};
use crate::stamp::{
    SeqSet, Stamp, Tally, due_offset, now_us, parse_body, per_second, push_id, tally,
};
use crate::{GroupArgs, logins, sasl, xml};

/// XEP-0045 namespaces.
const MUC_NS: &str = "http://jabber.org/protocol/muc";
const MUC_ADMIN_NS: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER_NS: &str = "http://jabber.org/protocol/muc#owner";

/// Most messages one write carries.
const MAX_BATCH: usize = 32;

/// How long one set-up request (owner form, member list) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one sender's tasks share with every reader.
struct Sender {
    /// With `--max`: delivery credits; a message takes one per occupant.
    window: Semaphore,
    /// Sequence numbers handed out: set before the write, so a message naming a sequence
    /// number at or above it was never sent.
    issued: AtomicU64,
    /// Messages written.
    sent: AtomicU64,
    /// Distinct deliveries of this sender's messages, over all occupants.
    delivered: AtomicU64,
    /// Messages the service bounced back with an error.
    bounced: AtomicU64,
}

/// What happened while the room was set up.
struct Setup {
    /// The owner's self-presence carried status 201.
    created: bool,
    /// "members-only, persistent", "instant" or "unchanged" (the room existed).
    configured: &'static str,
    /// Owner form errors, if any.
    config_error: Option<String>,
    /// Member-list requests sent and users on the member list when read back.
    admin_requests: u64,
    listed: u64,
    /// The service applied batches only partly: members were added one per request.
    single_items: bool,
    admin_s: f64,
}

/// What one occupant's reader saw.
struct ReaderStats {
    /// Delivery latency from the due time (with `--max`, the write).
    delivery: Histogram<u64>,
    /// Delivery latency from the write (fixed rate only).
    delivery_from_send: Option<Histogram<u64>>,
    /// Sequence numbers received, per sender.
    received: Vec<SeqSet>,
    duplicates: u64,
    /// Room messages with a `<delay/>` (history replay), which the run asked not to get.
    history: u64,
    /// Commit receipts (`urn:confab:ack:0`) for this occupant's messages.
    receipts: u64,
    /// Bounces and unexpected stanzas, by reason.
    errors: Failures,
    /// When the last delivery arrived, in [`now_us`] time.
    last_us: u64,
    /// Why the connection ended before we stopped it, if it did.
    dropped: Option<String>,
}

type Writer = SharedWriter;

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if args.online == 0 || args.online > args.members {
        bail!("--online must be between 1 and --members");
    }
    if args.senders == 0 || args.senders > args.online {
        bail!("--senders must be between 1 and --online");
    }
    if !args.max && (args.rate <= 0.0 || !args.rate.is_finite()) {
        bail!("--rate must be a positive number (or use --max)");
    }
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| format!("conference.{}", common.domain));
    let room = format!("{}@{service}", args.room);
    let nick_of = |n: u64| format!("{}{n}", common.users_prefix);
    let jid_of = |n: u64| format!("{}{n}@{}", common.users_prefix, common.domain);

    // Log in the K online members; the first is the owner.
    let config = Arc::new(common.client_config(true)?);
    let users: Vec<u64> = (0..args.online).map(|n| common.first + n).collect();
    let plan = logins::Plan {
        users: users.clone(),
        prefix: common.users_prefix.clone(),
        password: common.password.clone(),
        rate: None,
        concurrency: common.concurrency,
        sources: common.sources(args.online)?,
    };
    let login_start = Instant::now();
    let (sessions, login_failures) = logins::login_all(config, plan, "group login:").await?;
    let login_s = login_start.elapsed().as_secs_f64();
    report::print_failures("login failures", &login_failures);
    let failed_logins: u64 = login_failures.values().sum();
    let mut sessions = sessions.into_iter().zip(users.iter().copied());
    let Some((Some(mut owner), owner_n)) = sessions.next() else {
        bail!(
            "the room owner ({}) could not log in",
            nick_of(common.first)
        );
    };
    let timeout = Duration::from_secs_f64(common.login_timeout);
    let rss_before_kib = common.pid.and_then(|pid| report::rss_kib(pid).ok());

    // The owner creates (or re-enters) the room and sets it up.
    let create_start = Instant::now();
    let created = join(&mut owner.conn, &room, &nick_of(owner_n), timeout)
        .await
        .map_err(|reason| anyhow::anyhow!("the owner could not enter {room}: {reason}"))?;
    let create_s = create_start.elapsed().as_secs_f64();
    let others: Vec<String> = (1..args.members)
        .map(|i| jid_of(common.first + i))
        .collect();
    let setup = set_up(&mut owner.conn, &room, created, &others, args.member_batch).await?;
    if setup.listed < others.len() as u64 {
        eprintln!(
            "note: {} of {} members are on the member list",
            setup.listed,
            others.len()
        );
    }

    // The other K-1 enter at once.
    let mut joins = JoinSet::new();
    let join_start = Instant::now();
    for (session, n) in sessions {
        let Some(mut session) = session else { continue };
        let (room, nick) = (room.clone(), nick_of(n));
        joins.spawn(async move {
            let began = Instant::now();
            let result = join(&mut session.conn, &room, &nick, timeout).await;
            (n, session, result, began.elapsed())
        });
    }
    let mut online: Vec<(u64, Session)> = vec![(owner_n, owner)];
    let mut join_failures = Failures::new();
    let mut join_latency = report::histogram();
    while let Some(done) = joins.join_next().await {
        let (n, session, result, took) = done?;
        match result {
            Ok(_) => {
                report::record(&mut join_latency, took.as_micros() as u64);
                online.push((n, session));
            }
            Err(reason) => *join_failures.entry(reason).or_default() += 1,
        }
    }
    let join_s = join_start.elapsed().as_secs_f64();
    report::print_failures("join failures", &join_failures);
    let failed_joins: u64 = join_failures.values().sum();
    // Senders are the first S online members by user number.
    online.sort_by_key(|(n, _)| *n);
    let occupants = online.len();
    let senders_n = (args.senders as usize).min(occupants);
    let rss_joined_kib = common.pid.and_then(|pid| report::rss_kib(pid).ok());
    eprintln!(
        "group: {occupants} occupants in {room} ({:.2} s to join), {senders_n} senders for {} s",
        join_s, args.duration
    );

    // Every join broadcast the joiner's presence to everyone already in: let those K²/2
    // presences drain before the clock starts, so they do not queue ahead of the first
    // messages.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let nonce: Arc<str> = format!("{:08x}", rand::random::<u32>()).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let credits = if args.max {
        args.inflight.max(1) * occupants
    } else {
        0
    };
    let shared: Arc<Vec<Sender>> = Arc::new(
        (0..senders_n)
            .map(|_| Sender {
                window: Semaphore::new(credits),
                issued: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                bounced: AtomicU64::new(0),
            })
            .collect(),
    );
    let nicks: Arc<HashMap<Vec<u8>, usize>> = Arc::new(
        online
            .iter()
            .take(senders_n)
            .enumerate()
            .map(|(i, (n, _))| (nick_of(*n).into_bytes(), i))
            .collect(),
    );
    let meter = CpuMeter::start(common.pid);
    let start = tokio::time::Instant::now();
    let start_us = now_us();
    let deadline = start + duration;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let room_escaped: Arc<str> = xml::escape(&room).into();
    for (i, (_, session)) in online.into_iter().enumerate() {
        let (rd, wr) = session.conn.link.split();
        let writer: Writer = Arc::new(Mutex::new(wr));
        let own = (i < senders_n).then_some(i);
        readers.push(tokio::spawn(reader(
            rd,
            writer.clone(),
            Watch {
                shared: shared.clone(),
                nicks: nicks.clone(),
                room: room.clone().into(),
                own,
                from_send: !args.max,
                occupants,
            },
            stop_rx.clone(),
        )));
        if let Some(index) = own {
            let mode = if args.max {
                Mode::Window { occupants }
            } else {
                Mode::Rate {
                    rate: args.rate,
                    index,
                    senders: senders_n,
                }
            };
            senders.push(tokio::spawn(sender(
                writer,
                Plan {
                    room: room_escaped.clone(),
                    nonce: nonce.clone(),
                    shared: shared.clone(),
                    index,
                    mode,
                    start,
                    start_us,
                    deadline,
                },
            )));
        }
    }

    let mut send_errors = Failures::new();
    let mut lag = report::histogram();
    let mut send_end_us = start_us;
    for handle in senders {
        match handle.await {
            Ok(outcome) => {
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
    // Drain: wait for every delivery as long as the server makes progress.
    let k = occupants as u64;
    let drain_start = Instant::now();
    let idle_limit = Duration::from_secs_f64(args.grace.max(0.0));
    let (mut progress, mut last_progress) = (u64::MAX, Instant::now());
    let drained = loop {
        let load = |f: fn(&Sender) -> &AtomicU64| -> u64 {
            shared.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        let expected = load(|s| &s.sent) * k;
        let settled = load(|s| &s.delivered) + load(|s| &s.bounced) * k;
        if settled >= expected {
            break true;
        }
        if settled != progress {
            (progress, last_progress) = (settled, Instant::now());
        } else if last_progress.elapsed() >= idle_limit {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let rss_end_kib = common.pid.and_then(|pid| report::rss_kib(pid).ok());
    let _ = stop_tx.send(true);

    let mut stats = Vec::new();
    let mut drops = Failures::new();
    for handle in readers {
        match handle.await {
            Ok(reader) => stats.push(reader),
            Err(error) => *drops.entry(format!("reader failed: {error}")).or_default() += 1,
        }
    }
    let mut delivery = report::histogram();
    let mut delivery_from_send = report::histogram();
    let (mut duplicates, mut history, mut receipts) = (0u64, 0u64, 0u64);
    let mut last_us = start_us;
    let mut errors = Failures::new();
    let mut totals = Tally::default();
    let empty = SeqSet::default();
    for reader in &stats {
        delivery.add(&reader.delivery).expect("same bounds");
        if let Some(hist) = &reader.delivery_from_send {
            delivery_from_send.add(hist).expect("same bounds");
        }
        duplicates += reader.duplicates;
        history += reader.history;
        receipts += reader.receipts;
        last_us = last_us.max(reader.last_us);
        for (reason, n) in &reader.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
        if let Some(reason) = &reader.dropped {
            *drops.entry(reason.clone()).or_default() += 1;
        }
    }
    // A reader that failed received nothing: its share counts as lost.
    for r in 0..occupants {
        for (s, sender) in shared.iter().enumerate() {
            let received = stats
                .get(r)
                .and_then(|st| st.received.get(s))
                .unwrap_or(&empty);
            totals += tally(
                sender.sent.load(Ordering::Relaxed),
                received,
                None,
                sender.bounced.load(Ordering::Relaxed),
            );
        }
    }
    let sent: u64 = shared.iter().map(|s| s.sent.load(Ordering::Relaxed)).sum();
    let bounced: u64 = shared
        .iter()
        .map(|s| s.bounced.load(Ordering::Relaxed))
        .sum();
    let expected = sent * k;
    let Tally { received, lost, .. } = totals;

    let sent_rate = per_second(sent, start_us, send_end_us, args.duration);
    let delivery_rate = per_second(received, start_us, last_us, args.duration);
    let offered = (!args.max).then_some(args.rate * senders_n as f64);
    let server_us_per_delivery = cpu
        .server
        .filter(|_| received > 0)
        .map(|s| report::round3(s * 1e6 / received as f64));
    let rate_only = |hist: &Histogram<u64>| (!args.max).then(|| report::summary(hist));
    let (computed, cached) = sasl::cache_stats();
    let mut result = json!({
        "scenario": "group",
        "server": common.server,
        "transport": common.transport.name(),
        "room": room,
        "members": args.members,
        "online": args.online,
        "occupants": occupants,
        "senders": senders_n,
        "failed_logins": failed_logins,
        "login_failures": login_failures,
        "login_s": report::round3(login_s),
        "created": setup.created,
        "configured": setup.configured,
        "config_error": setup.config_error,
        "member_list": {
            "requested": others.len(),
            "listed": setup.listed,
            "requests": setup.admin_requests,
            "batch": args.member_batch,
            "one_per_request": setup.single_items,
            "s": report::round3(setup.admin_s),
        },
        "create_s": report::round3(create_s),
        "failed_joins": failed_joins,
        "join_failures": join_failures,
        "join_s": report::round3(join_s),
        "join_latency": report::summary(&join_latency),
        "mode": if args.max { "max" } else { "rate" },
        "rate_per_sender": (!args.max).then_some(args.rate),
        "inflight_per_sender": args.max.then_some(args.inflight.max(1)),
        "duration_s": args.duration,
        "drain_s": report::round3(drain_s),
        "drained": drained,
        "sent": sent,
        "deliveries_expected": expected,
        "received": received,
        "lost": lost,
        "duplicated": duplicates,
        "bounced": bounced,
        "history_replayed": history,
    });
    // Set apart: more keys in the literal exceed json!'s macro recursion limit.
    for (key, value) in [
        ("bounce_reasons", json!(errors)),
        ("send_errors", json!(send_errors)),
        ("drops", json!(drops)),
        ("offered_per_s", json!(offered.map(report::round3))),
        ("sent_per_s", json!(report::round3(sent_rate))),
        ("deliveries_per_s", json!(report::round3(delivery_rate))),
        ("latency", report::summary(&delivery)),
        ("latency_from_send", json!(rate_only(&delivery_from_send))),
        ("send_lag", json!(rate_only(&lag))),
        ("cpu", cpu.json()),
        ("server_cpu_us_per_delivery", json!(server_us_per_delivery)),
    ] {
        result[key] = value;
    }
    result["server_rss_kib"] = json!({
        "before_joins": rss_before_kib,
        "after_joins": rss_joined_kib,
        "end": rss_end_kib,
    });
    result["receipts"] = json!(receipts);
    result["pbkdf2_computed"] = json!(computed);
    result["pbkdf2_cached"] = json!(cached);

    println!(
        "== group: {room}, {} members, {occupants} online, {senders_n} senders, {} for {} s ==",
        args.members,
        if args.max {
            format!("max rate, {} in flight per sender", args.inflight.max(1))
        } else {
            format!("{} msgs/s per sender", args.rate)
        },
        args.duration
    );
    println!(
        "room            {}, {}; member list {}/{} ({} requests{}, {:.2} s)",
        if setup.created { "created" } else { "existed" },
        setup.configured,
        setup.listed,
        others.len(),
        setup.admin_requests,
        if setup.single_items {
            ", batches applied partly: one per request"
        } else {
            ""
        },
        setup.admin_s
    );
    if let Some(error) = &setup.config_error {
        println!("owner form      refused: {error}");
    }
    println!(
        "join            {occupants} occupants ({failed_joins} failed) in {join_s:.2} s after \
         the owner's {create_s:.2} s; per join {}",
        report::summary_line(&join_latency)
    );
    match offered {
        Some(offered) => println!(
            "sent            {sent}   ({sent_rate:.0} msgs/s achieved, {offered:.0} offered)"
        ),
        None => println!("sent            {sent}   ({sent_rate:.0} msgs/s)"),
    }
    println!("deliveries      {received} of {expected} expected   ({delivery_rate:.0} /s)");
    println!("lost            {lost}   (sent, neither received by an occupant nor bounced)");
    println!("duplicated      {duplicates}");
    if bounced > 0 {
        println!("bounced         {bounced}");
    }
    if history > 0 {
        println!("history         {history} replayed messages ignored");
    }
    println!(
        "drain           {drain_s:.2} s after sending{}",
        if drained {
            ""
        } else {
            " (stopped: no progress for --grace)"
        }
    );
    let since = if args.max { "" } else { " (from due time)" };
    println!("delivery{since}  {}", report::summary_line(&delivery));
    if !args.max {
        println!(
            "delivery (from write)   {}",
            report::summary_line(&delivery_from_send)
        );
        println!("send lag        {}", report::summary_line(&lag));
    }
    println!("cpu             {}", cpu.line());
    if let Some(us) = server_us_per_delivery {
        println!("server cpu      {us:.1} µs per delivery");
    }
    if let (Some(before), Some(joined)) = (rss_before_kib, rss_joined_kib) {
        println!(
            "server rss      {before} KiB before joins, {joined} after, {} at the end",
            rss_end_kib.map_or("?".to_owned(), |kib| kib.to_string())
        );
    }
    report::print_failures("bounces and unexpected stanzas", &errors);
    report::print_failures("send errors", &send_errors);
    report::print_failures("connections lost", &drops);
    println!("{result}");
    Ok(())
}

/// Enters `room` as `nick` without history and waits for the self-presence (status 110);
/// returns whether the room was created by this join (status 201). The error is the
/// presence error's condition, or why the connection failed.
async fn join(conn: &mut Conn, room: &str, nick: &str, timeout: Duration) -> Result<bool, String> {
    let presence = format!(
        "<presence to='{}/{}'><x xmlns='{MUC_NS}'><history maxstanzas='0'/></x></presence>",
        xml::escape(room),
        xml::escape(nick)
    );
    let wait = async {
        conn.send(presence.as_bytes()).await?;
        loop {
            let element = conn.element().await?;
            if conn.answer_ping(&element).await? || xml::tag_name(&element) != b"presence" {
                continue;
            }
            if !from_room(&element, room) {
                continue;
            }
            if xml::attr(&element, "type") == Some(b"error") {
                return Ok::<_, crate::client::Failure>(Err(format!(
                    "join: {}",
                    xml::error_reason(&element)
                )));
            }
            // A service may change the nick (status 210), so self-presence is recognised
            // by status 110, not by the nick.
            if has_status(&element, "110") {
                return Ok(Ok(has_status(&element, "201")));
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failure)) => Err(format!("join: {failure}")),
        Err(_) => Err("join: timed out waiting for the self-presence".to_owned()),
    }
}

/// Configures the room (when this run created it) and fills its member list with `members`.
async fn set_up(
    conn: &mut Conn,
    room: &str,
    created: bool,
    members: &[String],
    batch: usize,
) -> anyhow::Result<Setup> {
    let to = xml::escape(room);
    let form = |fields: &str| {
        format!(
            "<iq type='set' to='{to}' id='bench-config'><query xmlns='{MUC_OWNER_NS}'>\
             <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
        )
    };
    let field =
        |var: &str, value: &str| format!("<field var='{var}'><value>{value}</value></field>");
    let wanted = [
        field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
        field("muc#roomconfig_membersonly", "1"),
        field("muc#roomconfig_persistentroom", "1"),
    ]
    .concat();
    let (mut configured, mut config_error) = ("members-only, persistent", None);
    if let Err(reason) = requests(conn, vec![("bench-config".to_owned(), form(&wanted))]).await {
        config_error = Some(reason);
        if created {
            // The service refused the fields: accept its defaults (an instant room) so that
            // the room is unlocked at least.
            requests(conn, vec![("bench-config".to_owned(), form(""))])
                .await
                .map_err(|reason| anyhow::anyhow!("unlock the room: {reason}"))?;
            configured = "instant";
        } else {
            configured = "unchanged";
        }
    }

    let admin_start = Instant::now();
    let item = |jid: &String| format!("<item affiliation='member' jid='{}'/>", xml::escape(jid));
    let admin = |id: String, items: String| {
        let iq = format!(
            "<iq type='set' to='{to}' id='{id}'><query xmlns='{MUC_ADMIN_NS}'>{items}</query></iq>"
        );
        (id, iq)
    };
    let batches: Vec<_> = members
        .chunks(batch.max(1))
        .enumerate()
        .map(|(i, chunk)| admin(format!("bench-admin-{i}"), chunk.iter().map(item).collect()))
        .collect();
    let mut admin_requests = batches.len() as u64;
    requests(conn, batches)
        .await
        .map_err(|reason| anyhow::anyhow!("member list: {reason}"))?;
    let mut listed = member_list(conn, room).await?;
    let missing: Vec<&String> = members.iter().filter(|m| !listed.contains(*m)).collect();
    let single_items = !missing.is_empty() && batch > 1;
    if single_items {
        let singles: Vec<_> = missing
            .iter()
            .enumerate()
            .map(|(i, jid)| admin(format!("bench-admin-one-{i}"), item(jid)))
            .collect();
        admin_requests += singles.len() as u64;
        requests(conn, singles)
            .await
            .map_err(|reason| anyhow::anyhow!("member list, one per request: {reason}"))?;
        listed = member_list(conn, room).await?;
    }
    Ok(Setup {
        created,
        configured,
        config_error,
        admin_requests,
        listed: members.iter().filter(|m| listed.contains(*m)).count() as u64,
        single_items,
        admin_s: admin_start.elapsed().as_secs_f64(),
    })
}

/// The bare JIDs on the room's member list (§9.5).
async fn member_list(
    conn: &mut Conn,
    room: &str,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let query = format!(
        "<iq type='get' to='{}' id='bench-members'><query xmlns='{MUC_ADMIN_NS}'>\
         <item affiliation='member'/></query></iq>",
        xml::escape(room)
    );
    let answers = requests(conn, vec![("bench-members".to_owned(), query)])
        .await
        .map_err(|reason| anyhow::anyhow!("read the member list: {reason}"))?;
    let mut jids = std::collections::HashSet::new();
    for answer in &answers {
        let mut rest: &[u8] = answer;
        while let Some(at) = xml::find(rest, b"<item") {
            rest = &rest[at..];
            if let Some(jid) = xml::attr(rest, "jid") {
                jids.insert(xml::unescape(jid));
            }
            rest = &rest[1..];
        }
    }
    Ok(jids)
}

/// Writes every `(id, iq)` at once and waits for all the answers; the results in order, or
/// the first error answer's reason.
async fn requests(conn: &mut Conn, iqs: Vec<(String, String)>) -> Result<Vec<Bytes>, String> {
    let mut pending: HashMap<Vec<u8>, usize> = iqs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_bytes().to_vec(), i))
        .collect();
    let mut answers: Vec<Bytes> = vec![Bytes::new(); iqs.len()];
    let mut error = None;
    let exchange = async {
        let out: String = iqs.iter().map(|(_, iq)| iq.as_str()).collect();
        conn.send(out.as_bytes()).await?;
        while !pending.is_empty() {
            let element = conn.element().await?;
            if conn.answer_ping(&element).await? || xml::tag_name(&element) != b"iq" {
                continue;
            }
            let Some(i) = xml::attr(&element, "id").and_then(|id| pending.remove(id)) else {
                continue;
            };
            if xml::attr(&element, "type") == Some(b"error") && error.is_none() {
                error = Some(xml::error_reason(&element));
            }
            answers[i] = element;
        }
        Ok::<_, crate::client::Failure>(())
    };
    match tokio::time::timeout(SETUP_TIMEOUT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => return Err(failure.to_string()),
        Err(_) => return Err(format!("timed out after {SETUP_TIMEOUT:?}")),
    }
    match error {
        Some(reason) => Err(reason),
        None => Ok(answers),
    }
}

/// Whether a message is a Confab commit receipt.
fn is_receipt(element: &[u8]) -> bool {
    xml::child(element, "ack")
        .is_some_and(|ack| xml::attr(ack, "xmlns") == Some(crate::chat::ACK_NS.as_bytes()))
}

/// Whether the stanza comes from `room` (bare, or one of its occupants).
fn from_room(element: &[u8], room: &str) -> bool {
    let Some(from) = xml::attr(element, "from") else {
        return false;
    };
    let bare = from.split(|b| *b == b'/').next().unwrap_or_default();
    bare.eq_ignore_ascii_case(room.as_bytes())
}

/// The occupant nick of a stanza from `room/<nick>`.
fn nick(element: &[u8]) -> Option<&[u8]> {
    let from = xml::attr(element, "from")?;
    let slash = from.iter().position(|b| *b == b'/')?;
    Some(&from[slash + 1..])
}

/// Whether a MUC presence or message carries `<status code='<code>'/>`.
fn has_status(element: &[u8], code: &str) -> bool {
    let mut rest = element;
    while let Some(at) = xml::find(rest, b"<status") {
        rest = &rest[at..];
        if xml::attr(rest, "code") == Some(code.as_bytes()) {
            return true;
        }
        rest = &rest[1..];
    }
    false
}

/// Writes one groupchat message: `<message to=room type='groupchat' id=…><body>…</body>`.
fn push_message(out: &mut Vec<u8>, room: &str, nonce: &str, stamp: Stamp) {
    use std::io::Write as _;
    let _ = write!(out, "<message to='{room}' type='groupchat' id='");
    push_id(out, nonce, stamp);
    let _ = write!(
        out,
        "'><body>{} {} {}</body></message>",
        stamp.seq, stamp.due_us, stamp.sent_us
    );
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Sender `index` of `senders`, at `rate` messages per second.
    Rate {
        rate: f64,
        index: usize,
        senders: usize,
    },
    /// As fast as the sender's window allows; each message takes `occupants` credits.
    Window { occupants: usize },
}

/// What one sender does.
struct Plan {
    /// The room's JID, escaped.
    room: Arc<str>,
    nonce: Arc<str>,
    shared: Arc<Vec<Sender>>,
    index: usize,
    mode: Mode,
    /// The run's start, on tokio's clock and on [`now_us`]'s.
    start: tokio::time::Instant,
    start_us: u64,
    deadline: tokio::time::Instant,
}

/// What a sender reports.
struct SendOutcome {
    /// How late each write was against the schedule (fixed rate only).
    lag: Histogram<u64>,
    /// When it stopped, in [`now_us`] time.
    end_us: u64,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// Sends messages until the deadline.
async fn sender(writer: Writer, plan: Plan) -> SendOutcome {
    let mut lag = report::histogram();
    let error = send_until(&writer, &plan, &mut lag).await.err();
    SendOutcome {
        lag,
        end_us: now_us(),
        error,
    }
}

async fn send_until(writer: &Writer, plan: &Plan, lag: &mut Histogram<u64>) -> Result<(), String> {
    let me = &plan.shared[plan.index];
    let mut out = Vec::with_capacity(MAX_BATCH * (plan.room.len() + 120));
    let mut seq = 0u64;
    loop {
        out.clear();
        match plan.mode {
            Mode::Rate {
                rate,
                index,
                senders,
            } => {
                let due = plan.start + due_offset(seq, rate, index, senders);
                if due >= plan.deadline {
                    return Ok(());
                }
                tokio::time::sleep_until(due).await;
                let now = now_us();
                // Everything due by now goes in this write, each with its own due time.
                for batch in 0..MAX_BATCH {
                    let offset = due_offset(seq, rate, index, senders);
                    let due_us = plan.start_us + offset.as_micros() as u64;
                    if batch > 0 && (due_us > now || plan.start + offset >= plan.deadline) {
                        break;
                    }
                    report::record(lag, now.saturating_sub(due_us));
                    let stamp = Stamp {
                        seq,
                        due_us,
                        sent_us: now,
                    };
                    push_message(&mut out, &plan.room, &plan.nonce, stamp);
                    seq += 1;
                }
            }
            Mode::Window { occupants } => {
                let need = u32::try_from(occupants).map_err(|_| "too many occupants")?;
                let permit = tokio::select! {
                    permit = me.window.acquire_many(need) => permit,
                    _ = tokio::time::sleep_until(plan.deadline) => return Ok(()),
                };
                let Ok(permit) = permit else { return Ok(()) };
                permit.forget();
                let mut batch = 1;
                while batch < MAX_BATCH {
                    match me.window.try_acquire_many(need) {
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
                    push_message(&mut out, &plan.room, &plan.nonce, stamp);
                    seq += 1;
                }
            }
        }
        me.issued.store(seq, Ordering::Release);
        if let Err(error) = writer.lock().await.send(&out).await {
            return Err(format!("write: {error}"));
        }
        me.sent.store(seq, Ordering::Relaxed);
    }
}

/// What a reader needs to know about the run.
struct Watch {
    shared: Arc<Vec<Sender>>,
    /// Sender index by occupant nick.
    nicks: Arc<HashMap<Vec<u8>, usize>>,
    room: Arc<str>,
    /// This occupant's sender index, if it sends (its bounces come back here).
    own: Option<usize>,
    /// Record latency from the write too (fixed rate).
    from_send: bool,
    /// Occupants in the room: the credits a bounced message gives back.
    occupants: usize,
}

/// Reads one occupant's connection until stopped, recording every room message.
async fn reader(
    mut rd: LinkReader,
    writer: Writer,
    watch: Watch,
    mut stop: watch::Receiver<bool>,
) -> ReaderStats {
    let mut stats = ReaderStats {
        delivery: report::histogram(),
        delivery_from_send: watch.from_send.then(report::histogram),
        received: vec![SeqSet::default(); watch.shared.len()],
        duplicates: 0,
        history: 0,
        receipts: 0,
        errors: Failures::new(),
        last_us: 0,
        dropped: None,
    };
    let unexpected = |stats: &mut ReaderStats, reason: &str| {
        *stats.errors.entry(reason.to_owned()).or_default() += 1;
    };
    loop {
        let element = tokio::select! {
            _ = stop.changed() => break,
            read = rd.read("group") => match read {
                Ok(Read::Element(element)) => element,
                Ok(Read::Open) => continue,
                Err(failure) => {
                    stats.dropped = Some(failure.to_string());
                    break;
                }
            },
        };
        // Occupants' presence (late join broadcasts) is expected and ignored.
        if !message_to_count(&element, &writer).await {
            continue;
        }
        if let Some(reason) = bounce(&element) {
            *stats.errors.entry(reason).or_default() += 1;
            // Bounces go back to the sender only: one message reaches no occupant.
            if let Some(own) = watch.own {
                let sender = &watch.shared[own];
                sender.bounced.fetch_add(1, Ordering::Relaxed);
                sender.window.add_permits(watch.occupants);
            }
            continue;
        }
        if is_receipt(&element) {
            // Confab's commit receipts (urn:confab:ack:0) are chat's business; a server
            // that also acknowledges room messages is not faulted for it.
            stats.receipts += 1;
            continue;
        }
        if !from_room(&element, &watch.room) {
            unexpected(&mut stats, "message from outside the room");
            continue;
        }
        let Some(body) = xml::child_text(&element, "body") else {
            // The subject (sent on join) and status notices carry no body.
            continue;
        };
        if xml::has_child(&element, "delay") {
            stats.history += 1;
            continue;
        }
        let Some(index) = nick(&element).and_then(|n| watch.nicks.get(n)).copied() else {
            unexpected(
                &mut stats,
                "room message from an occupant that does not send",
            );
            continue;
        };
        let Some(stamp) = parse_body(body) else {
            unexpected(&mut stats, "room message without a bench body");
            continue;
        };
        let sender = &watch.shared[index];
        if stamp.seq >= sender.issued.load(Ordering::Acquire) {
            unexpected(&mut stats, "message with a sequence number never sent");
            continue;
        }
        let now = now_us();
        if !stats.received[index].insert(stamp.seq) {
            stats.duplicates += 1;
            continue;
        }
        stats.last_us = now;
        report::record(&mut stats.delivery, now.saturating_sub(stamp.due_us));
        if let Some(hist) = &mut stats.delivery_from_send {
            report::record(hist, now.saturating_sub(stamp.sent_us));
        }
        sender.delivered.fetch_add(1, Ordering::Relaxed);
        sender.window.add_permits(1);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "bench@conference.localhost";

    #[test]
    fn groupchat_messages_carry_their_stamp_in_the_body() {
        let stamp = Stamp {
            seq: 7,
            due_us: 100,
            sent_us: 120,
        };
        let mut out = Vec::new();
        push_message(&mut out, ROOM, "0badcafe", stamp);
        assert_eq!(
            out,
            b"<message to='bench@conference.localhost' type='groupchat' \
              id='0badcafe-7-100-120'><body>7 100 120</body></message>"
                .as_slice()
        );
        assert_eq!(
            xml::child_text(&out, "body").and_then(parse_body),
            Some(stamp)
        );
    }

    #[test]
    fn self_presence_is_told_by_status_110_and_creation_by_201() {
        // As ejabberd and Prosody send them (either quote style).
        let created = b"<presence from='bench@conference.localhost/user1' to='user1@localhost/b'>\
            <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' \
            role='moderator'/><status code='201'/><status code='110'/></x></presence>";
        assert!(from_room(created, ROOM));
        assert!(has_status(created, "110"));
        assert!(has_status(created, "201"));
        let entered = b"<presence from=\"bench@conference.localhost/user2\"><x \
            xmlns=\"http://jabber.org/protocol/muc#user\"><item affiliation=\"member\" \
            role=\"participant\"/><status code=\"110\"/></x></presence>";
        assert!(has_status(entered, "110"));
        assert!(!has_status(entered, "201"));
        // Another occupant's presence: no 110.
        let other = b"<presence from='bench@conference.localhost/user3'><x \
            xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' \
            role='participant'/></x></presence>";
        assert!(from_room(other, ROOM));
        assert!(!has_status(other, "110"));
        // Not from the room at all.
        assert!(!from_room(b"<presence from='user3@localhost/b'/>", ROOM));
        assert!(!from_room(b"<presence/>", ROOM));
    }

    #[test]
    fn reflected_messages_name_their_sender_by_nick() {
        let reflected = b"<message from='bench@conference.localhost/user12' type='groupchat' \
            id='0badcafe-1-2-3'><body>1 2 3</body></message>";
        assert!(from_room(reflected, ROOM));
        assert_eq!(nick(reflected), Some(b"user12".as_slice()));
        assert!(!is_receipt(reflected));
        let receipt = b"<message from='localhost' type='headline'><ack xmlns='urn:confab:ack:0' \
            client-id='0badcafe-1-2-3' server-id='9' seq='1' with='a@b' stamp='x'/></message>";
        assert!(is_receipt(receipt));
        assert!(!from_room(receipt, ROOM));
        // The subject on join comes from the bare room JID.
        assert_eq!(
            nick(
                b"<message from='bench@conference.localhost' type='groupchat'><subject/></message>"
            ),
            None
        );
    }
}
