//! SIGTERM: stop accepting, tell clients (joined or not) to reconnect, drain within the bound,
//! exit cleanly.

use std::time::{Duration, Instant};

use crate::common::{Client, Server};

#[tokio::test]
async fn sigterm_tells_clients_to_reconnect_and_exits() {
    let mut server = Server::start(&["--shutdown-grace", "3s"]);
    let (mut a, _) = Client::join(&server, "r", "A").await;
    let (mut b, _) = Client::join(&server, "r", "B").await;
    // Connected, not joined: told too (every connection is in the hub's roster).
    let mut c = Client::connect(&server).await;
    a.recv().await;
    let started = Instant::now();
    server.sigterm();
    for c in [&mut a, &mut b, &mut c] {
        let m = c.recv().await;
        assert_eq!(m["type"], "reconnect", "{m}");
        assert_eq!(m["reason"], "shutdown");
        assert_eq!(u16::from(c.expect_close().await.expect("close").code), 1012);
    }
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "server did not exit within its grace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        Client::connect_with(&server, |_| {}).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_client_that_ignores_the_request_is_dropped_at_the_bound() {
    let mut server = Server::start(&["--shutdown-grace", "1s"]);
    // This client never reads, so it never completes the close handshake.
    let _stubborn = Client::connect(&server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.sigterm();
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "shutdown not bounded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}
