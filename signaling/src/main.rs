use std::io::IsTerminal;

use clap::Parser;
use otter_signaling::config::{Config, LogFormat};
use otter_signaling::turn_exporter;
use tracing_subscriber::EnvFilter;

/// The subcommand that runs the TURN metrics exporter instead of the server (a sidecar of coturn
/// in the same image, see `turn_exporter`).
const TURN_EXPORTER: &str = "turn-exporter";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Dispatched before the server's flags so those stay as they are; `--help` of the server
    // mentions it (config.rs).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == TURN_EXPORTER) {
        let exporter = turn_exporter::run::Args::parse_from(std::env::args_os().skip(1));
        init_logging(exporter.log_format);
        return turn_exporter::run::run(exporter).await;
    }
    let config = Config::parse();
    init_logging(config.log_format);
    otter_signaling::server::run(config).await
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("OTTER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only where a person reads them: not in files, journals or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
