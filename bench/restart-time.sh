#!/usr/bin/env bash
# How long brook takes to restart with many streams and a big backlog: creates STREAMS empty
# streams (default 5,000) and a stream holding MESSAGES messages of SIZE bytes, stops brook with
# SIGTERM, starts it again and times how long until it accepts connections (every stream is
# opened and recovered before the listener starts). Prints the restart times of RUNS restarts,
# the broker's RSS and its open descriptors after the restart, then how long a consumer
# attaching in the middle of the backlog waits for its first chunk (`brook bench attach`).
#
#   bench/restart-time.sh
#   STREAMS=1000 MESSAGES=10000000 bench/restart-time.sh
#   STREAMS=0 MESSAGES=10000000 SIZE=1024 bench/restart-time.sh      # a 10 GB stream
#   COLD=1 ...                           # as root: drop the page cache before each restart
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
streams=${STREAMS:-5000}
messages=${MESSAGES:-1000000}
size=${SIZE:-12}
runs=${RUNS:-3}
port=${BROOK_STREAM_PORT:-5566}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-restart.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    # KEEP=1 keeps the data directory (for a look at it afterwards).
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
# Two descriptors per stream: as root, lift the limit (brook raises its soft limit itself).
if [ "$(id -u)" = 0 ]; then
    ulimit -Hn 1048576 2>/dev/null && ulimit -Sn 1048576 || true
fi

(cd "$here" && cargo build --release --quiet)
brook="$here/target/release/brook"

start() {
    local t0 t1
    t0=$(date +%s%N)
    "$brook" serve --listen "127.0.0.1:$port" --no-http --no-prometheus --data-dir "$work/data" \
        >>"$work/brook.log" 2>&1 &
    pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { tail "$work/brook.log" >&2; exit 1; }
        sleep 0.005
    done
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

start
echo "== creating $streams streams and publishing $messages messages of $size bytes" >&2
if [ "$streams" -gt 0 ]; then
    "$brook" bench streams --addr "127.0.0.1:$port" --count "$streams" --keep-stream --stream restart >/dev/null
fi
"$brook" bench publish --addr "127.0.0.1:$port" --messages "$messages" --size "$size" \
    --keep-stream --stream backlog >/dev/null
mb=$(du -sm "$work/data" | cut -f1)
stop
for run in $(seq "$runs"); do
    if [ -n "${COLD:-}" ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    start
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    echo "restart $run: $ms ms until listening; $streams streams + 1 of $messages messages ($mb MB); RSS $((rss / 1024)) MiB; $fds descriptors"
    if [ "$run" = "$runs" ]; then
        "$brook" bench attach --addr "127.0.0.1:$port" --stream backlog --offset $((messages / 2))
    fi
    stop
done
