//! The reconcile of one `OtterDeployment`, read as its pipeline:
//!
//! 1. [`observe`]: the TURN nodes (from the watches' stores, [`cache::Turn`]) and the Secrets
//!    (read by name) into `Observed`;
//! 2. build: the pure builders make the desired children (`Desired::build`);
//! 3. [`apply`]: server-side apply of every child, concurrently, keeping what was applied; a
//!    child the watches already show as wanted is not sent ([`cache`]);
//! 4. [`prune`]: delete owned children the spec no longer wants;
//! 5. [`status`]: conditions from the applied objects and this reconcile's problems (including a
//!    TURN port another OtterDeployment holds, [`ports`]), written only when they changed, with
//!    [`events`] on transitions.
//!
//! [`watch`] wires the controller: the resource, every owned kind, the Nodes, the TURN pods, the
//! user's Secrets.

pub mod apply;
pub mod cache;
pub mod drain;
pub mod events;
pub mod observe;
pub mod ports;
pub mod prune;
pub mod rotation;
pub mod status;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::build::secrets::user_secret_problems;
use crate::build::turn_keys::{TurnKeys, previous_expires_in, turn_keys_source};
use crate::crd::{OtterDeployment, OtterDeploymentStatus};
use crate::desired::{Applied, Desired};
use crate::error::{Error, request};
use crate::meta::{FIELD_MANAGER, namespace};
use crate::metrics::{Metrics, turn_nodes_serving};
use crate::observed::{Images, Observed};
use crate::probe::{self, Prober, UdpProber};
use status::{Problems, READY, compute_status, find_condition};

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
    /// How often a Ready resource is reconciled though nothing changed: a safety net only, since
    /// every input is watched.
    pub resync: Duration,
    /// How often a Ready resource whose TURN relays are probed is reconciled to probe again.
    pub probe_interval: Duration,
    /// OtterDeployments reconciled at once at most (0: no bound).
    pub concurrency: u16,
    failures: Mutex<HashMap<String, u32>>,
    /// The controller's cache of every OtterDeployment (replaced each leadership term).
    peers: RwLock<Option<Store<OtterDeployment>>>,
    /// Allocates on the published TURN addresses (`probe::UdpProber`; tests answer for it).
    prober: Arc<dyn Prober>,
    /// The children as the owned-kind watches see them (replaced each leadership term).
    children: RwLock<Arc<cache::Children>>,
    /// The Nodes and TURN pods as their watches see them (replaced each leadership term).
    turn: RwLock<Option<cache::Turn>>,
}

/// Reconciles at once by default: enough to keep a busy API server fed, few enough that a burst
/// of new OtterDeployments does not queue thousands of requests in it (each reconcile sends a
/// dozen at once), where they would wait out the request timeout.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// How often the TURN relays of a Ready resource are probed by default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(300);

impl Context {
    /// A context reporting Events as `otter-operator` from `instance`.
    pub fn new(
        client: Client,
        images: Images,
        metrics: Metrics,
        instance: String,
        resync: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            images,
            metrics,
            resync,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            failures: Mutex::new(HashMap::new()),
            peers: RwLock::new(None),
            prober: Arc::new(UdpProber),
            children: RwLock::default(),
            turn: RwLock::default(),
        }
    }

    /// Reconcile at most `n` OtterDeployments at once (0: no bound).
    pub fn with_concurrency(mut self, n: u16) -> Self {
        self.concurrency = n;
        self
    }

    /// Probe a Ready resource's TURN relays again every `every`.
    pub fn with_probe_interval(mut self, every: Duration) -> Self {
        self.probe_interval = every;
        self
    }

    /// Probe TURN with `prober` instead of real Allocates over UDP.
    pub fn with_prober(mut self, prober: Arc<dyn Prober>) -> Self {
        self.prober = prober;
        self
    }

    /// Use `store` to find TURN port clashes between OtterDeployments.
    pub fn set_peers(&self, store: Store<OtterDeployment>) {
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        *peers = Some(store);
    }

    /// Use `children` as the owned-kind watches' cache.
    pub fn set_children(&self, children: cache::Children) {
        let mut held = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *held = Arc::new(children);
    }

    fn children(&self) -> Arc<cache::Children> {
        let held = self.children.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&held)
    }

    /// Read the TURN Nodes and pods from `turn`.
    pub fn set_turn(&self, turn: cache::Turn) {
        let mut held = self.turn.write().unwrap_or_else(PoisonError::into_inner);
        *held = Some(turn);
    }

    fn turn(&self) -> Option<cache::Turn> {
        let held = self.turn.read().unwrap_or_else(PoisonError::into_inner);
        held.clone()
    }

    fn port_clash(&self, cr: &OtterDeployment, obs: &Observed) -> Option<ports::PortClash> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        let all = peers.as_ref()?.state();
        ports::port_holder(cr, all.iter().map(AsRef::as_ref), &obs.turn_neighbours)
    }

    fn failures(&self, key: &str, bump: bool) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
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

fn key(cr: &OtterDeployment) -> String {
    format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any())
}

/// Reconcile one OtterDeployment. Every log line inside carries the resource it is about.
#[tracing::instrument(skip_all, fields(
    namespace = cr.metadata.namespace.as_deref().unwrap_or_default(),
    name = cr.metadata.name.as_deref().unwrap_or_default(),
    generation = cr.metadata.generation.unwrap_or_default(),
))]
pub async fn reconcile(cr: Arc<OtterDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&cr, &ctx).await;
    ctx.metrics
        .observe(start.elapsed(), result.as_ref().err().map(Error::step));
    match &result {
        Ok(_) => {
            ctx.failures(&key(&cr), false);
        }
        Err(e) => tracing::warn!(error = %e, step = e.step(), "reconcile failed"),
    }
    result
}

async fn reconcile_inner(cr: &OtterDeployment, ctx: &Context) -> Result<Action, Error> {
    if cr.metadata.deletion_timestamp.is_some() {
        let ns = cr.namespace().unwrap_or_default();
        ctx.metrics.set_turn_reachable(&ns, &cr.name_any(), None);
        ctx.metrics.set_turn_draining(&ns, &cr.name_any(), &[]);
        // Owner references let the garbage collector remove every child.
        return Ok(Action::await_change());
    }
    let ns = namespace(cr)?;
    let turn = ctx.turn();
    let mut obs = observe::observe(&ctx.client, &ctx.images, turn.as_ref(), cr, &ns).await?;
    obs.turn_next_confirmed = rotation::confirm(cr, &ctx.prober, &obs).await;
    drain::count_allocations(cr, &mut obs.draining_turn_nodes).await;
    let (applied, failure) = match Desired::build(cr, &obs) {
        Err(e) => (Applied::default(), Some(Error::from(e))),
        Ok(desired) => converge(cr, ctx, &ns, &obs, &desired).await,
    };
    let problems = Problems {
        apply_error: failure.as_ref().map(ToString::to_string),
        secret_problems: user_secret_problems(cr, &obs),
        port_clash: ctx.port_clash(cr, &obs),
        turn_probes: probe_turn(cr, ctx, &obs, &applied).await,
    };
    let status = compute_status(cr, &obs, &applied, &problems, Timestamp::now());
    let serving = turn_nodes_serving(cr, obs.turn_nodes.len(), &status);
    ctx.metrics.set_turn_reachable(&ns, &cr.name_any(), serving);
    ctx.metrics
        .set_turn_draining(&ns, &cr.name_any(), &status.turn_draining);
    write_status(cr, ctx, &ns, &status).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Action::requeue(next_reconcile(
        cr, ctx, &obs, &applied, &status,
    )))
}

/// When to look again: soon while a TURN secret rotation waits for the TURN pods or a drain's
/// count moves, when the previous TURN secret expires (to remove it), in 30 s when not Ready.
/// When Ready, only to probe TURN again, else after the resync period: every input is watched,
/// so a resource at rest is not reconciled (a thousand resources at a 5 min resync were 200
/// reconciles a minute at rest, each reading its Secrets).
fn next_reconcile(
    cr: &OtterDeployment,
    ctx: &Context,
    obs: &Observed,
    applied: &Applied,
    status: &OtterDeploymentStatus,
) -> Duration {
    let ready = find_condition(status, READY).is_some_and(|c| c.status == "True");
    let keys = keys_in_use(cr, obs, applied);
    let every = if keys.as_ref().is_some_and(TurnKeys::pending) || !status.turn_draining.is_empty()
    {
        rotation::PENDING_REQUEUE
    } else if ready && probes(cr, obs) {
        ctx.probe_interval.min(ctx.resync)
    } else if ready {
        ctx.resync
    } else {
        Duration::from_secs(30)
    };
    // Plus a second, so the expiry has passed.
    let expiry = keys
        .and_then(|k| previous_expires_in(&k, obs.unix_now))
        .map(|s| Duration::from_secs(s.saturating_add(1)));
    expiry.map_or(every, |e| e.min(every))
}

/// Allocate on every published TURN address once the TURN pods have been ready (then on every
/// reconcile, so a pod that goes away shows), with a credential from the TURN Secret as it is.
async fn probe_turn(
    cr: &OtterDeployment,
    ctx: &Context,
    obs: &Observed,
    applied: &Applied,
) -> Option<Vec<probe::NodeProbe>> {
    let turn = &cr.spec.turn;
    let probed_before = cr
        .status
        .as_ref()
        .is_some_and(|s| !s.turn_reachability.is_empty());
    if !probes(cr, obs) {
        return None;
    }
    if !(probed_before || status::turn_rolled_out(cr, applied)) {
        return None;
    }
    // The value signaling mints with: during a rotation the TURN Secret already holds the new
    // one, which the TURN pods may not accept yet.
    let secret = keys_in_use(cr, obs, applied)?.current;
    let port = u16::try_from(turn.port).ok()?;
    Some(probe::probe_nodes(&ctx.prober, &obs.turn_nodes, port, &secret).await)
}

/// Whether this resource's TURN relays are probed: TURN and its probe on, and nodes to probe.
fn probes(cr: &OtterDeployment, obs: &Observed) -> bool {
    let turn = &cr.spec.turn;
    turn.enabled && turn.probe.enabled && !obs.turn_nodes.is_empty()
}

/// The TURN keys as this reconcile applied them (else as observed).
fn keys_in_use(cr: &OtterDeployment, obs: &Observed, applied: &Applied) -> Option<TurnKeys> {
    let name = turn_keys_source(cr)?.name;
    applied
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
        .or_else(|| obs.secrets.get(&name))
        .and_then(TurnKeys::from_secret)
}

/// Apply, tell about generated Secrets, prune. What was applied, and the first failure.
async fn converge(
    cr: &OtterDeployment,
    ctx: &Context,
    ns: &str,
    obs: &Observed,
    desired: &Desired,
) -> (Applied, Option<Error>) {
    let (applied, skipped, failure) = apply::apply(&ctx.client, ns, desired, &ctx.children()).await;
    ctx.metrics.skipped(&skipped);
    if failure.is_some() {
        return (applied, failure);
    }
    let generated: Vec<String> = desired
        .secrets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .filter(|n| !obs.secrets.contains_key(n))
        .collect();
    if let Some(e) = events::secrets_generated(&generated) {
        events::publish(&ctx.recorder, cr, e).await;
    }
    if !prune::needed(cr) {
        return (applied, None);
    }
    match prune::prune(&ctx.client, cr, ns, desired).await {
        Ok(deleted) => {
            ctx.metrics.pruned.inc_by(deleted.len() as u64);
            if let Some(e) = events::pruned(&deleted) {
                events::publish(&ctx.recorder, cr, e).await;
            }
            (applied, None)
        }
        Err(e) => (applied, Some(e)),
    }
}

/// Write the status when it differs from what the resource has, and tell what changed.
async fn write_status(
    cr: &OtterDeployment,
    ctx: &Context,
    ns: &str,
    status: &OtterDeploymentStatus,
) -> Result<(), Error> {
    if cr.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = cr.name_any();
    let patch = serde_json::json!({
        "apiVersion": OtterDeployment::api_version(&()),
        "kind": OtterDeployment::kind(&()),
        "status": status,
    });
    Api::<OtterDeployment>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::Status(request(format!("writing status of {ns}/{name}"), e)))?;
    ctx.metrics.status_writes.inc();
    let old = cr.status.as_ref();
    let drains = drain::draining_events(old, status);
    for event in events::status_events(old, status).into_iter().chain(drains) {
        events::publish(&ctx.recorder, cr, event).await;
    }
    Ok(())
}

/// Requeue a failed reconcile with exponential backoff.
pub fn error_policy(cr: Arc<OtterDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.failures(&key(&cr), true);
    let delay = backoff(attempt);
    tracing::debug!(resource = %key(&cr), error = %err, attempt, retry_in = ?delay, "retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
