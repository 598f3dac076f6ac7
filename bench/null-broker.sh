#!/usr/bin/env bash
# brook against the machine's limit (issue #12). `brook null-broker` stores nothing: it confirms
# every publish at once and feeds every consumer one prebuilt chunk of N messages per credit,
# so what a client reaches against it, and what it costs in CPU, is the least any broker on
# this machine can do for that client. Alternately, RUNS times each:
#
#   * the official Rust client publishing 1 M messages, and consuming 1 M from `first`
#     (examples/official_client_bench.rs);
#   * `brook bench publish` (2 M messages of 12 B);
#
# against brook (defaults, fresh data directory), a null broker with 1,000-message chunks and,
# for the consume scenario, one with 100-message chunks. Prints two tables of medians: brook
# against the null broker, and the consume scenario at 100-message chunks.
#
#   bench/null-broker.sh
#   RUNS=5 bench/null-broker.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-null.XXXXXX")
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$here" && cargo build --release --quiet --bin brook --example official_client_bench)
brook="$here/target/release/brook"
official="$here/target/release/examples/official_client_bench"

. "$here/bench/lib.sh"

declare -A port pid
start() { # NAME PORT COMMAND...
    local name=$1 p=$2; shift 2
    "$@" >"$work/$name.out" 2>&1 &
    pids+=($!)
    port[$name]=$p pid[$name]=$!
    wait_port "$p" "$!"
}
start brook 5581 env BROOK_NO_PROMETHEUS=true "$brook" serve --listen 127.0.0.1:5581 --no-http \
    --data-dir "$work/brook-data"
start null 5582 "$brook" null-broker --listen 127.0.0.1:5582 --chunk-messages 1000
start null100 5583 "$brook" null-broker --listen 127.0.0.1:5583 --chunk-messages 100

scenarios=(
    "official publish --messages 1000000"
    "official consume --messages 1000000"
    "publish --messages 2000000 --size 12"
)
results="$work/results.jsonl"
for scenario in "${scenarios[@]}"; do
    targets=(brook null)
    [[ "$scenario" == "official consume"* ]] && targets+=(null100)
    for run in $(seq "$runs"); do
        for target in "${targets[@]}"; do
            echo "== $target: $scenario (run $run/$runs)" >&2
            # The null brokers store nothing, so there are no chunks to count.
            count=""
            [ "$target" = brook ] || count="--no-chunk-count"
            if [[ "$scenario" == official* ]]; then
                # shellcheck disable=SC2086
                measure() { "$official" ${scenario#official } --port "${port[$target]}" \
                    --broker-pid "${pid[$target]}" $count --json; }
            else
                # shellcheck disable=SC2086
                measure() { "$brook" bench $scenario --addr "127.0.0.1:${port[$target]}" \
                    --broker-pid "${pid[$target]}" --json; }
            fi
            json=$(measure 2>"$work/run.err") || {
                echo "   failed: $(tail -1 "$work/run.err")" >&2
                continue
            }
            printf '{"broker_name":"%s","args":"%s","result":%s}\n' "$target" "$scenario" "$json" >>"$results"
        done
    done
done

cat "$results"
echo
echo "brook against a null broker with 1,000-message chunks:"
python3 "$here/bench/summarize.py" "$results" null brook
echo
echo "Consuming 100-message chunks from a null broker, for comparison:"
grep '"official consume' "$results" >"$work/consume.jsonl"
python3 "$here/bench/summarize.py" "$work/consume.jsonl" null100 brook
