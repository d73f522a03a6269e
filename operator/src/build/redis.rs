//! The managed Redis: a one-replica StatefulSet and its headless Service.
//!
//! Redis requires the password from `<name>-redis-url`; only signaling pods may reach it (see
//! [`crate::build::network_policy`]). Room state is short-lived, so persistence is off by default.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Secret,
    SecretKeySelector, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::build::pod::{container_security_context, pod_security_context, resources_or};
use crate::build::secrets::{REDIS_PASSWORD_KEY, redis_password};
use crate::crd::{OtterDeployment, RedisMode};
use crate::error::BuildError;
use crate::meta::{
    CHECKSUM_ANNOTATION, Component, checksum, child_meta, child_name, label_selector, labels,
    selector_labels,
};
use crate::observed::Observed;

/// Redis port.
pub const REDIS_PORT: i32 = 6379;
/// uid of `redis` in the official alpine image.
pub const REDIS_UID: i64 = 999;

fn password_env(cr: &OtterDeployment, name: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: child_name(cr, "redis-url"),
                key: REDIS_PASSWORD_KEY.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The redis-server arguments.
pub fn redis_args(cr: &OtterDeployment) -> Vec<String> {
    let mut args = vec![
        "--port".to_string(),
        REDIS_PORT.to_string(),
        "--requirepass".to_string(),
        "$(REDIS_PASSWORD)".to_string(),
        "--dir".to_string(),
        "/data".to_string(),
        "--protected-mode".to_string(),
        "yes".to_string(),
    ];
    if cr.spec.redis.managed.persistence.enabled {
        args.extend(["--appendonly".to_string(), "yes".to_string()]);
    } else {
        args.extend([
            "--appendonly".to_string(),
            "no".to_string(),
            "--save".to_string(),
            String::new(),
        ]);
    }
    args
}

/// The redis-server container: password from the Secret, probes without a shell.
fn redis_container(cr: &OtterDeployment, obs: &Observed) -> Container {
    let m = &cr.spec.redis.managed;
    Container {
        name: "redis".to_string(),
        image: Some(m.image.clone().unwrap_or_else(|| obs.images.redis.clone())),
        args: Some(redis_args(cr)),
        env: Some(vec![
            password_env(cr, "REDIS_PASSWORD"),
            // redis-cli reads the password from here, so the probe needs no shell.
            password_env(cr, "REDISCLI_AUTH"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".to_string()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("redis".to_string()),
                host: None,
            }),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["redis-cli".to_string(), "ping".to_string()]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: Some(resources_or(m.resources.as_ref(), "50m", "64Mi", "256Mi")),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".to_string(),
            mount_path: "/data".to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The pod's volumes and the StatefulSet's claim templates.
type DataStorage = (Option<Vec<Volume>>, Option<Vec<PersistentVolumeClaim>>);

/// Storage for `/data`: a PersistentVolumeClaim per replica when persistence is on, else an
/// emptyDir (room state is short-lived).
fn data_storage(cr: &OtterDeployment) -> DataStorage {
    let m = &cr.spec.redis.managed;
    if m.persistence.enabled {
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_string()),
                labels: Some(labels(cr, Component::Redis)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: m.persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(m.persistence.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        (None, Some(vec![claim]))
    } else {
        let data = Volume {
            name: "data".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        (Some(vec![data]), None)
    }
}

/// `<name>-redis` StatefulSet, when Redis is managed.
pub fn build_statefulset(
    cr: &OtterDeployment,
    obs: &Observed,
    _built: &[Secret],
) -> Result<Option<StatefulSet>, BuildError> {
    if cr.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    let password = redis_password(cr, obs);
    let (volumes, claims) = data_storage(cr);
    Ok(Some(StatefulSet {
        metadata: child_meta(cr, child_name(cr, "redis"), Component::Redis)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(child_name(cr, "redis")),
            selector: label_selector(cr, Component::Redis),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cr, Component::Redis)),
                    annotations: Some(BTreeMap::from([(
                        CHECKSUM_ANNOTATION.to_string(),
                        checksum([("password", password.as_slice())]),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![redis_container(cr, obs)],
                    volumes,
                    security_context: Some(pod_security_context(REDIS_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// `<name>-redis` headless Service, when Redis is managed.
pub fn build_service(cr: &OtterDeployment, _obs: &Observed) -> Result<Option<Service>, BuildError> {
    if cr.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    Ok(Some(Service {
        metadata: child_meta(cr, child_name(cr, "redis"), Component::Redis)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(cr, Component::Redis)),
            ports: Some(vec![ServicePort {
                name: Some("redis".to_string()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String("redis".to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cr, observed, secret};

    #[test]
    fn statefulset_requires_the_generated_password_and_is_hardened() {
        let cr = cr();
        let sts = build_statefulset(&cr, &observed(), &[]).unwrap().unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("demo-redis"));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("demo-redis"));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("docker.io/library/redis:7.4-alpine")
        );
        let args = c.args.clone().unwrap();
        let i = args.iter().position(|a| a == "--requirepass").unwrap();
        assert_eq!(args[i + 1], "$(REDIS_PASSWORD)");
        let env = c.env.clone().unwrap();
        for name in ["REDIS_PASSWORD", "REDISCLI_AUTH"] {
            let r = env
                .iter()
                .find(|e| e.name == name)
                .unwrap()
                .value_from
                .clone()
                .unwrap()
                .secret_key_ref
                .unwrap();
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                ("demo-redis-url", "password")
            );
        }
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(REDIS_UID));
        assert!(c.readiness_probe.clone().unwrap().exec.is_some());
        assert!(spec.volume_claim_templates.is_none());
        assert!(pod.volumes.unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn persistence_uses_a_claim_and_append_only_file() {
        let mut cr = cr();
        cr.spec.redis.managed.persistence.enabled = true;
        cr.spec.redis.managed.persistence.storage_class_name = Some("gp3".into());
        let sts = build_statefulset(&cr, &observed(), &[]).unwrap().unwrap();
        let spec = sts.spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let cs = claim.spec.clone().unwrap();
        assert_eq!(cs.storage_class_name.as_deref(), Some("gp3"));
        assert_eq!(cs.resources.unwrap().requests.unwrap()["storage"].0, "1Gi");
        let args = spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.windows(2).any(|w| w == ["--appendonly", "yes"]));
    }

    #[test]
    fn checksum_follows_the_password() {
        let cr = cr();
        let sum = |obs: &Observed| {
            build_statefulset(&cr, obs, &[])
                .unwrap()
                .unwrap()
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CHECKSUM_ANNOTATION]
                .clone()
        };
        let mut kept = observed();
        kept.secrets.insert(
            "demo-redis-url".into(),
            secret("demo-redis-url", &[("password", "other")]),
        );
        assert_ne!(sum(&observed()), sum(&kept));
    }

    #[test]
    fn headless_service_and_nothing_for_external_redis() {
        let mut cr = cr();
        let svc = build_service(&cr, &observed()).unwrap().unwrap();
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        cr.spec.redis.mode = RedisMode::External;
        assert!(build_service(&cr, &observed()).unwrap().is_none());
        assert!(build_statefulset(&cr, &observed(), &[]).unwrap().is_none());
    }
}
