//! Stanza model, error values, hook points and storage ports shared by every stage of the
//! stanza path.
//!
//! **Architecture invariant:** this crate does no IO and knows nothing about sockets, TLS,
//! SQL or tokio. Every other crate may depend on it; it depends on no other Confab crate.

pub mod apps;
pub mod archive;
pub mod client_view;
pub mod error;
pub mod jids;
pub mod metrics;
pub mod ns;
pub mod stanza;
pub mod store;

pub use error::{StanzaError, StanzaErrorCondition, StanzaErrorType, StreamErrorCondition};
pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
pub use stanza::{Stanza, StanzaKind, StanzaParseError};
