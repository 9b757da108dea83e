//! The demo workload: the quickstart binary re-executed as a separate
//! process (`hallmark quickstart-workload`). It does what any SPIFFE
//! workload does: fetch its identity over the Workload API, here printing
//! what Hallmark bound to it, then hold on to it until it is taken away.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use hallmark::proto::workload::JwtsvidRequest;
use hallmark::proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark::workload::{Endpoint, SvidSelector, X509Source, request};

/// The audience of the JWT-SVID the workload hands to the relying party.
pub(crate) const AUDIENCE: &str = "quickstart-relying-party";
/// The line the workload prints once it holds its identity and waits.
pub(crate) const READY: &str = "holding the identity; waiting";
/// How long the workload waits for its identity to be withdrawn.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Runs the workload: prints its identity, writes a JWT-SVID to `jwt_out`
/// (0600) for the relying party, waits until the agent withdraws the
/// identity, and shows that a new fetch is refused.
pub(crate) async fn run(endpoint: &Endpoint, jwt_out: &Path) -> anyhow::Result<()> {
    let source = X509Source::start(endpoint, SvidSelector::Default)
        .await
        .context("FetchX509SVID")?;
    let svid = source
        .current()
        .svid
        .context("the agent's first message carried no SVID")?;
    let left = svid
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    say(&format!("SPIFFE ID    {}", svid.spiffe_id));
    match &svid.binding {
        Some(binding) => {
            say(&format!(
                "code         sha256 {} (this very executable)",
                binding.code_sha256
            ));
            match &binding.model {
                Some(model) => say(&format!(
                    "model        {} {} ({})",
                    model.name, model.version, model.digest
                )),
                None => say("model        none bound"),
            }
            say(&format!(
                "image        {}, owner {}, risk tier {}",
                binding.image, binding.owner, binding.risk_tier
            ));
            say(&format!("attested by  {}", binding.node));
        }
        None => say("binding      none (not minted by Hallmark?)"),
    }
    say(&format!(
        "expires      {} (in {left} s; the agent rotates it at half-life)",
        humantime::format_rfc3339_seconds(svid.not_after)
    ));

    let mut client = SpiffeWorkloadApiClient::new(endpoint.channel());
    let jwt = client
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: vec![AUDIENCE.into()],
            spiffe_id: String::new(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("FetchJWTSVID: {}", s.message()))?
        .into_inner()
        .svids
        .into_iter()
        .next()
        .context("FetchJWTSVID returned no token")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(jwt_out)
        .with_context(|| format!("cannot create {}", jwt_out.display()))?;
    file.write_all(jwt.svid.as_bytes())?;
    say(&format!(
        "JWT-SVID     for audience {AUDIENCE:?}, handed to the relying party"
    ));
    say(READY);

    let mut updates = source.updates();
    let withdrawn = tokio::time::timeout(MAX_WAIT, updates.wait_for(|s| s.withdrawn.is_some()))
        .await
        .context("the identity was not withdrawn within 60 s")?
        .context("the SVID stream ended")?
        .withdrawn
        .clone()
        .unwrap_or_default();
    say(&format!("identity withdrawn by the agent: {withdrawn}"));
    let refused = client
        .fetch_x509svid(request(hallmark::proto::workload::X509svidRequest {}))
        .await;
    let refusal = match refused {
        Err(status) => status,
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status,
            Ok(_) => anyhow::bail!("the agent still hands out an SVID after the kill"),
        },
    };
    say(&format!(
        "a new FetchX509SVID is refused: {:?}: {}",
        refusal.code(),
        refusal.message()
    ));
    Ok(())
}

/// One line on stdout, flushed at once (stdout is a pipe to the quickstart).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
