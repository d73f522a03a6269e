//! The one place both binaries wait for the signal to stop: SIGTERM (what Kubernetes sends) or
//! Ctrl-C (a terminal). A handler that cannot be installed is logged and never fires, so the
//! other one still works.

use std::future::Future;

/// A future resolving on SIGTERM or Ctrl-C, whichever comes first. The SIGTERM handler is
/// installed when this is called (inside a tokio runtime), not when the future is first polled,
/// so a SIGTERM sent right after the call is not lost.
pub fn termination() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match sigterm {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
}
