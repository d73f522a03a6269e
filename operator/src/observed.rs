//! What the operator knows about the world when it builds the desired state: the TURN nodes,
//! the Secrets that already exist, and its own defaults.
//!
//! Builders read only this and the `OtterDeployment`, so they are pure and unit-testable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Secret};
use rand::RngCore;

/// Images the operator runs when the spec names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// otter-signaling.
    pub signaling: String,
    /// coturn.
    pub turn: String,
    /// Redis.
    pub redis: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            signaling: format!(
                "ghcr.io/otter-dev/otter-signaling:{}",
                env!("CARGO_PKG_VERSION")
            ),
            turn: "docker.io/coturn/coturn:4.6.3".to_string(),
            redis: "docker.io/library/redis:7.4-alpine".to_string(),
        }
    }
}

/// A node that runs TURN, with the address clients reach it on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TurnNode {
    /// Node name.
    pub name: String,
    /// The address published to clients: ExternalIP, else InternalIP.
    pub public_ip: IpAddr,
}

impl TurnNode {
    /// The TURN node a Node stands for: `None` when it is not Ready or has no IP address.
    pub fn from_node(node: &Node) -> Option<Self> {
        let name = node.metadata.name.clone()?;
        let status = node.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return None;
        }
        let addresses = status.addresses.as_deref().unwrap_or_default();
        let find = |kind: &str| {
            addresses
                .iter()
                .filter(|a| a.type_ == kind)
                .find_map(|a| a.address.parse::<IpAddr>().ok())
        };
        let public_ip = find("ExternalIP").or_else(|| find("InternalIP"))?;
        Some(Self { name, public_ip })
    }
}

/// A TURN node whose pod is terminating: no longer published, still relaying what it carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DrainingNode {
    /// Node name.
    pub node: String,
    /// Its published address while it still matches the TURN selector (kept in the node
    /// address ConfigMap, so the replacement pod finds it at once).
    pub address: Option<IpAddr>,
    /// The terminating pod.
    pub pod: String,
    /// When the pod exits at the latest: its deletion time plus its grace period.
    pub deadline: Option<k8s_openapi::jiff::Timestamp>,
    /// The node address the pod binds (`status.hostIP`): where its TURN exporter listens.
    pub host_ip: Option<IpAddr>,
    /// Relay allocations it still holds, when its exporter said (`reconcile::drain`).
    pub allocations: Option<u64>,
}

/// Secret values generated for this reconcile, used only when the Secret does not exist yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreshSecrets {
    /// Candidate TURN shared secret.
    pub turn: String,
    /// Candidate room-token signing secret.
    pub token: String,
    /// Candidate managed-Redis password.
    pub redis_password: String,
}

impl FreshSecrets {
    /// 32 bytes each from a CSPRNG (rand's thread RNG, ChaCha seeded from the OS), hex encoded.
    pub fn generate() -> Self {
        fn one() -> String {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        }
        Self {
            turn: one(),
            token: one(),
            redis_password: one(),
        }
    }
}

/// Everything a builder may look at besides the resource itself.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Default images.
    pub images: Images,
    /// Ready nodes matching `spec.turn.nodeSelector` and not draining, sorted by name: the
    /// nodes published to clients.
    pub turn_nodes: Vec<TurnNode>,
    /// Nodes whose TURN pod is terminating (and that have no other TURN pod), sorted by name.
    pub draining_turn_nodes: Vec<DrainingNode>,
    /// Other OtterDeployments (`namespace/name`) with a TURN pod placed on one of these TURN
    /// nodes: they hold their host ports there.
    pub turn_neighbours: BTreeSet<String>,
    /// Secrets that exist in the namespace, by name (generated ones and the user's).
    pub secrets: BTreeMap<String, Secret>,
    /// Values for generated Secrets that do not exist yet.
    pub fresh: FreshSecrets,
    /// Every published TURN node accepts the pending TURN secret (`next` in `<name>-turn-keys`):
    /// a probe Allocate with a credential minted from it succeeded on each (`build::turn_keys`).
    pub turn_next_confirmed: bool,
    /// The time of this reconcile, unix seconds (when a previous TURN secret expires).
    pub unix_now: u64,
}

impl Default for FreshSecrets {
    fn default() -> Self {
        Self::generate()
    }
}

impl Observed {
    /// A key of an existing Secret, when present and non-empty.
    pub fn secret_value(&self, name: &str, key: &str) -> Option<&[u8]> {
        let secret = self.secrets.get(name)?;
        let value = secret.data.as_ref()?.get(key)?;
        (!value.0.is_empty()).then_some(value.0.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;

    #[test]
    fn turn_node_prefers_external_ip_then_internal_ip() {
        let n = node(
            "a",
            true,
            &[("InternalIP", "10.0.0.5"), ("ExternalIP", "203.0.113.7")],
        );
        assert_eq!(
            TurnNode::from_node(&n).unwrap().public_ip.to_string(),
            "203.0.113.7"
        );
        let n = node(
            "b",
            true,
            &[("Hostname", "b.internal"), ("InternalIP", "10.0.0.6")],
        );
        assert_eq!(
            TurnNode::from_node(&n).unwrap().public_ip.to_string(),
            "10.0.0.6"
        );
    }

    #[test]
    fn turn_node_skips_unready_and_addressless_nodes() {
        assert!(TurnNode::from_node(&node("a", false, &[("ExternalIP", "203.0.113.7")])).is_none());
        assert!(TurnNode::from_node(&node("b", true, &[("Hostname", "b")])).is_none());
        assert!(TurnNode::from_node(&node("c", true, &[("ExternalIP", "not-an-ip")])).is_none());
    }

    #[test]
    fn secret_value_ignores_missing_and_empty_keys() {
        let mut obs = Observed::default();
        obs.secrets.insert(
            "s".into(),
            crate::testing::secret("s", &[("a", "x"), ("empty", "")]),
        );
        assert_eq!(obs.secret_value("s", "a"), Some(b"x".as_slice()));
        assert_eq!(obs.secret_value("s", "empty"), None);
        assert_eq!(obs.secret_value("s", "b"), None);
        assert_eq!(obs.secret_value("t", "a"), None);
    }
}
