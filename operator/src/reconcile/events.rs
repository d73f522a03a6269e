//! Events on transitions: Ready flips, new Degraded reasons, generated Secrets, pruned children.
//! The recorder folds Events with the same reason into a series and keeps only the first note,
//! so there is one Event per action.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::crd::{OtterDeployment, OtterDeploymentStatus};
use crate::probe::reachability;
use crate::reconcile::status::{DEGRADED, READY, Reason, find_condition};

/// Reason of the Event telling that Secrets were generated.
pub const SECRET_GENERATED: &str = "SecretGenerated";
/// Reason of the Event telling that children were deleted.
pub const PRUNED: &str = "Pruned";

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    }
}

/// Events worth telling about a status change: Ready flips and new Degraded reasons.
pub fn status_events(
    old: Option<&OtterDeploymentStatus>,
    new: &OtterDeploymentStatus,
) -> Vec<Event> {
    let mut events = Vec::new();
    let get =
        |s: Option<&OtterDeploymentStatus>, t: &str| s.and_then(|s| find_condition(s, t)).cloned();
    let (old_ready, new_ready) = (get(old, READY), get(Some(new), READY));
    if let Some(r) = &new_ready {
        let changed =
            old_ready.as_ref().map(|o| (&o.status, &o.reason)) != Some((&r.status, &r.reason));
        if changed {
            let ready = r.status == "True";
            // Waiting for a rollout is normal; anything else that is not ready is a warning.
            let normal = ready || Reason::parse(&r.reason).is_some_and(Reason::is_normal);
            let type_ = if normal {
                EventType::Normal
            } else {
                EventType::Warning
            };
            let reason = if ready { READY } else { r.reason.as_str() };
            events.push(event(type_, reason, "Reconcile", &r.message));
        }
    }
    let (old_deg, new_deg) = (get(old, DEGRADED), get(Some(new), DEGRADED));
    if let Some(d) = &new_deg {
        let changed =
            old_deg.as_ref().map(|o| (&o.status, &o.reason)) != Some((&d.status, &d.reason));
        // The Ready event above already carries the same reason when it flipped with it.
        let told = events.iter().any(|e| e.reason == d.reason);
        if changed && d.status == "True" && !told {
            events.push(event(
                EventType::Warning,
                &d.reason,
                "Reconcile",
                &d.message,
            ));
        }
    }
    let before = old.map(|s| s.turn_reachability.as_slice());
    events.extend(reachability::events(
        before.unwrap_or_default(),
        &new.turn_reachability,
    ));
    events
}

/// One Event naming the Secrets generated with fresh values (none: no Event).
pub fn secrets_generated(generated: &[String]) -> Option<Event> {
    (!generated.is_empty()).then(|| {
        let note = format!(
            "generated Secret(s) {} with fresh random values; they are kept from now on",
            generated.join(", ")
        );
        event(EventType::Normal, SECRET_GENERATED, "Generate", &note)
    })
}

/// One Event naming the children deleted (none: no Event).
pub fn pruned(deleted: &[String]) -> Option<Event> {
    (!deleted.is_empty()).then(|| {
        let note = format!(
            "deleted {}: the spec no longer needs them",
            deleted.join(", ")
        );
        event(EventType::Normal, PRUNED, "Delete", &note)
    })
}

/// Publish; a refused Event is logged, never fails the reconcile.
pub async fn publish(recorder: &Recorder, cr: &OtterDeployment, event: Event) {
    if let Err(e) = recorder.publish(&event, &cr.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Applied;
    use crate::reconcile::status::{Problems, compute_status};
    use crate::testing::{cr, observed};
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn events_tell_ready_flips_and_new_degraded_reasons_once() {
        let cr = cr();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let none = Applied::default();
        let mut degraded_obs = observed();
        degraded_obs.turn_nodes.clear();
        let degraded = compute_status(&cr, &degraded_obs, &none, &Problems::default(), now);
        let events = status_events(None, &degraded);
        assert_eq!(events.len(), 1, "Ready=False carries the reason");
        assert_eq!(events[0].reason, "NoTurnNodes");
        assert_eq!(events[0].type_, EventType::Warning);
        assert!(
            status_events(Some(&degraded), &degraded).is_empty(),
            "no news, no event"
        );
        let creating = compute_status(&cr, &observed(), &none, &Problems::default(), now);
        let events = status_events(Some(&degraded), &creating);
        assert_eq!(events[0].reason, "Creating");
        assert_eq!(
            events[0].type_,
            EventType::Normal,
            "waiting is not a warning"
        );
    }

    #[test]
    fn nothing_generated_or_pruned_tells_nothing() {
        assert!(secrets_generated(&[]).is_none());
        assert!(pruned(&[]).is_none());
        let e = pruned(&["ConfigMap demo-turn".into()]).unwrap();
        assert_eq!(e.reason, PRUNED);
        assert!(e.note.unwrap().contains("ConfigMap demo-turn"));
    }
}
