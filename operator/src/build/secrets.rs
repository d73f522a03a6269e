//! Secrets: the TURN shared secret, the room-token secret and the managed Redis URL.
//!
//! Only Secrets the operator generates are ever built (and so applied). A Secret the user names
//! is read, never written. A generated value, once it exists in the cluster, is reused forever:
//! the builder takes it from [`Observed`] and only falls back to a fresh value when there is none.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::crd::{OtterDeployment, RedisMode};
use crate::error::BuildError;
use crate::meta::{Component, child_meta, child_name, namespace};
use crate::observed::Observed;

/// Key of the TURN shared secret.
pub const TURN_SECRET_KEY: &str = "turn-secret";
/// Key of the room-token signing secret.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Key of a Redis URL.
pub const REDIS_URL_KEY: &str = "url";
/// Key of the managed Redis password.
pub const REDIS_PASSWORD_KEY: &str = "password";

/// Where a component reads a secret value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSource {
    /// Secret name.
    pub name: String,
    /// Key in it.
    pub key: String,
    /// True when the operator generates and owns the Secret.
    pub generated: bool,
}

/// The TURN shared secret (none when TURN is off).
pub fn turn_secret_source(cr: &OtterDeployment) -> Option<SecretSource> {
    let turn = &cr.spec.turn;
    if !turn.enabled {
        return None;
    }
    Some(match &turn.secret_ref {
        Some(r) => SecretSource {
            name: r.name.clone(),
            key: r.key_or(TURN_SECRET_KEY).to_string(),
            generated: false,
        },
        None => SecretSource {
            name: child_name(cr, "turn-secret"),
            key: TURN_SECRET_KEY.to_string(),
            generated: true,
        },
    })
}

/// The room-token secret (none when room tokens are off: open rooms).
pub fn token_secret_source(cr: &OtterDeployment) -> Option<SecretSource> {
    let auth = &cr.spec.signaling.auth;
    if !auth.enabled {
        return None;
    }
    Some(match &auth.secret_ref {
        Some(r) => SecretSource {
            name: r.name.clone(),
            key: r.key_or(TOKEN_SECRET_KEY).to_string(),
            generated: false,
        },
        None => SecretSource {
            name: child_name(cr, "token-secret"),
            key: TOKEN_SECRET_KEY.to_string(),
            generated: true,
        },
    })
}

/// The Redis URL (none when Redis is disabled).
pub fn redis_url_source(cr: &OtterDeployment) -> Option<SecretSource> {
    let redis = &cr.spec.redis;
    match redis.mode {
        RedisMode::Disabled => None,
        RedisMode::Managed => Some(SecretSource {
            name: child_name(cr, "redis-url"),
            key: REDIS_URL_KEY.to_string(),
            generated: true,
        }),
        // The CRD refuses External without `external`; treat a missing one as a missing Secret.
        RedisMode::External => Some(match &redis.external {
            Some(e) => SecretSource {
                name: e.secret_ref.name.clone(),
                key: e.secret_ref.key_or(REDIS_URL_KEY).to_string(),
                generated: false,
            },
            None => SecretSource {
                name: String::new(),
                key: REDIS_URL_KEY.to_string(),
                generated: false,
            },
        }),
    }
}

/// The value a generated secret has: the existing one, else the fresh candidate.
fn kept_or_fresh(obs: &Observed, name: &str, key: &str, fresh: &str) -> Vec<u8> {
    obs.secret_value(name, key)
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| fresh.as_bytes().to_vec())
}

fn generated_secret(
    cr: &OtterDeployment,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<Secret, BuildError> {
    Ok(Secret {
        metadata: child_meta(cr, name.to_string(), Component::Secrets)?,
        type_: Some("Opaque".to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    })
}

/// Annotation on the OtterDeployment asking for a new generated TURN secret: any new value
/// (e.g. the date) rotates it once.
pub const ROTATE_TURN_SECRET_ANNOTATION: &str = "otter.dev/rotate-turn-secret";
/// Annotation on the generated TURN Secret: the rotation request its value answers.
pub const ROTATED_FOR_ANNOTATION: &str = "otter.dev/rotated-for";

/// `<name>-turn-secret`, when TURN is on and the user names no Secret. Its value is kept until
/// the resource carries a [`ROTATE_TURN_SECRET_ANNOTATION`] this Secret has not answered yet;
/// then it gets a fresh value (the TURN pods accept both for a while: `build::turn`).
pub fn build_turn_secret(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<Secret>, BuildError> {
    let Some(src) = turn_secret_source(cr).filter(|s| s.generated) else {
        return Ok(None);
    };
    let asked = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_TURN_SECRET_ANNOTATION));
    let existing = obs.secrets.get(&src.name);
    let answered = existing
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(ROTATED_FOR_ANNOTATION));
    let rotate = existing.is_some() && asked.is_some() && asked != answered;
    let value = if rotate {
        obs.fresh.turn.as_bytes().to_vec()
    } else {
        kept_or_fresh(obs, &src.name, &src.key, &obs.fresh.turn)
    };
    let mut secret = generated_secret(cr, &src.name, BTreeMap::from([(src.key.clone(), value)]))?;
    // Once answered, the annotation stays on the Secret so the same request never rotates twice.
    if let Some(asked) = asked.or(answered) {
        secret.metadata.annotations = Some(BTreeMap::from([(
            ROTATED_FOR_ANNOTATION.to_string(),
            asked.clone(),
        )]));
    }
    Ok(Some(secret))
}

/// `<name>-token-secret`, when room tokens are on and the user names no Secret.
pub fn build_token_secret(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<Secret>, BuildError> {
    let Some(src) = token_secret_source(cr).filter(|s| s.generated) else {
        return Ok(None);
    };
    let value = kept_or_fresh(obs, &src.name, &src.key, &obs.fresh.token);
    generated_secret(cr, &src.name, BTreeMap::from([(src.key.clone(), value)])).map(Some)
}

/// The managed Redis password: kept once generated.
pub fn redis_password(cr: &OtterDeployment, obs: &Observed) -> Vec<u8> {
    kept_or_fresh(
        obs,
        &child_name(cr, "redis-url"),
        REDIS_PASSWORD_KEY,
        &obs.fresh.redis_password,
    )
}

/// `<name>-redis-url` for the managed Redis: `url` (what signaling reads) and `password` (what
/// Redis requires).
pub fn build_redis_url_secret(
    cr: &OtterDeployment,
    obs: &Observed,
) -> Result<Option<Secret>, BuildError> {
    if cr.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    let ns = namespace(cr)?;
    let password = redis_password(cr, obs);
    // Generated passwords are hex, so they need no URL escaping; a password edited by hand is
    // escaped anyway.
    let password_text = String::from_utf8_lossy(&password);
    let url = format!(
        "redis://:{}@{}.{ns}.svc:6379",
        percent_encode_userinfo(&password_text),
        child_name(cr, "redis")
    );
    generated_secret(
        cr,
        &child_name(cr, "redis-url"),
        BTreeMap::from([
            (REDIS_URL_KEY.to_string(), url.into_bytes()),
            (REDIS_PASSWORD_KEY.to_string(), password),
        ]),
    )
    .map(Some)
}

fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every Secret the pods need, with the value they will see: user Secrets as observed, generated
/// ones as built. Used for the checksum annotations and to report missing Secrets.
pub fn resolved_value(src: &SecretSource, built: &[Secret], obs: &Observed) -> Option<Vec<u8>> {
    if src.generated {
        built
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(src.name.as_str()))
            .and_then(|s| s.data.as_ref()?.get(&src.key))
            .map(|v| v.0.clone())
    } else {
        obs.secret_value(&src.name, &src.key).map(<[u8]>::to_vec)
    }
}

/// Problems with Secrets the user names: missing Secret or missing key. Empty when all is well.
pub fn user_secret_problems(cr: &OtterDeployment, obs: &Observed) -> Vec<String> {
    let mut sources: Vec<(&str, SecretSource)> = Vec::new();
    if let Some(s) = turn_secret_source(cr) {
        sources.push(("turn.secretRef", s));
    }
    if let Some(s) = token_secret_source(cr) {
        sources.push(("signaling.auth.secretRef", s));
    }
    if let Some(s) = redis_url_source(cr) {
        sources.push(("redis.external.secretRef", s));
    }
    let mut problems = Vec::new();
    for (field, src) in sources.into_iter().filter(|(_, s)| !s.generated) {
        match obs.secrets.get(&src.name) {
            None => problems.push(format!("{field}: Secret {:?} not found", src.name)),
            Some(_) if obs.secret_value(&src.name, &src.key).is_none() => problems.push(format!(
                "{field}: Secret {:?} has no non-empty key {:?}",
                src.name, src.key
            )),
            Some(_) => {}
        }
    }
    if cr.spec.turn.enabled && cr.spec.turn.tls.enabled {
        match cr.spec.turn.tls.secret_name.as_deref() {
            Some(name) if obs.secrets.contains_key(name) => {
                for key in ["tls.crt", "tls.key"] {
                    if obs.secret_value(name, key).is_none() {
                        problems.push(format!(
                            "turn.tls.secretName: Secret {name:?} has no non-empty key {key:?}"
                        ));
                    }
                }
            }
            Some(name) => problems.push(format!("turn.tls.secretName: Secret {name:?} not found")),
            None => problems.push("turn.tls.secretName is not set".to_string()),
        }
    }
    problems
}

/// Names of the user's Secrets the operator reads (to fetch them each reconcile).
pub fn user_secret_names(cr: &OtterDeployment) -> Vec<String> {
    let mut names: Vec<String> = [
        turn_secret_source(cr),
        token_secret_source(cr),
        redis_url_source(cr),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.generated && !s.name.is_empty())
    .map(|s| s.name)
    .collect();
    if cr.spec.turn.enabled && cr.spec.turn.tls.enabled {
        names.extend(cr.spec.turn.tls.secret_name.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Names of the Secrets the operator generates for this spec.
pub fn generated_secret_names(cr: &OtterDeployment) -> Vec<String> {
    [
        turn_secret_source(cr),
        token_secret_source(cr),
        redis_url_source(cr),
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.generated)
    .map(|s| s.name)
    .chain(crate::build::turn_keys::turn_keys_source(cr).map(|s| s.name))
    .collect()
}

/// Every generated Secret the operator could own, whether or not this spec wants it (to prune).
pub fn all_generated_secret_names(cr: &OtterDeployment) -> [String; 4] {
    [
        child_name(cr, "turn-secret"),
        child_name(cr, "turn-keys"),
        child_name(cr, "token-secret"),
        child_name(cr, "redis-url"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExternalRedisSpec, SecretKeyRef};
    use crate::testing::{cr, observed, secret};

    #[test]
    fn the_rotate_annotation_replaces_a_generated_turn_secret_once() {
        let mut cr = cr();
        let mut obs = observed();
        obs.secrets.insert(
            "demo-turn-secret".into(),
            secret("demo-turn-secret", &[("turn-secret", "old")]),
        );
        let value = |s: &Secret| s.data.clone().unwrap()["turn-secret"].0.clone();
        let kept = build_turn_secret(&cr, &obs).unwrap().unwrap();
        assert_eq!(value(&kept), b"old");
        assert_eq!(kept.metadata.annotations, None);

        cr.metadata.annotations = Some(BTreeMap::from([(
            ROTATE_TURN_SECRET_ANNOTATION.to_string(),
            "2026-12-01".to_string(),
        )]));
        let rotated = build_turn_secret(&cr, &obs).unwrap().unwrap();
        assert_eq!(value(&rotated), b"fresh-turn");
        assert_eq!(
            rotated.metadata.annotations.clone().unwrap()[ROTATED_FOR_ANNOTATION],
            "2026-12-01"
        );
        // The next reconcile sees the rotated Secret: the same request keeps its value.
        let mut next = observed();
        next.fresh.turn = "another".into();
        next.secrets
            .insert("demo-turn-secret".into(), rotated.clone());
        assert_eq!(
            value(&build_turn_secret(&cr, &next).unwrap().unwrap()),
            b"fresh-turn"
        );
        // The annotation removed from the resource: the value and the answer stay.
        cr.metadata.annotations = None;
        let after = build_turn_secret(&cr, &next).unwrap().unwrap();
        assert_eq!(value(&after), b"fresh-turn");
        assert_eq!(after.metadata.annotations, rotated.metadata.annotations);
    }

    #[test]
    fn generates_turn_secret_from_fresh_value_when_none_exists() {
        let cr = cr();
        let obs = observed();
        let s = build_turn_secret(&cr, &obs).unwrap().unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-turn-secret"));
        let data = s.data.unwrap();
        assert_eq!(data[TURN_SECRET_KEY].0, obs.fresh.turn.as_bytes());
        let owners = s.metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "OtterDeployment");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn generated_secret_keeps_existing_value() {
        let cr = cr();
        let mut obs = observed();
        obs.secrets.insert(
            "demo-turn-secret".into(),
            secret("demo-turn-secret", &[(TURN_SECRET_KEY, "kept-value")]),
        );
        let s = build_turn_secret(&cr, &obs).unwrap().unwrap();
        assert_eq!(s.data.unwrap()[TURN_SECRET_KEY].0, b"kept-value");
    }

    #[test]
    fn user_named_secret_is_never_built() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "mine".into(),
            key: None,
        });
        cr.spec.signaling.auth.enabled = true;
        cr.spec.signaling.auth.secret_ref = Some(SecretKeyRef {
            name: "tokens".into(),
            key: Some("k".into()),
        });
        cr.spec.redis.mode = RedisMode::External;
        cr.spec.redis.external = Some(ExternalRedisSpec {
            secret_ref: SecretKeyRef {
                name: "elasticache".into(),
                key: None,
            },
        });
        let obs = observed();
        assert_eq!(build_turn_secret(&cr, &obs).unwrap(), None);
        assert_eq!(build_token_secret(&cr, &obs).unwrap(), None);
        assert_eq!(build_redis_url_secret(&cr, &obs).unwrap(), None);
        // Only the keys Secret: what signaling mints with is always the operator's.
        assert_eq!(generated_secret_names(&cr), vec!["demo-turn-keys"]);
        assert_eq!(
            user_secret_names(&cr),
            vec!["elasticache", "mine", "tokens"]
        );
        let problems = user_secret_problems(&cr, &obs);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("\"mine\" not found"));
    }

    #[test]
    fn user_secret_missing_key_is_reported() {
        let mut cr = cr();
        cr.spec.turn.secret_ref = Some(SecretKeyRef {
            name: "mine".into(),
            key: None,
        });
        let mut obs = observed();
        obs.secrets
            .insert("mine".into(), secret("mine", &[("other", "x")]));
        let problems = user_secret_problems(&cr, &obs);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("no non-empty key \"turn-secret\""));
        obs.secrets
            .insert("mine".into(), secret("mine", &[(TURN_SECRET_KEY, "x")]));
        assert!(user_secret_problems(&cr, &obs).is_empty());
    }

    #[test]
    fn token_secret_only_with_auth() {
        let mut cr = cr();
        let obs = observed();
        assert_eq!(build_token_secret(&cr, &obs).unwrap(), None);
        cr.spec.signaling.auth.enabled = true;
        let s = build_token_secret(&cr, &obs).unwrap().unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-token-secret"));
        assert_eq!(
            s.data.unwrap()[TOKEN_SECRET_KEY].0,
            obs.fresh.token.as_bytes()
        );
    }

    #[test]
    fn managed_redis_url_points_at_headless_service_and_keeps_password() {
        let cr = cr();
        let mut obs = observed();
        let s = build_redis_url_secret(&cr, &obs).unwrap().unwrap();
        let data = s.data.unwrap();
        let url = String::from_utf8(data[REDIS_URL_KEY].0.clone()).unwrap();
        assert_eq!(
            url,
            format!(
                "redis://:{}@demo-redis.calls.svc:6379",
                obs.fresh.redis_password
            )
        );
        obs.secrets.insert(
            "demo-redis-url".into(),
            secret("demo-redis-url", &[(REDIS_PASSWORD_KEY, "p@ss")]),
        );
        let s = build_redis_url_secret(&cr, &obs).unwrap().unwrap();
        let data = s.data.unwrap();
        assert_eq!(data[REDIS_PASSWORD_KEY].0, b"p@ss");
        assert_eq!(
            data[REDIS_URL_KEY].0,
            b"redis://:p%40ss@demo-redis.calls.svc:6379"
        );
    }

    #[test]
    fn fresh_secrets_are_random_and_long() {
        let a = crate::observed::FreshSecrets::generate();
        let b = crate::observed::FreshSecrets::generate();
        assert_ne!(a.turn, b.turn);
        assert_ne!(a.turn, a.token);
        assert_eq!(a.turn.len(), 64);
    }
}
