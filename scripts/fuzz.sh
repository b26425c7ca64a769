#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 20 s each; first argument or
# MCPLANE_FUZZ_SECS overrides). Installs cargo-fuzz when missing. Stable Rust builds the targets
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes the nightly-only sanitizer flags). A crash, a panic,
# a leak or a hang (one input over 10 s) fails the run and leaves the input in fuzz/artifacts/.
# MCPLANE_FUZZ_SECS=0 skips fuzzing (for a quick local test run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-${MCPLANE_FUZZ_SECS:-20}}"
if [ "$SECS" = "0" ]; then
  echo "fuzzing skipped (MCPLANE_FUZZ_SECS=0)" >&2
  exit 0
fi
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION..." >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build --release
for target in $(cargo fuzz list); do
  echo "fuzzing $target for ${SECS}s..." >&2
  mkdir -p "corpus/$target"
  # Committed seeds (inputs that once found a bug) are read on every run; new finds go to
  # corpus/, which is not committed.
  seeds=()
  if [ -d "seeds/$target" ]; then seeds=("seeds/$target"); fi
  log="$(mktemp)"
  if ! cargo fuzz run --release "$target" "corpus/$target" ${seeds[@]+"${seeds[@]}"} -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units" "$log" >&2 || true
  rm -f "$log"
done
