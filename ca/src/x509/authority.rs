//! [`X509Authority`]: one signing CA (self-signed or under an upstream CA) and
//! X.509-SVID minting.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use super::CLOCK_SKEW_BACKDATE;
use super::svid::{SvidRequest, X509Svid};
use super::upstream::UpstreamCa;
use crate::error::CaError;
use crate::id::{SpiffeId, TrustDomain};
use crate::key::CaKey;
use crate::util::{from_asn1, parse_cert, serial_hex, to_offset, truncate_secs, uri_sans};

/// One X.509 signing CA of a trust domain.
///
/// Holds the parsed issuer material (rcgen [`Issuer`]) so minting does not
/// re-parse the CA certificate.
pub struct X509Authority {
    trust_domain: TrustDomain,
    cert_der: Vec<u8>,
    /// Certificates above this one, ending with the root; empty when self-signed.
    chain: Vec<Vec<u8>>,
    /// Sent after every leaf: this CA and its chain without the root; empty when self-signed.
    svid_tail: Vec<Vec<u8>>,
    key: CaKey,
    issuer: Issuer<'static, CaKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Authority {
    /// Creates a self-signed root CA for `td`, valid from `now` (backdated by
    /// [`CLOCK_SKEW_BACKDATE`]) for `ttl`.
    pub fn self_signed(
        td: &TrustDomain,
        key: CaKey,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<X509Authority, CaError> {
        if ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        let not_before = now.checked_sub(CLOCK_SKEW_BACKDATE).unwrap_or(now);
        let params = ca_params(td, not_before, now + ttl, false)?;
        let cert = params.self_signed(&key).map_err(CaError::Certificate)?;
        X509Authority::assemble(td.clone(), cert.der().to_vec(), key, Vec::new())
    }

    /// Creates an intermediate CA for `td` signed by `upstream`; its validity
    /// is capped at the upstream certificate's.
    pub fn signed_by_upstream(
        td: &TrustDomain,
        key: CaKey,
        upstream: &UpstreamCa,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<X509Authority, CaError> {
        if ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        let not_before = now
            .checked_sub(CLOCK_SKEW_BACKDATE)
            .unwrap_or(now)
            .max(upstream.not_before());
        let not_after = (now + ttl).min(upstream.not_after());
        if not_after <= now {
            return Err(CaError::AuthorityNotValid {
                not_after: upstream.not_after(),
            });
        }
        let params = ca_params(td, not_before, not_after, true)?;
        let cert = params
            .signed_by(&key, upstream.issuer())
            .map_err(CaError::Certificate)?;
        X509Authority::assemble(
            td.clone(),
            cert.der().to_vec(),
            key,
            upstream.chain().to_vec(),
        )
    }

    /// Restores an authority from persisted parts.
    ///
    /// `chain` holds the certificates above `cert_der` up to and including the
    /// root (empty for a self-signed CA). Checks that `cert_der` is a CA for a
    /// SPIFFE trust domain and that `key` is its key.
    pub fn from_parts(
        cert_der: Vec<u8>,
        key: CaKey,
        chain: Vec<Vec<u8>>,
    ) -> Result<X509Authority, CaError> {
        let td = {
            let cert = parse_cert(&cert_der).map_err(CaError::InvalidCertificate)?;
            ca_trust_domain(&cert)?
        };
        for der in &chain {
            parse_cert(der).map_err(CaError::InvalidCertificate)?;
        }
        X509Authority::assemble(td, cert_der, key, chain)
    }

    fn assemble(
        trust_domain: TrustDomain,
        cert_der: Vec<u8>,
        key: CaKey,
        chain: Vec<Vec<u8>>,
    ) -> Result<X509Authority, CaError> {
        let (not_before, not_after) = {
            let cert = parse_cert(&cert_der).map_err(CaError::InvalidCertificate)?;
            let is_ca = cert
                .basic_constraints()
                .map_err(|e| CaError::InvalidCertificate(e.to_string()))?
                .is_some_and(|bc| bc.value.ca);
            if !is_ca {
                return Err(CaError::NotACa("basicConstraints CA:true is missing"));
            }
            if !key.matches_spki(cert.public_key().raw) {
                return Err(CaError::KeyMismatch);
            }
            (
                from_asn1(cert.validity().not_before),
                from_asn1(cert.validity().not_after),
            )
        };
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key.clone())
            .map_err(CaError::Certificate)?;
        let svid_tail = match chain.split_last() {
            None => Vec::new(),
            Some((_root, between)) => std::iter::once(cert_der.clone())
                .chain(between.iter().cloned())
                .collect(),
        };
        Ok(X509Authority {
            trust_domain,
            cert_der,
            chain,
            svid_tail,
            key,
            issuer,
            not_before,
            not_after,
        })
    }

    /// Mints an X.509-SVID per DESIGN.md "Credentials": one URI SAN (the
    /// SPIFFE ID) plus optional DNS SANs, CA:false, keyUsage digitalSignature
    /// (critical), EKU serverAuth+clientAuth, random 128-bit serial,
    /// authorityKeyIdentifier, validity `[now - backdate, min(now + ttl, CA not_after)]`
    /// and never before the CA's not_before.
    pub fn mint_svid(&self, req: &SvidRequest<'_>, now: SystemTime) -> Result<X509Svid, CaError> {
        if req.ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        if !req.spiffe_id.is_member_of(&self.trust_domain) {
            return Err(CaError::WrongTrustDomain {
                expected: self.trust_domain.clone(),
                found: req.spiffe_id.trust_domain(),
            });
        }
        if req.spiffe_id.path().is_empty() {
            return Err(CaError::TrustDomainIdAsLeaf);
        }
        if now < self.not_before || now >= self.not_after {
            return Err(CaError::AuthorityNotValid {
                not_after: self.not_after,
            });
        }
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(req.public_key_der)
            .map_err(CaError::InvalidPublicKey)?;

        let not_before = truncate_secs(
            now.checked_sub(CLOCK_SKEW_BACKDATE)
                .unwrap_or(now)
                .max(self.not_before),
        );
        let not_after = truncate_secs((now + req.ttl).min(self.not_after));
        let serial = random_serial()?;

        let mut params = CertificateParams::default();
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.distinguished_name = hallmark_dn(None);
        params.subject_alt_names = leaf_sans(req.spiffe_id, req.dns_names)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = req
            .extensions
            .iter()
            .map(|ext| {
                let mut custom = CustomExtension::from_oid_content(&ext.oid, ext.value_der.clone());
                custom.set_criticality(ext.critical);
                custom
            })
            .collect();
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(CaError::Certificate)?;

        let mut cert_chain = Vec::with_capacity(1 + self.svid_tail.len());
        cert_chain.push(leaf.der().to_vec());
        cert_chain.extend(self.svid_tail.iter().cloned());
        Ok(X509Svid {
            spiffe_id: req.spiffe_id.clone(),
            cert_chain,
            serial: serial_hex(&serial),
            not_before,
            not_after,
        })
    }

    /// The trust domain this CA serves (from its URI SAN).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// This CA's certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Certificates above this CA up to and including the root; empty when self-signed.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The trust anchor: this certificate when self-signed, the upstream root otherwise.
    pub fn root_der(&self) -> &[u8] {
        self.chain
            .last()
            .map_or(self.cert_der.as_slice(), Vec::as_slice)
    }

    /// True when this CA is its own root.
    pub fn is_self_signed(&self) -> bool {
        self.chain.is_empty()
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity; no leaf outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The signing key.
    pub fn key(&self) -> &CaKey {
        &self.key
    }
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("trust_domain", &self.trust_domain)
            .field("self_signed", &self.is_self_signed())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &self.key)
            .finish()
    }
}

/// 16 random bytes with the top bit set: a positive serial of exactly 128 bits
/// (127 of them random), so its hex form is always 32 characters.
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CaError::Random)?;
    serial[0] |= 0x80;
    Ok(serial)
}

fn hallmark_dn(common_name: Option<String>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hallmark");
    if let Some(cn) = common_name {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

fn ca_params(
    td: &TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
    with_aki: bool,
) -> Result<CertificateParams, CaError> {
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    // The serial prefix keeps the subjects of successive CAs distinct.
    let tag = serial_hex(&serial[..4]);
    params.distinguished_name = hallmark_dn(Some(format!("Hallmark CA {td} {tag}")));
    params.subject_alt_names = vec![SanType::URI(ia5(td.id().as_str())?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = with_aki;
    Ok(params)
}

fn leaf_sans(id: &SpiffeId, dns_names: &[String]) -> Result<Vec<SanType>, CaError> {
    let mut sans = Vec::with_capacity(1 + dns_names.len());
    sans.push(SanType::URI(ia5(id.as_str())?));
    for name in dns_names {
        let dns = Ia5String::try_from(name.as_str())
            .map_err(|_| CaError::InvalidDnsName(name.clone()))?;
        if name.is_empty() {
            return Err(CaError::InvalidDnsName(name.clone()));
        }
        sans.push(SanType::DnsName(dns));
    }
    Ok(sans)
}

fn ia5(s: &str) -> Result<Ia5String, CaError> {
    Ia5String::try_from(s).map_err(CaError::Certificate)
}

/// The trust domain named by a CA certificate's URI SAN.
fn ca_trust_domain(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<TrustDomain, CaError> {
    let uris = uri_sans(cert).map_err(CaError::InvalidCertificate)?;
    let mut ids = uris.iter().filter_map(|u| SpiffeId::parse(u).ok());
    match ids.next() {
        Some(id) => Ok(id.trust_domain()),
        None => Err(CaError::MissingTrustDomain),
    }
}
