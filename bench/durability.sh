#!/usr/bin/env bash
# Publishing under each durability level: the same `brook bench publish` (and an end-to-end run
# at a fixed rate) against a fresh release brook started with --durability none, batch:5 and
# always, alternately, RUNS times; prints a Markdown table of medians.
#
#   bench/durability.sh
#   RUNS=1 MESSAGES=500000 bench/durability.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
messages=${MESSAGES:-2000000}
port=${BROOK_STREAM_PORT:-5567}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-durability.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

(cd "$here" && cargo build --release --quiet)
brook="$here/target/release/brook"
results="$work/results.jsonl"
scenarios=("publish --messages $messages --size 12" "e2e --rate 50000 --duration 10")
for run in $(seq "$runs"); do
    for durability in none batch:5 always; do
        rm -rf "$work/data"
        "$brook" serve --listen "127.0.0.1:$port" --no-http --no-prometheus \
            --durability "$durability" --data-dir "$work/data" >"$work/brook.log" 2>&1 &
        pid=$!
        until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
        for scenario in "${scenarios[@]}"; do
            echo "== $durability: $scenario (run $run/$runs)" >&2
            # shellcheck disable=SC2086
            json=$("$brook" bench $scenario --addr "127.0.0.1:$port" --broker-pid "$pid" --json 2>/dev/null)
            printf '{"broker_name":"%s","args":"%s","result":%s}\n' "$durability" "$scenario" "$json" >>"$results"
        done
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    done
done
echo "### batch:5 against none"
python3 "$here/bench/summarize.py" "$results" none batch:5
echo
echo "### always against none"
python3 "$here/bench/summarize.py" "$results" none always
