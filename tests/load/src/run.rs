//! One load run: N peers in rooms of k connect and join, then every pair of room mates
//! exchanges an offer, an answer and ten candidates each way; bounded in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::perfctl::PerfControl;
use crate::procstat::{self, Sample};
use crate::proto::{Adapter, Incoming, Kind};

/// Candidates each peer sends to each room mate.
pub const CANDIDATES: usize = 10;
/// Messages each peer receives from each room mate: an offer or an answer, and the candidates.
pub const PER_MATE: usize = 1 + CANDIDATES;
const KEEPALIVE: Duration = Duration::from_secs(20);
const MAX_ERROR_SAMPLES: usize = 20;
/// The exchange phase gives up when no message has arrived for this long.
const STALL: Duration = Duration::from_secs(10);

pub struct Config {
    pub adapter: Arc<dyn Adapter>,
    /// WebSocket base URLs; peer i uses `urls[i % len]` (round robin over replicas).
    pub urls: Vec<String>,
    pub addrs: Vec<SocketAddr>,
    pub peers: usize,
    pub room_size: usize,
    /// Connections opening at the same time.
    pub connect_concurrency: usize,
    /// Rooms start their exchange spread evenly over this window (0: all at once).
    pub spread: Duration,
    /// Bound of the join phase and of the exchange phase, each.
    pub phase_timeout: Duration,
    /// Keep every connection open this long after the exchange (memory at rest is sampled).
    pub hold: Duration,
    /// Server processes to sample: (name, pid).
    pub pids: Vec<(String, u32)>,
    /// A running `perf record --control`, switched on for the exchange phase only.
    pub perf: Option<PerfControl>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcReport {
    pub name: String,
    pub pid: u32,
    pub before: Sample,
    /// With every peer connected and joined, before the exchange.
    pub joined: Sample,
    pub after: Sample,
    /// (RSS joined - RSS before) / connected peers, in KiB.
    pub kib_per_conn: f64,
    /// CPU seconds used during the exchange phase only.
    pub exchange_cpu_s: f64,
    /// CPU seconds used from before the first connect to the end of the exchange.
    pub total_cpu_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Which table of the report this run belongs to (e.g. `compare`, `scale`).
    pub group: String,
    /// Which server setup was loaded (e.g. `otter-memory`, `otter-redis-3`, `peerjs`).
    pub server: String,
    pub protocol: String,
    pub peers: usize,
    pub room_size: usize,
    pub connected: usize,
    pub join_s: f64,
    /// Connect (TCP + WebSocket upgrade) until joined (Otter `joined`, PeerJS `OPEN`), in µs.
    pub join: Percentiles,
    /// Send to receive of each relayed message, in µs.
    pub relay: Percentiles,
    pub expected_messages: u64,
    pub received_messages: u64,
    pub sent_messages: u64,
    pub exchange_s: f64,
    pub messages_per_s: f64,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub procs: Vec<ProcReport>,
    /// The sum over `procs`.
    pub total: ProcReport,
    /// Server CPU microseconds per relayed message (exchange phase).
    pub cpu_us_per_message: f64,
    /// When this report stands for repeated runs of the same load (`report::medians`): each
    /// run's CPU microseconds per message, ascending. Empty for a single run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_runs: Vec<f64>,
    pub loadavg_before: f64,
    pub loadavg_after: f64,
    /// Share of the machine's CPU busy during the exchange (all processes, everyone's).
    pub machine_busy_exchange: f64,
}

struct Shared {
    cfg: Config,
    epoch: Instant,
    connect: Semaphore,
    joined: AtomicUsize,
    ready: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    /// Relayed messages received so far, by every peer: progress of the exchange.
    received: AtomicUsize,
    start: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn new(cfg: Config, start: watch::Receiver<bool>, stop: watch::Receiver<bool>) -> Shared {
        Shared {
            connect: Semaphore::new(cfg.connect_concurrency.max(1)),
            cfg,
            epoch: Instant::now(),
            joined: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            start,
            stop,
        }
    }
}

#[derive(Default)]
struct PeerResult {
    join_us: Option<u64>,
    relay_us: Vec<u64>,
    received: u64,
    sent: u64,
    errors: Vec<String>,
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

struct Mate {
    id: String,
    initiator: bool,
    answered: bool,
    got: usize,
}

/// A peer's view of its room: its own id and its mates, in the order it heard of them.
struct Mates {
    me: String,
    list: Vec<Mate>,
    by_id: HashMap<String, usize>,
    /// Counted in `Shared::ready` (knows all k - 1 mates) and in `Shared::done` (has all).
    ready: bool,
    done: bool,
}

impl Mates {
    fn new(me: String, k: usize) -> Mates {
        Mates {
            me,
            list: Vec::with_capacity(k.saturating_sub(1)),
            by_id: HashMap::with_capacity(k),
            ready: false,
            done: false,
        }
    }

    /// A mate heard of; counts this peer ready once it knows all of them.
    fn add(&mut self, sh: &Shared, id: String, from_joined: bool) {
        // Presence is idempotent for clients (docs/protocol.md): a mate may be announced twice.
        if !self.by_id.contains_key(&id) {
            let initiator = sh.cfg.adapter.initiates(&self.me, &id, from_joined);
            self.by_id.insert(id.clone(), self.list.len());
            self.list.push(Mate {
                id,
                initiator,
                answered: false,
                got: 0,
            });
        }
        self.count_ready(sh);
    }

    /// Counted ready (once) when it knows all k - 1 mates (with k = 1: at once).
    fn count_ready(&mut self, sh: &Shared) {
        if !self.ready && self.list.len() == sh.cfg.room_size - 1 {
            self.ready = true;
            sh.ready.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A relayed message from `from`: its latency recorded; the mate to answer, if this was the
    /// offer this peer answers.
    fn on_signal(
        &mut self,
        sh: &Shared,
        kind: Kind,
        from: &str,
        ts: u64,
        res: &mut PeerResult,
    ) -> Option<String> {
        let lat_ns = now_ns(sh.epoch).saturating_sub(ts);
        res.relay_us.push(lat_ns / 1000);
        res.received += 1;
        sh.received.fetch_add(1, Ordering::Relaxed);
        let Some(&m) = self.by_id.get(from) else {
            res.errors.push(format!("message from unknown peer {from}"));
            return None;
        };
        let mate = &mut self.list[m];
        mate.got += 1;
        if mate.got > PER_MATE {
            res.errors
                .push(format!("more than {PER_MATE} messages from {from}"));
        }
        let answer = (kind == Kind::Offer && !mate.initiator && !mate.answered).then(|| {
            mate.answered = true;
            mate.id.clone()
        });
        if self.list.len() == sh.cfg.room_size - 1 && self.list.iter().all(|m| m.got >= PER_MATE) {
            self.finish(sh);
        }
        answer
    }

    /// Counted done (once).
    fn finish(&mut self, sh: &Shared) {
        if !self.done {
            self.done = true;
            sh.done.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn offers(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|m| m.initiator)
            .map(|m| m.id.clone())
            .collect()
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// One peer, start to end; never panics on what the server sends.
async fn peer(sh: Arc<Shared>, room: usize, idx: usize, global: usize) -> PeerResult {
    let mut res = PeerResult::default();
    if let Err(e) = peer_inner(&sh, room, idx, global, &mut res).await {
        res.errors.push(format!("peer {room}/{idx}: {e:#}"));
    }
    if !res.errors.is_empty() {
        sh.failed.fetch_add(1, Ordering::SeqCst);
    }
    res
}

/// Connect (within the connect semaphore), join and wait for `joined` (PeerJS: `OPEN`).
async fn join(
    sh: &Shared,
    room: usize,
    idx: usize,
    global: usize,
    res: &mut PeerResult,
) -> Result<(Ws, Mates)> {
    let cfg = &sh.cfg;
    let ad = &cfg.adapter;
    let target = global % cfg.urls.len();
    let permit = sh.connect.acquire().await?;
    let t0 = Instant::now();
    let tcp = TcpStream::connect(cfg.addrs[target]).await?;
    tcp.set_nodelay(true)?;
    let req = ad.request(&cfg.urls[target], room, idx)?;
    // tungstenite preallocates its read buffer (128 KiB by default) per connection: 2.5 GB
    // for 20k peers. Signaling frames are small; 8 KiB grows on demand like any BytesMut.
    let ws_config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config)).await?;
    if let Some(j) = ad.join_frame(room, idx) {
        ws.send(Message::Text(j.into())).await?;
    }
    let (me, peers) = loop {
        let Some(frame) = ws.next().await else {
            anyhow::bail!("closed before joining");
        };
        if let Message::Text(t) = frame? {
            match ad.parse(&t) {
                Incoming::Joined { me, peers } => break (me, peers),
                Incoming::Error(e) => anyhow::bail!("while joining: {e}"),
                _ => {}
            }
        }
    };
    res.join_us = Some(t0.elapsed().as_micros() as u64);
    drop(permit);
    sh.joined.fetch_add(1, Ordering::SeqCst);
    // PeerJS: the id is ours by construction, and so are the mates'.
    let me = if me.is_empty() {
        ad.own_id(room, idx).unwrap_or_default()
    } else {
        me
    };
    let mut mates = Mates::new(me, cfg.room_size);
    match ad.mates(room, idx, cfg.room_size) {
        Some(ids) => ids.into_iter().for_each(|id| mates.add(sh, id, false)),
        None => peers.into_iter().for_each(|id| mates.add(sh, id, true)),
    }
    mates.count_ready(sh);
    Ok((ws, mates))
}

async fn peer_inner(
    sh: &Shared,
    room: usize,
    idx: usize,
    global: usize,
    res: &mut PeerResult,
) -> Result<()> {
    let cfg = &sh.cfg;
    let ad = &cfg.adapter;
    let k = cfg.room_size;
    let (ws, mut mates) = join(sh, room, idx, global, res).await?;
    let (mut tx, mut rx) = ws.split();
    let mut start = sh.start.clone();
    let mut stop = sh.stop.clone();
    let mut started = false;
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let spread_at = if cfg.spread.is_zero() {
        Duration::ZERO
    } else {
        let rooms = cfg.peers.div_ceil(k).max(1);
        cfg.spread.mul_f64(room as f64 / rooms as f64)
    };
    let go = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(go);
    let mut go_armed = false;
    loop {
        tokio::select! {
            frame = rx.next() => {
                let Some(frame) = frame else { anyhow::bail!("server closed the connection") };
                let Message::Text(t) = frame? else { continue };
                match ad.parse(&t) {
                    Incoming::PeerJoined(id) => mates.add(sh, id, false),
                    Incoming::Signal { kind, from, ts } => {
                        if let Some(to) = mates.on_signal(sh, kind, &from, ts, res) {
                            send_burst(sh, &mut tx, Kind::Answer, &to, res).await?;
                        }
                    }
                    Incoming::Joined { .. } => res.errors.push("second joined".into()),
                    Incoming::Ignore => {}
                    Incoming::Error(e) => {
                        if res.errors.len() < MAX_ERROR_SAMPLES {
                            res.errors.push(e);
                        }
                    }
                }
            }
            r = start.changed(), if !started => {
                r?;
                started = true;
                go.as_mut().reset(tokio::time::Instant::now() + spread_at);
                go_armed = true;
            }
            () = &mut go, if go_armed => {
                go_armed = false;
                for to in mates.offers() {
                    send_burst(sh, &mut tx, Kind::Offer, &to, res).await?;
                }
                if k == 1 {
                    mates.finish(sh);
                }
            }
            _ = keepalive.tick() => {
                tx.send(Message::Text(ad.keepalive().into())).await?;
            }
            r = stop.changed() => {
                r?;
                break;
            }
        }
    }
    let _ = tx.send(Message::Close(None)).await;
    // Let the close handshake finish (bounded) so the server sees a clean close.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = rx.next().await {}
    })
    .await;
    Ok(())
}

/// An offer or answer to `to`, then the candidates, written in one flush.
async fn send_burst<S>(
    sh: &Shared,
    tx: &mut S,
    kind: Kind,
    to: &str,
    res: &mut PeerResult,
) -> Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let ad = &sh.cfg.adapter;
    tx.feed(Message::Text(
        ad.signal(kind, to, now_ns(sh.epoch), 0).into(),
    ))
    .await?;
    for seq in 0..CANDIDATES {
        tx.feed(Message::Text(
            ad.signal(Kind::Candidate, to, now_ns(sh.epoch), seq).into(),
        ))
        .await?;
    }
    tx.flush().await?;
    res.sent += PER_MATE as u64;
    Ok(())
}

fn samples(pids: &[(String, u32)]) -> Result<Vec<Sample>> {
    pids.iter().map(|(_, p)| procstat::sample(*p)).collect()
}

async fn wait_for(mut what: impl FnMut() -> bool, deadline: Instant, progress: impl Fn()) -> bool {
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if what() {
            return true;
        }
        if last.elapsed() > Duration::from_secs(5) {
            progress();
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    what()
}

/// Run the whole thing; `group` and `server` name it in the report.
pub async fn run(cfg: Config, group: String, server: String) -> Result<Report> {
    let k = cfg.room_size;
    anyhow::ensure!(k >= 1 && cfg.peers >= k, "need peers >= room size >= 1");
    let n = cfg.peers / k * k;
    let pids = cfg.pids.clone();
    let hold = cfg.hold;
    let (start_tx, start_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = Arc::new(Shared::new(cfg, start_rx, stop_rx));
    let load_before = procstat::loadavg();
    let before = samples(&pids)?;
    let t_join = Instant::now();
    // Room r holds peers g with g / k == r; peers of a room land on different replicas.
    let tasks: Vec<_> = (0..n)
        .map(|g| tokio::spawn(peer(sh.clone(), g / k, g % k, g)))
        .collect();
    join_phase(&sh, n, t_join).await;
    let join_s = t_join.elapsed().as_secs_f64();
    let connected = sh.joined.load(Ordering::SeqCst);
    // Let the servers settle (allocations from the join burst) before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let joined = samples(&pids)?;
    if let Some(perf) = &sh.cfg.perf {
        perf.send("enable").await?;
    }
    let (busy0, total0) = procstat::machine_cpu();
    let t_ex = Instant::now();
    let _ = start_tx.send(true);
    let exchange_s = exchange_phase(&sh, n, t_ex).await;
    let (busy1, total1) = procstat::machine_cpu();
    let after = samples(&pids)?;
    if let Some(perf) = &sh.cfg.perf {
        perf.send("disable").await?;
    }
    let load_after = procstat::loadavg();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let _ = stop_tx.send(true);

    let expected = (n * (k - 1) * PER_MATE) as u64;
    let got = collect(tasks, expected).await?;
    let procs: Vec<ProcReport> = pids
        .iter()
        .enumerate()
        .map(|(i, (name, pid))| proc_report(name, *pid, before[i], joined[i], after[i], connected))
        .collect();
    let total = total_of(&procs, connected);
    let cpu_us_per_message = if got.received > 0 {
        total.exchange_cpu_s * 1e6 / got.received as f64
    } else {
        0.0
    };
    Ok(Report {
        group,
        server,
        protocol: sh.cfg.adapter.name().to_owned(),
        peers: n,
        room_size: k,
        connected,
        join_s,
        join: Percentiles::of(&got.join),
        relay: Percentiles::of(&got.relay),
        expected_messages: expected,
        received_messages: got.received,
        sent_messages: got.sent,
        exchange_s,
        messages_per_s: got.received as f64 / exchange_s.max(1e-9),
        errors: got.errors,
        error_samples: got.error_samples,
        procs,
        total,
        cpu_us_per_message,
        cpu_runs: Vec::new(),
        loadavg_before: load_before,
        loadavg_after: load_after,
        machine_busy_exchange: (busy1 - busy0) / (total1 - total0).max(1e-9),
    })
}

/// Until every peer has joined and knows all its room mates (presence has arrived), or the
/// phase bound.
async fn join_phase(sh: &Shared, n: usize, t_join: Instant) {
    let phase_timeout = sh.cfg.phase_timeout;
    let failed = || sh.failed.load(Ordering::SeqCst);
    wait_for(
        || sh.joined.load(Ordering::SeqCst) + failed() >= n,
        t_join + phase_timeout,
        || progress(sh, n, "joined", &sh.joined),
    )
    .await;
    wait_for(
        || sh.ready.load(Ordering::SeqCst) + failed() >= n,
        t_join + phase_timeout,
        || progress(sh, n, "ready", &sh.ready),
    )
    .await;
}

/// A progress line of a phase: how many of the `n` peers are `what`, and how many failed.
fn progress(sh: &Shared, n: usize, what: &str, c: &AtomicUsize) {
    eprintln!(
        "otter-load: {what} {}/{n}, failed {}",
        c.load(Ordering::SeqCst),
        sh.failed.load(Ordering::SeqCst)
    );
}

/// The exchange ends when every peer has everything, at the phase bound, or when nothing has
/// arrived for STALL (messages were lost: waiting longer would not bring them). Its duration.
async fn exchange_phase(sh: &Shared, n: usize, t_ex: Instant) -> f64 {
    let mut last = (0usize, Instant::now());
    wait_for(
        || {
            let got = sh.received.load(Ordering::Relaxed);
            if got != last.0 {
                last = (got, Instant::now());
            }
            sh.done.load(Ordering::SeqCst) + sh.failed.load(Ordering::SeqCst) >= n
                || last.1.elapsed() > STALL
        },
        t_ex + sh.cfg.phase_timeout,
        || progress(sh, n, "exchanged", &sh.done),
    )
    .await;
    if last.1.elapsed() > STALL {
        // Rate over the time messages were actually arriving.
        (last.1 - t_ex).as_secs_f64()
    } else {
        t_ex.elapsed().as_secs_f64()
    }
}

/// What every peer measured, merged.
struct Collected {
    join: Histogram<u64>,
    relay: Histogram<u64>,
    received: u64,
    sent: u64,
    errors: usize,
    error_samples: Vec<String>,
}

/// Wait (30 s at most) for every peer's result and merge them; fewer than `expected` messages
/// received is an error.
async fn collect(
    tasks: Vec<tokio::task::JoinHandle<PeerResult>>,
    expected: u64,
) -> Result<Collected> {
    let mut got = Collected {
        join: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?,
        relay: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?,
        received: 0,
        sent: 0,
        errors: 0,
        error_samples: Vec::new(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let r = match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => PeerResult {
                errors: vec![format!("peer task failed: {e}")],
                ..Default::default()
            },
            Err(_) => PeerResult {
                errors: vec!["peer did not finish in time".into()],
                ..Default::default()
            },
        };
        if let Some(j) = r.join_us {
            got.join.saturating_record(j.max(1));
        }
        for v in r.relay_us {
            got.relay.saturating_record(v.max(1));
        }
        got.received += r.received;
        got.sent += r.sent;
        got.errors += r.errors.len();
        let room = MAX_ERROR_SAMPLES.saturating_sub(got.error_samples.len());
        got.error_samples.extend(r.errors.into_iter().take(room));
    }
    if got.received < expected {
        got.errors += 1;
        got.error_samples.push(format!(
            "{} of {expected} expected messages never arrived",
            expected - got.received
        ));
    }
    Ok(got)
}

/// The servers' processes summed, as one.
fn total_of(procs: &[ProcReport], connected: usize) -> ProcReport {
    let add = |get: fn(&ProcReport) -> Sample| {
        procs.iter().fold(Sample::default(), |a, p| Sample {
            rss_kib: a.rss_kib + get(p).rss_kib,
            cpu_s: a.cpu_s + get(p).cpu_s,
        })
    };
    proc_report(
        "total",
        0,
        add(|p| p.before),
        add(|p| p.joined),
        add(|p| p.after),
        connected,
    )
}

fn proc_report(
    name: &str,
    pid: u32,
    before: Sample,
    joined: Sample,
    after: Sample,
    connected: usize,
) -> ProcReport {
    ProcReport {
        name: name.to_owned(),
        pid,
        before,
        joined,
        after,
        kib_per_conn: (joined.rss_kib as f64 - before.rss_kib as f64) / connected.max(1) as f64,
        exchange_cpu_s: after.cpu_s - joined.cpu_s,
        total_cpu_s: after.cpu_s - before.cpu_s,
    }
}
