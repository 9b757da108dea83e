//! Bundle messages of the Workload API.

use std::collections::HashMap;

use hallmark_ca::bundle::Bundle;
use hallmark_proto::workload::{JwtBundlesResponse, X509BundlesResponse};

/// The map key the standard uses for a bundle: the trust domain's SPIFFE ID
/// (`spiffe://example.org`).
pub fn trust_domain_key(bundle: &Bundle) -> String {
    bundle.trust_domain.id().as_str().to_owned()
}

/// `FetchX509Bundles`: the X.509 authorities as concatenated DER.
pub fn x509_bundles_response(bundle: &Bundle) -> X509BundlesResponse {
    X509BundlesResponse {
        crl: vec![],
        bundles: HashMap::from([(trust_domain_key(bundle), bundle.x509_der_concat())]),
    }
}

/// `FetchJWTBundles`: the JWT authorities as a JWKS document.
pub fn jwt_bundles_response(bundle: &Bundle) -> JwtBundlesResponse {
    JwtBundlesResponse {
        bundles: HashMap::from([(trust_domain_key(bundle), bundle.jwt_jwks().into_bytes())]),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use hallmark_ca::id::TrustDomain;
    use hallmark_ca::manager::{CaConfig, CaManager};

    use super::*;

    #[test]
    fn bundles_are_keyed_by_trust_domain_id_and_parse() {
        let ca = CaManager::generate(
            CaConfig::new(TrustDomain::new("example.org").unwrap()),
            SystemTime::now(),
        )
        .unwrap();
        let bundle = ca.bundle();
        let x509 = x509_bundles_response(&bundle);
        let der = &x509.bundles["spiffe://example.org"];
        // Concatenated DER: every authority, in order, nothing else.
        let mut rest: &[u8] = der;
        let mut count = 0;
        while !rest.is_empty() {
            let (next, _) = x509_parser::parse_x509_certificate(rest).unwrap();
            rest = next;
            count += 1;
        }
        assert_eq!(count, bundle.x509_authorities.len());
        let jwt = jwt_bundles_response(&bundle);
        let jwks: serde_json::Value =
            serde_json::from_slice(&jwt.bundles["spiffe://example.org"]).unwrap();
        assert_eq!(
            jwks["keys"].as_array().unwrap().len(),
            bundle.jwt_authorities.len()
        );
        assert_eq!(
            jwks["keys"][0]["kid"],
            bundle.jwt_authorities[0].key_id.as_str()
        );
    }
}
