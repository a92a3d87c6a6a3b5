//! End-to-end tests: the real `confab` binary on ephemeral ports, driven over real sockets by
//! a raw XMPP client, an HTTP client and the independent tokio-xmpp client library.
//!
//! One test binary (one link step) with a module per area; every test starts its own server
//! (see [`harness`]), so tests are independent and run in parallel.

mod bench_transports;
mod client_api;
mod client_send;
mod direct_tls;
mod fds;
mod group_read;
mod groups;
mod harness;
mod http;
mod im;
mod introspect;
mod limits;
mod mam;
mod muc;
mod muc_archive;
mod muc_client;
mod muc_large;
mod negotiation;
mod pb_client;
mod presence;
mod protobuf;
mod recall;
mod registration;
mod scram;
mod stream_management;
mod tokio_xmpp_client;
mod transport_clients;
mod transports;
mod websocket;
mod wire_bytes;
