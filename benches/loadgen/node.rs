//! Simulated node agents: each attests with its own join token and then
//! holds its own mutual-TLS connection with its own node SVID, using the
//! agent's real client code (`hallmark_agent::client`, `::attest`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use hallmark_agent::attest::{AttestMethod, attest};
use hallmark_agent::client;
use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::tls::SvidCertResolver;
use hallmark_proto::node::node_client::NodeClient;

use crate::stats::Samples;

/// Longest wait for one attestation (connect included).
const ATTEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the issuer is and how to trust it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) address: String,
    pub(crate) trust_domain: TrustDomain,
    pub(crate) bundle: Bundle,
}

impl Target {
    fn server_id(&self) -> anyhow::Result<SpiffeId> {
        Ok(SpiffeId::new(&self.trust_domain, "/hallmark/server")?)
    }

    /// A connection with a TLS config of its own (its own client
    /// certificate slot: empty until the agent has attested).
    async fn connect(
        &self,
        resolver: Arc<SvidCertResolver>,
    ) -> anyhow::Result<NodeClient<Channel>> {
        let tls = client::tls_config(
            SharedBundle::new(self.bundle.clone()),
            self.server_id()?,
            resolver,
            Arc::new(SystemClock),
        )?;
        Ok(client::connect(&self.address, tls).await?)
    }

    /// One join-token attestation on a fresh TLS connection without a
    /// client certificate, as a new node does it.
    pub(crate) async fn attest(
        &self,
        token: &str,
    ) -> anyhow::Result<hallmark_agent::persist::NodeSvid> {
        let mut anonymous = self.connect(Arc::new(SvidCertResolver::new())).await?;
        let (svid, _bundle) = attest(
            &mut anonymous,
            &AttestMethod::JoinToken(token.to_owned()),
            &self.trust_domain,
        )
        .await?;
        Ok(svid)
    }

    /// Attests and connects with the node SVID.
    pub(crate) async fn agent(&self, token: &str) -> anyhow::Result<SimAgent> {
        let svid = self.attest(token).await?;
        let resolver = Arc::new(SvidCertResolver::new());
        resolver.set(svid.chain.clone(), &svid.key.pkcs8_der())?;
        let client = self.connect(resolver).await?;
        Ok(SimAgent { client })
    }

    /// Attests one agent per token, `concurrency` at a time; returns them in
    /// token order with the time each took.
    pub(crate) async fn agents(
        &self,
        tokens: Vec<String>,
        concurrency: usize,
    ) -> anyhow::Result<(Vec<SimAgent>, Samples)> {
        let n = tokens.len();
        let tokens = Arc::new(tokens);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.clamp(1, n.max(1)) {
            let (target, tokens, next) = (self.clone(), tokens.clone(), next.clone());
            tasks.spawn(async move {
                let mut mine = Vec::new();
                let mut samples = Samples::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else { break };
                    let start = Instant::now();
                    let agent = tokio::time::timeout(ATTEST_TIMEOUT, target.agent(token))
                        .await
                        .context("attestation timed out")?
                        .with_context(|| format!("agent {i}"))?;
                    samples.push(start.elapsed());
                    mine.push((i, agent));
                }
                anyhow::Ok((mine, samples))
            });
        }
        let mut all = Vec::with_capacity(n);
        let mut samples = Samples::with_capacity(n);
        while let Some(joined) = tasks.join_next().await {
            let (mine, s) = joined.context("attestation task")??;
            all.extend(mine);
            samples.extend(s);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok((all.into_iter().map(|(_, a)| a).collect(), samples))
    }
}

/// An attested agent on its own mutual-TLS connection.
#[derive(Debug, Clone)]
pub(crate) struct SimAgent {
    pub(crate) client: NodeClient<Channel>,
}
