//! `[federation]` in `server.toml`: the raw section and its validated form.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig as TlsServerConfig;
use serde::Deserialize;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::{SpiffeId, TrustDomain};

use super::url::EndpointUrl;
use crate::config::ConfigError;

/// Shortest wait between two refreshes of one federated bundle, whatever
/// its `spiffe_refresh_hint` says (and the first retry after a failure).
pub const DEFAULT_REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// Longest wait between two refreshes, whatever the hint says.
pub const REFRESH_CEILING: Duration = Duration::from_secs(3600);

/// `[federation]` in `server.toml`. Absent: no bundle endpoint, no
/// federated trust domains.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// `[federation.bundle_endpoint]`: serve this trust domain's bundle.
    pub bundle_endpoint: Option<BundleEndpointSection>,
    /// `[[federation.trust_domains]]`: the trust domains whose bundles
    /// this issuer fetches and gives its agents.
    #[serde(default)]
    pub trust_domains: Vec<TrustDomainSection>,
}

/// `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEndpointSection {
    /// `IP:port` to serve the bundle on (HTTPS).
    pub address: Option<String>,
    /// `https_web` (a Web PKI certificate: `cert` and `key`) or
    /// `https_spiffe` (the issuer's own X509-SVID).
    pub profile: Option<String>,
    /// https_web: the certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// https_web: its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
}

/// One `[[federation.trust_domains]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainSection {
    /// The federated trust domain, e.g. `partner.example`.
    pub trust_domain: Option<String>,
    /// Its bundle endpoint, `https://host[:port]/path`.
    pub bundle_endpoint_url: Option<String>,
    /// `https_web` or `https_spiffe`.
    pub profile: Option<String>,
    /// https_spiffe: the SPIFFE ID the endpoint must present.
    pub endpoint_spiffe_id: Option<String>,
    /// A bootstrap bundle of the trust domain (SPIFFE bundle JSON):
    /// served to agents until the first fetch, and for a self-serving
    /// https_spiffe endpoint, what authenticates the first fetch.
    pub bundle: Option<PathBuf>,
    /// https_web: CA certificates (PEM) the endpoint's certificate must
    /// chain to, instead of the system's.
    pub endpoint_ca: Option<PathBuf>,
}

/// The two endpoint profiles of the SPIFFE Federation standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// TLS with a Web PKI certificate, verified against CA roots.
    HttpsWeb,
    /// TLS with an X509-SVID of a configured SPIFFE ID.
    HttpsSpiffe,
}

impl Profile {
    /// The name in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::HttpsWeb => "https_web",
            Profile::HttpsSpiffe => "https_spiffe",
        }
    }

    fn parse(key: &'static str, text: Option<&str>) -> Result<Profile, ConfigError> {
        match text {
            Some("https_web") => Ok(Profile::HttpsWeb),
            Some("https_spiffe") => Ok(Profile::HttpsSpiffe),
            Some(other) => Err(invalid(
                key,
                format!("{other:?} is not a profile: write \"https_web\" or \"https_spiffe\""),
            )),
            None => Err(invalid(
                key,
                "missing: write \"https_web\" or \"https_spiffe\"".into(),
            )),
        }
    }
}

/// The validated `[federation]` section.
#[derive(Debug, Clone)]
pub struct FederationSettings {
    /// The bundle endpoint to serve, if any.
    pub bundle_endpoint: Option<BundleEndpointSettings>,
    /// The federated trust domains, by name.
    pub trust_domains: BTreeMap<TrustDomain, FederatedTrustDomain>,
    /// Shortest wait between refreshes (default [`DEFAULT_REFRESH_FLOOR`];
    /// tests lower it, the file cannot).
    pub refresh_floor: Duration,
}

impl Default for FederationSettings {
    fn default() -> Self {
        FederationSettings {
            bundle_endpoint: None,
            trust_domains: BTreeMap::new(),
            refresh_floor: DEFAULT_REFRESH_FLOOR,
        }
    }
}

/// The validated `[federation.bundle_endpoint]`.
#[derive(Debug, Clone)]
pub struct BundleEndpointSettings {
    /// Where to serve.
    pub address: SocketAddr,
    /// How the endpoint authenticates itself.
    pub tls: EndpointTls,
}

/// The bundle endpoint's TLS.
#[derive(Debug, Clone)]
pub enum EndpointTls {
    /// `https_web`: the operator's certificate.
    Web {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// The certificate served, which `SIGHUP` reads again.
        certificate: Arc<crate::tls::ReloadableCert>,
        /// The server configuration built from them.
        config: Arc<TlsServerConfig>,
    },
    /// `https_spiffe`: the issuer's own X509-SVID
    /// (`spiffe://<trust domain>/hallmark/server`), renewed with it.
    Spiffe,
}

impl BundleEndpointSettings {
    /// The profile served.
    pub fn profile(&self) -> Profile {
        match self.tls {
            EndpointTls::Web { .. } => Profile::HttpsWeb,
            EndpointTls::Spiffe => Profile::HttpsSpiffe,
        }
    }
}

/// One federated trust domain, checked.
#[derive(Debug, Clone)]
pub struct FederatedTrustDomain {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint.
    pub url: EndpointUrl,
    /// How to authenticate the endpoint.
    pub auth: EndpointAuth,
    /// The bootstrap bundle, if configured.
    pub bootstrap: Option<Bundle>,
}

/// How a bundle endpoint is authenticated.
#[derive(Debug, Clone)]
pub enum EndpointAuth {
    /// `https_web`: Web PKI, against these roots (DER).
    Web {
        /// The CA certificates.
        roots: Arc<Vec<Vec<u8>>>,
        /// Where they came from (the configured file or the system's).
        source: PathBuf,
    },
    /// `https_spiffe`: an X509-SVID of exactly this ID, verified with the
    /// bundle of its trust domain.
    Spiffe {
        /// The endpoint's SPIFFE ID.
        endpoint_id: SpiffeId,
    },
}

impl FederatedTrustDomain {
    /// The profile.
    pub fn profile(&self) -> Profile {
        match self.auth {
            EndpointAuth::Web { .. } => Profile::HttpsWeb,
            EndpointAuth::Spiffe { .. } => Profile::HttpsSpiffe,
        }
    }

    /// The endpoint's SPIFFE ID (https_spiffe).
    pub fn endpoint_id(&self) -> Option<&SpiffeId> {
        match &self.auth {
            EndpointAuth::Spiffe { endpoint_id } => Some(endpoint_id),
            EndpointAuth::Web { .. } => None,
        }
    }
}

impl FederationSettings {
    /// Whether a `SIGHUP` reload would leave federation as it runs.
    pub fn same_as(&self, other: &FederationSettings) -> bool {
        let endpoint = |s: &FederationSettings| {
            s.bundle_endpoint.as_ref().map(|e| {
                let files = match &e.tls {
                    EndpointTls::Web { cert, key, .. } => Some((cert.clone(), key.clone())),
                    EndpointTls::Spiffe => None,
                };
                (e.address, files)
            })
        };
        let domains = |s: &FederationSettings| {
            s.trust_domains
                .values()
                .map(|t| {
                    (
                        t.trust_domain.clone(),
                        t.url.as_str().to_owned(),
                        t.profile(),
                        t.endpoint_id().cloned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        endpoint(self) == endpoint(other) && domains(self) == domains(other)
    }
}

/// The system's CA certificates, where Debian, Fedora and Alpine keep them.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Checks `[federation]` against our own trust domain.
pub(crate) fn resolve(
    section: &FederationSection,
    own: &TrustDomain,
) -> Result<FederationSettings, ConfigError> {
    let bundle_endpoint = section
        .bundle_endpoint
        .as_ref()
        .map(resolve_endpoint)
        .transpose()?;
    let mut trust_domains = BTreeMap::new();
    for entry in &section.trust_domains {
        let federated = resolve_trust_domain(entry, own)?;
        let name = federated.trust_domain.clone();
        if trust_domains.insert(name.clone(), federated).is_some() {
            return Err(invalid(
                "federation.trust_domains.trust_domain",
                format!(
                    "{name} is listed twice: keep one [[federation.trust_domains]] entry per trust domain"
                ),
            ));
        }
    }
    // https_spiffe: the endpoint's trust domain bundle must be known.
    for federated in trust_domains.values() {
        if let Some(endpoint_id) = federated.endpoint_id() {
            let endpoint_td = endpoint_id.trust_domain();
            let self_serving = endpoint_td == federated.trust_domain;
            if self_serving && federated.bootstrap.is_none() {
                return Err(invalid(
                    "federation.trust_domains.bundle",
                    format!(
                        "missing for {}: its https_spiffe endpoint ({endpoint_id}) is self-serving, so the first fetch is authenticated with a bootstrap bundle: set bundle = \"/path/to/{}.json\" (SPIFFE bundle JSON, e.g. the output of `hallmark-server bundle show --format jwks` on that issuer)",
                        federated.trust_domain, federated.trust_domain
                    ),
                ));
            }
            if !self_serving && endpoint_td != *own && !trust_domains.contains_key(&endpoint_td) {
                return Err(invalid(
                    "federation.trust_domains.endpoint_spiffe_id",
                    format!(
                        "{endpoint_id} (for {}) is in trust domain {endpoint_td}, whose bundle this issuer does not have: use an ID in {} (self-serving), in {own}, or add {endpoint_td} as a federated trust domain",
                        federated.trust_domain, federated.trust_domain
                    ),
                ));
            }
        }
    }
    Ok(FederationSettings {
        bundle_endpoint,
        trust_domains,
        refresh_floor: DEFAULT_REFRESH_FLOOR,
    })
}

fn resolve_endpoint(
    section: &BundleEndpointSection,
) -> Result<BundleEndpointSettings, ConfigError> {
    const KEY: &str = "federation.bundle_endpoint";
    let text = section.address.as_deref().ok_or_else(|| {
        invalid(
            "federation.bundle_endpoint.address",
            "missing: the IP:port to serve the bundle on, e.g. \"0.0.0.0:8443\"".into(),
        )
    })?;
    let address = text.parse::<SocketAddr>().map_err(|_| {
        invalid(
            "federation.bundle_endpoint.address",
            format!("{text:?} is not an IP:port address, e.g. \"0.0.0.0:8443\""),
        )
    })?;
    let profile = Profile::parse(
        "federation.bundle_endpoint.profile",
        section.profile.as_deref(),
    )?;
    let tls = match (profile, &section.cert, &section.key) {
        (Profile::HttpsWeb, Some(cert), Some(key)) => {
            let (certificate, config) = crate::oidc::tls_server_config(
                cert,
                key,
                "federation.bundle_endpoint.cert",
                "federation.bundle_endpoint.key",
            )?;
            EndpointTls::Web {
                cert: cert.clone(),
                key: key.clone(),
                certificate,
                config,
            }
        }
        (Profile::HttpsWeb, None, _) => {
            return Err(invalid(
                "federation.bundle_endpoint.cert",
                "missing: profile \"https_web\" serves a Web PKI certificate: set cert (PEM chain) and key".into(),
            ));
        }
        (Profile::HttpsWeb, Some(_), None) => {
            return Err(invalid(
                "federation.bundle_endpoint.key",
                "missing: the certificate's private key (PEM)".into(),
            ));
        }
        (Profile::HttpsSpiffe, None, None) => EndpointTls::Spiffe,
        (Profile::HttpsSpiffe, _, _) => {
            return Err(invalid(
                KEY,
                "profile \"https_spiffe\" serves the issuer's own X509-SVID: remove cert and key, or use profile \"https_web\"".into(),
            ));
        }
    };
    Ok(BundleEndpointSettings { address, tls })
}

fn resolve_trust_domain(
    entry: &TrustDomainSection,
    own: &TrustDomain,
) -> Result<FederatedTrustDomain, ConfigError> {
    let text = entry.trust_domain.as_deref().ok_or_else(|| {
        invalid(
            "federation.trust_domains.trust_domain",
            "missing: each [[federation.trust_domains]] names the trust domain it federates with, e.g. trust_domain = \"partner.example\"".into(),
        )
    })?;
    let trust_domain =
        TrustDomain::new(text.strip_prefix("spiffe://").unwrap_or(text)).map_err(|e| {
            invalid(
                "federation.trust_domains.trust_domain",
                format!("{text:?} is not a valid trust domain: {e}"),
            )
        })?;
    if trust_domain == *own {
        return Err(invalid(
            "federation.trust_domains.trust_domain",
            format!(
                "{trust_domain} is this issuer's own trust domain: an issuer does not federate with itself; remove this entry"
            ),
        ));
    }
    let url_text = entry.bundle_endpoint_url.as_deref().ok_or_else(|| {
        invalid(
            "federation.trust_domains.bundle_endpoint_url",
            format!("missing for {trust_domain}: the https:// URL of its bundle endpoint"),
        )
    })?;
    let url = EndpointUrl::parse(url_text).map_err(|reason| {
        invalid(
            "federation.trust_domains.bundle_endpoint_url",
            format!("{url_text:?} (for {trust_domain}): {reason}"),
        )
    })?;
    let profile = Profile::parse("federation.trust_domains.profile", entry.profile.as_deref())?;
    let bootstrap = entry
        .bundle
        .as_ref()
        .map(|path| load_bundle(path, &trust_domain))
        .transpose()?;
    let auth = match profile {
        Profile::HttpsWeb => {
            if entry.endpoint_spiffe_id.is_some() {
                return Err(invalid(
                    "federation.trust_domains.endpoint_spiffe_id",
                    format!(
                        "{trust_domain} uses profile \"https_web\", which authenticates the endpoint by its Web PKI certificate: remove endpoint_spiffe_id, or use profile \"https_spiffe\""
                    ),
                ));
            }
            let (roots, source) = match &entry.endpoint_ca {
                Some(path) => (
                    load_roots("federation.trust_domains.endpoint_ca", path)?,
                    path.clone(),
                ),
                None => system_roots(&trust_domain)?,
            };
            EndpointAuth::Web {
                roots: Arc::new(roots),
                source,
            }
        }
        Profile::HttpsSpiffe => {
            if entry.endpoint_ca.is_some() {
                return Err(invalid(
                    "federation.trust_domains.endpoint_ca",
                    format!(
                        "{trust_domain} uses profile \"https_spiffe\", whose endpoint is authenticated with a SPIFFE bundle: remove endpoint_ca (set bundle instead)"
                    ),
                ));
            }
            let id_text = entry.endpoint_spiffe_id.as_deref().ok_or_else(|| {
                invalid(
                    "federation.trust_domains.endpoint_spiffe_id",
                    format!("missing for {trust_domain}: profile \"https_spiffe\" needs the SPIFFE ID the endpoint presents, e.g. \"spiffe://{trust_domain}/hallmark/server\""),
                )
            })?;
            let endpoint_id = SpiffeId::parse(id_text).map_err(|e| {
                invalid(
                    "federation.trust_domains.endpoint_spiffe_id",
                    format!("{id_text:?} is not a SPIFFE ID: {e}"),
                )
            })?;
            EndpointAuth::Spiffe { endpoint_id }
        }
    };
    Ok(FederatedTrustDomain {
        trust_domain,
        url,
        auth,
        bootstrap,
    })
}

/// Reads a SPIFFE bundle JSON file for `td`.
fn load_bundle(path: &Path, td: &TrustDomain) -> Result<Bundle, ConfigError> {
    const KEY: &str = "federation.trust_domains.bundle";
    let bytes = std::fs::read(path)
        .map_err(|e| invalid(KEY, format!("cannot read {}: {e}", path.display())))?;
    let bundle = Bundle::from_jwks(td.clone(), &bytes)
        .and_then(|b| b.check_trust_domain().map(|()| b))
        .map_err(|e| {
            invalid(
                KEY,
                format!(
                    "{} is not a usable SPIFFE bundle of {td}: {e} (expected SPIFFE bundle JSON, as `hallmark-server bundle show --format jwks` prints it)",
                    path.display()
                ),
            )
        })?;
    Ok(bundle)
}

fn load_roots(key: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let text = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let blocks = pem::parse_many(&text)
        .map_err(|e| invalid(key, format!("{} is not PEM: {e}", path.display())))?;
    let roots: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if roots.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no CERTIFICATE block", path.display()),
        ));
    }
    Ok(roots)
}

fn system_roots(td: &TrustDomain) -> Result<(Vec<Vec<u8>>, PathBuf), ConfigError> {
    for file in SYSTEM_CA_FILES {
        let path = Path::new(file);
        if path.exists() {
            return Ok((
                load_roots("federation.trust_domains.endpoint_ca", path)?,
                path.to_owned(),
            ));
        }
    }
    Err(invalid(
        "federation.trust_domains.endpoint_ca",
        format!(
            "missing for {td}: no system CA file found ({}): set endpoint_ca to the PEM CA certificates the endpoint's certificate chains to",
            SYSTEM_CA_FILES.join(", ")
        ),
    ))
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}
