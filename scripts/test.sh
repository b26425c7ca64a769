#!/usr/bin/env bash
# Runs every test of the workspace against a real nats-server (installed if missing), a real
# Kafka-protocol broker (tansu), Prometheus Alertmanager and strace (all installed if missing), with the
# official `openai` Python package the compatibility test drives (installed if missing), then a
# bounded fuzz run of every cargo-fuzz target (scripts/fuzz.sh, which installs cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ensure-nats.sh
source scripts/ensure-nats.sh
# shellcheck source=scripts/ensure-kafka.sh
source scripts/ensure-kafka.sh
# shellcheck source=scripts/ensure-alertmanager.sh
source scripts/ensure-alertmanager.sh
# shellcheck source=scripts/ensure-strace.sh
source scripts/ensure-strace.sh
OPENAI_VERSION=3.57.0
if [ "$(python3 -c 'import openai; print(openai.__version__)' 2>/dev/null || true)" != "$OPENAI_VERSION" ]; then
  echo "installing the openai Python package $OPENAI_VERSION (for the compatibility test)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" \
    || python3 -m pip install --quiet --disable-pip-version-check --user "openai==$OPENAI_VERSION"
fi
# A clean build gains nothing from incremental compilation, and its caches are 1.6 GB on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked "$@"
# A short fuzz run of every parser at the edge (20 s a target; MCPLANE_FUZZ_SECS=0 skips it).
./scripts/fuzz.sh
