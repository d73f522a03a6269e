//! TURN runs on host networking, so two OtterDeployments whose TURN pods land on the same nodes
//! cannot use the same port: the scheduler leaves the later one's pods Pending. The operator
//! knows every OtterDeployment (the controller's cache), so it can say which one holds the port
//! instead of only "waiting for TURN 0/1".

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::OtterDeployment;

/// The host ports TURN takes on each of its nodes (`build::turn::host_ports`).
pub fn turn_host_ports(cr: &OtterDeployment) -> Vec<i32> {
    crate::build::turn::host_ports(cr)
        .into_iter()
        .map(|(port, _)| port)
        .collect()
}

/// Whether two node selectors can match the same node (no label asked with different values).
fn selectors_overlap(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Which came first: the scheduler gave the port to the older one.
fn age_key(cr: &OtterDeployment) -> (Option<i64>, String, String) {
    let created = cr
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    (created, cr.namespace().unwrap_or_default(), cr.name_any())
}

/// A port clash: the port, and `namespace/name` of the OtterDeployment holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortClash {
    /// The TURN host port.
    pub port: i32,
    /// The OtterDeployment that holds it, `namespace/name`.
    pub holder: String,
}

/// The oldest other OtterDeployment that takes one of `cr`'s TURN host ports on nodes `cr`'s
/// TURN may use too, when it is older than `cr`.
pub fn port_holder<'a>(
    cr: &OtterDeployment,
    others: impl IntoIterator<Item = &'a OtterDeployment>,
) -> Option<PortClash> {
    let mine = turn_host_ports(cr);
    if mine.is_empty() {
        return None;
    }
    let me = age_key(cr);
    others
        .into_iter()
        .filter(|o| o.uid() != cr.uid() && age_key(o) < me)
        .filter(|o| selectors_overlap(&cr.spec.turn.node_selector, &o.spec.turn.node_selector))
        .filter_map(|o| {
            let port = turn_host_ports(o).into_iter().find(|p| mine.contains(p))?;
            Some((age_key(o), port))
        })
        .min()
        .map(|((_, ns, name), port)| PortClash {
            port,
            holder: format!("{ns}/{name}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cr;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn named(name: &str, created: i64, port: i32) -> OtterDeployment {
        let mut c = cr();
        c.metadata.name = Some(name.into());
        c.metadata.uid = Some(format!("uid-{name}"));
        c.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        c.spec.turn.port = port;
        c
    }

    #[test]
    fn the_oldest_holder_of_the_same_port_on_the_same_nodes_is_named() {
        let me = named("c", 300, 3478);
        let others = [
            named("a", 100, 3478),
            named("b", 200, 3478),
            named("other-port", 50, 3479),
            named("d", 400, 3478),
        ];
        let clash = port_holder(&me, &others).unwrap();
        assert_eq!(clash.port, 3478);
        assert_eq!(clash.holder, "calls/a");
        assert_eq!(
            port_holder(&others[0], &others),
            None,
            "the first one holds it"
        );
        assert_eq!(
            port_holder(&me, std::slice::from_ref(&me)),
            None,
            "not itself"
        );
    }

    #[test]
    fn other_nodes_disabled_turn_and_tls_ports_are_considered() {
        let me = named("c", 300, 3478);
        let mut elsewhere = named("a", 100, 3478);
        elsewhere
            .spec
            .turn
            .node_selector
            .insert("otter.dev/turn".into(), "other-pool".into());
        assert_eq!(port_holder(&me, [&elsewhere]), None);
        let mut off = named("a", 100, 3478);
        off.spec.turn.enabled = false;
        assert_eq!(port_holder(&me, [&off]), None);
        let mut tls = named("a", 100, 4000);
        tls.spec.turn.tls.enabled = true;
        tls.spec.turn.tls.port = 3478;
        assert_eq!(port_holder(&me, [&tls]).unwrap().port, 3478);
    }

    #[test]
    fn metrics_ports_clash_too() {
        let mut me = named("c", 300, 3478);
        let mut other = named("a", 100, 4000);
        other.spec.turn.metrics.enabled = true;
        other.spec.turn.metrics.port = 9641;
        other.spec.turn.metrics.redis_port = 6390;
        assert_eq!(port_holder(&me, [&other]), None, "metrics off in me");
        me.spec.turn.metrics.enabled = true;
        me.spec.turn.metrics.port = 9700;
        me.spec.turn.metrics.redis_port = 6390;
        assert_eq!(port_holder(&me, [&other]).unwrap().port, 6390);
        me.spec.turn.metrics.enabled = false;
        me.spec.turn.port = 9641;
        assert_eq!(port_holder(&me, [&other]).unwrap().port, 9641);
    }
}
