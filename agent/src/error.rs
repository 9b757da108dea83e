//! The agent's errors.

use std::path::{Path, PathBuf};

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A persisted file is not what the agent wrote.
    #[error("{0}: corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// The agent has no identity and no way to get one.
    #[error(
        "no valid node SVID in the data directory and no join token or [x509pop] configured: pass --join-token (from `hallmark-server token generate`) or configure x509pop"
    )]
    NoIdentity,
    /// The issuer could not be reached.
    #[error("cannot reach the issuer at {address}: {source}")]
    Connect {
        /// The issuer's address.
        address: String,
        /// The error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The issuer refused a call.
    #[error("the issuer refused {call}: {} ({:?})", status.message(), status.code())]
    Refused {
        /// The call.
        call: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// The issuer's answer did not make sense.
    #[error("unexpected answer from the issuer: {0}")]
    BadResponse(String),
    /// Key generation or a certificate operation failed.
    #[error(transparent)]
    Ca(#[from] hallmark_ca::CaError),
    /// The x509pop node credentials are unusable.
    #[error("x509pop: {0}")]
    X509Pop(String),
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The metrics endpoint could not be started.
    #[error("{0}")]
    Metrics(String),
}

impl AgentError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the issuer refused our identity itself (evicted, banned, or the
    /// SVID is no longer honoured): retrying with it is pointless.
    pub fn is_identity_refused(&self) -> bool {
        matches!(self, AgentError::Refused { status, .. }
            if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated))
    }
}
