//! Step 1: read what the builders need from the cluster into `Observed` — the Ready TURN nodes
//! (from the Node and TURN pod watches' stores, no request) and the Secrets that exist
//! (generated ones are kept, user ones are read by name).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};

use crate::build::secrets::{generated_secret_names, user_secret_names};
use crate::crd::OtterDeployment;
use crate::error::{Error, request};
use crate::meta::{Component, labels};
use crate::observed::{DrainingNode, FreshSecrets, Images, Observed, TurnNode};
use crate::reconcile::cache;
use crate::reconcile::drain::split_nodes;
use crate::reconcile::watch::turn_pod_owner;

/// Whether `labels` hold every pair of `selector` (an empty selector selects everything), as a
/// label selector of `k=v` pairs does on the API server.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Read the cluster for one resource in namespace `ns`. `turn`: the TURN watches' stores (none
/// before the controller has started them: an error when TURN is on).
pub async fn observe(
    client: &Client,
    images: &Images,
    turn: Option<&cache::Turn>,
    cr: &OtterDeployment,
    ns: &str,
) -> Result<Observed, Error> {
    let (mut turn_nodes, mut draining_turn_nodes) = (Vec::new(), Vec::new());
    let mut turn_neighbours = BTreeSet::new();
    if cr.spec.turn.enabled {
        let stores = turn.ok_or(Error::NotListed("Node"))?;
        let (nodes, pods) = stores.listed().await?;
        (turn_nodes, draining_turn_nodes) = turn_nodes_of(cr, ns, &nodes, &pods);
        turn_neighbours = neighbours_on(cr, ns, &turn_nodes, &pods);
    }
    let mut names = generated_secret_names(cr);
    names.extend(user_secret_names(cr));
    let secrets = read_secrets(client, ns, names).await?;
    Ok(Observed {
        images: images.clone(),
        turn_nodes,
        draining_turn_nodes,
        turn_neighbours,
        secrets,
        fresh: FreshSecrets::generate(),
        turn_next_confirmed: false,
        unix_now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    })
}

/// The Secrets of `names` that exist, read at the same time. A generated Secret is read by
/// name, never from a cache: a stale copy would generate fresh values over the ones the pods
/// already use (a rotated TURN secret, say). Read one after another, they were most of a
/// reconcile's wait on a busy API server.
async fn read_secrets(
    client: &Client,
    ns: &str,
    names: Vec<String>,
) -> Result<BTreeMap<String, Secret>, Error> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let reads = names.into_iter().map(|name| {
        let api = &api;
        async move {
            match api.get_opt(&name).await {
                Ok(found) => Ok(found.map(|s| (name, s))),
                Err(e) => Err(Error::Observe(request(
                    format!("reading Secret {ns}/{name}"),
                    e,
                ))),
            }
        }
    });
    let found = futures::future::try_join_all(reads).await?;
    Ok(found.into_iter().flatten().collect())
}

/// The Ready TURN nodes of `cr` (sorted) split into the published and the draining ones, from
/// every Node and TURN pod the watches hold: the nodes its `turn.nodeSelector` selects, its own
/// TURN pods (by their labels, in `ns`), terminating ones included.
pub fn turn_nodes_of(
    cr: &OtterDeployment,
    ns: &str,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
) -> (Vec<TurnNode>, Vec<DrainingNode>) {
    let mut ready: Vec<TurnNode> = nodes
        .iter()
        .filter(|n| selects(&cr.spec.turn.node_selector, n.labels()))
        .filter_map(|n| TurnNode::from_node(n))
        .collect();
    ready.sort();
    let own = labels(cr, Component::Turn);
    let pods: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns) && selects(&own, p.labels()))
        .cloned()
        .collect();
    split_nodes(ready, &pods)
}

/// The other OtterDeployments (`namespace/name`) whose TURN pods are placed on one of `nodes`
/// and not terminating: the scheduler counts their host ports as taken there.
pub fn neighbours_on(
    cr: &OtterDeployment,
    ns: &str,
    nodes: &[TurnNode],
    pods: &[Arc<Pod>],
) -> BTreeSet<String> {
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let me = ObjectRef::from_obj(cr).within(ns);
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            node.is_some_and(|n| names.contains(n))
        })
        .filter_map(|p| turn_pod_owner(p))
        .filter(|owner| *owner != me)
        .map(|owner| format!("{}/{}", owner.namespace.unwrap_or_default(), owner.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cr, node, turn_pod};

    #[test]
    fn a_selector_holds_when_every_pair_matches() {
        let selector = cr().spec.turn.node_selector;
        let mut labels = selector.clone();
        assert!(selects(&selector, &labels));
        labels.insert("zone".into(), "a".into());
        assert!(selects(&selector, &labels), "other labels do not count");
        labels.insert("otter.dev/turn".into(), "false".into());
        assert!(!selects(&selector, &labels));
        assert!(!selects(&selector, &BTreeMap::new()));
        assert!(selects(&BTreeMap::new(), &labels), "empty selects all");
    }

    #[test]
    fn turn_nodes_come_from_the_stores_selected_ready_and_split_by_own_pods() {
        let cr = cr();
        let mut unlabelled = node("n-unlabelled", true, &[("ExternalIP", "198.51.100.3")]);
        unlabelled.metadata.labels = None;
        let nodes: Vec<Arc<Node>> = [
            node("n-b", true, &[("ExternalIP", "198.51.100.2")]),
            node("n-a", true, &[("InternalIP", "10.0.0.1")]),
            node("n-not-ready", false, &[("ExternalIP", "198.51.100.4")]),
            unlabelled,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let mut other_cr = cr.clone();
        other_cr.metadata.name = Some("other".into());
        let mut elsewhere = turn_pod(&cr, "t-elsewhere", "n-a", true);
        elsewhere.metadata.namespace = Some("other-ns".into());
        let pods: Vec<Arc<Pod>> = [
            turn_pod(&cr, "t-b", "n-b", true),
            turn_pod(&cr, "t-a", "n-a", false),
            // Terminating, but another resource's, or in another namespace: not ours.
            turn_pod(&other_cr, "o-a", "n-a", true),
            elsewhere,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();

        let (published, draining) = turn_nodes_of(&cr, "calls", &nodes, &pods);
        let names: Vec<&str> = published.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n-a"]);
        assert_eq!(published[0].public_ip.to_string(), "10.0.0.1");
        assert_eq!(draining.len(), 1, "{draining:?}");
        assert_eq!(
            (draining[0].node.as_str(), draining[0].pod.as_str()),
            ("n-b", "t-b")
        );
        assert_eq!(
            draining[0].address.map(|a| a.to_string()).as_deref(),
            Some("198.51.100.2")
        );

        let (published, draining) = turn_nodes_of(&cr, "calls", &nodes, &[]);
        assert_eq!(published.len(), 2, "sorted, no pod: none draining");
        assert!(published[0] < published[1]);
        assert!(draining.is_empty());
    }

    #[test]
    fn neighbours_are_the_others_placed_on_these_turn_nodes() {
        let cr = cr();
        let named = |name: &str| {
            let mut c = cr.clone();
            c.metadata.name = Some(name.into());
            c
        };
        let mut other_ns = turn_pod(&named("far"), "f-a", "n-a", false);
        other_ns.metadata.namespace = Some("other-ns".into());
        let mut pending = turn_pod(&named("pending"), "p", "n-a", false);
        pending.spec.as_mut().unwrap().node_name = None;
        let pods: Vec<Arc<Pod>> = [
            turn_pod(&cr, "mine", "n-a", false),
            turn_pod(&named("holder"), "h-a", "n-a", false),
            turn_pod(&named("leaving"), "l-a", "n-a", true),
            turn_pod(&named("other-node"), "o-c", "n-c", false),
            other_ns,
            pending,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let nodes = [TurnNode {
            name: "n-a".into(),
            public_ip: "10.0.0.1".parse().unwrap(),
        }];
        let found: Vec<String> = neighbours_on(&cr, "calls", &nodes, &pods)
            .into_iter()
            .collect();
        // Host ports are node-wide: another namespace's pod takes them too.
        assert_eq!(found, ["calls/holder", "other-ns/far"]);
    }
}
