#!/usr/bin/env bash
# Instructions per byte of the redaction engine's `find` on the benchmark corpus, counted by
# valgrind's cachegrind: a figure that does not move with a shared machine's load, unlike the
# MB/s that `cargo bench -p mcplane-redaction --bench redaction` prints. Each set is run with
# one and with three passes; the difference leaves out building the engine and the corpus.
#
#   scripts/redaction-instructions.sh        # prints {"corpus": …, "entity_free": …}
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind (apt)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends valgrind >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends valgrind >/dev/null; }
fi

bench=$(CARGO_INCREMENTAL=0 cargo bench -p mcplane-redaction --bench redaction --no-run 2>&1 \
  | sed -n 's/.*(\(.*redaction-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "could not find the benchmark binary" >&2; exit 1; }

# Instructions of one run: `count <rounds> [--entity-free]`.
count() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$bench" --fixed-rounds "$@" 2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ','
}
# Bytes of one round: `bytes [--entity-free]`.
bytes() {
  "$bench" --fixed-rounds 0 "$@" | sed -n 's/.*"bytes_per_round":\([0-9]*\).*/\1/p'
}

per_byte() {
  local one three size
  one=$(count 1 "$@")
  three=$(count 3 "$@")
  size=$(bytes "$@")
  awk -v a="$one" -v b="$three" -v n="$size" 'BEGIN { printf "%.1f", (b - a) / (2 * n) }'
}

printf '{"instructions_per_byte": {"corpus": %s, "entity_free": %s}}\n' \
  "$(per_byte)" "$(per_byte --entity-free)"
