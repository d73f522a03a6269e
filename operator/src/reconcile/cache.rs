//! The children as the owned-kind watches last saw them: one reflector store per kind, filled by
//! the controller's own watches (no second watch). The apply step leaves alone a child that
//! already is what the spec wants ([`unchanged`]) and takes it, status included, for the status
//! step: a reconcile woken by a child's status change then writes nothing. At scale most
//! reconciles are that, and every skipped apply is a write the API server does not have to
//! handle.
//!
//! The TURN Nodes and TURN pods the observe step reads are kept the same way ([`Turn`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use crate::error::Error;
use crate::kinds::{Kind, Owned};
use crate::meta::{APPLIED_ANNOTATION, checksum};

/// One store per owned kind, each typed by its kind's Rust type.
#[derive(Default)]
pub struct Children {
    stores: HashMap<Kind, Box<dyn Any + Send + Sync>>,
}

impl Children {
    /// Keep `store` as kind `K`'s.
    pub fn insert<K: Owned>(&mut self, store: Store<K>) {
        self.stores.insert(K::KIND, Box::new(store));
    }

    /// `ns/name` of kind `K` as its watch last saw it (none before the watch has listed).
    pub fn get<K: Owned>(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let store = self.stores.get(&K::KIND)?.downcast_ref::<Store<K>>()?;
        store.get(&ObjectRef::new(name).within(ns))
    }
}

/// How long a reconcile waits for the TURN watches' first list before it fails (and is retried
/// with backoff): at start they list within a second; longer means they cannot (e.g. RBAC).
pub const LISTED_WITHIN: Duration = Duration::from_secs(10);

/// The Nodes and the TURN pods of every OtterDeployment as the controller's watches last saw
/// them (slimmed to what observe reads, see `watch`).
///
/// A store may be an event behind the API server; the event that brings the newer object
/// triggers another reconcile (Node events by `node_concerns`, pod events by their owner), and
/// the reflector takes it in before that trigger is sent, so the next reconcile sees it.
#[derive(Clone)]
pub struct Turn {
    /// Every Node (cluster-scoped; selectors differ per OtterDeployment).
    pub nodes: Store<Node>,
    /// Every TURN pod in the watched namespaces (the watch selects on their labels).
    pub pods: Store<Pod>,
}

impl Turn {
    /// Every Node and TURN pod, once both watches have listed: before its first list a store is
    /// empty, which would read as "no TURN nodes" and be written into the status.
    pub async fn listed(&self) -> Result<(Vec<Arc<Node>>, Vec<Arc<Pod>>), Error> {
        let deadline = tokio::time::Instant::now() + LISTED_WITHIN;
        listed_by(&self.nodes, deadline, "Node").await?;
        listed_by(&self.pods, deadline, "TURN pod").await?;
        Ok((self.nodes.state(), self.pods.state()))
    }
}

async fn listed_by<K>(
    store: &Store<K>,
    deadline: tokio::time::Instant,
    what: &'static str,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout_at(deadline, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        // Timed out, or the watch ended (its writer dropped) before it listed.
        _ => Err(Error::NotListed(what)),
    }
}

/// `obj` with an annotation that sums it. A field the spec stops setting changes the sum, so an
/// object that still holds that field is applied again (which removes it), although it holds
/// every field now wanted.
pub fn stamped<K: Owned>(obj: &K) -> K {
    let json = serde_json::to_vec(obj).unwrap_or_default();
    let mut out = obj.clone();
    out.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            APPLIED_ANNOTATION.to_string(),
            checksum([("object", json.as_slice())]),
        );
    out
}

/// Where `live` is not yet `want` (stamped): the path of the first field that differs, `None`
/// when applying would change nothing. Someone else's edit of a field the operator sets shows
/// as a difference, so drift is still repaired. Logged, so a child applied on every reconcile
/// says why.
pub fn difference<K: Owned>(live: &K, want: &K) -> Option<String> {
    match (serde_json::to_value(live), serde_json::to_value(want)) {
        (Ok(live), Ok(want)) => first_difference(&live, &want),
        _ => Some("(not serializable)".into()),
    }
}

/// Whether `live` holds every field `want` sets, with the same value; if not, the first field
/// that differs. Fields `want` leaves out belong to the server (defaults, status, other
/// managers) and do not count; an empty map or list, or `false`, in `want` matches a field the
/// server dropped. Lists match element by element. The path is built only for a difference.
fn first_difference(live: &Value, want: &Value) -> Option<String> {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => w.iter().find_map(|(k, wv)| match l.get(k) {
            Some(lv) => first_difference(lv, wv).map(|rest| format!(".{k}{rest}")),
            None => (!is_empty(wv)).then(|| format!(".{k}")),
        }),
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            w.iter().zip(l).enumerate().find_map(|(i, (wv, lv))| {
                first_difference(lv, wv).map(|rest| format!("[{i}]{rest}"))
            })
        }
        _ if want == live || (is_empty(want) && is_empty(live)) => None,
        _ => Some(format!(": {live} instead of {want}")),
    }
}

/// What the API server leaves out when it writes an object: null, empty maps and lists, and
/// `false` for the plain booleans it omits when false (a volume mount's `readOnly`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn covers(live: &Value, want: &Value) -> bool {
        first_difference(live, want).is_none()
    }

    fn unchanged(live: &ConfigMap, want: &ConfigMap) -> bool {
        difference(live, want).is_none()
    }

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("demo-signaling".into());
        cm.metadata.namespace = Some("calls".into());
        cm.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cm
    }

    #[test]
    fn fields_the_server_adds_do_not_count_but_every_wanted_one_does() {
        let want = json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "labels": {}}});
        let live = json!({
            "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "paused": false},
            "status": {"ready": 1}
        });
        assert!(covers(&live, &want));
        let edited = json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}});
        assert!(!covers(&edited, &want), "someone else's edit is drift");
        let fewer = json!({"spec": {"replicas": 2, "ports": []}});
        assert!(!covers(&fewer, &want), "a list element gone");
        let more = json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}});
        assert!(!covers(&more, &want), "a list element added");
        assert!(
            !covers(&json!({}), &json!({"a": ""})),
            "an empty string is a value"
        );
        // The API server omits `readOnly: false` from a volume mount; `true` must be there.
        let mount = |ro: bool| json!({"volumeMounts": [{"name": "tls", "readOnly": ro}]});
        assert!(covers(
            &json!({"volumeMounts": [{"name": "tls"}]}),
            &mount(false)
        ));
        assert!(!covers(
            &json!({"volumeMounts": [{"name": "tls"}]}),
            &mount(true)
        ));
    }

    #[test]
    fn the_stamp_tells_a_field_the_spec_dropped() {
        let before = stamped(&config_map(&[("a", "1"), ("b", "2")]));
        let after = stamped(&config_map(&[("a", "1")]));
        // The live object still has `b`: it holds every field wanted but the last apply's sum.
        assert!(!unchanged(&before, &after));
        assert!(unchanged(
            &before,
            &stamped(&config_map(&[("a", "1"), ("b", "2")]))
        ));
    }

    #[test]
    fn a_store_hands_back_what_its_watch_saw_by_kind_and_name() {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let mut children = Children::default();
        children.insert(reader);
        assert!(
            children
                .get::<ConfigMap>("calls", "demo-signaling")
                .is_none()
        );
        writer.apply_watcher_event(&Event::Apply(config_map(&[("a", "1")])));
        let seen = children
            .get::<ConfigMap>("calls", "demo-signaling")
            .unwrap();
        assert_eq!(seen.data.as_ref().unwrap()["a"], "1");
        assert!(
            children
                .get::<ConfigMap>("other", "demo-signaling")
                .is_none()
        );
        assert!(
            children
                .get::<k8s_openapi::api::core::v1::Secret>("calls", "demo-signaling")
                .is_none()
        );
    }
}
