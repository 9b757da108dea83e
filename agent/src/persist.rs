//! The agent's state on disk: its node SVID, the SVID's key, and the last
//! trust bundle, in the data directory (0700). Every file is written to a
//! temp file in the same directory, synced, then renamed over the old one, so
//! a crash leaves either the old or the new version, never half of one. The
//! key file is 0600 from the moment it is created.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::key::CaKey;
use hallmark_ca::tls::{leaf_serial, peer_spiffe_id};

use crate::error::AgentError;

const SVID_FILE: &str = "agent_svid.pem";
const KEY_FILE: &str = "agent_svid.key";
const BUNDLE_FILE: &str = "bundle.pem";

/// The agent's node SVID and its key.
#[derive(Clone)]
pub struct NodeSvid {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key.
    pub key: CaKey,
    /// Lowercase hex serial.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for NodeSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl NodeSvid {
    /// Builds from a chain and key, reading the ID, serial and validity from the leaf.
    pub fn new(chain: Vec<Vec<u8>>, key: CaKey) -> Result<Self, AgentError> {
        let leaf = chain
            .first()
            .ok_or_else(|| AgentError::BadResponse("node SVID chain is empty".into()))?;
        let spiffe_id = peer_spiffe_id(&[rustls_pki_types::CertificateDer::from(leaf.as_slice())])
            .map_err(|e| AgentError::BadResponse(format!("node SVID unreadable: {e}")))?;
        let serial = leaf_serial(leaf)
            .map_err(|e| AgentError::BadResponse(format!("node SVID unreadable: {e}")))?;
        let (spki, not_before, not_after) = leaf_facts(leaf)?;
        if !key.matches_spki(&spki) {
            return Err(AgentError::BadResponse(
                "the node SVID does not certify the agent's key".into(),
            ));
        }
        Ok(Self {
            spiffe_id,
            chain,
            key,
            serial,
            not_before,
            not_after,
        })
    }

    /// When to renew: at half of the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime / 2
    }

    /// Whether the agent may resume with this SVID at `now`: unexpired and of
    /// trust domain `td` (a data directory reused for another trust domain
    /// holds nothing the issuer would accept).
    pub fn usable_at(&self, td: &TrustDomain, now: SystemTime) -> bool {
        now < self.not_after && self.spiffe_id.is_member_of(td)
    }
}

/// The leaf's SubjectPublicKeyInfo DER and validity.
fn leaf_facts(leaf: &[u8]) -> Result<(Vec<u8>, SystemTime, SystemTime), AgentError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| AgentError::BadResponse(format!("node SVID unreadable: {e}")))?;
    let to_time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    };
    Ok((
        cert.public_key().raw.to_vec(),
        to_time(cert.validity().not_before),
        to_time(cert.validity().not_after),
    ))
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating with 0700) the data directory.
    pub fn open(root: &Path) -> Result<Self, AgentError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| AgentError::io(root, e))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| AgentError::io(root, e))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// An existing data directory, for reading only: neither created nor
    /// re-permissioned (health checks).
    pub fn existing(root: &Path) -> Result<Self, AgentError> {
        if !root.is_dir() {
            return Err(AgentError::io(
                root,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "data directory does not exist: the agent has never attested here",
                ),
            ));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The persisted node SVID, if there is a readable one.
    pub fn load_svid(&self) -> Result<Option<NodeSvid>, AgentError> {
        let (svid_path, key_path) = (self.root.join(SVID_FILE), self.root.join(KEY_FILE));
        if !svid_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        let chain = read_pem(&svid_path, "CERTIFICATE")?;
        let keys = read_pem(&key_path, "PRIVATE KEY")?;
        let key_der = keys
            .first()
            .ok_or_else(|| AgentError::Corrupt(key_path.clone(), "no PRIVATE KEY block".into()))?;
        let key = CaKey::from_pkcs8_der(key_der)
            .map_err(|e| AgentError::Corrupt(key_path.clone(), e.to_string()))?;
        // A crash between the two renames of `save_svid` leaves a new key
        // next to the old certificate: report it rather than fail in TLS.
        NodeSvid::new(chain, key)
            .map(Some)
            .map_err(|e| AgentError::Corrupt(svid_path, e.to_string()))
    }

    /// Persists a node SVID: the key first, so the certificate on disk
    /// never points at a key that is not there.
    pub fn save_svid(&self, svid: &NodeSvid) -> Result<(), AgentError> {
        let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.key.pkcs8_der()));
        write_atomic(&self.root.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
        let chain_pem: String = svid
            .chain
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .collect();
        write_atomic(&self.root.join(SVID_FILE), chain_pem.as_bytes(), 0o644)
    }

    /// Forgets the node SVID (the issuer refused it).
    pub fn remove_svid(&self) -> Result<(), AgentError> {
        for name in [SVID_FILE, KEY_FILE] {
            let path = self.root.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::io(&path, e)),
            }
        }
        Ok(())
    }

    /// The last trust bundle received from the issuer, if any.
    pub fn load_bundle(&self, td: &TrustDomain) -> Result<Option<Bundle>, AgentError> {
        let path = self.root.join(BUNDLE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        load_bundle_file(&path, td).map(Some)
    }

    /// Persists the trust bundle.
    pub fn save_bundle(&self, bundle: &Bundle) -> Result<(), AgentError> {
        write_atomic(
            &self.root.join(BUNDLE_FILE),
            bundle.to_pem().as_bytes(),
            0o644,
        )
    }
}

/// Reads a PEM bundle file.
pub fn load_bundle_file(path: &Path, td: &TrustDomain) -> Result<Bundle, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::io(path, e))?;
    Bundle::from_pem(td.clone(), &text)
        .map_err(|e| AgentError::Corrupt(path.to_owned(), e.to_string()))
}

fn read_pem(path: &Path, tag: &str) -> Result<Vec<Vec<u8>>, AgentError> {
    let text = std::fs::read(path).map_err(|e| AgentError::io(path, e))?;
    let blocks =
        pem::parse_many(&text).map_err(|e| AgentError::Corrupt(path.to_owned(), e.to_string()))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == tag)
        .map(|b| b.into_contents())
        .collect())
}

/// Writes `contents` to `path` atomically with `mode`: temp file in the same
/// directory (created with `mode`), fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), AgentError> {
    let dir = path
        .parent()
        .ok_or_else(|| AgentError::io(path, std::io::Error::other("no parent directory")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask: set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| AgentError::io(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use hallmark_ca::x509::{SvidRequest, X509Authority};

    use super::*;

    /// A node SVID for `key` from a fresh CA of `td`, valid for `ttl` from `now`.
    pub(crate) fn minted_svid(
        td: &TrustDomain,
        key: CaKey,
        ttl: Duration,
        now: SystemTime,
    ) -> (X509Authority, NodeSvid) {
        let ca = X509Authority::self_signed(
            td,
            CaKey::generate().unwrap(),
            Duration::from_secs(86400),
            now,
        )
        .unwrap();
        let id = SpiffeId::new(td, "/hallmark/agent/join_token/0123456789abcdef").unwrap();
        let svid = ca
            .mint_svid(
                &SvidRequest {
                    spiffe_id: &id,
                    public_key_der: &key.public_key_der(),
                    ttl,
                    dns_names: &[],
                    extensions: &[],
                },
                now,
            )
            .unwrap();
        (ca, NodeSvid::new(svid.cert_chain, key).unwrap())
    }

    #[test]
    fn persisted_svid_reloads_and_is_resumable_only_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let (_, svid) = minted_svid(
            &td,
            CaKey::generate().unwrap(),
            Duration::from_secs(3600),
            now,
        );
        data.save_svid(&svid).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = data.load_svid().unwrap().unwrap();
        assert_eq!(loaded.spiffe_id, svid.spiffe_id);
        assert_eq!(loaded.serial, svid.serial);
        assert_eq!(loaded.chain, svid.chain);
        assert_eq!(loaded.key.public_key_der(), svid.key.public_key_der());
        assert!(loaded.usable_at(&td, now));
        // Renewal is due at half-life (validity is whole seconds, backdated).
        let half = loaded.renew_at();
        assert!(half > now && half < loaded.not_after, "{half:?}");
        // Expired: not resumable.
        assert!(!loaded.usable_at(&td, loaded.not_after));
        assert!(!loaded.usable_at(&td, now + Duration::from_secs(7200)));
        // Another trust domain: not resumable.
        let other = TrustDomain::new("other.org").unwrap();
        assert!(!loaded.usable_at(&other, now));

        data.remove_svid().unwrap();
        assert!(data.load_svid().unwrap().is_none());
    }

    #[test]
    fn key_that_does_not_match_the_certificate_is_corrupt() {
        // What a crash between the key and certificate renames leaves behind.
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let (_, svid) = minted_svid(
            &td,
            CaKey::generate().unwrap(),
            Duration::from_secs(3600),
            SystemTime::now(),
        );
        data.save_svid(&svid).unwrap();
        let other = CaKey::generate().unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", other.pkcs8_der()));
        write_atomic(&dir.path().join(KEY_FILE), pem.as_bytes(), 0o600).unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(matches!(err, AgentError::Corrupt(..)), "{err}");
        assert!(err.to_string().contains("does not certify"), "{err}");
    }

    #[test]
    fn existing_neither_creates_nor_accepts_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(DataDir::existing(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn atomic_write_is_owner_only_for_keys_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn data_dir_is_private_and_empty_dir_has_no_svid() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(&dir.path().join("d")).unwrap();
        let mode = std::fs::metadata(dir.path().join("d"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(data.load_svid().unwrap().is_none());
    }

    #[test]
    fn corrupt_key_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(SVID_FILE), "").unwrap();
        std::fs::write(
            dir.path().join(KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(err.to_string().contains(KEY_FILE), "{err}");
    }
}
