#!/usr/bin/env bash
# Runs every test of the workspace against a real nats-server (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ensure-nats.sh
source scripts/ensure-nats.sh
cargo test --workspace --locked "$@"
