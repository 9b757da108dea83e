use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hallmark_ca::clock::ManualClock;

use super::*;
use crate::audit::AuditError;
use crate::store::StoreError;

/// Numbers and keeps every event; fails them while `failing` is set.
#[derive(Debug, Default)]
struct Kept {
    events: Mutex<Vec<SecurityEvent>>,
    failing: AtomicBool,
}

impl EventSink for Kept {
    fn record(&self, event: SecurityEvent) -> Recorded {
        if self.failing.load(Ordering::SeqCst) {
            return Recorded::ready(Err(AuditError::Store(StoreError::Backend(
                "injected".into(),
            ))));
        }
        let mut events = self.events.lock().unwrap();
        events.push(event);
        let seq = events.len() as u64;
        Recorded::ready(Ok(())).numbered(seq)
    }
}

impl Kept {
    fn kinds(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.record_parts().unwrap().0)
            .collect()
    }

    fn aggregates(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.record_parts().unwrap())
            .filter(|(kind, _)| kind == "refusals_suppressed")
            .map(|(_, fields)| fields)
            .collect()
    }
}

struct Fixture {
    kept: Arc<Kept>,
    clock: ManualClock,
    limiter: RefusalLimiter,
}

fn fixture(limits: RefusalLimits) -> Fixture {
    let kept = Arc::new(Kept::default());
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600));
    let limiter = RefusalLimiter::new(kept.clone(), Arc::new(clock.clone()), limits);
    Fixture {
        kept,
        clock,
        limiter,
    }
}

fn attest_refused(peer: &str, reason: &str) -> SecurityEvent {
    SecurityEvent::NodeAttestationRefused {
        attestor: "join_token",
        reason: reason.into(),
        peer: peer.into(),
    }
}

fn node(n: usize) -> SpiffeId {
    SpiffeId::parse(&format!(
        "spiffe://example.org/hallmark/agent/join_token/{n}"
    ))
    .unwrap()
}

fn svid_refused(node: &SpiffeId, workload: &str, reason: &str, pid: u32) -> SecurityEvent {
    SecurityEvent::SvidRefused {
        kind: "x509",
        node: node.clone(),
        reason: reason.into(),
        evidence_digest: format!("{pid:064x}"),
        workload: workload.into(),
    }
}

async fn record(limiter: &RefusalLimiter, event: SecurityEvent) {
    limiter.record(event).await.unwrap();
}

#[tokio::test]
async fn other_events_pass_through_untouched() {
    let f = fixture(RefusalLimits::default());
    for _ in 0..3 {
        record(
            &f.limiter,
            SecurityEvent::NodeSvidRenewed {
                agent: node(1),
                serial: "01".into(),
            },
        )
        .await;
    }
    assert_eq!(f.kept.kinds().len(), 3);
    assert_eq!(f.limiter.open_buckets(), 0);
}

#[tokio::test]
async fn a_flood_is_one_record_then_one_count_per_interval() {
    let f = fixture(RefusalLimits::default());
    for port in 0..100 {
        // Every port of one address is one source.
        record(
            &f.limiter,
            attest_refused(&format!("10.0.0.1:{}", 40_000 + port), "join token unknown"),
        )
        .await;
    }
    record(
        &f.limiter,
        attest_refused("[::ffff:10.0.0.1]:5", "join token unknown"),
    )
    .await;
    assert_eq!(f.kept.kinds(), ["node_attestation_refused"]);
    // Nothing closes before the interval ends.
    f.clock
        .advance(DEFAULT_REFUSAL_INTERVAL - Duration::from_secs(1));
    f.limiter.flush_closed().await.unwrap();
    assert_eq!(f.kept.kinds().len(), 1);

    // The next refusal after the interval writes its count, then itself.
    f.clock.advance(Duration::from_secs(1));
    record(
        &f.limiter,
        attest_refused("10.0.0.1:1", "join token unknown"),
    )
    .await;
    assert_eq!(
        f.kept.kinds(),
        [
            "node_attestation_refused",
            "refusals_suppressed",
            "node_attestation_refused"
        ]
    );
    let aggregate = &f.kept.aggregates()[0];
    assert_eq!(aggregate["source"], "10.0.0.1");
    assert_eq!(aggregate["refused_kind"], "node_attestation_refused");
    assert_eq!(aggregate["reason"], "join token unknown");
    assert_eq!(aggregate["count"], 100);
    assert_eq!(aggregate["first_seq"], 1);
    assert_eq!(aggregate["workload"], serde_json::Value::Null);
    assert_eq!(
        aggregate["interval_start"],
        "2026-01-01T00:00:00.000000000Z"
    );
    assert_eq!(aggregate["interval_end"], "2026-01-01T00:01:00.000000000Z");
}

#[tokio::test]
async fn the_periodic_flush_writes_a_count_when_the_flood_stops() {
    let f = fixture(RefusalLimits::default());
    for _ in 0..5 {
        record(&f.limiter, attest_refused("192.0.2.7:1", "malformed")).await;
    }
    // A lone refusal counts nothing: no aggregate for it.
    record(&f.limiter, attest_refused("192.0.2.8:1", "malformed")).await;
    f.clock.advance(DEFAULT_REFUSAL_INTERVAL * 2);
    f.limiter.flush_closed().await.unwrap();
    let aggregates = f.kept.aggregates();
    assert_eq!(aggregates.len(), 1, "{aggregates:?}");
    assert_eq!(aggregates[0]["count"], 4);
    assert_eq!(aggregates[0]["source"], "192.0.2.7");
    // The interval ends when it closed, not when it was flushed.
    assert_eq!(
        aggregates[0]["interval_end"],
        "2026-01-01T00:01:00.000000000Z"
    );
    assert_eq!(f.limiter.open_buckets(), 0);
    // A refusal now is the first of a new interval.
    record(&f.limiter, attest_refused("192.0.2.7:1", "malformed")).await;
    assert_eq!(f.kept.kinds().len(), 4);
}

#[tokio::test]
async fn close_writes_every_open_count_and_then_lets_everything_through() {
    let f = fixture(RefusalLimits::default());
    for _ in 0..3 {
        record(&f.limiter, attest_refused("192.0.2.7:1", "malformed")).await;
    }
    f.clock.advance(Duration::from_secs(10));
    f.limiter.close().await.unwrap();
    let aggregates = f.kept.aggregates();
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0]["count"], 2);
    assert_eq!(
        aggregates[0]["interval_end"],
        "2026-01-01T00:00:10.000000000Z"
    );
    for _ in 0..2 {
        record(&f.limiter, attest_refused("192.0.2.7:1", "malformed")).await;
    }
    assert_eq!(
        f.kept.kinds(),
        [
            "node_attestation_refused",
            "refusals_suppressed",
            "node_attestation_refused",
            "node_attestation_refused"
        ],
        "after close every refusal is recorded"
    );
}

#[tokio::test]
async fn a_workload_refusal_is_keyed_by_node_and_workload_class_not_pid() {
    let f = fixture(RefusalLimits::default());
    let (a, b) = (node(1), node(2));
    for pid in 0..10 {
        record(
            &f.limiter,
            svid_refused(&a, "class-1", "code digest unknown", pid),
        )
        .await;
    }
    record(
        &f.limiter,
        svid_refused(&a, "class-2", "code digest unknown", 1),
    )
    .await;
    record(
        &f.limiter,
        svid_refused(&b, "class-1", "code digest unknown", 1),
    )
    .await;
    assert_eq!(f.kept.kinds().len(), 3);
    f.limiter.close().await.unwrap();
    let aggregates = f.kept.aggregates();
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0]["source"], a.as_str());
    assert_eq!(aggregates[0]["workload"], "class-1");
    assert_eq!(aggregates[0]["refused_kind"], "svid_refused");
    assert_eq!(aggregates[0]["count"], 9);
}

#[tokio::test]
async fn rate_limited_calls_aggregate_per_node_and_call() {
    let f = fixture(RefusalLimits::default());
    for retry in 0..4 {
        record(
            &f.limiter,
            SecurityEvent::NodeRateLimited {
                node: node(1),
                call: "mint_x509_svids",
                reason: format!("retry in {retry} ms"),
            },
        )
        .await;
    }
    assert_eq!(f.kept.kinds(), ["node_rate_limited"]);
    f.limiter.close().await.unwrap();
    assert_eq!(f.kept.aggregates()[0]["count"], 3);
    assert_eq!(f.kept.aggregates()[0]["reason"], "mint_x509_svids");
}

#[tokio::test]
async fn a_source_with_many_reasons_shares_one_bucket_beyond_its_cap() {
    let f = fixture(RefusalLimits {
        reasons_per_source: 2,
        ..RefusalLimits::default()
    });
    for round in 0..3 {
        for reason in 0..10 {
            record(
                &f.limiter,
                attest_refused("198.51.100.1:9", &format!("reason {reason}")),
            )
            .await;
        }
        let _ = round;
    }
    // Two reasons of its own, then the first of the others in full.
    assert_eq!(f.kept.kinds().len(), 3);
    assert_eq!(f.limiter.open_buckets(), 3);
    f.limiter.close().await.unwrap();
    let mut counts: Vec<(String, u64)> = f
        .kept
        .aggregates()
        .iter()
        .map(|a| {
            (
                a["reason"].as_str().unwrap().to_owned(),
                a["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("*".to_owned(), 3 * 8 - 1),
            ("reason 0".to_owned(), 2),
            ("reason 1".to_owned(), 2)
        ]
    );
}

#[tokio::test]
async fn sources_beyond_the_cap_share_the_overflow_bucket_and_memory_stays_bounded() {
    let limits = RefusalLimits {
        max_sources: 8,
        reasons_per_source: 1,
        ..RefusalLimits::default()
    };
    let f = fixture(limits);
    for host in 0..1_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + host);
        record(
            &f.limiter,
            attest_refused(&format!("{ip}:443"), "malformed"),
        )
        .await;
        assert!(f.limiter.open_buckets() <= limits.max_buckets());
    }
    // Eight sources in full, then the first overflowing one in full.
    assert_eq!(f.kept.kinds().len(), 9);
    f.limiter.close().await.unwrap();
    let aggregates = f.kept.aggregates();
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0]["source"], "*");
    assert_eq!(aggregates[0]["reason"], "*");
    assert_eq!(aggregates[0]["count"], 1_000 - 9);

    // Once the tracked sources' intervals have closed, a new source is
    // tracked again.
    let g = fixture(limits);
    for host in 0..8u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + host);
        record(&g.limiter, attest_refused(&format!("{ip}:1"), "malformed")).await;
    }
    g.clock.advance(DEFAULT_REFUSAL_INTERVAL);
    for _ in 0..2 {
        record(&g.limiter, attest_refused("10.9.9.9:1", "malformed")).await;
    }
    g.limiter.close().await.unwrap();
    let aggregates = g.kept.aggregates();
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0]["source"], "10.9.9.9");
}

#[tokio::test]
async fn a_full_record_that_fails_leaves_no_bucket_behind() {
    let f = fixture(RefusalLimits::default());
    f.kept.failing.store(true, Ordering::SeqCst);
    let first = f.limiter.record(attest_refused("192.0.2.1:1", "malformed"));
    assert!(first.await.is_err());
    assert_eq!(f.limiter.open_buckets(), 0);
    // The next one is recorded in full again (and fails closed again).
    assert!(
        f.limiter
            .record(attest_refused("192.0.2.1:1", "malformed"))
            .await
            .is_err()
    );
    f.kept.failing.store(false, Ordering::SeqCst);
    record(&f.limiter, attest_refused("192.0.2.1:1", "malformed")).await;
    assert_eq!(f.kept.kinds(), ["node_attestation_refused"]);
}

#[test]
fn reasons_are_told_apart_on_a_bounded_prefix() {
    let long = "é".repeat(REASON_KEY_BYTES);
    let cut = truncate(&long, REASON_KEY_BYTES);
    assert!(cut.len() <= REASON_KEY_BYTES);
    assert!(long.starts_with(cut));
    assert_eq!(truncate("short", REASON_KEY_BYTES), "short");
    assert_eq!(peer_ip("unknown"), None);
    assert_eq!(peer_ip("10.1.2.3"), "10.1.2.3".parse().ok());
    assert_eq!(peer_ip("[2001:db8::1]:8081"), "2001:db8::1".parse().ok());
}

#[test]
fn the_readme_bound_uses_the_default_limits() {
    // docs/audit.md, "Worst-case growth per hour": 256 sources × (4 reasons + 3 kinds) + 4 overflow.
    assert_eq!(RefusalLimits::default().max_buckets(), 1_796);
    assert_eq!(DEFAULT_REFUSAL_INTERVAL, Duration::from_secs(60));
}

#[tokio::test]
async fn the_records_an_attacker_can_cause_stay_within_the_bound() {
    // Small limits, an attacker with many addresses, many reasons, and
    // nodes with many workloads, refusing every second for an hour.
    let limits = RefusalLimits {
        interval: Duration::from_secs(60),
        max_sources: 6,
        reasons_per_source: 2,
    };
    let f = fixture(limits);
    let mut refusals = 0u64;
    for second in 0..3_600u32 {
        for host in 0..20u32 {
            let ip = std::net::Ipv4Addr::from(0xc000_0200 + (second * 7 + host) % 251);
            let reason = format!("reason {}", (second + host) % 9);
            record(&f.limiter, attest_refused(&format!("{ip}:1"), &reason)).await;
            refusals += 1;
        }
        for n in 0..4usize {
            let node = node(n);
            let workload = format!("class {}", second % 5);
            record(
                &f.limiter,
                svid_refused(&node, &workload, "code digest unknown", second),
            )
            .await;
            record(
                &f.limiter,
                SecurityEvent::NodeRateLimited {
                    node,
                    call: "mint_jwt_svid",
                    reason: "over".into(),
                },
            )
            .await;
            refusals += 2;
        }
        f.clock.advance(Duration::from_secs(1));
        if second % 15 == 0 {
            f.limiter.flush_closed().await.unwrap();
        }
        assert!(f.limiter.open_buckets() <= limits.max_buckets());
    }
    f.limiter.close().await.unwrap();
    let written = f.kept.kinds().len() as u64;
    let bound = 2 * limits.max_buckets() as u64 * (3_600 / 60 + 1);
    assert!(written <= bound, "{written} records, bound {bound}");
    // Nothing is lost: every refusal is a full record or in a count.
    let events = f.kept.events.lock().unwrap();
    let mut accounted = 0u64;
    for event in events.iter() {
        match event {
            SecurityEvent::RefusalsSuppressed { count, .. } => accounted += count,
            _ => accounted += 1,
        }
    }
    assert_eq!(accounted, refusals);
}
