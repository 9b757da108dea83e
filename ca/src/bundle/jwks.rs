//! The SPIFFE bundle format (SPIFFE Trust Domain and Bundle, section 4): a JWK
//! set whose keys carry `use` = `x509-svid` (with `x5c`) or `jwt-svid` (with
//! `kid`), plus `spiffe_sequence` and `spiffe_refresh_hint`; and the plain
//! JWK set (RFC 7517, `use` = `sig`) that OpenID Connect relying parties read.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{PublicKeyData, SignatureAlgorithm};
use serde_json::{Map, Value, json};
use x509_parser::asn1_rs::{Integer, Sequence, ToDer};

use super::{Bundle, BundleError, DEFAULT_REFRESH_HINT, JwtAuthority};
use crate::id::TrustDomain;
use crate::util::{KeyKind, parse_cert, parse_spki};

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

impl Bundle {
    /// The bundle as a SPIFFE bundle document (JWKS with `spiffe_sequence`
    /// and `spiffe_refresh_hint`), X.509 authorities first.
    pub fn to_jwks(&self) -> String {
        let mut keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .map(|der| x509_jwk(der))
            .collect();
        keys.extend(self.jwt_authorities.iter().map(jwt_jwk));
        json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint.as_secs(),
        })
        .to_string()
    }

    /// Only the `jwt-svid` keys, as a JWKS (`{"keys":[...]}`), as the Workload
    /// API's `FetchJWTBundles` serves them.
    pub fn jwt_jwks(&self) -> String {
        let keys: Vec<Value> = self.jwt_authorities.iter().map(jwt_jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// The JWT authorities as a plain JWK set (RFC 7517), the form an
    /// OpenID Connect `jwks_uri` serves: each key with `kid`, `use: "sig"`
    /// (generic JWT libraries skip keys whose `use` is `jwt-svid`) and the
    /// `alg` its type signs with (`ES256` for P-256, `ES384`, `RS256`,
    /// `EdDSA`). Every authority of the bundle is in it: the active key,
    /// the next one (published before it signs) and retired ones still
    /// within the lifetime of tokens they signed. A key whose type cannot
    /// be read is left out (a relying party could not use it).
    pub fn oidc_jwks(&self) -> String {
        let keys: Vec<Value> = self.jwt_authorities.iter().filter_map(oidc_jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// Parses a SPIFFE bundle document. Keys with an unknown `use` are ignored
    /// as the standard requires; a missing sequence reads as 0 and a missing
    /// refresh hint as [`DEFAULT_REFRESH_HINT`].
    pub fn from_jwks(trust_domain: TrustDomain, json: &[u8]) -> Result<Bundle, BundleError> {
        let doc: Map<String, Value> = serde_json::from_slice(json).map_err(BundleError::Json)?;
        let keys = doc
            .get("keys")
            .ok_or(BundleError::MissingKeys)?
            .as_array()
            .ok_or(BundleError::WrongType("keys"))?;
        let mut bundle = Bundle::new(trust_domain);
        bundle.sequence = match doc.get("spiffe_sequence") {
            None => 0,
            Some(v) => v
                .as_u64()
                .ok_or(BundleError::WrongType("spiffe_sequence"))?,
        };
        bundle.refresh_hint = match doc.get("spiffe_refresh_hint") {
            None => DEFAULT_REFRESH_HINT,
            Some(v) => Duration::from_secs(
                v.as_u64()
                    .ok_or(BundleError::WrongType("spiffe_refresh_hint"))?,
            ),
        };
        for key in keys {
            let key = key.as_object().ok_or(BundleError::WrongType("keys[]"))?;
            match key.get("use").and_then(Value::as_str) {
                Some(USE_X509) => bundle.x509_authorities.push(x509_from_jwk(key)?),
                Some(USE_JWT) => bundle.jwt_authorities.push(jwt_from_jwk(key)?),
                _ => {}
            }
        }
        Ok(bundle)
    }
}

fn b64u(bytes: &[u8]) -> Value {
    Value::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// The JWK members describing a public key (`kty` and its parameters).
fn key_members(spki_der: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    let Some(key) = parse_spki(spki_der) else {
        return m;
    };
    match key.kind {
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let coord = if key.kind == KeyKind::EcP256 { 32 } else { 48 };
            // Uncompressed point: 0x04 || x || y.
            if key.key.len() == 1 + 2 * coord {
                m.insert("kty".into(), "EC".into());
                let crv = if coord == 32 { "P-256" } else { "P-384" };
                m.insert("crv".into(), crv.into());
                m.insert("x".into(), b64u(key.key.get(1..=coord).unwrap_or_default()));
                m.insert(
                    "y".into(),
                    b64u(key.key.get(1 + coord..).unwrap_or_default()),
                );
            }
        }
        KeyKind::Rsa => {
            if let Some((n, e)) = &key.rsa {
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), b64u(n));
                m.insert("e".into(), b64u(e));
            }
        }
        KeyKind::Ed25519 => {
            m.insert("kty".into(), "OKP".into());
            m.insert("crv".into(), "Ed25519".into());
            m.insert("x".into(), b64u(&key.key));
        }
    }
    m
}

fn x509_jwk(cert_der: &[u8]) -> Value {
    let mut m = match parse_cert(cert_der) {
        Ok(cert) => key_members(cert.public_key().raw),
        Err(_) => Map::new(),
    };
    m.insert("use".into(), USE_X509.into());
    m.insert("x5c".into(), json!([STANDARD.encode(cert_der)]));
    Value::Object(m)
}

fn jwt_jwk(authority: &JwtAuthority) -> Value {
    let mut m = key_members(&authority.public_key_der);
    m.insert("use".into(), USE_JWT.into());
    m.insert("kid".into(), authority.key_id.clone().into());
    Value::Object(m)
}

fn oidc_jwk(authority: &JwtAuthority) -> Option<Value> {
    let alg = match parse_spki(&authority.public_key_der)?.kind {
        KeyKind::EcP256 => "ES256",
        KeyKind::EcP384 => "ES384",
        KeyKind::Rsa => "RS256",
        KeyKind::Ed25519 => "EdDSA",
    };
    let mut m = key_members(&authority.public_key_der);
    if !m.contains_key("kty") {
        return None;
    }
    m.insert("use".into(), "sig".into());
    m.insert("alg".into(), alg.into());
    m.insert("kid".into(), authority.key_id.clone().into());
    Some(Value::Object(m))
}

fn x509_from_jwk(key: &Map<String, Value>) -> Result<Vec<u8>, BundleError> {
    let x5c = key
        .get("x5c")
        .and_then(Value::as_array)
        .ok_or(BundleError::BadX5c)?;
    let [only] = x5c.as_slice() else {
        return Err(BundleError::BadX5c);
    };
    let b64 = only.as_str().ok_or(BundleError::BadX5c)?;
    let der = STANDARD
        .decode(b64)
        .map_err(|e| BundleError::InvalidCertificate(e.to_string()))?;
    parse_cert(&der).map_err(BundleError::InvalidCertificate)?;
    Ok(der)
}

fn jwt_from_jwk(key: &Map<String, Value>) -> Result<JwtAuthority, BundleError> {
    let kid = key
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(BundleError::MissingKeyId)?;
    let kty = key
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(BundleError::InvalidJwk("kty"))?;
    let member = |name: &'static str| -> Result<Vec<u8>, BundleError> {
        let s = key
            .get(name)
            .and_then(Value::as_str)
            .ok_or(BundleError::InvalidJwk(name))?;
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| BundleError::InvalidJwk(name))
    };
    let crv = key.get("crv").and_then(Value::as_str);
    let spki = match (kty, crv) {
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (len, alg): (usize, &'static SignatureAlgorithm) = if crv == "P-256" {
                (32, &rcgen::PKCS_ECDSA_P256_SHA256)
            } else {
                (48, &rcgen::PKCS_ECDSA_P384_SHA384)
            };
            let (x, y) = (member("x")?, member("y")?);
            if x.len() != len {
                return Err(BundleError::InvalidJwk("x"));
            }
            if y.len() != len {
                return Err(BundleError::InvalidJwk("y"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            RawKey { alg, bytes: point }.subject_public_key_info()
        }
        ("RSA", _) => {
            let rsa = rsa_public_key_der(&member("n")?, &member("e")?)?;
            RawKey {
                alg: &rcgen::PKCS_RSA_SHA256,
                bytes: rsa,
            }
            .subject_public_key_info()
        }
        ("OKP", Some("Ed25519")) => {
            let x = member("x")?;
            if x.len() != 32 {
                return Err(BundleError::InvalidJwk("x"));
            }
            RawKey {
                alg: &rcgen::PKCS_ED25519,
                bytes: x,
            }
            .subject_public_key_info()
        }
        (kty, crv) => {
            return Err(BundleError::UnsupportedKey(format!(
                "kty {kty:?} crv {crv:?}"
            )));
        }
    };
    Ok(JwtAuthority {
        key_id: kid.to_owned(),
        public_key_der: spki,
        expires_at: None,
    })
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, BundleError> {
    let ints = [positive_integer(n), positive_integer(e)];
    let seq = Sequence::from_iter_to_der(ints.iter().map(|i| Integer::new(i)))
        .map_err(|_| BundleError::InvalidJwk("n"))?;
    seq.to_der_vec().map_err(|_| BundleError::InvalidJwk("n"))
}

/// Big-endian unsigned bytes as DER INTEGER content: minimal, with a leading
/// zero when the top bit is set.
fn positive_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = bytes.get(start..).unwrap_or_default();
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

/// A public key given by algorithm and raw `subjectPublicKey` bits, so rcgen
/// encodes its SubjectPublicKeyInfo.
struct RawKey {
    alg: &'static SignatureAlgorithm,
    bytes: Vec<u8>,
}

impl PublicKeyData for RawKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}
