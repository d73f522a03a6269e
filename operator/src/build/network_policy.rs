//! NetworkPolicy: only the signaling pods of the same OtterDeployment reach the managed Redis.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::redis::REDIS_PORT;
use crate::crd::{OtterDeployment, RedisMode};
use crate::error::BuildError;
use crate::meta::{Component, child_meta, child_name, label_selector};
use crate::observed::Observed;

/// `<name>-redis` NetworkPolicy, when Redis is managed: ingress to Redis on 6379 from the
/// signaling pods only; everything else is denied.
pub fn build_redis_network_policy(
    cr: &OtterDeployment,
    _obs: &Observed,
) -> Result<Option<NetworkPolicy>, BuildError> {
    if cr.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    Ok(Some(NetworkPolicy {
        metadata: child_meta(cr, child_name(cr, "redis"), Component::Redis)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(cr, Component::Redis)),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(label_selector(cr, Component::Signaling)),
                    ..Default::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(REDIS_PORT)),
                    protocol: Some("TCP".to_string()),
                    end_port: None,
                }]),
            }]),
            ..Default::default()
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cr, observed};

    #[test]
    fn only_signaling_pods_of_this_deployment_reach_redis() {
        let cr = cr();
        let np = build_redis_network_policy(&cr, &observed())
            .unwrap()
            .unwrap();
        let spec = np.spec.unwrap();
        let target = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(target["app.kubernetes.io/component"], "redis");
        assert_eq!(target["app.kubernetes.io/instance"], "demo");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        let from = rules[0].from.clone().unwrap();
        assert_eq!(from.len(), 1);
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
        let peers = from[0].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(peers["app.kubernetes.io/component"], "signaling");
        assert_eq!(peers["app.kubernetes.io/instance"], "demo");
        assert_eq!(
            rules[0].ports.clone().unwrap()[0].port,
            Some(IntOrString::Int(6379))
        );
    }

    #[test]
    fn none_without_managed_redis() {
        let mut cr = cr();
        cr.spec.redis.mode = RedisMode::Disabled;
        assert!(
            build_redis_network_policy(&cr, &observed())
                .unwrap()
                .is_none()
        );
    }
}
