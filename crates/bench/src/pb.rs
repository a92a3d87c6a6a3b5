//! Confab's protobuf binding (docs/protocol/confab-protobuf.md) under the tool's XML client
//! logic, without IO: [`Frames`] turns what the client sends into frames and [`read`] turns
//! a frame that arrived into what an XML stream would have given.
//!
//! Every scenario speaks XML bytes (it stamps and reads message bodies and ids as text), so
//! the binding is converted at the edge, as the server converts at its own edge: each element
//! the client sends is parsed and handed to `confab_proto::element_to_frame`, and each frame
//! the server sends goes through `confab_proto::frame_to_unit` and is written back as XML.
//! The conversion is exact in both directions (confab-proto's round-trip property), so a
//! message's body and id arrive as they were sent and the chat figures mean the same as over
//! TCP. The cost is the tool's: one small XML parse per element sent and one write per
//! element received, which its CPU figures include.
//!
//! Framing on byte streams (the varint length prefix and the maximum frame size) is
//! `confab_pb_client::connection::decode_frame`, the client library's own reader.

use std::io;

use bytes::Bytes;
use confab_proto::ProstMessage as _;
use confab_proto::v1::{Frame, StreamOpen};
use confab_proto::{Fragments as _, MinidomFragments, Unit as PbUnit};

use crate::client::{Failure, Read};
use crate::link::{Unit, Units};
use crate::xml;

/// `http://etherx.jabber.org/streams`: the namespace of `<stream:error/>`.
const STREAM_NS: &str = "http://etherx.jabber.org/streams";

/// The encoded `open` frame (RFC 6120 §4.7 header: `to` = the domain, version 1.0) every
/// stream (re)start sends. Built once per run and shared by every connection.
pub fn open_payload(domain: &str) -> Bytes {
    confab_proto::open_frame(StreamOpen {
        to: Some(domain.to_owned()),
        version: Some("1.0".to_owned()),
        ..StreamOpen::default()
    })
    .encode_to_vec()
    .into()
}

/// The encoded frames (without length prefix) of one send: whole elements, stream headers
/// and `</stream:stream>`, in order.
pub struct Frames {
    units: Units,
    open: Bytes,
}

impl Frames {
    /// The frames of `data`; a stream header becomes `open` (see [`open_payload`]).
    pub fn new(data: &[u8], open: &Bytes) -> Self {
        Self {
            units: Units::new(data),
            open: open.clone(),
        }
    }
}

impl Iterator for Frames {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        let unit = match self.units.next()? {
            Ok(unit) => unit,
            Err(e) => return Some(Err(e)),
        };
        Some(match unit {
            Unit::Open => Ok(self.open.clone()),
            Unit::Element(element) => element_payload(&element),
            Unit::Close => Ok(confab_proto::close_frame().encode_to_vec().into()),
        })
    }
}

/// One element the tool wrote, as an encoded frame. The tool's elements are its own, so one
/// that does not parse is a bug in the tool, reported as invalid input.
fn element_payload(element: &[u8]) -> io::Result<Bytes> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let text = std::str::from_utf8(element).map_err(|e| invalid(e.to_string()))?;
    // Parsed as a first-level child of a `jabber:client` stream, as the XML stream would be.
    let element = MinidomFragments
        .parse(text)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(
        confab_proto::element_to_frame(&element, &mut MinidomFragments)
            .encode_to_vec()
            .into(),
    )
}

/// What `frame` from the server stands for, as [`crate::client::read_frame`] would report
/// the same thing on an XML stream: the server's header is [`Read::Open`], an element is its
/// XML, and a stream error, `close` or an undecodable frame is a failure at `stage`.
pub fn read(frame: &Frame, stage: &'static str) -> Result<Read, Failure> {
    let unit = confab_proto::frame_to_unit(frame, &mut MinidomFragments)
        .map_err(|e| Failure::new(stage, format!("unreadable frame: {e}")))?;
    match unit {
        PbUnit::Opened(_) => Ok(Read::Open),
        PbUnit::Close => Err(Failure::new(stage, "server closed the stream")),
        PbUnit::Open(_) => Err(Failure::new(stage, "client stream header from the server")),
        PbUnit::Element(element) => {
            let text = MinidomFragments.write(&element);
            if text.is_empty() {
                return Err(Failure::new(stage, "element that cannot be written as XML"));
            }
            let bytes = Bytes::from(text);
            if element.name() == "error" && element.ns() == STREAM_NS {
                return Err(Failure::new(
                    stage,
                    format!("stream error {}", xml::error_reason(&bytes)),
                ));
            }
            Ok(Read::Element(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::v1::frame::Kind;
    use confab_proto::v1::{Features, SaslFailure, StreamError};

    /// The frames of one send, decoded.
    fn frames(data: &[u8]) -> Vec<Frame> {
        Frames::new(data, &open_payload("localhost"))
            .map(|payload| Frame::decode(payload.expect("valid send")).expect("a frame"))
            .collect()
    }

    /// What the server's frame of `element` (converted as the server's edge does) reads as.
    fn served(element: &str) -> Result<Read, Failure> {
        let element = MinidomFragments.parse(element).expect("test element");
        read(
            &confab_proto::element_to_frame(&element, &mut MinidomFragments),
            "t",
        )
    }

    fn element(read: Result<Read, Failure>) -> Bytes {
        match read {
            Ok(Read::Element(element)) => element,
            Ok(Read::Open) => panic!("element expected, got the stream header"),
            Err(failure) => panic!("element expected, got {failure}"),
        }
    }

    #[test]
    fn a_pipelined_login_send_becomes_typed_frames() {
        let sent = frames(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>\
              <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHUxAHB3</auth>\
              </stream:stream>",
        );
        assert_eq!(sent.len(), 3, "{sent:?}");
        match &sent[0].kind {
            Some(Kind::Open(open)) => {
                assert_eq!(open.to.as_deref(), Some("localhost"));
                assert_eq!(open.version.as_deref(), Some("1.0"));
            }
            other => panic!("open expected: {other:?}"),
        }
        // SASL data travels as raw bytes, not base64.
        match &sent[1].kind {
            Some(Kind::SaslAuth(auth)) => {
                assert_eq!(auth.mechanism, "PLAIN");
                assert_eq!(auth.data.as_deref(), Some(&b"\0u1\0pw"[..]));
            }
            other => panic!("sasl_auth expected: {other:?}"),
        }
        assert!(matches!(sent[2].kind, Some(Kind::Close(_))), "{sent:?}");
        assert!(Frames::new(b"<message><body>", &Bytes::new()).any(|f| f.is_err()));
    }

    /// The chat scenario's stamps (id and body) must arrive as sent for its latency and loss
    /// figures to mean what they mean over TCP; the body must also use the typed field, or
    /// the measured size would be the XML fallback's.
    #[test]
    fn a_chat_message_keeps_its_stamp_through_the_binding() {
        let sent = b"<message to='user2@localhost' type='chat' id='0badcafe-42-1234-1300'>\
            <body>42 1234 1300</body></message>";
        let frame = frames(sent).pop().expect("one frame");
        match &frame.kind {
            Some(Kind::Message(message)) => {
                assert_eq!(message.body.as_deref(), Some("42 1234 1300"));
            }
            other => panic!("typed message expected: {other:?}"),
        }
        let got = element(read(&frame, "t"));
        assert_eq!(xml::tag_name(&got), b"message");
        assert_eq!(xml::child_text(&got, "body"), Some(&b"42 1234 1300"[..]));
        assert_eq!(xml::attr(&got, "id"), Some(&b"0badcafe-42-1234-1300"[..]));
        assert_eq!(xml::attr(&got, "type"), Some(&b"chat"[..]));
    }

    #[test]
    fn server_frames_read_as_the_xml_stream_would() {
        let opened = confab_proto::opened_frame(StreamOpen::default());
        assert!(matches!(read(&opened, "t"), Ok(Read::Open)));

        let features = Frame {
            kind: Some(Kind::Features(Features {
                mechanisms: vec!["SCRAM-SHA-256".into(), "PLAIN".into()],
                has_mechanisms: true,
                ..Features::default()
            })),
        };
        let got = element(read(&features, "t"));
        assert_eq!(xml::local_name(xml::tag_name(&got)), b"features");
        assert!(xml::find(&got, b">SCRAM-SHA-256</").is_some(), "{got:?}");

        let failure = Frame {
            kind: Some(Kind::SaslFailure(SaslFailure {
                condition: "not-authorized".into(),
                ..SaslFailure::default()
            })),
        };
        let got = element(read(&failure, "t"));
        assert_eq!(xml::local_name(xml::tag_name(&got)), b"failure");
        assert_eq!(xml::error_reason(&got), "not-authorized");

        // A Confab commit receipt, as the chat scenario matches it (client-id on <ack/>).
        let got = element(served(
            "<message type='headline' id='ack-01940000-0000-7000-8000-000000000001' \
             from='localhost' to='user1@localhost/bench'><ack xmlns='urn:confab:ack:0' \
             client-id='0badcafe-5-100-150' server-id='01940000-0000-7000-8000-000000000001' \
             seq='6' with='user2@localhost' stamp='2026-11-23T12:00:00.123Z'/></message>",
        ));
        let ack = xml::child(&got, "ack").expect("ack child");
        assert_eq!(xml::attr(ack, "xmlns"), Some(&b"urn:confab:ack:0"[..]));
        assert_eq!(
            xml::attr(ack, "client-id"),
            Some(&b"0badcafe-5-100-150"[..])
        );

        let error = Frame {
            kind: Some(Kind::StreamError(StreamError {
                condition: "conflict".into(),
                ..StreamError::default()
            })),
        };
        let failure = read(&error, "t").err().expect("stream error");
        assert_eq!(failure.reason, "stream error conflict");
        let closed = read(&confab_proto::close_frame(), "t")
            .err()
            .expect("close");
        assert_eq!(closed.reason, "server closed the stream");
        assert!(read(&Frame { kind: None }, "t").is_err());
    }
}
