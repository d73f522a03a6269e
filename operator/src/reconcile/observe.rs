//! Step 1: read what the builders need from the cluster into `Observed` — the Ready TURN nodes
//! and the Secrets that exist (generated ones are kept, user ones are read).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};

use crate::build::secrets::{generated_secret_names, user_secret_names};
use crate::crd::OtterDeployment;
use crate::error::{Error, request};
use crate::meta::{Component, labels};
use crate::observed::{FreshSecrets, Images, Observed, TurnNode};
use crate::reconcile::drain::split_nodes;

/// `k=v,k2=v2` for a label map.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Read the cluster for one resource in namespace `ns`.
pub async fn observe(
    client: &Client,
    images: &Images,
    cr: &OtterDeployment,
    ns: &str,
) -> Result<Observed, Error> {
    let (mut turn_nodes, mut draining_turn_nodes) = (Vec::new(), Vec::new());
    if cr.spec.turn.enabled {
        let params = ListParams::default().labels(&selector_string(&cr.spec.turn.node_selector));
        let nodes = Api::<Node>::all(client.clone())
            .list(&params)
            .await
            .map_err(|e| Error::Observe(request("listing TURN nodes", e)))?;
        let mut ready: Vec<TurnNode> = nodes.items.iter().filter_map(TurnNode::from_node).collect();
        ready.sort();
        (turn_nodes, draining_turn_nodes) = split_nodes(ready, &turn_pods(client, cr, ns).await?);
    }
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let mut secrets = BTreeMap::new();
    let mut names = generated_secret_names(cr);
    names.extend(user_secret_names(cr));
    for name in names {
        // A generated Secret is read by name, never from a cache: missing it would generate
        // fresh values over the ones the pods already use.
        let found = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::Observe(request(format!("reading Secret {ns}/{name}"), e)))?;
        if let Some(s) = found {
            secrets.insert(name, s);
        }
    }
    Ok(Observed {
        images: images.clone(),
        turn_nodes,
        draining_turn_nodes,
        secrets,
        fresh: FreshSecrets::generate(),
        turn_next_confirmed: false,
        unix_now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    })
}

/// The TURN pods of this resource (by their labels), terminating ones included.
async fn turn_pods(client: &Client, cr: &OtterDeployment, ns: &str) -> Result<Vec<Pod>, Error> {
    let params = ListParams::default().labels(&selector_string(&labels(cr, Component::Turn)));
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .map_err(|e| Error::Observe(request(format!("listing TURN pods in {ns}"), e)))?;
    Ok(pods.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cr;

    #[test]
    fn selector_string_joins_labels() {
        let cr = cr();
        assert_eq!(
            selector_string(&cr.spec.turn.node_selector),
            "otter.dev/turn=true"
        );
    }
}
