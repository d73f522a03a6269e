//! The `OtterDeployment` custom resource (`otter.dev/v1alpha1`).
//!
//! Every field has a default so that an empty `spec: {}` is a working backend. Defaults are
//! written into the schema (the apiserver fills them in, so `kubectl get -o yaml` shows the
//! effective values), except for images: those follow the operator's version and are resolved at
//! reconcile time, so upgrading the operator upgrades the components it runs.
//!
//! Cross-field rules are CEL `x-kubernetes-validations`, so bad input is refused by
//! `kubectl apply` with the message written here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Duration strings accepted by the signaling server (humantime, e.g. `6h`, `90s`, `1h30m`).
const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// Desired state of one Otter calling backend.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "otter.dev",
    version = "v1alpha1",
    kind = "OtterDeployment",
    plural = "otterdeployments",
    shortname = "otter",
    namespaced,
    doc = "An Otter calling backend: signaling, TURN relay and Redis, built from one resource.",
    status = "OtterDeploymentStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Signaling","type":"integer","description":"Ready signaling pods","jsonPath":".status.signaling.ready"}"#,
    printcolumn = r#"{"name":"TURN nodes","type":"integer","description":"Ready TURN pods (one per TURN node)","jsonPath":".status.turn.ready"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.signalingUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "self.redis.mode != 'Disabled' || (self.signaling.replicas == 1 && !self.signaling.autoscaling.enabled)"
).message("redis.mode Disabled keeps room state in one process: set signaling.replicas to 1 and leave signaling.autoscaling off, or use a Managed or External redis"))]
#[serde(rename_all = "camelCase")]
pub struct OtterDeploymentSpec {
    /// The signaling server: WebSocket rooms, ICE server list, TURN credentials.
    #[serde(default)]
    pub signaling: SignalingSpec,
    /// The TURN relay (coturn) on host networking, one pod per selected node.
    #[serde(default)]
    pub turn: TurnSpec,
    /// Where room state lives when signaling runs more than one replica.
    #[serde(default)]
    pub redis: RedisSpec,
}

/// The signaling Deployment and its Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalingSpec {
    /// Number of signaling pods (ignored while autoscaling is enabled).
    #[serde(default = "default_signaling_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Container image; defaults to `ghcr.io/otter-dev/otter-signaling:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of the signaling container; defaults to requests 100m CPU / 64Mi and a
    /// 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Service in front of the signaling pods.
    #[serde(default)]
    pub service: SignalingServiceSpec,
    /// Largest number of peers in one room (a full mesh: every peer sends to every other).
    #[serde(default = "default_max_peers")]
    #[schemars(range(min = 2, max = 32))]
    pub max_peers_per_room: i32,
    /// Room tokens: when enabled, joining a room needs a token signed with the token secret.
    #[serde(default)]
    pub auth: SignalingAuthSpec,
    /// Origins allowed to open the WebSocket (e.g. `https://app.example.com`); empty allows any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Public URL of the signaling server, when it is reached through an Ingress or a DNS name
    /// the operator cannot see. Wins over the Service address in `status.signalingUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https?|wss?)://.+')").message("signaling.publicUrl must start with http://, https://, ws:// or wss://"))]
    pub public_url: Option<String>,
    /// How long the server drains connections on shutdown (humantime, e.g. `10s`). The pod's
    /// termination grace period is set 5 seconds above it.
    #[serde(default = "default_shutdown_grace")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub shutdown_grace_period: String,
    /// Horizontal pod autoscaling on CPU.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// A PodDisruptionBudget (maxUnavailable 1) while more than one replica runs.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Node selector of the signaling pods.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the signaling pods.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Relay-only media: clients get TURN servers only, no STUN, so with the SDK's
    /// `iceTransportPolicy: "relay"` peers never learn each other's IP addresses (all media then
    /// goes through TURN). See docs/privacy.md.
    #[serde(default)]
    pub relay_only: bool,
}

impl Default for SignalingSpec {
    fn default() -> Self {
        Self {
            replicas: default_signaling_replicas(),
            image: None,
            resources: None,
            service: SignalingServiceSpec::default(),
            max_peers_per_room: default_max_peers(),
            auth: SignalingAuthSpec::default(),
            allowed_origins: Vec::new(),
            public_url: None,
            shutdown_grace_period: default_shutdown_grace(),
            autoscaling: AutoscalingSpec::default(),
            pod_disruption_budget: PodDisruptionBudgetSpec::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            relay_only: false,
        }
    }
}

/// Service type of the signaling Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only (put an Ingress or Gateway in front).
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer (on EKS add the NLB annotations).
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The signaling Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalingServiceSpec {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port of the Service (the pods listen on 8080).
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations of the Service, e.g. `service.beta.kubernetes.io/aws-load-balancer-type: external`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Default for SignalingServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Room token authentication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalingAuthSpec {
    /// Require a room token signed by the application's backend. Off means open rooms.
    #[serde(default)]
    pub enabled: bool,
    /// A Secret of yours holding the token signing secret. Unset: the operator generates
    /// `<name>-token-secret` (key `token-secret`) once and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A key in a Secret in the OtterDeployment's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("secretRef.name must not be empty"))]
    pub name: String,
    /// Key in the Secret; empty means the component's default key (`turn-secret`,
    /// `token-secret` or `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key to read, falling back to `default`.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        match self.key.as_deref() {
            Some(k) if !k.is_empty() => k,
            _ => default,
        }
    }
}

/// CPU-based autoscaling of the signaling Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("signaling.autoscaling.minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Create a HorizontalPodAutoscaler.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, in percent of the CPU request.
    #[serde(
        default = "default_target_cpu",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_target_cpu(),
        }
    }
}

/// The signaling PodDisruptionBudget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create a PodDisruptionBudget with maxUnavailable 1 when more than one replica runs.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The TURN relay.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.port < self.relayPortRange.min || self.port > self.relayPortRange.max").message("turn.port must lie outside turn.relayPortRange"))]
#[x_kube(validation = Rule::new("!self.tls.enabled || (self.tls.port != self.port && (self.tls.port < self.relayPortRange.min || self.tls.port > self.relayPortRange.max))").message("turn.tls.port must differ from turn.port and lie outside turn.relayPortRange"))]
#[x_kube(validation = Rule::new("!self.metrics.enabled || ([self.metrics.port, self.metrics.redisPort].all(r, r != self.port && (!self.tls.enabled || r != self.tls.port)))").message("turn.metrics.port and turn.metrics.redisPort must differ from turn.port and turn.tls.port"))]
#[serde(rename_all = "camelCase")]
pub struct TurnSpec {
    /// Run coturn. Off: clients only get what STUN-less direct connectivity gives them.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// coturn image; defaults to `docker.io/coturn/coturn:4.6.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Nodes that run TURN (host networking, the relay ports open to the internet).
    #[serde(default = "default_turn_node_selector")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the TURN pods, e.g. for a tainted public node group.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Listening port for STUN and TURN over UDP and TCP.
    #[serde(default = "default_turn_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// UDP ports coturn relays media on.
    #[serde(default)]
    pub relay_port_range: PortRange,
    /// TURN realm.
    #[serde(default = "default_realm")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9.-]*$')").message("turn.realm must be a domain-like name: letters, digits, dots and dashes"))]
    pub realm: String,
    /// Lifetime of the TURN credentials signaling hands out (humantime, e.g. `6h`).
    #[serde(default = "default_credential_ttl")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub credential_ttl: String,
    /// Peer ranges denied on top of the built-in private, loopback, link-local, CGNAT and
    /// multicast ranges: CIDRs such as your cluster's pod and service ranges.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(r, isCIDR(r))").message("turn.extraDeniedPeerRanges must be CIDRs such as 10.100.0.0/16 or fd00::/8"))]
    pub extra_denied_peer_ranges: Vec<String>,
    /// A Secret of yours holding the TURN shared secret. Unset: the operator generates
    /// `<name>-turn-secret` (key `turn-secret`) once and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// TURN over TLS (`turns:`).
    #[serde(default)]
    pub tls: TurnTlsSpec,
    /// Compute resources of the coturn container; defaults to requests 100m CPU / 64Mi and a
    /// 512Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How long a TURN pod that is going away (rollout, node unlabelled, CR deleted) keeps
    /// relaying the calls it carries: its node leaves the ICE servers at once, then the pod
    /// waits until its relay allocations are gone or this much time has passed.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("!self.contains('d') && !self.contains('ms') && duration(self) <= duration('24h')").message("turn.drainTimeout must be whole seconds, minutes or hours up to 24h, such as 15m or 1h30m"))]
    pub drain_timeout: String,
    /// Prometheus metrics of coturn (allocations, relayed traffic), from its Redis statistics.
    #[serde(default)]
    pub metrics: TurnMetricsSpec,
    /// Allocation and bandwidth limits of each coturn (per node).
    #[serde(default)]
    pub quotas: TurnQuotaSpec,
    /// The operator's reachability probe of the published TURN addresses.
    #[serde(default)]
    pub probe: TurnProbeSpec,
}

impl Default for TurnSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            node_selector: default_turn_node_selector(),
            tolerations: Vec::new(),
            port: default_turn_port(),
            relay_port_range: PortRange::default(),
            realm: default_realm(),
            credential_ttl: default_credential_ttl(),
            extra_denied_peer_ranges: Vec::new(),
            secret_ref: None,
            tls: TurnTlsSpec::default(),
            resources: None,
            drain_timeout: default_drain_timeout(),
            metrics: TurnMetricsSpec::default(),
            quotas: TurnQuotaSpec::default(),
            probe: TurnProbeSpec::default(),
        }
    }
}

/// TURN metrics: a Redis of the TURN pod's own that coturn publishes its statistics to, and
/// `otter-signaling turn-exporter` serving them on `port` (docs/operations.md, "TURN metrics").
/// Both ports are on the node (host network): the exporter's on all its addresses, the
/// Redis on loopback only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.port != self.redisPort").message("turn.metrics.port and turn.metrics.redisPort must differ"))]
#[serde(rename_all = "camelCase")]
pub struct TurnMetricsSpec {
    /// Add the statistics Redis and the exporter to each TURN pod.
    #[serde(default)]
    pub enabled: bool,
    /// The exporter's `/metrics` port on the node.
    #[serde(default = "default_turn_metrics_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
    /// The statistics Redis port on the node's loopback.
    #[serde(default = "default_turn_stats_redis_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub redis_port: i32,
}

impl Default for TurnMetricsSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            port: default_turn_metrics_port(),
            redis_port: default_turn_stats_redis_port(),
        }
    }
}

fn default_turn_metrics_port() -> i32 {
    9641
}
fn default_turn_stats_redis_port() -> i32 {
    6390
}

/// A range of ports, both ends included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.min < self.max").message("turn.relayPortRange.min must be lower than turn.relayPortRange.max"))]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First relay port.
    #[serde(default = "default_relay_min")]
    #[schemars(range(min = 1024, max = 65535))]
    pub min: i32,
    /// Last relay port.
    #[serde(default = "default_relay_max")]
    #[schemars(range(min = 1024, max = 65535))]
    pub max: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            min: default_relay_min(),
            max: default_relay_max(),
        }
    }
}

/// TURN over TLS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.enabled || (has(self.secretName) && self.secretName.size() > 0)").message("turn.tls.secretName (a kubernetes.io/tls Secret) is required when turn.tls.enabled is true"))]
#[serde(rename_all = "camelCase")]
pub struct TurnTlsSpec {
    /// Listen for TURN over TLS and DTLS and publish `turns:` URIs.
    #[serde(default)]
    pub enabled: bool,
    /// TLS port.
    #[serde(default = "default_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`), e.g. from cert-manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl Default for TurnTlsSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            port: default_tls_port(),
            secret_name: None,
        }
    }
}

/// How Redis is provided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// The operator runs a one-replica Redis StatefulSet reachable only from signaling pods.
    #[default]
    Managed,
    /// Your Redis (e.g. ElastiCache): the URL comes from a Secret of yours.
    External,
    /// No Redis: signaling keeps rooms in memory (one replica only).
    Disabled,
}

/// Room state storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.mode != 'External' || has(self.external)").message("redis.external.secretRef is required when redis.mode is External"))]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `Managed`, `External` or `Disabled`.
    #[serde(default)]
    pub mode: RedisMode,
    /// Settings of the managed Redis.
    #[serde(default)]
    pub managed: ManagedRedisSpec,
    /// Your Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedisSpec>,
}

/// The Redis StatefulSet the operator runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedisSpec {
    /// Redis image; defaults to `docker.io/library/redis:7.4-alpine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources; defaults to requests 50m CPU / 64Mi and a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Keep Redis data on a PersistentVolume (room state is short-lived, so off by default).
    #[serde(default)]
    pub persistence: PersistenceSpec,
}

/// Redis persistence.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Append-only file on a PersistentVolumeClaim.
    #[serde(default)]
    pub enabled: bool,
    /// Size of the claim.
    #[serde(default = "default_persistence_size")]
    pub size: String,
    /// StorageClass of the claim; unset uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            size: default_persistence_size(),
            storage_class_name: None,
        }
    }
}

/// A Redis the operator does not run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedisSpec {
    /// A Secret key holding the URL (`redis://…` or `rediss://…`, password included); key
    /// defaults to `url`.
    pub secret_ref: SecretKeyRef,
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtterDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded` (kstatus conventions).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Signaling pods.
    #[serde(default)]
    pub signaling: ComponentStatus,
    /// TURN pods (one per TURN node).
    #[serde(default)]
    pub turn: ComponentStatus,
    /// Managed Redis pods (0 of 0 for an external or no Redis).
    #[serde(default)]
    pub redis: ComponentStatus,
    /// Where clients reach signaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_url: Option<String>,
    /// The STUN/TURN URIs handed to clients.
    #[serde(default)]
    pub turn_uris: Vec<String>,
    /// Per TURN node: could the operator allocate a relay on its published address?
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_reachability: Vec<TurnNodeReachability>,
    /// TURN nodes whose pod is going away: left out of `turnUris`, relaying the calls they
    /// still carry until `turn.drainTimeout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_draining: Vec<DrainingTurnNode>,
}

/// A TURN node whose pod is draining.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainingTurnNode {
    /// Node name.
    pub node: String,
    /// The terminating TURN pod.
    pub pod: String,
    /// When the pod exits at the latest (its deletion time plus the grace period), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Relay allocations the pod still holds, UDP and TCP, as its TURN exporter counts them
    /// (only with `turn.metrics.enabled`; absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<u64>,
}

/// Ready and desired pod counts of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods wanted.
    #[serde(default)]
    pub desired: i32,
    /// Pods ready.
    #[serde(default)]
    pub ready: i32,
}

fn default_true() -> bool {
    true
}
fn default_signaling_replicas() -> i32 {
    2
}
fn default_max_peers() -> i32 {
    6
}
fn default_shutdown_grace() -> String {
    "10s".into()
}
fn default_service_port() -> i32 {
    80
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_cpu() -> i32 {
    70
}
fn default_turn_node_selector() -> BTreeMap<String, String> {
    BTreeMap::from([("otter.dev/turn".to_string(), "true".to_string())])
}
fn default_turn_port() -> i32 {
    3478
}
fn default_tls_port() -> i32 {
    5349
}
fn default_relay_min() -> i32 {
    49152
}
fn default_relay_max() -> i32 {
    65535
}
fn default_realm() -> String {
    "otter".into()
}
fn default_credential_ttl() -> String {
    "6h".into()
}
fn default_drain_timeout() -> String {
    "15m".into()
}
fn default_persistence_size() -> String {
    "1Gi".into()
}

/// The CRD as YAML, exactly as `otter-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let crd = OtterDeployment::crd();
    let body = serde_norway::to_string(&crd)?;
    Ok(format!(
        "# Generated by `otter-operator crd` from operator/src/crd.rs. Do not edit.\n---\n{body}"
    ))
}

/// Limits of each coturn, so one user or a flood of allocations cannot take a TURN node down.
/// 0 means no limit (coturn's default); the defaults are set for calls of up to 6 peers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.allocationsTotal == 0 || self.allocationsPerUser <= self.allocationsTotal").message("turn.quotas.allocationsPerUser must not exceed turn.quotas.allocationsTotal (0 means no limit)"))]
#[x_kube(validation = Rule::new("self.totalBytesPerSecond == 0 || (self.sessionBytesPerSecond != 0 && self.sessionBytesPerSecond <= self.totalBytesPerSecond)").message("turn.quotas.sessionBytesPerSecond must be set (not 0) and not exceed turn.quotas.totalBytesPerSecond when that is set"))]
#[x_kube(validation = Rule::new("self.sessionBytesPerSecond == 0 || self.sessionBytesPerSecond >= 16000").message("turn.quotas.sessionBytesPerSecond below 16000 (128 kbit/s) cannot carry a video call: raise it, or use 0 for no limit"))]
#[serde(rename_all = "camelCase")]
pub struct TurnQuotaSpec {
    /// Concurrent allocations one TURN username may hold (coturn `user-quota`). The usernames
    /// signaling mints are per connection; a peer in a 6-peer mesh holds up to ~20 (5 peer
    /// connections, UDP and TCP, two network interfaces).
    #[serde(default = "default_user_quota")]
    #[schemars(range(min = 0, max = 1000000))]
    pub allocations_per_user: i32,
    /// Concurrent allocations on one node (coturn `total-quota`); each holds a relay port.
    #[serde(default = "default_total_quota")]
    #[schemars(range(min = 0, max = 1000000))]
    pub allocations_total: i32,
    /// Bytes per second one allocation may relay, each direction (coturn `max-bps`); more is
    /// dropped. The default, 1250000 (10 Mbit/s), carries HD video and screen sharing.
    #[serde(default = "default_session_bps")]
    #[schemars(range(min = 0, max = 12500000000_i64))]
    pub session_bytes_per_second: i64,
    /// Bytes per second one node relays in all, each direction (coturn `bps-capacity`): new
    /// allocations are refused once the sessions' caps add up to it. Default 0: no limit (the
    /// node's network is the limit).
    #[serde(default)]
    #[schemars(range(min = 0, max = 12500000000_i64))]
    pub total_bytes_per_second: i64,
}

impl Default for TurnQuotaSpec {
    fn default() -> Self {
        Self {
            allocations_per_user: default_user_quota(),
            allocations_total: default_total_quota(),
            session_bytes_per_second: default_session_bps(),
            total_bytes_per_second: 0,
        }
    }
}

fn default_user_quota() -> i32 {
    50
}
fn default_total_quota() -> i32 {
    4000
}
fn default_session_bps() -> i64 {
    1_250_000
}

/// The reachability probe: on every reconcile (and so every `--turn-probe-interval`, five minutes
/// by default, while Ready) the operator allocates a relay on each published TURN address with a
/// fresh credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TurnProbeSpec {
    /// Probe, and report `TurnReachable`. Turn off where the operator's pod cannot reach the
    /// nodes' published addresses on UDP `turn.port` (the condition would be False for that).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for TurnProbeSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Whether the operator could allocate a relay on one TURN node's published address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnNodeReachability {
    /// Node name.
    pub node: String,
    /// The published address probed (`ip:port`, UDP).
    pub address: String,
    /// A relay was allocated.
    pub reachable: bool,
    /// What the last probe gave, e.g. `allocated a relay` or `refused the Allocate with 401 …`.
    pub message: String,
    /// When `reachable` last changed.
    pub last_transition_time: Time,
}
