//! The committed CRD: no drift from the Rust types, a structural schema, CEL rules that refuse
//! bad input with clear messages, and examples that the schema accepts.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{
    ScopeContext, Validator, WarningKind, analyze_rule, compile_schema, estimate_rule_cost,
};
use otter_operator::crd::{OtterDeployment, crd_yaml};
use serde_json::{Value, json};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn committed_yaml() -> String {
    std::fs::read_to_string(repo_file("crds/otterdeployment.yaml"))
        .expect("crds/otterdeployment.yaml is committed")
}

fn committed_crd() -> CustomResourceDefinition {
    serde_norway::from_str(&committed_yaml())
        .expect("the committed CRD parses as a CustomResourceDefinition")
}

fn schema() -> Value {
    let crd = committed_crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema to json")
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("CRD serialises");
    assert!(
        generated == committed_yaml(),
        "crds/otterdeployment.yaml is stale: run `cargo run -p otter-operator -- crd > crds/otterdeployment.yaml`"
    );
}

#[test]
fn crd_has_names_scope_status_subresource_and_printer_columns() {
    let crd = committed_crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("otterdeployments.otter.dev")
    );
    assert_eq!(crd.spec.group, "otter.dev");
    assert_eq!(crd.spec.names.kind, "OtterDeployment");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.versions.len(), 1);
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Signaling", "TURN nodes", "URL", "Age"]);
}

/// The structural schema rules of apiextensions.k8s.io/v1: every node has a type (or is
/// int-or-string / preserve-unknown-fields), no `$ref`, `properties` and `additionalProperties`
/// are exclusive, and nothing under allOf/anyOf/oneOf/not declares types, defaults or
/// descriptions. `metadata` may only restrict name and generateName.
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        out.push(format!("{path}: $ref"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        out.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: properties and additionalProperties"));
    }
    for junction in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in obj
            .get(junction)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            value_validation_only(sub, &format!("{path}.{junction}[{i}]"), out);
        }
    }
    if let Some(not) = obj.get("not") {
        value_validation_only(not, &format!("{path}.not"), out);
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            structural_violations(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(extra, &format!("{path}{{}}"), out);
    }
}

fn value_validation_only(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    for forbidden in [
        "type",
        "default",
        "description",
        "nullable",
        "additionalProperties",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: {forbidden} inside a junction"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            value_validation_only(sub, &format!("{path}.{name}"), out);
        }
    }
}

#[test]
fn crd_schema_is_structural() {
    let schema = schema();
    let mut violations = Vec::new();
    structural_violations(&schema, "", &mut violations);
    assert!(violations.is_empty(), "not structural: {violations:#?}");
    // metadata may only constrain name and generateName; the derived schema leaves it alone.
    assert!(schema["properties"]["metadata"].get("properties").is_none());
}

/// Every object in `value` must be a field the schema knows (the apiserver would silently drop
/// unknown fields, hiding typos in the examples).
fn unknown_fields(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    match props.get(k) {
                        Some(sub) => unknown_fields(sub, v, &format!("{path}.{k}"), out),
                        None => out.push(format!("{path}.{k}")),
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object())
            {
                for (k, v) in map {
                    unknown_fields(extra, v, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn example(name: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_file(&format!("examples/{name}"))).expect("example exists");
    serde_norway::from_str(&text).expect("example is YAML")
}

fn validate(object: &Value) -> Result<(), Vec<String>> {
    Validator::new()
        .validate(&schema(), object, None)
        .map_err(|errs| errs.iter().map(ToString::to_string).collect())
}

#[test]
fn examples_are_accepted_and_deserialise() {
    for name in ["otterdeployment-minimal.yaml", "otterdeployment-full.yaml"] {
        let value = example(name);
        let mut unknown = Vec::new();
        unknown_fields(&schema(), &value, "", &mut unknown);
        // The type meta and metadata are not described by the CRD schema; everything else must be.
        unknown.retain(|p| {
            ![".apiVersion", ".kind", ".metadata"]
                .iter()
                .any(|m| p.starts_with(m))
        });
        assert!(
            unknown.is_empty(),
            "{name}: fields the schema does not know: {unknown:?}"
        );
        validate(&value).unwrap_or_else(|e| panic!("{name} refused: {e:?}"));
        let cr: OtterDeployment = serde_json::from_value(value).expect("deserialises");
        assert!(cr.spec.signaling.max_peers_per_room >= 2, "{name}");
    }
}

#[test]
fn full_example_sets_every_spec_field() {
    // Serialising a fully-defaulted spec lists every field; the full example must name each.
    let mut missing = Vec::new();
    fn walk(schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
        // Kubernetes' own types (resources, tolerations) are not ours to list exhaustively.
        if path.ends_with(".resources") {
            return;
        }
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, sub) in props {
            match value.get(k) {
                None => missing.push(format!("{path}.{k}")),
                Some(v) => walk(sub, v, &format!("{path}.{k}"), missing),
            }
        }
    }
    walk(
        &schema()["properties"]["spec"],
        &example("otterdeployment-full.yaml")["spec"],
        "spec",
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "the full example leaves out {missing:?}"
    );
}

fn with_spec(spec: Value) -> Value {
    json!({"apiVersion": "otter.dev/v1alpha1", "kind": "OtterDeployment", "metadata": {"name": "x"}, "spec": spec})
}

fn refused_with(spec: Value, message: &str) {
    match validate(&with_spec(spec.clone())) {
        Ok(()) => panic!("{spec} was accepted, expected {message:?}"),
        Err(errors) => assert!(
            errors.iter().any(|e| e.contains(message)),
            "{spec}: expected {message:?} in {errors:?}"
        ),
    }
}

#[test]
fn cel_rules_refuse_bad_input_with_clear_messages() {
    refused_with(
        json!({"turn": {"relayPortRange": {"min": 60000, "max": 50000}}}),
        "turn.relayPortRange.min must be lower than turn.relayPortRange.max",
    );
    refused_with(
        json!({"turn": {"relayPortRange": {"min": 50000, "max": 50000}}}),
        "must be lower than",
    );
    refused_with(
        json!({"redis": {"mode": "External"}}),
        "redis.external.secretRef is required when redis.mode is External",
    );
    refused_with(
        json!({"turn": {"tls": {"enabled": true}}}),
        "turn.tls.secretName (a kubernetes.io/tls Secret) is required when turn.tls.enabled is true",
    );
    refused_with(
        json!({"turn": {"extraDeniedPeerRanges": ["10.0.0.0/8", "not-a-cidr"]}}),
        "turn.extraDeniedPeerRanges must be CIDRs",
    );
    refused_with(
        json!({"signaling": {"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}}),
        "signaling.autoscaling.minReplicas must not exceed maxReplicas",
    );
    refused_with(
        json!({"redis": {"mode": "Disabled"}}),
        "redis.mode Disabled keeps room state in one process",
    );
    refused_with(
        json!({"turn": {"port": 50000}}),
        "turn.port must lie outside turn.relayPortRange",
    );
    refused_with(
        json!({"turn": {"tls": {"enabled": true, "secretName": "t", "port": 3478}}}),
        "turn.tls.port must differ from turn.port",
    );
    refused_with(
        json!({"turn": {"realm": "a b; rm -rf /"}}),
        "turn.realm must be a domain-like name",
    );
    refused_with(
        json!({"signaling": {"publicUrl": "calls.example.com"}}),
        "signaling.publicUrl must start with",
    );
    refused_with(
        json!({"turn": {"quotas": {"allocationsPerUser": 100, "allocationsTotal": 10}}}),
        "turn.quotas.allocationsPerUser must not exceed turn.quotas.allocationsTotal",
    );
    refused_with(
        json!({"turn": {"quotas": {"sessionBytesPerSecond": 1000}}}),
        "turn.quotas.sessionBytesPerSecond below 16000 (128 kbit/s) cannot carry a video call",
    );
    refused_with(
        json!({"turn": {"quotas": {"totalBytesPerSecond": 100000}}}),
        "turn.quotas.sessionBytesPerSecond must be set (not 0) and not exceed turn.quotas.totalBytesPerSecond",
    );
    refused_with(
        json!({"turn": {"quotas": {"sessionBytesPerSecond": 0, "totalBytesPerSecond": 1000000}}}),
        "turn.quotas.sessionBytesPerSecond must be set (not 0)",
    );
    refused_with(
        json!({"turn": {"quotas": {"allocationsTotal": -1}}}),
        "allocationsTotal",
    );
}

#[test]
fn cel_rules_accept_good_input() {
    for spec in [
        json!({}),
        json!({"redis": {"mode": "Disabled"}, "signaling": {"replicas": 1}}),
        json!({"redis": {"mode": "External", "external": {"secretRef": {"name": "r"}}}}),
        json!({"turn": {"tls": {"enabled": true, "secretName": "tls"}}}),
        json!({"turn": {"extraDeniedPeerRanges": ["10.100.0.0/16", "fd00::/8"]}}),
        json!({"turn": {"enabled": false}}),
        json!({"turn": {"quotas": {"allocationsPerUser": 0, "allocationsTotal": 0,
                                   "sessionBytesPerSecond": 0, "totalBytesPerSecond": 0}}}),
        json!({"turn": {"quotas": {"allocationsPerUser": 1, "allocationsTotal": 1,
                                   "sessionBytesPerSecond": 16000, "totalBytesPerSecond": 16000}}}),
        json!({"turn": {"probe": {"enabled": false}}}),
    ] {
        validate(&with_spec(spec.clone())).unwrap_or_else(|e| panic!("{spec} refused: {e:?}"));
    }
}

#[test]
fn turn_drain_timeout_is_a_bounded_duration() {
    for good in ["15m", "90s", "1h30m", "24h"] {
        let spec = json!({"turn": {"drainTimeout": good}});
        validate(&with_spec(spec.clone())).unwrap_or_else(|e| panic!("{spec} refused: {e:?}"));
    }
    for bad in ["25h", "2d", "500ms", "1440m1s"] {
        refused_with(
            json!({"turn": {"drainTimeout": bad}}),
            "turn.drainTimeout must be whole seconds, minutes or hours up to 24h",
        );
    }
}

/// Every rule has a message and passes kube-cel's static analysis (scope, cost estimate). The
/// estimate is coarse: the real apiserver check of the cost budget is the cluster test's job;
/// lists and strings under rules carry maxItems/maxLength so the budget holds.
#[test]
fn cel_rules_have_messages_and_pass_static_analysis() {
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = compile_schema(node);
            for r in rules {
                let rule = r["rule"].as_str().unwrap_or_default();
                assert!(
                    r["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule {rule} has no message"
                );
                for w in estimate_rule_cost(rule, &compiled)
                    .into_iter()
                    .chain(analyze_rule(rule, &compiled, ScopeContext::CrdValidation))
                    // The analyser does not know comprehension variables (`r` in `self.all(r, …)`).
                    .filter(|w| !(w.kind == WarningKind::WrongScope && w.message.contains("'r'")))
                {
                    out.push(format!("{path}: {rule}: {:?} {}", w.kind, w.message));
                }
            }
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), out);
        }
    }
    let mut warnings = Vec::new();
    walk(&schema(), "", &mut warnings);
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn turn_metrics_ports_are_checked() {
    refused_with(
        json!({"turn": {"metrics": {"enabled": true, "port": 3478}}}),
        "turn.metrics.port and turn.metrics.redisPort must differ from turn.port",
    );
    refused_with(
        json!({"turn": {"metrics": {"enabled": true, "redisPort": 5349}, "tls": {"enabled": true, "secretName": "t"}}}),
        "must differ from turn.port and turn.tls.port",
    );
    refused_with(
        json!({"turn": {"metrics": {"port": 7000, "redisPort": 7000}}}),
        "turn.metrics.port and turn.metrics.redisPort must differ",
    );
    for spec in [
        json!({"turn": {"metrics": {"enabled": true}}}),
        json!({"turn": {"metrics": {"enabled": false, "port": 3478}}}),
    ] {
        validate(&with_spec(spec.clone())).unwrap_or_else(|e| panic!("{spec} refused: {e:?}"));
    }
}
