//! The Lua scripts (one file each under `lua/`, their arguments described at the top), run
//! with EVALSHA and loaded again when Redis lost them (restart). Membership changes are
//! scripts so they are atomic across replicas: the room cap holds under racing joins.

use fred::types::scripts::Script;

pub const JOIN: &str = include_str!("lua/join.lua");
pub const RESUME: &str = include_str!("lua/resume.lua");
pub const LEAVE: &str = include_str!("lua/leave.lua");
pub const SEND: &str = include_str!("lua/send.lua");
pub const BROADCAST: &str = include_str!("lua/broadcast.lua");
pub const RENEW: &str = include_str!("lua/renew.lua");
pub const REAP: &str = include_str!("lua/reap.lua");

pub struct Scripts {
    pub join: Script,
    pub resume: Script,
    pub leave: Script,
    pub send: Script,
    pub broadcast: Script,
    pub renew: Script,
    pub reap: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            join: Script::from_lua(JOIN),
            resume: Script::from_lua(RESUME),
            leave: Script::from_lua(LEAVE),
            send: Script::from_lua(SEND),
            broadcast: Script::from_lua(BROADCAST),
            renew: Script::from_lua(RENEW),
            reap: Script::from_lua(REAP),
        }
    }
}

/// Each script against a real `redis-server` (started by the test harness): the keys it
/// leaves and the records it publishes, read back by the envelope parser the replicas use.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fred::clients::SubscriberClient;
    use fred::prelude::*;
    use otter_testkit::RedisServer;

    use super::*;
    use crate::store::redis::envelope::{Kind, records};

    const P: &str = "otter:";

    async fn client(redis: &RedisServer) -> Client {
        let c = Builder::from_config(Config::from_url(&redis.url()).expect("url"))
            .build()
            .expect("client");
        c.init().await.expect("connect");
        c
    }

    /// A subscriber of a replica's channel, and its messages (taken before subscribing, so
    /// none is missed).
    async fn subscriber(redis: &RedisServer, replica: &str) -> (SubscriberClient, Messages) {
        let s = Builder::from_config(Config::from_url(&redis.url()).expect("url"))
            .build_subscriber_client()
            .expect("subscriber");
        let rx = s.message_rx();
        s.init().await.expect("connect");
        s.subscribe(format!("{P}r:{replica}"))
            .await
            .expect("subscribe");
        (s, rx)
    }

    type Messages = tokio::sync::broadcast::Receiver<fred::types::Message>;

    /// The next message on a subscriber, as text.
    async fn message(rx: &mut Messages) -> String {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message in time")
            .expect("open");
        m.value.as_string().expect("text")
    }

    fn seat(id: &str, replica: &str, resume: &str) -> String {
        format!(r#"{{"id":"{id}","resume":"{resume}","epoch":0,"replica":"{replica}"}}"#)
    }

    async fn join(
        c: &Client,
        s: &Scripts,
        room: &str,
        id: &str,
        replica: &str,
        cap: u32,
    ) -> Vec<String> {
        s.join
            .evalsha_with_reload(
                c,
                vec![
                    format!("{P}room:{room}"),
                    format!("{P}replica-peers:{replica}"),
                ],
                vec![
                    id.to_owned(),
                    seat(id, replica, &format!("t-{id}")),
                    cap.to_string(),
                    room.to_owned(),
                    "60000".into(),
                ],
            )
            .await
            .expect("join")
    }

    #[tokio::test]
    async fn join_caps_the_room_and_returns_the_seats_already_there() {
        let redis = RedisServer::start();
        let (c, s) = (client(&redis).await, Scripts::default());
        assert_eq!(join(&c, &s, "r", "a", "R1", 2).await, ["ok"]);
        let second = join(&c, &s, "r", "b", "R2", 2).await;
        assert_eq!(second.len(), 2);
        assert!(second[1].contains(r#""id":"a""#), "{second:?}");
        assert_eq!(join(&c, &s, "r", "c", "R1", 2).await, ["full"]);
        let set: Vec<String> = c
            .smembers(format!("{P}replica-peers:R1"))
            .await
            .expect("set");
        assert_eq!(set, ["r a"]);
    }

    #[tokio::test]
    async fn broadcast_sends_one_record_per_other_replica_with_the_frame_as_is() {
        let redis = RedisServer::start();
        let (c, s) = (client(&redis).await, Scripts::default());
        let (_r2, mut r2) = subscriber(&redis, "R2").await;
        for (id, rep) in [
            ("a", "R1"),
            ("b", "R1"),
            ("x", "R2"),
            ("y", "R2"),
            ("new", "R1"),
        ] {
            join(&c, &s, "r", id, rep, 10).await;
        }
        let frame = "{\"type\":\"peer-joined\",\"peer\":{\"id\":\"new\",\"name\":\"é \\\"q\\\"\"}}";
        let mut mine: Vec<String> = s
            .broadcast
            .evalsha_with_reload(
                &c,
                vec![format!("{P}room:r")],
                vec!["new", "R1", frame, P, "r", Kind::Joined.tag(), "R1"],
            )
            .await
            .expect("broadcast");
        mine.sort();
        assert_eq!(mine, ["a", "b"]);
        let text = message(&mut r2).await;
        let recs: Vec<_> = records(&text).collect::<Result<_, _>>().expect("parses");
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(
            (r.kind, r.room, r.subject, r.replica, r.frame),
            (Kind::Joined, "r", "new", "R1", frame)
        );
        let mut to: Vec<&str> = r.to().collect();
        to.sort_unstable();
        assert_eq!(to, ["x", "y"]);
    }

    #[tokio::test]
    async fn resume_moves_the_seat_and_tells_the_replica_it_left() {
        let redis = RedisServer::start();
        let (c, s) = (client(&redis).await, Scripts::default());
        let (_old, mut old) = subscriber(&redis, "R1").await;
        join(&c, &s, "r", "a", "R1", 10).await;
        let resumed: Option<String> = s
            .resume
            .evalsha_with_reload(
                &c,
                vec![format!("{P}room:r")],
                vec!["t-a", "R2", "r", P, "60000", "t-2"],
            )
            .await
            .expect("resume");
        let seat: serde_json::Value = serde_json::from_str(&resumed.expect("seat")).expect("json");
        assert_eq!(
            (
                seat["replica"].as_str(),
                seat["epoch"].as_u64(),
                seat["resume"].as_str()
            ),
            (Some("R2"), Some(1), Some("t-2"))
        );
        let text = message(&mut old).await;
        let rec = records(&text).next().expect("a record").expect("parses");
        assert_eq!(
            (rec.kind, rec.subject, rec.replica, rec.epoch()),
            (Kind::Moved, "a", "R2", Some(1))
        );
        let sets: (Vec<String>, Vec<String>) = (
            c.smembers(format!("{P}replica-peers:R1"))
                .await
                .expect("set"),
            c.smembers(format!("{P}replica-peers:R2"))
                .await
                .expect("set"),
        );
        assert_eq!(sets, (vec![], vec!["r a".to_owned()]));
        let again: Option<String> = s
            .resume
            .evalsha_with_reload(
                &c,
                vec![format!("{P}room:r")],
                vec!["t-a", "R2", "r", P, "60000", "t-3"],
            )
            .await
            .expect("resume");
        assert_eq!(again, None, "a resume token works once");
    }

    #[tokio::test]
    async fn send_routes_by_the_room_hash_and_leave_respects_the_epoch() {
        let redis = RedisServer::start();
        let (c, s) = (client(&redis).await, Scripts::default());
        let (_r2, mut r2) = subscriber(&redis, "R2").await;
        join(&c, &s, "r", "a", "R1", 10).await;
        join(&c, &s, "r", "b", "R2", 10).await;
        let send = |to: &'static str| {
            s.send.evalsha_with_reload::<String, _, _>(
                &c,
                vec![format!("{P}room:r")],
                vec![to, "R1", "{\"x\":1}", P, "r"],
            )
        };
        assert_eq!(send("nobody").await.expect("send"), "", "not in the room");
        assert_eq!(send("a").await.expect("send"), "=", "held by the caller");
        assert_eq!(
            send("b").await.expect("send"),
            "R2",
            "published to its replica"
        );
        let text = message(&mut r2).await;
        let rec = records(&text).next().expect("a record").expect("parses");
        assert_eq!((rec.kind, rec.frame), (Kind::Forwarded, "{\"x\":1}"));
        assert_eq!(rec.to().collect::<Vec<_>>(), ["b"]);
        let leave = |epoch: &'static str| {
            s.leave.evalsha_with_reload::<i64, _, _>(
                &c,
                vec![format!("{P}room:r")],
                vec!["b", epoch, "r", P],
            )
        };
        assert_eq!(
            leave("7").await.expect("leave"),
            0,
            "another epoch's seat stays"
        );
        assert_eq!(leave("0").await.expect("leave"), 1);
        let set: Vec<String> = c
            .smembers(format!("{P}replica-peers:R2"))
            .await
            .expect("set");
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn the_seats_of_a_replica_whose_lease_ran_out_are_reaped() {
        let redis = RedisServer::start();
        let (c, s) = (client(&redis).await, Scripts::default());
        join(&c, &s, "r", "a", "R1", 10).await;
        join(&c, &s, "r", "b", "R2", 10).await;
        let keys = || vec![format!("{P}replicas"), format!("{P}replica-peers:R1")];
        let renew = |lease: &'static str| {
            s.renew
                .evalsha_with_reload::<i64, _, _>(&c, keys(), vec!["R1", lease, "60000"])
        };
        // A lease of 0 ms has run out by the time the reaper reads the clock.
        assert_eq!(renew("0").await.expect("renew"), 1, "a new lease");
        assert_eq!(renew("0").await.expect("renew"), 0, "renewed");
        let alive = || {
            s.renew.evalsha_with_reload::<i64, _, _>(
                &c,
                vec![format!("{P}replicas"), format!("{P}replica-peers:R2")],
                vec!["R2", "60000", "60000"],
            )
        };
        alive().await.expect("renew");
        let removed: Vec<String> = s
            .reap
            .evalsha_with_reload(&c, vec![format!("{P}replicas")], vec![P])
            .await
            .expect("reap");
        assert_eq!(removed, ["r a"]);
        let left: Vec<String> = c.hkeys(format!("{P}room:r")).await.expect("hkeys");
        assert_eq!(left, ["b"]);
    }
}
