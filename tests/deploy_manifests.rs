//! The Kubernetes manifests in deploy/kubernetes hold what docs/deployment.md
//! promises: `kubectl apply -k` never overwrites the bootstrap bundle the
//! operator created (no ConfigMap `hallmark-bundle` among its resources,
//! while the agents mount it), the embedded `agent.toml` and `server.toml`
//! are read by the daemons' own parsers, workload pods have a CSI route to
//! the socket that the Pod Security `restricted` level allows, and the
//! namespace's Pod Security labels are what the docs say. No cluster or
//! kubectl here: documents are read as text, each on its `---` boundary.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The files `kustomization.yaml` applies.
fn resources() -> Vec<String> {
    let text = read("kustomization.yaml");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("resources:") {
            inside = true;
        } else if inside && let Some(item) = line.trim().strip_prefix("- ") {
            out.push(item.trim().to_owned());
        } else if inside && !line.starts_with(' ') && !line.trim().is_empty() {
            inside = false;
        }
    }
    out
}

/// The YAML documents of `text` (comments and blank lines dropped).
fn documents(text: &str) -> Vec<String> {
    text.split("\n---")
        .map(|doc| {
            doc.lines()
                .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|doc| !doc.is_empty())
        .collect()
}

/// `kind` and `metadata.name` of a document.
fn kind_and_name(doc: &str) -> (String, String) {
    let kind = doc
        .lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or_default()
        .to_owned();
    let mut lines = doc.lines().skip_while(|l| *l != "metadata:");
    let name = lines
        .find_map(|l| l.strip_prefix("  name: "))
        .unwrap_or_default()
        .to_owned();
    (kind, name)
}

/// The block scalar under `key: |` (indented lines, de-indented).
fn block(doc: &str, key: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no {key} block"));
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.len() > indent && l[..indent].trim().is_empty())
        .map(|l| &l[indent..])
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn apply_k_never_touches_the_operators_bootstrap_bundle() {
    let resources = resources();
    assert!(resources.len() >= 6, "{resources:?}");
    for file in &resources {
        for doc in documents(&read(file)) {
            let (kind, name) = kind_and_name(&doc);
            assert!(
                !(kind == "ConfigMap" && name == "hallmark-bundle"),
                "{file} defines the ConfigMap hallmark-bundle: every `kubectl apply -k` would overwrite the operator's bundle"
            );
        }
    }
    let daemonset = read("agent-daemonset.yaml");
    assert!(
        daemonset.contains("configMap:\n            name: hallmark-bundle"),
        "the agents mount the operator's bundle"
    );
    assert!(daemonset.contains("mountPath: /etc/hallmark/bundle"));
    let docs = read("agent-config.yaml");
    assert!(docs.contains("create configmap hallmark-bundle"));
    assert!(
        docs.contains("kubectl apply -f -"),
        "the command is idempotent"
    );
}

#[test]
fn the_embedded_configs_are_read_by_the_daemons_own_parsers() {
    let agent = documents(&read("agent-config.yaml"))
        .into_iter()
        .find(|d| kind_and_name(d) == ("ConfigMap".into(), "hallmark-agent-config".into()))
        .unwrap();
    let agent_toml = block(&agent, "agent.toml");
    let settings = hallmark_agent::config::AgentSettings::from_toml_str(&agent_toml)
        .unwrap_or_else(|e| panic!("agent.toml of the ConfigMap: {e}\n{agent_toml}"));
    assert_eq!(
        settings.socket_path,
        Path::new("/run/hallmark/agent/public/api.sock")
    );
    assert!(agent_toml.contains("bundle_path = \"/etc/hallmark/bundle/bootstrap.pem\""));

    let server = documents(&read("server-config.yaml"))
        .into_iter()
        .find(|d| kind_and_name(d) == ("ConfigMap".into(), "hallmark-server-config".into()))
        .unwrap();
    let server_toml = block(&server, "server.toml");
    hallmark_server::config::ServerConfig::from_toml_str(&server_toml)
        .unwrap_or_else(|e| panic!("server.toml of the ConfigMap: {e}\n{server_toml}"));
}

#[test]
fn workloads_reach_the_socket_through_csi_and_pod_security_is_as_documented() {
    let daemonset = read("agent-daemonset.yaml");
    let example = documents(&daemonset)
        .into_iter()
        .find(|d| kind_and_name(d).1 == "hallmark-workload-example")
        .unwrap();
    let csi = block(&example, "pod-snippet-csi.yaml");
    assert!(csi.contains("driver: csi.spiffe.io"), "{csi}");
    assert!(
        !csi.contains("hostPath"),
        "restricted pods cannot use hostPath"
    );
    assert!(csi.contains("unix:///run/hallmark/agent/public/api.sock"));
    assert!(block(&example, "pod-snippet-hostpath.yaml").contains("hostPath:"));
    let namespace = read("namespace.yaml");
    assert!(namespace.contains("pod-security.kubernetes.io/enforce: privileged"));
    assert!(namespace.contains("pod-security.kubernetes.io/warn: restricted"));
    // The issuer pod meets "restricted".
    let server = read("server-statefulset.yaml");
    for needed in [
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
    ] {
        assert!(server.contains(needed), "issuer pod lacks {needed}");
    }
}
