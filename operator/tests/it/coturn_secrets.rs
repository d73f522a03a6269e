//! Secret rotation against the real coturn (`turnserver` and `turnadmin` from Debian's coturn
//! package), driven by the very script the TURN pods run (`build::turn::SECRETS_SYNC_SCRIPT`)
//! over a directory laid out like their mounted keys Secret (`build::turn_keys`): coturn reads
//! the TURN REST API secrets from its SQLite user database on every request, so a rotation
//! needs no restart. Proven here, phase by phase: a `next` value is accepted beside the current
//! one; once it is current and the old one `previous`, both still are; once `previous` is
//! removed (the operator does when `previous-until` has passed) the old one is refused, while
//! an allocation made with it keeps refreshing; keys files gone (a Secret being replaced) leave
//! coturn's secrets as they were; a valid credential is accepted while the database is being
//! written. And the TURN pods' drain hook (`build::turn::DRAIN_SCRIPT`) waits while coturn
//! holds a relay allocation, and returns as soon as the last one is released.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use std::io::{BufRead, BufReader};

use otter_operator::build::turn::{DRAIN_SCRIPT, SECRETS_SYNC_SCRIPT};
use sha1::Sha1;

const REALM: &str = "otter";
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(bin: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(bin);
    assert!(
        p.exists(),
        "{bin} not found: install Debian's coturn package (tests/install-deps)"
    );
    p
}

/// A PATH with only the tools a coturn image has besides turnserver (tests/cluster/images copies
/// sh, cat, sleep and turnadmin): a script that needs any other one fails here as in a TURN
/// pod. (A drain hook that used `sort` once passed here and returned at once in every pod.)
/// In cargo's scratch directory for integration tests, not /tmp: every test shares it, and it
/// outlives the processes that use it.
fn image_path() -> PathBuf {
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coturn-image-path");
    std::fs::create_dir_all(&bin).expect("image PATH dir");
    for tool in ["sh", "cat", "sleep", "turnadmin"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found (tests/install-deps)"));
        match std::os::unix::fs::symlink(&found, bin.join(tool)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("link {tool}: {e}"),
            _ => {}
        }
    }
    bin
}

/// A TURN REST API credential, as the signaling server mints it.
fn credential(secret: &str, id: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let username = format!("{expiry}:{id}");
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// A STUN/TURN message: type, transaction id, attributes (type, value).
fn message(kind: u16, txid: &[u8; 12], attrs: &[(u16, Vec<u8>)], key: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend(t.to_be_bytes());
        body.extend((v.len() as u16).to_be_bytes());
        body.extend(v);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut msg = Vec::new();
    msg.extend(kind.to_be_bytes());
    // MESSAGE-INTEGRITY covers the header with the length counting the attribute itself.
    let len = body.len() + if key.is_some() { 24 } else { 0 };
    msg.extend((len as u16).to_be_bytes());
    msg.extend(COOKIE);
    msg.extend(txid);
    msg.extend(body);
    if let Some(key) = key {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key");
        mac.update(&msg);
        msg.extend(0x0008u16.to_be_bytes());
        msg.extend(20u16.to_be_bytes());
        msg.extend(mac.finalize().into_bytes());
    }
    msg
}

/// (type, attributes) of a response.
fn parse(buf: &[u8]) -> (u16, Vec<(u16, Vec<u8>)>) {
    assert!(buf.len() >= 20, "short STUN message");
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let mut attrs = Vec::new();
    let mut i = 20;
    while i + 4 <= buf.len() {
        let t = u16::from_be_bytes([buf[i], buf[i + 1]]);
        let l = usize::from(u16::from_be_bytes([buf[i + 2], buf[i + 3]]));
        let end = (i + 4 + l).min(buf.len());
        attrs.push((t, buf[i + 4..end].to_vec()));
        i += 4 + l.div_ceil(4) * 4;
    }
    (kind, attrs)
}

fn attr(attrs: &[(u16, Vec<u8>)], t: u16) -> Option<Vec<u8>> {
    attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| v.clone())
}

/// The error code of an error response (e.g. 401), 0 for a success.
fn error_code(attrs: &[(u16, Vec<u8>)]) -> u16 {
    attr(attrs, 0x0009).map_or(0, |v| u16::from(v[2]) * 100 + u16::from(v[3]))
}

/// A TURN client session on one UDP socket: long-term credentials, nonce handling.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    seq: u8,
}

impl Client {
    fn new(server: SocketAddr, username: String, password: &str) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let key = md5::compute(format!("{username}:{REALM}:{password}")).0;
        Self {
            sock,
            server,
            username,
            key,
            nonce: Vec::new(),
            seq: 0,
        }
    }

    fn roundtrip(&mut self, kind: u16, extra: &[(u16, Vec<u8>)], auth: bool) -> (u16, u16) {
        self.seq += 1;
        let txid = [self.seq; 12];
        let mut attrs = extra.to_vec();
        if auth {
            attrs.push((0x0006, self.username.clone().into_bytes()));
            attrs.push((0x0014, REALM.as_bytes().to_vec()));
            attrs.push((0x0015, self.nonce.clone()));
        }
        let msg = message(kind, &txid, &attrs, auth.then_some(&self.key[..]));
        let mut buf = [0u8; 1500];
        // UDP may lose a datagram even on loopback under load: resend a few times.
        for _ in 0..5 {
            self.sock.send_to(&msg, self.server).expect("send");
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                if buf[8..20] != txid {
                    continue;
                }
                let (kind, attrs) = parse(&buf[..n]);
                if let Some(nonce) = attr(&attrs, 0x0015) {
                    self.nonce = nonce;
                }
                return (kind, error_code(&attrs));
            }
        }
        panic!("no answer from coturn at {}", self.server);
    }

    /// Allocate a UDP relay; the error code on failure (0: allocated).
    fn allocate(&mut self) -> u16 {
        let transport = vec![(0x0019, vec![17, 0, 0, 0])];
        // The first, unauthenticated request gets the nonce (401).
        let (_, code) = self.roundtrip(0x0003, &transport, false);
        assert_eq!(code, 401, "an unauthenticated Allocate must be challenged");
        self.authenticated(0x0003, &transport)
    }

    /// Refresh the allocation for ten minutes; the error code (0: refreshed).
    fn refresh(&mut self) -> u16 {
        self.authenticated(0x0004, &[(0x000D, 600u32.to_be_bytes().to_vec())])
    }

    /// Release the allocation (a Refresh with lifetime 0, what a closing browser sends).
    fn release(&mut self) -> u16 {
        self.authenticated(0x0004, &[(0x000D, 0u32.to_be_bytes().to_vec())])
    }

    fn authenticated(&mut self, kind: u16, attrs: &[(u16, Vec<u8>)]) -> u16 {
        let (_, mut code) = self.roundtrip(kind, attrs, true);
        if code == 438 {
            // Stale nonce: the answer carried a new one.
            code = self.roundtrip(kind, attrs, true).1;
        }
        code
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The relay range of the drain test's coturn: narrow, off coturn's default range and off the
/// other test's, and below the kernel's ephemeral ports (32768 and up), so that the drain hook
/// (which counts every UDP socket of the host in the range) sees only that coturn's relays and
/// not a socket some other process on a busy machine was given. (A run beside the node suite
/// once saw one there.)
const RELAY_MIN: u16 = 29100;
const RELAY_MAX: u16 = 29199;

fn start_coturn(dir: &Path, db: &Path, relay: (u16, u16)) -> (Proc, SocketAddr) {
    for _ in 0..5 {
        let port = free_udp_port();
        let log = std::fs::File::create(dir.join("turnserver.log")).expect("log");
        let child = Command::new(need("turnserver"))
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={}", relay.0))
            .arg(format!("--max-port={}", relay.1))
            .args(["--realm", REALM])
            .args(["--use-auth-secret", "--no-cli", "--no-tls", "--no-dtls"])
            .args([
                "--log-file=stdout",
                "--simple-log",
                "--allow-loopback-peers",
            ])
            .arg(format!("--userdb={}", db.display()))
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let proc = Proc(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        // Ready when it answers a Binding request; another process on the port: next one.
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let _ = probe.send_to(&message(0x0001, &[7; 12], &[], None), addr);
            let mut buf = [0u8; 512];
            if probe.recv_from(&mut buf).is_ok() {
                return (proc, addr);
            }
        }
    }
    panic!(
        "turnserver did not answer; its log:\n{}",
        std::fs::read_to_string(dir.join("turnserver.log")).unwrap_or_default()
    );
}

/// The drain hook over relay range `min..=max`, with a 60 s bound, and its stdout's lines. No
/// coturn pidfile: the hook tells on its own stdout, which the test reads. `proc_net`: read the
/// socket tables there instead of /proc/net.
fn start_drain_hook(
    min: u16,
    max: u16,
    proc_net: Option<&Path>,
) -> (Proc, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut command = Command::new("/bin/sh");
    if let Some(dir) = proc_net {
        command.env("OTTER_PROC_NET", dir);
    }
    let mut hook = Proc(
        command
            .env("PATH", image_path())
            .args(["-c", DRAIN_SCRIPT, "drain", "60"])
            .args([min.to_string(), max.to_string()])
            .env("OTTER_TURN_PIDFILE", "/nonexistent/pidfile")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the drain hook"),
    );
    let lines = BufReader::new(hook.0.stdout.take().expect("stdout")).lines();
    (hook, lines)
}

/// Wait until `f` holds, polling; the agent acts within a poll interval.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

/// Seed coturn's database from the keys in `keys` once, as the init container does.
fn seed(keys: &Path, db: &Path) {
    let seeded = Command::new("/bin/sh")
        .env("PATH", image_path())
        .args(["-c", SECRETS_SYNC_SCRIPT, "init"])
        .args([keys.to_str().expect("utf8"), "0"])
        .env("OTTER_TURN_DB", db)
        .env("OTTER_TURN_REALM", REALM)
        .status()
        .expect("run the sync script once");
    assert!(seeded.success(), "the init sync failed");
}

/// A fresh directory `otter-coturn-<name>-*` (removed when dropped) with a keys directory whose
/// `turn-secret` is `secret`, and coturn's database seeded from it as the init container does:
/// (dir, keys, db).
fn seeded_dir(name: &str, secret: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::TempDir::with_prefix(format!("otter-coturn-{name}-")).expect("a temp dir");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("dir");
    let db = dir.path().join("turndb");
    write_key(&keys, "turn-secret", secret);
    seed(&keys, &db);
    (dir, keys, db)
}

fn write_key(keys: &Path, key: &str, value: &str) {
    std::fs::write(keys.join(key), value).expect("write key");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Fresh clients of one coturn, each kept open to the end of the test: a dropped client's port
/// could go to a later one, which would then meet the allocation the first one left (437).
struct Clients {
    server: SocketAddr,
    kept: Vec<Client>,
}

impl Clients {
    fn new(server: SocketAddr) -> Self {
        Self {
            server,
            kept: Vec::new(),
        }
    }

    /// Allocate with a fresh credential of `secret`: 0 when allocated, else the error code.
    fn allocate_with(&mut self, secret: &str, id: &str) -> u16 {
        let (user, pass) = credential(secret, id);
        let mut client = Client::new(self.server, user, &pass);
        let code = client.allocate();
        self.kept.push(client);
        code
    }
}

#[test]
fn a_rotation_in_two_phases_keeps_old_allocations_and_drops_the_old_secret_without_a_restart() {
    need("turnadmin");
    let (dir, keys, db) = seeded_dir("secrets", "old-secret\n");
    let (coturn, server) = start_coturn(dir.path(), &db, (45200, 45299));
    let mut clients = Clients::new(server);
    let _agent = Proc(
        Command::new("/bin/sh")
            .env("PATH", image_path())
            .args(["-c", SECRETS_SYNC_SCRIPT, "agent"])
            .args([keys.to_str().expect("utf8"), "1"])
            .env("OTTER_TURN_DB", &db)
            .env("OTTER_TURN_REALM", REALM)
            .spawn()
            .expect("start the agent"),
    );

    let (user, pass) = credential("old-secret", "alice");
    let mut alice = Client::new(server, user, &pass);
    assert_eq!(alice.allocate(), 0, "the seeded secret allocates");
    assert_eq!(
        clients.allocate_with("new-secret", "early"),
        401,
        "a secret nobody set is refused"
    );

    // Phase 1: the operator adds `next`; coturn accepts it beside the current one.
    write_key(&keys, "next", "new-secret");
    eventually("the next secret is accepted", || {
        clients.allocate_with("new-secret", "bob") == 0
    });
    assert_eq!(clients.allocate_with("old-secret", "carol"), 0);

    // Phase 2: `next` becomes current, the old value previous (written in an order in which
    // both stay wanted at every step, as the kubelet's atomic update guarantees anyway).
    write_key(&keys, "previous-until", &(unix_now() + 3600).to_string());
    write_key(&keys, "previous", "old-secret");
    write_key(&keys, "turn-secret", "new-secret");
    std::fs::remove_file(keys.join("next")).expect("remove next");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        clients.allocate_with("old-secret", "dan"),
        0,
        "the previous secret stays accepted until previous-until"
    );
    assert_eq!(clients.allocate_with("new-secret", "dora"), 0);

    // previous-until has passed: the operator removes previous, the agent drops the old value.
    std::fs::remove_file(keys.join("previous")).expect("remove previous");
    eventually("the old secret is dropped", || {
        clients.allocate_with("old-secret", "dave") == 401
    });
    assert_eq!(
        alice.refresh(),
        0,
        "an allocation made with the dropped secret keeps refreshing"
    );
    assert_eq!(clients.allocate_with("new-secret", "erin"), 0);

    // The keys files gone (a Secret being replaced): coturn keeps what it accepts.
    for key in ["turn-secret", "previous-until"] {
        std::fs::remove_file(keys.join(key)).expect("remove key");
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(clients.allocate_with("new-secret", "fred"), 0);
    drop(coturn);
}

/// Runs `turnadmin` against `db` with the secret as its argument, as the secrets agent does.
fn turnadmin(flag: &str, secret: &str, db: &Path) -> bool {
    Command::new(need("turnadmin"))
        .args([flag, secret, "-r", REALM, "-b"])
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A rotation writes coturn's database while coturn reads it on every Allocate. In SQLite's
/// default journal mode a read that meets a write in progress fails at once ("database is
/// locked") and coturn refuses a valid credential with 401: this test saw it within ten
/// allocations. The agent creates the database in WAL mode, where a read never waits on a write.
#[test]
fn a_valid_credential_is_accepted_while_the_agent_writes_the_database() {
    need("turnadmin");
    let (dir, _keys, db) = seeded_dir("busy", "the-secret");
    let header = std::fs::read(&db).expect("read the database");
    assert_eq!(
        header.get(18..20),
        Some(&[2u8, 2][..]),
        "the seeded database is in WAL mode (header bytes 18 and 19)"
    );
    let (_coturn, server) = start_coturn(dir.path(), &db, (45300, 45499));
    let mut clients = Clients::new(server);
    // One Allocate first: coturn's connection to the database stays open from then on.
    assert_eq!(clients.allocate_with("the-secret", "first"), 0);

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, writes, db) = (stop.clone(), writes.clone(), db.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let flag = if writes.load(Ordering::Relaxed) % 2 == 0 {
                    "-s"
                } else {
                    "-X"
                };
                assert!(
                    turnadmin(flag, "a-rotated-secret", &db),
                    "turnadmin {flag} failed"
                );
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Allocate until the database has been written a few times, at most 15 allocations per
    // write (an Allocate is quicker than a write).
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = || writes.load(Ordering::Relaxed) as usize;
    for i in 0.. {
        if i >= 40 && done() >= 6 {
            break;
        }
        while done() * 15 + 15 <= i {
            assert!(
                Instant::now() < deadline,
                "the writer made {} writes in 60 s",
                done()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let code = clients.allocate_with("the-secret", &format!("user{i}"));
        if code != 0 {
            refused.push((i, code));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");
    assert!(
        refused.is_empty(),
        "allocations refused while the database was written ({} writes), (n, code): {refused:?}",
        done()
    );
}

#[test]
fn the_drain_hook_waits_for_the_last_allocation_and_no_longer() {
    need("turnadmin");
    let (dir, _keys, db) = seeded_dir("drain", "s");
    let (_coturn, server) = start_coturn(dir.path(), &db, (RELAY_MIN, RELAY_MAX));
    let (user, pass) = credential("s", "alice");
    let mut alice = Client::new(server, user, &pass);
    assert_eq!(alice.allocate(), 0);

    // A 60 s bound: the hook must return long before it, when the allocation is released.
    let (mut hook, mut lines) = start_drain_hook(RELAY_MIN, RELAY_MAX, None);
    let first = lines.next().expect("a first line").expect("utf8");
    assert!(
        first.contains("draining: 1 relay allocation(s)"),
        "the hook counts the allocation: {first}"
    );
    assert!(
        hook.0.try_wait().expect("wait").is_none(),
        "the hook must wait while an allocation is left"
    );
    let released = Instant::now();
    assert_eq!(alice.release(), 0);
    let last = lines.next().expect("a last line").expect("utf8");
    assert!(last.contains(": 0 relay allocation(s) left"), "{last}");
    assert!(
        released.elapsed() < Duration::from_secs(30),
        "the hook returned {:?} after the release",
        released.elapsed()
    );
    let status = hook.0.wait().expect("hook exit");
    assert!(status.success());
}

#[test]
fn the_drain_hook_counts_tcp_relays_but_not_established_connections() {
    // An RFC 6062 TCP relay is a listening socket in the relay range; an established connection
    // whose local port falls in the range (the node's own outgoing ones) is not a relay.
    let (min, max) = (29400u16, 29420u16);
    let listener = std::net::TcpListener::bind(("127.0.0.1", min + 3)).expect("bind in range");
    let outside = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client =
        std::net::TcpStream::connect(outside.local_addr().expect("addr")).expect("connect");
    let _accepted = outside.accept().expect("accept");
    let (mut hook, mut lines) = start_drain_hook(min, max, None);
    let first = lines.next().expect("a first line").expect("utf8");
    assert!(first.contains("draining: 1 relay allocation(s)"), "{first}");
    drop(listener);
    let mut last = String::new();
    for line in lines.by_ref() {
        last = line.expect("utf8");
        if last.contains("drained after") {
            break;
        }
    }
    assert!(last.contains(": 0 relay allocation(s) left"), "{last}");
    assert!(hook.0.wait().expect("hook exit").success());
    drop(client);
}

#[test]
fn the_drain_hook_counts_only_the_sockets_of_its_own_user() {
    // With host networking the node's other processes share coturn's network namespace: their
    // sockets in the relay range (another user's ephemeral ports) are not allocations. A table
    // shaped like /proc/net/udp: one socket of this user's, one of another user's, both in range.
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let me: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a Uid line");
    let dir_kept = tempfile::TempDir::with_prefix("otter-drain-net-").expect("a temp dir");
    let dir = dir_kept.path();
    let socket = |sl: u32, port: u16, uid: u32| {
        format!(
            "{sl:4}: 0100007F:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 {uid:5}        0 {} 2 0000000000000000 0\n",
            1000 + sl
        )
    };
    let header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
    let write = |body: String| {
        let tmp = dir.join("udp.tmp");
        std::fs::write(&tmp, format!("{header}{body}")).expect("write");
        std::fs::rename(&tmp, dir.join("udp")).expect("rename");
    };
    let other = me.wrapping_add(1);
    write(socket(0, 29501, me) + &socket(1, 29502, other));
    let (mut hook, mut lines) = start_drain_hook(29500, 29510, Some(dir));
    let first = lines.next().expect("a first line").expect("utf8");
    assert!(
        first.contains("draining: 1 relay allocation(s)") && first.contains("(ports 29501)"),
        "only this user's socket counts: {first}"
    );
    write(socket(1, 29502, other));
    let last = lines.next().expect("a last line").expect("utf8");
    assert!(last.contains(": 0 relay allocation(s) left"), "{last}");
    assert!(hook.0.wait().expect("hook exit").success());
}
