//! Step 3: server-side apply of every desired child with one field manager, concurrently
//! (bounded), Secrets and config before the workloads that mount them. Returns the objects as
//! the API server answered, status included, so the status step needs no second read.

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::desired::{Applied, Desired};
use crate::error::{Error, request};
use crate::kinds::Owned;
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

/// Apply all objects of one kind; what was applied, and the first failure.
async fn apply_kind<K: Owned>(client: &Client, ns: &str, objs: &[K]) -> (Vec<K>, Option<Error>) {
    let api = Api::<K>::namespaced(client.clone(), ns);
    // Each future owns what it uses: futures borrowing from the closure's argument are not
    // `Send` for every lifetime, which the controller's reconcile future must be.
    let results: Vec<Result<K, Error>> = futures::stream::iter(objs.to_vec())
        .map(|obj| {
            let (api, ns) = (api.clone(), ns.to_string());
            async move { apply_one(&api, &ns, &obj).await }
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
    (applied, failure)
}

/// Apply everything `desired` holds. On failure, what was applied so far and the first error;
/// the workloads are not applied when their config failed (their pods would not start).
pub async fn apply(client: &Client, ns: &str, desired: &Desired) -> (Applied, Option<Error>) {
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
    let mut errors = Vec::new();
    let (s, c, v, n) = tokio::join!(
        apply_kind(client, ns, secrets),
        apply_kind(client, ns, config_maps),
        apply_kind(client, ns, services),
        apply_kind(client, ns, network_policies),
    );
    (applied.secrets, applied.config_maps) = (s.0, c.0);
    (applied.services, applied.network_policies) = (v.0, n.0);
    errors.extend([s.1, c.1, v.1, n.1].into_iter().flatten());
    if let Some(first) = errors.into_iter().next() {
        return (applied, Some(first));
    }
    let (st, d, ds, h, p) = tokio::join!(
        apply_kind(client, ns, stateful_sets),
        apply_kind(client, ns, deployments),
        apply_kind(client, ns, daemon_sets),
        apply_kind(client, ns, hpas),
        apply_kind(client, ns, pdbs),
    );
    (applied.stateful_sets, applied.deployments) = (st.0, d.0);
    (applied.daemon_sets, applied.hpas, applied.pdbs) = (ds.0, h.0, p.0);
    let failure = [st.1, d.1, ds.1, h.1, p.1].into_iter().flatten().next();
    (applied, failure)
}
