//! One TURN Allocate over UDP, as a WebRTC client makes it (RFC 8656 with the long-term
//! credentials of RFC 8489): an unauthenticated Allocate to learn the realm and nonce from the
//! 401, the same request signed with MESSAGE-INTEGRITY, then a Refresh with lifetime 0 so the
//! probe's relay is freed at once instead of holding a port and a quota slot for ten minutes.
//!
//! The messages are encoded and decoded by `stun-rs`; this file only sequences them over a
//! socket, retransmitting like a STUN client (RFC 8489 §6.2.1), and says what happened.

use std::net::SocketAddr;
use std::time::Duration;

use stun_rs::attributes::stun::{ErrorCode, MessageIntegrity, Nonce, Realm, UserName};
use stun_rs::attributes::turn::{LifeTime, RequestedTrasport, XorRelayedAddress};
use stun_rs::methods::{ALLOCATE, REFRESH};
use stun_rs::protocols::UDP;
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    MessageMethod, StunMessage, StunMessageBuilder,
};
use tokio::net::UdpSocket;

use super::ProbeOutcome;

/// Waits for an answer before each retransmission: 3.5 s in all. A TURN server on a node that
/// is up answers in milliseconds; three sends ride out one lost datagram each way.
pub const RETRANSMITS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];

/// A TURN REST API credential (`expiry:user`, base64 HMAC-SHA1 of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `<expiry unix seconds>:<id>`.
    pub username: String,
    /// base64(HMAC-SHA1(shared secret, username)).
    pub password: String,
}

/// Allocate a relay on `server` with `cred`, then free it. Never fails: every way it can go
/// wrong is an outcome.
pub async fn allocate(server: SocketAddr, cred: &Credential, waits: &[Duration]) -> ProbeOutcome {
    outcome(exchange(server, cred, waits, true).await).0
}

/// Allocate and keep the relay (until its lifetime ends, ten minutes by default): the socket
/// it lives on, when one was allocated. For tests of coturn's quotas.
pub async fn allocate_and_hold(
    server: SocketAddr,
    cred: &Credential,
    waits: &[Duration],
) -> (ProbeOutcome, Option<UdpSocket>) {
    outcome(exchange(server, cred, waits, false).await)
}

fn outcome(r: Result<(ProbeOutcome, UdpSocket), Step>) -> (ProbeOutcome, Option<UdpSocket>) {
    match r {
        Ok((o, sock)) => (o, Some(sock)),
        Err(Step::NoAnswer) => (ProbeOutcome::NoAnswer, None),
        Err(Step::PortUnreachable) => (ProbeOutcome::PortUnreachable, None),
        Err(Step::Failed(e)) => (ProbeOutcome::Failed(e), None),
    }
}

/// Why the exchange stopped early.
enum Step {
    NoAnswer,
    PortUnreachable,
    Failed(String),
}

fn failed(what: &str) -> impl Fn(String) -> Step + '_ {
    move |e| Step::Failed(format!("{what}: {e}"))
}

async fn exchange(
    server: SocketAddr,
    cred: &Credential,
    waits: &[Duration],
    release: bool,
) -> Result<(ProbeOutcome, UdpSocket), Step> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| failed("binding a UDP socket")(e.to_string()))?;
    // A connected socket gets ICMP port-unreachable back as ECONNREFUSED.
    sock.connect(server)
        .await
        .map_err(|e| failed("connecting the UDP socket")(e.to_string()))?;
    let hello = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_attribute(RequestedTrasport::new(UDP))
        .build();
    let challenge = transact(&sock, &hello, waits).await?;
    let Some((code, reason)) = error_of(&challenge) else {
        // A server without authentication relays for anyone: reachable all the same.
        let lifetime_zero = StunMessageBuilder::new(REFRESH, MessageClass::Request)
            .with_attribute(LifeTime::from(0))
            .build();
        if release {
            let _ = transact(&sock, &lifetime_zero, waits).await;
        }
        let relayed = relayed_of(&challenge);
        return Ok((ProbeOutcome::Allocated { relayed }, sock));
    };
    let (Some(realm), Some(nonce), 401) = (attr_realm(&challenge), attr_nonce(&challenge), code)
    else {
        return Ok((ProbeOutcome::Refused { code, reason }, sock));
    };
    let auth = Auth::new(cred, &realm, &nonce).map_err(failed("encoding the credential"))?;
    let request = auth
        .sign(ALLOCATE)
        .with_attribute(RequestedTrasport::new(UDP))
        .with_attribute(auth.integrity())
        .build();
    let answer = transact(&sock, &request, waits).await?;
    if let Some((code, reason)) = error_of(&answer) {
        return Ok((ProbeOutcome::Refused { code, reason }, sock));
    }
    let relayed = relayed_of(&answer);
    // Free the relay now; an unanswered Refresh only means it expires on its own.
    let lifetime_zero = auth
        .sign(REFRESH)
        .with_attribute(LifeTime::from(0))
        .with_attribute(auth.integrity())
        .build();
    if release {
        let _ = transact(&sock, &lifetime_zero, waits).await;
    }
    Ok((ProbeOutcome::Allocated { relayed }, sock))
}

/// The signed attributes of the authenticated requests.
struct Auth {
    username: UserName,
    realm: Realm,
    nonce: Nonce,
    key: HMACKey,
}

impl Auth {
    fn new(cred: &Credential, realm: &str, nonce: &str) -> Result<Self, String> {
        let username = UserName::new(&cred.username).map_err(|e| e.to_string())?;
        let realm = Realm::new(realm).map_err(|e| e.to_string())?;
        let nonce = Nonce::new(nonce).map_err(|e| e.to_string())?;
        let md5 = Algorithm::from(AlgorithmId::MD5);
        let key = HMACKey::new_long_term(&username, &realm, &cred.password, md5)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            username,
            realm,
            nonce,
            key,
        })
    }

    fn sign(&self, method: MessageMethod) -> StunMessageBuilder {
        StunMessageBuilder::new(method, MessageClass::Request)
            .with_attribute(self.username.clone())
            .with_attribute(self.realm.clone())
            .with_attribute(self.nonce.clone())
    }

    fn integrity(&self) -> MessageIntegrity {
        MessageIntegrity::new(self.key.clone())
    }
}

/// Send `msg` and wait for the response with its transaction id, retransmitting.
async fn transact(
    sock: &UdpSocket,
    msg: &StunMessage,
    waits: &[Duration],
) -> Result<StunMessage, Step> {
    let mut out = [0u8; 1024];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut out, msg)
        .map_err(|e| failed("encoding the request")(e.to_string()))?;
    let decoder = MessageDecoderBuilder::default().build();
    let mut buf = [0u8; 2048];
    // A refusal (ICMP port unreachable) is retried like silence: a coturn starting up binds its
    // listeners one relay thread at a time. Other ICMP errors (host or network unreachable) are
    // silence too: routers rate-limit them, so telling them apart would make the status flap.
    let mut refused = false;
    for wait in waits {
        if let Err(e) = sock.send(&out[..len]).await {
            refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        let deadline = tokio::time::Instant::now() + *wait;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                    continue;
                }
            };
            // Anything else on the socket (a late answer to an earlier send, garbage) is skipped.
            if let Ok((reply, _)) = decoder.decode(&buf[..n])
                && reply.transaction_id() == msg.transaction_id()
                && reply.method() == msg.method()
            {
                return Ok(reply);
            }
        }
    }
    Err(if refused {
        Step::PortUnreachable
    } else {
        Step::NoAnswer
    })
}

/// Code and reason of an error response; `None` for a success.
fn error_of(msg: &StunMessage) -> Option<(u16, String)> {
    if msg.class() != MessageClass::ErrorResponse {
        return None;
    }
    let code = msg
        .get::<ErrorCode>()
        .and_then(|a| a.as_error_code().ok())
        .map(|e| e.error_code());
    Some(match code {
        Some(c) => (c.error_code(), c.reason().to_string()),
        None => (0, "error response without ERROR-CODE".to_string()),
    })
}

fn relayed_of(msg: &StunMessage) -> Option<SocketAddr> {
    let relayed = msg
        .get::<XorRelayedAddress>()?
        .as_xor_relayed_address()
        .ok()?;
    Some(*relayed.socket_address())
}

fn attr_realm(msg: &StunMessage) -> Option<String> {
    let realm = msg.get::<Realm>()?.as_realm().ok()?;
    Some(realm.as_str().to_string())
}

fn attr_nonce(msg: &StunMessage) -> Option<String> {
    let nonce = msg.get::<Nonce>()?.as_nonce().ok()?;
    Some(nonce.as_str().to_string())
}
