//! Child processes of the real binaries, each on its own loopback port, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take). Chosen below
/// the kernel's ephemeral range, so a process binding port 0 meanwhile cannot be handed it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999");
}

/// A little randomness without a dependency: the clock's nanoseconds mixed with a counter.
fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let x =
        nanos ^ SEQ.fetch_add(0x9E37_79B9, Ordering::Relaxed) ^ std::process::id().rotate_left(16);
    x.wrapping_mul(0x85EB_CA6B) ^ (x >> 13)
}

/// Poll `cond` until it holds or `within` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

fn which(tool: &str, hint: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("`{tool}` not found on PATH: {hint}"))
}

/// A real `redis-server` with no persistence, on its own port and directory.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// With TLS: the CA file clients must trust; the port then speaks only TLS.
    pub tls_ca: Option<PathBuf>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Start with extra `redis-server` arguments (e.g. `--requirepass x`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("otter-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(ToString::to_string).collect(),
            tls_ca: None,
        };
        r.spawn();
        r
    }

    /// Start speaking only TLS, with a certificate for 127.0.0.1 from a fresh test CA
    /// (made with `openssl`), plus extra arguments such as ACL users.
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("otter-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        make_test_certs(&dir);
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend([
            "--tls-cert-file".into(),
            d("server.crt"),
            "--tls-key-file".into(),
            d("server.key"),
            "--tls-ca-cert-file".into(),
            d("ca.crt"),
        ]);
        args.extend(extra.iter().map(ToString::to_string));
        let mut r = RedisServer {
            child: None,
            port,
            dir: dir.clone(),
            extra: args,
            tls_ca: Some(dir.join("ca.crt")),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = which(
            "redis-server",
            "run tests/install-deps (Debian package redis-server)",
        );
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (all data is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the server's process (SIGSTOP) without closing its connections: a stalled Redis
    /// (an overloaded or paused host). Commands queue until [`RedisServer::unpause`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused server run again (SIGCONT): it answers what queued meanwhile.
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new(which("kill", "Debian package procps"))
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Start again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Run `redis-cli` against this server and return its output lines.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let bin = which(
            "redis-cli",
            "run tests/install-deps (Debian package redis-server)",
        );
        let tls: Vec<String> = match &self.tls_ca {
            Some(ca) => vec![
                "--tls".into(),
                "--cacert".into(),
                ca.to_string_lossy().into_owned(),
            ],
            None => vec![],
        };
        let out = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(tls)
            .args(self.extra_auth())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn extra_auth(&self) -> Vec<String> {
        match self.extra.iter().position(|a| a == "--requirepass") {
            Some(i) => vec![
                "--no-auth-warning".into(),
                "-a".into(),
                self.extra[i + 1].clone(),
            ],
            None => vec![],
        }
    }

    /// All keys (`KEYS *`; test databases are tiny).
    pub fn keys(&self) -> Vec<String> {
        let mut k = self.cli(&["--raw", "KEYS", "*"]);
        k.sort();
        k
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `otter-signaling` process on a free loopback port; killed when dropped.
pub struct Signaling {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Signaling {
    /// Start `bin` with `args` (plus `--listen 127.0.0.1:0`) and wait for its listening line.
    pub fn start(bin: &str, args: &[&str]) -> Signaling {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "OTTER_LOG",
                std::env::var("OTTER_TEST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Signaling { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Kill -9 and reap: a crashed replica.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(self.url("/readyz")).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

impl Drop for Signaling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA (`ca.crt`, `ca.key`) and a server certificate for 127.0.0.1 signed by it
/// (`server.crt`, `server.key`) in `dir`, made with `openssl`.
fn make_test_certs(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let ok = Command::new(which(
            "openssl",
            "run tests/install-deps (Debian package openssl)",
        ))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl")
        .success();
        assert!(ok, "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=otter-test-ca",
        "-days",
        "1",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write san");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
}
