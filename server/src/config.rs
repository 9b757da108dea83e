//! `server.toml`: the raw file format and the validated settings the daemon runs on.
//!
//! Precedence is defaults < file < flags: [`ServerConfig`] is what the file says
//! (every key optional except `trust_domain`), [`ServerOverrides`] is what the
//! flags say, and [`ServerSettings::resolve`] merges them and checks every value,
//! so the rest of the server only ever sees valid settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hallmark_ca::id::TrustDomain;
use hallmark_ca::manager::CaConfig;
use hallmark_ca::x509::UpstreamCa;

use crate::events::RefusalLimits;
use crate::image::{SignaturePolicy, TrustedSigners};
use crate::node::NodeLimits;
use serde::Deserialize;

/// Default node API listen address.
pub const DEFAULT_BIND_ADDRESS: &str = "127.0.0.1:8081";
/// Default admin socket path.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/hallmark/server/admin.sock";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hallmark/server";
/// Default `audit.checkpoint_interval`.
pub const DEFAULT_AUDIT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Most sources `audit.refusal_sources` may track (about 2 KiB each at
/// most, with their buckets).
pub const MAX_REFUSAL_SOURCES: usize = 1_000_000;
/// Most buckets per source `audit.refusal_reasons_per_source` allows.
pub const MAX_REFUSAL_REASONS_PER_SOURCE: usize = 64;
/// The hard ceiling on every workload SVID's lifetime, whatever the config says.
pub const HARD_MAX_SVID_TTL: Duration = Duration::from_secs(300);

/// Errors from reading or validating `server.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("invalid config{}: {source}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when the config came from one.
        path: Option<PathBuf>,
        /// The TOML error (names the key and position).
        #[source]
        source: toml::de::Error,
    },
    /// A key has a value that is well-typed but not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The offending key, dotted (`ca.max_svid_ttl`).
        key: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// The raw contents of `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The trust domain, e.g. `example.org`.
    pub trust_domain: Option<String>,
    /// Where the embedded store keeps its data.
    pub data_dir: Option<PathBuf>,
    /// Node API listen address (`host:port`).
    pub bind_address: Option<String>,
    /// Admin API Unix socket path.
    pub admin_socket: Option<PathBuf>,
    /// Log level filter (`info`, `debug`, or an `EnvFilter` directive).
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    pub log_format: Option<String>,
    /// Certificate authority settings.
    #[serde(default)]
    pub ca: CaSection,
    /// Node agent settings.
    #[serde(default)]
    pub agents: AgentsSection,
    /// Gold image registration.
    #[serde(default)]
    pub images: ImagesSection,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditSection,
    /// Prometheus metrics and health endpoints.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// OpenID Connect discovery and JWKS, and `iss` in JWT-SVIDs (off by default).
    #[serde(default)]
    pub oidc: crate::oidc::OidcSection,
    /// SPIFFE Federation: this trust domain's bundle endpoint and the
    /// federated trust domains (off by default).
    #[serde(default)]
    pub federation: crate::federation::FederationSection,
}

/// `[metrics]` in `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:port` to serve `/metrics`, `/live` and `/ready` on (HTTP, no
    /// authentication: keep it on loopback or a cluster-internal address).
    /// Without it the endpoint is off.
    pub address: Option<String>,
}

/// `[audit]` in `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How often the issuer signs a checkpoint over the newest audit record
    /// (when there are new records): the longest time records stay an
    /// unverifiable tail. Default 1m, at least 1s.
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
    /// Where every signed checkpoint also goes (`[[audit.witness]]` tables
    /// with `file = "/abs/path"` or `command = ["argv", ...]`), so that a
    /// rollback of the whole data directory is caught off the host.
    #[serde(default)]
    pub witness: Vec<crate::audit::WitnessConfig>,
    /// How long refusals from one source, of one kind and reason, are only
    /// counted after the first is recorded in full. Default 1m, at least 1s.
    #[serde(default, with = "humantime_serde")]
    pub refusal_interval: Option<Duration>,
    /// Most refused sources (peer IPs, nodes) tracked at once; refusals
    /// from the others share one overflow count. Default 256.
    pub refusal_sources: Option<usize>,
    /// Most reasons (with workload classes) tracked per source; its other
    /// reasons share one count. Default 4.
    pub refusal_reasons_per_source: Option<usize>,
}

/// `[images]` in `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSection {
    /// Public keys (SPKI PEM from `image keygen`) whose signatures count.
    #[serde(default)]
    pub trusted_signers: Vec<PathBuf>,
    /// Distinct trusted signatures required per risk tier.
    #[serde(default)]
    pub policy: PolicySection,
}

/// `[images.policy]`: defaults low 1, medium 1, high 2, critical 2.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Signatures for `low` images.
    pub low: Option<usize>,
    /// Signatures for `medium` images.
    pub medium: Option<usize>,
    /// Signatures for `high` images.
    pub high: Option<usize>,
    /// Signatures for `critical` images.
    pub critical: Option<usize>,
}

/// `[ca]` in `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// Lifetime of each X.509 CA certificate (default 24h).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Lifetime of each JWT signing key (default 24h).
    #[serde(default, with = "humantime_serde")]
    pub jwt_key_ttl: Option<Duration>,
    /// Cap on every workload SVID's lifetime (default and maximum 300s).
    #[serde(default, with = "humantime_serde")]
    pub max_svid_ttl: Option<Duration>,
    /// How often relying parties should refresh the bundle (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub refresh_hint: Option<Duration>,
    /// Upstream CA certificate (PEM); with `upstream_key`, the issuer's CA is
    /// an intermediate of it instead of a self-signed root.
    pub upstream_cert: Option<PathBuf>,
    /// Upstream CA private key (PKCS#8 PEM).
    pub upstream_key: Option<PathBuf>,
}

/// `[agents]` in `server.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// Lifetime of node SVIDs (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub svid_ttl: Option<Duration>,
    /// Default lifetime of join tokens (default 10m).
    #[serde(default, with = "humantime_serde")]
    pub join_token_ttl: Option<Duration>,
    /// Provisioning CA certificates (PEM) that x509pop node certificates
    /// must chain to. Without it the x509pop attestor is off.
    pub x509pop_ca: Option<PathBuf>,
    /// Credentials per second each node may be issued, sustained (an
    /// X.509 call counts its keys, a JWT call one; node SVID renewals have
    /// a bucket of their own). Default 200.
    pub mint_rate: Option<u32>,
    /// Credentials a node may ask for at once, above `mint_rate`. Default 2000.
    pub mint_burst: Option<u32>,
}

/// What the `run` flags set; each `Some` overrides the file.
#[derive(Debug, Clone, Default)]
pub struct ServerOverrides {
    /// `--trust-domain`.
    pub trust_domain: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--bind-address`.
    pub bind_address: Option<String>,
    /// `--admin-socket`.
    pub admin_socket: Option<PathBuf>,
    /// `--metrics-address`.
    pub metrics_address: Option<String>,
}

/// Validated settings: everything the daemon needs, checked.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The store's directory.
    pub data_dir: PathBuf,
    /// Node API listen address (port 0 picks a free port).
    pub bind_address: SocketAddr,
    /// Admin API Unix socket path.
    pub admin_socket: PathBuf,
    /// CA settings, upstream CA loaded.
    pub ca: CaConfig,
    /// Node SVID lifetime.
    pub agent_svid_ttl: Duration,
    /// Default join token lifetime.
    pub join_token_ttl: Duration,
    /// Provisioning CA roots (DER) for x509pop, if enabled.
    pub x509pop_roots: Option<Vec<Vec<u8>>>,
    /// How often the CA checks whether to rotate.
    pub rotation_interval: Duration,
    /// Keys whose signatures count on gold images.
    pub trusted_signers: Arc<TrustedSigners>,
    /// Signatures required per risk tier.
    pub signature_policy: SignaturePolicy,
    /// How often to sign an audit checkpoint.
    pub audit_checkpoint_interval: Duration,
    /// Where signed checkpoints also go.
    pub audit_witnesses: Vec<crate::audit::WitnessConfig>,
    /// Where to serve metrics and health (`None`: off).
    pub metrics_address: Option<SocketAddr>,
    /// How refusals are aggregated in the audit log.
    pub refusal_limits: RefusalLimits,
    /// Per-node limits on the calls that mint.
    pub node_limits: NodeLimits,
    /// The OpenID Connect issuer and endpoint (`None`: off, no `iss`).
    /// Its issuer is also `ca.jwt_issuer`.
    pub oidc: Option<crate::oidc::OidcSettings>,
    /// SPIFFE Federation (empty: none).
    pub federation: crate::federation::FederationSettings,
}

impl ServerConfig {
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

impl ServerSettings {
    /// Merges file and flags over the defaults and validates the result.
    pub fn resolve(file: ServerConfig, flags: ServerOverrides) -> Result<Self, ConfigError> {
        let td_text = flags
            .trust_domain
            .or(file.trust_domain)
            .ok_or(ConfigError::Invalid {
                key: "trust_domain",
                reason: "missing: set it to your trust domain, e.g. \"example.org\"".into(),
            })?;
        let trust_domain = TrustDomain::new(&td_text).map_err(|e| ConfigError::Invalid {
            key: "trust_domain",
            reason: format!("{td_text:?} is not a valid trust domain: {e}"),
        })?;
        let bind_text = flags
            .bind_address
            .or(file.bind_address)
            .unwrap_or_else(|| DEFAULT_BIND_ADDRESS.to_owned());
        let bind_address: SocketAddr = bind_text.parse().map_err(|_| ConfigError::Invalid {
            key: "bind_address",
            reason: format!("{bind_text:?} is not an IP:port address, e.g. \"127.0.0.1:8081\""),
        })?;
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let admin_socket = flags
            .admin_socket
            .or(file.admin_socket)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET));

        let mut ca = CaConfig::new(trust_domain.clone());
        if let Some(ttl) = file.ca.ttl {
            positive("ca.ttl", ttl)?;
            if ttl < Duration::from_secs(3600) {
                return Err(ConfigError::Invalid {
                    key: "ca.ttl",
                    reason: "must be at least 1h so that rotation can overlap".into(),
                });
            }
            ca.ca_ttl = ttl;
        }
        if let Some(ttl) = file.ca.jwt_key_ttl {
            positive("ca.jwt_key_ttl", ttl)?;
            if ttl < Duration::from_secs(3600) {
                return Err(ConfigError::Invalid {
                    key: "ca.jwt_key_ttl",
                    reason: "must be at least 1h so that rotation can overlap".into(),
                });
            }
            ca.jwt_key_ttl = ttl;
        }
        if let Some(ttl) = file.ca.max_svid_ttl {
            positive("ca.max_svid_ttl", ttl)?;
            if ttl > HARD_MAX_SVID_TTL {
                return Err(ConfigError::Invalid {
                    key: "ca.max_svid_ttl",
                    reason: format!(
                        "{} exceeds the hard limit of 300s: workload credentials live at most 5 minutes",
                        humantime::format_duration(ttl)
                    ),
                });
            }
            ca.max_svid_ttl = ttl;
        }
        if let Some(hint) = file.ca.refresh_hint {
            positive("ca.refresh_hint", hint)?;
            ca.refresh_hint = hint;
        }
        ca.upstream = match (&file.ca.upstream_cert, &file.ca.upstream_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(load_upstream(cert, key)?)),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "ca.upstream_cert",
                    reason: "set both ca.upstream_cert and ca.upstream_key, or neither".into(),
                });
            }
        };

        let agent_svid_ttl = file.agents.svid_ttl.unwrap_or(Duration::from_secs(3600));
        positive("agents.svid_ttl", agent_svid_ttl)?;
        let join_token_ttl = file
            .agents
            .join_token_ttl
            .unwrap_or(Duration::from_secs(600));
        positive("agents.join_token_ttl", join_token_ttl)?;
        let x509pop_roots = match &file.agents.x509pop_ca {
            None => None,
            Some(path) => Some(load_cert_pem("agents.x509pop_ca", path)?),
        };

        let trusted_signers = TrustedSigners::load(&file.images.trusted_signers).map_err(|e| {
            ConfigError::Invalid {
                key: "images.trusted_signers",
                reason: format!("{}: {}", e.path.display(), e.reason),
            }
        })?;
        let default_policy = SignaturePolicy::default();
        let p = &file.images.policy;
        let signature_policy = SignaturePolicy::new(
            p.low
                .unwrap_or(default_policy.required(crate::image::RiskTier::Low)),
            p.medium
                .unwrap_or(default_policy.required(crate::image::RiskTier::Medium)),
            p.high
                .unwrap_or(default_policy.required(crate::image::RiskTier::High)),
            p.critical
                .unwrap_or(default_policy.required(crate::image::RiskTier::Critical)),
        )
        .map_err(|e| ConfigError::Invalid {
            key: "images.policy",
            reason: format!("{}: {}", e.tier.as_str(), e.reason),
        })?;
        let audit_checkpoint_interval = file
            .audit
            .checkpoint_interval
            .unwrap_or(DEFAULT_AUDIT_CHECKPOINT_INTERVAL);
        if audit_checkpoint_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_interval",
                reason: "must be at least 1s".into(),
            });
        }
        for witness in &file.audit.witness {
            witness.validate().map_err(|reason| ConfigError::Invalid {
                key: "audit.witness",
                reason,
            })?;
        }
        let audit_witnesses = file.audit.witness.clone();
        let metrics_address = match flags.metrics_address.or(file.metrics.address) {
            None => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        key: "metrics.address",
                        reason: format!(
                            "{text:?} is not an IP:port address, e.g. \"127.0.0.1:9090\""
                        ),
                    })?,
            ),
        };
        let refusal_limits = refusal_limits(&file.audit)?;
        let node_limits = node_limits(&file.agents)?;
        let oidc = crate::oidc::resolve(&file.oidc)?;
        ca.jwt_issuer = oidc.as_ref().map(|o| o.issuer.clone());
        let federation = crate::federation::resolve(&file.federation, &trust_domain)?;
        Ok(Self {
            trust_domain,
            data_dir,
            bind_address,
            admin_socket,
            ca,
            agent_svid_ttl,
            join_token_ttl,
            x509pop_roots,
            rotation_interval: Duration::from_secs(10),
            trusted_signers: Arc::new(trusted_signers),
            signature_policy,
            audit_checkpoint_interval,
            audit_witnesses,
            metrics_address,
            refusal_limits,
            node_limits,
            oidc,
            federation,
        })
    }

    /// Settings for tests and the quickstart: loopback on a free port, the
    /// given directories, all defaults otherwise.
    pub fn for_dirs(trust_domain: TrustDomain, data_dir: PathBuf, admin_socket: PathBuf) -> Self {
        let ca = CaConfig::new(trust_domain.clone());
        Self {
            trust_domain,
            data_dir,
            bind_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_socket,
            ca,
            agent_svid_ttl: Duration::from_secs(3600),
            join_token_ttl: Duration::from_secs(600),
            x509pop_roots: None,
            rotation_interval: Duration::from_secs(10),
            trusted_signers: Arc::new(TrustedSigners::new()),
            signature_policy: SignaturePolicy::default(),
            audit_checkpoint_interval: DEFAULT_AUDIT_CHECKPOINT_INTERVAL,
            audit_witnesses: Vec::new(),
            metrics_address: None,
            refusal_limits: RefusalLimits::default(),
            node_limits: NodeLimits::default(),
            oidc: None,
            federation: crate::federation::FederationSettings::default(),
        }
    }
}

/// `[audit]` `refusal_*`, checked.
fn refusal_limits(audit: &AuditSection) -> Result<RefusalLimits, ConfigError> {
    let default = RefusalLimits::default();
    let interval = audit.refusal_interval.unwrap_or(default.interval);
    if interval < Duration::from_secs(1) {
        return Err(ConfigError::Invalid {
            key: "audit.refusal_interval",
            reason: "must be at least 1s".into(),
        });
    }
    let max_sources = audit.refusal_sources.unwrap_or(default.max_sources);
    if !(1..=MAX_REFUSAL_SOURCES).contains(&max_sources) {
        return Err(ConfigError::Invalid {
            key: "audit.refusal_sources",
            reason: format!("{max_sources} is out of range: write 1 to {MAX_REFUSAL_SOURCES}"),
        });
    }
    let reasons_per_source = audit
        .refusal_reasons_per_source
        .unwrap_or(default.reasons_per_source);
    if !(1..=MAX_REFUSAL_REASONS_PER_SOURCE).contains(&reasons_per_source) {
        return Err(ConfigError::Invalid {
            key: "audit.refusal_reasons_per_source",
            reason: format!(
                "{reasons_per_source} is out of range: write 1 to {MAX_REFUSAL_REASONS_PER_SOURCE}"
            ),
        });
    }
    Ok(RefusalLimits {
        interval,
        max_sources,
        reasons_per_source,
    })
}

/// `[agents]` `mint_rate` and `mint_burst`, checked.
fn node_limits(agents: &AgentsSection) -> Result<NodeLimits, ConfigError> {
    let default = NodeLimits::default();
    let per_second = agents.mint_rate.unwrap_or(default.per_second);
    if per_second == 0 {
        return Err(ConfigError::Invalid {
            key: "agents.mint_rate",
            reason: "must be at least 1 (credentials per second per node)".into(),
        });
    }
    let burst = agents.mint_burst.unwrap_or(default.burst);
    if burst == 0 {
        return Err(ConfigError::Invalid {
            key: "agents.mint_burst",
            reason: "must be at least 1 (credentials a node may ask for at once)".into(),
        });
    }
    Ok(NodeLimits { per_second, burst })
}

fn positive(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be greater than zero".into(),
        });
    }
    Ok(())
}

fn read_text(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

fn load_upstream(cert: &Path, key: &Path) -> Result<UpstreamCa, ConfigError> {
    let cert_pem = read_text("ca.upstream_cert", cert)?;
    let key_pem = read_text("ca.upstream_key", key)?;
    UpstreamCa::from_pem(&cert_pem, &key_pem).map_err(|e| ConfigError::Invalid {
        key: "ca.upstream_cert",
        reason: format!(
            "{} / {} is not a usable upstream CA: {e}",
            cert.display(),
            key.display()
        ),
    })
}

/// Reads every `CERTIFICATE` block of a PEM file as DER.
fn load_cert_pem(key: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let text = read_text(key, path)?;
    let blocks = pem::parse_many(text.as_bytes()).map_err(|e| ConfigError::Invalid {
        key,
        reason: format!("{} is not PEM: {e}", path.display()),
    })?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("{} holds no CERTIFICATE block", path.display()),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<ServerSettings, ConfigError> {
        ServerSettings::resolve(
            ServerConfig::from_toml_str(text)?,
            ServerOverrides::default(),
        )
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../conf/server.toml");
        let settings = resolve(text).unwrap();
        assert_eq!(settings.trust_domain.as_str(), "example.org");
        assert_eq!(settings.ca.max_svid_ttl, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = resolve("trust_domain = \"example.org\"\nbind_adress = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bind_adress"), "{msg}");
    }

    #[test]
    fn missing_trust_domain_is_named() {
        let err = resolve("").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "trust_domain",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn svid_ttl_above_hard_cap_refused() {
        let err =
            resolve("trust_domain = \"example.org\"\n[ca]\nmax_svid_ttl = \"10m\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "ca.max_svid_ttl",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_and_address_refused() {
        let err =
            resolve("trust_domain = \"example.org\"\n[agents]\nsvid_ttl = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("svid_ttl"), "{err}");
        let err =
            resolve("trust_domain = \"example.org\"\nbind_address = \"localhost\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "bind_address",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn image_policy_and_signers_are_checked() {
        let err =
            resolve("trust_domain = \"example.org\"\n[images.policy]\nhigh = 0\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "images.policy",
                    ..
                }
            ),
            "{err}"
        );
        let err = resolve("trust_domain = \"example.org\"\n[images]\ntrusted_signers = [\"/nonexistent/a.pub\"]\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "images.trusted_signers",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/a.pub"), "{err}");
        let ok = resolve("trust_domain = \"example.org\"\n[images.policy]\nlow = 2\n").unwrap();
        assert_eq!(ok.signature_policy.required(crate::image::RiskTier::Low), 2);
        assert_eq!(
            ok.signature_policy
                .required(crate::image::RiskTier::Critical),
            2
        );
    }

    #[test]
    fn trusted_signers_load_and_a_bad_file_is_named() {
        use crate::image::{Algorithm, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::P256).unwrap())
            .unwrap();
        let good = dir.path().join("alice.pub");
        std::fs::write(&good, key.public_key().to_pem()).unwrap();
        let bad = dir.path().join("notakey.pub");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let settings = resolve(&format!(
            "trust_domain = \"example.org\"\n[images]\ntrusted_signers = [{:?}]\n[images.policy]\nhigh = 1\n",
            good.display().to_string()
        ))
        .unwrap();
        assert_eq!(settings.trusted_signers.len(), 1);
        assert!(settings.trusted_signers.get(key.keyid()).is_some());
        assert_eq!(
            settings
                .signature_policy
                .required(crate::image::RiskTier::High),
            1
        );
        let err = resolve(&format!(
            "trust_domain = \"example.org\"\n[images]\ntrusted_signers = [{:?}, {:?}]\n",
            good.display().to_string(),
            bad.display().to_string()
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("images.trusted_signers") && text.contains("notakey.pub"),
            "{text}"
        );
        let err =
            resolve("trust_domain = \"example.org\"\n[images.policy]\nmedium = 17\n").unwrap_err();
        assert!(err.to_string().contains("medium"), "{err}");
        let err = resolve("trust_domain = \"example.org\"\n[images]\nsigners = []\n").unwrap_err();
        assert!(err.to_string().contains("signers"), "{err}");
    }

    #[test]
    fn audit_checkpoint_interval_is_read_and_checked() {
        let settings =
            resolve("trust_domain = \"example.org\"\n[audit]\ncheckpoint_interval = \"15s\"\n")
                .unwrap();
        assert_eq!(settings.audit_checkpoint_interval, Duration::from_secs(15));
        let default = resolve("trust_domain = \"example.org\"\n").unwrap();
        assert_eq!(
            default.audit_checkpoint_interval,
            DEFAULT_AUDIT_CHECKPOINT_INTERVAL
        );
        let err =
            resolve("trust_domain = \"example.org\"\n[audit]\ncheckpoint_interval = \"500ms\"\n")
                .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "audit.checkpoint_interval",
                    ..
                }
            ),
            "{err}"
        );
        let err =
            resolve("trust_domain = \"example.org\"\n[audit]\ninterval = \"1m\"\n").unwrap_err();
        assert!(err.to_string().contains("interval"), "{err}");
    }

    #[test]
    fn audit_witnesses_are_files_or_commands() {
        use crate::audit::WitnessConfig;
        let settings = resolve(
            "trust_domain = \"example.org\"\n[[audit.witness]]\nfile = \"/mnt/w/cp.log\"\n[[audit.witness]]\ncommand = [\"logger\", \"-t\", \"hallmark-audit\"]\n",
        )
        .unwrap();
        assert_eq!(
            settings.audit_witnesses,
            [
                WitnessConfig::File("/mnt/w/cp.log".into()),
                WitnessConfig::Command(vec!["logger".into(), "-t".into(), "hallmark-audit".into()]),
            ]
        );
        let err =
            resolve("trust_domain = \"example.org\"\n[[audit.witness]]\nfile = \"relative.log\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("absolute path"), "{err}");
        let err = resolve("trust_domain = \"example.org\"\n[[audit.witness]]\nurl = \"x\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }

    #[test]
    fn refusal_and_mint_limits_are_read_and_checked() {
        let default = resolve("trust_domain = \"example.org\"\n").unwrap();
        assert_eq!(default.refusal_limits, RefusalLimits::default());
        assert_eq!(default.node_limits, NodeLimits::default());
        let settings = resolve(
            "trust_domain = \"example.org\"\n[audit]\nrefusal_interval = \"5m\"\nrefusal_sources = 64\nrefusal_reasons_per_source = 2\n[agents]\nmint_rate = 10\nmint_burst = 50\n",
        )
        .unwrap();
        assert_eq!(
            settings.refusal_limits,
            RefusalLimits {
                interval: Duration::from_secs(300),
                max_sources: 64,
                reasons_per_source: 2,
            }
        );
        assert_eq!(
            settings.node_limits,
            NodeLimits {
                per_second: 10,
                burst: 50,
            }
        );
        for (text, key) in [
            (
                "[audit]\nrefusal_interval = \"10ms\"\n",
                "audit.refusal_interval",
            ),
            ("[audit]\nrefusal_sources = 0\n", "audit.refusal_sources"),
            (
                "[audit]\nrefusal_sources = 2000000\n",
                "audit.refusal_sources",
            ),
            (
                "[audit]\nrefusal_reasons_per_source = 0\n",
                "audit.refusal_reasons_per_source",
            ),
            ("[agents]\nmint_rate = 0\n", "agents.mint_rate"),
            ("[agents]\nmint_burst = 0\n", "agents.mint_burst"),
        ] {
            let err = resolve(&format!("trust_domain = \"example.org\"\n{text}")).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{text}: {err}"
            );
        }
        let err =
            resolve("trust_domain = \"example.org\"\n[audit]\nrefusal_interval = \"often\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("refusal_interval"), "{err}");
        let err =
            resolve("trust_domain = \"example.org\"\n[agents]\nmint_rate = -1\n").unwrap_err();
        assert!(err.to_string().contains("mint_rate"), "{err}");
    }

    #[test]
    fn metrics_are_off_unless_configured_and_the_flag_wins() {
        assert_eq!(
            resolve("trust_domain = \"example.org\"\n")
                .unwrap()
                .metrics_address,
            None
        );
        let file = ServerConfig::from_toml_str(
            "trust_domain = \"example.org\"\n[metrics]\naddress = \"127.0.0.1:9090\"\n",
        )
        .unwrap();
        let settings = ServerSettings::resolve(file.clone(), ServerOverrides::default()).unwrap();
        assert_eq!(
            settings.metrics_address,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let flags = ServerOverrides {
            metrics_address: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let settings = ServerSettings::resolve(file, flags).unwrap();
        assert_eq!(
            settings.metrics_address,
            Some("127.0.0.1:0".parse().unwrap())
        );
        let err = resolve("trust_domain = \"example.org\"\n[metrics]\naddress = \"localhost\"\n")
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
        let err = resolve("trust_domain = \"example.org\"\n[metrics]\nport = 9090\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let file = ServerConfig::from_toml_str("trust_domain = \"a.org\"\n").unwrap();
        let flags = ServerOverrides {
            trust_domain: Some("b.org".into()),
            ..Default::default()
        };
        let settings = ServerSettings::resolve(file, flags).unwrap();
        assert_eq!(settings.trust_domain.as_str(), "b.org");
    }
}
