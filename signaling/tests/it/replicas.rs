//! Three signaling replicas sharing one real redis-server.

use std::time::{Duration, Instant};

use crate::common::{BIN, Client, RedisServer, wait_until};
use otter_testkit::Signaling;
use serde_json::{Value, json};

const LEASE: &str = "1s";

struct Cluster {
    redis: RedisServer,
    replicas: Vec<Signaling>,
}

impl Cluster {
    async fn start(n: usize, extra: &[&str]) -> Cluster {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut replicas = Vec::new();
        for _ in 0..n {
            let mut args = vec!["--redis-url", url.as_str()];
            if !extra.contains(&"--replica-lease") {
                args.extend(["--replica-lease", LEASE]);
            }
            args.extend_from_slice(extra);
            replicas.push(Signaling::start(BIN, &args));
        }
        let c = Cluster { redis, replicas };
        c.all_ready().await;
        c
    }

    async fn all_ready(&self) {
        for r in &self.replicas {
            wait_until("replica ready", Duration::from_secs(15), || r.ready()).await;
        }
    }
}

async fn drain_presence(c: &mut Client, n: usize) {
    for _ in 0..n {
        let m = c.recv().await;
        assert_eq!(m["type"], "peer-joined", "{m}");
    }
}

#[tokio::test]
async fn peers_on_different_replicas_signal_each_other() {
    let cluster = Cluster::start(3, &[]).await;
    let mut peers = Vec::new();
    for i in 0..6 {
        let (c, joined) = Client::join(&cluster.replicas[i % 3], "spread", &format!("p{i}")).await;
        assert_eq!(
            joined["peers"].as_array().map(Vec::len),
            Some(i),
            "{joined}"
        );
        peers.push(c);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        drain_presence(p, 5 - i).await;
    }
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, to) in ids.iter().enumerate() {
            if i != j {
                p.send(json!({"type":"candidate","to":to,"candidate":{"candidate":format!("{i}->{j}")}}))
                    .await;
            }
        }
    }
    for (j, p) in peers.iter_mut().enumerate() {
        let mut from = Vec::new();
        for _ in 0..5 {
            let m = p.recv().await;
            let i = ids
                .iter()
                .position(|id| m["from"] == id.as_str())
                .expect("known sender");
            assert_eq!(m["candidate"]["candidate"], format!("{i}->{j}"));
            from.push(i);
        }
        from.sort_unstable();
        assert_eq!(from, (0..6).filter(|&i| i != j).collect::<Vec<_>>());
        p.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn racing_joins_never_exceed_the_room_cap() {
    let cluster = Cluster::start(3, &["--max-peers-per-room", "3"]).await;
    for round in 0..15 {
        let room = format!("race{round}");
        let (_a, _) = Client::join(&cluster.replicas[0], &room, "a").await;
        let (_b, _) = Client::join(&cluster.replicas[1], &room, "b").await;
        // Six clients, two per replica, all connected first, then all join at once.
        let mut racers = Vec::new();
        for i in 0..6 {
            racers.push(Client::connect(&cluster.replicas[i % 3]).await);
        }
        let results = futures::future::join_all(racers.iter_mut().map(|c| {
            let room = room.clone();
            async move {
                c.send(json!({"type":"join","room":room})).await;
                // Skip presence of other winners (there must be none), keep the join reply.
                loop {
                    let m = c.recv().await;
                    if m["type"] != "peer-joined" {
                        return m;
                    }
                }
            }
        }))
        .await;
        let winners = results.iter().filter(|m| m["type"] == "joined").count();
        let full = results.iter().filter(|m| m["code"] == "room-full").count();
        assert_eq!((winners, full), (1, 5), "round {round}: {results:?}");
        let seats = cluster.redis.cli(&["HLEN", &format!("otter:room:{room}")]);
        assert_eq!(seats, vec!["3".to_string()], "round {round}");
    }
}

#[tokio::test]
async fn a_crashed_replica_peers_leave_within_the_lease() {
    let mut cluster = Cluster::start(3, &[]).await;
    let (mut a, _) = Client::join(&cluster.replicas[0], "crash", "a").await;
    let (mut b, _) = Client::join(&cluster.replicas[1], "crash", "b").await;
    let (_c, _) = Client::join(&cluster.replicas[2], "crash", "c").await;
    drain_presence(&mut a, 2).await;
    drain_presence(&mut b, 1).await;
    let c_id = cluster.redis.cli(&["--raw", "HKEYS", "otter:room:crash"]);
    let crashed = Instant::now();
    cluster.replicas[2].crash();
    // Documented bound: lease + a quarter lease (the reaper's period) + delivery.
    for p in [&mut a, &mut b] {
        let m = p
            .try_recv(Duration::from_secs(3))
            .await
            .expect("peer-left in time");
        assert_eq!(m["type"], "peer-left", "{m}");
        assert_eq!(m["reason"], "timeout");
        assert!(c_id.contains(&m["peerId"].as_str().unwrap_or("").to_string()));
    }
    assert!(
        crashed.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        crashed.elapsed()
    );
    assert_eq!(
        cluster.redis.cli(&["HLEN", "otter:room:crash"]),
        vec!["2".to_string()]
    );
}

/// A Redis that stalls (a host too busy to run it) for longer than a relayed frame may wait,
/// but not as long as the lease: a join waits it out and succeeds, instead of `unavailable`.
#[tokio::test]
async fn a_join_waits_out_a_redis_stall() {
    let cluster = Cluster::start(2, &["--replica-lease", "10s"]).await;
    let (mut a, _) = Client::join(&cluster.replicas[0], "stall", "a").await;
    let mut b = Client::connect(&cluster.replicas[1]).await;
    cluster.redis.pause();
    b.send(json!({"type":"join","room":"stall","name":"b"}))
        .await;
    // The stall itself, twice the 2 s a relayed frame may wait.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.redis.unpause();
    let joined = b.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["peers"][0]["name"], "a", "{joined}");
    let m = a.recv().await;
    assert_eq!(
        (m["type"].clone(), m["peer"]["name"].clone()),
        (json!("peer-joined"), json!("b")),
        "{m}"
    );
}

#[tokio::test]
async fn redis_restart_is_survived_with_correct_membership() {
    let mut cluster = Cluster::start(3, &[]).await;
    let (mut a, _) = Client::join(&cluster.replicas[0], "phoenix", "a").await;
    let (mut a2, _) = Client::join(&cluster.replicas[0], "phoenix", "a2").await;
    let (mut b, _) = Client::join(&cluster.replicas[1], "phoenix", "b").await;
    drain_presence(&mut a, 2).await;
    drain_presence(&mut a2, 1).await;

    cluster.redis.kill();
    let r0 = &cluster.replicas[0];
    wait_until(
        "replica 0 to report not ready",
        Duration::from_secs(10),
        || async { !r0.ready().await },
    )
    .await;
    // Peers on the same replica keep signaling while Redis is away.
    a.send(json!({"type":"offer","to":a2.peer_id,"sdp":"during outage"}))
        .await;
    assert_eq!(a2.recv().await["sdp"], "during outage");
    // A peer of another replica is out of reach: a clear error, not silence.
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"x"}))
        .await;
    a.expect_error("unavailable").await;
    // a2 leaves during the outage: local peers hear it now.
    let a2_id = a2.peer_id.clone();
    a2.close().await;
    let m = a.recv().await;
    assert_eq!(
        (m["type"].clone(), m["peerId"].clone()),
        (json!("peer-left"), json!(a2_id))
    );

    cluster.redis.restart();
    cluster.all_ready().await;
    // The live peers were re-registered; a2 was not.
    let (mut c, joined) = Client::join(&cluster.replicas[2], "phoenix", "c").await;
    let mut names: Vec<String> = joined["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "b"], "{joined}");
    // Messages cross replicas again (pub/sub re-subscribed).
    c.send(json!({"type":"offer","to":a.peer_id,"sdp":"after restart"}))
        .await;
    let got = loop {
        let m = a.recv().await;
        if m["type"] == "offer" {
            break m;
        }
    };
    assert_eq!(got["sdp"], "after restart");
    b.send(json!({"type":"answer","to":c.peer_id,"sdp":"b to c"}))
        .await;
    let got: Value = loop {
        let m = c.recv().await;
        if m["type"] == "answer" {
            break m;
        }
    };
    assert_eq!(got["from"], b.peer_id.as_str());
}

#[tokio::test]
async fn no_keys_are_left_behind() {
    let mut cluster = Cluster::start(3, &["--reconnect-grace", "200ms"]).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let (c, _) = Client::join(&cluster.replicas[i % 3], &format!("room{}", i % 2), "x").await;
        clients.push(c);
    }
    assert!(
        cluster
            .redis
            .keys()
            .iter()
            .any(|k| k.starts_with("otter:room:"))
    );
    // Half leave politely, half vanish (lost connections, given up after the grace period).
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.close().await;
        } else {
            c.drop_connection();
        }
    }
    let redis = &cluster.redis;
    wait_until(
        "only the replica set to remain",
        Duration::from_secs(5),
        || async { redis.keys() == vec!["otter:replicas".to_string()] },
    )
    .await;
    for r in &cluster.replicas {
        r.sigterm();
    }
    for r in cluster.replicas.iter_mut() {
        let _ = r.child.wait();
    }
    // Once every lease has lapsed, the keys expire by their TTL (three leases).
    let redis = &cluster.redis;
    wait_until("every key to expire", Duration::from_secs(6), || async {
        redis.keys().is_empty()
    })
    .await;
}

#[tokio::test]
async fn tls_and_an_acl_user_like_elasticache() {
    let redis = RedisServer::start_tls(&[
        "--user", "default", "off", "--user", "otter", "on", ">s3cret", "~otter:*", "&otter:*",
        "+@all",
    ]);
    let ca = redis.tls_ca.clone().expect("tls");
    let ca = ca.to_str().expect("utf8");
    let url = format!("rediss://otter:s3cret@127.0.0.1:{}", redis.port);
    let sig = Signaling::start(BIN, &["--redis-url", &url, "--redis-ca-file", ca]);
    wait_until("ready over TLS", Duration::from_secs(10), || sig.ready()).await;
    let (mut a, _) = Client::join(&sig, "secure", "a").await;
    let (mut b, _) = Client::join(&sig, "secure", "b").await;
    a.recv().await;
    b.send(json!({"type":"offer","to":a.peer_id,"sdp":"over tls"}))
        .await;
    assert_eq!(a.recv().await["sdp"], "over tls");

    // A wrong password never becomes ready.
    let bad = format!("rediss://otter:wrong@127.0.0.1:{}", redis.port);
    let sig2 = Signaling::start(BIN, &["--redis-url", &bad, "--redis-ca-file", ca]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !sig2.ready().await,
        "must not be ready with a wrong password"
    );
    // Nor does a server whose certificate is not trusted.
    let untrusted = Signaling::start(BIN, &["--redis-url", &url]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!untrusted.ready().await, "must not trust an unknown CA");
}

/// Calls of one Redis command so far (`INFO commandstats`).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    redis
        .cli(&["INFO", "commandstats"])
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_peer_that_resumes_on_another_replica_is_reached_there_and_cut_off_here() {
    let cluster = Cluster::start(3, &[]).await;
    let (mut a, _) = Client::join(&cluster.replicas[0], "move", "a").await;
    let (mut b, _) = Client::join(&cluster.replicas[1], "move", "b").await;
    let (mut c, _) = Client::join(&cluster.replicas[2], "move", "c").await;
    drain_presence(&mut a, 2).await;
    drain_presence(&mut b, 1).await;
    // b's network changed: it resumes on replica 2 while its old socket on replica 1 is open.
    let mut b2 = Client::connect(&cluster.replicas[2]).await;
    let joined = b2
        .join_msg(json!({"type":"join","room":"move","resume":b.resume_token}))
        .await;
    assert_eq!(joined["peerId"], b.peer_id.as_str(), "{joined}");
    let frame = b.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4001, "superseded across replicas");
    // Everyone reaches b where it is now: from another replica, and from its new one.
    a.send(json!({"type":"offer","to":b.peer_id,"sdp":"from a"}))
        .await;
    c.send(json!({"type":"offer","to":b.peer_id,"sdp":"from c"}))
        .await;
    let mut got = [b2.recv().await, b2.recv().await];
    got.sort_by_key(|m| m["sdp"].to_string());
    assert_eq!(
        (got[0]["sdp"].as_str(), got[1]["sdp"].as_str()),
        (Some("from a"), Some("from c"))
    );
    b2.send(json!({"type":"answer","to":a.peer_id,"sdp":"from b"}))
        .await;
    assert_eq!(a.recv().await["sdp"], "from b");
    // The old connection's end gave up nothing: nobody hears b leave.
    a.expect_silence(Duration::from_millis(300)).await;
    c.expect_silence(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn frames_between_peers_of_one_replica_never_go_through_redis() {
    // A longer lease: the lease loop's own two scripts run every 2 s, not per frame.
    let cluster = Cluster::start(2, &["--replica-lease", "8s"]).await;
    let (mut a, _) = Client::join(&cluster.replicas[0], "local", "a").await;
    let (mut b, _) = Client::join(&cluster.replicas[0], "local", "b").await;
    let (mut far, _) = Client::join(&cluster.replicas[1], "local", "far").await;
    drain_presence(&mut a, 2).await;
    drain_presence(&mut b, 1).await;
    let before = (
        calls(&cluster.redis, "evalsha"),
        calls(&cluster.redis, "publish"),
    );
    for i in 0..100 {
        a.send(json!({"type":"candidate","to":b.peer_id,"candidate":{"candidate":i}}))
            .await;
    }
    for i in 0..100 {
        assert_eq!(b.recv().await["candidate"]["candidate"], i);
    }
    let after = (
        calls(&cluster.redis, "evalsha"),
        calls(&cluster.redis, "publish"),
    );
    // At most one lease tick may fall in the window (two scripts): never one per frame.
    assert!(
        after.0 - before.0 <= 2 && after.1 == before.1,
        "{before:?} -> {after:?}"
    );
    // Frames to another replica arrive complete and in order (from b: a's rate budget is
    // spent above).
    for i in 0..150 {
        b.send(json!({"type":"candidate","to":far.peer_id,"candidate":{"candidate":i}}))
            .await;
    }
    for i in 0..150 {
        assert_eq!(far.recv().await["candidate"]["candidate"], i);
    }
    let published = calls(&cluster.redis, "publish") - after.1;
    assert!(
        (1..=150).contains(&published),
        "{published} messages for 150 frames"
    );
}
