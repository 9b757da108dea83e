//! The bundles of the trust domains the issuer federates with (SPIFFE
//! Federation), as the issuer sends them on `Sync`: kept one per trust
//! domain, never merged with the agent's own bundle nor with each other,
//! persisted in the data directory (`federated_bundles.json`, SPIFFE bundle
//! JSON per trust domain) so that a restarted agent serves them before it
//! reaches the issuer, and served by the Workload API
//! (`X509SVIDResponse.federated_bundles`, `FetchX509Bundles`,
//! `FetchJWTBundles`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::TrustDomain;
use hallmark_proto::node;

use crate::error::AgentError;
use crate::persist::write_atomic;

/// The federated bundles, by trust domain.
pub type FederatedBundles = BTreeMap<TrustDomain, Arc<Bundle>>;

/// The file in the data directory.
pub const FEDERATED_FILE: &str = "federated_bundles.json";

/// The federated bundles of a `Sync` message. A bundle for the agent's own
/// trust domain, for an invalid trust domain name, or twice for one trust
/// domain, is refused (the issuer never sends one).
pub fn from_proto(
    bundles: Vec<node::Bundle>,
    own: &TrustDomain,
) -> Result<FederatedBundles, AgentError> {
    let mut out = FederatedBundles::new();
    for bundle in bundles {
        let td = TrustDomain::new(&bundle.trust_domain).map_err(|e| {
            AgentError::BadResponse(format!(
                "federated bundle for {:?}: {e}",
                bundle.trust_domain
            ))
        })?;
        if td == *own {
            return Err(AgentError::BadResponse(format!(
                "a federated bundle for the agent's own trust domain {td}"
            )));
        }
        let converted = crate::attest::convert_bundle(bundle, &td);
        if out.insert(td.clone(), Arc::new(converted)).is_some() {
            return Err(AgentError::BadResponse(format!(
                "two federated bundles for {td}"
            )));
        }
    }
    Ok(out)
}

/// Whether two sets hold the same trust domains and bundle contents.
pub fn same(a: &FederatedBundles, b: &FederatedBundles) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ta, ba), (tb, bb))| ta == tb && ba.same_content(bb))
}

/// Writes the set to `path` atomically: `{"<td>": <SPIFFE bundle>, ...}`.
pub fn save(path: &Path, bundles: &FederatedBundles) -> Result<(), AgentError> {
    let mut doc = Map::new();
    for (td, bundle) in bundles {
        let jwks: Value = serde_json::from_str(&bundle.to_jwks())
            .map_err(|e| AgentError::Corrupt(path.to_owned(), e.to_string()))?;
        doc.insert(td.as_str().to_owned(), jwks);
    }
    let text = Value::Object(doc).to_string();
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Reads the set saved by [`save`]; a missing file is an empty set.
pub fn load(path: &Path) -> Result<FederatedBundles, AgentError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FederatedBundles::new()),
        Err(e) => return Err(AgentError::io(path, e)),
    };
    let corrupt = |reason: String| AgentError::Corrupt(path.to_owned(), reason);
    let doc: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = FederatedBundles::new();
    for (name, jwks) in doc {
        let td = TrustDomain::new(&name).map_err(|e| corrupt(format!("{name:?}: {e}")))?;
        let bundle = Bundle::from_jwks(td.clone(), jwks.to_string().as_bytes())
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        out.insert(td, Arc::new(bundle));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use hallmark_ca::manager::{CaConfig, CaManager};

    use super::*;

    fn bundle_of(name: &str) -> Bundle {
        let td = TrustDomain::new(name).unwrap();
        CaManager::generate(CaConfig::new(td), SystemTime::now())
            .unwrap()
            .bundle()
    }

    #[test]
    fn saved_bundles_load_back_and_own_trust_domain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FEDERATED_FILE);
        assert!(load(&path).unwrap().is_empty());
        let b = bundle_of("b.example");
        let proto = node::Bundle {
            trust_domain: "b.example".into(),
            x509_authorities: b.x509_authorities.clone(),
            jwt_authorities: b
                .jwt_authorities
                .iter()
                .map(|a| node::JwtAuthority {
                    key_id: a.key_id.clone(),
                    public_key: a.public_key_der.clone(),
                    expires_at: 0,
                })
                .collect(),
            sequence: b.sequence,
            refresh_hint_seconds: 300,
        };
        let own = TrustDomain::new("a.example").unwrap();
        let set = from_proto(vec![proto.clone()], &own).unwrap();
        save(&path, &set).unwrap();
        let loaded = load(&path).unwrap();
        assert!(same(&set, &loaded));
        assert_eq!(
            loaded[&TrustDomain::new("b.example").unwrap()].x509_authorities,
            b.x509_authorities
        );
        let err =
            from_proto(vec![proto.clone()], &TrustDomain::new("b.example").unwrap()).unwrap_err();
        assert!(err.to_string().contains("own trust domain"), "{err}");
        let err = from_proto(vec![proto.clone(), proto], &own).unwrap_err();
        assert!(err.to_string().contains("two federated bundles"), "{err}");
    }
}
