# shellcheck shell=bash disable=SC2034 # variables here are used by the scripts that source this file
# Shared by tests/cluster/{install,up,down,smoke-test}. Sourced, not executed.

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
        *) dir=$K8S_BIN_DIR ;;
    esac
    [[ -x $dir/$name ]] || die "$dir/$name is missing; run tests/cluster/install first"
    printf '%s\n' "$dir/$name"
}

KWOK_STAGES=$OTTER_CACHE/kwok/$KWOK_VERSION/stages.yaml

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

# pid_alive PIDFILE: the process recorded in PIDFILE is running.
pid_alive() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(<"$1")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# free_port: a TCP port nobody listens on in 20000-60999, not handed out before by this shell.
_PORTS_TAKEN=" "
free_port() {
    local port listening
    listening=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' | tr '\n' ' ')
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 41000))
        [[ " $listening " == *" $port "* || $_PORTS_TAKEN == *" $port "* ]] && continue
        _PORTS_TAKEN+="$port "
        printf '%s\n' "$port"
        return 0
    done
    die "no free port found"
}
