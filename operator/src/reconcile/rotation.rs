//! Between observe and build: does every TURN pod accept the TURN secret that waits to be
//! minted with (`next` in `<name>-turn-keys`, see `build::turn_keys`)? The operator asks coturn
//! itself: a probe Allocate with a credential minted from that value on every published TURN
//! node. Only when each allocates does signaling switch to it, so no client ever gets a
//! credential a TURN node would refuse.

use std::time::Duration;

use crate::build::turn_keys::{TurnKeys, turn_keys_source};
use crate::crd::OtterDeployment;
use crate::observed::Observed;
use crate::probe;

/// How soon a reconcile comes back while a rotation waits for the TURN pods (the kubelet
/// updates their mounted keys within about a minute, the agents look every few seconds).
pub const PENDING_REQUEUE: Duration = Duration::from_secs(10);

/// The pending TURN secret, when the observed keys have one.
pub fn pending(cr: &OtterDeployment, obs: &Observed) -> Option<Vec<u8>> {
    let src = turn_keys_source(cr)?;
    TurnKeys::observed(obs, &src.name)?.next
}

/// Whether every published TURN node accepts the pending secret. With no published node there
/// is nobody to refuse it; with the probe off (`turn.probe.enabled: false`) the operator cannot
/// know, and switches at once (the rotation is then only as ordered as the kubelet's updates).
pub async fn confirm(
    cr: &OtterDeployment,
    prober: &std::sync::Arc<dyn probe::Prober>,
    obs: &Observed,
) -> bool {
    let Some(next) = pending(cr, obs) else {
        return false;
    };
    let turn = &cr.spec.turn;
    if !turn.probe.enabled || obs.turn_nodes.is_empty() {
        return true;
    }
    let Ok(port) = u16::try_from(turn.port) else {
        return false;
    };
    let probes = probe::probe_nodes(prober, &obs.turn_nodes, port, &next).await;
    let refused: Vec<&str> = probes
        .iter()
        .filter(|p| !p.outcome.reachable())
        .map(|p| p.node.as_str())
        .collect();
    if refused.is_empty() {
        tracing::info!(
            nodes = probes.len(),
            "every TURN node accepts the new TURN secret: signaling mints with it now"
        );
        true
    } else {
        tracing::info!(
            ?refused,
            "new TURN secret not accepted by every TURN node yet"
        );
        false
    }
}
