//! The message log end to end: a real router with the default modules and the log module,
//! over SQLite (in memory, or on disk where restarts and throughput matter), with sessions
//! that are just mailboxes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod harness;
mod idempotency;
mod mam;
mod writer;
