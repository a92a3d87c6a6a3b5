//! `http-send`: P pairs; the first user of each pair sends to the second through Confab's
//! HTTP client API (`POST /api/v1/messages`), the second receives over XMPP. Reports sent,
//! answers by HTTP status, received, lost, duplicated, throughput, HTTP response latency
//! (the answer comes once the message is committed, so this is the commit acknowledgement),
//! delivery latency, and (with `--pid`) server CPU per delivered message.
//!
//! # Flow
//! Every user logs in over XMPP (with initial presence, so a message to the bare JID is
//! delivered live). Each sender asks its session for an IM token (`urn:confab:token:0`,
//! docs/protocol/confab-token.md); the token dies with the session, so the session stays open
//! (answering pings) until the end of the run. Requests go out over HTTP/1.1 keep-alive
//! connections from hyper-util's pooled client: at most `--inflight` requests per sender at
//! once, and since HTTP/1.1 carries one request at a time per connection, the pool opens as
//! many connections as requests are in flight and reuses them; the report says how many it
//! opened.
//!
//! # Stamps and pacing
//! As in `chat` (see there): each message's client id is `<run nonce>-<seq>-<due µs>-<sent
//! µs>` and its body `<seq> <due> <sent>`. Confab delivers the client id as the XEP-0359
//! `origin-id`, which ties a delivery to this run. At a fixed `--rate` each sender's messages
//! have due times on an open-loop schedule, and HTTP and delivery latency count from the due
//! time; a message that finds all `--inflight` slots taken waits for one, and that wait counts
//! too. A message still waiting for a slot when the sending time ends is not sent and is
//! reported as `unsent` (the offered load the tool could not place). With `--max`, each sender
//! keeps `--inflight` requests in flight, and due = written.
//!
//! # Loss
//! A 201 (or a 200 for a resend, which a fresh run never makes) means committed: a committed
//! message that never arrives is *lost*. Requests answered with another status, or failing
//! without one, are counted by status and by reason; requests with no answer by the end are
//! *unanswered*.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{Conn, Failure, Read, Session};
use crate::report::{self, CpuMeter, Failures};
use crate::stamp::{
    SeqSet, Stamp, Tally, due_offset, now_us, parse_body, parse_id, per_second, push_id, tally,
};
use crate::{HttpSendArgs, logins, sasl, xml};

/// Confab's IM token namespace.
const TOKEN_NS: &str = "urn:confab:token:0";

/// The HTTP client: pooled HTTP/1.1 over plain TCP.
type HttpClient = Client<CountingConnector, Full<Bytes>>;

/// hyper-util's TCP connector, counting the connections it is asked to open.
#[derive(Clone)]
struct CountingConnector {
    inner: HttpConnector,
    opened: Arc<AtomicU64>,
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.inner.call(uri)
    }
}

/// Counters one pair's tasks share (one direction: sender → receiver).
#[derive(Default)]
struct Lane {
    /// Sequence numbers handed out: set before the request, so a delivery naming one at or
    /// above it was never sent.
    issued: AtomicU64,
    /// Requests answered (any status) or failed.
    answered: AtomicU64,
    /// Requests answered 201 or 200.
    committed: AtomicU64,
    /// Distinct messages delivered.
    received: AtomicU64,
}

/// What one sender's requests came to.
struct Answers {
    /// Sequence numbers the server committed.
    committed: SeqSet,
    /// 200 answers and 201 answers saying `duplicate`.
    duplicates: u64,
    /// Answers by HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Requests that were not committed, by reason (status and error code, or the failure).
    errors: Failures,
    /// Due time → answer, and (fixed rate) write → answer.
    latency: Histogram<u64>,
    latency_from_send: Histogram<u64>,
    /// When the last commit answer arrived, in [`now_us`] time.
    last_us: u64,
}

impl Answers {
    fn new() -> Self {
        Self {
            committed: SeqSet::default(),
            duplicates: 0,
            statuses: BTreeMap::new(),
            errors: Failures::new(),
            latency: report::histogram(),
            latency_from_send: report::histogram(),
            last_us: 0,
        }
    }
}

/// How a sender paces its requests.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Sender `index` of `senders`, at `rate` messages per second.
    Rate {
        rate: f64,
        index: usize,
        senders: usize,
    },
    /// As fast as the in-flight limit allows.
    Window,
}

/// Everything one sender needs.
struct Sender {
    client: HttpClient,
    uri: Uri,
    auth: HeaderValue,
    /// The recipient's bare JID as a JSON string (quoted and escaped).
    to_json: Arc<str>,
    nonce: Arc<str>,
    lane: Arc<Lane>,
    answers: Arc<StdMutex<Answers>>,
    mode: Mode,
    inflight: usize,
    timeout: Duration,
    /// The run's start, on tokio's clock and on [`now_us`]'s.
    start: tokio::time::Instant,
    start_us: u64,
    deadline: tokio::time::Instant,
}

/// What a sender reports.
struct SendOutcome {
    /// Requests started.
    sent: u64,
    /// Fixed rate: messages due before the end that never got an in-flight slot.
    unsent: u64,
    /// How late each request started against the schedule (fixed rate only).
    lag: Histogram<u64>,
    /// When it stopped sending, in [`now_us`] time.
    end_us: u64,
}

/// The JSON body of one request: `{"to":…,"body":"<seq> <due> <sent>","id":"<client id>"}`.
fn request_body(to_json: &str, nonce: &str, stamp: Stamp) -> (Vec<u8>, String) {
    let mut id = Vec::with_capacity(48);
    push_id(&mut id, nonce, stamp);
    let id = String::from_utf8(id).unwrap_or_default();
    let body = format!(
        "{{\"to\":{to_json},\"body\":\"{} {} {}\",\"id\":\"{id}\"}}",
        stamp.seq, stamp.due_us, stamp.sent_us
    );
    (body.into_bytes(), id)
}

/// Reads an answer to a request with client id `id`: `Ok(duplicate)` if the server committed
/// the message (201, or 200 for a resend), otherwise why not.
fn classify(status: u16, body: &[u8], id: &str) -> Result<bool, String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match status {
        200 | 201 => {
            let Some(json) = json else {
                return Err(format!("HTTP {status} without a JSON receipt"));
            };
            if json["id"].as_str() != Some(id) {
                return Err(format!("HTTP {status} for another id"));
            }
            if json["server_id"].as_str().is_none() || json["seq"].as_u64().is_none() {
                return Err(format!("HTTP {status} receipt without server_id or seq"));
            }
            Ok(status == 200 || json["duplicate"].as_bool() == Some(true))
        }
        _ => Err(match json.as_ref().and_then(|j| j["error"].as_str()) {
            Some(code) => format!("HTTP {status} {code}"),
            None => format!("HTTP {status}"),
        }),
    }
}

/// An error and its sources, `a: b: c` (hyper's own message alone is rarely informative).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Sends one request; the status (if any answer came) and what it meant.
async fn post(
    client: &HttpClient,
    uri: &Uri,
    auth: &HeaderValue,
    body: Vec<u8>,
    id: &str,
    timeout: Duration,
) -> (Option<u16>, Result<bool, String>) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth.clone())
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(request) => request,
        Err(error) => return (None, Err(format!("request: {error}"))),
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body: {}", error_chain(&e)))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, body))) => (Some(status), classify(status, &body, id)),
        Ok(Err(reason)) => (None, Err(reason)),
        Err(_) => (None, Err("timed out".to_owned())),
    }
}

/// Starts requests until the sending time is over, then waits for those in flight.
async fn sender(plan: Sender) -> SendOutcome {
    let permits = Arc::new(Semaphore::new(plan.inflight));
    let mut lag = report::histogram();
    let (mut seq, mut unsent) = (0u64, 0u64);
    let timed = matches!(plan.mode, Mode::Rate { .. });
    loop {
        let (permit, due_us) = match plan.mode {
            Mode::Rate {
                rate,
                index,
                senders,
            } => {
                let offset = due_offset(seq, rate, index, senders);
                if plan.start + offset >= plan.deadline {
                    break;
                }
                tokio::time::sleep_until(plan.start + offset).await;
                // A free slot wins even if the timer woke up after the deadline: the message
                // was due before it.
                let permit = tokio::select! {
                    biased;
                    permit = permits.clone().acquire_owned() => permit,
                    _ = tokio::time::sleep_until(plan.deadline) => {
                        // Everything still due before the end could not be placed.
                        while plan.start + due_offset(seq, rate, index, senders) < plan.deadline {
                            unsent += 1;
                            seq += 1;
                        }
                        break;
                    }
                };
                (permit, plan.start_us + offset.as_micros() as u64)
            }
            Mode::Window => {
                if tokio::time::Instant::now() >= plan.deadline {
                    break;
                }
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit,
                    _ = tokio::time::sleep_until(plan.deadline) => break,
                };
                (permit, now_us())
            }
        };
        let Ok(permit) = permit else { break };
        let sent_us = now_us().max(due_us);
        if timed {
            report::record(&mut lag, sent_us - due_us);
        }
        let stamp = Stamp {
            seq,
            due_us,
            sent_us,
        };
        seq += 1;
        plan.lane.issued.store(seq, Ordering::Release);
        let (body, id) = request_body(&plan.to_json, &plan.nonce, stamp);
        let (client, uri, auth) = (plan.client.clone(), plan.uri.clone(), plan.auth.clone());
        let (lane, answers, timeout) = (plan.lane.clone(), plan.answers.clone(), plan.timeout);
        tokio::spawn(async move {
            let (status, outcome) = post(&client, &uri, &auth, body, &id, timeout).await;
            let now = now_us();
            let mut answers = answers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(status) = status {
                *answers.statuses.entry(status).or_default() += 1;
            }
            match outcome {
                Ok(duplicate) => {
                    if answers.committed.insert(stamp.seq) {
                        lane.committed.fetch_add(1, Ordering::Relaxed);
                    }
                    answers.duplicates += u64::from(duplicate);
                    answers.last_us = now;
                    report::record(&mut answers.latency, now.saturating_sub(stamp.due_us));
                    report::record(
                        &mut answers.latency_from_send,
                        now.saturating_sub(stamp.sent_us),
                    );
                }
                Err(reason) => *answers.errors.entry(reason).or_default() += 1,
            }
            drop(answers);
            lane.answered.fetch_add(1, Ordering::Release);
            drop(permit);
        });
    }
    let end_us = now_us();
    // Every request in flight ends (answered, failed or timed out) and gives its slot back.
    let _ = permits.acquire_many(plan.inflight as u32).await;
    SendOutcome {
        sent: seq - unsent,
        unsent,
        lag,
        end_us,
    }
}

/// Asks a bound session for an IM token (`urn:confab:token:0`).
async fn im_token(conn: &mut Conn) -> Result<String, Failure> {
    const ID: &str = "bench-token";
    conn.stage = "token";
    let ask = async {
        conn.send(format!("<iq type='get' id='{ID}'><token xmlns='{TOKEN_NS}'/></iq>").as_bytes())
            .await?;
        loop {
            let element = conn.element().await?;
            if conn.answer_ping(&element).await? {
                continue;
            }
            if xml::tag_name(&element) != b"iq" || xml::attr(&element, "id") != Some(ID.as_bytes())
            {
                continue;
            }
            if xml::attr(&element, "type") != Some(b"result") {
                return Err(Failure::new("token", xml::error_reason(&element)));
            }
            return match xml::child_text(&element, "token") {
                Some(token) if !token.trim_ascii().is_empty() => {
                    Ok(xml::unescape(token.trim_ascii()))
                }
                _ => Err(Failure::new("token", "result without a token")),
            };
        }
    };
    let result = match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(result) => result,
        Err(_) => Err(Failure::new("token", "timed out")),
    };
    conn.stage = "online";
    result
}

/// Keeps a sender's session open (its token lives as long as it does), answering pings,
/// until stopped; returns why the server ended it first, if it did.
async fn hold(mut session: Session, mut stop: watch::Receiver<bool>) -> Option<String> {
    let conn = &mut session.conn;
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            read = conn.read() => match read {
                Ok(Read::Element(element)) => {
                    if let Err(failure) = conn.answer_ping(&element).await {
                        return Some(failure.to_string());
                    }
                }
                Ok(Read::Open) => {}
                Err(failure) => return Some(failure.to_string()),
            },
        }
    }
}

/// What a receiver saw.
struct Deliveries {
    received: SeqSet,
    duplicates: u64,
    /// Due → arrival, and (fixed rate) write → arrival.
    latency: Histogram<u64>,
    latency_from_send: Histogram<u64>,
    /// Stanzas that were not this run's messages, and bounces, by reason.
    unexpected: Failures,
    last_us: u64,
    dropped: Option<String>,
}

/// The stamp of a delivered message of this run: from its XEP-0359 `origin-id` (Confab puts
/// the client id there), else its `id`. `Err` says why it is not one of ours.
fn delivered_stamp(element: &[u8], nonce: &str) -> Result<Stamp, &'static str> {
    let origin = xml::child(element, "origin-id").and_then(|o| xml::attr(o, "id"));
    for id in [origin, xml::attr(element, "id")].into_iter().flatten() {
        if let Some(stamp) = parse_id(id, nonce) {
            return Ok(stamp);
        }
    }
    match xml::child_text(element, "body").and_then(parse_body) {
        Some(_) => Err("bench message of another run"),
        None => Err("message without a bench body"),
    }
}

/// Reads a receiver's session until stopped, recording each delivery.
async fn receiver(
    mut session: Session,
    lane: Arc<Lane>,
    nonce: Arc<str>,
    mut stop: watch::Receiver<bool>,
) -> Deliveries {
    let mut seen = Deliveries {
        received: SeqSet::default(),
        duplicates: 0,
        latency: report::histogram(),
        latency_from_send: report::histogram(),
        unexpected: Failures::new(),
        last_us: 0,
        dropped: None,
    };
    let conn = &mut session.conn;
    conn.stage = "receive";
    loop {
        let element = tokio::select! {
            _ = stop.changed() => break,
            read = conn.read() => match read {
                Ok(Read::Element(element)) => element,
                Ok(Read::Open) => continue,
                Err(failure) => {
                    seen.dropped = Some(failure.to_string());
                    break;
                }
            },
        };
        match xml::tag_name(&element) {
            b"message" => {}
            b"iq" => {
                if let Err(failure) = conn.answer_ping(&element).await {
                    seen.dropped = Some(failure.to_string());
                    break;
                }
                continue;
            }
            _ => continue,
        }
        let now = now_us();
        let mut unexpected = |reason: String| *seen.unexpected.entry(reason).or_default() += 1;
        if xml::attr(&element, "type") == Some(b"error") {
            unexpected(format!("error message: {}", xml::error_reason(&element)));
            continue;
        }
        let stamp = match delivered_stamp(&element, &nonce) {
            Ok(stamp) => stamp,
            Err(reason) => {
                unexpected(reason.to_owned());
                continue;
            }
        };
        if stamp.seq >= lane.issued.load(Ordering::Acquire) {
            unexpected("message with a sequence number never sent".to_owned());
            continue;
        }
        if !seen.received.insert(stamp.seq) {
            seen.duplicates += 1;
            continue;
        }
        seen.last_us = now;
        report::record(&mut seen.latency, now.saturating_sub(stamp.due_us));
        report::record(
            &mut seen.latency_from_send,
            now.saturating_sub(stamp.sent_us),
        );
        lane.received.fetch_add(1, Ordering::Relaxed);
    }
    seen
}

/// `http://HOST:PORT/api/v1/messages` from `--http HOST:PORT` (or a full `http://` URL base).
fn messages_uri(http: &str) -> anyhow::Result<Uri> {
    let base = http.trim_end_matches('/');
    if base.starts_with("https://") {
        bail!("--http: only plain http is supported");
    }
    let base = base.strip_prefix("http://").unwrap_or(base);
    let uri: Uri = format!("http://{base}/api/v1/messages")
        .parse()
        .with_context(|| format!("--http {http}: not HOST:PORT"))?;
    if uri.host().is_none_or(str::is_empty) {
        bail!("--http {http}: no host");
    }
    Ok(uri)
}

pub async fn run(args: HttpSendArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let uri = messages_uri(&args.http)?;
    let (online, failures) =
        logins::login_pairs(common, &args.load, true, "http-send login:").await?;
    let failed_logins: u64 = failures.values().sum();

    // Pairs where both users are online get a token for the sender; the rest are skipped.
    let mut tokens = JoinSet::new();
    for (mut a, b) in online {
        tokens.spawn(async move {
            let token = im_token(&mut a.conn).await;
            (a, b, token)
        });
    }
    let mut ready = Vec::new();
    let mut token_failures = Failures::new();
    while let Some(joined) = tokens.join_next().await {
        match joined {
            Ok((a, b, Ok(token))) => ready.push((a, b, token)),
            Ok((_, _, Err(failure))) => {
                *token_failures.entry(failure.to_string()).or_default() += 1;
            }
            Err(error) => *token_failures.entry(error.to_string()).or_default() += 1,
        }
    }
    report::print_failures("token failures", &token_failures);
    if ready.is_empty() {
        bail!("no pair could log in and get a token");
    }
    let pairs = ready.len();
    // Let presence echoes and any post-login traffic settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let opened = Arc::new(AtomicU64::new(0));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(CountingConnector {
            inner: connector,
            opened: opened.clone(),
        });

    let nonce: Arc<str> = format!("{:08x}", rand::random::<u32>()).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let duration = Duration::from_secs_f64(args.load.duration.max(0.0));
    let inflight = args.load.inflight.max(1);
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let meter = CpuMeter::start(common.pid);
    let start = tokio::time::Instant::now();
    let start_us = now_us();
    let deadline = start + duration;
    let (mut lanes, mut answers) = (Vec::new(), Vec::new());
    let (mut receivers, mut holds, mut senders) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (a, b, token)) in ready.into_iter().enumerate() {
        let lane = Arc::new(Lane::default());
        let answer = Arc::new(StdMutex::new(Answers::new()));
        lanes.push(lane.clone());
        answers.push(answer.clone());
        // The recipient's bare JID: its bound JID without the resource.
        let bare = b.jid.split('/').next().unwrap_or_default().to_owned();
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        receivers.push(tokio::spawn(receiver(
            b,
            lane.clone(),
            nonce.clone(),
            stop_rx.clone(),
        )));
        holds.push(tokio::spawn(hold(a, stop_rx.clone())));
        senders.push(tokio::spawn(sender(Sender {
            client: client.clone(),
            uri: uri.clone(),
            auth,
            to_json: serde_json::to_string(&bare)?.into(),
            nonce: nonce.clone(),
            lane,
            answers: answer,
            mode: if args.load.max {
                Mode::Window
            } else {
                Mode::Rate {
                    rate: args.load.rate,
                    index: i,
                    senders: pairs,
                }
            },
            inflight,
            timeout,
            start,
            start_us,
            deadline,
        })));
    }
    eprintln!(
        "http-send: {pairs} senders posting to {uri} for {} s",
        args.load.duration
    );

    let (mut sent, mut unsent) = (0u64, 0u64);
    let mut lag = report::histogram();
    let mut send_end_us = start_us;
    for handle in senders {
        let outcome = handle.await.context("a sender task failed")?;
        sent += outcome.sent;
        unsent += outcome.unsent;
        lag.add(&outcome.lag).expect("same histogram bounds");
        send_end_us = send_end_us.max(outcome.end_us);
    }
    let sum = |field: fn(&Lane) -> &AtomicU64| -> u64 {
        lanes
            .iter()
            .map(|lane| field(lane).load(Ordering::Acquire))
            .sum()
    };
    // Drain: wait until every committed message has arrived, as long as deliveries keep
    // coming; what has not moved for --grace seconds is missing.
    let drain_start = Instant::now();
    let idle_limit = Duration::from_secs_f64(args.load.grace.max(0.0));
    let (mut progress, mut last_progress) = (u64::MAX, Instant::now());
    let drained = loop {
        let (committed, received) = (sum(|l| &l.committed), sum(|l| &l.received));
        if received >= committed {
            break true;
        }
        if received != progress {
            (progress, last_progress) = (received, Instant::now());
        } else if last_progress.elapsed() >= idle_limit {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let _ = stop_tx.send(true);

    let mut drops = Failures::new();
    for handle in holds {
        match handle.await {
            Ok(Some(reason)) => *drops.entry(format!("sender: {reason}")).or_default() += 1,
            Ok(None) => {}
            Err(error) => *drops.entry(format!("sender hold: {error}")).or_default() += 1,
        }
    }
    let mut deliveries = Vec::new();
    for handle in receivers {
        deliveries.push(handle.await.context("a receiver task failed")?);
    }

    // Reconcile each lane: committed (201/200) vs received; failed requests count like
    // bounces (answered, not committed), so `unacked` is what got no answer at all.
    let mut totals = Tally::default();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = Failures::new();
    let mut unexpected = Failures::new();
    let mut http_latency = report::histogram();
    let mut http_from_send = report::histogram();
    let mut delivery = report::histogram();
    let mut delivery_from_send = report::histogram();
    let (mut duplicates, mut answer_duplicates) = (0u64, 0u64);
    let (mut last_us, mut last_answer_us) = (start_us, start_us);
    for ((lane, answer), seen) in lanes.iter().zip(&answers).zip(&deliveries) {
        let answer = answer.lock().unwrap_or_else(|e| e.into_inner());
        let failed: u64 = answer.errors.values().sum();
        totals += tally(
            lane.issued.load(Ordering::Acquire),
            &seen.received,
            Some(&answer.committed),
            failed,
        );
        for (status, n) in &answer.statuses {
            *statuses.entry(*status).or_default() += n;
        }
        for (reason, n) in &answer.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
        http_latency.add(&answer.latency).expect("same bounds");
        http_from_send
            .add(&answer.latency_from_send)
            .expect("same bounds");
        answer_duplicates += answer.duplicates;
        last_answer_us = last_answer_us.max(answer.last_us);
        delivery.add(&seen.latency).expect("same bounds");
        delivery_from_send
            .add(&seen.latency_from_send)
            .expect("same bounds");
        duplicates += seen.duplicates;
        last_us = last_us.max(seen.last_us);
        for (reason, n) in &seen.unexpected {
            *unexpected.entry(reason.clone()).or_default() += n;
        }
        if let Some(reason) = &seen.dropped {
            *drops.entry(format!("receiver: {reason}")).or_default() += 1;
        }
    }
    let Tally {
        received,
        acked: committed,
        unacked: unanswered,
        lost,
        received_unacked,
        bounced: failed,
        ..
    } = totals;

    let offered = (!args.load.max).then_some(args.load.rate * pairs as f64);
    let sent_rate = per_second(sent, start_us, send_end_us, args.load.duration);
    let committed_rate = per_second(committed, start_us, last_answer_us, args.load.duration);
    let throughput = per_second(received, start_us, last_us, args.load.duration);
    let (computed, cached) = sasl::cache_stats();
    let server_us_per_msg = cpu
        .server
        .filter(|_| received > 0)
        .map(|s| report::round3(s * 1e6 / received as f64));
    let rate_only = |hist: &Histogram<u64>| (!args.load.max).then(|| report::summary(hist));
    let status_json: BTreeMap<String, u64> =
        statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let connections = opened.load(Ordering::Relaxed);
    let mut result = json!({
        "scenario": "http-send",
        "server": common.server,
        "http": uri.to_string(),
        "transport": common.transport.name(),
        "tls": common.tls,
        "mech": common.mechanism.name(),
        "pairs": pairs,
        "failed_logins": failed_logins,
        "login_failures": failures,
        "token_failures": token_failures,
        "mode": if args.load.max { "max" } else { "rate" },
        "rate_per_pair": (!args.load.max).then_some(args.load.rate),
        "inflight_per_sender": inflight,
        "duration_s": args.load.duration,
        "drain_s": report::round3(drain_s),
        "drained": drained,
        "http_connections": connections,
        "sent": sent,
        "unsent": (!args.load.max).then_some(unsent),
        "http_status": status_json,
        "committed": committed,
        "duplicate_answers": answer_duplicates,
        "failed": failed,
        "http_errors": errors,
        "unanswered": unanswered,
        "received": received,
        "received_uncommitted": received_unacked,
        "lost": lost,
        "duplicated": duplicates,
        "unexpected": unexpected,
        "drops": drops,
    });
    let figures = json!({
        "offered_per_s": offered.map(report::round3),
        "sent_per_s": report::round3(sent_rate),
        "committed_per_s": report::round3(committed_rate),
        "throughput_per_s": report::round3(throughput),
        "http_latency": report::summary(&http_latency),
        "http_latency_from_send": rate_only(&http_from_send),
        "latency": report::summary(&delivery),
        "latency_from_send": rate_only(&delivery_from_send),
        "send_lag": rate_only(&lag),
        "cpu": cpu.json(),
        "server_cpu_us_per_msg": server_us_per_msg,
        "pbkdf2_computed": computed,
        "pbkdf2_cached": cached,
    });
    // Two objects: one json! this long exceeds the macro recursion limit.
    if let (Value::Object(into), Value::Object(more)) = (&mut result, figures) {
        into.extend(more);
    }

    println!(
        "== http-send: {pairs} senders, {} for {} s ==",
        if args.load.max {
            format!("max rate, {inflight} requests in flight per sender")
        } else {
            format!(
                "{} msgs/s per sender, at most {inflight} requests in flight each",
                args.load.rate
            )
        },
        args.load.duration
    );
    println!("http            POST {uri}, {connections} connections opened");
    match offered {
        Some(offered) => println!(
            "sent            {sent}   ({sent_rate:.0} msgs/s achieved, {offered:.0} offered, \
             {:.2}%; {unsent} not sent: no free request slot)",
            sent_rate / offered * 100.0
        ),
        None => println!("sent            {sent}   ({sent_rate:.0} msgs/s)"),
    }
    let status_line: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "answers         {}",
        if status_line.is_empty() {
            "none".to_owned()
        } else {
            status_line.join("   ")
        }
    );
    println!(
        "committed       {committed}   ({committed_rate:.0} msgs/s; 201, or 200 for a resend)"
    );
    println!("failed          {failed}   (not committed; reasons below)");
    println!("unanswered      {unanswered}");
    println!("received        {received}   ({throughput:.0} msgs/s)");
    println!("lost            {lost}   (committed, never received)");
    if received_unacked > 0 {
        println!("received, uncommitted {received_unacked}   (delivered, but the request failed)");
    }
    println!("duplicated      {duplicates}");
    if answer_duplicates > 0 {
        println!("duplicate answers {answer_duplicates}");
    }
    println!(
        "drain           {drain_s:.2} s after sending{}",
        if drained {
            ""
        } else {
            " (stopped: no progress for --grace)"
        }
    );
    let since = if args.load.max {
        ""
    } else {
        " (from due time)"
    };
    println!("http{since}      {}", report::summary_line(&http_latency));
    println!("delivery{since}  {}", report::summary_line(&delivery));
    if !args.load.max {
        println!(
            "http (from write)       {}",
            report::summary_line(&http_from_send)
        );
        println!(
            "delivery (from write)   {}",
            report::summary_line(&delivery_from_send)
        );
        println!("send lag        {}", report::summary_line(&lag));
    }
    println!("cpu             {}", cpu.line());
    if let Some(us) = server_us_per_msg {
        println!("server cpu      {us:.1} µs per delivered message");
    }
    report::print_failures("request failures", &errors);
    report::print_failures("unexpected stanzas", &unexpected);
    report::print_failures("connections lost", &drops);
    println!("{result}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0badcafe";

    #[test]
    fn request_bodies_are_json_with_the_stamp_in_id_and_body() {
        let stamp = Stamp {
            seq: 7,
            due_us: 100,
            sent_us: 120,
        };
        let to = serde_json::to_string("user2@localhost").expect("json");
        let (body, id) = request_body(&to, NONCE, stamp);
        assert_eq!(id, "0badcafe-7-100-120");
        let json: Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            json,
            json!({"to": "user2@localhost", "body": "7 100 120", "id": "0badcafe-7-100-120"})
        );
        assert_eq!(parse_id(id.as_bytes(), NONCE), Some(stamp));
        assert_eq!(
            parse_body(json["body"].as_str().expect("body").as_bytes()),
            Some(stamp)
        );
    }

    #[test]
    fn answers_are_classified_by_status_and_receipt() {
        let id = "0badcafe-7-100-120";
        let receipt = |duplicate: bool| {
            json!({"id": id, "server_id": "0194", "seq": 3, "to": "user2@localhost",
                   "stamp_ms": 1, "duplicate": duplicate})
            .to_string()
        };
        assert_eq!(classify(201, receipt(false).as_bytes(), id), Ok(false));
        assert_eq!(classify(200, receipt(true).as_bytes(), id), Ok(true));
        assert_eq!(
            classify(201, receipt(false).as_bytes(), "0badcafe-8-1-1"),
            Err("HTTP 201 for another id".to_owned())
        );
        assert_eq!(
            classify(201, b"not json", id),
            Err("HTTP 201 without a JSON receipt".to_owned())
        );
        assert_eq!(
            classify(
                401,
                br#"{"error":"unauthorized","message":"session ended"}"#,
                id
            ),
            Err("HTTP 401 unauthorized".to_owned())
        );
        assert_eq!(classify(502, b"", id), Err("HTTP 502".to_owned()));
    }

    #[test]
    fn deliveries_are_ours_by_origin_id_or_id() {
        let ours = b"<message xmlns='jabber:client' from='user1@localhost/bench' \
            to='user2@localhost' type='chat' id='0badcafe-3-10-11'><body>3 10 11</body>\
            <origin-id xmlns='urn:xmpp:sid:0' id='0badcafe-3-10-11'/></message>";
        let stamp = Stamp {
            seq: 3,
            due_us: 10,
            sent_us: 11,
        };
        assert_eq!(delivered_stamp(ours, NONCE), Ok(stamp));
        let by_origin = b"<message id='server-chosen'><body>3 10 11</body>\
            <origin-id xmlns='urn:xmpp:sid:0' id='0badcafe-3-10-11'/></message>";
        assert_eq!(delivered_stamp(by_origin, NONCE), Ok(stamp));
        let earlier_run = b"<message id='12345678-3-10-11'><body>3 10 11</body></message>";
        assert_eq!(
            delivered_stamp(earlier_run, NONCE),
            Err("bench message of another run")
        );
        assert_eq!(
            delivered_stamp(b"<message><body>hi</body></message>", NONCE),
            Err("message without a bench body")
        );
    }

    #[test]
    fn http_addresses_become_the_messages_endpoint() {
        let uri = messages_uri("127.0.0.1:5280").expect("valid");
        assert_eq!(uri.to_string(), "http://127.0.0.1:5280/api/v1/messages");
        let uri = messages_uri("http://localhost:8080/").expect("valid");
        assert_eq!(uri.to_string(), "http://localhost:8080/api/v1/messages");
        assert!(messages_uri("https://localhost:8443").is_err());
        assert!(messages_uri("").is_err());
    }
}
