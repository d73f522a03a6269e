//! The contract between the operator and the signaling server, checked with both real sides:
//! the objects the operator builds for the minimal example start the real `otter-signaling`
//! binary (its environment, the mounted config and secret files, a password-protected Redis),
//! and the ICE config it writes is what the server parses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec, Secret};
use otter_operator::crd::OtterDeployment;
use otter_operator::desired::Desired;
use otter_operator::observed::{Observed, TurnNode};
use otter_testkit::{RedisServer, free_port, wait_until};

fn minimal_example() -> OtterDeployment {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/otterdeployment-minimal.yaml");
    let text = std::fs::read_to_string(path).expect("example");
    let mut cr: OtterDeployment = serde_norway::from_str(&text).expect("example parses");
    cr.metadata.namespace = Some("calls".into());
    cr.metadata.uid = Some("0b6a3c52-7f40-4a8e-9a55-0c2f5b1d9e11".into());
    cr
}

fn observed() -> Observed {
    Observed {
        turn_nodes: vec![TurnNode {
            name: "turn-a".into(),
            public_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        }],
        ..Observed::default()
    }
}

fn signaling_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OTTER_SIGNALING_BIN") {
        return PathBuf::from(p);
    }
    // Workspace target dir: this test binary lives in <target>/debug/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("otter-signaling"))
        .expect("target dir")
}

fn secret_value(secrets: &[Secret], name: &str, key: &str) -> Vec<u8> {
    let s = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("secret {name} is built"));
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return v.0.clone();
    }
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_else(|| panic!("secret {name} has key {key}"))
}

#[test]
fn ice_config_written_by_the_operator_is_what_signaling_reads() {
    let d = Desired::build(&minimal_example(), &observed()).expect("build");
    let cm: &ConfigMap = d
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("otter-signaling"))
        .expect("signaling ConfigMap");
    let json = &cm.data.as_ref().expect("data")["ice-servers.json"];
    let parsed = otter_signaling::ice::parse_file(Path::new("ice-servers.json"), json)
        .expect("signaling accepts it");
    assert_eq!(parsed.stun_uris, vec!["stun:203.0.113.7:3478".to_string()]);
    assert_eq!(
        parsed.turn_uris,
        vec![
            "turn:203.0.113.7:3478?transport=udp".to_string(),
            "turn:203.0.113.7:3478?transport=tcp".to_string()
        ]
    );
}

/// An absolute path of the pod, under the test's `root`.
fn under(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// The files of the pod's volumes (its ConfigMaps and Secret items, as built) under `root`, at
/// their mount paths.
fn lay_out_volumes(d: &Desired, pod: &PodSpec, container: &Container, root: &Path) {
    let volumes = pod.volumes.clone().unwrap_or_default();
    for m in container.volume_mounts.clone().unwrap_or_default() {
        let vol = volumes
            .iter()
            .find(|v| v.name == m.name)
            .expect("mounted volume exists");
        let dir = under(root, &m.mount_path);
        std::fs::create_dir_all(&dir).expect("mount dir");
        let files: BTreeMap<String, Vec<u8>> = if let Some(cmv) = &vol.config_map {
            let cm = d
                .config_maps
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(cmv.name.as_str()))
                .expect("mounted ConfigMap is built");
            cm.data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect()
        } else if let Some(sv) = &vol.secret {
            let name = sv.secret_name.clone().expect("secret name");
            let items = sv.items.clone().unwrap_or_default();
            items
                .iter()
                .map(|i| (i.path.clone(), secret_value(&d.secrets, &name, &i.key)))
                .collect()
        } else {
            panic!("unexpected volume kind in {}", vol.name)
        };
        assert!(!files.is_empty(), "volume {} has files", vol.name);
        for (f, bytes) in files {
            std::fs::write(dir.join(f), bytes).expect("write mounted file");
        }
    }
}

/// Where the test runs the pod's server: loopback ports, the local Redis, files under `root`.
struct Local<'a> {
    port: u16,
    metrics_port: u16,
    redis_port: u16,
    password: &'a str,
    root: &'a Path,
}

impl Local<'_> {
    /// The value of one of the container's env entries here: its addresses moved to loopback
    /// and its paths under `root`, after checking them against what the pod would get.
    fn env_value(&self, d: &Desired, e: EnvVar) -> String {
        match (e.value, e.value_from) {
            (Some(v), _) if e.name == "OTTER_LISTEN" => {
                assert_eq!(v, "0.0.0.0:8080");
                format!("127.0.0.1:{}", self.port)
            }
            (Some(v), _) if e.name == "OTTER_METRICS_LISTEN" => {
                assert_eq!(v, "0.0.0.0:9090");
                format!("127.0.0.1:{}", self.metrics_port)
            }
            (Some(v), _) if v.starts_with('/') => {
                under(self.root, &v).to_string_lossy().into_owned()
            }
            (Some(v), _) => v,
            (None, Some(from)) => {
                let r = from.secret_key_ref.expect("env from a Secret");
                assert_eq!(e.name, "OTTER_REDIS_URL");
                let url =
                    String::from_utf8(secret_value(&d.secrets, &r.name, &r.key)).expect("utf8");
                assert!(
                    url.starts_with(&format!("redis://:{}@otter-redis.calls.svc", self.password)),
                    "{url}"
                );
                format!("redis://:{}@127.0.0.1:{}", self.password, self.redis_port)
            }
            (None, None) => panic!("env {} has no value", e.name),
        }
    }
}

#[tokio::test]
async fn the_operators_signaling_pod_spec_starts_the_real_server() {
    let d = Desired::build(&minimal_example(), &observed()).expect("build");
    let deployment = d
        .deployments
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some("otter-signaling"))
        .expect("signaling Deployment");
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let container = &pod.containers[0];
    // The default image is what images/build makes (otter-signaling at the crate version).
    assert_eq!(
        container.image.as_deref(),
        Some(concat!(
            "ghcr.io/otter-dev/otter-signaling:",
            env!("CARGO_PKG_VERSION")
        ))
    );

    // Lay out the volumes the pod would mount, under a temporary root.
    let root_kept = tempfile::TempDir::with_prefix("otter-contract-").expect("a temp dir");
    let root = root_kept.path();
    lay_out_volumes(&d, pod, container, root);

    // The managed Redis, password protected like the operator's StatefulSet.
    let password =
        String::from_utf8(secret_value(&d.secrets, "otter-redis-url", "password")).expect("utf8");
    let redis = RedisServer::start_with(&["--requirepass", &password]);
    let port = free_port();
    let metrics_port = free_port();
    let mut cmd = Command::new(signaling_bin());
    cmd.env_clear()
        .env("OTTER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let local = Local {
        port,
        metrics_port,
        redis_port: redis.port,
        password: &password,
        root,
    };
    for e in container.env.clone().unwrap_or_default() {
        let name = e.name.clone();
        cmd.env(name, local.env_value(&d, e));
    }
    let mut child = cmd.spawn().expect("start otter-signaling");
    let url = format!("http://127.0.0.1:{port}");
    let ok = async {
        wait_until("the operator-configured server to be ready", Duration::from_secs(15), || async {
            matches!(reqwest::get(format!("{url}/readyz")).await, Ok(r) if r.status().is_success())
        })
        .await;
        // Metrics on their own port, not on the one the Service exposes.
        let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .expect("get metrics");
        assert_eq!(metrics.status(), 200);
        let public = reqwest::get(format!("{url}/metrics")).await.expect("get");
        assert_eq!(public.status(), 404);
        let ice: serde_json::Value = reqwest::get(format!("{url}/v1/ice-servers"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        ice
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    // TURN credentials are minted from the mounted shared secret, for the node's address.
    let turn = &ok["iceServers"][1];
    assert_eq!(turn["urls"][0], "turn:203.0.113.7:3478?transport=udp");
    let user = turn["username"].as_str().expect("username");
    let (expiry, id) = user.split_once(':').expect("expiry:id");
    let secret = secret_value(&d.secrets, "otter-turn-secret", "turn-secret");
    let expected = otter_signaling::turn::mint(&secret, id, expiry.parse().expect("number"));
    assert_eq!(turn["credential"], expected.credential.as_str());
}
