//! Leader election with a `coordination.k8s.io/v1` Lease, the same protocol as client-go's
//! leaderelection: the holder renews `renewTime` well within `leaseDurationSeconds`; anyone may
//! take over a Lease that has not been renewed for that long; writes carry the `resourceVersion`
//! they read, so two candidates racing for it cannot both win.
//!
//! The decisions are pure functions of the Lease and the clock; [`LeaseElector`] only does I/O;
//! [`run_terms`] is the loop of leadership terms the binary runs the controller in.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::future::Future;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a candidate should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it over.
    TakeOver,
    /// Someone else holds a live Lease: wait.
    Follow {
        /// The current leader.
        holder: String,
    },
}

/// When the Lease stops being valid, if it is held at all.
pub fn expiry(spec: &LeaseSpec) -> Option<Timestamp> {
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.checked_add(SignedDuration::from_secs(secs)).ok()
}

/// Decide, given the Lease as read (`None`: it does not exist).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref().filter(|h| !h.is_empty()) {
        None => Decision::TakeOver,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => match expiry(spec) {
            Some(expires) if expires > now => Decision::Follow {
                holder: holder.to_string(),
            },
            _ => Decision::TakeOver,
        },
    }
}

/// The Lease spec to write for a decision that leads (`Create`, `Renew`, `TakeOver`).
pub fn next_spec(
    decision: &Decision,
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let secs = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    let base = previous.cloned().unwrap_or_default();
    match decision {
        Decision::Renew => LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(now)),
            acquire_time: base.acquire_time.clone().or(Some(MicroTime(now))),
            ..base
        },
        _ => LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if previous.is_some() {
                base.lease_transitions.unwrap_or(0) + 1
            } else {
                0
            }),
            ..base
        },
    }
}

/// The Lease spec that hands leadership back at shutdown, so a standby takes over at once
/// instead of waiting for the Lease to expire.
pub fn released_spec(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// A leader that could not renew for `deadline` must stop acting before its Lease expires and
/// another replica takes over.
pub fn must_step_down(
    last_renewed: std::time::Instant,
    now: std::time::Instant,
    deadline: Duration,
) -> bool {
    now.saturating_duration_since(last_renewed) >= deadline
}

/// Reads and writes one Lease on behalf of one candidate.
#[derive(Clone)]
pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    duration: Duration,
}

impl LeaseElector {
    /// An elector for the Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Try to acquire or renew. `Ok(true)` while this candidate leads; a lost race is `Ok(false)`.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &self.identity, now);
        if let Decision::Follow { holder } = &decision {
            tracing::debug!(%holder, "another replica leads");
            return Ok(false);
        }
        let next = next_spec(&decision, spec, &self.identity, now, self.duration);
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The read resourceVersion stays in metadata: a concurrent writer makes this a 409.
                lease.spec = Some(next);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if decision == Decision::TakeOver || decision == Decision::Create {
                    tracing::info!(identity = %self.identity, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up if this candidate holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released_spec(spec, Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// What the leadership loop needs from an elector: the Lease one, or a scripted test double.
pub trait Candidate: Clone + Send + Sync + 'static {
    /// Acquire or renew: `Ok(true)` while this candidate leads.
    fn try_lead(&self) -> impl Future<Output = Result<bool, kube::Error>> + Send;
}

impl Candidate for LeaseElector {
    fn try_lead(&self) -> impl Future<Output = Result<bool, kube::Error>> + Send {
        LeaseElector::try_lead(self)
    }
}

/// How often to try and renew, and when to give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader renews and a standby retries.
    pub renew_interval: Duration,
    /// How often a failed renewal is retried.
    pub retry: Duration,
    /// How long renewal may keep failing before the leader steps down.
    pub deadline: Duration,
}

impl Timing {
    /// client-go's defaults: renew deadline 2/3 of the lease, retries every 2 s at most.
    pub fn new(lease_duration: Duration, renew_interval: Duration) -> Self {
        Self {
            renew_interval,
            retry: renew_interval.min(Duration::from_secs(2)),
            deadline: lease_duration * 2 / 3,
        }
    }
}

/// A future that resolves once any of the flags turns true (Send + Sync, as the controller's
/// graceful shutdown wants).
pub fn wait_for_any(
    receivers: Vec<watch::Receiver<bool>>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, done) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        let waits = receivers.into_iter().map(|mut rx| {
            Box::pin(async move {
                let _ = rx.wait_for(|flag| *flag).await;
            })
        });
        futures::future::select_all(waits).await;
        let _ = tx.send(());
    });
    async move {
        let _ = done.await;
    }
}

/// Wait until this replica leads. `false` when asked to stop first.
pub async fn acquire<C: Candidate>(
    candidate: &C,
    retry: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        match candidate.try_lead().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "leader election request failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {},
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Keep renewing; set `lost` when another replica took the Lease or renewal kept failing past
/// the deadline. Failed renewals are retried every `timing.retry`, like client-go's retry period.
pub async fn renew<C: Candidate>(
    candidate: C,
    timing: Timing,
    lost: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = Instant::now();
    let mut wait = timing.renew_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        match candidate.try_lead().await {
            Ok(true) => {
                last = Instant::now();
                wait = timing.renew_interval;
            }
            Ok(false) => {
                tracing::error!("another replica took the leader lease");
                let _ = lost.send(true);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "renewing the leader lease failed");
                wait = timing.retry;
            }
        }
        if must_step_down(last.into_std(), Instant::now().into_std(), timing.deadline) {
            tracing::error!("could not renew the leader lease in time, stepping down");
            let _ = lost.send(true);
            return;
        }
    }
}

/// Run `term` once per leadership term until `stop` turns true: wait to lead, run it with a
/// future that resolves when the term ends (stop, or the Lease lost), then go back to standby
/// (a lost Lease must not end the process: the API server may just have been away). Without a
/// candidate there is one term, until `stop`. `leading` is called with true/false around terms.
pub async fn run_terms<C, F, Fut>(
    candidate: Option<C>,
    timing: Timing,
    stop: watch::Receiver<bool>,
    mut leading: impl FnMut(bool),
    mut term: F,
) where
    C: Candidate,
    F: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let mut waiting = stop.clone();
        let mut ends = vec![stop.clone()];
        if let Some(c) = &candidate {
            if !acquire(c, timing.renew_interval, &mut waiting).await {
                return;
            }
            let (lost_tx, lost_rx) = watch::channel(false);
            ends.push(lost_rx);
            tokio::spawn(renew(c.clone(), timing, lost_tx, stop.clone()));
        }
        leading(true);
        term(Box::pin(wait_for_any(ends))).await;
        leading(false);
        if *stop.borrow() || candidate.is_none() {
            return;
        }
        tracing::warn!("lost the leader lease; back to standby");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn held(by: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(t(renewed))),
            acquire_time: Some(MicroTime(t(0))),
            lease_transitions: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, "a", t(0)), Decision::Create);
        let spec = next_spec(&Decision::Create, None, "a", t(5), Duration::from_secs(15));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.renew_time, Some(MicroTime(t(5))));
    }

    #[test]
    fn holder_renews_and_keeps_acquire_time() {
        let lease = held("a", 10, 15);
        assert_eq!(decide(Some(&lease), "a", t(12)), Decision::Renew);
        let spec = next_spec(
            &Decision::Renew,
            Some(&lease),
            "a",
            t(12),
            Duration::from_secs(15),
        );
        assert_eq!(spec.acquire_time, Some(MicroTime(t(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(12))));
        assert_eq!(spec.lease_transitions, Some(2));
    }

    #[test]
    fn live_lease_of_another_is_followed() {
        let lease = held("a", 10, 15);
        assert_eq!(
            decide(Some(&lease), "b", t(24)),
            Decision::Follow { holder: "a".into() }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken_over_with_a_new_transition() {
        let lease = held("a", 10, 15);
        assert_eq!(decide(Some(&lease), "b", t(25)), Decision::TakeOver);
        assert_eq!(decide(Some(&lease), "b", t(40)), Decision::TakeOver);
        let spec = next_spec(
            &Decision::TakeOver,
            Some(&lease),
            "b",
            t(40),
            Duration::from_secs(15),
        );
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(40))));
        assert_eq!(spec.lease_transitions, Some(3));
        let released = released_spec(&lease, t(11));
        assert_eq!(decide(Some(&released), "b", t(11)), Decision::TakeOver);
        let no_time = LeaseSpec {
            holder_identity: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(decide(Some(&no_time), "b", t(0)), Decision::TakeOver);
    }

    #[test]
    fn leader_steps_down_when_it_cannot_renew_in_time() {
        let start = std::time::Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(!must_step_down(
            start,
            start + Duration::from_secs(9),
            deadline
        ));
        assert!(must_step_down(
            start,
            start + Duration::from_secs(10),
            deadline
        ));
    }

    /// A candidate answering from a script, then leading forever.
    #[derive(Clone)]
    struct Scripted(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Option<bool>>>>);

    impl Scripted {
        fn new(answers: &[Option<bool>]) -> Self {
            Self(std::sync::Arc::new(std::sync::Mutex::new(
                answers.iter().copied().collect(),
            )))
        }
        fn left(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    impl Candidate for Scripted {
        async fn try_lead(&self) -> Result<bool, kube::Error> {
            match self.0.lock().unwrap().pop_front() {
                Some(Some(lead)) => Ok(lead),
                Some(None) => Err(kube::Error::LinesCodecMaxLineLengthExceeded),
                None => Ok(true),
            }
        }
    }

    fn timing() -> Timing {
        Timing::new(Duration::from_secs(15), Duration::from_secs(5))
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_retries_through_followers_and_errors() {
        let c = Scripted::new(&[Some(false), None, Some(true)]);
        let (_tx, mut stop) = watch::channel(false);
        assert!(acquire(&c, Duration::from_secs(5), &mut stop).await);
        assert_eq!(c.left(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_gives_up_when_told_to_stop() {
        let c = Scripted::new(&[Some(false); 100]);
        let (tx, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            let _ = tx.send(true);
        });
        assert!(!acquire(&c, Duration::from_secs(5), &mut stop).await);
    }

    #[tokio::test(start_paused = true)]
    async fn renew_reports_a_lease_taken_by_another() {
        let c = Scripted::new(&[Some(true), Some(false)]);
        let (lost_tx, mut lost) = watch::channel(false);
        let (_stop_tx, stop) = watch::channel(false);
        renew(c, timing(), lost_tx, stop).await;
        assert!(*lost.borrow_and_update());
    }

    #[tokio::test(start_paused = true)]
    async fn renew_steps_down_after_failing_past_the_deadline() {
        let c = Scripted::new(&[None; 100]);
        let (lost_tx, lost) = watch::channel(false);
        let (_stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        renew(c.clone(), timing(), lost_tx, stop).await;
        assert!(*lost.borrow());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(13),
            "{took:?}"
        );
        assert!(c.left() > 90, "retried every 2 s, not in a tight loop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_term_goes_back_to_standby_then_leads_again_until_stopped() {
        // Term 1: acquired, the first renewal finds another holder. Term 2: acquired after one
        // refusal, then the process is told to stop.
        let c = Scripted::new(&[Some(true), Some(false), Some(false), Some(true)]);
        let (stop_tx, stop) = watch::channel(false);
        let terms = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = terms.clone();
        let mut n = 0;
        run_terms(
            Some(c),
            timing(),
            stop,
            |_| {},
            move |ended| {
                n += 1;
                let stop_tx = stop_tx.clone();
                let seen = seen.clone();
                let term = n;
                async move {
                    if term == 2 {
                        let _ = stop_tx.send(true);
                    }
                    ended.await;
                    seen.lock().unwrap().push(term);
                }
            },
        )
        .await;
        assert_eq!(*terms.lock().unwrap(), vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_election_there_is_one_term_until_stopped() {
        let (stop_tx, stop) = watch::channel(false);
        let mut flags = Vec::new();
        let _ = stop_tx.send(true);
        run_terms(
            None::<Scripted>,
            timing(),
            stop,
            |f| flags.push(f),
            |ended| ended,
        )
        .await;
        assert_eq!(flags, vec![true, false]);
    }
}
