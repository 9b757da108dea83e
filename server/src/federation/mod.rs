//! SPIFFE Federation (the SPIFFE Federation standard): this issuer's
//! bundle endpoint, and the bundles of the federated trust domains it
//! fetches, keeps and gives its agents.
//!
//! - [`endpoint`]: serves this trust domain's bundle (`https_web` or
//!   `https_spiffe`), configured by `[federation.bundle_endpoint]`.
//! - [`Federation`]: one refresh task per `[[federation.trust_domains]]`
//!   entry. Each fetches the bundle over HTTPS ([`client`]), authenticates
//!   the endpoint per its profile, checks the bundle (well-formed, keys
//!   parse, no CA of another trust domain), and on a change audits it
//!   (`federated_bundle_updated`), stores it (so a restart starts from the
//!   last good bundle) and publishes it to every agent's `Sync` stream.
//!   A failed or refused fetch keeps the last good bundle, is logged, and
//!   is audited once per distinct reason (`federated_bundle_refused`).
//!   Refreshes follow the bundle's `spiffe_refresh_hint`, within
//!   [`FederationSettings::refresh_floor`] and [`REFRESH_CEILING`]; after a
//!   failure the retry backs off from the floor to the refresh interval.
//!
//! Bundles of different trust domains are never merged: each is kept,
//! stored and sent under its own trust domain name.
//!
//! ```
//! use hallmark_server::federation::url::EndpointUrl;
//! let url = EndpointUrl::parse("https://bundles.partner.example/bundle.json").unwrap();
//! assert_eq!((url.host(), url.port()), ("bundles.partner.example", 443));
//! assert!(EndpointUrl::parse("http://bundles.partner.example/").is_err());
//! ```

pub mod client;
mod config;
pub mod endpoint;
mod refresh;
#[cfg(test)]
mod tests;
pub mod url;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use hallmark_ca::bundle::Bundle;
use hallmark_ca::clock::Clock;
use hallmark_ca::id::TrustDomain;

pub(crate) use config::resolve;
pub use config::{
    BundleEndpointSection, BundleEndpointSettings, DEFAULT_REFRESH_FLOOR, EndpointAuth,
    EndpointTls, FederatedTrustDomain, FederationSection, FederationSettings, Profile,
    REFRESH_CEILING, TrustDomainSection,
};

use crate::authority::Authority;
use crate::convert::unix_secs;
use crate::events::{EventSink, SecurityEvent};
use crate::store::{Store, StoreError};

/// The bundles of the federated trust domains that have one, by trust domain.
pub type FederatedBundles = BTreeMap<TrustDomain, Arc<Bundle>>;

/// A federated bundle as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedBundleRecord {
    /// The trust domain name.
    pub trust_domain: String,
    /// The endpoint it was fetched from.
    pub endpoint_url: String,
    /// The bundle, SPIFFE bundle JSON.
    pub bundle: String,
    /// When it was fetched, seconds since the Unix epoch.
    pub fetched_at: u64,
}

/// Where the bundle in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fetched from the endpoint while running.
    Endpoint,
    /// The configured bootstrap bundle.
    Bootstrap,
    /// Kept in the store from before a restart.
    Store,
}

impl Source {
    /// The name in output and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Endpoint => "endpoint",
            Source::Bootstrap => "bootstrap",
            Source::Store => "store",
        }
    }
}

/// What is known of one federation relationship.
#[derive(Debug, Clone)]
pub struct RelationStatus {
    /// Its configuration.
    pub config: FederatedTrustDomain,
    /// The bundle in force, if any, and where it came from.
    pub bundle: Option<(Arc<Bundle>, Source)>,
    /// The last successful fetch.
    pub last_success: Option<SystemTime>,
    /// The last attempt.
    pub last_attempt: Option<SystemTime>,
    /// When the next refresh is due.
    pub next_refresh: Option<SystemTime>,
    /// Why the last attempt failed (`None`: it succeeded, or none yet).
    pub last_error: Option<String>,
}

/// The federated trust domains: their bundles, kept current.
#[derive(Debug)]
pub struct Federation {
    own: TrustDomain,
    settings: FederationSettings,
    authority: Arc<Authority>,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    bundles: watch::Sender<Arc<FederatedBundles>>,
    relations: Mutex<BTreeMap<TrustDomain, Relation>>,
    wake: BTreeMap<TrustDomain, Arc<Notify>>,
}

/// The mutable state of one relationship.
#[derive(Debug, Clone, Default)]
struct Relation {
    bundle: Option<(Arc<Bundle>, Source)>,
    last_success: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    next_refresh: Option<SystemTime>,
    last_error: Option<String>,
    /// Consecutive failures (for the backoff).
    failures: u32,
    /// The last failure reason audited, so a repeating failure is audited once.
    audited_error: Option<String>,
}

impl Federation {
    /// Loads the last good bundles from the store (dropping, and auditing
    /// the end of, relationships no longer configured), falling back to
    /// the bootstrap bundles. Nothing is fetched until [`Federation::run`].
    pub async fn open(
        settings: FederationSettings,
        own: TrustDomain,
        authority: Arc<Authority>,
        store: Arc<dyn Store>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Federation>, StoreError> {
        let mut stored = BTreeMap::new();
        for record in store.federated_bundles()? {
            let td = TrustDomain::new(&record.trust_domain).ok();
            match td.filter(|td| settings.trust_domains.contains_key(td)) {
                Some(td) => match Bundle::from_jwks(td.clone(), record.bundle.as_bytes()) {
                    Ok(bundle) => {
                        stored.insert(td, bundle);
                    }
                    Err(error) => {
                        tracing::warn!(trust_domain = %td, %error, "stored federated bundle unreadable: ignored");
                    }
                },
                None => {
                    store.remove_federated_bundle(&record.trust_domain)?;
                    let recorded = events.record(SecurityEvent::FederationEnded {
                        trust_domain: record.trust_domain.clone(),
                    });
                    if let Err(error) = recorded.await {
                        tracing::error!(trust_domain = %record.trust_domain, %error, "end of federation not audited");
                    }
                }
            }
        }
        let mut relations = BTreeMap::new();
        let mut wake = BTreeMap::new();
        for (td, config) in &settings.trust_domains {
            let bundle = match stored.remove(td) {
                Some(bundle) => Some((Arc::new(bundle), Source::Store)),
                None => config
                    .bootstrap
                    .clone()
                    .map(|b| (Arc::new(b), Source::Bootstrap)),
            };
            relations.insert(
                td.clone(),
                Relation {
                    bundle,
                    ..Relation::default()
                },
            );
            wake.insert(td.clone(), Arc::new(Notify::new()));
        }
        let (bundles, _) = watch::channel(Arc::new(published(&relations)));
        Ok(Arc::new(Federation {
            own,
            settings,
            authority,
            store,
            events,
            clock,
            bundles,
            relations: Mutex::new(relations),
            wake,
        }))
    }

    /// Follows the federated bundles (every agent's `Sync` does).
    pub fn subscribe(&self) -> watch::Receiver<Arc<FederatedBundles>> {
        self.bundles.subscribe()
    }

    /// The federated bundles now.
    pub fn bundles(&self) -> Arc<FederatedBundles> {
        self.bundles.borrow().clone()
    }

    /// The settings in force.
    pub fn settings(&self) -> &FederationSettings {
        &self.settings
    }

    /// Every relationship's status, ordered by trust domain.
    pub fn status(&self) -> Vec<RelationStatus> {
        let relations = self
            .relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.settings
            .trust_domains
            .iter()
            .map(|(td, config)| {
                let r = relations.get(td).cloned().unwrap_or_default();
                RelationStatus {
                    config: config.clone(),
                    bundle: r.bundle,
                    last_success: r.last_success,
                    last_attempt: r.last_attempt,
                    next_refresh: r.next_refresh,
                    last_error: r.last_error,
                }
            })
            .collect()
    }

    /// Asks the refresh task of `td` to fetch now (tests, and operators
    /// through a future `bundle refresh`). `false`: `td` is not federated.
    pub fn refresh_now(&self, td: &TrustDomain) -> bool {
        match self.wake.get(td) {
            Some(notify) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    fn publish(&self, relations: &BTreeMap<TrustDomain, Relation>) {
        self.bundles.send_replace(Arc::new(published(relations)));
    }

    fn now_secs(&self) -> u64 {
        unix_secs(self.clock.now())
    }
}

/// The bundles in force.
fn published(relations: &BTreeMap<TrustDomain, Relation>) -> FederatedBundles {
    relations
        .iter()
        .filter_map(|(td, r)| r.bundle.as_ref().map(|(b, _)| (td.clone(), b.clone())))
        .collect()
}
