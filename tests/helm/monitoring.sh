# shellcheck shell=bash disable=SC2154 # helm, work, check, refuse, pass, fail: set by tests/helm/test
# The static monitoring checks of tests/helm/test, sourced by it: the Grafana dashboard and the
# PrometheusRule rendered by tests/helm/values/monitoring.yaml, checked with promtool (from
# Debian's prometheus package, PROMTOOL_DEBIAN_VERSION). Which metric names the binaries really
# export is checked against their scrapes in cluster.sh.

echo
promtool=$(tests/helm/install promtool)
# shellcheck source=tests/versions.env
. tests/versions.env
echo "=== monitoring: promtool from Debian's prometheus $PROMTOOL_DEBIAN_VERSION ==="
mon=$work/monitoring
mkdir -p "$mon"
off_by_default() { ! grep -qE '^kind: PrometheusRule|grafana_dashboard' "$work/default.yaml"; }
check "dashboard ConfigMap and PrometheusRule off by default" off_by_default
check "dashboard ConfigMap (sidecar label, JSON, a query per panel) and PrometheusRule rendered" \
  python3 tests/helm/monitoring.py extract "$work/monitoring.yaml" "$mon"
check "promtool check rules: the PrometheusRule's alerts" "$promtool" check rules "$mon/rules.yaml"
check "promtool check rules: every dashboard query parses as PromQL" \
  "$promtool" check rules "$mon/dashboard-rules.yaml"
cp tests/helm/alerts_test.yaml "$mon/"
check "promtool test rules: each alert fires on its condition and stays quiet otherwise (tests/helm/alerts_test.yaml)" \
  "$promtool" test rules "$mon/alerts_test.yaml"
# The unit tests must be able to fail: an alert that never fires is caught.
sed 's/otter_turn_reachable_nodes) == 0/otter_turn_reachable_nodes) < 0/' "$mon/rules.yaml" >"$mon/rules.broken"
sed 's/rules.yaml/rules.broken/' "$mon/alerts_test.yaml" >"$mon/alerts_test.broken.yaml"
refuse "promtool test rules catches an alert that no longer fires" "OtterTurnNoReachableNode" \
  "$promtool" test rules "$mon/alerts_test.broken.yaml"
