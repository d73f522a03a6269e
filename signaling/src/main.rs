use std::io::IsTerminal;

use clap::Parser;
use otter_signaling::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_env("OTTER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only where a person reads them: not in files, journals or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    otter_signaling::server::run(config).await
}
