//! Which STUN/TURN URIs clients get: the flags plus a JSON file that the operator writes and
//! that is re-read when it changes (a TURN node joining or leaving needs no restart). The TURN
//! secret file is re-read the same way: the operator changes it only once every TURN node
//! accepts the new value, so a rotation restarts no signaling pod.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::protocol::IceServer;
use crate::turn;

/// Contents of the ICE config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IceUris {
    #[serde(default)]
    pub stun_uris: Vec<String>,
    #[serde(default)]
    pub turn_uris: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IceConfigError {
    #[error("cannot read ICE config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ICE config {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("ICE config {path}: {uri:?} is not a stun:, turn: or turns: URI")]
    BadUri { path: PathBuf, uri: String },
}

pub fn parse_file(path: &Path, text: &str) -> Result<IceUris, IceConfigError> {
    let uris: IceUris = serde_json::from_str(text).map_err(|source| IceConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    if let Some(uri) = uris.first_bad_uri() {
        return Err(IceConfigError::BadUri {
            path: path.to_owned(),
            uri: uri.to_owned(),
        });
    }
    Ok(uris)
}

impl IceUris {
    /// The first URI with the wrong scheme for its list, if any.
    pub fn first_bad_uri(&self) -> Option<&str> {
        self.stun_uris
            .iter()
            .find(|u| !u.starts_with("stun:") && !u.starts_with("stuns:"))
            .or_else(|| {
                self.turn_uris
                    .iter()
                    .find(|u| !u.starts_with("turn:") && !u.starts_with("turns:"))
            })
            .map(String::as_str)
    }
}

/// The ICE servers a client gets, with a TURN credential when a secret is set. Pure.
pub fn build(uris: &IceUris, turn_secret: Option<&[u8]>, id: &str, expiry: u64) -> Vec<IceServer> {
    let mut out = Vec::new();
    if !uris.stun_uris.is_empty() {
        out.push(IceServer {
            urls: uris.stun_uris.clone(),
            username: None,
            credential: None,
        });
    }
    // TURN without a credential is useless to a browser, so no secret means no TURN URIs.
    if let (Some(secret), false) = (turn_secret, uris.turn_uris.is_empty()) {
        let c = turn::mint(secret, id, expiry);
        out.push(IceServer {
            urls: uris.turn_uris.clone(),
            username: Some(c.username),
            credential: Some(c.credential),
        });
    }
    out
}

/// Flags plus the current file contents, shared by all connections.
pub struct IceSource {
    flags: IceUris,
    file: RwLock<Arc<IceUris>>,
    turn_secret: RwLock<Option<Arc<[u8]>>>,
    ttl: Duration,
    /// Hand out TURN only: without STUN, browsers gather no server-reflexive candidates, and
    /// with `iceTransportPolicy: "relay"` peers never learn each other's addresses.
    relay_only: bool,
}

impl IceSource {
    pub fn new(flags: IceUris, turn_secret: Option<Vec<u8>>, ttl: Duration) -> Self {
        Self {
            flags,
            file: RwLock::new(Arc::new(IceUris::default())),
            turn_secret: RwLock::new(turn_secret.map(Arc::from)),
            ttl,
            relay_only: false,
        }
    }

    /// Relay-only mode (`--relay-only`): STUN URIs from the flags and the file are dropped.
    pub fn with_relay_only(mut self, on: bool) -> Self {
        self.relay_only = on;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn current(&self) -> IceUris {
        let file = self.file.read().map(|g| Arc::clone(&g)).unwrap_or_default();
        let mut all = self.flags.clone();
        for u in &file.stun_uris {
            if !all.stun_uris.contains(u) {
                all.stun_uris.push(u.clone());
            }
        }
        for u in &file.turn_uris {
            if !all.turn_uris.contains(u) {
                all.turn_uris.push(u.clone());
            }
        }
        if self.relay_only {
            all.stun_uris.clear();
        }
        all
    }

    fn set_file(&self, uris: IceUris) {
        if let Ok(mut g) = self.file.write() {
            *g = Arc::new(uris);
        }
    }

    /// ICE servers for one client, credentials valid for the TTL from now.
    pub fn servers_for(&self, id: &str) -> Vec<IceServer> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let secret = self
            .turn_secret
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(Arc::clone));
        build(
            &self.current(),
            secret.as_deref(),
            id,
            now + self.ttl.as_secs(),
        )
    }

    fn set_turn_secret(&self, secret: Vec<u8>) {
        if let Ok(mut g) = self.turn_secret.write() {
            *g = Some(Arc::from(secret));
        }
    }

    /// Re-read the TURN secret file every `every` (loaded once at start by the config): a new
    /// value is minted with from then on. An unreadable or empty file keeps the last value, so
    /// a Secret being replaced never leaves clients without TURN.
    pub fn watch_turn_secret(self: Arc<Self>, path: PathBuf, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut last: Option<Vec<u8>> = None;
            loop {
                tick.tick().await;
                let value = match read_to_string(&path).await {
                    Ok(t) => t.trim_end().as_bytes().to_vec(),
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the last TURN secret");
                        continue;
                    }
                };
                if value.is_empty() {
                    tracing::warn!(path = %path.display(), "empty TURN secret file: keeping the last TURN secret");
                    continue;
                }
                if last.as_ref() == Some(&value) {
                    continue;
                }
                let changed = last.is_some();
                last = Some(value.clone());
                self.set_turn_secret(value);
                if changed {
                    tracing::info!(path = %path.display(), "TURN secret changed: minting with the new one");
                }
            }
        });
    }

    /// Load the file once now (an error here is fatal at start: a typo should not go unseen),
    /// then poll it. A later bad edit keeps the last good contents and logs why.
    pub async fn watch(
        self: Arc<Self>,
        path: PathBuf,
        every: Duration,
    ) -> Result<(), IceConfigError> {
        let mut last = read_to_string(&path).await?;
        self.set_file(parse_file(&path, &last)?);
        tracing::info!(path = %path.display(), uris = ?self.current(), "loaded ICE config");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let text = match read_to_string(&path).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the last ICE config");
                        continue;
                    }
                };
                if text == last {
                    continue;
                }
                match parse_file(&path, &text) {
                    Ok(uris) => {
                        tracing::info!(?uris, "ICE config changed");
                        self.set_file(uris);
                    }
                    Err(e) => tracing::warn!(error = %e, "keeping the last ICE config"),
                }
                last = text;
            }
        });
        Ok(())
    }
}

async fn read_to_string(path: &Path) -> Result<String, IceConfigError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| IceConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_validated() {
        let p = Path::new("ice.json");
        let ok = parse_file(
            p,
            r#"{"stunUris":["stun:1.2.3.4:3478"],"turnUris":["turn:1.2.3.4:3478?transport=udp"]}"#,
        )
        .expect("valid");
        assert_eq!(ok.turn_uris.len(), 1);
        assert!(matches!(
            parse_file(p, r#"{"turnUris":["http://x"]}"#),
            Err(IceConfigError::BadUri { .. })
        ));
        assert!(matches!(
            parse_file(p, r#"{"turnUrls":[]}"#),
            Err(IceConfigError::Parse { .. })
        ));
    }

    #[test]
    fn turn_needs_a_secret() {
        let uris = IceUris {
            stun_uris: vec!["stun:a".into()],
            turn_uris: vec!["turn:a".into()],
        };
        assert_eq!(build(&uris, None, "p", 10).len(), 1);
        let both = build(&uris, Some(b"north"), "alice", 1_700_000_000);
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].username.as_deref(), Some("1700000000:alice"));
        assert_eq!(
            both[1].credential.as_deref(),
            Some("Cd/49soE35ICqcJF/bCTn8Z4OyE=")
        );
    }

    #[tokio::test]
    async fn file_changes_are_picked_up_and_bad_edits_ignored() {
        let dir_kept = tempfile::TempDir::with_prefix("otter-ice-").expect("a temp dir");
        let dir = dir_kept.path();
        let path = dir.join("ice.json");
        std::fs::write(&path, r#"{"turnUris":["turn:a"]}"#).expect("write");
        let src = Arc::new(IceSource::new(
            IceUris::default(),
            None,
            Duration::from_secs(60),
        ));
        Arc::clone(&src)
            .watch(path.clone(), Duration::from_millis(20))
            .await
            .expect("initial load");
        assert_eq!(src.current().turn_uris, vec!["turn:a".to_string()]);
        std::fs::write(&path, r#"{"turnUris":["turn:b"]}"#).expect("write");
        wait_for(|| src.current().turn_uris == vec!["turn:b".to_string()]).await;
        std::fs::write(&path, "{broken").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(src.current().turn_uris, vec!["turn:b".to_string()]);
    }

    #[tokio::test]
    async fn a_new_turn_secret_file_is_minted_with_without_a_restart() {
        let dir_kept = tempfile::TempDir::with_prefix("otter-ice-secret-").expect("a temp dir");
        let dir = dir_kept.path();
        let path = dir.join("turn-secret");
        std::fs::write(&path, "north\n").expect("write");
        let flags = IceUris {
            stun_uris: Vec::new(),
            turn_uris: vec!["turn:a".into()],
        };
        let src = Arc::new(IceSource::new(
            flags,
            Some(b"north".to_vec()),
            Duration::from_secs(60),
        ));
        Arc::clone(&src).watch_turn_secret(path.clone(), Duration::from_millis(20));
        // Whether the credential handed out now is minted from `secret`.
        let minted_from = |secret: &[u8]| {
            let servers = src.servers_for("alice");
            let username = servers[0].username.clone().expect("username");
            let (expiry, _) = username.split_once(':').expect("expiry:id");
            let expiry: u64 = expiry.parse().expect("number");
            servers[0].credential == Some(turn::mint(secret, "alice", expiry).credential)
        };
        assert!(minted_from(b"north"));
        std::fs::write(&path, "south\n").expect("write");
        wait_for(|| minted_from(b"south")).await;
        // An empty or missing file (a Secret being replaced) keeps the last value.
        std::fs::write(&path, "\n").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(minted_from(b"south"));
        std::fs::remove_file(&path).expect("remove");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(minted_from(b"south"));
    }

    async fn wait_for(cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met in time");
    }
}
