//! Credentials (SCRAM material) and SASL server mechanisms; sans-IO.
