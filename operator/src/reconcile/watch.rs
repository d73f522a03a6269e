//! The controller's wiring: the OtterDeployments, every owned kind (by the `managed-by` label),
//! the Nodes whose addresses the TURN URIs publish, the TURN pods, and the Secrets of the user's
//! they name. The owned kinds, the Nodes and the TURN pods are kept in reflector stores the
//! reconcile reads ([`cache`]); the Secrets only trigger.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec, PodStatus, Secret};
use kube::api::ObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::secrets::user_secret_names;
use crate::crd::OtterDeployment;
use crate::kinds::{Kind, Owned, PerKind};
use crate::meta::INSTANCE_LABEL;
use crate::reconcile::observe::selects;
use crate::reconcile::{Context, cache, error_policy, reconcile};

/// Label every child carries; owned-object watches select on it.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=otter-operator";

/// Label selector of the TURN pods of every OtterDeployment.
pub const TURN_PODS_SELECTOR: &str =
    "app.kubernetes.io/managed-by=otter-operator,app.kubernetes.io/component=turn";

/// The OtterDeployment a TURN pod belongs to (its instance label): a pod that starts
/// terminating must leave the published TURN URIs at once, not at the next resync.
pub fn turn_pod_owner(pod: &Pod) -> Option<ObjectRef<OtterDeployment>> {
    let name = pod.labels().get(INSTANCE_LABEL)?;
    let ns = pod.namespace()?;
    Some(ObjectRef::new(name).within(&ns))
}

/// Whether a Node event concerns this resource: it matches the TURN selector now, or it is one
/// the status still publishes (so a node that lost its label or went away is dropped at once).
pub fn node_concerns(cr: &OtterDeployment, node: &Node) -> bool {
    if !cr.spec.turn.enabled {
        return false;
    }
    if selects(&cr.spec.turn.node_selector, node.labels()) {
        return true;
    }
    let published = cr
        .status
        .as_ref()
        .map(|s| s.turn_uris.as_slice())
        .unwrap_or_default();
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .any(|a| {
            let host = if a.address.contains(':') {
                format!("[{}]:", a.address)
            } else {
                format!("{}:", a.address)
            };
            published
                .iter()
                .any(|uri| uri.contains(&format!(":{host}")))
        })
}

/// Secrets no OtterDeployment can name, left out of the Secret watch: Helm's release records
/// (large, rewritten on every upgrade) and ServiceAccount tokens.
pub const SECRETS_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// The resources that name this Secret as one of the user's (TURN secret, token key, Redis URL,
/// TURN TLS): created, changed or deleted, it must not wait for the next resync — a resource
/// Degraded by its absence recovers at once, and a rotated TURN secret starts rotating.
pub fn secret_readers(
    crs: &[Arc<OtterDeployment>],
    secret: &Secret,
) -> Vec<ObjectRef<OtterDeployment>> {
    let (Some(ns), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    crs.iter()
        .filter(|cr| cr.namespace().as_deref() == Some(ns.as_str()))
        .filter(|cr| user_secret_names(cr).contains(&name))
        .map(|cr| ObjectRef::from_obj(&**cr))
        .collect()
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The metadata the stores keep of a Node or TURN pod: what identifies it, its labels (the
/// selectors and the owner mapping) and whether it is being deleted (a draining TURN pod).
fn slim_meta(meta: &mut ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        labels: meta.labels.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        ..ObjectMeta::default()
    }
}

/// A Node as the store keeps it: its addresses and conditions, all `TurnNode::from_node` and
/// `node_concerns` read. The rest (the images on the node above all, managedFields, the
/// annotations) is most of a Node and would be held for every node of the cluster.
pub fn slim_node(node: &mut Node) {
    let status = node.status.take().unwrap_or_default();
    *node = Node {
        metadata: slim_meta(&mut node.metadata),
        spec: None,
        status: Some(NodeStatus {
            addresses: status.addresses,
            conditions: status.conditions,
            ..NodeStatus::default()
        }),
    };
}

/// A TURN pod as the store keeps it: its node and host IP, all `split_nodes` and the drain's
/// allocation count read (the containers, volumes and conditions are not).
pub fn slim_pod(pod: &mut Pod) {
    let node_name = pod.spec.take().and_then(|s| s.node_name);
    let host_ip = pod.status.take().and_then(|s| s.host_ip);
    *pod = Pod {
        metadata: slim_meta(&mut pod.metadata),
        spec: Some(PodSpec {
            node_name,
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            host_ip,
            ..PodStatus::default()
        }),
    };
}

/// A watch of `api` whose objects, slimmed by `slim`, are kept in the store returned. The
/// stream hands on each object the watch touched, to trigger reconciles, after the store has
/// taken it in: a reconcile it triggers reads the store with that object in it.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(api, config).modify(slim);
    (
        store,
        reflector::reflector(writer, events).touched_objects(),
    )
}

type AddWatch = Box<dyn FnOnce(Controller<OtterDeployment>) -> Controller<OtterDeployment>>;

/// The watch of one owned kind, to add to the controller being built; its objects are kept in
/// a store in `children`, which the apply step reads.
struct Owns<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    children: cache::Children,
}

impl PerKind for Owns<'_> {
    type Out = AddWatch;
    fn visit<K: Owned>(&mut self) -> AddWatch {
        let config = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
        let api = scoped::<K>(self.client, self.namespace);
        // managedFields are most of an object and never part of what is compared: not kept.
        let (store, stream) = reflected(api, config, |obj: &mut K| {
            obj.meta_mut().managed_fields = None;
        });
        self.children.insert(store);
        Box::new(move |c| c.owns_stream(stream))
    }
}

/// The controller with every watch: the resource, each owned kind, the user's Secrets, the TURN
/// pods, the Nodes.
fn controller(ctx: &Context, namespace: Option<&str>) -> Controller<OtterDeployment> {
    let client = &ctx.client;
    let controller = Controller::new(
        scoped::<OtterDeployment>(client, namespace),
        watcher::Config::default(),
    )
    .with_config(
        ControllerConfig::default()
            .debounce(Duration::from_millis(500))
            .concurrency(ctx.concurrency),
    );
    let store = controller.store();
    ctx.set_peers(store.clone());
    let mut owns = Owns {
        client,
        namespace,
        children: cache::Children::default(),
    };
    let controller = Kind::ALL
        .into_iter()
        .fold(controller, |c, kind| kind.visit(&mut owns)(c));
    ctx.set_children(owns.children);
    // Every Node: each OtterDeployment selects its own, and one that lost its label must still
    // reach the resource publishing it.
    let (nodes, node_events) = reflected(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        slim_node,
    );
    // Only the TURN pods (by label), not every pod of the namespace.
    let (pods, pod_events) = reflected(
        scoped::<Pod>(client, namespace),
        watcher::Config::default().labels(TURN_PODS_SELECTOR),
        slim_pod,
    );
    ctx.set_turn(cache::Turn { nodes, pods });
    let readers = store.clone();
    controller
        .watches(
            scoped::<Secret>(client, namespace),
            watcher::Config::default().fields(SECRETS_FIELD_SELECTOR),
            move |secret: Secret| secret_readers(&readers.state(), &secret),
        )
        .watches_stream(pod_events, |pod: Pod| turn_pod_owner(&pod))
        .watches_stream(node_events, move |node: Node| {
            store
                .state()
                .into_iter()
                .filter(|cr| node_concerns(cr, &node))
                .map(|cr| ObjectRef::from_obj(&*cr))
                .collect::<Vec<_>>()
        })
}

/// Run the controller until `shutdown` resolves. `namespace`: watch one namespace, else all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller(&ctx, namespace.as_deref())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(resource = %obj, "reconciled"),
                // A failing watch (e.g. RBAC refusing a list) must be visible at the default
                // level; reconcile failures are already logged inside their span.
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    tracing::warn!(error = %e, "watch failed; retrying with backoff")
                }
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::TurnNode;
    use crate::reconcile::drain::split_nodes;
    use crate::testing::{cr, node, secret, turn_pod};
    use k8s_openapi::api::core::v1::ContainerImage;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn a_turn_pod_event_reaches_its_otter_deployment() {
        let mut pod = Pod::default();
        assert!(turn_pod_owner(&pod).is_none());
        pod.metadata.namespace = Some("calls".into());
        pod.metadata.labels = Some(
            [("app.kubernetes.io/instance".to_string(), "demo".to_string())]
                .into_iter()
                .collect(),
        );
        let owner = turn_pod_owner(&pod).unwrap();
        assert_eq!(owner.name, "demo");
        assert_eq!(owner.namespace.as_deref(), Some("calls"));
    }

    #[test]
    fn a_user_secret_event_reaches_the_resources_naming_it_in_its_namespace() {
        let mut named = cr();
        named.spec.turn.secret_ref = Some(crate::crd::SecretKeyRef {
            name: "turn-shared".into(),
            key: None,
        });
        let mut elsewhere = named.clone();
        elsewhere.metadata.namespace = Some("other".into());
        let unnamed = cr();
        let crs: Vec<_> = [named.clone(), elsewhere, unnamed]
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut secret = secret("turn-shared", &[]);
        assert_eq!(
            secret_readers(&crs, &secret),
            vec![ObjectRef::from_obj(&named)]
        );
        secret.metadata.name = Some("something-else".into());
        assert!(secret_readers(&crs, &secret).is_empty());
        // A generated Secret is the owned-kind watch's: its name is not the user's.
        secret.metadata.name = Some(format!("{}-turn-secret", named.name_any()));
        assert!(secret_readers(&crs, &secret).is_empty());
    }

    #[test]
    fn node_events_reach_resources_selecting_or_publishing_the_node() {
        let mut cr = cr();
        let labelled = node("n1", true, &[("ExternalIP", "198.51.100.4")]);
        assert!(node_concerns(&cr, &labelled));
        let mut unlabelled = labelled.clone();
        unlabelled.metadata.labels = None;
        assert!(!node_concerns(&cr, &unlabelled));
        // A node that lost its label but is still published must trigger a reconcile.
        let status = crate::crd::OtterDeploymentStatus {
            turn_uris: vec!["turn:198.51.100.4:3478?transport=udp".into()],
            ..Default::default()
        };
        cr.status = Some(status);
        assert!(node_concerns(&cr, &unlabelled));
        let mut other = unlabelled.clone();
        other.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address =
            "198.51.100.40".into();
        assert!(
            !node_concerns(&cr, &other),
            "prefix of a published address is not a match"
        );
        cr.spec.turn.enabled = false;
        assert!(!node_concerns(&cr, &labelled));
    }

    #[test]
    fn the_stores_keep_what_observe_and_the_triggers_read_and_little_else() {
        let cr = cr();
        let full = turn_pod(&cr, "demo-turn-x", "n1", true);
        let mut pod = full.clone();
        slim_pod(&mut pod);
        assert!(pod.metadata.managed_fields.is_none() && pod.metadata.annotations.is_none());
        assert!(pod.spec.as_ref().is_some_and(|s| s.containers.is_empty()));
        assert_eq!(turn_pod_owner(&pod), turn_pod_owner(&full));
        let nodes = vec![TurnNode {
            name: "n1".into(),
            public_ip: "198.51.100.4".parse().unwrap(),
        }];
        let split = split_nodes(nodes.clone(), std::slice::from_ref(&pod));
        assert_eq!(split, split_nodes(nodes, &[full]));
        assert!(split.1[0].host_ip.is_some(), "the drain's scrape needs it");

        let mut full = node("n1", true, &[("ExternalIP", "198.51.100.4")]);
        full.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        if let Some(status) = full.status.as_mut() {
            status.images = Some(vec![ContainerImage::default(); 50]);
        }
        let mut slim = full.clone();
        slim_node(&mut slim);
        assert!(slim.metadata.managed_fields.is_none());
        assert!(slim.status.as_ref().is_some_and(|s| s.images.is_none()));
        assert_eq!(TurnNode::from_node(&slim), TurnNode::from_node(&full));
        assert_eq!(slim.labels(), full.labels());
        assert_eq!(node_concerns(&cr, &slim), node_concerns(&cr, &full));
    }
}
