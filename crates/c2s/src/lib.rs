//! Client-to-server session: stream negotiation, STARTTLS, SASL, bind; the per-connection state machine.
