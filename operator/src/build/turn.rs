//! The TURN relay: a coturn DaemonSet on host networking and the node-address ConfigMap.
//!
//! ## The external address
//!
//! One pod template serves every TURN node, so the per-node public address cannot be written into
//! the arguments. The operator, which watches the Nodes anyway, writes `<name>-turn` (a ConfigMap
//! keyed by node name holding the node's ExternalIP, else InternalIP). An init container in the
//! coturn image reads its own node's entry (`spec.nodeName` via the downward API) and, when it
//! differs from `status.hostIP` (the InternalIP the pod binds), writes
//! `external-ip=<public>/<private>` into a config file coturn loads with `-c`. So coturn
//! advertises relay addresses clients can reach (1:1 NAT on EC2), the pods need no API access
//! and no outside address lookup, and the template never changes when nodes come and go.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
    SecretVolumeSource, TCPSocketAction, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::build::pod::secret_volume;
use crate::build::pod::{
    container_security_context, empty_dir, field_env, mount, pod_security_context, resources_or,
};
use crate::build::secrets::{SecretSource, TURN_SECRET_KEY, turn_secret_source};
use crate::build::signaling::duration_secs;
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::meta::{
    CHECKSUM_ANNOTATION, Component, checksum, child_meta, child_name, label_selector, labels,
};
use crate::observed::Observed;

/// uid of `nobody`, the user the coturn image runs as.
pub const COTURN_UID: i64 = 65534;
/// Env var holding the shared secret inside the coturn container.
pub const TURN_SECRET_ENV: &str = "OTTER_TURN_SECRET";
/// Where the init container writes the coturn config file.
pub const RUN_DIR: &str = "/var/run/otter/coturn";
/// Where the node-address ConfigMap is mounted.
pub const NODES_DIR: &str = "/etc/otter/turn-nodes";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/otter/turn-tls";

/// Peer ranges coturn never relays to: private, loopback, link-local (cloud metadata
/// 169.254.169.254), CGNAT, "this network", IETF and benchmarking ranges, multicast and
/// reserved, and their IPv6 counterparts (IPv4-mapped addresses included, or they would bypass
/// the IPv4 list).
pub const BUILTIN_DENIED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    // Not "::/128": coturn 4.6 reads the range "::-::" as matching every IPv4 peer, which
    // denied all relaying (found on real nodes: "A peer IP 198.51.100.11 denied in the range:
    // ::-::"). The unspecified address is never a reachable peer anyway.
    "::1/128",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// A CIDR as coturn's `start-end` range (coturn's `denied-peer-ip` takes ranges, not CIDRs).
pub fn cidr_to_range(cidr: &str) -> Result<String, BuildError> {
    let bad = || BuildError::InvalidCidr(cidr.to_string());
    let (addr, prefix) = cidr.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    match addr {
        IpAddr::V4(v4) => {
            if prefix > 32 {
                return Err(bad());
            }
            let host_bits = 32 - prefix;
            let mask = if host_bits == 32 {
                0
            } else {
                u32::MAX << host_bits
            };
            let start = u32::from(v4) & mask;
            let end = start | !mask;
            Ok(format!("{}-{}", Ipv4Addr::from(start), Ipv4Addr::from(end)))
        }
        IpAddr::V6(v6) => {
            if prefix > 128 {
                return Err(bad());
            }
            let host_bits = 128 - prefix;
            let mask = if host_bits == 128 {
                0
            } else {
                u128::MAX << host_bits
            };
            let start = u128::from(v6) & mask;
            let end = start | !mask;
            Ok(format!("{}-{}", Ipv6Addr::from(start), Ipv6Addr::from(end)))
        }
    }
}

/// Built-in denied ranges plus the spec's extras, as CIDRs.
pub fn denied_peer_cidrs(cr: &OtterDeployment) -> Vec<String> {
    let mut all: Vec<String> = BUILTIN_DENIED_RANGES
        .iter()
        .map(|s| s.to_string())
        .collect();
    for extra in &cr.spec.turn.extra_denied_peer_ranges {
        if !all.contains(extra) {
            all.push(extra.clone());
        }
    }
    all
}

/// The coturn arguments. Everything hardening-related lives here, so a test can read it.
pub fn coturn_args(cr: &OtterDeployment) -> Result<Vec<String>, BuildError> {
    let t = &cr.spec.turn;
    let mut args = vec![
        // Written by the init container: the external-ip mapping of this node.
        "-c".to_string(),
        format!("{RUN_DIR}/turnserver.conf"),
        "--log-file=stdout".to_string(),
        "--simple-log".to_string(),
        "--pidfile=/var/tmp/turnserver.pid".to_string(),
        format!("--listening-port={}", t.port),
        format!("--min-port={}", t.relay_port_range.min),
        format!("--max-port={}", t.relay_port_range.max),
        format!("--realm={}", t.realm),
        // The shared secrets live in coturn's SQLite database, read on every request: the
        // secrets agent rotates them there without a restart (and they stay off the command
        // line, which the host's process list shows).
        "--use-auth-secret".to_string(),
        format!("--userdb={TURN_DB}"),
        "--fingerprint".to_string(),
        "--no-cli".to_string(),
        "--no-multicast-peers".to_string(),
        "--no-software-attribute".to_string(),
        "--stale-nonce=600".to_string(),
        // No NAT behaviour discovery (WebRTC never asks for it): without this flag coturn also
        // binds every listening port + 1, which the port clash check and the CR do not show.
        "--no-rfc5780".to_string(),
    ];
    if t.tls.enabled {
        args.extend([
            format!("--tls-listening-port={}", t.tls.port),
            format!("--cert={TLS_DIR}/tls.crt"),
            format!("--pkey={TLS_DIR}/tls.key"),
            "--no-tlsv1".to_string(),
            "--no-tlsv1_1".to_string(),
        ]);
    } else {
        args.extend(["--no-tls".to_string(), "--no-dtls".to_string()]);
    }
    for cidr in denied_peer_cidrs(cr) {
        args.push(format!("--denied-peer-ip={}", cidr_to_range(&cidr)?));
    }
    args.extend(crate::build::turn_quotas::quota_args(cr));
    Ok(args)
}

/// The init container's script: wait for this node's published address, write the coturn
/// config file with the external-ip mapping.
pub const INIT_SCRIPT: &str = r##"set -eu
umask 077
f="/etc/otter/turn-nodes/$NODE_NAME"
conf="/var/run/otter/coturn/turnserver.conf"
i=0
while [ ! -s "$f" ]; do
  i=$((i + 1))
  if [ "$i" -gt 90 ]; then
    echo "otter: no address published for node $NODE_NAME in $f" >&2
    exit 1
  fi
  sleep 2
done
ip="$(cat "$f")"
if [ "$ip" = "$HOST_IP" ]; then
  echo "# node address $ip is bound locally, no mapping" > "$conf"
else
  echo "external-ip=$ip/$HOST_IP" > "$conf"
fi
echo "otter: node $NODE_NAME relays as $ip (local $HOST_IP)"
"##;

/// Where coturn's SQLite user database lives (the `data` emptyDir): it holds only the TURN REST
/// API secrets, which coturn reads from it on every request.
pub const TURN_DB: &str = "/var/lib/coturn/turndb";
/// Where the TURN secret is mounted for the secrets agent (a Secret volume: the kubelet updates
/// it in place when the Secret changes).
pub const SECRET_DIR: &str = "/etc/otter/turn-secret";
/// How often the secrets agent looks at the mounted secret.
pub const AGENT_POLL_SECONDS: u64 = 5;
/// How long the previous secret stays accepted beyond the credential TTL: covers the kubelet's
/// delay in updating mounted Secrets and the signaling rollout that starts minting with the new
/// one (credentials minted just before it stay valid for a whole TTL).
pub const ROTATION_MARGIN_SECONDS: u64 = 600;

/// Seeds coturn's user database with the TURN secret (env `OTTER_TURN_SECRET`) before coturn
/// starts. Run after [`INIT_SCRIPT`] by the init container; env `OTTER_TURN_DB`,
/// `OTTER_TURN_REALM`. `turnadmin` takes the secret as an argument: only root on the node and
/// the pod's own processes can read it there, for the instant turnadmin runs.
pub const SECRETS_INIT_SCRIPT: &str = r##"set -eu
case "$OTTER_TURN_SECRET" in
  ""|*"
"*) echo "otter: the TURN shared secret must be one non-empty line" >&2; exit 1 ;;
esac
turnadmin --delete-all-secrets -r "$OTTER_TURN_REALM" -b "$OTTER_TURN_DB" >/dev/null 2>&1 || true
if ! turnadmin -s "$OTTER_TURN_SECRET" -r "$OTTER_TURN_REALM" -b "$OTTER_TURN_DB" >/dev/null 2>&1; then
  echo "otter: turnadmin could not store the TURN secret in $OTTER_TURN_DB" >&2
  exit 1
fi
echo "otter: TURN secret stored in $OTTER_TURN_DB"
"##;

/// The secrets agent beside coturn: when the mounted secret changes, it adds the new value to
/// coturn's database at once and drops the previous one `keep` seconds later, so credentials of
/// both are accepted meanwhile and coturn never restarts. Arguments: the secret file, keep and
/// poll seconds; env `OTTER_TURN_DB`, `OTTER_TURN_REALM`. A second rotation within `keep` drops
/// the oldest value at once.
pub const SECRETS_AGENT_SCRIPT: &str = r##"file="$1"; keep="$2"; poll="$3"
admin() { turnadmin "$@" -r "$OTTER_TURN_REALM" -b "$OTTER_TURN_DB" >/dev/null 2>&1; }
# Values to drop when the timer runs out, one per line.
old=""
left=0
drop_old() {
  while IFS= read -r v; do
    [ -z "$v" ] || admin -X "$v" || echo "otter: could not drop a previous TURN secret" >&2
  done <<EOF
$old
EOF
  old=""
}
cur="$(cat "$file" 2>/dev/null || true)"
[ -z "$cur" ] || admin -s "$cur" || echo "otter: could not store the TURN secret" >&2
# The init container stored the value of the pod's start; if the file is newer, that value
# is a previous one: accepted for `keep` seconds more, like any other.
stored="$(turnadmin -S -r "$OTTER_TURN_REALM" -b "$OTTER_TURN_DB" 2>/dev/null || true)"
while IFS= read -r line; do
  v="${line%"[$OTTER_TURN_REALM]"}"
  if [ "$v" != "$line" ] && [ -n "$v" ] && [ "$v" != "$cur" ]; then
    old="$old$v
"
    left="$keep"
  fi
done <<EOF
$stored
EOF
while :; do
  sleep "$poll"
  new="$(cat "$file" 2>/dev/null || true)"
  if [ -n "$new" ] && [ "$new" != "$cur" ]; then
    case "$new" in *"
"*) echo "otter: ignoring a TURN secret of more than one line" >&2; continue ;; esac
    if ! admin -s "$new"; then echo "otter: could not store the new TURN secret" >&2; continue; fi
    # A rotation while a previous value is still kept drops that one now.
    drop_old
    old="$cur
"
    cur="$new"
    left="$keep"
    echo "otter: TURN secret rotated; the previous one stays accepted for ${keep}s"
  elif [ -n "$old" ]; then
    left=$((left - poll))
    if [ "$left" -le 0 ]; then
      drop_old
      echo "otter: previous TURN secret dropped"
    fi
  fi
done
"##;

/// `<name>-turn` ConfigMap: node name → published address, read by the init container.
pub fn build_nodes_config_map(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<ConfigMap>, BuildError> {
    if !cr.spec.turn.enabled {
        return Ok(None);
    }
    // A draining node keeps its entry: the pod that replaces it in a rollout reads it at start.
    let draining = obs
        .draining_turn_nodes
        .iter()
        .filter_map(|d| Some((d.node.clone(), d.address?.to_string())));
    let data: BTreeMap<String, String> = obs
        .turn_nodes
        .iter()
        .map(|n| (n.name.clone(), n.public_ip.to_string()))
        .chain(draining)
        .collect();
    Ok(Some(ConfigMap {
        metadata: child_meta(cr, child_name(cr, "turn"), Component::Turn)?,
        data: Some(data),
        ..Default::default()
    }))
}

/// The checksum on the TURN pod template: the TLS key pair, which coturn reads only at start.
/// The shared secret is not in it: the secrets agent rotates it without a restart.
pub fn turn_checksum(cr: &OtterDeployment, obs: &Observed) -> String {
    let (crt, key) = match (cr.spec.turn.tls.enabled, &cr.spec.turn.tls.secret_name) {
        (true, Some(name)) => (
            obs.secret_value(name, "tls.crt").unwrap_or_default(),
            obs.secret_value(name, "tls.key").unwrap_or_default(),
        ),
        _ => (&[][..], &[][..]),
    };
    checksum([("tls.crt", crt), ("tls.key", key)])
}

/// The coturn container's preStop hook: wait until no relay allocation is left on this node, or
/// the drain timeout has passed; the kubelet sends SIGTERM only after the hook returns. An
/// allocation is a relay socket: a UDP socket bound in the relay port range, counted in the
/// node's `/proc/net` tables (the pod is on host networking). TCP is left out: the default relay
/// range overlaps the kernel's ephemeral ports, and every outgoing TCP connection of the node
/// (kubelet to the API server) would count; browsers relay over UDP allocations anyway.
/// Arguments: timeout in seconds, relay range min and max.
pub const DRAIN_SCRIPT: &str = r##"timeout="$1"; min="$2"; max="$3"
count() {
  n=0
  for t in /proc/net/udp /proc/net/udp6; do
    [ -r "$t" ] || continue
    while read -r _ local _; do
      port="${local##*:}"
      case "$port" in *[!0-9A-Fa-f]*|"") continue ;; esac
      p=$((0x$port))
      if [ "$p" -ge "$min" ] && [ "$p" -le "$max" ]; then n=$((n + 1)); fi
    done < "$t"
  done
  echo "$n"
}
# A hook's output is not logged: tell through coturn's own stdout (the pod log).
pidfile="${OTTER_TURN_PIDFILE:-/var/tmp/turnserver.pid}"
say() { echo "otter: $*" > "/proc/$(cat "$pidfile" 2>/dev/null)/fd/1" 2>/dev/null || echo "otter: $*"; }
waited=0
left=$(count)
say "draining: $left relay allocation(s), waiting up to ${timeout}s"
while [ "$left" -gt 0 ] && [ "$waited" -lt "$timeout" ]; do
  sleep 2
  waited=$((waited + 2))
  left=$(count)
done
say "drained after ${waited}s: $left relay allocation(s) left"
"##;

/// Seconds the kubelet waits after the drain before it kills coturn: SIGTERM ends coturn at
/// once (see `share_process_namespace`), this only covers a slow exit.
pub const DRAIN_MARGIN_SECONDS: i64 = 30;

fn pre_stop(cr: &OtterDeployment) -> Result<Lifecycle, BuildError> {
    let t = &cr.spec.turn;
    let timeout = duration_secs("turn.drainTimeout", &t.drain_timeout)?;
    Ok(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    DRAIN_SCRIPT.to_string(),
                    "drain".to_string(),
                    timeout.to_string(),
                    t.relay_port_range.min.to_string(),
                    t.relay_port_range.max.to_string(),
                ]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn tcp_probe(port: i32, period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// The init container: this node's external-ip mapping into coturn's config file, the TURN
/// secret into coturn's database.
fn init_container(cr: &OtterDeployment, image: &str, secret: &SecretSource) -> Container {
    Container {
        name: "external-ip".to_string(),
        image: Some(image.to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("{INIT_SCRIPT}{SECRETS_INIT_SCRIPT}"),
        ]),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("HOST_IP", "status.hostIP"),
            EnvVar {
                name: TURN_SECRET_ENV.to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: secret.key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            plain_env("OTTER_TURN_DB", TURN_DB),
            plain_env("OTTER_TURN_REALM", &cr.spec.turn.realm),
        ]),
        resources: Some(resources_or(None, "10m", "16Mi", "32Mi")),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(vec![
            mount("nodes", NODES_DIR, true),
            mount("run", RUN_DIR, false),
            mount("data", "/var/lib/coturn", false),
        ]),
        ..Default::default()
    }
}

/// The secrets agent container (see [`SECRETS_AGENT_SCRIPT`]): the previous secret stays
/// accepted for the credential TTL plus [`ROTATION_MARGIN_SECONDS`].
fn secrets_agent(cr: &OtterDeployment, image: &str) -> Result<Container, BuildError> {
    let ttl = duration_secs("turn.credentialTtl", &cr.spec.turn.credential_ttl)?;
    let keep = ttl.saturating_add(ROTATION_MARGIN_SECONDS);
    Ok(Container {
        name: "secrets".to_string(),
        image: Some(image.to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            SECRETS_AGENT_SCRIPT.to_string(),
            "secrets".to_string(),
            format!("{SECRET_DIR}/{TURN_SECRET_KEY}"),
            keep.to_string(),
            AGENT_POLL_SECONDS.to_string(),
        ]),
        env: Some(vec![
            plain_env("OTTER_TURN_DB", TURN_DB),
            plain_env("OTTER_TURN_REALM", &cr.spec.turn.realm),
        ]),
        resources: Some(resources_or(None, "10m", "16Mi", "32Mi")),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/coturn", false),
            mount("turn-secret", SECRET_DIR, true),
        ]),
        ..Default::default()
    })
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

/// `<name>-turn` DaemonSet of coturn on the selected nodes, on host networking.
pub fn build_daemonset(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<DaemonSet>, BuildError> {
    let t = &cr.spec.turn;
    let Some(secret) = turn_secret_source(cr) else {
        return Ok(None);
    };
    let image = t.image.clone().unwrap_or_else(|| obs.images.turn.clone());

    let mut ports = vec![];
    for proto in ["UDP", "TCP"] {
        ports.push(ContainerPort {
            name: Some(format!("turn-{}", proto.to_lowercase())),
            container_port: t.port,
            host_port: Some(t.port),
            protocol: Some(proto.to_string()),
            ..Default::default()
        });
    }
    let mut volumes = vec![
        Volume {
            name: "nodes".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: child_name(cr, "turn"),
                ..Default::default()
            }),
            ..Default::default()
        },
        empty_dir("run"),
        empty_dir("tmp"),
        empty_dir("data"),
    ];
    let mut mounts = vec![
        mount("run", RUN_DIR, true),
        mount("tmp", "/var/tmp", false),
        mount("data", "/var/lib/coturn", false),
    ];
    if t.tls.enabled {
        for proto in ["UDP", "TCP"] {
            ports.push(ContainerPort {
                name: Some(format!("turns-{}", proto.to_lowercase())),
                container_port: t.tls.port,
                host_port: Some(t.tls.port),
                protocol: Some(proto.to_string()),
                ..Default::default()
            });
        }
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: t.tls.secret_name.clone(),
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("tls", TLS_DIR, true));
    }
    // Binding below 1024 as non-root needs NET_BIND_SERVICE; nothing else is ever added.
    let low_port = t.port < 1024 || (t.tls.enabled && t.tls.port < 1024);
    let caps = if low_port {
        vec!["NET_BIND_SERVICE".to_string()]
    } else {
        Vec::new()
    };

    let coturn = Container {
        name: "coturn".to_string(),
        image: Some(image.clone()),
        // Bypass the image's entrypoint: it `eval`s its arguments through a shell, which would
        // expand or split a shared secret holding shell characters.
        command: Some(vec!["turnserver".to_string()]),
        args: Some(coturn_args(cr)?),
        ports: Some(ports),
        liveness_probe: Some(tcp_probe(t.port, 10)),
        readiness_probe: Some(tcp_probe(t.port, 5)),
        resources: Some(resources_or(t.resources.as_ref(), "100m", "64Mi", "512Mi")),
        security_context: Some(container_security_context(caps)),
        volume_mounts: Some(mounts),
        lifecycle: Some(pre_stop(cr)?),
        ..Default::default()
    };
    let init = init_container(cr, &image, &secret);
    let agent = secrets_agent(cr, &image)?;
    volumes.push(secret_volume("turn-secret", &secret, TURN_SECRET_KEY));

    let mut coturn = coturn;
    let mut sidecars = vec![agent];
    crate::build::turn_metrics::attach(cr, obs, &mut coturn, &mut sidecars);
    let containers = [vec![coturn], sidecars].concat();

    let pod = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(cr, Component::Turn)),
            annotations: Some(BTreeMap::from([(
                CHECKSUM_ANNOTATION.to_string(),
                turn_checksum(cr, obs),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".to_string()),
            // coturn installs no SIGTERM handler, and a signal without one is ignored by PID 1:
            // each deleted pod held its node's host port for the whole grace period (30 s per
            // node in a roll, found on real nodes). With the pause container as PID 1, SIGTERM
            // ends coturn at once.
            share_process_namespace: Some(true),
            init_containers: Some(vec![init]),
            containers,
            volumes: Some(volumes),
            node_selector: Some(t.node_selector.clone()),
            tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
            security_context: Some(pod_security_context(COTURN_UID)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // The drain, then a margin for coturn's exit.
            termination_grace_period_seconds: Some(
                i64::try_from(duration_secs("turn.drainTimeout", &t.drain_timeout)?)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_add(DRAIN_MARGIN_SECONDS),
            ),
            priority_class_name: None,
            ..Default::default()
        }),
    };

    Ok(Some(DaemonSet {
        metadata: child_meta(cr, child_name(cr, "turn"), Component::Turn)?,
        spec: Some(DaemonSetSpec {
            selector: label_selector(cr, Component::Turn),
            template: pod,
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::testing::{cr, observed, secret};

    fn daemonset(cr: &OtterDeployment, obs: &Observed) -> DaemonSet {
        build_daemonset(cr, obs).unwrap().unwrap()
    }

    fn pod(ds: &DaemonSet) -> PodSpec {
        ds.spec.clone().unwrap().template.spec.unwrap()
    }

    /// The Secret name and key the init container reads the TURN secret from.
    fn turn_secret_ref(ds: &DaemonSet) -> (String, String) {
        let env = pod(ds).init_containers.unwrap()[0].env.clone().unwrap();
        let secret = env.iter().find(|e| e.name == "OTTER_TURN_SECRET").unwrap();
        let key_ref = secret.value_from.clone().unwrap().secret_key_ref.unwrap();
        (key_ref.name, key_ref.key)
    }

    fn annotation(ds: &DaemonSet) -> String {
        ds.spec
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
    fn runs_on_host_network_on_selected_nodes() {
        let cr = cr();
        let ds = daemonset(&cr, &observed());
        assert_eq!(ds.metadata.name.as_deref(), Some("demo-turn"));
        let p = pod(&ds);
        assert_eq!(p.host_network, Some(true));
        assert_eq!(p.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            p.share_process_namespace,
            Some(true),
            "coturn must not be PID 1"
        );
        assert_eq!(p.node_selector.unwrap()["otter.dev/turn"], "true");
        let owner = &ds.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("OtterDeployment", "demo")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn coturn_arguments_are_hardened() {
        let cr = cr();
        let ds = daemonset(&cr, &observed());
        let args = pod(&ds).containers[0].args.clone().unwrap();
        assert!(
            !args.iter().any(|a| a.contains("static-auth-secret")),
            "the secret must not be on coturn's command line: {args:?}"
        );
        let init = &pod(&ds).init_containers.clone().unwrap_or_default()[0];
        assert!(
            init.env
                .iter()
                .flatten()
                .any(|e| e.name == "OTTER_TURN_SECRET" && e.value_from.is_some())
        );
        assert!(SECRETS_INIT_SCRIPT.contains("turnadmin -s \"$OTTER_TURN_SECRET\""));
        assert!(args.contains(&"--userdb=/var/lib/coturn/turndb".to_string()));
        for expected in [
            "--use-auth-secret",
            "--realm=otter",
            "--fingerprint",
            "--no-cli",
            "--no-multicast-peers",
            "--listening-port=3478",
            "--min-port=49152",
            "--max-port=65535",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--no-rfc5780",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "missing {expected} in {args:?}"
            );
        }
        assert_eq!(&args[..2], ["-c", "/var/run/otter/coturn/turnserver.conf"]);
        assert_eq!(
            pod(&ds).containers[0].command,
            Some(vec!["turnserver".to_string()]),
            "no shell between Kubernetes and coturn"
        );
        assert!(!args.iter().any(|a| a.contains("allow-loopback")));
        assert_eq!(
            pod(&ds).containers[0].env,
            None,
            "coturn itself gets no secret env"
        );
        assert_eq!(
            turn_secret_ref(&ds),
            ("demo-turn-secret".into(), "turn-secret".into())
        );
    }

    #[test]
    fn denied_peer_ranges_cover_private_loopback_link_local_cgnat_and_extras() {
        let mut cr = cr();
        cr.spec.turn.extra_denied_peer_ranges = vec![
            "10.100.0.0/16".into(),
            "fd12:3456::/32".into(),
            "198.51.100.0/24".into(),
        ];
        let args = coturn_args(&cr).unwrap();
        let denied: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--denied-peer-ip="))
            .collect();
        for range in [
            "10.0.0.0-10.255.255.255",
            "172.16.0.0-172.31.255.255",
            "192.168.0.0-192.168.255.255",
            "127.0.0.0-127.255.255.255",
            "169.254.0.0-169.254.255.255",
            "100.64.0.0-100.127.255.255",
            "0.0.0.0-0.255.255.255",
            "::1-::1",
            "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:0.0.0.0-::ffff:255.255.255.255",
            "10.100.0.0-10.100.255.255",
            "fd12:3456::-fd12:3456:ffff:ffff:ffff:ffff:ffff:ffff",
            "198.51.100.0-198.51.100.255",
        ] {
            assert!(denied.contains(&range), "{range} not denied: {denied:?}");
        }
        // The cloud metadata address falls in a denied range.
        let metadata: Ipv4Addr = "169.254.169.254".parse().unwrap();
        assert!(denied.iter().any(|r| {
            let Some((a, b)) = r.split_once('-') else {
                return false;
            };
            match (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
                (Ok(a), Ok(b)) => a <= metadata && metadata <= b,
                _ => false,
            }
        }));
    }

    #[test]
    fn cidr_ranges_are_exact_and_bad_cidrs_refused() {
        assert_eq!(
            cidr_to_range("0.0.0.0/0").unwrap(),
            "0.0.0.0-255.255.255.255"
        );
        assert_eq!(
            cidr_to_range("203.0.113.9/32").unwrap(),
            "203.0.113.9-203.0.113.9"
        );
        assert_eq!(
            cidr_to_range("10.1.2.3/8").unwrap(),
            "10.0.0.0-10.255.255.255"
        );
        assert_eq!(
            cidr_to_range("::/0").unwrap(),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "::/129", "nope/8", "10.0.0.0/x"] {
            assert_eq!(cidr_to_range(bad), Err(BuildError::InvalidCidr(bad.into())));
        }
        let mut cr = cr();
        cr.spec.turn.extra_denied_peer_ranges = vec!["not-a-cidr".into()];
        assert!(coturn_args(&cr).is_err());
    }

    #[test]
    fn tls_adds_listener_key_pair_and_drops_no_tls() {
        let mut cr = cr();
        cr.spec.turn.tls.enabled = true;
        cr.spec.turn.tls.secret_name = Some("turn-tls".into());
        let ds = daemonset(&cr, &observed());
        let p = pod(&ds);
        let args = p.containers[0].args.clone().unwrap();
        assert!(args.contains(&"--tls-listening-port=5349".to_string()));
        assert!(args.contains(&"--cert=/etc/otter/turn-tls/tls.crt".to_string()));
        assert!(args.contains(&"--pkey=/etc/otter/turn-tls/tls.key".to_string()));
        assert!(!args.contains(&"--no-tls".to_string()));
        let tls = p
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(tls.secret.unwrap().secret_name.as_deref(), Some("turn-tls"));
        let ports = p.containers[0].ports.clone().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p.container_port == 5349 && p.host_port == Some(5349))
        );
    }

    #[test]
    fn coturn_is_hardened_and_probed() {
        let cr = cr();
        let p = pod(&daemonset(&cr, &observed()));
        let psc = p.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(COTURN_UID));
        for c in p
            .containers
            .iter()
            .chain(p.init_containers.iter().flatten())
        {
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let caps = sc.capabilities.unwrap();
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
            assert_eq!(caps.add, None, "no capability needed on port 3478");
        }
        let c = &p.containers[0];
        assert_eq!(
            c.liveness_probe.clone().unwrap().tcp_socket.unwrap().port,
            IntOrString::Int(3478)
        );
        assert_eq!(
            c.readiness_probe.clone().unwrap().tcp_socket.unwrap().port,
            IntOrString::Int(3478)
        );
        assert_eq!(p.automount_service_account_token, Some(false));
    }

    #[test]
    fn low_port_adds_net_bind_service_only() {
        let mut cr = cr();
        cr.spec.turn.port = 443;
        let p = pod(&daemonset(&cr, &observed()));
        let caps = p.containers[0]
            .security_context
            .clone()
            .unwrap()
            .capabilities
            .unwrap();
        assert_eq!(caps.add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    }

    #[test]
    fn external_ip_comes_from_the_node_address_config_map() {
        let cr = cr();
        let obs = observed();
        let cm = build_nodes_config_map(&cr, &obs).unwrap().unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-turn"));
        let data = cm.data.unwrap();
        assert_eq!(data["node-a"], "203.0.113.7");
        assert_eq!(data["node-b"], "2001:db8::5");
        let p = pod(&daemonset(&cr, &obs));
        let init = &p.init_containers.unwrap()[0];
        let env = init.env.clone().unwrap();
        let path = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .unwrap()
                .value_from
                .clone()
                .unwrap()
                .field_ref
                .unwrap()
                .field_path
        };
        assert_eq!(path("NODE_NAME"), "spec.nodeName");
        assert_eq!(path("HOST_IP"), "status.hostIP");
        let script = &init.command.clone().unwrap()[2];
        assert!(script.contains("external-ip=$ip/$HOST_IP"));
        let mounts = init.volume_mounts.clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "nodes" && m.mount_path == NODES_DIR)
        );
    }

    #[test]
    fn checksum_follows_secret_and_tls_but_not_nodes() {
        let mut cr = cr();
        let obs = observed();
        let base = annotation(&daemonset(&cr, &obs));
        let mut fewer = observed();
        fewer.turn_nodes.clear();
        assert_eq!(annotation(&daemonset(&cr, &fewer)), base);
        let mut rotated = observed();
        rotated.secrets.insert(
            "demo-turn-secret".into(),
            secret("demo-turn-secret", &[("turn-secret", "new")]),
        );
        assert_eq!(
            annotation(&daemonset(&cr, &rotated)),
            base,
            "a new TURN secret must not restart coturn: the secrets agent rotates it"
        );

        cr.spec.turn.tls.enabled = true;
        cr.spec.turn.tls.secret_name = Some("tls".into());
        let mut a = observed();
        a.secrets.insert(
            "tls".into(),
            secret("tls", &[("tls.crt", "one"), ("tls.key", "k")]),
        );
        let mut b = observed();
        b.secrets.insert(
            "tls".into(),
            secret("tls", &[("tls.crt", "two"), ("tls.key", "k")]),
        );
        assert_ne!(
            annotation(&daemonset(&cr, &a)),
            annotation(&daemonset(&cr, &b))
        );
    }

    #[test]
    fn user_named_secret_feeds_coturn() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "mine".into(),
            key: Some("shared".into()),
        });
        let ds = build_daemonset(&cr, &observed()).unwrap().unwrap();
        assert_eq!(turn_secret_ref(&ds), ("mine".into(), "shared".into()));
    }

    #[test]
    fn coturn_drains_before_it_stops() {
        let mut cr = cr();
        cr.spec.turn.drain_timeout = "20m".into();
        let p = pod(&daemonset(&cr, &observed()));
        assert_eq!(p.termination_grace_period_seconds, Some(1200 + 30));
        let hook = p.containers[0].lifecycle.clone().unwrap().pre_stop.unwrap();
        let cmd = hook.exec.unwrap().command.unwrap();
        assert_eq!(cmd[2], DRAIN_SCRIPT);
        assert_eq!(&cmd[3..], ["drain", "1200", "49152", "65535"]);
        cr.spec.turn.drain_timeout = "forever".into();
        assert!(build_daemonset(&cr, &observed()).is_err());
    }

    #[test]
    fn a_draining_node_keeps_its_address_for_the_pod_that_replaces_it() {
        let cr = cr();
        let mut obs = observed();
        let node = obs.turn_nodes.remove(0);
        obs.draining_turn_nodes.push(crate::observed::DrainingNode {
            node: node.name.clone(),
            address: Some(node.public_ip),
            pod: "demo-turn-x".into(),
            deadline: None,
        });
        let data = build_nodes_config_map(&cr, &obs)
            .unwrap()
            .unwrap()
            .data
            .unwrap();
        assert_eq!(data["node-a"], "203.0.113.7");
        assert_eq!(data["node-b"], "2001:db8::5");
    }

    #[test]
    fn the_secrets_agent_follows_the_mounted_secret() {
        let mut cr = cr();
        cr.spec.turn.credential_ttl = "1h".into();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "mine".into(),
            key: Some("shared".into()),
        });
        let p = pod(&daemonset(&cr, &observed()));
        let agent = p.containers.iter().find(|c| c.name == "secrets").unwrap();
        let cmd = agent.command.clone().unwrap();
        assert_eq!(cmd[2], SECRETS_AGENT_SCRIPT);
        // The previous secret stays for the credential TTL plus the margin.
        let keep = (3600 + ROTATION_MARGIN_SECONDS).to_string();
        assert_eq!(
            &cmd[3..],
            [
                "secrets",
                "/etc/otter/turn-secret/turn-secret",
                keep.as_str(),
                "5"
            ]
        );
        let volume = p
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "turn-secret")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(volume.secret_name.as_deref(), Some("mine"));
        assert_eq!(volume.items.unwrap()[0].key, "shared");
        let mounts = agent.volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == SECRET_DIR));
        assert!(mounts.iter().any(|m| m.mount_path == "/var/lib/coturn"));
        assert_eq!(
            agent.env.clone().unwrap()[1].value.as_deref(),
            Some("otter")
        );
    }

    #[test]
    fn nothing_when_turn_is_off() {
        let mut cr = cr();
        cr.spec.turn.enabled = false;
        assert!(build_daemonset(&cr, &observed()).unwrap().is_none());
        assert!(build_nodes_config_map(&cr, &observed()).unwrap().is_none());
    }
}
