#!/usr/bin/env python3
"""The chart's Grafana dashboard and PrometheusRule, for tests/helm/test. Exit 0 when the checks
hold, else 1 with one line per problem on stderr.

  monitoring.py extract RENDER OUTDIR
      From a render with metrics.dashboards and metrics.prometheusRule on: check the dashboard
      ConfigMap (sidecar label, JSON, unique panel ids, a query in every panel) and write
        OUTDIR/rules.yaml            the PrometheusRule's spec (promtool's rule file format)
        OUTDIR/dashboard-rules.yaml  every dashboard query as a recording rule, Grafana's
                                     variables replaced, so that promtool parses each one
        OUTDIR/queries.txt           every query and alert expression, one per line
  monitoring.py names QUERIES SCRAPE...
      every otter_* metric a query uses is exported: a sample in one of the SCRAPEs (the
      /metrics text of the running binaries), or a family one of them declares (# TYPE), with
      the suffixes of its type (_total, _bucket/_count/_sum)
"""
import json
import os
import re
import sys

import yaml

problems = []


def expect(cond, msg):
    if not cond:
        problems.append(msg)


def one(docs, kind):
    found = [d for d in docs if d and d.get("kind") == kind]
    expect(len(found) == 1, f"want 1 {kind} in the render, got {len(found)}")
    return found[0] if found else None


def dashboard_queries(cm):
    labels = cm["metadata"].get("labels", {})
    expect(labels.get("grafana_dashboard") == "1", f"dashboard ConfigMap labels {labels}")
    files = cm.get("data", {})
    expect(list(files) == ["otter.json"], f"dashboard ConfigMap keys {list(files)}")
    dash = json.loads(files.get("otter.json", "{}"))
    expect(dash.get("uid") == "otter-overview", f"dashboard uid {dash.get('uid')}")
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    expect(len(ids) == len(set(ids)), f"duplicate panel ids {ids}")
    queries = []
    for p in panels:
        if p.get("type") == "row":
            continue
        exprs = [t.get("expr", "") for t in p.get("targets", [])]
        expect(exprs and all(e.strip() for e in exprs), f"panel {p.get('title')!r} without a query")
        queries.extend(exprs)
    expect(len(queries) >= 10, f"only {len(queries)} dashboard queries")
    return queries


def grafana_to_promql(expr):
    # The variables Grafana substitutes before it sends a query.
    return expr.replace("$__rate_interval", "5m").replace('"$namespace"', '".*"')


def extract(render, outdir):
    with open(render) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    rule = one(docs, "PrometheusRule")
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and "otter.json" in d.get("data", {})]
    expect(len(cms) == 1, f"want 1 dashboard ConfigMap, got {len(cms)}")
    if rule is None or not cms:
        return
    queries = dashboard_queries(cms[0])
    with open(os.path.join(outdir, "rules.yaml"), "w") as f:
        yaml.safe_dump(rule["spec"], f, sort_keys=False)
    recorded = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q)} for i, q in enumerate(queries)]
    with open(os.path.join(outdir, "dashboard-rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}, f, sort_keys=False)
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = sorted(r.get("alert", "") for r in alerts)
    for want in ["OtterTurnNoReachableNode", "OtterSignalingRedisUnreachable",
                 "OtterSignalingErrorsRising", "OtterReconcileFailing"]:
        expect(want in names, f"alert {want} missing (have {names})")
    for r in alerts:
        expect(r.get("labels", {}).get("severity"), f"alert {r.get('alert')} without a severity")
        expect(r.get("annotations", {}).get("summary"), f"alert {r.get('alert')} without a summary")
    with open(os.path.join(outdir, "queries.txt"), "w") as f:
        for q in queries + [r["expr"] for r in alerts]:
            f.write(" ".join(q.split()) + "\n")


SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"],
            "gauge": [""], "summary": ["_count", "_sum", ""], "info": ["_info"]}


def exported(scrapes):
    names = set()
    for path in scrapes:
        with open(path) as f:
            for line in f:
                if line.startswith("# TYPE "):
                    _, _, family, kind = line.split(maxsplit=3)
                    names.update(family + s for s in SUFFIXES.get(kind.strip(), [""]))
                elif line.strip() and not line.startswith("#"):
                    names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def names(queries, *scrapes):
    have = exported(scrapes)
    expect(any(n.startswith("otter_operator_") for n in have), "no otter_operator_* metric in the scrapes")
    expect(any(n.startswith("otter_signaling_") for n in have), "no otter_signaling_* metric in the scrapes")
    expect(any(n.startswith("otter_turn_") for n in have), "no otter_turn_* metric in the scrapes")
    used = set()
    with open(queries) as f:
        for q in f:
            used.update(re.findall(r"\b(otter_[a-z0-9_]+)", q))
    expect(len(used) >= 15, f"only {len(used)} metric names in the queries: {sorted(used)}")
    for n in sorted(used - have):
        problems.append(f"{n} is used by the dashboard or an alert but no binary exports it")
    if not problems:
        print(f"{len(used)} metric names, all exported")


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:] or ["help"]
    fn = {"extract": extract, "names": names}.get(cmd)
    if fn is None:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if cmd in ("help", "-h", "--help") else 2)
    fn(*rest)
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)
