//! Connecting to Redis: the two clients (commands, and pub/sub), TLS with a private CA.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("{0}")]
    Redis(#[from] fred::error::Error),
    #[error("cannot read the Redis CA file {path}: {why}")]
    CaFile {
        path: std::path::PathBuf,
        why: String,
    },
}

/// Messages the subscriber may hold before our task reads them. fred gives every client nine
/// broadcast channels of this capacity, each slot allocated up front: 65,536 here cost ~100 MiB
/// of idle RSS per replica. The publisher batches frames (one message per burst per replica),
/// so a few thousand messages is deep: a lag is logged as an error.
const SUBSCRIBER_CAPACITY: usize = 4096;

/// How long a membership change (join, resume, leave, the presence broadcast) may wait for
/// Redis. Long: under load (tens of thousands of peers joining on two busy cores) scripts queue
/// for seconds, and failing a join costs the user more than waiting for it. Relayed frames wait
/// less ([`super::RELAY_TIMEOUT`]); when Redis is known to be away nothing waits
/// ([`super::RedisStore::reachable`]).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS that trusts the CA certificates in a PEM file.
fn tls_with_ca(
    path: &std::path::Path,
) -> Result<fred::types::config::TlsConnector, RedisSetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let fail = |why: String| RedisSetupError::CaFile {
        path: path.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificates in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

/// The command client and the subscriber, connecting in the background (the server reports
/// not-ready until Redis answers).
pub fn clients(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(Client, SubscriberClient), RedisSetupError> {
    let mut config = Config::from_url(url)?;
    if let Some(path) = ca_file {
        config.tls = Some(tls_with_ca(path)?.into());
    }
    // Keep retrying the first connection too: Redis may start after us in a cluster.
    config.fail_fast = false;
    let policy = ReconnectPolicy::new_exponential(0, 100, 2_000, 2);
    let build = |b: &mut Builder, capacity: usize| {
        b.with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = capacity;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .set_policy(policy.clone());
    };
    let mut b = Builder::from_config(config.clone());
    // The command client's broadcast channels carry nothing we read: fred's default.
    build(&mut b, 32);
    let client = b.build()?;
    let mut b = Builder::from_config(config);
    build(&mut b, SUBSCRIBER_CAPACITY);
    let subscriber = b.build_subscriber_client()?;
    client.connect();
    subscriber.connect();
    Ok((client, subscriber))
}
