//! The client-to-server session: everything between "bytes arrived on a connection" and
//! "a stanza goes to the router".
//!
//! A [`Session`] owns the XML decoder and the stream state (RFC 6120 §4–§7: stream header,
//! STARTTLS, SASL, resource binding) and turns decoded stanzas into router calls. It does no
//! IO: the network driver feeds it bytes, writes what it queues in [`Session::output`], and
//! performs the [`Action`] it returns (upgrade to TLS, close). That keeps every negotiation
//! step testable as a transcript.
//!
//! **Architecture invariant:** a session never calls another session; everything it sends
//! goes through the router, everything it receives comes from its mailbox.

mod session;
pub mod sm;

pub use confab_codec::Framing;
pub use session::{Action, C2sConfig, PreAuthIq, Session};
pub use sm::{Resumption, Takeover};
