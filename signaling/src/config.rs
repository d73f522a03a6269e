//! Command-line flags and `OTTER_*` environment variables. Every setting has both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Otter's signaling server: WebSocket rooms for peer-to-peer WebRTC calls, short-lived TURN
/// credentials, the browser SDK (`/otter.js`) and a demo call page (`/`).
#[derive(Debug, Clone, Parser)]
#[command(name = "otter-signaling", version, about, long_about = None,
    after_help = "Also: `otter-signaling turn-exporter --help`, Prometheus metrics of a coturn that publishes to Redis.")]
pub struct Config {
    /// Address to listen on (HTTP, WebSocket, health; metrics too unless --metrics-listen).
    #[arg(long, env = "OTTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Separate address for `/metrics` (e.g. `0.0.0.0:9090`); the main port then serves no
    /// metrics, so a public LoadBalancer never exposes them.
    #[arg(long, env = "OTTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A client must send its request headers within this time (slowloris bound).
    #[arg(long, env = "OTTER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Public URL clients use to reach this server (logged at start; informational).
    #[arg(long, env = "OTTER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Redis URL for room state shared by several replicas (`redis://` or `rediss://`, with
    /// `user:password@` for ACLs). Without it, state is in memory and the server runs alone.
    #[arg(long, env = "OTTER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA(s) that sign the Redis server's certificate, for `rediss://` URLs
    /// whose server is not trusted by the system's roots (ElastiCache needs none).
    #[arg(long, env = "OTTER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Secret that room tokens (HS256 JWT) are signed with. Without one, rooms are open.
    #[arg(
        long,
        env = "OTTER_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "token_secret_file"
    )]
    pub token_secret: Option<String>,

    /// File holding the room-token secret (trailing whitespace is ignored).
    #[arg(long, env = "OTTER_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// Refuse room tokens whose `exp` is further away than this (e.g. `15m`). Default: any.
    #[arg(long, env = "OTTER_MAX_TOKEN_LIFETIME", value_parser = humantime::parse_duration)]
    pub max_token_lifetime: Option<Duration>,

    /// Each room token admits one seat: tokens need a `jti`, and a used `jti` is refused
    /// until the token expires (kept in the room store, so across replicas with Redis).
    #[arg(long, env = "OTTER_SINGLE_USE_TOKENS")]
    pub single_use_tokens: bool,

    /// Secret shared with coturn (`static-auth-secret`); TURN credentials are minted from it.
    #[arg(
        long,
        env = "OTTER_TURN_SECRET",
        hide_env_values = true,
        conflicts_with = "turn_secret_file"
    )]
    pub turn_secret: Option<String>,

    /// File holding the TURN shared secret (trailing whitespace is ignored).
    #[arg(long, env = "OTTER_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,

    /// Lifetime of minted TURN credentials.
    #[arg(long, env = "OTTER_TURN_TTL", default_value = "6h", value_parser = humantime::parse_duration)]
    pub turn_ttl: Duration,

    /// TURN URIs handed to clients, comma separated (e.g. `turn:203.0.113.7:3478?transport=udp`).
    #[arg(long, env = "OTTER_TURN_URIS", value_delimiter = ',')]
    pub turn_uris: Vec<String>,

    /// STUN URIs handed to clients, comma separated (e.g. `stun:203.0.113.7:3478`).
    #[arg(long, env = "OTTER_STUN_URIS", value_delimiter = ',')]
    pub stun_uris: Vec<String>,

    /// Relay-only media: hand out TURN servers only, no STUN, so peers gather no public
    /// address candidates (clients also set `iceTransportPolicy: "relay"`).
    #[arg(long, env = "OTTER_RELAY_ONLY")]
    pub relay_only: bool,

    /// JSON file with `{"stunUris": [...], "turnUris": [...]}`, re-read when it changes; its
    /// URIs are used in addition to the flags. The operator writes it.
    #[arg(long, env = "OTTER_ICE_CONFIG")]
    pub ice_config: Option<PathBuf>,

    /// How often the ICE config file is checked for changes.
    #[arg(long, env = "OTTER_ICE_CONFIG_POLL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub ice_config_poll: Duration,

    /// Browser origins allowed to open the WebSocket, comma separated (e.g.
    /// `https://app.example.com`). Empty: any origin.
    #[arg(long, env = "OTTER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Seats per room; a join beyond it gets `room-full`.
    #[arg(long, env = "OTTER_MAX_PEERS_PER_ROOM", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_peers_per_room: u32,

    /// Largest WebSocket frame accepted, in bytes; a larger one closes the connection.
    #[arg(long, env = "OTTER_MAX_MESSAGE_BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_message_bytes: u32,

    /// Sustained messages per second per connection.
    #[arg(long, env = "OTTER_RATE_LIMIT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,

    /// Messages a connection may send in a burst above the sustained rate.
    #[arg(long, env = "OTTER_RATE_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// A connection that sends nothing for this long is closed.
    #[arg(long, env = "OTTER_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// A connection that holds no seat this long after connecting (or leaving) is closed.
    #[arg(long, env = "OTTER_JOIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub join_timeout: Duration,

    /// How often the server pings each client (browsers answer by themselves).
    #[arg(long, env = "OTTER_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// How long a peer whose connection dropped keeps its seat, so it can resume.
    #[arg(long, env = "OTTER_RECONNECT_GRACE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub reconnect_grace: Duration,

    /// Most WebSocket connections this server holds at once.
    #[arg(long, env = "OTTER_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// On SIGTERM/SIGINT: how long to wait for clients to go after telling them to reconnect.
    #[arg(long, env = "OTTER_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Replica lease lifetime in Redis; peers of a replica that stops renewing are removed after it.
    #[arg(long, env = "OTTER_REPLICA_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub replica_lease: Duration,

    /// Log format.
    #[arg(long, env = "OTTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings that cannot be expressed as a flag type check.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} from {path}: {source}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is empty")]
    EmptySecret { what: &'static str },
    #[error("--idle-timeout ({idle:?}) must be longer than --ping-interval ({ping:?})")]
    IdleBelowPing { idle: Duration, ping: Duration },
    #[error("--rate-burst ({burst}) must be at least --rate-limit ({rate})")]
    BurstBelowRate { burst: u32, rate: u32 },
    #[error("origin {0:?} must look like scheme://host[:port] with no path")]
    BadOrigin(String),
}

/// The two secrets, resolved from a flag or a file.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<Vec<u8>>,
    pub turn: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("turn", &self.turn.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Config {
    /// Cross-field checks and secret loading, done once at start.
    pub fn validate(&self) -> Result<Secrets, ConfigError> {
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleBelowPing {
                idle: self.idle_timeout,
                ping: self.ping_interval,
            });
        }
        if self.rate_burst < self.rate_limit {
            return Err(ConfigError::BurstBelowRate {
                burst: self.rate_burst,
                rate: self.rate_limit,
            });
        }
        for origin in &self.allowed_origins {
            if !valid_origin(origin) {
                return Err(ConfigError::BadOrigin(origin.clone()));
            }
        }
        Ok(Secrets {
            token: load_secret(
                "room-token secret",
                &self.token_secret,
                &self.token_secret_file,
            )?,
            turn: load_secret("TURN secret", &self.turn_secret, &self.turn_secret_file)?,
        })
    }
}

fn valid_origin(origin: &str) -> bool {
    match origin.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty() && !rest.is_empty() && !rest.contains('/') && !rest.contains('?')
        }
        None => false,
    }
}

fn load_secret(
    what: &'static str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let value = match (inline, file) {
        (Some(v), _) => v.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadSecret {
                what,
                path: path.clone(),
                source,
            })?
        }
        (None, None) => return Ok(None),
    };
    let trimmed = value.trim_end();
    if trimmed.is_empty() {
        return Err(ConfigError::EmptySecret { what });
    }
    Ok(Some(trimmed.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut full = vec!["otter-signaling"];
        full.extend_from_slice(args);
        Config::try_parse_from(full).expect("flags parse")
    }

    #[test]
    fn defaults_are_sane() {
        let c = parse(&[]);
        assert_eq!(c.max_peers_per_room, 6);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn idle_must_exceed_ping() {
        let c = parse(&["--idle-timeout", "5s", "--ping-interval", "10s"]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::IdleBelowPing { .. })
        ));
    }

    #[test]
    fn origins_are_checked() {
        let c = parse(&[
            "--allowed-origins",
            "https://a.example,https://b.example/path",
        ]);
        assert!(matches!(c.validate(), Err(ConfigError::BadOrigin(o)) if o.ends_with("/path")));
    }

    #[test]
    fn secret_files_are_trimmed_and_empty_is_refused() {
        let dir_kept = tempfile::TempDir::with_prefix("otter-cfg-").expect("a temp dir");
        let dir = dir_kept.path();
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\n").expect("write");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let c = parse(&["--turn-secret-file", good.to_str().expect("utf8")]);
        assert_eq!(
            c.validate().expect("valid").turn.as_deref(),
            Some(&b"s3cret"[..])
        );
        let c = parse(&["--token-secret-file", empty.to_str().expect("utf8")]);
        assert!(matches!(c.validate(), Err(ConfigError::EmptySecret { .. })));
    }
}
