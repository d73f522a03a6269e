//! Room logic, independent of the transport: join, resume, relay, leave, and the grace period
//! after a lost connection. The connection task ([`crate::conn`]) calls in here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::auth::RoomAuth;
use crate::ice::IceSource;
use crate::metrics::Metrics;
use crate::protocol::{
    ErrorCode, Join, LeaveReason, Limits, PeerInfo, ProtoError, RelayKind, ServerMsg, VERSION,
    relay_frame, valid_room_id,
};
use crate::roster::Roster;
use crate::store::{
    Frame, LocalConn, LocalPeers, Outbox, PeerRecord, Presence, RoomStore, StoreError,
};

/// A joined connection's place: which room, which seat, which epoch of that seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Shared with the router's entry for this connection: one copy of the name, not two.
    pub room: Arc<str>,
    pub peer_id: String,
    pub epoch: u64,
    /// This connection relayed an offer, answer or candidate: a call was under way, so a lost
    /// connection keeps the seat for the whole grace period (see [`Hub::hold_for`]).
    pub signaled: bool,
}

/// How long a seat that never signaled is held after a lost connection (or close 4000):
/// long enough for a reload, too short to keep a room full by joining and dropping.
pub const SHORT_HOLD: Duration = Duration::from_secs(2);

/// What a relayed message carries.
pub enum Relay<'a> {
    Offer(&'a str),
    Answer(&'a str),
    Candidate(&'a serde_json::Value),
    /// The payload as the client wrote it (see [`crate::protocol::parse_relay`]).
    Raw(RelayKind, &'a serde_json::value::RawValue),
}

pub struct Hub {
    pub store: Arc<dyn RoomStore>,
    pub local: Arc<LocalPeers>,
    pub auth: RoomAuth,
    pub ice: Arc<IceSource>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub grace: Duration,
    /// Every open connection: the shutdown (connections tell their clients to reconnect and
    /// close) and each connection's next deadline reach it through here.
    pub roster: Roster,
    local_rooms: Mutex<HashMap<String, usize>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

fn unavailable(e: StoreError) -> ProtoError {
    match e {
        StoreError::RoomFull { max } => ProtoError::new(
            ErrorCode::RoomFull,
            format!("the room is full ({max} peers)"),
        ),
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "room store unavailable");
            ProtoError::new(
                ErrorCode::Unavailable,
                "room state is unavailable right now; retry in a moment",
            )
        }
    }
}

impl Hub {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn RoomStore>,
        local: Arc<LocalPeers>,
        auth: RoomAuth,
        ice: Arc<IceSource>,
        metrics: Arc<Metrics>,
        limits: Limits,
        grace: Duration,
    ) -> Self {
        Self {
            store,
            local,
            auth,
            ice,
            metrics,
            limits,
            grace,
            roster: Roster::default(),
            local_rooms: Mutex::new(HashMap::new()),
        }
    }

    fn room_entered(&self, room: &str) {
        self.metrics.peers.inc();
        let mut rooms = self.local_rooms.lock().unwrap_or_else(|p| p.into_inner());
        *rooms.entry(room.to_owned()).or_default() += 1;
        self.metrics.rooms.set(rooms.len() as i64);
    }

    fn room_exited(&self, room: &str) {
        self.metrics.peers.dec();
        let mut rooms = self.local_rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = rooms.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                rooms.remove(room);
            }
        }
        self.metrics.rooms.set(rooms.len() as i64);
    }

    /// Handle `join`: returns the session and the `joined` frame to send.
    pub async fn join(&self, join: Join, tx: &Outbox) -> Result<(Session, String), ProtoError> {
        let started = Instant::now();
        if !valid_room_id(&join.room) {
            return Err(ProtoError::new(
                ErrorCode::BadRoomId,
                "room ids are 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        let done = if let Some(token) = join.resume.as_deref()
            && let Some(resumed) = self.resume(&join.room, token, tx).await?
        {
            resumed
        } else {
            self.take_seat(join, tx).await?
        };
        self.metrics
            .join_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(done)
    }

    /// Take back a held seat. A valid resume token proves an earlier authenticated join to
    /// this room, so it is enough by itself, but only within the room token's lifetime; each
    /// resume hands out a new resume token and the old one stops working.
    async fn resume(
        &self,
        room: &str,
        token: &str,
        tx: &Outbox,
    ) -> Result<Option<(Session, String)>, ProtoError> {
        let fresh = random_hex(16);
        let Some(rec) = self
            .store
            .resume(room, token, &fresh)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let session = Session {
            room: room.into(),
            peer_id: rec.id.clone(),
            epoch: rec.epoch,
            // Holding one's own seat through resumes is no worse than staying connected.
            signaled: true,
        };
        if rec.expires.is_some_and(|exp| exp < crate::auth::now_secs()) {
            self.remove_seat(&session, LeaveReason::Timeout).await;
            return Err(ProtoError::new(
                ErrorCode::AuthExpired,
                "the room token that admitted this seat has expired; join with a new token",
            ));
        }
        self.local
            .insert(&rec.id, self.conn(&session.room, tx, rec.epoch));
        let others: Vec<PeerInfo> = self
            .store
            .members(room)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|p| p.id != rec.id)
            .collect();
        self.room_entered(room);
        let frame = self.joined_frame(room, &rec, true, &others);
        tracing::info!(room, peer = rec.id, "peer resumed");
        Ok(Some((session, frame)))
    }

    /// A new seat, after the room token (when auth is on) admits it.
    async fn take_seat(&self, join: Join, tx: &Outbox) -> Result<(Session, String), ProtoError> {
        let room: Arc<str> = join.room.into();
        let claims = self.auth.check(&room, join.token.as_deref())?;
        if self.auth.single_use()
            && let Some(c) = &claims
            && let Some(jti) = &c.jti
            && !self
                .store
                .claim_token(jti, c.exp)
                .await
                .map_err(unavailable)?
        {
            return Err(ProtoError::new(
                ErrorCode::AuthInvalid,
                "this room token was already used; each token admits one seat",
            ));
        }
        let name = claims.as_ref().and_then(|c| c.name.clone()).or(join.name);
        let rec = PeerRecord {
            id: format!("p-{}", random_hex(8)),
            name,
            resume_token: random_hex(16),
            epoch: 0,
            expires: claims.as_ref().map(|c| c.exp),
        };
        // Register the connection before taking the seat, so an offer sent the instant the
        // others hear of us has somewhere to go.
        self.local.insert(&rec.id, self.conn(&room, tx, rec.epoch));
        let others = match self.store.join(&room, &rec, self.limits.max_peers).await {
            Ok(others) => others,
            Err(e) => {
                self.local.remove(&rec.id, rec.epoch);
                return Err(unavailable(e));
            }
        };
        let info = rec.info();
        let announce: Frame = ServerMsg::PeerJoined { peer: &info }.to_text().into();
        if let Err(e) = self
            .store
            .broadcast(&room, &rec.id, Presence::Joined, announce)
            .await
        {
            tracing::warn!(error = %e, room = &*room, peer = rec.id, "could not announce a join");
        }
        self.room_entered(&room);
        let frame = self.joined_frame(&room, &rec, false, &others);
        tracing::info!(room = &*room, peer = rec.id, "peer joined");
        let session = Session {
            room,
            peer_id: rec.id,
            epoch: rec.epoch,
            signaled: false,
        };
        Ok((session, frame))
    }

    fn conn(&self, room: &Arc<str>, tx: &Outbox, epoch: u64) -> LocalConn {
        LocalConn {
            room: Arc::clone(room),
            tx: tx.clone(),
            epoch,
        }
    }

    fn joined_frame(
        &self,
        room: &str,
        rec: &PeerRecord,
        resumed: bool,
        others: &[PeerInfo],
    ) -> String {
        let ice = self.ice.servers_for(&rec.id);
        ServerMsg::Joined {
            v: VERSION,
            room,
            peer_id: &rec.id,
            resume_token: &rec.resume_token,
            resumed,
            peers: others,
            ice_servers: &ice,
            limits: self.limits,
        }
        .to_text()
    }

    /// Relay an offer, answer or candidate to one peer of the session's room.
    pub async fn relay(&self, s: &Session, to: &str, what: Relay<'_>) -> Result<(), ProtoError> {
        let unknown = || {
            ProtoError::new(
                ErrorCode::UnknownPeer,
                format!("peer {to} is not in room {}", s.room),
            )
        };
        if to == s.peer_id {
            return Err(unknown());
        }
        let (kind, frame) = match what {
            Relay::Offer(sdp) => (
                RelayKind::Offer,
                ServerMsg::Offer {
                    from: &s.peer_id,
                    sdp,
                }
                .to_text(),
            ),
            Relay::Answer(sdp) => (
                RelayKind::Answer,
                ServerMsg::Answer {
                    from: &s.peer_id,
                    sdp,
                }
                .to_text(),
            ),
            Relay::Candidate(candidate) => (
                RelayKind::Candidate,
                ServerMsg::Candidate {
                    from: &s.peer_id,
                    candidate,
                }
                .to_text(),
            ),
            Relay::Raw(kind, payload) => (kind, relay_frame(kind, &s.peer_id, payload)),
        };
        let delivered = self
            .store
            .send(&s.room, to, frame.into())
            .await
            .map_err(|e| {
                // Relays run outside the connection's span (see `conn`): name them here.
                let span = tracing::info_span!("conn", room = %s.room, peer = %s.peer_id);
                span.in_scope(|| unavailable(e))
            })?;
        if !delivered {
            return Err(unknown());
        }
        self.metrics.relayed(kind);
        Ok(())
    }

    /// Give up the seat now and tell the room.
    pub async fn leave(&self, s: &Session, reason: LeaveReason) {
        self.local.remove(&s.peer_id, s.epoch);
        self.room_exited(&s.room);
        self.remove_seat(s, reason).await;
    }

    async fn remove_seat(&self, s: &Session, reason: LeaveReason) {
        match self.store.leave(&s.room, &s.peer_id, Some(s.epoch)).await {
            Ok(true) => {
                let frame: Frame = ServerMsg::PeerLeft {
                    peer_id: &s.peer_id,
                    reason,
                }
                .to_text()
                .into();
                let left = self
                    .store
                    .broadcast(&s.room, &s.peer_id, Presence::Left, frame);
                if let Err(e) = left.await {
                    tracing::warn!(error = %e, room = &*s.room, peer = s.peer_id, "could not announce a departure");
                }
                tracing::info!(room = &*s.room, peer = s.peer_id, ?reason, "peer left");
            }
            Ok(false) => {} // resumed elsewhere, or already gone
            Err(e) => {
                tracing::warn!(error = %e, room = &*s.room, peer = s.peer_id, "could not remove a seat")
            }
        }
    }

    /// How long the seat of a lost connection is held for a resume: the reconnect grace for a
    /// seat that signaled, [`SHORT_HOLD`] for one that never did, so that joining and dropping
    /// (or closing with 4000) over and over cannot keep a room full.
    pub fn hold_for(&self, s: &Session) -> Duration {
        if s.signaled {
            self.grace
        } else {
            self.grace.min(SHORT_HOLD)
        }
    }

    /// The connection was lost without a goodbye: keep the seat for a while so the client can
    /// resume, then give it up unless it was resumed.
    pub fn detach(self: &Arc<Self>, s: Session) {
        self.local.remove(&s.peer_id, s.epoch);
        self.room_exited(&s.room);
        let hold = self.hold_for(&s);
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            hub.remove_seat(&s, LeaveReason::Timeout).await;
        });
    }
}

#[cfg(test)]
pub(crate) mod props {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Out, Outbox, Outlet};
    use proptest::prelude::*;

    const ROOMS: usize = 2;
    const ACTORS: usize = 5;
    const CAP: u32 = 4;

    #[derive(Debug, Clone)]
    enum Op {
        Join(usize, usize),
        Leave(usize),
        Kick(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..ACTORS, 0..ROOMS).prop_map(|(a, r)| Op::Join(a, r)),
            (0..ACTORS).prop_map(Op::Leave),
            (0..ACTORS).prop_map(Op::Kick),
        ]
    }

    struct Actor {
        outbox: Outbox,
        rx: Outlet,
        session: Option<Session>,
    }

    fn actor() -> Actor {
        let (outbox, rx) = Outbox::new(1 << 20);
        Actor {
            outbox,
            rx,
            session: None,
        }
    }

    fn hub() -> Hub {
        test_hub(CAP)
    }

    /// A hub on the memory store, auth off, no ICE servers.
    pub(crate) fn test_hub(cap: u32) -> Hub {
        let local = Arc::new(LocalPeers::default());
        Hub::new(
            Arc::new(MemoryStore::new(Arc::clone(&local))),
            local,
            RoomAuth::new(None),
            Arc::new(IceSource::new(
                Default::default(),
                None,
                Duration::from_secs(60),
            )),
            Arc::new(Metrics::new()),
            Limits {
                max_peers: cap,
                max_message_bytes: 65536,
            },
            Duration::from_secs(15),
        )
    }

    async fn join(hub: &Hub, a: &mut Actor, room: usize) {
        let join = Join {
            room: format!("r{room}"),
            name: None,
            token: None,
            resume: None,
        };
        if a.session.is_none()
            && let Ok((s, _)) = hub.join(join, &a.outbox).await
        {
            a.session = Some(s);
        }
    }

    /// Seats never exceed the cap, and a peer is in exactly the room its session names.
    async fn check_seats(hub: &Hub, actors: &[Actor]) -> Result<(), TestCaseError> {
        let mut rooms = Vec::new();
        for r in 0..ROOMS {
            let members = hub
                .store
                .members(&format!("r{r}"))
                .await
                .expect("memory store");
            prop_assert!(members.len() <= CAP as usize);
            rooms.push(members);
        }
        for a in actors {
            if let Some(s) = &a.session {
                let homes = rooms
                    .iter()
                    .filter(|m| m.iter().any(|p| p.id == s.peer_id))
                    .count();
                prop_assert_eq!(homes, 1);
            }
        }
        Ok(())
    }

    /// What an observer heard: per peer, joins and departures.
    fn heard(rx: &mut Outlet) -> HashMap<String, (u32, u32)> {
        let mut seen: HashMap<String, (u32, u32)> = HashMap::new();
        while let Some(Out::Frame(f)) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&f).expect("json");
            match v["type"].as_str() {
                Some("peer-joined") => {
                    let id = v["peer"]["id"].as_str().unwrap_or_default();
                    seen.entry(id.to_owned()).or_default().0 += 1;
                }
                Some("peer-left") => {
                    let id = v["peerId"].as_str().unwrap_or_default();
                    seen.entry(id.to_owned()).or_default().1 += 1;
                }
                _ => {}
            }
        }
        seen
    }

    async fn scenario(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let hub = hub();
        let mut observers: Vec<Actor> = (0..ROOMS).map(|_| actor()).collect();
        for (r, o) in observers.iter_mut().enumerate() {
            join(&hub, o, r).await;
        }
        let mut actors: Vec<Actor> = (0..ACTORS).map(|_| actor()).collect();
        for op in ops {
            match op {
                Op::Join(a, r) => join(&hub, &mut actors[a], r).await,
                Op::Leave(a) | Op::Kick(a) => {
                    let reason = match op {
                        Op::Kick(_) => LeaveReason::Kicked,
                        _ => LeaveReason::Left,
                    };
                    if let Some(s) = actors[a].session.take() {
                        hub.leave(&s, reason).await;
                    }
                }
            }
            check_seats(&hub, &actors).await?;
        }
        for a in &mut actors {
            if let Some(s) = a.session.take() {
                hub.leave(&s, LeaveReason::Left).await;
            }
        }
        // Every join the observer heard of is matched by exactly one departure.
        for o in &mut observers {
            for (peer, (joined, left)) in heard(&mut o.rx) {
                prop_assert_eq!((joined, left), (1, 1), "peer {}", peer);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn rooms_keep_their_invariants(ops in prop::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(scenario(ops))?;
        }
    }
}
