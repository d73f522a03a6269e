//! `<name>-turn-keys`: which TURN shared secrets coturn accepts and which one signaling mints
//! with, so that a rotation is ordered and needs no restart.
//!
//! The TURN Secret (generated, or the user's) says which secret *should* be in use. This Secret,
//! always the operator's, says what is in use now, in two phases:
//!
//! 1. A new value appears as `next`: the TURN pods' secrets agent adds it to coturn at once
//!    (coturn accepts `turn-secret`, `next` and `previous`), signaling keeps minting with
//!    `turn-secret`.
//! 2. Once a probe Allocate with a credential minted from `next` succeeds on every published
//!    TURN node (`Observed::turn_next_confirmed`), `next` becomes `turn-secret`, which signaling
//!    re-reads from its mounted file, and the value it replaces becomes `previous`, accepted
//!    until `previous-until` (unix seconds): one credential TTL plus a margin for the kubelet to
//!    update the signaling pods' file. When that has passed, the operator removes it and the
//!    agents drop it from coturn (the operator keeps the clock: the coturn image needs none).
//!
//! Values are stored without trailing whitespace, as signaling reads its file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::build::secrets::{SecretSource, TURN_SECRET_KEY, resolved_value, turn_secret_source};
use crate::build::signaling::duration_secs;
use crate::crd::OtterDeployment;
use crate::error::BuildError;
use crate::meta::{Component, child_meta, child_name};
use crate::observed::Observed;

/// Key of the value waiting for every TURN pod to accept it.
pub const NEXT_KEY: &str = "next";
/// Key of the value signaling minted with before the last switch.
pub const PREVIOUS_KEY: &str = "previous";
/// Key of the unix time until which `previous` stays accepted.
pub const PREVIOUS_UNTIL_KEY: &str = "previous-until";
/// How long the previous secret stays accepted beyond the credential TTL: covers the kubelet's
/// delay in updating the signaling pods' mounted file (they mint with the previous value until
/// it does; those credentials then live a whole TTL).
pub const ROTATION_MARGIN_SECONDS: u64 = 600;

/// The name of the keys Secret (none when TURN is off).
pub fn turn_keys_source(cr: &OtterDeployment) -> Option<SecretSource> {
    turn_secret_source(cr).map(|_| SecretSource {
        name: child_name(cr, "turn-keys"),
        key: TURN_SECRET_KEY.to_string(),
        generated: true,
    })
}

/// What the keys Secret holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnKeys {
    /// The value signaling mints with.
    pub current: Vec<u8>,
    /// A value coturn accepts that signaling does not mint with yet.
    pub next: Option<Vec<u8>>,
    /// The value signaling minted with before, and until when coturn accepts it.
    pub previous: Option<(Vec<u8>, u64)>,
}

impl TurnKeys {
    /// The keys as the Secret `secret` of `obs` holds them (none without a current value).
    pub fn observed(obs: &Observed, secret: &str) -> Option<Self> {
        Self::from_secret(obs.secrets.get(secret)?)
    }

    /// The keys a keys Secret holds (none without a current value).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| data.get(k).map(|v| v.0.clone()).filter(|v| !v.is_empty());
        let until = get(PREVIOUS_UNTIL_KEY)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Some(Self {
            current: get(TURN_SECRET_KEY)?,
            next: get(NEXT_KEY),
            previous: get(PREVIOUS_KEY).zip(until),
        })
    }

    /// A rotation waits for the TURN pods.
    pub fn pending(&self) -> bool {
        self.next.is_some()
    }

    /// The keys once `wanted` is the value that should be in use, at unix time `now`.
    /// `confirmed`: every TURN pod accepts the observed `next`.
    pub fn step(self, wanted: &[u8], confirmed: bool, now: u64, keep: u64) -> Self {
        // An expired previous value is left out, and so dropped by the agents.
        let previous = self.previous.filter(|(_, until)| *until > now);
        if self.current == wanted {
            return Self {
                current: self.current,
                next: None,
                previous,
            };
        }
        if confirmed && self.next.as_deref() == Some(wanted) {
            return Self {
                previous: Some((self.current, now.saturating_add(keep))),
                current: wanted.to_vec(),
                next: None,
            };
        }
        Self {
            current: self.current,
            next: Some(wanted.to_vec()),
            previous,
        }
    }

    fn data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::from([(TURN_SECRET_KEY.to_string(), self.current.clone())]);
        if let Some(next) = &self.next {
            data.insert(NEXT_KEY.to_string(), next.clone());
        }
        if let Some((value, until)) = &self.previous {
            data.insert(PREVIOUS_KEY.to_string(), value.clone());
            data.insert(
                PREVIOUS_UNTIL_KEY.to_string(),
                until.to_string().into_bytes(),
            );
        }
        data
    }
}

fn trimmed(v: &[u8]) -> Vec<u8> {
    v.trim_ascii_end().to_vec()
}

/// `<name>-turn-keys`, from the TURN Secret's value (`built`: the generated Secrets of this
/// reconcile) and the keys as observed. None when TURN is off, or when neither the TURN Secret
/// nor the keys exist yet (the user's Secret is missing: reported, pods wait).
pub fn build_turn_keys(
    cr: &OtterDeployment,
    obs: &Observed,
    built: &[Secret],
) -> Result<Option<Secret>, BuildError> {
    let (Some(src), Some(keys_src)) = (turn_secret_source(cr), turn_keys_source(cr)) else {
        return Ok(None);
    };
    let ttl = duration_secs("turn.credentialTtl", &cr.spec.turn.credential_ttl)?;
    let wanted = resolved_value(&src, built, obs)
        .map(|v| trimmed(&v))
        .filter(|v| !v.is_empty());
    let keys = match (TurnKeys::observed(obs, &keys_src.name), wanted) {
        (None, None) => return Ok(None),
        (Some(keys), None) => keys,
        (None, Some(wanted)) => TurnKeys {
            current: wanted,
            ..Default::default()
        },
        (Some(keys), Some(wanted)) => keys.step(
            &wanted,
            obs.turn_next_confirmed,
            obs.unix_now,
            ttl.saturating_add(ROTATION_MARGIN_SECONDS),
        ),
    };
    let data = keys
        .data()
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
        .collect();
    Ok(Some(Secret {
        metadata: child_meta(cr, keys_src.name, Component::Secrets)?,
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    }))
}

/// When the previous TURN secret expires, as seconds from `now` (for the requeue that removes
/// it), if there is one.
pub fn previous_expires_in(keys: &TurnKeys, now: u64) -> Option<u64> {
    keys.previous
        .as_ref()
        .map(|(_, until)| until.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::secrets::build_turn_secret;
    use crate::testing::{cr, observed, secret};

    const KEEP: u64 = 3600 + ROTATION_MARGIN_SECONDS;

    fn keys(cr: &OtterDeployment, obs: &Observed) -> TurnKeys {
        let built: Vec<Secret> = build_turn_secret(cr, obs).unwrap().into_iter().collect();
        let s = build_turn_keys(cr, obs, &built).unwrap().unwrap();
        let mut o = Observed::default();
        o.secrets.insert("demo-turn-keys".into(), s);
        TurnKeys::observed(&o, "demo-turn-keys").unwrap()
    }

    /// `obs` with the TURN Secret holding `value` and the keys Secret holding `k`.
    fn world(value: &str, k: &TurnKeys) -> Observed {
        let mut obs = observed();
        obs.unix_now = 1_000;
        obs.secrets.insert(
            "demo-turn-secret".into(),
            secret("demo-turn-secret", &[("turn-secret", value)]),
        );
        let mut s = secret("demo-turn-keys", &[]);
        s.data = Some(
            k.data()
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        );
        obs.secrets.insert("demo-turn-keys".into(), s);
        obs
    }

    fn cur(v: &str) -> TurnKeys {
        TurnKeys {
            current: v.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_first_reconcile_mints_with_the_turn_secret() {
        let mut cr = cr();
        cr.spec.turn.credential_ttl = "1h".into();
        assert_eq!(keys(&cr, &observed()), cur("fresh-turn"));
    }

    #[test]
    fn a_new_value_is_accepted_first_and_minted_only_once_confirmed() {
        let mut cr = cr();
        cr.spec.turn.credential_ttl = "1h".into();
        // Phase 1: the new value waits as `next`, signaling keeps minting with the old one.
        let obs = world("new\n", &cur("old"));
        let phase1 = keys(&cr, &obs);
        assert_eq!(
            phase1,
            TurnKeys {
                current: "old".into(),
                next: Some("new".into()),
                previous: None
            }
        );
        // Not confirmed yet: unchanged, so nothing is written while the operator waits.
        assert_eq!(keys(&cr, &world("new", &phase1)), phase1);
        // Phase 2: every TURN pod accepts it; the old value stays accepted for TTL + margin.
        let mut obs = world("new", &phase1);
        obs.turn_next_confirmed = true;
        let phase2 = keys(&cr, &obs);
        assert_eq!(
            phase2,
            TurnKeys {
                current: "new".into(),
                next: None,
                previous: Some(("old".into(), 1_000 + KEEP))
            }
        );
        // At rest the keys stay as they are, until the previous value has expired.
        assert_eq!(keys(&cr, &world("new", &phase2)), phase2);
        let mut later = world("new", &phase2);
        later.unix_now = 1_000 + KEEP;
        assert_eq!(keys(&cr, &later), cur("new"));
    }

    #[test]
    fn a_confirmation_of_another_value_switches_nothing() {
        let mut cr = cr();
        cr.spec.turn.credential_ttl = "1h".into();
        let pending = TurnKeys {
            current: "old".into(),
            next: Some("new".into()),
            previous: None,
        };
        // The Secret changed again before the TURN pods confirmed: the newest value waits.
        let mut obs = world("newer", &pending);
        obs.turn_next_confirmed = true;
        assert_eq!(
            keys(&cr, &obs),
            TurnKeys {
                current: "old".into(),
                next: Some("newer".into()),
                previous: None
            }
        );
    }

    #[test]
    fn a_missing_user_secret_keeps_the_keys_in_use() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(crate::crd::SecretKeyRef {
            name: "mine".into(),
            key: None,
        });
        let mut obs = observed();
        assert!(
            build_turn_keys(&cr, &obs, &[]).unwrap().is_none(),
            "nothing to mint with"
        );
        obs.secrets.insert(
            "demo-turn-keys".into(),
            secret("demo-turn-keys", &[("turn-secret", "in-use")]),
        );
        assert_eq!(keys(&cr, &obs), cur("in-use"));
        cr.spec.turn.enabled = false;
        assert!(build_turn_keys(&cr, &obs, &[]).unwrap().is_none());
    }
}
