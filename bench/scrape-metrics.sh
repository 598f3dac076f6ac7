#!/usr/bin/env bash
# Times a Prometheus scrape of a release brook holding N empty streams (default 1,000). Every
# scrape asks each stream's writer for its tracking data, so this is the per-stream cost.
#
#   bench/scrape-metrics.sh            # N=1000
#   STREAMS=5000 bench/scrape-metrics.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
n=${STREAMS:-1000}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-scrape.XXXXXX")
brook_pid=
cleanup() {
    [ -n "$brook_pid" ] && kill "$brook_pid" 2>/dev/null && wait "$brook_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); http=$(free_port); prom=$(free_port)
(cd "$here" && cargo build --release --quiet)
"$here/target/release/brook" serve --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
    --prometheus-listen "127.0.0.1:$prom" --data-dir "$work/data" >"$work/brook.log" 2>&1 &
brook_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$prom") 2>/dev/null && break; sleep 0.1; done

echo "== creating $n streams" >&2
python3 - "$http" "$n" <<'PY'
import base64, http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        "Content-Type": "application/json"}
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"durable": True, "arguments": {"x-queue-type": "stream"}})
for i in range(n):
    c.request("PUT", f"/api/queues/%2F/s-{i:05}", body, auth)
    r = c.getresponse(); r.read()
    assert r.status in (201, 204), r.status
PY

echo "== scraping (5 times)" >&2
times=()
for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o "$work/scrape.txt" -w '%{time_total}' "http://127.0.0.1:$prom/metrics")")
done
samples=$(grep -vc '^#' "$work/scrape.txt")
bytes=$(wc -c <"$work/scrape.txt")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$brook_pid/status")
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$n" -v s="$samples" -v b="$bytes" -v rss="$rss" \
    '{t[NR]=$1} END {printf "%d streams: %d samples, %d bytes; scrape median %.1f ms (min %.1f, max %.1f); brook RSS %d MiB\n", n, s, b, t[3]*1000, t[1]*1000, t[5]*1000, rss/1024}'
