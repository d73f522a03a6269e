//! This replica's view of the rooms it holds seats in: which replica each room mate lives on,
//! so a relayed frame goes straight to the right place (delivered here, or published to that
//! replica) without a Redis round trip. Filled from the join script's reply, kept fresh by the
//! presence records the replica receives anyway (`j`, `l`, `m`); Redis stays the source of
//! truth: a miss asks it (the send script), and a frame that reaches a replica its peer left
//! is routed again by the room hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::PeerRecord;

#[derive(Debug, Default)]
struct Room {
    /// Peer id → the replica holding its seat.
    members: HashMap<String, Arc<str>>,
    /// Seats of this room held by this replica; the room is forgotten when none is left.
    owned: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Seats this replica holds: peer id → (room, record). What it re-registers when Redis
    /// lost them.
    owned: HashMap<String, (String, PeerRecord)>,
    /// Seats being taken (join or resume script sent, not yet in `owned`), by the resume token
    /// the seat gets, with how many takers: in Redis already, maybe, but not yet ours here. The
    /// reconcile must not drop them.
    claiming: HashMap<String, usize>,
    rooms: HashMap<String, Room>,
}

/// A seat being taken: the reconcile leaves it alone until this is dropped, after [`View::own`].
pub struct Claim<'a> {
    view: &'a View,
    token: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut g = self.view.lock();
        if let Some(n) = g.claiming.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                g.claiming.remove(&self.token);
            }
        }
    }
}

#[derive(Debug)]
pub struct View {
    me: Arc<str>,
    inner: Mutex<Inner>,
}

impl View {
    pub fn new(me: Arc<str>) -> View {
        View {
            me,
            inner: Mutex::default(),
        }
    }

    pub fn me(&self) -> &Arc<str> {
        &self.me
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below is a few map operations that cannot leave it half done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A seat with resume token `token` is about to be taken here (joined, or resumed with that
    /// new token): hold the claim until [`View::own`] has run, or the take failed. A reconcile
    /// that read Redis after the script and the view before `own` would otherwise find a seat in
    /// Redis that this replica does not hold, and remove it from under a peer that just joined.
    pub fn claim(&self, token: &str) -> Claim<'_> {
        *self.lock().claiming.entry(token.to_owned()).or_default() += 1;
        Claim {
            view: self,
            token: token.to_owned(),
        }
    }

    /// Whether a seat with resume token `token` is being taken here (see [`View::claim`]).
    pub fn claimed(&self, token: &str) -> bool {
        self.lock().claiming.contains_key(token)
    }

    /// Whether this replica holds `peer`'s seat in `room`.
    pub fn holds(&self, peer: &str, room: &str) -> bool {
        self.lock().owned.get(peer).is_some_and(|(r, _)| r == room)
    }

    /// This replica holds `rec`'s seat in `room`; `mates` are the room's other seats (peer id,
    /// replica) as Redis returned them.
    pub fn own(
        &self,
        room: &str,
        rec: &PeerRecord,
        mates: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut g = self.lock();
        let fresh = g
            .owned
            .insert(rec.id.clone(), (room.to_owned(), rec.clone()))
            .is_none_or(|(old, _)| old != room);
        let me = Arc::clone(&self.me);
        let r = g.rooms.entry(room.to_owned()).or_default();
        if fresh {
            r.owned += 1;
        }
        r.members.insert(rec.id.clone(), me);
        for (id, replica) in mates {
            if id != rec.id {
                r.members.insert(id, replica.into());
            }
        }
    }

    /// The seat is no longer ours (with `epoch`: only if it was not resumed since). True if
    /// it was removed.
    pub fn disown(&self, peer: &str, epoch: Option<u64>) -> bool {
        let mut g = self.lock();
        let Some((room, rec)) = g.owned.get(peer) else {
            return false;
        };
        if epoch.is_some_and(|e| e != rec.epoch) {
            return false;
        }
        let room = room.clone();
        g.owned.remove(peer);
        if let Some(r) = g.rooms.get_mut(&room) {
            r.owned = r.owned.saturating_sub(1);
            if r.owned == 0 {
                g.rooms.remove(&room);
            } else if r.members.get(peer).is_some_and(|rep| *rep == self.me) {
                r.members.remove(peer);
            }
        }
        true
    }

    /// Where `peer` of `room` lives, if this replica knows.
    pub fn where_is(&self, room: &str, peer: &str) -> Option<Arc<str>> {
        self.lock()
            .rooms
            .get(room)
            .and_then(|r| r.members.get(peer))
            .cloned()
    }

    /// `peer` now lives on `replica` (joined, or resumed there). Ignored for rooms this
    /// replica holds no seat in.
    pub fn placed(&self, room: &str, peer: &str, replica: &str) {
        if let Some(r) = self.lock().rooms.get_mut(room) {
            match r.members.get_mut(peer) {
                Some(rep) if **rep == *replica => {}
                Some(rep) => *rep = replica.into(),
                None => {
                    r.members.insert(peer.to_owned(), replica.into());
                }
            }
        }
    }

    /// `peer` left `room`.
    pub fn left(&self, room: &str, peer: &str) {
        if let Some(r) = self.lock().rooms.get_mut(room) {
            r.members.remove(peer);
        }
    }

    pub fn owned_is_empty(&self) -> bool {
        self.lock().owned.is_empty()
    }

    /// The rooms this replica holds seats in, sorted.
    pub fn owned_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.lock().rooms.keys().cloned().collect();
        rooms.sort_unstable();
        rooms
    }

    /// The seats this replica holds: (peer id, room, record).
    pub fn owned(&self) -> Vec<(String, String, PeerRecord)> {
        self.lock()
            .owned
            .iter()
            .map(|(id, (room, rec))| (id.clone(), room.clone(), rec.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_lasts_until_its_last_holder_drops_it() {
        let v = View::new("me".into());
        let first = v.claim("t-1");
        let second = v.claim("t-1");
        assert!(v.claimed("t-1") && !v.claimed("t-2"));
        drop(first);
        assert!(
            v.claimed("t-1"),
            "a second take of the same seat is still running"
        );
        drop(second);
        assert!(!v.claimed("t-1"));
    }

    fn rec(id: &str, epoch: u64) -> PeerRecord {
        PeerRecord {
            resume_token: "t".into(),
            epoch,
            ..PeerRecord::for_test(id)
        }
    }

    #[test]
    fn a_room_is_known_while_a_seat_in_it_is_held() {
        let v = View::new("me".into());
        v.own("r", &rec("a", 0), [("x".to_owned(), "other".to_owned())]);
        v.own("r", &rec("b", 0), [("a".to_owned(), "me".to_owned())]);
        assert_eq!(v.where_is("r", "x").as_deref(), Some("other"));
        assert_eq!(v.where_is("r", "b").as_deref(), Some("me"));
        v.placed("r", "y", "third");
        v.placed("elsewhere", "z", "third");
        assert_eq!(v.where_is("r", "y").as_deref(), Some("third"));
        assert_eq!(
            v.where_is("elsewhere", "z"),
            None,
            "no seat there: not tracked"
        );
        v.left("r", "y");
        assert_eq!(v.where_is("r", "y"), None);
        assert!(
            !v.disown("a", Some(1)),
            "a resumed seat is not given up by an old epoch"
        );
        assert!(v.disown("a", Some(0)));
        assert_eq!(v.where_is("r", "a"), None);
        assert_eq!(v.owned_rooms(), ["r"]);
        assert!(v.disown("b", None));
        assert!(v.owned_rooms().is_empty() && v.owned_is_empty());
        assert_eq!(v.where_is("r", "x"), None, "forgotten with the last seat");
    }

    #[test]
    fn a_resume_on_this_replica_counts_the_seat_once() {
        let v = View::new("me".into());
        v.own("r", &rec("a", 0), []);
        v.own("r", &rec("a", 1), []);
        assert!(v.disown("a", Some(1)));
        assert!(v.owned_rooms().is_empty());
    }
}
