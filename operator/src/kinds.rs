//! The one list of kinds the operator owns. Apply, prune, the watches and the RBAC rules all
//! follow from it: adding a kind is a variant here, its `Owned` impl and a field of `Desired`;
//! forgetting a piece is a compile error (exhaustive matches, the destructured `Desired`) or a
//! failing test (the chart's RBAC is checked against [`Kind::rbac_verbs`]).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind of child object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// v1 Secret (generated TURN, token and Redis URL secrets).
    Secret,
    /// v1 ConfigMap (ICE servers, TURN node addresses).
    ConfigMap,
    /// v1 Service (signaling, Redis).
    Service,
    /// networking.k8s.io/v1 NetworkPolicy (only signaling reaches Redis).
    NetworkPolicy,
    /// apps/v1 StatefulSet (managed Redis).
    StatefulSet,
    /// apps/v1 Deployment (signaling).
    Deployment,
    /// apps/v1 DaemonSet (TURN).
    DaemonSet,
    /// autoscaling/v2 HorizontalPodAutoscaler (signaling).
    HorizontalPodAutoscaler,
    /// policy/v1 PodDisruptionBudget (signaling).
    PodDisruptionBudget,
}

/// A Rust type of an owned kind, with what the generic steps need.
pub trait Owned:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Which kind this is.
    const KIND: Kind;
}

/// Something done once per owned kind, generic over its Rust type.
pub trait PerKind {
    /// What one kind yields.
    type Out;
    /// Do it for kind `K`.
    fn visit<K: Owned>(&mut self) -> Self::Out;
}

macro_rules! owned {
    ($($t:ident),*) => { $(impl Owned for $t { const KIND: Kind = Kind::$t; })* };
}
owned!(
    Secret,
    ConfigMap,
    Service,
    NetworkPolicy,
    StatefulSet,
    Deployment,
    DaemonSet,
    HorizontalPodAutoscaler,
    PodDisruptionBudget
);

impl Kind {
    /// Every owned kind.
    pub const ALL: [Kind; 9] = [
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Service,
        Kind::NetworkPolicy,
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
    ];

    /// Run `f` with the Rust type of this kind.
    pub fn visit<F: PerKind>(self, f: &mut F) -> F::Out {
        match self {
            Kind::Secret => f.visit::<Secret>(),
            Kind::ConfigMap => f.visit::<ConfigMap>(),
            Kind::Service => f.visit::<Service>(),
            Kind::NetworkPolicy => f.visit::<NetworkPolicy>(),
            Kind::StatefulSet => f.visit::<StatefulSet>(),
            Kind::Deployment => f.visit::<Deployment>(),
            Kind::DaemonSet => f.visit::<DaemonSet>(),
            Kind::HorizontalPodAutoscaler => f.visit::<HorizontalPodAutoscaler>(),
            Kind::PodDisruptionBudget => f.visit::<PodDisruptionBudget>(),
        }
    }

    /// Whether the spec can stop wanting it. The signaling Deployment is always wanted: it is
    /// never pruned (only garbage-collected with its OtterDeployment), so no `delete` on it.
    pub fn prunable(self) -> bool {
        self != Kind::Deployment
    }

    /// The API kind, e.g. `Deployment`.
    pub fn api_kind(self) -> String {
        struct Name;
        impl PerKind for Name {
            type Out = String;
            fn visit<K: Owned>(&mut self) -> String {
                K::kind(&()).into_owned()
            }
        }
        self.visit(&mut Name)
    }

    /// API group and plural resource name, for RBAC.
    pub fn resource(self) -> (String, String) {
        struct Names;
        impl PerKind for Names {
            type Out = (String, String);
            fn visit<K: Owned>(&mut self) -> (String, String) {
                (K::group(&()).into_owned(), K::plural(&()).into_owned())
            }
        }
        self.visit(&mut Names)
    }

    /// The verbs the operator needs on this kind: `list`/`watch` for the watch (and pruning by
    /// label), `create`/`patch` for server-side apply (a create by apply is authorised as
    /// `create`), `delete` when prunable, `get` where it reads one by name (Secrets it keeps).
    pub fn rbac_verbs(self) -> Vec<&'static str> {
        let mut verbs = Vec::new();
        if self == Kind::Secret {
            verbs.push("get");
        }
        verbs.extend(["list", "watch", "create", "patch"]);
        if self.prunable() {
            verbs.push("delete");
        }
        verbs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_holds_every_kind_once_and_visit_reaches_its_type() {
        struct KindOf;
        impl PerKind for KindOf {
            type Out = Kind;
            fn visit<K: Owned>(&mut self) -> Kind {
                K::KIND
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for kind in Kind::ALL {
            assert_eq!(kind.visit(&mut KindOf), kind);
            assert!(seen.insert(kind), "{kind:?} twice in Kind::ALL");
        }
    }

    #[test]
    fn only_the_deployment_is_never_pruned() {
        let kept: Vec<Kind> = Kind::ALL.into_iter().filter(|k| !k.prunable()).collect();
        assert_eq!(kept, vec![Kind::Deployment]);
        assert_eq!(
            Kind::HorizontalPodAutoscaler.resource(),
            ("autoscaling".into(), "horizontalpodautoscalers".into())
        );
        assert_eq!(Kind::Secret.resource(), (String::new(), "secrets".into()));
    }
}
