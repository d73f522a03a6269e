# shellcheck shell=bash
# Real nodes for tests/cluster/up --nodes N, and their teardown for tests/cluster/down.
# Sourced after lib.sh, not executed.
#
# Layout (cluster slot K, 0..7, picked free at start; node I):
#   host bridge otbK            198.51.100.(32K+1)/27: kube-apiserver, CoreDNS and the registry
#                               listen here, so the nodes reach them and nothing else does
#   netns otterK-nI, veth eth0  198.51.100.(32K+10+I): the node's InternalIP (what the operator
#                               publishes for TURN; TEST-NET-2, which coturn does not deny)
#   pods on node I              10.251.(16K+I).0/24 on bridge cni0 inside the netns
#   cgroups                     /otterK-nI in every cgroup v1 hierarchy (kubelet's cgroupRoot)
# Everything a node runs (containerd, kubelet, kube-proxy, hostNetwork pods) is in its netns,
# so kubelet and kube-proxy ports never meet the host's test ports, and iptables chains,
# routes and per-netns sysctls vanish with the netns. Processes keep the host's mount
# namespace (nsenter --net, not ip netns exec) so kubelet's volume mounts are seen by containerd.

NODE_NET_PREFIX=198.51.100
NODE_LOCK=/run/otter-cluster-net.lock
# Host-wide sysctls kubelet sets at start (setupKernelTunables); saved and restored by down.
KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
CGROUP_V1_ROOT=/sys/fs/cgroup

# net_slot_free K: no address of slot K's /27 is on any interface.
net_slot_free() {
    local base=$((32 * $1)) a last
    while read -r a; do
        a=${a%/*}
        [[ $a == "$NODE_NET_PREFIX".* ]] || continue
        last=${a##*.}
        ((last >= base && last < base + 32)) && return 1
    done < <(ip -o -4 addr show | awk '{print $4}')
    return 0
}

# nodes_net_up N: pick a free slot, create the host bridge and N node netns; writes RUN_DIR/net.
nodes_net_up() {
    local n=$1 k i ns base
    need ip "install it with: apt-get install iproute2"
    need nsenter "install it with: apt-get install util-linux"
    exec 8>"$NODE_LOCK"
    flock 8
    for ((k = 0; k < 8; k++)); do net_slot_free "$k" && break; done
    ((k < 8)) || die "no free node network slot in $NODE_NET_PREFIX.0/24 (8 clusters with nodes running?)"
    base=$((32 * k))
    NET_SLOT=$k
    NET_BRIDGE=otb$k
    NET_GATEWAY=$NODE_NET_PREFIX.$((base + 1))
    {
        echo "NET_SLOT=$k"
        echo "NET_BRIDGE=$NET_BRIDGE"
        echo "NET_GATEWAY=$NET_GATEWAY"
        echo "NET_NODES=$n"
    } >"$RUN_DIR/net"
    log "node network: bridge $NET_BRIDGE $NET_GATEWAY/27"
    ip link add "$NET_BRIDGE" type bridge
    ip addr add "$NET_GATEWAY/27" dev "$NET_BRIDGE"
    ip link set "$NET_BRIDGE" up
    flock -u 8
    exec 8>&-
    for ((i = 0; i < n; i++)); do
        ns=$(node_ns "$i")
        ip netns add "$ns"
        ip link add "otv${k}n$i" type veth peer name eth0 netns "$ns"
        ip link set "otv${k}n$i" master "$NET_BRIDGE" up
        ip -n "$ns" addr add "$(node_ip "$i")/27" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "$NET_GATEWAY"
        # Per-netns: pods route through the node.
        nsenter --net="/run/netns/$ns" sysctl -qw net.ipv4.ip_forward=1
    done
    # Each node routes the other nodes' pod subnets to them.
    local j
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            ((i == j)) || ip -n "$(node_ns "$i")" route add "$(pod_subnet "$j")" via "$(node_ip "$j")"
        done
    done
}

node_ns() { printf 'otter%s-n%s' "$NET_SLOT" "$1"; }
node_name() { printf 'otter-node-%s' "$1"; }
node_ip() { printf '%s.%s' "$NODE_NET_PREFIX" $((32 * NET_SLOT + 10 + $1)); }
pod_subnet() { printf '10.251.%s.0/24' $((16 * NET_SLOT + $1)); }
node_cgroup() { printf '/otter%s-n%s' "$NET_SLOT" "$1"; }

# cgroup_hierarchies: every mounted cgroup v1 hierarchy directory.
cgroup_hierarchies() {
    local d
    for d in "$CGROUP_V1_ROOT"/*; do
        [[ -d $d && ! -L $d && -f $d/cgroup.procs ]] && printf '%s\n' "$d"
    done
}

# node_cgroup_create I: kubelet's cgroupRoot must exist in every hierarchy.
node_cgroup_create() {
    local h cg
    cg=$(node_cgroup "$1")
    while read -r h; do
        mkdir -p "$h$cg"
        if [[ -f $h/cpuset.cpus ]]; then
            cat "$h/cpuset.cpus" >"$h$cg/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h$cg/cpuset.mems"
        fi
    done < <(cgroup_hierarchies)
}

# in_node I CMD...: run CMD in node I's network namespace (host mount namespace).
in_node() {
    local ns
    ns=$(node_ns "$1"); shift
    nsenter --net="/run/netns/$ns" "$@"
}

# save_kubelet_sysctls: what kubelet will change host-wide, for down to put back.
save_kubelet_sysctls() {
    local s
    for s in "${KUBELET_SYSCTLS[@]}"; do
        [[ -r /proc/sys/$s ]] && printf '%s %s\n' "$s" "$(<"/proc/sys/$s")"
    done >"$RUN_DIR/sysctl.saved"
}

# node_files I REGISTRY SANDBOX_IMAGE: configs, kubeconfigs and certificates of node I in
# RUN_DIR/nodes/I (needs up's sign/kubeconfig functions and RUN_DIR/pki).
node_files() {
    local i=$1 registry=$2 sandbox=$3 d name ip
    d=$RUN_DIR/nodes/$i
    name=$(node_name "$i")
    ip=$(node_ip "$i")
    mkdir -p "$d"/{cni,certs.d/"$registry",kubelet,pod-logs,volume-plugins,ipam}
    sign "node-$i" "/O=system:nodes/CN=system:node:$name" clientAuth
    sign "node-$i-serving" "/CN=$name" serverAuth "IP:$ip,DNS:$name"
    sign "kube-proxy-$i" "/CN=system:kube-proxy" clientAuth
    kubeconfig "node-$i" "system:node:$name"
    kubeconfig "kube-proxy-$i" system:kube-proxy
    # containerd: private root, state and sockets; runc state under it too. netns mounts under
    # the state dir so down finds them; restrict_oom_score_adj because root here lacks
    # CAP_SYS_RESOURCE (runc fails "can't get final child's PID from pipe" otherwise).
    cat >"$d/containerd.toml" <<TOML
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
    # The test registry speaks plain HTTP, on the host bridge.
    cat >"$d/certs.d/$registry/hosts.toml" <<TOML
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
TOML
    cat >"$d/cni/10-otter.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "otter$NET_SLOT-n$i",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$d/ipam",
        "ranges": [[{"subnet": "$(pod_subnet "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    echo "nameserver $NET_GATEWAY" >"$d/resolv.conf"
    node_kubelet_config "$i" >"$d/kubelet.yaml"
    cat >"$d/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $RUN_DIR/kube-proxy-$i.kubeconfig
mode: iptables
hostnameOverride: $name
clusterCIDR: 10.251.0.0/16
# 0: leave the host-wide conntrack table size and timeouts alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YAML
}

node_kubelet_config() {
    local i=$1 d=$RUN_DIR/nodes/$1
    cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $RUN_DIR/pki/node-$i-serving.crt
tlsPrivateKeyFile: $RUN_DIR/pki/node-$i-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN_DIR/pki/ca.crt}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$d/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: $(node_cgroup "$i")
failCgroupV1: false
failSwapOn: false
clusterDNS: [$NET_GATEWAY]
clusterDomain: cluster.local
resolvConf: $d/resolv.conf
podLogsDir: $d/pod-logs
volumePluginDir: $d/volume-plugins
serializeImagePulls: false
maxPods: 60
# The test machine's disk may be fuller than a real node's: no eviction, no image GC by usage.
evictionHard: {memory.available: 50Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
YAML
}

# node_start I: containerd, then kubelet and kube-proxy, all in node I's netns.
node_start() {
    local i=$1 d=$RUN_DIR/nodes/$1 name
    name=$(node_name "$i")
    node_cgroup_create "$i"
    # Started again when it exits before its socket is up: once in a CI run, containerd 1.6
    # stopped at once with only "containerd: context canceled" (a SIGTERM or SIGINT during its
    # start; the sender was not found). Its log keeps every try.
    local try
    for try in 1 2 3; do
        log "node $name: starting containerd"
        start_component "containerd-$i" nsenter --net="/run/netns/$(node_ns "$i")" \
            containerd --config "$d/containerd.toml" --log-level warn
        WAIT_SOFT=1 wait_for "containerd-$i" "containerd of $name" test -S "$d/containerd.sock" && break
        ((try < 3)) || die "containerd of $name exited 3 times while starting; log: $RUN_DIR/logs/containerd-$i.log"
        log "containerd of $name exited while starting (try $try); starting it again"
    done
    log "node $name: starting kubelet and kube-proxy ($(node_ip "$i"))"
    start_component "kubelet-$i" nsenter --net="/run/netns/$(node_ns "$i")" \
        "$KUBELET" --config "$d/kubelet.yaml" --kubeconfig "$RUN_DIR/node-$i.kubeconfig" \
        --root-dir "$d/kubelet" --hostname-override "$name" --node-ip "$(node_ip "$i")"
    start_component "kube-proxy-$i" nsenter --net="/run/netns/$(node_ns "$i")" \
        "$KUBE_PROXY" --config "$d/kube-proxy.yaml"
}

# nodes_wait_ready N: every node's Ready condition is True (by condition, not by sleeping).
nodes_wait_ready() {
    local i name
    for ((i = 0; i < $1; i++)); do
        name=$(node_name "$i")
        wait_for "kubelet-$i" "node $name Ready" node_ready "$name"
        log "node $name Ready"
    done
}
node_ready() {
    [[ $("$KUBECTL" --kubeconfig "$RUN_DIR/admin.kubeconfig" get node "$1" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# registry_start PORT: the OCI registry the nodes pull from, on the host bridge (plain HTTP).
registry_start() {
    local port=$1 d=$RUN_DIR/registry
    mkdir -p "$d/data"
    cat >"$d/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: $NET_GATEWAY:$port
YAML
    start_component registry env OTEL_TRACES_EXPORTER=none "$REGISTRY_BIN" serve "$d/config.yml"
}

# coredns_start HEALTH_PORT READY_PORT: cluster DNS on the host bridge, port 53 (what pods use).
coredns_start() {
    local d=$RUN_DIR/coredns
    mkdir -p "$d"
    cat >"$d/Corefile" <<COREFILE
.:53 {
    bind $NET_GATEWAY
    errors
    health 127.0.0.1:$1
    ready 127.0.0.1:$2
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN_DIR/coredns.kubeconfig otter-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
COREFILE
    start_component coredns "$COREDNS_BIN" -conf "$d/Corefile"
}

# --- teardown (down) -------------------------------------------------------------------------

# our_pids: processes whose command line points into RUN_DIR (components, containerd's shims),
# except shells: down itself, its subshells and the watchdog (it execs down) mention RUN_DIR too.
our_pids() {
    local p tracked=" "
    # Components with a pid file are stopped gracefully by down, in order; not swept here.
    for p in "$RUN_DIR"/pids/*.pid; do [[ -f $p ]] && tracked+="$(<"$p") "; done
    for p in /proc/[0-9]*; do
        [[ $tracked == *" ${p#/proc/} "* ]] && continue
        [[ $(cat "$p/comm" 2>/dev/null) == bash ]] && continue
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$RUN_DIR/" && printf '%s\n' "${p#/proc/}"
    done
}

# cgroup_pids CG: every process in cgroup CG (and below) of any hierarchy.
cgroup_pids() {
    local h
    while read -r h; do
        [[ -d $h$1 ]] && find "$h$1" -name cgroup.procs -exec cat {} + 2>/dev/null
    done < <(cgroup_hierarchies) | sort -u
}

# nodes_down: stop every node process, unmount, remove cgroups, netns, bridge, restore sysctls.
nodes_down() {
    [[ -f $RUN_DIR/net ]] || return 0
    # shellcheck source=/dev/null
    . "$RUN_DIR/net"
    local i names=() pids=()
    for ((i = 0; i < NET_NODES; i++)); do names+=("kubelet-$i" "kube-proxy-$i"); done
    stop_components "${names[@]}" coredns registry
    names=()
    for ((i = 0; i < NET_NODES; i++)); do names+=("containerd-$i"); done
    stop_components "${names[@]}"
    # What containerd leaves running: shims (their command line names our socket) and the
    # containers in the nodes' cgroups.
    for ((i = 0; i < NET_NODES; i++)); do
        mapfile -t pids < <(cgroup_pids "$(node_cgroup "$i")")
        [[ ${#pids[@]} -eq 0 ]] || kill -KILL "${pids[@]}" 2>/dev/null || true
    done
    mapfile -t pids < <(our_pids)
    if [[ ${#pids[@]} -gt 0 ]]; then
        log "killing leftover processes: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    # libcni's result cache (/var/lib/cni/results, not configurable in containerd 1.6): our
    # networks' entries, and the loopback entries of our sandboxes.
    local id
    for ((i = 0; i < NET_NODES; i++)); do
        rm -f /var/lib/cni/results/"otter$NET_SLOT-n$i"-* 2>/dev/null || true
        for id in "$RUN_DIR/nodes/$i/containerd/state/io.containerd.grpc.v1.cri/sandboxes"/*; do
            [[ -e $id ]] || continue
            rm -f "/var/lib/cni/results/cni-loopback-$(basename "$id")-lo"
            rm -f "$(shim_socket "$i" "$(basename "$id")")"
        done
    done
    # The shims' socket directory, if only ours were in it.
    rmdir /run/containerd/s /run/containerd 2>/dev/null || true
    unmount_under "$RUN_DIR/"
    for ((i = 0; i < NET_NODES; i++)); do
        remove_cgroup "$(node_cgroup "$i")"
        ip netns del "$(node_ns "$i")" 2>/dev/null || true
        ip link del "otv${NET_SLOT}n$i" 2>/dev/null || true
    done
    ip link del "$NET_BRIDGE" 2>/dev/null || true
    if [[ -f $RUN_DIR/sysctl.saved ]]; then
        local s v
        while read -r s v; do echo "$v" >"/proc/sys/$s" 2>/dev/null || log "could not restore $s"; done <"$RUN_DIR/sysctl.saved"
    fi
    rm -f "$RUN_DIR/net"
    log "nodes removed: netns, bridge $NET_BRIDGE, cgroups, mounts"
}

# shim_socket I SANDBOX: the socket a killed runc shim of node I left behind. containerd 1.6
# puts it at /run/containerd/s/sha256(<containerd address>/k8s.io/<sandbox id>) whatever its
# state dir, and only a shim that exits cleanly removes it.
shim_socket() {
    local sum
    sum=$(printf '%s' "$RUN_DIR/nodes/$1/containerd.sock/k8s.io/$2" | sha256sum)
    printf '/run/containerd/s/%s\n' "${sum%% *}"
}

# unmount_under PREFIX: every mount point below PREFIX, deepest first (lazily if busy).
unmount_under() {
    local m
    awk -v p="$1" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do
            m=$(printf '%b' "$m")
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
        done
}

# remove_cgroup CG: rmdir CG and its children, deepest first, in every hierarchy.
remove_cgroup() {
    local h
    while read -r h; do
        [[ -d $h$1 ]] || continue
        find "$h$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d $h$1 ]] || log "cgroup $h$1 still there (processes left?)"
    done < <(cgroup_hierarchies)
}
