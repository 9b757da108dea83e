#!/usr/bin/env bash
# Runs every Hallmark benchmark and regenerates the results in BENCHMARKS.md.
#
#   benches/run.sh           full run (about 10 minutes once built)
#   benches/run.sh --quick   short smoke run (criterion 1 s warm-up / 2 s
#                            measurement, 200 cached requests, 20 children);
#                            its numbers are not for BENCHMARKS.md
#
# Take numbers on a quiet machine: nothing else compiling, 1-minute load
# average below about 0.5 (the script prints it and records it in the table).
# Everything stays on this machine: the issuer listens on 127.0.0.1, the agent
# on a Unix socket under target/tmp.
set -euo pipefail
cd "$(dirname "$0")/.."

criterion=()
workload=()
if [[ ${1:-} == --quick ]]; then
    criterion=(--warm-up-time 1 --measurement-time 2)
    workload=(--requests 200 --children 20)
fi
benches=(crypto_limits attestation matcher workload_api report)
results=target/bench-results
mkdir -p "$results"

# Build everything first, then run the built executables directly: a
# `cargo bench` per step would rebuild whatever someone changed meanwhile,
# in the middle of the measurements.
bench_args=()
for b in "${benches[@]}"; do bench_args+=(--bench "$b"); done
cargo bench --no-run --message-format=json-render-diagnostics "${bench_args[@]}" \
    > "$results/build.json"
executable() {
    grep '"reason":"compiler-artifact"' "$results/build.json" |
        grep '"kind":\["bench"\]' | grep "\"name\":\"$1\"" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}
declare -A exe
for b in "${benches[@]}"; do
    exe[$b]=$(executable "$b")
    [[ -x ${exe[$b]} ]] || { echo "no executable for bench $b" >&2; exit 1; }
done
# Where criterion writes and the report reads.
export CRITERION_HOME=${CARGO_TARGET_DIR:-target}/criterion

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before"

"${exe[crypto_limits]}" --bench "${criterion[@]}"
"${exe[attestation]}" --bench "${criterion[@]}"
"${exe[matcher]}" --bench "${criterion[@]}"
"${exe[workload_api]}" --bench "${workload[@]}" --json "$results/workload_api.json"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"${exe[report]}" --bench \
    --workload "$results/workload_api.json" \
    --load-before "$load_before" \
    --write BENCHMARKS.md
