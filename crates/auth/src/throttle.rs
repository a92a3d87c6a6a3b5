//! Login throttling per client address and per account; sans-IO (the caller passes `now`).
//!
//! Policy: each key (address, account) counts consecutive failures. The first
//! `free_failures` cost nothing; from then on each failure blocks the key for
//! `base_delay · 2^(failures − free_failures − 1)` (1 s, 2 s, 4 s … with the defaults),
//! capped at `max_delay`, and attempts during a
//! block are refused (the caller answers `<temporary-auth-failure/>`, RFC 6120 §6.5.13).
//! A key is forgotten once it has been quiet for `max_delay` after its last failure or block.
//!
//! The account key stops a distributed guesser aiming at one account; the address key stops
//! one address spraying guesses over many accounts. A success therefore always clears the
//! account's counter, but clears the address's counter only when that address's failures
//! were all against the same account (the "typed my password wrong" case): otherwise an
//! attacker holding one valid account could wipe its address counter between guesses.
//!
//! IPv6 addresses are grouped by /64, since one host usually controls a whole /64, and
//! IPv4-mapped IPv6 addresses count as their IPv4 address.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Tuning for [`LoginThrottle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Consecutive failures that cause no delay; the next one blocks for `base_delay`.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay, and how long a quiet key is remembered.
    pub max_delay: Duration,
    /// Most keys (addresses plus accounts) tracked at once; bounds memory under attack.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    /// 5 free failures, then 1 s doubling up to 5 min; at most 100 000 keys (about 15 MB).
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Account(String),
}

/// Which accounts an address's failures were against, so a success knows whether it may
/// clear the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Targets {
    /// Only failures before a username was known (e.g. malformed exchanges).
    Unnamed,
    /// All named failures were against the account with this (keyed) hash.
    One(u64),
    /// Failures were against several accounts.
    Many,
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    blocked_until: Option<Instant>,
    last_failure: Instant,
    targets: Targets,
}

impl Entry {
    /// The moment after which the key is quiet and can be forgotten.
    fn forget_at(&self, max_delay: Duration) -> Instant {
        let last = match self.blocked_until {
            Some(until) if until > self.last_failure => until,
            _ => self.last_failure,
        };
        last + max_delay
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Keyed hasher for account names kept in [`Targets`], so they are not stored twice.
    hasher: RandomState,
}

/// Thread-safe login throttle; see the module documentation for the policy.
pub struct LoginThrottle {
    config: ThrottleConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("config", &self.config)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

impl LoginThrottle {
    /// A throttle with the given policy.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                hasher: RandomState::new(),
            }),
        }
    }

    /// `Ok` if an attempt may proceed, else how long until the address or account unblocks.
    ///
    /// Call with `username: None` when `<auth/>` arrives and again with the username once
    /// the SASL exchange names it.
    pub fn check(&self, ip: IpAddr, username: Option<&str>, now: Instant) -> Result<(), Duration> {
        let inner = self.inner.lock();
        let wait = keys(ip, username)
            .filter_map(|key| inner.entries.get(&key)?.blocked(now))
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Records a failed attempt (wrong password, unknown account or malformed exchange).
    pub fn record_failure(&self, ip: IpAddr, username: Option<&str>, now: Instant) {
        if self.config.max_tracked == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        let target = username.map(|name| inner.hasher.hash_one(name));
        for key in keys(ip, username) {
            if !inner.entries.contains_key(&key) && inner.entries.len() >= self.config.max_tracked {
                make_room(&mut inner.entries, &self.config, now);
            }
            let is_address = matches!(key, Key::Address(_));
            let entry = inner.entries.entry(key).or_insert(Entry {
                failures: 0,
                blocked_until: None,
                last_failure: now,
                targets: Targets::Unnamed,
            });
            if now >= entry.forget_at(self.config.max_delay) {
                // Quiet long enough: this is a new streak.
                entry.failures = 0;
                entry.blocked_until = None;
                entry.targets = Targets::Unnamed;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if is_address {
                entry.targets = match (entry.targets, target) {
                    (targets, None) => targets,
                    (Targets::Unnamed, Some(hash)) => Targets::One(hash),
                    (Targets::One(old), Some(hash)) if old == hash => Targets::One(hash),
                    _ => Targets::Many,
                };
            }
            // Failure number free_failures + 1 blocks for base_delay, each later one doubles.
            if let Some(excess) = entry.failures.checked_sub(self.config.free_failures + 1) {
                let delay = self
                    .config
                    .base_delay
                    .saturating_mul(1u32 << excess.min(31))
                    .min(self.config.max_delay);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// Records a successful login: clears the account, and the address unless it was spraying.
    pub fn record_success(&self, ip: IpAddr, username: Option<&str>, _now: Instant) {
        let mut inner = self.inner.lock();
        let target = username.map(|name| inner.hasher.hash_one(name));
        if let Some(name) = username {
            inner.entries.remove(&Key::Account(name.to_owned()));
        }
        let address = Key::Address(address_key(ip));
        let clear = match inner.entries.get(&address).map(|entry| entry.targets) {
            Some(Targets::Unnamed) => true,
            Some(Targets::One(hash)) => Some(hash) == target,
            Some(Targets::Many) | None => false,
        };
        if clear {
            inner.entries.remove(&address);
        }
    }

    /// Forgets keys that have been quiet for `max_delay`; call periodically.
    pub fn prune(&self, now: Instant) {
        let max_delay = self.config.max_delay;
        self.inner
            .lock()
            .entries
            .retain(|_, entry| now < entry.forget_at(max_delay));
    }

    /// How many keys are tracked now (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// The keys an attempt counts against.
fn keys(ip: IpAddr, username: Option<&str>) -> impl Iterator<Item = Key> {
    std::iter::once(Key::Address(address_key(ip)))
        .chain(username.map(|name| Key::Account(name.to_owned())))
}

/// Groups addresses the way one attacker holds them (see the module documentation).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = v6.to_bits() & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from_bits(prefix))
            }
        },
    }
}

/// Frees at least an eighth of the table so the O(n) work here is amortized over many
/// inserts: quiet keys go first, then unblocked keys by age, and blocked keys only if
/// nothing else is left.
fn make_room(entries: &mut HashMap<Key, Entry>, config: &ThrottleConfig, now: Instant) {
    entries.retain(|_, entry| now < entry.forget_at(config.max_delay));
    let target = config.max_tracked - (config.max_tracked / 8).max(1);
    if entries.len() <= target {
        return;
    }
    let excess = entries.len() - target;
    let mut ranked: Vec<((bool, Instant), Key)> = entries
        .iter()
        .map(|(key, entry)| {
            (
                (entry.blocked(now).is_some(), entry.last_failure),
                key.clone(),
            )
        })
        .collect();
    ranked.select_nth_unstable_by(excess - 1, |a, b| a.0.cmp(&b.0));
    for (_, key) in ranked.into_iter().take(excess) {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_grow_exponentially_then_cap() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..5 {
            throttle.record_failure(IP, Some("romeo"), now);
            assert_eq!(throttle.check(IP, Some("romeo"), now), Ok(()));
        }
        let mut expected = Vec::new();
        for _ in 0..12 {
            throttle.record_failure(IP, Some("romeo"), now);
            let Err(wait) = throttle.check(IP, Some("romeo"), now) else {
                panic!("not blocked after a failure past the free ones")
            };
            expected.push(wait.as_secs());
            // Retry exactly when allowed.
            now += wait;
            assert_eq!(throttle.check(IP, Some("romeo"), now), Ok(()));
        }
        assert_eq!(expected, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn success_resets_account_and_own_address() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..7 {
            throttle.record_failure(IP, Some("romeo"), now);
        }
        assert_eq!(throttle.check(IP, Some("romeo"), now), Err(secs(2)));
        throttle.record_success(IP, Some("romeo"), now);
        assert_eq!(throttle.check(IP, Some("romeo"), now), Ok(()));
        assert_eq!(throttle.tracked(), 0);
        // The next streak starts from scratch.
        for _ in 0..5 {
            throttle.record_failure(IP, Some("romeo"), now);
        }
        assert_eq!(throttle.check(IP, None, now), Ok(()));
        throttle.record_failure(IP, Some("romeo"), now);
        assert_eq!(throttle.check(IP, None, now), Err(secs(1)));
    }

    #[test]
    fn success_does_not_clear_a_spraying_address() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e", "f", "g"] {
            throttle.record_failure(IP, Some(name), now);
        }
        assert_eq!(throttle.check(IP, None, now), Err(secs(2)));
        // The attacker's own account logs in fine, but the address stays blocked.
        throttle.record_success(IP, Some("mallory"), now);
        assert_eq!(throttle.check(IP, Some("mallory"), now), Err(secs(2)));
        // Other addresses are unaffected: no single account reached the limit.
        assert_eq!(throttle.check(OTHER_IP, Some("a"), now), Ok(()));
    }

    #[test]
    fn account_is_throttled_across_addresses() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for last in 1..=6u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last));
            throttle.record_failure(ip, Some("juliet"), now);
        }
        let fresh = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(throttle.check(fresh, None, now), Ok(()));
        assert_eq!(throttle.check(fresh, Some("juliet"), now), Err(secs(1)));
        assert_eq!(throttle.check(fresh, Some("romeo"), now), Ok(()));
    }

    #[test]
    fn ipv6_groups_by_prefix_and_mapped_v4_is_v4() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            free_failures: 0,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IP);
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(IP);
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IP);
        throttle.record_failure(a, None, now);
        assert!(throttle.check(b, None, now).is_err());
        assert!(throttle.check(c, None, now).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or(OTHER_IP);
        throttle.record_failure(mapped, None, now);
        assert!(throttle.check(IP, None, now).is_err());
    }

    #[test]
    fn quiet_keys_are_forgotten_and_pruned() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            throttle.record_failure(IP, Some("romeo"), t0);
        }
        assert_eq!(throttle.tracked(), 2);
        throttle.prune(t0 + secs(299));
        assert_eq!(throttle.tracked(), 2);
        // Forgotten once quiet for max_delay after the last failure.
        throttle.prune(t0 + secs(301));
        assert_eq!(throttle.tracked(), 0);

        // Without a prune, a failure after the quiet period starts a new streak.
        for _ in 0..6 {
            throttle.record_failure(IP, Some("romeo"), t0);
        }
        let later = t0 + secs(400);
        throttle.record_failure(IP, Some("romeo"), later);
        assert_eq!(throttle.check(IP, Some("romeo"), later), Ok(()));
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            max_tracked: 64,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        // A blocked account survives a flood of single failures against other accounts.
        for _ in 0..6 {
            throttle.record_failure(IP, Some("target"), now);
        }
        for n in 0..1000u32 {
            let later = now + Duration::from_millis(u64::from(n));
            throttle.record_failure(OTHER_IP, Some(&format!("user{n}")), later);
            assert!(throttle.tracked() <= 64);
        }
        let fresh = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(throttle.check(fresh, None, now), Ok(()));
        assert!(throttle.check(fresh, Some("target"), now).is_err());

        let off = LoginThrottle::new(ThrottleConfig {
            max_tracked: 0,
            ..ThrottleConfig::default()
        });
        off.record_failure(IP, Some("x"), now);
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn zero_free_failures_blocks_at_once() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            free_failures: 0,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        throttle.record_failure(IP, None, now);
        assert_eq!(throttle.check(IP, None, now), Err(secs(1)));
    }
}
