//! SQLite storage adapter implementing the core store ports.
