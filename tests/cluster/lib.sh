# shellcheck shell=bash disable=SC2034 # variables here are used by the scripts that source this file
# Shared by tests/cluster/{install,up,down,smoke-test}, tests/eks/test and tests/bench/operator. Sourced, not executed.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../versions.env
. "$REPO_ROOT/tests/versions.env"

OTTER_CACHE=${OTTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otter}
K8S_BIN_DIR=$OTTER_CACHE/k8s/$K8S_VERSION/bin
KWOK_BIN_DIR=$OTTER_CACHE/kwok/$KWOK_VERSION/bin
ETCD_BIN_DIR=$OTTER_CACHE/etcd/$ETCD_VERSION/bin
DEFAULT_RUN_DIR=$OTTER_CACHE/cluster/run
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Real nodes (up --nodes N): their own directories, so they build beside the control plane.
K8S_NODE_BIN_DIR=$OTTER_CACHE/k8s-node/$K8S_VERSION/bin
K8S_NODE_BINARIES=(kubelet kube-proxy)
COREDNS_BIN_DIR=$OTTER_CACHE/coredns/$COREDNS_VERSION/bin
REGISTRY_BIN_DIR=$OTTER_CACHE/registry/$REGISTRY_VERSION/bin

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need TOOL HOW: fail clearly when TOOL is not on PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}

# Path of a cached binary, or die naming the installer.
cached_bin() {
    local name=$1 dir
    case $name in
        kwok) dir=$KWOK_BIN_DIR ;;
        etcd) dir=$ETCD_BIN_DIR ;;
        kubelet|kube-proxy) dir=$K8S_NODE_BIN_DIR ;;
        coredns) dir=$COREDNS_BIN_DIR ;;
        registry) dir=$REGISTRY_BIN_DIR ;;
        *) dir=$K8S_BIN_DIR ;;
    esac
    [[ -x $dir/$name ]] || die "$dir/$name is missing; run tests/cluster/install first"
    printf '%s\n' "$dir/$name"
}

KWOK_STAGES=$OTTER_CACHE/kwok/$KWOK_VERSION/stages.yaml
# The sandbox image real nodes use, built by tests/cluster/images (tag = its source's version).
PAUSE_TAG=3.10-otter1

# parse_dir_arg "$@": sets RUN_DIR from --dir DIR (default DEFAULT_RUN_DIR); --help calls usage.
parse_dir_arg() {
    RUN_DIR=$DEFAULT_RUN_DIR
    while [[ $# -gt 0 ]]; do
        case $1 in
            --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; RUN_DIR=$2; shift 2 ;;
            --dir=*) RUN_DIR=${1#--dir=}; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    mkdir -p "$(dirname "$RUN_DIR")"
    RUN_DIR=$(cd "$(dirname "$RUN_DIR")" && pwd)/$(basename "$RUN_DIR")
}

# Where pid_alive reads processes (a test points it at a directory of its own).
PROC_ROOT=${PROC_ROOT:-/proc}

# pid_alive PIDFILE: the process recorded in PIDFILE is running and is ours: its command line
# mentions RUN_DIR (every component is given paths inside it), so a recycled pid is never touched.
# A process in the middle of execve (setsid execing the component) shows an empty command line
# for a moment: read again, up to a second, unless it is a zombie. Taking that moment for an
# exit failed a cold CI run twice ("exited while waiting", exit status unknown, empty log) and
# left a component running that nothing stopped.
pid_alive() {
    local pid cmdline stat i
    [[ -f $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$PROC_ROOT/$pid/cmdline") || return 1
        if [[ -n $cmdline ]]; then
            [[ $cmdline == *"$RUN_DIR/"* ]] && return 0
            return 1
        fi
        # The state follows the last ')' of stat (the command name may hold any character).
        stat=$(<"$PROC_ROOT/$pid/stat") 2>/dev/null || return 1
        stat=${stat##*) }
        [[ ${stat:0:1} != Z ]] || return 1
        sleep 0.02
    done
    return 1
}

# exit_status PIDFILE: sets EXIT_STATUS to "exit status N" for a process this shell started
# and that has ended, else to "exit status unknown" (not our child, or still running). It sets
# a variable rather than printing: `wait` in a command substitution's subshell knows no children.
exit_status() {
    local pid st=0
    pid=$(cat "$1" 2>/dev/null) || true
    EXIT_STATUS="exit status unknown"
    [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null || return 0
    wait "$pid" 2>/dev/null || st=$?
    # wait's 127: not a child of this shell.
    ((st == 127)) || EXIT_STATUS="exit status $st"
}

# Components in start order.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# start_component NAME CMD...: run CMD in its own session, log to logs/NAME.log (appending, so a
# restart keeps the history), pid in pids/NAME.pid, argv in cmd/NAME (for restart).
start_component() {
    local name=$1; shift
    mkdir -p "$RUN_DIR/pids" "$RUN_DIR/logs" "$RUN_DIR/cmd"
    printf '%s\0' "$@" >"$RUN_DIR/cmd/$name"
    setsid "$@" </dev/null >>"$RUN_DIR/logs/$name.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$RUN_DIR/pids/$name.pid"
    # Until the forked shell has exec'd the command, its command line is this script's, and
    # pid_alive (which wants RUN_DIR in it) would call the component dead. Under load that
    # takes long enough for a quick first health probe to lose the race: wait for the exec.
    local i
    for ((i = 0; i < 500; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        pid_alive "$RUN_DIR/pids/$name.pid" && return 0
        sleep 0.01
    done
}

# signal_component SIGNAL NAME: send SIGNAL if NAME runs; true when it did.
signal_component() {
    local f=$RUN_DIR/pids/$2.pid
    pid_alive "$f" || return 1
    kill "-$1" "$(<"$f")" 2>/dev/null
}

# stop_components NAME...: SIGTERM them all, wait up to 10s, SIGKILL what is left.
stop_components() {
    local name left
    for name in "$@"; do
        if signal_component TERM "$name"; then log "stopping $name (pid $(<"$RUN_DIR/pids/$name.pid"))"; fi
    done
    for _ in $(seq 100); do
        left=0
        for name in "$@"; do pid_alive "$RUN_DIR/pids/$name.pid" && left=1; done
        [[ $left -eq 1 ]] || break
        sleep 0.1
    done
    for name in "$@"; do
        if signal_component KILL "$name"; then log "$name did not stop on SIGTERM; killed"; fi
        rm -f "$RUN_DIR/pids/$name.pid"
    done
}

# healthy NAME: NAME answers its health endpoint (ports from DIR/env).
healthy() {
    # shellcheck source=/dev/null
    . "$RUN_DIR/env"
    local pki=$RUN_DIR/pki
    case $1 in
        etcd) curl -fsS "$OTTER_ETCD/health" ;;
        kube-apiserver) curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$OTTER_APISERVER/readyz" ;;
        kube-controller-manager) curl -fsSk "https://127.0.0.1:$OTTER_KCM_PORT/healthz" ;;
        kube-scheduler) curl -fsSk "https://127.0.0.1:$OTTER_SCHEDULER_PORT/healthz" ;;
        kwok) curl -fsS "http://127.0.0.1:$OTTER_KWOK_PORT/healthz" ;;
        registry) curl -fsS "http://$OTTER_REGISTRY/v2/" ;;
        coredns) curl -fsS "http://127.0.0.1:$OTTER_COREDNS_READY_PORT/ready" ;;
        *) die "unknown component $1" ;;
    esac
}

# wait_for NAME WHAT CMD...: retry CMD until it succeeds; fail when NAME dies or after TIMEOUT
# seconds (default 60), showing the end of NAME's log (with WAIT_SOFT=1, return 1 when NAME dies).
wait_for() {
    local name=$1 what=$2; shift 2
    local deadline=$((SECONDS + ${TIMEOUT:-60}))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$RUN_DIR/pids/$name.pid"; then
            # The end of its log now, on stderr: a caller may delete DIR right after. Its exit
            # status too (when it was started by this shell): an empty log with 137 says
            # SIGKILL, not a failure of its own.
            exit_status "$RUN_DIR/pids/$name.pid"
            log "$name exited while waiting for $what ($EXIT_STATUS); the end of $RUN_DIR/logs/$name.log:"
            tail -n 30 "$RUN_DIR/logs/$name.log" >&2 || true
            # WAIT_SOFT=1: the caller decides (start_retrying retries a lost port).
            [[ -z ${WAIT_SOFT:-} ]] || return 1
            die "$name exited while waiting for $what; log: $RUN_DIR/logs/$name.log"
        fi
        if ((SECONDS > deadline)); then
            tail -n 30 "$RUN_DIR/logs/$name.log" >&2 || true
            die "timed out after ${TIMEOUT:-60}s waiting for $what; log: $RUN_DIR/logs/$name.log"
        fi
        sleep 0.2
    done
}

# crd_established CRD KUBECTL...: poll for up to 60 s until CRD's Established condition is True;
# 1 when it is not. Polled, not "kubectl wait": that fails at once ("accessor error: <nil>")
# while a CRD just created has no status yet.
crd_established() {
    local crd=$1 _
    shift
    for _ in $(seq 120); do
        [[ $("$@" get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]] &&
            return 0
        sleep 0.5
    done
    return 1
}

# free_port VAR: set VAR to a TCP port below the kernel's ephemeral range (so no outgoing connection can hold
# it; those get ports from that range) that no socket uses and this shell has not handed out.
# (Sets a variable rather than printing, so that \$(...) subshells cannot lose _PORTS_TAKEN.)
_PORTS_TAKEN=" "
free_port() {
    local port used low=10000 high=32767 eph_low
    if read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && ((eph_low > low + 1000)); then
        high=$((eph_low - 1))
    fi
    used=" $(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u | tr '\n' ' ') "
    for _ in $(seq 500); do
        port=$((low + RANDOM % (high - low + 1)))
        [[ $used == *" $port "* || $_PORTS_TAKEN == *" $port "* ]] && continue
        _PORTS_TAKEN+="$port "
        printf -v "$1" '%s' "$port"
        return 0
    done
    die "no free port found in $low-$high"
}
