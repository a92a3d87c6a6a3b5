//! The one stanza type every transport decodes into and every stage routes.
//!
//! The envelope (kind, addresses) is parsed once at the edge; payloads stay a DOM so features
//! that do not understand a child pass it through untouched (RFC 6120 §8.4).

use crate::{StanzaError, error::rxml_name, ns};
use jid::Jid;
use minidom::Element;

/// The three stanza kinds of RFC 6120 §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`: push, no reply expected.
    Message,
    /// `<presence/>`: broadcast availability and subscriptions.
    Presence,
    /// `<iq/>`: request/response.
    Iq,
}

impl StanzaKind {
    /// The element name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Presence => "presence",
            Self::Iq => "iq",
        }
    }
}

/// Why an element is not a usable stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaParseError {
    /// Not `message`, `presence` or `iq` in `jabber:client` (RFC 6120 §4.9.3.25).
    #[error("unsupported stanza type <{0}/>")]
    UnsupportedKind(String),
    /// A `to` or `from` that is not a valid JID (RFC 6120 §8.3.3.8).
    #[error("malformed JID in '{attribute}': {value}")]
    MalformedJid {
        /// The kind of the offending stanza, so an error reply can be built.
        kind: StanzaKind,
        /// Its id, if it had one.
        id: Option<String>,
        /// The attribute holding the bad JID.
        attribute: &'static str,
        /// The bad value.
        value: String,
    },
}

/// A message, presence or IQ with its addresses parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stanza {
    /// Which of the three kinds.
    pub kind: StanzaKind,
    /// The addressee, if any (absent means the sender's own account or the server).
    pub to: Option<Jid>,
    /// The sender; the server stamps it for client streams (RFC 6120 §8.1.2.1).
    pub from: Option<Jid>,
    /// The whole element, kept in sync with `to`/`from` by the setters.
    pub element: Element,
}

impl Stanza {
    /// Parses the envelope of an element read from a client stream.
    pub fn from_element(element: Element) -> Result<Self, StanzaParseError> {
        let kind = match (element.name(), element.ns().as_str()) {
            ("message", ns::CLIENT) => StanzaKind::Message,
            ("presence", ns::CLIENT) => StanzaKind::Presence,
            ("iq", ns::CLIENT) => StanzaKind::Iq,
            (name, _) => return Err(StanzaParseError::UnsupportedKind(name.to_owned())),
        };
        let (to, from) = match (
            parse_jid_attr(&element, "to"),
            parse_jid_attr(&element, "from"),
        ) {
            (Ok(to), Ok(from)) => (to, from),
            (Err((attribute, value)), _) | (_, Err((attribute, value))) => {
                let id = element.attr("id").map(str::to_owned);
                return Err(StanzaParseError::MalformedJid {
                    kind,
                    id,
                    attribute,
                    value,
                });
            }
        };
        Ok(Self {
            kind,
            to,
            from,
            element,
        })
    }

    /// Builds a stanza from parts the server itself produces.
    pub fn new(element: Element) -> Self {
        let kind = match element.name() {
            "message" => StanzaKind::Message,
            "presence" => StanzaKind::Presence,
            _ => StanzaKind::Iq,
        };
        let to = element.attr("to").and_then(|v| Jid::new(v).ok());
        let from = element.attr("from").and_then(|v| Jid::new(v).ok());
        Self {
            kind,
            to,
            from,
            element,
        }
    }

    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.element.attr("id")
    }

    /// The `type` attribute, if present.
    pub fn type_attr(&self) -> Option<&str> {
        self.element.attr("type")
    }

    /// Sets (or with `None`, removes) the addressee.
    pub fn set_to(&mut self, to: Option<Jid>) {
        set_attr(
            &mut self.element,
            "to",
            to.as_ref().map(|j| j.as_str().to_owned()),
        );
        self.to = to;
    }

    /// Sets (or with `None`, removes) the sender.
    pub fn set_from(&mut self, from: Option<Jid>) {
        set_attr(
            &mut self.element,
            "from",
            from.as_ref().map(|j| j.as_str().to_owned()),
        );
        self.from = from;
    }

    /// True for `type='error'` stanzas, which must never be answered with an error
    /// (RFC 6120 §8.3.1).
    pub fn is_error(&self) -> bool {
        self.type_attr() == Some("error")
    }

    /// The error reply RFC 6120 §8.3.1 asks for: same kind and id, addresses swapped, the
    /// original payload kept, `type='error'` and the error child. `None` for error stanzas,
    /// which must not be answered.
    pub fn error_reply(&self, error: &StanzaError) -> Option<Stanza> {
        if self.is_error() {
            return None;
        }
        let mut reply = self.element.clone();
        set_attr(&mut reply, "type", Some("error".to_owned()));
        let mut stanza = Stanza {
            kind: self.kind,
            to: None,
            from: None,
            element: reply,
        };
        stanza.set_to(self.from.clone());
        stanza.set_from(self.to.clone());
        stanza.element.append_child(error.to_element());
        Some(stanza)
    }

    /// An `<iq type='result'/>` answering this IQ, with an optional payload.
    pub fn iq_result(&self, payload: Option<Element>) -> Stanza {
        let mut builder = Element::builder("iq", ns::CLIENT).attr(rxml_name("type"), "result");
        if let Some(id) = self.id() {
            builder = builder.attr(rxml_name("id"), id);
        }
        if let Some(payload) = payload {
            builder = builder.append(payload);
        }
        let mut stanza = Stanza::new(builder.build());
        stanza.set_to(self.from.clone());
        stanza.set_from(self.to.clone());
        stanza
    }

    /// The first child element, which for an IQ get/set is its one payload (RFC 6120 §8.2.3).
    pub fn payload(&self) -> Option<&Element> {
        self.element.children().next()
    }
}

/// Sets or removes an unqualified attribute on an element.
pub fn set_attr(element: &mut Element, name: &'static str, value: Option<String>) {
    match value {
        Some(value) => element.set_attr(rxml::Namespace::NONE, rxml_name(name), value),
        None => {
            let key = rxml_name(name);
            element
                .attrs_mut()
                .remove::<rxml::Namespace<'static>, rxml::NcName>(&rxml::Namespace::NONE, &key);
        }
    }
}

fn parse_jid_attr(
    element: &Element,
    attribute: &'static str,
) -> Result<Option<Jid>, (&'static str, String)> {
    match element.attr(attribute) {
        None => Ok(None),
        Some(value) => Jid::new(value)
            .map(Some)
            .map_err(|_| (attribute, value.to_owned())),
    }
}

/// The XEP-0359 `<stanza-id/>` that `by` (a bare JID) gave a message, if any. The message log
/// removes ids a client claims in this server's name, so for a local recipient this is the
/// server id its archive holds the message under.
pub fn stanza_id_by<'a>(message: &'a Element, by: &str) -> Option<&'a str> {
    message
        .children()
        .find(|c| c.is("stanza-id", crate::ns::SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
}

/// Builds an element with unqualified attributes in one call; the common case for replies.
/// Inserts into the attribute map directly: `ElementBuilder::attr` searches the map twice per
/// attribute (look up, then insert), which showed in the per-message profile (receipts and
/// stanza ids are built for every message).
pub fn element(name: &str, namespace: &str, attrs: &[(&'static str, &str)]) -> Element {
    let mut element = Element::bare(name, namespace);
    let map = element.attrs_mut();
    for (key, value) in attrs {
        map.insert(rxml::Namespace::NONE, rxml_name(key), (*value).to_owned());
    }
    element
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StanzaErrorCondition;

    #[test]
    fn element_matches_the_builder() {
        let attrs = [("id", "x&<'\""), ("by", "b@example.org"), ("a", "")];
        let ours = element("stanza-id", "urn:xmpp:sid:0", &attrs);
        let mut builder = Element::builder("stanza-id", "urn:xmpp:sid:0");
        for (key, value) in attrs {
            builder = builder.attr(rxml_name(key), value);
        }
        let built = builder.build();
        assert_eq!(ours, built);
        assert_eq!(String::from(&ours), String::from(&built));
    }

    fn parse(xml: &str) -> Stanza {
        Stanza::from_element(xml.parse().expect("xml")).expect("stanza")
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let stanza = parse(
            "<message xmlns='jabber:client' id='m1' from='a@x/r' to='b@x'><body>hi</body></message>",
        );
        let reply = stanza
            .error_reply(&StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
            .expect("reply");
        assert_eq!(reply.element.attr("to"), Some("a@x/r"));
        assert_eq!(reply.element.attr("from"), Some("b@x"));
        assert_eq!(reply.id(), Some("m1"));
        assert_eq!(reply.type_attr(), Some("error"));
        let error = reply
            .element
            .get_child("error", ns::CLIENT)
            .expect("error child");
        assert_eq!(
            StanzaError::from_element(error).map(|e| e.condition),
            Some(StanzaErrorCondition::ServiceUnavailable)
        );
    }

    #[test]
    fn error_stanzas_are_never_answered() {
        let stanza = parse("<message xmlns='jabber:client' type='error' to='b@x'/>");
        assert!(
            stanza
                .error_reply(&StanzaErrorCondition::BadRequest.into())
                .is_none()
        );
    }

    #[test]
    fn malformed_jid_is_reported() {
        let element: Element = "<message xmlns='jabber:client' to='a@b@c'/>"
            .parse()
            .expect("xml");
        assert!(matches!(
            Stanza::from_element(element),
            Err(StanzaParseError::MalformedJid {
                attribute: "to",
                ..
            })
        ));
    }

    #[test]
    fn unknown_top_level_element_is_rejected() {
        let element: Element = "<foo xmlns='jabber:client'/>".parse().expect("xml");
        assert!(matches!(
            Stanza::from_element(element),
            Err(StanzaParseError::UnsupportedKind(_))
        ));
    }

    #[test]
    fn set_from_replaces_and_removes() {
        let mut stanza = parse("<presence xmlns='jabber:client' from='evil@x'/>");
        stanza.set_from(Some(Jid::new("a@x/r").expect("jid")));
        assert_eq!(stanza.element.attr("from"), Some("a@x/r"));
        stanza.set_from(None);
        assert_eq!(stanza.element.attr("from"), None);
    }
}
