#!/usr/bin/env bash
# The web console in a real browser: headless Chromium (Debian's `chromium`, installed here if
# missing) driven by playwright-core (npm) against a fresh brook with a stream of JSON messages
# and a named consumer. Logs in, opens the overview, a stream, browses to a message and reads
# its decoded body, reads the named consumer's lag, resets its offset. Screenshots go to
# $SCREENSHOTS (default target/console-screenshots).
#
#   compat/console-browser.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shots=${SCREENSHOTS:-$here/target/console-screenshots}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-console.XXXXXX")
brook_pid=
cleanup() {
    [ -n "$brook_pid" ] && kill "$brook_pid" 2>/dev/null && wait "$brook_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

if ! command -v chromium >/dev/null; then
    echo "== installing chromium (Debian)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium >&2; }
fi

mkdir -p "$work/js" "$shots"
(cd "$work/js" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    playwright-core@1.49.1 rabbitmq-stream-js-client@1.0.0 >&2)
cp "$here/compat/console/console.mjs" "$work/js/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
http=$(free_port)
(cd "$here" && cargo build --quiet)
"$here/target/debug/brook" serve --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
    --no-prometheus --data-dir "$work/data" >"$work/brook.log" 2>&1 &
brook_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && break; sleep 0.1; done

if (cd "$work/js" && timeout 120 node console.mjs "$port" "$http" "$shots" "$(command -v chromium)"); then
    echo "PASS console in headless Chromium (screenshots in $shots)"
else
    echo "FAIL console in headless Chromium; brook's log:" >&2
    tail -20 "$work/brook.log" >&2
    exit 1
fi
