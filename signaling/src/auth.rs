//! Room tokens: HS256 JWTs minted by the application's backend, naming one room.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, MAX_NAME_CHARS, ProtoError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub room: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Checks room tokens. Without a secret every room is open.
pub struct RoomAuth {
    key: Option<(DecodingKey, Validation)>,
}

impl RoomAuth {
    pub fn new(secret: Option<&[u8]>) -> Self {
        let key = secret.map(|s| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_required_spec_claims(&["exp"]);
            // Tokens are checked once at join; a few seconds of clock skew is enough.
            v.leeway = 5;
            (DecodingKey::from_secret(s), v)
        });
        Self { key }
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
            ErrorKind::InvalidAlgorithm => ProtoError::new(
                ErrorCode::AuthInvalid,
                "room tokens must be signed with HS256",
            ),
            _ => ProtoError::new(
                ErrorCode::AuthInvalid,
                format!("the room token is not valid: {e}"),
            ),
        })?;
        if data
            .claims
            .name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
        {
            return Err(ProtoError::new(
                ErrorCode::AuthInvalid,
                format!("the token's `name` is longer than {MAX_NAME_CHARS} characters"),
            ));
        }
        Ok(data.claims)
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
