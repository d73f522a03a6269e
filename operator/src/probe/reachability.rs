//! What probe results mean, as pure functions: the per-node status entries (a node's
//! `lastTransitionTime` moves only when its `reachable` flips), the `TurnReachable` condition,
//! and the Events of per-node transitions.
//!
//! kstatus: `TurnReachable` is a condition of its own and never changes `Ready` or `Degraded`.
//! The probe sees the nodes from inside the cluster, which is not where clients are: a cluster
//! whose pods cannot reach the nodes' public addresses (hairpin NAT, egress rules) would
//! otherwise never be Ready although every client relays fine. Who wants to gate on it waits
//! for it (`kubectl wait --for=condition=TurnReachable`); Argo CD shows it in the message.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};

use super::NodeProbe;
use crate::crd::TurnNodeReachability;

/// Condition type.
pub const TURN_REACHABLE: &str = "TurnReachable";
/// Event reason: a TURN node stopped allocating (or never did).
pub const TURN_NODE_UNREACHABLE: &str = "TurnNodeUnreachable";
/// Event reason: a TURN node allocates again.
pub const TURN_NODE_REACHABLE: &str = "TurnNodeReachable";

/// The status entries of this probe round, keeping each node's transition time when its
/// reachability did not change.
pub fn entries(
    previous: &[TurnNodeReachability],
    probes: &[NodeProbe],
    now: Timestamp,
) -> Vec<TurnNodeReachability> {
    let mut out: Vec<TurnNodeReachability> = probes
        .iter()
        .map(|p| {
            let reachable = p.outcome.reachable();
            let last_transition_time = previous
                .iter()
                .find(|e| e.node == p.node && e.reachable == reachable)
                .map(|e| e.last_transition_time.clone())
                .unwrap_or(Time(now));
            TurnNodeReachability {
                node: p.node.clone(),
                address: p.address.to_string(),
                reachable,
                message: p.outcome.detail(),
                last_transition_time,
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

fn describe(e: &TurnNodeReachability) -> String {
    format!("{} ({}): {}", e.node, e.address, e.message)
}

/// `TurnReachable`: status and message; `None` before the first probe (no condition yet).
pub fn condition(entries: &[TurnNodeReachability]) -> Option<(bool, String)> {
    if entries.is_empty() {
        return None;
    }
    let down: Vec<String> = entries
        .iter()
        .filter(|e| !e.reachable)
        .map(describe)
        .collect();
    if down.is_empty() {
        let names: Vec<&str> = entries.iter().map(|e| e.node.as_str()).collect();
        let message = format!(
            "every TURN node allocated a relay: {} of {} ({})",
            entries.len(),
            entries.len(),
            names.join(", ")
        );
        return Some((true, message));
    }
    let message = format!(
        "{} of {} TURN nodes do not allocate a relay: {}",
        down.len(),
        entries.len(),
        down.join("; ")
    );
    Some((false, message))
}

/// One Event per node whose reachability changed: a Warning when it stopped allocating (or a
/// new node never did), a Normal one when it allocates again. The Event's related object is
/// the Node, so the recorder keeps one series per node and reason.
pub fn events(old: &[TurnNodeReachability], new: &[TurnNodeReachability]) -> Vec<Event> {
    new.iter()
        .filter_map(|e| {
            let before = old.iter().find(|o| o.node == e.node).map(|o| o.reachable);
            let (type_, reason, note) = match (before, e.reachable) {
                (Some(true) | None, false) => (
                    EventType::Warning,
                    TURN_NODE_UNREACHABLE,
                    format!("TURN node {} stopped allocating: {}", e.node, describe(e)),
                ),
                (Some(false), true) => (
                    EventType::Normal,
                    TURN_NODE_REACHABLE,
                    format!("TURN node {} allocates again at {}", e.node, e.address),
                ),
                _ => return None,
            };
            Some(Event {
                type_,
                reason: reason.to_string(),
                note: Some(note.chars().take(1000).collect()),
                action: "ProbeTurn".to_string(),
                secondary: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(e.node.clone()),
                    ..Default::default()
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeOutcome;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn probe(node: &str, outcome: ProbeOutcome) -> NodeProbe {
        NodeProbe {
            node: node.into(),
            address: format!("203.0.113.{}:3478", node.len()).parse().unwrap(),
            outcome,
        }
    }

    fn ok() -> ProbeOutcome {
        ProbeOutcome::Allocated { relayed: None }
    }

    #[test]
    fn transition_time_moves_only_when_reachability_flips() {
        let first = entries(&[], &[probe("a", ok()), probe("bb", ok())], at(0));
        let again = entries(&first, &[probe("bb", ok()), probe("a", ok())], at(60));
        assert_eq!(first, again, "same results, same status: nothing to write");
        let down = entries(
            &again,
            &[probe("a", ok()), probe("bb", ProbeOutcome::NoAnswer)],
            at(120),
        );
        assert_eq!(down[0].last_transition_time, Time(at(0)));
        assert_eq!(down[1].last_transition_time, Time(at(120)));
        assert!(!down[1].reachable);
        assert!(down[1].message.contains("no answer"), "{}", down[1].message);
    }

    #[test]
    fn one_node_down_or_all_down_is_not_reachable_naming_each() {
        assert_eq!(condition(&[]), None, "no condition before the first probe");
        let all_up = entries(&[], &[probe("a", ok()), probe("bb", ok())], at(0));
        let (up, message) = condition(&all_up).unwrap();
        assert!(up);
        assert!(message.contains("2 of 2"), "{message}");
        let refused = ProbeOutcome::Refused {
            code: 401,
            reason: "Unauthorized".into(),
        };
        let one_down = entries(&all_up, &[probe("a", ok()), probe("bb", refused)], at(9));
        let (up, message) = condition(&one_down).unwrap();
        assert!(!up);
        assert!(
            message.contains("1 of 2") && message.contains("bb (203.0.113.2:3478)"),
            "{message}"
        );
        assert!(message.contains("401 Unauthorized"), "{message}");
        let all_down = entries(
            &one_down,
            &[
                probe("a", ProbeOutcome::PortUnreachable),
                probe("bb", ProbeOutcome::NoAnswer),
            ],
            at(10),
        );
        let (up, message) = condition(&all_down).unwrap();
        assert!(!up);
        assert!(message.starts_with("2 of 2 TURN nodes"), "{message}");
        assert!(
            message.contains("a (203.0.113.1:3478): no answer"),
            "{message}"
        );
    }

    #[test]
    fn events_tell_each_nodes_flips_once_and_name_the_node() {
        let up = entries(&[], &[probe("a", ok()), probe("bb", ok())], at(0));
        assert!(
            events(&[], &up).is_empty(),
            "a node that answers from the start is no news"
        );
        let down = entries(
            &up,
            &[probe("a", ok()), probe("bb", ProbeOutcome::NoAnswer)],
            at(1),
        );
        let e = events(&up, &down);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, TURN_NODE_UNREACHABLE);
        assert_eq!(e[0].type_, EventType::Warning);
        assert!(e[0].note.as_deref().unwrap().contains("bb"));
        assert_eq!(e[0].secondary.as_ref().unwrap().name.as_deref(), Some("bb"));
        assert!(events(&down, &down).is_empty(), "no news, no event");
        let back = entries(&down, &[probe("a", ok()), probe("bb", ok())], at(2));
        let e = events(&down, &back);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, TURN_NODE_REACHABLE);
        assert_eq!(e[0].type_, EventType::Normal);
        let new_and_silent = entries(&[], &[probe("c", ProbeOutcome::NoAnswer)], at(3));
        assert_eq!(
            events(&back, &new_and_silent)[0].reason,
            TURN_NODE_UNREACHABLE
        );
    }
}
