#!/usr/bin/env bash
# Runs every Hallmark benchmark and regenerates the tables of BENCHMARKS.md.
#
#   benches/run.sh                   everything (about 30 minutes once built)
#   benches/run.sh --quick           smoke run of everything (about 5 minutes
#                                    once built, quiet); its numbers are not
#                                    for BENCHMARKS.md (it still rewrites the
#                                    tables: check the file out again after)
#   benches/run.sh --only criterion  the criterion half (about 10 minutes):
#                                    regenerates the Results and Audit tables
#   benches/run.sh --only loadgen    the load generator half (about 20
#                                    minutes): regenerates the Load generator
#                                    and Kill propagation tables
#
# The criterion half: crypto_limits, attestation, matcher and audit
# (criterion), then the workload_api bench (a real issuer and agent in one
# process). The load generator half: hallmark-loadgen against a real
# hallmark-server (and hallmark-agent) started as child processes, in every
# mode BENCHMARKS.md reports, each run after the load average settles; with
# `--only loadgen` also the raw limits it is compared with (rcgen leaf, P-256
# sign, hallmark_ca mints) from crypto_limits, so they come from the same
# run. `--quick` shortens both: criterion 1 s warm-up / 2 s measurement,
# 200 cached requests and 20 children in the workload bench, 2 s load
# generator windows, 1,000 agents instead of 10,000, 2 kills instead of 5.
# `--quick` and `--only` combine.
#
# Everything is built first (benches and the release daemons), then the
# built executables run directly: a `cargo bench` per step would rebuild
# whatever someone changed meanwhile, in the middle of the measurements.
# Then benches/report/ rewrites the marked regions of BENCHMARKS.md from
# criterion's results and the JSON files under target/bench-results/; the
# text outside the markers is kept by hand.
#
# Take numbers on a quiet machine: nothing else compiling, 1-minute load
# average below about 0.5 (it is printed before every step and recorded in
# the tables). Everything stays on this machine: the issuer listens on
# 127.0.0.1, the agent on a Unix socket, under temp dirs removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '4,13s/^# \{0,1\}//p' "$0"
}

quick=false
only=
while (($#)); do
    case $1 in
    --quick) quick=true ;;
    --only)
        if (($# < 2)); then
            echo "run.sh: --only takes criterion or loadgen" >&2
            exit 2
        fi
        only=$2
        shift
        ;;
    --only=*) only=${1#--only=} ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "run.sh: unknown option $1" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done
case $only in
'' | criterion | loadgen) ;;
*)
    echo "run.sh: --only takes criterion or loadgen" >&2
    exit 2
    ;;
esac
run_criterion=true
run_loadgen=true
if [[ $only == loadgen ]]; then run_criterion=false; fi
if [[ $only == criterion ]]; then run_loadgen=false; fi

if $quick; then
    criterion=(--warm-up-time 1 --measurement-time 2)
    workload=(--requests 200 --children 20)
    window=(--duration 2s --warmup 1s)
    big=1000
    kills=2
    children=20
else
    criterion=()
    workload=()
    window=(--duration 10s --warmup 2s)
    big=10000
    kills=5
    children=200
fi

target=${CARGO_TARGET_DIR:-target}
results=$target/bench-results
out=$results/loadgen
mkdir -p "$out"
started=$SECONDS

# Build everything first, so no compilation overlaps a measurement.
if $run_loadgen; then
    cargo build --release --bin hallmark-loadgen --bin hallmark-server --bin hallmark-agent
fi
benches=(crypto_limits attestation matcher audit workload_api report)
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
    [[ -x ${exe[$b]} ]] || { echo "run.sh: no executable for bench $b" >&2; exit 1; }
done
lg=$target/release/hallmark-loadgen
# Where criterion writes and the report reads.
export CRITERION_HOME=$target/criterion

load() { cut -d' ' -f1-3 /proc/loadavg; }

# Lets the previous run (or the build) fade from the 1-minute load average:
# waits until it is below 1.5, at most 60 s.
settle() {
    local waited=0
    while ((10#$(cut -d' ' -f1 /proc/loadavg | tr -d .) >= 150 && waited < 60)); do
        sleep 5
        waited=$((waited + 5))
    done
}

step() {
    echo
    echo "== $1 (load average $(load))"
}

if $run_criterion; then
    settle
    load_before=$(load)
    echo "load average before the criterion half: $load_before"
    for b in crypto_limits attestation matcher audit; do
        step "$b"
        "${exe[$b]}" --bench "${criterion[@]}"
    done
    step workload_api
    "${exe[workload_api]}" --bench "${workload[@]}" --json "$results/workload_api.json"
    load_after=$(load)
    echo "load average after the criterion half: $load_after"
fi

run() {
    local name=$1
    shift
    settle
    step "$name"
    echo "\$ hallmark-loadgen $*"
    "$lg" "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.txt"
}

if $run_loadgen; then
    # Results of an earlier run would end up in the same tables.
    rm -f "$out"/*.json "$out"/*.txt

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

    # The Workload API of a real agent: cached fetches, first fetches from
    # new processes, and a kill seen by 100 workload processes holding
    # streams.
    run workload-fetch --mode workload-fetch --concurrency 8 "${window[@]}" \
        --children "$children" --streams 100 --kills "$kills"
    # One client alone: the latency of a cached fetch without queueing.
    run workload-cached-1 --mode workload-fetch --concurrency 1 "${window[@]}" \
        --children 0 --kills 0

    if ! $run_criterion; then
        # The raw limits the issuance figures are compared with, from this
        # run (a full run has them from the criterion half).
        settle
        step "raw limits"
        "${exe[crypto_limits]}" --bench "${criterion[@]}" \
            'raw/rcgen_leaf_from_spki|raw/ring_p256_sign|hallmark_ca/x509_svid_mint|hallmark_ca/jwt_svid_mint' \
            2>&1 | tee "$out/raw_limits.txt"
    fi
fi

echo
echo "load average after: $(load); $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
report=(--write BENCHMARKS.md)
if [[ -n $only ]]; then report+=(--only "$only"); fi
if $run_criterion; then
    report+=(--workload "$results/workload_api.json"
        --load-before "$load_before" --load-after "$load_after")
fi
if $run_loadgen; then report+=(--loadgen "$out"); fi
"${exe[report]}" --bench "${report[@]}"
