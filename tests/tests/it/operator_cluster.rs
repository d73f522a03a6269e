//! The operator as a process against a real control plane (etcd, kube-apiserver with RBAC,
//! kube-controller-manager, kwok; `tests/cluster`), running with exactly the documented RBAC
//! (kubeconfig impersonation of its ServiceAccount). Each test has its own namespace and its
//! own operator process watching only that namespace. The tests read and write with the typed
//! kube client and wait on conditions (`await_condition`), never on `kubectl` output.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Resource, ResourceExt};
use otter_operator::crd::OtterDeployment;
use otter_testkit::cluster::{self, Cluster};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MANAGER: &str = "otter-cluster-test";

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

/// Wait until `cond` holds for the object `name` (watching it); panic with `what` after `within`.
async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    within: Duration,
    cond: impl Condition<K>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let waited = tokio::time::timeout(within, await_condition(api.clone(), name, cond)).await;
    match waited {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching for {what}: {e}"),
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

fn ns_api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), ns)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The CRD from `crds/`, once per cluster (idempotent server-side apply), waited on until
/// Established through a watch of the CRD (a `kubectl wait` right after the create could read a
/// CRD without conditions yet and fail).
async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo().join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("crds/") {
        let path = entry.expect("crds/ entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read CRD");
        let crd: CustomResourceDefinition = serde_norway::from_str(&text).expect("CRD YAML");
        let name = crd.name_any();
        api.patch(&name, &apply_params(), &Patch::Apply(&crd))
            .await
            .expect("apply the CRD");
        names.push(name);
    }
    assert!(!names.is_empty(), "no CRD in {}", dir.display());
    for name in names {
        let what = format!("CRD {name} to be Established");
        wait_until(
            &api,
            &name,
            &what,
            Duration::from_secs(30),
            conditions::is_crd_established(),
        )
        .await;
    }
}

/// The YAML documents of the RBAC manifest in docs/operator.md, for a ServiceAccount in `ns`,
/// with cluster-scoped names made unique to the test.
fn documented_rbac(ns: &str) -> Vec<Value> {
    let doc = std::fs::read_to_string(repo().join("docs/operator.md")).expect("docs/operator.md");
    let start = doc
        .find("```yaml\napiVersion: v1\nkind: Namespace")
        .expect("the RBAC manifest in docs/operator.md");
    let body = &doc[start + "```yaml\n".len()..];
    let yaml = body[..body.find("```").expect("end of the RBAC block")]
        .replace("namespace: otter-system", &format!("namespace: {ns}"))
        .replace(
            "{name: otter-operator}",
            &format!("{{name: otter-operator-{ns}}}"),
        )
        .replace(
            "kind: ClusterRole, name: otter-operator}",
            &format!("kind: ClusterRole, name: otter-operator-{ns}}}"),
        );
    serde_norway::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("RBAC YAML"))
        .filter(|d: &Value| d["kind"] != "Namespace")
        .collect()
}

/// Server-side apply of one manifest of a known kind.
async fn apply_manifest(client: &Client, doc: &Value) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    async fn typed<K>(api: Api<K>, doc: &Value)
    where
        K: Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(doc.clone()).expect("manifest of its kind");
        let name = obj.name_any();
        api.patch(&name, &apply_params(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&Default::default())));
    }
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
    match doc["kind"].as_str().unwrap_or_default() {
        "ServiceAccount" => typed::<ServiceAccount>(ns_api(client, ns), doc).await,
        "Role" => typed::<Role>(ns_api(client, ns), doc).await,
        "RoleBinding" => typed::<RoleBinding>(ns_api(client, ns), doc).await,
        "ClusterRole" => typed::<ClusterRole>(Api::all(client.clone()), doc).await,
        "ClusterRoleBinding" => typed::<ClusterRoleBinding>(Api::all(client.clone()), doc).await,
        other => panic!("docs/operator.md's RBAC has a {other} this test does not know"),
    }
}

/// Apply docs/operator.md's RBAC for a ServiceAccount in `ns`, then wait until the API server's
/// authorizer grants it: its RBAC cache follows the objects a moment later (longer on a busy
/// machine), and an operator started in between is refused and retries, which
/// `assert_no_forbidden` would count.
async fn install_rbac(client: &Client, ns: &str) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    for doc in documented_rbac(ns) {
        apply_manifest(client, &doc).await;
    }
    let user = format!("system:serviceaccount:{ns}:otter-operator");
    // One rule of each binding: the leader Role's and the ClusterRole's.
    let checks = [
        (
            "coordination.k8s.io",
            "leases",
            "get",
            Some("otter-operator"),
        ),
        ("otter.dev", "otterdeployments", "watch", None),
    ];
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    for (group, resource, verb, name) in checks {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(ns.into()),
                    name: name.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("{user} to be allowed to {verb} {resource} in {ns} (RBAC applied)");
        otter_testkit::wait_until(&what, Duration::from_secs(30), || async {
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .unwrap_or_else(|e| panic!("SubjectAccessReview of {verb} {resource}: {e}"));
            answer.status.is_some_and(|s| s.allowed)
        })
        .await;
    }
}

/// An operator process with the ServiceAccount's identity, watching `ns`, Lease in `ns`.
struct Operator {
    child: Child,
    log: PathBuf,
    port: u16,
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
            .env(
                "OTTER_OPERATOR_LOG",
                "info,otter_operator::reconcile::apply=debug",
            )
            .args(["--namespace", ns, "--lease-namespace", ns])
            .args(["--identity", identity])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--lease-duration", "4s", "--lease-renew-interval", "1s"])
            // Logs go to stdout (JSON lines); stderr has what comes before logging starts.
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start otter-operator");
        Operator { child, log, port }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's /metrics (empty while it does not answer).
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Reconciles counted by the operator's own metrics.
    async fn reconciles(&self) -> u64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("otter_operator_reconciliations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Children left as they were (not applied), by kind, from the operator's own metrics.
    async fn skipped(&self) -> Vec<(String, u64)> {
        self.metrics()
            .await
            .lines()
            .filter_map(|l| l.strip_prefix("otter_operator_applies_skipped_total{kind=\""))
            .filter_map(|l| {
                let (kind, n) = l.split_once("\"} ")?;
                Some((kind.to_string(), n.parse::<f64>().ok()? as u64))
            })
            .collect()
    }

    /// Wait until the operator has counted more than `before` reconciles.
    async fn await_reconciles_above(&self, before: u64, within: Duration, what: &str) {
        let wait = async {
            while self.reconciles().await <= before {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(within, wait).await.is_err() {
            panic!(
                "timed out waiting for {what}\noperator log:\n{}",
                self.log_text()
            );
        }
    }

    /// Return once a reconcile that started after this call has finished. Twice: nudge the
    /// resource (an annotation: a watch event, so a reconcile) and wait for the count to move.
    /// The first count may be a reconcile already running (started before this call); the
    /// second nudge's wait cannot end before the first nudge's reconcile has finished.
    async fn quiesce(&self, api: &Api<OtterDeployment>, name: &str) {
        for round in 0..2 {
            let before = self.reconciles().await;
            let nudge =
                json!({"metadata": {"annotations": {"otter.dev/test-nudge": round.to_string()}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&nudge))
                .await
                .expect("annotate the OtterDeployment");
            let what = format!("a reconcile after nudging {name}");
            self.await_reconciles_above(before, Duration::from_secs(60), &what)
                .await;
        }
    }

    /// Wait until the operator has counted a reconcile.
    async fn await_reconciles(&self, what: &str) {
        self.await_reconciles_above(0, Duration::from_secs(30), what)
            .await;
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

fn condition(cr: &OtterDeployment, kind: &str) -> Option<String> {
    let status = cr.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// Ready=True for the generation the resource is at.
fn is_ready() -> impl Condition<OtterDeployment> {
    |cr: Option<&OtterDeployment>| {
        cr.is_some_and(|cr| {
            condition(cr, "Ready").as_deref() == Some("True")
                && cr.status.as_ref().and_then(|s| s.observed_generation) == cr.metadata.generation
        })
    }
}

fn exists<K>() -> impl Condition<K> {
    |o: Option<&K>| o.is_some()
}

fn gone<K>() -> impl Condition<K> {
    |o: Option<&K>| o.is_none()
}

/// Wait until garbage collection has removed the named child of kind `K`.
async fn collected<K>(client: &Client, ns: &str, name: &str, within: Duration)
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    wait_until(
        &ns_api::<K>(client, ns),
        name,
        "garbage collection",
        within,
        gone(),
    )
    .await;
}

/// A test's namespace with RBAC, the CRD, a running operator, and an admin client.
async fn setup(prefix: &str) -> (&'static Cluster, Client, String, Operator) {
    let c = cluster::shared();
    let client = c.client().await.expect("admin client");
    apply_crds(&client).await;
    let ns = c.namespace(prefix);
    install_rbac(&client, &ns).await;
    let op = Operator::start(c, &ns, "op-a");
    (c, client, ns, op)
}

async fn await_ready(client: &Client, ns: &str, op: &Operator) {
    let api: Api<OtterDeployment> = ns_api(client, ns);
    let waited = tokio::time::timeout(
        Duration::from_secs(90),
        await_condition(api, "otter", is_ready()),
    )
    .await;
    if !matches!(waited, Ok(Ok(_))) {
        panic!(
            "OtterDeployment otter not Ready: {waited:?}\n{}\noperator log:\n{}",
            namespace_state(client, ns).await,
            op.log_text()
        );
    }
}

/// What a failed wait needs to say why: the namespace's OtterDeployments and workloads (their
/// generation and status), pods, the nodes' readiness and the events, as the API server has
/// them now.
async fn namespace_state(client: &Client, ns: &str) -> String {
    let mut out = format!("namespace {ns} now:\n");
    out += &statuses::<OtterDeployment>(client, ns).await;
    out += &statuses::<Deployment>(client, ns).await;
    out += &statuses::<ReplicaSet>(client, ns).await;
    out += &statuses::<StatefulSet>(client, ns).await;
    out += &statuses::<DaemonSet>(client, ns).await;
    out += &statuses::<Pod>(client, ns).await;
    // A node the controller-manager calls NotReady has its pods marked not ready.
    match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(nodes) => {
            for n in nodes.items {
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| format!("{} ({})", c.status, c.reason.unwrap_or_default()));
                out += &format!(
                    "Node {} Ready={}\n",
                    n.metadata.name.unwrap_or_default(),
                    ready.unwrap_or_default()
                );
            }
        }
        Err(e) => out += &format!("nodes: {e}\n"),
    }
    match ns_api::<Event>(client, ns)
        .list(&ListParams::default())
        .await
    {
        Ok(events) => {
            for e in events.items {
                let o = &e.involved_object;
                out += &format!(
                    "event {} {} {}/{} x{}: {}\n",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    o.kind.as_deref().unwrap_or_default(),
                    o.name.as_deref().unwrap_or_default(),
                    e.count.unwrap_or(1),
                    e.message.unwrap_or_default()
                );
            }
        }
        Err(e) => out += &format!("events: {e}\n"),
    }
    out
}

/// One line per object of kind `K` in `ns`: its name, generation, node (pods) and status.
async fn statuses<K>(client: &Client, ns: &str) -> String
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + serde::Serialize,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    match ns_api::<K>(client, ns).list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .map(|o| {
                let v = serde_json::to_value(o).unwrap_or_default();
                format!(
                    "{kind} {} generation={} node={} status={}\n",
                    o.name_any(),
                    v["metadata"]["generation"],
                    v["spec"]["nodeName"],
                    v["status"]
                )
            })
            .collect(),
        Err(e) => format!("{kind}: {e}\n"),
    }
}

/// Apply an OtterDeployment given as JSON (`metadata.name` and `spec`) in `ns`.
async fn apply_cr(client: &Client, ns: &str, cr: Value) -> Result<OtterDeployment, kube::Error> {
    let mut cr = cr;
    cr["apiVersion"] = json!("otter.dev/v1alpha1");
    cr["kind"] = json!("OtterDeployment");
    cr["metadata"]["namespace"] = json!(ns);
    let name = cr["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ns_api::<OtterDeployment>(client, ns)
        .patch(&name, &apply_params(), &Patch::Apply(&cr))
        .await
}

/// The minimal example exactly as shipped (TURN on the shared `otter.dev/turn=true` node).
async fn create_minimal(client: &Client, ns: &str) {
    let path = repo().join("examples/otterdeployment-minimal.yaml");
    let text = std::fs::read_to_string(&path).expect("the minimal example");
    let example: Value = serde_norway::from_str(&text).expect("example YAML");
    apply_cr(client, ns, example)
        .await
        .expect("apply the minimal example");
}

/// The minimal example with its TURN DaemonSet on a node of its own: tests run side by side on
/// one cluster, and two hostNetwork coturns cannot share a node's ports.
async fn create_pooled(c: &Cluster, client: &Client, ns: &str) {
    c.add_node(
        &format!("turn-{ns}"),
        Some("10.9.1.1"),
        Some("203.0.113.50"),
        &[("otter.dev/pool", ns)],
    )
    .expect("add the test's TURN node");
    let cr = json!({"metadata": {"name": "otter"},
                    "spec": {"turn": {"nodeSelector": {"otter.dev/pool": ns}}}});
    apply_cr(client, ns, cr)
        .await
        .expect("apply the OtterDeployment");
}

/// Metadata of every child of the `otter` OtterDeployment.
async fn children(client: &Client, ns: &str) -> Vec<(String, ObjectMeta)> {
    async fn meta<K>(client: &Client, ns: &str, name: &str) -> (String, ObjectMeta)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let what = format!("{} {name}", K::kind(&()));
        let m = ns_api::<K>(client, ns)
            .get_metadata(name)
            .await
            .unwrap_or_else(|e| panic!("{what} exists: {e}"));
        (what, m.metadata)
    }
    vec![
        meta::<Secret>(client, ns, "otter-turn-secret").await,
        meta::<Secret>(client, ns, "otter-turn-keys").await,
        meta::<Secret>(client, ns, "otter-redis-url").await,
        meta::<ConfigMap>(client, ns, "otter-signaling").await,
        meta::<ConfigMap>(client, ns, "otter-turn").await,
        meta::<Service>(client, ns, "otter-signaling").await,
        meta::<Deployment>(client, ns, "otter-signaling").await,
        meta::<DaemonSet>(client, ns, "otter-turn").await,
        meta::<StatefulSet>(client, ns, "otter-redis").await,
        meta::<NetworkPolicy>(client, ns, "otter-redis").await,
    ]
}

async fn resource_versions(client: &Client, ns: &str) -> Vec<(String, Option<String>)> {
    children(client, ns)
        .await
        .into_iter()
        .map(|(what, m)| (what, m.resource_version))
        .collect()
}

#[tokio::test]
async fn invalid_otterdeployments_are_refused_with_the_crd_messages() {
    let c = cluster::shared();
    let client = c.client().await.expect("admin client");
    apply_crds(&client).await;
    let ns = c.namespace("invalid");
    let cases = [
        (
            "relayPortRange: {min: 60000, max: 50000}",
            json!({"turn": {"relayPortRange": {"min": 60000, "max": 50000}}}),
            "turn.relayPortRange.min must be lower than turn.relayPortRange.max",
        ),
        (
            "external redis without a secret",
            json!({"redis": {"mode": "External"}}),
            "redis.external.secretRef is required when redis.mode is External",
        ),
        (
            "TLS without a secret",
            json!({"turn": {"tls": {"enabled": true}}}),
            "turn.tls.secretName (a kubernetes.io/tls Secret) is required when turn.tls.enabled is true",
        ),
        (
            "min above max replicas",
            json!({"signaling": {"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}}),
            "signaling.autoscaling.minReplicas must not exceed maxReplicas",
        ),
        (
            "bad public URL",
            json!({"signaling": {"publicUrl": "ftp://calls.example"}}),
            "signaling.publicUrl must start with http://, https://, ws:// or wss://",
        ),
        (
            "bad denied range",
            json!({"turn": {"extraDeniedPeerRanges": ["not-a-cidr"]}}),
            "turn.extraDeniedPeerRanges must be CIDRs such as 10.100.0.0/16 or fd00::/8",
        ),
        (
            "disabled redis with two replicas",
            json!({"redis": {"mode": "Disabled"}, "signaling": {"replicas": 2}}),
            "redis.mode Disabled keeps room state in one process",
        ),
        (
            "per-user TURN quota above the total",
            json!({"turn": {"quotas": {"allocationsPerUser": 100, "allocationsTotal": 10}}}),
            "turn.quotas.allocationsPerUser must not exceed turn.quotas.allocationsTotal (0 means no limit)",
        ),
        (
            "a session bandwidth cap too low for video",
            json!({"turn": {"quotas": {"sessionBytesPerSecond": 1000}}}),
            "turn.quotas.sessionBytesPerSecond below 16000 (128 kbit/s) cannot carry a video call",
        ),
        (
            "a total bandwidth cap with uncapped sessions",
            json!({"turn": {"quotas": {"sessionBytesPerSecond": 0, "totalBytesPerSecond": 1000000}}}),
            "turn.quotas.sessionBytesPerSecond must be set (not 0) and not exceed turn.quotas.totalBytesPerSecond",
        ),
    ];
    for (what, spec, message) in cases {
        let cr = json!({"metadata": {"name": "bad"}, "spec": spec});
        match apply_cr(&client, &ns, cr).await {
            Ok(_) => panic!("{what}: the API server accepted it"),
            Err(kube::Error::Api(status)) => assert!(
                status.message.contains(message),
                "{what}: expected {message:?} in {:?}",
                status.message
            ),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    let stored = ns_api::<OtterDeployment>(&client, &ns).get_opt("bad").await;
    assert!(matches!(stored, Ok(None)), "nothing was stored: {stored:?}");
}

#[tokio::test]
async fn minimal_example_becomes_ready_with_owned_children() {
    let (_c, client, ns, op) = setup("minimal").await;
    create_minimal(&client, &ns).await;
    await_ready(&client, &ns, &op).await;
    let cr = ns_api::<OtterDeployment>(&client, &ns)
        .get("otter")
        .await
        .expect("the OtterDeployment");
    let uid = cr.uid().expect("uid");
    for (what, meta) in children(&client, &ns).await {
        let owners = meta.owner_references.unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{what} is owned by the OtterDeployment: {owners:?}"
        );
    }
    // kwok ran the pods: signaling replicas are Ready and counted in status.
    let dep = ns_api::<Deployment>(&client, &ns)
        .get("otter-signaling")
        .await
        .expect("deployment");
    let ready = dep.status.as_ref().and_then(|s| s.ready_replicas);
    assert_eq!(ready, Some(2), "{:?}", dep.status);
    let status = cr.status.expect("status");
    assert_eq!(status.signaling.ready, 2);
    assert!(
        status
            .signaling_url
            .is_some_and(|u| u.contains("otter-signaling"))
    );
    op.assert_no_forbidden();
}

#[tokio::test]
async fn spec_change_rolls_signaling_and_status_goes_progressing_then_ready() {
    let (c, client, ns, op) = setup("rollout").await;
    create_pooled(c, &client, &ns).await;
    await_ready(&client, &ns, &op).await;
    let deployments: Api<Deployment> = ns_api(&client, &ns);
    let checksum = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
    };
    let before = deployments
        .get("otter-signaling")
        .await
        .expect("deployment");
    let crs: Api<OtterDeployment> = ns_api(&client, &ns);
    let patch = json!({"spec": {"signaling": {"maxPeersPerRoom": 4, "auth": {"enabled": true}}}});
    let changed = crs
        .patch("otter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the spec");
    let generation = changed.metadata.generation;
    // The status of the new generation is first not Ready (rolling out), then Ready.
    let rolling = move |cr: Option<&OtterDeployment>| {
        cr.is_some_and(|cr| {
            let seen = cr.status.as_ref().and_then(|s| s.observed_generation);
            seen == generation && condition(cr, "Progressing").as_deref() == Some("True")
        })
    };
    wait_until(
        &crs,
        "otter",
        "Progressing on the new generation",
        Duration::from_secs(60),
        rolling,
    )
    .await;
    await_ready(&client, &ns, &op).await;
    let after = deployments
        .get("otter-signaling")
        .await
        .expect("deployment");
    assert_ne!(
        checksum(&before),
        checksum(&after),
        "the pod template's checksum changed"
    );
    let env = after
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "OTTER_MAX_PEERS_PER_ROOM" && e.value.as_deref() == Some("4"))
    );
    op.assert_no_forbidden();
}

#[tokio::test]
async fn deleted_and_edited_children_are_restored_and_rest_writes_nothing() {
    let (c, client, ns, op) = setup("drift").await;
    create_pooled(c, &client, &ns).await;
    await_ready(&client, &ns, &op).await;
    let config_maps: Api<ConfigMap> = ns_api(&client, &ns);
    let deployments: Api<Deployment> = ns_api(&client, &ns);
    config_maps
        .delete("otter-signaling", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    let scale = json!({"spec": {"replicas": 5}});
    deployments
        .patch(
            "otter-signaling",
            &PatchParams::default(),
            &Patch::Merge(&scale),
        )
        .await
        .expect("scale the Deployment");
    let within = Duration::from_secs(60);
    wait_until(
        &config_maps,
        "otter-signaling",
        "the ConfigMap to come back",
        within,
        exists(),
    )
    .await;
    let two = |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(2)
    };
    wait_until(
        &deployments,
        "otter-signaling",
        "replicas back to 2",
        within,
        two,
    )
    .await;
    // Ready is not enough to start the rest window: it may still be the Ready from before the
    // scale to 5 (which does not change the CR's generation), with a reconcile that saw 5 pods
    // still to write. So: the Deployment back at 2 pods, then a reconcile that started after
    // that (see Operator::quiesce).
    let settled = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.replicas == Some(2) && s.ready_replicas == Some(2))
    };
    wait_until(&deployments, "otter-signaling", "2 pods", within, settled).await;
    let crs: Api<OtterDeployment> = ns_api(&client, &ns);
    op.quiesce(&crs, "otter").await;
    await_ready(&client, &ns, &op).await;
    assert_each_kind_left_unapplied(&op, &client, &ns).await;
    assert_nothing_written_at_rest(&client, &ns, &crs).await;
    op.assert_no_forbidden();
}

/// The reconciles of the nudges found every child as the real API server keeps it (its
/// defaults, its normal forms) and sent no apply: each kind was left alone at least once.
async fn assert_each_kind_left_unapplied(op: &Operator, client: &Client, ns: &str) {
    let skipped = op.skipped().await;
    for (what, _) in children(client, ns).await {
        let kind = what.split(' ').next().unwrap_or_default();
        let why: Vec<String> = op
            .log_text()
            .lines()
            .filter(|l| l.contains("differs") && l.contains(&format!("\"kind\":\"{kind}\"")))
            .map(String::from)
            .collect();
        assert!(
            skipped.iter().any(|(k, n)| k == kind && *n > 0),
            "no {kind} was left unapplied: {skipped:?}; why:\n{}",
            why.join("\n")
        );
    }
}

/// At rest: a minute without a single write to any child or to the status. (Absence of writes
/// has no condition to wait on: this window is the measurement.)
async fn assert_nothing_written_at_rest(client: &Client, ns: &str, crs: &Api<OtterDeployment>) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cr_version = || async {
        crs.get_metadata("otter")
            .await
            .expect("cr")
            .metadata
            .resource_version
    };
    let before = resource_versions(client, ns).await;
    let cr_before = cr_version().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        resource_versions(client, ns).await,
        before,
        "children were written at rest"
    );
    assert_eq!(
        cr_version().await,
        cr_before,
        "the OtterDeployment (status) was written at rest"
    );
}

#[tokio::test]
async fn turn_uris_follow_nodes() {
    let (c, client, ns, op) = setup("nodes").await;
    create_pooled(c, &client, &ns).await;
    await_ready(&client, &ns, &op).await;
    let config_maps: Api<ConfigMap> = ns_api(&client, &ns);
    let crs: Api<OtterDeployment> = ns_api(&client, &ns);
    let in_config = |needle: &'static str| {
        move |cm: Option<&ConfigMap>| {
            cm.and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get("ice-servers.json"))
                .is_some_and(|ice| ice.contains(needle))
        }
    };
    let in_status = |needle: &'static str| {
        move |cr: Option<&OtterDeployment>| {
            cr.and_then(|cr| cr.status.as_ref())
                .is_some_and(|s| s.turn_uris.iter().any(|u| u.contains(needle)))
        }
    };
    let node = format!("extra-{ns}");
    c.add_node(
        &node,
        Some("10.9.0.9"),
        Some("203.0.113.99"),
        &[("otter.dev/pool", ns.as_str())],
    )
    .expect("add node");
    let within = Duration::from_secs(30);
    let what = "the new node's address in config";
    wait_until(
        &config_maps,
        "otter-signaling",
        what,
        within,
        in_config("turn:203.0.113.99:3478?transport=udp"),
    )
    .await;
    wait_until(
        &crs,
        "otter",
        "the new node's address in status",
        within,
        in_status("203.0.113.99"),
    )
    .await;
    c.delete_node(&node).expect("delete node");
    let without_cm = move |cm: Option<&ConfigMap>| !in_config("203.0.113.99")(cm);
    let without_cr = move |cr: Option<&OtterDeployment>| !in_status("203.0.113.99")(cr);
    wait_until(
        &config_maps,
        "otter-signaling",
        "the removed node's address to leave config",
        within,
        without_cm,
    )
    .await;
    wait_until(
        &crs,
        "otter",
        "the removed node's address to leave status",
        within,
        without_cr,
    )
    .await;
    op.assert_no_forbidden();
}

/// Degraded for the missing Secret `name` (reason SecretNotFound, naming it).
fn degraded_for_secret(name: &'static str) -> impl Condition<OtterDeployment> {
    move |cr: Option<&OtterDeployment>| {
        cr.and_then(|cr| cr.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
            .is_some_and(|c| {
                c.status == "True" && c.reason == "SecretNotFound" && c.message.contains(name)
            })
    }
}

#[tokio::test]
async fn deleting_the_otterdeployment_collects_children_but_not_user_secrets() {
    let (c, client, ns, op) = setup("gc").await;
    let secrets: Api<Secret> = ns_api(&client, &ns);
    let mine = Secret {
        metadata: ObjectMeta {
            name: Some("my-turn".into()),
            ..Default::default()
        },
        data: Some([("secret".to_string(), ByteString(b"users-own".to_vec()))].into()),
        ..Default::default()
    };
    c.add_node(
        &format!("turn-{ns}"),
        Some("10.9.1.2"),
        Some("203.0.113.51"),
        &[("otter.dev/pool", ns.as_str())],
    )
    .expect("add the test's TURN node");
    let cr = json!({"metadata": {"name": "otter"}, "spec": {"turn": {
        "nodeSelector": {"otter.dev/pool": ns}, "secretRef": {"name": "my-turn", "key": "secret"}}}});
    apply_cr(&client, &ns, cr)
        .await
        .expect("apply the OtterDeployment");
    // The user's Secret comes late: Degraded names it, and its creation brings Ready.
    let crs: Api<OtterDeployment> = ns_api(&client, &ns);
    let degraded = "Degraded=True, SecretNotFound naming my-turn";
    let within = Duration::from_secs(60);
    wait_until(
        &crs,
        "otter",
        degraded,
        within,
        degraded_for_secret("my-turn"),
    )
    .await;
    secrets
        .create(&PostParams::default(), &mine)
        .await
        .expect("the user's Secret");
    await_ready(&client, &ns, &op).await;
    // At rest (Ready: the next look is minutes away), a new value in the user's Secret is a
    // Secret event: the rotation starts at once, its value offered to coturn as `next`.
    op.quiesce(&crs, "otter").await;
    let rotated = Secret {
        data: Some([("secret".to_string(), ByteString(b"users-new".to_vec()))].into()),
        ..Default::default()
    };
    secrets
        .patch("my-turn", &PatchParams::default(), &Patch::Merge(&rotated))
        .await
        .expect("rotate the user's Secret");
    let offered = |s: Option<&Secret>| {
        s.and_then(|s| s.data.as_ref()?.get("next"))
            .is_some_and(|v| v.0 == b"users-new")
    };
    let what =
        "otter-turn-keys to offer the rotated value as next (a Secret event, not the resync)";
    wait_until(&secrets, "otter-turn-keys", what, within, offered).await;
    let user_secret = secrets.get("my-turn").await.expect("user secret");
    assert!(
        user_secret.metadata.owner_references.is_none(),
        "the user's Secret is not owned"
    );
    crs.delete("otter", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_until(&crs, "otter", "the OtterDeployment to go", within, gone()).await;
    let what = "garbage collection";
    collected::<ConfigMap>(&client, &ns, "otter-signaling", within).await;
    collected::<Service>(&client, &ns, "otter-signaling", within).await;
    collected::<Deployment>(&client, &ns, "otter-signaling", within).await;
    collected::<DaemonSet>(&client, &ns, "otter-turn", within).await;
    collected::<StatefulSet>(&client, &ns, "otter-redis", within).await;
    wait_until(&secrets, "otter-redis-url", what, within, gone()).await;
    let survived = secrets
        .get("my-turn")
        .await
        .expect("the user's Secret survives");
    assert_eq!(survived.data, user_secret.data, "and is unchanged");
    op.assert_no_forbidden();
}

fn held_by(identity: &'static str) -> impl Condition<Lease> {
    move |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity)
    }
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let (c, client, ns, mut first) = setup("lease").await;
    let leases: Api<Lease> = ns_api(&client, &ns);
    let within = Duration::from_secs(30);
    wait_until(
        &leases,
        "otter-operator",
        "the first operator to hold the Lease",
        within,
        held_by("op-a"),
    )
    .await;
    let mut second = Operator::start(c, &ns, "op-b");
    create_pooled(c, &client, &ns).await;
    await_ready(&client, &ns, &first).await;
    first
        .await_reconciles("the leader's reconciles to be counted")
        .await;
    assert_eq!(
        second.reconciles().await,
        0,
        "the standby reconciled nothing"
    );
    first.kill();
    wait_until(
        &leases,
        "otter-operator",
        "the standby to take the Lease",
        within,
        held_by("op-b"),
    )
    .await;
    let services: Api<Service> = ns_api(&client, &ns);
    services
        .delete("otter-signaling", &DeleteParams::default())
        .await
        .expect("delete the Service");
    let what = "the new leader to restore the Service";
    wait_until(
        &services,
        "otter-signaling",
        what,
        Duration::from_secs(60),
        exists(),
    )
    .await;
    // The Service is applied mid-reconcile; the counter moves when the reconcile completes.
    second
        .await_reconciles("the new leader's reconciles to be counted")
        .await;
    second.assert_no_forbidden();
    second.kill();
}

#[tokio::test]
async fn the_operator_survives_an_api_server_restart() {
    // A private control plane: restarting the shared one would disturb the other tests.
    let c = Cluster::start().expect("private cluster");
    let client = c.client().await.expect("admin client");
    apply_crds(&client).await;
    let ns = c.namespace("restart");
    install_rbac(&client, &ns).await;
    let mut op = Operator::start(&c, &ns, "op-a");
    create_pooled(&c, &client, &ns).await;
    await_ready(&client, &ns, &op).await;
    // Checked before the restart only: a new API server refuses requests for a moment while
    // its RBAC caches fill, and the operator retries them.
    op.assert_no_forbidden();
    c.restart(&["kube-apiserver"], Duration::from_secs(10))
        .expect("restart");
    // A new client: the old one's connections went with the API server.
    let client = c.client().await.expect("admin client");
    let config_maps: Api<ConfigMap> = ns_api(&client, &ns);
    config_maps
        .delete("otter-signaling", &DeleteParams::default())
        .await
        .expect("delete");
    let patch = json!({"spec": {"signaling": {"maxPeersPerRoom": 3}}});
    ns_api::<OtterDeployment>(&client, &ns)
        .patch("otter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let what = "the operator to restore the ConfigMap without a restart of its own";
    wait_until(
        &config_maps,
        "otter-signaling",
        what,
        Duration::from_secs(90),
        exists(),
    )
    .await;
    await_ready(&client, &ns, &op).await;
    assert!(
        op.child.try_wait().expect("wait").is_none(),
        "the operator process is still the same one"
    );
}
