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
}

#[derive(Debug, Default, Serialize, Deserialize)]
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

#[derive(Debug, Serialize, Deserialize)]
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

#[derive(Debug, Serialize, Deserialize)]
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
    let target = global % cfg.urls.len();
    let permit = sh.connect.acquire().await?;
    let t0 = Instant::now();
    let tcp = TcpStream::connect(cfg.addrs[target]).await?;
    tcp.set_nodelay(true)?;
    let req = ad.request(&cfg.urls[target], room, idx)?;
    // tungstenite preallocates its read buffer (128 KiB by default) per connection: 2.5 GB
    // for 20k peers. Signaling frames are small; 8 KiB grows on demand like any BytesMut.
    let ws_config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config)).await?;
    let (mut tx, mut rx) = ws.split();
    if let Some(j) = ad.join_frame(room, idx) {
        tx.send(Message::Text(j.into())).await?;
    }
    let mut mates: Vec<Mate> = Vec::with_capacity(k.saturating_sub(1));
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(k);
    let add_mate = |mates: &mut Vec<Mate>,
                    by_id: &mut HashMap<String, usize>,
                    me: &str,
                    id: String,
                    from_joined: bool| {
        // Presence is idempotent for clients (docs/protocol.md): a mate may be announced twice.
        if by_id.contains_key(&id) {
            return;
        }
        let initiator = ad.initiates(me, &id, from_joined);
        by_id.insert(id.clone(), mates.len());
        mates.push(Mate {
            id,
            initiator,
            answered: false,
            got: 0,
        });
    };
    let me: String;
    // Wait for joined/OPEN.
    loop {
        let Some(frame) = rx.next().await else {
            anyhow::bail!("closed before joining");
        };
        if let Message::Text(t) = frame? {
            match ad.parse(&t) {
                Incoming::Joined { me: m, peers } => {
                    // PeerJS: the id is ours by construction.
                    me = if m.is_empty() {
                        ad.own_id(room, idx).unwrap_or_default()
                    } else {
                        m
                    };
                    match ad.mates(room, idx, k) {
                        Some(ids) => ids
                            .into_iter()
                            .for_each(|id| add_mate(&mut mates, &mut by_id, &me, id, false)),
                        None => peers
                            .into_iter()
                            .for_each(|id| add_mate(&mut mates, &mut by_id, &me, id, true)),
                    }
                    break;
                }
                Incoming::Error(e) => anyhow::bail!("while joining: {e}"),
                _ => {}
            }
        }
    }
    res.join_us = Some(t0.elapsed().as_micros() as u64);
    drop(permit);
    sh.joined.fetch_add(1, Ordering::SeqCst);
    let mut ready_counted = false;
    if mates.len() == k - 1 {
        sh.ready.fetch_add(1, Ordering::SeqCst);
        ready_counted = true;
    }

    let mut start = sh.start.clone();
    let mut stop = sh.stop.clone();
    let mut started = false;
    let mut done = false;
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
                    Incoming::PeerJoined(id) => {
                        add_mate(&mut mates, &mut by_id, &me, id, false);
                        if !ready_counted && mates.len() == k - 1 {
                            sh.ready.fetch_add(1, Ordering::SeqCst);
                            ready_counted = true;
                        }
                    }
                    Incoming::Signal { kind, from, ts } => {
                        let lat_ns = now_ns(sh.epoch).saturating_sub(ts);
                        res.relay_us.push(lat_ns / 1000);
                        res.received += 1;
                        sh.received.fetch_add(1, Ordering::Relaxed);
                        let Some(&m) = by_id.get(&from) else {
                            res.errors.push(format!("message from unknown peer {from}"));
                            continue;
                        };
                        let mate = &mut mates[m];
                        mate.got += 1;
                        if mate.got > PER_MATE {
                            res.errors.push(format!("more than {PER_MATE} messages from {from}"));
                        }
                        if kind == Kind::Offer && !mate.initiator && !mate.answered {
                            mate.answered = true;
                            let to = mate.id.clone();
                            send_burst(sh, &mut tx, Kind::Answer, &to, res).await?;
                        }
                        if !done && mates.iter().all(|m| m.got >= PER_MATE) && mates.len() == k - 1 {
                            done = true;
                            sh.done.fetch_add(1, Ordering::SeqCst);
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
                let offers: Vec<String> = mates.iter().filter(|m| m.initiator).map(|m| m.id.clone()).collect();
                for to in offers {
                    send_burst(sh, &mut tx, Kind::Offer, &to, res).await?;
                }
                if k == 1 && !done {
                    done = true;
                    sh.done.fetch_add(1, Ordering::SeqCst);
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
    let n = cfg.peers;
    let k = cfg.room_size;
    anyhow::ensure!(k >= 1 && n >= k, "need peers >= room size >= 1");
    let rooms = n / k;
    let n = rooms * k;
    let pids = cfg.pids.clone();
    let phase_timeout = cfg.phase_timeout;
    let hold = cfg.hold;
    let (start_tx, start_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        connect: Semaphore::new(cfg.connect_concurrency.max(1)),
        cfg,
        epoch: Instant::now(),
        joined: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        received: AtomicUsize::new(0),
        start: start_rx,
        stop: stop_rx,
    });
    let load_before = procstat::loadavg();
    let before = samples(&pids)?;
    let t_join = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for g in 0..n {
        let sh = sh.clone();
        // Room r holds peers g with g / k == r; peers of a room land on different replicas.
        tasks.push(tokio::spawn(peer(sh, g / k, g % k, g)));
    }
    let all_in =
        |sh: &Shared| sh.joined.load(Ordering::SeqCst) + sh.failed.load(Ordering::SeqCst) >= n;
    let progress = |what: &'static str, c: &AtomicUsize| {
        eprintln!(
            "otter-load: {what} {}/{n}, failed {}",
            c.load(Ordering::SeqCst),
            sh.failed.load(Ordering::SeqCst)
        )
    };
    wait_for(
        || all_in(&sh),
        t_join + phase_timeout,
        || progress("joined", &sh.joined),
    )
    .await;
    // Everyone knows all room mates (presence has arrived) before the exchange starts.
    wait_for(
        || sh.ready.load(Ordering::SeqCst) + sh.failed.load(Ordering::SeqCst) >= n,
        t_join + phase_timeout,
        || progress("ready", &sh.ready),
    )
    .await;
    let join_s = t_join.elapsed().as_secs_f64();
    let connected = sh.joined.load(Ordering::SeqCst);
    // Let the servers settle (allocations from the join burst) before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let joined = samples(&pids)?;
    let (busy0, total0) = procstat::machine_cpu();
    let t_ex = Instant::now();
    let _ = start_tx.send(true);
    // The exchange ends when every peer has everything, at the phase bound, or when nothing
    // has arrived for STALL (messages were lost: waiting longer would not bring them).
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
        t_ex + phase_timeout,
        || progress("exchanged", &sh.done),
    )
    .await;
    let exchange_s = if last.1.elapsed() > STALL {
        // Rate over the time messages were actually arriving.
        (last.1 - t_ex).as_secs_f64()
    } else {
        t_ex.elapsed().as_secs_f64()
    };
    let (busy1, total1) = procstat::machine_cpu();
    let after = samples(&pids)?;
    let load_after = procstat::loadavg();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let _ = stop_tx.send(true);

    let mut join_h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut relay_h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut received, mut sent) = (0u64, 0u64);
    let mut errors = 0usize;
    let mut error_samples = Vec::new();
    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let r = match tokio::time::timeout_at(collect_deadline, t).await {
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
            join_h.saturating_record(j.max(1));
        }
        for v in r.relay_us {
            relay_h.saturating_record(v.max(1));
        }
        received += r.received;
        sent += r.sent;
        errors += r.errors.len();
        for e in r.errors {
            if error_samples.len() < MAX_ERROR_SAMPLES {
                error_samples.push(e);
            }
        }
    }
    let expected = (n * (k - 1) * PER_MATE) as u64;
    if received < expected {
        errors += 1;
        error_samples.push(format!(
            "{} of {expected} expected messages never arrived",
            expected - received
        ));
    }
    let procs: Vec<ProcReport> = pids
        .iter()
        .enumerate()
        .map(|(i, (name, pid))| proc_report(name, *pid, before[i], joined[i], after[i], connected))
        .collect();
    let add = |get: fn(&ProcReport) -> Sample| {
        procs.iter().fold(Sample::default(), |a, p| Sample {
            rss_kib: a.rss_kib + get(p).rss_kib,
            cpu_s: a.cpu_s + get(p).cpu_s,
        })
    };
    let total = proc_report(
        "total",
        0,
        add(|p| p.before),
        add(|p| p.joined),
        add(|p| p.after),
        connected,
    );
    let cpu_us_per_message = if received > 0 {
        total.exchange_cpu_s * 1e6 / received as f64
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
        join: Percentiles::of(&join_h),
        relay: Percentiles::of(&relay_h),
        expected_messages: expected,
        received_messages: received,
        sent_messages: sent,
        exchange_s,
        messages_per_s: received as f64 / exchange_s.max(1e-9),
        errors,
        error_samples,
        procs,
        total,
        cpu_us_per_message,
        loadavg_before: load_before,
        loadavg_after: load_after,
        machine_busy_exchange: (busy1 - busy0) / (total1 - total0).max(1e-9),
    })
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
