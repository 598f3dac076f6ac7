#!/usr/bin/env bash
# Every test: the workspace's (unit, property, integration with the official Rust client, crash),
# then RabbitMQ's tutorial with the Python and Node clients, installed from PyPI and npm into a
# temporary directory.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
compat/tutorial-clients.sh
