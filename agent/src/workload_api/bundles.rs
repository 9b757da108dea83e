//! Bundle messages of the Workload API: the agent's own trust domain's
//! bundle and, each under its own trust domain, the federated ones.

use std::collections::HashMap;

use hallmark_ca::bundle::Bundle;
use hallmark_proto::workload::{JwtBundlesResponse, X509BundlesResponse};

use crate::federated::FederatedBundles;

/// The map key the standard uses for a bundle: the trust domain's SPIFFE ID
/// (`spiffe://example.org`).
pub fn trust_domain_key(bundle: &Bundle) -> String {
    bundle.trust_domain.id().as_str().to_owned()
}

/// `X509SVIDResponse.federated_bundles`: each federated trust domain's
/// X.509 authorities as concatenated DER (trust domains whose bundle has
/// none, only JWT keys, are left out).
pub fn federated_x509(federated: &FederatedBundles) -> HashMap<String, Vec<u8>> {
    federated
        .values()
        .filter(|b| !b.x509_authorities.is_empty())
        .map(|b| (trust_domain_key(b), b.x509_der_concat()))
        .collect()
}

/// `FetchX509Bundles`: the X.509 authorities as concatenated DER, own
/// trust domain and federated ones.
pub fn x509_bundles_response(bundle: &Bundle, federated: &FederatedBundles) -> X509BundlesResponse {
    let mut bundles = federated_x509(federated);
    bundles.insert(trust_domain_key(bundle), bundle.x509_der_concat());
    X509BundlesResponse {
        crl: vec![],
        bundles,
    }
}

/// `FetchJWTBundles`: the JWT authorities as a JWKS document per trust
/// domain, own and federated (federated ones without JWT keys left out).
pub fn jwt_bundles_response(bundle: &Bundle, federated: &FederatedBundles) -> JwtBundlesResponse {
    let mut bundles: HashMap<String, Vec<u8>> = federated
        .values()
        .filter(|b| !b.jwt_authorities.is_empty())
        .map(|b| (trust_domain_key(b), b.jwt_jwks().into_bytes()))
        .collect();
    bundles.insert(trust_domain_key(bundle), bundle.jwt_jwks().into_bytes());
    JwtBundlesResponse { bundles }
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
        let none = FederatedBundles::new();
        let x509 = x509_bundles_response(&bundle, &none);
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
        let jwt = jwt_bundles_response(&bundle, &none);
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

    #[test]
    fn federated_bundles_are_keyed_by_their_own_trust_domain() {
        let make = |name: &str| {
            CaManager::generate(
                CaConfig::new(TrustDomain::new(name).unwrap()),
                SystemTime::now(),
            )
            .unwrap()
            .bundle()
        };
        let own = make("a.example");
        let b = make("b.example");
        let mut jwt_only = make("c.example");
        jwt_only.x509_authorities.clear();
        let federated: FederatedBundles = [b.clone(), jwt_only.clone()]
            .into_iter()
            .map(|x| (x.trust_domain.clone(), std::sync::Arc::new(x)))
            .collect();
        let x509 = x509_bundles_response(&own, &federated);
        assert_eq!(x509.bundles.len(), 2, "c.example has no X.509 authorities");
        assert_eq!(x509.bundles["spiffe://a.example"], own.x509_der_concat());
        assert_eq!(x509.bundles["spiffe://b.example"], b.x509_der_concat());
        assert_eq!(
            federated_x509(&federated).keys().collect::<Vec<_>>(),
            ["spiffe://b.example"]
        );
        let jwt = jwt_bundles_response(&own, &federated);
        assert_eq!(jwt.bundles.len(), 3);
        assert_eq!(
            jwt.bundles["spiffe://c.example"],
            jwt_only.jwt_jwks().into_bytes()
        );
    }
}
