//! The message log: the stage of the stanza path that makes a chat message durable before
//! anyone hears of it (DESIGN.md, "Delivery model").
//!
//! ```text
//! router ─ on_routed ─ [LogModule] ─ client id, server id, server time, <stanza-id/>
//!                           │
//!                           └─ MessageLog::commit ─ bounded queue ─ writer task ─ ArchiveStore::append
//!                                                                    (one transaction per batch)
//!                           ┌─ receipt ─────────────────────────────┘
//!                           ├─ new:       <ack/> to the sender, then the router delivers
//!                           ├─ duplicate: the original <ack/> to the sender, nothing delivered
//!                           └─ failure:   a `wait` error to the sender, nothing delivered
//! ```
//!
//! [`MessageLog`] is the batching writer (group commit); [`LogModule`] is the router hook;
//! [`MamModule`] answers XEP-0313 queries over what the log committed;
//! [`receipt`] is the wire format of Confab's commit receipt (`urn:confab:ack:0`, specified
//! in `docs/protocol/confab-ack.md`) and of the XEP-0359 ids it relies on.
//!
//! **Architecture invariant:** reaches storage only through `confab_core::archive` and other
//! sessions only through the router; it knows no SQL and no socket.

pub mod mam;
mod module;
pub mod recall;
pub mod receipt;
pub mod submit;
mod writer;

pub use mam::MamModule;
pub use module::LogModule;
pub use recall::{Recall, RecallError};
pub use submit::{CommitOutcome, capture_commit};
pub use writer::{LogConfig, LogStats, MessageLog, PendingCommit};
