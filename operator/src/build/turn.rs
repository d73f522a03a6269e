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
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, ExecAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, TCPSocketAction, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::build::pod::{
    container_security_context, empty_dir, field_env, mount, pod_security_context, resources_or,
};
use crate::build::secrets::SecretSource;
use crate::build::signaling::duration_secs;
use crate::build::turn_keys::turn_keys_source;
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::meta::{
    CHECKSUM_ANNOTATION, Component, checksum, child_meta, child_name, label_selector, labels,
};
use crate::observed::Observed;

/// uid of `nobody`, the user the coturn image runs as.
pub const COTURN_UID: i64 = 65534;
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

/// Every host port a TURN pod binds on its node (host networking), sorted, with what binds it:
/// coturn's listening port, with TLS the TLS port (no alternate port + 1: `coturn_args` turns
/// RFC 5780 off), with metrics the exporter's port and the statistics Redis's (on the node's
/// loopback, which two pods on one node share too). The relay range is not listed: it is per
/// allocation. Empty when TURN is off. `operator/tests/it/coturn_ports.rs` holds it to what the
/// real coturn binds.
pub fn host_ports(cr: &OtterDeployment) -> Vec<(i32, &'static str)> {
    let t = &cr.spec.turn;
    if !t.enabled {
        return Vec::new();
    }
    let mut ports = vec![(t.port, "turn.port")];
    if t.tls.enabled {
        ports.push((t.tls.port, "turn.tls.port"));
    }
    if t.metrics.enabled {
        ports.push((t.metrics.port, "turn.metrics.port"));
        ports.push((t.metrics.redis_port, "turn.metrics.redisPort"));
    }
    ports.sort();
    ports
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
/// Where the keys Secret (`build::turn_keys`) is mounted for the secrets agent, whole: the
/// kubelet updates the files in place when the Secret changes.
pub const SECRET_DIR: &str = "/etc/otter/turn-secret";
/// How often the secrets agent looks at the mounted keys.
pub const AGENT_POLL_SECONDS: u64 = 5;

/// Makes coturn's database hold exactly the TURN secrets the keys Secret says are accepted
/// (`turn-secret`, `next`, `previous`: the operator removes `previous` when it expires), so
/// coturn never restarts for
/// a rotation: run once by the init container before coturn starts (poll 0), then by the
/// secrets agent beside coturn every `poll` seconds. Arguments: the keys directory, poll
/// seconds; env `OTTER_TURN_DB`, `OTTER_TURN_REALM`. It never empties the database: no value
/// in the files (a Secret being replaced) keeps what coturn has.
///
/// It creates the database in WAL mode. In SQLite's default journal mode, a read that meets a
/// write in progress fails at once ("database is locked"): neither coturn nor turnadmin sets a
/// busy timeout, so coturn would refuse a valid credential with 401 while the agent writes. In WAL
/// mode a read never waits on a write, and the mode is kept in the file for every connection.
/// Neither tool can set it and the image has no sqlite3, so the script writes the one page of an
/// empty WAL database itself (SQLite's file format: a 100-byte header, then an empty table
/// leaf page); coturn and turnadmin create their tables in it on first use.
pub const SECRETS_SYNC_SCRIPT: &str = r##"dir="$1"; poll="$2"
realm="$OTTER_TURN_REALM"; db="$OTTER_TURN_DB"
zeros() { i=0; while [ "$i" -lt "$1" ]; do printf '\000'; i=$((i + 1)); done; }
# An empty database of one 512-byte page in WAL mode (format versions 2 and 2 at offset 18).
wal_db() {
  printf 'SQLite format 3\000\002\000\002\002\000\100\040\040'
  printf '\000\000\000\001\000\000\000\001'; zeros 60
  printf '\000\000\000\001\000\056\143\001'
  printf '\015\000\000\000\000\002\000\000'; zeros 404
}
if [ ! -s "$db" ]; then
  wal_db > "$db" || { echo "otter: could not create $db" >&2; exit 1; }
fi
admin() { turnadmin "$@" -r "$realm" -b "$db" </dev/null >/dev/null 2>&1; }
# The value of key $1 in $v: one line, or empty.
val() {
  v="$(cat "$dir/$1" 2>/dev/null)" || v=""
  case "$v" in *"
"*) echo "otter: ignoring $1: a TURN secret is one line" >&2; v="" ;; esac
}
# The values coturn should accept, one per line. (The operator removes `previous` once
# `previous-until` has passed: the image needs no clock tool.)
wanted() {
  for key in turn-secret next previous; do
    val "$key"
    [ -z "$v" ] || printf '%s\n' "$v"
  done
}
stored() {
  turnadmin -S -r "$realm" -b "$db" </dev/null 2>/dev/null | while IFS= read -r line; do
    s="${line%"[$realm]"}"
    if [ "$s" != "$line" ] && [ -n "$s" ]; then printf '%s\n' "$s"; fi
  done
}
# Is line $2 in the list $1? (No grep: a secret never goes on a command line it needs not.)
has() {
  while IFS= read -r l; do [ "$l" != "$2" ] || return 0; done <<EOF
$1
EOF
  return 1
}
sync() {
  want="$1"; have="$(stored)"; n=0
  while IFS= read -r s; do
    [ -n "$s" ] || continue
    n=$((n + 1))
    has "$have" "$s" || admin -s "$s" || { echo "otter: could not store a TURN secret in $db" >&2; return 1; }
  done <<EOF
$want
EOF
  while IFS= read -r s; do
    [ -z "$s" ] || has "$want" "$s" || admin -X "$s" || { echo "otter: could not drop a TURN secret" >&2; return 1; }
  done <<EOF
$have
EOF
  echo "otter: coturn accepts $n TURN secret(s)"
}
last=""
while :; do
  want="$(wanted)"
  if [ -z "$want" ]; then
    # Said once, not every poll; `last` is no value list, so the next one is synced.
    [ "$last" = "-" ] || echo "otter: no TURN secret in $dir; coturn keeps what it accepts" >&2
    [ "$poll" -gt 0 ] || exit 1
    last="-"
  elif [ "$want" != "$last" ]; then
    if sync "$want"; then last="$want"; elif [ "$poll" -eq 0 ]; then exit 1; fi
  fi
  [ "$poll" -gt 0 ] || exit 0
  sleep "$poll"
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
/// allocation is a relay socket bound in the relay port range, counted in the node's
/// `/proc/net` tables (the pod is on host networking): every UDP socket, and TCP sockets in
/// LISTEN state (RFC 6062 TCP relays). Established TCP connections are not counted: the default
/// relay range overlaps the kernel's ephemeral ports, and every outgoing TCP connection of the
/// node (kubelet to the API server) would count. Each change goes to the pod log, with the
/// first ports still held, so a drain that does not end can be traced to its sockets.
/// Arguments: timeout in seconds, relay range min and max.
pub const DRAIN_SCRIPT: &str = r##"timeout="$1"; min="$2"; max="$3"
# Only sh builtins, cat and sleep: all a coturn image is sure to have.
# Only this user's sockets (coturn's, the same user as this hook): with host networking the
# node's other processes share this network namespace, and their ephemeral ports may fall in
# the relay range.
me=""
while read -r key value _; do [ "$key" = "Uid:" ] && me="$value"; done < /proc/self/status
net="${OTTER_PROC_NET:-/proc/net}"
# Adds to $ports the ports of table $1 bound in the relay range, in state $2 (any when empty).
ports_in() {
  [ -r "$1" ] || return 0
  while read -r _ local _ st _ _ _ uid _; do
    [ -z "$me" ] || [ "$uid" = "$me" ] || continue
    port="${local##*:}"
    case "$port" in *[!0-9A-Fa-f]*|"") continue ;; esac
    [ -z "$2" ] || [ "$st" = "$2" ] || continue
    p=$((0x$port))
    if [ "$p" -ge "$min" ] && [ "$p" -le "$max" ]; then ports="$ports $p"; fi
  done < "$1"
}
# The relays: UDP sockets, and TCP ones (RFC 6062: a listening socket in the range; established
# TCP connections are left out, as the node's own outgoing ones use the same ephemeral ports).
relays() {
  ports=""
  ports_in "$net/udp" ""; ports_in "$net/udp6" ""
  ports_in "$net/tcp" 0A; ports_in "$net/tcp6" 0A
  echo "$ports"
}
count() { set -- $1; echo $#; }
# " (ports a b c ...)": the first eight, so a count that does not fall can be traced to its
# sockets (ss -uanp on the node).
shown() {
  set -- $1
  [ $# -gt 0 ] || return 0
  out=""; i=0
  while [ $# -gt 0 ] && [ "$i" -lt 8 ]; do out="$out $1"; shift; i=$((i + 1)); done
  [ $# -eq 0 ] || out="$out ..."
  echo " (ports$out)"
}
# A hook's output is not logged: tell through coturn's own stdout (the pod log).
pidfile="${OTTER_TURN_PIDFILE:-/var/tmp/turnserver.pid}"
say() { echo "otter: $*" 2>/dev/null > "/proc/$(cat "$pidfile" 2>/dev/null)/fd/1" || echo "otter: $*"; }
waited=0
ports=$(relays); left=$(count "$ports")
say "draining: $left relay allocation(s), waiting up to ${timeout}s$(shown "$ports")"
while [ "$left" -gt 0 ] && [ "$waited" -lt "$timeout" ]; do
  sleep 2
  waited=$((waited + 2))
  now=$(relays)
  if [ "$now" != "$ports" ]; then
    ports=$now; left=$(count "$ports")
    say "draining: $left relay allocation(s) left$(shown "$ports")"
  fi
done
say "drained after ${waited}s: $left relay allocation(s) left$(shown "$ports")"
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

/// The init container: this node's external-ip mapping into coturn's config file, the accepted
/// TURN secrets into coturn's database (from the mounted keys, never from env or arguments).
fn init_container(cr: &OtterDeployment, image: &str) -> Container {
    Container {
        name: "external-ip".to_string(),
        image: Some(image.to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("{INIT_SCRIPT}{SECRETS_SYNC_SCRIPT}"),
            "init".to_string(),
            SECRET_DIR.to_string(),
            "0".to_string(),
        ]),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("HOST_IP", "status.hostIP"),
            plain_env("OTTER_TURN_DB", TURN_DB),
            plain_env("OTTER_TURN_REALM", &cr.spec.turn.realm),
        ]),
        resources: Some(resources_or(None, "10m", "16Mi", "32Mi")),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(vec![
            mount("nodes", NODES_DIR, true),
            mount("run", RUN_DIR, false),
            mount("data", "/var/lib/coturn", false),
            mount("turn-keys", SECRET_DIR, true),
        ]),
        ..Default::default()
    }
}

/// The secrets agent container (see [`SECRETS_SYNC_SCRIPT`]): follows the keys Secret.
fn secrets_agent(cr: &OtterDeployment, image: &str) -> Container {
    Container {
        name: "secrets".to_string(),
        image: Some(image.to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            SECRETS_SYNC_SCRIPT.to_string(),
            "secrets".to_string(),
            SECRET_DIR.to_string(),
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
            mount("turn-keys", SECRET_DIR, true),
        ]),
        ..Default::default()
    }
}

/// The keys Secret, whole (`build::turn_keys`): every key is a file the agent reads.
fn keys_volume(keys: &SecretSource) -> Volume {
    Volume {
        name: "turn-keys".to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(keys.name.clone()),
            default_mode: Some(0o440),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

/// coturn's host ports: `port` over UDP and TCP, with TLS `tls.port` too.
fn coturn_ports(cr: &OtterDeployment) -> Vec<ContainerPort> {
    let t = &cr.spec.turn;
    let mut listeners = vec![("turn", t.port)];
    if t.tls.enabled {
        listeners.push(("turns", t.tls.port));
    }
    listeners
        .into_iter()
        .flat_map(|(name, port)| {
            ["UDP", "TCP"].map(|proto| ContainerPort {
                name: Some(format!("{name}-{}", proto.to_lowercase())),
                container_port: port,
                host_port: Some(port),
                protocol: Some(proto.to_string()),
                ..Default::default()
            })
        })
        .collect()
}

/// The pod's volumes: node addresses, scratch space, coturn's database, the TURN keys, and with
/// TLS the key pair.
fn pod_volumes(cr: &OtterDeployment, keys: &SecretSource) -> Vec<Volume> {
    let t = &cr.spec.turn;
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
        keys_volume(keys),
    ];
    if t.tls.enabled {
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
    }
    volumes
}

/// The coturn container: no shell, hardened arguments, host ports, TCP probes, the drain hook.
fn coturn_container(cr: &OtterDeployment, image: &str) -> Result<Container, BuildError> {
    let t = &cr.spec.turn;
    let mut mounts = vec![
        mount("run", RUN_DIR, true),
        mount("tmp", "/var/tmp", false),
        mount("data", "/var/lib/coturn", false),
    ];
    if t.tls.enabled {
        mounts.push(mount("tls", TLS_DIR, true));
    }
    // Binding below 1024 as non-root needs NET_BIND_SERVICE; nothing else is ever added.
    let low_port = t.port < 1024 || (t.tls.enabled && t.tls.port < 1024);
    let caps = if low_port {
        vec!["NET_BIND_SERVICE".to_string()]
    } else {
        Vec::new()
    };
    Ok(Container {
        name: "coturn".to_string(),
        image: Some(image.to_string()),
        // Bypass the image's entrypoint: it `eval`s its arguments through a shell, which would
        // expand or split a shared secret holding shell characters.
        command: Some(vec!["turnserver".to_string()]),
        args: Some(coturn_args(cr)?),
        ports: Some(coturn_ports(cr)),
        liveness_probe: Some(tcp_probe(t.port, 10)),
        readiness_probe: Some(tcp_probe(t.port, 5)),
        resources: Some(resources_or(t.resources.as_ref(), "100m", "64Mi", "512Mi")),
        security_context: Some(container_security_context(caps)),
        volume_mounts: Some(mounts),
        lifecycle: Some(pre_stop(cr)?),
        ..Default::default()
    })
}

/// The pod: host networking, coturn not PID 1, the init container and the sidecars (secrets
/// agent, and with metrics the statistics Redis and the exporter), the drain's grace period.
fn pod_spec(
    cr: &OtterDeployment,
    obs: &Observed,
    keys: &SecretSource,
) -> Result<PodSpec, BuildError> {
    let t = &cr.spec.turn;
    let image = t.image.clone().unwrap_or_else(|| obs.images.turn.clone());
    let mut coturn = coturn_container(cr, &image)?;
    let sidecars = vec![secrets_agent(cr, &image)];
    let native_sidecars = crate::build::turn_metrics::attach(cr, obs, &mut coturn);
    let drain = duration_secs("turn.drainTimeout", &t.drain_timeout)?;
    Ok(PodSpec {
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_string()),
        // coturn installs no SIGTERM handler, and a signal without one is ignored by PID 1:
        // each deleted pod held its node's host port for the whole grace period (30 s per
        // node in a roll, found on real nodes). With the pause container as PID 1, SIGTERM
        // ends coturn at once.
        share_process_namespace: Some(true),
        init_containers: Some([vec![init_container(cr, &image)], native_sidecars].concat()),
        containers: [vec![coturn], sidecars].concat(),
        volumes: Some(pod_volumes(cr, keys)),
        node_selector: Some(t.node_selector.clone()),
        tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
        security_context: Some(pod_security_context(COTURN_UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The drain, then a margin for coturn's exit.
        termination_grace_period_seconds: Some(
            i64::try_from(drain)
                .unwrap_or(i64::MAX / 2)
                .saturating_add(DRAIN_MARGIN_SECONDS),
        ),
        priority_class_name: None,
        ..Default::default()
    })
}

/// `<name>-turn` DaemonSet of coturn on the selected nodes, on host networking, rolled one node
/// at a time.
pub fn build_daemonset(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<DaemonSet>, BuildError> {
    let Some(keys) = turn_keys_source(cr) else {
        return Ok(None);
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(cr, Component::Turn)),
            annotations: Some(BTreeMap::from([(
                CHECKSUM_ANNOTATION.to_string(),
                turn_checksum(cr, obs),
            )])),
            ..Default::default()
        }),
        spec: Some(pod_spec(cr, obs, &keys)?),
    };
    Ok(Some(DaemonSet {
        metadata: child_meta(cr, child_name(cr, "turn"), Component::Turn)?,
        spec: Some(DaemonSetSpec {
            selector: label_selector(cr, Component::Turn),
            template,
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

    /// The Secret the TURN pods read the accepted TURN secrets from.
    fn keys_secret(ds: &DaemonSet) -> String {
        let volumes = pod(ds).volumes.unwrap();
        let keys = volumes.iter().find(|v| v.name == "turn-keys").unwrap();
        keys.secret.clone().unwrap().secret_name.unwrap()
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
            !init.env.iter().flatten().any(|e| e
                .value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some())),
            "the TURN secrets come from the mounted keys, not env"
        );
        assert_eq!(
            &init.command.clone().unwrap()[3..],
            ["init", SECRET_DIR, "0"]
        );
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
        assert_eq!(keys_secret(&ds), "demo-turn-keys");
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
        // Through the keys Secret the operator derives from it (`build::turn_keys`).
        let ds = build_daemonset(&cr, &observed()).unwrap().unwrap();
        assert_eq!(keys_secret(&ds), "demo-turn-keys");
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
            host_ip: None,
            allocations: None,
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
    fn the_secrets_agent_follows_the_mounted_keys() {
        let cr = cr();
        let p = pod(&daemonset(&cr, &observed()));
        let agent = p.containers.iter().find(|c| c.name == "secrets").unwrap();
        let cmd = agent.command.clone().unwrap();
        assert_eq!(cmd[2], SECRETS_SYNC_SCRIPT);
        assert_eq!(&cmd[3..], ["secrets", SECRET_DIR, "5"]);
        let volume = p
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "turn-keys")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(volume.secret_name.as_deref(), Some("demo-turn-keys"));
        assert_eq!(volume.items, None, "every key: next and previous too");
        let mounts = agent.volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == SECRET_DIR));
        assert!(mounts.iter().any(|m| m.mount_path == "/var/lib/coturn"));
        assert_eq!(
            agent.env.clone().unwrap()[1].value.as_deref(),
            Some("otter")
        );
    }

    #[test]
    fn host_ports_list_every_port_a_turn_pod_binds() {
        let mut cr = cr();
        let ports = |cr: &OtterDeployment| {
            host_ports(cr)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&cr), [3478]);
        cr.spec.turn.tls.enabled = true;
        cr.spec.turn.metrics.enabled = true;
        cr.spec.turn.metrics.port = 9641;
        cr.spec.turn.metrics.redis_port = 6390;
        assert_eq!(ports(&cr), [3478, 5349, 6390, 9641]);
        cr.spec.turn.enabled = false;
        assert!(host_ports(&cr).is_empty());
    }

    #[test]
    fn nothing_when_turn_is_off() {
        let mut cr = cr();
        cr.spec.turn.enabled = false;
        assert!(build_daemonset(&cr, &observed()).unwrap().is_none());
        assert!(build_nodes_config_map(&cr, &observed()).unwrap().is_none());
    }
}
