#!/usr/bin/env bash
# Runs the test suite shipped inside the official Rust client, rabbitmq-stream-client 0.11.0,
# against brook: every test in its own process, with a timeout, printing `PASS|FAIL name` lines
# and a closing `N passed, M failed` line.
#
#   compat/rust-client-suite.sh            # from anywhere; needs cargo and network access to crates.io
#   ONLY=producer_drop VERBOSE=1 compat/rust-client-suite.sh   # a subset, with the failures' output
#   ONLY=producer_drop REPEAT=20 compat/rust-client-suite.sh    # each selected test 20 times
#
# The suite expects a broker with its defaults: localhost:5552 (guest/guest), TLS on 5551 with
# the certificates in the crate's .ci/certs, and the management API on 15672. Those ports must
# be free. Everything started here is stopped on exit. docs/COMPATIBILITY.md explains the
# failures.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
version=0.11.0
timeout_secs=${TEST_TIMEOUT:-90}
work=$(mktemp -d "${TMPDIR:-/tmp}/brook-rust-suite.XXXXXX")
brook_pid=

cleanup() {
    if [ -n "$brook_pid" ]; then
        kill "$brook_pid" 2>/dev/null || true
        wait "$brook_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 5552 5551 15672; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; stop whatever listens there first" >&2
        exit 2
    fi
done

echo "== fetching rabbitmq-stream-client $version from crates.io" >&2
mkdir -p "$work/fetch/src"
cat > "$work/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-suite"
version = "0.0.0"
edition = "2021"
[dependencies]
rabbitmq-stream-client = "=$version"
TOML
echo 'fn main() {}' > "$work/fetch/src/main.rs"
(cd "$work/fetch" && cargo fetch --quiet)
src=$(cd "$work/fetch" && cargo metadata --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "rabbitmq-stream-client":
        print(p["manifest_path"].rsplit("/", 1)[0])')
cp -r "$src" "$work/suite"
suite="$work/suite"

echo "== building the suite's tests" >&2
(cd "$suite" && cargo test --no-run --quiet 2>"$work/build.log") || { cat "$work/build.log" >&2; exit 1; }
binaries=$(cd "$suite" && cargo test --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')

echo "== starting brook" >&2
(cd "$here" && cargo build --release --quiet)
certs="$suite/.ci/certs"
RUST_LOG=${RUST_LOG:-warn} "$here/target/release/brook" serve \
    --data-dir "$work/data" \
    --listen 0.0.0.0:5552 \
    --advertised-host localhost \
    --http-listen 0.0.0.0:15672 \
    --tls-listen 0.0.0.0:5551 \
    --tls-cert "$certs/server_certificate.pem" \
    --tls-key "$certs/server_key.pem" \
    --tls-client-ca "$certs/ca_certificate.pem" \
    >"$work/brook.log" 2>&1 &
brook_pid=$!
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/5552) 2>/dev/null && break
    sleep 0.1
done

# reqwest in the suite would honour proxy variables for its localhost calls.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
export NO_PROXY=localhost,127.0.0.1

passed=0
failed=0
for bin in $binaries; do
    for name in $(cd "$suite" && "$suite/$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p'); do
        # ONLY=regex runs a subset.
        [[ -n "${ONLY:-}" && ! "$name" =~ $ONLY ]] && continue
        for _ in $(seq "${REPEAT:-1}"); do
            if (cd "$suite" && timeout "$timeout_secs" "$suite/$bin" --exact "$name" --test-threads 1 \
                    >"$work/last.log" 2>&1); then
                echo "PASS $name"
                passed=$((passed + 1))
            else
                echo "FAIL $name"
                failed=$((failed + 1))
                [ -n "${VERBOSE:-}" ] && grep -m3 -A3 "panicked" "$work/last.log" >&2
            fi
        done
    done
done
echo "$passed passed, $failed failed"
