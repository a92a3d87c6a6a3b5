//! SQLite storage adapter implementing the core store ports.
//!
//! [`SqliteStore`] implements every trait of [`confab_core::store`] over one database file,
//! `confab.db`, in the server's data directory. The schema lives in `migrations/sqlite/`,
//! is embedded in the binary and is brought up to date each time the store is opened.
//!
//! # Architecture invariant
//! This crate knows storage and nothing else: it depends on `confab-core` only, never on a
//! protocol crate or another adapter. XML payloads are opaque text here.
//!
//! # Concurrency
//! SQLite admits one writer at a time per database file. Inside a process the store therefore
//! keeps a single write connection, so concurrent writers queue fairly on the pool instead of
//! spinning in SQLite's busy handler, and a small separate pool of read connections that WAL
//! mode lets run alongside the writer. Across processes (the `confab user ...` CLI writing
//! while the server runs) writers wait for each other through SQLite's busy timeout.
//!
//! # Tests
//! The adapter-independent behaviour is specified by the `conformance` module (feature
//! `conformance`), which any other adapter can run against itself.

mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use sqlite::{DEFAULT_OFFLINE_QUOTA, SqliteStore, StoreOpenError};
