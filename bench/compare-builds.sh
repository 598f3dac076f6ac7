#!/usr/bin/env bash
# Two brook builds side by side — a regression check: the same `brook bench` scenarios as
# compare-rabbitmq.sh, against a brook built from BASE_REV and one from the working tree,
# alternately, then a table of medians and after/before ratios.
#
#   bench/compare-builds.sh 876b05f          # before = that commit, after = the working tree
#   RUNS=1 SCENARIOS="publish e2e" bench/compare-builds.sh HEAD~3
#   SCENARIOS=official bench/compare-builds.sh HEAD~3    # the official Rust client's scenarios only
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
base_rev=${1:?usage: compare-builds.sh BASE_REV}
runs=${RUNS:-3}
read -r -a only <<< "${SCENARIOS:-}"
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-builds.XXXXXX")
pids=()
cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    git -C "$here" worktree remove --force "$work/base" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The base build is kept under target/ so the next comparison with the same base is quick.
base_target="$here/target/base-$(git -C "$here" rev-parse --short "$base_rev")"
echo "== building $base_rev (release, in $base_target)" >&2
git -C "$here" worktree add --detach --quiet "$work/base" "$base_rev"
(cd "$work/base" && CARGO_TARGET_DIR="$base_target" cargo build --release --quiet --bin brook)
echo "== building the working tree (release)" >&2
(cd "$here" && cargo build --release --quiet --bin brook --example official_client_bench)
before="$base_target/release/brook"
after="$here/target/release/brook"
official="$here/target/release/examples/official_client_bench"

. "$here/bench/lib.sh"

start() { # name binary port
    BROOK_NO_PROMETHEUS=true "$2" serve --listen "127.0.0.1:$3" --no-http --data-dir "$work/$1-data" >"$work/$1.out" 2>&1 &
    pids+=($!)
    wait_port "$3"
}
start before "$before" 5571
before_pid=${pids[-1]}
start after "$after" 5572
after_pid=${pids[-1]}

scenarios=(
    "publish --messages 2000000 --size 12"
    "consume --messages 2000000 --size 12"
    "e2e --rate 50000 --duration 10"
    "publish --messages 300000 --size 1024"
    "consume --messages 300000 --size 1024"
    "track --count 10000"
    "fanout --streams 1 --consumers 100 --messages 1000000"
    "fanout --streams 10 --consumers 10 --messages 1000000"
    "official publish --messages 1000000"
    "official consume --messages 1000000"
)
# SCENARIOS="publish consume" runs only the scenarios starting with those words.
if [ ${#only[@]} -gt 0 ]; then
    keep=()
    for s in "${scenarios[@]}"; do
        for o in "${only[@]}"; do [[ "$s" == "$o"* ]] && keep+=("$s") && break; done
    done
    scenarios=("${keep[@]}")
fi
results="$work/results.jsonl"
for scenario in "${scenarios[@]}"; do
    for run in $(seq "$runs"); do
        for build in before after; do
            if [ "$build" = before ]; then port=5571 pid=$before_pid; else port=5572 pid=$after_pid; fi
            echo "== $build: $scenario (run $run/$runs)" >&2
            if [[ "$scenario" == official* ]]; then
                # shellcheck disable=SC2086
                run() { "$official" ${scenario#official } --port "$port" --broker-pid "$pid" --json; }
            else
                # shellcheck disable=SC2086
                run() { "$after" bench $scenario --addr "127.0.0.1:$port" --broker-pid "$pid" --json; }
            fi
            json=$(run 2>"$work/run.err") || {
                echo "   failed: $(tail -1 "$work/run.err")" >&2
                continue
            }
            printf '{"broker_name":"%s","args":"%s","result":%s}\n' "$build" "$scenario" "$json" >>"$results"
        done
    done
done

python3 "$here/bench/summarize.py" "$results" before after
