//! Logging many users in at a chosen rate with bounded concurrency.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::{Semaphore, mpsc};

use crate::client::{ClientConfig, Failure, Session, login};
use crate::report::Failures;

/// The result of one login attempt.
pub struct Outcome {
    /// The user's number (`user<N>`).
    pub index: u64,
    /// The bound session, or why there is none.
    pub result: Result<Session, Failure>,
    /// From the start of the attempt (TCP connect) to the bind result.
    pub latency: Duration,
}

/// How logins are paced.
#[derive(Clone)]
pub struct Plan {
    /// Users to log in, by number.
    pub users: Vec<u64>,
    /// Account name prefix: user N is `<prefix><N>`.
    pub prefix: String,
    /// Everyone's password.
    pub password: String,
    /// Logins started per second; `None` starts them as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Logins in progress at once, at most.
    pub concurrency: usize,
    /// Source addresses; user N uses `sources[N % len]`.
    pub sources: Arc<Vec<IpAddr>>,
}

/// Starts logging `plan.users` in and returns the channel their outcomes arrive on, one per
/// user, in completion order.
pub fn start(config: Arc<ClientConfig>, plan: Plan) -> mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
        let password: Arc<str> = plan.password.into();
        let start = tokio::time::Instant::now();
        for (n, index) in plan.users.into_iter().enumerate() {
            if let Some(rate) = plan.rate {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let source = if plan.sources.is_empty() {
                None
            } else {
                Some(plan.sources[(index as usize) % plan.sources.len()])
            };
            let (config, password, tx) = (config.clone(), password.clone(), tx.clone());
            let user = format!("{}{index}", plan.prefix);
            tokio::spawn(async move {
                let began = Instant::now();
                let result = login(&config, &user, &password, source).await;
                let latency = began.elapsed();
                drop(permit);
                let _ = tx.send(Outcome {
                    index,
                    result,
                    latency,
                });
            });
        }
    });
    rx
}

/// Logs every user of `plan` in and waits for all of them: the sessions in the order of
/// `plan.users` (`None` where the login failed) and the failures by reason.
pub async fn login_all(
    config: Arc<ClientConfig>,
    plan: Plan,
    label: &str,
) -> anyhow::Result<(Vec<Option<Session>>, Failures)> {
    let position: std::collections::HashMap<u64, usize> = plan
        .users
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i))
        .collect();
    let total = plan.users.len() as u64;
    let mut outcomes = start(config, plan);
    let mut sessions: Vec<Option<Session>> = (0..total).map(|_| None).collect();
    let mut failures = Failures::new();
    let mut progress = Progress::new(label);
    for done in 1..=total {
        let Some(outcome) = outcomes.recv().await else {
            bail!("login dispatcher stopped early");
        };
        match outcome.result {
            Ok(session) => sessions[position[&outcome.index]] = Some(session),
            Err(failure) => *failures.entry(failure.to_string()).or_default() += 1,
        }
        progress.tick(done, failures.values().sum(), total);
    }
    Ok((sessions, failures))
}

/// Prints a progress line to stderr at most once a second.
pub struct Progress {
    label: String,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Self {
        let now = Instant::now();
        Self {
            label: label.into(),
            started: now,
            last: now,
        }
    }

    /// Reports `done` of `total` (with `failed` of them failures) if a second has passed.
    pub fn tick(&mut self, done: u64, failed: u64, total: u64) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{} {done}/{total} done, {failed} failed, {:.0}/s, {secs:.1} s",
            self.label,
            done as f64 / secs.max(1e-9)
        );
    }
}

/// Logs in both users of every pair of `load` (user(2i-1) and user(2i) from `--first`) and
/// returns the pairs where both are online, in order, with the failed logins by reason
/// (also printed).
pub async fn login_pairs(
    common: &crate::Common,
    load: &crate::PairLoad,
    presence: bool,
    label: &str,
) -> anyhow::Result<(Vec<(Session, Session)>, Failures)> {
    if !load.max && (load.rate <= 0.0 || !load.rate.is_finite()) {
        bail!("--rate must be a positive number (or use --max)");
    }
    let config = Arc::new(common.client_config(presence)?);
    let users: Vec<u64> = (0..load.pairs * 2).map(|n| common.first + n).collect();
    let total = users.len() as u64;
    let plan = Plan {
        users,
        prefix: common.users_prefix.clone(),
        password: common.password.clone(),
        rate: None,
        concurrency: common.concurrency,
        sources: common.sources(total)?,
    };
    let (sessions, failures) = login_all(config, plan, label).await?;
    crate::report::print_failures("login failures", &failures);
    let mut pairs = Vec::new();
    let mut it = sessions.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        if let (Some(a), Some(b)) = (a, b) {
            pairs.push((a, b));
        }
    }
    Ok((pairs, failures))
}
