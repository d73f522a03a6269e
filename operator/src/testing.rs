//! Fixtures for unit tests.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Secret};
use kube::api::ObjectMeta;

use crate::crd::{OtterDeployment, OtterDeploymentSpec};
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
