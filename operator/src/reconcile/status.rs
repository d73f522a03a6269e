//! Step 5: status as a pure function of the resource, what was observed, the children as just
//! applied and the problems of this reconcile. kstatus conventions: `Ready`, `Progressing`, `Degraded` conditions carrying
//! `observedGeneration`; a condition's `lastTransitionTime` only moves when its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::build::signaling::{ice_servers, min_replicas};
use crate::crd::{
    ComponentStatus, OtterDeployment, OtterDeploymentStatus, RedisMode, ServiceType,
    TurnNodeReachability,
};
use crate::desired::Applied;
use crate::meta::child_name;
use crate::observed::Observed;
use crate::probe::NodeProbe;
use crate::probe::reachability::{self, TURN_REACHABLE};
use crate::reconcile::ports::PortClash;

/// Condition types.
pub const READY: &str = "Ready";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// Why a condition has its status. One list, shared by status, Events and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Ready: everything serves.
    Available,
    /// Children are being created.
    Creating,
    /// A new template is rolling out.
    RollingOut,
    /// `signaling.replicas` is 0.
    ScaledToZero,
    /// Rolled out, yet no pod is ready.
    NotServing,
    /// A write (apply, prune) failed, or the spec cannot be built.
    ApplyFailed,
    /// A Secret the spec names is missing, or lacks the key.
    SecretNotFound,
    /// No Ready node matches the TURN node selector.
    NoTurnNodes,
    /// Another OtterDeployment's TURN holds the port on the same nodes (host networking).
    TurnPortInUse,
    /// Progressing=False.
    RolloutComplete,
    /// Degraded=False.
    AsExpected,
    /// TurnReachable=True: every published TURN address allocated a relay.
    TurnAllocated,
    /// TurnReachable=False: a published TURN address does not allocate a relay.
    TurnUnreachable,
}

impl Reason {
    /// The condition's `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Creating => "Creating",
            Self::RollingOut => "RollingOut",
            Self::ScaledToZero => "ScaledToZero",
            Self::NotServing => "NotServing",
            Self::ApplyFailed => "ApplyFailed",
            Self::SecretNotFound => "SecretNotFound",
            Self::NoTurnNodes => "NoTurnNodes",
            Self::TurnPortInUse => "TurnPortInUse",
            Self::RolloutComplete => "RolloutComplete",
            Self::AsExpected => "AsExpected",
            Self::TurnAllocated => "TurnAllocated",
            Self::TurnUnreachable => "TurnUnreachable",
        }
    }

    /// Waiting that needs no one's attention (a Normal Event, not a Warning).
    pub fn is_normal(self) -> bool {
        matches!(
            self,
            Self::Available
                | Self::Creating
                | Self::RollingOut
                | Self::RolloutComplete
                | Self::TurnAllocated
        )
    }

    /// Every reason (to parse one back from a written status).
    pub const ALL: [Reason; 13] = [
        Self::Available,
        Self::Creating,
        Self::RollingOut,
        Self::ScaledToZero,
        Self::NotServing,
        Self::ApplyFailed,
        Self::SecretNotFound,
        Self::NoTurnNodes,
        Self::TurnPortInUse,
        Self::RolloutComplete,
        Self::AsExpected,
        Self::TurnAllocated,
        Self::TurnUnreachable,
    ];

    /// The reason a condition string names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What went wrong in this reconcile, besides what the children's status shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// The first failed write, if any.
    pub apply_error: Option<String>,
    /// Missing user Secrets or keys.
    pub secret_problems: Vec<String>,
    /// An older OtterDeployment's TURN holding one of this one's host ports on its nodes.
    pub port_clash: Option<PortClash>,
    /// This reconcile's TURN reachability probes; `None` when nothing was probed.
    pub turn_probes: Option<Vec<NodeProbe>>,
}

/// One component's rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rollout {
    counts: ComponentStatus,
    /// Everything at the latest template and ready.
    done: bool,
    /// The object does not exist yet, or its controller has not reported on it yet.
    missing: bool,
}

fn signaling_rollout(cr: &OtterDeployment, applied: &Applied) -> Rollout {
    let Some(d) = applied.deployments.first() else {
        return Rollout {
            counts: ComponentStatus {
                desired: min_replicas(cr),
                ready: 0,
            },
            done: false,
            missing: true,
        };
    };
    let observed = d.spec.as_ref().and_then(|s| s.replicas);
    // Under autoscaling the HPA sets the count, and never below its minimum.
    let desired = match observed {
        Some(n) if cr.spec.signaling.autoscaling.enabled => n.max(min_replicas(cr)),
        Some(n) => n,
        None => min_replicas(cr),
    };
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let done = st.observed_generation.unwrap_or(0) >= generation
        && st.updated_replicas.unwrap_or(0) >= desired
        && st.replicas.unwrap_or(0) <= desired
        && ready >= desired;
    Rollout {
        counts: ComponentStatus { desired, ready },
        done,
        missing: st.observed_generation.is_none(),
    }
}

/// The TURN DaemonSet is at its latest template with every pod ready (the time to start probing).
pub fn turn_rolled_out(cr: &OtterDeployment, applied: &Applied) -> bool {
    let r = turn_rollout(cr, applied);
    cr.spec.turn.enabled && r.done && !r.missing && r.counts.desired > 0
}

fn turn_rollout(cr: &OtterDeployment, applied: &Applied) -> Rollout {
    if !cr.spec.turn.enabled {
        return Rollout {
            done: true,
            ..Default::default()
        };
    }
    let Some(ds) = applied.daemon_sets.first() else {
        return Rollout {
            missing: true,
            ..Default::default()
        };
    };
    let st = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation.unwrap_or(0);
    let desired = st.desired_number_scheduled;
    let ready = st.number_ready;
    let done = st.observed_generation.unwrap_or(0) >= generation
        && st.updated_number_scheduled.unwrap_or(0) >= desired
        && ready >= desired;
    Rollout {
        counts: ComponentStatus { desired, ready },
        done,
        missing: st.observed_generation.is_none(),
    }
}

fn redis_rollout(cr: &OtterDeployment, applied: &Applied) -> Rollout {
    if cr.spec.redis.mode != RedisMode::Managed {
        return Rollout {
            done: true,
            ..Default::default()
        };
    }
    let Some(sts) = applied.stateful_sets.first() else {
        return Rollout {
            counts: ComponentStatus {
                desired: 1,
                ready: 0,
            },
            done: false,
            missing: true,
        };
    };
    let st = sts.status.clone().unwrap_or_default();
    let generation = sts.metadata.generation.unwrap_or(0);
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = st.ready_replicas.unwrap_or(0);
    let done = st.observed_generation.unwrap_or(0) >= generation
        && st.updated_replicas.unwrap_or(0) >= desired
        && ready >= desired;
    Rollout {
        counts: ComponentStatus { desired, ready },
        done,
        missing: st.observed_generation.is_none(),
    }
}

/// Where clients reach signaling: `spec.signaling.publicUrl`, else the LoadBalancer's hostname or
/// IP, else the Service's cluster DNS name. The port is always written out.
pub fn signaling_url(cr: &OtterDeployment, applied: &Applied) -> Option<String> {
    let spec = &cr.spec.signaling;
    if let Some(url) = &spec.public_url {
        return Some(url.clone());
    }
    let port = spec.service.port;
    if spec.service.type_ == ServiceType::LoadBalancer {
        let name = child_name(cr, "signaling");
        let ingress = applied
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first());
        if let Some(i) = ingress {
            let host = i.hostname.clone().or_else(|| {
                i.ip.as_ref().map(|ip| {
                    if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.clone()
                    }
                })
            });
            if let Some(host) = host {
                return Some(format!("http://{host}:{port}"));
            }
        }
    }
    let ns = cr.metadata.namespace.as_deref()?;
    Some(format!(
        "http://{}.{ns}.svc:{port}",
        child_name(cr, "signaling")
    ))
}

/// A condition, keeping the previous `lastTransitionTime` when the status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.as_str().to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Degraded: something the operator cannot fix by waiting.
fn degraded(
    cr: &OtterDeployment,
    obs: &Observed,
    problems: &Problems,
    turn: &Rollout,
) -> Option<(Reason, String)> {
    if let Some(err) = &problems.apply_error {
        return Some((Reason::ApplyFailed, err.clone()));
    }
    if !problems.secret_problems.is_empty() {
        return Some((Reason::SecretNotFound, problems.secret_problems.join("; ")));
    }
    if cr.spec.turn.enabled && obs.turn_nodes.is_empty() {
        let selector: Vec<String> = cr
            .spec
            .turn
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let message = format!(
            "no Ready node matches turn.nodeSelector {{{}}}: label the nodes that may relay media",
            selector.join(",")
        );
        return Some((Reason::NoTurnNodes, message));
    }
    let clash = problems.port_clash.as_ref().filter(|_| !turn.done)?;
    let message = format!(
        "TURN port {} is taken on the TURN nodes by OtterDeployment {} (host networking): give \
         this one another turn.port, or other nodes",
        clash.port, clash.holder
    );
    Some((Reason::TurnPortInUse, message))
}

/// The three rollouts of one reconcile.
struct Rollouts {
    signaling: Rollout,
    turn: Rollout,
    redis: Rollout,
}

impl Rollouts {
    /// `signaling 1/2`-style summaries of what is not rolled out yet.
    fn waiting(&self) -> Vec<String> {
        let summary =
            |name: &str, r: &Rollout| format!("{name} {}/{}", r.counts.ready, r.counts.desired);
        [
            ("signaling", &self.signaling),
            ("TURN", &self.turn),
            ("redis", &self.redis),
        ]
        .into_iter()
        .filter(|(_, r)| !r.done)
        .map(|(name, r)| summary(name, r))
        .collect()
    }
}

/// Ready's status, reason and message.
fn readiness(
    cr: &OtterDeployment,
    r: &Rollouts,
    degraded: Option<&(Reason, String)>,
    waiting: &[String],
    turn_uris: usize,
) -> (bool, Reason, String) {
    let (signaling, turn) = (&r.signaling, &r.turn);
    let signaling_serving = signaling.counts.ready > 0 && signaling.counts.desired > 0;
    let turn_serving = !cr.spec.turn.enabled || turn.counts.ready > 0;
    if let Some((reason, message)) = degraded {
        return (false, *reason, message.clone());
    }
    if signaling.counts.desired == 0 && !signaling.missing {
        let message = "signaling.replicas is 0".to_string();
        return (false, Reason::ScaledToZero, message);
    }
    if !waiting.is_empty() {
        let missing = signaling.missing || turn.missing || r.redis.missing;
        let reason = if missing {
            Reason::Creating
        } else {
            Reason::RollingOut
        };
        return (false, reason, format!("waiting for {}", waiting.join(", ")));
    }
    if !(signaling_serving && turn_serving) {
        return (false, Reason::NotServing, "no ready pods".to_string());
    }
    let message = format!(
        "signaling {}/{}, TURN {}/{}, {turn_uris} TURN URIs",
        signaling.counts.ready, signaling.counts.desired, turn.counts.ready, turn.counts.desired,
    );
    (true, Reason::Available, message)
}

/// Per-node reachability from this reconcile's probes (none probed: no entries).
fn turn_reachability(
    cr: &OtterDeployment,
    problems: &Problems,
    now: Timestamp,
) -> Vec<TurnNodeReachability> {
    let previous = cr
        .status
        .as_ref()
        .map(|s| s.turn_reachability.as_slice())
        .unwrap_or_default();
    match &problems.turn_probes {
        Some(probes) => reachability::entries(previous, probes, now),
        None => Vec::new(),
    }
}

/// The status this reconcile should write.
pub fn compute_status(
    cr: &OtterDeployment,
    obs: &Observed,
    applied: &Applied,
    problems: &Problems,
    now: Timestamp,
) -> OtterDeploymentStatus {
    let generation = cr.metadata.generation;
    let previous = cr
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let rollouts = Rollouts {
        signaling: signaling_rollout(cr, applied),
        turn: turn_rollout(cr, applied),
        redis: redis_rollout(cr, applied),
    };
    let ice = ice_servers(cr, &obs.turn_nodes);
    let turn_reachability = turn_reachability(cr, problems, now);
    let degraded = degraded(cr, obs, problems, &rollouts.turn);
    let waiting = rollouts.waiting();
    let (ready, reason, message) = readiness(
        cr,
        &rollouts,
        degraded.as_ref(),
        &waiting,
        ice.turn_uris.len(),
    );
    let cond = |type_: &str, status: bool, reason: Reason, message: String| {
        condition(previous, type_, status, reason, message, generation, now)
    };
    let mut conditions = vec![
        cond(READY, ready, reason, message),
        if waiting.is_empty() {
            let done = "all components at the desired state".to_string();
            cond(PROGRESSING, false, Reason::RolloutComplete, done)
        } else {
            let message = format!("waiting for {}", waiting.join(", "));
            cond(PROGRESSING, true, Reason::RollingOut, message)
        },
        match degraded {
            Some((reason, message)) => cond(DEGRADED, true, reason, message),
            None => cond(
                DEGRADED,
                false,
                Reason::AsExpected,
                "no problem found".to_string(),
            ),
        },
    ];
    if let Some((reachable, message)) = reachability::condition(&turn_reachability) {
        let reason = if reachable {
            Reason::TurnAllocated
        } else {
            Reason::TurnUnreachable
        };
        conditions.push(cond(TURN_REACHABLE, reachable, reason, message));
    }
    let Rollouts {
        signaling,
        turn,
        redis,
    } = rollouts;
    OtterDeploymentStatus {
        observed_generation: generation,
        conditions,
        signaling: signaling.counts,
        turn: turn.counts,
        redis: redis.counts,
        signaling_url: signaling_url(cr, applied),
        turn_uris: ice.all(),
        turn_reachability,
        turn_draining: crate::reconcile::drain::status_entries(&obs.draining_turn_nodes),
    }
}

/// The condition of a type in a status.
pub fn find_condition<'a>(status: &'a OtterDeploymentStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceType;
    use crate::testing::{cr, observed};
    use k8s_openapi::api::apps::v1::{
        DaemonSet, DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus, StatefulSet,
        StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus,
    };
    use kube::api::ObjectMeta;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            generation: Some(1),
            ..Default::default()
        }
    }

    fn all_ready() -> Applied {
        Applied {
            deployments: vec![Deployment {
                metadata: meta(),
                spec: Some(DeploymentSpec {
                    replicas: Some(2),
                    ..Default::default()
                }),
                status: Some(DeploymentStatus {
                    observed_generation: Some(1),
                    replicas: Some(2),
                    ready_replicas: Some(2),
                    updated_replicas: Some(2),
                    ..Default::default()
                }),
            }],
            daemon_sets: vec![DaemonSet {
                metadata: meta(),
                spec: None,
                status: Some(DaemonSetStatus {
                    observed_generation: Some(1),
                    desired_number_scheduled: 2,
                    number_ready: 2,
                    updated_number_scheduled: Some(2),
                    ..Default::default()
                }),
            }],
            stateful_sets: vec![StatefulSet {
                metadata: meta(),
                spec: Some(StatefulSetSpec {
                    replicas: Some(1),
                    ..Default::default()
                }),
                status: Some(StatefulSetStatus {
                    observed_generation: Some(1),
                    ready_replicas: Some(1),
                    updated_replicas: Some(1),
                    replicas: 1,
                    ..Default::default()
                }),
            }],
            ..Applied::default()
        }
    }

    fn cond<'a>(s: &'a OtterDeploymentStatus, t: &str) -> &'a Condition {
        find_condition(s, t).unwrap()
    }

    #[test]
    fn everything_ready_is_ready_not_progressing_not_degraded() {
        let cr = cr();
        let s = compute_status(&cr, &observed(), &all_ready(), &Problems::default(), now());
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, READY).reason, "Available");
        assert_eq!(cond(&s, READY).observed_generation, Some(3));
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(
            s.signaling,
            ComponentStatus {
                desired: 2,
                ready: 2
            }
        );
        assert_eq!(
            s.turn,
            ComponentStatus {
                desired: 2,
                ready: 2
            }
        );
        assert_eq!(
            s.redis,
            ComponentStatus {
                desired: 1,
                ready: 1
            }
        );
        assert_eq!(
            s.signaling_url.as_deref(),
            Some("http://demo-signaling.calls.svc:80")
        );
        assert_eq!(s.turn_uris[0], "stun:203.0.113.7:3478");
        assert!(
            s.turn_uris
                .contains(&"turn:[2001:db8::5]:3478?transport=tcp".to_string())
        );
    }

    #[test]
    fn fresh_resource_is_progressing_while_children_are_created() {
        let cr = cr();
        let s = compute_status(
            &cr,
            &observed(),
            &Applied::default(),
            &Problems::default(),
            now(),
        );
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, READY).reason, "Creating");
        assert_eq!(cond(&s, PROGRESSING).status, "True");
        assert!(cond(&s, PROGRESSING).message.contains("signaling 0/2"));
        assert_eq!(cond(&s, DEGRADED).status, "False");
    }

    #[test]
    fn rolling_out_signaling_is_progressing() {
        let cr = cr();
        let mut applied = all_ready();
        if let Some(d) = applied.deployments.first_mut() {
            d.metadata.generation = Some(2);
        }
        let s = compute_status(&cr, &observed(), &applied, &Problems::default(), now());
        assert_eq!(cond(&s, READY).reason, "RollingOut");
        assert_eq!(cond(&s, PROGRESSING).status, "True");
    }

    #[test]
    fn no_turn_nodes_is_degraded_with_the_selector_in_the_message() {
        let cr = cr();
        let mut obs = observed();
        obs.turn_nodes.clear();
        let s = compute_status(&cr, &obs, &all_ready(), &Problems::default(), now());
        assert_eq!(cond(&s, READY).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(cond(&s, DEGRADED).reason, "NoTurnNodes");
        assert!(cond(&s, DEGRADED).message.contains("otter.dev/turn=true"));
        assert!(s.turn_uris.is_empty());
    }

    #[test]
    fn apply_error_and_missing_secret_are_degraded() {
        let cr = cr();
        let problems = Problems {
            apply_error: Some("applying Deployment demo-signaling: forbidden".into()),
            ..Problems::default()
        };
        let s = compute_status(&cr, &observed(), &all_ready(), &problems, now());
        assert_eq!(cond(&s, DEGRADED).reason, "ApplyFailed");
        assert_eq!(cond(&s, READY).reason, "ApplyFailed");
        let problems = Problems {
            apply_error: None,
            secret_problems: vec!["turn.secretRef: Secret \"x\" not found".into()],
            ..Problems::default()
        };
        let s = compute_status(&cr, &observed(), &all_ready(), &problems, now());
        assert_eq!(cond(&s, DEGRADED).reason, "SecretNotFound");
        assert!(cond(&s, READY).message.contains("\"x\" not found"));
    }

    #[test]
    fn transition_time_only_moves_when_status_flips() {
        let mut cr = cr();
        let first = compute_status(&cr, &observed(), &all_ready(), &Problems::default(), now());
        cr.status = Some(first.clone());
        let later = Timestamp::from_second(1_800_000_600).unwrap();
        let same = compute_status(&cr, &observed(), &all_ready(), &Problems::default(), later);
        assert_eq!(
            same, first,
            "unchanged world, unchanged status: nothing to write"
        );
        let mut obs = observed();
        obs.turn_nodes.clear();
        let flipped = compute_status(&cr, &obs, &all_ready(), &Problems::default(), later);
        assert_eq!(cond(&flipped, READY).last_transition_time, Time(later));
        assert_eq!(
            cond(&flipped, PROGRESSING).last_transition_time,
            cond(&first, PROGRESSING).last_transition_time
        );
    }

    #[test]
    fn signaling_url_prefers_public_url_then_load_balancer_then_cluster_dns() {
        let mut cr = cr();
        let mut applied = all_ready();
        cr.spec.signaling.service.type_ = ServiceType::LoadBalancer;
        assert_eq!(
            signaling_url(&cr, &applied).as_deref(),
            Some("http://demo-signaling.calls.svc:80")
        );
        applied.services = vec![Service {
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        hostname: Some("abc.elb.amazonaws.com".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            metadata: ObjectMeta {
                name: Some("demo-signaling".into()),
                ..Default::default()
            },
            ..Default::default()
        }];
        assert_eq!(
            signaling_url(&cr, &applied).as_deref(),
            Some("http://abc.elb.amazonaws.com:80")
        );
        cr.spec.signaling.public_url = Some("https://calls.example.com".into());
        assert_eq!(
            signaling_url(&cr, &applied).as_deref(),
            Some("https://calls.example.com")
        );
    }

    #[test]
    fn turn_and_redis_off_count_zero_and_can_be_ready() {
        let mut cr = cr();
        cr.spec.turn.enabled = false;
        cr.spec.redis.mode = RedisMode::External;
        let mut applied = all_ready();
        applied.daemon_sets.clear();
        applied.stateful_sets.clear();
        let s = compute_status(&cr, &observed(), &applied, &Problems::default(), now());
        assert_eq!(cond(&s, READY).status, "True", "{:?}", s.conditions);
        assert_eq!(s.turn, ComponentStatus::default());
        assert_eq!(s.redis, ComponentStatus::default());
        assert!(s.turn_uris.is_empty());
    }

    #[test]
    fn autoscaled_signaling_wants_at_least_the_hpa_minimum() {
        let mut cr = cr();
        cr.spec.signaling.autoscaling.enabled = true;
        cr.spec.signaling.autoscaling.min_replicas = 3;
        let mut applied = all_ready();
        if let Some(d) = applied.deployments.first_mut() {
            // Released to the HPA: the apiserver defaulted it to 1 before the HPA acted.
            d.spec = Some(DeploymentSpec {
                replicas: Some(1),
                ..Default::default()
            });
        }
        let s = compute_status(&cr, &observed(), &applied, &Problems::default(), now());
        assert_eq!(s.signaling.desired, 3);
        assert_eq!(cond(&s, READY).reason, "RollingOut");
    }

    #[test]
    fn scaled_to_zero_is_not_ready() {
        let mut cr = cr();
        cr.spec.signaling.replicas = 0;
        let mut applied = all_ready();
        if let Some(d) = applied.deployments.first_mut() {
            d.spec = Some(DeploymentSpec {
                replicas: Some(0),
                ..Default::default()
            });
            d.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                ..Default::default()
            });
        }
        let s = compute_status(&cr, &observed(), &applied, &Problems::default(), now());
        assert_eq!(cond(&s, READY).reason, "ScaledToZero");
    }

    #[test]
    fn a_turn_port_held_by_another_resource_is_degraded_naming_it() {
        let cr = cr();
        let problems = Problems {
            port_clash: Some(PortClash {
                port: 3478,
                holder: "calls/first".into(),
            }),
            ..Problems::default()
        };
        let mut applied = all_ready();
        if let Some(ds) = applied.daemon_sets.first_mut() {
            ds.status.as_mut().unwrap().number_ready = 0;
        }
        let s = compute_status(&cr, &observed(), &applied, &problems, now());
        assert_eq!(cond(&s, DEGRADED).reason, "TurnPortInUse");
        let message = &cond(&s, READY).message;
        assert!(
            message.contains("3478") && message.contains("calls/first"),
            "{message}"
        );
        let s = compute_status(&cr, &observed(), &all_ready(), &problems, now());
        assert_eq!(
            cond(&s, READY).reason,
            "Available",
            "TURN pods that run are not in a clash"
        );
    }
}
