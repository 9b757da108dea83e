//! How large a JWT-SVID's audience may be. The Workload API and the node
//! API take the audience from the caller, and every byte of it is signed,
//! logged and carried in every request the token goes with: it is bounded
//! where it enters (the agent and the issuer both check it) and where it is
//! signed ([`JwtKey::mint`](super::JwtKey::mint)).
//!
//! An audience names the service a token is for, usually by its SPIFFE ID
//! or URL. The SPIFFE ID standard requires support for IDs up to 2048 bytes
//! (section 2.3), so that is the bound per audience; a token for more than
//! 16 services at once is not a token for a service.
//!
//! ```
//! use hallmark_ca::jwt::{AudienceError, check_audience};
//! let audience = check_audience(&["spiffe://example.org/payments".into(), String::new()])?;
//! assert_eq!(audience, ["spiffe://example.org/payments"]);
//! assert!(check_audience(&["x".repeat(1 << 20)]).is_err());
//! # Ok::<(), AudienceError>(())
//! ```

/// Most audiences in one JWT-SVID.
pub const MAX_AUDIENCES: usize = 16;

/// Longest audience, in bytes: the longest SPIFFE ID implementations must
/// support.
pub const MAX_AUDIENCE_BYTES: usize = 2048;

/// Why a requested audience is refused. Each message says the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudienceError {
    /// No audience at all (or only empty ones).
    #[error("audience is required: name the service the token is for")]
    Missing,
    /// More entries than [`MAX_AUDIENCES`].
    #[error("{count} audiences requested: at most {MAX_AUDIENCES} audiences per token")]
    TooMany {
        /// How many were requested.
        count: usize,
    },
    /// One audience is longer than [`MAX_AUDIENCE_BYTES`].
    #[error(
        "audience {index} is {len} bytes long: an audience is at most {MAX_AUDIENCE_BYTES} bytes (a SPIFFE ID or a URL naming the service)"
    )]
    TooLong {
        /// Its position in the request, from 0.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// The audience a token may be minted for: `requested` without its empty
/// entries, once it is within the limits. The limits apply to the request
/// as sent, empty entries included.
pub fn check_audience(requested: &[String]) -> Result<Vec<String>, AudienceError> {
    if requested.len() > MAX_AUDIENCES {
        return Err(AudienceError::TooMany {
            count: requested.len(),
        });
    }
    if let Some((index, a)) = requested
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() > MAX_AUDIENCE_BYTES)
    {
        return Err(AudienceError::TooLong {
            index,
            len: a.len(),
        });
    }
    let audience: Vec<String> = requested
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    if audience.is_empty() {
        return Err(AudienceError::Missing);
    }
    Ok(audience)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_named_in_the_refusal() {
        let longest = "a".repeat(MAX_AUDIENCE_BYTES);
        let mut sixteen: Vec<String> = (1..MAX_AUDIENCES).map(|i| i.to_string()).collect();
        sixteen.push(longest.clone());
        assert_eq!(check_audience(&sixteen).unwrap().len(), MAX_AUDIENCES);

        let mut seventeen = sixteen.clone();
        seventeen.push("x".into());
        let err = check_audience(&seventeen).unwrap_err();
        assert_eq!(err, AudienceError::TooMany { count: 17 });
        assert!(err.to_string().contains("at most 16 audiences"), "{err}");

        let err = check_audience(&["ok".into(), format!("{longest}a")]).unwrap_err();
        assert_eq!(
            err,
            AudienceError::TooLong {
                index: 1,
                len: MAX_AUDIENCE_BYTES + 1
            }
        );
        assert!(err.to_string().contains("at most 2048 bytes"), "{err}");
    }

    #[test]
    fn empty_entries_are_dropped_and_none_left_is_missing() {
        assert_eq!(
            check_audience(&[String::new(), "payments".into()]).unwrap(),
            ["payments"]
        );
        assert_eq!(check_audience(&[]), Err(AudienceError::Missing));
        assert_eq!(
            check_audience(&[String::new()]),
            Err(AudienceError::Missing)
        );
    }
}
