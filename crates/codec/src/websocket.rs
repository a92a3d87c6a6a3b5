//! XMPP over WebSocket (RFC 7395): one text message per first-level element.
//!
//! The carrier hands each received WebSocket message to the session as one varint
//! length-delimited frame (see [`crate::wire`]); every frame written here becomes one message.
//!
//! **Input.** Each message is one complete XML element with all its namespaces declared
//! (§3.3.3): `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' .../>` starts the stream
//! (and restarts it after SASL, §3.5), `<close .../>` ends it (§3.6), anything else is a
//! stanza or a negotiation element. Messages are parsed by the same [`XmlStreamDecoder`]
//! the TCP listener uses, so depth, attribute, namespace-declaration and restricted-XML
//! rules (no DTD, PI or comment) are one parser's: the decoder is primed once with a
//! synthetic stream header and then reads each message as the next first-level element
//! of that stream, which must end exactly where the message ends.
//!
//! The synthetic header binds the default namespace to `jabber:client`, so a stanza
//! without `xmlns` is read as a `jabber:client` stanza, as on a TCP stream. §3.3.3 requires
//! clients to declare it; accepting its absence is harmless leniency. The header binds no
//! prefix a client could use by accident: an undeclared `stream:` prefix is an error here
//! as it is in any standalone document.
//!
//! **Output.** Every element is written standalone: the XML encoder's output for a
//! first-level element, with the declarations it leaves to the stream header added to the
//! element itself (`xmlns='jabber:client'` on stanzas, `xmlns:stream` on
//! `<stream:features/>` and `<stream:error/>`, §3.6 and §3.3.3).
//!
//! **Not text.** A zero-length frame is how the carrier reports a message it cannot pass
//! on, such as a binary message on the XML endpoint (§3.2: data frames MUST be text). It
//! ends the stream with `bad-format`, like an empty text message, which is not an element
//! either. A message of whitespace only is ignored.

use bytes::BytesMut;
use confab_core::ns;
use minidom::Element;
use rxml::{Namespace, NcName};

use crate::wire::{put_varint, take_frame};
use crate::{CodecError, Limits, StreamEvent, StreamHeader, XmlStreamDecoder, encode};

/// RFC 7395 §3.3.1: the namespace of `<open/>` and `<close/>`.
pub const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The stream every message is read as a first-level element of. Its stream prefix is one
/// no client uses, so frames cannot lean on it (see the module docs).
const CONTEXT: &[u8] = b"<ws-context:stream xmlns='jabber:client' \
    xmlns:ws-context='http://etherx.jabber.org/streams'>";

/// Where the client's stream is (RFC 7395 §3.4–§3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `<open/>` (at the start and after every restart).
    AwaitingOpen,
    /// Between `<open/>` and `<close/>`.
    Open,
    /// `<close/>` was read; input is discarded.
    Closed,
}

/// Reader and writer of one RFC 7395 connection.
#[derive(Debug)]
pub struct XmlWebSocketCodec {
    /// The limits this codec enforces.
    limits: Limits,
    /// Parses every message; primed with [`CONTEXT`] and kept between first-level elements.
    parser: XmlStreamDecoder,
    /// Whether `parser` has read [`CONTEXT`] since it was last reset.
    primed: bool,
    /// Position in the client's stream.
    state: State,
    /// The first error, returned again on every later call: a stream error is final.
    error: Option<CodecError>,
}

impl XmlWebSocketCodec {
    /// A codec waiting for the client's `<open/>`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            parser: XmlStreamDecoder::new(limits),
            primed: false,
            state: State::AwaitingOpen,
            error: None,
        }
    }

    /// The next complete event in `input`, `Ok(None)` while the next frame is incomplete.
    /// Frames after the event stay in `input`.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.next_event(input);
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    /// A stream restart (§3.5): the client opens the stream again with a new `<open/>`.
    pub fn reset(&mut self) {
        self.state = State::AwaitingOpen;
        if self.error.take().is_some() {
            // The parser holds the error too; it starts over from the context.
            self.primed = false;
        }
    }

    /// Releases buffers while the connection is idle.
    pub fn shrink(&mut self) {
        self.parser.shrink();
    }

    /// Writes the server's `<open/>` (§3.3.2) as one frame.
    pub fn write_open(
        &self,
        out: &mut BytesMut,
        from_domain: &str,
        to: Option<&str>,
        id: &str,
        lang: &str,
    ) {
        let mut open = Element::bare("open", FRAMING_NS);
        let attrs = open.attrs_mut();
        attrs.insert(Namespace::NONE, name("from"), from_domain.to_owned());
        if let Some(to) = to {
            attrs.insert(Namespace::NONE, name("to"), to.to_owned());
        }
        attrs.insert(Namespace::NONE, name("id"), id.to_owned());
        attrs.insert(Namespace::NONE, name("version"), "1.0".to_owned());
        if !lang.is_empty() {
            attrs.insert(Namespace::XML, name("lang"), lang.to_owned());
        }
        put_standalone(out, &open);
    }

    /// Writes one first-level element as one frame, with every namespace it uses declared.
    pub fn write_element(&self, out: &mut BytesMut, element: &Element) {
        put_standalone(out, element);
    }

    /// Writes `<close/>` (§3.6) as one frame.
    pub fn write_close(&self, out: &mut BytesMut) {
        const CLOSE: &[u8] = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
        put_varint(out, CLOSE.len() as u64);
        out.extend_from_slice(CLOSE);
    }

    fn next_event(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        loop {
            if self.state == State::Closed {
                input.clear();
                return Ok(None);
            }
            let Some(frame) = take_frame(input, self.limits.max_stanza_bytes)? else {
                return Ok(None);
            };
            if frame.is_empty() {
                return Err(CodecError::InvalidFrame(
                    "an empty or binary message; RFC 7395 §3.2 requires one XML element per \
                     text message"
                        .into(),
                ));
            }
            let mut frame = trim(frame);
            if frame.is_empty() {
                // Whitespace only: nothing to read, and harmless.
                continue;
            }
            let element = self.element(&mut frame)?;
            if element.is("open", FRAMING_NS) {
                self.state = State::Open;
                return Ok(Some(StreamEvent::Open(header(&element))));
            }
            if element.is("close", FRAMING_NS) {
                self.state = State::Closed;
                return Ok(Some(StreamEvent::Close));
            }
            if self.state == State::AwaitingOpen {
                // As on TCP, where anything but a stream header is a bad root (RFC 6120
                // §4.8.1): the stream has not been opened.
                return Err(CodecError::InvalidStreamRoot {
                    namespace: element.ns(),
                    name: element.name().to_owned(),
                });
            }
            return Ok(Some(StreamEvent::Stanza(element)));
        }
    }

    /// Parses one message, which must be exactly one complete element.
    fn element(&mut self, frame: &mut BytesMut) -> Result<Element, CodecError> {
        if !self.primed {
            self.parser.reset();
            let mut context = BytesMut::from(CONTEXT);
            match self.parser.decode(&mut context)? {
                Some(StreamEvent::Open(_)) if context.is_empty() => self.primed = true,
                _ => return Err(CodecError::InvalidFrame("framing context".into())),
            }
        }
        match self.parser.decode(frame)? {
            Some(StreamEvent::Stanza(element)) if frame.is_empty() => Ok(element),
            Some(StreamEvent::Stanza(_)) => Err(CodecError::InvalidFrame(
                "a message holds more than one element (RFC 7395 §3.3.3)".into(),
            )),
            Some(StreamEvent::Close) => Err(CodecError::InvalidFrame(
                "a closing tag without its element".into(),
            )),
            Some(StreamEvent::Open(_)) | None => Err(CodecError::InvalidFrame(
                "a message must be one complete XML element (RFC 7395 §3.3.3)".into(),
            )),
        }
    }
}

/// The stream header `<open/>` carries (§3.3.2); the session validates it as it does
/// `<stream:stream>`.
fn header(open: &Element) -> StreamHeader {
    let get = |key: &str| open.attr(key).map(str::to_owned);
    StreamHeader {
        to: get("to"),
        from: get("from"),
        version: get("version"),
        lang: open
            .attrs()
            .get(Namespace::xml(), "lang")
            .map(ToOwned::to_owned),
        id: get("id"),
    }
}

/// Strips XML whitespace (the `S` production) from both ends.
fn trim(mut frame: BytesMut) -> BytesMut {
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let end = frame.len() - frame.iter().rev().take_while(|b| blank(b)).count();
    frame.truncate(end);
    let start = frame.iter().take_while(|b| blank(b)).count();
    let _ = frame.split_to(start);
    frame
}

/// Appends `element` as one frame, written as a standalone document.
///
/// [`encode::element`] writes a first-level element for a stream whose header bound the
/// default namespace to `jabber:client` and the prefix `stream` to the stream namespace;
/// here no header exists, so those bindings are declared on the element itself. Deeper
/// elements need nothing: the encoder declares every namespace that differs from the one in
/// scope.
fn put_standalone(out: &mut BytesMut, element: &Element) {
    let start = out.len();
    encode::element(out, element);
    if out.len() == start {
        // Not serialisable (an invalid name): nothing was written, so no frame either.
        return;
    }
    let body = out.split_off(start);
    let (declaration, prefix): (&[u8], &[u8]) = if element.has_ns(ns::CLIENT) {
        (b" xmlns='jabber:client'", b"")
    } else if element.has_ns(ns::STREAM) {
        // Unprefixed descendants of `<stream:features/>` are `jabber:client` on a TCP
        // stream; declaring the default keeps them so.
        (
            b" xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'",
            b"stream:",
        )
    } else {
        // The encoder declared the element's own namespace as the default already.
        (b"", b"")
    };
    let name_end = 1 + prefix.len() + element.name().len();
    let declaration = match body.get(..=name_end) {
        // `<prefix:name` followed by the end of the name: an attribute, `/>` or `>`.
        Some([b'<', rest @ ..])
            if rest.starts_with(prefix)
                && rest[prefix.len()..].starts_with(element.name().as_bytes())
                && matches!(rest.last(), Some(b' ' | b'/' | b'>')) =>
        {
            declaration
        }
        _ => {
            debug_assert!(declaration.is_empty(), "unexpected encoder output");
            b""
        }
    };
    put_varint(out, (body.len() + declaration.len()) as u64);
    out.extend_from_slice(&body[..name_end]);
    out.extend_from_slice(declaration);
    out.extend_from_slice(&body[name_end..]);
}

/// Turns an attribute name known at compile time into rxml's checked type.
fn name(name: &'static str) -> NcName {
    #[allow(clippy::expect_used)]
    NcName::try_from(name).expect("attribute names used by the codec are valid NCNames")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{frames, put_frame};
    use confab_core::StreamErrorCondition;

    const OPEN: &str = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' \
        version='1.0' xml:lang='de'/>";

    fn input(messages: &[&str]) -> BytesMut {
        let mut out = BytesMut::new();
        for message in messages {
            put_frame(&mut out, message.as_bytes());
        }
        out
    }

    /// Decodes every frame of `messages`; stops at the first error.
    fn decode(limits: Limits, messages: &[&str]) -> (Vec<StreamEvent>, Option<CodecError>) {
        let mut codec = XmlWebSocketCodec::new(limits);
        let mut buf = input(messages);
        let mut events = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return (events, None),
                Err(error) => return (events, Some(error)),
            }
        }
    }

    /// The condition the stream ends with after `<open/>` and `message`.
    fn condition_after_open(limits: Limits, message: &str) -> StreamErrorCondition {
        let (events, error) = decode(limits, &[OPEN, message]);
        assert_eq!(events.len(), 1, "{message:?}: {events:?}");
        error
            .unwrap_or_else(|| panic!("no error for {message:?}"))
            .condition()
    }

    #[test]
    fn open_stanzas_and_close_become_stream_events() {
        let (events, error) = decode(
            Limits::default(),
            &[
                OPEN,
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
                " \n",
                "<message xmlns='jabber:client' to='b@example.com'><body>hi &amp; bye</body></message>\n",
                "<presence/>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
                "<message xmlns='jabber:client'/>",
            ],
        );
        assert_eq!(error, None);
        let [open, auth, message, presence, close] = &events[..] else {
            panic!("unexpected events {events:?}");
        };
        assert_eq!(
            *open,
            StreamEvent::Open(StreamHeader {
                to: Some("example.com".into()),
                version: Some("1.0".into()),
                lang: Some("de".into()),
                ..StreamHeader::default()
            })
        );
        let StreamEvent::Stanza(auth) = auth else {
            panic!("{auth:?}")
        };
        assert!(auth.is("auth", ns::SASL));
        assert_eq!(auth.text(), "AGEAYg==");
        let StreamEvent::Stanza(message) = message else {
            panic!("{message:?}")
        };
        assert!(message.is("message", ns::CLIENT));
        assert_eq!(message.attr("to"), Some("b@example.com"));
        let body = message.get_child("body", ns::CLIENT).expect("body");
        assert_eq!(body.text(), "hi & bye");
        let StreamEvent::Stanza(presence) = presence else {
            panic!("{presence:?}")
        };
        // §3.3.3 asks for xmlns='jabber:client'; without it the stanza is read as one anyway.
        assert!(presence.is("presence", ns::CLIENT));
        assert_eq!(*close, StreamEvent::Close);
    }

    #[test]
    fn a_restart_expects_a_new_open() {
        let mut codec = XmlWebSocketCodec::new(Limits::default());
        let mut buf = input(&[OPEN, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"]);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(StreamEvent::Open(_)))
        ));
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(StreamEvent::Stanza(_)))
        ));
        codec.reset();
        let mut after = input(&[OPEN, "<iq xmlns='jabber:client' type='get' id='1'/>"]);
        assert!(matches!(
            codec.decode(&mut after),
            Ok(Some(StreamEvent::Open(_)))
        ));
        assert!(matches!(
            codec.decode(&mut after),
            Ok(Some(StreamEvent::Stanza(_)))
        ));
        codec.reset();
        let mut skipped = input(&["<iq xmlns='jabber:client' type='get' id='2'/>"]);
        assert_eq!(
            codec.decode(&mut skipped).map_err(|e| e.condition()),
            Err(StreamErrorCondition::InvalidNamespace)
        );
    }

    #[test]
    fn frames_split_across_reads_wait_for_the_rest() {
        let whole = input(&[OPEN, "<presence xmlns='jabber:client'/>"]);
        let mut codec = XmlWebSocketCodec::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for byte in whole.iter() {
            buf.extend_from_slice(&[*byte]);
            while let Some(event) = codec.decode(&mut buf).expect("valid input") {
                events.push(event);
            }
        }
        assert_eq!(events.len(), 2);
        assert!(buf.is_empty());
    }

    #[test]
    fn each_message_is_exactly_one_complete_element() {
        let limits = Limits::default();
        for message in [
            "<presence xmlns='jabber:client'>",
            "<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>",
            "</presence>",
            "hello",
            "<presence xmlns='jabber:client'/>trailing",
        ] {
            let condition = condition_after_open(limits, message);
            assert!(
                matches!(
                    condition,
                    StreamErrorCondition::BadFormat | StreamErrorCondition::NotWellFormed
                ),
                "{message:?}: {condition:?}"
            );
        }
        assert_eq!(
            condition_after_open(limits, ""),
            StreamErrorCondition::BadFormat
        );
    }

    #[test]
    fn the_xml_stream_limits_apply() {
        let limits = Limits {
            max_stanza_bytes: 512,
            max_depth: 4,
            max_attributes: 4,
            max_namespace_decls: 3,
        };
        let policy = StreamErrorCondition::PolicyViolation;
        let deep = "<a xmlns='jabber:client'><b><c><d><e/></d></c></b></a>";
        assert_eq!(condition_after_open(limits, deep), policy);
        let attrs = "<a xmlns='jabber:client' b='1' c='2' d='3' e='4'/>";
        assert_eq!(condition_after_open(limits, attrs), policy);
        let decls = "<a xmlns='jabber:client'><b xmlns='x'><c xmlns='y'><d xmlns='z'/></c></b></a>";
        assert_eq!(condition_after_open(limits, decls), policy);
        let large = format!("<a xmlns='jabber:client'>{}</a>", "x".repeat(600));
        assert_eq!(condition_after_open(limits, &large), policy);
        // The size is refused from the length prefix, before the message is buffered.
        let mut codec = XmlWebSocketCodec::new(limits);
        let mut buf = input(&[OPEN]);
        put_varint(&mut buf, 1 << 30);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(StreamEvent::Open(_)))
        ));
        assert_eq!(
            codec.decode(&mut buf),
            Err(CodecError::StanzaTooLarge { limit: 512 })
        );
        // Within the limits, the same shapes pass.
        let fits = "<a xmlns='jabber:client' b='1'><b><c><d/></c></b></a>";
        let (events, error) = decode(limits, &[OPEN, fits]);
        assert_eq!((events.len(), error), (2, None));
    }

    #[test]
    fn restricted_xml_is_refused_as_on_tcp() {
        let limits = Limits::default();
        let restricted = StreamErrorCondition::RestrictedXml;
        for message in [
            "<message xmlns='jabber:client'><!-- note --></message>",
            "<message xmlns='jabber:client'><?pi data?></message>",
            "<!DOCTYPE message><message xmlns='jabber:client'/>",
            "<message xmlns='jabber:client'>&custom;</message>",
        ] {
            assert_eq!(
                condition_after_open(limits, message),
                restricted,
                "{message:?}"
            );
        }
        assert_eq!(
            condition_after_open(limits, "<stream:features/>"),
            StreamErrorCondition::BadNamespacePrefix,
            "no prefix leaks from the framing context"
        );
    }

    #[test]
    fn anything_before_open_is_refused() {
        let (_, error) = decode(Limits::default(), &["<message xmlns='jabber:client'/>"]);
        assert_eq!(
            error.map(|e| e.condition()),
            Some(StreamErrorCondition::InvalidNamespace)
        );
    }

    #[test]
    fn an_error_is_final() {
        let mut codec = XmlWebSocketCodec::new(Limits::default());
        let mut buf = input(&[OPEN, "<a", "<presence/>"]);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(StreamEvent::Open(_)))
        ));
        let first = codec.decode(&mut buf);
        assert!(first.is_err());
        assert_eq!(codec.decode(&mut buf), first);
    }

    /// Every written frame, parsed by a decoder that binds no namespace at all.
    fn standalone(out: &BytesMut) -> Vec<Element> {
        frames(out)
            .map(|frame| {
                let text = std::str::from_utf8(frame).expect("UTF-8");
                Element::from_reader_with_prefixes(text.as_bytes(), None::<String>)
                    .unwrap_or_else(|error| panic!("{text}: {error}"))
            })
            .collect()
    }

    #[test]
    fn written_frames_are_standalone_documents() {
        let codec = XmlWebSocketCodec::new(Limits::default());
        let mut out = BytesMut::new();
        codec.write_open(&mut out, "example.com", Some("a@example.com"), "s1", "en");
        let mut features = Element::bare("features", ns::STREAM);
        features.append_child(Element::bare("bind", ns::BIND));
        codec.write_element(&mut out, &features);
        let mut message = confab_core::stanza::element(
            "message",
            ns::CLIENT,
            &[("to", "b@example.com"), ("type", "chat")],
        );
        let mut body = Element::bare("body", ns::CLIENT);
        body.append_text_node("<hi>");
        message.append_child(body);
        codec.write_element(&mut out, &message);
        codec.write_element(&mut out, &Element::bare("presence", ns::CLIENT));
        codec.write_element(
            &mut out,
            &StreamErrorCondition::PolicyViolation.to_element(Some("too big")),
        );
        codec.write_element(&mut out, &Element::bare("success", ns::SASL));
        codec.write_close(&mut out);

        let text: Vec<&str> = frames(&out)
            .map(|frame| std::str::from_utf8(frame).expect("UTF-8"))
            .collect();
        assert_eq!(
            text[0],
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.com' \
             id='s1' to='a@example.com' version='1.0' xml:lang='en'/>"
        );
        assert!(
            text[1].starts_with(
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns='jabber:client'>"
            ),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with("<message xmlns='jabber:client' "),
            "{}",
            text[2]
        );
        assert_eq!(text[3], "<presence xmlns='jabber:client'/>");
        assert!(
            text[4].starts_with("<stream:error xmlns:stream="),
            "{}",
            text[4]
        );
        assert_eq!(
            text[6],
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );

        // The check below can fail: a prefix or default the frame leaves undeclared is an
        // error or the wrong namespace for this reader.
        let mut undeclared = BytesMut::new();
        put_frame(&mut undeclared, b"<stream:features/>");
        assert!(std::panic::catch_unwind(|| standalone(&undeclared)).is_err());
        let parsed = standalone(&out);
        assert_eq!(parsed.len(), 7);
        assert!(parsed[0].is("open", FRAMING_NS));
        assert!(parsed[1].is("features", ns::STREAM));
        assert!(parsed[1].get_child("bind", ns::BIND).is_some());
        assert!(parsed[2].is("message", ns::CLIENT));
        assert_eq!(
            parsed[2].get_child("body", ns::CLIENT).map(Element::text),
            Some("<hi>".to_owned())
        );
        assert!(parsed[4].is("error", ns::STREAM));
        assert!(parsed[4].has_child("policy-violation", ns::STREAMS));
        assert!(parsed[5].is("success", ns::SASL));
        assert!(parsed[6].is("close", FRAMING_NS));
    }

    #[test]
    fn written_frames_read_back_as_the_same_elements() {
        // The server's own output, fed to the decoder as a client's messages would be.
        let codec = XmlWebSocketCodec::new(Limits::default());
        let mut message = confab_core::stanza::element("message", ns::CLIENT, &[("id", "m1")]);
        let mut forwarded = Element::bare("forwarded", "urn:xmpp:forward:0");
        forwarded.append_child(confab_core::stanza::element(
            "message",
            ns::CLIENT,
            &[("from", "c@example.com")],
        ));
        message.append_child(forwarded);
        let mut out = BytesMut::new();
        codec.write_open(&mut out, "example.com", None, "s1", "en");
        codec.write_element(&mut out, &message);
        let mut reader = XmlWebSocketCodec::new(Limits::default());
        let Ok(Some(StreamEvent::Open(header))) = reader.decode(&mut out) else {
            panic!("no open");
        };
        assert_eq!(header.from.as_deref(), Some("example.com"));
        assert_eq!(header.lang.as_deref(), Some("en"));
        assert_eq!(
            reader.decode(&mut out),
            Ok(Some(StreamEvent::Stanza(message)))
        );
    }
}
