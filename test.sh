#!/usr/bin/env bash
# Every test: the workspace's (unit, property, integration with the official Rust client, crash),
# RabbitMQ's tutorial with the Python and Node clients (installed from PyPI and npm into a
# temporary directory), and the web console in headless Chromium (Debian's package, installed if
# missing; playwright-core from npm).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
compat/tutorial-clients.sh
compat/console-browser.sh
