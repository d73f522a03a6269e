//! The signaling server: ConfigMap (ICE servers), Deployment, Service, HPA, PDB.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use serde::Serialize;

use crate::build::pod::{
    container_security_context, env, env_from_secret, mount, pod_security_context, resources_or,
    secret_volume,
};
use crate::build::secrets::{
    SecretSource, TOKEN_SECRET_KEY, TURN_SECRET_KEY, redis_url_source, resolved_value,
    token_secret_source,
};
use crate::build::turn_keys::turn_keys_source;
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::meta::{
    CHECKSUM_ANNOTATION, Component, checksum, child_meta, child_name, label_selector,
    selector_labels,
};
use crate::observed::{Observed, TurnNode};
use k8s_openapi::api::core::v1::Secret;

/// Port the signaling container listens on (`OTTER_LISTEN`).
pub const CONTAINER_PORT: i32 = 8080;
/// `/metrics` of the signaling pods, on a port of its own so the Service never exposes it.
pub const METRICS_PORT: i32 = 9090;
/// Key of the ICE server list in the signaling ConfigMap.
pub const ICE_CONFIG_KEY: &str = "ice-servers.json";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/otter";
/// Where the TURN shared secret is mounted (file `turn-secret`).
pub const TURN_SECRET_DIR: &str = "/var/run/otter/turn";
/// Where the room-token secret is mounted (file `token-secret`).
pub const TOKEN_SECRET_DIR: &str = "/var/run/otter/token";
/// uid and gid of the signaling server (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

/// The ICE servers signaling hands to clients (`OTTER_ICE_CONFIG`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    /// `stun:` URIs.
    pub stun_uris: Vec<String>,
    /// `turn:` and `turns:` URIs.
    pub turn_uris: Vec<String>,
}

impl IceServers {
    /// All URIs, STUN first (what `status.turnUris` shows).
    pub fn all(&self) -> Vec<String> {
        self.stun_uris
            .iter()
            .chain(&self.turn_uris)
            .cloned()
            .collect()
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The ICE servers for the given TURN nodes: per node, STUN, TURN over UDP and TCP, and TURN
/// over TLS when enabled. Addresses are deduplicated and sorted so the list is stable.
pub fn ice_servers(cr: &OtterDeployment, nodes: &[TurnNode]) -> IceServers {
    let turn = &cr.spec.turn;
    if !turn.enabled {
        return IceServers::default();
    }
    let mut ips: Vec<IpAddr> = nodes.iter().map(|n| n.public_ip).collect();
    ips.sort();
    ips.dedup();
    let mut out = IceServers::default();
    for ip in ips {
        let h = host(ip);
        let port = turn.port;
        out.stun_uris.push(format!("stun:{h}:{port}"));
        out.turn_uris.push(format!("turn:{h}:{port}?transport=udp"));
        out.turn_uris.push(format!("turn:{h}:{port}?transport=tcp"));
        if turn.tls.enabled {
            out.turn_uris
                .push(format!("turns:{h}:{}?transport=tcp", turn.tls.port));
        }
    }
    out
}

/// `<name>-signaling` ConfigMap with `ice-servers.json`. Signaling re-reads it when it changes,
/// so TURN node changes reach clients without a restart.
pub fn build_config_map(cr: &OtterDeployment, obs: &Observed) -> Result<ConfigMap, BuildError> {
    let ice = ice_servers(cr, &obs.turn_nodes);
    // Serialising a struct of strings cannot fail; an empty object is a safe fallback anyway.
    let json = serde_json::to_string_pretty(&ice).unwrap_or_else(|_| "{}".to_string());
    Ok(ConfigMap {
        metadata: child_meta(cr, child_name(cr, "signaling"), Component::Signaling)?,
        data: Some(BTreeMap::from([(ICE_CONFIG_KEY.to_string(), json)])),
        ..Default::default()
    })
}

/// Whole seconds of a humantime duration.
pub(crate) fn duration_secs(field: &'static str, value: &str) -> Result<u64, BuildError> {
    humantime::parse_duration(value)
        .map(|d| d.as_secs())
        .map_err(|_| BuildError::InvalidDuration {
            field,
            value: value.to_string(),
        })
}

/// The checksum on the signaling pod template: everything signaling reads only at start
/// (the Secret values). The ICE server list and the TURN secret are left out on purpose: both
/// are re-read from their files when they change, so a TURN secret rotation restarts nothing
/// (`build::turn_keys`).
pub fn signaling_checksum(cr: &OtterDeployment, obs: &Observed, built: &[Secret]) -> String {
    let sources = [
        ("token", token_secret_source(cr)),
        ("redis", redis_url_source(cr)),
    ];
    let values: Vec<(&str, Vec<u8>)> = sources
        .iter()
        .map(|(part, src)| {
            let value = src
                .as_ref()
                .and_then(|s| resolved_value(s, built, obs))
                .unwrap_or_default();
            (*part, value)
        })
        .collect();
    checksum(values.iter().map(|(p, v)| (*p, v.as_slice())))
}

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// The signaling server's environment, from the spec (the Secret-backed parts come from
/// [`SecretFiles`]).
fn signaling_env(cr: &OtterDeployment) -> Vec<EnvVar> {
    let spec = &cr.spec.signaling;
    let mut vars = vec![
        env("OTTER_LISTEN", format!("0.0.0.0:{CONTAINER_PORT}")),
        env("OTTER_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        env("OTTER_ICE_CONFIG", format!("{CONFIG_DIR}/{ICE_CONFIG_KEY}")),
        env(
            "OTTER_MAX_PEERS_PER_ROOM",
            spec.max_peers_per_room.to_string(),
        ),
        env("OTTER_TURN_TTL", cr.spec.turn.credential_ttl.clone()),
        env("OTTER_LOG_FORMAT", "json"),
        env("OTTER_SHUTDOWN_GRACE", spec.shutdown_grace_period.clone()),
    ];
    if !spec.allowed_origins.is_empty() {
        vars.push(env("OTTER_ALLOWED_ORIGINS", spec.allowed_origins.join(",")));
    }
    if let Some(url) = &spec.public_url {
        vars.push(env("OTTER_PUBLIC_URL", url.clone()));
    }
    if spec.relay_only {
        vars.push(env("OTTER_RELAY_ONLY", "true"));
    }
    vars
}

/// What the pod reads from files and Secrets: the ICE config (ConfigMap), the TURN and token
/// secrets (files, so that they never show in the pod spec or `ps`), the Redis URL (env).
#[derive(Default)]
struct SecretFiles {
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl SecretFiles {
    fn of(cr: &OtterDeployment) -> Self {
        let mut files = SecretFiles {
            volumes: vec![Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: child_name(cr, "signaling"),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            mounts: vec![mount("config", CONFIG_DIR, true)],
            ..Default::default()
        };
        // The value to mint with is the keys Secret's, which turns to a new value only once
        // every TURN pod accepts it.
        if let Some(src) = turn_keys_source(cr) {
            files.secret_file(
                "OTTER_TURN_SECRET_FILE",
                "turn-secret",
                &src,
                TURN_SECRET_DIR,
                TURN_SECRET_KEY,
            );
        }
        if let Some(src) = token_secret_source(cr) {
            files.secret_file(
                "OTTER_TOKEN_SECRET_FILE",
                "token-secret",
                &src,
                TOKEN_SECRET_DIR,
                TOKEN_SECRET_KEY,
            );
        }
        if let Some(src) = redis_url_source(cr) {
            files.env.push(env_from_secret("OTTER_REDIS_URL", &src));
        }
        files
    }

    /// Secret key `key` of `src` as file `dir/key`, its path in env `var`.
    fn secret_file(&mut self, var: &str, volume: &str, src: &SecretSource, dir: &str, key: &str) {
        self.env.push(env(var, format!("{dir}/{key}")));
        self.volumes.push(secret_volume(volume, src, key));
        self.mounts.push(mount(volume, dir, true));
    }
}

fn signaling_container(cr: &OtterDeployment, obs: &Observed, files: SecretFiles) -> Container {
    let spec = &cr.spec.signaling;
    let mut env_vars = signaling_env(cr);
    env_vars.extend(files.env);
    Container {
        name: "signaling".to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| obs.images.signaling.clone()),
        ),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_string()),
                container_port: CONTAINER_PORT,
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".to_string()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
        ]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: Some(resources_or(
            spec.resources.as_ref(),
            "100m",
            "64Mi",
            "256Mi",
        )),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(files.mounts),
        ..Default::default()
    }
}

/// `<name>-signaling` Deployment. `built` are the generated Secrets of this reconcile (their
/// values feed the checksum annotation).
pub fn build_deployment(
    cr: &OtterDeployment,
    obs: &Observed,
    built: &[Secret],
) -> Result<Deployment, BuildError> {
    let spec = &cr.spec.signaling;
    let grace = duration_secs("signaling.shutdownGracePeriod", &spec.shutdown_grace_period)?;
    // Validated here so a bad value fails the reconcile visibly instead of crashing signaling.
    duration_secs("turn.credentialTtl", &cr.spec.turn.credential_ttl)?;
    let mut files = SecretFiles::of(cr);
    let volumes = std::mem::take(&mut files.volumes);

    let pod = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(crate::meta::labels(cr, Component::Signaling)),
            annotations: Some(BTreeMap::from([(
                CHECKSUM_ANNOTATION.to_string(),
                signaling_checksum(cr, obs, built),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![signaling_container(cr, obs, files)],
            volumes: Some(volumes),
            security_context: Some(pod_security_context(RUN_AS)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(
                i64::try_from(grace).unwrap_or(i64::MAX / 2) + 5,
            ),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".to_string(),
                when_unsatisfiable: "ScheduleAnyway".to_string(),
                label_selector: Some(label_selector(cr, Component::Signaling)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };

    Ok(Deployment {
        metadata: child_meta(cr, child_name(cr, "signaling"), Component::Signaling)?,
        spec: Some(DeploymentSpec {
            // With autoscaling on, the HPA owns the replica count: leave the field to it.
            replicas: (!spec.autoscaling.enabled).then_some(spec.replicas),
            selector: label_selector(cr, Component::Signaling),
            template: pod,
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `<name>-signaling` Service: type, port and annotations from the spec.
pub fn build_service(cr: &OtterDeployment, _obs: &Observed) -> Result<Service, BuildError> {
    let spec = &cr.spec.signaling.service;
    let mut metadata = child_meta(cr, child_name(cr, "signaling"), Component::Signaling)?;
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().to_string()),
            selector: Some(selector_labels(cr, Component::Signaling)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: spec.port,
                target_port: Some(IntOrString::String("http".to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `<name>-signaling` HorizontalPodAutoscaler when autoscaling is on.
pub fn build_hpa(
    cr: &OtterDeployment,
    _obs: &Observed,
) -> Result<Option<HorizontalPodAutoscaler>, BuildError> {
    let a = &cr.spec.signaling.autoscaling;
    if !a.enabled {
        return Ok(None);
    }
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(cr, child_name(cr, "signaling"), Component::Signaling)?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: child_name(cr, "signaling"),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The fewest signaling replicas that run (the HPA minimum when autoscaling).
pub fn min_replicas(cr: &OtterDeployment) -> i32 {
    let s = &cr.spec.signaling;
    if s.autoscaling.enabled {
        s.autoscaling.min_replicas
    } else {
        s.replicas
    }
}

/// `<name>-signaling` PodDisruptionBudget (maxUnavailable 1) when enabled and more than one
/// replica runs: with one replica it would block node drains forever.
pub fn build_pdb(
    cr: &OtterDeployment,
    _obs: &Observed,
) -> Result<Option<PodDisruptionBudget>, BuildError> {
    if !cr.spec.signaling.pod_disruption_budget.enabled || min_replicas(cr) < 2 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(cr, child_name(cr, "signaling"), Component::Signaling)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(cr, Component::Signaling)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::secrets::build_turn_secret;
    use crate::crd::{RedisMode, SecretKeyRef, ServiceType};
    use crate::testing::{cr, observed, secret};

    fn deployment(cr: &OtterDeployment, obs: &Observed) -> Deployment {
        let built: Vec<Secret> = build_turn_secret(cr, obs).unwrap().into_iter().collect();
        build_deployment(cr, obs, &built).unwrap()
    }

    fn pod(d: &Deployment) -> PodSpec {
        d.spec.clone().unwrap().template.spec.unwrap()
    }

    fn env_value(c: &Container, name: &str) -> Option<String> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    fn annotation(d: &Deployment) -> String {
        d.spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CHECKSUM_ANNOTATION]
            .clone()
    }

    #[test]
    fn ice_servers_list_stun_turn_udp_tcp_per_node_and_bracket_ipv6() {
        let cr = cr();
        let ice = ice_servers(&cr, &observed().turn_nodes);
        assert_eq!(
            ice.stun_uris,
            vec!["stun:203.0.113.7:3478", "stun:[2001:db8::5]:3478"]
        );
        assert_eq!(
            ice.turn_uris,
            vec![
                "turn:203.0.113.7:3478?transport=udp",
                "turn:203.0.113.7:3478?transport=tcp",
                "turn:[2001:db8::5]:3478?transport=udp",
                "turn:[2001:db8::5]:3478?transport=tcp",
            ]
        );
    }

    #[test]
    fn ice_servers_add_turns_with_tls_and_nothing_without_turn() {
        let mut cr = cr();
        cr.spec.turn.tls.enabled = true;
        cr.spec.turn.tls.secret_name = Some("tls".into());
        let ice = ice_servers(&cr, &observed().turn_nodes[..1]);
        assert_eq!(
            ice.turn_uris.last().unwrap(),
            "turns:203.0.113.7:5349?transport=tcp"
        );
        cr.spec.turn.enabled = false;
        assert_eq!(
            ice_servers(&cr, &observed().turn_nodes),
            IceServers::default()
        );
    }

    #[test]
    fn config_map_holds_the_contract_json() {
        let cr = cr();
        let cm = build_config_map(&cr, &observed()).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-signaling"));
        let json: serde_json::Value =
            serde_json::from_str(&cm.data.unwrap()[ICE_CONFIG_KEY]).unwrap();
        assert_eq!(json["stunUris"][0], "stun:203.0.113.7:3478");
        assert_eq!(json["turnUris"][0], "turn:203.0.113.7:3478?transport=udp");
    }

    #[test]
    fn relay_only_is_passed_to_signaling() {
        let mut cr = cr();
        cr.spec.signaling.relay_only = true;
        let d = deployment(&cr, &observed());
        assert_eq!(
            env_value(&pod(&d).containers[0], "OTTER_RELAY_ONLY").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn deployment_env_follows_the_signaling_contract() {
        let mut cr = cr();
        cr.spec.signaling.allowed_origins =
            vec!["https://a.example".into(), "https://b.example".into()];
        cr.spec.signaling.public_url = Some("https://calls.example".into());
        let d = deployment(&cr, &observed());
        let c = &pod(&d).containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(
                format!(
                    "ghcr.io/otter-dev/otter-signaling:{}",
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            )
        );
        assert_eq!(
            env_value(c, "OTTER_LISTEN").as_deref(),
            Some("0.0.0.0:8080")
        );
        assert_eq!(env_value(c, "OTTER_RELAY_ONLY"), None);
        // Metrics on their own port: the Service (possibly a public LoadBalancer) has only 8080.
        assert_eq!(
            env_value(c, "OTTER_METRICS_LISTEN").as_deref(),
            Some("0.0.0.0:9090")
        );
        let ports = c.ports.clone().unwrap_or_default();
        assert!(
            ports
                .iter()
                .any(|p| p.container_port == 9090 && p.name.as_deref() == Some("metrics"))
        );
        assert_eq!(
            env_value(c, "OTTER_ICE_CONFIG").as_deref(),
            Some("/etc/otter/ice-servers.json")
        );
        assert_eq!(
            env_value(c, "OTTER_TURN_SECRET_FILE").as_deref(),
            Some("/var/run/otter/turn/turn-secret")
        );
        assert_eq!(
            env_value(c, "OTTER_TOKEN_SECRET_FILE"),
            None,
            "no auth means open rooms"
        );
        assert_eq!(
            env_value(c, "OTTER_MAX_PEERS_PER_ROOM").as_deref(),
            Some("6")
        );
        assert_eq!(
            env_value(c, "OTTER_ALLOWED_ORIGINS").as_deref(),
            Some("https://a.example,https://b.example")
        );
        assert_eq!(env_value(c, "OTTER_TURN_TTL").as_deref(), Some("6h"));
        assert_eq!(env_value(c, "OTTER_LOG_FORMAT").as_deref(), Some("json"));
        assert_eq!(env_value(c, "OTTER_SHUTDOWN_GRACE").as_deref(), Some("10s"));
        assert_eq!(
            env_value(c, "OTTER_PUBLIC_URL").as_deref(),
            Some("https://calls.example")
        );
        let redis = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "OTTER_REDIS_URL")
            .unwrap();
        let key_ref = redis.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key_ref.name.as_str(), key_ref.key.as_str()),
            ("demo-redis-url", "url")
        );
        assert_eq!(pod(&d).termination_grace_period_seconds, Some(15));
    }

    #[test]
    fn deployment_mounts_config_and_secrets_read_only() {
        let mut cr = cr();
        cr.spec.signaling.auth.enabled = true;
        cr.spec.signaling.auth.secret_ref = Some(SecretKeyRef {
            name: "app-tokens".into(),
            key: Some("hmac".into()),
        });
        let d = deployment(&cr, &observed());
        let p = pod(&d);
        let c = &p.containers[0];
        assert_eq!(
            env_value(c, "OTTER_TOKEN_SECRET_FILE").as_deref(),
            Some("/var/run/otter/token/token-secret")
        );
        let mounts = c.volume_mounts.clone().unwrap();
        for (vol, path) in [
            ("config", "/etc/otter"),
            ("turn-secret", "/var/run/otter/turn"),
            ("token-secret", "/var/run/otter/token"),
        ] {
            let m = mounts.iter().find(|m| m.name == vol).unwrap();
            assert_eq!(m.mount_path, path);
            assert_eq!(m.read_only, Some(true));
            assert!(
                m.sub_path.is_none(),
                "subPath mounts never see ConfigMap updates"
            );
        }
        let volume = |name: &str| {
            let volumes = p.volumes.clone().unwrap();
            volumes
                .into_iter()
                .find(|v| v.name == name)
                .unwrap()
                .secret
                .unwrap()
        };
        let token = volume("token-secret");
        assert_eq!(token.secret_name.as_deref(), Some("app-tokens"));
        assert_eq!(token.items.unwrap()[0].key, "hmac");
        // The TURN secret to mint with comes from the keys Secret, which moves to a new value
        // only once every TURN pod accepts it (build::turn_keys).
        let turn = volume("turn-secret");
        assert_eq!(turn.secret_name.as_deref(), Some("demo-turn-keys"));
        assert_eq!(turn.items.unwrap()[0].key, "turn-secret");
    }

    #[test]
    fn deployment_is_hardened_and_probed() {
        let cr = cr();
        let d = deployment(&cr, &observed());
        let p = pod(&d);
        let psc = p.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(psc.run_as_group, Some(65532));
        let c = &p.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.clone().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(sc.capabilities.unwrap().add, None);
        let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert_eq!(live.port, IntOrString::String("http".into()));
        let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(c.ports.clone().unwrap()[0].container_port, 8080);
        assert_eq!(p.automount_service_account_token, Some(false));
        let spread = &p.topology_spread_constraints.unwrap()[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        let owners = d.metadata.owner_references.unwrap();
        assert_eq!(owners[0].name, "demo");
        assert_eq!(owners[0].uid, "0b7a7f7e-1111-2222-3333-444455556666");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(d.spec.unwrap().replicas, Some(2));
    }

    #[test]
    fn checksum_changes_with_secrets_but_not_with_turn_nodes_or_the_turn_secret() {
        let cr = cr();
        let obs = observed();
        let base = annotation(&deployment(&cr, &obs));

        let mut fewer_nodes = observed();
        fewer_nodes.turn_nodes.pop();
        assert_eq!(
            annotation(&deployment(&cr, &fewer_nodes)),
            base,
            "ICE list is hot-reloaded"
        );

        let mut rotated = observed();
        rotated.secrets.insert(
            "demo-turn-secret".into(),
            secret("demo-turn-secret", &[("turn-secret", "rotated")]),
        );
        assert_eq!(
            annotation(&deployment(&cr, &rotated)),
            base,
            "the TURN secret file is re-read: a rotation restarts no signaling pod"
        );

        let mut external = cr.clone();
        external.spec.redis.mode = RedisMode::External;
        external.spec.redis.external = Some(crate::crd::ExternalRedisSpec {
            secret_ref: SecretKeyRef {
                name: "ext".into(),
                key: None,
            },
        });
        let mut a = observed();
        a.secrets
            .insert("ext".into(), secret("ext", &[("url", "redis://one")]));
        let mut b = observed();
        b.secrets
            .insert("ext".into(), secret("ext", &[("url", "redis://two")]));
        assert_ne!(
            annotation(&deployment(&external, &a)),
            annotation(&deployment(&external, &b))
        );
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa() {
        let mut cr = cr();
        cr.spec.signaling.autoscaling.enabled = true;
        cr.spec.signaling.autoscaling.min_replicas = 3;
        cr.spec.signaling.autoscaling.max_replicas = 7;
        let d = deployment(&cr, &observed());
        assert_eq!(d.spec.unwrap().replicas, None);
        let hpa = build_hpa(&cr, &observed()).unwrap().unwrap().spec.unwrap();
        assert_eq!(hpa.scale_target_ref.name, "demo-signaling");
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 7));
        let target = hpa.metrics.unwrap()[0].resource.clone().unwrap().target;
        assert_eq!(target.average_utilization, Some(70));
    }

    #[test]
    fn pdb_only_with_more_than_one_replica() {
        let mut cr = cr();
        let pdb = build_pdb(&cr, &observed()).unwrap().unwrap().spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        cr.spec.signaling.replicas = 1;
        assert!(build_pdb(&cr, &observed()).unwrap().is_none());
    }

    #[test]
    fn service_takes_type_port_and_annotations_from_spec() {
        let mut cr = cr();
        cr.spec.signaling.service.type_ = ServiceType::LoadBalancer;
        cr.spec.signaling.service.port = 443;
        cr.spec.signaling.service.annotations.insert(
            "service.beta.kubernetes.io/aws-load-balancer-type".into(),
            "external".into(),
        );
        let svc = build_service(&cr, &observed()).unwrap();
        assert_eq!(
            svc.metadata.annotations.unwrap()["service.beta.kubernetes.io/aws-load-balancer-type"],
            "external"
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap()[0].port, 443);
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/component"],
            "signaling"
        );
    }

    #[test]
    fn bad_duration_is_an_error_not_a_panic() {
        let mut cr = cr();
        cr.spec.signaling.shutdown_grace_period = "soon".into();
        assert!(matches!(
            build_deployment(&cr, &observed(), &[]),
            Err(BuildError::InvalidDuration { .. })
        ));
    }
}
