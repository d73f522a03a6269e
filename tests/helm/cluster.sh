# shellcheck shell=bash disable=SC2154 # helm, work, checks, values_files: set by tests/helm/test
# The control-plane half of tests/helm/test, sourced by it (uses its pass/fail/check/refuse/
# eventually helpers and $helm, $work, $checks, $clusters, $operator_pid).

# shellcheck source=tests/versions.env
. tests/versions.env
ns=otter-system          # the release namespace
app_ns=calls             # where the OtterDeployment lives
release=otter

# up DIR: start a control plane owned by this process; sets KUBECONFIG and kubectl.
up() {
  local out
  out=$(tests/cluster/up --dir "$1" --owner-pid $$ 2>"$work/up.log") || {
    cat "$work/up.log" >&2
    echo "tests/helm/test: tests/cluster/up failed" >&2
    exit 1
  }
  clusters+=("$1")
  eval "$out"
  # shellcheck source=/dev/null
  . "$1/env"
  kubectl=$OTTER_KUBECTL
}
down() { # DIR: stop a cluster now (--keep: keep its logs)
  if $keep; then tests/cluster/down --dir "$1" --keep >/dev/null 2>&1 || true
  else tests/cluster/down --dir "$1" >/dev/null 2>&1 || true; fi
}
k() { "$kubectl" "$@"; }
is_established() { k get crd "$1" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' | grep -qx True; }
established() { # CRD...: each Established (kubectl wait errors out before status exists)
  local c
  for c in "$@"; do eventually 30 is_established "$c" || return 1; done
}

echo
echo "=== cluster: kubernetes $K8S_VERSION (tests/cluster) ==="
tests/cluster/install >/dev/null 2>"$work/install.log" || { cat "$work/install.log" >&2; exit 1; }
build_log=$work/cargo-build.log
# The build every suite shares (tests/build-workspace): a no-op after the `rust` suite.
"$root/tests/build-workspace" 2>"$build_log" || { cat "$build_log" >&2; echo "tests/helm/test: tests/build-workspace failed" >&2; exit 1; }
operator_bin=${CARGO_TARGET_DIR:-$root/target}/debug/otter-operator
signaling_bin=${CARGO_TARGET_DIR:-$root/target}/debug/otter-signaling
# The real ServiceMonitor CRD, so that the ServiceMonitor the chart renders is validated by its
# schema (from the prometheus-operator Go module; PROMETHEUS_OPERATOR_VERSION).
promop_dir=$(GOFLAGS=-mod=mod go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | jq -r .Dir)
servicemonitor_crd=$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
[ -f "$servicemonitor_crd" ] || { echo "tests/helm/test: $servicemonitor_crd missing" >&2; exit 1; }
monitoring_crds=()
for crd in prometheusrules podmonitors; do
  monitoring_crds+=(-f "$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml")
  [ -f "${monitoring_crds[-1]}" ] || { echo "tests/helm/test: ${monitoring_crds[-1]} missing" >&2; exit 1; }
done
up "$work/cluster1"
# Restart kube-apiserver with an audit log (who asked what, and what was answered) and the
# OwnerReferencesPermissionEnforcement admission plugin (which checks the operator may set
# blockOwnerDeletion, i.e. update otterdeployments/finalizers).
audit_log=$work/cluster1/logs/audit.log
cat >"$work/cluster1/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # The admin certificate: helm, kubectl, and the operator impersonating its ServiceAccount.
  - level: Metadata
    users: [otter-admin]
  - level: None
POLICY
printf '%s\0' --audit-policy-file="$work/cluster1/audit-policy.yaml" --audit-log-path="$audit_log" \
  --enable-admission-plugins=OwnerReferencesPermissionEnforcement >>"$work/cluster1/cmd/kube-apiserver"
tests/cluster/restart --dir "$work/cluster1" kube-apiserver 2>>"$work/up.log" ||
  { cat "$work/up.log" >&2; echo "tests/helm/test: kube-apiserver restart with audit failed" >&2; exit 1; }
pass "control plane up, with audit log and OwnerReferencesPermissionEnforcement (operator built, tools installed)"

# --- every render accepted by the API server --------------------------------------------------
k create namespace "$ns" >/dev/null
k create namespace "$app_ns" >/dev/null
apply_crds() {
  k apply --server-side -f crds/otterdeployment.yaml -f "$servicemonitor_crd" "${monitoring_crds[@]}" &&
    established otterdeployments.otter.dev servicemonitors.monitoring.coreos.com \
      prometheusrules.monitoring.coreos.com podmonitors.monitoring.coreos.com
}
check "CRDs applied (OtterDeployment from crds/; ServiceMonitor, PodMonitor, PrometheusRule from prometheus-operator)" apply_crds
for v in "${values_files[@]}"; do
  name=$(basename "$v" .yaml)
  [ -f "$work/$name.yaml" ] || continue
  check "server-side dry run accepts every object ($name)" \
    k apply --dry-run=server --server-side -f "$work/$name.yaml"
done
check "server-side dry run accepts charts/otter.yaml (server-side apply)" k apply --dry-run=server --server-side -f charts/otter.yaml
check "server-side dry run accepts charts/otter.yaml (plain kubectl apply)" k apply --dry-run=server -f charts/otter.yaml
# Let helm install the CRD itself.
k delete crd otterdeployments.otter.dev --wait=true >/dev/null

# --- helm install ------------------------------------------------------------------------------
check "helm install (replicaCount 2: leader election, Lease Role) --wait" \
  "$helm" install "$release" charts/otter -n "$ns" --set replicaCount=2 --wait --timeout 2m
check "helm installed the CRD from crds/" established otterdeployments.otter.dev
check "the installed operator Deployment is available (2/2, kwok pods)" \
  k -n "$ns" rollout status deployment/otter-operator --timeout=60s
notes_ok() { "$helm" status "$release" -n "$ns" | grep -q "rollout status deployment/otter-operator"; }
check "NOTES.txt says what to do next" notes_ok

# --- the operator, as the chart's ServiceAccount -----------------------------------------------
mapfile -t op_args < <(k -n "$ns" get deployment otter-operator -o json |
  jq -r '.spec.template.spec.containers[0].args[] | select(startswith("--listen=") | not)')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_operator() { # KUBECONFIG LOG: start the operator in the background, set operator_pid
  KUBECONFIG=$1 POD_NAME=helm-test-operator "$operator_bin" "${op_args[@]}" --listen="127.0.0.1:$port" >"$2" 2>&1 &
  operator_pid=$!
}
stop_operator() {
  if [ -n "$operator_pid" ]; then
    kill -TERM "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
    operator_pid=""
  fi
}

# Control: an account without RBAC is refused, so kube-rs does honour the kubeconfig's "as:".
nobody=$(tests/cluster/kubeconfig --dir "$work/cluster1" --service-account "$ns/nobody")
run_operator "$nobody" "$work/operator-nobody.log"
check "control: the operator as an account without RBAC gets Forbidden (impersonation honoured)" \
  eventually 20 grep -q 'forbidden' "$work/operator-nobody.log"
stop_operator

sa=$(k -n "$ns" get deployment otter-operator -o jsonpath='{.spec.template.spec.serviceAccountName}')
sa_kubeconfig=$(tests/cluster/kubeconfig --dir "$work/cluster1" --service-account "$ns/$sa")
whoami_is() { k --kubeconfig "$1" auth whoami -o jsonpath='{.status.userInfo.username}' | grep -qx "$2"; }
check "kubeconfig acts as system:serviceaccount:$ns:$sa" whoami_is "$sa_kubeconfig" "system:serviceaccount:$ns:$sa"
oplog=$work/operator.log
run_operator "$sa_kubeconfig" "$oplog"
check "operator ready (/readyz) with the chart's arguments: ${op_args[*]}" \
  eventually 30 curl -fsS "http://127.0.0.1:$port/readyz"
holds_lease() { k -n "$ns" get lease otter-operator -o jsonpath='{.spec.holderIdentity}' | grep -qx helm-test-operator; }
check "operator holds the Lease $ns/otter-operator" eventually 30 holds_lease

kc_app() { k -n "$app_ns" "$@"; }
ready_current() { # Ready=True for the current generation
  local s
  s=$(kc_app get otterdeployment otter -o json) || return 1
  jq -e '(.status.observedGeneration == .metadata.generation) and
         ([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length == 1)' <<<"$s" >/dev/null
}
exists() { kc_app get "$@" >/dev/null 2>&1; }
gone() { ! kc_app get "$@" >/dev/null 2>&1; }
all_gone() { local o; for o in "$@"; do gone "$o" || return 1; done; }
all_exist() { local o; for o in "$@"; do exists "$o" || return 1; done; }

create_od() { # NAME
  printf '%s\n' "apiVersion: otter.dev/v1alpha1" "kind: OtterDeployment" "metadata: {name: $1}" "spec: {}" |
    kc_app apply -f -
}
check "create: OtterDeployment otter (spec: {})" create_od otter
check "create: Ready=True for generation 1" eventually 90 ready_current
scrape_operator() { curl -fsS "http://127.0.0.1:$port/metrics" >"$work/scrape-operator.txt"; }
reachable_series() { scrape_operator && grep -qE '^otter_turn_reachable_nodes\{otterdeployment="calls/otter"\} [0-9]+$' "$work/scrape-operator.txt"; }
check "create: otter_turn_reachable_nodes has a series for calls/otter" eventually 30 reachable_series
cp "$work/scrape-operator.txt" "$work/scrape-operator-created.txt"
check "create: signaling, TURN, Redis, Secrets, NetworkPolicy, PDB exist" all_exist \
  deployment/otter-signaling service/otter-signaling daemonset/otter-turn statefulset/otter-redis \
  service/otter-redis configmap/otter-signaling configmap/otter-turn secret/otter-turn-secret \
  secret/otter-redis-url networkpolicy/otter-redis poddisruptionbudget/otter-signaling

check "update: autoscaling and room tokens on" kc_app patch otterdeployment otter --type merge \
  -p '{"spec":{"signaling":{"autoscaling":{"enabled":true},"auth":{"enabled":true}}}}'
check "update: HPA and token Secret created" \
  eventually 90 all_exist horizontalpodautoscaler/otter-signaling secret/otter-token-secret
check "update: Ready=True for generation 2" eventually 90 ready_current

ice() { kc_app get configmap otter-signaling -o jsonpath='{.data.ice-servers\.json}'; }
ice_has() { ice | grep -qF "$1"; }
ice_lacks() { ! ice | grep -qF "$1"; }
check "Node added: kwok-node-2 labelled otter.dev/turn=true" \
  tests/cluster/node --dir "$work/cluster1" add kwok-node-2 --external-ip 203.0.113.12 --label otter.dev/turn=true
check "Node added: its ExternalIP reaches the ICE servers" eventually 60 ice_has 203.0.113.12
check "Node deleted: kwok-node-2" tests/cluster/node --dir "$work/cluster1" delete kwok-node-2
check "Node deleted: its address leaves the ICE servers" eventually 60 ice_lacks 203.0.113.12

check "update (prune): external Redis Secret created by the user" \
  kc_app create secret generic ext-redis --from-literal=url=redis://:pw@redis.example.com:6379
check "update (prune): 1 replica, no autoscaling, TURN off, external Redis" kc_app patch otterdeployment otter --type merge \
  -p '{"spec":{"signaling":{"replicas":1,"autoscaling":{"enabled":false}},"turn":{"enabled":false},"redis":{"mode":"External","external":{"secretRef":{"name":"ext-redis"}}}}}'
check "update (prune): HPA, PDB, TURN, managed Redis removed" eventually 90 all_gone \
  horizontalpodautoscaler/otter-signaling poddisruptionbudget/otter-signaling daemonset/otter-turn \
  configmap/otter-turn statefulset/otter-redis service/otter-redis networkpolicy/otter-redis
check "update (prune): Ready=True for generation 3" eventually 90 ready_current
check "update (prune): TURN off, otter_turn_reachable_nodes drops calls/otter" eventually 30 eval '! reachable_series && scrape_operator'

check "delete: OtterDeployment deleted" kc_app delete otterdeployment otter --wait=true --timeout=60s
check "delete: children garbage-collected" eventually 90 all_gone \
  deployment/otter-signaling service/otter-signaling configmap/otter-signaling secret/otter-token-secret
wrote_events() {
  kc_app get events.events.k8s.io -o json |
    jq -e '[.items[] | select(.reportingController == "otter-operator")] | length > 0' >/dev/null
}
check "the operator wrote Events as the ServiceAccount" wrote_events
stop_operator

# --- the dashboard's and the alerts' metric names against the real binaries' scrapes ----------
# The operator's scrapes are the ones taken above (while it reconciled an OtterDeployment with
# TURN, and after); the signaling
# server and the TURN exporter (otter-signaling turn-exporter) are started here on free ports.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scrape_binary() { # NAME OUT ARGS...: run the binary with ARGS on a free port, save its /metrics
  local name=$1 out=$2 p pid; shift 2
  p=$(free_port)
  "$signaling_bin" "$@" --listen "127.0.0.1:$p" >"$work/$name.log" 2>&1 &
  pid=$!
  if eventually 30 curl -fsS -o "$out" "http://127.0.0.1:$p/metrics"; then
    kill "$pid"; wait "$pid" 2>/dev/null || true
  else
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    cat "$work/$name.log"; return 1
  fi
}
check "scrape of a running otter-signaling" scrape_binary signaling "$work/scrape-signaling.txt"
check "scrape of a running TURN exporter (otter-signaling turn-exporter)" \
  scrape_binary turn-exporter "$work/scrape-turn.txt" turn-exporter --redis-url "redis://127.0.0.1:$(free_port)"
check "every metric the dashboard and the alerts use is exported by the operator, signaling or the TURN exporter" \
  python3 tests/helm/monitoring.py names "$work/monitoring/queries.txt" \
  "$work/scrape-operator-created.txt" "$work/scrape-operator.txt" "$work/scrape-signaling.txt" "$work/scrape-turn.txt"
if grep -qi 'forbidden' "$oplog"; then
  fail "no 'forbidden' in the operator's log (the chart's RBAC is complete)" "$(grep -i forbidden "$oplog" | head -5)"
else
  pass "no 'forbidden' in the operator's log ($(wc -l <"$oplog") lines: the chart's RBAC is complete)"
fi
no_errors() { ! grep -q '"level":"ERROR"' "$oplog"; }
check "the operator logged no ERROR" no_errors
k get clusterroles,roles -A -l app.kubernetes.io/instance="$release" -o yaml >"$work/installed-rbac.yaml"
if out=$("${checks[@]}" audit "$audit_log" "system:serviceaccount:$ns:$sa" "$work/installed-rbac.yaml" 2>&1); then
  pass "audit log: no request of the operator refused, and it used every permission the chart grants"
  printf '%s\n' "$out" | sed 's/^/     /'
else
  fail "audit log: no request of the operator refused, and it used every permission the chart grants" "$out"
fi

# The one permission the audit log cannot show being used: setting blockOwnerDeletion on a child
# needs update on otterdeployments/finalizers (OwnerReferencesPermissionEnforcement). Prove it is
# needed: the chart's account may apply such a child; the same rules minus that one may not.
create_od owner >/dev/null
owner_uid=$(kc_app get otterdeployment owner -o jsonpath='{.metadata.uid}')
child_as() { # KUBECONFIG NAME: server-side apply a new ConfigMap owned (blockOwnerDeletion) by "owner"
  printf '%s\n' "apiVersion: v1" "kind: ConfigMap" "metadata:" "  name: $2" \
    "  ownerReferences: [{apiVersion: otter.dev/v1alpha1, kind: OtterDeployment, name: owner, uid: $owner_uid, controller: true, blockOwnerDeletion: true}]" |
    k --kubeconfig "$1" -n "$app_ns" apply --server-side --field-manager otter-operator -f -
}
k get clusterrole otter-operator -o json |
  jq '{apiVersion, kind, metadata: {name: "otter-test-no-finalizers"},
       rules: [.rules[] | select(.resources != ["otterdeployments/finalizers"])]}' | k apply -f - >/dev/null
k create clusterrolebinding otter-test-no-finalizers --clusterrole otter-test-no-finalizers \
  --serviceaccount "$ns:no-finalizers" >/dev/null
check "blockOwnerDeletion: the chart's account may set it on a child" child_as "$sa_kubeconfig" child-1
refuse "blockOwnerDeletion: refused without update on otterdeployments/finalizers (the rule is needed)" \
  "cannot set blockOwnerDeletion" child_as "$(tests/cluster/kubeconfig --dir "$work/cluster1" --service-account "$ns/no-finalizers")" child-2
k delete clusterrolebinding,clusterrole otter-test-no-finalizers >/dev/null
kc_app delete otterdeployment owner --wait=true >/dev/null

# --- operator.watchNamespace: a Role instead of the ClusterRole; an OtterDeployment from values -
ns2=otter-ns
check "helm install $ns2 -f tests/helm/values/namespaced.yaml (watches $app_ns only; OtterDeployment from values)" \
  "$helm" install "$ns2" charts/otter -n "$ns2" --create-namespace -f tests/helm/values/namespaced.yaml --wait --timeout 2m
mapfile -t op_args < <(k -n "$ns2" get deployment "$ns2-operator" -o json |
  jq -r '.spec.template.spec.containers[0].args[] | select(startswith("--listen=") | not)')
sa2=$(k -n "$ns2" get deployment "$ns2-operator" -o jsonpath='{.spec.template.spec.serviceAccountName}')
run_operator "$(tests/cluster/kubeconfig --dir "$work/cluster1" --service-account "$ns2/$sa2")" "$work/operator-namespaced.log"
check "namespaced: the chart's OtterDeployment Ready (Role-based RBAC, ${op_args[*]})" eventually 90 ready_current
check "namespaced: its children exist" all_exist deployment/otter-signaling configmap/otter-signaling daemonset/otter-turn
stop_operator
if out=$("${checks[@]}" audit "$audit_log" "system:serviceaccount:$ns2:$sa2" /dev/null refusals-only 2>&1); then
  pass "namespaced: audit log shows no request of the operator refused"
else
  fail "namespaced: audit log shows no request of the operator refused" "$out"
fi
check "namespaced: helm uninstall deletes the chart's OtterDeployment" \
  "$helm" uninstall "$ns2" -n "$ns2" --wait --timeout 2m
check "namespaced: its children garbage-collected" eventually 90 all_gone deployment/otter-signaling daemonset/otter-turn

# --- Argo CD examples --------------------------------------------------------------------------
argocd_dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" | jq -r .Dir)
apply_argocd_crd() {
  k apply --server-side -f "$argocd_dir/manifests/crds/application-crd.yaml" &&
    established applications.argoproj.io
}
check "Argo CD's Application CRD applied (argo-cd $ARGOCD_VERSION)" apply_argocd_crd
k create namespace argocd >/dev/null
check "Argo CD Applications accepted (server-side dry run against Argo CD's CRD)" \
  k apply --dry-run=server --server-side -f examples/argocd/otter-operator.yaml -f examples/argocd/otter-backend.yaml
check "the Argo CD backend OtterDeployment accepted by the CRD and its CEL rules" \
  k apply --dry-run=server --server-side -n "$app_ns" -f examples/argocd/backend/otterdeployment.yaml
cm_patched() {
  k -n argocd create configmap argocd-cm --from-literal=url=https://argocd.example.com >/dev/null &&
    k -n argocd patch configmap argocd-cm --patch-file examples/argocd/argocd-cm-patch.yaml >/dev/null &&
    diff <(k -n argocd get configmap argocd-cm -o jsonpath='{.data.resource\.customizations\.health\.otter\.dev_OtterDeployment}') \
      examples/argocd/otterdeployment-health.lua &&
    [ "$(k -n argocd get configmap argocd-cm -o jsonpath='{.data.url}')" = https://argocd.example.com ]
}
check "argocd-cm patch adds the health check verbatim and keeps the other keys" cm_patched

# --- helm upgrade / uninstall ------------------------------------------------------------------
check "helm upgrade to 1 replica --wait" \
  "$helm" upgrade "$release" charts/otter -n "$ns" --reuse-values --set replicaCount=1 --wait --timeout 2m
upgraded_single() {
  k -n "$ns" get deployment otter-operator -o json |
    jq -e '(.spec.template.spec.containers[0].args | index("--leader-election=false")) and
           .spec.strategy.type == "Recreate"' >/dev/null &&
    ! k -n "$ns" get role otter-operator-leader 2>/dev/null
}
check "upgrade: leader election off, Recreate strategy, Lease Role removed" upgraded_single
refuse "upgrade with bad values refused by the schema" "at '/replicaCount': minimum: got -1, want 0" \
  "$helm" upgrade "$release" charts/otter -n "$ns" --reuse-values --set replicaCount=-1
at_revision_2() { "$helm" status "$release" -n "$ns" -o json | jq -e '.version == 2 and .info.status == "deployed"' >/dev/null; }
check "release still at revision 2 after the refused upgrade" at_revision_2

# What the chart's default values created (the release now has exactly the default values).
"$helm" template "$release" charts/otter -n "$ns" --include-crds >"$work/default-with-crds.yaml"
k get -f "$work/default-with-crds.yaml" -o yaml >"$work/helm-objects.yaml"

create_od kept >/dev/null
check "helm uninstall --wait" "$helm" uninstall "$release" -n "$ns" --wait --timeout 2m
uninstalled() {
  local o
  for o in deployment/otter-operator serviceaccount/otter-operator service/otter-operator; do
    ! k -n "$ns" get "$o" 2>/dev/null || return 1
  done
  ! k get clusterrole/otter-operator 2>/dev/null && ! k get clusterrolebinding/otter-operator 2>/dev/null
}
check "uninstall: operator, ServiceAccount and RBAC gone" uninstalled
crd_kept() { k get crd otterdeployments.otter.dev >/dev/null && kc_app get otterdeployment kept >/dev/null; }
check "uninstall: the CRD and existing OtterDeployments are kept (as Helm does)" crd_kept
down "$work/cluster1"

# --- the kubectl-apply manifest on a fresh control plane ---------------------------------------
up "$work/cluster2"
check "kubectl apply --server-side -f charts/otter.yaml on a fresh control plane" \
  k apply --server-side -f charts/otter.yaml
check "manifest: operator Deployment available" k -n "$ns" rollout status deployment/otter-operator --timeout=60s
k get -f "$work/default-with-crds.yaml" -o yaml >"$work/manifest-objects.yaml" 2>"$work/manifest-get.log" || true
check "manifest: the same objects as helm install (CRD, ServiceAccount, RBAC, Service, Deployment)" \
  "${checks[@]}" objects "$work/helm-objects.yaml" "$work/manifest-objects.yaml"
down "$work/cluster2"
