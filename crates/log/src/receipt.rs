//! Wire formats of the log: XEP-0359 client and server ids, and Confab's commit receipt.
//!
//! The receipt (`urn:confab:ack:0`, specified in `docs/protocol/confab-ack.md`) tells a sender
//! that a message is durable and what the server made of it:
//!
//! ```xml
//! <message xmlns='jabber:client' type='headline' id='ack-0190…'
//!          from='example.org' to='alice@example.org/phone'>
//!   <ack xmlns='urn:confab:ack:0' client-id='c-42' server-id='0190…' seq='17'
//!        with='bob@example.org' stamp='2025-01-31T12:00:00.123Z'/>
//! </message>
//! ```

use confab_core::stanza::element;
use confab_core::{Element, Jid};
use minidom::Node;

/// Confab's commit receipt namespace, advertised in the server's disco#info.
pub const ACK: &str = "urn:confab:ack:0";
/// XEP-0359: unique and stable stanza ids (`<stanza-id/>`, `<origin-id/>`).
pub const SID: &str = "urn:xmpp:sid:0";

/// Longest client id used for idempotency. Real ids are UUIDs or shorter; a longer one is
/// still delivered and archived, but not indexed, so it cannot bloat the idempotency index.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// What the server tells a sender after committing its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The client id the message was recognised by (see [`client_id`]), if it had one.
    pub client_id: Option<String>,
    /// The server id, as in the `<stanza-id/>` the recipient got.
    pub server_id: String,
    /// The message's position in its conversation.
    pub seq: u64,
    /// The other party of the conversation (the recipient's bare JID).
    pub with: String,
    /// Server time of the commit, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
}

impl Receipt {
    /// The `<ack/>` element.
    pub fn to_element(&self) -> Element {
        let seq = self.seq.to_string();
        let stamp = format_stamp(self.stamp_ms);
        let mut attrs: Vec<(&'static str, &str)> = Vec::with_capacity(5);
        if let Some(client_id) = &self.client_id {
            attrs.push(("client-id", client_id));
        }
        attrs.extend([
            ("server-id", self.server_id.as_str()),
            ("seq", seq.as_str()),
            ("with", self.with.as_str()),
            ("stamp", stamp.as_str()),
        ]);
        element("ack", ACK, &attrs)
    }

    /// The receipt message from the server to `to`. `type='headline'`: RFC 6121 §5.2.2 makes
    /// it transient information no client stores, answers or shows as a chat message, and
    /// it has no `<body/>`.
    pub fn to_message(&self, server: &str, to: &str) -> Element {
        // The same id for a repeated receipt: it describes the same commit.
        let id = format!("ack-{}", self.server_id);
        let mut message = element(
            "message",
            confab_core::ns::CLIENT,
            &[
                ("type", "headline"),
                ("id", &id),
                ("from", server),
                ("to", to),
            ],
        );
        message.append_child(self.to_element());
        message
    }

    /// Reads the receipt carried by a message, if any (for clients and tests).
    pub fn from_message(message: &Element) -> Option<Self> {
        let ack = message.get_child("ack", ACK)?;
        Some(Self {
            client_id: ack.attr("client-id").map(str::to_owned),
            server_id: ack.attr("server-id")?.to_owned(),
            seq: ack.attr("seq")?.parse().ok()?,
            with: ack.attr("with")?.to_owned(),
            stamp_ms: parse_stamp(ack.attr("stamp")?)?,
        })
    }
}

/// The id a client gave a message: its XEP-0359 `<origin-id/>` (§2.2), else the stanza's
/// `id`. Empty ids and ids over [`MAX_CLIENT_ID_BYTES`] count as none.
pub fn client_id(message: &Element) -> Option<String> {
    let id = match message.get_child("origin-id", SID) {
        Some(origin) => origin.attr("id"),
        None => message.attr("id"),
    }?;
    (!id.is_empty() && id.len() <= MAX_CLIENT_ID_BYTES).then(|| id.to_owned())
}

/// The XEP-0359 §2.1 `<stanza-id/>` the server adds for the archive `by`.
pub fn stanza_id(server_id: &str, by: &str) -> Element {
    element("stanza-id", SID, &[("id", server_id), ("by", by)])
}

/// Removes every `<stanza-id/>` claiming to come from this server (`by` our domain or one of
/// its accounts) and returns whether there was any. XEP-0359 §3: an entity that generates
/// stanza ids MUST delete elements with the `by` it would set, even when it adds none, or a
/// sender could plant ids the recipient's client trusts as the server's.
pub fn strip_our_stanza_ids(message: &mut Element, domain: &str) -> bool {
    let ours = |child: &Element| {
        child.is("stanza-id", SID)
            && child
                .attr("by")
                .and_then(|by| Jid::new(by).ok())
                .is_some_and(|by| by.domain().as_str() == domain)
    };
    // Messages almost never carry one; check before rebuilding the child list.
    if !message.children().any(ours) {
        return false;
    }
    for node in message.take_nodes() {
        match node {
            Node::Element(child) if ours(&child) => {}
            node => message.append_node(node),
        }
    }
    true
}

/// Milliseconds since the epoch in the XEP-0082 DateTime profile (UTC, milliseconds, `Z`).
pub fn format_stamp(stamp_ms: i64) -> String {
    // `to_rfc3339_opts` writes the same text as the strftime pattern
    // `%Y-%m-%dT%H:%M:%S%.3fZ` without parsing a format string for every receipt.
    chrono::DateTime::from_timestamp_millis(stamp_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an XEP-0082 DateTime back to milliseconds since the epoch.
pub fn parse_stamp(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn receipt_round_trips_through_its_message() {
        let receipt = Receipt {
            client_id: Some("c-1 & <x>".into()),
            server_id: "0190a0b0-0000-7000-8000-000000000001".into(),
            seq: 17,
            with: "bob@example.org".into(),
            stamp_ms: 1_700_000_000_123,
        };
        let message = receipt.to_message("example.org", "alice@example.org/phone");
        assert_eq!(message.attr("type"), Some("headline"));
        assert_eq!(message.attr("from"), Some("example.org"));
        assert_eq!(message.attr("to"), Some("alice@example.org/phone"));
        assert!(!message.has_child("body", confab_core::ns::CLIENT));
        let ack = message.get_child("ack", ACK).expect("ack");
        assert_eq!(ack.attr("stamp"), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(ack.attr("seq"), Some("17"));
        // Through text and back, as a client sees it.
        let reparsed = parse(&String::from(&message));
        assert_eq!(Receipt::from_message(&reparsed), Some(receipt.clone()));

        let without_id = Receipt {
            client_id: None,
            ..receipt
        };
        let ack = without_id.to_element();
        assert_eq!(ack.attr("client-id"), None);
        let mut message = parse("<message xmlns='jabber:client'/>");
        message.append_child(ack);
        assert_eq!(Receipt::from_message(&message), Some(without_id));
    }

    #[test]
    fn stamps_are_xep_0082_with_milliseconds() {
        assert_eq!(format_stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_stamp(1_700_000_000_005), "2023-11-14T22:13:20.005Z");
        assert_eq!(format_stamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_stamp(&format_stamp(1_700_000_000_123)),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn client_id_prefers_origin_id_and_ignores_junk() {
        let with_both = parse(
            "<message xmlns='jabber:client' id='stanza-1'><origin-id xmlns='urn:xmpp:sid:0' id='origin-1'/></message>",
        );
        assert_eq!(client_id(&with_both).as_deref(), Some("origin-1"));
        let stanza_only = parse("<message xmlns='jabber:client' id='stanza-1'/>");
        assert_eq!(client_id(&stanza_only).as_deref(), Some("stanza-1"));
        assert_eq!(client_id(&parse("<message xmlns='jabber:client'/>")), None);
        assert_eq!(
            client_id(&parse("<message xmlns='jabber:client' id=''/>")),
            None
        );
        // An origin-id without an id is malformed (XEP-0359 §3); it does not fall back.
        assert_eq!(
            client_id(&parse(
                "<message xmlns='jabber:client' id='s'><origin-id xmlns='urn:xmpp:sid:0'/></message>"
            )),
            None
        );
        let long = "x".repeat(MAX_CLIENT_ID_BYTES + 1);
        assert_eq!(
            client_id(&parse(&format!(
                "<message xmlns='jabber:client' id='{long}'/>"
            ))),
            None
        );
    }

    #[test]
    fn forged_stanza_ids_of_our_domain_are_removed_others_kept() {
        let mut message = parse(
            "<message xmlns='jabber:client'>\
               <stanza-id xmlns='urn:xmpp:sid:0' id='f1' by='bob@example.org'/>\
               <body>hi</body>\
               <stanza-id xmlns='urn:xmpp:sid:0' id='f2' by='example.org'/>\
               <stanza-id xmlns='urn:xmpp:sid:0' id='k1' by='room@muc.elsewhere.net'/>\
               <origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
             </message>",
        );
        assert!(strip_our_stanza_ids(&mut message, "example.org"));
        let ids: Vec<&str> = message
            .children()
            .filter(|c| c.ns() == SID)
            .filter_map(|c| c.attr("id"))
            .collect();
        assert_eq!(ids, ["k1", "o1"]);
        assert_eq!(
            message
                .get_child("body", confab_core::ns::CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("hi")
        );
        assert!(!strip_our_stanza_ids(&mut message, "example.org"));
    }
}
