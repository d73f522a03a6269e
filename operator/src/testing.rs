//! Fixtures for unit tests.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, Node, NodeAddress, NodeCondition, NodeStatus, Pod, PodSpec, PodStatus, Secret,
};
use kube::api::ObjectMeta;

use crate::crd::{OtterDeployment, OtterDeploymentSpec};
use crate::meta::{Component, labels};
use crate::observed::{FreshSecrets, Images, Observed, TurnNode};

/// `calls/demo` with every field defaulted.
pub fn cr() -> OtterDeployment {
    let mut cr = OtterDeployment::new("demo", OtterDeploymentSpec::default());
    cr.metadata.namespace = Some("calls".into());
    cr.metadata.uid = Some("0b7a7f7e-1111-2222-3333-444455556666".into());
    cr.metadata.generation = Some(3);
    cr
}

/// Observed state with two TURN nodes and deterministic fresh secrets.
pub fn observed() -> Observed {
    Observed {
        images: Images::default(),
        turn_nodes: vec![
            TurnNode {
                name: "node-a".into(),
                public_ip: "203.0.113.7".parse().unwrap(),
            },
            TurnNode {
                name: "node-b".into(),
                public_ip: "2001:db8::5".parse().unwrap(),
            },
        ],
        draining_turn_nodes: Vec::new(),
        turn_neighbours: Default::default(),
        secrets: BTreeMap::new(),
        fresh: FreshSecrets {
            turn: "fresh-turn".into(),
            token: "fresh-token".into(),
            redis_password: "fresh-redis".into(),
        },
        turn_next_confirmed: false,
        unix_now: 1_700_000_000,
    }
}

/// A Secret in `calls` with the given string data.
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("calls".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A Node with addresses `(type, address)` and a Ready condition.
pub fn node(name: &str, ready: bool, addresses: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("otter.dev/turn".into(), "true".into())])),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A TURN pod of `cr` on `node` (terminating or not), with the fields the API server fills in
/// that the operator does not read (managedFields, containers, conditions).
pub fn turn_pod(cr: &OtterDeployment, name: &str, node: &str, terminating: bool) -> Pod {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cr.metadata.namespace.clone(),
            labels: Some(labels(cr, Component::Turn)),
            annotations: Some(BTreeMap::from([("note".into(), "x".repeat(100))])),
            deletion_timestamp: terminating
                .then(|| Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "coturn".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            host_ip: Some("10.0.0.9".into()),
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}
