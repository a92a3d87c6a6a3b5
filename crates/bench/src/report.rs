//! Figures: latency histograms, failure tallies, and what /proc says about a process.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies in microseconds, 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `micros`, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, micros: u64) {
    hist.saturating_record(micros.max(1));
}

/// p50/p99/p99.9/max in milliseconds, for JSON.
pub fn summary(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return json!({"count": 0});
    }
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": hist.len(),
        "p50_ms": ms(hist.value_at_quantile(0.50)),
        "p99_ms": ms(hist.value_at_quantile(0.99)),
        "p999_ms": ms(hist.value_at_quantile(0.999)),
        "max_ms": ms(hist.max()),
        "mean_ms": ms(hist.mean().round() as u64),
    })
}

/// One line for the human table: `p50 … p99 … p99.9 … max …`.
pub fn summary_line(hist: &Histogram<u64>) -> String {
    if hist.is_empty() {
        return "no samples".to_owned();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms",
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max())
    )
}

/// The histogram as `[[value, count], …]`, so worker processes can ship it to the parent.
pub fn export(hist: &Histogram<u64>) -> Value {
    Value::Array(
        hist.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Adds an [`export`]ed histogram into `hist`.
pub fn import(hist: &mut Histogram<u64>, exported: &Value) {
    for pair in exported.as_array().into_iter().flatten() {
        if let (Some(value), Some(count)) = (
            pair.get(0).and_then(Value::as_u64),
            pair.get(1).and_then(Value::as_u64),
        ) {
            let _ = hist.record_n(value.max(1), count);
        }
    }
}

/// Failure counts by reason.
pub type Failures = BTreeMap<String, u64>;

/// Adds `other` into `into`.
pub fn merge_failures(into: &mut Failures, other: &Value) {
    for (reason, count) in other.as_object().into_iter().flatten() {
        *into.entry(reason.clone()).or_default() += count.as_u64().unwrap_or(0);
    }
}

/// Prints failure reasons, most frequent first.
pub fn print_failures(title: &str, failures: &Failures) {
    if failures.is_empty() {
        return;
    }
    println!("{title}:");
    let mut sorted: Vec<_> = failures.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1));
    for (reason, count) in sorted {
        println!("  {count:>8}  {reason}");
    }
}

/// Kernel clock ticks per second for /proc/PID/stat times (`USER_HZ`: 100 on every Linux
/// architecture this tool targets).
const TICKS_PER_SEC: f64 = 100.0;

/// A process's resident set size in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib.parse().context("parse VmRSS");
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// User plus system CPU seconds a process has used (utime + stime in /proc/PID/stat,
/// including reaped threads but not child processes).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    stat_seconds(pid, false)
}

/// This process's CPU seconds, plus those of its reaped child processes (`--procs`
/// workers, once they have exited).
pub fn tool_cpu_seconds() -> anyhow::Result<f64> {
    stat_seconds("self", true)
}

fn stat_seconds(pid: &str, children: bool) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields resume after its ')'.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indices 11 and 12.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    let mut ticks = utime + stime;
    if children {
        let cutime: f64 = fields.get(13).context("no cutime")?.parse()?;
        let cstime: f64 = fields.get(14).context("no cstime")?.parse()?;
        ticks += cutime + cstime;
    }
    Ok(ticks / TICKS_PER_SEC)
}

/// CPU seconds all cores spent busy (not idle, not waiting for IO) since boot, from the
/// first line of /proc/stat.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = ticks.iter().take(8).sum::<f64>()
        - ticks.get(3).copied().unwrap_or(0.0)
        - ticks.get(4).copied().unwrap_or(0.0);
    Ok(busy / TICKS_PER_SEC)
}

/// CPU use of the server (if `--pid`), of this tool and of the whole machine over an
/// interval; the machine figure shows when other processes competed for the cores.
pub struct CpuMeter {
    pid: Option<u32>,
    start: Instant,
    server: Option<f64>,
    tool: Option<f64>,
    machine: Option<f64>,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            start: Instant::now(),
            server: pid.and_then(|p| cpu_seconds(&p.to_string()).ok()),
            tool: tool_cpu_seconds().ok(),
            machine: machine_busy_seconds().ok(),
        }
    }

    /// Server and tool CPU seconds and wall seconds since start. Tool CPU includes worker
    /// processes once they have exited and been reaped.
    pub fn stop(&self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64();
        let server = match (self.pid, self.server) {
            (Some(pid), Some(before)) => cpu_seconds(&pid.to_string()).ok().map(|s| s - before),
            _ => None,
        };
        let tool = self
            .tool
            .and_then(|before| tool_cpu_seconds().ok().map(|now| now - before));
        let machine = self
            .machine
            .and_then(|before| machine_busy_seconds().ok().map(|now| now - before));
        CpuUse {
            server,
            tool,
            machine,
            wall,
        }
    }
}

/// What [`CpuMeter::stop`] measured.
pub struct CpuUse {
    pub server: Option<f64>,
    pub tool: Option<f64>,
    /// Busy CPU seconds of the whole machine, everything included.
    pub machine: Option<f64>,
    pub wall: f64,
}

impl CpuUse {
    /// JSON fields: CPU seconds and average cores busy for server and tool.
    pub fn json(&self) -> Value {
        let cores = |cpu: Option<f64>| cpu.map(|c| round3(c / self.wall.max(1e-9)));
        json!({
            "wall_s": round3(self.wall),
            "server_cpu_s": self.server.map(round3),
            "server_cores": cores(self.server),
            "tool_cpu_s": self.tool.map(round3),
            "tool_cores": cores(self.tool),
            "machine_busy_cores": cores(self.machine),
            "other_cores": cores(self.other()),
        })
    }

    /// Busy CPU seconds of everything but the server and this tool (other processes).
    pub fn other(&self) -> Option<f64> {
        Some((self.machine? - self.server.unwrap_or(0.0) - self.tool?).max(0.0))
    }

    /// One line for the human table.
    pub fn line(&self) -> String {
        let show = |cpu: Option<f64>| match cpu {
            Some(c) => format!("{c:.2} s ({:.0}% of one core)", c / self.wall * 100.0),
            None => "n/a".to_owned(),
        };
        format!(
            "server {}   tool {}   other processes {}   over {:.2} s",
            show(self.server),
            show(self.tool),
            show(self.other()),
            self.wall
        )
    }
}

/// Rounds to three decimals for JSON readability.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_export() {
        let mut a = histogram();
        for v in [10, 20, 20, 3000, 1_000_000] {
            record(&mut a, v);
        }
        let mut b = histogram();
        import(&mut b, &export(&a));
        assert_eq!(a.len(), b.len());
        assert_eq!(a.value_at_quantile(0.5), b.value_at_quantile(0.5));
        assert_eq!(a.max(), b.max());
    }

    #[test]
    fn proc_of_self_is_readable() {
        assert!(rss_kib(std::process::id()).expect("rss") > 0);
        assert!(cpu_seconds("self").expect("cpu") >= 0.0);
    }
}
