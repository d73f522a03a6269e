//! Names, labels, owner references and checksums shared by every builder.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::Resource;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::crd::OtterDeployment;
use crate::error::BuildError;

/// The single server-side-apply field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "otter-operator";
/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "otter";
/// Pod template annotation whose change rolls the pods.
pub const CHECKSUM_ANNOTATION: &str = "otter.dev/config-checksum";
/// Annotation on every child: a sum of the object as last applied (see `reconcile::cache`).
pub const APPLIED_ANNOTATION: &str = "otter.dev/applied";
/// Label naming the OtterDeployment a child belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The part of the backend an object belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Signaling Deployment, Service, ConfigMap, HPA, PDB.
    Signaling,
    /// coturn DaemonSet and its node-address ConfigMap.
    Turn,
    /// Managed Redis.
    Redis,
    /// Generated Secrets.
    Secrets,
}

impl Component {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signaling => "signaling",
            Self::Turn => "turn",
            Self::Redis => "redis",
            Self::Secrets => "secrets",
        }
    }
}

/// Child object names: `<cr-name>-<suffix>`.
pub fn child_name(cr: &OtterDeployment, suffix: &str) -> String {
    format!(
        "{}-{suffix}",
        cr.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The labels that select a component's pods (stable: selectors are immutable).
pub fn selector_labels(cr: &OtterDeployment, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (
            INSTANCE_LABEL.to_string(),
            cr.metadata.name.clone().unwrap_or_default(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// All labels of a child: the selector labels plus `managed-by`.
pub fn labels(cr: &OtterDeployment, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cr, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    labels
}

/// A label selector matching a component's pods.
pub fn label_selector(cr: &OtterDeployment, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(cr, component)),
        ..Default::default()
    }
}

/// The namespace of the resource.
pub fn namespace(cr: &OtterDeployment) -> Result<String, BuildError> {
    cr.metadata
        .namespace
        .clone()
        .ok_or(BuildError::MissingNamespace)
}

/// The controller owner reference pointing at the resource, so deleting it deletes the child
/// (`blockOwnerDeletion`: foreground deletion waits for the children).
pub fn owner_reference(cr: &OtterDeployment) -> Result<OwnerReference, BuildError> {
    let mut owner = cr
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingIdentity)?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// Metadata of a child: name, namespace, labels and the owner reference.
pub fn child_meta(
    cr: &OtterDeployment,
    name: String,
    component: Component,
) -> Result<ObjectMeta, BuildError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(cr)?),
        labels: Some(labels(cr, component)),
        owner_references: Some(vec![owner_reference(cr)?]),
        ..Default::default()
    })
}

/// A SHA-256 over named parts, hex encoded. Names and lengths are hashed too, so moving bytes
/// from one part to the next changes the sum.
pub fn checksum<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in parts {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_separates_parts() {
        assert_ne!(
            checksum([("a", b"bc".as_slice()), ("d", b"".as_slice())]),
            checksum([("a", b"b".as_slice()), ("d", b"c".as_slice())])
        );
        assert_eq!(
            checksum([("a", b"x".as_slice())]),
            checksum([("a", b"x".as_slice())])
        );
    }
}
