//! The RBAC that docs/operator.md lists (and the chart grants: `tests/helm` checks the chart
//! against the docs) is exactly what the list of owned kinds needs, for every owned kind.

use std::collections::{BTreeMap, BTreeSet};

use otter_operator::kinds::Kind;
use serde_norway::Value;

type Rules = BTreeMap<(String, String), BTreeSet<String>>;

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// (group, resource) → verbs of the ClusterRole in docs/operator.md's RBAC section.
fn documented() -> Rules {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md");
    let text = std::fs::read_to_string(path).expect("read docs/operator.md");
    let section = &text[text.find("\n## RBAC").expect("an RBAC section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + 8;
    let block = &section[start..start + section[start..].find("```").expect("block end")];
    let mut rules = Rules::new();
    for doc in serde_norway::Deserializer::from_str(block) {
        let doc: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if doc.get("kind").and_then(Value::as_str) != Some("ClusterRole") {
            continue;
        }
        for rule in doc["rules"].as_sequence().expect("rules") {
            for group in strings(rule, "apiGroups") {
                for resource in strings(rule, "resources") {
                    rules
                        .entry((group.clone(), resource))
                        .or_default()
                        .extend(strings(rule, "verbs"));
                }
            }
        }
    }
    rules
}

#[test]
fn the_documented_rbac_is_what_the_owned_kinds_need() {
    let rules = documented();
    for kind in Kind::ALL {
        let resource = kind.resource();
        let want: BTreeSet<String> = kind.rbac_verbs().into_iter().map(String::from).collect();
        assert_eq!(
            rules.get(&resource),
            Some(&want),
            "{kind:?} ({resource:?}): docs/operator.md grants {:?}, the operator needs {want:?}",
            rules.get(&resource)
        );
    }
    let owned: BTreeSet<(String, String)> = Kind::ALL.into_iter().map(Kind::resource).collect();
    let others: BTreeSet<&(String, String)> =
        rules.keys().filter(|r| !owned.contains(*r)).collect();
    let expected: BTreeSet<(String, String)> = [
        ("otter.dev", "otterdeployments"),
        ("otter.dev", "otterdeployments/status"),
        ("otter.dev", "otterdeployments/finalizers"),
        ("", "nodes"),
        ("", "pods"),
        ("events.k8s.io", "events"),
    ]
    .into_iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    assert_eq!(
        others,
        expected.iter().collect(),
        "rules for kinds the operator does not own"
    );
}
