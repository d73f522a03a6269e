#!/usr/bin/env python3
"""YAML edits for tests/argocd/test, so that the examples are used as they are and every change
the test makes is spelled out where it is made.

  edit.py app FILE REPO_URL VALUES_JSON   print the Application in FILE as JSON, pointed at
                                          REPO_URL, VALUES_JSON deep-merged into its Helm
                                          valuesObject (when it has one)
  edit.py set FILE DOTTED.PATH JSON       set one field of the YAML document in FILE, in place
"""
import json
import sys

import yaml


def merge(into, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def app(path, repo_url, values_json):
    with open(path) as f:
        doc = yaml.safe_load(f)
    source = doc["spec"]["source"]
    source["repoURL"] = repo_url
    if "helm" in source:
        merge(source["helm"].setdefault("valuesObject", {}), json.loads(values_json))
    json.dump(doc, sys.stdout)


def set_field(path, dotted, value_json):
    with open(path) as f:
        doc = yaml.safe_load(f)
    node = doc
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = json.loads(value_json)
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def main(argv):
    if len(argv) == 5 and argv[1] == "app":
        app(argv[2], argv[3], argv[4])
    elif len(argv) == 5 and argv[1] == "set":
        set_field(argv[2], argv[3], argv[4])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
