//! TURN metrics from coturn's Redis statistics (`otter-signaling turn-exporter`).
//!
//! coturn (4.6, Debian's and upstream's images alike) has no Prometheus endpoint, but with
//! `--redis-statsdb` it writes every allocation's status to Redis and publishes its traffic.
//! Measured with the real `turnserver` 4.6.1 (realm `R`, user `U`, allocation id `ID`):
//!
//! - `turn/realm/R/user/U/allocation/ID/status`: a key, also PUBLISHed on the channel of the
//!   same name, holding `new lifetime=…, type=UDP, local=…, remote=…` on Allocate, `refreshed
//!   lifetime=…` on each Refresh; `deleted` is published and the key removed when it ends.
//! - `…/allocation/ID/traffic` and `…/traffic/peer`: `rcvp=…, rcvb=…, sentp=…, sentb=…`, the
//!   packets and bytes since the previous report on the client and the peer leg, published
//!   about every 1,024 packets and when the allocation ends (their sum is `total_traffic`).
//! - `…/total_traffic[/peer]`: the allocation's totals when it ends (ignored: the deltas above
//!   already counted them).
//!
//! Without a realm the prefix is `turn/user/U/…`. Failed allocations (bad credentials, quota)
//! are not published, so they cannot be counted from here.
//!
//! This module turns those messages into metrics with bounded labels: the username and the
//! addresses in the messages are never labels, and allocations are remembered by a hash of
//! their key, so the exporter holds no usernames either.

pub mod run;

use std::collections::HashMap;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

/// The channel pattern coturn publishes statistics on.
pub const CHANNEL_PATTERN: &str = "turn/*";
/// The status keys of live allocations (read after each (re)connection).
pub const STATUS_KEY_PATTERN: &str = "turn/*/allocation/*/status";
/// Allocations remembered at most: coturn's quotas bound them far lower; this bounds the
/// exporter's memory if something else writes into its Redis.
pub const MAX_TRACKED: usize = 200_000;

/// An allocation, by a hash of its key prefix (`turn/…/allocation/ID`).
pub type AllocId = [u8; 16];

/// The transport between client and coturn (coturn's `type=`), a bounded label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    udp,
    tcp,
    tls,
    dtls,
    other,
}

/// Which side of the relay a traffic report is about.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Leg {
    /// Between the client and coturn (TURN framing included).
    client,
    /// Between coturn's relay address and the peers: the relayed payload.
    peer,
}

/// Direction, seen from coturn.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    received,
    sent,
}

/// Packets and bytes of one traffic report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub rcvp: u64,
    pub rcvb: u64,
    pub sentp: u64,
    pub sentb: u64,
}

/// One statistics message from coturn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Allocate (`new`).
    Created(AllocId, Transport),
    /// Refresh with a non-zero lifetime.
    Refreshed(AllocId, Transport),
    /// The allocation ended.
    Deleted(AllocId),
    /// Traffic since the previous report.
    Traffic(AllocId, Leg, Traffic),
    /// A message this exporter has no use for (`total_traffic`, a refresh to lifetime 0).
    Ignored,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a coturn statistics message: {0}")]
pub struct Malformed(&'static str);

fn alloc_id(prefix: &str) -> AllocId {
    let digest = Sha256::digest(prefix.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Split `turn/…/allocation/ID/rest` into the allocation's id and `rest`.
fn split_channel(channel: &str) -> Result<(AllocId, &str), Malformed> {
    if !channel.starts_with("turn/") {
        return Err(Malformed("channel outside turn/"));
    }
    // The username may itself contain "/allocation/": the last occurrence is coturn's.
    let at = channel
        .rfind("/allocation/")
        .ok_or(Malformed("no /allocation/ in the channel"))?;
    let after = &channel[at + "/allocation/".len()..];
    let (id, rest) = after
        .split_once('/')
        .ok_or(Malformed("nothing after the allocation id"))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed("allocation id is not a number"));
    }
    Ok((
        alloc_id(&channel[..at + "/allocation/".len() + id.len()]),
        rest,
    ))
}

/// The `key=value` fields of a payload (`a=1, b=2`).
fn field<'a>(payload: &'a str, name: &str) -> Option<&'a str> {
    payload.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

fn transport(payload: &str) -> Transport {
    match field(payload, "type")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("UDP") => Transport::udp,
        Some("TCP") => Transport::tcp,
        Some("TLS") | Some("TLS/TCP") => Transport::tls,
        Some("DTLS") | Some("DTLS/UDP") => Transport::dtls,
        _ => Transport::other,
    }
}

fn traffic(payload: &str) -> Result<Traffic, Malformed> {
    let num = |name| {
        field(payload, name)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(Malformed("traffic field missing or not a number"))
    };
    Ok(Traffic {
        rcvp: num("rcvp")?,
        rcvb: num("rcvb")?,
        sentp: num("sentp")?,
        sentb: num("sentb")?,
    })
}

fn status(id: AllocId, payload: &str) -> Result<Event, Malformed> {
    let payload = payload.trim();
    if payload == "deleted" {
        return Ok(Event::Deleted(id));
    }
    let (word, rest) = payload.split_once(' ').unwrap_or((payload, ""));
    // "lifetime=0" is the client's Refresh that ends it; "deleted" follows.
    let lifetime = rest
        .split(',')
        .next()
        .and_then(|f| f.trim().strip_prefix("lifetime="));
    match (word, lifetime) {
        ("new", _) => Ok(Event::Created(id, transport(rest))),
        ("refreshed", Some("0")) => Ok(Event::Ignored),
        ("refreshed", _) => Ok(Event::Refreshed(id, transport(rest))),
        _ => Err(Malformed("unknown allocation status")),
    }
}

/// Parse one published message.
pub fn parse(channel: &str, payload: &str) -> Result<Event, Malformed> {
    let (id, rest) = split_channel(channel)?;
    match rest {
        "status" => status(id, payload),
        "traffic" => Ok(Event::Traffic(id, Leg::client, traffic(payload)?)),
        "traffic/peer" => Ok(Event::Traffic(id, Leg::peer, traffic(payload)?)),
        "total_traffic" | "total_traffic/peer" => Ok(Event::Ignored),
        _ => Err(Malformed("unknown statistics channel")),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    leg: Leg,
    direction: Direction,
}

/// The exporter's state and metrics. Pure: fed events, read through `encode`.
pub struct TurnStats {
    registry: Registry,
    live: HashMap<AllocId, Transport>,
    allocations: Family<TransportLabel, Gauge>,
    created: Counter,
    ended: Counter,
    bytes: Family<TrafficLabels, Counter>,
    packets: Family<TrafficLabels, Counter>,
    malformed: Counter,
    /// 1 while the exporter is subscribed to coturn's Redis.
    pub connected: Gauge,
    /// Resynchronisations from the status keys (one per (re)connection).
    pub resyncs: Counter,
}

impl Default for TurnStats {
    fn default() -> Self {
        Self::new()
    }
}

const TRANSPORTS: [Transport; 5] = [
    Transport::udp,
    Transport::tcp,
    Transport::tls,
    Transport::dtls,
    Transport::other,
];

impl TurnStats {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("otter_turn");
        let allocations = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "allocations",
            "Live TURN allocations on this coturn, by client transport",
            allocations.clone(),
        );
        let created = Counter::default();
        registry.register(
            "allocations_created",
            "TURN allocations made (successful Allocate requests)",
            created.clone(),
        );
        let ended = Counter::default();
        registry.register(
            "allocations_ended",
            "TURN allocations ended (released by the client or expired)",
            ended.clone(),
        );
        let bytes = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "traffic_bytes",
            "Bytes through coturn, by leg (client: client to coturn; peer: the relayed payload) and direction",
            bytes.clone(),
        );
        let packets = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "traffic_packets",
            "Packets through coturn, by leg and direction",
            packets.clone(),
        );
        let malformed = Counter::default();
        registry.register(
            "stats_malformed",
            "Messages on coturn's statistics channels that could not be read",
            malformed.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "stats_connected",
            "1 while the exporter is subscribed to coturn's statistics Redis",
            connected.clone(),
        );
        let resyncs = Counter::default();
        registry.register(
            "stats_resyncs",
            "Reads of the live allocations from Redis (at start and after each reconnection)",
            resyncs.clone(),
        );
        // Every series from the start, so rate() and alerts see zeros rather than nothing.
        for t in TRANSPORTS {
            let _ = allocations.get_or_create(&TransportLabel { transport: t });
        }
        for leg in [Leg::client, Leg::peer] {
            for direction in [Direction::received, Direction::sent] {
                let l = TrafficLabels { leg, direction };
                let _ = bytes.get_or_create(&l);
                let _ = packets.get_or_create(&l);
            }
        }
        Self {
            registry,
            live: HashMap::new(),
            allocations,
            created,
            ended,
            bytes,
            packets,
            malformed,
            connected,
            resyncs,
        }
    }

    /// Apply one message from coturn.
    pub fn message(&mut self, channel: &str, payload: &str) {
        match parse(channel, payload) {
            Ok(event) => self.apply(event),
            Err(e) => {
                self.malformed.inc();
                tracing::debug!(error = %e, "skipping a statistics message");
            }
        }
    }

    /// Apply one event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Created(id, t) => {
                self.created.inc();
                self.track(id, t);
            }
            // An allocation made before the exporter started shows up on its first Refresh.
            Event::Refreshed(id, t) => self.track(id, t),
            Event::Deleted(id) => {
                self.ended.inc();
                if let Some(t) = self.live.remove(&id) {
                    self.gauge(t).dec();
                }
            }
            Event::Traffic(_, leg, t) => self.add_traffic(leg, t),
            Event::Ignored => {}
        }
    }

    fn gauge(&self, t: Transport) -> Gauge {
        self.allocations
            .get_or_create(&TransportLabel { transport: t })
            .clone()
    }

    /// Remember a live allocation; the gauges follow incrementally (no scan per message).
    fn track(&mut self, id: AllocId, t: Transport) {
        if self.live.len() >= MAX_TRACKED && !self.live.contains_key(&id) {
            return;
        }
        if let Some(old) = self.live.insert(id, t) {
            self.gauge(old).dec();
        }
        self.gauge(t).inc();
    }

    fn add_traffic(&self, leg: Leg, t: Traffic) {
        for (direction, p, b) in [
            (Direction::received, t.rcvp, t.rcvb),
            (Direction::sent, t.sentp, t.sentb),
        ] {
            let l = TrafficLabels { leg, direction };
            self.packets.get_or_create(&l).inc_by(p);
            self.bytes.get_or_create(&l).inc_by(b);
        }
    }

    /// Replace the live set with what the status keys in Redis say (`key`, `value` pairs):
    /// after a (re)connection, messages may have been missed.
    pub fn resync<'a>(&mut self, status: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.live.clear();
        for t in TRANSPORTS {
            self.gauge(t).set(0);
        }
        for (key, value) in status {
            match parse(key, value) {
                Ok(Event::Created(id, t) | Event::Refreshed(id, t)) => self.track(id, t),
                Ok(_) => {}
                Err(_) => {
                    self.malformed.inc();
                }
            }
        }
        self.resyncs.inc();
    }

    /// Live allocations tracked.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests;
