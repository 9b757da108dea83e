//! Conversions between `hallmark-ca` types and the node/admin wire types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::bundle::Bundle;
use hallmark_ca::x509::X509Svid;
use hallmark_proto::node;

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the Unix epoch as the wire's signed integer.
pub fn unix_i64(t: SystemTime) -> i64 {
    i64::try_from(unix_secs(t)).unwrap_or(i64::MAX)
}

/// A wire bundle.
pub fn bundle_to_proto(bundle: &Bundle) -> node::Bundle {
    node::Bundle {
        trust_domain: bundle.trust_domain.as_str().to_owned(),
        x509_authorities: bundle.x509_authorities.clone(),
        jwt_authorities: bundle
            .jwt_authorities
            .iter()
            .map(|a| node::JwtAuthority {
                key_id: a.key_id.clone(),
                public_key: a.public_key_der.clone(),
                expires_at: a.expires_at.map(unix_i64).unwrap_or(0),
            })
            .collect(),
        sequence: bundle.sequence,
        refresh_hint_seconds: i64::try_from(bundle.refresh_hint.as_secs()).unwrap_or(i64::MAX),
    }
}

/// A wire X.509-SVID (no key: the key never leaves the requester).
pub fn svid_to_proto(svid: &X509Svid) -> node::X509Svid {
    node::X509Svid {
        spiffe_id: svid.spiffe_id.as_str().to_owned(),
        cert_chain: svid.cert_chain.clone(),
        expires_at: unix_i64(svid.not_after),
    }
}

/// A duration from whole seconds on the wire.
pub fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}
