//! Prometheus metrics of the signaling server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, RelayKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub peers: Gauge,
    pub rooms: Gauge,
    pub relayed: Family<TypeLabel, Counter>,
    /// The three series of `relayed`, looked up once: a relay then costs one atomic add, not
    /// a lock and a hash of the label.
    relayed_by_kind: [Counter; 3],
    pub errors: Family<CodeLabel, Counter>,
    pub join_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("otter_signaling");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            connections_total.clone(),
        );
        let peers = Gauge::default();
        registry.register(
            "peers",
            "Joined peers connected to this server",
            peers.clone(),
        );
        let rooms = Gauge::default();
        registry.register(
            "rooms",
            "Rooms with at least one peer on this server",
            rooms.clone(),
        );
        let relayed = Family::<TypeLabel, Counter>::default();
        registry.register(
            "messages_relayed",
            "Signaling messages relayed, by type",
            relayed.clone(),
        );
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register("errors", "Error frames sent, by code", errors.clone());
        // 100 µs .. ~3 s: a join is a map insert in memory and a round trip or two with Redis.
        let join_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "join_duration_seconds",
            "Time to handle a join",
            join_seconds.clone(),
        );
        let relayed_by_kind =
            [RelayKind::Offer, RelayKind::Answer, RelayKind::Candidate].map(|kind| {
                relayed
                    .get_or_create(&TypeLabel {
                        r#type: kind.as_str(),
                    })
                    .clone()
            });
        let m = Self {
            registry,
            connections,
            connections_total,
            peers,
            rooms,
            relayed,
            relayed_by_kind,
            errors,
            join_seconds,
        };
        // Zero-valued series from the start, so dashboards and alerts see every code.
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        m
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn relayed(&self, kind: RelayKind) {
        let i = match kind {
            RelayKind::Offer => 0,
            RelayKind::Answer => 1,
            RelayKind::Candidate => 2,
        };
        self.relayed_by_kind[i].inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
