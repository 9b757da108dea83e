//! Workload credentials: `MintX509Svids` and `MintJwtSvid`.
//!
//! The caller is an attested agent (mutual TLS, honoured node SVID). It sends
//! the evidence it measured about a workload and, for X.509, public keys it
//! generated on the node. The issuer takes SubjectPublicKeyInfo rather than
//! CSRs: the agent is already authenticated and only ever obtains SVIDs for
//! identities its workloads' evidence matches, so a CSR's proof of possession
//! would protect nothing while its signature check costs about three
//! signings per SVID on the hot path.

use std::time::{Duration, Instant};

use tonic::Status;

use hallmark_ca::CaError;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::jwt::{JwtSvidClaims, check_audience};
use hallmark_ca::x509::{SvidExtension, SvidRequest};
use hallmark_proto::node::{
    MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidsRequest, MintX509SvidsResponse,
    WorkloadEvidence, WorkloadJwtSvid, WorkloadX509Svid,
};

use super::{NodeApi, audit_status};
use crate::authority::AuthorityError;
use crate::convert::{svid_to_proto, unix_i64};
use crate::events::{Recorded, SecurityEvent};
use crate::issuance::binding::{binding_json, binding_object};
use crate::issuance::matcher::{Candidate, NodeContext};
use crate::issuance::{evidence_digest, workload_class};
use crate::metrics::RefusalReason;
use crate::revocation::RevocationIndex;
use crate::store::{NodeAttestorKind, NodeRecord};

/// Most keys (so SVIDs) one `MintX509Svids` call may ask for.
pub const MAX_KEYS_PER_CALL: usize = 16;
/// The bounds on a JWT-SVID's audience, the same for the agent, the issuer
/// and the CA (see [`check_audience`]).
pub use hallmark_ca::jwt::{MAX_AUDIENCE_BYTES, MAX_AUDIENCES};

impl NodeApi {
    /// `MintX509Svids`: the SVIDs are returned only once their audit
    /// records are durable.
    pub(crate) async fn mint_x509(
        &self,
        agent: &NodeRecord,
        request: MintX509SvidsRequest,
    ) -> Result<MintX509SvidsResponse, Status> {
        self.mint("x509", agent, request, Self::mint_x509_now, |r| {
            r.svids.len()
        })
        .await
    }

    /// `MintJwtSvid`: the tokens are returned only once their audit records
    /// are durable.
    pub(crate) async fn mint_jwt(
        &self,
        agent: &NodeRecord,
        request: MintJwtSvidRequest,
    ) -> Result<MintJwtSvidResponse, Status> {
        self.mint("jwt", agent, request, Self::mint_jwt_now, |r| r.svids.len())
            .await
    }

    /// One mint call: `now` matches and signs, every refusal is audited,
    /// and the outcome is delivered once its records are durable; `issued`
    /// counts the credentials in a response.
    ///
    /// Matching and signing run on the executor thread that polls the
    /// call: a 16-key call holds it for ~0.4 ms, while the runtime's other
    /// workers steal its queued tasks. A per-core signing pool was measured
    /// and dropped: on this 2-core machine it cost 13% of issuance (16 keys
    /// per call, five alternating pairs: 34,100 against 38,600 SVIDs/s) in
    /// thread hand-offs and scheduler contention with the runtime.
    async fn mint<Q: MintRequest, A>(
        &self,
        kind: &'static str,
        agent: &NodeRecord,
        request: Q,
        now: fn(&NodeApi, &NodeRecord, &Q, &mut Vec<Recorded>) -> Result<A, Status>,
        issued: fn(&A) -> usize,
    ) -> Result<A, Status> {
        let started = Instant::now();
        let mut records = Vec::new();
        let outcome = now(self, agent, &request, &mut records);
        self.audit_bad_request(agent, kind, &outcome, request.evidence(), &mut records);
        let signed = outcome.is_ok();
        let delivered = deliver(outcome, records).await;
        self.count(kind, signed, delivered.as_ref().map(issued));
        self.metrics.mint_latency(kind, started.elapsed());
        delivered
    }

    /// Counts a delivered mint; a signed one whose audit record could not
    /// be written was withheld, so it counts as refused (refusals are
    /// counted where they are decided).
    fn count(&self, kind: &'static str, signed: bool, delivered: Result<usize, &Status>) {
        match delivered {
            Ok(n) => self.metrics.minted(kind, n),
            Err(_) if signed => self.metrics.refused(kind, RefusalReason::AuditUnavailable),
            Err(_) => {}
        }
    }

    /// A refusal that no constraint check recorded (malformed evidence or
    /// keys, no audience, an ID the workload is not entitled to, a signing
    /// failure) is audited here, so every refused mint leaves a record.
    fn audit_bad_request<T>(
        &self,
        agent: &NodeRecord,
        kind: &'static str,
        outcome: &Result<T, Status>,
        evidence: Option<&WorkloadEvidence>,
        records: &mut Vec<Recorded>,
    ) {
        if let Err(status) = outcome
            && records.is_empty()
        {
            self.metrics
                .refused(kind, RefusalReason::of_status(status.code()));
            records.push(self.events.record(SecurityEvent::SvidRefused {
                kind,
                node: agent.spiffe_id.clone(),
                reason: format!("{:?}: {}", status.code(), status.message()),
                evidence_digest: evidence.map_or_else(|| "none".to_owned(), evidence_digest),
                workload: evidence.map_or_else(|| "none".to_owned(), workload_class),
            }));
        }
    }

    /// Matches and signs; appends an audit record per SVID (or for the
    /// refusal) to `records` while the revocation filter is still held, so
    /// the log orders every mint against every kill.
    fn mint_x509_now(
        &self,
        agent: &NodeRecord,
        request: &MintX509SvidsRequest,
        records: &mut Vec<Recorded>,
    ) -> Result<MintX509SvidsResponse, Status> {
        let evidence = check_evidence(request.evidence.as_ref())?;
        if request.public_keys.is_empty() {
            return Err(Status::invalid_argument(
                "public_keys is empty: send one SubjectPublicKeyInfo (DER) per SVID wanted",
            ));
        }
        if request.public_keys.len() > MAX_KEYS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_KEYS_PER_CALL} public keys per call"
            )));
        }
        // Held until the SVIDs are signed: a kill waits for this mint, or
        // this mint sees the kill (see `crate::revocation`).
        let revocations = self.revocations.filter();
        let matches = self.matches(agent, evidence, "x509", &revocations, records)?;
        if matches.len() > request.public_keys.len()
            && request.public_keys.len() < MAX_KEYS_PER_CALL
        {
            // Sign nothing the workload would not get all of: the agent
            // sends as many keys as this says, and no SVID is minted (and
            // audited) only to be thrown away.
            return Ok(MintX509SvidsResponse {
                svids: Vec::new(),
                unminted_matches: u32::try_from(matches.len()).unwrap_or(u32::MAX),
            });
        }
        // The CA parses each key it signs for (a second parse of every key
        // here cost 3% of the issuer's CPU at 16 keys per call); the keys
        // beyond the matches, which it never sees, are checked here. A
        // malformed key is refused before anything is recorded as minted:
        // the records are made once every SVID of the call is signed.
        for (i, key) in request.public_keys.iter().enumerate().skip(matches.len()) {
            if rcgen::SubjectPublicKeyInfo::from_der(key).is_err() {
                return Err(bad_public_key(i));
            }
        }
        let max_ttl = self.authority.max_svid_ttl();
        let mut svids = Vec::with_capacity(matches.len().min(request.public_keys.len()));
        let mut minted = Vec::with_capacity(svids.capacity());
        for (index, (candidate, key)) in matches.iter().zip(&request.public_keys).enumerate() {
            let image = &candidate.image;
            let binding = SvidExtension::binding(&binding_json(
                image,
                &evidence.exe_sha256,
                &agent.spiffe_id,
            ));
            let dns_names: Vec<String> = image.dns_names.iter().cloned().collect();
            let ttl = image
                .x509_ttl
                .map(Duration::from_secs)
                .unwrap_or(max_ttl)
                .min(max_ttl);
            let svid = self
                .authority
                .mint_workload_svid(&SvidRequest {
                    spiffe_id: &image.spiffe_id,
                    public_key_der: key,
                    ttl,
                    dns_names: &dns_names,
                    extensions: std::slice::from_ref(&binding),
                })
                .map_err(|e| match e {
                    AuthorityError::Ca(CaError::InvalidPublicKey(_)) => bad_public_key(index),
                    e => Status::internal(format!("minting failed: {e}")),
                })?;
            minted.push(SecurityEvent::SvidMinted {
                kind: "x509",
                id: svid.serial.clone(),
                spiffe_id: image.spiffe_id.clone(),
                image: image.image_ref(),
                code_sha256: evidence.exe_sha256.clone(),
                model_digest: image.model.as_ref().map(|m| m.digest.as_str().to_owned()),
                node: agent.spiffe_id.clone(),
                // The lifetime granted from now (not_before is backdated
                // for clock skew, so not_after - not_before is longer).
                ttl_secs: ttl.as_secs(),
            });
            svids.push(WorkloadX509Svid {
                svid: Some(svid_to_proto(&svid)),
                image: image.image_ref(),
                key_index: u32::try_from(index).unwrap_or(u32::MAX),
            });
        }
        records.extend(minted.into_iter().map(|event| self.events.record(event)));
        let unminted = matches.len().saturating_sub(svids.len());
        Ok(MintX509SvidsResponse {
            svids,
            unminted_matches: u32::try_from(unminted).unwrap_or(u32::MAX),
        })
    }

    fn mint_jwt_now(
        &self,
        agent: &NodeRecord,
        request: &MintJwtSvidRequest,
        records: &mut Vec<Recorded>,
    ) -> Result<MintJwtSvidResponse, Status> {
        let evidence = check_evidence(request.evidence.as_ref())?;
        let audience = check_audience(&request.audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let only = if request.spiffe_id.is_empty() {
            None
        } else {
            Some(SpiffeId::parse(&request.spiffe_id).map_err(|e| {
                Status::invalid_argument(format!("spiffe_id {:?}: {e}", request.spiffe_id))
            })?)
        };
        // Held until the tokens are signed (see `mint_x509`).
        let revocations = self.revocations.filter();
        let mut matches = self.matches(agent, evidence, "jwt", &revocations, records)?;
        if let Some(wanted) = &only {
            matches.retain(|c| c.image.spiffe_id == *wanted);
            if matches.is_empty() {
                return Err(Status::permission_denied(format!(
                    "the workload is not entitled to {wanted}"
                )));
            }
        }
        let max_ttl = self.authority.max_svid_ttl();
        let mut svids = Vec::with_capacity(matches.len());
        for candidate in &matches {
            let image = &candidate.image;
            let mut extra = serde_json::Map::new();
            extra.insert(
                "hallmark".into(),
                serde_json::Value::Object(binding_object(
                    image,
                    &evidence.exe_sha256,
                    &agent.spiffe_id,
                )),
            );
            if !image.scopes.is_empty() {
                let scope: Vec<&str> = image.scopes.iter().map(String::as_str).collect();
                extra.insert("scope".into(), serde_json::Value::String(scope.join(" ")));
            }
            let ttl = image
                .jwt_ttl
                .map(Duration::from_secs)
                .unwrap_or(max_ttl)
                .min(max_ttl);
            let jwt = self
                .authority
                .mint_jwt_svid(&JwtSvidClaims {
                    spiffe_id: image.spiffe_id.clone(),
                    audience: audience.clone(),
                    ttl,
                    extra,
                })
                .map_err(|e| Status::internal(format!("minting failed: {e}")))?;
            records.push(self.events.record(SecurityEvent::SvidMinted {
                kind: "jwt",
                id: jwt.jti.clone(),
                spiffe_id: image.spiffe_id.clone(),
                image: image.image_ref(),
                code_sha256: evidence.exe_sha256.clone(),
                model_digest: image.model.as_ref().map(|m| m.digest.as_str().to_owned()),
                node: agent.spiffe_id.clone(),
                ttl_secs: ttl.as_secs(),
            }));
            svids.push(WorkloadJwtSvid {
                spiffe_id: image.spiffe_id.as_str().to_owned(),
                token: jwt.token,
                expires_at: unix_i64(jwt.expires_at),
                image: image.image_ref(),
            });
        }
        Ok(MintJwtSvidResponse { svids })
    }

    /// The matching images, or `PermissionDenied` naming what failed (audited):
    /// a revoked image names the revocation's id, target and reason.
    fn matches(
        &self,
        agent: &NodeRecord,
        evidence: &WorkloadEvidence,
        kind: &'static str,
        revocations: &RevocationIndex,
        records: &mut Vec<Recorded>,
    ) -> Result<Vec<std::sync::Arc<Candidate>>, Status> {
        let node = NodeContext {
            agent: &agent.spiffe_id,
            // An agent with no attestor on record is banned, and never
            // gets this far (`authenticate` refuses it).
            attestor: agent.attestor.map_or("", NodeAttestorKind::as_str),
        };
        self.images
            .current()
            .match_evidence(evidence, node, revocations, self.clock.now())
            .map_err(|no_match| {
                self.metrics
                    .refused(kind, RefusalReason::of_no_match(&no_match));
                let reason = no_match.to_string();
                records.push(self.events.record(SecurityEvent::SvidRefused {
                    kind,
                    node: agent.spiffe_id.clone(),
                    reason: reason.clone(),
                    evidence_digest: evidence_digest(evidence),
                    workload: workload_class(evidence),
                }));
                Status::permission_denied(reason)
            })
    }
}

/// A mint request: what it says about the workload.
trait MintRequest {
    fn evidence(&self) -> Option<&WorkloadEvidence>;
}

impl MintRequest for MintX509SvidsRequest {
    fn evidence(&self) -> Option<&WorkloadEvidence> {
        self.evidence.as_ref()
    }
}

impl MintRequest for MintJwtSvidRequest {
    fn evidence(&self) -> Option<&WorkloadEvidence> {
        self.evidence.as_ref()
    }
}

/// Delivers a mint's outcome once its audit records are durable; if they
/// cannot be written, the outcome is withheld (`Unavailable`).
async fn deliver<T>(outcome: Result<T, Status>, records: Vec<Recorded>) -> Result<T, Status> {
    match Recorded::all(records).await {
        Ok(()) => outcome,
        Err(error) => Err(match &outcome {
            Ok(_) => audit_status("the credentials were signed but not issued", &error),
            Err(status) => audit_status(&format!("refused ({})", status.message()), &error),
        }),
    }
}

/// `InvalidArgument` for the key at `index`.
fn bad_public_key(index: usize) -> Status {
    Status::invalid_argument(format!(
        "public_keys[{index}] is not a DER SubjectPublicKeyInfo of a supported key type"
    ))
}

/// Evidence must be present and well-formed before it is matched.
fn check_evidence(evidence: Option<&WorkloadEvidence>) -> Result<&WorkloadEvidence, Status> {
    let evidence = evidence.ok_or_else(|| Status::invalid_argument("evidence is missing"))?;
    let is_hex = |s: &str| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_hex(&evidence.exe_sha256) {
        return Err(Status::invalid_argument(
            "evidence.exe_sha256 must be 64 lowercase hex characters",
        ));
    }
    for (field, tree) in [("app", &evidence.app), ("model", &evidence.model)] {
        if let Some(tree) = tree {
            let hex = tree.digest.strip_prefix("sha256:").unwrap_or_default();
            if !is_hex(hex) {
                return Err(Status::invalid_argument(format!(
                    "evidence.{field}.digest must be sha256:<64 lowercase hex>"
                )));
            }
        }
    }
    Ok(evidence)
}
