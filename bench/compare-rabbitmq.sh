#!/usr/bin/env bash
# brook vs RabbitMQ, same machine, same client, same run: each scenario against both brokers
# alternately (A B A B A B), then a table of medians and brook/RabbitMQ ratios.
#
#   bench/compare-rabbitmq.sh            # as root on Debian: installs rabbitmq-server if missing
#   RUNS=1 bench/compare-rabbitmq.sh     # one round instead of three
#   bench/compare-rabbitmq.sh "connections --idle 10000" "streams --count 1000"
#                                        # these scenarios instead of the default six
#   bench/compare-rabbitmq.sh "official publish" "official consume"
#                                        # the official Rust client (examples/official_client_bench.rs)
#
# A private RabbitMQ node (its own ports, data directory, Erlang cookie and epmd port) and a
# release brook are started here and stopped on exit; no process is left behind.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
rabbit_port=${RABBIT_STREAM_PORT:-5563}
brook_port=${BROOK_STREAM_PORT:-5564}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-compare.XXXXXX")
rabbit_pid=
brook_pid=
shim_pids=
# Erlang helpers the node may start (epmd outlives nodes); those that were not running before
# are stopped at the end.
erlang_helpers() { pgrep -x 'epmd|erl_child_setup|inet_gethost' 2>/dev/null | sort; }
helpers_before=$(erlang_helpers || true)

cleanup() {
    set +e
    for pid in $shim_pids; do kill "$pid" 2>/dev/null; done
    [ -n "$brook_pid" ] && kill "$brook_pid" 2>/dev/null && wait "$brook_pid" 2>/dev/null
    if [ -n "$rabbit_pid" ]; then
        kill "$rabbit_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$rabbit_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$rabbit_pid" 2>/dev/null
    fi
    for pid in $(comm -13 <(echo "$helpers_before") <(erlang_helpers)); do
        kill "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Thousands of connections and streams need descriptors: as root, lift the limit for both
# brokers and the client alike (brook also raises its soft limit to the hard one by itself).
if [ "$(id -u)" = 0 ]; then
    ulimit -Hn 1048576 2>/dev/null && ulimit -Sn 1048576 || true
fi

if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "== installing rabbitmq-server from Debian" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server >&2
fi

echo "== building brook (release)" >&2
(cd "$here" && cargo build --release --quiet && cargo build --release --quiet --example official_client_bench)
brook="$here/target/release/brook"
official="$here/target/release/examples/official_client_bench"

. "$here/bench/lib.sh"

echo "== starting a private RabbitMQ node on 127.0.0.1:$rabbit_port" >&2
mkdir -p "$work/rabbit/home"
cat > "$work/rabbit/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$((rabbit_port + 1000))
stream.listeners.tcp.1 = 127.0.0.1:$rabbit_port
stream.advertised_host = localhost
CONF
echo '[rabbitmq_stream].' > "$work/rabbit/enabled_plugins"
(
    export HOME="$work/rabbit/home"
    export RABBITMQ_NODENAME="brookcompare@localhost"
    export RABBITMQ_DIST_PORT=$((rabbit_port + 2000))
    export RABBITMQ_CONFIG_FILE="$work/rabbit/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$work/rabbit/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$work/rabbit/mnesia"
    export RABBITMQ_LOG_BASE="$work/rabbit/log"
    export RABBITMQ_PID_FILE="$work/rabbit/pid"
    exec /usr/lib/rabbitmq/bin/rabbitmq-server
) >"$work/rabbit.out" 2>&1 &
rabbit_pid=$!
wait_port "$rabbit_port" || { tail -20 "$work/rabbit.out" >&2; exit 1; }
rabbit_beam=$(cat "$work/rabbit/pid" 2>/dev/null || echo "$rabbit_pid")

echo "== starting brook on 127.0.0.1:$brook_port" >&2
"$brook" serve --listen "127.0.0.1:$brook_port" --no-http --no-prometheus --data-dir "$work/brook-data" \
    >"$work/brook.out" 2>&1 &
brook_pid=$!
wait_port "$brook_port"

scenarios=(
    "publish --messages 2000000 --size 12"
    "consume --messages 2000000 --size 12"
    "e2e --rate 50000 --duration 10"
    "publish --messages 300000 --size 1024"
    "consume --messages 300000 --size 1024"
    "track --count 10000"
)
[ $# -gt 0 ] && scenarios=("$@")

# The official Rust client sends ExchangeCommandVersions, which RabbitMQ 3.10 does not know
# (it closes the connection): its scenarios go through bench/pre311_shim.py, which answers it,
# for both brokers alike (the relay's CPU is not the brokers').
for target in "$rabbit_port" "$brook_port"; do
    python3 "$here/bench/pre311_shim.py" "$((target + 3000))" "$target" &
    shim_pids="$shim_pids $!"
    wait_port "$((target + 3000))"
done
results="$work/results.jsonl"
for scenario in "${scenarios[@]}"; do
    for run in $(seq "$runs"); do
        for broker in rabbitmq brook; do
            if [ "$broker" = rabbitmq ]; then port=$rabbit_port pid=$rabbit_beam; else port=$brook_port pid=$brook_pid; fi
            echo "== $broker: $scenario (run $run/$runs)" >&2
            if [[ "$scenario" == official* ]]; then
                # shellcheck disable=SC2086
                run() { "$official" ${scenario#official } --port "$((port + 3000))" --broker-pid "$pid" --json; }
            else
                # shellcheck disable=SC2086
                run() { "$brook" bench $scenario --addr "127.0.0.1:$port" --broker-pid "$pid" --json; }
            fi
            json=$(run 2>"$work/run.err") || {
                echo "   failed: $(tail -1 "$work/run.err")" >&2
                continue
            }
            printf '{"broker_name":"%s","args":"%s","result":%s}\n' "$broker" "$scenario" "$json" >>"$results"
        done
    done
done

python3 "$here/bench/summarize.py" "$results"
