//! Join tokens: 256-bit random, single use, stored by the issuer only as
//! their SHA-256 hash so that someone who reads the database cannot use an
//! unused token.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Length of a token in hex characters.
pub const TOKEN_HEX_LEN: usize = 64;

/// A presented token that cannot be one we issued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinTokenError {
    /// Not 64 characters long.
    #[error("expected {TOKEN_HEX_LEN} hex characters, got {0}")]
    Length(usize),
    /// Contains something other than lowercase hex digits.
    #[error("only lowercase hex digits are allowed")]
    NotHex,
}

/// A fresh token: 32 random bytes as lowercase hex.
///
/// The system random source failing is not recoverable for an issuer; the
/// error is surfaced as an all-zero-free retry by the caller being pointless,
/// so this returns `None` only if the OS refuses randomness.
pub fn try_generate() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// A fresh token (see [`try_generate`]).
///
/// # Panics
///
/// Never in practice: only if the operating system refuses to provide
/// random bytes, in which case no key or token can be made safely.
#[expect(
    clippy::expect_used,
    reason = "no safe fallback exists without OS randomness"
)]
pub fn generate() -> String {
    try_generate().expect("operating system randomness unavailable")
}

/// Checks that `token` has the shape of a token we issue.
pub fn check_format(token: &str) -> Result<(), JoinTokenError> {
    if token.len() != TOKEN_HEX_LEN {
        return Err(JoinTokenError::Length(token.len()));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(JoinTokenError::NotHex);
    }
    Ok(())
}

/// The hash the issuer stores: lowercase hex SHA-256 of the token text.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The non-secret node identifier derived from a token: the first 32 hex
/// characters of its hash. Agent IDs look like
/// `spiffe://<td>/hallmark/agent/join_token/<node_id>`.
pub fn node_id(token: &str) -> String {
    token_hash(token)[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(check_format(&a), Ok(()));
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert_eq!(node_id(&a).len(), 32);
        assert!(token_hash(&a).starts_with(&node_id(&a)));
    }

    #[test]
    fn malformed_tokens_are_named() {
        assert_eq!(check_format("abc"), Err(JoinTokenError::Length(3)));
        let upper = "A".repeat(64);
        assert_eq!(check_format(&upper), Err(JoinTokenError::NotHex));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // sha256("abc")
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
