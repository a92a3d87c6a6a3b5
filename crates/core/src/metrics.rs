//! Server-wide counters exported at `/metrics` in Prometheus text format.
//!
//! One `Metrics` value is created by the binary and shared by reference; the handles are
//! atomics, so the hot path pays one relaxed add per event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set for stanza counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `message`, `presence` or `iq`.
    pub kind: &'static str,
}

/// The counters and gauges Confab exports.
pub struct Metrics {
    /// Open client connections, authenticated or not.
    pub connections: Gauge,
    /// Bound resources (sessions).
    pub sessions: Gauge,
    /// Stanzas read from clients, by kind.
    pub stanzas_in: Family<KindLabel, Counter>,
    /// Stanzas written to clients, by kind.
    pub stanzas_out: Family<KindLabel, Counter>,
    /// Failed SASL authentications.
    pub auth_failures: Counter,
    /// Connections refused because the process ran out of file descriptors or hit the cap.
    pub connections_refused: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("confab");
        let connections = Gauge::default();
        let sessions = Gauge::default();
        let stanzas_in = Family::<KindLabel, Counter>::default();
        let stanzas_out = Family::<KindLabel, Counter>::default();
        let auth_failures = Counter::default();
        let connections_refused = Counter::default();
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register("sessions", "Bound client sessions", sessions.clone());
        registry.register(
            "stanzas_in",
            "Stanzas received from clients",
            stanzas_in.clone(),
        );
        registry.register(
            "stanzas_out",
            "Stanzas sent to clients",
            stanzas_out.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentication attempts",
            auth_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused (descriptor exhaustion or connection cap)",
            connections_refused.clone(),
        );
        Self {
            connections,
            sessions,
            stanzas_in,
            stanzas_out,
            auth_failures,
            connections_refused,
            registry,
        }
    }

    /// Renders every metric in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one stanza read from a client.
    pub fn stanza_in(&self, kind: crate::StanzaKind) {
        self.stanzas_in
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts one stanza written to a client.
    pub fn stanza_out(&self, kind: crate::StanzaKind) {
        self.stanzas_out
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }
}
