//! TURN reachability: the operator allocates a relay on every published TURN address, as a
//! browser would, with a credential it mints from the TURN shared secret, and reports per node
//! whether that worked (`status.turnReachability`, the `TurnReachable` condition, Events).
//!
//! The I/O is thin ([`allocate`], behind the [`Prober`] trait so reconcile tests can answer for
//! it); what a set of results means for the status is pure ([`reachability`]).

pub mod allocate;
pub mod reachability;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::{BoxFuture, join_all};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::observed::TurnNode;
pub use allocate::Credential;

/// The id in the prober's usernames (`<expiry>:otter-probe`), so coturn's logs tell probes apart.
pub const PROBE_USER: &str = "otter-probe";
/// How long a probe credential is valid: it is used within seconds.
pub const PROBE_CREDENTIAL_TTL: Duration = Duration::from_secs(300);

/// What one Allocate on one address gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A relay was allocated (and freed again).
    Allocated {
        /// The relayed transport address coturn gave, when it said.
        relayed: Option<SocketAddr>,
    },
    /// The server answered with an error (401: credential refused, 486: quota reached, …).
    Refused {
        /// STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// No answer to any of the retransmissions.
    NoAnswer,
    /// ICMP port unreachable: the address is up but nothing listens on the port.
    PortUnreachable,
    /// The probe could not be made (no socket, an unencodable credential).
    Failed(String),
}

impl ProbeOutcome {
    /// A client could relay through this address.
    pub fn reachable(&self) -> bool {
        matches!(self, Self::Allocated { .. })
    }

    /// One stable line for the status: no relayed port, no timing, so a status written from
    /// the same outcome twice is the same status (nothing is written at rest).
    pub fn detail(&self) -> String {
        match self {
            Self::Allocated { .. } => "allocated a relay".to_string(),
            Self::Refused { code, reason } => {
                let hint = match code {
                    401 => {
                        ": the credential minted from the TURN Secret was refused (coturn runs \
                         with another shared secret or realm)"
                    }
                    486 => ": allocation quota reached (turn.quotas)",
                    508 => ": no relay port or bandwidth left (turn.relayPortRange, turn.quotas)",
                    _ => "",
                };
                format!("refused the Allocate with {code} {reason}{hint}")
            }
            // One message for both: routers rate-limit ICMP, so one address can give either
            // from one probe to the next, and the status must not flap with it.
            Self::NoAnswer | Self::PortUnreachable => {
                let total: Duration = allocate::RETRANSMITS.iter().sum();
                format!(
                    "no answer to a TURN Allocate over UDP within {} (dropped, or nothing \
                     listens on the port)",
                    humantime::format_duration(total)
                )
            }
            Self::Failed(e) => format!("probe failed: {e}"),
        }
    }
}

/// The result of probing one TURN node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProbe {
    /// Node name.
    pub node: String,
    /// The published address probed.
    pub address: SocketAddr,
    /// What happened.
    pub outcome: ProbeOutcome,
}

/// Makes one Allocate. The real one is [`UdpProber`]; reconcile tests answer for it.
pub trait Prober: Send + Sync {
    /// Allocate on `server` with `cred`.
    fn allocate<'a>(
        &'a self,
        server: SocketAddr,
        cred: &'a Credential,
    ) -> BoxFuture<'a, ProbeOutcome>;
}

/// TURN over UDP, with [`allocate::RETRANSMITS`].
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpProber;

impl Prober for UdpProber {
    fn allocate<'a>(
        &'a self,
        server: SocketAddr,
        cred: &'a Credential,
    ) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(allocate::allocate(server, cred, &allocate::RETRANSMITS))
    }
}

/// A TURN REST API credential for `id` valid until `expiry` (unix seconds): what coturn's
/// `use-auth-secret` accepts and what the signaling server mints for clients.
pub fn mint(secret: &[u8], id: &str, expiry: u64) -> Credential {
    let username = format!("{expiry}:{id}");
    // HMAC takes keys of any length, so this never refuses; an empty key is still a key.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        return Credential {
            username,
            password: String::new(),
        };
    };
    mac.update(username.as_bytes());
    let password = STANDARD.encode(mac.finalize().into_bytes());
    Credential { username, password }
}

/// Probe every node on `port` at once, with one fresh credential.
pub async fn probe_nodes(
    prober: &Arc<dyn Prober>,
    nodes: &[TurnNode],
    port: u16,
    secret: &[u8],
) -> Vec<NodeProbe> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let cred = mint(secret, PROBE_USER, (now + PROBE_CREDENTIAL_TTL).as_secs());
    let probes = nodes.iter().map(|n| {
        let address = SocketAddr::new(n.public_ip, port);
        let cred = &cred;
        async move {
            NodeProbe {
                node: n.name.clone(),
                address,
                outcome: prober.allocate(address, cred).await,
            }
        }
    });
    join_all(probes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector as the signaling server's minting (openssl:
    /// `printf '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64`).
    #[test]
    fn mint_matches_the_signaling_servers_vector() {
        let c = mint(b"north", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn details_say_what_to_fix_and_stay_stable() {
        let refused = ProbeOutcome::Refused {
            code: 401,
            reason: "Unauthorized".into(),
        };
        assert!(
            refused.detail().contains("401 Unauthorized"),
            "{}",
            refused.detail()
        );
        assert!(refused.detail().contains("shared secret"));
        assert!(!refused.reachable());
        let quota = ProbeOutcome::Refused {
            code: 486,
            reason: "Allocation Quota Reached".into(),
        };
        assert!(quota.detail().contains("turn.quotas"));
        let a = ProbeOutcome::Allocated {
            relayed: Some("203.0.113.7:50000".parse().unwrap()),
        };
        let b = ProbeOutcome::Allocated {
            relayed: Some("203.0.113.7:50002".parse().unwrap()),
        };
        assert!(a.reachable());
        assert_eq!(
            a.detail(),
            b.detail(),
            "the relayed port never reaches the status"
        );
        assert!(ProbeOutcome::NoAnswer.detail().contains("3s 500ms"));
    }
}
