//! Prometheus metrics of the operator (`/metrics`, OpenMetrics text).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::crd::{DrainingTurnNode, OtterDeployment, OtterDeploymentStatus};

/// Outcome of one reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Reconciled without error.
    Ok,
    /// Failed; retried with backoff.
    Error,
}

/// Labels of `otter_operator_reconciliations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Outcome.
    pub result: Outcome,
}

/// Labels of `otter_operator_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The pipeline step that failed: `observe`, `build`, `apply`, `prune` or `status`.
    pub kind: String,
}

/// Labels of `otter_operator_applies_skipped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The child's API kind, e.g. `Deployment`.
    pub kind: String,
}

/// Labels of `otter_turn_reachable_nodes`: one series per OtterDeployment (`namespace/name`; a
/// label of its own so it never clashes with the scrape's `namespace` target label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// `namespace/name` of the OtterDeployment.
    pub otterdeployment: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles by outcome.
    pub reconciliations: Family<ReconcileLabels, Counter>,
    /// Reconcile failures by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Status writes: stays flat while nothing changes.
    pub status_writes: Counter,
    /// Child deletions of objects the spec no longer wants.
    pub pruned: Counter,
    /// Children not applied because the watch showed them as wanted, by kind.
    pub applies_skipped: Family<KindLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Requests sent to the Kubernetes API (reads, writes, watches).
    pub api_requests: Counter,
    /// TURN nodes clients can use, per OtterDeployment (see `set_turn_reachable`).
    pub turn_reachable_nodes: Family<DeploymentLabels, Gauge>,
    /// Draining TURN nodes, per OtterDeployment (see `set_turn_draining`).
    pub turn_draining_nodes: Family<DeploymentLabels, Gauge>,
    /// Relay allocations a draining TURN node still holds, when counted.
    pub turn_draining_allocations: Family<DrainingLabels, Gauge>,
    /// The draining nodes with a series, per OtterDeployment, so ended drains are removed.
    draining_series: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
}

/// Labels of `otter_turn_draining_allocations`: bounded by the TURN nodes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainingLabels {
    /// `namespace/name` of the OtterDeployment.
    pub otterdeployment: String,
    /// The draining node.
    pub node: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric under the `otter_operator` prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("otter_operator");
        let reconciliations: Family<ReconcileLabels, Counter> = registered(
            registry,
            "reconciliations",
            "Reconciles of OtterDeployments by result",
        );
        let errors: Family<ErrorLabels, Counter> = registered(
            registry,
            "reconcile_errors",
            "Failed reconciles by kind of error",
        );
        // 5 ms to 82 s: a reconcile under a burst on a busy control plane took over 10 s.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time taken by one reconcile",
            duration.clone(),
        );
        let status_writes = registered(
            registry,
            "status_writes",
            "Status updates written (none when nothing changed)",
        );
        let pruned = registered(
            registry,
            "children_pruned",
            "Children deleted because the spec no longer wants them",
        );
        let applies_skipped: Family<KindLabels, Counter> = registered(
            registry,
            "applies_skipped",
            "Children not applied: the watch showed them as wanted (no request sent)",
        );
        let leader = registered(
            registry,
            "leader",
            "1 while this replica holds the leader Lease",
        );
        let api_requests = registered(
            registry,
            "api_requests",
            "Requests the operator sent to the Kubernetes API (watches count once)",
        );
        // Named like the TURN exporter's metrics (otter_turn_*), which the dashboard and the
        // alerts read beside it.
        let turn_reachable_nodes = registered(
            &mut root,
            "otter_turn_reachable_nodes",
            "TURN nodes of an OtterDeployment that clients can use (0: relayed calls fail)",
        );
        let turn_draining_nodes = registered(
            &mut root,
            "otter_turn_draining_nodes",
            "TURN nodes of an OtterDeployment whose pod is draining (left the ICE servers, still relaying)",
        );
        let turn_draining_allocations = registered(
            &mut root,
            "otter_turn_draining_allocations",
            "Relay allocations a draining TURN node still holds (with turn.metrics.enabled)",
        );
        let metrics = Self {
            registry: Arc::new(root),
            reconciliations,
            errors,
            duration,
            status_writes,
            pruned,
            applies_skipped,
            leader,
            api_requests,
            turn_reachable_nodes,
            turn_draining_nodes,
            turn_draining_allocations,
            draining_series: Arc::default(),
        };
        metrics.seed_zero_series();
        metrics
    }

    /// Zero-valued series from the start, so the dashboard and alerts see every step.
    fn seed_zero_series(&self) {
        for kind in crate::error::Error::STEPS {
            let _ = self.errors.get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            });
        }
        for kind in crate::kinds::Kind::ALL {
            let _ = self.applies_skipped.get_or_create(&KindLabels {
                kind: kind.api_kind(),
            });
        }
        for result in [Outcome::Ok, Outcome::Error] {
            let _ = self
                .reconciliations
                .get_or_create(&ReconcileLabels { result });
        }
    }

    /// Set the drain gauges of `namespace/name` from its status; an empty list (no drain, or
    /// the resource deleted) removes its per-node series.
    pub fn set_turn_draining(&self, namespace: &str, name: &str, draining: &[DrainingTurnNode]) {
        let otterdeployment = format!("{namespace}/{name}");
        let labels = DeploymentLabels {
            otterdeployment: otterdeployment.clone(),
        };
        let n = i64::try_from(draining.len()).unwrap_or(i64::MAX);
        self.turn_draining_nodes.get_or_create(&labels).set(n);
        let mut seen = match self.draining_series.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now: BTreeSet<String> = draining
            .iter()
            .filter(|d| d.allocations.is_some())
            .map(|d| d.node.clone())
            .collect();
        for gone in seen.get(&otterdeployment).into_iter().flatten() {
            if !now.contains(gone) {
                self.turn_draining_allocations.remove(&DrainingLabels {
                    otterdeployment: otterdeployment.clone(),
                    node: gone.clone(),
                });
            }
        }
        for d in draining {
            if let Some(count) = d.allocations {
                let labels = DrainingLabels {
                    otterdeployment: otterdeployment.clone(),
                    node: d.node.clone(),
                };
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                self.turn_draining_allocations
                    .get_or_create(&labels)
                    .set(count);
            }
        }
        if now.is_empty() {
            seen.remove(&otterdeployment);
        } else {
            seen.insert(otterdeployment, now);
        }
    }

    /// Set the reachable TURN nodes of `namespace/name`; `None` (TURN off, resource deleted)
    /// removes its series.
    pub fn set_turn_reachable(&self, namespace: &str, name: &str, nodes: Option<usize>) {
        let labels = DeploymentLabels {
            otterdeployment: format!("{namespace}/{name}"),
        };
        match nodes {
            Some(n) => {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                self.turn_reachable_nodes.get_or_create(&labels).set(n);
            }
            None => {
                self.turn_reachable_nodes.remove(&labels);
            }
        }
    }

    /// Count the children a reconcile left as they were.
    pub fn skipped(&self, skipped: &[(crate::kinds::Kind, u64)]) {
        for (kind, n) in skipped {
            self.applies_skipped
                .get_or_create(&KindLabels {
                    kind: kind.api_kind(),
                })
                .inc_by(*n);
        }
    }

    /// Record one reconcile.
    pub fn observe(&self, took: Duration, error_kind: Option<&str>) {
        self.duration.observe(took.as_secs_f64());
        let result = if error_kind.is_some() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        self.reconciliations
            .get_or_create(&ReconcileLabels { result })
            .inc();
        if let Some(kind) = error_kind {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A new metric of type `M`, registered as `name`: the registry keeps a clone, and clones share
/// one value.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// What `otter_turn_reachable_nodes` reports: the nodes where the operator's probe allocated a
/// relay (`status.turnReachability`); before the first probe, or with probing off, the TURN
/// nodes with a published address, bounded by the ready coturn pods; `None` with TURN off.
pub fn turn_nodes_serving(
    cr: &OtterDeployment,
    published: usize,
    status: &OtterDeploymentStatus,
) -> Option<usize> {
    if !cr.spec.turn.enabled {
        return None;
    }
    if !status.turn_reachability.is_empty() {
        return Some(
            status
                .turn_reachability
                .iter()
                .filter(|e| e.reachable)
                .count(),
        );
    }
    Some(published.min(usize::try_from(status.turn.ready).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_nodes_serving_needs_an_address_and_a_ready_pod() {
        let mut cr = crate::testing::cr();
        let mut status = OtterDeploymentStatus::default();
        status.turn.ready = 2;
        assert_eq!(turn_nodes_serving(&cr, 3, &status), Some(2));
        assert_eq!(turn_nodes_serving(&cr, 1, &status), Some(1));
        status.turn.ready = 0;
        assert_eq!(turn_nodes_serving(&cr, 3, &status), Some(0));
        // Once probed, the probe decides: one of two nodes allocated.
        status.turn.ready = 2;
        status.turn_reachability = ["a", "b"]
            .into_iter()
            .map(|n| crate::crd::TurnNodeReachability {
                node: n.into(),
                address: "192.0.2.1:3478".into(),
                reachable: n == "a",
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            })
            .collect();
        assert_eq!(turn_nodes_serving(&cr, 3, &status), Some(1));
        cr.spec.turn.enabled = false;
        assert_eq!(turn_nodes_serving(&cr, 3, &status), None);
    }

    #[test]
    fn exposes_reconcile_counts_errors_durations_and_leadership() {
        let m = Metrics::new();
        m.observe(Duration::from_millis(20), None);
        m.observe(Duration::from_millis(40), Some("apply"));
        m.leader.set(1);
        m.set_turn_reachable("ns", "a", Some(2));
        m.set_turn_reachable("ns", "b", Some(1));
        m.set_turn_reachable("ns", "b", None);
        let text = m.encode();
        assert!(!text.contains("ns/b"), "{text}");
        for line in [
            "otter_operator_reconciliations_total{result=\"Ok\"} 1",
            "otter_operator_reconciliations_total{result=\"Error\"} 1",
            "otter_operator_reconcile_errors_total{kind=\"apply\"} 1",
            "otter_operator_reconcile_duration_seconds_count 2",
            "otter_operator_status_writes_total 0",
            "otter_operator_applies_skipped_total{kind=\"Deployment\"} 0",
            "otter_operator_leader 1",
            "otter_turn_reachable_nodes{otterdeployment=\"ns/a\"} 2",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn drain_gauges_follow_the_status_and_forget_ended_drains() {
        let m = Metrics::new();
        let node = |n: &str, allocations| DrainingTurnNode {
            node: n.into(),
            pod: format!("turn-{n}"),
            deadline: None,
            allocations,
        };
        m.set_turn_draining("ns", "a", &[node("n1", Some(3)), node("n2", None)]);
        let text = m.encode();
        for line in [
            "otter_turn_draining_nodes{otterdeployment=\"ns/a\"} 2",
            "otter_turn_draining_allocations{otterdeployment=\"ns/a\",node=\"n1\"} 3",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("node=\"n2\""),
            "an unknown count has no series: {text}"
        );
        m.set_turn_draining("ns", "a", &[]);
        let text = m.encode();
        assert!(
            text.contains("otter_turn_draining_nodes{otterdeployment=\"ns/a\"} 0"),
            "{text}"
        );
        assert!(!text.contains("node=\"n1\""), "{text}");
    }
}
