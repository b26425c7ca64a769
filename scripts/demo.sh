#!/usr/bin/env bash
# Builds mcplane and runs the demo: the fleet with its own nats-server, the sample alerts replayed
# into incidents, one AI request, the summaries and a verified audit chain.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ensure-nats.sh
source scripts/ensure-nats.sh
cargo run --release --locked -p mcplane-cli --bin mcplane -- demo "$@"
