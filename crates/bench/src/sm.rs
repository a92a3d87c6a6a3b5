//! `chat --sm` and `--carbons`: XEP-0198 stream management (without resumption) and
//! XEP-0280 message carbons, enabled on each session after bind.
//!
//! With `--sm` each client counts the stanzas the server sent since `<enabled/>` (h), answers
//! every `<r/>` with `<a h='h'/>`, and its sender asks for acknowledgements itself with `<r/>`
//! (every [`REQUEST_EVERY`] messages or [`REQUEST_INTERVAL`], with the next write, and once
//! more when sending ends); the server's `<a/>` answers are counted.

use std::time::Duration;

use crate::client::{Failure, Session};
use crate::xml;

/// XEP-0198 namespace.
pub(crate) const SM_NS: &str = "urn:xmpp:sm:3";
/// What a sender writes to ask the server for an acknowledgement.
pub(crate) const REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";
/// A sender asks for an acknowledgement after this many messages…
pub(crate) const REQUEST_EVERY: u64 = 100;
/// …or when this long has passed since it last asked, whichever comes first.
pub(crate) const REQUEST_INTERVAL: Duration = Duration::from_secs(1);

const CARBONS_ID: &str = "bench-carbons";

/// One connection's stream-management state on the receiving side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SmCounter {
    /// Stanzas received since `<enabled/>`, modulo 2^32 (XEP-0198 §4).
    pub(crate) handled: u32,
    /// The server's `<r/>` requests answered.
    pub(crate) requests: u64,
    /// The server's `<a/>` acknowledgements received.
    pub(crate) acks: u64,
    /// The `h` of the last `<a/>`: how many of our stanzas the server has handled.
    pub(crate) last_h: Option<u32>,
}

/// What an element meant to stream management.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SmEvent {
    /// A stanza (message, presence, iq): counted in `h`.
    Stanza,
    /// An `<r/>`: this `<a/>` is the answer to write.
    Request(String),
    /// An `<a/>` from the server: counted.
    Ack,
    /// Anything else (another nonza).
    Other,
}

impl SmCounter {
    /// Accounts for one first-level element received after `<enabled/>`.
    pub(crate) fn observe(&mut self, element: &[u8]) -> SmEvent {
        let name = xml::tag_name(element);
        match name {
            b"message" | b"presence" | b"iq" => {
                self.handled = self.handled.wrapping_add(1);
                SmEvent::Stanza
            }
            b"r" | b"a" if xml::attr(element, "xmlns") == Some(SM_NS.as_bytes()) => {
                if name == b"r" {
                    self.requests += 1;
                    SmEvent::Request(format!("<a xmlns='{SM_NS}' h='{}'/>", self.handled))
                } else {
                    self.acks += 1;
                    let h = xml::attr(element, "h")
                        .and_then(|h| std::str::from_utf8(h).ok()?.parse().ok());
                    if h.is_some() {
                        self.last_h = h;
                    }
                    SmEvent::Ack
                }
            }
            _ => SmEvent::Other,
        }
    }
}

/// What enabling gave on one session.
#[derive(Debug, Default)]
pub(crate) struct Enabled {
    /// With `--sm`: the counter, if the server answered `<enabled/>`.
    pub(crate) sm: Option<SmCounter>,
    /// With `--carbons`: whether the server answered the enable IQ with a result.
    pub(crate) carbons: bool,
    /// Why something asked for was not enabled.
    pub(crate) failures: Vec<String>,
}

/// Enables stream management and/or carbons on `session` (both requests in one write), waits
/// for the answers, and returns the stream-management counter with every stanza received
/// after `<enabled/>` already counted. A connection error ends it early, as a failure.
pub(crate) async fn enable(session: &mut Session, sm: bool, carbons: bool) -> Enabled {
    let mut enabled = Enabled::default();
    match tokio::time::timeout(
        Duration::from_secs(10),
        enable_inner(session, sm, carbons, &mut enabled),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => enabled.failures.push(failure.to_string()),
        Err(_) => enabled.failures.push("enable: timed out".to_owned()),
    }
    enabled
}

async fn enable_inner(
    session: &mut Session,
    sm: bool,
    carbons: bool,
    enabled: &mut Enabled,
) -> Result<(), Failure> {
    let conn = &mut session.conn;
    let mut request = String::new();
    if sm {
        request.push_str(&format!("<enable xmlns='{SM_NS}'/>"));
    }
    if carbons {
        request.push_str(&format!(
            "<iq type='set' id='{CARBONS_ID}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
        ));
    }
    conn.send(request.as_bytes()).await?;
    let (mut sm_pending, mut carbons_pending) = (sm, carbons);
    let mut counter: Option<SmCounter> = None;
    while sm_pending || carbons_pending {
        let element = conn.element().await?;
        if let Some(counter) = &mut counter
            && let SmEvent::Request(answer) = counter.observe(&element)
        {
            conn.send(answer.as_bytes()).await?;
            continue;
        }
        let name = xml::tag_name(&element);
        if sm_pending && xml::attr(&element, "xmlns") == Some(SM_NS.as_bytes()) {
            match name {
                b"enabled" => {
                    counter = Some(SmCounter::default());
                    sm_pending = false;
                }
                b"failed" => {
                    let reason = xml::first_child_name(&element)
                        .unwrap_or_else(|| "no condition".to_owned());
                    enabled.failures.push(format!("sm: <failed/>: {reason}"));
                    sm_pending = false;
                }
                _ => {}
            }
            continue;
        }
        if carbons_pending
            && name == b"iq"
            && xml::attr(&element, "id") == Some(CARBONS_ID.as_bytes())
        {
            if xml::attr(&element, "type") == Some(b"result") {
                enabled.carbons = true;
            } else {
                enabled
                    .failures
                    .push(format!("carbons: {}", xml::error_reason(&element)));
            }
            carbons_pending = false;
            continue;
        }
        conn.answer_ping(&element).await?;
    }
    enabled.sm = counter;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_answered_with_the_stanzas_counted_and_acks_are_counted() {
        let mut sm = SmCounter::default();
        // Nothing received yet: h = 0.
        assert_eq!(
            sm.observe(b"<r xmlns='urn:xmpp:sm:3'/>"),
            SmEvent::Request("<a xmlns='urn:xmpp:sm:3' h='0'/>".to_owned())
        );
        for stanza in [
            b"<message from='a@b/c' type='chat'><body>1</body></message>".as_slice(),
            b"<presence from='a@b/c'/>",
            b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        ] {
            assert_eq!(sm.observe(stanza), SmEvent::Stanza);
        }
        // Nonzas count for nothing; neither do r/a of another namespace.
        assert_eq!(
            sm.observe(b"<a xmlns='urn:xmpp:sm:2' h='9'/>"),
            SmEvent::Other
        );
        assert_eq!(sm.observe(b"<r/>"), SmEvent::Other);
        assert_eq!(sm.handled, 3);
        assert_eq!(
            sm.observe(b"<r xmlns='urn:xmpp:sm:3'/>"),
            SmEvent::Request("<a xmlns='urn:xmpp:sm:3' h='3'/>".to_owned())
        );
        // The server's acknowledgements (ejabberd and Prosody write them with double quotes).
        assert_eq!(
            sm.observe(b"<a xmlns='urn:xmpp:sm:3' h='100'/>"),
            SmEvent::Ack
        );
        assert_eq!(
            sm.observe(b"<a xmlns=\"urn:xmpp:sm:3\" h=\"250\"/>"),
            SmEvent::Ack
        );
        assert_eq!(
            sm,
            SmCounter {
                handled: 3,
                requests: 2,
                acks: 2,
                last_h: Some(250),
            }
        );
        // h wraps at 2^32.
        let mut sm = SmCounter {
            handled: u32::MAX,
            ..SmCounter::default()
        };
        assert_eq!(sm.observe(b"<message/>"), SmEvent::Stanza);
        assert_eq!(
            sm.observe(b"<r xmlns='urn:xmpp:sm:3'/>"),
            SmEvent::Request("<a xmlns='urn:xmpp:sm:3' h='0'/>".to_owned())
        );
    }
}
