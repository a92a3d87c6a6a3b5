//! The compact protobuf binding (docs/protocol/confab-protobuf.md): varint length-delimited
//! `confab.xmpp.v1.Frame`s in, [`StreamEvent`]s out, and elements back as frames.
//!
//! The binding is converted at the edge: the session, routing, hooks and storage see the same
//! `minidom::Element`s an XML stream yields. Limits are the XML decoder's: a frame longer than
//! `max_stanza_bytes` is refused from its length prefix before any of it is buffered, the XML
//! fragments a frame carries are parsed by [`XmlStreamDecoder`] (so depth, attribute,
//! namespace and restricted-XML rules are the same), and the depth of the assembled stanza is
//! checked again because a fragment sits one level below its stanza.

use bytes::BytesMut;
use confab_proto::v1::{Frame, StreamOpen};
use confab_proto::{ConvertError, Fragments, ProstMessage, Unit};
use minidom::{Element, Node};

use crate::wire::{put_varint, take_frame};
use crate::{CodecError, Limits, StreamEvent, StreamHeader, XmlStreamDecoder, encode};

/// The context fragments are parsed in: the stream header our XML decoder expects, binding
/// the default namespace to `jabber:client` and `stream` to the stream namespace, as the
/// binding defines.
const FRAGMENT_CONTEXT: &[u8] =
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Reader and writer of one protobuf connection.
#[derive(Debug)]
pub struct ProtobufCodec {
    /// The limits this codec enforces.
    limits: Limits,
    /// Parses XML fragments, reset for each one.
    fragments: XmlStreamDecoder,
    /// The first error, returned again on every later call: a stream error is final.
    error: Option<CodecError>,
}

impl ProtobufCodec {
    /// A codec waiting for the client's `Open` frame.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            fragments: XmlStreamDecoder::new(limits),
            error: None,
        }
    }

    /// The next complete event in `input`, `Ok(None)` while the next frame is incomplete.
    /// Bytes after the frame stay in `input`.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.decode_frame(input);
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result
    }

    fn decode_frame(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        let Some(payload) = take_frame(input, self.limits.max_stanza_bytes)? else {
            return Ok(None);
        };
        let frame = Frame::decode(payload.freeze())
            .map_err(|error| CodecError::InvalidFrame(format!("not a Frame: {error}")))?;
        let mut fragments = ParseFragments {
            decoder: &mut self.fragments,
            error: None,
        };
        let unit = match confab_proto::frame_to_unit(&frame, &mut fragments) {
            Ok(unit) => unit,
            // A fragment the XML decoder refused keeps its own stream error condition.
            Err(error) => return Err(fragments.error.unwrap_or_else(|| invalid(&error))),
        };
        Ok(Some(match unit {
            Unit::Open(open) => StreamEvent::Open(StreamHeader {
                to: open.to,
                from: open.from,
                version: open.version,
                lang: open.lang,
                id: open.id,
            }),
            Unit::Close => StreamEvent::Close,
            Unit::Element(element) => {
                let depth = depth(&element);
                if depth > self.limits.max_depth {
                    return Err(CodecError::TooDeep {
                        limit: self.limits.max_depth,
                    });
                }
                StreamEvent::Stanza(element)
            }
            Unit::Opened(_) => {
                return Err(CodecError::InvalidFrame(
                    "a server stream header sent by the client".into(),
                ));
            }
        }))
    }

    /// Nothing to forget on a stream restart: every frame stands alone.
    pub fn reset(&mut self) {
        self.error = None;
    }

    /// Releases buffers while the connection is idle.
    pub fn shrink(&mut self) {
        self.fragments.shrink();
    }

    /// Writes the server's stream header as an `Opened` frame.
    pub fn write_open(
        &self,
        out: &mut BytesMut,
        from_domain: &str,
        to: Option<&str>,
        id: &str,
        lang: &str,
    ) {
        let opened = StreamOpen {
            to: to.map(str::to_owned),
            from: Some(from_domain.to_owned()),
            id: Some(id.to_owned()),
            version: Some("1.0".to_owned()),
            lang: (!lang.is_empty()).then(|| lang.to_owned()),
        };
        put_message(out, &confab_proto::opened_frame(opened));
    }

    /// Writes one first-level element as a frame.
    pub fn write_element(&self, out: &mut BytesMut, element: &Element) {
        put_message(
            out,
            &confab_proto::element_to_frame(element, &mut WriteFragments),
        );
    }

    /// Writes the `Close` frame.
    pub fn write_close(&self, out: &mut BytesMut) {
        put_message(out, &confab_proto::close_frame());
    }
}

/// Appends `frame` with its varint length prefix, encoding in place.
fn put_message(out: &mut BytesMut, frame: &Frame) {
    let length = frame.encoded_len();
    put_varint(out, length as u64);
    out.reserve(length);
    // Encoding into a `BytesMut` only fails for lack of room, and it grows.
    let _ = frame.encode(out);
}

fn invalid(error: &ConvertError) -> CodecError {
    CodecError::InvalidFrame(error.to_string())
}

/// Elements nested in `element`, itself counting as 1.
fn depth(element: &Element) -> usize {
    1 + element
        .nodes()
        .filter_map(|node| match node {
            Node::Element(child) => Some(depth(child)),
            Node::Text(_) => None,
        })
        .max()
        .unwrap_or(0)
}

/// Fragments of frames a client sent: parsed with the connection's limits.
struct ParseFragments<'a> {
    decoder: &'a mut XmlStreamDecoder,
    /// The codec error behind a failed parse.
    error: Option<CodecError>,
}

impl Fragments for ParseFragments<'_> {
    fn write(&mut self, element: &Element) -> String {
        WriteFragments.write(element)
    }

    fn parse(&mut self, xml: &str) -> Result<Element, ConvertError> {
        parse_fragment(self.decoder, xml).map_err(|error| {
            let message = error.to_string();
            self.error = Some(error);
            ConvertError::Fragment(message)
        })
    }
}

/// Fragments the server writes: the XML encoder's output for a first-level element.
struct WriteFragments;

impl Fragments for WriteFragments {
    fn write(&mut self, element: &Element) -> String {
        let mut out = BytesMut::new();
        encode::element(&mut out, element);
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    fn parse(&mut self, xml: &str) -> Result<Element, ConvertError> {
        // Only reached when the converter checks its own output (stream features).
        let mut decoder = XmlStreamDecoder::new(Limits::default());
        parse_fragment(&mut decoder, xml).map_err(|error| ConvertError::Fragment(error.to_string()))
    }
}

/// Parses one fragment as a first-level element of a fresh stream.
fn parse_fragment(decoder: &mut XmlStreamDecoder, xml: &str) -> Result<Element, CodecError> {
    decoder.reset();
    let mut input = BytesMut::with_capacity(FRAGMENT_CONTEXT.len() + xml.len());
    input.extend_from_slice(FRAGMENT_CONTEXT);
    input.extend_from_slice(xml.as_bytes());
    match decoder.decode(&mut input)? {
        Some(StreamEvent::Open(_)) => {}
        _ => return Err(CodecError::InvalidFrame("fragment context".into())),
    }
    match decoder.decode(&mut input)? {
        Some(StreamEvent::Stanza(element)) if input.is_empty() => Ok(element),
        _ => Err(CodecError::InvalidFrame(
            "an XML fragment must be exactly one element".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::put_frame;
    use confab_core::StreamErrorCondition;
    use confab_proto::v1::frame::Kind;

    fn frame_bytes(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        put_message(&mut out, frame);
        out
    }

    fn open() -> Frame {
        confab_proto::open_frame(StreamOpen {
            to: Some("example.org".into()),
            version: Some("1.0".into()),
            ..StreamOpen::default()
        })
    }

    fn xml_frame(xml: &str) -> Frame {
        Frame {
            kind: Some(Kind::Xml(xml.into())),
        }
    }

    #[test]
    fn frames_decode_to_the_same_events_as_xml() {
        let mut codec = ProtobufCodec::new(Limits::default());
        let message: Element = "<message xmlns='jabber:client' to='b@x' id='1'><body>hi</body><x xmlns='urn:a'><y/></x></message>"
            .parse()
            .expect("valid XML");
        let mut input = frame_bytes(&open());
        codec.write_element(&mut input, &message);
        input.extend_from_slice(&frame_bytes(&confab_proto::close_frame()));
        let Ok(Some(StreamEvent::Open(header))) = codec.decode(&mut input) else {
            panic!("open expected");
        };
        assert_eq!(header.to.as_deref(), Some("example.org"));
        assert_eq!(
            codec.decode(&mut input),
            Ok(Some(StreamEvent::Stanza(message)))
        );
        assert_eq!(codec.decode(&mut input), Ok(Some(StreamEvent::Close)));
        assert!(input.is_empty());
    }

    #[test]
    fn a_truncated_frame_waits_for_the_rest() {
        let mut codec = ProtobufCodec::new(Limits::default());
        let whole = frame_bytes(&open());
        let mut input = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(codec.decode(&mut input), Ok(None));
        input.extend_from_slice(&whole[whole.len() - 1..]);
        assert!(matches!(
            codec.decode(&mut input),
            Ok(Some(StreamEvent::Open(_)))
        ));
    }

    #[test]
    fn an_oversized_length_is_a_policy_violation_before_the_payload() {
        let mut codec = ProtobufCodec::new(Limits::default());
        let mut input = BytesMut::new();
        put_varint(&mut input, 1 << 40);
        let error = codec.decode(&mut input).expect_err("too large");
        assert_eq!(error.condition(), StreamErrorCondition::PolicyViolation);
        // Sticky: the stream is over.
        assert_eq!(codec.decode(&mut BytesMut::new()), Err(error));
    }

    #[test]
    fn a_bad_varint_is_bad_format() {
        let mut codec = ProtobufCodec::new(Limits::default());
        let mut input = BytesMut::from(&[0xffu8; 11][..]);
        let error = codec.decode(&mut input).expect_err("bad varint");
        assert_eq!(error, CodecError::BadFrameLength);
        assert_eq!(error.condition(), StreamErrorCondition::BadFormat);
    }

    #[test]
    fn invalid_protobuf_is_bad_format() {
        for payload in [
            &[0xff_u8, 0xff, 0xff][..],
            &[0x0a, 0x05, 0x01][..],
            &[0x07][..],
        ] {
            let mut codec = ProtobufCodec::new(Limits::default());
            let mut input = BytesMut::new();
            put_frame(&mut input, payload);
            let error = codec.decode(&mut input).expect_err("invalid protobuf");
            assert!(matches!(error, CodecError::InvalidFrame(_)), "{error:?}");
            assert_eq!(error.condition(), StreamErrorCondition::BadFormat);
        }
    }

    #[test]
    fn fragments_obey_the_xml_limits() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let cases = [
            (
                "<a xmlns='urn:a'><!-- no --></a>",
                StreamErrorCondition::RestrictedXml,
            ),
            ("<a xmlns='urn:a'><b>", StreamErrorCondition::BadFormat),
            ("<a xmlns='urn:a'/><b/>", StreamErrorCondition::BadFormat),
            (
                "<a xmlns='urn:a'><b><c><d/></c></b></a>",
                StreamErrorCondition::PolicyViolation,
            ),
            (
                "<a xmlns='urn:a'>&custom;</a>",
                StreamErrorCondition::RestrictedXml,
            ),
            ("<p:a/>", StreamErrorCondition::BadNamespacePrefix),
        ];
        for (xml, condition) in cases {
            let mut codec = ProtobufCodec::new(limits);
            let mut input = frame_bytes(&xml_frame(xml));
            let error = codec.decode(&mut input).expect_err(xml);
            assert_eq!(error.condition(), condition, "{xml}: {error}");
        }
        // A fragment one level below its stanza counts that level.
        let mut codec = ProtobufCodec::new(limits);
        let message = confab_proto::v1::Message {
            xml: vec!["<a xmlns='urn:a'><b><c/></b></a>".into()],
            ..Default::default()
        };
        let mut input = frame_bytes(&Frame {
            kind: Some(Kind::Message(message)),
        });
        assert_eq!(
            codec.decode(&mut input),
            Err(CodecError::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn a_server_header_from_the_client_is_refused() {
        let mut codec = ProtobufCodec::new(Limits::default());
        let mut input = frame_bytes(&confab_proto::opened_frame(StreamOpen::default()));
        assert!(matches!(
            codec.decode(&mut input),
            Err(CodecError::InvalidFrame(_))
        ));
    }

    /// Sizes of a typical exchange in XML (as our encoder writes it) and in protobuf; run with
    /// `cargo test -p confab-codec --lib byte_counts -- --nocapture` to see them.
    #[test]
    fn byte_counts_of_a_chat_message_and_a_login() {
        let xml_of = |element: &Element| {
            let mut out = BytesMut::new();
            encode::element(&mut out, element);
            out.len()
        };
        let pb_of = |element: &Element| {
            let mut out = BytesMut::new();
            ProtobufCodec::new(Limits::default()).write_element(&mut out, element);
            out.len()
        };
        let parse = |xml: &str| -> Element { xml.parse().expect("valid XML") };
        let message = parse(
            "<message xmlns='jabber:client' to='bob@example.org' type='chat' id='9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69'><body>Hi Bob, lunch at noon?</body><request xmlns='urn:xmpp:receipts'/></message>",
        );
        let ack = parse(
            "<message xmlns='jabber:client' type='headline' id='ack-01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d' from='example.org' to='alice@example.org/phone'><ack xmlns='urn:confab:ack:0' client-id='9f8c3a2e-5b1d-4c7e-8a9f-1e2d3c4b5a69' server-id='01947a3c-8e1f-7b2a-9c4d-5e6f7a8b9c0d' seq='17' with='bob@example.org' stamp='2025-01-31T12:00:00.123Z'/></message>",
        );
        let chat_xml = xml_of(&message) + xml_of(&ack);
        let chat_pb = pb_of(&message) + pb_of(&ack);

        // A whole login on loopback (PLAIN), bind, stream management, first message and ack.
        let client_header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";
        let mut server_header = BytesMut::new();
        encode::stream_header(
            &mut server_header,
            "example.org",
            None,
            "6c9a1f0e-2d3b-4a5c-9e8f-7a6b5c4d3e2f",
            "en",
        );
        let open_pb = {
            let mut out = BytesMut::new();
            put_message(&mut out, &open());
            out.len()
        };
        let mut opened_pb = BytesMut::new();
        ProtobufCodec::new(Limits::default()).write_open(
            &mut opened_pb,
            "example.org",
            None,
            "6c9a1f0e-2d3b-4a5c-9e8f-7a6b5c4d3e2f",
            "en",
        );
        let elements = [
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGNvcnJlY3QgaG9yc2U=</auth>",
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sm xmlns='urn:xmpp:sm:3'/></stream:features>",
            "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
            "<iq xmlns='jabber:client' type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.org/phone</jid></bind></iq>",
            "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
            "<enabled xmlns='urn:xmpp:sm:3' id='5d0c4b1a-9e8f-4a7b-8c6d-1e2f3a4b5c6d' resume='true' max='300'/>",
            "<presence xmlns='jabber:client'/>",
            "<a xmlns='urn:xmpp:sm:3' h='1'/>",
        ];
        let mut login_xml = 2 * (client_header.len() + server_header.len()) + chat_xml;
        let mut login_pb = 2 * (open_pb + opened_pb.len()) + chat_pb;
        for xml in elements {
            let element = parse(xml);
            login_xml += xml_of(&element);
            let pb = pb_of(&element);
            // Every one of these is typed: a fragment would be larger than its XML.
            assert!(pb < xml_of(&element), "{xml}: {pb} bytes");
            login_pb += pb;
        }
        let saving = |xml: usize, pb: usize| 100.0 * (1.0 - pb as f64 / xml as f64);
        println!(
            "chat message + receipt: XML {chat_xml} B, protobuf {chat_pb} B ({:.0}% fewer)",
            saving(chat_xml, chat_pb)
        );
        println!(
            "login through first message: XML {login_xml} B, protobuf {login_pb} B ({:.0}% fewer)",
            saving(login_xml, login_pb)
        );
        assert!(saving(chat_xml, chat_pb) >= 60.0);
        assert!(saving(login_xml, login_pb) >= 60.0);
    }
}
