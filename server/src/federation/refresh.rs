//! The refresh loop of each federated trust domain.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use hallmark_ca::bundle::{Bundle, DEFAULT_REFRESH_HINT};
use hallmark_ca::id::TrustDomain;

use super::client::{FetchError, Verify, fetch};
use super::config::{EndpointAuth, FederatedTrustDomain, REFRESH_CEILING};
use super::{FederatedBundleRecord, Federation, Source};
use crate::events::SecurityEvent;
use crate::server::shutdown_signalled;

/// The least floor honoured (tests set 200 ms; the file cannot set it).
const MIN_REFRESH_FLOOR: Duration = Duration::from_millis(100);

/// Why a refresh did not bring a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RefreshError {
    /// The fetch failed (connection, TLS, HTTP).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The document is not a usable bundle of the trust domain.
    #[error("the endpoint served an unusable bundle: {0}")]
    Bundle(#[from] hallmark_ca::bundle::BundleError),
    /// https_spiffe: no bundle of the endpoint's trust domain is known yet.
    #[error("no bundle of {0} is known yet to authenticate the endpoint's X509-SVID with")]
    NoEndpointBundle(TrustDomain),
    /// The bundle could not be audited or stored: it is not used.
    #[error("the new bundle could not be recorded: {0}")]
    Record(String),
}

impl Federation {
    /// Runs one refresh task per federated trust domain until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let tasks: Vec<_> = self
            .settings
            .trust_domains
            .keys()
            .cloned()
            .map(|td| tokio::spawn(self.clone().run_one(td, shutdown.clone())))
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    async fn run_one(self: Arc<Self>, td: TrustDomain, mut shutdown: watch::Receiver<bool>) {
        let Some(wake) = self.wake.get(&td).cloned() else {
            return;
        };
        loop {
            let delay = tokio::select! {
                delay = self.refresh(&td) => delay,
                () = shutdown_signalled(&mut shutdown) => return,
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wake.notified() => {}
                () = shutdown_signalled(&mut shutdown) => return,
            }
        }
    }

    /// One refresh of `td`: fetch, check, record and publish a change.
    /// Returns how long to wait before the next.
    pub(crate) async fn refresh(&self, td: &TrustDomain) -> Duration {
        let Some(config) = self.settings.trust_domains.get(td) else {
            return REFRESH_CEILING;
        };
        let now = self.clock.now();
        let outcome = self.fetch_checked(config).await;
        let outcome = match outcome {
            Ok(bundle) => self.accept(config, bundle).await,
            Err(e) => Err(e),
        };
        let Some((delay, audit)) = self.note_outcome(td, config, now, outcome) else {
            return REFRESH_CEILING;
        };
        if let Some(reason) = audit {
            let recorded = self.events.record(SecurityEvent::FederatedBundleRefused {
                trust_domain: td.as_str().to_owned(),
                endpoint: config.url.as_str().to_owned(),
                reason,
            });
            if let Err(error) = recorded.await {
                tracing::error!(trust_domain = %td, %error, "refused federated bundle not audited");
            }
        }
        delay
    }

    /// Records the outcome of a refresh of `td` (publishing a new bundle);
    /// returns the delay until the next one and the reason to audit, if
    /// any (`None`: `td` is unknown).
    fn note_outcome(
        &self,
        td: &TrustDomain,
        config: &FederatedTrustDomain,
        now: std::time::SystemTime,
        outcome: Result<Option<Bundle>, RefreshError>,
    ) -> Option<(Duration, Option<String>)> {
        let mut relations = self
            .relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let relation = relations.get_mut(td)?;
        relation.last_attempt = Some(now);
        let mut changed = false;
        let audit = match outcome {
            Ok(update) => {
                relation.last_success = Some(now);
                relation.last_error = None;
                relation.failures = 0;
                relation.audited_error = None;
                if let Some(bundle) = update {
                    relation.bundle = Some((Arc::new(bundle), Source::Endpoint));
                    changed = true;
                }
                None
            }
            Err(error) => {
                let reason = error.to_string();
                relation.failures = relation.failures.saturating_add(1);
                tracing::warn!(
                    trust_domain = %td,
                    endpoint = %config.url,
                    %reason,
                    kept = relation.bundle.as_ref().map(|(b, s)| format!("sequence {} ({})", b.sequence, s.as_str())),
                    "federated bundle refresh failed; the last good bundle is kept"
                );
                let audit = (relation.audited_error.as_deref() != Some(reason.as_str()))
                    .then(|| reason.clone());
                if audit.is_some() {
                    relation.audited_error = Some(reason.clone());
                }
                relation.last_error = Some(reason);
                audit
            }
        };
        // The bundle's hint, within the floor and ceiling; after failures,
        // a backoff from the floor up to that interval. (The floor is kept
        // within 100 ms and the ceiling, whatever a caller set.)
        let floor = self
            .settings
            .refresh_floor
            .max(MIN_REFRESH_FLOOR)
            .min(REFRESH_CEILING);
        let interval = relation
            .bundle
            .as_ref()
            .map_or(DEFAULT_REFRESH_HINT, |(b, _)| b.refresh_hint)
            .clamp(floor, REFRESH_CEILING);
        let delay = match relation.failures {
            0 => interval,
            n => floor
                .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
                .min(interval),
        };
        relation.next_refresh = Some(now + delay);
        if changed {
            self.publish(&relations);
        }
        Some((delay, audit))
    }

    /// Fetches and checks the bundle of `config`'s trust domain.
    async fn fetch_checked(&self, config: &FederatedTrustDomain) -> Result<Bundle, RefreshError> {
        let verify = match &config.auth {
            EndpointAuth::Web { roots, .. } => Verify::Web(roots.clone()),
            EndpointAuth::Spiffe { endpoint_id } => {
                let endpoint_td = endpoint_id.trust_domain();
                let bundle = if endpoint_td == self.own {
                    Some(self.authority.bundle())
                } else {
                    self.bundles
                        .borrow()
                        .get(&endpoint_td)
                        .map(|b| (**b).clone())
                };
                let bundle = bundle.ok_or(RefreshError::NoEndpointBundle(endpoint_td))?;
                Verify::Spiffe {
                    id: endpoint_id.clone(),
                    bundle,
                }
            }
        };
        let body = fetch(&config.url, &verify, self.clock.clone()).await?;
        let bundle = Bundle::from_jwks(config.trust_domain.clone(), &body)?;
        bundle.check_trust_domain()?;
        Ok(bundle)
    }

    /// Records a fetched bundle if it differs from the one in force:
    /// audited first, then stored; `Ok(Some)` to publish it.
    async fn accept(
        &self,
        config: &FederatedTrustDomain,
        bundle: Bundle,
    ) -> Result<Option<Bundle>, RefreshError> {
        let td = &config.trust_domain;
        let current = {
            let relations = self
                .relations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            relations.get(td).and_then(|r| r.bundle.clone())
        };
        if let Some((current, source)) = &current {
            if current.same_content(&bundle) {
                if *source != Source::Bootstrap {
                    return Ok(None);
                }
            } else if bundle.sequence < current.sequence {
                tracing::warn!(
                    trust_domain = %td,
                    was = current.sequence,
                    now = bundle.sequence,
                    "the federated bundle's spiffe_sequence went backwards; using the bundle the endpoint serves"
                );
            }
        }
        let document = bundle.to_jwks();
        self.events
            .record(SecurityEvent::FederatedBundleUpdated {
                trust_domain: td.as_str().to_owned(),
                endpoint: config.url.as_str().to_owned(),
                sequence: bundle.sequence,
                x509_authorities: bundle.x509_authorities.len() as u64,
                jwt_key_ids: bundle
                    .jwt_authorities
                    .iter()
                    .map(|a| a.key_id.clone())
                    .collect(),
                sha256: hex::encode(Sha256::digest(document.as_bytes())),
            })
            .await
            .map_err(|e| RefreshError::Record(e.to_string()))?;
        self.store
            .put_federated_bundle(&FederatedBundleRecord {
                trust_domain: td.as_str().to_owned(),
                endpoint_url: config.url.as_str().to_owned(),
                bundle: document,
                fetched_at: self.now_secs(),
            })
            .map_err(|e| RefreshError::Record(e.to_string()))?;
        tracing::info!(
            trust_domain = %td,
            sequence = bundle.sequence,
            x509_authorities = bundle.x509_authorities.len(),
            jwt_authorities = bundle.jwt_authorities.len(),
            "federated bundle updated"
        );
        Ok(Some(bundle))
    }
}
