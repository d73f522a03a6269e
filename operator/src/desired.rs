//! The whole desired state of one `OtterDeployment`, built from the pure builders, and the
//! children that must go because the spec no longer wants them.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::build::{network_policy, redis, secrets, signaling, turn};
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::meta::child_name;
use crate::observed::Observed;

/// Every child the spec wants, in the order they are applied (Secrets and config first, so the
/// pods that mount them start cleanly).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Generated Secrets.
    pub secrets: Vec<Secret>,
    /// Signaling config and TURN node addresses.
    pub config_maps: Vec<ConfigMap>,
    /// Signaling and Redis Services.
    pub services: Vec<Service>,
    /// Redis NetworkPolicy.
    pub network_policies: Vec<NetworkPolicy>,
    /// Redis.
    pub stateful_sets: Vec<StatefulSet>,
    /// Signaling.
    pub deployments: Vec<Deployment>,
    /// TURN.
    pub daemon_sets: Vec<DaemonSet>,
    /// Signaling autoscaler.
    pub hpas: Vec<HorizontalPodAutoscaler>,
    /// Signaling disruption budget.
    pub pdbs: Vec<PodDisruptionBudget>,
}

/// A kind of child, for pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    /// v1 Secret.
    Secret,
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Service.
    Service,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// autoscaling/v2 HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
}

fn names<T: kube::Resource>(objs: &[T]) -> Vec<String> {
    objs.iter().filter_map(|o| o.meta().name.clone()).collect()
}

impl Desired {
    /// Build everything. Pure: same inputs, same objects.
    pub fn build(cr: &OtterDeployment, obs: &Observed) -> Result<Self, BuildError> {
        let secrets: Vec<Secret> = [
            secrets::build_turn_secret(cr, obs)?,
            secrets::build_token_secret(cr, obs)?,
            secrets::build_redis_url_secret(cr, obs)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let config_maps = [
            Some(signaling::build_config_map(cr, obs)?),
            turn::build_nodes_config_map(cr, obs)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let services = [
            Some(signaling::build_service(cr, obs)?),
            redis::build_service(cr, obs)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Self {
            network_policies: network_policy::build_redis_network_policy(cr, obs)?
                .into_iter()
                .collect(),
            stateful_sets: redis::build_statefulset(cr, obs, &secrets)?
                .into_iter()
                .collect(),
            deployments: vec![signaling::build_deployment(cr, obs, &secrets)?],
            daemon_sets: turn::build_daemonset(cr, obs, &secrets)?
                .into_iter()
                .collect(),
            hpas: signaling::build_hpa(cr, obs)?.into_iter().collect(),
            pdbs: signaling::build_pdb(cr, obs)?.into_iter().collect(),
            secrets,
            config_maps,
            services,
        })
    }

    /// Children the operator may have created earlier that this spec no longer wants. The
    /// controller deletes each only if this resource owns it.
    pub fn unwanted(&self, cr: &OtterDeployment) -> Vec<(ChildKind, String)> {
        let candidates: Vec<(ChildKind, String, Vec<String>)> = vec![
            (ChildKind::Secret, String::new(), names(&self.secrets)),
            (
                ChildKind::ConfigMap,
                child_name(cr, "turn"),
                names(&self.config_maps),
            ),
            (
                ChildKind::Service,
                child_name(cr, "redis"),
                names(&self.services),
            ),
            (
                ChildKind::NetworkPolicy,
                child_name(cr, "redis"),
                names(&self.network_policies),
            ),
            (
                ChildKind::StatefulSet,
                child_name(cr, "redis"),
                names(&self.stateful_sets),
            ),
            (
                ChildKind::DaemonSet,
                child_name(cr, "turn"),
                names(&self.daemon_sets),
            ),
            (
                ChildKind::HorizontalPodAutoscaler,
                child_name(cr, "signaling"),
                names(&self.hpas),
            ),
            (
                ChildKind::PodDisruptionBudget,
                child_name(cr, "signaling"),
                names(&self.pdbs),
            ),
        ];
        // A Secret the user names is never deleted, even when it has a generated name.
        let user_secrets = secrets::user_secret_names(cr);
        let mut out = Vec::new();
        for (kind, name, wanted) in candidates {
            let possible: Vec<String> = if kind == ChildKind::Secret {
                secrets::all_generated_secret_names(cr).to_vec()
            } else {
                vec![name]
            };
            for name in possible {
                let users = kind == ChildKind::Secret && user_secrets.contains(&name);
                if !wanted.contains(&name) && !users {
                    out.push((kind, name));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RedisMode, SecretKeyRef};
    use crate::testing::{cr, observed};

    #[test]
    fn defaults_build_every_child_and_prune_nothing_but_unused_ones() {
        let cr = cr();
        let d = Desired::build(&cr, &observed()).unwrap();
        assert_eq!(
            names(&d.secrets),
            vec!["demo-turn-secret", "demo-redis-url"]
        );
        assert_eq!(names(&d.config_maps), vec!["demo-signaling", "demo-turn"]);
        assert_eq!(names(&d.services), vec!["demo-signaling", "demo-redis"]);
        assert_eq!(d.deployments.len(), 1);
        assert_eq!(d.daemon_sets.len(), 1);
        assert_eq!(d.stateful_sets.len(), 1);
        assert_eq!(d.network_policies.len(), 1);
        assert!(d.hpas.is_empty());
        assert_eq!(d.pdbs.len(), 1);
        assert_eq!(
            d.unwanted(&cr),
            vec![
                (ChildKind::Secret, "demo-token-secret".to_string()),
                (
                    ChildKind::HorizontalPodAutoscaler,
                    "demo-signaling".to_string()
                ),
            ]
        );
    }

    #[test]
    fn turn_off_and_no_redis_prunes_their_children() {
        let mut cr = cr();
        cr.spec.turn.enabled = false;
        cr.spec.redis.mode = RedisMode::Disabled;
        cr.spec.signaling.replicas = 1;
        let d = Desired::build(&cr, &observed()).unwrap();
        assert!(d.secrets.is_empty());
        assert!(d.daemon_sets.is_empty());
        assert!(d.stateful_sets.is_empty());
        let unwanted = d.unwanted(&cr);
        for child in [
            (ChildKind::DaemonSet, "demo-turn"),
            (ChildKind::ConfigMap, "demo-turn"),
            (ChildKind::StatefulSet, "demo-redis"),
            (ChildKind::Service, "demo-redis"),
            (ChildKind::NetworkPolicy, "demo-redis"),
            (ChildKind::Secret, "demo-turn-secret"),
            (ChildKind::Secret, "demo-redis-url"),
            (ChildKind::PodDisruptionBudget, "demo-signaling"),
        ] {
            assert!(
                unwanted.contains(&(child.0, child.1.to_string())),
                "{child:?} not pruned: {unwanted:?}"
            );
        }
    }

    #[test]
    fn user_secret_with_a_generated_name_is_never_pruned() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "demo-turn-secret".into(),
            key: None,
        });
        let d = Desired::build(&cr, &observed()).unwrap();
        assert!(!names(&d.secrets).contains(&"demo-turn-secret".to_string()));
        assert!(
            !d.unwanted(&cr)
                .contains(&(ChildKind::Secret, "demo-turn-secret".to_string()))
        );
    }
}
