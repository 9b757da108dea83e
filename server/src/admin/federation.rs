//! `ListFederatedBundles`: the federated trust domains, their bundles and
//! how their refreshes go (`hallmark-server bundle list`).

use tonic::Status;

use hallmark_ca::id::TrustDomain;
use hallmark_proto::admin::{FederatedBundle, ListFederatedBundlesResponse};

use crate::convert::unix_i64;
use crate::federation::{Federation, RelationStatus};

/// Every relationship, or only `wanted` (`example.org` or
/// `spiffe://example.org`; `NotFound` when it is not federated).
pub(super) fn list(
    federation: &Federation,
    wanted: &str,
) -> Result<(ListFederatedBundlesResponse, String), Status> {
    let filter = if wanted.is_empty() {
        None
    } else {
        let text = wanted.strip_prefix("spiffe://").unwrap_or(wanted);
        Some(TrustDomain::new(text).map_err(|e| {
            Status::invalid_argument(format!("{wanted:?} is not a trust domain: {e}"))
        })?)
    };
    let bundles: Vec<FederatedBundle> = federation
        .status()
        .into_iter()
        .filter(|s| {
            filter
                .as_ref()
                .is_none_or(|td| *td == s.config.trust_domain)
        })
        .map(to_proto)
        .collect();
    if let (Some(td), true) = (&filter, bundles.is_empty()) {
        return Err(Status::not_found(format!(
            "{td} is not a federated trust domain: add it under [[federation.trust_domains]] in server.toml"
        )));
    }
    let summary = format!("{} federated trust domains", bundles.len());
    Ok((ListFederatedBundlesResponse { bundles }, summary))
}

fn to_proto(status: RelationStatus) -> FederatedBundle {
    let time = |t: Option<std::time::SystemTime>| t.map_or(0, unix_i64);
    let (present, jwks, pem, sequence, hint, source) = match &status.bundle {
        Some((bundle, source)) => (
            true,
            bundle.to_jwks(),
            bundle.to_pem(),
            bundle.sequence,
            i64::try_from(bundle.refresh_hint.as_secs()).unwrap_or(i64::MAX),
            source.as_str().to_owned(),
        ),
        None => (false, String::new(), String::new(), 0, 0, String::new()),
    };
    FederatedBundle {
        trust_domain: status.config.trust_domain.as_str().to_owned(),
        bundle_endpoint_url: status.config.url.as_str().to_owned(),
        profile: status.config.profile().as_str().to_owned(),
        endpoint_spiffe_id: status
            .config
            .endpoint_id()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        present,
        jwks,
        pem,
        sequence,
        refresh_hint_seconds: hint,
        source,
        last_success: time(status.last_success),
        last_attempt: time(status.last_attempt),
        next_refresh: time(status.next_refresh),
        last_error: status.last_error.unwrap_or_default(),
    }
}
