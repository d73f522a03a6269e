//! Room tokens: HS256 JWTs minted by the application's backend, naming one room.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::protocol::{ErrorCode, MAX_NAME_CHARS, ProtoError, valid_display_name};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub room: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not before (Unix seconds): checked, with the same leeway as `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id: with single-use tokens on, each id admits one seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Checks room tokens. Without a secret every room is open.
pub struct RoomAuth {
    key: Option<(DecodingKey, Validation)>,
    max_lifetime: Option<Duration>,
    single_use: bool,
}

impl RoomAuth {
    pub fn new(secret: Option<&[u8]>) -> Self {
        let key = secret.map(|s| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_required_spec_claims(&["exp"]);
            v.validate_nbf = true;
            // Tokens are checked once at join; a few seconds of clock skew is enough.
            v.leeway = 5;
            (DecodingKey::from_secret(s), v)
        });
        Self {
            key,
            max_lifetime: None,
            single_use: false,
        }
    }

    /// Refuse tokens whose `exp` is further than `max` from now (`--max-token-lifetime`).
    pub fn with_max_lifetime(mut self, max: Option<Duration>) -> Self {
        self.max_lifetime = max;
        self
    }

    /// Require a `jti` in every token; the hub admits each one once (`--single-use-tokens`).
    pub fn with_single_use(mut self, on: bool) -> Self {
        self.single_use = on;
        self
    }

    pub fn single_use(&self) -> bool {
        self.single_use && self.key.is_some()
    }

    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// The claims that admit a client to `room`, or the error to send it. `Ok(None)` when auth
    /// is off.
    pub fn check(&self, room: &str, token: Option<&str>) -> Result<Option<Claims>, ProtoError> {
        let Some((key, validation)) = &self.key else {
            return Ok(None);
        };
        let claims = self.verify(key, validation, token)?;
        if claims.room != room {
            return Err(ProtoError::new(
                ErrorCode::AuthWrongRoom,
                format!("the token admits to another room, not {room:?}"),
            ));
        }
        Ok(Some(claims))
    }

    /// Verify a token for a request that names no room (ICE servers): any valid token will do.
    pub fn check_any_room(&self, token: Option<&str>) -> Result<Option<Claims>, ProtoError> {
        match &self.key {
            None => Ok(None),
            Some((key, validation)) => self.verify(key, validation, token).map(Some),
        }
    }

    fn verify(
        &self,
        key: &DecodingKey,
        validation: &Validation,
        token: Option<&str>,
    ) -> Result<Claims, ProtoError> {
        let Some(token) = token else {
            return Err(ProtoError::new(
                ErrorCode::AuthRequired,
                "this server requires a room token: pass `token` (an HS256 JWT from your application's backend)",
            ));
        };
        let data = decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => {
                ProtoError::new(ErrorCode::AuthExpired, "the room token has expired")
            }
            ErrorKind::InvalidSignature => ProtoError::new(
                ErrorCode::AuthInvalid,
                "the room token's signature does not match",
            ),
            ErrorKind::ImmatureSignature => ProtoError::new(
                ErrorCode::AuthInvalid,
                "the room token is not valid yet (`nbf` is in the future)",
            ),
            ErrorKind::InvalidAlgorithm => ProtoError::new(
                ErrorCode::AuthInvalid,
                "room tokens must be signed with HS256",
            ),
            _ => ProtoError::new(
                ErrorCode::AuthInvalid,
                format!("the room token is not valid: {e}"),
            ),
        })?;
        self.check_claims(&data.claims)?;
        Ok(data.claims)
    }

    /// The rules the JWT library does not know: name, lifetime, `jti`.
    fn check_claims(&self, claims: &Claims) -> Result<(), ProtoError> {
        let invalid = |why: String| Err(ProtoError::new(ErrorCode::AuthInvalid, why));
        if let Some(n) = &claims.name {
            if n.chars().count() > MAX_NAME_CHARS {
                return invalid(format!(
                    "the token's `name` is longer than {MAX_NAME_CHARS} characters"
                ));
            }
            if !valid_display_name(n) {
                return invalid("the token's `name` has control or format characters".into());
            }
        }
        if let Some(max) = self.max_lifetime
            && claims.exp.saturating_sub(now_secs()) > max.as_secs()
        {
            return invalid(format!(
                "the room token lives longer than this server accepts ({}s); mint shorter-lived tokens",
                max.as_secs()
            ));
        }
        if self.single_use && claims.jti.as_deref().is_none_or(str::is_empty) {
            return invalid("this server admits each token once: the token needs a `jti`".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(secret: &[u8], room: &str, exp: u64, alg: Algorithm) -> String {
        let claims = Claims {
            room: room.into(),
            exp,
            sub: Some("u1".into()),
            name: Some("Ann".into()),
            nbf: None,
            jti: None,
        };
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    #[test]
    fn open_without_secret() {
        assert_eq!(RoomAuth::new(None).check("r", None), Ok(None));
    }

    #[test]
    fn token_rules() {
        let auth = RoomAuth::new(Some(b"k"));
        let good = token(b"k", "r", now() + 60, Algorithm::HS256);
        assert_eq!(
            auth.check("r", Some(&good)).expect("ok").map(|c| c.name),
            Some(Some("Ann".into()))
        );
        let code = |r: Result<Option<Claims>, ProtoError>| r.expect_err("refused").code;
        assert_eq!(code(auth.check("r", None)), ErrorCode::AuthRequired);
        assert_eq!(
            code(auth.check("other", Some(&good))),
            ErrorCode::AuthWrongRoom
        );
        assert_eq!(
            code(auth.check("r", Some(&token(b"k", "r", now() - 60, Algorithm::HS256)))),
            ErrorCode::AuthExpired
        );
        assert_eq!(
            code(auth.check("r", Some(&token(b"x", "r", now() + 60, Algorithm::HS256)))),
            ErrorCode::AuthInvalid
        );
        assert_eq!(
            code(auth.check("r", Some(&token(b"k", "r", now() + 60, Algorithm::HS384)))),
            ErrorCode::AuthInvalid
        );
        assert_eq!(
            code(auth.check("r", Some("garbage"))),
            ErrorCode::AuthInvalid
        );
    }
}
