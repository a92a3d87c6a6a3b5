//! XML stream codec: bytes to stanzas with size/depth limits, and stanzas back to bytes; sans-IO.
//!
//! [`XmlStreamDecoder`] turns what a client sends (RFC 6120 §4) into [`StreamEvent`]s: the
//! stream header, each first-level element as a [`minidom::Element`], and the closing tag.
//! [`encode`] writes the server's side. Both work on `bytes::BytesMut` and never touch a
//! socket, so transcripts and hostile inputs are tested as plain function calls.
//!
//! **Architecture invariant:** this crate knows XML and the stream framing of RFC 6120 §4 and
//! nothing about what stanzas mean: it returns any well-formed first-level element and leaves
//! deciding whether it is acceptable to the session. It does no IO and has no tokio
//! dependency.
//!
//! ## Stream restarts
//!
//! After STARTTLS (RFC 6120 §5.4.3.3) and SASL success (§6.4.6) both sides start a new stream
//! over the same connection with no closing tag for the old one. The decoder supports this by
//! returning exactly one event per call and leaving every later byte in the caller's buffer:
//! when `decode` returns `<proceed/>` or `<success/>`, the caller answers, calls
//! [`XmlStreamDecoder::reset`], and continues decoding the same buffer as the new stream. A
//! restart can therefore never lose or misattribute bytes that arrived in the same read. (After
//! STARTTLS the plaintext left in the buffer is discarded instead: it predates TLS.)

mod decode;
pub mod encode;
mod error;
pub mod protobuf;
pub mod websocket;
pub mod wire;

pub use decode::{Limits, MAX_TOKEN_BYTES, StreamEvent, StreamHeader, XmlStreamDecoder};
pub use error::CodecError;
pub use wire::{Framing, Wire};
