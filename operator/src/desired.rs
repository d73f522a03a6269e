//! The whole desired state of one `OtterDeployment`, built from the pure builders.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::build::{network_policy, redis, secrets, signaling, turn, turn_keys};
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::kinds::Kind;
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

/// What the API server answered to the apply of each desired child: the objects as they are now
/// (with their status), in the same shape. Status is computed from these, not from a second read.
pub type Applied = Desired;

fn names<T: kube::Resource>(objs: &[T]) -> Vec<String> {
    objs.iter().filter_map(|o| o.meta().name.clone()).collect()
}

impl Desired {
    /// Build everything. Pure: same inputs, same objects.
    pub fn build(cr: &OtterDeployment, obs: &Observed) -> Result<Self, BuildError> {
        let mut secrets: Vec<Secret> = [
            secrets::build_turn_secret(cr, obs)?,
            secrets::build_token_secret(cr, obs)?,
            secrets::build_redis_url_secret(cr, obs)?,
        ]
        .into_iter()
        .flatten()
        .collect();
        // From the TURN Secret as built: what signaling mints with and coturn accepts.
        secrets.extend(turn_keys::build_turn_keys(cr, obs, &secrets)?);
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
            daemon_sets: turn::build_daemonset(cr, obs)?.into_iter().collect(),
            hpas: signaling::build_hpa(cr, obs)?.into_iter().collect(),
            pdbs: signaling::build_pdb(cr, obs)?.into_iter().collect(),
            secrets,
            config_maps,
            services,
        })
    }

    /// Names of the wanted children of one kind (what pruning keeps).
    pub fn names_of(&self, kind: Kind) -> Vec<String> {
        // Destructured without `..`: a new field is a compile error until it is listed here.
        let Self {
            secrets,
            config_maps,
            services,
            network_policies,
            stateful_sets,
            deployments,
            daemon_sets,
            hpas,
            pdbs,
        } = self;
        match kind {
            Kind::Secret => names(secrets),
            Kind::ConfigMap => names(config_maps),
            Kind::Service => names(services),
            Kind::NetworkPolicy => names(network_policies),
            Kind::StatefulSet => names(stateful_sets),
            Kind::Deployment => names(deployments),
            Kind::DaemonSet => names(daemon_sets),
            Kind::HorizontalPodAutoscaler => names(hpas),
            Kind::PodDisruptionBudget => names(pdbs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RedisMode;
    use crate::testing::{cr, observed};

    #[test]
    fn defaults_build_every_child() {
        let cr = cr();
        let d = Desired::build(&cr, &observed()).unwrap();
        assert_eq!(
            d.names_of(Kind::Secret),
            vec!["demo-turn-secret", "demo-redis-url", "demo-turn-keys"]
        );
        assert_eq!(
            d.names_of(Kind::ConfigMap),
            vec!["demo-signaling", "demo-turn"]
        );
        assert_eq!(
            d.names_of(Kind::Service),
            vec!["demo-signaling", "demo-redis"]
        );
        for kind in [
            Kind::Deployment,
            Kind::DaemonSet,
            Kind::StatefulSet,
            Kind::NetworkPolicy,
            Kind::PodDisruptionBudget,
        ] {
            assert_eq!(d.names_of(kind).len(), 1, "{kind:?}");
        }
        assert!(d.names_of(Kind::HorizontalPodAutoscaler).is_empty());
    }

    #[test]
    fn turn_off_and_no_redis_want_neither() {
        let mut cr = cr();
        cr.spec.turn.enabled = false;
        cr.spec.redis.mode = RedisMode::Disabled;
        cr.spec.signaling.replicas = 1;
        let d = Desired::build(&cr, &observed()).unwrap();
        assert!(d.secrets.is_empty());
        assert!(d.daemon_sets.is_empty());
        assert!(d.stateful_sets.is_empty());
        assert!(d.network_policies.is_empty());
        assert_eq!(d.names_of(Kind::ConfigMap), vec!["demo-signaling"]);
    }
}
