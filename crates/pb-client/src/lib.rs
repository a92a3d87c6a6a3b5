//! Client library for Confab's compact protobuf binding of XMPP
//! (docs/protocol/confab-protobuf.md, `proto/confab/xmpp/v1/confab.proto`).
//!
//! Layout, following the data path:
//! - [`connection`]: [`Endpoint`]s (TCP, TLS from the first byte, `/pb-websocket`) and the
//!   [`Connection`] that moves [`confab_proto::v1::Frame`]s over them (length prefixes,
//!   maximum frame size). Knows nothing of XMPP.
//! - [`auth`]: SASL mechanisms (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) via the `sasl` crate.
//! - [`sm`]: XEP-0198 bookkeeping without IO (`h`, the resend queue).
//! - [`client`]: [`Client`]: login, stanzas out, [`Event`]s in, receipts, resumption.
//!
//! Stanzas stay typed frames end to end: the client reads a message's body, ids and Confab
//! receipt straight from the frame and converts to XML ([`Message::element`]) only when
//! asked, so a session costs one socket, two small buffers and no XML parsing.
//!
//! **Architecture invariant:** the only Confab crate this depends on is `confab-proto` (the
//! wire format). It shares no code with the server's session, SASL or SM logic, so a bug
//! there cannot hide behind the same bug in the client that tests it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confab_pb_client::Error> {
//! use confab_pb_client::{Client, Endpoint, LoginOptions};
//! let endpoint = Endpoint::Tcp("127.0.0.1:5202".parse().expect("address"));
//! let mut alice = Client::login(&endpoint, LoginOptions::new("alice@localhost", "secret")?).await?;
//! let receipt = alice.send_message_acked("bob@localhost", "hi").await?;
//! println!("stored as #{} ({})", receipt.seq, receipt.server_id);
//! alice.close().await
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod connection;
mod error;
pub mod sm;

pub use auth::Mechanism;
pub use client::{Client, Event, LoginOptions, Message, Receipt, ResumeToken, StreamError};
pub use confab_proto;
pub use connection::{Connection, DEFAULT_MAX_FRAME, Endpoint, SUBPROTOCOL};
pub use error::Error;
