//! Small shared helpers: time conversions and certificate field readers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::time::ASN1Time;

/// Seconds since the Unix epoch (negative times clamp to 0).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `UNIX_EPOCH + secs`.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Truncates to whole seconds (certificates and JWTs carry no fractions).
pub(crate) fn truncate_secs(t: SystemTime) -> SystemTime {
    from_unix_secs(unix_secs(t))
}

/// Converts to the `time` crate's representation used by rcgen (whole seconds).
pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(truncate_secs(t))
}

/// Converts an X.509 time to `SystemTime`.
pub(crate) fn from_asn1(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Lowercase hex of a certificate serial, without leading zero bytes.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let trimmed = raw.get(start..).unwrap_or_default();
    if trimmed.is_empty() {
        "00".to_owned()
    } else {
        hex::encode(trimmed)
    }
}

/// All URI SANs of a certificate (an unparsable SAN extension yields an error).
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        out.push(*uri);
                    }
                }
            }
            ParsedExtension::ParseError { error }
                if ext.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME =>
            {
                return Err(format!("subject alternative name: {error}"));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Parses one DER certificate, requiring no trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after certificate".to_owned());
    }
    Ok(cert)
}

/// The public key types this crate can publish as JWKs and verify JWTs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// RSA.
    Rsa,
    /// Ed25519.
    Ed25519,
}

/// A parsed SubjectPublicKeyInfo: its type and the `subjectPublicKey` bits
/// (an uncompressed point for EC, an `RSAPublicKey` for RSA, the raw key for Ed25519).
pub(crate) struct SpkiKey {
    pub(crate) kind: KeyKind,
    pub(crate) key: Vec<u8>,
    /// RSA modulus and exponent (big-endian, no leading zeros), when RSA.
    pub(crate) rsa: Option<(Vec<u8>, Vec<u8>)>,
}

/// Parses a SubjectPublicKeyInfo; `None` for malformed or unsupported keys.
pub(crate) fn parse_spki(der: &[u8]) -> Option<SpkiKey> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
        OID_SIG_ED25519,
    };
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;

    let (rest, spki) = SubjectPublicKeyInfo::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let alg = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.to_vec();
    let kind = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            KeyKind::EcP256
        } else if curve == OID_NIST_EC_P384 {
            KeyKind::EcP384
        } else {
            return None;
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        KeyKind::Rsa
    } else if *alg == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else {
        return None;
    };
    let rsa = match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => Some((trim_zeros(rsa.modulus), trim_zeros(rsa.exponent))),
        _ => None,
    };
    if kind == KeyKind::Rsa && rsa.is_none() {
        return None;
    }
    Some(SpkiKey { kind, key, rsa })
}

fn trim_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default().to_vec()
}
