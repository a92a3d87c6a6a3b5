//! Message stamps and delivery accounting shared by the message scenarios (`chat`,
//! `http-send`, `group`): what a bench message says about itself (sequence number, due and
//! write times on this process's clock), sets of sequence numbers received, the
//! reconciliation of sent against received, and the open-loop schedule.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Microseconds since this process's clock origin.
pub(crate) fn now_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What a message carries about itself (in its id and its body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Per-direction sequence number, from 0.
    pub(crate) seq: u64,
    /// When the message was due, in [`now_us`] time (with `--max`: when it was written).
    pub(crate) due_us: u64,
    /// When it was written, in [`now_us`] time.
    pub(crate) sent_us: u64,
}

/// Writes the stanza id of the message `stamp` describes: `<nonce>-<seq>-<due>-<sent>`.
pub(crate) fn push_id(out: &mut Vec<u8>, nonce: &str, stamp: Stamp) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "{nonce}-{}-{}-{}",
        stamp.seq, stamp.due_us, stamp.sent_us
    );
}

/// Reads a stanza id written by [`push_id`] with this run's `nonce`.
pub(crate) fn parse_id(id: &[u8], nonce: &str) -> Option<Stamp> {
    let text = std::str::from_utf8(id).ok()?;
    let mut parts = text.split('-');
    if parts.next()? != nonce {
        return None;
    }
    let mut number = || parts.next()?.parse::<u64>().ok();
    let stamp = Stamp {
        seq: number()?,
        due_us: number()?,
        sent_us: number()?,
    };
    parts.next().is_none().then_some(stamp)
}

/// Parses a body `"<seq> <due> <sent>"` (or `"<seq> <stamp>"`, due = sent).
pub(crate) fn parse_body(body: &[u8]) -> Option<Stamp> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let due_us = parts.next()?.parse().ok()?;
    let sent_us = match parts.next() {
        Some(sent) => sent.parse().ok()?,
        None => due_us,
    };
    parts.next().is_none().then_some(Stamp {
        seq,
        due_us,
        sent_us,
    })
}

/// A set of per-direction sequence numbers (a bitmap: they are dense from 0).
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) != 0 {
            return false;
        }
        self.words[word] |= 1 << bit;
        self.len += 1;
        true
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How many members are not in `other`.
    pub(crate) fn count_not_in(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, word)| (word & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// What became of one direction's messages (or, summed, of a run's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) bounced: u64,
    /// Distinct messages acknowledged (0 without receipts).
    pub(crate) acked: u64,
    /// Sent, neither acknowledged nor bounced. Only meaningful with receipts.
    pub(crate) unacked: u64,
    /// With receipts: acknowledged and never received. Without: sent and neither received
    /// nor bounced.
    pub(crate) lost: u64,
    /// Received without a receipt (with receipts: delivered before the drain ended but
    /// never acknowledged).
    pub(crate) received_unacked: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.sent += other.sent;
        self.received += other.received;
        self.bounced += other.bounced;
        self.acked += other.acked;
        self.unacked += other.unacked;
        self.lost += other.lost;
        self.received_unacked += other.received_unacked;
    }
}

/// Reconciles one direction: `sent` messages, the sequence numbers `received` by the
/// recipient and `acked` by the server (`None` when the server sends no receipts), and
/// `bounced` error replies.
pub(crate) fn tally(sent: u64, received: &SeqSet, acked: Option<&SeqSet>, bounced: u64) -> Tally {
    let mut tally = Tally {
        sent,
        received: received.len(),
        bounced,
        ..Tally::default()
    };
    match acked {
        Some(acked) => {
            tally.acked = acked.len();
            tally.unacked = sent.saturating_sub(acked.len() + bounced);
            tally.lost = acked.count_not_in(received);
            tally.received_unacked = received.count_not_in(acked);
        }
        None => {
            tally.lost = sent.saturating_sub(received.len() + bounced);
            tally.received_unacked = received.len();
        }
    }
    tally
}

/// When message `seq` of sender `index` (of `senders`, each sending `rate` msgs/s) is due,
/// after the run's start. The senders' phases are spread over one interval, so the offered
/// load is evenly spaced instead of a burst of one message per sender every interval.
pub(crate) fn due_offset(seq: u64, rate: f64, index: usize, senders: usize) -> Duration {
    let phase = index as f64 / senders.max(1) as f64;
    Duration::from_secs_f64((seq as f64 + phase) / rate)
}

/// `count` events per second between `start_us` and `end_us`, over at least `min_s` seconds
/// (the run's nominal length, so a short burst at the start does not inflate the rate).
pub(crate) fn per_second(count: u64, start_us: u64, end_us: u64, min_s: f64) -> f64 {
    let span = (end_us.saturating_sub(start_us) as f64 / 1e6).max(min_s);
    if span <= 0.0 {
        return 0.0;
    }
    count as f64 / span
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0badcafe";

    #[test]
    fn ids_of_other_runs_or_shapes_do_not_match() {
        assert_eq!(parse_id(b"deadbeef-42-1234-1300", NONCE), None);
        assert_eq!(parse_id(b"0badcafe-42-1234", NONCE), None);
        assert_eq!(parse_id(b"0badcafe-42-1234-1300-5", NONCE), None);
        assert_eq!(parse_id(b"0badcafe-x-1234-1300", NONCE), None);
        assert_eq!(parse_id(b"", NONCE), None);
    }

    fn set(seqs: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut set = SeqSet::default();
        for seq in seqs {
            set.insert(seq);
        }
        set
    }

    #[test]
    fn seq_sets_count_members_and_differences() {
        let mut a = SeqSet::default();
        assert!(a.insert(0));
        assert!(a.insert(63));
        assert!(a.insert(64));
        assert!(a.insert(1000));
        assert!(!a.insert(64));
        assert_eq!(a.len(), 4);
        let b = set([0, 64, 5]);
        assert_eq!(a.count_not_in(&b), 2);
        assert_eq!(b.count_not_in(&a), 1);
        assert_eq!(a.count_not_in(&SeqSet::default()), 4);
        assert_eq!(SeqSet::default().count_not_in(&a), 0);
    }

    #[test]
    fn lost_means_acknowledged_and_never_received() {
        // 10 sent; 0..8 acknowledged; 9 bounced; received 0..6 and 8 (8 before its receipt).
        let acked = set(0..8);
        let received = set((0..6).chain([8]));
        let t = tally(10, &received, Some(&acked), 1);
        assert_eq!(
            t,
            Tally {
                sent: 10,
                received: 7,
                bounced: 1,
                acked: 8,
                unacked: 1,
                lost: 2,
                received_unacked: 1,
            }
        );
        // The same run against a server without receipts: lost is what never came back.
        let t = tally(10, &received, None, 1);
        assert_eq!((t.acked, t.unacked, t.lost), (0, 0, 2));
        // Everything acknowledged and delivered.
        let all = set(0..100);
        let t = tally(100, &all, Some(&all), 0);
        assert_eq!(
            (t.acked, t.unacked, t.lost, t.received_unacked),
            (100, 0, 0, 0)
        );
        let mut sum = t;
        sum += tally(10, &received, Some(&acked), 1);
        assert_eq!((sum.sent, sum.lost, sum.unacked), (110, 2, 1));
    }

    #[test]
    fn schedule_spreads_senders_evenly_and_offers_the_rate() {
        // 4 senders at 10 msgs/s each: together one message every 25 ms.
        let (rate, senders) = (10.0, 4);
        let mut all: Vec<Duration> = (0..senders)
            .flat_map(|i| (0..10).map(move |seq| due_offset(seq, rate, i, senders)))
            .collect();
        all.sort();
        for pair in all.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap.abs_diff(Duration::from_millis(25)) < Duration::from_micros(1),
                "gap {gap:?}"
            );
        }
        // Over 2.5 s, the senders offer exactly 2.5 s × 40 msgs/s.
        let deadline = Duration::from_millis(2500);
        let offered: usize = (0..senders)
            .map(|i| {
                (0..)
                    .take_while(|&seq| due_offset(seq, rate, i, senders) < deadline)
                    .count()
            })
            .sum();
        assert_eq!(offered, 100);
        // Many senders at a fractional rate: the count stays exact (no drift).
        let offered: usize = (0..200)
            .map(|i| {
                (0..)
                    .take_while(|&seq| due_offset(seq, 2.5, i, 200) < Duration::from_secs(10))
                    .count()
            })
            .sum();
        assert_eq!(offered, 5000);
    }

    #[test]
    fn rates_are_over_the_longer_of_run_and_activity() {
        // 1000 events within a 10 s run: 100/s, even if they ended early.
        assert_eq!(per_second(1000, 0, 2_000_000, 10.0), 100.0);
        // The last one 20 s after the start: 50/s.
        assert_eq!(per_second(1000, 5, 20_000_005, 10.0), 50.0);
        assert_eq!(per_second(0, 0, 0, 0.0), 0.0);
    }
}
