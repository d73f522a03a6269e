//! The signaling protocols the load generator speaks, behind one trait.
//!
//! Every relayed payload carries its send time (nanoseconds on the generator's one monotonic
//! clock) inside the text a real client would send: the SDP origin line (`o=- TS ...`) and the
//! candidate foundation (`candidate:TS ...`), so both servers relay exactly what a browser's
//! messages look like, and the receiver computes the relay latency.

use std::borrow::Cow;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The three relayed message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Offer,
    Answer,
    Candidate,
}

/// What a frame from the server means to a peer.
#[derive(Debug)]
pub enum Incoming {
    /// This peer is in: its own id and the room mates already present.
    Joined { me: String, peers: Vec<String> },
    /// A room mate arrived.
    PeerJoined(String),
    /// A relayed message from `from`, sent at `ts` (ns on the generator's clock).
    Signal { kind: Kind, from: String, ts: u64 },
    /// Keepalive answers and other frames with nothing to check.
    Ignore,
    /// An error frame or anything a well-behaved run never gets.
    Error(String),
}

/// One signaling protocol.
pub trait Adapter: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The WebSocket request for peer `idx` of room `room`, against base URL `ws://host:port/...`.
    fn request(&self, base: &str, room: usize, idx: usize) -> Result<Request>;
    /// The frame that joins the room after the upgrade, if the protocol has one.
    fn join_frame(&self, room: usize, idx: usize) -> Option<String>;
    /// This peer's id when the client chooses it (PeerJS); None when the server assigns it.
    fn own_id(&self, room: usize, idx: usize) -> Option<String>;
    /// The room mates' ids when the protocol has no presence (known by construction).
    fn mates(&self, room: usize, idx: usize, k: usize) -> Option<Vec<String>>;
    /// Whether this peer makes the offer to `mate` (else it answers).
    fn initiates(&self, me: &str, mate: &str, learned_from_joined: bool) -> bool;
    fn parse(&self, text: &str) -> Incoming;
    fn signal(&self, kind: Kind, to: &str, ts: u64, seq: usize) -> String;
    /// Application-level keepalive, sent every 20 s while the peer is connected.
    fn keepalive(&self) -> String;
}

/// A realistic SDP (~2.5 KB, audio + video + data channel) whose origin line carries `ts`.
pub fn sdp(kind: Kind, ts: u64) -> String {
    let setup = if kind == Kind::Offer {
        "actpass"
    } else {
        "active"
    };
    let mut s = format!(
        "v=0\r\no=- {ts} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS otter-bench\r\n"
    );
    for (mid, media) in ["audio", "video", "application"].iter().enumerate() {
        s.push_str(&format!(
            "m={media} 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Otr{mid}\r\na=ice-pwd:benchbenchbenchbenchbench{mid}\r\n\
             a=ice-options:trickle\r\na=fingerprint:sha-256 8B:4F:9A:0C:21:6E:D3:77:1A:B2:5C:90:EE:41:03:7D:\
             6A:28:F1:C5:39:84:0B:DA:62:17:9E:4C:A3:55:E0:1F\r\na=setup:{setup}\r\na=mid:{mid}\r\n\
             a=sendrecv\r\na=msid:otter-bench track-{mid}\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
             a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\n\
             a=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n\
             a=ssrc:{} cname:otterbenchcname\r\n",
            1_000_000 + mid
        ));
    }
    s
}

/// A host candidate whose foundation is `ts`.
pub fn candidate(ts: u64, seq: usize) -> String {
    format!(
        "candidate:{ts} 1 udp 2122260223 127.0.0.1 {} typ host generation 0 ufrag Otr0 network-id 1",
        50_000 + seq
    )
}

fn ts_from_sdp(sdp: &str) -> Option<u64> {
    let rest = &sdp[sdp.find("o=- ")? + 4..];
    rest.split(' ').next()?.parse().ok()
}

fn ts_from_candidate(c: &str) -> Option<u64> {
    c.strip_prefix("candidate:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn ws_request(url: &str) -> Result<Request> {
    url.into_client_request()
        .with_context(|| format!("bad WebSocket URL {url}"))
}

/// Otter protocol v1 (docs/protocol.md): join a room, learn peers from `joined.peers` and
/// `peer-joined`, address messages with `to`, receive them with `from`.
pub struct OtterV1 {
    /// Prefix of room ids, unique per run.
    pub run: String,
}

#[derive(Deserialize)]
struct PeerRef<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct CandidateInit<'a> {
    #[serde(borrow)]
    candidate: Cow<'a, str>,
}

#[derive(Deserialize)]
struct OtterIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default, rename = "peerId")]
    peer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    peers: Option<Vec<PeerRef<'a>>>,
    #[serde(borrow, default)]
    peer: Option<PeerRef<'a>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sdp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    candidate: Option<CandidateInit<'a>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

impl Adapter for OtterV1 {
    fn name(&self) -> &'static str {
        "otter-v1"
    }

    fn request(&self, base: &str, _room: usize, _idx: usize) -> Result<Request> {
        let mut req = ws_request(base)?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("otter.v1"),
        );
        Ok(req)
    }

    fn join_frame(&self, room: usize, idx: usize) -> Option<String> {
        Some(
            json!({"type": "join", "room": format!("{}-{room}", self.run), "name": format!("p{idx}")})
                .to_string(),
        )
    }

    fn own_id(&self, _room: usize, _idx: usize) -> Option<String> {
        None
    }

    fn mates(&self, _room: usize, _idx: usize, _k: usize) -> Option<Vec<String>> {
        None
    }

    fn initiates(&self, _me: &str, _mate: &str, learned_from_joined: bool) -> bool {
        // As in docs/protocol.md: the joiner makes an offer to each peer already present.
        learned_from_joined
    }

    fn parse(&self, text: &str) -> Incoming {
        let m: OtterIn<'_> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return Incoming::Error(format!("bad frame ({e}): {text:.200}")),
        };
        let from = || m.from.as_deref().unwrap_or_default().to_owned();
        match &*m.kind {
            "joined" => match m.peer_id {
                Some(me) => Incoming::Joined {
                    me: me.into_owned(),
                    peers: m
                        .peers
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| p.id.into_owned())
                        .collect(),
                },
                None => Incoming::Error(format!("joined without peerId: {text:.200}")),
            },
            "peer-joined" => match m.peer {
                Some(p) => Incoming::PeerJoined(p.id.into_owned()),
                None => Incoming::Error(format!("peer-joined without peer: {text:.200}")),
            },
            k @ ("offer" | "answer") => {
                let kind = if k == "offer" {
                    Kind::Offer
                } else {
                    Kind::Answer
                };
                match m.sdp.as_deref().and_then(ts_from_sdp) {
                    Some(ts) => Incoming::Signal {
                        kind,
                        from: from(),
                        ts,
                    },
                    None => Incoming::Error(format!("{k} without timestamp: {text:.200}")),
                }
            }
            "candidate" => match m
                .candidate
                .as_ref()
                .and_then(|c| ts_from_candidate(&c.candidate))
            {
                Some(ts) => Incoming::Signal {
                    kind: Kind::Candidate,
                    from: from(),
                    ts,
                },
                None => Incoming::Error(format!("candidate without timestamp: {text:.200}")),
            },
            // Room mates leaving at the end of the run.
            "pong" | "peer-left" => Incoming::Ignore,
            "error" => Incoming::Error(format!(
                "error frame {}: {text:.200}",
                m.code.as_deref().unwrap_or("?")
            )),
            _ => Incoming::Error(format!("unexpected frame: {text:.200}")),
        }
    }

    fn signal(&self, kind: Kind, to: &str, ts: u64, seq: usize) -> String {
        match kind {
            Kind::Offer => json!({"type": "offer", "to": to, "sdp": sdp(kind, ts)}),
            Kind::Answer => json!({"type": "answer", "to": to, "sdp": sdp(kind, ts)}),
            Kind::Candidate => json!({"type": "candidate", "to": to, "candidate": {
                "candidate": candidate(ts, seq), "sdpMid": "0", "sdpMLineIndex": 0}}),
        }
        .to_string()
    }

    fn keepalive(&self) -> String {
        r#"{"type":"ping"}"#.to_owned()
    }
}

/// PeerJS server (npm package `peer`): connect to `/peerjs?key=peerjs&id=ID&token=TOKEN`, get
/// `{"type":"OPEN"}`, send `{"type":..,"dst":ID,"payload":{..}}`, receive it with `src`. No
/// rooms and no presence: peer ids are `RUN-ROOM-INDEX`, so room mates are known by construction.
/// Payloads are shaped like the PeerJS client's (`sdp`/`candidate`, `type`, `connectionId`).
pub struct PeerJs {
    pub run: String,
}

impl PeerJs {
    fn id(&self, room: usize, idx: usize) -> String {
        format!("{}-{room}-{idx}", self.run)
    }
}

#[derive(Deserialize)]
struct PeerJsSdp<'a> {
    #[serde(borrow)]
    sdp: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PeerJsPayload<'a> {
    #[serde(borrow, default)]
    sdp: Option<PeerJsSdp<'a>>,
    #[serde(borrow, default)]
    candidate: Option<CandidateInit<'a>>,
}

#[derive(Deserialize)]
struct PeerJsIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    src: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<PeerJsPayload<'a>>,
}

impl Adapter for PeerJs {
    fn name(&self) -> &'static str {
        "peerjs"
    }

    fn request(&self, base: &str, room: usize, idx: usize) -> Result<Request> {
        let base = base.trim_end_matches('/');
        ws_request(&format!(
            "{base}/peerjs?key=peerjs&id={}&token=t{}",
            self.id(room, idx),
            room * 64 + idx
        ))
    }

    fn join_frame(&self, _room: usize, _idx: usize) -> Option<String> {
        None
    }

    fn own_id(&self, room: usize, idx: usize) -> Option<String> {
        Some(self.id(room, idx))
    }

    fn mates(&self, room: usize, idx: usize, k: usize) -> Option<Vec<String>> {
        Some(
            (0..k)
                .filter(|&i| i != idx)
                .map(|i| self.id(room, i))
                .collect(),
        )
    }

    fn initiates(&self, me: &str, mate: &str, _learned_from_joined: bool) -> bool {
        // The later peer (higher index) calls, as the Otter joiner does.
        let idx = |id: &str| {
            id.rsplit('-')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(0)
        };
        idx(me) > idx(mate)
    }

    fn parse(&self, text: &str) -> Incoming {
        let m: PeerJsIn<'_> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return Incoming::Error(format!("bad frame ({e}): {text:.200}")),
        };
        let from = || m.src.as_deref().unwrap_or_default().to_owned();
        match &*m.kind {
            // The id is ours by construction; `me` is filled in by the caller.
            "OPEN" => Incoming::Joined {
                me: String::new(),
                peers: Vec::new(),
            },
            k @ ("OFFER" | "ANSWER") => {
                let kind = if k == "OFFER" {
                    Kind::Offer
                } else {
                    Kind::Answer
                };
                match m
                    .payload
                    .as_ref()
                    .and_then(|p| p.sdp.as_ref())
                    .and_then(|s| ts_from_sdp(&s.sdp))
                {
                    Some(ts) => Incoming::Signal {
                        kind,
                        from: from(),
                        ts,
                    },
                    None => Incoming::Error(format!("{k} without timestamp: {text:.200}")),
                }
            }
            "CANDIDATE" => match m
                .payload
                .as_ref()
                .and_then(|p| p.candidate.as_ref())
                .and_then(|c| ts_from_candidate(&c.candidate))
            {
                Some(ts) => Incoming::Signal {
                    kind: Kind::Candidate,
                    from: from(),
                    ts,
                },
                None => Incoming::Error(format!("CANDIDATE without timestamp: {text:.200}")),
            },
            _ => Incoming::Error(format!("unexpected frame: {text:.200}")),
        }
    }

    fn signal(&self, kind: Kind, to: &str, ts: u64, seq: usize) -> String {
        let conn = "mc_otterbench0001";
        match kind {
            Kind::Offer => json!({"type": "OFFER", "dst": to, "payload": {
                "sdp": {"type": "offer", "sdp": sdp(kind, ts)}, "type": "media",
                "connectionId": conn, "metadata": null}}),
            Kind::Answer => json!({"type": "ANSWER", "dst": to, "payload": {
                "sdp": {"type": "answer", "sdp": sdp(kind, ts)}, "type": "media",
                "connectionId": conn}}),
            Kind::Candidate => json!({"type": "CANDIDATE", "dst": to, "payload": {
                "candidate": {"candidate": candidate(ts, seq), "sdpMid": "0", "sdpMLineIndex": 0},
                "type": "media", "connectionId": conn}}),
        }
        .to_string()
    }

    fn keepalive(&self) -> String {
        r#"{"type":"HEARTBEAT"}"#.to_owned()
    }
}

/// Refuse anything but loopback: resolve `url`'s host and return its address, or an error.
pub async fn loopback_addr(url: &str) -> Result<std::net::SocketAddr> {
    let req = ws_request(url)?;
    let uri = req.uri();
    if uri.scheme_str() != Some("ws") {
        bail!("{url}: only ws:// URLs are supported (loopback, no TLS)");
    }
    let host = uri
        .host()
        .with_context(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolve {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{host} resolves to no address");
    }
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("refusing {url}: {a} is not a loopback address (otter-load only loads loopback)");
    }
    Ok(addrs[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(ts_from_sdp(&sdp(Kind::Offer, 123_456)), Some(123_456));
        assert_eq!(ts_from_candidate(&candidate(987, 3)), Some(987));
        let o = OtterV1 { run: "r".into() };
        match o.parse(
            &o.signal(Kind::Candidate, "p-1", 42, 0)
                .replace("\"to\"", "\"from\""),
        ) {
            Incoming::Signal { kind, from, ts } => {
                assert_eq!((kind, from.as_str(), ts), (Kind::Candidate, "p-1", 42))
            }
            other => panic!("{other:?}"),
        }
        let p = PeerJs { run: "r".into() };
        match p.parse(
            &p.signal(Kind::Offer, "r-0-1", 7, 0)
                .replace("\"dst\"", "\"src\""),
        ) {
            Incoming::Signal { kind, from, ts } => {
                assert_eq!((kind, from.as_str(), ts), (Kind::Offer, "r-0-1", 7))
            }
            other => panic!("{other:?}"),
        }
        assert!(p.initiates("r-0-2", "r-0-1", false));
        assert!(!p.initiates("r-0-0", "r-0-1", false));
    }

    #[tokio::test]
    async fn refuses_non_loopback() {
        assert!(loopback_addr("ws://127.0.0.1:9/ws").await.is_ok());
        assert!(loopback_addr("ws://[::1]:9/ws").await.is_ok());
        assert!(loopback_addr("ws://10.0.0.1:9/ws").await.is_err());
        assert!(loopback_addr("ws://192.0.2.1:9/ws").await.is_err());
        assert!(loopback_addr("wss://127.0.0.1:9/ws").await.is_err());
    }
}
