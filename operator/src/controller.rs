//! The controller: observe, build, apply (server-side, one field manager), prune, write status
//! only when it changed, tell what happened with Events.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::secrets::{generated_secret_names, user_secret_names, user_secret_problems};
use crate::crd::{OtterDeployment, OtterDeploymentStatus};
use crate::desired::{ChildKind, Desired};
use crate::error::Error;
use crate::meta::{FIELD_MANAGER, child_name, namespace};
use crate::metrics::Metrics;
use crate::observed::{FreshSecrets, Images, Observed, TurnNode};
use crate::status::{DEGRADED, Problems, READY, compute_status, find_condition};

/// Label every child carries; owned-object watches select on it.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=otter-operator";

/// Shared state of the reconciler.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Default images.
    pub images: Images,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// How often a Ready resource is re-checked (picks up drift and user Secret changes).
    pub resync: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context reporting Events as `otter-operator` from `instance`.
    pub fn new(
        client: Client,
        images: Images,
        metrics: Metrics,
        instance: String,
        resync: Duration,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: Some(instance),
            },
        );
        Self {
            client,
            images,
            recorder,
            metrics,
            resync,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self, key: &str, bump: bool) -> u32 {
        let mut map = match self.failures.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if bump {
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            map.remove(key);
            0
        }
    }
}

/// Retry delay after `attempt` consecutive failures: 5s doubling up to 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(6);
    Duration::from_secs(5u64.saturating_mul(1 << exp)).min(Duration::from_secs(300))
}

/// Whether a Node event concerns this resource: it matches the TURN selector now, or it is one
/// the status still publishes (so a node that lost its label or went away is dropped at once).
pub fn node_concerns(cr: &OtterDeployment, node: &Node) -> bool {
    if !cr.spec.turn.enabled {
        return false;
    }
    let labels = node.labels();
    let matches = cr
        .spec
        .turn
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    if matches {
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

/// `k=v,k2=v2` for a label map.
pub fn selector_string(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn get_opt<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {} {ns}/{name}", K::kind(&())), e))
}

/// Read what the builders need.
async fn observe(cr: &OtterDeployment, ctx: &Context) -> Result<Observed, Error> {
    let ns = namespace(cr)?;
    let client = &ctx.client;
    let mut turn_nodes = Vec::new();
    if cr.spec.turn.enabled {
        let params = ListParams::default().labels(&selector_string(&cr.spec.turn.node_selector));
        let nodes = Api::<Node>::all(client.clone())
            .list(&params)
            .await
            .map_err(|e| Error::kube("listing TURN nodes", e))?;
        turn_nodes = nodes.items.iter().filter_map(TurnNode::from_node).collect();
        turn_nodes.sort();
    }
    let mut secrets = std::collections::BTreeMap::new();
    let mut names = generated_secret_names(cr);
    names.extend(user_secret_names(cr));
    for name in names {
        if let Some(s) = get_opt::<Secret>(client, &ns, &name).await? {
            secrets.insert(name, s);
        }
    }
    Ok(Observed {
        images: ctx.images.clone(),
        turn_nodes,
        secrets,
        fresh: FreshSecrets::generate(),
        signaling_service: get_opt(client, &ns, &child_name(cr, "signaling")).await?,
        signaling_deployment: get_opt(client, &ns, &child_name(cr, "signaling")).await?,
        turn_daemonset: get_opt(client, &ns, &child_name(cr, "turn")).await?,
        redis_statefulset: get_opt(client, &ns, &child_name(cr, "redis")).await?,
    })
}

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    // An apply that changes nothing is a no-op in the apiserver: no write, no event, no new
    // resourceVersion. `force` takes fields over from other managers (e.g. kubectl edits).
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(format!("applying {} {ns}/{name}", K::kind(&())), e))
}

async fn apply_all(client: &Client, ns: &str, d: &Desired) -> Result<(), Error> {
    for o in &d.secrets {
        apply(client, ns, o).await?;
    }
    for o in &d.config_maps {
        apply(client, ns, o).await?;
    }
    for o in &d.services {
        apply(client, ns, o).await?;
    }
    for o in &d.network_policies {
        apply(client, ns, o).await?;
    }
    for o in &d.stateful_sets {
        apply(client, ns, o).await?;
    }
    for o in &d.deployments {
        apply(client, ns, o).await?;
    }
    for o in &d.daemon_sets {
        apply(client, ns, o).await?;
    }
    for o in &d.hpas {
        apply(client, ns, o).await?;
    }
    for o in &d.pdbs {
        apply(client, ns, o).await?;
    }
    Ok(())
}

/// Delete `name` if this resource owns it. Returns whether something was deleted.
async fn delete_owned<K>(
    client: &Client,
    ns: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let what = || format!("{} {ns}/{name}", K::kind(&()));
    let Some(meta) = api
        .get_metadata_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading {}", what()), e))?
    else {
        return Ok(false);
    };
    if !meta.owner_references().iter().any(|o| o.uid == owner_uid) {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(format!("deleting {}", what()), e)),
    }
}

async fn prune(
    client: &Client,
    ns: &str,
    uid: &str,
    unwanted: &[(ChildKind, String)],
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for (kind, name) in unwanted {
        let gone = match kind {
            ChildKind::Secret => delete_owned::<Secret>(client, ns, name, uid).await?,
            ChildKind::ConfigMap => delete_owned::<ConfigMap>(client, ns, name, uid).await?,
            ChildKind::Service => delete_owned::<Service>(client, ns, name, uid).await?,
            ChildKind::NetworkPolicy => {
                delete_owned::<NetworkPolicy>(client, ns, name, uid).await?
            }
            ChildKind::StatefulSet => delete_owned::<StatefulSet>(client, ns, name, uid).await?,
            ChildKind::DaemonSet => delete_owned::<DaemonSet>(client, ns, name, uid).await?,
            ChildKind::HorizontalPodAutoscaler => {
                delete_owned::<HorizontalPodAutoscaler>(client, ns, name, uid).await?
            }
            ChildKind::PodDisruptionBudget => {
                delete_owned::<PodDisruptionBudget>(client, ns, name, uid).await?
            }
        };
        if gone {
            deleted.push(format!("{kind:?} {name}"));
        }
    }
    Ok(deleted)
}

/// Events worth telling about a status change: Ready flips and new Degraded reasons.
pub fn status_events(
    old: Option<&OtterDeploymentStatus>,
    new: &OtterDeploymentStatus,
) -> Vec<Event> {
    let mut events = Vec::new();
    let get =
        |s: Option<&OtterDeploymentStatus>, t: &str| s.and_then(|s| find_condition(s, t)).cloned();
    let (old_ready, new_ready) = (get(old, READY), get(Some(new), READY));
    if let Some(r) = &new_ready {
        let changed =
            old_ready.as_ref().map(|o| (&o.status, &o.reason)) != Some((&r.status, &r.reason));
        if changed {
            let ready = r.status == "True";
            // Waiting for a rollout is normal; anything else that is not ready is a warning.
            let normal = ready || r.reason == "Creating" || r.reason == "RollingOut";
            events.push(Event {
                type_: if normal {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: if ready {
                    "Ready".to_string()
                } else {
                    r.reason.clone()
                },
                note: Some(r.message.chars().take(1000).collect()),
                action: "Reconcile".to_string(),
                secondary: None,
            });
        }
    }
    let (old_deg, new_deg) = (get(old, DEGRADED), get(Some(new), DEGRADED));
    if let Some(d) = &new_deg {
        let changed =
            old_deg.as_ref().map(|o| (&o.status, &o.reason)) != Some((&d.status, &d.reason));
        // The Ready event above already carries the same reason when it flipped with it.
        let told = events.iter().any(|e| e.reason == d.reason);
        if changed && d.status == "True" && !told {
            events.push(Event {
                type_: EventType::Warning,
                reason: d.reason.clone(),
                note: Some(d.message.chars().take(1000).collect()),
                action: "Reconcile".to_string(),
                secondary: None,
            });
        }
    }
    events
}

async fn publish(ctx: &Context, cr: &OtterDeployment, event: Event) {
    if let Err(e) = ctx.recorder.publish(&event, &cr.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
    }
}

fn normal_event(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Build(_) => "build",
        Error::Kube { .. } => "kube",
        Error::Serialize(..) => "serialize",
    }
}

/// Reconcile one OtterDeployment.
pub async fn reconcile(cr: Arc<OtterDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&cr, &ctx).await;
    ctx.metrics
        .observe(start.elapsed(), result.as_ref().err().map(error_kind));
    if result.is_ok() {
        ctx.failures(&key(&cr), false);
    }
    result
}

fn key(cr: &OtterDeployment) -> String {
    format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any())
}

async fn reconcile_inner(cr: &OtterDeployment, ctx: &Context) -> Result<Action, Error> {
    if cr.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove every child.
        return Ok(Action::await_change());
    }
    let ns = namespace(cr)?;
    let name = cr.name_any();
    let uid = cr.uid().unwrap_or_default();
    let client = &ctx.client;
    let mut obs = observe(cr, ctx).await?;

    let mut problems = Problems {
        apply_error: None,
        secret_problems: user_secret_problems(cr, &obs),
    };
    let mut failure: Option<Error> = None;
    match Desired::build(cr, &obs) {
        Err(e) => {
            problems.apply_error = Some(format!("invalid spec: {e}"));
            failure = Some(e.into());
        }
        Ok(desired) => {
            if let Err(e) = apply_all(client, &ns, &desired).await {
                problems.apply_error = Some(e.to_string());
                failure = Some(e);
            } else {
                // Status must describe the workloads as just applied: read before the apply, a
                // spec change still shows the previous generation fully rolled out, which would
                // claim Ready for the new generation before its rollout started.
                obs.signaling_deployment =
                    get_opt(client, &ns, &child_name(cr, "signaling")).await?;
                obs.turn_daemonset = get_opt(client, &ns, &child_name(cr, "turn")).await?;
                obs.redis_statefulset = get_opt(client, &ns, &child_name(cr, "redis")).await?;
                // One Event per action: the recorder folds Events with the same reason into a
                // series and keeps only the first note.
                let generated: Vec<String> = desired
                    .secrets
                    .iter()
                    .filter_map(|s| s.metadata.name.clone())
                    .filter(|n| !obs.secrets.contains_key(n))
                    .collect();
                if !generated.is_empty() {
                    let note = format!(
                        "generated Secret(s) {} with fresh random values; they are kept from now on",
                        generated.join(", ")
                    );
                    publish(ctx, cr, normal_event("SecretGenerated", "Generate", note)).await;
                }
                match prune(client, &ns, &uid, &desired.unwanted(cr)).await {
                    Ok(deleted) => {
                        if !deleted.is_empty() {
                            ctx.metrics.pruned.inc_by(deleted.len() as u64);
                            let note = format!(
                                "deleted {}: the spec no longer needs them",
                                deleted.join(", ")
                            );
                            publish(ctx, cr, normal_event("Pruned", "Delete", note)).await;
                        }
                    }
                    Err(e) => {
                        problems.apply_error = Some(e.to_string());
                        failure = Some(e);
                    }
                }
            }
        }
    }

    let status = compute_status(cr, &obs, &problems, Timestamp::now());
    if cr.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": OtterDeployment::api_version(&()),
            "kind": OtterDeployment::kind(&()),
            "status": status,
        });
        Api::<OtterDeployment>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("writing status of {ns}/{name}"), e))?;
        ctx.metrics.status_writes.inc();
        for event in status_events(cr.status.as_ref(), &status) {
            publish(ctx, cr, event).await;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let ready = find_condition(&status, READY).is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if ready {
        ctx.resync
    } else {
        Duration::from_secs(30)
    }))
}

/// Requeue a failed reconcile with exponential backoff.
pub fn error_policy(cr: Arc<OtterDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.failures(&key(&cr), true);
    let delay = backoff(attempt);
    tracing::warn!(resource = %key(&cr), error = %err, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Run the controller until `shutdown` resolves. `namespace`: watch one namespace, else all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = || watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    let controller = Controller::new(
        scoped::<OtterDeployment>(&client, &namespace),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)));
    let store = controller.store();
    controller
        .owns(scoped::<Deployment>(&client, &namespace), owned())
        .owns(scoped::<DaemonSet>(&client, &namespace), owned())
        .owns(scoped::<StatefulSet>(&client, &namespace), owned())
        .owns(scoped::<Service>(&client, &namespace), owned())
        .owns(scoped::<ConfigMap>(&client, &namespace), owned())
        .owns(scoped::<Secret>(&client, &namespace), owned())
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |node: Node| {
                store
                    .state()
                    .into_iter()
                    .filter(|cr| node_concerns(cr, &node))
                    .map(|cr| ObjectRef::from_obj(&*cr))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(resource = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Problems;
    use crate::testing::{cr, node, observed};

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
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
    fn selector_string_joins_labels() {
        let cr = cr();
        assert_eq!(
            selector_string(&cr.spec.turn.node_selector),
            "otter.dev/turn=true"
        );
    }

    #[test]
    fn events_tell_ready_flips_and_new_degraded_reasons_once() {
        let cr = cr();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut degraded_obs = observed();
        degraded_obs.turn_nodes.clear();
        let degraded = compute_status(&cr, &degraded_obs, &Problems::default(), now);
        let events = status_events(None, &degraded);
        assert_eq!(events.len(), 1, "Ready=False carries the reason");
        assert_eq!(events[0].reason, "NoTurnNodes");
        assert_eq!(events[0].type_, EventType::Warning);
        assert!(
            status_events(Some(&degraded), &degraded).is_empty(),
            "no news, no event"
        );
        let creating = compute_status(&cr, &observed(), &Problems::default(), now);
        let events = status_events(Some(&degraded), &creating);
        assert_eq!(events[0].reason, "Creating");
        assert_eq!(
            events[0].type_,
            EventType::Normal,
            "waiting is not a warning"
        );
    }
}
