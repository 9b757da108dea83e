//! `hallmark-server config check FILE`: validates a config the way `run`
//! reads it (every key, the trusted signer files, the x509pop CA, the
//! witnesses), without opening the data directory or binding anything.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::{ServerConfig, ServerOverrides, ServerSettings};

/// `config` verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file without starting the issuer (exit 0 if `run`
    /// would accept it).
    Check(CheckArgs),
}

/// Flags of `config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file (`server.toml`).
    pub file: PathBuf,
}

/// Runs a `config` command.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => {
            let file = ServerConfig::from_file(&args.file)?;
            let settings = ServerSettings::resolve(file, ServerOverrides::default())?;
            let oidc = match &settings.oidc {
                None => String::new(),
                Some(oidc) => match oidc.listen {
                    Some(listen) => format!(
                        ", OIDC issuer {} served on {listen} over {}",
                        oidc.issuer,
                        if oidc.tls.is_some() { "https" } else { "http" }
                    ),
                    None => format!(", OIDC issuer {} (documents not served here)", oidc.issuer),
                },
            };
            let federation = &settings.federation;
            let mut fed = String::new();
            if let Some(endpoint) = &federation.bundle_endpoint {
                fed.push_str(&format!(
                    ", bundle endpoint on {} ({})",
                    endpoint.address,
                    endpoint.profile().as_str()
                ));
            }
            if !federation.trust_domains.is_empty() {
                let names: Vec<&str> = federation
                    .trust_domains
                    .keys()
                    .map(|t| t.as_str())
                    .collect();
                fed.push_str(&format!(", federated with {}", names.join(", ")));
            }
            crate::cli::output::outln!(
                "{}: OK (trust domain {}, data_dir {}, {} trusted signer(s), {} audit witness(es){oidc}{fed})",
                args.file.display(),
                settings.trust_domain,
                settings.data_dir.display(),
                settings.trusted_signers.len(),
                settings.audit_witnesses.len()
            )?;
            Ok(())
        }
    }
}
