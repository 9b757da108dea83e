//! Graceful shutdown of the real `hallmark-server` process: SIGTERM and
//! SIGINT take the clean path (exit 0, admin socket and metrics listener
//! gone, a final `issuer_stopping` record covered by a signed checkpoint),
//! the log is structured JSON when `--log-format json` overrides the file,
//! and the metrics endpoint answers what an operator scrapes.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ops_support;

use rustix::process::Signal;

use ops_support::{Daemon, http_get, metric};

#[test]
fn sigterm_and_sigint_stop_cleanly_with_the_history_signed_up_to_the_shutdown_checkpoint() {
    let mut daemon = Daemon::new("");
    daemon.start(&[]);
    // The flag overrode `log_format = "text"` in the file: every line so
    // far is a JSON object (log_lines checks each one).
    assert!(daemon.log_lines().len() >= 2, "{}", daemon.log_text());
    let metrics = daemon.metrics_addr.unwrap();
    assert_eq!(http_get(metrics, "/live").unwrap(), (200, "live\n".into()));
    assert_eq!(
        http_get(metrics, "/ready").unwrap(),
        (200, "ready\n".into())
    );
    let (code, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "hallmark_server_ready"), Some(1.0), "{body}");
    assert_eq!(
        metric(&body, "hallmark_server_svids_minted_total{type=\"x509\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(metric(&body, "hallmark_server_sync_streams"), Some(0.0));
    assert_eq!(metric(&body, "hallmark_server_agents_attested"), Some(0.0));
    // Prometheus text (no Accept header asked for OpenMetrics), with the
    // standard process metrics.
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        metric(&body, "process_open_fds").is_some_and(|n| n > 0.0),
        "{body}"
    );
    assert!(
        metric(&body, "process_resident_memory_bytes").is_some(),
        "{body}"
    );

    daemon.ok(&["token", "generate"]);
    let key = daemon.save_key();

    let status = daemon.signal(Signal::TERM);
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(!daemon.socket().exists(), "the admin socket is removed");
    assert!(
        http_get(metrics, "/live").is_err(),
        "the metrics listener is closed"
    );
    assert!(
        daemon
            .log_lines()
            .iter()
            .any(|l| l["fields"]["message"] == "hallmark-server stopped"),
        "{}",
        daemon.log_text()
    );
    let stopped_at = shutdown_checkpoint(&mut daemon, &key);

    // SIGINT (Ctrl-C in a terminal) takes the same path.
    let status = daemon.signal(Signal::INT);
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(!daemon.socket().exists());
    let again = shutdown_checkpoint(&mut daemon, &key);
    assert!(again > stopped_at);
    daemon.signal(Signal::TERM);
}

/// Restarts the stopped issuer and checks that `audit verify` proves every
/// record up to and including the `issuer_stopping` of the last shutdown,
/// with only this start's `issuer_started` left unsigned. Its seq.
fn shutdown_checkpoint(daemon: &mut Daemon, key: &std::path::Path) -> u64 {
    daemon.start(&[]);
    let (code, report) = daemon.verify(key);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["result"], "unverifiable_tail", "{report:#}");
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let through = report["verified_through"].as_u64().unwrap();
    let records = daemon.audit_records();
    let kind = |seq: u64| {
        records
            .iter()
            .find(|r| r["seq"] == seq)
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(kind(through), "issuer_stopping", "{report:#}");
    assert_eq!(report["unverifiable_tail"]["first_seq"], through + 1);
    assert_eq!(kind(through + 1), "issuer_started");
    // After it, only the admin calls of this check (verify, export).
    for record in records
        .iter()
        .filter(|r| r["seq"].as_u64().unwrap() > through + 1)
    {
        assert_eq!(record["kind"], "admin_call", "{record}");
    }
    through
}
