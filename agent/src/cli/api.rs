//! `hallmark-agent api ...`: talk to the Workload API as a workload would.
//!
//! The socket is `--socket PATH`, else `SPIFFE_ENDPOINT_SOCKET`
//! (`unix:///path`), else `socket_path` from `--config`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use hallmark_proto::WORKLOAD_API_HEADER;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{
    JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest, X509svidResponse,
};

use crate::cli::output::{outln, write};
use crate::config::AgentConfig;
use crate::persist::write_atomic;

/// `api` verbs.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetch an SVID for this process.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Validate a JWT-SVID through the agent.
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Follow the X.509-SVID stream and print every update.
    Watch(WatchArgs),
}

/// How a command prints what it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON object (`watch`: one per line, per update); timestamps in
    /// RFC 3339.
    Json,
}

/// Flags of `api watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Where the Workload API is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `api fetch` kinds.
#[derive(Debug, Subcommand)]
pub enum FetchCommand {
    /// X.509-SVIDs.
    X509(FetchX509Args),
    /// A JWT-SVID.
    Jwt(FetchJwtArgs),
}

/// `api validate` kinds.
#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// A JWT-SVID.
    Jwt(ValidateJwtArgs),
}

/// Where the Workload API is.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// The Workload API socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// `unix:///path` as SPIFFE clients take it.
    #[arg(
        long = "endpoint",
        env = "SPIFFE_ENDPOINT_SOCKET",
        hide_env_values = true
    )]
    pub endpoint: Option<String>,
    /// An agent config to read `socket_path` from.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Flags of `api fetch x509`.
#[derive(Debug, Args)]
pub struct FetchX509Args {
    /// Write svid.pem, svid.key (0600) and bundle.pem into this directory.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Where the Workload API is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Flags of `api fetch jwt`.
#[derive(Debug, Args)]
pub struct FetchJwtArgs {
    /// Audience of the token (repeatable).
    #[arg(long, required = true)]
    pub audience: Vec<String>,
    /// Only this SPIFFE ID.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Where the Workload API is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Flags of `api validate jwt`.
#[derive(Debug, Args)]
pub struct ValidateJwtArgs {
    /// The audience the token must name.
    #[arg(long)]
    pub audience: String,
    /// The token.
    pub token: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Where the Workload API is.
    #[command(flatten)]
    pub socket: SocketArgs,
}

impl SocketArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.socket {
            return Ok(path.clone());
        }
        if let Some(endpoint) = &self.endpoint {
            let path = endpoint
                .strip_prefix("unix://")
                .or_else(|| endpoint.strip_prefix("unix:"))
                .with_context(|| {
                    format!("SPIFFE_ENDPOINT_SOCKET {endpoint:?} is not a unix:// address")
                })?;
            return Ok(PathBuf::from(path));
        }
        if let Some(path) = match &self.config {
            Some(config) => AgentConfig::from_file(config)?.socket_path,
            None => None,
        } {
            return Ok(path);
        }
        Ok(PathBuf::from(crate::config::DEFAULT_SOCKET_PATH))
    }

    async fn client(&self) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
        connect(&self.path()?).await
    }
}

/// A Workload API client on the Unix socket at `path`.
pub(crate) async fn connect(path: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let socket = path.to_owned();
    let channel = Endpoint::from_static("http://workload-api.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the Workload API at {}", path.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// A Workload API request with the security header SPIFFE clients send.
pub(crate) fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        WORKLOAD_API_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

fn refused(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code())
}

/// Runs an `api` command.
pub async fn run(cmd: ApiCommand) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Fetch(FetchCommand::X509(args)) => {
            let mut client = args.socket.client().await?;
            let mut stream = client
                .fetch_x509svid(request(X509svidRequest {}))
                .await
                .map_err(|s| refused("fetch x509", s))?
                .into_inner();
            let response = stream
                .message()
                .await
                .map_err(|s| refused("fetch x509", s))?
                .context("the agent closed the stream without an SVID")?;
            if let Some(dir) = &args.write {
                write_x509(dir, &response)?;
            }
            match args.output {
                Output::Json => {
                    let mut value = serde_json::json!({ "svids": x509_json(&response)? });
                    if let Some(dir) = &args.write {
                        value["written_to"] = dir.display().to_string().into();
                    }
                    print_json(&value)
                }
                Output::Text => {
                    print_x509(&response)?;
                    if let Some(dir) = &args.write {
                        outln!(
                            "Wrote svid.pem, svid.key and bundle.pem to {}",
                            dir.display()
                        )?;
                    }
                    Ok(())
                }
            }
        }
        ApiCommand::Fetch(FetchCommand::Jwt(args)) => {
            let mut client = args.socket.client().await?;
            let response = client
                .fetch_jwtsvid(request(JwtsvidRequest {
                    audience: args.audience,
                    spiffe_id: args.spiffe_id.unwrap_or_default(),
                }))
                .await
                .map_err(|s| refused("fetch jwt", s))?
                .into_inner();
            if args.output == Output::Json {
                let svids: Vec<_> = response
                    .svids
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "spiffe_id": s.spiffe_id,
                            "image": s.hint,
                            "token": s.svid,
                        })
                    })
                    .collect();
                return print_json(&serde_json::json!({ "svids": svids }));
            }
            for svid in response.svids {
                outln!("SPIFFE ID: {}", svid.spiffe_id)?;
                outln!("{}", svid.svid)?;
            }
            Ok(())
        }
        ApiCommand::Validate(ValidateCommand::Jwt(args)) => {
            let mut client = args.socket.client().await?;
            let response = client
                .validate_jwtsvid(request(ValidateJwtsvidRequest {
                    audience: args.audience,
                    svid: args.token,
                }))
                .await
                .map_err(|s| refused("validate jwt", s))?
                .into_inner();
            if args.output == Output::Json {
                let claims = response
                    .claims
                    .as_ref()
                    .map(struct_json)
                    .unwrap_or(serde_json::Value::Null);
                return print_json(&serde_json::json!({
                    "spiffe_id": response.spiffe_id,
                    "claims": claims,
                }));
            }
            outln!("Valid JWT-SVID for {}", response.spiffe_id)?;
            if let Some(claims) = response.claims {
                for (name, value) in claims.fields {
                    outln!("  {name}: {}", display_value(&value))?;
                }
            }
            Ok(())
        }
        ApiCommand::Watch(WatchArgs { output, socket }) => {
            let mut client = socket.client().await?;
            let mut stream = client
                .fetch_x509svid(request(X509svidRequest {}))
                .await
                .map_err(|s| refused("watch", s))?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                        if output == Output::Json {
                            print_json_line(&serde_json::json!({
                                "event": "update",
                                "time": now.to_string(),
                                "svids": x509_json(&response)?,
                            }))?;
                        } else {
                            outln!("--- update at {now}")?;
                            print_x509(&response)?;
                        }
                    }
                    Ok(None) => {
                        if output == Output::Json {
                            print_json_line(&serde_json::json!({ "event": "closed" }))?;
                        } else {
                            outln!("--- the agent closed the stream")?;
                        }
                        return Ok(());
                    }
                    Err(status) => return Err(refused("identity withdrawn", status)),
                }
            }
        }
    }
}

fn print_x509(response: &X509svidResponse) -> anyhow::Result<()> {
    for svid in x509_json(response)? {
        outln!(
            "SPIFFE ID : {}",
            svid["spiffe_id"].as_str().unwrap_or_default()
        )?;
        outln!("Image     : {}", svid["image"].as_str().unwrap_or_default())?;
        outln!(
            "Expires   : {}",
            svid["expires_at"].as_str().unwrap_or_default()
        )?;
        if !svid["binding"].is_null() {
            outln!("Binding   : {}", svid["binding"])?;
        }
    }
    Ok(())
}

/// What `fetch x509` and `watch` say of each SVID (the private key is
/// never printed): SPIFFE ID, image, expiry (RFC 3339) and binding.
fn x509_json(response: &X509svidResponse) -> anyhow::Result<Vec<serde_json::Value>> {
    response
        .svids
        .iter()
        .map(|svid| {
            let (_, leaf) = x509_parser::parse_x509_certificate(&svid.x509_svid)
                .map_err(|e| anyhow::anyhow!("the agent sent an unreadable certificate: {e}"))?;
            let expires = u64::try_from(leaf.validity().not_after.timestamp())
                .map(|s| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                    )
                    .to_string()
                })
                .unwrap_or_default();
            let binding = match hallmark_ca::x509::binding_from_cert(leaf.as_ref()) {
                Ok(Some(binding)) => serde_json::from_slice(&binding).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&binding).into_owned())
                }),
                _ => serde_json::Value::Null,
            };
            Ok(serde_json::json!({
                "spiffe_id": svid.spiffe_id,
                "image": svid.hint,
                "expires_at": expires,
                "binding": binding,
            }))
        })
        .collect()
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    write(format_args!("{text}\n"))
}

fn print_json_line(value: &serde_json::Value) -> anyhow::Result<()> {
    write(format_args!("{value}\n"))
}

/// A protobuf `Struct` as JSON.
fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        Some(Kind::StringValue(s)) => s.clone().into(),
        // JWT times and counts are integers; protobuf carries every number
        // as a double.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            serde_json::Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::ListValue(l)) => l.values.iter().map(value_json).collect(),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
    }
}

/// Splits a DER certificate sequence into PEM blocks.
fn der_chain_to_pem(mut der: &[u8]) -> anyhow::Result<String> {
    let mut out = String::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("unreadable certificate in chain: {e}"))?;
        let len = der.len() - rest.len();
        out.push_str(&pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            der[..len].to_vec(),
        )));
        der = rest;
    }
    Ok(out)
}

fn write_x509(dir: &Path, response: &X509svidResponse) -> anyhow::Result<()> {
    let svid = response
        .svids
        .first()
        .context("the response holds no SVID")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join("svid.pem"),
        der_chain_to_pem(&svid.x509_svid)?.as_bytes(),
        0o644,
    )?;
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone()));
    write_atomic(&dir.join("svid.key"), key.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join("bundle.pem"),
        der_chain_to_pem(&svid.bundle)?.as_bytes(),
        0o644,
    )?;
    Ok(())
}

fn display_value(value: &prost_types::Value) -> String {
    use prost_types::value::Kind;
    match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::NumberValue(n)) => n.to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::ListValue(l)) => {
            let items: Vec<String> = l.values.iter().map(display_value).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Kind::StructValue(s)) => {
            let items: Vec<String> = s
                .fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", display_value(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Kind::NullValue(_)) | None => "null".into(),
    }
}
