//! Room state in this process: the laptop default, and the reference the Redis store must match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Frame, LocalPeers, PeerRecord, Presence, RoomStore, StoreError};
use crate::protocol::PeerInfo;

pub struct MemoryStore {
    rooms: Mutex<HashMap<String, Vec<PeerRecord>>>,
    /// Used single-use token ids and their expiry (Unix seconds); pruned as they expire.
    used_tokens: Mutex<HashMap<String, u64>>,
    local: Arc<LocalPeers>,
}

impl MemoryStore {
    pub fn new(local: Arc<LocalPeers>) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            used_tokens: Mutex::new(HashMap::new()),
            local,
        }
    }

    fn with_rooms<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Vec<PeerRecord>>) -> T,
    ) -> Result<T, StoreError> {
        // A poisoned lock means a panic mid-update elsewhere; the map is still consistent
        // (every update is a single push/remove), so keep serving.
        let mut guard = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut guard))
    }

    fn recipients(&self, room: &str, except: Option<&str>) -> Result<Vec<String>, StoreError> {
        self.with_rooms(|rooms| {
            rooms
                .get(room)
                .map(|peers| {
                    peers
                        .iter()
                        .filter(|p| Some(p.id.as_str()) != except)
                        .map(|p| p.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

#[async_trait]
impl RoomStore for MemoryStore {
    async fn join(
        &self,
        room: &str,
        peer: &PeerRecord,
        max: u32,
    ) -> Result<Vec<PeerInfo>, StoreError> {
        self.with_rooms(|rooms| {
            let peers = rooms.entry(room.to_owned()).or_default();
            if peers.len() >= max as usize {
                return Err(StoreError::RoomFull { max });
            }
            let others = peers.iter().map(PeerRecord::info).collect();
            // Exactly one more seat: a push would give a room of one or two peers room for
            // four records (96 bytes each), and most calls are of two.
            peers.reserve_exact(1);
            peers.push(peer.clone());
            Ok(others)
        })?
    }

    async fn resume(
        &self,
        room: &str,
        resume_token: &str,
        new_token: &str,
    ) -> Result<Option<PeerRecord>, StoreError> {
        self.with_rooms(|rooms| {
            rooms.get_mut(room).and_then(|peers| {
                peers
                    .iter_mut()
                    .find(|p| p.resume_token == resume_token)
                    .map(|p| {
                        p.epoch += 1;
                        new_token.clone_into(&mut p.resume_token);
                        p.clone()
                    })
            })
        })
    }

    async fn claim_token(&self, jti: &str, expires: u64) -> Result<bool, StoreError> {
        let now = crate::auth::now_secs();
        let mut used = self.used_tokens.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, exp| *exp >= now);
        if used.contains_key(jti) {
            return Ok(false);
        }
        used.insert(jti.to_owned(), expires);
        Ok(true)
    }

    async fn members(&self, room: &str) -> Result<Vec<PeerInfo>, StoreError> {
        self.with_rooms(|rooms| {
            rooms
                .get(room)
                .map(|peers| peers.iter().map(PeerRecord::info).collect())
                .unwrap_or_default()
        })
    }

    async fn leave(&self, room: &str, peer: &str, epoch: Option<u64>) -> Result<bool, StoreError> {
        self.with_rooms(|rooms| {
            let Some(peers) = rooms.get_mut(room) else {
                return false;
            };
            let before = peers.len();
            peers.retain(|p| p.id != peer || epoch.is_some_and(|e| e != p.epoch));
            let removed = peers.len() < before;
            if peers.is_empty() {
                rooms.remove(room);
            }
            removed
        })
    }

    async fn send(&self, room: &str, to: &str, frame: Frame) -> Result<bool, StoreError> {
        let member = self.with_rooms(|rooms| {
            rooms
                .get(room)
                .is_some_and(|p| p.iter().any(|p| p.id == to))
        })?;
        if member {
            self.local.deliver(to, frame);
        }
        Ok(member)
    }

    async fn broadcast(
        &self,
        room: &str,
        except: &str,
        _: Presence,
        frame: Frame,
    ) -> Result<(), StoreError> {
        for id in self.recipients(room, Some(except))? {
            self.local.deliver(&id, frame.clone());
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_room_holds_room_for_its_seats_only() {
        let store = MemoryStore::new(Arc::new(LocalPeers::default()));
        let capacity = |store: &MemoryStore| {
            store
                .with_rooms(|rooms| rooms.get("r").map(Vec::capacity))
                .unwrap()
        };
        store
            .join("r", &PeerRecord::for_test("a"), 8)
            .await
            .unwrap();
        assert_eq!(capacity(&store), Some(1));
        let others = store
            .join("r", &PeerRecord::for_test("b"), 8)
            .await
            .unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(capacity(&store), Some(2));
        assert_eq!(
            store.join("r", &PeerRecord::for_test("c"), 2).await,
            Err(StoreError::RoomFull { max: 2 })
        );
        assert_eq!(capacity(&store), Some(2));
    }
}
