//! `[federation]` refusals: each names the key and what to write instead.

use std::time::SystemTime;

use hallmark_ca::manager::{CaConfig, CaManager};

use super::*;
use crate::config::{ConfigError, ServerConfig, ServerOverrides, ServerSettings};

fn resolve(text: &str) -> Result<ServerSettings, ConfigError> {
    ServerSettings::resolve(
        ServerConfig::from_toml_str(&format!("trust_domain = \"example.org\"\n{text}"))?,
        ServerOverrides::default(),
    )
}

fn refused(text: &str, key: &str, needle: &str) {
    match resolve(text) {
        Err(ConfigError::Invalid { key: k, reason }) => {
            assert_eq!(k, key, "{text}: {reason}");
            assert!(reason.contains(needle), "{text}: {reason}");
        }
        other => panic!("{text}: expected {key} refused, got {other:?}"),
    }
}

fn bundle_file(dir: &std::path::Path, td: &str) -> String {
    let bundle = CaManager::generate(
        CaConfig::new(TrustDomain::new(td).unwrap()),
        SystemTime::now(),
    )
    .unwrap()
    .bundle();
    let path = dir.join(format!("{td}.json"));
    std::fs::write(&path, bundle.to_jwks()).unwrap();
    path.display().to_string()
}

#[test]
fn no_section_means_no_federation() {
    let settings = resolve("").unwrap();
    assert!(settings.federation.bundle_endpoint.is_none());
    assert!(settings.federation.trust_domains.is_empty());
    assert_eq!(settings.federation.refresh_floor, DEFAULT_REFRESH_FLOOR);
}

#[test]
fn both_profiles_parse() {
    let dir = tempfile::tempdir().unwrap();
    let partner = bundle_file(dir.path(), "partner.example");
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["bundles.example.org".into()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let settings = resolve(&format!(
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1:8443\"\nprofile = \"https_spiffe\"\n\
         [[federation.trust_domains]]\ntrust_domain = \"partner.example\"\nbundle_endpoint_url = \"https://bundles.partner.example/\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/spire/server\"\nbundle = \"{partner}\"\n\
         [[federation.trust_domains]]\ntrust_domain = \"web.example\"\nbundle_endpoint_url = \"https://web.example:8443/b.json\"\nprofile = \"https_web\"\nendpoint_ca = \"{}\"\n",
        ca.display()
    ))
    .unwrap();
    let endpoint = settings.federation.bundle_endpoint.unwrap();
    assert_eq!(endpoint.profile(), Profile::HttpsSpiffe);
    let domains: Vec<_> = settings.federation.trust_domains.values().collect();
    assert_eq!(domains.len(), 2);
    assert_eq!(domains[0].trust_domain.as_str(), "partner.example");
    assert_eq!(domains[0].profile(), Profile::HttpsSpiffe);
    assert!(domains[0].bootstrap.is_some());
    assert_eq!(domains[1].profile(), Profile::HttpsWeb);
    assert_eq!(domains[1].url.port(), 8443);
}

#[test]
fn bad_federation_config_names_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let partner = bundle_file(dir.path(), "partner.example");
    let other = bundle_file(dir.path(), "other.example");
    let td = |extra: &str| {
        format!(
            "[[federation.trust_domains]]\ntrust_domain = \"partner.example\"\nbundle_endpoint_url = \"https://bundles.partner.example/\"\n{extra}"
        )
    };
    refused(
        "[[federation.trust_domains]]\ntrust_domain = \"example.org\"\nbundle_endpoint_url = \"https://x.example/\"\nprofile = \"https_web\"\n",
        "federation.trust_domains.trust_domain",
        "this issuer's own trust domain",
    );
    refused(
        "[[federation.trust_domains]]\ntrust_domain = \"spiffe://example.org\"\nbundle_endpoint_url = \"https://x.example/\"\nprofile = \"https_web\"\n",
        "federation.trust_domains.trust_domain",
        "own trust domain",
    );
    refused(
        "[[federation.trust_domains]]\nbundle_endpoint_url = \"https://x.example/\"\n",
        "federation.trust_domains.trust_domain",
        "missing",
    );
    refused(
        "[[federation.trust_domains]]\ntrust_domain = \"Not A Domain\"\nbundle_endpoint_url = \"https://x.example/\"\n",
        "federation.trust_domains.trust_domain",
        "not a valid trust domain",
    );
    refused(
        &td("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\n")
            .replace("https://bundles", "http://bundles"),
        "federation.trust_domains.bundle_endpoint_url",
        "HTTPS",
    );
    refused(
        &td("profile = \"https\"\n"),
        "federation.trust_domains.profile",
        "\"https_web\" or \"https_spiffe\"",
    );
    refused(&td(""), "federation.trust_domains.profile", "missing");
    refused(
        &td(&format!(
            "profile = \"https_spiffe\"\nbundle = \"{partner}\"\n"
        )),
        "federation.trust_domains.endpoint_spiffe_id",
        "needs the SPIFFE ID the endpoint presents",
    );
    refused(
        &td("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\n"),
        "federation.trust_domains.bundle",
        "self-serving",
    );
    refused(
        &td("profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://third.example/s\"\n"),
        "federation.trust_domains.endpoint_spiffe_id",
        "whose bundle this issuer does not have",
    );
    refused(
        &td(&format!(
            "profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\nbundle = \"{other}\"\n"
        )),
        "federation.trust_domains.bundle",
        "is a CA of trust domain other.example, not partner.example",
    );
    refused(
        &td(
            "profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\nbundle = \"/nonexistent.json\"\n",
        ),
        "federation.trust_domains.bundle",
        "cannot read /nonexistent.json",
    );
    refused(
        &td("profile = \"https_web\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\n"),
        "federation.trust_domains.endpoint_spiffe_id",
        "remove endpoint_spiffe_id",
    );
    refused(
        &td("profile = \"https_web\"\nendpoint_ca = \"/nonexistent-ca.pem\"\n"),
        "federation.trust_domains.endpoint_ca",
        "cannot read",
    );
    // A trust domain listed twice.
    let twice = td(&format!(
        "profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/s\"\nbundle = \"{partner}\"\n"
    ));
    refused(
        &format!("{twice}{twice}"),
        "federation.trust_domains.trust_domain",
        "listed twice",
    );
    refused(
        "[federation.bundle_endpoint]\nprofile = \"https_spiffe\"\n",
        "federation.bundle_endpoint.address",
        "missing",
    );
    refused(
        "[federation.bundle_endpoint]\naddress = \"localhost\"\nprofile = \"https_spiffe\"\n",
        "federation.bundle_endpoint.address",
        "IP:port",
    );
    refused(
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1:8443\"\nprofile = \"https_web\"\n",
        "federation.bundle_endpoint.cert",
        "Web PKI certificate",
    );
    refused(
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1:8443\"\nprofile = \"https_spiffe\"\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
        "federation.bundle_endpoint",
        "remove cert and key",
    );
    refused(
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1:8443\"\nprofile = \"https_web\"\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n",
        "federation.bundle_endpoint.cert",
        "/nonexistent.pem",
    );
    // Unknown keys are named by the TOML parser.
    let err = resolve("[federation.bundle_endpoint]\nport = 8443\n").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
    let err = resolve(&td("profile = \"https_web\"\nurl = \"x\"\n")).unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
}
