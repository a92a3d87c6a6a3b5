//! `connect`: log N users in, hold them idle, and report login rate, failures, time to
//! all-online and (with `--pid`) the server's resident memory per session.
//!
//! Descriptors: a process here may hold 20,000 files, so past ~18,000 users the scenario
//! re-executes itself K times with a hidden `--worker i/K` flag. Each worker logs in its
//! share, prints one `{"event":"online",…}` JSON line, holds its sessions until the parent
//! writes `release` on its stdin, then closes them and prints `{"event":"done",…}`. The
//! parent decides when all are online, samples the server, and aggregates; a single-process
//! run follows the same steps in process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::client::{Read, Session};
use crate::report::{self, CpuMeter, Failures};
use crate::{ConnectArgs, logins, sasl};

/// Users one process handles before the scenario spreads over several.
const USERS_PER_PROCESS: u64 = 18_000;

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.worker {
        let (i, k) = parse_worker(spec)?;
        return worker(&args, i, k).await;
    }
    let procs = procs_for(args.count, args.procs);
    if procs > 1 {
        parent(&args, procs).await
    } else {
        single(&args).await
    }
}

/// `--worker I/K`: this is worker I (from 0) of K.
fn parse_worker(spec: &str) -> anyhow::Result<(u64, u64)> {
    spec.split_once('/')
        .and_then(|(i, k)| Some((i.parse::<u64>().ok()?, k.parse::<u64>().ok()?)))
        .filter(|(i, k)| i < k)
        .context("--worker takes I/K with I < K")
}

/// Processes for `count` users: `requested` (`--procs`/`--workers`) if set, else one per
/// [`USERS_PER_PROCESS`]; never more than there are users.
fn procs_for(count: u64, requested: u32) -> u64 {
    let procs = match requested {
        0 => count.div_ceil(USERS_PER_PROCESS),
        k => u64::from(k),
    };
    procs.clamp(1, count.max(1))
}

/// The user numbers worker `i` of `k` logs in: a contiguous share of first..first+count,
/// the shares differing in size by at most one.
fn share(count: u64, first: u64, i: u64, k: u64) -> std::ops::Range<u64> {
    let (from, to) = (count * i / k, count * (i + 1) / k);
    first + from..first + to
}

/// A worker's share of the login rate: in proportion to its share of the users, so all
/// workers finish together.
fn worker_rate(rate: Option<f64>, count: u64, share: u64) -> Option<f64> {
    rate.map(|r| r * share as f64 / count.max(1) as f64)
}

/// Sessions logged in by one process and still held.
struct Held {
    /// Login figures as JSON (also what a worker ships to the parent).
    stats: Value,
    /// Hold tasks; each yields the reason its session was lost before release, if it was.
    holds: JoinSet<Option<String>>,
    release: watch::Sender<bool>,
}

/// Logs `users` in at `rate` and hands every session to a hold task.
async fn login_phase(
    args: &ConnectArgs,
    users: Vec<u64>,
    rate: Option<f64>,
    label: String,
) -> anyhow::Result<Held> {
    let config = std::sync::Arc::new(args.common.client_config(args.presence)?);
    let total = users.len() as u64;
    let plan = logins::Plan {
        users,
        prefix: args.common.users_prefix.clone(),
        password: args.common.password.clone(),
        rate,
        concurrency: args.common.concurrency,
        sources: args.common.sources(args.count)?,
    };
    let meter = CpuMeter::start(None);
    let started = Instant::now();
    let mut outcomes = logins::start(config, plan);
    let (release, release_rx) = watch::channel(false);
    let mut holds = JoinSet::new();
    let mut hist = report::histogram();
    let (mut succeeded, mut failed) = (0u64, 0u64);
    let mut failures = Failures::new();
    let mut last_success = None;
    let mut progress = logins::Progress::new(label);
    while succeeded + failed < total {
        let Some(outcome) = outcomes.recv().await else {
            bail!("login dispatcher stopped early");
        };
        match outcome.result {
            Ok(session) => {
                succeeded += 1;
                last_success = Some(started.elapsed());
                report::record(&mut hist, outcome.latency.as_micros() as u64);
                holds.spawn(hold(session, release_rx.clone()));
            }
            Err(failure) => {
                failed += 1;
                *failures.entry(failure.to_string()).or_default() += 1;
            }
        }
        progress.tick(succeeded + failed, failed, total);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let (computed, cached) = sasl::cache_stats();
    let stats = json!({
        "succeeded": succeeded,
        "failed": failed,
        "failures": failures,
        "login_phase_s": report::round3(elapsed),
        "last_success_s": last_success.map(|d| report::round3(d.as_secs_f64())),
        "login_latency": report::export(&hist),
        "tool_cpu_s": cpu.tool,
        "pbkdf2_computed": computed,
        "pbkdf2_cached": cached,
    });
    Ok(Held {
        stats,
        holds,
        release,
    })
}

/// Keeps one session open and idle, answering pings, until released; returns why the
/// server dropped it if it did so first.
async fn hold(mut session: Session, mut release: watch::Receiver<bool>) -> Option<String> {
    let conn = &mut session.conn;
    conn.stage = "hold";
    loop {
        tokio::select! {
            _ = release.changed() => break,
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
    // RFC 6120 §4.4: close our stream and give the server a moment to close its own.
    conn.stage = "close";
    if conn.send(b"</stream:stream>").await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while conn.read().await.is_ok() {}
        })
        .await;
    }
    None
}

/// Releases every held session and counts those the server dropped before.
async fn end_hold(mut held: Held) -> (u64, Failures) {
    let _ = held.release.send(true);
    let mut drops = Failures::new();
    let mut dropped = 0;
    while let Some(result) = held.holds.join_next().await {
        let reason = match result {
            Ok(reason) => reason,
            Err(error) => Some(format!("hold task failed: {error}")),
        };
        if let Some(reason) = reason {
            dropped += 1;
            *drops.entry(reason).or_default() += 1;
        }
    }
    (dropped, drops)
}

/// Samples the server's RSS, or `None` without `--pid`.
fn rss(pid: Option<u32>) -> anyhow::Result<Option<u64>> {
    pid.map(report::rss_kib).transpose()
}

/// Waits `settle` then samples RSS (with `--pid`), then holds the rest of `--hold`.
async fn settle_and_hold(args: &ConnectArgs) -> anyhow::Result<Option<u64>> {
    let hold = Duration::from_secs_f64(args.hold.max(0.0));
    let mut waited = Duration::ZERO;
    let mut after = None;
    if args.common.pid.is_some() {
        let settle = Duration::from_secs_f64(args.settle.max(0.0));
        tokio::time::sleep(settle).await;
        waited = settle;
        after = rss(args.common.pid)?;
    }
    tokio::time::sleep(hold.saturating_sub(waited)).await;
    Ok(after)
}

async fn single(args: &ConnectArgs) -> anyhow::Result<()> {
    let rss_before = rss(args.common.pid)?;
    let meter = CpuMeter::start(args.common.pid);
    let users = share(args.count, args.common.first, 0, 1).collect();
    let held = login_phase(args, users, args.rate.0, "connect:".to_owned()).await?;
    let cpu = meter.stop().json();
    let mut stats = held.stats.clone();
    stats["workers"] = json!(1);
    let rss_after = settle_and_hold(args).await?;
    let (dropped, drops) = end_hold(held).await;
    finish(
        args,
        1,
        &[stats],
        cpu,
        rss_before,
        rss_after,
        dropped,
        &drops,
    );
    Ok(())
}

async fn worker(args: &ConnectArgs, i: u64, k: u64) -> anyhow::Result<()> {
    let users: Vec<u64> = share(args.count, args.common.first, i, k).collect();
    let rate = worker_rate(args.rate.0, args.count, users.len() as u64);
    let held = login_phase(args, users, rate, format!("connect worker {i}/{k}:")).await?;
    let mut online = held.stats.clone();
    online["event"] = json!("online");
    println!("{online}");
    // Hold until the parent says so; end of input (the parent died) also releases.
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    let (dropped, drops) = end_hold(held).await;
    println!(
        "{}",
        json!({"event": "done", "dropped": dropped, "drop_reasons": drops})
    );
    Ok(())
}

async fn parent(args: &ConnectArgs, k: u64) -> anyhow::Result<()> {
    let rss_before = rss(args.common.pid)?;
    let meter = CpuMeter::start(args.common.pid);
    let exe = std::env::current_exe().context("find own executable")?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (events_tx, mut events) = mpsc::unbounded_channel::<(u64, Value)>();
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    for i in 0..k {
        let mut child = tokio::process::Command::new(&exe)
            .args(&argv)
            .arg("--worker")
            .arg(format!("{i}/{k}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start a worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdins.push(child.stdin.take().context("worker stdin")?);
        let tx = events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        let _ = tx.send((i, value));
                    }
                    Err(_) => eprintln!("worker {i}: {line}"),
                }
            }
            let _ = tx.send((i, json!({"event": "exit"})));
        });
        children.push(child);
    }
    drop(events_tx);

    let mut online = vec![Value::Null; k as usize];
    let mut pending = k;
    while pending > 0 {
        let (i, event) = events.recv().await.context("workers vanished")?;
        match event["event"].as_str() {
            Some("online") => {
                online[i as usize] = event;
                pending -= 1;
            }
            Some("exit") => bail!("worker {i} exited before its users were online"),
            _ => {}
        }
    }
    let mut cpu = meter.stop();
    let worker_cpu: f64 = online.iter().filter_map(|s| s["tool_cpu_s"].as_f64()).sum();
    cpu.tool = Some(cpu.tool.unwrap_or(0.0) + worker_cpu);
    let rss_after = settle_and_hold(args).await?;

    for stdin in &mut stdins {
        let _ = stdin.write_all(b"release\n").await;
    }
    let (mut dropped, mut drops) = (0, Failures::new());
    let mut reported = vec![false; k as usize];
    while reported.iter().any(|r| !r) {
        let Some((i, event)) = events.recv().await else {
            break;
        };
        match event["event"].as_str() {
            Some("done") => {
                reported[i as usize] = true;
                dropped += event["dropped"].as_u64().unwrap_or(0);
                report::merge_failures(&mut drops, &event["drop_reasons"]);
            }
            Some("exit") if !reported[i as usize] => {
                eprintln!("worker {i} exited without a final report");
                reported[i as usize] = true;
            }
            _ => {}
        }
    }
    for mut child in children {
        let _ = child.wait().await;
    }
    finish(
        args,
        k,
        &online,
        cpu.json(),
        rss_before,
        rss_after,
        dropped,
        &drops,
    );
    Ok(())
}

/// The login figures of all processes together.
#[derive(Debug)]
struct Totals {
    succeeded: u64,
    failed: u64,
    failures: Failures,
    /// Login latency of every login, all processes merged.
    hist: Histogram<u64>,
    /// Seconds of the login phase.
    phase: f64,
    login_rate: f64,
    /// Seconds until the last login succeeded, when none failed.
    all_online: Option<f64>,
    pbkdf2_computed: u64,
    pbkdf2_cached: u64,
}

/// Adds up the login figures (`login_phase` JSON) of one or more processes. `wall` is the
/// parent's measure of the phase, from before the first worker started to the last one's
/// online report (so it includes process start-up, milliseconds); without it the longest
/// process's own phase counts.
fn aggregate(stats: &[Value], wall: Option<f64>) -> Totals {
    let sum = |key: &str| stats.iter().filter_map(|s| s[key].as_u64()).sum::<u64>();
    let max = |key: &str| {
        stats
            .iter()
            .filter_map(|s| s[key].as_f64())
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let (succeeded, failed) = (sum("succeeded"), sum("failed"));
    let mut failures = Failures::new();
    let mut hist: Histogram<u64> = report::histogram();
    for s in stats {
        report::merge_failures(&mut failures, &s["failures"]);
        report::import(&mut hist, &s["login_latency"]);
    }
    let phase = wall.or_else(|| max("login_phase_s")).unwrap_or(0.0);
    Totals {
        succeeded,
        failed,
        failures,
        hist,
        phase,
        login_rate: succeeded as f64 / phase.max(1e-9),
        all_online: (failed == 0).then(|| max("last_success_s").unwrap_or(phase)),
        pbkdf2_computed: sum("pbkdf2_computed"),
        pbkdf2_cached: sum("pbkdf2_cached"),
    }
}

/// Aggregates the per-process login figures, prints the table and the JSON line.
#[allow(clippy::too_many_arguments)]
fn finish(
    args: &ConnectArgs,
    procs: u64,
    stats: &[Value],
    cpu: Value,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    dropped: u64,
    drops: &Failures,
) {
    let Totals {
        succeeded,
        failed,
        failures,
        hist,
        phase,
        login_rate,
        all_online,
        pbkdf2_computed,
        pbkdf2_cached,
    } = aggregate(stats, cpu["wall_s"].as_f64());
    let rss_per_session = match (rss_before, rss_after) {
        (Some(before), Some(after)) if succeeded > 0 => Some(report::round3(
            (after as f64 - before as f64) / succeeded as f64,
        )),
        _ => None,
    };
    let common = &args.common;
    let result = json!({
        "scenario": "connect",
        "server": common.server,
        "transport": common.transport.name(),
        "tls": common.tls,
        "mech": common.mechanism.name(),
        "pipeline": !common.no_pipeline,
        "presence": args.presence,
        "users": args.count,
        "procs": procs,
        "rate_target": args.rate.0,
        "concurrency": common.concurrency,
        "succeeded": succeeded,
        "failed": failed,
        "failures": failures,
        "login_phase_s": report::round3(phase),
        "login_rate_per_s": report::round3(login_rate),
        "time_to_all_online_s": all_online.map(report::round3),
        "login_latency": report::summary(&hist),
        "cpu_during_logins": cpu,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_session_kib": rss_per_session,
        "held_s": args.hold,
        "dropped": dropped,
        "drop_reasons": drops,
        "pbkdf2_computed": pbkdf2_computed,
        "pbkdf2_cached": pbkdf2_cached,
    });

    println!("== connect: {} users, {procs} process(es) ==", args.count);
    println!(
        "logged in       {succeeded} ok, {failed} failed   ({} {}, {})",
        common.transport_label(),
        common.mechanism.name(),
        if common.no_pipeline {
            "no pipelining"
        } else {
            "pipelined"
        }
    );
    println!(
        "login rate      {login_rate:.0}/s over {phase:.2} s (target {})",
        args.rate.0.map_or("max".to_owned(), |r| format!("{r}/s"))
    );
    match all_online {
        Some(t) => println!("all online      after {t:.2} s"),
        None => println!("all online      never ({failed} failed)"),
    }
    println!("login latency   {}", report::summary_line(&hist));
    if let Some(cpu_line) = cpu_line(&result["cpu_during_logins"]) {
        println!("cpu in logins   {cpu_line}");
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "server RSS      {before} KiB before, {after} KiB after {}s idle: {} KiB/session",
            args.settle,
            rss_per_session.map_or("n/a".to_owned(), |r| format!("{r:.1}"))
        );
        if rss_per_session.is_some_and(|r| r < 1.0) {
            println!(
                "                (the server is reusing memory freed by an earlier run: \
                 restart it for a per-session figure)"
            );
        }
    }
    println!(
        "pbkdf2          {} computed, {} from cache",
        result["pbkdf2_computed"], result["pbkdf2_cached"]
    );
    println!(
        "held            {} s, {dropped} dropped by the server",
        args.hold
    );
    report::print_failures("login failures", &failures);
    report::print_failures("drops during hold", drops);
    println!("{result}");
}

/// "server … tool …" from a CPU JSON object.
pub fn cpu_line(cpu: &Value) -> Option<String> {
    let wall = cpu["wall_s"].as_f64()?;
    let show = |key: &str| match cpu[key].as_f64() {
        Some(c) => format!("{c:.2} s ({:.0}% of one core)", c / wall.max(1e-9) * 100.0),
        None => "n/a".to_owned(),
    };
    let other = match cpu["other_cores"].as_f64() {
        Some(cores) => format!("{:.0}% of one core", cores * 100.0),
        None => "n/a".to_owned(),
    };
    Some(format!(
        "server {}   tool {}   other processes {other}   over {wall:.2} s",
        show("server_cpu_s"),
        show("tool_cpu_s")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_user_once_and_differ_by_at_most_one() {
        for (count, k) in [
            (19_000, 2),
            (19_001, 2),
            (36_001, 3),
            (10, 4),
            (3, 3),
            (7, 1),
        ] {
            let shares: Vec<_> = (0..k).map(|i| share(count, 101, i, k)).collect();
            assert_eq!(shares[0].start, 101);
            assert_eq!(shares[k as usize - 1].end, 101 + count);
            for pair in shares.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "contiguous, disjoint");
            }
            let sizes: Vec<u64> = shares.iter().map(|r| r.end - r.start).collect();
            assert_eq!(sizes.iter().sum::<u64>(), count);
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
        }
        assert_eq!(share(19_000, 1, 0, 2), 1..9_501);
        assert_eq!(share(19_000, 1, 1, 2), 9_501..19_001);
    }

    #[test]
    fn processes_follow_the_descriptor_limit_unless_forced() {
        assert_eq!(procs_for(1_000, 0), 1);
        assert_eq!(procs_for(USERS_PER_PROCESS, 0), 1);
        assert_eq!(procs_for(19_000, 0), 2);
        assert_eq!(procs_for(50_000, 0), 3);
        // --workers forces the count, but never more processes than users.
        assert_eq!(procs_for(19_000, 2), 2);
        assert_eq!(procs_for(1_000, 4), 4);
        assert_eq!(procs_for(3, 8), 3);
        assert_eq!(procs_for(0, 0), 1);
    }

    #[test]
    fn worker_specs_and_rates() {
        assert_eq!(parse_worker("1/2").expect("valid"), (1, 2));
        assert!(parse_worker("2/2").is_err());
        assert!(parse_worker("1").is_err());
        assert!(parse_worker("a/b").is_err());
        // Rates follow the shares, so they add up to the requested rate.
        let total: f64 = (0..3)
            .map(|i| {
                let r = share(10_001, 1, i, 3);
                worker_rate(Some(900.0), 10_001, r.end - r.start).expect("rate")
            })
            .sum();
        assert!((total - 900.0).abs() < 1e-9, "{total}");
        assert_eq!(worker_rate(None, 10, 5), None);
    }

    /// A worker's `online` line as it arrives on the parent's pipe.
    fn online_line(ok: u64, failed: u64, failures: Value, latencies: &[u64], last: f64) -> Value {
        let mut hist = report::histogram();
        for &us in latencies {
            report::record(&mut hist, us);
        }
        let line = json!({
            "event": "online",
            "succeeded": ok,
            "failed": failed,
            "failures": failures,
            "login_phase_s": last + 0.01,
            "last_success_s": last,
            "login_latency": report::export(&hist),
            "tool_cpu_s": 0.5,
            "pbkdf2_computed": 0,
            "pbkdf2_cached": ok + failed,
        })
        .to_string();
        serde_json::from_str(&line).expect("the line parses back")
    }

    #[test]
    fn worker_reports_add_up() {
        let a = online_line(9_500, 0, json!({}), &[1_000, 2_000, 30_000], 1.5);
        let b = online_line(
            9_498,
            2,
            json!({"connect: timed out": 2}),
            &[4_000, 1_032_000],
            1.75,
        );
        let totals = aggregate(&[a.clone(), b], Some(2.0));
        assert_eq!((totals.succeeded, totals.failed), (18_998, 2));
        assert_eq!(totals.failures.get("connect: timed out"), Some(&2));
        assert_eq!(totals.hist.len(), 5);
        assert_eq!(totals.hist.max(), totals.hist.highest_equivalent(1_032_000));
        assert_eq!(totals.pbkdf2_cached, 19_000);
        // The parent's wall clock is the phase; a failure means never all online.
        assert_eq!(totals.phase, 2.0);
        assert_eq!(totals.login_rate, 18_998.0 / 2.0);
        assert_eq!(totals.all_online, None);

        let c = online_line(9_500, 0, json!({}), &[500], 1.75);
        let totals = aggregate(&[a.clone(), c], Some(2.0));
        assert_eq!(totals.failed, 0);
        // All online when the slowest worker's last login succeeded.
        assert_eq!(totals.all_online, Some(1.75));
        // In one process (no parent clock), its own phase counts.
        let totals = aggregate(&[a], None);
        assert_eq!(totals.phase, 1.51);
        assert_eq!(totals.all_online, Some(1.5));
    }
}
