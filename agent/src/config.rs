//! `agent.toml`: the raw file format and the validated settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hallmark_ca::clock::{Clock, SystemClock};
use hallmark_ca::id::{SpiffeId, TrustDomain};
use serde::Deserialize;

/// Default data directory (node SVID, key, last bundle).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hallmark/agent";
/// Default Workload API socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/hallmark/agent/public/api.sock";

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
    /// Time (tests pass a manual clock).
    pub clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:8081\"\n";

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
}
