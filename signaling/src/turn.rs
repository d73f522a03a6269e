//! TURN credentials in the TURN REST API scheme that coturn's `use-auth-secret` checks:
//! `username = "<expiry unix seconds>:<id>"`, `credential = base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A minted username/password pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
}

/// Mint a credential for `id` valid until `expiry` (unix seconds). Pure: the caller picks the
/// clock, so tests can use fixed vectors.
pub fn mint(secret: &[u8], id: &str, expiry: u64) -> TurnCredential {
    let username = format!("{expiry}:{id}");
    // HMAC accepts keys of any length, so this constructor cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential {
        username,
        credential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector computed by hand with openssl:
    /// `printf '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64`
    #[test]
    fn matches_openssl_vector() {
        let c = mint(b"north", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    /// RFC 2202 test case 2 for HMAC-SHA1 (key "Jefe"), proving the MAC itself.
    #[test]
    fn hmac_is_rfc2202() {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn different_ids_and_expiries_differ() {
        let a = mint(b"s", "a", 1);
        assert_ne!(a, mint(b"s", "b", 1));
        assert_ne!(a, mint(b"s", "a", 2));
        assert_ne!(a, mint(b"t", "a", 1));
    }
}
