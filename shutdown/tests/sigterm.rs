//! SIGTERM sent to this very process ends the wait (and does not kill the process: the handler
//! is installed by the call, before the signal is sent).

use std::time::Duration;

#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_the_wait() {
    let waiting = otter_shutdown::termination();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends within 10 s of SIGTERM");
}
