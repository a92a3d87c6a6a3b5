//! `register`: create `<prefix><first>…` accounts with XEP-0077 in-band registration.
//!
//! Account creation is server-specific, and a CLI call per account (`confab user add`) is
//! far too slow for 100k accounts, so the tool registers in band, which Confab
//! (`--registration open`), ejabberd and Prosody all offer when enabled. Registrations are
//! pipelined: each of `--connections` unauthenticated streams keeps `--depth` requests in
//! flight. Servers bound unauthenticated streams (Confab closes them after 30 s, ejabberd
//! and Prosody rate-limit registrations per address by default), so a stream is replaced
//! after `--per-connection` registrations, and requests lost with a dropped stream are
//! retried up to three times. An account that already exists (`<conflict/>`) counts as
//! present, not failed, so the command can be re-run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{ClientConfig, Conn, Failure, open};
use crate::report::{self, Failures};
use crate::{RegisterArgs, xml};

/// Tries per account before its last failure is reported.
const MAX_ATTEMPTS: u32 = 3;

/// The shared to-do list.
struct Work {
    /// Next never-tried offset (0-based) into the range.
    next: AtomicU64,
    count: u64,
    /// Offsets to try again, with the tries so far.
    retry: Mutex<Vec<(u64, u32)>>,
    /// Accounts not yet settled (created, present or failed).
    outstanding: AtomicU64,
    created: AtomicU64,
    existed: AtomicU64,
    failures: Mutex<Failures>,
}

impl Work {
    fn take(&self) -> Option<(u64, u32)> {
        if let Some(item) = self.retry.lock().expect("work lock").pop() {
            return Some(item);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.count).then_some((n, 0))
    }

    fn fail(&self, reason: String) {
        *self
            .failures
            .lock()
            .expect("work lock")
            .entry(reason)
            .or_default() += 1;
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    /// Puts back requests a dropped stream left unanswered.
    fn requeue(&self, items: impl IntoIterator<Item = (u64, u32)>, failure: &Failure) {
        for (n, tries) in items {
            if tries + 1 >= MAX_ATTEMPTS {
                self.fail(failure.to_string());
            } else {
                self.retry.lock().expect("work lock").push((n, tries + 1));
            }
        }
    }

    fn failed(&self) -> u64 {
        self.failures.lock().expect("work lock").values().sum()
    }
}

pub async fn run(args: RegisterArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let config = Arc::new(common.client_config(false)?);
    let work = Arc::new(Work {
        next: AtomicU64::new(0),
        count: args.count,
        retry: Mutex::new(Vec::new()),
        outstanding: AtomicU64::new(args.count),
        created: AtomicU64::new(0),
        existed: AtomicU64::new(0),
        failures: Mutex::new(Failures::new()),
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        tasks.push(tokio::spawn(registrar(
            config.clone(),
            args.clone(),
            work.clone(),
        )));
    }
    let mut progress = crate::logins::Progress::new("register:");
    while work.outstanding.load(Ordering::Relaxed) > 0 && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let failed = work.failed();
        let done = args.count - work.outstanding.load(Ordering::Relaxed);
        progress.tick(done, failed, args.count);
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created = work.created.load(Ordering::Relaxed);
    let existed = work.existed.load(Ordering::Relaxed);
    let failures = work.failures.lock().expect("work lock").clone();
    let failed: u64 = failures.values().sum();
    let result = json!({
        "scenario": "register",
        "server": common.server,
        "transport": common.transport.name(),
        "tls": common.tls,
        "requested": args.count,
        "first": common.first,
        "created": created,
        "existed": existed,
        "failed": failed,
        "failures": failures,
        "elapsed_s": report::round3(elapsed),
        "rate_per_s": report::round3(created as f64 / elapsed.max(1e-9)),
        "connections": args.connections,
        "depth": args.depth,
    });
    println!(
        "== register: {}{}..{}{} ==",
        common.users_prefix,
        common.first,
        common.users_prefix,
        common.first + args.count.saturating_sub(1)
    );
    println!(
        "created         {created}   ({:.0}/s)",
        created as f64 / elapsed.max(1e-9)
    );
    println!("already there   {existed}");
    println!("failed          {failed}");
    report::print_failures("failures", &failures);
    println!("{result}");
    if failed > 0 {
        anyhow::bail!("{failed} registrations failed");
    }
    Ok(())
}

/// One connection's worth of registering, reconnecting until the work is done.
async fn registrar(config: Arc<ClientConfig>, args: RegisterArgs, work: Arc<Work>) {
    let common = &args.common;
    let timeout = config.timeout;
    let mut consecutive_failures = 0u32;
    let mut warned = false;
    while work.outstanding.load(Ordering::Relaxed) > 0 {
        if work.next.load(Ordering::Relaxed) >= work.count
            && work.retry.lock().expect("work lock").is_empty()
        {
            // Others hold the last requests; wait to see whether any come back.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let opened = tokio::time::timeout(timeout, open(&config, None)).await;
        let (mut conn, features) = match opened {
            Ok(Ok(opened)) => opened,
            failed => {
                let failure = match failed {
                    Ok(Err(failure)) => failure,
                    _ => Failure::new("stream", "timed out"),
                };
                consecutive_failures += 1;
                if consecutive_failures >= 20 {
                    // The server refuses us outright: settle everything left as failed.
                    while let Some(item) = work.take() {
                        work.requeue([(item.0, MAX_ATTEMPTS)], &failure);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        consecutive_failures = 0;
        if !warned && !xml::has_child(&features, "register") {
            eprintln!("register: the server does not advertise in-band registration; trying");
            warned = true;
        }
        conn.stage = "register";
        let finished = session(&mut conn, common, &args, &work, timeout).await;
        if finished.is_ok() {
            let _ = conn.send(b"</stream:stream>").await;
        }
    }
}

/// Registers over one stream until `--per-connection` is reached or the work runs out.
async fn session(
    conn: &mut Conn,
    common: &crate::Common,
    args: &RegisterArgs,
    work: &Work,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut inflight: HashMap<String, (u64, u32)> = HashMap::new();
    let mut issued = 0u64;
    let password = xml::escape(&common.password);
    loop {
        let mut out = String::new();
        while inflight.len() < args.depth.max(1) && issued < args.per_connection.max(1) {
            let Some((n, tries)) = work.take() else { break };
            let user = format!("{}{}", common.users_prefix, common.first + n);
            let id = format!("reg{n}");
            out.push_str(&format!(
                "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
                 <username>{}</username><password>{password}</password></query></iq>",
                xml::escape(&user)
            ));
            inflight.insert(id, (n, tries));
            issued += 1;
        }
        if !out.is_empty()
            && let Err(failure) = conn.send(out.as_bytes()).await
        {
            work.requeue(inflight.into_values(), &failure);
            return Err(failure);
        }
        if inflight.is_empty() {
            return Ok(());
        }
        let element = match tokio::time::timeout(timeout, conn.element()).await {
            Ok(Ok(element)) => element,
            Ok(Err(failure)) => {
                work.requeue(inflight.into_values(), &failure);
                return Err(failure);
            }
            Err(_) => {
                let failure = Failure::new("register", "no answer in time");
                work.requeue(inflight.into_values(), &failure);
                return Err(failure);
            }
        };
        let Some(id) = xml::attr(&element, "id") else {
            continue;
        };
        let Some(_) = inflight.remove(String::from_utf8_lossy(id).as_ref()) else {
            continue;
        };
        match xml::attr(&element, "type") {
            Some(b"result") => {
                work.created.fetch_add(1, Ordering::Relaxed);
                work.outstanding.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {
                let reason = xml::error_reason(&element);
                if reason.starts_with("conflict") {
                    work.existed.fetch_add(1, Ordering::Relaxed);
                    work.outstanding.fetch_sub(1, Ordering::Relaxed);
                } else {
                    work.fail(format!("register: {reason}"));
                }
            }
        }
    }
}
