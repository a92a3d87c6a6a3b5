//! Confab's compact protobuf binding of XMPP (`proto/confab/xmpp/v1/confab.proto`).
//!
//! [`v1`] holds the generated message types; [`convert`] turns XMPP elements into [`v1::Frame`]s
//! and back, exactly: `frame_to_unit(element_to_frame(e))` is an element equal to `e`
//! (minidom equality) for every element. Common payloads get typed, compact fields; anything
//! else travels as an XML fragment, so nothing is lost in translation.
//!
//! Frames go on the wire as varint length-delimited messages (the protobuf convention, as
//! `prost::Message::encode_length_delimited` writes them); see docs/protocol/confab-protobuf.md.
//!
//! **Architecture invariant:** no IO and no XML parser of its own for server use: how XML
//! fragments are written and parsed is the caller's [`convert::Fragments`] (the server's codec
//! parses them with its stream limits; [`convert::MinidomFragments`] is a plain default for
//! clients).

pub mod convert;
pub mod framing;
pub mod time;

/// Generated types of `confab.xmpp.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/confab.xmpp.v1.rs"));
}

pub use convert::{
    ConvertError, Fragments, MinidomFragments, Unit, close_frame, element_to_frame, frame_to_unit,
    open_frame, opened_frame,
};
pub use prost;
pub use prost::Message as ProstMessage;
