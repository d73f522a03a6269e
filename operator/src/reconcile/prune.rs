//! Step 4: delete children the spec no longer wants. Found by label per owned kind (not by a
//! hand-kept list of names), and deleted only when this resource owns them: the owner UID is
//! checked on the listed object and the delete is conditional on that object's UID.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::build::secrets::user_secret_names;
use crate::crd::OtterDeployment;
use crate::desired::Desired;
use crate::error::{Error, request};
use crate::kinds::{Kind, Owned, PerKind};
use crate::meta::FIELD_MANAGER;
use crate::reconcile::status::{DEGRADED, Reason, find_condition};

/// Whether this reconcile must look for orphans. The names of the children follow from the spec
/// alone, so children can only become unwanted when the spec changes: when the generation moved
/// past the one the status last saw, or while the last one failed (the status then already
/// carries the new generation). A new resource (generation 1, no status) owns nothing yet.
pub fn needed(cr: &OtterDeployment) -> bool {
    let failed = cr
        .status
        .as_ref()
        .and_then(|s| find_condition(s, DEGRADED))
        .is_some_and(|c| c.status == "True" && c.reason == Reason::ApplyFailed.as_str());
    if failed {
        return true;
    }
    let seen = cr.status.as_ref().and_then(|s| s.observed_generation);
    match (seen, cr.metadata.generation) {
        (None, Some(1)) => false,
        (seen, generation) => seen != generation,
    }
}

/// The label selector of every child of `cr`.
pub fn children_selector(cr: &OtterDeployment) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/managed-by={FIELD_MANAGER}",
        cr.name_any()
    )
}

/// Of the listed children of one kind, those to delete: owned by `uid`, not wanted, and not a
/// Secret the user names (even one with a generated name). `(name, uid)` pairs.
pub fn doomed(
    kind: Kind,
    listed: &[ObjectMeta],
    wanted: &[String],
    owner_uid: &str,
    user_secrets: &[String],
) -> Vec<(String, String)> {
    listed
        .iter()
        .filter(|m| {
            m.owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner_uid)
        })
        .filter_map(|m| Some((m.name.clone()?, m.uid.clone()?)))
        .filter(|(name, _)| !wanted.contains(name))
        .filter(|(name, _)| !(kind == Kind::Secret && user_secrets.contains(name)))
        .collect()
}

struct PruneKind<'a> {
    client: &'a Client,
    cr: &'a OtterDeployment,
    ns: &'a str,
    desired: &'a Desired,
}

impl PerKind for PruneKind<'_> {
    type Out = futures::future::BoxFuture<'static, Result<Vec<String>, Error>>;

    fn visit<K: Owned>(&mut self) -> Self::Out {
        let api = Api::<K>::namespaced(self.client.clone(), self.ns);
        let ns = self.ns.to_string();
        let selector = children_selector(self.cr);
        let wanted = self.desired.names_of(K::KIND);
        let owner = self.cr.uid().unwrap_or_default();
        let user_secrets = user_secret_names(self.cr);
        Box::pin(async move {
            let kind = K::kind(&());
            let listed = api
                .list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::Prune(request(format!("listing {kind}s in {ns}"), e)))?;
            let metas: Vec<ObjectMeta> = listed.items.into_iter().map(|o| o.metadata).collect();
            let mut deleted = Vec::new();
            for (name, uid) in doomed(K::KIND, &metas, &wanted, &owner, &user_secrets) {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => deleted.push(format!("{kind} {name}")),
                    // Gone already, or replaced by an object we did not check: leave it.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        let action = format!("deleting {kind} {ns}/{name}");
                        return Err(Error::Prune(request(action, e)));
                    }
                }
            }
            Ok(deleted)
        })
    }
}

/// Delete the unwanted children of every prunable kind; what was deleted (`Kind name`).
pub async fn prune(
    client: &Client,
    cr: &OtterDeployment,
    ns: &str,
    desired: &Desired,
) -> Result<Vec<String>, Error> {
    let mut visitor = PruneKind {
        client,
        cr,
        ns,
        desired,
    };
    let lists = Kind::ALL
        .into_iter()
        .filter(|k| k.prunable())
        .map(|k| k.visit(&mut visitor));
    let results = futures::future::join_all(lists).await;
    let mut deleted = Vec::new();
    for r in results {
        deleted.extend(r?);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{OtterDeploymentStatus, SecretKeyRef};
    use crate::testing::cr;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(name: &str, owner: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            owner_references: Some(vec![OwnerReference {
                uid: owner.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_owned_unwanted_children_are_doomed() {
        let listed = [
            meta("demo-turn", "me"),
            meta("demo-signaling", "me"),
            meta("demo-redis", "someone-else"),
        ];
        let wanted = vec!["demo-signaling".to_string()];
        assert_eq!(
            doomed(Kind::ConfigMap, &listed, &wanted, "me", &[]),
            vec![("demo-turn".to_string(), "uid-demo-turn".to_string())]
        );
    }

    #[test]
    fn a_user_secret_with_a_generated_name_is_never_doomed() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "demo-turn-secret".into(),
            key: None,
        });
        let listed = [meta("demo-turn-secret", "me")];
        let users = user_secret_names(&cr);
        assert!(doomed(Kind::Secret, &listed, &[], "me", &users).is_empty());
        assert_eq!(doomed(Kind::ConfigMap, &listed, &[], "me", &users).len(), 1);
    }

    #[test]
    fn pruning_runs_only_when_the_spec_moved() {
        let mut cr = cr();
        cr.metadata.generation = Some(1);
        assert!(!needed(&cr), "new resource owns nothing yet");
        cr.metadata.generation = Some(2);
        assert!(needed(&cr), "changed before any status was written");
        cr.status = Some(OtterDeploymentStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        assert!(!needed(&cr), "at rest");
        cr.metadata.generation = Some(3);
        assert!(needed(&cr));
    }
}
