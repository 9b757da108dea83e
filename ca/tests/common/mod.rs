//! Helpers shared by the crate tests: certificates are made with rcgen at
//! test time, and chains are verified with rustls-webpki directly.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::x509::{SvidExtension, SvidRequest, X509Authority, X509Svid};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, UnixTime};

/// A fixed, whole-second start time so tests are reproducible.
pub(crate) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub(crate) fn id(path: &str) -> SpiffeId {
    SpiffeId::new(&td(), path).unwrap()
}

/// A workload key pair (P-256) as the agent would generate it.
pub(crate) struct Workload {
    pub(crate) key: KeyPair,
}

impl Workload {
    pub(crate) fn new() -> Workload {
        Workload {
            key: KeyPair::generate().unwrap(),
        }
    }

    pub(crate) fn spki(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

/// Mints with `ca` for `spiffe_id` and `workload`'s key.
pub(crate) fn mint(
    ca: &X509Authority,
    spiffe_id: &SpiffeId,
    workload: &Workload,
    ttl: Duration,
    extensions: &[SvidExtension],
    now: SystemTime,
) -> X509Svid {
    ca.mint_svid(
        &SvidRequest {
            spiffe_id,
            public_key_der: &workload.spki(),
            ttl,
            dns_names: &[],
            extensions,
        },
        now,
    )
    .unwrap()
}

/// Verifies `chain` (leaf first) to `root` with rustls-webpki, as a relying
/// party that has never seen Hallmark code would.
pub(crate) fn webpki_verify(
    chain: &[Vec<u8>],
    root: &[u8],
    usage: webpki::KeyUsage,
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root)?.to_owned();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

/// An operator CA made with rcgen: PEM cert (with chain) and PKCS#8 PEM key.
pub(crate) struct OperatorCa {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) root_der: Vec<u8>,
    pub(crate) not_after: SystemTime,
}

fn ca_params(cn: &str, not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params
}

/// A self-signed operator root with a key of algorithm `alg`.
pub(crate) fn operator_root(alg: &'static SignatureAlgorithm, not_after: SystemTime) -> OperatorCa {
    let key = KeyPair::generate_for(alg).unwrap();
    let params = ca_params(
        "Operator Root",
        t0() - Duration::from_secs(86_400),
        not_after,
    );
    let cert = params.self_signed(&key).unwrap();
    OperatorCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        root_der: cert.der().to_vec(),
        not_after,
    }
}

/// An operator intermediate under a fresh operator root: the PEM holds the
/// intermediate then the root.
pub(crate) fn operator_intermediate(not_after: SystemTime) -> OperatorCa {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params(
        "Operator Root",
        t0() - Duration::from_secs(86_400),
        t0() + Duration::from_secs(365 * 86_400),
    );
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = ca_params(
        "Operator Intermediate",
        t0() - Duration::from_secs(3600),
        not_after,
    );
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &root_issuer).unwrap();
    OperatorCa {
        cert_pem: format!("{}{}", cert.pem(), root_cert.pem()),
        key_pem: key.serialize_pem(),
        root_der: root_cert.der().to_vec(),
        not_after,
    }
}
