//! Revocations on the wire: the admin API's record, the node API's
//! revocation in force, and the status that refuses a revoked agent.

use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use hallmark_ca::id::SpiffeId;
use hallmark_proto::{REVOCATION_METADATA, admin, encode_revocation, node};

use super::{Revocation, RevocationKind};

fn unix_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn node_kind(kind: RevocationKind) -> node::RevocationKind {
    match kind {
        RevocationKind::SpiffeId => node::RevocationKind::SpiffeId,
        RevocationKind::Image => node::RevocationKind::Image,
        RevocationKind::Code => node::RevocationKind::Code,
        RevocationKind::Model => node::RevocationKind::Model,
        RevocationKind::Node => node::RevocationKind::Node,
    }
}

fn admin_kind(kind: RevocationKind) -> admin::RevocationKind {
    match kind {
        RevocationKind::SpiffeId => admin::RevocationKind::SpiffeId,
        RevocationKind::Image => admin::RevocationKind::Image,
        RevocationKind::Code => admin::RevocationKind::Code,
        RevocationKind::Model => admin::RevocationKind::Model,
        RevocationKind::Node => admin::RevocationKind::Node,
    }
}

/// The node API's form (what agents receive on `Sync`).
pub fn to_node_proto(revocation: &Revocation) -> node::Revocation {
    node::Revocation {
        id: revocation.id.as_str().to_owned(),
        kind: node_kind(revocation.target.kind()).into(),
        target: revocation.target.value(),
        reason: revocation.reason.clone(),
        created_at: unix_i64(revocation.created_at),
    }
}

/// The admin API's form, with the operator and lift details.
pub fn to_admin_proto(revocation: &Revocation) -> admin::Revocation {
    let lift = revocation.lifted.as_ref();
    admin::Revocation {
        id: revocation.id.as_str().to_owned(),
        kind: admin_kind(revocation.target.kind()).into(),
        target: revocation.target.value(),
        reason: revocation.reason.clone(),
        created_at: unix_i64(revocation.created_at),
        created_by_uid: revocation.created_by_uid,
        lifted: lift.is_some(),
        lifted_at: lift.map(|l| unix_i64(l.at)).unwrap_or(0),
        lift_reason: lift.map(|l| l.reason.clone()).unwrap_or_default(),
        lifted_by_uid: lift.and_then(|l| l.uid),
    }
}

/// `PermissionDenied` for a revoked agent, carrying the revocation in the
/// `hallmark-revocation-bin` metadata so the agent acts on it without
/// parsing the message.
pub fn revoked_status(agent: &SpiffeId, revocation: &Revocation) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert_bin(
        REVOCATION_METADATA,
        MetadataValue::from_bytes(&encode_revocation(&to_node_proto(revocation))),
    );
    Status::with_metadata(
        tonic::Code::PermissionDenied,
        format!(
            "agent {agent} is revoked by {}: an operator must `kill lift` it, then the agent attests again",
            revocation.describe()
        ),
        metadata,
    )
}

#[cfg(test)]
mod tests {
    use hallmark_proto::decode_revocation;

    use super::*;
    use crate::revocation::{RevocationId, RevocationTarget};

    #[test]
    fn the_refusal_carries_the_revocation() {
        let agent = SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/ab").unwrap();
        let revocation = Revocation {
            id: RevocationId::parse("0123456789abcdef").unwrap(),
            target: RevocationTarget::Node(agent.clone()),
            reason: "stolen laptop".into(),
            seq: 1,
            created_at: 9,
            created_by_uid: Some(0),
            lifted: None,
        };
        let status = revoked_status(&agent, &revocation);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("kill 0123456789abcdef (node spiffe://example.org/hallmark/agent/join_token/ab): stolen laptop"));
        let bytes = status
            .metadata()
            .get_bin(REVOCATION_METADATA)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(
            decode_revocation(&bytes).unwrap(),
            to_node_proto(&revocation)
        );
        assert_eq!(
            to_node_proto(&revocation).kind,
            node::RevocationKind::Node as i32
        );
    }
}
