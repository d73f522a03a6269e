//! Step 3: server-side apply of every desired child with one field manager, concurrently
//! (bounded), Secrets and config before the workloads that mount them. A child the watches show
//! as already wanted is not sent ([`super::cache`]). Returns the objects as the API server
//! answered (or the watch last saw them), status included, so the status step needs no second
//! read.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::cache::{Children, difference, stamped};
use crate::desired::{Applied, Desired};
use crate::error::{Error, request};
use crate::kinds::{Kind, Owned};
use crate::meta::FIELD_MANAGER;

/// Requests in flight per kind at most (a reconcile applies about a dozen objects).
pub const CONCURRENCY: usize = 4;

async fn apply_one<K: Owned>(api: &Api<K>, ns: &str, obj: &K) -> Result<K, Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    // An apply that changes nothing is a no-op in the apiserver: no write, no event, no new
    // resourceVersion. `force` takes fields over from other managers (e.g. kubectl edits).
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| Error::Apply(request(format!("applying {} {ns}/{name}", K::kind(&())), e)))
}

/// The child as the watch last saw it, when it already is `want`; else why it is applied.
fn already_wanted<K: Owned>(seen: &Children, ns: &str, want: &K) -> Option<Arc<K>> {
    let name = want.meta().name.as_deref().unwrap_or_default();
    let live = seen.get::<K>(ns, name)?;
    match difference(live.as_ref(), want) {
        None => Some(live),
        Some(why) => {
            tracing::debug!(
                kind = K::kind(&()).as_ref(),
                name,
                differs = why,
                "applying"
            );
            None
        }
    }
}

/// How many children of each kind were left as they were (not sent).
pub type Skipped = Vec<(Kind, u64)>;

/// Apply all objects of one kind, except those `seen` shows as they are wanted; what was
/// applied (or left as it was), how many were left, and the first failure.
async fn apply_kind<K: Owned>(
    client: &Client,
    ns: &str,
    objs: &[K],
    seen: &Children,
) -> (Vec<K>, (Kind, u64), Option<Error>) {
    let api = Api::<K>::namespaced(client.clone(), ns);
    // Each future owns what it uses: futures borrowing from the closure's argument are not
    // `Send` for every lifetime, which the controller's reconcile future must be.
    let work: Vec<(K, Option<Arc<K>>)> = objs
        .iter()
        .map(|obj| {
            let want = stamped(obj);
            let live = already_wanted(seen, ns, &want);
            (want, live)
        })
        .collect();
    let skipped = work.iter().filter(|(_, live)| live.is_some()).count() as u64;
    let results: Vec<Result<K, Error>> = futures::stream::iter(work)
        .map(|(want, live)| {
            let (api, ns) = (api.clone(), ns.to_string());
            async move {
                match live {
                    Some(live) => Ok(K::clone(&live)),
                    None => apply_one(&api, &ns, &want).await,
                }
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut applied = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(o) => applied.push(o),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    (applied, (K::KIND, skipped), failure)
}

/// Apply everything `desired` holds. On failure, what was applied so far and the first error;
/// the workloads are not applied when their config failed (their pods would not start). Also
/// how many children were left as they were.
pub async fn apply(
    client: &Client,
    ns: &str,
    desired: &Desired,
    seen: &Children,
) -> (Applied, Skipped, Option<Error>) {
    // Destructured without `..`: a new kind in `Desired` is a compile error until applied here.
    let Desired {
        secrets,
        config_maps,
        services,
        network_policies,
        stateful_sets,
        deployments,
        daemon_sets,
        hpas,
        pdbs,
    } = desired;
    let mut applied = Applied::default();
    let (s, c, v, n) = tokio::join!(
        apply_kind(client, ns, secrets, seen),
        apply_kind(client, ns, config_maps, seen),
        apply_kind(client, ns, services, seen),
        apply_kind(client, ns, network_policies, seen),
    );
    (applied.secrets, applied.config_maps) = (s.0, c.0);
    (applied.services, applied.network_policies) = (v.0, n.0);
    let mut skipped = vec![s.1, c.1, v.1, n.1];
    if let Some(first) = [s.2, c.2, v.2, n.2].into_iter().flatten().next() {
        return (applied, skipped, Some(first));
    }
    let (st, d, ds, h, p) = tokio::join!(
        apply_kind(client, ns, stateful_sets, seen),
        apply_kind(client, ns, deployments, seen),
        apply_kind(client, ns, daemon_sets, seen),
        apply_kind(client, ns, hpas, seen),
        apply_kind(client, ns, pdbs, seen),
    );
    (applied.stateful_sets, applied.deployments) = (st.0, d.0);
    (applied.daemon_sets, applied.hpas, applied.pdbs) = (ds.0, h.0, p.0);
    skipped.extend([st.1, d.1, ds.1, h.1, p.1]);
    let failure = [st.2, d.2, ds.2, h.2, p.2].into_iter().flatten().next();
    (applied, skipped, failure)
}
