//! Unit-test fixtures: a CA, SVIDs and JWT-SVIDs carrying bindings, and an
//! in-memory rustls handshake.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};

use hallmark_ca::bundle::SharedBundle;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::jwt::JwtSvidClaims;
use hallmark_ca::key::CaKey;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_ca::tls::SvidCertResolver;
use hallmark_ca::x509::{SvidExtension, SvidRequest};

pub(crate) const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub(crate) const MODEL_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
pub(crate) const NODE: &str = "spiffe://example.org/hallmark/agent/join_token/ab";

pub(crate) struct Fixture {
    pub(crate) ca: CaManager,
    pub(crate) td: TrustDomain,
    pub(crate) now: SystemTime,
}

/// A binding for `image` (`name@version`) with the model `name`/`version`.
pub(crate) fn binding(image: &str, model: Option<(&str, &str)>) -> Value {
    let mut b = json!({
        "code_sha256": CODE,
        "image": image,
        "node": NODE,
        "owner": "alice@example.org",
        "risk_tier": "medium",
    });
    if let Some((name, version)) = model {
        b["model"] = json!({"digest": MODEL_DIGEST, "name": name, "version": version});
    }
    b
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let now = SystemTime::now();
        let td = TrustDomain::new("example.org").unwrap();
        let ca = CaManager::generate(CaConfig::new(td.clone()), now).unwrap();
        Fixture { ca, td, now }
    }

    pub(crate) fn id(&self, path: &str) -> SpiffeId {
        SpiffeId::new(&self.td, path).unwrap()
    }

    pub(crate) fn bundle(&self) -> SharedBundle {
        SharedBundle::new(self.ca.bundle())
    }

    /// An X.509-SVID for `path` carrying `binding`: (chain, PKCS#8 key).
    pub(crate) fn x509(&self, path: &str, binding: Option<&Value>) -> (Vec<Vec<u8>>, Vec<u8>) {
        let key = CaKey::generate().unwrap();
        let id = self.id(path);
        let json = binding.map(|b| serde_json::to_vec(b).unwrap());
        let extensions: Vec<SvidExtension> =
            json.iter().map(|j| SvidExtension::binding(j)).collect();
        let svid = self
            .ca
            .mint_x509_svid(
                &SvidRequest {
                    spiffe_id: &id,
                    public_key_der: &key.public_key_der(),
                    ttl: Duration::from_secs(300),
                    dns_names: &[],
                    extensions: &extensions,
                },
                self.now,
            )
            .unwrap();
        (svid.cert_chain, key.pkcs8_der())
    }

    pub(crate) fn resolver(&self, path: &str, binding: Option<&Value>) -> Arc<SvidCertResolver> {
        let (chain, key) = self.x509(path, binding);
        let resolver = SvidCertResolver::new();
        resolver.set(chain, &key).unwrap();
        Arc::new(resolver)
    }

    /// A JWT-SVID for `path` and `audience`, with `binding` and `scope`.
    pub(crate) fn jwt(
        &self,
        path: &str,
        audience: &str,
        binding: Option<Value>,
        scope: Option<&str>,
    ) -> String {
        let mut extra = serde_json::Map::new();
        if let Some(b) = binding {
            extra.insert("hallmark".into(), b);
        }
        if let Some(s) = scope {
            extra.insert("scope".into(), s.into());
        }
        self.ca
            .mint_jwt_svid(
                &JwtSvidClaims {
                    spiffe_id: self.id(path),
                    audience: vec![audience.into()],
                    ttl: Duration::from_secs(300),
                    extra,
                },
                self.now,
            )
            .unwrap()
            .token
    }
}

/// Which end of a handshake failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Runs a handshake between the two configs in memory.
pub(crate) fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<(ClientConnection, ServerConnection), (Side, rustls::Error)> {
    let mut client =
        ClientConnection::new(client, ServerName::try_from("ignored.invalid").unwrap()).unwrap();
    let mut server = ServerConnection::new(server).unwrap();
    for _ in 0..32 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server
                .process_new_packets()
                .map_err(|e| (Side::Server, e))?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client
                .process_new_packets()
                .map_err(|e| (Side::Client, e))?;
        }
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
