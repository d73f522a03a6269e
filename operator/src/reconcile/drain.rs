//! TURN drain, as the operator sees it: a TURN pod with a deletion timestamp is draining (its
//! preStop hook waits for its relay allocations, see `build::turn::DRAIN_SCRIPT`), so its node
//! leaves the published TURN URIs at once while the pod keeps relaying the calls it carries.
//! Status lists the draining nodes; an Event tells when one starts draining.

use std::borrow::Borrow;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Event, EventType};

use crate::crd::{DrainingTurnNode, OtterDeploymentStatus};
use crate::observed::{DrainingNode, TurnNode};

/// Reason of the Event telling that a TURN node started draining.
pub const TURN_DRAINING: &str = "TurnDraining";

/// Split the Ready TURN nodes into the published ones and the draining ones, from the TURN pods:
/// a node is draining when every TURN pod on it is terminating. A terminating pod on a node that
/// no longer matches (unlabelled, not Ready) is listed as draining too, without an address.
/// `pods` may be the watch store's own (`Arc<Pod>`): nothing is copied.
pub fn split_nodes<P: Borrow<Pod>>(
    nodes: Vec<TurnNode>,
    pods: &[P],
) -> (Vec<TurnNode>, Vec<DrainingNode>) {
    let on_node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let pods = || pods.iter().map(Borrow::borrow);
    let live: BTreeSet<String> = pods()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(on_node)
        .collect();
    let mut draining: Vec<DrainingNode> = pods()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter_map(|p| Some((on_node(p)?, p)))
        .filter(|(node, _)| !live.contains(node))
        .map(|(node, p)| DrainingNode {
            address: nodes.iter().find(|n| n.name == node).map(|n| n.public_ip),
            node,
            pod: p.metadata.name.clone().unwrap_or_default(),
            // For a pod, the deletion timestamp is when the kubelet kills it: the end of the
            // grace period, so the latest the drain can last.
            deadline: p.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            host_ip: p
                .status
                .as_ref()
                .and_then(|s| s.host_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            allocations: None,
        })
        .collect();
    draining.sort();
    draining.dedup_by(|a, b| a.node == b.node);
    let gone: BTreeSet<&str> = draining.iter().map(|d| d.node.as_str()).collect();
    let published = nodes
        .iter()
        .filter(|n| !gone.contains(n.name.as_str()))
        .cloned()
        .collect();
    (published, draining)
}

/// The status entries of the draining nodes.
pub fn status_entries(draining: &[DrainingNode]) -> Vec<DrainingTurnNode> {
    draining
        .iter()
        .map(|d| DrainingTurnNode {
            node: d.node.clone(),
            pod: d.pod.clone(),
            deadline: d.deadline.map(|t| t.to_string()),
            allocations: d.allocations,
        })
        .collect()
}

/// The relay allocations a TURN exporter reports: the sum of its `otter_turn_allocations`
/// series (one per client transport) in a Prometheus text scrape. None when it has none.
pub fn allocations_in_scrape(text: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0u64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("otter_turn_allocations") else {
            continue;
        };
        // Only the gauge itself: not `_created_total` and the like.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        found = true;
        // A gauge of live allocations: a whole, non-negative number.
        sum = sum.saturating_add(value.max(0.0).round() as u64);
    }
    found.then_some(sum)
}

/// How long a scrape of a draining pod's exporter may take: the reconcile waits for it.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The most of a scrape read (the exporter's output is a few KiB).
const SCRAPE_LIMIT: u64 = 256 * 1024;

/// GET /metrics of the TURN exporter at `addr` (HTTP/1.0, so the body ends with the
/// connection) and the allocations it reports. None when it does not answer in time.
pub async fn scrape_allocations(addr: std::net::SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: otter-operator\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        conn.take(SCRAPE_LIMIT).read_to_end(&mut body).await.ok()?;
        allocations_in_scrape(&String::from_utf8_lossy(&body))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, scrape).await.ok()?
}

/// Ask each draining pod's exporter how many allocations it still holds (with
/// `turn.metrics.enabled`; else they stay unknown).
pub async fn count_allocations(cr: &crate::crd::OtterDeployment, draining: &mut [DrainingNode]) {
    let metrics = &cr.spec.turn.metrics;
    let Ok(port) = u16::try_from(metrics.port) else {
        return;
    };
    if !metrics.enabled {
        return;
    }
    let counts = futures::future::join_all(draining.iter().map(|d| async move {
        let ip = d.host_ip.or(d.address)?;
        scrape_allocations(std::net::SocketAddr::new(ip, port)).await
    }))
    .await;
    for (d, n) in draining.iter_mut().zip(counts) {
        d.allocations = n;
    }
}

/// One Event per node that started draining since the last status.
pub fn draining_events(
    old: Option<&OtterDeploymentStatus>,
    new: &OtterDeploymentStatus,
) -> Vec<Event> {
    let before: BTreeSet<(&str, &str)> = old
        .map(|s| s.turn_draining.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| (d.node.as_str(), d.pod.as_str()))
        .collect();
    new.turn_draining
        .iter()
        .filter(|d| !before.contains(&(d.node.as_str(), d.pod.as_str())))
        .map(|d| Event {
            type_: EventType::Normal,
            reason: TURN_DRAINING.to_string(),
            note: Some(format!(
                "TURN node {} left the ICE servers for new calls; its pod {} keeps relaying the \
                 calls it carries{} until they end or {}",
                d.node,
                d.pod,
                d.allocations
                    .map(|n| format!(" ({n} relay allocation(s))"))
                    .unwrap_or_default(),
                d.deadline.as_deref().unwrap_or("its grace period ends"),
            )),
            action: "Drain".to_string(),
            secondary: None,
        })
        .chain(drained(old, new))
        .collect()
}

/// Reason of the Event telling that a TURN node's drain ended (its pod is gone).
pub const TURN_DRAINED: &str = "TurnDrained";

/// One Event per node no longer draining, with the allocations it had at the last count.
fn drained(old: Option<&OtterDeploymentStatus>, new: &OtterDeploymentStatus) -> Vec<Event> {
    let after: BTreeSet<(&str, &str)> = new
        .turn_draining
        .iter()
        .map(|d| (d.node.as_str(), d.pod.as_str()))
        .collect();
    old.map(|s| s.turn_draining.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|d| !after.contains(&(d.node.as_str(), d.pod.as_str())))
        .map(|d| Event {
            type_: EventType::Normal,
            reason: TURN_DRAINED.to_string(),
            note: Some(format!(
                "TURN pod {} on node {} is gone{}",
                d.pod,
                d.node,
                d.allocations
                    .map(|n| format!(" ({n} relay allocation(s) at the last count)"))
                    .unwrap_or_default(),
            )),
            action: "Drain".to_string(),
            secondary: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::observed;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: &str, deleted_at: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleted_at.map(|t| Time(t.parse().unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_whose_only_turn_pod_terminates_is_unpublished_and_draining() {
        let nodes = observed().turn_nodes;
        let pods = [
            pod("t-a", "node-a", Some("2026-12-01T10:15:00Z")),
            pod("t-b", "node-b", None),
        ];
        let (published, draining) = split_nodes(nodes.clone(), &pods);
        assert_eq!(published, vec![nodes[1].clone()]);
        assert_eq!(draining.len(), 1);
        assert_eq!(draining[0].node, "node-a");
        assert_eq!(draining[0].pod, "t-a");
        assert_eq!(draining[0].address, Some(nodes[0].public_ip));
        let entries = status_entries(&draining);
        assert_eq!(entries[0].deadline.as_deref(), Some("2026-12-01T10:15:00Z"));
    }

    #[test]
    fn a_live_pod_beside_a_terminating_one_keeps_the_node_published() {
        let nodes = observed().turn_nodes;
        let pods = [
            pod("old", "node-a", Some("2026-12-01T10:15:00Z")),
            pod("new", "node-a", None),
        ];
        let (published, draining) = split_nodes(nodes.clone(), &pods);
        assert_eq!(published, nodes);
        assert!(draining.is_empty());
    }

    #[test]
    fn an_unlabelled_node_still_draining_is_listed_without_an_address() {
        let nodes = observed().turn_nodes;
        let pods = [pod("t-x", "node-x", Some("2026-12-01T10:15:00Z"))];
        let (published, draining) = split_nodes(nodes.clone(), &pods);
        assert_eq!(published, nodes);
        assert_eq!(draining[0].node, "node-x");
        assert_eq!(draining[0].address, None);
    }

    #[test]
    fn one_event_per_node_that_starts_draining() {
        let entry = |node: &str, pod: &str| DrainingTurnNode {
            node: node.into(),
            pod: pod.into(),
            deadline: Some("2026-12-01T10:15:00Z".into()),
            allocations: None,
        };
        let old = OtterDeploymentStatus {
            turn_draining: vec![entry("node-a", "t-a")],
            ..Default::default()
        };
        let new = OtterDeploymentStatus {
            turn_draining: vec![entry("node-a", "t-a"), entry("node-b", "t-b")],
            ..Default::default()
        };
        let events = draining_events(Some(&old), &new);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, TURN_DRAINING);
        let note = events[0].note.clone().unwrap();
        assert!(note.contains("node-b") && note.contains("t-b"), "{note}");
        assert!(draining_events(Some(&new), &new).is_empty());
        assert_eq!(draining_events(None, &new).len(), 2);
    }

    #[test]
    fn allocations_are_summed_over_transports_from_a_scrape() {
        let text = "# HELP otter_turn_allocations Live TURN allocations\n\
                    otter_turn_allocations{transport=\"udp\"} 3\n\
                    otter_turn_allocations{transport=\"tcp\"} 2\n\
                    otter_turn_allocations_created_total 40\n\
                    otter_turn_allocations_ended_total 35\n# EOF\n";
        assert_eq!(allocations_in_scrape(text), Some(5));
        assert_eq!(
            allocations_in_scrape("otter_turn_allocations_created_total 4\n"),
            None
        );
        assert_eq!(allocations_in_scrape("HTTP/1.0 500\r\n\r\nnope"), None);
    }

    #[test]
    fn a_drained_node_gets_an_event_with_its_last_count() {
        let entry = DrainingTurnNode {
            node: "node-a".into(),
            pod: "t-a".into(),
            deadline: None,
            allocations: Some(2),
        };
        let old = OtterDeploymentStatus {
            turn_draining: vec![entry],
            ..Default::default()
        };
        let events = draining_events(Some(&old), &OtterDeploymentStatus::default());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, TURN_DRAINED);
        let note = events[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("t-a") && note.contains("2 relay allocation(s)"),
            "{note}"
        );
    }
}
