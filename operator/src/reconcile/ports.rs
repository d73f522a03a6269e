//! TURN runs on host networking, so two OtterDeployments whose TURN pods land on the same nodes
//! cannot use the same port: the scheduler leaves the later one's pods Pending. The operator
//! knows every OtterDeployment (the controller's cache) and where their TURN pods are placed (the
//! TURN pod watch), so it can say which one holds the port instead of only "waiting for TURN 0/1".
//! The holder is the one whose pods the scheduler placed, not the oldest: created in the same
//! second, 20 resources on one port gave it to the eighth (`tests/bench/operator --same-port`).

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::crd::OtterDeployment;

/// The host ports TURN takes on each of its nodes (`build::turn::host_ports`).
pub fn turn_host_ports(cr: &OtterDeployment) -> Vec<i32> {
    crate::build::turn::host_ports(cr)
        .into_iter()
        .map(|(port, _)| port)
        .collect()
}

/// Which came first (to name one holder when several share the nodes).
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

/// The other OtterDeployment that takes one of `cr`'s TURN host ports on `cr`'s TURN nodes:
/// one of `placed` (`namespace/name` of those with a TURN pod on these nodes, see
/// `observe::neighbours_on`), the oldest if several.
pub fn port_holder<'a>(
    cr: &OtterDeployment,
    others: impl IntoIterator<Item = &'a OtterDeployment>,
    placed: &BTreeSet<String>,
) -> Option<PortClash> {
    let mine = turn_host_ports(cr);
    if mine.is_empty() || placed.is_empty() {
        return None;
    }
    others
        .into_iter()
        .filter(|o| o.uid() != cr.uid())
        .filter(|o| {
            let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
            placed.contains(&key)
        })
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

    fn placed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| format!("calls/{n}")).collect()
    }

    #[test]
    fn the_one_whose_turn_pods_are_placed_is_named_not_the_oldest() {
        let me = named("c", 300, 3478);
        let others = [
            named("a", 100, 3478),
            named("b", 200, 3478),
            named("other-port", 50, 3479),
            named("d", 400, 3478),
        ];
        // Created together, the scheduler gave the port to d: a and b wait like c.
        let clash = port_holder(&me, &others, &placed(&["d", "other-port"])).unwrap();
        assert_eq!((clash.port, clash.holder.as_str()), (3478, "calls/d"));
        assert_eq!(
            port_holder(&me, &others, &placed(&["other-port"])),
            None,
            "a pod on another port holds nothing of mine"
        );
        assert_eq!(
            port_holder(&me, &others, &BTreeSet::new()),
            None,
            "nothing placed yet: the scheduler has not decided"
        );
        let two = placed(&["b", "d"]);
        assert_eq!(
            port_holder(&me, &others, &two).unwrap().holder,
            "calls/b",
            "several on the nodes: the oldest is named"
        );
        assert_eq!(
            port_holder(&me, std::slice::from_ref(&me), &placed(&["c"])),
            None,
            "not itself"
        );
    }

    #[test]
    fn disabled_turn_and_tls_ports_are_considered() {
        let me = named("c", 300, 3478);
        let mut off = named("a", 100, 3478);
        off.spec.turn.enabled = false;
        assert_eq!(port_holder(&me, [&off], &placed(&["a"])), None);
        let mut tls = named("a", 100, 4000);
        tls.spec.turn.tls.enabled = true;
        tls.spec.turn.tls.port = 3478;
        assert_eq!(
            port_holder(&me, [&tls], &placed(&["a"])).unwrap().port,
            3478
        );
    }

    #[test]
    fn metrics_ports_clash_too() {
        let mut me = named("c", 300, 3478);
        let mut other = named("a", 100, 4000);
        other.spec.turn.metrics.enabled = true;
        other.spec.turn.metrics.port = 9641;
        other.spec.turn.metrics.redis_port = 6390;
        let on = placed(&["a"]);
        assert_eq!(port_holder(&me, [&other], &on), None, "metrics off in me");
        me.spec.turn.metrics.enabled = true;
        me.spec.turn.metrics.port = 9700;
        me.spec.turn.metrics.redis_port = 6390;
        assert_eq!(port_holder(&me, [&other], &on).unwrap().port, 6390);
        me.spec.turn.metrics.enabled = false;
        me.spec.turn.port = 9641;
        assert_eq!(port_holder(&me, [&other], &on).unwrap().port, 9641);
    }
}
