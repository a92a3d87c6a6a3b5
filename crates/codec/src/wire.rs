//! How a connection frames the stream: the one place the session asks to read events and
//! write elements, so every transport shares negotiation, routing and limits.
//!
//! - [`Framing::XmlStream`]: RFC 6120 §4 over a byte stream (TCP, STARTTLS, direct TLS).
//! - Message-oriented framings (WebSocket per RFC 7395, the protobuf binding) see their
//!   input and write their output as *varint length-delimited frames* in the same
//!   `BytesMut`: a protobuf TCP connection uses that format on the wire as is, and a
//!   WebSocket driver turns each received message into one such frame and each written
//!   frame into one message. One buffer format keeps the session transport-agnostic.

use crate::{CodecError, Limits, StreamEvent, XmlStreamDecoder, encode};
use bytes::BytesMut;
use minidom::Element;

/// The framings a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6120 §4: one XML document per stream, restarted after STARTTLS and SASL.
    XmlStream,
}

impl Framing {
    /// Whether STARTTLS can be negotiated inside this framing (RFC 6120 §5); message
    /// transports get TLS from their carrier instead.
    pub fn offers_starttls(self) -> bool {
        matches!(self, Framing::XmlStream)
    }
}

/// One connection's reader and writer for its [`Framing`].
pub enum Wire {
    /// RFC 6120 §4.
    XmlStream(XmlStreamDecoder),
}

impl Wire {
    /// A fresh reader waiting for the stream's opening.
    pub fn new(framing: Framing, limits: Limits) -> Self {
        match framing {
            Framing::XmlStream => Wire::XmlStream(XmlStreamDecoder::new(limits)),
        }
    }

    /// The framing this wire speaks.
    pub fn framing(&self) -> Framing {
        match self {
            Wire::XmlStream(_) => Framing::XmlStream,
        }
    }

    /// The next complete event in `input`, `Ok(None)` when more bytes are needed. Bytes
    /// after the event stay in `input` (see the crate docs on stream restarts).
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<StreamEvent>, CodecError> {
        match self {
            Wire::XmlStream(decoder) => decoder.decode(input),
        }
    }

    /// Forgets the stream's state: a stream restart (RFC 6120 §5.4.3.3, §6.4.6).
    pub fn reset(&mut self) {
        match self {
            Wire::XmlStream(decoder) => decoder.reset(),
        }
    }

    /// Releases buffers while the connection is idle.
    pub fn shrink(&mut self) {
        match self {
            Wire::XmlStream(decoder) => decoder.shrink(),
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
        }
    }

    /// Writes one first-level element: a stanza, features, a stream error, a negotiation step.
    pub fn write_element(&self, out: &mut BytesMut, element: &Element) {
        match self {
            Wire::XmlStream(_) => encode::element(out, element),
        }
    }

    /// Writes the server's end of the stream.
    pub fn write_close(&self, out: &mut BytesMut) {
        match self {
            Wire::XmlStream(_) => encode::stream_close(out),
        }
    }
}
