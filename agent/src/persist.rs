//! The agent's state on disk: its node SVID with the SVID's key, and the
//! last trust bundle, in the data directory (0700). Every file is written to
//! a temp file in the same directory, synced, then renamed over the old one,
//! so a crash leaves either the old or the new version, never half of one.
//!
//! The node SVID and its key are one file, `agent_svid_and_key.pem` (0600
//! from the moment it is created: the key, then the chain), so they are
//! replaced together by one rename and a crash can never leave a key beside
//! a certificate that does not certify it. `agent_svid.pem` (0644) is a copy
//! of the chain for operators and their tools, written after it; the agent
//! never reads it, except on the first start after an upgrade from a release
//! that kept the key apart in `agent_svid.key` (that layout is read until
//! the next save, which removes the separate key).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::key::CaKey;
use hallmark_ca::tls::{leaf_serial, peer_spiffe_id};

use crate::error::AgentError;

/// The node SVID's key and chain, together (0600).
const IDENTITY_FILE: &str = "agent_svid_and_key.pem";
/// A copy of the chain for operators (0644); with [`LEGACY_KEY_FILE`], the
/// layout of earlier releases.
const SVID_FILE: &str = "agent_svid.pem";
/// The key alone, as earlier releases kept it: read on upgrade, removed by
/// the next save.
const LEGACY_KEY_FILE: &str = "agent_svid.key";
const BUNDLE_FILE: &str = "bundle.pem";
/// The writes of [`DataDir::save_svid`], in order.
#[cfg(test)]
const SAVE_STEPS: usize = 3;

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
    /// Opens (creating with 0700) the data directory. Missing parents are
    /// created 0755, as `install -d` would: the Workload API socket often
    /// sits beside the data directory (`/run/hallmark/agent/api.sock` next
    /// to `.../data`), and a parent made 0700 would lock every unprivileged
    /// workload out of it.
    pub fn open(root: &Path) -> Result<Self, AgentError> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| AgentError::io(parent, e))?;
        }
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

    /// The persisted node SVID, if there is a readable one: from the
    /// one-file layout, else from the two files of an earlier release.
    pub fn load_svid(&self) -> Result<Option<NodeSvid>, AgentError> {
        let identity_path = self.root.join(IDENTITY_FILE);
        if identity_path.exists() {
            let chain = read_pem(&identity_path, "CERTIFICATE")?;
            let keys = read_pem(&identity_path, "PRIVATE KEY")?;
            return svid_from_parts(&identity_path, chain, &keys, &identity_path).map(Some);
        }
        let (svid_path, key_path) = (self.root.join(SVID_FILE), self.root.join(LEGACY_KEY_FILE));
        if !svid_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        let chain = read_pem(&svid_path, "CERTIFICATE")?;
        let keys = read_pem(&key_path, "PRIVATE KEY")?;
        // A crash between the two renames of an earlier release's save left
        // a new key next to the old certificate: reported, not used.
        svid_from_parts(&svid_path, chain, &keys, &key_path).map(Some)
    }

    /// Persists a node SVID: key and chain in one atomic write, then the
    /// operators' copy of the chain, then the separate key of an earlier
    /// release is removed. A crash after the first write leaves the new
    /// SVID in force; before it, the old one.
    pub fn save_svid(&self, svid: &NodeSvid) -> Result<(), AgentError> {
        self.save_svid_steps(svid, usize::MAX)
    }

    /// The first `steps` writes of [`DataDir::save_svid`]: tests stop it
    /// where a crash could.
    fn save_svid_steps(&self, svid: &NodeSvid, steps: usize) -> Result<(), AgentError> {
        let chain_pem: String = svid
            .chain
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .collect();
        let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.key.pkcs8_der()));
        let both = format!("{key_pem}{chain_pem}");
        let writes: [&dyn Fn() -> Result<(), AgentError>; 3] = [
            &|| write_atomic(&self.root.join(IDENTITY_FILE), both.as_bytes(), 0o600),
            &|| write_atomic(&self.root.join(SVID_FILE), chain_pem.as_bytes(), 0o644),
            &|| remove_synced(&self.root.join(LEGACY_KEY_FILE)),
        ];
        writes.iter().take(steps).try_for_each(|write| write())
    }

    /// Forgets the node SVID (the issuer refused it). The earlier release's
    /// key goes first, then the one file the agent reads, so no crash on
    /// the way leaves a pair the agent would read.
    pub fn remove_svid(&self) -> Result<(), AgentError> {
        for name in [LEGACY_KEY_FILE, IDENTITY_FILE, SVID_FILE] {
            remove_synced(&self.root.join(name))?;
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

/// A node SVID from its chain and the `PRIVATE KEY` blocks found for it;
/// errors name `chain_path` or `key_path`.
fn svid_from_parts(
    chain_path: &Path,
    chain: Vec<Vec<u8>>,
    keys: &[Vec<u8>],
    key_path: &Path,
) -> Result<NodeSvid, AgentError> {
    let [key_der] = keys else {
        return Err(AgentError::Corrupt(
            key_path.to_owned(),
            format!("expected one PRIVATE KEY block, found {}", keys.len()),
        ));
    };
    let key = CaKey::from_pkcs8_der(key_der)
        .map_err(|e| AgentError::Corrupt(key_path.to_owned(), e.to_string()))?;
    NodeSvid::new(chain, key).map_err(|e| AgentError::Corrupt(chain_path.to_owned(), e.to_string()))
}

/// Removes `path` if it exists, and syncs its directory.
fn remove_synced(path: &Path) -> Result<(), AgentError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::io(path, e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AgentError::io(dir, e))
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
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(IDENTITY_FILE), 0o600);
        // The operators' copy of the chain holds no key.
        assert_eq!(mode(SVID_FILE), 0o644);
        let copy = std::fs::read_to_string(dir.path().join(SVID_FILE)).unwrap();
        assert!(copy.contains("CERTIFICATE") && !copy.contains("PRIVATE KEY"));

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
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn legacy_key_that_does_not_match_the_certificate_is_corrupt() {
        // What a crash between the key and certificate renames of an
        // earlier release left behind.
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let (_, svid) = minted_svid(
            &td,
            CaKey::generate().unwrap(),
            Duration::from_secs(3600),
            SystemTime::now(),
        );
        write_legacy_pair(dir.path(), &svid);
        let other = CaKey::generate().unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", other.pkcs8_der()));
        write_atomic(&dir.path().join(LEGACY_KEY_FILE), pem.as_bytes(), 0o600).unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(matches!(err, AgentError::Corrupt(..)), "{err}");
        assert!(err.to_string().contains("does not certify"), "{err}");
    }

    /// The node SVID files as a release before the one-file layout wrote
    /// them: the chain in `agent_svid.pem`, the key in `agent_svid.key`.
    fn write_legacy_pair(dir: &Path, svid: &NodeSvid) {
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.key.pkcs8_der()));
        write_atomic(&dir.join("agent_svid.key"), key.as_bytes(), 0o600).unwrap();
        let chain: String = svid
            .chain
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .collect();
        write_atomic(&dir.join("agent_svid.pem"), chain.as_bytes(), 0o644).unwrap();
    }

    #[test]
    fn a_crash_anywhere_in_a_save_leaves_a_key_and_certificate_that_match() {
        let td = TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(3600);
        let (_, old) = minted_svid(&td, CaKey::generate().unwrap(), ttl, now);
        let (_, new) = minted_svid(&td, CaKey::generate().unwrap(), ttl, now);
        // From the layout this release writes, and from the one an earlier
        // release left (the first save after an upgrade).
        for legacy in [false, true] {
            for crash_after in 0..=SAVE_STEPS {
                let dir = tempfile::tempdir().unwrap();
                let data = DataDir::open(dir.path()).unwrap();
                if legacy {
                    write_legacy_pair(dir.path(), &old);
                } else {
                    data.save_svid(&old).unwrap();
                }
                assert_eq!(data.load_svid().unwrap().unwrap().serial, old.serial);
                data.save_svid_steps(&new, crash_after).unwrap();
                let loaded = data.load_svid().unwrap_or_else(|e| {
                    panic!("legacy {legacy}, crash after step {crash_after}: {e}")
                });
                let loaded = loaded.unwrap();
                // `NodeSvid::new` refuses a key the leaf does not certify;
                // and it is one of the two SVIDs, whole.
                let (spki, _, _) = leaf_facts(&loaded.chain[0]).unwrap();
                assert!(loaded.key.matches_spki(&spki));
                let whole = |s: &NodeSvid| {
                    loaded.serial == s.serial
                        && loaded.chain == s.chain
                        && loaded.key.public_key_der() == s.key.public_key_der()
                };
                assert!(
                    whole(&old) || whole(&new),
                    "legacy {legacy}, crash after step {crash_after}: a mixed pair"
                );
                if crash_after >= 1 {
                    assert!(whole(&new), "the first step commits the new pair");
                }
                if crash_after == SAVE_STEPS {
                    // Upgraded: the separate key is gone.
                    assert!(!dir.path().join(LEGACY_KEY_FILE).exists());
                }
            }
        }
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
        let bad_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(SVID_FILE), "").unwrap();
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), bad_key).unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(err.to_string().contains(LEGACY_KEY_FILE), "{err}");

        std::fs::write(dir.path().join(IDENTITY_FILE), bad_key).unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(err.to_string().contains(IDENTITY_FILE), "{err}");
        // Two keys in the one file: which one the chain is for is unknown.
        let td = TrustDomain::new("example.org").unwrap();
        let (_, svid) = minted_svid(
            &td,
            CaKey::generate().unwrap(),
            Duration::from_secs(3600),
            SystemTime::now(),
        );
        data.save_svid(&svid).unwrap();
        let mut text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        text.push_str(&pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            CaKey::generate().unwrap().pkcs8_der(),
        )));
        std::fs::write(dir.path().join(IDENTITY_FILE), text).unwrap();
        let err = data.load_svid().unwrap_err();
        assert!(err.to_string().contains("found 2"), "{err}");
    }
}
