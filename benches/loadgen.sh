#!/usr/bin/env bash
# Reproduces the "Load generator", "Kill propagation" and "Audit cost"
# sections of BENCHMARKS.md: end-to-end load on a real issuer (and agent)
# started as child processes by hallmark-loadgen, and the audit criterion
# bench.
#
#   benches/loadgen.sh           full run (about 10 minutes once built)
#   benches/loadgen.sh --quick   smoke run (short windows, 1,000 agents);
#                                its numbers are not for BENCHMARKS.md
#
# Everything stays on this machine: the issuer listens on 127.0.0.1 (a free
# port), the agent on a Unix socket, both in a temp dir that is removed
# afterwards. The load generator runs on the same cores as the daemons, so
# take numbers on a quiet machine (1-minute load average below about 0.5;
# the script prints it before every run and each result records it).
# Results: target/bench-results/loadgen/<run>.txt and .json.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
if [[ ${1:-} == --quick ]]; then
    quick=true
fi
criterion_quick=()
if $quick; then
    criterion_quick=(--warm-up-time 1 --measurement-time 2)
    window=(--duration 2s --warmup 1s)
    big=1000
    kills=2
    children=20
else
    window=(--duration 10s --warmup 2s)
    big=10000
    kills=5
    children=200
fi

# Build everything first, so no compilation overlaps a measurement.
cargo build --release --bin hallmark-loadgen --bin hallmark-server --bin hallmark-agent
cargo bench --bench audit --bench crypto_limits --no-run

out=target/bench-results/loadgen
mkdir -p "$out"
lg=target/release/hallmark-loadgen

# Lets the previous run (or the build) fade from the 1-minute load average:
# waits until it is below 1.5, at most 60 s.
settle() {
    local waited=0
    while ((10#$(cut -d' ' -f1 /proc/loadavg | tr -d .) >= 150 && waited < 60)); do
        sleep 5
        waited=$((waited + 5))
    done
}

run() {
    local name=$1
    shift
    settle
    echo
    echo "== $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "\$ hallmark-loadgen $*"
    "$lg" "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.txt"
}

# Issuance over mutual-TLS gRPC: 16 agents, 32 requests in flight.
for keys in 1 4 16; do
    run "mint-x509-k$keys" --mode mint-x509 --agents 16 --concurrency 32 \
        --keys-per-call "$keys" "${window[@]}"
done
run mint-jwt --mode mint-jwt --agents 16 --concurrency 32 "${window[@]}"
run attest --mode attest --concurrency 16 "${window[@]}"

# Kill propagation to Sync streams (one agent, one connection, one stream).
run sync-1k --mode sync-streams --agents 1000 --kills 10
run "sync-$big" --mode sync-streams --agents "$big" --kills "$kills"

# The Workload API of a real agent: cached fetches, first fetches from new
# processes, and a kill seen by 100 workload processes holding streams.
run workload-fetch --mode workload-fetch --concurrency 8 "${window[@]}" \
    --children "$children" --streams 100 --kills "$kills"
# One client alone: the latency of a cached fetch without queueing.
run workload-cached-1 --mode workload-fetch --concurrency 1 "${window[@]}" \
    --children 0 --kills 0

# Audit append cost per mint (criterion).
settle
echo
echo "== audit bench (load average $(cut -d' ' -f1-3 /proc/loadavg))"
cargo bench --bench audit -- "${criterion_quick[@]}" 2>&1 | tee "$out/audit.txt"

# The raw limits the issuance figures are compared with, in the same run
# (benches/crypto_limits.rs; the full set is in benches/run.sh).
settle
echo
echo "== raw limits (load average $(cut -d' ' -f1-3 /proc/loadavg))"
cargo bench --bench crypto_limits -- "${criterion_quick[@]}" \
    'raw/rcgen_leaf_from_spki|raw/ring_p256_sign|hallmark_ca/x509_svid_mint|hallmark_ca/jwt_svid_mint' \
    2>&1 | tee "$out/raw_limits.txt"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results in $out/"
