//! TURN metrics in the TURN pod (`turn.metrics.enabled`).
//!
//! coturn has no Prometheus endpoint; with `--redis-statsdb` it publishes each allocation's
//! status and traffic to Redis. Each TURN pod gets a Redis of its own on the node's loopback
//! (`stats-redis`), which coturn publishes to, and `otter-signaling turn-exporter` (the signaling
//! image) beside it, serving `/metrics` on `turn.metrics.port`. A Redis per pod, not the room-state
//! Redis: coturn's allocation ids are unique only within one coturn, its Redis client has no
//! TLS, and the room-state Redis only admits signaling pods (NetworkPolicy).

use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::pod::{container_security_context, mount, resources_or};
use crate::crd::OtterDeployment;
use crate::observed::Observed;

/// coturn's `--redis-statsdb` for the pod's own Redis on `port`.
pub fn statsdb_arg(port: i32) -> String {
    format!("--redis-statsdb=ip=127.0.0.1 dbname=0 port={port} connect_timeout=30")
}

/// The pod's statistics Redis: loopback only, nothing persisted, memory bounded (it holds one
/// key per live allocation).
pub fn stats_redis(cr: &OtterDeployment, obs: &Observed) -> Container {
    let port = cr.spec.turn.metrics.redis_port.to_string();
    let args = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/var/tmp",
        "--maxmemory",
        "64mb",
    ];
    Container {
        name: "stats-redis".to_string(),
        image: Some(obs.images.redis.clone()),
        command: Some(vec!["redis-server".to_string()]),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        resources: Some(resources_or(None, "10m", "16Mi", "96Mi")),
        security_context: Some(container_security_context(Vec::new())),
        volume_mounts: Some(vec![mount("tmp", "/var/tmp", false)]),
        ..Default::default()
    }
}

/// `otter-signaling turn-exporter`, serving `/metrics` on the node's address (host network).
pub fn exporter(cr: &OtterDeployment, obs: &Observed) -> Container {
    let m = &cr.spec.turn.metrics;
    let image = cr
        .spec
        .signaling
        .image
        .clone()
        .unwrap_or_else(|| obs.images.signaling.clone());
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(m.port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    };
    Container {
        name: "turn-exporter".to_string(),
        image: Some(image),
        args: Some(vec![
            "turn-exporter".to_string(),
            format!("--redis-url=redis://127.0.0.1:{}", m.redis_port),
            format!("--listen=0.0.0.0:{}", m.port),
            "--log-format=json".to_string(),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_string()),
            container_port: m.port,
            host_port: Some(m.port),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: Some(resources_or(None, "10m", "16Mi", "64Mi")),
        security_context: Some(container_security_context(Vec::new())),
        ..Default::default()
    }
}

/// With `turn.metrics.enabled`: make coturn publish, and the two sidecars, as native sidecars
/// (init containers that keep running): the kubelet stops them only after coturn has exited, so
/// a draining pod's exporter still answers the operator's count of its allocations. Ordinary
/// sidecars got SIGTERM as the drain began (found on real nodes).
pub fn attach(cr: &OtterDeployment, obs: &Observed, coturn: &mut Container) -> Vec<Container> {
    if !cr.spec.turn.metrics.enabled {
        return Vec::new();
    }
    coturn
        .args
        .get_or_insert_with(Vec::new)
        .push(statsdb_arg(cr.spec.turn.metrics.redis_port));
    [stats_redis(cr, obs), exporter(cr, obs)]
        .into_iter()
        .map(|c| Container {
            restart_policy: Some("Always".to_string()),
            ..c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cr, observed};

    fn pod_containers(c: &OtterDeployment) -> Vec<Container> {
        let obs = observed();
        let mut coturn = Container {
            name: "coturn".to_string(),
            args: Some(vec!["--no-cli".to_string()]),
            ..Default::default()
        };
        let sidecars = attach(c, &obs, &mut coturn);
        [vec![coturn], sidecars].concat()
    }

    #[test]
    fn off_by_default_and_nothing_changes() {
        let c = pod_containers(&cr());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].args.as_deref(), Some(&["--no-cli".to_string()][..]));
    }

    #[test]
    fn on_coturn_publishes_to_its_own_loopback_redis_read_by_the_exporter() {
        let mut od = cr();
        od.spec.turn.metrics.enabled = true;
        od.spec.turn.metrics.port = 9700;
        od.spec.turn.metrics.redis_port = 6400;
        let c = pod_containers(&od);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["coturn", "stats-redis", "turn-exporter"]);
        for sidecar in &c[1..] {
            assert_eq!(
                sidecar.restart_policy.as_deref(),
                Some("Always"),
                "{} is a native sidecar: it outlives coturn's drain",
                sidecar.name
            );
        }
        let coturn_args = c[0].args.clone().unwrap_or_default();
        assert!(coturn_args.contains(&statsdb_arg(6400)), "{coturn_args:?}");
        assert!(statsdb_arg(6400).contains("ip=127.0.0.1 dbname=0 port=6400"));
        let redis_args = c[1].args.clone().unwrap_or_default();
        let at = |flag: &str| {
            let i = redis_args.iter().position(|a| a == flag).unwrap();
            redis_args[i + 1].clone()
        };
        assert_eq!(at("--bind"), "127.0.0.1");
        assert_eq!(at("--port"), "6400");
        assert_eq!(at("--save"), "");
        let exporter = &c[2];
        let args = exporter.args.clone().unwrap_or_default();
        assert_eq!(args[0], "turn-exporter");
        assert!(args.contains(&"--redis-url=redis://127.0.0.1:6400".to_string()));
        assert!(args.contains(&"--listen=0.0.0.0:9700".to_string()));
        let port = &exporter.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9700)
        );
        assert_eq!(
            exporter.image.as_deref(),
            Some(observed().images.signaling.as_str())
        );
        let sc = exporter.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }
}
