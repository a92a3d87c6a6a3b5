//! How a connection frames the stream: the one place the session asks to read events and
//! write elements, so every transport shares negotiation, routing and limits.
//!
//! - [`Framing::XmlStream`]: RFC 6120 §4 over a byte stream (TCP, STARTTLS, direct TLS).
//! - Message-oriented framings (WebSocket per RFC 7395, the protobuf binding) see their
//!   input and write their output as *varint length-delimited frames* in the same
//!   `BytesMut`: a protobuf TCP connection uses that format on the wire as is, and a
//!   WebSocket driver turns each received message into one such frame and each written
//!   frame into one message. One buffer format keeps the session transport-agnostic.

use crate::protobuf::ProtobufCodec;
use crate::websocket::XmlWebSocketCodec;
use crate::{CodecError, Limits, StreamEvent, XmlStreamDecoder, encode};
use bytes::BytesMut;
use confab_proto::framing::{Prefix, read_prefix};
use minidom::Element;

/// The framings a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6120 §4: one XML document per stream, restarted after STARTTLS and SASL.
    XmlStream,
    /// The compact protobuf binding (docs/protocol/confab-protobuf.md): varint
    /// length-delimited `confab.xmpp.v1.Frame`s.
    Protobuf,
    /// RFC 7395: XMPP over WebSocket, one first-level element per text message.
    XmlWebSocket,
}

impl Framing {
    /// Whether STARTTLS can be negotiated inside this framing (RFC 6120 §5); message
    /// transports get TLS from their carrier instead.
    pub fn offers_starttls(self) -> bool {
        matches!(self, Framing::XmlStream)
    }
}

/// One connection's reader and writer for its [`Framing`].
// The XML stream, by far the most common, stays inline: boxing it would add an allocation to
// every TCP session to shrink the rarer ones, which are boxed instead.
#[allow(clippy::large_enum_variant)]
pub enum Wire {
    /// RFC 6120 §4.
    XmlStream(XmlStreamDecoder),
    /// The protobuf binding. Boxed, like the WebSocket codec, so the plain TCP session
    /// (the most numerous) does not carry their larger state inline.
    Protobuf(Box<ProtobufCodec>),
    /// RFC 7395.
    XmlWebSocket(Box<XmlWebSocketCodec>),
}

impl Wire {
    /// A fresh reader waiting for the stream's opening.
    pub fn new(framing: Framing, limits: Limits) -> Self {
        match framing {
            Framing::XmlStream => Wire::XmlStream(XmlStreamDecoder::new(limits)),
            Framing::Protobuf => Wire::Protobuf(Box::new(ProtobufCodec::new(limits))),
            Framing::XmlWebSocket => Wire::XmlWebSocket(Box::new(XmlWebSocketCodec::new(limits))),
        }
    }

    /// The framing this wire speaks.
    pub fn framing(&self) -> Framing {
        match self {
            Wire::XmlStream(_) => Framing::XmlStream,
            Wire::Protobuf(_) => Framing::Protobuf,
            Wire::XmlWebSocket(_) => Framing::XmlWebSocket,
        }
    }

    /// The next complete event in `input`, `Ok(None)` when more bytes are needed. Bytes
    /// after the event stay in `input` (see the crate docs on stream restarts).
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        match self {
            Wire::XmlStream(decoder) => decoder.decode(input),
            Wire::Protobuf(codec) => codec.decode(input),
            Wire::XmlWebSocket(codec) => codec.decode(input),
        }
    }

    /// Forgets the stream's state: a stream restart (RFC 6120 §5.4.3.3, §6.4.6).
    pub fn reset(&mut self) {
        match self {
            Wire::XmlStream(decoder) => decoder.reset(),
            Wire::Protobuf(codec) => codec.reset(),
            Wire::XmlWebSocket(codec) => codec.reset(),
        }
    }

    /// Releases buffers while the connection is idle.
    pub fn shrink(&mut self) {
        match self {
            Wire::XmlStream(decoder) => decoder.shrink(),
            Wire::Protobuf(codec) => codec.shrink(),
            Wire::XmlWebSocket(codec) => codec.shrink(),
        }
    }

    /// Writes the server's opening of a stream (RFC 6120 §4.7).
    pub fn write_open(
        &self,
        out: &mut BytesMut,
        from_domain: &str,
        to: Option<&str>,
        id: &str,
        lang: &str,
    ) {
        match self {
            Wire::XmlStream(_) => encode::stream_header(out, from_domain, to, id, lang),
            Wire::Protobuf(codec) => codec.write_open(out, from_domain, to, id, lang),
            Wire::XmlWebSocket(codec) => codec.write_open(out, from_domain, to, id, lang),
        }
    }

    /// Writes one first-level element: a stanza, features, a stream error, a negotiation step.
    pub fn write_element(&self, out: &mut BytesMut, element: &Element) {
        match self {
            Wire::XmlStream(_) => encode::element(out, element),
            Wire::Protobuf(codec) => codec.write_element(out, element),
            Wire::XmlWebSocket(codec) => codec.write_element(out, element),
        }
    }

    /// Writes the server's end of the stream.
    pub fn write_close(&self, out: &mut BytesMut) {
        match self {
            Wire::XmlStream(_) => encode::stream_close(out),
            Wire::Protobuf(codec) => codec.write_close(out),
            Wire::XmlWebSocket(codec) => codec.write_close(out),
        }
    }
}

/// Appends `payload` as one varint length-delimited frame (the protobuf convention, as in
/// `prost::encode_length_delimiter`).
pub fn put_frame(out: &mut BytesMut, payload: &[u8]) {
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a varint.
pub fn put_varint(out: &mut BytesMut, value: u64) {
    confab_proto::prost::encoding::encode_varint(value, out);
}

/// Takes the next whole frame off the front of `input`, `Ok(None)` while it is incomplete.
///
/// The length is checked against `max` as soon as the prefix is complete, before any
/// payload is buffered for it: a peer announcing 4 GiB gets `StanzaTooLarge` at once.
pub fn take_frame(input: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, CodecError> {
    let (prefix, length) = match read_prefix(input) {
        Ok(Prefix::Complete { bytes, length }) => (bytes, length),
        Ok(Prefix::Incomplete) => return Ok(None),
        Err(_) => return Err(CodecError::BadFrameLength),
    };
    if length > max as u64 {
        return Err(CodecError::StanzaTooLarge { limit: max });
    }
    let length = length as usize;
    if input.len() < prefix + length {
        return Ok(None);
    }
    let _ = input.split_to(prefix);
    Ok(Some(input.split_to(length)))
}

/// Splits a buffer of whole frames written with [`put_frame`] into their payloads (what a
/// message carrier sends, one message each). A trailing partial frame is not returned.
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let Ok(Prefix::Complete { bytes, length }) = read_prefix(buf) else {
            return None;
        };
        let end = bytes.checked_add(usize::try_from(length).ok()?)?;
        let payload = buf.get(bytes..end)?;
        buf = &buf[end..];
        Some(payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whatever_their_length() {
        let mut out = BytesMut::new();
        let payloads: Vec<Vec<u8>> = [0usize, 1, 127, 128, 300, 16_384, 70_000]
            .iter()
            .map(|&n| vec![7u8; n])
            .collect();
        for payload in &payloads {
            put_frame(&mut out, payload);
        }
        let split: Vec<&[u8]> = frames(&out).collect();
        assert_eq!(split.len(), payloads.len());
        for (got, want) in split.iter().zip(&payloads) {
            assert_eq!(*got, want.as_slice());
        }
        let mut input = out.clone();
        for want in &payloads {
            let frame = take_frame(&mut input, 1 << 20)
                .expect("valid frame")
                .expect("complete frame");
            assert_eq!(&frame[..], want.as_slice());
        }
        assert!(input.is_empty());
    }

    #[test]
    fn an_incomplete_frame_waits_for_more() {
        let mut out = BytesMut::new();
        put_frame(&mut out, b"hello");
        let mut partial = BytesMut::from(&out[..3]);
        assert_eq!(take_frame(&mut partial, 100), Ok(None));
        assert_eq!(partial.len(), 3, "nothing is consumed from a partial frame");
        let mut prefix_only = BytesMut::from(&[0x80u8, 0x80][..]);
        assert_eq!(take_frame(&mut prefix_only, 100), Ok(None));
    }

    #[test]
    fn oversized_lengths_are_refused_before_the_payload_arrives() {
        let mut input = BytesMut::new();
        put_varint(&mut input, 4 << 30);
        assert_eq!(
            take_frame(&mut input, 1024),
            Err(CodecError::StanzaTooLarge { limit: 1024 })
        );
    }

    #[test]
    fn a_varint_longer_than_ten_bytes_is_malformed() {
        let mut input = BytesMut::from(&[0xffu8; 11][..]);
        assert_eq!(
            take_frame(&mut input, usize::MAX),
            Err(CodecError::BadFrameLength)
        );
        let mut overflow =
            BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]);
        assert_eq!(
            take_frame(&mut overflow, usize::MAX),
            Err(CodecError::BadFrameLength)
        );
    }
}
