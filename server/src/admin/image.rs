//! Gold image registration over the admin API: register, list, show, retire.

use std::time::SystemTime;

use tonic::Status;

use hallmark_proto::admin::Image;

use super::AdminApi;
use crate::convert::unix_secs;
use crate::image::{ErrorClass, ImageError, VerifiedImage, verify_envelope};
use crate::issuance::load_matcher;
use crate::node::store_status;
use crate::store::{ImageRecord, Retirement};

/// The status for an image refusal: malformed input is `InvalidArgument`,
/// a signature-policy refusal `PermissionDenied`; the message names the field.
fn image_status(error: &ImageError) -> Status {
    match error.class() {
        ErrorClass::Refused => Status::permission_denied(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

fn secs_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl AdminApi {
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
            registered_by_uid: record.registered_by_uid.unwrap_or(u32::MAX),
            ..Image::default()
        };
        if let Some(retirement) = &record.retired {
            image.retired = true;
            image.retired_reason = retirement.reason.clone();
            image.retired_at = secs_i64(retirement.at);
        }
        match self.image_policy.verify_stored(record) {
            Ok(verified) => fill(&mut image, &verified, now),
            Err(error) => image.verification_error = error.to_string(),
        }
        image
    }

    pub(super) fn register_image(
        &self,
        envelope: &[u8],
        uid: Option<u32>,
    ) -> Result<(Image, bool), Status> {
        if self.image_policy.signers.is_empty() {
            return Err(Status::failed_precondition(
                "no trusted signers are configured: set images.trusted_signers in server.toml",
            ));
        }
        let now = self.clock.now();
        let verified = verify_envelope(
            envelope,
            &self.image_policy.signers,
            &self.image_policy.policy,
            &self.image_policy.context(now),
        )
        .map_err(|e| image_status(&e))?;
        let text = String::from_utf8(envelope.to_vec())
            .map_err(|_| Status::invalid_argument("the envelope is not UTF-8 JSON"))?;
        let record = ImageRecord {
            name: verified.image.name.as_str().to_owned(),
            version: verified.image.version.as_str().to_owned(),
            envelope: text,
            payload_sha256: verified.payload_sha256.clone(),
            registered_at: unix_secs(now),
            registered_by_uid: uid,
            retired: None,
        };
        let created = match self
            .store
            .put_image_if_absent(&record)
            .map_err(store_status)?
        {
            None => true,
            Some(existing) => {
                if existing.payload_sha256 != record.payload_sha256 {
                    return Err(Status::already_exists(format!(
                        "{} is registered with different content: publish a new version",
                        record.key()
                    )));
                }
                if existing.retired.is_some() {
                    return Err(Status::failed_precondition(format!(
                        "{} is retired: publish a new version",
                        record.key()
                    )));
                }
                // Same image. Keep the envelope with more trusted signatures
                // (a later cosignature), and the original registration.
                let stored = self.image_policy.verify_stored(&existing).ok();
                if stored.is_none_or(|s| s.signers.len() < verified.signers.len()) {
                    let richer = ImageRecord {
                        envelope: record.envelope.clone(),
                        ..existing
                    };
                    self.store.put_image(&richer).map_err(store_status)?;
                }
                false
            }
        };
        self.reload_images()?;
        let stored = self
            .store
            .image(&record.name, &record.version)
            .map_err(store_status)?
            .unwrap_or(record);
        Ok((self.image_to_proto(&stored, now), created))
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
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "name is required: NAME or NAME@VERSION",
            ));
        }
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
                        String::from_utf8_lossy(&crate::image::canonical::encode(&verified.image))
                            .into_owned();
                }
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
        uid: Option<u32>,
    ) -> Result<Image, Status> {
        if name.is_empty() || version.is_empty() {
            return Err(Status::invalid_argument(
                "name and version are required: NAME@VERSION",
            ));
        }
        if reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a reason is required: --reason TEXT",
            ));
        }
        let mut record = self
            .store
            .image(name, version)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no registered image {name}@{version}")))?;
        if record.retired.is_some() {
            return Err(Status::failed_precondition(format!(
                "{name}@{version} is already retired"
            )));
        }
        let now = self.clock.now();
        record.retired = Some(Retirement {
            at: unix_secs(now),
            reason: reason.trim().to_owned(),
            uid,
        });
        self.store.put_image(&record).map_err(store_status)?;
        self.reload_images()?;
        Ok(self.image_to_proto(&record, now))
    }
}

/// The fields of a verified image.
fn fill(image: &mut Image, verified: &VerifiedImage, now: SystemTime) {
    let gold = &verified.image;
    image.spiffe_id = gold.spiffe_id.as_str().to_owned();
    image.owner = gold.owner.clone();
    image.purpose = gold.purpose.clone();
    image.risk_tier = gold.risk_tier.as_str().to_owned();
    image.signers = verified.signers.clone();
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
