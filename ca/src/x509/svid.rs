//! X.509-SVID request and result types, and the Hallmark binding extension.

use std::time::{Duration, SystemTime};

use x509_parser::asn1_rs::{FromDer, OctetString, ToDer};

use crate::error::CaError;
use crate::id::SpiffeId;
use crate::util::parse_cert;

/// OID of the Hallmark binding extension:
/// `1.2.840.113556.1.8000.2554.38306.13449.17322.20424.36002.10821426.3558770`.
///
/// DESIGN.md names `2.25.198897189023534151293364899632777678194`, the UUID
/// `95a23489-43aa-4fc8-8ca2-a51f32364d72` under the `2.25` arc. That encoding
/// puts a 128-bit number in one arc, and Go's `crypto/x509` (so go-spiffe and
/// SPIRE) refuses to parse any certificate with an extension OID arc above
/// 2^31 (golang/go#30757), as does Python's `cryptography`, so py-spiffe
/// (pyca/cryptography#6573): our SVIDs would be unreadable to most SPIFFE
/// relying parties. This OID carries the *same UUID* under the documented
/// registration-free arc `1.2.840.113556.1.8000.2554`, split into 16- and
/// 24-bit arcs (4-4-4-4-4-6-6 hex digits), so it is just as unique and every
/// arc fits every common parser (Go, Python, OpenSSL, x509-parser).
pub const BINDING_EXTENSION_OID: &[u64] = &[
    1, 2, 840, 113_556, 1, 8000, 2554, 38306, 13449, 17322, 20424, 36002, 10_821_426, 3_558_770,
];

/// What the requester asks to be certified.
#[derive(Debug, Clone, Copy)]
pub struct SvidRequest<'a> {
    /// The SPIFFE ID to certify; it must be in the CA's trust domain and have a path.
    pub spiffe_id: &'a SpiffeId,
    /// SubjectPublicKeyInfo DER of the requester's key (any algorithm rcgen accepts).
    pub public_key_der: &'a [u8],
    /// Requested lifetime; the leaf never outlives the CA.
    pub ttl: Duration,
    /// DNS SANs to add after the URI SAN.
    pub dns_names: &'a [String],
    /// Extra extensions (e.g. the binding extension).
    pub extensions: &'a [SvidExtension],
}

/// One extra X.509 extension to put in a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidExtension {
    /// The extension's OID arcs.
    pub oid: Vec<u64>,
    /// Whether the extension is marked critical.
    pub critical: bool,
    /// The DER-encoded extension value (the content of `extnValue`).
    pub value_der: Vec<u8>,
}

impl SvidExtension {
    /// The non-critical Hallmark binding extension holding `json`
    /// (compact JSON) in a DER OCTET STRING.
    pub fn binding(json: &[u8]) -> SvidExtension {
        SvidExtension {
            oid: BINDING_EXTENSION_OID.to_vec(),
            critical: false,
            value_der: der_octet_string(json),
        }
    }
}

/// A minted X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    /// The certified SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DER certificates: the leaf first, then the signing CA and its chain when
    /// the CA is an intermediate, excluding the root (a self-signed CA is not sent).
    pub cert_chain: Vec<Vec<u8>>,
    /// Leaf serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Start of validity (whole seconds, as in the certificate).
    pub not_before: SystemTime,
    /// End of validity (whole seconds, as in the certificate).
    pub not_after: SystemTime,
}

impl X509Svid {
    /// The leaf certificate DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.cert_chain
            .first()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Reads the binding extension of a certificate: the JSON bytes inside its
/// OCTET STRING, or `None` when the certificate has no binding extension.
pub fn binding_from_cert(cert_der: &[u8]) -> Result<Option<Vec<u8>>, CaError> {
    let cert = parse_cert(cert_der).map_err(CaError::InvalidCertificate)?;
    for ext in cert.extensions() {
        let is_binding = ext
            .oid
            .iter()
            .is_some_and(|arcs| arcs.eq(BINDING_EXTENSION_OID.iter().copied()));
        if is_binding {
            let (rest, octets) = OctetString::from_der(ext.value).map_err(|e| {
                CaError::InvalidCertificate(format!(
                    "binding extension is not an octet string: {e}"
                ))
            })?;
            if !rest.is_empty() {
                return Err(CaError::InvalidCertificate(
                    "trailing bytes in binding extension".to_owned(),
                ));
            }
            return Ok(Some(octets.as_cow().to_vec()));
        }
    }
    Ok(None)
}

/// DER encoding of an OCTET STRING holding `bytes`.
#[expect(
    clippy::expect_used,
    reason = "asn1-rs only fails to serialize on writer I/O errors; a Vec writer has none"
)]
fn der_octet_string(bytes: &[u8]) -> Vec<u8> {
    OctetString::new(bytes)
        .to_der_vec()
        .expect("encoding an octet string into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_value_is_a_der_octet_string() {
        let ext = SvidExtension::binding(b"{\"a\":1}");
        assert_eq!(ext.value_der[0], 0x04);
        assert_eq!(ext.value_der[1], 7);
        assert_eq!(&ext.value_der[2..], b"{\"a\":1}");
        assert!(!ext.critical);
        let long = vec![b'x'; 300];
        let ext = SvidExtension::binding(&long);
        // Long form length: 0x82 0x01 0x2c.
        assert_eq!(&ext.value_der[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}

#[cfg(test)]
mod oid_tests {
    use x509_parser::oid_registry::Oid;

    use super::BINDING_EXTENSION_OID;

    #[test]
    fn binding_oid_is_the_design_uuid_in_parseable_arcs() {
        // Go's crypto/x509 rejects arcs of 2^31 and above; keep every arc below.
        assert!(BINDING_EXTENSION_OID.iter().all(|&arc| arc < (1 << 31)));
        let oid = Oid::from(BINDING_EXTENSION_OID).unwrap();
        assert_eq!(
            oid.to_id_string(),
            "1.2.840.113556.1.8000.2554.38306.13449.17322.20424.36002.10821426.3558770"
        );
        // The trailing arcs are the design's UUID 95a23489-43aa-4fc8-8ca2-a51f32364d72.
        let hex: String = BINDING_EXTENSION_OID[7..]
            .iter()
            .zip([4, 4, 4, 4, 4, 6, 6])
            .map(|(arc, width)| format!("{arc:0width$x}"))
            .collect();
        assert_eq!(hex, "95a2348943aa4fc88ca2a51f32364d72");
        assert_eq!(
            u128::from_str_radix(&hex, 16).unwrap(),
            198_897_189_023_534_151_293_364_899_632_777_678_194
        );
    }
}
