//! TURN drain, as the operator sees it: a TURN pod with a deletion timestamp is draining (its
//! preStop hook waits for its relay allocations, see `build::turn::DRAIN_SCRIPT`), so its node
//! leaves the published TURN URIs at once while the pod keeps relaying the calls it carries.
//! Status lists the draining nodes; an Event tells when one starts draining.

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
pub fn split_nodes(nodes: Vec<TurnNode>, pods: &[Pod]) -> (Vec<TurnNode>, Vec<DrainingNode>) {
    let on_node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let live: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(on_node)
        .collect();
    let mut draining: Vec<DrainingNode> = pods
        .iter()
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
        })
        .collect()
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
                 calls it carries until they end or {}",
                d.node,
                d.pod,
                d.deadline.as_deref().unwrap_or("its grace period ends"),
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
}
