//! Sockets: the first and last stage of the stanza path.
//!
//! A [`C2sListener`] accepts TCP connections, caps their number, survives running out of
//! file descriptors, and runs one task per connection that moves bytes between the socket
//! (plain, upgraded to TLS with STARTTLS, or TLS from the first byte on a direct-TLS
//! listener) and a `confab_c2s::Session`. [`serve_messages`] runs the same loop over a
//! [`MessageTransport`] (a WebSocket the HTTP listener accepted).
//!
//! **Architecture invariant:** nothing here parses XML or knows XMPP beyond "the session
//! asked for STARTTLS"; protocol decisions belong to `confab-c2s`.

mod connection;
mod listener;
pub mod tls;

pub use connection::{ConnectionLimits, MessageTransport, serve_messages};
pub use listener::{C2sListener, ListenerConfig, bind};
