//! Leader election with a `coordination.k8s.io/v1` Lease, the same protocol as client-go's
//! leaderelection: the holder renews `renewTime` well within `leaseDurationSeconds`; anyone may
//! take over a Lease that has not been renewed for that long; writes carry the `resourceVersion`
//! they read, so two candidates racing for it cannot both win.
//!
//! The decisions are pure functions of the Lease and the clock; [`LeaseElector`] only does I/O.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

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
}
