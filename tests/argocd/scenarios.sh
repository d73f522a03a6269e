# shellcheck shell=bash disable=SC2154 # work, k, kubectl, operator_bin, ...: set by tests/argocd/test
# The scenarios of tests/argocd/test, in order. Sourced by it after lib.sh.

ns=otter-system   # examples/argocd/otter-operator.yaml's destination
app_ns=calls      # examples/argocd/otter-backend.yaml's destination
backend_file=examples/argocd/backend/otterdeployment.yaml
# The quiet windows that count writes. At rest, kwok runs the issue's 60 s; on real nodes (inside
# the node suite's CI time) half. After drift, 15 s on both: Argo CD compares on every change it
# watches, so a write loop or a permanent OutOfSync shows at its first comparison after the
# sync, long before either window ends.
if $real_nodes; then rest_secs=30; else rest_secs=60; fi
quiet_secs=15

check "Argo CD configured: its CRDs ($ARGOCD_VERSION), argocd-cm + examples/argocd/argocd-cm-patch.yaml, argocd-secret, project default" argocd_config
start_argocd || { tail -n 20 "$work"/logs/*.log >&2; die "Argo CD processes did not start (logs above)"; }
pass "Argo CD running: redis-server :$redis_port, repo server :$repo_port (helm, git), application controller"
git_init >"$work/git-init.log" 2>&1 || { cat "$work/git-init.log" >&2; die "could not create the Git repository"; }
rev1=$(g rev-parse HEAD)
pass "Git repository $git_url: charts/otter and examples/argocd/ as in this tree (${rev1:0:8})"

# --- the operator Application: CRD first, Synced and Healthy -----------------------------------
check "otter-operator Application applied (examples/argocd/otter-operator.yaml; repoURL and image values changed)" \
  apply_app examples/argocd/otter-operator.yaml
check "otter-operator: Synced and Healthy at ${rev1:0:8}" eventually 300 app_is otter-operator Synced Healthy "$rev1"
crd_in_first_sync() { # the CRD came with the chart, synced by Argo CD no later than the operator
  local crd dep
  established otterdeployments.otter.dev || return 1
  crd=$(k get crd otterdeployments.otter.dev -o json)
  dep=$(k -n "$ns" get deployment otter-operator -o json)
  # (Argo CD 3.2 applies the chart's CRD without its tracking-id annotation, yet lists it.)
  app otter-operator | jq -e '[.status.resources[] | select(.kind == "CustomResourceDefinition" and
      .name == "otterdeployments.otter.dev" and .status == "Synced")] | length == 1' >/dev/null ||
    { echo "the CRD is not a Synced resource of otter-operator"; return 1; }
  # RFC 3339 UTC timestamps compare as strings.
  jq -e -n --argjson c "$crd" --argjson d "$dep" '$c.metadata.creationTimestamp <= $d.metadata.creationTimestamp' >/dev/null ||
    { echo "the CRD was created after the operator Deployment"; return 1; }
  app otter-operator | jq -e '.status.operationState.phase == "Succeeded" and
      (.status.operationState.retryCount // 0) == 0 and
      ([.status.operationState.syncResult.resources[] | select(.status != "Synced")] | length == 0)' >/dev/null || {
      app otter-operator | jq -c '{history: [.status.history[]? | {id, revision, deployStartedAt}],
        op: (.status.operationState | {phase, message, retryCount, startedAt, finishedAt,
          resources: [.syncResult.resources[]? | {kind, name, status, message}]})}'
      return 1
    }
}
# The Application may show Synced and Healthy a moment before its sync operation is marked done.
check "otter-operator: the CRD synced with the chart, created no later than the operator, no retry; Established" eventually 30 crd_in_first_sync
if $real_nodes; then
  check "otter-operator: its Deployment available (real pods, the image from the cluster's registry)" \
    k -n "$ns" rollout status deployment/otter-operator --timeout=180s
else
  check "otter-operator: its Deployment available (kwok pods)" k -n "$ns" rollout status deployment/otter-operator --timeout=60s
fi

# --- the backend Application: Lua health from argocd-cm, Progressing -> Healthy -----------------
# Argo CD has no built-in health for otter.dev: without the Lua check the OtterDeployment would be
# Healthy as soon as it exists, so a Progressing backend is the check's verdict.
lua_healthy() {
  app_is otter-backend Synced Healthy "$rev1" &&
    resource_health otter-backend OtterDeployment otter | grep "^Healthy: "
}
if $real_nodes; then
  # The operator already runs: the CR gets status at once and stays Progressing while its real
  # signaling, TURN and Redis pods start. Argo CD refreshes the Application only when a change
  # of the CR changes its health verdict (status fields are ignored updates), so it writes
  # Progressing, then Healthy: both the Application and the CR are watched.
  timeout 600 "$kubectl" -n "$argocd_ns" get applications --watch -o jsonpath='{.metadata.name}|{.status.health.status}|{.status.health.lastTransitionTime}|{.status.resources[?(@.kind=="OtterDeployment")].health.message}{"\n"}' \
    >"$work/watch-backend-app" 2>&1 &
  app_watch=$!
  timeout 600 "$kubectl" -n "$app_ns" get otterdeployments --watch -o jsonpath='{.metadata.name}|{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].lastTransitionTime}|{.status.conditions[?(@.type=="Progressing")].status} {.status.conditions[?(@.type=="Progressing")].reason}{"\n"}' \
    >"$work/watch-backend-cr" 2>&1 &
  cr_watch=$!
  check "otter-backend Application applied (examples/argocd/otter-backend.yaml; repoURL changed)" \
    apply_app examples/argocd/otter-backend.yaml
  check "otter-backend: Healthy once its real pods are ready (the Lua check: Ready=True)" eventually 300 lua_healthy
  kill "$app_watch" "$cr_watch" 2>/dev/null || true; wait "$app_watch" "$cr_watch" 2>/dev/null || true
  went_through_progressing() {
    local app_seen cr_seen app_healthy cr_ready
    app_seen=$(awk -F'|' '$1 == "otter-backend" && $2 != "" {print $2 "|" $3 "|" $4}' "$work/watch-backend-app" | uniq)
    cr_seen=$(awk -F'|' '$1 == "otter" {print $2 "|" $3 "|" $4}' "$work/watch-backend-cr" | uniq)
    printf 'Application (health|since|Lua message):\n%s\nCR (Ready|since|Progressing):\n%s\n' "$app_seen" "$cr_seen"
    # Argo CD said Progressing before Healthy...
    awk -F'|' '$1 == "Healthy" {exit} $1 == "Progressing" {p=1} END {exit !p}' <<<"$app_seen" ||
      { echo "Argo CD never said Progressing before Healthy"; return 1; }
    # ...the operator said Creating or RollingOut (real pods not ready yet) before Ready...
    awk -F'|' '$1 == "True" {exit} $3 ~ /^True (Creating|RollingOut)$/ {p=1} END {exit !p}' <<<"$cr_seen" ||
      { echo "the CR was never Progressing (Creating/RollingOut) before Ready"; return 1; }
    # ...and Argo CD turned Healthy no earlier than the CR turned Ready: through the operator's
    # Progressing status, which Argo CD's cache evaluated with the Lua check on every change,
    # the verdict stayed Progressing (a Healthy one would have been written at once).
    app_healthy=$(awk -F'|' '$1 == "Healthy" {print $2; exit}' <<<"$app_seen")
    cr_ready=$(awk -F'|' '$1 == "True" {print $2; exit}' <<<"$cr_seen")
    if [ -z "$app_healthy" ] || [ -z "$cr_ready" ] || [[ $app_healthy < $cr_ready ]]; then
      echo "Application Healthy since '$app_healthy', CR Ready since '$cr_ready'"; return 1
    fi
    echo "CR created $(k -n "$app_ns" get otterdeployment otter -o jsonpath='{.metadata.creationTimestamp}'), Ready $cr_ready, Argo CD Healthy $app_healthy"
  }
  if out=$(went_through_progressing 2>&1); then
    pass "otter-backend: Progressing while the operator said Creating/RollingOut (real pods starting), Healthy only once it said Ready ($(tail -n1 <<<"$out"))"
  else
    fail "otter-backend: Progressing while the operator said Creating/RollingOut (real pods starting), Healthy only once it said Ready" "$out"
  fi
else
  # The operator is not running yet: the CR has no status, which only the Lua check turns into
  # Progressing.
  check "otter-backend Application applied (examples/argocd/otter-backend.yaml; repoURL changed)" \
    apply_app examples/argocd/otter-backend.yaml
  lua_progressing() {
    app_is otter-backend Synced Progressing "$rev1" &&
      resource_health otter-backend OtterDeployment otter | grep -x "Progressing: Waiting for the otter-operator to report status"
  }
  check "otter-backend: Synced, Progressing (the Lua check, run by Argo CD: no status yet)" eventually 180 lua_progressing

  mapfile -t op_args < <(k -n "$ns" get deployment otter-operator -o json |
    jq -r '.spec.template.spec.containers[0].args[] | select(startswith("--listen=") | not)')
  sa=$(k -n "$ns" get deployment otter-operator -o jsonpath='{.spec.template.spec.serviceAccountName}')
  sa_kubeconfig=$(tests/cluster/kubeconfig --dir "$work/cluster" --service-account "$ns/$sa")
  oplog=$work/logs/operator.log
  operator_ready() { curl -fsS "http://127.0.0.1:$port/readyz"; }
  run_operator() { KUBECONFIG=$sa_kubeconfig POD_NAME=argocd-test-operator exec "$operator_bin" "${op_args[@]}" --listen="127.0.0.1:$port"; }
  start_retrying operator operator_ready -- run_operator || { tail -n 20 "$oplog" >&2; die "the operator did not start"; }
  pass "operator process ready as $ns/$sa (the chart's RBAC), with the synced Deployment's arguments"
  check "otter-backend: Healthy once the operator reports Ready (the Lua check: Ready=True)" eventually 180 lua_healthy
fi

# --- Degraded on a missing Secret, Healthy once it exists ---------------------------------------
# The same commit adds a ConfigMap that the upgrade commit removes again (prune).
python3 tests/argocd/edit.py set "$clone/$backend_file" spec.turn.secretRef '{"name": "turn-shared"}'
cat >"$clone/examples/argocd/backend/notes.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: otter-notes}
data: {note: "owned by Argo CD; removed from Git by the upgrade commit"}
EOF
rev2=$(commit "backend: TURN secret from Secret turn-shared (not created yet); a notes ConfigMap")
refresh otter-backend
lua_degraded() {
  app_is otter-backend Synced Degraded "$rev2" &&
    resource_health otter-backend OtterDeployment otter | grep "^Degraded: SecretNotFound: .*turn-shared"
}
check "degraded: commit ${rev2:0:8} names a missing Secret: Synced, Degraded (SecretNotFound)" eventually 180 lua_degraded
check "degraded: the user creates Secret turn-shared" \
  k -n "$app_ns" create secret generic turn-shared --from-literal=turn-secret="$(head -c 24 /dev/urandom | base64)"
check "degraded: Healthy again once the Secret exists" eventually 180 app_is otter-backend Synced Healthy "$rev2"

# --- at rest: no permanent OutOfSync, no writes -------------------------------------------------
# watch_writes NAME KIND/NAME NAMESPACE SECONDS: record every change of one object for SECONDS.
watch_writes() {
  timeout "$4" "$kubectl" -n "$3" get "$2" --watch-only \
    -o jsonpath='{.metadata.resourceVersion} {.metadata.generation}{range .metadata.managedFields[*]} {.manager}/{.subresource}@{.time}{end}{"\n"}' \
    >"$work/watch-$1" 2>&1 || true
}
writes() { grep -c '^[0-9]' "$work/watch-$1" || true; }
at_rest() { # SECONDS: both Applications Synced and Healthy all along, nothing written
  local secs=$1 end samples=0 bad=0 watchers=()
  watch_writes rest-cr otterdeployment/otter "$app_ns" "$secs" &
  watchers+=($!)
  watch_writes rest-signaling deployment/otter-signaling "$app_ns" "$secs" &
  watchers+=($!)
  watch_writes rest-operator deployment/otter-operator "$ns" "$secs" &
  watchers+=($!)
  end=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$end" ]; do
    samples=$((samples + 1))
    if ! app_is otter-operator Synced Healthy >/dev/null || ! app_is otter-backend Synced Healthy >/dev/null; then
      bad=$((bad + 1)); app_state otter-operator; app_state otter-backend
    fi
    sleep 1
  done
  wait "${watchers[@]}"
  # A write names its writer: each line is the resourceVersion, the generation and every
  # manager with the time of its last write.
  local w
  for w in rest-cr rest-signaling rest-operator; do
    [ "$(writes "$w")" -eq 0 ] || sed "s/^/$w: /" "$work/watch-$w"
  done
  echo "$samples samples, $bad not Synced+Healthy; writes: CR $(writes rest-cr), signaling Deployment $(writes rest-signaling), operator Deployment $(writes rest-operator)"
  [ "$bad" -eq 0 ] && [ "$(writes rest-cr)" -eq 0 ] && [ "$(writes rest-signaling)" -eq 0 ] && [ "$(writes rest-operator)" -eq 0 ]
}
# settled: on real nodes, pods of a roll (TURN after the Secret, signaling after the drift) take
# a while to go, and the operator rightly writes the CR's status as they do: wait until nothing
# is left moving before a window that counts writes. kwok's pods are settled at once.
settled() {
  local n terminating
  for n in "$app_ns" "$ns"; do
    terminating=$(k get pods -n "$n" -o json | jq -r '[.items[] | select(.metadata.deletionTimestamp) | .metadata.name] | join(" ")') || return 1
    if [ -n "$terminating" ]; then echo "pods still terminating in $n: $terminating"; return 1; fi
  done
  k -n "$app_ns" get otterdeployment otter -o json | jq -e '
    .status as $s | .status.observedGeneration == .metadata.generation and
    all([$s.signaling, $s.turn, $s.redis][] | select(. != null); .ready == .desired) and
    (($s.turnDraining // []) | length == 0) and
    ([($s.turnReachability // [])[] | select(.reachable | not)] | length == 0)' >/dev/null ||
    { k -n "$app_ns" get otterdeployment otter -o json | jq -c '.status | del(.conditions[]?.lastTransitionTime)'; return 1; }
}
if $real_nodes; then
  check "at rest: nothing left moving (no terminating pods, every component ready, no TURN drain)" eventually 180 settled
fi
# quiet SECONDS: the CR has not been written for SECONDS. Healthy (Ready=True) can come before the
# last status change of a roll (a TURN pod count catching up after the Secret's rotation): the
# window below measures rest, so it starts once those writes have ended.
cr_version() { k -n "$app_ns" get otterdeployment otter -o jsonpath='{.metadata.resourceVersion}'; }
quiet() {
  local rv last
  last=$(cr_version) || return 1
  for _ in $(seq "$1"); do
    sleep 1
    rv=$(cr_version) || return 1
    [ "$rv" = "$last" ] || { echo "written at resourceVersion $rv"; return 1; }
  done
}
check "at rest: the OtterDeployment unwritten for 10 s before the window" eventually 180 quiet 10
if out=$(at_rest "$rest_secs" 2>&1); then pass "at rest $rest_secs s: both Synced and Healthy throughout, no write to the CR or the Deployments ($(tail -n1 <<<"$out"))"
else fail "at rest $rest_secs s: both Synced and Healthy throughout, no write to the CR or the Deployments" "$out"; fi

# --- drift: self-heal, and no write loop -------------------------------------------------------
uid_of() { k -n "$1" get "$2" -o jsonpath='{.metadata.uid}'; }
op_uid=$(uid_of "$ns" deployment/otter-operator)
check "drift: operator Deployment deleted by hand" k -n "$ns" delete deployment otter-operator --wait=false
recreated() { local u; u=$(uid_of "$ns" deployment/otter-operator) && [ -n "$u" ] && [ "$u" != "$op_uid" ]; }
check "drift: self-heal recreated it" eventually 120 recreated
check "drift: otter-operator Synced and Healthy again" eventually 120 app_is otter-operator Synced Healthy "$rev2"

gen_before=$(k -n "$app_ns" get otterdeployment otter -o jsonpath='{.metadata.generation}')
watch_writes heal-cr otterdeployment/otter "$app_ns" 90 &
heal_watch=$!
check "drift: CR edited by hand (signaling.replicas 2 -> 5)" \
  k -n "$app_ns" patch otterdeployment otter --type merge -p '{"spec":{"signaling":{"replicas":5}}}'
healed() {
  k -n "$app_ns" get otterdeployment otter -o json |
    jq -e '.spec.signaling.replicas == 2 and .status.observedGeneration == .metadata.generation' >/dev/null
}
check "drift: self-heal put back Git's replicas: 2 and the operator observed it" eventually 120 healed
check "drift: otter-backend Synced and Healthy again" eventually 120 app_is otter-backend Synced Healthy "$rev2"
if $real_nodes; then check "drift: nothing left moving (the signaling pods of replicas: 5 gone)" eventually 180 settled; fi
two_generations() { # the hand edit and Argo CD's revert, nothing more
  local g; g=$(k -n "$app_ns" get otterdeployment otter -o jsonpath='{.metadata.generation}')
  echo "generation $gen_before -> $g"
  [ "$g" -eq $((gen_before + 2)) ]
}
check "drift: the CR's spec was written twice (the edit, the revert): Argo CD and the operator do not fight" two_generations
if out=$(at_rest "$quiet_secs" 2>&1); then pass "drift: $quiet_secs s after healing, nothing writes ($(tail -n1 <<<"$out"))"
else fail "drift: $quiet_secs s after healing, nothing writes" "$out"; fi
kill "$heal_watch" 2>/dev/null || true; wait "$heal_watch" 2>/dev/null || true
echo "     writes to the CR from the hand edit to the end of the quiet period: $(writes heal-cr)"

# --- upgrade: chart version and CR field in one commit; prune -----------------------------------
children() { # every object the operator created in $app_ns: kind/name=uid, sorted
  k -n "$app_ns" get deployments,statefulsets,daemonsets,services,configmaps,secrets,networkpolicies,poddisruptionbudgets \
    -l app.kubernetes.io/managed-by=otter-operator -o json |
    jq -r '.items[] | "\(.kind)/\(.metadata.name)=\(.metadata.uid)"' | sort
}
children >"$work/children-before"
turn_shared_uid=$(uid_of "$app_ns" secret/turn-shared)
old_chart=$(sed -n 's/^version: //p' "$clone/charts/otter/Chart.yaml")
new_chart=${old_chart%.*}.$((${old_chart##*.} + 1))
sed -i "s/^version: .*/version: $new_chart/" "$clone/charts/otter/Chart.yaml"
python3 tests/argocd/edit.py set "$clone/$backend_file" spec.signaling.maxPeersPerRoom 4
rm "$clone/examples/argocd/backend/notes.yaml"
rev3=$(commit "upgrade: chart $new_chart, maxPeersPerRoom 4, notes ConfigMap dropped")
refresh otter-operator
refresh otter-backend
chart_upgraded() {
  app_is otter-operator Synced Healthy "$rev3" &&
    k -n "$ns" get deployment otter-operator -o jsonpath='{.metadata.labels.helm\.sh/chart}' | grep -x "otter-$new_chart"
}
check "upgrade: otter-operator Synced and Healthy at ${rev3:0:8}, Deployment labelled otter-$new_chart" eventually 180 chart_upgraded
cr_upgraded() {
  app_is otter-backend Synced Healthy "$rev3" &&
    k -n "$app_ns" get otterdeployment otter -o json |
    jq -e '.spec.signaling.maxPeersPerRoom == 4 and .status.observedGeneration == .metadata.generation' >/dev/null
}
check "upgrade: otter-backend Synced and Healthy at ${rev3:0:8}, maxPeersPerRoom 4 observed by the operator" eventually 180 cr_upgraded
notes_pruned() { ! k -n "$app_ns" get configmap otter-notes 2>/dev/null; }
check "prune: the ConfigMap dropped from Git is deleted" eventually 60 notes_pruned
operator_objects_kept() {
  children >"$work/children-after"
  diff "$work/children-before" "$work/children-after" &&
    [ -s "$work/children-after" ] &&
    [ "$(uid_of "$app_ns" secret/turn-shared)" = "$turn_shared_uid" ] &&
    echo "$(wc -l <"$work/children-after") objects"
}
check "prune: every object the operator created is kept (same UIDs), and the user's Secret" operator_objects_kept

# --- what the operator said ---------------------------------------------------------------------
if $real_nodes; then
  # The pods that ran since the upgrade; those before it were checked by the node suite's own
  # helm-installed operator under the same RBAC.
  oplog=$work/logs/operator-pods.log
  k -n "$ns" logs -l app.kubernetes.io/component=operator --prefix --tail=-1 >"$oplog" 2>&1 || true
  [ -s "$oplog" ] || fail "operator pods' logs read" "$(cat "$oplog")"
fi
if grep -qi forbidden "$oplog"; then fail "operator log: no 'forbidden' (the chart's RBAC suffices)" "$(grep -i forbidden "$oplog" | head -5)"
else pass "operator log: no 'forbidden' (the chart's RBAC suffices)"; fi
