//! `ValidateJWTSVID`: signature against the trust bundle, audience, expiry,
//! and the kill switch: a token a revocation covers (by its `sub`, or the
//! image, code, model or node of its `hallmark` claim) is refused. A token
//! of a federated trust domain is validated against that trust domain's
//! bundle, and only that one: each bundle validates only subjects of its
//! own trust domain.

use std::time::SystemTime;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::jwt::{JwtError, ValidatedJwt, validate_jwt_svid};
use hallmark_proto::workload::{ValidateJwtsvidRequest, ValidateJwtsvidResponse};
use prost_types::value::Kind;
use tonic::Status;

use crate::federated::FederatedBundles;
use crate::revocation::{Bound, RevocationSet};

/// Validates a request; malformed input, invalid and revoked tokens are
/// `InvalidArgument` with the reason.
pub fn validate_jwt_svid_request(
    request: &ValidateJwtsvidRequest,
    bundle: &Bundle,
    federated: &FederatedBundles,
    revocations: &RevocationSet,
    now: SystemTime,
) -> Result<ValidateJwtsvidResponse, Status> {
    if request.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if request.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    let validated = validate_any(&request.svid, &request.audience, bundle, federated, now)
        .map_err(|e| Status::invalid_argument(format!("JWT-SVID refused: {e}")))?;
    let bound = Bound::from_binding(
        validated.spiffe_id.as_str(),
        validated.claims.get("hallmark"),
    );
    if let Some(revocation) = revocations.covering(&bound) {
        return Err(Status::invalid_argument(format!(
            "JWT-SVID refused: revoked by {}",
            revocation.describe()
        )));
    }
    Ok(ValidateJwtsvidResponse {
        spiffe_id: validated.spiffe_id.as_str().to_owned(),
        claims: Some(json_to_struct(validated.claims)),
    })
}

/// Validates against the own bundle, then each federated one; the error
/// is the own bundle's unless a federated bundle knew the token's key.
fn validate_any(
    token: &str,
    audience: &str,
    own: &Bundle,
    federated: &FederatedBundles,
    now: SystemTime,
) -> Result<ValidatedJwt, JwtError> {
    let mut error = match validate_jwt_svid(token, audience, own, now) {
        Ok(validated) => return Ok(validated),
        Err(error) => error,
    };
    for bundle in federated.values() {
        match validate_jwt_svid(token, audience, bundle, now) {
            Ok(validated) => return Ok(validated),
            Err(JwtError::UnknownKeyId(_)) => {}
            Err(other) => {
                if matches!(error, JwtError::UnknownKeyId(_)) {
                    error = other;
                }
            }
        }
    }
    Err(error)
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(object: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hallmark_ca::id::{SpiffeId, TrustDomain};
    use hallmark_ca::jwt::JwtSvidClaims;
    use hallmark_ca::manager::{CaConfig, CaManager};
    use tonic::Code;

    use super::*;

    fn setup() -> (CaManager, SystemTime) {
        let now = SystemTime::now();
        let ca = CaManager::generate(CaConfig::new(TrustDomain::new("example.org").unwrap()), now)
            .unwrap();
        (ca, now)
    }

    fn mint(ca: &CaManager, now: SystemTime, audience: &str) -> String {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "hallmark".into(),
            serde_json::json!({"image": "invoice@1.0.0"}),
        );
        ca.mint_jwt_svid(
            &JwtSvidClaims {
                spiffe_id: SpiffeId::parse("spiffe://example.org/invoice-agent").unwrap(),
                audience: vec![audience.into()],
                ttl: Duration::from_secs(300),
                extra,
            },
            now,
        )
        .unwrap()
        .token
    }

    #[test]
    fn valid_token_returns_id_and_claims() {
        let (ca, now) = setup();
        let token = mint(&ca, now, "payments");
        let response = validate_jwt_svid_request(
            &ValidateJwtsvidRequest {
                audience: "payments".into(),
                svid: token,
            },
            &ca.bundle(),
            &FederatedBundles::new(),
            &RevocationSet::default(),
            now,
        )
        .unwrap();
        assert_eq!(response.spiffe_id, "spiffe://example.org/invoice-agent");
        let claims = response.claims.unwrap();
        assert!(claims.fields.contains_key("hallmark"));
        assert!(claims.fields.contains_key("exp"));
    }

    #[test]
    fn a_token_with_iss_validates_and_returns_it_among_the_claims() {
        let now = SystemTime::now();
        let mut config = CaConfig::new(TrustDomain::new("example.org").unwrap());
        config.jwt_issuer =
            Some(hallmark_ca::jwt::JwtIssuer::new("https://oidc.example.com").unwrap());
        let ca = CaManager::generate(config, now).unwrap();
        let response = validate_jwt_svid_request(
            &ValidateJwtsvidRequest {
                audience: "payments".into(),
                svid: mint(&ca, now, "payments"),
            },
            &ca.bundle(),
            &FederatedBundles::new(),
            &RevocationSet::default(),
            now,
        )
        .unwrap();
        assert_eq!(response.spiffe_id, "spiffe://example.org/invoice-agent");
        assert_eq!(
            response.claims.unwrap().fields["iss"].kind,
            Some(Kind::StringValue("https://oidc.example.com".into()))
        );
    }

    #[test]
    fn refusals_are_invalid_argument_with_the_reason() {
        let (ca, now) = setup();
        let token = mint(&ca, now, "payments");
        let bundle = ca.bundle();
        let check = |audience: &str, svid: &str, at: SystemTime, needle: &str| {
            let err = validate_jwt_svid_request(
                &ValidateJwtsvidRequest {
                    audience: audience.into(),
                    svid: svid.into(),
                },
                &bundle,
                &FederatedBundles::new(),
                &RevocationSet::default(),
                at,
            )
            .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(
                err.message().contains(needle),
                "{needle}: {}",
                err.message()
            );
        };
        check("", &token, now, "audience");
        check("payments", "", now, "svid");
        check("ledger", &token, now, "audience");
        check(
            "payments",
            &token,
            now + Duration::from_secs(301),
            "expired",
        );
        let (other, _) = setup();
        check("payments", &mint(&other, now, "payments"), now, "key");
        // The same claims under `alg: none` (unsigned) and HS256 keyed with
        // public material: both refused for their algorithm.
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        for alg in ["none", "HS256"] {
            let mut forged = header.clone();
            forged["alg"] = alg.into();
            let forged = URL_SAFE_NO_PAD.encode(forged.to_string());
            let signature = if alg == "none" { "" } else { "c2lnbmF0dXJl" };
            check(
                "payments",
                &format!("{forged}.{payload}.{signature}"),
                now,
                alg,
            );
        }
    }

    #[test]
    fn a_token_a_revocation_covers_is_refused_and_others_are_not() {
        use crate::revocation::{Revocation, RevocationKind};
        let (ca, now) = setup();
        let token = mint(&ca, now, "payments");
        let validate = |kind, target: &str| {
            let set = RevocationSet::new(vec![Revocation {
                id: "0123456789abcdef".into(),
                kind,
                target: target.into(),
                reason: "leaked".into(),
                created_at: 0,
            }]);
            validate_jwt_svid_request(
                &ValidateJwtsvidRequest {
                    audience: "payments".into(),
                    svid: token.clone(),
                },
                &ca.bundle(),
                &FederatedBundles::new(),
                &set,
                now,
            )
        };
        for (kind, target) in [
            (RevocationKind::Image, "invoice"),
            (RevocationKind::Image, "invoice@1.0.0"),
            (
                RevocationKind::SpiffeId,
                "spiffe://example.org/invoice-agent",
            ),
        ] {
            let err = validate(kind, target).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(
                err.message()
                    .starts_with("JWT-SVID refused: revoked by kill 0123456789abcdef ("),
                "{}",
                err.message()
            );
            assert!(err.message().ends_with("): leaked"), "{}", err.message());
        }
        validate(RevocationKind::Image, "invoice@2.0.0").unwrap();
        validate(RevocationKind::SpiffeId, "spiffe://example.org/other").unwrap();
        validate(RevocationKind::Code, "c0de").unwrap();
    }

    /// A token of a federated trust domain validates with that trust
    /// domain's bundle (and is refused without it); the own bundle's
    /// refusal is kept when no federated bundle knows the key.
    #[test]
    fn federated_tokens_validate_against_their_own_trust_domain_bundle() {
        let (own, now) = setup();
        let partner = CaManager::generate(
            CaConfig::new(TrustDomain::new("partner.example").unwrap()),
            now,
        )
        .unwrap();
        let token = partner
            .mint_jwt_svid(
                &JwtSvidClaims {
                    spiffe_id: SpiffeId::parse("spiffe://partner.example/billing").unwrap(),
                    audience: vec!["payments".into()],
                    ttl: Duration::from_secs(300),
                    extra: serde_json::Map::new(),
                },
                now,
            )
            .unwrap()
            .token;
        let request = ValidateJwtsvidRequest {
            audience: "payments".into(),
            svid: token,
        };
        let none = FederatedBundles::new();
        let err = validate_jwt_svid_request(
            &request,
            &own.bundle(),
            &none,
            &RevocationSet::default(),
            now,
        )
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("unknown key id"),
            "{}",
            err.message()
        );
        let federated: FederatedBundles = [(
            TrustDomain::new("partner.example").unwrap(),
            std::sync::Arc::new(partner.bundle()),
        )]
        .into_iter()
        .collect();
        let ok = validate_jwt_svid_request(
            &request,
            &own.bundle(),
            &federated,
            &RevocationSet::default(),
            now,
        )
        .unwrap();
        assert_eq!(ok.spiffe_id, "spiffe://partner.example/billing");
        // The partner's bundle under another trust domain's name does not
        // validate the partner's subjects.
        let mut misfiled = partner.bundle();
        misfiled.trust_domain = TrustDomain::new("other.example").unwrap();
        let wrong: FederatedBundles =
            [(misfiled.trust_domain.clone(), std::sync::Arc::new(misfiled))]
                .into_iter()
                .collect();
        let err = validate_jwt_svid_request(
            &request,
            &own.bundle(),
            &wrong,
            &RevocationSet::default(),
            now,
        )
        .unwrap_err();
        assert!(
            err.message()
                .contains("trust domain partner.example, expected other.example"),
            "{}",
            err.message()
        );
    }
}
