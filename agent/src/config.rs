//! `agent.toml`: the raw file format and the validated settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use hallmark_attestors::tree::TreeLimits;
use hallmark_attestors::workload::{
    DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_WINDOW, DEFAULT_CACHE_ENTRIES, DEFAULT_ENTRY_COST,
    WorkloadAttestors,
};
use hallmark_ca::clock::{Clock, SystemClock};
use hallmark_ca::id::{SpiffeId, TrustDomain};
use serde::Deserialize;

/// Default data directory (node SVID, key, last bundle).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hallmark/agent";
/// Default Workload API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/hallmark/agent/public/api.sock";
/// Default `[workload] max_walks_per_uid`: measurements of one uid at once.
pub const DEFAULT_MAX_WALKS_PER_UID: usize = 2;
/// Default `[workload] max_walks`: measurements at once, all uids together.
pub const DEFAULT_MAX_WALKS: usize = 4;
/// Default `[workload] walk_wait`: how long a request over a walk limit
/// waits for a place before `ResourceExhausted`.
pub const DEFAULT_WALK_WAIT: Duration = Duration::from_secs(5);

/// Errors from reading or validating `agent.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown or mistyped key (the message names it).
    #[error("invalid config{}: {source}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// The TOML error.
        #[source]
        source: toml::de::Error,
    },
    /// A well-typed value that is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key, dotted.
        key: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// The raw contents of `agent.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The trust domain, e.g. `example.org`.
    pub trust_domain: Option<String>,
    /// The issuer's node API, `host:port`.
    pub server_address: Option<String>,
    /// The issuer's SPIFFE ID (default `spiffe://<td>/hallmark/server`).
    pub server_spiffe_id: Option<String>,
    /// Where the node SVID, its key and the last bundle are kept.
    pub data_dir: Option<PathBuf>,
    /// The Workload API socket path.
    pub socket_path: Option<PathBuf>,
    /// A join token for the first attestation (the flag wins).
    pub join_token: Option<String>,
    /// Longest wait between reconnection attempts (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub sync_backoff_max: Option<Duration>,
    /// Log level filter.
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    pub log_format: Option<String>,
    /// How the agent trusts the issuer before its first attestation.
    pub bootstrap: Option<BootstrapSection>,
    /// x509pop node attestation.
    pub x509pop: Option<X509PopSection>,
    /// Workload attestation: attestors in use and hashing limits.
    pub workload: Option<WorkloadSection>,
    /// Prometheus metrics and health endpoints.
    pub metrics: Option<MetricsSection>,
    /// Envoy's secret discovery service on the Workload API socket.
    pub sds: Option<SdsSection>,
}

/// `[sds]`: the resource names Envoy asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdsSection {
    /// The name of the workload's (first) SVID (default `default`, as
    /// Istio asks).
    pub default_svid_name: Option<String>,
    /// The name of the trust domain's bundle (default `ROOTCA`, as Istio
    /// asks).
    pub default_bundle_name: Option<String>,
}

/// Validated `[sds]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSettings {
    /// The name the first SVID is served under.
    pub default_svid_name: String,
    /// The name the trust domain's bundle is served under.
    pub default_bundle_name: String,
}

impl Default for SdsSettings {
    fn default() -> Self {
        Self {
            default_svid_name: "default".to_owned(),
            default_bundle_name: "ROOTCA".to_owned(),
        }
    }
}

impl SdsSettings {
    fn resolve(section: SdsSection) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let check = |key: &'static str, value: Option<String>, default: String| {
            let value = value.unwrap_or(default);
            if value.is_empty() || value.starts_with("spiffe://") {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "{value:?}: a name of your choice, neither empty nor a SPIFFE ID (SPIFFE IDs already name each SVID and bundle)"
                    ),
                });
            }
            Ok(value)
        };
        let settings = Self {
            default_svid_name: check(
                "sds.default_svid_name",
                section.default_svid_name,
                defaults.default_svid_name,
            )?,
            default_bundle_name: check(
                "sds.default_bundle_name",
                section.default_bundle_name,
                defaults.default_bundle_name,
            )?,
        };
        if settings.default_svid_name == settings.default_bundle_name {
            return Err(ConfigError::Invalid {
                key: "sds.default_bundle_name",
                reason: format!(
                    "{:?} is also sds.default_svid_name: give the SVID and the bundle different names",
                    settings.default_bundle_name
                ),
            });
        }
        Ok(settings)
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:port` to serve `/metrics`, `/live` and `/ready` on (HTTP, no
    /// authentication: keep it on loopback or a node-local address).
    /// Without it the endpoint is off.
    pub address: Option<String>,
}

/// `[workload]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// Workload attestors by name (`unix` is required).
    pub attestors: Option<Vec<String>>,
    /// Largest single file the agent hashes.
    pub max_file_size: Option<ByteSize>,
    /// Largest model or application tree, in bytes.
    pub max_tree_size: Option<ByteSize>,
    /// Most entries in a model or application tree.
    pub max_tree_entries: Option<usize>,
    /// Bytes the agent hashes for one uid's processes per window (cache
    /// hits are free).
    pub hash_budget: Option<ByteSize>,
    /// How long the budget takes to refill completely.
    #[serde(default, with = "humantime_serde")]
    pub hash_budget_window: Option<Duration>,
    /// What each file missing from the cache, and each directory and
    /// symlink of a walk, costs against the budget, in bytes.
    pub hash_entry_cost: Option<ByteSize>,
    /// Most file digests cached, shared fairly between uids.
    pub cache_entries: Option<usize>,
    /// Most measurements of one uid at once.
    pub max_walks_per_uid: Option<usize>,
    /// Most measurements at once, all uids together.
    pub max_walks: Option<usize>,
    /// How long a request over a walk limit waits for a place.
    #[serde(default, with = "humantime_serde")]
    pub walk_wait: Option<Duration>,
    /// Most Workload API connections one uid may hold open at once; more
    /// are closed as they are accepted.
    pub max_connections_per_uid: Option<usize>,
    /// Most open Workload API streams (`FetchX509SVID`, the bundle and
    /// revocation watches) one uid may hold at once.
    pub max_streams_per_uid: Option<usize>,
    /// A connection with no request in flight and no open stream for this
    /// long is closed.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// How long a new connection has to echo the agent's HTTP/2 PING
    /// before a request on it that needs a measurement is refused.
    #[serde(default, with = "humantime_serde")]
    pub challenge_timeout: Option<Duration>,
}

/// `[bootstrap]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSection {
    /// PEM file with the issuer's trust bundle.
    pub bundle_path: Option<PathBuf>,
    /// Trust whatever issuer answers on the first connection (logged as a warning).
    #[serde(default)]
    pub insecure_bootstrap: bool,
}

/// `[x509pop]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509PopSection {
    /// The node certificate (PEM, intermediates after it).
    pub cert_path: PathBuf,
    /// Its PKCS#8 private key (PEM).
    pub key_path: PathBuf,
}

/// How the agent authenticates the issuer before it has a bundle of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bootstrap {
    /// Trust the bundle in this PEM file.
    Bundle(PathBuf),
    /// Trust the first issuer that answers (never use in production).
    Insecure,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The issuer's address.
    pub server_address: String,
    /// The issuer's SPIFFE ID.
    pub server_id: SpiffeId,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The Workload API socket path.
    pub socket_path: PathBuf,
    /// Bootstrap trust.
    pub bootstrap: Bootstrap,
    /// Join token for the first attestation.
    pub join_token: Option<String>,
    /// x509pop files, when configured.
    pub x509pop: Option<X509PopSection>,
    /// Longest reconnection backoff.
    pub sync_backoff_max: Duration,
    /// Workload attestation.
    pub workload: WorkloadSettings,
    /// SDS resource names.
    pub sds: SdsSettings,
    /// Where to serve metrics and health (`None`: off).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Time (tests pass a manual clock).
    pub clock: Arc<dyn Clock>,
}

/// Validated `[workload]`.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    /// The attestors in use.
    pub attestors: WorkloadAttestors,
    /// Per-file and per-tree hashing limits.
    pub limits: TreeLimits,
    /// Bytes hashed per uid per window.
    pub hash_budget: u64,
    /// The budget's refill window.
    pub hash_budget_window: Duration,
    /// Budget cost of an entry the cache does not answer, in bytes.
    pub hash_entry_cost: u64,
    /// Most file digests cached.
    pub cache_entries: usize,
    /// Most measurements of one uid at once.
    pub max_walks_per_uid: usize,
    /// Most measurements at once.
    pub max_walks: usize,
    /// How long a request over a walk limit waits.
    pub walk_wait: Duration,
    /// Open Workload API connections per uid.
    pub max_connections_per_uid: usize,
    /// Open Workload API streams per uid.
    pub max_streams_per_uid: usize,
    /// How long a connection may sit with nothing in flight.
    pub idle_timeout: Duration,
    /// How long a new connection has to echo the agent's PING.
    pub challenge_timeout: Duration,
}

/// Default `workload.max_connections_per_uid`.
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: usize = 64;
/// Default `workload.max_streams_per_uid`.
pub const DEFAULT_MAX_STREAMS_PER_UID: usize = 128;
/// Default `workload.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `workload.challenge_timeout`: far more than any client needs to
/// answer a PING on a loaded host.
pub const DEFAULT_CHALLENGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for WorkloadSettings {
    fn default() -> Self {
        Self {
            attestors: WorkloadAttestors::default(),
            limits: TreeLimits::default(),
            hash_budget: DEFAULT_BUDGET_BYTES,
            hash_budget_window: DEFAULT_BUDGET_WINDOW,
            hash_entry_cost: DEFAULT_ENTRY_COST,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            max_walks_per_uid: DEFAULT_MAX_WALKS_PER_UID,
            max_walks: DEFAULT_MAX_WALKS,
            walk_wait: DEFAULT_WALK_WAIT,
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
            max_streams_per_uid: DEFAULT_MAX_STREAMS_PER_UID,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            challenge_timeout: DEFAULT_CHALLENGE_TIMEOUT,
        }
    }
}

impl WorkloadSettings {
    fn resolve(section: WorkloadSection) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let attestors = match section.attestors {
            None => defaults.attestors,
            Some(names) => {
                WorkloadAttestors::from_names(&names).map_err(|e| ConfigError::Invalid {
                    key: "workload.attestors",
                    reason: e.to_string(),
                })?
            }
        };
        let limits = TreeLimits {
            max_file_size: section
                .max_file_size
                .map_or(defaults.limits.max_file_size, |b| b.as_u64()),
            max_total_bytes: section
                .max_tree_size
                .map_or(defaults.limits.max_total_bytes, |b| b.as_u64()),
            max_entries: section
                .max_tree_entries
                .unwrap_or(defaults.limits.max_entries),
        };
        let hash_budget = section
            .hash_budget
            .map_or(defaults.hash_budget, |b| b.as_u64());
        let hash_budget_window = section
            .hash_budget_window
            .unwrap_or(defaults.hash_budget_window);
        if limits.max_file_size == 0 || limits.max_total_bytes == 0 || limits.max_entries == 0 {
            return Err(ConfigError::Invalid {
                key: "workload",
                reason: "max_file_size, max_tree_size and max_tree_entries must be above zero"
                    .into(),
            });
        }
        let hash_entry_cost = section
            .hash_entry_cost
            .map_or(defaults.hash_entry_cost, |b| b.as_u64());
        if hash_budget < limits.max_file_size.saturating_add(hash_entry_cost) {
            return Err(ConfigError::Invalid {
                key: "workload.hash_budget",
                reason: format!(
                    "{} is below max_file_size ({}) plus hash_entry_cost ({}): a file the agent accepts could never be hashed; raise hash_budget or lower max_file_size",
                    ByteSize(hash_budget).display().iec(),
                    ByteSize(limits.max_file_size).display().iec(),
                    ByteSize(hash_entry_cost).display().iec()
                ),
            });
        }
        let cache_entries = section.cache_entries.unwrap_or(defaults.cache_entries);
        let max_walks_per_uid = section
            .max_walks_per_uid
            .unwrap_or(defaults.max_walks_per_uid);
        let max_walks = section.max_walks.unwrap_or(defaults.max_walks);
        for (key, value) in [
            ("workload.cache_entries", cache_entries),
            ("workload.max_walks_per_uid", max_walks_per_uid),
            ("workload.max_walks", max_walks),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be above zero".into(),
                });
            }
        }
        if max_walks_per_uid > max_walks {
            return Err(ConfigError::Invalid {
                key: "workload.max_walks_per_uid",
                reason: format!(
                    "{max_walks_per_uid} is above max_walks ({max_walks}): one uid could never use them all; lower it or raise max_walks"
                ),
            });
        }
        if hash_budget_window.is_zero() {
            return Err(ConfigError::Invalid {
                key: "workload.hash_budget_window",
                reason: "must be above zero (e.g. \"1h\"): a zero window would disable the budget"
                    .into(),
            });
        }
        let max_connections_per_uid = section
            .max_connections_per_uid
            .unwrap_or(defaults.max_connections_per_uid);
        let max_streams_per_uid = section
            .max_streams_per_uid
            .unwrap_or(defaults.max_streams_per_uid);
        if max_connections_per_uid == 0 || max_streams_per_uid == 0 {
            return Err(ConfigError::Invalid {
                key: "workload",
                reason: "max_connections_per_uid and max_streams_per_uid must be above zero: a zero limit would refuse every workload".into(),
            });
        }
        let idle_timeout = section.idle_timeout.unwrap_or(defaults.idle_timeout);
        if idle_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "workload.idle_timeout",
                reason: "must be at least 100ms (e.g. \"60s\")".into(),
            });
        }
        let challenge_timeout = section
            .challenge_timeout
            .unwrap_or(defaults.challenge_timeout);
        if challenge_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "workload.challenge_timeout",
                reason: "must be at least 100ms (e.g. \"10s\")".into(),
            });
        }
        Ok(Self {
            attestors,
            limits,
            hash_budget,
            hash_budget_window,
            hash_entry_cost,
            cache_entries,
            max_walks_per_uid,
            max_walks,
            walk_wait: section.walk_wait.unwrap_or(defaults.walk_wait),
            max_connections_per_uid,
            max_streams_per_uid,
            idle_timeout,
            challenge_timeout,
        })
    }
}

impl AgentConfig {
    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: None, source })
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: Some(path.to_owned()),
            source,
        })
    }
}

impl AgentSettings {
    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::resolve(AgentConfig::from_toml_str(text)?)
    }

    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::resolve(AgentConfig::from_file(path)?)
    }

    /// Validates a parsed config over the defaults.
    pub fn resolve(file: AgentConfig) -> Result<Self, ConfigError> {
        let td_text = file.trust_domain.ok_or(ConfigError::Invalid {
            key: "trust_domain",
            reason: "missing: set it to the issuer's trust domain, e.g. \"example.org\"".into(),
        })?;
        let trust_domain = TrustDomain::new(&td_text).map_err(|e| ConfigError::Invalid {
            key: "trust_domain",
            reason: format!("{td_text:?} is not a valid trust domain: {e}"),
        })?;
        let server_address = file.server_address.ok_or(ConfigError::Invalid {
            key: "server_address",
            reason: "missing: set it to the issuer's node API, e.g. \"127.0.0.1:8081\"".into(),
        })?;
        if server_address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(ConfigError::Invalid {
                key: "server_address",
                reason: format!("{server_address:?} is not host:port"),
            });
        }
        let server_id = match file.server_spiffe_id {
            None => SpiffeId::new(&trust_domain, "/hallmark/server").map_err(|e| {
                ConfigError::Invalid {
                    key: "trust_domain",
                    reason: e.to_string(),
                }
            })?,
            Some(text) => {
                let id = SpiffeId::parse(&text).map_err(|e| ConfigError::Invalid {
                    key: "server_spiffe_id",
                    reason: format!("{text:?} is not a SPIFFE ID: {e}"),
                })?;
                if !id.is_member_of(&trust_domain) {
                    return Err(ConfigError::Invalid {
                        key: "server_spiffe_id",
                        reason: format!("{id} is not in trust domain {trust_domain}"),
                    });
                }
                id
            }
        };
        let bootstrap = match file.bootstrap {
            Some(BootstrapSection {
                bundle_path: Some(path),
                insecure_bootstrap: false,
            }) => Bootstrap::Bundle(path),
            Some(BootstrapSection {
                bundle_path: None,
                insecure_bootstrap: true,
            }) => Bootstrap::Insecure,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "bootstrap",
                    reason: "set exactly one of bootstrap.bundle_path or bootstrap.insecure_bootstrap = true".into(),
                });
            }
        };
        let sync_backoff_max = file.sync_backoff_max.unwrap_or(Duration::from_secs(30));
        if sync_backoff_max < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "sync_backoff_max",
                reason: "must be at least 100ms".into(),
            });
        }
        let metrics_address = match file.metrics.and_then(|m| m.address) {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| ConfigError::Invalid {
                key: "metrics.address",
                reason: format!("{text:?} is not an IP:port address, e.g. \"127.0.0.1:9091\""),
            })?),
        };
        Ok(Self {
            trust_domain,
            server_address,
            server_id,
            data_dir: file
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            socket_path: file
                .socket_path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH)),
            bootstrap,
            join_token: file.join_token,
            x509pop: file.x509pop,
            sync_backoff_max,
            workload: WorkloadSettings::resolve(file.workload.unwrap_or_default())?,
            sds: SdsSettings::resolve(file.sds.unwrap_or_default())?,
            metrics_address,
            clock: Arc::new(SystemClock),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:8081\"\n";

    #[test]
    fn metrics_are_off_unless_configured() {
        let off = AgentSettings::from_toml_str(&format!(
            "{BASE}[bootstrap]\ninsecure_bootstrap = true\n"
        ))
        .unwrap();
        assert_eq!(off.metrics_address, None);
        let on = AgentSettings::from_toml_str(&format!(
            "{BASE}[bootstrap]\ninsecure_bootstrap = true\n[metrics]\naddress = \"127.0.0.1:9091\"\n"
        ))
        .unwrap();
        assert_eq!(on.metrics_address, Some("127.0.0.1:9091".parse().unwrap()));
        let err = AgentSettings::from_toml_str(&format!(
            "{BASE}[bootstrap]\ninsecure_bootstrap = true\n[metrics]\naddress = \"9091\"\n"
        ))
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "metrics.address",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn example_config_parses() {
        let settings = AgentSettings::from_toml_str(include_str!("../../conf/agent.toml")).unwrap();
        assert_eq!(settings.trust_domain.as_str(), "example.org");
        assert_eq!(
            settings.server_id.as_str(),
            "spiffe://example.org/hallmark/server"
        );
        assert!(matches!(settings.bootstrap, Bootstrap::Bundle(_)));
    }

    #[test]
    fn challenge_timeout_has_a_floor_and_a_default() {
        let with = |value: &str| {
            AgentSettings::from_toml_str(&format!(
                "{BASE}[bootstrap]\ninsecure_bootstrap = true\n[workload]\n{value}"
            ))
        };
        let err = with("challenge_timeout = \"50ms\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "workload.challenge_timeout",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("at least 100ms"), "{err}");
        let two = with("challenge_timeout = \"2s\"\n").unwrap();
        assert_eq!(two.workload.challenge_timeout, Duration::from_secs(2));
        let default = with("").unwrap();
        assert_eq!(
            default.workload.challenge_timeout,
            DEFAULT_CHALLENGE_TIMEOUT
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            AgentSettings::from_toml_str(&format!("{BASE}sever_address = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("sever_address"), "{err}");
    }

    #[test]
    fn bootstrap_needs_exactly_one_option() {
        for tail in [
            "",
            "[bootstrap]\n",
            "[bootstrap]\nbundle_path = \"/b.pem\"\ninsecure_bootstrap = true\n",
        ] {
            let err = AgentSettings::from_toml_str(&format!("{BASE}{tail}")).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        key: "bootstrap",
                        ..
                    }
                ),
                "{tail}: {err}"
            );
        }
        let ok = AgentSettings::from_toml_str(&format!(
            "{BASE}[bootstrap]\ninsecure_bootstrap = true\n"
        ))
        .unwrap();
        assert_eq!(ok.bootstrap, Bootstrap::Insecure);
    }

    #[test]
    fn bad_values_are_named() {
        let err = AgentSettings::from_toml_str("trust_domain = \"example.org\"\nserver_address = \"nowhere\"\n[bootstrap]\ninsecure_bootstrap = true\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "server_address",
                    ..
                }
            ),
            "{err}"
        );
        let err = AgentSettings::from_toml_str(&format!("{BASE}server_spiffe_id = \"spiffe://other.org/x\"\n[bootstrap]\ninsecure_bootstrap = true\n")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "server_spiffe_id",
                    ..
                }
            ),
            "{err}"
        );
        let err = AgentSettings::from_toml_str(&format!(
            "{BASE}sync_backoff_max = \"often\"\n[bootstrap]\ninsecure_bootstrap = true\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("sync_backoff_max"), "{err}");
    }

    #[test]
    fn sds_names_default_to_istios_and_refuse_ids_and_clashes() {
        let boot = "[bootstrap]\ninsecure_bootstrap = true\n";
        let plain = AgentSettings::from_toml_str(&format!("{BASE}{boot}")).unwrap();
        assert_eq!(plain.sds, SdsSettings::default());
        assert_eq!(
            (
                plain.sds.default_svid_name.as_str(),
                plain.sds.default_bundle_name.as_str()
            ),
            ("default", "ROOTCA")
        );
        let set = AgentSettings::from_toml_str(&format!(
            "{BASE}{boot}[sds]\ndefault_svid_name = \"cert\"\ndefault_bundle_name = \"ca\"\n"
        ))
        .unwrap();
        assert_eq!(
            (
                set.sds.default_svid_name.as_str(),
                set.sds.default_bundle_name.as_str()
            ),
            ("cert", "ca")
        );
        for (body, key, says) in [
            (
                "default_svid_name = \"\"",
                "sds.default_svid_name",
                "neither empty nor a SPIFFE ID",
            ),
            (
                "default_bundle_name = \"spiffe://example.org\"",
                "sds.default_bundle_name",
                "SPIFFE IDs already name",
            ),
            (
                "default_bundle_name = \"default\"",
                "sds.default_bundle_name",
                "different names",
            ),
        ] {
            let err =
                AgentSettings::from_toml_str(&format!("{BASE}{boot}[sds]\n{body}\n")).unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, reason } => {
                    assert_eq!(*k, key);
                    assert!(reason.contains(says), "{reason}");
                }
                other => panic!("{other}"),
            }
        }
        let err =
            AgentSettings::from_toml_str(&format!("{BASE}{boot}[sds]\nnames = 1\n")).unwrap_err();
        assert!(err.to_string().contains("names"), "{err}");
    }

    #[test]
    fn workload_section_parses_sizes_and_refuses_bad_catalogs_and_budgets() {
        let insecure = "[bootstrap]\ninsecure_bootstrap = true\n";
        let ok = AgentSettings::from_toml_str(&format!(
            "{BASE}{insecure}[workload]\nattestors = [\"unix\", \"model\"]\nmax_file_size = \"2 GiB\"\nhash_budget = \"8 GiB\"\nhash_budget_window = \"10m\"\n"
        ))
        .unwrap();
        assert_eq!(ok.workload.limits.max_file_size, 2 << 30);
        assert_eq!(ok.workload.hash_budget, 8 << 30);
        assert_eq!(ok.workload.hash_budget_window, Duration::from_secs(600));
        assert_eq!(ok.workload.attestors.kinds().len(), 2);
        for (tail, key, needle) in [
            (
                "attestors = [\"model\"]",
                "workload.attestors",
                "cannot be left out",
            ),
            (
                "attestors = [\"unix\", \"k8s\"]",
                "workload.attestors",
                "unknown workload attestor \"k8s\"",
            ),
            (
                "max_file_size = \"4 GiB\"\nhash_budget = \"1 GiB\"",
                "workload.hash_budget",
                "below max_file_size",
            ),
            (
                "hash_budget_window = \"0s\"",
                "workload.hash_budget_window",
                "above zero",
            ),
        ] {
            let err =
                AgentSettings::from_toml_str(&format!("{BASE}{insecure}[workload]\n{tail}\n"))
                    .unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, reason } => {
                    assert_eq!(*k, key, "{tail}");
                    assert!(reason.contains(needle), "{tail}: {reason}");
                }
                other => panic!("{tail}: {other}"),
            }
        }
        let err = AgentSettings::from_toml_str(&format!(
            "{BASE}{insecure}[workload]\nmax_file_size = \"lots\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("max_file_size"), "{err}");
    }

    #[test]
    fn walk_limits_cache_size_and_entry_cost_parse_with_defaults_and_refuse_nonsense() {
        let insecure = "[bootstrap]\ninsecure_bootstrap = true\n";
        let defaults = AgentSettings::from_toml_str(&format!("{BASE}{insecure}")).unwrap();
        assert_eq!(defaults.workload.hash_entry_cost, 4096);
        assert_eq!(defaults.workload.cache_entries, 100_000);
        assert_eq!(
            (
                defaults.workload.max_walks_per_uid,
                defaults.workload.max_walks
            ),
            (2, 4)
        );
        assert_eq!(defaults.workload.walk_wait, Duration::from_secs(5));
        let set = AgentSettings::from_toml_str(&format!(
            "{BASE}{insecure}[workload]\nhash_entry_cost = \"16 KiB\"\ncache_entries = 500\nmax_walks_per_uid = 1\nmax_walks = 8\nwalk_wait = \"0s\"\n"
        ))
        .unwrap();
        assert_eq!(set.workload.hash_entry_cost, 16 << 10);
        assert_eq!(set.workload.cache_entries, 500);
        assert_eq!(
            (set.workload.max_walks_per_uid, set.workload.max_walks),
            (1, 8)
        );
        assert_eq!(set.workload.walk_wait, Duration::ZERO);
        for (tail, key, needle) in [
            ("cache_entries = 0", "workload.cache_entries", "above zero"),
            ("max_walks = 0", "workload.max_walks", "above zero"),
            (
                "max_walks_per_uid = 5\nmax_walks = 4",
                "workload.max_walks_per_uid",
                "above max_walks",
            ),
            (
                "max_file_size = \"1 GiB\"\nhash_budget = \"1 GiB\"",
                "workload.hash_budget",
                "plus hash_entry_cost",
            ),
        ] {
            match AgentSettings::from_toml_str(&format!("{BASE}{insecure}[workload]\n{tail}\n")) {
                Err(ConfigError::Invalid { key: k, reason }) => {
                    assert_eq!(k, key, "{tail}");
                    assert!(reason.contains(needle), "{tail}: {reason}");
                }
                other => panic!("{tail}: {other:?}"),
            }
        }
    }
}
