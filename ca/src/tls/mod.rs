//! rustls integration for mutual TLS with X.509-SVIDs (ring provider): client
//! and server certificate verifiers that read a [`SharedBundle`] on every
//! handshake, and a swappable certificate resolver for our own SVID.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::SharedBundle;
use crate::id::SpiffeId;
use crate::util::{parse_cert, serial_hex};
use crate::verify::{Usage, VerifiedSvid, VerifyError, leaf_spiffe_id, verify_x509_svid};

mod resolver;

pub use resolver::SvidCertResolver;

use crate::clock::Clock;

/// Gives rustls its notion of "now" from a [`Clock`], so certificate
/// validity during handshakes follows the same clock as minting (a test
/// clock in tests, the system clock in production).
#[derive(Debug)]
pub struct ClockTimeProvider {
    clock: Arc<dyn Clock>,
}

impl ClockTimeProvider {
    /// A time provider reading `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> ClockTimeProvider {
        ClockTimeProvider { clock }
    }
}

impl rustls::time_provider::TimeProvider for ClockTimeProvider {
    fn current_time(&self) -> Option<UnixTime> {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(UnixTime::since_unix_epoch)
    }
}

/// The predicate deciding which authenticated client SPIFFE IDs may connect.
pub type Authorizer = Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>;

/// Why an [`SvidAuthorizer`] refused a verified SVID. Its `Display` becomes
/// the handshake error's message on the side that refused.
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Decides whether a peer whose SVID verified (chain, usage, validity,
/// trust domain) is accepted, seeing the whole [`VerifiedSvid`] (SPIFFE ID,
/// serial, expiry and binding), and says why not. Relying parties build
/// these from an authorization policy (the root `hallmark` crate's
/// `Policy`).
pub type SvidAuthorizer = Arc<dyn Fn(&VerifiedSvid) -> Result<(), Refusal> + Send + Sync>;

/// What a verifier checks once the chain verified.
#[derive(Clone)]
enum Check {
    /// Nothing: trust on first use (only [`SpiffeServerVerifier::trust_on_first_use`]).
    Nothing,
    /// The peer's SPIFFE ID is exactly this one.
    Exactly(SpiffeId),
    /// A predicate over the SPIFFE ID.
    Id(Authorizer),
    /// An authorizer over the whole SVID.
    Svid(SvidAuthorizer),
}

impl Check {
    fn apply(&self, svid: VerifiedSvid) -> Result<(), rustls::Error> {
        match self {
            Check::Nothing => Ok(()),
            Check::Exactly(expected) if svid.spiffe_id == *expected => Ok(()),
            Check::Id(authorize) if authorize(&svid.spiffe_id) => Ok(()),
            Check::Exactly(_) | Check::Id(_) => {
                Err(to_rustls(VerifyError::Unauthorized(svid.spiffe_id)))
            }
            Check::Svid(authorize) => authorize(&svid).map_err(|refusal| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::from(
                    refusal,
                ))))
            }),
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Nothing => f.write_str("Nothing"),
            Check::Exactly(id) => f.debug_tuple("Exactly").field(id).finish(),
            Check::Id(_) => f.write_str("Id(..)"),
            Check::Svid(_) => f.write_str("Svid(..)"),
        }
    }
}

/// Verifies TLS client certificates as X.509-SVIDs of the bundle's trust
/// domain, then applies an authorization predicate.
pub struct SpiffeClientVerifier {
    bundle: SharedBundle,
    check: Check,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// A verifier over `bundle`. With `mandatory = false` a client without a
    /// certificate completes the handshake anonymously (the RPC layer must
    /// then require a certificate where it matters).
    pub fn new(
        bundle: SharedBundle,
        authorize: Authorizer,
        mandatory: bool,
    ) -> SpiffeClientVerifier {
        SpiffeClientVerifier {
            bundle,
            check: Check::Id(authorize),
            mandatory,
            algorithms: ring_algorithms(),
        }
    }

    /// A verifier over `bundle` that requires a client certificate and
    /// hands every verified client SVID to `authorize`; a refusal fails the
    /// handshake with the refusal as the error's message
    /// (`CertificateError::Other`).
    pub fn with_svid_authorizer(
        bundle: SharedBundle,
        authorize: SvidAuthorizer,
    ) -> SpiffeClientVerifier {
        SpiffeClientVerifier {
            bundle,
            check: Check::Svid(authorize),
            mandatory: true,
            algorithms: ring_algorithms(),
        }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("bundle", &self.bundle)
            .field("check", &self.check)
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain = chain_of(end_entity, intermediates);
        let bundle = self.bundle.load();
        let svid = verify_x509_svid(&chain, &bundle, Usage::ClientAuth, system_time(now))
            .map_err(to_rustls)?;
        self.check.apply(svid)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies a TLS server's certificate as the X.509-SVID of one expected
/// SPIFFE ID, or of any SVID an [`SvidAuthorizer`] accepts. The DNS server
/// name is ignored (SVIDs carry no DNS name).
pub struct SpiffeServerVerifier {
    bundle: SharedBundle,
    /// [`Check::Nothing`]: trust on first use (no chain or identity check).
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier accepting only `expected`, verified against `bundle`.
    pub fn new(bundle: SharedBundle, expected: SpiffeId) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            bundle,
            check: Check::Exactly(expected),
            algorithms: ring_algorithms(),
        }
    }

    /// A verifier over `bundle` that hands every verified server SVID to
    /// `authorize`; a refusal fails the handshake with the refusal as the
    /// error's message (`CertificateError::Other`).
    pub fn with_svid_authorizer(
        bundle: SharedBundle,
        authorize: SvidAuthorizer,
    ) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            bundle,
            check: Check::Svid(authorize),
            algorithms: ring_algorithms(),
        }
    }

    /// A verifier that accepts any server certificate (the handshake
    /// signature is still checked, so the peer holds the certificate's key).
    /// Only for an agent's explicitly insecure first attestation, before it
    /// has a trust bundle; never for anything else.
    pub fn trust_on_first_use(bundle: SharedBundle) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            bundle,
            check: Check::Nothing,
            algorithms: ring_algorithms(),
        }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("bundle", &self.bundle)
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Check::Nothing = self.check {
            return Ok(ServerCertVerified::assertion());
        }
        let chain = chain_of(end_entity, intermediates);
        let bundle = self.bundle.load();
        let svid = verify_x509_svid(&chain, &bundle, Usage::ServerAuth, system_time(now))
            .map_err(to_rustls)?;
        self.check.apply(svid)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE ID in the leaf of a presented chain (its single URI SAN). No
/// chain verification: use on certificates a verifier above already accepted.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, VerifyError> {
    let leaf = certs.first().ok_or(VerifyError::EmptyChain)?;
    let cert = parse_cert(leaf).map_err(VerifyError::Malformed)?;
    leaf_spiffe_id(&cert)
}

/// The serial of a certificate, lowercase hex without leading zero bytes
/// (the format of [`crate::x509::X509Svid::serial`]).
pub fn leaf_serial(cert_der: &[u8]) -> Result<String, VerifyError> {
    let cert = parse_cert(cert_der).map_err(VerifyError::Malformed)?;
    Ok(serial_hex(cert.raw_serial()))
}

/// The SPIFFE ID and the serial of a presented leaf, from one parse (the
/// issuer's node API authenticates every call with both). No chain
/// verification, as for [`peer_spiffe_id`].
pub fn peer_id_and_serial(leaf_der: &[u8]) -> Result<(SpiffeId, String), VerifyError> {
    let cert = parse_cert(leaf_der).map_err(VerifyError::Malformed)?;
    Ok((leaf_spiffe_id(&cert)?, serial_hex(cert.raw_serial())))
}

fn ring_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn chain_of<'a>(
    end_entity: &'a CertificateDer<'_>,
    intermediates: &'a [CertificateDer<'_>],
) -> Vec<&'a [u8]> {
    std::iter::once(end_entity.as_ref())
        .chain(intermediates.iter().map(|c| c.as_ref()))
        .collect()
}

fn system_time(now: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(now.as_secs())
}

fn to_rustls(e: VerifyError) -> rustls::Error {
    let cert_error = match e {
        VerifyError::Expired => CertificateError::Expired,
        VerifyError::NotYetValid => CertificateError::NotValidYet,
        VerifyError::UnknownAuthority => CertificateError::UnknownIssuer,
        VerifyError::Unauthorized(_) => CertificateError::ApplicationVerificationFailure,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}
