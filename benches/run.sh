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

# Build everything first, so no compilation overlaps a measurement.
bench_args=()
for b in "${benches[@]}"; do bench_args+=(--bench "$b"); done
cargo bench --no-run "${bench_args[@]}"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before"

cargo bench --bench crypto_limits -- "${criterion[@]}"
cargo bench --bench attestation -- "${criterion[@]}"
cargo bench --bench matcher -- "${criterion[@]}"
cargo bench --bench workload_api -- "${workload[@]}" --json "$results/workload_api.json"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench report -- \
    --workload "$results/workload_api.json" \
    --load-before "$load_before" \
    --write BENCHMARKS.md
