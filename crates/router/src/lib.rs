//! Router: RFC 6121 delivery rules and the hook chain.
