//! `otter-operator`: run the controller (without a subcommand), or print the CRD (`crd`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use otter_operator::http::{self, Health};
use otter_operator::leader::{self, LeaseElector, Timing};
use otter_operator::metrics::Metrics;
use otter_operator::observed::Images;
use otter_operator::reconcile::{self, Context, watch};
use tokio::sync::watch as flag;

/// Kubernetes operator for Otter: one OtterDeployment becomes a WebRTC calling backend
/// (signaling, a TURN relay on host networking, Redis, and the Secrets tying them together).
#[derive(Parser, Debug)]
#[command(
    name = "otter-operator",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the OtterDeployment CustomResourceDefinition as YAML (what crds/ holds).
    Crd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "OTTER_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Watch OtterDeployments (and their children) in this namespace only; all namespaces when
    /// unset.
    #[arg(long, env = "OTTER_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Elect a leader with a Lease so several replicas can run; only the leader reconciles.
    #[arg(long, env = "OTTER_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "OTTER_OPERATOR_LEASE_NAME",
        default_value = "otter-operator"
    )]
    lease_name: String,

    /// Namespace of the Lease; defaults to the operator's own namespace (in-cluster) or the
    /// kubeconfig's.
    #[arg(long, env = "OTTER_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// How long a Lease is valid without renewal (e.g. 15s).
    #[arg(long, env = "OTTER_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,

    /// How often the leader renews, and a standby retries (e.g. 5s).
    #[arg(long, env = "OTTER_OPERATOR_LEASE_RENEW_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    lease_renew_interval: Duration,

    /// Identity in the Lease and in Events; defaults to the pod name (POD_NAME or HOSTNAME).
    #[arg(long, env = "OTTER_OPERATOR_IDENTITY")]
    identity: Option<String>,

    /// How often a Ready OtterDeployment is reconciled though nothing changed. A safety net
    /// only: the children, TURN Nodes and pods, and the Secrets it names are all watched.
    #[arg(long, env = "OTTER_OPERATOR_RESYNC", default_value = "10h", value_parser = humantime::parse_duration)]
    resync: Duration,

    /// How often the TURN relays of a Ready OtterDeployment are probed again
    /// (`turn.probe.enabled`).
    #[arg(long, env = "OTTER_OPERATOR_TURN_PROBE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    turn_probe_interval: Duration,

    /// OtterDeployments reconciled at once at most (0: no bound).
    #[arg(long, env = "OTTER_OPERATOR_CONCURRENCY", default_value_t = reconcile::DEFAULT_CONCURRENCY)]
    concurrency: u16,

    /// Signaling image used when the spec names none.
    #[arg(long, env = "OTTER_OPERATOR_SIGNALING_IMAGE", default_value_t = Images::default().signaling)]
    signaling_image: String,

    /// coturn image used when the spec names none.
    #[arg(long, env = "OTTER_OPERATOR_TURN_IMAGE", default_value_t = Images::default().turn)]
    turn_image: String,

    /// Redis image used when the spec names none.
    #[arg(long, env = "OTTER_OPERATOR_REDIS_IMAGE", default_value_t = Images::default().redis)]
    redis_image: String,

    /// Log format.
    #[arg(long, env = "OTTER_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info,otter_operator=debug`).
    #[arg(long, env = "OTTER_OPERATOR_LOG", default_value = "info")]
    log: String,
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("invalid --log filter {:?}", args.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn default_identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!(
                "otter-operator-{}",
                &otter_operator::observed::FreshSecrets::generate().turn[..8]
            )
        })
}

/// A client that has reached the API server, counting its requests in `metrics`.
async fn connect(metrics: &Metrics) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("cannot find a Kubernetes config (in-cluster or kubeconfig)")?;
    let counter = metrics.api_requests.clone();
    let count =
        tower::util::MapRequestLayer::new(move |req: ::http::Request<kube::client::Body>| {
            counter.inc();
            req
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .context("cannot build a Kubernetes client")?
        .with_layer(&count)
        .build();
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    tracing::info!(version = %version.git_version, "connected to the Kubernetes API server");
    Ok(client)
}

/// The Lease elector: `--lease-namespace`, else the client's default namespace.
fn elector(args: &RunArgs, client: &kube::Client, identity: &str) -> LeaseElector {
    let ns = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    tracing::info!(lease = %format!("{ns}/{}", args.lease_name), %identity, "leader election on");
    LeaseElector::new(
        client.clone(),
        &ns,
        &args.lease_name,
        identity,
        args.lease_duration,
    )
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = flag::channel(false);

    // Health first, so a standby replica is observable while it waits for the Lease.
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let server = tokio::spawn(http::serve(
        args.listen,
        health,
        leader::wait_for_any(vec![stop_rx.clone()]),
    ));

    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            otter_shutdown::termination().await;
            tracing::info!("termination signal received, shutting down");
            let _ = stop_tx.send(true);
        });
    }

    let client = connect(&metrics).await?;
    ready.store(true, Ordering::Relaxed);
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let elector = args
        .leader_election
        .then(|| elector(&args, &client, &identity));
    let ctx = context(&args, client, &metrics, identity);
    let namespace = args.namespace.clone();
    let gauge = metrics.leader.clone();
    leader::run_terms(
        elector.clone(),
        Timing::new(args.lease_duration, args.lease_renew_interval),
        stop_rx.clone(),
        |leading| {
            gauge.set(i64::from(leading));
        },
        |ended| {
            tracing::info!(
                namespace = namespace.as_deref().unwrap_or("<all>"),
                "starting the controller"
            );
            watch::run(ctx.clone(), namespace.clone(), ended)
        },
    )
    .await;
    let _ = stop_tx.send(true);
    shut_down(elector.as_ref(), server).await;
    Ok(())
}

/// The controller's shared context from the command line.
fn context(
    args: &RunArgs,
    client: kube::Client,
    metrics: &Metrics,
    identity: String,
) -> Arc<Context> {
    Arc::new(
        Context::new(
            client,
            Images {
                signaling: args.signaling_image.clone(),
                turn: args.turn_image.clone(),
                redis: args.redis_image.clone(),
            },
            metrics.clone(),
            identity,
            args.resync,
        )
        .with_concurrency(args.concurrency)
        .with_probe_interval(args.turn_probe_interval),
    )
}

/// After the controller stopped: give the Lease back at once (a standby need not wait for it to
/// expire), then let the health server finish.
async fn shut_down(
    elector: Option<&LeaseElector>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    if let Some(e) = elector {
        match e.release().await {
            Ok(()) => tracing::info!("released the leader lease (if held)"),
            Err(err) => tracing::warn!(error = %err, "could not release the leader lease"),
        }
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "health server failed"),
        Err(e) => tracing::warn!(error = %e, "health server task failed"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", otter_operator::crd::crd_yaml()?);
            Ok(())
        }
        None => runtime()?.block_on(run(cli.run)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_help_and_an_env_var() {
        Cli::command().debug_assert();
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{id} has no help");
            let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
            assert!(
                env.as_deref()
                    .is_some_and(|e| e.starts_with("OTTER_OPERATOR_")),
                "--{id} has no OTTER_OPERATOR_* env var"
            );
        }
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["otter-operator"]).unwrap();
        assert!(cli.command.is_none());
        assert!(cli.run.leader_election);
        assert_eq!(cli.run.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.run.turn_image, "docker.io/coturn/coturn:4.6.3");
        assert_eq!(cli.run.concurrency, reconcile::DEFAULT_CONCURRENCY);
        assert_eq!(cli.run.resync, Duration::from_secs(10 * 3600));
        assert_eq!(
            cli.run.turn_probe_interval,
            reconcile::DEFAULT_PROBE_INTERVAL
        );
        let cli = Cli::try_parse_from([
            "otter-operator",
            "--leader-election",
            "false",
            "--resync",
            "1m",
            "--concurrency",
            "4",
        ])
        .unwrap();
        assert!(!cli.run.leader_election);
        assert_eq!(cli.run.resync, Duration::from_secs(60));
        assert_eq!(cli.run.concurrency, 4);
        let cli = Cli::try_parse_from(["otter-operator", "crd"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Crd)));
    }
}
