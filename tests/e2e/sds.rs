//! Envoy's secret discovery service on the agent's socket, asked the way
//! Envoy asks it, by a client we did not write: grpcio with Envoy's own API
//! definitions from the `xds-protos` package (tests/interop/sds_check.py,
//! the venv of tests/interop/setup-venv.sh). The script is the attested
//! workload, bound by the gold images alpha and beta of the py-spiffe test.

use serde_json::Value;

use crate::kill::{ALPHA, BETA};
use crate::py_spiffe::{Script, deploy, venv_python};

const SCRIPT: &str = "sds_check.py";

fn secret<'a>(event: &'a Value, name: &str) -> &'a Value {
    let found = &event["secrets"][name];
    assert!(!found.is_null(), "no secret {name:?} in {event}");
    found
}

#[tokio::test]
async fn envoy_fetches_and_streams_its_certificate_and_bundle_over_sds() {
    let Some(python) = venv_python("the SDS conformance test").await else {
        return;
    };
    let (env, interpreter) = deploy(&python, SCRIPT).await;
    let agent = env.agent("a").await;
    let mut script = Script::start(&python, &env.server.path("app"), SCRIPT, &agent.socket);

    // FetchSecrets: the first SVID as `default`, the bundle as `ROOTCA`.
    let fetched = script.next("fetched").await;
    let default = secret(&fetched, "default");
    assert_eq!(default["kind"], "tls_certificate");
    assert_eq!(default["ids"], serde_json::json!([ALPHA]));
    assert_eq!(default["key_matches"], true);
    let root = secret(&fetched, "ROOTCA");
    assert_eq!(root["kind"], "validation_context");
    assert!(root["cas"].as_u64().unwrap() >= 1, "{root}");
    assert_eq!(
        fetched["type_url"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    );

    // StreamSecrets: the same, then (the ACK asks for beta's SVID by its
    // SPIFFE ID too) a second response with it, and nothing for the ACK of
    // that one.
    let first = script.next("secrets").await;
    assert_eq!(secret(&first, "default")["ids"], serde_json::json!([ALPHA]));
    let second = script.next("secrets").await;
    assert_ne!(first["nonce"], second["nonce"]);
    assert_eq!(
        second["version"], first["version"],
        "same SVIDs, same version"
    );
    assert_eq!(secret(&second, BETA)["ids"], serde_json::json!([BETA]));
    assert_eq!(
        secret(&second, "default")["leaf"],
        secret(&first, "default")["leaf"]
    );

    // The kill switch reaches Envoy: alpha killed, `default` is beta now.
    env.kill("image", "alpha", "compromised build").await;
    let after = script.next("secrets").await;
    assert_ne!(after["version"], second["version"]);
    assert_eq!(secret(&after, "default")["ids"], serde_json::json!([BETA]));
    assert_eq!(secret(&after, BETA)["ids"], serde_json::json!([BETA]));
    // ... and with no identity left the stream ends, as FetchX509SVID's.
    env.kill("code", &interpreter, "backdoored interpreter")
        .await;
    let ended = script.next("ended").await;
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .starts_with("PERMISSION_DENIED"),
        "{ended}"
    );
    script.finish().await;
    agent.handle.shutdown().await;
}
