//! An in-process issuer on a manual clock, an admin client on its socket,
//! signing keys and envelope builders for the gold image API tests.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hallmark_ca::clock::ManualClock;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{Image, ListImagesRequest, RegisterImageRequest};
use hallmark_server::config::ServerSettings;
use hallmark_server::events::{EventSink, Recorded, SecurityEvent};
use hallmark_server::image::{
    Algorithm, Envelope, GoldImage, SignaturePolicy, SigningKey, TrustedSigners, canonical,
};
use hallmark_server::server::{ServerHandle, start_with_events};
use tonic::transport::Channel;

/// 2026-01-01T00:00:00Z.
pub const START: u64 = 1_767_225_600;
pub const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Keeps every security event.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<SecurityEvent>>);

impl EventSink for Recorder {
    fn record(&self, event: SecurityEvent) -> Recorded {
        self.0.lock().unwrap().push(event);
        Recorded::ready(Ok(()))
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<SecurityEvent> {
        self.0.lock().unwrap().clone()
    }
}

pub fn key() -> SigningKey {
    SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap()).unwrap()
}

pub struct Issuer {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub events: Arc<Recorder>,
    pub handle: Option<ServerHandle>,
    pub admin: AdminClient<Channel>,
}

impl Issuer {
    /// An issuer for `example.org` that trusts `trusted`, at [`START`].
    pub async fn start(trusted: &[&SigningKey]) -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        Issuer::start_in(dir, trusted, ManualClock::new(UNIX_EPOCH + secs(START))).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        trusted: &[&SigningKey],
        clock: ManualClock,
    ) -> Issuer {
        let mut settings = ServerSettings::for_dirs(
            "example.org".parse().unwrap(),
            dir.path().join("data"),
            dir.path().join("admin.sock"),
        );
        let mut signers = TrustedSigners::new();
        for k in trusted {
            signers.insert(k.public_key().clone());
        }
        settings.trusted_signers = Arc::new(signers);
        settings.signature_policy = SignaturePolicy::default();
        let events = Arc::new(Recorder::default());
        let handle = start_with_events(settings, Arc::new(clock.clone()), events.clone())
            .await
            .unwrap();
        let channel = hallmark_server::admin::socket::connect(handle.admin_socket())
            .await
            .unwrap();
        Issuer {
            dir,
            clock,
            events,
            handle: Some(handle),
            admin: AdminClient::new(channel),
        }
    }

    /// Stops the issuer and starts it again on the same data directory,
    /// trusting `trusted` this time.
    pub async fn restart(mut self, trusted: &[&SigningKey]) -> Issuer {
        self.handle.take().unwrap().shutdown().await;
        Issuer::start_in(self.dir, trusted, self.clock).await
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().unwrap()
    }

    pub async fn register(&mut self, envelope: Vec<u8>) -> Result<(Image, bool), tonic::Status> {
        self.admin
            .register_image(RegisterImageRequest { envelope })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.image.unwrap(), r.created)
            })
    }

    /// Every image, retired ones included.
    pub async fn list(&mut self) -> Vec<Image> {
        self.admin
            .list_images(ListImagesRequest {})
            .await
            .unwrap()
            .into_inner()
            .images
    }

    pub fn advance_to(&self, unix: u64) {
        self.clock.set(UNIX_EPOCH + secs(unix));
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A manifest; `extra` lines go before `[code]`.
pub fn manifest(name: &str, tier: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"tests\"\nrisk_tier = \"{tier}\"\nnot_after = 2030-12-31\n{extra}\n[code]\nsha256 = [\"{CODE}\"]\n"
    )
}

/// The canonical payload of a manifest.
pub fn payload(toml: &str) -> Vec<u8> {
    canonical::encode(&GoldImage::from_toml(toml).unwrap())
}

/// The canonical payload, edited as JSON and re-encoded canonically (to
/// build payloads `image sign` would refuse to produce).
pub fn edited_payload(toml: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&payload(toml)).unwrap();
    edit(&mut value);
    canonical::encode_value(&value)
}

/// An envelope over `payload` signed by each key in turn.
pub fn sign(payload: &[u8], keys: &[&SigningKey]) -> Vec<u8> {
    let (first, rest) = keys.split_first().unwrap();
    let mut envelope = Envelope::sign(payload, first).unwrap();
    for k in rest {
        envelope.add_signature(payload, k).unwrap();
    }
    envelope.to_json()
}

/// The envelope's JSON edited.
pub fn tamper(envelope: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

pub fn data_dir(issuer: &Issuer) -> PathBuf {
    issuer.dir.path().join("data")
}
