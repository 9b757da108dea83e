//! Envoy's secret discovery service (SDS v3) on the Workload API socket,
//! so an Envoy (or an Istio proxy) beside a workload gets the workload's
//! SVID and the trust bundles without a SPIFFE client library.
//!
//! The caller is attested exactly as for `FetchX509SVID` (the same
//! measurement, limits, liveness challenge and sender check; Envoy sends
//! no `workload.spiffe.io` header, and needs none: the header guards
//! against SSRF through HTTP clients, and an SDS client speaks gRPC on a
//! Unix socket). What it may fetch is what that process's evidence
//! matches: SDS is another encoding of the same `X509SVIDResponse`, built
//! from the same stream, so rotation, bundle changes, revocations and the
//! process exiting reach Envoy as they reach any Workload API client.
//!
//! Resource names (`[sds]` in agent.toml):
//! - `default_svid_name` (`default`): the first SVID, as a `TlsCertificate`;
//! - `default_bundle_name` (`ROOTCA`): the trust domain's CA certificates,
//!   as a `CertificateValidationContext`;
//! - an SVID's SPIFFE ID: that SVID; a trust domain's ID
//!   (`spiffe://example.org`): its bundle, this one or a federated one;
//! - no names at all: every SVID and every bundle, each by its ID.
//!
//! Unknown names are left out of the response (the xDS rule: Envoy keeps
//! waiting for them), and logged with the names that exist.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::Stream;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use hallmark_proto::workload::X509svidResponse;
use hallmark_proto::xds::envoy::config::core::v3::{DataSource, data_source};
use hallmark_proto::xds::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use hallmark_proto::xds::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use hallmark_proto::xds::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;

use super::service::{WorkloadService, caller};
use crate::config::SdsSettings;

/// The type of every resource SDS serves.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The SDS service: the Workload API's SVID stream, encoded for Envoy.
#[derive(Debug, Clone)]
pub(crate) struct SdsService {
    workload: WorkloadService,
    names: SdsSettings,
}

impl SdsService {
    pub(crate) fn new(workload: WorkloadService, names: SdsSettings) -> Self {
        Self { workload, names }
    }

    /// Answers Envoy's requests on one stream: a response whenever the
    /// names it asks for change or the SVIDs or bundles behind them do;
    /// nothing for an ACK, a log line for a NACK.
    async fn serve(
        self,
        mut requests: Streaming<DiscoveryRequest>,
        mut updates: mpsc::Receiver<Result<X509svidResponse, Status>>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        let mut latest: Option<X509svidResponse> = None;
        // The names of the last request, once one came.
        let mut names: Option<Vec<String>> = None;
        let mut version = 0u64;
        let mut nonce = 0u64;
        let mut sent_nonce = String::new();
        let mut warned: Vec<String> = Vec::new();
        loop {
            let changed = tokio::select! {
                request = requests.message() => {
                    let request = match request {
                        Ok(Some(request)) => request,
                        // Envoy went away (or closed its side).
                        Ok(None) | Err(_) => return,
                    };
                    if let Err(refusal) = check_type(&request.type_url) {
                        let _ = tx.send(Err(refusal)).await;
                        return;
                    }
                    if let Some(error) = &request.error_detail {
                        // A NACK: Envoy keeps what it had; sending the same
                        // again would be refused again.
                        tracing::warn!(
                            node = request.node.as_ref().map(|n| n.id.as_str()).unwrap_or_default(),
                            version = %request.version_info,
                            code = error.code,
                            message = %error.message,
                            "an SDS client rejected the secrets it was sent"
                        );
                        continue;
                    }
                    if !request.response_nonce.is_empty() && request.response_nonce != sent_nonce {
                        // About a response older than the last one: the
                        // newer one answers it.
                        continue;
                    }
                    let same = names.as_ref().is_some_and(|n| same_names(n, &request.resource_names));
                    if same && !request.response_nonce.is_empty() {
                        // An ACK of what was sent.
                        continue;
                    }
                    names = Some(request.resource_names);
                    true
                }
                update = updates.recv() => match update {
                    Some(Ok(response)) => {
                        latest = Some(response);
                        version += 1;
                        names.is_some()
                    }
                    Some(Err(refusal)) => {
                        let _ = tx.send(Err(refusal)).await;
                        return;
                    }
                    None => return,
                },
                () = tx.closed() => return,
            };
            let (Some(requested), Some(current), true) = (&names, &latest, changed) else {
                continue;
            };
            let (resources, unknown) = secrets(&self.names, requested, current);
            if !unknown.is_empty() && unknown != warned {
                tracing::warn!(
                    unknown = ?unknown,
                    known = ?known_names(&self.names, current),
                    "an SDS client asked for secrets this workload has not got"
                );
                warned = unknown;
            }
            nonce += 1;
            sent_nonce = nonce.to_string();
            let response = discovery_response(resources, version, &sent_nonce);
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "this agent serves SDS as StreamSecrets and FetchSecrets, not DeltaSecrets: configure the SDS cluster with api_type GRPC (Envoy's default)",
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = caller(&request)?;
        let updates = self.workload.watch_x509(caller)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().serve(request.into_inner(), updates, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        check_type(&request.get_ref().type_url)?;
        let caller = caller(&request)?;
        let mut updates = self.workload.watch_x509(caller)?;
        let current = match updates.recv().await {
            Some(Ok(current)) => current,
            Some(Err(refusal)) => return Err(refusal),
            None => return Err(Status::unavailable("the agent is shutting down")),
        };
        let (resources, _) = secrets(&self.names, &request.get_ref().resource_names, &current);
        Ok(Response::new(discovery_response(resources, 1, "1")))
    }
}

/// Refuses a request for anything but secrets.
fn check_type(type_url: &str) -> Result<(), Status> {
    if type_url.is_empty() || type_url == SECRET_TYPE_URL {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this is the secret discovery service: type_url must be {SECRET_TYPE_URL}, not {type_url:?}"
        )))
    }
}

/// Whether two name lists ask for the same set.
fn same_names(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

fn discovery_response(resources: Vec<Secret>, version: u64, nonce: &str) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_string(),
        resources: resources
            .into_iter()
            .map(|secret| prost_types::Any {
                type_url: SECRET_TYPE_URL.to_owned(),
                value: secret.encode_to_vec(),
            })
            .collect(),
        canary: false,
        type_url: SECRET_TYPE_URL.to_owned(),
        nonce: nonce.to_owned(),
    }
}

/// Every secret of `current` by the name it is served under: the
/// configured default names first, then SVIDs by SPIFFE ID and bundles by
/// trust domain ID.
fn catalog(names: &SdsSettings, current: &X509svidResponse) -> BTreeMap<String, Secret> {
    let mut all = BTreeMap::new();
    for svid in &current.svids {
        all.entry(svid.spiffe_id.clone()).or_insert_with(|| {
            tls_certificate(&svid.spiffe_id, &svid.x509_svid, &svid.x509_svid_key)
        });
    }
    if let Some(first) = current.svids.first() {
        if let Some(td) = trust_domain_id(&first.spiffe_id) {
            all.insert(td.clone(), validation_context(&td, &first.bundle));
        }
        all.insert(
            names.default_svid_name.clone(),
            tls_certificate(
                &names.default_svid_name,
                &first.x509_svid,
                &first.x509_svid_key,
            ),
        );
        all.insert(
            names.default_bundle_name.clone(),
            validation_context(&names.default_bundle_name, &first.bundle),
        );
    }
    for (td, bundle) in &current.federated_bundles {
        all.entry(td.clone())
            .or_insert_with(|| validation_context(td, bundle));
    }
    all
}

/// The secrets `requested` names (all of them, by ID, for no names), and
/// the names that are not there.
fn secrets(
    names: &SdsSettings,
    requested: &[String],
    current: &X509svidResponse,
) -> (Vec<Secret>, Vec<String>) {
    let mut all = catalog(names, current);
    if requested.is_empty() {
        let defaults = [&names.default_svid_name, &names.default_bundle_name];
        return (
            all.into_iter()
                .filter(|(name, _)| !defaults.contains(&name))
                .map(|(_, secret)| secret)
                .collect(),
            Vec::new(),
        );
    }
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for name in requested {
        match all.remove(name) {
            Some(secret) => found.push(secret),
            None if found.iter().any(|s: &Secret| &s.name == name) => {}
            None => unknown.push(name.clone()),
        }
    }
    (found, unknown)
}

/// The names a client could ask for, for the log.
fn known_names(names: &SdsSettings, current: &X509svidResponse) -> Vec<String> {
    catalog(names, current).into_keys().collect()
}

fn tls_certificate(name: &str, chain_der: &[u8], key_pkcs8: &[u8]) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(certificates_pem(chain_der))),
            private_key: Some(inline(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                key_pkcs8.to_vec(),
            )))),
        })),
    }
}

fn validation_context(name: &str, bundle_der: &[u8]) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(certificates_pem(bundle_der))),
            },
        )),
    }
}

fn inline(pem_text: String) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem_text.into_bytes())),
    }
}

/// Concatenated DER certificates (as the Workload API carries them) as PEM.
fn certificates_pem(mut der: &[u8]) -> String {
    let mut out = String::new();
    while !der.is_empty() {
        let Ok((rest, _)) = x509_parser::parse_x509_certificate(der) else {
            // Written by this agent from certificates it parsed: cannot
            // happen; stop rather than send a torn chain.
            tracing::error!("a certificate of a Workload API response does not parse");
            break;
        };
        let taken = der.len() - rest.len();
        out.push_str(&pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            der[..taken].to_vec(),
        )));
        der = rest;
    }
    out
}

/// `spiffe://example.org` for `spiffe://example.org/anything`.
fn trust_domain_id(spiffe_id: &str) -> Option<String> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next().filter(|td| !td.is_empty())?;
    Some(format!("spiffe://{td}"))
}

#[cfg(test)]
mod tests;
