//! XEP-0198 stream management bookkeeping, without IO: what the client has handled, what it
//! sent that the server has not acknowledged yet.
//!
//! Counters are `u32` and wrap (XEP-0198 §4: "h" is modulo 2^32).

use std::collections::VecDeque;

use confab_proto::v1::Frame;

/// Stream management state of one session (kept across resumption).
#[derive(Debug, Clone, Default)]
pub struct StreamManagement {
    /// The resumption id (`<enabled id=''/>`), when the server allows resuming.
    pub id: Option<String>,
    /// Stanzas received and handled: the `h` this client reports.
    pub inbound: u32,
    /// The server's last acknowledged count of stanzas it handled from us.
    pub acked: u32,
    /// Stanzas sent after `acked`, oldest first, kept to be sent again on resumption.
    pub unacked: VecDeque<Frame>,
}

/// The server acknowledged more stanzas than the client sent (XEP-0198 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAcked {
    /// What the server acknowledged.
    pub h: u32,
    /// What the client has sent.
    pub sent: u32,
}

impl StreamManagement {
    /// A stanza was received.
    pub fn received(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// A stanza was sent: it is kept until acknowledged.
    pub fn sent(&mut self, frame: Frame) {
        self.unacked.push_back(frame);
    }

    /// How many stanzas the client has sent in this session (mod 2^32).
    pub fn sent_count(&self) -> u32 {
        // The queue never holds more than 2^32 stanzas in practice; truncation wraps as h does.
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// The server handled `h` stanzas in total: forget those.
    pub fn ack(&mut self, h: u32) -> Result<(), TooManyAcked> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(TooManyAcked {
                h,
                sent: self.sent_count(),
            });
        }
        self.unacked.drain(..newly);
        self.acked = h;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::v1::frame::Kind;

    fn stanza(n: u32) -> Frame {
        Frame {
            kind: Some(Kind::SmAck(confab_proto::v1::SmAck { h: n })),
        }
    }

    #[test]
    fn acks_drop_the_oldest_stanzas() {
        let mut sm = StreamManagement::default();
        for n in 0..4 {
            sm.sent(stanza(n));
        }
        sm.ack(1).expect("one acknowledged");
        sm.ack(1).expect("a repeated ack changes nothing");
        assert_eq!(sm.unacked, vec![stanza(1), stanza(2), stanza(3)]);
        sm.ack(4).expect("all acknowledged");
        assert!(sm.unacked.is_empty());
        assert_eq!(sm.ack(5), Err(TooManyAcked { h: 5, sent: 4 }));
    }

    #[test]
    fn counters_wrap() {
        let mut sm = StreamManagement {
            acked: u32::MAX,
            inbound: u32::MAX,
            ..StreamManagement::default()
        };
        sm.sent(stanza(0));
        sm.sent(stanza(1));
        sm.ack(0).expect("h wrapped past 2^32");
        assert_eq!(sm.unacked, vec![stanza(1)]);
        sm.received();
        assert_eq!(sm.inbound, 0);
    }
}
