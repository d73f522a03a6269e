# shellcheck shell=bash disable=SC2154 # work, k, argocd, argocd_dir, helm, pids, test_values...: set by tests/argocd/test
# Argo CD as processes, the Git repository and Application helpers for tests/argocd/test.
# Sourced by it; uses its check/eventually/pass/fail/die helpers.

argocd_ns=argocd
mkdir -p "$work/logs" "$work/argocd/tls" "$work/argocd/ssh" "$work/argocd/gnupg" "$work/argocd/tmp"

established() { # CRD...: each Established
  local c
  for c in "$@"; do
    k get crd "$c" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' | grep -qx True || return 1
  done
}

# --- Argo CD's configuration, as its install manifests would create it -----------------------
argocd_config() {
  k create namespace "$argocd_ns" >/dev/null &&
    k apply --server-side -f "$argocd_dir/crds/" >/dev/null &&
    eventually 30 established applications.argoproj.io appprojects.argoproj.io &&
    # Argo CD only reads ConfigMaps and Secrets labelled part-of=argocd.
    k -n "$argocd_ns" create configmap argocd-cm >/dev/null &&
    k -n "$argocd_ns" label configmap argocd-cm app.kubernetes.io/name=argocd-cm app.kubernetes.io/part-of=argocd >/dev/null &&
    k -n "$argocd_ns" patch configmap argocd-cm --patch-file examples/argocd/argocd-cm-patch.yaml >/dev/null &&
    k -n "$argocd_ns" create secret generic argocd-secret \
      --from-literal=server.secretkey="$(head -c 32 /dev/urandom | base64)" >/dev/null &&
    k -n "$argocd_ns" label secret argocd-secret app.kubernetes.io/name=argocd-secret app.kubernetes.io/part-of=argocd >/dev/null &&
    # The "default" project is created by argocd-server at start; there is no argocd-server here.
    k apply -f - >/dev/null <<EOF
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: $argocd_ns}
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
EOF
}

# start_retrying NAME READY-CMD -- CMD...: start CMD (with $port free on loopback), wait until
# READY-CMD succeeds; another port when it dies (someone took the port between pick and bind).
# READY-CMD and CMD see $port and $port2 (a second free port).
start_retrying() {
  local name=$1 ready=$2 attempt pid deadline; shift 3
  for attempt in 1 2 3; do
    port=$(free_port); port2=$(free_port)
    [ "$port" != "$port2" ] || continue
    "$@" </dev/null >>"$work/logs/$name.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 120))
    while kill -0 "$pid" 2>/dev/null; do
      if $ready >/dev/null 2>&1; then pids+=("$pid"); return 0; fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "$name not ready after 120 s" >>"$work/logs/$name.log"
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
        return 1
      fi
      sleep 0.5
    done
    echo "attempt $attempt: $name exited; retrying on other ports" >>"$work/logs/$name.log"
  done
  return 1
}

redis_ready() { redis-cli -p "$port" ping | grep -qx PONG; }
run_redis() { exec redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no; }
# Argo CD processes: the multi-call binary picks the component from ARGOCD_BINARY_NAME.
# ARGOCD_FAKE_IN_CLUSTER: https://kubernetes.default.svc means $KUBECONFIG (no pod here).
argocd_env() {
  exec env ARGOCD_FAKE_IN_CLUSTER=true ARGOCD_GPG_ENABLED=false \
    ARGOCD_TLS_DATA_PATH="$work/argocd/tls" ARGOCD_SSH_DATA_PATH="$work/argocd/ssh" \
    ARGOCD_GNUPGHOME="$work/argocd/gnupg" TMPDIR="$work/argocd/tmp" \
    PATH="$(dirname "$helm"):$PATH" "$@"
}
http_ready() { curl -fsS "http://127.0.0.1:$port2/healthz" >/dev/null; }
run_repo_server() {
  argocd_env ARGOCD_BINARY_NAME=argocd-repo-server "$argocd" --loglevel info \
    --address 127.0.0.1 --port "$port" --metrics-address 127.0.0.1 --metrics-port "$port2" \
    --redis "127.0.0.1:$redis_port" --disable-tls
}
run_controller() {
  # The hostname's trailing number is the controller's shard; one controller, shard 0.
  # --persist-resource-health: Argo CD 3 keeps each resource's health (and the Lua check's
  # message) only in Redis for its API server; this puts it in the Application's status, where
  # the test reads it (the same health, computed the same way).
  argocd_env ARGOCD_BINARY_NAME=argocd-application-controller HOSTNAME=argocd-application-controller-0 \
    "$argocd" --loglevel info --namespace "$argocd_ns" --metrics-port "$port2" \
    --redis "127.0.0.1:$redis_port" --repo-server "127.0.0.1:$repo_port" --repo-server-plaintext \
    --persist-resource-health
}

start_argocd() {
  start_retrying redis redis_ready -- run_redis || return 1
  redis_port=$port
  start_retrying repo-server http_ready -- run_repo_server || return 1
  repo_port=$port
  start_retrying application-controller http_ready -- run_controller || return 1
}

# --- the Git repository on loopback --------------------------------------------------------------
# A bare repository, served as file:// (Argo CD's repo server runs the real git on it), and a
# clone the test commits from. The first commit is charts/otter and examples/argocd exactly as
# they are in this tree.
git_repo=$work/git/otter.git
git_url=file://$git_repo
clone=$work/git/clone
g() { git -C "$clone" -c user.name=otter-test -c user.email=otter-test@example.invalid "$@"; }
git_init() {
  mkdir -p "$work/git" &&
    git init -q --bare -b main "$git_repo" &&
    git init -q -b main "$clone" &&
    mkdir -p "$clone/charts" "$clone/examples" &&
    cp -r charts/otter "$clone/charts/otter" &&
    cp -r examples/argocd "$clone/examples/argocd" &&
    g add -A && g commit -q -m "Otter's chart and Argo CD examples" &&
    g remote add origin "$git_url" && g push -q origin main
}
# commit MESSAGE: commit everything in the clone, push, print the new revision.
commit() {
  g add -A >/dev/null && g commit -q -m "$1" >/dev/null && g push -q origin main >/dev/null &&
    g rev-parse HEAD
}

# --- Applications ----------------------------------------------------------------------------------
apply_app() { # EXAMPLE-FILE: the example Application, pointed at the loopback repository
  python3 tests/argocd/edit.py app "$1" "$git_url" "$test_values" | k apply -f - >/dev/null
}
app() { k -n "$argocd_ns" get application "$1" -o json; }
# app_is NAME SYNC HEALTH [REVISION]: the Application's sync and health status (and revision).
app_is() {
  app "$1" | jq -e --arg s "$2" --arg h "$3" --arg r "${4:-}" '
    .status.sync.status == $s and .status.health.status == $h and
    ($r == "" or .status.sync.revision == $r)' >/dev/null || { app_state "$1"; return 1; }
}
app_state() { # NAME: what the Application says, for failure messages
  app "$1" | jq -c '{sync: .status.sync.status, revision: .status.sync.revision, health: .status.health,
    op: .status.operationState.phase, message: .status.operationState.message,
    conditions: .status.conditions,
    unsynced: [.status.resources[]? | select(.status != "Synced" or (.health.status // "Healthy") != "Healthy")
      | {kind, name, status, health}]}'
}
# refresh NAME: ask Argo CD to look at Git now, as a Git webhook would (the default poll is 3 min).
refresh() { k -n "$argocd_ns" annotate application "$1" argocd.argoproj.io/refresh=normal --overwrite >/dev/null; }
# resource_health APP KIND NAME: the health Argo CD computed for one resource of an Application.
resource_health() {
  app "$1" | jq -r --arg k "$2" --arg n "$3" '.status.resources[] | select(.kind == $k and .name == $n) | .health | "\(.status): \(.message // "")"'
}
