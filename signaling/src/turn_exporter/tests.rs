use super::*;

// Channels and payloads as the real coturn 4.6.1 published them (tests/tests/it/turn_metrics.rs
// checks the same against a running turnserver).
const A: &str = "turn/realm/otter/user/1796226708:alice/allocation/000000000000000001";
const B: &str = "turn/user/1796226708:bob/allocation/001000000000000002";
const NEW: &str = "new lifetime=777, type=UDP, local=127.0.0.1:13478, remote=127.0.0.1:52212, ssl=NONE, cipher=NONE";

fn ch(prefix: &str, rest: &str) -> String {
    format!("{prefix}/{rest}")
}

fn line(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn parses_status_traffic_and_totals() {
    let id = alloc_id(A);
    assert_eq!(
        parse(&ch(A, "status"), NEW),
        Ok(Event::Created(id, Transport::udp))
    );
    assert_eq!(
        parse(
            &ch(A, "status"),
            "refreshed lifetime=600, type=TCP, local=x"
        ),
        Ok(Event::Refreshed(id, Transport::tcp))
    );
    assert_eq!(
        parse(&ch(A, "status"), "refreshed lifetime=0, type=UDP"),
        Ok(Event::Ignored)
    );
    assert_eq!(parse(&ch(A, "status"), "deleted"), Ok(Event::Deleted(id)));
    let t = Traffic {
        rcvp: 31,
        rcvb: 3348,
        sentp: 30,
        sentb: 3000,
    };
    assert_eq!(
        parse(
            &ch(A, "traffic"),
            "rcvp=31, rcvb=3348, sentp=30, sentb=3000"
        ),
        Ok(Event::Traffic(id, Leg::client, t))
    );
    assert_eq!(
        parse(
            &ch(B, "traffic/peer"),
            "rcvp=31, rcvb=3348, sentp=30, sentb=3000"
        ),
        Ok(Event::Traffic(alloc_id(B), Leg::peer, t))
    );
    assert_eq!(
        parse(&ch(A, "total_traffic/peer"), "rcvp=1"),
        Ok(Event::Ignored)
    );
}

#[test]
fn refuses_what_is_not_coturn_statistics() {
    for (channel, payload) in [
        ("other/allocation/1/status", "deleted"),
        ("turn/user/u/status", "deleted"),
        ("turn/user/u/allocation/x1/status", "deleted"),
        ("turn/user/u/allocation/1", "deleted"),
        ("turn/user/u/allocation/1/status", "gone"),
        (
            "turn/user/u/allocation/1/traffic",
            "rcvp=1, rcvb=2, sentp=3",
        ),
        (
            "turn/user/u/allocation/1/traffic",
            "rcvp=-1, rcvb=2, sentp=3, sentb=4",
        ),
        ("turn/user/u/allocation/1/bandwidth", "x"),
    ] {
        assert!(parse(channel, payload).is_err(), "{channel} {payload}");
    }
}

#[test]
fn a_username_holding_the_separator_is_still_one_allocation() {
    let tricky = "turn/user/a/allocation/9/x/allocation/000000000000000001";
    assert_eq!(
        parse(&ch(tricky, "status"), "deleted"),
        Ok(Event::Deleted(alloc_id(tricky)))
    );
}

#[test]
fn counts_allocations_and_traffic_without_user_labels() {
    let mut s = TurnStats::new();
    s.message(&ch(A, "status"), NEW);
    s.message(&ch(A, "status"), "refreshed lifetime=600, type=UDP");
    s.message(&ch(B, "status"), &NEW.replace("UDP", "TLS"));
    s.message(&ch(A, "traffic"), "rcvp=3, rcvb=300, sentp=2, sentb=200");
    s.message(
        &ch(A, "traffic/peer"),
        "rcvp=1, rcvb=100, sentp=4, sentb=400",
    );
    s.message(
        &ch(A, "traffic/peer"),
        "rcvp=1, rcvb=100, sentp=4, sentb=400",
    );
    s.message(
        &ch(A, "total_traffic/peer"),
        "rcvp=2, rcvb=200, sentp=8, sentb=800",
    );
    s.message(&ch(A, "status"), "refreshed lifetime=0, type=UDP");
    s.message(&ch(A, "status"), "deleted");
    s.message(&ch(A, "status"), "deleted");
    s.message("turn/nonsense", "x");
    let text = s.encode();
    for (series, want) in [
        ("otter_turn_allocations{transport=\"udp\"}", 0.0),
        ("otter_turn_allocations{transport=\"tls\"}", 1.0),
        ("otter_turn_allocations_created_total", 2.0),
        ("otter_turn_allocations_ended_total", 2.0),
        (
            "otter_turn_traffic_bytes_total{leg=\"client\",direction=\"received\"}",
            300.0,
        ),
        (
            "otter_turn_traffic_bytes_total{leg=\"peer\",direction=\"sent\"}",
            800.0,
        ),
        (
            "otter_turn_traffic_packets_total{leg=\"peer\",direction=\"received\"}",
            2.0,
        ),
        ("otter_turn_stats_malformed_total", 1.0),
    ] {
        assert_eq!(line(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        !text.contains("alice") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert_eq!(s.live(), 1);
}

#[test]
fn a_refresh_adopts_an_allocation_made_before_the_exporter_started() {
    let mut s = TurnStats::new();
    s.message(&ch(A, "status"), "refreshed lifetime=600, type=UDP");
    s.message(&ch(A, "status"), "refreshed lifetime=600, type=UDP");
    let text = s.encode();
    assert_eq!(
        line(&text, "otter_turn_allocations{transport=\"udp\"}"),
        Some(1.0)
    );
    assert_eq!(
        line(&text, "otter_turn_allocations_created_total"),
        Some(0.0)
    );
}

#[test]
fn resync_replaces_the_live_set_with_the_status_keys() {
    let mut s = TurnStats::new();
    s.message(&ch(A, "status"), NEW);
    let b = ch(B, "status");
    let bad = "turn/user/u/allocation/1/status".to_string();
    s.resync([(b.as_str(), NEW), (bad.as_str(), "gone")]);
    let text = s.encode();
    assert_eq!(s.live(), 1);
    assert_eq!(
        line(&text, "otter_turn_allocations{transport=\"udp\"}"),
        Some(1.0)
    );
    assert_eq!(line(&text, "otter_turn_stats_resyncs_total"), Some(1.0));
    assert_eq!(line(&text, "otter_turn_stats_malformed_total"), Some(1.0));
    // A deletion after the resync of an allocation it no longer knew leaves the gauge alone.
    s.message(&ch(A, "status"), "deleted");
    assert_eq!(s.live(), 1);
    assert_eq!(
        line(&s.encode(), "otter_turn_allocations{transport=\"udp\"}"),
        Some(1.0)
    );
}
