//! The reconcile with TURN probes: when it probes, with what credential, and what the answers
//! do to the status and the Events. The Allocates are answered here; the prober itself is
//! tested against the real coturn in `operator/tests/it/turn_probe.rs`.

use std::net::SocketAddr;

use futures::future::BoxFuture;

use super::*;
use crate::probe::{Credential, ProbeOutcome, Prober, mint};
use crate::reconcile::status::DEGRADED;

/// The generated TURN Secret's value in the mock world.
pub const TURN_SECRET: &str = "mock-turn-secret";

/// The generated TURN Secret, as the API server answers a GET of it.
pub fn turn_secret() -> Value {
    use base64::Engine;
    let value = base64::engine::general_purpose::STANDARD.encode(TURN_SECRET);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "demo-turn-secret", "namespace": "calls"},
           "data": {"turn-secret": value}})
}

/// Answers every Allocate with one outcome and records what it was asked.
pub struct Answering {
    outcome: ProbeOutcome,
    asked: Mutex<Vec<(SocketAddr, Credential)>>,
}

pub fn answering(outcome: ProbeOutcome) -> Arc<dyn Prober> {
    Arc::new(Answering {
        outcome,
        asked: Mutex::new(Vec::new()),
    })
}

impl Prober for Answering {
    fn allocate<'a>(
        &'a self,
        server: SocketAddr,
        cred: &'a Credential,
    ) -> BoxFuture<'a, ProbeOutcome> {
        self.asked.lock().unwrap().push((server, cred.clone()));
        let outcome = self.outcome.clone();
        Box::pin(async move { outcome })
    }
}

fn ready_world() -> World {
    World {
        ready: true,
        turn_secret: true,
        ..World::default()
    }
}

fn condition_of(status: &OtterDeploymentStatus, t: &str) -> (String, String, String) {
    let c = find_condition(status, t).unwrap_or_else(|| panic!("no {t} in {status:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn rolled_out_turn_is_probed_with_a_credential_from_the_turn_secret() {
    let prober = Arc::new(Answering {
        outcome: ProbeOutcome::Allocated { relayed: None },
        asked: Mutex::new(Vec::new()),
    });
    let (result, calls) = run_probed(&seen_cr(), ready_world(), prober.clone()).await;
    assert!(result.is_ok(), "{result:?}");
    let asked = prober.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "one Allocate per TURN node: {asked:?}");
    let (server, cred) = &asked[0];
    assert_eq!(server.to_string(), "203.0.113.7:3478");
    let (expiry, user) = cred.username.split_once(':').unwrap();
    assert_eq!(user, "otter-probe");
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(*cred, mint(TURN_SECRET.as_bytes(), "otter-probe", expiry));
    let status = status_written(&calls).unwrap();
    let (reachable, reason, message) = condition_of(&status, "TurnReachable");
    assert_eq!(
        (reachable.as_str(), reason.as_str()),
        ("True", "TurnAllocated")
    );
    assert!(message.contains("node-a"), "{message}");
    assert_eq!(status.turn_reachability.len(), 1);
    assert!(status.turn_reachability[0].reachable);
    assert_eq!(ready_reason(&status), "Available");
}

#[tokio::test]
async fn nothing_is_probed_before_turn_is_rolled_out_or_when_the_probe_is_off() {
    let prober = Arc::new(Answering {
        outcome: ProbeOutcome::NoAnswer,
        asked: Mutex::new(Vec::new()),
    });
    let not_ready = World {
        turn_secret: true,
        ..World::default()
    };
    let (_, calls) = run_probed(&seen_cr(), not_ready, prober.clone()).await;
    let status = status_written(&calls).unwrap();
    assert!(
        find_condition(&status, "TurnReachable").is_none(),
        "{status:?}"
    );
    let mut off = seen_cr();
    off.spec.turn.probe.enabled = false;
    let (result, calls) = run_probed(&off, ready_world(), prober.clone()).await;
    let status = status_written(&calls).unwrap();
    assert!(status.turn_reachability.is_empty());
    assert_eq!(ready_reason(&status), "Available");
    assert!(prober.asked.lock().unwrap().is_empty());
    // Nothing to probe and every input watched: at rest only the safety-net resync (10 h here).
    assert_eq!(
        result.unwrap(),
        Action::requeue(Duration::from_secs(10 * 3600))
    );
}

#[tokio::test]
async fn no_turn_node_answering_is_said_with_an_event_and_leaves_ready_alone() {
    let refused = ProbeOutcome::Refused {
        code: 401,
        reason: "Unauthorized".into(),
    };
    let (result, calls) = run_probed(&seen_cr(), ready_world(), answering(refused)).await;
    assert!(result.is_ok(), "{result:?}");
    let status = status_written(&calls).unwrap();
    let (reachable, reason, message) = condition_of(&status, "TurnReachable");
    assert_eq!(
        (reachable.as_str(), reason.as_str()),
        ("False", "TurnUnreachable")
    );
    assert!(message.contains("1 of 1 TURN nodes"), "{message}");
    assert!(message.contains("node-a (203.0.113.7:3478)"), "{message}");
    assert!(message.contains("401 Unauthorized"), "{message}");
    // The probe's vantage point is not the clients': Ready and Degraded do not follow it.
    assert_eq!(ready_reason(&status), "Available");
    let (degraded, _, _) = condition_of(&status, DEGRADED);
    assert_eq!(degraded, "False");
    let reasons = event_reasons(&calls);
    assert!(
        reasons.contains(&"TurnNodeUnreachable".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_node_that_answered_before_is_probed_during_a_rollout_and_tells_when_it_stops() {
    // Once probed, the probe keeps running while TURN pods roll (a deleted pod shows).
    let (_, calls) = run_probed(
        &seen_cr(),
        ready_world(),
        answering(ProbeOutcome::Allocated { relayed: None }),
    )
    .await;
    let mut cr = seen_cr();
    cr.status = status_written(&calls);
    let rolling = World {
        turn_secret: true,
        ..World::default()
    };
    let (_, calls) = run_probed(&cr, rolling, answering(ProbeOutcome::PortUnreachable)).await;
    let status = status_written(&calls).unwrap();
    let (reachable, _, message) = condition_of(&status, "TurnReachable");
    assert_eq!(reachable, "False");
    assert!(message.contains("nothing listens on the port"), "{message}");
    assert_eq!(ready_reason(&status), "RollingOut");
    assert!(event_reasons(&calls).contains(&"TurnNodeUnreachable".to_string()));
}

/// `demo-turn-keys` as the API server answers a GET of it: string values base64-encoded.
fn turn_keys(data: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = base64::engine::general_purpose::STANDARD.encode(v);
            (k.to_string(), Value::String(v))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "demo-turn-keys", "namespace": "calls"}, "data": data})
}

/// The string data of the keys Secret this reconcile applied.
fn applied_keys(calls: &[Call]) -> std::collections::BTreeMap<String, String> {
    use base64::Engine;
    let call = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.path.ends_with("/secrets/demo-turn-keys"))
        .expect("the keys Secret is applied");
    let data = call.body["data"].as_object().expect("data");
    data.iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_new_turn_secret_waits_as_next_until_every_node_allocates_with_it() {
    // The TURN Secret holds a new value; signaling still mints with the old one.
    let rotating = || World {
        turn_keys: Some(turn_keys(&[("turn-secret", "old-value")])),
        ..ready_world()
    };
    let prober = Arc::new(Answering {
        outcome: ProbeOutcome::NoAnswer,
        asked: Mutex::new(Vec::new()),
    });
    let (result, calls) = run_probed(&seen_cr(), rotating(), prober.clone()).await;
    // Phase 1: the new value is written as next; the probe of reachability mints from the
    // value in use, and the reconcile comes back soon.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
    let keys = applied_keys(&calls);
    assert_eq!(keys["turn-secret"], "old-value");
    assert_eq!(keys["next"], TURN_SECRET);
    let asked = prober.asked.lock().unwrap().clone();
    let (expiry, _) = asked[0].1.username.split_once(':').unwrap();
    assert_eq!(
        asked[0].1,
        mint(b"old-value", "otter-probe", expiry.parse().unwrap())
    );

    // A node that does not allocate with next holds the switch.
    let pending = World {
        turn_keys: Some(turn_keys(&[
            ("turn-secret", "old-value"),
            ("next", TURN_SECRET),
        ])),
        ..ready_world()
    };
    let (_, calls) = run_probed(&seen_cr(), pending.clone(), prober.clone()).await;
    assert_eq!(applied_keys(&calls)["turn-secret"], "old-value");

    // Every node allocates with next: signaling mints with it, the old value stays accepted.
    let allocating = answering(ProbeOutcome::Allocated { relayed: None });
    let (result, calls) = run_probed(&seen_cr(), pending, allocating).await;
    let keys = applied_keys(&calls);
    assert_eq!(keys["turn-secret"], TURN_SECRET);
    assert_eq!(keys["previous"], "old-value");
    assert!(!keys.contains_key("next"), "{keys:?}");
    let until: u64 = keys["previous-until"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // credentialTtl (default 6h) plus the 10-minute margin.
    assert!(
        until >= now + 6 * 3600 + 600 - 60 && until <= now + 6 * 3600 + 600,
        "{until}"
    );
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
}
