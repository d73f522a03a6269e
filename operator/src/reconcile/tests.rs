//! The reconcile against a mock API server (`tower-test`): every request the operator makes is
//! recorded and answered by a small in-memory world, so the order of requests, the ownership
//! check before a delete, status written only on change, Events and every error path are
//! checked in milliseconds, without a cluster. The watches' stores (children, TURN Nodes and
//! pods) are filled by each test as a real watch would.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::*;
use crate::crd::OtterDeployment;
use crate::testing::{cr, node, turn_pod};

mod turn_probe;

/// One request the operator made.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    /// Path without the query.
    path: String,
    query: String,
    body: Value,
}

impl Call {
    /// `PATCH secrets/demo-turn-secret`, `GET nodes`, … : the verb, the resource and the name.
    fn short(&self) -> String {
        let parts: Vec<&str> = self.path.split('/').collect();
        let tail = match parts.iter().position(|p| *p == "namespaces") {
            Some(i) => parts[i + 2..].join("/"),
            None => parts.last().copied().unwrap_or_default().to_string(),
        };
        format!("{} {tail}", self.method)
    }

    fn is_workload_apply(&self) -> bool {
        self.method == "PATCH"
            && ["/statefulsets/", "/deployments/", "/daemonsets/"]
                .iter()
                .any(|k| self.path.contains(k))
    }

    fn is_config_apply(&self) -> bool {
        self.method == "PATCH"
            && [
                "/secrets/",
                "/configmaps/",
                "/services/",
                "/networkpolicies/",
            ]
            .iter()
            .any(|k| self.path.contains(k))
    }
}

/// What the mock API server holds and how it misbehaves.
#[derive(Clone, Default)]
struct World {
    /// Whether workloads report every pod ready.
    ready: bool,
    /// Existing children's metadata by plural resource, answered to label-selected lists.
    children: Vec<(&'static str, Value)>,
    /// Answer `code` to the first request whose `METHOD path` contains this.
    fail: Option<(&'static str, u16)>,
    /// Whether the generated TURN Secret exists (with the value `turn_probe::TURN_SECRET`).
    turn_secret: bool,
    /// The keys Secret `demo-turn-keys`, when it exists.
    turn_keys: Option<Value>,
    /// Secrets that exist, answered to a GET by name.
    secrets: Vec<Value>,
    /// Nodes the Node watch holds besides `node-a` (Ready, TURN-labelled, 203.0.113.7).
    more_nodes: Vec<Node>,
    /// TURN pods the pod watch holds.
    turn_pods: Vec<Pod>,
    /// Whether the Node and pod watches ended before their first list.
    unlisted: bool,
    /// The OtterDeployments the controller's cache holds (port clashes).
    peers: Vec<OtterDeployment>,
}

fn status_of(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": format!("mock: {reason}"), "reason": reason, "code": code})
}

/// A store filled as a watch's first list fills it (slimmed as `watch` slims), marked listed
/// unless `unlisted` (then its writer is gone before it listed).
fn store_of<K>(objs: &[K], slim: fn(&mut K), unlisted: bool) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&Event::Init);
    for obj in objs {
        let mut obj = obj.clone();
        slim(&mut obj);
        writer.apply_watcher_event(&Event::InitApply(obj));
    }
    if !unlisted {
        writer.apply_watcher_event(&Event::InitDone);
    }
    store
}

/// The Node and TURN pod watches' stores as `world` holds them.
fn turn_stores(world: &World) -> cache::Turn {
    let mut nodes = vec![node("node-a", true, &[("ExternalIP", "203.0.113.7")])];
    nodes.extend(world.more_nodes.iter().cloned());
    cache::Turn {
        nodes: store_of(&nodes, watch::slim_node, world.unlisted),
        pods: store_of(&world.turn_pods, watch::slim_pod, world.unlisted),
    }
}

/// A workload as the API server answers its apply: the body, with a status.
fn with_status(mut obj: Value, plural: &str, ready: bool) -> Value {
    let n = if ready { 1 } else { 0 };
    let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let got = if ready { want } else { 0 };
    obj["metadata"]["generation"] = json!(1);
    obj["status"] = match plural {
        "deployments" | "statefulsets" => json!({"observedGeneration": 1, "replicas": want,
            "readyReplicas": got, "updatedReplicas": want}),
        "daemonsets" => json!({"observedGeneration": 1, "desiredNumberScheduled": 1,
            "numberReady": n, "updatedNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberMisscheduled": 0}),
        _ => return obj,
    };
    obj
}

fn answer(world: &mut World, call: &Call) -> (u16, Value) {
    if let Some((what, code)) = world.fail
        && format!("{} {}", call.method, call.path).contains(what)
    {
        world.fail = None;
        return (code, status_of(code, "Refused"));
    }
    let plural = call.path.split('/').rev().nth(1).unwrap_or_default();
    let existing = world.secrets.iter().find(|s| {
        let name = s["metadata"]["name"].as_str().unwrap_or("-");
        call.method == "GET" && call.path.ends_with(&format!("/secrets/{name}"))
    });
    if let Some(secret) = existing {
        return (200, secret.clone());
    }
    match call.method.as_str() {
        "GET" if call.query.contains("labelSelector") => {
            let resource = call.path.rsplit('/').next().unwrap_or_default();
            let items: Vec<Value> = world
                .children
                .iter()
                .filter(|(r, _)| *r == resource)
                .map(|(_, m)| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m}))
                .collect();
            (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                         "metadata": {}, "items": items}),
            )
        }
        "GET" if world.turn_secret && call.path.ends_with("/secrets/demo-turn-secret") => {
            (200, turn_probe::turn_secret())
        }
        "GET" if call.path.ends_with("/secrets/demo-turn-keys") && world.turn_keys.is_some() => {
            (200, world.turn_keys.clone().unwrap_or_default())
        }
        "GET" => (404, status_of(404, "NotFound")),
        // A status patch answers with the whole resource.
        "PATCH" if call.path.ends_with("/status") => {
            let mut cr = call.body.clone();
            cr["metadata"] = json!({"name": "demo", "namespace": "calls"});
            cr["spec"] = json!({});
            (200, cr)
        }
        "PATCH" => (200, with_status(call.body.clone(), plural, world.ready)),
        "POST" => (201, call.body.clone()),
        "DELETE" => (
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => (405, status_of(405, "MethodNotAllowed")),
    }
}

/// A client whose requests go to `world`, and the log of those requests.
fn mock_client(world: World) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let mut world = world;
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, reply) = answer(&mut world, &call);
            seen.lock().unwrap().push(call);
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), log)
}

/// Reconcile `cr` once against `world`: the result and every request made.
async fn run(cr: &OtterDeployment, world: World) -> (Result<Action, Error>, Vec<Call>) {
    run_probed(
        cr,
        world,
        turn_probe::answering(crate::probe::ProbeOutcome::NoAnswer),
    )
    .await
}

/// [`run`], with TURN Allocates answered by `prober`.
async fn run_probed(
    cr: &OtterDeployment,
    world: World,
    prober: Arc<dyn crate::probe::Prober>,
) -> (Result<Action, Error>, Vec<Call>) {
    run_seeing(cr, world, prober, cache::Children::default()).await
}

/// [`run_probed`], with the owned-kind watches showing `children`.
async fn run_seeing(
    cr: &OtterDeployment,
    world: World,
    prober: Arc<dyn crate::probe::Prober>,
    children: cache::Children,
) -> (Result<Action, Error>, Vec<Call>) {
    let turn = turn_stores(&world);
    let peers = store_of(&world.peers, |_| {}, false);
    let (client, log) = mock_client(world);
    let ctx = Context::new(
        client,
        Images::default(),
        Metrics::new(),
        "test".into(),
        Duration::from_secs(10 * 3600),
    );
    let ctx = Arc::new(ctx.with_prober(prober));
    ctx.set_children(children);
    ctx.set_turn(turn);
    ctx.set_peers(peers);
    let result = reconcile(Arc::new(cr.clone()), ctx).await;
    let calls = log.lock().unwrap().clone();
    (result, calls)
}

fn shorts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::short).collect()
}

fn status_written(calls: &[Call]) -> Option<OtterDeploymentStatus> {
    let call = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.path.ends_with("/status"))?;
    serde_json::from_value(call.body["status"].clone()).ok()
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| c.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ready_reason(status: &OtterDeploymentStatus) -> String {
    find_condition(status, READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// A resource that was created at generation 1 and reconciled before.
fn seen_cr() -> OtterDeployment {
    let mut cr = cr();
    cr.metadata.generation = Some(1);
    cr
}

#[tokio::test]
async fn config_is_applied_before_workloads_and_status_after_both() {
    let (result, calls) = run(&seen_cr(), World::default()).await;
    assert!(result.is_ok(), "{result:?}");
    let s = shorts(&calls);
    let last_config = calls.iter().rposition(Call::is_config_apply).unwrap();
    let first_workload = calls.iter().position(Call::is_workload_apply).unwrap();
    assert!(last_config < first_workload, "{s:#?}");
    let status_at = s.iter().position(|c| c.ends_with("/status")).unwrap();
    assert!(
        calls[..status_at]
            .iter()
            .filter(|c| c.is_workload_apply())
            .count()
            == 3
    );
    for want in [
        "PATCH secrets/demo-turn-secret",
        "PATCH configmaps/demo-turn",
        "PATCH networkpolicies/demo-redis",
        "PATCH deployments/demo-signaling",
        "PATCH poddisruptionbudgets/demo-signaling",
    ] {
        assert!(s.contains(&want.to_string()), "no {want} in {s:#?}");
    }
    for call in calls.iter().filter(|c| c.method == "PATCH") {
        assert!(
            call.query.contains("fieldManager=otter-operator"),
            "{call:?}"
        );
        assert!(call.query.contains("force=true"), "{call:?}");
    }
    assert!(
        !s.iter()
            .any(|c| c.starts_with("GET deployments") || c.starts_with("GET daemonsets")),
        "status comes from the applied objects, not a second read: {s:#?}"
    );
    assert!(!s.iter().any(|c| c.starts_with("DELETE")), "{s:#?}");
}

#[tokio::test]
async fn a_new_resource_gets_secrets_a_rolling_out_status_and_events() {
    let (result, calls) = run(&seen_cr(), World::default()).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    let status = status_written(&calls).unwrap();
    // The children exist once applied; their pods are not ready yet.
    assert_eq!(ready_reason(&status), "RollingOut");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(event_reasons(&calls), vec!["SecretGenerated", "RollingOut"]);
}

#[tokio::test]
async fn status_is_written_only_when_it_changed() {
    let world = World {
        ready: true,
        ..World::default()
    };
    let (first, calls) = run(&seen_cr(), world.clone()).await;
    assert_eq!(first.unwrap(), Action::requeue(Duration::from_secs(300)));
    let status = status_written(&calls).unwrap();
    assert_eq!(ready_reason(&status), "Available");
    assert!(event_reasons(&calls).contains(&"Ready".to_string()));

    let mut again = seen_cr();
    again.status = Some(status);
    let (second, calls) = run(&again, world).await;
    assert!(second.is_ok());
    assert!(status_written(&calls).is_none(), "{:#?}", shorts(&calls));
    // The Secrets exist by now in a real cluster; here they read as missing, so only the
    // SecretGenerated Event may repeat, never a status Event.
    assert!(
        event_reasons(&calls).iter().all(|r| r == "SecretGenerated"),
        "{:?}",
        event_reasons(&calls)
    );
    assert!(!shorts(&calls).iter().any(|c| c.starts_with("DELETE")));
}

/// Stores holding the children `calls` applied, as the API server answered them, with `edit`
/// made to each (someone else's change).
fn watched(calls: &[Call], ready: bool, edit: impl Fn(&mut Value)) -> cache::Children {
    struct Fill<'a, E> {
        calls: &'a [Call],
        ready: bool,
        edit: E,
        children: cache::Children,
    }
    impl<E: Fn(&mut Value)> crate::kinds::PerKind for Fill<'_, E> {
        type Out = ();
        fn visit<K: crate::kinds::Owned>(&mut self) {
            let (store, mut writer) = kube::runtime::reflector::store::<K>();
            let plural = K::plural(&()).into_owned();
            let applies = self.calls.iter().filter(|c| {
                c.method == "PATCH"
                    && c.path.contains(&format!("/{plural}/"))
                    && !c.path.ends_with("/status")
            });
            for call in applies {
                let mut obj = with_status(call.body.clone(), &plural, self.ready);
                (self.edit)(&mut obj);
                let obj: K = serde_json::from_value(obj).unwrap();
                writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(obj));
            }
            self.children.insert(store);
        }
    }
    let mut fill = Fill {
        calls,
        ready,
        edit,
        children: cache::Children::default(),
    };
    for kind in crate::kinds::Kind::ALL {
        kind.visit(&mut fill);
    }
    fill.children
}

fn patches(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(Call::short)
        .collect()
}

#[tokio::test]
async fn children_the_watch_shows_as_wanted_are_not_applied_again_but_drift_is() {
    let world = World {
        ready: true,
        ..World::default()
    };
    let (first, applied) = run(&seen_cr(), world.clone()).await;
    assert!(first.is_ok(), "{first:?}");
    assert!(patches(&applied).len() > 8, "{:#?}", patches(&applied));
    let mut cr = seen_cr();
    cr.status = status_written(&applied);
    // What a real cluster holds now: the generated Secrets (read by name) and every child.
    let secrets: Vec<Value> = applied
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.contains("/secrets/"))
        .map(|c| c.body.clone())
        .collect();
    let world = World { secrets, ..world };
    let probe = || turn_probe::answering(crate::probe::ProbeOutcome::NoAnswer);

    let as_applied = watched(&applied, true, |_| {});
    let (again, calls) = run_seeing(&cr, world.clone(), probe(), as_applied).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(patches(&calls), Vec::<String>::new(), "nothing changed");

    // Someone scaled the Deployment by hand: only that is applied (and so taken back).
    let hand_scaled = watched(&applied, true, |obj| {
        if obj["kind"] == "Deployment" {
            obj["spec"]["replicas"] = json!(7);
        }
    });
    let (_, calls) = run_seeing(&cr, world, probe(), hand_scaled).await;
    assert_eq!(patches(&calls), vec!["PATCH deployments/demo-signaling"]);
}

fn owned_meta(name: &str, owner: &str) -> Value {
    json!({"name": name, "namespace": "calls", "uid": format!("uid-{name}"),
           "labels": {"app.kubernetes.io/instance": "demo"},
           "ownerReferences": [{"apiVersion": "otter.dev/v1alpha1", "kind": "OtterDeployment",
                                "name": "demo", "uid": owner}]})
}

#[tokio::test]
async fn prune_deletes_only_owned_children_with_their_uid_as_precondition() {
    let mut cr = seen_cr();
    cr.metadata.generation = Some(2);
    cr.spec.turn.enabled = false;
    let me = cr.metadata.uid.clone().unwrap();
    let world = World {
        children: vec![
            ("daemonsets", owned_meta("demo-turn", &me)),
            ("configmaps", owned_meta("demo-turn", "another-owner")),
            ("configmaps", owned_meta("demo-signaling", &me)),
        ],
        ..World::default()
    };
    let (result, calls) = run(&cr, world).await;
    assert!(result.is_ok(), "{result:?}");
    let s = shorts(&calls);
    let deletes: Vec<&Call> = calls.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{s:#?}");
    assert!(deletes[0].path.ends_with("/daemonsets/demo-turn"));
    assert_eq!(deletes[0].body["preconditions"]["uid"], "uid-demo-turn");
    let listed = s.iter().position(|c| c == "GET daemonsets").unwrap();
    let deleted = s
        .iter()
        .position(|c| c == "DELETE daemonsets/demo-turn")
        .unwrap();
    assert!(
        listed < deleted,
        "ownership is read before the delete: {s:#?}"
    );
    assert!(
        !s.iter().any(|c| c.starts_with("GET deployments")),
        "the Deployment is never pruned: {s:#?}"
    );
    assert!(event_reasons(&calls).contains(&"Pruned".to_string()));
}

#[tokio::test]
async fn at_rest_nothing_is_listed_for_pruning() {
    let mut cr = seen_cr();
    cr.status = Some(OtterDeploymentStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    let (_, calls) = run(&cr, World::default()).await;
    // Nothing at all is listed: not a child kind, not the TURN Nodes or pods (the stores').
    assert!(
        !calls.iter().any(|c| c.query.contains("labelSelector")),
        "{:#?}",
        shorts(&calls)
    );
}

#[tokio::test]
async fn turn_nodes_and_pods_are_read_from_the_stores_not_listed() {
    let cr = seen_cr();
    let world = World {
        more_nodes: vec![node("node-b", true, &[("ExternalIP", "203.0.113.8")])],
        turn_pods: vec![
            turn_pod(&cr, "demo-turn-a", "node-a", false),
            turn_pod(&cr, "demo-turn-b", "node-b", true),
        ],
        ..World::default()
    };
    let (result, calls) = run(&cr, world).await;
    assert!(result.is_ok(), "{result:?}");
    let s = shorts(&calls);
    assert!(
        !calls
            .iter()
            .any(|c| c.path.ends_with("/nodes") || c.path.ends_with("/pods")),
        "no Node or pod request: {s:#?}"
    );
    assert!(
        s.iter()
            .all(|c| !c.starts_with("GET") || c.starts_with("GET secrets/")),
        "{s:#?}"
    );
    let status = status_written(&calls).unwrap();
    assert_eq!(
        status
            .turn_uris
            .iter()
            .filter(|u| u.contains("203.0.113.8"))
            .count(),
        0,
        "the draining node is not published: {:?}",
        status.turn_uris
    );
    assert!(status.turn_uris.iter().any(|u| u.contains("203.0.113.7")));
    let draining: Vec<_> = status
        .turn_draining
        .iter()
        .map(|d| (d.node.as_str(), d.pod.as_str()))
        .collect();
    assert_eq!(draining, [("node-b", "demo-turn-b")]);
}

#[tokio::test]
async fn before_the_turn_watches_listed_nothing_is_read_or_written() {
    let world = World {
        unlisted: true,
        ..World::default()
    };
    let (result, calls) = run(&seen_cr(), world).await;
    assert!(matches!(result, Err(Error::NotListed(_))), "{result:?}");
    assert!(calls.is_empty(), "{:#?}", shorts(&calls));
    // Without TURN nothing waits for them.
    let mut off = seen_cr();
    off.spec.turn.enabled = false;
    let world = World {
        unlisted: true,
        ..World::default()
    };
    let (result, _) = run(&off, world).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_failed_read_writes_nothing() {
    let world = World {
        fail: Some(("GET /api/v1/namespaces/calls/secrets/", 500)),
        ..World::default()
    };
    let (result, calls) = run(&seen_cr(), world).await;
    assert!(matches!(result, Err(Error::Observe(_))), "{result:?}");
    assert!(
        !calls.iter().any(|c| c.method != "GET"),
        "{:#?}",
        shorts(&calls)
    );
}

#[tokio::test]
async fn a_failed_config_apply_keeps_the_workloads_back_and_says_so() {
    let world = World {
        fail: Some((
            "PATCH /api/v1/namespaces/calls/secrets/demo-turn-secret",
            403,
        )),
        ..World::default()
    };
    let (result, calls) = run(&seen_cr(), world).await;
    assert!(
        matches!(result, Err(Error::Apply(_))),
        "{result:?} {:#?}",
        shorts(&calls)
    );
    assert!(
        !calls.iter().any(Call::is_workload_apply),
        "{:#?}",
        shorts(&calls)
    );
    let status = status_written(&calls).unwrap();
    assert_eq!(ready_reason(&status), "ApplyFailed");
    let message = &find_condition(&status, READY).unwrap().message;
    assert!(
        message.contains("applying Secret calls/demo-turn-secret"),
        "{message}"
    );
    assert_eq!(event_reasons(&calls), vec!["ApplyFailed"]);
}

#[tokio::test]
async fn a_failed_workload_apply_is_degraded_and_retried() {
    let world = World {
        fail: Some(("PATCH /apis/apps/v1/namespaces/calls/daemonsets", 422)),
        ..World::default()
    };
    let (result, calls) = run(&seen_cr(), world).await;
    assert!(matches!(result, Err(Error::Apply(_))), "{result:?}");
    assert_eq!(
        ready_reason(&status_written(&calls).unwrap()),
        "ApplyFailed"
    );
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing_and_says_why() {
    let mut cr = seen_cr();
    cr.spec.turn.extra_denied_peer_ranges = vec!["not-a-cidr".into()];
    let (result, calls) = run(&cr, World::default()).await;
    assert!(matches!(result, Err(Error::Build(_))), "{result:?}");
    assert!(
        !calls
            .iter()
            .any(|c| c.is_config_apply() || c.is_workload_apply())
    );
    let status = status_written(&calls).unwrap();
    let message = &find_condition(&status, READY).unwrap().message;
    assert!(message.contains("not-a-cidr"), "{message}");
}

#[tokio::test]
async fn a_failed_prune_is_an_error_and_degraded() {
    let mut cr = seen_cr();
    cr.metadata.generation = Some(2);
    let world = World {
        fail: Some(("GET /apis/apps/v1/namespaces/calls/daemonsets", 500)),
        ..World::default()
    };
    let (result, calls) = run(&cr, world).await;
    assert!(matches!(result, Err(Error::Prune(_))), "{result:?}");
    assert_eq!(
        ready_reason(&status_written(&calls).unwrap()),
        "ApplyFailed"
    );
}

#[tokio::test]
async fn a_failed_status_write_is_an_error() {
    let world = World {
        fail: Some(("/otterdeployments/demo/status", 409)),
        ..World::default()
    };
    let (result, _) = run(&seen_cr(), world).await;
    assert!(matches!(result, Err(Error::Status(_))), "{result:?}");
}

#[tokio::test]
async fn a_resource_being_deleted_is_left_to_the_garbage_collector() {
    let mut cr = seen_cr();
    cr.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let (result, calls) = run(&cr, World::default()).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn a_turn_port_clash_names_the_resource_whose_turn_pods_were_placed() {
    let me = seen_cr();
    let other = |name: &str, created: i64| {
        let mut o = seen_cr();
        o.metadata.name = Some(name.into());
        o.metadata.uid = Some(format!("uid-{name}"));
        o.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        o
    };
    // The oldest did not get the port: the scheduler placed the newer one's pod first.
    let (oldest, holder) = (other("oldest", 100), other("holder", 200));
    let world = World {
        turn_pods: vec![turn_pod(&holder, "holder-turn-x", "node-a", false)],
        peers: vec![oldest, holder, me.clone()],
        ..World::default()
    };
    let (_, calls) = run(&me, world.clone()).await;
    let status = status_written(&calls).unwrap();
    let degraded = find_condition(&status, "Degraded").unwrap();
    assert_eq!(degraded.reason, "TurnPortInUse");
    assert!(
        degraded.message.contains("TURN port 3478")
            && degraded.message.contains("OtterDeployment calls/holder"),
        "{}",
        degraded.message
    );

    // No other TURN pod placed yet: nothing to name, the rollout just waits.
    let (_, calls) = run(
        &me,
        World {
            turn_pods: Vec::new(),
            ..world
        },
    )
    .await;
    let status = status_written(&calls).unwrap();
    assert_eq!(find_condition(&status, "Degraded").unwrap().status, "False");
}
