//! Gold image registration over the admin API: register, list, show, retire.
//!
//! Decisions worth knowing:
//! - Registration verifies the envelope completely before anything is
//!   written; every refusal stores nothing.
//! - `name@version` is immutable. The same payload again answers OK with
//!   `created = false`; if the new envelope carries more trusted signatures
//!   than the stored one (a cosignature added after registration) it
//!   replaces the stored envelope, atomically and only if the stored payload
//!   is still the same, keeping the original registration time and uid.
//!   Different content is `AlreadyExists`; a retired `name@version` is
//!   `FailedPrecondition` (publish a new version).
//! - Versions compare numerically everywhere ([`hallmark_ca::version`]): a
//!   new image must spell a numeric version canonically (`1.0.0`, not
//!   `1.0.00`: `InvalidArgument`), and another spelling of a registered
//!   version (`1.0` beside `1.0.0`) is `AlreadyExists`.
//! - What is read back is re-verified with today's signers and policy: an
//!   image whose signatures no longer verify is listed with
//!   `verification_error`, not hidden.

use std::sync::PoisonError;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tonic::Status;

use hallmark_ca::version::same_version;
use hallmark_proto::admin::Image;

use super::{AdminApi, Call};
use crate::convert::unix_secs;
use crate::events::SecurityEvent;
use crate::image::types::{ImageName, ImageVersion};
use crate::image::{ErrorClass, ImageError, VerifiedImage, canonical, verify_envelope};
use crate::issuance::load_matcher;
use crate::node::store_status;
use crate::store::{EnvelopeReplace, ImagePut, ImageRecord, ImageRetire, Retirement};

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registered {
    /// `name@version` was stored now.
    Created,
    /// It was registered with this payload; the stored envelope was kept.
    Unchanged,
    /// It was registered with this payload; this envelope carries more
    /// trusted signatures and replaced the stored one.
    Cosigned,
}

/// Longest retirement reason, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// The status for an image refusal: malformed input is `InvalidArgument`,
/// a signature-policy refusal `PermissionDenied`; the message names the field.
fn image_status(error: &ImageError) -> Status {
    match error.class() {
        ErrorClass::Refused => Status::permission_denied(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

impl AdminApi {
    /// Registers an envelope, recording the outcome as a security event
    /// (`image_registered`, `image_cosigned` when a richer envelope of a
    /// registered payload replaced the stored one, or
    /// `image_registration_refused`).
    pub(super) fn register_image(
        &self,
        envelope: &[u8],
        call: &mut Call<'_>,
    ) -> Result<(Image, bool), Status> {
        let uid = call.uid();
        let result = self.register_checked(envelope, uid);
        match &result {
            Ok((image, registered)) => {
                let name = format!("{}@{}", image.name, image.version);
                call.record(match registered {
                    Registered::Cosigned => SecurityEvent::ImageCosigned {
                        image: name,
                        payload_sha256: image.payload_sha256.clone(),
                        signers: image.signers.clone(),
                        uid,
                    },
                    _ => SecurityEvent::ImageRegistered {
                        image: name,
                        payload_sha256: image.payload_sha256.clone(),
                        signers: image.signers.clone(),
                        created: *registered == Registered::Created,
                        uid,
                    },
                });
            }
            Err(status) => call.record(SecurityEvent::ImageRegistrationRefused {
                envelope_sha256: hex::encode(Sha256::digest(envelope)),
                code: format!("{:?}", status.code()),
                reason: status.message().to_owned(),
                uid,
            }),
        }
        result.map(|(image, registered)| (image, registered == Registered::Created))
    }

    fn register_checked(
        &self,
        envelope: &[u8],
        uid: Option<u32>,
    ) -> Result<(Image, Registered), Status> {
        let signers = self.image_policy.signers();
        if signers.is_empty() {
            return Err(Status::failed_precondition(
                "no trusted signers are configured: set images.trusted_signers in server.toml",
            ));
        }
        let now = self.clock.now();
        let verified = verify_envelope(
            envelope,
            &signers,
            &self.image_policy.signature_policy(),
            &self.image_policy.context(now),
        )
        .map_err(|e| image_status(&e))?;
        verified
            .image
            .check_new()
            .map_err(|e| image_status(&ImageError::Field(e)))?;
        // verify_envelope parsed it as JSON, which is UTF-8.
        let text = String::from_utf8(envelope.to_vec())
            .map_err(|_| Status::invalid_argument("the envelope is not UTF-8 JSON"))?;
        // Held from the twin check to the write, so that two spellings of
        // one version cannot both be registered by concurrent calls.
        let _registering = self
            .registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.refuse_numeric_twin(&verified.image.name, &verified.image.version)?;
        let record = ImageRecord {
            name: verified.image.name.as_str().to_owned(),
            version: verified.image.version.as_str().to_owned(),
            envelope: text,
            payload_sha256: verified.payload_sha256.clone(),
            registered_at: unix_secs(now),
            registered_by_uid: uid,
            retired: None,
        };
        let (stored, registered) = match self
            .store
            .put_image_if_absent(&record)
            .map_err(store_status)?
        {
            ImagePut::Created => (record, Registered::Created),
            ImagePut::Existing(existing) => self.register_again(existing, &record, &verified)?,
        };
        self.reload_images()?;
        Ok((self.image_to_proto(&stored, now), registered))
    }

    /// `AlreadyExists` when another spelling of `version` is registered
    /// for `name` (`1.0` beside `1.0.0`): relying parties, agents and the
    /// kill switch would take the two for one version.
    fn refuse_numeric_twin(&self, name: &ImageName, version: &ImageVersion) -> Result<(), Status> {
        let twin = self
            .store
            .images()
            .map_err(store_status)?
            .into_iter()
            .find(|r| {
                r.name == name.as_str()
                    && r.version != version.as_str()
                    && same_version(&r.version, version.as_str())
            });
        match twin {
            None => Ok(()),
            Some(twin) => Err(Status::already_exists(format!(
                "{name}@{version} is the same version as the registered {} (versions compare numerically): publish a new version, or register it as {} if it is that image",
                twin.key(),
                twin.key()
            ))),
        }
    }

    /// `name@version` is already stored: idempotent for the same payload.
    fn register_again(
        &self,
        existing: ImageRecord,
        new: &ImageRecord,
        verified: &VerifiedImage,
    ) -> Result<(ImageRecord, Registered), Status> {
        let key = existing.key();
        if existing.retired.is_some() {
            return Err(Status::failed_precondition(format!(
                "{key} is retired: publish a new version"
            )));
        }
        if existing.payload_sha256 != new.payload_sha256 {
            return Err(Status::already_exists(format!(
                "{key} is registered with different content: publish a new version"
            )));
        }
        let stored_signers = self
            .image_policy
            .verify_stored(&existing)
            .map(|v| v.signers.len())
            .unwrap_or(0);
        if verified.signers.len() <= stored_signers {
            return Ok((existing, Registered::Unchanged));
        }
        match self
            .store
            .replace_image_envelope(
                &existing.name,
                &existing.version,
                &existing.payload_sha256,
                &new.envelope,
            )
            .map_err(store_status)?
        {
            EnvelopeReplace::Replaced(richer) => Ok((richer, Registered::Cosigned)),
            _ => Err(Status::aborted(format!(
                "{key} changed during registration: try again"
            ))),
        }
    }

    pub(super) fn list_images(&self) -> Result<Vec<Image>, Status> {
        let now = self.clock.now();
        Ok(self
            .store
            .images()
            .map_err(store_status)?
            .iter()
            .map(|record| self.image_to_proto(record, now))
            .collect())
    }

    pub(super) fn show_image(&self, name: &str, version: &str) -> Result<Vec<Image>, Status> {
        check_ref(name, version, false)?;
        let now = self.clock.now();
        let images: Vec<Image> = self
            .store
            .images()
            .map_err(store_status)?
            .iter()
            .filter(|r| r.name == name && (version.is_empty() || r.version == version))
            .map(|record| {
                let mut image = self.image_to_proto(record, now);
                if let Ok(verified) = self.image_policy.verify_stored(record) {
                    image.canonical_json =
                        String::from_utf8_lossy(&canonical::encode(&verified.image)).into_owned();
                }
                image.envelope = record.envelope.clone().into_bytes();
                image
            })
            .collect();
        if images.is_empty() {
            let what = if version.is_empty() {
                name.to_owned()
            } else {
                format!("{name}@{version}")
            };
            return Err(Status::not_found(format!("no registered image {what}")));
        }
        Ok(images)
    }

    pub(super) fn retire_image(
        &self,
        name: &str,
        version: &str,
        reason: &str,
        call: &mut Call<'_>,
    ) -> Result<Image, Status> {
        let uid = call.uid();
        check_ref(name, version, true)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "a reason is required: --reason TEXT",
            ));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(Status::invalid_argument(format!(
                "reason is {} bytes, at most {MAX_REASON_BYTES} are kept",
                reason.len()
            )));
        }
        let now = self.clock.now();
        let retirement = Retirement {
            at: unix_secs(now),
            reason: reason.to_owned(),
            uid,
        };
        let record = match self
            .store
            .retire_image(name, version, &retirement)
            .map_err(store_status)?
        {
            ImageRetire::Retired(record) => record,
            ImageRetire::AlreadyRetired(record) => {
                let why = record.retired.map(|r| r.reason).unwrap_or_default();
                return Err(Status::failed_precondition(format!(
                    "{name}@{version} is already retired ({why})"
                )));
            }
            ImageRetire::NotFound => {
                return Err(Status::not_found(format!(
                    "no registered image {name}@{version}"
                )));
            }
        };
        call.record(SecurityEvent::ImageRetired {
            image: record.key(),
            reason: reason.to_owned(),
            uid,
        });
        self.reload_images()?;
        Ok(self.image_to_proto(&record, now))
    }

    /// Rebuilds the matcher from the store after a change.
    fn reload_images(&self) -> Result<(), Status> {
        let matcher = load_matcher(&*self.store, &self.image_policy).map_err(store_status)?;
        self.images.replace(matcher);
        Ok(())
    }

    /// The wire form of a stored image, re-verified now.
    fn image_to_proto(&self, record: &ImageRecord, now: SystemTime) -> Image {
        let mut image = Image {
            name: record.name.clone(),
            version: record.version.clone(),
            payload_sha256: record.payload_sha256.clone(),
            registered_at: secs_i64(record.registered_at),
            registered_by_uid: record.registered_by_uid,
            ..Image::default()
        };
        if let Some(retirement) = &record.retired {
            image.retired = true;
            image.retired_reason = retirement.reason.clone();
            image.retired_at = secs_i64(retirement.at);
            image.retired_by_uid = retirement.uid;
        }
        match self.image_policy.verify_stored(record) {
            Ok(verified) => fill(&mut image, &verified, now),
            Err(error) => image.verification_error = error.to_string(),
        }
        image
    }
}

/// Checks `name` and (if given or `version_required`) `version` syntax.
fn check_ref(name: &str, version: &str, version_required: bool) -> Result<(), Status> {
    if name.is_empty() || (version_required && version.is_empty()) {
        let form = if version_required {
            "NAME@VERSION"
        } else {
            "NAME or NAME@VERSION"
        };
        return Err(Status::invalid_argument(format!(
            "image name{} required: {form}",
            if version_required {
                " and version are"
            } else {
                " is"
            }
        )));
    }
    ImageName::new(name)
        .map_err(|e| Status::invalid_argument(format!("image name {name:?}: {e}")))?;
    if !version.is_empty() {
        ImageVersion::new(version)
            .map_err(|e| Status::invalid_argument(format!("image version {version:?}: {e}")))?;
    }
    Ok(())
}

fn secs_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The fields of a verified image.
fn fill(image: &mut Image, verified: &VerifiedImage, now: SystemTime) {
    let gold = &verified.image;
    image.spiffe_id = gold.spiffe_id.as_str().to_owned();
    image.owner = gold.owner.clone();
    image.purpose = gold.purpose.clone();
    image.risk_tier = gold.risk_tier.as_str().to_owned();
    image.signers = verified.signers.clone();
    image.unknown_signers = verified.unknown_signers.clone();
    image.review_by = gold.review_by.map(|t| t.unix_seconds()).unwrap_or(0);
    image.not_after = gold.not_after.unix_seconds();
    image.review_overdue = gold.review_overdue(now);
    if gold.expired(now) && !image.retired {
        image.retired = true;
        image.retired_reason = "not_after passed".into();
        image.retired_at = gold.not_after.unix_seconds();
    }
    image.code_sha256 = gold
        .code
        .sha256
        .iter()
        .map(|d| d.as_str().to_owned())
        .collect();
    image.model = gold
        .model
        .as_ref()
        .map(|m| format!("{} {} {}", m.name, m.version, m.digest.as_str()))
        .unwrap_or_default();
    image.scopes = gold.scopes.iter().cloned().collect();
    image.env_names = gold.env.keys().map(|k| k.as_str().to_owned()).collect();
}
