//! The operator as a process against a real control plane (etcd, kube-apiserver with RBAC,
//! kube-controller-manager, kwok; `tests/cluster`), running with exactly the documented RBAC
//! (kubeconfig impersonation of its ServiceAccount). Each test has its own namespace and its
//! own operator process watching only that namespace.

#[path = "../cluster/harness.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::Cluster;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OTTER_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("otter-operator"))
        .expect("target dir")
}

/// Poll until `cond` holds; panic with `what` after `within`.
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

fn kubectl(c: &Cluster, args: &[&str]) -> String {
    c.kubectl_ok(args)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// kubectl that may fail: (success, stdout + stderr).
fn kubectl_try(c: &Cluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = c.kubectl();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("kubectl");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn get_json(c: &Cluster, ns: &str, what: &str) -> Option<Value> {
    let (ok, text) = kubectl_try(c, &["-n", ns, "get", what, "-o", "json"], None);
    ok.then(|| serde_json::from_str(&text).ok()).flatten()
}

/// The CRD, once per cluster (idempotent server-side apply).
fn apply_crds(c: &Cluster) {
    let crds = repo().join("crds");
    kubectl(
        c,
        &["apply", "--server-side", "-f", crds.to_str().expect("utf8")],
    );
    kubectl(
        c,
        &[
            "wait",
            "--for=condition=Established",
            "crd/otterdeployments.otter.dev",
            "--timeout=30s",
        ],
    );
}

/// The RBAC documented in docs/operator.md (which the chart grants), for a ServiceAccount in
/// `ns`, with cluster-scoped names made unique to the test.
fn apply_documented_rbac(c: &Cluster, ns: &str) {
    let doc = std::fs::read_to_string(repo().join("docs/operator.md")).expect("docs/operator.md");
    let start = doc
        .find("```yaml\napiVersion: v1\nkind: Namespace")
        .expect("the RBAC manifest in docs/operator.md");
    let body = &doc[start + "```yaml\n".len()..];
    let yaml = &body[..body.find("```").expect("end of the RBAC block")];
    let docs: Vec<&str> = yaml
        .split("\n---\n")
        .filter(|d| !d.contains("kind: Namespace"))
        .collect();
    let yaml = docs
        .join("\n---\n")
        .replace("namespace: otter-system", &format!("namespace: {ns}"))
        .replace(
            "{name: otter-operator}",
            &format!("{{name: otter-operator-{ns}}}"),
        )
        .replace(
            "kind: ClusterRole, name: otter-operator}",
            &format!("kind: ClusterRole, name: otter-operator-{ns}}}"),
        );
    let (ok, out) = kubectl_try(c, &["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "applying the documented RBAC failed: {out}");
}

/// An operator process with the ServiceAccount's identity, watching `ns`, Lease in `ns`.
struct Operator {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl Operator {
    fn start(c: &Cluster, ns: &str, identity: &str) -> Operator {
        let kubeconfig = c
            .service_account_kubeconfig(ns, "otter-operator")
            .expect("service account kubeconfig");
        let port = otter_testkit::free_port();
        let log = c.dir().join(format!("operator-{ns}-{identity}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(operator_bin())
            .env("KUBECONFIG", kubeconfig)
            .env("OTTER_OPERATOR_LOG", "info")
            .args([
                "--namespace",
                ns,
                "--lease-namespace",
                ns,
                "--identity",
                identity,
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--lease-duration", "4s", "--lease-renew-interval", "1s"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start otter-operator");
        Operator { child, log, port }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reconciles counted by the operator's own metrics.
    fn reconciles(&self) -> u64 {
        let text = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{}/metrics", self.port)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("otter_operator_reconciliations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    fn assert_no_forbidden(&self) {
        let log = self.log_text();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "the operator hit an RBAC refusal:\n{log}"
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn condition(cr: &Value, kind: &str) -> Option<String> {
    cr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn ready(c: &Cluster, ns: &str, name: &str) -> bool {
    get_json(c, ns, &format!("otterdeployment/{name}")).is_some_and(|cr| {
        condition(&cr, "Ready").as_deref() == Some("True")
            && cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    })
}

/// A test's namespace with RBAC, the CRD and a running operator.
fn setup(prefix: &str) -> (&'static Cluster, String, Operator) {
    let c = cluster::shared();
    apply_crds(c);
    let ns = c.namespace(prefix);
    apply_documented_rbac(c, &ns);
    let op = Operator::start(c, &ns, "op-a");
    (c, ns, op)
}

/// The minimal example exactly as shipped (TURN on the shared `otter.dev/turn=true` node).
fn create_minimal(c: &Cluster, ns: &str) {
    let example = repo().join("examples/otterdeployment-minimal.yaml");
    kubectl(
        c,
        &["-n", ns, "apply", "-f", example.to_str().expect("utf8")],
    );
}

/// The minimal example with its TURN DaemonSet on a node of its own: tests run side by side on
/// one cluster, and two hostNetwork coturns cannot share a node's ports.
fn create_pooled(c: &Cluster, ns: &str) {
    c.add_node(
        &format!("turn-{ns}"),
        Some("10.9.1.1"),
        Some("203.0.113.50"),
        &[("otter.dev/pool", ns)],
    )
    .expect("add the test's TURN node");
    let cr = format!(
        "apiVersion: otter.dev/v1alpha1\nkind: OtterDeployment\nmetadata: {{name: otter, namespace: {ns}}}\nspec:\n  turn: {{nodeSelector: {{otter.dev/pool: {ns}}}}}\n"
    );
    let (ok, out) = kubectl_try(c, &["apply", "-f", "-"], Some(&cr));
    assert!(ok, "{out}");
}

const CHILDREN: [&str; 9] = [
    "secret/otter-turn-secret",
    "secret/otter-redis-url",
    "configmap/otter-signaling",
    "configmap/otter-turn",
    "service/otter-signaling",
    "deployment/otter-signaling",
    "daemonset/otter-turn",
    "statefulset/otter-redis",
    "networkpolicy/otter-redis",
];

fn resource_versions(c: &Cluster, ns: &str) -> Vec<(String, String)> {
    CHILDREN
        .iter()
        .map(|k| {
            let v = get_json(c, ns, k).unwrap_or_else(|| panic!("{k} exists"));
            (
                k.to_string(),
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn invalid_otterdeployments_are_refused_with_the_crd_messages() {
    let c = cluster::shared();
    apply_crds(c);
    let ns = c.namespace("invalid");
    let cases = [
        (
            "relayPortRange: {min: 60000, max: 50000}",
            "turn: {relayPortRange: {min: 60000, max: 50000}}",
            "turn.relayPortRange.min must be lower than turn.relayPortRange.max",
        ),
        (
            "external redis without a secret",
            "redis: {mode: External}",
            "redis.external.secretRef is required when redis.mode is External",
        ),
        (
            "TLS without a secret",
            "turn: {tls: {enabled: true}}",
            "turn.tls.secretName (a kubernetes.io/tls Secret) is required when turn.tls.enabled is true",
        ),
        (
            "min above max replicas",
            "signaling: {autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2}}",
            "signaling.autoscaling.minReplicas must not exceed maxReplicas",
        ),
        (
            "bad public URL",
            "signaling: {publicUrl: \"ftp://calls.example\"}",
            "signaling.publicUrl must start with http://, https://, ws:// or wss://",
        ),
        (
            "bad denied range",
            "turn: {extraDeniedPeerRanges: [\"not-a-cidr\"]}",
            "turn.extraDeniedPeerRanges must be CIDRs such as 10.100.0.0/16 or fd00::/8",
        ),
        (
            "disabled redis with two replicas",
            "redis: {mode: Disabled}\n  signaling: {replicas: 2}",
            "redis.mode Disabled keeps room state in one process",
        ),
    ];
    for (what, spec, message) in cases {
        let cr = format!(
            "apiVersion: otter.dev/v1alpha1\nkind: OtterDeployment\nmetadata: {{name: bad, namespace: {ns}}}\nspec:\n  {spec}\n"
        );
        let (ok, out) = kubectl_try(c, &["apply", "-f", "-"], Some(&cr));
        assert!(!ok, "{what}: the API server accepted it");
        assert!(
            out.contains(message),
            "{what}: expected {message:?} in\n{out}"
        );
    }
    assert!(
        get_json(c, &ns, "otterdeployment/bad").is_none(),
        "nothing was stored"
    );
}

#[test]
fn minimal_example_becomes_ready_with_owned_children() {
    let (c, ns, op) = setup("minimal");
    create_minimal(c, &ns);
    let (ok, out) = kubectl_try(
        c,
        &[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            "otterdeployment/otter",
            "--timeout=90s",
        ],
        None,
    );
    assert!(ok, "kubectl wait: {out}\noperator log:\n{}", op.log_text());
    assert!(ready(c, &ns, "otter"));
    let cr = get_json(c, &ns, "otterdeployment/otter").expect("cr");
    let uid = cr["metadata"]["uid"].as_str().expect("uid").to_owned();
    for kind in CHILDREN {
        let child = get_json(c, &ns, kind).unwrap_or_else(|| panic!("{kind} exists"));
        let owners = child["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o["uid"] == uid.as_str() && o["controller"] == true),
            "{kind} is owned by the OtterDeployment: {owners:?}"
        );
    }
    // kwok ran the pods: signaling replicas are Ready and counted in status.
    let dep = get_json(c, &ns, "deployment/otter-signaling").expect("deployment");
    assert_eq!(dep["status"]["readyReplicas"], 2, "{}", dep["status"]);
    assert!(
        cr["status"]["signalingUrl"]
            .as_str()
            .is_some_and(|u| u.contains("otter-signaling"))
    );
    op.assert_no_forbidden();
}

#[test]
fn spec_change_rolls_signaling_and_status_goes_progressing_then_ready() {
    let (c, ns, op) = setup("rollout");
    create_pooled(c, &ns);
    wait_for("Ready", Duration::from_secs(90), || ready(c, &ns, "otter"));
    let before = get_json(c, &ns, "deployment/otter-signaling").expect("deployment");
    let checksum = |d: &Value| d["spec"]["template"]["metadata"]["annotations"].clone();
    kubectl(
        c,
        &[
            "-n",
            &ns,
            "patch",
            "otterdeployment/otter",
            "--type=merge",
            "-p",
            r#"{"spec":{"signaling":{"maxPeersPerRoom":4,"auth":{"enabled":true}}}}"#,
        ],
    );
    let mut saw_progressing = false;
    wait_for(
        "Progressing then Ready on the new generation",
        Duration::from_secs(90),
        || {
            let cr = get_json(c, &ns, "otterdeployment/otter").expect("cr");
            if condition(&cr, "Progressing").as_deref() == Some("True")
                || condition(&cr, "Ready").as_deref() == Some("False")
            {
                saw_progressing = true;
            }
            saw_progressing && ready(c, &ns, "otter")
        },
    );
    let after = get_json(c, &ns, "deployment/otter-signaling").expect("deployment");
    assert_ne!(
        checksum(&before),
        checksum(&after),
        "the pod template's checksum changed"
    );
    let env = after["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e["name"] == "OTTER_MAX_PEERS_PER_ROOM" && e["value"] == "4")
    );
    op.assert_no_forbidden();
}

#[test]
fn deleted_and_edited_children_are_restored_and_rest_writes_nothing() {
    let (c, ns, op) = setup("drift");
    create_pooled(c, &ns);
    wait_for("Ready", Duration::from_secs(90), || ready(c, &ns, "otter"));
    kubectl(c, &["-n", &ns, "delete", "configmap/otter-signaling"]);
    kubectl(
        c,
        &[
            "-n",
            &ns,
            "scale",
            "deployment/otter-signaling",
            "--replicas=5",
        ],
    );
    wait_for(
        "the ConfigMap to come back and replicas to return to 2",
        Duration::from_secs(60),
        || {
            get_json(c, &ns, "configmap/otter-signaling").is_some()
                && get_json(c, &ns, "deployment/otter-signaling")
                    .is_some_and(|d| d["spec"]["replicas"] == 2)
        },
    );
    wait_for("Ready again", Duration::from_secs(60), || {
        ready(c, &ns, "otter")
    });

    // At rest: a minute without a single write to any child or to the status.
    std::thread::sleep(Duration::from_secs(5));
    let before = resource_versions(c, &ns);
    let cr_before =
        get_json(c, &ns, "otterdeployment/otter").expect("cr")["metadata"]["resourceVersion"]
            .clone();
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(
        resource_versions(c, &ns),
        before,
        "children were written at rest"
    );
    let cr_after =
        get_json(c, &ns, "otterdeployment/otter").expect("cr")["metadata"]["resourceVersion"]
            .clone();
    assert_eq!(
        cr_before, cr_after,
        "the OtterDeployment (status) was written at rest"
    );
    op.assert_no_forbidden();
}

#[test]
fn turn_uris_follow_nodes() {
    let (c, ns, op) = setup("nodes");
    create_pooled(c, &ns);
    wait_for("Ready", Duration::from_secs(90), || ready(c, &ns, "otter"));
    let uris = || -> (String, Vec<String>) {
        let cm = get_json(c, &ns, "configmap/otter-signaling").expect("configmap");
        let ice = cm["data"]["ice-servers.json"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let cr = get_json(c, &ns, "otterdeployment/otter").expect("cr");
        let status = cr["status"]["turnUris"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (ice, status)
    };
    let node = format!("extra-{ns}");
    c.add_node(
        &node,
        Some("10.9.0.9"),
        Some("203.0.113.99"),
        &[("otter.dev/pool", ns.as_str())],
    )
    .expect("add node");
    wait_for(
        "the new node's address in config and status",
        Duration::from_secs(30),
        || {
            let (ice, status) = uris();
            ice.contains("turn:203.0.113.99:3478?transport=udp")
                && status.iter().any(|u| u.contains("203.0.113.99"))
        },
    );
    c.delete_node(&node).expect("delete node");
    wait_for(
        "the removed node's address to go",
        Duration::from_secs(30),
        || {
            let (ice, status) = uris();
            !ice.contains("203.0.113.99") && !status.iter().any(|u| u.contains("203.0.113.99"))
        },
    );
    op.assert_no_forbidden();
}

#[test]
fn deleting_the_otterdeployment_collects_children_but_not_user_secrets() {
    let (c, ns, op) = setup("gc");
    kubectl(
        c,
        &[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "my-turn",
            "--from-literal=secret=users-own",
        ],
    );
    c.add_node(
        &format!("turn-{ns}"),
        Some("10.9.1.2"),
        Some("203.0.113.51"),
        &[("otter.dev/pool", ns.as_str())],
    )
    .expect("add the test's TURN node");
    let cr = format!(
        "apiVersion: otter.dev/v1alpha1\nkind: OtterDeployment\nmetadata: {{name: otter, namespace: {ns}}}\nspec:\n  turn: {{nodeSelector: {{otter.dev/pool: {ns}}}, secretRef: {{name: my-turn, key: secret}}}}\n"
    );
    let (ok, out) = kubectl_try(c, &["apply", "-f", "-"], Some(&cr));
    assert!(ok, "{out}");
    wait_for("Ready", Duration::from_secs(90), || ready(c, &ns, "otter"));
    let user_secret = get_json(c, &ns, "secret/my-turn").expect("user secret");
    assert!(
        user_secret["metadata"]["ownerReferences"].is_null(),
        "the user's Secret is not owned"
    );
    kubectl(
        c,
        &["-n", &ns, "delete", "otterdeployment/otter", "--wait=true"],
    );
    wait_for(
        "garbage collection of every child",
        Duration::from_secs(60),
        || {
            [
                "configmap/otter-signaling",
                "service/otter-signaling",
                "deployment/otter-signaling",
                "daemonset/otter-turn",
                "statefulset/otter-redis",
                "secret/otter-redis-url",
            ]
            .iter()
            .all(|k| get_json(c, &ns, k).is_none())
        },
    );
    let survived = get_json(c, &ns, "secret/my-turn").expect("the user's Secret survives");
    assert_eq!(survived["data"], user_secret["data"], "and is unchanged");
    op.assert_no_forbidden();
}

#[test]
fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let (c, ns, mut first) = setup("lease");
    wait_for(
        "the first operator to hold the Lease",
        Duration::from_secs(30),
        || {
            get_json(c, &ns, "lease/otter-operator")
                .is_some_and(|l| l["spec"]["holderIdentity"] == "op-a")
        },
    );
    let mut second = Operator::start(c, &ns, "op-b");
    create_pooled(c, &ns);
    wait_for("Ready", Duration::from_secs(90), || ready(c, &ns, "otter"));
    wait_for(
        "the leader's reconciles to be counted",
        Duration::from_secs(30),
        || first.reconciles() > 0,
    );
    assert_eq!(second.reconciles(), 0, "the standby reconciled nothing");
    first.kill();
    wait_for(
        "the standby to take the Lease",
        Duration::from_secs(30),
        || {
            get_json(c, &ns, "lease/otter-operator")
                .is_some_and(|l| l["spec"]["holderIdentity"] == "op-b")
        },
    );
    kubectl(c, &["-n", &ns, "delete", "service/otter-signaling"]);
    wait_for(
        "the new leader to restore the Service",
        Duration::from_secs(60),
        || get_json(c, &ns, "service/otter-signaling").is_some(),
    );
    // The Service is applied mid-reconcile; the counter moves when the reconcile completes.
    wait_for(
        "the new leader's reconciles to be counted",
        Duration::from_secs(30),
        || second.reconciles() > 0,
    );
    second.assert_no_forbidden();
    second.kill();
}

#[test]
fn the_operator_survives_an_api_server_restart() {
    // A private control plane: restarting the shared one would disturb the other tests.
    let c = Cluster::start().expect("private cluster");
    apply_crds(&c);
    let ns = c.namespace("restart");
    apply_documented_rbac(&c, &ns);
    let op = Operator::start(&c, &ns, "op-a");
    create_pooled(&c, &ns);
    wait_for("Ready", Duration::from_secs(90), || ready(&c, &ns, "otter"));
    c.restart(&["kube-apiserver"], Duration::from_secs(10))
        .expect("restart");
    kubectl(&c, &["-n", &ns, "delete", "configmap/otter-signaling"]);
    kubectl(
        &c,
        &[
            "-n",
            &ns,
            "patch",
            "otterdeployment/otter",
            "--type=merge",
            "-p",
            r#"{"spec":{"signaling":{"maxPeersPerRoom":3}}}"#,
        ],
    );
    wait_for(
        "the operator to catch up without a restart of its own",
        Duration::from_secs(90),
        || get_json(&c, &ns, "configmap/otter-signaling").is_some() && ready(&c, &ns, "otter"),
    );
    let mut op = op;
    assert!(
        op.child.try_wait().expect("wait").is_none(),
        "the operator process is still the same one"
    );
    op.assert_no_forbidden();
}
