//! Rust handle on `tests/cluster`: a real control plane (etcd, kube-apiserver with RBAC,
//! kube-controller-manager, kube-scheduler, kwok) for one test process.
//!
//! A module of `otter-testkit` (the scripts stay in `tests/cluster`):
//!
//! ```ignore
//! use otter_testkit::cluster;
//!
//! #[test]
//! fn applies_crds() {
//!     let c = cluster::shared();              // one cluster per test binary, started on first use
//!     let ns = c.namespace("applies-crds");   // a fresh namespace per test
//!     let client = c.client();                // a kube client as cluster-admin (async)
//! }
//! ```
//!
//! Every cluster is started with `up --owner-pid <this process>`, so it is torn down when the
//! test process exits, however it exits. [`Cluster::start`] gives a private cluster (stopped on
//! drop; kept for inspection, with a message, when the thread is panicking), for tests that
//! restart components or must not share.
//!
//! The scripts are found through `OTTER_CLUSTER_SCRIPTS` (the `tests/cluster` directory), else by
//! walking up from this crate's `CARGO_MANIFEST_DIR`, else from the current directory.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A running control plane.
pub struct Cluster {
    dir: PathBuf,
    scripts: PathBuf,
    env: HashMap<String, String>,
    stop_on_drop: bool,
}

/// Components that [`Cluster::restart`] accepts.
pub const COMPONENTS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

static SHARED: OnceLock<Cluster> = OnceLock::new();
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The cluster shared by every test of this process: started on first use, stopped by the
/// watchdog when the process exits. Panics (with the scripts' output) if it cannot start.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let mut c = Cluster::start().unwrap_or_else(|e| panic!("test cluster: {e}"));
        // Statics are never dropped; the --owner-pid watchdog stops it.
        c.stop_on_drop = false;
        c
    })
}

impl Cluster {
    /// Install (quick when cached) and start a private cluster in a fresh directory.
    pub fn start() -> io::Result<Cluster> {
        let scripts = scripts_dir()?;
        let base = std::env::var_os("OTTER_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("otter")))
            .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/otter")))
            .unwrap_or_else(|| std::env::temp_dir().join("otter"));
        let dir = base.join("cluster").join(format!(
            "test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        run(Command::new(scripts.join("install")))?;
        let mut up = Command::new(scripts.join("up"));
        up.arg("--dir")
            .arg(&dir)
            .arg("--owner-pid")
            .arg(std::process::id().to_string());
        run(up)?;
        let env = read_env(&dir.join("env"))?;
        Ok(Cluster {
            dir,
            scripts,
            env,
            stop_on_drop: true,
        })
    }

    /// A kube client as cluster-admin (the admin kubeconfig).
    pub async fn client(&self) -> io::Result<kube::Client> {
        client_from(&self.kubeconfig()).await
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.env["OTTER_APISERVER"]
    }

    /// The cluster's directory (pki/, logs/, env).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A component's log file, e.g. `log("kube-apiserver")`.
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The `kubectl` matching the server version, with `KUBECONFIG` set to the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.env["OTTER_KUBECTL"]);
        c.env("KUBECONFIG", self.kubeconfig());
        c
    }

    /// Run kubectl with `args`; error (with its stderr) unless it succeeds. Returns stdout.
    pub fn kubectl_ok<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.kubectl();
        c.args(args);
        let out = output(c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Create a namespace named `<prefix>-<n>`, unique in this process, and return its name.
    pub fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::SeqCst));
        self.kubectl_ok(["create", "namespace", &name])
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// A kubeconfig that acts as ServiceAccount `namespace/name` (impersonation through the admin
    /// certificate; the account need not exist), so a process gets exactly that account's RBAC.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> io::Result<PathBuf> {
        let mut c = Command::new(self.scripts.join("kubeconfig"));
        c.arg("--dir")
            .arg(&self.dir)
            .arg("--service-account")
            .arg(format!("{namespace}/{name}"));
        let out = output(c)?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// Add a kwok-managed Node and wait until it is Ready.
    pub fn add_node(
        &self,
        name: &str,
        internal_ip: Option<&str>,
        external_ip: Option<&str>,
        labels: &[(&str, &str)],
    ) -> io::Result<()> {
        let mut c = Command::new(self.scripts.join("node"));
        c.arg("--dir").arg(&self.dir).args(["add", name]);
        if let Some(ip) = internal_ip {
            c.args(["--internal-ip", ip]);
        }
        if let Some(ip) = external_ip {
            c.args(["--external-ip", ip]);
        }
        for (k, v) in labels {
            c.arg("--label").arg(format!("{k}={v}"));
        }
        run(c)
    }

    /// Delete Nodes and force-delete the pods bound to them (like drained machines).
    pub fn delete_node(&self, name: &str) -> io::Result<()> {
        let mut c = Command::new(self.scripts.join("node"));
        c.arg("--dir").arg(&self.dir).args(["delete", name]);
        run(c)
    }

    /// Stop `components`, keep them down for `down_for`, start them again with the same ports,
    /// certificates and data, and wait until they are healthy.
    pub fn restart(&self, components: &[&str], down_for: Duration) -> io::Result<()> {
        let mut c = Command::new(self.scripts.join("restart"));
        c.arg("--dir")
            .arg(&self.dir)
            .arg("--down-for")
            .arg(down_for.as_secs().to_string())
            .args(components);
        run(c)
    }

    /// Stop the cluster and delete its directory.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_on_drop = false;
        self.down(false)
    }

    fn down(&self, keep: bool) -> io::Result<()> {
        let mut c = Command::new(self.scripts.join("down"));
        c.arg("--dir").arg(&self.dir);
        if keep {
            c.arg("--keep");
        }
        run(c)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stop_on_drop {
            return;
        }
        let keep = std::thread::panicking();
        if let Err(e) = self.down(keep) {
            eprintln!("test cluster: down failed: {e}");
        }
        if keep {
            eprintln!(
                "test cluster: kept {} for inspection (logs/); remove with tests/cluster/down --dir {}",
                self.dir.display(),
                self.dir.display()
            );
        }
    }
}

fn scripts_dir() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("OTTER_CLUSTER_SCRIPTS") {
        return Ok(PathBuf::from(p));
    }
    let starts = [
        option_env!("CARGO_MANIFEST_DIR").map(PathBuf::from),
        std::env::current_dir().ok(),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join("tests/cluster");
            if candidate.join("up").is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "tests/cluster/up not found above CARGO_MANIFEST_DIR or the current directory; set OTTER_CLUSTER_SCRIPTS",
    ))
}

/// A kube client from a kubeconfig file (e.g. [`Cluster::service_account_kubeconfig`]).
pub async fn client_from(kubeconfig: &Path) -> io::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(io::Error::other)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(io::Error::other)?;
    kube::Client::try_from(config).map_err(io::Error::other)
}

/// Run a script with its progress (stderr) captured; on failure, the error carries it.
fn output(mut c: Command) -> io::Result<Output> {
    let shown = format!("{c:?}");
    let out = c.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn run(c: Command) -> io::Result<()> {
    output(c).map(|_| ())
}

/// Parse the `KEY=value` / `export KEY=value` lines `up` writes to DIR/env.
fn read_env(path: &Path) -> io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

#[cfg(test)]
mod self_test {
    //! `cargo test -p otter-testkit --lib -- --include-ignored`
    use super::*;

    #[test]
    fn env_file_parses() {
        let dir = std::env::temp_dir().join(format!("otter-harness-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        std::fs::write(
            &f,
            "export KUBECONFIG=/x/admin.kubeconfig\nOTTER_APISERVER=https://127.0.0.1:1\n",
        )
        .unwrap();
        let env = read_env(&f).unwrap();
        assert_eq!(env["KUBECONFIG"], "/x/admin.kubeconfig");
        assert_eq!(env["OTTER_APISERVER"], "https://127.0.0.1:1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    // Ignored so that `cargo test` does not start an extra cluster for the library's tests.
    #[test]
    #[ignore = "starts its own cluster; run with --include-ignored"]
    fn private_cluster_lifecycle() {
        let c = Cluster::start().expect("start");
        let ns = c.namespace("selftest");
        c.kubectl_ok([
            "create",
            "deployment",
            "d",
            "-n",
            &ns,
            "--image=x",
            "--replicas=2",
        ])
        .unwrap();
        c.kubectl_ok([
            "rollout",
            "status",
            "deployment/d",
            "-n",
            &ns,
            "--timeout=60s",
        ])
        .unwrap();

        c.add_node(
            "selftest-node",
            None,
            Some("203.0.113.50"),
            &[("otter.dev/turn", "true")],
        )
        .unwrap();
        let turn = c
            .kubectl_ok(["get", "nodes", "-l", "otter.dev/turn=true", "-o", "name"])
            .unwrap();
        assert!(turn.contains("node/selftest-node"), "{turn}");
        c.delete_node("selftest-node").unwrap();

        let sa = c.service_account_kubeconfig(&ns, "nobody").unwrap();
        let denied = c
            .kubectl()
            .env("KUBECONFIG", &sa)
            .args(["get", "pods", "-n", &ns])
            .output()
            .unwrap();
        assert!(!denied.status.success());
        assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));

        c.restart(&["kube-apiserver"], Duration::from_secs(0))
            .unwrap();
        c.kubectl_ok(["get", "deployment", "d", "-n", &ns]).unwrap();

        let dir = c.dir().to_path_buf();
        c.stop().unwrap();
        assert!(!dir.exists());
    }
}
