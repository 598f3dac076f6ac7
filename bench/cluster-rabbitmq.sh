#!/usr/bin/env bash
# Replicated publish on 3 nodes, brook against RabbitMQ, on this one machine: a 3-node
# RabbitMQ cluster (three private Erlang nodes joined with `join_cluster`, as RabbitMQ's
# "cluster on a single machine" guide does) and a 3-node brook cluster, run alternately.
# `brook bench publish` and `e2e` go to node 1 of each, which leads the stream it creates
# (client-local placement, three members: every publish is confirmed once 2 of 3 hold it).
#
#   bench/cluster-rabbitmq.sh                   # 2,000,000 12-byte messages, 3 runs each
#   RUNS=1 ARGS="--messages 500000 --size 1024" bench/cluster-rabbitmq.sh
#
# Prints one JSON line per run, `setup` being "brook3" or "rabbitmq3", then a table of medians.
# Every node of both clusters shares the machine's two cores; only one cluster runs at a time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
runs=${RUNS:-3}
args=${ARGS:---messages 2000000}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-cluster-rabbitmq.XXXXXX")
pids=()
erlang_helpers() { pgrep -x 'epmd|erl_child_setup|inet_gethost' 2>/dev/null | sort; }
helpers_before=$(erlang_helpers || true)

stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    set +e
    stop_all
    for pid in $(comm -13 <(echo "$helpers_before") <(erlang_helpers)); do kill "$pid" 2>/dev/null; done
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "== installing rabbitmq-server from Debian" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server >&2
fi
(cd "$here" && cargo build --release -q)
brook="$here/target/release/brook"

# Node N: stream port 2557N, AMQP 2567N; one HOME, so one Erlang cookie. Each start gets new
# node names and distribution ports: epmd keeps a stopped node's name for a while, and
# RabbitMQ refuses to start under a name it still lists.
generation=0
rabbit_env() {
    local n=$1
    export HOME="$work/rabbit-home"
    export RABBITMQ_NODENAME="brookc$generation-$n@localhost"
    export RABBITMQ_DIST_PORT=$((25700 + generation * 10 + n))
    export RABBITMQ_CONFIG_FILE="$work/rabbit$n/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$work/rabbit$n/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$work/rabbit$n/mnesia"
    export RABBITMQ_LOG_BASE="$work/rabbit$n/log"
    export RABBITMQ_PID_FILE="$work/rabbit$n/pid"
    # A node that fails to start writes its crash dump here, not into the caller's directory.
    export ERL_CRASH_DUMP="$work/rabbit$n/erl_crash.dump"
}

start_rabbitmq() {
    generation=$((generation + 1))
    mkdir -p "$work/rabbit-home"
    for n in 1 2 3; do
        mkdir -p "$work/rabbit$n"
        cat > "$work/rabbit$n/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$((25670 + n))
stream.listeners.tcp.1 = 127.0.0.1:$((25570 + n))
stream.advertised_host = localhost
stream.advertised_port = $((25570 + n))
CONF
        echo '[rabbitmq_stream].' > "$work/rabbit$n/enabled_plugins"
        (rabbit_env "$n"; exec /usr/lib/rabbitmq/bin/rabbitmq-server) >"$work/rabbit$n.out" 2>&1 &
        pids+=($!)
        wait_port $((25570 + n)) $! || { tail -20 "$work/rabbit$n.out" >&2; exit 1; }
    done
    for n in 2 3; do
        (
            rabbit_env "$n"
            /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBITMQ_NODENAME" stop_app
            /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBITMQ_NODENAME" join_cluster "brookc$generation-1@localhost"
            /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBITMQ_NODENAME" start_app
        ) >&2
        wait_port $((25570 + n))
    done
    local running
    running=$(rabbit_env 1; /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBITMQ_NODENAME" cluster_status --formatter json \
        | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
    [ "$running" = 3 ] || { echo "RabbitMQ cluster has $running running nodes" >&2; exit 1; }
}

start_brook() {
    local peers=(--peer 1=127.0.0.1:25561 --peer 2=127.0.0.1:25562 --peer 3=127.0.0.1:25563)
    for id in 1 2 3; do
        "$brook" serve --listen "127.0.0.1:$((25570 + id))" --no-http --no-prometheus \
            --data-dir "$work/brook$id" --node-id "$id" --cluster-listen "127.0.0.1:2556$id" \
            "${peers[@]}" >"$work/brook$id.out" 2>&1 &
        pids+=($!)
        wait_port $((25570 + id)) $!
    done
    # The metadata group elects and the nodes announce themselves within a second or two; a
    # node that starts late may call one more election. Streams are created (and refused
    # while there is no leader) through it, so wait for five creations in a row to work.
    local ok=0
    for _ in $(seq 100); do
        if "$brook" bench publish --addr 127.0.0.1:25571 --messages 1000 --json >/dev/null 2>&1; then
            ok=$((ok + 1)); [ "$ok" -ge 5 ] && return 0
        else
            ok=0; sleep 0.2
        fi
    done
    echo "the brook cluster did not settle" >&2; exit 1
}

results="$work/results.jsonl"
for run in $(seq "$runs"); do
    for setup in ${SETUPS:-rabbitmq3 brook3}; do
        echo "== $setup (run $run/$runs)" >&2
        if [ "$setup" = rabbitmq3 ]; then start_rabbitmq; else start_brook; fi
        # shellcheck disable=SC2086
        "$brook" bench publish --addr 127.0.0.1:25571 --json $args \
            | sed "s/^{/{\"setup\":\"$setup\",\"bench\":\"publish\",/" | tee -a "$results"
        "$brook" bench e2e --addr 127.0.0.1:25571 --rate 50000 --duration 5 --json \
            | sed "s/^{/{\"setup\":\"$setup\",\"bench\":\"e2e\",/" | tee -a "$results"
        stop_all
        [ -n "${KEEP:-}" ] || rm -rf "$work"/rabbit* "$work"/brook*
    done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(setup, bench, value):
    vals = [value(r) for r in rows if r["setup"] == setup and r["bench"] == bench]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
measures = [
    ("publish", "msg/s", lambda r: r.get("msg_per_sec")),
    ("publish", "confirm p99 us", lambda r: (r.get("latency_us") or {}).get("p99")),
    ("e2e at 50k msg/s", "p50 us", lambda r: (r.get("latency_us") or {}).get("p50")),
    ("e2e at 50k msg/s", "p99 us", lambda r: (r.get("latency_us") or {}).get("p99")),
]
print("| | RabbitMQ 3 nodes | brook 3 nodes | brook / RabbitMQ |")
print("|---|---|---|---|")
for bench, label, value in measures:
    key = "e2e" if bench.startswith("e2e") else bench
    r, b = med("rabbitmq3", key, value), med("brook3", key, value)
    ratio = f"{b / r:.2f}x" if r and b else "-"
    fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v > 100 else f"{v:.2f}"
    print(f"| {bench} {label} | {fmt(r)} | {fmt(b)} | {ratio} |")
PY
