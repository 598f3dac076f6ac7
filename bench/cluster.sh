#!/usr/bin/env bash
# Replicated publish against a 3-node brook cluster on this machine, next to a single node:
# `brook bench publish` (and `e2e` for latency) run against node 1, which leads the stream it
# creates (client-local placement); each publish is confirmed once 2 of the 3 nodes hold it.
#
#   bench/cluster.sh                       # 2,000,000 12-byte messages, 3 runs each
#   RUNS=1 ARGS="--messages 500000 --size 1024" bench/cluster.sh
#   DURABILITY=always bench/cluster.sh     # every node fsyncs before it acks
#
# Prints one JSON line per run, `setup` being "single" or "cluster3". All nodes share the
# machine's two cores: the cluster does three times the writing on the same CPUs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
brook="$here/target/release/brook"
[ -x "$brook" ] || (cd "$here" && cargo build --release -q)
runs=${RUNS:-3}
args=${ARGS:---messages 2000000}
durability=${DURABILITY:-none}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start() { # start ID DIR [cluster args...]
    local id=$1 dir=$2; shift 2
    "$brook" serve --listen "127.0.0.1:$((25550 + id))" --no-http --no-prometheus \
        --data-dir "$dir" --durability "$durability" "$@" >"$work/log$id" 2>&1 &
    pids+=($!)
    wait_port $((25550 + id)) $!
}

run() { # run SETUP
    for _ in $(seq "$runs"); do
        # shellcheck disable=SC2086
        "$brook" bench publish --addr 127.0.0.1:25551 --json $args | sed "s/^{/{\"setup\":\"$1\",\"bench\":\"publish\",/"
        "$brook" bench e2e --addr 127.0.0.1:25551 --rate 50000 --duration 5 --json \
            | sed "s/^{/{\"setup\":\"$1\",\"bench\":\"e2e\",/"
    done
}

start 1 "$work/single"
run single
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

peers=(--peer 1=127.0.0.1:25561 --peer 2=127.0.0.1:25562 --peer 3=127.0.0.1:25563)
for id in 1 2 3; do
    start "$id" "$work/n$id" --node-id "$id" --cluster-listen "127.0.0.1:2556$id" "${peers[@]}"
done
# The metadata group elects a leader and the nodes announce themselves within a second or
# two; a stream created before then is refused, so retry the first run's creation.
for _ in $(seq 50); do
    "$brook" bench publish --addr 127.0.0.1:25551 --messages 1000 --json >/dev/null 2>&1 && break
    sleep 0.2
done
run cluster3
