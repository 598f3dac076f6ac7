#!/usr/bin/env bash
# Instructions brook executes per chunk it delivers, and per message (issue #12). This machine
# has no hardware counters for perf, so valgrind's callgrind counts them (user space only; the
# kernel's share, most of a chunk's cost here, is in docs/BENCHMARKS.md's CPU figures):
#
#   Ir(consume) = Ir(brook during pre-fill + consume) - Ir(brook during the same pre-fill alone)
#
# each on a fresh brook started under callgrind. The pre-fill publishes frames of B messages
# with at most B unconfirmed, so every write holds at most B and the chunks stay small; the
# consumer (brook bench's, one credit per chunk) reports how many chunks it got.
#
#   bench/chunk-cost.sh                          # B = 100 and B = 2000
#   MESSAGES=100000 BATCHES="100 2000" bench/chunk-cost.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
messages=${MESSAGES:-100000}
read -r -a batches <<< "${BATCHES:-100 2000}"
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-chunk-cost.XXXXXX")
pid=""
cleanup() {
    set +e
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$here" && cargo build --release --quiet --bin brook)
brook="$here/target/release/brook"
port=5590

. "$here/bench/lib.sh"

# Runs `brook bench ARGS` against a fresh brook under callgrind; writes "Ir json" to
# $work/NAME.res (run in this shell, not a subshell, so that `cleanup` knows the pid).
measure() {
    local name=$1; shift
    rm -rf "$work/$name"
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" \
        "$brook" serve --listen "127.0.0.1:$port" --no-http --no-prometheus \
        --chunk-linger-us 0 --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" 600 # valgrind starts slowly
    local json
    json=$("$brook" bench "$@" --addr "127.0.0.1:$port" --json 2>"$work/$name.err") || {
        echo "brook bench $*: $(tail -1 "$work/$name.err")" >&2
        return 1
    }
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    local ir
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/$name.cg")
    echo "$ir $json" >"$work/$name.res"
}

printf '| pre-fill frames and window | messages per chunk delivered | instructions per chunk | per message |\n'
printf '|---|---|---|---|\n'
for b in "${batches[@]}"; do
    measure "fill-$b" publish --messages "$messages" --batch "$b" --in-flight "$b"
    measure "all-$b" consume --messages "$messages" --prefill-batch "$b" --prefill-in-flight "$b"
    read -r fill_ir _ <"$work/fill-$b.res"
    read -r all_ir json <"$work/all-$b.res"
    python3 - "$fill_ir" "$all_ir" "$json" "$messages" "$b" <<'EOF'
import json, sys
fill, total, report, messages, b = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
per_chunk_msgs = report["messages_per_chunk"]
consume = total - fill
chunks = messages / per_chunk_msgs
print(f"| {b} | {per_chunk_msgs:,.0f} | {consume / chunks:,.0f} | {consume / messages:,.0f} |")
EOF
done
