//! The Workload API's security header: every request must carry the
//! metadata `workload.spiffe.io: true`, which a browser or a confused proxy
//! cannot add, so a socket reachable by accident does not serve them.

use hallmark_proto::WORKLOAD_API_HEADER;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The only accepted value of the header.
pub const SECURITY_HEADER_VALUE: &str = "true";

/// `InvalidArgument` unless the request carries `workload.spiffe.io: true`.
pub fn check_security_header(metadata: &MetadataMap) -> Result<(), Status> {
    match metadata.get(WORKLOAD_API_HEADER).map(|v| v.to_str()) {
        Some(Ok(SECURITY_HEADER_VALUE)) => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing from request: set metadata `{WORKLOAD_API_HEADER}: {SECURITY_HEADER_VALUE}` (SPIFFE client libraries do this)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_header_passes() {
        let mut metadata = MetadataMap::new();
        let err = check_security_header(&metadata).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("workload.spiffe.io"));
        metadata.insert(WORKLOAD_API_HEADER, "yes".parse().unwrap());
        assert_eq!(
            check_security_header(&metadata).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        metadata.insert(WORKLOAD_API_HEADER, "true".parse().unwrap());
        check_security_header(&metadata).unwrap();
    }
}
