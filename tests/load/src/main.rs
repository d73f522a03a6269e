//! otter-load: signaling load generator (loopback only).
//!
//! `otter-load run` opens N WebSocket peers in rooms of k against Otter (protocol v1) or a
//! PeerJS server, has every pair of room mates exchange an offer, an answer and ten
//! candidates, and reports join and relay latency, messages per second, errors and the
//! servers' memory and CPU. `otter-load report DIR` turns a directory of JSON reports into the
//! markdown tables of docs/benchmarks.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use otter_load::{perfctl, proto, report, run};

#[derive(Parser)]
#[command(
    name = "otter-load",
    about = "Signaling load generator (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// Otter signaling protocol v1 (docs/protocol.md); URL `ws://127.0.0.1:PORT/ws`
    Otter,
    /// PeerJS server (npm `peer`); URL `ws://127.0.0.1:PORT/` (its `--path`)
    Peerjs,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Server WebSocket URL; repeat for replicas (peers are spread round robin).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Number of peers (rounded down to whole rooms).
    #[arg(long, short = 'n', default_value_t = 1000)]
    peers: usize,
    /// Peers per room.
    #[arg(long, short = 'k', default_value_t = 2)]
    room_size: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Spread the rooms' exchanges evenly over this window (0s: all at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    spread: Duration,
    /// Bound of each phase (join, exchange).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    phase_timeout: Duration,
    /// Keep the connections open this long after the exchange.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Server process to sample, NAME=PID; repeat (e.g. signaling-1=123 redis=456).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// Report group (a table of the markdown report).
    #[arg(long, default_value = "adhoc")]
    group: String,
    /// Name of the server setup in the report.
    #[arg(long)]
    server: Option<String>,
    /// Write the JSON report here (else to stdout after the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// CTL,ACK: the FIFOs of a running `perf record --control fifo:CTL,ACK -D -1`; perf
    /// is enabled for the exchange phase only (tests/bench/profile).
    #[arg(long, value_parser = perfctl::parse)]
    perf_control: Option<perfctl::PerfControl>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one load and print/write its report.
    Run(Box<RunArgs>),
    /// Markdown tables from every *.json report in DIR.
    Report {
        dir: PathBuf,
        /// Also write the charts' data files (tests/bench/charts.gp reads them) here.
        #[arg(long)]
        charts: Option<PathBuf>,
    },
}

fn parse_pid(s: &str) -> Result<(String, u32)> {
    let (name, pid) = s
        .split_once('=')
        .with_context(|| format!("--pid {s}: expected NAME=PID"))?;
    let pid: u32 = pid.parse().with_context(|| format!("--pid {s}: bad pid"))?;
    Ok((name.to_owned(), pid))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Report { dir, charts } => report_cmd(&dir, charts),
        Cmd::Run(args) => run_cmd(*args),
    }
}

/// `otter-load report DIR`: the markdown tables (and the charts' data) of the JSON reports.
fn report_cmd(dir: &std::path::Path, charts: Option<PathBuf>) -> Result<()> {
    let mut reports = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
        let r: run::Report =
            serde_json::from_str(&text).with_context(|| format!("parse {}", p.display()))?;
        reports.push(r);
    }
    print!("{}", report::markdown(&reports));
    if let Some(out) = charts {
        std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        for (name, text) in report::chart_data(&reports) {
            let path = out.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(())
}

/// `otter-load run`: one load, its report to stderr (human) and to --json or stdout (JSON).
fn run_cmd(mut args: RunArgs) -> Result<()> {
    // The whole run is bounded: two phases, the hold and the collection.
    let bound = args.phase_timeout * 2 + args.hold + Duration::from_secs(60);
    let json = args.json.take();
    if args.room_size == 0 || args.peers < args.room_size {
        bail!("need --peers >= --room-size >= 1");
    }
    let pids = args
        .pids
        .iter()
        .map(|p| parse_pid(p))
        .collect::<Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = rt.block_on(async move {
        let mut addrs = Vec::new();
        for u in &args.urls {
            addrs.push(proto::loopback_addr(u).await?);
        }
        let run_id = format!(
            "b{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 1_000_000)
                .unwrap_or(0)
        );
        let adapter: Arc<dyn proto::Adapter> = match args.protocol {
            Protocol::Otter => Arc::new(proto::OtterV1 { run: run_id }),
            Protocol::Peerjs => Arc::new(proto::PeerJs { run: run_id }),
        };
        let server = args.server.unwrap_or_else(|| adapter.name().to_owned());
        let cfg = run::Config {
            adapter,
            urls: args.urls,
            addrs,
            peers: args.peers,
            room_size: args.room_size,
            connect_concurrency: args.connect_concurrency,
            spread: args.spread,
            phase_timeout: args.phase_timeout,
            hold: args.hold,
            pids,
            perf: args.perf_control,
        };
        tokio::time::timeout(bound, run::run(cfg, args.group, server))
            .await
            .with_context(|| format!("run exceeded {bound:?}"))?
    })?;
    // Do not wait for stragglers.
    rt.shutdown_timeout(Duration::from_secs(1));
    eprint!("{}", report::human(&report));
    let text = serde_json::to_string_pretty(&report)?;
    match json {
        Some(p) => {
            std::fs::write(&p, text + "\n").with_context(|| format!("write {}", p.display()))?
        }
        None => println!("{text}"),
    }
    Ok(())
}
